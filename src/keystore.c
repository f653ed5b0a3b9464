/* The LMDB key store: layout documented in docs/keystore.md. */
#include "keystore.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <lmdb.h>
#include <openssl/crypto.h>

#include "crypto.h"
#include "token.h"

struct ka_store {
    MDB_env *env;
    MDB_dbi meta, orgs, wss, conns, keys, kids, idx;
    ka_hmac_key hmac;
    unsigned psize; /* LMDB page size of data.mdb */
    char dir[4096];
};

/* A ka_store_txn is an MDB_txn: the type only keeps LMDB out of the header. */
#define TX(t) ((MDB_txn *)(t))

/* Offsets in a key record (value of the "keys" database). */
#define REC_TYPE 0
#define REC_ID 1
#define REC_ORG (REC_ID + KA_ID_LEN)
#define REC_WS (REC_ORG + KA_ID_LEN)
#define REC_CONN (REC_WS + KA_ID_LEN)
#define REC_CREATED (REC_CONN + KA_ID_LEN)
#define REC_HINTLEN (REC_CREATED + 8)
#define REC_HINT (REC_HINTLEN + 1)

/* Index entries: a tag byte and two IDs, value empty. */
#define IDX_WS_OF_ORG 'S'
#define IDX_CONN_OF_WS 'C'
#define IDX_API_OF_ORG 'A'
#define IDX_WRITE_OF_CONN 'W'
#define IDX_LEN (1 + 2 * KA_ID_LEN)

/* Offsets in a connection record. */
#define CONN_WS 0
#define CONN_ORG KA_ID_LEN
#define CONN_FLAGS (2 * KA_ID_LEN)
#define CONN_NAME (CONN_FLAGS + 1)

static void copy_id(char dst[KA_ID_LEN + 1], const void *src)
{
    memcpy(dst, src, KA_ID_LEN);
    dst[KA_ID_LEN] = '\0';
}

/* Copies an optional ID field: all zero bytes mean none. */
static void copy_opt_id(char dst[KA_ID_LEN + 1], const uint8_t *src)
{
    if (src[0] == 0)
        dst[0] = '\0';
    else
        copy_id(dst, src);
}

static void copy_name(char dst[KA_NAME_MAX + 1], const void *src, size_t len)
{
    if (len > KA_NAME_MAX)
        len = KA_NAME_MAX;
    memcpy(dst, src, len);
    dst[len] = '\0';
}

static ka_store_status open_dbis(ka_store *st, int readonly, char *err, size_t errlen)
{
    MDB_txn *txn = NULL;
    unsigned flags = readonly ? 0 : MDB_CREATE;
    int rc = mdb_txn_begin(st->env, NULL, readonly ? MDB_RDONLY : 0, &txn);

    if (rc == 0)
        rc = mdb_dbi_open(txn, "meta", flags, &st->meta);
    if (rc == 0)
        rc = mdb_dbi_open(txn, "organizations", flags, &st->orgs);
    if (rc == 0)
        rc = mdb_dbi_open(txn, "workspaces", flags, &st->wss);
    if (rc == 0)
        rc = mdb_dbi_open(txn, "connections", flags, &st->conns);
    if (rc == 0)
        rc = mdb_dbi_open(txn, "keys", flags, &st->keys);
    if (rc == 0)
        rc = mdb_dbi_open(txn, "key-ids", flags, &st->kids);
    if (rc == 0)
        rc = mdb_dbi_open(txn, "index", flags, &st->idx);
    if (rc != 0) {
        if (txn)
            mdb_txn_abort(txn);
        snprintf(err, errlen, "key store %s is not a krenalis-keys store (%s)", st->dir,
                 mdb_strerror(rc));
        return KA_FAIL;
    }
    return mdb_txn_commit(txn) == 0 ? KA_OK : KA_FAIL;
}

/* The meta record that tells whether a secret is the store's: HMAC(secret, this text). Its
 * length differs from every credential's, so it is never the digest of a key. */
#define SECRET_CHECK_KEY "secret-check"
#define SECRET_CHECK_TEXT "krenalis-keys secret check"

static void secret_check_value(const ka_store *st, uint8_t out[KA_DIGEST_LEN])
{
    ka_hmac(&st->hmac, SECRET_CHECK_TEXT, sizeof(SECRET_CHECK_TEXT) - 1, out);
}

/* A wrong secret would make every key "does not exist"; refuse it instead. */
static ka_store_status check_secret(ka_store *st, MDB_txn *txn, char *err, size_t errlen)
{
    MDB_val k = {sizeof(SECRET_CHECK_KEY) - 1, SECRET_CHECK_KEY}, v;
    uint8_t want[KA_DIGEST_LEN];
    int rc = mdb_get(TX(txn), st->meta, &k, &v);

    if (rc != 0 || v.mv_size != KA_DIGEST_LEN) {
        snprintf(err, errlen,
                 "key store %s has no secret check record; it was not made by krenalis-keys "
                 "init",
                 st->dir);
        return KA_FAIL;
    }
    secret_check_value(st, want);
    if (!ka_ct_equal(want, v.mv_data, KA_DIGEST_LEN)) {
        snprintf(err, errlen, "key store %s was created with another secret", st->dir);
        return KA_BADSECRET;
    }
    return KA_OK;
}

ka_store_status ka_store_check_size(const ka_store *st, long long size, char *err, size_t errlen)
{
    MDB_envinfo info;
    unsigned long long need;

    /* Below two pages even the meta pages are gone: do not read them. */
    if (size < 2 * (long long)st->psize) {
        snprintf(err, errlen,
                 "key store %s: data.mdb holds %lld bytes, less than its header: it "
                 "was truncated",
                 st->dir, size);
        return KA_FAIL;
    }
    mdb_env_info(st->env, &info);
    need = ((unsigned long long)info.me_last_pgno + 1) * st->psize;
    if ((unsigned long long)size < need) {
        snprintf(err, errlen,
                 "key store %s: data.mdb holds %lld bytes but its last commit uses %llu: it "
                 "was truncated",
                 st->dir, size, need);
        return KA_FAIL;
    }
    return KA_OK;
}

/* Pages past the end of data.mdb would be read as SIGBUS, not as an error. */
static ka_store_status check_file_size(ka_store *st, char *err, size_t errlen)
{
    MDB_stat ms;
    struct stat sb;
    int fd;

    if (mdb_env_get_fd(st->env, &fd) != 0 || fstat(fd, &sb) != 0) {
        snprintf(err, errlen, "key store %s: cannot stat data.mdb: %s", st->dir, strerror(errno));
        return KA_FAIL;
    }
    /* mdb_env_open read both meta headers, so they are inside the file. */
    mdb_env_stat(st->env, &ms);
    st->psize = ms.ms_psize;
    return ka_store_check_size(st, (long long)sb.st_size, err, errlen);
}

static int format_is(const MDB_val *v, const char *format)
{
    return v->mv_size == strlen(format) && memcmp(v->mv_data, format, v->mv_size) == 0;
}

/* format: the one the caller reads (KA_STORE_FORMAT, or KA_STORE_FORMAT_1 to upgrade it). */
static ka_store_status check_format(ka_store *st, const char *format, char *err, size_t errlen)
{
    MDB_txn *txn;
    MDB_val k = {4 + 2, "format"}, v;
    int rc = mdb_txn_begin(st->env, NULL, MDB_RDONLY, &txn);

    if (rc != 0) {
        snprintf(err, errlen, "key store %s: %s", st->dir, mdb_strerror(rc));
        return KA_FAIL;
    }
    rc = mdb_get(TX(txn), st->meta, &k, &v);
    if (rc != 0 || !format_is(&v, format)) {
        if (rc == 0 && format_is(&v, KA_STORE_FORMAT_1))
            snprintf(err, errlen,
                     "key store %s has format '%s'; this build reads '%s': upgrade it with "
                     "'krenalis-keys --store %s upgrade'",
                     st->dir, KA_STORE_FORMAT_1, KA_STORE_FORMAT, st->dir);
        else if (rc == 0)
            snprintf(err, errlen, "key store %s has format '%.*s'; this build reads '%s'", st->dir,
                     (int)(v.mv_size > 64 ? 64 : v.mv_size), (const char *)v.mv_data, format);
        else
            snprintf(err, errlen,
                     "key store %s has no format record; it was not made by "
                     "krenalis-keys init",
                     st->dir);
        mdb_txn_abort(txn);
        return KA_FAIL;
    }
    rc = check_secret(st, txn, err, errlen);
    mdb_txn_abort(txn);
    return rc;
}

static void bad_secret_msg(const char *dir, const char *secret_path, char *err, size_t errlen)
{
    snprintf(err, errlen,
             "the store secret %s does not match key store %s (the store was created with "
             "another secret)",
             secret_path, dir);
}

char *ka_store_default_secret(const char *dir, char *buf, size_t len)
{
    snprintf(buf, len, "%s/secret", dir);
    return buf;
}

static void default_secret(const char *dir, const char *secret_path, char *buf, size_t len)
{
    if (secret_path)
        snprintf(buf, len, "%s", secret_path);
    else
        ka_store_default_secret(dir, buf, len);
}

char *ka_store_engine_version(char *buf, size_t len)
{
    int major, minor, patch;

    mdb_version(&major, &minor, &patch);
    snprintf(buf, len, "%d.%d.%d", major, minor, patch);
    return buf;
}

const char *ka_store_dir(const ka_store *st)
{
    return st->dir;
}

/* KA_FAIL with a message unless dir is a directory. */
static ka_store_status check_dir(const char *dir, char *err, size_t errlen)
{
    struct stat sb;

    if (stat(dir, &sb) != 0) {
        snprintf(err, errlen, "key store %s: %s", dir, strerror(errno));
        return KA_FAIL;
    }
    if (!S_ISDIR(sb.st_mode)) {
        snprintf(err, errlen, "key store %s is not a directory", dir);
        return KA_FAIL;
    }
    return KA_OK;
}

/* A store object for dir with the HMAC key of secret, and its LMDB environment opened (mode
 * readonly: the module's). The one place the environment is set up; *what names the step for
 * messages ("open", "create"). NULL with a message on failure. */
static ka_store *env_open(const char *dir, const uint8_t secret[KA_SECRET_LEN], int readonly,
                          const char *what, char *err, size_t errlen)
{
    ka_store *st = ka_secure_alloc(sizeof(*st));
    int rc;

    if (st == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    snprintf(st->dir, sizeof(st->dir), "%s", dir);
    ka_hmac_init(&st->hmac, secret);
    rc = mdb_env_create(&st->env);
    if (rc == 0)
        rc = mdb_env_set_maxdbs(st->env, 8);
    if (rc == 0)
        rc = mdb_env_set_maxreaders(st->env, KA_STORE_MAXREADERS);
    if (rc == 0 && !readonly)
        rc = mdb_env_set_mapsize(st->env, KA_STORE_DEFAULT_MAPSIZE);
    /* NOTLS: a read transaction is not tied to a thread (event MPM threads, reader slots). */
    if (rc == 0)
        rc = mdb_env_open(st->env, dir, readonly ? (MDB_RDONLY | MDB_NOTLS) : MDB_NOTLS, 0640);
    if (rc != 0) {
        snprintf(err, errlen, "cannot %s key store %s: %s", what, dir, mdb_strerror(rc));
        ka_store_close(st);
        return NULL;
    }
    return st;
}

ka_store_status ka_store_open(const char *dir, const char *secret_path, int readonly,
                              ka_store **out, char *err, size_t errlen)
{
    uint8_t secret[KA_SECRET_LEN];
    char spath[4200];
    ka_store_status rc;

    *out = NULL;
    if (check_dir(dir, err, errlen) != KA_OK)
        return KA_FAIL;
    default_secret(dir, secret_path, spath, sizeof(spath));
    if (ka_secret_read(spath, secret, err, errlen) != NULL)
        return KA_FAIL;
    rc = ka_store_open_secret(dir, secret, spath, readonly, out, err, errlen);
    OPENSSL_cleanse(secret, sizeof(secret));
    return rc;
}

/* Opens a store of the given format (KA_STORE_FORMAT, or KA_STORE_FORMAT_1 to upgrade it). */
static ka_store_status open_secret_format(const char *dir, const uint8_t secret[KA_SECRET_LEN],
                                          const char *secret_path, int readonly, const char *format,
                                          ka_store **out, char *err, size_t errlen)
{
    ka_store *st;
    ka_store_status rc;

    *out = NULL;
    if (check_dir(dir, err, errlen) != KA_OK)
        return KA_FAIL;
    if ((st = env_open(dir, secret, readonly, "open", err, errlen)) == NULL)
        return KA_FAIL;
    if (check_file_size(st, err, errlen) != KA_OK) {
        ka_store_close(st);
        return KA_FAIL;
    }
    /* Slots of dead readers must go before this open needs one of its own. */
    mdb_reader_check(st->env, NULL);
    rc = open_dbis(st, readonly, err, errlen);
    if (rc == KA_OK)
        rc = check_format(st, format, err, errlen);
    if (rc != KA_OK) {
        ka_store_close(st);
        if (rc == KA_BADSECRET && secret_path != NULL)
            bad_secret_msg(dir, secret_path, err, errlen);
        return rc;
    }
    *out = st;
    return KA_OK;
}

ka_store_status ka_store_open_secret(const char *dir, const uint8_t secret[KA_SECRET_LEN],
                                     const char *secret_path, int readonly, ka_store **out,
                                     char *err, size_t errlen)
{
    return open_secret_format(dir, secret, secret_path, readonly, KA_STORE_FORMAT, out, err,
                              errlen);
}

void ka_store_close(ka_store *st)
{
    if (st == NULL)
        return;
    if (st->env)
        mdb_env_close(st->env);
    ka_secure_free(st, sizeof(*st)); /* the HMAC pad states are as good as the secret */
}

static ka_store_status write_secret(const char *path, char *err, size_t errlen)
{
    uint8_t secret[KA_SECRET_LEN];
    int fd;
    ssize_t n;

    if (!ka_random(secret, sizeof(secret))) {
        snprintf(err, errlen, "cannot get random bytes for the store secret");
        return KA_FAIL;
    }
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "cannot create store secret %s: %s", path, strerror(errno));
        OPENSSL_cleanse(secret, sizeof(secret));
        return KA_FAIL;
    }
    n = write(fd, secret, sizeof(secret));
    OPENSSL_cleanse(secret, sizeof(secret));
    if (n != (ssize_t)sizeof(secret) || fsync(fd) != 0) {
        snprintf(err, errlen, "cannot write store secret %s: %s", path, strerror(errno));
        close(fd);
        unlink(path);
        return KA_FAIL;
    }
    close(fd);
    return KA_OK;
}

ka_store_status ka_store_create(const char *dir, const char *secret_path, char *err, size_t errlen)
{
    uint8_t secret[KA_SECRET_LEN];
    char spath[4200];
    struct stat sb;
    ka_store *st;
    MDB_txn *txn;
    MDB_val k = {6, "format"}, v = {strlen(KA_STORE_FORMAT), KA_STORE_FORMAT};
    int rc;

    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "cannot create %s: %s", dir, strerror(errno));
        return KA_FAIL;
    }
    {
        char data[4200];
        snprintf(data, sizeof(data), "%s/data.mdb", dir);
        if (stat(data, &sb) == 0) {
            snprintf(err, errlen, "%s already holds a key store", dir);
            return KA_FAIL;
        }
    }
    default_secret(dir, secret_path, spath, sizeof(spath));
    if (stat(spath, &sb) != 0 && write_secret(spath, err, errlen) != KA_OK)
        return KA_FAIL;
    if (ka_secret_read(spath, secret, err, errlen) != NULL)
        return KA_FAIL;
    st = env_open(dir, secret, 0, "create", err, errlen);
    OPENSSL_cleanse(secret, sizeof(secret));
    if (st == NULL)
        return KA_FAIL;
    if (open_dbis(st, 0, err, errlen) != KA_OK) {
        ka_store_close(st);
        return KA_FAIL;
    }
    rc = mdb_txn_begin(st->env, NULL, 0, &txn);
    if (rc == 0) {
        uint8_t check[KA_DIGEST_LEN];
        MDB_val ck = {sizeof(SECRET_CHECK_KEY) - 1, SECRET_CHECK_KEY}, cv = {sizeof(check), check};
        secret_check_value(st, check);
        rc = mdb_put(TX(txn), st->meta, &k, &v, 0);
        if (rc == 0)
            rc = mdb_put(TX(txn), st->meta, &ck, &cv, 0);
        if (rc == 0)
            rc = mdb_txn_commit(txn);
        else
            mdb_txn_abort(txn);
    }
    if (rc != 0)
        snprintf(err, errlen, "cannot write key store %s: %s", dir, mdb_strerror(rc));
    ka_store_close(st);
    return rc == 0 ? KA_OK : KA_FAIL;
}

void ka_digest_api(const ka_store *st, const uint8_t payload[KA_PAYLOAD_LEN],
                   uint8_t out[KA_DIGEST_LEN])
{
    ka_hmac(&st->hmac, payload, KA_PAYLOAD_LEN, out);
}

void ka_digest_write(const ka_store *st, const char key[KA_WRITE_KEY_LEN],
                     uint8_t out[KA_DIGEST_LEN])
{
    ka_hmac(&st->hmac, key, KA_WRITE_KEY_LEN, out);
}

/* ---- transactions ---- */

static ka_store_status txn_result(int rc, const char *what, const char *dir, char *err,
                                  size_t errlen)
{
    if (rc == 0)
        return KA_OK;
    if (rc == MDB_MAP_RESIZED)
        return KA_RESIZED;
    snprintf(err, errlen, "key store %s: %s: %s", dir, what, mdb_strerror(rc));
    return KA_FAIL;
}

ka_store_status ka_store_read_begin(const ka_store *st, ka_store_txn **txn, char *err,
                                    size_t errlen)
{
    MDB_txn *t = NULL;
    int rc = mdb_txn_begin(st->env, NULL, MDB_RDONLY, &t);

    *txn = rc == 0 ? (ka_store_txn *)t : NULL;
    return txn_result(rc, "cannot begin a read transaction", st->dir, err, errlen);
}

void ka_store_read_reset(ka_store_txn *txn)
{
    mdb_txn_reset(TX(txn));
}

ka_store_status ka_store_read_renew(ka_store_txn *txn, char *err, size_t errlen)
{
    const char *dir = "";
    int rc = mdb_txn_renew(TX(txn));

    if (rc == 0)
        return KA_OK;
    mdb_env_get_path(mdb_txn_env(TX(txn)), &dir); /* for the message only: a request path */
    return txn_result(rc, "cannot renew a read transaction", dir, err, errlen);
}

void ka_store_adopt_map(ka_store *st)
{
    mdb_env_set_mapsize(st->env, 0);
}

size_t ka_store_txn_id(const ka_store_txn *txn)
{
    return mdb_txn_id((MDB_txn *)txn);
}

size_t ka_store_last_commit(const ka_store *st)
{
    MDB_envinfo info;

    return mdb_env_info(st->env, &info) == 0 ? info.me_last_txnid : 0;
}

ka_store_status ka_store_write_begin(ka_store *st, ka_store_txn **txn, char *err, size_t errlen)
{
    MDB_txn *t = NULL;
    int rc = mdb_txn_begin(st->env, NULL, 0, &t);

    *txn = rc == 0 ? (ka_store_txn *)t : NULL;
    if (rc == MDB_MAP_RESIZED) {
        /* A writer is alone on the map: adopt another process's growth, then begin. */
        mdb_env_set_mapsize(st->env, 0);
        rc = mdb_txn_begin(st->env, NULL, 0, &t);
        *txn = rc == 0 ? (ka_store_txn *)t : NULL;
    }
    if (rc == 0)
        return KA_OK;
    snprintf(err, errlen, "cannot update key store %s: %s", st->dir, mdb_strerror(rc));
    return KA_FAIL;
}

ka_store_status ka_store_commit(ka_store_txn *txn, char *err, size_t errlen)
{
    MDB_env *env = mdb_txn_env(TX(txn));
    const char *dir = "";
    int rc;

    mdb_env_get_path(env, &dir);
    rc = mdb_txn_commit(TX(txn));
    if (rc == 0)
        return KA_OK;
    if (rc == MDB_MAP_FULL)
        return KA_MAPFULL;
    snprintf(err, errlen, "cannot update key store %s: %s", dir, mdb_strerror(rc));
    return KA_FAIL;
}

void ka_store_abort(ka_store_txn *txn)
{
    if (txn != NULL)
        mdb_txn_abort(TX(txn));
}

#define ROOM_SLACK ((size_t)64 << 20) /* free map space kept beyond the estimate */

ka_store_status ka_store_reserve(ka_store *st, size_t estimate, int grow, char *err, size_t errlen)
{
    MDB_envinfo info;
    MDB_stat ms;
    size_t used, want, size;
    int rc = mdb_env_info(st->env, &info);

    if (rc == 0)
        rc = mdb_env_stat(st->env, &ms);
    if (rc == 0) {
        used = ((size_t)info.me_last_pgno + 1) * ms.ms_psize;
        want = 2 * used + estimate + ROOM_SLACK;
        size = info.me_mapsize;
        if (grow && want < 2 * size)
            want = 2 * size;
        if (want <= size)
            return KA_OK;
        while (size < want)
            size *= 2;
        rc = mdb_env_set_mapsize(st->env, size);
    }
    if (rc == 0)
        return KA_OK;
    snprintf(err, errlen, "cannot update key store %s: %s", st->dir, mdb_strerror(rc));
    return KA_FAIL;
}

/* ---- records ---- */

static ka_store_status get_result(int rc)
{
    if (rc == 0)
        return KA_OK;
    return rc == MDB_NOTFOUND ? KA_NOTFOUND : KA_FAIL;
}

/* Decodes a key record; KA_FAIL if it is not one this build wrote. */
static ka_store_status decode_key(const MDB_val *v, ka_key_rec *rec)
{
    const uint8_t *p = v->mv_data;
    size_t hl;

    if (v->mv_size < REC_HINT || (p[REC_TYPE] != 'A' && p[REC_TYPE] != 'W'))
        return KA_FAIL;
    hl = p[REC_HINTLEN];
    if (hl > KA_HINT_MAX || REC_HINT + hl > v->mv_size)
        return KA_FAIL;
    rec->type = p[REC_TYPE] == 'A' ? KA_KEY_API : KA_KEY_WRITE;
    copy_id(rec->id, p + REC_ID);
    copy_id(rec->org, p + REC_ORG);
    copy_opt_id(rec->ws, p + REC_WS);
    copy_opt_id(rec->conn, p + REC_CONN);
    rec->created = 0;
    for (int i = 0; i < 8; i++)
        rec->created = rec->created << 8 | p[REC_CREATED + i];
    memcpy(rec->hint, p + REC_HINT, hl);
    rec->hint[hl] = '\0';
    copy_name(rec->name, p + REC_HINT + hl, v->mv_size - REC_HINT - hl);
    return KA_OK;
}

ka_store_status ka_get_key(ka_store_txn *txn, const ka_store *st,
                           const uint8_t digest[KA_DIGEST_LEN], ka_key_rec *rec)
{
    MDB_val k = {KA_DIGEST_LEN, (void *)digest}, v;
    ka_store_status rc = get_result(mdb_get(TX(txn), st->keys, &k, &v));
    return rc == KA_OK ? decode_key(&v, rec) : rc;
}

ka_store_status ka_get_org(ka_store_txn *txn, const ka_store *st, const char *id, ka_entity *e)
{
    MDB_val k = {KA_ID_LEN, (void *)id}, v;
    ka_store_status rc = get_result(mdb_get(TX(txn), st->orgs, &k, &v));

    if (rc != KA_OK)
        return rc;
    if (v.mv_size < 1)
        return KA_FAIL;
    copy_id(e->id, id);
    e->org[0] = e->ws[0] = '\0';
    e->enabled = ((const uint8_t *)v.mv_data)[0] & 1;
    e->conn_flags = 0;
    copy_name(e->name, (const char *)v.mv_data + 1, v.mv_size - 1);
    return KA_OK;
}

ka_store_status ka_get_ws(ka_store_txn *txn, const ka_store *st, const char *id, ka_entity *e)
{
    MDB_val k = {KA_ID_LEN, (void *)id}, v;
    ka_store_status rc = get_result(mdb_get(TX(txn), st->wss, &k, &v));

    if (rc != KA_OK)
        return rc;
    if (v.mv_size < KA_ID_LEN)
        return KA_FAIL;
    copy_id(e->id, id);
    copy_id(e->org, v.mv_data);
    e->ws[0] = '\0';
    e->enabled = 1;
    e->conn_flags = 0;
    copy_name(e->name, (const char *)v.mv_data + KA_ID_LEN, v.mv_size - KA_ID_LEN);
    return KA_OK;
}

ka_store_status ka_get_conn(ka_store_txn *txn, const ka_store *st, const char *id, ka_entity *e)
{
    MDB_val k = {KA_ID_LEN, (void *)id}, v;
    ka_store_status rc = get_result(mdb_get(TX(txn), st->conns, &k, &v));

    if (rc != KA_OK)
        return rc;
    if (v.mv_size < CONN_NAME)
        return KA_FAIL;
    copy_id(e->id, id);
    copy_id(e->ws, (const char *)v.mv_data + CONN_WS);
    copy_id(e->org, (const char *)v.mv_data + CONN_ORG);
    e->enabled = 1;
    e->conn_flags = ((const uint8_t *)v.mv_data)[CONN_FLAGS];
    copy_name(e->name, (const char *)v.mv_data + CONN_NAME, v.mv_size - CONN_NAME);
    return KA_OK;
}

/* ---- write side ---- */

static ka_store_status idx_put(ka_store_txn *txn, ka_store *st, char tag, const char *a,
                               const char *b)
{
    char key[IDX_LEN];
    MDB_val k = {IDX_LEN, key}, v = {0, ""};

    key[0] = tag;
    memcpy(key + 1, a, KA_ID_LEN);
    memcpy(key + 1 + KA_ID_LEN, b, KA_ID_LEN);
    return mdb_put(TX(txn), st->idx, &k, &v, 0) == 0 ? KA_OK : KA_FAIL;
}

static ka_store_status idx_del(ka_store_txn *txn, ka_store *st, char tag, const char *a,
                               const char *b)
{
    char key[IDX_LEN];
    MDB_val k = {IDX_LEN, key};
    int rc;

    key[0] = tag;
    memcpy(key + 1, a, KA_ID_LEN);
    memcpy(key + 1 + KA_ID_LEN, b, KA_ID_LEN);
    rc = mdb_del(TX(txn), st->idx, &k, NULL);
    return rc == 0 || rc == MDB_NOTFOUND ? KA_OK : KA_FAIL;
}

typedef int (*idx_cb)(const char *second, void *arg);

/* Calls cb with the second ID of every index entry tag+first. Collects first so that the
 * callback may delete entries. */
static ka_store_status idx_each(ka_store_txn *txn, const ka_store *st, char tag, const char *first,
                                idx_cb cb, void *arg)
{
    char prefix[1 + KA_ID_LEN];
    MDB_cursor *cur;
    MDB_val k, v;
    char(*ids)[KA_ID_LEN + 1] = NULL;
    size_t n = 0, cap = 0;
    int rc, ret = KA_OK;

    prefix[0] = tag;
    memcpy(prefix + 1, first, KA_ID_LEN);
    if (mdb_cursor_open(TX(txn), st->idx, &cur) != 0)
        return KA_FAIL;
    k.mv_size = sizeof(prefix);
    k.mv_data = prefix;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size != IDX_LEN || memcmp(k.mv_data, prefix, sizeof(prefix)) != 0)
            break;
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            void *p = realloc(ids, ncap * sizeof(*ids));
            if (p == NULL) {
                ret = KA_FAIL;
                break;
            }
            ids = p;
            cap = ncap;
        }
        copy_id(ids[n++], (const char *)k.mv_data + 1 + KA_ID_LEN);
    }
    mdb_cursor_close(cur);
    if (rc != 0 && rc != MDB_NOTFOUND)
        ret = KA_FAIL;
    for (size_t i = 0; ret == KA_OK && i < n; i++)
        if (cb(ids[i], arg) != 0)
            ret = KA_FAIL;
    free(ids);
    return ret;
}

static ka_store_status put_raw(ka_store_txn *txn, MDB_dbi dbi, const void *key, size_t klen,
                               const void *val, size_t vlen)
{
    MDB_val k = {klen, (void *)key}, v = {vlen, (void *)val};
    return mdb_put(TX(txn), dbi, &k, &v, 0) == 0 ? KA_OK : KA_FAIL;
}

static ka_store_status del_raw(ka_store_txn *txn, MDB_dbi dbi, const void *key, size_t klen)
{
    MDB_val k = {klen, (void *)key};
    int rc = mdb_del(TX(txn), dbi, &k, NULL);
    if (rc == MDB_NOTFOUND)
        return KA_NOTFOUND;
    return rc == 0 ? KA_OK : KA_FAIL;
}

ka_store_status ka_put_org(ka_store_txn *txn, ka_store *st, const ka_entity *e)
{
    uint8_t buf[1 + KA_NAME_MAX];
    size_t nl = strnlen(e->name, KA_NAME_MAX);

    buf[0] = e->enabled ? 1 : 0;
    memcpy(buf + 1, e->name, nl);
    return put_raw(txn, st->orgs, e->id, KA_ID_LEN, buf, 1 + nl);
}

ka_store_status ka_put_ws(ka_store_txn *txn, ka_store *st, const ka_entity *e)
{
    char buf[KA_ID_LEN + KA_NAME_MAX];
    size_t nl = strnlen(e->name, KA_NAME_MAX);

    memcpy(buf, e->org, KA_ID_LEN);
    memcpy(buf + KA_ID_LEN, e->name, nl);
    if (put_raw(txn, st->wss, e->id, KA_ID_LEN, buf, KA_ID_LEN + nl) != KA_OK)
        return KA_FAIL;
    return idx_put(txn, st, IDX_WS_OF_ORG, e->org, e->id);
}

ka_store_status ka_put_conn(ka_store_txn *txn, ka_store *st, const ka_entity *e)
{
    char buf[CONN_NAME + KA_NAME_MAX];
    size_t nl = strnlen(e->name, KA_NAME_MAX);

    memcpy(buf + CONN_WS, e->ws, KA_ID_LEN);
    memcpy(buf + CONN_ORG, e->org, KA_ID_LEN);
    buf[CONN_FLAGS] = (char)(e->conn_flags & (KA_CONN_DESTINATION | KA_CONN_NO_STRATEGY));
    memcpy(buf + CONN_NAME, e->name, nl);
    if (put_raw(txn, st->conns, e->id, KA_ID_LEN, buf, CONN_NAME + nl) != KA_OK)
        return KA_FAIL;
    return idx_put(txn, st, IDX_CONN_OF_WS, e->ws, e->id);
}

static void put_opt_id(uint8_t *dst, const char *id)
{
    if (id[0] == '\0')
        memset(dst, 0, KA_ID_LEN);
    else
        memcpy(dst, id, KA_ID_LEN);
}

ka_store_status ka_put_key(ka_store_txn *txn, ka_store *st, const uint8_t digest[KA_DIGEST_LEN],
                           const ka_key_rec *rec)
{
    uint8_t buf[REC_HINT + KA_HINT_MAX + KA_NAME_MAX];
    size_t hl = strnlen(rec->hint, KA_HINT_MAX), nl = strnlen(rec->name, KA_NAME_MAX);

    buf[REC_TYPE] = rec->type == KA_KEY_API ? 'A' : 'W';
    memcpy(buf + REC_ID, rec->id, KA_ID_LEN);
    memcpy(buf + REC_ORG, rec->org, KA_ID_LEN);
    put_opt_id(buf + REC_WS, rec->ws);
    put_opt_id(buf + REC_CONN, rec->conn);
    for (int i = 0; i < 8; i++)
        buf[REC_CREATED + i] = (uint8_t)(rec->created >> (56 - 8 * i));
    buf[REC_HINTLEN] = (uint8_t)hl;
    memcpy(buf + REC_HINT, rec->hint, hl);
    memcpy(buf + REC_HINT + hl, rec->name, nl);
    if (put_raw(txn, st->keys, digest, KA_DIGEST_LEN, buf, REC_HINT + hl + nl) != KA_OK ||
        put_raw(txn, st->kids, rec->id, KA_ID_LEN, digest, KA_DIGEST_LEN) != KA_OK)
        return KA_FAIL;
    if (rec->type == KA_KEY_API)
        return idx_put(txn, st, IDX_API_OF_ORG, rec->org, rec->id);
    return idx_put(txn, st, IDX_WRITE_OF_CONN, rec->conn, rec->id);
}

ka_store_status ka_get_key_by_id(ka_store_txn *txn, const ka_store *st, const char *key_id,
                                 ka_key_rec *rec)
{
    MDB_val k = {KA_ID_LEN, (void *)key_id}, v;
    ka_store_status rc = get_result(mdb_get(TX(txn), st->kids, &k, &v));

    if (rc != KA_OK)
        return rc;
    if (v.mv_size != KA_DIGEST_LEN)
        return KA_FAIL;
    return ka_get_key(txn, st, v.mv_data, rec);
}

typedef struct {
    ka_store_txn *txn;
    ka_store *st;
} del_ctx;

ka_store_status ka_del_key(ka_store_txn *txn, ka_store *st, const char *key_id)
{
    MDB_val k = {KA_ID_LEN, (void *)key_id}, v;
    uint8_t digest[KA_DIGEST_LEN];
    ka_key_rec rec;
    ka_store_status rc = get_result(mdb_get(TX(txn), st->kids, &k, &v));

    if (rc != KA_OK)
        return rc;
    if (v.mv_size != KA_DIGEST_LEN)
        return KA_FAIL;
    memcpy(digest, v.mv_data, KA_DIGEST_LEN);
    if (ka_get_key(txn, st, digest, &rec) == KA_OK) {
        if (rec.type == KA_KEY_API)
            rc = idx_del(txn, st, IDX_API_OF_ORG, rec.org, rec.id);
        else
            rc = idx_del(txn, st, IDX_WRITE_OF_CONN, rec.conn, rec.id);
        if (rc != KA_OK)
            return KA_FAIL;
    }
    if (del_raw(txn, st->keys, digest, KA_DIGEST_LEN) == KA_FAIL)
        return KA_FAIL;
    return del_raw(txn, st->kids, key_id, KA_ID_LEN) == KA_FAIL ? KA_FAIL : KA_OK;
}

static int del_key_cb(const char *id, void *arg)
{
    del_ctx *c = arg;
    return ka_del_key(c->txn, c->st, id) == KA_FAIL;
}

ka_store_status ka_del_conn(ka_store_txn *txn, ka_store *st, const char *id)
{
    ka_entity e;
    del_ctx c = {txn, st};
    ka_store_status rc = ka_get_conn(txn, st, id, &e);

    if (rc != KA_OK)
        return rc;
    if (idx_each(txn, st, IDX_WRITE_OF_CONN, id, del_key_cb, &c) != KA_OK ||
        idx_del(txn, st, IDX_CONN_OF_WS, e.ws, id) != KA_OK)
        return KA_FAIL;
    return del_raw(txn, st->conns, id, KA_ID_LEN) == KA_FAIL ? KA_FAIL : KA_OK;
}

static int del_conn_cb(const char *id, void *arg)
{
    del_ctx *c = arg;
    return ka_del_conn(c->txn, c->st, id) == KA_FAIL;
}

/* API keys restricted to a workspace go with it: such a key could never authenticate again. */
static int del_ws_keys_cb(const char *key_id, void *arg)
{
    const char *const *a = arg;
    const del_ctx *c = (const del_ctx *)a[0];
    const char *ws = a[1];
    ka_key_rec rec;
    ka_store_status rc = ka_get_key_by_id(c->txn, c->st, key_id, &rec);

    if (rc == KA_FAIL)
        return 1;
    if (rc == KA_OK && strcmp(rec.ws, ws) == 0)
        return ka_del_key(c->txn, c->st, key_id) == KA_FAIL;
    return 0;
}

ka_store_status ka_del_ws(ka_store_txn *txn, ka_store *st, const char *id)
{
    ka_entity e;
    del_ctx c = {txn, st};
    const void *args[2];
    ka_store_status rc = ka_get_ws(txn, st, id, &e);

    if (rc != KA_OK)
        return rc;
    args[0] = &c;
    args[1] = e.id;
    if (idx_each(txn, st, IDX_CONN_OF_WS, id, del_conn_cb, &c) != KA_OK ||
        idx_each(txn, st, IDX_API_OF_ORG, e.org, del_ws_keys_cb, (void *)args) != KA_OK ||
        idx_del(txn, st, IDX_WS_OF_ORG, e.org, id) != KA_OK)
        return KA_FAIL;
    return del_raw(txn, st->wss, id, KA_ID_LEN) == KA_FAIL ? KA_FAIL : KA_OK;
}

static int del_ws_cb(const char *id, void *arg)
{
    del_ctx *c = arg;
    return ka_del_ws(c->txn, c->st, id) == KA_FAIL;
}

ka_store_status ka_del_org(ka_store_txn *txn, ka_store *st, const char *id)
{
    ka_entity e;
    del_ctx c = {txn, st};
    ka_store_status rc = ka_get_org(txn, st, id, &e);

    if (rc != KA_OK)
        return rc;
    if (idx_each(txn, st, IDX_WS_OF_ORG, id, del_ws_cb, &c) != KA_OK ||
        idx_each(txn, st, IDX_API_OF_ORG, id, del_key_cb, &c) != KA_OK)
        return KA_FAIL;
    return del_raw(txn, st->orgs, id, KA_ID_LEN) == KA_FAIL ? KA_FAIL : KA_OK;
}

/* ---- listing ---- */

ka_store_status ka_list_orgs(ka_store_txn *txn, const ka_store *st, ka_entity_cb cb, void *arg)
{
    MDB_cursor *cur;
    MDB_val k, v;
    ka_entity e;
    int rc, ret = KA_OK;

    if (mdb_cursor_open(TX(txn), st->orgs, &cur) != 0)
        return KA_FAIL;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size != KA_ID_LEN || v.mv_size < 1) {
            ret = KA_FAIL;
            break;
        }
        copy_id(e.id, k.mv_data);
        e.org[0] = e.ws[0] = '\0';
        e.enabled = ((const uint8_t *)v.mv_data)[0] & 1;
        e.conn_flags = 0;
        copy_name(e.name, (const char *)v.mv_data + 1, v.mv_size - 1);
        if (cb(&e, arg) != 0)
            break;
    }
    mdb_cursor_close(cur);
    return rc != 0 && rc != MDB_NOTFOUND ? KA_FAIL : ret;
}

/* Walks every record of a database of workspaces or connections. */
static ka_store_status list_table(ka_store_txn *txn, const ka_store *st, MDB_dbi dbi,
                                  ka_store_status (*get)(ka_store_txn *, const ka_store *,
                                                         const char *, ka_entity *),
                                  const char *org, const char *ws, ka_entity_cb cb, void *arg)
{
    MDB_cursor *cur;
    MDB_val k, v;
    ka_entity e;
    char id[KA_ID_LEN + 1];
    int rc, ret = KA_OK;

    if (mdb_cursor_open(TX(txn), dbi, &cur) != 0)
        return KA_FAIL;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size != KA_ID_LEN) {
            ret = KA_FAIL;
            break;
        }
        copy_id(id, k.mv_data);
        if (get(txn, st, id, &e) != KA_OK) {
            ret = KA_FAIL;
            break;
        }
        if (org && strcmp(e.org, org) != 0)
            continue;
        if (ws && strcmp(e.ws, ws) != 0)
            continue;
        if (cb(&e, arg) != 0)
            break;
    }
    mdb_cursor_close(cur);
    return rc != 0 && rc != MDB_NOTFOUND ? KA_FAIL : ret;
}

ka_store_status ka_list_ws(ka_store_txn *txn, const ka_store *st, const char *org, ka_entity_cb cb,
                           void *arg)
{
    return list_table(txn, st, st->wss, ka_get_ws, org, NULL, cb, arg);
}

ka_store_status ka_list_conns(ka_store_txn *txn, const ka_store *st, const char *ws,
                              ka_entity_cb cb, void *arg)
{
    return list_table(txn, st, st->conns, ka_get_conn, NULL, ws, cb, arg);
}

typedef struct {
    ka_store_txn *txn;
    const ka_store *st;
    ka_key_cb cb;
    void *arg;
    int stop;
    int failed;
} list_keys_ctx;

static int list_key_cb(const char *key_id, void *arg)
{
    list_keys_ctx *c = arg;
    ka_key_rec rec;

    if (c->stop)
        return 0;
    if (ka_get_key_by_id(c->txn, c->st, key_id, &rec) != KA_OK)
        return 1;
    c->stop = c->cb(&rec, c->arg) != 0;
    return 0;
}

static int list_org_keys_cb(const ka_entity *e, void *arg)
{
    list_keys_ctx *c = arg;

    if (idx_each(c->txn, c->st, IDX_API_OF_ORG, e->id, list_key_cb, c) != KA_OK)
        c->failed = 1;
    return c->failed || c->stop;
}

ka_store_status ka_list_api_keys(ka_store_txn *txn, const ka_store *st, const char *org,
                                 ka_key_cb cb, void *arg)
{
    list_keys_ctx c = {txn, st, cb, arg, 0, 0};

    if (org)
        return idx_each(txn, st, IDX_API_OF_ORG, org, list_key_cb, &c);
    if (ka_list_orgs(txn, st, list_org_keys_cb, &c) != KA_OK || c.failed)
        return KA_FAIL;
    return KA_OK;
}

ka_store_status ka_list_write_keys(ka_store_txn *txn, const ka_store *st, const char *conn,
                                   ka_key_cb cb, void *arg)
{
    list_keys_ctx c = {txn, st, cb, arg, 0, 0};
    return idx_each(txn, st, IDX_WRITE_OF_CONN, conn, list_key_cb, &c);
}

/* ---- mirrored stores (krenalis-keys mirror, docs/mirror.md) ---- */

#define META_MIRROR_SOURCE "mirror-source"
#define META_MIRROR_CONNINFO "mirror-conninfo"
#define META_MIRROR_VERSION "mirror-version"

static ka_store_status meta_get_text(ka_store_txn *txn, const ka_store *st, const char *key,
                                     char *out, size_t size)
{
    MDB_val k = {strlen(key), (void *)key}, v;
    ka_store_status rc = get_result(mdb_get(TX(txn), st->meta, &k, &v));

    if (rc != KA_OK)
        return rc;
    if (v.mv_size >= size)
        return KA_FAIL;
    memcpy(out, v.mv_data, v.mv_size);
    out[v.mv_size] = '\0';
    return KA_OK;
}

static ka_store_status meta_put(ka_store_txn *txn, ka_store *st, const char *key, const void *val,
                                size_t len)
{
    return put_raw(txn, st->meta, key, strlen(key), val, len);
}

ka_store_status ka_mirror_meta_get(ka_store_txn *txn, const ka_store *st, ka_mirror_meta *m)
{
    MDB_val k = {sizeof(META_MIRROR_VERSION) - 1, META_MIRROR_VERSION}, v;
    ka_store_status rc = meta_get_text(txn, st, META_MIRROR_SOURCE, m->source, sizeof(m->source));

    if (rc != KA_OK)
        return rc;
    if (meta_get_text(txn, st, META_MIRROR_CONNINFO, m->conninfo, sizeof(m->conninfo)) != KA_OK ||
        mdb_get(TX(txn), st->meta, &k, &v) != 0 || v.mv_size != 8)
        return KA_FAIL;
    m->version = 0;
    for (int i = 0; i < 8; i++)
        m->version = m->version << 8 | ((const uint8_t *)v.mv_data)[i];
    return KA_OK;
}

ka_store_status ka_mirror_version_put(ka_store_txn *txn, ka_store *st, uint64_t version)
{
    uint8_t buf[8];

    for (int i = 0; i < 8; i++)
        buf[i] = (uint8_t)(version >> (56 - 8 * i));
    return meta_put(txn, st, META_MIRROR_VERSION, buf, sizeof(buf));
}

ka_store_status ka_mirror_meta_put(ka_store_txn *txn, ka_store *st, const ka_mirror_meta *m)
{
    if (m->source[0] == '\0' ||
        meta_put(txn, st, META_MIRROR_SOURCE, m->source,
                 strnlen(m->source, KA_MIRROR_SOURCE_MAX)) != KA_OK ||
        meta_put(txn, st, META_MIRROR_CONNINFO, m->conninfo,
                 strnlen(m->conninfo, KA_MIRROR_CONNINFO_MAX)) != KA_OK)
        return KA_FAIL;
    return ka_mirror_version_put(txn, st, m->version);
}

/* KA_OK and m filled, KA_NOTFOUND (not a mirror) or KA_FAIL, in a read transaction of its own. */
static ka_store_status mirror_meta_read(ka_store *st, ka_mirror_meta *m)
{
    MDB_txn *txn;
    ka_store_status rc;

    if (mdb_txn_begin(st->env, NULL, MDB_RDONLY, &txn) != 0)
        return KA_FAIL;
    rc = ka_mirror_meta_get((ka_store_txn *)txn, st, m);
    mdb_txn_abort(txn);
    return rc;
}

int ka_store_is_mirror(ka_store *st)
{
    ka_mirror_meta m;
    return mirror_meta_read(st, &m) == KA_OK;
}

ka_store_status ka_store_refuse_mirror(ka_store *st, char *err, size_t errlen)
{
    ka_mirror_meta m;
    ka_store_status rc = mirror_meta_read(st, &m);

    if (rc == KA_NOTFOUND)
        return KA_OK;
    if (rc == KA_OK)
        snprintf(err, errlen,
                 "key store %s is a mirror of the Krenalis database '%s' (%s): change keys in "
                 "Krenalis, 'krenalis-keys mirror' brings them here",
                 st->dir, m.conninfo, m.source);
    else
        snprintf(err, errlen, "key store %s: its mirror record cannot be read", st->dir);
    return KA_FAIL;
}

/* Format 1 had no flags byte in a connection record: insert a zero one (a source connection
 * with a strategy, what krenalis-keys created). The records are read first and written after:
 * a put that changes a record's size is a delete and an insert, which a cursor walking the
 * same database does not survive (it skipped and repeated records of large stores). */
static ka_store_status upgrade_conns(MDB_txn *txn, ka_store *st)
{
    typedef struct {
        char id[KA_ID_LEN];
        size_t len;
        char val[CONN_NAME + KA_NAME_MAX];
    } conn_rec;
    conn_rec *recs = NULL;
    size_t n = 0, cap = 0;
    MDB_cursor *cur;
    MDB_val k, v;
    int rc;

    if (mdb_cursor_open(txn, st->conns, &cur) != 0)
        return KA_FAIL;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        size_t nl = v.mv_size - 2 * KA_ID_LEN;
        conn_rec *r;

        if (k.mv_size != KA_ID_LEN || v.mv_size < 2 * KA_ID_LEN || nl > KA_NAME_MAX) {
            rc = MDB_CORRUPTED;
            break;
        }
        if (n == cap) {
            size_t ncap = cap ? 2 * cap : 1024;
            void *p = realloc(recs, ncap * sizeof(*recs));
            if (p == NULL) {
                rc = ENOMEM;
                break;
            }
            recs = p;
            cap = ncap;
        }
        r = &recs[n++];
        memcpy(r->id, k.mv_data, KA_ID_LEN);
        memcpy(r->val, v.mv_data, 2 * KA_ID_LEN);
        r->val[CONN_FLAGS] = 0;
        memcpy(r->val + CONN_NAME, (const char *)v.mv_data + 2 * KA_ID_LEN, nl);
        r->len = CONN_NAME + nl;
    }
    mdb_cursor_close(cur);
    if (rc == MDB_NOTFOUND)
        rc = 0;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        MDB_val nk = {KA_ID_LEN, recs[i].id}, nv = {recs[i].len, recs[i].val};
        rc = mdb_put(txn, st->conns, &nk, &nv, 0);
    }
    free(recs);
    return rc == 0 ? KA_OK : KA_FAIL;
}

ka_store_status ka_store_upgrade(const char *dir, const char *secret_path, char *err, size_t errlen)
{
    uint8_t secret[KA_SECRET_LEN];
    char spath[4200];
    MDB_val k = {6, "format"}, v = {strlen(KA_STORE_FORMAT), KA_STORE_FORMAT};
    ka_store *st;
    MDB_txn *txn;
    int rc;

    default_secret(dir, secret_path, spath, sizeof(spath));
    if (ka_secret_read(spath, secret, err, errlen) != NULL)
        return KA_FAIL;
    rc = open_secret_format(dir, secret, spath, 0, KA_STORE_FORMAT_1, &st, err, errlen);
    OPENSSL_cleanse(secret, sizeof(secret));
    if (rc != KA_OK)
        return KA_FAIL;
    rc = mdb_txn_begin(st->env, NULL, 0, &txn);
    if (rc == 0) {
        if (upgrade_conns(txn, st) != KA_OK || mdb_put(txn, st->meta, &k, &v, 0) != 0) {
            mdb_txn_abort(txn);
            rc = MDB_CORRUPTED;
        } else
            rc = mdb_txn_commit(txn);
    }
    if (rc != 0)
        snprintf(err, errlen, "cannot upgrade key store %s: %s", dir, mdb_strerror(rc));
    ka_store_close(st);
    return rc == 0 ? KA_OK : KA_FAIL;
}

ka_store_status ka_store_set_sync(ka_store *st, ka_sync_mode mode)
{
    int rc = mdb_env_set_flags(st->env, MDB_NOSYNC | MDB_NOMETASYNC, 0);

    if (rc == 0 && mode != KA_SYNC_FULL)
        rc = mdb_env_set_flags(st->env, mode == KA_SYNC_NONE ? MDB_NOSYNC : MDB_NOMETASYNC, 1);
    return rc == 0 ? KA_OK : KA_FAIL;
}

ka_store_status ka_store_sync(ka_store *st)
{
    return mdb_env_sync(st->env, 1) == 0 ? KA_OK : KA_FAIL;
}

ka_store_status ka_store_file_id(const ka_store *st, ka_store_file *id)
{
    struct statx sx;
    int fd;

    memset(id, 0, sizeof(*id));
    /* The file LMDB maps, not whatever the path names now: it may have been replaced since. */
    if (mdb_env_get_fd(st->env, &fd) != 0 ||
        statx(fd, "", AT_EMPTY_PATH, STATX_INO | STATX_BTIME, &sx) != 0 ||
        !(sx.stx_mask & STATX_INO))
        return KA_FAIL;
    id->dev = (uint64_t)makedev(sx.stx_dev_major, sx.stx_dev_minor);
    id->ino = sx.stx_ino;
    if (sx.stx_mask & STATX_BTIME)
        id->born = (uint64_t)sx.stx_btime.tv_sec * 1000000000u + sx.stx_btime.tv_nsec;
    return KA_OK;
}
