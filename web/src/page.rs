//! The page (wasm32 only): connection loop, WebCodecs decoding, canvas,
//! input, stats overlay and `window.linkstreamStats()`.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::pin::pin;
use std::rc::Rc;
use std::time::Duration;

use futures::StreamExt;
use futures::channel::mpsc;
use futures::future::{Either, select};
use futures_timer::Delay;
use link_session::{Client, ClientConfig, ClientEvent, ClientStats, Frame, InputEvent, TouchPhase};
use link_ws::{WsConfig, WsLink};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use web_sys::{
    AddEventListenerOptions, CanvasRenderingContext2d, Document, HtmlCanvasElement, HtmlElement,
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

/// The counters `window.linkstreamStats()` reports.
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
    connects: u64,
    reconnects: u64,
    input_sent: u64,
    input_dropped: u64,
    input_unmapped: u64,
}

/// A decoded frame waiting for the next animation frame.
struct Decoded {
    frame: VideoFrame,
    capture_us: u64,
}

struct Pending {
    capture_index: u64,
    received_ms: f64,
    capture_us: u64,
}

type DecoderCallbacks = (Closure<dyn FnMut(VideoFrame)>, Closure<dyn FnMut(JsValue)>);

/// Everything the callbacks share.
struct Viewer {
    c: Counters,
    state: String,
    connected: bool,
    decoder: Option<VideoDecoder>,
    /// The decoder's output and error callbacks: kept while it lives,
    /// dropped (after `close`, so never called again) with it.
    decoder_callbacks: Option<DecoderCallbacks>,
    codec: String,
    size: (u16, u16),
    waiting_keyframe: bool,
    in_flight: u32,
    pending: VecDeque<Pending>,
    latest: Option<Decoded>,
    want_keyframe: bool,
    last_keyframe_request_ms: f64,
    last_frame_index: Option<u64>,
    last_session_frame: u32,
    target_kbps: u32,
    decode_ms: VecDeque<f64>,
    latency_ms: VecDeque<f64>,
    session: ClientStats,
    /// (time ms, frames displayed, bytes received) at the last overlay
    /// update, for the rates.
    rate_base: (f64, u64, u64),
    fps: f64,
    kbps: f64,
    canvas: HtmlCanvasElement,
    ctx: CanvasRenderingContext2d,
    overlay: HtmlElement,
    status: HtmlElement,
    input: Option<mpsc::Sender<InputEvent>>,
    /// When the current session was established (performance.now, ms).
    session_ms: f64,
    /// Session start to first picture drawn, of the current session.
    picture_after_connect_ms: Option<f64>,
    /// Page start (navigation) to the first picture drawn.
    first_picture_ms: Option<f64>,
}

type Shared = Rc<RefCell<Viewer>>;

fn window() -> Window {
    web_sys::window().expect("a window")
}

fn document() -> Document {
    window().document().expect("a document")
}

fn element<T: JsCast>(id: &str) -> Result<T, JsValue> {
    document()
        .get_element_by_id(id)
        .ok_or_else(|| JsValue::from_str(&format!("page has no #{id}")))?
        .dyn_into::<T>()
        .map_err(|_| JsValue::from_str(&format!("#{id} has the wrong element type")))
}

/// The page's entry point (called by the wasm-bindgen glue at load).
#[wasm_bindgen(start)]
pub fn start() -> Result<(), JsValue> {
    let canvas: HtmlCanvasElement = element("screen")?;
    let ctx = canvas
        .get_context("2d")?
        .ok_or("no 2d context")?
        .dyn_into::<CanvasRenderingContext2d>()?;
    let viewer = Rc::new(RefCell::new(Viewer {
        c: Counters::default(),
        state: "starting".into(),
        connected: false,
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
        decode_ms: VecDeque::new(),
        latency_ms: VecDeque::new(),
        session: ClientStats::default(),
        rate_base: (now_ms(), 0, 0),
        fps: 0.0,
        kbps: 0.0,
        canvas,
        ctx,
        overlay: element("overlay")?,
        status: element("state")?,
        input: None,
        session_ms: 0.0,
        picture_after_connect_ms: None,
        first_picture_ms: None,
    }));

    let stats_fn = {
        let v = viewer.clone();
        Closure::<dyn Fn() -> JsValue>::new(move || {
            let json = stats_json(&v.borrow());
            js_sys::JSON::parse(&json).unwrap_or(JsValue::NULL)
        })
    };
    js_sys::Reflect::set(
        &window(),
        &"linkstreamStats".into(),
        stats_fn.as_ref().unchecked_ref(),
    )?;
    stats_fn.forget();

    install_input(&viewer)?;
    start_animation(viewer.clone());
    wasm_bindgen_futures::spawn_local(overlay_loop(viewer.clone()));

    match psk_from_fragment() {
        Ok(psk) => wasm_bindgen_futures::spawn_local(connection_loop(viewer, psk)),
        Err(why) => set_state(&viewer, &why),
    }
    Ok(())
}

/// The PSK from the URL fragment `#psk=<hex>` (the fragment never reaches
/// the server).
fn psk_from_fragment() -> Result<Option<Vec<u8>>, String> {
    let hash = window().location().hash().unwrap_or_default();
    stream::parse_psk_fragment(&hash).map_err(|e| e.to_string())
}

fn stream_url() -> String {
    let loc = window().location();
    let tls = loc.protocol().unwrap_or_default() == "https:";
    stream::stream_url(&loc.host().unwrap_or_default(), tls)
}

fn set_state(v: &Shared, state: &str) {
    let mut v = v.borrow_mut();
    v.state = state.to_owned();
    v.status.set_text_content(Some(state));
    let _ = v
        .status
        .class_list()
        .toggle_with_force("ok", state == "connected");
}

async fn connection_loop(v: Shared, psk: Option<Vec<u8>>) {
    let url = stream_url();
    let mut backoff = Duration::from_millis(100);
    loop {
        set_state(&v, &format!("connecting to {url}"));
        let why = match session(&v, &url, psk.clone()).await {
            Ok(established) => {
                if established {
                    backoff = Duration::from_millis(100);
                }
                "the host ended the session".to_string()
            }
            Err((established, why)) => {
                if established {
                    backoff = Duration::from_millis(100);
                }
                why
            }
        };
        {
            let mut vb = v.borrow_mut();
            vb.connected = false;
            vb.input = None;
        }
        let ms = backoff.as_millis();
        set_state(
            &v,
            &format!("disconnected ({why}); reconnecting in {ms} ms"),
        );
        tracing_log(&format!("linkstream: disconnected: {why}"));
        Delay::new(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

fn tracing_log(msg: &str) {
    web_sys::console::log_1(&JsValue::from_str(msg));
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
    {
        let mut vb = v.borrow_mut();
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
    }
    set_state(v, "connected");
    loop {
        // Keyframe wanted (decoder error, skipped frames, new session):
        // ask the host, at most every KEYFRAME_REQUEST_EVERY_MS.
        {
            let mut vb = v.borrow_mut();
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
            tracing_log(&format!("linkstream: frame {}: {e}", f.index));
            return;
        }
    };
    v.last_frame_index = Some(env.capture_index);
    v.target_kbps = env.target_kbps;
    let keyframe = env.keyframe || f.flags.is_keyframe();
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
                tracing_log(&format!("linkstream: decoder for {codec}: {e:?}"));
                return;
            }
        }
        v.waiting_keyframe = false;
    } else if v.waiting_keyframe || v.decoder.is_none() {
        v.c.frames_dropped += 1;
        v.c.dropped_waiting_keyframe += 1;
        v.want_keyframe = true;
        return;
    }
    if v.in_flight >= MAX_IN_FLIGHT && !keyframe {
        // The decoder falls behind: skip to the next keyframe.
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
            v.pending.push_back(Pending {
                capture_index: env.capture_index,
                received_ms,
                capture_us: env.capture_us,
            });
            while v.pending.len() > 64 {
                v.pending.pop_front();
            }
        }
        Err(e) => {
            tracing_log(&format!("linkstream: decode: {e:?}"));
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
        tracing_log(&format!("linkstream: decoder error: {e:?}"));
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
    let mut capture_us = 0;
    while let Some(p) = v.pending.pop_front() {
        if p.capture_index == ts {
            push_sample(&mut v.decode_ms, now - p.received_ms);
            capture_us = p.capture_us;
            break;
        }
    }
    if let Some(old) = v.latest.replace(Decoded { frame, capture_us }) {
        old.frame.close();
        v.c.frames_superseded += 1;
    }
}

/// Draw the newest decoded frame at every animation frame.
fn start_animation(v: Shared) {
    type Tick = Closure<dyn FnMut(f64)>;
    let cb: Rc<RefCell<Option<Tick>>> = Rc::new(RefCell::new(None));
    let again = cb.clone();
    *cb.borrow_mut() = Some(Closure::new(move |_t: f64| {
        draw(&v);
        if let Some(c) = again.borrow().as_ref() {
            let _ = window().request_animation_frame(c.as_ref().unchecked_ref());
        }
    }));
    if let Some(c) = cb.borrow().as_ref() {
        let _ = window().request_animation_frame(c.as_ref().unchecked_ref());
    }
}

fn draw(v: &Shared) {
    let mut v = v.borrow_mut();
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
    let now = now_ms();
    if v.connected && v.picture_after_connect_ms.is_none() {
        v.picture_after_connect_ms = Some(now - v.session_ms);
    }
    v.first_picture_ms.get_or_insert(now);
    // Capture to displayed, on the host's clock: meaningful where the
    // clocks agree (one machine, or synchronised); kept only if plausible.
    let latency = js_sys::Date::now() - d.capture_us as f64 / 1000.0;
    if d.capture_us > 0 && (0.0..10_000.0).contains(&latency) {
        push_sample(&mut v.latency_ms, latency);
    }
}

/// Refresh the overlay (and the rates) twice a second.
async fn overlay_loop(v: Shared) {
    loop {
        Delay::new(Duration::from_millis(500)).await;
        let mut vb = v.borrow_mut();
        let now = now_ms();
        let (t0, f0, b0) = vb.rate_base;
        let dt = ((now - t0) / 1000.0).max(1e-3);
        vb.fps = (vb.c.frames_displayed - f0) as f64 / dt;
        vb.kbps = (vb.c.bytes_received - b0) as f64 * 8.0 / 1000.0 / dt;
        vb.rate_base = (now, vb.c.frames_displayed, vb.c.bytes_received);
        if vb.overlay.hidden() {
            continue;
        }
        let fmt = |x: Option<f64>| x.map_or("-".to_string(), |x| format!("{x:.1}"));
        let text = format!(
            "{}\n{}x{} {}\nfps {:.1}  bitrate {:.0} kbit/s  target {} kbit/s\n\
             decoded {}  dropped {}  decode errors {}\n\
             frames lost {}  FEC-recovered {}\n\
             decode ms p50 {} p95 {}\nlatency ms p50 {} p99 {} (host clock)\n\
             input sent {}  reconnects {}\n[F2] hide",
            vb.state,
            vb.size.0,
            vb.size.1,
            vb.codec,
            vb.fps,
            vb.kbps,
            vb.target_kbps,
            vb.c.frames_decoded,
            vb.c.frames_dropped,
            vb.c.decode_errors,
            vb.session.frames_lost,
            vb.session.frames_recovered,
            fmt(percentile(&vb.decode_ms, 50.0)),
            fmt(percentile(&vb.decode_ms, 95.0)),
            fmt(percentile(&vb.latency_ms, 50.0)),
            fmt(percentile(&vb.latency_ms, 99.0)),
            vb.c.input_sent,
            vb.c.reconnects,
        );
        vb.overlay.set_text_content(Some(&text));
    }
}

/// The burned-in index read back from the canvas pixels.
fn canvas_index(v: &Viewer) -> Option<u32> {
    let w = v.canvas.width() as usize;
    let b = index::block_size(w)?;
    let data = v.ctx.get_image_data(0.0, 0.0, w as f64, b as f64).ok()?;
    index::read_rgba(&data.data(), w).map(|v| v as u32)
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

fn listen<E: wasm_bindgen::convert::FromWasmAbi + 'static>(
    target: &web_sys::EventTarget,
    kind: &str,
    passive: bool,
    f: impl FnMut(E) + 'static,
) -> Result<(), JsValue> {
    let cb = Closure::<dyn FnMut(E)>::new(f);
    let opts = AddEventListenerOptions::new();
    opts.set_passive(passive);
    target.add_event_listener_with_callback_and_add_event_listener_options(
        kind,
        cb.as_ref().unchecked_ref(),
        &opts,
    )?;
    // The listeners live as long as the page.
    cb.forget();
    Ok(())
}

fn install_input(v: &Shared) -> Result<(), JsValue> {
    let win: web_sys::EventTarget = window().into();
    let canvas = v.borrow().canvas.clone();
    let target: web_sys::EventTarget = canvas.clone().into();

    for (kind, down) in [("keydown", true), ("keyup", false)] {
        let v = v.clone();
        listen(&win, kind, false, move |e: KeyboardEvent| {
            if e.code() == "F2" {
                // F2 toggles the stats overlay; not sent to the host.
                if down {
                    let o = v.borrow().overlay.clone();
                    o.set_hidden(!o.hidden());
                }
                e.prevent_default();
                return;
            }
            let Some(code) = hid_usage(&e.code()) else {
                v.borrow_mut().c.input_unmapped += 1;
                return;
            };
            e.prevent_default();
            let mods = e.shift_key() as u16
                | (e.ctrl_key() as u16) << 1
                | (e.alt_key() as u16) << 2
                | (e.meta_key() as u16) << 3;
            send(&v, InputEvent::Key { code, down, mods });
        })?;
    }

    {
        let (v, c) = (v.clone(), canvas.clone());
        listen(&target, "mousemove", true, move |e: MouseEvent| {
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
        })?;
    }
    for (kind, down) in [("mousedown", true), ("mouseup", false)] {
        let v = v.clone();
        listen(&target, kind, false, move |e: MouseEvent| {
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
        listen(&target, "wheel", false, move |e: WheelEvent| {
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
    listen(&target, "contextmenu", false, |e: MouseEvent| {
        e.prevent_default()
    })?;
    {
        // Double-click captures the pointer (relative motion); Escape
        // releases it (the browser's own rule).
        let c = canvas.clone();
        listen(&target, "dblclick", true, move |_e: MouseEvent| {
            c.request_pointer_lock();
        })?;
    }
    for (kind, phase) in [
        ("touchstart", TouchPhase::Start),
        ("touchmove", TouchPhase::Move),
        ("touchend", TouchPhase::End),
        ("touchcancel", TouchPhase::Cancel),
    ] {
        let (v, c) = (v.clone(), canvas.clone());
        listen(&target, kind, false, move |e: TouchEvent| {
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
    Ok(())
}
