#!/usr/bin/env bash
# readme_tour.sh BIN SRC [--prism] - run the README so it cannot rot.
#
# Starts the server exactly as the README's `sh tour-start` block says (on a
# free port, with a temporary data directory), runs every `sh tour` block
# with curl and the `python tour` block (when numpy and torch are importable;
# the client comes from SRC/clients/python), and fails on a non-zero exit or
# an error body. Then checks that the configuration reference names every
# flag and variable that `--help` lists, and that SIGTERM ends the server
# with status 0. With --prism every request of the tour goes through
# Stoplight Prism's validating proxy (tests/prism_proxy.py) and any request
# or answer that violates proto/openapi.yaml fails the tour.
set -euo pipefail
bin=$1
src=$(cd "$2" && pwd)
prism=${3:-}
readme="$src/README.md"
tmp=$(mktemp -d /tmp/es-readme.XXXXXX)
pid=""
proxy_pid=""
cleanup() {
    [ -n "$proxy_pid" ] && kill "$proxy_pid" 2>/dev/null || true
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
# the log exists before the first look at it: under set -e and pipefail a
# sed of a file the background shell has not created yet ended the tour
: >"$tmp/server.log"
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
server_port=$port

# 1b. with --prism, the tour talks to the validating proxy instead
if [ "$prism" = "--prism" ]; then
    [ -x "$src/tests/prism/node_modules/.bin/prism" ] ||
        { echo "readme_tour: SKIPPED: Prism is not installed (scripts/deps.sh test runs npm ci in tests/prism)"; exit 77; }
    /usr/bin/python3 "$src/tests/prism_proxy.py" --upstream "http://127.0.0.1:$server_port" \
        --url-file "$tmp/proxy.url" --report "$tmp/prism.json" --log "$tmp/prism.log" \
        >/dev/null 2>"$tmp/proxy.err" &
    proxy_pid=$!
    for _ in $(seq 1 600); do [ -f "$tmp/proxy.url" ] && break; sleep 0.1; done
    [ -f "$tmp/proxy.url" ] || fail "Prism's proxy did not start: $(cat "$tmp/proxy.err" "$tmp/prism.log" 2>/dev/null | tail -n 20)"
    port=$(sed 's|.*:||' "$tmp/proxy.url")
    echo "readme_tour: through Prism's validating proxy on port $port"
fi

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
    if "$cand" -c 'import numpy, torch' 2>/dev/null; then python=$cand; break; fi
done
if [ -n "$python" ]; then
    out=$(cd "$tmp" && PYTHONPATH="$src/clients/python" "$python" -c "${py//localhost:8080/127.0.0.1:$port}" 2>&1) || fail "python tour: $out"
    printf -- '--- python tour\n%s\n' "$out"
    printf '%s\n' "$out" | grep -q "'version'" || fail "python tour printed no version"
else
    echo "readme_tour: python block skipped (numpy or torch missing)"
fi

# 3b. Prism saw no violation
if [ -n "$proxy_pid" ]; then
    kill -TERM "$proxy_pid"
    proxy_status=0
    wait "$proxy_pid" || proxy_status=$?
    proxy_pid=""
    [ "$proxy_status" -eq 0 ] || fail "Prism reported violations of proto/openapi.yaml: $(cat "$tmp/prism.json" 2>/dev/null)"
    echo "readme_tour: Prism checked $(grep -o '"requests": [0-9]*' "$tmp/prism.json" | grep -o '[0-9]*$') requests, no violation"
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
