"""Shared machinery of the reliability suite (python3 stdlib only).

Builds on tests/integration/harness.py: its Harness makes the temporary ServerRoot, the key
store (krenalis-keys --json), the echo backends and the httpd configuration; this file adds a
third virtual host made for load and fault tests ("rel", see REL_VHOST), a persistent
keep-alive client, error-log checks and helpers for the key store files.
"""
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

HERE = Path(__file__).resolve().parent
INTEGRATION = HERE.parent / "integration"

import sys  # noqa: E402

sys.path.insert(0, str(INTEGRATION))
sys.dont_write_bytecode = True

import harness  # noqa: E402,F401
from harness import (APACHE, Failure, Skip, build_request, free_port, parse_response,  # noqa: E402,F401
                     wait_port)

SVC_MSG = "request cannot be processed at this time; try again later"
BODY_503 = harness.err_body("ServiceUnavailable", SVC_MSG)
WWW_DATA = 33

# ---------------------------------------------------------------------------------------
# registry

TESTS = []  # (name, fn, modes)


def rtest(name, modes=("short", "soak"), short_mpms=("event", "prefork")):
    """Registers a test; short_mpms: the MPMs it runs under in short mode (a test that does not
    depend on the MPM runs once there, to keep `make reliability` short; soak runs it for
    both)."""
    def deco(fn):
        TESTS.append((name, fn, modes, short_mpms))
        return fn
    return deco


def check(cond, msg):
    if not cond:
        raise Failure(msg)


def eq(actual, expected, what="value"):
    if actual != expected:
        raise Failure("%s: expected %r, got %r" % (what, expected, actual))


# ---------------------------------------------------------------------------------------
# the "rel" virtual host
#
#   /fast/...          static file; the identity comes back in the X-Rel-Id response header
#                      (mod_headers, %{VAR}e) -- the cheap target of the load generator
#   /v1/events...      mod_proxy to echo_server.py with KrenalisAuthForwardHeaders On
#   /v1/...            envdump.cgi: the CGI's whole environment (KrenalisAuthPassAuthorization
#                      Off); /v1/pass/... keeps Authorization (the default)
#   /slow/...          mod_proxy to an in-process backend that answers after ?sleep=S seconds
#                      (keeps a child or thread busy without a CGI process per request)

REL_VHOST = """\
Listen 127.0.0.1:{port}
CoreDumpDirectory "{root}/cores"
<Directory "{root}/relfast">
    Require all granted
</Directory>
<Directory "{root}/relcgi">
    Options +ExecCGI
    Require all granted
</Directory>
<VirtualHost 127.0.0.1:{port}>
    ServerName rel.test
    ProxyPass /v1/events http://127.0.0.1:{backend}/v1/events
    Alias /fast/ "{root}/relfast/"
    ProxyPass /slow/ http://127.0.0.1:{slowport}/slow/
    ScriptAliasMatch "^/v1/(.*)$" "{root}/relcgi/envdump.cgi/$1"
    <Location /v1/>
        AuthType Krenalis
        Require valid-user
        KrenalisAuthForwardHeaders On
        KrenalisAuthPassAuthorization Off
        CGIPassAuth On
    </Location>
    <Location /v1/pass/>
        KrenalisAuthPassAuthorization On
    </Location>
    <Location /slow/>
        AuthType Krenalis
        Require valid-user
        KrenalisAuthEndpoint api
        KrenalisAuthForwardHeaders On
    </Location>
    <Location /fast/>
        AuthType Krenalis
        Require valid-user
        KrenalisAuthEndpoint api
        Header always set X-Rel-Id "type=%{{KRENALIS_KEY_TYPE}}e org=%{{KRENALIS_ORGANIZATION}}e ws=%{{KRENALIS_WORKSPACE}}e conn=%{{KRENALIS_CONNECTION}}e key=%{{KRENALIS_KEY_ID}}e"
    </Location>
</VirtualHost>
"""

MPM_DEFAULTS = {
    # a killed child is replaced at once (idle threads fall under MinSpareThreads), which is
    # what runs mdb_reader_check in the new child
    "event": "StartServers 3\nServerLimit 8\nThreadsPerChild 16\nMinSpareThreads 48\n"
             "MaxSpareThreads 96\nMaxRequestWorkers 128",
    "prefork": "StartServers 8\nMinSpareServers 8\nMaxSpareServers 16\nServerLimit 64\n"
               "MaxRequestWorkers 64",
}


def prepare_root(h):
    """Adds the rel virtual host's files to the harness's ServerRoot (once)."""
    root = h.root
    if (root / "relcgi").exists():
        return
    for d, mode in (("relfast", 0o755), ("relcgi", 0o755), ("cores", 0o1777)):
        (root / d).mkdir()
        os.chmod(root / d, mode)
    for name in ("items", "x", "ok"):
        (root / "relfast" / name).write_text("ok\n")
    src = (HERE / "envdump.cgi").read_text()
    (root / "relcgi" / "envdump.cgi").write_text(src)
    os.chmod(root / "relcgi" / "envdump.cgi", 0o755)


class _SlowHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        q = parse_qs(urlsplit(self.path).query)
        time.sleep(min(float(q.get("sleep", ["0"])[0]), 30))
        doc = {"backend": "slow", "path": self.path, "headers": list(self.headers.items())}
        data = json.dumps(doc).encode() + b"\n"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, fmt, *args):
        pass


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512

    def handle_error(self, request, client_address):
        pass  # a client (httpd child) killed mid-request: nothing to report


def slow_backend(ctx):
    """The /slow/ backend: a threaded HTTP server of this process (stopped by ctx.close())."""
    if getattr(ctx, "slow", None) is None:
        srv = _QuietServer(("127.0.0.1", 0), _SlowHandler)
        t = threading.Thread(target=srv.serve_forever, daemon=True)
        t.start()
        ctx.slow = srv
    return ctx.slow.server_address[1]


def rel_server(ctx, name, store=None, mpm=None, env=None, loglevel=None, start=True):
    """An httpd with the harness's two virtual hosts plus the rel one; srv.port_rel."""
    h = ctx.h
    prepare_root(h)
    port = free_port()
    extra = REL_VHOST.format(port=port, root=h.root, backend=h.backend_port,
                             slowport=slow_backend(ctx))
    extra += "\n" + (mpm if mpm is not None else MPM_DEFAULTS[h.mpm]) + "\n"
    srv = h.httpd(name, env=env, global_extra=extra, store=store, loglevel=loglevel)
    srv.port_rel = port
    if start:
        start_server(srv)
    return srv


def start_server(srv, timeout=20):
    srv.start(timeout=timeout)
    if not wait_port(srv.port_rel, srv.proc, timeout):
        raise Failure("httpd %s: rel port did not open:\n%s" % (srv.name, srv.output()[-2000:]))
    return srv


def children(srv):
    """PIDs of the server's child processes (the MPM's workers and the cgid daemon)."""
    out = subprocess.run(["ps", "-o", "pid=,user=,args=", "--ppid", str(srv.proc.pid)],
                         stdout=subprocess.PIPE, universal_newlines=True).stdout
    return [int(ln.split()[0]) for ln in out.splitlines() if ln.strip()]


def socket_inodes(path):
    """Inodes of the Unix sockets bound to path (/proc/net/unix)."""
    out = set()
    try:
        for ln in Path("/proc/net/unix").read_text().splitlines()[1:]:
            f = ln.split()
            if len(f) >= 8 and f[7].startswith(str(path)):  # mod_cgid appends ".PID"
                out.add(f[6])
    except OSError:
        pass
    return out


def worker_children(srv):
    """Children that serve requests: every child but mod_cgid's daemon (event MPM), which is
    the one holding the ScriptSock socket."""
    inodes = socket_inodes(srv.rundir / "cgid.sock")
    out = []
    for pid in children(srv):
        if inodes:
            try:
                fds = os.listdir("/proc/%d/fd" % pid)
                links = {os.readlink("/proc/%d/fd/%s" % (pid, fd)) for fd in fds}
            except OSError:
                links = set()
            if any("socket:[%s]" % i in links for i in inodes):
                continue
        out.append(pid)
    return out


def data_mappings(pid):
    """Sizes of the mappings of data.mdb in a process (bytes)."""
    sizes = []
    try:
        for ln in Path("/proc/%d/maps" % pid).read_text().splitlines():
            if ln.endswith("/data.mdb"):
                a, b = ln.split()[0].split("-")
                sizes.append(int(b, 16) - int(a, 16))
    except OSError:
        pass
    return sizes


def graceful(srv, env_extra=None):
    """apache2 -f CONF -k graceful (the command reads the configuration, then signals the
    parent through the PidFile). Returns (exit status, output)."""
    env = srv.env()
    if env_extra:
        env.update(env_extra)
    p = subprocess.run([APACHE, "-f", str(srv.conf), "-k", "graceful"], env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
    return p.returncode, p.stdout.decode("latin-1")


# ---------------------------------------------------------------------------------------
# error log

CRASH_RE = re.compile(r"exit signal|child pid \d+ exit|Segmentation fault|Bus error|"
                      r"\bAborted\b|core dumped|possible coredump|AH00052|AH00060|AH02818|"
                      r"scoreboard is full|cgid daemon process died", re.I)


class LogCursor:
    """Reads what an error log gained since the cursor was made (or last read)."""

    def __init__(self, path):
        self.path = Path(path)
        self.pos = self.path.stat().st_size if self.path.exists() else 0

    def read(self):
        if not self.path.exists():
            return ""
        with open(self.path, "rb") as f:
            f.seek(self.pos)
            data = f.read()
        self.pos += len(data)
        return data.decode("latin-1")


def crash_lines(text):
    return [ln for ln in text.splitlines() if CRASH_RE.search(ln)
            and "AH00061" not in ln]  # AH00061: "No active child processes" (shutdown)


def assert_no_crash(text, what="error log"):
    bad = crash_lines(text)
    check(not bad, "%s shows crashes or child exits:\n    %s" % (what, "\n    ".join(bad[:8])))


# ---------------------------------------------------------------------------------------
# HTTP: one request per connection, and a persistent keep-alive client


def one(port, method, path, headers=None, body=None, timeout=10, raw=None):
    """One request on its own connection: (status or None when the connection closed without a
    response, Response or error text)."""
    try:
        r = harness.http(port, method, path, headers, body, timeout=timeout, raw=raw)
        return r.status, r
    except Failure as e:
        return None, str(e)
    except OSError as e:
        return None, "%s: %s" % (type(e).__name__, e)


def bearer(tok):
    return [("Authorization", "Bearer " + tok)]


class Closed(Exception):
    """The server closed the connection; .partial: bytes of a response had arrived."""

    def __init__(self, partial):
        Exception.__init__(self, "connection closed%s" % (" mid-response" if partial else ""))
        self.partial = partial


class Client:
    """A persistent HTTP/1.1 connection. request() sends one request and reads its response;
    when the server has closed an idle keep-alive connection (nothing of a response came
    back), the request is sent again on a new connection, as HTTP clients do."""

    def __init__(self, port, timeout=20):
        self.port = port
        self.timeout = timeout
        self.sock = None
        self.buf = b""
        self.reconnects = 0

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = None
        self.buf = b""

    def _connect(self):
        self.close()
        self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout)

    def _recv(self):
        b = self.sock.recv(65536)
        if not b:
            raise Closed(bool(self.buf))
        self.buf += b

    def _read_response(self, method):
        while b"\r\n\r\n" not in self.buf:
            self._recv()
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        status = int(parts[1])
        headers = []
        for ln in lines[1:]:
            k, _, v = ln.decode("latin-1").partition(":")
            headers.append((k.strip().lower(), v.strip()))
        hd = dict(headers)
        self.buf = rest
        if status in (204, 304) or status < 200 or method == "HEAD":
            body = b""
        elif "chunked" in hd.get("transfer-encoding", "").lower():
            body = b""
            while True:
                while b"\r\n" not in self.buf:
                    self._recv()
                line, _, self.buf = self.buf.partition(b"\r\n")
                size = int(line.split(b";")[0], 16)
                while len(self.buf) < size + 2:
                    self._recv()
                body += self.buf[:size]
                self.buf = self.buf[size + 2:]
                if size == 0:
                    break
        elif "content-length" in hd:
            n = int(hd["content-length"])
            while len(self.buf) < n:
                self._recv()
            body, self.buf = self.buf[:n], self.buf[n:]
        else:
            try:
                while True:
                    self._recv()
            except Closed:
                pass
            body, self.buf = self.buf, b""
            self.close()
        if hd.get("connection", "").lower() == "close":
            self.close()
        return status, hd, body

    def request(self, data, method="GET"):
        """Returns (status, headers dict (lower-case names), body, retried)."""
        retried = False
        for attempt in range(3):
            fresh = self.sock is None
            if fresh:
                self._connect()
            try:
                self.sock.sendall(data)
                return self._read_response(method) + (retried,)
            except (Closed, ConnectionResetError, BrokenPipeError) as e:
                partial = isinstance(e, Closed) and e.partial
                self.close()
                if partial or fresh:
                    raise  # a response was cut, or a new connection failed: not a keep-alive race
                retried = True
                self.reconnects += 1
        raise Closed(False)


def req_bytes(port, method, path, headers=None, body=None, close=False):
    hd = list(headers or [])
    if not close:
        hd.append(("Connection", "keep-alive"))
    return build_request(port, method, path, hd, body, close=close)


# ---------------------------------------------------------------------------------------
# identity seen by the backend


def ident_from_fast(hd):
    """The identity in the X-Rel-Id header of a /fast/ response."""
    v = hd.get("x-rel-id")
    if v is None:
        return None
    out = {}
    for part in v.split(" "):
        k, _, val = part.partition("=")
        out[k] = None if val in ("(null)", "") else val
    return out


def ident_from_proxy(body):
    d = json.loads(body)
    hd = {k.lower(): v for k, v in d["headers"]}
    return {"type": hd.get("krenalis-auth-key-type"), "org": hd.get("krenalis-auth-organization"),
            "ws": hd.get("krenalis-auth-workspace"), "conn": hd.get("krenalis-auth-connection"),
            "key": hd.get("krenalis-auth-key-id")}


def ident_from_cgi(body):
    env = json.loads(body)["env"]
    return {"type": env.get("KRENALIS_KEY_TYPE"), "org": env.get("KRENALIS_ORGANIZATION"),
            "ws": env.get("KRENALIS_WORKSPACE"), "conn": env.get("KRENALIS_CONNECTION"),
            "key": env.get("KRENALIS_KEY_ID"), "user": env.get("REMOTE_USER")}


# ---------------------------------------------------------------------------------------
# key store files


def keys_cmd(h, *args, store=None, timeout=900):
    """krenalis-keys --json ARGS with a long timeout (the harness's cli() allows 30 s): large
    imports and listings. Returns the parsed JSON."""
    cmd = [str(h.keys_bin), "--store", str(store or h.store), "--json"] + [str(a) for a in args]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout,
                       env=dict({"PATH": "/usr/bin:/bin", "LANG": "C"},
                                **harness.extra_env("cli")))
    if p.returncode != 0:
        raise Failure("krenalis-keys %s: exit %d: %s" % (" ".join(map(str, args)), p.returncode,
                                                       p.stderr.decode().strip()))
    return json.loads(p.stdout) if p.stdout.strip() else {}


def api_digest(store, token):
    """The key of an API token's record in the `keys` database (docs/keystore.md):
    HMAC-SHA-256(store secret, the 32-byte payload)."""
    import hashlib
    import hmac
    n = 0
    for c in token[4:47]:
        n = n * 62 + harness.ALNUM62.index(c)
    secret = (Path(store) / "secret").read_bytes()
    return hmac.new(secret, n.to_bytes(32, "big"), hashlib.sha256).digest()


def lmdb_poke(store, db, op, key, value=None):
    args = [sys.executable, str(HERE / "lmdb_poke.py"), str(store), db, op, key.hex()]
    if value is not None:
        args.append(value.hex())
    p = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       universal_newlines=True, timeout=60)
    if p.returncode != 0:
        raise Failure("lmdb_poke.py %s %s: %s" % (db, op, p.stderr.strip()))
    return bytes.fromhex(p.stdout.strip()) if op == "get" else None


def chown_store(path, uid=WWW_DATA, gid=WWW_DATA):
    """What `init --owner www-data` does, for a store made by other means (root runs only)."""
    if os.geteuid() != 0:
        return
    for n in ("data.mdb", "lock.mdb"):
        p = Path(path) / n
        if p.exists():
            os.chown(p, uid, gid)


def mdb_readers(store):
    """PIDs in the store's reader table (mdb_stat -r)."""
    p = subprocess.run(["mdb_stat", "-r", str(store)], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, universal_newlines=True, timeout=30)
    pids = []
    for ln in p.stdout.splitlines():
        f = ln.split()
        if len(f) == 3 and f[0].isdigit():
            pids.append(int(f[0]))
    # mdb_stat 0.9.24 exits 1 after -r even when it printed the table
    ok = "Reader Table Status" in p.stdout
    return 0 if ok else p.returncode or 1, pids, p.stdout


def pid_alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def kill_pid(pid, sig=signal.SIGKILL):
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


class Holder:
    """tests/reliability/lmdb_holder.py: a process that takes reader slots of a store."""

    def __init__(self, store, leave=0):
        self.p = subprocess.Popen([sys.executable, str(HERE / "lmdb_holder.py"), str(store),
                                   str(leave)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, universal_newlines=True,
                                  start_new_session=True)
        line = self.p.stdout.readline().strip()
        if not line.startswith("HELD "):
            self.kill()
            raise Failure("lmdb_holder.py: %r" % line)
        self.held = int(line.split()[1])

    def release(self):
        """Closes the environment (frees its slots) and exits."""
        if self.p.poll() is None:
            self.p.stdin.write("close\n")
            self.p.stdin.flush()
            self.p.wait(20)

    def kill(self):
        """SIGKILL: its slots stay in the table, owned by a dead PID."""
        if self.p.poll() is None:
            os.kill(self.p.pid, signal.SIGKILL)
            self.p.wait(20)


def wait_until(fn, timeout, step=0.1):
    end = time.time() + timeout
    while True:
        v = fn()
        if v or time.time() >= end:
            return v
        time.sleep(step)


class Ctx:
    """One run: the harness, the mode and what the tests report."""

    def __init__(self, h, mode, mpm, duration):
        self.h = h
        self.mode = mode
        self.mpm = mpm
        self.duration = duration
        self.figures = {}  # name -> dict, printed as "# figures" lines and saved as JSON
        self.lock = threading.Lock()

    @property
    def soak(self):
        return self.mode == "soak"

    def close(self):
        slow = getattr(self, "slow", None)
        if slow is not None:
            slow.shutdown()
            slow.server_close()
            self.slow = None

    def figure(self, name, **values):
        with self.lock:
            self.figures.setdefault(name, {}).update(values)
        print("# %s [%s]: %s" % (name, self.mpm, ", ".join("%s=%s" % kv for kv in values.items())))
        sys.stdout.flush()
