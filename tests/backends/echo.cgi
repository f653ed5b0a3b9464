#!/usr/bin/python3 -S
# CGI echo backend for the mod_krenalis_auth integration tests.
#
# Prints, as one JSON object, the CGI variables a test may look at (identity variables, their
# REDIRECT_ forms, every HTTP_* variable) and the sha256 and length of the request body.
# Query parameters: status=NNN sets the response status; cors=1 adds CORS headers of its own
# (to check that the module does not duplicate them); acac=1 adds
# Access-Control-Allow-Credentials: true (which the module must never let through, SPEC §10);
# vary=1 adds two Vary fields, Accept-Encoding and Accept-Language (each must reach the client).
# Every request is appended to the file named by ECHO_HITS (SetEnv in the test config), as
# "METHOD URI RECORD" (RECORD: one line of JSON with "backend", the identity variables as "env"
# and the body's sha256 and length), so that a test can prove that a request did not reach the
# backend, or what reached it when its client cannot read the response (sendBeacon).
import hashlib
import json
import os
import sys
from urllib.parse import parse_qs

NAMES = (
    "REMOTE_USER", "AUTH_TYPE", "KRENALIS_KEY_TYPE", "KRENALIS_ORGANIZATION",
    "KRENALIS_WORKSPACE", "KRENALIS_CONNECTION", "KRENALIS_KEY_ID", "REQUEST_METHOD",
    "REQUEST_URI", "PATH_INFO", "QUERY_STRING", "CONTENT_LENGTH", "CONTENT_TYPE",
    "SCRIPT_NAME", "SCRIPT_FILENAME",
)


def main():
    env = os.environ
    out_env = {}
    for k, v in env.items():
        if k in NAMES or k.startswith(("HTTP_", "REDIRECT_", "KRENALIS_")):
            out_env[k] = v
    stdin = sys.stdin.buffer
    cl = env.get("CONTENT_LENGTH")
    if cl:
        want = int(cl)
        chunks = []
        while want > 0:
            b = stdin.read(want)
            if not b:
                break
            chunks.append(b)
            want -= len(b)
        body = b"".join(chunks)
    else:
        body = stdin.read()
    digest = hashlib.sha256(body).hexdigest()
    hits = env.get("ECHO_HITS")
    if hits:
        rec = {"backend": "cgi",
               "env": {k: v for k, v in out_env.items()
                       if k in ("REMOTE_USER", "AUTH_TYPE")
                       or k.startswith(("KRENALIS_", "HTTP_KRENALIS_AUTH"))},
               "body_sha256": digest, "body_len": len(body)}
        try:
            with open(hits, "a") as f:
                f.write("%s %s %s\n" % (env.get("REQUEST_METHOD", "-"), env.get("REQUEST_URI", "-"),
                                        json.dumps(rec, sort_keys=True, separators=(",", ":"))))
        except OSError:
            pass
    q = parse_qs(env.get("QUERY_STRING", ""))
    status = q.get("status", [None])[0]
    doc = {
        "backend": "cgi",
        "env": out_env,
        "body_sha256": digest,
        "body_len": len(body),
    }
    data = json.dumps(doc, sort_keys=True).encode() + b"\n"
    # no Status line by default: after an ErrorDocument redirect httpd keeps the original status
    head = ["Content-Type: application/json", "Content-Length: %d" % len(data)]
    if status:
        head.insert(0, "Status: %s" % status)
    if q.get("cors", ["0"])[0] == "1":
        head += ["Access-Control-Allow-Origin: *", "Vary: Origin",
                 "Access-Control-Expose-Headers: Retry-After"]
    if q.get("acac", ["0"])[0] == "1":
        head.append("Access-Control-Allow-Credentials: true")
    if q.get("vary", ["0"])[0] == "1":
        head += ["Vary: Accept-Encoding", "Vary: Accept-Language"]
    out = sys.stdout.buffer
    out.write(("\r\n".join(head) + "\r\n\r\n").encode())
    out.write(data)
    out.flush()


main()
