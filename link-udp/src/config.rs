//! Settings of UDP links and endpoints.

use std::time::Duration;

/// Largest UDP payload over IPv4 (65535 − 20 − 8).
pub const MAX_UDP_PAYLOAD: usize = 65_507;
/// Payload that fits a 1500-byte MTU path over IPv4 (1500 − 20 − 8).
pub const MTU1500_V4: usize = 1472;
/// Payload that fits a 1500-byte MTU path over IPv6 (1500 − 40 − 8).
pub const MTU1500_V6: usize = 1452;

/// Settings of a UDP link (and of each link of an endpoint).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpConfig {
    /// Largest datagram payload; `None` picks what fits a 1500-byte MTU path
    /// for the socket's address family (1472 on IPv4, 1452 on IPv6). Larger
    /// values (jumbo frames) up to 65507 are opt-in.
    pub max_payload: Option<usize>,
    /// Datagrams the send ring holds before `reserve` must transmit (the
    /// ring holds `send_ring × max_payload` bytes, packed).
    pub send_ring: usize,
    /// Datagram buffers filled by one `recvmmsg` (at most 64; with GRO at
    /// most 8, each holding up to 64 KiB of coalesced datagrams, so that a
    /// batch stays in cache until it is handed up).
    pub recv_batch: usize,
    /// Send runs of equal-size datagrams with UDP GSO (falls back to plain
    /// `sendmmsg` at run time if the kernel refuses).
    pub gso: bool,
    /// Ask the kernel for UDP GRO on receive.
    pub gro: bool,
    /// Requested `SO_SNDBUF` in bytes.
    pub send_buffer: usize,
    /// Requested `SO_RCVBUF` in bytes.
    pub recv_buffer: usize,
    /// DSCP/ECN byte to mark outgoing packets with (`IP_TOS` /
    /// `IPV6_TCLASS`), e.g. `0xB8` for EF.
    pub tos: Option<u8>,
}

impl Default for UdpConfig {
    fn default() -> Self {
        UdpConfig {
            max_payload: None,
            send_ring: 512,
            recv_batch: 64,
            gso: true,
            gro: true,
            send_buffer: 4 << 20,
            recv_buffer: 4 << 20,
            tos: None,
        }
    }
}

/// Settings of an endpoint serving many peers on one socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointConfig {
    /// Settings of the socket and of each peer's link.
    pub link: UdpConfig,
    /// Most peers at once; datagrams from further new peers are dropped
    /// and counted.
    pub max_peers: usize,
    /// A peer that sent nothing for this long is forgotten: its link's
    /// `recv` ends with `LinkError::PeerGone`. `None`: never.
    pub idle_timeout: Option<Duration>,
    /// Datagrams queued per peer before further ones are dropped and counted.
    pub peer_queue: usize,
    /// New peers waiting for `accept` before further ones are refused.
    pub accept_queue: usize,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        EndpointConfig {
            link: UdpConfig::default(),
            max_peers: 64,
            idle_timeout: Some(Duration::from_secs(30)),
            peer_queue: 4096,
            accept_queue: 64,
        }
    }
}
