//! Fuzz target `request`: a thin wrapper; the body and its invariants are `switchyard::fuzzing::request`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard::fuzzing::request(data));
