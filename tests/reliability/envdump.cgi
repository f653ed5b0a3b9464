#!/usr/bin/python3 -S
# CGI backend of the reliability suite: answers with its whole environment (every variable
# httpd passed, not only the identity) and the sha256/length of the body, as one JSON object,
# so that a test can look for secrets in what a backend receives.
# Query parameters: sleep=S waits S seconds first (keeps an httpd child busy).
# Every request is appended to $ECHO_HITS as "METHOD URI" (proves what reached a backend).
import hashlib
import json
import os
import sys
import time
from urllib.parse import parse_qs


def main():
    env = dict(os.environ)
    q = parse_qs(env.get("QUERY_STRING", ""))
    if "sleep" in q:
        time.sleep(min(float(q["sleep"][0]), 60))
    stdin = sys.stdin.buffer
    cl = env.get("CONTENT_LENGTH")
    body = stdin.read(int(cl)) if cl else b""
    hits = env.get("ECHO_HITS")
    if hits:
        try:
            with open(hits, "a") as f:
                f.write("%s %s envdump\n" % (env.get("REQUEST_METHOD", "-"),
                                             env.get("REQUEST_URI", "-")))
        except OSError:
            pass
    doc = {"backend": "envdump", "env": env, "body_sha256": hashlib.sha256(body).hexdigest(),
           "body_len": len(body)}
    data = json.dumps(doc, sort_keys=True).encode() + b"\n"
    out = sys.stdout.buffer
    out.write(b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(data))
    out.write(data)
    out.flush()


main()
