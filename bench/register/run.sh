#!/usr/bin/env bash
# REGISTER with digest auth, Switchboard (persisting to SQLite) beside Kamailio (usrloc in
# memory), same machine, same run, with ../shared/bench's driver (sipbench.py).
#
# usage: bench/register/run.sh [RATES] [DURATION]     e.g. bench/register/run.sh "2000 5000" 20
#   Each rate is run REPEAT times (default 3) for each server, alternating Switchboard and
#   Kamailio, each run on a freshly started server (Switchboard on a copy of a database
#   holding the users and no binding); the summary gives every run and the medians. On a
#   shared machine one run's CPU per registration can be 15% off the next one's: the
#   alternation and the median keep that from favouring either server.
#   MAXRATE=1 also searches each server's highest clean rate (sipbench.py maxrate), from
#   MAXRATE_START (default 5000) by MAXRATE_FACTOR (1.5), MAXRATE_DURATION (10) s a step.
#   SWITCHBOARD=path/to/binary measures another build than target/release/switchboard.
# needs: a release build (cargo build --release), SIPp and Kamailio (../shared/bench/install.sh)
# Hold the machine-wide benchmark lock: flock /tmp/sipbench.lock bench/register/run.sh ...
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
RATES="${1:-2000 5000}"
DURATION="${2:-20}"
REPEAT="${REPEAT:-3}"
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
# The users alone (`user import` leaves no WAL behind): every Switchboard run starts here.
cp "$WORK/sb.db" "$WORK/users-only.db"

sb_fresh_start() {
  rm -f "$WORK/sb.db" "$WORK/sb.db-wal" "$WORK/sb.db-shm"
  cp "$WORK/users-only.db" "$WORK/sb.db"
  sb_start
}

one_run() {  # server rate repeat
  local label="$1-$2-$3" pidfile
  if [ "$1" = switchboard ]; then sb_fresh_start; pidfile="$WORK/sb.pid"; else kam_start auth; pidfile="$WORK/kam/kamailio.pid"; fi
  python3 "$SHARED/sipbench.py" reg --auth --proxy 127.0.0.1:15060 --proxy-pidfile "$pidfile" \
    --rate "$2" --duration "$DURATION" --label "$label" --json >"$WORK/$label.txt" 2>&1 || true
  grep -E "registrations:|proxy CPU" "$WORK/$label.txt" | sed "s/^/[$label] /" || true
  if [ "$1" = switchboard ]; then
    echo "[$label] bindings stored: $("$SB" location --config "$WORK/sb.toml" --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')"
    sb_stop
  else
    kam_stop
  fi
}

for rate in $RATES; do
  for r in $(seq "$REPEAT"); do
    one_run switchboard "$rate" "$r"
    one_run kamailio "$rate" "$r"
  done
done

python3 - "$WORK" $RATES <<'PY'
import glob, json, os, statistics, sys
work, rates = sys.argv[1], sys.argv[2:]
def runs(server, rate):
    out = []
    for path in sorted(glob.glob(os.path.join(work, f"{server}-{rate}-*.txt"))):
        for line in open(path):
            if line.startswith("JSON "):
                out.append(json.loads(line[5:]))
    return out
print("\n| rate | server | runs: CPU µs per registration | **median** | failed | retransmissions | p99 REG→401 / REG→200 (worst run) | foreign CPU (worst run) |")
print("|---|---|---|---|---|---|---|---|")
medians = {}
for rate in rates:
    for server, name in (("switchboard", "Switchboard (SQLite)"), ("kamailio", "Kamailio (memory)")):
        rs = runs(server, rate)
        if not rs:
            continue
        cpu = [r["proxy_cpu_us_per_op"] for r in rs]
        med = statistics.median(cpu)
        medians[(rate, server)] = med
        p99 = lambda k: max(r["rtt"][k]["p99_ms"] for r in rs)
        print(f"| {int(rate):,}/s | {name} | {' / '.join(f'{c:.1f}' for c in cpu)} | **{med:.1f}** | "
              f"{sum(r['failed'] for r in rs)} | {sum(r['retransmissions'] for r in rs)} | "
              f"{p99('1'):g} / {p99('2'):g} ms | {max(r['foreign_cpu_pct'] for r in rs):g}% |")
for rate in rates:
    if (rate, "switchboard") in medians and (rate, "kamailio") in medians:
        sb, kam = medians[(rate, "switchboard")], medians[(rate, "kamailio")]
        print(f"\n{int(rate):,}/s: Switchboard / Kamailio CPU per registration = {sb:.1f} / {kam:.1f} µs = {sb / kam:.2f}x")
PY

if [ "${MAXRATE:-0}" = 1 ]; then
  for server in switchboard kamailio; do
    if [ "$server" = switchboard ]; then sb_fresh_start; pidfile="$WORK/sb.pid"; else kam_start auth; pidfile="$WORK/kam/kamailio.pid"; fi
    python3 "$SHARED/sipbench.py" maxrate --mode reg-auth --auth --proxy 127.0.0.1:15060 \
      --proxy-pidfile "$pidfile" --start "${MAXRATE_START:-5000}" --factor "${MAXRATE_FACTOR:-1.5}" \
      --duration "${MAXRATE_DURATION:-10}" --label "$server-maxrate" --json 2>&1 |
      tee "$WORK/$server-maxrate.txt" | tail -25
    if [ "$server" = switchboard ]; then sb_stop; else kam_stop; fi
  done
fi
echo "results in $WORK"
