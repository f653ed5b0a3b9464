/* token.c: Bearer parsing, API key bodies (base-62 + CRC-32), write keys, IDs, the
 * organizations key check, hints and ka_pick_chars (SPEC §2, §4, §6.4). */
#include <stdio.h>
#include <string.h>

#include "tests.h"
#include "token.h"

/* SPEC §2 test vector: payload 0x01..0x20. */
static const char VECTOR_BODY[] = "AOyrCBBQEmI63fgWAAw8F12XcPvUqkg0aEwlIqnO0xyCeS3NT";
/* Payload 0x00 * 32 and 0xff * 32 (computed independently with Python's int and zlib.crc32). */
static const char ZERO_BODY[] = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAcatMh";
static const char FF_BODY[] = "8rt2u6nKGYjBKVBiwRgjgwIVVQHRtx4MKCtF1Y6IhzBEqAtVh";

static void vector_payload(uint8_t p[KA_PAYLOAD_LEN])
{
    for (int i = 0; i < KA_PAYLOAD_LEN; i++)
        p[i] = (uint8_t)(i + 1);
}

/* A deterministic generator, so that a failure can be replayed. */
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint8_t rng_byte(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint8_t)(rng_state >> 24);
}

static int parse_str(const char *body, uint8_t payload[KA_PAYLOAD_LEN])
{
    return ka_api_body_parse(body, strlen(body), payload);
}

/* ---- Bearer ---- */

static void expect_bearer(const char *value, const char *want)
{
    const char *tok = NULL;
    size_t len = 0;

    if (!ka_bearer_parse(value, &tok, &len))
        fail_msg("ka_bearer_parse(\"%s\") refused, want token \"%s\"", value, want);
    assert_int_equal(len, strlen(want));
    assert_memory_equal(tok, want, len);
    /* The token points into the value: "the rest" of it. */
    assert_ptr_equal(tok + len, value + strlen(value));
}

static void expect_no_bearer(const char *value)
{
    const char *tok = NULL;
    size_t len = 12345;

    if (ka_bearer_parse(value, &tok, &len))
        fail_msg("ka_bearer_parse(\"%s\") accepted", value ? value : "(null)");
}

static void test_bearer_valid(void **state)
{
    (void)state;
    expect_bearer("Bearer abc123", "abc123");
    expect_bearer("bearer abc", "abc");
    expect_bearer("BEARER abc", "abc");
    expect_bearer("BeArEr abc", "abc");
    expect_bearer("bEaReR token", "token");
    expect_bearer("Bearer\tabc", "abc");
    expect_bearer("Bearer \t  abc", "abc");
    expect_bearer("Bearer     abc", "abc");
    expect_bearer("Bearer\t\t\tabc", "abc");
    /* The rest is the token: inner and trailing blanks stay part of it. */
    expect_bearer("Bearer abc def", "abc def");
    expect_bearer("Bearer abc ", "abc ");
    expect_bearer("Bearer abc\t", "abc\t");
    expect_bearer("Bearer x", "x");
    expect_bearer("Bearer api_AOyrCBBQEmI63fgWAAw8F12XcPvUqkg0aEwlIqnO0xyCeS3NT",
                  "api_AOyrCBBQEmI63fgWAAw8F12XcPvUqkg0aEwlIqnO0xyCeS3NT");
}

static void test_bearer_invalid(void **state)
{
    (void)state;
    expect_no_bearer("");
    expect_no_bearer("Basic x");
    expect_no_bearer("Basic dXNlcjpwYXNz");
    expect_no_bearer("Bearerx");
    expect_no_bearer("BearerX abc");
    expect_no_bearer("Bearer:x");
    expect_no_bearer("Bearer");
    expect_no_bearer("bearer");
    expect_no_bearer("Bearer ");
    expect_no_bearer("Bearer \t");
    expect_no_bearer("Bearer\t\t");
    expect_no_bearer("Bearer   ");
    expect_no_bearer("Bear abc");
    expect_no_bearer("Beare abc");
    expect_no_bearer(" Bearer abc");
    expect_no_bearer("Bearer\nabc");
    expect_no_bearer("Bearer\rabc");
    expect_no_bearer("Token abc");
    expect_no_bearer(NULL);
}

static void test_bearer_length_limit(void **state)
{
    static char value[7 + KA_MAX_TOKEN_LEN + 2];
    const char *tok;
    size_t len;

    (void)state;
    memcpy(value, "Bearer ", 7);
    memset(value + 7, 'a', KA_MAX_TOKEN_LEN);
    value[7 + KA_MAX_TOKEN_LEN] = '\0';
    assert_int_equal(ka_bearer_parse(value, &tok, &len), 1);
    assert_int_equal(len, KA_MAX_TOKEN_LEN);
    /* One more: the token is cut, not refused (no credential is that long). */
    value[7 + KA_MAX_TOKEN_LEN] = 'a';
    value[7 + KA_MAX_TOKEN_LEN + 1] = '\0';
    assert_int_equal(ka_bearer_parse(value, &tok, &len), 1);
    assert_ptr_equal(tok, value + 7);
    assert_int_equal(len, KA_MAX_TOKEN_LEN);
}

/* ---- API key bodies ---- */

static void test_api_vector_encode(void **state)
{
    uint8_t p[KA_PAYLOAD_LEN];
    char body[KA_API_BODY_LEN + 1];

    (void)state;
    vector_payload(p);
    memset(body, 0, sizeof(body));
    ka_api_body_encode(p, body);
    assert_string_equal(body, VECTOR_BODY);
    /* The payload is not modified by encoding. */
    for (int i = 0; i < KA_PAYLOAD_LEN; i++)
        assert_int_equal(p[i], i + 1);
}

static void test_api_vector_parse(void **state)
{
    uint8_t want[KA_PAYLOAD_LEN], got[KA_PAYLOAD_LEN];

    (void)state;
    vector_payload(want);
    memset(got, 0xaa, sizeof(got));
    assert_int_equal(ka_api_body_parse(VECTOR_BODY, KA_API_BODY_LEN, got), 1);
    assert_memory_equal(got, want, KA_PAYLOAD_LEN);
}

static void test_api_extremes(void **state)
{
    uint8_t p[KA_PAYLOAD_LEN], got[KA_PAYLOAD_LEN];
    char body[KA_API_BODY_LEN + 1] = {0};

    (void)state;
    memset(p, 0, sizeof(p));
    ka_api_body_encode(p, body);
    assert_string_equal(body, ZERO_BODY);
    memset(got, 0xaa, sizeof(got));
    assert_int_equal(parse_str(ZERO_BODY, got), 1);
    assert_memory_equal(got, p, KA_PAYLOAD_LEN);

    memset(p, 0xff, sizeof(p));
    ka_api_body_encode(p, body);
    assert_string_equal(body, FF_BODY);
    memset(got, 0, sizeof(got));
    assert_int_equal(parse_str(FF_BODY, got), 1);
    assert_memory_equal(got, p, KA_PAYLOAD_LEN);
}

static void test_api_round_trip_random(void **state)
{
    (void)state;
    for (int n = 0; n < 2000; n++) {
        uint8_t p[KA_PAYLOAD_LEN], got[KA_PAYLOAD_LEN];
        char body[KA_API_BODY_LEN + 1] = {0};

        for (int i = 0; i < KA_PAYLOAD_LEN; i++)
            p[i] = rng_byte();
        if (n % 7 == 0) /* leading zero bytes: left padding with 'A' */
            memset(p, 0, (size_t)(n % 31));
        ka_api_body_encode(p, body);
        assert_int_equal(strlen(body), KA_API_BODY_LEN);
        for (int i = 0; i < KA_API_BODY_LEN; i++)
            assert_non_null(strchr(ka_alnum62, body[i]));
        memset(got, 0, sizeof(got));
        assert_int_equal(ka_api_body_parse(body, KA_API_BODY_LEN, got), 1);
        assert_memory_equal(got, p, KA_PAYLOAD_LEN);
    }
}

static void test_api_length(void **state)
{
    uint8_t p[KA_PAYLOAD_LEN];
    char buf[64];

    (void)state;
    /* 48: the vector without its last character; 50: with one more. */
    assert_int_equal(ka_api_body_parse(VECTOR_BODY, 48, p), 0);
    snprintf(buf, sizeof(buf), "%sA", VECTOR_BODY);
    assert_int_equal(ka_api_body_parse(buf, 50, p), 0);
    snprintf(buf, sizeof(buf), "A%s", VECTOR_BODY);
    assert_int_equal(ka_api_body_parse(buf, 50, p), 0);
    assert_int_equal(ka_api_body_parse("", 0, p), 0);
    assert_int_equal(ka_api_body_parse(VECTOR_BODY, 1, p), 0);
}

static void test_api_bad_characters(void **state)
{
    static const char bad[] = {'-', '_', '+', '/', '=', ' ', '.', '\0', '\n', '\x7f'};
    uint8_t p[KA_PAYLOAD_LEN];

    (void)state;
    for (size_t b = 0; b < sizeof(bad); b++) {
        /* One in the payload field, one in the CRC field. */
        static const size_t positions[] = {0, 20, 42, 43, 48};
        for (size_t k = 0; k < sizeof(positions) / sizeof(positions[0]); k++) {
            char body[KA_API_BODY_LEN];
            memcpy(body, VECTOR_BODY, KA_API_BODY_LEN);
            body[positions[k]] = bad[b];
            if (ka_api_body_parse(body, KA_API_BODY_LEN, p))
                fail_msg("accepted byte 0x%02x at %zu", (unsigned char)bad[b], positions[k]);
        }
    }
    /* Non-ASCII: a 2-byte UTF-8 sequence replacing two characters keeps the length 49. */
    {
        char body[KA_API_BODY_LEN];
        memcpy(body, VECTOR_BODY, KA_API_BODY_LEN);
        body[10] = (char)0xc3;
        body[11] = (char)0xa9; /* é */
        assert_int_equal(ka_api_body_parse(body, KA_API_BODY_LEN, p), 0);
        memcpy(body, VECTOR_BODY, KA_API_BODY_LEN);
        body[45] = (char)0xff;
        assert_int_equal(ka_api_body_parse(body, KA_API_BODY_LEN, p), 0);
    }
}

static void test_api_payload_overflow(void **state)
{
    uint8_t p[KA_PAYLOAD_LEN];
    char body[KA_API_BODY_LEN + 1];

    (void)state;
    /* All '9': 62^43 - 1 >= 2^256. */
    memset(body, '9', 43);
    memcpy(body + 43, "AAAAAA", 6);
    body[49] = '\0';
    assert_int_equal(parse_str(body, p), 0);
    /* Exactly 2^256: one more than the all-0xff payload's field. */
    memcpy(body, FF_BODY, KA_API_BODY_LEN);
    assert_int_equal(body[42], 'B');
    body[42] = 'C';
    assert_int_equal(parse_str(body, p), 0);
    /* 2^256 - 1 (all 0xff) is still fine. */
    assert_int_equal(parse_str(FF_BODY, p), 1);
    /* Values whose low 256 bits are a payload with the right CRC: only the range check can
     * refuse them. 2^256 + 0 with the CRC of the zero payload, and 2^256 + the vector payload
     * with the vector's CRC. */
    assert_int_equal(parse_str("8rt2u6nKGYjBKVBiwRgjgwIVVQHRtx4MKCtF1Y6IhzCAcatMh", p), 0);
    assert_int_equal(parse_str("86ijw7oaLAr8D0h4wSThmoAsxf2maYbCkHfrAFjXYm0CeS3NT", p), 0);
}

static void test_api_crc_overflow(void **state)
{
    uint8_t p[KA_PAYLOAD_LEN];
    char body[KA_API_BODY_LEN + 1];

    (void)state;
    memcpy(body, VECTOR_BODY, KA_API_BODY_LEN);
    body[KA_API_BODY_LEN] = '\0';
    memcpy(body + 43, "999999", 6);
    assert_int_equal(parse_str(body, p), 0);
    /* "EqpPMD" is 2^32 - 1, "EqpPME" is 2^32. */
    memcpy(body + 43, "EqpPME", 6);
    assert_int_equal(parse_str(body, p), 0);
    /* 2^32 - 1 decodes but is not this payload's CRC. */
    memcpy(body + 43, "EqpPMD", 6);
    assert_int_equal(parse_str(body, p), 0);
    /* The vector's CRC + 2^32: right low 32 bits, refused by the range check alone. */
    memcpy(body + 43, "HK8IZX", 6);
    assert_int_equal(parse_str(body, p), 0);
}

static void test_api_crc_mismatch(void **state)
{
    uint8_t p[KA_PAYLOAD_LEN];
    char body[KA_API_BODY_LEN + 1];

    (void)state;
    memcpy(body, VECTOR_BODY, KA_API_BODY_LEN + 1);
    body[20] = body[20] == 'a' ? 'b' : 'a'; /* payload field */
    assert_int_equal(parse_str(body, p), 0);
    memcpy(body, VECTOR_BODY, KA_API_BODY_LEN + 1);
    body[47] = body[47] == 'a' ? 'b' : 'a'; /* CRC field */
    assert_int_equal(parse_str(body, p), 0);
    memcpy(body, VECTOR_BODY, KA_API_BODY_LEN + 1);
    body[0] = 'B'; /* leading digit */
    assert_int_equal(parse_str(body, p), 0);
    memcpy(body, VECTOR_BODY, KA_API_BODY_LEN + 1);
    body[48] = body[48] == 'A' ? 'B' : 'A'; /* last CRC digit */
    assert_int_equal(parse_str(body, p), 0);
    /* Swapping the two fields' boundary character. */
    memcpy(body, VECTOR_BODY, KA_API_BODY_LEN + 1);
    {
        char t = body[42];
        body[42] = body[43];
        body[43] = t;
    }
    assert_int_equal(parse_str(body, p), 0);
}

/* Every single-character change of the vector is caught (CRC-32 detects them all). */
static void test_api_every_substitution(void **state)
{
    uint8_t p[KA_PAYLOAD_LEN];

    (void)state;
    for (int i = 0; i < KA_API_BODY_LEN; i++) {
        for (int d = 0; d < 62; d++) {
            char body[KA_API_BODY_LEN];
            if (ka_alnum62[d] == VECTOR_BODY[i])
                continue;
            memcpy(body, VECTOR_BODY, KA_API_BODY_LEN);
            body[i] = ka_alnum62[d];
            if (ka_api_body_parse(body, KA_API_BODY_LEN, p))
                fail_msg("accepted '%c' at %d", ka_alnum62[d], i);
        }
    }
}

/* ---- write keys and IDs ---- */

static void test_write_key_valid(void **state)
{
    (void)state;
    assert_int_equal(ka_write_key_valid("abcdefghijABCDEFGHIJ0123456789xy", 32), 1);
    assert_int_equal(ka_write_key_valid("00000000000000000000000000000000", 32), 1);
    assert_int_equal(ka_write_key_valid("abcdefghijABCDEFGHIJ0123456789x", 31), 0);
    assert_int_equal(ka_write_key_valid("abcdefghijABCDEFGHIJ0123456789xyz", 33), 0);
    assert_int_equal(ka_write_key_valid("", 0), 0);
    assert_int_equal(ka_write_key_valid("abcdefghijABCDEFGHIJ0123456789x-", 32), 0);
    assert_int_equal(ka_write_key_valid("abcdefghijABCDEFGHIJ0123456789x_", 32), 0);
    assert_int_equal(ka_write_key_valid("abcdefghijABCDEFGHIJ0123456789x ", 32), 0);
    assert_int_equal(ka_write_key_valid("abcdefghijABCDEFGHIJ012345678\0xy", 32), 0);
    assert_int_equal(ka_write_key_valid("abcdefghijABCDEFGHIJ0123456789\xc3\xa9", 32), 0);
}

static void test_id_valid(void **state)
{
    (void)state;
    assert_int_equal(strlen(ka_base58), 58);
    assert_int_equal(ka_id_valid("123456789ABC", 12), 1);
    assert_int_equal(ka_id_valid("zzzzzzzzzzzz", 12), 1);
    assert_int_equal(ka_id_valid("HJKLMNPQRSTU", 12), 1);
    assert_int_equal(ka_id_valid("abcdefghijkm", 12), 1);
    assert_int_equal(ka_id_valid("nopqrstuvwxy", 12), 1);
    /* 0, O, I, l are not base58. */
    assert_int_equal(ka_id_valid("023456789ABC", 12), 0);
    assert_int_equal(ka_id_valid("O23456789ABC", 12), 0);
    assert_int_equal(ka_id_valid("I23456789ABC", 12), 0);
    assert_int_equal(ka_id_valid("l23456789ABC", 12), 0);
    assert_int_equal(ka_id_valid("12345678ABCl", 12), 0);
    /* 11 and 13 characters. */
    assert_int_equal(ka_id_valid("123456789AB", 11), 0);
    assert_int_equal(ka_id_valid("123456789ABCD", 13), 0);
    assert_int_equal(ka_id_valid("", 0), 0);
    assert_int_equal(ka_id_valid(NULL, 12), 0);
    /* Other characters, a NUL inside. */
    assert_int_equal(ka_id_valid("123456789AB-", 12), 0);
    assert_int_equal(ka_id_valid("123456789AB ", 12), 0);
    assert_int_equal(ka_id_valid("123456789AB,", 12), 0);
    assert_int_equal(ka_id_valid("12345\0789ABC", 12), 0);
    assert_int_equal(ka_id_valid("123456789A\xc3\xa9", 12), 0);
    /* Every base58 character is accepted, every other byte refused. */
    for (int c = 1; c < 256; c++) {
        char id[13] = "23456789ABCD";
        id[5] = (char)c;
        assert_int_equal(ka_id_valid(id, 12), strchr(ka_base58, c) != NULL);
    }
}

/* ---- organizations key (SPEC §6.4) ---- */

#define DEF_VAR "KRENALIS_ORGANIZATIONS_API_KEY"
#define MSG_PREFIX(v) v " must start with 'org_'"
#define MSG_LENGTH(v) v " has an invalid length (expected 'org_' + 43 alphanumeric characters)"
#define MSG_CHAR(v, c) "invalid format of " v ", unexpected character '" c "'"

static const char BODY43[] = "abcdefghijABCDEFGHIJ0123456789klmnopqrstKLM"; /* 43 */

static const char *org_check(const char *var, const char *value, char *buf, size_t n)
{
    memset(buf, 'x', n);
    return ka_org_key_check(var, value, buf, n);
}

static void test_org_key_valid(void **state)
{
    char buf[256], key[64];

    (void)state;
    assert_int_equal(strlen(BODY43), 43);
    snprintf(key, sizeof(key), "org_%s", BODY43);
    assert_null(org_check(DEF_VAR, key, buf, sizeof(buf)));
    assert_null(
        org_check(DEF_VAR, "org_0000000000000000000000000000000000000000000", buf, sizeof(buf)));
}

static void test_org_key_prefix(void **state)
{
    char buf[256], key[64];
    const char *m;

    (void)state;
    m = org_check(DEF_VAR, "", buf, sizeof(buf));
    assert_non_null(m);
    assert_string_equal(m, MSG_PREFIX(DEF_VAR));
    snprintf(key, sizeof(key), "ORG_%s", BODY43);
    assert_string_equal(org_check(DEF_VAR, key, buf, sizeof(buf)), MSG_PREFIX(DEF_VAR));
    snprintf(key, sizeof(key), "api_%s", BODY43);
    assert_string_equal(org_check(DEF_VAR, key, buf, sizeof(buf)), MSG_PREFIX(DEF_VAR));
    assert_string_equal(org_check(DEF_VAR, "org", buf, sizeof(buf)), MSG_PREFIX(DEF_VAR));
    snprintf(key, sizeof(key), " org_%s", BODY43);
    assert_string_equal(org_check(DEF_VAR, key, buf, sizeof(buf)), MSG_PREFIX(DEF_VAR));
    /* The configured variable name replaces the default one. */
    assert_string_equal(org_check("MY_ORGS_KEY", "", buf, sizeof(buf)), MSG_PREFIX("MY_ORGS_KEY"));
}

static void test_org_key_length(void **state)
{
    char buf[256], key[64];

    (void)state;
    snprintf(key, sizeof(key), "org_%.42s", BODY43);
    assert_string_equal(org_check(DEF_VAR, key, buf, sizeof(buf)), MSG_LENGTH(DEF_VAR));
    snprintf(key, sizeof(key), "org_%sN", BODY43);
    assert_string_equal(org_check(DEF_VAR, key, buf, sizeof(buf)), MSG_LENGTH(DEF_VAR));
    assert_string_equal(org_check(DEF_VAR, "org_", buf, sizeof(buf)), MSG_LENGTH(DEF_VAR));
    /* Length is checked before characters: 42 characters, one of them bad. */
    snprintf(key, sizeof(key), "org_-%.41s", BODY43);
    assert_string_equal(org_check(DEF_VAR, key, buf, sizeof(buf)), MSG_LENGTH(DEF_VAR));
    assert_string_equal(org_check("ORGS", "org_abc", buf, sizeof(buf)), MSG_LENGTH("ORGS"));
}

static void test_org_key_characters(void **state)
{
    char buf[256], key[64];

    (void)state;
    snprintf(key, sizeof(key), "org_org_%.39s", BODY43);
    assert_int_equal(strlen(key), 47);
    assert_string_equal(org_check(DEF_VAR, key, buf, sizeof(buf)), MSG_CHAR(DEF_VAR, "_"));
    snprintf(key, sizeof(key), "org_%.42s-", BODY43);
    assert_string_equal(org_check(DEF_VAR, key, buf, sizeof(buf)), MSG_CHAR(DEF_VAR, "-"));
    snprintf(key, sizeof(key), "org_%.20s %.22s", BODY43, BODY43);
    assert_string_equal(org_check(DEF_VAR, key, buf, sizeof(buf)), MSG_CHAR(DEF_VAR, " "));
    /* The first bad character is the one named. */
    snprintf(key, sizeof(key), "org_ab+%.39s/", BODY43);
    assert_int_equal(strlen(key), 47);
    assert_string_equal(org_check(DEF_VAR, key, buf, sizeof(buf)), MSG_CHAR(DEF_VAR, "+"));
    /* A control character is shown escaped, as Go's %q does. */
    snprintf(key, sizeof(key), "org_%.21s\x01%.21s", BODY43, BODY43);
    assert_string_equal(org_check(DEF_VAR, key, buf, sizeof(buf)), MSG_CHAR(DEF_VAR, "\\x01"));
    assert_string_equal(
        org_check("MY_KEY", "org_org_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLM", buf, sizeof(buf)),
        MSG_CHAR("MY_KEY", "_"));
}

/* The reference (Krenalis) counts the 43 characters with utf8.RuneCountInString, then names the
 * first rune that is not [A-Za-z0-9] with %q. A look-alike letter replacing one letter keeps 43
 * characters (48 bytes): unexpected character. Two letters replaced by one 2-byte letter keep 47
 * bytes but give 42 characters: invalid length. */
static void test_org_key_non_ascii_counts_characters(void **state)
{
    char buf[256], key[64];

    (void)state;
    snprintf(key, sizeof(key), "org_%.20s\xd0\xb0%.22s", BODY43, BODY43 + 21); /* Cyrillic а */
    assert_int_equal(strlen(key), 48);
    assert_string_equal(org_check(DEF_VAR, key, buf, sizeof(buf)), MSG_CHAR(DEF_VAR, "\xd0\xb0"));
    snprintf(key, sizeof(key), "org_%.20s\xd0\xb0%.21s", BODY43, BODY43 + 22);
    assert_int_equal(strlen(key), 47);
    assert_string_equal(org_check(DEF_VAR, key, buf, sizeof(buf)), MSG_LENGTH(DEF_VAR));
}

/* Non-ASCII cases where bytes and characters give the same verdict. */
static void test_org_key_non_ascii(void **state)
{
    char buf[256], key[64];

    (void)state;
    /* 43 letters plus a Cyrillic а: too long either way. */
    snprintf(key, sizeof(key), "org_%s\xd0\xb0", BODY43);
    assert_string_equal(org_check(DEF_VAR, key, buf, sizeof(buf)), MSG_LENGTH(DEF_VAR));
    /* 44 characters where one is 3-byte €. */
    snprintf(key, sizeof(key), "org_%.20s\xe2\x82\xac%s", BODY43, BODY43 + 20);
    assert_string_equal(org_check(DEF_VAR, key, buf, sizeof(buf)), MSG_LENGTH(DEF_VAR));
}

static void test_org_key_small_buffer(void **state)
{
    char buf[8];
    const char *m;

    (void)state;
    m = org_check(DEF_VAR, "", buf, sizeof(buf));
    assert_ptr_equal(m, buf);
    assert_string_equal(m, "KRENALI"); /* truncated, still terminated */
}

/* ---- hints, key type names, ka_pick_chars ---- */

static void test_hint(void **state)
{
    char out[KA_HINT_MAX + 1];

    (void)state;
    ka_hint(VECTOR_BODY, KA_API_BODY_LEN, out);
    assert_string_equal(out, "AOyr...CeS3NT");
    assert_int_equal(strlen(out), 4 + 3 + 6);
    ka_hint("abcdefghijABCDEFGHIJ0123456789xy", 32, out);
    assert_string_equal(out, "abcd...6789xy");
    ka_hint("0123456789", 10, out);
    assert_string_equal(out, "0123...456789");
    ka_hint("012345678", 9, out);
    assert_string_equal(out, "...");
}

static void test_key_type_name(void **state)
{
    (void)state;
    assert_string_equal(ka_key_type_name(KA_KEY_API), "api");
    assert_string_equal(ka_key_type_name(KA_KEY_WRITE), "event-write");
    assert_string_equal(ka_key_type_name(KA_KEY_ORGS), "organizations");
    assert_string_equal(ka_key_type_name(KA_KEY_NONE), "");
}

static void test_alphabets(void **state)
{
    (void)state;
    assert_string_equal(ka_alnum62,
                        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789");
    assert_string_equal(ka_base58, "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz");
}

static void test_pick_chars(void **state)
{
    /* base58: 256 % 58 = 24, bytes >= 232 are dropped. */
    static const uint8_t rnd[] = {0, 57, 58, 231, 232, 255, 1, 116};
    char out[16];
    size_t n;

    (void)state;
    memset(out, 0, sizeof(out));
    n = ka_pick_chars(ka_base58, rnd, sizeof(rnd), out, 16);
    assert_int_equal(n, 6);
    assert_string_equal(out, "1z1z21");
    /* Stops at n. */
    memset(out, 0, sizeof(out));
    n = ka_pick_chars(ka_base58, rnd, sizeof(rnd), out, 3);
    assert_int_equal(n, 3);
    assert_string_equal(out, "1z1");
    /* alnum62: 256 % 62 = 8, bytes >= 248 are dropped. */
    {
        static const uint8_t r2[] = {247, 248, 61, 62, 255};
        memset(out, 0, sizeof(out));
        n = ka_pick_chars(ka_alnum62, r2, sizeof(r2), out, 16);
        assert_int_equal(n, 3);
        assert_string_equal(out, "99A"); /* 247 % 62 = 61, 61, 62 % 62 = 0 */
    }
    /* Nothing usable. */
    {
        static const uint8_t r3[] = {250, 251};
        assert_int_equal(ka_pick_chars(ka_alnum62, r3, sizeof(r3), out, 4), 0);
    }
    /* Uniformity over a full cycle of accepted bytes: each character exactly 4 times. */
    {
        uint8_t all[256];
        char many[256];
        int count[128] = {0};
        for (int i = 0; i < 256; i++)
            all[i] = (uint8_t)i;
        n = ka_pick_chars(ka_base58, all, sizeof(all), many, sizeof(many));
        assert_int_equal(n, 232);
        for (size_t i = 0; i < n; i++)
            count[(unsigned char)many[i]]++;
        for (int i = 0; i < 58; i++)
            assert_int_equal(count[(unsigned char)ka_base58[i]], 4);
    }
}

int run_token_tests(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bearer_valid),
        cmocka_unit_test(test_bearer_invalid),
        cmocka_unit_test(test_bearer_length_limit),
        cmocka_unit_test(test_api_vector_encode),
        cmocka_unit_test(test_api_vector_parse),
        cmocka_unit_test(test_api_extremes),
        cmocka_unit_test(test_api_round_trip_random),
        cmocka_unit_test(test_api_length),
        cmocka_unit_test(test_api_bad_characters),
        cmocka_unit_test(test_api_payload_overflow),
        cmocka_unit_test(test_api_crc_overflow),
        cmocka_unit_test(test_api_crc_mismatch),
        cmocka_unit_test(test_api_every_substitution),
        cmocka_unit_test(test_write_key_valid),
        cmocka_unit_test(test_id_valid),
        cmocka_unit_test(test_org_key_valid),
        cmocka_unit_test(test_org_key_prefix),
        cmocka_unit_test(test_org_key_length),
        cmocka_unit_test(test_org_key_characters),
        cmocka_unit_test(test_org_key_non_ascii_counts_characters),
        cmocka_unit_test(test_org_key_non_ascii),
        cmocka_unit_test(test_org_key_small_buffer),
        cmocka_unit_test(test_hint),
        cmocka_unit_test(test_key_type_name),
        cmocka_unit_test(test_alphabets),
        cmocka_unit_test(test_pick_chars),
    };
    return cmocka_run_group_tests_name("token", tests, NULL, NULL);
}
