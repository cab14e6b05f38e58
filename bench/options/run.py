#!/usr/bin/env python3
"""Side-by-side OPTIONS benchmark: Switchboard `serve` and Kamailio (sl_send_reply)
answering SIPp's OPTIONS at fixed rates on udp:127.0.0.1:15060, one server at a time,
in the same run. Reports server CPU microseconds per OPTIONS (utime+stime of the
server's whole process tree from /proc, divided by successful OPTIONS) and the ratio.

usage: bench/options/run.py --switchboard target/release/switchboard [--rates 2000,5000,10000] [--duration 15]
"""
import argparse, os, re, shutil, signal, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
PORT = 15060
TICK = os.sysconf("SC_CLK_TCK")


def tree(pid):
    """pid and all its descendants."""
    pids, frontier = {pid}, [pid]
    while frontier:
        p = frontier.pop()
        try:
            with open(f"/proc/{p}/task/{p}/children") as f:
                kids = [int(x) for x in f.read().split()]
        except OSError:
            kids = []
        for k in kids:
            if k not in pids:
                pids.add(k)
                frontier.append(k)
    return pids


def cpu_seconds(pids):
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except OSError:
            pass
    return total / TICK


def wait_bound(timeout=10):
    end = time.time() + timeout
    while time.time() < end:
        out = subprocess.run(["ss", "-Hlun", f"sport = :{PORT}"], capture_output=True, text=True).stdout
        if "127.0.0.1" in out:
            return True
        time.sleep(0.1)
    return False


def start_kamailio(rundir):
    kam = shutil.which("kamailio") or "/usr/sbin/kamailio"
    log = open(os.path.join(rundir, "kamailio.log"), "w")
    p = subprocess.Popen([kam, "-f", os.path.join(HERE, "kamailio-options.cfg"), "-DD", "-E",
                          "-m", "256", "-M", "16", "-Y", rundir], stdout=log, stderr=log,
                         start_new_session=True)
    return p


def start_switchboard(binary, rundir):
    cfg = os.path.join(rundir, "switchboard.toml")
    with open(cfg, "w") as f:
        f.write(f'[sip]\nlisten = ["udp:127.0.0.1:{PORT}"]\ndomain = "127.0.0.1"\n'
                f'[storage]\ndatabase = "{rundir}/bench.db"\n')
    log = open(os.path.join(rundir, "switchboard.log"), "w")
    return subprocess.Popen([binary, "serve", "--config", cfg], stdout=log, stderr=log,
                            start_new_session=True, env={**os.environ, "RUST_LOG": "warn"})


def run_sipp(rate, duration, rundir, label):
    total = int(rate * duration)
    stat = os.path.join(rundir, f"{label}-{rate}.csv")
    cmd = ["sipp", "-sf", os.path.join(HERE, "options.xml"), f"127.0.0.1:{PORT}",
           "-i", "127.0.0.1", "-p", "15070", "-cp", "15096", "-r", str(rate), "-m", str(total),
           "-l", str(max(rate * 2, 1000)), "-bg" if False else "-nostdin", "-trace_stat", "-stf", stat,
           "-fd", "1", "-timeout", f"{duration + 30}s", "-timeout_error", "-max_recv_loops", "1000"]
    t0 = time.time()
    r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    elapsed = time.time() - t0
    ok = failed = retrans = 0
    try:
        with open(stat) as f:
            rows = [l.strip().split(";") for l in f if l.strip()]
        head, last = rows[0], rows[-1]
        col = {n: i for i, n in enumerate(head)}
        ok = int(last[col["SuccessfulCall(C)"]])
        failed = int(last[col["FailedCall(C)"]])
        retrans = int(last[col["Retransmissions(C)"]])
    except (OSError, KeyError, IndexError, ValueError):
        print(f"  could not read SIPp statistics ({r.stderr.strip()[:200]})", file=sys.stderr)
    return ok, failed, retrans, elapsed


def measure(label, start, rates, duration, rundir):
    results = []
    proc = start()
    try:
        if not wait_bound():
            print(f"{label} did not bind udp:127.0.0.1:{PORT}", file=sys.stderr)
            return results
        time.sleep(0.5)
        for rate in rates:
            pids = tree(proc.pid)
            c0 = cpu_seconds(pids)
            ok, failed, retrans, elapsed = run_sipp(rate, duration, rundir, label)
            c1 = cpu_seconds(tree(proc.pid) | pids)
            us = (c1 - c0) * 1e6 / ok if ok else float("nan")
            results.append(dict(server=label, rate=rate, ok=ok, failed=failed, retrans=retrans,
                                cpu_s=c1 - c0, us_per_options=us, elapsed=elapsed))
            print(f"{label:12} rate {rate:6}/s: {ok} ok, {failed} failed, {retrans} retrans, "
                  f"CPU {c1 - c0:.2f} s, {us:.1f} us/OPTIONS", flush=True)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    return results


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--switchboard", required=True, help="path to the switchboard binary (release build)")
    ap.add_argument("--rates", default="2000,5000,10000")
    ap.add_argument("--duration", type=int, default=15, help="seconds per rate")
    args = ap.parse_args()
    rates = [int(r) for r in args.rates.split(",")]
    rundir = tempfile.mkdtemp(prefix="sb-options-")
    sb = measure("switchboard", lambda: start_switchboard(os.path.abspath(args.switchboard), rundir),
                 rates, args.duration, rundir)
    kam = measure("kamailio", lambda: start_kamailio(rundir), rates, args.duration, rundir)
    print("\n| rate /s | Switchboard µs/OPTIONS | Kamailio µs/OPTIONS | ratio (Kamailio / Switchboard) | failed SB / Kam |")
    print("|---|---|---|---|---|")
    for s, k in zip(sb, kam):
        ratio = k["us_per_options"] / s["us_per_options"] if s["us_per_options"] else float("nan")
        print(f"| {s['rate']} | {s['us_per_options']:.1f} | {k['us_per_options']:.1f} | {ratio:.2f} | "
              f"{s['failed']} / {k['failed']} |")
    print(f"\nlogs and SIPp statistics: {rundir}")


if __name__ == "__main__":
    main()
