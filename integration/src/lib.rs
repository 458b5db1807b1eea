//! Integration tests above every layer: the streaming session
//! (`link-session`) over the in-memory link and over the real transports.
//! The helpers here ([`session`]) stream frames whose every byte the client
//! can check; the tests are in `tests/`.
//!
//! This crate sits on top of the workspace, so that no transport's test
//! build depends on the session (issue 15, "Layers").
#![deny(missing_docs)]

pub mod session;

/// The README's examples, compiled as doctests so that they cannot rot
/// (here, above every layer, where every crate they use is a dependency).
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeExamples;
