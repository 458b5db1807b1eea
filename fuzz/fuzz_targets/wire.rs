#![no_main]
//! See `linkstream_fuzz::wire_headers`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| linkstream_fuzz::wire_headers(data));
