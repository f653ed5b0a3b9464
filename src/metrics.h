/* The module's counters (SPEC §12): what is counted, the table of per-process slots they live
 * in (shared memory made by the module at start-up), and the two renderings of their sum: the
 * Prometheus text format (version 0.0.4) and mod_status's section. Pure C: no APR, no httpd,
 * so the unit tests drive it as it is. docs/observability.md describes every metric. */
#ifndef KA_METRICS_H
#define KA_METRICS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Why a request was refused: a small fixed vocabulary (KRENALIS_REFUSAL, the `reason` label).
 * Never a key, a token or an ID. The order is the rendering order; names in ka_refusal_name. */
typedef enum {
    KA_REFUSAL_NONE = 0,        /* not refused */
    KA_REFUSAL_MISSING,         /* "missing-credential": no Authorization, no body writeKey */
    KA_REFUSAL_REPEATED,        /* "repeated-header": Authorization / Krenalis-Workspace twice */
    KA_REFUSAL_BAD_AUTHZ,       /* "invalid-authorization": not a Bearer value */
    KA_REFUSAL_WRONG_ENDPOINT,  /* "wrong-endpoint": a credential this endpoint does not take */
    KA_REFUSAL_MALFORMED,       /* "malformed": an api_ key that fails SPEC §2 */
    KA_REFUSAL_UNKNOWN_KEY,     /* "unknown-key": no such key (or its organization is gone) */
    KA_REFUSAL_DISABLED_ORG,    /* "disabled-org": the key's organization is disabled */
    KA_REFUSAL_WS_INVALID,      /* "workspace-invalid": the header is not an ID, or restricted */
    KA_REFUSAL_WS_UNKNOWN,      /* "workspace-unknown": not a workspace of the organization */
    KA_REFUSAL_WS_POLICY,       /* "workspace-policy": KrenalisAuthWorkspace required/forbidden */
    KA_REFUSAL_CONNECTION_ID,   /* "connection-id": connectionId missing, or with a write key */
    KA_REFUSAL_UNKNOWN_CONN,    /* "unknown-connection": connectionId not the key's */
    KA_REFUSAL_BODY_WRITE_KEY,  /* "body-write-key": body writeKey not a string, empty, twice */
    KA_REFUSAL_BODY_TOO_LARGE,  /* "body-too-large": over KrenalisAuthMaxBodySize (413) */
    KA_REFUSAL_BODY_UNREADABLE, /* "body-unreadable": the body could not be read */
    KA_REFUSAL_SETTINGS_PATH,   /* "settings-path": settings path without a key (404) */
    KA_REFUSAL_ORGS_KEY,        /* "orgs-key": not the organizations key, or none configured */
    KA_REFUSAL_NOT_ALLOWED,     /* "not-allowed": a Require line denied an authenticated key */
    KA_REFUSAL_UNAVAILABLE,     /* "unavailable": the store cannot be read (503) */
    KA_REFUSAL_COUNT
} ka_refusal;

/* The reason's name ("" for KA_REFUSAL_NONE and out-of-range values). */
const char *ka_refusal_name(ka_refusal r);

/* The `endpoint` label: the route of the request, or a CORS preflight. */
typedef enum {
    KA_MEP_API = 0,
    KA_MEP_INGESTION,
    KA_MEP_SETTINGS,
    KA_MEP_ORGS,
    KA_MEP_PREFLIGHT,
    KA_MEP_COUNT
} ka_metric_endpoint;

/* The `outcome` label. */
typedef enum { KA_OUT_ACCEPTED = 0, KA_OUT_REFUSED, KA_OUT_UNAVAILABLE, KA_OUT_COUNT } ka_outcome;

/* `key_type`: indexed by ka_key_type (none, api, event-write, organizations). */
#define KA_M_KEY_TYPES 4

/* `status`: every status of the IANA registry has an index; any other is counted under index 0
 * and rendered as status="other". */
#define KA_M_STATUSES 64
int ka_metrics_status_index(int status);
int ka_metrics_status_of(int index); /* 0 for index 0 ("other") and out of range */

/* krenalis_auth_decision_seconds: upper bounds in nanoseconds; the last bucket is +Inf. */
#define KA_M_BUCKETS 14

/* One process's counters (or their sum). Counted with relaxed atomic adds: exact with threads
 * too, and no lock (nor syscall) on the request path. Buckets are not cumulative here. */
typedef struct {
    uint64_t requests[KA_MEP_COUNT][KA_OUT_COUNT][KA_M_KEY_TYPES][KA_M_STATUSES];
    uint64_t refusals[KA_REFUSAL_COUNT];
    uint64_t decision_buckets[KA_M_BUCKETS];
    uint64_t decision_ns; /* sum of the observed decision times */
    uint64_t memo_hits;
    uint64_t store_reopens;
    uint64_t store_faults;
    uint64_t lookup_hits;   /* store look-ups the look-up cache answered */
    uint64_t lookup_misses; /* look-ups it could not answer: read from the store, then kept */
} ka_metrics_counters;

/* Counts one request the module answered for (or let through). key_type is a ka_key_type;
 * reason is KA_REFUSAL_NONE unless refused or unavailable. Out-of-range values are clamped. */
void ka_metrics_count_request(ka_metrics_counters *c, ka_metric_endpoint ep, ka_outcome outcome,
                              int key_type, int status, ka_refusal reason);

/* Observes one decision time, in nanoseconds. */
void ka_metrics_observe_decision(ka_metrics_counters *c, uint64_t ns);

/* c->field += 1, atomically (relaxed). For memo_hits, store_reopens, store_faults. */
void ka_metrics_inc(uint64_t *field);
/* c->field += n, atomically (relaxed). For lookup_hits, lookup_misses. */
void ka_metrics_add_n(uint64_t *field, uint64_t n);

/* dst += src, each value read atomically (relaxed) while other processes count. */
void ka_metrics_add(ka_metrics_counters *dst, const ka_metrics_counters *src);

/* ---- the table of slots (in shared memory) ----
 * One slot per process, claimed by its PID at child start-up: a slot whose owner is gone is
 * taken over with its counts, which therefore survive the children that made them. When every
 * slot is held by a live process, the last one (shared, still exact: atomic adds) is used. */
typedef struct {
    int32_t owner; /* PID of the process that counts here, 0: never claimed */
    char pad[60];  /* the counters start on their own cache line */
    ka_metrics_counters c;
} ka_metrics_slot;

typedef struct {
    uint32_t magic;
    uint32_t nslots; /* claimable slots; slot[nslots] is the shared overflow slot */
    uint64_t pad[7];
    ka_metrics_slot slot[];
} ka_metrics_table;

#define KA_METRICS_MAGIC 0x4b414d31u /* "KAM1" */

/* Bytes of a table with nslots claimable slots (and the overflow slot). */
size_t ka_metrics_table_size(unsigned nslots);

/* Lays a table out over zeroed memory of ka_metrics_table_size(nslots) bytes. */
void ka_metrics_table_init(ka_metrics_table *t, unsigned nslots);

/* The slot of process self: a free slot, else one whose owner is dead (alive(pid) == 0), else
 * the overflow slot. Safe against other processes claiming at the same time. */
ka_metrics_counters *ka_metrics_claim(ka_metrics_table *t, pid_t self, int (*alive)(pid_t pid));

/* Sum of every slot into out (zeroed first). */
void ka_metrics_sum(const ka_metrics_table *t, ka_metrics_counters *out);

/* ---- rendering ---- */

typedef struct {
    ka_metrics_counters total;
    const char *version;     /* krenalis_auth_build_info{version} */
    int have_txnid;          /* the store could be read: last_txnid is set */
    uint64_t last_txnid;     /* krenalis_auth_store_last_txnid */
    int mirrored;            /* a mirrored store (issue 14): the two gauges below are set */
    uint64_t mirror_version; /* krenalis_auth_mirror_version */
    double mirror_confirmed; /* krenalis_auth_mirror_confirmed_timestamp_seconds (Unix time) */
} ka_metrics_snapshot;

/* The Prometheus text format (0.0.4) of s into buf (cap bytes, NUL-terminated when cap > 0).
 * Returns the length of the whole text: when it is >= cap the text was cut, and a buffer of
 * the returned length + 1 holds it. Series of krenalis_auth_requests_total with a zero count
 * are left out; every other metric is always there (mirror gauges: for a mirrored store). */
size_t ka_metrics_render(const ka_metrics_snapshot *s, char *buf, size_t cap);

/* mod_status's "Krenalis auth" section: HTML, or with short_form the `?auto` lines
 * ("KrenalisAuthRequests: N", ...). Same return convention as ka_metrics_render. */
size_t ka_metrics_render_status(const ka_metrics_snapshot *s, int short_form, char *buf,
                                size_t cap);

#endif
