"""Issue 3: ingestion (SPEC §6.2), settings (§6.3) and CORS (§9)."""
import gzip
import json
import secrets

from harness import (ANY, Failure, assert_cors, assert_error, assert_identity, assert_no_cors,
                     backend, check, eq, hdrs, identity, random_alnum, random_api_token,
                     random_id, sha, test)
from test_api import MALFORMED as API_MALFORMED
from test_api import NO_PREFIX, TARGETS, bearer, each_target, malformed_tokens, ws

MULTIPLE = "request contains multiple Authorization headers"
INVALID_BEARER = ('Authorization header is invalid; use "Authorization: Bearer <KEY>" with an '
                  'API key or an event write key')
API_MALFORMED_ING = "API key in the Authorization header is malformed; check that it was copied correctly"
API_UNKNOWN = "API key in the Authorization header is invalid"
WS_MULTIPLE = 'request contains multiple "Krenalis-Workspace" headers'
WS_RESTRICTED = '"Krenalis-Workspace" header cannot be provided with a workspace restricted key'
WS_INVALID = '"Krenalis-Workspace" header is invalid; use "Krenalis-Workspace: <WORKSPACE_ID>"'
NO_CONN = "parameter 'connectionId' is required when using API key authentication"
WK_INVALID = "event write key in the Authorization header is not valid"
NO_AUTH = "Authorization header is missing"
WK_NOT_STRING = "property 'writeKey' is not a valid string"
WK_EMPTY = "property 'writeKey' cannot be empty"
WK_BODY_UNKNOWN = "the event write key in the request body does not exist"
WK_CONN = ("property 'connectionId' cannot be provided when using an event write key for "
           "authentication")
SETTINGS_INVALID = "event write key in the path is invalid"

EVENT_PATHS = ("/v1/events", "/v1/events/alias", "/v1/events/group", "/v1/events/identify",
               "/v1/events/page", "/v1/events/screen", "/v1/events/track")
ORIGIN = "https://app.example.com"
LIMIT = 512000


def conf(h):
    locs = """\
    <Location /v1/ingest-list/>
        KrenalisAuthEndpoint ingestion
        KrenalisAuthCORSAllowOrigin https://a.example https://b.example
    </Location>
    <Location /v1/ingest-small/>
        KrenalisAuthEndpoint ingestion
        KrenalisAuthMaxBodySize 1000
    </Location>
"""
    # the proxy backend sees the identity through the forwarded headers
    fwd = """\
    <LocationMatch "^/v1/events">
        KrenalisAuthForwardHeaders On
    </LocationMatch>
    <Location /v1/ingest-list/>
        KrenalisAuthForwardHeaders On
    </Location>
    <Location /v1/ingest-small/>
        KrenalisAuthForwardHeaders On
    </Location>
"""
    return {"cgi": locs, "proxy": locs + fwd}


def fixture(h):
    f = h.f
    f["wk1_id"] = h.write_key_id(f["conn1"], f["wk1"])
    f["wk1b_id"] = h.write_key_id(f["conn1b"], f["wk1b"])
    f["wk3_id"] = h.write_key_id(f["conn3"], f["wk3"])


def wk_identity(h, which="1"):
    f = h.f
    return {
        "1": identity("event-write", f["wk1_id"], f["org1"], f["ws1a"], f["conn1"]),
        "1b": identity("event-write", f["wk1b_id"], f["org1"], f["ws1b"], f["conn1b"]),
        "3": identity("event-write", f["wk3_id"], f["org3"], f["ws3"], f["conn3"]),
    }[which]


def fwd(t):
    return t == "proxy"  # proxy: KrenalisAuthForwardHeaders On for /v1/events (see conf)


def events_body(extra=None, size=None):
    """A JSON object body; with size, padded to exactly size bytes."""
    doc = {"batch": [{"type": "track", "event": "Test"}]}
    doc.update(extra or {})
    b = json.dumps(doc, separators=(",", ":")).encode()
    if size is not None:
        base = b[:-1] + b',"pad":"'
        n = size - len(base) - 2
        if n < 0:
            raise ValueError("size too small")
        b = base + b"x" * n + b'"}'
        assert len(b) == size
    return b


def assert_body_passed(d, body):
    eq((d["body_len"], d["body_sha256"]), (len(body), sha(body)), "body at the backend")


def ingest_error(r, status, code, msg, auth=None, origin=None):
    assert_error(r, status, code, msg, auth=auth, cors=True, origin=origin)


# --------------------------------------------------------------------------------------
# success


@each_target("ingest.ok write key in Authorization, every event path")
def _(h, t):
    f = h.f
    for p in EVENT_PATHS:
        body = events_body()
        r = h.req(t, "POST", p, bearer(f["wk1"]) + [("Content-Type", "application/json")], body)
        d = backend(r, t)
        assert_body_passed(d, body)
        assert_identity(d, wk_identity(h), forwarded=fwd(t))
        assert_cors(r, None)


@each_target("ingest.ok Origin reflected, backend CORS headers not duplicated")
def _(h, t):
    f = h.f
    body = events_body()
    for q, origin in (("", ORIGIN), ("?cors=1", ORIGIN), ("?cors=1", None)):
        hd = bearer(f["wk1b"]) + ([("Origin", origin)] if origin else [])
        r = h.req(t, "POST", "/v1/events/track" + q, hd, body)
        d = backend(r, t)
        assert_identity(d, wk_identity(h, "1b"), forwarded=fwd(t))
        assert_cors(r, origin)


@each_target("ingest.ok a backend's Vary fields are all kept beside Origin")
def _(h, t):
    # SPEC 9: Vary: Origin exactly once; the tokens the backend varies on stay (a proxied
    # backend may send them as several Vary fields, which httpd keeps as separate entries).
    f = h.f
    for path, hd in (("/v1/events/track?vary=1", bearer(f["wk1b"])),
                     ("/v1/events/settings/%s?vary=1" % f["wk1"], [])):
        r = h.req(t, "POST" if "track" in path else "GET", path, hd + [("Origin", ORIGIN)],
                  events_body() if "track" in path else None)
        eq(r.status, 200, "status" + r.brief())
        tokens = [v.strip().lower() for field in r.all("Vary") for v in field.split(",")]
        eq(sorted(tokens), ["accept-encoding", "accept-language", "origin"], "Vary" + r.brief())
        eq(r.one("Access-Control-Allow-Origin"), ORIGIN, "Access-Control-Allow-Origin" + r.brief())


@each_target("ingest.ok Krenalis-Workspace ignored with a write key")
def _(h, t):
    f = h.f
    body = events_body()
    for extra in (ws(f["ws1b"]), ws("not valid"), ws(f["ws2"]) + ws(f["ws2"]), ws("")):
        r = h.req(t, "POST", "/v1/events", bearer(f["wk1"]) + extra, body)
        assert_identity(backend(r, t), wk_identity(h), forwarded=fwd(t))


@each_target("ingest.ok Authorization wins over a body writeKey")
def _(h, t):
    f = h.f
    for wk in ("bogus", f["wk1b"], 5):
        body = events_body({"writeKey": wk})
        r = h.req(t, "POST", "/v1/events", bearer(f["wk1"]), body)
        d = backend(r, t)
        assert_body_passed(d, body)
        assert_identity(d, wk_identity(h), forwarded=fwd(t))


@each_target("ingest.ok body writeKey (text/plain)")
def _(h, t):
    f = h.f
    bodies = [events_body({"writeKey": f["wk1"]}),
              ('{ "batch" : [ {"writeKey":"nested"} ],\n "writeKey" : "%s" }' % f["wk1"]).encode(),
              ('{"writeKey":"%s"}' % f["wk1"]).encode()]
    for body in bodies:
        r = h.req(t, "POST", "/v1/events", [("Content-Type", "text/plain"), ("Origin", ORIGIN)],
                  body)
        d = backend(r, t)
        assert_body_passed(d, body)
        assert_identity(d, wk_identity(h), forwarded=fwd(t))
        assert_cors(r, ORIGIN)


@each_target("ingest.ok body writeKey, chunked request body")
def _(h, t):
    f = h.f
    body = events_body({"writeKey": f["wk1"]}, size=200000)
    r = h.req(t, "POST", "/v1/events", [("Content-Type", "text/plain")], body, chunked=True,
              chunk_size=7000)
    d = backend(r, t)
    assert_body_passed(d, body)
    assert_identity(d, wk_identity(h), forwarded=fwd(t))


@each_target("ingest.ok write key header, chunked request body")
def _(h, t):
    f = h.f
    body = events_body(size=300001)
    r = h.req(t, "POST", "/v1/events/track", bearer(f["wk1"]), body, chunked=True,
              chunk_size=65536)
    assert_body_passed(backend(r, t), body)


@each_target("ingest.ok gzip body with body writeKey; backend gets the gzip bytes")
def _(h, t):
    f = h.f
    plain = events_body({"writeKey": f["wk1"]}, size=100000)
    body = gzip.compress(plain)
    r = h.req(t, "POST", "/v1/events", [("Content-Type", "text/plain"),
                                         ("Content-Encoding", "gzip")], body)
    d = backend(r, t)
    assert_body_passed(d, body)
    assert_identity(d, wk_identity(h), forwarded=fwd(t))
    if t == "proxy":
        eq(hdrs(d, "Content-Encoding"), ["gzip"], "Content-Encoding at the backend")
    # chunked too
    r = h.req(t, "POST", "/v1/events", [("Content-Type", "text/plain"),
                                         ("Content-Encoding", "gzip")], body, chunked=True,
              chunk_size=1000)
    assert_body_passed(backend(r, t), body)


@each_target("ingest.ok gzip body with write key header")
def _(h, t):
    f = h.f
    body = gzip.compress(events_body(size=50000))
    r = h.req(t, "POST", "/v1/events/page", bearer(f["wk1"]) + [("Content-Encoding", "gzip")], body)
    assert_body_passed(backend(r, t), body)


@each_target("ingest.ok 511999 and 512000-byte bodies pass intact")
def _(h, t):
    f = h.f
    for size in (511999, LIMIT):
        body = events_body({"writeKey": f["wk1"]}, size=size)
        r = h.req(t, "POST", "/v1/events", [("Content-Type", "text/plain")], body)
        d = backend(r, t)
        assert_body_passed(d, body)
        body = events_body(size=size)
        r = h.req(t, "POST", "/v1/events/track", bearer(f["wk1"]), body, chunked=True)
        assert_body_passed(backend(r, t), body)


@each_target("ingest.ok API key with connectionId")
def _(h, t):
    f = h.f
    body = events_body({"connectionId": f["conn1"]})
    r = h.req(t, "POST", "/v1/events", bearer(f["k1"]) + ws(f["ws1a"]), body)
    d = backend(r, t)
    assert_body_passed(d, body)
    assert_identity(d, identity("api", f["k1_id"], f["org1"], f["ws1a"], f["conn1"]),
                    forwarded=fwd(t))
    r = h.req(t, "POST", "/v1/events/track", bearer(f["k1r"]), body)
    assert_identity(backend(r, t), identity("api", f["k1r_id"], f["org1"], f["ws1a"], f["conn1"]),
                    forwarded=fwd(t))
    body = events_body({"connectionId": f["conn1b"]})
    r = h.req(t, "POST", "/v1/events/identify", bearer(f["k1"]), body)
    assert_identity(backend(r, t), identity("api", f["k1_id"], f["org1"], ANY, f["conn1b"]),
                    forwarded=fwd(t))


# --------------------------------------------------------------------------------------
# §6.2 rows, in order


@each_target("ingest.6.2.01 Authorization more than once -> 400")
def _(h, t):
    f = h.f
    for hd in ([("Authorization", "Bearer " + f["wk1"])] * 2,
               [("Authorization", "Basic x"), ("Authorization", "Basic y")],
               [("Authorization", "Bearer %s, Bearer %s" % (f["wk1"], f["wk1"]))]):
        r = h.req(t, "POST", "/v1/events", hd + [("Origin", ORIGIN)],
                  events_body({"writeKey": f["wk1"]}))
        ingest_error(r, 400, "BadRequest", MULTIPLE, origin=ORIGIN)


@each_target("ingest.6.2.02 invalid Bearer value -> 400")
def _(h, t):
    f = h.f
    for v in ("", "Basic dXNlcjpwYXNz", "Bearerx", "Bearer:x", "Bearer", "Bearer ",
              "Bearer" + f["wk1"]):
        r = h.req(t, "POST", "/v1/events/track", [("Authorization", v)], events_body())
        try:
            ingest_error(r, 400, "BadRequest", INVALID_BEARER)
        except Failure as e:
            raise Failure("Authorization %r: %s" % (v, e))


@each_target("ingest.6.2.03 api_ token malformed -> 400")
def _(h, t):
    for label, tok in malformed_tokens().items():
        if " " in tok:
            continue
        h.secret(tok)
        r = h.req(t, "POST", "/v1/events", bearer(tok), events_body())
        try:
            ingest_error(r, 400, "BadRequest", API_MALFORMED_ING)
        except Failure as e:
            raise Failure("%s: %s" % (label, e))


@each_target("ingest.6.2.04 api_ token unknown -> 401")
def _(h, t):
    tok = h.secret(random_api_token())
    r = h.req(t, "POST", "/v1/events", bearer(tok) + [("Origin", ORIGIN)],
              events_body({"connectionId": h.f["conn1"]}))
    ingest_error(r, 401, "Unauthorized", API_UNKNOWN, auth="invalid", origin=ORIGIN)


@each_target("ingest.6.2.05 api_ token, organization disabled -> 422")
def _(h, t):
    f = h.f
    r = h.req(t, "POST", "/v1/events", bearer(f["k3"]) + ws("x") + ws("y"),
              events_body({"connectionId": f["conn3"]}))
    ingest_error(r, 422, "OrganizationDisabled", "organization %s is disabled" % f["org3"])


@each_target("ingest.6.2.06 api_ token, Krenalis-Workspace rows")
def _(h, t):
    f = h.f
    body = events_body({"connectionId": f["conn1"]})
    r = h.req(t, "POST", "/v1/events", bearer(f["k1"]) + ws(f["ws1a"]) + ws(f["ws1a"]), body)
    ingest_error(r, 400, "BadRequest", WS_MULTIPLE)
    r = h.req(t, "POST", "/v1/events", bearer(f["k1r"]) + ws(f["ws1a"]), body)
    ingest_error(r, 400, "BadRequest", WS_RESTRICTED)
    for v in ("", "abc", f["ws1a"] + "x"):
        r = h.req(t, "POST", "/v1/events", bearer(f["k1"]) + ws(v), body)
        ingest_error(r, 400, "BadRequest", WS_INVALID)
    r = h.req(t, "POST", "/v1/events", bearer(f["k1"]) + ws(f["ws2"]), body)
    ingest_error(r, 404, "NotFound", "workspace %s does not exist" % f["ws2"])


@each_target("ingest.6.2.07 api_ token without connectionId -> 400")
def _(h, t):
    f = h.f
    for body in (events_body(), b'{"batch":[{"connectionId":"%s"}]}' % f["conn1"].encode()):
        r = h.req(t, "POST", "/v1/events", bearer(f["k1"]), body)
        ingest_error(r, 400, "BadRequest", NO_CONN)


@each_target("ingest.6.2.08 api_ token, connection not in organization/workspace -> 422")
def _(h, t):
    f = h.f
    cases = [(bearer(f["k1"]), f["conn2"]),                       # other organization
             (bearer(f["k1"]), random_id()),                      # unknown
             (bearer(f["k1"]) + ws(f["ws1b"]), f["conn1"]),      # not in the selected workspace
             (bearer(f["k1r"]), f["conn1b"])]                     # restricted to ws1a
    for hd, conn in cases:
        m = h.marker()
        r = h.req(t, "POST", "/v1/events?" + m, hd, events_body({"connectionId": conn}))
        ingest_error(r, 422, "ConnectionNotExist", "connection %s does not exist" % conn)
        eq(h.backend_hits(m), [], "backend hits")


@each_target("ingest.6.2.08 connectionId of 64 characters is named whole; a longer one is "
             "not kept (docs/operations.md)")
def _(h, t):
    # Row 8 names a top-level connectionId string as sent; one over 64 characters (no ID is
    # that long) is not kept and meets row 7, as documented.
    f = h.f
    for n, status, code, msg in ((64, 422, "ConnectionNotExist",
                                  "connection %s does not exist" % ("A" * 64)),
                                 (65, 400, "BadRequest", NO_CONN)):
        m = h.marker()
        body = b'{"connectionId":"%s"}' % (b"A" * n)
        r = h.req(t, "POST", "/v1/events?" + m, bearer(f["k1"]), body)
        try:
            ingest_error(r, status, code, msg)
        except Failure as e:
            raise Failure("connectionId of %d characters: %s" % (n, e))
        eq(h.backend_hits(m), [], "backend hits")


@each_target("ingest.6.2.09 other token, not a known write key -> 401")
def _(h, t):
    org_like = h.secret("org_" + random_alnum(43))
    for tok in (h.secret(random_alnum(32)), "abc", org_like, h.f["wk1"][:31],
                h.f["wk1"] + "x"):
        r = h.req(t, "POST", "/v1/events/track", bearer(tok) + [("Origin", ORIGIN)],
                  events_body())
        ingest_error(r, 401, "Unauthorized", WK_INVALID, auth="invalid", origin=ORIGIN)


@each_target("ingest.6.2.10 write key of a disabled organization -> 503")
def _(h, t):
    f = h.f
    r = h.req(t, "POST", "/v1/events", bearer(f["wk3"]), events_body())
    ingest_error(r, 503, "ServiceUnavailable", "organization is disabled")
    r = h.req(t, "POST", "/v1/events", [("Content-Type", "text/plain")],
              events_body({"writeKey": f["wk3"]}))
    ingest_error(r, 503, "ServiceUnavailable", "organization is disabled")


@each_target("ingest.6.2.11 no header, no body writeKey -> 401")
def _(h, t):
    f = h.f
    for body in (b"", b"{}", b"not json", b"[1]", b'"writeKey"', events_body(),
                 b'{"batch":[{"writeKey":"%s"}]}' % f["wk1"].encode()):
        r = h.req(t, "POST", "/v1/events", [("Content-Type", "text/plain")], body)
        try:
            ingest_error(r, 401, "Unauthorized", NO_AUTH, auth="realm")
        except Failure as e:
            raise Failure("body %r: %s" % (body[:40], e))
    # a body writeKey counts only on POST /v1/events
    for p in EVENT_PATHS[1:]:
        r = h.req(t, "POST", p, [("Origin", ORIGIN)], events_body({"writeKey": f["wk1"]}))
        ingest_error(r, 401, "Unauthorized", NO_AUTH, auth="realm", origin=ORIGIN)


@each_target("ingest.6.2.12 body writeKey not a string / empty -> 400")
def _(h, t):
    for v in ("5", "true", '{"k":"v"}', '["x"]', "1.5"):
        r = h.req(t, "POST", "/v1/events", [], b'{"writeKey":%s}' % v.encode())
        try:
            ingest_error(r, 400, "BadRequest", WK_NOT_STRING)
        except Failure as e:
            raise Failure("writeKey %s: %s" % (v, e))
    r = h.req(t, "POST", "/v1/events", [], b'{"writeKey":""}')
    ingest_error(r, 400, "BadRequest", WK_EMPTY)


@each_target("ingest.6.2.13 body writeKey unknown -> 401")
def _(h, t):
    for wk in (h.secret(random_alnum(32)), "abc", h.f["k1"]):
        r = h.req(t, "POST", "/v1/events", [("Content-Type", "text/plain")],
                  events_body({"writeKey": wk}))
        ingest_error(r, 401, "Unauthorized", WK_BODY_UNKNOWN, auth="invalid")


@each_target("ingest.6.2.14 body writeKey and a body connectionId -> 400")
def _(h, t):
    f = h.f
    m = h.marker()
    r = h.req(t, "POST", "/v1/events?" + m, [("Content-Type", "text/plain")],
              events_body({"writeKey": f["wk1"], "connectionId": f["conn1"]}))
    ingest_error(r, 400, "BadRequest", WK_CONN)
    eq(h.backend_hits(m), [], "backend hits")


@each_target("ingest.header write key: body streams untouched, connectionId not checked")
def _(h, t):
    # Issue 3: "with a header write key the body streams to the backend untouched"; the
    # connectionId row of SPEC 6.2 applies when the module reads the body (body writeKey).
    f = h.f
    body = events_body({"connectionId": f["conn1"]})
    r = h.req(t, "POST", "/v1/events", bearer(f["wk1"]), body)
    d = backend(r, t)
    assert_body_passed(d, body)
    assert_identity(d, wk_identity(h), forwarded=fwd(t))


def assert_413(h, r, m):
    eq(r.status, 413, "status" + r.brief())
    eq(h.backend_hits(m), [], "backend hits")


OVER_LIMIT = {
    "Authorization, Content-Length": ("/v1/events/track", True, False, LIMIT + 1),
    "Authorization, chunked": ("/v1/events/track", True, True, LIMIT + 1),
    "body writeKey, Content-Length": ("/v1/events", False, False, LIMIT + 1),
    "body writeKey, chunked": ("/v1/events", False, True, LIMIT + 1),
    "body writeKey, 3x the limit": ("/v1/events", False, False, 3 * LIMIT),
}


def over_limit(name, path, header, chunked, size):
    @each_target("ingest.6.2.15 body over the limit -> 413, backend untouched (%s)" % name)
    def _(h, t):
        f = h.f
        m = h.marker()
        if header:
            hd, body = bearer(f["wk1"]), events_body(size=size)
        else:
            hd, body = [("Content-Type", "text/plain")], events_body({"writeKey": f["wk1"]}, size=size)
        r = h.req(t, "POST", path + "?" + m, hd, body, chunked=chunked)
        assert_413(h, r, m)


for _n, _a in OVER_LIMIT.items():
    over_limit(_n, *_a)


@each_target("ingest.6.2.15 the Authorization rows come before the 413 row")
def _(h, t):
    # SPEC §6: the first row that applies answers; a refused credential is refused as such
    # whatever the Content-Length (an SDK splits a batch on 413 and sends it again).
    f = h.f
    big = events_body(size=LIMIT + 1)
    for label, hd, status, code, msg, auth in (
            ("two Authorization lines", bearer(f["wk1"]) * 2, 400, "BadRequest", MULTIPLE, None),
            ("Basic", [("Authorization", "Basic eDp5")], 400, "BadRequest", INVALID_BEARER, None),
            ("malformed api_", bearer("api_x"), 400, "BadRequest", API_MALFORMED_ING, None),
            ("unknown api_", bearer(h.secret(random_api_token())), 401, "Unauthorized",
             API_UNKNOWN, "invalid"),
            ("unknown write key", bearer(h.secret(random_alnum(32))), 401, "Unauthorized",
             WK_INVALID, "invalid")):
        m = h.marker()
        r = h.req(t, "POST", "/v1/events/track?" + m, hd, big)
        try:
            ingest_error(r, status, code, msg, auth=auth)
        except Failure as e:
            raise Failure("%s: %s" % (label, e))
        eq(h.backend_hits(m), [], "backend hits")


@each_target("ingest.6.2.15 gzip body inflating over the limit -> 413 (body writeKey)")
def _(h, t):
    m = h.marker()
    body = gzip.compress(events_body({"writeKey": h.f["wk1"]}, size=LIMIT + 1000))
    r = h.req(t, "POST", "/v1/events?" + m, [("Content-Encoding", "gzip")], body)
    assert_413(h, r, m)


@each_target("ingest.header write key: gzip body passed as sent, not inflated")
def _(h, t):
    # The module does not read (or inflate) a body it does not need: the backend gets the
    # compressed bytes, even when they would inflate past KrenalisAuthMaxBodySize.
    body = gzip.compress(events_body(size=LIMIT + 1000))
    r = h.req(t, "POST", "/v1/events/track", bearer(h.f["wk1"]) + [("Content-Encoding", "gzip")],
              body)
    d = backend(r, t)
    assert_body_passed(d, body)


@each_target("ingest.6.2.15 413 carries the CORS headers")
def _(h, t):
    m = h.marker()
    r = h.req(t, "POST", "/v1/events?" + m, bearer(h.f["wk1"]) + [("Origin", ORIGIN)],
              events_body(size=LIMIT + 1))
    assert_413(h, r, m)
    assert_cors(r, ORIGIN)


@each_target("ingest.MaxBodySize 1000")
def _(h, t):
    f = h.f
    body = events_body(size=1000)
    r = h.req(t, "POST", "/v1/ingest-small/x", bearer(f["wk1"]), body)
    d = backend(r, t)
    assert_body_passed(d, body)
    assert_identity(d, wk_identity(h), forwarded=fwd(t))
    m = h.marker()
    for chunked in (False, True):
        r = h.req(t, "POST", "/v1/ingest-small/x?" + m, bearer(f["wk1"]),
                  events_body(size=1001), chunked=chunked, chunk_size=100)
        assert_413(h, r, m)


# --------------------------------------------------------------------------------------
# classification


@each_target("ingest.classify non-ingestion routes are api endpoints")
def _(h, t):
    f = h.f
    for m, p in (("GET", "/v1/events"), ("PUT", "/v1/events"), ("POST", "/v1/events/bogus"),
                 ("POST", "/v1/events/track/x"), ("POST", "/v1/eventsx"),
                 ("POST", "/v1/items"), ("GET", "/v1/events/track")):
        r = h.req(t, m, p, bearer(f["wk1"]) + [("Origin", ORIGIN)], events_body())
        try:
            assert_error(r, 400, "BadRequest", NO_PREFIX)
        except Failure as e:
            raise Failure("%s %s: %s" % (m, p, e))


@each_target("ingest.classify api endpoints get no CORS headers")
def _(h, t):
    f = h.f
    r = h.req(t, "GET", "/v1/items", bearer(f["k1"]) + [("Origin", ORIGIN)])
    backend(r, t)
    assert_no_cors(r)
    eq(r.all("Vary"), [], "Vary on an api endpoint")
    r = h.req(t, "GET", "/v1/items", [("Origin", ORIGIN)])
    assert_error(r, 401, "Unauthorized",
                 "Authorization header with the API key is not present in the request",
                 auth="realm")
    eq(r.all("Vary"), [], "Vary on an api endpoint")
    r = h.req(t, "OPTIONS", "/v1/items", [("Origin", ORIGIN),
                                          ("Access-Control-Request-Method", "POST")])
    eq(r.status, 401, "status of OPTIONS on an api endpoint" + r.brief())
    assert_no_cors(r)


# --------------------------------------------------------------------------------------
# CORS preflight (§9)


def assert_preflight(h, r, origin, methods, max_age, m):
    eq(r.status, 204, "status" + r.brief())
    assert_cors(r, origin)
    eq(r.one("Access-Control-Allow-Methods"), methods, "Access-Control-Allow-Methods")
    eq(r.one("Access-Control-Allow-Headers"), "Authorization, Content-Type",
       "Access-Control-Allow-Headers")
    eq(r.one("Access-Control-Max-Age"), str(max_age), "Access-Control-Max-Age")
    eq(r.body, b"", "body")
    eq(h.backend_hits(m), [], "backend hits")


@each_target("cors.preflight ingestion paths -> 204")
def _(h, t):
    for p in EVENT_PATHS:
        m = h.marker()
        r = h.req(t, "OPTIONS", p + "?" + m, [("Origin", ORIGIN),
                                              ("Access-Control-Request-Method", "POST"),
                                              ("Access-Control-Request-Headers",
                                               "authorization, content-type")])
        assert_preflight(h, r, ORIGIN, "POST", 86400, m)


@each_target("cors.preflight ignores credentials")
def _(h, t):
    m = h.marker()
    r = h.req(t, "OPTIONS", "/v1/events?" + m, [("Origin", ORIGIN),
                                                ("Access-Control-Request-Method", "POST"),
                                                ("Authorization", "Basic x"),
                                                ("Authorization", "Bearer y")])
    assert_preflight(h, r, ORIGIN, "POST", 86400, m)


@each_target("cors.preflight settings -> 204 GET 900")
def _(h, t):
    m = h.marker()
    r = h.req(t, "OPTIONS", "/v1/events/settings/%s?%s" % (h.f["wk1"], m),
              [("Origin", ORIGIN), ("Access-Control-Request-Method", "GET")])
    assert_preflight(h, r, ORIGIN, "GET", 900, m)


@each_target("cors.allow-origin list")
def _(h, t):
    f = h.f
    body = events_body()
    for origin in ("https://a.example", "https://b.example"):
        r = h.req(t, "POST", "/v1/ingest-list/x", bearer(f["wk1"]) + [("Origin", origin)], body)
        assert_identity(backend(r, t), wk_identity(h), forwarded=fwd(t))
        assert_cors(r, origin)
        r = h.req(t, "POST", "/v1/ingest-list/x", bearer("nope") + [("Origin", origin)], body)
        ingest_error(r, 401, "Unauthorized", WK_INVALID, auth="invalid", origin=origin)
    r = h.req(t, "POST", "/v1/ingest-list/x", bearer(f["wk1"]) + [("Origin", "https://evil.example")],
              body)
    backend(r, t)
    check("https://evil.example" not in r.all("Access-Control-Allow-Origin"),
          "a disallowed origin was reflected" + r.brief())
    check(not r.all("Access-Control-Allow-Credentials"), "Allow-Credentials" + r.brief())


# --------------------------------------------------------------------------------------
# settings (§6.3)


@each_target("settings.ok known write key passed on")
def _(h, t):
    f = h.f
    for wk, which in ((f["wk1"], "1"), (f["wk1b"], "1b"), (f["wk3"], "3")):  # wk3: disabled org
        r = h.req(t, "GET", "/v1/events/settings/" + wk, [("Origin", ORIGIN)])
        d = backend(r, t)
        assert_identity(d, wk_identity(h, which), forwarded=fwd(t))
        assert_cors(r, ORIGIN)
    r = h.req(t, "GET", "/v1/events/settings/%s?cors=1" % f["wk1"])
    backend(r, t)
    assert_cors(r, None)


@each_target("settings.404 empty key or key with /")
def _(h, t):
    f = h.f
    for p in ("/v1/events/settings/", "/v1/events/settings/%s/x" % f["wk1"],
              "/v1/events/settings/%s/" % f["wk1"],
              "/v1/events/settings/a/b", "/v1/events/settings//"):
        m = h.marker()
        r = h.req(t, "GET", p + "?" + m, [("Origin", ORIGIN)])
        try:
            ingest_error(r, 404, "NotFound", "", origin=ORIGIN)
        except Failure as e:
            raise Failure("%s: %s" % (p, e))
        eq(h.backend_hits(m), [], "backend hits")


@each_target("settings.401 unknown key")
def _(h, t):
    for k in (h.secret(random_alnum(32)), "abc", h.secret(random_api_token())):
        m = h.marker()
        r = h.req(t, "GET", "/v1/events/settings/%s?%s" % (k, m))
        ingest_error(r, 401, "Unauthorized", SETTINGS_INVALID, auth="invalid")
        eq(h.backend_hits(m), [], "backend hits")


# --------------------------------------------------------------------------------------
# changes to the store while httpd runs


@each_target("ingest.live write key created, used, deleted")
def _(h, t):
    f = h.f
    d = h.cli("write-key", "create", "--connection", f["conn1b"])
    kid, key = d["id"], d["key"]
    ident = identity("event-write", kid, f["org1"], f["ws1b"], f["conn1b"])
    for _ in range(4):
        r = h.req(t, "POST", "/v1/events", bearer(key), events_body())
        assert_identity(backend(r, t), ident, forwarded=fwd(t))
        r = h.req(t, "POST", "/v1/events", [], events_body({"writeKey": key}))
        assert_identity(backend(r, t), ident, forwarded=fwd(t))
        r = h.req(t, "GET", "/v1/events/settings/" + key)
        assert_identity(backend(r, t), ident, forwarded=fwd(t))
    h.cli("write-key", "delete", "--connection", f["conn1b"], kid)
    for _ in range(4):
        r = h.req(t, "POST", "/v1/events", bearer(key), events_body())
        ingest_error(r, 401, "Unauthorized", WK_INVALID, auth="invalid")
        r = h.req(t, "POST", "/v1/events", [], events_body({"writeKey": key}))
        ingest_error(r, 401, "Unauthorized", WK_BODY_UNKNOWN, auth="invalid")
        r = h.req(t, "GET", "/v1/events/settings/" + key)
        ingest_error(r, 401, "Unauthorized", SETTINGS_INVALID, auth="invalid")
    # the connection's other key still works
    r = h.req(t, "POST", "/v1/events", bearer(f["wk1b"]), events_body())
    assert_identity(backend(r, t), wk_identity(h, "1b"), forwarded=fwd(t))


@each_target("ingest.live organization disabled/enabled, connection removed")
def _(h, t):
    org = h.new_org()
    w = h.new_ws(org)
    conn, key = h.new_conn(w)
    kid = h.write_key_id(conn, key)
    ident = identity("event-write", kid, org, w, conn)
    r = h.req(t, "POST", "/v1/events/track", bearer(key), events_body())
    assert_identity(backend(r, t), ident, forwarded=fwd(t))
    h.cli("organization", "disable", org)
    for _ in range(4):
        r = h.req(t, "POST", "/v1/events/track", bearer(key), events_body())
        ingest_error(r, 503, "ServiceUnavailable", "organization is disabled")
        r = h.req(t, "GET", "/v1/events/settings/" + key)
        assert_identity(backend(r, t), ident, forwarded=fwd(t))
    h.cli("organization", "enable", org)
    r = h.req(t, "POST", "/v1/events/track", bearer(key), events_body())
    assert_identity(backend(r, t), ident, forwarded=fwd(t))
    h.cli("connection", "remove", conn)
    for _ in range(4):
        r = h.req(t, "POST", "/v1/events/track", bearer(key), events_body())
        ingest_error(r, 401, "Unauthorized", WK_INVALID, auth="invalid")
        r = h.req(t, "GET", "/v1/events/settings/" + key)
        ingest_error(r, 401, "Unauthorized", SETTINGS_INVALID, auth="invalid")


@each_target("ingest.live API key ingestion: connection removed -> 422")
def _(h, t):
    f = h.f
    conn, key = h.new_conn(f["ws1a"])
    body = events_body({"connectionId": conn})
    r = h.req(t, "POST", "/v1/events", bearer(f["k1"]) + ws(f["ws1a"]), body)
    assert_identity(backend(r, t), identity("api", f["k1_id"], f["org1"], f["ws1a"], conn),
                    forwarded=fwd(t))
    h.cli("connection", "remove", conn)
    r = h.req(t, "POST", "/v1/events", bearer(f["k1"]) + ws(f["ws1a"]), body)
    ingest_error(r, 422, "ConnectionNotExist", "connection %s does not exist" % conn)
