/* A fault of the map while a child opens the store, on the request path (src/apache/store.c
 * linked, as bench/decide_bench.c does): handle_open reads the store after its own SIGBUS guard
 * (ka_store_is_mirror, a read transaction over the meta database) while it holds open_lock, so
 * a data.mdb truncated just then faults into the request's guard (decide_guarded), whose
 * decide_faulted -> handle_fault takes open_lock again. The request must answer 503, not hang
 * its thread (and, at its next look at data.mdb, every other thread of the child).
 *
 * The fault is made deterministic: mdb_txn_begin is wrapped (-Wl,--wrap=mdb_txn_begin), and the
 * read-only begin that follows ka_store_open_secret's own touches a page of a file truncated
 * under its map, a real SIGBUS (si_code BUS_ADRERR), as a truncated data.mdb would give.
 *
 *   make build/open_fault && build/open_fault    exit 0: 503; 1: the request hung */
#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "apache/ka_private.h"
#include "decide.h"
#include "keystore.h"
#include "mapguard.h"
#include "tmpdir.h"

module AP_MODULE_DECLARE_DATA krenalis_auth_module = {STANDARD20_MODULE_STUFF};

void ap_log_error_(const char *file, int line, int module_index, int level, apr_status_t status,
                   const server_rec *s, const char *fmt, ...)
{
    (void)file, (void)line, (void)module_index, (void)level, (void)status, (void)s, (void)fmt;
}

void ap_log_rerror_(const char *file, int line, int module_index, int level, apr_status_t status,
                    const request_rec *r, const char *fmt, ...)
{
    (void)file, (void)line, (void)module_index, (void)level, (void)status, (void)r, (void)fmt;
}

/* ---- the wrapped mdb_txn_begin ---- */

int __real_mdb_txn_begin(MDB_env *env, MDB_txn *parent, unsigned flags, MDB_txn **txn);

static int counting;         /* count read-only begins */
static int begins;           /* read-only begins counted */
static int fault_at;         /* fault on this read-only begin (0: never) */
static volatile char *trunc; /* a page of a file truncated under its map */

int __wrap_mdb_txn_begin(MDB_env *env, MDB_txn *parent, unsigned flags, MDB_txn **txn)
{
    if ((flags & MDB_RDONLY) && counting && ++begins == fault_at)
        (void)*trunc; /* SIGBUS */
    return __real_mdb_txn_begin(env, parent, flags, txn);
}

/* ---- the request ---- */

static char root[64], dir[128], moved[160], spath[4200];

typedef struct {
    ka_handle *h;
    server_rec s;
    request_rec r;
    int status;
    volatile int done;
} req_t;

static void *one_request(void *arg)
{
    req_t *q = arg;
    ka_request req;
    ka_decision dec;
    /* A well-formed key (unknown): the decision reaches the store. */
    static const char auth[] = "Bearer api_AOyrCBBQEmI63fgWAAw8F12XcPvUqkg0aEwlIqnO0xyCeS3NT";

    memset(&req, 0, sizeof(req));
    ka_classify("GET", "/v1/users", KA_EP_AUTO, &req.route);
    req.authorization = auth;
    q->r.request_time = apr_time_now();
    ka_store_decide(q->h, &q->r, 0, &req, &dec, NULL);
    q->status = ka_verdict_status(&dec);
    q->done = 1;
    return NULL;
}

static void fail(const char *what)
{
    fprintf(stderr, "open_fault: %s\n", what);
    exit(2);
}

int main(void)
{
    char err[512], tpath[200];
    apr_pool_t *pool;
    ka_store *st;
    pthread_t t;
    req_t q;
    int fd, opened;

    if (ka_test_tmpdir(root, sizeof(root), "open-fault") != 0)
        fail("tmpdir");
    snprintf(dir, sizeof(dir), "%s/store", root);
    snprintf(moved, sizeof(moved), "%s/data.mdb.copy", root);
    if (ka_store_create(dir, NULL, err, sizeof(err)) != KA_OK)
        fail(err);
    /* How many read-only begins opening a store takes: the next one is handle_open's
     * ka_store_is_mirror. */
    counting = 1;
    if (ka_store_open(dir, NULL, 1, &st, err, sizeof(err)) != KA_OK)
        fail(err);
    opened = begins;
    ka_store_close(st);
    counting = 0;
    /* A page whose file is gone under the map. */
    snprintf(tpath, sizeof(tpath), "%s/truncated", root);
    if ((fd = open(tpath, O_RDWR | O_CREAT, 0600)) < 0 || ftruncate(fd, 4096) != 0 ||
        (trunc = mmap(NULL, 4096, PROT_READ, MAP_SHARED, fd, 0)) == MAP_FAILED ||
        ftruncate(fd, 0) != 0)
        fail("truncated page");

    apr_initialize();
    apr_pool_create(&pool, NULL);
    if (ka_map_guard_install() != 0)
        fail("SIGBUS handler");
    memset(&q, 0, sizeof(q));
    q.r.server = &q.s;
    q.h = ka_handle_make(pool, dir, ka_store_default_secret(dir, spath, sizeof(spath)), err,
                         sizeof(err));
    if (q.h == NULL || ka_handle_child_init(q.h, pool, &q.s) != APR_SUCCESS ||
        ka_handle_store(q.h) == NULL)
        fail("the handle");
    /* data.mdb replaced (a restored backup, a rebuild): the next request, a second later,
     * reopens it, and the open's ka_store_is_mirror faults. */
    {
        char data[160], cmd[700];
        snprintf(data, sizeof(data), "%s/data.mdb", dir);
        snprintf(cmd, sizeof(cmd), "cp -p '%s' '%s' && mv '%s' '%s'", data, moved, moved, data);
        if (system(cmd) != 0)
            fail("replacing data.mdb");
    }
    sleep(2);
    begins = 0;
    fault_at = opened + 1;
    counting = 1;
    if (pthread_create(&t, NULL, one_request, &q) != 0)
        fail("thread");
    for (int i = 0; i < 50 && !q.done; i++)
        usleep(100 * 1000);
    if (!q.done) {
        printf("open_fault: the request hung (a fault while opening the store, on the request "
               "path: handle_fault waits for the open_lock its own thread holds)\n");
        fflush(stdout);
        ka_test_rmtree(root);
        _exit(1);
    }
    pthread_join(t, NULL);
    ka_test_rmtree(root);
    printf("open_fault: %d (%d read-only begins to open)\n", q.status, opened);
    return q.status == 503 ? 0 : 1;
}
