# Sourced by bench/*/run.sh: where things are, and starting and stopping the two servers
# on 127.0.0.1:15060, one at a time. The caller sets WORK (its run folder, holding
# sb.toml) and SB (the switchboard binary) before calling these.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SHARED="$(cd "$ROOT/../shared/bench" && pwd)"

# $WORK/sb.toml: UDP on 127.0.0.1:15060, domain 127.0.0.1, SQLite in $WORK, then the
# sections read from standard input.
sb_config() {
  {
    printf '[sip]\nlisten = ["udp:127.0.0.1:15060"]\ndomain = "127.0.0.1"\n'
    printf '[storage]\ndatabase = "%s/sb.db"\n' "$WORK"
    cat
  } >"$WORK/sb.toml"
}

# Switchboard serving $WORK/sb.toml in the background; pid in $WORK/sb.pid.
sb_start() {
  "$SB" serve --config "$WORK/sb.toml" 2>>"$WORK/serve.log" &
  echo $! >"$WORK/sb.pid"
  sleep 1
}
sb_stop() { kill "$(cat "$WORK/sb.pid")"; wait "$(cat "$WORK/sb.pid")" 2>/dev/null || true; }

# The reference Kamailio from ../shared/bench (auth or noauth), in $WORK/kam.
kam_start() { RUN_DIR="$WORK/kam" "$SHARED/kamailio/start.sh" "$1" 2 >/dev/null; }
kam_stop() {
  RUN_DIR="$WORK/kam" "$SHARED/kamailio/stop.sh" >/dev/null 2>&1 || kill "$(cat "$WORK/kam/kamailio.pid")"
}
