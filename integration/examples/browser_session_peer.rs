//! The native host of the browser session test
//! (`tests/browser_session.rs`, run by `scripts/browser-test.sh`): a
//! WebSocket server whose route `/session/<frames>/<0|1>` is a
//! streaming-session host (`link-session`) sending `frames` checkable
//! frames, encrypted with `1`.
//!
//! ```text
//! browser_session_peer <addr>
//! ```
//!
//! Prints `LISTENING <addr>` once it accepts connections.

use std::net::SocketAddr;
use std::time::Duration;

use link_ws::{WsConfig, WsLink, WsServer};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .ok_or("usage: browser_session_peer <addr>")?
        .parse()?;
    let mut server = WsServer::bind(addr, WsConfig::default()).await?;
    println!("LISTENING {}", server.local_addr());
    loop {
        let acc = server.accept().await?;
        let parts: Vec<&str> = acc.path.trim_start_matches('/').split('/').collect();
        match parts.as_slice() {
            ["session", frames, enc] => {
                let Ok(frames) = frames.parse::<u32>() else {
                    eprintln!("browser_session_peer: bad frame count in {}", acc.path);
                    continue;
                };
                let encrypt = *enc == "1";
                tokio::spawn(session_host(acc.link, frames, encrypt));
            }
            _ => eprintln!("browser_session_peer: unknown route {}", acc.path),
        }
    }
}

/// The pre-shared key of the browser session test.
const SESSION_PSK: &[u8] = b"browser session test key 32 byte";

/// `/session/<frames>/<0|1>`: a streaming-session host sending `frames`
/// checkable frames (encrypted with `1`), then, once it has received one
/// input event per frame (or after 10 s), one more frame whose 4 bytes are
/// the number of input events it received (little-endian), then Bye.
async fn session_host(link: WsLink, frames: u32, encrypt: bool) {
    use link_session::{FrameFlags, Host, HostConfig, HostEvent};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};
    let cfg = HostConfig {
        psk: encrypt.then(|| SESSION_PSK.to_vec()),
        max_frame: 1 << 20,
        ..Default::default()
    };
    let (mut host, mut events) = match Host::accept(link, cfg).await {
        Ok(h) => h,
        Err(e) => return eprintln!("browser_session_peer: handshake: {e}"),
    };
    let inputs = Arc::new(AtomicU32::new(0));
    let seen = inputs.clone();
    let send = async move {
        for i in 0..frames {
            let data = link_integration::session::frame_bytes(
                i,
                link_integration::session::size_of(i, 20_000),
            );
            let flags = if i.is_multiple_of(30) {
                FrameFlags::KEYFRAME
            } else {
                FrameFlags::NONE
            };
            if let Err(e) = host.send_frame(&data, i as u64, flags).await {
                return eprintln!("browser_session_peer: frame {i}: {e}");
            }
        }
        let until = tokio::time::Instant::now() + Duration::from_secs(10);
        while seen.load(Ordering::Relaxed) < frames && tokio::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let n = seen.load(Ordering::Relaxed);
        let end = match host
            .send_frame(&n.to_le_bytes(), frames as u64, FrameFlags::NONE)
            .await
        {
            Ok(()) => host.close().await,
            Err(e) => Err(e),
        };
        if let Err(e) = end {
            eprintln!("browser_session_peer: the last frame or the close: {e}");
        }
    };
    let input = async move {
        loop {
            match events.next_event().await {
                Ok(Some(HostEvent::Input(_))) => {
                    inputs.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => break eprintln!("browser_session_peer: events: {e}"),
            }
        }
    };
    futures::join!(send, input);
}
