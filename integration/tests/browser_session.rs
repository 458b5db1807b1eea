//! The streaming session in a real browser (headless Chromium, driven by
//! `wasm-bindgen-test-runner`): the browser WebSocket link and the session,
//! compiled to wasm32, against the native `browser_session_peer` example
//! that `scripts/browser-test.sh` starts first. The peer's address is baked
//! in at compile time from `LINK_SESSION_PEER`.
#![cfg(target_arch = "wasm32")]

use link_ws::{WsConfig, WsLink};
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

fn url(path: &str) -> String {
    match option_env!("LINK_SESSION_PEER") {
        Some(p) => format!("ws://{p}{path}"),
        None => panic!("build with LINK_SESSION_PEER=<host:port> of `browser_session_peer`"),
    }
}

/// The streaming session runs unchanged in the browser: an encrypted
/// session from a native host over the browser WebSocket link, every frame
/// checked byte for byte, one input event sent back per frame, and the
/// host's count of the events it received (its last frame) checked.
// r[verify session.links]
#[wasm_bindgen_test]
async fn streaming_session_runs_in_the_browser() {
    use link_session::{Client, ClientConfig, ClientEvent, InputEvent};
    let frames = 60u32;
    let link = WsLink::connect(&url(&format!("/session/{frames}/1")), &WsConfig::default())
        .await
        .expect("connect");
    let cfg = ClientConfig {
        psk: Some(b"browser session test key 32 byte".to_vec()),
        ..Default::default()
    };
    let (mut c, mut input) = Client::connect(link, cfg).await.expect("session handshake");
    assert!(c.params().encryption);
    let mut next = 0u32;
    let mut report = None;
    while let Some(ev) = c.next_frame().await.expect("next_frame") {
        match ev {
            // The host's last frame: how many input events it received.
            ClientEvent::Frame(f) if f.index == frames => {
                report = Some(u32::from_le_bytes(f.data().try_into().expect("4 bytes")));
            }
            ClientEvent::Frame(f) => {
                assert_eq!(f.index, next, "frames in order, none lost");
                let want = link_integration::session::frame_bytes(
                    f.index,
                    link_integration::session::size_of(f.index, 20_000),
                );
                assert_eq!(f.data(), &want[..], "frame {} byte for byte", f.index);
                assert_eq!(f.flags.is_keyframe(), f.index % 30 == 0);
                next += 1;
                input
                    .send_input(InputEvent::Key {
                        code: next,
                        down: true,
                        mods: 0,
                    })
                    .await
                    .expect("input");
            }
            ClientEvent::Lost { first, count } => panic!("lost {count} frames from {first}"),
        }
    }
    assert_eq!(next, frames);
    assert_eq!(
        report,
        Some(frames),
        "the host received another number of input events than were sent"
    );
    let stats = c.stats();
    assert_eq!(stats.input_sent, frames as u64);
    assert_eq!(stats.frames_delivered, frames as u64 + 1);
    assert_eq!(stats.auth_failures + stats.malformed_dropped, 0);
    input.close().await.expect("close");
}
