#!/usr/bin/env bash
# benches/e2e-kube.sh — what Kubernetes metadata costs end to end: benches/e2e.sh run
# RUNS times without metadata and RUNS times with `--kubeconfig` pointing at
# benches/kube_api.py, a loopback API serving PODS pods of which the first ones own the
# corpus' containers (so every document is enriched, from a cache of PODS pods).
#
# Usage: benches/e2e-kube.sh [RUNS=3] [PODS=100] [other e2e.sh KEY=VALUE ...]
#   The first e2e.sh run builds and generates/reuses the corpus as e2e.sh's own settings
#   say; the following ones use BUILD=0 KEEP=1. Runs alternate (without, with) so a
#   machine shared with other work disturbs both alike.
# Prints each run's CPU seconds (user+sys) and the ratio of the medians.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
RUNS=3
PODS=100
PASS=()
for arg in "$@"; do
    case "$arg" in
        RUNS=*) RUNS=${arg#RUNS=} ;;
        PODS=*) PODS=${arg#PODS=} ;;
        EXTRA_ARGS=*) echo "e2e-kube: EXTRA_ARGS is set by this script" >&2; exit 1 ;;
        *) PASS+=("$arg") ;;
    esac
done
WORK=${WORK:-target/bench-e2e}
for a in "${PASS[@]}"; do [[ $a == WORK=* ]] && WORK=${a#WORK=}; done
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
KC=$WORK/kubeconfig
SERVER_PID=
cleanup() { [[ -n $SERVER_PID ]] && kill "$SERVER_PID" 2>/dev/null || true; }
trap cleanup EXIT

run() {  # run <label> <build> <extra args>; prints the CPU seconds
    bash benches/e2e.sh "${PASS[@]}" WORK="$WORK" BUILD="$2" KEEP=1 EXTRA_ARGS="$3" >"$WORK/e2e-$1.out" 2>&1 ||
        { cat "$WORK/e2e-$1.out" >&2; exit 1; }
    python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["shipper"]["cpu_s"], r["shipper"]["summary"])' \
        "$WORK/result.json"
}

# The first run builds and prepares the corpus.
first=$(run plain "${BUILD:-1}" "")
rm -f "$KC"
python3 benches/kube_api.py --docker-root "$WORK/corpus/containers" --pods "$PODS" --kubeconfig "$KC" &
SERVER_PID=$!
for _ in $(seq 100); do [[ -s $KC ]] && break; sleep 0.1; done
[[ -s $KC ]] || { echo "e2e-kube: the API server did not start" >&2; exit 1; }

plain=("${first%% *}")
with=()
for i in $(seq "$RUNS"); do
    out=$(run kube 0 "--kubeconfig $KC")
    with+=("${out%% *}")
    [[ $i == 1 ]] && summary_kube=${out#* }
    if [[ $i -lt $RUNS ]]; then
        out=$(run plain 0 "")
        plain+=("${out%% *}")
    fi
done
python3 - "$PODS" "${plain[*]}" "${with[*]}" "${first#* }" "$summary_kube" <<'PY'
import statistics, sys
pods, plain, kube, s_plain, s_kube = sys.argv[1:]
plain = [float(x) for x in plain.split()]
kube = [float(x) for x in kube.split()]
mp, mk = statistics.median(plain), statistics.median(kube)
print("without metadata        CPU s: %s   median %.2f" % (" ".join("%.2f" % x for x in plain), mp))
print("with %3s pods from API  CPU s: %s   median %.2f" % (pods, " ".join("%.2f" % x for x in kube), mk))
print("metadata costs %+.1f %% CPU (target <= 10 %%)   %s" % ((mk / mp - 1) * 100, "PASS" if mk <= mp * 1.10 else "MISS"))
print("summary without: " + s_plain)
print("summary with:    " + s_kube)
PY
