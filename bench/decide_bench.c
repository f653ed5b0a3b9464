/* Micro-benchmark of the authentication decision alone: Bearer parsing, API key decoding,
 * HMAC digest, LMDB look-ups and record decoding, as the module runs them for one request.
 *
 *   decide_bench --store DIR --api FILE [--restricted FILE] [--wk FILE] [--workspace WS]
 *                [--body TEMPLATE] [--sample N] [--iters N] [--reps N]
 *
 * FILE: token files written by `krenalis-keys ... bulk-create --tokens` (one token a line).
 * The first --sample lines of each are loaded (bulk-created keys are random, so any lines are a
 * random sample of the store) and shuffled; every decision takes the next token of the set.
 *
 * Each decision is the module's own (src/apache/store.c, linked here): ka_store_decide over a
 * store handle, whose read transaction is begun on the first look-up by renewing a reset one
 * from the child's pool (rwlock + mutex), under the SIGBUS guard, then reset and put back. The
 * connection memo is left out: every decision runs the tables. Malformed tokens are refused
 * before any look-up, so they never begin a transaction, as in the module.
 *
 * --body: a JSON ingestion body holding the 32-character placeholder WRITE_KEY_PLACEHOLDER (see
 * PLACEHOLDER below) where the write key goes; with --wk, the body path is timed too: the body
 * scan (ka_json_scan) alone, and scan + decision, each body carrying a different write key.
 *
 * Prints one JSON object: ns per decision (the best of --reps runs of --iters decisions: other
 * processes can only make a run slower) for each
 * kind of token, and ns per step for the parts of a valid API key decision. Exits 1 when a
 * decision does not come out as expected (a valid key refused, an unknown one accepted...). */
#include <errno.h>
#include <openssl/opensslv.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "apache/ka_private.h"
#include "crypto.h"
#include "decide.h"
#include "keystore.h"
#include "token.h"

#define MAX_REPS 15
#define PLACEHOLDER "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@" /* 32 characters, in --body */

/* ---- the module's store code, outside httpd ---- */

/* What src/apache/store.c needs of httpd: the module (its log index) and the log functions,
 * which httpd itself exports. */
module AP_MODULE_DECLARE_DATA krenalis_auth_module = {STANDARD20_MODULE_STUFF};

static void log_line(const char *fmt, va_list ap)
{
    fputs("decide_bench: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

void ap_log_error_(const char *file, int line, int module_index, int level, apr_status_t status,
                   const server_rec *s, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    log_line(fmt, ap);
    va_end(ap);
}

void ap_log_rerror_(const char *file, int line, int module_index, int level, apr_status_t status,
                    const request_rec *r, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    log_line(fmt, ap);
    va_end(ap);
}

/* A child's store handle and a request record for it. */
typedef struct {
    ka_handle *h;
    const ka_store *st; /* the handle's open store, for the step timings */
    server_rec s;
    request_rec r;
} bench_store;

/* One decision, as the module's; returns its HTTP status (ka_verdict_status: 200 accepted, 0
 * the body is needed) and adds to *began the transactions it began. */
static int decide_once(bench_store *p, const ka_request *req, ka_decision *dec, int *began)
{
    int b = 0;

    ka_store_decide(p->h, &p->r, 0, req, dec, &b);
    *began += b;
    return ka_verdict_status(dec);
}

/* ---- tokens ---- */

typedef struct {
    char **v; /* "Bearer <token>" */
    size_t n;
} tokset;

#define CACHED_KEYS 20000 /* keys in turn in the cached case, as make bench's api-spread */

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static uint64_t rnd(void)
{
    uint64_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return rng_state = x;
}

static void shuffle(tokset *s)
{
    for (size_t i = s->n; i > 1; i--) {
        size_t j = (size_t)(rnd() % i);
        char *t = s->v[i - 1];
        s->v[i - 1] = s->v[j];
        s->v[j] = t;
    }
}

static void die(const char *what)
{
    fprintf(stderr, "decide_bench: %s\n", what);
    exit(2);
}

static char *bearer(const char *tok, size_t len)
{
    char *s = malloc(len + 8);
    if (s == NULL)
        die("out of memory");
    memcpy(s, "Bearer ", 7);
    memcpy(s + 7, tok, len);
    s[len + 7] = '\0';
    return s;
}

static tokset read_tokens(const char *path, size_t max)
{
    tokset s = {NULL, 0};
    FILE *f = fopen(path, "r");
    char line[256];

    if (f == NULL) {
        fprintf(stderr, "decide_bench: cannot open %s: %s\n", path, strerror(errno));
        exit(2);
    }
    s.v = malloc(max * sizeof(char *));
    if (s.v == NULL)
        die("out of memory");
    while (s.n < max && fgets(line, sizeof(line), f)) {
        size_t len = strcspn(line, "\r\n");
        if (len == 0)
            continue;
        s.v[s.n++] = bearer(line, len);
    }
    fclose(f);
    if (s.n == 0) {
        fprintf(stderr, "decide_bench: no tokens in %s\n", path);
        exit(2);
    }
    shuffle(&s);
    return s;
}

/* Well-formed API keys that no store holds (random payloads). */
static tokset unknown_tokens(size_t n)
{
    tokset s = {malloc(n * sizeof(char *)), n};
    uint8_t payload[KA_PAYLOAD_LEN];
    char tok[KA_API_TOKEN_LEN];

    if (s.v == NULL)
        die("out of memory");
    memcpy(tok, "api_", 4);
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < KA_PAYLOAD_LEN; j += 8) {
            uint64_t r = rnd();
            memcpy(payload + j, &r, 8);
        }
        ka_api_body_encode(payload, tok + 4);
        s.v[i] = bearer(tok, KA_API_TOKEN_LEN);
    }
    return s;
}

/* Valid keys with one payload character changed: the whole body is decoded and the CRC does not
 * match (the most expensive way to be malformed). */
static tokset malformed_tokens(const tokset *valid)
{
    tokset s = {malloc(valid->n * sizeof(char *)), valid->n};

    if (s.v == NULL)
        die("out of memory");
    for (size_t i = 0; i < valid->n; i++) {
        char *t = strdup(valid->v[i]);
        char *c = t + 7 + 4 + 20; /* "Bearer " "api_", 21st payload character */
        const char *pos = strchr(ka_alnum62, *c);
        if (t == NULL || pos == NULL)
            die("unexpected token in the API key file");
        *c = ka_alnum62[(pos - ka_alnum62 + 1) % 62];
        s.v[i] = t;
    }
    return s;
}

/* ---- timing ---- */

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static double best(const double *v, int n)
{
    double m = 1e300;
    for (int i = 0; i < n; i++)
        if (v[i] < m)
            m = v[i];
    return m;
}

static size_t g_iters = 200000;
static int g_reps = 5;
static int g_failed = 0;
static volatile unsigned g_sink;

typedef struct {
    const char *name;
    ka_route route;
    const char *workspace;
    int want;        /* expected HTTP status: 200 accepted, else the refusal's */
    int want_txn;    /* 1: a transaction must be begun; 0: none */
    const tokset *s; /* authorization values */
} dcase;

/* ns per decision, best of g_reps runs over the set (after one warm-up pass). */
static double bench_decide(bench_store *p, const dcase *dc)
{
    ka_request req;
    ka_decision dec;
    double runs[MAX_REPS] = {0};
    size_t warm = dc->s->n < g_iters ? dc->s->n : g_iters;

    memset(&req, 0, sizeof(req));
    req.route = dc->route;
    req.workspace = dc->workspace;
    req.ws_policy = KA_WS_OPTIONAL;
    for (size_t i = 0; i < warm; i++) {
        int began = 0;
        req.authorization = dc->s->v[i];
        int rc = decide_once(p, &req, &dec, &began);
        if (rc != dc->want || (began > 0) != dc->want_txn) {
            fprintf(stderr,
                    "decide_bench: %s: decision %d (%s: %s), %d transactions; expected %d, %s\n",
                    dc->name, rc, dec.code ? dec.code : "-", dec.message, began, dc->want,
                    dc->want_txn ? "a transaction" : "no transaction");
            g_failed = 1;
            return -1;
        }
    }
    for (int r = 0; r < g_reps; r++) {
        size_t j = 0;
        int began = 0;
        unsigned acc = 0;
        double t0 = now_ns();
        for (size_t i = 0; i < g_iters; i++) {
            req.authorization = dc->s->v[j];
            if (++j == dc->s->n)
                j = 0;
            acc += (unsigned)decide_once(p, &req, &dec, &began);
        }
        runs[r] = (now_ns() - t0) / (double)g_iters;
        g_sink += acc;
    }
    return best(runs, g_reps);
}

/* The steps of a valid API key decision, each timed alone. */
typedef struct {
    double parse, digest, txn_renew, txn_begin_abort, get_key, get_org, no_store;
} steps;

/* Look-ups without a store: every API key is found, in an enabled organization. What ka_decide
 * costs around the look-ups (parsing included, digest and LMDB excluded). */
static ka_key_rec stub_rec;

static ka_store_status stub_api_key(void *ctx, const uint8_t payload[KA_PAYLOAD_LEN],
                                    ka_key_rec *rec)
{
    *rec = stub_rec;
    return KA_OK;
}

static ka_store_status stub_entity(void *ctx, const char *id, ka_entity *e)
{
    memset(e, 0, sizeof(*e));
    memcpy(e->id, id, KA_ID_LEN);
    e->enabled = 1;
    return KA_OK;
}

static steps bench_steps(bench_store *p, const tokset *api)
{
    steps out;
    size_t n = api->n;
    uint8_t(*payloads)[KA_PAYLOAD_LEN] = malloc(n * KA_PAYLOAD_LEN);
    uint8_t(*digests)[KA_DIGEST_LEN] = malloc(n * KA_DIGEST_LEN);
    char(*orgs)[KA_ID_LEN + 1] = malloc(n * (KA_ID_LEN + 1));
    double runs[MAX_REPS] = {0};
    ka_store_txn *txn;
    char err[256];
    ka_key_rec rec;
    ka_entity e;

    if (payloads == NULL || digests == NULL || orgs == NULL)
        die("out of memory");
    for (size_t i = 0; i < n; i++) {
        const char *tok;
        size_t len;
        if (!ka_bearer_parse(api->v[i], &tok, &len) ||
            !ka_api_body_parse(tok + 4, len - 4, payloads[i]))
            die("a token of the API key file does not parse");
        ka_digest_api(p->st, payloads[i], digests[i]);
    }
    if (ka_store_read_begin(p->st, &txn, err, sizeof(err)) != KA_OK)
        die("cannot begin a read transaction");
    for (size_t i = 0; i < n; i++) {
        if (ka_get_key(txn, p->st, digests[i], &rec) != KA_OK)
            die("a key of the API key file is not in the store");
        memcpy(orgs[i], rec.org, KA_ID_LEN + 1);
    }

#define TIME_LOOP(field, ...)                                                                      \
    do {                                                                                           \
        for (int r = 0; r < g_reps; r++) {                                                         \
            size_t j = 0;                                                                          \
            unsigned acc = 0;                                                                      \
            double t0 = now_ns();                                                                  \
            for (size_t i = 0; i < g_iters; i++) {                                                 \
                __VA_ARGS__;                                                                       \
                if (++j == n)                                                                      \
                    j = 0;                                                                         \
            }                                                                                      \
            runs[r] = (now_ns() - t0) / (double)g_iters;                                           \
            g_sink += acc;                                                                         \
        }                                                                                          \
        out.field = best(runs, g_reps);                                                            \
    } while (0)

    {
        ka_lookup lk = {NULL, stub_api_key, NULL, stub_entity, stub_entity, stub_entity};
        ka_request req;
        ka_decision dec;
        memset(&req, 0, sizeof(req));
        ka_classify("GET", "/v1/ping.txt", KA_EP_AUTO, &req.route);
        if (ka_get_key(txn, p->st, digests[0], &stub_rec) != KA_OK)
            die("a key of the API key file is not in the store");
        TIME_LOOP(no_store, {
            req.authorization = api->v[j];
            acc += (unsigned)ka_decide(&req, &lk, &dec);
        });
    }
    TIME_LOOP(parse, {
        const char *tok;
        size_t len;
        uint8_t pl[KA_PAYLOAD_LEN];
        acc += (unsigned)ka_bearer_parse(api->v[j], &tok, &len);
        acc += (unsigned)ka_api_body_parse(tok + 4, len - 4, pl);
        acc += pl[0];
    });
    TIME_LOOP(digest, {
        uint8_t d[KA_DIGEST_LEN];
        ka_digest_api(p->st, payloads[j], d);
        acc += d[0];
    });
    TIME_LOOP(get_key, {
        acc += (unsigned)ka_get_key(txn, p->st, digests[j], &rec);
        acc += (unsigned)rec.id[0];
    });
    TIME_LOOP(get_org, {
        acc += (unsigned)ka_get_org(txn, p->st, orgs[j], &e);
        acc += (unsigned)e.enabled;
    });
    ka_store_abort(txn);
    TIME_LOOP(txn_renew, { acc += (unsigned)ka_store_txn_cycle(p->h, &p->r); });
    TIME_LOOP(txn_begin_abort, {
        ka_store_txn *x;
        acc += (unsigned)ka_store_read_begin(p->st, &x, err, sizeof(err));
        ka_store_abort(x);
    });
#undef TIME_LOOP
    free(payloads);
    free(digests);
    free(orgs);
    return out;
}

/* The body path: the module reads the body, scans it once (ka_json_scan) and decides again with
 * the fields found. Each body of the set carries a different write key. */
typedef struct {
    size_t bytes;
    double scan, scan_decide;
} body_result;

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf;
    long n;

    if (f == NULL || fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET))
        die("cannot read the --body file");
    buf = malloc((size_t)n + 1);
    if (buf == NULL || fread(buf, 1, (size_t)n, f) != (size_t)n)
        die("cannot read the --body file");
    fclose(f);
    buf[n] = '\0';
    *len = (size_t)n;
    return buf;
}

/* The module's decide / read the body / decide again step (ka_decide_with_body). */
typedef struct {
    bench_store *p;
    int began;
} body_decider;

static ka_verdict decide_step(void *arg, const ka_request *req, ka_decision *dec)
{
    body_decider *d = arg;

    decide_once(d->p, req, dec, &d->began);
    return dec->verdict;
}

typedef struct {
    const char *data;
    size_t len;
} body_source;

static int scan_step(void *arg, ka_body_fields *fields)
{
    const body_source *b = arg;

    ka_json_scan(b->data, b->len, fields);
    return 0;
}

static body_result bench_body(bench_store *p, const char *path, const tokset *wk, ka_route route)
{
    body_result out;
    size_t len, nb = wk->n < 4096 ? wk->n : 4096;
    char *tmpl = read_file(path, &len);
    char *at = strstr(tmpl, PLACEHOLDER);
    char **bodies = malloc(nb * sizeof(char *));
    double runs[MAX_REPS] = {0};
    ka_body_fields fields;
    ka_request req;
    ka_decision dec;

    if (at == NULL || bodies == NULL)
        die("the --body file has no write key placeholder");
    for (size_t i = 0; i < nb; i++) {
        bodies[i] = malloc(len);
        if (bodies[i] == NULL)
            die("out of memory");
        memcpy(bodies[i], tmpl, len);
        memcpy(bodies[i] + (at - tmpl), wk->v[i] + 7, KA_WRITE_KEY_LEN); /* after "Bearer " */
    }
    memset(&req, 0, sizeof(req));
    req.route = route;
    req.ws_policy = KA_WS_OPTIONAL;
    for (size_t i = 0; i < nb; i++) {
        int began = 0, rc;
        ka_json_scan(bodies[i], len, &fields);
        req.body = NULL;
        rc = decide_once(p, &req, &dec, &began);
        if (rc != 0 || dec.verdict != KA_VERDICT_NEED_BODY || began != 0) {
            fprintf(stderr, "decide_bench: body: first decision %d, expected the body needed\n",
                    rc);
            g_failed = 1;
            break;
        }
        req.body = &fields;
        rc = decide_once(p, &req, &dec, &began);
        if (rc != 200) {
            fprintf(stderr, "decide_bench: body: decision %d (%s: %s), expected acceptance\n", rc,
                    dec.code ? dec.code : "-", dec.message);
            g_failed = 1;
            break;
        }
    }
    for (int r = 0; r < g_reps; r++) {
        unsigned acc = 0;
        double t0 = now_ns();
        for (size_t i = 0; i < g_iters; i++) {
            ka_json_scan(bodies[i % nb], len, &fields);
            acc += (unsigned)fields.write_key.len;
        }
        runs[r] = (now_ns() - t0) / (double)g_iters;
        g_sink += acc;
    }
    out.scan = best(runs, g_reps);
    for (int r = 0; r < g_reps; r++) {
        unsigned acc = 0;
        double t0 = now_ns();
        for (size_t i = 0; i < g_iters; i++) {
            body_decider d = {p, 0};
            body_source b = {bodies[i % nb], len};
            req.body = NULL;
            acc +=
                (unsigned)ka_decide_with_body(&req, decide_step, &d, scan_step, &b, &fields, &dec);
            acc += (unsigned)dec.verdict;
        }
        runs[r] = (now_ns() - t0) / (double)g_iters;
        g_sink += acc;
    }
    out.scan_decide = best(runs, g_reps);
    out.bytes = len;
    for (size_t i = 0; i < nb; i++)
        free(bodies[i]);
    free(bodies);
    free(tmpl);
    return out;
}

static void usage(void)
{
    fputs("usage: decide_bench --store DIR --api FILE [--restricted FILE] [--wk FILE]\n"
          "                    [--workspace WS] [--body TEMPLATE] [--sample N] [--iters N]\n"
          "                    [--reps N]\n",
          stderr);
    exit(2);
}

int main(int argc, char **argv)
{
    const char *store = NULL, *api_path = NULL, *restricted_path = NULL, *wk_path = NULL,
               *workspace = NULL, *body_path = NULL;
    size_t sample = 100000;
    bench_store pool;
    apr_pool_t *apool;
    char err[512], spath[4200];
    ka_route api_route, ingest_route;
    tokset api, restricted, wk, unknown, malformed;
    steps st;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (v == NULL)
            usage();
        if (strcmp(a, "--store") == 0)
            store = v;
        else if (strcmp(a, "--api") == 0)
            api_path = v;
        else if (strcmp(a, "--restricted") == 0)
            restricted_path = v;
        else if (strcmp(a, "--wk") == 0)
            wk_path = v;
        else if (strcmp(a, "--workspace") == 0)
            workspace = v;
        else if (strcmp(a, "--body") == 0)
            body_path = v;
        else if (strcmp(a, "--sample") == 0)
            sample = strtoul(v, NULL, 10);
        else if (strcmp(a, "--iters") == 0)
            g_iters = strtoul(v, NULL, 10);
        else if (strcmp(a, "--reps") == 0)
            g_reps = atoi(v);
        else
            usage();
        i++;
    }
    if (store == NULL || api_path == NULL || sample == 0 || g_iters == 0 || g_reps < 1 ||
        g_reps > MAX_REPS)
        usage();

    memset(&pool, 0, sizeof(pool));
    apr_initialize();
    apr_pool_create(&apool, NULL);
    pool.r.server = &pool.s;
    pool.r.request_time = apr_time_now();
    pool.h = ka_handle_make(apool, store, ka_store_default_secret(store, spath, sizeof(spath)), err,
                            sizeof(err));
    if (pool.h == NULL || ka_handle_child_init(pool.h, apool, &pool.s) != APR_SUCCESS ||
        (pool.st = ka_handle_store(pool.h)) == NULL) {
        fprintf(stderr, "decide_bench: %s\n", pool.h ? "cannot open the store" : err);
        return 2;
    }
    ka_classify("GET", "/v1/ping.txt", KA_EP_AUTO, &api_route);
    ka_classify("POST", "/v1/events", KA_EP_AUTO, &ingest_route);

    api = read_tokens(api_path, sample);
    unknown = unknown_tokens(api.n);
    malformed = malformed_tokens(&api);

    printf("{\"store\":\"%s\",\"sample\":%zu,\"iters\":%zu,\"reps\":%d", store, api.n, g_iters,
           g_reps);
    printf(",\"lmdb\":\"%s\",\"openssl\":\"%s\"", ka_store_engine_version(err, sizeof(err)),
           OPENSSL_VERSION_TEXT);
    {
        dcase c = {"api", api_route, NULL, 200, 1, &api};
        printf(",\"api_ns\":%.1f", bench_decide(&pool, &c));
    }
    /* The same keys, fewer of them, answered by the look-up cache (the module's default size)
     * once the warm-up pass has filled it: what a memo miss costs with the cache. */
    if (ka_handle_cache_make(pool.h, apool, KA_KC_DEFAULT_ENTRIES) == APR_SUCCESS) {
        tokset few = {api.v, api.n < CACHED_KEYS ? api.n : CACHED_KEYS};
        dcase c = {"api_cached", api_route, NULL, 200, 1, &few};
        printf(",\"api_cached_ns\":%.1f", bench_decide(&pool, &c));
        ka_handle_cache_make(pool.h, apool, 0);
    }
    if (workspace) {
        dcase c = {"api_ws", api_route, workspace, 200, 1, &api};
        printf(",\"api_ws_ns\":%.1f", bench_decide(&pool, &c));
    }
    if (restricted_path) {
        restricted = read_tokens(restricted_path, sample);
        dcase c = {"restricted", api_route, NULL, 200, 1, &restricted};
        printf(",\"restricted_ns\":%.1f", bench_decide(&pool, &c));
    }
    if (wk_path) {
        wk = read_tokens(wk_path, sample);
        dcase c = {"write_key", ingest_route, NULL, 200, 1, &wk};
        printf(",\"write_key_ns\":%.1f", bench_decide(&pool, &c));
        if (body_path) {
            body_result br = bench_body(&pool, body_path, &wk, ingest_route);
            printf(",\"body_bytes\":%zu,\"body_scan_ns\":%.1f,\"write_key_body_ns\":%.1f", br.bytes,
                   br.scan, br.scan_decide);
        }
    }
    {
        dcase c = {"unknown", api_route, NULL, 401, 1, &unknown};
        printf(",\"unknown_ns\":%.1f", bench_decide(&pool, &c));
    }
    {
        dcase c = {"malformed", api_route, NULL, 401, 0, &malformed};
        printf(",\"malformed_ns\":%.1f", bench_decide(&pool, &c));
    }
    st = bench_steps(&pool, &api);
    printf(",\"steps_ns\":{\"parse\":%.1f,\"digest\":%.1f,\"txn_renew\":%.1f,"
           "\"txn_begin_abort\":%.1f,\"get_key\":%.1f,\"get_org\":%.1f,\"no_store\":%.1f}",
           st.parse, st.digest, st.txn_renew, st.txn_begin_abort, st.get_key, st.get_org,
           st.no_store);
    printf(",\"ok\":%s}\n", g_failed ? "false" : "true");
    ka_handle_close(pool.h);
    apr_pool_destroy(apool);
    apr_terminate();
    return g_failed ? 1 : 0;
}
