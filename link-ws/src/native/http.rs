//! Plain HTTP on the WebSocket port: a static route table for `GET`
//! requests, and the one path that is upgraded to WebSocket.

use std::collections::HashMap;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::stream::Stream;
use crate::WsError;

/// The most bytes of a request head (request line and headers) read before
/// the request is refused with 431.
const MAX_HEAD: usize = 16 << 10;

/// One static response: its content type and body.
#[derive(Debug, Clone)]
pub struct HttpAsset {
    /// The `Content-Type` header value (`text/html; charset=utf-8`).
    pub content_type: String,
    /// The body.
    pub body: Bytes,
}

/// What a server answers to plain HTTP requests on its port, and which path
/// it upgrades to WebSocket (`r[ws.http.routes]`).
///
/// Without routes ([`crate::WsServer::bind`]) every request is a WebSocket
/// upgrade, whatever its path. With routes
/// ([`crate::WsServer::bind_with`]), only an upgrade request for
/// [`HttpRoutes::stream_path`] becomes a link; a `GET` or `HEAD` of a path
/// in the table gets `200` with that asset; anything else gets `404` (or
/// `405` for other methods) and the connection is closed.
///
/// With [`HttpRoutes::same_origin_only`] an upgrade request that carries
/// an `Origin` header (a browser's) is refused with `403` unless that
/// origin is the server's own, as the request's `Host` names it, or one of
/// the origins allowed besides (`r[ws.http.origin]`).
#[derive(Debug, Clone)]
pub struct HttpRoutes {
    /// The path (without query) that is upgraded to WebSocket.
    pub stream_path: String,
    /// Path (without query) -> response.
    pub assets: HashMap<String, HttpAsset>,
    /// `None`: upgrades from any origin. `Some(list)`: only from the
    /// server's own origin and these (`https://example.com`), compared
    /// without regard to case.
    pub allowed_origins: Option<Vec<String>>,
}

impl HttpRoutes {
    /// No assets yet; `stream_path` is upgraded to WebSocket.
    pub fn new(stream_path: impl Into<String>) -> Self {
        HttpRoutes {
            stream_path: stream_path.into(),
            assets: HashMap::new(),
            allowed_origins: None,
        }
    }

    /// Upgrade only requests from the server's own origin (the scheme, host
    /// and port of the request's `Host`), or from one of `also`; requests
    /// without an `Origin` header (not from a browser) are upgraded.
    pub fn same_origin_only(mut self, also: Vec<String>) -> Self {
        self.allowed_origins = Some(also);
        self
    }

    /// Add (or replace) the asset served at `path`.
    pub fn with(
        mut self,
        path: impl Into<String>,
        content_type: impl Into<String>,
        body: impl Into<Bytes>,
    ) -> Self {
        self.assets.insert(
            path.into(),
            HttpAsset {
                content_type: content_type.into(),
                body: body.into(),
            },
        );
        self
    }
}

/// What a request on a server with routes turned out to be.
pub(crate) enum Routed {
    /// An upgrade of the stream path: hand the stream (replaying the head)
    /// to the WebSocket handshake.
    Upgrade(Stream),
    /// A plain HTTP request, answered with this status.
    Answered(u16),
}

fn path_only(target: &str) -> &str {
    target.split(['?', '#']).next().unwrap_or(target)
}

fn header<'a>(req: &'a httparse::Request<'_, '_>, name: &str) -> Option<&'a [u8]> {
    req.headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value)
}

fn has_token(value: Option<&[u8]>, token: &str) -> bool {
    value
        .and_then(|v| std::str::from_utf8(v).ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

// r[impl ws.http.origin]
/// Whether an upgrade request may become a link under the routes' origin
/// policy: no policy, no `Origin` header, an origin listed, or an origin
/// whose host and port are the request's `Host`.
fn origin_allowed(req: &httparse::Request<'_, '_>, routes: &HttpRoutes) -> bool {
    let Some(allowed) = &routes.allowed_origins else {
        return true;
    };
    let Some(origin) = header(req, "origin") else {
        return true;
    };
    let Ok(origin) = std::str::from_utf8(origin).map(str::trim) else {
        return false;
    };
    if allowed.iter().any(|a| a.eq_ignore_ascii_case(origin)) {
        return true;
    }
    let origin = origin.to_ascii_lowercase();
    let authority = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"));
    let host = header(req, "host").and_then(|h| std::str::from_utf8(h).ok());
    matches!((authority, host), (Some(a), Some(h)) if a.eq_ignore_ascii_case(h.trim()))
}

// r[impl ws.http.routes]
/// Read one request head from `stream` and either answer it from `routes`
/// or hand the stream on for the WebSocket handshake.
pub(crate) async fn route(mut stream: Stream, routes: &HttpRoutes) -> Result<Routed, WsError> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 4096];
    let end = loop {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(crate::error::io("read request"))?;
        if n == 0 {
            return Err(WsError::Handshake(
                "connection closed inside the request head".into(),
            ));
        }
        let scan_from = head.len().saturating_sub(3);
        head.extend_from_slice(&buf[..n]);
        let end = head[scan_from..]
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|i| scan_from + i + 4);
        if end.unwrap_or(head.len()) > MAX_HEAD {
            respond(
                &mut stream,
                431,
                "text/plain",
                b"request head too large",
                false,
            )
            .await?;
            return Ok(Routed::Answered(431));
        }
        if let Some(end) = end {
            break end;
        }
    };
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    let parsed = req.parse(&head[..end]);
    let (Ok(httparse::Status::Complete(_)), Some(method), Some(target)) =
        (parsed, req.method, req.path)
    else {
        respond(&mut stream, 400, "text/plain", b"bad request", false).await?;
        return Ok(Routed::Answered(400));
    };
    let path = path_only(target);
    let upgrade = has_token(header(&req, "upgrade"), "websocket");
    if upgrade && path == routes.stream_path && !origin_allowed(&req, routes) {
        respond(&mut stream, 403, "text/plain", b"origin not allowed", false).await?;
        return Ok(Routed::Answered(403));
    }
    if upgrade && path == routes.stream_path {
        // The handshake reads the request again: replay what was read.
        return Ok(Routed::Upgrade(Stream::Replay {
            head,
            pos: 0,
            inner: Box::new(stream),
        }));
    }
    let head_only = method == "HEAD";
    if method != "GET" && !head_only {
        respond(&mut stream, 405, "text/plain", b"method not allowed", false).await?;
        return Ok(Routed::Answered(405));
    }
    match routes.assets.get(path).filter(|_| !upgrade) {
        Some(a) => {
            respond(&mut stream, 200, &a.content_type, &a.body, head_only).await?;
            Ok(Routed::Answered(200))
        }
        None => {
            respond(&mut stream, 404, "text/plain", b"not found", head_only).await?;
            Ok(Routed::Answered(404))
        }
    }
}

async fn respond(
    stream: &mut Stream,
    status: u16,
    content_type: &str,
    body: &[u8],
    head_only: bool,
) -> Result<(), WsError> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Request Header Fields Too Large",
    };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body);
    }
    let io = crate::error::io("write response");
    stream.write_all(&out).await.map_err(io)?;
    stream
        .flush()
        .await
        .map_err(crate::error::io("write response"))?;
    let _ = stream.shutdown().await;
    Ok(())
}
