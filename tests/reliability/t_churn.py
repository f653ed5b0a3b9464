"""Key churn under load, and graceful restarts under load.

A load generator (Python threads, keep-alive and one-request connections, 127.0.0.1 only)
sends a mix of valid, revoked, restricted, disabled-organization, write-key, body-write-key,
API-key-ingestion and malformed requests. Meanwhile a churner runs krenalis-keys: it creates
and deletes API keys and write keys, and disables and enables an organization. Every request
records when it was sent and when its answer arrived (time.monotonic()); every command records
when it started and when it returned. The checker then derives, per request, the states the
store could have been in while the request was in flight, and the answers those states allow:

  * a key whose deletion returned before the request was sent must be refused (401);
  * a key not being deleted while the request was in flight must be accepted (or 422 when its
    organization was certainly disabled), with exactly its own identity;
  * malformed, unknown and revoked keys are always refused; no answer is a 5xx.

Right after each deletion returns, the churner itself sends the deleted key on a new connection
(a "probe"): that request was sent after the commit, so it must get 401.
"""
import os
import random
import re
import secrets
import signal
import threading
import time

from common import (Client, Closed, LogCursor, assert_no_crash, bearer, check, crash_lines,
                    graceful, ident_from_cgi, ident_from_fast, ident_from_proxy, one, rel_server,
                    req_bytes, rtest, worker_children)
import harness


class Key:
    __slots__ = ("kind", "token", "id", "org", "ws", "conn", "restricted", "del_start", "del_end")

    def __init__(self, kind, token, kid, org, ws=None, conn=None, restricted=False):
        self.kind = kind  # "api" or "write"
        self.token = token
        self.id = kid
        self.org = org
        self.ws = ws  # API key: its restricting workspace; write key: its connection's
        self.conn = conn
        self.restricted = restricted
        self.del_start = None
        self.del_end = None


class World:
    """The store's content as the churner changes it, with the times of every change."""

    def __init__(self, ctx):
        h = ctx.h
        self.h = h
        self.lock = threading.Lock()
        c = h.cli
        self.orgA = c("organization", "add", "--name", "churn A")["id"]
        self.wsA1 = c("workspace", "add", "--organization", self.orgA)["id"]
        self.wsA2 = c("workspace", "add", "--organization", self.orgA)["id"]
        self.orgB = c("organization", "add", "--name", "churn B")["id"]
        self.wsB = c("workspace", "add", "--organization", self.orgB)["id"]
        self.orgT = c("organization", "add", "--name", "churn toggled")["id"]
        self.wsT = c("workspace", "add", "--organization", self.orgT)["id"]
        d = c("connection", "add", "--workspace", self.wsA1)
        self.connA = d["id"]
        self.org_ws = {self.orgA: [self.wsA1, self.wsA2], self.orgB: [self.wsB],
                       self.orgT: [self.wsT]}
        self.api_live = []
        self.write_live = []
        self.deleted = []  # keys whose deletion returned
        self.recent = []  # keys being deleted or deleted in the last second
        self.org_hist = {self.orgT: []}  # org -> [(start, end, enabled_after)]
        self.org_enabled = {self.orgT: True}
        self.ops = {"api-key create": 0, "api-key delete": 0, "write-key create": 0,
                    "write-key delete": 0, "organization disable": 0, "organization enable": 0}
        self.cmd_times = []
        first = Key("write", d["key"], h.write_key_id(self.connA, d["key"]), self.orgA,
                    self.wsA1, self.connA)
        self.write_live.append(first)
        for _ in range(6):
            self.create_api(self.orgA)
        for _ in range(4):
            self.create_api(self.orgA, self.wsA1)
        for _ in range(4):
            self.create_api(self.orgB)
        for _ in range(4):
            self.create_api(self.orgT)
        for _ in range(2):
            self.create_api(self.orgT, self.wsT)
        for _ in range(5):
            self.create_write()

    def timed(self, args):
        t0 = time.monotonic()
        d = self.h.cli(*args)
        t1 = time.monotonic()
        self.cmd_times.append(t1 - t0)
        return d, t0, t1

    def create_api(self, org, ws=None):
        args = ["api-key", "create", "--organization", org] + (["--workspace", ws] if ws else [])
        d, _, _ = self.timed(args)
        k = Key("api", d["token"], d["id"], org, ws, None, restricted=ws is not None)
        with self.lock:
            self.api_live.append(k)
            self.ops["api-key create"] += 1
        return k

    def create_write(self):
        d, _, _ = self.timed(["write-key", "create", "--connection", self.connA])
        k = Key("write", d["key"], d["id"], self.orgA, self.wsA1, self.connA)
        with self.lock:
            self.write_live.append(k)
            self.ops["write-key create"] += 1
        return k

    def delete(self, k):
        with self.lock:
            (self.api_live if k.kind == "api" else self.write_live).remove(k)
            k.del_start = time.monotonic()
            self.recent.append(k)
        if k.kind == "api":
            self.timed(["api-key", "delete", k.id])
        else:
            self.timed(["write-key", "delete", "--connection", k.conn, k.id])
        with self.lock:
            k.del_end = time.monotonic()
            self.deleted.append(k)
            self.ops["%s delete" % ("api-key" if k.kind == "api" else "write-key")] += 1
            now = time.monotonic()
            self.recent = [x for x in self.recent if x.del_end is None or now - x.del_end < 1.0]

    def toggle(self, org):
        enable = not self.org_enabled[org]
        t0 = time.monotonic()
        self.timed(["organization", "enable" if enable else "disable", org])
        t1 = time.monotonic()
        with self.lock:
            self.org_hist[org].append((t0, t1, enable))
            self.org_enabled[org] = enable
            self.ops["organization %s" % ("enable" if enable else "disable")] += 1

    # -- what the store could have been while a request was in flight ---------------------

    def key_states(self, k, a, b):
        """Subset of {"live", "gone"} possible during [a, b]."""
        if k.del_start is None or k.del_start > b:
            return {"live"}
        if k.del_end is not None and k.del_end < a:
            return {"gone"}
        return {"live", "gone"}

    def org_states(self, org, a, b):
        hist = self.org_hist.get(org)
        if hist is None:
            return {True}
        base = True
        possible = set()
        for s, e, en in hist:
            if e < a:
                base = en
            elif s <= b:
                possible.add(en)
        possible.add(base)
        return possible


# ---------------------------------------------------------------------------------------
# the load generator


class Rec:
    __slots__ = ("variant", "key", "t0", "t1", "status", "ident", "retried", "error", "probe",
                 "fresh", "extra", "by_module")

    def __init__(self, variant, key, t0, t1, status, ident, retried=False, error=None,
                 probe=False, fresh=False, extra=None):
        self.extra = extra  # ws_own: the Krenalis-Workspace sent
        self.variant = variant
        self.key = key
        self.t0 = t0
        self.t1 = t1
        self.status = status
        self.ident = ident
        self.retried = retried
        self.error = error
        self.probe = probe
        self.fresh = fresh
        self.by_module = True  # a 5xx: the module's JSON error, or httpd's own page


def malformed_token(rng):
    body = harness.api_body(secrets.token_bytes(32))
    i = rng.randrange(43)
    c = "B" if body[i] != "B" else "C"
    return "api_" + body[:i] + c + body[i + 1:]


def build(world, port, rng):
    """(variant, key, request bytes, method, how to read the identity)."""
    r = rng.random()
    w = world
    with w.lock:
        api_live = list(w.api_live)
        recent = [k for k in w.recent if k.kind == "api"]
        deleted = [k for k in w.deleted if k.kind == "api"]
        write_live = list(w.write_live)
        wrecent = [k for k in w.recent if k.kind == "write"]
        wdeleted = [k for k in w.deleted if k.kind == "write"]

    def pick_api(pred=lambda k: True):
        pool = [k for k in (recent if recent and rng.random() < 0.3 else api_live) if pred(k)]
        if not pool:
            pool = [k for k in api_live if pred(k)]
        return rng.choice(pool)

    if r < 0.30:
        k = pick_api()
        return "plain", k, req_bytes(port, "GET", "/fast/items", bearer(k.token)), "GET", "fast"
    if r < 0.38:
        k = pick_api(lambda k: not k.restricted)
        ws = rng.choice(w.org_ws[k.org])
        return "ws_own", k, req_bytes(port, "GET", "/fast/items", bearer(k.token) + [
            ("Krenalis-Workspace", ws)]), "GET", "fast", ws
    if r < 0.42:
        k = pick_api(lambda k: not k.restricted)
        other = [ws for o, l in w.org_ws.items() if o != k.org for ws in l]
        return "ws_other", k, req_bytes(port, "GET", "/fast/items", bearer(k.token) + [
            ("Krenalis-Workspace", rng.choice(other))]), "GET", "fast"
    if r < 0.46:
        k = pick_api(lambda k: k.restricted)
        return "ws_restricted", k, req_bytes(port, "GET", "/fast/items", bearer(k.token) + [
            ("Krenalis-Workspace", k.ws)]), "GET", "fast"
    if r < 0.56 and deleted:
        k = rng.choice(deleted)
        return "plain", k, req_bytes(port, "GET", "/fast/items", bearer(k.token)), "GET", "fast"
    if r < 0.64:
        v = rng.choice(("malformed", "unknown", "noprefix", "badbearer", "noauth", "twice"))
        hd = {"malformed": bearer(malformed_token(rng)),
              "unknown": bearer(harness.random_api_token()),
              "noprefix": bearer(harness.random_alnum(40)),
              "badbearer": [("Authorization", "Basic " + harness.random_alnum(20))],
              "noauth": [],
              "twice": bearer(api_live[0].token) + bearer(api_live[0].token)}[v]
        return v, None, req_bytes(port, "GET", "/fast/items", hd), "GET", "fast"
    if r < 0.80:
        pool = wrecent if wrecent and rng.random() < 0.3 else (
            wdeleted if wdeleted and rng.random() < 0.2 else write_live)
        k = rng.choice(pool)
        return "wk_bearer", k, req_bytes(port, "POST", "/v1/events", bearer(k.token),
                                         b'{"type":"track"}'), "POST", "proxy"
    if r < 0.88:
        pool = wrecent if wrecent and rng.random() < 0.3 else write_live
        k = rng.choice(pool)
        body = ('{"writeKey":"%s","type":"track"}' % k.token).encode()
        return "wk_body", k, req_bytes(port, "POST", "/v1/events", [], body), "POST", "proxy"
    if r < 0.93:
        k = pick_api(lambda k: k.org == w.orgA and not k.restricted)
        body = ('{"connectionId":"%s"}' % w.connA).encode()
        return "api_ingest", k, req_bytes(port, "POST", "/v1/events", bearer(k.token), body), \
            "POST", "proxy"
    if r < 0.95:
        k = pick_api()
        return "cgi", k, req_bytes(port, "GET", "/v1/items", bearer(k.token)), "GET", "cgi"
    v = "unknown_wk"
    return v, None, req_bytes(port, "POST", "/v1/events", bearer(harness.random_alnum(32)),
                              b"{}"), "POST", "proxy"


def read_ident(how, status, hd, body):
    if status != 200:
        return None
    try:
        if how == "fast":
            return ident_from_fast(hd)
        if how == "proxy":
            return ident_from_proxy(body)
        return ident_from_cgi(body)
    except (ValueError, KeyError) as e:
        return {"error": str(e)}


class Load:
    def __init__(self, world, port, workers, fresh_workers, seed, views=None):
        self.world = world
        self.port = port
        self.stop = threading.Event()
        self.records = []
        self.lock = threading.Lock()
        self.threads = []
        self.reconnects = 0
        self.views = views
        for i in range(workers + fresh_workers):
            t = threading.Thread(target=self.worker, args=(seed + i, i >= workers), daemon=True)
            self.threads.append(t)

    def start(self):
        for t in self.threads:
            t.start()

    def worker(self, seed, fresh):
        rng = random.Random(seed)
        cl = Client(self.port)
        out = []
        last_plain = None
        while not self.stop.is_set():
            # A keep-alive client sends its own key again and again: repeat the last plain API
            # request on this connection often, so that the module's connection memo answers
            # while the key is deleted, its organization disabled, and so on.
            if last_plain is not None and not fresh and rng.random() < 0.4:
                variant, k, data, method, how, *extra = last_plain
            else:
                variant, k, data, method, how, *extra = build(self.world, self.port, rng)
            if variant == "plain" and k is not None and k.kind == "api":
                last_plain = (variant, k, data, method, how, *extra)
            if fresh:
                data = data.replace(b"Connection: keep-alive", b"Connection: close")
            t0 = time.monotonic()
            try:
                status, hd, body, retried = cl.request(data, method)
                t1 = time.monotonic()
                ident = read_ident(how, status, hd, body)
                rec = Rec(variant, k, t0, t1, status, ident, retried, fresh=fresh,
                          extra=extra[0] if extra else None)
                if status >= 500:
                    rec.by_module = b'"code":"ServiceUnavailable"' in body
                if how == "cgi" and status == 200 and self.views is not None and rng.random() < 0.1:
                    with self.lock:
                        self.views.append(("churn CGI", body, False))
            except (Closed, OSError, ValueError) as e:
                cl.close()
                rec = Rec(variant, k, t0, time.monotonic(), None, None,
                          error="%s: %s" % (type(e).__name__, e), fresh=fresh,
                          extra=extra[0] if extra else None)
            out.append(rec)
            if fresh:
                cl.close()
        cl.close()
        with self.lock:
            self.records.extend(out)
            self.reconnects += cl.reconnects

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(60)


def probe(world, port, k):
    """Sends k right after its deletion returned, on a new connection."""
    if k.kind == "api":
        data, method, how = req_bytes(port, "GET", "/fast/items", bearer(k.token), close=True), \
            "GET", "fast"
        variant = "plain"
    else:
        data, method, how = req_bytes(port, "POST", "/v1/events", bearer(k.token), b"{}",
                                      close=True), "POST", "proxy"
        variant = "wk_bearer"
    cl = Client(port)
    t0 = time.monotonic()
    try:
        status, hd, body, _ = cl.request(data, method)
        return Rec(variant, k, t0, time.monotonic(), status, read_ident(how, status, hd, body),
                   probe=True)
    except (Closed, OSError) as e:
        return Rec(variant, k, t0, time.monotonic(), None, None, error=str(e), probe=True)
    finally:
        cl.close()


def churner(world, port, stop, rng, probes, pause):
    w = world
    while not stop.is_set():
        r = rng.random()
        with w.lock:
            napi, nwrite = len(w.api_live), len(w.write_live)
        if r < 0.40 or napi < 12:
            org = rng.choice((w.orgA, w.orgA, w.orgB, w.orgT))
            ws = rng.choice(w.org_ws[org]) if rng.random() < 0.3 else None
            w.create_api(org, ws)
        elif r < 0.75:
            with w.lock:
                k = rng.choice(w.api_live)
            w.delete(k)
            probes.append(probe(w, port, k))
        elif r < 0.85:
            w.toggle(w.orgT)
        elif r < 0.93 or nwrite <= 3:
            if nwrite < 15:
                w.create_write()
        else:
            with w.lock:
                k = rng.choice(w.write_live)
            w.delete(k)
            probes.append(probe(w, port, k))
        time.sleep(pause)


# ---------------------------------------------------------------------------------------
# the checker


def expected(world, rec):
    """(allowed statuses, expected identity of a 200 or None)."""
    v, k = rec.variant, rec.key
    if v in ("malformed", "unknown", "noauth", "unknown_wk"):
        return {401}, None
    if v in ("noprefix", "badbearer", "twice"):
        return {400}, None
    ks = world.key_states(k, rec.t0, rec.t1)
    allowed = set()
    if "gone" in ks:
        allowed.add(401)
    ident = None
    if "live" in ks:
        if k.kind == "write":
            allowed.add(200)
            ident = {"type": "event-write", "org": k.org, "ws": k.ws, "conn": k.conn, "key": k.id}
        else:
            os_ = world.org_states(k.org, rec.t0, rec.t1)
            if False in os_:
                allowed.add(422)
            if True in os_:
                ok = {"plain": 200, "cgi": 200, "ws_own": 200, "ws_other": 404,
                      "ws_restricted": 400, "api_ingest": 200}[v]
                allowed.add(ok)
                if ok == 200:
                    ident = {"type": "api", "org": k.org, "ws": k.ws, "conn": None, "key": k.id}
                    if v == "ws_own":
                        ident["ws"] = rec.extra
                    elif v == "api_ingest":
                        ident.update(ws=world.wsA1, conn=world.connA)
    return allowed, ident


def ident_matches(rec, exp, world):
    got = dict(rec.ident or {})
    if rec.variant == "cgi" and got.get("user") != exp["key"]:
        return False
    got.pop("user", None)
    return all(got.get(n) == exp[n] for n in ("type", "org", "ws", "conn", "key"))


# mod_cgid answers 503 itself when a request reaches it while its CGI daemon is being replaced
# by a graceful restart (AH10246 "failed reading PID from cgi daemon"): httpd's, not an
# authentication answer.
CGID_RESTART_RE = re.compile(r"AH10246|AH01257|cgi daemon")


def check_records(world, records, log="", restarted=False):
    cgid_restart = restarted and any(CGID_RESTART_RE.search(ln) for ln in log.splitlines())
    stats = {"requests": len(records), "accepted": 0, "refused": 0, "5xx": 0, "lost": 0,
             "cgid_503_at_restart": 0,
             "keepalive_retries": 0, "probes": 0, "probes_refused": 0,
             "sent_after_delete": 0, "sent_after_delete_refused": 0}
    by_status = {}
    by_variant = {}
    violations = {}

    def bad(kind, rec, detail):
        violations.setdefault(kind, []).append(
            "%s key=%s status=%s t0=%.3f t1=%.3f del=%s %s" % (
                rec.variant, rec.key.id if rec.key else "-", rec.status, rec.t0, rec.t1,
                "%.3f..%.3f" % (rec.key.del_start, rec.key.del_end)
                if rec.key and rec.key.del_end else "-", detail))

    for rec in records:
        by_variant[rec.variant] = by_variant.get(rec.variant, 0) + 1
        if rec.retried:
            stats["keepalive_retries"] += 1
        if rec.probe:
            stats["probes"] += 1
        if rec.status is None:
            stats["lost"] += 1
            bad("lost (no response)", rec, rec.error)
            continue
        by_status[rec.status] = by_status.get(rec.status, 0) + 1
        if rec.status == 200:
            stats["accepted"] += 1
        else:
            stats["refused"] += 1
        if rec.status >= 500:
            if (rec.status == 503 and rec.variant == "cgi" and not rec.by_module and
                    cgid_restart):
                stats["cgid_503_at_restart"] += 1
                continue
            stats["5xx"] += 1
            bad("5xx", rec, "" if rec.by_module else "(not the module's answer)")
            continue
        allowed, ident = expected(world, rec)
        if rec.key is not None and rec.key.del_end is not None and rec.t0 > rec.key.del_end:
            stats["sent_after_delete"] += 1
            if rec.status == 401:
                stats["sent_after_delete_refused"] += 1
            if rec.probe and rec.status == 401:
                stats["probes_refused"] += 1
            if rec.status == 200:
                bad("accepted after its deletion was committed", rec, "")
                continue
        if rec.status not in allowed:
            kind = "accepted but should be refused" if rec.status == 200 else \
                "unexpected status (expected %s)" % sorted(allowed)
            bad(kind, rec, "")
            continue
        if rec.status == 200 and ident is not None and not ident_matches(rec, ident, world):
            bad("wrong identity", rec, "got %r expected %r" % (rec.ident, ident))
    stats["by_status"] = " ".join("%s:%d" % kv for kv in sorted(by_status.items()))
    stats["by_variant"] = " ".join("%s:%d" % kv for kv in sorted(by_variant.items()))
    return stats, violations


ORGS_VAR = "KRENALIS_ORGANIZATIONS_API_KEY"


def org_key(ctx):
    return ctx.h.secret(ctx.h.cli("organizations-key", "generate")["key"])


def run_load(ctx, srv, world, duration, workers=8, fresh_workers=2, churn=True, gracefuls=0,
             seed=1):
    port = srv.port_rel
    ctx.backend_views = getattr(ctx, "backend_views", [])
    load = Load(world, port, workers, fresh_workers, seed, ctx.backend_views)
    stop = threading.Event()
    probes = []
    cur = LogCursor(srv.error_log)
    t_start = time.monotonic()
    load.start()
    ch = None
    if churn:
        ch = threading.Thread(target=churner, args=(world, port, stop, random.Random(seed + 100),
                                                    probes, 0.02), daemon=True)
        ch.start()
    restarts = []
    if gracefuls:
        gap = duration / (gracefuls + 1)
        for i in range(gracefuls):
            time.sleep(gap)
            before = set(worker_children(srv))
            if i % 2 == 0:  # apache2 -f CONF -k graceful (what apachectl graceful runs)
                rc, out = graceful(srv)
            else:  # SIGUSR1 to the parent, by its PID
                os.kill(srv.proc.pid, signal.SIGUSR1)
                rc, out = 0, "SIGUSR1"
            restarts.append((rc, out.strip(), before))
        time.sleep(max(0.0, duration - (time.monotonic() - t_start)))
    else:
        time.sleep(duration)
    stop.set()
    if ch:
        ch.join(60)
    load.finish()
    elapsed = time.monotonic() - t_start
    log = cur.read()
    records = load.records + probes
    stats, violations = check_records(world, records, log, bool(restarts))
    stats["seconds"] = round(elapsed, 1)
    stats["req_per_s"] = int(len(load.records) / elapsed)
    stats["reconnects"] = load.reconnects
    return stats, violations, log, restarts


def report(ctx, name, stats, violations, log, world, extra=None):
    values = dict(stats)
    values.update({"churn_" + k.replace(" ", "_").replace("-", "_"): v
                   for k, v in world.ops.items()})
    if world.cmd_times:
        ct = sorted(world.cmd_times)
        values["cmd_ms_median"] = int(ct[len(ct) // 2] * 1000)
    values["violations"] = sum(len(v) for v in violations.values())
    values.update(extra or {})
    ctx.figure(name, **values)
    problems = []
    for kind, items in sorted(violations.items()):
        problems.append("%d %s, e.g.:\n      %s" % (len(items), kind, "\n      ".join(items[:5])))
    crashes = crash_lines(log)
    if crashes:
        problems.append("error log: %s" % "\n      ".join(crashes[:8]))
    for ln in log.splitlines():
        if "cannot be read" in ln or "requests get 503" in ln:
            problems.append("error log: %s" % ln)
            break
    check(stats["requests"] > 0, "no request was sent")
    check(not problems, "\n  ".join(problems))


@rtest("churn.keys created, deleted, organizations toggled under load (short: and 2 graceful "
       "restarts)")
def _(ctx):
    world = World(ctx)
    orgkey = org_key(ctx)
    # the organizations key in httpd's environment: `-k graceful` then hands it over through
    # the runtime directory (the secret scan checks that no hand-off file stays behind)
    srv = rel_server(ctx, "churn", env={ORGS_VAR: orgkey})
    # short mode folds the graceful restarts in (make reliability stays under 90 s); soak has
    # a test of its own for them
    n = 0 if ctx.soak else 2
    stats, violations, log, restarts = run_load(ctx, srv, world, ctx.duration, gracefuls=n)
    failed = [r for r in restarts if r[0] != 0]
    st, _r = one(srv.port_rel, "GET", "/v1/organizations", bearer(orgkey))
    srv.stop()
    assert_no_crash(srv.output())
    report(ctx, "churn", stats, violations, log, world, {"gracefuls": n} if n else None)
    check(not failed, "apache2 -k graceful failed: %r" % failed[:2])
    check(st == 200, "the organizations key after the run: %s" % st)
    check(stats["probes"] > 0 and stats["probes"] == stats["probes_refused"],
          "deletion probes: %d sent, %d refused" % (stats["probes"], stats["probes_refused"]))


@rtest("restart.graceful under load: no request lost, store usable after", modes=("soak",))
def _(ctx):
    world = World(ctx)
    orgkey = org_key(ctx)
    srv = rel_server(ctx, "graceful", env={ORGS_VAR: orgkey})
    n = 10 if ctx.soak else 3
    duration = 30 if ctx.soak else 6
    stats, violations, log, restarts = run_load(ctx, srv, world, duration, churn=True,
                                                 gracefuls=n, seed=7)
    failed = [r for r in restarts if r[0] != 0]
    check(not failed, "apache2 -k graceful failed: %r" % failed[:2])
    # new generation: the store works for keys made and removed after the restarts
    k = world.create_api(world.orgA)
    st, r = one(srv.port_rel, "GET", "/fast/items", bearer(k.token))
    check(st == 200, "a key created after the restarts: %s" % st)
    world.delete(k)
    st, r = one(srv.port_rel, "GET", "/fast/items", bearer(k.token))
    check(st == 401, "a key deleted after the restarts: %s" % st)
    # rotation of the organizations key by a graceful restart (operations.md)
    key2 = org_key(ctx)
    rc, out = graceful(srv, {ORGS_VAR: key2})
    check(rc == 0, "graceful with a new organizations key: %s" % out)
    end = time.time() + 10
    while time.time() < end:
        a = one(srv.port_rel, "GET", "/v1/organizations", bearer(key2))[0]
        b = one(srv.port_rel, "GET", "/v1/organizations", bearer(orgkey))[0]
        if (a, b) == (200, 401):
            break
        time.sleep(0.2)
    check((a, b) == (200, 401), "after rotating the organizations key: new key %s, old key %s" %
          (a, b))
    gens = sum(1 for ln in log.splitlines() if "SIGUSR1 received" in ln or "Graceful restart"
               in ln)
    srv.stop()
    report(ctx, "graceful", stats, violations, log, world,
           {"gracefuls": n, "restarts_logged": gens})
    check(gens >= n, "error log shows %d graceful restarts, expected %d" % (gens, n))
    check(stats["lost"] == 0, "requests lost: %d" % stats["lost"])
