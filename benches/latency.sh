#!/usr/bin/env bash
# End-to-end latency: the time from a line's write (embedded in it) to the moment the bulk
# request carrying it reaches a loopback sink (benches/sink.py), with the agent's default
# settings. Two phases over FILES files: RATE lines/s in all, then a trickle of one line/s
# per file; each for SECONDS. Prints p50, p99 and max per phase, with the requests made.
#
#   benches/latency.sh              # FILES=10 RATE=1000 SECONDS=30
#   SHIPPER_BIN=/path/to/shipper    # measure another build (BUILD=0 skips the release build)
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
WORK=${WORK:-$REPO/target/bench-latency}
FILES=${FILES:-10}
RATE=${RATE:-1000}
SECS=${SECONDS_EACH:-30}
. "$REPO/benches/agent.sh"
bench_setup
bench_tree latency "$FILES" 1
bench_start
python3 - "$WORK/containers" "$PORT" "$FILES" "$RATE" "$SECS" <<'PY'
import datetime, glob, json, sys, time, urllib.request
root, port, files, rate, secs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
paths = sorted(glob.glob(f"{root}/*/*-json.log"))
outs = [open(p, "a", buffering=1) for p in paths]
def stats():
    return json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/_stats_sink"))
def wait_docs(n, what):
    deadline = time.time() + 60
    while stats()["docs"] < n:
        if time.time() > deadline:
            sys.exit(f"latency: {what}: {stats()['docs']} of {n} documents arrived")
        time.sleep(0.05)
wait_docs(files, "warm-up")
time.sleep(2)
def phase(label, per_sec):
    urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/_stats_sink/reset", data=b"", method="POST"))
    interval = 1.0 / per_sec
    start = time.time()
    n = 0
    while time.time() - start < secs:
        due = start + n * interval
        now = time.time()
        if due > now:
            time.sleep(due - now)
        t = time.time_ns()
        stamp = datetime.datetime.fromtimestamp(t / 1e9, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"
        outs[n % files].write(json.dumps({"log": f"lat {t} seq {n}\n", "stream": "stdout", "time": stamp}) + "\n")
        n += 1
    wait_docs(n, label)
    s = stats()
    d = sorted(s["delays_ms"])
    q = lambda p: d[min(len(d) - 1, int(p * len(d)))]
    print(f"{label:<28} {n} lines, {s['requests']} bulk requests: latency p50 {q(0.5):.0f} ms, "
          f"p99 {q(0.99):.0f} ms, max {d[-1]:.0f} ms")
phase(f"{rate:.0f} lines/s over {files} files", rate)
phase(f"trickle, 1 line/s per file", files)
PY
