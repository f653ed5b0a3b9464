/* The LMDB key store: layout documented in docs/keystore.md. */
#include "keystore.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
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
    MDB_dbi meta, orgs, wss, conns, keys, kids;
    MDB_dbi children; /* format 3: the index, tag+ID -> IDs (MDB_DUPSORT | MDB_DUPFIXED) */
    MDB_dbi oldidx;   /* formats 1 and 2 (read by ka_store_upgrade only): "index" */
    int format;       /* 1, 2, 3 (KA_STORE_FORMAT), or 0: none or unknown */
    int readonly;
    ka_hmac_key hmac;
    unsigned psize; /* LMDB page size of data.mdb */
    dev_t dir_dev;  /* the directory the environment's files were opened in */
    ino_t dir_ino;
    char dir[4096];
};

/* A ka_store_txn is an MDB_txn: the type only keeps LMDB out of the header. */
#define TX(t) ((MDB_txn *)(t))

/* Offsets in a key record (value of the "keys" database): what a decision reads, and nothing
 * else. Its length tells what follows the organization: nothing (an unrestricted API key), a
 * workspace (a restricted API key), a workspace and a connection (a write key). */
#define REC_TYPE 0
#define REC_ID 1
#define REC_ORG (REC_ID + KA_ID_LEN)
#define REC_WS (REC_ORG + KA_ID_LEN)
#define REC_CONN (REC_WS + KA_ID_LEN)
#define REC_LEN_API REC_WS                   /* 25 */
#define REC_LEN_API_WS (REC_WS + KA_ID_LEN)  /* 37 */
#define REC_LEN_WRITE (REC_CONN + KA_ID_LEN) /* 49 */

/* Offsets in a key-ids record (key ID -> the rest of the key). */
#define KID_DIGEST 0
#define KID_CREATED KA_DIGEST_LEN
#define KID_HINTLEN (KID_CREATED + 8)
#define KID_HINT (KID_HINTLEN + 1)

/* Offsets in a format 1 and 2 key record (read by ka_store_upgrade only). */
#define OLD_CREATED (REC_CONN + KA_ID_LEN) /* then a hint length, the hint, the name */

/* Index entries ("children"): key a tag byte and an ID, values the IDs under it (sorted
 * duplicates of 12 bytes). Formats 1 and 2 kept tag+ID+ID as the key of "index". */
#define IDX_WS_OF_ORG 'S'
#define IDX_CONN_OF_WS 'C'
#define IDX_API_OF_ORG 'A'
#define IDX_WRITE_OF_CONN 'W'
#define IDX_KEY_LEN (1 + KA_ID_LEN)
#define IDX_LEN (1 + 2 * KA_ID_LEN)
#define CHILDREN_FLAGS (MDB_DUPSORT | MDB_DUPFIXED)

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

static int format_is(const MDB_val *v, const char *format)
{
    return v->mv_size == strlen(format) && memcmp(v->mv_data, format, v->mv_size) == 0;
}

/* The format a meta record names: 1, 2, 3, or 0 (absent or another). */
static int format_number(int rc, const MDB_val *v)
{
    if (rc != 0)
        return 0;
    if (format_is(v, KA_STORE_FORMAT))
        return 3;
    if (format_is(v, KA_STORE_FORMAT_2))
        return 2;
    return format_is(v, KA_STORE_FORMAT_1) ? 1 : 0;
}

/* Opens the databases of the store's format (st->format, read here; a new store is of the
 * current one). Only a writer of the current format creates a missing database. A store of
 * another format gets its meta database only (check_format refuses it), unless old: an
 * upgrade reads formats 1 and 2. */
static ka_store_status open_dbis(ka_store *st, int readonly, int old, char *err, size_t errlen)
{
    MDB_txn *txn = NULL;
    unsigned flags = readonly ? 0 : MDB_CREATE;
    MDB_val fk = {6, "format"}, fv;
    int rc = mdb_txn_begin(st->env, NULL, readonly ? MDB_RDONLY : 0, &txn);

    if (rc == 0)
        rc = mdb_dbi_open(txn, "meta", flags, &st->meta);
    if (rc == 0) {
        int frc = mdb_get(txn, st->meta, &fk, &fv);
        st->format = frc == MDB_NOTFOUND ? 3 : format_number(frc, &fv);
        if (frc == 0 && st->format != 3)
            flags = 0;
        if (st->format != 3 && !(old && st->format != 0))
            return mdb_txn_commit(txn) == 0 ? KA_OK : KA_FAIL;
    }
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
    if (rc == 0 && st->format == 3)
        rc = mdb_dbi_open(txn, "children", flags | CHILDREN_FLAGS, &st->children);
    else if (rc == 0)
        rc = mdb_dbi_open(txn, "index", 0, &st->oldidx);
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

/* old: the caller reads formats 1 and 2 too (to upgrade them), else only the current one. */
static ka_store_status check_format(ka_store *st, int old, char *err, size_t errlen)
{
    MDB_txn *txn;
    MDB_val k = {4 + 2, "format"}, v;
    int rc = mdb_txn_begin(st->env, NULL, MDB_RDONLY, &txn);

    if (rc != 0) {
        snprintf(err, errlen, "key store %s: %s", st->dir, mdb_strerror(rc));
        return KA_FAIL;
    }
    rc = mdb_get(TX(txn), st->meta, &k, &v);
    if (rc != 0 || !(format_number(rc, &v) == 3 || (old && format_number(rc, &v) != 0))) {
        if (rc == 0 && format_number(rc, &v) != 0)
            snprintf(err, errlen,
                     "key store %s has format '%.*s'; this build reads '%s': upgrade it with "
                     "'krenalis-keys --store %s upgrade'",
                     st->dir, (int)v.mv_size, (const char *)v.mv_data, KA_STORE_FORMAT, st->dir);
        else if (rc == 0 && old)
            snprintf(err, errlen,
                     "key store %s has format '%.*s'; this build upgrades '%s' and '%s'", st->dir,
                     (int)(v.mv_size > 64 ? 64 : v.mv_size), (const char *)v.mv_data,
                     KA_STORE_FORMAT_1, KA_STORE_FORMAT_2);
        else if (rc == 0)
            snprintf(err, errlen, "key store %s has format '%.*s'; this build reads '%s'", st->dir,
                     (int)(v.mv_size > 64 ? 64 : v.mv_size), (const char *)v.mv_data,
                     KA_STORE_FORMAT);
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
static int env_setup_once(ka_store *st, int readonly, const char *what, char *err, size_t errlen)
{
    const char *dir = st->dir;
    int rc = mdb_env_create(&st->env);

    st->readonly = readonly;
    if (rc == 0)
        rc = mdb_env_set_maxdbs(st->env, 8);
    if (rc == 0)
        rc = mdb_env_set_maxreaders(st->env, KA_STORE_MAXREADERS);
    if (rc == 0 && !readonly)
        rc = mdb_env_set_mapsize(st->env, KA_STORE_DEFAULT_MAPSIZE);
    /* NOTLS: a read transaction is not tied to a thread (event MPM threads, reader slots). */
    if (rc == 0)
        rc = mdb_env_open(st->env, dir, readonly ? (MDB_RDONLY | MDB_NOTLS) : MDB_NOTLS, 0640);
    if (rc != 0)
        snprintf(err, errlen, "cannot %s key store %s: %s", what, dir, mdb_strerror(rc));
    return rc;
}

/* mdb_env_open opens lock.mdb and data.mdb (twice for a writer) by path, one after the other:
 * a rebuild swapping another directory in meanwhile would leave the environment with the lock
 * of one store and the data of another, and its writers unserialized with the new store's.
 * Opened again until the directory is the same before and after. */
static int env_setup(ka_store *st, int readonly, const char *what, char *err, size_t errlen)
{
    for (int tries = 0;; tries++) {
        struct stat a, b;
        int rc, same;

        if (stat(st->dir, &a) != 0)
            memset(&a, 0, sizeof(a));
        if ((rc = env_setup_once(st, readonly, what, err, errlen)) != 0)
            return rc;
        same = stat(st->dir, &b) == 0 && a.st_ino == b.st_ino && a.st_dev == b.st_dev;
        if (same || tries == 16) {
            st->dir_dev = same ? b.st_dev : 0;
            st->dir_ino = same ? b.st_ino : 0;
            return 0;
        }
        mdb_env_close(st->env);
        st->env = NULL;
    }
}

static ka_store *env_open(const char *dir, const uint8_t secret[KA_SECRET_LEN], int readonly,
                          const char *what, char *err, size_t errlen)
{
    ka_store *st = ka_secure_alloc(sizeof(*st));

    if (st == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    snprintf(st->dir, sizeof(st->dir), "%s", dir);
    ka_hmac_init(&st->hmac, secret);
    if (env_setup(st, readonly, what, err, errlen) != 0) {
        ka_store_close(st);
        return NULL;
    }
    return st;
}

/* The checks of an open environment: whole file, databases, format (old: 1 and 2 too), secret. */
static ka_store_status env_check(ka_store *st, int old, char *err, size_t errlen)
{
    ka_store_status rc = check_file_size(st, err, errlen);

    if (rc != KA_OK)
        return rc;
    /* Slots of dead readers must go before this open needs one of its own. */
    mdb_reader_check(st->env, NULL);
    rc = open_dbis(st, st->readonly, old, err, errlen);
    return rc == KA_OK ? check_format(st, old, err, errlen) : rc;
}

/* Opens st's environment again (its directory now holds another store: a rebuild). */
static ka_store_status env_reopen(ka_store *st, char *err, size_t errlen)
{
    if (st->env)
        mdb_env_close(st->env);
    st->env = NULL;
    if (env_setup(st, st->readonly, "open", err, errlen) != 0)
        return KA_FAIL;
    return env_check(st, 0, err, errlen);
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

/* Opens a store of the current format (old: or of format 1 or 2, to upgrade it). */
static ka_store_status open_secret_format(const char *dir, const uint8_t secret[KA_SECRET_LEN],
                                          const char *secret_path, int readonly, int old,
                                          ka_store **out, char *err, size_t errlen)
{
    ka_store *st;
    ka_store_status rc;

    *out = NULL;
    if (check_dir(dir, err, errlen) != KA_OK)
        return KA_FAIL;
    if ((st = env_open(dir, secret, readonly, "open", err, errlen)) == NULL)
        return KA_FAIL;
    rc = env_check(st, old, err, errlen);
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
    return open_secret_format(dir, secret, secret_path, readonly, 0, out, err, errlen);
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

    if (mkdir(dir, 0755) == 0) {
        /* 0755 whatever the umask: Apache's user (init --owner) must reach its files. */
        if (chmod(dir, 0755) != 0) {
            snprintf(err, errlen, "cannot make %s mode 0755: %s", dir, strerror(errno));
            return KA_FAIL;
        }
    } else if (errno != EEXIST) {
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
    if (open_dbis(st, 0, 0, err, errlen) != KA_OK) {
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

/* 1 when DIR/data.mdb is no longer the file st has open, or DIR no longer the directory it
 * was opened in (a rebuild swapped another in). */
static int replaced(const ka_store *st)
{
    char path[4200];
    struct stat a, b;
    int fd;

    if (stat(st->dir, &b) == 0 && (b.st_ino != st->dir_ino || b.st_dev != st->dir_dev))
        return 1;
    snprintf(path, sizeof(path), "%s/data.mdb", st->dir);
    if (mdb_env_get_fd(st->env, &fd) != 0 || fstat(fd, &a) != 0 || stat(path, &b) != 0)
        return 0;
    return a.st_ino != b.st_ino || a.st_dev != b.st_dev;
}

ka_store_status ka_store_write_begin(ka_store *st, ka_store_txn **txn, char *err, size_t errlen)
{
    MDB_txn *t = NULL;
    int rc;

    for (;;) {
        rc = mdb_txn_begin(st->env, NULL, 0, &t);
        if (rc == MDB_MAP_RESIZED) {
            /* A writer is alone on the map: adopt another process's growth, then begin. */
            mdb_env_set_mapsize(st->env, 0);
            rc = mdb_txn_begin(st->env, NULL, 0, &t);
        }
        /* A rebuild held the write lock of the file it replaced: write to the new one. The
         * new one may have been replaced too while this waited for its lock: look again. */
        if (rc != 0 || !replaced(st))
            break;
        mdb_txn_abort(t);
        t = NULL;
        if (env_reopen(st, err, errlen) != KA_OK)
            return KA_FAIL;
    }
    *txn = rc == 0 ? (ka_store_txn *)t : NULL;
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

/* Decodes a key record; KA_FAIL if it is not one this build wrote (a type with a length that
 * is not its own). created, hint and name are left empty: they are in key-ids. */
static ka_store_status decode_key(const MDB_val *v, ka_key_rec *rec)
{
    const uint8_t *p = v->mv_data;

    if (v->mv_size == REC_LEN_API || v->mv_size == REC_LEN_API_WS) {
        if (p[REC_TYPE] != 'A')
            return KA_FAIL;
        rec->type = KA_KEY_API;
    } else if (v->mv_size == REC_LEN_WRITE) {
        if (p[REC_TYPE] != 'W')
            return KA_FAIL;
        rec->type = KA_KEY_WRITE;
    } else
        return KA_FAIL;
    copy_id(rec->id, p + REC_ID);
    copy_id(rec->org, p + REC_ORG);
    if (v->mv_size >= REC_LEN_API_WS)
        copy_id(rec->ws, p + REC_WS);
    else
        rec->ws[0] = '\0';
    if (v->mv_size == REC_LEN_WRITE)
        copy_id(rec->conn, p + REC_CONN);
    else
        rec->conn[0] = '\0';
    rec->created = 0;
    rec->hint[0] = rec->name[0] = '\0';
    return KA_OK;
}

/* Fills created, hint and name from the tail of a record that holds them at offset at: 8 bytes
 * of time, a hint length, the hint, the name to the end (key-ids; formats 1 and 2's key
 * record). KA_FAIL if they do not fit the record. */
static ka_store_status decode_tail(const uint8_t *p, size_t size, size_t at, ka_key_rec *rec)
{
    size_t hint = at + 9, hl;

    if (size < hint)
        return KA_FAIL;
    hl = p[at + 8];
    if (hl > KA_HINT_MAX || hint + hl > size || size - hint - hl > KA_NAME_MAX)
        return KA_FAIL;
    rec->created = 0;
    for (int i = 0; i < 8; i++)
        rec->created = rec->created << 8 | p[at + i];
    memcpy(rec->hint, p + hint, hl);
    rec->hint[hl] = '\0';
    copy_name(rec->name, p + hint + hl, size - hint - hl);
    return KA_OK;
}

/* Fills created, hint and name from a key-ids record; KA_FAIL if it is not one. */
static ka_store_status decode_kid(const MDB_val *v, ka_key_rec *rec)
{
    return decode_tail(v->mv_data, v->mv_size, KID_CREATED, rec);
}

/* Encodes the two records of a key: the key record (returns its length) and, when kid is not
 * NULL, the key-ids record (its length in *kidlen). */
static size_t encode_key(const uint8_t digest[KA_DIGEST_LEN], const ka_key_rec *rec,
                         uint8_t buf[REC_LEN_WRITE], uint8_t *kid, size_t *kidlen)
{
    size_t len = REC_LEN_API;

    buf[REC_TYPE] = rec->type == KA_KEY_API ? 'A' : 'W';
    memcpy(buf + REC_ID, rec->id, KA_ID_LEN);
    memcpy(buf + REC_ORG, rec->org, KA_ID_LEN);
    if (rec->type == KA_KEY_WRITE) {
        memcpy(buf + REC_WS, rec->ws, KA_ID_LEN);
        memcpy(buf + REC_CONN, rec->conn, KA_ID_LEN);
        len = REC_LEN_WRITE;
    } else if (rec->ws[0] != '\0') {
        memcpy(buf + REC_WS, rec->ws, KA_ID_LEN);
        len = REC_LEN_API_WS;
    }
    if (kid != NULL) {
        size_t hl = strnlen(rec->hint, KA_HINT_MAX), nl = strnlen(rec->name, KA_NAME_MAX);
        memcpy(kid + KID_DIGEST, digest, KA_DIGEST_LEN);
        for (int i = 0; i < 8; i++)
            kid[KID_CREATED + i] = (uint8_t)(rec->created >> (56 - 8 * i));
        kid[KID_HINTLEN] = (uint8_t)hl;
        memcpy(kid + KID_HINT, rec->hint, hl);
        memcpy(kid + KID_HINT + hl, rec->name, nl);
        *kidlen = KID_HINT + hl + nl;
    }
    return len;
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
    char key[IDX_KEY_LEN];
    MDB_val k = {IDX_KEY_LEN, key}, v = {KA_ID_LEN, (void *)b};

    key[0] = tag;
    memcpy(key + 1, a, KA_ID_LEN);
    return mdb_put(TX(txn), st->children, &k, &v, 0) == 0 ? KA_OK : KA_FAIL;
}

static ka_store_status idx_del(ka_store_txn *txn, ka_store *st, char tag, const char *a,
                               const char *b)
{
    char key[IDX_KEY_LEN];
    MDB_val k = {IDX_KEY_LEN, key}, v = {KA_ID_LEN, (void *)b};
    int rc;

    key[0] = tag;
    memcpy(key + 1, a, KA_ID_LEN);
    rc = mdb_del(TX(txn), st->children, &k, &v);
    return rc == 0 || rc == MDB_NOTFOUND ? KA_OK : KA_FAIL;
}

typedef int (*idx_cb)(const char *second, void *arg);

/* Calls cb with every ID under tag+first. Collects them first so that the callback may delete
 * entries. */
static ka_store_status idx_each(ka_store_txn *txn, const ka_store *st, char tag, const char *first,
                                idx_cb cb, void *arg)
{
    char key[IDX_KEY_LEN];
    MDB_cursor *cur;
    MDB_val k = {IDX_KEY_LEN, key}, v;
    char(*ids)[KA_ID_LEN + 1] = NULL;
    size_t n = 0, cap = 0;
    int rc, ret = KA_OK;

    key[0] = tag;
    memcpy(key + 1, first, KA_ID_LEN);
    if (mdb_cursor_open(TX(txn), st->children, &cur) != 0)
        return KA_FAIL;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_KEY); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT_DUP)) {
        if (v.mv_size != KA_ID_LEN) {
            ret = KA_FAIL;
            break;
        }
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
        copy_id(ids[n++], v.mv_data);
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

ka_store_status ka_put_key(ka_store_txn *txn, ka_store *st, const uint8_t digest[KA_DIGEST_LEN],
                           const ka_key_rec *rec)
{
    uint8_t buf[REC_LEN_WRITE], kid[KID_HINT + KA_HINT_MAX + KA_NAME_MAX];
    size_t kidlen, len = encode_key(digest, rec, buf, kid, &kidlen);

    if (put_raw(txn, st->keys, digest, KA_DIGEST_LEN, buf, len) != KA_OK ||
        put_raw(txn, st->kids, rec->id, KA_ID_LEN, kid, kidlen) != KA_OK)
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
    if (v.mv_size < KID_HINT)
        return KA_FAIL;
    rc = ka_get_key(txn, st, (const uint8_t *)v.mv_data + KID_DIGEST, rec);
    if (rc == KA_NOTFOUND)
        return KA_FAIL; /* a key ID whose key is gone: not a store this build wrote */
    return rc == KA_OK ? decode_kid(&v, rec) : rc;
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
    if (v.mv_size < KID_HINT)
        return KA_FAIL;
    memcpy(digest, (const uint8_t *)v.mv_data + KID_DIGEST, KA_DIGEST_LEN);
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

/* ---- rebuilds (docs/keystore.md, "Dense stores") ----
 * Every database is written in key order with MDB_APPEND into a fresh environment: its pages
 * are full and none is free. The source is read through the old store's write transaction,
 * which keeps every other writer out until the new store is in place. */

#define REBUILD_TXN 1000000 /* records per write transaction of a rebuild */
#define REBUILD_DIV 64      /* ka_bulk_add rebuilds when it adds >= 1/64 of the keys held */
#define REBUILD_SUFFIX ".rebuild-new"
#define BULK_KEY_BYTES 600 /* generous store space one bulk key takes, all databases */

enum { DB_META, DB_ORGS, DB_WSS, DB_CONNS, DB_KEYS, DB_KIDS, DB_CHILDREN, DB_N };
static const char *const db_names[DB_N] = {"meta", "organizations", "workspaces", "connections",
                                           "keys", "key-ids",       "children"};

/* New records of a bulk load, in the orders of their databases. */
typedef struct {
    const ka_bulk_key *keys;
    size_t n;
    const uint32_t *by_digest, *by_id, *by_conn; /* by_conn: write keys only */
    const uint8_t *children;                     /* sorted IDX_LEN entries */
    size_t nchildren;
    const ka_key_rec *tmpl;
    const ka_entity *ctmpl;
} bulk_set;

typedef struct {
    ka_store *st;
    MDB_txn *src;
    const bulk_set *set; /* NULL: nothing to add */
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi[DB_N];
    MDB_cursor *cur[DB_N];
    size_t in_txn;
    uint8_t last_idx[IDX_KEY_LEN];
    int have_idx;
    int rc;          /* the first LMDB error */
    const char *why; /* or what else went wrong */
} rebuild;

static int rb_begin(rebuild *rb)
{
    int rc = mdb_txn_begin(rb->env, NULL, 0, &rb->txn);

    for (int i = 0; rc == 0 && i < DB_N; i++)
        rc = mdb_cursor_open(rb->txn, rb->dbi[i], &rb->cur[i]);
    rb->in_txn = 0;
    return rc;
}

/* Appends k,v to database db (children: k is the IDX_LEN entry, v ignored). */
static int rb_put(rebuild *rb, int db, const MDB_val *k, const MDB_val *v)
{
    MDB_val key = *k, val = *v;
    unsigned flags = MDB_APPEND;
    int rc;

    if (rb->rc || rb->why)
        return -1;
    if (rb->in_txn >= REBUILD_TXN) {
        rc = mdb_txn_commit(rb->txn); /* closes the cursors */
        rb->txn = NULL;
        if (rc != 0 || (rc = rb_begin(rb)) != 0) {
            rb->rc = rc;
            return -1;
        }
    }
    if (db == DB_CHILDREN) {
        if (k->mv_size != IDX_LEN) {
            rb->why = "an index entry of an unexpected length";
            return -1;
        }
        key.mv_size = IDX_KEY_LEN;
        val.mv_size = KA_ID_LEN;
        val.mv_data = (uint8_t *)k->mv_data + IDX_KEY_LEN;
        if (rb->have_idx && memcmp(rb->last_idx, k->mv_data, IDX_KEY_LEN) == 0)
            flags = MDB_APPENDDUP;
        memcpy(rb->last_idx, k->mv_data, IDX_KEY_LEN);
        rb->have_idx = 1;
    }
    rc = mdb_cursor_put(rb->cur[db], &key, &val, flags);
    rb->in_txn++;
    if (rc == MDB_KEYEXIST)
        rb->why = "two records with one key (a key ID or digest taken twice)";
    else if (rc != 0)
        rb->rc = rc;
    return rc == 0 ? 0 : -1;
}

/* Converts a source record into the current format: 0, or -1 (rb->why set). */
typedef int (*rb_conv)(rebuild *rb, MDB_val *k, MDB_val *v, uint8_t *buf);
/* The j-th new record of a database, in key order. */
typedef void (*rb_gen)(const rebuild *rb, size_t j, MDB_val *k, MDB_val *v, uint8_t *buf);

static int cmp_val(const MDB_val *a, const MDB_val *b)
{
    size_t n = a->mv_size < b->mv_size ? a->mv_size : b->mv_size;
    int c = memcmp(a->mv_data, b->mv_data, n);
    return c ? c : (a->mv_size > b->mv_size) - (a->mv_size < b->mv_size);
}

/* Writes database db: the records of from (converted by conv when not NULL) merged with nnew
 * records of gen. A source key equal to a new one is refused. */
static void rb_merge(rebuild *rb, MDB_dbi from, int db, rb_conv conv, size_t nnew, rb_gen gen)
{
    uint8_t sbuf[IDX_LEN + KID_HINT + KA_HINT_MAX + KA_NAME_MAX + 64], nbuf[sizeof(sbuf)];
    MDB_cursor *c;
    MDB_val sk, sv, nk, nv;
    size_t j = 0;
    int rc;

    if (rb->rc || rb->why)
        return;
    if ((rb->rc = mdb_cursor_open(rb->src, from, &c)) != 0)
        return;
    rc = mdb_cursor_get(c, &sk, &sv, MDB_FIRST);
    if (rc == 0 && conv && conv(rb, &sk, &sv, sbuf) != 0)
        rc = -1;
    if (j < nnew)
        gen(rb, j, &nk, &nv, nbuf);
    while (!rb->rc && !rb->why && (rc == 0 || (rc == MDB_NOTFOUND && j < nnew))) {
        int cmp = rc != 0 ? 1 : j >= nnew ? -1 : cmp_val(&sk, &nk);
        if (cmp == 0) {
            rb->why = "a new key ID or digest is taken already";
            break;
        }
        if (cmp > 0) {
            rb_put(rb, db, &nk, &nv);
            if (++j < nnew)
                gen(rb, j, &nk, &nv, nbuf);
        } else {
            rb_put(rb, db, &sk, &sv);
            rc = mdb_cursor_get(c, &sk, &sv, MDB_NEXT);
            if (rc == 0 && conv && conv(rb, &sk, &sv, sbuf) != 0)
                rc = -1;
        }
    }
    mdb_cursor_close(c);
    if (rc != 0 && rc != MDB_NOTFOUND && !rb->rc && !rb->why)
        rb->rc = rc;
}

/* meta: the current format. */
static int conv_meta(rebuild *rb, MDB_val *k, MDB_val *v, uint8_t *buf)
{
    (void)rb;
    (void)buf;
    if (k->mv_size == 6 && memcmp(k->mv_data, "format", 6) == 0) {
        v->mv_size = strlen(KA_STORE_FORMAT);
        v->mv_data = KA_STORE_FORMAT;
    }
    return 0;
}

/* Format 1 had no flags byte in a connection record: a zero one (a source connection with a
 * strategy, what krenalis-keys created). */
static int conv_conn(rebuild *rb, MDB_val *k, MDB_val *v, uint8_t *buf)
{
    size_t nl = v->mv_size - 2 * KA_ID_LEN;

    if (rb->st->format != 1)
        return 0;
    if (k->mv_size != KA_ID_LEN || v->mv_size < 2 * KA_ID_LEN || nl > KA_NAME_MAX) {
        rb->why = "a connection record of an unexpected length";
        return -1;
    }
    memcpy(buf, v->mv_data, 2 * KA_ID_LEN);
    buf[CONN_FLAGS] = 0;
    memcpy(buf + CONN_NAME, (const uint8_t *)v->mv_data + 2 * KA_ID_LEN, nl);
    v->mv_size = CONN_NAME + nl;
    v->mv_data = buf;
    return 0;
}

/* A format 1 or 2 key record as a ka_key_rec. */
static int old_key(const MDB_val *v, ka_key_rec *rec)
{
    const uint8_t *p = v->mv_data;

    if (v->mv_size < OLD_CREATED || (p[REC_TYPE] != 'A' && p[REC_TYPE] != 'W') ||
        decode_tail(p, v->mv_size, OLD_CREATED, rec) != KA_OK)
        return -1;
    rec->type = p[REC_TYPE] == 'A' ? KA_KEY_API : KA_KEY_WRITE;
    copy_id(rec->id, p + REC_ID);
    copy_id(rec->org, p + REC_ORG);
    copy_opt_id(rec->ws, p + REC_WS);
    copy_opt_id(rec->conn, p + REC_CONN);
    return rec->type == KA_KEY_WRITE && (rec->ws[0] == '\0' || rec->conn[0] == '\0') ? -1 : 0;
}

static int conv_key(rebuild *rb, MDB_val *k, MDB_val *v, uint8_t *buf)
{
    ka_key_rec rec;

    if (rb->st->format == 3)
        return 0;
    if (k->mv_size != KA_DIGEST_LEN || old_key(v, &rec) != 0) {
        rb->why = "a key record this build cannot read";
        return -1;
    }
    v->mv_size = encode_key(k->mv_data, &rec, buf, NULL, NULL);
    v->mv_data = buf;
    return 0;
}

/* key-ids: formats 1 and 2 kept the digest only; the rest comes from the old key record. */
static int conv_kid(rebuild *rb, MDB_val *k, MDB_val *v, uint8_t *buf)
{
    uint8_t rbuf[REC_LEN_WRITE];
    MDB_val kv;
    ka_key_rec rec;
    size_t len;

    if (rb->st->format == 3)
        return 0;
    if (k->mv_size != KA_ID_LEN || v->mv_size != KA_DIGEST_LEN ||
        mdb_get(rb->src, rb->st->keys, v, &kv) != 0 || old_key(&kv, &rec) != 0) {
        rb->why = "a key ID without a key record this build can read";
        return -1;
    }
    encode_key(v->mv_data, &rec, rbuf, buf, &len);
    v->mv_size = len;
    v->mv_data = buf;
    return 0;
}

/* children: an entry as its IDX_LEN bytes (formats 1 and 2: the key of "index" already). */
static int conv_child(rebuild *rb, MDB_val *k, MDB_val *v, uint8_t *buf)
{
    if (rb->st->format != 3)
        return k->mv_size == IDX_LEN ? 0 : (rb->why = "an index entry of an unexpected length", -1);
    if (k->mv_size != IDX_KEY_LEN || v->mv_size != KA_ID_LEN) {
        rb->why = "an index entry of an unexpected length";
        return -1;
    }
    memcpy(buf, k->mv_data, IDX_KEY_LEN);
    memcpy(buf + IDX_KEY_LEN, v->mv_data, KA_ID_LEN);
    k->mv_size = IDX_LEN;
    k->mv_data = buf;
    return 0;
}

/* The records of a new bulk key. */
static void bulk_rec(const bulk_set *set, const ka_bulk_key *b, ka_key_rec *rec)
{
    rec->type = set->tmpl->type;
    copy_id(rec->id, b->id);
    memcpy(rec->org, set->tmpl->org, sizeof(rec->org));
    memcpy(rec->ws, set->tmpl->ws, sizeof(rec->ws));
    if (rec->type == KA_KEY_WRITE)
        copy_id(rec->conn, b->conn);
    else
        rec->conn[0] = '\0';
    rec->created = set->tmpl->created;
    memcpy(rec->hint, b->hint, b->hint_len);
    rec->hint[b->hint_len] = '\0';
    memcpy(rec->name, set->tmpl->name, sizeof(rec->name));
}

static void gen_key(const rebuild *rb, size_t j, MDB_val *k, MDB_val *v, uint8_t *buf)
{
    const ka_bulk_key *b = &rb->set->keys[rb->set->by_digest[j]];
    ka_key_rec rec;

    bulk_rec(rb->set, b, &rec);
    k->mv_size = KA_DIGEST_LEN;
    k->mv_data = (void *)b->digest;
    v->mv_size = encode_key(b->digest, &rec, buf, NULL, NULL);
    v->mv_data = buf;
}

static void gen_kid(const rebuild *rb, size_t j, MDB_val *k, MDB_val *v, uint8_t *buf)
{
    const ka_bulk_key *b = &rb->set->keys[rb->set->by_id[j]];
    uint8_t rbuf[REC_LEN_WRITE];
    ka_key_rec rec;
    size_t len;

    bulk_rec(rb->set, b, &rec);
    encode_key(b->digest, &rec, rbuf, buf, &len);
    k->mv_size = KA_ID_LEN;
    k->mv_data = (void *)b->id;
    v->mv_size = len;
    v->mv_data = buf;
}

/* A new connection's record. */
static size_t conn_value(const ka_entity *e, uint8_t *buf)
{
    size_t nl = strnlen(e->name, KA_NAME_MAX);

    memcpy(buf + CONN_WS, e->ws, KA_ID_LEN);
    memcpy(buf + CONN_ORG, e->org, KA_ID_LEN);
    buf[CONN_FLAGS] = (uint8_t)(e->conn_flags & (KA_CONN_DESTINATION | KA_CONN_NO_STRATEGY));
    memcpy(buf + CONN_NAME, e->name, nl);
    return CONN_NAME + nl;
}

static void gen_conn(const rebuild *rb, size_t j, MDB_val *k, MDB_val *v, uint8_t *buf)
{
    k->mv_size = KA_ID_LEN;
    k->mv_data = (void *)rb->set->keys[rb->set->by_conn[j]].conn;
    v->mv_size = conn_value(rb->set->ctmpl, buf);
    v->mv_data = buf;
}

static void gen_child(const rebuild *rb, size_t j, MDB_val *k, MDB_val *v, uint8_t *buf)
{
    (void)buf;
    k->mv_size = IDX_LEN;
    k->mv_data = (void *)(rb->set->children + j * IDX_LEN);
    v->mv_size = 0;
    v->mv_data = "";
}

/* dir without trailing slashes, into buf. */
static void dir_base(const char *dir, char *buf, size_t len)
{
    size_t n = strlen(dir);

    while (n > 1 && dir[n - 1] == '/')
        n--;
    snprintf(buf, len, "%.*s", (int)n, dir);
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

void ka_dir_remove(const char *path)
{
    struct stat sb;

    if (lstat(path, &sb) == 0)
        nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

int ka_dir_swap(const char *newdir, const char *dir, char *err, size_t errlen)
{
    struct stat sb;

    if (stat(dir, &sb) != 0) {
        if (rename(newdir, dir) == 0)
            return 0;
    } else if (renameat2(AT_FDCWD, newdir, AT_FDCWD, dir, RENAME_EXCHANGE) == 0) {
        ka_dir_remove(newdir); /* the old store; Apache children reopen the new one */
        return 0;
    }
    snprintf(err, errlen, "cannot put the new store in place of %s: %s", dir, strerror(errno));
    return -1;
}

/* The new directory gets the old one's owner and mode, its data.mdb and lock.mdb those of the
 * old ones, and a hard link to every other file of it (the secret, mirror-confirmed, ...). */
static int carry_files(const char *dir, const char *newdir, char *err, size_t errlen)
{
    static const char *const own[] = {"", "/data.mdb", "/lock.mdb"};
    char from[4400], to[4400 + 256];
    struct stat sb;
    struct dirent *de;
    DIR *d;

    for (size_t i = 0; i < sizeof(own) / sizeof(own[0]); i++) {
        snprintf(from, sizeof(from), "%s%s", dir, own[i]);
        snprintf(to, sizeof(to), "%s%s", newdir, own[i]);
        if (stat(from, &sb) != 0)
            continue;
        if ((chown(to, sb.st_uid, sb.st_gid) != 0 && geteuid() == 0) ||
            chmod(to, sb.st_mode & 07777) != 0) {
            snprintf(err, errlen, "cannot give %s the owner and mode of %s: %s", to, from,
                     strerror(errno));
            return -1;
        }
    }
    if ((d = opendir(dir)) == NULL) {
        snprintf(err, errlen, "cannot read %s: %s", dir, strerror(errno));
        return -1;
    }
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0 ||
            strcmp(de->d_name, "data.mdb") == 0 || strcmp(de->d_name, "lock.mdb") == 0)
            continue;
        snprintf(from, sizeof(from), "%s/%s", dir, de->d_name);
        snprintf(to, sizeof(to), "%s/%s", newdir, de->d_name);
        if (link(from, to) != 0) {
            snprintf(err, errlen, "cannot carry %s into the rebuilt store: %s", from,
                     strerror(errno));
            closedir(d);
            return -1;
        }
    }
    closedir(d);
    return 0;
}

/* Writes the store read through src (the old store's write transaction), with set's records
 * when not NULL, into DIR.rebuild-new and swaps it in. The caller aborts src, then reopens. */
static ka_store_status rebuild_store(ka_store *st, MDB_txn *src, const bulk_set *set, char *err,
                                     size_t errlen)
{
    char base[4096], newdir[4200];
    rebuild rb;
    struct stat sb;
    MDB_envinfo info;
    size_t nnew = set ? set->n : 0, map = KA_STORE_DEFAULT_MAPSIZE, want;
    int rc;

    memset(&rb, 0, sizeof(rb));
    rb.st = st;
    rb.src = src;
    rb.set = set;
    /* The directory itself, not a symlink to it: the swap would replace the link. */
    if (realpath(st->dir, newdir) != NULL)
        dir_base(newdir, base, sizeof(base));
    else
        dir_base(st->dir, base, sizeof(base));
    snprintf(newdir, sizeof(newdir), "%s" REBUILD_SUFFIX, base);
    ka_dir_remove(newdir); /* left by a rebuild that was killed */
    if (stat(base, &sb) != 0 || mkdir(newdir, 0700) != 0) {
        snprintf(err, errlen, "cannot create %s: %s", newdir, strerror(errno));
        return KA_FAIL;
    }
    mdb_env_info(st->env, &info);
    want = 2 * (((size_t)info.me_last_pgno + 1) * st->psize + nnew * BULK_KEY_BYTES) + ROOM_SLACK;
    while (map < want)
        map *= 2;
    rc = mdb_env_create(&rb.env);
    if (rc == 0)
        rc = mdb_env_set_maxdbs(rb.env, 8);
    if (rc == 0)
        rc = mdb_env_set_maxreaders(rb.env, KA_STORE_MAXREADERS);
    if (rc == 0)
        rc = mdb_env_set_mapsize(rb.env, map);
    /* Unsynced until the end: nothing reads it before it is whole and synced. */
    if (rc == 0)
        rc = mdb_env_open(rb.env, newdir, MDB_NOTLS | MDB_NOSYNC, 0640);
    if (rc == 0)
        rc = mdb_txn_begin(rb.env, NULL, 0, &rb.txn);
    for (int i = 0; rc == 0 && i < DB_N; i++)
        rc = mdb_dbi_open(rb.txn, db_names[i], MDB_CREATE | (i == DB_CHILDREN ? CHILDREN_FLAGS : 0),
                          &rb.dbi[i]);
    if (rc == 0) {
        rc = mdb_txn_commit(rb.txn);
        rb.txn = NULL;
    }
    if (rc == 0)
        rc = rb_begin(&rb);
    rb.rc = rc;
    rb_merge(&rb, st->meta, DB_META, conv_meta, 0, NULL);
    rb_merge(&rb, st->orgs, DB_ORGS, NULL, 0, NULL);
    rb_merge(&rb, st->wss, DB_WSS, NULL, 0, NULL);
    rb_merge(&rb, st->conns, DB_CONNS, conv_conn, set && set->by_conn ? nnew : 0, gen_conn);
    rb_merge(&rb, st->keys, DB_KEYS, conv_key, nnew, gen_key);
    rb_merge(&rb, st->kids, DB_KIDS, conv_kid, nnew, gen_kid);
    rb_merge(&rb, st->format == 3 ? st->children : st->oldidx, DB_CHILDREN, conv_child,
             set ? set->nchildren : 0, gen_child);
    if (!rb.rc && !rb.why) {
        rb.rc = mdb_txn_commit(rb.txn);
        rb.txn = NULL;
    }
    if (rb.txn)
        mdb_txn_abort(rb.txn);
    if (!rb.rc && !rb.why)
        rb.rc = mdb_env_sync(rb.env, 1);
    if (rb.env)
        mdb_env_close(rb.env);
    if (rb.rc || rb.why) {
        snprintf(err, errlen, "cannot rebuild key store %s: %s", st->dir,
                 rb.why ? rb.why : mdb_strerror(rb.rc));
        ka_dir_remove(newdir);
        return KA_FAIL;
    }
    if (carry_files(base, newdir, err, errlen) != 0 ||
        ka_dir_swap(newdir, base, err, errlen) != 0) {
        ka_dir_remove(newdir);
        return KA_FAIL;
    }
    return KA_OK;
}

ka_store_status ka_store_compact(ka_store *st, char *err, size_t errlen)
{
    ka_store_txn *txn;
    ka_store_status rc;

    if (ka_store_write_begin(st, &txn, err, errlen) != KA_OK)
        return KA_FAIL;
    rc = rebuild_store(st, TX(txn), NULL, err, errlen);
    ka_store_abort(txn);
    if (rc == KA_OK)
        rc = env_reopen(st, err, errlen);
    return rc;
}

ka_store_status ka_store_upgrade(const char *dir, const char *secret_path, char *err, size_t errlen)
{
    uint8_t secret[KA_SECRET_LEN];
    char spath[4200];
    ka_store *st;
    MDB_txn *txn;
    ka_store_status rc;
    int mrc;

    default_secret(dir, secret_path, spath, sizeof(spath));
    if (ka_secret_read(spath, secret, err, errlen) != NULL)
        return KA_FAIL;
    rc = open_secret_format(dir, secret, spath, 0, 1, &st, err, errlen);
    OPENSSL_cleanse(secret, sizeof(secret));
    if (rc != KA_OK)
        return KA_FAIL;
    if (st->format == 3) {
        snprintf(err, errlen, "key store %s has format '%s' already", dir, KA_STORE_FORMAT);
        ka_store_close(st);
        return KA_FAIL;
    }
    if ((mrc = mdb_txn_begin(st->env, NULL, 0, &txn)) != 0) {
        snprintf(err, errlen, "cannot upgrade key store %s: %s", dir, mdb_strerror(mrc));
        ka_store_close(st);
        return KA_FAIL;
    }
    rc = rebuild_store(st, txn, NULL, err, errlen);
    mdb_txn_abort(txn);
    ka_store_close(st);
    return rc;
}

/* ---- bulk loads ---- */

static const ka_bulk_key *sort_keys;

static int by_digest_cmp(const void *a, const void *b)
{
    return memcmp(sort_keys[*(const uint32_t *)a].digest, sort_keys[*(const uint32_t *)b].digest,
                  KA_DIGEST_LEN);
}

static int by_id_cmp(const void *a, const void *b)
{
    return memcmp(sort_keys[*(const uint32_t *)a].id, sort_keys[*(const uint32_t *)b].id,
                  KA_ID_LEN);
}

static int by_conn_cmp(const void *a, const void *b)
{
    return memcmp(sort_keys[*(const uint32_t *)a].conn, sort_keys[*(const uint32_t *)b].conn,
                  KA_ID_LEN);
}

static int child_cmp(const void *a, const void *b)
{
    return memcmp(a, b, IDX_LEN);
}

/* Sorts the keys' IDs (off: of id or of conn) and makes them unique in the batch and free in
 * dbi, drawing new ones with regen. 0, or -1 (*why set). */
static int unique_ids(MDB_txn *txn, MDB_dbi dbi, ka_bulk_key *keys, uint32_t *perm, size_t n,
                      int conn, ka_regen_id regen, void *arg, const char **why)
{
    for (int round = 0; round < 16; round++) {
        int changed = 0;

        sort_keys = keys;
        qsort(perm, n, sizeof(*perm), conn ? by_conn_cmp : by_id_cmp);
        for (size_t i = 0; i < n; i++) {
            char *id = conn ? keys[perm[i]].conn : keys[perm[i]].id;
            const char *prev = i == 0 ? NULL : conn ? keys[perm[i - 1]].conn : keys[perm[i - 1]].id;
            MDB_val k = {KA_ID_LEN, id}, v;
            int rc = mdb_get(txn, dbi, &k, &v);

            if (rc != 0 && rc != MDB_NOTFOUND) {
                *why = mdb_strerror(rc);
                return -1;
            }
            if (rc == 0 || (prev && memcmp(prev, id, KA_ID_LEN) == 0)) {
                if (regen(id, arg) != 0) {
                    *why = "cannot get random bytes from the system";
                    return -1;
                }
                changed = 1;
            }
        }
        if (!changed)
            return 0;
    }
    *why = "no free ID found";
    return -1;
}

/* Adds set in the write transaction txn, in key order: 0 or an LMDB error. */
static int put_in_place(ka_store *st, MDB_txn *txn, const bulk_set *set)
{
    uint8_t buf[KID_HINT + KA_HINT_MAX + KA_NAME_MAX];
    rebuild rb; /* for the generators */
    MDB_val k, v;
    int rc = 0;

    memset(&rb, 0, sizeof(rb));
    rb.set = set;
    for (size_t j = 0; rc == 0 && set->by_conn && j < set->n; j++) {
        gen_conn(&rb, j, &k, &v, buf);
        rc = mdb_put(txn, st->conns, &k, &v, MDB_NOOVERWRITE);
    }
    for (size_t j = 0; rc == 0 && j < set->n; j++) {
        gen_key(&rb, j, &k, &v, buf);
        rc = mdb_put(txn, st->keys, &k, &v, MDB_NOOVERWRITE);
    }
    for (size_t j = 0; rc == 0 && j < set->n; j++) {
        gen_kid(&rb, j, &k, &v, buf);
        rc = mdb_put(txn, st->kids, &k, &v, MDB_NOOVERWRITE);
    }
    for (size_t j = 0; rc == 0 && j < set->nchildren; j++) {
        MDB_val ck = {IDX_KEY_LEN, (void *)(set->children + j * IDX_LEN)},
                cv = {KA_ID_LEN, (void *)(set->children + j * IDX_LEN + IDX_KEY_LEN)};
        rc = mdb_put(txn, st->children, &ck, &cv, 0);
    }
    return rc;
}

ka_store_status ka_bulk_add(ka_store *st, const ka_key_rec *tmpl, const ka_entity *conn_tmpl,
                            ka_bulk_key *keys, size_t n, ka_regen_id regen, void *regen_arg,
                            int *rebuilt, char *err, size_t errlen)
{
    int write = tmpl->type == KA_KEY_WRITE;
    size_t nchildren = write ? 2 * n : n;
    uint32_t *by_digest = malloc((n ? n : 1) * sizeof(uint32_t));
    uint32_t *by_id = malloc((n ? n : 1) * sizeof(uint32_t));
    uint32_t *by_conn = write ? malloc((n ? n : 1) * sizeof(uint32_t)) : NULL;
    uint8_t *children = malloc((nchildren ? nchildren : 1) * IDX_LEN);
    const char *why = NULL;
    ka_store_status rc = KA_FAIL;
    bulk_set set;

    *rebuilt = 0;
    if (!by_digest || !by_id || (write && !by_conn) || !children || n > UINT32_MAX) {
        snprintf(err, errlen, "out of memory for %zu keys", n);
        goto out;
    }
    for (int attempt = 0, grow = 0; attempt < 6; attempt++) {
        ka_store_txn *txn;
        ka_entity e;
        MDB_stat ms;
        ka_store_status sr;
        int mrc;

        if (ka_store_reserve(st, n * BULK_KEY_BYTES, grow, err, errlen) != KA_OK ||
            ka_store_write_begin(st, &txn, err, errlen) != KA_OK)
            goto out;
        if ((sr = ka_get_org(txn, st, tmpl->org, &e)) != KA_OK ||
            (tmpl->ws[0] && (sr = ka_get_ws(txn, st, tmpl->ws, &e)) != KA_OK)) {
            ka_store_abort(txn);
            snprintf(err, errlen, "%s %s does not exist",
                     tmpl->ws[0] ? "workspace" : "organization",
                     tmpl->ws[0] ? tmpl->ws : tmpl->org);
            rc = sr == KA_NOTFOUND ? KA_NOTFOUND : KA_FAIL;
            goto out;
        }
        for (size_t i = 0; i < n; i++)
            by_digest[i] = by_id[i] = (uint32_t)i;
        if (write)
            memcpy(by_conn, by_id, n * sizeof(uint32_t));
        if (unique_ids(TX(txn), st->kids, keys, by_id, n, 0, regen, regen_arg, &why) != 0 ||
            (write &&
             unique_ids(TX(txn), st->conns, keys, by_conn, n, 1, regen, regen_arg, &why) != 0)) {
            ka_store_abort(txn);
            break;
        }
        /* The IDs of by_id may have changed while the connections' were made unique. */
        sort_keys = keys;
        qsort(by_id, n, sizeof(uint32_t), by_id_cmp);
        qsort(by_digest, n, sizeof(uint32_t), by_digest_cmp);
        for (size_t i = 0; i < n; i++) {
            const ka_bulk_key *b = &keys[i];
            uint8_t *c = children + (write ? 2 * i : i) * IDX_LEN;
            c[0] = write ? IDX_WRITE_OF_CONN : IDX_API_OF_ORG;
            memcpy(c + 1, write ? b->conn : tmpl->org, KA_ID_LEN);
            memcpy(c + IDX_KEY_LEN, b->id, KA_ID_LEN);
            if (write) {
                c += IDX_LEN;
                c[0] = IDX_CONN_OF_WS;
                memcpy(c + 1, conn_tmpl->ws, KA_ID_LEN);
                memcpy(c + IDX_KEY_LEN, b->conn, KA_ID_LEN);
            }
        }
        qsort(children, nchildren, IDX_LEN, child_cmp);
        set = (bulk_set){keys, n, by_digest, by_id, by_conn, children, nchildren, tmpl, conn_tmpl};
        mdb_stat(TX(txn), st->keys, &ms);
        if (ms.ms_entries == 0 || n * REBUILD_DIV >= ms.ms_entries) {
            rc = rebuild_store(st, TX(txn), &set, err, errlen);
            ka_store_abort(txn);
            if (rc == KA_OK) {
                *rebuilt = 1;
                rc = env_reopen(st, err, errlen);
            }
            goto out;
        }
        if ((mrc = put_in_place(st, TX(txn), &set)) != 0) {
            ka_store_abort(txn);
            if (mrc == MDB_MAP_FULL) {
                grow = 1;
                continue;
            }
            why =
                mrc == MDB_KEYEXIST ? "a new key ID or digest is taken already" : mdb_strerror(mrc);
            break;
        }
        sr = ka_store_commit(txn, err, errlen);
        if (sr != KA_MAPFULL) {
            rc = sr;
            goto out;
        }
        grow = 1;
    }
    snprintf(err, errlen, "cannot add keys to key store %s: %s", st->dir,
             why ? why : "the map is still full after several doublings");
    rc = KA_FAIL;
out:
    free(by_digest);
    free(by_id);
    free(by_conn);
    free(children);
    return rc;
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
