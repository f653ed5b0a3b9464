"""Issue 3 in a real browser: headless Chromium against the ingestion endpoints (SPEC §6.2, §9).

A test page is served from a second loopback origin (a small HTTP server of this module on
its own 127.0.0.1 port) and talks to /v1/events of the CGI and the proxy virtual host, the
way the Krenalis JavaScript SDK and a hand-written `fetch` do:

- `fetch` with a `text/plain` body carrying `writeKey` (a simple request: no preflight);
- `navigator.sendBeacon` with the same kind of body (checked at the backend);
- `fetch` with `Authorization: Bearer` (Chromium sends a preflight that Apache answers, then
  the POST, which alone reaches the backend);
- the JSON body of a 401 is readable by the page.

Every response the browser receives on these paths must carry Access-Control-Allow-Origin
(the page's origin), Vary and Access-Control-Expose-Headers exactly once (checked on the raw
header text Chromium reports). Controls prove that the browser really rejects a missing or a
duplicated Access-Control-Allow-Origin and an origin the module does not allow.

Chromium (Debian package `chromium`) runs with --headless=new --no-sandbox, a fresh profile
under the run directory, and flags that keep it off the network: background, component, sync
and metrics traffic switched off, every host name but 127.0.0.1 unresolvable (no DNS query
leaves), and a proxy that refuses connections for anything not on loopback, so that what
Chromium 156 still tries on its own (an update2 check for one component, the Google account
list) fails locally. It is driven over the DevTools protocol on a pipe
(--remote-debugging-pipe: fd 3 in, fd 4 out, NUL-terminated JSON): no debugging port.

Without chromium every test here reports `skip` (KRENALIS_TEST_REQUIRE_BROWSER=1 makes that a
failure); KRENALIS_TEST_CHROMIUM overrides the binary (default /usr/lib/chromium/chromium, the
real binary behind Debian's /usr/bin/chromium wrapper script, which would add the
distribution's flags and API keys).
"""
import fcntl
import json
import os
import select
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from harness import (Failure, Response, Skip, assert_cors, assert_identity, check, eq, err_body,
                     sha, terminate, test)
from test_api import each_target
from test_ingestion import NO_AUTH, WK_BODY_UNKNOWN, WK_INVALID, fwd, wk_identity

CHROMIUM = os.environ.get("KRENALIS_TEST_CHROMIUM", "/usr/lib/chromium/chromium")

OTHER_ORIGIN = "https://other.example"


def conf(h):
    # /v1/browser-other/: an ingestion place that allows another origin only.
    # /open/browser-dup/: no module; the backend adds ACAO: * (cors=1) and mod_headers adds the
    # request's Origin: two Access-Control-Allow-Origin values, as a module that did not
    # deduplicate would send (control).
    locs = """\
    <Location /v1/browser-other/>
        KrenalisAuthEndpoint ingestion
        KrenalisAuthCORSAllowOrigin %s
    </Location>
    <Location /open/browser-dup/>
        Header always add Access-Control-Allow-Origin "expr=%%{req:Origin}"
    </Location>
""" % OTHER_ORIGIN
    return {"cgi": locs, "proxy": locs}


# ---------------------------------------------------------------------------------------
# DevTools protocol over a pipe


class Chromium:
    FLAGS = [
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--no-default-browser-check", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-default-apps",
        "--disable-extensions", "--disable-domain-reliability",
        "--disable-client-side-phishing-detection", "--disable-breakpad",
        "--disable-dev-shm-usage", "--metrics-recording-only", "--no-pings", "--mute-audio",
        "--password-store=basic", "--safebrowsing-disable-auto-update",
        "--disable-features=Translate,OptimizationHints,MediaRouter,DialMediaRouteProvider,"
        "AutofillServerCommunication,CertificateTransparencyComponentUpdater,"
        "NetworkTimeServiceQuerying",
        # nothing but 127.0.0.1 resolves, and anything not on loopback goes to a proxy that
        # refuses connections (Chromium never proxies loopback): the few requests Chromium
        # still attempts on its own (component updater, account list) fail on the spot
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
        "--remote-debugging-pipe",
    ]

    def __init__(self, h, exe):
        # a bound port nobody listens on: connections to it are refused while we hold it
        self.dead = socket.socket()
        self.dead.bind(("127.0.0.1", 0))
        proxy = "--proxy-server=http://127.0.0.1:%d" % self.dead.getsockname()[1]
        self.dir = h.root / "browser"
        (self.dir / "home").mkdir(parents=True, exist_ok=True)
        to_r, to_w = os.pipe()      # we write, Chromium reads on fd 3
        from_r, from_w = os.pipe()  # Chromium writes on fd 4, we read
        # bash (not dash) because the descriptors may be above 9
        a = fcntl.fcntl(to_r, fcntl.F_DUPFD_CLOEXEC, 10)
        b = fcntl.fcntl(from_w, fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(to_r)
        os.close(from_w)
        cmd = ["/bin/bash", "-c", 'exec "$0" "$@" 3<&%d 4>&%d %d<&- %d>&-' % (a, b, a, b), exe]
        cmd += self.FLAGS + [proxy, "--user-data-dir=%s" % (self.dir / "profile"), "about:blank"]
        log = open(h.root / "logs" / "chromium.log", "ab")  # scanned for credentials too
        try:
            self.proc = subprocess.Popen(
                cmd, pass_fds=(a, b), stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
                env={"PATH": "/usr/bin:/bin", "HOME": str(self.dir / "home"), "LANG": "C"})
        except BaseException:
            for fd in (to_w, from_r):
                os.close(fd)
            self.dead.close()
            raise
        finally:
            log.close()
            os.close(a)
            os.close(b)
        h.procs.append(self.proc)  # stop_all's safety net (by PID)
        self.h = h
        self.wfd, self.rfd = to_w, from_r
        self.buf = b""
        self.events = []
        self.results = {}
        self.n = 0

    def _read(self, timeout):
        ready, _, _ = select.select([self.rfd], [], [], max(timeout, 0))
        if not ready:
            return
        data = os.read(self.rfd, 1 << 20)
        if not data:
            raise Failure("chromium closed the DevTools pipe (exit %r); see %s" % (
                self.proc.poll(), self.h.root / "logs" / "chromium.log"))
        self.buf += data
        while b"\0" in self.buf:
            raw, self.buf = self.buf.split(b"\0", 1)
            msg = json.loads(raw)
            if "id" in msg:
                self.results[msg["id"]] = msg
            else:
                self.events.append(msg)

    def call(self, method, params=None, session=None, timeout=30):
        self.n += 1
        i = self.n
        msg = {"id": i, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        data = json.dumps(msg).encode() + b"\0"
        while data:
            data = data[os.write(self.wfd, data):]
        end = time.time() + timeout
        while i not in self.results:
            left = end - time.time()
            if left <= 0:
                raise Failure("DevTools %s: no answer in %d s" % (method, timeout))
            self._read(left)
        r = self.results.pop(i)
        if "error" in r:
            raise Failure("DevTools %s: %s" % (method, r["error"]))
        return r["result"]

    def wait_event(self, pred, timeout=15):
        end = time.time() + timeout
        while True:
            for e in self.events:
                if pred(e):
                    return e
            left = end - time.time()
            if left <= 0:
                return None
            self._read(left)

    def close(self):
        p = self.proc
        if p.poll() is None:
            try:
                self.call("Browser.close", timeout=5)
            except Failure:
                pass
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                terminate(p, 10)
        for fd in (self.wfd, self.rfd):
            try:
                os.close(fd)
            except OSError:
                pass
        self.dead.close()
        if p in self.h.procs:
            self.h.procs.remove(p)


# ---------------------------------------------------------------------------------------
# The test page (second origin)

PAGE = b"""<!doctype html>
<meta charset="utf-8">
<title>mod_krenalis_auth browser test</title>
<script>
// fetch as a page would; reports what the page can see (status, readable body) or the error
async function probe(url, init) {
  init = Object.assign({method: "POST", cache: "no-store", signal: AbortSignal.timeout(15000)},
                       init);
  try {
    const r = await fetch(url, init);
    return {status: r.status, contentType: r.headers.get("Content-Type"), body: await r.text()};
  } catch (e) {
    return {error: e.name + ": " + e.message};
  }
}
</script>
"""


class PageHandler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(PAGE)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, fmt, *args):
        pass


class Browser:
    """One Chromium with one tab on the test page, shared by the tests of this module."""

    def __init__(self, h):
        self.h = h
        self.page = ThreadingHTTPServer(("127.0.0.1", 0), PageHandler)
        self.page.daemon_threads = True
        threading.Thread(target=self.page.serve_forever, daemon=True).start()
        self.origin = "http://127.0.0.1:%d" % self.page.server_address[1]
        self.chrome = None
        try:
            self.chrome = Chromium(h, CHROMIUM)
            c = self.chrome
            tid = c.call("Target.createTarget", {"url": "about:blank"})["targetId"]
            self.session = c.call("Target.attachToTarget", {"targetId": tid, "flatten": True})[
                "sessionId"]
            for d in ("Network", "Page", "Runtime"):
                self.call(d + ".enable")
            self.call("Page.navigate", {"url": self.origin + "/page.html"})
            if not c.wait_event(lambda e: e["method"] == "Page.loadEventFired"):
                raise Failure("the test page did not load")
            loc = self.eval("location.origin + ' ' + typeof probe")
            eq(loc, self.origin + " function", "test page")
        except BaseException:
            self.close()
            raise

    def call(self, method, params=None, timeout=30):
        return self.chrome.call(method, params, self.session, timeout)

    def eval(self, expr, timeout=30):
        r = self.call("Runtime.evaluate", {"expression": expr, "awaitPromise": True,
                                           "returnByValue": True}, timeout)
        if "exceptionDetails" in r:
            raise Failure("page script failed: %s" % json.dumps(r["exceptionDetails"])[:800])
        return r["result"].get("value")

    def fetch(self, url, init):
        return self.eval("probe(%s, %s)" % (json.dumps(url), json.dumps(init)))

    def beacon(self, url, body):
        return self.eval("navigator.sendBeacon(%s, %s)" % (json.dumps(url), json.dumps(body)))

    def requests(self, marker, timeout=10):
        """The requests Chromium made to URLs containing marker, in the order their responses
        arrived (a preflight before its request), once each has finished or failed:
        [{id, method, url, type, status, raw, error, cors_error}] (raw: the response header
        text as received; None when no response came)."""
        c = self.chrome
        end = time.time() + timeout
        grace = None
        while True:
            by_id, seen = {}, []
            for n, e in enumerate(c.events):
                p = e.get("params", {})
                rid = p.get("requestId")
                if rid is None or not e["method"].startswith("Network."):
                    continue
                r = by_id.get(rid)
                if r is None:
                    r = by_id[rid] = {"id": rid, "method": None, "url": None, "type": None,
                                      "status": None, "raw": None, "error": None,
                                      "cors_error": None, "done": False}
                    seen.append(rid)
                m = e["method"]
                if m == "Network.requestWillBeSent":
                    r["method"] = p["request"]["method"]
                    r["url"] = p["request"]["url"]
                elif m == "Network.responseReceived":
                    r["type"] = p.get("type")
                elif m == "Network.responseReceivedExtraInfo":
                    r["status"] = p.get("statusCode")
                    r["raw"] = p.get("headersText")
                    r["answered"] = n  # order of arrival of the responses
                elif m == "Network.loadingFinished":
                    r["done"] = True
                elif m == "Network.loadingFailed":
                    r["done"] = True
                    r["error"] = p.get("errorText")
                    r["cors_error"] = (p.get("corsErrorStatus") or {}).get("corsError")
            out = [by_id[i] for i in seen if marker in (by_id[i]["url"] or "")]
            out.sort(key=lambda r: r.get("answered", 1 << 30))
            if out and all(r["done"] for r in out):
                if all(r["raw"] is not None for r in out):
                    return out
                # a failed request may have had no response; its header text, if any, can
                # arrive just after the failure
                grace = grace or time.time() + 1
                if time.time() > grace:
                    return out
            left = end - time.time()
            if left <= 0:
                return out
            c._read(min(left, 0.1))

    def close(self):
        if self.chrome is not None:
            self.chrome.close()
            self.chrome = None
        if self.page is not None:
            self.page.shutdown()
            self.page.server_close()
            self.page = None


def browser(h):
    """The shared Browser, started by the first test that needs it (Skip without chromium)."""
    b = getattr(h, "browser_session", None)
    if isinstance(b, Browser):
        b.chrome.events.clear()
        return b
    if isinstance(b, BaseException):  # start failed once: do not retry for every test
        raise b
    if not os.access(CHROMIUM, os.X_OK):
        why = "%s not found (Debian package chromium: apt-get install chromium)" % CHROMIUM
        h.browser_session = (Failure if os.environ.get("KRENALIS_TEST_REQUIRE_BROWSER") == "1"
                             else Skip)(why)
        raise h.browser_session
    try:
        h.browser_session = Browser(h)
    except Exception as e:
        h.browser_session = Failure("chromium did not start: %s" % e)
        raise h.browser_session
    return h.browser_session


def teardown(h):
    """Called by run.py before it stops httpd."""
    b = getattr(h, "browser_session", None)
    if isinstance(b, Browser):
        b.close()


# ---------------------------------------------------------------------------------------
# Assertions


def raw_response(req):
    """A harness Response made of the raw header text Chromium received."""
    check(req["raw"] is not None, "no raw response headers for %s %s: %r" % (
        req["method"], req["url"], req))
    lines = req["raw"].split("\r\n")
    parts = lines[0].split(" ", 2)
    headers = []
    for ln in lines[1:]:
        if ln:
            k, _, v = ln.partition(":")
            headers.append((k.strip(), v.strip(" \t")))
    return Response(int(parts[1]), parts[2] if len(parts) > 2 else "", headers, b"",
                    req["raw"].encode("latin-1"))


def describe(reqs):
    return "\n    " + "\n    ".join(
        "%s %s -> %s %s%s" % (r["method"], r["url"], r["status"], r["type"] or "",
                              " failed %s %s" % (r["error"], r["cors_error"] or "")
                              if r["error"] else "") for r in reqs)


def expect_requests(reqs, methods):
    eq([r["method"] for r in reqs], methods, "requests Chromium sent" + describe(reqs))
    for r in reqs:
        check(r["error"] is None, "request failed in the browser" + describe(reqs))


def assert_browser_cors(b, req, preflight=False):
    """SPEC §9 on what the browser received: ACAO = the page origin, Vary and ACEH, each
    exactly once; a preflight also the Allow-* and Max-Age headers."""
    r = raw_response(req)
    assert_cors(r, b.origin)
    if preflight:
        eq(r.status, 204, "preflight status" + r.brief())
        eq(r.one("Access-Control-Allow-Methods"), "POST", "Access-Control-Allow-Methods")
        eq(r.one("Access-Control-Allow-Headers"), "Authorization, Content-Type",
           "Access-Control-Allow-Headers")
        eq(r.one("Access-Control-Max-Age"), "86400", "Access-Control-Max-Age")


def page_json(res, status, what):
    check("error" not in res, "%s: the page could not read the response: %s" % (what, res))
    eq(res["status"], status, "%s: status seen by the page (%r)" % (what, res))
    try:
        return json.loads(res["body"])
    except ValueError:
        raise Failure("%s: body is not JSON: %r" % (what, res["body"][:300]))


def access_lines(h, marker, n, timeout=3):
    """(method, status) of the main access log lines containing marker; waits for n of them
    (httpd logs a request after it has answered it)."""
    end = time.time() + timeout
    while True:
        out = []
        for ln in h.main.access_log.read_text("latin-1").splitlines():
            if marker in ln:
                req = ln.split('"')[1]
                out.append((req.split(" ")[0], int(ln.split('"')[2].split()[0])))
        if len(out) >= n or time.time() > end:
            return out
        time.sleep(0.05)


def hits(h, marker, n=1, timeout=3):
    """[(method, path, record)] of the backends' hit logs for marker (see the backends); waits
    for n of them (a beacon may still be on its way)."""
    end = time.time() + timeout
    while True:
        out = [tuple(ln.split(" ", 2)) for ln in h.backend_hits(marker)]
        if len(out) >= n or time.time() > end:
            return [(m, p, json.loads(r)) for m, p, r in out]
        time.sleep(0.05)


def url(h, t, path, marker):
    return "http://127.0.0.1:%d%s%sbt=%s" % (h.main.port(t), path, "&" if "?" in path else "?",
                                             marker)


def check_echo(h, t, doc, body):
    """The backend (its echo or its hit record) got body and the identity of wk1."""
    eq(doc.get("backend"), t, "backend")
    eq((doc["body_len"], doc["body_sha256"]), (len(body), sha(body.encode())),
       "body at the backend")
    assert_identity(doc, wk_identity(h), forwarded=fwd(t))


def events_text(key=None):
    """An events body as the SDK sends it, with writeKey when key is given."""
    doc = {"batch": [{"type": "track", "event": "Browser test"}]}
    if key is not None:
        doc["writeKey"] = key
    return json.dumps(doc, separators=(",", ":"))


# ---------------------------------------------------------------------------------------
# The four browser cases


@each_target("browser.fetch text/plain body writeKey, no preflight")
def _(h, t):
    b = browser(h)
    m = h.marker()
    body = events_text(h.f["wk1"])
    res = b.fetch(url(h, t, "/v1/events", m), {"body": body})  # text/plain;charset=UTF-8
    doc = page_json(res, 200, "fetch")
    check_echo(h, t, doc, body)
    ct = (doc["env"].get("CONTENT_TYPE") if t == "cgi"
          else [v for k, v in doc["headers"] if k.lower() == "content-type"][0])
    check(ct.startswith("text/plain"), "Content-Type at the backend: %r" % ct)
    reqs = b.requests(m)
    expect_requests(reqs, ["POST"])  # no OPTIONS: a simple request
    assert_browser_cors(b, reqs[0])
    eq(access_lines(h, m, 1), [("POST", 200)], "access log")
    got = hits(h, m)
    eq([x[:2] for x in got], [("POST", "/v1/events?bt=" + m)], "backend hits")
    check_echo(h, t, got[0][2], body)


@each_target("browser.sendBeacon body writeKey")
def _(h, t):
    b = browser(h)
    m = h.marker()
    body = events_text(h.f["wk1"])
    eq(b.beacon(url(h, t, "/v1/events", m), body), True, "sendBeacon queued")
    reqs = b.requests(m)
    expect_requests(reqs, ["POST"])
    eq(reqs[0]["type"], "Ping", "request type")
    eq(reqs[0]["status"], 200, "status" + describe(reqs))
    assert_browser_cors(b, reqs[0])
    eq(access_lines(h, m, 1), [("POST", 200)], "access log")
    # the page cannot read a beacon's response: what reached the backend is in its hit log
    got = hits(h, m)
    eq([x[:2] for x in got], [("POST", "/v1/events?bt=" + m)], "backend hits")
    check_echo(h, t, got[0][2], body)


@each_target("browser.fetch Authorization: Bearer, preflight then POST")
def _(h, t):
    b = browser(h)
    m = h.marker()
    body = events_text()
    res = b.fetch(url(h, t, "/v1/events/track", m), {
        "headers": {"Authorization": "Bearer " + h.f["wk1"], "Content-Type": "application/json"},
        "body": body})
    doc = page_json(res, 200, "fetch")
    check_echo(h, t, doc, body)
    reqs = b.requests(m)
    expect_requests(reqs, ["OPTIONS", "POST"])
    eq(reqs[0]["type"], "Preflight", "first request" + describe(reqs))
    assert_browser_cors(b, reqs[0], preflight=True)
    assert_browser_cors(b, reqs[1])
    eq(access_lines(h, m, 2), [("OPTIONS", 204), ("POST", 200)], "access log")
    # Apache answered the preflight: the backend saw the POST only
    got = hits(h, m)
    eq([x[:2] for x in got], [("POST", "/v1/events/track?bt=" + m)], "backend hits")
    check_echo(h, t, got[0][2], body)


@each_target("browser.401 JSON body readable by the page")
def _(h, t):
    b = browser(h)
    wk = h.f["wk1"]
    unknown = h.secret(("y" if wk[0] == "x" else "x") + wk[1:])  # well-formed, not in the store
    cases = [
        # (what, init, message, preflighted)
        ("unknown body writeKey", {"body": events_text(unknown)},
         WK_BODY_UNKNOWN, False),
        ("no key", {"body": events_text()}, NO_AUTH, False),
        ("unknown Bearer key", {"headers": {"Authorization": "Bearer " + unknown,
                                            "Content-Type": "application/json"},
                                "body": events_text()}, WK_INVALID, True),
    ]
    for what, init, message, pre in cases:
        m = h.marker()
        res = b.fetch(url(h, t, "/v1/events", m), init)
        doc = page_json(res, 401, what)
        eq(doc, {"error": {"code": "Unauthorized", "message": message}}, what + ": error")
        eq(res["body"].encode(), err_body("Unauthorized", message), what + ": exact body")
        eq(res["contentType"], "application/json; charset=utf-8", what + ": Content-Type")
        reqs = b.requests(m)
        expect_requests(reqs, ["OPTIONS", "POST"] if pre else ["POST"])
        if pre:
            assert_browser_cors(b, reqs[0], preflight=True)
        assert_browser_cors(b, reqs[-1])
        eq(hits(h, m, timeout=0), [], what + ": backend hits")


# ---------------------------------------------------------------------------------------
# Deduplication and controls (the browser must fail when a header is missing or duplicated)


@each_target("browser.backend's own CORS headers deduplicated")
def _(h, t):
    b = browser(h)
    for what, init in (("text/plain body writeKey", {"body": events_text(h.f["wk1"])}),
                       ("Bearer", {"headers": {"Authorization": "Bearer " + h.f["wk1"],
                                               "Content-Type": "application/json"},
                                   "body": events_text()})):
        m = h.marker()
        res = b.fetch(url(h, t, "/v1/events?cors=1", m), init)
        check_echo(h, t, page_json(res, 200, what), init["body"])
        reqs = b.requests(m)
        expect_requests(reqs, ["OPTIONS", "POST"] if what == "Bearer" else ["POST"])
        assert_browser_cors(b, reqs[-1])  # the backend sent ACAO: *; the page's origin wins
        eq([x[:2] for x in hits(h, m)], [("POST", "/v1/events?cors=1&bt=" + m)],
           what + ": backend hits")


def rejects(b, req):
    """The header check of the positive tests fails on what a control sent, too."""
    try:
        assert_browser_cors(b, req)
    except Failure:
        return
    raise Failure("assert_browser_cors accepted the control's response:\n%s" % req["raw"])


@each_target("browser.control: origin not allowed -> the fetch fails")
def _(h, t):
    # KrenalisAuthCORSAllowOrigin lists another origin: the module sends no ACAO for ours
    b = browser(h)
    for what, init, errors, hit in (
            ("text/plain body writeKey", {"body": events_text(h.f["wk1"])},
             ["MissingAllowOriginHeader"], True),
            ("401", {"body": events_text()}, ["MissingAllowOriginHeader"], False),
            ("Bearer", {"headers": {"Authorization": "Bearer " + h.f["wk1"],
                                    "Content-Type": "application/json"},
                        "body": events_text()},
             [None, "PreflightMissingAllowOriginHeader"], False)):
        m = h.marker()
        res = b.fetch(url(h, t, "/v1/browser-other/x", m), init)
        eq(res.get("error"), "TypeError: Failed to fetch", what + ": page result %r" % res)
        reqs = b.requests(m)
        eq([r["cors_error"] for r in reqs], errors, what + ": CORS errors" + describe(reqs))
        for r in reqs:
            if r["raw"] is not None:
                eq(raw_response(r).all("Access-Control-Allow-Origin"), [],
                   what + ": Access-Control-Allow-Origin")
        # a simple request is still delivered (CORS only hides the answer); after a failed
        # preflight the POST is never sent
        eq([x[:2] for x in hits(h, m, 1 if hit else 0, timeout=3 if hit else 0)],
           [("POST", "/v1/browser-other/x?bt=" + m)] if hit else [], what + ": backend hits")


@each_target("browser.control: no Access-Control-Allow-Origin -> the fetch fails")
def _(h, t):
    b = browser(h)
    m = h.marker()
    res = b.fetch(url(h, t, "/open/browser-none", m), {"body": "{}"})
    eq(res.get("error"), "TypeError: Failed to fetch", "page result %r" % res)
    reqs = b.requests(m)
    eq([(r["status"], r["cors_error"]) for r in reqs], [(200, "MissingAllowOriginHeader")],
       "browser" + describe(reqs))
    rejects(b, reqs[0])


@each_target("browser.control: duplicated Access-Control-Allow-Origin -> the fetch fails")
def _(h, t):
    b = browser(h)
    m = h.marker()
    res = b.fetch(url(h, t, "/open/browser-dup/x?cors=1", m), {"body": "{}"})
    eq(res.get("error"), "TypeError: Failed to fetch", "page result %r" % res)
    reqs = b.requests(m)
    eq([(r["status"], r["cors_error"]) for r in reqs], [(200, "MultipleAllowOriginValues")],
       "browser" + describe(reqs))
    eq(sorted(raw_response(reqs[0]).all("Access-Control-Allow-Origin")), sorted(["*", b.origin]),
       "the control's headers")
    rejects(b, reqs[0])
