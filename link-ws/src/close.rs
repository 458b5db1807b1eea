//! How the WebSocket close handshake maps onto the link's end-of-stream and
//! errors. Shared by the native and browser implementations.

use std::sync::Arc;

use link_types::LinkError;

/// Normal closure: the peer called `close`.
pub const NORMAL: u16 = 1000;
/// Going away: the peer dropped a half of its link without closing it.
pub const GOING_AWAY: u16 = 1001;
/// Protocol error.
pub const PROTOCOL: u16 = 1002;
/// Unsupported data: a text message arrived and text is not accepted.
pub const UNSUPPORTED: u16 = 1003;
/// No status code was present in the close frame.
pub const NO_STATUS: u16 = 1005;
/// Abnormal closure: the connection ended without a close frame.
pub const ABNORMAL: u16 = 1006;
/// Invalid payload data (a text message that is not UTF-8).
pub const INVALID_PAYLOAD: u16 = 1007;
/// Policy violation (the browser's receive queue overflowed).
pub const POLICY: u16 = 1008;
/// Message too big: above the receiver's maximum payload.
pub const TOO_BIG: u16 = 1009;

/// Application range, sent by the browser client (which may only send 1000
/// and 3000-4999): a half was dropped without `close`. Read like 1001.
pub const APP_GONE: u16 = 4001;
/// Application range, sent by the browser client: like 1003.
pub const APP_UNSUPPORTED: u16 = 4003;
/// Application range, sent by the browser client: like 1008.
pub const APP_POLICY: u16 = 4008;
/// Application range, sent by the browser client: like 1009.
pub const APP_TOO_BIG: u16 = 4009;

/// What the receiving half reports for a close frame with `code` (`None`:
/// the frame had no code, which RFC 6455 reads as a normal closure).
// r[impl ws.close.eof]
// r[impl ws.close.abrupt]
pub(crate) fn end_for_close(code: Option<u16>, reason: &str) -> Result<(), LinkError> {
    match code {
        None | Some(NORMAL) | Some(NO_STATUS) => Ok(()),
        Some(GOING_AWAY) | Some(ABNORMAL) | Some(APP_GONE) => Err(LinkError::PeerGone),
        Some(c) => Err(LinkError::Protocol(Arc::from(format!(
            "peer closed the WebSocket with code {c}: {reason}"
        )))),
    }
}
