//! The viewer's JavaScript API ([`LinkstreamViewer`], the object pages
//! create) in a real browser (headless Chromium, driven by
//! `wasm-bindgen-test-runner`) against a real `linkstream host --ws`, which
//! `scripts/browser-page.sh` starts first; its address is baked in at
//! compile time from `LINKSTREAM_HOST`. The same API from a page of another
//! origin (`web/examples/embed.html`) is checked over WebDriver by
//! `web/tests/browser_page.py`.
#![cfg(target_arch = "wasm32")]

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use futures_timer::Delay;
use linkstream_web::LinkstreamViewer;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

fn stream_url() -> String {
    match option_env!("LINKSTREAM_HOST") {
        Some(h) => format!("ws://{h}/stream"),
        None => {
            panic!("build with LINKSTREAM_HOST=<host:port> of a running `linkstream host --ws`")
        }
    }
}

/// A URL where nothing listens.
const DEAD_URL: &str = "ws://127.0.0.1:9/stream";

fn document() -> web_sys::Document {
    web_sys::window().unwrap().document().unwrap()
}

fn canvas() -> JsValue {
    let c = document().create_element("canvas").unwrap();
    document().body().unwrap().append_child(&c).unwrap();
    c.into()
}

fn options(pairs: &[(&str, JsValue)]) -> JsValue {
    let o = js_sys::Object::new();
    for (k, v) in pairs {
        js_sys::Reflect::set(&o, &(*k).into(), v).unwrap();
    }
    o.into()
}

fn get(v: &JsValue, k: &str) -> JsValue {
    js_sys::Reflect::get(v, &k.into()).unwrap()
}

fn num(v: &JsValue, k: &str) -> f64 {
    get(v, k)
        .as_f64()
        .unwrap_or_else(|| panic!("{k} is not a number in {v:?}"))
}

fn stats(v: &LinkstreamViewer) -> JsValue {
    v.stats().expect("stats()")
}

/// Every event of `kind` the viewer fires, recorded.
fn record(v: &LinkstreamViewer, kind: &str) -> Rc<RefCell<Vec<JsValue>>> {
    let seen = Rc::new(RefCell::new(Vec::new()));
    let s = seen.clone();
    let cb = Closure::<dyn FnMut(JsValue)>::new(move |e: JsValue| s.borrow_mut().push(e));
    v.add_event_listener(
        kind,
        cb.as_ref().unchecked_ref::<js_sys::Function>().clone(),
    )
    .expect("a known event");
    cb.forget();
    seen
}

async fn sleep(ms: u64) {
    Delay::new(Duration::from_millis(ms)).await;
}

/// Poll until `pred` or `secs` seconds; whether it held.
async fn until(secs: f64, mut pred: impl FnMut() -> bool) -> bool {
    let deadline = js_sys::Date::now() + secs * 1000.0;
    while js_sys::Date::now() < deadline {
        if pred() {
            return true;
        }
        sleep(50).await;
    }
    pred()
}

/// `target.dispatchEvent(new <ctor>(type, init))` from JS.
fn dispatch(target: &JsValue, js: &str) {
    js_sys::Function::new_with_args("t", &format!("t.dispatchEvent({js});"))
        .call1(&JsValue::NULL, target)
        .unwrap();
}

/// A viewer decodes the host's stream onto its canvas: its stats count
/// the frames, `connect` fires once with the URL, `frame` fires once per
/// frame drawn with the index, size, encoded size and timestamps in order;
/// a removed listener is not called; bad arguments throw.
// r[verify web.api.viewer]
// r[verify web.api.stats]
// r[verify web.api.events]
#[wasm_bindgen_test]
async fn a_viewer_decodes_fires_events_and_reports_stats() {
    let url = stream_url();
    let c = canvas();
    let v =
        LinkstreamViewer::new(c.clone(), url.clone().into(), JsValue::UNDEFINED).expect("viewer");
    let connects = record(&v, "connect");
    let frames = record(&v, "frame");
    let states = record(&v, "state");
    let removed = Rc::new(RefCell::new(0u32));
    let r = removed.clone();
    let cb = Closure::<dyn FnMut(JsValue)>::new(move |_| *r.borrow_mut() += 1);
    let f: js_sys::Function = cb.as_ref().unchecked_ref::<js_sys::Function>().clone();
    v.add_event_listener("frame", f.clone()).unwrap();
    v.remove_event_listener("frame", &f);
    cb.forget();

    assert!(
        until(20.0, || num(&stats(&v), "frames_decoded") >= 60.0).await,
        "no 60 frames decoded in 20 s: {:?}",
        js_sys::JSON::stringify(&stats(&v))
    );
    let s = stats(&v);
    assert_eq!(num(&s, "decode_errors"), 0.0);
    assert_eq!(get(&s, "connected").as_bool(), Some(true));
    assert_eq!(get(&s, "state").as_string().as_deref(), Some("connected"));
    assert_eq!(num(&s, "connects"), 1.0);
    assert!(get(&s, "codec").as_string().unwrap().starts_with("avc1."));
    // One frame event per frame drawn, none to the removed listener.
    assert_eq!(frames.borrow().len() as f64, num(&s, "frames_displayed"));
    assert_eq!(*removed.borrow(), 0);
    // The canvas took the video's size; the burned-in index reads back.
    let canvas: web_sys::HtmlCanvasElement = c.dyn_into().unwrap();
    assert_eq!(
        (canvas.width() as f64, canvas.height() as f64),
        (num(&s, "width"), num(&s, "height"))
    );
    assert!(
        get(&s, "canvas_index").as_f64().is_some(),
        "index read from the canvas"
    );

    let connects = connects.borrow();
    assert_eq!(connects.len(), 1);
    assert_eq!(
        get(&connects[0], "type").as_string().as_deref(),
        Some("connect")
    );
    assert_eq!(get(&connects[0], "url").as_string(), Some(url.clone()));
    assert_eq!(num(&connects[0], "connects"), 1.0);
    let states: Vec<String> = states
        .borrow()
        .iter()
        .map(|e| get(e, "state").as_string().unwrap())
        .collect();
    assert_eq!(states, [format!("connecting to {url}"), "connected".into()]);

    let frames = frames.borrow();
    // The canvas has the last frame's size; the source is that frame's
    // size scaled back by its rendition.
    let tail = frames.last().expect("frames were drawn");
    assert_eq!(num(tail, "width"), canvas.width() as f64);
    assert_eq!(num(tail, "height"), canvas.height() as f64);
    let tail_scale = f64::from(1u32 << num(tail, "rendition") as u32);
    let source = (
        num(tail, "width") * tail_scale,
        num(tail, "height") * tail_scale,
    );
    let mut last = -1.0;
    for e in frames.iter() {
        assert_eq!(get(e, "type").as_string().as_deref(), Some("frame"));
        let index = num(e, "index");
        assert!(index > last, "frame indices increase: {last} then {index}");
        last = index;
        // Each frame is the source halved `rendition` times (simulcast: a
        // viewer starts on the smallest rendition and moves up).
        let scale = f64::from(1u32 << num(e, "rendition") as u32);
        assert_eq!(num(e, "width") * scale, source.0);
        assert_eq!(num(e, "height") * scale, source.1);
        assert!(num(e, "bytes") > 0.0);
        assert!(get(e, "keyframe").as_bool().is_some());
        assert!(num(e, "captureUs") > 0.0);
        assert!(num(e, "receivedMs") <= num(e, "decodedMs"));
        assert!(num(e, "decodedMs") <= num(e, "displayedMs"));
    }

    // Bad arguments throw (a JS Error with a message), never panic.
    let div: JsValue = document().create_element("div").unwrap().into();
    for (what, r) in [
        (
            "a div",
            LinkstreamViewer::new(div, url.clone().into(), JsValue::UNDEFINED).err(),
        ),
        (
            "an http URL",
            LinkstreamViewer::new(
                canvas_js(),
                url.replace("ws:", "http:").into(),
                JsValue::UNDEFINED,
            )
            .err(),
        ),
        (
            "a psk not hex",
            LinkstreamViewer::new(
                canvas_js(),
                url.clone().into(),
                options(&[("psk", "zz".into())]),
            )
            .err(),
        ),
        (
            "an empty psk",
            LinkstreamViewer::new(
                canvas_js(),
                url.clone().into(),
                options(&[("psk", js_sys::Uint8Array::new_with_length(0).into())]),
            )
            .err(),
        ),
        (
            "reconnect not a bool",
            LinkstreamViewer::new(
                canvas_js(),
                url.clone().into(),
                options(&[("reconnect", 1.into())]),
            )
            .err(),
        ),
        (
            "a URL that is not a string",
            LinkstreamViewer::new(canvas_js(), JsValue::NULL, JsValue::UNDEFINED).err(),
        ),
        (
            "options not an object",
            LinkstreamViewer::new(canvas_js(), url.clone().into(), 5.into()).err(),
        ),
    ] {
        let e = r.unwrap_or_else(|| panic!("{what}: accepted"));
        let msg = get(&e, "message").as_string().unwrap_or_default();
        assert!(
            !msg.is_empty(),
            "{what}: an Error with a message, got {e:?}"
        );
    }
    let cb = js_sys::Function::new_no_args("");
    assert!(v.add_event_listener("frames", cb).is_err());
    v.close();
}

fn canvas_js() -> JsValue {
    canvas()
}

/// `close()` stops everything: no frame is received, decoded or drawn,
/// no event fires, the rate timer stops (fps frozen), input at the canvas
/// is no longer listened to, the connection closes (`disconnect` with
/// reason "closed" first); stats() still answers; a second close() does
/// nothing.
// r[verify web.api.close]
#[wasm_bindgen_test]
async fn close_stops_everything() {
    let c = canvas();
    let v = LinkstreamViewer::new(c.clone(), stream_url().into(), JsValue::UNDEFINED).unwrap();
    let frames = record(&v, "frame");
    let disconnects = record(&v, "disconnect");
    let states = record(&v, "state");
    assert!(
        until(20.0, || frames.borrow().len() >= 30).await,
        "no frames drawn"
    );
    // Input reaches the viewer while it runs.
    dispatch(&c, "new WheelEvent('wheel', {deltaY: 3, cancelable: true})");
    assert!(until(5.0, || num(&stats(&v), "input_sent") >= 1.0).await);
    sleep(600).await;
    let before = stats(&v);
    assert!(num(&before, "fps") > 0.0);
    let (n_frames, n_states) = (frames.borrow().len(), states.borrow().len());
    v.close();
    assert!(v.closed());
    {
        let d = disconnects.borrow();
        assert_eq!(d.len(), 1, "one disconnect event, from close()");
        assert_eq!(get(&d[0], "reason").as_string().as_deref(), Some("closed"));
        assert!(get(&d[0], "reconnectInMs").is_null());
    }
    v.close();
    dispatch(&c, "new WheelEvent('wheel', {deltaY: 3, cancelable: true})");
    dispatch(
        &c,
        "new KeyboardEvent('keydown', {code: 'KeyA', cancelable: true})",
    );
    dispatch(
        &c,
        "new KeyboardEvent('keydown', {code: 'NoSuchKey', cancelable: true})",
    );
    sleep(1500).await;
    let after = stats(&v);
    for k in [
        "frames_received",
        "bytes_received",
        "frames_decoded",
        "frames_displayed",
        "connects",
        "input_sent",
        "input_dropped",
        "input_unmapped",
        "fps",
        "kbps",
    ] {
        assert_eq!(num(&after, k), num(&before, k), "{k} moved after close()");
    }
    assert_eq!(get(&after, "connected").as_bool(), Some(false));
    assert_eq!(get(&after, "state").as_string().as_deref(), Some("closed"));
    assert_eq!(
        frames.borrow().len(),
        n_frames,
        "frame events after close()"
    );
    assert_eq!(disconnects.borrow().len(), 1);
    assert_eq!(
        states.borrow().len(),
        n_states,
        "state events after close()"
    );
}

/// With `reconnect: false` a viewer tries once: one `disconnect` event
/// (not established, `reconnectInMs` null) and nothing more. With the
/// default it retries after 100 ms, doubling while attempts fail.
// r[verify web.api.reconnect]
#[wasm_bindgen_test]
async fn reconnect_off_tries_once_and_on_backs_off() {
    let once = LinkstreamViewer::new(
        canvas(),
        DEAD_URL.into(),
        options(&[("reconnect", false.into())]),
    )
    .unwrap();
    let d1 = record(&once, "disconnect");
    let again = LinkstreamViewer::new(canvas(), DEAD_URL.into(), JsValue::UNDEFINED).unwrap();
    let d2 = record(&again, "disconnect");
    assert!(
        until(10.0, || d2.borrow().len() >= 4).await,
        "the default viewer retried"
    );
    let delays: Vec<f64> = d2
        .borrow()
        .iter()
        .map(|e| num(e, "reconnectInMs"))
        .collect();
    assert_eq!(&delays[..4], [100.0, 200.0, 400.0, 800.0]);
    assert!(
        d2.borrow()
            .iter()
            .all(|e| get(e, "established").as_bool() == Some(false))
    );
    let d = d1.borrow();
    assert_eq!(d.len(), 1, "reconnect: false tries once");
    assert_eq!(get(&d[0], "established").as_bool(), Some(false));
    assert!(get(&d[0], "reconnectInMs").is_null());
    assert!(!get(&d[0], "reason").as_string().unwrap().is_empty());
    let s = stats(&once);
    assert_eq!(num(&s, "connects"), 0.0);
    assert!(
        get(&s, "state")
            .as_string()
            .unwrap()
            .starts_with("disconnected ("),
        "{s:?}"
    );
    once.close();
    again.close();
}

/// Keys are taken from `keyTarget` (here a div), except `localKeys`;
/// mouse and wheel from the canvas; with `input: false` nothing is
/// listened to.
// r[verify web.api.input]
#[wasm_bindgen_test]
async fn input_comes_from_the_key_target_except_local_keys() {
    let c = canvas();
    let keys: JsValue = document().create_element("div").unwrap().into();
    let local = js_sys::Array::of1(&"F2".into());
    let v = LinkstreamViewer::new(
        c.clone(),
        stream_url().into(),
        options(&[("keyTarget", keys.clone()), ("localKeys", local.into())]),
    )
    .unwrap();
    let off = LinkstreamViewer::new(
        canvas(),
        stream_url().into(),
        options(&[("input", false.into())]),
    )
    .unwrap();
    assert!(
        until(20.0, || get(&stats(&v), "connected").as_bool()
            == Some(true)
            && get(&stats(&off), "connected").as_bool() == Some(true))
        .await
    );
    dispatch(
        &keys,
        "new KeyboardEvent('keydown', {code: 'KeyA', cancelable: true})",
    );
    dispatch(
        &keys,
        "new KeyboardEvent('keyup', {code: 'KeyA', cancelable: true})",
    );
    dispatch(
        &keys,
        "new KeyboardEvent('keydown', {code: 'F2', cancelable: true})",
    );
    dispatch(
        &keys,
        "new KeyboardEvent('keydown', {code: 'NoSuchKey', cancelable: true})",
    );
    // Keys at the canvas are not this viewer's: its key target is the div.
    dispatch(
        &c,
        "new KeyboardEvent('keydown', {code: 'KeyB', cancelable: true})",
    );
    dispatch(
        &c,
        "new MouseEvent('mousedown', {button: 0, cancelable: true})",
    );
    dispatch(&c, "new WheelEvent('wheel', {deltaY: 3, cancelable: true})");
    assert!(until(5.0, || num(&stats(&v), "input_sent") >= 4.0).await);
    sleep(300).await;
    let s = stats(&v);
    assert_eq!(
        num(&s, "input_sent"),
        4.0,
        "KeyA down and up, the button, the wheel"
    );
    assert_eq!(
        num(&s, "input_unmapped"),
        1.0,
        "NoSuchKey; F2 is the page's"
    );
    assert_eq!(num(&s, "input_dropped"), 0.0);
    let o = stats(&off);
    for k in ["input_sent", "input_unmapped", "input_dropped"] {
        assert_eq!(num(&o, k), 0.0, "{k} with input: false");
    }
    v.close();
    off.close();
}
