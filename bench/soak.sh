#!/usr/bin/env bash
# Switchyard's soak test driver: builds release (like bench/run.sh), starts the bench upstream with
# fault injection on and a release gateway on free loopback ports with a generated config (flags
# file, admin token, a route with fallback and cut-off, both dialects, same-dialect and translated
# backends), then runs switchyard-soak: sustained mixed load with injected upstream faults while the
# flags file is rewritten and the kill switch toggled, and the checks (PASS/FAIL each; exit 1 on any
# FAIL). Prints the client's table and its JSON line, writes bench/SOAK.md. Bounded in time and
# count, loopback only; everything it starts is stopped on exit. See bench/README.md ("Soak").
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)

# ---- settings (environment variables) ---------------------------------------------------------
QUICK=${QUICK:-0}
if [[ $QUICK == 1 ]]; then
    : "${DURATION:=10}" "${WARMUP:=2}" "${SETTLE:=3}" "${RELOAD_EVERY:=2}" "${KILL_EVERY:=3}" "${STORM_EVERY:=4}"
else
    : "${DURATION:=60}" "${WARMUP:=3}" "${SETTLE:=5}" "${RELOAD_EVERY:=3}" "${KILL_EVERY:=4}" "${STORM_EVERY:=10}"
fi
: "${STORM_LENGTH:=3}"              # seconds of every fault storm (cut-off trips)
: "${CONCURRENCY:=32}"
: "${MAX_REQUESTS:=10000000}"
: "${FAULTS:=500=1,429=1,529=1,reset=1,reset_mid=1,stall=0.5,slow=0.5,malformed=1}"
: "${H2:=25}"                       # percent of workers speaking HTTP/2 (cleartext) to the gateway
: "${CANCEL:=1}"                    # percent of fault-free streams hung up on mid-stream
: "${CHUNKS:=20}"                   # content chunks per streamed response
: "${DISTINCT_IDS:=10000}"
: "${FEEDBACK_CAPACITY:=1000}"      # [server] feedback_capacity: small, so RSS growth left is a leak
: "${RESULTS:=$HERE/SOAK.md}"
: "${KEEP_RAW:=0}"                  # 1: keep the scratch directory (config, logs) and print its path
: "${BUILD:=1}"                     # 0: use the existing target/release binaries

LOADAVG_START=$(cut -d' ' -f1-3 /proc/loadavg)
# Before anything writes the report (a tracked file): otherwise the tree always looks dirty.
REVISION=$(cd "$ROOT" && git describe --always --dirty 2>/dev/null || echo unknown)
log() { printf '[soak] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 2; }

if [[ $BUILD == 1 ]]; then
    log "building release binaries"
    (cd "$ROOT" && cargo build --release --locked --bins >&2)
fi
BIN=$ROOT/target/release
for b in switchyard switchyard-bench-upstream switchyard-soak; do
    [[ -x $BIN/$b ]] || die "missing $BIN/$b (run without BUILD=0)"
done

# ---- scratch space, processes, cleanup ---------------------------------------------------------
WORK=$(mktemp -d -t switchyard-soak.XXXXXX)
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [[ $KEEP_RAW == 1 ]]; then log "scratch kept in $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

source "$HERE/lib.sh"
read -r UP_PORT SY_PORT < <(free_ports 2)

# ---- config: both dialects, same-dialect and translated targets, fallback, cut-off ------------
# (written by the soak client itself, src/bin/switchyard-soak/setup.rs, so tests/soak.rs uses the same)
CONFIG=("$BIN/switchyard-soak" config --dir "$WORK" --upstream "http://127.0.0.1:$UP_PORT"
    --listen "127.0.0.1:$SY_PORT" --feedback-capacity "$FEEDBACK_CAPACITY")
log_cmd "${CONFIG[@]}"
"${CONFIG[@]}"

# ---- start the upstream and the gateway --------------------------------------------------------
SWITCHYARD_ADMIN_TOKEN="soak-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')"
export SWITCHYARD_ADMIN_TOKEN
export RUST_LOG=${RUST_LOG:-error}
log "upstream on $UP_PORT, switchyard on $SY_PORT; scratch in $WORK"
start_bg "$BIN/switchyard-bench-upstream" --listen "127.0.0.1:$UP_PORT" --chunks "$CHUNKS" \
    --faults none --stall-ms 2000 --slow-ms 2000 2>"$WORK/upstream.log"
PIDS+=("$!")
wait_port "$UP_PORT"
start_bg "$BIN/switchyard" --config "$WORK/switchyard.toml" --listen "127.0.0.1:$SY_PORT" 2>"$WORK/switchyard.log"
SY_PID=$!
PIDS+=("$SY_PID")
wait_port "$SY_PORT"

# ---- the soak ----------------------------------------------------------------------------------
CLIENT=("$BIN/switchyard-soak" run --url "http://127.0.0.1:$SY_PORT" --upstream "http://127.0.0.1:$UP_PORT"
    --pid "$SY_PID" --duration "$DURATION" --warmup "$WARMUP" --settle "$SETTLE"
    --concurrency "$CONCURRENCY" --max-requests "$MAX_REQUESTS" --faults "$FAULTS" --cancel "$CANCEL" --h2 "$H2"
    --storm-every "$STORM_EVERY" --storm-length "$STORM_LENGTH"
    --distinct-ids "$DISTINCT_IDS" --flags-file "$WORK/flags.json" --reload-every "$RELOAD_EVERY"
    --kill-every "$KILL_EVERY")
log_cmd "${CLIENT[@]}"
log "load for ${DURATION}s at concurrency $CONCURRENCY (warm-up ${WARMUP}s, settle ${SETTLE}s)"
STATUS=0
"${CLIENT[@]}" >"$WORK/result.json" 2>"$WORK/report.txt" || STATUS=$?
cat "$WORK/report.txt" >&2
[[ -s $WORK/result.json ]] || die "the soak client gave no result (exit $STATUS)"
kill -0 "$SY_PID" 2>/dev/null || { log "FAIL the gateway process exited"; STATUS=1; }
LOADAVG_END=$(cut -d' ' -f1-3 /proc/loadavg)

# ---- SOAK.md -----------------------------------------------------------------------------------
strip() { sed -e "s#$WORK#\$WORK#g" -e "s#$ROOT/#./#g"; }
{
    printf '# Soak test results\n\n'
    printf 'Written by `bench/soak.sh` (see bench/README.md, "Soak"). Outcome: **%s**.\n\n' \
        "$([[ $STATUS == 0 ]] && echo "all checks passed" || echo "FAILED (exit $STATUS)")"
    printf '## Machine\n\n| | |\n|---|---|\n'
    printf '| nproc | %s |\n' "$(nproc)"
    printf '| cpu | %s |\n' "$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
    printf '| kernel | %s |\n' "$(uname -sr)"
    printf '| memory | %s |\n' "$(awk '/^MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
    printf '| load average at start / end | %s / %s |\n' "$LOADAVG_START" "$LOADAVG_END"
    printf '| date | %s |\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    printf '| switchyard | %s |\n' "$REVISION"
    printf '| rustc | %s |\n\n' "$(rustc --version 2>/dev/null || echo unknown)"
    printf '## Settings\n\n| variable | value |\n|---|---|\n'
    for v in QUICK DURATION WARMUP SETTLE CONCURRENCY MAX_REQUESTS FAULTS H2 CANCEL CHUNKS DISTINCT_IDS FEEDBACK_CAPACITY RELOAD_EVERY KILL_EVERY STORM_EVERY STORM_LENGTH; do
        printf '| `%s` | `%s` |\n' "$v" "${!v}"
    done
    printf '\nBackends: first_byte_timeout 1s, idle_timeout 1s (the upstream stalls 2 s and is 2 s slow when asked).\n\n'
    printf '## Report\n\n```\n'
    strip <"$WORK/report.txt"
    printf '```\n\n## JSON\n\n```json\n'
    cat "$WORK/result.json"
    printf '```\n\n## Commands\n\n```sh\n'
    strip <"$WORK/commands.log"
    printf '```\n\nGateway config:\n\n```toml\n'
    strip <"$WORK/switchyard.toml"
    printf '```\n'
} >"$RESULTS"
cat "$WORK/result.json"
log "report written to ${RESULTS#"$ROOT/"}"
exit "$STATUS"
