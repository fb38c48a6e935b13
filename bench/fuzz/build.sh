#!/bin/sh
# build.sh - builds the libFuzzer harnesses of bench/fuzz/ with clang, ASan
# and UBSan, straight from the sources (not part of the CMake build).
#
#   bench/fuzz/build.sh [HARNESS...]     all of them when none is named
#   /tmp/fuzz-build/fuzz_json -max_total_time=600 -max_len=4096 CORPUS_DIR
#
# FUZZ_OUT picks the output folder (default /tmp/fuzz-build).
#
# UBSan findings abort (-fno-sanitize-recover) so libFuzzer records them as
# crashes; libFuzzer's leak check (on by default) makes a leak a finding too.
# Corpora and crash files stay outside the repository; seeds: the files of
# tests/fixtures/loaders/ (fuzz_loaders), config/example.json (fuzz_config),
# request bodies of API.md (fuzz_json), a snapshot's manifest.json
# (fuzz_snapshot_manifest), the records of logs written by wal_append
# (fuzz_wal). Suggested -max_len: 4096 for the JSON targets, 65536 for
# fuzz_loaders, 8192 for fuzz_wal.
set -eu
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${FUZZ_OUT:-/tmp/fuzz-build}
CC=${CC:-clang}
mkdir -p "$OUT"

CFLAGS="-g -O1 -std=c11 -D_GNU_SOURCE -march=native -fno-omit-frame-pointer
 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
 -I$ROOT/core -I$ROOT/proto -I$ROOT/config"
LIBS="-lcjson -lm -lpthread"

CORE=$(ls "$ROOT"/core/*.c)
PROTO=$(ls "$ROOT"/proto/*.c)
CONFIG=$(ls "$ROOT"/config/*.c)

# The sources each harness needs besides its own file.
sources() {
    case $1 in
    fuzz_json | fuzz_binary) echo "$CORE $PROTO" ;;
    fuzz_loaders | fuzz_snapshot_manifest | fuzz_wal) echo "$CORE" ;;
    fuzz_config) echo "$CORE $PROTO $CONFIG" ;;
    *) echo "unknown harness $1" >&2; exit 2 ;;
    esac
}

[ $# -gt 0 ] || set -- fuzz_json fuzz_binary fuzz_loaders fuzz_config fuzz_snapshot_manifest fuzz_wal
for name in "$@"; do
    src=$(sources "$name")
    echo "building $OUT/$name"
    # shellcheck disable=SC2086
    $CC $CFLAGS -o "$OUT/$name" "$ROOT/bench/fuzz/$name.c" $src $LIBS
done
