//! The send path: a ring of datagram buffers owned by the link, drained in
//! batches with `sendmmsg`, runs of equal-size datagrams as UDP GSO sends.

use std::io::{self, IoSlice};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

use link_types::{LinkCaps, LinkError, LinkTx, LinkTxPermit, MaybeSendFuture, WriteSlot};
use socket2::SockAddr;
use tokio::io::Interest;
use tokio::net::UdpSocket;

use crate::error::{UdpError, io};
use crate::peer::PeerQueue;
use crate::stats::Counters;
use crate::sys::{self, MAX_BATCH, MAX_GSO_BYTES, MAX_GSO_SEGMENTS, SendMsg};

/// Keeps an endpoint's receive task alive while any of its links exist.
pub(crate) type Guard = Option<Arc<dyn Send + Sync>>;

/// Most wakers a socket's `SendWaiters` keeps (see `register`).
const MAX_WAITERS: usize = 256;

/// The sending halves waiting for one socket to become writable.
///
/// tokio keeps a single waker per socket for `poll_send_ready`; the halves
/// of an endpoint share one socket, so each registers its own waker here
/// and the socket gets this one, which wakes them all.
#[derive(Default)]
pub(crate) struct SendWaiters {
    wakers: Mutex<Vec<Waker>>,
}

impl SendWaiters {
    /// Remember `waker` (once) until the socket becomes writable. The list
    /// is bounded: beyond `MAX_WAITERS` (waiters of tasks that went away,
    /// say) all are woken early, which costs them one more try.
    fn register(&self, waker: &Waker) {
        let mut wakers = self.wakers.lock().unwrap_or_else(PoisonError::into_inner);
        if wakers.iter().any(|w| w.will_wake(waker)) {
            return;
        }
        if wakers.len() >= MAX_WAITERS {
            for w in wakers.drain(..) {
                w.wake();
            }
        }
        wakers.push(waker.clone());
    }
}

impl Wake for SendWaiters {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let mut wakers = self.wakers.lock().unwrap_or_else(PoisonError::into_inner);
        for w in wakers.drain(..) {
            w.wake();
        }
    }
}

/// What one `sendmmsg` attempt came to.
enum Step {
    /// Datagrams went out, or were dropped and counted, or GSO was turned
    /// off: try again with what is left.
    Progress,
    /// The socket's send buffer is full: wait for writability.
    WouldBlock,
}

/// Datagrams a send ring holds at first (it grows to `send_ring`).
const INITIAL_SLOTS: usize = 4;

/// An endpoint peer's address validation, as its sending half sees it.
pub(crate) struct TxPeer {
    /// The peer's queue, which holds its validation state and byte counts.
    pub(crate) q: Arc<PeerQueue>,
    /// The amplification limit while unvalidated (`None`: none).
    pub(crate) factor: Option<u64>,
    /// Tells the endpoint the peer is validated.
    pub(crate) promote: Box<dyn Fn() + Send + Sync>,
}

// r[impl udp.send.ring]
/// The sending half of a UDP link.
///
/// `alloc` hands out a slot in the link's send ring (no allocation per
/// datagram); committed datagrams queue there and go out in batches on
/// `flush`, or when `reserve` finds the ring full.
pub struct UdpTx {
    socket: Arc<UdpSocket>,
    /// Every half sending on `socket` that waits for writability.
    waiters: Arc<SendWaiters>,
    /// The waker handed to the socket: wakes all of `waiters`.
    wake_all: Waker,
    dest: Option<SockAddr>,
    /// Datagram bytes, packed: each slot starts where the previous ended, so
    /// a run of equal-size datagrams is one contiguous region (one iovec).
    ring: Vec<u8>,
    /// Datagrams the ring may grow to (`send_ring`). It starts small and
    /// doubles when full until then, so that a link that sends a few
    /// datagrams (an endpoint's unvalidated peer) holds little memory.
    capacity: usize,
    /// Bytes of `ring` in use.
    fill: usize,
    /// Length of each queued datagram. Their offsets follow from the
    /// packing: each starts where the previous ended.
    lens: Vec<u32>,
    /// First queued datagram not yet sent.
    head: usize,
    /// Where datagram `head` starts in `ring`.
    head_off: usize,
    /// ECONNREFUSED errors in a row (stale ICMP) while draining: retried up
    /// to 3 times, then the datagram is dropped.
    refused_in_a_row: u32,
    /// Datagrams committed into the ring.
    queued: usize,
    gso: bool,
    caps: LinkCaps,
    stats: Arc<Counters>,
    error: Option<LinkError>,
    closed: bool,
    peer: Option<TxPeer>,
    _guard: Guard,
}

/// How a [`UdpTx`] is set up.
pub(crate) struct TxSetup {
    /// The socket to send from (shared by an endpoint's links).
    pub(crate) socket: Arc<UdpSocket>,
    /// The halves waiting for that socket to become writable (shared by
    /// an endpoint's links, like the socket).
    pub(crate) waiters: Arc<SendWaiters>,
    /// The peer, for an unconnected (endpoint) socket; `None` when the
    /// socket is connected.
    pub(crate) dest: Option<SockAddr>,
    /// Datagrams the send ring holds.
    pub(crate) ring: usize,
    /// Whether to try UDP GSO.
    pub(crate) gso: bool,
    /// The link's capabilities (its maximum payload sizes the ring).
    pub(crate) caps: LinkCaps,
    /// Where sends are counted.
    pub(crate) stats: Arc<Counters>,
    /// Keeps an endpoint's task alive while this half exists.
    pub(crate) guard: Guard,
    /// An endpoint peer's validation state (`None`: a connected socket,
    /// validated by construction).
    pub(crate) peer: Option<TxPeer>,
}

impl UdpTx {
    pub(crate) fn new(setup: TxSetup) -> Self {
        let TxSetup {
            socket,
            waiters,
            dest,
            ring,
            gso,
            caps,
            stats,
            guard,
            peer,
        } = setup;
        UdpTx {
            socket,
            wake_all: Waker::from(waiters.clone()),
            waiters,
            dest,
            ring: vec![0; ring.min(INITIAL_SLOTS) * caps.max_payload],
            capacity: ring,
            fill: 0,
            lens: vec![0; ring.min(INITIAL_SLOTS)],
            head: 0,
            head_off: 0,
            refused_in_a_row: 0,
            queued: 0,
            gso,
            caps,
            stats,
            error: None,
            closed: false,
            peer,
            _guard: guard,
        }
    }

    pub(crate) fn socket_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.socket.as_fd()
    }

    /// The local address this half sends from, as the kernel reports it now.
    pub fn local_addr(&self) -> Result<std::net::SocketAddr, UdpError> {
        self.socket.local_addr().map_err(io("local address"))
    }

    /// Whether GSO is (still) in use: false once the kernel refused it.
    pub fn gso_active(&self) -> bool {
        self.gso
    }

    // r[impl udp.send.gso]
    /// Build the next batch from `head`: up to `MAX_BATCH` messages, each a
    /// single datagram or a GSO run of equal-size datagrams (the last of a
    /// run may be shorter).
    fn plan<'a>(&'a self, iovs: &mut [IoSlice<'a>], msgs: &mut [SendMsg]) -> (usize, usize) {
        let (mut ni, mut nm) = (0, 0);
        let mut i = self.head;
        let mut start = self.head_off;
        while i < self.queued && nm < MAX_BATCH {
            let len = self.lens[i] as usize;
            let mut count = 1;
            if self.gso && len > 0 {
                let limit = MAX_GSO_SEGMENTS.min(MAX_GSO_BYTES / len);
                while count < limit
                    && i + count < self.queued
                    && self.lens[i + count] as usize == len
                {
                    count += 1;
                }
                if count < limit && i + count < self.queued {
                    let tail = self.lens[i + count] as usize;
                    if tail > 0 && tail < len {
                        count += 1;
                    }
                }
            }
            // The run is contiguous in the packed ring: one iovec. All but
            // its last datagram are `len` long.
            let bytes = len * (count - 1) + self.lens[i + count - 1] as usize;
            iovs[ni] = IoSlice::new(&self.ring[start..start + bytes]);
            ni += 1;
            msgs[nm] = SendMsg {
                iov_start: ni - 1,
                iov_count: 1,
                datagrams: count,
                bytes,
                segment: if count > 1 { len as u16 } else { 0 },
            };
            nm += 1;
            i += count;
            start += bytes;
        }
        (ni, nm)
    }

    // r[impl udp.send.batch]
    /// Send everything queued, waiting for the socket when its buffer is full.
    ///
    /// Each `sendmmsg` is tried first; only when the kernel says EAGAIN does
    /// it wait for writability (tokio readiness). Written as a poll function
    /// so that `reserve`, which calls it when the ring is full, is a small
    /// future that the compiler inlines into the caller's loop.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), LinkError>> {
        if let Some(e) = &self.error {
            return Poll::Ready(Err(e.clone()));
        }
        while self.head < self.queued {
            if let Step::WouldBlock = self.send_step()? {
                self.stats.tx_waits.add(1);
                self.waiters.register(cx.waker());
                let mut all = Context::from_waker(&self.wake_all);
                match self.socket.poll_send_ready(&mut all) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(self.fail(e))),
                    Poll::Ready(Ok(())) => {}
                }
            }
        }
        self.head = 0;
        self.head_off = 0;
        self.queued = 0;
        self.fill = 0;
        self.refused_in_a_row = 0;
        Poll::Ready(Ok(()))
    }

    // r[impl udp.send.gso-fallback]
    // r[impl udp.send.transient]
    /// One `sendmmsg` of the next batch from `head`, and what became of it.
    fn send_step(&mut self) -> Result<Step, LinkError> {
        let mut iovs = [IoSlice::new(&[]); MAX_BATCH];
        let mut msgs = [SendMsg {
            iov_start: 0,
            iov_count: 0,
            datagrams: 0,
            bytes: 0,
            segment: 0,
        }; MAX_BATCH];
        let (ni, nm) = self.plan(&mut iovs, &mut msgs);
        let fd = self.socket.as_raw_fd();
        let dest = self.dest.as_ref();
        let result = self.socket.try_io(Interest::WRITABLE, || {
            sys::send_batch(fd, dest, &iovs[..ni], &msgs[..nm])
        });
        match result {
            Ok(sent) => {
                self.refused_in_a_row = 0;
                let (mut datagrams, mut bytes, mut gso_sends) = (0, 0, 0);
                for m in &msgs[..sent] {
                    datagrams += m.datagrams;
                    bytes += m.bytes;
                    gso_sends += usize::from(m.segment > 0);
                }
                self.stats.tx_datagrams.add(datagrams as u64);
                self.stats.tx_bytes.add(bytes as u64);
                self.stats.tx_syscalls.add(1);
                self.stats.tx_messages.add(sent as u64);
                self.stats.tx_gso_sends.add(gso_sends as u64);
                self.head += datagrams;
                self.head_off += bytes;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Step::WouldBlock),
            Err(e) => {
                let errno = e.raw_os_error().unwrap_or(0);
                let gso_refused = matches!(
                    errno,
                    libc::EIO
                        | libc::EINVAL
                        | libc::ENOPROTOOPT
                        | libc::EMSGSIZE
                        | libc::EOPNOTSUPP
                );
                if msgs[0].segment > 0 && gso_refused {
                    tracing::warn!(error = %e, "kernel refused UDP GSO; falling back to plain sendmmsg");
                    self.stats.tx_gso_fallbacks.add(1);
                    self.gso = false;
                } else if errno == libc::ECONNREFUSED && self.refused_in_a_row < 3 {
                    // A stale ICMP port-unreachable surfaced here; the
                    // datagrams were not sent. Try again.
                    self.stats.tx_transient_errors.add(1);
                    self.refused_in_a_row += 1;
                } else if matches!(
                    errno,
                    libc::ENOBUFS
                        | libc::ECONNREFUSED
                        | libc::EMSGSIZE
                        | libc::EPERM
                        | libc::ENETUNREACH
                        | libc::EHOSTUNREACH
                        | libc::ENETDOWN
                        | libc::EHOSTDOWN
                ) {
                    // The kernel would not take this datagram: drop it,
                    // counted, and carry on with the rest. No route (an
                    // interface down, a path gone) is transient too: the
                    // path may come back, and the session resumes.
                    if !matches!(errno, libc::EMSGSIZE | libc::EPERM) {
                        self.stats.tx_transient_errors.add(1);
                    }
                    self.stats.tx_dropped.add(1);
                    self.head_off += self.lens[self.head] as usize;
                    self.head += 1;
                    self.refused_in_a_row = 0;
                } else {
                    return Err(self.fail(e));
                }
            }
        }
        Ok(Step::Progress)
    }

    /// Whether a permit can take a datagram of the maximum payload now.
    #[inline]
    fn has_room(&self) -> bool {
        self.queued < self.lens.len() && self.fill + self.caps.max_payload <= self.ring.len()
    }

    /// Ready when a permit may be handed out: at once on a live link whose
    /// ring has room (the per-datagram case, inlined), else the slow path.
    #[inline]
    fn poll_room(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), LinkError>> {
        if self.has_room() && !self.closed && self.error.is_none() {
            Poll::Ready(Ok(()))
        } else {
            self.poll_room_slow(cx)
        }
    }

    /// `reserve` on a closed or failed link, or with the ring full.
    #[inline(never)]
    fn poll_room_slow(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), LinkError>> {
        if self.closed {
            return Poll::Ready(Err(LinkError::Closed));
        }
        if let Some(e) = &self.error {
            return Poll::Ready(Err(e.clone()));
        }
        if !self.has_room() {
            if self.lens.len() < self.capacity {
                // Not yet at its configured size: grow (once per doubling
                // in the link's life), keep queueing.
                let slots = (self.lens.len() * 2).min(self.capacity);
                self.ring.resize(slots * self.caps.max_payload, 0);
                self.lens.resize(slots, 0);
            } else {
                // The ring is full: this is the reserve that would wait, so
                // it transmits what is queued first.
                return self.poll_drain(cx);
            }
        }
        Poll::Ready(Ok(()))
    }

    fn fail(&mut self, e: io::Error) -> LinkError {
        let e = LinkError::from(e);
        tracing::warn!(error = %e, "UDP link failed");
        self.error = Some(e.clone());
        e
    }
}

impl LinkTx for UdpTx {
    type Permit<'a> = UdpPermit<'a>;

    fn caps(&self) -> LinkCaps {
        self.caps
    }

    // r[impl link.reserve.permit-holds]
    // r[impl link.reserve.cancel]
    fn reserve(&mut self) -> impl MaybeSendFuture<Output = Result<UdpPermit<'_>, LinkError>> {
        // A poll function over the half itself: the future is one pointer,
        // and the common case (room in the ring) is a few compares inlined
        // into the caller. Dropping it while it waits for writability
        // leaves the ring as it was: what was sent is gone from it, the
        // rest stays queued.
        let mut tx = Some(self);
        std::future::poll_fn(move |cx| {
            // Polled again after it completed (a caller's bug): an error,
            // not a panic.
            let Some(t) = tx.as_mut() else {
                return Poll::Ready(Err(LinkError::Closed));
            };
            match t.poll_room(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
            match tx.take() {
                Some(tx) => Poll::Ready(Ok(UdpPermit { tx })),
                None => Poll::Ready(Err(LinkError::Closed)),
            }
        })
    }

    // r[impl link.flush]
    async fn flush(&mut self) -> Result<(), LinkError> {
        std::future::poll_fn(|cx| self.poll_drain(cx)).await
    }

    // r[impl link.close.send-after]
    async fn close(&mut self) -> Result<(), LinkError> {
        if self.closed {
            return Ok(());
        }
        self.closed = true;
        std::future::poll_fn(|cx| self.poll_drain(cx)).await
    }

    // r[impl udp.endpoint.validation]
    fn mark_validated(&self) {
        if let Some(p) = &self.peer {
            (p.promote)();
        }
    }
}

/// A free entry of the send ring, held for one datagram.
pub struct UdpPermit<'a> {
    tx: &'a mut UdpTx,
}

impl<'a> LinkTxPermit for UdpPermit<'a> {
    type Slot = UdpSlot<'a>;

    // r[impl link.alloc.limit]
    // r[impl link.slot.len]
    // r[impl udp.datagram.max]
    // r[impl link.message.empty]
    // r[impl link.message.max]
    #[inline]
    fn alloc(self, len: usize) -> Result<UdpSlot<'a>, LinkError> {
        let max = self.tx.caps.max_payload;
        if len > max {
            return Err(LinkError::TooLarge { len, max });
        }
        Ok(UdpSlot { tx: self.tx, len })
    }
}

// r[impl link.slot.discard]
/// A datagram being written, in the link's send ring. Dropping it without
/// committing leaves the ring's count unchanged: the entry is reused.
pub struct UdpSlot<'a> {
    tx: &'a mut UdpTx,
    len: usize,
}

impl WriteSlot for UdpSlot<'_> {
    #[inline]
    fn as_mut_slice(&mut self) -> &mut [u8] {
        let start = self.tx.fill;
        &mut self.tx.ring[start..start + self.len]
    }

    // r[impl link.slot.commit]
    // r[impl link.message.boundaries]
    // r[impl udp.datagram.model]
    #[inline]
    fn commit(self) -> Result<(), LinkError> {
        let tx = self.tx;
        if let Some(p) = &tx.peer
            && !p.q.is_validated()
        {
            if let Some(f) = p.factor
                && !p.q.may_send(self.len, f)
            {
                // Over the amplification limit: dropped like a lost
                // datagram, counted.
                tx.stats.tx_amplification_held.add(1);
                return Ok(());
            }
            tx.stats.unvalidated_tx_bytes.add(self.len as u64);
        }
        tx.lens[tx.queued] = self.len as u32;
        tx.fill += self.len;
        tx.queued += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::OwnedFd;
    use std::os::unix::net::UnixDatagram;
    use std::time::Duration;

    use super::*;

    /// A sending half on `socket` (connected), waiting through `waiters`.
    fn half(socket: &Arc<UdpSocket>, waiters: &Arc<SendWaiters>, stats: &Arc<Counters>) -> UdpTx {
        UdpTx::new(TxSetup {
            socket: socket.clone(),
            waiters: waiters.clone(),
            dest: None,
            ring: 64,
            gso: false,
            caps: LinkCaps::datagram(1000),
            stats: stats.clone(),
            guard: None,
            peer: None,
        })
    }

    async fn send(tx: &mut UdpTx, n: usize, mark: u8) {
        for _ in 0..n {
            let mut slot = tx.reserve().await.unwrap().alloc(1000).unwrap();
            slot.as_mut_slice()[0] = mark;
            slot.commit().unwrap();
        }
        tx.flush().await.unwrap();
    }

    // r[verify udp.send.batch]
    /// Two halves sharing one socket (as an endpoint's links do) both find
    /// its buffer full and wait; when it drains, both are woken and finish,
    /// and nothing was dropped. The socket is one end of a Unix datagram
    /// pair (a full peer queue gives EAGAIN, which loopback UDP never does);
    /// the link's code sees an ordinary non-blocking socket.
    #[tokio::test(flavor = "current_thread")]
    async fn halves_sharing_a_socket_all_wake_when_it_drains() {
        let (ours, theirs) = UnixDatagram::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let socket = Arc::new(UdpSocket::from_std(OwnedFd::from(ours).into()).unwrap());
        let waiters = Arc::new(SendWaiters::default());
        let stats = Arc::new(Counters::default());
        let (mut a, mut b) = (
            half(&socket, &waiters, &stats),
            half(&socket, &waiters, &stats),
        );
        const EACH: usize = 2_000;
        // The reader starts late, so that both halves find the queue full.
        let reader = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            theirs
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let (mut got, mut buf) = ([0usize; 2], [0u8; 2000]);
            while got[0] + got[1] < 2 * EACH {
                let n = theirs.recv(&mut buf).expect("a datagram within 5 s");
                assert_eq!(n, 1000);
                got[usize::from(buf[0] == b'b')] += 1;
            }
            got
        });
        let ta = tokio::spawn(async move { send(&mut a, EACH, b'a').await });
        let tb = tokio::spawn(async move { send(&mut b, EACH, b'b').await });
        // A half that is never woken hangs here: the bound only turns that
        // hang into a failure (the run takes well under a second).
        tokio::time::timeout(Duration::from_secs(30), async {
            ta.await.unwrap();
            tb.await.unwrap();
        })
        .await
        .expect("both halves finished: neither was left waiting");
        assert_eq!(reader.join().unwrap(), [EACH, EACH]);
        let s = stats.snapshot();
        assert_eq!(s.tx_datagrams, 2 * EACH as u64);
        assert_eq!(s.tx_dropped, 0);
        assert!(s.tx_waits >= 2, "both halves should have waited: {s:?}");
    }

    /// The shared waker wakes every registered waker once, a waker
    /// registered twice is kept once, and the list stays bounded.
    #[test]
    fn send_waiters_wake_each_registered_waker_once() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        struct Count(AtomicUsize);
        impl Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let (c1, c2) = (
            Arc::new(Count(AtomicUsize::new(0))),
            Arc::new(Count(AtomicUsize::new(0))),
        );
        let (w1, w2) = (Waker::from(c1.clone()), Waker::from(c2.clone()));
        let waiters = Arc::new(SendWaiters::default());
        waiters.register(&w1);
        waiters.register(&w1);
        waiters.register(&w2);
        Waker::from(waiters.clone()).wake_by_ref();
        assert_eq!(c1.0.load(Ordering::SeqCst), 1);
        assert_eq!(c2.0.load(Ordering::SeqCst), 1);
        // Woken wakers are forgotten: a second wake reaches nobody.
        Waker::from(waiters.clone()).wake_by_ref();
        assert_eq!(c1.0.load(Ordering::SeqCst), 1);
        // The list is bounded: one more than it keeps wakes all it held.
        let many: Vec<_> = (0..=MAX_WAITERS)
            .map(|_| Arc::new(Count(AtomicUsize::new(0))))
            .collect();
        for c in &many {
            waiters.register(&Waker::from(c.clone()));
        }
        let woken =
            |cs: &[Arc<Count>]| cs.iter().map(|c| c.0.load(Ordering::SeqCst)).sum::<usize>();
        assert_eq!(woken(&many[..MAX_WAITERS]), MAX_WAITERS);
        assert_eq!(woken(&many[MAX_WAITERS..]), 0);
        assert_eq!(waiters.wakers.lock().unwrap().len(), 1);
        Waker::from(waiters).wake();
        assert_eq!(woken(&many[MAX_WAITERS..]), 1);
    }
}
