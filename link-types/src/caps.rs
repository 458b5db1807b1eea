//! What a link promises, declared rather than guessed.

/// The capabilities of a link. Constant for the life of the link, and the
/// same whether read from the link or from either of its halves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LinkCaps {
    /// Every committed message arrives exactly once (unless the link fails,
    /// which is reported as an error).
    pub reliable: bool,
    /// Messages arrive in the order they were committed.
    pub ordered: bool,
    /// The largest message `alloc` accepts, in bytes.
    pub max_payload: usize,
    /// Received [`Backing`](crate::Backing)s point into transport memory
    /// rather than a copy (shared memory).
    pub zero_copy_recv: bool,
}

impl LinkCaps {
    /// A reliable, ordered link (memory, shared memory, WebSocket).
    pub const fn reliable_ordered(max_payload: usize) -> Self {
        LinkCaps {
            reliable: true,
            ordered: true,
            max_payload,
            zero_copy_recv: false,
        }
    }

    /// A lossy, unordered datagram link (UDP).
    pub const fn datagram(max_payload: usize) -> Self {
        LinkCaps {
            reliable: false,
            ordered: false,
            max_payload,
            zero_copy_recv: false,
        }
    }

    /// Whether the link is both reliable and ordered: a stream of messages
    /// that needs no FEC, sequence numbers or retransmission above it.
    pub const fn is_stream(&self) -> bool {
        self.reliable && self.ordered
    }
}
