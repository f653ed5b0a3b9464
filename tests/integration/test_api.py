"""Issue 2: api endpoints (SPEC §6.1), identity passed on (§8), authz providers, directives."""
import os
import re
import shutil
import subprocess

from harness import (Failure, KeepAlive, Skip, api_body, assert_error, assert_identity, b62, backend,
                     check, eq, hdrs, identity, krenalis_auth_headers, project_version, random_alnum,
                     random_api_token, random_id, test, www_auth)
import zlib
import secrets

TARGETS = ("cgi", "proxy")

NO_HEADER = "Authorization header with the API key is not present in the request"
MULTIPLE = "request contains multiple Authorization headers"
INVALID_BEARER = ("Authorization header is invalid; it should be in the format "
                  "'Authorization: Bearer <YOUR_API_KEY>'")
NO_PREFIX = "API key is not valid; API keys start with the api_ prefix"
MALFORMED = "API key in the Authorization header of the request is malformed"
NOT_EXIST = "API key in the Authorization header of the request does not exist"
WS_MULTIPLE = "request contains multiple Krenalis-Workspace headers"
WS_RESTRICTED = '"Krenalis-Workspace" header cannot be provided with a workspace restricted key'
WS_INVALID = ("Krenalis-Workspace header is invalid; it should be in the format "
              "'Krenalis-Workspace: <WORKSPACE_ID>'")
WS_MISSING = ("Krenalis-Workspace header is missing; provide it in the format "
              "'Krenalis-Workspace: <WORKSPACE_ID>'")
WS_FORBIDDEN = "organization request cannot specify a workspace"
NO_ORG_PREFIX = ("platform management APIs require specific keys for authentication (these are "
                 "keys that begin with 'org_')")


def bearer(tok):
    return [("Authorization", "Bearer " + tok)]


def ws(v):
    return [("Krenalis-Workspace", v)]


def each_target(name):
    """Registers fn(h, target) once per backend."""
    def deco(fn):
        for t in TARGETS:
            test("%s [%s]" % (name, t))(lambda h, t=t: fn(h, t))
        return fn
    return deco


def malformed_tokens():
    """api_ tokens that are malformed for each reason of SPEC §2."""
    good = api_body(secrets.token_bytes(32))
    zero_crc = b62(zlib.crc32(bytes(32)), 6)
    p = secrets.token_bytes(32)
    crc = zlib.crc32(p)
    flip = "B" if good[10] != "B" else "C"
    return {
        "length 48": "api_" + good[:48],
        "length 50": "api_" + good + "A",
        "length 0": "api_",
        "char '-'": "api_" + good[:20] + "-" + good[21:],
        "char '_'": "api_" + good[:20] + "_" + good[21:],
        "char '+'": "api_" + good[:48] + "+",
        "char '='": "api_" + good[:48] + "=",
        "crc mismatch (payload)": "api_" + good[:10] + flip + good[11:],
        "crc mismatch (crc)": "api_" + good[:43] + ("A" if good[48] != "A" else "B") * 6,
        # 2^256 in 43 characters; truncated to 32 bytes it would be 32 zero bytes.
        "payload field >= 2^256": "api_" + b62(1 << 256, 43) + zero_crc,
        "payload field all 9": "api_" + "9" * 43 + zero_crc,
        # CRC + 2^32 in 6 characters; truncated to 32 bits it would match.
        "crc field >= 2^32": "api_" + b62(int.from_bytes(p, "big"), 43) + b62(crc + (1 << 32), 6),
        "trailing text": "api_" + good + " extra",
        "internal space": "api_" + good[:20] + " " + good[21:],
    }


# --------------------------------------------------------------------------------------
# §6.1 row 1: no Authorization header


@each_target("api.6.1.01 no Authorization header -> 401")
def _(h, t):
    for path in ("/v1/items", "/v1/", "/v1/events", "/v1/events/settings"):
        r = h.req(t, "GET", path)
        assert_error(r, 401, "Unauthorized", NO_HEADER, auth="realm")


@each_target("api.6.1.01 AuthName sets the realm")
def _(h, t):
    r = h.req(t, "GET", "/v1/realm/x")
    assert_error(r, 401, "Unauthorized", NO_HEADER, auth=www_auth("Other Realm"))
    r = h.req(t, "GET", "/v1/realm/x", bearer(random_api_token()))
    assert_error(r, 401, "Unauthorized", NOT_EXIST, auth=www_auth("Other Realm", True))


@each_target("api.6.1.01 no Authorization header, other methods")
def _(h, t):
    for m in ("POST", "PUT", "DELETE", "PATCH"):
        r = h.req(t, m, "/v1/items", body=b"{}")
        assert_error(r, 401, "Unauthorized", NO_HEADER, auth="realm")


# row 2: sent more than once


@each_target("api.6.1.02 Authorization sent more than once -> 400")
def _(h, t):
    k1 = h.f["k1"]
    cases = {
        "two valid lines": [("Authorization", "Bearer " + k1), ("Authorization", "Bearer " + k1)],
        "valid + invalid line": [("Authorization", "Bearer " + k1), ("Authorization", "Basic x")],
        "two Basic lines": [("Authorization", "Basic eDp5"), ("Authorization", "Basic eDp5")],
        "two empty lines": [("Authorization", ""), ("Authorization", "")],
        "comma in one line": [("Authorization", "Bearer %s, Bearer %s" % (k1, k1))],
        "lower-case second line": [("Authorization", "Bearer " + k1), ("authorization", "Bearer x")],
    }
    for label, hd in cases.items():
        r = h.req(t, "GET", "/v1/items", hd)
        try:
            assert_error(r, 400, "BadRequest", MULTIPLE)
        except Failure as e:
            raise Failure("%s: %s" % (label, e))


# row 3: not a valid Bearer value


@each_target("api.6.1.03 invalid Bearer value -> 400")
def _(h, t):
    k1 = h.f["k1"]
    values = ["", "Basic dXNlcjpwYXNz", "Bearerx", "Bearer:x", "Bearer", "Bearer ",
              "Bearer \t ", "bearer", "Token " + k1, "Bearer" + k1, "Bearer:" + k1,
              "Beare " + k1, "Bearer-" + k1]
    for v in values:
        r = h.req(t, "GET", "/v1/items", [("Authorization", v)])
        try:
            assert_error(r, 400, "BadRequest", INVALID_BEARER)
        except Failure as e:
            raise Failure("Authorization %r: %s" % (v, e))


@each_target("api.6.1.03 Bearer scheme case-insensitive, spaces/tabs skipped")
def _(h, t):
    f = h.f
    for v in ("bearer " + f["k1"], "BEARER " + f["k1"], "bEaReR \t  " + f["k1"],
              "Bearer\t" + f["k1"], "Bearer     " + f["k1"]):
        r = h.req(t, "GET", "/v1/items", [("Authorization", v)])
        try:
            d = backend(r, t)
        except Failure as e:
            raise Failure("Authorization %r: %s" % (v, e))
        assert_identity(d, identity("api", f["k1_id"], f["org1"]))


# row 4: no api_ prefix


@each_target("api.6.1.04 token without api_ prefix -> 400")
def _(h, t):
    f = h.f
    body = api_body(secrets.token_bytes(32))
    h.secret(body)
    org_like = "org_" + random_alnum(43)
    h.secret(org_like)
    for tok in ("abc", f["wk1"], f["wk2"], org_like, "API_" + body, "Api_" + body,
                "api-" + body, "api" + body, body, "_api_" + body, "x"):
        r = h.req(t, "GET", "/v1/items", bearer(tok))
        try:
            assert_error(r, 400, "BadRequest", NO_PREFIX)
        except Failure as e:
            raise Failure("token %r: %s" % (tok[:12], e))


# row 5: malformed


@each_target("api.6.1.05 malformed api_ token -> 401")
def _(h, t):
    for label, tok in malformed_tokens().items():
        h.secret(tok)
        r = h.req(t, "GET", "/v1/items", bearer(tok))
        try:
            assert_error(r, 401, "Unauthorized", MALFORMED, auth="invalid")
        except Failure as e:
            raise Failure("%s: %s" % (label, e))


@each_target("api.6.1.05 malformed: non-ASCII byte")
def _(h, t):
    good = api_body(secrets.token_bytes(32))
    for bad in (b"\xff", b"\xc3\xa9"[:1], b"\x80"):
        tok = b"api_" + good[:48].encode() + bad
        r = h.req(t, "GET", "/v1/items", [b"Authorization: Bearer " + tok])
        assert_error(r, 401, "Unauthorized", MALFORMED, auth="invalid")


@each_target("api.6.1.05 malformed beats Krenalis-Workspace checks")
def _(h, t):
    tok = malformed_tokens()["crc mismatch (payload)"]
    h.secret(tok)
    r = h.req(t, "GET", "/v1/items", bearer(tok) + ws("not-an-id") + ws("x"))
    assert_error(r, 401, "Unauthorized", MALFORMED, auth="invalid")


# row 6: unknown


@each_target("api.6.1.06 unknown well-formed key -> 401 does not exist")
def _(h, t):
    for _ in range(3):
        tok = h.secret(random_api_token())
        r = h.req(t, "GET", "/v1/items", bearer(tok))
        assert_error(r, 401, "Unauthorized", NOT_EXIST, auth="invalid")
    # the test vector of SPEC §2 is well formed, and unknown
    tok = "api_AOyrCBBQEmI63fgWAAw8F12XcPvUqkg0aEwlIqnO0xyCeS3NT"
    r = h.req(t, "GET", "/v1/items", bearer(tok))
    assert_error(r, 401, "Unauthorized", NOT_EXIST, auth="invalid")


@each_target("api.6.1.06 unknown key beats Krenalis-Workspace checks")
def _(h, t):
    tok = h.secret(random_api_token())
    r = h.req(t, "GET", "/v1/items", bearer(tok) + ws("a") + ws("b"))
    assert_error(r, 401, "Unauthorized", NOT_EXIST, auth="invalid")


# row 7: organization disabled


@each_target("api.6.1.07 organization disabled -> 422")
def _(h, t):
    f = h.f
    msg = "organization %s is disabled" % f["org3"]
    r = h.req(t, "GET", "/v1/items", bearer(f["k3"]))
    assert_error(r, 422, "OrganizationDisabled", msg)
    # row 7 comes before the Krenalis-Workspace rows
    r = h.req(t, "GET", "/v1/items", bearer(f["k3"]) + ws(f["ws3"]) + ws(f["ws3"]))
    assert_error(r, 422, "OrganizationDisabled", msg)
    r = h.req(t, "GET", "/v1/items", bearer(f["k3r"]) + ws(f["ws3"]))
    assert_error(r, 422, "OrganizationDisabled", msg)
    r = h.req(t, "GET", "/v1/items", bearer(f["k3"]) + ws("bad"))
    assert_error(r, 422, "OrganizationDisabled", msg)
    r = h.req(t, "GET", "/v1/ws-required/x", bearer(f["k3"]))
    assert_error(r, 422, "OrganizationDisabled", msg)


# row 8: Krenalis-Workspace more than once


@each_target("api.6.1.08 Krenalis-Workspace sent more than once -> 400")
def _(h, t):
    f = h.f
    cases = {
        "two lines": bearer(f["k1"]) + ws(f["ws1a"]) + ws(f["ws1b"]),
        "same value twice": bearer(f["k1"]) + ws(f["ws1a"]) + ws(f["ws1a"]),
        "comma": bearer(f["k1"]) + ws("%s, %s" % (f["ws1a"], f["ws1b"])),
        "two empty": bearer(f["k1"]) + ws("") + ws(""),
        "lower-case name": bearer(f["k1"]) + ws(f["ws1a"]) + [("krenalis-workspace", f["ws1a"])],
        "restricted key": bearer(f["k1r"]) + ws(f["ws1a"]) + ws(f["ws1a"]),
    }
    for label, hd in cases.items():
        r = h.req(t, "GET", "/v1/items", hd)
        try:
            assert_error(r, 400, "BadRequest", WS_MULTIPLE)
        except Failure as e:
            raise Failure("%s: %s" % (label, e))


# row 9: header with a restricted key


@each_target("api.6.1.09 Krenalis-Workspace with a restricted key -> 400")
def _(h, t):
    f = h.f
    for v in (f["ws1a"], f["ws1b"], f["ws2"], "", "not valid!", random_id()):
        r = h.req(t, "GET", "/v1/items", bearer(f["k1r"]) + ws(v))
        try:
            assert_error(r, 400, "BadRequest", WS_RESTRICTED)
        except Failure as e:
            raise Failure("header %r: %s" % (v, e))


# row 10: header not a valid ID


@each_target("api.6.1.10 Krenalis-Workspace not a valid ID -> 400")
def _(h, t):
    f = h.f
    good = f["ws1a"]
    for v in ("", "abc", good[:11], good + "1", "0" + good[1:], "O" + good[1:],
              "I" + good[1:], "l" + good[1:], "+" + good[1:], good[:6] + " " + good[7:],
              "%s;%s" % (good, good)):
        r = h.req(t, "GET", "/v1/items", bearer(f["k1"]) + ws(v))
        try:
            assert_error(r, 400, "BadRequest", WS_INVALID)
        except Failure as e:
            raise Failure("header %r: %s" % (v, e))


# row 11: workspace not in the key's organization


@each_target("api.6.1.11 workspace not in the organization -> 404")
def _(h, t):
    f = h.f
    for v in (f["ws2"], f["ws3"], random_id()):
        r = h.req(t, "GET", "/v1/items", bearer(f["k1"]) + ws(v))
        assert_error(r, 404, "NotFound", "workspace %s does not exist" % v)
    # row 11 before row 12
    r = h.req(t, "GET", "/v1/ws-required/x", bearer(f["k1"]) + ws(f["ws2"]))
    assert_error(r, 404, "NotFound", "workspace %s does not exist" % f["ws2"])


# row 12: KrenalisAuthWorkspace required


@each_target("api.6.1.12 KrenalisAuthWorkspace required, none selected -> 403")
def _(h, t):
    f = h.f
    r = h.req(t, "GET", "/v1/ws-required/x", bearer(f["k1"]))
    assert_error(r, 403, "Forbidden", WS_MISSING)
    r = h.req(t, "GET", "/v1/ws-required/x", bearer(f["k1"]) + ws(f["ws1b"]))
    assert_identity(backend(r, t), identity("api", f["k1_id"], f["org1"], f["ws1b"]))
    r = h.req(t, "GET", "/v1/ws-required/x", bearer(f["k1r"]))
    assert_identity(backend(r, t), identity("api", f["k1r_id"], f["org1"], f["ws1a"]))


# row 13: KrenalisAuthWorkspace forbidden


@each_target("api.6.1.13 KrenalisAuthWorkspace forbidden, one selected -> 401")
def _(h, t):
    f = h.f
    r = h.req(t, "GET", "/v1/ws-forbidden/x", bearer(f["k1"]) + ws(f["ws1a"]))
    assert_error(r, 401, "Unauthorized", WS_FORBIDDEN, auth="invalid")
    r = h.req(t, "GET", "/v1/ws-forbidden/x", bearer(f["k1"]))
    assert_identity(backend(r, t), identity("api", f["k1_id"], f["org1"]))
    # row 10 comes first
    r = h.req(t, "GET", "/v1/ws-forbidden/x", bearer(f["k1"]) + ws("bad"))
    assert_error(r, 400, "BadRequest", WS_INVALID)


@each_target("api.6.1.13 KrenalisAuthWorkspace forbidden, restricted key -> 401")
def _(h, t):
    # a workspace-restricted key selects its workspace
    r = h.req(t, "GET", "/v1/ws-forbidden/x", bearer(h.f["k1r"]))
    assert_error(r, 401, "Unauthorized", WS_FORBIDDEN, auth="invalid")


# --------------------------------------------------------------------------------------
# §8: what the backend receives


@each_target("api.8 success: identity of an unrestricted key")
def _(h, t):
    f = h.f
    for m in ("GET", "POST", "DELETE"):
        r = h.req(t, m, "/v1/items?x=1", bearer(f["k1"]), body=b"{}" if m == "POST" else None)
        d = backend(r, t)
        assert_identity(d, identity("api", f["k1_id"], f["org1"]))
    r = h.req(t, "GET", "/v1/items", bearer(f["k2"]))
    assert_identity(backend(r, t), identity("api", f["k2_id"], f["org2"]))


@each_target("api.8 success: Krenalis-Workspace selects the workspace")
def _(h, t):
    f = h.f
    for w in ("ws1a", "ws1b"):
        r = h.req(t, "GET", "/v1/items", bearer(f["k1"]) + ws(f[w]))
        assert_identity(backend(r, t), identity("api", f["k1_id"], f["org1"], f[w]))
    # surrounding whitespace is not part of a header value
    r = h.req(t, "GET", "/v1/items", bearer(f["k1"]) + [b"Krenalis-Workspace: \t" +
                                                         f["ws1b"].encode() + b" \t"])
    assert_identity(backend(r, t), identity("api", f["k1_id"], f["org1"], f["ws1b"]))


@each_target("api.8 success: restricted key passes its workspace on")
def _(h, t):
    f = h.f
    r = h.req(t, "GET", "/v1/items", bearer(f["k1r"]))
    assert_identity(backend(r, t), identity("api", f["k1r_id"], f["org1"], f["ws1a"]))


@each_target("api.8 KrenalisAuthForwardHeaders On")
def _(h, t):
    f = h.f
    r = h.req(t, "GET", "/v1/fwd/items", bearer(f["k1"]))
    assert_identity(backend(r, t), identity("api", f["k1_id"], f["org1"]), forwarded=True)
    r = h.req(t, "GET", "/v1/fwd/items", bearer(f["k1"]) + ws(f["ws1b"]))
    assert_identity(backend(r, t), identity("api", f["k1_id"], f["org1"], f["ws1b"]),
                    forwarded=True)
    r = h.req(t, "GET", "/v1/fwd/items", bearer(f["k1r"]))
    assert_identity(backend(r, t), identity("api", f["k1r_id"], f["org1"], f["ws1a"]),
                    forwarded=True)


@each_target("api.8 KrenalisAuthForwardHeaders Off (default): no Krenalis-Auth-* headers")
def _(h, t):
    f = h.f
    r = h.req(t, "GET", "/v1/items", bearer(f["k1"]) + ws(f["ws1a"]))
    d = backend(r, t)
    eq(krenalis_auth_headers(d), [], "Krenalis-Auth-* at the backend")


SPOOF = [("Krenalis-Auth-Key-Type", "organizations"), ("krenalis-auth-organization", "EVILORG11111"),
         ("KRENALIS-AUTH-WORKSPACE", "EVILWS111111"), ("Krenalis-Auth-Connection", "EVILCONN1111"),
         ("Krenalis-Auth-Key-Id", "EVILKEY11111"), ("Krenalis_Auth_Key_Type", "organizations"),
         ("krenalis_auth_key_id", "EVILKEY22222"), ("Krenalis-Auth_Organization", "EVILORG22222"),
         ("Krenalis-Auth-Extra", "evil"), ("kReNaLiS-aUtH-kEy-TyPe", "event-write")]


@each_target("api.8 client Krenalis-Auth-* headers removed (authenticated, Off)")
def _(h, t):
    f = h.f
    r = h.req(t, "GET", "/v1/items", bearer(f["k1"]) + SPOOF)
    d = backend(r, t)
    assert_identity(d, identity("api", f["k1_id"], f["org1"]))


@each_target("api.8 client Krenalis-Auth-* headers removed (authenticated, On)")
def _(h, t):
    f = h.f
    r = h.req(t, "GET", "/v1/fwd/items", bearer(f["k1"]) + SPOOF)
    assert_identity(backend(r, t), identity("api", f["k1_id"], f["org1"]), forwarded=True)


@each_target("api.8 client Krenalis-Auth-* headers removed (Require all granted)")
def _(h, t):
    r = h.req(t, "GET", "/v1/public/x", SPOOF)
    d = backend(r, t)
    eq(krenalis_auth_headers(d), [], "Krenalis-Auth-* at the backend")
    if t == "cgi":
        for v in ("KRENALIS_KEY_TYPE", "KRENALIS_ORGANIZATION", "KRENALIS_KEY_ID", "REMOTE_USER"):
            eq(d["env"].get(v), None, "CGI env " + v)


@each_target("api.8 client Krenalis-Auth-* headers removed (location without AuthType)")
def _(h, t):
    r = h.req(t, "GET", "/open/x", SPOOF)
    d = backend(r, t)
    eq(krenalis_auth_headers(d), [], "Krenalis-Auth-* at the backend")


@each_target("api.8 KrenalisAuthPassAuthorization On (default) / Off")
def _(h, t):
    f = h.f
    val = "Bearer " + f["k1"]

    def seen(d):
        if d["backend"] == "proxy":
            return hdrs(d, "Authorization")
        v = d["env"].get("HTTP_AUTHORIZATION")  # CGIPassAuth On in the test config
        return [] if v is None else [v]

    r = h.req(t, "GET", "/v1/items", [("Authorization", val)])
    eq(seen(backend(r, t)), [val], "Authorization at the backend (PassAuthorization On)")
    r = h.req(t, "GET", "/v1/nopass/items", [("Authorization", val)])
    d = backend(r, t)
    eq(seen(d), [], "Authorization at the backend (PassAuthorization Off)")
    assert_identity(d, identity("api", f["k1_id"], f["org1"]))


@test("api.8 KrenalisAuthPassAuthorization Off also removes HTTP_AUTHORIZATION set from the "
      "header (SetEnvIf, the PHP/FastCGI recipe) [cgi]")
def _(h):
    f = h.f
    val = "Bearer " + f["k1"]
    srv = h.httpd("setenvif-auth",
                  global_extra='SetEnvIf Authorization "(.*)" HTTP_AUTHORIZATION=$1\n')
    srv.start()
    try:
        r = srv.req("cgi", "GET", "/v1/items", [("Authorization", val)])
        eq(backend(r, "cgi")["env"].get("HTTP_AUTHORIZATION"), val,
           "HTTP_AUTHORIZATION at the backend (PassAuthorization On)")
        r = srv.req("cgi", "GET", "/v1/nopass/items", [("Authorization", val)])
        d = backend(r, "cgi")
        eq({k: v for k, v in d["env"].items() if k.endswith("HTTP_AUTHORIZATION")}, {},
           "HTTP_AUTHORIZATION at the backend (PassAuthorization Off)")
        assert_identity(d, identity("api", f["k1_id"], f["org1"]))
    finally:
        srv.stop()


# --------------------------------------------------------------------------------------
# changes to the store while httpd runs (no reload)

N_CONN = 8  # new connections, so that several children answer


@each_target("api.live key created then deleted")
def _(h, t):
    f = h.f
    kid, tok = h.new_api_key(f["org1"])
    for _ in range(N_CONN):
        r = h.req(t, "GET", "/v1/items", bearer(tok))
        assert_identity(backend(r, t), identity("api", kid, f["org1"]))
    h.cli("api-key", "delete", kid)
    for _ in range(N_CONN):
        r = h.req(t, "GET", "/v1/items", bearer(tok))
        assert_error(r, 401, "Unauthorized", NOT_EXIST, auth="invalid")


@each_target("api.live organization disabled then enabled")
def _(h, t):
    org = h.new_org()
    kid, tok = h.new_api_key(org)
    r = h.req(t, "GET", "/v1/items", bearer(tok))
    assert_identity(backend(r, t), identity("api", kid, org))
    h.cli("organization", "disable", org)
    for _ in range(N_CONN):
        r = h.req(t, "GET", "/v1/items", bearer(tok))
        assert_error(r, 422, "OrganizationDisabled", "organization %s is disabled" % org)
    h.cli("organization", "enable", org)
    for _ in range(N_CONN):
        r = h.req(t, "GET", "/v1/items", bearer(tok))
        assert_identity(backend(r, t), identity("api", kid, org))


@each_target("api.live restricted key's workspace removed -> does not exist")
def _(h, t):
    f = h.f
    w = h.new_ws(f["org1"])
    kid, tok = h.new_api_key(ws=w)
    r = h.req(t, "GET", "/v1/items", bearer(tok))
    assert_identity(backend(r, t), identity("api", kid, f["org1"], w))
    h.cli("workspace", "remove", w)
    for _ in range(N_CONN):
        r = h.req(t, "GET", "/v1/items", bearer(tok))
        assert_error(r, 401, "Unauthorized", NOT_EXIST, auth="invalid")


@each_target("api.live organization removed -> does not exist")
def _(h, t):
    org = h.new_org()
    kid, tok = h.new_api_key(org)
    r = h.req(t, "GET", "/v1/items", bearer(tok))
    assert_identity(backend(r, t), identity("api", kid, org))
    h.cli("organization", "remove", org)
    for _ in range(N_CONN):
        r = h.req(t, "GET", "/v1/items", bearer(tok))
        assert_error(r, 401, "Unauthorized", NOT_EXIST, auth="invalid")


@each_target("api.live KrenalisAuthLookupCache off: the same answers, changes seen at once")
def _(h, t):
    srv = h.httpd_once("nocache", global_extra="KrenalisAuthLookupCache off\n")
    org = h.new_org()
    kid, tok = h.new_api_key(org)
    for _ in range(N_CONN):
        r = srv.req(t, "GET", "/v1/items", bearer(tok))
        assert_identity(backend(r, t), identity("api", kid, org))
    h.cli("organization", "disable", org)
    r = srv.req(t, "GET", "/v1/items", bearer(tok))
    assert_error(r, 422, "OrganizationDisabled", "organization %s is disabled" % org)
    h.cli("api-key", "delete", kid)
    for _ in range(N_CONN):
        r = srv.req(t, "GET", "/v1/items", bearer(tok))
        assert_error(r, 401, "Unauthorized", NOT_EXIST, auth="invalid")


@each_target("api.live selected workspace removed -> 404")
def _(h, t):
    f = h.f
    w = h.new_ws(f["org1"])
    r = h.req(t, "GET", "/v1/items", bearer(f["k1"]) + ws(w))
    assert_identity(backend(r, t), identity("api", f["k1_id"], f["org1"], w))
    h.cli("workspace", "remove", w)
    r = h.req(t, "GET", "/v1/items", bearer(f["k1"]) + ws(w))
    assert_error(r, 404, "NotFound", "workspace %s does not exist" % w)


# --------------------------------------------------------------------------------------
# authorization providers (AuthzSendForbiddenOnFailure On under /v1/authz/, see harness)

DENIED = "the key is not allowed to access this resource"
INSUFFICIENT = 'Bearer realm="Krenalis", error="insufficient_scope"'


def assert_denied(h, r, m, status=403):
    """A Require denial of an authenticated key: the module's JSON error (403 Forbidden, or
    401 Unauthorized with an insufficient_scope challenge), and no backend hit."""
    if status == 403:
        assert_error(r, 403, "Forbidden", DENIED)
    else:
        assert_error(r, 401, "Unauthorized", DENIED, auth=INSUFFICIENT)
    eq(h.backend_hits(m), [], "backend hits")


@each_target("api.authz denial without AuthzSendForbiddenOnFailure -> 401 insufficient_scope")
def _(h, t):
    f = h.f
    m = h.marker()
    r = h.req(t, "GET", "/v1/authz/default/x?" + m, bearer(f["k1"]))
    assert_denied(h, r, m, 401)
    r = h.req(t, "GET", "/v1/authz/default/x", bearer(f["k2"]))
    assert_identity(backend(r, t), identity("api", f["k2_id"], f["org2"]))


@each_target("api.authz krenalis-key-type")
def _(h, t):
    f = h.f
    r = h.req(t, "GET", "/v1/authz/type-api/x", bearer(f["k1"]))
    assert_identity(backend(r, t), identity("api", f["k1_id"], f["org1"]))
    m = h.marker()
    r = h.req(t, "GET", "/v1/authz/type-other/x?" + m, bearer(f["k1"]))
    assert_denied(h, r, m)
    # no credential: authentication answers first
    r = h.req(t, "GET", "/v1/authz/type-api/x")
    assert_error(r, 401, "Unauthorized", NO_HEADER, auth="realm")


@each_target("api.authz krenalis-workspace")
def _(h, t):
    f = h.f
    r = h.req(t, "GET", "/v1/authz/ws/x", bearer(f["k1"]) + ws(f["ws1a"]))
    assert_identity(backend(r, t), identity("api", f["k1_id"], f["org1"], f["ws1a"]))
    r = h.req(t, "GET", "/v1/authz/ws/x", bearer(f["k1r"]))
    assert_identity(backend(r, t), identity("api", f["k1r_id"], f["org1"], f["ws1a"]))
    for hd in (bearer(f["k1"]) + ws(f["ws1b"]), bearer(f["k1"]), bearer(f["k2"])):
        m = h.marker()
        r = h.req(t, "GET", "/v1/authz/ws/x?" + m, hd)
        assert_denied(h, r, m)


@each_target("api.authz krenalis-organization")
def _(h, t):
    f = h.f
    r = h.req(t, "GET", "/v1/authz/org/x", bearer(f["k1"]))
    assert_identity(backend(r, t), identity("api", f["k1_id"], f["org1"]))
    m = h.marker()
    r = h.req(t, "GET", "/v1/authz/org/x?" + m, bearer(f["k2"]))
    assert_denied(h, r, m)


@each_target("api.authz RequireAny / RequireAll")
def _(h, t):
    f = h.f
    # any: organization org2 or workspace ws1b
    r = h.req(t, "GET", "/v1/authz/any/x", bearer(f["k2"]))
    assert_identity(backend(r, t), identity("api", f["k2_id"], f["org2"]))
    r = h.req(t, "GET", "/v1/authz/any/x", bearer(f["k1"]) + ws(f["ws1b"]))
    assert_identity(backend(r, t), identity("api", f["k1_id"], f["org1"], f["ws1b"]))
    m = h.marker()
    r = h.req(t, "GET", "/v1/authz/any/x?" + m, bearer(f["k1"]) + ws(f["ws1a"]))
    assert_denied(h, r, m)
    # all: api + org1 + ws1a
    r = h.req(t, "GET", "/v1/authz/all/x", bearer(f["k1r"]))
    assert_identity(backend(r, t), identity("api", f["k1r_id"], f["org1"], f["ws1a"]))
    for hd in (bearer(f["k1"]), bearer(f["k1"]) + ws(f["ws1b"]), bearer(f["k2"])):
        m = h.marker()
        r = h.req(t, "GET", "/v1/authz/all/x?" + m, hd)
        assert_denied(h, r, m)
    # the module's own refusals come before any Require
    r = h.req(t, "GET", "/v1/authz/all/x", bearer(f["k3"]))
    assert_error(r, 422, "OrganizationDisabled", "organization %s is disabled" % f["org3"])
    r = h.req(t, "GET", "/v1/authz/ws/x", bearer(f["k1"]) + ws(f["ws2"]))
    assert_error(r, 404, "NotFound", "workspace %s does not exist" % f["ws2"])


# --------------------------------------------------------------------------------------
# identity after internal redirects and subrequests (CGI)


@test("api.8 env after an ErrorDocument internal redirect (same config)")
def _(h):
    f = h.f
    r = h.req("cgi", "GET", "/v1/errdoc/missing", bearer(f["k1"]) + ws(f["ws1b"]))
    eq(r.status, 404, "status" + r.brief())
    d = r.json()
    eq(d["env"].get("REDIRECT_STATUS"), "404", "REDIRECT_STATUS")
    eq(d["env"].get("REDIRECT_URL"), "/v1/errdoc/missing", "REDIRECT_URL")
    assert_identity(d, identity("api", f["k1_id"], f["org1"], f["ws1b"]))


@test("api.8 env after an ErrorDocument internal redirect (other config)")
def _(h):
    f = h.f
    r = h.req("cgi", "GET", "/v1/errdoc2/missing", bearer(f["k1r"]))
    eq(r.status, 404, "status" + r.brief())
    d = r.json()
    eq(d["env"].get("REDIRECT_STATUS"), "404", "REDIRECT_STATUS")
    assert_identity(d, identity("api", f["k1r_id"], f["org1"], f["ws1a"]))


@test("api.8 env after a DirectoryIndex subrequest")
def _(h):
    f = h.f
    r = h.req("cgi", "GET", "/v1/dirindex/", bearer(f["k1"]) + ws(f["ws1a"]))
    d = backend(r, "cgi")
    assert_identity(d, identity("api", f["k1_id"], f["org1"], f["ws1a"]))
    r = h.req("cgi", "GET", "/v1/dirindex/")
    assert_error(r, 401, "Unauthorized", NO_HEADER, auth="realm")


@test("api.8 client Krenalis-Auth-* removed after an internal redirect")
def _(h):
    f = h.f
    r = h.req("cgi", "GET", "/v1/errdoc/missing", bearer(f["k1"]) + SPOOF)
    eq(r.status, 404, "status" + r.brief())
    d = r.json()
    assert_identity(d, identity("api", f["k1_id"], f["org1"]))
    eq([k for k in d["env"] if "KRENALIS_AUTH" in k], [], "HTTP_KRENALIS_AUTH_* incl. REDIRECT_")


# --------------------------------------------------------------------------------------
# configuration errors (apache2 -t)


def conftest(h, name, extra="", store=None, env=None):
    srv = h.httpd(name, global_extra=extra, store=store, env=env)
    return srv.configtest()


@test("config.-t accepts the test configuration")
def _(h):
    rc, out = conftest(h, "conf-ok")
    eq(rc, 0, "apache2 -t exit status; output:\n" + out)
    check("Syntax OK" in out, "no 'Syntax OK' in %r" % out)


@test("version: logged once at start-up, printed by krenalis-keys --version")
def _(h):
    v = project_version()
    if h.loglevel not in ("info", "debug") and not h.loglevel.startswith("trace"):
        raise Skip("LogLevel %s hides the info line" % h.loglevel)
    lines = [ln for ln in h.main.error_log.read_text("latin-1").splitlines()
             if "mod_krenalis_auth/" in ln]
    eq(len(lines), 1, "start-up lines naming mod_krenalis_auth/: %r" % lines)
    # Every log line of the module carries its call site's tag (docs/internals.md).
    check(re.search(r"\] KA\d{5}: mod_krenalis_auth/%s configured$" % re.escape(v), lines[0])
          and "[krenalis_auth:info]" in lines[0], "start-up line %r" % lines[0])
    p = subprocess.run([str(h.keys_bin), "--version"], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=30)
    eq((p.returncode, p.stdout.decode(), p.stderr.decode()), (0, "krenalis-keys %s\n" % v, ""),
       "krenalis-keys --version (exit, stdout, stderr)")


BAD_CONFS = []  # the configurations of bad_directive: named by number, not by directive


def bad_directive(label, directive, snippet, store=None, message=None):
    """apache2 -t fails on snippet and its output names directive (message: and says that)."""
    BAD_CONFS.append(label)
    # A file name holding the directive would name it in every "Syntax error ... of FILE".
    name = "conf-bad-%d" % len(BAD_CONFS)

    @test("config.-t fails: %s" % label)
    def _(h):
        rc, out = conftest(h, name, snippet.format(**h.f), store=store(h) if store else None)
        check(rc != 0, "apache2 -t exit status 0 for %s; output:\n%s" % (label, out))
        check(directive.lower() in out.lower(),
              "output does not name %s:\n%s" % (directive, out))
        check(message is None or message in out, "output lacks %r:\n%s" % (message, out))


bad_directive("KrenalisAuthEndpoint bogus", "KrenalisAuthEndpoint",
              "<Location /bad/>\n    KrenalisAuthEndpoint bogus\n</Location>")
bad_directive("KrenalisAuthEndpoint empty", "KrenalisAuthEndpoint",
              "<Location /bad/>\n    KrenalisAuthEndpoint \"\"\n</Location>")
bad_directive("KrenalisAuthWorkspace bogus", "KrenalisAuthWorkspace",
              "<Location /bad/>\n    KrenalisAuthWorkspace sometimes\n</Location>")
bad_directive("KrenalisAuthForwardHeaders bogus", "KrenalisAuthForwardHeaders",
              "<Location /bad/>\n    KrenalisAuthForwardHeaders maybe\n</Location>")
bad_directive("KrenalisAuthPassAuthorization bogus", "KrenalisAuthPassAuthorization",
              "<Location /bad/>\n    KrenalisAuthPassAuthorization yes\n</Location>")
# httpd's own words for a FLAG: an unknown directive would name it too ("Invalid command").
bad_directive("KrenalisAuthMetrics bogus", "KrenalisAuthMetrics",
              "<Location /bad/>\n    KrenalisAuthMetrics maybe\n</Location>",
              message="KrenalisAuthMetrics must be On or Off")
bad_directive("KrenalisAuthMetrics bogus in the server", "KrenalisAuthMetrics",
              "KrenalisAuthMetrics maybe", message="KrenalisAuthMetrics must be On or Off")
bad_directive("KrenalisAuthMaxBodySize bogus", "KrenalisAuthMaxBodySize",
              "<Location /bad/>\n    KrenalisAuthMaxBodySize lots\n</Location>")
bad_directive("KrenalisAuthMaxBodySize negative", "KrenalisAuthMaxBodySize",
              "<Location /bad/>\n    KrenalisAuthMaxBodySize -1\n</Location>")
bad_directive("Require krenalis-key-type bogus", "krenalis-key-type",
              "<Location /bad/>\n    AuthType Krenalis\n    Require krenalis-key-type admin\n"
              "</Location>")
bad_directive("KrenalisAuthLookupCache bogus", "KrenalisAuthLookupCache",
              "KrenalisAuthLookupCache lots")
bad_directive("KrenalisAuthLookupCache too small", "KrenalisAuthLookupCache",
              "KrenalisAuthLookupCache 10")
bad_directive("KrenalisAuthLookupCache too large", "KrenalisAuthLookupCache",
              "KrenalisAuthLookupCache 16777217")
bad_directive("KrenalisAuthKeyStoreSecret missing", "KrenalisAuthKeyStoreSecret",
              "KrenalisAuthKeyStoreSecret /nonexistent/krenalis-secret")
bad_directive("KrenalisAuthKeyStore missing directory", "KrenalisAuthKeyStore", "",
              store=lambda h: "/nonexistent/krenalis-store-%s" % secrets.token_hex(4))


@test("config.-t fails: KrenalisAuthKeyStore is not a store")
def _(h):
    d = h.root / "not-a-store"
    d.mkdir(exist_ok=True)
    rc, out = conftest(h, "conf-not-a-store", store=d)
    check(rc != 0, "apache2 -t exit status 0; output:\n" + out)
    check("krenalisauthkeystore" in out.lower(), "output does not name KrenalisAuthKeyStore:\n"
          + out)


def store_files_open(pid):
    """(mappings of data.mdb, descriptors of data.mdb or lock.mdb) of process pid."""
    maps = [ln for ln in open("/proc/%d/maps" % pid) if ln.rstrip().endswith("/data.mdb")]
    fds = []
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            target = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        if target.endswith("/data.mdb") or target.endswith("/lock.mdb"):
            fds.append(target)
    return len(maps), len(fds)


@test("config.one store spelled two ways (a trailing /) is opened once per child")
def _(h):
    # docs/directives.md: "Each distinct store is opened once per child process". LMDB must
    # not be opened twice in one process: its locks are per process (fcntl), so a second
    # environment resets the reader table the first one uses, and closing either one drops
    # the other's lock, which lets krenalis-keys reuse pages a child is reading.
    srv = h.httpd("store-spelled-twice")
    text = srv.conf.read_text()
    end = text.rindex("</VirtualHost>")  # the proxy host's, the last one
    srv.conf.write_text(text[:end] + '    KrenalisAuthKeyStore "%s/"\n' % h.store + text[end:])
    srv.start()
    try:
        for _ in range(10):
            for t in TARGETS:
                assert_identity(backend(srv.req(t, "GET", "/v1/items", bearer(h.f["k1"])), t),
                                identity("api", h.f["k1_id"], h.f["org1"]))
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(srv.proc.pid)],
                             stdout=subprocess.PIPE, universal_newlines=True, timeout=30).stdout
        opened = {int(p): store_files_open(int(p)) for p in out.split()}
        check(any(n for n, _ in opened.values()), "no child mapped the store: %r" % opened)
        for pid, (maps, fds) in opened.items():
            check(maps <= 1 and fds <= 2, "child %d: data.mdb mapped %d times, %d descriptors of "
                  "data.mdb and lock.mdb" % (pid, maps, fds))
    finally:
        srv.stop()


# --------------------------------------------------------------------------------------
# fail closed (SPEC §10): the store cannot be read by the child processes


def failclosed_server(h):
    """An httpd whose store the children (User www-data) cannot read; None if not root."""
    if not h.is_root:  # the store must be readable at start-up (root), not by User www-data
        raise Skip("needs root")
    srv = h.servers.get("failclosed")
    if srv is not None and srv.proc is not None:
        return srv
    store = h.root / "store-root-only"
    h.init_store(store=store, owner=False)
    org = h.new_org(store=store)
    h.f["fc_kid"], h.f["fc_tok"] = h.new_api_key(org, store=store)
    for dirpath, dirs, files in os.walk(store):
        for n in dirs + files:
            os.chown(os.path.join(dirpath, n), 0, 0)
    os.chown(store, 0, 0)
    os.chmod(store, 0o700)
    srv = h.httpd("failclosed", store=store)
    srv.start()
    return srv


@each_target("api.10 store unreadable by the children: valid key -> 503, never through")
def _(h, t):
    srv = failclosed_server(h)
    m = h.marker()
    r = srv.req(t, "GET", "/v1/items?" + m, bearer(h.f["fc_tok"]))
    assert_error(r, 503, "ServiceUnavailable",
                 "request cannot be processed at this time; try again later")
    eq(h.backend_hits(m), [], "backend hits")
    m = h.marker()
    r = srv.req(t, "GET", "/v1/items?" + m, bearer(random_api_token()))
    assert_error(r, 503, "ServiceUnavailable",
                 "request cannot be processed at this time; try again later")
    eq(h.backend_hits(m), [], "backend hits")


@each_target("api.10 store unreadable by the children: rows before the store as usual")
def _(h, t):
    # SPEC §2: a malformed key is refused without touching the key store
    srv = failclosed_server(h)
    tok = malformed_tokens()["crc mismatch (payload)"]
    h.secret(tok)
    r = srv.req(t, "GET", "/v1/items", bearer(tok))
    assert_error(r, 401, "Unauthorized", MALFORMED, auth="invalid")
    r = srv.req(t, "GET", "/v1/items")
    assert_error(r, 401, "Unauthorized", NO_HEADER, auth="realm")
    r = srv.req(t, "GET", "/v1/items", [("Authorization", "Basic eDp5")])
    assert_error(r, 400, "BadRequest", INVALID_BEARER)
    r = srv.req(t, "GET", "/v1/items", bearer("abc"))
    assert_error(r, 400, "BadRequest", NO_PREFIX)


@each_target("api.10 store unreadable by the children: ingestion and settings -> 503")
def _(h, t):
    srv = failclosed_server(h)
    msg = "request cannot be processed at this time; try again later"
    m = h.marker()
    origin = "https://app.example.com"
    wk = h.secret(random_alnum(32))
    r = srv.req(t, "POST", "/v1/events?" + m, bearer(wk) + [("Origin", origin)], b"{}")
    assert_error(r, 503, "ServiceUnavailable", msg, cors=True, origin=origin)
    r = srv.req(t, "POST", "/v1/events?" + m, [], ('{"writeKey":"%s"}' % wk).encode())
    assert_error(r, 503, "ServiceUnavailable", msg, cors=True)
    r = srv.req(t, "GET", "/v1/events/settings/%s?%s" % (wk, m))
    assert_error(r, 503, "ServiceUnavailable", msg, cors=True)
    eq(h.backend_hits(m), [], "backend hits")


@test("api.10 AuthType Krenalis without KrenalisAuthKeyStore: 503 and the error log says why")
def _(h):
    # docs/directives.md: "required wherever AuthType Krenalis is used; without it requests
    # get 503 and the error log says why"
    srv = h.httpd("no-store")
    text = srv.conf.read_text()
    check('KrenalisAuthKeyStore "%s"\n' % h.store in text, "no store line in the template")
    srv.conf.write_text(text.replace('KrenalisAuthKeyStore "%s"\n' % h.store, ""))
    srv.start()
    msg = "request cannot be processed at this time; try again later"
    try:
        for t in TARGETS:
            m = h.marker()
            r = srv.req(t, "GET", "/v1/items?" + m, bearer(h.f["k1"]))
            assert_error(r, 503, "ServiceUnavailable", msg)
            r = srv.req(t, "POST", "/v1/events?" + m, bearer(h.f["wk1"]), b"{}")
            assert_error(r, 503, "ServiceUnavailable", msg, cors=True)
            eq(h.backend_hits(m), [], "backend hits")
        log = srv.error_log.read_text("latin-1")
        check("AuthType Krenalis without KrenalisAuthKeyStore" in log,
              "the error log does not say why:\n" + log[-2000:])
    finally:
        srv.stop()


@test("api.10 stop the fail-closed server")
def _(h):
    srv = h.servers.get("failclosed")
    if srv is not None:
        srv.stop()


# --------------------------------------------------------------------------------------
# the identity in mod_headers and in the access log (%{...}e), keep-alive connections


def conf(h):
    loc = """\
    <Location /v1/hdr/>
        Header always set X-Seen-Key-Type "%{KRENALIS_KEY_TYPE}e"
        Header always set X-Seen-Organization "%{KRENALIS_ORGANIZATION}e"
        RequestHeader set X-Req-Key-Id "%{KRENALIS_KEY_ID}e"
    </Location>
"""
    # Variables of the identity's names set before the decision (mod_setenvif runs first): the
    # module's values replace them, and the ones the identity has no value for are removed.
    # mod_headers reads the first value of a name, so a second copy added beside the forged one
    # would show here; an unset variable reads "(null)".
    loc += """\
    <Location /v1/preset/>
        SetEnvIf Request_URI . KRENALIS_ORGANIZATION=forged krenalis_key_id=forged
        SetEnvIf Request_URI . KRENALIS_WORKSPACE=forged Krenalis_Connection=forged
        Header always set X-Seen-Organization "%{KRENALIS_ORGANIZATION}e"
        Header always set X-Seen-Key-Id "%{KRENALIS_KEY_ID}e"
        Header always set X-Seen-Workspace "%{KRENALIS_WORKSPACE}e"
        Header always set X-Seen-Connection "%{KRENALIS_CONNECTION}e"
    </Location>
"""
    return {"cgi": loc, "proxy": loc}


@each_target("api.8 identity replaces variables of its names set before the decision, and "
             "removes the ones it has no value for")
def _(h, t):
    f = h.f
    r = h.req(t, "GET", "/v1/preset/x", bearer(f["k1"]))
    d = backend(r, t)
    eq(r.one("X-Seen-Organization"), f["org1"], "X-Seen-Organization")
    eq(r.one("X-Seen-Key-Id"), f["k1_id"], "X-Seen-Key-Id")
    eq(r.one("X-Seen-Workspace"), "(null)", "X-Seen-Workspace (no workspace: unset)")
    eq(r.one("X-Seen-Connection"), "(null)", "X-Seen-Connection (no connection: unset)")
    if t == "cgi":
        eq(d["env"].get("KRENALIS_ORGANIZATION"), f["org1"], "CGI env KRENALIS_ORGANIZATION")
        for v in ("KRENALIS_WORKSPACE", "KRENALIS_CONNECTION"):
            eq(d["env"].get(v), None, "CGI env %s" % v)
    assert_identity(d, identity("api", f["k1_id"], f["org1"]))


@each_target("api.8 identity usable by mod_headers (%{VAR}e)")
def _(h, t):
    f = h.f
    r = h.req(t, "GET", "/v1/hdr/x", bearer(f["k1"]))
    d = backend(r, t)
    eq(r.one("X-Seen-Key-Type"), "api", "X-Seen-Key-Type")
    eq(r.one("X-Seen-Organization"), f["org1"], "X-Seen-Organization")
    if t == "proxy":
        eq(hdrs(d, "X-Req-Key-Id"), [f["k1_id"]], "X-Req-Key-Id at the backend")
    else:
        eq(d["env"].get("HTTP_X_REQ_KEY_ID"), f["k1_id"], "HTTP_X_REQ_KEY_ID")


@each_target("api.8 identity in the access log (%{KRENALIS_KEY_TYPE}e, %u)")
def _(h, t):
    import time
    f = h.f
    m = h.marker()
    r = h.req(t, "GET", "/v1/items?" + m, bearer(f["k1"]))
    backend(r, t)
    line = None
    for _ in range(40):
        lines = [ln for ln in h.main.access_log.read_text("latin-1").splitlines() if m in ln]
        if lines:
            line = lines[0]
            break
        time.sleep(0.05)
    check(line is not None, "no access log line for %s" % m)
    check(line.endswith(" kt=api"), "access log line: %r" % line)
    check((" %s [" % f["k1_id"]) in line, "access log %%u is not the key ID: %r" % line)


@each_target("api.keep-alive: no identity leaks between requests on one connection")
def _(h, t):
    from harness import http_keepalive
    f = h.f
    rs = http_keepalive(h.main.port(t), [
        ("GET", "/v1/items", bearer(f["k1"]) + ws(f["ws1a"])),
        ("GET", "/v1/items", []),
        ("GET", "/v1/public/x", []),
        ("GET", "/v1/items", bearer(f["k2"])),
        ("GET", "/v1/items", bearer(h.secret(random_api_token()))),
        ("GET", "/v1/items", bearer(f["k1r"])),
    ])
    assert_identity(backend(rs[0], t), identity("api", f["k1_id"], f["org1"], f["ws1a"]))
    assert_error(rs[1], 401, "Unauthorized", NO_HEADER, auth="realm")
    d = backend(rs[2], t)
    if t == "cgi":
        for v in ("REMOTE_USER", "KRENALIS_KEY_TYPE", "KRENALIS_ORGANIZATION",
                  "KRENALIS_WORKSPACE", "KRENALIS_KEY_ID"):
            eq(d["env"].get(v), None, "CGI env %s on an open location" % v)
    assert_identity(backend(rs[3], t), identity("api", f["k2_id"], f["org2"]))
    assert_error(rs[4], 401, "Unauthorized", NOT_EXIST, auth="invalid")
    assert_identity(backend(rs[5], t), identity("api", f["k1r_id"], f["org1"], f["ws1a"]))


# --------------------------------------------------------------------------------------
# The connection memo (docs/operations.md): a keep-alive connection remembers the API key it
# last accepted, with the store snapshot that accepted it. Every request below goes on one
# connection, so each later one is decided with the memo in place.


@each_target("api.memo: a key deleted between two requests on one connection -> 401 on the next")
def _(h, t):
    org = h.new_org()
    kid, tok = h.new_api_key(org)
    with KeepAlive(h.main.port(t)) as c:
        for _ in range(3):
            assert_identity(backend(c.send("GET", "/v1/items", bearer(tok)), t),
                            identity("api", kid, org))
        h.cli("api-key", "delete", kid)
        for _ in range(3):
            assert_error(c.send("GET", "/v1/items", bearer(tok)), 401, "Unauthorized",
                         NOT_EXIST, auth="invalid")


@each_target("api.memo: organization disabled, then enabled, between requests on one connection")
def _(h, t):
    org = h.new_org()
    kid, tok = h.new_api_key(org)
    with KeepAlive(h.main.port(t)) as c:
        assert_identity(backend(c.send("GET", "/v1/items", bearer(tok)), t),
                        identity("api", kid, org))
        h.cli("organization", "disable", org)
        assert_error(c.send("GET", "/v1/items", bearer(tok)), 422, "OrganizationDisabled",
                     "organization %s is disabled" % org)
        h.cli("organization", "enable", org)
        assert_identity(backend(c.send("GET", "/v1/items", bearer(tok)), t),
                        identity("api", kid, org))


@each_target("api.memo: a restricted key's workspace removed between requests -> 401")
def _(h, t):
    f = h.f
    w = h.new_ws(f["org1"])
    kid, tok = h.new_api_key(ws=w)
    with KeepAlive(h.main.port(t)) as c:
        assert_identity(backend(c.send("GET", "/v1/items", bearer(tok)), t),
                        identity("api", kid, f["org1"], w))
        h.cli("workspace", "remove", w)
        assert_error(c.send("GET", "/v1/items", bearer(tok)), 401, "Unauthorized", NOT_EXIST,
                     auth="invalid")


@each_target("api.memo: the workspace rules still apply to a remembered key")
def _(h, t):
    f = h.f
    # Apache closes the connection after a 400, so the 400s come last on each connection.
    with KeepAlive(h.main.port(t)) as c:
        for _ in range(2):
            assert_identity(backend(c.send("GET", "/v1/items", bearer(f["k1"])), t),
                            identity("api", f["k1_id"], f["org1"]))
            assert_identity(backend(c.send("GET", "/v1/items", bearer(f["k1"]) + ws(f["ws1b"])),
                                    t), identity("api", f["k1_id"], f["org1"], f["ws1b"]))
            assert_error(c.send("GET", "/v1/items", bearer(f["k1"]) + ws(f["ws2"])), 404,
                         "NotFound", "workspace %s does not exist" % f["ws2"])
            # A token that differs from the remembered one in its last character only.
            last = f["k1"][-1]
            other = f["k1"][:-1] + ("B" if last != "B" else "C")
            r = c.send("GET", "/v1/items", bearer(other))
            check(r.status == 401, "near-copy of the remembered key: %s" % r.brief())
        assert_identity(backend(c.send("GET", "/v1/items", bearer(f["k1r"])), t),
                        identity("api", f["k1r_id"], f["org1"], f["ws1a"]))
        assert_error(c.send("GET", "/v1/items", bearer(f["k1r"]) + ws(f["ws1b"])), 400,
                     "BadRequest", WS_RESTRICTED)


@each_target("api.memo: a remembered decision answers only the same headers under the same rules")
def _(h, t):
    f = h.f
    k1, with_ws = bearer(f["k1"]), bearer(f["k1"]) + ws(f["ws1b"])
    plain = identity("api", f["k1_id"], f["org1"])
    in_ws = identity("api", f["k1_id"], f["org1"], f["ws1b"])
    with KeepAlive(h.main.port(t)) as c:
        # The same request again and again (the remembered one), then the other, and back.
        for _ in range(3):
            assert_identity(backend(c.send("GET", "/v1/items", with_ws), t), in_ws)
        for _ in range(3):
            assert_identity(backend(c.send("GET", "/v1/items", k1), t), plain)
        assert_identity(backend(c.send("GET", "/v1/items", with_ws), t), in_ws)
        # The same headers where another workspace rule applies.
        assert_error(c.send("GET", "/v1/ws-forbidden/x", with_ws), 401, "Unauthorized",
                     WS_FORBIDDEN, auth="invalid")
        assert_identity(backend(c.send("GET", "/v1/items", k1), t), plain)
        assert_error(c.send("GET", "/v1/ws-required/x", k1), 403, "Forbidden", WS_MISSING)
        assert_identity(backend(c.send("GET", "/v1/ws-required/x", with_ws), t), in_ws)
        assert_identity(backend(c.send("GET", "/v1/ws-required/x", with_ws), t), in_ws)
        # The same headers on the organizations API, where an API key is refused.
        assert_identity(backend(c.send("GET", "/v1/items", k1), t), plain)
        assert_error(c.send("GET", "/v1/organizations", k1), 400, "BadRequest", NO_ORG_PREFIX)


def last_txnid(data_mdb):
    """The last committed LMDB transaction ID of a data.mdb: the larger mm_txnid of its two meta
    pages. Each meta page: a 16-byte page header, then magic, version, address, mapsize (24
    bytes), two 48-byte database records (the first starts with the page size) and the last
    page number, then mm_txnid at offset 144."""
    raw = data_mdb.read_bytes()
    psize = int.from_bytes(raw[40:44], "little")
    return max(int.from_bytes(raw[off + 144:off + 152], "little") for off in (0, psize))


def placed(live, src, name):
    """A copy of src beside live (data.mdb), with its owner and mode, to rename over it."""
    dst = live.parent / name
    st = os.stat(live)
    shutil.copyfile(src, dst)
    os.chmod(dst, st.st_mode & 0o7777)
    os.chown(dst, st.st_uid, st.st_gid)
    return dst


@each_target("api.memo: data.mdb replaced by a store at the same transaction ID -> reopened")
def _(h, t):
    import time
    # A copy of the store, then one write on each side: both files end at the same LMDB
    # transaction ID, and only the live one holds the new key. A memo that trusted the ID alone
    # would accept the key from the replacement.
    org = h.new_org()
    copy = h.root / "store-memo-copy"
    shutil.copytree(h.store, copy)
    kid, tok = h.new_api_key(org)
    while last_txnid(copy / "data.mdb") < last_txnid(h.store / "data.mdb"):
        h.cli("organization", "add", "--name", "side write", store=copy)
    eq(last_txnid(copy / "data.mdb"), last_txnid(h.store / "data.mdb"), "transaction IDs")
    with KeepAlive(h.main.port(t)) as c:
        assert_identity(backend(c.send("GET", "/v1/items", bearer(tok)), t),
                        identity("api", kid, org))
        live = h.store / "data.mdb"
        saved = placed(live, live, "data.mdb.live")
        os.rename(placed(live, copy / "data.mdb", "data.mdb.new"), live)
        try:
            time.sleep(1.2)  # the children look at data.mdb at most once a second
            # Requests on other connections first: in the event MPM one of them reopens the
            # store in this connection's child, so the memo meets an open store of the same ID.
            for _ in range(N_CONN):
                assert_error(h.req(t, "GET", "/v1/items", bearer(tok)), 401, "Unauthorized",
                             NOT_EXIST, auth="invalid")
            assert_error(c.send("GET", "/v1/items", bearer(tok)), 401, "Unauthorized", NOT_EXIST,
                         auth="invalid")
        finally:
            os.rename(saved, live)
            shutil.rmtree(copy, ignore_errors=True)
        time.sleep(1.2)
        assert_identity(backend(c.send("GET", "/v1/items", bearer(tok)), t),
                        identity("api", kid, org))


@test("api.memo: data.mdb replaced while a request's headers arrive -> decided on the new file "
      "[cgi]")
def _(h):
    import time
    t = "cgi"  # the decision is made before either backend: one of them is enough
    # The once-a-second look at data.mdb must count from when the decision is made, not from
    # when the request line came (r->request_time): a client that sends its request line and
    # then its headers slowly would otherwise be decided on a replaced file for as long as its
    # headers take (mod_reqtimeout allows 20 s and more), long after "within a second".
    org = h.new_org()
    copy = h.root / "store-slow-copy"
    shutil.copytree(h.store, copy)
    kid, tok = h.new_api_key(org)
    live = h.store / "data.mdb"
    with KeepAlive(h.main.port(t)) as c:
        assert_identity(backend(c.send("GET", "/v1/items", bearer(tok)), t),
                        identity("api", kid, org))
        time.sleep(1.1)
        # This child looks at data.mdb now (a second has passed since its last look).
        assert_identity(backend(c.send("GET", "/v1/items", bearer(tok)), t),
                        identity("api", kid, org))
        c.sock.sendall(b"GET /v1/items HTTP/1.1\r\n")
        saved = placed(live, live, "data.mdb.live")
        os.rename(placed(live, copy / "data.mdb", "data.mdb.new"), live)
        try:
            time.sleep(2.5)  # the replacement is 2.5 s old when the headers come
            r = c.send_after_line("GET", "/v1/items", bearer(tok))
            assert_error(r, 401, "Unauthorized", NOT_EXIST, auth="invalid")
        finally:
            os.rename(saved, live)
            shutil.rmtree(copy, ignore_errors=True)
    time.sleep(1.2)
    assert_identity(backend(h.req(t, "GET", "/v1/items", bearer(tok)), t),
                    identity("api", kid, org))


@each_target("api.6.1.05 malformed: 8000-character token")
def _(h, t):
    tok = "api_" + "A" * 8000
    r = h.req(t, "GET", "/v1/items", bearer(tok))
    assert_error(r, 401, "Unauthorized", MALFORMED, auth="invalid")


@each_target("api.6.1.05 a token longer than 8 KiB is still a token (LimitRequestFieldSize 65536)")
def _(h, t):
    # SPEC §2: after the scheme and its blanks, "the rest (non-empty) is the token"; with
    # httpd's field limit raised, a long value meets the rows of its token, not row 3.
    srv = h.httpd_once("bigfields", global_extra="LimitRequestFieldSize 65536")
    for tok, status, code, msg, auth in (("api_" + "A" * 9000, 401, "Unauthorized", MALFORMED,
                                          "invalid"),
                                         ("x" * 9000, 400, "BadRequest", NO_PREFIX, None)):
        r = srv.req(t, "GET", "/v1/items", bearer(tok))
        try:
            assert_error(r, status, code, msg, auth=auth)
        except Failure as e:
            raise Failure("token %r... of %d characters: %s" % (tok[:4], len(tok), e))
