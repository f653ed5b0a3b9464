"""No secrets anywhere: logs, core dumps and what backends receive.

What counts as a secret: every API token, event write key and organizations key generated or
presented during the run (the harness registers them; the bulk token files add theirs), the
store secrets (raw 32 bytes, hex in both cases, base64) of every store the run made, and any
string shaped like an API token (`api_` + 49 letters/digits) or an organizations key in an
error log -- a token that no store knows is still a presented token.

Exceptions, by design: the access log's /v1/events/settings/KEY lines (SPEC §10: the settings
endpoint carries a write key in its URL), and HTTP_AUTHORIZATION in the environment of a
location that keeps `KrenalisAuthPassAuthorization On` (the client's own header, passed on on
purpose).
"""
import base64
import json
import os
import re
import shutil
import signal
import time

from common import (LogCursor, Skip, bearer, check, one, rel_server, rtest, wait_until,
                    worker_children)

API_RE = re.compile(rb"api_[A-Za-z0-9]{20,}")
ORG_RE = re.compile(rb"org_[A-Za-z0-9]{20,}")


def store_secrets(root):
    """(label, bytes) forms of every 32-byte secret file under the run's root."""
    out = []
    for p in root.rglob("secret*"):
        try:
            if not p.is_file() or p.stat().st_size != 32:
                continue
            b = p.read_bytes()
        except OSError:
            continue
        for label, form in (("raw", b), ("hex", b.hex().encode()), ("HEX", b.hex().upper().encode()),
                            ("base64", base64.b64encode(b).rstrip(b"=")),
                            ("base64url", base64.urlsafe_b64encode(b).rstrip(b"="))):
            out.append(("store secret %s (%s)" % (label, p.name), form))
    return out


def bulk_tokens(ctx):
    toks = set()
    for p in getattr(ctx, "token_files", []):
        try:
            toks.update(t.encode() for t in p.read_text().split())
        except OSError:
            pass
    return toks


def scan_blob(name, data, secrets, tokset, findings, error_log=False):
    for s in secrets:
        if len(s) >= 16 and s in data:
            findings.append("%s contains %s..." % (name, s[:8].decode("latin-1")))
    if tokset:
        for m in API_RE.finditer(data):
            if m.group(0) in tokset:
                findings.append("%s contains bulk token %s..." % (name, m.group(0)[:8].decode()))
    if error_log:
        for rx, what in ((API_RE, "an API token"), (ORG_RE, "an organizations key")):
            for m in rx.finditer(data):
                findings.append("%s contains %s %s..." % (name, what, m.group(0)[:10].decode()))


def final_scan(ctx):
    """Runs after every process of the run stopped."""
    h = ctx.h
    root = h.root
    secrets = set()
    for s in h.secrets:
        secrets.add(s.encode("latin-1"))
    for s in getattr(ctx, "extra_secrets", ()):
        secrets.add(s.encode("latin-1") if isinstance(s, str) else s)
    ss = store_secrets(root)
    tokset = bulk_tokens(ctx)
    findings = []
    logs = list((root / "logs").iterdir()) + list((root / "hits").iterdir())
    for p in logs:
        data = p.read_bytes()
        if "access" in p.name:
            data = b"\n".join(ln for ln in data.split(b"\n") if b"/events/settings/" not in ln)
        scan_blob(p.name, data, secrets, tokset, findings, error_log="error" in p.name)
        for label, form in ss:
            if form in data:
                findings.append("%s contains the %s" % (p.name, label))
    cores = [p for p in (root / "cores").rglob("*") if p.is_file()] if (root / "cores").exists() else []
    cores += [p for p in root.glob("core*") if p.is_file()]
    for p in cores:
        rel = p.relative_to(root)
        findings.append("core dump %s (%s crashed)" % (rel, "an httpd child" if "cores" in rel.parts
                                                        else "apache2 -t or krenalis-keys"))
        data = p.read_bytes()
        scan_blob("core dump %s" % rel, data, secrets, set(), findings)
        for label, form in ss:
            if form in data:
                findings.append("core dump %s contains the %s" % (rel, label))
    # the organizations-key hand-off file is removed as soon as the parent reads it
    for p in (root / "run").rglob("krenalis-auth.*"):
        findings.append("hand-off file left behind: %s" % p)
    # environments and headers backends received (collected by the tests)
    views = getattr(ctx, "backend_views", [])
    for what, text, allow_auth in views:
        data = text.encode("latin-1") if isinstance(text, str) else text
        if allow_auth:
            try:
                env = json.loads(data)["env"]
                env.pop("HTTP_AUTHORIZATION", None)
                data = json.dumps(env).encode()
            except (ValueError, KeyError):
                pass
        scan_blob("backend view (%s)" % what, data, secrets, tokset, findings)
        for label, form in ss:
            if form in data:
                findings.append("backend view (%s) contains the %s" % (what, label))
    ctx.figure("secret scan", files=len(logs), bytes=sum(p.stat().st_size for p in logs),
               cores=len(cores), credentials=len(secrets) + len(tokset), store_secrets=len(ss) // 5,
               backend_views=len(views))
    check(not findings, "\n  ".join(sorted(set(findings))[:40]))


@rtest("secrets.backends get no token, key, store secret or organizations key")
def _(ctx):
    """The CGI's whole environment and the proxied headers, for each kind of credential, on a
    server that has an organizations key in its environment."""
    h = ctx.h
    f = h.f
    orgkey = h.cli("organizations-key", "generate")["key"]
    h.secret(orgkey)
    srv = rel_server(ctx, "envcheck", env={"KRENALIS_ORGANIZATIONS_API_KEY": orgkey})
    ctx.backend_views = getattr(ctx, "backend_views", [])
    cur = LogCursor(srv.error_log)
    port = srv.port_rel
    probes = [
        ("api key, CGI", "GET", "/v1/items", bearer(f["k1"]), None, False),
        ("restricted api key, CGI", "GET", "/v1/items", bearer(f["k1r"]), None, False),
        ("api key + workspace, CGI", "GET", "/v1/items", bearer(f["k1"]) + [("Krenalis-Workspace", f["ws1a"])], None, False),
        ("organizations key, CGI", "GET", "/v1/organizations", bearer(orgkey), None, False),
        ("write key, proxy", "POST", "/v1/events", bearer(f["wk1"]), b"{}", False),
        ("body write key, proxy", "POST", "/v1/events", [], ('{"writeKey":"%s"}' % f["wk1"]).encode(), False),
        ("api key ingestion, proxy", "POST", "/v1/events", bearer(f["k1"]), ('{"connectionId":"%s"}' % f["conn1"]).encode(), False),
        ("api key, Authorization passed on", "GET", "/v1/pass/items", bearer(f["k1"]), None, True),
    ]
    bad = []
    for what, method, path, hd, body, allow in probes:
        st, r = one(port, method, path, hd, body)
        if st != 200:
            bad.append("%s: %s" % (what, st if st else r))
            continue
        ctx.backend_views.append((what, r.body, allow))
        d = json.loads(r.body)
        if d.get("backend") == "envdump":
            env = d["env"]
            for k, v in env.items():
                if k == "HTTP_AUTHORIZATION" and allow:
                    continue
                for s in (f["k1"], f["k1r"], f["wk1"], orgkey, orgkey[4:], f["k1"][4:]):
                    if s in v:
                        bad.append("%s: %s carries a credential" % (what, k))
            if "KRENALIS_ORGANIZATIONS_API_KEY" in env:
                bad.append("%s: KRENALIS_ORGANIZATIONS_API_KEY reached the CGI" % what)
        else:
            for k, v in d["headers"]:
                for s in (f["wk1"], f["k1"], orgkey):
                    if s in v:
                        bad.append("%s: header %s carries a credential" % (what, k))
    srv.stop()
    log = cur.read()
    check(not bad, "\n  ".join(bad))
    check(orgkey not in log and orgkey[4:] not in log, "organizations key in the error log")


@rtest("secrets.a core dump of a child holds no store secret", short_mpms=("prefork",))
def _(ctx):
    """A child killed with SIGSEGV after it opened the store and answered: httpd writes its
    core to CoreDumpDirectory. The secret's pages and the store's HMAC state are excluded from
    dumps (MADV_DONTDUMP), so neither the raw secret nor its hex or base64 forms are in it.
    The core is moved out of cores/ so that the final scan (which counts any core as a crash)
    does not report this deliberate one."""
    h = ctx.h
    f = h.f
    cores = h.root / "cores"
    try:
        pattern = open("/proc/sys/kernel/core_pattern").read().strip()
    except OSError:
        pattern = "?"
    if pattern.startswith("|") or "/" in pattern:
        raise Skip("core_pattern %r does not write cores to the process's directory" % pattern)
    srv = rel_server(ctx, "dumped")
    try:
        for _ in range(3):
            st, r = one(srv.port_rel, "GET", "/v1/items", bearer(f["k1"]))
            check(st == 200, "valid key before the kill: %s" % st)
        before = set(cores.iterdir()) if cores.exists() else set()
        pids = worker_children(srv)
        check(pids, "no worker child")
        for pid in pids:
            os.kill(pid, signal.SIGSEGV)
        new = wait_until(lambda: [p for p in cores.iterdir() if p not in before and p.is_file()
                                  and p.stat().st_size > 0], 10)
    finally:
        srv.stop()
    if not new:
        raise Skip("no core file appeared in %s (core dumps disabled here)" % cores)
    time.sleep(0.5)  # let the kernel finish writing
    keep = h.root / "deliberate-cores"
    keep.mkdir(exist_ok=True)
    found = []
    for p in new:
        data = p.read_bytes()
        for label, form in store_secrets(h.root):
            if form in data:
                found.append("%s contains the %s" % (p.name, label))
        shutil.move(str(p), str(keep / p.name))
    ctx.figure("core dump", cores=len(new), bytes=sum((keep / p.name).stat().st_size for p in new))
    check(not found, "\n  ".join(found))
