#!/usr/bin/env bash
# benches/e2e.sh — end-to-end throughput/CPU/memory benchmark of `shipper --dry-run`
# on a Docker json-file corpus, against a `cat | gzip -1` reference measured in the same run.
#
# Usage: benches/e2e.sh [KEY=VALUE ...]      (or set the same names as environment variables)
#   SIZE=1G            corpus size (1G, 256M, 64M, ...; approximate)
#   CONTAINERS=50      number of containers (log files)
#   SEED=1             generator seed (same SIZE/CONTAINERS/SEED -> same bytes)
#   WORK=target/bench-e2e
#                      work dir (relative paths are relative to the repo root); holds
#                      corpus/containers/ (+ manifest.json), *.time, shipper.stderr, result.json
#   KEEP=0             1 = reuse the corpus in WORK if its manifest matches SIZE/CONTAINERS/SEED
#                      and generator (and its files add up to the manifest's file_bytes);
#                      otherwise corpus/containers is deleted and generated again
#   GEN=auto           auto: ../shared/bench/gen_docker_logs.py if it exists, else the repo's
#                      benches/gen_corpus.py; shared | fallback force one of them
#   EXTRA_ARGS=        extra arguments for shipper (split on whitespace, no quoting)
#   BUILD=1            0 = skip `cargo build --release --bin shipper`
#   SHIPPER_BIN=       binary to run (default: ${CARGO_TARGET_DIR:-target}/release/shipper)
#   PROFILE=0          1 = afterwards, run shipper again under `perf record $PERF_ARGS`
#   PERF_ARGS=-g       perf record options (try `--call-graph dwarf` for better stacks)
#
# Steps: build -> generate corpus -> warm the page cache (cat files > /dev/null) ->
#   reference: GNU time of  bash -c 'cat <files> | gzip -1 > /dev/null'  (user+sys include
#   the waited-for children, i.e. cat and gzip) ->
#   GNU time of  shipper --dry-run --docker-root WORK/corpus/containers
#                --pods-root WORK/corpus/no-pods $EXTRA_ARGS > /dev/null  (stderr to a file) ->
#   report (text + one JSON line, also written to WORK/result.json).
# Targets (spec): shipper CPU <= 0.25 x gzip -1 CPU on the same bytes; peak RSS <= 40 MiB.
# Needs: cargo, python3, GNU time at /usr/bin/time (installed with apt-get when missing and
# running as root), optionally perf.
set -euo pipefail

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; }
die() { echo "e2e: error: $*" >&2; exit 1; }
log() { echo "e2e: $*" >&2; }

for arg in "$@"; do
    case "$arg" in
        -h|--help) usage; exit 0 ;;
        SIZE=*|CONTAINERS=*|SEED=*|WORK=*|KEEP=*|GEN=*|EXTRA_ARGS=*|BUILD=*|SHIPPER_BIN=*|PROFILE=*|PERF_ARGS=*)
            export "${arg?}" ;;
        *) die "unknown argument '$arg' (see --help)" ;;
    esac
done

SIZE=${SIZE:-1G}
CONTAINERS=${CONTAINERS:-50}
SEED=${SEED:-1}
WORK=${WORK:-target/bench-e2e}
KEEP=${KEEP:-0}
GEN=${GEN:-auto}
EXTRA_ARGS=${EXTRA_ARGS:-}
BUILD=${BUILD:-1}
PROFILE=${PROFILE:-0}
PERF_ARGS=${PERF_ARGS:--g}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
[[ -f Cargo.toml ]] || die "no Cargo.toml in $ROOT"
[[ $CONTAINERS =~ ^[1-9][0-9]*$ ]] || die "CONTAINERS must be a positive integer, got '$CONTAINERS'"
[[ $SEED =~ ^[0-9]+$ ]] || die "SEED must be a non-negative integer, got '$SEED'"
[[ $SIZE =~ ^[0-9]+(\.[0-9]+)?([KMGkmg]([iI][bB])?)?$ ]] || die "SIZE must look like 1G, 256M, 64MiB or bytes, got '$SIZE'"
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
CORPUS=$WORK/corpus/containers
PODS_ROOT=$WORK/corpus/no-pods
SHIPPER_BIN=${SHIPPER_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/shipper}
read -r -a EXTRA <<<"$EXTRA_ARGS"

command -v python3 >/dev/null || die "python3 is needed (corpus generator, report)"

# --- GNU time ---------------------------------------------------------------------------
TIME=/usr/bin/time
if ! [[ -x $TIME ]]; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        log "GNU time missing: installing Debian package 'time'"
        { apt-get update -qq && apt-get install -y -qq --no-install-recommends time >/dev/null; } ||
            die "apt-get install time failed"
    fi
    [[ -x $TIME ]] || die "GNU time (/usr/bin/time) is required: install it (Debian/Ubuntu: apt-get install time) or run as root so this script can"
fi
"$TIME" -f '%e' -o /dev/null true 2>/dev/null || die "$TIME is not GNU time (needs -f/-o)"

# --- 1. build ---------------------------------------------------------------------------
if [[ $BUILD == 1 ]]; then
    log "building: cargo build --release --bin shipper"
    cargo build --release --bin shipper
fi
[[ -x $SHIPPER_BIN ]] || die "no shipper binary at $SHIPPER_BIN"

# --- 2. corpus --------------------------------------------------------------------------
SHARED_GEN=$ROOT/../shared/bench/gen_docker_logs.py
case "$GEN" in
    auto) if [[ -f $SHARED_GEN ]]; then GEN=shared; else GEN=fallback; fi ;;
    shared) [[ -f $SHARED_GEN ]] || die "GEN=shared but $SHARED_GEN does not exist" ;;
    fallback) ;;
    *) die "GEN must be auto, shared or fallback, got '$GEN'" ;;
esac
if [[ $GEN == shared ]]; then
    GEN_CMD=(python3 "$SHARED_GEN"); GEN_NAME=shared/bench/gen_docker_logs.py
else
    GEN_CMD=(python3 "$ROOT/benches/gen_corpus.py"); GEN_NAME=benches/gen_corpus.py
fi

# Prints why the corpus in $CORPUS cannot be reused, or nothing if it can.
corpus_mismatch() {
    python3 - "$CORPUS" "$SIZE" "$CONTAINERS" "$SEED" "$GEN_NAME" <<'EOF'
import glob, json, os, sys
root, size, containers, seed, gen = sys.argv[1:]
def parse_size(s):  # same rules as both generators
    s = s.strip().upper()
    for suf, m in (("GIB", 1 << 30), ("MIB", 1 << 20), ("KIB", 1 << 10), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if s.endswith(suf):
            return int(float(s[: -len(suf)]) * m)
    return int(float(s))
try:
    m = json.load(open(os.path.join(root, "manifest.json")))
except (OSError, ValueError) as e:
    print("no readable manifest (%s)" % e); sys.exit()
want = dict(format="docker", requested_bytes=parse_size(size), containers=int(containers), seed=int(seed),
            generator=gen)
have = dict(m, generator=m.get("generator", "shared/bench/gen_docker_logs.py"))
diff = ["%s: have %r, want %r" % (k, have.get(k), v) for k, v in want.items() if have.get(k) != v]
if diff:
    print("manifest differs: " + "; ".join(diff)); sys.exit()
files = glob.glob(os.path.join(root, "*", "*-json.log"))
total = sum(os.path.getsize(f) for f in files)
if total != m.get("file_bytes") or len(files) != m["containers"]:
    print("files on disk (%d files, %d bytes) do not match the manifest (%d, %d)"
          % (len(files), total, m["containers"], m.get("file_bytes", -1)))
EOF
}

reuse=0
if [[ $KEEP == 1 ]]; then
    why=$(corpus_mismatch)
    if [[ -z $why ]]; then reuse=1; log "KEEP=1: reusing corpus in $CORPUS"
    else log "KEEP=1 but cannot reuse the corpus: $why"; fi
fi
if [[ $reuse == 0 ]]; then
    log "generating corpus with $GEN_NAME: SIZE=$SIZE CONTAINERS=$CONTAINERS SEED=$SEED -> $CORPUS"
    rm -rf -- "$CORPUS"
    mkdir -p "$(dirname "$CORPUS")"
    "${GEN_CMD[@]}" --root "$CORPUS" --size "$SIZE" --containers "$CONTAINERS" --seed "$SEED" >/dev/null
    why=$(corpus_mismatch)
    [[ -z $why ]] || die "generated corpus does not check out: $why"
fi
[[ ! -e $PODS_ROOT ]] || log "warning: $PODS_ROOT exists; shipper will also read it"

# The log files, NUL-separated, sorted (one list for cache warming and the reference).
FILES=$WORK/files.list0
find "$CORPUS" -mindepth 2 -maxdepth 2 -type f -name '*-json.log' -print0 | sort -z >"$FILES"
[[ -s $FILES ]] || die "no *-json.log files under $CORPUS"

# --- 3. reference: cat | gzip -1 --------------------------------------------------------
log "warming the page cache"
xargs -0 cat -- <"$FILES" >/dev/null

log "reference: cat <files> | gzip -1 > /dev/null"
"$TIME" -f '%e %U %S %M' -o "$WORK/gzip.time" \
    bash -c 'set -o pipefail; xargs -0 cat -- <"$1" | gzip -1 >/dev/null' _ "$FILES" ||
    die "reference pipeline failed: $(cat "$WORK/gzip.time")"

# --- 4. shipper -------------------------------------------------------------------------
# `env -u`: the script's own SHIPPER_BIN must not reach the agent, which reads every
# SHIPPER_* variable as a setting.
SHIPPER_CMD=(env -u SHIPPER_BIN "$SHIPPER_BIN" --dry-run --docker-root "$CORPUS" --pods-root "$PODS_ROOT" "${EXTRA[@]}")
log "running: ${SHIPPER_CMD[*]} > /dev/null"
set +e
"$TIME" -f '%e %U %S %M' -o "$WORK/shipper.time" "${SHIPPER_CMD[@]}" >/dev/null 2>"$WORK/shipper.stderr"
rc=$?
set -e
if [[ $rc -ne 0 ]]; then
    echo "e2e: shipper exited with status $rc; last lines of its stderr ($WORK/shipper.stderr):" >&2
    tail -n 30 "$WORK/shipper.stderr" | sed 's/^/    /' >&2
    exit "$rc"
fi
SUMMARY=$(grep -v '^[[:space:]]*$' "$WORK/shipper.stderr" | tail -n 1 || true)

# --- 5. report --------------------------------------------------------------------------
E2E_SUMMARY=$SUMMARY E2E_GEN=$GEN_NAME E2E_SIZE=$SIZE E2E_EXTRA=$EXTRA_ARGS \
python3 - "$CORPUS/manifest.json" "$WORK/result.json" "$WORK/shipper.time" "$WORK/gzip.time" <<'EOF'
import json, os, sys, time
man = json.load(open(sys.argv[1]))
def fields(path):  # last line of a GNU time -o file: "%e %U %S %M"
    return open(path).read().split("\n")[-2].split()
sh_wall, sh_user, sh_sys, sh_rss = [float(x) for x in fields(sys.argv[3])]
gz_wall, gz_user, gz_sys, _ = [float(x) for x in fields(sys.argv[4])]
summary = os.environ["E2E_SUMMARY"]
wall = max(sh_wall, 0.01)  # GNU time has 10 ms resolution
sh_cpu, gz_cpu = sh_user + sh_sys, gz_user + gz_sys
rss_mib = sh_rss / 1024
ratio = sh_cpu / gz_cpu if gz_cpu > 0 else float("inf")  # inf -> MISS; JSON gets null
RATIO_MAX, RSS_MAX = 0.25, 40.0
ok = lambda b: "PASS" if b else "MISS"
# Best effort: if the summary has a records counter ("records=N", "records: N"), check it
# against the manifest; a placeholder binary that reads nothing should not look like a win.
import re
m = re.search(r"\brecords\W{1,3}(\d+)", summary)
records_seen = int(m.group(1)) if m else None
# One document per record, or per event with multiline grouping on (the default).
records_match = None if records_seen is None else records_seen in (man["records"], man.get("events"))
r = dict(
    corpus=dict(generator=os.environ["E2E_GEN"], size=os.environ["E2E_SIZE"], containers=man["containers"], seed=man["seed"],
                file_bytes=man["file_bytes"], records=man["records"], physical_lines=man["physical_lines"],
                partial_lines=man["partial_lines"]),
    shipper=dict(wall_s=sh_wall, cpu_s=round(sh_cpu, 2), user_s=sh_user, sys_s=sh_sys,
                 records_per_s=round(man["records"] / wall), mb_per_s=round(man["file_bytes"] / 1e6 / wall, 1),
                 peak_rss_mib=round(rss_mib, 1), records_in_summary=records_seen,
                 records_match=records_match, extra_args=os.environ["E2E_EXTRA"], summary=summary),
    gzip=dict(cpu_s=round(gz_cpu, 2), user_s=gz_user, sys_s=gz_sys, wall_s=gz_wall),
    ratio_cpu_vs_gzip=round(ratio, 3) if gz_cpu > 0 else None,
    targets=dict(ratio_max=RATIO_MAX, ratio=ok(ratio <= RATIO_MAX), peak_rss_mib_max=RSS_MAX,
                 peak_rss=ok(rss_mib <= RSS_MAX)),
    unix_time=int(time.time()),
)
print()
print("corpus   %.1f MB (%d bytes), %d records (%d physical lines, %d partial), %d containers, %s"
      % (man["file_bytes"] / 1e6, man["file_bytes"], man["records"], man["physical_lines"], man["partial_lines"],
         man["containers"], r["corpus"]["generator"]))
print("shipper  wall %.2f s   CPU %.2f s (user %.2f + sys %.2f)   %.0f records/s   %.1f MB/s   peak RSS %.1f MiB"
      % (sh_wall, sh_cpu, sh_user, sh_sys, man["records"] / wall, man["file_bytes"] / 1e6 / wall, rss_mib))
print("gzip -1  CPU %.2f s (user %.2f + sys %.2f, wall %.2f s)   [cat <files> | gzip -1 > /dev/null]"
      % (gz_cpu, gz_user, gz_sys, gz_wall))
print("ratio    shipper CPU / gzip CPU = %.3f   target <= %.2f   %s" % (ratio, RATIO_MAX, r["targets"]["ratio"]))
print("memory   peak RSS %.1f MiB   target <= %.0f MiB   %s" % (rss_mib, RSS_MAX, r["targets"]["peak_rss"]))
print("summary  %s" % (summary or "(shipper wrote nothing to stderr)"))
if not summary:
    print("WARNING  shipper printed no summary line: is --dry-run implemented? the numbers above are meaningless")
elif records_match is False:
    print("WARNING  summary says %d documents, the manifest %d records and %s events"
          % (records_seen, man["records"], man.get("events")))
line = json.dumps(r, separators=(",", ":"), ensure_ascii=False)
open(sys.argv[2], "w").write(line + "\n")
print(line)
EOF

# --- 6. optional profile ----------------------------------------------------------------
if [[ $PROFILE == 1 ]]; then
    if command -v perf >/dev/null; then
        read -r -a PERF_OPTS <<<"$PERF_ARGS"
        log "profiling: perf record ${PERF_OPTS[*]} -o $WORK/perf.data -- ${SHIPPER_CMD[*]}"
        if perf record "${PERF_OPTS[@]}" -o "$WORK/perf.data" -- "${SHIPPER_CMD[@]}" >/dev/null 2>"$WORK/perf.stderr"; then
            log "profile written: perf report -i $WORK/perf.data"
        else
            log "perf record failed (see $WORK/perf.stderr; perf_event_paranoid?); no profile"
        fi
    else
        log "PROFILE=1 but perf is not installed; skipping the profile"
    fi
fi
