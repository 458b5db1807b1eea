//! UDP link for linkstream: lossy, unordered datagrams, one message per
//! datagram, for a host streaming to native clients on a LAN.
//!
//! - **Send**: `alloc` hands out a slot in the link's own send ring (no
//!   allocation per datagram); committed datagrams go out in batches with
//!   `sendmmsg`, runs of equal-size datagrams as one UDP GSO send each, with a
//!   run-time fallback to plain `sendmmsg` when the kernel refuses GSO.
//! - **Receive**: `recvmmsg` into a reused ring of slabs, with UDP GRO
//!   super-datagrams split by their segment size; a received `Backing` leases
//!   its slice of a slab, which goes back to the ring when its last datagram
//!   is dropped. Datagrams of at most 1024 bytes are copied out instead, so
//!   that a held loss report pins no slab, and a ring that grew returns to
//!   its size after a second without growth.
//! - **Drops are counted**: oversized and truncated datagrams, kernel
//!   receive-queue overflows (the socket drop counter), transient send errors; see
//!   [`UdpStats`].
//! - **Many peers**: a [`UdpEndpoint`] serves many peers on one socket,
//!   demultiplexing by source address, with a peer limit and an idle timeout.
//!
//! The rules are in `spec/udp.md`. Linux only.
#![deny(missing_docs)]
#![deny(clippy::undocumented_unsafe_blocks)]

#[cfg(not(target_os = "linux"))]
compile_error!("link-udp uses sendmmsg, recvmmsg, UDP GSO and GRO: it supports Linux only");

mod config;
mod endpoint;
mod error;
mod link;
mod peer;
mod rx;
mod socket;
mod stats;
mod sys;
mod tx;

pub use config::{EndpointConfig, MAX_UDP_PAYLOAD, MTU1500_V4, MTU1500_V6, UdpConfig};
pub use endpoint::UdpEndpoint;
pub use error::UdpError;
pub use link::UdpLink;
pub use rx::UdpRx;
pub use socket::SocketInfo;
pub use stats::{UdpStats, UdpStatsHandle};
pub use tx::{UdpPermit, UdpSlot, UdpTx};
