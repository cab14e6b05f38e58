#!/usr/bin/env bash
# Calls through the proxy (INVITE, 180, 200, ACK, BYE, 200; record-routed, stateful),
# Switchboard beside Kamailio with the same routing, same machine, same run, with
# ../shared/bench's driver (sipbench.py): CPU per call at fixed rates, p99 INVITE->200,
# the highest rate held with no failed call, and memory per call in progress.
#
# Neither server challenges callers here (the bench's Kamailio config authenticates
# REGISTER only), so Switchboard runs with [proxy] require_auth = false.
#
# usage: bench/call/run.sh [RATES] [DURATION]      e.g. bench/call/run.sh "500 1000" 20
# env:   MAXRATE=0 skips the max-rate searches; MEMORY=0 skips the memory runs;
#        RATES="" with MAXRATE=0 runs the memory measurement alone.
#        PBX=1 sends Switchboard's calls through its PBX (the B2BUA: a dial plan rule with
#        pbx = true for every name) instead of its proxy; Kamailio still proxies them.
# needs: a release build (cargo build --release), SIPp and Kamailio (../shared/bench/install.sh)
set -euo pipefail
# The whole run holds the machine-wide benchmark lock: the servers bind 15060 too.
if [ -z "${SIPBENCH_LOCKED:-}" ]; then
  export SIPBENCH_LOCKED=1
  exec flock /tmp/sipbench.lock "$0" "$@"
fi
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
RATES="${1-500 1000}"
DURATION="${2:-20}"
MAXRATE="${MAXRATE:-1}"
MEMORY="${MEMORY:-1}"
# Calls held open for the memory figure: MEM_RATE calls/s for MEM_SECS s, each held
# longer than the load lasts, so all MEM_RATE*MEM_SECS are in progress at its end.
MEM_RATE="${MEM_RATE:-500}"
MEM_SECS="${MEM_SECS:-10}"
WORK="$(mktemp -d /tmp/sb-call-XXXX)"
SB="$ROOT/target/release/switchboard"
export SIPBENCH_DIR="$WORK/sipbench"

PBX="${PBX:-0}"
if [ "$PBX" != 0 ]; then
  # Every dialled name is an extension call carried by the B2BUA (media stays direct).
  printf '[[rule]]\nname = "every user, through the PBX"\npattern = "_!"\naction = "extension"\npbx = true\n' \
    >"$WORK/dialplan.toml"
  pbx_section="[pbx]
dial_plan = \"$WORK/dialplan.toml\""
else
  pbx_section=""
fi
SB_LABEL=switchboard
[ "$PBX" = 0 ] || SB_LABEL=switchboard-pbx
sb_config <<TOML
[registrar]
require_auth = false
[proxy]
require_auth = false
$pbx_section
TOML
"$SB" user add uas --password benchpw --config "$WORK/sb.toml" >/dev/null

bench() {  # label pidfile
  for rate in $RATES; do
    python3 "$SHARED/sipbench.py" call --proxy 127.0.0.1:15060 --proxy-pidfile "$2" \
      --rate "$rate" --duration "$DURATION" --hold-ms 1000 --label "$1-$rate" --json 2>&1 |
      tee "$WORK/$1-call-$rate.txt" | tail -30
  done
  if [ "$MAXRATE" != 0 ]; then
    python3 "$SHARED/sipbench.py" maxrate --mode call --proxy 127.0.0.1:15060 \
      --proxy-pidfile "$2" --start 1000 --factor 1.5 --duration 10 --hold-ms 1000 \
      --label "$1-maxrate" --json 2>&1 | tee "$WORK/$1-maxrate.txt" | tail -30
  fi
}

pss_kb() {  # pidfile: proportional set size of the process tree, kB
  python3 - "$1" <<'PY'
import os, sys
root = int(open(sys.argv[1]).read().split()[0])
kids = {}
for p in os.listdir("/proc"):
    if p.isdigit():
        try:
            ppid = int(open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[1])
            kids.setdefault(ppid, []).append(int(p))
        except OSError:
            pass
todo, total = [root], 0
while todo:
    pid = todo.pop()
    todo += kids.get(pid, [])
    try:
        for line in open(f"/proc/{pid}/smaps_rollup"):
            if line.startswith("Pss:"):
                total += int(line.split()[1])
    except OSError:
        pass
print(total)
PY
}

memory() {  # label pidfile: memory per call in progress
  [ "$MEMORY" != 0 ] || return 0
  local before peak now hold_ms
  hold_ms=$(( (MEM_SECS + 10) * 1000 ))
  before=$(pss_kb "$2")
  python3 "$SHARED/sipbench.py" call --proxy 127.0.0.1:15060 --proxy-pidfile "$2" \
    --rate "$MEM_RATE" --duration "$MEM_SECS" --hold-ms "$hold_ms" --label "$1-memory" --json \
    >"$WORK/$1-memory.txt" 2>&1 &
  local driver=$!
  peak=$before
  while kill -0 "$driver" 2>/dev/null; do
    now=$(pss_kb "$2")
    [ "$now" -gt "$peak" ] && peak=$now
    sleep 0.2
  done
  wait "$driver" || true
  local calls=$(( MEM_RATE * MEM_SECS ))
  echo "$1: PSS before ${before} kB, peak ${peak} kB with ${calls} calls in progress:" \
    "$(( (peak - before) * 1024 / calls )) bytes per call" | tee -a "$WORK/memory.txt"
}

# Memory is measured on a freshly started server: a heap that served the max-rate
# search keeps its high-water mark, and the delta would read as nothing.
if [ -n "$RATES" ] || [ "$MAXRATE" != 0 ]; then
  sb_start; bench "$SB_LABEL" "$WORK/sb.pid"; sb_stop
  kam_start noauth; bench kamailio "$WORK/kam/kamailio.pid"; kam_stop
fi
if [ "$MEMORY" != 0 ]; then
  sb_start; memory "$SB_LABEL" "$WORK/sb.pid"; sb_stop
  kam_start noauth; memory kamailio "$WORK/kam/kamailio.pid"; kam_stop
fi
echo "results in $WORK"
