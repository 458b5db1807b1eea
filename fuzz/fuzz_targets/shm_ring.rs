#![no_main]
//! See `linkstream_fuzz::shm_ring`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| linkstream_fuzz::shm_ring(data));
