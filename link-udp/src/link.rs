//! `UdpLink`: one end of a datagram link to one peer.

use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::Arc;

use link_types::{Link, LinkCaps};

use crate::config::UdpConfig;
use crate::error::UdpError;
use crate::rx::{Receiver, ReceiverSetup, RxSource, Sources, UdpRx};
use crate::socket::{SocketInfo, adopt, open};
use crate::stats::UdpStatsHandle;
use crate::tx::{TxSetup, UdpTx};

// r[impl udp.datagram.model]
/// A UDP link to one peer: lossy, unordered datagrams, one message per
/// datagram. Made by [`UdpLink::connect`] (its own connected socket) or by a
/// [`UdpEndpoint`](crate::UdpEndpoint) (a shared socket).
pub struct UdpLink {
    tx: UdpTx,
    rx: UdpRx,
    info: SocketInfo,
    peer: SocketAddr,
    stats: UdpStatsHandle,
}

impl UdpLink {
    /// A link from its two halves (an endpoint's links share its socket and
    /// counters).
    pub(crate) fn new(
        tx: UdpTx,
        rx: UdpRx,
        info: SocketInfo,
        peer: SocketAddr,
        stats: UdpStatsHandle,
    ) -> Self {
        UdpLink {
            tx,
            rx,
            info,
            peer,
            stats,
        }
    }

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
        let tx = UdpTx::new(TxSetup {
            socket: socket.clone(),
            waiters: Default::default(),
            dest: None,
            ring: config.send_ring,
            gso: config.gso,
            caps,
            stats: stats.counters(),
            guard: None,
            peer: None,
        });
        let receiver = Receiver::new(ReceiverSetup {
            socket,
            max_payload: info.max_payload,
            gro: info.gro,
            batch: config.recv_batch,
            sources: Sources::Connected,
            stats: stats.counters(),
        });
        let rx = UdpRx::new(RxSource::Direct(receiver), caps, None);
        UdpLink::new(tx, rx, info, peer, stats)
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
        link_types::LinkRx::caps(&self.rx)
    }

    // r[impl link.split]
    fn split(self) -> (UdpTx, UdpRx) {
        (self.tx, self.rx)
    }
}
