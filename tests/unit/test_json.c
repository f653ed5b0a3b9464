/* json.c: the error body encoder (SPEC §7) and the ingestion body scan (SPEC §6.2). */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "tests.h"

/* ---- ka_json_error ---- */

static void expect_error_body(const char *code, const char *message, const char *want)
{
    char buf[1024];
    size_t n;

    memset(buf, 'x', sizeof(buf));
    n = ka_json_error(buf, sizeof(buf), code, message);
    assert_int_equal(n, strlen(want));
    assert_memory_equal(buf, want, n);
    assert_int_equal(buf[n], '\0');
}

static void test_error_exact(void **state)
{
    (void)state;
    expect_error_body("X", "Y", "{\"error\":{\"code\":\"X\",\"message\":\"Y\"}}\n");
    expect_error_body("Unauthorized",
                      "Authorization header with the API key is not present in the request",
                      "{\"error\":{\"code\":\"Unauthorized\",\"message\":\"Authorization header "
                      "with the API key is not present in the request\"}}\n");
    expect_error_body("NotFound", "", "{\"error\":{\"code\":\"NotFound\",\"message\":\"\"}}\n");
}

static void test_error_escaping(void **state)
{
    (void)state;
    expect_error_body(
        "BadRequest",
        "Authorization header is invalid; use \"Authorization: Bearer <KEY>\" with an "
        "API key or an event write key",
        "{\"error\":{\"code\":\"BadRequest\",\"message\":\"Authorization header is "
        "invalid; use \\\"Authorization: Bearer <KEY>\\\" with an API key or an "
        "event write key\"}}\n");
    expect_error_body("C", "a\"b\\c", "{\"error\":{\"code\":\"C\",\"message\":\"a\\\"b\\\\c\"}}\n");
    expect_error_body("C", "l1\nl2\rl3\tl4",
                      "{\"error\":{\"code\":\"C\",\"message\":\"l1\\nl2\\rl3\\tl4\"}}\n");
    expect_error_body(
        "C", "\x01\x1f\x08\x0c",
        "{\"error\":{\"code\":\"C\",\"message\":\"\\u0001\\u001f\\u0008\\u000c\"}}\n");
    /* Not HTML-escaped, '/' not escaped, UTF-8 passed through. */
    expect_error_body("C", "<a href=\"/x\">&amp;</a> \xc3\xa9",
                      "{\"error\":{\"code\":\"C\",\"message\":\"<a href=\\\"/x\\\">&amp;</a> "
                      "\xc3\xa9\"}}\n");
    /* The code is escaped too. */
    expect_error_body("a\"b", "m", "{\"error\":{\"code\":\"a\\\"b\",\"message\":\"m\"}}\n");
}

/* Invalid UTF-8 (echoed client bytes) becomes \ufffd, as Go's encoder writes it. */
static void test_error_invalid_utf8(void **state)
{
    (void)state;
    expect_error_body("C", "connection \xff\xc3 does not exist",
                      "{\"error\":{\"code\":\"C\",\"message\":\"connection \\ufffd\\ufffd does "
                      "not exist\"}}\n");
    expect_error_body("C", "\xe2\x82\xac \xf0\x9f\x98\x80 \xed\xa0\x80",
                      "{\"error\":{\"code\":\"C\",\"message\":\"\xe2\x82\xac \xf0\x9f\x98\x80 "
                      "\\ufffd\\ufffd\\ufffd\"}}\n");
}

static void test_error_buffer(void **state)
{
    static const char want[] = "{\"error\":{\"code\":\"X\",\"message\":\"Y\\n\"}}\n";
    size_t len = strlen(want);
    char buf[128];

    (void)state;
    /* Exactly fits: no room for a NUL, still complete. */
    memset(buf, 'z', sizeof(buf));
    assert_int_equal(ka_json_error(buf, len, "X", "Y\n"), len);
    assert_memory_equal(buf, want, len);
    assert_int_equal(buf[len], 'z');
    /* One byte short, anywhere short. */
    for (size_t cap = 0; cap < len; cap++)
        assert_int_equal(ka_json_error(buf, cap, "X", "Y\n"), 0);
    /* The escape that does not fit. */
    assert_int_equal(ka_json_error(buf, len - 6, "X", "Y\n"), 0);
}

static void test_escape_append(void **state)
{
    char buf[16];
    size_t pos = 3;

    (void)state;
    memcpy(buf, "abc", 3);
    assert_int_equal(ka_json_escape(buf, sizeof(buf), &pos, "d\"e"), 1);
    assert_int_equal(pos, 7);
    assert_memory_equal(buf, "abcd\\\"e", 7);
    /* No room: 0 and pos unchanged. */
    assert_int_equal(ka_json_escape(buf, sizeof(buf), &pos, "\x01\x02"), 0);
    assert_int_equal(pos, 7);
    assert_int_equal(ka_json_escape(buf, sizeof(buf), &pos, ""), 1);
    assert_int_equal(pos, 7);
}

/* ---- ka_json_scan ---- */

static ka_body_fields scan(const char *s)
{
    ka_body_fields f;
    memset(&f, 0x5a, sizeof(f));
    ka_json_scan(s, strlen(s), &f);
    return f;
}

static void expect_invalid(const char *s)
{
    ka_body_fields f = scan(s), zero;

    memset(&zero, 0, sizeof(zero));
    if (f.valid_object)
        fail_msg("accepted as a JSON object: %s", s);
    /* Nothing of an invalid body is kept. */
    assert_int_equal(f.write_key.kind, KA_JF_ABSENT);
    assert_int_equal(f.connection_id.kind, KA_JF_ABSENT);
    assert_memory_equal(&f, &zero, sizeof(f));
}

static void expect_wk_string(const char *s, const char *want, size_t wantlen)
{
    ka_body_fields f = scan(s);

    if (!f.valid_object)
        fail_msg("refused: %s", s);
    assert_int_equal(f.write_key.kind, KA_JF_STRING);
    assert_int_equal(f.write_key.too_long, 0);
    assert_int_equal(f.write_key.duplicate, 0);
    assert_int_equal(f.write_key.len, wantlen);
    assert_memory_equal(f.write_key.val, want, wantlen);
    assert_int_equal(f.write_key.val[wantlen], '\0');
}

static void test_scan_write_key_string(void **state)
{
    ka_body_fields f;

    (void)state;
    expect_wk_string("{\"writeKey\":\"abc\"}", "abc", 3);
    expect_wk_string(" \t\r\n{ \"writeKey\" : \"abc\" } \n", "abc", 3);
    expect_wk_string("{\"type\":\"track\",\"writeKey\":\"k1\",\"properties\":{\"a\":[1,2.5e-3,true,"
                     "false,null,\"x\"]}}",
                     "k1", 2);
    f = scan("{\"writeKey\":\"abc\"}");
    assert_int_equal(f.connection_id.kind, KA_JF_ABSENT);
}

static void test_scan_write_key_other(void **state)
{
    static const char *const values[] = {"123", "-1.5e10",       "null", "true",     "false",
                                         "{}",  "{\"a\":\"b\"}", "[]",   "[\"abc\"]"};
    char body[64];

    (void)state;
    for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
        ka_body_fields f;
        snprintf(body, sizeof(body), "{\"writeKey\":%s}", values[i]);
        f = scan(body);
        assert_int_equal(f.valid_object, 1);
        assert_int_equal(f.write_key.kind, KA_JF_OTHER);
        assert_int_equal(f.write_key.duplicate, 0);
    }
}

static void test_scan_write_key_empty(void **state)
{
    (void)state;
    expect_wk_string("{\"writeKey\":\"\"}", "", 0);
}

static void test_scan_escapes(void **state)
{
    (void)state;
    expect_wk_string("{\"writeKey\":\"\\u0041\\u0062c\"}", "Abc", 3);
    expect_wk_string("{\"writeKey\":\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"}", "\"\\/\b\f\n\r\t", 8);
    expect_wk_string("{\"writeKey\":\"\\u00e9\\u20AC\"}", "\xc3\xa9\xe2\x82\xac", 5);
    /* A surrogate pair, and a lone surrogate (U+FFFD). */
    expect_wk_string("{\"writeKey\":\"\\ud83d\\ude00\"}", "\xf0\x9f\x98\x80", 4);
    expect_wk_string("{\"writeKey\":\"\\ud83dx\"}", "\xef\xbf\xbdx", 4);
    expect_wk_string("{\"writeKey\":\"\\u0000\"}", "\0", 1);
    /* Raw UTF-8 passes through. */
    expect_wk_string("{\"writeKey\":\"\xc3\xa9\"}", "\xc3\xa9", 2);
    /* An escaped member name is the same member. */
    expect_wk_string("{\"write\\u004bey\":\"abc\"}", "abc", 3);
}

static void test_scan_duplicate(void **state)
{
    ka_body_fields f;

    (void)state;
    f = scan("{\"writeKey\":\"a\",\"writeKey\":\"b\"}");
    assert_int_equal(f.valid_object, 1);
    assert_int_equal(f.write_key.duplicate, 1);
    assert_int_equal(f.write_key.kind, KA_JF_STRING);
    f = scan("{\"writeKey\":\"a\",\"x\":1,\"writeKey\":null}");
    assert_int_equal(f.valid_object, 1);
    assert_int_equal(f.write_key.duplicate, 1);
    f = scan("{\"connectionId\":\"a\",\"connectionId\":\"a\"}");
    assert_int_equal(f.connection_id.duplicate, 1);
    assert_int_equal(f.write_key.duplicate, 0);
    assert_int_equal(f.write_key.kind, KA_JF_ABSENT);
}

/* Issue 12: a name equal under Unicode simple case folding (Go's encoding/json) is the same
 * member to a backend that decodes into a struct: one copy is a variant (not captured, so
 * never trusted), two copies in any spelling are a duplicate. */
static void test_scan_case_variants(void **state)
{
    static const char *const dups[] = {"{\"writeKey\":\"a\",\"WriteKey\":\"b\"}",
                                       "{\"WRITEKEY\":\"b\",\"writeKey\":\"a\"}",
                                       "{\"writeKey\":\"a\",\"write\xe2\x84\xaa"
                                       "ey\":\"b\"}", /* U+212A KELVIN SIGN */
                                       "{\"write\\u212aey\":\"b\",\"writeKey\":\"a\"}",
                                       "{\"writekey\":1,\"WRITEKEY\":2}",
                                       "{\"writeKey\":\"a\",\"write\\u004bey\":\"b\"}"};
    ka_body_fields f;

    (void)state;
    for (size_t i = 0; i < sizeof(dups) / sizeof(dups[0]); i++) {
        f = scan(dups[i]);
        assert_int_equal(f.valid_object, 1);
        if (!f.write_key.duplicate)
            fail_msg("not a duplicate: %s", dups[i]);
    }
    f = scan("{\"connectionId\":\"a\",\"ConnectionID\":\"b\"}");
    assert_int_equal(f.connection_id.duplicate, 1);
    f = scan("{\"connectionid\":\"b\",\"connectionId\":\"a\"}");
    assert_int_equal(f.connection_id.duplicate, 1);
    assert_string_equal(f.connection_id.val, "a");
    /* One variant alone: noted, not captured. */
    f = scan("{\"WriteKey\":\"abc\"}");
    assert_int_equal(f.write_key.kind, KA_JF_ABSENT);
    assert_int_equal(f.write_key.variant, 1);
    assert_int_equal(f.write_key.duplicate, 0);
    f = scan("{\"writeKey\":\"abc\"}");
    assert_int_equal(f.write_key.variant, 0);
    assert_int_equal(f.write_key.duplicate, 0);
    /* Other runes are other names (dotless i, long s are no letters of these names). */
    f = scan("{\"wr\xc4\xb1teKey\":\"a\",\"writeKey\":\"b\",\"\xc5\xbfwriteKey\":1}");
    assert_int_equal(f.write_key.duplicate, 0);
    assert_string_equal(f.write_key.val, "b");
    /* Nested members are not top-level ones. */
    f = scan("{\"writeKey\":\"a\",\"x\":{\"WriteKey\":\"b\"}}");
    assert_int_equal(f.write_key.duplicate, 0);
}

static void test_scan_nested_ignored(void **state)
{
    ka_body_fields f;

    (void)state;
    f = scan("{\"context\":{\"writeKey\":\"x\",\"connectionId\":\"y\"},\"batch\":[{\"writeKey\":"
             "\"z\"}]}");
    assert_int_equal(f.valid_object, 1);
    assert_int_equal(f.write_key.kind, KA_JF_ABSENT);
    assert_int_equal(f.connection_id.kind, KA_JF_ABSENT);
    /* Top level after a nested one. */
    f = scan("{\"context\":{\"writeKey\":\"x\"},\"writeKey\":\"top\"}");
    assert_int_equal(f.write_key.kind, KA_JF_STRING);
    assert_int_equal(f.write_key.duplicate, 0);
    assert_string_equal(f.write_key.val, "top");
    /* A string value "writeKey" is not a member. */
    f = scan("{\"a\":\"writeKey\",\"b\":[\"writeKey\"]}");
    assert_int_equal(f.valid_object, 1);
    assert_int_equal(f.write_key.kind, KA_JF_ABSENT);
    /* Similar names are other members. */
    f = scan("{\"writeKe\":\"a\",\"writeKeys\":\"b\",\"writeKeywriteKey\":\"c\","
             "\"connectionID\":\"d\"}");
    assert_int_equal(f.valid_object, 1);
    assert_int_equal(f.write_key.kind, KA_JF_ABSENT);
    assert_int_equal(f.connection_id.kind, KA_JF_ABSENT);
    assert_int_equal(f.connection_id.variant, 1); /* "connectionID" folds to it */
}

static void test_scan_connection_id(void **state)
{
    ka_body_fields f;

    (void)state;
    f = scan("{\"connectionId\":\"cnA123456789\",\"writeKey\":\"k\"}");
    assert_int_equal(f.valid_object, 1);
    assert_int_equal(f.connection_id.kind, KA_JF_STRING);
    assert_int_equal(f.connection_id.len, 12);
    assert_string_equal(f.connection_id.val, "cnA123456789");
    assert_string_equal(f.write_key.val, "k");
    f = scan("{\"connectionId\":42}");
    assert_int_equal(f.connection_id.kind, KA_JF_OTHER);
}

static void test_scan_invalid(void **state)
{
    static const char *const bad[] = {
        "",
        " ",
        "{",
        "}",
        "{\"writeKey\":\"abc\"",
        "{\"writeKey\":\"abc}",
        "{\"writeKey\":abc}",
        "{'writeKey':'abc'}",
        "{writeKey:\"abc\"}",
        "{\"writeKey\":\"abc\",}",
        "{\"writeKey\" \"abc\"}",
        "{\"writeKey\":}",
        "{\"writeKey\":\"abc\" \"x\":1}",
        "{\"a\":01}",
        "{\"a\":1.}",
        "{\"a\":.5}",
        "{\"a\":-}",
        "{\"a\":+1}",
        "{\"a\":1e}",
        "{\"a\":NaN}",
        "{\"a\":tru}",
        "{\"a\":nul}",
        "{\"a\":[1,]}",
        "{\"a\":[1 2]}",
        "{\"a\":\"\\x\"}",
        "{\"a\":\"\\u12\"}",
        "{\"a\":\"\\u12g4\"}",
        "{\"a\":\"line\nbreak\"}",
        "{\"a\":\"tab\there\"}",
        "{\"writeKey\":\"abc\\\"}",
        "{,}",
        "{\"a\":1}}",
    };

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        expect_invalid(bad[i]);
}

static void test_scan_nul_byte(void **state)
{
    static const char body[] = "{\"writeKey\":\"a\0b\"}";
    static const char after[] = "{\"writeKey\":\"ab\"}\0";
    ka_body_fields f;

    (void)state;
    ka_json_scan(body, sizeof(body) - 1, &f);
    assert_int_equal(f.valid_object, 0);
    ka_json_scan(after, sizeof(after) - 1, &f);
    assert_int_equal(f.valid_object, 0);
    /* The length is what counts, not a NUL. */
    ka_json_scan(after, sizeof(after) - 2, &f);
    assert_int_equal(f.valid_object, 1);
    assert_string_equal(f.write_key.val, "ab");
    /* Scanning a prefix of a valid body. */
    ka_json_scan(after, 10, &f);
    assert_int_equal(f.valid_object, 0);
}

static void test_scan_trailing(void **state)
{
    (void)state;
    expect_invalid("{\"writeKey\":\"a\"} x");
    expect_invalid("{\"writeKey\":\"a\"}{}");
    expect_invalid("{\"writeKey\":\"a\"},");
    expect_invalid("{\"writeKey\":\"a\"}\"\"");
    expect_invalid("{\"writeKey\":\"a\"}\x0b");
    expect_wk_string("{\"writeKey\":\"a\"}  \r\n\t", "a", 1);
}

static void test_scan_top_level_not_object(void **state)
{
    (void)state;
    expect_invalid("[{\"writeKey\":\"a\"}]");
    expect_invalid("[]");
    expect_invalid("\"writeKey\"");
    expect_invalid("123");
    expect_invalid("null");
    expect_invalid("true");
    expect_invalid("writeKey=abc");
}

/* depth nested containers: "{\"a\":" repeated, the innermost empty. */
static char *nested(int depth, int arrays)
{
    size_t cap = (size_t)depth * 8 + 64, pos = 0;
    char *s = malloc(cap);

    assert_non_null(s);
    pos += (size_t)sprintf(s + pos, "{\"writeKey\":\"k\",\"a\":");
    for (int i = 1; i < depth - 1; i++)
        pos += (size_t)sprintf(s + pos, arrays ? "[" : "{\"a\":");
    if (depth > 1)
        pos += (size_t)sprintf(s + pos, arrays ? "[]" : "{}");
    else
        pos += (size_t)sprintf(s + pos, "0");
    for (int i = 1; i < depth - 1; i++)
        pos += (size_t)sprintf(s + pos, arrays ? "]" : "}");
    pos += (size_t)sprintf(s + pos, "}");
    assert_true(pos < cap);
    return s;
}

static void test_scan_depth(void **state)
{
    (void)state;
    for (int arrays = 0; arrays <= 1; arrays++) {
        char *s;
        ka_body_fields f;

        s = nested(2, arrays);
        f = scan(s);
        assert_int_equal(f.valid_object, 1);
        free(s);

        s = nested(KA_JSON_MAX_DEPTH, arrays);
        f = scan(s);
        assert_int_equal(f.valid_object, 1);
        assert_string_equal(f.write_key.val, "k");
        free(s);

        s = nested(KA_JSON_MAX_DEPTH + 1, arrays);
        f = scan(s);
        assert_int_equal(f.valid_object, 0);
        assert_int_equal(f.write_key.kind, KA_JF_ABSENT);
        free(s);
    }
}

static void test_scan_depth_bomb(void **state)
{
    size_t n = 200000;
    char *s = malloc(n + 2);

    (void)state;
    assert_non_null(s);
    s[0] = '{';
    memcpy(s + 1, "\"a\":", 4);
    memset(s + 5, '[', n - 5);
    s[n] = '\0';
    {
        ka_body_fields f;
        ka_json_scan(s, n, &f);
        assert_int_equal(f.valid_object, 0);
    }
    free(s);
}

static void test_scan_too_long(void **state)
{
    char body[256], val[128];
    ka_body_fields f;

    (void)state;
    /* 64 fits. */
    memset(val, 'k', 64);
    val[64] = '\0';
    snprintf(body, sizeof(body), "{\"writeKey\":\"%s\"}", val);
    f = scan(body);
    assert_int_equal(f.valid_object, 1);
    assert_int_equal(f.write_key.kind, KA_JF_STRING);
    assert_int_equal(f.write_key.too_long, 0);
    assert_int_equal(f.write_key.len, 64);
    assert_string_equal(f.write_key.val, val);
    /* 65 does not: flagged, value emptied, body still valid. */
    val[64] = 'k';
    val[65] = '\0';
    snprintf(body, sizeof(body), "{\"writeKey\":\"%s\",\"connectionId\":\"c\"}", val);
    f = scan(body);
    assert_int_equal(f.valid_object, 1);
    assert_int_equal(f.write_key.kind, KA_JF_STRING);
    assert_int_equal(f.write_key.too_long, 1);
    assert_string_equal(f.write_key.val, "");
    assert_string_equal(f.connection_id.val, "c");
    /* 63 characters + an escape decoding to 2 bytes = 65 bytes. */
    memset(val, 'k', 63);
    val[63] = '\0';
    snprintf(body, sizeof(body), "{\"connectionId\":\"%s\\u00e9\"}", val);
    f = scan(body);
    assert_int_equal(f.valid_object, 1);
    assert_int_equal(f.connection_id.too_long, 1);
    /* A long member name is not captured and does not overflow anything. */
    {
        static char big[24000];
        size_t p = 0;
        p += (size_t)sprintf(big + p, "{\"");
        memset(big + p, 'n', 9000);
        p += 9000;
        p += (size_t)sprintf(big + p, "\":\"");
        memset(big + p, 'v', 9000);
        p += 9000;
        p += (size_t)sprintf(big + p, "\",\"writeKey\":\"");
        memset(big + p, 'w', 5000);
        p += 5000;
        p += (size_t)sprintf(big + p, "\"}");
        ka_json_scan(big, p, &f);
        assert_int_equal(f.valid_object, 1);
        assert_int_equal(f.write_key.kind, KA_JF_STRING);
        assert_int_equal(f.write_key.too_long, 1);
    }
}

/* The plain runs of strings are found sixteen or eight bytes at a time: against a
 * byte-by-byte reference, every position of every kind of byte that ends or breaks a run, in
 * strings of every length around both step sizes, with bytes on both sides of each kind
 * (0x1f/0x20, 0x21-0x23 around '"', 0x5b-0x5d around '\\', high bytes), in each place a string
 * takes: a skipped value, a skipped member name, and the kept member's value. */
static int ref_string_ok(const unsigned char *c, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (c[i] == '"' || c[i] < 0x20)
            return 0;
        if (c[i] == '\\') {
            if (++i >= n || c[i] == '\0')
                return 0;
            if (c[i] == 'u') {
                for (int h = 0; h < 4; h++)
                    if (++i >= n || !isxdigit(c[i]))
                        return 0;
            } else if (strchr("\"\\/bfnrt", c[i]) == NULL) {
                return 0;
            }
        }
    }
    return 1;
}

static void test_scan_skipped_strings(void **state)
{
    static const unsigned char kinds[] = {'"',  '\\', 0x00, 0x01, 0x1f, 0x20, 0x21, 0x22, 0x23,
                                          0x5b, 0x5c, 0x5d, 'n',  0x7f, 0x80, 0xa2, 0xdc, 0xff};
    static const char *const places[][2] = {{"{\"x\":[\"", "\"],\"writeKey\":\"K\"}"},
                                            {"{\"x\":{\"", "\":1},\"writeKey\":\"K\"}"},
                                            {"{\"writeKey\":\"", "\"}"}};
    unsigned char content[56], body[128];
    unsigned seed = 7;

    (void)state;
    for (size_t place = 0; place < 3; place++) {
        for (size_t len = 0; len <= 50; len++) {
            for (size_t pos = 0; pos < len || (len == 0 && pos == 0); pos++) {
                for (size_t k = 0; k < sizeof(kinds); k++) {
                    size_t n = 0;
                    ka_body_fields f;
                    int want;

                    for (size_t i = 0; i < len; i++)
                        content[i] =
                            i == pos ? kinds[k] : (unsigned char)('a' + rand_r(&seed) % 26);
                    n += (size_t)sprintf((char *)body, "%s", places[place][0]);
                    memcpy(body + n, content, len);
                    n += len;
                    n += (size_t)sprintf((char *)body + n, "%s", places[place][1]);
                    want = ref_string_ok(content, len);
                    ka_json_scan((const char *)body, n, &f);
                    if (f.valid_object != want)
                        fail_msg("place %zu, len %zu, byte 0x%02x at %zu: valid %d, want %d", place,
                                 len, kinds[k], pos, f.valid_object, want);
                    if (want && place < 2)
                        assert_string_equal(f.write_key.val, "K");
                    /* The kept value, decoded: with no escape in it, the bytes themselves. */
                    if (want && place == 2 && memchr(content, '\\', len) == NULL) {
                        assert_int_equal(f.write_key.kind, KA_JF_STRING);
                        assert_int_equal(f.write_key.too_long, len > KA_JSON_VALUE_MAX);
                        assert_int_equal(f.write_key.len, len);
                        assert_memory_equal(f.write_key.val, content, len);
                        assert_int_equal(f.write_key.val[len], '\0');
                    }
                    if (len == 0)
                        break;
                }
            }
        }
    }
}

int run_json_tests(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_error_exact),
        cmocka_unit_test(test_error_escaping),
        cmocka_unit_test(test_error_buffer),
        cmocka_unit_test(test_error_invalid_utf8),
        cmocka_unit_test(test_escape_append),
        cmocka_unit_test(test_scan_write_key_string),
        cmocka_unit_test(test_scan_write_key_other),
        cmocka_unit_test(test_scan_write_key_empty),
        cmocka_unit_test(test_scan_escapes),
        cmocka_unit_test(test_scan_duplicate),
        cmocka_unit_test(test_scan_case_variants),
        cmocka_unit_test(test_scan_nested_ignored),
        cmocka_unit_test(test_scan_connection_id),
        cmocka_unit_test(test_scan_invalid),
        cmocka_unit_test(test_scan_nul_byte),
        cmocka_unit_test(test_scan_trailing),
        cmocka_unit_test(test_scan_top_level_not_object),
        cmocka_unit_test(test_scan_depth),
        cmocka_unit_test(test_scan_depth_bomb),
        cmocka_unit_test(test_scan_too_long),
        cmocka_unit_test(test_scan_skipped_strings),
    };
    return cmocka_run_group_tests_name("json", tests, NULL, NULL);
}
