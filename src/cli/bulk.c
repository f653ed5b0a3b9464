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
#include "token.h"

typedef struct {
    int api;              /* API keys; else connections with one write key each */
    const char *org, *ws; /* as given */
    ka_key_rec tmpl;      /* scope, name, creation time (write keys: of the connections') */
    ka_entity conn;       /* connections: workspace, organization, name */
    rng r;
    size_t n;          /* keys */
    ka_bulk_key *keys; /* their records */
    char *buf;         /* their token lines, in the order of keys */
    size_t linelen;    /* bytes of one line */
} bulk_arg;

static int regen_id(char id[KA_ID_LEN], void *arg)
{
    bulk_arg *b = arg;
    return rng_chars(&b->r, ka_base58, id, KA_ID_LEN) ? 0 : -1;
}

/* The scope of the keys, checked in a read transaction (ka_bulk_add checks again as it writes). */
static int bulk_scope_step(ka_store_txn *txn, ka_store *st, void *arg, char *err, size_t errlen)
{
    bulk_arg *b = arg;
    ka_entity ws;
    int rc;

    if (b->api)
        return resolve_scope(txn, st, b->org, b->ws, &b->tmpl, err, errlen);
    if ((rc = need(ka_get_ws(txn, st, b->ws, &ws), "workspace", b->ws, err, errlen)) != STEP_OK)
        return rc;
    memcpy(b->conn.org, ws.org, sizeof(b->conn.org));
    memcpy(b->tmpl.org, ws.org, sizeof(b->tmpl.org));
    memcpy(b->tmpl.ws, ws.id, sizeof(b->tmpl.ws));
    return STEP_OK;
}

/* Draws the n keys: IDs, secrets (their lines in b->buf), digests and hints. */
static int bulk_generate(ka_store *st, bulk_arg *b)
{
    char hint[KA_HINT_MAX + 1];

    for (size_t i = 0; i < b->n; i++) {
        ka_bulk_key *k = &b->keys[i];
        char *line = b->buf + i * b->linelen;

        if (!rng_chars(&b->r, ka_base58, k->id, KA_ID_LEN) ||
            (!b->api && !rng_chars(&b->r, ka_base58, k->conn, KA_ID_LEN)))
            return fail("cannot get random bytes from the system");
        if (b->api) {
            uint8_t payload[KA_PAYLOAD_LEN];
            if (!rng_bytes(&b->r, payload, sizeof(payload)))
                return fail("cannot get random bytes from the system");
            memcpy(line, "api_", 4);
            ka_api_body_encode(payload, line + 4);
            ka_hint(line + 4, KA_API_BODY_LEN, hint);
            ka_digest_api(st, payload, k->digest);
            OPENSSL_cleanse(payload, sizeof(payload));
        } else {
            if (!rng_chars(&b->r, ka_alnum62, line, KA_WRITE_KEY_LEN))
                return fail("cannot get random bytes from the system");
            ka_hint(line, KA_WRITE_KEY_LEN, hint);
            ka_digest_write(st, line, k->digest);
        }
        line[b->linelen - 1] = '\n';
        k->hint_len = (uint8_t)strlen(hint);
        memcpy(k->hint, hint, k->hint_len);
    }
    return EXIT_OK;
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

/* Every key in one load (ka_bulk_add: in key order, or a dense rebuild of the store); the
 * tokens are written once it is in the store, so every line of the file is a key of it. */
static int bulk_load(ka_store *st, bulk_arg *b, int fd, const char *path)
{
    char err[ERR_MAX] = "";
    ka_store_txn *txn;
    int rebuilt, rc;

    if (ka_store_read_begin(st, &txn, err, sizeof(err)) != KA_OK)
        return fail("%s", err);
    rc = bulk_scope_step(txn, st, b, err, sizeof(err));
    ka_store_abort(txn);
    if (rc != STEP_OK)
        return fail("%s", err[0] ? err : "cannot read the key store");
    b->tmpl.type = b->api ? KA_KEY_API : KA_KEY_WRITE;
    if (bulk_generate(st, b) != EXIT_OK)
        return EXIT_FAIL;
    if (ka_bulk_add(st, &b->tmpl, &b->conn, b->keys, b->n, regen_id, b, &rebuilt, err,
                    sizeof(err)) != KA_OK)
        return fail("%s (no key was created)", err);
    if (write_all(fd, b->buf, b->n * b->linelen) != 0 || fsync(fd) != 0)
        return fail("cannot write %s: %s (%zu keys were created)", path, strerror(errno), b->n);
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
    b->n = count;
    b->linelen = (b->api ? KA_API_TOKEN_LEN : KA_WRITE_KEY_LEN) + 1;
    b->buf = malloc(count * b->linelen + 1);
    b->keys = calloc(count ? count : 1, sizeof(*b->keys));
    if (b->buf == NULL || b->keys == NULL) {
        free(b->buf);
        free(b->keys);
        return fail("out of memory for %zu keys", count);
    }
    st = open_store(c, 0);
    fd = st ? open_tokens(path) : -1;
    rc = fd < 0 ? EXIT_FAIL : bulk_load(st, b, fd, path);
    if (fd >= 0 && close(fd) != 0 && rc == EXIT_OK)
        rc = fail("cannot write %s: %s", path, strerror(errno));
    ka_store_close(st);
    OPENSSL_cleanse(b->buf, count * b->linelen);
    free(b->buf);
    free(b->keys);
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
    b.tmpl.created = (uint64_t)time(NULL);
    return run_bulk(c, &b);
}
