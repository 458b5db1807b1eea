//! The receiving half: [`UdpRx`], fed either straight from its own socket
//! by a [`Receiver`] or from an endpoint's [`PeerQueue`]; and the receive
//! path itself: `recvmmsg` into a reused ring of slabs, GRO super-datagrams
//! split by their segment size, each datagram handed up as a `Backing` that
//! shares its slab.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use link_types::{Backing, LinkCaps, LinkError, LinkRx};
use tokio::io::Interest;
use tokio::net::UdpSocket;

use crate::peer::PeerQueue;
use crate::stats::Counters;
use crate::sys::{self, MAX_BATCH, RecvMeta};
use crate::tx::Guard;

/// Where a [`UdpRx`] takes its datagrams from.
pub(crate) enum RxSource {
    /// Its own connected socket.
    Direct(Receiver),
    /// The queue an endpoint's task fills for this peer.
    Peer(Arc<PeerQueue>),
}

/// The receiving half of a UDP link.
pub struct UdpRx {
    source: RxSource,
    caps: LinkCaps,
    end: Option<LinkError>,
    _guard: Guard,
}

impl UdpRx {
    /// A receiving half taking datagrams from `source`; `guard` keeps an
    /// endpoint's task alive while this half exists.
    pub(crate) fn new(source: RxSource, caps: LinkCaps, guard: Guard) -> Self {
        UdpRx {
            source,
            caps,
            end: None,
            _guard: guard,
        }
    }
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

/// Whether a [`Receiver`] reads each datagram's source address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sources {
    /// A connected socket: every datagram comes from its one peer.
    Connected,
    /// An endpoint's unconnected socket: the source picks the peer.
    Read,
}

/// How a [`Receiver`] is set up.
pub(crate) struct ReceiverSetup {
    /// The socket to read.
    pub(crate) socket: Arc<UdpSocket>,
    /// Datagrams above this are dropped and counted.
    pub(crate) max_payload: usize,
    /// Whether the socket has UDP GRO on.
    pub(crate) gro: bool,
    /// Buffers per `recvmmsg` asked for (capped, see [`Receiver::new`]).
    pub(crate) batch: usize,
    /// Whether source addresses are read.
    pub(crate) sources: Sources,
    /// Where drops and totals are counted.
    pub(crate) stats: Arc<Counters>,
}

#[derive(Debug, Clone, Copy)]
struct Datagram {
    slab: u32,
    start: u32,
    len: u32,
    source: Option<SocketAddr>,
}

/// Most GRO buffers filled by one `recvmmsg` (see [`Receiver::new`]).
const GRO_BATCH: usize = 8;
/// Slabs made up front: one the application is reading, one being filled,
/// one spare.
const INITIAL_SLABS: usize = 3;

// r[impl udp.recv.ring]
/// Receives datagrams from a socket in batches, into a ring of slabs.
pub(crate) struct Receiver {
    socket: Arc<UdpSocket>,
    /// The buffers of one `recvmmsg` batch each, contiguous. A slab is
    /// written only while the ring holds its sole reference
    /// (`Arc::get_mut`) and read through the `Backing`s that share it; it
    /// is free again when the last of them is dropped.
    slabs: Vec<Arc<[u8]>>,
    /// Bytes per datagram buffer within a slab.
    slot: usize,
    batch: usize,
    max_payload: usize,
    ready: VecDeque<Datagram>,
    meta: Vec<RecvMeta>,
    sources: Sources,
    stats: Arc<Counters>,
}

impl Receiver {
    pub(crate) fn new(setup: ReceiverSetup) -> Self {
        let ReceiverSetup {
            socket,
            max_payload,
            gro,
            batch,
            sources,
            stats,
        } = setup;
        // A GRO buffer holds up to 64 KiB (dozens of datagrams). Filling 64
        // of them in one call would write 4 MiB, more than a core's L2: the
        // bytes would be out of cache again by the time they are handed up.
        // A few per call (hundreds of datagrams) keeps them warm.
        let batch = if gro {
            batch.min(GRO_BATCH)
        } else {
            batch.min(MAX_BATCH)
        };
        // One spare byte so that a datagram above the maximum is seen as
        // such (and counted) rather than silently cut; slots start on cache
        // lines, where the kernel's copy into them is fastest.
        let slot = if gro {
            65_536
        } else {
            (max_payload + 1).next_multiple_of(64)
        };
        let slabs = (0..INITIAL_SLABS)
            .map(|_| Self::slab(slot * batch))
            .collect();
        Receiver {
            socket,
            slabs,
            slot,
            batch,
            max_payload,
            ready: VecDeque::with_capacity(batch * 64),
            meta: vec![RecvMeta::default(); batch],
            sources,
            stats,
        }
    }

    fn slab(size: usize) -> Arc<[u8]> {
        vec![0; size].into()
    }

    /// The next datagram and its source. Cancel-safe: state changes only
    /// when a datagram is returned or a batch is taken in.
    pub(crate) async fn next(&mut self) -> Result<(Backing, Option<SocketAddr>), LinkError> {
        loop {
            if let Some(d) = self.ready.pop_front() {
                let slab = self.slabs[d.slab as usize].clone();
                let (start, len) = (d.start as usize, d.len as usize);
                // `fill` cut every range out of its slab's buffers; one
                // outside it would be a bug here, reported, never an empty
                // or wrong message.
                let backing = Backing::shared_slice(slab, start..start + len).ok_or_else(|| {
                    LinkError::from(io::Error::other(
                        "link-udp: a received datagram's range lies outside its receive slab",
                    ))
                })?;
                return Ok((backing, d.source));
            }
            match self.fill() {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.refresh_kernel_drops();
                    self.socket.readable().await.map_err(LinkError::from)?;
                }
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ECONNREFUSED | libc::EHOSTUNREACH | libc::ENETUNREACH)
                    ) =>
                {
                    // An ICMP port-, host- or net-unreachable for an
                    // earlier send.
                    self.stats.rx_transient_errors.add(1);
                }
                Err(e) => return Err(LinkError::from(e)),
            }
        }
    }

    // r[impl udp.recv.gro]
    // r[impl udp.recv.drops]
    // r[impl udp.recv.drops]
    /// Update the count of datagrams the kernel dropped for a full receive
    /// queue (a cumulative counter, so the latest reading is the total).
    fn refresh_kernel_drops(&self) {
        if let Ok(drops) = sys::socket_drops(self.socket.as_raw_fd()) {
            self.stats.rx_kernel_drops.max(u64::from(drops));
        }
    }

    /// One `recvmmsg` into a free slab; parsed datagrams go to `ready`.
    fn fill(&mut self) -> io::Result<()> {
        // A slab is free when no `Backing` holds a datagram in it. In steady
        // state one always is; if the application holds on to datagrams of
        // every slab, the ring grows (counted) rather than stall.
        let free = match self
            .slabs
            .iter_mut()
            .position(|s| Arc::get_mut(s).is_some())
        {
            Some(i) => i,
            None => {
                self.stats.rx_buffer_growth.add(1);
                self.slabs.push(Self::slab(self.slot * self.batch));
                self.slabs.len() - 1
            }
        };
        let Some(slab) = Arc::get_mut(&mut self.slabs[free]) else {
            return Ok(());
        };
        let mut slices: [&mut [u8]; MAX_BATCH] = std::array::from_fn(|_| <&mut [u8]>::default());
        let mut k = 0;
        for chunk in slab.chunks_exact_mut(self.slot).take(self.batch) {
            slices[k] = chunk;
            k += 1;
        }
        let fd = self.socket.as_raw_fd();
        let want_source = self.sources == Sources::Read;
        let meta = &mut self.meta;
        let got = self.socket.try_io(Interest::READABLE, || {
            sys::recv_batch(fd, &mut slices[..k], meta, want_source)
        })?;
        self.stats.rx_syscalls.add(1);
        let queued_before = self.ready.len();
        let mut bytes = 0u64;
        for (j, m) in self.meta[..got].iter().enumerate() {
            let before = self.ready.len();
            if m.truncated {
                self.stats.rx_truncated.add(1);
                continue;
            }
            let base = j * self.slot;
            match m.gro_segment {
                Some(seg) if seg < m.len => {
                    self.stats.rx_gro_buffers.add(1);
                    if seg > self.max_payload {
                        self.stats.rx_oversized.add(m.len.div_ceil(seg) as u64);
                        continue;
                    }
                    let mut off = 0;
                    while off < m.len {
                        let len = seg.min(m.len - off);
                        self.ready.push_back(Datagram {
                            slab: free as u32,
                            start: (base + off) as u32,
                            len: len as u32,
                            source: m.source,
                        });
                        off += len;
                    }
                }
                _ if m.len > self.max_payload => self.stats.rx_oversized.add(1),
                _ => self.ready.push_back(Datagram {
                    slab: free as u32,
                    start: base as u32,
                    len: m.len as u32,
                    source: m.source,
                }),
            }
            if self.ready.len() > before {
                bytes += m.len as u64;
            }
        }
        // Counted per batch rather than per datagram: one atomic add each.
        self.stats
            .rx_datagrams
            .add((self.ready.len() - queued_before) as u64);
        self.stats.rx_bytes.add(bytes);
        if got == k {
            // A full batch: the queue may be overflowing. Read the kernel's
            // drop counter (also read whenever the queue runs dry).
            self.refresh_kernel_drops();
        }
        Ok(())
    }
}
