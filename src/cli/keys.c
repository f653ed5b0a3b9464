/* krenalis-keys: api-key, write-key and organizations-key (cli.h). */
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>

#include "cli.h"
#include "token.h"

/* ---- creating keys ---- */

int put_api_key(ka_store_txn *txn, ka_store *st, rng *r, const ka_key_rec *tmpl, new_key *out,
                char *err, size_t errlen)
{
    uint8_t payload[KA_PAYLOAD_LEN], digest[KA_DIGEST_LEN];
    ka_key_rec rec = *tmpl;
    int rc;

    rec.type = KA_KEY_API;
    rec.conn[0] = '\0';
    if ((rc = claim_id(txn, st, get_key_id, "key", rec.id, r, err, errlen)) != STEP_OK)
        return rc;
    if (!rng_bytes(r, payload, sizeof(payload)))
        return random_failed(err, errlen);
    memcpy(out->secret, "api_", 4);
    ka_api_body_encode(payload, out->secret + 4);
    out->secret[KA_API_TOKEN_LEN] = '\0';
    ka_hint(out->secret + 4, KA_API_BODY_LEN, rec.hint);
    ka_digest_api(st, payload, digest);
    OPENSSL_cleanse(payload, sizeof(payload));
    if (ka_put_key(txn, st, digest, &rec) != KA_OK)
        return STEP_STORE;
    memcpy(out->id, rec.id, sizeof(out->id));
    return STEP_OK;
}

int put_write_key(ka_store_txn *txn, ka_store *st, rng *r, const ka_entity *conn, new_key *out,
                  char *err, size_t errlen)
{
    uint8_t digest[KA_DIGEST_LEN];
    ka_key_rec rec;
    int rc;

    memset(&rec, 0, sizeof(rec));
    rec.type = KA_KEY_WRITE;
    if ((rc = claim_id(txn, st, get_key_id, "key", rec.id, r, err, errlen)) != STEP_OK)
        return rc;
    if (!rng_chars(r, ka_alnum62, out->secret, KA_WRITE_KEY_LEN))
        return random_failed(err, errlen);
    out->secret[KA_WRITE_KEY_LEN] = '\0';
    memcpy(rec.org, conn->org, sizeof(rec.org));
    memcpy(rec.ws, conn->ws, sizeof(rec.ws));
    memcpy(rec.conn, conn->id, sizeof(rec.conn));
    rec.created = (uint64_t)time(NULL);
    ka_hint(out->secret, KA_WRITE_KEY_LEN, rec.hint);
    ka_digest_write(st, out->secret, digest);
    if (ka_put_key(txn, st, digest, &rec) != KA_OK)
        return STEP_STORE;
    memcpy(out->id, rec.id, sizeof(out->id));
    return STEP_OK;
}

/* The organization and workspace of a new API key (--organization and/or --workspace): the
 * workspace must be in the organization; the organization may come from the workspace. */
int resolve_scope(ka_store_txn *txn, const ka_store *st, const char *org, const char *ws,
                  ka_key_rec *tmpl, char *err, size_t errlen)
{
    ka_entity e;
    int rc;

    tmpl->ws[0] = '\0';
    if (ws != NULL) {
        if ((rc = need(ka_get_ws(txn, st, ws, &e), "workspace", ws, err, errlen)) != STEP_OK)
            return rc;
        if (org != NULL && strcmp(e.org, org) != 0) {
            snprintf(err, errlen, "workspace %s does not belong to organization %s", ws, org);
            return STEP_ERR;
        }
        memcpy(tmpl->ws, e.id, sizeof(tmpl->ws));
        org = e.org;
    }
    snprintf(tmpl->org, sizeof(tmpl->org), "%s", org);
    return need(ka_get_org(txn, st, tmpl->org, &e), "organization", tmpl->org, err, errlen);
}

static int count_key(const ka_key_rec *k, void *arg)
{
    (*(size_t *)arg)++;
    return 0;
}

static int count_write_keys(ka_store_txn *txn, const ka_store *st, const char *conn, size_t *n)
{
    *n = 0;
    return ka_list_write_keys(txn, st, conn, count_key, n) == KA_OK ? STEP_OK : STEP_STORE;
}

/* ---- api-key ---- */

typedef struct {
    const char *org, *ws; /* as given; either may be NULL, not both */
    ka_key_rec tmpl;
    rng r;
    new_key key;
} api_arg;

/* --organization and --workspace of api-key create and bulk-create. */
int api_scope_args(cli *c, const char **org, const char **ws)
{
    *org = c->a.opt[OPT_ORG];
    *ws = c->a.opt[OPT_WS];
    if (*org == NULL && *ws == NULL) {
        fprintf(stderr, PROG ": %s %s needs --organization or --workspace\nusage: " PROG " %s\n",
                c->cmd->group, c->cmd->action, c->cmd->synopsis);
        return EXIT_USAGE;
    }
    if (*org && check_id("organization", *org) != EXIT_OK)
        return EXIT_FAIL;
    if (*ws && check_id("workspace", *ws) != EXIT_OK)
        return EXIT_FAIL;
    return EXIT_OK;
}

static int api_create_step(ka_store_txn *txn, ka_store *st, void *arg, char *err, size_t errlen)
{
    api_arg *a = arg;
    int rc = resolve_scope(txn, st, a->org, a->ws, &a->tmpl, err, errlen);

    if (rc != STEP_OK)
        return rc;
    return put_api_key(txn, st, &a->r, &a->tmpl, &a->key, err, errlen);
}

int cmd_api_create(cli *c)
{
    api_arg a;
    int rc;

    memset(&a, 0, sizeof(a));
    rng_init(&a.r);
    if ((rc = api_scope_args(c, &a.org, &a.ws)) != EXIT_OK)
        return rc;
    if (take_name(c->a.opt[OPT_NAME], a.tmpl.name) != EXIT_OK)
        return EXIT_FAIL;
    a.tmpl.created = (uint64_t)time(NULL);
    rc = with_write(c, api_create_step, &a, SMALL_WRITE);
    rng_wipe(&a.r);
    if (rc == EXIT_OK)
        rc = emit_new_key(c, a.key.id, "token", a.key.secret);
    OPENSSL_cleanse(&a.key, sizeof(a.key));
    return rc;
}

static int api_key_item(const ka_key_rec *k, void *arg)
{
    lister *l = arg;
    char created[32];

    rfc3339(k->created, created);
    if (!l->c->json) {
        printf("%s\t%s\t%s\t%s\t%s\t%s\n", k->id, k->org, dash(k->ws), k->hint, created, k->name);
        return 0;
    }
    list_add(l,
             jobj("id", jstr(k->id), "organization", jstr(k->org), "workspace", jopt(k->ws), "name",
                  jstr(k->name), "hint", jstr(k->hint), "createdAt", jstr(created), END));
    return 0;
}

static ka_store_status api_key_rows(ka_store_txn *txn, const ka_store *st, const char *org,
                                    lister *l)
{
    return ka_list_api_keys(txn, st, org, api_key_item, l);
}

int cmd_api_list(cli *c)
{
    static const listing ls = {"organization", ka_get_org, "keys", api_key_rows};
    return run_listing(c, &ls, c->a.opt[OPT_ORG]);
}

static int api_delete_step(ka_store_txn *txn, ka_store *st, void *arg, char *err, size_t errlen)
{
    const char *id = arg;
    ka_key_rec rec;
    int rc = need(ka_get_key_by_id(txn, st, id, &rec), "API key", id, err, errlen);

    if (rc != STEP_OK)
        return rc;
    if (rec.type != KA_KEY_API) {
        snprintf(err, errlen, "%s is an event write key, not an API key (use write-key delete)",
                 id);
        return STEP_ERR;
    }
    return ka_del_key(txn, st, id) == KA_OK ? STEP_OK : STEP_STORE;
}

int cmd_api_delete(cli *c)
{
    const char *id = c->pos[0];
    int rc;

    if (check_id("key", id) != EXIT_OK)
        return EXIT_FAIL;
    rc = with_write(c, api_delete_step, (void *)id, SMALL_WRITE);
    if (rc != EXIT_OK)
        return rc;
    return emit(c, jobj("id", jstr(id), "deleted", json_object_new_boolean(1), END), NULL);
}

/* ---- write-key ---- */

typedef struct {
    const char *conn;
    const char *key_id; /* delete */
    rng r;
    new_key key; /* create */
} wk_arg;

static int wk_create_step(ka_store_txn *txn, ka_store *st, void *arg, char *err, size_t errlen)
{
    wk_arg *a = arg;
    ka_entity conn;
    size_t n;
    int rc = need(ka_get_conn(txn, st, a->conn, &conn), "connection", a->conn, err, errlen);

    if (rc == STEP_OK)
        rc = count_write_keys(txn, st, a->conn, &n);
    if (rc != STEP_OK)
        return rc;
    if (n >= KA_MAX_WRITE_KEYS) {
        snprintf(err, errlen,
                 "connection %s already has %zu event write keys, the most it can hold; delete "
                 "one first",
                 a->conn, n);
        return STEP_ERR;
    }
    return put_write_key(txn, st, &a->r, &conn, &a->key, err, errlen);
}

int cmd_wk_create(cli *c)
{
    wk_arg a;
    int rc;

    memset(&a, 0, sizeof(a));
    rng_init(&a.r);
    a.conn = c->a.opt[OPT_CONN];
    if (check_id("connection", a.conn) != EXIT_OK)
        return EXIT_FAIL;
    rc = with_write(c, wk_create_step, &a, SMALL_WRITE);
    rng_wipe(&a.r);
    if (rc == EXIT_OK)
        rc = emit_new_key(c, a.key.id, "key", a.key.secret);
    OPENSSL_cleanse(&a.key, sizeof(a.key));
    return rc;
}

static int wk_item(const ka_key_rec *k, void *arg)
{
    lister *l = arg;
    char created[32];

    rfc3339(k->created, created);
    if (!l->c->json) {
        printf("%s\t%s\t%s\n", k->id, k->hint, created);
        return 0;
    }
    list_add(l, jobj("id", jstr(k->id), "hint", jstr(k->hint), "createdAt", jstr(created), END));
    return 0;
}

static ka_store_status wk_rows(ka_store_txn *txn, const ka_store *st, const char *conn, lister *l)
{
    return ka_list_write_keys(txn, st, conn, wk_item, l);
}

/* --connection is required: the filter is always there. */
int cmd_wk_list(cli *c)
{
    static const listing ls = {"connection", ka_get_conn, "keys", wk_rows};
    return run_listing(c, &ls, c->a.opt[OPT_CONN]);
}

static int wk_delete_step(ka_store_txn *txn, ka_store *st, void *arg, char *err, size_t errlen)
{
    wk_arg *a = arg;
    ka_entity conn;
    ka_key_rec rec;
    size_t n;
    int rc = need(ka_get_conn(txn, st, a->conn, &conn), "connection", a->conn, err, errlen);

    if (rc == STEP_OK)
        rc = need(ka_get_key_by_id(txn, st, a->key_id, &rec), "event write key", a->key_id, err,
                  errlen);
    if (rc != STEP_OK)
        return rc;
    if (rec.type != KA_KEY_WRITE || strcmp(rec.conn, a->conn) != 0) {
        snprintf(err, errlen, "%s is not an event write key of connection %s", a->key_id, a->conn);
        return STEP_ERR;
    }
    if ((rc = count_write_keys(txn, st, a->conn, &n)) != STEP_OK)
        return rc;
    if (n <= 1) {
        snprintf(err, errlen,
                 "%s is the last event write key of connection %s, and a connection always keeps "
                 "one; create another first, or remove the connection",
                 a->key_id, a->conn);
        return STEP_ERR;
    }
    return ka_del_key(txn, st, a->key_id) == KA_OK ? STEP_OK : STEP_STORE;
}

int cmd_wk_delete(cli *c)
{
    wk_arg a;
    int rc;

    memset(&a, 0, sizeof(a));
    a.conn = c->a.opt[OPT_CONN];
    a.key_id = c->pos[0];
    if (check_id("connection", a.conn) != EXIT_OK || check_id("key", a.key_id) != EXIT_OK)
        return EXIT_FAIL;
    rc = with_write(c, wk_delete_step, &a, SMALL_WRITE);
    if (rc != EXIT_OK)
        return rc;
    return emit(c, jobj("id", jstr(a.key_id), "deleted", json_object_new_boolean(1), END), NULL);
}

/* ---- organizations-key ---- */

int cmd_orgs_key(cli *c)
{
    char key[KA_ORG_KEY_LEN + 1] = "org_";
    rng r;
    int ok, rc;

    rng_init(&r);
    ok = rng_chars(&r, ka_alnum62, key + 4, KA_ORG_KEY_CHARS);
    rng_wipe(&r);
    if (!ok)
        return fail("cannot get random bytes from the system");
    key[KA_ORG_KEY_LEN] = '\0';
    rc = emit(c, jobj("key", jstr(key), END), key);
    OPENSSL_cleanse(key, sizeof(key));
    return rc;
}
