/* libFuzzer target: API key bodies (SPEC §2) and the other credential formats of token.c.
 *
 * The input is taken as an API key body (with or without "api_"), as an event write key, as an
 * organizations key and as random bytes for ka_pick_chars. Properties:
 *   - ka_api_body_parse agrees with an independent decoder (limb arithmetic, zlib CRC-32);
 *   - accepted => re-encoding the payload gives back the same 49 characters (one spelling per
 *     key: no second token can reach the same store digest);
 *   - any 32-byte payload encodes to 49 alphabet characters that parse back to it;
 *   - the SPEC test vector holds;
 *   - ka_write_key_valid, ka_org_key_check, ka_hint and ka_pick_chars agree with models and
 *     stay inside their buffers (ASan). */
#include <zlib.h>

#include "fuzz_common.h"
#include "token.h"

static int digit62(unsigned char c)
{
    const char *p = c ? strchr(ka_alnum62, c) : NULL;
    return p ? (int)(p - ka_alnum62) : -1;
}

/* Base-62 digits into little-endian 32-bit limbs; 0 on a bad digit or overflow. */
static int ref_decode(const char *s, size_t n, uint32_t *limb, size_t nlimbs)
{
    memset(limb, 0, nlimbs * sizeof(*limb));
    for (size_t i = 0; i < n; i++) {
        int d = digit62((unsigned char)s[i]);
        uint64_t carry;
        if (d < 0)
            return 0;
        carry = (uint64_t)d;
        for (size_t j = 0; j < nlimbs; j++) {
            uint64_t v = (uint64_t)limb[j] * 62u + carry;
            limb[j] = (uint32_t)v;
            carry = v >> 32;
        }
        if (carry)
            return 0;
    }
    return 1;
}

static int model_body(const char *s, size_t n, uint8_t payload[KA_PAYLOAD_LEN])
{
    uint32_t limb[8], crc[1];

    if (n != KA_API_BODY_LEN)
        return 0;
    if (!ref_decode(s, 43, limb, 8) || !ref_decode(s + 43, 6, crc, 1))
        return 0;
    for (int i = 0; i < 32; i++) /* big-endian bytes */
        payload[i] = (uint8_t)(limb[7 - i / 4] >> (8 * (3 - i % 4)));
    return (uint32_t)crc32(0L, payload, KA_PAYLOAD_LEN) == crc[0];
}

static int is_alnum(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

static void check_body(const uint8_t *data, size_t size)
{
    uint8_t *copy = fuzz_dup(data, size); /* exact size: ASan catches any over-read */
    uint8_t got[KA_PAYLOAD_LEN], want[KA_PAYLOAD_LEN];
    int g = ka_api_body_parse((const char *)copy, size, got);
    int w = model_body((const char *)copy, size, want);

    CHECK(g == w);
    if (g) {
        char re[KA_API_BODY_LEN];
        CHECK(memcmp(got, want, KA_PAYLOAD_LEN) == 0);
        ka_api_body_encode(got, re);
        CHECK(memcmp(re, copy, KA_API_BODY_LEN) == 0);
    }
    free(copy);
}

static void check_roundtrip(const uint8_t payload[KA_PAYLOAD_LEN])
{
    char *body = malloc(KA_API_BODY_LEN); /* exact size: the encoder writes no NUL */
    uint8_t back[KA_PAYLOAD_LEN];

    CHECK(body != NULL);
    ka_api_body_encode(payload, body);
    for (int i = 0; i < KA_API_BODY_LEN; i++)
        CHECK(digit62((unsigned char)body[i]) >= 0);
    CHECK(ka_api_body_parse(body, KA_API_BODY_LEN, back) == 1);
    CHECK(memcmp(back, payload, KA_PAYLOAD_LEN) == 0);
    free(body);
}

static void check_write_key(const uint8_t *data, size_t size)
{
    int want = size == KA_WRITE_KEY_LEN;
    for (size_t i = 0; want && i < size; i++)
        want = is_alnum(data[i]);
    CHECK(ka_write_key_valid((const char *)data, size) == want);
}

static void check_org_key(const char *v)
{
    static const char var[] = "KRENALIS_ORGANIZATIONS_API_KEY";
    char *buf = malloc(256);
    size_t n = strlen(v);
    int want = strncmp(v, "org_", 4) == 0 && n == KA_ORG_KEY_LEN;
    const char *msg;

    CHECK(buf != NULL);
    for (size_t i = 4; want && i < n; i++)
        want = is_alnum((unsigned char)v[i]);
    msg = ka_org_key_check(var, v, buf, 256);
    CHECK((msg == NULL) == want);
    if (msg != NULL) {
        static const char fmt3[] = "invalid format of KRENALIS_ORGANIZATIONS_API_KEY, "
                                   "unexpected character ";
        CHECK(msg == buf);
        CHECK(memchr(buf, '\0', 256) != NULL);
        if (strncmp(v, "org_", 4) != 0)
            CHECK(strcmp(buf, "KRENALIS_ORGANIZATIONS_API_KEY must start with 'org_'") == 0);
        else
            CHECK(strcmp(buf, "KRENALIS_ORGANIZATIONS_API_KEY has an invalid length (expected "
                              "'org_' + 43 alphanumeric characters)") == 0 ||
                  (n >= KA_ORG_KEY_LEN && strncmp(buf, fmt3, sizeof(fmt3) - 1) == 0));
        /* The message quotes the character, never raw control bytes (it goes to a log). */
        for (const char *q = buf; *q; q++)
            CHECK((unsigned char)*q >= 0x20 && *q != 0x7f);
    }
    free(buf);
}

static void check_hint(const char *v)
{
    char out[KA_HINT_MAX + 1];
    size_t n = strlen(v);

    ka_hint(v, n, out);
    CHECK(strlen(out) <= KA_HINT_MAX);
    if (n < 10) {
        CHECK(strcmp(out, "...") == 0);
    } else {
        CHECK(strlen(out) == 13);
        CHECK(memcmp(out, v, 4) == 0 && memcmp(out + 4, "...", 3) == 0 &&
              memcmp(out + 7, v + n - 6, 6) == 0);
    }
}

static void check_pick(const uint8_t *data, size_t size)
{
    const char *alphabets[2] = {ka_base58, ka_alnum62};
    char out[64];

    for (int a = 0; a < 2; a++) {
        unsigned alen = (unsigned)strlen(alphabets[a]);
        unsigned limit = 256 - 256 % alen;
        size_t want = 0, got;
        got = ka_pick_chars(alphabets[a], data, size, out, sizeof(out));
        for (size_t i = 0; i < size && want < sizeof(out); i++)
            if (data[i] < limit)
                CHECK(out[want++] == alphabets[a][data[i] % alen]);
        CHECK(got == want);
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    /* SPEC §2 test vector. */
    static const char vector[] = "AOyrCBBQEmI63fgWAAw8F12XcPvUqkg0aEwlIqnO0xyCeS3NT";
    uint8_t p[KA_PAYLOAD_LEN], back[KA_PAYLOAD_LEN];
    char body[KA_API_BODY_LEN];

    (void)argc;
    (void)argv;
    for (int i = 0; i < KA_PAYLOAD_LEN; i++)
        p[i] = (uint8_t)(i + 1);
    ka_api_body_encode(p, body);
    CHECK(memcmp(body, vector, KA_API_BODY_LEN) == 0);
    CHECK(ka_api_body_parse(vector, KA_API_BODY_LEN, back) == 1);
    CHECK(memcmp(back, p, KA_PAYLOAD_LEN) == 0);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = fuzz_cstr(data, size);

    check_body(data, size);
    if (size >= 4 && memcmp(data, "api_", 4) == 0)
        check_body(data + 4, size - 4);
    if (size >= KA_PAYLOAD_LEN)
        check_roundtrip(data);
    if (size >= KA_PAYLOAD_LEN + 1) /* a second payload shape: the tail */
        check_roundtrip(data + size - KA_PAYLOAD_LEN);
    check_write_key(data, size);
    check_org_key(s);
    check_hint(s);
    check_pick(data, size);
    free(s);
    return 0;
}
