# Shared by bench/run.sh, bench/callgrind.sh, bench/soak.sh and bench/pgo.sh (sourced, after each
# defines `die` and `WORK`): free loopback ports, waiting for a listener, the commands log,
# background servers, the benchmark gateway's flags file and config (the same routes for every
# measure) and its request bodies.

# Prints N free loopback ports.
free_ports() {
    python3 - "$1" <<'PY'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

# Waits until something listens on 127.0.0.1:PORT (up to WAIT_PORT_SECONDS, default 10).
wait_port() {
    local port=$1 i
    for i in $(seq 1 $((${WAIT_PORT_SECONDS:-10} * 20))); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        sleep 0.05
    done
    die "nothing listening on port $port"
}

# Every command goes to $WORK/commands.log (shell-quoted, for the reports).
log_cmd() {
    printf '%q ' "$@" >>"$WORK/commands.log"
    printf '\n' >>"$WORK/commands.log"
}

# Starts a server in the background; $! is then the server's own pid (not a subshell's).
start_bg() {
    log_cmd "$@"
    "$@" &
}

# Starts a server (its stderr to LOG), keeps its pid in the variable named first, waits for its port
# (the caller keeps PIDS, the servers it stops on exit).
start_server() { # pid-variable port log command...
    local var=$1 port=$2 log=$3
    shift 3
    start_bg "$@" 2>"$log"
    printf -v "$var" '%s' "$!"
    PIDS+=("$!")
    wait_port "$port"
}

# Writes $WORK/flags.json and $WORK/switchyard.toml: routes `passthrough` (same dialect, model
# swapped), `flagged` (a multivariate flag with two person-property conditions), `translated`
# (an Anthropic backend: translated for an OpenAI caller) and `anthropic` (the same backend, for an
# Anthropic caller: same dialect), all to the mock upstream on UP_PORT; the gateway on SY_PORT.
write_bench_config() {
    local up_port=$1 sy_port=$2
    cat >"$WORK/flags.json" <<'JSON'
{"flags":[{"id":1,"key":"exp","active":true,"filters":{"groups":[{"properties":[
  {"key":"plan","type":"person","value":["pro","team"],"operator":"exact"},
  {"key":"email","type":"person","value":"@corp.com","operator":"not_icontains"}],"rollout_percentage":100}],
  "multivariate":{"variants":[{"key":"a","rollout_percentage":50},{"key":"b","rollout_percentage":50}]}}}],
 "cohorts":{},"group_type_mapping":{}}
JSON
    cat >"$WORK/switchyard.toml" <<TOML
listen = "127.0.0.1:$sy_port"
[flags]
file = "flags.json"
[backends.up-openai]
kind = "openai"
base_url = "http://127.0.0.1:$up_port"
[backends.up-anthropic]
kind = "anthropic"
base_url = "http://127.0.0.1:$up_port"
[[routes]]
model = "passthrough"
control = { backend = "up-openai", model = "gpt-4o" }
[[routes]]
model = "flagged"
flag = "exp"
control = { backend = "up-openai", model = "gpt-4o" }
variants = { "a" = { backend = "up-openai", model = "gpt-4o-a" }, "b" = { backend = "up-openai", model = "gpt-4o-b" } }
[[routes]]
model = "translated"
control = { backend = "up-anthropic", model = "claude-sonnet-4-5" }
[[routes]]
model = "anthropic"
control = { backend = "up-anthropic", model = "claude-sonnet-4-5" }
TOML
}

# The benchmark's request body (about 400 bytes, the size peers use) in DIALECT (openai or
# anthropic) for MODEL, streaming when STREAM is 1.
BENCH_SYSTEM="You are a concise assistant. Answer in one short paragraph, plainly, without lists."
BENCH_USER_TEXT="Summarize in one sentence: the quarterly report shows revenue up eight percent, costs flat, two new regions launched ahead of schedule, and hiring paused until the next planning cycle."
bench_body() { # dialect model stream
    local stream=""
    [[ $3 == 1 ]] && stream=',"stream":true'
    case $1 in
        openai) printf '{"model":"%s","messages":[{"role":"system","content":"%s"},{"role":"user","content":"%s"}],"temperature":0.2,"max_tokens":256%s}' \
            "$2" "$BENCH_SYSTEM" "$BENCH_USER_TEXT" "$stream" ;;
        anthropic) printf '{"model":"%s","max_tokens":256,"system":"%s","messages":[{"role":"user","content":"%s"}],"temperature":0.2%s}' \
            "$2" "$BENCH_SYSTEM" "$BENCH_USER_TEXT" "$stream" ;;
        *) die "bench_body: unknown dialect $1" ;;
    esac
}
