"""krenalis-keys (SPEC §4) on a store of its own: the check command's words and body step, the
listings, the create commands' output, name checks, usage errors."""
import json
import os
import tempfile

from harness import Failure, check, eq, test

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
