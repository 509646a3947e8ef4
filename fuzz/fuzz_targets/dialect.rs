//! Fuzz target `dialect`: a thin wrapper; the body and its invariants are `switchyard::fuzzing::dialect`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard::fuzzing::dialect(data));
