//! The native (tokio) implementation.

mod client;
mod http;
mod link;
mod server;
mod stream;
mod tls;

pub use http::{HttpAsset, HttpRoutes};
pub use link::{WsLink, WsPermit, WsRx, WsSlot, WsTx};
pub use server::{ServerCounts, ServerOptions, WsAccepted, WsServer};
#[cfg(feature = "self-signed")]
pub use tls::SelfSigned;
pub use tls::{ClientTls, TlsServer};

use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

// r[impl ws.message.oversize]
/// The framing layer's settings: incoming frames and messages above the
/// maximum payload are refused from the frame header, before the payload
/// is read.
fn ws_config(c: &crate::WsConfig) -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(c.max_payload))
        .max_frame_size(Some(c.max_payload))
        .write_buffer_size(c.write_buffer)
}
