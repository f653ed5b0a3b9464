"""Shared machinery of the mod_krenalis_auth integration tests (python3 stdlib only).

A run builds one temporary directory under /tmp holding a key store, the backends, the httpd
configuration and the logs; starts the proxy echo backend and httpd (by PID, never by name);
and runs the tests registered by the test_*.py modules, in order. See run.py.

Test modules:
    from harness import test, Failure, ...
    @test("api.something")
    def _(h): ...            # h is the Harness; raise Failure (or use the assert helpers)
Optional module-level hooks, called before httpd starts:
    def fixture(h): ...       # add store content (h.cli(...)), stored in h.f
    def conf(h): return {"global": "...", "cgi": "...", "proxy": "..."}  # config snippets
"""
import hashlib
import json
import os
import pwd
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import zlib
from pathlib import Path


def extra_env(kind):
    """NAME=VALUE words from KRENALIS_TEST_HTTPD_ENV / KRENALIS_TEST_CLI_ENV, so a sanitizer
    runtime (LD_PRELOAD, ASAN_OPTIONS) reaches httpd or krenalis-keys and nothing else."""
    var = {"httpd": "KRENALIS_TEST_HTTPD_ENV", "cli": "KRENALIS_TEST_CLI_ENV"}[kind]
    return dict(w.split("=", 1) for w in shlex.split(os.environ.get(var, "")))

REPO = Path(__file__).resolve().parents[2]
BACKENDS = REPO / "tests" / "backends"
APACHE = "/usr/sbin/apache2"
REALM = "Krenalis"

# ---------------------------------------------------------------------------------------
# Test registry

TESTS = []  # (name, func)


def test(name):
    def deco(fn):
        TESTS.append((name, fn))
        return fn
    return deco


class Failure(Exception):
    pass


class Skip(Exception):
    pass


def fail(msg):
    raise Failure(msg)


def eq(actual, expected, what="value"):
    if actual != expected:
        raise Failure("%s: expected %r, got %r" % (what, expected, actual))


def check(cond, msg):
    if not cond:
        raise Failure(msg)


# ---------------------------------------------------------------------------------------
# Credentials (SPEC §2)

ALNUM62 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def terminate(p, grace):
    """Stops process p by its PID: SIGTERM, and SIGKILL if it is still there after grace s."""
    if p.poll() is not None:
        return
    try:
        os.kill(p.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        p.wait(grace)
    except subprocess.TimeoutExpired:
        os.kill(p.pid, signal.SIGKILL)
        p.wait(5)


def find_build(arg):
    """The directory with mod_krenalis_auth.so and krenalis-keys (arg relative to the repository
    root unless absolute), or None after printing what is missing as a failed run."""
    build = Path(arg)
    if not build.is_absolute():
        build = REPO / build
    for f in ("mod_krenalis_auth.so", "krenalis-keys"):
        if not (build / f).exists():
            print("missing %s (run make)" % (build / f))
            print("0 passed, 1 failed")
            return None
    return build


def project_version():
    """KA_VERSION from src/version.h, the one place the version is written."""
    m = re.search(r'^#define KA_VERSION "([^"]+)"$', (REPO / "src" / "version.h").read_text(),
                  re.M)
    if m is None:
        raise Failure("src/version.h has no KA_VERSION")
    return m.group(1)


def b62(n, width):
    s = ""
    while n:
        n, r = divmod(n, 62)
        s = ALNUM62[r] + s
    return s.rjust(width, "A")


def api_body(payload):
    """The 49-character body of an API key for a 32-byte payload."""
    return b62(int.from_bytes(payload, "big"), 43) + b62(zlib.crc32(payload), 6)


def api_body_valid(body):
    if len(body) != 49 or any(c not in ALNUM62 for c in body):
        return False
    n = 0
    for c in body[:43]:
        n = n * 62 + ALNUM62.index(c)
    crc = 0
    for c in body[43:]:
        crc = crc * 62 + ALNUM62.index(c)
    if n >= 1 << 256 or crc >= 1 << 32:
        return False
    return zlib.crc32(n.to_bytes(32, "big")) == crc


def random_api_token():
    """A well-formed API key that no store knows."""
    return "api_" + api_body(secrets.token_bytes(32))


def random_alnum(n):
    return "".join(secrets.choice(ALNUM) for _ in range(n))


def random_id():
    return "".join(secrets.choice(BASE58) for _ in range(12))


assert api_body(bytes(range(1, 33))) == "AOyrCBBQEmI63fgWAAw8F12XcPvUqkg0aEwlIqnO0xyCeS3NT"

# ---------------------------------------------------------------------------------------
# Expected error bodies (SPEC §7)


def jstr(s):
    out = ['"']
    for ch in s:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ord(ch) < 0x20:
            out.append({"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(ch, "\\u%04x" % ord(ch)))
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def err_body(code, message):
    return ('{"error":{"code":%s,"message":%s}}\n' % (jstr(code), jstr(message))).encode()


# ---------------------------------------------------------------------------------------
# HTTP over raw sockets


class Response:
    def __init__(self, status, reason, headers, body, raw):
        self.status = status
        self.reason = reason
        self.headers = headers  # [(name, value)] in order, duplicates kept
        self.body = body
        self.raw = raw

    def all(self, name):
        n = name.lower()
        return [v for k, v in self.headers if k.lower() == n]

    def get(self, name):
        v = self.all(name)
        return v[0] if v else None

    def one(self, name):
        v = self.all(name)
        if len(v) != 1:
            raise Failure("header %s: expected exactly once, got %r%s" % (name, v, self.brief()))
        return v[0]

    def json(self):
        try:
            return json.loads(self.body)
        except ValueError:
            raise Failure("body is not JSON%s" % self.brief())

    def brief(self):
        head = self.raw.split(b"\r\n\r\n", 1)[0].decode("latin-1")
        body = self.body[:600]
        return "\n    --- response ---\n    %s\n\n    %r" % (head.replace("\r\n", "\n    "), body)


def _encode(v):
    return v if isinstance(v, bytes) else str(v).encode("latin-1")


def build_request(port, method, path, headers=None, body=None, chunked=False, chunk_size=8192,
                  host=True, close=True):
    headers = list(headers or [])
    names = {h[0].lower() for h in headers if isinstance(h, tuple)}
    lines = [_encode("%s %s HTTP/1.1" % (method, path))]
    if host and "host" not in names:
        lines.append(_encode("Host: 127.0.0.1:%d" % port))
    for h in headers:
        if isinstance(h, bytes):
            lines.append(h)  # a raw header line
        else:
            lines.append(_encode(h[0]) + b": " + _encode(h[1]))
    data = b""
    if body is not None:
        body = _encode(body) if not isinstance(body, bytes) else body
        if chunked:
            if "transfer-encoding" not in names:
                lines.append(b"Transfer-Encoding: chunked")
            parts = []
            for i in range(0, len(body), chunk_size):
                c = body[i:i + chunk_size]
                parts.append(b"%x\r\n%s\r\n" % (len(c), c))
            parts.append(b"0\r\n\r\n")
            data = b"".join(parts)
        else:
            if "content-length" not in names:
                lines.append(b"Content-Length: %d" % len(body))
            data = body
    if close and "connection" not in names:
        lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + data


def parse_response(raw, method="GET"):
    head, sep, rest = raw.partition(b"\r\n\r\n")
    if not sep:
        raise Failure("incomplete response: %r" % raw[:300])
    lines = head.split(b"\r\n")
    parts = lines[0].decode("latin-1").split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/"):
        raise Failure("bad status line: %r" % lines[0])
    status = int(parts[1])
    reason = parts[2] if len(parts) > 2 else ""
    headers = []
    for ln in lines[1:]:
        k, _, v = ln.decode("latin-1").partition(":")
        headers.append((k.strip(), v.strip(" \t")))
    r = Response(status, reason, headers, b"", raw)
    if status in (204, 304) or 100 <= status < 200 or method == "HEAD":
        return r
    te = (r.get("Transfer-Encoding") or "").lower()
    if "chunked" in te:
        body, pos = [], 0
        while True:
            nl = rest.find(b"\r\n", pos)
            if nl < 0:
                raise Failure("truncated chunked body%s" % r.brief())
            size = int(rest[pos:nl].split(b";")[0], 16)
            pos = nl + 2
            if size == 0:
                break
            body.append(rest[pos:pos + size])
            pos += size + 2
        r.body = b"".join(body)
    elif r.get("Content-Length") is not None:
        n = int(r.all("Content-Length")[0])
        if len(rest) < n:
            r.body = rest
            raise Failure("short body: Content-Length %d, got %d bytes%s" % (n, len(rest), r.brief()))
        r.body = rest[:n]
    else:
        r.body = rest
    return r


def http(port, method, path, headers=None, body=None, chunked=False, chunk_size=8192,
         host=True, timeout=20, raw=None):
    """One request on a new connection (Connection: close); returns a Response."""
    data = raw if raw is not None else build_request(port, method, path, headers, body, chunked,
                                                     chunk_size, host)
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    err = []

    def sender():
        try:
            s.sendall(data)
        except OSError as e:  # the server may answer and close before reading everything
            err.append(e)

    t = threading.Thread(target=sender, daemon=True)
    t.start()
    chunks = []
    try:
        while True:
            try:
                b = s.recv(65536)
            except ConnectionResetError:
                if chunks:
                    break
                raise
            if not b:
                break
            chunks.append(b)
    finally:
        t.join(timeout)
        s.close()
    raw_resp = b"".join(chunks)
    if not raw_resp:
        raise Failure("no response (connection closed)%s" % (": %r" % err[0] if err else ""))
    return parse_response(raw_resp, method)


class _AfterRequestLine:
    """A socket that sends only what follows the request line (sent earlier, by hand)."""

    def __init__(self, sock):
        self.sock = sock

    def sendall(self, data):
        self.sock.sendall(data.split(b"\r\n", 1)[1])

    def recv(self, n):
        return self.sock.recv(n)


class KeepAlive:
    """One persistent connection: send() writes a request and reads its whole response
    (framed by Content-Length or chunked). A server that closes it fails the test."""

    def __init__(self, port, timeout=20):
        self.port = port
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""
        self.sent = 0

    def send_after_line(self, method, path, headers, body=None):
        """send() of a request whose line the test sent earlier itself, as a slow client does
        (sock.sendall(b"GET /path HTTP/1.1\\r\\n")): the headers and body go now."""
        sock, self.sock = self.sock, _AfterRequestLine(self.sock)
        try:
            return self.send(method, path, headers, body)
        finally:
            self.sock = sock

    def send(self, method, path, headers, body=None):
        s = self.sock
        hd = list(headers) + [("Connection", "keep-alive")]
        s.sendall(build_request(self.port, method, path, hd, body, close=False))
        self.sent += 1
        while b"\r\n\r\n" not in self.buf:
            b = s.recv(65536)
            if not b:
                raise Failure("connection closed before a response (request %d)" % self.sent)
            self.buf += b
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        probe = parse_response(head + b"\r\n\r\n", "HEAD")
        te = (probe.get("Transfer-Encoding") or "").lower()
        if probe.status in (204, 304) or method == "HEAD":
            need = lambda r: 0  # noqa: E731
        elif "chunked" in te:
            need = None
        else:
            cl = int(probe.get("Content-Length") or 0)
            need = lambda r, cl=cl: cl  # noqa: E731
        while True:
            if need is None:
                end = rest.find(b"\r\n0\r\n\r\n")
                if rest.startswith(b"0\r\n\r\n"):
                    end, n = 0, 5
                elif end >= 0:
                    n = end + 7
                if end >= 0:
                    break
            elif len(rest) >= need(rest):
                n = need(rest)
                break
            b = s.recv(65536)
            if not b:
                raise Failure("connection closed inside a response body")
            rest += b
        self.buf = rest[n:]
        return parse_response(head + b"\r\n\r\n" + rest[:n], method)

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def http_keepalive(port, requests, timeout=20):
    """Sends several requests on one persistent connection, one after the other; each item is
    (method, path, headers[, body]). Returns the Responses."""
    with KeepAlive(port, timeout) as ka:
        return [ka.send(*item) for item in requests]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port, proc=None, timeout=15):
    end = time.time() + timeout
    while time.time() < end:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


# ---------------------------------------------------------------------------------------
# httpd configuration


def mod(name):
    return "/usr/lib/apache2/modules/mod_%s.so" % name


_BUILTIN = None


def builtin_modules():
    """Modules compiled into httpd (apache2 -l): they cannot be loaded again."""
    global _BUILTIN
    if _BUILTIN is None:
        out = subprocess.run([APACHE, "-l"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             timeout=30).stdout.decode()
        _BUILTIN = {ln.strip()[4:-2] for ln in out.splitlines() if ln.strip().startswith("mod_")}
    return _BUILTIN


CONF_TEMPLATE = """\
# generated by tests/integration/harness.py
ServerRoot "{root}"
ServerName 127.0.0.1
DefaultRuntimeDir "{rundir}"
PidFile "{rundir}/httpd.pid"
Listen 127.0.0.1:{port_cgi}
Listen 127.0.0.1:{port_proxy}
{loads}
{user}
ErrorLog "{logs}/{name}-error.log"
LogLevel {loglevel}
LogFormat "%h %l %u %t \\"%r\\" %>s %b \\"%{{User-Agent}}i\\" kt=%{{KRENALIS_KEY_TYPE}}e" krenalis
CustomLog "{logs}/{name}-access.log" krenalis
TypesConfig /etc/mime.types
Timeout 20
KeepAlive On
{mpm}
ProxyTimeout 20
KrenalisAuthKeyStore "{store}"
{global_extra}

<Directory />
    AllowOverride None
    Require all denied
</Directory>
<Directory "{root}/cgi-bin">
    Options +ExecCGI
    Require all granted
</Directory>
<Directory "{root}/errdoc">
    Options +ExecCGI
    AddHandler cgi-script .cgi
    Require all granted
</Directory>
<Directory "{root}/errdoc2">
    Require all granted
</Directory>
<Directory "{root}/dirindex">
    Options +ExecCGI
    AddHandler cgi-script .cgi
    DirectoryIndex echo.cgi
    Require all granted
</Directory>
SetEnv ECHO_HITS "{root}/hits/cgi.log"

# CGI backend: the Krenalis paths /v1/... run echo.cgi (PATH_INFO = the rest).
<VirtualHost 127.0.0.1:{port_cgi}>
    ServerName cgi.test
    Alias /v1/errdoc/ "{root}/errdoc/"
    Alias /v1/errdoc2/ "{root}/errdoc2/"
    Alias /v1/dirindex/ "{root}/dirindex/"
    ScriptAliasMatch "^/open/(.*)$" "{root}/cgi-bin/echo.cgi/$1"
    ScriptAliasMatch "^/v1/(.*)$" "{root}/cgi-bin/echo.cgi/$1"
    <Location /v1/>
        AuthType Krenalis
        Require valid-user
        CGIPassAuth On
    </Location>
    <Location /v1/errdoc/>
        ErrorDocument 404 /v1/errdoc/echo.cgi
    </Location>
    <Location /v1/errdoc2/>
        ErrorDocument 404 /v1/after-redirect
    </Location>
{locations}
{cgi_extra}
</VirtualHost>

# Proxy backend: the same /v1/... paths, through mod_proxy_http to echo_server.py.
<VirtualHost 127.0.0.1:{port_proxy}>
    ServerName proxy.test
    ProxyPass /open/ http://127.0.0.1:{backend_port}/open/
    ProxyPass /v1/ http://127.0.0.1:{backend_port}/v1/
    <Location /v1/>
        AuthType Krenalis
        Require valid-user
    </Location>
{locations}
{proxy_extra}
</VirtualHost>
"""

# Locations of both virtual hosts (path prefixes under /v1/ keep the `auto` classification
# "api" for everything but the Krenalis ingestion/settings/organizations routes).
COMMON_LOCATIONS = """\
    <Location /v1/ws-required/>
        KrenalisAuthWorkspace required
    </Location>
    <Location /v1/ws-forbidden/>
        KrenalisAuthWorkspace forbidden
    </Location>
    <Location /v1/realm/>
        AuthName "Other Realm"
    </Location>
    <Location /v1/nopass/>
        KrenalisAuthPassAuthorization Off
    </Location>
    <Location /v1/fwd/>
        KrenalisAuthForwardHeaders On
    </Location>
    <Location /v1/public/>
        Require all granted
    </Location>
    <Location /v1/authz/>
        AuthzSendForbiddenOnFailure On
    </Location>
    <Location /v1/authz/default/>
        AuthzSendForbiddenOnFailure Off
        Require krenalis-organization {org2}
    </Location>
    <Location /v1/authz/type-api/>
        Require krenalis-key-type api
    </Location>
    <Location /v1/authz/type-other/>
        Require krenalis-key-type event-write organizations
    </Location>
    <Location /v1/authz/ws/>
        Require krenalis-workspace {ws1a}
    </Location>
    <Location /v1/authz/org/>
        Require krenalis-organization {org1}
    </Location>
    <Location /v1/authz/any/>
        <RequireAny>
            Require krenalis-organization {org2}
            Require krenalis-workspace {ws1b}
        </RequireAny>
    </Location>
    <Location /v1/authz/all/>
        <RequireAll>
            Require krenalis-key-type api
            Require krenalis-organization {org1}
            Require krenalis-workspace {ws1a}
        </RequireAll>
    </Location>
"""


# ---------------------------------------------------------------------------------------


class Httpd:
    def __init__(self, h, name, env=None, global_extra="", store=None, loglevel=None):
        self.h = h
        self.name = name
        self.env_extra = dict(env or {})
        self.global_extra = global_extra
        self.store = store or h.store
        self.loglevel = loglevel or h.loglevel
        self.proc = None
        self.port_cgi = free_port()
        self.port_proxy = free_port()
        self.rundir = h.root / "run" / name
        self.rundir.mkdir(parents=True, exist_ok=True)
        self.conf = h.root / ("%s.conf" % name)
        self.error_log = h.root / "logs" / ("%s-error.log" % name)
        self.access_log = h.root / "logs" / ("%s-access.log" % name)
        self.stdout = h.root / "logs" / ("%s-stdout.log" % name)
        self.write_conf()

    def write_conf(self, extra=""):
        self.conf.write_text(self.h.render_conf(self, extra))

    def env(self):
        e = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C"}
        e.update(extra_env("httpd"))
        e.update(self.env_extra)
        return e

    def configtest(self):
        """Runs apache2 -t; returns (exit status, stdout+stderr)."""
        p = subprocess.run([APACHE, "-t", "-f", str(self.conf)], env=self.env(),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
        return p.returncode, p.stdout.decode("latin-1")

    def start(self, expect_fail=False, timeout=15, args=()):
        """Starts httpd in the foreground as a child process (args: more of its arguments,
        e.g. ("-k", "restart")). With expect_fail, returns (exit status, output + error log)
        once it exits (or fails if it stays up)."""
        out = open(self.stdout, "ab")
        self.proc = subprocess.Popen([APACHE, "-f", str(self.conf), *args, "-DFOREGROUND"],
                                     env=self.env(), stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL,
                                     # prefork signals its whole process group on shutdown
                                     start_new_session=True)
        out.close()
        self.h.procs.append(self.proc)
        if expect_fail:
            try:
                rc = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.stop()
                raise Failure("httpd %s started although it should have failed" % self.name)
            return rc, self.output()
        ok = wait_port(self.port_cgi, self.proc, timeout) and wait_port(self.port_proxy,
                                                                         self.proc, timeout)
        if not ok:
            rc = self.proc.poll()
            self.stop()
            raise Failure("httpd %s did not start (exit %r):\n%s" % (self.name, rc,
                                                                     self.output()[-3000:]))
        return self

    def output(self):
        s = ""
        for p in (self.stdout, self.error_log):
            if p.exists():
                s += p.read_text("latin-1")
        return s

    def stop(self):
        p = self.proc
        if p is None:
            return
        terminate(p, 15)
        if p in self.h.procs:
            self.h.procs.remove(p)
        self.proc = None

    def port(self, target):
        return {"cgi": self.port_cgi, "proxy": self.port_proxy}[target]

    def req(self, target, method, path, headers=None, body=None, **kw):
        return http(self.port(target), method, path, headers, body, **kw)


class Harness:
    def __init__(self, build, mpm, loglevel="info", keep=False):
        self.build = Path(build)
        self.mpm = mpm
        self.loglevel = loglevel
        self.keep = keep
        self.keys_bin = self.build / "krenalis-keys"
        self.module = self.build / "mod_krenalis_auth.so"
        self.is_root = os.geteuid() == 0
        self.procs = []
        self.secrets = set()  # every credential generated or presented: must not be logged
        self.f = {}  # fixture: IDs and tokens
        self.modules = []
        self.backend = None
        self.backend_port = None
        self.servers = {}
        self.root = Path(tempfile.mkdtemp(prefix="krenalis-it-", dir="/tmp"))
        os.chmod(self.root, 0o755)
        self.store = self.root / "store"
        for d in ("logs", "run", "hits", "cgi-bin", "errdoc", "errdoc2", "dirindex"):
            (self.root / d).mkdir()
            os.chmod(self.root / d, 0o755)
        os.chmod(self.root / "hits", 0o777)
        for d in ("cgi-bin", "errdoc", "dirindex"):
            shutil.copy(BACKENDS / "echo.cgi", self.root / d / "echo.cgi")
            os.chmod(self.root / d / "echo.cgi", 0o755)
        shutil.copy(BACKENDS / "echo_server.py", self.root / "echo_server.py")
        for name in ("cgi.log", "proxy.log"):
            (self.root / "hits" / name).touch()
            os.chmod(self.root / "hits" / name, 0o666)
        self._mark = 0

    # -- key store -----------------------------------------------------------------------

    def cli(self, *args, store=None, ok=True, json_out=True):
        """Runs krenalis-keys --store STORE [--json] ARGS. Returns the parsed JSON (or {})
        when ok; with ok=False returns (exit status, stdout, stderr)."""
        cmd = [str(self.keys_bin), "--store", str(store or self.store)]
        if json_out:
            cmd.append("--json")
        cmd += [str(a) for a in args]
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30,
                           env=dict({"PATH": "/usr/bin:/bin", "LANG": "C"}, **extra_env("cli")))
        out, err = p.stdout.decode(), p.stderr.decode()
        if not ok:
            return p.returncode, out, err
        if p.returncode != 0:
            raise Failure("krenalis-keys %s: exit %d: %s%s" % (" ".join(map(str, args)),
                                                              p.returncode, err, out))
        if not json_out or not out.strip():
            return {}
        try:
            doc = json.loads(out)
        except ValueError:
            raise Failure("krenalis-keys %s: not JSON: %r" % (" ".join(map(str, args)), out))
        for k in ("token", "key"):
            if isinstance(doc.get(k), str):
                self.secret(doc[k])
        return doc

    def init_store(self, store=None, owner=True):
        args = ["init"]
        if owner and self.is_root:
            args += ["--owner", "www-data:www-data"]
        self.cli(*args, store=store)

    def new_org(self, disabled=False, store=None):
        oid = self.cli("organization", "add", "--name", "test org", store=store)["id"]
        if disabled:
            self.cli("organization", "disable", oid, store=store)
        return oid

    def new_ws(self, org, store=None):
        return self.cli("workspace", "add", "--organization", org, "--name", "test ws",
                        store=store)["id"]

    def new_conn(self, ws, store=None):
        d = self.cli("connection", "add", "--workspace", ws, "--name", "test conn", store=store)
        return d["id"], d["key"]

    def new_api_key(self, org=None, ws=None, store=None):
        args = ["api-key", "create"]
        if org:
            args += ["--organization", org]
        if ws:
            args += ["--workspace", ws]
        args += ["--name", "test key"]
        d = self.cli(*args, store=store)
        return d["id"], d["token"]

    def secret(self, s):
        """Registers a credential that must never appear in the logs."""
        if isinstance(s, str) and len(s) >= 16:
            self.secrets.add(s)
            if s.startswith(("api_", "org_")) and len(s) > 20:
                self.secrets.add(s[4:])
        return s

    def write_key_id(self, conn, key):
        """The ID of write key `key` of connection `conn` (matched by its hint)."""
        hint = key[:4] + "..." + key[-6:]
        keys = self.cli("write-key", "list", "--connection", conn)["keys"]
        ids = [k["id"] for k in keys if k["hint"] == hint]
        if len(ids) != 1:
            raise Failure("cannot find write key %s in %r" % (hint, keys))
        return ids[0]

    def base_fixture(self):
        f = self.f
        self.init_store()
        f["org1"] = self.new_org()
        f["ws1a"] = self.new_ws(f["org1"])
        f["ws1b"] = self.new_ws(f["org1"])
        f["conn1"], f["wk1"] = self.new_conn(f["ws1a"])
        f["conn1b"], f["wk1b"] = self.new_conn(f["ws1b"])
        f["k1_id"], f["k1"] = self.new_api_key(f["org1"])
        f["k1r_id"], f["k1r"] = self.new_api_key(ws=f["ws1a"])
        f["org2"] = self.new_org()
        f["ws2"] = self.new_ws(f["org2"])
        f["conn2"], f["wk2"] = self.new_conn(f["ws2"])
        f["k2_id"], f["k2"] = self.new_api_key(f["org2"])
        f["org3"] = self.new_org()
        f["ws3"] = self.new_ws(f["org3"])
        f["conn3"], f["wk3"] = self.new_conn(f["ws3"])
        f["k3_id"], f["k3"] = self.new_api_key(f["org3"])
        f["k3r_id"], f["k3r"] = self.new_api_key(f["org3"], f["ws3"])
        self.cli("organization", "disable", f["org3"])

    # -- config --------------------------------------------------------------------------

    def render_conf(self, srv, extra=""):
        mpm = self.mpm
        loads = ["LoadModule mpm_%s_module %s" % (mpm, mod("mpm_" + mpm))]
        for m in ("authn_core", "authz_core", "authz_user", "mime",
                  "cgid" if mpm == "event" else "cgi", "alias", "env", "headers", "dir",
                  "log_config", "unixd", "proxy", "proxy_http", "setenvif"):
            if m in builtin_modules():
                continue
            loads.append("LoadModule %s_module %s" % (m, mod(m)))
        loads.append("LoadModule krenalis_auth_module %s" % self.module.resolve())
        if mpm == "event":
            mpmconf = ("StartServers 2\nServerLimit 4\nThreadsPerChild 10\n"
                       "MinSpareThreads 5\nMaxSpareThreads 40\nMaxRequestWorkers 40\n"
                       'ScriptSock "%s/cgid.sock"' % srv.rundir)
        else:
            mpmconf = ("StartServers 4\nMinSpareServers 4\nMaxSpareServers 8\n"
                       "ServerLimit 16\nMaxRequestWorkers 16")
        user = "User www-data\nGroup www-data" if self.is_root else ""
        snippets = {"global": [], "cgi": [], "proxy": []}
        for m in self.modules:
            fn = getattr(m, "conf", None)
            if fn:
                for k, v in fn(self).items():
                    snippets[k].append(v)
        f = self.f
        locations = COMMON_LOCATIONS.format(org1=f["org1"], org2=f["org2"], ws1a=f["ws1a"],
                                            ws1b=f["ws1b"])
        return CONF_TEMPLATE.format(
            root=self.root, rundir=srv.rundir, logs=self.root / "logs", name=srv.name,
            port_cgi=srv.port_cgi, port_proxy=srv.port_proxy, loads="\n".join(loads),
            user=user, loglevel=srv.loglevel, mpm=mpmconf, store=srv.store,
            global_extra="\n".join(snippets["global"] + [srv.global_extra, extra]),
            locations=locations, cgi_extra="\n".join(snippets["cgi"]),
            proxy_extra="\n".join(snippets["proxy"]), backend_port=self.backend_port)

    # -- processes -----------------------------------------------------------------------

    def start_backend(self):
        log = open(self.root / "logs" / "echo_server.log", "ab")
        self.backend = subprocess.Popen(
            ["python3", str(self.root / "echo_server.py"), "--port", "0", "--hits",
             str(self.root / "hits" / "proxy.log")],
            stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        self.procs.append(self.backend)
        line = self.backend.stdout.readline().decode()
        if not line.startswith("PORT "):
            raise Failure("echo_server.py did not start: %r" % line)
        self.backend_port = int(line.split()[1])

    def httpd(self, name, **kw):
        srv = Httpd(self, name, **kw)
        self.servers[name] = srv
        return srv

    def httpd_once(self, name, **kw):
        """The httpd NAME (httpd(name, **kw)), started at its first use and kept for the run."""
        srv = self.servers.get(name)
        if srv is None or srv.proc is None:
            srv = self.httpd(name, **kw)
            srv.start()
        return srv

    def stop_all(self):
        for srv in list(self.servers.values()):
            srv.stop()
        if self.backend is not None:
            terminate(self.backend, 10)
        for p in list(self.procs):
            if p.poll() is None:
                try:
                    os.kill(p.pid, signal.SIGTERM)
                    p.wait(10)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    pass

    def cleanup(self, failed):
        if self.keep or failed:
            return False
        shutil.rmtree(self.root, ignore_errors=True)
        return True

    # -- request helpers -----------------------------------------------------------------

    @property
    def main(self):
        return self.servers["main"]

    def req(self, target, method, path, headers=None, body=None, **kw):
        return self.main.req(target, method, path, headers, body, **kw)

    def marker(self):
        self._mark += 1
        return "m%d%s" % (self._mark, secrets.token_hex(4))

    def backend_hits(self, marker):
        """Lines of both backends' hit logs containing marker."""
        out = []
        for name in ("cgi.log", "proxy.log"):
            p = self.root / "hits" / name
            out += [ln for ln in p.read_text("latin-1").splitlines() if marker in ln]
        return out


# ---------------------------------------------------------------------------------------
# Assertions


def sha(b):
    return hashlib.sha256(b).hexdigest()


SECURITY_HEADERS = (("Content-Type", "application/json; charset=utf-8"),
                    ("X-Content-Type-Options", "nosniff"),
                    ("Cache-Control", "no-store, max-age=0"),
                    ("Pragma", "no-cache"),
                    ("Expires", "0"))

CORS_HEADERS = ("Access-Control-Allow-Origin", "Access-Control-Expose-Headers", "Vary",
                "Access-Control-Allow-Methods", "Access-Control-Allow-Headers",
                "Access-Control-Max-Age", "Access-Control-Allow-Credentials")


def www_auth(realm=REALM, invalid=False):
    v = 'Bearer realm="%s"' % realm
    if invalid:
        v += ', error="invalid_token"'
    return v


def assert_cors(r, origin):
    """SPEC §9: ACAO (origin, or * when None), Vary: Origin, ACEH: Retry-After, each once."""
    eq(r.one("Access-Control-Allow-Origin"), origin or "*",
       "Access-Control-Allow-Origin" + r.brief())
    eq(r.one("Vary"), "Origin", "Vary" + r.brief())
    eq(r.one("Access-Control-Expose-Headers"), "Retry-After",
       "Access-Control-Expose-Headers" + r.brief())
    check(not r.all("Access-Control-Allow-Credentials"),
          "Access-Control-Allow-Credentials present" + r.brief())


def assert_no_cors(r):
    for n in CORS_HEADERS:
        if n == "Vary":
            continue
        check(not r.all(n), "unexpected %s on a non-CORS endpoint%s" % (n, r.brief()))


def assert_error(r, status, code, message, auth=None, cors=False, origin=None):
    """An error of the module (SPEC §7): exact status, body and headers.
    auth: None (no WWW-Authenticate allowed), "realm" or "invalid" (with error=), or a full
    expected value. cors: True for ingestion/settings endpoints (origin: request Origin)."""
    eq(r.status, status, "status" + r.brief())
    eq(r.body, err_body(code, message), "body" + r.brief())
    for name, value in SECURITY_HEADERS:
        eq(r.one(name), value, name + r.brief())
    eq(r.one("Content-Length"), str(len(r.body)), "Content-Length" + r.brief())
    wa = r.all("WWW-Authenticate")
    if auth is None:
        check(not wa, "unexpected WWW-Authenticate %r%s" % (wa, r.brief()))
    else:
        exp = {"realm": www_auth(), "invalid": www_auth(invalid=True)}.get(auth, auth)
        eq(wa, [exp], "WWW-Authenticate" + r.brief())
    if cors:
        assert_cors(r, origin)
    else:
        assert_no_cors(r)


def backend(r, kind=None):
    """The JSON a backend echoed; fails unless the request reached it with status 200."""
    eq(r.status, 200, "status (expected the backend's answer)" + r.brief())
    d = r.json()
    if kind:
        eq(d.get("backend"), kind, "backend")
    return d


def hdrs(doc, name):
    """Values of a header in the proxy backend's echo (case-insensitive)."""
    n = name.lower()
    return [v for k, v in doc["headers"] if k.lower() == n]


def krenalis_auth_headers(doc):
    """Headers that look like Krenalis-Auth-* (any case, _ or -) seen by the backend."""
    if doc["backend"] == "proxy":
        return [(k, v) for k, v in doc["headers"]
                if k.lower().replace("_", "-").startswith("krenalis-auth-")]
    return [(k, v) for k, v in doc["env"].items() if k.startswith("HTTP_KRENALIS_AUTH")]


IDENTITY_VARS = ("KRENALIS_KEY_TYPE", "KRENALIS_ORGANIZATION", "KRENALIS_WORKSPACE",
                 "KRENALIS_CONNECTION", "KRENALIS_KEY_ID")
FORWARD_HEADERS = {"KRENALIS_KEY_TYPE": "Krenalis-Auth-Key-Type",
                   "KRENALIS_ORGANIZATION": "Krenalis-Auth-Organization",
                   "KRENALIS_WORKSPACE": "Krenalis-Auth-Workspace",
                   "KRENALIS_CONNECTION": "Krenalis-Auth-Connection",
                   "KRENALIS_KEY_ID": "Krenalis-Auth-Key-Id"}


ANY = object()  # identity value not checked


def identity(key_type, key_id, org=None, ws=None, conn=None, user=None):
    """Expected identity: {VAR: value or None (absent)}, plus REMOTE_USER and AUTH_TYPE."""
    return {"REMOTE_USER": user if user is not None else key_id, "AUTH_TYPE": "Krenalis",
            "KRENALIS_KEY_TYPE": key_type, "KRENALIS_ORGANIZATION": org,
            "KRENALIS_WORKSPACE": ws, "KRENALIS_CONNECTION": conn, "KRENALIS_KEY_ID": key_id}


def assert_identity(doc, ident, forwarded=False):
    """CGI: the environment carries ident exactly. Proxy: with forwarded, the
    Krenalis-Auth-* headers carry it exactly (and nothing else of that family); without,
    no Krenalis-Auth-* header at all. CGI with forwarded: HTTP_KRENALIS_AUTH_* too."""
    if doc["backend"] == "cgi":
        env = doc["env"]
        for k, v in ident.items():
            if v is not ANY:
                eq(env.get(k), v, "CGI env %s" % k)
    fwd = sorted(krenalis_auth_headers(doc))
    if forwarded:
        exp = []
        for var, hname in FORWARD_HEADERS.items():
            if ident.get(var) is ANY:
                fwd = [(k, v) for k, v in fwd
                       if k.lower().replace("_", "-") not in (hname.lower(),
                                                               "http-" + hname.lower())]
                continue
            if ident.get(var) is not None:
                if doc["backend"] == "proxy":
                    exp.append((hname, ident[var]))
                else:
                    exp.append(("HTTP_" + hname.upper().replace("-", "_"), ident[var]))
        if doc["backend"] == "proxy":
            got = sorted((k.lower(), v) for k, v in fwd)
            exp = sorted((k.lower(), v) for k, v in exp)
        else:
            got, exp = fwd, sorted(exp)
        eq(got, exp, "forwarded Krenalis-Auth-* headers at the %s backend" % doc["backend"])
    else:
        eq(fwd, [], "Krenalis-Auth-* headers at the %s backend" % doc["backend"])


def scan_logs(h):
    """Returns a list of (file, secret) for credentials found in logs."""
    found = []
    logs = h.root / "logs"
    for p in sorted(logs.iterdir()):
        if p.name == "echo_server.log":
            continue
        text = p.read_text("latin-1")
        if "access" in p.name:
            # the settings path, also with its slashes encoded (AllowEncodedSlashes On)
            text = "\n".join(ln for ln in text.splitlines() if "/events/settings/"
                             not in ln.replace("%2F", "/").replace("%2f", "/"))
        for s in h.secrets:
            if s in text:
                found.append((p.name, s[:8] + "..."))
    return found
