/* cors.c: Access-Control-Allow-Origin for ingestion and settings endpoints (SPEC §9). */
#include <string.h>

#include "cors.h"
#include "tests.h"

static void test_any_origin(void **state)
{
    static const char origin[] = "https://shop.example.com";
    const char *r;

    (void)state;
    /* "*" (allowed == NULL) reflects the request's Origin, the same string. */
    r = ka_cors_allow_origin(NULL, 0, origin);
    assert_ptr_equal(r, origin);
    r = ka_cors_allow_origin(NULL, 0, "http://localhost:8080");
    assert_string_equal(r, "http://localhost:8080");
    r = ka_cors_allow_origin(NULL, 0, "null");
    assert_string_equal(r, "null");
    /* No Origin: "*". */
    r = ka_cors_allow_origin(NULL, 0, NULL);
    assert_string_equal(r, "*");
}

static void test_list(void **state)
{
    static const char *const allowed[] = {"https://a.com", "https://b.com:8443"};
    const char *r;

    (void)state;
    r = ka_cors_allow_origin(allowed, 2, "https://a.com");
    assert_string_equal(r, "https://a.com");
    r = ka_cors_allow_origin(allowed, 2, "https://b.com:8443");
    assert_string_equal(r, "https://b.com:8443");
    /* Scheme and host compare case-insensitively; what is sent back is the request's. */
    r = ka_cors_allow_origin(allowed, 2, "HTTPS://A.COM");
    assert_string_equal(r, "HTTPS://A.COM");
    assert_null(ka_cors_allow_origin(allowed, 2, "https://c.com"));
    assert_null(ka_cors_allow_origin(allowed, 2, "http://a.com"));
    assert_null(ka_cors_allow_origin(allowed, 2, "https://a.com:443"));
    assert_null(ka_cors_allow_origin(allowed, 2, "https://b.com"));
    assert_null(ka_cors_allow_origin(allowed, 2, "https://a.co"));
    assert_null(ka_cors_allow_origin(allowed, 2, "https://a.com.evil.com"));
    assert_null(ka_cors_allow_origin(allowed, 2, "null"));
    /* No Origin: "*" with a list too. */
    assert_string_equal(ka_cors_allow_origin(allowed, 2, NULL), "*");
    /* An empty list allows nothing. */
    assert_null(ka_cors_allow_origin(allowed, 0, "https://a.com"));
}

static void test_invalid_origins(void **state)
{
    static const char *const bad[] = {
        "",
        "https://a.com/path",
        "https://a.com/",
        "a, b",
        "https://a.com, https://b.com",
        "https://a.com,https://b.com",
        "https://",
        "://a.com",
        "a.com",
        "https:/a.com",
        "https://a.com?x=1",
        "https://a.com#f",
        "https://user@a.com",
        "https://a .com",
        "https://a.com\t",
        " https://a.com",
        "https://a.com\r\nX-Injected: 1",
        "https://\xc3\xa9.com",
        "https://a.com\x7f",
        "null ",
        "Null, null",
    };
    static const char *const allowed[] = {"https://a.com"};

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (ka_origin_valid(bad[i]))
            fail_msg("origin accepted: \"%s\"", bad[i]);
        assert_null(ka_cors_allow_origin(NULL, 0, bad[i]));
        assert_null(ka_cors_allow_origin(allowed, 1, bad[i]));
    }
}

static void test_valid_origins(void **state)
{
    static const char *const good[] = {
        "https://a.com", "http://localhost", "http://127.0.0.1:3000",    "https://[::1]:8443",
        "null",          "app://x",          "chrome-extension://abcdef"};
    (void)state;
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        if (!ka_origin_valid(good[i]))
            fail_msg("origin refused: \"%s\"", good[i]);
}

static void test_origin_length(void **state)
{
    static char origin[KA_ORIGIN_MAX + 2];

    (void)state;
    memcpy(origin, "https://", 8);
    memset(origin + 8, 'a', KA_ORIGIN_MAX - 8);
    origin[KA_ORIGIN_MAX] = '\0';
    assert_int_equal(ka_origin_valid(origin), 1);
    origin[KA_ORIGIN_MAX] = 'a';
    origin[KA_ORIGIN_MAX + 1] = '\0';
    assert_int_equal(ka_origin_valid(origin), 0);
    assert_null(ka_cors_allow_origin(NULL, 0, origin));
}

int run_cors_tests(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_any_origin),      cmocka_unit_test(test_list),
        cmocka_unit_test(test_invalid_origins), cmocka_unit_test(test_valid_origins),
        cmocka_unit_test(test_origin_length),
    };
    return cmocka_run_group_tests_name("cors", tests, NULL, NULL);
}
