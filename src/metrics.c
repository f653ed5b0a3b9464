/* Counters, the slot table and the renderings of SPEC §12 (see metrics.h). */
#include "metrics.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const char *const refusal_names[KA_REFUSAL_COUNT] = {
    "",
    "missing-credential",
    "repeated-header",
    "invalid-authorization",
    "wrong-endpoint",
    "malformed",
    "unknown-key",
    "disabled-org",
    "workspace-invalid",
    "workspace-unknown",
    "workspace-policy",
    "connection-id",
    "unknown-connection",
    "body-write-key",
    "body-too-large",
    "body-unreadable",
    "settings-path",
    "orgs-key",
    "not-allowed",
    "unavailable",
};

const char *ka_refusal_name(ka_refusal r)
{
    return (unsigned)r < KA_REFUSAL_COUNT ? refusal_names[r] : "";
}

static const char *const endpoint_names[KA_MEP_COUNT] = {"api", "ingestion", "settings",
                                                         "organizations", "preflight"};
static const char *const outcome_names[KA_OUT_COUNT] = {"accepted", "refused", "unavailable"};
static const char *const key_type_names[KA_M_KEY_TYPES] = {"none", "api", "event-write",
                                                           "organizations"};

/* The IANA status registry, ascending; index 0 stands for any other status. */
static const short statuses[] = {0,   100, 101, 102, 103, 200, 201, 202, 203, 204, 205, 206, 207,
                                 208, 226, 300, 301, 302, 303, 304, 305, 307, 308, 400, 401, 402,
                                 403, 404, 405, 406, 407, 408, 409, 410, 411, 412, 413, 414, 415,
                                 416, 417, 418, 421, 422, 423, 424, 425, 426, 428, 429, 431, 451,
                                 500, 501, 502, 503, 504, 505, 506, 507, 508, 510, 511};
#define NSTATUSES ((int)(sizeof(statuses) / sizeof(statuses[0])))
_Static_assert(sizeof(statuses) / sizeof(statuses[0]) <= KA_M_STATUSES, "status table too big");

int ka_metrics_status_index(int status)
{
    int lo = 1, hi = NSTATUSES - 1;

    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (statuses[mid] == status)
            return mid;
        if (statuses[mid] < status)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return 0;
}

int ka_metrics_status_of(int index)
{
    return index > 0 && index < NSTATUSES ? statuses[index] : 0;
}

/* Upper bounds of krenalis_auth_decision_seconds, in nanoseconds and as rendered. */
static const uint64_t bucket_ns[KA_M_BUCKETS - 1] = {5000,     10000,    25000,    50000,   100000,
                                                     250000,   500000,   1000000,  2500000, 5000000,
                                                     10000000, 25000000, 100000000};
static const char *const bucket_le[KA_M_BUCKETS] = {
    "5e-06", "1e-05",  "2.5e-05", "5e-05", "0.0001", "0.00025", "0.0005",
    "0.001", "0.0025", "0.005",   "0.01",  "0.025",  "0.1",     "+Inf"};

static void add1(uint64_t *p)
{
    __atomic_fetch_add(p, 1, __ATOMIC_RELAXED);
}

void ka_metrics_inc(uint64_t *field)
{
    add1(field);
}

void ka_metrics_add_n(uint64_t *field, uint64_t n)
{
    if (n != 0)
        __atomic_fetch_add(field, n, __ATOMIC_RELAXED);
}

void ka_metrics_count_request(ka_metrics_counters *c, ka_metric_endpoint ep, ka_outcome outcome,
                              int key_type, int status, ka_refusal reason)
{
    if ((unsigned)ep >= KA_MEP_COUNT)
        ep = KA_MEP_API;
    if ((unsigned)outcome >= KA_OUT_COUNT)
        outcome = KA_OUT_REFUSED;
    if ((unsigned)key_type >= KA_M_KEY_TYPES)
        key_type = 0;
    add1(&c->requests[ep][outcome][key_type][ka_metrics_status_index(status)]);
    if (reason != KA_REFUSAL_NONE && (unsigned)reason < KA_REFUSAL_COUNT)
        add1(&c->refusals[reason]);
}

void ka_metrics_observe_decision(ka_metrics_counters *c, uint64_t ns)
{
    int i = 0;

    while (i < KA_M_BUCKETS - 1 && ns > bucket_ns[i])
        i++;
    add1(&c->decision_buckets[i]);
    __atomic_fetch_add(&c->decision_ns, ns, __ATOMIC_RELAXED);
}

/* The counters are an array of uint64_t from end to end. */
#define NWORDS (sizeof(ka_metrics_counters) / sizeof(uint64_t))
_Static_assert(sizeof(ka_metrics_counters) % sizeof(uint64_t) == 0, "counters are words");

void ka_metrics_add(ka_metrics_counters *dst, const ka_metrics_counters *src)
{
    uint64_t *d = (uint64_t *)dst;
    const uint64_t *s = (const uint64_t *)src;

    for (size_t i = 0; i < NWORDS; i++)
        d[i] += __atomic_load_n(&s[i], __ATOMIC_RELAXED);
}

/* ---- the table ---- */

size_t ka_metrics_table_size(unsigned nslots)
{
    return sizeof(ka_metrics_table) + ((size_t)nslots + 1) * sizeof(ka_metrics_slot);
}

void ka_metrics_table_init(ka_metrics_table *t, unsigned nslots)
{
    t->nslots = nslots;
    t->magic = KA_METRICS_MAGIC;
}

static int take(ka_metrics_slot *s, int32_t from, pid_t self)
{
    return __atomic_compare_exchange_n(&s->owner, &from, (int32_t)self, 0, __ATOMIC_ACQ_REL,
                                       __ATOMIC_ACQUIRE);
}

ka_metrics_counters *ka_metrics_claim(ka_metrics_table *t, pid_t self, int (*alive)(pid_t pid))
{
    /* Free slots first, so that the slot of a child that just exited is left to be reused
     * only when the table is full of them. */
    for (unsigned i = 0; i < t->nslots; i++)
        if (__atomic_load_n(&t->slot[i].owner, __ATOMIC_ACQUIRE) == 0 && take(&t->slot[i], 0, self))
            return &t->slot[i].c;
    for (unsigned i = 0; i < t->nslots; i++) {
        int32_t owner = __atomic_load_n(&t->slot[i].owner, __ATOMIC_ACQUIRE);
        if (owner == (int32_t)self ||
            (owner != 0 && !alive((pid_t)owner) && take(&t->slot[i], owner, self)))
            return &t->slot[i].c;
    }
    return &t->slot[t->nslots].c;
}

void ka_metrics_sum(const ka_metrics_table *t, ka_metrics_counters *out)
{
    memset(out, 0, sizeof(*out));
    for (unsigned i = 0; i <= t->nslots; i++)
        if (i == t->nslots || __atomic_load_n(&t->slot[i].owner, __ATOMIC_ACQUIRE) != 0)
            ka_metrics_add(out, &t->slot[i].c);
}

/* ---- rendering ---- */

typedef struct {
    char *buf;
    size_t cap;
    size_t len; /* of the whole text, also past cap */
} out_t;

static void __attribute__((format(printf, 2, 3))) put(out_t *o, const char *fmt, ...)
{
    va_list ap;
    int n;
    size_t room = o->len < o->cap ? o->cap - o->len : 0;

    va_start(ap, fmt);
    n = vsnprintf(room ? o->buf + o->len : NULL, room, fmt, ap);
    va_end(ap);
    if (n > 0)
        o->len += (size_t)n;
}

static size_t finish(out_t *o)
{
    if (o->cap > 0 && o->len >= o->cap)
        o->buf[o->cap - 1] = '\0';
    return o->len;
}

static void head(out_t *o, const char *name, const char *type, const char *help)
{
    put(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void scalar(out_t *o, const char *name, const char *type, const char *help, uint64_t v)
{
    head(o, name, type, help);
    put(o, "%s %llu\n", name, (unsigned long long)v);
}

static uint64_t decisions(const ka_metrics_counters *c)
{
    uint64_t n = 0;

    for (int i = 0; i < KA_M_BUCKETS; i++)
        n += c->decision_buckets[i];
    return n;
}

size_t ka_metrics_render(const ka_metrics_snapshot *s, char *buf, size_t cap)
{
    const ka_metrics_counters *c = &s->total;
    out_t o = {buf, cap, 0};
    uint64_t cum = 0;

    if (cap > 0)
        buf[0] = '\0';
    head(&o, "krenalis_auth_requests_total", "counter",
         "Requests the module decided on, by endpoint, outcome, HTTP status sent and key type.");
    for (int e = 0; e < KA_MEP_COUNT; e++)
        for (int out = 0; out < KA_OUT_COUNT; out++)
            for (int k = 0; k < KA_M_KEY_TYPES; k++)
                for (int st = 0; st < KA_M_STATUSES; st++) {
                    uint64_t v = c->requests[e][out][k][st];
                    if (v == 0)
                        continue;
                    put(&o, "krenalis_auth_requests_total{endpoint=\"%s\",outcome=\"%s\",",
                        endpoint_names[e], outcome_names[out]);
                    if (st == 0)
                        put(&o, "status=\"other\"");
                    else
                        put(&o, "status=\"%d\"", ka_metrics_status_of(st));
                    put(&o, ",key_type=\"%s\"} %llu\n", key_type_names[k], (unsigned long long)v);
                }
    head(&o, "krenalis_auth_refusals_total", "counter",
         "Refused requests by reason (docs/observability.md lists the reasons).");
    for (int r = 1; r < KA_REFUSAL_COUNT; r++)
        put(&o, "krenalis_auth_refusals_total{reason=\"%s\"} %llu\n", refusal_names[r],
            (unsigned long long)c->refusals[r]);
    head(&o, "krenalis_auth_decision_seconds", "histogram",
         "Time the module spent deciding on a request (store reads included, body reads and "
         "the backend not).");
    for (int i = 0; i < KA_M_BUCKETS; i++) {
        cum += c->decision_buckets[i];
        put(&o, "krenalis_auth_decision_seconds_bucket{le=\"%s\"} %llu\n", bucket_le[i],
            (unsigned long long)cum);
    }
    put(&o, "krenalis_auth_decision_seconds_sum %llu.%09llu\n",
        (unsigned long long)(c->decision_ns / 1000000000u),
        (unsigned long long)(c->decision_ns % 1000000000u));
    put(&o, "krenalis_auth_decision_seconds_count %llu\n", (unsigned long long)decisions(c));
    scalar(&o, "krenalis_auth_memo_hits_total", "counter",
           "API-endpoint decisions answered from the connection memo.", c->memo_hits);
    scalar(&o, "krenalis_auth_store_reopens_total", "counter",
           "Times a child process opened the key store again after closing it.", c->store_reopens);
    scalar(&o, "krenalis_auth_store_faults_total", "counter",
           "Times the key store could not be opened or read (requests got 503).", c->store_faults);
    scalar(&o, "krenalis_auth_lookup_cache_hits_total", "counter",
           "Key store look-ups answered from the look-up cache.", c->lookup_hits);
    scalar(&o, "krenalis_auth_lookup_cache_misses_total", "counter",
           "Key store look-ups the look-up cache could not answer (read from the store).",
           c->lookup_misses);
    if (s->have_txnid)
        scalar(&o, "krenalis_auth_store_last_txnid", "gauge",
               "The last transaction committed to the key store (LMDB txnid).", s->last_txnid);
    if (s->mirrored) {
        scalar(&o, "krenalis_auth_mirror_version", "gauge",
               "The Krenalis database version the mirrored store holds.", s->mirror_version);
        head(&o, "krenalis_auth_mirror_confirmed_timestamp_seconds", "gauge",
             "When the mirror last confirmed the store current (Unix time).");
        put(&o, "krenalis_auth_mirror_confirmed_timestamp_seconds %.3f\n", s->mirror_confirmed);
    }
    head(&o, "krenalis_auth_build_info", "gauge", "The module's version.");
    put(&o, "krenalis_auth_build_info{version=\"%s\"} 1\n", s->version ? s->version : "");
    return finish(&o);
}

static uint64_t by_outcome(const ka_metrics_counters *c, int outcome)
{
    uint64_t n = 0;

    for (int e = 0; e < KA_MEP_COUNT; e++)
        for (int k = 0; k < KA_M_KEY_TYPES; k++)
            for (int st = 0; st < KA_M_STATUSES; st++)
                n += c->requests[e][outcome][k][st];
    return n;
}

/* One figure of mod_status's section: "KEY: N" for ?auto, a table row for the page. */
static void status_row(out_t *o, int short_form, const char *key, const char *label, uint64_t v)
{
    if (short_form)
        put(o, "KrenalisAuth%s: %llu\n", key, (unsigned long long)v);
    else
        put(o, "<tr><th align=\"left\">%s</th><td>%llu</td></tr>\n", label, (unsigned long long)v);
}

size_t ka_metrics_render_status(const ka_metrics_snapshot *s, int short_form, char *buf, size_t cap)
{
    const ka_metrics_counters *c = &s->total;
    uint64_t n = decisions(c);
    out_t o = {buf, cap, 0};
    char key[64], label[64];

    if (cap > 0)
        buf[0] = '\0';
    if (!short_form)
        put(&o, "<hr />\n<h2>Krenalis auth</h2>\n<table border=\"0\">\n");
    status_row(&o, short_form, "Accepted", "accepted", by_outcome(c, KA_OUT_ACCEPTED));
    status_row(&o, short_form, "Refused", "refused", by_outcome(c, KA_OUT_REFUSED));
    status_row(&o, short_form, "Unavailable", "unavailable (503)",
               by_outcome(c, KA_OUT_UNAVAILABLE));
    status_row(&o, short_form, "Decisions", "decisions", n);
    status_row(&o, short_form, "DecisionMicrosecondsAvg", "decision time, average (&micro;s)",
               n ? c->decision_ns / n / 1000u : 0);
    status_row(&o, short_form, "MemoHits", "memo hits", c->memo_hits);
    status_row(&o, short_form, "StoreReopens", "store reopens", c->store_reopens);
    status_row(&o, short_form, "StoreFaults", "store faults", c->store_faults);
    status_row(&o, short_form, "LookupCacheHits", "look-up cache hits", c->lookup_hits);
    status_row(&o, short_form, "LookupCacheMisses", "look-up cache misses", c->lookup_misses);
    if (s->have_txnid)
        status_row(&o, short_form, "StoreLastTxnid", "store last txnid", s->last_txnid);
    for (int r = 1; r < KA_REFUSAL_COUNT; r++) {
        if (c->refusals[r] == 0)
            continue;
        snprintf(key, sizeof(key), "Refusal-%s", refusal_names[r]);
        snprintf(label, sizeof(label), "refused: %s", refusal_names[r]);
        status_row(&o, short_form, key, label, c->refusals[r]);
    }
    if (!short_form)
        put(&o, "</table>\n");
    return finish(&o);
}
