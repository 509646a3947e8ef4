#!/usr/bin/env bash
# Instruction counts per request: runs the release gateway under valgrind's callgrind, serves a fixed
# number of requests per path with the sequential bench client (after an unmeasured warm-up; the
# counters are zeroed in between, so start-up and warm-up are excluded), and prints instructions (Ir)
# and heap allocations (calls to malloc/calloc/realloc) per request, and with CACHE=1 the simulated
# L1 cache misses. Repeatable on a busy machine, unlike wall-clock figures. See bench/README.md,
# "Instruction counts" and "Cache misses".
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
: "${REQUESTS:=2000}"               # measured requests per path
: "${STREAM_REQUESTS:=500}"         # measured streams (of $CHUNKS chunks) for the stream path
: "${WARMUP:=200}"                  # unmeasured requests per path first
: "${CHUNKS:=50}"
: "${PATHS:=passthrough flagged translated stream translated-stream}"
: "${BUILD:=1}"                     # 0: use the existing binaries
: "${BIN:=$ROOT/target/release}"    # where switchyard, -bench-upstream and -bench-client are
: "${GATEWAY:=$BIN/switchyard}"     # the gateway binary measured (e.g. a copy of an older build)
: "${KEEP:=0}"                      # 1: keep the callgrind.out files and print where
: "${ANNOTATE:=0}"                  # 1: print the top functions (inclusive) of each path
: "${CACHE:=0}"                     # 1: simulate the caches too (valgrind's model of this CPU's L1 and
                                    #    last level) and print misses per request: instruction-cache
                                    #    (I1mr), data-cache read (D1mr) and write (D1mw) misses
: "${PROMPT_REPEAT:=1}"             # the user message's text this many times, one line each (40: a
                                    #    7.5 KB prompt, to see what the gateway's cost per byte is)
: "${LOG_FORMAT:=text}"              # the gateway's `[server] log_format` (with RUST_LOG=info, the access
                                    #    line's cost is in the figures: text or json)
: "${FLOOR:=0}"                     # 1: also count the mock upstream itself (a bare hyper server) and the
                                    #    hyper floor (switchyard-bench-floor, a bare hyper proxy) per request

log() { printf '[callgrind] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
command -v valgrind >/dev/null || die "valgrind is needed (apt-get install valgrind)"
command -v callgrind_control >/dev/null || die "callgrind_control is needed (part of valgrind)"
command -v python3 >/dev/null || die "python3 is needed"
if [[ $BUILD == 1 ]]; then
    log "building release binaries"
    (cd "$ROOT" && cargo build --release --locked --bins >&2)
fi
for b in "$GATEWAY" "$BIN/switchyard-bench-upstream" "$BIN/switchyard-bench-client"; do
    [[ -x $b ]] || die "missing $b (run without BUILD=0)"
done

WORK=$(mktemp -d -t switchyard-callgrind.XXXXXX)
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [[ $KEEP == 1 ]]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

source "$HERE/lib.sh"
read -r UP_PORT SY_PORT < <(free_ports 2)
WAIT_PORT_SECONDS=60  # a gateway under valgrind starts slowly

# The same bodies (the user text PROMPT_REPEAT times), flags and routes as bench/run.sh.
line=$BENCH_USER_TEXT
for ((k = 1; k < PROMPT_REPEAT; k++)); do BENCH_USER_TEXT+="\\n$line"; done
for m in passthrough flagged translated; do
    bench_body openai "$m" 0 >"$WORK/$m.json"
done
bench_body openai passthrough 1 >"$WORK/stream.json"
bench_body openai translated 1 >"$WORK/translated-stream.json"
write_bench_config "$UP_PORT" "$SY_PORT"
printf '[server]\nlog_format = "%s"\n' "$LOG_FORMAT" >>"$WORK/switchyard.toml"

"$BIN/switchyard-bench-upstream" --listen "127.0.0.1:$UP_PORT" --chunks "$CHUNKS" 2>"$WORK/upstream.log" &
PIDS+=($!)
wait_port "$UP_PORT"
export RUST_LOG=${RUST_LOG:-warn}
CG_OPTS=(--tool=callgrind)
[[ $CACHE == 1 ]] && CG_OPTS+=(--cache-sim=yes)
valgrind "${CG_OPTS[@]}" --callgrind-out-file="$WORK/callgrind.out.%p" \
    "$GATEWAY" --config "$WORK/switchyard.toml" --listen "127.0.0.1:$SY_PORT" 2>"$WORK/gateway.log" &
SY_PID=$!
PIDS+=("$SY_PID")
wait_port "$SY_PORT"

client() { # mode body requests [port]
    "$BIN/switchyard-bench-client" "$1" --url "http://127.0.0.1:${4:-$SY_PORT}/v1/chat/completions" \
        --body-file "$WORK/$2.json" -H "authorization: Bearer sk-bench" -H "x-distinct-id: bench-user-42" \
        -H 'x-person-properties: {"email": "ana@example.com", "plan": "pro"}' \
        --requests "$3" --warmup 0 --max-seconds 3600 >"$WORK/client.json" ||
        die "client failed: $(cat "$WORK/client.json")"
    python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); sys.exit(0 if r["errors"]==0 else "client errors: "+str(r["first_error"]))' "$WORK/client.json"
}

# Sums a callgrind dump: total Ir, and calls into the allocator's entry points.
summarize() { # dump-file requests
    python3 - "$1" "$2" <<'PY'
import re, sys
path, n = sys.argv[1], int(sys.argv[2])
names, total, allocs, cfn, events, totals = {}, 0, 0, None, ["Ir"], {}
# glibc's entry points (the bench binaries) and mimalloc's (the gateway's global allocator).
alloc_fns = {"malloc", "calloc", "realloc", "aligned_alloc", "posix_memalign", "memalign",
             "mi_malloc", "mi_zalloc", "mi_realloc", "mi_malloc_aligned", "mi_zalloc_aligned", "mi_realloc_aligned"}
def name_of(spec):
    m = re.match(r"\((\d+)\)(?: (.*))?", spec)
    if not m:
        return spec
    if m.group(2) is not None:
        names[m.group(1)] = m.group(2)
    return names.get(m.group(1), "")
for line in open(path, errors="replace"):
    if line.startswith("cfn="):
        cfn = name_of(line[4:].strip())
    elif line.startswith(("fn=", "cfi=", "cfl=", "fi=", "fe=", "fl=", "ob=", "cob=")):
        if line.startswith("fn="):
            name_of(line[3:].strip())
    elif line.startswith("calls=") and cfn is not None:
        if cfn.split("'")[0] in alloc_fns:
            allocs += int(line[6:].split()[0])
    elif line.startswith("events:"):
        events = line.split()[1:]
    elif line.startswith(("summary:", "totals:")):
        totals = dict(zip(events, map(int, line.split()[1:])))
        total = totals["Ir"]
misses = "".join(f" {totals[e] / n:7,.0f} {e}" for e in ("I1mr", "D1mr", "D1mw") if e in totals)
print(f"{total / n:12,.0f} Ir/request {allocs / n:8.1f} allocs/request{misses}")
PY
}

# Zeroes the counters of valgrind process $1, runs $n requests of $path on port $2, dumps, prints.
measure() { # pid port label
    client "$mode" "$path" "$WARMUP" "$2"
    callgrind_control --zero "$1" >/dev/null 2>&1
    client "$mode" "$path" "$n" "$2"
    local before dump=""
    before=$(ls "$WORK" | grep -c '^callgrind.out' || true)
    callgrind_control --dump="$3" "$1" >/dev/null 2>&1
    for _ in $(seq 1 100); do
        [[ $(ls "$WORK" | grep -c '^callgrind.out') -gt $before ]] && break
        sleep 0.1
    done
    dump=$(ls -t "$WORK"/callgrind.out.* 2>/dev/null | head -1 || true)
    [[ -n $dump ]] || die "no callgrind dump for $3"
    printf '%-17s %8s %s\n' "$3" "$n" "$(summarize "$dump" "$n")"
    if [[ $ANNOTATE == 1 ]]; then
        callgrind_annotate --inclusive=yes "$dump" 2>/dev/null | sed -n '1,60p' >&2
    fi
}

printf '%-17s %8s %s\n' path requests "gateway only, start-up and warm-up excluded"
for path in $PATHS; do
    if [[ $path == *stream ]]; then mode=stream n=$STREAM_REQUESTS; else mode=latency n=$REQUESTS; fi
    measure "$SY_PID" "$SY_PORT" "$path"
done

# Starts a bench binary under callgrind on a free port of its own (`--listen`) and measures it.
measure_alone() { # label binary args...
    local label=$1 port pid
    shift
    read -r port < <(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    valgrind "${CG_OPTS[@]}" --callgrind-out-file="$WORK/callgrind.out.%p" \
        "$@" --listen "127.0.0.1:$port" 2>"$WORK/$label.log" &
    pid=$!
    PIDS+=("$pid")
    wait_port "$port"
    measure "$pid" "$port" "$label"
}

if [[ $FLOOR == 1 ]]; then
    [[ -x $BIN/switchyard-bench-floor ]] || die "missing $BIN/switchyard-bench-floor (run without BUILD=0)"
    path=passthrough mode=latency n=$REQUESTS
    # The mock upstream answering directly: what one hyper HTTP/1 server costs per request here.
    measure_alone upstream "$BIN/switchyard-bench-upstream" --chunks "$CHUNKS"
    # The hyper floor in front of the real mock: what a bare proxy on Switchyard's stack costs.
    measure_alone hyper-floor "$BIN/switchyard-bench-floor" --upstream "127.0.0.1:$UP_PORT"
fi
