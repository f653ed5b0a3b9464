/* metrics.c: the refusal vocabulary, counting, the slot table and the two renderings
 * (SPEC §12, docs/observability.md). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"
#include "tests.h"

static void test_refusal_names(void **state)
{
    (void)state;
    assert_string_equal(ka_refusal_name(KA_REFUSAL_NONE), "");
    assert_string_equal(ka_refusal_name(KA_REFUSAL_COUNT), "");
    assert_string_equal(ka_refusal_name((ka_refusal)-1), "");
    assert_string_equal(ka_refusal_name(KA_REFUSAL_UNKNOWN_KEY), "unknown-key");
    assert_string_equal(ka_refusal_name(KA_REFUSAL_UNAVAILABLE), "unavailable");
    for (int i = 1; i < KA_REFUSAL_COUNT; i++) {
        const char *n = ka_refusal_name((ka_refusal)i);
        /* A label value and an environment value: lower case words and dashes only. */
        assert_true(strlen(n) > 0);
        assert_int_equal(strspn(n, "abcdefghijklmnopqrstuvwxyz-"), strlen(n));
        for (int j = 1; j < i; j++)
            assert_string_not_equal(n, ka_refusal_name((ka_refusal)j));
    }
}

static void test_status_index(void **state)
{
    static const int known[] = {100, 200, 204, 301, 400, 401, 403, 404,
                                413, 422, 429, 451, 500, 502, 503, 511};
    (void)state;
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
        int idx = ka_metrics_status_index(known[i]);
        assert_true(idx > 0 && idx < KA_M_STATUSES);
        assert_int_equal(ka_metrics_status_of(idx), known[i]);
    }
    for (int idx = 1; idx < KA_M_STATUSES; idx++) {
        int st = ka_metrics_status_of(idx);
        if (st != 0)
            assert_int_equal(ka_metrics_status_index(st), idx);
    }
    assert_int_equal(ka_metrics_status_index(0), 0);
    assert_int_equal(ka_metrics_status_index(299), 0);
    assert_int_equal(ka_metrics_status_index(599), 0);
    assert_int_equal(ka_metrics_status_index(-1), 0);
    assert_int_equal(ka_metrics_status_of(0), 0);
    assert_int_equal(ka_metrics_status_of(KA_M_STATUSES), 0);
}

static ka_metrics_snapshot *new_snapshot(void)
{
    ka_metrics_snapshot *s = calloc(1, sizeof(*s));
    assert_non_null(s);
    s->version = "1.2.3";
    return s;
}

static char *render(const ka_metrics_snapshot *s)
{
    size_t n = ka_metrics_render(s, NULL, 0);
    char *buf = malloc(n + 1);

    assert_non_null(buf);
    assert_int_equal(ka_metrics_render(s, buf, n + 1), n);
    assert_int_equal(strlen(buf), n);
    return buf;
}

#define HIST_ZERO                                                                                  \
    "# HELP krenalis_auth_decision_seconds Time the module spent deciding on a request (store "    \
    "reads included, body reads and the backend not).\n"                                           \
    "# TYPE krenalis_auth_decision_seconds histogram\n"

static void test_render_exact(void **state)
{
    ka_metrics_snapshot *s = new_snapshot();
    ka_metrics_counters *c = &s->total;
    char *text;

    (void)state;
    ka_metrics_count_request(c, KA_MEP_API, KA_OUT_ACCEPTED, 1, 200, KA_REFUSAL_NONE);
    ka_metrics_count_request(c, KA_MEP_API, KA_OUT_ACCEPTED, 1, 200, KA_REFUSAL_NONE);
    ka_metrics_count_request(c, KA_MEP_INGESTION, KA_OUT_REFUSED, 0, 401, KA_REFUSAL_UNKNOWN_KEY);
    ka_metrics_count_request(c, KA_MEP_PREFLIGHT, KA_OUT_ACCEPTED, 0, 204, KA_REFUSAL_NONE);
    ka_metrics_count_request(c, KA_MEP_ORGS, KA_OUT_UNAVAILABLE, 0, 503, KA_REFUSAL_UNAVAILABLE);
    ka_metrics_count_request(c, KA_MEP_SETTINGS, KA_OUT_ACCEPTED, 2, 599, KA_REFUSAL_NONE);
    ka_metrics_observe_decision(c, 4000);       /* <= 5 µs */
    ka_metrics_observe_decision(c, 5000);       /* exactly the bound: le="5e-06" */
    ka_metrics_observe_decision(c, 5001);       /* le="1e-05" */
    ka_metrics_observe_decision(c, 2000000000); /* 2 s: +Inf only */
    c->memo_hits = 7;
    c->store_reopens = 1;
    c->store_faults = 2;
    c->lookup_hits = 9;
    c->lookup_misses = 4;
    s->have_txnid = 1;
    s->last_txnid = 42;
    text = render(s);
    assert_string_equal(
        text,
        "# HELP krenalis_auth_requests_total Requests the module decided on, by endpoint, "
        "outcome, HTTP status sent and key type.\n"
        "# TYPE krenalis_auth_requests_total counter\n"
        "krenalis_auth_requests_total{endpoint=\"api\",outcome=\"accepted\",status=\"200\","
        "key_type=\"api\"} 2\n"
        "krenalis_auth_requests_total{endpoint=\"ingestion\",outcome=\"refused\",status=\"401\","
        "key_type=\"none\"} 1\n"
        "krenalis_auth_requests_total{endpoint=\"settings\",outcome=\"accepted\","
        "status=\"other\",key_type=\"event-write\"} 1\n"
        "krenalis_auth_requests_total{endpoint=\"organizations\",outcome=\"unavailable\","
        "status=\"503\",key_type=\"none\"} 1\n"
        "krenalis_auth_requests_total{endpoint=\"preflight\",outcome=\"accepted\",status=\"204\","
        "key_type=\"none\"} 1\n"
        "# HELP krenalis_auth_refusals_total Refused requests by reason "
        "(docs/observability.md lists the reasons).\n"
        "# TYPE krenalis_auth_refusals_total counter\n"
        "krenalis_auth_refusals_total{reason=\"missing-credential\"} 0\n"
        "krenalis_auth_refusals_total{reason=\"repeated-header\"} 0\n"
        "krenalis_auth_refusals_total{reason=\"invalid-authorization\"} 0\n"
        "krenalis_auth_refusals_total{reason=\"wrong-endpoint\"} 0\n"
        "krenalis_auth_refusals_total{reason=\"malformed\"} 0\n"
        "krenalis_auth_refusals_total{reason=\"unknown-key\"} 1\n"
        "krenalis_auth_refusals_total{reason=\"disabled-org\"} 0\n"
        "krenalis_auth_refusals_total{reason=\"workspace-invalid\"} 0\n"
        "krenalis_auth_refusals_total{reason=\"workspace-unknown\"} 0\n"
        "krenalis_auth_refusals_total{reason=\"workspace-policy\"} 0\n"
        "krenalis_auth_refusals_total{reason=\"connection-id\"} 0\n"
        "krenalis_auth_refusals_total{reason=\"unknown-connection\"} 0\n"
        "krenalis_auth_refusals_total{reason=\"body-write-key\"} 0\n"
        "krenalis_auth_refusals_total{reason=\"body-too-large\"} 0\n"
        "krenalis_auth_refusals_total{reason=\"body-unreadable\"} 0\n"
        "krenalis_auth_refusals_total{reason=\"settings-path\"} 0\n"
        "krenalis_auth_refusals_total{reason=\"orgs-key\"} 0\n"
        "krenalis_auth_refusals_total{reason=\"not-allowed\"} 0\n"
        "krenalis_auth_refusals_total{reason=\"unavailable\"} 1\n" HIST_ZERO
        "krenalis_auth_decision_seconds_bucket{le=\"5e-06\"} 2\n"
        "krenalis_auth_decision_seconds_bucket{le=\"1e-05\"} 3\n"
        "krenalis_auth_decision_seconds_bucket{le=\"2.5e-05\"} 3\n"
        "krenalis_auth_decision_seconds_bucket{le=\"5e-05\"} 3\n"
        "krenalis_auth_decision_seconds_bucket{le=\"0.0001\"} 3\n"
        "krenalis_auth_decision_seconds_bucket{le=\"0.00025\"} 3\n"
        "krenalis_auth_decision_seconds_bucket{le=\"0.0005\"} 3\n"
        "krenalis_auth_decision_seconds_bucket{le=\"0.001\"} 3\n"
        "krenalis_auth_decision_seconds_bucket{le=\"0.0025\"} 3\n"
        "krenalis_auth_decision_seconds_bucket{le=\"0.005\"} 3\n"
        "krenalis_auth_decision_seconds_bucket{le=\"0.01\"} 3\n"
        "krenalis_auth_decision_seconds_bucket{le=\"0.025\"} 3\n"
        "krenalis_auth_decision_seconds_bucket{le=\"0.1\"} 3\n"
        "krenalis_auth_decision_seconds_bucket{le=\"+Inf\"} 4\n"
        "krenalis_auth_decision_seconds_sum 2.000014001\n"
        "krenalis_auth_decision_seconds_count 4\n"
        "# HELP krenalis_auth_memo_hits_total API-endpoint decisions answered from the "
        "connection memo.\n"
        "# TYPE krenalis_auth_memo_hits_total counter\n"
        "krenalis_auth_memo_hits_total 7\n"
        "# HELP krenalis_auth_store_reopens_total Times a child process opened the key store "
        "again after closing it.\n"
        "# TYPE krenalis_auth_store_reopens_total counter\n"
        "krenalis_auth_store_reopens_total 1\n"
        "# HELP krenalis_auth_store_faults_total Times the key store could not be opened or read "
        "(requests got 503).\n"
        "# TYPE krenalis_auth_store_faults_total counter\n"
        "krenalis_auth_store_faults_total 2\n"
        "# HELP krenalis_auth_lookup_cache_hits_total Key store look-ups answered from the look-up "
        "cache.\n"
        "# TYPE krenalis_auth_lookup_cache_hits_total counter\n"
        "krenalis_auth_lookup_cache_hits_total 9\n"
        "# HELP krenalis_auth_lookup_cache_misses_total Key store look-ups the look-up cache could "
        "not answer (read from the store).\n"
        "# TYPE krenalis_auth_lookup_cache_misses_total counter\n"
        "krenalis_auth_lookup_cache_misses_total 4\n"
        "# HELP krenalis_auth_store_last_txnid The last transaction committed to the key store "
        "(LMDB txnid).\n"
        "# TYPE krenalis_auth_store_last_txnid gauge\n"
        "krenalis_auth_store_last_txnid 42\n"
        "# HELP krenalis_auth_build_info The module's version.\n"
        "# TYPE krenalis_auth_build_info gauge\n"
        "krenalis_auth_build_info{version=\"1.2.3\"} 1\n");
    free(text);
    free(s);
}

/* Without a store reading, no txnid gauge; a mirrored store adds its two gauges. */
static void test_render_optional_gauges(void **state)
{
    ka_metrics_snapshot *s = new_snapshot();
    char *text;

    (void)state;
    text = render(s);
    assert_null(strstr(text, "krenalis_auth_store_last_txnid"));
    assert_null(strstr(text, "krenalis_auth_mirror_"));
    /* No request yet: the family is announced, with no series. */
    assert_non_null(strstr(text, "# TYPE krenalis_auth_requests_total counter\n# HELP "
                                 "krenalis_auth_refusals_total"));
    free(text);
    s->mirrored = 1;
    s->mirror_version = 9;
    s->mirror_confirmed = 1764680000.25;
    text = render(s);
    assert_non_null(strstr(text, "\nkrenalis_auth_mirror_version 9\n"));
    assert_non_null(
        strstr(text, "\nkrenalis_auth_mirror_confirmed_timestamp_seconds 1764680000.250\n"));
    free(text);
    free(s);
}

/* A buffer too small: cut and NUL-terminated, the whole length returned. */
static void test_render_short_buffer(void **state)
{
    ka_metrics_snapshot *s = new_snapshot();
    char small[64];
    char *full = render(s);
    size_t n = ka_metrics_render(s, small, sizeof(small));

    (void)state;
    assert_int_equal(n, strlen(full));
    assert_int_equal(strlen(small), sizeof(small) - 1);
    assert_memory_equal(small, full, sizeof(small) - 1);
    n = ka_metrics_render_status(s, 1, small, 10);
    assert_true(n > 10);
    assert_int_equal(strlen(small), 9);
    free(full);
    free(s);
}

static void test_render_status(void **state)
{
    ka_metrics_snapshot *s = new_snapshot();
    ka_metrics_counters *c = &s->total;
    char buf[4096];

    (void)state;
    ka_metrics_count_request(c, KA_MEP_API, KA_OUT_ACCEPTED, 1, 200, KA_REFUSAL_NONE);
    ka_metrics_count_request(c, KA_MEP_API, KA_OUT_REFUSED, 0, 401, KA_REFUSAL_MALFORMED);
    ka_metrics_count_request(c, KA_MEP_API, KA_OUT_REFUSED, 0, 401, KA_REFUSAL_MALFORMED);
    ka_metrics_count_request(c, KA_MEP_API, KA_OUT_UNAVAILABLE, 0, 503, KA_REFUSAL_UNAVAILABLE);
    ka_metrics_observe_decision(c, 3000);
    ka_metrics_observe_decision(c, 5000);
    c->memo_hits = 1;
    s->have_txnid = 1;
    s->last_txnid = 5;
    assert_true(ka_metrics_render_status(s, 1, buf, sizeof(buf)) < sizeof(buf));
    assert_string_equal(buf, "KrenalisAuthAccepted: 1\n"
                             "KrenalisAuthRefused: 2\n"
                             "KrenalisAuthUnavailable: 1\n"
                             "KrenalisAuthDecisions: 2\n"
                             "KrenalisAuthDecisionMicrosecondsAvg: 4\n"
                             "KrenalisAuthMemoHits: 1\n"
                             "KrenalisAuthStoreReopens: 0\n"
                             "KrenalisAuthStoreFaults: 0\n"
                             "KrenalisAuthLookupCacheHits: 0\n"
                             "KrenalisAuthLookupCacheMisses: 0\n"
                             "KrenalisAuthStoreLastTxnid: 5\n"
                             "KrenalisAuthRefusal-malformed: 2\n"
                             "KrenalisAuthRefusal-unavailable: 1\n");
    assert_true(ka_metrics_render_status(s, 0, buf, sizeof(buf)) < sizeof(buf));
    assert_non_null(strstr(buf, "<h2>Krenalis auth</h2>"));
    assert_non_null(strstr(buf, "<tr><th align=\"left\">refused</th><td>2</td></tr>"));
    assert_non_null(strstr(buf, "<tr><th align=\"left\">refused: malformed</th><td>2</td></tr>"));
    assert_non_null(strstr(buf, "</table>\n"));
    free(s);
}

/* ---- the slot table ---- */

static pid_t dead_pid;

static int fake_alive(pid_t pid)
{
    return pid != dead_pid;
}

static void test_claim(void **state)
{
    size_t size = ka_metrics_table_size(2);
    ka_metrics_table *t = calloc(1, size);
    ka_metrics_counters *a, *b, *o, *again, *c, sum;

    (void)state;
    assert_non_null(t);
    assert_true(size >= sizeof(ka_metrics_table) + 3 * sizeof(ka_metrics_slot));
    ka_metrics_table_init(t, 2);
    dead_pid = 0;
    a = ka_metrics_claim(t, 100, fake_alive);
    b = ka_metrics_claim(t, 101, fake_alive);
    o = ka_metrics_claim(t, 102, fake_alive); /* both held by live processes: overflow */
    assert_ptr_equal(a, &t->slot[0].c);
    assert_ptr_equal(b, &t->slot[1].c);
    assert_ptr_equal(o, &t->slot[2].c);
    again = ka_metrics_claim(t, 100, fake_alive);
    assert_ptr_equal(again, a);
    ka_metrics_count_request(a, KA_MEP_API, KA_OUT_ACCEPTED, 1, 200, KA_REFUSAL_NONE);
    ka_metrics_count_request(b, KA_MEP_API, KA_OUT_ACCEPTED, 1, 200, KA_REFUSAL_NONE);
    ka_metrics_count_request(o, KA_MEP_API, KA_OUT_REFUSED, 0, 401, KA_REFUSAL_MISSING);
    ka_metrics_inc(&a->memo_hits);
    /* 100 exits: 103 takes its slot over, and its counts stay in the sum. */
    dead_pid = 100;
    c = ka_metrics_claim(t, 103, fake_alive);
    assert_ptr_equal(c, a);
    assert_int_equal(t->slot[0].owner, 103);
    ka_metrics_count_request(c, KA_MEP_API, KA_OUT_ACCEPTED, 1, 200, KA_REFUSAL_NONE);
    ka_metrics_sum(t, &sum);
    assert_int_equal(sum.requests[KA_MEP_API][KA_OUT_ACCEPTED][1][ka_metrics_status_index(200)], 3);
    assert_int_equal(sum.requests[KA_MEP_API][KA_OUT_REFUSED][0][ka_metrics_status_index(401)], 1);
    assert_int_equal(sum.refusals[KA_REFUSAL_MISSING], 1);
    assert_int_equal(sum.memo_hits, 1);
    free(t);
}

/* Threads of one process count into one slot: no count is lost. */
#define THREADS 4
#define PER_THREAD 200000

static void *count_many(void *arg)
{
    ka_metrics_counters *c = arg;

    for (int i = 0; i < PER_THREAD; i++) {
        ka_metrics_count_request(c, KA_MEP_INGESTION, KA_OUT_ACCEPTED, 2, 200, KA_REFUSAL_NONE);
        ka_metrics_observe_decision(c, 1000);
    }
    return NULL;
}

static void test_threads_exact(void **state)
{
    ka_metrics_counters *c = calloc(1, sizeof(*c));
    pthread_t th[THREADS];

    (void)state;
    assert_non_null(c);
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, count_many, c), 0);
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    assert_int_equal(
        c->requests[KA_MEP_INGESTION][KA_OUT_ACCEPTED][2][ka_metrics_status_index(200)],
        THREADS * PER_THREAD);
    assert_int_equal(c->decision_buckets[0], THREADS * PER_THREAD);
    assert_int_equal(c->decision_ns, (uint64_t)THREADS * PER_THREAD * 1000);
    free(c);
}

int run_metrics_tests(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_refusal_names),
        cmocka_unit_test(test_status_index),
        cmocka_unit_test(test_render_exact),
        cmocka_unit_test(test_render_optional_gauges),
        cmocka_unit_test(test_render_short_buffer),
        cmocka_unit_test(test_render_status),
        cmocka_unit_test(test_claim),
        cmocka_unit_test(test_threads_exact),
    };
    return cmocka_run_group_tests_name("metrics", tests, NULL, NULL);
}
