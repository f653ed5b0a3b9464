#!/usr/bin/env python3
# The demo backend: answers with the identity mod_krenalis_auth handed over.
import json, os, sys

names = ["REMOTE_USER", "AUTH_TYPE", "KRENALIS_KEY_TYPE", "KRENALIS_ORGANIZATION",
         "KRENALIS_WORKSPACE", "KRENALIS_CONNECTION", "KRENALIS_KEY_ID"]
length = int(os.environ.get("CONTENT_LENGTH") or 0)
body = sys.stdin.buffer.read(length) if length else b""
out = {"method": os.environ.get("REQUEST_METHOD"), "path": os.environ.get("PATH_INFO", ""),
       "protocol": os.environ.get("SERVER_PROTOCOL"),
       "identity": {n: os.environ[n] for n in names if n in os.environ},
       "bodyBytes": len(body)}
sys.stdout.write("Content-Type: application/json\r\n\r\n" + json.dumps(out, indent=2) + "\n")
