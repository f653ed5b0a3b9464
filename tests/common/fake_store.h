/* An in-memory store behind ka_lookup, the one fake of the store look-ups: the unit tests of
 * the decision (tests/unit/test_decide.c) and the fuzzers (tests/fuzz/fake_data.h) give it their
 * tables. It counts its calls, fails on demand (a kind of look-up, or every call from the nth
 * on, as an unreadable store would), and checks that the decision only ever asks about
 * well-formed things (a well-formed write key, valid IDs). A record is left untouched on
 * KA_NOTFOUND and KA_FAIL, as the store does. */
#ifndef KA_FAKE_STORE_H
#define KA_FAKE_STORE_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "decide.h"
#include "token.h"

/* What a violated check does; the fuzzers make it their CHECK. */
#ifndef FAKE_STORE_CHECK
#define FAKE_STORE_CHECK(x)                                                                        \
    do {                                                                                           \
        if (!(x)) {                                                                                \
            fprintf(stderr, "fake store: check failed: %s\n", #x);                                 \
            abort();                                                                               \
        }                                                                                          \
    } while (0)
#endif

typedef struct {
    const char *id;
    int enabled;
} fake_org;

/* A workspace (ws NULL) or a connection. */
typedef struct {
    const char *id, *org, *ws;
    unsigned flags; /* connections: KA_CONN_* */
} fake_ent;

/* A key, found by the 32 bytes the store finds it by (HMAC(secret, those bytes)): an API key's
 * payload, or a write key's characters. */
typedef struct {
    int stored;       /* the store knows it */
    ka_key_type type; /* as stored (a mismatch is a corrupt record the code must refuse) */
    const char *id, *org, *ws, *conn; /* ws and conn may be NULL or "" */
    uint8_t secret[KA_PAYLOAD_LEN];
    char token[KA_API_TOKEN_LEN + 1]; /* the credential, when the test keeps it */
} fake_key;

typedef struct {
    const fake_org *orgs;
    size_t norgs;
    const fake_ent *wss;
    size_t nwss;
    const fake_ent *conns;
    size_t nconns;
    const fake_key *api_keys; /* what the api_key look-up searches */
    size_t napi;
    const fake_key *write_keys; /* what the write_key look-up searches (may be api_keys) */
    size_t nwrite;
} fake_data;

typedef struct {
    const fake_data *data;
    int calls, api_calls, write_calls, org_calls, ws_calls, conn_calls;
    int fail_from; /* 0: never; n: the nth call and later return KA_FAIL */
    int fail_api, fail_write, fail_org, fail_ws, fail_conn; /* that kind of look-up fails */
    int failed;                                             /* some call returned KA_FAIL */
} fake_store;

/* Counts a call; 1 when it must fail. */
static inline int fake_enter(fake_store *f, int *kind_calls, int fail_kind)
{
    (*kind_calls)++;
    f->calls++;
    if (fail_kind || (f->fail_from > 0 && f->calls >= f->fail_from)) {
        f->failed = 1;
        return 1;
    }
    return 0;
}

static inline void fake_check_id(const char *id)
{
    FAKE_STORE_CHECK(id != NULL);
    FAKE_STORE_CHECK(ka_id_valid(id, strlen(id)));
}

static inline ka_store_status fake_find_key(const fake_key *t, size_t n, const void *bytes,
                                            ka_key_rec *rec)
{
    for (size_t i = 0; i < n; i++) {
        const fake_key *k = &t[i];
        if (!k->stored || memcmp(k->secret, bytes, KA_PAYLOAD_LEN) != 0)
            continue;
        memset(rec, 0, sizeof(*rec));
        rec->type = k->type;
        snprintf(rec->id, sizeof(rec->id), "%s", k->id);
        snprintf(rec->org, sizeof(rec->org), "%s", k->org);
        snprintf(rec->ws, sizeof(rec->ws), "%s", k->ws ? k->ws : "");
        snprintf(rec->conn, sizeof(rec->conn), "%s", k->conn ? k->conn : "");
        /* As ka_get_key: the decision's fields only (format 3 keeps the creation time, hint
         * and name in key-ids, which the request path never reads). */
        return KA_OK;
    }
    return KA_NOTFOUND;
}

static inline ka_store_status fake_api_key(void *ctx, const uint8_t payload[KA_PAYLOAD_LEN],
                                           ka_key_rec *rec)
{
    fake_store *f = ctx;

    if (fake_enter(f, &f->api_calls, f->fail_api))
        return KA_FAIL;
    return fake_find_key(f->data->api_keys, f->data->napi, payload, rec);
}

static inline ka_store_status fake_write_key(void *ctx, const char key[KA_WRITE_KEY_LEN],
                                             ka_key_rec *rec)
{
    fake_store *f = ctx;

    FAKE_STORE_CHECK(ka_write_key_valid(key, KA_WRITE_KEY_LEN));
    if (fake_enter(f, &f->write_calls, f->fail_write))
        return KA_FAIL;
    return fake_find_key(f->data->write_keys, f->data->nwrite, key, rec);
}

static inline void fake_fill(ka_entity *e, const char *id, const char *org, const char *ws,
                             int enabled)
{
    memset(e, 0, sizeof(*e));
    snprintf(e->id, sizeof(e->id), "%s", id);
    snprintf(e->org, sizeof(e->org), "%s", org ? org : "");
    snprintf(e->ws, sizeof(e->ws), "%s", ws ? ws : "");
    e->enabled = enabled;
    snprintf(e->name, sizeof(e->name), "name of %s", id);
}

static inline ka_store_status fake_org_get(void *ctx, const char *id, ka_entity *e)
{
    fake_store *f = ctx;

    fake_check_id(id);
    if (fake_enter(f, &f->org_calls, f->fail_org))
        return KA_FAIL;
    for (size_t i = 0; i < f->data->norgs; i++)
        if (strcmp(f->data->orgs[i].id, id) == 0) {
            fake_fill(e, id, NULL, NULL, f->data->orgs[i].enabled);
            return KA_OK;
        }
    return KA_NOTFOUND;
}

static inline ka_store_status fake_ent_get(const fake_ent *t, size_t n, const char *id,
                                           ka_entity *e)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(t[i].id, id) == 0) {
            fake_fill(e, id, t[i].org, t[i].ws, 1);
            e->conn_flags = t[i].flags;
            return KA_OK;
        }
    return KA_NOTFOUND;
}

static inline ka_store_status fake_ws_get(void *ctx, const char *id, ka_entity *e)
{
    fake_store *f = ctx;

    fake_check_id(id);
    if (fake_enter(f, &f->ws_calls, f->fail_ws))
        return KA_FAIL;
    return fake_ent_get(f->data->wss, f->data->nwss, id, e);
}

static inline ka_store_status fake_conn_get(void *ctx, const char *id, ka_entity *e)
{
    fake_store *f = ctx;

    fake_check_id(id);
    if (fake_enter(f, &f->conn_calls, f->fail_conn))
        return KA_FAIL;
    return fake_ent_get(f->data->conns, f->data->nconns, id, e);
}

/* Zeroes the counters; the failure settings stay. */
static inline void fake_reset_counts(fake_store *f)
{
    f->calls = f->api_calls = f->write_calls = f->org_calls = f->ws_calls = f->conn_calls = 0;
    f->failed = 0;
}

/* A fresh fake over data (no failures) and the look-ups over it. */
static inline void fake_lookup(fake_store *f, const fake_data *data, ka_lookup *lk)
{
    memset(f, 0, sizeof(*f));
    f->data = data;
    lk->ctx = f;
    lk->api_key = fake_api_key;
    lk->write_key = fake_write_key;
    lk->org = fake_org_get;
    lk->ws = fake_ws_get;
    lk->conn = fake_conn_get;
    lk->wk_recall = NULL;
    lk->wk_remember = NULL;
}

#endif
