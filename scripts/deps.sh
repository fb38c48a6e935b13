#!/bin/sh
# deps.sh - install the Debian packages a step needs, only those missing.
#
#   scripts/deps.sh build   compiler, CMake and the libraries the server links
#   scripts/deps.sh test    build + Check and libcurl for the test suite
#   scripts/deps.sh lint    Node.js and npm for the OpenAPI linter
#
# Runs apt-get as root, or through sudo when that is available. Prints what
# it installs; prints nothing when everything is already there.
set -eu

build_pkgs="build-essential cmake pkg-config libmicrohttpd-dev libcjson-dev libuv1-dev libnats-dev"
test_pkgs="$build_pkgs check libcurl4-openssl-dev curl nats-server"
lint_pkgs="nodejs npm"

case "${1:-build}" in
    build) want=$build_pkgs ;;
    test) want=$test_pkgs ;;
    lint) want=$lint_pkgs ;;
    *) echo "usage: $0 build|test|lint" >&2; exit 2 ;;
esac

# A Node.js already on the PATH (from any source) serves the linter: Debian's
# npm package would conflict with a nodejs that did not come from Debian.
if [ "${1:-build}" = lint ] && command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
    exit 0
fi

missing=""
for p in $want; do
    status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    case "$status" in
        *"install ok installed"*) ;;
        *) missing="$missing $p" ;;
    esac
done
[ -z "$missing" ] && exit 0

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
