//! The native (tokio) implementation.

mod client;
mod framed;
mod http;
mod link;
mod server;
mod stream;
mod tcp_info;
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

// r[impl ws.backpressure.unsent]
/// Socket options of every connection: no Nagle delay, and the bound on
/// unsent bytes where one is set. A failure to set them is logged, not
/// fatal: the connection works, with the kernel's defaults.
fn tune_socket(tcp: &tokio::net::TcpStream, c: &crate::WsConfig) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!("TCP_NODELAY: {e}");
    }
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if let Some(n) = c.max_unsent
        && let Err(e) = socket2::SockRef::from(tcp).set_tcp_notsent_lowat(n)
    {
        tracing::warn!("TCP_NOTSENT_LOWAT {n}: {e}");
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = c;
}
