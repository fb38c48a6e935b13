# scripts/server_lib.sh - sourced (not run) by the scripts that start the
# real server on an ephemeral port: bench/http_bench.sh and
# scripts/prometheus_check.sh.

# es_start BIN CONFIG LOG [SECONDS]: starts BIN --config CONFIG in the
# background with its output in LOG, and returns once /readyz answers, with
# server_pid and port set. After SECONDS (default 30) without that, prints
# the log and exits 1. The log is created first: under set -e and pipefail
# a sed of a file the background shell has not opened yet would end the
# caller.
es_start() {
    local bin=$1 config=$2 log=$3 tries=$((${4:-30} * 10))
    : >"$log"
    "$bin" --config "$config" >"$log" 2>&1 &
    server_pid=$!
    port=""
    for _ in $(seq 1 "$tries"); do
        port=$(sed -n 's/.*listening on http:\/\/[0-9.]*:\([0-9]*\).*/\1/p' "$log" | head -n 1)
        [ -n "$port" ] && curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && return 0
        sleep 0.1
    done
    cat "$log" >&2
    exit 1
}
