//! `Send`/`Sync` bounds that vanish on wasm32.
//!
//! Native links run on multi-threaded runtimes, so their futures and halves
//! must be `Send`. In the browser everything runs on one thread and the
//! JavaScript handles a link holds are not `Send`. Generic code (the session)
//! bounds on these traits and so compiles for both.

// r[impl link.types.maybe-send]
/// `Send` on native targets; implemented by every type on wasm32.
#[cfg(not(target_arch = "wasm32"))]
pub trait MaybeSend: Send {}
#[cfg(not(target_arch = "wasm32"))]
impl<T: Send + ?Sized> MaybeSend for T {}

/// `Send` on native targets; implemented by every type on wasm32.
#[cfg(target_arch = "wasm32")]
pub trait MaybeSend {}
#[cfg(target_arch = "wasm32")]
impl<T: ?Sized> MaybeSend for T {}

/// `Sync` on native targets; implemented by every type on wasm32.
#[cfg(not(target_arch = "wasm32"))]
pub trait MaybeSync: Sync {}
#[cfg(not(target_arch = "wasm32"))]
impl<T: Sync + ?Sized> MaybeSync for T {}

/// `Sync` on native targets; implemented by every type on wasm32.
#[cfg(target_arch = "wasm32")]
pub trait MaybeSync {}
#[cfg(target_arch = "wasm32")]
impl<T: ?Sized> MaybeSync for T {}

/// A future that is `Send` on native targets (see [`MaybeSend`]).
pub trait MaybeSendFuture: core::future::Future + MaybeSend {}
impl<T: core::future::Future + MaybeSend + ?Sized> MaybeSendFuture for T {}
