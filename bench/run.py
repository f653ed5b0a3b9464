#!/usr/bin/env python3
"""Benchmark of mod_krenalis_auth (python3 stdlib only). See bench/README.md.

One run:
  1. builds key stores of 10 thousand and 1 million keys (and 10 million with --large) with the
     bulk paths of krenalis-keys, plus the password files of Apache's own alternatives;
  2. starts one httpd (event MPM) on loopback, one port per key store, serving a 3-byte static
     file, and drives it with wrk from this machine: every case once per round, in list order in
     odd rounds and reversed in even ones, for --rounds rounds; reports medians and per-round ratios to "open";
  3. starts httpd again once per store size, alone, to read the peak memory of its children;
  4. runs bench/decide_bench (the decision alone, in ns) against each store;
  5. prints a results table and writes it to bench/RESULTS.md.

Every process it starts is stopped by PID; everything lives in a temporary directory under /tmp
(removed at the end unless --keep).
"""
import argparse
import base64
import copy
import hashlib
import json
import os
import platform
import random
import re
import resource
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The API-key encoding of the tests' harness (standard library only, no side effects).
sys.path.insert(0, str(REPO / "tests" / "integration"))
from harness import ALNUM62, api_body, terminate  # noqa: E402

BENCH = REPO / "bench"
BUILD = REPO / "build"
APACHE = "/usr/sbin/apache2"
MODDIR = "/usr/lib/apache2/modules"
LUA = BENCH / "rotate.lua"
# Keys in turn in the api-wide case: three times the look-up cache's default 65536 entries.
WIDE_KEYS = 200000
BODY_SIZE = 2048

T0 = time.time()


def log(msg):
    sys.stderr.write("[%6.1fs] %s\n" % (time.time() - T0, msg))
    sys.stderr.flush()


def die(msg):
    sys.stderr.write("bench: %s\n" % msg)
    sys.exit(1)


def human(n):
    for unit, div in (("M", 1000000), ("k", 1000)):
        if n >= div and n % div == 0:
            return "%d%s" % (n // div, unit)
    return str(n)


# ---------------------------------------------------------------------------------------------
# Processes (started and stopped by PID only)

PROCS = []


def stop_proc(p, timeout=15):
    if p is None:
        return
    terminate(p, timeout)
    if p in PROCS:
        PROCS.remove(p)


def stop_all():
    for p in list(PROCS):
        stop_proc(p)


NICE = 0


def niced():
    """preexec_fn of the measured processes (httpd, wrk, decide_bench): --nice."""
    if NICE:
        os.nice(NICE)


def run(cmd, timeout=600, **kw):
    p = subprocess.run([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=timeout, **kw)
    if p.returncode != 0:
        die("%s: exit %d\n%s%s" % (" ".join(map(str, cmd)), p.returncode,
                                   p.stdout.decode(errors="replace")[-2000:],
                                   p.stderr.decode(errors="replace")[-2000:]))
    return p.stdout.decode()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, proc, timeout=20):
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            return False
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


# ---------------------------------------------------------------------------------------------
# Credentials and bodies


def unknown_api_token(rng):
    """A well-formed API key (right alphabet, length and CRC) that no store holds."""
    return "api_" + api_body(bytes(rng.getrandbits(8) for _ in range(32)))


def malformed_api_token(valid):
    """A valid key with one payload character changed: decoded in full, then the CRC fails."""
    body = list(valid[4:])
    body[20] = ALNUM62[(ALNUM62.index(body[20]) + 1) % 62]
    return "api_" + "".join(body)


def sdk_batch(rng, write_key=None, size=BODY_SIZE):
    """A JS-SDK-style batch of exactly `size` bytes (Krenalis/Segment format: track events with
    context, then sentAt); with write_key, "writeKey" is its last top-level member, so the module
    scans the whole body to find it. The last event's properties take up the rest."""
    def event(i):
        return {
            "type": "track", "event": "Product Viewed",
            "messageId": "%032x" % rng.getrandbits(128),
            "anonymousId": "%032x" % rng.getrandbits(128),
            "timestamp": "2024-05-01T12:00:%02d.000Z" % i,
            "properties": {"product_id": "P%06d" % rng.randrange(10 ** 6), "price": 19.99,
                           "currency": "EUR", "quantity": 1 + i % 3, "description": ""},
            "context": {"library": {"name": "krenalis.js", "version": "1.0.0"},
                        "page": {"path": "/products/%d" % i,
                                 "url": "https://shop.example.com/products/%d" % i},
                        "userAgent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 "
                                     "(KHTML, like Gecko) Chrome/124.0 Safari/537.36"},
        }

    def encode(events):
        doc = {"batch": events, "sentAt": "2024-05-01T12:00:30.000Z"}
        if write_key is not None:
            doc["writeKey"] = write_key
        return json.dumps(doc, separators=(",", ":")).encode()

    events = [event(0)]
    while len(encode(events + [event(len(events))])) <= size:
        events.append(event(len(events)))
    events[-1]["properties"]["description"] = "x" * (size - len(encode(events)))
    out = encode(events)
    assert len(out) == size, len(out)
    return out


def raw_request(method, path, host, headers, body=None):
    lines = ["%s %s HTTP/1.1" % (method, path), "Host: %s" % host,
             "User-Agent: krenalis-bench"]
    lines += ["%s: %s" % h for h in headers]
    if body is not None:
        lines.append("Content-Length: %d" % len(body))
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


def basic(user, pw):
    return "Basic " + base64.b64encode(("%s:%s" % (user, pw)).encode()).decode()


# ---------------------------------------------------------------------------------------------
# Key stores and password files


class Store:
    def __init__(self, bench, size):
        self.size = size
        self.name = human(size)
        self.dir = bench.root / "stores" / self.name
        self.tokens = bench.root / "tokens"
        self.api = self.tokens / ("api-%s.txt" % self.name)
        self.restricted = self.tokens / ("restricted-%s.txt" % self.name)
        self.wk = self.tokens / ("wk-%s.txt" % self.name)
        self.keys_bin = bench.bin / "krenalis-keys"
        self.n_restricted = size // 10
        self.n_wk = size // 10
        self.n_api = size - self.n_restricted - self.n_wk
        self.org = self.ws = None
        self.build_s = None
        self.bytes = None

    def cli(self, *args):
        out = run([self.keys_bin, "--store", self.dir, "--json"] + list(args), timeout=3600)
        return json.loads(out) if out.strip() else {}

    def build(self, owner):
        t = time.time()
        args = ["init"] + (["--owner", owner] if owner else [])
        self.cli(*args)
        self.org = self.cli("organization", "add", "--name", "bench")["id"]
        self.ws = self.cli("workspace", "add", "--organization", self.org, "--name", "bench")["id"]
        self.cli("api-key", "bulk-create", "--organization", self.org, "--name", "bench",
                 "--count", self.n_api, "--tokens", self.api)
        self.cli("api-key", "bulk-create", "--organization", self.org, "--workspace", self.ws,
                 "--name", "bench restricted", "--count", self.n_restricted,
                 "--tokens", self.restricted)
        self.cli("write-key", "bulk-create", "--workspace", self.ws, "--name", "bench",
                 "--count", self.n_wk, "--tokens", self.wk)
        self.build_s = time.time() - t
        self.bytes = sum(f.stat().st_size for f in self.dir.iterdir() if f.is_file())
        self.stat = self.mdb_stat()

    def mdb_stat(self):
        """What LMDB uses (mdb_stat -a -e -f): the pages in use are the environment's "pages
        used" less its free pages (which a later write reuses). The per-database counts are
        each B-tree's branch, leaf and overflow pages; LMDB leaves out of them the sub-trees
        of sorted duplicates (the `children` index of format 3), so their sum plus the two
        meta pages is less than the pages in use."""
        out = run(["mdb_stat", "-a", "-e", "-f", self.dir])
        psize = int(re.search(r"Page size: (\d+)", out).group(1))
        used = int(re.search(r"Number of pages used: (\d+)", out).group(1))
        free = int(re.search(r"Free pages: (\d+)", out).group(1))
        dbs = {}
        for m in re.finditer(r"Status of (.+)\n((?:  .*\n?)+)", out):
            f = dict((k.strip(), int(v)) for k, v in re.findall(r"  ([^:]+): (\d+)", m.group(2)))
            dbs[m.group(1).strip()] = f
        in_use = used - free
        keys = self.n_api + self.n_restricted + self.n_wk
        return {"psize": psize, "pages_used": used, "pages_in_use": in_use, "dbs": dbs,
                "file": (self.dir / "data.mdb").stat().st_size,
                "in_use_per_key": in_use * psize / keys,
                "keys_db_per_key": sum(dbs.get("keys", {}).get(k, 0) for k in
                                       ("Branch pages", "Leaf pages", "Overflow pages")) *
                psize / keys,
                "depth": dbs.get("keys", {}).get("Tree depth", 0)}

    def sample(self, which, n, rng):
        """n tokens drawn from the first lines of a token file (bulk-created keys are random, so
        any lines are a random sample of the store)."""
        path = {"api": self.api, "restricted": self.restricted, "wk": self.wk}[which]
        out = []
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line:
                    out.append(line)
                if len(out) >= max(n * 4, 50000):
                    break
        rng.shuffle(out)
        return out[:n]


def make_password_files(root, n_dbm, n_file, rng):
    """users.dbm (mod_authn_dbm, {SHA} hashes as `htdbm -s` writes them, APR's default DBM type)
    and htpasswd (mod_authn_file, bcrypt as `htpasswd -B` writes it)."""
    d = root / "auth"
    d.mkdir()
    os.chmod(d, 0o755)
    pw = secrets.token_urlsafe(12)
    sha = "{SHA}" + base64.b64encode(hashlib.sha1(pw.encode()).digest()).decode()
    # The format htdbm -s writes: check it against htdbm itself.
    probe = subprocess.run(["htdbm", "-nbs", "probe", pw], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT).stdout.decode().strip()
    if probe != "probe:" + sha:
        die("unexpected htdbm -s output: %r" % probe)
    txt = d / "users.txt"
    with open(txt, "w") as f:
        for i in range(n_dbm):
            f.write("user%d %s\n" % (i, sha))
    run(["httxt2dbm", "-f", "default", "-i", txt, "-o", d / "users.dbm"])
    txt.unlink()
    run(["htdbm", "-vb", "-Tdefault", d / "users.dbm", "user%d" % (n_dbm // 2), pw])
    # One bcrypt hash (htpasswd -B, its default cost) shared by every user: each request costs one
    # bcrypt verification either way, and this saves n_file runs of htpasswd.
    line = run(["htpasswd", "-nbB", "user0", pw]).strip()
    bhash = line.split(":", 1)[1]
    with open(d / "htpasswd", "w") as f:
        for i in range(n_file):
            f.write("user%d:%s\n" % (i, bhash))
    run(["htpasswd", "-vb", d / "htpasswd", "user%d" % (n_file - 1), pw])
    for p in d.iterdir():
        os.chmod(p, 0o644)
    return d, pw, bhash.split("$")[2] if bhash.startswith("$2") else "?"


# ---------------------------------------------------------------------------------------------
# httpd


CONF = """\
# generated by bench/run.py
ServerRoot "{root}"
ServerName 127.0.0.1
DefaultRuntimeDir "{rundir}"
PidFile "{rundir}/httpd.pid"
{listens}
LoadModule mpm_event_module {moddir}/mod_mpm_event.so
LoadModule authn_core_module {moddir}/mod_authn_core.so
LoadModule authz_core_module {moddir}/mod_authz_core.so
LoadModule authz_user_module {moddir}/mod_authz_user.so
LoadModule auth_basic_module {moddir}/mod_auth_basic.so
LoadModule authn_file_module {moddir}/mod_authn_file.so
LoadModule authn_dbm_module {moddir}/mod_authn_dbm.so
LoadModule alias_module {moddir}/mod_alias.so
LoadModule mime_module {moddir}/mod_mime.so
LoadModule krenalis_auth_module {module}
LoadModule bench_floor_module {floor}
LoadModule http2_module {moddir}/mod_http2.so
# HTTP/2 cleartext with prior knowledge (h2load) beside HTTP/1.1 (wrk), on the same port.
Protocols h2c http/1.1
{user}
ErrorLog "{logs}/{name}-error.log"
LogLevel warn
TypesConfig /etc/mime.types
Timeout 30
KeepAlive On
MaxKeepAliveRequests 0
# The response is a 3-byte file: read it, do not map it. Mapping and unmapping it on every
# request costs more than the module and makes every thread of the child wait for the others'
# TLB shootdowns, which is noise here (a real backend is a proxy, not a file).
EnableMMAP Off
EnableSendfile Off
KeepAliveTimeout 30
# Two children with all their threads from the start: nothing is forked during a measurement.
StartServers 2
ServerLimit 2
ThreadLimit {threads}
ThreadsPerChild {threads}
MaxRequestWorkers {workers}
MinSpareThreads {threads}
MaxSpareThreads {workers}
MaxConnectionsPerChild 0
# No access log: it would cost every case the same and hide differences.

<Directory />
    AllowOverride None
    Require all denied
</Directory>
<Directory "{root}/htdocs">
    Require all granted
</Directory>
{vhosts}
"""

VHOST = """\
<VirtualHost 127.0.0.1:{port}>
    ServerName {host}
    KrenalisAuthKeyStore "{store}"
    # Every path is the same 3-byte file. GET serves it; POST too, after core's default handler
    # has read and discarded the request body (ap_discard_request_body).
    AliasMatch "^/" "{root}/htdocs/ping.txt"
    # KrenalisAuthMetrics On is the default: said here so that /v1/ and /nm/ (below) differ in
    # its value only. httpd makes a module's config for a section only where one of its
    # directives is, and merges it on every request there (~160 instructions, about what the
    # metrics cost): without this line /nm/ alone would pay that merge.
    <Location /v1/>
        AuthType Krenalis
        Require valid-user
        KrenalisAuthMetrics On
    </Location>
    # The module without its metrics (the cases *-nometrics): /v1/ with Off, a sibling place (one
    # inside /v1/ would cost a section merge more) with a path as long as /v1/'s (the route
    # table, the regexes and the location walk read the path).
    <Location /nm/>
        AuthType Krenalis
        Require valid-user
        KrenalisAuthMetrics Off
    </Location>
    # The floor (bench/floor.c): AuthType, Require and a constant-key compare, nothing else.
    <Location /floor/>
        AuthType BenchFloor
        BenchFloorKey "{floor_key}"
        Require valid-user
    </Location>
{extra}</VirtualHost>
"""

BASIC = """\
    <Location /basic-dbm/>
        AuthType Basic
        AuthName bench
        AuthBasicProvider dbm
        AuthDBMType default
        AuthDBMUserFile "{auth}/users.dbm"
        Require valid-user
    </Location>
    <Location /basic-file/>
        AuthType Basic
        AuthName bench
        AuthBasicProvider file
        AuthUserFile "{auth}/htpasswd"
        Require valid-user
    </Location>
"""


class Httpd:
    def __init__(self, bench, name, stores, basic_auth=None, floor_key="none"):
        threads = bench.args.server_threads
        self.bench = bench
        self.name = name
        # One port, a name-based virtual host per store (the Host header picks it): a paired
        # wrk run (one URL) can then compare cases of two stores.
        self.port = free_port()
        self.hosts = {s.size: "store-%s" % s.name for s in stores}
        self.rundir = bench.root / "run" / name
        self.rundir.mkdir(parents=True)
        self.conf = bench.root / "conf" / ("%s.conf" % name)
        self.proc = None
        vhosts = []
        for i, s in enumerate(stores):
            extra = BASIC.format(auth=basic_auth) if (basic_auth and i == 0) else ""
            vhosts.append(VHOST.format(port=self.port, host=self.hosts[s.size], store=s.dir,
                                       root=bench.root, extra=extra, floor_key=floor_key))
        user = "User www-data\nGroup www-data" if bench.is_root else ""
        self.conf.write_text(CONF.format(
            root=bench.root, rundir=self.rundir, moddir=MODDIR,
            listens="Listen 127.0.0.1:%d" % self.port,
            module=bench.bin / "mod_krenalis_auth.so", floor=bench.bin / "mod_bench_floor.so",
            user=user, logs=bench.root / "logs",
            name=name, threads=threads, workers=2 * threads, vhosts="\n".join(vhosts)))
        os.chmod(self.conf, 0o644)

    def start(self, wrap=(), single=False, timeout=20, pin=True):
        """Starts httpd: its two children, or with single one process (-X); wrap is a command
        that runs it (valgrind). With --pin (and pin), httpd runs on the first CPU only."""
        if pin and self.bench.pin:
            wrap = ["taskset", "-c", str(self.bench.pin[0])] + list(wrap)
        out = open(self.bench.root / "logs" / ("%s-stdout.log" % self.name), "ab")
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C"}
        mode = "-X" if single else "-DFOREGROUND"
        self.proc = subprocess.Popen(list(wrap) + [APACHE, "-f", str(self.conf), mode], env=env,
                                     preexec_fn=niced,
                                     stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        out.close()
        PROCS.append(self.proc)
        if not wait_port(self.port, self.proc, timeout):
            self.stop()
            die("httpd %s did not start:\n%s" % (self.name, self.log_tail()))
        if single:
            return self
        # Wait for both children to be up with all their threads.
        end = time.time() + 10
        while time.time() < end and len(self.children()) < 2:
            time.sleep(0.05)
        time.sleep(0.5)
        return self

    def log_tail(self):
        s = ""
        for f in ("%s-stdout.log" % self.name, "%s-error.log" % self.name):
            p = self.bench.root / "logs" / f
            if p.exists():
                s += p.read_text(errors="replace")[-3000:]
        return s

    def children(self):
        kids = []
        if self.proc is None:
            return kids
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open("/proc/%s/status" % d) as f:
                    st = f.read()
            except OSError:
                continue
            m = re.search(r"^PPid:\s+(\d+)", st, re.M)
            if m and int(m.group(1)) == self.proc.pid:
                kids.append(int(d))
        return kids

    def stop(self):
        stop_proc(self.proc)
        self.proc = None


def proc_status(pid):
    out = {}
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmHWM", "VmRSS", "RssAnon", "RssFile", "RssShmem"):
                    out[k] = int(v.split()[0])  # kB
    except OSError:
        pass
    return out


# ---------------------------------------------------------------------------------------------
# HTTP checks and wrk


def http_once(port, raw, timeout=30):
    """Sends one raw request (keep-alive) and returns (status, body)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(raw)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        n = int(m.group(1)) if m else 0
        while len(rest) < n:
            chunk = s.recv(65536)
            if not chunk:
                break
            rest += chunk
        return status, rest[:n]
    finally:
        s.close()


def cg_sum(incl, fns):
    """The inclusive instructions of fns summed; a tuple among fns counts its first function
    present in incl (see Bench.CG_ROWS)."""
    total = 0
    for f in fns:
        if isinstance(f, tuple):
            f = next((x for x in f if x in incl), None)
        total += incl.get(f, 0) if f else 0
    return total


def quartiles(rs):
    rs = sorted(rs)
    return ("quartiles %.3f–%.3f" % tuple(statistics.quantiles(rs, n=4)[::2])
            if len(rs) >= 4 else "range %.3f–%.3f" % (rs[0], rs[-1]))


class Pair:
    """Two cases compared in paired runs (case B against reference A): by wrk and rotate.lua
    (client "wrk", see wrk()), or by bench/pairload.c over HTTP/1.1 ("h1") or HTTP/2 ("h2"),
    which also times each case's requests (see pairload())."""

    def __init__(self, b, a, what, client="wrk"):
        if a.expect != b.expect or a.port != b.port:
            die("pair %s / %s: the cases differ in status or port" % (b.name, a.name))
        self.b, self.a, self.what, self.client = b, a, what, client
        self.name = "%s / %s" % (b.name, a.name)
        self.rounds = []          # results with r["paired"], one per round

    def ratios(self):
        return [r["paired"]["ratio"] for r in self.rounds]


class Case:
    def __init__(self, name, desc, port, reqs, expect, group="get", expect_body=None,
                 pair_only=False):
        self.name = name
        self.desc = desc
        self.port = port
        self.reqs = reqs          # list of raw requests (bytes)
        self.expect = expect      # HTTP status every response must have
        self.expect_body = expect_body
        self.group = group        # "get" or "post": which open case is its baseline
        self.pair_only = pair_only  # measured in its paired runs only (no runs of its own)
        self.file = None
        self.rounds = []          # wrk results (dicts), one per round


class H2Compare:
    """HTTP/2 cleartext with prior knowledge (h2load, one valid key, many streams per connection):
    "h2" (the module, /v1/), "h2-floor" (the floor) and "h2-open" (no authentication), all with
    the same Authorization header. h2load drives one case at a time, so a paired run is a
    sequence of short runs in the order open, floor, h2, h2, floor, open (each case's drift over
    the sequence cancels); each case's req/s is its requests over its time in that sequence."""

    CASES = (("h2-open", "/open/ping.txt"), ("h2-floor", "/floor/ping.txt"), ("h2", "/v1/ping.txt"))
    RE = re.compile(r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                    r"(\d+) failed, (\d+) errored, (\d+) timeout", re.M)
    RE_STATUS = re.compile(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", re.M)

    def __init__(self, bench, port, key):
        self.bench = bench
        self.port = port
        self.key = key
        self.rounds = []          # per round: {case: req/s}
        self.bad = 0

    def run(self, path, ms=None, n=None):
        a = self.bench.args
        cmd = self.bench.client_wrap() + [
            "h2load", "-t1", "-c%d" % a.h2_connections, "-m%d" % a.h2_streams,
            "-H", "authorization: Bearer " + self.key,
            "http://127.0.0.1:%d%s" % (self.port, path)]
        cmd[-1:-1] = ["-D", "%dms" % ms] if ms else ["-n", str(n)]
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             preexec_fn=niced)
        PROCS.append(p)
        t0 = time.monotonic()
        try:
            out, err = p.communicate(timeout=60)
        finally:
            stop_proc(p)
        wall = time.monotonic() - t0
        out = out.decode(errors="replace")
        m, st = self.RE.search(out), self.RE_STATUS.search(out)
        if p.returncode != 0 or not m or not st:
            die("h2load failed (exit %d):\n%s%s" % (p.returncode, out, err.decode(errors="replace")))
        done, ok = int(m.group(3)), int(st.group(1))
        return {"done": done, "ok": ok, "bad": done - ok + int(m.group(6)) + int(m.group(7)),
                "seconds": (ms / 1000.0) if ms else wall}

    def smoke(self):
        for name, path in self.CASES:
            r = self.run(path, n=20)
            if r["ok"] != 20:
                die("HTTP/2 case %s: %d of 20 requests answered 2xx" % (name, r["ok"]))

    def round(self):
        ms = self.bench.args.h2_slice
        n, t, first = {}, {}, {}
        seq = [c for c in self.CASES] + [c for c in self.CASES][::-1]
        for name, path in seq:
            r = self.run(path, ms=ms)
            self.bad += r["bad"]
            n[name] = n.get(name, 0) + r["ok"]
            t[name] = t.get(name, 0) + r["seconds"]
            if name in first:
                # The first and the last run of the round, of the same case: an A/A ratio
                # (the widest apart two runs of a round are).
                first[name + "-again"] = (r["ok"] / r["seconds"]) / first[name]
            else:
                first[name] = r["ok"] / r["seconds"]
        rps = {name: n[name] / t[name] for name in n}
        rps["aa"] = first["h2-open-again"]
        self.rounds.append(rps)
        return rps

    def ratios(self, b, a):
        return [r[b] / r[a] for r in self.rounds]


HZ = os.sysconf("SC_CLK_TCK")


def cpu_stat():
    """(user+nice+system+irq+softirq, steal) jiffies of the whole machine."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return v[0] + v[1] + v[2] + v[5] + v[6], v[7] if len(v) > 7 else 0


def own_cpu():
    """CPU seconds of this script and of its waited-for children (wrk once it exited)."""
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def all_proc_cpu():
    """utime+stime jiffies of every user-space process, by PID (kernel threads left out: the
    softirq work of the loopback traffic is the benchmark's own)."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit() or d == "2":
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if fields[1] == "2":
                continue
            out[int(d)] = int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return out


def wrk(bench, case, duration, srv=None, versus=None, swap=False):
    """One wrk run of a case. With srv, also httpd's CPU time per request, and the share of the
    machine's CPU time used by other processes (noise) or stolen by the hypervisor. With versus
    (a case of the same status), a paired run: the load alternates between versus and case in
    slices of --slice ms (rotate.lua), and r["paired"] holds each one's req/s and their ratio
    ("a": versus, "b": case). swap gives case the even slices instead of the odd ones."""
    cmd = bench.client_wrap() + ["wrk", "-t%d" % bench.args.threads, "-c%d" % bench.args.connections,
           "-d%ds" % duration, "--timeout", "10s", "-s", str(LUA),
           "http://127.0.0.1:%d/" % case.port, "--"]
    if versus:
        first, second = (case, versus) if swap else (versus, case)
        cmd += [str(first.file), str(second.file), str(bench.args.slice), str(bench.args.guard)]
    else:
        cmd += [str(case.file)]
    rc, out, err, m, usage = client_run(cmd, duration, srv)
    if rc != 0 or not m:
        die("wrk failed for %s (exit %d):\n%s%s" % (case.name, rc, out, err))
    r = json.loads(m.group(1))
    if r["requests"] == 0:
        die("case %s: no response at all (%s)%s" % (case.name, json.dumps(r["errors"]),
                                                  ":\n" + srv.log_tail() if srv else ""))
    r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
    if versus:
        pr = r.get("paired") or {}
        if swap and pr:
            pr["a"], pr["b"], pr["a_ms"], pr["b_ms"] = pr["b"], pr["a"], pr["b_ms"], pr["a_ms"]
        if not pr.get("a") or not pr.get("b"):
            die("paired run %s / %s: nothing counted (%s)" % (case.name, versus.name, out))
        pr["a_rps"] = pr["a"] / (pr["a_ms"] / 1000)
        pr["b_rps"] = pr["b"] / (pr["b_ms"] / 1000)
        pr["ratio"] = pr["b_rps"] / pr["a_rps"]
    # Every response of a case must have the expected status: wrk counts non-2xx/3xx ones.
    bad_status = r["errors"]["status"] if case.expect < 400 else r["requests"] - r["errors"]["status"]
    sock = sum(r["errors"][k] for k in ("connect", "read", "write", "timeout"))
    r["bad_status"] = bad_status
    r["sock_errors"] = sock
    r["bad"] = bad_status + sock
    usage_into(r, usage)
    return r


def client_run(cmd, duration, srv):
    """Runs a load generator that prints one "BENCH {json}" line: its exit status, output,
    errors, the line's match and what the run cost whom (usage_into)."""
    if srv and srv.proc.poll() is not None:
        die("httpd exited (status %s):\n%s" % (srv.proc.returncode, srv.log_tail()))
    httpd = set([srv.proc.pid] + srv.children()) if srv else set()
    c0 = all_proc_cpu() if srv else {}
    busy0, steal0 = cpu_stat()
    own0 = own_cpu()
    t0 = time.time()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=niced)
    PROCS.append(p)
    try:
        out, err = p.communicate(timeout=duration + 60)
    finally:
        stop_proc(p)
    c1 = all_proc_cpu() if srv else {}
    busy1, steal1 = cpu_stat()
    own1 = own_cpu()
    wall = time.time() - t0
    out = out.decode(errors="replace")
    usage = None
    if srv:
        capacity = wall * (os.cpu_count() or 1) * HZ
        mine = httpd | {os.getpid()}
        # Other processes: those seen before and after (by PID), and whatever else the
        # machine's busy time holds beyond httpd, the client and this script (processes that
        # came and went).
        by_pid = sum(v - c0.get(pid, 0) for pid, v in c1.items() if pid not in mine)
        httpd_cpu = sum(c1.get(pid, 0) - c0.get(pid, 0) for pid in httpd)
        unaccounted = (busy1 - busy0) - httpd_cpu - (own1 - own0) * HZ
        usage = {"foreign": max(by_pid, unaccounted) / capacity,
                 "steal": (steal1 - steal0) / capacity, "httpd_jiffies": httpd_cpu}
    return (p.returncode, out, err.decode(errors="replace"),
            re.search(r"^BENCH (\{.*\})$", out, re.M), usage)


def usage_into(r, usage):
    """r["foreign"], r["steal"] (shares of the machine's CPU time) and r["httpd_cpu_us"] (per
    request), zero without a server to watch."""
    r["foreign"] = usage["foreign"] if usage else 0.0
    r["steal"] = usage["steal"] if usage else 0.0
    r["httpd_cpu_us"] = (usage["httpd_jiffies"] / HZ * 1e6 / max(1, r["requests"])
                         if usage else 0.0)


def pairload(bench, pair, duration, srv=None, swap=False):
    """A paired run of pair by bench/pairload.c: over HTTP/2 (h2c, --h2-connections x
    --h2-streams, slices of --h2-pair-slice ms) for an "h2" pair, else over HTTP/1.1 like wrk's
    (--connections, --slice). The result has wrk()'s fields; r["paired"] adds each case's
    latencies (a_p50_us, b_p50_us, a_mean_us, b_mean_us)."""
    a = bench.args
    h2 = pair.client == "h2"
    first, second = (pair.b, pair.a) if swap else (pair.a, pair.b)
    cmd = bench.client_wrap() + [str(bench.bin / "pairload")]
    if h2:
        cmd += ["-2", "-c", str(a.h2_connections), "-m", str(a.h2_streams),
                "-s", str(a.h2_pair_slice), "-g", str(a.h2_pair_guard)]
    else:
        cmd += ["-c", str(a.connections), "-s", str(a.slice), "-g", str(a.guard)]
    cmd += ["-d", str(duration), "127.0.0.1", str(pair.b.port), str(first.file),
            str(second.file)]
    rc, out, err, m, usage = client_run(cmd, duration, srv)
    if rc != 0 or not m:
        die("pairload failed for %s (exit %d):\n%s%s" % (pair.name, rc, out, err))
    j = json.loads(m.group(1))
    ca, cb = (j["b"], j["a"]) if swap else (j["a"], j["b"])
    if not ca["counted"] or not cb["counted"]:
        die("paired run %s: nothing counted (%s)" % (pair.name, out))
    r = {"requests": j["requests"], "errors": j["errors"], "duration_us": j["seconds"] * 1e6}
    r["rps"] = r["requests"] / j["seconds"]
    pr = {"a": ca["counted"], "b": cb["counted"], "a_ms": ca["ms"], "b_ms": cb["ms"],
          "a_rps": ca["req_per_s"], "b_rps": cb["req_per_s"]}
    for k in ("p50_us", "p90_us", "p99_us", "mean_us"):
        pr["a_" + k], pr["b_" + k] = ca[k], cb[k]
    pr["ratio"] = pr["b_rps"] / pr["a_rps"]
    r["paired"] = pr
    ok = "2xx" if pair.b.expect < 300 else "4xx"
    r["bad_status"] = sum(c["requests"] - c["status"][ok] for c in (ca, cb))
    r["sock_errors"] = sum(j["errors"].values())
    r["bad"] = r["bad_status"] + r["sock_errors"]
    usage_into(r, usage)
    return r


def paired_run(bench, pair, duration, srv, swap):
    """One paired run of pair, by its client."""
    if pair.client == "wrk":
        return wrk(bench, pair.b, duration, srv, versus=pair.a, swap=swap)
    return pairload(bench, pair, duration, srv, swap)


# ---------------------------------------------------------------------------------------------
# The run


class Bench:
    def __init__(self, args):
        self.args = args
        self.is_root = os.geteuid() == 0
        self.root = Path(tempfile.mkdtemp(prefix="krenalis-bench-", dir="/tmp"))
        os.chmod(self.root, 0o755)
        for d, mode in (("bin", 0o755), ("stores", 0o755), ("tokens", 0o700), ("htdocs", 0o755), ("conf", 0o755),
                        ("logs", 0o755), ("run", 0o755), ("reqs", 0o700)):
            (self.root / d).mkdir()
            os.chmod(self.root / d, mode)
        self.bin = self.root / "bin"
        (self.root / "htdocs" / "ping.txt").write_text("ok\n")
        os.chmod(self.root / "htdocs" / "ping.txt", 0o644)
        self.rng = random.Random(args.seed)
        self.stores = []
        self.cases = []
        self.pairs = []
        self.memory = []
        self.micro = []
        self.instr = {}           # case name -> {row label: instructions per request}
        self.instr_fn = {}        # case name -> {function: inclusive instructions per request}
        self.instr_note = None
        self.machine = {}
        self.load_before = os.getloadavg()
        # --pin: httpd on the first CPU, the load generators on the second, so that a ratio of
        # throughputs is a ratio of the server's own CPU cost (client and server sharing both
        # CPUs dilute every server-side cost by about half).
        cpus = sorted(os.sched_getaffinity(0))
        self.pin = cpus[:2] if args.pin and len(cpus) >= 2 else None
        self.floor_key = None
        self.h2 = None            # the HTTP/2 comparison (H2Compare), when h2load is there
        self.dropped_rounds = 0
        self.noisy_rounds = 0
        self.waited = 0

    def client_wrap(self):
        """The prefix that runs a load generator on its CPU (--pin)."""
        return ["taskset", "-c", str(self.pin[1])] if self.pin else []

    # -- preparation -----------------------------------------------------------------------

    def check_tools(self):
        build = Path(self.args.build)
        for f in (build / "mod_krenalis_auth.so", build / "krenalis-keys", build / "decide_bench",
                  build / "mod_bench_floor.so", build / "pairload"):
            if not f.exists():
                die("%s is missing: run `make bench` (or make all build/decide_bench "
                    "build/mod_bench_floor.so build/pairload)" % f)
            # A private copy: a rebuild of build/ during the run (make cp's over the file in
            # place) would otherwise change the code under the running httpd.
            shutil.copy2(f, self.bin / f.name)
            os.chmod(self.bin / f.name, 0o755)
        for t in ("wrk", "htpasswd", "htdbm", "httxt2dbm", "mdb_stat", APACHE):
            if shutil.which(t) is None and not os.path.exists(t):
                die("%s is not installed (wrk, apache2-utils, lmdb-utils, apache2)" % t)
        if self.pin and shutil.which("taskset") is None:
            die("taskset is not installed (util-linux); or run with --no-pin")

    def describe_machine(self):
        m = self.machine
        m["nproc"] = os.cpu_count()
        model = "?"
        mhz = None
        try:
            with open("/proc/cpuinfo") as f:
                for line in f:
                    if line.startswith("model name") and model == "?":
                        model = line.split(":", 1)[1].strip()
                    if line.startswith("cpu MHz") and mhz is None:
                        mhz = line.split(":", 1)[1].strip()
        except OSError:
            pass
        m["cpu"] = model + (" @ %s MHz" % mhz if mhz else "")
        try:
            with open("/proc/meminfo") as f:
                m["mem"] = "%.1f GiB" % (int(f.readline().split()[1]) / 1048576)
        except OSError:
            m["mem"] = "?"
        m["kernel"] = "%s %s" % (platform.system(), platform.release())
        virt = []
        try:
            with open("/proc/cpuinfo") as f:
                if re.search(r"^flags\s*:.*\bhypervisor\b", f.read(), re.M):
                    virt.append("virtual machine (hypervisor CPU flag)")
        except OSError:
            pass
        if shutil.which("systemd-detect-virt"):
            v = subprocess.run(["systemd-detect-virt"], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL).stdout.decode().strip()
            if v and v != "none":
                virt.append("systemd-detect-virt: %s" % v)
        m["virt"] = ", ".join(virt) or "none detected"
        v = subprocess.run([APACHE, "-v"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           env={"PATH": "/usr/sbin:/usr/bin:/bin"}).stdout.decode()
        mm = re.search(r"Server version:\s*(.*)", v)
        m["httpd"] = mm.group(1).strip() if mm else "?"
        w = subprocess.run(["wrk", "-v"], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT).stdout.decode()
        m["wrk"] = w.splitlines()[0].strip() if w else "?"
        try:
            m["os"] = [l.split("=", 1)[1].strip().strip('"') for l in
                       open("/etc/os-release") if l.startswith("PRETTY_NAME=")][0]
        except (OSError, IndexError):
            m["os"] = "?"
        g = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        m["commit"] = g.stdout.decode().strip() or "?"

    def build_stores(self):
        owner = "www-data:www-data" if self.is_root else None
        for size in self.args.sizes:
            s = Store(self, size)
            log("building the %s-key store (%d API keys, %d restricted, %d write keys)" %
                (s.name, s.n_api, s.n_restricted, s.n_wk))
            s.build(owner)
            log("  %s store: %.1f s, %.0f MiB; pages in use %.0f bytes a key (keys: %.0f), "
                "data file %.2f x the pages in use" %
                (s.name, s.build_s, s.bytes / 1048576, s.stat["in_use_per_key"],
                 s.stat["keys_db_per_key"], s.stat["file"] / (s.stat["pages_in_use"] *
                                                              s.stat["psize"])))
            self.stores.append(s)

    def store(self, size):
        return [s for s in self.stores if s.size == size][0]

    # -- cases -----------------------------------------------------------------------------

    def define_cases(self, srv, auth_pw):
        rng = self.rng
        n = self.args.rotate
        nb = self.args.rotate_body
        prim = self.store(self.args.primary)
        port = srv.port
        host = srv.hosts[prim.size]
        api = prim.sample("api", n, rng)
        restricted = prim.sample("restricted", n, rng)
        wk = prim.sample("wk", max(n, nb), rng)
        unknown = [unknown_api_token(rng) for _ in range(n)]
        malformed = [malformed_api_token(t) for t in api]
        plain = [sdk_batch(rng) for _ in range(16)]
        ctype = ("Content-Type", "text/plain")

        def bearer(t):
            return ("Authorization", "Bearer " + t)

        def get(path, toks, h=host, extra=()):
            return [raw_request("GET", path, h, [bearer(t)] + list(extra)) for t in toks]

        def post_hdr(path, toks):
            return [raw_request("POST", path, host, [ctype, bearer(t)], plain[i % len(plain)])
                    for i, t in enumerate(toks)]

        C = self.cases
        C.append(Case("open", "no auth: GET of the static file (same Authorization header as "
                      "\"api-spread\", unread)", port, get("/open/ping.txt", api), 200))
        # "api": the issue's case, a valid key (a client sends its own key on every request).
        # "api-spread": every request another key, so another leaf of the B-tree: the store's
        # cache and TLB misses, the worst case for a large store.
        C.append(Case("api", "valid unrestricted API key (one key), %s store" % prim.name, port,
                      get("/v1/ping.txt", [self.floor_key]), 200))
        # The floor: the same one key, to a location of the do-nothing Bearer module.
        C.append(Case("floor", "the floor: do-nothing Bearer module (bench/floor.c: AuthType, "
                      "Require valid-user, constant-key compare), the same one key", port,
                      get("/floor/ping.txt", [self.floor_key]), 200))
        for s in self.stores:
            if s is prim:
                continue
            C.append(Case("api-%s" % s.name, "valid unrestricted API key (one key), %s store" %
                          s.name, port,
                          get("/v1/ping.txt", s.sample("api", 1, rng), h=srv.hosts[s.size]), 200))
        C.append(Case("api-spread", "valid unrestricted API keys, %d different keys in turn, "
                      "%s store" % (n, prim.name), port, get("/v1/ping.txt", api), 200))
        # The same two without the metrics (KrenalisAuthMetrics Off, /nm/): what counting costs.
        # Measured against "api" and "api-spread" in paired runs only: runs of their own would
        # say nothing those two do not, and would take the pairs' time.
        C.append(Case("api-nometrics", "\"api\" where KrenalisAuthMetrics is Off (the same one "
                      "key)", port, get("/nm/ping.txt", [self.floor_key]), 200,
                      pair_only=True))
        C.append(Case("api-spread-nometrics", "\"api-spread\" where KrenalisAuthMetrics is Off "
                      "(the same %d keys in turn)" % n, port, get("/nm/ping.txt", api), 200,
                      pair_only=True))
        for s in self.stores:
            if s is prim:
                continue
            toks = s.sample("api", min(n, s.n_api), rng)
            C.append(Case("api-spread-%s" % s.name, "valid unrestricted API keys, %d different "
                          "keys in turn, %s store" % (len(toks), s.name), port,
                          get("/v1/ping.txt", toks, h=srv.hosts[s.size]), 200))
        # More keys than the look-up cache holds (docs/operations.md): most requests read the
        # store, as api-spread did before the cache. Informative.
        wide = prim.sample("api", min(WIDE_KEYS, prim.n_api), rng)
        C.append(Case("api-wide", "valid unrestricted API keys, %d different keys in turn (more "
                      "than the look-up cache holds: most read the store), %s store" %
                      (len(wide), prim.name), port, get("/v1/ping.txt", wide), 200))
        C.append(Case("api-ws", "valid unrestricted API keys in turn + Krenalis-Workspace header",
                      port, get("/v1/ping.txt", api, extra=[("Krenalis-Workspace", prim.ws)]),
                      200))
        C.append(Case("api-restricted", "valid API keys restricted to their workspace, in turn",
                      port, get("/v1/ping.txt", restricted), 200))
        C.append(Case("open-again", "the \"open\" case again: the measurement's own spread "
                      "(A/A)", port, get("/open/ping.txt", api), 200))
        C.append(Case("malformed", "API key with a CRC mismatch (401, no store read)", port,
                      get("/v1/ping.txt", malformed), 401,
                      expect_body=b"API key in the Authorization header of the request is "
                                  b"malformed"))
        C.append(Case("unknown", "well-formed API key not in the store (401)", port,
                      get("/v1/ping.txt", unknown), 401,
                      expect_body=b"API key in the Authorization header of the request does "
                                  b"not exist"))
        C.append(Case("open-post", "no auth: POST of a 2 KiB batch, body discarded", port,
                      post_hdr("/open/events", wk[:nb]), 200, group="post"))
        C.append(Case("wk-header", "event write key in Authorization, POST /v1/events, "
                      "2 KiB batch", port, post_hdr("/v1/events", wk[:nb]), 200, group="post"))
        C.append(Case("wk-body", "event write key in the 2 KiB batch body (\"writeKey\"), "
                      "POST /v1/events", port,
                      [raw_request("POST", "/v1/events", host, [ctype], sdk_batch(rng, t))
                       for t in wk[:nb]], 200, group="post"))
        # As browsers send events: a new connection per request (Connection: close; wrk
        # connects again after each response).
        close = ("Connection", "close")
        C.append(Case("open-fresh", "no auth: POST of a 2 KiB batch, a new connection per "
                      "request", port,
                      [raw_request("POST", "/open/events", host, [ctype, close],
                                   plain[i % len(plain)]) for i in range(nb)], 200,
                      group="fresh"))
        C.append(Case("wk-body-fresh", "event write key in the 2 KiB batch body, a new "
                      "connection per request", port,
                      [raw_request("POST", "/v1/events", host, [ctype, close], sdk_batch(rng, t))
                       for t in wk[:nb]], 200, group="fresh"))
        users_dbm = [rng.randrange(self.args.basic_users_dbm) for _ in range(min(n, 5000))]
        users_file = [rng.randrange(self.args.basic_users_file) for _ in range(1000)]
        C.append(Case("basic-dbm", "mod_auth_basic + mod_authn_dbm, {SHA} hashes, %s users" %
                      human(self.args.basic_users_dbm), port,
                      [raw_request("GET", "/basic-dbm/ping.txt", host,
                                   [("Authorization", basic("user%d" % u, auth_pw))])
                       for u in users_dbm], 200))
        C.append(Case("basic-bcrypt", "mod_auth_basic + mod_authn_file, bcrypt (cost %s), %s "
                      "users" % (self.bcrypt_cost, human(self.args.basic_users_file)), port,
                      [raw_request("GET", "/basic-file/ping.txt", host,
                                   [("Authorization", basic("user%d" % u, auth_pw))])
                       for u in users_file], 200))
        # HTTP/2 (paired runs by pairload -2 only): one valid key in every request, the same
        # header to every location, as h2load sends it (with HPACK a header that changes from
        # request to request costs the server more than a repeated one: "open" rotates keys).
        if self.args.h2:
            one = [self.floor_key]
            C.append(Case("h2-open", "no auth over HTTP/2, the one key's header (unread)", port,
                          get("/open/ping.txt", one), 200, pair_only=True))
            C.append(Case("h2-open-again", "\"h2-open\" again (A/A over HTTP/2)", port,
                          get("/open/ping.txt", one), 200, pair_only=True))
            C.append(Case("h2-floor", "the floor over HTTP/2, the one key", port,
                          get("/floor/ping.txt", one), 200, pair_only=True))
            C.append(Case("h2", "valid API key (one key) over HTTP/2, %s store" % prim.name, port,
                          get("/v1/ping.txt", one), 200, pair_only=True))
        if self.args.cases:
            keep = set(self.args.cases.split(",")) | {"open", "open-post", "open-again", "floor",
                                                      "h2-open", "h2-open-again", "h2-floor", "h2"}
            self.cases[:] = [c for c in self.cases if c.name in keep]
        self.define_pairs(prim)
        for c in self.cases:
            c.file = self.root / "reqs" / ("%s.bin" % c.name)
            with open(c.file, "wb") as f:
                for r in c.reqs:
                    f.write(r)
                    f.write(b"\0")

    def define_pairs(self, prim):
        """The comparisons the throughput targets decide, each measured in paired runs."""
        want = [("open-again", "open", "open against itself (A/A): the resolution of a "
                 "paired run"),
                ("floor", "open", "the floor (do-nothing Bearer module) against no "
                 "authentication: Apache's own cost of an authenticated location"),
                ("api", "floor", "valid API key (one key, the connection memo answers), %s "
                 "store, against the floor" % prim.name),
                ("api-spread", "floor", "every request the next of %d valid keys (memo "
                 "misses), %s store, against the floor" % (self.args.rotate, prim.name)),
                ("api", "api-nometrics", "the module with its metrics against the same where "
                 "KrenalisAuthMetrics is Off: one valid key (memo), %s store" % prim.name),
                ("api-spread", "api-spread-nometrics", "the same for %d valid keys in turn "
                 "(memo misses), %s store" % (self.args.rotate, prim.name))]
        for s in self.stores:
            if s.size < prim.size:
                want.append(("api-spread-%s" % s.name, "floor", "the same on the %s store, "
                             "against the floor" % s.name))
                want.append(("api-spread", "api-spread-%s" % s.name, "memo misses, %s store "
                             "against %s store" % (prim.name, s.name)))
            elif s.size > prim.size:
                want.append(("api-spread-%s" % s.name, "api-spread", "memo misses, %s store "
                             "against %s store" % (s.name, prim.name)))
        want += [("wk-body", "wk-header", "write key in the 2 KiB body against the same in "
                  "Authorization"),
                 ("wk-body-fresh", "open-fresh", "write key in the 2 KiB body, a new "
                  "connection per request, against no authentication the same way"),
                 ("malformed", "unknown", "malformed API key against a well-formed unknown "
                  "one, both 401")]
        # By pairload, which also times each case's requests: the latency target over HTTP/1.1,
        # and the HTTP/2 comparisons (h2load drives one case per run and cannot alternate).
        want += [("api", "open", "valid API key (one key, memo), %s store, against no "
                  "authentication, by pairload over HTTP/1.1: the latency target" % prim.name,
                  "h1"),
                 ("h2-open-again", "h2-open", "no authentication over HTTP/2 against itself "
                  "(A/A over HTTP/2)", "h2"),
                 ("h2", "h2-floor", "valid API key (one key) against the floor over HTTP/2",
                  "h2")]
        for w in want:
            cb, ca = self.case(w[0]), self.case(w[1])
            if cb and ca:
                self.pairs.append(Pair(cb, ca, w[2], *w[3:]))

    def pair(self, b, a):
        for p in self.pairs:
            if p.b.name == b and p.a.name == a:
                return p
        return None

    def smoke(self):
        """Each case's first requests get the status the case expects."""
        for c in self.cases:
            for raw in c.reqs[:3]:
                status, body = http_once(c.port, raw)
                if status != c.expect or (c.expect_body and c.expect_body not in body):
                    die("case %s: expected %d, got %d: %r" % (c.name, c.expect, status,
                                                              body[:300]))

    # -- measurements ----------------------------------------------------------------------

    def measure(self, http=True):
        stores = [self.store(self.args.primary)] + [s for s in self.stores
                                                     if s.size != self.args.primary]
        self.auth_dir, auth_pw, self.bcrypt_cost = make_password_files(
            self.root, self.args.basic_users_dbm, self.args.basic_users_file, self.rng)
        # The one key of "api" and "floor": the floor's configuration names it.
        self.floor_key = stores[0].sample("api", 1, self.rng)[0]
        srv = Httpd(self, "main", stores, basic_auth=self.auth_dir,
                    floor_key=self.floor_key).start()
        try:
            self.define_cases(srv, auth_pw)
            self.smoke()
            if shutil.which("h2load") and self.args.h2:
                self.h2 = H2Compare(self, srv.port, self.floor_key)
                self.h2.smoke()
            if not http:
                return
            own = [c for c in self.cases if not c.pair_only]
            log("warm-up: %d cases x %ss" % (len(own), self.args.warmup))
            for c in own:
                wrk(self, c, self.args.warmup)
            done = 0
            # The longest round so far of each kind: with the cases' own runs (True), or the
            # paired runs alone (False), which take less than half as long.
            kind_time = {}

            def est(i):
                own_runs = i < self.args.case_rounds
                return kind_time.get(own_runs) or (
                    (len(own) * (self.args.duration + 0.5) if own_runs else 0) +
                    len(self.pairs) * (self.args.pair_duration + 0.5) +
                    (6 * self.args.h2_slice / 1000 + 1 if self.h2 and own_runs else 0))

            def rest(i):
                """The time rounds i to the last take."""
                return sum(est(j) for j in range(i, self.args.rounds))

            while done < self.args.rounds:
                slack = self.time_left() - rest(done) - self.tail_time()
                self.wait_quiet(srv, slack - 5)
                t = time.time()
                own_runs = done < self.args.case_rounds
                # Counterbalanced: the list order in odd rounds, reversed in even ones. A case
                # stays next to its neighbours (api right after or right before open: the
                # machine drifts less between neighbours), and the drift over a round, which
                # favours early cases in one direction, favours late ones in the other.
                order = [i for i, c in enumerate(self.cases) if not c.pair_only]
                if done % 2:
                    order.reverse()
                # The cases' own runs (informative: the targets are decided in the paired runs)
                # in the first --case-rounds rounds only.
                res = [None] * len(self.cases)
                if not own_runs:
                    order = []
                for i in order:
                    res[i] = wrk(self, self.cases[i], self.args.duration, srv)
                # api-wide (more keys than the look-up cache holds) has just evicted most of
                # the 20 000 keys of api-spread, which shares its store's table: one pass of
                # those keys, not counted, puts the paired runs back in their steady state.
                wide, spread = self.case("api-wide"), self.case("api-spread")
                if order and wide is not None and spread is not None:
                    wrk(self, spread, self.args.warmup, srv)
                # Then the paired runs, in the same alternating order; the two cases of a pair
                # trade slices (even, odd) from one round to the next, so that nothing tied to
                # the clock's phase favours one of them.
                pres = [None] * len(self.pairs)
                for i in range(len(self.pairs))[::-1 if done % 2 else 1]:
                    p = self.pairs[i]
                    pres[i] = paired_run(self, p, self.args.pair_duration, srv,
                                         swap=bool(done % 2))
                # h2load's own runs: a cross-check of the HTTP/2 pairs, in the cases' rounds.
                h2 = self.h2.round() if self.h2 and own_runs else None
                kind_time[own_runs] = max(kind_time.get(own_runs) or 0, time.time() - t)
                measured = [r for r in res + pres if r is not None]
                noise = max(r["foreign"] + r["steal"] for r in measured)
                log("round %d/%d: %s  [other processes + steal: up to %.0f%% of the CPUs]" % (
                    done + 1, self.args.rounds, "  ".join(
                        "%s %.0f" % (c.name, r["rps"]) for c, r in zip(self.cases, res)
                        if r is not None), 100 * noise))
                log("  paired: %s" % "  ".join("%s %.3f" % (p.name, r["paired"]["ratio"])
                                               for p, r in zip(self.pairs, pres)))
                if h2:
                    log("  h2: %s" % "  ".join("%s %.3f" % kv if kv[0] == "aa" else "%s %.0f" % kv
                                           for kv in h2.items()))
                for c, r in list(zip(self.cases, res)) + [(p, r) for p, r in
                                                           zip(self.pairs, pres)]:
                    if r is not None and r["bad"]:
                        log("  %s: %d unexpected responses or socket errors: %s" %
                            (c.name, r["bad"], json.dumps(r["errors"])))
                if noise > self.args.noise_limit:
                    # Running it again: this round and the ones after it still to run.
                    spare = self.time_left() - rest(done) - self.tail_time()
                    if spare > 0:
                        self.dropped_rounds += 1
                        if h2:
                            self.h2.rounds.pop()
                        log("  round dropped: other processes used the CPUs; running it again")
                        continue
                    self.noisy_rounds += 1
                    log("  kept although noisy: no time left to run it again")
                for c, r in zip(self.cases, res):
                    if r is not None:
                        c.rounds.append(r)
                for p, r in zip(self.pairs, pres):
                    p.rounds.append(r)
                done += 1
            self.error_log_lines = self.count_error_log("main")
        finally:
            srv.stop()

    def time_left(self):
        return self.args.time_budget - (time.time() - T0)

    def tail_time(self):
        """What the memory and decision measurements after the HTTP rounds take (estimate)."""
        return len(self.stores) * (self.args.mem_duration + 2 + 4 + 15) + \
            len(self.args.instr_cases.split(",")) * (self.args.instr_duration + 4)

    def foreign_cpu(self, mine, seconds=1.0):
        """Share of the CPUs used by other processes during `seconds` (see wrk())."""
        c0, b0, o0 = all_proc_cpu(), cpu_stat()[0], own_cpu()
        time.sleep(seconds)
        c1, b1, o1 = all_proc_cpu(), cpu_stat()[0], own_cpu()
        by_pid = sum(v - c0.get(pid, 0) for pid, v in c1.items() if pid not in mine)
        unaccounted = (b1 - b0) - sum(c1.get(pid, 0) - c0.get(pid, 0) for pid in mine
                                      if pid != os.getpid()) - (o1 - o0) * HZ
        return max(by_pid, unaccounted) / ((os.cpu_count() or 1) * HZ * seconds)

    def wait_quiet(self, srv, max_wait):
        """Waits, at most max_wait seconds, while other processes keep the CPUs busy."""
        end = time.time() + max(0, max_wait)
        while True:
            busy = self.foreign_cpu(set([os.getpid(), srv.proc.pid] + srv.children()))
            if busy <= self.args.noise_limit or time.time() + 5 > end:
                return
            log("other processes use %.0f%% of the CPUs: waiting (up to %.0f s more)" %
                (100 * busy, end - time.time()))
            time.sleep(4)
            self.waited += 5

    def count_error_log(self, name):
        p = self.root / "logs" / ("%s-error.log" % name)
        if not p.exists():
            return []
        return [l for l in p.read_text(errors="replace").splitlines()
                if "exit signal" in l or
                ("[mpm_event:notice]" not in l and "[core:notice]" not in l)]

    def measure_memory(self):
        """httpd with one store at a time: peak memory of its children after load."""
        for s in self.stores:
            srv = Httpd(self, "mem-%s" % s.name, [s]).start()
            try:
                port, host = srv.port, srv.hosts[s.size]
                kids = srv.children()
                before = {k: proc_status(k) for k in kids}
                toks = s.sample("api", self.args.rotate_mem, self.rng)
                c = Case("mem-api-%s" % s.name, "", port,
                         [raw_request("GET", "/v1/ping.txt", host,
                                      [("Authorization", "Bearer " + t)]) for t in toks], 200)
                wk = s.sample("wk", min(self.args.rotate_body, s.n_wk), self.rng)
                cb = Case("mem-wkbody-%s" % s.name, "", port,
                          [raw_request("POST", "/v1/events", host,
                                       [("Content-Type", "text/plain")], sdk_batch(self.rng, t))
                           for t in wk], 200)
                peak = {k: {} for k in kids}
                for case, dur in ((c, self.args.mem_duration), (cb, 2)):
                    case.file = self.root / "reqs" / ("%s.bin" % case.name)
                    with open(case.file, "wb") as f:
                        for r in case.reqs:
                            f.write(r + b"\0")
                    p = subprocess.Popen(
                        self.client_wrap() + ["wrk", "-t%d" % self.args.threads,
                         "-c%d" % self.args.connections, "-d%ds" % dur, "--timeout", "10s", "-s", str(LUA),
                         "http://127.0.0.1:%d/" % port, "--", str(case.file)],
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                    PROCS.append(p)
                    while p.poll() is None:
                        for k in kids:
                            st = proc_status(k)
                            for key, v in st.items():
                                peak[k][key] = max(peak[k].get(key, 0), v)
                        time.sleep(0.1)
                    out = p.stdout.read().decode(errors="replace")
                    PROCS.remove(p)
                    m = re.search(r"^BENCH (\{.*\})$", out, re.M)
                    if not m or json.loads(m.group(1))["errors"]["status"]:
                        die("memory load on the %s store failed:\n%s" % (s.name, out))
                after = {k: proc_status(k) for k in kids}
                self.memory.append({
                    "store": s, "children": len(kids),
                    "hwm": max(after[k].get("VmHWM", 0) for k in kids),
                    "rss": max(after[k].get("VmRSS", 0) for k in kids),
                    "anon_before": max(before[k].get("RssAnon", 0) for k in kids),
                    "anon_peak": max(peak[k].get("RssAnon", 0) for k in kids),
                    "file_peak": max(peak[k].get("RssFile", 0) for k in kids),
                    "requests": len(toks)})
                log("memory, %s store: VmHWM %d kB, peak RssAnon %d kB, peak RssFile %d kB" %
                    (s.name, self.memory[-1]["hwm"], self.memory[-1]["anon_peak"],
                     self.memory[-1]["file_peak"]))
            finally:
                srv.stop()

    def micro_bench(self):
        tmpl = self.root / "body-template.json"
        tmpl.write_bytes(sdk_batch(self.rng, "@" * 32))
        for s in self.stores:
            cmd = [self.bin / "decide_bench", "--store", s.dir, "--api", s.api,
                   "--restricted", s.restricted, "--wk", s.wk, "--workspace", s.ws,
                   "--body", tmpl, "--sample", self.args.micro_sample,
                   "--iters", self.args.micro_iters, "--reps", 5]
            best = None
            for attempt in range(3):
                c0, b0, o0 = all_proc_cpu(), cpu_stat()[0], own_cpu()
                t0 = time.time()
                out = run(cmd, timeout=1800, preexec_fn=niced)
                c1, b1, o1 = all_proc_cpu(), cpu_stat()[0], own_cpu()
                capacity = (os.cpu_count() or 1) * HZ * (time.time() - t0)
                # Other processes: by PID, or the machine's busy time beyond decide_bench
                # (a waited-for child now) and this script.
                by_pid = sum(v - c0.get(pid, 0) for pid, v in c1.items() if pid != os.getpid())
                noise = max(by_pid, (b1 - b0) - (o1 - o0) * HZ) / capacity
                r = json.loads(out.strip().splitlines()[-1])
                r["noise"] = noise
                if best is None or noise < best["noise"]:
                    best = r
                if noise <= self.args.noise_limit or self.time_left() < 60:
                    break
                log("decision alone, %s store: other processes used %.0f%% of the CPUs; "
                    "again" % (s.name, 100 * noise))
            r = best
            r["size"] = s.size
            r["name"] = s.name
            self.micro.append(r)
            log("decision alone, %s store: valid %.0f ns, unknown %.0f ns, malformed %.0f ns" %
                (s.name, r["api_ns"], r["unknown_ns"], r["malformed_ns"]))

    # Inclusive instructions per request read from callgrind: (label, functions summed). A
    # tuple among the functions names alternatives: the first one present counts (decide_once
    # calls ka_store_decide, which builds before the split lack; adding both counted it twice).
    CG_ROWS = (("whole request (read + process)", ("ap_read_request", "ap_process_async_request")),
               ("of which ap_process_request_internal", ("ap_process_request_internal",)),
               ("of which check_user hooks", ("ap_run_check_user_id",)),
               ("of which ka_check_user", ("ka_check_user",)),
               ("of which ka_store_decide (memo, transaction, decision)",
                (("ka_store_decide", "decide_once"),)),
               ("of which ka_decide (the decision)", ("ka_decide",)),
               ("of which ka_api_body_parse (base-62, CRC)", ("ka_api_body_parse",)),
               ("of which ka_hmac (HMAC-SHA-256)", ("ka_hmac",)),
               ("of which mdb_get (key and organization)", ("mdb_get",)),
               ("of which floor_check_user (the floor)", ("floor_check_user",)),
               ("of which fixups hooks", ("ap_run_fixups",)),
               ("of which ka_fixups", ("ka_fixups",)),
               ("of which location walk", ("ap_location_walk",)))

    def count_instructions(self):
        """The --instr-cases in one httpd process (-X) under callgrind: user-space instructions
        per request, a figure this machine's changing speed does not move. The HTTP/2 cases
        (h2, h2-floor, h2-open) are driven by h2load."""
        if not (shutil.which("valgrind") and shutil.which("callgrind_annotate")):
            self.instr_note = "valgrind is not installed: no instruction counts"
            log(self.instr_note)
            return
        prim = self.store(self.args.primary)
        h2paths = dict(H2Compare.CASES)
        for name in self.args.instr_cases.split(","):
            # The HTTP/2 cases (pair-only cases of the HTTP runs) by h2load, over HTTP/2.
            case = None if name in h2paths else self.case(name)
            if case is None and not (name in h2paths and self.h2):
                continue
            srv = Httpd(self, "cg-%s" % name, [prim], floor_key=self.floor_key)
            if case is not None:
                case = copy.copy(case)
                case.port = srv.port
            out = self.root / "logs" / ("callgrind-%s.out" % name)
            # Written at exit by a process that is www-data by then.
            out.touch(mode=0o666)
            os.chmod(out, 0o666)
            srv.start(wrap=["valgrind", "--tool=callgrind", "--callgrind-out-file=%s" % out],
                      single=True, timeout=120, pin=False)
            try:
                if case is None:
                    h = H2Compare(self, srv.port, self.floor_key).run(
                        h2paths[name], ms=1000 * self.args.instr_duration)
                    r = {"requests": h["ok"], "bad": h["bad"]}
                else:
                    r = wrk(self, case, self.args.instr_duration)
                if r["bad"]:
                    die("callgrind run of %s: %d unexpected responses" % (name, r["bad"]))
            finally:
                # SIGTERM: httpd exits and callgrind writes its counts, which takes a while.
                stop_proc(srv.proc, timeout=120)
            text = run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", str(out)],
                       timeout=300)
            incl = {}
            for line in text.splitlines():
                m = re.match(r"^\s*([\d,]+)\s+\([^)]*\)\s+\S*:(\w+)(?: \[|$)", line)
                if m:
                    fn, n = m.group(2), int(m.group(1).replace(",", ""))
                    incl[fn] = max(incl.get(fn, 0), n)  # debug info may split a function in two
            self.instr[name] = {label: cg_sum(incl, fns) / r["requests"]
                                for label, fns in self.CG_ROWS}
            self.instr_fn[name] = {fn: n / r["requests"] for fn, n in incl.items()}
            log("instructions per request, %s: %.0f" % (name, self.instr[name][self.CG_ROWS[0][0]]))
        if self.args.instr_dump:
            Path(self.args.instr_dump).write_text(json.dumps(self.instr_fn, indent=1))

    # -- results ---------------------------------------------------------------------------

    def case(self, name):
        for c in self.cases:
            if c.name == name:
                return c
        return None

    def paired(self, b, a):
        """Median per-round ratio of a pair, or None when it was not measured."""
        p = self.pair(b, a)
        return statistics.median(p.ratios()) if p else None

    H2_PAIRS = (("h2", "h2-floor", "valid API key (one key) over HTTP/2 against the floor over "
                  "HTTP/2"),
                ("h2", "h2-open", "the same against no authentication over HTTP/2"),
                ("h2-floor", "h2-open", "the floor against no authentication over HTTP/2"))

    def baseline(self, c):
        """The unauthenticated case a case is compared with: open, open-post or open-fresh."""
        return self.case({"post": "open-post", "fresh": "open-fresh"}.get(c.group, "open")) or \
            self.case("open")

    def ratios(self, a, b, key="rps"):
        """Per-round a/b."""
        return [x[key] / y[key] for x, y in zip(a.rounds, b.rounds)]

    def report(self):
        a = self.args
        m = self.machine
        elapsed = time.time() - T0
        load_after = os.getloadavg()
        open_get, open_post = self.case("open"), self.case("open-post")
        L = []
        L.append("# mod_krenalis_auth benchmark results")
        L.append("")
        L.append("Written by `bench/run.py` (`make bench%s`) on %s; see bench/README.md for "
                 "what each case means." % (" -large" if a.large else "",
                                            time.strftime("%Y-%m-%d %H:%M:%S %Z")))
        L.append("")
        L.append("## Machine")
        L.append("")
        L.append("| | |")
        L.append("|---|---|")
        for k, label in (("cpu", "CPU"), ("nproc", "CPUs (nproc)"), ("mem", "memory"),
                         ("virt", "virtualization"), ("os", "OS"), ("kernel", "kernel"),
                         ("httpd", "httpd"), ("wrk", "wrk"), ("commit", "commit")):
            L.append("| %s | %s |" % (label, m.get(k, "?")))
        if self.micro:
            L.append("| LMDB / OpenSSL | %s / %s |" % (self.micro[0]["lmdb"],
                                                       self.micro[0]["openssl"]))
        L.append("| load average before / after | %.2f %.2f %.2f / %.2f %.2f %.2f |" %
                 (self.load_before + load_after))
        L.append("| run time | %.0f s |" % elapsed)
        L.append("")
        L.append("Load: %d rounds. In each, a %d s paired run of each comparison below (`wrk "
                 "-t%d -c%d`, the load alternating between its two cases every %d ms; the "
                 "HTTP/2 ones and the latency target by bench/pairload.c, %d connections x %d "
                 "streams over HTTP/2); in the first %d rounds also the h2load cross-check (six "
                 "runs of %d ms) and `wrk -t%d -c%d -d%ss` of each case alone, in the "
                 "order below in odd rounds and reversed in even ones (after a %ss warm-up of "
                 "each). httpd %s event MPM, 2 children x %d threads, keep-alive without a "
                 "request limit, no access log; %s%s. `api`, `api-nometrics`, `floor` and "
                 "`api-10k` send one valid key; every other case rotates through %d different "
                 "credentials (%d for the 2 KiB bodies). The `*-nometrics` cases run in their "
                 "paired runs only." %
                 (a.rounds, a.pair_duration, a.threads, a.connections, a.slice,
                  a.h2_connections, a.h2_streams, min(a.case_rounds, a.rounds), a.h2_slice,
                  a.threads, a.connections, a.duration, a.warmup,
                  m.get("httpd", "").split(" ")[0], a.server_threads,
                  "httpd pinned to CPU %d, wrk, pairload and h2load to CPU %d (taskset): a "
                  "ratio of "
                  "throughputs is a ratio of the server's own CPU cost" % tuple(self.pin)
                  if self.pin else "client and server on the same %s CPUs" % m.get("nproc"),
                  ", httpd, wrk and decide_bench at nice %d" % a.nice if a.nice else "",
                  a.rotate, a.rotate_body))
        L.append("")
        L.append("## Key stores")
        L.append("")
        L.append("*pages in use*: the pages of every B-tree of the store (mdb_stat -a: branch, "
                 "leaf and overflow pages of each database, and the two meta pages) times the "
                 "page size, per key (API and write keys); *of which keys*: the `keys` database "
                 "alone, the one a request reads; *data file* is data.mdb's size, and its ratio "
                 "to the pages in use: the rest are free pages (copies a write transaction made "
                 "and freed, reused by later writes).")
        L.append("")
        L.append("| store | API keys | restricted API keys | event write keys | built in | "
                 "data file | pages in use, bytes a key | of which keys | depth of keys | "
                 "data file / pages in use |")
        L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for s in self.stores:
            st = s.stat
            L.append("| %s | %d | %d | %d | %.1f s | %.0f MiB | %.0f | %.0f | %d | %.2f |" %
                     (s.name, s.n_api, s.n_restricted, s.n_wk, s.build_s, st["file"] / 1048576,
                      st["in_use_per_key"], st["keys_db_per_key"], st["depth"],
                      st["file"] / (st["pages_in_use"] * st["psize"])))
        L.append("")
        L.append("## HTTP throughput and latency")
        L.append("")
        L.append("The cases' own runs, informative: the targets are decided in the paired "
                 "runs below. Medians over the rounds. *ratio to open* is the median of the "
                 "per-round ratios of req/s to the \"open\" case of the same round, *ratio to "
                 "its baseline* the same to \"open-post\" for the POST cases and to "
                 "\"open-fresh\" for the new-connection ones, *ratio to floor* to the floor, "
                 "for every authenticated GET case; *paired ratio* is the case's paired runs' "
                 "(below). *Δp50* is the median per-round difference of p50 latency to its "
                 "baseline. *httpd CPU* is the CPU time (user + system) of "
                 "the httpd processes per request, and *Δ CPU* its median per-round difference "
                 "to the baseline: what the request costs the server, whatever the "
                 "scheduling did to throughput. *noise* is the share of the machine's CPU time "
                 "used by processes other than httpd and wrk, plus the hypervisor's steal, "
                 "while the case ran (median / largest over the rounds). A round in which it "
                 "went over %.0f%% in some case was dropped and run again while the time "
                 "budget allowed: %d round(s) dropped, %d noisy round(s) kept for lack of "
                 "time; the run waited %d s for other processes to leave the CPUs." %
                 (100 * a.noise_limit, self.dropped_rounds, self.noisy_rounds, self.waited))
        L.append("")
        L.append("| case | what | req/s | p50 ms | p99 ms | ratio to open | ratio to its "
                 "baseline | ratio to floor | paired ratio | Δp50 ms | httpd CPU µs/req | Δ CPU "
                 "µs | noise % | wrong status | socket errors |")
        L.append("|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|")
        floor = self.case("floor")
        for c in self.cases:
            if not c.rounds:
                continue
            rps = statistics.median(r["rps"] for r in c.rounds)
            p50 = statistics.median(r["p50_us"] for r in c.rounds) / 1000
            p99 = statistics.median(r["p99_us"] for r in c.rounds) / 1000
            ro = statistics.median(self.ratios(c, open_get))
            base = self.baseline(c)
            rp = statistics.median(self.ratios(c, base)) if base is not open_get else None
            rf = statistics.median(self.ratios(c, floor)) if floor and c.group == "get" and \
                c.name not in ("open", "open-again") else None
            dp = statistics.median((x["p50_us"] - y["p50_us"]) / 1000
                                   for x, y in zip(c.rounds, base.rounds))
            bad = sum(r["bad_status"] for r in c.rounds)
            sockerr = sum(r["sock_errors"] for r in c.rounds)
            nz = [100 * (r["foreign"] + r["steal"]) for r in c.rounds]
            cpu = statistics.median(r["httpd_cpu_us"] for r in c.rounds)
            dcpu = statistics.median(x["httpd_cpu_us"] - y["httpd_cpu_us"]
                                     for x, y in zip(c.rounds, base.rounds))
            pp = [p for p in self.pairs if p.b is c]
            L.append("| %s | %s | %.0f | %.3f | %.3f | %.3f | %s | %s | %s | %+.3f | %.1f | "
                     "%+.1f | %.0f / %.0f | %d | %d |" %
                     (c.name, c.desc, rps, p50, p99, ro, "%.3f" % rp if rp else "",
                      "%.3f" % rf if rf else "",
                      "; ".join("%.3f to %s" % (statistics.median(p.ratios()), p.a.name)
                                for p in pp),
                      dp, cpu, dcpu, statistics.median(nz), max(nz), bad, sockerr))
        L.append("")
        L.append("## Paired comparisons")
        L.append("")
        L.append("The speed of this kind of machine changes within a second (a CPU-bound loop "
                 "timed every 0.1 s varies by up to 50 %%), so two cases run one after the other "
                 "see different machines: the *open-again* row above shows how far apart. A "
                 "paired run drives both cases in one wrk run and alternates the load between "
                 "them every %d ms of the clock (bench/rotate.lua), so that they share the "
                 "machine's slow and fast moments; each case's throughput is counted over its "
                 "own slices, leaving out the first %d ms of each slice, when responses to the "
                 "other case's requests still arrive. A has the even slices in odd rounds and B in "
                 "even ones. *ratio* is the median over the rounds of "
                 "the per-round ratio of B's req/s to A's; the A/A row is this measurement's own "
                 "resolution." % (a.slice, a.guard))
        L.append("")
        L.append("The pairs marked *pairload* are driven by bench/pairload.c, the same method in "
                 "C: over HTTP/1.1 with wrk's connections and slices, and over HTTP/2 (h2c with "
                 "prior knowledge, %d connections x %d streams, one valid key in every request's "
                 "`authorization` header, the same header to every location) in slices of %d ms "
                 "of which the first %d are not counted (longer than a request's latency there). "
                 "It also times each counted request: *Δp50* and *Δmean* are the medians over the "
                 "rounds of B's p50 and mean latency minus A's." %
                 (a.h2_connections, a.h2_streams, a.h2_pair_slice, a.h2_pair_guard))
        L.append("")
        L.append("| B / A | what | ratio | quartiles | B req/s | A req/s | requests counted | "
                 "Δp50 ms | Δmean ms |")
        L.append("|---|---|---:|---|---:|---:|---:|---:|---:|")
        for p in self.pairs:
            rs = sorted(p.ratios())
            lat = ["", ""]
            if p.client != "wrk":
                lat = ["%+.3f" % statistics.median((r["paired"]["b_" + k] - r["paired"]["a_" + k])
                                                   / 1000 for r in p.rounds)
                       for k in ("p50_us", "mean_us")]
            L.append("| %s | %s | %.3f | %s | %.0f | %.0f | %d | %s | %s |" % (
                p.name + (" (pairload%s)" % (", HTTP/2" if p.client == "h2" else "")
                          if p.client != "wrk" else ""),
                p.what, statistics.median(rs), quartiles(rs),
                statistics.median(r["paired"]["b_rps"] for r in p.rounds),
                statistics.median(r["paired"]["a_rps"] for r in p.rounds),
                sum(r["paired"]["a"] + r["paired"]["b"] for r in p.rounds), lat[0], lat[1]))
        L.append("")
        if self.h2 and self.h2.rounds:
            L.append("A cross-check of the HTTP/2 pairs with h2load (`h2load -t1 -c%d -m%d`, the "
                     "same requests), in the first %d rounds: h2load drives one case at a time, "
                     "so each of those rounds runs six %d ms runs in the order h2-open, "
                     "h2-floor, h2, h2, h2-floor, h2-open, and each case's req/s is its "
                     "requests over its time in the round; *ratio* is the median over the "
                     "rounds. Informative: runs one after the other see different machines "
                     "(above). %d request(s) were not answered 2xx." %
                     (a.h2_connections, a.h2_streams, len(self.h2.rounds), a.h2_slice,
                      self.h2.bad))
            L.append("")
            L.append("| B / A | what | ratio | quartiles | B req/s | A req/s |")
            L.append("|---|---|---:|---|---:|---:|")
            for b, an, what in self.H2_PAIRS:
                rs = self.h2.ratios(b, an)
                L.append("| %s / %s | %s | %.3f | %s | %.0f | %.0f |" % (
                    b, an, what, statistics.median(rs), quartiles(rs),
                    statistics.median(r[b] for r in self.h2.rounds),
                    statistics.median(r[an] for r in self.h2.rounds)))
            L.append("")
        L.append("## The decision alone (bench/decide_bench.c)")
        L.append("")
        L.append("ns per decision, single thread, best of 5 runs of %d decisions over %d "
                 "shuffled tokens of the store; each decision renews a pooled read transaction "
                 "on its first look-up and resets it at the end, as the module does. Other "
                 "processes used %s of the CPUs meanwhile." %
                 (a.micro_iters, a.micro_sample,
                  " / ".join("%.0f%%" % (100 * r["noise"]) for r in self.micro)))
        L.append("")
        L.append("The first columns leave the look-up cache out (every decision reads the "
                 "store); *valid API key, cached* is the same over 20000 of the keys with the "
                 "module's default look-up cache, filled by a first pass (docs/operations.md, "
                 "\"Look-up cache\").")
        L.append("")
        L.append("| store | valid API key | valid API key, cached | + Krenalis-Workspace | "
                 "restricted API key | event write key | unknown API key | malformed API key | "
                 "write key in a 2 KiB body (scan + decision) |")
        L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in self.micro:
            L.append("| %s | %.0f | %.0f | %.0f | %.0f | %.0f | %.0f | %.0f | %.0f |" %
                     (r["name"], r["api_ns"], r.get("api_cached_ns", float("nan")),
                      r["api_ws_ns"], r["restricted_ns"], r["write_key_ns"], r["unknown_ns"],
                      r["malformed_ns"], r["write_key_body_ns"]))
        L.append("")
        L.append("Steps of a valid API key decision, each timed alone (ns):")
        L.append("")
        L.append("| store | Bearer + base-62 decode + CRC | ka_decide without store or digest "
                 "(parsing included) | HMAC-SHA-256 | txn renew+reset (pooled) | txn "
                 "begin+abort (for comparison) | key look-up + decode | organization look-up | "
                 "JSON scan of the 2 KiB body |")
        L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in self.micro:
            st = r["steps_ns"]
            L.append("| %s | %.0f | %.0f | %.0f | %.0f | %.0f | %.0f | %.0f | %.0f |" %
                     (r["name"], st["parse"], st.get("no_store", float("nan")), st["digest"],
                      st["txn_renew"], st["txn_begin_abort"], st["get_key"], st["get_org"],
                      r["body_scan_ns"]))
        L.append("")
        L.append("## Instructions per request (callgrind)")
        L.append("")
        if self.instr_note or len(self.instr) < 2 or "open" not in self.instr:
            L.append(self.instr_note or "not measured")
        else:
            names = list(self.instr)
            L.append("httpd -X (one process) under valgrind's callgrind, %d s of each load (%s; "
                     "%s store): user-space instructions per request, inclusive (the kernel's "
                     "share, about two thirds of a request's CPU time here, is not counted). "
                     "Unlike req/s, these do not move with the machine's speed: they say where "
                     "the difference between the cases goes. Under valgrind OpenSSL finds no "
                     "SHA extensions and hashes in plain x86 code, so the HMAC weighs several "
                     "times what it costs on a CPU with them (see the decision alone)." %
                     (a.instr_duration, ", ".join(names), self.store(a.primary).name))
            L.append("")
            others = [n for n in names if n != "open"]
            L.append("| | " + " | ".join(names) + " | " +
                     " | ".join("%s - open" % n for n in others) + " |")
            L.append("|---|" + "---:|" * (len(names) + len(others)))
            for label, _ in self.CG_ROWS:
                L.append("| %s | %s | %s |" % (
                    label, " | ".join("%.0f" % self.instr[n][label] for n in names),
                    " | ".join("%+.0f" % (self.instr[n][label] - self.instr["open"][label])
                               for n in others)))
        L.append("")
        L.append("## Memory of the httpd children")
        L.append("")
        L.append("httpd started with one store at a time (2 children x %d threads), then %ss of "
                 "valid API keys rotating over %d keys of the store and 2 s of 2 KiB body "
                 "write keys. VmHWM is the peak resident set; it includes the pages of the "
                 "store's memory map the child touched (RssFile: page cache shared by every "
                 "process, not memory of the child). RssAnon is the child's private memory, "
                 "sampled every 0.1 s during the load. Largest child shown." %
                 (a.server_threads, a.mem_duration, a.rotate_mem))
        L.append("")
        L.append("| store | VmHWM MiB | peak RssAnon MiB | RssAnon before load MiB | "
                 "peak RssFile MiB |")
        L.append("|---|---:|---:|---:|---:|")
        for mm in self.memory:
            L.append("| %s | %.1f | %.1f | %.1f | %.1f |" %
                     (mm["store"].name, mm["hwm"] / 1024, mm["anon_peak"] / 1024,
                      mm["anon_before"] / 1024, mm["file_peak"] / 1024))
        L.append("")
        L.append("## Targets")
        L.append("")
        L.append("| target | measured | result |")
        L.append("|---|---|---|")
        for t in self.targets(elapsed):
            L.append("| %s | %s | %s |" % t)
        L.append("")
        if self.error_log_lines:
            L.append("httpd error log during the HTTP measurements (%d lines, first 10):" %
                     len(self.error_log_lines))
            L.append("")
            L.append("```")
            L.extend(self.error_log_lines[:10])
            L.append("```")
            L.append("")
        L.append("## Every round (req/s)")
        L.append("")
        cr = min(a.case_rounds, a.rounds)
        L.append("| case | " + " | ".join("round %d" % (i + 1) for i in range(cr)) + " |")
        L.append("|---|" + "---:|" * cr)
        for c in self.cases:
            if c.rounds:
                L.append("| %s | %s |" % (c.name, " | ".join("%.0f" % r["rps"] for r in c.rounds)))
        L.append("")
        if self.pairs:
            L.append("Paired runs, per-round ratio B / A:")
            L.append("")
            L.append("| B / A | " + " | ".join("round %d" % (i + 1) for i in range(a.rounds)) +
                     " |")
            L.append("|---|" + "---:|" * a.rounds)
            for p in self.pairs:
                L.append("| %s | %s |" % (p.name, " | ".join("%.3f" % x for x in p.ratios())))
            if self.h2:
                for b, an, _ in self.H2_PAIRS:
                    rs = ["%.3f" % x for x in self.h2.ratios(b, an)]
                    L.append("| %s / %s (h2load) | %s |" % (
                        b, an, " | ".join(rs + [""] * (a.rounds - len(rs)))))
            L.append("")
        L.append("Per-round ratio to open (separate runs): ")
        L.append("")
        L.append("| case | " + " | ".join("round %d" % (i + 1) for i in range(cr)) + " |")
        L.append("|---|" + "---:|" * cr)
        for c in self.cases:
            if c.rounds:
                L.append("| %s | %s |" % (c.name, " | ".join("%.3f" % x for x in
                                                              self.ratios(c, open_get))))
        L.append("")
        return "\n".join(L)

    def targets(self, elapsed):
        T = []
        a = self.args
        prim = self.store(a.primary)
        og, api = self.case("open"), self.case("api")

        def verdict(ok):
            return "PASS" if ok else "**FAIL**"

        def unpaired(b, a):
            if b is None or a is None or not b.rounds or not a.rounds:
                return ""
            return "; %.3f in separate runs" % statistics.median(self.ratios(b, a))

        paa = self.pair("open-again", "open")
        aa_txt = ""
        if paa:
            rs = paa.ratios()
            aa_txt = " (A/A %.3f, %s)" % (statistics.median(rs), quartiles(rs))
            T.append(("(resolution) open-again / open in paired runs, the same case measured "
                      "twice: how far from 1 noise alone puts a paired ratio in this run; it is "
                      "printed beside every paired target",
                      "median %.3f, %s" % (statistics.median(rs), quartiles(rs)), "—"))
        aa = self.case("open-again")
        if og and aa and og.rounds and aa.rounds:
            rs = self.ratios(aa, og)
            T.append(("(resolution) the same in separate runs (the cases' own rounds)",
                      "median %.3f, %s" % (statistics.median(rs), quartiles(rs)), "—"))

        def paired_target(b, a_, label, limit, how="paired runs", aa=None, beside=None):
            """A target on pair b / a_: aa, the resolution printed beside it (the paired A/A
            over HTTP/1.1 unless given), beside, what else measured it (the separate runs'
            ratio unless given)."""
            p = self.pair(b, a_)
            if p is None or not p.rounds:
                return
            r = statistics.median(p.ratios())
            T.append(("%s: ≥ %.2f (median of per-round ratios, %s)" % (label, limit, how),
                      "%.3f, %s%s%s" % (r, quartiles(p.ratios()),
                                        aa_txt if aa is None else aa,
                                        unpaired(self.case(b), self.case(a_))
                                        if beside is None else beside),
                      verdict(r >= limit)))

        p = self.pair("floor", "open")
        if p:
            T.append(("(informative) the floor / open: what Apache itself costs an "
                      "authenticated location (paired runs)",
                      "%.3f%s" % (statistics.median(p.ratios()), aa_txt), "—"))
        paired_target("api", "floor", "one valid key (memo), %s store, / the floor" %
                      prim.name, 0.99)
        paired_target("api-spread", "floor", "%d valid keys in turn (memo misses), %s store, "
                      "/ the floor" % (a.rotate, prim.name), 0.98)
        paired_target("api", "api-nometrics", "metrics on / off (KrenalisAuthMetrics Off), one "
                      "valid key (memo), %s store" % prim.name, 0.99)
        paired_target("api-spread", "api-spread-nometrics", "metrics on / off, %d valid keys "
                      "in turn (memo misses), %s store" % (a.rotate, prim.name), 0.99)
        for s in self.stores:
            if s.size < prim.size:
                paired_target("api-spread-%s" % s.name, "floor", "the same, %s store, / the "
                              "floor" % s.name, 0.98)
                paired_target("api-spread", "api-spread-%s" % s.name, "memo misses, %s store "
                              "within 2%% of %s store" % (prim.name, s.name), 0.98)
            elif s.size > prim.size:
                paired_target("api-spread-%s" % s.name, "api-spread", "memo misses, %s store "
                              "within 5%% of %s store" % (s.name, prim.name), 0.95)
        paired_target("wk-body-fresh", "open-fresh", "write key in a 2 KiB body, a new "
                      "connection per request, / open the same way", 0.98)
        ph2aa = self.pair("h2-open-again", "h2-open")
        aa_h2 = ""
        if ph2aa and ph2aa.rounds:
            aa_h2 = " (A/A over HTTP/2 %.3f, %s)" % (statistics.median(ph2aa.ratios()),
                                                     quartiles(ph2aa.ratios()))
        h2load = ""
        if self.h2 and self.h2.rounds:
            h2load = "; %.3f in h2load's interleaved runs" % statistics.median(
                self.h2.ratios("h2", "h2-floor"))
        paired_target("h2", "h2-floor", "HTTP/2: one valid key / the floor over HTTP/2", 0.98,
                      how="paired runs by pairload", aa=aa_h2, beside=h2load)
        # The latency pair is pairload's ("api" / "open", define_pairs): it times each case.
        plat = self.pair("api", "open")
        if plat and plat.rounds:
            d = statistics.median((x["paired"]["b_p50_us"] - x["paired"]["a_p50_us"]) / 1000
                                  for x in plat.rounds)
            dm = statistics.median((x["paired"]["b_mean_us"] - x["paired"]["a_mean_us"]) / 1000
                                   for x in plat.rounds)
            T.append(("valid API key, %s store: p50 latency within 0.05 ms of open (median of "
                      "per-round differences, paired runs by pairload, %d connections)" %
                      (prim.name, a.connections),
                      "%+.3f ms (mean %+.3f ms)" % (d, dm), verdict(d <= 0.05)))
        paired_target("wk-body", "wk-header", "body write key / header write key (2 KiB batch)",
                      0.9)
        paired_target("malformed", "unknown", "malformed / unknown API key over HTTP, both 401 "
                      "(≥ 0.98 allows for noise)", 0.98)
        for s in self.stores:
            for other in self.stores:
                if other.size < s.size and self.case("api-%s" % other.name) and s is prim:
                    T.append(("(informative) one valid key, %s keys vs %s keys (separate runs)"
                              % (s.name, other.name), unpaired(api, self.case(
                                  "api-%s" % other.name)).lstrip("; ") or "—", "—"))
        # The store's size on disk.
        for s in self.stores:
            st = s.stat
            judged = a.large and s.size == max(x.size for x in self.stores)
            tag = "" if judged else "(informative) "
            T.append(("%s%s store: pages in use ≤ 200 bytes a key (mdb_stat)" % (tag, s.name),
                      "%.0f bytes (keys database %.0f)" % (st["in_use_per_key"],
                                                          st["keys_db_per_key"]),
                      verdict(st["in_use_per_key"] <= 200) if judged else "—"))
            f = st["file"] / (st["pages_in_use"] * st["psize"])
            T.append(("%s%s store: data file ≤ 1.5 x the pages in use" % (tag, s.name),
                      "%.0f MiB, %.2f x" % (st["file"] / 1048576, f),
                      verdict(f <= 1.5) if judged else "—"))
            if judged:
                T.append(("%s store built in under 3 minutes" % s.name, "%.0f s" % s.build_s,
                          verdict(s.build_s < 180)))
        if len(self.memory) >= 2:
            lo, hi = self.memory[0], self.memory[-1]
            growth = hi["anon_peak"] - lo["anon_peak"]
            T.append(("memory per child does not grow with keys: peak RssAnon %s vs %s store "
                      "(tolerance 1 MiB or 5%%)" % (hi["store"].name, lo["store"].name),
                      "%.1f → %.1f MiB (%+.1f MiB)" % (lo["anon_peak"] / 1024,
                                                       hi["anon_peak"] / 1024, growth / 1024),
                      verdict(growth <= max(1024, 0.05 * lo["anon_peak"]))))
            gh = hi["hwm"] - lo["hwm"]
            T.append(("(informative) VmHWM, %s vs %s store; the difference is pages of the "
                      "store's map (shared page cache)" % (hi["store"].name, lo["store"].name),
                      "%.1f → %.1f MiB (%+.1f MiB)" % (lo["hwm"] / 1024, hi["hwm"] / 1024,
                                                       gh / 1024), "—"))
        for mr in self.micro:
            if mr["size"] == prim.size:
                T.append(("malformed tokens no slower than valid: the decision alone, %s store"
                          % mr["name"], "%.0f ns vs %.0f ns" % (mr["malformed_ns"], mr["api_ns"]),
                          verdict(mr["malformed_ns"] <= mr["api_ns"])))
                T.append(("the decision alone < 3 µs at %s keys (valid API key)" % mr["name"],
                          "%.2f µs" % (mr["api_ns"] / 1000), verdict(mr["api_ns"] < 3000)))
            elif mr["size"] > prim.size:
                T.append(("(informative) the decision alone at %s keys" % mr["name"],
                          "%.2f µs" % (mr["api_ns"] / 1000), "—"))
        if not a.large:
            T.append(("`make bench` under 10 minutes (this script's run time; the build is "
                      "extra)", "%.0f s" % elapsed, verdict(elapsed < 600)))
        runs = [r for c in self.cases + self.pairs for r in c.rounds]
        bad = sum(r["bad_status"] for r in runs) + (self.h2.bad if self.h2 else 0)
        T.append(("every response has the case's status (200, or 401 for malformed and unknown)",
                  "%d wrong" % bad, verdict(bad == 0)))
        crashes = [l for l in self.error_log_lines if "exit signal" in l or "segfault" in l]
        T.append(("no httpd child crashed (error log)", "%d crash line(s)" % len(crashes),
                  verdict(not crashes)))
        sockerr = sum(r["sock_errors"] for r in runs)
        total = sum(r["requests"] for r in runs)
        T.append(("(informative) socket errors seen by the load clients (connections the server closed or "
                  "reset)", "%d of %d requests" % (sockerr, total), "—"))
        return T


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--large", action="store_true",
                    help="also a 10-million-key store (make bench-large)")
    ap.add_argument("--sizes", default=None,
                    help="store sizes, comma-separated (default 10000,1000000; --large adds "
                         "10000000)")
    ap.add_argument("--primary", type=int, default=1000000,
                    help="the store size of the main cases (default 1000000)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--duration", type=int, default=2, help="seconds per case per round")
    ap.add_argument("--pair-duration", type=int, default=3,
                    help="seconds per paired run per round")
    ap.add_argument("--slice", type=int, default=50,
                    help="ms per slice of a paired run (the load alternates between the two "
                         "cases every slice)")
    ap.add_argument("--guard", type=int, default=5,
                    help="ms at the start of each slice of a paired run not counted (responses "
                         "to the other case's requests still arrive)")
    ap.add_argument("--case-rounds", type=int, default=2,
                    help="rounds in which every case also runs alone (default 2; the targets "
                         "are decided in the paired runs of all --rounds rounds)")
    ap.add_argument("--pin", dest="pin", action="store_true", default=True,
                    help="httpd on the first CPU, wrk, pairload and h2load on the second "
                         "(default)")
    ap.add_argument("--no-pin", dest="pin", action="store_false",
                    help="client and server share every CPU")
    ap.add_argument("--no-h2", dest="h2", action="store_false", default=True,
                    help="leave out the HTTP/2 comparisons (pairload -2, h2load)")
    ap.add_argument("--h2-connections", type=int, default=4,
                    help="connections over HTTP/2 (pairload and h2load)")
    ap.add_argument("--h2-streams", type=int, default=8,
                    help="concurrent streams per connection over HTTP/2 (pairload and h2load)")
    ap.add_argument("--h2-pair-slice", type=int, default=100,
                    help="ms per slice of a paired run over HTTP/2")
    ap.add_argument("--h2-pair-guard", type=int, default=20,
                    help="ms at the start of each slice of a paired run over HTTP/2 not counted "
                         "(longer than a request's latency there)")
    ap.add_argument("--h2-slice", type=int, default=500,
                    help="ms of each short h2load run (six a round)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2, help="wrk threads")
    ap.add_argument("--connections", type=int, default=32, help="wrk connections")
    ap.add_argument("--server-threads", type=int, default=64,
                    help="ThreadsPerChild of each of the 2 httpd children (default 64: more "
                         "than the connections, so that a child never has all its workers "
                         "busy, when the event MPM closes keep-alive connections)")
    ap.add_argument("--rotate", type=int, default=20000,
                    help="different credentials per case")
    ap.add_argument("--rotate-body", type=int, default=2000,
                    help="different write keys (2 KiB requests) per body case")
    ap.add_argument("--rotate-mem", type=int, default=20000)
    ap.add_argument("--mem-duration", type=int, default=3)
    ap.add_argument("--basic-users-dbm", type=int, default=10000)
    ap.add_argument("--basic-users-file", type=int, default=1000)
    ap.add_argument("--instr-duration", type=int, default=4,
                    help="seconds of load per case under callgrind (instruction counts)")
    ap.add_argument("--instr-cases", default="open,floor,api,api-spread",
                    help="the cases measured under callgrind (default open,floor,api,api-spread)")
    ap.add_argument("--instr-dump", default=None,
                    help="write every function's inclusive instructions per request, per "
                         "callgrind case, to this JSON file")
    ap.add_argument("--micro-sample", type=int, default=100000)
    ap.add_argument("--micro-iters", type=int, default=60000)
    ap.add_argument("--cases", default=None,
                    help="only these cases (comma-separated; open and open-post always run)")
    ap.add_argument("--noise-limit", type=float, default=0.10,
                    help="a round in which processes other than httpd and wrk (plus the "
                         "hypervisor's steal) used more than this share of the CPUs in some "
                         "case is run again (default 0.10)")
    ap.add_argument("--time-budget", type=float, default=None,
                    help="seconds the whole run may take (default 570, with --large 3600): "
                         "the time left after the planned work is spent waiting for other "
                         "processes to leave the CPUs and running noisy rounds again")
    ap.add_argument("--nice", type=int, default=0,
                    help="run httpd, wrk and decide_bench at this nice value (negative needs "
                         "root): on a machine other jobs keep busy, e.g. --nice -10 makes them "
                         "disturb the measurements less (and slows them meanwhile)")
    ap.add_argument("--steps", default="http,memory,micro,instr",
                    help="which measurements to run, comma-separated, of http, memory, micro "
                         "(the decision alone) and instr (callgrind); the stores are always "
                         "built (default all)")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--build", default=str(BUILD),
                    help="where mod_krenalis_auth.so, krenalis-keys and decide_bench are "
                         "(default build/; another directory compares another build)")
    ap.add_argument("--output", default=str(BENCH / "RESULTS.md"))
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()
    if args.sizes:
        args.sizes = sorted(int(x) for x in args.sizes.split(","))
    else:
        args.sizes = [10000, 1000000] + ([10000000] if args.large else [])
    if args.primary not in args.sizes:
        args.primary = args.sizes[-1]
    global NICE
    NICE = args.nice
    if args.time_budget is None:
        args.time_budget = 3600 if args.large else 570
    if args.rounds < 1:
        die("--rounds must be at least 1")

    b = Bench(args)
    ok = False

    def interrupted(signum, frame):
        raise KeyboardInterrupt()

    signal.signal(signal.SIGTERM, interrupted)
    try:
        b.check_tools()
        b.describe_machine()
        log("work directory %s" % b.root)
        b.build_stores()
        steps = set(args.steps.split(","))
        b.measure(http="http" in steps)
        if "memory" in steps:
            b.measure_memory()
        if "micro" in steps:
            b.micro_bench()
        if "instr" in steps:
            b.count_instructions()
        if "http" in steps:
            text = b.report()
            sys.stdout.write(text + "\n")
            Path(args.output).write_text(text + "\n")
            log("results written to %s" % args.output)
        else:
            log("no HTTP measurements (--steps): %s not written" % args.output)
            for name, rows in b.instr.items():
                log("%s: %s" % (name, json.dumps({k: round(v) for k, v in rows.items()})))
        ok = True
    except KeyboardInterrupt:
        sys.stderr.write("bench: interrupted\n")
        sys.exit(130)
    finally:
        stop_all()
        if args.keep or not ok:
            log("kept %s (logs in logs/)" % b.root)
        else:
            shutil.rmtree(b.root, ignore_errors=True)


if __name__ == "__main__":
    main()
