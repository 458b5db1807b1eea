//! The byte stream under a native WebSocket: plain TCP or TLS over TCP.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

impl Stream {
    /// The TCP connection under the stream.
    pub(crate) fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => s.get_ref().0,
            Stream::Replay { inner, .. } => inner.tcp(),
        }
    }
}

/// Plain TCP or TLS over TCP, server or client side.
pub(crate) enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::TlsStream<TcpStream>>),
    /// A stream whose first bytes (a request head the server already read
    /// to route the request) are read again before the stream's own.
    Replay {
        head: Vec<u8>,
        pos: usize,
        inner: Box<Stream>,
    },
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
            Stream::Replay { head, pos, inner } => {
                if *pos < head.len() {
                    let n = (head.len() - *pos).min(buf.remaining());
                    buf.put_slice(&head[*pos..*pos + n]);
                    *pos += n;
                    if *pos == head.len() {
                        *head = Vec::new();
                        *pos = 0;
                    }
                    return Poll::Ready(Ok(()));
                }
                Pin::new(&mut **inner).poll_read(cx, buf)
            }
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
            Stream::Replay { inner, .. } => Pin::new(&mut **inner).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(&mut **s).poll_write_vectored(cx, bufs),
            Stream::Replay { inner, .. } => Pin::new(&mut **inner).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
            Stream::Replay { inner, .. } => inner.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
            Stream::Replay { inner, .. } => Pin::new(&mut **inner).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
            Stream::Replay { inner, .. } => Pin::new(&mut **inner).poll_shutdown(cx),
        }
    }
}

/// Room the reads below keep free at the end of the framing layer's read
/// buffer, when it has more than twice this to offer.
pub(crate) const SPARE: usize = 4 << 10;

/// The stream under the framing layer of a link: it reads so that the
/// framing layer's read buffer keeps [`SPARE`] bytes free at its end, and
/// remembers how much room the last read left there and how many bytes
/// read are not yet parsed into messages.
///
/// Why: the framing layer asks its read buffer for room for every frame
/// it parses. When there is none, the buffer moves its unread bytes to its
/// front, but only if no received message still refers to it; otherwise it
/// allocates a new buffer and copies them there. The receiving half takes
/// several small messages at a time ([`super::link`]) and so holds some of
/// them while the next is parsed; it does so only while the room left by
/// the last read shows that parsing a small frame needs no more, and only
/// while read bytes remain unparsed (so that a batch does not end in a
/// read of an empty socket that the next `recv` would make anyway).
pub(crate) struct Spare {
    stream: Stream,
    /// Bytes left free after the framing layer's buffer by the last read
    /// (a lower bound: the buffer only gains room until the next read).
    room: usize,
    /// Bytes read and not yet parsed into messages, as far as the framing
    /// layer's caller counts them with [`Spare::parsed`] (an estimate; it
    /// only decides when a batch stops).
    unparsed: usize,
    /// Reads answer "not ready" without touching the socket (set when the
    /// receiving half goes, to take what the framing layer already holds).
    held: bool,
}

impl Spare {
    pub(crate) fn new(stream: Stream) -> Spare {
        Spare {
            stream,
            room: 0,
            unparsed: 0,
            held: false,
        }
    }

    /// The TCP connection under the stream.
    pub(crate) fn tcp(&self) -> &TcpStream {
        self.stream.tcp()
    }

    /// Room at the end of the framing layer's read buffer after the last
    /// read (at least that much).
    #[inline]
    pub(crate) fn room(&self) -> usize {
        self.room
    }

    /// Bytes read and not yet counted as parsed (an estimate).
    #[inline]
    pub(crate) fn unparsed(&self) -> usize {
        self.unparsed
    }

    /// `n` bytes of what was read were parsed into a message.
    #[inline]
    pub(crate) fn parsed(&mut self, n: usize) {
        self.unparsed = self.unparsed.saturating_sub(n);
    }

    /// From now on, reads answer "not ready" without reading the socket.
    pub(crate) fn hold_reads(&mut self) {
        self.held = true;
    }

    /// Forget the room seen so far (reads before the framing layer's own
    /// read buffer existed say nothing about it).
    pub(crate) fn forget_room(&mut self) {
        self.room = 0;
        self.unparsed = 0;
    }
}

impl AsyncRead for Spare {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.held {
            return Poll::Pending;
        }
        let offered = buf.remaining();
        if offered <= 2 * SPARE {
            let r = Pin::new(&mut this.stream).poll_read(cx, buf);
            if r.is_ready() {
                this.room = buf.remaining();
                this.unparsed += offered - buf.remaining();
            }
            return r;
        }
        // Read into all but the last `SPARE` bytes of what is offered.
        let mut part = ReadBuf::new(buf.initialize_unfilled_to(offered - SPARE));
        let r = Pin::new(&mut this.stream).poll_read(cx, &mut part);
        let n = part.filled().len();
        // The bytes were initialized above; this only moves the mark.
        buf.advance(n);
        if r.is_ready() {
            this.room = buf.remaining();
            this.unparsed += n;
        }
        r
    }
}

impl AsyncWrite for Spare {
    #[inline]
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    #[inline]
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    #[inline]
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
