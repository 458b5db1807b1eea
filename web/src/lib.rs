//! The linkstream browser viewer.
//!
//! A library first: built for `wasm32-unknown-unknown` and bound with
//! `wasm-bindgen --target web`, it is an ES module whose
//! `LinkstreamViewer` (wasm32 only) any page can put on a canvas:
//!
//! ```js
//! import init, { LinkstreamViewer, pskFromFragment } from "./linkstream_web.js";
//! await init({ module_or_path: "./linkstream_web_bg.wasm" });
//! const viewer = new LinkstreamViewer(canvas, "ws://host:7001/stream", {
//!   psk: pskFromFragment(location.hash),
//! });
//! viewer.addEventListener("frame", (e) => console.log(e.index));
//! viewer.stats();   // the counters, a plain object
//! viewer.close();   // stops everything
//! ```
//!
//! The viewer connects with `link-ws`'s browser link, runs the same
//! `link-session` client as native clients, decodes the H.264 video
//! envelopes with WebCodecs and draws the newest frame on the canvas;
//! keyboard, mouse, wheel and touch go back to the host as input events.
//!
//! The `linkstream` binary's build script builds and embeds the module, and
//! `linkstream host --ws` serves it with a page (`web/static/index.html`)
//! that is one user of this API: it connects to `/stream` on its own
//! origin, takes the PSK from its `#psk=` fragment, shows the stats in an
//! overlay and sets `window.linkstreamStats()` (the viewer's `stats()`) for
//! automation. `web/examples/embed.html` is a page of another origin.
//!
//! The video envelope, the burned-in index reader, the stream path and the
//! `#psk=` fragment are `link-video`'s core, shared with the host and the
//! native client. The module [`h264`] is plain Rust and builds (and is
//! tested) on every target; the page itself exists only on wasm32.
#![deny(missing_docs)]

pub mod h264;

#[cfg(target_arch = "wasm32")]
mod page;

#[cfg(target_arch = "wasm32")]
pub use page::{LinkstreamViewer, psk_from_fragment};
