//! Opening and tuning the socket.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;

use crate::config::{MAX_UDP_PAYLOAD, MTU1500_V4, MTU1500_V6, UdpConfig};
use crate::error::{UdpError, io};
use crate::sys;

/// What the kernel granted when the socket was set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketInfo {
    /// The bound local address.
    pub local: SocketAddr,
    /// The send buffer the kernel granted (`SO_SNDBUF` as read back).
    pub send_buffer: usize,
    /// The receive buffer the kernel granted (`SO_RCVBUF` as read back).
    pub recv_buffer: usize,
    /// Whether UDP GRO was enabled.
    pub gro: bool,
    /// The maximum payload in force.
    pub max_payload: usize,
}

/// Bind (and optionally connect) a non-blocking UDP socket set up as `cfg`
/// asks, registered with the current tokio runtime.
pub(crate) fn open(
    bind: SocketAddr,
    connect: Option<SocketAddr>,
    cfg: &UdpConfig,
) -> Result<(UdpSocket, SocketInfo), UdpError> {
    let socket = Socket::new(Domain::for_address(bind), Type::DGRAM, Some(Protocol::UDP))
        .map_err(io("socket"))?;
    if bind.is_ipv6() {
        socket.set_only_v6(true).map_err(io("IPV6_V6ONLY"))?;
    }
    socket.bind(&bind.into()).map_err(io("bind"))?;
    adopt(socket, connect, cfg)
}

// r[impl udp.socket.buffers]
/// Configure an already bound socket as `cfg` asks, connect it if `connect`
/// is given, and register it with the current tokio runtime.
pub(crate) fn adopt(
    socket: Socket,
    connect: Option<SocketAddr>,
    cfg: &UdpConfig,
) -> Result<(UdpSocket, SocketInfo), UdpError> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(UdpError::NoRuntime);
    }
    let local = socket
        .local_addr()
        .map_err(io("local address"))?
        .as_socket()
        .ok_or_else(|| UdpError::InvalidConfig("socket is not bound to an IP address".into()))?;
    let max_payload = match cfg.max_payload {
        Some(m) if m == 0 || m > MAX_UDP_PAYLOAD => {
            return Err(UdpError::InvalidConfig(format!(
                "max_payload {m} is not within 1..={MAX_UDP_PAYLOAD}"
            )));
        }
        Some(m) => m,
        None if local.is_ipv4() => MTU1500_V4,
        None => MTU1500_V6,
    };
    if cfg.send_ring == 0 || cfg.recv_batch == 0 {
        return Err(UdpError::InvalidConfig(
            "send_ring and recv_batch must be at least 1".into(),
        ));
    }
    if let Some(peer) = connect
        && peer.is_ipv4() != local.is_ipv4()
    {
        return Err(UdpError::InvalidConfig(format!(
            "cannot reach {peer} from a socket bound to {local}: address families differ"
        )));
    }
    socket
        .set_nonblocking(true)
        .map_err(io("set non-blocking"))?;
    // The kernel caps requests at net.core.{w,r}mem_max; what it granted is
    // read back and reported (Linux reports twice the usable size).
    let _ = socket.set_send_buffer_size(cfg.send_buffer);
    let _ = socket.set_recv_buffer_size(cfg.recv_buffer);
    let send_buffer = socket.send_buffer_size().map_err(io("SO_SNDBUF"))?;
    let recv_buffer = socket.recv_buffer_size().map_err(io("SO_RCVBUF"))?;
    if send_buffer < cfg.send_buffer / 2 || recv_buffer < cfg.recv_buffer / 2 {
        tracing::warn!(
            requested_send = cfg.send_buffer,
            granted_send = send_buffer,
            requested_recv = cfg.recv_buffer,
            granted_recv = recv_buffer,
            "UDP socket buffers far below the request; raise net.core.wmem_max / rmem_max"
        );
    }
    // r[impl udp.socket.tos]
    if let Some(tos) = cfg.tos {
        if local.is_ipv4() {
            socket.set_tos_v4(u32::from(tos)).map_err(io("IP_TOS"))?;
        } else {
            socket
                .set_tclass_v6(u32::from(tos))
                .map_err(io("IPV6_TCLASS"))?;
        }
    }
    let fd = socket.as_raw_fd();
    // Counting kernel drops is part of the contract: fail if the counter
    // cannot be read.
    sys::socket_drops(fd).map_err(io("SO_MEMINFO"))?;
    let gro = cfg.gro && sys::set_int_opt(fd, sys::SOL_UDP, sys::UDP_GRO, 1).is_ok();
    if cfg.gro && !gro {
        tracing::info!("UDP GRO not available; receiving one datagram per buffer");
    }
    if let Some(peer) = connect {
        socket.connect(&peer.into()).map_err(io("connect"))?;
    }
    let std: std::net::UdpSocket = socket.into();
    let socket = UdpSocket::from_std(std).map_err(io("register with tokio"))?;
    Ok((
        socket,
        SocketInfo {
            local,
            send_buffer,
            recv_buffer,
            gro,
            max_payload,
        },
    ))
}
