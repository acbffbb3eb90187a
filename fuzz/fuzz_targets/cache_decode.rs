//! Arbitrary bytes as a cached certificate file and as a retry-state sidecar.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| certloop_tests::fuzz_bodies::cache_decode(data));
