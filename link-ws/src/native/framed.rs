//! The framing layer (tungstenite's `WebSocket`, which reads and writes
//! through `std::io::Read + Write`) driven from `poll` functions over the
//! non-blocking stream.
//!
//! tokio-tungstenite does the same for any stream, but registers the
//! task's waker with two `AtomicWaker`s on every call (four atomic
//! read-modify-writes per received message). Here both halves of a link
//! call in under the link's lock, so a half's waker is handed over only
//! when it changes, and the socket always sees one waker, made once, that
//! wakes both halves (either may be waiting on progress the other's I/O
//! makes: a reply to a ping is written while reading, a close is read while
//! flushing).

use std::future::poll_fn;
use std::io::{self, Read, Write};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::handshake::{HandshakeError, HandshakeRole, MidHandshake};
use tokio_tungstenite::tungstenite::{Error as TError, Message, WebSocket};

use super::stream::Spare;

/// Which half of a link is calling, so that its waker is the one kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Half {
    Rx,
    Tx,
}

/// The wakers of the two halves, woken together by any readiness of the
/// socket. A slot keeps its waker after waking it (a spurious wake of a
/// half that is not waiting only polls it once more).
#[derive(Default)]
struct Wakers {
    rx: Mutex<Option<Waker>>,
    tx: Mutex<Option<Waker>>,
}

impl Wakers {
    fn slot(&self, half: Half) -> &Mutex<Option<Waker>> {
        match half {
            Half::Rx => &self.rx,
            Half::Tx => &self.tx,
        }
    }
}

impl Wake for Wakers {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // Cloned out so that no lock is held while a task is woken.
        let take = |half| {
            self.slot(half)
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
        };
        match (take(Half::Rx), take(Half::Tx)) {
            // Both halves in one task: wake it once.
            (Some(rx), Some(tx)) if rx.will_wake(&tx) => rx.wake(),
            (rx, tx) => {
                rx.into_iter().chain(tx).for_each(Waker::wake);
            }
        }
    }
}

/// The stream as the framing layer sees it: blocking-style `Read + Write`
/// that answers `WouldBlock` where the socket is not ready (the socket
/// then wakes both halves once it is).
pub(crate) struct Sock {
    stream: Spare,
    wakers: Arc<Wakers>,
    /// `Waker` over `wakers`, made once: what the socket is given.
    both: Waker,
    /// The waker each half last handed over (what its slot holds), to
    /// tell whether a call brings a new one.
    seen: [Option<Waker>; 2],
}

impl Sock {
    pub(crate) fn new(stream: Spare) -> Sock {
        let wakers = Arc::new(Wakers::default());
        Sock {
            stream,
            both: Waker::from(wakers.clone()),
            wakers,
            seen: [None, None],
        }
    }

    /// The stream under the framing layer.
    pub(crate) fn stream(&self) -> &Spare {
        &self.stream
    }

    /// The stream under the framing layer.
    pub(crate) fn stream_mut(&mut self) -> &mut Spare {
        &mut self.stream
    }

    /// Make `waker` the one woken for `half` (a comparison when it is the
    /// same as last time, which is the rule).
    #[inline]
    fn register(&mut self, half: Half, waker: &Waker) {
        let seen = &mut self.seen[half as usize];
        if seen.as_ref().is_some_and(|s| s.will_wake(waker)) {
            return;
        }
        *seen = Some(waker.clone());
        *self
            .wakers
            .slot(half)
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(waker.clone());
    }

    /// Drop the wakers handed over so far (the handshake's task).
    fn forget_wakers(&mut self) {
        for half in [Half::Rx, Half::Tx] {
            self.seen[half as usize] = None;
            *self
                .wakers
                .slot(half)
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = None;
        }
    }

    fn ready<T>(p: Poll<io::Result<T>>) -> io::Result<T> {
        match p {
            Poll::Ready(r) => r,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl Read for Sock {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut cx = Context::from_waker(&self.both);
        let mut buf = ReadBuf::new(buf);
        Self::ready(Pin::new(&mut self.stream).poll_read(&mut cx, &mut buf))?;
        Ok(buf.filled().len())
    }
}

impl Write for Sock {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut cx = Context::from_waker(&self.both);
        Self::ready(Pin::new(&mut self.stream).poll_write(&mut cx, buf))
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        let mut cx = Context::from_waker(&self.both);
        Self::ready(Pin::new(&mut self.stream).poll_write_vectored(&mut cx, bufs))
    }

    fn flush(&mut self) -> io::Result<()> {
        let mut cx = Context::from_waker(&self.both);
        Self::ready(Pin::new(&mut self.stream).poll_flush(&mut cx))
    }
}

/// Run a handshake of the framing layer to its end, waiting for the socket
/// between its rounds.
pub(crate) async fn handshake<R>(mid: MidHandshake<R>) -> Result<R::FinalResult, TError>
where
    R: HandshakeRole<InternalStream = Sock>,
{
    let mut mid = Some(mid);
    poll_fn(|cx| {
        let Some(mut m) = mid.take() else {
            // Not reached: the future is not polled after it completed.
            return Poll::Ready(Err(TError::AlreadyClosed));
        };
        m.get_mut().get_mut().register(Half::Rx, cx.waker());
        match m.handshake() {
            Ok(done) => Poll::Ready(Ok(done)),
            Err(HandshakeError::Interrupted(m)) => {
                mid = Some(m);
                Poll::Pending
            }
            Err(HandshakeError::Failure(e)) => Poll::Ready(Err(e)),
        }
    })
    .await
}

/// The framing layer over the socket, with `poll` functions in the shape
/// of `Stream` and `Sink` (what tokio-tungstenite offers, without its
/// per-call waker registration).
pub(crate) struct Framed {
    ws: WebSocket<Sock>,
    /// False after a write left frames the socket did not take.
    ready: bool,
    /// The connection ended (a normal close or an error was returned).
    ended: bool,
    /// Whether incoming frames carry a mask (a server's do), for the
    /// estimate of their size on the wire.
    masked: bool,
}

/// The size of a single frame carrying `len` payload bytes, with the mask
/// when `masked` (a fragmented message is counted as one frame: an
/// estimate).
#[inline]
fn wire_len(len: usize, masked: bool) -> usize {
    let ext = if len >= 1 << 16 {
        8
    } else if len >= 126 {
        2
    } else {
        0
    };
    2 + ext + if masked { 4 } else { 0 } + len
}

impl Framed {
    /// After a handshake: forget its task's waker. `masked`: incoming
    /// frames are masked (this is the server side).
    pub(crate) fn new(mut ws: WebSocket<Sock>, masked: bool) -> Framed {
        ws.get_mut().forget_wakers();
        Framed {
            ws,
            ready: true,
            ended: false,
            masked,
        }
    }

    pub(crate) fn sock(&self) -> &Sock {
        self.ws.get_ref()
    }

    pub(crate) fn sock_mut(&mut self) -> &mut Sock {
        self.ws.get_mut()
    }

    /// Make `cx`'s waker the receiving half's; call once before a run of
    /// [`Framed::read`].
    #[inline]
    pub(crate) fn register_rx(&mut self, cx: &Context<'_>) {
        self.ws.get_mut().register(Half::Rx, cx.waker());
    }

    /// The next message: `None` once the connection ended normally (after
    /// which it stays `None`), `Pending` until the socket has more. Call
    /// [`Framed::register_rx`] first.
    #[inline]
    pub(crate) fn read(&mut self) -> Poll<Option<Result<Message, TError>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        match self.ws.read() {
            Ok(m) => {
                let len = match &m {
                    Message::Binary(b) | Message::Ping(b) | Message::Pong(b) => b.len(),
                    Message::Text(t) => t.len(),
                    Message::Close(Some(f)) => 2 + f.reason.len(),
                    Message::Close(None) | Message::Frame(_) => 0,
                };
                let n = wire_len(len, self.masked);
                self.ws.get_mut().stream_mut().parsed(n);
                Poll::Ready(Some(Ok(m)))
            }
            Err(TError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => Poll::Pending,
            Err(TError::ConnectionClosed | TError::AlreadyClosed) => {
                self.ended = true;
                Poll::Ready(None)
            }
            Err(e) => {
                self.ended = true;
                Poll::Ready(Some(Err(e)))
            }
        }
    }

    /// The payload bytes of the messages the framing layer holds already
    /// read (those after the last one returned), taken and dropped without
    /// reading the socket again; for counting what a dropped receiver
    /// discards. At most `limit` messages are taken.
    pub(crate) fn discard_buffered(&mut self, limit: usize) -> u64 {
        self.ws.get_mut().stream_mut().hold_reads();
        let mut bytes = 0u64;
        for _ in 0..limit {
            match self.read() {
                Poll::Ready(Some(Ok(Message::Binary(b)))) => bytes += b.len() as u64,
                Poll::Ready(Some(Ok(Message::Text(t)))) => bytes += t.len() as u64,
                Poll::Ready(Some(Ok(_))) => {}
                Poll::Ready(_) | Poll::Pending => break,
            }
        }
        bytes
    }

    /// Hand one message to the framing layer (buffered; written out when
    /// its buffer fills, without waiting).
    pub(crate) fn start_send(&mut self, m: Message) -> Result<(), TError> {
        match self.ws.write(m) {
            Ok(()) => {
                self.ready = true;
                Ok(())
            }
            // Taken and buffered; the socket is full for now.
            Err(TError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                self.ready = false;
                Ok(())
            }
            Err(e) => {
                self.ready = true;
                Err(e)
            }
        }
    }

    /// Ready once the socket took what an earlier write left over.
    pub(crate) fn poll_ready(&mut self, cx: &Context<'_>) -> Poll<Result<(), TError>> {
        if self.ready {
            return Poll::Ready(Ok(()));
        }
        self.ws.get_mut().register(Half::Tx, cx.waker());
        match self.ws.flush() {
            Err(TError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => Poll::Pending,
            r => {
                self.ready = true;
                Poll::Ready(r)
            }
        }
    }

    /// Write out everything buffered; `half` is the caller.
    pub(crate) fn poll_flush(&mut self, half: Half, cx: &Context<'_>) -> Poll<Result<(), TError>> {
        self.ws.get_mut().register(half, cx.waker());
        match self.ws.flush() {
            Err(TError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => Poll::Pending,
            r => {
                self.ready = true;
                Poll::Ready(match r {
                    // The close handshake just finished: flushed.
                    Err(TError::ConnectionClosed) => Ok(()),
                    other => other,
                })
            }
        }
    }
}
