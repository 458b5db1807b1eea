//! The `Link` trait family.

use crate::{Backing, LinkCaps, LinkError, MaybeSend, MaybeSendFuture, PathSample};

/// A bidirectional message link: one end of a connection.
///
/// A link carries messages whose boundaries survive the trip. Use
/// [`Link::split`] to get the sending and receiving halves.
pub trait Link: MaybeSend + Sized {
    /// The sending half.
    type Tx: LinkTx;
    /// The receiving half.
    type Rx: LinkRx;

    /// What this link promises (see [`LinkCaps`]).
    fn caps(&self) -> LinkCaps;

    /// Split into independent halves that may live on different tasks.
    fn split(self) -> (Self::Tx, Self::Rx);
}

/// The sending half of a link.
///
/// Sending is three steps: [`reserve`](LinkTx::reserve) a permit (the only
/// place a sender waits), [`alloc`](LinkTxPermit::alloc) a write slot in the
/// transport's own memory, write into it and [`commit`](WriteSlot::commit).
pub trait LinkTx: MaybeSend + Sized {
    /// A granted permit: holds the capacity for one message.
    type Permit<'a>: LinkTxPermit + MaybeSend
    where
        Self: 'a;

    /// What this link promises; the same as [`Link::caps`].
    fn caps(&self) -> LinkCaps;

    /// Wait for capacity for one message and hold it in a permit.
    ///
    /// This is the backpressure point. Cancel-safe: dropping the future
    /// before it completes holds nothing. Fails with [`LinkError::Closed`]
    /// after [`close`](LinkTx::close), with [`LinkError::PeerGone`] once the
    /// peer can no longer receive, or with the error that broke the link.
    /// A link that batches transmits its queued messages before waiting.
    fn reserve(&mut self) -> impl MaybeSendFuture<Output = Result<Self::Permit<'_>, LinkError>>;

    /// Transmit every committed message this half still queues. A no-op on
    /// links that transmit at commit.
    fn flush(&mut self) -> impl MaybeSendFuture<Output = Result<(), LinkError>>;

    /// Graceful close: flush, then tell the peer that no more messages will
    /// come. The peer receives every earlier message and then end-of-stream.
    /// Closing twice is not an error.
    fn close(&mut self) -> impl MaybeSendFuture<Output = Result<(), LinkError>>;

    /// The protocol above proved that the peer receives at its address
    /// (e.g. it answered a value only a message from us carried). A link
    /// that limits what it sends to, or keeps for, peers nobody validated
    /// lifts those limits; links whose peers are validated by construction
    /// (connected sockets, shared memory, WebSocket) ignore it.
    fn mark_validated(&self) {}

    // r[impl link.path.optional]
    /// What the path under this half is doing now (delivered bytes, rates,
    /// round trip, what is still queued), for a protocol above that adapts
    /// its sending rate. `None` (the default) when the transport cannot
    /// tell: the in-memory link, shared memory and UDP (whose session has
    /// its own feedback) return `None`; a link over TCP reads the kernel's
    /// counters. Cheap enough to call once per frame; never waits.
    fn path_sample(&self) -> Option<PathSample> {
        None
    }
}

/// Capacity for one message, granted by [`LinkTx::reserve`].
///
/// Dropping a permit without allocating returns its capacity.
pub trait LinkTxPermit: Sized {
    /// The write slot this permit turns into.
    type Slot: WriteSlot + MaybeSend;

    /// Turn the permit into a write slot of exactly `len` bytes, without
    /// waiting. Fails with [`LinkError::TooLarge`] when `len` exceeds the
    /// link's maximum payload (the permit's capacity is then released).
    fn alloc(self, len: usize) -> Result<Self::Slot, LinkError>;
}

/// A message being written, in the transport's own memory.
///
/// Its initial contents are unspecified (a reused buffer may still hold an
/// older message): write every byte. Dropping it without committing discards
/// the message and returns its capacity.
pub trait WriteSlot: Sized {
    /// The bytes of the message, exactly the length given to `alloc`.
    fn as_mut_slice(&mut self) -> &mut [u8];

    /// Publish exactly this one message, without waiting. On a batching link
    /// the message is queued and goes out no later than the next
    /// [`flush`](LinkTx::flush) or the next `reserve` that would wait.
    fn commit(self) -> Result<(), LinkError>;
}

/// The receiving half of a link.
pub trait LinkRx: MaybeSend + Sized {
    /// What this link promises; the same as [`Link::caps`].
    fn caps(&self) -> LinkCaps;

    /// Receive the next message.
    ///
    /// `Ok(Some(_))` is one message; `Ok(None)` means the peer closed the
    /// link gracefully and is returned by every later call; `Err` means the
    /// link failed, and every later call returns an error too. Cancel-safe:
    /// dropping the future before it completes loses no message.
    fn recv(&mut self) -> impl MaybeSendFuture<Output = Result<Option<Backing>, LinkError>>;
}

/// Conveniences on top of [`LinkTx`].
pub trait LinkTxExt: LinkTx {
    /// Reserve, allocate, copy `data` in and commit: one message.
    fn send<'a>(
        &'a mut self,
        data: &'a [u8],
    ) -> impl MaybeSendFuture<Output = Result<(), LinkError>> + 'a {
        async move {
            let permit = self.reserve().await?;
            let mut slot = permit.alloc(data.len())?;
            slot.as_mut_slice().copy_from_slice(data);
            slot.commit()
        }
    }
}

impl<T: LinkTx> LinkTxExt for T {}

// r[impl link.split.rebuild]
/// A link rebuilt from a sending and a receiving half.
#[derive(Debug)]
pub struct SplitLink<Tx, Rx> {
    /// The sending half.
    pub tx: Tx,
    /// The receiving half.
    pub rx: Rx,
}

impl<Tx: LinkTx, Rx: LinkRx> SplitLink<Tx, Rx> {
    /// Join two halves into one link.
    pub fn new(tx: Tx, rx: Rx) -> Self {
        SplitLink { tx, rx }
    }
}

impl<Tx: LinkTx, Rx: LinkRx> Link for SplitLink<Tx, Rx> {
    type Tx = Tx;
    type Rx = Rx;

    fn caps(&self) -> LinkCaps {
        self.tx.caps()
    }

    fn split(self) -> (Tx, Rx) {
        (self.tx, self.rx)
    }
}
