#!/usr/bin/env python3
"""Deterministic Docker json-file log corpus for benches/e2e.sh (fallback generator).

benches/e2e.sh prefers ../shared/bench/gen_docker_logs.py when it exists; this file is
the repo's own stand-in so the benchmark runs from a bare checkout. Python 3 stdlib only.

Layout (what dockerd's json-file driver leaves under /var/lib/docker/containers):
  ROOT/<64-hex-id>/<64-hex-id>-json.log
  ROOT/manifest.json   expected counts: records, physical_lines, partial_lines, file_bytes, ...

Each line is written the way dockerd writes it:
  {"log":"msg\\n","stream":"stdout","time":"2024-07-08T03:42:57.123456789Z"}
  - the message is a Go encoding/json string: UTF-8 kept, ", \\ and control characters
    escaped, and <, >, & escaped as \\u003c \\u003e \\u0026 (plus U+2028/U+2029);
  - time is Go RFC3339Nano: UTC, fraction with trailing zeros trimmed (and no dot at all
    when the fraction is zero);
  - messages longer than 16384 bytes are split into 16384-byte chunks whose "log" has no
    trailing "\\n" (partial lines); only the last chunk ends with "\\n".

Content mix per container (an "app profile" picks the weights): nginx-style access logs,
JSON application logs, Java stack traces (one line per frame, on stderr), 1-8 KiB lines,
and a few 17-128 KiB messages (-> partials). Container sizes are skewed (lognormal), so a
few containers are chatty and most are quiet.

Manifest keys:
  records         logical records after partial-merge (what the shipper should emit)
  physical_lines  lines in the files (each partial chunk counts as one)
  partial_lines   chunks that are not the last one of their record
  file_bytes      total bytes of the log files
  plus message_bytes, stdout, stderr, format, seed, containers, requested_bytes,
  generator and a per-file list.

Same --size/--containers/--seed -> byte-identical tree (each container has its own RNG
seeded from (seed, index), so one container's content never depends on another's size).

  python3 benches/gen_corpus.py --root target/bench-e2e/corpus/containers --size 64M
"""
import argparse
import hashlib
import json
import json.encoder
import os
import random
import sys
import time

PARTIAL = 16384  # dockerd splits log messages at 16 KiB
FLUSH = 4 << 20  # write in big chunks

# kinds: access, json, stack, long (1-8 KiB), huge (17-128 KiB -> partials)
PROFILES = {
    "nginx": (80, 12, 0, 4, 0.10),
    "api-gateway": (45, 45, 3, 5, 0.20),
    "orders-java": (5, 60, 14, 6, 0.30),
    "worker-py": (0, 80, 8, 8, 0.30),
    "envoy": (70, 20, 0, 5, 0.10),
}
KINDS = ("access", "json", "stack", "long", "huge")

METHODS = ["GET"] * 8 + ["POST"] * 3 + ["PUT", "DELETE", "PATCH"]
PATHS = ["/api/v1/orders", "/api/v1/orders/%d", "/api/v2/users/%d/profile", "/healthz", "/metrics",
         "/static/js/app.%d.js", "/search?q=shoes&page=%d", "/api/v1/cart/%d/items", "/login",
         "/api/v1/payments/%d/capture", "/images/products/%d.jpg", "/graphql"]
STATUS = [200] * 30 + [201, 204, 301, 302, 304, 304, 400, 401, 403, 404, 404, 409, 429, 500, 502, 503]
UAS = ["Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36",
       "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
       "kube-probe/1.29", "Prometheus/2.53.0", "curl/8.8.0", "okhttp/4.12.0", "Go-http-client/1.1"]
LEVELS = ["INFO"] * 12 + ["DEBUG"] * 4 + ["WARN"] * 2 + ["ERROR"]
LOGGERS = ["com.acme.orders.OrderService", "com.acme.http.RequestLogger", "app.worker.tasks",
           "c.a.payments.Client", "org.hibernate.SQL", "io.grpc.netty.NettyServerHandler", "app.db.pool"]
MSGS = ["order accepted", "payment authorized", "cache miss for key user:%d",
        "retrying request to upstream (attempt %d)", "slow query detected: %d ms",
        "connection pool exhausted, waiting", "user %d logged in from 10.0.3.7",
        "processed batch of %d records", "scheduled job finished in %dms",
        "JWT validated for subject <user-%d> & scope \"orders:write\"",
        "Ünïcödé customer name: Zoë Ångström #%d", "upstream responded 503, circuit breaker half-open"]
EXC = ["java.lang.IllegalStateException: Order %d is not in state PENDING",
       "java.net.SocketTimeoutException: Read timed out (after %d ms)",
       "org.springframework.dao.DataIntegrityViolationException: constraint [uk_order_ref] id=%d",
       "java.lang.NullPointerException: Cannot invoke \"com.acme.Cart.items()\" because \"cart\" is null (%d)"]
FRAMES = ["com.acme.orders.OrderService.place(OrderService.java:%d)",
          "com.acme.orders.OrderController.create(OrderController.java:%d)",
          "org.springframework.web.servlet.FrameworkServlet.service(FrameworkServlet.java:%d)",
          "jakarta.servlet.http.HttpServlet.service(HttpServlet.java:%d)",
          "org.apache.catalina.core.ApplicationFilterChain.doFilter(ApplicationFilterChain.java:%d)",
          "org.apache.tomcat.util.net.NioEndpoint$SocketProcessor.doRun(NioEndpoint.java:%d)",
          "java.base/java.util.concurrent.ThreadPoolExecutor.runWorker(ThreadPoolExecutor.java:%d)",
          "java.base/java.lang.Thread.run(Thread.java:%d)",
          "com.zaxxer.hikari.pool.HikariPool.getConnection(HikariPool.java:%d)"]
WORDS = ("lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut "
         "labore et dolore magna aliqua select from where order by limit offset join inner left on "
         "group having count sum avg").split()

_encode = json.encoder.encode_basestring  # like json.dumps(s, ensure_ascii=False), in C


def go_json_string(s):
    """A JSON string literal as Go's encoding/json writes it."""
    out = _encode(s)
    if "<" in out or ">" in out or "&" in out or "\u2028" in out or "\u2029" in out:
        out = (out.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
               .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))
    return out


def parse_size(s):
    s = s.strip().upper()
    for suf, m in (("GIB", 1 << 30), ("MIB", 1 << 20), ("KIB", 1 << 10),
                   ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if s.endswith(suf):
            return int(float(s[: -len(suf)]) * m)
    return int(float(s))


class GoTime:
    """Go time.RFC3339Nano for UTC nanosecond timestamps (caches the per-second prefix)."""

    def __init__(self):
        self.sec = None
        self.prefix = ""

    def __call__(self, ns):
        sec, frac = divmod(ns, 1_000_000_000)
        if sec != self.sec:
            self.sec = sec
            self.prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        if frac == 0:
            return self.prefix + "Z"
        return self.prefix + "." + ("%09d" % frac).rstrip("0") + "Z"


def events(rng, profile):
    """Yields lists of (stream, message): one list per event (a stack trace is many lines)."""
    weights = PROFILES[profile][:5]
    choices = rng.choices
    rr = rng.randrange
    while True:
        kind = choices(KINDS, weights)[0]
        n = rr(1, 100000)
        if kind == "access":
            path = rng.choice(PATHS)
            if "%d" in path:
                path = path % (n % 5000)
            st = rng.choice(STATUS)
            msg = '10.%d.%d.%d - - [08/Jul/2024:03:42:%02d +0000] "%s %s HTTP/1.1" %d %d "-" "%s" %.3f %032x' % (
                rr(256), rr(256), rr(1, 255), n % 60, rng.choice(METHODS), path, st, rr(60000),
                rng.choice(UAS), rng.random() * 0.8, rng.getrandbits(128))
            yield [("stderr" if st >= 500 and n & 1 else "stdout", msg)]
        elif kind == "json":
            m = rng.choice(MSGS)
            if "%d" in m:
                m = m % n
            msg = ('{"ts":"2024-07-08T03:42:%02d.%06dZ","level":"%s","logger":"%s","msg":%s,'
                   '"trace_id":"%032x","span_id":"%016x","user_id":%d,"duration_ms":%.2f}') % (
                n % 60, n, rng.choice(LEVELS), rng.choice(LOGGERS), json.dumps(m, ensure_ascii=False),
                rng.getrandbits(128), rng.getrandbits(64), n, rng.random() * 250)
            yield [("stderr" if rng.random() < 0.15 else "stdout", msg)]
        elif kind == "stack":
            lines = ["ERROR 2024-07-08 03:42:%02d.%03d [http-nio-8080-exec-%d] %s - Request processing failed"
                     % (n % 60, n % 1000, n % 200, rng.choice(LOGGERS)),
                     rng.choice(EXC) % n]
            lines += ["\tat " + rng.choice(FRAMES) % rr(20, 2000) for _ in range(rr(8, 40))]
            if rng.random() < 0.4:
                lines.append("Caused by: " + rng.choice(EXC) % n)
                lines += ["\tat " + rng.choice(FRAMES) % rr(20, 2000) for _ in range(rr(3, 12))]
                lines.append("\t... %d more" % rr(10, 60))
            yield [("stderr", l) for l in lines]
        elif kind == "long":
            target = rr(1024, 8192)
            body = " ".join(rng.choices(WORDS, k=target // 6 + 1))[:target]
            if n & 1:
                msg = '{"level":"DEBUG","msg":"request dump","body":"%s","trace_id":"%032x"}' % (
                    body, rng.getrandbits(128))
            else:
                msg = "DEBUG SQL: SELECT " + body
            yield [("stdout", msg)]
        else:  # huge, ASCII only so a byte split is a character split
            target = rr(17 * 1024, 128 * 1024)
            chunk = " ".join(rng.choices(WORDS, k=64)) + " "
            msg = "INFO payload snapshot id=%d data=%s" % (n, (chunk * (target // len(chunk) + 1))[:target])
            if len(msg) % PARTIAL == 0:  # dockerd would emit an empty final chunk; avoid the corner
                msg += "!"
            yield [("stdout", msg)]


def write_container(path, quota, rng, profile, t0_ns):
    gotime = GoTime()
    ts = t0_ns + rng.randrange(5_000_000_000)
    st = dict(records=0, physical_lines=0, partial_lines=0, file_bytes=0, message_bytes=0, stdout=0, stderr=0)
    buf = []
    buf_bytes = 0
    written = 0
    with open(path, "wb") as f:
        for ev in events(rng, profile):
            ts += rng.randrange(1, 4_000_000)
            for stream, msg in ev:
                ts += rng.randrange(1_000, 40_000)
                stamp = gotime(ts)
                st["records"] += 1
                st[stream] += 1
                mb = msg.encode("utf-8")
                st["message_bytes"] += len(mb)
                if len(mb) <= PARTIAL:
                    line = '{"log":%s,"stream":"%s","time":"%s"}\n' % (go_json_string(msg + "\n"), stream, stamp)
                    lb = line.encode("utf-8")
                    buf.append(lb)
                    buf_bytes += len(lb)
                    st["physical_lines"] += 1
                    continue
                pieces = [msg[i:i + PARTIAL] for i in range(0, len(msg), PARTIAL)]
                for i, p in enumerate(pieces):
                    last = i == len(pieces) - 1
                    line = '{"log":%s,"stream":"%s","time":"%s"}\n' % (
                        go_json_string(p + "\n" if last else p), stream, stamp)
                    lb = line.encode("ascii")
                    buf.append(lb)
                    buf_bytes += len(lb)
                    st["physical_lines"] += 1
                    if not last:
                        st["partial_lines"] += 1
            if buf_bytes >= FLUSH or written + buf_bytes >= quota:
                f.write(b"".join(buf))
                written += buf_bytes
                buf, buf_bytes = [], 0
                if written >= quota:
                    break
    st["file_bytes"] = written
    return st


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", required=True, help="output dir (the docker 'containers' dir)")
    ap.add_argument("--size", default="1G", help="total bytes of log files: 1G, 64M, 512K, bytes (approximate)")
    ap.add_argument("--containers", type=int, default=50)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--skew", type=float, default=1.0, help="lognormal sigma of per-container sizes (0 = equal)")
    ap.add_argument("--start-time", default="2024-07-08T03:42:57Z")
    ap.add_argument("--force", action="store_true", help="allow writing into a non-empty root")
    a = ap.parse_args()
    if a.containers < 1:
        sys.exit("--containers must be >= 1")

    total = parse_size(a.size)
    root = os.path.abspath(a.root)
    if os.path.isdir(root) and os.listdir(root) and not a.force:
        sys.exit("root %s is not empty (use --force or remove it)" % root)
    os.makedirs(root, exist_ok=True)
    t0_ns = int(time.mktime(time.strptime(a.start_time, "%Y-%m-%dT%H:%M:%SZ")) - time.timezone) * 1_000_000_000

    rng = random.Random(a.seed)
    profiles = sorted(PROFILES)
    conts = []
    for i in range(a.containers):
        cid = hashlib.sha256(b"shipper-bench/%d/%d" % (a.seed, i)).hexdigest()
        conts.append((i, cid, rng.choice(profiles), rng.lognormvariate(0, a.skew) if a.skew > 0 else 1.0))
    wsum = sum(c[3] for c in conts)

    t_start = time.time()
    agg = dict(records=0, physical_lines=0, partial_lines=0, file_bytes=0, message_bytes=0, stdout=0, stderr=0)
    files = []
    for i, cid, profile, w in conts:
        d = os.path.join(root, cid)
        os.makedirs(d, exist_ok=True)
        path = os.path.join(d, cid + "-json.log")
        st = write_container(path, max(1, int(total * w / wsum)), random.Random("%d/%s" % (a.seed, cid)),
                             profile, t0_ns)
        for k, v in st.items():
            agg[k] += v
        files.append(dict(path=path, container_id=cid, app=profile, **st))
        sys.stderr.write("\r%d/%d containers, %.0f MiB" % (len(files), len(conts), agg["file_bytes"] / 2**20))
    sys.stderr.write("\n")

    man = dict(format="docker", generator="benches/gen_corpus.py", root=root, seed=a.seed, requested_bytes=total,
               containers=len(conts), gen_seconds=round(time.time() - t_start, 1),
               glob=os.path.join(root, "*", "*-json.log"), **agg, files=files)
    tmp = os.path.join(root, "manifest.json.tmp")
    with open(tmp, "w") as f:
        json.dump(man, f, indent=1)
    os.replace(tmp, os.path.join(root, "manifest.json"))  # manifest present == corpus complete
    print(json.dumps({k: man[k] for k in ("format", "root", "containers", "records", "physical_lines",
                                          "partial_lines", "file_bytes", "message_bytes", "gen_seconds")}))


if __name__ == "__main__":
    main()
