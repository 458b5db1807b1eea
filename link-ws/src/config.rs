//! Settings of a WebSocket link.

use std::time::Duration;

/// Settings of a WebSocket link, shared by the native and the browser
/// implementations (each ignores the fields that do not apply to it).
#[derive(Debug, Clone)]
pub struct WsConfig {
    /// The largest message, in bytes, either way. A larger incoming message
    /// is refused from its frame header, before its payload is buffered,
    /// and the connection is closed with code 1009. Default 16 MiB.
    pub max_payload: usize,
    /// Native: how many committed messages may wait in the write buffer
    /// before `reserve` flushes them and waits for the socket. Default 256.
    pub queue: usize,
    /// Native: bytes gathered in the write buffer before a write system
    /// call is made without a `flush`. Default 128 KiB.
    pub write_buffer: usize,
    /// Accept text messages and deliver their (UTF-8) bytes like binary
    /// ones. Off by default: a text message is then a protocol error and the
    /// connection is closed with code 1003.
    pub accept_text: bool,
    /// Native: the longest a TCP connect plus TLS and WebSocket handshake
    /// may take. Default 10 s.
    pub handshake_timeout: Duration,
    /// Native server: the most connections taken from the listener and not
    /// yet returned by `accept` (in their handshake, or done and waiting).
    /// Past it, a new connection is closed at once and counted as refused,
    /// so a flood of clients cannot grow the server's memory. Default 128.
    pub max_pending: usize,
    /// Native, Linux: the most bytes the kernel may hold unsent for this
    /// connection (`TCP_NOTSENT_LOWAT`). With a bound, a peer that drains
    /// slower than the stream pushes back on `reserve` within about this
    /// many bytes (plus what is in flight), instead of the kernel's send
    /// buffer holding seconds of stream. `None` (the default) keeps the
    /// kernel's setting. Ignored on other systems.
    pub max_unsent: Option<u32>,
    /// Browser: `reserve` waits while the socket's `bufferedAmount` is above
    /// this many bytes. Default 4 MiB.
    pub high_water: usize,
    /// Browser: how often a waiting `reserve` looks at `bufferedAmount`
    /// again. Default 2 ms.
    pub poll_interval: Duration,
    /// Browser: the most bytes of received, not yet taken messages. The
    /// browser's WebSocket cannot stop reading; past this the link fails
    /// with a protocol error (counted) instead of growing without bound.
    /// Default 256 MiB.
    pub max_queued: usize,
}

impl Default for WsConfig {
    fn default() -> Self {
        WsConfig {
            max_payload: 16 << 20,
            queue: 256,
            write_buffer: 128 << 10,
            accept_text: false,
            handshake_timeout: Duration::from_secs(10),
            max_pending: 128,
            max_unsent: None,
            high_water: 4 << 20,
            poll_interval: Duration::from_millis(2),
            max_queued: 256 << 20,
        }
    }
}

impl WsConfig {
    /// Check the settings; the error names the first one out of range.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_payload == 0 {
            return Err("max_payload must be at least 1".into());
        }
        if self.max_pending == 0 {
            return Err("max_pending must be at least 1".into());
        }
        if self.queue == 0 {
            return Err("queue must be at least 1".into());
        }
        if self.max_queued < self.max_payload {
            return Err("max_queued must be at least max_payload".into());
        }
        if self.max_unsent == Some(0) {
            return Err("max_unsent must be at least 1".into());
        }
        if self.poll_interval.is_zero() {
            return Err("poll_interval must not be zero".into());
        }
        Ok(())
    }
}
