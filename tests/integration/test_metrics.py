"""Issue 16: metrics (SPEC §12), mod_status's section and KRENALIS_REFUSAL in the access log.

A server of its own ("metrics": fresh counters, several children) gets a known mix of requests
from several client threads, on new and keep-alive connections, while a real Prometheus server
(Debian package `prometheus`) scrapes it every second. Then: the endpoint's counts are exact,
`promtool check metrics` passes on its text, Prometheus's `sum by (outcome)` equals what was
sent, /server-status?auto says the same in short, and the access log (the LogFormat of
docs/operations.md) holds each refusal's reason and no token.

`KrenalisAuthMetrics Off` (a place, or the whole server): requests there, accepted and refused,
move no figure at all, while the access log still gets their refusal reasons; `On`, inside an
Off place or under an Off server, and the default count as before.
"""
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import threading
import time
import urllib.parse
import urllib.request

from harness import (Failure, KeepAlive, builtin_modules, check, eq, free_port, http, mod,
                     random_alnum, random_api_token, random_id, terminate, test)

DOCS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "docs")


def documented_log_conf(logs, name):
    """The access-log lines of docs/operations.md ("The access log"), word for word: the
    LogFormat, and the pair that keeps settings paths (write keys) out of the log."""
    with open(os.path.join(DOCS, "operations.md")) as fh:
        text = fh.read()
    section = text.split("## The access log", 1)[1].split("\n## ", 1)[0]
    out = []
    for ln in section.splitlines():
        words = ln.strip().split(" ", 1)
        if not ln.startswith("    ") or words[0] not in ("LogFormat", "CustomLog", "SetEnvIf"):
            continue
        if words[0] == "CustomLog" and "env=" not in ln:
            continue  # the plain line; the pair below replaces it
        out.append(ln.strip().replace("${APACHE_LOG_DIR}/krenalis-access.log",
                                      "%s/%s-auth-access.log" % (logs, name)))
    if len([ln for ln in out if ln.startswith("CustomLog")]) != 2:
        raise Failure("docs/operations.md: the access log lines are not where the test looks")
    return "\n".join(out) + "\n"


CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
CLIENT_THREADS = 8
KEEPALIVE_SESSIONS = 6
KEEPALIVE_REQUESTS = 5


def metrics_conf(h, srv_logs, name="metrics"):
    loads = ""
    if "status" not in builtin_modules():
        loads = "LoadModule status_module %s\n" % mod("status")
    return loads + documented_log_conf(srv_logs, name) + """\
CustomLog "{logs}/{name}-pid-access.log" "%P %U%q"
<Location /krenalis-metrics>
    SetHandler krenalis-auth-metrics
    Require all granted
</Location>
<Location /server-status>
    SetHandler server-status
    Require all granted
</Location>
""".format(logs=srv_logs, name=name)


# --------------------------------------------------------------------------------------
# The traffic: each kind is one request and what it must count.
# (endpoint, outcome, status, key_type, reason or None, decided)


def kinds(h):
    f = h.f
    k1, k3, wk1 = f["k1"], f["k3"], f["wk1"]
    big = b"{" + b" " * 600000 + b"}"
    pre = [("Origin", "https://shop.example"), ("Access-Control-Request-Method", "POST")]
    org_token = "org_" + random_alnum(43)
    h.secret(org_token)
    settings_unknown = h.secret(random_alnum(32))
    return [
        # name, count, (method, path, headers, body), expected
        ("api-ok", 30, ("GET", "/v1/m/ok", [("Authorization", "Bearer " + k1)], None),
         ("api", "accepted", 200, "api", None, True)),
        ("ingest-ok", 20, ("POST", "/v1/events", [("Authorization", "Bearer " + wk1),
                                                   ("Content-Type", "application/json")],
                           b'{"type":"track"}'),
         ("ingestion", "accepted", 200, "event-write", None, True)),
        ("unknown", 20, ("GET", "/v1/m/unknown", lambda: [("Authorization", "Bearer " +
                                                            h.secret(random_api_token()))], None),
         ("api", "refused", 401, "none", "unknown-key", True)),
        ("malformed", 10, ("GET", "/v1/m/malformed", [("Authorization", "Bearer api_" + "A" * 49)],
                           None),
         ("api", "refused", 401, "none", "malformed", True)),
        ("missing", 10, ("GET", "/v1/m/missing", [], None),
         ("api", "refused", 401, "none", "missing-credential", True)),
        ("disabled", 10, ("GET", "/v1/m/disabled", [("Authorization", "Bearer " + k3)], None),
         ("api", "refused", 422, "none", "disabled-org", True)),
        ("wrong-endpoint", 10, ("GET", "/v1/m/wk", [("Authorization", "Bearer " + wk1)], None),
         ("api", "refused", 400, "none", "wrong-endpoint", True)),
        ("ws-unknown", 5, ("GET", "/v1/m/ws", lambda: [("Authorization", "Bearer " + k1),
                                                        ("Krenalis-Workspace", random_id())],
                           None),
         ("api", "refused", 404, "none", "workspace-unknown", True)),
        ("too-large", 3, ("POST", "/v1/events", [("Authorization", "Bearer " + wk1)], big),
         ("ingestion", "refused", 413, "none", "body-too-large", True)),
        ("preflight", 10, ("OPTIONS", "/v1/events", pre, None),
         ("preflight", "accepted", 204, "none", None, False)),
        ("orgs-key", 5, ("GET", "/v1/organizations", [("Authorization", "Bearer " + org_token)],
                         None),
         ("organizations", "refused", 401, "none", "orgs-key", True)),
        ("settings-ok", 4, ("GET", "/v1/events/settings/" + wk1, [], None),
         ("settings", "accepted", 200, "event-write", None, True)),
        ("settings-unknown", 4, ("GET", "/v1/events/settings/" + settings_unknown, [], None),
         ("settings", "refused", 401, "none", "unknown-key", True)),
        ("not-allowed", 5, ("GET", "/v1/authz/type-other/x", [("Authorization", "Bearer " + k1)],
                            None),
         ("api", "refused", 403, "none", "not-allowed", True)),
    ]


def run_load(h, srv):
    """Sends the traffic from CLIENT_THREADS threads; returns {marker: kind name}, the kinds
    and the keep-alive count. Every request carries a marker in its query string."""
    ks = kinds(h)
    work = queue.Queue()
    sent = {}
    for name, n, req, exp in ks:
        for i in range(n):
            m = "q%s%d" % (name.replace("-", ""), i)
            sent[m] = name
            work.put(("one", m, req, exp))
    for i in range(KEEPALIVE_SESSIONS):
        work.put(("ka", "ka%d" % i, None, None))
    errors = []

    def worker():
        while True:
            try:
                what, m, req, exp = work.get_nowait()
            except queue.Empty:
                return
            try:
                if what == "ka":
                    with KeepAlive(srv.port_cgi) as ka:
                        for j in range(KEEPALIVE_REQUESTS):
                            r = ka.send("GET", "/v1/m/ka?m=%s-%d" % (m, j),
                                        [("Authorization", "Bearer " + h.f["k1"])])
                            if r.status != 200:
                                errors.append("keep-alive %s-%d: %d" % (m, j, r.status))
                    continue
                method, path, headers, body = req
                headers = headers() if callable(headers) else headers
                r = http(srv.port_cgi, method, "%s?m=%s" % (path, m), headers, body)
                if r.status != exp[2]:
                    errors.append("%s: status %d, want %d" % (m, r.status, exp[2]))
            except Exception as e:  # noqa: BLE001 - reported as a failure below
                errors.append("%s: %r" % (m, e))

    threads = [threading.Thread(target=worker) for _ in range(CLIENT_THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    if errors:
        raise Failure("load: %d requests went wrong: %s" % (len(errors), "; ".join(errors[:5])))
    return sent, ks


def expected(ks):
    series, reasons, decided = {}, {}, 0
    for name, n, req, (ep, outcome, status, kt, reason, dec) in ks:
        key = (ep, outcome, str(status), kt)
        series[key] = series.get(key, 0) + n
        if reason:
            reasons[reason] = reasons.get(reason, 0) + n
        if dec:
            decided += n
    ka = KEEPALIVE_SESSIONS * KEEPALIVE_REQUESTS
    key = ("api", "accepted", "200", "api")
    series[key] = series.get(key, 0) + ka
    return series, reasons, decided + ka


# --------------------------------------------------------------------------------------
# The exposition format, parsed


SAMPLE = re.compile(r'^([a-z_]+)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-z_]+)="([^"]*)"')


def parse(text):
    """{(name, ((label, value), ...)): float}; fails on a line that is not a sample or a
    # HELP / # TYPE line."""
    out = {}
    for ln in text.splitlines():
        if ln.startswith("# HELP ") or ln.startswith("# TYPE "):
            continue
        m = SAMPLE.match(ln)
        if not m:
            raise Failure("not a sample line: %r" % ln)
        labels = tuple(sorted(LABEL.findall(m.group(2) or "")))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def series_of(samples, name):
    """{(endpoint, outcome, status, key_type): value} of a family."""
    out = {}
    for (n, lb), v in samples.items():
        if n == name:
            d = dict(lb)
            out[(d["endpoint"], d["outcome"], d["status"], d["key_type"])] = v
    return out


# --------------------------------------------------------------------------------------
# Prometheus


class Prometheus:
    def __init__(self, h, target_port):
        self.h = h
        self.dir = h.root / "prometheus"
        self.dir.mkdir()
        self.port = free_port()
        conf = self.dir / "prometheus.yml"
        conf.write_text(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
            "scrape_configs:\n  - job_name: krenalis\n    metrics_path: /krenalis-metrics\n"
            "    static_configs:\n      - targets: ['127.0.0.1:%d']\n" % target_port)
        log = open(h.root / "logs" / "prometheus.log", "ab")
        self.proc = subprocess.Popen(
            ["prometheus", "--config.file=%s" % conf, "--storage.tsdb.path=%s" % (self.dir / "data"),
             "--web.listen-address=127.0.0.1:%d" % self.port, "--log.level=warn"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
        log.close()
        h.procs.append(self.proc)
        deadline = time.time() + 30
        while not self.ready():
            if time.time() > deadline or self.proc.poll() is not None:
                self.stop()
                raise Failure("prometheus did not start; see logs/prometheus.log")
            time.sleep(0.2)

    def ready(self):
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/-/ready" % self.port, timeout=5) as r:
                return r.status == 200
        except OSError:  # refused, or 503 while it starts
            return False

    def query(self, q):
        url = "http://127.0.0.1:%d/api/v1/query?%s" % (self.port, urllib.parse.urlencode({"query": q}))
        with urllib.request.urlopen(url, timeout=10) as resp:
            doc = json.loads(resp.read())
        if doc.get("status") != "success":
            raise Failure("prometheus query %s: %r" % (q, doc))
        return doc["data"]["result"]

    def wait_scrapes(self, n, timeout=20):
        """Waits until the target has been scraped successfully n times; returns how many."""
        deadline, got = time.time() + timeout, 0
        while time.time() < deadline:
            res = self.query('sum_over_time(up{job="krenalis"}[5m])')
            got = int(float(res[0]["value"][1])) if res else 0
            if got >= n:
                return got
            time.sleep(0.3)
        raise Failure("prometheus scraped the metrics %d times, want %d; see "
                      "logs/prometheus.log" % (got, n))

    def by_outcome(self):
        res = self.query("sum by (outcome) (krenalis_auth_requests_total)")
        return {r["metric"].get("outcome"): float(r["value"][1]) for r in res}

    def stop(self):
        terminate(self.proc, 10)
        if self.proc in self.h.procs:
            self.h.procs.remove(self.proc)


# --------------------------------------------------------------------------------------


@test("metrics.counts-prometheus-status-log")
def _(h):
    if shutil.which("prometheus") is None or shutil.which("promtool") is None:
        raise Failure("prometheus / promtool not installed (make deps installs the Debian "
                      "package prometheus)")
    srv = h.httpd("metrics", global_extra=metrics_conf(h, h.root / "logs"))
    srv.start()
    prom = None
    try:
        # Nothing counted yet: no request series, every reason at 0.
        r = http(srv.port_cgi, "GET", "/krenalis-metrics")
        eq(r.status, 200, "status" + r.brief())
        eq(r.one("Content-Type"), CONTENT_TYPE, "Content-Type")
        s0 = parse(r.body.decode())
        eq(series_of(s0, "krenalis_auth_requests_total"), {}, "requests before any")
        eq(s0[("krenalis_auth_refusals_total", (("reason", "unknown-key"),))], 0, "refusals")
        eq(s0[("krenalis_auth_build_info", (("version", h_version()),))], 1, "build_info")
        check(s0.get(("krenalis_auth_store_last_txnid", ())) is not None,
              "krenalis_auth_store_last_txnid missing")

        prom = Prometheus(h, srv.port_cgi)
        prom.wait_scrapes(1)
        t0 = time.time()
        sent, ks = run_load(h, srv)
        load_s = time.time() - t0
        exp_series, exp_reasons, exp_decided = expected(ks)

        r = http(srv.port_cgi, "GET", "/krenalis-metrics")
        text = r.body.decode()
        s = parse(text)
        eq(series_of(s, "krenalis_auth_requests_total"), {k: float(v) for k, v in exp_series.items()},
           "krenalis_auth_requests_total series")
        for reason in ("missing-credential", "repeated-header", "invalid-authorization",
                       "wrong-endpoint", "malformed", "unknown-key", "disabled-org",
                       "workspace-invalid", "workspace-unknown", "workspace-policy",
                       "connection-id", "unknown-connection", "body-write-key", "body-too-large",
                       "body-unreadable", "settings-path", "orgs-key", "not-allowed",
                       "unavailable"):
            eq(s[("krenalis_auth_refusals_total", (("reason", reason),))],
               float(exp_reasons.get(reason, 0)), "refusals_total{reason=%s}" % reason)
        eq(s[("krenalis_auth_decision_seconds_count", ())], float(exp_decided), "decisions")
        eq(s[("krenalis_auth_decision_seconds_bucket", (("le", "+Inf"),))], float(exp_decided),
           "+Inf bucket")
        eq(s[("krenalis_auth_memo_hits_total", ())],
           float(KEEPALIVE_SESSIONS * (KEEPALIVE_REQUESTS - 1)), "memo hits")
        eq(s[("krenalis_auth_store_faults_total", ())], 0.0, "store faults")
        eq(s[("krenalis_auth_store_reopens_total", ())], 0.0, "store reopens")
        check(not any("mirror" in n for n, _ in s), "mirror gauges on a store that is no mirror")
        # No label holds a key, a token or an ID.
        for sec in list(h.secrets) + [h.f[k] for k in h.f if k.endswith("_id") or
                                      k.startswith(("org", "ws", "conn"))]:
            if isinstance(sec, str) and sec in text:
                raise Failure("a credential or ID in the metrics: %s..." % sec[:6])

        p = subprocess.run(["promtool", "check", "metrics"], input=r.body,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
        eq((p.returncode, p.stdout.decode()), (0, ""), "promtool check metrics")

        r = http(srv.port_cgi, "POST", "/krenalis-metrics", body="x")
        eq(r.status, 405, "POST to the metrics handler")
        r = http(srv.port_cgi, "HEAD", "/krenalis-metrics")
        eq((r.status, r.body), (200, b""), "HEAD")

        # mod_status, in short: the same totals.
        total = {o: sum(v for (ep, out, st, kt), v in exp_series.items() if out == o)
                 for o in ("accepted", "refused", "unavailable")}
        r = http(srv.port_cgi, "GET", "/server-status?auto")
        eq(r.status, 200, "server-status" + r.brief())
        body = r.body.decode()
        for line in ("KrenalisAuthAccepted: %d" % total["accepted"],
                     "KrenalisAuthRefused: %d" % total["refused"],
                     "KrenalisAuthUnavailable: 0",
                     "KrenalisAuthDecisions: %d" % exp_decided,
                     "KrenalisAuthMemoHits: %d" % (KEEPALIVE_SESSIONS * (KEEPALIVE_REQUESTS - 1)),
                     "KrenalisAuthRefusal-unknown-key: %d" % exp_reasons["unknown-key"]):
            check("\n" + line + "\n" in body, "server-status?auto lacks %r:\n%s" % (line, body))
        r = http(srv.port_cgi, "GET", "/server-status")
        check("<h2>Krenalis auth</h2>" in r.body.decode(), "server-status: no Krenalis section")

        # Prometheus scraped it while the load ran: its sums by outcome are what was sent.
        want = {o: float(v) for o, v in total.items() if v}
        deadline, got = time.time() + 20, None
        while time.time() < deadline:
            got = prom.by_outcome()
            if got == want:
                break
            time.sleep(0.5)
        eq(got, want, "prometheus: sum by (outcome) (krenalis_auth_requests_total)")
        res = prom.query("sum(krenalis_auth_requests_total)")
        eq(float(res[0]["value"][1]), float(sum(total.values())), "prometheus: sum")
        # Scraped before the load and since: the sums above come from a scrape after it.
        scrapes = prom.wait_scrapes(3)

        # The access log: every refusal with its reason, accepted requests without one.
        log = wait_log(srv, h.root / "logs" / "metrics-auth-access.log", sent)
        reasons = {name: exp[4] for name, n, req, exp in ks}
        wk1_id = h.write_key_id(h.f["conn1"], h.f["wk1"])
        ident = {"api-ok": " key=%s org=%s ws=- type=api refusal=-" % (h.f["k1_id"], h.f["org1"]),
                 "ingest-ok": " key=%s org=%s ws=%s type=event-write refusal=-" % (
                     wk1_id, h.f["org1"], h.f["ws1a"])}
        settings = [ln for ln in (h.root / "logs" / "metrics-auth-access.log").read_text(
            "latin-1").splitlines() if '"GET /v1/events/settings/..." ' in ln]
        eq(sorted(ln.rsplit(" ", 1)[1] for ln in settings),
           ["refusal=-"] * 4 + ["refusal=unknown-key"] * 4, "settings lines in the access log")
        for marker, name in sent.items():
            if name.startswith("settings"):
                continue
            ln = log[marker]
            want_reason = reasons[name] or "-"
            check(ln.endswith(" refusal=%s" % want_reason),
                  "access log, %s: want refusal=%s: %r" % (name, want_reason, ln))
            if name in ident:
                check(ident[name] in ln, "access log, %s: want %r in %r" % (name, ident[name], ln))
        # The load was spread over several children (and threads): counted without a loss.
        pids = {ln.split(" ", 1)[0] for ln in (h.root / "logs" / "metrics-pid-access.log")
                .read_text("latin-1").splitlines() if "m=q" in ln or "m=ka" in ln}
        check(len(pids) >= 2, "the load reached %d child process(es), want several" % len(pids))
        text = (h.root / "logs" / "metrics-auth-access.log").read_text("latin-1")
        for sec in h.secrets:
            check(sec not in text, "a credential in the access log: %s..." % sec[:6])
        # A graceful restart keeps the counts (the shared memory lives in the parent); new
        # children count on from there.
        before = series_of(parse(http(srv.port_cgi, "GET", "/krenalis-metrics").body.decode()),
                           "krenalis_auth_requests_total")
        os.kill(srv.proc.pid, signal.SIGUSR1)
        deadline = time.time() + 20
        while not restarted(srv):
            check(time.time() < deadline, "no graceful restart in the error log")
            time.sleep(0.2)
        for i in range(6):
            r = http(srv.port_cgi, "GET", "/v1/m/after?m=g%d" % i,
                     [("Authorization", "Bearer " + h.f["k1"])])
            eq(r.status, 200, "after the graceful restart" + r.brief())
        after = series_of(parse(http(srv.port_cgi, "GET", "/krenalis-metrics").body.decode()),
                          "krenalis_auth_requests_total")
        key = ("api", "accepted", "200", "api")
        before[key] += 6
        eq(after, before, "requests_total after a graceful restart and 6 more requests")
        print("# metrics: %d requests from %d threads to %d children in %.1f s; prometheus "
              "agreed after %d scrapes" % (sum(exp_series.values()), CLIENT_THREADS, len(pids),
                                           load_s, scrapes))
    finally:
        if prom:
            prom.stop()
        srv.stop()


def h_version():
    src = (os.path.dirname(os.path.abspath(__file__)) + "/../../src/version.h")
    with open(src) as fh:
        return re.search(r'#define KA_VERSION "([^"]+)"', fh.read()).group(1)


def restarted(srv):
    """Whether the error log says that a graceful restart is done (prefork and event word the
    request differently)."""
    log = srv.error_log.read_text("latin-1") if srv.error_log.exists() else ""
    at = max(log.rfind("Graceful restart requested"), log.rfind("Doing graceful restart"))
    return at >= 0 and "resuming normal operations" in log[at:]


def wait_log(srv, path, sent):
    """{marker: access log line} once every marker is logged (the log line is written after the
    response)."""
    deadline = time.time() + 10
    while True:
        lines = {}
        if path.exists():
            for ln in path.read_text("latin-1").splitlines():
                m = re.search(r"[?&]m=([a-z0-9-]+)", ln)
                if m:
                    lines[m.group(1)] = ln
        missing = [m for m in sent if m not in lines and not sent[m].startswith("settings")]
        if not missing:
            return lines
        if time.time() > deadline:
            raise Failure("access log lacks %d requests (%s...)" % (len(missing), missing[0]))
        time.sleep(0.2)


@test("metrics.store: reopens, faults and 503s (outcome unavailable) counted")
def _(h):
    store, key = store_with_key(h, "store-metrics-faults")
    srv = h.httpd("metrics-faults", store=store,
                  global_extra=metrics_conf(h, h.root / "logs", "metrics-faults"))
    srv.start()
    data = store / "data.mdb"
    auth = [("Authorization", "Bearer " + key)]

    seen = []

    def get():
        seen.append(http(srv.port_cgi, "GET", "/v1/m/store", auth).status)
        return seen[-1]

    def until(status, what):
        deadline = time.time() + 10
        while get() != status:
            check(time.time() < deadline, "no %d %s" % (status, what))
            time.sleep(0.2)

    def scrape():
        return parse(http(srv.port_cgi, "GET", "/krenalis-metrics").body.decode())

    try:
        eq(get(), 200, "before any fault")
        txn0 = scrape()[("krenalis_auth_store_last_txnid", ())]
        # Replaced (a new inode, as a restored backup): every child reopens it.
        subprocess.run(["cp", "-a", str(data), str(data) + ".new"], check=True)
        os.rename(str(data) + ".new", data)
        time.sleep(1.2)
        until(200, "after the store was replaced")
        h.new_org(store=store)  # a commit: the gauge moves
        s = scrape()
        check(s[("krenalis_auth_store_last_txnid", ())] > txn0,
              "krenalis_auth_store_last_txnid did not move after a commit")
        # Gone: 503 (outcome unavailable, reason unavailable), a fault per failed open.
        os.rename(data, str(data) + ".away")
        time.sleep(1.2)
        statuses = [get() for _ in range(8)]
        check(set(statuses) == {503}, "with data.mdb gone: %r" % statuses)
        os.rename(str(data) + ".away", data)
        until(200, "once data.mdb is back")
        s = scrape()
        series = series_of(s, "krenalis_auth_requests_total")
        n503 = float(seen.count(503))
        eq(series.get(("api", "unavailable", "503", "none")), n503, "503s counted as unavailable")
        eq(s[("krenalis_auth_refusals_total", (("reason", "unavailable"),))], n503,
           "refusals_total{reason=unavailable}")
        eq(series.get(("api", "accepted", "200", "api")), float(seen.count(200)), "200s counted")
        eq(sorted(set(seen)), [200, 503], "statuses seen")
        check(s[("krenalis_auth_store_faults_total", ())] >= 1,
              "no store fault counted: %r" % s[("krenalis_auth_store_faults_total", ())])
        check(s[("krenalis_auth_store_reopens_total", ())] >= 2,
              "store reopens (after the replacement, and once back): %r"
              % s[("krenalis_auth_store_reopens_total", ())])
        log = (h.root / "logs" / "metrics-faults-auth-access.log").read_text("latin-1")
        eq((log.count('" 503 '), log.count(" refusal=unavailable\n")), (int(n503), int(n503)),
           "503 lines and their reason in the access log")
    finally:
        srv.stop()


def poke_meta(store, key, value):
    """Writes one record of the store's meta database with tests/reliability/lmdb_poke.py (LMDB
    itself, through ctypes): the records `krenalis-keys mirror` keeps in a mirrored store."""
    tool = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reliability",
                        "lmdb_poke.py")
    p = subprocess.run(["python3", tool, str(store), "meta", "put", key.encode().hex(),
                        value.hex()], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=60)
    eq((p.returncode, p.stdout.decode()), (0, ""), "lmdb_poke.py meta put %s" % key)


def store_with_key(h, name):
    """A key store of its own under h.root/NAME, with one organization and an API key of it."""
    store = h.root / name
    h.init_store(store=store)
    _, key = h.new_api_key(h.new_org(store=store), store=store)
    return store, key


def as_mirror(store, version):
    """Makes store look mirrored, as `krenalis-keys mirror` records it (src/keystore.c,
    docs/keystore.md), at version; returns its mark (mirror-confirmed), made now."""
    poke_meta(store, "mirror-source", b"7000000000000000001/krenalis/public")
    poke_meta(store, "mirror-conninfo", b"host=127.0.0.1 dbname=krenalis")
    poke_meta(store, "mirror-version", version.to_bytes(8, "big"))
    mark = store / "mirror-confirmed"
    mark.write_bytes(b"")
    return mark


@test("metrics.mirror: the mirror gauges of a mirrored store, none for another")
def _(h):
    store, key = store_with_key(h, "store-metrics-mirror")
    mark = as_mirror(store, 4242)
    os.utime(mark, (1764680000.5, 1764680000.5))
    srv = h.httpd("metrics-mirror", store=store,
                  global_extra=metrics_conf(h, h.root / "logs", "metrics-mirror"))
    srv.start()
    try:
        eq(http(srv.port_cgi, "GET", "/v1/m/mirror", [("Authorization", "Bearer " + key)]).status,
           200, "a key of the mirrored store")
        r = http(srv.port_cgi, "GET", "/krenalis-metrics")
        s = parse(r.body.decode())
        eq(s.get(("krenalis_auth_mirror_version", ())), 4242.0, "krenalis_auth_mirror_version")
        eq(s.get(("krenalis_auth_mirror_confirmed_timestamp_seconds", ())), 1764680000.5,
           "krenalis_auth_mirror_confirmed_timestamp_seconds")
        p = subprocess.run(["promtool", "check", "metrics"], input=r.body,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
        eq((p.returncode, p.stdout.decode()), (0, ""), "promtool check metrics (mirror)")
        # The mark moves: the gauge follows at the next scrape.
        os.utime(mark, (1764680100.0, 1764680100.0))
        s = parse(http(srv.port_cgi, "GET", "/krenalis-metrics").body.decode())
        eq(s.get(("krenalis_auth_mirror_confirmed_timestamp_seconds", ())), 1764680100.0,
           "the mark moved")
    finally:
        srv.stop()


@test("mirror.stale: a request whose headers arrive after the mark went stale -> 503")
def _(h):
    # KrenalisAuthMaxStaleness holds a request to the mark as it is when the request is decided,
    # not when its request line came (r->request_time): a client that sends its headers slowly
    # would otherwise pass on a mirror that stopped confirming, for as long as they take.
    store, key = store_with_key(h, "store-stale-slow")
    mark = as_mirror(store, 1)
    srv = h.httpd("stale-slow", store=store, global_extra="KrenalisAuthMaxStaleness 1\n")
    srv.start()
    auth = [("Authorization", "Bearer " + key)]
    try:
        with KeepAlive(srv.port_cgi) as c:
            os.utime(mark)  # confirmed now
            eq(c.send("GET", "/v1/m/stale", auth).status, 200, "a fresh mark")
            os.utime(mark)  # confirmed again as the request line goes
            c.sock.sendall(b"GET /v1/m/stale HTTP/1.1\r\n")
            time.sleep(2.2)  # the mark is 2 s old (in whole seconds) when the headers come
            r = c.send_after_line("GET", "/v1/m/stale", auth)
            eq(r.status, 503, "a stale mark, headers sent slowly")
        eq(http(srv.port_cgi, "GET", "/v1/m/stale", auth).status, 503, "a stale mark")
    finally:
        srv.stop()


# --------------------------------------------------------------------------------------
# KrenalisAuthMetrics On|Off: a place whose requests the metrics leave out


def switch_places(prefix, setting):
    """The Locations of one place: PREFIX with `KrenalisAuthMetrics SETTING` (none when
    SETTING is None), PREFIX/deny/ where a Require line denies an API key, PREFIX/ingest/ an
    ingestion endpoint whose 413 is an internal redirect (so the access log reads the reason
    from the last request of the chain, where log_transaction puts it)."""
    return ("<Location {p}>\n    KrenalisAuthMetrics {s}\n</Location>\n" if setting else "") \
        .format(p=prefix, s=setting) + """\
<Location {p}deny/>
    AuthzSendForbiddenOnFailure On
    Require krenalis-key-type event-write
</Location>
<Location {p}ingest/>
    KrenalisAuthEndpoint ingestion
    ErrorDocument 413 /open/too-large
</Location>
""".format(p=prefix)


def conf(h):
    """The switch's places, in the CGI virtual host of every server (after its <Location /v1/>,
    so that their Require lines win): an Off place with an On place inside it, and an On
    place for a server whose own setting is Off. They change nothing elsewhere."""
    return {"cgi": switch_places("/v1/nometrics/", "Off") +
            switch_places("/v1/nometrics/on/", "On") + switch_places("/v1/on/", "On") +
            DENIED_ERRORDOC}


# A Require line that denies an API key, answered by a local ErrorDocument (a CGI page outside
# the module's places) (metrics.denied-errordoc).
DENIED_ERRORDOC = """\
<Location /v1/denyerr/>
    AuthzSendForbiddenOnFailure On
    Require krenalis-key-type event-write
    ErrorDocument 403 /open/denied
</Location>
"""

KA_SWITCH = 4  # requests of the keep-alive session: the first decides, the others hit the memo


def switch_traffic(h, srv, tag, api, deny, ingest):
    """One of each kind of request the module counts, to the places given (api: a prefix of
    the API endpoint, deny: one where Require denies the key, ingest: an ingestion path), each
    with the marker m=TAG-KIND; then a keep-alive session of KA_SWITCH requests with one key.
    Returns ({marker: refusal reason or None}, the deltas the metrics must show when counted)."""
    f = h.f
    auth = lambda t: ("Authorization", "Bearer " + t)  # noqa: E731
    pre = [("Origin", "https://shop.example"), ("Access-Control-Request-Method", "POST")]
    big = b"{" + b" " * 600000 + b"}"
    kinds = [
        # kind, method, path, headers, body, (endpoint, outcome, status, key_type), reason,
        # decisions
        ("ok", "GET", api + "ok", [auth(f["k1"])], None, ("api", "accepted", "200", "api"),
         None, 1),
        ("unknown", "GET", api + "unknown", [auth(h.secret(random_api_token()))], None,
         ("api", "refused", "401", "none"), "unknown-key", 1),
        ("missing", "GET", api + "missing", [], None, ("api", "refused", "401", "none"),
         "missing-credential", 1),
        ("denied", "GET", deny + "x", [auth(f["k1"])], None, ("api", "refused", "403", "none"),
         "not-allowed", 1),
        ("ingest", "POST", ingest, [auth(f["wk1"]), ("Content-Type", "application/json")],
         b'{"type":"track"}', ("ingestion", "accepted", "200", "event-write"), None, 1),
        ("too-large", "POST", ingest, [auth(f["wk1"])], big,
         ("ingestion", "refused", "413", "none"), "body-too-large", 1),
        ("preflight", "OPTIONS", ingest, pre, None, ("preflight", "accepted", "204", "none"),
         None, 0),
    ]
    want, sent = {}, {}

    def add(key, n):
        want[key] = want.get(key, 0.0) + n

    for kind, method, path, headers, body, series, reason, decisions in kinds:
        m = "%s-%s" % (tag, kind)
        r = http(srv.port_cgi, method, "%s?m=%s" % (path, m), headers, body)
        eq(r.status, int(series[2]), "%s %s (%s)%s" % (method, path, m, r.brief()))
        sent[m] = reason
        add(("krenalis_auth_requests_total", tuple(sorted(zip(
            ("endpoint", "outcome", "status", "key_type"), series)))), 1)
        if reason:
            add(("krenalis_auth_refusals_total", (("reason", reason),)), 1)
        add(("krenalis_auth_decision_seconds_count", ()), decisions)
    with KeepAlive(srv.port_cgi) as ka:
        for i in range(KA_SWITCH):
            m = "%s-ka%d" % (tag, i)
            r = ka.send("GET", "%ska?m=%s" % (api, m), [auth(f["k1"])])
            eq(r.status, 200, "keep-alive request %s%s" % (m, r.brief()))
            sent[m] = None
    add(("krenalis_auth_requests_total", (("endpoint", "api"), ("key_type", "api"),
                                          ("outcome", "accepted"), ("status", "200"))), KA_SWITCH)
    add(("krenalis_auth_decision_seconds_count", ()), KA_SWITCH)
    add(("krenalis_auth_memo_hits_total", ()), KA_SWITCH - 1)
    return sent, want


def scrape(srv):
    r = http(srv.port_cgi, "GET", "/krenalis-metrics")
    eq(r.status, 200, "the metrics handler" + r.brief())
    return parse(r.body.decode())


def deltas(after, before):
    """{sample: after - before} of the samples that moved (a new series counts from 0)."""
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k, 0.0)}


def counted(d):
    """The deltas a request's count makes and the test can predict: requests, refusals, the
    number of decisions timed and memo hits (not the histogram's buckets and sum, which
    depend on the time taken)."""
    return {k: v for k, v in d.items()
            if k[0] in ("krenalis_auth_requests_total", "krenalis_auth_refusals_total",
                        "krenalis_auth_decision_seconds_count", "krenalis_auth_memo_hits_total")}


def counted_after(h, srv, name, traffic, before, what):
    """Sends switch_traffic(*traffic), waits for its log lines, and checks that the metrics
    moved by exactly what it counts; returns the scrape after it."""
    sent, want = switch_traffic(h, srv, *traffic)
    check_refusals_logged(srv, name, sent)
    after = scrape(srv)
    eq(counted(deltas(after, before)), want, what)
    return after


def check_refusals_logged(srv, name, sent):
    """Every marker's access-log line (the LogFormat of docs/operations.md) ends with its
    refusal reason, or refusal=- when it was accepted. Waits for the lines: mod_log_config
    writes them after the module's log_transaction has counted (or not), so a scrape after
    this sees every count these requests made."""
    log = wait_log(srv, srv.h.root / "logs" / ("%s-auth-access.log" % name),
                   {m: "switch" for m in sent})
    for m, reason in sent.items():
        check(log[m].endswith(" refusal=%s" % (reason or "-")),
              "access log, %s: want refusal=%s: %r" % (m, reason or "-", log[m]))


@test("metrics.switch: KrenalisAuthMetrics Off counts nothing; On and the default count")
def _(h):
    name = "metrics-switch"
    srv = h.httpd(name, global_extra=metrics_conf(h, h.root / "logs", name))
    srv.start()
    try:
        s0 = scrape(srv)
        sent, _ = switch_traffic(h, srv, "off", "/v1/nometrics/", "/v1/nometrics/deny/",
                                 "/v1/nometrics/ingest/")
        # The refusals still carry their reason to the access log.
        check_refusals_logged(srv, name, sent)
        check(sum(1 for r in sent.values() if r) == 4, "the Off traffic has 4 refusals")
        s1 = scrape(srv)
        # Nothing moved: no request, refusal, decision time or memo hit of the Off place.
        eq(deltas(s1, s0), {}, "the metrics' change after %d requests under "
           "KrenalisAuthMetrics Off" % len(sent))

        # The default (no KrenalisAuthMetrics): everything counted.
        s2 = counted_after(h, srv, name, ("default", "/v1/m/", "/v1/authz/type-other/",
                                          "/v1/events"), s1,
                           "the metrics' change after the default place's requests")
        # On inside an Off place: the innermost setting wins.
        counted_after(h, srv, name, ("on", "/v1/nometrics/on/", "/v1/nometrics/on/deny/",
                                     "/v1/nometrics/on/ingest/"), s2,
                      "the metrics' change after the requests under KrenalisAuthMetrics On "
                      "inside an Off place")
    finally:
        srv.stop()


@test("metrics.switch: KrenalisAuthMetrics Off for the whole server, On in one place")
def _(h):
    name = "metrics-switch-server"
    srv = h.httpd(name, global_extra=metrics_conf(h, h.root / "logs", name) +
                  "KrenalisAuthMetrics Off\n")
    srv.start()
    try:
        s0 = scrape(srv)
        sent, _ = switch_traffic(h, srv, "off", "/v1/m/", "/v1/authz/type-other/", "/v1/events")
        check_refusals_logged(srv, name, sent)
        s1 = scrape(srv)
        eq(deltas(s1, s0), {}, "the metrics' change after requests under the server's "
           "KrenalisAuthMetrics Off")
        counted_after(h, srv, name, ("on", "/v1/on/", "/v1/on/deny/", "/v1/on/ingest/"), s1,
                      "the metrics' change after the requests of a KrenalisAuthMetrics On "
                      "place")
    finally:
        srv.stop()


def cache_server(h):
    """The server of the look-up cache and memo tests (several children, its own counters)."""
    srv = h.httpd_once("metrics-cache",
                       global_extra=metrics_conf(h, h.root / "logs", "metrics-cache"))
    return srv


def cache_counts(srv):
    s = scrape(srv)
    return (s[("krenalis_auth_lookup_cache_hits_total", ())],
            s[("krenalis_auth_lookup_cache_misses_total", ())])


@test("metrics.lookup-cache: the children share it; any commit makes it read the store again")
def _(h):
    srv = cache_server(h)
    org = h.new_org()
    kid, tok = h.new_api_key(org)
    auth = [("Authorization", "Bearer " + tok)]
    n = 12

    def send(k, status):
        # A new connection each time (no memo), so that every child answers some.
        for _ in range(k):
            r = http(srv.port_cgi, "GET", "/v1/items", auth)
            eq(r.status, status, "status" + r.brief())

    h0, m0 = cache_counts(srv)
    # The first request reads the key and its organization, and its decision is remembered;
    # every other one, whichever child answers it, finds that decision (one hit) in the table
    # the children share.
    send(n, 200)
    h1, m1 = cache_counts(srv)
    eq((h1 - h0, m1 - m0), (1.0 * (n - 1), 2.0), "look-up cache (hits, misses) of %d requests" % n)
    # An unrelated commit: every entry is stale, the next request reads the store again.
    h.new_org()
    send(3, 200)
    h2, m2 = cache_counts(srv)
    eq((h2 - h1, m2 - m1), (2.0, 2.0), "(hits, misses) after an unrelated commit")
    # The key revoked: refused at once; an unknown key is read, and never kept.
    h.cli("api-key", "delete", kid)
    send(3, 401)
    h3, m3 = cache_counts(srv)
    eq((h3 - h2, m3 - m2), (0.0, 3.0), "(hits, misses) of a revoked key")


@test("metrics.memo: a connection that carries many keys keeps one in its memo; a key read "
      "from the store replaces it")
def _(h):
    srv = cache_server(h)
    org = h.new_org()
    (ka, ta), (kb, tb), (kc, tc) = [h.new_api_key(org) for _ in range(3)]

    def memo_hits():
        return scrape(srv)[("krenalis_auth_memo_hits_total", ())]

    def send(c, kid, tok):
        r = c.send("GET", "/v1/items", [("Authorization", "Bearer " + tok)])
        eq(r.status, 200, "status" + r.brief())
        eq(r.json()["env"].get("KRENALIS_KEY_ID"), kid, "the key's identity")

    # B's decision is remembered by a request on another connection.
    r = http(srv.port_cgi, "GET", "/v1/items", [("Authorization", "Bearer " + tb)])
    eq(r.status, 200, "status" + r.brief())
    with KeepAlive(srv.port_cgi) as c:
        m0 = memo_hits()
        # A is decided from the store and kept; B, answered by the look-up cache, does not
        # replace it: the memo answers A before and after B (2 hits, none for B; replaced by
        # B, it would answer B twice and not the last A).
        for kid, tok in ((ka, ta), (ka, ta), (kb, tb), (kb, tb), (kb, tb), (ka, ta)):
            send(c, kid, tok)
        m1 = memo_hits()
        eq(m1 - m0, 2.0, "memo hits of A, A, B, B, B, A")
        # C has never been decided: read from the store, it replaces A.
        for kid, tok in ((kc, tc), (kc, tc), (kc, tc)):
            send(c, kid, tok)
        eq(memo_hits() - m1, 2.0, "memo hits of C, C, C")


@test("metrics.backend-error: a backend's 401/403 under ProxyErrorOverride is the backend's "
      "status of an accepted request, not the module's not-allowed refusal")
def _(h):
    name = "metrics-backend-error"
    srv = h.httpd(name, global_extra=metrics_conf(h, h.root / "logs", name) + """\
<Location /v1/peo/>
    ProxyErrorOverride On
</Location>
""")
    srv.start()
    try:
        s0 = scrape(srv)
        auth = [("Authorization", "Bearer " + h.f["k1"])]
        bodies = {}
        for st in (403, 401):
            m = "be-peo-%d" % st
            r = http(srv.port_proxy, "GET", "/v1/peo/x?status=%d&m=%s" % (st, m), auth)
            eq(r.status, st, "the backend's %d through ProxyErrorOverride%s" % (st, r.brief()))
            bodies[st] = r.body
        # mod_log_config writes the line after the count: a scrape after it sees the count.
        log = wait_log(srv, h.root / "logs" / ("%s-auth-access.log" % name),
                       {"be-peo-403": "403", "be-peo-401": "401"})
        want = {("krenalis_auth_decision_seconds_count", ()): 2.0}
        for st in (403, 401):
            want[("krenalis_auth_requests_total", (("endpoint", "api"), ("key_type", "api"),
                                                   ("outcome", "accepted"),
                                                   ("status", str(st))))] = 1.0
        eq(counted(deltas(scrape(srv), s0)), want,
           "the metrics' change after two accepted requests the backend answered 403 and 401")
        for st in (403, 401):
            check(log["be-peo-%d" % st].endswith(" refusal=-"),
                  "access log: a refusal for the backend's %d: %r" % (st, log["be-peo-%d" % st]))
            check(b"not allowed to access" not in bodies[st],
                  "the module's not-allowed body for the backend's %d: %r" % (st, bodies[st]))
    finally:
        srv.stop()


@test("metrics.denied-errordoc: a Require denial answered by a local ErrorDocument is a "
      "not-allowed refusal")
def _(h):
    name = "metrics-denied-errordoc"
    srv = h.httpd(name, global_extra=metrics_conf(h, h.root / "logs", name))
    srv.start()
    try:
        s0 = scrape(srv)
        statuses = {}
        for i in range(2):
            m = "denyerr-%d" % i
            r = http(srv.port_cgi, "GET", "/v1/denyerr/x?m=" + m,
                     [("Authorization", "Bearer " + h.f["k1"])])
            statuses[m] = r.status
        log = wait_log(srv, h.root / "logs" / ("%s-auth-access.log" % name),
                       {m: "denied" for m in statuses})
        want = {("krenalis_auth_decision_seconds_count", ()): 2.0,
                ("krenalis_auth_refusals_total", (("reason", "not-allowed"),)): 2.0}
        for st in statuses.values():
            k = ("krenalis_auth_requests_total", (("endpoint", "api"), ("key_type", "none"),
                                                  ("outcome", "refused"), ("status", str(st))))
            want[k] = want.get(k, 0.0) + 1.0
        eq(counted(deltas(scrape(srv), s0)), want,
           "the metrics' change after two requests a Require line denied (ErrorDocument %r)"
           % statuses)
        for m in statuses:
            check(log[m].endswith(" refusal=not-allowed"),
                  "access log, %s: want refusal=not-allowed: %r" % (m, log[m]))
    finally:
        srv.stop()
