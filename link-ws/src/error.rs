//! Errors of setting up WebSocket links.

use std::fmt;

/// Why a WebSocket link, server or client could not be set up.
#[derive(Debug)]
#[non_exhaustive]
pub enum WsError {
    /// A socket or file operation failed.
    Io {
        /// What was being done.
        op: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// The URL is not a usable `ws://` or `wss://` URL.
    InvalidUrl(String),
    /// A setting is out of range.
    InvalidConfig(String),
    /// The TLS configuration (certificate, key, roots) is unusable.
    Tls(String),
    /// The WebSocket (or TLS) handshake failed.
    Handshake(Box<dyn std::error::Error + Send + Sync>),
    /// The handshake did not finish within the configured timeout.
    Timeout,
    /// The browser refused to open the socket or it failed before opening.
    Browser(String),
}

impl fmt::Display for WsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WsError::Io { op, source } => write!(f, "WebSocket: {op} failed: {source}"),
            WsError::InvalidUrl(why) => write!(f, "invalid WebSocket URL: {why}"),
            WsError::InvalidConfig(why) => write!(f, "invalid WebSocket configuration: {why}"),
            WsError::Tls(why) => write!(f, "TLS configuration: {why}"),
            WsError::Handshake(e) => write!(f, "WebSocket handshake failed: {e}"),
            WsError::Timeout => f.write_str("WebSocket handshake timed out"),
            WsError::Browser(why) => write!(f, "browser WebSocket: {why}"),
        }
    }
}

impl std::error::Error for WsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            WsError::Io { source, .. } => Some(source),
            WsError::Handshake(e) => Some(&**e),
            _ => None,
        }
    }
}

impl link_types::FromIoFailure for WsError {
    fn from_io_failure(op: &'static str, source: std::io::Error) -> Self {
        WsError::Io { op, source }
    }
}

/// `map_err(io("what was being done"))`, the helper every link crate shares.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) use link_types::io_failed as io;
