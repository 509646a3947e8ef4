//! Fuzz target `flags`: a thin wrapper; the body and its invariants are `switchyard::fuzzing::flags`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard::fuzzing::flags(data));
