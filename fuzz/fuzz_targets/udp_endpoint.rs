#![no_main]
//! See `linkstream_fuzz::udp_endpoint`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| linkstream_fuzz::udp_endpoint(data));
