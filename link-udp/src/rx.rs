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
use std::time::{Duration, Instant};

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
/// Slabs made up front, and the size the ring returns to after growing:
/// one the application is reading, one being filled, one spare.
const INITIAL_SLABS: usize = 3;
/// Datagrams of at most this many bytes (loss reports, feedback, acks) are
/// copied into an allocation of their own instead of sharing their slab: a
/// 40-byte datagram held by the application would otherwise pin a whole
/// slab (with GRO, a 64 KiB buffer of a 512 KiB slab). Media-size datagrams
/// (a path MTU's worth, about 1200 bytes and up) keep the zero-copy path.
pub(crate) const COPY_AT_MOST: usize = 1024;
/// How long the ring must have gone without growing before it lets go of
/// the slabs beyond [`INITIAL_SLABS`].
pub(crate) const SHRINK_AFTER: Duration = Duration::from_secs(1);

// r[impl udp.recv.ring]
// r[impl udp.recv.shrink]
/// Receives datagrams from a socket in batches, into a ring of slabs.
pub(crate) struct Receiver {
    socket: Arc<UdpSocket>,
    /// The buffers of one `recvmmsg` batch each, contiguous. A slab is
    /// written only while the ring holds its sole reference
    /// (`Arc::get_mut`) and read through the `Backing`s that share it; it
    /// is free again when the last of them is dropped.
    slabs: Vec<Arc<[u8]>>,
    /// When the ring last grew beyond [`INITIAL_SLABS`] (`None`: never, or
    /// it has shrunk back since).
    grew_at: Option<Instant>,
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
        stats
            .rx_ring_bytes
            .set((INITIAL_SLABS * slot * batch) as u64);
        Receiver {
            socket,
            slabs,
            grew_at: None,
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
                let slab = &self.slabs[d.slab as usize];
                let (start, len) = (d.start as usize, d.len as usize);
                // `fill` cut every range out of its slab's buffers; one
                // outside it would be a bug here, reported, never an empty
                // or wrong message.
                let outside = || {
                    LinkError::from(io::Error::other(
                        "link-udp: a received datagram's range lies outside its receive slab",
                    ))
                };
                let backing = if len <= COPY_AT_MOST {
                    Backing::boxed(slab.get(start..start + len).ok_or_else(outside)?)
                } else {
                    Backing::shared_slice(slab.clone(), start..start + len).ok_or_else(outside)?
                };
                return Ok((backing, d.source));
            }
            match self.fill() {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.refresh_kernel_drops();
                    match self.grew_at {
                        // Over its size: shrink once the socket has been
                        // quiet for long enough, even if it stays quiet.
                        Some(t) => {
                            let due = tokio::time::Instant::from_std(t + SHRINK_AFTER);
                            tokio::select! {
                                r = self.socket.readable() => r.map_err(LinkError::from)?,
                                () = tokio::time::sleep_until(due) => self.trim(Instant::now()),
                            }
                        }
                        None => self.socket.readable().await.map_err(LinkError::from)?,
                    }
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

    /// Bytes of one slab.
    fn slab_bytes(&self) -> usize {
        self.slot * self.batch
    }

    /// Return the ring to its configured size if it has not had to grow
    /// for [`SHRINK_AFTER`] (as of `now`): keep [`INITIAL_SLABS`] slabs, free
    /// ones first, and let go of the rest. A slab let go of while the
    /// application still holds datagrams in it is freed when the last of
    /// them is dropped. Only between batches (`ready` empty), when no
    /// queued datagram refers to a slab by its index.
    fn trim(&mut self, now: Instant) {
        let Some(t) = self.grew_at else { return };
        if !self.ready.is_empty() || now.saturating_duration_since(t) < SHRINK_AFTER {
            return;
        }
        // Free slabs to the front, then cut the ring to its size.
        self.slabs.sort_by_key(|s| Arc::strong_count(s) > 1);
        let released = self.slabs.len().saturating_sub(INITIAL_SLABS);
        self.slabs.truncate(INITIAL_SLABS);
        self.grew_at = None;
        self.stats.rx_buffer_released.add(released as u64);
        self.stats
            .rx_ring_bytes
            .set((self.slabs.len() * self.slab_bytes()) as u64);
    }

    /// Slabs the ring holds now.
    #[cfg(test)]
    fn slab_count(&self) -> usize {
        self.slabs.len()
    }

    /// One `recvmmsg` into a free slab; parsed datagrams go to `ready`.
    fn fill(&mut self) -> io::Result<()> {
        if self.grew_at.is_some() {
            self.trim(Instant::now());
        }
        // A slab is free when no `Backing` holds a datagram in it. In steady
        // state one always is; if the application holds on to datagrams of
        // every slab, the ring grows (counted) rather than stall, and
        // shrinks back once it has not needed to grow for a while (`trim`).
        let free = match self
            .slabs
            .iter_mut()
            .position(|s| Arc::get_mut(s).is_some())
        {
            Some(i) => i,
            None => {
                self.stats.rx_buffer_growth.add(1);
                self.slabs.push(Self::slab(self.slab_bytes()));
                self.grew_at = Some(Instant::now());
                self.stats
                    .rx_ring_bytes
                    .set((self.slabs.len() * self.slab_bytes()) as u64);
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

#[cfg(test)]
mod tests {
    use std::net::UdpSocket as StdSocket;
    use std::sync::Weak;

    use super::*;

    /// A receiver on a loopback socket (plain `recvmmsg`, 16 buffers of
    /// 1473 bytes rounded to 1536) and a socket sending to it.
    fn setup() -> (Receiver, StdSocket, Arc<Counters>) {
        let rx = StdSocket::bind("127.0.0.1:0").unwrap();
        let tx = StdSocket::bind("127.0.0.1:0").unwrap();
        tx.connect(rx.local_addr().unwrap()).unwrap();
        rx.connect(tx.local_addr().unwrap()).unwrap();
        rx.set_nonblocking(true).unwrap();
        let stats = Arc::new(Counters::default());
        let receiver = Receiver::new(ReceiverSetup {
            socket: Arc::new(UdpSocket::from_std(rx).unwrap()),
            max_payload: 1472,
            gro: false,
            batch: 16,
            sources: Sources::Connected,
            stats: stats.clone(),
        });
        (receiver, tx, stats)
    }

    fn datagram(seq: u32, len: usize) -> Vec<u8> {
        let mut d = vec![seq as u8; len];
        d[..4].copy_from_slice(&seq.to_le_bytes());
        d
    }

    /// Send `n` datagrams of `len` bytes numbered from `first`, receive them
    /// all and return them (16 at a time: the socket's default receive
    /// buffer holds no more than about a hundred).
    async fn exchange(
        r: &mut Receiver,
        tx: &StdSocket,
        first: u32,
        n: u32,
        len: usize,
    ) -> Vec<Backing> {
        let mut got = Vec::new();
        for seq in first..first + n {
            tx.send(&datagram(seq, len)).unwrap();
            if (seq - first) % 16 == 15 || seq == first + n - 1 {
                while got.len() < (seq - first + 1) as usize {
                    got.push(r.next().await.unwrap().0);
                }
            }
        }
        got
    }

    fn check(held: &[Backing], first: u32, len: usize) {
        for (i, b) in held.iter().enumerate() {
            assert_eq!(
                b.as_slice(),
                datagram(first + i as u32, len),
                "datagram {i} changed"
            );
        }
    }

    // r[verify udp.recv.shrink]
    #[tokio::test]
    async fn the_ring_returns_to_its_size_after_growing() {
        let (mut r, tx, stats) = setup();
        let slab = r.slab_bytes() as u64;
        assert_eq!(stats.rx_ring_bytes.get(), 3 * slab);
        // Hold media-size datagrams of many batches: the ring grows.
        let held = exchange(&mut r, &tx, 0, 16 * 12, 1200).await;
        check(&held, 0, 1200);
        let grown = r.slab_count();
        assert!(
            grown > INITIAL_SLABS,
            "the ring did not grow: {grown} slabs"
        );
        assert_eq!(stats.rx_buffer_growth.get(), (grown - INITIAL_SLABS) as u64);
        assert_eq!(stats.rx_ring_bytes.get(), grown as u64 * slab);
        let weak: Vec<Weak<[u8]>> = r.slabs.iter().map(Arc::downgrade).collect();
        // Not before a second without growth.
        let t = r.grew_at.expect("the time the ring grew");
        r.trim(t + SHRINK_AFTER - Duration::from_millis(1));
        assert_eq!(r.slab_count(), grown);
        // Then back to its size, though the application still holds
        // datagrams of every slab; they are intact.
        r.trim(t + SHRINK_AFTER);
        assert_eq!(r.slab_count(), INITIAL_SLABS);
        assert_eq!(stats.rx_ring_bytes.get(), INITIAL_SLABS as u64 * slab);
        assert_eq!(
            stats.rx_buffer_released.get(),
            (grown - INITIAL_SLABS) as u64
        );
        check(&held, 0, 1200);
        // Dropping the datagrams frees the slabs let go of: only the ring's
        // own remain.
        drop(held);
        assert_eq!(
            weak.iter().filter(|w| w.strong_count() > 0).count(),
            INITIAL_SLABS
        );
        // (A weak reference would keep the ring from writing to a slab.)
        drop(weak);
        // And the ring receives into its own slabs again without growing.
        for round in 0..8 {
            let more = exchange(&mut r, &tx, 1000 + 16 * round, 16, 1200).await;
            check(&more, 1000 + 16 * round, 1200);
        }
        assert_eq!(r.slab_count(), INITIAL_SLABS);
        assert_eq!(stats.rx_buffer_growth.get(), (grown - INITIAL_SLABS) as u64);
    }

    // r[verify udp.recv.shrink]
    #[tokio::test]
    async fn a_quiet_socket_shrinks_the_ring_after_a_second() {
        let (mut r, tx, stats) = setup();
        let held = exchange(&mut r, &tx, 0, 16 * 6, 1200).await;
        assert!(r.slab_count() > INITIAL_SLABS);
        drop(held);
        // Nothing more arrives: the receiver, waiting, shrinks on its own.
        // (The datagram ends the wait; the shrink does not depend on it.)
        let wait = async {
            tokio::time::sleep(SHRINK_AFTER * 2).await;
            tx.send(&datagram(7, 1200)).unwrap();
        };
        let (got, ()) = tokio::join!(r.next(), wait);
        assert_eq!(got.unwrap().0.as_slice(), datagram(7, 1200));
        assert_eq!(r.slab_count(), INITIAL_SLABS);
        assert!(stats.rx_buffer_released.get() > 0);
    }

    // r[verify udp.recv.shrink]
    #[tokio::test]
    async fn small_datagrams_held_pin_no_slab() {
        let (mut r, tx, stats) = setup();
        // Loss-report-size datagrams, all held, over many batches: each is
        // a copy of its own and the ring never grows.
        let held = exchange(&mut r, &tx, 0, 16 * 12, 40).await;
        check(&held, 0, 40);
        let big = exchange(&mut r, &tx, 500, 16, COPY_AT_MOST).await;
        check(&big, 500, COPY_AT_MOST);
        assert_eq!(stats.rx_buffer_growth.get(), 0);
        assert_eq!(r.slab_count(), INITIAL_SLABS);
        // Every slab is free while they are held.
        assert!(r.slabs.iter().all(|s| Arc::strong_count(s) == 1));
        // A media-size datagram still shares its slab.
        let media = exchange(&mut r, &tx, 900, 1, COPY_AT_MOST + 1).await;
        check(&media, 900, COPY_AT_MOST + 1);
        assert_eq!(
            r.slabs.iter().filter(|s| Arc::strong_count(s) > 1).count(),
            1
        );
    }
}
