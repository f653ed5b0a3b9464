/* keystore.c: the LMDB key store (SPEC §3) in a temporary directory: create, open, format
 * version, put/get, cascading removal, listing, snapshots; and the look-ups ka_decide uses. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lmdb.h> /* only to damage a store behind its back */
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "decide.h"
#include "keystore.h"
#include "tests.h"
#include "tmpdir.h"
#include "token.h"

#define ORG_A "orgA23456789"
#define ORG_B "orgB23456789"
#define ORG_X "orgX23456789"
#define WS_A1 "wsA123456789"
#define WS_A2 "wsA223456789"
#define WS_B1 "wsB123456789"
#define CN_A1 "cnA123456789" /* in WS_A1 */
#define CN_A2 "cnA223456789" /* in WS_A2 */
#define CN_B1 "cnB123456789" /* in WS_B1 */
#define K_A "kyA123456789"   /* API, ORG_A, unrestricted */
#define K_R1 "kyR123456789"  /* API, ORG_A, restricted to WS_A1 */
#define K_R2 "kyS123456789"  /* API, ORG_A, restricted to WS_A2 */
#define K_B "kyB123456789"   /* API, ORG_B */
#define W_1 "kw1123456789"   /* write, CN_A1 */
#define W_2 "kw2123456789"   /* write, CN_A1 */
#define W_3 "kw3123456789"   /* write, CN_A2 */
#define W_4 "kw4123456789"   /* write, CN_B1 */

static char root[64]; /* mkdtemp */
static char dir[128]; /* root/store */
static ka_store *st;

static int setup(void **state)
{
    char err[512];

    (void)state;
    if (ka_test_tmpdir(root, sizeof(root), "store") != 0)
        return -1;
    snprintf(dir, sizeof(dir), "%s/store", root);
    st = NULL;
    if (ka_store_create(dir, NULL, err, sizeof(err)) != KA_OK) {
        fprintf(stderr, "ka_store_create: %s\n", err);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    ka_store_close(st);
    st = NULL;
    return ka_test_rmtree(root);
}

static ka_store *open_store(int readonly)
{
    char err[512] = "";
    ka_store *s = NULL;

    if (ka_store_open(dir, NULL, readonly, &s, err, sizeof(err)) != KA_OK)
        fail_msg("ka_store_open: %s", err);
    assert_non_null(s);
    return s;
}

static ka_store_txn *begin(int readonly)
{
    char err[512];
    ka_store_txn *txn = NULL;
    ka_store_status rc = readonly ? ka_store_read_begin(st, &txn, err, sizeof(err))
                                  : ka_store_write_begin(st, &txn, err, sizeof(err));

    if (rc != KA_OK)
        fail_msg("begin: %s", err);
    return txn;
}

static void commit(ka_store_txn *txn)
{
    char err[512];

    if (ka_store_commit(txn, err, sizeof(err)) != KA_OK)
        fail_msg("commit: %s", err);
}

/* ka_decide's verdict as its HTTP status (ka_verdict_status): 200 accepted, 0 the body is
 * needed, else the refusal's. */
#define HTTP_ACCEPTED 200
#define NEED_BODY 0
static int decide_http(const ka_request *req, const ka_lookup *lk, ka_decision *dec)
{
    ka_verdict v = ka_decide(req, lk, dec);

    assert_int_equal(v, dec->verdict);
    return ka_verdict_status(dec);
}

static void payload_of(int n, uint8_t p[KA_PAYLOAD_LEN])
{
    memset(p, n, KA_PAYLOAD_LEN);
}

/* "WriteKey<n>" padded with 'x' to 32 characters. */
static void write_key_of(int n, char key[KA_WRITE_KEY_LEN + 1])
{
    char head[24];
    int len = snprintf(head, sizeof(head), "WriteKey%d", n);

    memset(key, 'x', KA_WRITE_KEY_LEN);
    key[KA_WRITE_KEY_LEN] = '\0';
    memcpy(key, head, (size_t)len);
}

static void put_org(ka_store_txn *txn, const char *id, int enabled, const char *name)
{
    ka_entity e;
    memset(&e, 0, sizeof(e));
    snprintf(e.id, sizeof(e.id), "%s", id);
    e.enabled = enabled;
    snprintf(e.name, sizeof(e.name), "%s", name);
    assert_int_equal(ka_put_org(txn, st, &e), KA_OK);
}

static void put_ws(ka_store_txn *txn, const char *id, const char *org, const char *name)
{
    ka_entity e;
    memset(&e, 0, sizeof(e));
    snprintf(e.id, sizeof(e.id), "%s", id);
    snprintf(e.org, sizeof(e.org), "%s", org);
    snprintf(e.name, sizeof(e.name), "%s", name);
    assert_int_equal(ka_put_ws(txn, st, &e), KA_OK);
}

static void put_conn(ka_store_txn *txn, const char *id, const char *ws, const char *org)
{
    ka_entity e;
    memset(&e, 0, sizeof(e));
    snprintf(e.id, sizeof(e.id), "%s", id);
    snprintf(e.ws, sizeof(e.ws), "%s", ws);
    snprintf(e.org, sizeof(e.org), "%s", org);
    snprintf(e.name, sizeof(e.name), "connection %s", id);
    assert_int_equal(ka_put_conn(txn, st, &e), KA_OK);
}

static void put_api(ka_store_txn *txn, int n, const char *id, const char *org, const char *ws)
{
    uint8_t p[KA_PAYLOAD_LEN], d[KA_DIGEST_LEN];
    char body[KA_API_BODY_LEN];
    ka_key_rec r;

    payload_of(n, p);
    ka_api_body_encode(p, body);
    memset(&r, 0, sizeof(r));
    r.type = KA_KEY_API;
    snprintf(r.id, sizeof(r.id), "%s", id);
    snprintf(r.org, sizeof(r.org), "%s", org);
    snprintf(r.ws, sizeof(r.ws), "%s", ws ? ws : "");
    r.created = 1700000000u + (uint64_t)n;
    ka_hint(body, sizeof(body), r.hint);
    snprintf(r.name, sizeof(r.name), "api key %d", n);
    ka_digest_api(st, p, d);
    assert_int_equal(ka_put_key(txn, st, d, &r), KA_OK);
}

static void put_write(ka_store_txn *txn, int n, const char *id, const char *conn, const char *ws,
                      const char *org)
{
    char key[KA_WRITE_KEY_LEN + 1];
    uint8_t d[KA_DIGEST_LEN];
    ka_key_rec r;

    write_key_of(n, key);
    memset(&r, 0, sizeof(r));
    r.type = KA_KEY_WRITE;
    snprintf(r.id, sizeof(r.id), "%s", id);
    snprintf(r.org, sizeof(r.org), "%s", org);
    snprintf(r.ws, sizeof(r.ws), "%s", ws);
    snprintf(r.conn, sizeof(r.conn), "%s", conn);
    r.created = 1800000000u + (uint64_t)n;
    ka_hint(key, KA_WRITE_KEY_LEN, r.hint);
    ka_digest_write(st, key, d);
    assert_int_equal(ka_put_key(txn, st, d, &r), KA_OK);
}

/* The fixture: two organizations with workspaces, connections and keys. */
static void populate(void)
{
    ka_store_txn *txn;

    st = open_store(0);
    txn = begin(0);
    put_org(txn, ORG_A, 1, "Acme");
    put_org(txn, ORG_B, 0, "Beta \xc3\xa9");
    put_ws(txn, WS_A1, ORG_A, "A one");
    put_ws(txn, WS_A2, ORG_A, "A two");
    put_ws(txn, WS_B1, ORG_B, "B one");
    put_conn(txn, CN_A1, WS_A1, ORG_A);
    put_conn(txn, CN_A2, WS_A2, ORG_A);
    put_conn(txn, CN_B1, WS_B1, ORG_B);
    put_api(txn, 1, K_A, ORG_A, NULL);
    put_api(txn, 2, K_R1, ORG_A, WS_A1);
    put_api(txn, 3, K_R2, ORG_A, WS_A2);
    put_api(txn, 4, K_B, ORG_B, NULL);
    put_write(txn, 1, W_1, CN_A1, WS_A1, ORG_A);
    put_write(txn, 2, W_2, CN_A1, WS_A1, ORG_A);
    put_write(txn, 3, W_3, CN_A2, WS_A2, ORG_A);
    put_write(txn, 4, W_4, CN_B1, WS_B1, ORG_B);
    commit(txn);
}

/* The whole key of a digest: what the request path reads (ka_get_key: the decision's fields
 * only), completed from its key-ids record (ka_get_key_by_id), which must agree. */
static int full_key(ka_store_txn *txn, const uint8_t d[KA_DIGEST_LEN], ka_key_rec *r)
{
    ka_key_rec byid;
    int rc = ka_get_key(txn, st, d, r);

    if (rc != KA_OK)
        return rc;
    assert_int_equal(r->created, 0);
    assert_string_equal(r->hint, "");
    assert_string_equal(r->name, "");
    assert_int_equal(ka_get_key_by_id(txn, st, r->id, &byid), KA_OK);
    assert_int_equal(byid.type, r->type);
    assert_string_equal(byid.id, r->id);
    assert_string_equal(byid.org, r->org);
    assert_string_equal(byid.ws, r->ws);
    assert_string_equal(byid.conn, r->conn);
    *r = byid;
    return KA_OK;
}

static int get_api(ka_store_txn *txn, int n, ka_key_rec *r)
{
    uint8_t p[KA_PAYLOAD_LEN], d[KA_DIGEST_LEN];
    payload_of(n, p);
    ka_digest_api(st, p, d);
    return full_key(txn, d, r);
}

static int get_write(ka_store_txn *txn, int n, ka_key_rec *r)
{
    char key[KA_WRITE_KEY_LEN + 1];
    uint8_t d[KA_DIGEST_LEN];
    write_key_of(n, key);
    ka_digest_write(st, key, d);
    return full_key(txn, d, r);
}

/* ---- listing helper ---- */

typedef struct {
    char ids[32][KA_ID_LEN + 1];
    int n;
    int stop_after; /* 0: never */
} idlist;

static int collect_entity(const ka_entity *e, void *arg)
{
    idlist *l = arg;
    snprintf(l->ids[l->n++], KA_ID_LEN + 1, "%s", e->id);
    return l->stop_after && l->n >= l->stop_after;
}

static int collect_key(const ka_key_rec *k, void *arg)
{
    idlist *l = arg;
    snprintf(l->ids[l->n++], KA_ID_LEN + 1, "%s", k->id);
    return l->stop_after && l->n >= l->stop_after;
}

/* "a,b,c" of the collected IDs. */
static const char *joined(const idlist *l)
{
    static char buf[32 * 14];
    size_t p = 0;
    buf[0] = '\0';
    for (int i = 0; i < l->n; i++)
        p += (size_t)snprintf(buf + p, sizeof(buf) - p, "%s%s", i ? "," : "", l->ids[i]);
    return buf;
}

static const char *list_orgs(ka_store_txn *txn)
{
    static idlist l;
    memset(&l, 0, sizeof(l));
    assert_int_equal(ka_list_orgs(txn, st, collect_entity, &l), KA_OK);
    return joined(&l);
}

static const char *list_ws(ka_store_txn *txn, const char *org)
{
    static idlist l;
    memset(&l, 0, sizeof(l));
    assert_int_equal(ka_list_ws(txn, st, org, collect_entity, &l), KA_OK);
    return joined(&l);
}

static const char *list_conns(ka_store_txn *txn, const char *ws)
{
    static idlist l;
    memset(&l, 0, sizeof(l));
    assert_int_equal(ka_list_conns(txn, st, ws, collect_entity, &l), KA_OK);
    return joined(&l);
}

static const char *list_api(ka_store_txn *txn, const char *org)
{
    static idlist l;
    memset(&l, 0, sizeof(l));
    assert_int_equal(ka_list_api_keys(txn, st, org, collect_key, &l), KA_OK);
    return joined(&l);
}

static const char *list_write(ka_store_txn *txn, const char *conn)
{
    static idlist l;
    memset(&l, 0, sizeof(l));
    assert_int_equal(ka_list_write_keys(txn, st, conn, collect_key, &l), KA_OK);
    return joined(&l);
}

/* ---- tests ---- */

static void test_create(void **state)
{
    char path[256], err[512];
    struct stat sb;

    (void)state;
    snprintf(path, sizeof(path), "%s/secret", dir);
    assert_int_equal(stat(path, &sb), 0);
    assert_true(S_ISREG(sb.st_mode));
    assert_int_equal(sb.st_mode & 07777, 0600);
    assert_int_equal(sb.st_size, KA_SECRET_LEN);
    snprintf(path, sizeof(path), "%s/data.mdb", dir);
    assert_int_equal(stat(path, &sb), 0);
    /* A second init refuses to overwrite the store. */
    assert_int_equal(ka_store_create(dir, NULL, err, sizeof(err)), KA_FAIL);
    snprintf(path, sizeof(path), "%s already holds a key store", dir);
    assert_string_equal(err, path);
    /* Both modes open it. */
    st = open_store(0);
    ka_store_close(st);
    st = open_store(1);
    assert_string_equal(ka_store_dir(st), dir);
}

static void test_create_external_secret(void **state)
{
    char d2[256], sp[512], err[1024];
    ka_store *s = NULL;
    struct stat sb;

    (void)state;
    snprintf(d2, sizeof(d2), "%s/store2", root);
    snprintf(sp, sizeof(sp), "%s/store2.secret", root);
    assert_int_equal(ka_store_create(d2, sp, err, sizeof(err)), KA_OK);
    assert_int_equal(stat(sp, &sb), 0);
    assert_int_equal(sb.st_mode & 07777, 0600);
    snprintf(err, sizeof(err), "%s/secret", d2);
    assert_int_equal(stat(err, &sb), -1); /* no DIR/secret */
    assert_int_equal(ka_store_open(d2, sp, 1, &s, err, sizeof(err)), KA_OK);
    ka_store_close(s);
    /* Without the path it looks for DIR/secret. */
    s = (ka_store *)1;
    assert_int_equal(ka_store_open(d2, NULL, 1, &s, err, sizeof(err)), KA_FAIL);
    assert_null(s);
    snprintf(sp, sizeof(sp), "cannot open store secret %s/secret: No such file or directory", d2);
    assert_string_equal(err, sp);
}

static void test_secret_reused(void **state)
{
    char d2[256], sp[512], err[1024];
    uint8_t p[KA_PAYLOAD_LEN], a[KA_DIGEST_LEN], b[KA_DIGEST_LEN];
    ka_store *s1 = NULL, *s2 = NULL;

    (void)state;
    /* init with an existing --secret keeps it: two stores, same digests. */
    snprintf(sp, sizeof(sp), "%s/secret", dir);
    snprintf(d2, sizeof(d2), "%s/store3", root);
    assert_int_equal(ka_store_create(d2, sp, err, sizeof(err)), KA_OK);
    assert_int_equal(ka_store_open(dir, NULL, 1, &s1, err, sizeof(err)), KA_OK);
    assert_int_equal(ka_store_open(d2, sp, 1, &s2, err, sizeof(err)), KA_OK);
    payload_of(9, p);
    ka_digest_api(s1, p, a);
    ka_digest_api(s2, p, b);
    assert_memory_equal(a, b, KA_DIGEST_LEN);
    ka_store_close(s1);
    ka_store_close(s2);
}

static void test_open_errors(void **state)
{
    char path[256], want[512], err[512];
    ka_store *s = NULL;

    (void)state;
    snprintf(path, sizeof(path), "%s/nope", root);
    assert_int_equal(ka_store_open(path, NULL, 1, &s, err, sizeof(err)), KA_FAIL);
    assert_null(s);
    snprintf(want, sizeof(want), "key store %s: No such file or directory", path);
    assert_string_equal(err, want);

    /* A directory with a secret but no store, read-only (the module's mode). */
    snprintf(path, sizeof(path), "%s/empty", root);
    assert_int_equal(mkdir(path, 0700), 0);
    {
        char sp[300];
        int fd;
        snprintf(sp, sizeof(sp), "%s/secret", path);
        fd = open(sp, O_WRONLY | O_CREAT, 0600);
        assert_true(fd >= 0);
        assert_int_equal(write(fd, "0123456789abcdef0123456789abcdef", 32), 32);
        close(fd);
    }
    assert_int_equal(ka_store_open(path, NULL, 1, &s, err, sizeof(err)), KA_FAIL);
    assert_null(s);
    snprintf(want, sizeof(want), "cannot open key store %s: No such file or directory", path);
    assert_string_equal(err, want);
    /* Read-write: an environment appears, but it has no format record. */
    assert_int_equal(ka_store_open(path, NULL, 0, &s, err, sizeof(err)), KA_FAIL);
    assert_null(s);
    snprintf(want, sizeof(want),
             "key store %s has no format record; it was not made by krenalis-keys init", path);
    assert_string_equal(err, want);
}

/* A regular file in place of the directory (errno left over from an earlier call must not
 * make the message). */
static void test_open_not_a_directory(void **state)
{
    char path[256], want[512], err[512];
    ka_store *s = NULL;
    int fd;

    (void)state;
    snprintf(path, sizeof(path), "%s/file", root);
    fd = open(path, O_WRONLY | O_CREAT, 0600);
    assert_true(fd >= 0);
    close(fd);
    errno = ENOENT;
    assert_int_equal(ka_store_open(path, NULL, 1, &s, err, sizeof(err)), KA_FAIL);
    assert_null(s);
    snprintf(want, sizeof(want), "key store %s is not a directory", path);
    assert_string_equal(err, want);
}

/* Rewrites (or with value NULL deletes) a meta record with plain LMDB: ka_store_open would
 * refuse the store. */
static void set_meta(const char *key, const char *value)
{
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi meta;
    MDB_val k = {strlen(key), (void *)key};

    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 8), 0);
    assert_int_equal(mdb_env_open(env, dir, 0, 0640), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "meta", 0, &meta), 0);
    if (value) {
        MDB_val v = {strlen(value), (void *)value};
        assert_int_equal(mdb_put(txn, meta, &k, &v, 0), 0);
    } else {
        assert_int_equal(mdb_del(txn, meta, &k, NULL), 0);
    }
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
}

/* Deletes a record of database db with plain LMDB (the store must be closed). */
static void raw_del(const char *db, MDB_val *k)
{
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;

    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 8), 0);
    assert_int_equal(mdb_env_open(env, dir, 0, 0640), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, db, 0, &dbi), 0);
    assert_int_equal(mdb_del(txn, dbi, k, NULL), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
}

static void set_format(const char *value)
{
    set_meta("format", value);
}

static void test_format_version(void **state)
{
    char want[512], err[512];
    ka_store *s = NULL;

    (void)state;
    assert_string_equal(KA_STORE_FORMAT, "krenalis-keys 3");
    set_format("krenalis-keys 4");
    for (int ro = 0; ro <= 1; ro++) {
        s = (ka_store *)1;
        assert_int_equal(ka_store_open(dir, NULL, ro, &s, err, sizeof(err)), KA_FAIL);
        assert_null(s);
        snprintf(want, sizeof(want),
                 "key store %s has format 'krenalis-keys 4'; this build reads 'krenalis-keys 3'",
                 dir);
        assert_string_equal(err, want);
    }
    /* The previous formats say how to upgrade them, to the module (read-only) and the CLI. */
    for (int f = 1; f <= 2; f++)
        for (int ro = 0; ro <= 1; ro++) {
            set_format(f == 1 ? "krenalis-keys 1" : "krenalis-keys 2");
            assert_int_equal(ka_store_open(dir, NULL, ro, &s, err, sizeof(err)), KA_FAIL);
            snprintf(want, sizeof(want),
                     "key store %s has format 'krenalis-keys %d'; this build reads "
                     "'krenalis-keys 3': upgrade it with 'krenalis-keys --store %s upgrade'",
                     dir, f, dir);
            assert_string_equal(err, want);
        }
    /* A prefix of the right value is not the right value. */
    set_format("krenalis-keys");
    assert_int_equal(ka_store_open(dir, NULL, 1, &s, err, sizeof(err)), KA_FAIL);
    set_format("krenalis-keys 10");
    assert_int_equal(ka_store_open(dir, NULL, 1, &s, err, sizeof(err)), KA_FAIL);
    set_format(NULL);
    assert_int_equal(ka_store_open(dir, NULL, 1, &s, err, sizeof(err)), KA_FAIL);
    snprintf(want, sizeof(want),
             "key store %s has no format record; it was not made by krenalis-keys init", dir);
    assert_string_equal(err, want);
    /* Back to the current format: opens again. */
    set_format(KA_STORE_FORMAT);
    st = open_store(1);
}

static void test_secret_check_missing(void **state)
{
    char want[512], err[512];
    ka_store *s = (ka_store *)1;

    (void)state;
    set_meta("secret-check", NULL);
    assert_int_equal(ka_store_open(dir, NULL, 1, &s, err, sizeof(err)), KA_FAIL);
    assert_null(s);
    snprintf(want, sizeof(want),
             "key store %s has no secret check record; it was not made by krenalis-keys init", dir);
    assert_string_equal(err, want);
}

/* Cuts data.mdb to size bytes. */
static void truncate_data(off_t size)
{
    char path[256];

    snprintf(path, sizeof(path), "%s/data.mdb", dir);
    assert_int_equal(truncate(path, size), 0);
}

static void test_truncated(void **state)
{
    char err[512], want[512];
    ka_store *s = NULL;
    struct stat sb;
    char path[256];
    long page = sysconf(_SC_PAGESIZE);

    (void)state;
    populate();
    /* Enough keys for data.mdb to grow past its first pages. */
    {
        ka_store_txn *txn = begin(0);
        for (int i = 0; i < 2000; i++) {
            uint8_t p[KA_PAYLOAD_LEN], d[KA_DIGEST_LEN];
            ka_key_rec r = {.type = KA_KEY_API, .org = ORG_A, .created = 1, .name = "bulk"};
            snprintf(r.id, sizeof(r.id), "bk%010u", (unsigned)i % 100000u);
            memset(p, 0xee, sizeof(p));
            memcpy(p, &i, sizeof(i));
            ka_digest_api(st, p, d);
            assert_int_equal(ka_put_key(txn, st, d, &r), KA_OK);
        }
        commit(txn);
    }
    ka_store_close(st);
    st = NULL;
    snprintf(path, sizeof(path), "%s/data.mdb", dir);
    assert_int_equal(stat(path, &sb), 0);
    assert_true(sb.st_size > 16 * page);
    /* Half the file: the meta pages are there, the data is not. */
    truncate_data(sb.st_size / 2);
    for (int ro = 0; ro <= 1; ro++) {
        s = (ka_store *)1;
        assert_int_equal(ka_store_open(dir, NULL, ro, &s, err, sizeof(err)), KA_FAIL);
        assert_null(s);
        snprintf(want, sizeof(want),
                 "key store %s: data.mdb holds %lld bytes but its last commit "
                 "uses ",
                 dir, (long long)(sb.st_size / 2));
        assert_memory_equal(err, want, strlen(want));
        assert_non_null(strstr(err, ": it was truncated"));
    }
    /* Only the two meta pages. */
    truncate_data(2 * page);
    assert_int_equal(ka_store_open(dir, NULL, 1, &s, err, sizeof(err)), KA_FAIL);
    assert_non_null(strstr(err, "it was truncated"));
}

static void test_put_get(void **state)
{
    ka_store_txn *txn;
    ka_entity e;
    ka_key_rec r;

    (void)state;
    populate();
    ka_store_close(st);
    /* Read back through a read-only handle, as the module reads. */
    st = open_store(1);
    txn = begin(1);

    assert_int_equal(ka_get_org(txn, st, ORG_A, &e), KA_OK);
    assert_string_equal(e.id, ORG_A);
    assert_int_equal(e.enabled, 1);
    assert_string_equal(e.name, "Acme");
    assert_int_equal(ka_get_org(txn, st, ORG_B, &e), KA_OK);
    assert_int_equal(e.enabled, 0);
    assert_string_equal(e.name, "Beta \xc3\xa9");
    assert_int_equal(ka_get_org(txn, st, ORG_X, &e), KA_NOTFOUND);

    assert_int_equal(ka_get_ws(txn, st, WS_A2, &e), KA_OK);
    assert_string_equal(e.id, WS_A2);
    assert_string_equal(e.org, ORG_A);
    assert_string_equal(e.name, "A two");
    assert_int_equal(ka_get_ws(txn, st, "wsX123456789", &e), KA_NOTFOUND);

    assert_int_equal(ka_get_conn(txn, st, CN_A2, &e), KA_OK);
    assert_string_equal(e.id, CN_A2);
    assert_string_equal(e.ws, WS_A2);
    assert_string_equal(e.org, ORG_A);
    assert_string_equal(e.name, "connection " CN_A2);
    assert_int_equal(ka_get_conn(txn, st, "cnX123456789", &e), KA_NOTFOUND);

    memset(&r, 0x5a, sizeof(r));
    assert_int_equal(get_api(txn, 2, &r), KA_OK);
    assert_int_equal(r.type, KA_KEY_API);
    assert_string_equal(r.id, K_R1);
    assert_string_equal(r.org, ORG_A);
    assert_string_equal(r.ws, WS_A1);
    assert_string_equal(r.conn, "");
    assert_int_equal(r.created, 1700000002u);
    assert_string_equal(r.name, "api key 2");
    {
        uint8_t p[KA_PAYLOAD_LEN];
        char body[KA_API_BODY_LEN], hint[KA_HINT_MAX + 1];
        payload_of(2, p);
        ka_api_body_encode(p, body);
        ka_hint(body, sizeof(body), hint);
        assert_string_equal(r.hint, hint);
        assert_int_equal(strlen(r.hint), 13);
    }
    assert_int_equal(get_api(txn, 1, &r), KA_OK);
    assert_string_equal(r.id, K_A);
    assert_string_equal(r.ws, "");
    assert_int_equal(get_api(txn, 99, &r), KA_NOTFOUND);

    memset(&r, 0x5a, sizeof(r));
    assert_int_equal(get_write(txn, 3, &r), KA_OK);
    assert_int_equal(r.type, KA_KEY_WRITE);
    assert_string_equal(r.id, W_3);
    assert_string_equal(r.org, ORG_A);
    assert_string_equal(r.ws, WS_A2);
    assert_string_equal(r.conn, CN_A2);
    assert_int_equal(r.created, 1800000003u);
    assert_string_equal(r.hint, "Writ...xxxxxx");
    assert_string_equal(r.name, "");
    assert_int_equal(get_write(txn, 99, &r), KA_NOTFOUND);

    assert_int_equal(ka_get_key_by_id(txn, st, W_4, &r), KA_OK);
    assert_string_equal(r.conn, CN_B1);
    assert_int_equal(ka_get_key_by_id(txn, st, K_B, &r), KA_OK);
    assert_string_equal(r.org, ORG_B);
    assert_int_equal(ka_get_key_by_id(txn, st, "kyX123456789", &r), KA_NOTFOUND);
    ka_store_abort(txn);
}

/* The digest is HMAC-SHA-256(secret file bytes, payload) — what Krenalis keeps in
 * access_keys.hmac — and HMAC-SHA-256(secret, the 32 characters) for write keys. */
static void test_digests(void **state)
{
    uint8_t secret[KA_SECRET_LEN], p[KA_PAYLOAD_LEN], want[32], got[32];
    char path[256], key[KA_WRITE_KEY_LEN + 1];
    unsigned wl = 0;
    FILE *f;

    (void)state;
    snprintf(path, sizeof(path), "%s/secret", dir);
    f = fopen(path, "rb");
    assert_non_null(f);
    assert_int_equal(fread(secret, 1, sizeof(secret), f), sizeof(secret));
    fclose(f);
    st = open_store(1);
    for (int i = 0; i < KA_PAYLOAD_LEN; i++)
        p[i] = (uint8_t)(i + 1);
    HMAC(EVP_sha256(), secret, sizeof(secret), p, sizeof(p), want, &wl);
    ka_digest_api(st, p, got);
    assert_memory_equal(got, want, 32);
    write_key_of(7, key);
    HMAC(EVP_sha256(), secret, sizeof(secret), (const uint8_t *)key, KA_WRITE_KEY_LEN, want, &wl);
    ka_digest_write(st, key, got);
    assert_memory_equal(got, want, 32);
}

/* The module reads the secret before it forks and opens with it in memory. */
static void test_open_with_secret(void **state)
{
    uint8_t secret[KA_SECRET_LEN], p[KA_PAYLOAD_LEN], d1[32], d2[32];
    char path[256], err[1024], want[1024];
    ka_store *s = NULL;
    ka_key_rec r;
    ka_store_txn *txn;
    FILE *f;

    (void)state;
    populate();
    ka_store_close(st);
    st = NULL;
    snprintf(path, sizeof(path), "%s/secret", dir);
    f = fopen(path, "rb");
    assert_non_null(f);
    assert_int_equal(fread(secret, 1, sizeof(secret), f), sizeof(secret));
    fclose(f);
    assert_int_equal(ka_store_open_secret(dir, secret, NULL, 1, &s, err, sizeof(err)), KA_OK);
    st = s;
    payload_of(2, p);
    ka_digest_api(st, p, d1);
    txn = begin(1);
    assert_int_equal(ka_get_key(txn, st, d1, &r), KA_OK);
    assert_string_equal(r.id, K_R1);
    ka_store_abort(txn);
    ka_store_close(st);
    st = NULL;
    /* Another secret would find no key at all: the store refuses it by its check record. */
    secret[0] ^= 1;
    for (int ro = 0; ro <= 1; ro++) {
        s = (ka_store *)1;
        assert_int_equal(ka_store_open_secret(dir, secret, NULL, ro, &s, err, sizeof(err)),
                         KA_BADSECRET);
        assert_null(s);
        snprintf(want, sizeof(want), "key store %s was created with another secret", dir);
        assert_string_equal(err, want);
    }
    /* Through a secret file, the message names it. */
    snprintf(path, sizeof(path), "%s/other.secret", root);
    f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(secret, 1, sizeof(secret), f), sizeof(secret));
    fclose(f);
    assert_int_equal(ka_store_open(dir, path, 0, &s, err, sizeof(err)), KA_BADSECRET);
    snprintf(want, sizeof(want),
             "the store secret %s does not match key store %s (the store was created with "
             "another secret)",
             path, dir);
    assert_string_equal(err, want);
    (void)d2;
    /* Not a directory. */
    snprintf(path, sizeof(path), "%s/secret", dir);
    s = (ka_store *)1;
    assert_int_equal(ka_store_open_secret(path, secret, NULL, 1, &s, err, sizeof(err)), KA_FAIL);
    assert_null(s);
}

static void test_long_name(void **state)
{
    char name[KA_NAME_MAX + 50];
    ka_store_txn *txn;
    ka_entity e;

    (void)state;
    st = open_store(0);
    memset(name, 'n', sizeof(name) - 1);
    name[sizeof(name) - 1] = '\0';
    txn = begin(0);
    memset(&e, 0, sizeof(e));
    memcpy(e.id, ORG_X, KA_ID_LEN);
    e.enabled = 1;
    memcpy(e.name, name, KA_NAME_MAX); /* the largest name */
    assert_int_equal(ka_put_org(txn, st, &e), KA_OK);
    commit(txn);
    txn = begin(1);
    memset(&e, 0, sizeof(e));
    assert_int_equal(ka_get_org(txn, st, ORG_X, &e), KA_OK);
    assert_int_equal(strlen(e.name), KA_NAME_MAX);
    ka_store_abort(txn);
}

static void test_overwrite(void **state)
{
    ka_store_txn *txn;
    ka_entity e;

    (void)state;
    populate();
    txn = begin(0);
    put_org(txn, ORG_A, 0, "Acme renamed");
    commit(txn);
    txn = begin(1);
    assert_int_equal(ka_get_org(txn, st, ORG_A, &e), KA_OK);
    assert_int_equal(e.enabled, 0);
    assert_string_equal(e.name, "Acme renamed");
    assert_string_equal(list_orgs(txn), ORG_A "," ORG_B);
    ka_store_abort(txn);
}

static void test_list(void **state)
{
    ka_store_txn *txn;
    idlist l;

    (void)state;
    populate();
    txn = begin(1);
    assert_string_equal(list_orgs(txn), ORG_A "," ORG_B);
    assert_string_equal(list_ws(txn, NULL), WS_A1 "," WS_A2 "," WS_B1);
    assert_string_equal(list_ws(txn, ORG_A), WS_A1 "," WS_A2);
    assert_string_equal(list_ws(txn, ORG_B), WS_B1);
    assert_string_equal(list_ws(txn, ORG_X), "");
    assert_string_equal(list_conns(txn, NULL), CN_A1 "," CN_A2 "," CN_B1);
    assert_string_equal(list_conns(txn, WS_A2), CN_A2);
    assert_string_equal(list_conns(txn, "wsX123456789"), "");
    assert_string_equal(list_api(txn, ORG_A), K_A "," K_R1 "," K_R2);
    assert_string_equal(list_api(txn, ORG_B), K_B);
    assert_string_equal(list_api(txn, NULL), K_A "," K_R1 "," K_R2 "," K_B);
    assert_string_equal(list_api(txn, ORG_X), "");
    assert_string_equal(list_write(txn, CN_A1), W_1 "," W_2);
    assert_string_equal(list_write(txn, CN_A2), W_3);
    assert_string_equal(list_write(txn, "cnX123456789"), "");
    /* A callback that returns non-zero stops the walk. */
    memset(&l, 0, sizeof(l));
    l.stop_after = 1;
    assert_int_equal(ka_list_orgs(txn, st, collect_entity, &l), KA_OK);
    assert_int_equal(l.n, 1);
    memset(&l, 0, sizeof(l));
    l.stop_after = 2;
    assert_int_equal(ka_list_api_keys(txn, st, NULL, collect_key, &l), KA_OK);
    assert_int_equal(l.n, 2);
    memset(&l, 0, sizeof(l));
    l.stop_after = 3;
    assert_int_equal(ka_list_api_keys(txn, st, NULL, collect_key, &l), KA_OK);
    assert_int_equal(l.n, 3);
    memset(&l, 0, sizeof(l));
    l.stop_after = 1;
    assert_int_equal(ka_list_write_keys(txn, st, CN_A1, collect_key, &l), KA_OK);
    assert_int_equal(l.n, 1);
    ka_store_abort(txn);
}

static void test_delete_key(void **state)
{
    ka_store_txn *txn;
    ka_key_rec r;

    (void)state;
    populate();
    txn = begin(0);
    assert_int_equal(ka_del_key(txn, st, K_A), KA_OK);
    assert_int_equal(ka_del_key(txn, st, W_2), KA_OK);
    assert_int_equal(ka_del_key(txn, st, K_A), KA_NOTFOUND);
    assert_int_equal(ka_del_key(txn, st, "kyX123456789"), KA_NOTFOUND);
    commit(txn);
    txn = begin(1);
    assert_int_equal(get_api(txn, 1, &r), KA_NOTFOUND);
    assert_int_equal(ka_get_key_by_id(txn, st, K_A, &r), KA_NOTFOUND);
    assert_int_equal(get_write(txn, 2, &r), KA_NOTFOUND);
    assert_int_equal(ka_get_key_by_id(txn, st, W_2, &r), KA_NOTFOUND);
    assert_string_equal(list_api(txn, ORG_A), K_R1 "," K_R2);
    assert_string_equal(list_write(txn, CN_A1), W_1);
    assert_int_equal(get_write(txn, 1, &r), KA_OK);
    assert_int_equal(get_api(txn, 2, &r), KA_OK);
    ka_store_abort(txn);
}

static void test_delete_connection(void **state)
{
    ka_store_txn *txn;
    ka_key_rec r;
    ka_entity e;

    (void)state;
    populate();
    txn = begin(0);
    assert_int_equal(ka_del_conn(txn, st, CN_A1), KA_OK);
    assert_int_equal(ka_del_conn(txn, st, CN_A1), KA_NOTFOUND);
    commit(txn);
    txn = begin(1);
    assert_int_equal(ka_get_conn(txn, st, CN_A1, &e), KA_NOTFOUND);
    assert_int_equal(get_write(txn, 1, &r), KA_NOTFOUND);
    assert_int_equal(get_write(txn, 2, &r), KA_NOTFOUND);
    assert_int_equal(ka_get_key_by_id(txn, st, W_1, &r), KA_NOTFOUND);
    assert_string_equal(list_write(txn, CN_A1), "");
    assert_string_equal(list_conns(txn, WS_A1), "");
    assert_string_equal(list_conns(txn, NULL), CN_A2 "," CN_B1);
    /* The rest stays. */
    assert_int_equal(get_write(txn, 3, &r), KA_OK);
    assert_int_equal(ka_get_ws(txn, st, WS_A1, &e), KA_OK);
    assert_string_equal(list_api(txn, ORG_A), K_A "," K_R1 "," K_R2);
    ka_store_abort(txn);
}

static void test_delete_workspace(void **state)
{
    ka_store_txn *txn;
    ka_key_rec r;
    ka_entity e;

    (void)state;
    populate();
    txn = begin(0);
    assert_int_equal(ka_del_ws(txn, st, WS_A1), KA_OK);
    assert_int_equal(ka_del_ws(txn, st, WS_A1), KA_NOTFOUND);
    commit(txn);
    txn = begin(1);
    assert_int_equal(ka_get_ws(txn, st, WS_A1, &e), KA_NOTFOUND);
    assert_int_equal(ka_get_conn(txn, st, CN_A1, &e), KA_NOTFOUND);
    assert_int_equal(get_write(txn, 1, &r), KA_NOTFOUND);
    assert_int_equal(get_write(txn, 2, &r), KA_NOTFOUND);
    /* The API key restricted to it goes too; the unrestricted one and the other one stay. */
    assert_int_equal(get_api(txn, 2, &r), KA_NOTFOUND);
    assert_int_equal(ka_get_key_by_id(txn, st, K_R1, &r), KA_NOTFOUND);
    assert_string_equal(list_api(txn, ORG_A), K_A "," K_R2);
    assert_string_equal(list_ws(txn, ORG_A), WS_A2);
    assert_string_equal(list_conns(txn, NULL), CN_A2 "," CN_B1);
    assert_int_equal(get_write(txn, 3, &r), KA_OK);
    assert_int_equal(get_api(txn, 1, &r), KA_OK);
    assert_int_equal(get_api(txn, 3, &r), KA_OK);
    assert_int_equal(ka_get_org(txn, st, ORG_A, &e), KA_OK);
    ka_store_abort(txn);
}

static void test_delete_organization(void **state)
{
    ka_store_txn *txn;
    ka_key_rec r;
    ka_entity e;

    (void)state;
    populate();
    txn = begin(0);
    assert_int_equal(ka_del_org(txn, st, ORG_A), KA_OK);
    assert_int_equal(ka_del_org(txn, st, ORG_A), KA_NOTFOUND);
    assert_int_equal(ka_del_org(txn, st, ORG_X), KA_NOTFOUND);
    commit(txn);
    txn = begin(1);
    assert_int_equal(ka_get_org(txn, st, ORG_A, &e), KA_NOTFOUND);
    assert_int_equal(ka_get_ws(txn, st, WS_A1, &e), KA_NOTFOUND);
    assert_int_equal(ka_get_ws(txn, st, WS_A2, &e), KA_NOTFOUND);
    assert_int_equal(ka_get_conn(txn, st, CN_A1, &e), KA_NOTFOUND);
    assert_int_equal(ka_get_conn(txn, st, CN_A2, &e), KA_NOTFOUND);
    for (int n = 1; n <= 3; n++) {
        assert_int_equal(get_api(txn, n, &r), KA_NOTFOUND);
        assert_int_equal(get_write(txn, n, &r), KA_NOTFOUND);
    }
    assert_int_equal(ka_get_key_by_id(txn, st, K_A, &r), KA_NOTFOUND);
    assert_int_equal(ka_get_key_by_id(txn, st, W_3, &r), KA_NOTFOUND);
    assert_string_equal(list_api(txn, ORG_A), "");
    assert_string_equal(list_write(txn, CN_A1), "");
    /* The other organization is untouched. */
    assert_string_equal(list_orgs(txn), ORG_B);
    assert_string_equal(list_ws(txn, NULL), WS_B1);
    assert_string_equal(list_conns(txn, NULL), CN_B1);
    assert_string_equal(list_api(txn, NULL), K_B);
    assert_string_equal(list_write(txn, CN_B1), W_4);
    assert_int_equal(get_api(txn, 4, &r), KA_OK);
    assert_int_equal(get_write(txn, 4, &r), KA_OK);
    ka_store_abort(txn);
}

static void test_delete_aborted(void **state)
{
    ka_store_txn *txn;
    ka_entity e;

    (void)state;
    populate();
    txn = begin(0);
    assert_int_equal(ka_del_org(txn, st, ORG_A), KA_OK);
    ka_store_abort(txn);
    txn = begin(1);
    assert_int_equal(ka_get_org(txn, st, ORG_A, &e), KA_OK);
    assert_string_equal(list_api(txn, ORG_A), K_A "," K_R1 "," K_R2);
    ka_store_abort(txn);
}

/* The transactions of keystore.h: a reset reader renewed reads the newest snapshot, an aborted
 * writer leaves nothing, the map grows on demand. */
static void test_transactions(void **state)
{
    char err[512], buf[512];
    ka_store_txn *r, *w;
    ka_entity e;
    size_t id0;

    (void)state;
    populate();
    r = begin(1);
    id0 = ka_store_txn_id(r);
    assert_true(id0 > 0);
    assert_int_equal(id0, ka_store_last_commit(st));
    ka_store_read_reset(r);
    w = begin(0);
    put_org(w, ORG_X, 1, "new");
    commit(w);
    assert_int_equal(ka_store_last_commit(st), id0 + 1);
    assert_int_equal(ka_store_read_renew(r, err, sizeof(err)), KA_OK);
    assert_int_equal(ka_store_txn_id(r), id0 + 1);
    assert_int_equal(ka_get_org(r, st, ORG_X, &e), KA_OK);
    ka_store_abort(r);
    w = begin(0);
    assert_int_equal(ka_del_org(w, st, ORG_X), KA_OK);
    ka_store_abort(w);
    r = begin(1);
    assert_int_equal(ka_get_org(r, st, ORG_X, &e), KA_OK);
    assert_int_equal(ka_store_last_commit(st), id0 + 1);
    ka_store_abort(r);
    ka_store_abort(NULL);
    /* Room for 2 GiB more, then twice the map: the store reads as before. */
    assert_int_equal(ka_store_reserve(st, (size_t)2 << 30, 0, err, sizeof(err)), KA_OK);
    assert_int_equal(ka_store_reserve(st, 0, 1, err, sizeof(err)), KA_OK);
    r = begin(1);
    assert_int_equal(ka_get_org(r, st, ORG_A, &e), KA_OK);
    ka_store_abort(r);
    assert_string_equal(ka_store_default_secret("/srv/keys", buf, sizeof(buf)), "/srv/keys/secret");
    assert_non_null(strchr(ka_store_engine_version(buf, sizeof(buf)), '.'));
}

/* A reader keeps its snapshot while a writer commits; the next reader sees the change. */
static void test_snapshot(void **state)
{
    ka_store_txn *r1, *w, *r2;
    ka_entity e;

    (void)state;
    populate();
    r1 = begin(1);
    w = begin(0);
    put_org(w, ORG_X, 1, "new");
    assert_int_equal(ka_del_org(w, st, ORG_B), KA_OK);
    commit(w);
    assert_int_equal(ka_get_org(r1, st, ORG_X, &e), KA_NOTFOUND);
    assert_int_equal(ka_get_org(r1, st, ORG_B, &e), KA_OK);
    r2 = begin(1);
    assert_int_equal(ka_get_org(r2, st, ORG_X, &e), KA_OK);
    assert_int_equal(ka_get_org(r2, st, ORG_B, &e), KA_NOTFOUND);
    ka_store_abort(r2);
    ka_store_abort(r1);
}

/* An index entry whose key record is gone makes listing fail, with or without a filter. */
static void test_list_api_keys_inconsistent(void **state)
{
    ka_store_txn *txn;
    uint8_t p[KA_PAYLOAD_LEN], d[KA_DIGEST_LEN];
    MDB_val k = {KA_DIGEST_LEN, d};
    idlist l;
    int rc_org, rc_all;

    (void)state;
    populate();
    payload_of(2, p); /* K_R1 */
    ka_digest_api(st, p, d);
    /* The key record goes behind the store's back (plain LMDB, the store closed). */
    ka_store_close(st);
    st = NULL;
    raw_del("keys", &k);
    st = open_store(0);
    txn = begin(1);
    memset(&l, 0, sizeof(l));
    rc_org = ka_list_api_keys(txn, st, ORG_A, collect_key, &l);
    memset(&l, 0, sizeof(l));
    rc_all = ka_list_api_keys(txn, st, NULL, collect_key, &l);
    ka_store_abort(txn);
    assert_int_equal(rc_org, KA_FAIL);
    assert_int_equal(rc_all, KA_FAIL);
}

/* ka_decide over the real store (ka_store_lookup), read-only as in the module. */
static void test_decide_over_store(void **state)
{
    ka_store_lookup_ctx ctx;
    ka_lookup lk;
    ka_request req;
    ka_decision dec;
    char auth[128], wk[KA_WRITE_KEY_LEN + 1];
    uint8_t p[KA_PAYLOAD_LEN];
    ka_store_txn *txn;

    (void)state;
    populate();
    ka_store_close(st);
    st = open_store(1);
    txn = begin(1);
    memset(&ctx, 0, sizeof(ctx));
    ctx.st = st;
    ctx.txn = txn;
    ka_store_lookup(&ctx, &lk);

    memset(&req, 0, sizeof(req));
    payload_of(3, p); /* K_R2 */
    memcpy(auth, "Bearer api_", 11);
    ka_api_body_encode(p, auth + 11);
    auth[11 + KA_API_BODY_LEN] = '\0';
    ka_classify("GET", "/v1/users", KA_EP_AUTO, &req.route);
    req.authorization = auth;
    assert_int_equal(decide_http(&req, &lk, &dec), HTTP_ACCEPTED);
    assert_int_equal(dec.id.type, KA_KEY_API);
    assert_string_equal(dec.id.key_id, K_R2);
    assert_string_equal(dec.id.org, ORG_A);
    assert_string_equal(dec.id.ws, WS_A2);

    /* Organization B is disabled. */
    payload_of(4, p);
    ka_api_body_encode(p, auth + 11);
    assert_int_equal(decide_http(&req, &lk, &dec), 422);
    assert_string_equal(dec.message, "organization " ORG_B " is disabled");

    /* Unknown key. */
    payload_of(99, p);
    ka_api_body_encode(p, auth + 11);
    assert_int_equal(decide_http(&req, &lk, &dec), 401);
    assert_string_equal(dec.message,
                        "API key in the Authorization header of the request does not exist");

    /* Workspace header. */
    payload_of(1, p);
    ka_api_body_encode(p, auth + 11);
    req.workspace = WS_B1;
    assert_int_equal(decide_http(&req, &lk, &dec), 404);
    req.workspace = WS_A1;
    assert_int_equal(decide_http(&req, &lk, &dec), HTTP_ACCEPTED);
    assert_string_equal(dec.id.ws, WS_A1);

    /* A write key, in the header of an ingestion request. */
    memset(&req, 0, sizeof(req));
    ka_classify("POST", "/v1/events/track", KA_EP_AUTO, &req.route);
    write_key_of(3, wk);
    snprintf(auth, sizeof(auth), "Bearer %s", wk);
    req.authorization = auth;
    assert_int_equal(decide_http(&req, &lk, &dec), HTTP_ACCEPTED);
    assert_int_equal(dec.id.type, KA_KEY_WRITE);
    assert_string_equal(dec.id.key_id, W_3);
    assert_string_equal(dec.id.conn, CN_A2);
    assert_string_equal(dec.id.ws, WS_A2);
    assert_string_equal(dec.id.org, ORG_A);
    /* Of the disabled organization. */
    write_key_of(4, wk);
    snprintf(auth, sizeof(auth), "Bearer %s", wk);
    assert_int_equal(decide_http(&req, &lk, &dec), 503);
    assert_string_equal(dec.message, "organization is disabled");

    /* API-key ingestion with a connection of the store. */
    memset(&req, 0, sizeof(req));
    ka_classify("POST", "/v1/events", KA_EP_AUTO, &req.route);
    payload_of(1, p);
    memcpy(auth, "Bearer api_", 11);
    ka_api_body_encode(p, auth + 11);
    auth[11 + KA_API_BODY_LEN] = '\0';
    req.authorization = auth;
    assert_int_equal(decide_http(&req, &lk, &dec), NEED_BODY);
    {
        static const char body[] = "{\"connectionId\":\"" CN_A2 "\"}";
        ka_body_fields f;
        ka_json_scan(body, strlen(body), &f);
        req.body = &f;
        assert_int_equal(decide_http(&req, &lk, &dec), HTTP_ACCEPTED);
        assert_string_equal(dec.id.conn, CN_A2);
        assert_string_equal(dec.id.ws, WS_A2);
    }
    ka_store_abort(txn);
}

/* With no transaction, the first look-up opens one through begin; a decision that reads
 * nothing never calls it, and a failing begin is a 503. */
typedef struct {
    int calls;
    int fail;
    ka_store_txn *txn;
} begin_state;

static ka_store_status begin_cb(void *arg, const ka_store **s, ka_store_txn **txn)
{
    begin_state *b = arg;
    char err[512];

    b->calls++;
    if (b->fail)
        return KA_FAIL;
    if (ka_store_read_begin(st, &b->txn, err, sizeof(err)) != KA_OK)
        return KA_FAIL;
    *s = st;
    *txn = b->txn;
    return KA_OK;
}

static void test_lookup_lazy_begin(void **state)
{
    ka_store_lookup_ctx ctx;
    begin_state b;
    ka_lookup lk;
    ka_request req;
    ka_decision dec;
    char auth[128];
    uint8_t p[KA_PAYLOAD_LEN];

    (void)state;
    populate();
    memset(&b, 0, sizeof(b));
    memset(&ctx, 0, sizeof(ctx));
    ctx.begin = begin_cb;
    ctx.begin_arg = &b;
    ka_store_lookup(&ctx, &lk);
    memset(&req, 0, sizeof(req));
    ka_classify("GET", "/v1/users", KA_EP_AUTO, &req.route);

    /* Malformed: no transaction. */
    req.authorization = "Bearer api_AOyrCBBQEmI63fgWAAw8F12XcPvUqkg0aEwlIqnO0xyCeS3NU";
    assert_int_equal(decide_http(&req, &lk, &dec), 401);
    assert_int_equal(b.calls, 0);
    assert_null(ctx.txn);

    /* A failing begin: 503, and it is tried again next time. */
    payload_of(1, p);
    memcpy(auth, "Bearer api_", 11);
    ka_api_body_encode(p, auth + 11);
    auth[11 + KA_API_BODY_LEN] = '\0';
    req.authorization = auth;
    b.fail = 1;
    assert_int_equal(decide_http(&req, &lk, &dec), 503);
    assert_string_equal(dec.code, "ServiceUnavailable");
    assert_int_equal(b.calls, 1);
    assert_null(ctx.txn);

    /* One transaction for all the look-ups of a decision. */
    b.fail = 0;
    req.workspace = WS_A2;
    assert_int_equal(decide_http(&req, &lk, &dec), HTTP_ACCEPTED);
    assert_string_equal(dec.id.key_id, K_A);
    assert_string_equal(dec.id.ws, WS_A2);
    assert_int_equal(b.calls, 2);
    assert_ptr_equal(ctx.txn, b.txn);
    assert_ptr_equal(ctx.st, st);
    ka_store_abort(b.txn);
}

/* ---- connection flags, mirrored stores, the upgrade from format 1 ---- */

static void test_conn_flags(void **state)
{
    static const unsigned flags[] = {0, KA_CONN_DESTINATION, KA_CONN_NO_STRATEGY,
                                     KA_CONN_DESTINATION | KA_CONN_NO_STRATEGY};
    ka_store_txn *txn;
    ka_entity e;

    (void)state;
    st = open_store(0);
    txn = begin(0);
    for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++) {
        memset(&e, 0, sizeof(e));
        snprintf(e.id, sizeof(e.id), "cnF%zu23456789", i);
        snprintf(e.ws, sizeof(e.ws), WS_A1);
        snprintf(e.org, sizeof(e.org), ORG_A);
        snprintf(e.name, sizeof(e.name), "flags %u", flags[i]);
        e.conn_flags = flags[i] | 0xf0u; /* unknown bits are not stored */
        assert_int_equal(ka_put_conn(txn, st, &e), KA_OK);
    }
    commit(txn);
    txn = begin(1);
    for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++) {
        char id[KA_ID_LEN + 1], name[32];
        snprintf(id, sizeof(id), "cnF%zu23456789", i);
        snprintf(name, sizeof(name), "flags %u", flags[i]);
        assert_int_equal(ka_get_conn(txn, st, id, &e), KA_OK);
        assert_int_equal(e.conn_flags, flags[i]);
        assert_string_equal(e.ws, WS_A1);
        assert_string_equal(e.org, ORG_A);
        assert_string_equal(e.name, name);
    }
    ka_store_abort(txn);
}

static void test_mirror_meta(void **state)
{
    char err[512], want[1024];
    ka_mirror_meta m, got;
    ka_store_txn *txn;

    (void)state;
    st = open_store(0);
    assert_int_equal(ka_store_is_mirror(st), 0);
    assert_int_equal(ka_store_refuse_mirror(st, err, sizeof(err)), KA_OK);
    txn = begin(1);
    assert_int_equal(ka_mirror_meta_get(txn, st, &got), KA_NOTFOUND);
    ka_store_abort(txn);
    memset(&m, 0, sizeof(m));
    snprintf(m.source, sizeof(m.source), "7300000000000000001/krenalis/public");
    snprintf(m.conninfo, sizeof(m.conninfo), "host=db1 dbname=krenalis user=edge");
    m.version = 0x0102030405060708ull;
    txn = begin(0);
    assert_int_equal(ka_mirror_meta_put(txn, st, &m), KA_OK);
    commit(txn);
    assert_int_equal(ka_store_is_mirror(st), 1);
    txn = begin(1);
    assert_int_equal(ka_mirror_meta_get(txn, st, &got), KA_OK);
    ka_store_abort(txn);
    assert_string_equal(got.source, m.source);
    assert_string_equal(got.conninfo, m.conninfo);
    assert_true(got.version == m.version);
    /* Each batch records only its version. */
    txn = begin(0);
    assert_int_equal(ka_mirror_version_put(txn, st, 42), KA_OK);
    commit(txn);
    txn = begin(1);
    assert_int_equal(ka_mirror_meta_get(txn, st, &got), KA_OK);
    ka_store_abort(txn);
    assert_true(got.version == 42);
    assert_string_equal(got.source, m.source);
    assert_int_equal(ka_store_refuse_mirror(st, err, sizeof(err)), KA_FAIL);
    snprintf(want, sizeof(want),
             "key store %s is a mirror of the Krenalis database 'host=db1 dbname=krenalis "
             "user=edge' (7300000000000000001/krenalis/public): change keys in Krenalis, "
             "'krenalis-keys mirror' brings them here",
             dir);
    assert_string_equal(err, want);
    /* A record without a source is refused. */
    m.source[0] = '\0';
    txn = begin(0);
    assert_int_equal(ka_mirror_meta_put(txn, st, &m), KA_FAIL);
    ka_store_abort(txn);
}

/* Puts a record into database db with plain LMDB (the store must be closed). */
static void raw_put(const char *db, const void *key, size_t klen, const void *val, size_t vlen)
{
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    MDB_val k = {klen, (void *)key}, v = {vlen, (void *)val};

    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 8), 0);
    assert_int_equal(mdb_env_open(env, dir, 0, 0640), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, db, 0, &dbi), 0);
    assert_int_equal(mdb_put(txn, dbi, &k, &v, 0), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
}

/* The statistics of database db and the free pages of the environment (plain LMDB). */
static void raw_stat(const char *db, MDB_stat *ms, size_t *free_pages)
{
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    MDB_cursor *cur;
    MDB_val k, v;

    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 8), 0);
    assert_int_equal(mdb_env_open(env, dir, MDB_RDONLY, 0640), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, db, 0, &dbi), 0);
    assert_int_equal(mdb_stat(txn, dbi, ms), 0);
    /* The free list is database 0: each record a txn ID and a count-prefixed page list. */
    *free_pages = 0;
    assert_int_equal(mdb_cursor_open(txn, 0, &cur), 0);
    while (mdb_cursor_get(cur, &k, &v, MDB_NEXT) == 0)
        *free_pages += *(const size_t *)v.mv_data;
    mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    mdb_env_close(env);
}

/* A key record of a wrong length for its type, or a key-ids record whose hint runs past its
 * end, is refused (KA_FAIL), never read past. */
static void test_key_record_layout(void **state)
{
    static const struct {
        const char *rec;
        size_t len;
        ka_store_status want;
    } cases[] = {
        {"A" K_A ORG_A, 25, KA_OK},
        {"A" K_A ORG_A WS_A1, 37, KA_OK},
        {"W" W_1 ORG_A WS_A1 CN_A1, 49, KA_OK},
        {"A" K_A ORG_A "x", 26, KA_FAIL},
        {"A" K_A ORG_A, 24, KA_FAIL},
        {"W" K_A ORG_A, 25, KA_FAIL},
        {"W" W_1 ORG_A WS_A1, 37, KA_FAIL},
        {"A" W_1 ORG_A WS_A1 CN_A1, 49, KA_FAIL},
        {"W" W_1 ORG_A WS_A1 CN_A1 "x", 50, KA_FAIL},
        {"X" K_A ORG_A, 25, KA_FAIL},
        {"", 0, KA_FAIL},
    };
    uint8_t d[KA_DIGEST_LEN];
    ka_store_txn *txn;
    ka_key_rec r;

    (void)state;
    populate();
    ka_store_close(st);
    st = NULL;
    memset(d, 0xee, sizeof(d));
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        raw_put("keys", d, sizeof(d), cases[i].rec, cases[i].len);
        st = open_store(1);
        txn = begin(1);
        assert_int_equal(ka_get_key(txn, st, d, &r), cases[i].want);
        if (cases[i].want == KA_OK) {
            assert_int_equal(r.type, cases[i].rec[0] == 'A' ? KA_KEY_API : KA_KEY_WRITE);
            assert_string_equal(r.org, ORG_A);
            assert_string_equal(r.ws, cases[i].len >= 37 ? WS_A1 : "");
            assert_string_equal(r.conn, cases[i].len == 49 ? CN_A1 : "");
        }
        ka_store_abort(txn);
        ka_store_close(st);
        st = NULL;
    }
    /* key-ids: the digest, 8 bytes of time, a hint length past the end. */
    {
        uint8_t kid[KA_DIGEST_LEN + 8 + 1 + 4];
        ka_store_status want[] = {KA_FAIL, KA_OK};
        raw_put("keys", d, sizeof(d), "W" W_1 ORG_A WS_A1 CN_A1, 49);
        for (int ok = 0; ok <= 1; ok++) {
            memset(kid, 0, sizeof(kid));
            memcpy(kid, d, KA_DIGEST_LEN);
            kid[KA_DIGEST_LEN + 8] = ok ? 4 : 5;
            memcpy(kid + KA_DIGEST_LEN + 9, "abcd", 4);
            raw_put("key-ids", W_1, KA_ID_LEN, kid, sizeof(kid));
            st = open_store(1);
            txn = begin(1);
            assert_int_equal(ka_get_key_by_id(txn, st, W_1, &r), want[ok]);
            if (ok)
                assert_string_equal(r.hint, "abcd");
            /* Too short to hold a digest. */
            ka_store_abort(txn);
            ka_store_close(st);
            st = NULL;
        }
        raw_put("key-ids", W_1, KA_ID_LEN, kid, KA_DIGEST_LEN + 8);
        st = open_store(1);
        txn = begin(1);
        assert_int_equal(ka_get_key_by_id(txn, st, W_1, &r), KA_FAIL);
        ka_store_abort(txn);
    }
}

/* ---- stores of formats 1 and 2, written the old way ---- */

#define OLD_MORE 3000 /* API keys beyond the three named ones */

static void api_digest(int i, uint8_t d[KA_DIGEST_LEN], char hint[KA_HINT_MAX + 1])
{
    uint8_t p[KA_PAYLOAD_LEN];
    char body[KA_API_BODY_LEN];

    memset(p, 0xa5, sizeof(p));
    memcpy(p, &i, sizeof(i));
    ka_api_body_encode(p, body);
    ka_hint(body, sizeof(body), hint);
    ka_digest_api(st, p, d);
}

static void old_id(int i, char id[KA_ID_LEN + 1])
{
    /* Unsigned and below 10^10: always 12 characters, as the compiler can tell. */
    snprintf(id, KA_ID_LEN + 1, "km%010u", (unsigned)i % 1000000000u);
}

/* A format 1 or 2 key record (type, id, org, ws or zeros, conn or zeros, time, hint, name). */
static void old_key(MDB_txn *t, MDB_dbi keys, MDB_dbi kids, MDB_dbi idx, const uint8_t *d,
                    char type, const char *id, const char *ws, const char *conn, uint64_t created,
                    const char *hint, const char *name)
{
    uint8_t rec[256], ikey[1 + 2 * KA_ID_LEN];
    size_t hl = strlen(hint), nl = strlen(name);
    MDB_val k = {KA_DIGEST_LEN, (void *)d}, v = {57 + 1 + hl + nl, rec},
            ik = {KA_ID_LEN, (void *)id};
    MDB_val iv = {KA_DIGEST_LEN, (void *)d}, xk = {sizeof(ikey), ikey}, xv = {0, ""};

    memset(rec, 0, sizeof(rec));
    rec[0] = (uint8_t)type;
    memcpy(rec + 1, id, KA_ID_LEN);
    memcpy(rec + 13, ORG_A, KA_ID_LEN);
    if (ws)
        memcpy(rec + 25, ws, KA_ID_LEN);
    if (conn)
        memcpy(rec + 37, conn, KA_ID_LEN);
    for (int i = 0; i < 8; i++)
        rec[49 + i] = (uint8_t)(created >> (56 - 8 * i));
    rec[57] = (uint8_t)hl;
    memcpy(rec + 58, hint, hl);
    memcpy(rec + 58 + hl, name, nl);
    assert_int_equal(mdb_put(t, keys, &k, &v, 0), 0);
    assert_int_equal(mdb_put(t, kids, &ik, &iv, 0), 0);
    ikey[0] = type == 'A' ? 'A' : 'W';
    memcpy(ikey + 1, type == 'A' ? ORG_A : conn, KA_ID_LEN);
    memcpy(ikey + 1 + KA_ID_LEN, id, KA_ID_LEN);
    assert_int_equal(mdb_put(t, idx, &xk, &xv, 0), 0);
}

/* Replaces the store in dir with one of format f written the old way with plain LMDB: ORG_A,
 * WS_A1, CN_A1 (in it), K_A (payload of api_digest(1)), K_R1 (2, restricted to WS_A1), W_1
 * (write key 1 of CN_A1), and OLD_MORE more API keys (km..., api_digest(100 + i)). */
static void write_old_store(int f)
{
    static const char *const names[] = {"meta", "organizations", "workspaces", "connections",
                                        "keys", "key-ids",       "index"};
    MDB_dbi dbi[7];
    MDB_env *env;
    MDB_txn *t;
    MDB_val k, v;
    uint8_t check[KA_DIGEST_LEN], d[KA_DIGEST_LEN];
    char path[256], hint[KA_HINT_MAX + 1], id[KA_ID_LEN + 1], key[KA_WRITE_KEY_LEN + 1];

    st = open_store(1);
    /* The secret-check record of the store init made (the same secret). */
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 8), 0);
    ka_store_close(st);
    assert_int_equal(mdb_env_open(env, dir, MDB_RDONLY, 0640), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, MDB_RDONLY, &t), 0);
    assert_int_equal(mdb_dbi_open(t, "meta", 0, &dbi[0]), 0);
    k.mv_size = 12;
    k.mv_data = "secret-check";
    assert_int_equal(mdb_get(t, dbi[0], &k, &v), 0);
    memcpy(check, v.mv_data, sizeof(check));
    mdb_txn_abort(t);
    mdb_env_close(env);
    st = open_store(1); /* for the digests */
    snprintf(path, sizeof(path), "%s/data.mdb", dir);
    assert_int_equal(unlink(path), 0);
    snprintf(path, sizeof(path), "%s/lock.mdb", dir);
    unlink(path);
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 8), 0);
    assert_int_equal(mdb_env_set_mapsize(env, (size_t)64 << 20), 0);
    assert_int_equal(mdb_env_open(env, dir, 0, 0640), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &t), 0);
    for (int i = 0; i < 7; i++)
        assert_int_equal(mdb_dbi_open(t, names[i], MDB_CREATE, &dbi[i]), 0);
#define PUT(db, ks, kl, vs, vl)                                                                    \
    do {                                                                                           \
        MDB_val pk = {(kl), (void *)(ks)}, pv = {(vl), (void *)(vs)};                              \
        assert_int_equal(mdb_put(t, dbi[db], &pk, &pv, 0), 0);                                     \
    } while (0)
    PUT(0, "format", 6, f == 1 ? KA_STORE_FORMAT_1 : KA_STORE_FORMAT_2, 15);
    PUT(0, "secret-check", 12, check, sizeof(check));
    PUT(1, ORG_A, KA_ID_LEN, "\001Acme", 5);
    PUT(2, WS_A1, KA_ID_LEN, ORG_A "A one", 17);
    if (f == 1)
        PUT(3, CN_A1, KA_ID_LEN, WS_A1 ORG_A "c one", 29);
    else
        PUT(3, CN_A1, KA_ID_LEN, WS_A1 ORG_A "\002c one", 30);
    PUT(6, "S" ORG_A WS_A1, 25, "", 0);
    PUT(6, "C" WS_A1 CN_A1, 25, "", 0);
#undef PUT
    api_digest(1, d, hint);
    old_key(t, dbi[4], dbi[5], dbi[6], d, 'A', K_A, NULL, NULL, 1700000001, hint, "old key 1");
    api_digest(2, d, hint);
    old_key(t, dbi[4], dbi[5], dbi[6], d, 'A', K_R1, WS_A1, NULL, 1700000002, hint, "old key 2");
    write_key_of(1, key);
    ka_hint(key, KA_WRITE_KEY_LEN, hint);
    ka_digest_write(st, key, d);
    old_key(t, dbi[4], dbi[5], dbi[6], d, 'W', W_1, WS_A1, CN_A1, 1800000001, hint, "");
    for (int i = 0; i < OLD_MORE; i++) {
        old_id(i, id);
        api_digest(100 + i, d, hint);
        old_key(t, dbi[4], dbi[5], dbi[6], d, 'A', id, i % 2 ? WS_A1 : NULL, NULL,
                1700000100u + (uint64_t)i, hint, i % 3 ? "more" : "");
    }
    assert_int_equal(mdb_txn_commit(t), 0);
    mdb_env_close(env);
    ka_store_close(st);
    st = NULL;
}

static int count_key(const ka_key_rec *k, void *arg)
{
    (*(size_t *)arg)++;
    return 0;
}

static int count_entity(const ka_entity *e, void *arg)
{
    (*(size_t *)arg)++;
    return 0;
}

/* A store of format f upgraded: every key still authenticates with the same identity, names,
 * hints and times survive, listings and cascades work. */
static void check_upgrade(int f)
{
    char err[512], want[1024], hint[KA_HINT_MAX + 1], id[KA_ID_LEN + 1];
    uint8_t d[KA_DIGEST_LEN];
    ka_store_txn *txn;
    ka_store *s = NULL;
    ka_entity e;
    ka_key_rec r;
    size_t n = 0;

    write_old_store(f);
    assert_int_equal(ka_store_open(dir, NULL, 1, &s, err, sizeof(err)), KA_FAIL);
    snprintf(want, sizeof(want),
             "key store %s has format 'krenalis-keys %d'; this build reads 'krenalis-keys 3': "
             "upgrade it with 'krenalis-keys --store %s upgrade'",
             dir, f, dir);
    assert_string_equal(err, want);
    assert_int_equal(ka_store_upgrade(dir, NULL, err, sizeof(err)), KA_OK);
    st = open_store(1);
    txn = begin(1);
    assert_int_equal(ka_get_conn(txn, st, CN_A1, &e), KA_OK);
    assert_int_equal(e.conn_flags, f == 1 ? 0u : KA_CONN_NO_STRATEGY);
    assert_string_equal(e.ws, WS_A1);
    assert_string_equal(e.org, ORG_A);
    assert_string_equal(e.name, "c one");
    assert_int_equal(ka_get_ws(txn, st, WS_A1, &e), KA_OK);
    assert_string_equal(e.name, "A one");
    assert_int_equal(ka_get_org(txn, st, ORG_A, &e), KA_OK);
    assert_string_equal(e.name, "Acme");
    api_digest(1, d, hint);
    assert_int_equal(full_key(txn, d, &r), KA_OK);
    assert_string_equal(r.id, K_A);
    assert_string_equal(r.ws, "");
    assert_string_equal(r.name, "old key 1");
    assert_string_equal(r.hint, hint);
    assert_int_equal(r.created, 1700000001);
    api_digest(2, d, hint);
    assert_int_equal(full_key(txn, d, &r), KA_OK);
    assert_string_equal(r.id, K_R1);
    assert_string_equal(r.ws, WS_A1);
    assert_string_equal(r.name, "old key 2");
    assert_int_equal(get_write(txn, 1, &r), KA_OK);
    assert_int_equal(r.type, KA_KEY_WRITE);
    assert_string_equal(r.id, W_1);
    assert_string_equal(r.conn, CN_A1);
    assert_string_equal(r.ws, WS_A1);
    assert_int_equal(r.created, 1800000001);
    assert_int_equal(strlen(r.hint), 13);
    for (int i = 0; i < OLD_MORE; i++) {
        old_id(i, id);
        api_digest(100 + i, d, hint);
        assert_int_equal(full_key(txn, d, &r), KA_OK);
        assert_string_equal(r.id, id);
        assert_string_equal(r.ws, i % 2 ? WS_A1 : "");
        assert_string_equal(r.hint, hint);
        assert_string_equal(r.name, i % 3 ? "more" : "");
        assert_int_equal(r.created, 1700000100u + (uint64_t)i);
    }
    assert_int_equal(ka_list_api_keys(txn, st, ORG_A, count_key, &n), KA_OK);
    assert_int_equal(n, 2 + OLD_MORE);
    n = 0;
    assert_int_equal(ka_list_write_keys(txn, st, CN_A1, count_key, &n), KA_OK);
    assert_int_equal(n, 1);
    n = 0;
    assert_int_equal(ka_list_ws(txn, st, ORG_A, count_entity, &n), KA_OK);
    assert_int_equal(n, 1);
    n = 0;
    assert_int_equal(ka_list_conns(txn, st, WS_A1, count_entity, &n), KA_OK);
    assert_int_equal(n, 1);
    ka_store_abort(txn);
    ka_store_close(st);
    /* The index works: removing the workspace takes its connection, write key and the keys
     * restricted to it. */
    st = open_store(0);
    txn = begin(0);
    assert_int_equal(ka_del_ws(txn, st, WS_A1), KA_OK);
    commit(txn);
    txn = begin(1);
    n = 0;
    assert_int_equal(ka_list_api_keys(txn, st, ORG_A, count_key, &n), KA_OK);
    assert_int_equal(n, 1 + OLD_MORE / 2);
    assert_int_equal(get_write(txn, 1, &r), KA_NOTFOUND);
    ka_store_abort(txn);
    ka_store_close(st);
    st = NULL;
    /* A second upgrade finds the current format. */
    assert_int_equal(ka_store_upgrade(dir, NULL, err, sizeof(err)), KA_FAIL);
    snprintf(want, sizeof(want), "key store %s has format 'krenalis-keys 3' already", dir);
    assert_string_equal(err, want);
}

static void test_upgrade_1(void **state)
{
    (void)state;
    check_upgrade(1);
}

static void test_upgrade_2(void **state)
{
    (void)state;
    check_upgrade(2);
}

/* ---- bulk loads and compaction ---- */

static int regen_calls;

static int test_regen(char id[KA_ID_LEN], void *arg)
{
    char buf[KA_ID_LEN + 1];
    snprintf(buf, sizeof(buf), "rg%010d", regen_calls++);
    memcpy(id, buf, KA_ID_LEN);
    return 0;
}

/* n bulk keys numbered from first: API keys (api_digest(first + i)) with IDs bk..., or write
 * keys (write_key_of) with IDs bw... and connections bc... */
static ka_bulk_key *bulk_keys(int first, size_t n, int write)
{
    ka_bulk_key *keys = calloc(n, sizeof(*keys));
    char hint[KA_HINT_MAX + 1], buf[KA_ID_LEN + 1], key[KA_WRITE_KEY_LEN + 1];

    assert_non_null(keys);
    for (size_t i = 0; i < n; i++) {
        int num = first + (int)i;
        if (write) {
            write_key_of(num, key);
            ka_hint(key, KA_WRITE_KEY_LEN, hint);
            ka_digest_write(st, key, keys[i].digest);
            snprintf(buf, sizeof(buf), "bc%010d", num);
            memcpy(keys[i].conn, buf, KA_ID_LEN);
        } else
            api_digest(num, keys[i].digest, hint);
        snprintf(buf, sizeof(buf), "%s%010d", write ? "bw" : "bk", num);
        memcpy(keys[i].id, buf, KA_ID_LEN);
        keys[i].hint_len = (uint8_t)strlen(hint);
        memcpy(keys[i].hint, hint, keys[i].hint_len);
    }
    return keys;
}

static int bulk(int first, size_t n, const char *ws, int write)
{
    char err[512] = "";
    ka_key_rec tmpl;
    ka_entity conn;
    ka_bulk_key *keys = bulk_keys(first, n, write);
    int rebuilt = -1;
    ka_store_status rc;

    memset(&tmpl, 0, sizeof(tmpl));
    memset(&conn, 0, sizeof(conn));
    tmpl.type = write ? KA_KEY_WRITE : KA_KEY_API;
    memcpy(tmpl.org, ORG_A, sizeof(tmpl.org));
    snprintf(tmpl.ws, sizeof(tmpl.ws), "%s", ws ? ws : "");
    tmpl.created = 1900000000u;
    snprintf(tmpl.name, sizeof(tmpl.name), "%s", write ? "" : "bulk");
    memcpy(conn.org, ORG_A, sizeof(conn.org));
    snprintf(conn.ws, sizeof(conn.ws), "%s", ws ? ws : "");
    snprintf(conn.name, sizeof(conn.name), "bulk conn");
    rc = ka_bulk_add(st, &tmpl, &conn, keys, n, test_regen, NULL, &rebuilt, err, sizeof(err));
    if (rc != KA_OK)
        fail_msg("ka_bulk_add: %s", err);
    assert_int_not_equal(rebuilt, -1);
    free(keys);
    return rebuilt;
}

/* Every bulk key numbered first.. first+n-1 reads back whole. */
static void check_bulk(int first, size_t n, const char *ws, int write)
{
    char hint[KA_HINT_MAX + 1], id[KA_ID_LEN + 1], key[KA_WRITE_KEY_LEN + 1];
    ka_store_txn *txn = begin(1);
    uint8_t d[KA_DIGEST_LEN];
    ka_key_rec r;
    ka_entity e;

    for (size_t i = 0; i < n; i++) {
        int num = first + (int)i;
        if (write) {
            write_key_of(num, key);
            ka_hint(key, KA_WRITE_KEY_LEN, hint);
            ka_digest_write(st, key, d);
        } else
            api_digest(num, d, hint);
        assert_int_equal(full_key(txn, d, &r), KA_OK);
        snprintf(id, sizeof(id), "%s%010d", write ? "bw" : "bk", num);
        assert_string_equal(r.id, id);
        assert_int_equal(r.type, write ? KA_KEY_WRITE : KA_KEY_API);
        assert_string_equal(r.org, ORG_A);
        assert_string_equal(r.ws, ws ? ws : "");
        assert_string_equal(r.hint, hint);
        assert_string_equal(r.name, write ? "" : "bulk");
        assert_int_equal(r.created, 1900000000u);
        if (write) {
            size_t nk = 0;
            snprintf(id, sizeof(id), "bc%010d", num);
            assert_string_equal(r.conn, id);
            assert_int_equal(ka_get_conn(txn, st, id, &e), KA_OK);
            assert_string_equal(e.ws, ws);
            assert_string_equal(e.org, ORG_A);
            assert_string_equal(e.name, "bulk conn");
            assert_int_equal(ka_list_write_keys(txn, st, id, count_key, &nk), KA_OK);
            assert_int_equal(nk, 1);
        }
    }
    ka_store_abort(txn);
}

/* Leaf pages of "keys" holding only unrestricted API keys: at most 10% over the minimum (a
 * node of 8 + 32 + 25 bytes, rounded to even, and its 2-byte pointer, on 4096 - 16 bytes), and
 * no free page left in the file. */
static void check_dense(size_t entries)
{
    MDB_stat ms;
    size_t free_pages, min;

    raw_stat("keys", &ms, &free_pages);
    assert_int_equal(ms.ms_entries, entries);
    min = (entries * 68 + (ms.ms_psize - 16) - 1) / (ms.ms_psize - 16);
    if (ms.ms_leaf_pages * 10 > min * 11)
        fail_msg("%zu leaf pages for %zu keys: the minimum is %zu", (size_t)ms.ms_leaf_pages,
                 entries, min);
    assert_true(free_pages <= 8);
}

static void test_bulk_empty(void **state)
{
    enum { N = 20000 };
    ka_store_txn *txn;
    size_t n = 0;

    (void)state;
    st = open_store(0);
    txn = begin(0);
    put_org(txn, ORG_A, 1, "Acme");
    put_ws(txn, WS_A1, ORG_A, "A one");
    commit(txn);
    assert_int_equal(bulk(0, N, NULL, 0), 1); /* an empty store: written dense */
    check_bulk(0, N, NULL, 0);
    ka_store_close(st);
    st = NULL;
    check_dense(N);
    st = open_store(0);
    /* Few keys against many: in place, in key order. */
    assert_int_equal(bulk(N, 50, WS_A1, 0), 0);
    assert_int_equal(bulk(0, 40, WS_A1, 1), 0);
    check_bulk(0, N, NULL, 0);
    check_bulk(N, 50, WS_A1, 0);
    check_bulk(0, 40, WS_A1, 1);
    txn = begin(1);
    assert_int_equal(ka_list_api_keys(txn, st, ORG_A, count_key, &n), KA_OK);
    assert_int_equal(n, N + 50);
    n = 0;
    assert_int_equal(ka_list_conns(txn, st, WS_A1, count_entity, &n), KA_OK);
    assert_int_equal(n, 40);
    ka_store_abort(txn);
    /* Many against few: rebuilt, with everything that was there. */
    assert_int_equal(bulk(N + 50, N / 8, NULL, 0), 1);
    assert_int_equal(bulk(40, N / 8, WS_A1, 1), 1);
    check_bulk(0, N, NULL, 0);
    check_bulk(N, 50, WS_A1, 0);
    check_bulk(N + 50, N / 8, NULL, 0);
    check_bulk(0, 40 + N / 8, WS_A1, 1);
    txn = begin(1);
    n = 0;
    assert_int_equal(ka_list_api_keys(txn, st, ORG_A, count_key, &n), KA_OK);
    assert_int_equal(n, N + 50 + N / 8);
    n = 0;
    assert_int_equal(ka_list_conns(txn, st, WS_A1, count_entity, &n), KA_OK);
    assert_int_equal(n, 40 + N / 8);
    ka_store_abort(txn);
}

/* Into the fixture: its keys, names and hints survive a rebuild; taken IDs are drawn again; an
 * unknown organization adds nothing. */
static void test_bulk_nonempty(void **state)
{
    char err[512];
    ka_key_rec tmpl, r;
    ka_entity conn;
    ka_bulk_key *keys;
    ka_store_txn *txn;
    int rebuilt;
    size_t n = 0;

    (void)state;
    populate();
    keys = bulk_keys(1000, 100, 0);
    memcpy(keys[7].id, K_R2, KA_ID_LEN);       /* taken in the store */
    memcpy(keys[9].id, keys[8].id, KA_ID_LEN); /* twice in the load */
    memset(&tmpl, 0, sizeof(tmpl));
    memset(&conn, 0, sizeof(conn));
    tmpl.type = KA_KEY_API;
    memcpy(tmpl.org, ORG_X, sizeof(tmpl.org));
    assert_int_equal(
        ka_bulk_add(st, &tmpl, &conn, keys, 100, test_regen, NULL, &rebuilt, err, sizeof(err)),
        KA_NOTFOUND);
    memcpy(tmpl.org, ORG_A, sizeof(tmpl.org));
    regen_calls = 0;
    assert_int_equal(
        ka_bulk_add(st, &tmpl, &conn, keys, 100, test_regen, NULL, &rebuilt, err, sizeof(err)),
        KA_OK);
    assert_int_equal(rebuilt, 1);
    assert_int_equal(regen_calls, 2);
    free(keys);
    txn = begin(1);
    assert_int_equal(get_api(txn, 3, &r), KA_OK);
    assert_string_equal(r.id, K_R2);
    assert_string_equal(r.name, "api key 3");
    assert_int_equal(get_write(txn, 4, &r), KA_OK);
    assert_string_equal(r.id, W_4);
    assert_int_equal(r.created, 1800000004u);
    assert_int_equal(ka_list_api_keys(txn, st, ORG_A, count_key, &n), KA_OK);
    assert_int_equal(n, 3 + 100);
    n = 0;
    assert_int_equal(ka_list_api_keys(txn, st, NULL, count_key, &n), KA_OK);
    assert_int_equal(n, 4 + 100);
    ka_store_abort(txn);
}

/* A store filled in random order and thinned out is rewritten dense, with the same content;
 * a writer that had it open writes to the new one. */
static void test_compact(void **state)
{
    enum { N = 8000 };
    char err[512];
    uint8_t d[KA_DIGEST_LEN];
    ka_store_txn *txn;
    ka_store *other = NULL;
    ka_entity e;
    ka_key_rec r;
    size_t free_pages, n = 0;
    MDB_stat before, after;

    (void)state;
    populate();
    txn = begin(0);
    for (int i = 0; i < N; i++) {
        char id[KA_ID_LEN + 1], hint[KA_HINT_MAX + 1];
        memset(&r, 0, sizeof(r));
        r.type = KA_KEY_API;
        old_id(i, r.id);
        memcpy(r.org, ORG_B, sizeof(r.org));
        api_digest(5000 + i, d, hint);
        snprintf(r.hint, sizeof(r.hint), "%s", hint);
        snprintf(r.name, sizeof(r.name), "c%d", i);
        assert_int_equal(ka_put_key(txn, st, d, &r), KA_OK);
        (void)id;
    }
    commit(txn);
    txn = begin(0);
    for (int i = 0; i < N; i += 2) {
        char id[KA_ID_LEN + 1];
        old_id(i, id);
        assert_int_equal(ka_del_key(txn, st, id), KA_OK);
    }
    commit(txn);
    ka_store_close(st);
    st = NULL;
    raw_stat("keys", &before, &free_pages);
    st = open_store(0);
    other = open_store(0);
    assert_int_equal(ka_store_compact(st, err, sizeof(err)), KA_OK);
    ka_store_close(st);
    st = NULL;
    raw_stat("keys", &after, &free_pages);
    assert_int_equal(after.ms_entries, before.ms_entries);
    assert_true(after.ms_leaf_pages * 10 < before.ms_leaf_pages * 8);
    assert_true(free_pages <= 8);
    /* The other handle's next write goes to the new store. */
    {
        ka_store *keep = st;
        st = other;
        txn = begin(0);
        put_org(txn, ORG_X, 1, "after");
        commit(txn);
        st = keep;
    }
    ka_store_close(other);
    st = open_store(1);
    txn = begin(1);
    assert_int_equal(ka_get_org(txn, st, ORG_X, &e), KA_OK);
    assert_string_equal(e.name, "after");
    for (int i = 0; i < N; i++) {
        char hint[KA_HINT_MAX + 1], name[16];
        api_digest(5000 + i, d, hint);
        if (i % 2 == 0) {
            assert_int_equal(ka_get_key(txn, st, d, &r), KA_NOTFOUND);
            continue;
        }
        assert_int_equal(full_key(txn, d, &r), KA_OK);
        snprintf(name, sizeof(name), "c%d", i);
        assert_string_equal(r.name, name);
        assert_string_equal(r.hint, hint);
    }
    assert_int_equal(ka_list_api_keys(txn, st, ORG_B, count_key, &n), KA_OK);
    assert_int_equal(n, 1 + N / 2);
    assert_int_equal(get_api(txn, 2, &r), KA_OK);
    assert_string_equal(r.name, "api key 2");
    ka_store_abort(txn);
}

int run_keystore_tests(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_create),
        T(test_create_external_secret),
        T(test_secret_reused),
        T(test_open_errors),
        T(test_open_not_a_directory),
        T(test_format_version),
        T(test_secret_check_missing),
        T(test_truncated),
        T(test_put_get),
        T(test_digests),
        T(test_open_with_secret),
        T(test_long_name),
        T(test_overwrite),
        T(test_list),
        T(test_delete_key),
        T(test_delete_connection),
        T(test_delete_workspace),
        T(test_delete_organization),
        T(test_delete_aborted),
        T(test_snapshot),
        T(test_transactions),
        T(test_list_api_keys_inconsistent),
        T(test_decide_over_store),
        T(test_lookup_lazy_begin),
        T(test_conn_flags),
        T(test_mirror_meta),
        T(test_key_record_layout),
        T(test_upgrade_1),
        T(test_upgrade_2),
        T(test_bulk_empty),
        T(test_bulk_nonempty),
        T(test_compact),
    };
#undef T
    return cmocka_run_group_tests_name("keystore", tests, NULL, NULL);
}
