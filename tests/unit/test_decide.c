/* decide.c: the route table (SPEC §5) and the decision tables of SPEC §6.1–§6.4, over an
 * in-memory fake of the store look-ups that counts its calls. */
#include <stdio.h>
#include <string.h>

#include "decide.h"
#include "json.h"
#include "tests.h"
#include "token.h"

/* A violated check of the fake store fails the test. */
#define FAKE_STORE_CHECK(x) assert_true(x)
#include "fake_store.h"

/* ---- the fake store's tables (tests/common/fake_store.h) ---- */

#define ORG_A "orgA23456789" /* enabled */
#define ORG_B "orgB23456789" /* disabled */
#define ORG_C "orgC23456789" /* enabled, another organization */
#define ORG_G "orgG23456789" /* gone */
#define WS_A1 "wsA123456789"
#define WS_A2 "wsA223456789"
#define WS_B1 "wsB123456789"
#define WS_C1 "wsC123456789"
#define WS_G "wsG123456789" /* gone */
#define CN_A1 "cnA123456789"
#define CN_A2 "cnA223456789"
#define CN_B1 "cnB123456789"
#define CN_C1 "cnC123456789"
#define CN_G "cnG123456789"  /* gone */
#define CN_AD "cnD123456789" /* ORG_A, WS_A1, role Destination */
#define CN_AN "cnN123456789" /* ORG_A, WS_A1, Source without a strategy */

#define KID_API_A "kyA123456789"
#define KID_API_R "kyR123456789"
#define KID_API_B "kyB123456789"
#define KID_API_ALNUM "kyP123456789"
#define KID_WK_A1 "kwA123456789"
#define KID_WK_B1 "kwB123456789"
#define KID_WK_Q "kwQ123456789"

static const fake_org ORGS[] = {{ORG_A, 1}, {ORG_B, 0}, {ORG_C, 1}};
static const fake_ent WSS[] = {
    {WS_A1, ORG_A, NULL}, {WS_A2, ORG_A, NULL}, {WS_B1, ORG_B, NULL}, {WS_C1, ORG_C, NULL}};
static const fake_ent CONNS[] = {{CN_A1, ORG_A, WS_A1},
                                 {CN_A2, ORG_A, WS_A2},
                                 {CN_B1, ORG_B, WS_B1},
                                 {CN_C1, ORG_C, WS_C1},
                                 {CN_AD, ORG_A, WS_A1, KA_CONN_DESTINATION},
                                 {CN_AN, ORG_A, WS_A1, KA_CONN_NO_STRATEGY}};

/* Payload bytes of the API keys (all 32 bytes the same value). */
enum {
    P_API_A = 1,        /* ORG_A, unrestricted */
    P_API_R = 2,        /* ORG_A, restricted to WS_A1 */
    P_API_B = 3,        /* ORG_B (disabled) */
    P_API_GONE_ORG = 4, /* organization gone */
    P_API_GONE_WS = 5,  /* ORG_A, restricted to a workspace that is gone */
    P_API_MOVED = 6,    /* ORG_A, restricted to a workspace of ORG_C */
    P_UNKNOWN = 7,      /* not in the store */
    P_API_B_GONE_WS = 8 /* ORG_B (disabled), restricted to a workspace that is gone */
};

/* Both look-ups search every key, as the store finds both kinds by HMAC(secret, 32 bytes). */
static fake_key KEYS[16];
static fake_data DATA = {ORGS,  sizeof(ORGS) / sizeof(ORGS[0]),
                         WSS,   sizeof(WSS) / sizeof(WSS[0]),
                         CONNS, sizeof(CONNS) / sizeof(CONNS[0]),
                         KEYS,  0,
                         KEYS,  0};

static char WK_DEST[33], WK_NOSTRAT[33];
static char WK_A1[33], WK_B1[33], WK_GONE[33], WK_Q[33], WK_UNKNOWN[33], WK_ALNUM_API[33];
static char ORGS_KEY[] = "org_abcdefghijABCDEFGHIJ0123456789klmnopqrstKLM";

static fake_store F;
static ka_lookup LK;

static int calls(void)
{
    return F.calls;
}

static int reset_fake(void **state)
{
    (void)state;
    fake_lookup(&F, &DATA, &LK);
    return 0;
}

#define T(f) cmocka_unit_test_setup(f, reset_fake)

static void make_wk(char out[33], const char *prefix)
{
    size_t n = strlen(prefix);
    memcpy(out, prefix, n);
    memset(out + n, 'x', 32 - n);
    out[32] = '\0';
}

static void add_key(const void *secret, ka_key_type type, const char *id, const char *org,
                    const char *ws, const char *conn)
{
    fake_key *k = &KEYS[DATA.napi++];
    DATA.nwrite = DATA.napi;
    k->stored = 1;
    memcpy(k->secret, secret, 32);
    k->type = type;
    k->id = id;
    k->org = org;
    k->ws = ws;
    k->conn = conn;
}

static void add_api(int p, const char *id, const char *org, const char *ws)
{
    uint8_t payload[32];
    memset(payload, p, sizeof(payload));
    add_key(payload, KA_KEY_API, id, org, ws, NULL);
}

static int group_setup(void **state)
{
    (void)state;
    make_wk(WK_A1, "WriteKeyA1");
    make_wk(WK_B1, "WriteKeyB1");
    make_wk(WK_GONE, "WriteKeyGone");
    make_wk(WK_UNKNOWN, "WriteKeyUnknown");
    make_wk(WK_ALNUM_API, "ApiPayloadThatIsAlnum");
    make_wk(WK_DEST, "WriteKeyDestination");
    make_wk(WK_NOSTRAT, "WriteKeyNoStrategy");
    memset(WK_Q, 'Q', 32);
    WK_Q[32] = '\0';
    DATA.napi = DATA.nwrite = 0;
    add_api(P_API_A, KID_API_A, ORG_A, NULL);
    add_api(P_API_R, KID_API_R, ORG_A, WS_A1);
    add_api(P_API_B, KID_API_B, ORG_B, NULL);
    add_api(P_API_GONE_ORG, "kyG123456789", ORG_G, NULL);
    add_api(P_API_GONE_WS, "kyH123456789", ORG_A, WS_G);
    add_api(P_API_MOVED, "kyM123456789", ORG_A, WS_C1);
    add_api(P_API_B_GONE_WS, "kyN123456789", ORG_B, WS_G);
    add_key(WK_A1, KA_KEY_WRITE, KID_WK_A1, ORG_A, WS_A1, CN_A1);
    add_key(WK_B1, KA_KEY_WRITE, KID_WK_B1, ORG_B, WS_B1, CN_B1);
    add_key(WK_GONE, KA_KEY_WRITE, "kwG123456789", ORG_G, WS_G, CN_G);
    /* A write key whose 32 characters are also the payload bytes of an API token. */
    add_key(WK_Q, KA_KEY_WRITE, KID_WK_Q, ORG_A, WS_A2, CN_A2);
    /* An API key whose payload bytes are 32 alphanumerics: found by the write key look-up. */
    add_key(WK_ALNUM_API, KA_KEY_API, KID_API_ALNUM, ORG_A, NULL, NULL);
    add_key(WK_DEST, KA_KEY_WRITE, "kwD123456789", ORG_A, WS_A1, CN_AD);
    add_key(WK_NOSTRAT, KA_KEY_WRITE, "kwN123456789", ORG_A, WS_A1, CN_AN);
    return 0;
}

/* ---- requests ---- */

static char AUTH_BUF[8][128];
static int auth_slot;

/* "Bearer api_<body>" for a payload of 32 bytes of value p. */
static const char *bearer_api(int p)
{
    uint8_t payload[32];
    char *out = AUTH_BUF[auth_slot++ % 8];

    memset(payload, p, sizeof(payload));
    memcpy(out, "Bearer api_", 11);
    ka_api_body_encode(payload, out + 11);
    out[11 + KA_API_BODY_LEN] = '\0';
    return out;
}

static const char *bearer(const char *tok)
{
    char *out = AUTH_BUF[auth_slot++ % 8];
    snprintf(out, 128, "Bearer %s", tok);
    return out;
}

static ka_request R;
static ka_decision D;
static ka_body_fields BODY;

static void req(const char *method, const char *path, const char *auth, const char *ws)
{
    memset(&R, 0, sizeof(R));
    ka_classify(method, path, KA_EP_AUTO, &R.route);
    R.authorization = auth;
    R.workspace = ws;
    R.ws_policy = KA_WS_OPTIONAL;
    R.orgs_key = ORGS_KEY;
    R.body = NULL;
}

static void api(const char *auth, const char *ws)
{
    req("GET", "/v1/users", auth, ws);
    assert_int_equal(R.route.endpoint, KA_EP_API);
}

static void ingest(const char *auth, const char *ws)
{
    req("POST", "/v1/events", auth, ws);
    assert_int_equal(R.route.endpoint, KA_EP_INGESTION);
}

static void with_body(const char *json)
{
    ka_json_scan(json, strlen(json), &BODY);
    R.body = &BODY;
}

/* An ingestion request without Authorization whose body is fmt with a and b filled in. */
static void ingest_body(const char *fmt, const char *a, const char *b)
{
    static char body[512];

    ingest(NULL, NULL);
    /* fmt may use b or not (an unused argument is harmless); cppcheck reads one call's fmt. */
    // cppcheck-suppress wrongPrintfScanfArgNum
    snprintf(body, sizeof(body), fmt, a, b ? b : "");
    with_body(body);
}

static ka_verdict decide(void)
{
    fake_reset_counts(&F);
    memset(&D, 0x5a, sizeof(D));
    return ka_decide(&R, &LK, &D);
}

/* The reasons a refusal's words allow (bit per ka_refusal): the reason is set with each row. */
static unsigned reasons_for(const char *code, const char *m)
{
    static const struct {
        const char *words;
        unsigned reasons;
    } rows[] = {
        {"try again later", 1u << KA_REFUSAL_UNAVAILABLE},
        {"multiple", 1u << KA_REFUSAL_REPEATED},
        {"header is missing; provide", 1u << KA_REFUSAL_WS_POLICY},
        {"cannot specify a workspace", 1u << KA_REFUSAL_WS_POLICY},
        {"is not present in the request", 1u << KA_REFUSAL_MISSING},
        {"Authorization header is missing", 1u << KA_REFUSAL_MISSING},
        {"Authorization header is invalid;", 1u << KA_REFUSAL_BAD_AUTHZ},
        {"start with the api_ prefix", 1u << KA_REFUSAL_WRONG_ENDPOINT},
        {"require specific keys", 1u << KA_REFUSAL_WRONG_ENDPOINT},
        {"platform management API key", 1u << KA_REFUSAL_ORGS_KEY},
        {"malformed", 1u << KA_REFUSAL_MALFORMED},
        {"restricted key", 1u << KA_REFUSAL_WS_INVALID},
        {"Krenalis-Workspace header is invalid", 1u << KA_REFUSAL_WS_INVALID},
        {"\"Krenalis-Workspace\" header is invalid", 1u << KA_REFUSAL_WS_INVALID},
        {"workspace ", 1u << KA_REFUSAL_WS_UNKNOWN},
        {"is disabled", 1u << KA_REFUSAL_DISABLED_ORG},
        {"connectionId", 1u << KA_REFUSAL_CONNECTION_ID},
        {"connection ", 1u << KA_REFUSAL_UNKNOWN_CONN},
        {"writeKey", 1u << KA_REFUSAL_BODY_WRITE_KEY},
        /* A write key on an ingestion path that is one only once normalized: wrong-endpoint. */
        {"event write key in the Authorization header is not valid",
         1u << KA_REFUSAL_UNKNOWN_KEY | 1u << KA_REFUSAL_WRONG_ENDPOINT},
        {"API key in the", 1u << KA_REFUSAL_UNKNOWN_KEY},
        {"event write key", 1u << KA_REFUSAL_UNKNOWN_KEY},
    };

    if (strcmp(code, "NotFound") == 0 && m[0] == '\0')
        return 1u << KA_REFUSAL_SETTINGS_PATH;
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
        if (strstr(m, rows[i].words) != NULL)
            return rows[i].reasons;
    return 0;
}

static void expect_refusal(int status, const char *code, const char *message)
{
    ka_verdict v = decide();
    ka_verdict want = status == 503 && strcmp(code, "ServiceUnavailable") == 0 &&
                              strcmp(message, "organization is disabled") != 0
                          ? KA_VERDICT_UNAVAILABLE
                          : KA_VERDICT_REFUSE;

    if (D.reason <= KA_REFUSAL_NONE || D.reason >= KA_REFUSAL_COUNT ||
        (reasons_for(code, message) & 1u << D.reason) == 0)
        fail_msg("reason %d (%s) for \"%s\"", D.reason, ka_refusal_name(D.reason), message);

    if (D.status != status || v != want || D.verdict != want || ka_verdict_status(&D) != status)
        fail_msg("status %d (verdict %d), want %d; message \"%s\"", D.status, (int)v, status,
                 D.status > 0 ? D.message : "");
    assert_non_null(D.code);
    assert_string_equal(D.code, code);
    assert_string_equal(D.message, message);
}

static void expect_accept(ka_key_type type, const char *key_id, const char *org, const char *ws,
                          const char *conn)
{
    ka_verdict v = decide();

    if (v != KA_VERDICT_ACCEPT || D.verdict != KA_VERDICT_ACCEPT || ka_verdict_status(&D) != 200)
        fail_msg("status %d, want accept; %s: \"%s\"", D.status, D.status > 0 ? D.code : "",
                 D.status > 0 ? D.message : "");
    assert_int_equal(D.id.type, type);
    assert_string_equal(D.id.key_id, key_id);
    assert_string_equal(D.id.org, org);
    assert_string_equal(D.id.ws, ws);
    assert_string_equal(D.id.conn, conn);
}

static void expect_need_body(void)
{
    ka_verdict v = decide();
    assert_int_equal(v, KA_VERDICT_NEED_BODY);
    assert_int_equal(D.verdict, KA_VERDICT_NEED_BODY);
    assert_int_equal(ka_verdict_status(&D), 0);
}

static void expect_unavailable(void)
{
    expect_refusal(503, "ServiceUnavailable",
                   "request cannot be processed at this time; try again later");
}

/* ---- §6.1 api endpoints ---- */

#define M_API_NO_AUTH "Authorization header with the API key is not present in the request"
#define M_MULTI_AUTH "request contains multiple Authorization headers"
#define M_API_BEARER                                                                               \
    "Authorization header is invalid; it should be in the format 'Authorization: Bearer "          \
    "<YOUR_API_KEY>'"
#define M_API_PREFIX "API key is not valid; API keys start with the api_ prefix"
#define M_API_MALFORMED "API key in the Authorization header of the request is malformed"
#define M_API_UNKNOWN "API key in the Authorization header of the request does not exist"
#define M_API_WS_MULTI "request contains multiple Krenalis-Workspace headers"
#define M_WS_RESTRICTED                                                                            \
    "\"Krenalis-Workspace\" header cannot be provided with a workspace restricted key"
#define M_API_WS_INVALID                                                                           \
    "Krenalis-Workspace header is invalid; it should be in the format 'Krenalis-Workspace: "       \
    "<WORKSPACE_ID>'"
#define M_WS_REQUIRED                                                                              \
    "Krenalis-Workspace header is missing; provide it in the format 'Krenalis-Workspace: "         \
    "<WORKSPACE_ID>'"
#define M_WS_FORBIDDEN "organization request cannot specify a workspace"

static void test_api_no_authorization(void **state)
{
    (void)state;
    api(NULL, NULL);
    expect_refusal(401, "Unauthorized", M_API_NO_AUTH);
    assert_int_equal(D.token_presented, 0);
    assert_int_equal(calls(), 0);
    /* Comes before everything else, a bad workspace header included. */
    api(NULL, "a, b");
    expect_refusal(401, "Unauthorized", M_API_NO_AUTH);
}

static void test_api_multiple_authorization(void **state)
{
    char both[256];

    (void)state;
    snprintf(both, sizeof(both), "%s, %s", bearer_api(P_API_A), bearer_api(P_API_A));
    api(both, NULL);
    expect_refusal(400, "BadRequest", M_MULTI_AUTH);
    assert_int_equal(calls(), 0);
    /* Any comma: not a valid Bearer value either, but "more than once" comes first. */
    api("Basic x, Bearer y", NULL);
    expect_refusal(400, "BadRequest", M_MULTI_AUTH);
    api(",", NULL);
    expect_refusal(400, "BadRequest", M_MULTI_AUTH);
    api("Bearer api_a,b", NULL);
    expect_refusal(400, "BadRequest", M_MULTI_AUTH);
}

static void test_api_invalid_bearer(void **state)
{
    static const char *const bad[] = {"",       "Basic x", "Bearerx",   "Bearer:x",
                                      "Bearer", "Bearer ", "Bearer \t", "Token api_x"};
    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        api(bad[i], NULL);
        expect_refusal(400, "BadRequest", M_API_BEARER);
        assert_int_equal(calls(), 0);
    }
}

static void test_api_prefix(void **state)
{
    (void)state;
    api(bearer(WK_A1), NULL); /* a write key on an api endpoint */
    expect_refusal(400, "BadRequest", M_API_PREFIX);
    assert_int_equal(calls(), 0);
    api(bearer(ORGS_KEY), NULL);
    expect_refusal(400, "BadRequest", M_API_PREFIX);
    api(bearer("API_AOyrCBBQEmI63fgWAAw8F12XcPvUqkg0aEwlIqnO0xyCeS3NT"), NULL);
    expect_refusal(400, "BadRequest", M_API_PREFIX);
    api(bearer("api"), NULL);
    expect_refusal(400, "BadRequest", M_API_PREFIX);
    api(bearer("xapi_AOyrCBBQEmI63fgWAAw8F12XcPvUqkg0aEwlIqnO0xyCeS3NT"), NULL);
    expect_refusal(400, "BadRequest", M_API_PREFIX);
    assert_int_equal(calls(), 0);
}

static void test_api_malformed(void **state)
{
    static const char *const bad[] = {
        "api_",
        "api_AOyrCBBQEmI63fgWAAw8F12XcPvUqkg0aEwlIqnO0xyCeS3N",   /* 48 */
        "api_AOyrCBBQEmI63fgWAAw8F12XcPvUqkg0aEwlIqnO0xyCeS3NTA", /* 50 */
        "api_AOyrCBBQEmI63fgWAAw8F12XcPvUqkg0aEwlIqnO0xyCeS3NU",  /* CRC mismatch */
        "api_BOyrCBBQEmI63fgWAAw8F12XcPvUqkg0aEwlIqnO0xyCeS3NT",  /* CRC mismatch */
        "api_AOyrCBBQEmI63fgWAAw8F12XcPvUqkg0aEwlIqnO0xyCe-3NT",  /* '-' */
        "api_9999999999999999999999999999999999999999999AAAAAA",  /* >= 2^256 */
        "api_AOyrCBBQEmI63fgWAAw8F12XcPvUqkg0aEwlIqnO0xy999999",  /* >= 2^32 */
        "api_AOyrCBBQEmI63fgWAAw8F12XcPvUqkg0aEwlIqnO0xyCeS3NT ", /* trailing space */
    };
    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        api(bearer(bad[i]), "not valid, twice");
        expect_refusal(401, "Unauthorized", M_API_MALFORMED);
        assert_int_equal(D.token_presented, 1);
        assert_int_equal(calls(), 0); /* no store read */
    }
}

static void test_api_unknown(void **state)
{
    (void)state;
    api(bearer_api(P_UNKNOWN), NULL);
    expect_refusal(401, "Unauthorized", M_API_UNKNOWN);
    assert_int_equal(D.token_presented, 1);
    assert_int_equal(F.api_calls, 1);
    /* Organization gone. */
    api(bearer_api(P_API_GONE_ORG), NULL);
    expect_refusal(401, "Unauthorized", M_API_UNKNOWN);
    /* Restricted workspace gone, or no longer in the key's organization. */
    api(bearer_api(P_API_GONE_WS), NULL);
    expect_refusal(401, "Unauthorized", M_API_UNKNOWN);
    api(bearer_api(P_API_MOVED), NULL);
    expect_refusal(401, "Unauthorized", M_API_UNKNOWN);
    /* Gone comes before disabled. */
    api(bearer_api(P_API_B_GONE_WS), NULL);
    expect_refusal(401, "Unauthorized", M_API_UNKNOWN);
    /* The payload is the 32 characters of a write key: that record is not an API key. */
    api(bearer_api('Q'), NULL);
    expect_refusal(401, "Unauthorized", M_API_UNKNOWN);
}

static void test_api_org_disabled(void **state)
{
    (void)state;
    api(bearer_api(P_API_B), NULL);
    expect_refusal(422, "OrganizationDisabled", "organization " ORG_B " is disabled");
    /* Before every workspace row. */
    api(bearer_api(P_API_B), "a, b");
    expect_refusal(422, "OrganizationDisabled", "organization " ORG_B " is disabled");
    api(bearer_api(P_API_B), "");
    expect_refusal(422, "OrganizationDisabled", "organization " ORG_B " is disabled");
}

static void test_api_ws_multiple(void **state)
{
    (void)state;
    api(bearer_api(P_API_A), WS_A1 ", " WS_A2);
    expect_refusal(400, "BadRequest", M_API_WS_MULTI);
    /* Before "restricted key". */
    api(bearer_api(P_API_R), WS_A1 ", " WS_A1);
    expect_refusal(400, "BadRequest", M_API_WS_MULTI);
}

static void test_api_ws_restricted(void **state)
{
    (void)state;
    api(bearer_api(P_API_R), WS_A1);
    expect_refusal(400, "BadRequest", M_WS_RESTRICTED);
    /* Before "invalid". */
    api(bearer_api(P_API_R), "");
    expect_refusal(400, "BadRequest", M_WS_RESTRICTED);
    api(bearer_api(P_API_R), "bad");
    expect_refusal(400, "BadRequest", M_WS_RESTRICTED);
}

static void test_api_ws_invalid(void **state)
{
    static const char *const bad[] = {"",
                                      "wsA12345678",
                                      "wsA1234567899",
                                      "0sA123456789",
                                      "wsA12345678l",
                                      " wsA12345678",
                                      "wsA123456789 "};
    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        api(bearer_api(P_API_A), bad[i]);
        expect_refusal(400, "BadRequest", M_API_WS_INVALID);
        assert_int_equal(F.ws_calls, 0);
    }
}

static void test_api_ws_not_found(void **state)
{
    (void)state;
    api(bearer_api(P_API_A), WS_C1); /* another organization's */
    expect_refusal(404, "NotFound", "workspace " WS_C1 " does not exist");
    api(bearer_api(P_API_A), WS_G);
    expect_refusal(404, "NotFound", "workspace " WS_G " does not exist");
}

static void test_api_ws_required(void **state)
{
    (void)state;
    api(bearer_api(P_API_A), NULL);
    R.ws_policy = KA_WS_REQUIRED;
    expect_refusal(403, "Forbidden", M_WS_REQUIRED);
    api(bearer_api(P_API_A), WS_A2);
    R.ws_policy = KA_WS_REQUIRED;
    expect_accept(KA_KEY_API, KID_API_A, ORG_A, WS_A2, "");
    /* A restricted key selects its workspace. */
    api(bearer_api(P_API_R), NULL);
    R.ws_policy = KA_WS_REQUIRED;
    expect_accept(KA_KEY_API, KID_API_R, ORG_A, WS_A1, "");
    /* The header rows come first. */
    api(bearer_api(P_API_A), "");
    R.ws_policy = KA_WS_REQUIRED;
    expect_refusal(400, "BadRequest", M_API_WS_INVALID);
}

static void test_api_ws_forbidden(void **state)
{
    (void)state;
    api(bearer_api(P_API_A), WS_A1);
    R.ws_policy = KA_WS_FORBIDDEN;
    expect_refusal(401, "Unauthorized", M_WS_FORBIDDEN);
    api(bearer_api(P_API_R), NULL);
    R.ws_policy = KA_WS_FORBIDDEN;
    expect_refusal(401, "Unauthorized", M_WS_FORBIDDEN);
    api(bearer_api(P_API_A), NULL);
    R.ws_policy = KA_WS_FORBIDDEN;
    expect_accept(KA_KEY_API, KID_API_A, ORG_A, "", "");
    /* An unknown workspace is still 404 first. */
    api(bearer_api(P_API_A), WS_G);
    R.ws_policy = KA_WS_FORBIDDEN;
    expect_refusal(404, "NotFound", "workspace " WS_G " does not exist");
}

static void test_api_accept(void **state)
{
    (void)state;
    api(bearer_api(P_API_A), NULL);
    expect_accept(KA_KEY_API, KID_API_A, ORG_A, "", "");
    assert_null(D.code);
    assert_string_equal(D.message, "");
    assert_int_equal(F.api_calls, 1);
    assert_int_equal(F.write_calls, 0);
    api(bearer_api(P_API_A), WS_A1);
    expect_accept(KA_KEY_API, KID_API_A, ORG_A, WS_A1, "");
    api(bearer_api(P_API_R), NULL);
    expect_accept(KA_KEY_API, KID_API_R, ORG_A, WS_A1, "");
    /* Lower-case scheme, tabs. */
    {
        char v[128];
        snprintf(v, sizeof(v), "bEaReR\t \t%s", bearer_api(P_API_A) + 7);
        api(v, NULL);
        expect_accept(KA_KEY_API, KID_API_A, ORG_A, "", "");
    }
}

static void test_api_unavailable(void **state)
{
    (void)state;
    F.fail_api = 1;
    api(bearer_api(P_API_A), NULL);
    expect_unavailable();
    F.fail_api = 0;

    F.fail_org = 1;
    api(bearer_api(P_API_A), NULL);
    expect_unavailable();
    F.fail_org = 0;

    F.fail_ws = 1;
    api(bearer_api(P_API_R), NULL); /* the restricted workspace */
    expect_unavailable();
    api(bearer_api(P_API_A), WS_A1); /* the selected workspace */
    expect_unavailable();
    /* No workspace to look up: no failure. */
    api(bearer_api(P_API_A), NULL);
    expect_accept(KA_KEY_API, KID_API_A, ORG_A, "", "");
    F.fail_ws = 0;

    /* A malformed key never reaches the failing store. */
    F.fail_api = F.fail_org = F.fail_ws = 1;
    api(bearer("api_x"), NULL);
    expect_refusal(401, "Unauthorized", M_API_MALFORMED);
    F.fail_api = F.fail_org = F.fail_ws = 0;
}

/* ---- §6.2 ingestion endpoints ---- */

#define M_ING_BEARER                                                                               \
    "Authorization header is invalid; use \"Authorization: Bearer <KEY>\" with an API key or "     \
    "an event write key"
#define M_ING_MALFORMED                                                                            \
    "API key in the Authorization header is malformed; check that it was copied correctly"
#define M_ING_UNKNOWN "API key in the Authorization header is invalid"
#define M_ING_WS_MULTI "request contains multiple \"Krenalis-Workspace\" headers"
#define M_ING_WS_INVALID                                                                           \
    "\"Krenalis-Workspace\" header is invalid; use \"Krenalis-Workspace: <WORKSPACE_ID>\""
#define M_CONN_REQUIRED "parameter 'connectionId' is required when using API key authentication"
#define M_WK_HEADER "event write key in the Authorization header is not valid"
#define M_WK_DISABLED "organization is disabled"
#define M_NO_AUTH "Authorization header is missing"
#define M_WK_NOT_STRING "property 'writeKey' is not a valid string"
#define M_WK_EMPTY "property 'writeKey' cannot be empty"
#define M_WK_BODY "the event write key in the request body does not exist"
#define M_WK_CONN                                                                                  \
    "property 'connectionId' cannot be provided when using an event write key for "                \
    "authentication"

static void test_ingest_multiple_authorization(void **state)
{
    char both[128];

    (void)state;
    snprintf(both, sizeof(both), "Bearer %s, Bearer %s", WK_A1, WK_A1);
    ingest(both, NULL);
    expect_refusal(400, "BadRequest", M_MULTI_AUTH);
    assert_int_equal(calls(), 0);
}

static void test_ingest_invalid_bearer(void **state)
{
    static const char *const bad[] = {"", "Basic x", "Bearerx", "Bearer:x", "Bearer", "Bearer "};
    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ingest(bad[i], NULL);
        expect_refusal(400, "BadRequest", M_ING_BEARER);
        assert_int_equal(calls(), 0);
    }
}

static void test_ingest_api_malformed(void **state)
{
    (void)state;
    ingest(bearer("api_AOyrCBBQEmI63fgWAAw8F12XcPvUqkg0aEwlIqnO0xyCeS3NU"), NULL);
    expect_refusal(400, "BadRequest", M_ING_MALFORMED);
    assert_int_equal(calls(), 0);
    ingest(bearer("api_"), NULL);
    expect_refusal(400, "BadRequest", M_ING_MALFORMED);
    assert_int_equal(calls(), 0);
    ingest(bearer("api_9999999999999999999999999999999999999999999AAAAAA"), NULL);
    expect_refusal(400, "BadRequest", M_ING_MALFORMED);
    assert_int_equal(calls(), 0);
}

static void test_ingest_api_unknown(void **state)
{
    (void)state;
    ingest(bearer_api(P_UNKNOWN), NULL);
    expect_refusal(401, "Unauthorized", M_ING_UNKNOWN);
    assert_int_equal(D.token_presented, 1);
    ingest(bearer_api(P_API_GONE_ORG), NULL);
    expect_refusal(401, "Unauthorized", M_ING_UNKNOWN);
    ingest(bearer_api(P_API_GONE_WS), NULL);
    expect_refusal(401, "Unauthorized", M_ING_UNKNOWN);
    ingest(bearer_api('Q'), NULL);
    expect_refusal(401, "Unauthorized", M_ING_UNKNOWN);
}

static void test_ingest_api_disabled(void **state)
{
    (void)state;
    ingest(bearer_api(P_API_B), NULL);
    expect_refusal(422, "OrganizationDisabled", "organization " ORG_B " is disabled");
}

static void test_ingest_api_workspace_rows(void **state)
{
    (void)state;
    ingest(bearer_api(P_API_A), WS_A1 ", " WS_A2);
    expect_refusal(400, "BadRequest", M_ING_WS_MULTI);
    ingest(bearer_api(P_API_R), WS_A1);
    expect_refusal(400, "BadRequest", M_WS_RESTRICTED);
    ingest(bearer_api(P_API_A), "");
    expect_refusal(400, "BadRequest", M_ING_WS_INVALID);
    ingest(bearer_api(P_API_A), "x");
    expect_refusal(400, "BadRequest", M_ING_WS_INVALID);
    ingest(bearer_api(P_API_A), WS_C1);
    expect_refusal(404, "NotFound", "workspace " WS_C1 " does not exist");
    /* These come before the body is read. */
    assert_int_equal(F.conn_calls, 0);
}

static void test_ingest_api_needs_body(void **state)
{
    (void)state;
    ingest(bearer_api(P_API_A), NULL);
    expect_need_body();
    ingest(bearer_api(P_API_A), WS_A1);
    expect_need_body();
    /* Also on the typed endpoints. */
    req("POST", "/v1/events/track", bearer_api(P_API_A), NULL);
    expect_need_body();
}

static void test_ingest_api_connection_required(void **state)
{
    static const char *const bodies[] = {"{}", "{\"connectionId\":\"\"}", "not json",
                                         "{\"context\":{\"connectionId\":\"" CN_A1 "\"}}",
                                         "[{\"connectionId\":\"" CN_A1 "\"}]"};
    (void)state;
    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        ingest(bearer_api(P_API_A), NULL);
        with_body(bodies[i]);
        expect_refusal(400, "BadRequest", M_CONN_REQUIRED);
        assert_int_equal(F.conn_calls, 0);
    }
}

static void test_ingest_api_connection_not_exist(void **state)
{
    (void)state;
    ingest(bearer_api(P_API_A), NULL);
    with_body("{\"connectionId\":\"" CN_G "\"}");
    expect_refusal(422, "ConnectionNotExist", "connection " CN_G " does not exist");
    /* Another organization's connection. */
    ingest(bearer_api(P_API_A), NULL);
    with_body("{\"connectionId\":\"" CN_C1 "\"}");
    expect_refusal(422, "ConnectionNotExist", "connection " CN_C1 " does not exist");
    /* Not in the selected workspace. */
    ingest(bearer_api(P_API_A), WS_A2);
    with_body("{\"connectionId\":\"" CN_A1 "\"}");
    expect_refusal(422, "ConnectionNotExist", "connection " CN_A1 " does not exist");
    /* Not in the restricted key's workspace. */
    ingest(bearer_api(P_API_R), NULL);
    with_body("{\"connectionId\":\"" CN_A2 "\"}");
    expect_refusal(422, "ConnectionNotExist", "connection " CN_A2 " does not exist");
    /* Not an ID at all: no look-up. */
    ingest(bearer_api(P_API_A), NULL);
    with_body("{\"connectionId\":\"abc\"}");
    expect_refusal(422, "ConnectionNotExist", "connection abc does not exist");
    assert_int_equal(F.conn_calls, 0);
}

static void test_ingest_api_accept(void **state)
{
    (void)state;
    ingest(bearer_api(P_API_A), NULL);
    with_body("{\"connectionId\":\"" CN_A2 "\",\"type\":\"track\"}");
    expect_accept(KA_KEY_API, KID_API_A, ORG_A, WS_A2, CN_A2);
    ingest(bearer_api(P_API_A), WS_A1);
    with_body("{\"connectionId\":\"" CN_A1 "\"}");
    expect_accept(KA_KEY_API, KID_API_A, ORG_A, WS_A1, CN_A1);
    ingest(bearer_api(P_API_R), NULL);
    with_body("{\"connectionId\":\"" CN_A1 "\"}");
    expect_accept(KA_KEY_API, KID_API_R, ORG_A, WS_A1, CN_A1);
    /* A body writeKey is not looked at with an API key. */
    ingest(bearer_api(P_API_A), NULL);
    with_body("{\"connectionId\":\"" CN_A1 "\",\"writeKey\":5}");
    expect_accept(KA_KEY_API, KID_API_A, ORG_A, WS_A1, CN_A1);
    assert_int_equal(F.write_calls, 0);
}

static void test_ingest_api_unavailable(void **state)
{
    (void)state;
    F.fail_conn = 1;
    ingest(bearer_api(P_API_A), NULL);
    with_body("{\"connectionId\":\"" CN_A1 "\"}");
    expect_unavailable();
    F.fail_conn = 0;
    F.fail_api = 1;
    ingest(bearer_api(P_API_A), NULL);
    expect_unavailable();
    F.fail_api = 0;
    F.fail_org = 1;
    ingest(bearer_api(P_API_A), NULL);
    expect_unavailable();
    F.fail_org = 0;
    F.fail_ws = 1;
    ingest(bearer_api(P_API_A), WS_A1);
    expect_unavailable();
    F.fail_ws = 0;
}

static void test_ingest_write_key_header(void **state)
{
    (void)state;
    ingest(bearer(WK_A1), NULL);
    expect_accept(KA_KEY_WRITE, KID_WK_A1, ORG_A, WS_A1, CN_A1);
    assert_int_equal(F.write_calls, 1);
    assert_int_equal(F.api_calls, 0);
    /* Krenalis-Workspace is ignored with a write key, even when it is not valid. */
    ingest(bearer(WK_A1), WS_C1);
    expect_accept(KA_KEY_WRITE, KID_WK_A1, ORG_A, WS_A1, CN_A1);
    ingest(bearer(WK_A1), "a, b");
    expect_accept(KA_KEY_WRITE, KID_WK_A1, ORG_A, WS_A1, CN_A1);
    /* Typed endpoints take it too. */
    req("POST", "/v1/events/identify", bearer(WK_A1), NULL);
    expect_accept(KA_KEY_WRITE, KID_WK_A1, ORG_A, WS_A1, CN_A1);
}

static void test_ingest_write_key_unknown(void **state)
{
    static const char *const malformed[] = {
        "abc",
        "WriteKeyA1xxxxxxxxxxxxxxxxxxxxx",   /* 31 */
        "WriteKeyA1xxxxxxxxxxxxxxxxxxxxxxx", /* 33 */
        "WriteKeyA1xxxxxxxxxxxxxxxxxxxxx-",
        "WriteKeyA1xxxxxxxxxxxxxxxxxxxxx_",
        "WriteKeyA1xxxxxxxxxxxxxxxxxxxxxx ",
        "org_abcdefghijABCDEFGHIJ0123456789klmnopqrstKLM",
    };
    (void)state;
    for (size_t i = 0; i < sizeof(malformed) / sizeof(malformed[0]); i++) {
        ingest(bearer(malformed[i]), NULL);
        expect_refusal(401, "Unauthorized", M_WK_HEADER);
        assert_int_equal(D.token_presented, 1);
        assert_int_equal(calls(), 0); /* no store read */
    }
    ingest(bearer(WK_UNKNOWN), NULL);
    expect_refusal(401, "Unauthorized", M_WK_HEADER);
    assert_int_equal(F.write_calls, 1);
    /* Its organization is gone. */
    ingest(bearer(WK_GONE), NULL);
    expect_refusal(401, "Unauthorized", M_WK_HEADER);
    /* The 32 characters are an API key's payload: not a write key. */
    ingest(bearer(WK_ALNUM_API), NULL);
    expect_refusal(401, "Unauthorized", M_WK_HEADER);
}

static void test_ingest_write_key_disabled(void **state)
{
    (void)state;
    ingest(bearer(WK_B1), NULL);
    expect_refusal(503, "ServiceUnavailable", M_WK_DISABLED);
}

static void test_ingest_write_key_unavailable(void **state)
{
    (void)state;
    F.fail_write = 1;
    ingest(bearer(WK_A1), NULL);
    expect_unavailable();
    /* Malformed: no store read, no failure. */
    ingest(bearer("short"), NULL);
    expect_refusal(401, "Unauthorized", M_WK_HEADER);
    F.fail_write = 0;
    F.fail_org = 1;
    ingest(bearer(WK_A1), NULL);
    expect_unavailable();
    F.fail_org = 0;
}

static void test_ingest_no_credential(void **state)
{
    (void)state;
    /* Typed endpoints take no body key: refused without reading the body. */
    req("POST", "/v1/events/track", NULL, NULL);
    expect_refusal(401, "Unauthorized", M_NO_AUTH);
    assert_int_equal(D.token_presented, 0);
    assert_int_equal(calls(), 0);
    /* POST /v1/events: read the body first. */
    ingest(NULL, NULL);
    expect_need_body();
    assert_int_equal(calls(), 0);
    /* No writeKey in it, or not a JSON object. */
    static const char *const bodies[] = {"{}",
                                         "{\"context\":{\"writeKey\":\""
                                         "WriteKeyA1xxxxxxxxxxxxxxxxxxxxxx"
                                         "\"}}",
                                         "",
                                         "not json",
                                         "[{\"writeKey\":\"WriteKeyA1xxxxxxxxxxxxxxxxxxxxxx\"}]",
                                         "{\"writeKey\":\"WriteKeyA1xxxxxxxxxxxxxxxxxxxxxx\"} x"};
    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        ingest(NULL, NULL);
        with_body(bodies[i]);
        expect_refusal(401, "Unauthorized", M_NO_AUTH);
        assert_int_equal(D.token_presented, 0);
        assert_int_equal(calls(), 0);
    }
}

static void test_ingest_body_key_not_string(void **state)
{
    static const char *const bodies[] = {
        "{\"writeKey\":1}", "{\"writeKey\":null}", "{\"writeKey\":true}", "{\"writeKey\":{}}",
        "{\"writeKey\":[\"WriteKeyA1xxxxxxxxxxxxxxxxxxxxxx\"]}",
        /* Twice: the backend could read either. */
        "{\"writeKey\":\"WriteKeyA1xxxxxxxxxxxxxxxxxxxxxx\",\"writeKey\":"
        "\"WriteKeyA1xxxxxxxxxxxxxxxxxxxxxx\"}"};
    (void)state;
    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        ingest(NULL, NULL);
        with_body(bodies[i]);
        expect_refusal(400, "BadRequest", M_WK_NOT_STRING);
        assert_int_equal(calls(), 0);
    }
}

static void test_ingest_body_key_empty(void **state)
{
    (void)state;
    ingest(NULL, NULL);
    with_body("{\"writeKey\":\"\"}");
    expect_refusal(400, "BadRequest", M_WK_EMPTY);
    assert_int_equal(calls(), 0);
    /* Empty comes before the connectionId row. */
    ingest(NULL, NULL);
    with_body("{\"writeKey\":\"\",\"connectionId\":\"" CN_A1 "\"}");
    expect_refusal(400, "BadRequest", M_WK_EMPTY);
}

static void test_ingest_body_key_unknown(void **state)
{
    char body[256];

    (void)state;
    ingest(NULL, NULL);
    snprintf(body, sizeof(body), "{\"writeKey\":\"%s\"}", WK_UNKNOWN);
    with_body(body);
    expect_refusal(401, "Unauthorized", M_WK_BODY);
    assert_int_equal(D.token_presented, 1);
    assert_int_equal(F.write_calls, 1);
    /* Malformed ones are refused without a store read. */
    static const char *const bad[] = {
        "{\"writeKey\":\"abc\"}",
        "{\"writeKey\":\"WriteKeyA1xxxxxxxxxxxxxxxxxxxxxxx\"}",
        "{\"writeKey\":\"WriteKeyA1xxxxxxxxxxxxxxxxxxxxx\\u0000\"}",
        "{\"writeKey\":\"api_AOyrCBBQEmI63fgWAAw8F12XcPvUqkg0aEwlIqnO0xyCeS3NT\"}",
        "{\"writeKey\":\"WriteKeyA1xxxxxxxxxxxxxxxxxxxxxxWriteKeyA1xxxxxxxxxxxxxxxxxxxxxxy\"}",
        "{\"writeKey\":\" \"}"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ingest(NULL, NULL);
        with_body(bad[i]);
        expect_refusal(401, "Unauthorized", M_WK_BODY);
        assert_int_equal(calls(), 0);
    }
    /* Organization gone. */
    ingest(NULL, NULL);
    snprintf(body, sizeof(body), "{\"writeKey\":\"%s\"}", WK_GONE);
    with_body(body);
    expect_refusal(401, "Unauthorized", M_WK_BODY);
    /* Unknown comes before the connectionId row. */
    ingest(NULL, NULL);
    snprintf(body, sizeof(body), "{\"writeKey\":\"%s\",\"connectionId\":\"%s\"}", WK_UNKNOWN,
             CN_A1);
    with_body(body);
    expect_refusal(401, "Unauthorized", M_WK_BODY);
}

static void test_ingest_body_key_disabled(void **state)
{
    char body[128];

    (void)state;
    ingest(NULL, NULL);
    snprintf(body, sizeof(body), "{\"writeKey\":\"%s\"}", WK_B1);
    with_body(body);
    expect_refusal(503, "ServiceUnavailable", M_WK_DISABLED);
}

static void test_ingest_body_key_with_connection(void **state)
{
    char body[128];

    (void)state;
    ingest(NULL, NULL);
    snprintf(body, sizeof(body), "{\"writeKey\":\"%s\",\"connectionId\":\"%s\"}", WK_A1, CN_A1);
    with_body(body);
    expect_refusal(400, "BadRequest", M_WK_CONN);
    ingest(NULL, NULL);
    snprintf(body, sizeof(body), "{\"connectionId\":\"%s\",\"writeKey\":\"%s\"}", CN_C1, WK_A1);
    with_body(body);
    expect_refusal(400, "BadRequest", M_WK_CONN);
}

/* SPEC §6.2, last row: a repeated top-level connectionId (exactly, or under another case) is
 * refused in both orders, with an API key and with a write key. */
static void test_ingest_repeated_connection_id(void **state)
{
    static const char *const bodies[] = {
        "{\"connectionId\":\"" CN_A1 "\",\"connectionId\":\"" CN_A2 "\"}",
        "{\"connectionId\":\"" CN_A2 "\",\"connectionId\":\"" CN_A1 "\"}",
        "{\"connectionId\":\"" CN_A1 "\",\"ConnectionID\":\"" CN_A2 "\"}",
        "{\"connectionid\":\"" CN_A2 "\",\"connectionId\":\"" CN_A1 "\"}",
        "{\"connectionId\":\"" CN_A1 "\",\"connectionId\":\"" CN_A1 "\"}"};
    (void)state;
    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        ingest(bearer_api(P_API_A), NULL);
        with_body(bodies[i]);
        expect_refusal(400, "BadRequest", M_CONN_REQUIRED);
        assert_int_equal(F.conn_calls, 0);
        /* With the write key in the body too (the header's is not checked against a body). */
        ingest_body("{\"writeKey\":\"%s\",%s", WK_A1, bodies[i] + 1);
        expect_refusal(400, "BadRequest", M_WK_CONN);
    }
    /* A lone case variant is never the connection an API key names... */
    ingest(bearer_api(P_API_A), NULL);
    with_body("{\"ConnectionId\":\"" CN_A1 "\"}");
    expect_refusal(400, "BadRequest", M_CONN_REQUIRED);
    /* ...and is still a connectionId next to a write key. */
    ingest_body("{\"writeKey\":\"%s\",\"CONNECTIONID\":\"%s\"}", WK_A1, CN_C1);
    expect_refusal(400, "BadRequest", M_WK_CONN);
}

/* A writeKey given twice under different cases is refused like an exact repeat; one alone under
 * another case is not the body's write key. */
static void test_ingest_body_key_case_variants(void **state)
{
    (void)state;
    ingest_body("{\"writeKey\":\"%s\",\"WriteKey\":\"x\"}", WK_A1, NULL);
    expect_refusal(400, "BadRequest", M_WK_NOT_STRING);
    assert_int_equal(calls(), 0);
    ingest_body("{\"write\xe2\x84\xaa"
                "ey\":\"x\",\"writeKey\":\"%s\"}",
                WK_A1, NULL);
    expect_refusal(400, "BadRequest", M_WK_NOT_STRING);
    ingest_body("{\"WRITEKEY\":\"%s\"}", WK_A1, NULL);
    expect_refusal(401, "Unauthorized", M_NO_AUTH);
    assert_int_equal(calls(), 0);
}

/* Ingestion reached through a path that is ingestion only once normalized: write keys are
 * refused without a store read, API keys meet the ingestion rules. */
static void test_ingest_noncanonical_path(void **state)
{
    char body[128];

    (void)state;
    req("POST", "/v1//events", bearer(WK_A1), NULL);
    assert_int_equal(R.route.noncanonical, 1);
    expect_refusal(401, "Unauthorized", M_WK_HEADER);
    assert_int_equal(calls(), 0);
    req("POST", "/v1/events/", NULL, NULL);
    snprintf(body, sizeof(body), "{\"writeKey\":\"%s\"}", WK_A1);
    with_body(body);
    expect_refusal(401, "Unauthorized", M_NO_AUTH);
    assert_int_equal(calls(), 0);
    req("POST", "/V1/Events/Track", bearer_api(P_API_A), NULL);
    expect_need_body();
    with_body("{}");
    expect_refusal(400, "BadRequest", M_CONN_REQUIRED);
    req("POST", "/v1//events", bearer_api(P_API_A), NULL);
    with_body("{\"connectionId\":\"" CN_A1 "\"}");
    expect_accept(KA_KEY_API, KID_API_A, ORG_A, WS_A1, CN_A1);
}

static void test_ingest_body_key_accept(void **state)
{
    char body[256];

    (void)state;
    ingest(NULL, NULL);
    snprintf(body, sizeof(body),
             "{\"type\":\"track\",\"writeKey\":\"%s\",\"context\":{"
             "\"connectionId\":\"x\"}}",
             WK_A1);
    with_body(body);
    expect_accept(KA_KEY_WRITE, KID_WK_A1, ORG_A, WS_A1, CN_A1);
    /* An escaped key decodes to the same key. */
    ingest(NULL, NULL);
    snprintf(body, sizeof(body), "{\"writeKey\":\"\\u0057%s\"}", WK_A1 + 1);
    with_body(body);
    expect_accept(KA_KEY_WRITE, KID_WK_A1, ORG_A, WS_A1, CN_A1);
    /* A workspace header is ignored. */
    ingest(NULL, "a, b");
    snprintf(body, sizeof(body), "{\"writeKey\":\"%s\"}", WK_A1);
    with_body(body);
    expect_accept(KA_KEY_WRITE, KID_WK_A1, ORG_A, WS_A1, CN_A1);
}

static void test_ingest_body_key_unavailable(void **state)
{
    char body[128];

    (void)state;
    snprintf(body, sizeof(body), "{\"writeKey\":\"%s\"}", WK_A1);
    F.fail_write = 1;
    ingest(NULL, NULL);
    with_body(body);
    expect_unavailable();
    F.fail_write = 0;
    F.fail_org = 1;
    ingest(NULL, NULL);
    with_body(body);
    expect_unavailable();
    F.fail_org = 0;
}

/* ---- §6.3 settings ---- */

#define M_SETTINGS "event write key in the path is invalid"

static void settings(const char *key)
{
    static char path[256]; /* the route points into it */
    snprintf(path, sizeof(path), "/v1/events/settings/%s", key);
    req("GET", path, NULL, NULL);
    assert_int_equal(R.route.endpoint, KA_EP_SETTINGS);
}

static void test_settings_not_found(void **state)
{
    (void)state;
    settings("");
    expect_refusal(404, "NotFound", "");
    assert_int_equal(calls(), 0);
    settings("a/b");
    expect_refusal(404, "NotFound", "");
    settings("WriteKeyA1xxxxxxxxxxxxxxxxxxxxxx/");
    expect_refusal(404, "NotFound", "");
    assert_int_equal(calls(), 0);
}

static void test_settings_unknown(void **state)
{
    (void)state;
    settings(WK_UNKNOWN);
    expect_refusal(401, "Unauthorized", M_SETTINGS);
    assert_int_equal(D.token_presented, 1);
    assert_int_equal(F.write_calls, 1);
    settings("abc");
    expect_refusal(401, "Unauthorized", M_SETTINGS);
    assert_int_equal(calls(), 0);
    settings("api_AOyrCBBQEmI63fgWAAw8F12XcPvUqkg0aEwlIqnO0xyCeS3NT");
    expect_refusal(401, "Unauthorized", M_SETTINGS);
    assert_int_equal(calls(), 0);
    settings(WK_ALNUM_API);
    expect_refusal(401, "Unauthorized", M_SETTINGS);
}

static void test_settings_accept(void **state)
{
    (void)state;
    settings(WK_A1);
    expect_accept(KA_KEY_WRITE, KID_WK_A1, ORG_A, WS_A1, CN_A1);
    /* A disabled organization does not block it. */
    settings(WK_B1);
    expect_accept(KA_KEY_WRITE, KID_WK_B1, ORG_B, WS_B1, CN_B1);
}

static void test_settings_unavailable(void **state)
{
    (void)state;
    F.fail_write = 1;
    settings(WK_A1);
    expect_unavailable();
    F.fail_write = 0;
}

/* ---- §6.4 organizations ---- */

#define M_ORGS_NO_AUTH                                                                             \
    "Authorization header with the platform management API key is not present in the request"
#define M_ORGS_BEARER                                                                              \
    "Authorization header is invalid; it should be in the format 'Authorization: Bearer "          \
    "<YOUR_PLATFORM_MANAGEMENT_API_KEY>'"
#define M_ORGS_PREFIX                                                                              \
    "platform management APIs require specific keys for authentication (these are keys that "      \
    "begin with 'org_')"
#define M_ORGS_INVALID                                                                             \
    "platform management API key in the Authorization header of the request is not valid"

static void orgs(const char *auth)
{
    req("GET", "/v1/organizations", auth, NULL);
    assert_int_equal(R.route.endpoint, KA_EP_ORGS);
}

static void test_orgs_rows(void **state)
{
    char both[128], key[64];

    (void)state;
    orgs(NULL);
    expect_refusal(401, "Unauthorized", M_ORGS_NO_AUTH);
    assert_int_equal(D.token_presented, 0);
    snprintf(both, sizeof(both), "Bearer %s, Bearer %s", ORGS_KEY, ORGS_KEY);
    orgs(both);
    expect_refusal(400, "BadRequest", M_MULTI_AUTH);
    orgs("Basic x");
    expect_refusal(400, "BadRequest", M_ORGS_BEARER);
    orgs("Bearer");
    expect_refusal(400, "BadRequest", M_ORGS_BEARER);
    orgs(bearer_api(P_API_A));
    expect_refusal(400, "BadRequest", M_ORGS_PREFIX);
    orgs(bearer(WK_A1));
    expect_refusal(400, "BadRequest", M_ORGS_PREFIX);
    orgs(bearer("ORG_abcdefghijABCDEFGHIJ0123456789klmnopqrstKLM"));
    expect_refusal(400, "BadRequest", M_ORGS_PREFIX);
    orgs(bearer("org"));
    expect_refusal(400, "BadRequest", M_ORGS_PREFIX);
    /* Wrong length, one character different, a prefix of it. */
    snprintf(key, sizeof(key), "%.46s", ORGS_KEY);
    orgs(bearer(key));
    expect_refusal(401, "Unauthorized", M_ORGS_INVALID);
    assert_int_equal(D.token_presented, 1);
    snprintf(key, sizeof(key), "%sM", ORGS_KEY);
    orgs(bearer(key));
    expect_refusal(401, "Unauthorized", M_ORGS_INVALID);
    snprintf(key, sizeof(key), "%s", ORGS_KEY);
    key[46] = 'N';
    orgs(bearer(key));
    expect_refusal(401, "Unauthorized", M_ORGS_INVALID);
    snprintf(key, sizeof(key), "%s", ORGS_KEY);
    key[4] = 'b';
    orgs(bearer(key));
    expect_refusal(401, "Unauthorized", M_ORGS_INVALID);
    orgs(bearer("org_"));
    expect_refusal(401, "Unauthorized", M_ORGS_INVALID);
    assert_int_equal(calls(), 0);
}

static void test_orgs_unset(void **state)
{
    (void)state;
    orgs(bearer(ORGS_KEY));
    R.orgs_key = NULL;
    expect_refusal(401, "Unauthorized", M_ORGS_INVALID);
    orgs(bearer("org_"));
    R.orgs_key = NULL;
    expect_refusal(401, "Unauthorized", M_ORGS_INVALID);
}

static void test_orgs_accept(void **state)
{
    (void)state;
    orgs(bearer(ORGS_KEY));
    expect_accept(KA_KEY_ORGS, "organizations", "", "", "");
    assert_int_equal(calls(), 0);
    /* Krenalis-Workspace is ignored, and the store is never read. */
    F.fail_api = F.fail_write = F.fail_org = F.fail_ws = F.fail_conn = 1;
    req("DELETE", "/v1/organizations/" ORG_A, bearer(ORGS_KEY), "a, b");
    expect_accept(KA_KEY_ORGS, "organizations", "", "", "");
    F.fail_api = F.fail_write = F.fail_org = F.fail_ws = F.fail_conn = 0;
}

static void test_decision_unavailable(void **state)
{
    ka_decision d;

    (void)state;
    memset(&d, 0, sizeof(d));
    d.token_presented = 1;
    ka_decision_unavailable(&d);
    assert_int_equal(d.verdict, KA_VERDICT_UNAVAILABLE);
    assert_int_equal(d.status, 503);
    assert_string_equal(d.code, "ServiceUnavailable");
    assert_string_equal(d.message, "request cannot be processed at this time; try again later");
}

/* ---- the decide / read the body / decide again step ---- */

typedef struct {
    int reads;
    int fail; /* what the reader answers instead of a body (0: the body) */
    const char *json;
} body_source;

static int read_source(void *arg, ka_body_fields *fields)
{
    body_source *b = arg;

    b->reads++;
    if (b->fail)
        return b->fail;
    ka_json_scan(b->json, strlen(b->json), fields);
    return 0;
}

static ka_verdict decide_counted(void *arg, const ka_request *req, ka_decision *dec)
{
    (*(int *)arg)++;
    return ka_decide(req, &LK, dec);
}

static void test_decide_with_body(void **state)
{
    char json[128];
    body_source b = {0, 0, json};
    ka_body_fields fields;
    int decisions = 0;

    (void)state;
    snprintf(json, sizeof(json), "{\"connectionId\":\"%s\"}", CN_A1);
    /* A write key in the header: one decision, the body never read. */
    ingest(bearer(WK_A1), NULL);
    assert_int_equal(
        ka_decide_with_body(&R, decide_counted, &decisions, read_source, &b, &fields, &D), 0);
    assert_int_equal(D.verdict, KA_VERDICT_ACCEPT);
    assert_int_equal(decisions, 1);
    assert_int_equal(b.reads, 0);
    assert_null(R.body);
    /* An API key: the connection is in the body, read once and decided on. */
    decisions = 0;
    ingest(bearer_api(P_API_A), NULL);
    assert_int_equal(
        ka_decide_with_body(&R, decide_counted, &decisions, read_source, &b, &fields, &D), 0);
    assert_int_equal(D.verdict, KA_VERDICT_ACCEPT);
    assert_string_equal(D.id.conn, CN_A1);
    assert_int_equal(decisions, 2);
    assert_int_equal(b.reads, 1);
    assert_ptr_equal(R.body, &fields);
    /* A body that cannot be read: the reader's answer as it is, no second decision. */
    decisions = 0;
    b.reads = 0;
    b.fail = 413;
    ingest(bearer_api(P_API_A), NULL);
    assert_int_equal(
        ka_decide_with_body(&R, decide_counted, &decisions, read_source, &b, &fields, &D), 413);
    assert_int_equal(D.verdict, KA_VERDICT_NEED_BODY);
    assert_int_equal(decisions, 1);
    assert_int_equal(b.reads, 1);
    assert_null(R.body);
}

/* The one mapping of a verdict to HTTP. */
static void test_verdict_status(void **state)
{
    ka_decision d;

    (void)state;
    memset(&d, 0, sizeof(d));
    d.verdict = KA_VERDICT_ACCEPT;
    assert_int_equal(ka_verdict_status(&d), 200);
    d.verdict = KA_VERDICT_NEED_BODY;
    assert_int_equal(ka_verdict_status(&d), 0);
    d.verdict = KA_VERDICT_REFUSE;
    d.status = 422;
    assert_int_equal(ka_verdict_status(&d), 422);
    ka_decision_unavailable(&d);
    assert_int_equal(d.verdict, KA_VERDICT_UNAVAILABLE);
    assert_int_equal(ka_verdict_status(&d), 503);
}

/* ---- the canonical path: the one-pass way for plain paths against the full normalization ---- */

static void expect_same_canonical(const char *path, size_t cap)
{
    char a[64], b[64];
    size_t na, nb;

    memset(a, 0, sizeof(a));
    memset(b, 0, sizeof(b));
    na = ka_path_canonical(path, a, cap);
    nb = ka_path_canonical_full(path, b, cap);
    if (na != nb || (na != (size_t)-1 && memcmp(a, b, na) != 0))
        fail_msg("\"%s\" (cap %zu): %zu \"%.*s\", full %zu \"%.*s\"", path, cap, na,
                 (int)(na == (size_t)-1 ? 0 : na), a, nb, (int)(nb == (size_t)-1 ? 0 : nb), b);
}

/* Every path of up to 7 bytes over an alphabet of each byte the normalization treats apart, and
 * random longer ones, at every capacity around their length: fails if the plain way lets any of
 * '.', '/', '%', ';', '\\' or white space through where the full one would change it. */
static void test_canonical_plain_way(void **state)
{
    static const char alpha[] = "/.aZ%;\\ \t2e";
    const size_t na = sizeof(alpha) - 1;
    static const char *const fixed[] = {
        "/",      "//",         "/v1/",    "/v1/ping.txt", "/V1/Organizations/", "/v1/.x",
        "/v1/x.", "/v1/..",     "/a/./b",  "/.hidden/x",   "/v1/events/",        "v1/x",
        "",       "/%2e%2E/v1", "/x.y.z/", "/a.b/c.d"};
    char path[16];
    unsigned long long x = 0x9e3779b97f4a7c15ULL;

    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
        for (size_t cap = 0; cap <= strlen(fixed[i]) + 1; cap++)
            expect_same_canonical(fixed[i], cap);
    for (size_t len = 1; len <= 5; len++) {
        size_t total = 1;
        for (size_t i = 0; i < len; i++)
            total *= na;
        for (size_t k = 0; k < total; k++) {
            size_t v = k;
            for (size_t i = 0; i < len; i++, v /= na)
                path[i] = alpha[v % na];
            path[len] = '\0';
            expect_same_canonical(path, 32);
            expect_same_canonical(path, len);
            expect_same_canonical(path, len - 1);
        }
    }
    for (int n = 0; n < 200000; n++) {
        size_t len = 1 + n % 15;
        path[0] = '/';
        for (size_t i = 1; i < len; i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            path[i] = alpha[x % na];
        }
        path[len] = '\0';
        expect_same_canonical(path, 32);
        expect_same_canonical(path, len);
        expect_same_canonical(path, len - 1);
    }
}

/* ---- ka_classify (SPEC §5) ---- */

static ka_route route(const char *method, const char *path, ka_endpoint configured)
{
    ka_route r;
    memset(&r, 0x5a, sizeof(r));
    ka_classify(method, path, configured, &r);
    return r;
}

static void expect_route_nc(const char *method, const char *path, ka_endpoint ep, int preflight,
                            int body_key, int noncanonical)
{
    ka_route r = route(method, path, KA_EP_AUTO);
    if (r.endpoint != ep || r.preflight_candidate != preflight || r.body_key_allowed != body_key ||
        r.noncanonical != noncanonical)
        fail_msg("%s %s: endpoint %d preflight %d body_key %d noncanonical %d, want %d %d %d %d",
                 method, path, r.endpoint, r.preflight_candidate, r.body_key_allowed,
                 r.noncanonical, ep, preflight, body_key, noncanonical);
}

static void expect_route(const char *method, const char *path, ka_endpoint ep, int preflight,
                         int body_key)
{
    expect_route_nc(method, path, ep, preflight, body_key, 0);
}

/* Organizations; in another spelling than the route table's (not /v1/organizations or below
 * /v1/organizations/ as sent), noncanonical: the organizations key is refused there. */
static void expect_orgs(const char *method, const char *path)
{
    static const char prefix[] = "/v1/organizations";
    size_t n = sizeof(prefix) - 1;
    int exact = strncmp(path, prefix, n) == 0 && (path[n] == '\0' || path[n] == '/');

    expect_route_nc(method, path, KA_EP_ORGS, 0, 0, !exact);
}

static void test_classify_ingestion(void **state)
{
    static const char *const types[] = {"alias", "group", "identify", "page", "screen", "track"};
    char path[64];

    (void)state;
    expect_route("POST", "/v1/events", KA_EP_INGESTION, 0, 1);
    expect_route("OPTIONS", "/v1/events", KA_EP_INGESTION, 1, 0);
    for (size_t i = 0; i < 6; i++) {
        snprintf(path, sizeof(path), "/v1/events/%s", types[i]);
        expect_route("POST", path, KA_EP_INGESTION, 0, 0);
        expect_route("OPTIONS", path, KA_EP_INGESTION, 1, 0);
        expect_route("GET", path, KA_EP_API, 0, 0);
        snprintf(path, sizeof(path), "/v1/events/%s/x", types[i]);
        expect_route("POST", path, KA_EP_API, 0, 0);
    }
    /* Not ingestion. */
    expect_route("GET", "/v1/events", KA_EP_API, 0, 0);
    expect_route("PUT", "/v1/events", KA_EP_API, 0, 0);
    expect_route("post", "/v1/events", KA_EP_API, 0, 0);
    expect_route("POST", "/v1/events/other", KA_EP_API, 0, 0);
    expect_route("POST", "/v1/events/trackx", KA_EP_API, 0, 0);
    expect_route("POST", "/v1/eventsX", KA_EP_API, 0, 0);
    expect_route("POST", "/v1/event", KA_EP_API, 0, 0);
    expect_route("POST", "/v2/events", KA_EP_API, 0, 0);
    expect_route("POST", "/x/v1/events", KA_EP_API, 0, 0);
}

static void test_classify_settings(void **state)
{
    ka_route r;

    (void)state;
    /* HEAD too: Go's ServeMux routes it to Krenalis's GET pattern. */
    r = route("HEAD", "/v1/events/settings/KEY", KA_EP_AUTO);
    assert_int_equal(r.endpoint, KA_EP_SETTINGS);
    assert_int_equal(r.noncanonical, 0);
    assert_string_equal(r.settings_key, "KEY");
    expect_route("HEAD", "/v1/events", KA_EP_API, 0, 0);
    r = route("GET", "/v1/events/settings/KEY", KA_EP_AUTO);
    assert_int_equal(r.endpoint, KA_EP_SETTINGS);
    assert_int_equal(r.preflight_candidate, 0);
    assert_int_equal(r.body_key_allowed, 0);
    assert_non_null(r.settings_key);
    assert_string_equal(r.settings_key, "KEY");
    r = route("OPTIONS", "/v1/events/settings/KEY", KA_EP_AUTO);
    assert_int_equal(r.endpoint, KA_EP_SETTINGS);
    assert_int_equal(r.preflight_candidate, 1);
    r = route("GET", "/v1/events/settings/", KA_EP_AUTO);
    assert_int_equal(r.endpoint, KA_EP_SETTINGS);
    assert_string_equal(r.settings_key, "");
    r = route("GET", "/v1/events/settings/a/b", KA_EP_AUTO);
    assert_int_equal(r.endpoint, KA_EP_SETTINGS);
    assert_string_equal(r.settings_key, "a/b");
    expect_route("POST", "/v1/events/settings/KEY", KA_EP_API, 0, 0);
    expect_route("GET", "/v1/events/settings", KA_EP_API, 0, 0);
    expect_route("GET", "/v1/events/settingsKEY", KA_EP_API, 0, 0);
    r = route("GET", "/v1/users", KA_EP_AUTO);
    assert_null(r.settings_key);
}

static void test_classify_organizations(void **state)
{
    (void)state;
    expect_route("GET", "/v1/organizations", KA_EP_ORGS, 0, 0);
    expect_route("POST", "/v1/organizations", KA_EP_ORGS, 0, 0);
    expect_route("GET", "/v1/organizations/", KA_EP_ORGS, 0, 0);
    expect_route("DELETE", "/v1/organizations/abc", KA_EP_ORGS, 0, 0);
    expect_route("PUT", "/v1/organizations/abc/workspaces/x", KA_EP_ORGS, 0, 0);
    expect_route("OPTIONS", "/v1/organizations", KA_EP_ORGS, 0, 0);
    expect_route("GET", "/v1/organization", KA_EP_API, 0, 0);
    expect_route("GET", "/v2/organizations", KA_EP_API, 0, 0);
    expect_route("GET", "/x/v1/organizations", KA_EP_API, 0, 0);
}

/* Issue 12: whatever a backend could normalize into the Organizations API is organizations
 * (fail closed), so an API key never reaches it through another spelling. */
static void test_classify_organizations_any_spelling(void **state)
{
    static const char *const paths[] = {"/v1//organizations",
                                        "//v1/organizations",
                                        "/v1///organizations/x",
                                        "/v1/organizations%2Fabc",
                                        "/v1%2Forganizations",
                                        "/v1/organizations%252Fabc",
                                        "/v1/%6frganizations",
                                        "/v1/%256frganizations",
                                        "/v1/organizations;x",
                                        "/v1/organizations%3bx",
                                        "/v1;x/organizations",
                                        "/v1/Organizations",
                                        "/V1/ORGANIZATIONS",
                                        "/v1/organizations.",
                                        "/v1/organizations%2e",
                                        "/v1/organizations%20",
                                        "/v1/organizations%09",
                                        "/v1/organizations~",
                                        "/v1/organizations\\x",
                                        "/v1\\organizations",
                                        "/v1/organizations%23x",
                                        "/v1/organizations%3fx",
                                        "/v1/./organizations",
                                        "/v1/x/../organizations",
                                        "/v1/x/..;/organizations",
                                        "/v1/x/%2e%2e/organizations",
                                        "/v1/x/%2E%2E%2Forganizations",
                                        "/v1./organizations",
                                        "/v1 /organizations",
                                        "/v1/organizationsX",
                                        "/v1/organizations-x/y",
                                        "/v1/a/b/c/d/e/../../../../../organizations"};
    char long_path[KA_PATH_CANON_MAX + 64];

    (void)state;
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        expect_orgs("GET", paths[i]);
        expect_orgs("POST", paths[i]);
    }
    /* Near misses that no normalization turns into it. */
    expect_route("GET", "/v1/organization", KA_EP_API, 0, 0);
    expect_route("GET", "/v1/x/organizations", KA_EP_API, 0, 0);
    expect_route("GET", "/v1/organizations/../users", KA_EP_API, 0, 0);
    expect_route("GET", "/v1/x%2F..%2F..%2Fusers", KA_EP_API, 0, 0);
    /* Too long to normalize: only a plain path is told apart from it. */
    memset(long_path, 'a', sizeof(long_path) - 1);
    long_path[sizeof(long_path) - 1] = '\0';
    memcpy(long_path, "/v1/users/", 10);
    expect_route("GET", long_path, KA_EP_API, 0, 0);
    long_path[20] = '%';
    expect_orgs("GET", long_path);
    long_path[20] = 'a';
    long_path[30] = ';';
    expect_orgs("GET", long_path);
    memcpy(long_path, "/V1/Organizations/", 18);
    long_path[30] = 'a';
    expect_orgs("GET", long_path);
}

/* A segment that only looks like ".." once decoded, cut at ';' or trimmed ("..;x", "%2e%2e" in
 * r->uri from "%252e%252e", ".. ", "..\\x") is resolved by no backend: Go's ServeMux cleans only
 * literal dot segments and routes "/v1/organizations/..;x" to a {id} of the Organizations API.
 * Such a path stays below /v1/organizations (fail closed); a literal ".." is resolved. */
static void test_classify_organizations_dot_lookalikes(void **state)
{
    static const char *const paths[] = {
        "/v1/organizations/..;x",          "/v1/organizations/..;",
        "/v1/organizations/..%3bx",        "/v1/organizations/.. ",
        "/v1/organizations/..\t",          "/v1/organizations/..\\x",
        "/v1/organizations/%2e%2e",        "/v1/organizations/%2e%2e/x",
        "/v1/organizations/x/..%2f..%2fy", "/v1/organizations/..;/..;/users",
        "/V1/Organizations/..;x",          "/v1//organizations/..;x"};

    (void)state;
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        expect_orgs("GET", paths[i]);
        expect_orgs("POST", paths[i]);
    }
    expect_route("GET", "/v1/organizations/../users", KA_EP_API, 0, 0);
    expect_route("GET", "/v1/organizations/./../users", KA_EP_API, 0, 0);
    expect_route("GET", "/v1/x/..;/users", KA_EP_API, 0, 0);
}

/* mod_proxy's nocanon forwards the path as sent, not r->uri: it is classified too. */
static void test_classify_sent(void **state)
{
    ka_route r;

    (void)state;
    ka_classify_sent("GET", "/v1/x", "/v1/organizations/%2e%2e/x", KA_EP_AUTO, &r);
    assert_int_equal(r.endpoint, KA_EP_ORGS);
    assert_int_equal(r.noncanonical, 0);
    ka_classify_sent("GET", "/v1/organizations", "/v1/x/%2e%2e/organizations", KA_EP_AUTO, &r);
    assert_int_equal(r.endpoint, KA_EP_ORGS);
    assert_int_equal(r.noncanonical, 1);
    ka_classify_sent("POST", "/v1/events/track", "/v1/events%2Ftrack", KA_EP_AUTO, &r);
    assert_int_equal(r.endpoint, KA_EP_INGESTION);
    assert_int_equal(r.noncanonical, 1);
    ka_classify_sent("POST", "/v1/events", "/v1/%65vents", KA_EP_AUTO, &r);
    assert_int_equal(r.endpoint, KA_EP_INGESTION);
    assert_int_equal(r.noncanonical, 1);
    assert_int_equal(r.body_key_allowed, 0);
    ka_classify_sent("GET", "/v1/events/settings/k", "/v1/events%2Fsettings%2Fk", KA_EP_AUTO, &r);
    assert_int_equal(r.endpoint, KA_EP_SETTINGS);
    assert_int_equal(r.noncanonical, 1);
    assert_null(r.settings_key);
    /* the same path, or none (no nocanon), or an explicit class: r->uri alone */
    ka_classify_sent("POST", "/v1/events", "/v1/events", KA_EP_AUTO, &r);
    assert_int_equal(r.endpoint, KA_EP_INGESTION);
    assert_int_equal(r.noncanonical, 0);
    assert_int_equal(r.body_key_allowed, 1);
    ka_classify_sent("POST", "/v1/events", NULL, KA_EP_AUTO, &r);
    assert_int_equal(r.noncanonical, 0);
    ka_classify_sent("GET", "/v1/x", "/v1/organizations/%2e%2e/x", KA_EP_API, &r);
    assert_int_equal(r.endpoint, KA_EP_API);
    ka_classify_sent("GET", "/v1/users", "/v1/%75sers", KA_EP_AUTO, &r);
    assert_int_equal(r.endpoint, KA_EP_API);
}

/* Paths that are ingestion or settings only once normalized: API keys meet the ingestion
 * rules, write keys are refused there (they are good on the exact paths only). */
static void test_classify_noncanonical_ingestion(void **state)
{
    ka_route r;

    (void)state;
    expect_route_nc("POST", "/v1//events", KA_EP_INGESTION, 0, 0, 1);
    expect_route_nc("POST", "/v1/events/", KA_EP_INGESTION, 0, 0, 1);
    expect_route_nc("POST", "/v1/events/Track", KA_EP_INGESTION, 0, 0, 1);
    expect_route_nc("POST", "/V1/EVENTS", KA_EP_INGESTION, 0, 0, 1);
    expect_route_nc("POST", "/v1/events%2Ftrack", KA_EP_INGESTION, 0, 0, 1);
    expect_route_nc("POST", "/v1/events;x", KA_EP_INGESTION, 0, 0, 1);
    expect_route_nc("POST", "/v1/x/../events/page", KA_EP_INGESTION, 0, 0, 1);
    expect_route_nc("OPTIONS", "/v1//events", KA_EP_INGESTION, 1, 0, 1);
    expect_route_nc("GET", "/v1//events", KA_EP_API, 0, 0, 0);
    expect_route_nc("POST", "/v1/eventsX", KA_EP_API, 0, 0, 0);
    r = route("GET", "/v1//events/settings/KEY", KA_EP_AUTO);
    assert_int_equal(r.endpoint, KA_EP_SETTINGS);
    assert_int_equal(r.noncanonical, 1);
    assert_null(r.settings_key); /* 404 */
    r = route("GET", "/V1/events/settings/KEY", KA_EP_AUTO);
    assert_int_equal(r.endpoint, KA_EP_SETTINGS);
    assert_null(r.settings_key);
}

/* ---- the memo key (the module's connection memo) ---- */

static void test_memo_key_same_inputs(void **state)
{
    ka_memo_key k;
    ka_request q;
    char copy[128];

    (void)state;
    api(bearer_api(P_API_A), NULL);
    assert_int_equal(ka_memo_key_set(&k, &R), 1);
    assert_int_equal(ka_memo_key_match(&k, &R), 1);
    /* Equal values at other addresses match: the key holds values, not pointers. */
    q = R;
    strcpy(copy, R.authorization);
    q.authorization = copy;
    assert_int_equal(ka_memo_key_match(&k, &q), 1);
    /* With a workspace header, the same header matches. */
    api(bearer_api(P_API_A), WS_A2);
    assert_int_equal(ka_memo_key_set(&k, &R), 1);
    q = R;
    strcpy(copy, WS_A2);
    q.workspace = copy;
    assert_int_equal(ka_memo_key_match(&k, &q), 1);
    /* An empty key matches nothing. */
    memset(&k, 0, sizeof(k));
    assert_int_equal(ka_memo_key_match(&k, &R), 0);
}

static void test_memo_key_any_difference(void **state)
{
    ka_memo_key k;
    ka_request q;
    char auth[128];
    size_t n;

    (void)state;
    api(bearer_api(P_API_A), NULL);
    assert_int_equal(ka_memo_key_set(&k, &R), 1);
    /* Any byte of Authorization, its length, its case. */
    strcpy(auth, R.authorization);
    n = strlen(auth);
    for (size_t i = 0; i < n; i++) {
        q = R;
        q.authorization = auth;
        auth[i] ^= 0x01;
        assert_int_equal(ka_memo_key_match(&k, &q), 0);
        auth[i] ^= 0x01;
    }
    q = R;
    q.authorization = auth;
    auth[n - 1] = '\0';
    assert_int_equal(ka_memo_key_match(&k, &q), 0);
    q.authorization = bearer_api(P_API_B);
    assert_int_equal(ka_memo_key_match(&k, &q), 0);
    q.authorization = NULL;
    assert_int_equal(ka_memo_key_match(&k, &q), 0);
    /* A workspace header added, another one, an empty one. */
    q = R;
    q.workspace = WS_A2;
    assert_int_equal(ka_memo_key_match(&k, &q), 0);
    api(bearer_api(P_API_A), WS_A2);
    assert_int_equal(ka_memo_key_set(&k, &R), 1);
    q = R;
    q.workspace = WS_A1;
    assert_int_equal(ka_memo_key_match(&k, &q), 0);
    q.workspace = "";
    assert_int_equal(ka_memo_key_match(&k, &q), 0);
    q.workspace = NULL;
    assert_int_equal(ka_memo_key_match(&k, &q), 0);
    /* The workspace policy, the endpoint, a body. */
    q = R;
    q.ws_policy = KA_WS_REQUIRED;
    assert_int_equal(ka_memo_key_match(&k, &q), 0);
    q = R;
    q.route.endpoint = KA_EP_INGESTION;
    assert_int_equal(ka_memo_key_match(&k, &q), 0);
    q.route.endpoint = KA_EP_SETTINGS;
    assert_int_equal(ka_memo_key_match(&k, &q), 0);
    q.route.endpoint = KA_EP_ORGS;
    assert_int_equal(ka_memo_key_match(&k, &q), 0);
}

static void test_memo_key_not_kept(void **state)
{
    ka_memo_key k;
    char auth[KA_MEMO_AUTH_MAX + 2];
    ka_body_fields body;

    (void)state;
    memset(&k, 0x5a, sizeof(k));
    /* Other endpoints, a body, no Authorization: never kept. */
    ingest(bearer_api(P_API_A), NULL);
    assert_int_equal(ka_memo_key_set(&k, &R), 0);
    R.route.endpoint = KA_EP_SETTINGS;
    assert_int_equal(ka_memo_key_set(&k, &R), 0);
    R.route.endpoint = KA_EP_ORGS;
    assert_int_equal(ka_memo_key_set(&k, &R), 0);
    api(bearer_api(P_API_A), NULL);
    memset(&body, 0, sizeof(body));
    R.body = &body;
    assert_int_equal(ka_memo_key_set(&k, &R), 0);
    api(NULL, NULL);
    assert_int_equal(ka_memo_key_set(&k, &R), 0);
    api("", NULL);
    assert_int_equal(ka_memo_key_set(&k, &R), 0);
    /* Longer values than any accepted decision has: 64 bytes is kept, 65 is not. */
    memset(auth, 'a', sizeof(auth));
    auth[KA_MEMO_AUTH_MAX + 1] = '\0';
    api(auth, NULL);
    assert_int_equal(ka_memo_key_set(&k, &R), 0);
    auth[KA_MEMO_AUTH_MAX] = '\0';
    assert_int_equal(ka_memo_key_set(&k, &R), 1);
    assert_int_equal(ka_memo_key_match(&k, &R), 1);
    api(bearer_api(P_API_A), "w0123456789ab");
    assert_int_equal(ka_memo_key_set(&k, &R), 0);
    api(bearer_api(P_API_A), "w0123456789a");
    assert_int_equal(ka_memo_key_set(&k, &R), 1);
}

static void test_classify_api(void **state)
{
    (void)state;
    expect_route("GET", "/v1/users", KA_EP_API, 0, 0);
    expect_route("GET", "/", KA_EP_API, 0, 0);
    expect_route("GET", "", KA_EP_API, 0, 0);
    expect_route("OPTIONS", "/v1/users", KA_EP_API, 0, 0);
    expect_route("POST", "/v1/workspaces", KA_EP_API, 0, 0);
}

static void test_classify_configured(void **state)
{
    ka_route r;

    (void)state;
    r = route("POST", "/v1/events", KA_EP_API);
    assert_int_equal(r.endpoint, KA_EP_API);
    assert_int_equal(r.body_key_allowed, 0);
    assert_int_equal(r.preflight_candidate, 0);
    r = route("POST", "/collect", KA_EP_INGESTION);
    assert_int_equal(r.endpoint, KA_EP_INGESTION);
    assert_int_equal(r.body_key_allowed, 1);
    r = route("POST", "/collect/track", KA_EP_INGESTION);
    assert_int_equal(r.body_key_allowed, 0);
    r = route("OPTIONS", "/collect", KA_EP_INGESTION);
    assert_int_equal(r.preflight_candidate, 1);
    assert_int_equal(r.body_key_allowed, 0);
    r = route("GET", "/conf/settings/KEY", KA_EP_SETTINGS);
    assert_int_equal(r.endpoint, KA_EP_SETTINGS);
    assert_string_equal(r.settings_key, "KEY");
    r = route("GET", "/conf", KA_EP_SETTINGS);
    assert_null(r.settings_key);
    r = route("OPTIONS", "/conf/settings/KEY", KA_EP_SETTINGS);
    assert_int_equal(r.preflight_candidate, 1);
    r = route("GET", "/admin", KA_EP_ORGS);
    assert_int_equal(r.endpoint, KA_EP_ORGS);
    assert_int_equal(r.preflight_candidate, 0);
    r = route("OPTIONS", "/v1/events", KA_EP_API);
    assert_int_equal(r.preflight_candidate, 0);
    r = route("GET", "/v1/organizations", KA_EP_API);
    assert_int_equal(r.endpoint, KA_EP_API);
}

/* ---- SPEC §11.2: connection roles and strategies ---- */

/* A write key of a Destination connection is unknown everywhere, before its organization is
 * read; a Source without a strategy authenticates ingestion but not the settings endpoint. */
static void test_write_key_destination(void **state)
{
    char body[128];

    (void)state;
    ingest(bearer(WK_DEST), NULL);
    expect_refusal(401, "Unauthorized", "event write key in the Authorization header is not valid");
    assert_int_equal(F.conn_calls, 1);
    assert_int_equal(F.org_calls, 0);
    req("GET", "/v1/events/settings/WriteKeyDestinationxxxxxxxxxxxxx", NULL, NULL);
    assert_string_equal(R.route.settings_key, WK_DEST);
    expect_refusal(401, "Unauthorized", "event write key in the path is invalid");
    ingest(NULL, NULL);
    snprintf(body, sizeof(body), "{\"writeKey\":\"%s\"}", WK_DEST);
    with_body(body);
    expect_refusal(401, "Unauthorized", "the event write key in the request body does not exist");
}

static void test_write_key_no_strategy(void **state)
{
    char path[80], body[128];

    (void)state;
    ingest(bearer(WK_NOSTRAT), NULL);
    expect_accept(KA_KEY_WRITE, "kwN123456789", ORG_A, WS_A1, CN_AN);
    ingest(NULL, NULL);
    snprintf(body, sizeof(body), "{\"writeKey\":\"%s\"}", WK_NOSTRAT);
    with_body(body);
    expect_accept(KA_KEY_WRITE, "kwN123456789", ORG_A, WS_A1, CN_AN);
    snprintf(path, sizeof(path), "/v1/events/settings/%s", WK_NOSTRAT);
    req("GET", path, NULL, NULL);
    expect_refusal(401, "Unauthorized", "event write key in the path is invalid");
    snprintf(path, sizeof(path), "/v1/events/settings/%s", WK_A1);
    req("GET", path, NULL, NULL);
    expect_accept(KA_KEY_WRITE, KID_WK_A1, ORG_A, WS_A1, CN_A1);
}

static void test_write_key_conn_unavailable(void **state)
{
    (void)state;
    F.fail_conn = 1;
    ingest(bearer(WK_A1), NULL);
    expect_refusal(503, "ServiceUnavailable",
                   "request cannot be processed at this time; try again later");
}

/* An API key's connectionId may name any connection of its organization, whatever its role. */
static void test_ingest_api_any_role(void **state)
{
    (void)state;
    ingest(bearer_api(P_API_A), NULL);
    with_body("{\"connectionId\":\"" CN_AD "\"}");
    expect_accept(KA_KEY_API, KID_API_A, ORG_A, WS_A1, CN_AD);
    ingest(bearer_api(P_API_R), NULL);
    with_body("{\"connectionId\":\"" CN_AN "\"}");
    expect_accept(KA_KEY_API, KID_API_R, ORG_A, WS_A1, CN_AN);
}

int run_decide_tests(void)
{
    const struct CMUnitTest tests[] = {
        T(test_api_no_authorization),
        T(test_api_multiple_authorization),
        T(test_api_invalid_bearer),
        T(test_api_prefix),
        T(test_api_malformed),
        T(test_api_unknown),
        T(test_api_org_disabled),
        T(test_api_ws_multiple),
        T(test_api_ws_restricted),
        T(test_api_ws_invalid),
        T(test_api_ws_not_found),
        T(test_api_ws_required),
        T(test_api_ws_forbidden),
        T(test_api_accept),
        T(test_api_unavailable),
        T(test_ingest_multiple_authorization),
        T(test_ingest_invalid_bearer),
        T(test_ingest_api_malformed),
        T(test_ingest_api_unknown),
        T(test_ingest_api_disabled),
        T(test_ingest_api_workspace_rows),
        T(test_ingest_api_needs_body),
        T(test_ingest_api_connection_required),
        T(test_ingest_api_connection_not_exist),
        T(test_ingest_api_accept),
        T(test_ingest_api_unavailable),
        T(test_ingest_write_key_header),
        T(test_ingest_write_key_unknown),
        T(test_ingest_write_key_disabled),
        T(test_ingest_write_key_unavailable),
        T(test_ingest_no_credential),
        T(test_ingest_body_key_not_string),
        T(test_ingest_body_key_empty),
        T(test_ingest_body_key_unknown),
        T(test_ingest_body_key_disabled),
        T(test_ingest_body_key_with_connection),
        T(test_ingest_repeated_connection_id),
        T(test_ingest_body_key_case_variants),
        T(test_ingest_noncanonical_path),
        T(test_ingest_body_key_accept),
        T(test_ingest_body_key_unavailable),
        T(test_settings_not_found),
        T(test_settings_unknown),
        T(test_settings_accept),
        T(test_settings_unavailable),
        T(test_orgs_rows),
        T(test_orgs_unset),
        T(test_orgs_accept),
        T(test_decision_unavailable),
        T(test_decide_with_body),
        T(test_verdict_status),
        T(test_canonical_plain_way),
        T(test_classify_ingestion),
        T(test_classify_settings),
        T(test_classify_organizations),
        T(test_classify_organizations_any_spelling),
        T(test_classify_organizations_dot_lookalikes),
        T(test_classify_sent),
        T(test_classify_noncanonical_ingestion),
        T(test_classify_api),
        T(test_classify_configured),
        T(test_memo_key_same_inputs),
        T(test_memo_key_any_difference),
        T(test_memo_key_not_kept),
        T(test_write_key_destination),
        T(test_write_key_no_strategy),
        T(test_write_key_conn_unavailable),
        T(test_ingest_api_any_role),
    };
    return cmocka_run_group_tests_name("decide", tests, group_setup, NULL);
}
