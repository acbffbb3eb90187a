//! Arbitrary events and time steps (time may go backwards) against one `CertLifecycle`, with
//! the simulator's safety invariants checked after every step.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| certloop_tests::fuzz_bodies::event_sequence(data));
