//! The viewer (wasm32 only): [`LinkstreamViewer`], the JavaScript API the
//! served page and any other page use. One viewer owns a canvas, a stream
//! URL and its options: the connection loop, WebCodecs decoding, drawing,
//! input capture, the stats and the events; `close()` stops all of it.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::pin::pin;
use std::rc::Rc;
use std::time::Duration;

use futures::StreamExt;
use futures::channel::mpsc;
use futures::future::{AbortHandle, Either, abortable, select};
use futures_timer::Delay;
use link_session::{Client, ClientConfig, ClientEvent, ClientStats, Frame, InputEvent, TouchPhase};
use link_ws::{WsConfig, WsLink};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use web_sys::{
    AddEventListenerOptions, CanvasRenderingContext2d, Document, EventTarget, HtmlCanvasElement,
    KeyboardEvent, MouseEvent, TouchEvent, WheelEvent, Window,
};

use crate::h264;
use link_video::{VideoHeader, index, stream};

/// Frames handed to the decoder and not yet output, at most.
const MAX_IN_FLIGHT: u32 = 3;
/// Keyframe requests to the host, at most one per this long.
const KEYFRAME_REQUEST_EVERY_MS: f64 = 500.0;
/// Samples kept for the percentiles.
const SAMPLES: usize = 1000;
/// Input events waiting to be sent, at most (more are dropped, counted).
const INPUT_QUEUE: usize = 4096;
/// The reconnect delay after a session that was established (doubling up
/// to [`BACKOFF_MAX`] while attempts keep failing).
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// The longest reconnect delay.
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// The events a viewer fires.
const EVENTS: [&str; 4] = ["connect", "disconnect", "frame", "state"];

// WebCodecs, bound here (web-sys has them only behind an unstable cfg).
#[wasm_bindgen]
extern "C" {
    type VideoDecoder;
    #[wasm_bindgen(constructor, catch)]
    fn new(init: &js_sys::Object) -> Result<VideoDecoder, JsValue>;
    #[wasm_bindgen(method, catch)]
    fn configure(this: &VideoDecoder, config: &js_sys::Object) -> Result<(), JsValue>;
    #[wasm_bindgen(method, catch)]
    fn decode(this: &VideoDecoder, chunk: &EncodedVideoChunk) -> Result<(), JsValue>;
    #[wasm_bindgen(method, catch)]
    fn close(this: &VideoDecoder) -> Result<(), JsValue>;
    #[wasm_bindgen(method, getter)]
    fn state(this: &VideoDecoder) -> String;
}

#[wasm_bindgen]
extern "C" {
    type EncodedVideoChunk;
    #[wasm_bindgen(constructor, catch)]
    fn new(init: &js_sys::Object) -> Result<EncodedVideoChunk, JsValue>;
}

#[wasm_bindgen]
extern "C" {
    type VideoFrame;
    #[wasm_bindgen(method)]
    fn close(this: &VideoFrame);
    #[wasm_bindgen(method, getter)]
    fn timestamp(this: &VideoFrame) -> f64;
    #[wasm_bindgen(method, getter, js_name = displayWidth)]
    fn display_width(this: &VideoFrame) -> u32;
    #[wasm_bindgen(method, getter, js_name = displayHeight)]
    fn display_height(this: &VideoFrame) -> u32;
}

#[wasm_bindgen]
extern "C" {
    /// The 2D context, for `drawImage(VideoFrame, ...)`.
    #[wasm_bindgen(js_name = CanvasRenderingContext2D)]
    type Ctx2d;
    #[wasm_bindgen(method, js_name = drawImage)]
    fn draw_frame(this: &Ctx2d, frame: &VideoFrame, x: f64, y: f64);
}

fn set(obj: &js_sys::Object, key: &str, value: &JsValue) {
    let _ = js_sys::Reflect::set(obj, &JsValue::from_str(key), value);
}

fn now_ms() -> f64 {
    web_sys::window()
        .and_then(|w| w.performance())
        .map_or(0.0, |p| p.now())
}

/// Percentile `p` (0..=100) of `v`, or `None` when empty.
fn percentile(v: &VecDeque<f64>, p: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s: Vec<f64> = v.iter().copied().collect();
    s.sort_by(f64::total_cmp);
    let i = ((p / 100.0) * (s.len() - 1) as f64).round() as usize;
    Some(s[i.min(s.len() - 1)])
}

fn push_sample(v: &mut VecDeque<f64>, x: f64) {
    if v.len() == SAMPLES {
        v.pop_front();
    }
    v.push_back(x);
}

/// The counters `stats()` reports.
#[derive(Default)]
struct Counters {
    frames_received: u64,
    bytes_received: u64,
    frames_decoded: u64,
    frames_displayed: u64,
    /// Frames not given to the decoder: waiting for a keyframe, too many in
    /// flight, bad envelope.
    frames_dropped: u64,
    dropped_waiting_keyframe: u64,
    dropped_in_flight: u64,
    /// Decoded frames replaced by a newer one before they were drawn.
    frames_superseded: u64,
    decode_errors: u64,
    envelope_errors: u64,
    keyframe_requests: u64,
    /// Keyframes (IDRs) given to the decoder.
    keyframes: u64,
    /// LTR recovery frames given to the decoder after a loss (recovery
    /// points that are not IDRs).
    recovery_frames: u64,
    connects: u64,
    reconnects: u64,
    input_sent: u64,
    input_dropped: u64,
    input_unmapped: u64,
}

/// What the `frame` event reports about a frame, carried from its arrival
/// to its display.
#[derive(Clone, Copy)]
struct FrameInfo {
    capture_index: u64,
    bytes: usize,
    keyframe: bool,
    capture_us: u64,
    /// Its rendition (simulcast): the picture halved this many times.
    rendition: u8,
    received_ms: f64,
    decoded_ms: f64,
}

/// A decoded frame waiting for the next animation frame.
struct Decoded {
    frame: VideoFrame,
    info: FrameInfo,
}

type DecoderCallbacks = (Closure<dyn FnMut(VideoFrame)>, Closure<dyn FnMut(JsValue)>);

/// Everything the callbacks share.
struct Viewer {
    c: Counters,
    state: String,
    connected: bool,
    /// Set by `close()`: nothing runs any more.
    closed: bool,
    decoder: Option<VideoDecoder>,
    /// The decoder's output and error callbacks: kept while it lives,
    /// dropped (after `close`, so never called again) with it.
    decoder_callbacks: Option<DecoderCallbacks>,
    codec: String,
    size: (u16, u16),
    waiting_keyframe: bool,
    in_flight: u32,
    /// Frames handed to the decoder, in order, until their output.
    pending: VecDeque<FrameInfo>,
    latest: Option<Decoded>,
    want_keyframe: bool,
    last_keyframe_request_ms: f64,
    last_frame_index: Option<u64>,
    last_session_frame: u32,
    target_kbps: u32,
    /// This viewer's own target as the host reports it, kbit/s.
    viewer_target_kbps: u32,
    /// (received ms, temporal id) of the last second's frames.
    recent_layers: VecDeque<(f64, u8)>,
    /// The rendition of the picture on the canvas.
    displayed_rendition: u8,
    /// Times the rendition on the canvas changed.
    rendition_changes: u64,
    decode_ms: VecDeque<f64>,
    latency_ms: VecDeque<f64>,
    session: ClientStats,
    /// (time ms, frames displayed, bytes received) at the last rate
    /// update.
    rate_base: (f64, u64, u64),
    fps: f64,
    kbps: f64,
    canvas: HtmlCanvasElement,
    ctx: CanvasRenderingContext2d,
    input: Option<mpsc::Sender<InputEvent>>,
    /// When the current session was established (performance.now, ms).
    session_ms: f64,
    /// Session start to first picture drawn, of the current session.
    picture_after_connect_ms: Option<f64>,
    /// Page start (navigation) to the first picture drawn.
    first_picture_ms: Option<f64>,
    /// The page's event callbacks: (event name, function).
    callbacks: Vec<(String, js_sys::Function)>,
    /// `KeyboardEvent.code`s left to the page (not sent to the host).
    local_keys: Vec<String>,
}

type Shared = Rc<RefCell<Viewer>>;

fn window() -> Window {
    web_sys::window().expect("a window")
}

fn document() -> Document {
    window().document().expect("a document")
}

fn log(msg: &str) {
    web_sys::console::log_1(&JsValue::from_str(msg));
}

/// Call the page's callbacks for `kind` with `detail` (its `type` set to
/// `kind`). Never called with the viewer borrowed: a callback may call
/// `stats()` or `close()`. A callback that throws is logged and the others
/// still run.
// r[impl web.api.events]
fn emit(v: &Shared, kind: &str, detail: js_sys::Object) {
    let callbacks: Vec<js_sys::Function> = {
        let vb = v.borrow();
        if vb.closed {
            return;
        }
        vb.callbacks
            .iter()
            .filter(|(k, _)| k == kind)
            .map(|(_, f)| f.clone())
            .collect()
    };
    if callbacks.is_empty() {
        return;
    }
    set(&detail, "type", &kind.into());
    let detail: JsValue = detail.into();
    for f in callbacks {
        if let Err(e) = f.call1(&JsValue::NULL, &detail) {
            log(&format!("linkstream: a {kind} event listener threw: {e:?}"));
        }
    }
}

/// The PSK of `#psk=<hex>` in a URL fragment (`location.hash`), if any.
fn psk_from_hash(hash: &str) -> Result<Option<Vec<u8>>, String> {
    stream::parse_psk_fragment(hash).map_err(|e| e.to_string())
}

/// The pre-shared key in a URL fragment as `linkstream host` prints it in
/// its join URLs (`#psk=<hex>`; pass `location.hash`): a `Uint8Array` for
/// the viewer's `psk` option, `undefined` when the fragment has none.
/// Throws when the key is not hex.
#[wasm_bindgen(js_name = pskFromFragment)]
pub fn psk_from_fragment(hash: &str) -> Result<Option<js_sys::Uint8Array>, JsValue> {
    psk_from_hash(hash)
        .map(|k| k.map(|k| js_sys::Uint8Array::from(&k[..])))
        .map_err(|e| js_sys::Error::new(&e).into())
}

/// The options of [`LinkstreamViewer::new`], read from a JS object.
struct Options {
    psk: Option<Vec<u8>>,
    reconnect: bool,
    input: bool,
    key_target: Option<EventTarget>,
    local_keys: Vec<String>,
}

fn bad(msg: &str) -> JsValue {
    js_sys::Error::new(msg).into()
}

impl Options {
    fn from_js(o: &JsValue) -> Result<Options, JsValue> {
        let mut opts = Options {
            psk: None,
            reconnect: true,
            input: true,
            key_target: None,
            local_keys: Vec::new(),
        };
        if o.is_undefined() || o.is_null() {
            return Ok(opts);
        }
        if !o.is_object() {
            return Err(bad("LinkstreamViewer: options must be an object"));
        }
        let get = |k: &str| {
            js_sys::Reflect::get(o, &JsValue::from_str(k))
                .ok()
                .filter(|v| !v.is_undefined() && !v.is_null())
        };
        if let Some(p) = get("psk") {
            let key = if let Some(s) = p.as_string() {
                stream::parse_psk_hex(&s)
                    .map_err(|_| bad("options.psk: a string key must be hex"))?
            } else if let Some(a) = p.dyn_ref::<js_sys::Uint8Array>() {
                a.to_vec()
            } else {
                return Err(bad("options.psk: a Uint8Array or a hex string"));
            };
            if key.is_empty() {
                return Err(bad("options.psk: the key is empty"));
            }
            opts.psk = Some(key);
        }
        let flag = |k: &str, default: bool| match get(k) {
            None => Ok(default),
            Some(b) => b
                .as_bool()
                .ok_or_else(|| bad(&format!("options.{k}: true or false"))),
        };
        opts.reconnect = flag("reconnect", true)?;
        opts.input = flag("input", true)?;
        if let Some(t) = get("keyTarget") {
            opts.key_target = Some(
                t.dyn_into::<EventTarget>()
                    .map_err(|_| bad("options.keyTarget: an EventTarget (window, an element)"))?,
            );
        }
        if let Some(keys) = get("localKeys") {
            let keys = keys
                .dyn_into::<js_sys::Array>()
                .map_err(|_| bad("options.localKeys: an array of KeyboardEvent.code strings"))?;
            for k in keys.iter() {
                opts.local_keys.push(k.as_string().ok_or_else(|| {
                    bad("options.localKeys: an array of KeyboardEvent.code strings")
                })?);
            }
        }
        Ok(opts)
    }
}

/// What `close()` stops: the connection and rate tasks, the animation
/// frame loop and the input listeners.
struct Running {
    tasks: Vec<AbortHandle>,
    animation: Animation,
    listeners: Vec<Listener>,
}

/// The animation frame callback.
type Tick = Closure<dyn FnMut(f64)>;

/// The animation frame loop: its pending request and its callback.
struct Animation {
    id: Rc<Cell<Option<i32>>>,
    callback: Rc<RefCell<Option<Tick>>>,
}

/// A DOM event listener, removed by `close()`.
struct Listener {
    target: EventTarget,
    kind: &'static str,
    callback: Closure<dyn FnMut(web_sys::Event)>,
}

/// A linkstream viewer on a canvas: connects to a host's stream URL,
/// decodes its H.264 with WebCodecs onto the canvas, sends keyboard, mouse,
/// wheel and touch input back, reconnects when the connection drops.
///
/// ```js
/// import init, { LinkstreamViewer, pskFromFragment } from "./linkstream_web.js";
/// await init({ module_or_path: "./linkstream_web_bg.wasm" });
/// const viewer = new LinkstreamViewer(canvas, "ws://host:7001/stream", {
///   psk: pskFromFragment(location.hash),
/// });
/// viewer.addEventListener("frame", (e) => console.log(e.index, e.width, e.height));
/// console.log(viewer.stats().frames_decoded);
/// viewer.close();
/// ```
///
/// Options (all optional): `psk` (`Uint8Array` or hex string: the host's
/// pre-shared key), `reconnect` (default `true`: reconnect after 100 ms,
/// doubling to 1 s while attempts fail), `input` (default `true`: capture
/// keyboard, mouse, wheel and touch), `keyTarget` (where keys are listened
/// for; default the canvas, which then needs focus), `localKeys`
/// (`KeyboardEvent.code`s the viewer leaves to the page, e.g. `["F2"]`).
///
/// Events (`addEventListener(name, callback)`, the callback gets one
/// object with `type` set to the name): `connect` (`url`, `connects`),
/// `disconnect` (`reason`, `established`: whether the session had started,
/// `reconnectInMs`: the delay before the next attempt, or `null` when the
/// viewer does not reconnect), `frame` for each frame drawn (`index`: the
/// host's capture index, `width`, `height`, `bytes`: its encoded size,
/// `keyframe`, `captureUs`: the host's capture time in µs since the Unix
/// epoch on the host's clock, `receivedMs`, `decodedMs`, `displayedMs` on
/// this page's `performance.now()` clock), `state` (`state`: the text the
/// served page shows).
#[wasm_bindgen]
pub struct LinkstreamViewer {
    shared: Shared,
    /// `None` once closed. In a cell so that `close()` takes `&self`: an
    /// event callback it fires may still call `stats()`.
    running: RefCell<Option<Running>>,
}

#[wasm_bindgen]
impl LinkstreamViewer {
    /// A viewer on `canvas` (an `HTMLCanvasElement`; the viewer takes its
    /// 2D context and sets its size to the video's) for the stream at `url`
    /// (`ws://HOST:PORT/stream` or `wss://...`), with `options` (see the
    /// type). It starts connecting at once. Throws on a bad canvas, URL or
    /// option.
    // r[impl web.api.viewer]
    #[wasm_bindgen(constructor)]
    pub fn new(
        canvas: JsValue,
        url: JsValue,
        options: JsValue,
    ) -> Result<LinkstreamViewer, JsValue> {
        let url = url
            .as_string()
            .ok_or_else(|| bad("LinkstreamViewer: the stream URL must be a string"))?;
        let canvas: HtmlCanvasElement = canvas
            .dyn_into()
            .map_err(|_| bad("LinkstreamViewer: the first argument must be a <canvas> element"))?;
        if !(url.starts_with("ws://") || url.starts_with("wss://")) {
            return Err(bad(&format!(
                "LinkstreamViewer: the stream URL must be ws:// or wss://, not {url:?}"
            )));
        }
        let opts = Options::from_js(&options)?;
        let ctx = canvas
            .get_context("2d")?
            .ok_or_else(|| bad("LinkstreamViewer: the canvas has another kind of context"))?
            .dyn_into::<CanvasRenderingContext2d>()?;
        let shared = Rc::new(RefCell::new(Viewer {
            c: Counters::default(),
            state: "starting".into(),
            connected: false,
            closed: false,
            decoder: None,
            decoder_callbacks: None,
            codec: String::new(),
            size: (0, 0),
            waiting_keyframe: true,
            in_flight: 0,
            pending: VecDeque::new(),
            latest: None,
            want_keyframe: false,
            last_keyframe_request_ms: f64::NEG_INFINITY,
            last_frame_index: None,
            last_session_frame: 0,
            target_kbps: 0,
            viewer_target_kbps: 0,
            recent_layers: VecDeque::new(),
            displayed_rendition: 0,
            rendition_changes: 0,
            decode_ms: VecDeque::new(),
            latency_ms: VecDeque::new(),
            session: ClientStats::default(),
            rate_base: (now_ms(), 0, 0),
            fps: 0.0,
            kbps: 0.0,
            canvas: canvas.clone(),
            ctx,
            input: None,
            session_ms: 0.0,
            picture_after_connect_ms: None,
            first_picture_ms: None,
            callbacks: Vec::new(),
            local_keys: opts.local_keys.clone(),
        }));
        let listeners = if opts.input {
            let key_target = opts.key_target.clone().unwrap_or_else(|| canvas.into());
            install_input(&shared, &key_target)?
        } else {
            Vec::new()
        };
        let animation = start_animation(shared.clone());
        let (conn, conn_handle) = abortable(connection_loop(
            shared.clone(),
            url,
            opts.psk,
            opts.reconnect,
        ));
        let (rates, rates_handle) = abortable(rate_loop(shared.clone()));
        wasm_bindgen_futures::spawn_local(async move {
            let _ = conn.await;
        });
        wasm_bindgen_futures::spawn_local(async move {
            let _ = rates.await;
        });
        Ok(LinkstreamViewer {
            shared,
            running: RefCell::new(Some(Running {
                tasks: vec![conn_handle, rates_handle],
                animation,
                listeners,
            })),
        })
    }

    /// A snapshot of the viewer's counters as a plain object: connection
    /// (`connected`, `state`, `connects`, `reconnects`), frames
    /// (`frames_received`, `bytes_received`, `frames_decoded`,
    /// `frames_displayed`, `frames_dropped` and why, `decode_errors`,
    /// `envelope_errors`, `keyframe_requests`), the picture
    /// (`last_frame_index`, `canvas_index`: the burned-in index read back
    /// from the canvas, `width`, `height`, `codec`, `rendition`: the
    /// simulcast rendition on the canvas, `rendition_changes`, `layer`,
    /// `keyframes`, `recovery_frames`), rates (`fps`, `kbps`,
    /// `target_kbps`, `viewer_target_kbps`), the session (`frames_lost`, `frames_recovered`),
    /// timings (`decode_ms_p50/p95`, `latency_ms_p50/p99`,
    /// `picture_after_connect_ms`, `first_picture_ms`, `now_ms`) and input
    /// (`input_sent`, `input_dropped`, `input_unmapped`). Works after
    /// `close()` too (the final counts).
    // r[impl web.api.stats]
    pub fn stats(&self) -> Result<JsValue, JsValue> {
        let json = {
            let v = self
                .shared
                .try_borrow()
                .map_err(|_| bad("LinkstreamViewer.stats: the viewer is busy"))?;
            stats_json(&v)
        };
        js_sys::JSON::parse(&json)
    }

    /// Call `callback` with each event `kind` (`connect`, `disconnect`,
    /// `frame`, `state`); throws on another name. Nothing after `close()`.
    #[wasm_bindgen(js_name = addEventListener)]
    pub fn add_event_listener(
        &self,
        kind: &str,
        callback: js_sys::Function,
    ) -> Result<(), JsValue> {
        if !EVENTS.contains(&kind) {
            return Err(bad(&format!(
                "LinkstreamViewer: no event {kind:?} (events: {})",
                EVENTS.join(", ")
            )));
        }
        let mut v = self.shared.borrow_mut();
        if !v.closed {
            v.callbacks.push((kind.to_owned(), callback));
        }
        Ok(())
    }

    /// Stop calling `callback` for `kind`.
    #[wasm_bindgen(js_name = removeEventListener)]
    pub fn remove_event_listener(&self, kind: &str, callback: &js_sys::Function) {
        let target: &JsValue = callback.as_ref();
        self.shared.borrow_mut().callbacks.retain(|(k, f)| {
            let f: &JsValue = f.as_ref();
            !(k == kind && f == target)
        });
    }

    /// Whether `close()` was called.
    #[wasm_bindgen(getter)]
    pub fn closed(&self) -> bool {
        self.shared.borrow().closed
    }

    /// Stop everything: close the connection (the host sees the viewer
    /// leave), the decoder and any frame waiting to be drawn; stop the
    /// animation frame loop and the timers; remove the input listeners and
    /// release the pointer lock; forget the event callbacks (a connected
    /// viewer fires `disconnect` with reason `"closed"` first). The canvas
    /// keeps its last picture. `stats()` still answers. Calling it again
    /// does nothing.
    // r[impl web.api.close]
    pub fn close(&self) {
        let Some(run) = self.running.borrow_mut().take() else {
            return;
        };
        let was_connected = self.shared.borrow().connected;
        if was_connected {
            let d = js_sys::Object::new();
            set(&d, "reason", &"closed".into());
            set(&d, "established", &true.into());
            set(&d, "reconnectInMs", &JsValue::NULL);
            emit(&self.shared, "disconnect", d);
        }
        for t in &run.tasks {
            t.abort();
        }
        if let Some(id) = run.animation.id.take() {
            let _ = window().cancel_animation_frame(id);
        }
        // Breaks the callback's reference to itself.
        drop(run.animation.callback.borrow_mut().take());
        for l in &run.listeners {
            let _ = l
                .target
                .remove_event_listener_with_callback(l.kind, l.callback.as_ref().unchecked_ref());
        }
        drop(run.listeners);
        let locked = document().pointer_lock_element();
        let mut v = self.shared.borrow_mut();
        if locked.is_some_and(|el| el == *v.canvas.as_ref()) {
            document().exit_pointer_lock();
        }
        v.closed = true;
        v.connected = false;
        v.input = None;
        v.state = "closed".into();
        if let Some(d) = v.decoder.take() {
            let _ = d.close();
        }
        v.decoder_callbacks = None;
        v.in_flight = 0;
        v.pending.clear();
        if let Some(d) = v.latest.take() {
            d.frame.close();
        }
        v.callbacks.clear();
    }
}

impl Drop for LinkstreamViewer {
    /// `viewer.free()` from JS: close first.
    fn drop(&mut self) {
        self.close();
    }
}

fn set_state(v: &Shared, state: &str) {
    {
        let mut vb = v.borrow_mut();
        if vb.closed {
            return;
        }
        vb.state = state.to_owned();
    }
    let d = js_sys::Object::new();
    set(&d, "state", &state.into());
    emit(v, "state", d);
}

// r[impl web.api.reconnect]
async fn connection_loop(v: Shared, url: String, psk: Option<Vec<u8>>, reconnect: bool) {
    let mut backoff = BACKOFF_MIN;
    loop {
        set_state(&v, &format!("connecting to {url}"));
        let (established, why) = match session(&v, &url, psk.clone()).await {
            Ok(established) => (established, "the host ended the session".to_string()),
            Err((established, why)) => (established, why),
        };
        if established {
            backoff = BACKOFF_MIN;
        }
        {
            let mut vb = v.borrow_mut();
            if vb.closed {
                return;
            }
            vb.connected = false;
            vb.input = None;
        }
        log(&format!("linkstream: disconnected: {why}"));
        let d = js_sys::Object::new();
        set(&d, "reason", &why.as_str().into());
        set(&d, "established", &established.into());
        if !reconnect {
            set(&d, "reconnectInMs", &JsValue::NULL);
            set_state(&v, &format!("disconnected ({why})"));
            emit(&v, "disconnect", d);
            return;
        }
        let ms = backoff.as_millis();
        set(&d, "reconnectInMs", &(ms as f64).into());
        set_state(
            &v,
            &format!("disconnected ({why}); reconnecting in {ms} ms"),
        );
        emit(&v, "disconnect", d);
        Delay::new(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// One connection: link, session, frames and input until it ends.
/// `Ok(true)`/`Err((true, _))` if the session was established.
async fn session(v: &Shared, url: &str, psk: Option<Vec<u8>>) -> Result<bool, (bool, String)> {
    let link = WsLink::connect(url, &WsConfig::default())
        .await
        .map_err(|e| (false, e.to_string()))?;
    let config = ClientConfig {
        psk,
        ..ClientConfig::default()
    };
    let (mut client, mut input) = Client::connect(link, config)
        .await
        .map_err(|e| (false, e.to_string()))?;
    let (tx, mut rx) = mpsc::channel::<InputEvent>(INPUT_QUEUE);
    let connects = {
        let mut vb = v.borrow_mut();
        if vb.closed {
            return Err((true, "closed".into()));
        }
        vb.c.connects += 1;
        if vb.c.connects > 1 {
            vb.c.reconnects += 1;
        }
        vb.connected = true;
        vb.input = Some(tx);
        vb.session_ms = now_ms();
        vb.picture_after_connect_ms = None;
        // A new session starts at a keyframe (the host sends one to a
        // joining viewer); deltas before it ask for one.
        vb.waiting_keyframe = true;
        vb.want_keyframe = false;
        vb.last_keyframe_request_ms = f64::NEG_INFINITY;
        vb.c.connects
    };
    set_state(v, "connected");
    let d = js_sys::Object::new();
    set(&d, "url", &url.into());
    set(&d, "connects", &(connects as f64).into());
    emit(v, "connect", d);
    loop {
        // Keyframe wanted (decoder error, skipped frames, new session):
        // ask the host, at most every KEYFRAME_REQUEST_EVERY_MS.
        {
            let mut vb = v.borrow_mut();
            if vb.closed {
                return Err((true, "closed".into()));
            }
            let now = now_ms();
            if vb.want_keyframe && now - vb.last_keyframe_request_ms >= KEYFRAME_REQUEST_EVERY_MS {
                vb.want_keyframe = false;
                vb.last_keyframe_request_ms = now;
                vb.c.keyframe_requests += 1;
                client.request_keyframe(vb.last_session_frame);
            }
        }
        let next = match select(pin!(client.next_frame()), rx.next()).await {
            Either::Left((r, _)) => Either::Left(r),
            Either::Right((e, _)) => Either::Right(e),
        };
        match next {
            Either::Left(Ok(Some(ClientEvent::Frame(f)))) => {
                let mut vb = v.borrow_mut();
                if vb.closed {
                    return Err((true, "closed".into()));
                }
                vb.session = client.stats();
                on_frame(v, &mut vb, f);
            }
            Either::Left(Ok(Some(ClientEvent::Lost { first, count }))) => {
                let mut vb = v.borrow_mut();
                vb.session = client.stats();
                vb.last_session_frame = first + count - 1;
                // The frames after a loss reference what was lost.
                vb.waiting_keyframe = true;
                vb.want_keyframe = true;
            }
            Either::Left(Ok(None)) => return Ok(true),
            Either::Left(Err(e)) => return Err((true, e.to_string())),
            Either::Right(Some(ev)) => match input.send_input(ev).await {
                Ok(()) => v.borrow_mut().c.input_sent += 1,
                Err(e) => return Err((true, format!("sending input: {e}"))),
            },
            Either::Right(None) => return Err((true, "input channel closed".into())),
        }
    }
}
fn on_frame(shared: &Shared, v: &mut Viewer, f: Frame) {
    let received_ms = now_ms();
    v.c.frames_received += 1;
    v.c.bytes_received += f.data().len() as u64;
    v.last_session_frame = f.index;
    let (env, access_unit) = match VideoHeader::parse(f.data()) {
        Ok(e) => e,
        Err(e) => {
            v.c.envelope_errors += 1;
            v.c.frames_dropped += 1;
            log(&format!("linkstream: frame {}: {e}", f.index));
            return;
        }
    };
    v.last_frame_index = Some(env.capture_index);
    v.target_kbps = env.target_kbps;
    v.viewer_target_kbps = u32::from(env.viewer_target_10kbps) * 10;
    v.recent_layers.push_back((received_ms, env.temporal_id));
    while v
        .recent_layers
        .front()
        .is_some_and(|l| received_ms - l.0 > 1000.0)
    {
        v.recent_layers.pop_front();
    }
    let keyframe = env.keyframe || f.flags.is_keyframe();
    // An LTR recovery frame predicts only from a reference every viewer
    // has: a configured decoder that lost frames resumes there, as a delta.
    let configured = v
        .decoder
        .as_ref()
        .is_some_and(|d| d.state() == "configured");
    if !keyframe && v.waiting_keyframe && h264::resumes_after_loss(false, env.recovery, configured)
    {
        v.waiting_keyframe = false;
        v.c.recovery_frames += 1;
    }
    if keyframe {
        let codec = h264::codec_string(access_unit);
        let usable = v
            .decoder
            .as_ref()
            .is_some_and(|d| d.state() == "configured");
        let changed =
            codec.as_ref().is_some_and(|c| *c != v.codec) || (env.width, env.height) != v.size;
        if !usable || changed {
            let Some(codec) = codec else {
                // A keyframe without an SPS cannot configure a decoder.
                v.c.frames_dropped += 1;
                v.c.dropped_waiting_keyframe += 1;
                v.want_keyframe = true;
                return;
            };
            if let Err(e) = new_decoder(shared, v, &codec, env.width, env.height) {
                v.c.decode_errors += 1;
                v.c.frames_dropped += 1;
                v.want_keyframe = true;
                log(&format!("linkstream: decoder for {codec}: {e:?}"));
                return;
            }
        }
        v.waiting_keyframe = false;
        v.c.keyframes += 1;
    } else if v.waiting_keyframe || v.decoder.is_none() {
        v.c.frames_dropped += 1;
        v.c.dropped_waiting_keyframe += 1;
        v.want_keyframe = true;
        return;
    }
    if v.in_flight >= MAX_IN_FLIGHT && !keyframe {
        // The decoder falls behind: skip to the next recovery point.
        v.c.frames_dropped += 1;
        v.c.dropped_in_flight += 1;
        v.waiting_keyframe = true;
        v.want_keyframe = true;
        return;
    }
    let init = js_sys::Object::new();
    set(
        &init,
        "type",
        &(if keyframe { "key" } else { "delta" }).into(),
    );
    set(&init, "timestamp", &(env.capture_index as f64).into());
    set(&init, "data", &js_sys::Uint8Array::from(access_unit).into());
    let submitted = EncodedVideoChunk::new(&init).and_then(|chunk| {
        v.decoder
            .as_ref()
            .ok_or_else(|| JsValue::from_str("no decoder"))?
            .decode(&chunk)
    });
    match submitted {
        Ok(()) => {
            v.in_flight += 1;
            v.pending.push_back(FrameInfo {
                capture_index: env.capture_index,
                bytes: access_unit.len(),
                keyframe,
                capture_us: env.capture_us,
                rendition: env.rendition,
                received_ms,
                decoded_ms: 0.0,
            });
            while v.pending.len() > 64 {
                v.pending.pop_front();
            }
        }
        Err(e) => {
            log(&format!("linkstream: decode: {e:?}"));
            decoder_failed(v);
        }
    }
}

/// A decoder error: count it, drop the decoder (a new one is made at the
/// next keyframe) and ask for a keyframe.
fn decoder_failed(v: &mut Viewer) {
    v.c.decode_errors += 1;
    if let Some(d) = v.decoder.take() {
        let _ = d.close();
    }
    v.in_flight = 0;
    v.pending.clear();
    v.waiting_keyframe = true;
    v.want_keyframe = true;
}

fn new_decoder(
    shared: &Shared,
    v: &mut Viewer,
    codec: &str,
    width: u16,
    height: u16,
) -> Result<(), JsValue> {
    if let Some(old) = v.decoder.take() {
        let _ = old.close();
    }
    v.in_flight = 0;
    v.pending.clear();
    let weak = Rc::downgrade(shared);
    let output = Closure::<dyn FnMut(VideoFrame)>::new(move |frame: VideoFrame| {
        let Some(s) = weak.upgrade() else {
            frame.close();
            return;
        };
        let mut v = s.borrow_mut();
        on_output(&mut v, frame);
    });
    let weak = Rc::downgrade(shared);
    let error = Closure::<dyn FnMut(JsValue)>::new(move |e: JsValue| {
        log(&format!("linkstream: decoder error: {e:?}"));
        if let Some(s) = weak.upgrade() {
            decoder_failed(&mut s.borrow_mut());
        }
    });
    let init = js_sys::Object::new();
    set(&init, "output", output.as_ref());
    set(&init, "error", error.as_ref());
    let decoder = VideoDecoder::new(&init)?;
    // Kept with the decoder (the old decoder was closed above, so its
    // callbacks, dropped here, are never called again); they hold only a
    // weak reference to the viewer.
    v.decoder_callbacks = Some((output, error));
    let config = js_sys::Object::new();
    set(&config, "codec", &codec.into());
    set(&config, "codedWidth", &(width as u32).into());
    set(&config, "codedHeight", &(height as u32).into());
    set(&config, "optimizeForLatency", &true.into());
    decoder.configure(&config)?;
    v.decoder = Some(decoder);
    v.codec = codec.to_owned();
    v.size = (width, height);
    Ok(())
}

fn on_output(v: &mut Viewer, frame: VideoFrame) {
    let now = now_ms();
    v.in_flight = v.in_flight.saturating_sub(1);
    v.c.frames_decoded += 1;
    let ts = frame.timestamp() as u64;
    let mut info = FrameInfo {
        capture_index: ts,
        bytes: 0,
        keyframe: false,
        capture_us: 0,
        rendition: v.displayed_rendition,
        received_ms: now,
        decoded_ms: now,
    };
    while let Some(p) = v.pending.pop_front() {
        if p.capture_index == ts {
            push_sample(&mut v.decode_ms, now - p.received_ms);
            info = FrameInfo {
                decoded_ms: now,
                ..p
            };
            break;
        }
    }
    if let Some(old) = v.latest.replace(Decoded { frame, info }) {
        old.frame.close();
        v.c.frames_superseded += 1;
    }
}

/// Draw the newest decoded frame at every animation frame, until
/// `close()` cancels the pending request and drops the callback.
fn start_animation(v: Shared) -> Animation {
    let animation = Animation {
        id: Rc::new(Cell::new(None)),
        callback: Rc::new(RefCell::new(None)),
    };
    let (again, id) = (animation.callback.clone(), animation.id.clone());
    *animation.callback.borrow_mut() = Some(Closure::new(move |_t: f64| {
        id.set(None);
        draw(&v);
        // None once close() ran (possibly from a frame event just now).
        if let Some(c) = again.borrow().as_ref() {
            id.set(
                window()
                    .request_animation_frame(c.as_ref().unchecked_ref())
                    .ok(),
            );
        }
    }));
    if let Some(c) = animation.callback.borrow().as_ref() {
        animation.id.set(
            window()
                .request_animation_frame(c.as_ref().unchecked_ref())
                .ok(),
        );
    }
    animation
}

fn draw(shared: &Shared) {
    let detail = {
        let mut v = shared.borrow_mut();
        if v.closed {
            return;
        }
        let Some(d) = v.latest.take() else { return };
        let (w, h) = (d.frame.display_width(), d.frame.display_height());
        if v.canvas.width() != w || v.canvas.height() != h {
            v.canvas.set_width(w);
            v.canvas.set_height(h);
        }
        v.ctx
            .unchecked_ref::<Ctx2d>()
            .draw_frame(&d.frame, 0.0, 0.0);
        d.frame.close();
        v.c.frames_displayed += 1;
        if v.c.frames_displayed > 1 && v.displayed_rendition != d.info.rendition {
            v.rendition_changes += 1;
        }
        v.displayed_rendition = d.info.rendition;
        let now = now_ms();
        if v.connected && v.picture_after_connect_ms.is_none() {
            v.picture_after_connect_ms = Some(now - v.session_ms);
        }
        v.first_picture_ms.get_or_insert(now);
        // Capture to displayed, on the host's clock: meaningful where the
        // clocks agree (one machine, or synchronised); kept only if
        // plausible.
        let i = d.info;
        let latency = js_sys::Date::now() - i.capture_us as f64 / 1000.0;
        if i.capture_us > 0 && (0.0..10_000.0).contains(&latency) {
            push_sample(&mut v.latency_ms, latency);
        }
        let detail = js_sys::Object::new();
        set(&detail, "index", &(i.capture_index as f64).into());
        set(&detail, "width", &w.into());
        set(&detail, "height", &h.into());
        set(&detail, "bytes", &(i.bytes as f64).into());
        set(&detail, "keyframe", &i.keyframe.into());
        set(&detail, "rendition", &i.rendition.into());
        set(&detail, "captureUs", &(i.capture_us as f64).into());
        set(&detail, "receivedMs", &i.received_ms.into());
        set(&detail, "decodedMs", &i.decoded_ms.into());
        set(&detail, "displayedMs", &now.into());
        detail
    };
    emit(shared, "frame", detail);
}

/// Update the frame and bit rates twice a second.
async fn rate_loop(v: Shared) {
    loop {
        Delay::new(Duration::from_millis(500)).await;
        let mut vb = v.borrow_mut();
        let now = now_ms();
        let (t0, f0, b0) = vb.rate_base;
        let dt = ((now - t0) / 1000.0).max(1e-3);
        vb.fps = (vb.c.frames_displayed - f0) as f64 / dt;
        vb.kbps = (vb.c.bytes_received - b0) as f64 * 8.0 / 1000.0 / dt;
        vb.rate_base = (now, vb.c.frames_displayed, vb.c.bytes_received);
    }
}

// r[impl video.scale.index]
/// The burned-in index read back from the canvas pixels, through the
/// scaling of the rendition on the canvas.
fn canvas_index(v: &Viewer) -> Option<u32> {
    let w = v.canvas.width() as usize;
    let r = v.displayed_rendition.min(3);
    let b = index::block_size(w << r)?;
    let rows = b.div_ceil(1 << r);
    let data = v.ctx.get_image_data(0.0, 0.0, w as f64, rows as f64).ok()?;
    index::read_rgba_scaled(&data.data(), w, r).map(|v| v as u32)
}

fn stats_json(v: &Viewer) -> String {
    let c = &v.c;
    let opt = |x: Option<f64>| x.map_or("null".to_string(), |x| format!("{x:.3}"));
    let idx = |x: Option<u64>| x.map_or("null".to_string(), |x| x.to_string());
    format!(
        concat!(
            "{{\"connected\":{},\"state\":{},\"connects\":{},\"reconnects\":{},",
            "\"frames_received\":{},\"bytes_received\":{},\"frames_decoded\":{},",
            "\"frames_displayed\":{},\"frames_dropped\":{},\"dropped_waiting_keyframe\":{},",
            "\"dropped_in_flight\":{},\"frames_superseded\":{},\"decode_errors\":{},",
            "\"envelope_errors\":{},\"keyframe_requests\":{},\"input_sent\":{},",
            "\"keyframes\":{},\"recovery_frames\":{},\"layer\":{},\"viewer_target_kbps\":{},",
            "\"rendition\":{},\"rendition_changes\":{},",
            "\"input_dropped\":{},\"input_unmapped\":{},\"last_frame_index\":{},",
            "\"canvas_index\":{},\"width\":{},\"height\":{},\"codec\":{},\"target_kbps\":{},",
            "\"fps\":{:.2},\"kbps\":{:.1},\"frames_lost\":{},\"frames_recovered\":{},",
            "\"decode_ms_p50\":{},\"decode_ms_p95\":{},\"decode_samples\":{},",
            "\"latency_ms_p50\":{},\"latency_ms_p99\":{},\"latency_samples\":{},",
            "\"in_flight\":{},\"picture_after_connect_ms\":{},\"first_picture_ms\":{},",
            "\"now_ms\":{:.3}}}"
        ),
        v.connected,
        js_string(&v.state),
        c.connects,
        c.reconnects,
        c.frames_received,
        c.bytes_received,
        c.frames_decoded,
        c.frames_displayed,
        c.frames_dropped,
        c.dropped_waiting_keyframe,
        c.dropped_in_flight,
        c.frames_superseded,
        c.decode_errors,
        c.envelope_errors,
        c.keyframe_requests,
        c.input_sent,
        c.keyframes,
        c.recovery_frames,
        v.recent_layers.iter().map(|l| l.1).max().unwrap_or(0),
        v.viewer_target_kbps,
        v.displayed_rendition,
        v.rendition_changes,
        c.input_dropped,
        c.input_unmapped,
        idx(v.last_frame_index),
        idx(canvas_index(v).map(u64::from)),
        v.size.0,
        v.size.1,
        js_string(&v.codec),
        v.target_kbps,
        v.fps,
        v.kbps,
        v.session.frames_lost,
        v.session.frames_recovered,
        opt(percentile(&v.decode_ms, 50.0)),
        opt(percentile(&v.decode_ms, 95.0)),
        v.decode_ms.len(),
        opt(percentile(&v.latency_ms, 50.0)),
        opt(percentile(&v.latency_ms, 99.0)),
        v.latency_ms.len(),
        v.in_flight,
        opt(v.picture_after_connect_ms),
        opt(v.first_picture_ms),
        now_ms(),
    )
}

fn js_string(s: &str) -> String {
    js_sys::JSON::stringify(&JsValue::from_str(s))
        .ok()
        .and_then(|s| s.as_string())
        .unwrap_or_else(|| "\"\"".into())
}

// ---------------------------------------------------------------- input

/// Queue an input event for the host (dropped and counted while
/// disconnected or when the queue is full).
fn send(v: &Shared, ev: InputEvent) {
    let mut vb = v.borrow_mut();
    let ok = match vb.input.as_mut() {
        Some(tx) => tx.try_send(ev).is_ok(),
        None => false,
    };
    if !ok {
        vb.c.input_dropped += 1;
    }
}

/// USB HID usage (keyboard page) of a `KeyboardEvent.code`.
fn hid_usage(code: &str) -> Option<u32> {
    let b = code.as_bytes();
    if let Some(l) = code.strip_prefix("Key")
        && l.len() == 1
        && b[3].is_ascii_uppercase()
    {
        return Some(0x04 + (b[3] - b'A') as u32);
    }
    if let Some(d) = code.strip_prefix("Digit")
        && let Ok(n) = d.parse::<u32>()
        && n <= 9
    {
        return Some(if n == 0 { 0x27 } else { 0x1d + n });
    }
    if let Some(f) = code.strip_prefix('F')
        && let Ok(n) = f.parse::<u32>()
        && (1..=12).contains(&n)
    {
        return Some(0x39 + n);
    }
    Some(match code {
        "Enter" => 0x28,
        "Escape" => 0x29,
        "Backspace" => 0x2a,
        "Tab" => 0x2b,
        "Space" => 0x2c,
        "Minus" => 0x2d,
        "Equal" => 0x2e,
        "BracketLeft" => 0x2f,
        "BracketRight" => 0x30,
        "Backslash" => 0x31,
        "Semicolon" => 0x33,
        "Quote" => 0x34,
        "Backquote" => 0x35,
        "Comma" => 0x36,
        "Period" => 0x37,
        "Slash" => 0x38,
        "CapsLock" => 0x39,
        "PrintScreen" => 0x46,
        "ScrollLock" => 0x47,
        "Pause" => 0x48,
        "Insert" => 0x49,
        "Home" => 0x4a,
        "PageUp" => 0x4b,
        "Delete" => 0x4c,
        "End" => 0x4d,
        "PageDown" => 0x4e,
        "ArrowRight" => 0x4f,
        "ArrowLeft" => 0x50,
        "ArrowDown" => 0x51,
        "ArrowUp" => 0x52,
        "NumLock" => 0x53,
        "ControlLeft" => 0xe0,
        "ShiftLeft" => 0xe1,
        "AltLeft" => 0xe2,
        "MetaLeft" => 0xe3,
        "ControlRight" => 0xe4,
        "ShiftRight" => 0xe5,
        "AltRight" => 0xe6,
        "MetaRight" => 0xe7,
        _ => return None,
    })
}

/// Listen for `kind` on `target` as long as the viewer runs (`close()`
/// removes the listener).
fn listen<E: JsCast + 'static>(
    out: &mut Vec<Listener>,
    target: &EventTarget,
    kind: &'static str,
    passive: bool,
    mut f: impl FnMut(E) + 'static,
) -> Result<(), JsValue> {
    let callback = Closure::<dyn FnMut(web_sys::Event)>::new(move |e: web_sys::Event| {
        f(e.unchecked_into::<E>())
    });
    let opts = AddEventListenerOptions::new();
    opts.set_passive(passive);
    target.add_event_listener_with_callback_and_add_event_listener_options(
        kind,
        callback.as_ref().unchecked_ref(),
        &opts,
    )?;
    out.push(Listener {
        target: target.clone(),
        kind,
        callback,
    });
    Ok(())
}

/// Keys on `key_target`; mouse, wheel and touch on the canvas.
// r[impl web.api.input]
fn install_input(v: &Shared, key_target: &EventTarget) -> Result<Vec<Listener>, JsValue> {
    let mut out = Vec::new();
    let canvas = v.borrow().canvas.clone();
    let target: EventTarget = canvas.clone().into();

    for (kind, down) in [("keydown", true), ("keyup", false)] {
        let v = v.clone();
        listen(
            &mut out,
            key_target,
            kind,
            false,
            move |e: KeyboardEvent| {
                let code = e.code();
                if v.borrow().local_keys.contains(&code) {
                    // The page's own key: left to it, not sent.
                    return;
                }
                let Some(code) = hid_usage(&code) else {
                    v.borrow_mut().c.input_unmapped += 1;
                    return;
                };
                e.prevent_default();
                let mods = e.shift_key() as u16
                    | (e.ctrl_key() as u16) << 1
                    | (e.alt_key() as u16) << 2
                    | (e.meta_key() as u16) << 3;
                send(&v, InputEvent::Key { code, down, mods });
            },
        )?;
    }

    {
        let (v, c) = (v.clone(), canvas.clone());
        listen(
            &mut out,
            &target,
            "mousemove",
            true,
            move |e: MouseEvent| {
                let locked = document()
                    .pointer_lock_element()
                    .is_some_and(|el| el == *c.as_ref());
                if locked {
                    send(
                        &v,
                        InputEvent::MouseMove {
                            dx: e.movement_x(),
                            dy: e.movement_y(),
                        },
                    );
                } else {
                    // Canvas pixels = video pixels, whatever the CSS size.
                    let (cw, ch) = (c.client_width().max(1), c.client_height().max(1));
                    let x = e.offset_x() as i64 * c.width() as i64 / cw as i64;
                    let y = e.offset_y() as i64 * c.height() as i64 / ch as i64;
                    send(
                        &v,
                        InputEvent::MouseAbs {
                            x: x as i32,
                            y: y as i32,
                        },
                    );
                }
            },
        )?;
    }
    for (kind, down) in [("mousedown", true), ("mouseup", false)] {
        let v = v.clone();
        listen(&mut out, &target, kind, false, move |e: MouseEvent| {
            e.prevent_default();
            send(
                &v,
                InputEvent::MouseButton {
                    button: e.button().clamp(0, 255) as u8,
                    down,
                },
            );
        })?;
    }
    {
        let v = v.clone();
        listen(&mut out, &target, "wheel", false, move |e: WheelEvent| {
            e.prevent_default();
            // Lines and pages as pixels (40 per line, 800 per page).
            let k = match e.delta_mode() {
                1 => 40.0,
                2 => 800.0,
                _ => 1.0,
            };
            send(
                &v,
                InputEvent::Wheel {
                    dx: (e.delta_x() * k).round() as i32,
                    dy: (e.delta_y() * k).round() as i32,
                },
            );
        })?;
    }
    listen(&mut out, &target, "contextmenu", false, |e: MouseEvent| {
        e.prevent_default()
    })?;
    {
        // Double-click captures the pointer (relative motion); Escape
        // releases it (the browser's own rule).
        let c = canvas.clone();
        listen(
            &mut out,
            &target,
            "dblclick",
            true,
            move |_e: MouseEvent| {
                c.request_pointer_lock();
            },
        )?;
    }
    for (kind, phase) in [
        ("touchstart", TouchPhase::Start),
        ("touchmove", TouchPhase::Move),
        ("touchend", TouchPhase::End),
        ("touchcancel", TouchPhase::Cancel),
    ] {
        let (v, c) = (v.clone(), canvas.clone());
        listen(&mut out, &target, kind, false, move |e: TouchEvent| {
            e.prevent_default();
            let r = c.get_bounding_client_rect();
            let touches = e.changed_touches();
            for i in 0..touches.length() {
                let Some(t) = touches.get(i) else { continue };
                let x = ((t.client_x() as f64 - r.left()) / r.width().max(1.0)) as f32;
                let y = ((t.client_y() as f64 - r.top()) / r.height().max(1.0)) as f32;
                send(
                    &v,
                    InputEvent::Touch {
                        id: t.identifier() as u32,
                        phase,
                        x: x.clamp(0.0, 1.0),
                        y: y.clamp(0.0, 1.0),
                    },
                );
            }
        })?;
    }
    Ok(out)
}
