#!/usr/bin/env bash
# Memory held by unfinished records: CONTAINERS files, each ending in a record of
# PARTIAL_KIB KiB split by Docker into 16 KiB chunks (lines whose `log` has no `\n`) and
# not finished yet, so the agent holds each one in memory until its last chunk comes.
# Reports the agent's RSS (and anonymous memory) once every byte was read, against the
# bytes pending.
#
#   benches/partials.sh              # CONTAINERS=1000 PARTIAL_KIB=1024
#   SHIPPER_BIN=/path/to/shipper     # measure another build (BUILD=0 skips the release build)
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
WORK=${WORK:-$REPO/target/bench-partials}
CONTAINERS=${CONTAINERS:-1000}
KIB=${PARTIAL_KIB:-1024}
. "$REPO/benches/agent.sh"
bench_setup
python3 - "$WORK/containers" "$CONTAINERS" "$KIB" <<'PY'
import hashlib, json, os, sys
root, n, kib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
chunk = "x" * 16384
for c in range(n):
    cid = hashlib.sha256(f"partials-{c}".encode()).hexdigest()
    os.makedirs(os.path.join(root, cid))
    with open(os.path.join(root, cid, f"{cid}-json.log"), "w") as f:
        f.write(json.dumps({"log": f"container {c} first\n", "stream": "stdout",
                            "time": "2024-07-08T03:42:57.000000001Z"}) + "\n")
        for i in range(kib // 16):
            f.write(json.dumps({"log": chunk, "stream": "stdout",
                                "time": f"2024-07-08T03:42:58.{i:09d}Z"}) + "\n")
PY
total=$(du -sb "$WORK/containers" | cut -f1)
bench_start
# Read to the end: the process has read at least every file's bytes (rchar), then settled.
for _ in $(seq 1200); do
  consumed=$(python3 - "$PID" <<'PY'
import sys
pid = sys.argv[1]
try:
    io = dict(l.split(":", 1) for l in open(f"/proc/{pid}/io"))
    print(int(io["rchar"]))
except OSError:
    print(0)
PY
)
  [ "$consumed" -ge "$total" ] && break
  sleep 0.1
done
sleep 2
python3 - "$PID" "$CONTAINERS" "$KIB" "$total" <<'PY'
import sys
pid, n, kib, total = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
st = dict(l.split(":", 1) for l in open(f"/proc/{pid}/status") if ":" in l)
kb = lambda k: int(st[k].split()[0])
print(f"partials: {n} files x {kib} KiB pending ({total / 2**20:.0f} MiB on disk): "
      f"RSS {kb('VmRSS') / 1024:.1f} MiB (anon {kb('RssAnon') / 1024:.1f} MiB), peak {kb('VmHWM') / 1024:.1f} MiB")
PY
