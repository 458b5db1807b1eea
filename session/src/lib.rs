//! The linkstream streaming session: one video stream from a host to a
//! client, and input events back, over any [`Link`](link_types::Link).
//!
//! Each end comes in two halves that run side by side: on the host,
//! [`Host`] sends frames and [`HostEvents`] receives input, keyframe
//! requests and the client's reports; on the client, [`Client`] receives
//! frames and [`ClientInput`] sends input.
//!
//! On a stream link (memory, shared memory, WebSocket) a frame travels as
//! one message (or a few, above the link's maximum payload) with no FEC. On
//! a lossy link (UDP) a frame is cut into shards that fit a datagram,
//! protected with Reed-Solomon parity per block, and reassembled — rebuilt
//! from parity when shards are missing — at the client, which hands out
//! whole frames in order or reports frames lost. Optionally every message
//! after the handshake is sealed with AES-128-GCM under per-session,
//! per-direction keys derived from a pre-shared secret. Input events go
//! from client to host exactly once and in order, also over lossy links.
//!
//! ```
//! use link_session::{Client, ClientConfig, ClientEvent, FrameFlags, Host, HostConfig};
//! # futures::executor::block_on(async {
//! let (a, b) = link_types::memory_pair(Default::default());
//! let host = async {
//!     let (mut host, _events) = Host::accept(a, HostConfig::default()).await?;
//!     host.send_frame(b"an encoded frame", 0, FrameFlags::KEYFRAME).await?;
//!     host.close().await
//! };
//! let client = async {
//!     let (mut frames, _input) = Client::connect(b, ClientConfig::default()).await?;
//!     let mut got = Vec::new();
//!     while let Some(ev) = frames.next_frame().await? {
//!         if let ClientEvent::Frame(f) = ev {
//!             got.push(f.data().to_vec());
//!         }
//!     }
//!     Ok::<_, link_session::SessionError>(got)
//! };
//! let (h, c) = futures::join!(host, client);
//! h?;
//! assert_eq!(c?, [b"an encoded frame"]);
//! # Ok::<_, link_session::SessionError>(())
//! # }).unwrap();
//! ```
//!
//! # Driving an encoder
//!
//! The host's application owns the encoder; the session steers it:
//! - **Bitrate.** [`Host::target_bitrate`] is the rate the path carries now
//!   (on a lossy link the bandwidth estimate less headroom and parity; on a
//!   stream link from how fast the link drains). Give it to the encoder's
//!   rate control before each frame, or when [`HostEvent::TargetBitrate`]
//!   says it moved. An encoder above it fills the path's queues: frames
//!   arrive late or are lost.
//! - **Keyframes.** [`HostEvent::KeyframeRequest`] means the client lost a
//!   frame (or its decoder failed on one and it called
//!   [`Client::request_keyframe`]): make the next frame an IDR and send it
//!   with [`FrameFlags::KEYFRAME`].
//! - **Input.** [`HostEvent::Input`] carries the client's
//!   [`ClientInput::send_input`] events, exactly once and in order.
//!
//! Keep calling [`HostEvents::next_event`] beside the encoding loop: the
//! client's arrival reports that move the estimate, its loss reports and
//! its input all come in through it.
//!
//! The example runs a host and a client over the in-memory link with a
//! 4 Mbit/s bottleneck in between (the fault injector of `link-types`: a
//! drop-tail queue like a slow router's), while the estimator's first
//! guess is three times that. The encoder is the application's own (here
//! a stand-in that makes frames of the size its rate control allows).
//!
//! ```
//! use std::cell::Cell;
//! use std::time::Duration;
//!
//! use link_session::{
//!     BweConfig, Client, ClientConfig, ClientEvent, FrameFlags, Host, HostConfig, HostEvent,
//!     InputEvent, SessionError,
//! };
//! use link_types::{Bottleneck, FaultSpec, MemoryConfig, fault_pair, memory_pair};
//!
//! const FPS: u64 = 30;
//!
//! /// The application's encoder: frames of the size its bitrate allows at
//! /// 30 frames a second, an IDR (four times a P-frame) when asked.
//! struct Encoder {
//!     bps: u64,
//!     idr_next: bool,
//! }
//!
//! impl Encoder {
//!     fn set_bitrate(&mut self, bps: u64) {
//!         self.bps = bps;
//!     }
//!     fn force_idr(&mut self) {
//!         self.idr_next = true;
//!     }
//!     fn encode(&mut self, index: u32) -> (Vec<u8>, FrameFlags) {
//!         let p_frame = (self.bps / 8 / FPS) as usize;
//!         if std::mem::take(&mut self.idr_next) {
//!             (vec![index as u8; 4 * p_frame], FrameFlags::KEYFRAME)
//!         } else {
//!             (vec![index as u8; p_frame], FrameFlags::NONE)
//!         }
//!     }
//! }
//!
//! // A datagram-sized in-memory link through a 4 Mbit/s bottleneck (100 ms
//! // of queue, 10 ms of delay) from host to client: a lossy path.
//! let neck = Bottleneck::new(4_000_000, Duration::from_millis(100), Duration::from_millis(10));
//! let (a, b) = memory_pair(MemoryConfig { capacity: 1 << 16, max_payload: 1500 });
//! let slow = FaultSpec { bottleneck: Some(neck), ..FaultSpec::none() };
//! let (a, b) = fault_pair(a, b, slow, FaultSpec::none(), 1).unwrap();
//! let config = HostConfig {
//!     bwe: BweConfig { start_bps: 12_000_000, ..BweConfig::default() },
//!     ..HostConfig::default()
//! };
//! let typed = [
//!     InputEvent::Key { code: 4, down: true, mods: 0 },
//!     InputEvent::Key { code: 4, down: false, mods: 0 },
//! ];
//!
//! futures::executor::block_on(async {
//!     let host = async {
//!         let (mut host, mut events) = Host::accept(a, config).await?;
//!         let idr_wanted = Cell::new(false);
//!         let encoding = async {
//!             let mut encoder = Encoder { bps: 0, idr_next: true };
//!             let mut targets = Vec::new();
//!             for i in 0..2 * FPS as u32 {
//!                 // The target bitrate into the encoder, a keyframe
//!                 // request into an IDR.
//!                 encoder.set_bitrate(host.target_bitrate());
//!                 targets.push(host.target_bitrate());
//!                 if idr_wanted.take() {
//!                     encoder.force_idr();
//!                 }
//!                 let (frame, flags) = encoder.encode(i);
//!                 host.send_frame(&frame, i as u64 * 1_000_000 / FPS, flags).await?;
//!                 futures_timer::Delay::new(Duration::from_millis(1000 / FPS)).await;
//!             }
//!             host.close().await?;
//!             Ok::<_, SessionError>(targets)
//!         };
//!         let listening = async {
//!             let mut input = Vec::new();
//!             while let Some(event) = events.next_event().await? {
//!                 match event {
//!                     HostEvent::KeyframeRequest { .. } => idr_wanted.set(true),
//!                     HostEvent::Input(e) => input.push(e),
//!                     _ => {}
//!                 }
//!             }
//!             Ok::<_, SessionError>(input)
//!         };
//!         let (targets, input) = futures::join!(encoding, listening);
//!         Ok::<_, SessionError>((targets?, input?))
//!     };
//!     let client = async {
//!         let (mut frames, mut input) = Client::connect(b, ClientConfig::default()).await?;
//!         for e in typed.clone() {
//!             input.send_input(e).await?;
//!         }
//!         let (mut delivered, mut failed_at, mut keyframe_after) = (0, None, false);
//!         while let Some(event) = frames.next_frame().await? {
//!             let ClientEvent::Frame(f) = event else { continue };
//!             delivered += 1;
//!             // Say the decoder fails on the first P-frame from frame 30
//!             // on: ask for a keyframe, and expect one after it.
//!             if f.index >= 30 && !f.flags.is_keyframe() && failed_at.is_none() {
//!                 frames.request_keyframe(f.index);
//!                 failed_at = Some(f.index);
//!             }
//!             keyframe_after |= failed_at.is_some_and(|n| f.index > n && f.flags.is_keyframe());
//!         }
//!         input.close().await?;
//!         Ok::<_, SessionError>((delivered, keyframe_after))
//!     };
//!     let (host, client) = futures::join!(host, client);
//!     let ((targets, input), (delivered, keyframe_after)) = (host?, client?);
//!
//!     // The target came down from three times the path's rate to about
//!     // that rate (the estimate probes around it), and the encoder with it.
//!     let last_second = &targets[FPS as usize..];
//!     let mean = last_second.iter().sum::<u64>() / last_second.len() as u64;
//!     assert!(targets[0] > 8_000_000, "{targets:?}");
//!     assert!((2_000_000..6_000_000).contains(&mean), "{targets:?}");
//!     // So frames got through, and the one the decoder failed on was
//!     // followed by a keyframe.
//!     assert!(delivered >= FPS, "{delivered} of {} frames", 2 * FPS);
//!     assert!(keyframe_after);
//!     // Input came out at the host as typed.
//!     assert_eq!(input, typed);
//!     Ok::<_, SessionError>(())
//! })
//! .unwrap();
//! ```
//!
//! The wire format and every rule are in `spec/session.md`.
//!
//! The internal modules (`bwe`, the bandwidth estimator; `crypto`; `fec`;
//! `handshake`; `pacer`; `wire`) are public only with the `internals`
//! feature, for the workspace's tests, fuzzers and benchmarks. They are not
//! a stable API; an application needs none of them (their configurations,
//! [`BweConfig`] and [`PacingConfig`], are part of [`HostConfig`]).
#![deny(missing_docs)]
#![forbid(unsafe_code)]

#[cfg(feature = "internals")]
pub mod bwe;
#[cfg(not(feature = "internals"))]
#[allow(dead_code)] // parts only the tests, fuzzers and benchmarks use
mod bwe;
mod client;
mod config;
#[cfg(feature = "internals")]
pub mod crypto;
#[cfg(not(feature = "internals"))]
#[allow(dead_code)] // parts only the tests, fuzzers and benchmarks use
mod crypto;
mod error;
#[cfg(feature = "internals")]
pub mod fec;
#[cfg(not(feature = "internals"))]
#[allow(dead_code)] // parts only the tests, fuzzers and benchmarks use
mod fec;
mod frame;
#[cfg(feature = "internals")]
pub mod handshake;
#[cfg(not(feature = "internals"))]
#[allow(dead_code)] // parts only the tests, fuzzers and benchmarks use
mod handshake;
mod host;
mod input;
mod open;
#[cfg(feature = "internals")]
pub mod pacer;
#[cfg(not(feature = "internals"))]
#[allow(dead_code)] // parts only the tests, fuzzers and benchmarks use
mod pacer;
mod reassembly;
mod stats;
mod stream_rate;
mod tx;
#[cfg(feature = "internals")]
pub mod wire;
#[cfg(not(feature = "internals"))]
#[allow(dead_code)] // parts only the tests, fuzzers and benchmarks use
mod wire;

pub use bwe::BweConfig;
pub use client::{Client, ClientInput};
pub use config::{AUTO_RS16_ABOVE, ClientConfig, HostConfig, MAX_FRAME_LIMIT};
pub use error::{RejectReason, SessionError};
pub use fec::FecScheme;
pub use frame::{ClientEvent, Frame, FrameFlags};
pub use handshake::{Params, RetryGate};
pub use host::{Host, HostEvent, HostEvents, LossReport};
pub use input::{InputEvent, TouchPhase};
pub use pacer::PacingConfig;
pub use stats::{ClientStats, HostStats};
