//! The linkstream browser viewer.
//!
//! Built for `wasm32-unknown-unknown` and bound with wasm-bindgen by the
//! `linkstream` binary's build script, which embeds it; the host serves it
//! at `/` on its WebSocket port. The page connects to `/stream` on the same
//! origin with `link-ws`'s browser link, runs the same `link-session`
//! client as native clients, decodes the H.264 video envelopes with
//! WebCodecs and draws the newest frame on a canvas; keyboard, mouse, wheel
//! and touch go back to the host as input events. `window.linkstreamStats()`
//! returns a JSON snapshot of its counters for automation.
//!
//! The video envelope, the burned-in index reader, the stream path and the
//! `#psk=` fragment are `link-video`'s core, shared with the host and the
//! native client. The module [`h264`] is plain Rust and builds (and is
//! tested) on every target; the page itself exists only on wasm32.
#![deny(missing_docs)]

pub mod h264;

#[cfg(target_arch = "wasm32")]
mod page;
