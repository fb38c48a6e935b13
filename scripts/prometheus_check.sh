#!/usr/bin/env bash
# prometheus_check.sh - scrape embedding-server's /metrics with a real
# Prometheus (Debian's `prometheus` package) and confirm through its HTTP API
# that the target is up and that the server's metrics arrived.
#
#   scripts/prometheus_check.sh [BUILD_DIR]     (default: build)
#
# Installs Debian's prometheus when it is missing (as root, or with sudo).
# Everything runs on loopback in a temporary folder removed at exit; the
# check stops by itself within about a minute. Exit 0 when the scrape
# worked, 1 otherwise.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/scripts/server_lib.sh"
build=${1:-$root/build}
server_bin=$build/embedding-server
[ -x "$server_bin" ] || { echo "prometheus_check: no $server_bin; build first" >&2; exit 1; }

if ! command -v prometheus >/dev/null; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    echo "prometheus_check: installing Debian's prometheus"
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
        prometheus >/dev/null
fi

work=$(mktemp -d /tmp/es-prom-XXXXXX)
server_pid=""
prom_pid=""
cleanup() {
    [ -n "$prom_pid" ] && kill "$prom_pid" 2>/dev/null && wait "$prom_pid" 2>/dev/null || true
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# ---- the server, on an ephemeral port, with one small table
cat >"$work/config.json" <<EOF
{"listen": {"host": "127.0.0.1", "port": 0}, "data_dir": "$work/data",
 "snapshot": {"on_shutdown": false},
 "tables": [{"name": "t", "init": {"num_embeddings": 100, "embedding_dim": 8}}]}
EOF
es_start "$server_bin" "$work/config.json" "$work/server.log" 30
# a lookup, so that request and row counters have something to show
curl -sf "http://127.0.0.1:$port/v1/tables/t/lookup" -H 'Content-Type: application/json' \
    -d '{"ids": [1, 2, 3]}' >/dev/null

# ---- Prometheus, scraping every second
cat >"$work/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: embedding-server
    metrics_path: /metrics
    static_configs:
      - targets: ["127.0.0.1:$port"]
EOF
# the exposition itself must pass Prometheus's own linter
if command -v promtool >/dev/null; then
    curl -sf "http://127.0.0.1:$port/metrics" | promtool check metrics ||
        { echo "prometheus_check: promtool rejects /metrics" >&2; exit 1; }
    echo "promtool check metrics: clean"
fi

# Prometheus has no ephemeral port either: try ports below the ephemeral range
prom_port=""
for _ in $(seq 1 20); do
    p=$((10000 + RANDOM % 20000))
    prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
        --web.listen-address="127.0.0.1:$p" >"$work/prometheus.log" 2>&1 &
    prom_pid=$!
    for _ in $(seq 1 100); do
        if curl -sf "http://127.0.0.1:$p/-/ready" >/dev/null 2>&1; then
            prom_port=$p
            break 2
        fi
        kill -0 "$prom_pid" 2>/dev/null || break
        sleep 0.1
    done
    kill "$prom_pid" 2>/dev/null && wait "$prom_pid" 2>/dev/null || true
    prom_pid=""
done
[ -n "$prom_port" ] || { echo "prometheus did not start:" >&2; cat "$work/prometheus.log" >&2; exit 1; }
api="http://127.0.0.1:$prom_port/api/v1"

# ---- wait for a scrape: the target up, and the server's metrics stored
health=""
for _ in $(seq 1 60); do
    health=$(curl -sf "$api/targets" | grep -o '"health":"[a-z]*"' | head -1 || true)
    [ "$health" = '"health":"up"' ] && break
    sleep 1
done
if [ "$health" != '"health":"up"' ]; then
    echo "prometheus_check: the target is not up ($health):" >&2
    curl -s "$api/targets" >&2 || true
    exit 1
fi
query() { curl -sf "$api/query" --data-urlencode "query=$1"; }
for _ in $(seq 1 20); do
    answer=$(query 'embedding_server_requests_total{route="/v1/tables/{t}/lookup",status="200"}')
    case "$answer" in *'"value":'*) break ;; esac
    sleep 1
done
case "$answer" in
    *'"value":'*) ;;
    *) echo "prometheus_check: no lookup counter stored: $answer" >&2; exit 1 ;;
esac
rows=$(query 'embedding_server_rows_served_total{table="t"}')
buckets=$(query 'count(embedding_server_request_duration_seconds_bucket)')
echo "target health: up (prometheus $(prometheus --version 2>&1 | head -1 | awk '{print $3}'))"
echo "lookup counter: $answer"
echo "rows served:    $rows"
echo "histogram buckets stored: $buckets"
echo "prometheus_check: ok"
