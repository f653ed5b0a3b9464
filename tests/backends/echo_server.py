#!/usr/bin/python3
"""Proxy echo backend for the mod_krenalis_auth integration tests.

    python3 echo_server.py --port 0 --hits FILE

Listens on 127.0.0.1 (port 0: any free port) and prints "PORT <n>" on stdout once it is
ready. Answers every method with a JSON object: method, path (with query), every request
header as [name, value] pairs in the order received, and the sha256 and length of the body
(Content-Length or chunked). Query parameters: status=NNN sets the status; cors=1 adds
Access-Control-Allow-Origin: *, Vary: Origin and Access-Control-Expose-Headers: Retry-After;
acac=1 adds Access-Control-Allow-Credentials: true (which the module must never let through);
vary=1 adds two Vary fields, Accept-Encoding and Accept-Language (each must reach the client).
Each request is appended to FILE as "METHOD PATH RECORD", RECORD being one line of JSON with
"backend", the Krenalis-Auth-* request "headers" and the body's sha256 and length (so that a
test can check what reached the backend even when its client cannot read the response).
"""
import argparse
import hashlib
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

LOCK = threading.Lock()
HITS = None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def read_body(self):
        te = self.headers.get("Transfer-Encoding", "")
        if "chunked" in te.lower():
            parts = []
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while True:  # trailers
                        t = self.rfile.readline(65537)
                        if t in (b"\r\n", b"\n", b""):
                            break
                    break
                parts.append(self.rfile.read(size))
                self.rfile.readline(3)
            return b"".join(parts)
        cl = self.headers.get("Content-Length")
        if cl:
            return self.rfile.read(int(cl))
        return b""

    def handle_any(self):
        body = self.read_body()
        if HITS:
            rec = {"backend": "proxy",
                   "headers": [[k, v] for k, v in self.headers.items()
                               if k.lower().replace("_", "-").startswith("krenalis-auth-")],
                   "body_sha256": hashlib.sha256(body).hexdigest(), "body_len": len(body)}
            with LOCK, open(HITS, "a") as f:
                f.write("%s %s %s\n" % (self.command, self.path,
                                        json.dumps(rec, sort_keys=True, separators=(",", ":"))))
        q = parse_qs(urlsplit(self.path).query)
        status = int(q.get("status", ["200"])[0])
        doc = {
            "backend": "proxy",
            "method": self.command,
            "path": self.path,
            "headers": [[k, v] for k, v in self.headers.items()],
            "body_sha256": hashlib.sha256(body).hexdigest(),
            "body_len": len(body),
        }
        data = json.dumps(doc, sort_keys=True).encode() + b"\n"
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if q.get("cors", ["0"])[0] == "1":
            self.send_header("Access-Control-Allow-Origin", "*")
            self.send_header("Vary", "Origin")
            self.send_header("Access-Control-Expose-Headers", "Retry-After")
        if q.get("acac", ["0"])[0] == "1":
            self.send_header("Access-Control-Allow-Credentials", "true")
        if q.get("vary", ["0"])[0] == "1":
            self.send_header("Vary", "Accept-Encoding")
            self.send_header("Vary", "Accept-Language")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = handle_any

    def log_message(self, fmt, *args):
        pass


def main():
    global HITS
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--hits")
    a = ap.parse_args()
    HITS = a.hits
    ThreadingHTTPServer.daemon_threads = True
    srv = ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    sys.stdout.write("PORT %d\n" % srv.server_address[1])
    sys.stdout.flush()
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
