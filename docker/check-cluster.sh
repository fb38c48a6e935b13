#!/usr/bin/env bash
# docker/check-cluster.sh - the compose cluster end to end (docker/check.sh
# runs it last): build the images, bring up docker/compose-cluster.yaml with
# podman-compose (3 NATS JetStream nodes, 3 replicas, nginx in front), train
# through one replica, read those writes through another with min_seq, kill
# one replica and one NATS node, keep writing through the load balancer,
# and check that every acknowledged write is on every live replica and that
# the replicas hold the same bits; then restart the two and check again.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
project=escheck

log() { printf 'check-cluster: %s\n' "$*"; }
die() { printf 'check-cluster: FAIL: %s\n' "$*" >&2; exit 1; }

command -v podman-compose >/dev/null || apt-get install -y -qq podman-compose >/dev/null 2>&1 ||
    die "podman-compose is not installable"
command -v curl >/dev/null || apt-get install -y -qq curl >/dev/null

compose() {
    podman-compose -p "$project" --podman-args="--runtime runc" \
        --podman-run-args="--ulimit nofile=1024:1024 --ulimit nproc=1024:1024" \
        -f "$here/compose-cluster.yaml" "$@"
}
container() { podman ps -a -q --filter "label=com.docker.compose.project=$project" \
                  --filter "label=com.docker.compose.service=$1" | head -n 1; }
trap 'compose down -v >/dev/null 2>&1 || true; rm -rf "${scratch:-}"' EXIT

log "building embedding-server:latest and embedding-server-infra:latest"
podman build --format docker --isolation chroot -q -t embedding-server:latest "$root" >/dev/null
podman build --format docker --isolation chroot -q -t embedding-server-infra:latest \
    -f "$here/cluster/Dockerfile.infra" "$here" >/dev/null

log "compose up (docker/compose-cluster.yaml)"
compose down -v >/dev/null 2>&1 || true
compose up -d >/dev/null 2>&1 || die "podman-compose up failed"

wait_ready() { # port...
    for port in "$@"; do
        for _ in $(seq 1 240); do
            curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
            sleep 0.5
        done
        curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 ||
            { compose logs >&2 || true; die "127.0.0.1:$port never became ready"; }
    done
}
wait_ready 8091 8092 8093 8090
log "three replicas and the load balancer are ready"

vec() { local v=$1; printf '['; for d in $(seq 1 15); do printf '%s,' "$v"; done; printf '%s]' "$v"; }
# put_row PORT ID VALUE -> prints the seq of the answer; returns 1 on anything but 200
put_row() {
    local out
    out=$(curl -sS -w '\n%{http_code}' -X PUT "http://127.0.0.1:$1/v1/tables/items/rows" \
          -H 'Content-Type: application/json' -d "{\"ids\": [$2], \"vectors\": [$(vec "$3")]}") || return 1
    [ "$(tail -n 1 <<<"$out")" = 200 ] || return 1
    head -n 1 <<<"$out" | sed 's/.*"seq":\([0-9]*\).*/\1/'
}
# read_at PORT IDS SEQ [CURL-ARGS...] -> the lookup of IDS with min_seq SEQ.
# A replica that has not applied SEQ within cluster.wait_ms answers 503
# not_ready and the contract says retry: one whose ordered consumer was on a
# killed NATS node notices after two missed heartbeats (about 2 s). So 503s
# are retried for up to 60 s and the wait is logged; anything else fails.
scratch=$(mktemp -d)
read_at() {
    local port=$1 want=$2 at=$3 code tries=0 start=$SECONDS body=$scratch/$1.$BASHPID
    shift 3
    while :; do
        code=$(curl -sS -o "$body" -w '%{http_code}' "http://127.0.0.1:$port/v1/tables/items/lookup" \
               -H 'Content-Type: application/json' "$@" \
               -d "{\"ids\": [$want], \"min_seq\": $at}") || die "lookup on 127.0.0.1:$port failed"
        [ "$code" = 503 ] && [ $((SECONDS - start)) -lt 60 ] && { tries=$((tries + 1)); sleep 0.2; continue; }
        [ "$code" = 200 ] || die "lookup on 127.0.0.1:$port at seq $at: HTTP $code: $(head -c 300 "$body")"
        [ $tries -eq 0 ] ||
            log "127.0.0.1:$port reached seq $at after $tries answers 503 not_ready ($((SECONDS - start)) s)" >&2
        cat "$body"
        return 0
    done
}
declare -A acked
last=0
for id in $(seq 1 30); do
    # a 503 while the streams settle after compose up is retried, as a client would
    deadline=$((SECONDS + 60))
    until seq=$(put_row 8091 "$id" "$id"); do
        [ $SECONDS -lt $deadline ] || die "write $id through es-0: no 200 in 60 s"
        sleep 0.2
    done
    acked[$id]=$id
    last=$seq
    # read it back through es-1 at once: min_seq makes it wait for the record
    out=$(read_at 8092 "$id" "$seq")
    grep -q "\[\[$id.0," <<<"$out" || die "es-1 did not read write $id (seq $seq): $out"
done
log "30 writes through es-0, each read back through es-1 with min_seq (last seq $last)"

log "killing es-0 and nats-1 (SIGKILL)"
podman kill "$(container es-0)" >/dev/null
podman kill "$(container nats-1)" >/dev/null
retried=0
for id in $(seq 31 60); do
    deadline=$((SECONDS + 60))
    until seq=$(put_row 8090 "$id" "$id"); do
        [ $SECONDS -lt $deadline ] || die "write $id through the load balancer: no 200 in 60 s"
        retried=$((retried + 1))
        sleep 0.2
    done
    acked[$id]=$id
    [ "$seq" -gt "$last" ] && last=$seq
done
log "30 more writes through the load balancer with one replica and one NATS node down ($retried retries)"

ids=$(seq -s, 1 60)
rows() { read_at "$1" "$ids" "$last" -H 'Accept: application/octet-stream'; }
check_acked() { # PORT
    local got
    got=$(read_at "$1" "$ids" "$last")
    for id in "${!acked[@]}"; do
        grep -q "\[$id.0,$id.0," <<<"$got" || die "acknowledged write $id is missing on 127.0.0.1:$1"
    done
}
check_acked 8092
check_acked 8093
# to files first: a read_at that dies inside <(...) would only end that subshell
rows 8092 >"$scratch/es-1.bin"
rows 8093 >"$scratch/es-2.bin"
cmp "$scratch/es-1.bin" "$scratch/es-2.bin" || die "es-1 and es-2 differ"
log "every acknowledged write is on es-1 and es-2, which hold the same bits"

log "restarting es-0 and nats-1"
podman start "$(container nats-1)" >/dev/null
podman start "$(container es-0)" >/dev/null
wait_ready 8091
check_acked 8091
rows 8091 >"$scratch/es-0.bin"
rows 8092 >"$scratch/es-1.bin"
cmp "$scratch/es-0.bin" "$scratch/es-1.bin" || die "es-0 differs from es-1 after its restart"
log "es-0 restarted and caught up from the stream: same bits as es-1"
compose down -v >/dev/null 2>&1 || true
log "cluster checks passed"
