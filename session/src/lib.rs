//! The linkstream streaming session: one video stream from a host to a
//! client, and input events back, over any [`Link`](link_types::Link).
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
//! ```no_run
//! # async fn demo() -> Result<(), link_session::SessionError> {
//! use link_session::{Client, ClientConfig, ClientEvent, FrameFlags, Host, HostConfig};
//! let (a, b) = link_types::memory_pair(Default::default());
//! let host = async {
//!     let (mut host, _events) = Host::accept(a, HostConfig::default()).await?;
//!     host.send_frame(b"an encoded frame", 0, FrameFlags::KEYFRAME).await?;
//!     host.close().await
//! };
//! let client = async {
//!     let (mut frames, _input) = Client::connect(b, ClientConfig::default()).await?;
//!     while let Some(ev) = frames.next_frame().await? {
//!         if let ClientEvent::Frame(f) = ev {
//!             assert_eq!(f.data(), b"an encoded frame");
//!         }
//!     }
//!     Ok::<_, link_session::SessionError>(())
//! };
//! let (h, c) = futures::join!(host, client);
//! h?;
//! c
//! # }
//! ```
//!
//! The wire format and every rule are in `spec/session.md`.
//!
//! The wire-level modules (`crypto`, `fec`, `handshake`, `wire`) are public
//! only with the `internals` feature, for the workspace's tests, fuzzers and
//! benchmarks. They are not a stable API; an application needs none of them.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod bwe;
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
pub mod pacer;
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
