#!/usr/bin/python3
"""The mirror (SPEC §11) against real components: a throwaway PostgreSQL cluster with the
Krenalis tables of §11.1 (schema.sql), changed by a writer that does what Krenalis does
(krenalis.py, pg.py); `krenalis-keys mirror` feeding a store; and an Apache httpd (the
integration harness) answering from it.

    python3 tests/mirror/run.py [--build build] [-k SUBSTRING] [--keep]

Prints "ok NAME" / "FAIL NAME: detail" per test, figures as "# ..." lines, then
"N passed, N failed"; exits 1 on any failure. Every process it starts (PostgreSQL by pg_ctl,
the mirror and httpd by PID) is stopped before it exits.
"""
import argparse
import base64
import hashlib
import hmac
import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

OUTAGE_SECONDS = float(os.environ.get("KRENALIS_MIRROR_OUTAGE_SECONDS", "30"))

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO / "tests" / "integration"))
sys.dont_write_bytecode = True

import harness  # noqa: E402
from harness import Failure, Harness, check, eq, random_id  # noqa: E402
from krenalis import Krenalis  # noqa: E402
from pg import Cluster, Writer  # noqa: E402

PASSWORD = "pw-" + secrets.token_hex(12)
UNAVAILABLE = "request cannot be processed at this time; try again later"
MAX_STALE = 5
REPLICA_POLL_MS = 200

TESTS = []


def test(name):
    def deco(fn):
        TESTS.append((name, fn))
        return fn
    return deco


class Node:
    """One Apache node: its store, its mirror process (fed from one cluster) and its httpd."""

    def __init__(self, e, name, cluster_attr, poll_ms=None):
        self.e = e
        self.name = name
        self.cluster_attr = cluster_attr
        self.poll_ms = poll_ms
        self.store = e.root / ("store" if name == "main" else "store-" + name)
        self.log = e.root / "logs" / ("mirror.log" if name == "main" else "mirror-%s.log" % name)
        self.proc = None

    @property
    def cluster(self):
        return getattr(self.e, self.cluster_attr)

    def cmd(self, *extra, conninfo=None, pepper=None):
        e = self.e
        poll = ["--poll-interval", str(self.poll_ms)] if self.poll_ms else []
        return [str(e.h.keys_bin), "--store", str(self.store), "mirror", "--postgres",
                conninfo or e.conninfo(self.cluster), "--pepper-file",
                str(pepper or e.pepper_file)] + poll + list(extra)

    def env(self):
        return {"PATH": "/usr/bin:/bin", "LANG": "C", "PGPASSFILE": str(self.e.pgpass)}

    def run_once(self, *extra, env=None, **kw):
        p = subprocess.run(self.cmd("--once", *extra, **kw), env=env or self.env(),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
        with open(self.log, "a") as f:
            f.write(p.stdout.decode() + p.stderr.decode())
        return p.returncode, p.stdout.decode() + p.stderr.decode()

    def start(self, *extra):
        off = self.log_size()
        log = open(self.log, "a")
        self.proc = subprocess.Popen(self.cmd(*extra), env=self.env(), stdout=log, stderr=log,
                                     stdin=subprocess.DEVNULL)
        log.close()
        self.e.h.procs.append(self.proc)
        wait(lambda: "following from version" in self.log_since(off), 15,
             "the %s mirror started" % self.name)

    def stop(self, sig=signal.SIGTERM):
        p = self.proc
        if p is None:
            return None
        if p.poll() is None:
            os.kill(p.pid, sig)
            p.wait(10)
        if p in self.e.h.procs:
            self.e.h.procs.remove(p)
        self.proc = None
        return p.returncode

    def log_since(self, offset):
        return self.log.read_text("utf-8", "replace")[offset:] if self.log.exists() else ""

    def log_size(self):
        return len(self.log_since(0))

    # -- requests to this node's httpd --
    def req(self, method, path, headers=None, body=None):
        return self.e.h.servers[self.name].req("cgi", method, path, headers, body)

    def api(self, token, ws=None):
        hd = [("Authorization", "Bearer " + token)]
        if ws:
            hd.append(("Krenalis-Workspace", ws))
        return self.req("GET", "/v1/users", hd)

    def ingest(self, token, body=None):
        b = json.dumps(body or {"type": "track"}).encode()
        return self.req("POST", "/v1/events", [("Authorization", "Bearer " + token),
                                                ("Content-Type", "application/json")], b)

    def settings(self, key):
        return self.req("GET", "/v1/events/settings/" + key)


class Env:
    """Everything the tests share: the clusters, the writer, the nodes (main: fed from the
    primary with LISTEN; replica: fed from the streaming replica by polling)."""

    def __init__(self, h, root):
        self.h = h
        self.root = root
        self.pg = None
        self.pg2 = None
        self.w = None
        self.k = None
        self.pepper = secrets.token_bytes(32)
        self.kms_key = secrets.token_bytes(32)
        self.pepper_file = root / "pepper"
        self.pgpass = root / "pgpass"
        self.figures = {}
        self.p = Node(self, "main", "pg")
        self.r = Node(self, "replica", "pg2", poll_ms=REPLICA_POLL_MS)

    def conninfo(self, cluster=None, password=False):
        c = cluster or self.pg
        s = "host=127.0.0.1 port=%d dbname=krenalis user=edge connect_timeout=3" % c.port
        return s + (" password=%s" % PASSWORD if password else "")

    # The main node, as most tests use it.
    store = property(lambda self: self.p.store)
    mirror_log = property(lambda self: self.p.log)
    mirror = property(lambda self: self.p.proc)

    def mirror_cmd(self, *a, **kw):
        return self.p.cmd(*a, **kw)

    def mirror_env(self):
        return self.p.env()

    def run_once(self, *a, **kw):
        return self.p.run_once(*a, **kw)

    def start_mirror(self):
        self.p.start()

    def stop_mirror(self, sig=signal.SIGTERM):
        return self.p.stop(sig)

    def log_since(self, offset):
        return self.p.log_since(offset)

    def log_size(self):
        return self.p.log_size()

    def api(self, *a, **kw):
        return self.p.api(*a, **kw)

    def ingest(self, *a, **kw):
        return self.p.ingest(*a, **kw)

    def settings(self, key):
        return self.p.settings(key)


def wait(cond, timeout, what, interval=0.01):
    t0 = time.monotonic()
    while True:
        if cond():
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise Failure("timed out after %.1f s waiting for %s" % (timeout, what))
        time.sleep(interval)


def status_becomes(fn, status, timeout=5, what=""):
    """Waits until fn() answers status; returns the seconds it took."""
    last = [None]

    def ok():
        r = fn()
        last[0] = r
        return r.status == status
    try:
        return wait(ok, timeout, what or "status %d" % status)
    except Failure:
        r = last[0]
        raise Failure("%s: expected %d, still %s" % (what or "request", status,
                                                     r.brief() if r else "nothing"))


def expect(r, status, message=None, code=None):
    if r.status != status:
        raise Failure("expected %d, got %s" % (status, r.brief()))
    if message is not None:
        eq(r.json()["error"]["message"], message, "message")
    if code is not None:
        eq(r.json()["error"]["code"], code, "code")


# ---------------------------------------------------------------------------------------
# Set-up


def prepare_database(e, statement_log):
    """The primary with the Krenalis schema, the mirror's role (conf/), its password in a
    pgpass file, the pepper in a file."""
    e.pg = Cluster(e.root / "pg").init(statement_log=statement_log).start()
    e.pg.psql("CREATE DATABASE krenalis", db="postgres")
    e.pg.psql(None, file=HERE / "schema.sql", variables={"schema": "public"})
    e.pg.psql(None, file=REPO / "conf" / "krenalis-mirror-role.sql",
              variables={"schema": "public", "role": "edge"})
    e.pg.psql("ALTER ROLE edge PASSWORD '%s'" % PASSWORD)
    e.h.secret(PASSWORD)
    e.pepper_file.write_bytes(e.pepper)
    os.chmod(e.pepper_file, 0o600)
    e.pgpass.write_text("127.0.0.1:*:krenalis:edge:%s\n" % PASSWORD)
    os.chmod(e.pgpass, 0o600)


def setup(e):
    h = e.h
    prepare_database(e, statement_log=True)
    blob = subprocess.run([str(h.build / "kms_seal"), e.kms_key.hex(), e.pepper.hex()],
                          stdout=subprocess.PIPE, check=True).stdout.decode().strip()
    e.pg.psql("INSERT INTO metadata VALUES ('\\x%s')" % blob)
    for s in (e.pepper.hex(), base64.b64encode(e.pepper).decode(), e.kms_key.hex(),
              base64.b64encode(e.kms_key).decode().rstrip("=")):
        h.secret(s)
    e.w = Writer(e.pg)
    e.k = Krenalis(e.w, e.pepper)
    f = h.f
    k = e.k
    f["org1"] = k.create_org("Acme")
    f["ws1a"] = k.create_ws(f["org1"], "A")
    f["ws1b"] = k.create_ws(f["org1"], "B")
    f["src"], f["wk_src"] = k.create_conn(f["ws1a"], "Source", "Fusion")
    f["dst"], f["wk_dst"] = k.create_conn(f["ws1a"], "Destination", None)
    f["nos"], f["wk_nos"] = k.create_conn(f["ws1b"], "Source", None)
    f["k1_id"], f["k1"] = k.create_access_key(f["org1"])
    f["kr_id"], f["kr"] = k.create_access_key(f["org1"], f["ws1a"])
    f["mcp_id"], f["mcp"] = k.create_access_key(f["org1"], kind="MCP")
    f["org2"] = k.create_org("Beta", enabled=False)
    f["ws2"] = k.create_ws(f["org2"])
    f["c2"], f["wk2"] = k.create_conn(f["ws2"])
    f["k2_id"], f["k2"] = k.create_access_key(f["org2"])
    k.set_account(f["src"])
    # The store directory belongs to Apache's user; the mirror gives it every new store.
    e.store.mkdir()
    if h.is_root:
        shutil.chown(e.store, "www-data", "www-data")
    # First install: --once, the pepper decrypted with the KMS key (unpadded base64), the
    # password in the connection string (it must never show again).
    env = dict(e.mirror_env(), KRENALIS_KMS="key:" + base64.b64encode(e.kms_key).decode()
               .rstrip("="))
    t0 = time.monotonic()
    cmd = [str(h.keys_bin), "--store", str(e.store), "mirror", "--once", "--postgres",
           e.conninfo(password=True)]
    p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    out = p.stdout.decode() + p.stderr.decode()
    with open(e.mirror_log, "a") as fl:
        fl.write(out)
    if p.returncode != 0:
        raise Failure("mirror --once (KMS): exit %d: %s" % (p.returncode, out))
    e.figures["first snapshot"] = "%.2f s" % (time.monotonic() - t0)
    check("snapshot at version" in out, "no snapshot line: %s" % out)
    e.start_mirror()
    h.start_backend()
    h.httpd("main", global_extra="KrenalisAuthMaxStaleness %d" % MAX_STALE).start()
    # A streaming replica (pg_basebackup over loopback) and a second node fed from it.
    e.pg2 = Cluster(e.root / "pg", name="replica").replica_of(e.pg).start()
    e.r.store.mkdir()
    if h.is_root:
        shutil.chown(e.r.store, "www-data", "www-data")
    e.r.start()
    h.httpd("replica", store=e.r.store,
            global_extra="KrenalisAuthMaxStaleness %d" % MAX_STALE).start()


def teardown(e):
    e.p.stop()
    e.r.stop()
    if e.w:
        e.w.close()
    for c in (e.pg2, e.pg):
        if c:
            c.stop()


# ---------------------------------------------------------------------------------------
# What the snapshot brought (SPEC §11.2, semantics at the edge)

DOES_NOT_EXIST = "API key in the Authorization header of the request does not exist"
WK_INVALID = "event write key in the Authorization header is not valid"
PATH_INVALID = "event write key in the path is invalid"


@test("snapshot.api-keys")
def _(e):
    f = e.h.f
    expect(e.api(f["k1"]), 200)
    expect(e.api(f["kr"]), 200)
    expect(e.api(f["k1"], f["ws1b"]), 200)
    expect(e.api(f["kr"], f["ws1b"]), 400)
    expect(e.api(f["k2"]), 422, "organization %s is disabled" % f["org2"])


@test("snapshot.mcp-key-does-not-exist")
def _(e):
    f = e.h.f
    expect(e.api(f["mcp"]), 401, DOES_NOT_EXIST)
    expect(e.ingest(f["mcp"], {"connectionId": f["src"]}), 401,
           "API key in the Authorization header is invalid")


@test("snapshot.write-keys-by-role-and-strategy")
def _(e):
    f = e.h.f
    expect(e.ingest(f["wk_src"]), 200)
    expect(e.settings(f["wk_src"]), 200)
    expect(e.ingest(f["wk_dst"]), 401, WK_INVALID)
    expect(e.settings(f["wk_dst"]), 401, PATH_INVALID)
    expect(e.ingest(f["wk_nos"]), 200)
    expect(e.settings(f["wk_nos"]), 401, PATH_INVALID)
    expect(e.ingest(f["wk2"]), 503, "organization is disabled")


@test("snapshot.api-key-connection-rules")
def _(e):
    f = e.h.f
    # Any connection of the organization, whatever its role.
    expect(e.ingest(f["k1"], {"connectionId": f["dst"]}), 200)
    expect(e.ingest(f["k1"], {"connectionId": f["nos"]}), 200)
    expect(e.ingest(f["k1"], {"connectionId": f["c2"]}), 422,
           "connection %s does not exist" % f["c2"])
    # A restricted key: only the connections of its workspace.
    expect(e.ingest(f["kr"], {"connectionId": f["dst"]}), 200)
    expect(e.ingest(f["kr"], {"connectionId": f["nos"]}), 422,
           "connection %s does not exist" % f["nos"])


# ---------------------------------------------------------------------------------------
# Following: every notification of SPEC §11.1


@test("follow.create-and-revoke-keys")
def _(e):
    f, k = e.h.f, e.k
    kid, tok = k.create_access_key(f["org1"])
    t = status_becomes(lambda: e.api(tok), 200, what="new API key")
    e.figures.setdefault("create->accepted", []).append(t)
    k.delete_access_key(kid)
    status_becomes(lambda: e.api(tok), 401, what="deleted API key")
    wk = k.create_write_key(f["src"])
    status_becomes(lambda: e.ingest(wk), 200, what="new write key")
    k.delete_write_key(f["src"], wk)
    status_becomes(lambda: e.ingest(wk), 401, what="deleted write key")
    expect(e.ingest(f["wk_src"]), 200)
    # An unknown ID changes nothing.
    k.delete_access_key(random_id())
    k.delete_write_key(f["src"], "x" * 32)
    expect(e.api(f["k1"]), 200)


@test("follow.organization-status-and-names")
def _(e):
    f, k = e.h.f, e.k
    k.set_org_status(f["org1"], False)
    status_becomes(lambda: e.api(f["k1"]), 422, what="disabled organization")
    expect(e.ingest(f["wk_src"]), 503, "organization is disabled")
    k.set_org_status(f["org1"], True)
    status_becomes(lambda: e.api(f["k1"]), 200, what="enabled again")
    k.update_org(f["org1"], "Acme renamed")
    k.rename_ws(f["ws1b"], "B2")
    k.rename_ws(f["ws1b"], "B3", kind="UpdateWorkspace")
    k.rename_conn(f["src"], "renamed")
    k.set_account(f["src"])
    # Names change nothing at the edge; the version goes on past the ignored name.
    k.w.unversioned_notify()
    kid, tok = k.create_access_key(f["org1"])
    status_becomes(lambda: e.api(tok), 200, what="a key after renames")


@test("follow.connection-strategy-and-role")
def _(e):
    f, k = e.h.f, e.k
    k.update_conn(f["src"], "site", None)
    status_becomes(lambda: e.settings(f["wk_src"]), 401, what="strategy removed")
    expect(e.ingest(f["wk_src"]), 200)
    k.update_conn(f["nos"], "site", "Isolation")
    status_becomes(lambda: e.settings(f["wk_nos"]), 200, what="strategy set")
    k.update_conn(f["src"], "site", "Fusion")
    status_becomes(lambda: e.settings(f["wk_src"]), 200, what="strategy back")
    cid, wk = k.create_conn(f["ws1a"], "Destination", "Fusion")
    kid, tok = k.create_access_key(f["org1"], f["ws1a"])
    status_becomes(lambda: e.api(tok), 200, what="key after a destination connection")
    expect(e.ingest(wk), 401, WK_INVALID)
    expect(e.ingest(tok, {"connectionId": cid}), 200)


@test("follow.cascades")
def _(e):
    f, k = e.h.f, e.k
    org = k.create_org("Cascade")
    ws1, ws2 = k.create_ws(org), k.create_ws(org)
    c1, wk1 = k.create_conn(ws1)
    c2, wk2 = k.create_conn(ws2)
    _, kall = k.create_access_key(org)
    _, kr1 = k.create_access_key(org, ws1)
    _, kr2 = k.create_access_key(org, ws2, name="long body")
    status_becomes(lambda: e.api(kr2), 200, what="cascade fixture")
    k.delete_conn(c1)
    status_becomes(lambda: e.ingest(wk1), 401, what="write key of a deleted connection")
    expect(e.api(kr1), 200)
    k.delete_ws(ws1)
    status_becomes(lambda: e.api(kr1), 401, what="key restricted to a deleted workspace")
    expect(e.api(kall), 200)
    expect(e.ingest(wk2), 200)
    # A long NOTIFY body, split with '*', is a wake-up like any other.
    k.w.change("", "UpdateWarehouse", {"Warehouse": "x" * 50}, long_body=True)
    k.delete_org(org)
    for tok in (kall, kr2):
        status_becomes(lambda: e.api(tok), 401, what="key of a deleted organization")
    expect(e.ingest(wk2), 401, WK_INVALID)
    expect(e.api(f["k1"]), 200)


@test("follow.cli-write-commands-refused")
def _(e):
    rc, out, err = e.h.cli("organization", "add", "--name", "x", store=e.store, ok=False)
    eq(rc, 1, "exit status")
    check("is a mirror of the Krenalis database" in err and "dbname=krenalis" in err
          and "user=edge" in err, "message: %r" % err)
    check(PASSWORD not in err and "password" not in err, "the password shows: %r" % err)
    rc, out, err = e.h.cli("api-key", "list", store=e.store, ok=False)
    eq(rc, 0, "a read command on a mirror")


@test("follow.statement-log-no-foreign-payloads")
def _(e):
    log = e.pg.statement_log()
    lines = [ln for ln in log.splitlines() if " edge " in ln and "notifications" in ln]
    check(len(lines) > 3, "the mirror's statements are not in the log")
    for ln in lines:
        if "payload" in ln:
            check("CASE WHEN name::text IN ('CreateOrganization'" in ln, "payload fetched: " + ln)
            check("SetAccount" not in ln and "UpdateWarehouse" not in ln, "foreign name: " + ln)
    # No transaction is left open by the mirrors' connections (the LISTEN one included).
    states = e.pg.psql("SELECT state FROM pg_stat_activity WHERE usename = 'edge'").splitlines()
    check(states and all(st == "idle" or st == "active" for st in states),
          "mirror connections: %r" % states)
    # Column grants: the mirror's role cannot read what it must not hold.
    rc = subprocess.run([str(e.pg.bin / "psql"), "-X", "-h", "127.0.0.1", "-p", str(e.pg.port),
                         "-U", "edge", "-d", "krenalis", "-c", "SELECT settings FROM connections"],
                        env=e.mirror_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    check(rc.returncode != 0 and b"permission denied" in rc.stdout,
          "edge read connections.settings: %r" % rc.stdout)


# ---------------------------------------------------------------------------------------
# Revocation latency (primary, LISTEN): a key deleted in PostgreSQL is refused within


@test("replica.same-answers-by-polling")
def _(e):
    f, k = e.h.f, e.k
    check("(a hot standby: no LISTEN)" in e.r.log_since(0), "the replica's mirror LISTENs?")
    for node in (e.p, e.r):
        expect(node.api(f["mcp"]), 401, DOES_NOT_EXIST)
        expect(node.ingest(f["wk_dst"]), 401, WK_INVALID)
        expect(node.settings(f["wk_nos"]), 200)  # set by follow.connection-strategy-and-role
        expect(node.ingest(f["k1"], {"connectionId": f["dst"]}), 200)
    kid, tok = k.create_access_key(f["org1"], f["ws1a"])
    for node in (e.p, e.r):
        status_becomes(lambda: node.api(tok), 200, what="new key on %s" % node.name)
    k.set_org_status(f["org1"], False)
    for node in (e.p, e.r):
        status_becomes(lambda: node.api(tok), 422, what="disabled on %s" % node.name)
    k.set_org_status(f["org1"], True)
    k.delete_ws(f["ws1a"])
    for node in (e.p, e.r):
        status_becomes(lambda: node.api(tok), 401, what="cascade on %s" % node.name)
        status_becomes(lambda: node.ingest(f["wk_src"]), 401, what="cascade on %s" % node.name)
        expect(node.api(f["k1"]), 200)


def measure_revocations(e, attempt):
    """Revocations under load (a keep-alive client hammering both nodes meanwhile): the primary
    node refuses a deleted key within 250 ms at p99, the replica node within its poll interval
    + 250 ms; no accept after those bounds."""
    f, k = e.h.f, e.k
    n = 200
    keys = [k.create_access_key(f["org1"]) for _ in range(n)]
    for node in (e.p, e.r):
        status_becomes(lambda: node.api(keys[-1][1]), 200, timeout=10, what="latency fixture")
    bounds = {"main": 0.25, "replica": REPLICA_POLL_MS / 1000 + 0.25}
    lat = {"main": [], "replica": []}
    late = []
    group = 5  # revocations in flight at once, each its own Krenalis change

    def watch(node, pending, errors):
        """Polls node until it refuses every pending token; one thread per node."""
        while pending:
            for tok, t0 in list(pending.items()):
                r = node.api(tok)
                dt = time.monotonic() - t0
                if r.status == 401:
                    lat[node.name].append(dt)
                    del pending[tok]
                elif dt > bounds[node.name]:
                    late.append((node.name, dt))
                if dt > 5:
                    errors.append("revoked key still accepted by %s after 5 s" % node.name)
                    return

    for i in range(0, n, group):
        pending = {"main": {}, "replica": {}}
        for kid, tok in keys[i:i + group]:
            k.delete_access_key(kid)
            t0 = time.monotonic()
            pending["main"][tok] = pending["replica"][tok] = t0
        errors = []
        threads = [threading.Thread(target=watch, args=(node, pending[node.name], errors))
                   for node in (e.p, e.r)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise Failure(errors[0])
    for name, v in lat.items():
        v.sort()
        p99 = v[int(0.99 * (len(v) - 1))]
        e.figures["revocation latency, %s node, %d revocations (run %d)" % (name, n, attempt)] = (
            "p50 %.0f ms, p99 %.0f ms, max %.0f ms" % (v[len(v) // 2] * 1000, p99 * 1000,
                                                       v[-1] * 1000))
        check(p99 < bounds[name], "%s: p99 %.0f ms >= %.0f ms" % (name, p99 * 1000,
                                                                  bounds[name] * 1000))
    e.figures["accepts after the bound (run %d)" % attempt] = "%d requests" % len(late)
    check(not late, "accepted after the bound: %r" % late[:10])


@test("latency.revocations")
def _(e):
    """The machine is shared (2 cores): a run disturbed by other work is measured once more,
    and the second run must meet the bounds too."""
    try:
        measure_revocations(e, 1)
    except Failure as ex:
        e.figures["latency run 1 failed"] = str(ex)[:200]
        measure_revocations(e, 2)


# ---------------------------------------------------------------------------------------
# Faults


@test("fault.backend-terminated")
def _(e):
    f, k = e.h.f, e.k
    off = e.log_size()
    e.pg.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'edge'")
    kid, tok = k.create_access_key(f["org1"])
    status_becomes(lambda: e.api(tok), 200, timeout=10, what="a key after the backend was killed")
    log = e.log_since(off)
    check("back on PostgreSQL" in log, "no reconnection line: %r" % log)
    eq(log.count("retrying with backoff"), 1, "fault lines")


@test("fault.postgres-stopped-and-restarted")
def _(e):
    """PostgreSQL down for OUTAGE_SECONDS (30): a node without KrenalisAuthMaxStaleness keeps
    serving from the last good store throughout; the main node (MaxStaleness 5) serves until
    its store is stale, then fails closed (503) until the mirror confirms again."""
    f, k, h = e.h.f, e.k, e.h
    steady = h.servers.get("steady")
    if steady is None or steady.proc is None:
        steady = h.httpd("steady").start()  # the main node's store, no MaxStaleness
    off = e.log_size()
    e.pg.stop()
    stale_at = None
    try:
        t0 = time.monotonic()
        # the backoff reaches its 5 s cap several times meanwhile
        while time.monotonic() - t0 < OUTAGE_SECONDS:
            t = time.monotonic() - t0
            expect(steady.req("cgi", "GET", "/v1/users", [("Authorization", "Bearer " + f["k1"])]),
                   200)
            r = e.api(f["k1"])
            if r.status == 503 and stale_at is None:
                stale_at = t
                expect(r, 503, UNAVAILABLE, "ServiceUnavailable")
            elif stale_at is None:
                expect(r, 200)
            else:
                expect(r, 503)
            time.sleep(0.5)
    finally:
        e.pg.start()
    check(stale_at is None or stale_at >= MAX_STALE - 1.5,
          "main node stale too early: %.1f s" % (stale_at or 0))
    check(OUTAGE_SECONDS < MAX_STALE + 5 or stale_at is not None,
          "the main node kept answering 200 through a %d s outage" % OUTAGE_SECONDS)
    e.figures["PostgreSQL down"] = "%d s: steady node 200 throughout; MaxStaleness %d node 503 after %s" % (
        OUTAGE_SECONDS, MAX_STALE, "%.1f s" % stale_at if stale_at is not None else "never")
    e.w.close()
    e.w = k.w = Writer(e.pg)
    kid, tok = k.create_access_key(f["org1"])
    status_becomes(lambda: e.api(tok), 200, timeout=15, what="a key after the restart")
    # each child looks at the freshness mark at most once a second
    status_becomes(lambda: e.api(f["k1"]), 200, timeout=3, what="fresh again on every child")
    log = e.log_since(off)
    eq(log.count("retrying with backoff"), 1, "one line for the outage: %r" % log)
    check("back on PostgreSQL" in log, "no line for the recovery: %r" % log)


@test("fault.gap-resyncs")
def _(e):
    f, k = e.h.f, e.k
    off = e.log_size()
    kid, tok = k.create_access_key(f["org1"])
    status_becomes(lambda: e.api(tok), 200, what="gap fixture")
    # A change the notifications do not carry (the tables are the truth), then a gap.
    e.w.sql("DELETE FROM access_keys WHERE id = %s" % e.w.lit(kid))
    e.w.sql("INSERT INTO notifications SELECT MAX(version) + 2, 'ElectLeader', '{}' "
            "FROM notifications")
    kid2, tok2 = k.create_access_key(f["org1"])
    status_becomes(lambda: e.api(tok2), 200, timeout=10, what="a key after the gap")
    # Every child adopts the new store within a second (its once-a-second check).
    status_becomes(lambda: e.api(tok), 401, timeout=3, what="the key deleted before the gap")
    time.sleep(1.1)
    for _ in range(20):
        expect(e.api(tok), 401, DOES_NOT_EXIST)
        expect(e.api(tok2), 200)
    log = e.log_since(off)
    check("a gap in versions" in log and "full snapshot" in log, "no resync: %r" % log)


@test("fault.failover-lost-changes-resync")
def _(e):
    """A failover to an asynchronous standby that had not received the last change: the new
    primary (the same system identifier, at the same address) numbers its changes on from
    where it stood, so the versions the store already holds past that point are of another
    history, which no version tells (docs/mirror.md: not detected). Restarted with --resync,
    as the guide says, the node ends up with what the new primary holds: without the key
    created by the lost change, and without the key the new primary deleted under a version
    number the store had already applied."""
    h = e.h
    a = Cluster(e.root / "pg", name="failover-a").init(statement_log=False).start()
    b = w = None
    node = Node(e, "failover", "pgf")
    try:
        a.psql("CREATE DATABASE krenalis", db="postgres")
        a.psql(None, file=HERE / "schema.sql", variables={"schema": "public"})
        a.psql(None, file=REPO / "conf" / "krenalis-mirror-role.sql",
               variables={"schema": "public", "role": "edge"})
        a.psql("ALTER ROLE edge PASSWORD '%s'" % PASSWORD)
        w = Writer(a)
        k = Krenalis(w, e.pepper)
        org = k.create_org("Failover")
        kid1, tok1 = k.create_access_key(org)  # version 2
        b = Cluster(e.root / "pg", name="failover-b").replica_of(a).start()
        wait(lambda: b.psql("SELECT COALESCE(MAX(version), 0) FROM notifications") == "2", 15,
             "the standby at version 2")
        b.stop()  # it gets nothing more: the next change is lost in the failover
        _, tok_lost = k.create_access_key(org)  # version 3, on the old primary only
        e.pgf = a
        node.store.mkdir()
        if h.is_root:
            shutil.chown(node.store, "www-data", "www-data")
        node.start()
        h.httpd("failover", store=node.store).start()
        status_becomes(lambda: node.api(tok_lost), 200, what="the key of the change to be lost")
        expect(node.api(tok1), 200)
        node.stop()
        w.close()
        w = None
        a.stop()
        # The standby takes over the primary's address (a virtual IP, a DNS name), promoted.
        with open(b.data / "postgresql.conf", "a") as f:
            f.write("port = %d\n" % a.port)
        b.port = a.port
        b.start()
        b.run(b.bin / "pg_ctl", "-D", b.data, "-w", "-t", "30", "promote")
        w = Writer(b)
        k2 = Krenalis(w, e.pepper)
        k2.delete_access_key(kid1)  # version 3 of the new primary
        _, tok_new = k2.create_access_key(org)  # version 4
        e.k.secrets |= k.secrets | k2.secrets
        off = node.log_size()
        node.start("--resync")
        check("(--resync)" in node.log_since(off), "no snapshot for --resync: %r" %
              node.log_since(off))
        status_becomes(lambda: node.api(tok_new), 200, timeout=10,
                       what="a key created after the failover")
        time.sleep(1.1)  # a store swapped in reaches every child within a second
        expect(node.api(tok1), 401, DOES_NOT_EXIST)  # deleted by the new primary
        expect(node.api(tok_lost), 401, DOES_NOT_EXIST)  # the new primary never had it
    finally:
        node.stop()
        srv = h.servers.pop("failover", None)
        if srv:
            srv.stop()
        if w:
            w.close()
        for c in (b, a):
            if c:
                c.stop()


@test("fault.symlinked-store-resync")
def _(e):
    """--store through a symlink: the snapshot is swapped in behind the link (the directory it
    names, which Apache may name too), and the link stays a link."""
    f = e.h.f
    link = e.root / "store-link"
    link.symlink_to(e.store)
    e.stop_mirror()
    try:
        ino = e.store.stat().st_ino
        cmd = e.mirror_cmd("--once", "--resync")
        cmd[cmd.index("--store") + 1] = str(link)
        p = subprocess.run(cmd, env=e.mirror_env(), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=60)
        eq(p.returncode, 0, "exit status: %r" % p.stdout[-300:])
        check(b"(--resync)" in p.stdout, "no snapshot: %r" % p.stdout[-300:])
        check(link.is_symlink(), "the link was replaced by a directory")
        check(e.store.stat().st_ino != ino, "the store behind the link was not swapped")
        time.sleep(1.1)  # every child looks at data.mdb again within a second
        expect(e.api(f["k1"]), 200)
    finally:
        if link.is_symlink():
            link.unlink()
        e.start_mirror()


@test("fault.sigkill-mid-batch-resumes")
def _(e):
    """SIGKILLed at random points of a long catch-up: the store always holds whole batches
    (1000 notifications, one LMDB transaction each) and the next run resumes from there."""
    f = e.h.f
    e.stop_mirror()
    n = 8000
    script = []
    for i in range(n):
        d = base64.b64encode(hmac.new(e.pepper, secrets.token_bytes(32), hashlib.sha256)
                             .digest()).decode()
        script.append(
            "BEGIN; LOCK TABLE notifications IN EXCLUSIVE MODE; INSERT INTO notifications "
            "SELECT MAX(version) + 1, 'CreateAccessKey', %s FROM notifications; COMMIT"
            % e.w.lit(json.dumps({"ID": random_id(), "Organization": f["org1"],
                                  "Workspace": "", "Type": 0, "HMAC": d})))
    e.w.sql(";\n".join(script))
    before = count_keys(e)
    seen = []
    rnd = random.Random(7)
    while not seen or seen[-1] < n:
        proc = subprocess.Popen(e.mirror_cmd(), env=e.mirror_env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        e.h.procs.append(proc)
        # Later the longer it made no progress (a slow start-up, a sanitizer build).
        stuck = len(seen) - seen.index(seen[-1]) if seen else 0
        time.sleep(rnd.uniform(0.01, 0.06) + 0.02 * stuck)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)
        e.h.procs.remove(proc)
        mid = count_keys(e) - before
        check(mid % 1000 == 0 or mid == n, "a killed batch left %d of %d keys (not whole "
              "batches of 1000)" % (mid, n))
        check(not seen or mid >= seen[-1], "the store went back: %r then %d" % (seen, mid))
        seen.append(mid)
        check(len(seen) < 60, "no progress: %r" % seen)
    check(any(0 < x < n for x in seen), "never killed in the middle: %r" % seen)
    e.figures["keys applied at each SIGKILL"] = "%s of %d" % (seen, n)
    e.start_mirror()
    expect(e.api(e.h.f["k1"]), 200)


def count_keys(e):
    rc, out, err = e.h.cli("api-key", "list", "--organization", e.h.f["org1"], store=e.store,
                           ok=False)
    if rc != 0:
        raise Failure("api-key list: %s" % err)
    return len(json.loads(out)["keys"])


@test("fault.wrong-pepper-refused-store-untouched")
def _(e):
    data = e.store / "data.mdb"
    before = (hashlib.sha256(data.read_bytes()).hexdigest(), data.stat().st_ino)
    wrong = e.root / "wrong-pepper"
    wrong.write_bytes(secrets.token_bytes(32))
    os.chmod(wrong, 0o600)
    e.stop_mirror()
    rc, out = e.run_once(pepper=wrong)
    eq(rc, 1, "exit status")
    check("was created with another secret" in out, "message: %r" % out)
    env = dict(e.mirror_env(), KRENALIS_KMS="key:" + base64.b64encode(secrets.token_bytes(32))
               .decode())
    p = subprocess.run([str(e.h.keys_bin), "--store", str(e.store), "mirror", "--once",
                        "--postgres", e.conninfo()], env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=30)
    eq(p.returncode, 1, "exit status (KMS)")
    check(b"does not decrypt" in p.stdout, "message: %r" % p.stdout)
    after = (hashlib.sha256(data.read_bytes()).hexdigest(), data.stat().st_ino)
    eq(after, before, "the store")
    e.start_mirror()


@test("fault.max-staleness")
def _(e):
    f = e.h.f
    off = e.log_size()
    rc = e.stop_mirror(signal.SIGTERM)
    eq(rc, 0, "exit status after SIGTERM")
    check("stopped at version" in e.log_since(off), "no stop line")
    t0 = time.monotonic()
    expect(e.api(f["k1"]), 200)
    t = status_becomes(lambda: e.api(f["k1"]), 503, timeout=MAX_STALE + 4,
                       what="503 once the store is stale")
    elapsed = time.monotonic() - t0
    e.figures["stale after mirror stop"] = "%.1f s (KrenalisAuthMaxStaleness %d)" % (
        elapsed, MAX_STALE)
    check(elapsed >= MAX_STALE - 1.5, "503 too early: %.1f s" % elapsed)
    expect(e.api(f["k1"]), 503, UNAVAILABLE, "ServiceUnavailable")
    expect(e.ingest(f["wk_src"]), 503, UNAVAILABLE)
    e.start_mirror()
    t = status_becomes(lambda: e.api(f["k1"]), 200, timeout=4, what="200 again")
    e.figures["fresh again after restart"] = "%.1f s" % t


@test("logs.no-secrets")
def _(e):
    texts = {"mirror.log": e.mirror_log.read_text("utf-8", "replace")}
    for p in (e.root / "logs").iterdir():
        if p.name != "echo_server.log" and p.is_file():
            texts[p.name] = p.read_text("latin-1")
    secrets_all = set(e.h.secrets) | set(e.k.secrets)
    found = []
    for name, text in texts.items():
        if "access" in name:
            text = "\n".join(ln for ln in text.splitlines() if "/events/settings/" not in ln)
        for s in secrets_all:
            if s in text:
                found.append("%s in %s" % (s[:6] + "...", name))
    check(not found, "secrets in logs: %s" % ", ".join(found))
    check("{" not in texts["mirror.log"], "a payload in the mirror's output")


def new_env(build_arg):
    """The harness (its temporary root; httpd event MPM) and an Env over it; None after
    printing what is missing from the build."""
    build = harness.find_build(build_arg)
    if build is None:
        return None
    h = Harness(build, "event")
    # Names the harness's common <Location> blocks use; nothing here relies on them.
    h.f.update(org1=random_id(), org2=random_id(), ws1a=random_id(), ws1b=random_id())
    return Env(h, h.root)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("-k", dest="filter", action="append", default=[])
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    e = new_env(a.build)
    if e is None:
        return 1
    h = e.h
    passed = failed = 0
    t0 = time.time()
    try:
        try:
            setup(e)
        except Exception as ex:
            print("FAIL setup: %s" % (ex if isinstance(ex, Failure) else traceback.format_exc()))
            failed += 1
        else:
            for name, fn in TESTS:
                if a.filter and not any(s in name for s in a.filter) and name != "logs.no-secrets":
                    continue
                t1 = time.time()
                try:
                    fn(e)
                except Failure as ex:
                    print("FAIL %s: %s" % (name, ex))
                    failed += 1
                except Exception:
                    print("FAIL %s: %s" % (name, traceback.format_exc().rstrip()))
                    failed += 1
                else:
                    print("ok %s (%.1f s)" % (name, time.time() - t1))
                    passed += 1
                sys.stdout.flush()
    finally:
        teardown(e)
        h.stop_all()
    for k, v in e.figures.items():
        if isinstance(v, list):
            v = ", ".join("%.0f ms" % (x * 1000) for x in v)
        print("# %s: %s" % (k, v))
    if failed or a.keep:
        print("# kept %s" % h.root)
    else:
        shutil.rmtree(h.root, ignore_errors=True)
    print("# mirror suite, %.1f s" % (time.time() - t0))
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
