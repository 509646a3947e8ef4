//! Fuzz target `sse`: a thin wrapper; the body and its invariants are `switchyard::fuzzing::sse`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard::fuzzing::sse(data));
