//! `UdpLink`: one end of a datagram link to one peer.

use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::Arc;

use link_types::{Backing, Link, LinkCaps, LinkError, LinkRx};

use crate::config::UdpConfig;
use crate::endpoint::PeerQueue;
use crate::error::UdpError;
use crate::rx::Receiver;
use crate::socket::{SocketInfo, adopt, open};
use crate::stats::UdpStatsHandle;
use crate::tx::{Guard, UdpTx};

// r[impl udp.datagram.model]
/// A UDP link to one peer: lossy, unordered datagrams, one message per
/// datagram. Made by [`UdpLink::connect`] (its own connected socket) or by a
/// [`UdpEndpoint`](crate::UdpEndpoint) (a shared socket).
pub struct UdpLink {
    pub(crate) tx: UdpTx,
    pub(crate) rx: UdpRx,
    pub(crate) info: SocketInfo,
    pub(crate) peer: SocketAddr,
    pub(crate) stats: UdpStatsHandle,
}

impl UdpLink {
    /// Bind `local` (port 0 for any), connect to `peer`, and make a link.
    /// Must be called inside a tokio runtime.
    pub fn connect(
        local: SocketAddr,
        peer: SocketAddr,
        config: &UdpConfig,
    ) -> Result<UdpLink, UdpError> {
        let (socket, info) = open(local, Some(peer), config)?;
        Ok(Self::from_socket(socket, info, peer, config))
    }

    /// Make a link from a socket that is already bound (inherited, or bound
    /// by the caller), connecting it to `peer`. Must be called inside a
    /// tokio runtime.
    pub fn from_std(
        socket: std::net::UdpSocket,
        peer: SocketAddr,
        config: &UdpConfig,
    ) -> Result<UdpLink, UdpError> {
        let (socket, info) = adopt(socket.into(), Some(peer), config)?;
        Ok(Self::from_socket(socket, info, peer, config))
    }

    fn from_socket(
        socket: tokio::net::UdpSocket,
        info: SocketInfo,
        peer: SocketAddr,
        config: &UdpConfig,
    ) -> UdpLink {
        let socket = Arc::new(socket);
        let stats = UdpStatsHandle::default();
        let caps = LinkCaps::datagram(info.max_payload);
        let tx = UdpTx::new(
            socket.clone(),
            None,
            config.send_ring,
            config.gso,
            caps,
            stats.0.clone(),
            None,
        );
        let rx = UdpRx {
            source: RxSource::Direct(Receiver::new(
                socket,
                info.max_payload,
                info.gro,
                config.recv_batch,
                false,
                stats.0.clone(),
            )),
            caps,
            end: None,
            _guard: None,
        };
        UdpLink {
            tx,
            rx,
            info,
            peer,
            stats,
        }
    }

    /// What the socket was granted.
    pub fn socket_info(&self) -> SocketInfo {
        self.info
    }

    /// The local address.
    pub fn local_addr(&self) -> SocketAddr {
        self.info.local
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// The link's counters (an endpoint's links share the endpoint's).
    pub fn stats(&self) -> UdpStatsHandle {
        self.stats.clone()
    }
}

/// The socket, for options this crate does not set (it is shared by every
/// link of an endpoint).
impl AsFd for UdpLink {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.tx.socket_fd()
    }
}

impl AsRawFd for UdpLink {
    fn as_raw_fd(&self) -> RawFd {
        self.as_fd().as_raw_fd()
    }
}

impl Link for UdpLink {
    type Tx = UdpTx;
    type Rx = UdpRx;

    // r[impl link.caps]
    fn caps(&self) -> LinkCaps {
        self.rx.caps
    }

    // r[impl link.split]
    fn split(self) -> (UdpTx, UdpRx) {
        (self.tx, self.rx)
    }
}

pub(crate) enum RxSource {
    Direct(Receiver),
    Peer(Arc<PeerQueue>),
}

/// The receiving half of a UDP link.
pub struct UdpRx {
    pub(crate) source: RxSource,
    pub(crate) caps: LinkCaps,
    pub(crate) end: Option<LinkError>,
    pub(crate) _guard: Guard,
}

impl LinkRx for UdpRx {
    fn caps(&self) -> LinkCaps {
        self.caps
    }

    // r[impl link.recv.cancel]
    // r[impl link.error.sticky]
    // r[impl link.backing.lifetime]
    async fn recv(&mut self) -> Result<Option<Backing>, LinkError> {
        if let Some(e) = &self.end {
            return Err(e.clone());
        }
        let result = match &mut self.source {
            RxSource::Direct(r) => r.next().await.map(|(b, _)| b),
            RxSource::Peer(q) => q.recv().await,
        };
        match result {
            Ok(b) => Ok(Some(b)),
            Err(e) => {
                self.end = Some(e.clone());
                Err(e)
            }
        }
    }
}

impl Drop for UdpRx {
    fn drop(&mut self) {
        if let RxSource::Peer(q) = &self.source {
            q.receiver_dropped();
        }
    }
}
