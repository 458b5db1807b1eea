//! A minimal video host on link-video: the test pattern, encoded once with
//! OpenH264, served by the hub to every viewer that connects over UDP.
//!
//! ```text
//! cargo run --release -p link-video --example minimal_host -- 127.0.0.1:7070 [SECONDS]
//! ```
//!
//! It prints `listening on udp://ADDR`, then serves until SECONDS (default
//! 30) have passed or its first viewer has come and gone, and prints what
//! it did. `minimal_viewer` is its counterpart. Sessions are unencrypted
//! here (give `HostConfig::psk` for AES-GCM).

use std::sync::Arc;
use std::time::{Duration, Instant};

use link_session::HostConfig;
use link_udp::{EndpointConfig, UdpEndpoint};
use link_video::hub::{EncodedFrame, Hub, HubConfig};
use link_video::{Codec, Encoder, OpenH264Encoder, TestSrc, VideoHeader, now_us};

const WIDTH: usize = 640;
const HEIGHT: usize = 360;
const FPS: u32 = 30;
const BITRATE: u64 = 1_000_000;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or("127.0.0.1:7070".into()).parse()?;
    let seconds: f64 = args.next().map_or(Ok(30.0), |s| s.parse())?;
    if let Some(line) = link_video::build::slow_encoder_warning() {
        eprintln!("minimal_host: {line}");
    }

    // The viewers: one UDP endpoint, one hub-served session per peer.
    let endpoint = UdpEndpoint::bind(addr, EndpointConfig::default())?;
    println!("listening on udp://{}", endpoint.local_addr());
    let hub = Arc::new(Hub::new(HubConfig::new(BITRATE)));
    let accept = {
        let hub = hub.clone();
        tokio::spawn(async move {
            let mut viewers = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    link = endpoint.accept() => {
                        let hub = hub.clone();
                        viewers.spawn(async move {
                            match hub.serve(link, HostConfig::default(), |_| {}).await {
                                Ok(s) => eprintln!("viewer {} left after {} frames ({})", s.id, s.session.frames_sent, s.end),
                                Err(e) => eprintln!("viewer not served: {e}"),
                            }
                        });
                    }
                    _ = hub.stopped() => break,
                }
            }
            while viewers.join_next().await.is_some() {}
        })
    };

    // The encoder loop: render, ask the hub for keyframe and bitrate,
    // encode, publish.
    let src = TestSrc::new(WIDTH, HEIGHT, FPS)?;
    let mut encoder = OpenH264Encoder::new(WIDTH, HEIGHT, FPS, hub.target_bitrate())?;
    let mut picture = vec![0u8; src.frame_len()];
    let mut ticks = tokio::time::interval(Duration::from_secs(1) / FPS);
    let (start, mut encoded) = (Instant::now(), 0u64);
    for index in 0u64.. {
        ticks.tick().await;
        let s = hub.stats();
        if start.elapsed().as_secs_f64() >= seconds || (s.viewers_joined > 0 && s.viewers == 0) {
            break;
        }
        let capture_us = now_us();
        src.render(index, &mut picture)?;
        if hub.take_keyframe(Instant::now()) {
            encoder.force_keyframe();
        }
        let target = hub.target_bitrate();
        if target != encoder.bitrate() {
            encoder.set_bitrate(target)?;
        }
        let mut access_unit = Vec::new();
        let keyframe = tokio::task::block_in_place(|| encoder.encode(&picture, &mut access_unit))?;
        encoded += 1;
        let header = VideoHeader {
            live: false,
            codec: Codec::H264AnnexB,
            keyframe,
            // One layer, no recovery frames: the hub is left with its
            // default (`HubConfig::recovery` off), keyframes only.
            temporal_id: 0,
            recovery: keyframe,
            rendition: 0,
            viewer_target_10kbps: 0,
            width: WIDTH as u16,
            height: HEIGHT as u16,
            target_kbps: (target / 1000) as u32,
            capture_index: index,
            capture_us,
            encoded_us: now_us(),
            sent_us: 0,
        };
        hub.publish(Arc::new(EncodedFrame {
            header,
            access_unit,
            ltr_mark: false,
        }));
    }
    hub.stop();
    accept.await?;
    let s = hub.stats();
    println!(
        "host: {encoded} frames encoded, {} viewers joined, {} handshakes failed",
        s.viewers_joined, s.handshake_failures
    );
    Ok(())
}
