"""Issue 4: organizations endpoints (SPEC §6.4) and the organizations key at start-up."""
import subprocess
import time

from harness import (ANY, APACHE, Failure, assert_error, assert_identity, backend, check, eq,
                     identity, random_alnum, test)
from test_api import NO_ORG_PREFIX, NO_PREFIX, assert_denied, TARGETS, bearer, each_target, ws

VAR = "KRENALIS_ORGANIZATIONS_API_KEY"
NO_HEADER = "Authorization header with the platform management API key is not present in the request"
MULTIPLE = "request contains multiple Authorization headers"
INVALID_BEARER = ("Authorization header is invalid; it should be in the format "
                  "'Authorization: Bearer <YOUR_PLATFORM_MANAGEMENT_API_KEY>'")
NOT_VALID = "platform management API key in the Authorization header of the request is not valid"
WK_INVALID = "event write key in the Authorization header is not valid"

ORG_PATHS = ("/v1/organizations", "/v1/organizations/", "/v1/organizations/abc",
             "/v1/organizations/abc/workspaces")


def conf(h):
    # an explicit KrenalisAuthEndpoint on a path that `auto` would call api
    loc = """\
    <Location /v1/orgs-explicit/>
        KrenalisAuthEndpoint organizations
    </Location>
    <Location /v1/orgs-explicit/typed/>
        Require krenalis-key-type organizations
    </Location>
    <Location /v1/orgs-explicit/wrong-type/>
        AuthzSendForbiddenOnFailure On
        Require krenalis-key-type api event-write
    </Location>
    <Location /v1/organizations/as-api/>
        KrenalisAuthEndpoint api
    </Location>
"""
    return {"cgi": loc, "proxy": loc}


def fixture(h):
    h.f["orgkey"] = h.cli("organizations-key", "generate")["key"]
    h.f["orgkey2"] = h.cli("organizations-key", "generate")["key"]
    for k in (h.f["orgkey"], h.f["orgkey2"]):
        if not (len(k) == 47 and k.startswith("org_") and k[4:].isalnum() and k.isascii()):
            raise Failure("organizations-key generate: bad key %r" % k[:8])


def orgs_server(h):
    srv = h.servers.get("orgs")
    if srv is None or srv.proc is None:
        srv = h.httpd("orgs", env={VAR: h.f["orgkey"]})
        srv.start()
    return srv


def org_identity():
    return identity("organizations", ANY, None, None, None, user="organizations")


# --------------------------------------------------------------------------------------
# key not configured (the main server runs without the variable)


@each_target("orgs.closed without the variable: every request 401")
def _(h, t):
    f = h.f
    for p in ORG_PATHS:
        r = h.req(t, "GET", p)
        assert_error(r, 401, "Unauthorized", NO_HEADER, auth="realm")
        for k in (f["orgkey"], f["orgkey2"], "org_" + "A" * 43):
            r = h.req(t, "GET", p, bearer(k))
            assert_error(r, 401, "Unauthorized", NOT_VALID, auth="invalid")


# --------------------------------------------------------------------------------------
# §6.4 rows with the key configured


@each_target("orgs.6.4.01 no Authorization header -> 401")
def _(h, t):
    srv = orgs_server(h)
    for p in ORG_PATHS:
        for m in ("GET", "POST", "DELETE"):
            r = srv.req(t, m, p, body=b"{}" if m == "POST" else None)
            assert_error(r, 401, "Unauthorized", NO_HEADER, auth="realm")
    # cookies are not credentials here
    r = srv.req(t, "GET", "/v1/organizations", [("Cookie", "session=" + h.f["orgkey"])])
    assert_error(r, 401, "Unauthorized", NO_HEADER, auth="realm")


@each_target("orgs.6.4.02 Authorization more than once -> 400")
def _(h, t):
    srv = orgs_server(h)
    k = h.f["orgkey"]
    for hd in ([("Authorization", "Bearer " + k)] * 2,
               [("Authorization", "Basic a"), ("Authorization", "Basic a")],
               [("Authorization", "Bearer %s, Bearer %s" % (k, k))]):
        r = srv.req(t, "GET", "/v1/organizations", hd)
        assert_error(r, 400, "BadRequest", MULTIPLE)


@each_target("orgs.6.4.03 invalid Bearer value -> 400")
def _(h, t):
    srv = orgs_server(h)
    k = h.f["orgkey"]
    for v in ("", "Basic dXNlcjpwYXNz", "Bearerx", "Bearer:x", "Bearer", "Bearer ", "Bearer" + k):
        r = srv.req(t, "GET", "/v1/organizations", [("Authorization", v)])
        try:
            assert_error(r, 400, "BadRequest", INVALID_BEARER)
        except Failure as e:
            raise Failure("Authorization %r: %s" % (v, e))


@each_target("orgs.6.4.04 token without org_ -> 400")
def _(h, t):
    srv = orgs_server(h)
    f = h.f
    for tok in (f["k1"], f["wk1"], "abc", "ORG_" + f["orgkey"][4:], f["orgkey"][4:],
                "org-" + f["orgkey"][4:]):
        r = srv.req(t, "GET", "/v1/organizations/abc", bearer(tok))
        try:
            assert_error(r, 400, "BadRequest", NO_ORG_PREFIX)
        except Failure as e:
            raise Failure("token %r: %s" % (tok[:8], e))


@each_target("orgs.6.4.05 wrong organizations key -> 401")
def _(h, t):
    srv = orgs_server(h)
    k = h.f["orgkey"]
    for tok in (h.f["orgkey2"], k[:-1], k + "A", k[:-1] + ("A" if k[-1] != "A" else "B"), "org_",
                k[:10] + "-" + k[11:], h.secret("org_" + random_alnum(43))):
        r = srv.req(t, "GET", "/v1/organizations", bearer(tok))
        try:
            assert_error(r, 401, "Unauthorized", NOT_VALID, auth="invalid")
        except Failure as e:
            raise Failure("token %r...: %s" % (tok[:6], e))


@each_target("orgs.ok correct key: identity passed on")
def _(h, t):
    srv = orgs_server(h)
    k = h.f["orgkey"]
    for p in ORG_PATHS:
        r = srv.req(t, "GET", p, [("Authorization", "bearer  " + k)])
        assert_identity(backend(r, t), org_identity())
    r = srv.req(t, "GET", "/v1/orgs-explicit/x", bearer(k))
    assert_identity(backend(r, t), org_identity())


@each_target("orgs.ok Krenalis-Workspace and cookies ignored")
def _(h, t):
    srv = orgs_server(h)
    f = h.f
    for extra in (ws("not valid"), ws(f["ws1a"]) + ws(f["ws2"]), ws(""),
                  [("Cookie", "session=abc")]):
        r = srv.req(t, "GET", "/v1/organizations/abc", bearer(f["orgkey"]) + extra)
        d = backend(r, t)
        assert_identity(d, org_identity())


@each_target("orgs.classify the organizations key is refused elsewhere")
def _(h, t):
    srv = orgs_server(h)
    k = h.f["orgkey"]
    # ("/v1/organizationsx" is the Organizations API since issue 12: whatever a backend could
    # normalize into it is; tests/integration/test_security.py)
    for p in ("/v1/organization", "/v1/x/organizations", "/v1/items", "/v1/workspaces"):
        r = srv.req(t, "GET", p, bearer(k))
        try:
            assert_error(r, 400, "BadRequest", NO_PREFIX)
        except Failure as e:
            raise Failure("%s: %s" % (p, e))
    r = srv.req(t, "POST", "/v1/events", bearer(k), b"{}")
    assert_error(r, 401, "Unauthorized", WK_INVALID, auth="invalid", cors=True)


@each_target("orgs.classify the organizations key only on the route table's spelling")
def _(h, t):
    # Other spellings are the Organizations API for every other key (fail closed), but the
    # backend's router (Go's ServeMux: case-sensitive, no ";params", no look-alike "..")
    # routes them elsewhere: the organizations key does not reach them either.
    srv = orgs_server(h)
    k = h.f["orgkey"]
    for p in ("/v1/Organizations", "/v1/ORGANIZATIONS/x", "/v1/organizationsX",
              "/v1/organizations-x/y", "/v1/organizations;x", "/v1/organizations.",
              "/v1/organizations%20", "/v1/x/..;/organizations", "/v1/x/%252e%252e/organizations",
              "/v1/organizations%252Fabc"):
        m = h.marker()
        r = srv.req(t, "GET", p + "?m=" + m, bearer(k))
        try:
            assert_error(r, 401, "Unauthorized", NOT_VALID, auth="invalid")
        except Failure as e:
            raise Failure("%s: %s" % (p, e))
        eq(h.backend_hits(m), [], "backend hits for %s" % p)
    # below /v1/organizations as spelled there, whatever follows: the Organizations API
    for p in ("/v1/organizations/..;x", "/v1/organizations/abc;x"):
        assert_identity(backend(srv.req(t, "GET", p, bearer(k)), t), org_identity())


@each_target("orgs.classify api keys still work on the orgs server")
def _(h, t):
    srv = orgs_server(h)
    f = h.f
    r = srv.req(t, "GET", "/v1/items", bearer(f["k1"]))
    assert_identity(backend(r, t), identity("api", f["k1_id"], f["org1"]))


@each_target("orgs.authz Require krenalis-key-type organizations")
def _(h, t):
    srv = orgs_server(h)
    r = srv.req(t, "GET", "/v1/orgs-explicit/typed/x", bearer(h.f["orgkey"]))
    assert_identity(backend(r, t), org_identity())
    m = h.marker()
    r = srv.req(t, "GET", "/v1/orgs-explicit/wrong-type/x?" + m, bearer(h.f["orgkey"]))
    assert_denied(h, r, m)


# --------------------------------------------------------------------------------------
# start-up with an invalid key


INVALID_VALUES = [
    ("empty", "", "%s must start with 'org_'"),
    ("no prefix", "abc", "%s must start with 'org_'"),
    ("upper-case prefix", "ORG_" + "a" * 43, "%s must start with 'org_'"),
    ("api key", "api_" + "a" * 49, "%s must start with 'org_'"),
    ("prefix only", "org_", "%s has an invalid length (expected 'org_' + 43 alphanumeric characters)"),
    ("42 characters", "org_" + "a" * 42,
     "%s has an invalid length (expected 'org_' + 43 alphanumeric characters)"),
    ("44 characters", "org_" + "a" * 44,
     "%s has an invalid length (expected 'org_' + 43 alphanumeric characters)"),
    ("character -", "org_" + "a" * 20 + "-" + "b" * 22,
     "invalid format of %s, unexpected character '-'"),
    ("character _", "org_" + "_" + "b" * 42, "invalid format of %s, unexpected character '_'"),
    ("character .", "org_" + "b" * 42 + ".", "invalid format of %s, unexpected character '.'"),
]


def startup_fails(label, value, message, var=VAR, extra=""):
    @test("orgs.startup fails: %s (%s)" % (label, var))
    def _(h):
        name = "badkey-%s-%s" % (var, label.replace(" ", "-"))
        srv = h.httpd(name, env={var: value}, global_extra=extra)
        h.secret(value)
        exp = message % var
        rc, out = srv.configtest()
        check(rc != 0, "apache2 -t exit 0 with %s=%r:\n%s" % (var, value, out))
        check(exp in out, "apache2 -t output lacks %r:\n%s" % (exp, out))
        rc, out = srv.start(expect_fail=True)
        check(rc != 0, "httpd exit status 0")
        check(exp in out, "start-up output lacks %r:\n%s" % (exp, out[-2000:]))


for _label, _value, _msg in INVALID_VALUES:
    startup_fails(_label, _value, _msg)
startup_fails("no prefix", "abc", "%s must start with 'org_'", var="MY_ORG_KEY",
              extra="KrenalisAuthOrganizationsKeyEnv MY_ORG_KEY")
startup_fails("character -", "org_" + "a" * 42 + "-", "invalid format of %s, unexpected character '-'",
              var="MY_ORG_KEY", extra="KrenalisAuthOrganizationsKeyEnv MY_ORG_KEY")


@test("orgs.KrenalisAuthOrganizationsKeyEnv names the variable")
def _(h):
    f = h.f
    # the default variable is ignored (even though invalid) when another one is configured
    srv = h.httpd("orgs-custom-var", env={"MY_ORG_KEY": f["orgkey2"], VAR: "not a key"},
                  global_extra="KrenalisAuthOrganizationsKeyEnv MY_ORG_KEY")
    srv.start()
    try:
        for t in TARGETS:
            r = srv.req(t, "GET", "/v1/organizations", bearer(f["orgkey2"]))
            assert_identity(backend(r, t), org_identity())
            r = srv.req(t, "GET", "/v1/organizations", bearer(f["orgkey"]))
            assert_error(r, 401, "Unauthorized", NOT_VALID, auth="invalid")
    finally:
        srv.stop()


# --------------------------------------------------------------------------------------
# rotation by a graceful restart (docs/operations.md, "Rotation")


def graceful(srv, value):
    """apache2 -k graceful with the variable set to value in the command's own environment:
    the command reads the configuration, hands the key to the running server, signals it."""
    env = srv.env()
    env[VAR] = value
    p = subprocess.run([APACHE, "-f", str(srv.conf), "-k", "graceful"], env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
    return p.returncode, p.stdout.decode("latin-1")


def rotation(label, args):
    @test("orgs.rotation by -k graceful: new key in, old key out (httpd started %s)" % label)
    def _(h):
        k1 = h.cli("organizations-key", "generate")["key"]
        k2 = h.cli("organizations-key", "generate")["key"]
        h.secret(k1)
        h.secret(k2)
        srv = h.httpd("orgs-rotate-%d" % len(args), env={VAR: k1})
        srv.start(args=args)
        try:
            r = srv.req("proxy", "GET", "/v1/organizations", bearer(k1))
            assert_identity(backend(r, "proxy"), org_identity())
            rc, out = graceful(srv, k2)
            eq(rc, 0, "apache2 -k graceful exit status; output:\n" + out)
            deadline = time.time() + 15
            while True:
                a = srv.req("proxy", "GET", "/v1/organizations", bearer(k2)).status
                b = srv.req("proxy", "GET", "/v1/organizations", bearer(k1)).status
                if (a, b) == (200, 401) or time.time() > deadline:
                    break
                time.sleep(0.2)
            eq((a, b), (200, 401), "after the graceful restart: (new key, old key) statuses")
        finally:
            srv.stop()


rotation("-DFOREGROUND", ())
# `apachectl restart` (or graceful) with no server running starts one: the parent's own
# command line then says "-k restart", and it reads its configuration again at each restart.
rotation("by -k restart", ("-k", "restart"))


@each_target("orgs.classify KrenalisAuthEndpoint api below /v1/organizations")
def _(h, t):
    srv = orgs_server(h)
    f = h.f
    r = srv.req(t, "GET", "/v1/organizations/as-api/x", bearer(f["k1"]))
    assert_identity(backend(r, t), identity("api", f["k1_id"], f["org1"]))
    r = srv.req(t, "GET", "/v1/organizations/as-api/x", bearer(f["orgkey"]))
    assert_error(r, 400, "BadRequest", NO_PREFIX)


@test("orgs.stop server with the key")
def _(h):
    srv = h.servers.get("orgs")
    if srv is not None:
        srv.stop()
