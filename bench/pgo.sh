#!/usr/bin/env bash
# Profile-guided release build of the gateway (PGO): an instrumented build, trained on the
# benchmark's own workload (bench/lib.sh's routes and bodies against the repo's mock upstream: both
# caller dialects, same-dialect, flag-routed and translated, whole and streamed, several clients at
# once), its profile merged with llvm-profdata, then the release build that uses it. Prints the
# optimised binary's path on stdout. Everything it starts is stopped on exit. See bench/README.md.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)

# ---- settings (environment variables) ---------------------------------------------------------
: "${PGO_DIR:=$ROOT/target/pgo}"   # build directories, profiles and the final binary
: "${TRAIN_REQUESTS:=2000}"        # requests per client per (caller dialect, route, stream)
: "${TRAIN_CLIENTS:=4}"            # clients at once (each one request in flight)

log() { printf '[pgo] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
command -v python3 >/dev/null || die "python3 is needed (free loopback ports)"

# ---- llvm-profdata, of the LLVM that rustc uses (profiles are LLVM-version specific) -----------
HOST=$(rustc -vV | sed -n 's/^host: //p')
LLVM_MAJOR=$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
PROFDATA=$(rustc --print sysroot)/lib/rustlib/$HOST/bin/llvm-profdata
if [[ ! -x $PROFDATA ]] && command -v rustup >/dev/null; then
    log "adding the llvm-tools component (llvm-profdata) with rustup"
    rustup component add llvm-tools >&2 || log "rustup could not add llvm-tools"
fi
if [[ ! -x $PROFDATA ]]; then
    # Debian's llvm-NN package, when its major version is rustc's.
    PROFDATA=$(command -v "llvm-profdata-$LLVM_MAJOR" || true)
fi
[[ -n $PROFDATA && -x $PROFDATA ]] ||
    die "no llvm-profdata for LLVM $LLVM_MAJOR: 'rustup component add llvm-tools', or install llvm-$LLVM_MAJOR"

# ---- scratch space, processes, cleanup ---------------------------------------------------------
WORK=$(mktemp -d -t switchyard-pgo.XXXXXX)
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
source "$HERE/lib.sh"

# ---- builds: the bench helpers as usual, the gateway instrumented in its own target dir --------
cd "$ROOT"
log "building the mock upstream and the bench client"
cargo build --release --locked --bin switchyard-bench-upstream --bin switchyard-bench-client >&2
BIN=$ROOT/target/release
RAW=$PGO_DIR/raw
rm -rf "$RAW"
mkdir -p "$RAW"
log "building the instrumented gateway ($PGO_DIR/gen)"
RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-generate=$RAW" CARGO_TARGET_DIR=$PGO_DIR/gen \
    cargo build --release --locked --bin switchyard >&2

# ---- training -----------------------------------------------------------------------------------
read -r UP_PORT SY_PORT < <(free_ports 2)
write_bench_config "$UP_PORT" "$SY_PORT"
export RUST_LOG=${RUST_LOG:-warn}
start_server UP_PID "$UP_PORT" "$WORK/upstream.log" "$BIN/switchyard-bench-upstream" --listen "127.0.0.1:$UP_PORT" --chunks 50
start_server SY_PID "$SY_PORT" "$WORK/switchyard.log" "$PGO_DIR/gen/release/switchyard" --config "$WORK/switchyard.toml"

IDENTITY=(-H "x-distinct-id: bench-user-42" -H 'x-person-properties: {"email": "ana@example.com", "plan": "pro"}')
train() { # dialect model stream
    local dialect=$1 model=$2 stream=$3 url mode=latency i body=$WORK/$1-$2-$3.json
    local headers=("${IDENTITY[@]}")
    if [[ $dialect == openai ]]; then
        url=http://127.0.0.1:$SY_PORT/v1/chat/completions
        headers+=(-H "authorization: Bearer sk-bench")
    else
        url=http://127.0.0.1:$SY_PORT/v1/messages
        headers+=(-H "x-api-key: sk-bench" -H "anthropic-version: 2023-06-01")
    fi
    [[ $stream == 1 ]] && mode=stream
    bench_body "$dialect" "$model" "$stream" >"$body"
    local clients=()
    for i in $(seq 1 "$TRAIN_CLIENTS"); do
        "$BIN/switchyard-bench-client" "$mode" --url "$url" --body-file "$body" "${headers[@]}" \
            --requests "$TRAIN_REQUESTS" --warmup 0 >"$WORK/train-$dialect-$model-$stream-$i.json" &
        clients+=($!)
    done
    for i in "${clients[@]}"; do wait "$i" || die "a training client failed ($dialect $model stream=$stream)"; done
    # Every answer must have been a 2xx: a profile of error paths would optimise the wrong code.
    python3 - "$WORK"/train-"$dialect-$model-$stream"-*.json <<'PY' || die "training requests failed ($dialect $model stream=$stream)"
import json, sys
for f in sys.argv[1:]:
    d = json.loads(open(f).read().strip().splitlines()[-1])
    if d.get("errors") or not d.get("ok"):
        sys.exit(f"{f}: {d.get('errors')} errors, first: {d.get('first_error')}")
PY
}
log "training: $TRAIN_CLIENTS clients x $TRAIN_REQUESTS requests per route, caller dialect and stream"
for stream in 0 1; do
    # OpenAI callers: same dialect, flag-routed, translated to Anthropic.
    for model in passthrough flagged translated; do train openai "$model" "$stream"; done
    # Anthropic callers: translated to OpenAI (passthrough and flagged), same dialect (translated).
    for model in passthrough flagged translated; do train anthropic "$model" "$stream"; done
done
# The profile is written when the process exits: a graceful stop, then wait for it.
kill -TERM "$SY_PID"
wait "$SY_PID" || die "the instrumented gateway did not exit cleanly: $(tail -c 400 "$WORK/switchyard.log")"
compgen -G "$RAW/*.profraw" >/dev/null || die "no profile written in $RAW"
"$PROFDATA" merge -o "$PGO_DIR/switchyard.profdata" "$RAW"
log "profile: $PGO_DIR/switchyard.profdata ($(du -h "$PGO_DIR/switchyard.profdata" | cut -f1))"

# ---- the optimised build ------------------------------------------------------------------------
log "building the profile-guided gateway ($PGO_DIR/use)"
RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-use=$PGO_DIR/switchyard.profdata -Cllvm-args=-pgo-warn-missing-function=false" \
    CARGO_TARGET_DIR=$PGO_DIR/use cargo build --release --locked --bin switchyard >&2
install -m 0755 "$PGO_DIR/use/release/switchyard" "$PGO_DIR/switchyard"

# A smoke check of the result: it serves the benchmark's routes.
read -r SY_PORT < <(free_ports 1)
start_server SY_PID "$SY_PORT" "$WORK/pgo.log" "$PGO_DIR/switchyard" --config "$WORK/switchyard.toml" --listen "127.0.0.1:$SY_PORT"
TRAIN_CLIENTS=1 TRAIN_REQUESTS=10
train openai translated 1
train anthropic passthrough 0
log "done: $PGO_DIR/switchyard"
echo "$PGO_DIR/switchyard"
