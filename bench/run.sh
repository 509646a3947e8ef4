#!/usr/bin/env bash
# Switchyard's benchmark driver: builds release, installs the load generator (oha) if missing,
# starts the mock upstream, Switchyard, the hyper floor, (with PGO=1) the profile-guided build of
# bench/pgo.sh and (when installed) nginx on free loopback ports, then measures side by side —
# direct to the mock, through Switchyard, through the floor, through nginx — in interleaved
# repetitions, and hands the raw JSON to bench/report.py for medians,
# the table, the final JSON line and bench/RESULTS.md. Everything it starts is stopped on exit. See
# bench/README.md.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)

# ---- settings (environment variables) ---------------------------------------------------------
QUICK=${QUICK:-0}
if [[ $QUICK == 1 ]]; then
    : "${REPS:=1}" "${DURATION:=500ms}" "${WARMUP_DURATION:=200ms}" "${LAT_REQUESTS:=500}"
    : "${STREAM_REQUESTS:=100}" "${RATES:=1000 5000}"
else
    : "${REPS:=3}" "${DURATION:=10s}" "${WARMUP_DURATION:=2s}" "${LAT_REQUESTS:=10000}"
    : "${STREAM_REQUESTS:=2000}" "${RATES:=1000 5000}"
fi
: "${CONNECTIONS:=64}"              # connections for fixed-rate and max-throughput runs
: "${OPEN_STREAMS:=1000}"           # concurrent open streams for the RSS measurement
: "${CHUNKS:=50}"                   # content chunks per streamed response
: "${PATHS:=passthrough flagged translated}"
: "${STREAM_PATHS:=passthrough anthropic translated}"
: "${TARGETS:=direct switchyard floor nginx}"
: "${NGINX:=auto}"                  # auto: use nginx when installed; 0: never; 1: required
: "${INSTALL_NGINX:=0}"             # 1: apt-get install nginx-light when missing
: "${OHA_VERSION:=1.16.0}"
: "${RESULTS:=$HERE/RESULTS.md}"
: "${KEEP_RAW:=0}"                  # 1: keep the raw JSON directory and print its path
: "${BUILD:=1}"                     # 0: use the existing target/release binaries
: "${PGO:=0}"                       # 1: also measure the profile-guided build (target "pgo")
: "${PGO_BIN:=$ROOT/target/pgo/switchyard}"  # that build (bench/pgo.sh makes it; BUILD=0 reuses it)
: "${BLOCK:=10}"                    # one-in-flight and stream runs: requests to one target before
                                    #   the next one's turn (0: each target's requests all in a row,
                                    #   target after target, as before 2026-12-02)
export REPS DURATION RATES CONNECTIONS OPEN_STREAMS CHUNKS PATHS STREAM_PATHS QUICK OHA_VERSION BLOCK

LOADAVG_START=$(cut -d' ' -f1-3 /proc/loadavg)
# Total and stolen CPU ticks (the `cpu` line of /proc/stat: steal is the 8th figure): on a virtual
# machine, the time the hypervisor gave other tenants while this one wanted to run.
cpu_steal_ticks() { awk '/^cpu / {t = 0; for (i = 2; i <= 9; i++) t += $i; print t, $9}' /proc/stat; }
read -r CPU_TOTAL_START CPU_STEAL_START < <(cpu_steal_ticks)
log() { printf '[bench] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---- tools -------------------------------------------------------------------------------------
command -v python3 >/dev/null || die "python3 is needed for the report"
if [[ $BUILD == 1 ]]; then
    log "building release binaries"
    (cd "$ROOT" && cargo build --release --locked --bins >&2)
fi
BIN=$ROOT/target/release
# The profile-guided build is a target of its own, measured beside the plain one.
if [[ $PGO == 1 ]]; then
    [[ " $TARGETS " == *" pgo "* ]] || TARGETS=${TARGETS/switchyard/switchyard pgo}
    if [[ $BUILD == 1 ]]; then
        log "building the profile-guided gateway (bench/pgo.sh)"
        PGO_BIN=$("$HERE/pgo.sh")
    fi
fi
WITH_PGO=0
if [[ " $TARGETS " == *" pgo "* ]]; then
    WITH_PGO=1
    [[ -x $PGO_BIN ]] || die "missing $PGO_BIN (bench/pgo.sh builds it; or run with BUILD=1)"
fi
# The floor (a bare hyper reverse proxy) runs only when TARGETS names it.
WITH_FLOOR=0
[[ " $TARGETS " == *" floor "* ]] && WITH_FLOOR=1
NEEDED=(switchyard switchyard-bench-upstream switchyard-bench-client)
[[ $WITH_FLOOR == 1 ]] && NEEDED+=(switchyard-bench-floor)
for b in "${NEEDED[@]}"; do
    [[ -x $BIN/$b ]] || die "missing $BIN/$b (run without BUILD=0)"
done
if ! command -v oha >/dev/null; then
    log "installing oha $OHA_VERSION with cargo install"
    cargo install oha --version "$OHA_VERSION" --locked >&2
    command -v oha >/dev/null || PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
fi
command -v oha >/dev/null || die "oha not found after install"

NGINX_BIN=$(command -v nginx || PATH="$PATH:/usr/sbin:/sbin" command -v nginx || true)
if [[ -z $NGINX_BIN && $INSTALL_NGINX == 1 ]]; then
    log "installing nginx-light with apt-get"
    DEBIAN_FRONTEND=noninteractive apt-get install -y nginx-light >&2
    NGINX_BIN=$(PATH="$PATH:/usr/sbin:/sbin" command -v nginx || true)
fi
# nginx runs only when TARGETS names it (and it is installed, or NGINX=1 demands it).
[[ " $TARGETS " == *" nginx "* ]] || NGINX=0
if [[ $NGINX == 0 || ( -z $NGINX_BIN && $NGINX == auto ) ]]; then
    [[ -z $NGINX_BIN ]] && log "nginx not installed: no nginx column (INSTALL_NGINX=1 installs it)"
    TARGETS=${TARGETS//nginx/}
    NGINX_BIN=""
elif [[ -z $NGINX_BIN ]]; then
    die "NGINX=1 but nginx is not installed"
fi

# ---- scratch space, processes, cleanup ---------------------------------------------------------
WORK=$(mktemp -d -t switchyard-bench.XXXXXX)
RAW=$WORK/raw
mkdir -p "$RAW"
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [[ $KEEP_RAW == 1 ]]; then log "raw results kept in $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Many sockets at once (1,000 streams through a proxy is 2,000 descriptors there).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

source "$HERE/lib.sh"
read -r UP_PORT SY_PORT FL_PORT NG_PORT PG_PORT < <(free_ports 5)

# A command logged to commands.log, then run.
run_logged() {
    log_cmd "$@"
    "$@"
}

# ---- request bodies (bench_body in lib.sh) -----------------------------------------------------
B=$WORK/bodies
mkdir -p "$B"
for s in 0 1; do
    bench_body openai gpt-4o $s >"$B/openai-direct-$s.json"
    bench_body openai passthrough $s >"$B/openai-passthrough-$s.json"
    bench_body openai flagged $s >"$B/openai-flagged-$s.json"
    bench_body openai translated $s >"$B/openai-translated-$s.json"
    bench_body anthropic claude-sonnet-4-5 $s >"$B/anthropic-direct-$s.json"
    bench_body anthropic anthropic $s >"$B/anthropic-anthropic-$s.json"
done

# ---- configs -----------------------------------------------------------------------------------
write_bench_config "$UP_PORT" "$SY_PORT"
if [[ -n $NGINX_BIN ]]; then
    mkdir -p "$WORK/nginx/logs"
    NGINX_USER=""
    [[ $(id -u) == 0 ]] && NGINX_USER="user root root;"
    cat >"$WORK/nginx/nginx.conf" <<NGX
$NGINX_USER
daemon off;
master_process on;
worker_processes auto;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/logs/error.log warn;
events { worker_connections 8192; }
http {
    access_log off;
    client_body_temp_path $WORK/nginx/body;
    proxy_temp_path $WORK/nginx/proxy;
    fastcgi_temp_path $WORK/nginx/fastcgi;
    uwsgi_temp_path $WORK/nginx/uwsgi;
    scgi_temp_path $WORK/nginx/scgi;
    tcp_nodelay on;
    keepalive_requests 1000000;
    upstream mock {
        server 127.0.0.1:$UP_PORT;
        keepalive 256;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$NG_PORT backlog=4096;
        location / {
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }
    }
}
NGX
fi

# ---- start everything --------------------------------------------------------------------------
rss_kib() { # pids... -> summed VmRSS in KiB
    local total=0 pid v
    for pid in "$@"; do
        v=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
        total=$((total + ${v:-0}))
    done
    echo "$total"
}
cpu_ticks() { # pids... -> summed utime+stime in clock ticks
    local total=0 pid v
    for pid in "$@"; do
        # Fields after the ")" that closes comm: utime and stime are the 12th and 13th.
        v=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | awk '{print $12 + $13}' || echo 0)
        total=$((total + ${v:-0}))
    done
    echo "$total"
}

log "mock upstream on $UP_PORT, switchyard on $SY_PORT$([[ $WITH_PGO == 1 ]] && echo ", pgo on $PG_PORT")$([[ $WITH_FLOOR == 1 ]] && echo ", floor on $FL_PORT")${NGINX_BIN:+, nginx on $NG_PORT}; raw in $WORK"
start_server UP_PID "$UP_PORT" "$WORK/upstream.log" "$BIN/switchyard-bench-upstream" --listen "127.0.0.1:$UP_PORT" --chunks "$CHUNKS"
export RUST_LOG=${RUST_LOG:-warn}
start_server SY_PID "$SY_PORT" "$WORK/switchyard.log" "$BIN/switchyard" --config "$WORK/switchyard.toml" --listen "127.0.0.1:$SY_PORT"
PG_PID=""
if [[ $WITH_PGO == 1 ]]; then
    start_server PG_PID "$PG_PORT" "$WORK/pgo.log" "$PGO_BIN" --config "$WORK/switchyard.toml" --listen "127.0.0.1:$PG_PORT"
fi
FL_PID=""
if [[ $WITH_FLOOR == 1 ]]; then
    start_server FL_PID "$FL_PORT" "$WORK/floor.log" "$BIN/switchyard-bench-floor" --listen "127.0.0.1:$FL_PORT" --upstream "127.0.0.1:$UP_PORT"
fi
NG_PIDS=()
if [[ -n $NGINX_BIN ]]; then
    start_bg "$NGINX_BIN" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" 2>"$WORK/nginx/stderr.log"
    NG_MASTER=$!
    PIDS+=("$NG_MASTER")
    wait_port "$NG_PORT"
    sleep 0.2
    mapfile -t NG_PIDS < <(echo "$NG_MASTER"; pgrep -P "$NG_MASTER" || true)
fi
sleep 0.3
pids_of() {
    case $1 in
        direct) echo "$UP_PID" ;;
        switchyard) echo "$SY_PID" ;;
        pgo) echo "$PG_PID" ;;
        floor) echo "$FL_PID" ;;
        nginx) echo "${NG_PIDS[*]}" ;;
    esac
}
{
    printf '{"kind":"idle","phase":"start"'
    for t in $TARGETS; do
        # shellcheck disable=SC2046
        printf ',"%s":%s' "$t" "$(rss_kib $(pids_of "$t"))"
    done
    printf '}\n'
} >"$RAW/idle-start.json"

# ---- what each (path, target) sends -----------------------------------------------------------
CLIENT_HEADERS=(-H "authorization: Bearer sk-bench" -H "x-distinct-id: bench-user-42"
    -H 'x-person-properties: {"email": "ana@example.com", "plan": "pro"}')
# Sets URL, BODY and EXTRA (extra headers) for path $1 (stream $2) and target $3. The floor and
# nginx forward what they get, so they send the direct bodies.
request_for() {
    local path=$1 stream=$2 target=$3 port
    case $target in
        direct) port=$UP_PORT ;;
        switchyard) port=$SY_PORT ;;
        pgo) port=$PG_PORT ;;
        floor) port=$FL_PORT ;;
        nginx) port=$NG_PORT ;;
    esac
    EXTRA=()
    if [[ $path == anthropic ]]; then
        URL="http://127.0.0.1:$port/v1/messages"
        BODY="$B/anthropic-$([[ $target == switchyard || $target == pgo ]] && echo anthropic || echo direct)-$stream.json"
        EXTRA=(-H "anthropic-version: 2023-06-01")
    elif [[ $path == translated && $target != switchyard && $target != pgo ]]; then
        URL="http://127.0.0.1:$port/v1/messages"
        BODY="$B/anthropic-direct-$stream.json"
        EXTRA=(-H "anthropic-version: 2023-06-01")
    elif [[ $target == switchyard || $target == pgo ]]; then
        URL="http://127.0.0.1:$port/v1/chat/completions"
        BODY="$B/openai-$path-$stream.json"
    else
        URL="http://127.0.0.1:$port/v1/chat/completions"
        BODY="$B/openai-direct-$stream.json"
    fi
}

oha_run() { # out-file rate(0 = max) duration path target
    local out=$1 rate=$2 dur=$3 path=$4 target=$5 before after
    request_for "$path" 0 "$target"
    local args=(-z "$dur" -c "$CONNECTIONS" --no-tui --output-format json -m POST
        -T application/json -D "$BODY" "${CLIENT_HEADERS[@]}" "${EXTRA[@]}")
    [[ $rate != 0 ]] && args+=(-q "$rate" --latency-correction)
    # shellcheck disable=SC2046
    before=$(cpu_ticks $(pids_of "$target"))
    run_logged oha "${args[@]}" "$URL" >"$out.oha" 2>"$out.err" || log "oha failed: $(head -c 300 "$out.err")"
    # shellcheck disable=SC2046
    after=$(cpu_ticks $(pids_of "$target"))
    printf '{"cpu_ticks":%s,"clk_tck":%s}\n' "$((after - before))" "$(getconf CLK_TCK)" >"$out.cpu"
}

client_run() { # out-file mode path stream target [extra client args...]
    local out=$1 mode=$2 path=$3 stream=$4 target=$5
    shift 5
    request_for "$path" "$stream" "$target"
    run_logged "$BIN/switchyard-bench-client" "$mode" --url "$URL" --body-file "$BODY" \
        "${CLIENT_HEADERS[@]}" "${EXTRA[@]}" "$@" >"$out" 2>"$out.err" ||
        log "client failed: $(head -c 300 "$out.err")"
}

# The one-in-flight (or stream) measures of path $2 for every target, written to
# $RAW/$1__<path>__<target>__r$3.json as one single-target run writes them. With BLOCK > 0 the
# targets take turns, BLOCK requests at a time, in one client (one request in flight in all): a
# burst of the shared machine's noise then falls on every target alike, not on the one measured
# at the time. Extra client arguments follow.
client_runs() { # kind(latency|stream) path rep [extra client args...]
    local kind=$1 path=$2 rep=$3 stream=0 target
    shift 3
    [[ $kind == stream ]] && stream=1
    if [[ $BLOCK == 0 ]]; then
        for target in $TARGETS; do
            client_run "$RAW/${kind}__${path}__${target}__r$rep.json" "$kind" "$path" "$stream" "$target" "$@"
        done
        return
    fi
    local spec=$WORK/targets-$kind-$path.json out=$WORK/interleaved-$kind-$path-r$rep.json sep="" h
    {
        printf '['
        for target in $TARGETS; do
            request_for "$path" "$stream" "$target"
            printf '%s{"name":"%s","url":"%s","body_file":"%s","headers":[' "$sep" "$target" "$URL" "$BODY"
            local hsep=""
            for h in "${CLIENT_HEADERS[@]}" "${EXTRA[@]}"; do
                [[ $h == -H ]] && continue
                printf '%s%s' "$hsep" "$(printf '%s' "$h" | python3 -c 'import json,sys; print(json.dumps(sys.stdin.read()), end="")')"
                hsep=","
            done
            printf ']}'
            sep=","
        done
        printf ']\n'
    } >"$spec"
    local args=(interleaved --targets-file "$spec" --block "$BLOCK")
    [[ $kind == stream ]] && args+=(--stream)
    run_logged "$BIN/switchyard-bench-client" "${args[@]}" "$@" >"$out" 2>"$out.err" ||
        log "client failed: $(head -c 300 "$out.err")"
    python3 - "$out" "$RAW" "$kind" "$path" "$rep" <<'PY'
import json, sys
out, raw, kind, path, rep = sys.argv[1:]
try:
    run = json.load(open(out))
except (OSError, ValueError):
    sys.exit(0)  # the client failed (logged above): no cells for this repetition
for target, r in run["targets"].items():
    r.update(mode=kind, seconds=run["seconds"], block=run["block"])
    with open(f"{raw}/{kind}__{path}__{target}__r{rep}.json", "w") as f:
        json.dump(r, f)
PY
}

# ---- warm-up (unmeasured) ----------------------------------------------------------------------
log "warm-up"
for path in $PATHS; do
    for target in $TARGETS; do
        oha_run "$WORK/warmup-$path-$target" 0 "$WARMUP_DURATION" "$path" "$target"
    done
done

# ---- interleaved repetitions -------------------------------------------------------------------
STARTED=$(date +%s)
for rep in $(seq 1 "$REPS"); do
    log "repetition $rep/$REPS: one request in flight"
    for path in $PATHS; do
        client_runs latency "$path" "$rep" --requests "$LAT_REQUESTS" --warmup 100
    done
    log "repetition $rep/$REPS: streams of $CHUNKS chunks"
    for path in $STREAM_PATHS; do
        client_runs stream "$path" "$rep" --requests "$STREAM_REQUESTS" --warmup 20
    done
    for rate in $RATES 0; do
        log "repetition $rep/$REPS: $([[ $rate == 0 ]] && echo "max throughput" || echo "$rate req/s") for $DURATION"
        for path in $PATHS; do
            for target in $TARGETS; do
                oha_run "$RAW/rate-${rate}__${path}__${target}__r$rep" "$rate" "$DURATION" "$path" "$target"
            done
        done
    done
    log "repetition $rep/$REPS: $OPEN_STREAMS open streams"
    for target in $TARGETS; do
        [[ $target == direct ]] && continue
        # shellcheck disable=SC2046
        client_run "$RAW/open__passthrough__${target}__r$rep.json" open-streams passthrough 1 "$target" \
            -H "x-mock-chunk-delay-ms: 200" --streams "$OPEN_STREAMS" \
            $(for p in $(pids_of "$target"); do echo --rss-pid "$p"; done)
        sleep 0.5
    done
done
ELAPSED=$(($(date +%s) - STARTED))
{
    printf '{"kind":"idle","phase":"end"'
    for t in $TARGETS; do
        # shellcheck disable=SC2046
        printf ',"%s":%s' "$t" "$(rss_kib $(pids_of "$t"))"
    done
    printf '}\n'
} >"$RAW/idle-end.json"

# ---- machine and versions, then the report -----------------------------------------------------
{
    printf 'nproc=%s\n' "$(nproc)"
    printf 'cpu=%s\n' "$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
    printf 'kernel=%s\n' "$(uname -sr)"
    printf 'memory=%s\n' "$(awk '/^MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
    printf 'loadavg_start=%s\n' "$LOADAVG_START"
    printf 'loadavg_end=%s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
    read -r total steal < <(cpu_steal_ticks)
    printf 'cpu_steal=%s\n' "$(awk -v t=$((total - CPU_TOTAL_START)) -v s=$((steal - CPU_STEAL_START)) \
        'BEGIN {printf "%.1f %% of CPU time, start to end (taken by the hypervisor for other tenants)", t ? 100 * s / t : 0}')"
    printf 'date=%s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    printf 'switchyard=%s\n' "$(cd "$ROOT" && git describe --always --dirty 2>/dev/null || echo unknown)"
    printf 'rustc=%s\n' "$(rustc --version 2>/dev/null || echo unknown)"
    printf 'oha=%s\n' "$(oha --version 2>/dev/null | head -1)"
    printf 'pgo=%s\n' "$([[ $WITH_PGO == 1 ]] && echo "measured (target pgo: bench/pgo.sh, profile from its training run)" || echo "not run (PGO=1 measures it)")"
    printf 'nginx=%s\n' "$([[ -n $NGINX_BIN ]] && "$NGINX_BIN" -v 2>&1 | head -1 || echo "not run (not installed, or not in TARGETS)")"
    printf 'measure_seconds=%s\n' "$ELAPSED"
} >"$WORK/machine.txt"
python3 "$HERE/report.py" --raw "$RAW" --machine "$WORK/machine.txt" \
    --commands "$WORK/commands.log" --results "$RESULTS" \
    --strip "$WORK=\$WORK" --strip "$ROOT/=./" --strip "$NGINX_BIN=nginx"
