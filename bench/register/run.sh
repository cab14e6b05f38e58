#!/usr/bin/env bash
# REGISTER with digest auth, Switchboard (persisting to SQLite) beside Kamailio (usrloc in
# memory), same machine, same run, with ../shared/bench's driver (sipbench.py).
#
# usage: bench/register/run.sh [RATES] [DURATION]     e.g. bench/register/run.sh "2000 5000" 20
#   MAXRATE=1 also searches each server's highest clean rate (sipbench.py maxrate), from
#   MAXRATE_START (default 5000) by MAXRATE_FACTOR (1.5), MAXRATE_DURATION (10) s a step.
#   SWITCHBOARD=path/to/binary measures another build than target/release/switchboard.
# needs: a release build (cargo build --release), SIPp and Kamailio (../shared/bench/install.sh)
# Hold the machine-wide benchmark lock: flock /tmp/sipbench.lock bench/register/run.sh ...
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
RATES="${1:-2000 5000}"
DURATION="${2:-20}"
WORK="$(mktemp -d /tmp/sb-register-XXXX)"
SB="${SWITCHBOARD:-$ROOT/target/release/switchboard}"
export SIPBENCH_DIR="$WORK/sipbench"

sb_config <<TOML
[registrar]
require_auth = true
# SIPp 3.6 answers only MD5, and only the first challenge; Kamailio's reference offers MD5.
digest_algorithms = ["MD5"]
# The load is 10,000 honest users from one address: no bans.
max_auth_failures = 0
TOML
tail -n +2 "$SHARED/scenarios/users.csv" | cut -d';' -f1,2 | tr ';' ',' >"$WORK/users.txt"
"$SB" user import "$WORK/users.txt" --config "$WORK/sb.toml"

run_load() {  # label pidfile
  for rate in $RATES; do
    python3 "$SHARED/sipbench.py" reg --auth --proxy 127.0.0.1:15060 --proxy-pidfile "$2" \
      --rate "$rate" --duration "$DURATION" --label "$1-$rate" --json 2>&1 | tee "$WORK/$1-$rate.txt" | tail -25
  done
  if [ "${MAXRATE:-0}" = 1 ]; then
    python3 "$SHARED/sipbench.py" maxrate --mode reg-auth --auth --proxy 127.0.0.1:15060 \
      --proxy-pidfile "$2" --start "${MAXRATE_START:-5000}" --factor "${MAXRATE_FACTOR:-1.5}" \
      --duration "${MAXRATE_DURATION:-10}" --label "$1-maxrate" --json 2>&1 |
      tee "$WORK/$1-maxrate.txt" | tail -25
  fi
}

sb_start
run_load switchboard "$WORK/sb.pid"
echo "bindings stored: $("$SB" location --config "$WORK/sb.toml" --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')"
sb_stop

kam_start auth
run_load kamailio "$WORK/kam/kamailio.pid"
kam_stop
echo "results in $WORK"
