//! The one counters pattern of every crate: a [`Counter`] per event, grouped
//! by the [`counters!`](crate::counters!) macro into a live struct shared by
//! a link's halves and a plain snapshot struct handed to the application.
//!
//! Atomics only: no runtime, no lock, and nothing that keeps it from
//! compiling for wasm32 (the session counts with it too).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// One event counter. Readers may see a value a moment old, never a torn
/// one.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Add `n`, from any thread (an atomic read-modify-write).
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Relaxed);
    }

    /// Add `n` to a counter that only one thread ever writes (a half of a
    /// link counting its own events): a plain load and store, no
    /// read-modify-write on the hot path. With two writers, counts could be
    /// lost: use [`Counter::add`] there.
    #[inline]
    pub fn bump(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }

    /// Record a reading of a cumulative counter kept elsewhere (a kernel
    /// drop count): the counter keeps the largest value seen.
    #[inline]
    pub fn max(&self, v: u64) {
        self.0.fetch_max(v, Relaxed);
    }

    /// Set a gauge (a value that goes up and down).
    #[inline]
    pub fn set(&self, v: u64) {
        self.0.store(v, Relaxed);
    }

    /// The value now.
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// Declare a crate's counters: a live struct of [`Counter`]s (shared by the
/// halves that count) and a snapshot struct of `u64`s with the same fields
/// and docs, plus `snapshot()` to read one from the other.
///
/// ```
/// link_types::counters! {
///     /// What a widget did, at one moment.
///     pub struct WidgetStats;
///     /// The live counters.
///     pub struct WidgetCounters {
///         /// Messages sent.
///         sent,
///         /// Messages dropped, and why is in the log.
///         dropped,
///     }
/// }
/// let c = WidgetCounters::default();
/// c.sent.bump(2);
/// c.dropped.add(1);
/// assert_eq!(c.snapshot(), WidgetStats { sent: 2, dropped: 1 });
/// ```
///
/// Attributes before the snapshot struct (a `#[derive(Facet)]`, say) are
/// kept; it always derives `Debug, Clone, Copy, Default, PartialEq, Eq`.
#[macro_export]
macro_rules! counters {
    (
        $(#[$sm:meta])* $svis:vis struct $snap:ident;
        $(#[$cm:meta])* $cvis:vis struct $cnt:ident {
            $( $(#[$fm:meta])* $f:ident, )*
        }
    ) => {
        $(#[$sm])*
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        $svis struct $snap {
            $( $(#[$fm])* pub $f: u64, )*
        }

        $(#[$cm])*
        #[derive(Debug, Default)]
        $cvis struct $cnt {
            $( $(#[$fm])* pub $f: $crate::Counter, )*
        }

        impl $cnt {
            /// Every counter now.
            #[allow(dead_code)]
            pub fn snapshot(&self) -> $snap {
                $snap { $( $f: self.$f.get(), )* }
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::Counter;

    crate::counters! {
        /// Test snapshot.
        pub(crate) struct Snap;
        /// Test counters.
        pub(crate) struct Live {
            /// a
            a,
            /// b
            b,
        }
    }

    #[test]
    fn each_operation_changes_only_its_counter_as_named() {
        let c = Live::default();
        c.a.add(3);
        c.a.bump(4);
        c.b.max(9);
        c.b.max(5);
        assert_eq!(c.snapshot(), Snap { a: 7, b: 9 });
        c.b.set(2);
        assert_eq!(c.snapshot(), Snap { a: 7, b: 2 });
        let shared = std::sync::Arc::new(Counter::default());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let s = shared.clone();
                std::thread::spawn(move || (0..1000).for_each(|_| s.add(1)))
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(shared.get(), 4000);
    }
}
