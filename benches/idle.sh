#!/usr/bin/env bash
# Idle cost: the agent with CONTAINERS containers caught up, then IDLE_SECONDS of no new
# lines. Reports CPU (% of one core), wake-ups/s summed over every thread (voluntary and
# involuntary context switches of /proc/<pid>/task/*/status: the process's own status
# counts only its main thread) with the busiest threads, peak and current RSS (split into
# anonymous memory and file-backed pages, mostly the executable's code as the page cache
# maps it in, which depends on what is cached), and bytes written to disk meanwhile
# (/proc/<pid>/io write_bytes).
#
#   benches/idle.sh                 # CONTAINERS=100 IDLE_SECONDS=60
#   SHIPPER_BIN=/path/to/shipper    # measure another build (BUILD=0 skips the release build)
#
# Elasticsearch is benches/sink.py on loopback; Kubernetes is off (paths only).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
WORK=${WORK:-$REPO/target/bench-idle}
CONTAINERS=${CONTAINERS:-100}
IDLE=${IDLE_SECONDS:-60}
. "$REPO/benches/agent.sh"
bench_setup
bench_tree idle "$CONTAINERS" 10
bench_start
want=$((CONTAINERS * 10))
for _ in $(seq 600); do
  docs=$(curl -s "127.0.0.1:$PORT/_stats_sink" | python3 -c 'import json,sys;print(json.load(sys.stdin)["docs"])' 2>/dev/null || echo 0)
  [ "$docs" -ge "$want" ] && break
  sleep 0.1
done
[ "$docs" -ge "$want" ] || { echo "idle: only $docs of $want documents arrived"; tail "$WORK/shipper.stderr"; exit 1; }
# Let the last checkpoint save and the batch linger pass before measuring.
sleep 3
python3 - "$PID" "$IDLE" <<'PY'
import glob, os, sys, time
pid, secs = int(sys.argv[1]), float(sys.argv[2])
tick = os.sysconf("SC_CLK_TCK")
def sample():
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / tick
    threads = {}
    for st in glob.glob(f"/proc/{pid}/task/*/status"):
        try:
            d = dict(l.split(":", 1) for l in open(st) if ":" in l)
        except OSError:
            continue
        tid = st.split("/")[4]
        threads[tid] = (d["Name"].strip(), int(d["voluntary_ctxt_switches"]) + int(d["nonvoluntary_ctxt_switches"]))
    io = dict(l.split(":", 1) for l in open(f"/proc/{pid}/io"))
    status = dict(l.split(":", 1) for l in open(f"/proc/{pid}/status") if ":" in l)
    kb = lambda k: int(status[k].split()[0])
    return cpu, threads, int(io["write_bytes"]), (kb("VmRSS"), kb("RssAnon"), kb("RssFile")), kb("VmHWM")
c0, t0, w0, _, _ = sample()
start = time.time()
time.sleep(secs)
c1, t1, w1, rss, hwm = sample()
el = time.time() - start
wake = {tid: (name, n - t0.get(tid, (name, 0))[1]) for tid, (name, n) in t1.items()}
total = sum(n for _, n in wake.values())
busiest = sorted(wake.values(), key=lambda x: -x[1])[:5]
print(f"idle {el:.0f} s, {len(t1)} threads: CPU {100 * (c1 - c0) / el:.3f} % of a core, "
      f"{total / el:.1f} wake-ups/s, RSS {rss[0] / 1024:.1f} MiB (anonymous {rss[1] / 1024:.1f}, "
      f"file-backed {rss[2] / 1024:.1f}: the executable's pages; peak {hwm / 1024:.1f}), "
      f"{w1 - w0} bytes written")
print("  busiest threads (wake-ups/s): " + ", ".join(f"{n} {w / el:.1f}" for n, w in busiest))
PY
