//! The native WebSocket link: one binary WebSocket message per link message.

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::BytesMut;
use link_types::{
    Backing, Link, LinkCaps, LinkError, LinkRx, LinkTx, LinkTxPermit, MaybeSendFuture, PathSample,
    WriteSlot,
};
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as TError, Message};

use super::framed::{Framed, Half};
use super::stream::SPARE;
use crate::close;
use crate::stats::{Counters, WsStatsHandle};
use crate::{WsConfig, WsMessage};

/// What both halves share: the framed connection behind one lock, held only
/// inside a single `poll` (never across an `.await`).
struct Conn {
    io: Mutex<Io>,
    /// Set together with `Io::ended`, so that `reserve` can see the end
    /// without taking the lock.
    ended: AtomicBool,
    write_buffer: usize,
    counters: Arc<Counters>,
    caps: LinkCaps,
    queue: usize,
    accept_text: bool,
}

struct Io {
    ws: Framed,
    counters: Arc<Counters>,
    /// Once the connection is over, what the sending half reports.
    ended: Option<LinkError>,
}

impl Conn {
    fn lock(&self) -> MutexGuard<'_, Io> {
        // A panic while holding the lock cannot leave `Io` half-updated in a
        // way that matters more than the panic itself; keep going.
        self.io.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A WebSocket connection as a reliable, ordered [`Link`].
///
/// Made by [`WsLink::connect`] (client) or [`crate::WsServer::accept`]
/// (server). Each link message is one binary WebSocket message.
pub struct WsLink {
    tx: WsTx,
    rx: WsRx,
}

impl std::fmt::Debug for WsLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsLink")
            .field("caps", &self.tx.conn.caps)
            .finish_non_exhaustive()
    }
}

impl WsLink {
    pub(crate) fn new(mut ws: Framed, config: &WsConfig) -> WsLink {
        // The handshake's reads say nothing about the framing layer's buffer.
        ws.sock_mut().stream_mut().forget_room();
        let counters = Arc::new(Counters::default());
        let conn = Arc::new(Conn {
            io: Mutex::new(Io {
                ws,
                counters: counters.clone(),
                ended: None,
            }),
            ended: AtomicBool::new(false),
            write_buffer: config.write_buffer,
            counters,
            caps: LinkCaps::reliable_ordered(config.max_payload),
            queue: config.queue,
            accept_text: config.accept_text,
        });
        WsLink {
            tx: WsTx {
                conn: conn.clone(),
                out: Outbox {
                    pending: Vec::with_capacity(BATCH),
                    pending_bytes: 0,
                    queued: 0,
                    unchecked: 0,
                    error: None,
                },
                staging: BytesMut::new(),
                closed: false,
            },
            rx: WsRx {
                conn,
                ready: VecDeque::with_capacity(RX_BATCH),
                end: None,
            },
        }
    }

    /// The link's counters.
    pub fn stats(&self) -> WsStatsHandle {
        WsStatsHandle(self.tx.conn.counters.clone())
    }
}

impl Link for WsLink {
    type Tx = WsTx;
    type Rx = WsRx;

    fn caps(&self) -> LinkCaps {
        self.tx.conn.caps
    }

    fn split(self) -> (WsTx, WsRx) {
        (self.tx, self.rx)
    }
}

/// How a failed write is reported to the sending half.
fn tx_error(io: &Io, e: TError) -> LinkError {
    match e {
        TError::ConnectionClosed
        | TError::AlreadyClosed
        | TError::Protocol(ProtocolError::SendAfterClosing) => {
            io.ended.clone().unwrap_or(LinkError::PeerGone)
        }
        TError::Io(e) => io_error(e),
        TError::Capacity(e) => LinkError::protocol(e.to_string()),
        other => LinkError::transport(other),
    }
}

fn io_error(e: io::Error) -> LinkError {
    use io::ErrorKind::*;
    match e.kind() {
        BrokenPipe | ConnectionReset | ConnectionAborted | UnexpectedEof | NotConnected => {
            LinkError::PeerGone
        }
        _ => LinkError::Io(Arc::new(e)),
    }
}

/// Queue a close frame and push it out as far as the socket takes it now;
/// `half` is the caller.
fn send_close(io: &mut Io, half: Half, code: u16, reason: &'static str, cx: &mut Context<'_>) {
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    };
    if io.ws.start_send(Message::Close(Some(frame))).is_ok() {
        let _ = io.ws.poll_flush(half, cx);
    }
}

/// The sending half's own state: committed messages not yet handed to the
/// framing layer (handed over in batches, one lock for many messages), what
/// is outstanding since the last flush, and the sticky error.
struct Outbox {
    pending: Vec<Message>,
    pending_bytes: usize,
    /// Messages handed to the framing layer since the last flush.
    queued: usize,
    /// Bytes handed over since the framing layer last said it was ready.
    unchecked: usize,
    error: Option<LinkError>,
}

impl Outbox {
    /// Hand gathered messages to the framing layer (which buffers them; it
    /// writes to the socket only when its buffer is full, without waiting).
    fn hand_over(&mut self, io: &mut Io) -> Result<(), LinkError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        if self.pending.is_empty() {
            return Ok(());
        }
        if let Some(e) = &io.ended {
            // The connection is over: these messages cannot go out.
            self.pending.clear();
            self.pending_bytes = 0;
            self.error = Some(e.clone());
            return Err(e.clone());
        }
        self.queued += self.pending.len();
        self.unchecked += self.pending_bytes;
        // Counted here, once per batch: every message in it was committed.
        io.counters.tx_messages.bump(self.pending.len() as u64);
        io.counters.tx_bytes.bump(self.pending_bytes as u64);
        self.pending_bytes = 0;
        for m in self.pending.drain(..) {
            if let Err(e) = io.ws.start_send(m) {
                return Err(fail(&mut self.error, io, e));
            }
        }
        Ok(())
    }
}

/// Record a write failure as the sending half's sticky error.
fn fail(slot: &mut Option<LinkError>, io: &Io, e: TError) -> LinkError {
    let e = tx_error(io, e);
    *slot = Some(e.clone());
    e
}

/// The sending half of a [`WsLink`].
pub struct WsTx {
    conn: Arc<Conn>,
    out: Outbox,
    closed: bool,
    /// Memory that small slots are cut from, so that a small message costs
    /// no allocation of its own; the chunk is freed once the framing layer
    /// has written out every message cut from it.
    staging: BytesMut,
}

/// Committed messages gathered before one hand-over to the framing layer.
const BATCH: usize = 32;
/// Slots up to this size are cut from the staging chunk.
const SMALL: usize = 4 << 10;
/// Size of a staging chunk.
const CHUNK: usize = 64 << 10;

impl std::fmt::Debug for WsTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsTx")
            .field("queued", &self.out.queued)
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

impl WsTx {
    /// The link's counters.
    pub fn stats(&self) -> WsStatsHandle {
        WsStatsHandle(self.conn.counters.clone())
    }

    // r[impl ws.backpressure.native]
    // r[impl link.reserve.backpressure]
    // r[impl link.reserve.cancel]
    // r[impl link.flush]
    /// Ready once one more message may be written without waiting: fewer
    /// than `queue` messages are waiting for a flush and the framing layer's
    /// write buffer has drained below its limit.
    #[inline]
    fn poll_reserve(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), LinkError>> {
        if self.closed {
            return Poll::Ready(Err(LinkError::Closed));
        }
        if let Some(e) = &self.out.error {
            return Poll::Ready(Err(e.clone()));
        }
        // Fast path, no lock: fewer than `queue` messages and less than one
        // write buffer's worth of bytes went in since the framing layer was
        // last ready, so it cannot have run into a full socket since.
        if self.out.queued + self.out.pending.len() < self.conn.queue
            && self.out.unchecked + self.out.pending_bytes < self.conn.write_buffer
            && !self.conn.ended.load(Ordering::Acquire)
        {
            return Poll::Ready(Ok(()));
        }
        self.poll_reserve_slow(cx)
    }

    #[inline(never)]
    fn poll_reserve_slow(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), LinkError>> {
        // Field borrows only (no method calls on `self`) while locked.
        let mut io = self.conn.lock();
        if let Err(e) = self.out.hand_over(&mut io) {
            return Poll::Ready(Err(e));
        }
        if let Some(e) = &io.ended {
            let e = e.clone();
            self.out.error = Some(e.clone());
            return Poll::Ready(Err(e));
        }
        if self.out.queued >= self.conn.queue {
            match io.ws.poll_flush(Half::Tx, cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(())) => self.out.queued = 0,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(fail(&mut self.out.error, &io, e))),
            }
        }
        match io.ws.poll_ready(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(())) => {
                self.out.unchecked = 0;
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(fail(&mut self.out.error, &io, e))),
        }
    }

    /// Commit one message: gather it, and hand the batch to the framing
    /// layer once it is full (never waits).
    #[inline]
    fn write(&mut self, msg: Message, len: usize) -> Result<(), LinkError> {
        if let Some(e) = &self.out.error {
            return Err(e.clone());
        }
        self.out.pending.push(msg);
        self.out.pending_bytes += len;
        if self.out.pending.len() >= BATCH
            || self.out.pending_bytes >= self.conn.write_buffer
            || self.conn.ended.load(Ordering::Acquire)
        {
            self.hand_over()?;
        }
        Ok(())
    }

    /// Hand every gathered message to the framing layer.
    #[inline(never)]
    fn hand_over(&mut self) -> Result<(), LinkError> {
        let mut io = self.conn.lock();
        self.out.hand_over(&mut io)
    }

    /// Send one text message (for peers that speak text, such as test
    /// harnesses); waits like `reserve`.
    pub async fn send_text(&mut self, text: &str) -> Result<(), LinkError> {
        if text.len() > self.conn.caps.max_payload {
            return Err(LinkError::TooLarge {
                len: text.len(),
                max: self.conn.caps.max_payload,
            });
        }
        poll_fn(|cx| self.poll_reserve(cx)).await?;
        self.write(Message::text(text), text.len())
    }
}

impl LinkTx for WsTx {
    type Permit<'a> = WsPermit<'a>;

    fn caps(&self) -> LinkCaps {
        self.conn.caps
    }

    // r[impl link.path.optional]
    // r[impl ws.path.tcp]
    /// The kernel's counters of the TCP connection (`TCP_INFO`), with the
    /// messages this half gathered and not yet handed to the framing layer
    /// counted as unsent. `None` off Linux or when the kernel does not
    /// answer.
    fn path_sample(&self) -> Option<PathSample> {
        let io = self.conn.lock();
        let counters = super::tcp_info::read(io.ws.sock().stream().tcp())?;
        drop(io);
        Some(counters.sample(self.out.pending_bytes as u64))
    }

    #[inline]
    fn reserve(&mut self) -> impl MaybeSendFuture<Output = Result<WsPermit<'_>, LinkError>> {
        async move {
            let mut waited = false;
            poll_fn(|cx| {
                let r = self.poll_reserve(cx);
                if r.is_pending() && !waited {
                    waited = true;
                    self.conn.counters.reserve_waits.bump(1);
                }
                r
            })
            .await?;
            Ok(WsPermit { tx: self })
        }
    }

    fn flush(&mut self) -> impl MaybeSendFuture<Output = Result<(), LinkError>> {
        poll_fn(|cx| {
            if self.closed {
                return Poll::Ready(Ok(()));
            }
            if let Some(e) = &self.out.error {
                return Poll::Ready(Err(e.clone()));
            }
            let mut io = self.conn.lock();
            if let Err(e) = self.out.hand_over(&mut io) {
                return Poll::Ready(Err(e));
            }
            match io.ws.poll_flush(Half::Tx, cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Ok(())) => {
                    self.out.queued = 0;
                    Poll::Ready(Ok(()))
                }
                Poll::Ready(Err(e)) => Poll::Ready(Err(fail(&mut self.out.error, &io, e))),
            }
        })
    }

    // r[impl link.close.send-after]
    // r[impl ws.close.eof]
    fn close(&mut self) -> impl MaybeSendFuture<Output = Result<(), LinkError>> {
        let mut sent = false;
        poll_fn(move |cx| {
            if self.closed {
                return Poll::Ready(Ok(()));
            }
            if let Some(e) = &self.out.error {
                let e = e.clone();
                self.closed = true;
                return Poll::Ready(Err(e));
            }
            let conn = self.conn.clone();
            let mut io = conn.lock();
            if !sent {
                sent = true;
                // Everything committed goes out before the close frame.
                if let Err(e) = self.out.hand_over(&mut io) {
                    self.closed = true;
                    return Poll::Ready(Err(e));
                }
                let frame = CloseFrame {
                    code: CloseCode::Normal,
                    reason: "".into(),
                };
                match io.ws.start_send(Message::Close(Some(frame))) {
                    Ok(()) => {}
                    // The peer closed first: its close was answered already.
                    Err(TError::Protocol(ProtocolError::SendAfterClosing))
                    | Err(TError::ConnectionClosed)
                    | Err(TError::AlreadyClosed) => {}
                    Err(TError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => {
                        let e = tx_error(&io, e);
                        self.closed = true;
                        return Poll::Ready(Err(e));
                    }
                }
            }
            match io.ws.poll_flush(Half::Tx, cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(r) => {
                    self.closed = true;
                    match r {
                        Ok(())
                        | Err(TError::ConnectionClosed)
                        | Err(TError::AlreadyClosed)
                        | Err(TError::Protocol(ProtocolError::SendAfterClosing)) => {
                            Poll::Ready(Ok(()))
                        }
                        Err(e) => Poll::Ready(Err(tx_error(&io, e))),
                    }
                }
            }
        })
    }
}

// r[impl ws.drop]
// r[impl link.drop.abrupt]
impl Drop for WsTx {
    fn drop(&mut self) {
        if self.closed || self.out.error.is_some() {
            return;
        }
        let conn = self.conn.clone();
        let mut io = conn.lock();
        if io.ended.is_none() {
            // The messages committed before go out ahead of the close frame.
            let _ = self.out.hand_over(&mut io);
            let waker = futures::task::noop_waker();
            send_close(
                &mut io,
                Half::Tx,
                close::GOING_AWAY,
                "sender dropped without close",
                &mut Context::from_waker(&waker),
            );
        }
    }
}

/// Permission to send one message on a [`WsTx`].
pub struct WsPermit<'a> {
    tx: &'a mut WsTx,
}

impl<'a> LinkTxPermit for WsPermit<'a> {
    type Slot = WsSlot<'a>;

    // r[impl link.alloc.limit]
    #[inline]
    fn alloc(self, len: usize) -> Result<WsSlot<'a>, LinkError> {
        let max = self.tx.conn.caps.max_payload;
        if len > max {
            return Err(LinkError::TooLarge { len, max });
        }
        let buf = if len <= SMALL {
            if self.tx.staging.len() < len {
                self.tx.staging = BytesMut::zeroed(CHUNK);
            }
            self.tx.staging.split_to(len)
        } else {
            BytesMut::zeroed(len)
        };
        Ok(WsSlot { tx: self.tx, buf })
    }
}

/// A message being written; [`WriteSlot::commit`] sends it.
pub struct WsSlot<'a> {
    tx: &'a mut WsTx,
    buf: BytesMut,
}

impl WriteSlot for WsSlot<'_> {
    #[inline]
    fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.buf
    }

    // r[impl ws.message.binary]
    // r[impl link.slot.commit]
    /// Hands the slot's buffer to the framing layer as the payload of one
    /// binary message (no copy here; the framing layer writes it out).
    #[inline]
    fn commit(self) -> Result<(), LinkError> {
        let len = self.buf.len();
        self.tx.write(Message::Binary(self.buf.freeze()), len)
    }
}

/// The receiving half of a [`WsLink`].
pub struct WsRx {
    conn: Arc<Conn>,
    /// Messages taken from the framing layer under one lock and not yet
    /// returned by `recv`, oldest first: at most [`RX_BATCH`] messages, and
    /// more than one only while they total under [`RX_BATCH_BYTES`].
    ready: VecDeque<WsMessage>,
    /// How the connection ended, once read (returned after `ready`).
    end: Option<Result<(), LinkError>>,
}

/// The most messages taken from the framing layer under one lock.
const RX_BATCH: usize = 32;
/// A batch stops growing once its payloads reach this many bytes, so
/// that only small messages are taken several at a time (a large one is
/// taken alone, as before) and the batch holds little of the framing
/// layer's read buffer.
const RX_BATCH_BYTES: usize = 4 << 10;

impl std::fmt::Debug for WsRx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsRx")
            .field("ready", &self.ready.len())
            .field("end", &self.end)
            .finish_non_exhaustive()
    }
}

impl WsRx {
    /// The link's counters.
    pub fn stats(&self) -> WsStatsHandle {
        WsStatsHandle(self.conn.counters.clone())
    }

    /// Receive the next message with its kind (binary, or text when
    /// [`WsConfig::accept_text`] is on). `Ok(None)` after a normal close.
    pub fn recv_message(
        &mut self,
    ) -> impl Future<Output = Result<Option<WsMessage>, LinkError>> + Send + '_ {
        poll_fn(|cx| self.poll_recv(cx))
    }

    // r[impl ws.message.text]
    // r[impl ws.message.oversize]
    // r[impl ws.ping]
    // r[impl link.recv.cancel]
    // r[impl link.close.sticky]
    // r[impl link.error.sticky]
    /// Messages come from a small local batch: when it is empty, one lock
    /// of the framing layer takes every message that is ready, up to
    /// [`RX_BATCH`] small ones (see [`WsRx::fill`]); the counters count a
    /// message when it is returned here.
    #[inline]
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<WsMessage>, LinkError>> {
        if self.ready.is_empty() && self.end.is_none() {
            self.fill(cx);
        }
        if let Some(m) = self.ready.pop_front() {
            let c = &self.conn.counters;
            c.rx_messages.bump(1);
            c.rx_bytes.bump(m.data.len() as u64);
            return Poll::Ready(Ok(Some(m)));
        }
        match &self.end {
            Some(end) => Poll::Ready(end.clone().map(|()| None)),
            None => Poll::Pending,
        }
    }

    /// Take the messages that are ready from the framing layer, under one
    /// lock: the first, then more while they are small (a batch of at most
    /// [`RX_BATCH`] messages and, past its first, under [`RX_BATCH_BYTES`]).
    /// Stops at the first `Pending` (the task's waker is then registered
    /// with the socket, which matters only when nothing was taken) or at
    /// the end of the connection, which is recorded and returned after the
    /// messages before it.
    #[inline(never)]
    fn fill(&mut self, cx: &mut Context<'_>) {
        let conn = &*self.conn;
        let mut io = conn.lock();
        io.ws.register_rx(cx);
        let mut bytes = 0;
        // After the first message, another is taken only while the last
        // read left room for a small frame in the framing layer's buffer:
        // parsing it then needs no more room (which the buffer could not
        // make in place while this batch refers to it); and only while
        // read bytes remain unparsed: otherwise the next attempt would be a
        // read of an empty socket, which the next `recv` makes anyway.
        while self.ready.is_empty()
            || (self.ready.len() < RX_BATCH
                && bytes < RX_BATCH_BYTES
                && io.ws.sock().stream().room() >= SPARE
                && io.ws.sock().stream().unparsed() > 0)
        {
            match read_one(conn, &mut io, cx) {
                Poll::Ready(Ok(m)) => {
                    bytes += m.data.len();
                    self.ready.push_back(m);
                }
                Poll::Ready(Err(end)) => {
                    self.end = Some(end);
                    return;
                }
                Poll::Pending => return,
            }
        }
    }
}

/// The next message from the framing layer, if one is there; when the
/// connection ended, how (`Ok(())` for a normal close), after marking the
/// connection as over for the sending half.
#[inline]
fn read_one(
    conn: &Conn,
    io: &mut Io,
    cx: &mut Context<'_>,
) -> Poll<Result<WsMessage, Result<(), LinkError>>> {
    let c = &conn.counters;
    loop {
        let item = match io.ws.read() {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(item) => item,
        };
        let end = match item {
            Some(Ok(Message::Binary(b))) => {
                return Poll::Ready(Ok(WsMessage {
                    data: Backing::from_bytes(b),
                    text: false,
                }));
            }
            Some(Ok(Message::Text(t))) if conn.accept_text => {
                return Poll::Ready(Ok(WsMessage {
                    data: Backing::from_bytes(t.into()),
                    text: true,
                }));
            }
            Some(Ok(Message::Text(_))) => {
                c.rx_text_rejected.bump(1);
                send_close(
                    io,
                    Half::Rx,
                    close::UNSUPPORTED,
                    "text messages are not accepted",
                    cx,
                );
                Err(LinkError::protocol(
                    "peer sent a text message; only binary messages are accepted",
                ))
            }
            Some(Ok(Message::Ping(_))) => {
                c.pings.bump(1);
                continue;
            }
            Some(Ok(Message::Pong(_))) | Some(Ok(Message::Frame(_))) => continue,
            Some(Ok(Message::Close(frame))) => {
                // The framing layer has queued the reply; push it out.
                let _ = io.ws.poll_flush(Half::Rx, cx);
                match frame {
                    None => close::end_for_close(None, ""),
                    Some(f) => close::end_for_close(Some(u16::from(f.code)), &f.reason),
                }
            }
            Some(Err(TError::Capacity(e))) => {
                c.rx_oversize.bump(1);
                send_close(
                    io,
                    Half::Rx,
                    close::TOO_BIG,
                    "message above the maximum payload",
                    cx,
                );
                Err(LinkError::protocol(format!(
                    "incoming message above the maximum payload of {} bytes: {e}",
                    conn.caps.max_payload
                )))
            }
            Some(Err(TError::Utf8(e))) => {
                c.rx_protocol_errors.bump(1);
                send_close(
                    io,
                    Half::Rx,
                    close::INVALID_PAYLOAD,
                    "text is not UTF-8",
                    cx,
                );
                Err(LinkError::protocol(format!(
                    "invalid UTF-8 in a text message: {e}"
                )))
            }
            Some(Err(TError::Protocol(ProtocolError::ResetWithoutClosingHandshake))) => {
                Err(LinkError::PeerGone)
            }
            Some(Err(TError::Protocol(e))) => {
                c.rx_protocol_errors.bump(1);
                send_close(io, Half::Rx, close::PROTOCOL, "protocol error", cx);
                Err(LinkError::protocol(format!(
                    "WebSocket protocol error: {e}"
                )))
            }
            Some(Err(TError::Io(e))) => Err(io_error(e)),
            Some(Err(e)) => Err(LinkError::transport(e)),
            None => Err(LinkError::PeerGone),
        };
        if io.ended.is_none() {
            io.ended = Some(LinkError::PeerGone);
            conn.ended.store(true, Ordering::Release);
        }
        return Poll::Ready(Err(end));
    }
}

impl LinkRx for WsRx {
    fn caps(&self) -> LinkCaps {
        self.conn.caps
    }

    #[inline]
    fn recv(&mut self) -> impl MaybeSendFuture<Output = Result<Option<Backing>, LinkError>> {
        poll_fn(|cx| self.poll_recv(cx).map(|r| r.map(|m| m.map(|m| m.data))))
    }
}

// r[impl ws.drop]
// r[impl link.rx.drop]
impl Drop for WsRx {
    fn drop(&mut self) {
        // Messages taken from the framing layer but never returned by
        // `recv` are discarded with the half, and counted.
        if !self.ready.is_empty() {
            let unread: usize = self.ready.iter().map(|m| m.data.len()).sum();
            self.conn.counters.rx_discarded_bytes.bump(unread as u64);
        }
        if self.end.is_some() {
            return;
        }
        let conn = self.conn.clone();
        let mut io = conn.lock();
        if io.ended.is_none() {
            io.ended = Some(LinkError::Closed);
            conn.ended.store(true, Ordering::Release);
            let waker = futures::task::noop_waker();
            send_close(
                &mut io,
                Half::Rx,
                close::GOING_AWAY,
                "receiver dropped",
                &mut Context::from_waker(&waker),
            );
            abandon_reading(&mut io);
        }
    }
}

/// Nobody reads this connection any more: end it at the TCP level too, so
/// that a peer which keeps writing learns of it even if it never reads
/// (its writes would otherwise fill the socket buffers and then wait
/// forever). The write side is shut after the close frame (as far as the
/// socket took it), what already arrived is discarded (counted in
/// `rx_discarded_bytes`: the messages the framing layer had read ahead,
/// then the bytes waiting in the socket), and the read side is shut: the
/// kernel answers any later data with a reset, which the peer's next write
/// reports as `LinkError::PeerGone`.
fn abandon_reading(io: &mut Io) {
    use std::mem::MaybeUninit;
    // Its read buffer holds at most a buffer's worth of complete messages
    // (a partial frame at its end is not counted).
    let buffered = io.ws.discard_buffered(1 << 16);
    io.counters.rx_discarded_bytes.bump(buffered);
    let sock = socket2::SockRef::from(io.ws.sock().stream().tcp());
    if let Err(e) = sock.shutdown(std::net::Shutdown::Write) {
        tracing::debug!("shutdown(write) after the receiver was dropped: {e}");
    }
    // The socket is non-blocking (tokio's): this stops at what is queued.
    // Bounded, so a peer that keeps sending cannot hold the drop here.
    let mut buf = [MaybeUninit::<u8>::uninit(); 16 * 1024];
    let mut discarded = 0u64;
    for _ in 0..256 {
        match sock.recv(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => discarded += n as u64,
        }
    }
    io.counters.rx_discarded_bytes.bump(discarded);
    if let Err(e) = sock.shutdown(std::net::Shutdown::Read) {
        tracing::debug!("shutdown(read) after the receiver was dropped: {e}");
    }
}
