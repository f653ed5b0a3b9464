/* krenalis-keys: creates and manages the LMDB key store of mod_krenalis_auth (SPEC §4).
 * Reference for operators: docs/krenalis-keys.md. */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>
#include <openssl/crypto.h>

#include "crypto.h"
#include "decide.h"
#include "json.h"
#include "keystore.h"
#include "mirror.h"
#include "token.h"
#include "version.h"

#define PROG "krenalis-keys"
#define EXIT_OK 0
#define EXIT_FAIL 1
#define EXIT_USAGE 2

#define DEFAULT_STORE "/var/lib/krenalis-auth"
#define STORE_ENV "KRENALIS_KEY_STORE"
#define ORGS_KEY_ENV "KRENALIS_ORGANIZATIONS_API_KEY"

#define ERR_MAX 8192
#define PATH_MAX_LEN 4200
#define MAX_WORDS 8
#define MAX_BODY ((size_t)16 << 20) /* check --body: larger files are refused */
#define ORG_KEY_CHARS 43            /* after "org_" */

#define BATCH_KEYS 100000              /* keys per write transaction in bulk-create */
#define MAX_BULK 100000000UL           /* largest --count */
#define KEY_BYTES 512                  /* generous store space one key takes, indexes included */
#define SMALL_WRITE ((size_t)64 << 10) /* store space a single-record command may need */
#define ROOM_SLACK ((size_t)64 << 20)  /* free map space kept beyond the estimate */
#define COMMIT_RETRIES 8               /* map doublings after MDB_MAP_FULL at commit */

#define JSON_FLAGS (JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)
#define END ((const char *)NULL) /* ends the key/value list of jobj() */

/* What a transaction step returns. */
#define STEP_OK 0
#define STEP_ERR 1   /* refused (message in err): nothing to retry */
#define STEP_STORE 2 /* the store failed (a full map?): worth one retry */

/* ------------------------------------------------------------------------------------------ */
/* Options and commands                                                                       */
/* ------------------------------------------------------------------------------------------ */

enum {
    OPT_STORE,
    OPT_JSON,
    OPT_SECRET,
    OPT_HELP,
    OPT_OWNER,
    OPT_NAME,
    OPT_DISABLED,
    OPT_ORG,
    OPT_WS,
    OPT_CONN,
    OPT_METHOD,
    OPT_PATH,
    OPT_BODY,
    OPT_ENDPOINT,
    OPT_WS_POLICY,
    OPT_COUNT,
    OPT_TOKENS,
    N_OPTS
};

#define BIT(o) (1u << (o))
#define GLOBAL_OPTS (BIT(OPT_STORE) | BIT(OPT_JSON) | BIT(OPT_SECRET) | BIT(OPT_HELP))

typedef struct {
    const char *name;
    int has_arg;
} opt_def;

static const opt_def OPTS[N_OPTS] = {
    [OPT_STORE] = {"store", 1},
    [OPT_JSON] = {"json", 0},
    [OPT_SECRET] = {"secret", 1},
    [OPT_HELP] = {"help", 0},
    [OPT_OWNER] = {"owner", 1},
    [OPT_NAME] = {"name", 1},
    [OPT_DISABLED] = {"disabled", 0},
    [OPT_ORG] = {"organization", 1},
    [OPT_WS] = {"workspace", 1},
    [OPT_CONN] = {"connection", 1},
    [OPT_METHOD] = {"method", 1},
    [OPT_PATH] = {"path", 1},
    [OPT_BODY] = {"body", 1},
    [OPT_ENDPOINT] = {"endpoint", 1},
    [OPT_WS_POLICY] = {"workspace-policy", 1},
    [OPT_COUNT] = {"count", 1},
    [OPT_TOKENS] = {"tokens", 1},
};

typedef struct {
    const char *opt[N_OPTS]; /* flags are "" when given */
    const char *word[MAX_WORDS];
    int nwords;
} cli_args;

struct command;

typedef struct {
    cli_args a;
    const struct command *cmd;
    const char *const *pos; /* words after the command's own */
    int npos;
    const char *dir;
    int json;
} cli;

typedef struct command {
    const char *group;
    const char *action; /* NULL: a one-word command */
    int (*run)(cli *c);
    unsigned opts;     /* options it takes besides the global ones */
    unsigned required; /* options it cannot do without */
    int min_pos, max_pos;
    const char *synopsis;
} command;

/* ------------------------------------------------------------------------------------------ */
/* Output                                                                                     */
/* ------------------------------------------------------------------------------------------ */

static int fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int fail(const char *fmt, ...)
{
    va_list ap;

    fputs(PROG ": ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return EXIT_FAIL;
}

static int flush_stdout(void)
{
    if (fflush(stdout) != 0 || ferror(stdout))
        return fail("cannot write the output: %s", strerror(errno));
    return EXIT_OK;
}

/* A JSON string, or null for NULL. */
static json_object *jstr(const char *s)
{
    return s ? json_object_new_string(s) : NULL;
}

/* A JSON string, or null for NULL and "". */
static json_object *jopt(const char *s)
{
    return s && *s ? json_object_new_string(s) : NULL;
}

/* An object from key, value pairs ended by END; the object takes the values. */
static json_object *jobj(const char *key, ...)
{
    json_object *o = json_object_new_object();
    va_list ap;

    va_start(ap, key);
    for (; key != NULL; key = va_arg(ap, const char *))
        json_object_object_add(o, key, va_arg(ap, json_object *));
    va_end(ap);
    return o;
}

/* Prints a result: o with --json, else the human line (nothing when NULL). Frees o. */
static int emit(const cli *c, json_object *o, const char *human)
{
    if (c->json)
        puts(json_object_to_json_string_ext(o, JSON_FLAGS));
    else if (human != NULL)
        puts(human);
    json_object_put(o);
    return flush_stdout();
}

/* Streams a listing: {"member":[item,…]} with --json, one line per item otherwise. */
typedef struct {
    const cli *c;
    size_t n;
} lister;

static void list_open(lister *l, const cli *c, const char *member)
{
    l->c = c;
    l->n = 0;
    if (c->json)
        printf("{\"%s\":[", member);
}

static void list_add(lister *l, json_object *item)
{
    if (l->n++ > 0)
        putchar(',');
    fputs(json_object_to_json_string_ext(item, JSON_FLAGS), stdout);
    json_object_put(item);
}

static void list_close(lister *l)
{
    if (l->c->json)
        puts("]}");
}

/* RFC 3339 UTC time, e.g. 2026-11-26T07:00:00Z. */
static void rfc3339(uint64_t t, char out[32])
{
    time_t tt = (time_t)t;
    struct tm tm;

    if (gmtime_r(&tt, &tm) == NULL || strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(out, 32, "1970-01-01T00:00:00Z");
}

static const char *dash(const char *s)
{
    return s && *s ? s : "-";
}

/* ------------------------------------------------------------------------------------------ */
/* Random characters                                                                          */
/* ------------------------------------------------------------------------------------------ */

/* A buffer of CSPRNG bytes, refilled as it runs out, so that bulk creation does not call the
 * generator once per key. Every byte is used at most once. Wipe with rng_wipe. */
typedef struct {
    uint8_t buf[4096];
    size_t pos, len;
} rng;

static void rng_init(rng *r)
{
    r->pos = r->len = 0;
}

static void rng_wipe(rng *r)
{
    OPENSSL_cleanse(r, sizeof(*r));
}

/* n <= sizeof(r->buf) bytes, contiguous in the buffer. */
static const uint8_t *rng_take(rng *r, size_t n)
{
    const uint8_t *p;

    if (r->len - r->pos < n) {
        if (!ka_random(r->buf, sizeof(r->buf)))
            return NULL;
        r->pos = 0;
        r->len = sizeof(r->buf);
    }
    p = r->buf + r->pos;
    r->pos += n;
    return p;
}

static int rng_bytes(rng *r, uint8_t *out, size_t n)
{
    const uint8_t *p = rng_take(r, n);

    if (p == NULL)
        return 0;
    memcpy(out, p, n);
    return 1;
}

/* n characters of alphabet, without modulo bias (ka_pick_chars rejects the biased bytes). */
static int rng_chars(rng *r, const char *alphabet, char *out, size_t n)
{
    size_t filled = 0;

    while (filled < n) {
        size_t want = n - filled;
        const uint8_t *p = rng_take(r, want);
        if (p == NULL)
            return 0;
        filled += ka_pick_chars(alphabet, p, want, out + filled, want);
    }
    return 1;
}

static int random_failed(char *err, size_t errlen)
{
    snprintf(err, errlen, "cannot get random bytes from the system");
    return STEP_ERR;
}

/* ------------------------------------------------------------------------------------------ */
/* Argument checks                                                                            */
/* ------------------------------------------------------------------------------------------ */

static int check_id(const char *what, const char *id)
{
    if (ka_id_valid(id, strlen(id)))
        return EXIT_OK;
    return fail("invalid %s ID '%s': an ID is 12 characters of the base58 alphabet", what, id);
}

/* Length of the UTF-8 sequence at s, 0 if it is not one. */
static size_t utf8_len(const unsigned char *s)
{
    size_t n;

    if (*s < 0x80)
        return 1;
    if (*s >= 0xc2 && *s <= 0xdf)
        n = 2;
    else if (*s >= 0xe0 && *s <= 0xef)
        n = 3;
    else if (*s >= 0xf0 && *s <= 0xf4)
        n = 4;
    else
        return 0;
    for (size_t i = 1; i < n; i++)
        if ((s[i] & 0xc0) != 0x80)
            return 0;
    return n;
}

/* Copies a --name value after checking it: UTF-8, no control characters, KA_NAME_MAX bytes. */
static int take_name(const char *name, char out[KA_NAME_MAX + 1])
{
    const unsigned char *s = (const unsigned char *)(name ? name : "");
    size_t len = strlen((const char *)s);

    if (len > KA_NAME_MAX)
        return fail("name is longer than %d bytes", KA_NAME_MAX);
    for (size_t i = 0, n; i < len; i += n) {
        if (s[i] < 0x20 || s[i] == 0x7f)
            return fail("name contains a control character");
        if ((n = utf8_len(s + i)) == 0)
            return fail("name is not valid UTF-8");
    }
    memcpy(out, s, len + 1);
    return EXIT_OK;
}

static int take_count(const char *s, size_t *out)
{
    char *end;
    unsigned long v;

    errno = 0;
    v = strtoul(s, &end, 10);
    if (s[0] < '0' || s[0] > '9' || *end != '\0' || errno != 0 || v < 1 || v > MAX_BULK)
        return fail("invalid --count '%s': expected a number from 1 to %lu", s, MAX_BULK);
    *out = (size_t)v;
    return EXIT_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* The store: opening, transactions, map growth                                               */
/* ------------------------------------------------------------------------------------------ */

typedef int (*txn_fn)(MDB_txn *txn, ka_store *st, void *arg, char *err, size_t errlen);

static ka_store *open_store(const cli *c, int readonly)
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

static int store_failed(const ka_store *st, int rc, char *err, size_t errlen)
{
    if (err[0] == '\0')
        snprintf(err, errlen, "cannot update key store %s: %s", st->dir,
                 rc ? mdb_strerror(rc) : "a write failed (disk full, or a damaged store?)");
    return STEP_STORE;
}

/* Keeps the map large enough for the next write transaction: at least twice the pages in use
 * (a transaction may copy every page it touches) plus the estimate and some slack. grow
 * doubles it anyway (after a failure that may have been MDB_MAP_FULL). Call with no
 * transaction open. The data file grows only as pages are used, not with the map. */
static int ensure_room(ka_store *st, size_t estimate, int grow)
{
    MDB_envinfo info;
    MDB_stat ms;
    size_t used, want, size;
    int rc = mdb_env_info(st->env, &info);

    if (rc == 0)
        rc = mdb_env_stat(st->env, &ms);
    if (rc != 0)
        return rc;
    used = ((size_t)info.me_last_pgno + 1) * ms.ms_psize;
    want = 2 * used + estimate + ROOM_SLACK;
    size = info.me_mapsize;
    if (grow && want < 2 * size)
        want = 2 * size;
    if (want <= size)
        return 0;
    while (size < want)
        size *= 2;
    return mdb_env_set_mapsize(st->env, size);
}

/* Runs fn in one write transaction and commits it: all of it is written, or none. Redoes it
 * in a larger map after MDB_MAP_FULL (fn must start afresh each time it is called). */
static int run_write(ka_store *st, txn_fn fn, void *arg, size_t estimate, char *err, size_t errlen)
{
    int grow = 0, step_retried = 0;

    for (int attempt = 0; attempt <= COMMIT_RETRIES; attempt++) {
        MDB_txn *txn;
        int rc = ensure_room(st, estimate, grow);

        err[0] = '\0';
        if (rc != 0 || (rc = mdb_txn_begin(st->env, NULL, 0, &txn)) != 0)
            return store_failed(st, rc, err, errlen);
        rc = fn(txn, st, arg, err, errlen);
        if (rc != STEP_OK) {
            mdb_txn_abort(txn);
            if (rc == STEP_ERR || step_retried)
                return rc == STEP_ERR ? STEP_ERR : store_failed(st, 0, err, errlen);
            step_retried = grow = 1;
            continue;
        }
        rc = mdb_txn_commit(txn);
        if (rc == 0)
            return STEP_OK;
        if (rc != MDB_MAP_FULL)
            return store_failed(st, rc, err, errlen);
        grow = 1;
    }
    return store_failed(st, MDB_MAP_FULL, err, errlen);
}

/* Opens the store for writing, runs fn in one transaction, closes. */
static int with_write(const cli *c, txn_fn fn, void *arg, size_t estimate)
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

/* Opens the store read-only, runs fn in one read transaction, closes. */
static int with_read(const cli *c, txn_fn fn, void *arg)
{
    char err[ERR_MAX] = "";
    ka_store *st = open_store(c, 1);
    MDB_txn *txn;
    int rc;

    if (st == NULL)
        return EXIT_FAIL;
    rc = mdb_txn_begin(st->env, NULL, MDB_RDONLY, &txn);
    if (rc != 0) {
        ka_store_close(st);
        return fail("cannot read key store %s: %s", c->dir, mdb_strerror(rc));
    }
    rc = fn(txn, st, arg, err, sizeof(err));
    mdb_txn_abort(txn);
    ka_store_close(st);
    if (rc == STEP_STORE && err[0] == '\0')
        snprintf(err, sizeof(err), "cannot read key store %s", c->dir);
    return rc == STEP_OK ? flush_stdout() : fail("%s", err);
}

/* KA_OK -> STEP_OK; KA_NOTFOUND -> "<what> <id> does not exist"; KA_FAIL -> STEP_STORE. */
static int need(int rc, const char *what, const char *id, char *err, size_t errlen)
{
    if (rc == KA_OK)
        return STEP_OK;
    if (rc == KA_NOTFOUND) {
        snprintf(err, errlen, "%s %s does not exist", what, id);
        return STEP_ERR;
    }
    return STEP_STORE;
}

typedef int (*entity_get)(MDB_txn *txn, const ka_store *st, const char *id, ka_entity *e);

/* Same shape as the other getters: whether a key ID is taken. */
static int get_key_id(MDB_txn *txn, const ka_store *st, const char *id, ka_entity *unused)
{
    ka_key_rec rec;
    return ka_get_key_by_id(txn, st, id, &rec);
}

/* Makes id a free ID of the table behind get: with r, draws one until it is free; without,
 * id is the one the user gave and must be free. */
static int claim_id(MDB_txn *txn, const ka_store *st, entity_get get, const char *what,
                    char id[KA_ID_LEN + 1], rng *r, char *err, size_t errlen)
{
    ka_entity e;

    for (;;) {
        int rc;
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

/* ------------------------------------------------------------------------------------------ */
/* Keys                                                                                       */
/* ------------------------------------------------------------------------------------------ */

typedef struct {
    char id[KA_ID_LEN + 1];
    char secret[KA_API_TOKEN_LEN + 1]; /* "api_…" token, or a 32-character write key */
} new_key;

/* Creates an API key from tmpl (org, ws, name, created): a new payload, ID and hint. */
static int put_api_key(MDB_txn *txn, ka_store *st, rng *r, const ka_key_rec *tmpl, new_key *out,
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

/* Creates an event write key of connection conn. */
static int put_write_key(MDB_txn *txn, ka_store *st, rng *r, const ka_entity *conn, new_key *out,
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
static int resolve_scope(MDB_txn *txn, const ka_store *st, const char *org, const char *ws,
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

static int count_write_keys(MDB_txn *txn, const ka_store *st, const char *conn, size_t *n)
{
    *n = 0;
    return ka_list_write_keys(txn, st, conn, count_key, n) == KA_OK ? STEP_OK : STEP_STORE;
}

/* ------------------------------------------------------------------------------------------ */
/* init                                                                                       */
/* ------------------------------------------------------------------------------------------ */

static int lookup_user(const char *name, uid_t *uid, gid_t *gid)
{
    struct passwd *pw = getpwnam(name);
    char *end;
    unsigned long v;

    if (pw == NULL && name[0] >= '0' && name[0] <= '9') {
        v = strtoul(name, &end, 10);
        if (*end == '\0')
            pw = getpwuid((uid_t)v);
    }
    if (pw == NULL)
        return fail("--owner: no user '%s'", name);
    *uid = pw->pw_uid;
    *gid = pw->pw_gid;
    return EXIT_OK;
}

static int lookup_group(const char *name, gid_t *gid)
{
    struct group *gr = getgrnam(name);
    char *end;
    unsigned long v;

    if (gr == NULL && name[0] >= '0' && name[0] <= '9') {
        v = strtoul(name, &end, 10);
        if (*end == '\0')
            gr = getgrgid((gid_t)v);
    }
    if (gr == NULL)
        return fail("--owner: no group '%s'", name);
    *gid = gr->gr_gid;
    return EXIT_OK;
}

/* USER[:GROUP]; the group defaults to the user's primary group. */
static int parse_owner(const char *spec, uid_t *uid, gid_t *gid)
{
    char user[256];
    const char *colon = strchr(spec, ':');
    size_t ulen = colon ? (size_t)(colon - spec) : strlen(spec);

    if (ulen == 0 || ulen >= sizeof(user) || (colon && colon[1] == '\0'))
        return fail("invalid --owner '%s': expected USER or USER:GROUP", spec);
    memcpy(user, spec, ulen);
    user[ulen] = '\0';
    if (lookup_user(user, uid, gid) != EXIT_OK)
        return EXIT_FAIL;
    return colon ? lookup_group(colon + 1, gid) : EXIT_OK;
}

/* Apache's user opens the environment read-only: it reads data.mdb and writes lock.mdb. */
static int chown_store(const char *dir, uid_t uid, gid_t gid)
{
    static const char *const files[] = {"data.mdb", "lock.mdb"};
    char path[PATH_MAX_LEN];

    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, files[i]);
        if (chown(path, uid, gid) != 0)
            return fail("key store created, but cannot change the owner of %s: %s", path,
                        strerror(errno));
    }
    return EXIT_OK;
}

/* An existing secret is reused: check it before creating anything. */
static int check_existing_secret(const char *path)
{
    uint8_t secret[KA_SECRET_LEN];
    char err[ERR_MAX];
    struct stat sb;

    if (lstat(path, &sb) != 0)
        return EXIT_OK;
    if (ka_secret_read(path, secret, err, sizeof(err)) != NULL)
        return fail("%s", err);
    OPENSSL_cleanse(secret, sizeof(secret));
    return EXIT_OK;
}

static int cmd_init(cli *c)
{
    const char *owner = c->a.opt[OPT_OWNER];
    char err[ERR_MAX], secret[PATH_MAX_LEN], line[2 * PATH_MAX_LEN];
    uid_t uid = 0;
    gid_t gid = 0;

    if (c->a.opt[OPT_SECRET])
        snprintf(secret, sizeof(secret), "%s", c->a.opt[OPT_SECRET]);
    else
        snprintf(secret, sizeof(secret), "%s/secret", c->dir);
    if (owner && parse_owner(owner, &uid, &gid) != EXIT_OK)
        return EXIT_FAIL;
    if (check_existing_secret(secret) != EXIT_OK)
        return EXIT_FAIL;
    if (ka_store_create(c->dir, c->a.opt[OPT_SECRET], err, sizeof(err)) != KA_OK)
        return fail("%s", err);
    if (owner && chown_store(c->dir, uid, gid) != EXIT_OK)
        return EXIT_FAIL;
    snprintf(line, sizeof(line), "created key store %s (secret %s)", c->dir, secret);
    return emit(c, jobj("store", jstr(c->dir), "secret", jstr(secret), END), line);
}

/* ------------------------------------------------------------------------------------------ */
/* organization, workspace, connection                                                        */
/* ------------------------------------------------------------------------------------------ */

typedef struct {
    ka_entity e;
    int given; /* the ID came from the command line */
    rng r;
    new_key key; /* connection add: its first write key */
} add_arg;

/* Common start of the add commands: [ID] and --name. */
static int add_init(const cli *c, add_arg *a, const char *what)
{
    memset(a, 0, sizeof(*a));
    rng_init(&a->r);
    if (c->npos > 0) {
        if (check_id(what, c->pos[0]) != EXIT_OK)
            return EXIT_FAIL;
        memcpy(a->e.id, c->pos[0], KA_ID_LEN + 1);
        a->given = 1;
    }
    return take_name(c->a.opt[OPT_NAME], a->e.name);
}

static rng *id_source(add_arg *a)
{
    return a->given ? NULL : &a->r;
}

static int org_add_step(MDB_txn *txn, ka_store *st, void *arg, char *err, size_t errlen)
{
    add_arg *a = arg;
    int rc = claim_id(txn, st, ka_get_org, "organization", a->e.id, id_source(a), err, errlen);

    if (rc != STEP_OK)
        return rc;
    return ka_put_org(txn, st, &a->e) == KA_OK ? STEP_OK : STEP_STORE;
}

static int cmd_org_add(cli *c)
{
    add_arg a;
    int rc = add_init(c, &a, "organization");

    a.e.enabled = c->a.opt[OPT_DISABLED] == NULL;
    if (rc == EXIT_OK)
        rc = with_write(c, org_add_step, &a, SMALL_WRITE);
    rng_wipe(&a.r);
    return rc != EXIT_OK ? rc : emit(c, jobj("id", jstr(a.e.id), END), a.e.id);
}

typedef struct {
    const char *id;
    int enabled;
} enable_arg;

static int org_enable_step(MDB_txn *txn, ka_store *st, void *arg, char *err, size_t errlen)
{
    enable_arg *a = arg;
    ka_entity e;
    int rc = need(ka_get_org(txn, st, a->id, &e), "organization", a->id, err, errlen);

    if (rc != STEP_OK)
        return rc;
    e.enabled = a->enabled;
    return ka_put_org(txn, st, &e) == KA_OK ? STEP_OK : STEP_STORE;
}

static int org_set_enabled(cli *c, int enabled)
{
    enable_arg a = {c->pos[0], enabled};
    int rc;

    if (check_id("organization", a.id) != EXIT_OK)
        return EXIT_FAIL;
    rc = with_write(c, org_enable_step, &a, SMALL_WRITE);
    if (rc != EXIT_OK)
        return rc;
    return emit(c, jobj("id", jstr(a.id), "enabled", json_object_new_boolean(enabled), END), NULL);
}

static int cmd_org_enable(cli *c)
{
    return org_set_enabled(c, 1);
}

static int cmd_org_disable(cli *c)
{
    return org_set_enabled(c, 0);
}

typedef struct {
    int (*del)(MDB_txn *txn, ka_store *st, const char *id);
    const char *what;
    const char *id;
} remove_arg;

static int remove_step(MDB_txn *txn, ka_store *st, void *arg, char *err, size_t errlen)
{
    remove_arg *a = arg;
    return need(a->del(txn, st, a->id), a->what, a->id, err, errlen);
}

/* Removal cascades (keystore.c): an organization takes its workspaces, connections and keys. */
static int remove_entity(cli *c, int (*del)(MDB_txn *, ka_store *, const char *), const char *what)
{
    remove_arg a = {del, what, c->pos[0]};
    int rc;

    if (check_id(what, a.id) != EXIT_OK)
        return EXIT_FAIL;
    rc = with_write(c, remove_step, &a, SMALL_WRITE);
    if (rc != EXIT_OK)
        return rc;
    return emit(c, jobj("id", jstr(a.id), "removed", json_object_new_boolean(1), END), NULL);
}

static int cmd_org_remove(cli *c)
{
    return remove_entity(c, ka_del_org, "organization");
}

static int org_item(const ka_entity *e, void *arg)
{
    lister *l = arg;

    if (!l->c->json) {
        printf("%s\t%s\t%s\n", e->id, e->enabled ? "enabled" : "disabled", e->name);
        return 0;
    }
    list_add(l, jobj("id", jstr(e->id), "name", jstr(e->name), "enabled",
                     json_object_new_boolean(e->enabled), END));
    return 0;
}

static int org_list_step(MDB_txn *txn, ka_store *st, void *arg, char *err, size_t errlen)
{
    lister l;

    list_open(&l, arg, "organizations");
    if (ka_list_orgs(txn, st, org_item, &l) != KA_OK)
        return STEP_STORE;
    list_close(&l);
    return STEP_OK;
}

static int cmd_org_list(cli *c)
{
    return with_read(c, org_list_step, c);
}

static int ws_add_step(MDB_txn *txn, ka_store *st, void *arg, char *err, size_t errlen)
{
    add_arg *a = arg;
    ka_entity org;
    int rc = need(ka_get_org(txn, st, a->e.org, &org), "organization", a->e.org, err, errlen);

    if (rc == STEP_OK)
        rc = claim_id(txn, st, ka_get_ws, "workspace", a->e.id, id_source(a), err, errlen);
    if (rc != STEP_OK)
        return rc;
    return ka_put_ws(txn, st, &a->e) == KA_OK ? STEP_OK : STEP_STORE;
}

static int cmd_ws_add(cli *c)
{
    add_arg a;
    int rc = add_init(c, &a, "workspace");

    if (rc == EXIT_OK)
        rc = check_id("organization", c->a.opt[OPT_ORG]);
    if (rc == EXIT_OK) {
        memcpy(a.e.org, c->a.opt[OPT_ORG], KA_ID_LEN + 1);
        a.e.enabled = 1;
        rc = with_write(c, ws_add_step, &a, SMALL_WRITE);
    }
    rng_wipe(&a.r);
    return rc != EXIT_OK ? rc : emit(c, jobj("id", jstr(a.e.id), END), a.e.id);
}

static int cmd_ws_remove(cli *c)
{
    return remove_entity(c, ka_del_ws, "workspace");
}

typedef struct {
    const cli *c;
    const char *filter; /* organization, workspace or connection ID; NULL: all */
} list_arg;

static int ws_item(const ka_entity *e, void *arg)
{
    lister *l = arg;

    if (!l->c->json) {
        printf("%s\t%s\t%s\n", e->id, e->org, e->name);
        return 0;
    }
    list_add(l, jobj("id", jstr(e->id), "organization", jstr(e->org), "name", jstr(e->name), END));
    return 0;
}

static int ws_list_step(MDB_txn *txn, ka_store *st, void *arg, char *err, size_t errlen)
{
    list_arg *a = arg;
    ka_entity e;
    lister l;
    int rc;

    if (a->filter &&
        (rc = need(ka_get_org(txn, st, a->filter, &e), "organization", a->filter, err, errlen)))
        return rc;
    list_open(&l, a->c, "workspaces");
    if (ka_list_ws(txn, st, a->filter, ws_item, &l) != KA_OK)
        return STEP_STORE;
    list_close(&l);
    return STEP_OK;
}

static int cmd_ws_list(cli *c)
{
    list_arg a = {c, c->a.opt[OPT_ORG]};

    if (a.filter && check_id("organization", a.filter) != EXIT_OK)
        return EXIT_FAIL;
    return with_read(c, ws_list_step, &a);
}

static int conn_add_step(MDB_txn *txn, ka_store *st, void *arg, char *err, size_t errlen)
{
    add_arg *a = arg;
    ka_entity ws;
    int rc = need(ka_get_ws(txn, st, a->e.ws, &ws), "workspace", a->e.ws, err, errlen);

    if (rc == STEP_OK)
        rc = claim_id(txn, st, ka_get_conn, "connection", a->e.id, id_source(a), err, errlen);
    if (rc != STEP_OK)
        return rc;
    memcpy(a->e.org, ws.org, sizeof(a->e.org));
    if (ka_put_conn(txn, st, &a->e) != KA_OK)
        return STEP_STORE;
    return put_write_key(txn, st, &a->r, &a->e, &a->key, err, errlen);
}

static int cmd_conn_add(cli *c)
{
    add_arg a;
    char line[KA_ID_LEN + 1 + KA_API_TOKEN_LEN + 1];
    int rc = add_init(c, &a, "connection");

    if (rc == EXIT_OK)
        rc = check_id("workspace", c->a.opt[OPT_WS]);
    if (rc == EXIT_OK) {
        memcpy(a.e.ws, c->a.opt[OPT_WS], KA_ID_LEN + 1);
        a.e.enabled = 1;
        rc = with_write(c, conn_add_step, &a, SMALL_WRITE);
    }
    rng_wipe(&a.r);
    if (rc == EXIT_OK) {
        snprintf(line, sizeof(line), "%s %s", a.e.id, a.key.secret);
        rc = emit(c, jobj("id", jstr(a.e.id), "key", jstr(a.key.secret), END), line);
    }
    OPENSSL_cleanse(&a.key, sizeof(a.key));
    OPENSSL_cleanse(line, sizeof(line));
    return rc;
}

static int cmd_conn_remove(cli *c)
{
    return remove_entity(c, ka_del_conn, "connection");
}

static int conn_item(const ka_entity *e, void *arg)
{
    lister *l = arg;

    if (!l->c->json) {
        printf("%s\t%s\t%s\t%s\n", e->id, e->ws, e->org, e->name);
        return 0;
    }
    list_add(l, jobj("id", jstr(e->id), "workspace", jstr(e->ws), "organization", jstr(e->org),
                     "name", jstr(e->name), END));
    return 0;
}

static int conn_list_step(MDB_txn *txn, ka_store *st, void *arg, char *err, size_t errlen)
{
    list_arg *a = arg;
    ka_entity e;
    lister l;
    int rc;

    if (a->filter &&
        (rc = need(ka_get_ws(txn, st, a->filter, &e), "workspace", a->filter, err, errlen)))
        return rc;
    list_open(&l, a->c, "connections");
    if (ka_list_conns(txn, st, a->filter, conn_item, &l) != KA_OK)
        return STEP_STORE;
    list_close(&l);
    return STEP_OK;
}

static int cmd_conn_list(cli *c)
{
    list_arg a = {c, c->a.opt[OPT_WS]};

    if (a.filter && check_id("workspace", a.filter) != EXIT_OK)
        return EXIT_FAIL;
    return with_read(c, conn_list_step, &a);
}

/* ------------------------------------------------------------------------------------------ */
/* api-key                                                                                    */
/* ------------------------------------------------------------------------------------------ */

typedef struct {
    const char *org, *ws; /* as given; either may be NULL, not both */
    ka_key_rec tmpl;
    rng r;
    new_key key;
} api_arg;

/* --organization and --workspace of api-key create and bulk-create. */
static int api_scope_args(cli *c, const char **org, const char **ws)
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

static int api_create_step(MDB_txn *txn, ka_store *st, void *arg, char *err, size_t errlen)
{
    api_arg *a = arg;
    int rc = resolve_scope(txn, st, a->org, a->ws, &a->tmpl, err, errlen);

    if (rc != STEP_OK)
        return rc;
    return put_api_key(txn, st, &a->r, &a->tmpl, &a->key, err, errlen);
}

static int cmd_api_create(cli *c)
{
    api_arg a;
    char line[KA_ID_LEN + 1 + KA_API_TOKEN_LEN + 1];
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
    if (rc == EXIT_OK) {
        snprintf(line, sizeof(line), "%s %s", a.key.id, a.key.secret);
        rc = emit(c, jobj("id", jstr(a.key.id), "token", jstr(a.key.secret), END), line);
    }
    OPENSSL_cleanse(&a.key, sizeof(a.key));
    OPENSSL_cleanse(line, sizeof(line));
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

static int api_list_step(MDB_txn *txn, ka_store *st, void *arg, char *err, size_t errlen)
{
    list_arg *a = arg;
    ka_entity e;
    lister l;
    int rc;

    if (a->filter &&
        (rc = need(ka_get_org(txn, st, a->filter, &e), "organization", a->filter, err, errlen)))
        return rc;
    list_open(&l, a->c, "keys");
    if (ka_list_api_keys(txn, st, a->filter, api_key_item, &l) != KA_OK)
        return STEP_STORE;
    list_close(&l);
    return STEP_OK;
}

static int cmd_api_list(cli *c)
{
    list_arg a = {c, c->a.opt[OPT_ORG]};

    if (a.filter && check_id("organization", a.filter) != EXIT_OK)
        return EXIT_FAIL;
    return with_read(c, api_list_step, &a);
}

static int api_delete_step(MDB_txn *txn, ka_store *st, void *arg, char *err, size_t errlen)
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

static int cmd_api_delete(cli *c)
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

/* ------------------------------------------------------------------------------------------ */
/* write-key                                                                                  */
/* ------------------------------------------------------------------------------------------ */

typedef struct {
    const char *conn;
    const char *key_id; /* delete */
    rng r;
    new_key key; /* create */
} wk_arg;

static int wk_create_step(MDB_txn *txn, ka_store *st, void *arg, char *err, size_t errlen)
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

static int cmd_wk_create(cli *c)
{
    wk_arg a;
    char line[KA_ID_LEN + 1 + KA_API_TOKEN_LEN + 1];
    int rc;

    memset(&a, 0, sizeof(a));
    rng_init(&a.r);
    a.conn = c->a.opt[OPT_CONN];
    if (check_id("connection", a.conn) != EXIT_OK)
        return EXIT_FAIL;
    rc = with_write(c, wk_create_step, &a, SMALL_WRITE);
    rng_wipe(&a.r);
    if (rc == EXIT_OK) {
        snprintf(line, sizeof(line), "%s %s", a.key.id, a.key.secret);
        rc = emit(c, jobj("id", jstr(a.key.id), "key", jstr(a.key.secret), END), line);
    }
    OPENSSL_cleanse(&a.key, sizeof(a.key));
    OPENSSL_cleanse(line, sizeof(line));
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

static int wk_list_step(MDB_txn *txn, ka_store *st, void *arg, char *err, size_t errlen)
{
    list_arg *a = arg;
    ka_entity e;
    lister l;
    int rc = need(ka_get_conn(txn, st, a->filter, &e), "connection", a->filter, err, errlen);

    if (rc != STEP_OK)
        return rc;
    list_open(&l, a->c, "keys");
    if (ka_list_write_keys(txn, st, a->filter, wk_item, &l) != KA_OK)
        return STEP_STORE;
    list_close(&l);
    return STEP_OK;
}

static int cmd_wk_list(cli *c)
{
    list_arg a = {c, c->a.opt[OPT_CONN]};

    if (check_id("connection", a.filter) != EXIT_OK)
        return EXIT_FAIL;
    return with_read(c, wk_list_step, &a);
}

static int wk_delete_step(MDB_txn *txn, ka_store *st, void *arg, char *err, size_t errlen)
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

static int cmd_wk_delete(cli *c)
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

/* ------------------------------------------------------------------------------------------ */
/* bulk-create                                                                                */
/* ------------------------------------------------------------------------------------------ */

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

static int bulk_api_step(MDB_txn *txn, ka_store *st, void *arg, char *err, size_t errlen)
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

static int bulk_conn_step(MDB_txn *txn, ka_store *st, void *arg, char *err, size_t errlen)
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

static int cmd_api_bulk(cli *c)
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

static int cmd_wk_bulk(cli *c)
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

/* ------------------------------------------------------------------------------------------ */
/* organizations-key                                                                          */
/* ------------------------------------------------------------------------------------------ */

static int cmd_orgs_key(cli *c)
{
    char key[KA_ORG_KEY_LEN + 1] = "org_";
    rng r;
    int ok, rc;

    rng_init(&r);
    ok = rng_chars(&r, ka_alnum62, key + 4, ORG_KEY_CHARS);
    rng_wipe(&r);
    if (!ok)
        return fail("cannot get random bytes from the system");
    key[KA_ORG_KEY_LEN] = '\0';
    rc = emit(c, jobj("key", jstr(key), END), key);
    OPENSSL_cleanse(key, sizeof(key));
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* check                                                                                      */
/* ------------------------------------------------------------------------------------------ */

static int parse_endpoint(const char *s, ka_endpoint *out)
{
    static const char *const names[] = {"auto", "api", "ingestion", "settings", "organizations"};

    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (strcmp(s, names[i]) == 0) {
            *out = (ka_endpoint)i;
            return EXIT_OK;
        }
    return fail("invalid --endpoint '%s': expected auto, api, ingestion, settings or "
                "organizations",
                s);
}

static int parse_ws_policy(const char *s, ka_ws_policy *out)
{
    static const char *const names[] = {"optional", "required", "forbidden"};

    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (strcmp(s, names[i]) == 0) {
            *out = (ka_ws_policy)i;
            return EXIT_OK;
        }
    return fail("invalid --workspace-policy '%s': expected optional, required or forbidden", s);
}

/* Reads a whole file (check --body). */
static int read_file(const char *path, char **buf, size_t *len)
{
    FILE *f = fopen(path, "rb");
    size_t cap = MAX_BODY + 1;

    if (f == NULL)
        return fail("cannot open %s: %s", path, strerror(errno));
    *buf = malloc(cap);
    if (*buf == NULL) {
        fclose(f);
        return fail("out of memory");
    }
    *len = fread(*buf, 1, cap, f);
    if (ferror(f) || *len > MAX_BODY) {
        int big = !ferror(f);
        fclose(f);
        free(*buf);
        *buf = NULL;
        return big ? fail("%s is larger than %zu bytes", path, MAX_BODY)
                   : fail("cannot read %s", path);
    }
    fclose(f);
    return EXIT_OK;
}

typedef struct {
    ka_request req;
    const char *body; /* what --body holds, or "{}" */
    size_t body_len;
    char orgs_key[KA_ORG_KEY_LEN + 1];
} check_arg;

/* TOKEN "-": the first line of standard input, so that the token stays out of ps and the
 * shell history. */
static char *read_token(const char *arg)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;

    if (strcmp(arg, "-") != 0)
        return strdup(arg);
    if ((n = getline(&line, &cap, stdin)) < 0) {
        free(line);
        return strdup("");
    }
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        line[--n] = '\0';
    return line;
}

/* Fills the request from the options; the caller frees a->req.authorization. */
static int check_request(cli *c, check_arg *a)
{
    const char *key = getenv(ORGS_KEY_ENV);
    ka_endpoint ep = KA_EP_AUTO;
    char msg[256], *auth, *tok;

    if (c->a.opt[OPT_ENDPOINT] && parse_endpoint(c->a.opt[OPT_ENDPOINT], &ep) != EXIT_OK)
        return EXIT_FAIL;
    if (c->a.opt[OPT_WS_POLICY] && parse_ws_policy(c->a.opt[OPT_WS_POLICY], &a->req.ws_policy))
        return EXIT_FAIL;
    if (key != NULL) {
        if (ka_org_key_check(ORGS_KEY_ENV, key, msg, sizeof(msg)) != NULL)
            return fail("%s", msg);
        memcpy(a->orgs_key, key, sizeof(a->orgs_key));
        a->req.orgs_key = a->orgs_key;
    }
    ka_classify(c->a.opt[OPT_METHOD] ? c->a.opt[OPT_METHOD] : "GET",
                c->a.opt[OPT_PATH] ? c->a.opt[OPT_PATH] : "/v1/", ep, &a->req.route);
    a->req.workspace = c->a.opt[OPT_WS];
    if ((tok = read_token(c->pos[0])) == NULL ||
        (auth = malloc(strlen(tok) + sizeof("Bearer "))) == NULL) {
        free(tok);
        return fail("out of memory");
    }
    strcpy(auth, "Bearer ");
    strcat(auth, tok);
    OPENSSL_cleanse(tok, strlen(tok));
    free(tok);
    a->req.authorization = auth;
    return EXIT_OK;
}

/* One read transaction, as the module does per request; the body only when it is needed. */
static void check_decide(const ka_store *st, check_arg *a, ka_decision *dec)
{
    ka_store_lookup_ctx ctx = {st, NULL};
    ka_body_fields fields;
    ka_lookup lk;

    if (mdb_txn_begin(st->env, NULL, MDB_RDONLY, &ctx.txn) != 0) {
        memset(dec, 0, sizeof(*dec));
        ka_decision_unavailable(dec);
        return;
    }
    ka_store_lookup(&ctx, &lk);
    if (ka_decide(&a->req, &lk, dec) == KA_NEED_BODY) {
        ka_json_scan(a->body, a->body_len, &fields);
        a->req.body = &fields;
        ka_decide(&a->req, &lk, dec);
        a->req.body = NULL;
    }
    mdb_txn_abort(ctx.txn);
}

static int print_decision(const cli *c, const ka_decision *d)
{
    const ka_identity *id = &d->id;
    char body[1024];
    size_t n;

    if (d->status == KA_ACCEPT) {
        if (c->json)
            return emit(c,
                        jobj("status", json_object_new_int(200), "identity",
                             jobj("type", jstr(ka_key_type_name(id->type)), "organization",
                                  jopt(id->org), "workspace", jopt(id->ws), "connection",
                                  jopt(id->conn), "keyId", jopt(id->key_id), END),
                             END),
                        NULL);
        printf("200 %s organization=%s workspace=%s connection=%s key=%s\n",
               ka_key_type_name(id->type), dash(id->org), dash(id->ws), dash(id->conn),
               dash(id->key_id));
        return flush_stdout();
    }
    if (c->json)
        emit(c,
             jobj("status", json_object_new_int(d->status), "error",
                  jobj("code", jstr(d->code), "message", jstr(d->message), END), END),
             NULL);
    else {
        n = ka_json_error(body, sizeof(body), d->code ? d->code : "", d->message);
        printf("%d %.*s", d->status, (int)n, body);
        flush_stdout();
    }
    return EXIT_FAIL;
}

static int cmd_check(cli *c)
{
    check_arg a;
    ka_decision dec;
    char *body = NULL;
    ka_store *st = NULL;
    int rc;

    memset(&a, 0, sizeof(a));
    a.body = "{}";
    a.body_len = 2;
    rc = check_request(c, &a);
    if (rc == EXIT_OK && c->a.opt[OPT_BODY]) {
        rc = read_file(c->a.opt[OPT_BODY], &body, &a.body_len);
        a.body = body;
    }
    if (rc == EXIT_OK && (st = open_store(c, 1)) == NULL)
        rc = EXIT_FAIL;
    if (rc == EXIT_OK) {
        check_decide(st, &a, &dec);
        ka_store_close(st);
    }
    if (a.req.authorization)
        OPENSSL_cleanse((void *)a.req.authorization, strlen(a.req.authorization));
    free((void *)a.req.authorization);
    free(body);
    return rc == EXIT_OK ? print_decision(c, &dec) : rc;
}

/* ------------------------------------------------------------------------------------------ */
/* Command table, parsing, main                                                               */
/* ------------------------------------------------------------------------------------------ */

static const command COMMANDS[] = {
    {"init", NULL, cmd_init, BIT(OPT_OWNER), 0, 0, 0,
     "init [--secret FILE] [--owner USER[:GROUP]]"},
    {"organization", "add", cmd_org_add, BIT(OPT_NAME) | BIT(OPT_DISABLED), 0, 0, 1,
     "organization add [ID] [--name NAME] [--disabled]"},
    {"organization", "enable", cmd_org_enable, 0, 0, 1, 1, "organization enable ID"},
    {"organization", "disable", cmd_org_disable, 0, 0, 1, 1, "organization disable ID"},
    {"organization", "remove", cmd_org_remove, 0, 0, 1, 1, "organization remove ID"},
    {"organization", "list", cmd_org_list, 0, 0, 0, 0, "organization list"},
    {"workspace", "add", cmd_ws_add, BIT(OPT_ORG) | BIT(OPT_NAME), BIT(OPT_ORG), 0, 1,
     "workspace add [ID] --organization ORG [--name NAME]"},
    {"workspace", "remove", cmd_ws_remove, 0, 0, 1, 1, "workspace remove ID"},
    {"workspace", "list", cmd_ws_list, BIT(OPT_ORG), 0, 0, 0,
     "workspace list [--organization ORG]"},
    {"connection", "add", cmd_conn_add, BIT(OPT_WS) | BIT(OPT_NAME), BIT(OPT_WS), 0, 1,
     "connection add [ID] --workspace WS [--name NAME]"},
    {"connection", "remove", cmd_conn_remove, 0, 0, 1, 1, "connection remove ID"},
    {"connection", "list", cmd_conn_list, BIT(OPT_WS), 0, 0, 0, "connection list [--workspace WS]"},
    {"api-key", "create", cmd_api_create, BIT(OPT_ORG) | BIT(OPT_WS) | BIT(OPT_NAME), 0, 0, 0,
     "api-key create --organization ORG [--workspace WS] [--name NAME]"},
    {"api-key", "list", cmd_api_list, BIT(OPT_ORG), 0, 0, 0, "api-key list [--organization ORG]"},
    {"api-key", "delete", cmd_api_delete, 0, 0, 1, 1, "api-key delete ID"},
    {"api-key", "bulk-create", cmd_api_bulk,
     BIT(OPT_ORG) | BIT(OPT_WS) | BIT(OPT_NAME) | BIT(OPT_COUNT) | BIT(OPT_TOKENS),
     BIT(OPT_COUNT) | BIT(OPT_TOKENS), 0, 0,
     "api-key bulk-create --organization ORG [--workspace WS] [--name NAME] --count N "
     "--tokens FILE"},
    {"write-key", "create", cmd_wk_create, BIT(OPT_CONN), BIT(OPT_CONN), 0, 0,
     "write-key create --connection CONN"},
    {"write-key", "list", cmd_wk_list, BIT(OPT_CONN), BIT(OPT_CONN), 0, 0,
     "write-key list --connection CONN"},
    {"write-key", "delete", cmd_wk_delete, BIT(OPT_CONN), BIT(OPT_CONN), 1, 1,
     "write-key delete --connection CONN KEY_ID"},
    {"write-key", "bulk-create", cmd_wk_bulk,
     BIT(OPT_WS) | BIT(OPT_NAME) | BIT(OPT_COUNT) | BIT(OPT_TOKENS),
     BIT(OPT_WS) | BIT(OPT_COUNT) | BIT(OPT_TOKENS), 0, 0,
     "write-key bulk-create --workspace WS [--name NAME] --count N --tokens FILE"},
    {"organizations-key", "generate", cmd_orgs_key, 0, 0, 0, 0, "organizations-key generate"},
    {"check", NULL, cmd_check,
     BIT(OPT_METHOD) | BIT(OPT_PATH) | BIT(OPT_WS) | BIT(OPT_BODY) | BIT(OPT_ENDPOINT) |
         BIT(OPT_WS_POLICY),
     0, 1, 1,
     "check TOKEN|- [--method M] [--path P] [--workspace WS] [--body FILE] [--endpoint E] "
     "[--workspace-policy P]"},
};

#define N_COMMANDS (sizeof(COMMANDS) / sizeof(COMMANDS[0]))

static void print_help(FILE *f)
{
    fputs("usage: " PROG " [--store DIR] [--secret FILE] [--json] COMMAND [ARGS]\n\n"
          "  --store DIR    the key store (default $" STORE_ENV ", else " DEFAULT_STORE ")\n"
          "  --secret FILE  the store secret (default DIR/secret)\n"
          "  --json         print results as one JSON object\n"
          "  --version      print the version and exit\n\ncommands:\n",
          f);
    for (size_t i = 0; i < N_COMMANDS; i++)
        fprintf(f, "  %s\n", COMMANDS[i].synopsis);
    fputs("  mirror --postgres CONNINFO [--schema NAME] [--pepper-file FILE | --kms key:BASE64] "
          "[--poll-interval MS] [--once]\n"
          "  upgrade\n",
          f);
    fputs("\nSee docs/krenalis-keys.md.\n", f);
}

/* Writes a message into err; returns -1. */
static int say(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int say(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

/* Prints a usage error and the synopsis of cmd (all of them when NULL); returns 2. */
static int usage(const command *cmd, const char *msg)
{
    fprintf(stderr, PROG ": %s\n", msg);
    if (cmd != NULL)
        fprintf(stderr, "usage: " PROG " [--store DIR] [--json] %s\n", cmd->synopsis);
    else
        fputs("usage: " PROG " [--store DIR] [--secret FILE] [--json] COMMAND [ARGS]\n"
              "run '" PROG " --help' for the list of commands\n",
              stderr);
    return EXIT_USAGE;
}

/* One option at argv[*i] (--name, --name=value or --name value). */
static int parse_option(int argc, char **argv, int *i, cli_args *a, char *err, size_t errlen)
{
    const char *s = strcmp(argv[*i], "-h") == 0 ? "--help" : argv[*i];
    const char *name = s + 2, *eq = strchr(name, '=');
    size_t len = eq ? (size_t)(eq - name) : strlen(name);
    int o;

    for (o = 0; o < N_OPTS; o++)
        if (strncmp(s, "--", 2) == 0 && strlen(OPTS[o].name) == len &&
            strncmp(OPTS[o].name, name, len) == 0)
            break;
    if (o == N_OPTS)
        return say(err, errlen, "unknown option %s", s);
    if (a->opt[o] != NULL)
        return say(err, errlen, "option --%s given twice", OPTS[o].name);
    if (!OPTS[o].has_arg) {
        if (eq)
            return say(err, errlen, "option --%s takes no value", OPTS[o].name);
        a->opt[o] = "";
    } else if (eq)
        a->opt[o] = eq + 1;
    else if (*i + 1 < argc)
        a->opt[o] = argv[++*i];
    else
        return say(err, errlen, "option --%s needs a value", OPTS[o].name);
    return 0;
}

/* Options may come anywhere; the words are the command and its positional arguments. */
static int parse_args(int argc, char **argv, cli_args *a, char *err, size_t errlen)
{
    int words_only = 0;

    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        if (!words_only && strcmp(s, "--") == 0)
            words_only = 1;
        else if (!words_only && s[0] == '-' && s[1] != '\0') {
            if (parse_option(argc, argv, &i, a, err, errlen) != 0)
                return -1;
        } else if (a->nwords == MAX_WORDS)
            return say(err, errlen, "too many arguments");
        else
            a->word[a->nwords++] = s;
    }
    return 0;
}

static const command *find_command(const cli_args *a, int *used, char *err, size_t errlen)
{
    const char *group = a->word[0], *action = a->nwords > 1 ? a->word[1] : NULL;
    int known = 0;

    for (size_t i = 0; i < N_COMMANDS; i++) {
        if (strcmp(COMMANDS[i].group, group) != 0)
            continue;
        known = 1;
        if (COMMANDS[i].action == NULL) {
            *used = 1;
            return &COMMANDS[i];
        }
        if (action && strcmp(COMMANDS[i].action, action) == 0) {
            *used = 2;
            return &COMMANDS[i];
        }
    }
    if (!known)
        snprintf(err, errlen, "unknown command '%s'", group);
    else if (action == NULL)
        snprintf(err, errlen, "'%s' needs a subcommand", group);
    else
        snprintf(err, errlen, "unknown command '%s %s'", group, action);
    return NULL;
}

/* Options the command does not take, options it needs, how many positional arguments. */
static int check_usage(const cli *c, char *err, size_t errlen)
{
    const command *cmd = c->cmd;
    char name[64];

    snprintf(name, sizeof(name), "%s%s%s", cmd->group, cmd->action ? " " : "",
             cmd->action ? cmd->action : "");
    for (int o = 0; o < N_OPTS; o++) {
        if (c->a.opt[o] && !((GLOBAL_OPTS | cmd->opts) & BIT(o)))
            return say(err, errlen, "option --%s does not apply to %s", OPTS[o].name, name);
        if (!c->a.opt[o] && (cmd->required & BIT(o)))
            return say(err, errlen, "%s needs --%s", name, OPTS[o].name);
    }
    if (c->npos < cmd->min_pos)
        return say(err, errlen, "%s: missing argument", name);
    if (c->npos > cmd->max_pos)
        return say(err, errlen, "unexpected argument '%s'", c->pos[cmd->max_pos]);
    return 0;
}

static const char *store_dir(const cli_args *a)
{
    const char *env = getenv(STORE_ENV);

    if (a->opt[OPT_STORE])
        return a->opt[OPT_STORE];
    return env && *env ? env : DEFAULT_STORE;
}

int main(int argc, char **argv)
{
    char err[ERR_MAX];
    cli c;
    int used = 0;

    if (argc == 2 && strcmp(argv[1], "--version") == 0) {
        puts(PROG " " KA_VERSION);
        return EXIT_OK;
    }
    if ((used = ka_mirror_cli(argc, argv)) >= 0) /* mirror, upgrade: src/mirror.c */
        return used;
    used = 0;
    memset(&c, 0, sizeof(c));
    if (parse_args(argc, argv, &c.a, err, sizeof(err)) != 0)
        return usage(NULL, err);
    if (c.a.opt[OPT_HELP] || (c.a.nwords > 0 && strcmp(c.a.word[0], "help") == 0)) {
        print_help(stdout);
        return EXIT_OK;
    }
    if (c.a.nwords == 0)
        return usage(NULL, "no command given");
    if ((c.cmd = find_command(&c.a, &used, err, sizeof(err))) == NULL)
        return usage(NULL, err);
    c.pos = c.a.word + used;
    c.npos = c.a.nwords - used;
    if (check_usage(&c, err, sizeof(err)) != 0)
        return usage(c.cmd, err);
    if (c.a.opt[OPT_STORE] && c.a.opt[OPT_STORE][0] == '\0')
        return usage(c.cmd, "--store needs a directory");
    c.dir = store_dir(&c.a);
    c.json = c.a.opt[OPT_JSON] != NULL;
    return c.cmd->run(&c);
}
