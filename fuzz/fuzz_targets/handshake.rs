#![no_main]
//! See `linkstream_fuzz::handshake`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| linkstream_fuzz::handshake(data));
