#!/usr/bin/env python3
"""benches/kube_api.py - a minimal Kubernetes API on loopback for benchmarks.

Serves `GET /api/v1/pods` and `GET /api/v1/namespaces` (lists) and their `watch=true`
streams (kept open, no events), for N pods on one node. The first pods own the Docker
containers found under --docker-root (their `containerStatuses[].containerID` is
`docker://<dir name>`), so a dry-run over that tree is enriched from them; the rest are
other pods of the node. Writes a kubeconfig pointing at itself and runs until killed.

Usage: kube_api.py --docker-root DIR --pods 100 --kubeconfig FILE [--port 0]
Only for benchmarks: the integration tests use the Rust server in tests/kube_api.rs.
"""
import argparse
import json
import os
import random
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

NODE = "node-1"


def make_pods(container_ids, n, seed=1):
    rnd = random.Random(seed)
    pods = []
    for i in range(n):
        app = "app%02d" % (i % 37)
        rs_hash = "".join(rnd.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(9))
        name = "%s-%s-%s" % (app, rs_hash, "".join(rnd.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(5)))
        cid = container_ids[i] if i < len(container_ids) else "%064x" % rnd.getrandbits(256)
        ns = "team-%d" % (i % 8)
        pods.append({
            "metadata": {
                "name": name, "namespace": ns, "uid": "00000000-0000-4000-8000-%012d" % i,
                "resourceVersion": str(1000 + i),
                "labels": {"app": app, "app.kubernetes.io/name": app, "app.kubernetes.io/part-of": ns,
                           "app.kubernetes.io/version": "1.%d.0" % (i % 5), "pod-template-hash": rs_hash},
                "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "9090"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "%s-%s" % (app, rs_hash),
                                     "uid": "rs-%d" % i, "controller": True, "blockOwnerDeletion": True}],
            },
            "spec": {"nodeName": NODE, "containers": [{"name": app, "image": "registry.example.com/%s:1.0" % app}]},
            "status": {"phase": "Running", "podIP": "10.244.%d.%d" % (i // 250, i % 250 + 2),
                       "containerStatuses": [{"name": app, "image": "registry.example.com/%s:1.0" % app,
                                              "imageID": "registry.example.com/%s@sha256:%064x" % (app, i),
                                              "containerID": "docker://" + cid, "ready": True, "restartCount": 0}]},
        })
    namespaces = [{"metadata": {"name": "team-%d" % k, "uid": "ns-%d" % k, "resourceVersion": str(900 + k),
                                "labels": {"kubernetes.io/metadata.name": "team-%d" % k, "team": "t%d" % k}}}
                  for k in range(8)]
    return pods, namespaces


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--docker-root", required=True)
    ap.add_argument("--pods", type=int, default=100)
    ap.add_argument("--kubeconfig", required=True)
    ap.add_argument("--port", type=int, default=0)
    a = ap.parse_args()
    ids = sorted(d for d in os.listdir(a.docker_root) if os.path.isdir(os.path.join(a.docker_root, d)))
    pods, namespaces = make_pods(ids, a.pods)
    lists = {
        "/api/v1/pods": json.dumps({"kind": "PodList", "apiVersion": "v1",
                                    "metadata": {"resourceVersion": "5000"}, "items": pods}).encode(),
        "/api/v1/namespaces": json.dumps({"kind": "NamespaceList", "apiVersion": "v1",
                                          "metadata": {"resourceVersion": "5000"}, "items": namespaces}).encode(),
    }

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_GET(self):
            u = urlparse(self.path)
            body = lists.get(u.path)
            if body is None:
                self.send_error(404)
                return
            if parse_qs(u.query).get("watch") == ["true"]:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self.wfile.flush()
                try:  # an open watch with nothing happening, until the client goes away
                    while True:
                        time.sleep(3600)
                except OSError:
                    return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    ThreadingHTTPServer.daemon_threads = True
    server = ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    port = server.server_address[1]
    with open(a.kubeconfig, "w") as f:
        f.write("apiVersion: v1\nkind: Config\nclusters:\n- name: bench\n  cluster:\n    server: http://127.0.0.1:%d\n"
                "contexts:\n- name: bench\n  context:\n    cluster: bench\n    user: bench\ncurrent-context: bench\n"
                "users:\n- name: bench\n  user: {}\n" % port)
    print("kube_api: %d pods (%d with containers under %s) on 127.0.0.1:%d" % (len(pods), min(len(ids), len(pods)),
                                                                            a.docker_root, port), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
