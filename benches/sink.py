#!/usr/bin/env python3
"""A loopback Elasticsearch stand-in for the idle and latency benchmarks.

Answers `GET /` (an 8.x version), template PUTs, and `POST /_bulk` (plain or gzip
bodies, every item 201). For each document whose `log` holds `lat <ns>` (the time the
line was written, Unix nanoseconds), it records the delay until the bulk request carrying
it was read whole. `GET /_stats_sink` returns the document count, requests and the delays
(in milliseconds) recorded since the last `POST /_stats_sink/reset`.

    python3 benches/sink.py --port 0      # prints {"port": N} once it listens
"""
import argparse, gzip, json, re, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LAT = re.compile(rb'lat (\d{16,20})')
lock = threading.Lock()
state = {"docs": 0, "requests": 0, "delays_ms": []}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(n) if n else b""
        if self.headers.get("Content-Encoding") == "gzip":
            data = gzip.decompress(data)
        return data

    def do_GET(self):
        path = self.path.split("?")[0]
        if path == "/":
            self.reply(200, {"name": "sink", "version": {"number": "8.15.0", "build_flavor": "default"}, "tagline": "You Know, for Search"})
        elif path == "/_stats_sink":
            with lock:
                self.reply(200, dict(state))
        else:
            self.reply(404, {"error": "not found", "status": 404})

    def do_PUT(self):
        self.body()
        self.reply(200, {"acknowledged": True})

    def do_POST(self):
        path = self.path.split("?")[0]
        data = self.body()
        now = time.time_ns()
        if path == "/_stats_sink/reset":
            with lock:
                state.update(docs=0, requests=0, delays_ms=[])
            return self.reply(200, {})
        if not path.endswith("/_bulk"):
            return self.reply(404, {"error": "not found", "status": 404})
        lines = data.split(b"\n")
        docs = lines[1::2]
        docs = [d for d in docs if d]
        delays = []
        for d in docs:
            m = LAT.search(d)
            if m:
                delays.append((now - int(m.group(1))) / 1e6)
        with lock:
            state["docs"] += len(docs)
            state["requests"] += 1
            state["delays_ms"].extend(delays)
        self.reply(200, {"took": 1, "errors": False, "items": [{"create": {"status": 201}}] * len(docs)})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    a = ap.parse_args()
    srv = ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    print(json.dumps({"port": srv.server_address[1]}), flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
