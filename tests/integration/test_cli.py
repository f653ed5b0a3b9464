"""krenalis-keys (SPEC §4) on a store of its own: the check command's words and body step, the
listings, the create commands' output, name checks, usage errors."""
import base64
import json
import os
import subprocess
import tempfile
import threading
import time

from harness import (Failure, Skip, assert_identity, backend, check, eq, extra_env,
                     free_port, identity, terminate, test)

S = {}  # the store and its entities, made by fixture()


def fixture(h):
    S["store"] = h.root / "cli-store"
    h.init_store(store=S["store"], owner=False)
    S["org"] = h.new_org(store=S["store"])
    S["ws"] = h.new_ws(S["org"], store=S["store"])
    conn = h.cli("connection", "add", "--workspace", S["ws"], store=S["store"])
    S["conn"], S["wk"] = conn["id"], conn["key"]
    key = h.cli("api-key", "create", "--organization", S["org"], store=S["store"])
    S["key_id"], S["token"] = key["id"], key["token"]


def keys(h, *args, json_out=True):
    """(exit status, stdout, stderr) of krenalis-keys on the test's store."""
    return h.cli(*args, store=S["store"], ok=False, json_out=json_out)


def check_json(h, *args):
    rc, out, err = keys(h, "check", *args)
    try:
        return rc, json.loads(out)
    except ValueError:
        raise Failure("check %s: not JSON: %r %r" % (args, out, err))


@test("cli.check --endpoint and --workspace-policy take the directives' words, any case")
def _(h):
    for word in ("api", "API", "Api"):
        rc, doc = check_json(h, S["token"], "--endpoint", word)
        eq(rc, 0, "check --endpoint %s exit" % word)
        eq(doc["status"], 200, "check --endpoint %s status" % word)
        eq(doc["identity"]["keyId"], S["key_id"], "check --endpoint %s key" % word)
    rc, doc = check_json(h, S["token"], "--workspace-policy", "REQUIRED")
    eq((rc, doc["status"], doc["error"]["code"]), (1, 403, "Forbidden"),
       "check --workspace-policy REQUIRED without a workspace")
    rc, doc = check_json(h, S["token"], "--endpoint", "Organizations")
    eq((rc, doc["status"]), (1, 400), "an API key on --endpoint Organizations")
    for opt, word in (("--endpoint", "apis"), ("--workspace-policy", "sometimes")):
        rc, out, err = keys(h, "check", S["token"], opt, word)
        eq(rc, 1, "check %s %s exit" % (opt, word))
        check(("invalid %s '%s': expected one of" % (opt, word)) in err,
              "check %s %s: message %r" % (opt, word, err))


@test("cli.check reads the body only when the decision needs it, as the module does")
def _(h):
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        f.write(json.dumps({"connectionId": S["conn"], "batch": []}))
        body = f.name
    try:
        rc, doc = check_json(h, S["token"], "--method", "POST", "--path", "/v1/events",
                             "--body", body)
    finally:
        os.unlink(body)
    eq((rc, doc["status"]), (0, 200), "API key, connectionId in the body")
    eq(doc["identity"], {"type": "api", "organization": S["org"], "workspace": S["ws"],
                         "connection": S["conn"], "keyId": S["key_id"]},
       "identity of the API key and the body's connection")
    # Without --body the body is "{}": no connectionId there.
    rc, doc = check_json(h, S["token"], "--method", "POST", "--path", "/v1/events")
    eq((rc, doc["status"], doc["error"]["message"]),
       (1, 400, "parameter 'connectionId' is required when using API key authentication"),
       "no body")
    # A write key in the header: the body is never needed.
    rc, doc = check_json(h, S["wk"], "--method", "POST", "--path", "/v1/events/track")
    eq((rc, doc["status"], doc["identity"]["connection"]), (0, 200, S["conn"]), "header key")


@test("cli.listings: each command's member, its filter checked first")
def _(h):
    cases = [
        (("organization", "list"), "organizations", S["org"]),
        (("workspace", "list", "--organization", S["org"]), "workspaces", S["ws"]),
        (("connection", "list", "--workspace", S["ws"]), "connections", S["conn"]),
        (("api-key", "list", "--organization", S["org"]), "keys", S["key_id"]),
        (("write-key", "list", "--connection", S["conn"]), "keys", None),
    ]
    for args, member, want in cases:
        rc, out, err = keys(h, *args)
        eq(rc, 0, "%s exit (%s)" % (" ".join(args), err))
        doc = json.loads(out)
        eq(list(doc), [member], "%s members" % " ".join(args))
        if want:
            check(want in [x["id"] for x in doc[member]], "%s lists %s" % (" ".join(args), want))
        else:
            eq(len(doc[member]), 1, "%s: the connection's one write key" % " ".join(args))
    gone = "1111111111ab"
    for args, what in ((("workspace", "list", "--organization", gone), "organization"),
                       (("connection", "list", "--workspace", gone), "workspace"),
                       (("api-key", "list", "--organization", gone), "organization"),
                       (("write-key", "list", "--connection", gone), "connection")):
        rc, out, err = keys(h, *args)
        eq((rc, out), (1, ""), "%s exit and output" % " ".join(args))
        eq(err.strip(), "krenalis-keys: %s %s does not exist" % (what, gone),
           "%s message" % " ".join(args))
    rc, out, err = keys(h, "workspace", "list", "--organization", "not-an-id")
    eq(rc, 1, "a malformed filter")
    check("invalid organization ID 'not-an-id'" in err, "malformed filter message %r" % err)


@test("cli.create commands print the new credential once: JSON or one line")
def _(h):
    doc = h.cli("api-key", "create", "--organization", S["org"], store=S["store"])
    eq(sorted(doc), ["id", "token"], "api-key create members")
    check(doc["token"].startswith("api_") and len(doc["token"]) == 53, "token form")
    rc, out, err = keys(h, "api-key", "create", "--organization", S["org"], json_out=False)
    eq(rc, 0, "api-key create (text) exit")
    kid, tok = out.split()
    h.secret(tok)
    eq((len(kid), tok[:4], out.count("\n")), (12, "api_", 1), "api-key create line")
    doc = h.cli("write-key", "create", "--connection", S["conn"], store=S["store"])
    eq(sorted(doc), ["id", "key"], "write-key create members")
    rc, out, err = keys(h, "connection", "add", "--workspace", S["ws"], json_out=False)
    cid, wk = out.split()
    h.secret(wk)
    eq((rc, len(cid), len(wk)), (0, 12, 32), "connection add line")


@test("cli.names: UTF-8 as the module's one decoder reads it, no control characters")
def _(h):
    rc, out, err = keys(h, "organization", "add", "--name", "Zürich 東京 🚀")
    eq(rc, 0, "a multibyte name (%s)" % err)
    oid = json.loads(out)["id"]
    names = {o["id"]: o["name"] for o in json.loads(keys(h, "organization", "list")[1])
             ["organizations"]}
    eq(names[oid], "Zürich 東京 🚀", "the name as listed")
    bad = {
        "a surrogate (ED A0 80)": b"x\xed\xa0\x80",
        "an overlong slash (C0 AF)": b"\xc0\xaf",
        "a lone continuation byte": b"a\x80b",
        "a truncated sequence": b"ab\xe2\x82",
        "past U+10FFFF (F4 90 80 80)": b"\xf4\x90\x80\x80",
    }
    for what, raw in bad.items():
        rc, out, err = keys(h, "organization", "add", "--name", os.fsdecode(raw))
        eq((rc, err.strip()), (1, "krenalis-keys: name is not valid UTF-8"), what)
    rc, out, err = keys(h, "organization", "add", "--name", "tab\there")
    eq((rc, err.strip()), (1, "krenalis-keys: name contains a control character"), "a tab")


@test("cli.usage errors exit 2 with the synopsis; refusals exit 1")
def _(h):
    rc, out, err = keys(h, "frobnicate")
    eq(rc, 2, "unknown command")
    check("unknown command 'frobnicate'" in err, "unknown command message %r" % err)
    rc, out, err = keys(h, "write-key", "list")
    eq(rc, 2, "missing --connection")
    check("write-key list needs --connection" in err and
          "usage: krenalis-keys [--store DIR] [--json] write-key list --connection CONN" in err,
          "missing option message %r" % err)
    rc, out, err = keys(h, "organization", "list", "--count", "3")
    eq(rc, 2, "an option the command does not take")
    check("option --count does not apply to organization list" in err, "message %r" % err)
    conn = h.cli("connection", "add", "--workspace", S["ws"], store=S["store"])
    only = h.cli("write-key", "list", "--connection", conn["id"], store=S["store"])["keys"]
    rc, out, err = keys(h, "write-key", "delete", "--connection", conn["id"], only[0]["id"])
    eq(rc, 1, "deleting a connection's last write key")
    check("is the last event write key of connection %s" % conn["id"] in err, "message %r" % err)


def served_keys_work(h, what, keys):
    """Each (token, key ID, organization, workspace) of keys authenticates through Apache."""
    for tok, kid, org, ws in keys:
        r = h.req("cgi", "GET", "/v1/items", [("Authorization", "Bearer " + tok)])
        try:
            assert_identity(backend(r, "cgi"), identity("api", kid, org, ws))
        except Failure as e:
            raise Failure("%s: key %s: %s" % (what, kid, e))


@test("cli.bulk-create of many keys against few rebuilds the store Apache serves; compact too; "
      "keys made before and after authenticate")
def _(h):
    f = h.f
    data = h.store / "data.mdb"
    org = h.new_org()
    ws = h.new_ws(org)
    before_id, before = h.new_api_key(org)
    old = os.stat(data)
    tokens = h.root / "bulk-rebuild.tokens"
    doc = h.cli("api-key", "bulk-create", "--organization", org, "--workspace", ws, "--name",
                "bulk", "--count", 400, "--tokens", tokens)
    eq(doc, {"created": 400, "tokens": str(tokens)}, "bulk-create output")
    new = tokens.read_text().split("\n")
    eq((len(new), new[-1]), (401, ""), "one token a line")
    new = [h.secret(t) for t in new[:-1]]
    st = os.stat(data)
    check(st.st_ino != old.st_ino, "400 keys against a few were not a rebuild (same data.mdb)")
    eq((st.st_uid, st.st_gid, st.st_mode), (old.st_uid, old.st_gid, old.st_mode),
       "the rebuilt data.mdb's owner and mode")
    check(not os.path.exists(str(h.store) + ".rebuild-new"), "the old store was left behind")
    time.sleep(1.2)  # a child checks its data.mdb once a second
    listed = {k["hint"]: k for k in h.cli("api-key", "list", "--organization", org)["keys"]}
    eq(len(listed), 401, "keys listed")
    sample = [(t, listed[t[4:8] + "..." + t[-6:]]["id"], org, ws) for t in new[:5] + new[-5:]]
    check(all(listed[t[4:8] + "..." + t[-6:]]["name"] == "bulk" for t in new), "names")
    old_keys = [(f["k1"], f["k1_id"], f["org1"], None), (f["k1r"], f["k1r_id"], f["org1"],
                                                         f["ws1a"]), (before, before_id, org, None)]
    served_keys_work(h, "after the rebuild", old_keys + sample)
    # a few more: in place, the same file
    small = h.root / "bulk-small.tokens"
    h.cli("api-key", "bulk-create", "--organization", org, "--count", 1, "--tokens", small)
    one = h.secret(small.read_text().strip())
    eq(os.stat(data).st_ino, st.st_ino, "1 key against 400: in place")
    kid = [k["id"] for k in h.cli("api-key", "list", "--organization", org)["keys"]
           if k["hint"] == one[4:8] + "..." + one[-6:]]
    served_keys_work(h, "in place", [(one, kid[0], org, None)])
    doc = h.cli("compact")
    eq(sorted(doc), ["bytesAfter", "bytesBefore", "store"], "compact output")
    check(os.stat(data).st_ino != st.st_ino, "compact did not rewrite data.mdb")
    time.sleep(1.2)
    served_keys_work(h, "after compact", old_keys + sample + [(one, kid[0], org, None)])
    eq(len(h.cli("api-key", "list", "--organization", org)["keys"]), 402, "keys after compact")
    rc, out, err = h.cli("compact", "extra", ok=False)
    eq(rc, 2, "compact takes no argument")


@test("cli.writers while compacts run: every write that exited 0 is in the store")
def _(h):
    store = h.root / "cli-race"
    h.init_store(store=store, owner=False)
    env = dict({"PATH": "/usr/bin:/bin", "LANG": "C"}, **extra_env("cli"))
    made, errors = [], []

    def run(*args):
        p = subprocess.run([str(h.keys_bin), "--store", str(store)] + list(args),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, timeout=60)
        if p.returncode != 0:
            errors.append("%s: exit %d: %s" % (" ".join(args), p.returncode, p.stderr.decode()))
        return p.stdout.decode().strip()

    def writer():
        for _ in range(100):
            oid = run("organization", "add")
            if oid:
                made.append(oid)

    def compactor():
        for _ in range(20):
            run("compact")

    threads = [threading.Thread(target=f) for f in (writer, writer, compactor, compactor)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    eq(errors, [], "commands that failed")
    listed = {o["id"] for o in h.cli("organization", "list", store=store)["organizations"]}
    eq(sorted(set(made) - listed), [], "organizations added (exit 0) but not in the store")


@test("cli.compact through a symlinked store directory rebuilds the store behind the link")
def _(h):
    real = h.root / "cli-real-store"
    link = h.root / "cli-store-link"
    h.init_store(store=real, owner=False)
    os.symlink(str(real), str(link))
    org = h.new_org(store=link)
    kid, token = h.new_api_key(org, store=link)
    h.cli("compact", store=link)
    check(os.path.islink(str(link)), "compact replaced the symlink %s with a directory" % link)
    h.cli("api-key", "delete", kid, store=link)
    rc, out, err = h.cli("check", token, store=real, ok=False)
    eq((rc, json.loads(out)["status"]), (1, 401),
       "the key deleted through the link, checked in the directory it points to")


@test("cli.init --owner under umask 077: the store directory is 0755 as documented")
def _(h):
    if not h.is_root:
        raise Skip("needs root (--owner)")
    store = h.root / "cli-umask-store"
    old = os.umask(0o077)
    try:
        h.cli("init", "--owner", "www-data:www-data", store=store)
    finally:
        os.umask(old)
    eq(oct(os.stat(str(store)).st_mode & 0o777), oct(0o755), "mode of the store directory")


@test("cli.names: C1 control characters (U+0080-U+009F) are control characters too")
def _(h):
    for cp in (0x85, 0x9b):
        rc, out, err = keys(h, "organization", "add", "--name", "x" + chr(cp) + "y")
        eq((rc, err.strip()), (1, "krenalis-keys: name contains a control character"),
           "a name with U+%04X" % cp)


@test("cli.a credential given where an ID goes is refused without being printed")
def _(h):
    for args, secret in ((("api-key", "delete", S["token"]), S["token"]),
                         (("write-key", "delete", "--connection", S["conn"], S["wk"]), S["wk"]),
                         (("workspace", "list", "--organization", S["token"]), S["token"])):
        rc, out, err = keys(h, *args)
        eq(rc, 1, "%s exit" % args[0])
        check(secret not in err and secret not in out, "%s printed the credential: %r" % (args, err))


@test("cli.mirror --kms: the Krenalis master key is not left in the process's command line")
def _(h):
    kms = base64.b64encode(os.urandom(32)).decode()
    h.secret(kms)
    store = h.root / "mirror-kms-store"
    # No PostgreSQL listens on the port: the mirror keeps retrying, as under systemd.
    p = subprocess.Popen([str(h.keys_bin), "--store", str(store), "mirror", "--postgres",
                          "host=127.0.0.1 port=%d connect_timeout=1" % free_port(),
                          "--kms", "key:" + kms],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         stdin=subprocess.DEVNULL, env={"PATH": "/usr/bin:/bin", "LANG": "C"})
    h.procs.append(p)
    try:
        deadline, cmdline = time.time() + 10, b""
        while time.time() < deadline and p.poll() is None:
            with open("/proc/%d/cmdline" % p.pid, "rb") as f:
                cmdline = f.read()
            if b"mirror" in cmdline and b"--kms" in cmdline:
                time.sleep(0.5)  # past the start-up, in the retry loop
                with open("/proc/%d/cmdline" % p.pid, "rb") as f:
                    cmdline = f.read()
                break
            time.sleep(0.05)
        eq(p.poll(), None, "the mirror is still running (retrying)")
        check(kms.encode() not in cmdline and kms[:20].encode() not in cmdline,
              "the KMS key in /proc/PID/cmdline (ps shows it to every local user)")
    finally:
        terminate(p, 10)
        h.procs.remove(p)
