//! The native WebSocket server: accepts many connections, one link each.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response, ServerHandshake};

use super::framed::{self, Framed, Sock};
use super::http::{HttpRoutes, Routed, route};
use super::link::WsLink;
use super::stream::{Spare, Stream};
use super::tls::TlsServer;
use crate::{WsConfig, WsError};

/// One accepted connection: its link and what the application may route by.
#[derive(Debug)]
pub struct WsAccepted {
    /// The connection as a link.
    pub link: WsLink,
    /// The request target of the upgrade request: path and query
    /// (`/room/7?token=x`).
    pub path: String,
    /// The client's address.
    pub peer: SocketAddr,
}

/// Counters of a server.
#[derive(Debug, Default)]
struct ServerCounters {
    accepted: AtomicU64,
    handshakes_failed: AtomicU64,
    refused: AtomicU64,
    http_ok: AtomicU64,
    http_refused: AtomicU64,
    origin_refused: AtomicU64,
}

/// What a server has done with the connections it was offered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerCounts {
    /// Connections whose handshake completed.
    pub accepted: u64,
    /// Handshakes that failed: bad requests, TLS failures, timeouts.
    pub handshakes_failed: u64,
    /// Connections closed at once because `max_pending` were already
    /// waiting.
    pub refused: u64,
    /// Plain HTTP requests answered with an asset (`200`).
    pub http_ok: u64,
    /// Plain HTTP requests refused (`404`, `405`, `400`, `431`), including
    /// upgrade requests for a path other than the stream path.
    pub http_refused: u64,
    /// Upgrade requests refused with `403` because their `Origin` is not
    /// allowed ([`crate::HttpRoutes::same_origin_only`]).
    pub origin_refused: u64,
}

/// How a server listens, besides its [`WsConfig`].
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    /// Serve `wss://` (and `https://`) with this identity.
    pub tls: Option<TlsServer>,
    /// Answer plain HTTP requests from this table and upgrade only its
    /// stream path; `None` upgrades every request.
    pub http: Option<HttpRoutes>,
}

// r[impl ws.server]
/// A WebSocket server (`ws://`, or `wss://` with [`WsServer::bind_tls`]).
///
/// A background task accepts TCP connections and runs each handshake in its
/// own task (with the configured timeout), so a slow client holds up no
/// other; [`WsServer::accept`] yields connections whose handshake is done.
/// Dropping the server stops accepting; links already accepted live on.
pub struct WsServer {
    local: SocketAddr,
    incoming: mpsc::Receiver<(WsAccepted, OwnedSemaphorePermit)>,
    counters: Arc<ServerCounters>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for WsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsServer")
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

impl Drop for WsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl WsServer {
    /// Listen for `ws://` connections on `addr` (port 0 picks a free port).
    pub async fn bind(addr: SocketAddr, config: WsConfig) -> Result<Self, WsError> {
        Self::bind_with(addr, config, ServerOptions::default()).await
    }

    /// Listen for `wss://` connections on `addr`.
    pub async fn bind_tls(
        addr: SocketAddr,
        config: WsConfig,
        tls: TlsServer,
    ) -> Result<Self, WsError> {
        let options = ServerOptions {
            tls: Some(tls),
            http: None,
        };
        Self::bind_with(addr, config, options).await
    }

    /// Listen on `addr` with TLS and/or an HTTP route table
    /// ([`ServerOptions`]).
    pub async fn bind_with(
        addr: SocketAddr,
        config: WsConfig,
        options: ServerOptions,
    ) -> Result<Self, WsError> {
        config.validate().map_err(WsError::InvalidConfig)?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(crate::error::io("bind"))?;
        let local = listener
            .local_addr()
            .map_err(crate::error::io("local_addr"))?;
        let (send, incoming) = mpsc::channel(config.max_pending);
        let counters = Arc::new(ServerCounters::default());
        let task = tokio::spawn(accept_loop(
            listener,
            config,
            options.tls,
            options.http.map(Arc::new),
            send,
            counters.clone(),
        ));
        Ok(WsServer {
            local,
            incoming,
            counters,
            task,
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The next connection whose handshake completed.
    pub async fn accept(&mut self) -> Result<WsAccepted, WsError> {
        // Dropping the permit makes room for one more pending connection.
        let (accepted, _permit) = self.incoming.recv().await.ok_or_else(|| WsError::Io {
            op: "accept",
            source: std::io::Error::other("the accept task ended"),
        })?;
        Ok(accepted)
    }

    /// What the server has done with the connections it was offered.
    pub fn counts(&self) -> ServerCounts {
        ServerCounts {
            accepted: self.counters.accepted.load(Relaxed),
            handshakes_failed: self.counters.handshakes_failed.load(Relaxed),
            refused: self.counters.refused.load(Relaxed),
            http_ok: self.counters.http_ok.load(Relaxed),
            http_refused: self.counters.http_refused.load(Relaxed),
            origin_refused: self.counters.origin_refused.load(Relaxed),
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    config: WsConfig,
    tls: Option<TlsServer>,
    http: Option<Arc<HttpRoutes>>,
    send: mpsc::Sender<(WsAccepted, OwnedSemaphorePermit)>,
    counters: Arc<ServerCounters>,
) {
    let pending = Arc::new(Semaphore::new(config.max_pending));
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Out of descriptors and the like: back off, keep serving.
                tracing::warn!("WebSocket server: accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        if send.is_closed() {
            return;
        }
        let Ok(permit) = pending.clone().try_acquire_owned() else {
            counters.refused.fetch_add(1, Relaxed);
            tracing::debug!("WebSocket server: refused {peer}: max_pending connections wait");
            drop(tcp);
            continue;
        };
        let (config, tls, http, send, counters) = (
            config.clone(),
            tls.clone(),
            http.clone(),
            send.clone(),
            counters.clone(),
        );
        tokio::spawn(async move {
            let hs = tokio::time::timeout(
                config.handshake_timeout,
                handshake(tcp, &config, tls, http.as_deref()),
            );
            match hs.await {
                Ok(Ok(Handshake::Http(status))) => {
                    let c = match status {
                        200 => &counters.http_ok,
                        403 => &counters.origin_refused,
                        _ => &counters.http_refused,
                    };
                    c.fetch_add(1, Relaxed);
                    tracing::debug!("HTTP request from {peer}: {status}");
                }
                Ok(Ok(Handshake::Link(link, path))) => {
                    counters.accepted.fetch_add(1, Relaxed);
                    let _ = send
                        .send((
                            WsAccepted {
                                link: *link,
                                path,
                                peer,
                            },
                            permit,
                        ))
                        .await;
                }
                Ok(Err(e)) => {
                    counters.handshakes_failed.fetch_add(1, Relaxed);
                    tracing::debug!("WebSocket handshake from {peer} failed: {e}");
                }
                Err(_) => {
                    counters.handshakes_failed.fetch_add(1, Relaxed);
                    tracing::debug!("WebSocket handshake from {peer} timed out");
                }
            }
        });
    }
}

enum Handshake {
    Link(Box<WsLink>, String),
    Http(u16),
}

async fn handshake(
    tcp: TcpStream,
    config: &WsConfig,
    tls: Option<TlsServer>,
    http: Option<&HttpRoutes>,
) -> Result<Handshake, WsError> {
    super::tune_socket(&tcp, config);
    let stream = match tls {
        None => Stream::Plain(tcp),
        Some(tls) => {
            let s = tls
                .acceptor
                .accept(tcp)
                .await
                .map_err(|e| WsError::Handshake(Box::new(e)))?;
            Stream::Tls(Box::new(tokio_rustls::TlsStream::Server(s)))
        }
    };
    let stream = match http {
        None => stream,
        Some(routes) => match route(stream, routes).await? {
            Routed::Upgrade(s) => s,
            Routed::Answered(status) => return Ok(Handshake::Http(status)),
        },
    };
    let mut path = String::new();
    // The callback's signature is the framing crate's; it never fails here.
    #[allow(clippy::result_large_err)]
    let callback = |req: &Request, resp: Response| {
        path = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| "/".into());
        Ok(resp)
    };
    let ws = framed::handshake(ServerHandshake::start(
        Sock::new(Spare::new(stream)),
        callback,
        Some(super::ws_config(config)),
    ))
    .await
    .map_err(|e| WsError::Handshake(Box::new(e)))?;
    Ok(Handshake::Link(
        Box::new(WsLink::new(Framed::new(ws, true), config)),
        path,
    ))
}
