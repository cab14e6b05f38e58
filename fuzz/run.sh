#!/bin/sh
# Usage: fuzz/run.sh <target> <seconds> [extra libFuzzer args]
# Seeds the corpus from fuzz/seeds/ and runs one libFuzzer job (RUSTC_BOOTSTRAP=1: stable toolchain).
set -e
cd "$(dirname "$0")"
target=$1; secs=$2; shift 2
mkdir -p "corpus/$target"
cp -n seeds/* "corpus/$target/" 2>/dev/null || true
RUSTC_BOOTSTRAP=1 exec cargo fuzz run "$target" "corpus/$target" -- \
    -max_total_time="$secs" -max_len=4096 -rss_limit_mb=1024 -timeout=10 \
    -jobs=1 -workers=1 -print_final_stats=1 "$@"
