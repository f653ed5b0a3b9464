/* An in-memory fake of the store look-ups (ka_lookup) for the decision fuzzers. It checks that
 * the decision code only ever asks the store about well-formed things (a parsed payload, a
 * well-formed write key, valid IDs), counts the calls, and can be told to fail (KA_FAIL) from
 * the Nth call on, as an unreadable store would. */
#ifndef KA_FAKE_STORE_H
#define KA_FAKE_STORE_H

#include "decide.h"
#include "fuzz_common.h"
#include "token.h"

#define F_ORG_A "orgA23456789" /* enabled */
#define F_ORG_B "orgB23456789" /* disabled */
#define F_ORG_C "orgC23456789" /* enabled */
#define F_ORG_G "orgG23456789" /* gone */
#define F_WS_A1 "wsA123456789"
#define F_WS_A2 "wsA223456789"
#define F_WS_B1 "wsB123456789"
#define F_WS_C1 "wsC123456789"
#define F_WS_G "wsG123456789" /* gone */
#define F_CN_A1 "cnA123456789"
#define F_CN_A2 "cnA223456789"
#define F_CN_B1 "cnB123456789"
#define F_CN_C1 "cnC123456789"
#define F_CN_G "cnG123456789" /* in the gone organization */

typedef struct {
    const char *id;
    int enabled;
} fake_org;

typedef struct {
    const char *id, *org, *ws; /* ws: connections only */
} fake_ent;

typedef struct {
    int stored;       /* the store knows it */
    ka_key_type type; /* as stored (a mismatch is a corrupt record the code must refuse) */
    const char *id, *org, *ws, *conn;
    uint8_t payload[KA_PAYLOAD_LEN];  /* API keys */
    char token[KA_API_TOKEN_LEN + 1]; /* "api_" + body, or the write key */
} fake_key;

static const fake_org FAKE_ORGS[] = {{F_ORG_A, 1}, {F_ORG_B, 0}, {F_ORG_C, 1}};
static const fake_ent FAKE_WSS[] = {{F_WS_A1, F_ORG_A, NULL},
                                    {F_WS_A2, F_ORG_A, NULL},
                                    {F_WS_B1, F_ORG_B, NULL},
                                    {F_WS_C1, F_ORG_C, NULL}};
static const fake_ent FAKE_CONNS[] = {{F_CN_A1, F_ORG_A, F_WS_A1},
                                      {F_CN_A2, F_ORG_A, F_WS_A2},
                                      {F_CN_B1, F_ORG_B, F_WS_B1},
                                      {F_CN_C1, F_ORG_C, F_WS_C1},
                                      {F_CN_G, F_ORG_G, F_WS_G}};

/* API keys: $A0..$A7 in fuzz inputs. */
static fake_key FAKE_API[] = {
    {1, KA_KEY_API, "kyA023456789", F_ORG_A, "", "", {0}, ""},      /* A0 unrestricted */
    {1, KA_KEY_API, "kyA123456789", F_ORG_A, F_WS_A1, "", {0}, ""}, /* A1 restricted */
    {1, KA_KEY_API, "kyA223456789", F_ORG_B, "", "", {0}, ""},      /* A2 disabled org */
    {1, KA_KEY_API, "kyA323456789", F_ORG_G, "", "", {0}, ""},      /* A3 org gone */
    {1, KA_KEY_API, "kyA423456789", F_ORG_A, F_WS_G, "", {0}, ""},  /* A4 workspace gone */
    {1, KA_KEY_API, "kyA523456789", F_ORG_A, F_WS_B1, "", {0}, ""}, /* A5 ws of another org */
    {0, KA_KEY_API, "kyA623456789", F_ORG_A, "", "", {0}, ""},      /* A6 not stored */
    {1, KA_KEY_WRITE, "kyA723456789", F_ORG_A, F_WS_A1, F_CN_A1, {0}, ""}, /* A7 wrong type */
    {1, KA_KEY_API, "kyA823456789", F_ORG_C, "", "", {0}, ""},             /* A8 other org */
};
#define FAKE_NAPI (sizeof(FAKE_API) / sizeof(FAKE_API[0]))

/* Write keys: $W0..$W5. */
static fake_key FAKE_WRITE[] = {
    {1,
     KA_KEY_WRITE,
     "kwA123456789",
     F_ORG_A,
     F_WS_A1,
     F_CN_A1,
     {0},
     "WriteKeyA1aaaaaaaaaaaaaaaaaaaaaa"},
    {1,
     KA_KEY_WRITE,
     "kwB123456789",
     F_ORG_B,
     F_WS_B1,
     F_CN_B1,
     {0},
     "WriteKeyB1bbbbbbbbbbbbbbbbbbbbbb"}, /* disabled org */
    {1,
     KA_KEY_WRITE,
     "kwG123456789",
     F_ORG_G,
     F_WS_G,
     F_CN_G,
     {0},
     "WriteKeyG1gggggggggggggggggggggg"}, /* org gone */
    {0,
     KA_KEY_WRITE,
     "kwQ123456789",
     F_ORG_A,
     F_WS_A1,
     F_CN_A1,
     {0},
     "WriteKeyQ1qqqqqqqqqqqqqqqqqqqqqq"}, /* not stored */
    {1,
     KA_KEY_API,
     "kwT123456789",
     F_ORG_A,
     F_WS_A1,
     F_CN_A1,
     {0},
     "WriteKeyT1tttttttttttttttttttttt"}, /* wrong type */
    {1,
     KA_KEY_WRITE,
     "kwC123456789",
     F_ORG_C,
     F_WS_C1,
     F_CN_C1,
     {0},
     "WriteKeyC1cccccccccccccccccccccc"},
};
#define FAKE_NWRITE (sizeof(FAKE_WRITE) / sizeof(FAKE_WRITE[0]))

#define FAKE_ORGS_KEY "org_OrganizationsKey0123456789abcdefghijklmnopq"

typedef struct {
    int calls, api_calls, write_calls, org_calls, ws_calls, conn_calls;
    int fail_from; /* 0: never; n: the nth call and later return KA_FAIL */
    int failed;    /* some call returned KA_FAIL */
} fake_ctx;

static inline void fake_init(void)
{
    static int done;
    if (done)
        return;
    done = 1;
    for (size_t i = 0; i < FAKE_NAPI; i++) {
        for (int j = 0; j < KA_PAYLOAD_LEN; j++)
            FAKE_API[i].payload[j] = (uint8_t)(0x11 * (i + 1) + 7 * j);
        memcpy(FAKE_API[i].token, "api_", 4);
        ka_api_body_encode(FAKE_API[i].payload, FAKE_API[i].token + 4);
        FAKE_API[i].token[KA_API_TOKEN_LEN] = '\0';
        CHECK(ka_api_body_parse(FAKE_API[i].token + 4, KA_API_BODY_LEN, FAKE_API[i].payload));
    }
    for (size_t i = 0; i < FAKE_NWRITE; i++)
        CHECK(ka_write_key_valid(FAKE_WRITE[i].token, strlen(FAKE_WRITE[i].token)));
}

/* Counts a call; 1 when this one must fail. */
static inline int fake_enter(fake_ctx *c)
{
    c->calls++;
    if (c->fail_from > 0 && c->calls >= c->fail_from) {
        c->failed = 1;
        return 1;
    }
    return 0;
}

static inline void fake_fill_key(const fake_key *k, ka_key_rec *rec)
{
    memset(rec, 0, sizeof(*rec));
    rec->type = k->type;
    snprintf(rec->id, sizeof(rec->id), "%s", k->id);
    snprintf(rec->org, sizeof(rec->org), "%s", k->org);
    snprintf(rec->ws, sizeof(rec->ws), "%s", k->ws);
    snprintf(rec->conn, sizeof(rec->conn), "%s", k->conn);
}

static inline int fake_api_key(void *ctx, const uint8_t payload[KA_PAYLOAD_LEN], ka_key_rec *rec)
{
    fake_ctx *c = ctx;

    c->api_calls++; /* the caller checks that a malformed key never gets here */
    if (fake_enter(c))
        return KA_FAIL;
    for (size_t i = 0; i < FAKE_NAPI; i++)
        if (FAKE_API[i].stored && memcmp(FAKE_API[i].payload, payload, KA_PAYLOAD_LEN) == 0) {
            fake_fill_key(&FAKE_API[i], rec);
            return KA_OK;
        }
    return KA_NOTFOUND;
}

static inline int fake_write_key(void *ctx, const char key[KA_WRITE_KEY_LEN], ka_key_rec *rec)
{
    fake_ctx *c = ctx;

    c->write_calls++;
    CHECK(ka_write_key_valid(key, KA_WRITE_KEY_LEN));
    if (fake_enter(c))
        return KA_FAIL;
    for (size_t i = 0; i < FAKE_NWRITE; i++)
        if (FAKE_WRITE[i].stored && memcmp(FAKE_WRITE[i].token, key, KA_WRITE_KEY_LEN) == 0) {
            fake_fill_key(&FAKE_WRITE[i], rec);
            return KA_OK;
        }
    return KA_NOTFOUND;
}

static inline void fake_check_id(const char *id)
{
    CHECK(id != NULL);
    CHECK(ka_id_valid(id, strlen(id)));
}

static inline int fake_org_get(void *ctx, const char *id, ka_entity *e)
{
    fake_ctx *c = ctx;
    c->org_calls++;
    fake_check_id(id);
    if (fake_enter(c))
        return KA_FAIL;
    for (size_t i = 0; i < sizeof(FAKE_ORGS) / sizeof(FAKE_ORGS[0]); i++)
        if (strcmp(FAKE_ORGS[i].id, id) == 0) {
            memset(e, 0, sizeof(*e));
            snprintf(e->id, sizeof(e->id), "%s", id);
            e->enabled = FAKE_ORGS[i].enabled;
            return KA_OK;
        }
    return KA_NOTFOUND;
}

static inline int fake_ent_get(const fake_ent *t, size_t n, const char *id, ka_entity *e)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(t[i].id, id) == 0) {
            memset(e, 0, sizeof(*e));
            snprintf(e->id, sizeof(e->id), "%s", id);
            snprintf(e->org, sizeof(e->org), "%s", t[i].org);
            snprintf(e->ws, sizeof(e->ws), "%s", t[i].ws ? t[i].ws : "");
            return KA_OK;
        }
    return KA_NOTFOUND;
}

static inline int fake_ws(void *ctx, const char *id, ka_entity *e)
{
    fake_ctx *c = ctx;
    c->ws_calls++;
    fake_check_id(id);
    if (fake_enter(c))
        return KA_FAIL;
    return fake_ent_get(FAKE_WSS, sizeof(FAKE_WSS) / sizeof(FAKE_WSS[0]), id, e);
}

static inline int fake_conn(void *ctx, const char *id, ka_entity *e)
{
    fake_ctx *c = ctx;
    c->conn_calls++;
    fake_check_id(id);
    if (fake_enter(c))
        return KA_FAIL;
    return fake_ent_get(FAKE_CONNS, sizeof(FAKE_CONNS) / sizeof(FAKE_CONNS[0]), id, e);
}

static inline void fake_lookup(fake_ctx *c, ka_lookup *lk)
{
    memset(c, 0, sizeof(*c));
    lk->ctx = c;
    lk->api_key = fake_api_key;
    lk->write_key = fake_write_key;
    lk->org = fake_org_get;
    lk->ws = fake_ws;
    lk->conn = fake_conn;
}

/* Facts about the fake data, for the oracles. */
static inline const fake_org *fake_find_org(const char *id)
{
    for (size_t i = 0; i < sizeof(FAKE_ORGS) / sizeof(FAKE_ORGS[0]); i++)
        if (strcmp(FAKE_ORGS[i].id, id) == 0)
            return &FAKE_ORGS[i];
    return NULL;
}

static inline const fake_ent *fake_find(const fake_ent *t, size_t n, const char *id)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(t[i].id, id) == 0)
            return &t[i];
    return NULL;
}
#define fake_find_ws(id) fake_find(FAKE_WSS, sizeof(FAKE_WSS) / sizeof(FAKE_WSS[0]), id)
#define fake_find_conn(id) fake_find(FAKE_CONNS, sizeof(FAKE_CONNS) / sizeof(FAKE_CONNS[0]), id)

/* The stored key whose token is exactly tok[0..len), or NULL. */
static inline const fake_key *fake_find_token(const fake_key *t, size_t n, const char *tok,
                                              size_t len)
{
    for (size_t i = 0; i < n; i++)
        if (t[i].stored && strlen(t[i].token) == len && memcmp(t[i].token, tok, len) == 0)
            return &t[i];
    return NULL;
}

/* An API key the module may accept: stored as API, organization there and enabled,
 * restricted workspace there and in the same organization. */
static inline int fake_api_usable(const fake_key *k)
{
    const fake_org *o;
    const fake_ent *w;
    if (k == NULL || k->type != KA_KEY_API || (o = fake_find_org(k->org)) == NULL || !o->enabled)
        return 0;
    if (k->ws[0] && ((w = fake_find_ws(k->ws)) == NULL || strcmp(w->org, k->org) != 0))
        return 0;
    return 1;
}

#endif
