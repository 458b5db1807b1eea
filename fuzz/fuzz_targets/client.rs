#![no_main]
//! See `linkstream_fuzz::client`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| linkstream_fuzz::client(data));
