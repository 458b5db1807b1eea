#![no_main]
//! See `linkstream_fuzz::host`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| linkstream_fuzz::host(data));
