//! Shared-memory link for linkstream (Linux).
//!
//! A segment (a memfd) holds, per direction, a ring of message descriptors
//! and payload slots in two size classes: small slots for control messages
//! and large slots for frames. `alloc` hands out a slot in the segment
//! itself and the receiver's `Backing` is a lease on the same bytes: no
//! copy from writer to reader. Wake-ups spin briefly, then sleep on an
//! eventfd; a writer only signals when the reader may be asleep.
//!
//! Two processes connect with [`ShmListener`] / [`ShmLink::connect`] (a Unix
//! socket path) or [`ShmLink::spawn`] / [`ShmLink::from_parent`] (a child
//! that inherits its end); [`ShmLink::pair`] makes both ends in one process.
#![deny(missing_docs)]
#![deny(clippy::undocumented_unsafe_blocks)]

#[cfg(not(target_os = "linux"))]
compile_error!("link-shm needs Linux (memfd, eventfd)");

mod config;
mod connect;
mod error;
#[doc(hidden)]
pub mod fuzzing;
#[doc(hidden)]
pub mod hostile;
mod link;
mod region;
mod ring;
mod stats;
mod sys;

/// The system-call helpers under the link, for the benchmarks' bare
/// baselines (feature `bench`; not an API).
#[cfg(feature = "bench")]
#[doc(hidden)]
pub mod bench_support {
    pub use crate::sys::Mapping;
}

pub use config::ShmConfig;
pub use connect::{FD_ENV, ShmListener};
pub use error::ShmError;
pub use link::{LentSlot, ShmLink, ShmPermit, ShmRx, ShmSlot, ShmTx};
pub use stats::{ShmStats, ShmStatsHandle};
