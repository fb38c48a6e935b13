#!/usr/bin/env bash
# http_bench.sh - lookups of 16 ids x D=128 through embedding-server, as JSON
# and as binary, against nginx serving a static file of the very same bytes,
# all measured in one run with wrk (-t2 -c32) on loopback.
#
#   bench/http_bench.sh [BUILD_DIR]      (default: build; needs embedding-server built)
#   DURATION=5 ROUNDS=3 CONNECTIONS=32 THREADS=2 bench/http_bench.sh
#
# Prints requests/s and p50/p99 latency for the four runs of each round, the
# medians over the rounds, and the ratios server/nginx. Targets (issue 3): JSON >= 0.5x nginx, binary >= 0.9x nginx.
# The machine's two cores are shared by wrk, the server and nginx, and the
# figures are noisy run to run: compare the ratios, not absolute numbers.
# Everything lives in a temporary folder that is removed at exit; only
# loopback addresses are used.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/scripts/server_lib.sh"
build=${1:-$root/build}
server_bin=$build/embedding-server
duration=${DURATION:-5}
rounds=${ROUNDS:-3}
connections=${CONNECTIONS:-32}
threads=${THREADS:-2}
rows=${ROWS:-100000}
dim=128
nids=16

for tool in wrk nginx curl; do
    command -v "$tool" >/dev/null || { echo "http_bench: $tool is not installed" >&2; exit 1; }
done
[ -x "$server_bin" ] || { echo "http_bench: no $server_bin; build first (make build)" >&2; exit 1; }

work=$(mktemp -d /tmp/es-bench-XXXXXX)
chmod 755 "$work" # nginx workers run as another user when started by root
server_pid=""
nginx_pid=""
cleanup() {
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null || true
    [ -n "$nginx_pid" ] && kill "$nginx_pid" 2>/dev/null && wait "$nginx_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
[ -n "${KEEP:-}" ] && trap - EXIT

# ---- the server: one frozen-in-memory table of rows x 128, ephemeral port
cat >"$work/config.json" <<EOF
{"listen": {"host": "127.0.0.1", "port": 0}, "data_dir": "$work/data",
 "log_level": "info", "snapshot": {"on_shutdown": false},
 "tables": [{"name": "bench", "init": {"num_embeddings": $rows, "embedding_dim": $dim, "seed": 1}}]}
EOF
es_start "$server_bin" "$work/config.json" "$work/server.log" 60
server="http://127.0.0.1:$port"

# 16 ids spread over the table
ids=$(seq 0 $((nids - 1)) | awk -v r="$rows" '{printf "%s%d", (NR>1?",":""), ($1 * 7919 + 13) % r}')
body="{\"ids\": [$ids]}"
lookup="$server/v1/tables/bench/lookup"

# ---- nginx: the same bytes as each answer, as static files
mkdir -p "$work/www" "$work/nginx"
curl -sf "$lookup" -H 'Content-Type: application/json' -d "$body" -o "$work/www/answer.json"
curl -sf "$lookup" -H 'Content-Type: application/json' -H 'Accept: application/octet-stream' \
    -d "$body" -o "$work/www/answer.bin"
json_bytes=$(stat -c %s "$work/www/answer.json")
bin_bytes=$(stat -c %s "$work/www/answer.bin")
[ "$bin_bytes" -eq $((nids * dim * 4)) ] || { echo "binary answer has $bin_bytes bytes" >&2; exit 1; }

write_nginx_conf() {
    cat >"$work/nginx/nginx.conf" <<EOF
worker_processes $threads;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $work/nginx/body;
    proxy_temp_path $work/nginx/proxy;
    fastcgi_temp_path $work/nginx/fastcgi;
    uwsgi_temp_path $work/nginx/uwsgi;
    scgi_temp_path $work/nginx/scgi;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$1;
        root $work/www;
        location / { }
    }
}
EOF
}

# nginx cannot bind port 0, so try ports below Linux's ephemeral range until
# one binds and serves our file (another program may hold any given port)
start_nginx() {
    local p
    for _ in $(seq 1 20); do
        p=$((10000 + RANDOM % 20000))
        write_nginx_conf "$p"
        nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" -g 'daemon off;' 2>"$work/nginx/stderr" &
        nginx_pid=$!
        for _ in $(seq 1 40); do
            if curl -sf "http://127.0.0.1:$p/answer.bin" -o "$work/check.bin" &&
                cmp -s "$work/check.bin" "$work/www/answer.bin"; then
                nginx_port=$p
                return 0
            fi
            kill -0 "$nginx_pid" 2>/dev/null || break
            sleep 0.05
        done
        kill "$nginx_pid" 2>/dev/null && wait "$nginx_pid" 2>/dev/null || true
        nginx_pid=""
    done
    echo "http_bench: nginx did not start:" >&2
    cat "$work/nginx/error.log" >&2
    exit 1
}
start_nginx
nginx_url="http://127.0.0.1:$nginx_port"

# ---- wrk scripts: a POST with the body and the Accept header
cat >"$work/json.lua" <<EOF
wrk.method = "POST"
wrk.body = '$body'
wrk.headers["Content-Type"] = "application/json"
EOF
cat >"$work/bin.lua" <<EOF
wrk.method = "POST"
wrk.body = '$body'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/octet-stream"
EOF

# run NAME URL [SCRIPT] -> appends "rps p50_ms p99_ms" to $work/NAME.res
to_ms() {
    awk '{ v = $1; if (v ~ /us$/) { sub(/us$/, "", v); v /= 1000 }
           else if (v ~ /ms$/) { sub(/ms$/, "", v) }
           else if (v ~ /s$/) { sub(/s$/, "", v); v *= 1000 }
           printf "%.3f", v }'
}
run() {
    local name=$1 url=$2 script=${3:-}
    local args=(-t"$threads" -c"$connections" -d"${duration}s" --latency)
    [ -n "$script" ] && args+=(-s "$script")
    wrk "${args[@]}" "$url" >"$work/$name.out" 2>&1
    if grep -q "Non-2xx" "$work/$name.out"; then
        echo "http_bench: $name had non-2xx answers:" >&2
        cat "$work/$name.out" >&2
        exit 1
    fi
    local rps p50 p99
    rps=$(awk '/Requests\/sec/ {print $2}' "$work/$name.out")
    p50=$(awk '$1 == "50%" {print $2}' "$work/$name.out" | to_ms)
    p99=$(awk '$1 == "99%" {print $2}' "$work/$name.out" | to_ms)
    echo "$rps $p50 $p99" >>"$work/$name.res"
    printf '  %-14s %10.0f req/s   p50 %7.3f ms   p99 %7.3f ms\n' "$name" "$rps" "$p50" "$p99"
}

# median of column COL of file F
median() { sort -g -k"$2" "$1" | awk -v c="$2" '{ v[NR] = $c } END { print v[int((NR + 1) / 2)] }'; }

echo "lookup of $nids ids x D=$dim from a ${rows}-row table; wrk -t$threads -c$connections -d${duration}s"
echo "answer sizes: JSON $json_bytes bytes, binary $bin_bytes bytes"
echo "$rounds rounds; each round runs the four back to back, so a ratio compares"
echo "neighbours in time (other load on the machine moves both sides alike)"
for round in $(seq 1 "$rounds"); do
    echo "round $round"
    run nginx-json "$nginx_url/answer.json"
    run server-json "$lookup" "$work/json.lua"
    run nginx-binary "$nginx_url/answer.bin"
    run server-binary "$lookup" "$work/bin.lua"
    for kind in json binary; do
        awk -v a="$(tail -1 "$work/server-$kind.res" | cut -d' ' -f1)" \
            -v b="$(tail -1 "$work/nginx-$kind.res" | cut -d' ' -f1)" \
            'BEGIN { printf "%.3f\n", a / b }' >>"$work/ratio-$kind.res"
    done
done

echo "medians over $rounds rounds:"
for name in nginx-json server-json nginx-binary server-binary; do
    printf '  %-14s %10.0f req/s   p50 %7.3f ms   p99 %7.3f ms\n' "$name" \
        "$(median "$work/$name.res" 1)" "$(median "$work/$name.res" 2)" "$(median "$work/$name.res" 3)"
done
echo "ratio JSON   server/nginx: $(median "$work/ratio-json.res" 1)x (median of rounds: $(tr '\n' ' ' <"$work/ratio-json.res"); target >= 0.5)"
echo "ratio binary server/nginx: $(median "$work/ratio-binary.res" 1)x (median of rounds: $(tr '\n' ' ' <"$work/ratio-binary.res"); target >= 0.9)"
