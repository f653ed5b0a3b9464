/* The decision fuzzers' tables for the fake store (tests/common/fake_store.h, shared with the
 * unit tests), and facts about them for the oracles. A violated check of the fake is a CHECK
 * failure (a crash libFuzzer keeps). */
#ifndef KA_FAKE_DATA_H
#define KA_FAKE_DATA_H

#include "decide.h"
#include "fuzz_common.h"
#include "token.h"

#define FAKE_STORE_CHECK(x) CHECK(x)
#include "fake_store.h"

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

static inline void fake_init(void)
{
    static int done;
    if (done)
        return;
    done = 1;
    for (size_t i = 0; i < FAKE_NAPI; i++) {
        for (int j = 0; j < KA_PAYLOAD_LEN; j++)
            FAKE_API[i].secret[j] = (uint8_t)(0x11 * (i + 1) + 7 * j);
        memcpy(FAKE_API[i].token, "api_", 4);
        ka_api_body_encode(FAKE_API[i].secret, FAKE_API[i].token + 4);
        FAKE_API[i].token[KA_API_TOKEN_LEN] = '\0';
        CHECK(ka_api_body_parse(FAKE_API[i].token + 4, KA_API_BODY_LEN, FAKE_API[i].secret));
    }
    /* A write key is found by its characters. */
    for (size_t i = 0; i < FAKE_NWRITE; i++) {
        CHECK(ka_write_key_valid(FAKE_WRITE[i].token, strlen(FAKE_WRITE[i].token)));
        memcpy(FAKE_WRITE[i].secret, FAKE_WRITE[i].token, KA_WRITE_KEY_LEN);
    }
}

static const fake_data FAKE_DATA = {FAKE_ORGS,  sizeof(FAKE_ORGS) / sizeof(FAKE_ORGS[0]),
                                    FAKE_WSS,   sizeof(FAKE_WSS) / sizeof(FAKE_WSS[0]),
                                    FAKE_CONNS, sizeof(FAKE_CONNS) / sizeof(FAKE_CONNS[0]),
                                    FAKE_API,   FAKE_NAPI,
                                    FAKE_WRITE, FAKE_NWRITE};

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
