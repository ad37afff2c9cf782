#!/usr/bin/env python3
"""Generate the hand-crafted example node log tree under examples/node/.

Deterministic and idempotent: every run deletes examples/node/ and writes
exactly the same bytes again (file contents; mtimes are not controlled).
Python 3 standard library only.

    python3 examples/make_example_tree.py

The tree imitates what a Kubernetes node has under /var/lib/docker and
/var/log/pods, plus the output of `kubectl get pods -A -o json`.
See examples/node/README.md (generated below) for what each file shows.
"""

import gzip
import hashlib
import json
import os
import re
import shutil
import struct
import sys
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "node"

# --------------------------------------------------------------------------
# Fixed identities (never change these: tests and the golden output use them)
# --------------------------------------------------------------------------

NODE = "node-1"
HOST_IP = "10.0.0.11"

# Docker runtime (dockershim / cri-dockerd) containers.
WEB = {
    "ns": "shop",
    "pod": "web-7d9f8b6c5-x2x4q",
    "uid": "14feb587-c878-4efb-a031-c5363a2be3fa",
    "container": "nginx",
    "id": "d4c7787b440853434749119b7d99a5e0cbe8e1baa27ab93ab9165acc06c9cbda",
    "sandbox": "04a3040d9e1d922b6a776c357d4dc0483a9c839512828ce6d853d2b928a72166",
    "image": "nginx:1.27.0",
    "rs": "web-7d9f8b6c5",
    "rs_uid": "472d6bf5-ae7d-40d3-913c-e38e51bd7428",
    "pod_ip": "10.244.1.23",
}
COREDNS = {
    "ns": "kube-system",
    "pod": "coredns-5d78c9869d-abcde",
    "uid": "968d40e6-57cb-41ee-b06d-cef9180eb6e4",
    "container": "coredns",
    "id": "07ab3598424cc5986264b22aad7cbec2386d216a7c99c915842f130fbd2ba2aa",
    "sandbox": "4d83144765b5b1cfd7a6a6af7f56e1aae9ce4c578978bc8f1d64c7f4c1eb7b23",
    "image": "registry.k8s.io/coredns/coredns:v1.10.1",
    "rs": "coredns-5d78c9869d",
    "rs_uid": "3b23ac8b-a9c9-44f2-9ecc-745193c32f8d",
    "pod_ip": "10.244.1.2",
}
# CRI runtime containers (files under pods/).
CHECKOUT = {
    "ns": "payments",
    "pod": "checkout-6b8f9c7d4-p9zqk",
    "uid": "22f9fcf2-ebf8-422a-b7c0-3343ee39343e",
    "container": "checkout",
    "id": "ea1a9866e2d81c2e11c85a7d4e1d4cd08ae9c9c006f66ac9b70ebe057c8882f0",
    "image": "registry.example.com/payments/checkout:1.14.2",
    "rs": "checkout-6b8f9c7d4",
    "rs_uid": "73db6ce9-f249-4fca-9106-89976455cbaa",
    "pod_ip": "10.244.1.31",
}
NODE_EXPORTER = {
    "ns": "monitoring",
    "pod": "node-exporter-abcde",
    "uid": "9ffacfbb-39e7-40b9-8ad0-f712a492a459",
    "container": "node-exporter",
    "id": "fd7f3f7f3f424430212fc035af5288b39aa0074f7a635b4a7cd430b02412d512",
    "image": "quay.io/prometheus/node-exporter:v1.8.1",
    "ds": "node-exporter",
    "ds_uid": "69f9d666-9dc9-4478-b060-ad6733cdb34d",
    "pod_ip": HOST_IP,  # hostNetwork: true
}


def sha(text):
    """Deterministic fake sha256 digest (for image ids)."""
    return hashlib.sha256(text.encode()).hexdigest()


def pod_dir(p):
    return f"{p['ns']}_{p['pod']}_{p['uid']}"


# --------------------------------------------------------------------------
# Encoders
# --------------------------------------------------------------------------

def go_json_string(data):
    """Encode bytes like dockerd's jsonlog (ffjsonWriteJSONBytesAsString).

    ASCII control chars -> \\n \\r \\t or \\u00XX; '"' and '\\' escaped;
    '<' '>' '&' -> \\u003c \\u003e \\u0026; invalid UTF-8 -> \\ufffd;
    U+2028/U+2029 escaped; all other non-ASCII kept as raw UTF-8.
    """
    if isinstance(data, str):
        data = data.encode("utf-8")
    out = bytearray(b'"')
    i = 0
    n = len(data)
    while i < n:
        b = data[i]
        if b < 0x80:
            if b in (0x5C, 0x22):
                out += b"\\" + bytes([b])
            elif b == 0x0A:
                out += b"\\n"
            elif b == 0x0D:
                out += b"\\r"
            elif b == 0x09:
                out += b"\\t"
            elif b < 0x20 or b in (0x3C, 0x3E, 0x26):
                out += b"\\u00%02x" % b
            else:
                out.append(b)
            i += 1
            continue
        # multi-byte UTF-8 sequence: find its length and validate it
        for size in (2, 3, 4):
            chunk = data[i:i + size]
            try:
                ch = chunk.decode("utf-8")
            except UnicodeDecodeError:
                continue
            if len(ch) == 1:
                break
        else:
            out += b"\\ufffd"
            i += 1
            continue
        if ch in ("\u2028", "\u2029"):
            out += b"\\u%04x" % ord(ch)
        else:
            out += chunk
        i += size
    out += b'"'
    return bytes(out)


def docker_time(sec, nanos):
    """Go time.RFC3339Nano in UTC: fractional seconds with trailing zeros trimmed."""
    frac = f"{nanos:09d}".rstrip("0")
    return f"{sec}.{frac}Z" if frac else f"{sec}Z"


def docker_line(stream, msg, sec, nanos, last=True, attrs=None):
    """One json-file line exactly as dockerd writes it (key order log, stream, attrs, time)."""
    if isinstance(msg, str):
        msg = msg.encode("utf-8")
    if last:
        msg += b"\n"
    line = b'{"log":' + go_json_string(msg) + b',"stream":' + go_json_string(stream)
    if attrs is not None:
        line += b',"attrs":' + json.dumps(attrs, separators=(",", ":"), sort_keys=True).encode()
    line += b',"time":"' + docker_time(sec, nanos).encode() + b'"}\n'
    return line


def cri_line(ts, stream, tag, msg):
    """containerd / CRI-O line: '<ts> <stream> <P|F> <msg>\\n' (ts preformatted)."""
    if isinstance(msg, str):
        msg = msg.encode("utf-8")
    return f"{ts} {stream} {tag} ".encode() + msg + b"\n"


def containerd_ts(sec, nanos):
    """containerd: RFC3339 with always 9 fractional digits, UTC 'Z'."""
    return f"{sec}.{nanos:09d}Z"


def go_gzip(data, extra=None):
    """gzip member shaped like Go's compress/gzip writer output.

    Header: mtime 0, XFL 0, OS 255 (unknown), optional FEXTRA (docker stores
    {"lastTime":...} there). Body compressed with zlib raw deflate level 6.
    """
    flags = 0x04 if extra is not None else 0
    hdr = b"\x1f\x8b\x08" + bytes([flags]) + struct.pack("<I", 0) + b"\x00\xff"
    if extra is not None:
        hdr += struct.pack("<H", len(extra)) + extra
    comp = zlib.compressobj(6, zlib.DEFLATED, -15, 8, zlib.Z_DEFAULT_STRATEGY)
    body = comp.compress(data) + comp.flush()
    trailer = struct.pack("<II", zlib.crc32(data) & 0xFFFFFFFF, len(data) & 0xFFFFFFFF)
    return hdr + body + trailer


def filler(tag, n):
    """Exactly n ASCII bytes: tag, then blocks '@<byte offset> ' so splits are visible."""
    s = tag + " "
    while len(s) < n:
        s += f"@{len(s):08d} "
    return s[:n]


# --------------------------------------------------------------------------
# Docker container A: shop/web-7d9f8b6c5-x2x4q/nginx
# --------------------------------------------------------------------------

D = "2024-07-08T"
UA_FF = "Mozilla/5.0 (X11; Linux x86_64; rv:127.0) Gecko/20100101 Firefox/127.0"
UA_IOS = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
          "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1")


def access(ip, ts_local, req, status, size, ref="-", ua="kube-probe/1.29", xff="-"):
    return f'{ip} - - [{ts_local} +0000] "{req}" {status} {size} "{ref}" "{ua}" "{xff}"'


EXACT_16K = filler("single-record len=16384 (one json-file line, not a partial)", 16384)
SPLIT_40K = filler("split-record len=40000 (dockerd partials of 16384+16384+7232)", 40000)
assert len(EXACT_16K) == 16384 and len(SPLIT_40K) == 40000

# (kind, ...) entries; kind "line" = normal docker line, "raw" = bytes verbatim.
WEB_CURRENT = [
    ("line", "stdout", access("10.244.1.1", "08/Jul/2024:03:42:57", "GET /healthz HTTP/1.1", 200, 2),
     D + "03:42:57", 123456789),
    ("line", "stderr",
     '2024/07/08 03:42:57 [warn] 29#29: *5 an upstream response is buffered to a temporary file '
     '/var/cache/nginx/proxy_temp/1/00/0000000001 while reading upstream, client: 10.244.1.17, '
     'server: shop.example.com, request: "GET /catalog.json HTTP/1.1", '
     'upstream: "http://10.96.12.40:8080/catalog.json", host: "shop.example.com"',
     D + "03:42:57", 130021000),
    ("line", "stdout", access("10.244.1.17", "08/Jul/2024:03:43:01",
                              "GET /products?category=shoes&sort=price_asc&page=2 HTTP/1.1", 200, 5120,
                              "https://shop.example.com/", UA_FF, "203.0.113.7"),
     D + "03:43:01", 250000100),
    ("line", "stdout", access("10.244.1.17", "08/Jul/2024:03:43:01", "POST /cart HTTP/1.1", 201, 87,
                              "https://shop.example.com/products?category=shoes", UA_FF, "203.0.113.7"),
     D + "03:43:01", 731000000),
    ("line", "stderr",
     '2024/07/08 03:43:02 [error] 29#29: *7 open() "/usr/share/nginx/html/favicon.ico" failed '
     '(2: No such file or directory), client: 10.244.1.17, server: shop.example.com, '
     'request: "GET /favicon.ico HTTP/1.1", host: "shop.example.com", '
     'referrer: "https://shop.example.com/products?category=shoes&sort=price_asc&page=2"',
     D + "03:43:02", 2398117),
    ("line", "stdout", access("10.244.1.18", "08/Jul/2024:03:43:02",
                              "GET /search?q=<b>boots</b>&lang=en HTTP/1.1", 400, 157,
                              "-", UA_IOS, "198.51.100.23"),
     D + "03:43:02", 418770000),
    # unicode, kept as raw UTF-8 by dockerd (2-, 3- and 4-byte sequences)
    ("line", "stdout", "greeting rendered for Zoë Ångström ✓ locale=sv-SE 🚀",
     D + "03:43:03", 917000),
    # escaped quote, tab, backslashes (the '\n' in 'C:\srv\www\new' is a backslash + 'n')
    ("line", "stderr", 'lua: upstream said "bad gateway"\tretry=1\tpath=C:\\srv\\www\\new',
     D + "03:43:03", 500000001),
    # empty message -> "log":"\n"
    ("line", "stdout", "", D + "03:43:04", 1),
    # docker log-opts labels/tag -> extra "attrs" key between stream and time
    ("attrs", "stdout", access("10.244.1.1", "08/Jul/2024:03:43:04", "GET /readyz HTTP/1.1", 200, 2),
     D + "03:43:04", 311000000, {"tag": "x"}),
    # exactly 16384 bytes of message + "\n" in ONE line
    ("line", "stdout", EXACT_16K, D + "03:43:05", 100200300),
    # 40000-byte message as three partial lines (own time each; only last ends in \n)
    ("partial", "stdout", SPLIT_40K[:16384], D + "03:43:05", 201000001),
    ("partial", "stdout", SPLIT_40K[16384:32768], D + "03:43:05", 201000479),
    ("line", "stdout", SPLIT_40K[32768:], D + "03:43:05", 201000861),
    ("line", "stdout", access("10.244.1.17", "08/Jul/2024:03:43:06", "GET /cart HTTP/1.1", 200, 1833,
                              "https://shop.example.com/products?category=shoes", UA_FF, "203.0.113.7"),
     D + "03:43:06", 10000000),
    # torn write (dockerd killed mid-line), then normal lines continue
    ("raw", b'{"log":"half a line wri\n'),
    ("line", "stdout", access("10.244.1.1", "08/Jul/2024:03:43:09", "GET /healthz HTTP/1.1", 200, 2),
     D + "03:43:09", 887213000),
    # one fractional digit
    ("line", "stdout", access("10.244.1.18", "08/Jul/2024:03:43:10", "GET /products/sku-1042 HTTP/1.1",
                              200, 2291, "https://shop.example.com/search?q=boots", UA_IOS, "198.51.100.23"),
     D + "03:43:10", 500000000),
    # no fractional part at all
    ("line", "stderr", "2024/07/08 03:43:11 [notice] 1#1: signal 1 (SIGHUP) received from 52, reconfiguring",
     D + "03:43:11", 0),
    ("line", "stdout", access("10.244.1.1", "08/Jul/2024:03:43:12", "GET /healthz HTTP/1.1", 200, 2),
     D + "03:43:12", 70707000),
    # just after midnight UTC -> next day's index
    ("line", "stdout", access("10.244.1.1", "09/Jul/2024:00:00:01", "GET /healthz HTTP/1.1", 200, 2),
     "2024-07-09T00:00:01", 4211000),
]

WEB_ROTATED_1 = [  # <ID>-json.log.1 (older, must be ignored by a fresh dry-run)
    ("stdout", access("10.244.1.17", "08/Jul/2024:03:38:14", "GET / HTTP/1.1", 200, 3902,
                      "-", UA_FF, "203.0.113.7"), D + "03:38:14", 550120000),
    ("stdout", access("10.244.1.1", "08/Jul/2024:03:40:57", "GET /healthz HTTP/1.1", 200, 2),
     D + "03:40:57", 123000000),
    ("stderr", "2024/07/08 03:41:30 [notice] 1#1: signal 10 (SIGUSR1) received from 1, reopening logs",
     D + "03:41:30", 700000000),
]
WEB_ROTATED_2 = [  # <ID>-json.log.2.gz (oldest: container start-up)
    ("stdout", "/docker-entrypoint.sh: Configuration complete; ready for start up",
     D + "03:20:14", 612345678),
    ("stderr", "2024/07/08 03:20:14 [notice] 1#1: nginx/1.27.0", D + "03:20:14", 640000000),
    ("stderr", "2024/07/08 03:20:14 [notice] 1#1: start worker processes", D + "03:20:14", 640500000),
]

# --------------------------------------------------------------------------
# Docker container B: kube-system/coredns-5d78c9869d-abcde/coredns
# --------------------------------------------------------------------------

COREDNS_JSON_BODY = json.dumps(
    {"level": "info", "ts": "2024-07-08T03:44:02.118Z", "logger": "health", "msg": "lameduck",
     "duration_ms": 5000, "tags": ["dns", "health"], "upstream": "10.0.0.2:53"},
    separators=(",", ":"))

COREDNS_LINES = [
    ("stdout", ".:53", D + "03:21:02", 311947001),
    ("stdout", "[INFO] plugin/reload: Running configuration SHA512 = "
               "591cf328cccc12bc490481273e738df59329c62c0b729d94e8b61db9961c2fa5"
               "b046dd37f1cf888b953814040d180f52594972691cd6ff41be96639138a43908",
     D + "03:21:02", 312005200),
    ("stdout", "CoreDNS-1.10.1", D + "03:21:02", 312010000),
    ("stdout", "linux/amd64, go1.20, 055b2c3", D + "03:21:02", 312014000),
    ("stderr", "[WARNING] plugin/kubernetes: starting server with unsynced Kubernetes API",
     D + "03:21:02", 900000000),
    ("stdout", '[INFO] 10.244.1.31:41234 - 5921 "A IN postgres.payments.svc.cluster.local. udp 57 false 512" '
               'NOERROR qr,aa,rd 126 0.000183s', D + "03:43:00", 17210000),
    ("stdout", COREDNS_JSON_BODY, D + "03:44:02", 118000000),
    ("stderr", "[ERROR] plugin/errors: 2 example.invalid. AAAA: read udp 10.244.1.2:53421->10.0.0.2:53: "
               "i/o timeout", D + "03:44:09", 664000000),
]

# --------------------------------------------------------------------------
# CRI (containerd) container: payments/checkout-6b8f9c7d4-p9zqk/checkout
# --------------------------------------------------------------------------

CART = "cart snapshot: " + json.dumps(
    {"cart_id": "c_5f1d0a", "customer": "cus_20931",
     "items": [{"sku": f"SKU-{1000 + i * 37:05d}", "qty": 1 + i % 3, "price_cents": 499 + i * 250,
                "title": f"Trail running sock, pair {i + 1}"} for i in range(11)],
     "currency": "EUR"},
    separators=(",", ":"))
CART_CHUNKS = [CART[0:300], CART[300:600], CART[600:900], CART[900:]]

CHECKOUT_JSON_BODY = json.dumps(
    {"level": "info", "ts": "2024-07-08T03:45:01.002Z", "caller": "payment/capture.go:88",
     "msg": "charge captured", "order_id": "ord_8123", "amount_cents": 4599, "currency": "EUR",
     "card": {"brand": "visa", "last4": "4242"}},
    separators=(",", ":"))


def ctd(sec, nanos):
    return containerd_ts(D + sec, nanos)


CHECKOUT_CURRENT = [
    cri_line(ctd("03:42:58", 812345), "stdout", "F",
             'time="2024-07-08T03:42:58Z" level=info msg="processing order" order_id=ord_8121 items=2'),
    cri_line(ctd("03:42:58", 412000000), "stdout", "F",
             'time="2024-07-08T03:42:58Z" level=info msg="request completed" method=POST '
             'path=/v1/checkout status=200 duration_ms=12.4 remote=10.244.1.23:51874'),
    cri_line(ctd("03:42:59", 100000000), "stderr", "F",
             'time="2024-07-08T03:42:59Z" level=warning msg="slow query" '
             'query="SELECT id, status FROM orders WHERE customer_id = $1 AND created_at > $2" duration_ms=812'),
    # one record in 3 P chunks + 1 F chunk, each chunk with its own timestamp
    cri_line(ctd("03:43:00", 500000001), "stdout", "P", CART_CHUNKS[0]),
    cri_line(ctd("03:43:00", 500000217), "stdout", "P", CART_CHUNKS[1]),
    cri_line(ctd("03:43:00", 500000390), "stdout", "P", CART_CHUNKS[2]),
    cri_line(ctd("03:43:00", 500000512), "stdout", "F", CART_CHUNKS[3]),
    # empty message: '... stdout F ' then newline
    cri_line(ctd("03:43:01", 0), "stdout", "F", ""),
    # invalid UTF-8 bytes in the middle
    cri_line(ctd("03:43:02", 250000000), "stdout", "F",
             b"gateway returned raw bytes: \xff\xfe<-- end of reply (len=2)"),
    # garbage without a timestamp
    b"garbage line without timestamp\n",
    # JSON structured body
    cri_line(ctd("03:45:01", 2000000), "stdout", "F", CHECKOUT_JSON_BODY),
    cri_line(ctd("03:45:01", 9871000), "stdout", "F",
             'time="2024-07-08T03:45:01Z" level=info msg="request completed" method=POST '
             'path=/v1/checkout status=201 duration_ms=48.9 remote=10.244.1.23:51902'),
    cri_line(ctd("03:45:03", 330000000), "stderr", "F",
             'time="2024-07-08T03:45:03Z" level=error msg="webhook delivery failed" '
             'url="https://hooks.example.com/orders?id=ord_8123&kind=paid" attempt=1 err="context deadline exceeded"'),
    cri_line(ctd("03:45:08", 400000000), "stdout", "F",
             'time="2024-07-08T03:45:08Z" level=info msg="webhook delivered" order_id=ord_8123 attempt=2'),
    # a handler panic that net/http recovered: one event of many lines (multiline)
    *[cri_line(ctd("03:46:10", 250000000 + i * 1000), "stderr", "F", line) for i, line in enumerate([
        "2024/07/08 03:46:10 http: panic serving 10.244.1.23:51990: runtime error: "
        "invalid memory address or nil pointer dereference",
        "goroutine 4127 [running]:",
        "net/http.(*conn).serve.func1()",
        "\t/usr/local/go/src/net/http/server.go:1903 +0xbe",
        "panic({0x9c1a40?, 0x1061b50?})",
        "\t/usr/local/go/src/runtime/panic.go:770 +0x132",
        "main.(*Handler).refund(0xc0001a2000, {0xb30d48, 0xc000322000}, 0xc00031e5a0)",
        "\t/src/cmd/checkout/refund.go:57 +0x1c4",
    ])],
    cri_line(ctd("03:50:00", 0), "stdout", "F",
             'time="2024-07-08T03:50:00Z" level=info msg="health" open_orders=3 db_pool_in_use=2/20'),
    # just after midnight UTC -> next day's index
    cri_line(containerd_ts("2024-07-09T00:00:02", 517384920), "stdout", "F",
             'time="2024-07-09T00:00:02Z" level=info msg="daily settlement batch scheduled" date=2024-07-09'),
]

CHECKOUT_ROTATED = [  # 0.log.20240708-034200 (rotated at 03:42:00)
    cri_line(ctd("03:38:41", 10203040), "stdout", "F",
             'time="2024-07-08T03:38:41Z" level=info msg="processing order" order_id=ord_8119 items=1'),
    cri_line(ctd("03:40:12", 700000000), "stdout", "F",
             'time="2024-07-08T03:40:12Z" level=info msg="processing order" order_id=ord_8120 items=4'),
    cri_line(ctd("03:41:59", 999999999), "stderr", "F",
             'time="2024-07-08T03:41:59Z" level=warning msg="retrying payment provider" attempt=1'),
]
CHECKOUT_ROTATED_GZ = [  # 0.log.20240708-033000.gz (oldest: start-up)
    cri_line(ctd("03:22:07", 5000000), "stdout", "F",
             'time="2024-07-08T03:22:07Z" level=info msg="starting checkout service" version=1.14.2'),
    cri_line(ctd("03:22:07", 9000000), "stdout", "F",
             'time="2024-07-08T03:22:07Z" level=info msg="listening" addr=:8080'),
]
CHECKOUT_TMP = [  # 1.log.tmp (a temp file, never shipped)
    cri_line(ctd("03:42:00", 1000), "stdout", "F",
             'time="2024-07-08T03:42:00Z" level=info msg="temporary file content, never shipped"'),
]

# --------------------------------------------------------------------------
# CRI-O style container: monitoring/node-exporter-abcde/node-exporter
# --------------------------------------------------------------------------

NODE_EXPORTER_LINES = [
    cri_line("2024-07-08T11:42:57.123456789+08:00", "stderr", "F",
             'ts=2024-07-08T03:42:57.123Z caller=node_exporter.go:193 level=info msg="Starting node_exporter" '
             'version="(version=1.8.1, branch=HEAD, revision=400c3979931613db930ea035f39ce7b377cdbb5b)"'),
    cri_line("2024-07-08T11:42:57.124001200+08:00", "stderr", "F",
             'ts=2024-07-08T03:42:57.124Z caller=node_exporter.go:194 level=info msg="Build context" '
             'build_context="(go=go1.22.3, platform=linux/amd64, user=root@buildhost, date=20240520-14:56:24, tags=unknown)"'),
    cri_line("2024-07-08T11:42:57.200000000+08:00", "stderr", "F",
             'ts=2024-07-08T03:42:57.200Z caller=filesystem_common.go:111 level=info collector=filesystem '
             'msg="Parsed flag --collector.filesystem.mount-points-exclude" '
             'flag=^/(dev|proc|run/credentials/.+|sys|var/lib/docker/.+|var/lib/containers/storage/.+)($|/)'),
    cri_line("2024-07-07T22:43:05.000000000-05:00", "stderr", "F",
             'ts=2024-07-08T03:43:05.000Z caller=tls_config.go:313 level=info msg="Listening on" address=[::]:9100'),
    cri_line("2024-07-08T11:43:05.001523000+08:00", "stderr", "F",
             'ts=2024-07-08T03:43:05.001Z caller=tls_config.go:316 level=info msg="TLS is disabled." '
             'http2=false address=[::]:9100'),
]

# --------------------------------------------------------------------------
# pods.json  (kubectl get pods -A -o json)
# --------------------------------------------------------------------------


def owner(kind, name, uid):
    return [{"apiVersion": "apps/v1", "blockOwnerDeletion": True, "controller": True,
             "kind": kind, "name": name, "uid": uid}]


def running_status(p, image, image_id, container_id, started, ready_since, extra_containers=None):
    return {
        "conditions": [
            {"lastProbeTime": None, "lastTransitionTime": started, "status": "True",
             "type": "PodReadyToStartContainers"},
            {"lastProbeTime": None, "lastTransitionTime": started, "status": "True", "type": "Initialized"},
            {"lastProbeTime": None, "lastTransitionTime": ready_since, "status": "True", "type": "Ready"},
            {"lastProbeTime": None, "lastTransitionTime": ready_since, "status": "True",
             "type": "ContainersReady"},
            {"lastProbeTime": None, "lastTransitionTime": started, "status": "True", "type": "PodScheduled"},
        ],
        "containerStatuses": [{
            "containerID": container_id,
            "image": image,
            "imageID": image_id,
            "lastState": {},
            "name": p["container"],
            "ready": True,
            "restartCount": 0,
            "started": True,
            "state": {"running": {"startedAt": ready_since}},
        }],
        "hostIP": HOST_IP,
        "hostIPs": [{"ip": HOST_IP}],
        "phase": "Running",
        "podIP": p["pod_ip"],
        "podIPs": [{"ip": p["pod_ip"]}],
        "qosClass": "Burstable",
        "startTime": started,
    }


def common_spec(containers, sa="default", extra=None):
    spec = {
        "containers": containers,
        "dnsPolicy": "ClusterFirst",
        "enableServiceLinks": True,
        "nodeName": NODE,
        "preemptionPolicy": "PreemptLowerPriority",
        "priority": 0,
        "restartPolicy": "Always",
        "schedulerName": "default-scheduler",
        "securityContext": {},
        "serviceAccount": sa,
        "serviceAccountName": sa,
        "terminationGracePeriodSeconds": 30,
        "tolerations": [
            {"effect": "NoExecute", "key": "node.kubernetes.io/not-ready", "operator": "Exists",
             "tolerationSeconds": 300},
            {"effect": "NoExecute", "key": "node.kubernetes.io/unreachable", "operator": "Exists",
             "tolerationSeconds": 300},
        ],
        "volumes": [{"name": "kube-api-access-x7k2p", "projected": {"defaultMode": 420, "sources": [
            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
            {"configMap": {"items": [{"key": "ca.crt", "path": "ca.crt"}], "name": "kube-root-ca.crt"}},
        ]}}],
    }
    if extra:
        spec.update(extra)
    return spec


def container_spec(p, ports, requests, limits=None, args=None):
    c = {
        "image": p["image"],
        "imagePullPolicy": "IfNotPresent",
        "name": p["container"],
        "ports": ports,
        "resources": {"requests": requests, **({"limits": limits} if limits else {})},
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
        "volumeMounts": [{"mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
                          "name": "kube-api-access-x7k2p", "readOnly": True}],
    }
    if args:
        c["args"] = args
    return c


def pods_json():
    web = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "annotations": {
                "kubectl.kubernetes.io/restartedAt": "2024-07-08T03:19:58Z",
                "prometheus.io/port": "9113",
                "prometheus.io/scrape": "true",
            },
            "creationTimestamp": "2024-07-08T03:20:03Z",
            "generateName": "web-7d9f8b6c5-",
            "labels": {
                "app": "web",
                "app.kubernetes.io/name": "web",
                "app.kubernetes.io/part-of": "shop",
                "pod-template-hash": "7d9f8b6c5",
            },
            "name": WEB["pod"],
            "namespace": WEB["ns"],
            "ownerReferences": owner("ReplicaSet", WEB["rs"], WEB["rs_uid"]),
            "resourceVersion": "48211",
            "uid": WEB["uid"],
        },
        "spec": common_spec([container_spec(WEB, [{"containerPort": 80, "name": "http", "protocol": "TCP"}],
                                            {"cpu": "100m", "memory": "64Mi"}, {"memory": "256Mi"})]),
        "status": running_status(WEB, "nginx:1.27.0",
                                 "docker-pullable://nginx@sha256:" + sha("nginx:1.27.0"),
                                 "docker://" + WEB["id"], "2024-07-08T03:20:03Z", "2024-07-08T03:20:15Z"),
    }
    coredns = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "creationTimestamp": "2024-07-08T03:20:55Z",
            "generateName": "coredns-5d78c9869d-",
            "labels": {"k8s-app": "kube-dns", "pod-template-hash": "5d78c9869d"},
            "name": COREDNS["pod"],
            "namespace": COREDNS["ns"],
            "ownerReferences": owner("ReplicaSet", COREDNS["rs"], COREDNS["rs_uid"]),
            "resourceVersion": "47935",
            "uid": COREDNS["uid"],
        },
        "spec": common_spec(
            [container_spec(COREDNS, [{"containerPort": 53, "name": "dns", "protocol": "UDP"},
                                      {"containerPort": 53, "name": "dns-tcp", "protocol": "TCP"},
                                      {"containerPort": 9153, "name": "metrics", "protocol": "TCP"}],
                            {"cpu": "100m", "memory": "70Mi"}, {"memory": "170Mi"},
                            args=["-conf", "/etc/coredns/Corefile"])],
            sa="coredns",
            extra={"dnsPolicy": "Default", "priority": 2000000000,
                   "priorityClassName": "system-cluster-critical"}),
        "status": running_status(COREDNS, "registry.k8s.io/coredns/coredns:v1.10.1",
                                 "docker-pullable://registry.k8s.io/coredns/coredns@sha256:"
                                 + sha("coredns:v1.10.1"),
                                 "docker://" + COREDNS["id"], "2024-07-08T03:20:55Z", "2024-07-08T03:21:03Z"),
    }
    checkout = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "annotations": {"co.elastic.logs/json.keys_under_root": "true"},
            "creationTimestamp": "2024-07-08T03:22:01Z",
            "generateName": "checkout-6b8f9c7d4-",
            "labels": {"app.kubernetes.io/name": "checkout", "app.kubernetes.io/version": "1.14.2",
                       "pod-template-hash": "6b8f9c7d4", "team": "payments"},
            "name": CHECKOUT["pod"],
            "namespace": CHECKOUT["ns"],
            "ownerReferences": owner("ReplicaSet", CHECKOUT["rs"], CHECKOUT["rs_uid"]),
            "resourceVersion": "48377",
            "uid": CHECKOUT["uid"],
        },
        "spec": common_spec([container_spec(CHECKOUT, [{"containerPort": 8080, "name": "http",
                                                        "protocol": "TCP"}],
                                            {"cpu": "250m", "memory": "128Mi"}, {"memory": "512Mi"})],
                            sa="checkout"),
        "status": running_status(CHECKOUT, CHECKOUT["image"],
                                 "registry.example.com/payments/checkout@sha256:" + sha("checkout:1.14.2"),
                                 "containerd://" + CHECKOUT["id"], "2024-07-08T03:22:01Z",
                                 "2024-07-08T03:22:09Z"),
    }
    node_exporter = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "annotations": {"cluster-autoscaler.kubernetes.io/safe-to-evict": "true"},
            "creationTimestamp": "2024-07-08T03:42:50Z",
            "generateName": "node-exporter-",
            "labels": {"app.kubernetes.io/component": "exporter", "app.kubernetes.io/name": "node-exporter",
                       "controller-revision-hash": "6c4f8d7b9", "pod-template-generation": "3"},
            "name": NODE_EXPORTER["pod"],
            "namespace": NODE_EXPORTER["ns"],
            "ownerReferences": owner("DaemonSet", NODE_EXPORTER["ds"], NODE_EXPORTER["ds_uid"]),
            "resourceVersion": "48502",
            "uid": NODE_EXPORTER["uid"],
        },
        "spec": common_spec([container_spec(NODE_EXPORTER, [{"containerPort": 9100, "hostPort": 9100,
                                                             "name": "metrics", "protocol": "TCP"}],
                                            {"cpu": "50m", "memory": "32Mi"}, {"memory": "64Mi"},
                                            args=["--path.rootfs=/host/root"])],
                            sa="node-exporter",
                            extra={"hostNetwork": True, "hostPID": True, "dnsPolicy": "ClusterFirstWithHostNet"}),
        "status": running_status(NODE_EXPORTER, NODE_EXPORTER["image"],
                                 "quay.io/prometheus/node-exporter@sha256:" + sha("node-exporter:v1.8.1"),
                                 "containerd://" + NODE_EXPORTER["id"], "2024-07-08T03:42:50Z",
                                 "2024-07-08T03:42:58Z"),
    }
    doc = {"apiVersion": "v1", "items": [coredns, node_exporter, checkout, web], "kind": "List",
           "metadata": {"resourceVersion": ""}}
    # kubectl get -A: items ordered by namespace, then name; 4-space indent,
    # keys sorted (unstructured maps), trailing newline
    return (json.dumps(doc, indent=4, sort_keys=True, ensure_ascii=False) + "\n").encode()


# --------------------------------------------------------------------------
# dockerd config.v2.json
# --------------------------------------------------------------------------

def config_v2(p, created, started, args):
    name = f"/k8s_{p['container']}_{p['pod']}_{p['ns']}_{p['uid']}_0"
    log_path = f"/var/lib/docker/containers/{p['id']}/{p['id']}-json.log"
    labels = {
        "annotation.io.kubernetes.container.hash": "4f5a9c1e",
        "annotation.io.kubernetes.container.restartCount": "0",
        "annotation.io.kubernetes.container.terminationMessagePath": "/dev/termination-log",
        "annotation.io.kubernetes.container.terminationMessagePolicy": "File",
        "annotation.io.kubernetes.pod.terminationGracePeriod": "30",
        "io.kubernetes.container.logpath": f"/var/log/pods/{pod_dir(p)}/{p['container']}/0.log",
        "io.kubernetes.container.name": p["container"],
        "io.kubernetes.docker.type": "container",
        "io.kubernetes.pod.name": p["pod"],
        "io.kubernetes.pod.namespace": p["ns"],
        "io.kubernetes.pod.uid": p["uid"],
        "io.kubernetes.sandbox.id": p["sandbox"],
    }
    cfg = {
        "StreamConfig": {},
        "State": {"Running": True, "Paused": False, "Restarting": False, "OOMKilled": False,
                  "RemovalInProgress": False, "Dead": False, "Pid": 2417, "ExitCode": 0, "Error": "",
                  "StartedAt": started, "FinishedAt": "0001-01-01T00:00:00Z", "Health": None},
        "ID": p["id"],
        "Created": created,
        "Managed": False,
        "Path": args[0],
        "Args": args[1:],
        "Config": {
            "Hostname": p["pod"], "Domainname": "", "User": "0", "AttachStdin": False,
            "AttachStdout": False, "AttachStderr": False, "Tty": False, "OpenStdin": False,
            "StdinOnce": False,
            "Env": ["KUBERNETES_SERVICE_HOST=10.96.0.1", "KUBERNETES_SERVICE_PORT=443",
                    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": args[1:], "Image": "sha256:" + sha(p["image"]), "Volumes": None,
            "WorkingDir": "", "Entrypoint": args[:1], "OnBuild": None, "Labels": labels,
            "StopSignal": "SIGQUIT",
        },
        "Image": "sha256:" + sha(p["image"]),
        "ImageManifest": None,
        "NetworkSettings": {"Bridge": "", "SandboxID": "", "SandboxKey": "", "HairpinMode": False,
                            "Networks": None, "Service": None, "Ports": None, "HasSwarmEndpoint": False},
        "LogPath": log_path,
        "Name": name,
        "Driver": "overlay2",
        "OS": "linux",
        "RestartCount": 0,
        "HasBeenStartedBefore": True,
        "HasBeenManuallyStopped": False,
        "MountPoints": {},
        "SecretReferences": None,
        "ConfigReferences": None,
        "MountLabel": "",
        "ProcessLabel": "",
        "AppArmorProfile": "docker-default",
        "SeccompProfile": "",
        "NoNewPrivileges": False,
        "HostnamePath": f"/var/lib/docker/containers/{p['sandbox']}/hostname",
        "HostsPath": f"/var/lib/kubelet/pods/{p['uid']}/etc-hosts",
        "ShmPath": f"/var/lib/docker/containers/{p['sandbox']}/mounts/shm",
        "ResolvConfPath": f"/var/lib/docker/containers/{p['sandbox']}/resolv.conf",
        "LocalLogCacheMeta": {"HaveNotifyEnabled": False},
    }
    # dockerd writes compact Go json.Marshal output with no trailing newline
    return json.dumps(cfg, separators=(",", ":"), ensure_ascii=False).encode()


# --------------------------------------------------------------------------
# README for the tree
# --------------------------------------------------------------------------

# --------------------------------------------------------------------------
# Node logs: host files under host/var/log and a systemd journal
# --------------------------------------------------------------------------

KLOG_HEADER = (
    "Log file created at: {date}\n"
    "Running on machine: node-1\n"
    "Binary: Built with gc go1.22.4 for linux/amd64\n"
    "Log line format: [IWEF]mmdd hh:mm:ss.uuuuuu threadid file:line] msg\n"
)

HOST_FILES = {
    # kubelet's klog file (--log-file, as on kops and GKE's COS): klog's header carries
    # the one year (the stamps after it have none); a goroutine line without a stamp.
    # The live file and its rotation (a fresh dry-run reads the live file only).
    "host/var/log/kubelet.log.1": KLOG_HEADER.format(date="2024/07/08 03:40:00") + (
        'I0708 03:40:01.000100    1234 server.go:417] "Kubelet version" kubeletVersion="v1.30.2"\n'
        'W0708 03:40:02.000000    1234 feature_gate.go:246] Setting GA feature gate KubeletInUserNamespace=true.\n'
    ),
    "host/var/log/kubelet.log": KLOG_HEADER.format(date="2024/07/08 03:42:50") + (
        'I0708 03:42:57.123456    1234 kubelet.go:2345] "SyncLoop ADD" source="api" pods=["shop/web-7d9f8b6c5-x2x4q"]\n'
        'E0708 03:42:58.000321    1234 pod_workers.go:1298] "Error syncing pod, skipping" err="CrashLoopBackOff" pod="shop/web-7d9f8b6c5-x2x4q"\n'
        'goroutine 1 [running]:\n'
        'I0708 03:43:00.500000    1234 kubelet_getters.go:187] "Pod status updated" pod="shop/web-7d9f8b6c5-x2x4q"\n'
    ),
    # containerd's logrus lines.
    "host/var/log/containerd.log": (
        'time="2024-07-08T03:42:56.987654321Z" level=info msg="RunPodSandbox for &PodSandboxMetadata{Name:web-7d9f8b6c5-x2x4q,Namespace:shop,Attempt:0,}"\n'
        'time="2024-07-08T03:42:57.200000000Z" level=warning msg="cleanup warnings"\n'
    ),
    # kube-proxy's klog file.
    "host/var/log/kube-proxy.log": KLOG_HEADER.format(date="2024/07/08 03:41:00") + (
        'I0708 03:41:00.000001     812 server.go:865] "Version info" version="v1.30.2"\n'
        'I0708 03:41:05.100000     812 proxier.go:1500] "Syncing iptables rules"\n'
    ),
}

MACHINE_ID = "5f2c0b1e9d8a4c7b8e6f1a2b3c4d5e6f"
BOOT_ID = "0123456789abcdef0123456789abcdef"
JOURNAL = f"host/var/log/journal/{MACHINE_ID}/system.journal"

# (seconds after 2024-07-08T03:42:00Z, fields): kubelet, containerd and the kernel are
# shipped by default; sshd is not one of node.journal_units.
JOURNAL_ENTRIES = [
    (1, {"_SYSTEMD_UNIT": "kubelet.service", "SYSLOG_IDENTIFIER": "kubelet", "PRIORITY": "6",
         "_PID": "1234", "_COMM": "kubelet", "_TRANSPORT": "stdout",
         "MESSAGE": 'I0708 03:42:01.000000 1234 kubelet.go:1500] "Started kubelet"'}),
    (2, {"_TRANSPORT": "kernel", "SYSLOG_IDENTIFIER": "kernel", "PRIORITY": "3",
         "SYSLOG_FACILITY": "0",
         "MESSAGE": "Memory cgroup out of memory: Killed process 4242 (java) total-vm:2097152kB"}),
    (3, {"_SYSTEMD_UNIT": "sshd.service", "SYSLOG_IDENTIFIER": "sshd", "PRIORITY": "6",
         "_PID": "700", "_TRANSPORT": "syslog", "SYSLOG_FACILITY": "4",
         "MESSAGE": "Accepted publickey for admin from 10.0.0.9 port 52022"}),
    (4, {"_SYSTEMD_UNIT": "containerd.service", "SYSLOG_IDENTIFIER": "containerd", "PRIORITY": "4",
         "_PID": "900", "_COMM": "containerd", "_TRANSPORT": "stdout",
         "MESSAGE": 'time="2024-07-08T03:42:04Z" level=warning msg="cleanup warnings"'}),
    (5, {"_SYSTEMD_UNIT": "kubelet.service", "SYSLOG_IDENTIFIER": "kubelet", "PRIORITY": "3",
         "_PID": "1234", "_COMM": "kubelet", "_TRANSPORT": "stdout",
         "MESSAGE": 'E0708 03:42:05.000000 1234 kubelet.go:2800] "Container runtime network not ready"'}),
]


def journal_export():
    """The entries in journald's export format (what systemd-journal-remote reads)."""
    base = 1720410120 * 1_000_000  # 2024-07-08T03:42:00Z in microseconds
    out = b""
    for i, (sec, fields) in enumerate(JOURNAL_ENTRIES):
        rec = {"__REALTIME_TIMESTAMP": str(base + sec * 1_000_000),
               "__MONOTONIC_TIMESTAMP": str(5_000_000 + sec * 1_000_000),
               "_BOOT_ID": BOOT_ID, "_MACHINE_ID": MACHINE_ID, "_HOSTNAME": NODE}
        rec.update(fields)
        for k, v in rec.items():
            out += f"{k}={v}\n".encode()
        out += b"\n"
    return out


def journal_tool():
    for p in ("systemd-journal-remote", "/lib/systemd/systemd-journal-remote",
              "/usr/lib/systemd/systemd-journal-remote"):
        found = shutil.which(p)
        if found:
            return found
    return None


def readme():
    a, b = WEB["id"], COREDNS["id"]
    return f"""# Example node log tree

Hand-crafted, deterministic imitation of one Kubernetes node (`{NODE}`), used by
the README dry-run and by the golden-output tests. Generated by
`examples/make_example_tree.py`; do not edit by hand. Regenerate with

    python3 examples/make_example_tree.py

(the script deletes and recreates `examples/node/` and self-checks the result).

## Files and the case each one demonstrates

Docker runtime (json-file driver), `docker/containers/<ID>/`:

- `{a[:12]}…/<ID>-json.log` – shop/web-7d9f8b6c5-x2x4q/nginx, lines as dockerd writes them:
  - access/error lines on stdout and stderr; `<` `>` `&` escaped as `\\u003c` `\\u003e` `\\u0026`
  - raw UTF-8 (`Zoë Ångström ✓ … 🚀`); escaped `\\"`, `\\t`, `\\\\` (incl. a literal backslash-n)
  - empty message (`"log":"\\n"`)
  - an `"attrs":{{"tag":"x"}}` key between `stream` and `time`
  - one record of exactly 16384 bytes + `\\n` in a single line (not a partial)
    (a boundary case kept whole on purpose: dockerd's 16 KiB copier buffer would really emit
    a 16384-byte partial followed by an empty `\\n` line)
  - one 40000-byte record as partial lines 16384 + 16384 + 7232 (only the last ends in `\\n`)
  - a torn line `{{"log":"half a line wri` followed by normal lines
  - times with 9, 6, 1 and 0 fractional digits (trailing zeros trimmed)
  - last line at 2024-07-09T00:00:01Z (next day's index)
- `{a[:12]}…/<ID>-json.log.1` – plain rotated file (older lines): ignored by a fresh dry-run
- `{a[:12]}…/<ID>-json.log.2.gz` – gzip rotated file (docker stores `{{"lastTime":…}}` in the gzip
  FEXTRA header): ignored
- `{a[:12]}…/config.v2.json`, `{b[:12]}…/config.v2.json` – dockerd container config; pod metadata in
  `Config.Labels` (`io.kubernetes.*`) and `Name` (`/k8s_<container>_<pod>_<ns>_<uid>_0`)
- `{b[:12]}…/<ID>-json.log` – kube-system/coredns-5d78c9869d-abcde/coredns, incl. a JSON message body

CRI layout, `pods/<ns>_<pod>_<uid>/<container>/`:

- `payments_checkout-…/checkout/0.log` – containerd format (`<ts> <stream> <P|F> <msg>`, 9 fractional
  digits, `Z`): F lines, one record as 3 `P` chunks + 1 `F` chunk, empty message, invalid UTF-8
  (`\\xff\\xfe`), `garbage line without timestamp`, JSON body, a Go handler panic with its
  goroutine dump (8 lines: one document after multiline grouping), last line on 2024-07-09
- `payments_checkout-…/checkout/0.log.20240708-034200` – kubelet-rotated file: ignored
- `payments_checkout-…/checkout/0.log.20240708-033000.gz` – kubelet-compressed rotated file: ignored
- `payments_checkout-…/checkout/1.log.tmp` – temp file: ignored
- `monitoring_node-exporter-…/node-exporter/0.log` – CRI-O style local-time offsets (`+08:00`, one
  `-05:00`); all convert to 2024-07-08 UTC
- `shop_web-…/nginx/0.log` – relative symlink to container A's `-json.log` (docker node layout):
  the same file must be read only once

Node logs, `host/` (the node's `/` for `--node-root examples/node/host`):

- `var/log/kubelet.log` – klog's file: its header (`Log file created at: 2024/07/08 …`, the one
  stamp with a year), klog lines (`I0708 03:42:57.123456 …`, the year taken from the header)
  and a goroutine line without a stamp (it takes the previous line's time); `kubelet.log.1` –
  its rotation: ignored by a fresh dry-run
- `var/log/containerd.log` – logrus lines (`time="…" level=… msg=…`)
- `var/log/kube-proxy.log` – kube-proxy's klog file
- `var/log/journal/<machine-id>/system.journal` – a systemd journal (compact, written by
  `systemd-journal-remote`): kubelet, containerd and kernel entries (shipped) and one sshd
  entry (not in `node.journal_units`)

Metadata:

- `pods.json` – `kubectl get pods -A -o json` for the 4 pods (labels incl. `app` and
  `app.kubernetes.io/name`, annotations, ownerReferences, nodeName, images, IPs, containerIDs
  `docker://…` / `containerd://…` matching the IDs above; uids match the `pods/` directory names)
"""


# --------------------------------------------------------------------------
# Build
# --------------------------------------------------------------------------

def write(rel, data):
    path = OUT / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


KEPT_JOURNAL = None


def build():
    global KEPT_JOURNAL
    if (OUT / JOURNAL).is_file():
        KEPT_JOURNAL = (OUT / JOURNAL).read_bytes()
    if OUT.is_symlink() or OUT.is_file():
        OUT.unlink()
    elif OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)

    # --- docker container A
    a_dir = f"docker/containers/{WEB['id']}"
    a_log = f"{a_dir}/{WEB['id']}-json.log"
    buf = b""
    for e in WEB_CURRENT:
        kind = e[0]
        if kind == "raw":
            buf += e[1]
        elif kind == "line":
            buf += docker_line(e[1], e[2], e[3], e[4])
        elif kind == "partial":
            buf += docker_line(e[1], e[2], e[3], e[4], last=False)
        elif kind == "attrs":
            buf += docker_line(e[1], e[2], e[3], e[4], attrs=e[5])
    write(a_log, buf)
    write(a_log + ".1", b"".join(docker_line(*e) for e in WEB_ROTATED_1))
    rot2 = b"".join(docker_line(*e) for e in WEB_ROTATED_2)
    last = WEB_ROTATED_2[-1]
    extra = json.dumps({"lastTime": docker_time(last[2], last[3])}, separators=(",", ":")).encode()
    write(a_log + ".2.gz", go_gzip(rot2, extra=extra))
    write(f"{a_dir}/config.v2.json",
          config_v2(WEB, "2024-07-08T03:20:13.804412307Z", "2024-07-08T03:20:14.589310443Z",
                    ["/docker-entrypoint.sh", "nginx", "-g", "daemon off;"]))

    # --- docker container B
    b_dir = f"docker/containers/{COREDNS['id']}"
    write(f"{b_dir}/{COREDNS['id']}-json.log", b"".join(docker_line(*e) for e in COREDNS_LINES))
    write(f"{b_dir}/config.v2.json",
          config_v2(COREDNS, "2024-07-08T03:21:01.950117254Z", "2024-07-08T03:21:02.271009833Z",
                    ["/coredns", "-conf", "/etc/coredns/Corefile"]))

    # --- CRI checkout (containerd)
    c_dir = f"pods/{pod_dir(CHECKOUT)}/{CHECKOUT['container']}"
    write(f"{c_dir}/0.log", b"".join(CHECKOUT_CURRENT))
    write(f"{c_dir}/0.log.20240708-034200", b"".join(CHECKOUT_ROTATED))
    write(f"{c_dir}/0.log.20240708-033000.gz", go_gzip(b"".join(CHECKOUT_ROTATED_GZ)))
    write(f"{c_dir}/1.log.tmp", b"".join(CHECKOUT_TMP))

    # --- CRI-O node-exporter
    n_dir = f"pods/{pod_dir(NODE_EXPORTER)}/{NODE_EXPORTER['container']}"
    write(f"{n_dir}/0.log", b"".join(NODE_EXPORTER_LINES))

    # --- docker-node symlink: pods/.../nginx/0.log -> container A's json log (relative)
    s_path = OUT / f"pods/{pod_dir(WEB)}/{WEB['container']}/0.log"
    s_path.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(f"../../../{a_log}", s_path)

    write("pods.json", pods_json())
    for rel, text in HOST_FILES.items():
        write(rel, text.encode())
    write("README.md", readme().encode())
    # The journal: written by systemd's own tool from the export format (its file ids
    # are random, so its bytes differ between runs; its entries do not). Without the
    # tool, the journal from before is kept.
    tool = journal_tool()
    path = OUT / JOURNAL
    path.parent.mkdir(parents=True, exist_ok=True)
    if tool:
        import subprocess
        subprocess.run([tool, "-o", str(path), "-"], input=journal_export(), check=True,
                       capture_output=True)
        os.chmod(path, 0o644)
    elif KEPT_JOURNAL is not None:
        path.write_bytes(KEPT_JOURNAL)
    else:
        sys.exit("systemd-journal-remote is needed to write the example journal "
                 "(Debian: apt-get install systemd-journal-remote)")


# --------------------------------------------------------------------------
# Self-check
# --------------------------------------------------------------------------

CRI_RE = re.compile(rb"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}(?:Z|[+-]\d\d:\d\d)) (stdout|stderr) ([PF]) (.*)$",
                    re.S)


def check():
    summary = []

    def lines(path):
        data = path.read_bytes()
        assert data.endswith(b"\n"), path
        return data[:-1].split(b"\n")

    def check_docker(path, expect_corrupt):
        ls = lines(path)
        corrupt = 0
        recs = []
        for ln in ls:
            try:
                recs.append(json.loads(ln))
            except json.JSONDecodeError:
                corrupt += 1
                assert ln == b'{"log":"half a line wri', ln
        assert corrupt == expect_corrupt, (path, corrupt)
        for r in recs:
            assert set(r) <= {"log", "stream", "attrs", "time"} and r["stream"] in ("stdout", "stderr"), r
        summary.append(f"{path.relative_to(OUT)}: {len(ls)} lines, {corrupt} corrupt, "
                       f"{sum(not r['log'].endswith(chr(10)) for r in recs)} partial")
        return ls, recs

    a_log = OUT / f"docker/containers/{WEB['id']}/{WEB['id']}-json.log"
    ls, recs = check_docker(a_log, 1)
    # round trip of every normal/partial line against the source table
    src = [e for e in WEB_CURRENT if e[0] != "raw"]
    assert len(src) == len(recs)
    for e, r in zip(src, recs):
        want = e[2] + ("" if e[0] == "partial" else "\n")
        assert r["log"] == want and r["stream"] == e[1] and r["time"] == docker_time(e[3], e[4])
    logs = [r["log"] for r in recs]
    assert logs.count(EXACT_16K + "\n") == 1 and len((EXACT_16K + "\n").encode()) == 16385
    parts = [r for r in recs if not r["log"].endswith("\n")]
    assert [len(p["log"]) for p in parts] == [16384, 16384]
    assert "".join(logs[logs.index(parts[0]["log"]):logs.index(parts[0]["log"]) + 3]) == SPLIT_40K + "\n"
    raw = a_log.read_bytes()
    for needle in (b"\\u0026", b"\\u003c", b"\\u003e", "Zoë Ångström ✓".encode(), b'\\"bad gateway\\"\\t',
                   b"C:\\\\srv\\\\www\\\\new", b'"log":"\\n"', b'"stream":"stdout","attrs":{"tag":"x"},"time"',
                   b'"time":"2024-07-08T03:43:10.5Z"', b'"time":"2024-07-08T03:43:11Z"',
                   b'"time":"2024-07-09T00:00:01.004211Z"'):
        assert needle in raw, needle
    check_docker(a_log.with_name(a_log.name + ".1"), 0)
    gz = a_log.with_name(a_log.name + ".2.gz")
    with gzip.open(gz) as f:
        n = len(f.read().splitlines())
    assert n == len(WEB_ROTATED_2)
    summary.append(f"{gz.relative_to(OUT)}: gzip ok, {n} lines")
    _, brecs = check_docker(OUT / f"docker/containers/{COREDNS['id']}/{COREDNS['id']}-json.log", 0)
    assert any(r["log"].startswith("{") and json.loads(r["log"]) for r in brecs)
    for p in (WEB, COREDNS):
        cfg = json.loads((OUT / f"docker/containers/{p['id']}/config.v2.json").read_bytes())
        lab = cfg["Config"]["Labels"]
        assert cfg["ID"] == p["id"] and lab["io.kubernetes.pod.uid"] == p["uid"]
        assert (lab["io.kubernetes.pod.name"], lab["io.kubernetes.pod.namespace"],
                lab["io.kubernetes.container.name"]) == (p["pod"], p["ns"], p["container"])
        assert cfg["Name"] == f"/k8s_{p['container']}_{p['pod']}_{p['ns']}_{p['uid']}_0"

    # CRI files
    def check_cri(path, expect_garbage):
        ls = lines(path)
        bad, tags = 0, {b"P": 0, b"F": 0}
        for ln in ls:
            m = CRI_RE.match(ln)
            if not m:
                bad += 1
                assert ln == b"garbage line without timestamp", ln
                continue
            tags[m.group(3)] += 1
        assert bad == expect_garbage, path
        summary.append(f"{path.relative_to(OUT)}: {len(ls)} lines, {tags[b'P']} P, {tags[b'F']} F, "
                       f"{bad} without timestamp")
        return ls

    c_dir = OUT / f"pods/{pod_dir(CHECKOUT)}/{CHECKOUT['container']}"
    cl = check_cri(c_dir / "0.log", 1)
    assert b"".join(CRI_RE.match(l).group(4) for l in cl[3:7]) == CART.encode()
    assert [CRI_RE.match(l).group(3) for l in cl[3:7]] == [b"P", b"P", b"P", b"F"]
    assert any(l.endswith(b" stdout F ") for l in cl)
    assert any(b"\xff\xfe" in l for l in cl)
    assert cl[-1].startswith(b"2024-07-09T00:00:02.517384920Z ")
    check_cri(c_dir / "0.log.20240708-034200", 0)
    check_cri(c_dir / "1.log.tmp", 0)
    with gzip.open(c_dir / "0.log.20240708-033000.gz") as f:
        assert len(f.read().splitlines()) == len(CHECKOUT_ROTATED_GZ)
    nl = check_cri(OUT / f"pods/{pod_dir(NODE_EXPORTER)}/{NODE_EXPORTER['container']}/0.log", 0)
    from datetime import datetime, timezone
    for l in nl:
        ts = CRI_RE.match(l).group(1).decode()
        utc = datetime.fromisoformat(ts[:26] + ts[29:]).astimezone(timezone.utc)
        assert utc.date().isoformat() == "2024-07-08", ts

    # symlink
    link = OUT / f"pods/{pod_dir(WEB)}/{WEB['container']}/0.log"
    assert link.is_symlink() and not os.readlink(link).startswith("/")
    assert link.resolve() == a_log.resolve()
    summary.append(f"{link.relative_to(OUT)} -> {os.readlink(link)}")

    # pods.json consistency
    doc = json.loads((OUT / "pods.json").read_bytes())
    dirs = {d.name for d in (OUT / "pods").iterdir()}
    ids = {}
    for item in doc["items"]:
        md = item["metadata"]
        d = f"{md['namespace']}_{md['name']}_{md['uid']}"
        for cs in item["status"]["containerStatuses"]:
            ids[cs["containerID"]] = d
        assert item["spec"]["nodeName"] == NODE
    assert {pod_dir(p) for p in (WEB, CHECKOUT, NODE_EXPORTER)} <= dirs
    assert set(ids) == {"docker://" + WEB["id"], "docker://" + COREDNS["id"],
                        "containerd://" + CHECKOUT["id"], "containerd://" + NODE_EXPORTER["id"]}
    summary.append(f"pods.json: {len(doc['items'])} pods, containerIDs match")

    journal = OUT / JOURNAL
    assert journal.read_bytes()[:8] == b"LPKSHHRH", "journal file signature"
    summary.append(f"journal: {len(JOURNAL_ENTRIES)} entries")
    total = sum(p.stat().st_size for p in OUT.rglob("*")
                if p.is_file() and not p.is_symlink() and p != journal)
    assert total < 200 * 1024, total
    summary.append(f"total size: {total} bytes")
    return summary


def main():
    build()
    for s in check():
        print(s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
