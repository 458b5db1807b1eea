//! The `Link` abstraction of linkstream.
//!
//! A [`Link`] carries messages: byte buffers whose boundaries survive the
//! trip. Sending is reserve → alloc → commit, so that a caller encodes
//! straight into the transport's memory; receiving yields [`Backing`]
//! buffers that own (or lease) the bytes of one message.
//!
//! This crate also holds the reference implementation of every rule, the
//! bounded [in-memory link pair](memory), and a seeded
//! [fault-injecting wrapper](fault) around any link.
//!
//! The rules every link keeps are in `spec/link.md`.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod admission;
mod backing;
mod caps;
mod counters;
mod error;
pub mod fault;
mod maybe;
pub mod memory;
mod path;
mod traits;

pub use admission::{Admission, AdmissionGate};
pub use backing::{Backing, LeaseOwner, LeaseToken, Recycle};
pub use caps::LinkCaps;
pub use counters::Counter;
pub use error::{FromIoFailure, LinkError, io_failed};
pub use fault::{Bottleneck, FaultLink, FaultSpec, FaultStats, fault_pair};
pub use maybe::{MaybeSend, MaybeSendFuture, MaybeSync};
pub use memory::{MemoryConfig, MemoryLink, memory_pair};
pub use path::PathSample;
pub use traits::{Link, LinkRx, LinkTx, LinkTxExt, LinkTxPermit, SplitLink, WriteSlot};
