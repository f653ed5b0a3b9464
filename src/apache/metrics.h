/* The metrics of SPEC §12 in httpd: the shared memory of the counters (made at start-up, kept
 * across restarts), this process's slot, what one request counts, the `krenalis-auth-metrics`
 * handler and mod_status's "Krenalis auth" section. Counting is in src/metrics.c. */
#ifndef KA_APACHE_METRICS_H
#define KA_APACHE_METRICS_H

#include "httpd.h"

#include "../decide.h"
#include "../metrics.h"

#define KA_METRICS_HANDLER "krenalis-auth-metrics"
#define KA_REFUSAL_ENV "KRENALIS_REFUSAL"

#include <time.h>

/* The counters of one configuration load in one process. */
typedef struct ka_metrics {
    ka_metrics_table *table;   /* in shared memory */
    ka_metrics_counters *mine; /* this process's slot (NULL in the parent) */
} ka_metrics;

/* What one request counts, noted by the request hooks and counted when it is logged. */
typedef struct {
    unsigned char noted;    /* the module answered for the request (or let it through) */
    unsigned char endpoint; /* ka_metric_endpoint */
    unsigned char outcome;  /* ka_outcome */
    unsigned char key_type; /* ka_key_type of an accepted key, else KA_KEY_NONE */
    unsigned char timed;    /* decide_ns holds the time of at least one decision */
    unsigned char off;      /* KrenalisAuthMetrics Off: never timed nor counted; a refusal's
                               reason still goes to the environment (KRENALIS_REFUSAL) */
    ka_refusal reason;      /* KA_REFUSAL_NONE unless refused */
    uint64_t decide_ns;     /* time in the decision tables and the store */
} ka_metrics_req;

/* post_config: the table of slots, made in the process pool the first time (so that counts
 * survive graceful and plain restarts), with a slot per possible child (ServerLimit) and some
 * to spare. NULL, logged, when the shared memory cannot be made: nothing is counted then. */
ka_metrics *ka_metrics_attach(apr_pool_t *pconf, server_rec *s);

/* child_init: claims this process's slot. */
void ka_metrics_child_init(ka_metrics *m);

/* This process's counters (NULL: none, nothing is counted). */
static inline ka_metrics_counters *ka_metrics_mine(const ka_metrics *m)
{
    return m ? m->mine : NULL;
}

/* A monotonic clock in nanoseconds (a vDSO call, no syscall). */
static inline uint64_t ka_metrics_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* The request hooks' notes. */
void ka_metrics_note_accepted(ka_metrics_req *mr, ka_endpoint endpoint, ka_key_type key_type);
void ka_metrics_note_preflight(ka_metrics_req *mr);
/* A refusal: counts it (reason, unavailable when the store could not be read) and puts the
 * reason in r's environment (KRENALIS_REFUSAL, for LogFormat and mod_headers). */
void ka_metrics_note_refused(request_rec *r, ka_metrics_req *mr, ka_endpoint endpoint,
                             ka_refusal reason);

/* log_transaction: counts a request noted in mr with the status sent (unless mr->off), and
 * puts its refusal reason in the environment of the request the access log reads. */
void ka_metrics_count(request_rec *r, ka_metrics *m, const ka_metrics_req *mr);

/* The sum over every process (pool-allocated); the caller adds the store's gauges. NULL when
 * there are no counters. */
ka_metrics_snapshot *ka_metrics_snapshot_take(ka_metrics *m, apr_pool_t *p);

/* The `krenalis-auth-metrics` handler's answer for snapshot s (NULL: 503). */
int ka_metrics_serve(request_rec *r, const ka_metrics_snapshot *s);

/* mod_status's section for s (flags: AP_STATUS_*). */
void ka_metrics_status_section(request_rec *r, int flags, const ka_metrics_snapshot *s);

#endif
