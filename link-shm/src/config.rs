//! The link's settings: a segment's sizes and the wake-up policy.

use std::time::Duration;

/// The sizes of a segment and the wake-up policy (both directions alike).
#[derive(Debug, Clone)]
pub struct ShmConfig {
    /// Bytes per small slot (a multiple of 64). Default 4 KiB.
    pub small_size: usize,
    /// Small slots per direction. Default 64.
    pub small_count: usize,
    /// Bytes per large slot: the maximum payload (a multiple of 64).
    /// Default 1920 × 1080 × 4 (one 1080p RGBA frame).
    pub large_size: usize,
    /// Large slots per direction. Default 4.
    pub large_count: usize,
    /// How long a waiting `recv` or `reserve` spins before it sleeps.
    /// Default 20 µs.
    pub spin: Duration,
}

impl Default for ShmConfig {
    fn default() -> Self {
        ShmConfig {
            small_size: 4096,
            small_count: 64,
            large_size: 1920 * 1080 * 4,
            large_count: 4,
            spin: Duration::from_micros(20),
        }
    }
}
