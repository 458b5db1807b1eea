//! [`Backing`]: the bytes of one received message.

use std::fmt;
use std::ops::{Deref, Range};
use std::sync::Arc;

/// Takes back a pooled buffer when the [`Backing`] that held it is dropped.
///
/// Implemented by links that receive into reusable `Vec`s, one per message
/// (the in-memory link), so that the steady state allocates nothing per
/// message.
pub trait Recycle: Send + Sync + 'static {
    /// Return `buf` to the pool. Called exactly once per pooled `Backing`,
    /// from whatever thread drops it.
    fn recycle(&self, buf: Vec<u8>);
}

/// Transport memory that a [`Backing`] borrows by token: a shared-memory slot
/// (the shared-memory link), a region of a mapped ring.
///
/// The owner must keep the bytes of a token valid and unchanged from the
/// moment it hands out a `Backing` for it until [`LeaseOwner::release`] is
/// called for that token.
pub trait LeaseOwner: Send + Sync + 'static {
    /// The bytes of the message `token` names.
    fn bytes(&self, token: LeaseToken) -> &[u8];
    /// The `Backing` for `token` was dropped: the space may be reused.
    /// Called exactly once per token, from whatever thread drops it.
    fn release(&self, token: LeaseToken);
}

/// Identifies one leased message to its [`LeaseOwner`]; what the two words
/// mean is up to the owner (an offset and a length, a slot and a generation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LeaseToken {
    /// First word.
    pub a: u64,
    /// Second word.
    pub b: u64,
}

enum Inner {
    Boxed(Box<[u8]>),
    Pooled {
        buf: Vec<u8>,
        pool: Arc<dyn Recycle>,
    },
    Lease {
        owner: Arc<dyn LeaseOwner>,
        token: LeaseToken,
    },
    Shared {
        buf: Arc<[u8]>,
        /// Checked against `buf` when the backing was made; the length of
        /// an `Arc<[u8]>` never changes, so it stays in bounds.
        start: usize,
        end: usize,
    },
    #[cfg(feature = "bytes")]
    Bytes(bytes::Bytes),
}

// r[impl link.backing.lifetime]
/// Owns the bytes of one received message until it is dropped.
///
/// A `Backing` is one of five kinds:
/// - **boxed** ([`Backing::boxed`]): a plain heap buffer;
/// - **pooled** ([`Backing::pooled`]): a `Vec` that goes back to its
///   [`Recycle`] pool on drop (the in-memory link);
/// - **lease** ([`Backing::lease`]): a token on transport memory that a
///   [`LeaseOwner`] releases on drop (a shared-memory slot);
/// - **shared slice** ([`Backing::shared_slice`]): a range of a
///   reference-counted buffer that holds several messages (a UDP receive
///   slab: the slab is reused once its last datagram is dropped);
/// - **bytes** (`Backing::from_bytes`, with the feature `bytes`): a `bytes::Bytes`
///   from a framing library (the native WebSocket link).
///
/// It is cheap to move, derefs to `[u8]`, and stays valid whatever happens
/// to the link it came from.
pub struct Backing {
    inner: Inner,
}

impl Backing {
    /// A backing that owns a plain boxed buffer.
    #[inline]
    pub fn boxed(bytes: impl Into<Box<[u8]>>) -> Self {
        Backing {
            inner: Inner::Boxed(bytes.into()),
        }
    }

    /// A backing that owns `buf` (the message is all of `buf`) and gives it
    /// to `pool` when dropped.
    #[inline]
    pub fn pooled(buf: Vec<u8>, pool: Arc<dyn Recycle>) -> Self {
        Backing {
            inner: Inner::Pooled { buf, pool },
        }
    }

    /// A backing that leases the message `token` from `owner` and releases it
    /// when dropped.
    #[inline]
    pub fn lease(owner: Arc<dyn LeaseOwner>, token: LeaseToken) -> Self {
        Backing {
            inner: Inner::Lease { owner, token },
        }
    }

    /// A backing that holds the bytes `range` of `buf`, a buffer shared by
    /// several messages, and keeps `buf` alive until dropped. `None` when
    /// `range` does not lie within `buf`: the range is checked here, once,
    /// never when the bytes are read.
    #[inline]
    pub fn shared_slice(buf: Arc<[u8]>, range: Range<usize>) -> Option<Self> {
        if range.start > range.end || range.end > buf.len() {
            return None;
        }
        Some(Backing {
            inner: Inner::Shared {
                buf,
                start: range.start,
                end: range.end,
            },
        })
    }

    /// A backing that holds a `bytes::Bytes` (feature `bytes`): no copy, no
    /// allocation; dropping it drops the reference.
    #[cfg(feature = "bytes")]
    #[inline]
    pub fn from_bytes(b: bytes::Bytes) -> Self {
        Backing {
            inner: Inner::Bytes(b),
        }
    }

    /// The message bytes.
    #[inline]
    pub fn as_slice(&self) -> &[u8] {
        match &self.inner {
            Inner::Boxed(b) => b,
            Inner::Pooled { buf, .. } => buf,
            Inner::Lease { owner, token } => owner.bytes(*token),
            Inner::Shared { buf, start, end } => &buf[*start..*end],
            #[cfg(feature = "bytes")]
            Inner::Bytes(b) => b,
        }
    }

    /// Whether the bytes live in transport memory rather than a heap buffer
    /// of this process.
    pub fn is_leased(&self) -> bool {
        matches!(self.inner, Inner::Lease { .. })
    }

    /// Copy the bytes into a new boxed `Backing` (used to duplicate a
    /// message, e.g. by the fault injector).
    pub fn to_boxed(&self) -> Backing {
        Backing::boxed(self.as_slice())
    }

    /// The bytes as a `Vec`, without a copy when the backing is a heap buffer.
    pub fn into_vec(mut self) -> Vec<u8> {
        match &mut self.inner {
            Inner::Boxed(b) => std::mem::take(b).into_vec(),
            // Taking the buffer out means the pool does not get it back: the
            // caller asked to own it.
            Inner::Pooled { buf, .. } => std::mem::take(buf),
            Inner::Lease { owner, token } => owner.bytes(*token).to_vec(),
            Inner::Shared { buf, start, end } => buf[*start..*end].to_vec(),
            #[cfg(feature = "bytes")]
            Inner::Bytes(b) => Vec::from(std::mem::take(b)),
        }
    }
}

impl Drop for Backing {
    #[inline]
    fn drop(&mut self) {
        match &mut self.inner {
            Inner::Boxed(_) => {}
            Inner::Pooled { buf, pool } => {
                let buf = std::mem::take(buf);
                if buf.capacity() != 0 {
                    pool.recycle(buf);
                }
            }
            Inner::Lease { owner, token } => owner.release(*token),
            Inner::Shared { .. } => {}
            #[cfg(feature = "bytes")]
            Inner::Bytes(_) => {}
        }
    }
}

impl Deref for Backing {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl AsRef<[u8]> for Backing {
    #[inline]
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl From<Vec<u8>> for Backing {
    fn from(v: Vec<u8>) -> Self {
        Backing::boxed(v)
    }
}

impl From<&[u8]> for Backing {
    fn from(v: &[u8]) -> Self {
        Backing::boxed(v)
    }
}

impl fmt::Debug for Backing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.inner {
            Inner::Boxed(_) => "boxed",
            Inner::Pooled { .. } => "pooled",
            Inner::Lease { .. } => "lease",
            Inner::Shared { .. } => "shared slice",
            #[cfg(feature = "bytes")]
            Inner::Bytes(_) => "bytes",
        };
        f.debug_struct("Backing")
            .field("kind", &kind)
            .field("len", &self.len())
            .finish()
    }
}

impl PartialEq for Backing {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for Backing {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Default)]
    struct Pool(Mutex<Vec<Vec<u8>>>);
    impl Recycle for Pool {
        fn recycle(&self, buf: Vec<u8>) {
            self.0.lock().unwrap().push(buf);
        }
    }

    struct Owner {
        data: Vec<u8>,
        released: AtomicUsize,
    }
    impl LeaseOwner for Owner {
        fn bytes(&self, t: LeaseToken) -> &[u8] {
            &self.data[t.a as usize..(t.a + t.b) as usize]
        }
        fn release(&self, _t: LeaseToken) {
            self.released.fetch_add(1, Ordering::SeqCst);
        }
    }

    // r[verify link.backing.lifetime]
    #[test]
    fn pooled_buffer_returns_to_pool_exactly_once_on_drop() {
        let pool = Arc::new(Pool::default());
        let b = Backing::pooled(vec![1, 2, 3], pool.clone());
        let moved = b; // moving does not recycle
        assert_eq!(&*moved, &[1, 2, 3]);
        assert!(pool.0.lock().unwrap().is_empty());
        drop(moved);
        assert_eq!(pool.0.lock().unwrap().as_slice(), &[vec![1, 2, 3]]);
    }

    // r[verify link.backing.lifetime]
    #[test]
    fn lease_is_released_exactly_once_on_drop_and_not_before() {
        let owner = Arc::new(Owner {
            data: (0u8..10).collect(),
            released: AtomicUsize::new(0),
        });
        let b = Backing::lease(owner.clone(), LeaseToken { a: 2, b: 3 });
        assert!(b.is_leased());
        assert_eq!(&*b, &[2, 3, 4]);
        let copy = b.to_boxed();
        assert_eq!(owner.released.load(Ordering::SeqCst), 0);
        drop(b);
        assert_eq!(owner.released.load(Ordering::SeqCst), 1);
        assert_eq!(&*copy, &[2, 3, 4]);
    }

    // r[verify link.backing.lifetime]
    #[test]
    fn shared_slice_checks_its_range_and_holds_the_buffer_until_dropped() {
        let buf: Arc<[u8]> = (0u8..10).collect::<Vec<_>>().into();
        assert!(Backing::shared_slice(buf.clone(), 8..11).is_none());
        #[allow(clippy::reversed_empty_ranges)]
        let reversed = Backing::shared_slice(buf.clone(), 5..4);
        assert!(reversed.is_none());
        let b = Backing::shared_slice(buf.clone(), 7..10).expect("in range");
        let mut buf = buf;
        assert!(
            Arc::get_mut(&mut buf).is_none(),
            "the slice holds the buffer"
        );
        assert_eq!(&*b, &[7, 8, 9]);
        assert_eq!(b.into_vec(), vec![7, 8, 9]);
        assert!(
            Arc::get_mut(&mut buf).is_some(),
            "dropping the slice frees it"
        );
        let empty = Backing::shared_slice(buf, 10..10).expect("empty range at the end");
        assert!(empty.is_empty());
    }

    #[test]
    fn into_vec_keeps_bytes_and_skips_the_pool() {
        let pool = Arc::new(Pool::default());
        let v = Backing::pooled(vec![9; 4], pool.clone()).into_vec();
        assert_eq!(v, vec![9; 4]);
        assert!(pool.0.lock().unwrap().is_empty());
    }
}
