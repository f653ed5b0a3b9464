#!/usr/bin/env python3
"""`make demo-check` (part of `make test`): starts the demo of `make demo` on a free loopback
port in a folder of its own (so a running `make demo` is left alone), runs every curl line it
prints exactly as printed, and checks each answer's status against the one its label names
("Accepted" is 200). Then it runs the printed "disable the organization" command, retries the
first line (422, OrganizationDisabled, with no reload), and stops the demo by its PID.

A label this script cannot read an expected status from fails the check: a new demo line
needs its expectation here."""
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMO = os.path.join(ROOT, "conf", "demo", "demo.py")
failures = []


def check(ok, what):
    print(("ok    " if ok else "FAIL  ") + what)
    if not ok:
        failures.append(what)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def expected(label):
    """The status a printed label promises, or None when it names none."""
    m = re.search(r"\((\d{3})\)\s*$", label)
    if m:
        return int(m.group(1))
    if label.startswith("Accepted"):
        return 200
    return None


def curl(argv, body_file):
    """Runs a printed curl line as printed, its body to body_file: (status, HTTP version)."""
    assert argv[0] == "curl", argv
    out = subprocess.run(argv + ["-o", body_file, "-w", "%{http_code} %{http_version}"],
                         capture_output=True, text=True, timeout=30)
    status, version = (out.stdout.split() + ["0", "?"])[:2]
    return int(status), version


def body_of(path):
    with open(path, "rb") as f:
        data = f.read()
    # -si lines write the headers into the body file too: the JSON follows the blank line.
    if data.startswith(b"HTTP/"):
        data = data.split(b"\r\n\r\n", 1)[-1]
    try:
        return json.loads(data)
    except ValueError:
        return None


def main():
    port = free_port()
    run = tempfile.mkdtemp(prefix="krenalis-demo-check-")
    started = subprocess.run([sys.executable, DEMO, "start", "--port", str(port), "--dir", run],
                             capture_output=True, text=True, timeout=120)
    if started.returncode != 0:
        print(started.stdout + started.stderr)
        sys.exit("demo-check: the demo did not start")
    pid = int(open(os.path.join(run, "httpd.pid")).read().strip())
    try:
        with open(os.path.join(run, "keys.json")) as f:
            keys = json.load(f)
        lines = started.stdout.splitlines()
        pairs = []  # (label, command)
        for i, line in enumerate(lines):
            if line.startswith("  ") and i > 0 and not lines[i - 1].startswith("  "):
                pairs.append((lines[i - 1].strip(), line.strip()))
        body = os.path.join(run, "check-body")
        curls = [(label, cmd) for label, cmd in pairs if cmd.startswith("curl ")]
        check(len(curls) >= 15, "the demo prints its curl lines (%d found)" % len(curls))
        first = None
        for label, cmd in curls:
            want = expected(label)
            if want is None:
                check(False, "an expected status for %r" % label)
                continue
            argv = shlex.split(cmd)
            status, version = curl(argv, body)
            doc = body_of(body)
            what = "%s: %d (HTTP/%s)" % (label, status, version)
            ok = status == want
            if "HTTP/2" in label:
                ok = ok and version == "2" and doc is not None and doc.get("protocol") == "HTTP/2.0"
            if want == 200 and "/v1/organizations" not in cmd:
                # The backend echoes the identity Apache passed on: the demo's organization.
                ok = ok and doc is not None and \
                    doc.get("identity", {}).get("KRENALIS_ORGANIZATION") == keys["organization"]
            if want >= 400:
                ok = ok and doc is not None and "error" in doc
            check(ok, what)
            if first is None:
                first = argv
        changes = [cmd for label, cmd in pairs if label.startswith("Refused after a change")]
        check(len(changes) == 1, "the demo prints the change to try")
        if changes and first:
            out = subprocess.run(shlex.split(changes[0]), capture_output=True, text=True)
            check(out.returncode == 0, "the printed change runs: %s" % out.stderr.strip())
            status, _ = curl(first, body)
            doc = body_of(body) or {}
            code = doc.get("error", {}).get("code")
            check(status == 422 and code == "OrganizationDisabled",
                  "the first line after the change, with no reload: %d %s" % (status, code))
    finally:
        # demo.py stop waits for httpd to exit (5 s); still there after it is a failure.
        subprocess.run([sys.executable, DEMO, "stop", "--dir", run], capture_output=True)
        try:
            os.kill(pid, signal.SIGKILL)
            check(False, "the demo httpd stops")
        except ProcessLookupError:
            pass
        shutil.rmtree(run, ignore_errors=True)
    if failures:
        sys.exit("demo-check: %d of the demo's lines did not answer as printed" % len(failures))
    print("demo-check: every line the demo prints answered as printed")


if __name__ == "__main__":
    main()
