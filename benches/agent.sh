# Shared by benches/idle.sh and benches/latency.sh (sourced): the agent under test
# against benches/sink.py, over a Docker tree of the caller's.
#
#   bench_setup            # builds the release binary unless BUILD=0 or SHIPPER_BIN is set
#   bench_tree <name> <n> <lines>   # n containers under $WORK/containers, <lines> lines each
#   bench_start            # starts the sink (PORT) and the agent (PID) on $WORK/containers

bench_setup() {
  if [ "${BUILD:-1}" = 1 ] && [ -z "${SHIPPER_BIN:-}" ]; then
    cargo build --release --quiet --manifest-path "$REPO/Cargo.toml"
  fi
  SHIPPER=${SHIPPER_BIN:-$REPO/target/release/shipper}
  rm -rf "$WORK"; mkdir -p "$WORK/containers" "$WORK/no-pods"
}

bench_tree() {
  python3 - "$WORK/containers" "$1" "$2" "$3" <<'PY'
import hashlib, json, os, sys
root, name, n, lines = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
for c in range(n):
    cid = hashlib.sha256(f"{name}-{c}".encode()).hexdigest()
    os.makedirs(os.path.join(root, cid))
    with open(os.path.join(root, cid, f"{cid}-json.log"), "w") as f:
        for i in range(lines):
            f.write(json.dumps({"log": f"container {c} line {i}\n", "stream": "stdout",
                                "time": f"2024-07-08T03:42:57.{i:09d}Z"}) + "\n")
PY
}

bench_start() {
  coproc SINK { exec python3 "$REPO/benches/sink.py" --port 0; }
  local line
  read -r line <&"${SINK[0]}"
  PORT=$(python3 -c "import json,sys;print(json.loads(sys.argv[1])['port'])" "$line")
  # `env -u`: the benchmark's SHIPPER_BIN is not a setting of the agent.
  env -u SHIPPER_BIN "$SHIPPER" --docker-root "$WORK/containers" --pods-root "$WORK/no-pods" \
    --no-kubernetes --data-dir "$WORK/data" --es-url "http://127.0.0.1:$PORT" --log-level warn \
    2> "$WORK/shipper.stderr" &
  PID=$!
  trap 'kill $PID $SINK_PID 2>/dev/null || true' EXIT
}
