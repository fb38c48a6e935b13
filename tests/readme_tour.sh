#!/usr/bin/env bash
# readme_tour.sh BIN SRC - run the README so it cannot rot.
#
# Starts the server exactly as the README's `sh tour-start` block says (on a
# free port, with a temporary data directory), runs every `sh tour` block
# with curl and the `python tour` block (when numpy, requests and torch are
# importable), and fails on a non-zero exit or an error body. Then checks
# that the configuration reference names every flag and variable that
# `--help` lists, and that SIGTERM ends the server with status 0.
set -euo pipefail
bin=$1
src=$2
readme="$src/README.md"
tmp=$(mktemp -d /tmp/es-readme.XXXXXX)
pid=""
cleanup() {
    [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "readme_tour: FAIL: $*" >&2; [ -f "$tmp/server.log" ] && tail -n 20 "$tmp/server.log" >&2; exit 1; }

# blocks NAME: print the bodies of the README's fenced blocks whose info
# string is NAME, separated by a line holding only a form feed.
blocks() {
    awk -v want="$1" '
        /^```/ { if (inside) { inside = 0; printf "\f\n"; next }
                 info = substr($0, 4); if (info == want) { inside = 1; next } }
        inside { print }' "$readme"
}

command -v curl >/dev/null || fail "curl is not installed"

# 1. start the server as the README says
start=$(blocks "sh tour-start" | tr -d '\f')
[ -n "$start" ] || fail "README has no sh tour-start block"
start=${start//.\/build\/embedding-server/$bin}
(cd "$src" && EMBEDDING_SERVER_PORT=0 EMBEDDING_SERVER_DATA_DIR="$tmp/data" \
    exec bash -c "exec $start" >"$tmp/server.log" 2>&1) &
pid=$!
port=""
for _ in $(seq 1 100); do
    port=$(sed -n 's|.*listening on http://[^:]*:\([0-9]*\).*|\1|p' "$tmp/server.log" | head -n 1)
    [ -n "$port" ] && curl -fs "127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
    sleep 0.1
done
[ -n "$port" ] || fail "the server never said where it listens"
curl -fs "127.0.0.1:$port/readyz" >/dev/null || fail "the server never became ready"
echo "readme_tour: server from the README up on port $port"

# 2. every shell block of the tour
n=0
while IFS= read -r -d $'\f' block; do
    [ -n "${block//[$'\n ']/}" ] || continue
    n=$((n + 1))
    block=${block//localhost:8080/127.0.0.1:$port}
    out=$(cd "$tmp" && bash -euo pipefail -c "$block" 2>&1) || fail "tour block $n exited non-zero: $out"
    printf '%s\n' "$out" | grep -q '"error"' && fail "tour block $n answered an error: $out"
    printf -- '--- tour block %d\n%s\n' "$n" "$out"
done < <(blocks "sh tour")
[ "$n" -ge 4 ] || fail "found only $n sh tour blocks"

# 3. the Python snippet
py=$(blocks "python tour" | tr -d '\f')
[ -n "$py" ] || fail "README has no python tour block"
python=""
for cand in /usr/bin/python3 python3; do
    if "$cand" -c 'import numpy, requests, torch' 2>/dev/null; then python=$cand; break; fi
done
if [ -n "$python" ]; then
    out=$(cd "$tmp" && "$python" -c "${py//localhost:8080/127.0.0.1:$port}" 2>&1) || fail "python tour: $out"
    printf -- '--- python tour\n%s\n' "$out"
    printf '%s\n' "$out" | grep -q "'version'" || fail "python tour printed no version"
else
    echo "readme_tour: python block skipped (numpy, requests or torch missing)"
fi

# 4. the configuration reference names every flag and variable of --help
help=$("$bin" --help)
for word in $(printf '%s\n' "$help" | grep -oE 'EMBEDDING_SERVER_[A-Z_]+|^  --[a-z][a-z-]+' | sort -u); do
    case "$word" in --help|--version|--check-config) continue ;; esac
    grep -qF -- "$word" "$readme" || fail "README's configuration reference does not mention $word"
done

# 5. SIGTERM ends it cleanly
kill -TERM "$pid"
status=0
wait "$pid" || status=$?
pid=""
[ "$status" -eq 0 ] || fail "server exited with status $status after SIGTERM"
echo "readme_tour: $n shell blocks, the python block and the config reference check passed"
echo "1 passed, 0 failed"
