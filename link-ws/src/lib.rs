//! WebSocket link for linkstream.
//!
//! One link message is one binary WebSocket message. On native targets
//! (tokio) there is a server, [`WsServer`], that accepts many connections
//! and yields one [`WsLink`] each (with the request path and the peer's
//! address, so an application can route), and a client, [`WsLink::connect`];
//! both speak `ws://` and `wss://` (rustls). On `wasm32` the browser client
//! [`WsLink::connect`] wraps the page's `WebSocket`, with the same
//! [`link_types::Link`] traits, so the same session code runs in the
//! browser.
//!
//! Behaviour (the rules in `spec/ws.md`):
//! - a text message is a protocol error (close code 1003) unless
//!   [`WsConfig::accept_text`] is set; a message above the maximum payload
//!   is refused from its header (close code 1009);
//! - `close` sends a normal close (1000); the peer's receiver returns every
//!   message sent before it, then `Ok(None)`. A WebSocket has no half-close:
//!   the close handshake ends the connection both ways;
//! - dropping a half without `close` sends "going away" (1001): the peer's
//!   receiver returns an error, never `Ok(None)`;
//! - `reserve` waits while the socket cannot take more (native) or while the
//!   browser's `bufferedAmount` is above [`WsConfig::high_water`].
#![deny(missing_docs)]
// `unsafe` only in `native::tcp_info` (one `getsockopt`).
#![deny(unsafe_code)]

pub mod close;
mod config;
mod error;
mod stats;

pub use config::WsConfig;
pub use error::WsError;
pub use stats::{WsStats, WsStatsHandle};

use link_types::Backing;

/// A received message with its WebSocket kind.
#[derive(Debug)]
pub struct WsMessage {
    /// The payload.
    pub data: Backing,
    /// Whether it came as a text message (only with
    /// [`WsConfig::accept_text`]).
    pub text: bool,
}

#[cfg(not(target_arch = "wasm32"))]
mod native;
#[cfg(all(not(target_arch = "wasm32"), feature = "self-signed"))]
pub use native::SelfSigned;
#[cfg(not(target_arch = "wasm32"))]
pub use native::{
    ClientTls, HttpAsset, HttpRoutes, ServerCounts, ServerOptions, TlsServer, WsAccepted, WsLink,
    WsPermit, WsRx, WsServer, WsSlot, WsTx,
};

#[cfg(target_arch = "wasm32")]
mod browser;
#[cfg(target_arch = "wasm32")]
pub use browser::{WsLink, WsPermit, WsRx, WsSlot, WsTx};
