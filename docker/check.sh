#!/usr/bin/env bash
# docker/check.sh - build the image and prove a container works end to end:
# build, run with a data volume and a mounted config, wait for /readyz, look up
# by token, ask for neighbours, post a gradient, check the HEALTHCHECK, send
# SIGTERM, require exit code 0 and the shutdown snapshot in the volume.
# Uses podman (../shared/tools/container-base prepares it on machines without
# a registry); prints the image size. Needs root (rootful podman) and curl.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
image=embedding-server:check
name=es-check-$$
base_tool="$root/../shared/tools/container-base"

log() { printf 'check: %s\n' "$*"; }
die() { printf 'check: FAIL: %s\n' "$*" >&2; exit 1; }

if [ -x "$base_tool" ]; then
    "$base_tool"
elif ! command -v podman >/dev/null; then
    die "podman is not installed (and $base_tool is not there to prepare it)"
fi
command -v curl >/dev/null || { apt-get update -qq && apt-get install -y -qq curl >/dev/null; }

data=$(mktemp -d /tmp/es-check-data.XXXXXX)
cleanup() {
    podman --runtime runc rm -f "$name" >/dev/null 2>&1 || true
    rm -rf "$data"
}
trap cleanup EXIT
chmod 0777 "$data"   # the image runs as the non-root uid 999

log "building $image"
podman build --format docker --isolation chroot -q -t "$image" "$root" >/dev/null
# the compose files name embedding-server:latest; podman-compose builds only
# when no image of that name exists, so a stale one would be tested instead
podman tag "$image" embedding-server:latest
size=$(podman image inspect --format '{{.Size}}' "$image")
base=$(podman image inspect --format '{{.Size}}' docker.io/library/debian:bookworm-slim 2>/dev/null || echo 0)
log "image size: $((size / 1000000)) MB (the debian:bookworm-slim base here: $((base / 1000000)) MB; ours on top: $(((size - base) / 1000000)) MB)"

log "starting $name"
podman --runtime runc run -d --name "$name" \
    --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 \
    -p 127.0.0.1::8080 \
    -v "$data:/data" \
    -v "$here/configs/check.json:/etc/embedding-server/config.json:ro" \
    -e EMBEDDING_SERVER_CONFIG=/etc/embedding-server/config.json \
    "$image" >/dev/null
port=$(podman port "$name" 8080/tcp | head -n 1 | sed 's/.*://')
[ -n "$port" ] || die "no published port"
url="http://127.0.0.1:$port"

for _ in $(seq 1 120); do
    if curl -fsS "$url/readyz" >/dev/null 2>&1; then break; fi
    sleep 0.5
done
curl -fsS "$url/readyz" | grep -q '"ready"' || { podman logs "$name" >&2; die "/readyz never answered ready"; }
log "ready on $url"

out=$(curl -fsS "$url/v1/tables/words/lookup" -H 'Content-Type: application/json' -d '{"tokens": ["gold", "silver"]}')
echo "$out" | grep -q '"shape":\[2,' || die "lookup by token: $out"
log "lookup by token ok"

out=$(curl -fsS "$url/v1/tables/words/neighbors" -H 'Content-Type: application/json' -d '{"tokens": ["gold"], "k": 5}')
echo "$out" | grep -q '"token"' || die "neighbors: $out"
log "neighbors of gold: $(echo "$out" | grep -o '"token":"[^"]*"' | head -n 5 | tr '\n' ' ')"

grads=$(printf '[%s]' "$(printf '0.5,%.0s' $(seq 1 15))0.5")
out=$(curl -fsS "$url/v1/tables/items/gradients" -H 'Content-Type: application/json' \
      -d "{\"ids\": [3, 5], \"grads\": [$grads, $grads]}")
echo "$out" | grep -q '"version":1' || die "gradients: $out"
log "gradient step ok: $out"

podman --runtime runc healthcheck run "$name" >/dev/null || die "HEALTHCHECK failed"
log "healthcheck ok"

log "SIGTERM"
podman --runtime runc stop -t 10 "$name" >/dev/null
code=$(podman inspect --format '{{.State.ExitCode}}' "$name")
[ "$code" = 0 ] || { podman logs "$name" >&2; die "exit code $code after SIGTERM"; }
[ -f "$data/items/snapshot-1/manifest.json" ] || { ls -R "$data" >&2; die "no shutdown snapshot in the volume"; }
[ -f "$data/items/snapshot-1/weight.npy" ] || die "snapshot without weight.npy"
log "clean exit, snapshot in the volume: $(cd "$data" && find . -name manifest.json | head -n 3 | tr '\n' ' ')"
# The compose file as a user runs it: up, train, down (SIGTERM), up again:
# the named volume brings the table back at the version it had.
if command -v podman-compose >/dev/null || apt-get install -y -qq podman-compose >/dev/null 2>&1; then
    compose() {
        podman-compose --podman-args="--runtime runc" \
            --podman-build-args="--isolation chroot --format docker" \
            --podman-run-args="--ulimit nofile=1024:1024 --ulimit nproc=1024:1024" \
            -f "$here/compose.yaml" "$@"
    }
    compose_wait() {
        for _ in $(seq 1 120); do
            curl -fsS http://127.0.0.1:8080/readyz >/dev/null 2>&1 && return 0
            sleep 0.5
        done
        die "compose: /readyz never answered ready"
    }
    trap 'compose down -v >/dev/null 2>&1 || true; cleanup' EXIT
    log "compose up (docker/compose.yaml)"
    compose up -d >/dev/null 2>&1 || die "podman-compose up failed"
    compose_wait
    grads=$(printf '[%s]' "$(printf '0.25,%.0s' $(seq 1 63))0.25")
    out=$(curl -fsS http://127.0.0.1:8080/v1/tables/users/gradients -H 'Content-Type: application/json' \
          -d "{\"ids\": [7], \"grads\": [$grads]}")
    echo "$out" | grep -q '"version":1' || die "compose: gradients: $out"
    compose down >/dev/null 2>&1 || die "podman-compose down failed"
    compose up -d >/dev/null 2>&1 || die "podman-compose up (again) failed"
    compose_wait
    out=$(curl -fsS http://127.0.0.1:8080/v1/tables/users)
    echo "$out" | grep -q '"version":1' || die "compose: the table did not come back from the volume: $out"
    compose down -v >/dev/null 2>&1 || true
    log "compose: trained, restarted, the volume brought users back at version 1"
else
    log "podman-compose not installable: compose file not exercised"
fi
# Cluster mode: three NATS nodes, three replicas, nginx (compose-cluster.yaml).
if command -v podman-compose >/dev/null; then
    bash "$here/check-cluster.sh"
else
    log "podman-compose not installable: the cluster compose file not exercised"
fi
log "all container checks passed"
