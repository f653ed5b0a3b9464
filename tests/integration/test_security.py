"""Issue 12: the backend sees exactly what the module decided on, under every setting an operator
may choose. Each test here failed on the module before the fix (docs/security.md lists each
attack and the answer).

The tests run against a second httpd, "sec", with the settings that opened the holes:
MergeSlashes Off, AllowEncodedSlashes NoDecode with `nocanon` on the proxy, MergeTrailers On,
HTTP/2 (h2c upgrade and prior knowledge), SSI, and ProxyErrorOverride with an ErrorDocument.
"""
import json
import socket
import subprocess
from pathlib import Path

from harness import (assert_cors, assert_error, assert_identity, backend, check, eq, hdrs,
                     identity, parse_response, test)
from test_api import NO_ORG_PREFIX, MULTIPLE, NOT_EXIST, NO_PREFIX, TARGETS, bearer, each_target
from test_ingestion import (NO_CONN, WK_CONN, WK_INVALID, WK_NOT_STRING, WS_MULTIPLE, ORIGIN,
                            wk_identity)

SETTINGS = """\
LoadModule include_module /usr/lib/apache2/modules/mod_include.so
LoadModule http2_module /usr/lib/apache2/modules/mod_http2.so
Protocols h2c http/1.1
MergeSlashes Off
AllowEncodedSlashes NoDecode
MergeTrailers On
LimitRequestFields 20000
"""

CGI_EXTRA = """\
    AllowEncodedSlashes NoDecode
    Alias /ssi/ "{root}/ssi/"
    <Location /ssi/>
        AuthType Krenalis
        Require valid-user
    </Location>
"""

PROXY_EXTRA = """\
    AllowEncodedSlashes NoDecode
    Alias /errdoc.json "{root}/ssi/errdoc.json"
    <Location /v1/events>
        ProxyErrorOverride On
        ErrorDocument 404 /v1/after-error
    </Location>
    <Location /v1/events/track>
        ErrorDocument 404 /errdoc.json
        ErrorDocument 413 /errdoc.json
    </Location>
"""
ERRDOC = b'{"error":"from the ErrorDocument"}\n'

# After the module's /v1/ place of the proxy host (a Require there replaces valid-user): a
# credential that a Require provider denies, and an ErrorDocument outside the module's places.
PROXY_TAIL = """\
    <Location /v1/nopass-authz/>
        KrenalisAuthEndpoint ingestion
        KrenalisAuthPassAuthorization Off
        Require krenalis-key-type api
        ErrorDocument 401 /open/error-page
    </Location>
    <Location /v1/nopass-authz-api/>
        KrenalisAuthPassAuthorization Off
        Require krenalis-key-type event-write
        ErrorDocument 401 /open/error-page
    </Location>
"""


SSI_PAGE = """<p>page</p>
<!--#config errmsg="[include refused]" -->
<!--#include virtual="/v1/organizations" -->
<!--#include virtual="/v1/Organizations/x" -->
<!--#include virtual="/v1/users" -->
"""


def sec_server(h):
    """The "sec" httpd (started once per run)."""
    srv = h.servers.get("sec")
    if srv is not None and srv.proc is not None:
        return srv
    ssi = h.root / "ssi"
    ssi.mkdir(exist_ok=True)
    ssi.chmod(0o755)
    srv = h.httpd("sec", global_extra=SETTINGS + '<Directory "%s">\n    Options +Includes\n'
                  '    AddOutputFilter INCLUDES .shtml\n    Require all granted\n</Directory>\n'
                  % ssi)
    text = srv.conf.read_text()
    text = text.replace("    ServerName cgi.test\n",
                        "    ServerName cgi.test\n" + CGI_EXTRA.format(root=h.root), 1)
    text = text.replace("    ServerName proxy.test\n",
                        "    ServerName proxy.test\n" + PROXY_EXTRA.format(root=h.root), 1)
    (ssi / "errdoc.json").write_bytes(ERRDOC)
    pp = "ProxyPass /v1/ http://127.0.0.1:%d/v1/" % h.backend_port
    check(pp in text, "ProxyPass line not found in the generated configuration")
    text = text.replace(pp, pp + " nocanon", 1)
    end = text.rindex("</VirtualHost>")  # the proxy host's, the last one
    text = text[:end] + PROXY_TAIL + text[end:]
    srv.conf.write_text(text)
    srv.start()
    return srv


def not_reached(h, m):
    eq(h.backend_hits(m), [], "backend hits for %s" % m)


# --------------------------------------------------------------------------------------
# 1. Connection: a client cannot make mod_proxy drop the identity or the credential


def connection_kept(h, restricted, selected):
    """Each Connection value in restricted, sent with a workspace-restricted key, and selected,
    sent with an unrestricted key and a Krenalis-Workspace header: the backend still gets the
    identity, the credential and the workspace the module decided on."""
    f = h.f
    srv = sec_server(h)
    # ", close" beside the tokens under test: the answer then ends the connection, instead of
    # keep-alive holding the test until the server's timeout.
    for conn in restricted:
        r = srv.req("proxy", "GET", "/v1/fwd/x",
                    bearer(f["k1r"]) + [("Connection", conn + ", close")])
        d = backend(r, "proxy")
        assert_identity(d, identity("api", f["k1r_id"], f["org1"], f["ws1a"]), forwarded=True)
        eq(hdrs(d, "Authorization"), ["Bearer " + f["k1r"]], "Authorization at the backend")
    r = srv.req("proxy", "GET", "/v1/fwd/x", bearer(f["k1"]) + [
        ("Krenalis-Workspace", f["ws1b"]), ("Connection", selected + ", close")])
    d = backend(r, "proxy")
    assert_identity(d, identity("api", f["k1_id"], f["org1"], f["ws1b"]), forwarded=True)
    eq(hdrs(d, "Krenalis-Workspace"), [f["ws1b"]], "Krenalis-Workspace at the backend")
    return srv


@test("sec.1 Connection naming the identity headers does not strip them [proxy]")
def _(h):
    connection_kept(h, ("keep-alive, Krenalis-Auth-Workspace",
                        "Krenalis-Auth-Key-Type, Krenalis-Auth-Organization, "
                        "Krenalis-Auth-Workspace, Krenalis-Auth-Connection, Krenalis-Auth-Key-Id, "
                        "Authorization, Krenalis-Workspace, close",
                        "KRENALIS-AUTH-WORKSPACE,krenalis_auth_key_id , authorization"),
                    "Krenalis-Workspace")


@test("sec.1 Connection tokens separated by spaces, as mod_proxy splits them [proxy]")
def _(h):
    """mod_proxy ends a Connection token at a space or tab as well as at a comma: names after a
    space are hop-by-hop to it too."""
    f = h.f
    srv = connection_kept(h, ("close Krenalis-Auth-Workspace", "close\tKrenalis-Auth-Workspace",
                              "close, x Krenalis-Auth-Workspace Authorization",
                              "close  krenalis_auth_workspace ,Authorization"),
                          "close Krenalis-Workspace")
    # the other tokens still name hop-by-hop headers
    r = srv.req("proxy", "GET", "/v1/fwd/x", bearer(f["k1"]) + [
        ("X-Hop", "1"), ("Connection", "Krenalis-Auth-Key-Id X-Hop close")])
    d = backend(r, "proxy")
    eq(hdrs(d, "X-Hop"), [], "a header the client named hop-by-hop")
    assert_identity(d, identity("api", f["k1_id"], f["org1"]), forwarded=True)


@test("sec.1 Connection tokens other than the protected names still work [proxy]")
def _(h):
    f = h.f
    srv = sec_server(h)
    r = srv.req("proxy", "GET", "/v1/fwd/x", bearer(f["k1"]) + [
        ("X-Hop", "1"), ("Connection", "X-Hop, Krenalis-Auth-Key-Id, close")])
    d = backend(r, "proxy")
    eq(hdrs(d, "X-Hop"), [], "a header the client named hop-by-hop")
    assert_identity(d, identity("api", f["k1_id"], f["org1"]), forwarded=True)


# --------------------------------------------------------------------------------------
# 2. One canonical path: no spelling of the Organizations API passes as api

NEAR_MISSES = ("/v1//organizations", "/v1///organizations/x", "/v1/organizations%2Fabc",
               "/v1/organizations;x", "/v1/organizations%3bx", "/v1/Organizations",
               "/v1/ORGANIZATIONS", "/v1/organizations.", "/v1/organizations%2e",
               "/v1/organizations%20", "/v1/organizations%09", "/v1/organizations~",
               "/v1/organizations\\x", "/v1/organizations%23x", "/v1/organizations%3fx",
               "/v1/%6frganizations", "/v1/organizations%252Fabc", "/v1/x/%2e%2e/organizations",
               "/v1/x/..;/organizations")


def orgs_spellings(name, key):
    @each_target(name)
    def _(h, t):
        f = h.f
        srv = sec_server(h)
        tok = f[key]
        for p in NEAR_MISSES:
            m = h.marker()
            r = srv.req(t, "GET", p + "?m=" + m, bearer(tok))
            try:
                assert_error(r, 400, "BadRequest", NO_ORG_PREFIX)
            except Exception as e:
                raise type(e)("%s: %s" % (p, e))
            not_reached(h, m)


orgs_spellings("sec.2 no spelling of /v1/organizations lets an API key through", "k1")
orgs_spellings("sec.2 no spelling of /v1/organizations lets a restricted key through", "k1r")


@each_target("sec.2 paths that are ingestion only once normalized refuse write keys")
def _(h, t):
    f = h.f
    srv = sec_server(h)
    for p in ("/v1//events", "/v1/events/", "/v1/Events", "/v1/events%2Ftrack", "/v1/events;x"):
        m = h.marker()
        r = srv.req(t, "POST", p + "?m=" + m, bearer(f["wk1"]), b"{}")
        try:
            assert_error(r, 401, "Unauthorized", WK_INVALID, auth="invalid", cors=True)
        except Exception as e:
            raise type(e)("%s: %s" % (p, e))
        not_reached(h, m)
        # an API key meets the ingestion rules there: connectionId required
        r = srv.req(t, "POST", p + "?m=" + m, bearer(f["k1"]), b"{}")
        assert_error(r, 400, "BadRequest", NO_CONN, cors=True)
        not_reached(h, m)


# Dot-segment look-alikes below /v1/organizations: no backend resolves them (Apache has already
# resolved the real "." and ".." segments of r->uri, Go's ServeMux cleans only literal ones and
# matches a segment like "..;x" or "%2e%2e" as a {id}), so they stay below the Organizations API.
DOT_LOOKALIKES = ("/v1/organizations/..;x", "/v1/organizations/..%3bx", "/v1/organizations/..%20",
                  "/v1/organizations/..%09", "/v1/organizations/..%5cx",
                  "/v1/organizations/..\\x", "/v1/organizations/%252e%252e",
                  "/v1/organizations/%252e%252e/x", "/v1/organizations/x/..%252f..%252fy",
                  "/v1/organizations/..;/..;/users")


@each_target("sec.2 dot-segment look-alikes below /v1/organizations stay the Organizations API")
def _(h, t):
    f = h.f
    for p in DOT_LOOKALIKES:
        m = h.marker()
        r = h.req(t, "GET", p + "?m=" + m, bearer(f["k1"]))
        try:
            assert_error(r, 400, "BadRequest", NO_ORG_PREFIX)
        except Exception as e:
            raise type(e)("%s: %s" % (p, e))
        not_reached(h, m)


@test("sec.2 with nocanon, encoded dot segments below /v1/organizations stay it [proxy]")
def _(h):
    # Apache resolves "%2e%2e" in r->uri, but `nocanon` forwards the path as sent, and Go's
    # ServeMux (1.22+) matches "%2e%2e" as a segment of its own: the Organizations API.
    f = h.f
    srv = sec_server(h)
    for p in ("/v1/organizations/%2e%2e/x", "/v1/organizations/.%2E", "/v1/organizations/%2E%2e",
              "/v1/organizations/x/%2e%2e/%2e%2e/users"):
        m = h.marker()
        r = srv.req("proxy", "GET", p + "?m=" + m, bearer(f["k1"]))
        try:
            assert_error(r, 400, "BadRequest", NO_ORG_PREFIX)
        except Exception as e:
            raise type(e)("%s: %s" % (p, e))
        not_reached(h, m)


def enc_server(h):
    """The "enc" httpd: AllowEncodedSlashes On (decode) with `nocanon` on the proxy."""
    srv = h.servers.get("enc")
    if srv is not None and srv.proc is not None:
        return srv
    srv = h.httpd("enc", global_extra="AllowEncodedSlashes On\n")
    text = srv.conf.read_text()
    for name in ("cgi.test", "proxy.test"):
        text = text.replace("    ServerName %s\n" % name,
                            "    ServerName %s\n    AllowEncodedSlashes On\n" % name, 1)
    pp = "ProxyPass /v1/ http://127.0.0.1:%d/v1/" % h.backend_port
    check(pp in text, "ProxyPass line not found in the generated configuration")
    text = text.replace(pp, pp + " nocanon", 1)
    srv.conf.write_text(text)
    srv.start()
    return srv


@test("sec.2 with nocanon, a write key is good only on the exact path as sent [proxy]")
def _(h):
    # AllowEncodedSlashes On decodes %2F in r->uri, which then reads as the exact path, but
    # `nocanon` forwards "/v1/events%2Ftrack": one segment "events/track" to Go's ServeMux
    # (1.22+), not the ingestion route.
    f = h.f
    srv = enc_server(h)
    for p in ("/v1/events%2Ftrack", "/v1/events%2ftrack"):
        m = h.marker()
        r = srv.req("proxy", "POST", p + "?m=" + m, bearer(f["wk1"]), b"{}")
        try:
            assert_error(r, 401, "Unauthorized", WK_INVALID, auth="invalid", cors=True)
        except Exception as e:
            raise type(e)("%s: %s" % (p, e))
        not_reached(h, m)
    for p in ("/v1/events%2Fsettings%2F", "/v1/events/settings%2F"):
        m = h.marker()
        r = srv.req("proxy", "GET", p + f["wk1"] + "?m=" + m)
        try:
            assert_error(r, 404, "NotFound", "", cors=True)
        except Exception as e:
            raise type(e)("%s: %s" % (p, e))
        not_reached(h, m)
    # the exact paths keep working there
    r = srv.req("proxy", "POST", "/v1/events/track", bearer(f["wk1"]), b"{}")
    eq(r.status, 200, "write key on /v1/events/track" + r.brief())


@each_target("sec.2 the plain paths keep working under MergeSlashes Off")
def _(h, t):
    f = h.f
    srv = sec_server(h)
    d = backend(srv.req(t, "GET", "/v1/users", bearer(f["k1"])), t)
    assert_identity(d, identity("api", f["k1_id"], f["org1"]), forwarded=False)
    r = srv.req(t, "POST", "/v1/events", bearer(f["wk1"]), b"{}")
    eq(r.status, 200, "write key on /v1/events" + r.brief())


# --------------------------------------------------------------------------------------
# 3. Trailers (MergeTrailers On) neither spoof the identity nor bring a second credential


def chunked_with_trailers(port, path, auth, body, trailers):
    lines = ["POST %s HTTP/1.1" % path, "Host: 127.0.0.1:%d" % port, "Authorization: " + auth,
             "Content-Type: application/json", "Transfer-Encoding: chunked",
             "Connection: close"]
    data = ("\r\n".join(lines) + "\r\n\r\n").encode()
    data += b"%x\r\n%s\r\n0\r\n" % (len(body), body)
    data += "".join("%s: %s\r\n" % kv for kv in trailers).encode() + b"\r\n"
    s = socket.create_connection(("127.0.0.1", port), timeout=20)
    try:
        s.sendall(data)
        chunks = []
        while True:
            b = s.recv(65536)
            if not b:
                break
            chunks.append(b)
    finally:
        s.close()
    return parse_response(b"".join(chunks))


SPOOF_TRAILERS = [("Krenalis-Auth-Key-Type", "organizations"),
                  ("Krenalis-Auth-Organization", "AAAAAAAAAAAA"),
                  ("krenalis_auth_workspace", "AAAAAAAAAAAA")]


@each_target("sec.3 identity trailers never reach the backend (MergeTrailers On)")
def _(h, t):
    f = h.f
    srv = sec_server(h)
    r = chunked_with_trailers(srv.port(t), "/v1/events", "Bearer " + f["wk1"], b'{"a":1}',
                              SPOOF_TRAILERS)
    d = backend(r, t)
    assert_identity(d, wk_identity(h), forwarded=(t == "proxy"))
    # an API key whose decision read the body (connectionId)
    body = json.dumps({"connectionId": f["conn1"]}).encode()
    r = chunked_with_trailers(srv.port(t), "/v1/events", "Bearer " + f["k1"], body,
                              SPOOF_TRAILERS)
    d = backend(r, t)
    assert_identity(d, identity("api", f["k1_id"], f["org1"], f["ws1a"], f["conn1"]),
                    forwarded=(t == "proxy"))


@each_target("sec.3 a credential or workspace in the trailers is a second copy: 400")
def _(h, t):
    f = h.f
    srv = sec_server(h)
    body = json.dumps({"connectionId": f["conn1"]}).encode()
    m = h.marker()
    r = chunked_with_trailers(srv.port(t), "/v1/events?m=" + m, "Bearer " + f["k1"], body,
                              [("Krenalis-Workspace", f["ws1b"])])
    assert_error(r, 400, "BadRequest", WS_MULTIPLE, cors=True)
    r = chunked_with_trailers(srv.port(t), "/v1/events?m=" + m, "Bearer " + f["wk1"], b"{}",
                              [("Authorization", "Bearer " + f["k1"])])
    assert_error(r, 400, "BadRequest", MULTIPLE, cors=True)
    not_reached(h, m)


@test("sec.3 a Connection trailer cannot make mod_proxy drop the identity (MergeTrailers On) "
      "[proxy]")
def _(h):
    """MergeTrailers On appends a trailer as a second field of its name, and mod_proxy drops
    the names listed in every Connection field, not only in the first."""
    f = h.f
    srv = sec_server(h)
    names = ("Krenalis-Auth-Key-Type, Krenalis-Auth-Organization, Krenalis-Auth-Workspace, "
             "Krenalis-Auth-Connection, Krenalis-Auth-Key-Id, Authorization")
    r = chunked_with_trailers(srv.port("proxy"), "/v1/events", "Bearer " + f["wk1"], b'{"a":1}',
                              [("Connection", names)])
    d = backend(r, "proxy")
    assert_identity(d, wk_identity(h), forwarded=True)
    eq(hdrs(d, "Authorization"), ["Bearer " + f["wk1"]], "Authorization at the backend")
    # a workspace-restricted API key must not look organization-wide
    body = json.dumps({"connectionId": f["conn1"]}).encode()
    r = chunked_with_trailers(srv.port("proxy"), "/v1/events", "Bearer " + f["k1r"], body,
                              [("Connection", "Krenalis-Auth-Workspace")])
    d = backend(r, "proxy")
    assert_identity(d, identity("api", f["k1r_id"], f["org1"], f["ws1a"], f["conn1"]),
                    forwarded=True)


# --------------------------------------------------------------------------------------
# 4. Internal redirects and subrequests: the target's class is checked again


@test("sec.4 an SSI include of the Organizations API is refused for an API key [cgi]")
def _(h):
    f = h.f
    srv = sec_server(h)
    m = h.marker()  # in the page's name: a subrequest's REQUEST_URI is its main request's
    (h.root / "ssi" / (m + ".shtml")).write_text(SSI_PAGE)
    r = srv.req("cgi", "GET", "/ssi/%s.shtml" % m, bearer(f["k1"]))
    eq(r.status, 200, "status" + r.brief())
    text = r.body.decode()
    eq(text.count("[include refused]"), 2, "refused includes in %r" % text[:600])
    eq(text.count('"PATH_INFO": "/users"'), 1, "the allowed include in %r" % text[:600])
    check("/organizations" not in text, "an Organizations API include ran: %r" % text[:600])
    hits = h.backend_hits(m)
    eq(len(hits), 1, "backend hits (only /v1/users): %r" % hits)
    check('"KRENALIS_KEY_TYPE":"api"' in hits[0], "identity of the allowed include")


@test("sec.4 an ErrorDocument after a write-key ingestion call does not reach an api path [proxy]")
def _(h):
    f = h.f
    srv = sec_server(h)
    m = h.marker()
    r = srv.req("proxy", "POST", "/v1/events?status=404&m=" + m,
                bearer(f["wk1"]) + [("Origin", ORIGIN)], b"{}")
    assert_error(r, 400, "BadRequest", NO_PREFIX, cors=True, origin=ORIGIN)
    hits = h.backend_hits(m)
    eq(len(hits), 1, "backend hits (the ingestion call only): %r" % hits)
    check(hits[0].startswith("POST /v1/events?"), "hit %r" % hits[0])
    # an API key passes on to the ErrorDocument (api to api)
    m = h.marker()
    body = json.dumps({"connectionId": f["conn1"]}).encode()
    r = srv.req("proxy", "POST", "/v1/events?status=404&m=" + m, bearer(f["k1"]), body)
    eq(r.status, 200, "status (the ErrorDocument's, proxied)" + r.brief())
    d = r.json()
    eq(d["path"], "/v1/after-error", "ErrorDocument target")
    assert_identity(d, identity("api", f["k1_id"], f["org1"]), forwarded=False)


@test("sec.4 ErrorDocument outside the module's places keeps the ingestion CORS headers [proxy]")
def _(h):
    """Issue 13's bug: the CORS filters follow the internal redirect of an ErrorDocument, for
    a backend's error and for the module's own (413)."""
    f = h.f
    srv = sec_server(h)
    r = srv.req("proxy", "POST", "/v1/events/track?status=404", bearer(f["wk1"]) +
                [("Origin", ORIGIN)], b"{}")
    eq((r.status, r.body), (404, ERRDOC), "status, body" + r.brief())
    assert_cors(r, ORIGIN)
    r = srv.req("proxy", "POST", "/v1/events/track", bearer(f["wk1"]) +
                [("Origin", ORIGIN), ("Content-Length", "600000")], b"")
    eq((r.status, r.body), (413, ERRDOC), "status, body" + r.brief())
    assert_cors(r, ORIGIN)


@test("sec.4 PassAuthorization Off holds for an ErrorDocument outside the module's places after a "
      "Require denial [proxy]")
def _(h):
    """A Require provider denies before fixups, so the first request never removed
    Authorization: the ErrorDocument's request (outside the module's places, where the
    credential's identity does not fit) must not carry it to its backend either."""
    f = h.f
    srv = sec_server(h)
    for path, tok in (("/v1/nopass-authz/x", f["wk1"]), ("/v1/nopass-authz-api/x", f["k1"])):
        m = h.marker()
        r = srv.req("proxy", "POST", path + "?m=" + m, bearer(tok), b"{}")
        d = r.json()
        eq(d.get("path"), "/open/error-page", "the ErrorDocument reached its backend" + r.brief())
        eq(hdrs(d, "Authorization"), [], "Authorization at the ErrorDocument's backend (%s)" % path)


# --------------------------------------------------------------------------------------
# 5, 7. HTTP/2


def curl(args):
    p = subprocess.run(["curl", "-sS", "-o", "-", "-w", "\n%{http_code} %{http_version}"] + args,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    out = p.stdout.decode()
    body, _, tail = out.rpartition("\n")
    return body, tail.split()


@test("sec.5 h2c upgrade, prior knowledge and HTTP/1.1 agree with PassAuthorization Off [cgi]")
def _(h):
    f = h.f
    srv = sec_server(h)
    url = "http://127.0.0.1:%d/v1/nopass/x" % srv.port("cgi")
    # mod_http2 does not offer the h2c upgrade under prefork (the request stays HTTP/1.1)
    upgraded = "2" if h.mpm == "event" else "1.1"
    for mode, want in (("--http1.1", "1.1"), ("--http2", upgraded),
                       ("--http2-prior-knowledge", "2")):
        body, (code, version) = curl([mode, "-H", "Authorization: Bearer " + f["k1"], url])
        eq((code, version), ("200", want), "%s status, protocol; body %r" % (mode, body[:300]))
        d = json.loads(body)
        assert_identity(d, identity("api", f["k1_id"], f["org1"]))
        check("HTTP_AUTHORIZATION" not in d["env"], "%s: Authorization reached the backend" % mode)


def h2_request(port, path, fields):
    """One HTTP/2 request with prior knowledge, the header fields sent exactly as given
    (h2client.py, with Debian's python3-h2): returns (status, body)."""
    p = subprocess.run(["/usr/bin/python3", str(Path(__file__).with_name("h2client.py")),
                        str(port), "GET", path, json.dumps(fields)],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    check(p.returncode == 0, "h2client.py: %s" % p.stderr.decode()[-500:])
    d = json.loads(p.stdout)
    return d["status"], d["body"].encode("latin-1")


@test("sec.7 repeated Authorization / Krenalis-Workspace fields count on h2 and h1 [cgi]")
def _(h):
    """Two fields are "sent more than once" on both protocols, in either order, also when one
    is empty. One exception, outside the module's reach: mod_http2 discards an empty field that
    follows a non-empty one of the same name before any module runs, so neither the module nor
    the backend ever sees it; the backend then gets exactly the one value the module decided on
    (docs/security.md)."""
    f = h.f
    srv = sec_server(h)
    port = srv.port("cgi")
    auth = ("authorization", "Bearer " + f["k1"])
    multi_ws = "request contains multiple Krenalis-Workspace headers"
    cases = (([auth, ("authorization", "Bearer " + f["k1"])], MULTIPLE),
             ([("authorization", ""), auth], MULTIPLE),
             ([auth, ("krenalis-workspace", f["ws1a"]), ("krenalis-workspace", f["ws1b"])],
              multi_ws),
             ([auth, ("krenalis-workspace", ""), ("krenalis-workspace", f["ws1a"])], multi_ws))
    for fields, message in cases:
        m = h.marker()
        status, body = h2_request(port, "/v1/users?m=" + m, [list(x) for x in fields])
        eq((status, body.decode()), (400, json.dumps({"error": {
            "code": "BadRequest", "message": message}}, separators=(",", ":")) + "\n"),
           "h2 %r" % (fields,))
        r = srv.req("cgi", "GET", "/v1/users?m=" + m, [(k.title(), v) for k, v in fields])
        assert_error(r, 400, "BadRequest", message)
        not_reached(h, m)
    # an empty field after a non-empty one: HTTP/1.1 merges it ("v, "), refused as repeated...
    for fields, message in (([auth, ("authorization", "")], MULTIPLE),
                            ([auth, ("krenalis-workspace", f["ws1a"]),
                              ("krenalis-workspace", "")], multi_ws)):
        r = srv.req("cgi", "GET", "/v1/users", [(k.title(), v) for k, v in fields])
        assert_error(r, 400, "BadRequest", message)
    # ...HTTP/2 drops it before the module: the backend gets the one value decided on
    m = h.marker()
    status, body = h2_request(port, "/v1/users?m=" + m,
                              [list(auth), ["krenalis-workspace", f["ws1a"]],
                               ["krenalis-workspace", ""], ["authorization", ""]])
    eq(status, 200, "h2 status %r" % body[:300])
    d = json.loads(body)
    assert_identity(d, identity("api", f["k1_id"], f["org1"], f["ws1a"]))
    eq(d["env"].get("HTTP_AUTHORIZATION"), "Bearer " + f["k1"], "Authorization at the backend")
    eq(d["env"].get("HTTP_KRENALIS_WORKSPACE"), f["ws1a"], "Krenalis-Workspace at the backend")


class H2Session:
    """One HTTP/2 connection (prior knowledge) of h2client.py --session: send() one request
    and wait for its response, batch() several at once, each on its own stream."""

    def __init__(self, port):
        self.p = subprocess.Popen(["/usr/bin/python3", str(Path(__file__).with_name("h2client.py")),
                                   str(port), "--session"], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def _ask(self, obj):
        self.p.stdin.write(json.dumps(obj) + "\n")
        self.p.stdin.flush()
        line = self.p.stdout.readline()
        if line == "":
            check(False, "h2client.py --session ended: %s" % self.p.stderr.read()[-500:])
        return json.loads(line)

    def send(self, path, fields):
        r = self._ask(["GET", path, fields])
        return r["status"], r["body"].encode("latin-1")

    def batch(self, reqs):
        return [(r["status"], r["body"].encode("latin-1"))
                for r in self._ask({"batch": [["GET", p, f] for p, f in reqs]})]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.p.stdin.close()
        try:
            self.p.wait(timeout=20)
        finally:
            if self.p.poll() is None:
                self.p.kill()
                self.p.wait()


@test("sec.5 HTTP/2: the streams of one connection share its memo, which sees every change [cgi]")
def _(h):
    """mod_http2 gives each stream a connection of its own; the module keeps the memo on the
    primary connection instead, under a lock (docs/operations.md): streams of one connection,
    in turn and at once, with two keys, each get their own key's identity, and a key deleted
    between two streams is refused on the next."""
    f = h.f
    port = sec_server(h).port("cgi")
    org = h.new_org()
    kid, tok = h.new_api_key(org)
    mine, other = identity("api", kid, org), identity("api", f["k1_id"], f["org1"])
    auth = [["authorization", "Bearer " + tok]]
    auth1 = [["authorization", "Bearer " + f["k1"]]]
    with H2Session(port) as c:
        for fields, want in ((auth, mine), (auth, mine), (auth1, other), (auth, mine)):
            status, body = c.send("/v1/users", fields)
            eq(status, 200, "h2 status %r" % body[:300])
            assert_identity(json.loads(body), want)
        # 24 streams at once, the two keys in turn: every answer is its own key's.
        reqs = [("/v1/users?n=%d" % i, auth if i % 2 else auth1) for i in range(24)]
        for i, (status, body) in enumerate(c.batch(reqs)):
            eq(status, 200, "h2 stream %d status %r" % (i, body[:300]))
            assert_identity(json.loads(body), mine if i % 2 else other)
        h.cli("api-key", "delete", kid)
        for _ in range(2):
            status, body = c.send("/v1/users", auth)
            eq((status, json.loads(body)["error"]["message"]), (401, NOT_EXIST),
               "deleted key on the same h2 connection")
            status, body = c.send("/v1/users", auth1)
            eq(status, 200, "h2 status %r" % body[:300])
            assert_identity(json.loads(body), other)


# --------------------------------------------------------------------------------------
# 6. JSON members repeated under another case


@each_target("sec.6 writeKey or connectionId repeated under another case: 400")
def _(h, t):
    f = h.f
    srv = sec_server(h)
    wk = f["wk1"]
    m = h.marker()
    for body in ('{"writeKey":"%s","WriteKey":"x"}' % wk, '{"WRITEKEY":"x","writeKey":"%s"}' % wk,
                 '{"writeKey":"%s","write\u212aey":"x"}' % wk,
                 '{"write\\u212aey":"x","writeKey":"%s"}' % wk):
        r = srv.req(t, "POST", "/v1/events?m=" + m, [("Content-Type", "text/plain")],
                    body.encode())
        assert_error(r, 400, "BadRequest", WK_NOT_STRING, cors=True)
    c1, c2 = f["conn1"], f["conn1b"]
    for body in ('{"connectionId":"%s","ConnectionID":"%s"}' % (c1, c2),
                 '{"connectionid":"%s","connectionId":"%s"}' % (c2, c1),
                 '{"connectionId":"%s","connectionId":"%s"}' % (c1, c2),
                 '{"connectionId":"%s","connectionId":"%s"}' % (c2, c1)):
        r = srv.req(t, "POST", "/v1/events?m=" + m, bearer(f["k1"]), body.encode())
        assert_error(r, 400, "BadRequest", NO_CONN, cors=True)
        r = srv.req(t, "POST", "/v1/events?m=" + m, [("Content-Type", "text/plain")],
                    ('{"writeKey":"%s",' % wk + body[1:]).encode())
        assert_error(r, 400, "BadRequest", WK_CONN, cors=True)
    not_reached(h, m)


# --------------------------------------------------------------------------------------
# The tests must catch what they claim (mutation audit)


@each_target("sec.m a backend's Access-Control-Allow-Credentials never reaches the client")
def _(h, t):
    f = h.f
    r = h.req(t, "POST", "/v1/events?cors=1&acac=1", bearer(f["wk1"]) + [("Origin", ORIGIN)],
              b"{}")
    eq(r.status, 200, "status" + r.brief())
    assert_cors(r, ORIGIN)  # asserts Access-Control-Allow-Credentials is absent
    # the control: the backend does send it where the module adds no CORS
    r = h.req(t, "GET", "/v1/users?acac=1", bearer(f["k1"]))
    eq(r.all("Access-Control-Allow-Credentials"), ["true"], "backend's own header" + r.brief())


@each_target("sec.m OPTIONS with Origin but no Access-Control-Request-Method needs a credential")
def _(h, t):
    m = h.marker()
    r = h.req(t, "OPTIONS", "/v1/events?m=" + m, [("Origin", ORIGIN)])
    assert_error(r, 401, "Unauthorized", "Authorization header is missing", auth="realm",
                 cors=True, origin=ORIGIN)
    not_reached(h, m)


# --------------------------------------------------------------------------------------
# Also: linear strip of identity headers, HEAD on settings


@each_target("sec.x 15 000 client identity headers are all dropped")
def _(h, t):
    f = h.f
    srv = sec_server(h)
    spoof = [("Krenalis-Auth-X%d" % i, "v") for i in range(15000)]
    r = srv.req(t, "GET", "/v1/users", bearer(f["k1"]) + spoof)
    d = backend(r, t)
    assert_identity(d, identity("api", f["k1_id"], f["org1"]), forwarded=False)


@each_target("sec.x HEAD /v1/events/settings/KEY gets the settings decision")
def _(h, t):
    f = h.f
    r = h.req(t, "HEAD", "/v1/events/settings/" + f["wk1"])
    eq(r.status, 200, "status" + r.brief())
    m = h.marker()
    r = h.req(t, "HEAD", "/v1/events/settings/" + "A" * 32 + "?m=" + m, bearer(f["k1"]))
    eq(r.status, 401, "status" + r.brief())
    not_reached(h, m)
