/* The look-up cache (src/keycache.c) alone, under threads, and under ka_decide_store over a
 * real store: what it answers, for which snapshot, and that a commit ends its answers. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "tests.h"

#include "decide.h"
#include "keycache.h"
#include "keystore.h"
#include "tmpdir.h"
#include "token.h"

#define TC_ORG "orgC23456789"
#define TC_WS "wsC123456789"
#define TC_KEY "kyC123456789"
#define TC_WK_ID "kyW123456789"
#define TC_CONN "cnC123456789"
#define TC_WK "WkEy0123456789abcdefABCDEF012345" /* an event write key of TC_CONN */

/* A key's place: from its digest or ID itself here (the module uses the credential). */
#define LOC(kc, kind, key) loc_of(kc, kind, key)
static uint64_t loc_of(const ka_keycache *kc, ka_kc_kind kind, const void *key)
{
    return kc ? ka_keycache_locate(kc, kind, key, kind == KA_KC_KEY ? KA_DIGEST_LEN : KA_ID_LEN)
              : 0;
}

static ka_keycache *cache_new(unsigned entries)
{
    void *mem = NULL;
    uint8_t random[KA_KC_RANDOM_LEN];

    if (posix_memalign(&mem, 64, ka_keycache_bytes(entries)) != 0)
        fail_msg("posix_memalign");
    memset(random, 0x5e, sizeof(random));
    return ka_keycache_init(mem, entries, random);
}

/* A value that says which key it belongs to: a torn or misplaced entry cannot pass val_ok. */
static void val_of(unsigned n, ka_kc_val *v)
{
    memset(v, 0, sizeof(*v));
    v->type = KA_KEY_API;
    snprintf(v->id, sizeof(v->id), "%011u", n);
    memcpy(v->org, v->id, KA_ID_LEN);
    memcpy(v->conn, v->id, KA_ID_LEN);
}

static void digest_of(unsigned n, uint8_t d[KA_DIGEST_LEN])
{
    for (int i = 0; i < KA_DIGEST_LEN; i++)
        d[i] = (uint8_t)((n * 2654435761u) >> (i % 4 * 8)) ^ (uint8_t)i;
}

static int val_ok(unsigned n, const ka_kc_val *v)
{
    ka_kc_val want;

    val_of(n, &want);
    return memcmp(&want, v, sizeof(want)) == 0;
}

static void test_roundtrip(void **state)
{
    ka_keycache *kc = cache_new(64);
    ka_kc_snap snap = {7, 3, 100, 1700000000123456789ULL}, other;
    ka_kc_val v, got;
    uint8_t d[KA_DIGEST_LEN];

    (void)state;
    assert_int_equal(ka_keycache_entries(kc), 64);
    digest_of(1, d);
    val_of(1, &v);
    assert_int_equal(ka_keycache_get(kc, &snap, KA_KC_KEY, LOC(kc, KA_KC_KEY, d), d, &got), 0);
    ka_keycache_put(kc, &snap, KA_KC_KEY, LOC(kc, KA_KC_KEY, d), d, &v);
    assert_int_equal(ka_keycache_get(kc, &snap, KA_KC_KEY, LOC(kc, KA_KC_KEY, d), d, &got), 1);
    assert_true(val_ok(1, &got));
    /* Another snapshot, data file or kind: another answer. */
    other = snap, other.txnid = 8;
    assert_int_equal(ka_keycache_get(kc, &other, KA_KC_KEY, LOC(kc, KA_KC_KEY, d), d, &got), 0);
    other = snap, other.ino = 101;
    assert_int_equal(ka_keycache_get(kc, &other, KA_KC_KEY, LOC(kc, KA_KC_KEY, d), d, &got), 0);
    other = snap, other.dev = 4;
    assert_int_equal(ka_keycache_get(kc, &other, KA_KC_KEY, LOC(kc, KA_KC_KEY, d), d, &got), 0);
    /* The same inode number, a file born later: another store. */
    other = snap, other.born += 1;
    assert_int_equal(ka_keycache_get(kc, &other, KA_KC_KEY, LOC(kc, KA_KC_KEY, d), d, &got), 0);
    assert_int_equal(ka_keycache_get(kc, &snap, KA_KC_ORG, LOC(kc, KA_KC_ORG, d), d, &got), 0);
    /* One bit off in the last byte of the digest. */
    d[KA_DIGEST_LEN - 1] ^= 1;
    assert_int_equal(ka_keycache_get(kc, &snap, KA_KC_KEY, LOC(kc, KA_KC_KEY, d), d, &got), 0);
    /* IDs: found by their 12 characters. */
    ka_keycache_put(kc, &snap, KA_KC_WS, LOC(kc, KA_KC_WS, TC_WS), TC_WS, &v);
    assert_int_equal(ka_keycache_get(kc, &snap, KA_KC_WS, LOC(kc, KA_KC_WS, TC_WS), TC_WS, &got),
                     1);
    assert_int_equal(
        ka_keycache_get(kc, &snap, KA_KC_CONN, LOC(kc, KA_KC_CONN, TC_WS), TC_WS, &got), 0);
    assert_int_equal(ka_keycache_get(kc, &snap, KA_KC_WS, LOC(kc, KA_KC_WS, "wsC12345678X"),
                                     "wsC12345678X", &got),
                     0);
    /* Transaction 0 is no snapshot: a zeroed table answers nothing. */
    memset(&other, 0, sizeof(other));
    ka_keycache_put(kc, &other, KA_KC_KEY, LOC(kc, KA_KC_KEY, d), d, &v);
    assert_int_equal(ka_keycache_get(kc, &other, KA_KC_KEY, LOC(kc, KA_KC_KEY, d), d, &got), 0);
    assert_int_equal(ka_keycache_get(NULL, &snap, KA_KC_KEY, LOC(NULL, KA_KC_KEY, d), d, &got), 0);
    free(kc);
}

/* Far more keys than entries: whatever it answers is the key's own value. */
static void test_evictions(void **state)
{
    ka_keycache *kc = cache_new(64);
    ka_kc_snap snap = {1, 1, 1, 1};
    ka_kc_val v, got;
    uint8_t d[KA_DIGEST_LEN];
    int hits = 0;

    (void)state;
    for (unsigned n = 0; n < 5000; n++) {
        digest_of(n, d);
        val_of(n, &v);
        ka_keycache_put(kc, &snap, KA_KC_KEY, LOC(kc, KA_KC_KEY, d), d, &v);
    }
    for (unsigned n = 0; n < 5000; n++) {
        digest_of(n, d);
        if (ka_keycache_get(kc, &snap, KA_KC_KEY, LOC(kc, KA_KC_KEY, d), d, &got)) {
            assert_true(val_ok(n, &got));
            hits++;
        }
    }
    /* The last keys put are there: at most the table's entries, at least most of it. */
    assert_in_range(hits, 32, 64);
    /* A new snapshot reuses stale entries first. */
    snap.txnid = 2;
    digest_of(9999, d);
    val_of(9999, &v);
    ka_keycache_put(kc, &snap, KA_KC_KEY, LOC(kc, KA_KC_KEY, d), d, &v);
    assert_int_equal(ka_keycache_get(kc, &snap, KA_KC_KEY, LOC(kc, KA_KC_KEY, d), d, &got), 1);
    free(kc);
}

/* Writers and readers at once on a small table: a reader never sees a torn entry. */
typedef struct {
    ka_keycache *kc;
    int writer;
    unsigned seed;
    volatile int *stop;
    long hits, bad;
} worker;

static void *work(void *arg)
{
    worker *w = arg;
    ka_kc_snap snap = {3, 3, 3, 3};
    ka_kc_val v;
    uint8_t d[KA_DIGEST_LEN];

    while (!*w->stop) {
        unsigned n = rand_r(&w->seed) % 512;
        digest_of(n, d);
        if (w->writer) {
            val_of(n, &v);
            ka_keycache_put(w->kc, &snap, KA_KC_KEY, LOC(w->kc, KA_KC_KEY, d), d, &v);
        } else if (ka_keycache_get(w->kc, &snap, KA_KC_KEY, LOC(w->kc, KA_KC_KEY, d), d, &v)) {
            w->hits++;
            w->bad += !val_ok(n, &v);
        }
    }
    return NULL;
}

static void test_concurrent(void **state)
{
    ka_keycache *kc = cache_new(64);
    volatile int stop = 0;
    worker w[4];
    pthread_t t[4];
    struct timespec pause = {0, 300 * 1000 * 1000};

    (void)state;
    for (int i = 0; i < 4; i++) {
        w[i] = (worker){kc, i % 2 == 0, (unsigned)i + 1, &stop, 0, 0};
        assert_int_equal(pthread_create(&t[i], NULL, work, &w[i]), 0);
    }
    nanosleep(&pause, NULL);
    stop = 1;
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    for (int i = 1; i < 4; i += 2) {
        assert_true(w[i].hits > 0);
        assert_int_equal(w[i].bad, 0);
    }
    free(kc);
}

/* ---- under ka_decide_store, over a real store ---- */

static char root[64];
static char dir[128];
static ka_store *st;
static uint8_t payload[KA_PAYLOAD_LEN];
static char auth[128];

/* One organization, one workspace, one unrestricted API key (the token in auth) and one
 * event write key (TC_WK) of a Source connection of that workspace. */
static int store_setup(void **state)
{
    char err[512];
    ka_store_txn *txn;
    ka_entity e;
    ka_key_rec rec;
    uint8_t d[KA_DIGEST_LEN];

    (void)state;
    if (ka_test_tmpdir(root, sizeof(root), "keycache") != 0)
        return -1;
    snprintf(dir, sizeof(dir), "%s/store", root);
    if (ka_store_create(dir, NULL, err, sizeof(err)) != KA_OK ||
        ka_store_open(dir, NULL, 0, &st, err, sizeof(err)) != KA_OK ||
        ka_store_write_begin(st, &txn, err, sizeof(err)) != KA_OK) {
        fprintf(stderr, "store: %s\n", err);
        return -1;
    }
    memset(&e, 0, sizeof(e));
    strcpy(e.id, TC_ORG);
    e.enabled = 1;
    ka_put_org(txn, st, &e);
    strcpy(e.org, TC_ORG);
    strcpy(e.id, TC_WS);
    ka_put_ws(txn, st, &e);
    memset(&rec, 0, sizeof(rec));
    rec.type = KA_KEY_API;
    strcpy(rec.id, TC_KEY);
    strcpy(rec.org, TC_ORG);
    memset(payload, 0x42, sizeof(payload));
    ka_digest_api(st, payload, d);
    ka_put_key(txn, st, d, &rec);
    memset(&e, 0, sizeof(e));
    strcpy(e.id, TC_CONN);
    strcpy(e.org, TC_ORG);
    strcpy(e.ws, TC_WS);
    e.enabled = 1;
    ka_put_conn(txn, st, &e);
    memset(&rec, 0, sizeof(rec));
    rec.type = KA_KEY_WRITE;
    strcpy(rec.id, TC_WK_ID);
    strcpy(rec.org, TC_ORG);
    strcpy(rec.ws, TC_WS);
    strcpy(rec.conn, TC_CONN);
    ka_digest_write(st, TC_WK, d);
    ka_put_key(txn, st, d, &rec);
    memcpy(auth, "Bearer api_", 11);
    ka_api_body_encode(payload, auth + 11);
    auth[11 + KA_API_BODY_LEN] = '\0';
    return ka_store_commit(txn, err, sizeof(err)) == KA_OK ? 0 : -1;
}

static int store_teardown(void **state)
{
    (void)state;
    ka_store_close(st);
    return ka_test_rmtree(root);
}

/* The module's callbacks in small: attach reads the last commit, begin a read transaction;
 * commit_on_attach makes a commit land between the two, as another process's would. */
typedef struct {
    int attaches, begins;
    ka_store_txn *txn;
    void (*commit_on_attach)(void);
    int no_snapshot;  /* attach answers KA_NOTFOUND, as for a file without a birth time */
    int hits, misses; /* the look-up context's, after the request */
} cbs;

static ka_store_status cb_attach(void *arg, const ka_store **s, ka_kc_snap *snap)
{
    cbs *c = arg;

    c->attaches++;
    snap->txnid = ka_store_last_commit(st);
    snap->dev = 1;
    snap->ino = 1;
    snap->born = 1;
    *s = st;
    if (c->commit_on_attach)
        c->commit_on_attach();
    return c->no_snapshot ? KA_NOTFOUND : KA_OK;
}

static ka_store_status cb_begin(void *arg, const ka_store **s, ka_store_txn **txn)
{
    cbs *c = arg;
    char err[512];

    c->begins++;
    if (ka_store_read_begin(st, &c->txn, err, sizeof(err)) != KA_OK)
        return KA_FAIL;
    *s = st;
    *txn = c->txn;
    return KA_OK;
}

/* One request with these inputs: a fresh context over kc; returns the HTTP status, c counts the
 * callbacks and the cache's hits and misses. */
static int request_with(ka_keycache *kc, cbs *c, const char *authorization, const char *ws,
                        ka_ws_policy policy, ka_decision *dec)
{
    ka_store_lookup_ctx ctx;
    ka_request req;

    memset(&ctx, 0, sizeof(ctx));
    ctx.cache = kc;
    ctx.attach = cb_attach;
    ctx.begin = cb_begin;
    ctx.begin_arg = c;
    memset(&req, 0, sizeof(req));
    ka_classify("GET", "/v1/users", KA_EP_AUTO, &req.route);
    req.authorization = authorization;
    req.workspace = ws;
    req.ws_policy = policy;
    ka_decide_store(&req, &ctx, dec);
    if (c->txn)
        ka_store_abort(c->txn);
    c->txn = NULL;
    c->hits = ctx.hits;
    c->misses = ctx.misses;
    return ka_verdict_status(dec);
}

/* An ingestion or settings request: method and path, the Authorization value (or NULL) and
 * a JSON body (or NULL, none read). */
static int request_to(ka_keycache *kc, cbs *c, const char *method, const char *path,
                      const char *authorization, const char *body, ka_decision *dec)
{
    ka_store_lookup_ctx ctx;
    ka_body_fields fields;
    ka_request req;

    memset(&ctx, 0, sizeof(ctx));
    ctx.cache = kc;
    ctx.attach = cb_attach;
    ctx.begin = cb_begin;
    ctx.begin_arg = c;
    memset(&req, 0, sizeof(req));
    ka_classify(method, path, KA_EP_AUTO, &req.route);
    req.authorization = authorization;
    if (body) {
        ka_json_scan(body, strlen(body), &fields);
        req.body = &fields;
    }
    ka_decide_store(&req, &ctx, dec);
    if (c->txn)
        ka_store_abort(c->txn);
    c->txn = NULL;
    c->hits = ctx.hits;
    c->misses = ctx.misses;
    return ka_verdict_status(dec);
}

static int request(ka_keycache *kc, cbs *c, ka_decision *dec)
{
    return request_with(kc, c, auth, NULL, KA_WS_OPTIONAL, dec);
}

static void set_org_enabled(int enabled)
{
    char err[512];
    ka_store_txn *txn;
    ka_entity e;

    memset(&e, 0, sizeof(e));
    strcpy(e.id, TC_ORG);
    e.enabled = enabled;
    assert_int_equal(ka_store_write_begin(st, &txn, err, sizeof(err)), KA_OK);
    assert_int_equal(ka_put_org(txn, st, &e), KA_OK);
    assert_int_equal(ka_store_commit(txn, err, sizeof(err)), KA_OK);
}

static void disable_org(void)
{
    set_org_enabled(0);
}

static void revoke_key(void)
{
    char err[512];
    ka_store_txn *txn;

    assert_int_equal(ka_store_write_begin(st, &txn, err, sizeof(err)), KA_OK);
    assert_int_equal(ka_del_key(txn, st, TC_KEY), KA_OK);
    assert_int_equal(ka_store_commit(txn, err, sizeof(err)), KA_OK);
}

static void test_decide_cached(void **state)
{
    ka_keycache *kc = cache_new(1024);
    ka_decision dec;
    cbs c;

    (void)state;
    /* First: read from a transaction, and kept. */
    memset(&c, 0, sizeof(c));
    assert_int_equal(request(kc, &c, &dec), 200);
    assert_string_equal(dec.id.key_id, TC_KEY);
    assert_int_equal(c.begins, 1);
    /* Again: the cache answers the key and its organization, no transaction. */
    memset(&c, 0, sizeof(c));
    assert_int_equal(request(kc, &c, &dec), 200);
    assert_string_equal(dec.id.key_id, TC_KEY);
    assert_string_equal(dec.id.org, TC_ORG);
    assert_int_equal(c.attaches, 1);
    assert_int_equal(c.begins, 0);
    /* A commit (the organization disabled) ends every answer: read, refused, at once. */
    disable_org();
    memset(&c, 0, sizeof(c));
    assert_int_equal(request(kc, &c, &dec), 422);
    assert_int_equal(c.begins, 1);
    memset(&c, 0, sizeof(c));
    assert_int_equal(request(kc, &c, &dec), 422);
    assert_int_equal(c.begins, 0);
    /* A store the cache cannot tell apart from later files: read every time, nothing kept. */
    for (int i = 0; i < 2; i++) {
        memset(&c, 0, sizeof(c));
        c.no_snapshot = 1;
        assert_int_equal(request(kc, &c, &dec), 422);
        assert_int_equal(c.begins, 1);
    }
    /* Without a cache: the transaction, as before. */
    set_org_enabled(1);
    memset(&c, 0, sizeof(c));
    assert_int_equal(request(NULL, &c, &dec), 200);
    assert_int_equal(c.attaches, 0);
    assert_int_equal(c.begins, 1);
    free(kc);
}

/* The key answered by the cache for one snapshot, then a commit that revokes it, then the
 * organization read from the newer snapshot: decided again on the newer snapshot alone, the
 * key is gone (mixing the two would accept it). */
static void test_decide_mixed(void **state)
{
    ka_keycache *kc = cache_new(1024);
    ka_store_lookup_ctx ctx;
    ka_lookup lk;
    ka_key_rec rec;
    ka_decision dec;
    cbs c;

    (void)state;
    /* Only the key in the cache (not its organization). */
    memset(&c, 0, sizeof(c));
    memset(&ctx, 0, sizeof(ctx));
    ctx.cache = kc;
    ctx.attach = cb_attach;
    ctx.begin = cb_begin;
    ctx.begin_arg = &c;
    ka_store_lookup(&ctx, &lk);
    assert_int_equal(lk.api_key(lk.ctx, payload, &rec), KA_OK);
    ka_store_abort(c.txn);
    /* The request: the key from the cache, revoked meanwhile. */
    memset(&c, 0, sizeof(c));
    c.commit_on_attach = revoke_key;
    assert_int_equal(request(kc, &c, &dec), 401);
    assert_int_equal(c.begins, 1);
    free(kc);
}

/* A remembered decision answers the same inputs on the same snapshot only: one hit, no
 * transaction; other inputs, another workspace policy or a commit are decided from the store,
 * and a malformed credential reads nothing of it. */
static void test_decide_remembered(void **state)
{
    ka_keycache *kc = cache_new(1024);
    char other[sizeof(auth)];
    ka_decision dec;
    cbs c;

    (void)state;
    memset(&c, 0, sizeof(c));
    assert_int_equal(request(kc, &c, &dec), 200);
    assert_int_equal(c.hits, 0);
    assert_int_equal(c.misses, 2); /* the key and its organization */
    /* The decision answers: one hit, the identity as decided. */
    memset(&c, 0, sizeof(c));
    assert_int_equal(request(kc, &c, &dec), 200);
    assert_int_equal(c.hits, 1);
    assert_int_equal(c.misses, 0);
    assert_int_equal(c.begins, 0);
    assert_int_equal(dec.id.type, KA_KEY_API);
    assert_string_equal(dec.id.key_id, TC_KEY);
    assert_string_equal(dec.id.org, TC_ORG);
    assert_string_equal(dec.id.ws, "");
    assert_int_equal(dec.token_presented, 1);
    assert_int_equal(dec.reason, KA_REFUSAL_NONE);
    /* Another workspace input, or policy: decided in full (the organization from the cache; the
     * key's entry is not kept for a request whose decision is), then remembered apart. */
    memset(&c, 0, sizeof(c));
    assert_int_equal(request_with(kc, &c, auth, TC_WS, KA_WS_OPTIONAL, &dec), 200);
    assert_string_equal(dec.id.ws, TC_WS);
    assert_int_equal(c.hits, 1);   /* the organization */
    assert_int_equal(c.misses, 2); /* the key and the workspace */
    memset(&c, 0, sizeof(c));
    assert_int_equal(request_with(kc, &c, auth, TC_WS, KA_WS_OPTIONAL, &dec), 200);
    assert_int_equal(c.hits, 1);
    assert_string_equal(dec.id.ws, TC_WS);
    memset(&c, 0, sizeof(c));
    assert_int_equal(request_with(kc, &c, auth, NULL, KA_WS_REQUIRED, &dec), 403);
    assert_int_equal(c.hits, 1);
    /* One byte of the credential changed: malformed, refused with no transaction begun. */
    strcpy(other, auth);
    other[strlen(other) - 1] ^= 1;
    memset(&c, 0, sizeof(c));
    assert_int_equal(request_with(kc, &c, other, NULL, KA_WS_OPTIONAL, &dec), 401);
    assert_int_equal(c.begins, 0);
    assert_int_equal(c.hits + c.misses, 0);
    /* A commit: the remembered decision is of an older snapshot, the store decides. */
    disable_org();
    memset(&c, 0, sizeof(c));
    assert_int_equal(request(kc, &c, &dec), 422);
    assert_int_equal(c.begins, 1);
    assert_int_equal(c.hits, 0);
    set_org_enabled(1);
    memset(&c, 0, sizeof(c));
    assert_int_equal(request(kc, &c, &dec), 200);
    memset(&c, 0, sizeof(c));
    assert_int_equal(request(kc, &c, &dec), 200);
    assert_int_equal(c.hits, 1);
    revoke_key();
    memset(&c, 0, sizeof(c));
    assert_int_equal(request(kc, &c, &dec), 401);
    assert_int_equal(c.hits, 0);
    free(kc);
}

static void put_conn_flags(unsigned flags)
{
    char err[512];
    ka_store_txn *txn;
    ka_entity e;

    memset(&e, 0, sizeof(e));
    strcpy(e.id, TC_CONN);
    strcpy(e.org, TC_ORG);
    strcpy(e.ws, TC_WS);
    e.enabled = 1;
    e.conn_flags = flags;
    assert_int_equal(ka_store_write_begin(st, &txn, err, sizeof(err)), KA_OK);
    assert_int_equal(ka_put_conn(txn, st, &e), KA_OK);
    assert_int_equal(ka_store_commit(txn, err, sizeof(err)), KA_OK);
}

static void revoke_write_key(void)
{
    char err[512];
    ka_store_txn *txn;

    assert_int_equal(ka_store_write_begin(st, &txn, err, sizeof(err)), KA_OK);
    assert_int_equal(ka_del_key(txn, st, TC_WK_ID), KA_OK);
    assert_int_equal(ka_store_commit(txn, err, sizeof(err)), KA_OK);
}

#define WK_AUTH "Bearer " TC_WK
#define WK_BODY "{\"writeKey\":\"" TC_WK "\"}"

static void assert_write_key_identity(const ka_decision *dec)
{
    assert_int_equal(dec->id.type, KA_KEY_WRITE);
    assert_string_equal(dec->id.key_id, TC_WK_ID);
    assert_string_equal(dec->id.org, TC_ORG);
    assert_string_equal(dec->id.ws, TC_WS);
    assert_string_equal(dec->id.conn, TC_CONN);
    assert_int_equal(dec->token_presented, 1);
}

/* An ingestion write key that passed (the key, its Source connection, its organization) is
 * remembered for the snapshot: one hit and no transaction, in the header or in a body; the
 * request's own rules still apply; any commit, and each way the key can stop passing, makes
 * the store decide again. */
static void test_decide_wk_remembered(void **state)
{
    ka_keycache *kc = cache_new(1024);
    ka_decision dec;
    cbs c;

    (void)state;
    memset(&c, 0, sizeof(c));
    assert_int_equal(request_to(kc, &c, "POST", "/v1/events", WK_AUTH, NULL, &dec), 200);
    assert_int_equal(c.misses, 3); /* the key, its connection, its organization */
    assert_write_key_identity(&dec);
    memset(&c, 0, sizeof(c));
    assert_int_equal(request_to(kc, &c, "POST", "/v1/events", WK_AUTH, NULL, &dec), 200);
    assert_int_equal(c.hits, 1);
    assert_int_equal(c.misses + c.begins, 0);
    assert_write_key_identity(&dec);
    /* The same key in a body: the same entry. */
    memset(&c, 0, sizeof(c));
    assert_int_equal(request_to(kc, &c, "POST", "/v1/events", NULL, WK_BODY, &dec), 200);
    assert_int_equal(c.hits, 1);
    assert_int_equal(c.begins, 0);
    assert_write_key_identity(&dec);
    /* The request's own rules: a connectionId beside a write key, a path not canonical. */
    memset(&c, 0, sizeof(c));
    assert_int_equal(request_to(kc, &c, "POST", "/v1/events", NULL,
                                "{\"writeKey\":\"" TC_WK "\",\"connectionId\":\"" TC_CONN "\"}",
                                &dec),
                     400);
    memset(&c, 0, sizeof(c));
    assert_int_equal(request_to(kc, &c, "POST", "/v1//events", WK_AUTH, NULL, &dec), 401);
    assert_int_equal(c.hits + c.misses, 0);
    /* A commit: decided from the store. The organization disabled, then enabled again. */
    disable_org();
    for (int i = 0; i < 2; i++) {
        memset(&c, 0, sizeof(c));
        assert_int_equal(request_to(kc, &c, "POST", "/v1/events", WK_AUTH, NULL, &dec), 503);
        /* Then the look-ups' own entries answer (the organization as disabled). */
        assert_int_equal(c.begins, i == 0);
    }
    set_org_enabled(1);
    memset(&c, 0, sizeof(c));
    assert_int_equal(request_to(kc, &c, "POST", "/v1/events", WK_AUTH, NULL, &dec), 200);
    memset(&c, 0, sizeof(c));
    assert_int_equal(request_to(kc, &c, "POST", "/v1/events", WK_AUTH, NULL, &dec), 200);
    assert_int_equal(c.hits, 1);
    /* The connection turned into a Destination: its write key no longer authenticates. */
    put_conn_flags(KA_CONN_DESTINATION);
    for (int i = 0; i < 2; i++) {
        memset(&c, 0, sizeof(c));
        assert_int_equal(request_to(kc, &c, "POST", "/v1/events", WK_AUTH, NULL, &dec), 401);
    }
    put_conn_flags(0);
    memset(&c, 0, sizeof(c));
    assert_int_equal(request_to(kc, &c, "POST", "/v1/events", WK_AUTH, NULL, &dec), 200);
    revoke_write_key();
    for (int i = 0; i < 2; i++) {
        memset(&c, 0, sizeof(c));
        assert_int_equal(request_to(kc, &c, "POST", "/v1/events", NULL, WK_BODY, &dec), 401);
        assert_int_equal(c.hits, 0);
    }
    free(kc);
}

/* A write key whose look-ups mixed two snapshots is not remembered. The settings endpoint
 * caches the key and its connection (not the organization, not the write key's entry); the
 * key is revoked between attach and the transaction the organization's look-up begins: the
 * key and connection come from the older snapshot, the organization from the newer one, and
 * the key passes, though it no longer exists. Decided again on the newer snapshot, it is
 * refused, and nothing was remembered for that snapshot: refused again next time. */
static void test_decide_wk_mixed(void **state)
{
    ka_keycache *kc = cache_new(1024);
    ka_decision dec;
    cbs c;

    (void)state;
    memset(&c, 0, sizeof(c));
    assert_int_equal(request_to(kc, &c, "GET", "/v1/events/settings/" TC_WK, NULL, NULL, &dec),
                     200);
    assert_int_equal(c.misses, 2); /* the key and its connection */
    memset(&c, 0, sizeof(c));
    c.commit_on_attach = revoke_write_key;
    assert_int_equal(request_to(kc, &c, "POST", "/v1/events", WK_AUTH, NULL, &dec), 401);
    memset(&c, 0, sizeof(c));
    assert_int_equal(request_to(kc, &c, "POST", "/v1/events", WK_AUTH, NULL, &dec), 401);
    free(kc);
}

/* A commit between attach and the transaction, with nothing yet taken from the cache: the
 * transaction's snapshot decides, and the cache answers only for it. Here the commit disables
 * the organization the cache holds as enabled for the older snapshot; taking that answer with
 * the key read from the newer one would accept the request, and remember it. */
static void test_decide_commit_before_txn(void **state)
{
    ka_keycache *kc = cache_new(1024);
    ka_decision dec;
    cbs c;

    (void)state;
    memset(&c, 0, sizeof(c));
    assert_int_equal(request(kc, &c, &dec), 200); /* the organization cached, enabled */
    memset(&c, 0, sizeof(c));
    c.commit_on_attach = disable_org;
    assert_int_equal(request_with(kc, &c, auth, TC_WS, KA_WS_OPTIONAL, &dec), 422);
    assert_int_equal(c.begins, 1);
    memset(&c, 0, sizeof(c));
    assert_int_equal(request_with(kc, &c, auth, TC_WS, KA_WS_OPTIONAL, &dec), 422);
    free(kc);
}

/* The identity of the file an open store maps: its inode, and a birth time where the file
 * system keeps one (the module's cache is off where it does not). */
static void test_file_id(void **state)
{
    ka_store_file id;
    struct stat sb;
    char path[160];

    (void)state;
    assert_int_equal(ka_store_file_id(st, &id), KA_OK);
    snprintf(path, sizeof(path), "%s/data.mdb", dir);
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(id.ino, (uint64_t)sb.st_ino);
    assert_int_equal(id.dev, (uint64_t)sb.st_dev);
    if (id.born == 0)
        fprintf(stderr, "note: %s keeps no birth times\n", root);
}

int run_keycache_tests(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_evictions),
        cmocka_unit_test(test_concurrent),
        cmocka_unit_test_setup_teardown(test_decide_cached, store_setup, store_teardown),
        cmocka_unit_test_setup_teardown(test_decide_mixed, store_setup, store_teardown),
        cmocka_unit_test_setup_teardown(test_decide_remembered, store_setup, store_teardown),
        cmocka_unit_test_setup_teardown(test_decide_commit_before_txn, store_setup, store_teardown),
        cmocka_unit_test_setup_teardown(test_decide_wk_remembered, store_setup, store_teardown),
        cmocka_unit_test_setup_teardown(test_decide_wk_mixed, store_setup, store_teardown),
        cmocka_unit_test_setup_teardown(test_file_id, store_setup, store_teardown),
    };
    return cmocka_run_group_tests_name("keycache", tests, NULL, NULL);
}
