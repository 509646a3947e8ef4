//! Replays the fuzz corpus that is committed: every seed (`fuzz/seeds/<target>/`) and every input a
//! fuzz run found a failure with (`fuzz/regressions/<target>/`), through the same entry points the
//! fuzzer calls (`switchyard::fuzzing`), so CI keeps the findings fixed without building the fuzzer.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

fn inputs(kind: &str, target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz").join(kind).join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else { return Vec::new() };
    let mut files: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).filter(|p| p.is_file()).collect();
    files.sort();
    files
}

fn replay(kind: &str) -> usize {
    let mut n = 0;
    for (target, run) in switchyard::fuzzing::TARGETS {
        for file in inputs(kind, target) {
            let data = std::fs::read(&file).unwrap();
            let outcome = std::panic::catch_unwind(|| run(&data));
            assert!(
                outcome.is_ok(),
                "fuzz/{kind}/{target}/{} fails again",
                file.file_name().unwrap().to_string_lossy()
            );
            n += 1;
        }
    }
    n
}

#[test]
fn every_seed_input_passes_every_invariant_of_its_target() {
    for (target, _) in switchyard::fuzzing::TARGETS {
        assert!(!inputs("seeds", target).is_empty(), "fuzz/seeds/{target}/ has no seeds");
    }
    assert!(replay("seeds") > 0);
}

#[test]
fn every_input_a_fuzz_run_failed_on_now_passes() {
    replay("regressions");
}

#[test]
fn empty_and_tiny_inputs_are_handled_by_every_target() {
    for (_, run) in switchyard::fuzzing::TARGETS {
        for data in [&b""[..], b"\x00", b"\x01\x02", b"\x05\xff\xff", b"\n", b"{}", b"\x02\x00{\"x\":1}"] {
            run(data);
        }
    }
}
