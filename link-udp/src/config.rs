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
    /// Most peers whose address is not validated yet (`udp.endpoint.validation`):
    /// they live in their own table and never take one of the `max_peers`
    /// slots. When it is full, a new source evicts the oldest unvalidated
    /// peer (its link ends with `LinkError::PeerGone`; counted).
    pub max_unvalidated: usize,
    /// Datagrams queued per unvalidated peer (a handshake needs few): with
    /// `max_unvalidated` it bounds what forged sources can make the
    /// endpoint hold. Validated peers get `peer_queue`.
    pub unvalidated_queue: usize,
    /// Until a peer's address is validated, the endpoint sends it at most
    /// this many times the bytes it received from it; further datagrams are
    /// dropped and counted (`udp.endpoint.amplification`). `None`: no limit.
    pub amplification_limit: Option<u32>,
    /// New sources a single address (an IPv4 address, an IPv6 /64) may
    /// open per second, with bursts of `handshake_burst`
    /// (`udp.endpoint.rate`). `None`: no limit. Refused attempts take no
    /// token, so clients behind one address (NAT, loopback tests) all get
    /// in as their Hello resends arrive; a host expecting more than the
    /// burst at once from one address raises it.
    pub handshake_rate: Option<u32>,
    /// Burst of the per-source limit above.
    pub handshake_burst: u32,
    /// Source addresses the per-source limit tracks at once (its memory
    /// bound); a new address beyond it is refused while every tracked one
    /// is still limited.
    pub rate_table: usize,
    /// With an admission gate (`UdpEndpoint::bind_with_gate`): from this
    /// many unvalidated peers on, new sources must prove their address
    /// (retry token) before the endpoint keeps any state for them
    /// (`udp.endpoint.retry`). `Some(0)`: always. `None`: never.
    pub retry_above: Option<usize>,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        EndpointConfig {
            link: UdpConfig::default(),
            max_peers: 64,
            idle_timeout: Some(Duration::from_secs(30)),
            peer_queue: 4096,
            accept_queue: 64,
            max_unvalidated: 256,
            unvalidated_queue: 32,
            amplification_limit: Some(3),
            handshake_rate: Some(50),
            handshake_burst: 100,
            rate_table: 4096,
            retry_above: Some(32),
        }
    }
}
