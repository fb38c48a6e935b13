#!/bin/sh
# deps.sh - install the Debian packages a step needs, only those missing.
#
#   scripts/deps.sh build   compiler, CMake and the libraries the server links
#   scripts/deps.sh test    build + Check and libcurl for the test suite, Chromium
#                           for the explorer's browser test, Debian's python3-numpy
#                           and python3-torch for the Python client's tests, Node.js
#                           and npm, and Stoplight Prism (npm ci in tests/prism,
#                           pinned by its package-lock.json)
#   scripts/deps.sh lint    Node.js and npm for the OpenAPI linter
#
# Runs apt-get as root, or through sudo when that is available. Prints what
# it installs; prints nothing when everything is already there.
set -eu

build_pkgs="build-essential cmake pkg-config libmicrohttpd-dev libcjson-dev libuv1-dev libnats-dev"
test_pkgs="$build_pkgs check libcurl4-openssl-dev curl nats-server chromium python3 python3-numpy python3-torch"
lint_pkgs="nodejs npm"

step=${1:-build}
case "$step" in
    build) want=$build_pkgs ;;
    test) want=$test_pkgs ;;
    lint) want=$lint_pkgs ;;
    *) echo "usage: $0 build|test|lint" >&2; exit 2 ;;
esac

# A Node.js already on the PATH (from any source) serves the linter,
# Prism and the browser test: Debian's npm package would conflict with a nodejs that did not come
# from Debian.
have_node() { command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; }
if [ "$step" = lint ] && have_node; then
    exit 0
fi
if [ "$step" = test ] && ! have_node; then
    want="$want $lint_pkgs"
fi

# Prism for the tests that run through its validating proxy: installed from
# the lock file when missing or older than it.
install_prism() {
    dir=$(cd "$(dirname "$0")/.." && pwd)/tests/prism
    stamp=$dir/node_modules/.package-lock.json
    if [ -x "$dir/node_modules/.bin/prism" ] && [ "$stamp" -nt "$dir/package-lock.json" ]; then
        return 0
    fi
    echo "deps.sh: installing Stoplight Prism (npm ci in tests/prism)"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
}

missing=""
for p in $want; do
    status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    case "$status" in
        *"install ok installed"*) ;;
        *) missing="$missing $p" ;;
    esac
done
if [ -z "$missing" ]; then
    [ "$step" = test ] && install_prism
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "deps.sh: missing packages:$missing, and this is not a Debian system (no apt-get)." >&2
    echo "Install their equivalents, then run the command again." >&2
    exit 1
fi
if [ "$(id -u)" -eq 0 ]; then
    sudo=""
elif command -v sudo >/dev/null 2>&1; then
    sudo="sudo"
else
    echo "deps.sh: missing packages:$missing; run as root or install sudo." >&2
    exit 1
fi

echo "deps.sh: installing$missing"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
# shellcheck disable=SC2086
$sudo apt-get install -y -qq --no-install-recommends $missing
[ "$step" = test ] && install_prism
exit 0
