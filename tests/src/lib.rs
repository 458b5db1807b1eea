//! The conformance suite of linkstream.
//!
//! One suite, generic over a [`LinkFactory`] that makes a connected pair of
//! links, checks the `link.*` rules of `spec/link.md`. Each check in
//! [`checks`] is a plain `async fn` with no runtime inside (timeouts use
//! `futures-timer`), so the same code runs under tokio natively and in a
//! browser on wasm32.
//!
//! A link plugs in with a factory and one macro call:
//!
//! ```text
//! link_tests::reliable_suite!(#[tokio::test], MyFactory::new());
//! ```
//!
//! [`reliable_suite!`] runs every check; [`lossy_suite!`] runs the subset
//! that a lossy, unordered datagram link keeps.
#![deny(missing_docs)]

use std::future::Future;
use std::time::Duration;

use link_types::Link;

pub mod checks;
pub mod util;

/// Makes connected link pairs for the suite.
pub trait LinkFactory {
    /// The link type under test.
    type Link: Link;

    /// A fresh connected pair `(a, b)`: what `a` sends, `b` receives and
    /// the other way round.
    fn pair(&self) -> impl Future<Output = (Self::Link, Self::Link)>;

    /// How long a `reserve` must stay pending before the suite takes it as
    /// waiting, and how long a lossy link may stay silent before the suite
    /// takes the remaining messages as lost.
    fn settle(&self) -> Duration {
        Duration::from_millis(200)
    }

    /// How many received messages of up to 4 KiB a receiver may hold at
    /// once while more arrive. A zero-copy link lends its own memory to each
    /// `Backing` (a shared-memory slot), so this is bounded by its slots;
    /// other links copy and have no such bound here.
    fn max_held(&self) -> usize {
        64
    }

    /// The least fraction of a burst (distinct messages) a lossy link must
    /// deliver. Loopback loses nothing unless something is broken, so the
    /// default asks for 90%; a link that injects loss on purpose lowers it
    /// to what its loss rate leaves. Reliable links must deliver all.
    fn min_delivery(&self) -> f64 {
        0.9
    }

    /// Whether the receiver sees its peer's `close` as end-of-stream. Every
    /// stream link does; a datagram link has no close on the wire (UDP),
    /// and there the check demands instead that no end-of-stream appears.
    fn sees_close(&self) -> bool {
        true
    }

    /// Whether the receiver ends with an error once its peer's sending half
    /// is dropped (stream links at once, a UDP endpoint's link after its
    /// idle timeout). Where it never does (connected UDP), the check
    /// demands instead that no error appears.
    fn sees_drop(&self) -> bool {
        true
    }

    /// Whether the link alone decides how many messages fit before
    /// `reserve` waits (memory, shared memory). Over TCP (WebSocket) the
    /// kernel's socket buffers, which it resizes as it sees fit, hold most
    /// of them, so two fills of the same link differ by a few percent; the
    /// capacity checks then allow 5%, at most 50 messages (100 cancelled
    /// reserves that each kept a unit would still show).
    fn exact_capacity(&self) -> bool {
        true
    }
}

/// Generate one test per check for a reliable, ordered link.
///
/// The first argument is the test attribute (`#[tokio::test]`,
/// `#[wasm_bindgen_test]`), the second an expression making the factory.
#[macro_export]
macro_rules! reliable_suite {
    (#[$attr:meta], $factory:expr) => {
        // Everything a receiver that cannot push back keeps...
        $crate::unbounded_receiver_suite!(#[$attr], $factory);
        // ...and the checks that fill the link by not reading.
        $crate::__suite!(#[$attr], $factory;
            reserve_waits_when_full_and_resumes,
            permit_holds_capacity,
            dropped_permit_releases_capacity,
            cancelled_reserve_holds_nothing,
        );
    };
}

/// Generate one test per check that a lossy, unordered datagram link keeps.
///
/// Arguments as for [`reliable_suite!`].
#[macro_export]
macro_rules! lossy_suite {
    (#[$attr:meta], $factory:expr) => {
        $crate::__suite!(#[$attr], $factory;
            caps_are_declared_and_consistent,
            boundaries_are_preserved,
            empty_messages_are_messages,
            max_payload_messages_are_carried,
            split_halves_work_independently,
            split_link_rebuilds_a_link,
            permit_holds_capacity,
            dropped_permit_releases_capacity,
            cancelled_reserve_holds_nothing,
            alloc_above_max_is_refused,
            slot_has_exact_length,
            commit_publishes_one_message,
            dropped_slot_is_discarded,
            flush_transmits_queued_messages,
            reserve_after_close_fails,
            eof_is_sticky,
            errors_are_sticky,
            cancelled_recv_loses_nothing,
            backing_outlives_later_recvs_and_the_link,
            path_samples_are_consistent,
        );
    };
}

/// Generate one test per check for a reliable, ordered link whose receiver
/// cannot push back on its sender: the browser's `WebSocket` reads the
/// socket by itself whatever the page does, so a sender to a browser never
/// sees its receiver's queue fill. Every check of [`reliable_suite!`] but
/// the four that fill the link by not reading (backpressure, permit under a
/// full link, dropped and cancelled permits on a full link); such a link
/// checks its own sending-side backpressure separately.
///
/// Arguments as for [`reliable_suite!`].
#[macro_export]
macro_rules! unbounded_receiver_suite {
    (#[$attr:meta], $factory:expr) => {
        $crate::__suite!(#[$attr], $factory;
            caps_are_declared_and_consistent,
            boundaries_are_preserved,
            empty_messages_are_messages,
            max_payload_messages_are_carried,
            reliable_links_deliver_exactly_once_in_order,
            split_halves_work_independently,
            split_link_rebuilds_a_link,
            alloc_above_max_is_refused,
            slot_has_exact_length,
            commit_publishes_one_message,
            dropped_slot_is_discarded,
            flush_transmits_queued_messages,
            close_delivers_everything_then_eof,
            eof_is_sticky,
            reserve_after_close_fails,
            dropped_sender_is_an_abrupt_end,
            dropped_receiver_fails_peer_reserve,
            errors_are_sticky,
            cancelled_recv_loses_nothing,
            backing_outlives_later_recvs_and_the_link,
            path_samples_are_consistent,
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __suite {
    (#[$attr:meta], $factory:expr; $($name:ident,)*) => {
        $(
            #[$attr]
            async fn $name() {
                $crate::checks::$name(&$factory).await
            }
        )*
    };
}
