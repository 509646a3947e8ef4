#!/usr/bin/env bash
# Runs every fuzz target for a bounded time, one after another on one core, starting from the
# committed seeds (fuzz/seeds/<target>/) and the corpus of earlier runs (fuzz/corpus/<target>/, not
# committed). An input that crashes, hangs or breaks an invariant is copied to
# fuzz/regressions/<target>/, which `cargo test --test fuzz_regressions` replays; the script then
# exits 1. Usage: fuzz/run.sh [SECONDS per target, default 60]
#   FUZZ_TARGETS="sse flags"   only these targets (default: all four)
#   FUZZ_SANITIZER=address     build with ASan instead of none (see below)
set -euo pipefail

SECONDS_PER_TARGET="${1:-60}"
CARGO_FUZZ_VERSION="0.13.2"
TARGETS="${FUZZ_TARGETS:-request dialect sse flags}"
# No sanitizer by default: the crate forbids unsafe code, so ASan would only watch the
# dependencies' unsafe code, at a fraction of the executions per second (ASan does work on the
# stable toolchain with RUSTC_BOOTSTRAP=1: FUZZ_SANITIZER=address); libFuzzer still catches
# panics (every invariant here is an assert), hangs (-timeout) and runaway memory (-rss_limit_mb).
SANITIZER="${FUZZ_SANITIZER:-none}"

cd "$(dirname "$0")"

# cargo-fuzz drives a nightly-only interface (`cargo -Z`, `-Z sanitizer`, sancov passes). The
# toolchain here is stable only; RUSTC_BOOTSTRAP=1 makes stable rustc and cargo accept those flags.
# It is confined to this script: the main build and `cargo test` never see it.
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version 2>/dev/null | grep -q " ${CARGO_FUZZ_VERSION}\$"; then
    echo "installing cargo-fuzz ${CARGO_FUZZ_VERSION}" >&2
    cargo install --locked cargo-fuzz --version "${CARGO_FUZZ_VERSION}"
fi

cargo fuzz build --sanitizer "${SANITIZER}"

mkdir -p logs
failed=0
summary=""
for target in ${TARGETS}; do
    mkdir -p "corpus/${target}" "artifacts/${target}" "regressions/${target}"
    log="logs/${target}.log"
    echo "== ${target}: ${SECONDS_PER_TARGET}s (log: fuzz/${log})" >&2
    # One process, one thread (no -jobs/-workers: libFuzzer's default is a single in-process run).
    if cargo fuzz run --sanitizer "${SANITIZER}" "${target}" "corpus/${target}" "seeds/${target}" -- \
        -dict="dict/${target}.dict" -max_total_time="${SECONDS_PER_TARGET}" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 \
        >"${log}" 2>&1; then
        status="ok"
    else
        status="FAILED"
        failed=1
        for found in "artifacts/${target}"/*; do
            [ -f "${found}" ] || continue
            cp "${found}" "regressions/${target}/"
            echo "   found: fuzz/regressions/${target}/$(basename "${found}")" >&2
            rm "${found}"
        done
        tail -n 40 "${log}" >&2
    fi
    runs="$(grep -ao 'stat::number_of_executed_units: *[0-9]*' "${log}" | grep -o '[0-9]*$' || true)"
    # libFuzzer's own count of the corpus it kept (the folder also holds inputs it has since replaced).
    corpus="$(grep -ao 'corp: [0-9]*/[0-9a-zA-Z]*' "${log}" | tail -n 1 | cut -d' ' -f2 || true)"
    summary="${summary}${target}: ${status}, ${SECONDS_PER_TARGET}s, ${runs:-?} executions, corpus ${corpus:-?} (inputs/bytes)\n"
done

printf "%b" "${summary}" >&2
exit "${failed}"
