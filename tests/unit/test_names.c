/* names.c: the words of the directives and of krenalis-keys, one rule for both. */
#include <stdio.h>
#include <string.h>

#include "names.h"
#include "tests.h"

static void test_endpoints(void **state)
{
    static const struct {
        const char *word;
        ka_endpoint want;
    } ok[] = {{"auto", KA_EP_AUTO},         {"api", KA_EP_API},
              {"API", KA_EP_API},           {"Ingestion", KA_EP_INGESTION},
              {"SETTINGS", KA_EP_SETTINGS}, {"organizations", KA_EP_ORGS},
              {"OrGaNiZaTiOnS", KA_EP_ORGS}};
    static const char *const bad[] = {"",     "apis", "ap",         "organization",
                                      " api", "api ", "ingestion\n"};
    ka_endpoint ep;

    (void)state;
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        ep = (ka_endpoint)-1;
        assert_true(ka_endpoint_parse(ok[i].word, &ep));
        assert_int_equal(ep, ok[i].want);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ep = KA_EP_ORGS;
        assert_false(ka_endpoint_parse(bad[i], &ep));
        assert_int_equal(ep, KA_EP_ORGS); /* untouched */
    }
}

static void test_ws_policies(void **state)
{
    ka_ws_policy p;

    (void)state;
    assert_true(ka_ws_policy_parse("optional", &p));
    assert_int_equal(p, KA_WS_OPTIONAL);
    assert_true(ka_ws_policy_parse("Required", &p));
    assert_int_equal(p, KA_WS_REQUIRED);
    assert_true(ka_ws_policy_parse("FORBIDDEN", &p));
    assert_int_equal(p, KA_WS_FORBIDDEN);
    p = KA_WS_REQUIRED;
    assert_false(ka_ws_policy_parse("never", &p));
    assert_false(ka_ws_policy_parse("", &p));
    assert_int_equal(p, KA_WS_REQUIRED);
}

/* Key types are compared as the backend sees them (KRENALIS_KEY_TYPE): exactly. */
static void test_key_types(void **state)
{
    static const ka_key_type types[] = {KA_KEY_API, KA_KEY_WRITE, KA_KEY_ORGS};
    ka_key_type t;

    (void)state;
    assert_string_equal(ka_key_type_name(KA_KEY_API), "api");
    assert_string_equal(ka_key_type_name(KA_KEY_WRITE), "event-write");
    assert_string_equal(ka_key_type_name(KA_KEY_ORGS), "organizations");
    assert_string_equal(ka_key_type_name(KA_KEY_NONE), "");
    assert_string_equal(ka_key_type_name((ka_key_type)99), "");
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        assert_true(ka_key_type_parse(ka_key_type_name(types[i]), &t));
        assert_int_equal(t, types[i]);
    }
    assert_false(ka_key_type_parse("API", &t));
    assert_false(ka_key_type_parse("", &t));
    assert_false(ka_key_type_parse("write", &t));
}

/* The lists the messages print name every word the parsers take. */
static void test_name_lists(void **state)
{
    char list[128], *save = NULL;
    ka_endpoint ep;
    ka_ws_policy p;
    int n = 0;

    (void)state;
    snprintf(list, sizeof(list), "%s", KA_ENDPOINT_NAMES);
    for (char *w = strtok_r(list, ", ", &save); w; w = strtok_r(NULL, ", ", &save), n++)
        assert_true(ka_endpoint_parse(w, &ep));
    assert_int_equal(n, 5);
    n = 0;
    snprintf(list, sizeof(list), "%s", KA_WS_POLICY_NAMES);
    for (char *w = strtok_r(list, ", ", &save); w; w = strtok_r(NULL, ", ", &save), n++)
        assert_true(ka_ws_policy_parse(w, &p));
    assert_int_equal(n, 3);
}

int run_names_tests(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_endpoints),
        cmocka_unit_test(test_ws_policies),
        cmocka_unit_test(test_key_types),
        cmocka_unit_test(test_name_lists),
    };
    return cmocka_run_group_tests_name("names", tests, NULL, NULL);
}
