#![no_main]
//! See `linkstream_fuzz::shm_offer`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| linkstream_fuzz::shm_offer(data));
