#!/usr/bin/env bash
# End-to-end shipping benchmark: the full agent (no --dry-run) ships the benchmark corpus
# into a fast loopback bulk sink: with default settings (multiline grouping and JSON
# fields on: one document per event), "plain" (both off: one document per record), and
# with compression off.
# Prints CPU seconds, peak RSS and records/s next to `cat | gzip -1`'s CPU seconds
# measured in the same run (by benches/e2e.sh, which also generates the corpus).
#
#   benches/e2e-ship.sh            # SIZE, CONTAINERS, SEED, WORK, KEEP as for e2e.sh
#   SHIPPER_BIN=/path/to/shipper   # measure another build (BUILD=0 skips the release build)
#   RUNS="defaults plain off"      # which runs: defaults, plain (multiline and fields off),
#                                  # off (compression off), records (no settings changed,
#                                  # one document per record: for builds before multiline),
#                                  # control (defaults + benches/control.toml: redaction
#                                  # with a user pattern, a rule dropping probe requests,
#                                  # three routes by namespace)
#   NAMESPACES=1                   # every run reads a copy of the corpus (hard links) whose
#                                  # containers carry Docker labels putting them in three
#                                  # namespaces (shop, pay, audit): what the control run's
#                                  # routes select on; set it for the runs it is compared to
#
# The sink is ../shared/bench/es_sink when that directory exists beside the repo; without
# it this script says so and exits 0 (the dry-run benchmark still runs).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
WORK=${WORK:-$REPO/target/bench-e2e}
SINK_SRC=$REPO/../shared/bench/es_sink

if [ ! -d "$SINK_SRC" ]; then
  echo "e2e-ship: no bulk sink at $SINK_SRC; skipping the shipping benchmark"
  exit 0
fi
KEEP=${KEEP:-1} WORK=$WORK bash "$REPO/benches/e2e.sh" >/dev/null
echo "dry-run: $(python3 -c "import json;r=json.load(open('$WORK/result.json'));print(r['shipper'])")"
GZIP_CPU=$(python3 -c "import json;print(json.load(open('$WORK/result.json'))['gzip']['cpu_s'])")
MANIFEST=$WORK/corpus/containers/manifest.json
RECORDS=$(python3 -c "import json;print(json.load(open('$MANIFEST'))['records'])")
# With multiline grouping (the default) a stack trace is one document: the generator's
# manifest counts those as `events` (its fallback generator writes no traces).
EVENTS=$(python3 -c "import json;m=json.load(open('$MANIFEST'));print(m.get('events', m['records']))")
cargo build --release --quiet --manifest-path "$SINK_SRC/Cargo.toml" --target-dir "$REPO/target/es_sink"
SINK=$REPO/target/es_sink/release/es_sink
SHIPPER=${SHIPPER_BIN:-$REPO/target/release/shipper}
PORT=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
ROOT=$WORK/corpus/containers
if [ "${NAMESPACES:-0}" = 1 ]; then
  # The same files (hard links), each container in one of three namespaces by the Docker
  # labels the kubelet sets.
  ROOT=$WORK/corpus/containers-ns
  rm -rf "$ROOT"
  python3 - "$WORK/corpus/containers" "$ROOT" <<'PY'
import json, os, sys
src, dst = sys.argv[1:]
for i, d in enumerate(sorted(x for x in os.listdir(src) if os.path.isdir(os.path.join(src, x)))):
    os.makedirs(os.path.join(dst, d))
    for f in os.listdir(os.path.join(src, d)):
        os.link(os.path.join(src, d, f), os.path.join(dst, d, f))
    ns = ("shop", "pay", "audit")[i % 3]
    labels = {"io.kubernetes.pod.namespace": ns, "io.kubernetes.pod.name": f"{ns}-{i}",
              "io.kubernetes.container.name": "app"}
    with open(os.path.join(dst, d, "config.v2.json"), "w") as out:
        json.dump({"Config": {"Labels": labels}}, out)
PY
fi

run() {  # $1 = label, $2 = compression true|false, $3 = documents expected, $4.. = env
  local data=$WORK/ship-data
  rm -rf "$data"
  "$SINK" --listen "127.0.0.1:$PORT" > "$WORK/sink.out" 2>&1 &
  local sink=$!
  python3 - "$PORT" <<'PY'
import socket,sys,time
for _ in range(200):
    try: socket.create_connection(("127.0.0.1",int(sys.argv[1])),0.1).close(); break
    except OSError: time.sleep(0.05)
PY
  # `env -u`: this script's SHIPPER_BIN is not a setting of the agent.
  local want=$3
  SHIPPER_ELASTICSEARCH_COMPRESSION=$2 /usr/bin/time -f '%e %U %S %M' -o "$WORK/ship.time" \
    env -u SHIPPER_BIN "${@:4}" "$SHIPPER" --docker-root "$ROOT" --pods-root "$WORK/corpus/no-pods" \
    --no-kubernetes --data-dir "$data" --es-url "http://127.0.0.1:$PORT" --log-level warn 2> "$WORK/ship.stderr" &
  local pid=$!
  local start=$(date +%s.%N)
  while :; do
    local docs=$(curl -s "127.0.0.1:$PORT/_stats_sink" | python3 -c 'import json,sys;print(json.load(sys.stdin)["docs"])' 2>/dev/null || echo 0)
    [ "$docs" -ge "$want" ] && break
    kill -0 $pid 2>/dev/null || { echo "shipper exited early:"; tail -20 "$WORK/ship.stderr"; exit 1; }
    sleep 0.2
  done
  local wall=$(python3 -c "import time;print(round(time.time()-$start,2))")
  pkill -TERM -P $pid; wait $pid || true
  kill -TERM $sink; wait $sink || true
  read -r _ user sys rss < "$WORK/ship.time"
  python3 - "$1" "$wall" "$user" "$sys" "$rss" "$GZIP_CPU" "$RECORDS" "$docs" <<'PY'
import sys
label, wall, user, sys_, rss, gz, records, docs = sys.argv[1:]
# records/s counts log records read, whatever the documents they became.
cpu = float(user) + float(sys_)
print(f"{label:<22} docs {docs}  wall {float(wall):.2f} s  CPU {cpu:.2f} s (user {user} + sys {sys_})  "
      f"{int(records)/float(wall):,.0f} records/s  peak RSS {int(rss)/1024:.1f} MiB  "
      f"CPU/gzip -1 = {cpu/float(gz):.3f}")
PY
}

echo "gzip -1 reference: $GZIP_CPU CPU s over the corpus ($RECORDS records, $EVENTS events)"
for r in ${RUNS:-defaults plain off}; do
  case $r in
    defaults) run "ship, defaults" true "$EVENTS" ;;
    plain) run "ship, plain" true "$RECORDS" SHIPPER_MULTILINE_MODE=off SHIPPER_FIELDS_PARSER=none ;;
    off) run "ship, compression off" false "$EVENTS" ;;
    records) run "ship, gzip on" true "$RECORDS" ;;
    control)
      # Every probe request is one event the rule drops.
      PROBES=$(cat "$WORK"/corpus/containers/*/*-json.log | grep -c 'kube-probe/' || true)
      run "ship, control" true "$((EVENTS - PROBES))" SHIPPER_CONFIG="$REPO/benches/control.toml" ;;
    *) echo "e2e-ship: unknown run $r" >&2; exit 2 ;;
  esac
done
