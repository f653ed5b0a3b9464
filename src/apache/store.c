/* The key store as a child process reads it (SPEC §3): one handle per store directory and
 * secret, opened after the fork, reopened when the file is replaced, closed (503) when it is
 * truncated under the map; a pool of reset read transactions so that a request renews one
 * instead of taking a reader slot; the SIGBUS guard around every read of the map; and the
 * connection memo. ka_store_decide is one decision over it; bench/decide_bench.c links this
 * file to measure exactly that. LMDB itself stays behind keystore.h. */
#include "ka_private.h"

#include "apr_general.h"
#include "apr_shm.h"
#include "apr_thread_mutex.h"
#include "apr_thread_rwlock.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <openssl/crypto.h>

#include "../crypto.h"
#include "../mapguard.h"

/* One key store as opened by a child process. Allocated in pconf before the fork; the LMDB
 * environment is opened after it (LMDB environments must not cross fork()). */
struct ka_handle {
    const char *dir;
    const char *secret_path;
    uint8_t *secret;               /* KA_SECRET_LEN bytes, ka_secure_alloc: not in core dumps */
    const char *data_path;         /* DIR/data.mdb */
    ka_store *st;                  /* NULL until opened in the child, or after a fault */
    int ready;                     /* the locks below exist (child_init made them) */
    apr_thread_mutex_t *open_lock; /* serializes opening, closing and the checks below */
    apr_thread_rwlock_t *env_lock; /* readers share it; resizing or closing takes it alone */
    apr_time_t checked;            /* last look at data_path */
    apr_time_t failed_at;          /* last failed open */
    dev_t dev;                     /* identity of the data.mdb that st maps */
    ino_t ino;
    uint64_t born;                 /* its birth time (ka_store_file): 0, the cache is not used */
    int failing;                   /* the last open failed (logged once, not per request) */
    unsigned long opens;           /* how many times st was opened: a memo names the one */
    ka_metrics *metrics;           /* counts reopens, faults and memo hits */
    ka_keycache *cache;            /* the look-up cache every child shares; NULL: none */
    apr_thread_mutex_t *pool_lock; /* guards the idle transactions below */
    ka_store_txn **idle;           /* reset read transactions: renewing one keeps its */
    int nidle;                     /* reader slot, so no reader-table lock per request */
    /* A mirrored store (krenalis-keys mirror): when the mirror last confirmed it current, the
     * mtime of DIR/mirror-confirmed, read at most once a second. */
    int mirrored;
    const char *confirmed_path;
    apr_time_t confirmed_checked;
    apr_time_t confirmed; /* Unix seconds; 0: no mark */
};

#define IDLE_TXNS 512

/* ---- handles ---- */

ka_handle *ka_handle_make(apr_pool_t *p, const char *dir, const char *secret_path, char *err,
                          apr_size_t errlen)
{
    ka_handle *h = apr_pcalloc(p, sizeof(*h));

    h->dir = dir;
    h->data_path = apr_pstrcat(p, dir, "/data.mdb", NULL);
    h->confirmed_path = apr_pstrcat(p, dir, "/" KA_MIRROR_CONFIRMED_FILE, NULL);
    h->secret_path = secret_path;
    h->secret = ka_secure_alloc(KA_SECRET_LEN);
    if (h->secret == NULL) {
        apr_cpystrn(err, "out of memory", errlen);
        return NULL;
    }
    if (ka_secret_read(secret_path, h->secret, err, errlen) != NULL) {
        ka_secure_free(h->secret, KA_SECRET_LEN);
        return NULL;
    }
    return h;
}

static apr_status_t wipe_handles(void *data)
{
    ka_proc *proc = data;
    for (int i = 0; i < proc->handles->nelts; i++) {
        ka_handle *h = APR_ARRAY_IDX(proc->handles, i, ka_handle *);
        ka_secure_free(h->secret, KA_SECRET_LEN);
        h->secret = NULL;
    }
    return APR_SUCCESS;
}

void ka_handles_init(apr_pool_t *pconf, ka_proc *proc)
{
    proc->handles = apr_array_make(pconf, 2, sizeof(ka_handle *));
    apr_pool_cleanup_register(pconf, proc, wipe_handles, apr_pool_cleanup_null);
}

/* Each probe of a large table lands on a random page of it, whose translation the CPU rarely
 * has: where the kernel gives shared memory huge pages on request (shmem_enabled "advise"), ask.
 * A table smaller than one such page keeps to small pages (no 2 MiB page for a few KiB). */
#define HUGE_PAGE ((uintptr_t)2 << 20)

apr_status_t ka_handle_cache_make(ka_handle *h, apr_pool_t *p, unsigned entries)
{
    apr_size_t table = ka_keycache_bytes(entries);
    uintptr_t align = table >= HUGE_PAGE ? HUGE_PAGE : 64;
    apr_size_t span = (table + align - 1) & ~(align - 1), bytes = span + align;
    apr_shm_t *shm;
    unsigned char random[KA_KC_RANDOM_LEN];
    uintptr_t base;
    apr_status_t rv;

    h->cache = NULL;
    if (entries == 0)
        return APR_SUCCESS;
    if ((rv = apr_generate_random_bytes(random, sizeof(random))) != APR_SUCCESS)
        return rv;
    /* Anonymous: inherited by the children, gone with the last of them. */
    if ((rv = apr_shm_create(&shm, bytes, NULL, p)) != APR_SUCCESS)
        return rv;
    /* A large table aligned to a huge page, so that all of it can be mapped by them; the slack
     * before it is never touched. Without huge pages (the default) madvise changes nothing. */
    base = ((uintptr_t)apr_shm_baseaddr_get(shm) + align - 1) & ~(align - 1);
    if (align == HUGE_PAGE)
        (void)madvise((void *)base, span, MADV_HUGEPAGE);
    h->cache = ka_keycache_init((void *)base, entries, random);
    OPENSSL_cleanse(random, sizeof(random));
    return APR_SUCCESS;
}

ka_handle *ka_handle_for(apr_pool_t *pconf, apr_hash_t *byname, ka_proc *proc, const char *dir,
                         const char *secret_path, unsigned cache_entries, server_rec *s)
{
    char err[512];
    struct stat sb;
    /* The directory itself, not its spelling ("DIR" and "DIR/", a symlink): LMDB must not be
     * opened twice in one process (its fcntl locks are per process). A store has one secret
     * (its check record), so two secret files that both passed check_config are the same. */
    const char *key = stat(dir, &sb) == 0 ? apr_psprintf(pconf, "%lu:%lu", (unsigned long)sb.st_dev,
                                                         (unsigned long)sb.st_ino)
                                          : apr_pstrcat(pconf, dir, "\n", secret_path, NULL);
    ka_handle *h = apr_hash_get(byname, key, APR_HASH_KEY_STRING);

    if (h)
        return h;
    if ((h = ka_handle_make(pconf, dir, secret_path, err, sizeof(err))) == NULL)
        return NULL;
    h->metrics = proc->metrics;
    if (ka_handle_cache_make(h, pconf, cache_entries) != APR_SUCCESS)
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s,
                     KA_LOGNO(00030) "KrenalisAuthLookupCache: no shared memory for the look-up "
                                     "cache of %s: every look-up reads the store",
                     dir);
    apr_hash_set(byname, key, APR_HASH_KEY_STRING, h);
    *(ka_handle **)apr_array_push(proc->handles) = h;
    return h;
}

/* Logs, once until the store opens again, why requests get 503. */
static void handle_failing(ka_handle *h, server_rec *s, const char *directive, const char *why)
{
    if (!h->failing)
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, s,
                     KA_LOGNO(00011) "%s: %s; requests get 503 until it opens", directive, why);
    h->failing = 1;
    if (ka_metrics_mine(h->metrics))
        ka_metrics_inc(&ka_metrics_mine(h->metrics)->store_faults);
}

/* Opens a handle's environment in this child; the caller holds open_lock. */
static ka_store_status handle_open(ka_handle *h, server_rec *s)
{
    char err[512];
    ka_store_file fid;
    ka_store *st = NULL;
    ka_map_guard g;
    ka_store_status rc;
    volatile int mirrored = 0; /* set between sigsetjmp and a possible siglongjmp */
    int back;

    if (h->st)
        return KA_OK;
    if (sigsetjmp(g.jb, 0) == 0) {
        ka_map_guard_arm(&g);
        rc = ka_store_open_secret(h->dir, h->secret, h->secret_path, 1, &st, err, sizeof(err));
        /* Reads the store too: under this guard, not the request's (whose fault path would
         * take open_lock, which this thread holds). */
        if (rc == KA_OK)
            mirrored = ka_store_is_mirror(st);
        ka_map_guard_disarm(&g);
    } else {
        /* Truncated between the size check and the reads: st is lost (a rare leak). */
        ka_map_guard_recover();
        snprintf(err, sizeof(err), "key store %s: data.mdb shrank while opening", h->dir);
        handle_failing(h, s, "KrenalisAuthKeyStore", err);
        return KA_FAIL;
    }
    /* The file the environment maps (not what the path names now): the once-a-second check
     * compares the path against it, and the look-up cache tags answers with it. */
    if (rc == KA_OK && ka_store_file_id(st, &fid) != KA_OK) {
        snprintf(err, sizeof(err), "key store %s: cannot examine data.mdb", h->dir);
        rc = KA_FAIL;
    }
    if (rc != KA_OK) {
        handle_failing(
            h, s, rc == KA_BADSECRET ? "KrenalisAuthKeyStoreSecret" : "KrenalisAuthKeyStore", err);
        ka_store_close(st);
        return KA_FAIL;
    }
    /* ka_store_open_secret has cleared the reader slots of dead children already. */
    h->dev = (dev_t)fid.dev;
    h->ino = (ino_t)fid.ino;
    h->born = fid.born;
    h->mirrored = mirrored;
    h->confirmed_checked = 0;
    back = h->failing;
    if (back)
        ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, s,
                     KA_LOGNO(00012) "key store %s is readable again", h->dir);
    h->failing = 0;
    apr_thread_rwlock_wrlock(h->env_lock);
    h->st = st;
    h->opens++;
    /* A reopen: after another file, or back after a fault (also this child's first open). */
    if ((h->opens > 1 || back) && ka_metrics_mine(h->metrics))
        ka_metrics_inc(&ka_metrics_mine(h->metrics)->store_reopens);
    apr_thread_rwlock_unlock(h->env_lock);
    return KA_OK;
}

/* Closes a handle's environment; the caller holds open_lock and env_lock (write). */
static void handle_close(ka_handle *h)
{
    while (h->nidle > 0)
        ka_store_abort(h->idle[--h->nidle]);
    ka_store_close(h->st);
    h->st = NULL;
}

/* What the log says when a read of the map faulted (SIGBUS). */
static void shrank_msg(const ka_handle *h, char *err, size_t errlen)
{
    snprintf(err, errlen, "key store %s: data.mdb shrank under a read: it was truncated", h->dir);
}

/* Closes the environment once no request reads it; the caller holds open_lock. */
static void handle_drop(ka_handle *h)
{
    apr_thread_rwlock_wrlock(h->env_lock);
    if (h->st)
        handle_close(h);
    apr_thread_rwlock_unlock(h->env_lock);
}

/* Closes a store that cannot be read, logs why once, and lets the next open wait a second;
 * the caller holds open_lock. */
static void handle_shut(ka_handle *h, request_rec *r, const char *why)
{
    handle_drop(h);
    handle_failing(h, r->server, "KrenalisAuthKeyStore", why);
    h->failed_at = r->request_time;
}

/* Whether data.mdb still holds every page of the open store; the caller holds open_lock. */
static int handle_size_ok(ka_handle *h, long long size, char *err, size_t errlen)
{
    ka_map_guard g;
    ka_store_status rc;

    /* env_lock: a map being resized by another thread must not be read. */
    apr_thread_rwlock_rdlock(h->env_lock);
    if (sigsetjmp(g.jb, 0) == 0) {
        ka_map_guard_arm(&g);
        rc = ka_store_check_size(h->st, size, err, errlen);
        ka_map_guard_disarm(&g);
    } else {
        ka_map_guard_recover();
        shrank_msg(h, err, errlen);
        rc = KA_FAIL;
    }
    apr_thread_rwlock_unlock(h->env_lock);
    return rc == KA_OK;
}

/* At most once a second per child: a store removed or replaced while serving (a new
 * `krenalis-keys init`, a restored backup) must not keep answering from the old file, and a
 * truncated one must be closed before a read of a missing page. The second counts from now,
 * not from r->request_time (when the request line came): a client that sends its headers
 * slowly would otherwise be decided on a replaced file for as long as they take. */
static void handle_recheck(ka_handle *h, request_rec *r)
{
    char err[512];
    struct stat sb;
    apr_time_t now = apr_time_now();

    if (now - h->checked < apr_time_from_sec(1))
        return;
    apr_thread_mutex_lock(h->open_lock);
    if (now - h->checked >= apr_time_from_sec(1)) {
        if (h->st && (stat(h->data_path, &sb) != 0 || sb.st_ino != h->ino || sb.st_dev != h->dev)) {
            ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, r,
                          KA_LOGNO(00013) "key store %s was removed or replaced; reopening it",
                          h->dir);
            handle_drop(h);
        } else if (h->st && !handle_size_ok(h, (long long)sb.st_size, err, sizeof(err))) {
            handle_shut(h, r, err);
        }
        /* Only now: a concurrent request that saw the old time waits on open_lock above
         * instead of reading the store being closed. */
        h->checked = now;
    }
    apr_thread_mutex_unlock(h->open_lock);
}

/* A read of the map faulted (SIGBUS: data.mdb shrank under it). The environment is closed, so
 * that the next request reopens it, which refuses the file until it is whole again. */
static void handle_fault(ka_handle *h, request_rec *r)
{
    char err[512];

    shrank_msg(h, err, sizeof(err));
    apr_thread_mutex_lock(h->open_lock);
    handle_shut(h, r, err);
    apr_thread_mutex_unlock(h->open_lock);
}

/* Opens the store if it is closed, trying at most once a second while it fails. */
static ka_store_status handle_ensure_open(ka_handle *h, request_rec *r)
{
    ka_store_status rc = KA_FAIL;

    apr_thread_mutex_lock(h->open_lock);
    if (h->st)
        rc = KA_OK;
    else if (!h->failing || r->request_time - h->failed_at >= apr_time_from_sec(1)) {
        rc = handle_open(h, r->server);
        if (rc != KA_OK)
            h->failed_at = r->request_time;
    }
    apr_thread_mutex_unlock(h->open_lock);
    return rc;
}

static apr_status_t close_handles(void *data)
{
    ka_proc *proc = data;
    for (int i = 0; i < proc->handles->nelts; i++) {
        ka_handle *h = APR_ARRAY_IDX(proc->handles, i, ka_handle *);
        if (h->ready)
            handle_close(h);
    }
    return APR_SUCCESS;
}

apr_status_t ka_handle_child_init(ka_handle *h, apr_pool_t *pchild, server_rec *s)
{
    apr_status_t rv = apr_thread_mutex_create(&h->open_lock, APR_THREAD_MUTEX_DEFAULT, pchild);

    if (rv == APR_SUCCESS)
        rv = apr_thread_rwlock_create(&h->env_lock, pchild);
    if (rv == APR_SUCCESS)
        rv = apr_thread_mutex_create(&h->pool_lock, APR_THREAD_MUTEX_DEFAULT, pchild);
    if (rv != APR_SUCCESS) {
        ap_log_error(
            APLOG_MARK, APLOG_ERR, rv, s,
            KA_LOGNO(00014) "KrenalisAuthKeyStore: key store %s: cannot create this child's locks; "
                            "requests get 503",
            h->dir);
        h->failing = 1;
        return rv;
    }
    h->idle = apr_pcalloc(pchild, IDLE_TXNS * sizeof(ka_store_txn *));
    h->checked = apr_time_now();
    h->ready = 1;
    handle_open(h, s);
    return APR_SUCCESS;
}

void ka_handles_child_init(apr_pool_t *pchild, server_rec *s, ka_proc *proc)
{
    /* Before the first open: the open reads the map too. */
    if (ka_map_guard_install() != 0)
        ap_log_error(
            APLOG_MARK, APLOG_WARNING, errno, s,
            KA_LOGNO(00015) "cannot install the SIGBUS handler: a truncated key store would kill "
                            "children instead of answering 503");
    for (int i = 0; i < proc->handles->nelts; i++)
        ka_handle_child_init(APR_ARRAY_IDX(proc->handles, i, ka_handle *), pchild, s);
    apr_pool_cleanup_register(pchild, proc, close_handles, apr_pool_cleanup_null);
}

const ka_store *ka_handle_store(const ka_handle *h)
{
    return h->st;
}

void ka_handle_close(ka_handle *h)
{
    if (h->ready)
        handle_close(h);
    ka_secure_free(h->secret, KA_SECRET_LEN);
    h->secret = NULL;
}

/* The mark is outside the LMDB data, so the memo stays valid meanwhile. Now, not the request's
 * time: a request whose headers took long is held to the mark as it is when it is decided. */
int ka_store_stale(ka_handle *h, int max_stale, request_rec *r)
{
    struct stat sb;
    apr_time_t now;

    if (max_stale <= 0 || h == NULL || !h->mirrored)
        return 0;
    now = apr_time_now();
    if (now - h->confirmed_checked >= apr_time_from_sec(1)) {
        h->confirmed = stat(h->confirmed_path, &sb) == 0 ? sb.st_mtime : 0;
        h->confirmed_checked = now;
    }
    if (apr_time_sec(now) - h->confirmed <= max_stale)
        return 0;
    ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r,
                  KA_LOGNO(00020) "key store %s: its mirror has not confirmed it current for more "
                                  "than %d s (KrenalisAuthMaxStaleness): 503",
                  h->dir, max_stale);
    return 1;
}

/* ---- the store on the request path ---- */

/* The last API-endpoint decision a connection accepted: its inputs, its answer and the store
 * snapshot it read. A keep-alive client sends the same headers on every request; while the
 * store has committed nothing since, ka_decide would answer the same, so the next such request
 * skips it (docs/operations.md, "Connection memo"). */
typedef struct {
    /* Set when the memo is shared by the streams of an HTTP/2 connection, which run on several
     * threads at once: every read and write of the fields below holds it. NULL for a memo only
     * its own connection's thread uses. */
    apr_thread_mutex_t *lock;
    const ka_handle *h;
    unsigned long opens; /* h->opens of the environment that decided */
    size_t txnid;        /* the snapshot (LMDB transaction ID) it read; 0: empty */
    ka_memo_key key;
    ka_identity id;
} conn_memo;

/* One request's access to a store: the read transaction is begun on the first look-up, and
 * kept in lk (lk.txn) only. */
typedef struct {
    request_rec *r;
    ka_handle *h;
    ka_store_lookup_ctx lk;
    int locked;          /* holds env_lock (shared, or alone while adopting a grown map) */
    unsigned long opens; /* h->opens when first locked: the file this request reads */
    int use_memo;        /* the connection's memo may answer and keep decisions */
    int count_hits;      /* a memo hit is counted (not under KrenalisAuthMetrics Off) */
    conn_memo *memo;     /* the connection's memo, NULL until a decision is kept on it */
    int memo_other;      /* the memo holds another request's inputs: it keeps them */
} ka_txn;

/* A reset transaction from the idle list renewed, or a new one. */
static ka_store_status txn_get(ka_handle *h, ka_store_txn **txn, char *err, size_t errlen)
{
    ka_store_txn *t = NULL;
    ka_store_status rc;

    apr_thread_mutex_lock(h->pool_lock);
    if (h->nidle > 0)
        t = h->idle[--h->nidle];
    apr_thread_mutex_unlock(h->pool_lock);
    if (t == NULL)
        return ka_store_read_begin(h->st, txn, err, errlen);
    rc = ka_store_read_renew(t, err, errlen);
    if (rc != KA_OK) {
        ka_store_abort(t);
        return rc;
    }
    *txn = t;
    return KA_OK;
}

/* env_lock, shared (read) or alone, noted in t for the SIGBUS path of decide_once. */
static void txn_lock(ka_txn *t, int shared)
{
    if (shared)
        apr_thread_rwlock_rdlock(t->h->env_lock);
    else
        apr_thread_rwlock_wrlock(t->h->env_lock);
    t->locked = 1;
}

static void txn_unlock(ka_txn *t)
{
    t->locked = 0;
    apr_thread_rwlock_unlock(t->h->env_lock);
}

/* Begins the request's read transaction (ka_store_lookup_ctx.begin). LMDB reports a map
 * grown by krenalis-keys as MDB_MAP_RESIZED; adopting the new size needs no transaction of
 * this process to be active, hence the rwlock. */
/* The open store under env_lock (shared), or KA_FAIL (503). */
static ka_store_status txn_store(ka_txn *t)
{
    ka_handle *h = t->h;

    if (t->locked)
        return KA_OK;
    if (h == NULL) {
        ap_log_rerror(
            APLOG_MARK, APLOG_ERR, 0, t->r,
            KA_LOGNO(00016) "AuthType Krenalis without KrenalisAuthKeyStore for this server");
        return KA_FAIL;
    }
    if (!h->ready) /* no locks in this child: logged at child_init */
        return KA_FAIL;
    handle_recheck(h, t->r);
    txn_lock(t, 1);
    while (h->st == NULL) {
        txn_unlock(t);
        if (handle_ensure_open(h, t->r) != KA_OK)
            return KA_FAIL;
        txn_lock(t, 1);
    }
    t->opens = h->opens;
    return KA_OK;
}

/* The store and the snapshot a transaction would read now, without one
 * (ka_store_lookup_ctx.attach): the look-up cache may answer for it. */
static ka_store_status txn_attach(void *arg, const ka_store **st, ka_kc_snap *snap)
{
    ka_txn *t = arg;

    if (txn_store(t) != KA_OK)
        return KA_FAIL;
    *st = t->h->st;
    /* A file system without birth times: no identity that an inode reused later cannot
     * share, so the cache is not used for this store. */
    if (t->h->born == 0)
        return KA_NOTFOUND;
    /* The last committed transaction, from the meta pages (under the caller's map guard). */
    snap->txnid = ka_store_last_commit(t->h->st);
    snap->dev = (uint64_t)t->h->dev;
    snap->ino = (uint64_t)t->h->ino;
    snap->born = t->h->born;
    return snap->txnid != 0 ? KA_OK : KA_NOTFOUND;
}

static ka_store_status txn_begin(void *arg, const ka_store **st, ka_store_txn **txn)
{
    ka_txn *t = arg;
    ka_handle *h = t->h;
    ka_store_txn *x = NULL;
    char err[256] = "";
    ka_store_status rc;

    if (txn_store(t) != KA_OK)
        return KA_FAIL;
    rc = txn_get(h, &x, err, sizeof(err));
    if (rc == KA_RESIZED) {
        txn_unlock(t);
        txn_lock(t, 0);
        if (h->st)
            ka_store_adopt_map(h->st);
        txn_unlock(t);
        txn_lock(t, 1);
        if (h->st && h->opens == t->opens) {
            rc = txn_get(h, &x, err, sizeof(err));
        } else {
            /* Closed, or another file opened, while the lock was let go: the snapshot this
             * request attached to (and what the cache answered for it) is the old file's, so
             * no read of the new one may join it. This request 503s. */
            rc = KA_FAIL;
            snprintf(err, sizeof(err), "key store %s was closed or replaced meanwhile", h->dir);
        }
    }
    if (rc != KA_OK) {
        txn_unlock(t);
        if (rc == KA_RESIZED)
            snprintf(err, sizeof(err), "key store %s: the map keeps growing", h->dir);
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, t->r,
                      KA_LOGNO(00017) "key store %s cannot be read: %s", h->dir, err);
        return KA_FAIL;
    }
    *st = h->st;
    *txn = x;
    return KA_OK;
}

/* Ends the read transaction, keeping its handle (and reader slot) for the next request. */
static void txn_end(ka_txn *t)
{
    ka_handle *h = t->h;

    if (h == NULL || t->lk.txn == NULL) {
        if (t->locked) /* attached only: the cache answered every look-up */
            txn_unlock(t);
        return;
    }
    ka_store_read_reset(t->lk.txn);
    apr_thread_mutex_lock(h->pool_lock);
    if (h->nidle < IDLE_TXNS) {
        h->idle[h->nidle++] = t->lk.txn;
        t->lk.txn = NULL;
    }
    apr_thread_mutex_unlock(h->pool_lock);
    ka_store_abort(t->lk.txn);
    t->lk.txn = NULL;
    txn_unlock(t);
}

/* ---- the connection memo ---- */

static apr_status_t memo_wipe(void *data)
{
    ka_cleanse(data, sizeof(conn_memo));
    return APR_SUCCESS;
}

void ka_memo_share(conn_rec *c)
{
    conn_memo *m = apr_pcalloc(c->pool, sizeof(*m));

    if (apr_thread_mutex_create(&m->lock, APR_THREAD_MUTEX_DEFAULT, c->pool) != APR_SUCCESS)
        return; /* no memo: every request is decided in full */
    /* Registered after the mutex's own cleanup, so run before it: the lock is still there. */
    apr_pool_cleanup_register(c->pool, m, memo_wipe, apr_pool_cleanup_null);
    ap_set_module_config(c->conn_config, &krenalis_auth_module, m);
}

/* The memo a request may use: its connection's, or for an HTTP/2 stream its primary
 * connection's when that one was made shareable (ka_memo_share). */
static conn_memo *memo_of(conn_rec *c)
{
    conn_memo *m;

    if (c->master == NULL)
        return ap_get_module_config(c->conn_config, &krenalis_auth_module);
    m = ap_get_module_config(c->master->conn_config, &krenalis_auth_module);
    return m && m->lock ? m : NULL;
}

/* Answers dec from the memo when req has its inputs (the Authorization value compared in
 * constant time: behind a proxy one connection carries many clients' keys) and the store has
 * committed nothing since. */
static int memo_answer(ka_txn *t, const ka_request *req, ka_decision *dec)
{
    conn_memo *m = t->memo;
    ka_handle *h = t->h;
    unsigned long opens = 0;
    size_t txnid = 0;
    ka_identity id;
    int hit;

    if (m == NULL)
        return 0;
    /* What the checks below need, copied under the lock (another stream may replace it). */
    if (m->lock)
        apr_thread_mutex_lock(m->lock);
    hit = m->txnid != 0 && m->h == h && ka_memo_key_match(&m->key, req);
    t->memo_other = !hit && m->txnid != 0 && m->h == h;
    if (hit) {
        opens = m->opens;
        txnid = m->txnid;
        id = m->id;
    }
    if (m->lock)
        apr_thread_mutex_unlock(m->lock);
    if (!hit)
        return 0;
    handle_recheck(h, t->r);
    txn_lock(t, 1);
    /* The last committed transaction, read from the meta pages (under the caller's map guard). */
    hit = h->st && h->opens == opens && ka_store_last_commit(h->st) == txnid;
    txn_unlock(t);
    if (!hit)
        return 0;
    dec->verdict = KA_VERDICT_ACCEPT;
    dec->status = 0;
    dec->code = NULL;
    dec->message[0] = '\0';
    dec->token_presented = 1;
    dec->id = id;
    return 1;
}

/* Keeps an accepted decision for the snapshot it read. One the look-up cache answered does not
 * replace another key's memo: on a connection that carries many keys (a gateway's) the cache
 * answers them, and replacing the memo on each request would only cost a copy that never
 * answers; a key decided from the store (new, or after a commit) replaces it. */
static void memo_keep(ka_txn *t, const ka_request *req, const ka_decision *dec)
{
    conn_rec *c = t->r->connection;
    conn_memo *m = t->memo;
    ka_memo_key key;
    size_t txnid;

    /* The snapshot the decision read (none when it read nothing). */
    txnid = (size_t)ka_store_lookup_txnid(&t->lk);
    if (!t->use_memo || (t->memo_other && t->lk.txn == NULL) || txnid == 0 ||
        !ka_memo_key_set(&key, req))
        return;
    if (m == NULL) {
        /* An HTTP/2 stream without a shareable memo keeps none: its conn_config and pool end
         * with its request, and its primary connection's pool is another thread's. */
        if (c->master != NULL) {
            ka_cleanse(&key, sizeof(key));
            return;
        }
        /* Once per connection, from its pool; wiped when the connection ends. */
        m = t->memo = apr_pcalloc(c->pool, sizeof(*m));
        ap_set_module_config(c->conn_config, &krenalis_auth_module, m);
        apr_pool_cleanup_register(c->pool, m, memo_wipe, apr_pool_cleanup_null);
    }
    /* Nothing under the lock reads the store's map: a fault there (mapguard.h) never jumps out
     * with the lock held. */
    if (m->lock)
        apr_thread_mutex_lock(m->lock);
    m->h = t->h;
    m->opens = t->h->opens;
    m->txnid = txnid;
    m->key = key;
    m->id = dec->id;
    if (m->lock)
        apr_thread_mutex_unlock(m->lock);
    ka_cleanse(&key, sizeof(key));
}

/* ---- one decision ---- */

/* The decision faulted on the map (mapguard.h): let go of the transaction and the lock it
 * held, close the store and answer 503. */
static ka_verdict decide_faulted(ka_txn *t, ka_decision *dec)
{
    /* A read transaction: aborting it touches lock.mdb, not the lost pages. */
    ka_store_abort(t->lk.txn);
    t->lk.txn = NULL;
    if (t->locked)
        txn_unlock(t);
    handle_fault(t->h, t->r);
    ka_decision_unavailable(dec);
    return dec->verdict;
}

/* The decision under the SIGBUS guard. t changes after sigsetjmp and is read after a
 * siglongjmp, so it lives in the caller's frame (never inlined into it), not in this one. */
static __attribute__((noinline)) ka_verdict decide_guarded(ka_txn *t, const ka_request *req,
                                                           ka_decision *dec)
{
    request_rec *r = t->r;
    ka_map_guard g;
    ka_metrics_counters *mc;
    ka_verdict rc;

    if (sigsetjmp(g.jb, 0) != 0) {
        ka_map_guard_recover();
        return decide_faulted(t, dec);
    }
    ka_map_guard_arm(&g);
    mc = t->count_hits && t->h != NULL ? ka_metrics_mine(t->h->metrics) : NULL; /* no store: 503 */
    if (memo_answer(t, req, dec)) {
        rc = KA_VERDICT_ACCEPT;
        dec->reason = KA_REFUSAL_NONE;
        if (mc)
            ka_metrics_inc(&mc->memo_hits);
    } else {
        rc = ka_decide_store(req, &t->lk, dec);
        if (rc == KA_VERDICT_ACCEPT)
            memo_keep(t, req, dec);
        if (mc) {
            ka_metrics_add_n(&mc->lookup_hits, (uint64_t)t->lk.hits);
            ka_metrics_add_n(&mc->lookup_misses, (uint64_t)t->lk.misses);
        }
    }
    txn_end(t);
    ka_map_guard_disarm(&g);
    if (t->lk.read_failed)
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r,
                      KA_LOGNO(00018) "key store %s: a read failed (damaged data?)", t->h->dir);
    return rc;
}

/* One pass of the decision tables over the store, guarded against a data.mdb truncated under
 * the map. On the stack, not in the request pool: nothing per request outgrows its first
 * block because of the module. */
ka_verdict ka_store_decide(ka_handle *h, request_rec *r, unsigned flags, const ka_request *req,
                           ka_decision *dec, int *began)
{
    ka_txn t;
    ka_verdict v;

    memset(&t, 0, sizeof(t));
    t.r = r;
    t.h = h;
    t.use_memo = (flags & KA_DECIDE_MEMO) != 0;
    t.count_hits = (flags & KA_DECIDE_COUNT) != 0;
    if (t.use_memo)
        t.memo = memo_of(r->connection);
    t.lk.begin = txn_begin;
    t.lk.begin_arg = &t;
    if (h != NULL && h->cache != NULL) {
        t.lk.cache = h->cache;
        t.lk.attach = txn_attach;
    }
    v = decide_guarded(&t, req, dec);
    if (began)
        *began = t.lk.st != NULL;
    return v;
}

/* The mirror's version, in a read transaction of its own; the caller holds env_lock and the
 * map guard. 1 and *version, or 0. */
static int mirror_version(ka_handle *h, uint64_t *version)
{
    char err[256];
    ka_store_txn *txn;
    ka_mirror_meta m;
    int ok;

    if (ka_store_read_begin(h->st, &txn, err, sizeof(err)) != KA_OK)
        return 0;
    ok = ka_mirror_meta_get(txn, h->st, &m) == KA_OK;
    ka_store_abort(txn);
    if (ok)
        *version = m.version;
    return ok;
}

int ka_handle_gauges(ka_handle *h, request_rec *r, ka_metrics_snapshot *s)
{
    ka_map_guard g;
    struct stat sb;
    int rc;

    if (h == NULL || !h->ready)
        return 0;
    /* As a request would: a store replaced since this child last looked is reopened first, so
     * that the gauges are never the old file's. */
    handle_recheck(h, r);
    if (handle_ensure_open(h, r) != KA_OK)
        return 0;
    apr_thread_rwlock_rdlock(h->env_lock);
    if (h->st == NULL) {
        rc = 0;
    } else if (sigsetjmp(g.jb, 0) == 0) {
        ka_map_guard_arm(&g);
        s->last_txnid = ka_store_last_commit(h->st);
        s->have_txnid = rc = s->last_txnid != 0;
        if (rc && h->mirrored)
            s->mirrored = mirror_version(h, &s->mirror_version);
        ka_map_guard_disarm(&g);
    } else {
        ka_map_guard_recover();
        rc = 0;
    }
    apr_thread_rwlock_unlock(h->env_lock);
    if (!rc) {
        s->have_txnid = s->mirrored = 0;
        return 0;
    }
    /* Never confirmed: 0, so that time() - it is huge and a staleness alert fires. */
    if (s->mirrored)
        s->mirror_confirmed = stat(h->confirmed_path, &sb) == 0
                                  ? (double)sb.st_mtim.tv_sec + sb.st_mtim.tv_nsec / 1e9
                                  : 0;
    return 1;
}

ka_store_status ka_store_txn_cycle(ka_handle *h, request_rec *r)
{
    ka_txn t;
    ka_store_status rc;

    memset(&t, 0, sizeof(t));
    t.r = r;
    t.h = h;
    rc = txn_begin(&t, &t.lk.st, &t.lk.txn);
    if (rc == KA_OK)
        txn_end(&t);
    return rc;
}
