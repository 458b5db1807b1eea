//! A minimal video viewer on link-video: connect to a host over UDP, take
//! each frame out of its envelope, decode it with OpenH264 and check the
//! index burned into the picture against the envelope's.
//!
//! ```text
//! cargo run --release -p link-video --example minimal_viewer -- 127.0.0.1:7070 [FRAMES]
//! ```
//!
//! It stops after FRAMES decoded pictures (default 90), prints
//! `viewer: N frames decoded, N indices match`, and exits with an error if
//! any picture did not decode or carried another index.

use std::time::Duration;

use link_session::{Client, ClientConfig, ClientEvent};
use link_udp::{UdpConfig, UdpLink};
use link_video::index::{read_index, unwrap_index};
use link_video::{Decoder, OpenH264Decoder, VideoHeader};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let host = args.next().unwrap_or("127.0.0.1:7070".into()).parse()?;
    let want: u64 = args.next().map_or(Ok(90), |s| s.parse())?;

    let link = UdpLink::connect("0.0.0.0:0".parse()?, host, &UdpConfig::default())?;
    let (mut frames, mut input) = Client::connect(link, ClientConfig::default()).await?;
    let mut decoder = OpenH264Decoder::new()?;
    let (mut decoded, mut matched, mut waiting_key) = (0u64, 0u64, true);
    while decoded < want {
        let event = tokio::time::timeout(Duration::from_secs(10), frames.next_frame()).await;
        let frame = match event?? {
            Some(ClientEvent::Frame(f)) => f,
            // A lost frame: wait for the keyframe the host was asked for.
            Some(ClientEvent::Lost { .. }) => {
                waiting_key = true;
                continue;
            }
            None => return Err("the host ended the session".into()),
        };
        let (header, access_unit) = VideoHeader::parse(frame.data())?;
        if waiting_key && !header.keyframe {
            continue;
        }
        waiting_key = false;
        let Some(picture) = decoder.decode(access_unit)? else {
            continue;
        };
        decoded += 1;
        let index = read_index(picture.y(), picture.width, picture.height)
            .map(|low| unwrap_index(low, header.capture_index));
        if index == Some(header.capture_index) {
            matched += 1;
        }
    }
    // The Bye goes out on the input half.
    input.close().await?;
    println!("viewer: {decoded} frames decoded, {matched} indices match");
    if matched != decoded {
        return Err(format!("{} pictures carried another index", decoded - matched).into());
    }
    Ok(())
}
