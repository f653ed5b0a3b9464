/* The metrics in httpd (see metrics.h): shared memory, slots, notes, the handler and
 * mod_status's section. Nothing here takes a lock: a request adds to its own process's slot. */
#include "ka_private.h"

#include "ap_mpm.h"
#include "http_log.h"
#include "http_protocol.h"
#include "mod_status.h"

#include "apr_shm.h"
#include "apr_strings.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../version.h"

#define SHM_KEY "krenalis-auth-metrics"
#define SPARE_SLOTS 8 /* a slot held by a zombie, a PID reused by another program */

/* Kept in the process pool: one table for the parent's whole life. */
typedef struct {
    apr_shm_t *shm;
    ka_metrics_table *table;
} shm_keep;

ka_metrics *ka_metrics_attach(apr_pool_t *pconf, server_rec *s)
{
    apr_pool_t *pp = s->process->pool;
    shm_keep *k = NULL;
    int limit = 0;
    unsigned nslots;
    apr_size_t size;
    apr_status_t rv;
    ka_metrics *m;

    if (ap_mpm_query(AP_MPMQ_HARD_LIMIT_DAEMONS, &limit) != APR_SUCCESS || limit < 1)
        limit = 16;
    nslots = (unsigned)limit + SPARE_SLOTS;
    apr_pool_userdata_get((void **)&k, SHM_KEY, pp);
    /* ServerLimit does not change on a restart: a table made before is big enough, and its
     * counts go on. */
    if (k == NULL || k->table->nslots < nslots) {
        apr_shm_t *shm;
        size = ka_metrics_table_size(nslots);
        rv = apr_shm_create(&shm, size, NULL, pp);
        if (rv != APR_SUCCESS) {
            ap_log_error(APLOG_MARK, APLOG_ERR, rv, s,
                         KA_LOGNO(00021) "cannot make %" APR_SIZE_T_FMT
                                         " bytes of shared memory for the metrics; nothing is "
                                         "counted",
                         size);
            return NULL;
        }
        if (k == NULL) {
            k = apr_pcalloc(pp, sizeof(*k));
            apr_pool_userdata_set(k, SHM_KEY, apr_pool_cleanup_null, pp);
        }
        /* A smaller table of an earlier load stays mapped until the parent exits: old
         * children may still count in it. */
        k->shm = shm;
        k->table = apr_shm_baseaddr_get(shm);
        memset(k->table, 0, size);
        ka_metrics_table_init(k->table, nslots);
    }
    m = apr_pcalloc(pconf, sizeof(*m));
    m->table = k->table;
    return m;
}

static int pid_alive(pid_t pid)
{
    return kill(pid, 0) == 0 || errno == EPERM;
}

void ka_metrics_child_init(ka_metrics *m)
{
    if (m != NULL)
        m->mine = ka_metrics_claim(m->table, getpid(), pid_alive);
}

static unsigned char endpoint_of(ka_endpoint ep)
{
    switch (ep) {
    case KA_EP_INGESTION:
        return KA_MEP_INGESTION;
    case KA_EP_SETTINGS:
        return KA_MEP_SETTINGS;
    case KA_EP_ORGS:
        return KA_MEP_ORGS;
    default:
        return KA_MEP_API;
    }
}

void ka_metrics_note_accepted(ka_metrics_req *mr, ka_endpoint endpoint, ka_key_type key_type)
{
    mr->noted = 1;
    mr->endpoint = endpoint_of(endpoint);
    mr->outcome = KA_OUT_ACCEPTED;
    mr->key_type = (unsigned char)key_type;
    mr->reason = KA_REFUSAL_NONE;
}

void ka_metrics_note_preflight(ka_metrics_req *mr)
{
    mr->noted = 1;
    mr->endpoint = KA_MEP_PREFLIGHT;
    mr->outcome = KA_OUT_ACCEPTED;
    mr->key_type = KA_KEY_NONE;
    mr->reason = KA_REFUSAL_NONE;
}

void ka_metrics_note_refused(request_rec *r, ka_metrics_req *mr, ka_endpoint endpoint,
                             ka_refusal reason)
{
    mr->noted = 1;
    mr->endpoint = endpoint_of(endpoint);
    mr->outcome = reason == KA_REFUSAL_UNAVAILABLE ? KA_OUT_UNAVAILABLE : KA_OUT_REFUSED;
    mr->key_type = KA_KEY_NONE;
    mr->reason = reason;
    apr_table_setn(r->subprocess_env, KA_REFUSAL_ENV, ka_refusal_name(reason));
}

void ka_metrics_count(request_rec *r, ka_metrics *m, const ka_metrics_req *mr)
{
    ka_metrics_counters *c = ka_metrics_mine(m);
    request_rec *last = r;

    while (last->next)
        last = last->next;
    if (mr->reason != KA_REFUSAL_NONE) {
        apr_table_setn(r->subprocess_env, KA_REFUSAL_ENV, ka_refusal_name(mr->reason));
        apr_table_setn(last->subprocess_env, KA_REFUSAL_ENV, ka_refusal_name(mr->reason));
    }
    /* KrenalisAuthMetrics Off: the reason above is for the access log, nothing is counted. */
    if (mr->off || c == NULL)
        return;
    ka_metrics_count_request(c, (ka_metric_endpoint)mr->endpoint, (ka_outcome)mr->outcome,
                             mr->key_type, last->status, mr->reason);
    if (mr->timed)
        ka_metrics_observe_decision(c, mr->decide_ns);
}

ka_metrics_snapshot *ka_metrics_snapshot_take(ka_metrics *m, apr_pool_t *p)
{
    ka_metrics_snapshot *s;

    if (m == NULL)
        return NULL;
    s = apr_pcalloc(p, sizeof(*s));
    ka_metrics_sum(m->table, &s->total);
    s->version = KA_VERSION;
    return s;
}

/* The text of a rendering, in p. */
static char *rendered(apr_pool_t *p, const ka_metrics_snapshot *s, int status, int flags,
                      apr_size_t *len)
{
    apr_size_t cap = 16384, n;
    char *buf = apr_palloc(p, cap);

    n = status ? ka_metrics_render_status(s, flags & AP_STATUS_SHORT, buf, cap)
               : ka_metrics_render(s, buf, cap);
    if (n >= cap) {
        cap = n + 1;
        buf = apr_palloc(p, cap);
        n = status ? ka_metrics_render_status(s, flags & AP_STATUS_SHORT, buf, cap)
                   : ka_metrics_render(s, buf, cap);
    }
    *len = n;
    return buf;
}

int ka_metrics_serve(request_rec *r, const ka_metrics_snapshot *s)
{
    apr_size_t len;
    char *text;

    r->allowed |= AP_METHOD_BIT << M_GET;
    if (r->method_number != M_GET)
        return HTTP_METHOD_NOT_ALLOWED;
    if (s == NULL) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r,
                      KA_LOGNO(00022) "no metrics: their shared memory could not be made");
        return HTTP_SERVICE_UNAVAILABLE;
    }
    text = rendered(r->pool, s, 0, 0, &len);
    ap_set_content_type(r, "text/plain; version=0.0.4; charset=utf-8");
    apr_table_setn(r->headers_out, "Cache-Control", "no-store");
    ap_set_content_length(r, (apr_off_t)len);
    if (!r->header_only)
        ap_rwrite(text, (int)len, r);
    return OK;
}

void ka_metrics_status_section(request_rec *r, int flags, const ka_metrics_snapshot *s)
{
    apr_size_t len;
    char *text;

    if (s == NULL)
        return;
    text = rendered(r->pool, s, 1, flags, &len);
    ap_rwrite(text, (int)len, r);
}

/* ---- the module's hooks ---- */

/* The counters of every process, with the gauges of the store of r's server (store.c). */
static ka_metrics_snapshot *snapshot(request_rec *r)
{
    ka_srv_cfg *sc = ap_get_module_config(r->server->module_config, &krenalis_auth_module);
    ka_metrics_snapshot *snap =
        ka_metrics_snapshot_take(sc->proc ? sc->proc->metrics : NULL, r->pool);

    if (snap)
        ka_handle_gauges(sc->handle, r, snap);
    return snap;
}

int ka_metrics_handler(request_rec *r)
{
    if (r->handler == NULL || strcmp(r->handler, KA_METRICS_HANDLER) != 0)
        return DECLINED;
    return ka_metrics_serve(r, snapshot(r));
}

int ka_metrics_status_hook(request_rec *r, int flags)
{
    ka_metrics_status_section(r, flags, snapshot(r));
    return OK;
}

/* Once per request the module answered for, with the status sent: the last request of an
 * internal redirect chain holds it, and the last decision of the chain counts. */
int ka_metrics_log_transaction(request_rec *r)
{
    ka_srv_cfg *sc = ap_get_module_config(r->server->module_config, &krenalis_auth_module);
    ka_req *q = NULL;

    for (request_rec *cur = r; cur; cur = cur->next) {
        ka_req *c = ap_get_module_config(cur->request_config, &krenalis_auth_module);
        if (c && c->mr.noted)
            q = c;
    }
    /* Accepted, then stopped by the access checks (a Require line): a denial, also when a
     * local ErrorDocument answered it (no error response, so no ka_insert_error_filter). */
    if (q && q->mr.outcome == KA_OUT_ACCEPTED && q->authenticated && !q->authorized)
        ka_metrics_note_refused(r, &q->mr, q->route.endpoint, KA_REFUSAL_NOT_ALLOWED);
    if (q)
        ka_metrics_count(r, sc->proc ? sc->proc->metrics : NULL, &q->mr);
    return DECLINED;
}
