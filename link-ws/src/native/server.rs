//! The native WebSocket server: accepts many connections, one link each.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

use super::link::WsLink;
use super::stream::Stream;
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
        Self::start(addr, config, None).await
    }

    /// Listen for `wss://` connections on `addr`.
    pub async fn bind_tls(
        addr: SocketAddr,
        config: WsConfig,
        tls: TlsServer,
    ) -> Result<Self, WsError> {
        Self::start(addr, config, Some(tls)).await
    }

    async fn start(
        addr: SocketAddr,
        config: WsConfig,
        tls: Option<TlsServer>,
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
        let task = tokio::spawn(accept_loop(listener, config, tls, send, counters.clone()));
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
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    config: WsConfig,
    tls: Option<TlsServer>,
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
        let (config, tls, send, counters) =
            (config.clone(), tls.clone(), send.clone(), counters.clone());
        tokio::spawn(async move {
            let hs = tokio::time::timeout(config.handshake_timeout, handshake(tcp, &config, tls));
            match hs.await {
                Ok(Ok((link, path))) => {
                    counters.accepted.fetch_add(1, Relaxed);
                    let _ = send.send((WsAccepted { link, path, peer }, permit)).await;
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

async fn handshake(
    tcp: TcpStream,
    config: &WsConfig,
    tls: Option<TlsServer>,
) -> Result<(WsLink, String), WsError> {
    let _ = tcp.set_nodelay(true);
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
    let ws = tokio_tungstenite::accept_hdr_async_with_config(
        stream,
        callback,
        Some(super::ws_config(config)),
    )
    .await
    .map_err(|e| WsError::Handshake(Box::new(e)))?;
    Ok((WsLink::new(ws, config), path))
}
