"""Store faults: the store directory, data.mdb, permissions, the secret, a map grown while
serving, the reader table, children killed mid-request, krenalis-keys killed mid-import.

In every case the module must answer 503 ServiceUnavailable (or serve correctly), never accept a
key it should not, log a clear line (not one per request), and recover without a restart once
the fault is gone. Each test works on a store of its own (or a copy), so that a fault does not
leak into the next test.
"""
import os
import random
import re
import shutil
import signal
import stat
import subprocess
import threading
import time

from common import (BODY_503, Failure, Holder, LogCursor, Skip, assert_no_crash, bearer, check,
                    chown_store, crash_lines, data_mappings, graceful, keys_cmd, mdb_readers, one,
                    pid_alive, rel_server, rtest, start_server, wait_until, worker_children)
import harness

# ---------------------------------------------------------------------------------------
# helpers


def new_store(ctx, name, owner=True):
    """A store of its own: an organization, a workspace, two API keys, a connection."""
    h = ctx.h
    path = h.root / name
    h.init_store(store=path, owner=owner)
    s = {"store": path}
    s["org"] = h.new_org(store=path)
    s["ws"] = h.new_ws(s["org"], store=path)
    s["kid"], s["k"] = h.new_api_key(s["org"], store=path)
    s["kid2"], s["k2"] = h.new_api_key(ws=s["ws"], store=path)
    s["conn"], s["wk"] = h.new_conn(s["ws"], store=path)
    return s


def ask(srv, tok, path="/fast/items", timeout=4):
    """Status of one request with tok on a new connection; None when the connection closed
    without an answer. A 503 must be the module's (SPEC §10 body)."""
    st, r = one(srv.port_rel, "GET", path, bearer(tok), timeout=timeout)
    if st == 503 and r.body != BODY_503:
        raise Failure("a 503 that is not the module's: %s" % r.brief())
    if st == 200 and path.startswith("/fast/"):
        rid = r.get("X-Rel-Id") or ""
        if "key=" not in rid or "key=(null)" in rid:
            raise Failure("200 without an identity: %s" % r.brief())
    return st


def ask_many(srv, tok, n=12, path="/fast/items", timeout=4):
    """n requests at once (they spread over the children); returns the statuses."""
    out = [None] * n

    def go(i):
        try:
            out[i] = ask(srv, tok, path, timeout)
        except Failure as e:
            out[i] = "bad: %s" % e

    ts = [threading.Thread(target=go, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    return out


def poll(srv, tok, want, timeout=6.0, rounds=6, req_timeout=4):
    """Waits until `rounds` requests in a row answer `want`; returns the last statuses."""
    end = time.time() + timeout
    last = None
    while time.time() < end:
        last = ask_many(srv, tok, rounds, timeout=req_timeout)
        if all(s == want for s in last):
            return last
        time.sleep(0.2)
    raise Failure("expected %s within %.0f s, last answers %r" % (want, timeout, last))


def store_lines(log, store):
    """Error-log lines of the module about this store (warn or worse)."""
    s = str(store)
    return [ln for ln in log.splitlines() if s in ln and "krenalis_auth:" in ln
            and ":info]" not in ln and ":debug]" not in ln]


def check_logged_once(log, store, nchildren, what):
    lines = store_lines(log, store)
    check(lines, "%s: nothing in the error log names the store %s" % (what, store))
    limit = 3 * nchildren + 4
    check(len(lines) <= limit, "%s: %d log lines about the store (one per request?), expected at"
          " most %d:\n    %s" % (what, len(lines), limit, "\n    ".join(lines[:6])))
    return lines


def fault_server(ctx, name, store, mpm=None, env=None):
    return rel_server(ctx, name, store=store, mpm=mpm, env=env)


def kill_workers(srv):
    pids = worker_children(srv)
    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return pids


def nworkers(srv):
    return max(1, len(worker_children(srv)))


def wait_new_workers(srv, old, timeout=8):
    return wait_until(lambda: [p for p in worker_children(srv) if p not in old], timeout)


# ---------------------------------------------------------------------------------------
# the store directory


@rtest("faults.store directory missing at start: start-up refused, naming the directive",
       short_mpms=("event",))
def _(ctx):
    h = ctx.h
    s = new_store(ctx, "st-missing")
    away = h.root / "st-missing.away"
    os.rename(s["store"], away)
    try:
        srv = rel_server(ctx, "missing-at-start", store=s["store"], start=False)
        rc, out = srv.configtest()
        check(rc != 0, "apache2 -t accepted a missing store:\n" + out)
        check("KrenalisAuthKeyStore" in out and str(s["store"]) in out,
              "apache2 -t does not name KrenalisAuthKeyStore and the directory:\n" + out)
        rc, out = srv.start(expect_fail=True)
        check(rc != 0 and "KrenalisAuthKeyStore" in out, "start-up: exit %r\n%s" % (rc, out[-800:]))
    finally:
        os.rename(away, s["store"])
    start_server(srv)  # the fault is gone: it starts
    check(ask(srv, s["k"]) == 200, "after the store came back")
    srv.stop()


@rtest("faults.store directory renamed away while serving: 503, then serves again",
       short_mpms=("event",))
def _(ctx):
    h = ctx.h
    s = new_store(ctx, "st-rename")
    srv = fault_server(ctx, "rename", s["store"])
    cur = LogCursor(srv.error_log)
    poll(srv, s["k"], 200)
    away = h.root / "st-rename.away"
    os.rename(s["store"], away)
    try:
        time.sleep(1.05)  # a child looks at its data.mdb at most once a second
        got = ask_many(srv, s["k"], 16) + ask_many(srv, s["k2"], 8)
        check(all(x == 503 for x in got), "store away: answers %r" % got)
    finally:
        os.rename(away, s["store"])
    poll(srv, s["k"], 200)
    check(ask(srv, s["k2"]) == 200, "restricted key after the store came back")
    log = cur.read()
    assert_no_crash(log)
    check_logged_once(log, s["store"], nworkers(srv), "store renamed away")
    check(any("readable again" in ln for ln in log.splitlines()),
          "no 'readable again' line after the recovery")
    srv.stop()


@rtest("faults.store replaced by another store (a restored copy): the old keys are refused",
       short_mpms=("prefork",))
def _(ctx):
    h = ctx.h
    s = new_store(ctx, "st-replace")
    srv = fault_server(ctx, "replace", s["store"])
    poll(srv, s["k"], 200)
    # a copy made now, then a key made and another deleted after the copy
    copy = h.root / "st-replace.copy"
    shutil.copytree(s["store"], copy, ignore=shutil.ignore_patterns("lock.mdb"))
    kid3, k3 = h.new_api_key(s["org"], store=s["store"])
    h.cli("api-key", "delete", s["kid2"], store=copy)  # the copy lacks k2
    chown_store(copy)
    check(ask(srv, k3) == 200, "k3 before the swap")
    old = h.root / "st-replace.old"
    os.rename(s["store"], old)
    os.rename(copy, s["store"])
    time.sleep(1.05)
    for tok, want, what in ((k3, 401, "key missing from the new store"),
                            (s["k2"], 401, "key deleted in the new store"),
                            (s["k"], 200, "key present in both")):
        got = ask_many(srv, tok, 10)
        check(all(x == want for x in got), "%s: answers %r, expected %d" % (what, got, want))
    srv.stop()
    shutil.rmtree(old, ignore_errors=True)


@rtest("faults.store replaced by one made with another secret: 503, logged once, recovers",
       short_mpms=("event",))
def _(ctx):
    """`krenalis-keys init` again (a new secret in DIR/secret) under a running server: the
    children keep the secret read at start-up, which the new store refuses."""
    h = ctx.h
    s = new_store(ctx, "st-resecret")
    srv = fault_server(ctx, "resecret", s["store"])
    poll(srv, s["k"], 200)
    cur = LogCursor(srv.error_log)
    other = h.root / "st-resecret.new"
    h.init_store(store=other)
    _, k_new = h.new_api_key(h.new_org(store=other), store=other)
    chown_store(other)
    old = h.root / "st-resecret.old"
    os.rename(s["store"], old)
    os.rename(other, s["store"])
    time.sleep(1.05)
    got = ask_many(srv, s["k"], 8) + ask_many(srv, k_new, 8)
    # back: the old store, whose secret the children hold
    os.rename(s["store"], other)
    os.rename(old, s["store"])
    poll(srv, s["k"], 200, timeout=8)
    log = cur.read()
    nw = nworkers(srv)
    srv.stop()
    ctx.figure("store of another secret", answers=" ".join(str(a) for a in got))
    check(got == [503] * 16, "answers while the store had another secret: %r" % got)
    want = "KrenalisAuthKeyStoreSecret: the store secret %s/secret does not match key store %s" % (
        s["store"], s["store"])
    lines = [ln for ln in log.splitlines() if want in ln]
    check(0 < len(lines) <= nw, "%d log lines naming the mismatch for %d children:\n%s" % (
        len(lines), nw, log[-1500:]))
    assert_no_crash(log)


# ---------------------------------------------------------------------------------------
# data.mdb truncated or corrupted


def damaged_copy(ctx, s, name, mutate):
    """A copy of store s whose data.mdb went through mutate(bytes) -> bytes."""
    d = ctx.h.root / name
    shutil.copytree(s["store"], d, ignore=shutil.ignore_patterns("lock.mdb"))
    b = (d / "data.mdb").read_bytes()
    (d / "data.mdb").write_bytes(mutate(b))
    chown_store(d)
    return d


def bulk_store(ctx, name, n=20000):
    """A store with n more keys, so that data.mdb has many pages."""
    s = new_store(ctx, name)
    tokens = ctx.h.root / (name + ".tokens")
    ctx.h.cli("api-key", "bulk-create", "--organization", s["org"], "--count", n, "--tokens",
              tokens, store=s["store"])
    s["tokens"] = tokens.read_text().split()
    ctx.token_files = getattr(ctx, "token_files", []) + [tokens]
    return s


@rtest("faults.data.mdb truncated or garbage at start: start-up refused with a message",
       short_mpms=("event",))
def _(ctx):
    h = ctx.h
    s = bulk_store(ctx, "st-trunc0", 5000)
    cases = [("truncated to 8 KiB", lambda b: b[:8192]),
             ("truncated to 0 bytes", lambda b: b""),
             ("first pages zeroed", lambda b: bytes(8192) + b[8192:]),
             ("random bytes", lambda b: os.urandom(len(b)))]
    bad = []
    for i, (what, fn) in enumerate(cases):
        d = damaged_copy(ctx, s, "st-trunc0-%d" % i, fn)
        srv = h.httpd("trunc0-%d" % i, store=d)
        rc, out = srv.configtest()
        if rc == 0:
            bad.append("%s: apache2 -t accepted it" % what)
        elif rc < 0:
            bad.append("%s: apache2 -t died with signal %d (no message)" % (what, -rc))
        elif "KrenalisAuthKeyStore" not in out:
            bad.append("%s: message does not name KrenalisAuthKeyStore: %s" % (what, out.strip()))
    check(not bad, "\n  ".join(bad))


@rtest("faults.data.mdb truncated in place while serving: 503, no crash, recovers",
       short_mpms=("event",))
def _(ctx):
    """Truncated under load: requests in flight read pages that are gone (SIGBUS, caught by the
    module's guard) before the once-a-second size check closes the store."""
    s = bulk_store(ctx, "st-trunc", 20000)
    srv = fault_server(ctx, "trunc", s["store"])
    cur = LogCursor(srv.error_log)
    poll(srv, s["k"], 200)
    data = s["store"] / "data.mdb"
    orig = data.read_bytes()
    sample = s["tokens"][::200] + [s["k"], s["k2"]]
    got = {}
    stop = threading.Event()
    lock = threading.Lock()

    def hammer(i):
        n = i
        while not stop.is_set():
            st = ask(srv, sample[n % len(sample)])
            n += 7
            with lock:
                got[st] = got.get(st, 0) + 1

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.3)
        with open(data, "r+b") as fp:
            fp.truncate(len(orig) // 2)
        time.sleep(1.5)
    finally:
        with open(data, "r+b") as fp:
            fp.write(orig)
        chown_store(s["store"])
        stop.set()
        for t in threads:
            t.join()
    poll(srv, s["k"], 200, timeout=8)
    check(all(ask(srv, t) == 200 for t in sample[:20]), "keys after the file was restored")
    log = cur.read()
    nw = nworkers(srv)
    srv.stop()
    lines = store_lines(log, s["store"])
    ctx.figure("truncated in place", answers=" ".join("%s:%d" % kv for kv in sorted(
        got.items(), key=str)), caught_sigbus=sum("shrank under a read" in ln for ln in lines),
        size_check=sum("but its last commit uses" in ln for ln in lines))
    check(set(got) <= {200, 503}, "answers for valid keys while data.mdb was truncated: %r "
          "(None: the connection closed without an answer)" % got)
    check(got.get(503, 0) > 0, "no 503 while data.mdb was truncated: %r" % got)
    assert_no_crash(log, "error log while data.mdb was truncated")
    check(any("it was truncated" in ln for ln in lines),
          "nothing in the error log says data.mdb was truncated:\n%s" % log[-1500:])
    check_logged_once(log, s["store"], nw, "data.mdb truncated")


@rtest("faults.data.mdb replaced by a truncated or garbage file while serving: 503, recovers",
       short_mpms=("prefork",))
def _(ctx):
    h = ctx.h
    s = bulk_store(ctx, "st-swap", 20000)
    srv = fault_server(ctx, "swap", s["store"])
    cur = LogCursor(srv.error_log)
    data = s["store"] / "data.mdb"
    orig = data.read_bytes()
    sample = s["tokens"][::2500] + [s["k"], s["k2"]]
    results = {}
    variants = [("garbage", lambda b: os.urandom(len(b))),
                ("truncated to half", lambda b: b[:len(b) // 2])]
    if ctx.soak:
        variants += [("first pages zeroed", lambda b: bytes(8192) + b[8192:]),
                     ("truncated to 8 KiB", lambda b: b[:8192])]
    for what, fn in variants:
        poll(srv, s["k"], 200, timeout=8)
        tmp = s["store"] / "data.mdb.new"
        tmp.write_bytes(fn(orig))
        chown_store(s["store"])
        os.chown(tmp, *((33, 33) if os.geteuid() == 0 else (os.getuid(), os.getgid())))
        os.rename(tmp, data)  # as a restore tool or `cp` to a new file would
        time.sleep(1.05)
        got = {}
        for tok in sample:
            st = ask(srv, tok)
            got[st] = got.get(st, 0) + 1
        results[what] = got
        tmp.write_bytes(orig)
        os.chown(tmp, *((33, 33) if os.geteuid() == 0 else (os.getuid(), os.getgid())))
        os.rename(tmp, data)
        time.sleep(1.05)
    poll(srv, s["k"], 200, timeout=8)
    log = cur.read()
    nw = nworkers(srv)
    srv.stop()
    ctx.figure("data.mdb swapped", **{k.replace(" ", "_"): " ".join(
        "%s:%d" % kv for kv in sorted(v.items(), key=str)) for k, v in results.items()})
    bad = ["%s: %r" % (k, v) for k, v in results.items() if not set(v) <= {200, 503}]
    check(not bad, "answers for valid keys (None: closed without an answer): " + "; ".join(bad))
    assert_no_crash(log)
    check_logged_once(log, s["store"], 4 * nw, "data.mdb swapped")


@rtest("faults.corrupted record: 503 for that key only, logged, recovers", short_mpms=("event",))
def _(ctx):
    """A key record the module cannot decode (what a damaged page or a foreign writer leaves):
    LMDB reads it fine, the module must not."""
    from common import api_digest, lmdb_poke
    s = new_store(ctx, "st-record")
    srv = fault_server(ctx, "record", s["store"])
    cur = LogCursor(srv.error_log)
    poll(srv, s["k"], 200)
    key = api_digest(s["store"], s["k"])
    orig = lmdb_poke(s["store"], "keys", "get", key)
    check(orig[:1] == b"A" and orig[1:13].decode() == s["kid"], "record of %s: %r" % (
        s["kid"], orig[:13]))
    lmdb_poke(s["store"], "keys", "put", key, b"X" + orig[1:])
    try:
        got = ask_many(srv, s["k"], 8)
        other = ask_many(srv, s["k2"], 4)
    finally:
        lmdb_poke(s["store"], "keys", "put", key, orig)
    poll(srv, s["k"], 200)
    log = cur.read()
    srv.stop()
    ctx.figure("corrupted record", damaged_key=" ".join(map(str, got)),
               other_key=" ".join(map(str, other)))
    check(all(x == 503 for x in got), "the damaged key: %r, expected 503" % got)
    check(all(x == 200 for x in other), "another key: %r" % other)
    assert_no_crash(log)
    errs = [ln for ln in log.splitlines() if "krenalis_auth:" in ln and ":info]" not in ln
            and ":debug]" not in ln]
    check(errs, "8 answers were 503 and nothing at LogLevel warn or above says why: the only "
          "lines are 'refused: 503 ServiceUnavailable' at info (a read error of the store is "
          "not logged)")


@rtest("faults.corrupted pages: refused or 503, never a wrong identity, every 503 logged",
       modes=("soak",))
def _(ctx):
    h = ctx.h
    s = bulk_store(ctx, "st-corrupt", 20000)

    def scribble(b):
        b = bytearray(b)
        rng = random.Random(5)
        for pg in range(4, len(b) // 4096):
            if rng.random() < 0.3:
                off = pg * 4096 + rng.randrange(16, 4000)
                b[off:off + 64] = os.urandom(64)
        return bytes(b)

    d = damaged_copy(ctx, s, "st-corrupt-copy", scribble)
    srv = fault_server(ctx, "corrupt", d)
    cur = LogCursor(srv.error_log)
    got = {}
    wrong = []
    for tok in s["tokens"][::200] + [s["k"], s["k2"], harness.random_api_token()]:
        st, r = one(srv.port_rel, "GET", "/fast/items", bearer(tok))
        got[st] = got.get(st, 0) + 1
        if st == 200:
            rid = r.get("X-Rel-Id") or ""
            if "org=%s" % s["org"] not in rid:
                wrong.append(rid)
    log = cur.read()
    srv.stop()
    ctx.figure("corrupted pages", answers=" ".join("%s:%d" % kv for kv in sorted(
        got.items(), key=str)))
    check(None not in got, "connections closed without an answer: %r" % got)
    check(not [k for k in got if k not in (200, 401, 503)], "answers %r" % got)
    check(not wrong, "accepted with a wrong identity: %r" % wrong[:3])
    assert_no_crash(log)
    if got.get(503):
        errs = [ln for ln in log.splitlines() if "krenalis_auth:" in ln and ":info]" not in ln]
        check(errs, "%d answers were 503, but nothing at LogLevel warn or above says why (only "
              "'refused: 503 ServiceUnavailable' at info)" % got[503])


# ---------------------------------------------------------------------------------------
# permissions


@rtest("faults.permissions removed (data.mdb, lock.mdb, the directory): 503, recovers")
def _(ctx):
    if os.geteuid() != 0:
        raise Skip("needs root (the children run as www-data)")
    h = ctx.h
    s = new_store(ctx, "st-perm")
    srv = fault_server(ctx, "perm", s["store"])
    cur = LogCursor(srv.error_log)
    results = {}
    variants = [("data.mdb 000", s["store"] / "data.mdb", 0), ("directory 000", s["store"], 0),
                ("lock.mdb 000", s["store"] / "lock.mdb", 0),
                ("directory 0700 (root only)", s["store"], 0o700)]
    if not ctx.soak:  # short: one of them per MPM
        variants = variants[:1] if ctx.mpm == "event" else variants[1:2]
    for what, path, mode in variants:
        poll(srv, s["k"], 200, timeout=8)
        st0 = path.stat()
        os.chmod(path, mode)
        try:
            # running children keep the environment they opened (and may keep serving from it);
            # new children cannot open it
            time.sleep(1.05)
            running = ask_many(srv, s["k"], 8)
            old = kill_workers(srv)
            wait_new_workers(srv, old)
            time.sleep(0.3)
            fresh = ask_many(srv, s["k"], 8)
        finally:
            os.chmod(path, stat.S_IMODE(st0.st_mode))
        results[what] = (running, fresh)
        bad = [x for x in running + fresh if x not in (200, 503)]
        check(not bad, "%s: answers %r / %r" % (what, running, fresh))
        check(all(x == 503 for x in fresh), "%s: new children answered %r, expected 503" % (
            what, fresh))
        poll(srv, s["k"], 200, timeout=8)
    log = cur.read()
    srv.stop()
    ctx.figure("permissions", **{k.replace(" ", "_"): "running %s / new %s" % (
        "".join("ok " if x == 200 else "%s " % x for x in v[0]).strip(),
        "".join("ok " if x == 200 else "%s " % x for x in v[1]).strip())
        for k, v in results.items()})
    assert_no_crash(log)
    check(store_lines(log, s["store"]), "nothing in the error log names the store")


# ---------------------------------------------------------------------------------------
# the secret


@rtest("faults.secret missing at restart: graceful and start refused, running server unharmed",
       short_mpms=("event",))
def _(ctx):
    h = ctx.h
    s = new_store(ctx, "st-secret")
    srv = fault_server(ctx, "secret", s["store"])
    poll(srv, s["k"], 200)
    sec = s["store"] / "secret"
    os.rename(sec, s["store"] / "secret.bak")
    try:
        rc, out = graceful(srv)
        check(rc != 0, "apache2 -k graceful accepted a missing secret: %s" % out)
        check(str(sec) in out and "KrenalisAuthKeyStore" in out,
              "graceful refusal does not name the secret: %s" % out)
        time.sleep(1)
        check(srv.proc.poll() is None, "the running server stopped")
        got = ask_many(srv, s["k"], 8)
        check(all(x == 200 for x in got), "running server after a refused restart: %r" % got)
        check(ask(srv, harness.random_api_token()) == 401, "unknown key")
        # a full restart cannot start without it
        srv.stop()
        rc, out = srv.start(expect_fail=True)
        check(rc != 0 and str(sec) in out, "start without the secret: exit %r %s" % (rc, out[-500:]))
    finally:
        os.rename(s["store"] / "secret.bak", sec)
    start_server(srv)
    poll(srv, s["k"], 200)
    rc, out = graceful(srv)
    check(rc == 0, "graceful with the secret back: %s" % out)
    time.sleep(1)
    poll(srv, s["k"], 200)
    srv.stop()


@rtest("faults.secret changed at restart: refused, named, the running server unharmed",
       short_mpms=("prefork",))
def _(ctx):
    h = ctx.h
    s = new_store(ctx, "st-secret2")
    srv = fault_server(ctx, "secret2", s["store"])
    poll(srv, s["k"], 200)
    cur = LogCursor(srv.error_log)
    sec = s["store"] / "secret"
    orig = sec.read_bytes()
    sec.write_bytes(os.urandom(32))
    try:
        rc, out = graceful(srv)
        time.sleep(1.5)
        answers = []
        if srv.proc.poll() is None:
            answers = ask_many(srv, s["k"], 8) + ask_many(srv, s["k2"], 4)
            st, r = one(srv.port_rel, "POST", "/v1/events", bearer(s["wk"]), b"{}")
            answers.append(st)
        log = cur.read()
        # A server started with the wrong secret: refused, with the same message.
        rc2, out2 = srv.configtest()
    finally:
        sec.write_bytes(orig)
    want = "the store secret %s does not match key store %s" % (sec, s["store"])
    ctx.figure("secret changed", graceful_exit=rc, config_test_exit=rc2,
               answers=" ".join(str(a) for a in answers))
    # The store keeps a check value of its secret: a secret that is not the store's would make
    # every key "does not exist", so the restart is refused and says why ...
    check(rc != 0 and want in out, "graceful with another secret: exit %d, %s" % (rc, out[-400:]))
    check(rc2 != 0 and want in out2 and "KrenalisAuthKeyStore" in out2,
          "apache2 -t with another secret: exit %d, %s" % (rc2, out2[-400:]))
    # ... and the running server keeps its configuration, the right secret included.
    check(answers == [200] * 13, "the running server after the refused graceful: %r" % answers)
    assert_no_crash(log, "error log after the refused graceful")
    srv.stop()


# ---------------------------------------------------------------------------------------
# the map grown by an import while serving (MDB_MAP_RESIZED)


def small_map_store(ctx, name, prefill=25600):
    """A store whose recorded map size is barely more than its data: the readers map only that
    much, so the next write that grows the data past it makes them see MDB_MAP_RESIZED. It
    holds prefill bulk-created keys, so that a bulk-create of fewer than 1/64 of them adds its
    keys in place (a larger one rebuilds the store: a new file, which children reopen)."""
    h = ctx.h
    s = new_store(ctx, name + "-src")
    if prefill:
        keys_cmd(h, "api-key", "bulk-create", "--organization", s["org"], "--count", prefill,
                 "--tokens", h.root / (name + ".prefill"), store=s["store"])
        ctx.token_files = getattr(ctx, "token_files", []) + [h.root / (name + ".prefill")]
    dump = subprocess.run(["mdb_dump", "-a", str(s["store"])], stdout=subprocess.PIPE,
                          check=True, timeout=60).stdout
    # loaded once with room to spare to learn its size, then with a map 1/4 above that
    probe = h.root / (name + "-probe")
    probe.mkdir()
    subprocess.run(["mdb_load", "-f", "/dev/stdin", str(probe)], check=True, timeout=60,
                   input=re.sub(rb"mapsize=\d+", b"mapsize=%d" % (256 << 20), dump),
                   stderr=subprocess.DEVNULL)  # 0.9.24 warns about db_pagesize lines
    mapsize = ((probe / "data.mdb").stat().st_size * 5 // 4 // 4096 + 1) * 4096
    shutil.rmtree(probe)
    dump = re.sub(rb"mapsize=\d+", b"mapsize=%d" % mapsize, dump)
    d = h.root / name
    d.mkdir()
    subprocess.run(["mdb_load", "-f", "/dev/stdin", str(d)], input=dump, check=True, timeout=60,
                   stderr=subprocess.DEVNULL)
    shutil.copy(s["store"] / "secret", d / "secret")
    os.chmod(d / "secret", 0o600)
    chown_store(d)
    s["store"] = d
    return s


class LightLoad:
    """A few threads of valid requests while something happens; counts the answers."""

    def __init__(self, srv, tokens, threads=3):
        self.srv = srv
        self.tokens = tokens
        self.stop = threading.Event()
        self.counts = {}
        self.lock = threading.Lock()
        self.ts = [threading.Thread(target=self.run, daemon=True) for _ in range(threads)]
        for t in self.ts:
            t.start()

    def run(self):
        from common import Client, Closed, req_bytes
        cl = Client(self.srv.port_rel)
        rng = random.Random()
        while not self.stop.is_set():
            tok = rng.choice(self.tokens)
            try:
                st = cl.request(req_bytes(self.srv.port_rel, "GET", "/fast/items",
                                          bearer(tok)))[0]
            except (Closed, OSError):
                st = None
                cl.close()
            with self.lock:
                self.counts[st] = self.counts.get(st, 0) + 1
        cl.close()

    def finish(self):
        self.stop.set()
        for t in self.ts:
            t.join(30)
        return self.counts


def map_growth(ctx, s, srv, count, label):
    h = ctx.h
    cur = LogCursor(srv.error_log)
    poll(srv, s["k"], 200)
    before = {p: data_mappings(p) for p in worker_children(srv)}
    info0 = subprocess.run(["mdb_stat", "-e", str(s["store"])], stdout=subprocess.PIPE,
                           universal_newlines=True).stdout
    load = LightLoad(srv, [s["k"], s["k2"]])
    tokens = h.root / ("%s.tokens" % label)
    t0 = time.time()
    try:
        keys_cmd(h, "api-key", "bulk-create", "--organization", s["org"], "--count", count,
                 "--tokens", tokens, store=s["store"])
    except Failure:
        load.finish()
        raise
    took = time.time() - t0
    ctx.token_files = getattr(ctx, "token_files", []) + [tokens]
    time.sleep(1.2)  # a rebuilt store (a large import) is reopened within a second
    counts = load.finish()
    toks = tokens.read_text().split()
    sample = toks[:3] + toks[-3:] + random.sample(toks, min(200, len(toks)))
    newok = sum(1 for t in sample if ask(srv, t) == 200)
    oldok = all(x == 200 for x in ask_many(srv, s["k"], 12))
    after = {p: data_mappings(p) for p in worker_children(srv)}
    info1 = subprocess.run(["mdb_stat", "-e", str(s["store"])], stdout=subprocess.PIPE,
                           universal_newlines=True).stdout
    m0 = int(re.search(r"Map size: (\d+)", info0).group(1))
    m1 = int(re.search(r"Map size: (\d+)", info1).group(1))
    grown = [p for p, v in after.items() if v and max(v) > m0]
    log = cur.read()
    ctx.figure("map grown (%s)" % label, keys=count, import_s=round(took, 1), map_before=m0,
               map_after=m1, file_bytes=(s["store"] / "data.mdb").stat().st_size,
               children_remapped="%d of %d" % (len(grown), len(after)),
               load=" ".join("%s:%d" % kv for kv in sorted(counts.items(), key=str)),
               new_keys_ok="%d/%d" % (newok, len(sample)))
    check(m1 > m0, "the map did not grow (%d -> %d)" % (m0, m1))
    check(set(counts) <= {200}, "answers during the import: %r" % counts)
    check(oldok, "old key after the import")
    check(newok == len(sample), "new keys after the import: %d of %d" % (newok, len(sample)))
    check(grown, "no child maps the grown map (mappings before %r, after %r)" % (before, after))
    assert_no_crash(log)


@rtest("faults.map grown while serving (small recorded map, MDB_MAP_RESIZED)")
def _(ctx):
    s = small_map_store(ctx, "st-smallmap")
    srv = fault_server(ctx, "smallmap", s["store"])
    map_growth(ctx, s, srv, 399, "map a quarter above the data")  # in place: < 25602 / 64
    srv.stop()


@rtest("faults.map grown past 1 GiB by a large import while serving", modes=("soak",))
def _(ctx):
    s = new_store(ctx, "st-bigmap")
    srv = fault_server(ctx, "bigmap", s["store"])
    try:
        map_growth(ctx, s, srv, 1500000, "1 GiB map")
    finally:
        srv.stop()
        shutil.rmtree(s["store"], ignore_errors=True)


# ---------------------------------------------------------------------------------------
# the reader table


@rtest("faults.reader table: many children and threads, each with its reader slot")
def _(ctx):
    s = new_store(ctx, "st-many")
    n = 200 if ctx.soak else 64
    if ctx.mpm == "prefork":
        mpm = ("StartServers %d\nMinSpareServers %d\nMaxSpareServers %d\nServerLimit %d\n"
               "MaxRequestWorkers %d" % (n, n, n, n + 8, n + 8))
    else:
        mpm = ("StartServers 8\nServerLimit 8\nThreadsPerChild 64\nMinSpareThreads 64\n"
               "MaxSpareThreads 512\nMaxRequestWorkers 512")
        n = 400 if ctx.soak else 128
    srv = fault_server(ctx, "many", s["store"], mpm=mpm)
    cur = LogCursor(srv.error_log)
    wait_until(lambda: len(worker_children(srv)) >= (n if ctx.mpm == "prefork" else 8), 20, 0.3)
    # n requests at once, each held by a backend that answers after 1.5 s: every one takes a
    # worker (a prefork child, an event thread)
    res = [None] * n

    def go(i):
        st, r = one(srv.port_rel, "GET", "/slow/items?sleep=1.5", bearer(s["k"]), timeout=60)
        res[i] = st

    ts = [threading.Thread(target=go, args=(i,)) for i in range(n)]
    t0 = time.time()
    for t in ts:
        t.start()
    for t in ts:
        t.join(90)
    took = time.time() - t0
    rc, pids, out = mdb_readers(s["store"])
    nchild = len(worker_children(srv))
    log = cur.read()
    srv.stop()
    ok = sum(1 for x in res if x == 200)
    ctx.figure("many readers", concurrent=n, ok=ok, seconds=round(took, 1), children=nchild,
               reader_slots=len(pids), reader_pids=len(set(pids)))
    check(ok == n, "%d of %d concurrent requests answered 200: %r" % (
        ok, n, sorted(set(map(str, res)))))
    check(rc == 0, "mdb_stat -r: %s" % out)
    assert_no_crash(log)


def fill_table_server(ctx, name):
    s = new_store(ctx, name)
    srv = fault_server(ctx, name, s["store"])
    poll(srv, s["k"], 200, rounds=12)
    return s, srv


@rtest("faults.reader table full (live readers): 503 for new children, no crash, recovers",
       short_mpms=("event",))
def _(ctx):
    s, srv = fill_table_server(ctx, "full-live")
    cur = LogCursor(srv.error_log)
    holder = Holder(s["store"])
    try:
        running = ask_many(srv, s["k"], 8)
        old = kill_workers(srv)
        wait_new_workers(srv, old)
        time.sleep(1.5)
        fresh = ask_many(srv, s["k"], 8, timeout=2)
    finally:
        holder.release()
    ctx.figure("reader table full", held_by_other_process=holder.held,
               running_children=" ".join(map(str, running)), new_children=" ".join(
                   map(str, fresh)))
    try:
        check(all(x in (200, 503) for x in running + fresh),
              "answers with the table full: running %r, new children %r (None: closed or timed "
              "out without an answer)" % (running, fresh))
        poll(srv, s["k"], 200, timeout=8)
        log = cur.read()
        assert_no_crash(log)
        if 503 in fresh:
            check_logged_once(log, s["store"], 2 * nworkers(srv), "reader table full")
    finally:
        srv.stop()


@rtest("faults.reader table full of dead readers: the module clears them and serves",
       short_mpms=("prefork",))
def _(ctx):
    s, srv = fill_table_server(ctx, "full-dead")
    cur = LogCursor(srv.error_log)
    keeper = Holder(s["store"], leave=-1)  # another process keeps the store open
    try:
        holder = Holder(s["store"])
        holder.kill()  # its slots now belong to a dead PID
        old = kill_workers(srv)
        wait_new_workers(srv, old)
        try:
            poll(srv, s["k"], 200, timeout=5, req_timeout=2)
        except Failure as e:
            log = cur.read()
            raise Failure("%s; the table stays full of the dead process's %d slots%s" % (
                e, holder.held, ("; " + "; ".join(crash_lines(log)[:3])) if crash_lines(log)
                else ""))
        rc, pids, _ = mdb_readers(s["store"])
        dead = [p for p in set(pids) if not pid_alive(p)]
        check(not dead, "dead readers still in the table: %r" % dead[:5])
        assert_no_crash(cur.read())
    finally:
        keeper.release()
        srv.stop()


@rtest("faults.children killed (SIGKILL) mid-request: next requests work, stale slots cleared")
def _(ctx):
    s = new_store(ctx, "st-kill")
    srv = fault_server(ctx, "kill", s["store"])
    cur = LogCursor(srv.error_log)
    rounds = 20 if ctx.soak else 2
    killed_total = 0
    cut = ok_after = 0
    for rnd in range(rounds):
        poll(srv, s["k"], 200, rounds=8)
        # requests that keep children busy (a CGI that sleeps), then SIGKILL their children
        res = []

        def slow():
            res.append(one(srv.port_rel, "GET", "/slow/items?sleep=1.5", bearer(s["k"]),
                           timeout=20)[0])

        ts = [threading.Thread(target=slow) for _ in range(6)]
        for t in ts:
            t.start()
        time.sleep(0.6)
        victims = worker_children(srv)
        if ctx.mpm == "event" or rnd % 2 == 0:
            victims = victims[: max(1, len(victims) // 2)]
        for p in victims:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        killed_total += len(victims)
        for t in ts:
            t.join(30)
        cut += sum(1 for x in res if x is None)
        got = ask_many(srv, s["k"], 8)
        ok_after += sum(1 for x in got if x == 200)
        check(all(x == 200 for x in got), "round %d: answers after the kill %r" % (rnd, got))
        # the next child that opens the store runs mdb_reader_check: the dead PIDs go
        wait_new_workers(srv, victims)
        gone = wait_until(lambda: not [p for p in mdb_readers(s["store"])[1] if p in victims],
                          8, 0.3)
        rc, pids, _ = mdb_readers(s["store"])
        check(gone, "round %d: dead children still in the reader table: %r" % (
            rnd, sorted(set(p for p in pids if p in victims))))
    log = cur.read()
    srv.stop()
    ctx.figure("children killed", rounds=rounds, killed=killed_total,
               in_flight_cut=cut, ok_after=ok_after)
    # the parent reports each killed child; nothing else may have died
    others = [ln for ln in crash_lines(log) if "exit signal Killed" not in ln]
    check(not others, "error log: %s" % "\n    ".join(others[:5]))


# ---------------------------------------------------------------------------------------
# krenalis-keys killed mid-import



def auth_all(srv, tokens, threads=6):
    """How many of tokens do not authenticate (keep-alive clients in parallel)."""
    from common import Client, Closed, req_bytes
    bad = [0]
    lock = threading.Lock()

    def run(part):
        cl = Client(srv.port_rel)
        n = 0
        for t in part:
            try:
                if cl.request(req_bytes(srv.port_rel, "GET", "/fast/items", bearer(t)))[0] != 200:
                    n += 1
            except (Closed, OSError):
                cl.close()
                n += 1
        cl.close()
        with lock:
            bad[0] += n

    ts = [threading.Thread(target=run, args=(tokens[i::threads],)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(600)
    return bad[0]


def kill_import(ctx, s, count, kill_after, label, srv):
    h = ctx.h
    tokens = h.root / ("%s.tokens" % label)
    ctx.token_files = getattr(ctx, "token_files", []) + [tokens]
    base = len(keys_cmd(h, "api-key", "list", "--organization", s["org"], store=s["store"])["keys"])
    p = subprocess.Popen([str(h.keys_bin), "--store", str(s["store"]), "api-key", "bulk-create",
                          "--organization", s["org"], "--count", str(count), "--tokens",
                          str(tokens)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         start_new_session=True)
    try:
        # bulk-create adds all its keys in one step (a transaction, or a rebuilt store swapped
        # in), then writes the tokens: killed before that step, it added none
        time.sleep(kill_after)
    finally:
        if p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
        p.wait(30)
    killed = p.returncode == -signal.SIGKILL
    # the store opens and reads
    st = subprocess.run(["mdb_stat", "-a", str(s["store"])], stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT, universal_newlines=True, timeout=120)
    check(st.returncode == 0, "mdb_stat after the kill: %s" % st.stdout[-500:])
    lst = keys_cmd(h, "api-key", "list", "--organization", s["org"], store=s["store"])["keys"]
    listed = len(lst) - base
    with open(tokens, "rb") as f:
        raw = f.read()
    lines = raw.split(b"\n")
    complete = [ln.decode() for ln in lines[:-1]]
    hints = {k["hint"] for k in lst}
    missing = [t for t in complete if (t[4:8] + "..." + t[-6:]) not in hints]
    check(listed in (0, count), "%s: %d keys listed, neither none nor all %d" % (
        label, listed, count))
    check(len(complete) <= listed, "%s: %d tokens in the file, %d keys listed" % (
        label, len(complete), listed))
    check(not missing, "%s: %d tokens of the file are not in the store" % (label, len(missing)))
    check(all(len(t) == 53 and t.startswith("api_") for t in complete),
          "%s: a line of the token file is not a token" % label)
    # every listed key's token that we have authenticates (all of them in soak)
    n = 20000 if ctx.soak else 300
    sample = (random.sample(complete, min(n, len(complete))) + complete[:2] + complete[-2:]
              if complete else [])
    bad = auth_all(srv, sample)
    check(bad == 0, "%s: %d of %d tokens from the file did not authenticate" % (label, bad,
                                                                               len(sample)))
    # the writer lock is free again: the next command works at once
    t0 = time.time()
    h.new_api_key(s["org"], store=s["store"])
    wtime = time.time() - t0
    check(wtime < 10, "%s: the next write took %.1f s" % (label, wtime))
    return {"killed": killed, "listed": listed, "file_tokens": len(complete),
            "partial_line": bool(lines[-1]), "authenticated": "%d/%d" % (len(sample) - bad,
                                                                         len(sample))}


@rtest("faults.krenalis-keys SIGKILLed mid bulk-create: all or nothing, every token works",
       short_mpms=("prefork",))
def _(ctx):
    s = new_store(ctx, "st-bulkkill")
    srv = fault_server(ctx, "bulkkill", s["store"])
    cur = LogCursor(srv.error_log)
    load = LightLoad(srv, [s["k"], s["k2"]], threads=2)
    try:
        r0 = kill_import(ctx, s, 200000, 0.1, "kill early", srv)
        count = 1000000 if ctx.soak else 500000
        r1 = kill_import(ctx, s, count, random.uniform(0.5, 1.5), "kill later", srv)
        r2 = (kill_import(ctx, s, count, random.uniform(1.5, 3), "kill later still", srv)
              if ctx.soak else None)
    finally:
        counts = load.finish()
    log = cur.read()
    srv.stop()
    ctx.figure("bulk-create killed", first=r0, second=r1, **({"third": r2} if r2 else {}),
               load=" ".join("%s:%d" % kv for kv in sorted(counts.items(), key=str)))
    check(all(r["killed"] for r in (r0, r1, r2) if r), "an import ended before it was killed")
    check(set(counts) <= {200}, "answers while importing: %r" % counts)
    assert_no_crash(log)


@rtest("faults.krenalis-keys SIGKILLed mid organization remove: all or nothing",
       modes=("soak",))
def _(ctx):
    h = ctx.h
    s = new_store(ctx, "st-orgkill")
    tokens = h.root / "orgkill.tokens"
    ctx.token_files = getattr(ctx, "token_files", []) + [tokens]
    keys_cmd(h, "api-key", "bulk-create", "--organization", s["org"], "--count", 300000,
             "--tokens", tokens, store=s["store"])
    p = subprocess.Popen([str(h.keys_bin), "--store", str(s["store"]), "organization", "remove",
                          s["org"]], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    time.sleep(0.4)
    if p.poll() is None:
        os.kill(p.pid, signal.SIGKILL)
    p.wait(30)
    orgs = [o["id"] for o in h.cli("organization", "list", store=s["store"])["organizations"]]
    try:
        n = len(keys_cmd(h, "api-key", "list", "--organization", s["org"],
                         store=s["store"])["keys"])
        rc = 0
    except Failure:
        rc, n = 1, 0
    ctx.figure("organization remove killed", killed=p.returncode == -signal.SIGKILL,
               org_left=s["org"] in orgs, keys_left=n)
    if s["org"] in orgs:
        check(n == 300002, "organization still there with %d of 300002 keys" % n)
    else:
        check(rc != 0 and n == 0, "organization gone but its keys are listed (%d)" % n)
        d = subprocess.run(["mdb_stat", "-s", "keys", str(s["store"])], stdout=subprocess.PIPE,
                           universal_newlines=True).stdout
        m = re.search(r"Entries: (\d+)", d)
        check(m and int(m.group(1)) == 0, "keys left in the store: %s" % (m and m.group(1)))
