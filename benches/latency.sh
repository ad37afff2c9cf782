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
if [ "${BUILD:-1}" = 1 ] && [ -z "${SHIPPER_BIN:-}" ]; then
  cargo build --release --quiet --manifest-path "$REPO/Cargo.toml"
fi
SHIPPER=${SHIPPER_BIN:-$REPO/target/release/shipper}
rm -rf "$WORK"; mkdir -p "$WORK/containers" "$WORK/no-pods"
coproc SINK { exec python3 "$REPO/benches/sink.py" --port 0; }
read -r line <&"${SINK[0]}"
PORT=$(python3 -c "import json,sys;print(json.loads(sys.argv[1])['port'])" "$line")
python3 - "$WORK/containers" "$FILES" <<'PY'
import hashlib, json, os, sys
root, n = sys.argv[1], int(sys.argv[2])
for c in range(n):
    cid = hashlib.sha256(f"latency-{c}".encode()).hexdigest()
    os.makedirs(os.path.join(root, cid))
    with open(os.path.join(root, cid, f"{cid}-json.log"), "w") as f:
        f.write(json.dumps({"log": f"warm-up {c}\n", "stream": "stdout", "time": "2024-07-08T03:42:57.000000000Z"}) + "\n")
PY
env -u SHIPPER_BIN "$SHIPPER" --docker-root "$WORK/containers" --pods-root "$WORK/no-pods" --no-kubernetes \
  --data-dir "$WORK/data" --es-url "http://127.0.0.1:$PORT" --log-level warn 2> "$WORK/shipper.stderr" &
PID=$!
trap 'kill $PID $SINK_PID 2>/dev/null || true' EXIT
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
