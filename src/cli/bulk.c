/* krenalis-keys: api-key bulk-create and write-key bulk-create (cli.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "cli.h"

#define BATCH_KEYS 100000 /* keys per write transaction in bulk-create */
#define KEY_BYTES 512     /* generous store space one key takes, indexes included */

typedef struct {
    int api;              /* API keys; else connections with one write key each */
    const char *org, *ws; /* as given */
    ka_key_rec tmpl;      /* API keys: scope, name, creation time */
    ka_entity conn;       /* connections: workspace, organization, name */
    rng r;
    size_t n;   /* keys in the current batch */
    char *buf;  /* token lines of the current batch */
    size_t len; /* bytes in buf */
} bulk_arg;

static void bulk_line(bulk_arg *b, const char *secret)
{
    size_t n = strlen(secret);

    memcpy(b->buf + b->len, secret, n);
    b->buf[b->len + n] = '\n';
    b->len += n + 1;
}

static int bulk_api_step(ka_store_txn *txn, ka_store *st, void *arg, char *err, size_t errlen)
{
    bulk_arg *b = arg;
    new_key key;
    int rc = resolve_scope(txn, st, b->org, b->ws, &b->tmpl, err, errlen);

    b->len = 0;
    for (size_t i = 0; rc == STEP_OK && i < b->n; i++) {
        rc = put_api_key(txn, st, &b->r, &b->tmpl, &key, err, errlen);
        if (rc == STEP_OK)
            bulk_line(b, key.secret);
    }
    OPENSSL_cleanse(&key, sizeof(key));
    return rc;
}

static int bulk_conn_step(ka_store_txn *txn, ka_store *st, void *arg, char *err, size_t errlen)
{
    bulk_arg *b = arg;
    ka_entity ws;
    new_key key;
    int rc = need(ka_get_ws(txn, st, b->ws, &ws), "workspace", b->ws, err, errlen);

    b->len = 0;
    memcpy(b->conn.org, ws.org, sizeof(b->conn.org));
    for (size_t i = 0; rc == STEP_OK && i < b->n; i++) {
        rc = claim_id(txn, st, ka_get_conn, "connection", b->conn.id, &b->r, err, errlen);
        if (rc == STEP_OK && ka_put_conn(txn, st, &b->conn) != KA_OK)
            rc = STEP_STORE;
        if (rc == STEP_OK)
            rc = put_write_key(txn, st, &b->r, &b->conn, &key, err, errlen);
        if (rc == STEP_OK)
            bulk_line(b, key.secret);
    }
    OPENSSL_cleanse(&key, sizeof(key));
    return rc;
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int open_tokens(const char *path)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);

    if (fd < 0) {
        fail("cannot create %s: %s", path, strerror(errno));
        return -1;
    }
    if (fchmod(fd, 0600) != 0) {
        fail("cannot make %s private: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

/* Batches of BATCH_KEYS keys, one write transaction each; a batch's tokens are appended to the
 * file once it is committed, so every line of the file is a key of the store. */
static int bulk_batches(ka_store *st, bulk_arg *b, size_t count, int fd, const char *path)
{
    char err[ERR_MAX];
    txn_fn step = b->api ? bulk_api_step : bulk_conn_step;

    for (size_t done = 0; done < count; done += b->n) {
        b->n = count - done < BATCH_KEYS ? count - done : BATCH_KEYS;
        if (run_write(st, step, b, b->n * KEY_BYTES, err, sizeof(err)) != STEP_OK)
            return fail("%s (%zu of %zu keys were created before; their tokens are in %s)", err,
                        done, count, path);
        if (write_all(fd, b->buf, b->len) != 0)
            return fail("cannot write %s: %s (%zu of %zu keys were created)", path, strerror(errno),
                        done + b->n, count);
    }
    if (fsync(fd) != 0)
        return fail("cannot write %s: %s", path, strerror(errno));
    return EXIT_OK;
}

static int run_bulk(cli *c, bulk_arg *b)
{
    const char *path = c->a.opt[OPT_TOKENS];
    char line[32];
    size_t count = 0;
    ka_store *st;
    int fd, rc;

    if (take_count(c->a.opt[OPT_COUNT], &count) != EXIT_OK)
        return EXIT_FAIL;
    b->buf = malloc(BATCH_KEYS * (KA_API_TOKEN_LEN + 1));
    if (b->buf == NULL)
        return fail("out of memory");
    st = open_store(c, 0);
    fd = st ? open_tokens(path) : -1;
    rc = fd < 0 ? EXIT_FAIL : bulk_batches(st, b, count, fd, path);
    if (fd >= 0 && close(fd) != 0 && rc == EXIT_OK)
        rc = fail("cannot write %s: %s", path, strerror(errno));
    ka_store_close(st);
    OPENSSL_cleanse(b->buf, BATCH_KEYS * (KA_API_TOKEN_LEN + 1));
    free(b->buf);
    rng_wipe(&b->r);
    if (rc != EXIT_OK)
        return rc;
    snprintf(line, sizeof(line), "%zu", count);
    return emit(
        c, jobj("created", json_object_new_int64((int64_t)count), "tokens", jstr(path), END), line);
}

int cmd_api_bulk(cli *c)
{
    bulk_arg b;
    int rc;

    memset(&b, 0, sizeof(b));
    rng_init(&b.r);
    b.api = 1;
    if ((rc = api_scope_args(c, &b.org, &b.ws)) != EXIT_OK)
        return rc;
    if (take_name(c->a.opt[OPT_NAME], b.tmpl.name) != EXIT_OK)
        return EXIT_FAIL;
    b.tmpl.created = (uint64_t)time(NULL);
    return run_bulk(c, &b);
}

int cmd_wk_bulk(cli *c)
{
    bulk_arg b;

    memset(&b, 0, sizeof(b));
    rng_init(&b.r);
    b.ws = c->a.opt[OPT_WS];
    if (check_id("workspace", b.ws) != EXIT_OK || take_name(c->a.opt[OPT_NAME], b.conn.name))
        return EXIT_FAIL;
    memcpy(b.conn.ws, b.ws, KA_ID_LEN + 1);
    b.conn.enabled = 1;
    return run_bulk(c, &b);
}
