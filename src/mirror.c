/* krenalis-keys mirror: keeps a key store in step with a Krenalis PostgreSQL database
 * (SPEC §11, docs/mirror.md). A snapshot is built into a new store beside the live one and
 * swapped in (renameat2 RENAME_EXCHANGE: Apache children see a new data.mdb and reopen it);
 * then notifications rows are applied in order, one LMDB write transaction per batch that
 * also records the last version applied. Nothing it prints holds a key, a token, the pepper,
 * a password or a payload. */
#include "mirror.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>
#include <openssl/crypto.h>

#include "crypto.h"
#include "keystore.h"
#include "kms.h"
#include "mirror_apply.h"

#define PROG "krenalis-keys"
#define TAG PROG ": mirror: "
#define DEFAULT_STORE "/var/lib/krenalis-auth"
#define PATH_LEN 4200
#define BATCH_ROWS 1000      /* notifications per poll, and per LMDB write transaction */
#define SNAPSHOT_ROWS 20000  /* rows per FETCH */
#define SNAPSHOT_TXN 200000  /* rows per LMDB write transaction of a snapshot */
#define BACKOFF_FIRST_MS 250 /* then doubled, up to BACKOFF_MAX_MS */
#define BACKOFF_MAX_MS 5000
#define ROW_BYTES 1024 /* generous store space one row takes, indexes included */

/* The tables of SPEC §11.1. */
enum { T_METADATA, T_ORGS, T_WSS, T_CONNS, T_KEYS, T_WKEYS, T_NOTIFS, N_TABLES };
static const char *const TABLE_NAMES[N_TABLES] = {
    "metadata",    "organizations",    "workspaces",   "connections",
    "access_keys", "event_write_keys", "notifications"};

typedef struct {
    const char *dir, *secret_path, *conninfo, *schema, *pepper_file, *kms;
    long poll_ms;
    int once;
    int resync; /* --resync: a full snapshot at the first connection, whatever the store holds */
    char elided[KA_MIRROR_CONNINFO_MAX + 1]; /* the connection string without its password */
    char *schema_q;                          /* the schema as a quoted identifier */
    char tables[N_TABLES][300];              /* schema.table, quoted */
    char follow_sql[4096];                   /* the query of each poll */
    uint8_t *pepper;                         /* KA_SECRET_LEN bytes, ka_secure_alloc */
    int have_pepper;
    PGconn *pg; /* the connection that polls (and LISTENs on a primary) */
    int listening;
    char source[KA_MIRROR_SOURCE_MAX + 1]; /* of the database pg is connected to */
    ka_store *st;                          /* the live store, NULL until opened */
    uint64_t version;                      /* last version applied to st */
    char newdir[PATH_LEN], lockpath[PATH_LEN], confirmed[PATH_LEN + 64], datapath[PATH_LEN + 64];
    char realdir[PATH_MAX]; /* the store directory a symlinked --store names */
    int failing;            /* the last attempt failed (logged once per state change) */
    long backoff_ms;
} mirror;

static volatile sig_atomic_t stop_signal;

static void on_signal(int sig)
{
    stop_signal = sig;
}

/* ---- output ---- */

static void logm(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void logm(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    fputs(TAG, stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    fflush(stderr);
    va_end(ap);
}

/* The first line of a libpq message (its DETAIL and CONTEXT lines may quote data). */
static const char *first_line(const char *s, char *buf, size_t len)
{
    size_t n = strcspn(s, "\n");

    if (n >= len)
        n = len - 1;
    memcpy(buf, s, n);
    buf[n] = '\0';
    return n ? buf : "unknown error";
}

static const char *pg_msg(const PGconn *c, char *buf, size_t len)
{
    return first_line(c ? PQerrorMessage(c) : "out of memory", buf, len);
}

static const char *res_msg(const PGresult *r, char *buf, size_t len)
{
    return first_line(r ? PQresultErrorMessage(r) : "no result", buf, len);
}

/* ---- the connection string, password elided ---- */

static void elide_conninfo(const char *conninfo, char *out, size_t len)
{
    char *err = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo, &err);
    size_t n = 0;

    out[0] = '\0';
    if (opts == NULL) {
        PQfreemem(err);
        snprintf(out, len, "(unparsable connection string)");
        return;
    }
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (o->val == NULL || strcmp(o->keyword, "password") == 0)
            continue;
        int quote = o->val[0] == '\0' || strpbrk(o->val, " '\\") != NULL;
        n += (size_t)snprintf(out + n, n < len ? len - n : 0, "%s%s=%s", n ? " " : "", o->keyword,
                              quote ? "'" : "");
        for (const char *p = o->val; *p && n + 3 < len; p++) {
            if (*p == '\'' || *p == '\\')
                out[n++] = '\\';
            out[n++] = *p;
        }
        if (quote && n + 1 < len)
            out[n++] = '\'';
        if (n >= len)
            n = len - 1;
        out[n] = '\0';
    }
    PQconninfoFree(opts);
}

/* ---- options ---- */

static int usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    fputs(PROG ": ", stderr);
    vfprintf(stderr, fmt, ap);
    fputs("\nusage: " PROG " [--store DIR] mirror --postgres CONNINFO [--schema NAME]\n"
          "         [--pepper-file FILE | --kms key:BASE64] [--poll-interval MS] [--once]\n"
          "         [--resync]\n"
          "       " PROG " [--store DIR] [--secret FILE] upgrade\n",
          stderr);
    va_end(ap);
    return 2;
}

static int fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int fatal(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    fputs(PROG ": ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 1;
}

typedef struct {
    const char *name;
    const char **dst;
} opt;

/* The command word after the global options, or NULL. */
static const char *command_word(int argc, char **argv, int *at)
{
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        if (strcmp(s, "--store") == 0 || strcmp(s, "--secret") == 0) {
            i++;
            continue;
        }
        if (s[0] == '-')
            continue;
        *at = i;
        return s;
    }
    return NULL;
}

/* An argument that holds a secret (--kms): a copy for the mirror, and the argument overwritten,
 * so that the key does not stay in ps and /proc/PID/cmdline for the life of the process. */
static const char *hide_arg(char *value)
{
    char *copy = strdup(value);

    if (copy == NULL)
        return value;
    memset(value, 'x', strlen(value));
    return copy;
}

static int parse(int argc, char **argv, mirror *m, int is_mirror)
{
    const char *poll = NULL, *once = NULL, *json = NULL, *resync = NULL;
    opt opts[] = {{"store", &m->dir},     {"secret", &m->secret_path},
                  {"json", &json},        {"postgres", &m->conninfo},
                  {"schema", &m->schema}, {"pepper-file", &m->pepper_file},
                  {"kms", &m->kms},       {"poll-interval", &poll},
                  {"once", &once},        {"resync", &resync}};
    size_t nopts = sizeof(opts) / sizeof(opts[0]);
    int words = 0;

    for (int i = 1; i < argc; i++) {
        const char *s = argv[i], *eq;
        size_t len;
        opt *o = NULL;

        if (s[0] != '-' || s[1] != '-') {
            if (++words > 1)
                return usage("unexpected argument '%s'", s);
            continue;
        }
        eq = strchr(s + 2, '=');
        len = eq ? (size_t)(eq - s - 2) : strlen(s + 2);
        /* mirror takes the global --store and --json (options 0 and 2); upgrade also --secret
         * (1), and nothing else. */
        for (size_t k = 0; k < nopts && o == NULL; k++)
            if (strlen(opts[k].name) == len && strncmp(s + 2, opts[k].name, len) == 0 &&
                (is_mirror ? k != 1 : k <= 2))
                o = &opts[k];
        if (o == NULL)
            return usage("unknown option %.*s for %s", (int)(len + 2), s,
                         is_mirror ? "mirror" : "upgrade");
        if (*o->dst != NULL)
            return usage("option --%s given twice", o->name);
        if (o->dst == &once || o->dst == &json || o->dst == &resync) {
            if (eq)
                return usage("option --%s takes no value", o->name);
            *o->dst = "";
        } else if (eq)
            *o->dst = eq + 1;
        else if (i + 1 < argc)
            *o->dst = argv[++i];
        else
            return usage("option --%s needs a value", o->name);
        if (o->dst == &m->kms)
            m->kms = hide_arg((char *)m->kms); /* argv's own storage, writable */
    }
    if (m->dir == NULL) {
        const char *env = getenv("KRENALIS_KEY_STORE");
        m->dir = env && *env ? env : DEFAULT_STORE;
    }
    if (m->dir[0] == '\0')
        return usage("--store needs a directory");
    if (!is_mirror)
        return 0;
    if (m->conninfo == NULL)
        return usage("mirror needs --postgres CONNINFO");
    if (m->schema == NULL)
        m->schema = "public";
    if (m->kms == NULL && m->pepper_file == NULL) {
        const char *env = getenv("KRENALIS_KMS");
        if (env && *env)
            m->kms = env;
    }
    if ((m->kms != NULL) == (m->pepper_file != NULL))
        return usage("mirror needs the pepper: --pepper-file FILE, or --kms key:BASE64 (or "
                     "KRENALIS_KMS), not both");
    m->poll_ms = 1000;
    if (poll) {
        char *end;
        errno = 0;
        m->poll_ms = strtol(poll, &end, 10);
        if (errno || end == poll || *end || m->poll_ms < 10 || m->poll_ms > 3600000)
            return usage("--poll-interval must be a number of milliseconds, 10 to 3600000");
    }
    m->once = once != NULL;
    m->resync = resync != NULL;
    return 0;
}

/* ---- files ---- */

/* Marks the store confirmed current now: only the file's mtime changes, no LMDB commit. */
static int touch_confirmed(const char *path)
{
    int fd;

    if (utimensat(AT_FDCWD, path, NULL, 0) == 0)
        return 0;
    fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0)
        return -1;
    close(fd);
    return 0;
}

static int write_secret_file(const char *path, const uint8_t *secret)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    int ok;

    if (fd < 0)
        return -1;
    ok = write(fd, secret, KA_SECRET_LEN) == KA_SECRET_LEN && fsync(fd) == 0;
    close(fd);
    return ok ? 0 : -1;
}

/* As root, the files Apache's children open (data, lock, the freshness mark) and the directory
 * get the owner of the store directory they replace; the secret stays the mirror's, 0600. */
static void give_files(const mirror *m, const char *dir)
{
    static const char *const names[] = {"", "/data.mdb", "/lock.mdb", "/" KA_MIRROR_CONFIRMED_FILE};
    struct stat sb;
    char path[PATH_LEN + 64];

    if (geteuid() != 0 || stat(m->dir, &sb) != 0)
        return;
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        snprintf(path, sizeof(path), "%s%s", dir, names[i]);
        if (chown(path, sb.st_uid, sb.st_gid) != 0 && errno != ENOENT)
            logm("cannot give %s to the store's owner: %s", path, strerror(errno));
    }
}

/* ---- LMDB ---- */

/* Keeps the map at least twice the pages in use plus what the next transaction may add. */
static int ensure_room(ka_store *st, size_t rows)
{
    char err[256];
    return ka_store_reserve(st, rows * ROW_BYTES, 0, err, sizeof(err)) == KA_OK ? 0 : -1;
}

/* ---- PostgreSQL ---- */

static PGresult *q(PGconn *c, const char *sql, ExecStatusType want, char *err, size_t errlen)
{
    PGresult *r = PQexec(c, sql);
    char buf[512];

    if (PQresultStatus(r) == want)
        return r;
    snprintf(err, errlen, "%s", res_msg(r, buf, sizeof(buf)));
    PQclear(r);
    return NULL;
}

static const char *table(const mirror *m, int t)
{
    return m->tables[t];
}

/* Opens a connection and reads who it is: the source identity and whether it is a standby. */
static PGconn *pg_open(mirror *m, int *standby, char *err, size_t errlen)
{
    PGconn *c = PQconnectdb(m->conninfo);
    PGresult *r;
    char buf[512];

    if (c == NULL || PQstatus(c) != CONNECTION_OK) {
        snprintf(err, errlen, "%s", pg_msg(c, buf, sizeof(buf)));
        PQfinish(c);
        return NULL;
    }
    if (m->schema_q == NULL) {
        char *s = PQescapeIdentifier(c, m->schema, strlen(m->schema));
        if (s) {
            m->schema_q = strdup(s);
            PQfreemem(s);
            for (int t = 0; m->schema_q && t < N_TABLES; t++)
                snprintf(m->tables[t], sizeof(m->tables[t]), "%s.%s", m->schema_q, TABLE_NAMES[t]);
        }
    }
    r = q(c,
          "SELECT (SELECT system_identifier::text FROM pg_control_system()), "
          "current_database(), pg_is_in_recovery()",
          PGRES_TUPLES_OK, err, errlen);
    if (r == NULL || m->schema_q == NULL) {
        PQclear(r);
        PQfinish(c);
        return NULL;
    }
    snprintf(m->source, sizeof(m->source), "%s/%s/%s", PQgetvalue(r, 0, 0), PQgetvalue(r, 0, 1),
             m->schema);
    *standby = strcmp(PQgetvalue(r, 0, 2), "t") == 0;
    PQclear(r);
    return c;
}

/* The pepper, from --pepper-file or decrypted from metadata with the KMS key. 0, -1 fatal (with
 * a message), -2 a PostgreSQL error worth retrying. */
static int load_pepper(mirror *m, PGconn *c, char *err, size_t errlen)
{
    uint8_t key[KA_KMS_KEY_LEN];
    char sql[700];
    PGresult *r;
    int rc;

    if (m->have_pepper)
        return 0;
    if (m->pepper_file) {
        if (ka_secret_read(m->pepper_file, m->pepper, err, errlen) != NULL)
            return -1;
        m->have_pepper = 1;
        return 0;
    }
    if (ka_kms_parse(m->kms, key, err, errlen) != 0)
        return -1;
    snprintf(sql, sizeof(sql), "SELECT kms_encrypted_api_key_pepper FROM %s", table(m, T_METADATA));
    r = PQexecParams(c, sql, 0, NULL, NULL, NULL, NULL, 1);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        char buf[512];
        snprintf(err, errlen, "cannot read the pepper from %s: %s", table(m, T_METADATA),
                 res_msg(r, buf, sizeof(buf)));
        PQclear(r);
        OPENSSL_cleanse(key, sizeof(key));
        return -2;
    }
    if (PQntuples(r) != 1 || PQgetisnull(r, 0, 0)) {
        snprintf(err, errlen, "%s holds %d rows, not one with a pepper", table(m, T_METADATA),
                 PQntuples(r));
        rc = -1;
    } else
        rc = ka_kms_decrypt_pepper(key, (const uint8_t *)PQgetvalue(r, 0, 0),
                                   (size_t)PQgetlength(r, 0, 0), m->pepper, err, errlen);
    PQclear(r);
    OPENSSL_cleanse(key, sizeof(key));
    if (rc == 0)
        m->have_pepper = 1;
    return rc;
}

/* ---- the snapshot ---- */

typedef struct {
    ka_store *st;
    ka_store_txn *txn;
    size_t rows, skipped;
    size_t in_txn; /* rows in the open transaction */
    const mirror *m;
} builder;

/* A write transaction, begun when none is open. Large ones: a row of a random-keyed table
 * dirties a page of its own, and each commit writes every dirty page. */
static int b_begin(builder *b)
{
    char err[256];

    if (b->txn)
        return 0;
    b->in_txn = 0;
    if (ensure_room(b->st, SNAPSHOT_TXN) != 0)
        return -1;
    return ka_store_write_begin(b->st, &b->txn, err, sizeof(err)) == KA_OK ? 0 : -1;
}

static int b_commit(builder *b)
{
    char err[256];
    ka_store_status rc = b->txn ? ka_store_commit(b->txn, err, sizeof(err)) : KA_OK;

    b->txn = NULL;
    return rc == KA_OK ? 0 : -1;
}

typedef int (*row_fn)(builder *b, PGresult *r, int i);

static uint64_t u64(const char *s)
{
    return (uint64_t)strtoull(s, NULL, 10);
}

static int row_org(builder *b, PGresult *r, int i)
{
    return ka_mirror_org(b->txn, b->st, PQgetvalue(r, i, 0), PQgetvalue(r, i, 1),
                         strcmp(PQgetvalue(r, i, 2), "t") == 0);
}

static int row_ws(builder *b, PGresult *r, int i)
{
    return ka_mirror_ws(b->txn, b->st, PQgetvalue(r, i, 0), PQgetvalue(r, i, 1),
                        PQgetvalue(r, i, 2));
}

static int row_conn(builder *b, PGresult *r, int i)
{
    unsigned flags = (strcmp(PQgetvalue(r, i, 3), "Source") != 0 ? KA_CONN_DESTINATION : 0u) |
                     (strcmp(PQgetvalue(r, i, 4), "t") != 0 ? KA_CONN_NO_STRATEGY : 0u);
    return ka_mirror_conn(b->txn, b->st, PQgetvalue(r, i, 0), PQgetvalue(r, i, 1),
                          PQgetvalue(r, i, 2), flags);
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

static int row_key(builder *b, PGresult *r, int i)
{
    uint8_t digest[KA_DIGEST_LEN];
    const char *hex = PQgetvalue(r, i, 4);
    int rc;

    if (PQgetlength(r, i, 4) != 2 * KA_DIGEST_LEN)
        return KA_NOTFOUND;
    for (int k = 0; k < KA_DIGEST_LEN; k++) {
        int hi = hex_value(hex[2 * k]), lo = hex_value(hex[2 * k + 1]);
        if (hi < 0 || lo < 0)
            return KA_NOTFOUND;
        digest[k] = (uint8_t)(hi << 4 | lo);
    }
    rc = ka_mirror_access_key(b->txn, b->st, PQgetvalue(r, i, 0), PQgetvalue(r, i, 1),
                              PQgetvalue(r, i, 2), digest, sizeof(digest), PQgetvalue(r, i, 5),
                              PQgetvalue(r, i, 3), u64(PQgetvalue(r, i, 6)), 0);
    OPENSSL_cleanse(digest, sizeof(digest));
    return rc;
}

static int row_wkey(builder *b, PGresult *r, int i)
{
    return ka_mirror_write_key(b->txn, b->st, PQgetvalue(r, i, 0), PQgetvalue(r, i, 1),
                               (size_t)PQgetlength(r, i, 1), u64(PQgetvalue(r, i, 2)));
}

/* Reads one query through a cursor, SNAPSHOT_ROWS rows per FETCH and per LMDB transaction. */
static int each_row(PGconn *c, builder *b, const char *query, row_fn fn, char *err, size_t errlen)
{
    char sql[2048];
    PGresult *r;
    int n;

    snprintf(sql, sizeof(sql), "DECLARE ka_snapshot NO SCROLL CURSOR FOR %s", query);
    if ((r = q(c, sql, PGRES_COMMAND_OK, err, errlen)) == NULL)
        return -2;
    PQclear(r);
    do {
        snprintf(sql, sizeof(sql), "FETCH %d FROM ka_snapshot", SNAPSHOT_ROWS);
        if ((r = q(c, sql, PGRES_TUPLES_OK, err, errlen)) == NULL)
            return -2;
        n = PQntuples(r);
        if (b_begin(b) != 0) {
            PQclear(r);
            snprintf(err, errlen, "cannot write the new store: %s", strerror(errno));
            return -1;
        }
        for (int i = 0; i < n; i++) {
            int rc = fn(b, r, i);
            if (rc == KA_FAIL) {
                PQclear(r);
                ka_store_abort(b->txn);
                snprintf(err, errlen, "cannot write the new store (disk full?)");
                return -1;
            }
            if (rc == KA_NOTFOUND)
                b->skipped++;
            b->rows++;
            b->in_txn++;
        }
        PQclear(r);
        /* Whole tables before the next one reads them (connections find their workspace). */
        if ((b->in_txn >= SNAPSHOT_TXN || n < SNAPSHOT_ROWS) && b_commit(b) != 0) {
            snprintf(err, errlen, "cannot commit to the new store (disk full?)");
            return -1;
        }
    } while (n == SNAPSHOT_ROWS);
    if ((r = q(c, "CLOSE ka_snapshot", PGRES_COMMAND_OK, err, errlen)) == NULL)
        return -2;
    PQclear(r);
    return 0;
}

/* Reads the tables and MAX(version) in one REPEATABLE READ READ ONLY transaction into a new
 * store at m->newdir. 0, -1 (the store side failed), -2 (PostgreSQL failed: retry). */
static int build_snapshot(mirror *m, PGconn *c, uint64_t *version, builder *b, char *err,
                          size_t errlen)
{
    char sql[1024];
    ka_mirror_meta meta;
    PGresult *r;
    int rc;

    if ((r = q(c, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", PGRES_COMMAND_OK, err,
               errlen)) == NULL)
        return -2;
    PQclear(r);
    snprintf(sql, sizeof(sql), "SELECT COALESCE(MAX(version), 0) FROM %s", table(m, T_NOTIFS));
    if ((r = q(c, sql, PGRES_TUPLES_OK, err, errlen)) == NULL)
        return -2;
    *version = u64(PQgetvalue(r, 0, 0));
    PQclear(r);
    {
        struct {
            const char *sql;
            row_fn fn;
        } steps[] = {
            {"SELECT id, name, enabled FROM %s", row_org},
            {"SELECT id, organization, name FROM %s", row_ws},
            {"SELECT id, workspace, name, role::text, strategy IS NOT NULL FROM %s", row_conn},
            {"SELECT id, organization, COALESCE(workspace, ''), name, encode(hmac, 'hex'), "
             "hint, EXTRACT(EPOCH FROM created_at)::bigint FROM %s WHERE type::text = 'API'",
             row_key},
            {"SELECT connection, key, EXTRACT(EPOCH FROM created_at)::bigint FROM %s", row_wkey},
        };
        const int tables[] = {T_ORGS, T_WSS, T_CONNS, T_KEYS, T_WKEYS};
        for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
            snprintf(sql, sizeof(sql), steps[i].sql, table(m, tables[i]));
            if ((rc = each_row(c, b, sql, steps[i].fn, err, errlen)) != 0)
                return rc;
        }
    }
    if ((r = q(c, "COMMIT", PGRES_COMMAND_OK, err, errlen)) == NULL)
        return -2;
    PQclear(r);
    memset(&meta, 0, sizeof(meta));
    snprintf(meta.source, sizeof(meta.source), "%s", m->source);
    snprintf(meta.conninfo, sizeof(meta.conninfo), "%s", m->elided);
    meta.version = *version;
    if (b_begin(b) != 0)
        return -1;
    if (ka_mirror_meta_put(b->txn, b->st, &meta) != KA_OK) {
        ka_store_abort(b->txn);
        return -1;
    }
    return b_commit(b) == 0 && ka_store_sync(b->st) == KA_OK ? 0 : -1;
}

/* The live store, for writing. A commit syncs the data but not the meta page: a crash may undo
 * the last batch, and its version with it, which the next run applies again. */
static int open_live(mirror *m, char *err, size_t errlen)
{
    ka_store_status rc = ka_store_open_secret(m->dir, m->pepper, NULL, 0, &m->st, err, errlen);

    if (rc == KA_OK)
        ka_store_set_sync(m->st, KA_SYNC_NOMETA);
    return rc;
}

static void close_live(mirror *m)
{
    ka_store_close(m->st);
    m->st = NULL;
}

/* A complete new store from the database, swapped in. 0, -1 fatal, -2 retry. */
static int snapshot(mirror *m, const char *why)
{
    char err[1024] = "", path[PATH_LEN + 64];
    builder b;
    PGconn *c;
    uint64_t version = 0;
    struct timespec t0, t1;
    int standby, rc;
    ka_store *st = NULL;

    clock_gettime(CLOCK_MONOTONIC, &t0);
    logm("full snapshot of %s (%s)", m->source, why);
    /* Its own connection: a long transaction never sits on the one that LISTENs. */
    if ((c = pg_open(m, &standby, err, sizeof(err))) == NULL) {
        logm("snapshot: cannot connect to PostgreSQL: %s", err);
        return -2;
    }
    ka_dir_remove(m->newdir);
    if (mkdir(m->newdir, 0755) != 0) {
        PQfinish(c);
        logm("cannot create %s: %s", m->newdir, strerror(errno));
        return -1;
    }
    snprintf(path, sizeof(path), "%s/secret", m->newdir);
    if (write_secret_file(path, m->pepper) != 0 ||
        ka_store_create(m->newdir, NULL, err, sizeof(err)) != KA_OK ||
        ka_store_open_secret(m->newdir, m->pepper, NULL, 0, &st, err, sizeof(err)) != KA_OK) {
        PQfinish(c);
        logm("cannot create the new store %s: %s", m->newdir, err[0] ? err : strerror(errno));
        ka_dir_remove(m->newdir);
        return -1;
    }
    /* Built unsynced, synced once at the end (ka_store_sync): nothing reads it before. */
    ka_store_set_sync(st, KA_SYNC_NONE);
    memset(&b, 0, sizeof(b));
    b.st = st;
    b.m = m;
    rc = build_snapshot(m, c, &version, &b, err, sizeof(err));
    PQfinish(c);
    ka_store_close(st);
    if (rc != 0) {
        logm("snapshot failed: %s", err[0] ? err : "the new store cannot be written");
        ka_dir_remove(m->newdir);
        return rc;
    }
    snprintf(path, sizeof(path), "%s/" KA_MIRROR_CONFIRMED_FILE, m->newdir);
    touch_confirmed(path);
    give_files(m, m->newdir);
    close_live(m);
    if (ka_dir_swap(m->newdir, m->dir, err, sizeof(err)) != 0) {
        logm("%s", err);
        ka_dir_remove(m->newdir);
        return -1;
    }
    if (open_live(m, err, sizeof(err)) != KA_OK) {
        logm("cannot open the new store: %s", err);
        return -1;
    }
    m->version = version;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    logm("snapshot at version %" PRIu64 " in place: %zu rows (%zu left out) in %.1f s", version,
         b.rows, b.skipped,
         (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
    return 0;
}

/* ---- following ---- */

/* One poll: rows after m->version, applied in one LMDB write transaction. 1 current, 0 more
 * rows wait, -2 PostgreSQL failed, -3 resync needed (reason in why), -1 the store failed. */
static int follow(mirror *m, char *why, size_t whylen)
{
    char *sql = m->follow_sql;
    char ver[32], err[512] = "", buf[512];
    const char *params[1] = {ver};
    PGresult *r;
    ka_store_txn *txn;
    int n, rc = 0;
    uint64_t expect = m->version + 1;
    uint64_t now = (uint64_t)time(NULL);

    if (sql[0] == '\0') {
        size_t size = sizeof(m->follow_sql);
        /* Payloads of the names the mirror applies, and of no other (SPEC §11.1). */
        size_t len =
            (size_t)snprintf(sql, size, "SELECT version, name::text, CASE WHEN name::text IN (");
        for (const char *const *nm = ka_mirror_names; *nm; nm++)
            len += (size_t)snprintf(sql + len, size - len, "%s'%s'",
                                    nm == ka_mirror_names ? "" : ", ", *nm);
        snprintf(sql + len, size - len,
                 ") THEN payload::text END FROM %s WHERE version > $1 ORDER BY version LIMIT %d",
                 table(m, T_NOTIFS), BATCH_ROWS);
    }
    snprintf(ver, sizeof(ver), "%" PRIu64, m->version);
    r = PQexecParams(m->pg, sql, 1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        snprintf(why, whylen, "%s", res_msg(r, buf, sizeof(buf)));
        PQclear(r);
        return -2;
    }
    n = PQntuples(r);
    if (n == 0) {
        /* Nothing new; a database whose versions went back is another one (restored?). */
        PGresult *mx;
        char msql[600];
        PQclear(r);
        snprintf(msql, sizeof(msql), "SELECT COALESCE(MAX(version), 0) FROM %s",
                 table(m, T_NOTIFS));
        if ((mx = q(m->pg, msql, PGRES_TUPLES_OK, why, whylen)) == NULL)
            return -2;
        if (u64(PQgetvalue(mx, 0, 0)) < m->version) {
            snprintf(why, whylen, "the database's last version %s is below the store's %" PRIu64,
                     PQgetvalue(mx, 0, 0), m->version);
            rc = -3;
        } else
            rc = 1;
        PQclear(mx);
        return rc;
    }
    if (ensure_room(m->st, (size_t)n) != 0 ||
        ka_store_write_begin(m->st, &txn, err, sizeof(err)) != KA_OK) {
        PQclear(r);
        snprintf(why, whylen, "cannot write key store %s", m->dir);
        return -1;
    }
    for (int i = 0; i < n && rc == 0; i++) {
        uint64_t v = u64(PQgetvalue(r, i, 0));
        const char *name = PQgetvalue(r, i, 1);
        if (v != expect) {
            snprintf(why, whylen, "a gap in versions: %" PRIu64 " follows %" PRIu64, v, expect - 1);
            rc = -3;
        } else if (ka_mirror_apply(txn, m->st, name,
                                   PQgetisnull(r, i, 2) ? NULL : PQgetvalue(r, i, 2),
                                   (size_t)PQgetlength(r, i, 2), now, err, sizeof(err)) != KA_OK) {
            snprintf(why, whylen, "version %" PRIu64 ": %s", v, err);
            rc = -3;
        }
        expect++;
    }
    PQclear(r);
    if (rc != 0) {
        ka_store_abort(txn);
        return rc;
    }
    if (ka_mirror_version_put(txn, m->st, expect - 1) != KA_OK) {
        ka_store_abort(txn);
        snprintf(why, whylen, "cannot commit to key store %s (disk full?)", m->dir);
        return -1;
    }
    if (ka_store_commit(txn, err, sizeof(err)) != KA_OK) { /* the commit ends txn either way */
        snprintf(why, whylen, "cannot commit to key store %s (disk full?)", m->dir);
        return -1;
    }
    m->version = expect - 1;
    return n < BATCH_ROWS ? 1 : 0;
}

/* Waits up to ms for a notification, a dropped connection or a signal. -1 the connection
 * failed. Signals are blocked outside this wait, so none is lost between check and sleep. */
/* Takes the notifications libpq has read (also while a query ran); 1 when there were any. */
static int drain_notifies(PGconn *c)
{
    PGnotify *nt;
    int any = 0;

    while ((nt = PQnotifies(c)) != NULL) {
        PQfreemem(nt); /* a wake-up only: the table row is the truth */
        any = 1;
    }
    return any;
}

/* Waits up to ms for a notification, a dropped connection or a signal. -1 the connection
 * failed. Signals are blocked outside this wait, so none is lost between check and sleep;
 * a notification that arrived during the last query is already in libpq's queue, not on the
 * socket, so the queue is looked at first. */
static int wait_for(mirror *m, long ms, const sigset_t *open)
{
    struct pollfd pfd = {m->pg ? PQsocket(m->pg) : -1, POLLIN, 0};
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    int rc;

    if (stop_signal)
        return 0;
    if (m->pg) {
        if (!PQconsumeInput(m->pg))
            return -1;
        if (drain_notifies(m->pg))
            return 0;
    }
    rc = ppoll(pfd.fd >= 0 ? &pfd : NULL, pfd.fd >= 0 ? 1 : 0, &ts, open);
    if (rc > 0 && m->pg) {
        if (!PQconsumeInput(m->pg))
            return -1;
        drain_notifies(m->pg);
    }
    return 0;
}

static void drop_pg(mirror *m)
{
    PQfinish(m->pg);
    m->pg = NULL;
    m->listening = 0;
}

/* Logs a fault once per state change; the caller then backs off. */
static void went_down(mirror *m, const char *what, const char *why)
{
    if (!m->failing)
        logm("%s: %s; the store keeps serving version %" PRIu64
             ", retrying with backoff (at most 5 s)",
             what, why, m->version);
    m->failing = 1;
    drop_pg(m);
}

/* Connects, checks the pepper and the store against the database, snapshots when needed.
 * 0 ready to follow, -1 fatal, -2 retry later. */
static int connect_and_check(mirror *m)
{
    char err[1024] = "";
    ka_mirror_meta meta;
    struct stat sb;
    int standby, rc;
    PGresult *r;

    if ((m->pg = pg_open(m, &standby, err, sizeof(err))) == NULL) {
        went_down(m, "cannot connect to PostgreSQL", err);
        return -2;
    }
    if ((rc = load_pepper(m, m->pg, err, sizeof(err))) != 0) {
        if (rc == -1)
            return fatal("%s", err);
        went_down(m, "cannot read the pepper", err);
        return -2;
    }
    if (m->st == NULL && stat(m->datapath, &sb) == 0) {
        rc = open_live(m, err, sizeof(err));
        if (rc == KA_BADSECRET)
            return fatal("key store %s was created with another secret: the pepper given is not "
                         "its secret (a wrong --pepper-file or KMS key?); the store is left as "
                         "it is",
                         m->dir);
        if (rc != KA_OK)
            return fatal("%s", err);
    }
    if (!standby) {
        if ((r = q(m->pg, "LISTEN krenalis", PGRES_COMMAND_OK, err, sizeof(err))) == NULL) {
            went_down(m, "LISTEN krenalis failed", err);
            return -2;
        }
        PQclear(r);
    }
    m->listening = !standby;
    rc = KA_NOTFOUND;
    memset(&meta, 0, sizeof(meta));
    if (m->st) {
        ka_store_txn *txn;
        char err[256];
        if (ka_store_read_begin(m->st, &txn, err, sizeof(err)) != KA_OK)
            return fatal("cannot read key store %s", m->dir);
        rc = ka_mirror_meta_get(txn, m->st, &meta);
        ka_store_abort(txn);
    }
    if (rc == KA_OK && strcmp(meta.source, m->source) == 0 && !m->resync) {
        m->version = meta.version;
    } else {
        /* --resync: versions the store holds may be of a history the database lost (a failover
         * to a standby that missed changes, a point-in-time restore), which no version tells. */
        const char *why = m->st == NULL       ? "a new store"
                          : m->resync         ? "--resync"
                          : rc == KA_NOTFOUND ? "the store was not a mirror"
                          : rc == KA_OK       ? "the store mirrored another database"
                                              : "the store's mirror record is unreadable";
        if ((rc = snapshot(m, why)) != 0) {
            if (rc == -2)
                went_down(m, "the snapshot failed", "see above");
            return rc == -1 ? fatal("key store %s was left as it was", m->dir) : -2;
        }
        m->resync = 0; /* once: a reconnection follows on from the new store's version */
    }
    logm("%s PostgreSQL (%s): following from version %" PRIu64 "%s, polling every %ld ms",
         m->failing ? "back on" : "connected to", m->elided, m->version,
         m->listening ? " with LISTEN krenalis" : " (a hot standby: no LISTEN)", m->poll_ms);
    m->failing = 0;
    m->backoff_ms = 0;
    return 0;
}

static int take_lock(mirror *m)
{
    int fd = open(m->lockpath, O_RDWR | O_CREAT | O_CLOEXEC, 0600);

    if (fd < 0)
        return fatal("cannot open the mirror's lock file %s: %s (the store's parent directory "
                     "must be writable: the mirror swaps stores there)",
                     m->lockpath, strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB) != 0)
        return fatal("another mirror already runs on %s (%s is locked)", m->dir, m->lockpath);
    return 0; /* held until exit */
}

static int run(mirror *m)
{
    sigset_t block, open;
    struct sigaction sa;
    char why[1024];
    int rc;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    sigprocmask(SIG_BLOCK, &block, &open);
    if (take_lock(m) != 0)
        return 1;
    ka_dir_remove(m->newdir); /* left by a mirror killed during a snapshot */
    while (!stop_signal) {
        if (m->pg == NULL) {
            rc = connect_and_check(m);
            if (rc == 1)
                return 1;
            if (rc == -2) {
                if (m->once)
                    return fatal("PostgreSQL is unavailable; nothing was changed");
                m->backoff_ms = m->backoff_ms ? m->backoff_ms * 2 : BACKOFF_FIRST_MS;
                if (m->backoff_ms > BACKOFF_MAX_MS)
                    m->backoff_ms = BACKOFF_MAX_MS;
                wait_for(m, m->backoff_ms, &open);
                continue;
            }
        }
        rc = follow(m, why, sizeof(why));
        if (rc == -2) {
            went_down(m, "PostgreSQL failed", why);
            if (m->once)
                return fatal("PostgreSQL failed; the store holds version %" PRIu64, m->version);
            continue;
        }
        if (rc == -1) {
            went_down(m, "the store cannot be written", why);
            if (m->once)
                return 1;
            continue;
        }
        if (rc == -3) {
            logm("%s: full resync", why);
            if ((rc = snapshot(m, "resync")) == -1)
                return fatal("key store %s was left at version %" PRIu64, m->dir, m->version);
            if (rc == -2)
                went_down(m, "the resync failed", "see above");
            continue;
        }
        if (rc == 1) {
            touch_confirmed(m->confirmed);
            if (m->once)
                break;
            if (wait_for(m, m->poll_ms, &open) != 0)
                went_down(m, "PostgreSQL connection lost", pg_msg(m->pg, why, sizeof(why)));
        }
    }
    logm("stopped at version %" PRIu64 "%s", m->version, stop_signal ? " (signal)" : "");
    return 0;
}

static int cmd_mirror(mirror *m)
{
    size_t n;
    int rc;

    /* The directory itself, not a symlink to it: a snapshot swapped in over the link would
     * replace the link, and the store behind it (which Apache may name) would go stale. */
    if (realpath(m->dir, m->realdir) != NULL)
        m->dir = m->realdir;
    n = strlen(m->dir);
    /* Without trailing slashes: DIR.mirror-new must be a sibling, not a child. */
    while (n > 1 && m->dir[n - 1] == '/')
        n--;
    snprintf(m->newdir, sizeof(m->newdir), "%.*s.mirror-new", (int)n, m->dir);
    snprintf(m->lockpath, sizeof(m->lockpath), "%.*s.mirror-lock", (int)n, m->dir);
    snprintf(m->confirmed, sizeof(m->confirmed), "%.*s/" KA_MIRROR_CONFIRMED_FILE, (int)n, m->dir);
    snprintf(m->datapath, sizeof(m->datapath), "%.*s/data.mdb", (int)n, m->dir);
    elide_conninfo(m->conninfo, m->elided, sizeof(m->elided));
    m->pepper = ka_secure_alloc(KA_SECRET_LEN);
    if (m->pepper == NULL)
        return fatal("out of memory");
    rc = run(m);
    drop_pg(m);
    close_live(m);
    ka_secure_free(m->pepper, KA_SECRET_LEN);
    free(m->schema_q);
    return rc;
}

static int cmd_upgrade(mirror *m)
{
    char err[8192];
    ka_store *st;

    if (ka_store_open(m->dir, m->secret_path, 1, &st, err, sizeof(err)) == KA_OK) {
        ka_store_close(st);
        printf("key store %s already has format '%s'\n", m->dir, KA_STORE_FORMAT);
        return 0;
    }
    if (ka_store_upgrade(m->dir, m->secret_path, err, sizeof(err)) != KA_OK)
        return fatal("%s", err);
    printf("key store %s upgraded to format '%s'\n", m->dir, KA_STORE_FORMAT);
    return 0;
}

int ka_mirror_cli(int argc, char **argv)
{
    mirror m;
    int at = 0, is_mirror, rc;
    const char *word = command_word(argc, argv, &at);

    if (word == NULL || (strcmp(word, "mirror") != 0 && strcmp(word, "upgrade") != 0))
        return -1;
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
            return -1;
    is_mirror = strcmp(word, "mirror") == 0;
    memset(&m, 0, sizeof(m));
    if ((rc = parse(argc, argv, &m, is_mirror)) != 0)
        return rc;
    return is_mirror ? cmd_mirror(&m) : cmd_upgrade(&m);
}
