/* krenalis-keys: opening the store and running read and write transactions (cli.h). */
#include <errno.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "token.h"

#define COMMIT_RETRIES 8 /* map doublings after a full map at commit */

ka_store *open_store(const cli *c, int readonly)
{
    char err[ERR_MAX];
    struct stat sb;
    ka_store *st;

    snprintf(err, sizeof(err), "%s/data.mdb", c->dir);
    if (stat(err, &sb) != 0 && errno == ENOENT) {
        fail("there is no key store in %s (create one with '" PROG " init')", c->dir);
        return NULL;
    }
    if (ka_store_open(c->dir, c->a.opt[OPT_SECRET], readonly, &st, err, sizeof(err)) != KA_OK) {
        fail("%s", err);
        return NULL;
    }
    /* Keys of a mirrored store change in Krenalis only (SPEC §11.2). */
    if (!readonly && ka_store_refuse_mirror(st, err, sizeof(err)) != KA_OK) {
        ka_store_close(st);
        fail("%s", err);
        return NULL;
    }
    return st;
}

/* A store failure whose message (if the failing call gave none) says a write failed. */
static int store_failed(const ka_store *st, char *err, size_t errlen)
{
    if (err[0] == '\0')
        snprintf(err, errlen, "cannot update key store %s: %s", ka_store_dir(st),
                 "a write failed (disk full, or a damaged store?)");
    return STEP_STORE;
}

int run_write(ka_store *st, txn_fn fn, void *arg, size_t estimate, char *err, size_t errlen)
{
    int grow = 0, step_retried = 0;

    for (int attempt = 0; attempt <= COMMIT_RETRIES; attempt++) {
        ka_store_txn *txn;
        ka_store_status sr;
        int rc;

        err[0] = '\0';
        if (ka_store_reserve(st, estimate, grow, err, errlen) != KA_OK ||
            ka_store_write_begin(st, &txn, err, errlen) != KA_OK)
            return store_failed(st, err, errlen);
        rc = fn(txn, st, arg, err, errlen);
        if (rc != STEP_OK) {
            ka_store_abort(txn);
            if (rc == STEP_ERR || step_retried)
                return rc == STEP_ERR ? STEP_ERR : store_failed(st, err, errlen);
            step_retried = grow = 1;
            continue;
        }
        sr = ka_store_commit(txn, err, errlen);
        if (sr == KA_OK)
            return STEP_OK;
        if (sr != KA_MAPFULL)
            return store_failed(st, err, errlen);
        grow = 1;
    }
    snprintf(err, errlen, "cannot update key store %s: the map is still full after %d doublings",
             ka_store_dir(st), COMMIT_RETRIES);
    return STEP_STORE;
}

int with_write(const cli *c, txn_fn fn, void *arg, size_t estimate)
{
    char err[ERR_MAX] = "";
    ka_store *st = open_store(c, 0);
    int rc;

    if (st == NULL)
        return EXIT_FAIL;
    rc = run_write(st, fn, arg, estimate, err, sizeof(err));
    ka_store_close(st);
    return rc == STEP_OK ? EXIT_OK : fail("%s", err);
}

int with_read(const cli *c, txn_fn fn, void *arg)
{
    char err[ERR_MAX] = "";
    ka_store *st = open_store(c, 1);
    ka_store_txn *txn;
    int rc;

    if (st == NULL)
        return EXIT_FAIL;
    /* The store was just opened: its map is the current one (no KA_RESIZED). */
    if (ka_store_read_begin(st, &txn, err, sizeof(err)) != KA_OK) {
        ka_store_close(st);
        return fail("%s", err);
    }
    rc = fn(txn, st, arg, err, sizeof(err));
    ka_store_abort(txn);
    ka_store_close(st);
    if (rc == STEP_STORE && err[0] == '\0')
        snprintf(err, sizeof(err), "cannot read key store %s", c->dir);
    return rc == STEP_OK ? flush_stdout() : fail("%s", err);
}

int need(ka_store_status rc, const char *what, const char *id, char *err, size_t errlen)
{
    if (rc == KA_OK)
        return STEP_OK;
    if (rc == KA_NOTFOUND) {
        snprintf(err, errlen, "%s %s does not exist", what, id);
        return STEP_ERR;
    }
    return STEP_STORE;
}

typedef struct {
    const cli *c;
    const listing *ls;
    const char *filter;
} listing_arg;

static int listing_step(ka_store_txn *txn, ka_store *st, void *arg, char *err, size_t errlen)
{
    const listing_arg *a = arg;
    ka_entity e;
    lister l;
    int rc;

    if (a->filter && (rc = need(a->ls->filter_get(txn, st, a->filter, &e), a->ls->filter_what,
                                a->filter, err, errlen)) != STEP_OK)
        return rc;
    list_open(&l, a->c, a->ls->member);
    if (a->ls->rows(txn, st, a->filter, &l) != KA_OK)
        return STEP_STORE;
    list_close(&l);
    return STEP_OK;
}

int run_listing(cli *c, const listing *ls, const char *filter)
{
    listing_arg a = {c, ls, filter};

    if (filter && check_id(ls->filter_what, filter) != EXIT_OK)
        return EXIT_FAIL;
    return with_read(c, listing_step, &a);
}

ka_store_status get_key_id(ka_store_txn *txn, const ka_store *st, const char *id, ka_entity *unused)
{
    ka_key_rec rec;
    return ka_get_key_by_id(txn, st, id, &rec);
}

int claim_id(ka_store_txn *txn, const ka_store *st, entity_get get, const char *what,
             char id[KA_ID_LEN + 1], rng *r, char *err, size_t errlen)
{
    ka_entity e;

    for (;;) {
        ka_store_status rc;
        if (r != NULL && !rng_chars(r, ka_base58, id, KA_ID_LEN))
            return random_failed(err, errlen);
        id[KA_ID_LEN] = '\0';
        rc = get(txn, st, id, &e);
        if (rc == KA_NOTFOUND)
            return STEP_OK;
        if (rc != KA_OK)
            return STEP_STORE;
        if (r == NULL) {
            snprintf(err, errlen, "%s %s already exists", what, id);
            return STEP_ERR;
        }
    }
}
