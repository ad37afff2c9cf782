#!/usr/bin/env bash
# Journal reading cost: ENTRIES journal entries (kubelet-like messages, the fields journald
# adds) written into real journal files by systemd-journal-remote, then read
#   1. by `journalctl --directory DIR -o json > /dev/null`: the floor of the subprocess
#      approach (a journalctl child whose JSON the agent would still have to parse);
#   2. by `shipper --dry-run` over the same directory, every unit: native read, unit
#      selection, documents rendered as bulk NDJSON (to /dev/null).
# Reports CPU seconds (user + system) and entries per CPU-second for each, best of RUNS.
#
#   benches/journal.sh              # ENTRIES=200000 RUNS=3
#   SHIPPER_BIN=/path/to/shipper    # measure another build (BUILD=0 skips the release build)
#
# Needs systemd-journal-remote and journalctl (.ci/setup-deps installs the former).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
WORK=${WORK:-$REPO/target/bench-journal}
ENTRIES=${ENTRIES:-200000}
RUNS=${RUNS:-3}
if [ "${BUILD:-1}" = 1 ] && [ -z "${SHIPPER_BIN:-}" ]; then
  cargo build --release --quiet --manifest-path "$REPO/Cargo.toml"
fi
SHIPPER=${SHIPPER_BIN:-$REPO/target/release/shipper}
REMOTE=$(command -v systemd-journal-remote || ls /lib/systemd/systemd-journal-remote /usr/lib/systemd/systemd-journal-remote 2>/dev/null | head -1)
[ -n "$REMOTE" ] || { echo "journal: systemd-journal-remote is missing (run .ci/setup-deps)"; exit 1; }
rm -rf "$WORK"
DIR="$WORK/root/var/log/journal/5f2c0b1e9d8a4c7b8e6f1a2b3c4d5e6f"
mkdir -p "$DIR"

# The entries, in batches of 20 000 per journal file (journald rotates at a few
# megabytes too).
python3 - "$ENTRIES" "$WORK/export" <<'PY'
import sys
n, out = int(sys.argv[1]), sys.argv[2]
units = ["kubelet.service", "containerd.service", "kernel", "sshd.service"]
base = 1720410120 * 1_000_000
batch = 20000
for b in range(0, n, batch):
    with open(f"{out}.{b // batch:04d}", "w") as f:
        for i in range(b, min(n, b + batch)):
            u = units[i % 4]
            f.write(f"__REALTIME_TIMESTAMP={base + i * 1000}\n__MONOTONIC_TIMESTAMP={5_000_000 + i * 1000}\n")
            f.write("_BOOT_ID=0123456789abcdef0123456789abcdef\n_MACHINE_ID=5f2c0b1e9d8a4c7b8e6f1a2b3c4d5e6f\n_HOSTNAME=node-1\n")
            if u == "kernel":
                f.write("_TRANSPORT=kernel\nSYSLOG_IDENTIFIER=kernel\nPRIORITY=4\n")
                f.write(f"MESSAGE=IPv4: martian source 10.244.{i % 250}.{i % 200} from 10.0.0.{i % 100}, on dev eth0\n\n")
            else:
                ident = u.split(".")[0]
                f.write(f"_SYSTEMD_UNIT={u}\n_TRANSPORT=stdout\nSYSLOG_IDENTIFIER={ident}\n_PID={1000 + i % 7}\n_COMM={ident}\n_UID=0\n_GID=0\nPRIORITY=6\n_SYSTEMD_CGROUP=/system.slice/{u}\n")
                f.write(f"MESSAGE=I0708 03:42:57.{i % 1000000:06d} 1234 kubelet.go:{i % 3000}] \"SyncLoop (PLEG): event for pod\" pod=\"shop/web-{i % 50}\" event={{ID:{i:08x} Type:ContainerStarted}}\n\n")
PY
n=0
for f in "$WORK"/export.*; do
  "$REMOTE" -o "$DIR/system@$(printf %04d $n).journal" - < "$f" 2>/dev/null
  n=$((n + 1))
done
echo "journal: $ENTRIES entries in $n files, $(du -sh "$DIR" | cut -f1) on disk"

# CPU seconds of a command (user + system of its children), best of RUNS.
cpu() {
  python3 - "$RUNS" "$@" <<'PY'
import resource, subprocess, sys
runs, cmd = int(sys.argv[1]), sys.argv[2:]
best = None
for _ in range(runs):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open("/dev/null", "wb") as out:
        subprocess.run(cmd, stdout=out, stderr=subprocess.DEVNULL, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    best = s if best is None else min(best, s)
print(f"{best:.3f}")
PY
}

JCTL=$(cpu journalctl --directory "$DIR" -o json --no-pager)
SHIP=$(cpu env -u SHIPPER_BIN SHIPPER_NODE_JOURNAL_UNITS= SHIPPER_NODE_FILES= "$SHIPPER" --dry-run \
  --docker-root "$WORK/none" --pods-root "$WORK/none" --node-root "$WORK/root" --log-level error)
python3 - "$ENTRIES" "$JCTL" "$SHIP" <<'PY'
import sys
n, j, s = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
print(f"journalctl -o json > /dev/null : {j:6.3f} CPU s  {n / j:10,.0f} entries/CPU-s")
print(f"shipper --dry-run (documents)  : {s:6.3f} CPU s  {n / s:10,.0f} entries/CPU-s")
PY
