/* Wire formats of credentials and IDs (SPEC §2). No allocation, no I/O. */
#include "token.h"

#include "json.h"

#include <stdio.h>
#include <string.h>
#include <zlib.h>

const char ka_base58[] = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
const char ka_alnum62[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

static int is_blank(char c)
{
    return c == ' ' || c == '\t';
}

int ka_bearer_parse(const char *value, const char **tok, size_t *toklen)
{
    static const char scheme[] = "bearer";
    size_t i, n;

    if (value == NULL)
        return 0;
    for (i = 0; i < sizeof(scheme) - 1; i++) {
        char c = value[i];
        if (c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        if (c != scheme[i])
            return 0;
    }
    if (!is_blank(value[i]))
        return 0;
    while (is_blank(value[i]))
        i++;
    /* A longer token is cut, not refused (SPEC §2: the rest is the token): no credential is
     * that long, so the cut one meets the same row as the whole one, read in bounded time. */
    n = strnlen(value + i, KA_MAX_TOKEN_LEN);
    if (n == 0)
        return 0;
    *tok = value + i;
    *toklen = n;
    return 1;
}

/* Digit value of each byte in ka_alnum62 order, 255 for a byte that is not a digit. A table,
 * because branches on random key characters are mispredicted about half the time. */
static const uint8_t digit62_table[256] = {
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 52,  53,  54,  55,  56,  57,  58,  59,  60,
    61,  255, 255, 255, 255, 255, 255, 255, 0,   1,   2,   3,   4,   5,   6,   7,   8,   9,   10,
    11,  12,  13,  14,  15,  16,  17,  18,  19,  20,  21,  22,  23,  24,  25,  255, 255, 255, 255,
    255, 255, 26,  27,  28,  29,  30,  31,  32,  33,  34,  35,  36,  37,  38,  39,  40,  41,  42,
    43,  44,  45,  46,  47,  48,  49,  50,  51,  255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255,
};

/* 62^k for k = 0..10 (62^10 < 2^64). */
static const uint64_t pow62[11] = {1ULL,
                                   62ULL,
                                   3844ULL,
                                   238328ULL,
                                   14776336ULL,
                                   916132832ULL,
                                   56800235584ULL,
                                   3521614606208ULL,
                                   218340105584896ULL,
                                   13537086546263552ULL,
                                   839299365868340224ULL};

/* Big-endian base-62 digits into a big-endian byte array of outlen bytes (at most 32); 0 on
 * overflow or a bad digit. The request path parses every API key: 64-bit limbs, ten digits
 * at a time (62^10 < 2^64), so a payload takes five passes over four limbs. A bad digit is
 * noted, not branched on (table value 255; every digit is below 64), and the bytes are
 * written a limb at a time. */
static int base62_decode(const char *s, size_t n, uint8_t *out, size_t outlen)
{
    uint64_t limb[4] = {0}; /* least significant first */
    size_t nl = (outlen + 7) / 8, i = 0;
    unsigned bad = 0;

    while (i < n) {
        size_t k = n - i < 10 ? n - i : 10;
        uint64_t chunk = 0;
        unsigned __int128 carry;
        for (size_t end = i + k; i < end; i++) {
            unsigned d = digit62_table[(unsigned char)s[i]];
            bad |= d;
            chunk = chunk * 62 + d;
        }
        carry = chunk;
        for (size_t j = 0; j < nl; j++) {
            unsigned __int128 v = (unsigned __int128)limb[j] * pow62[k] + carry;
            limb[j] = (uint64_t)v;
            carry = v >> 64;
        }
        if (carry != 0)
            return 0;
    }
    if (bad & ~63u)
        return 0;
    /* outlen not a multiple of 8: the top limb has room to spare, which must stay empty. */
    if (outlen % 8 != 0) {
        if (limb[nl - 1] >> (8 * (outlen % 8)) != 0)
            return 0;
        for (size_t b = 0; b < outlen; b++)
            out[outlen - 1 - b] = (uint8_t)(limb[b / 8] >> (8 * (b % 8)));
        return 1;
    }
    for (size_t j = 0; j < nl; j++) {
        uint64_t be = __builtin_bswap64(limb[nl - 1 - j]);
        memcpy(out + 8 * j, &be, 8);
    }
    return 1;
}

/* Writes n base-62 digits of the big-endian number in (destroyed), left-padded with 'A'. */
static void base62_encode(uint8_t *in, size_t inlen, char *out, size_t n)
{
    for (size_t i = n; i-- > 0;) {
        unsigned rem = 0;
        for (size_t j = 0; j < inlen; j++) {
            unsigned v = (rem << 8) | in[j];
            in[j] = (uint8_t)(v / 62);
            rem = v % 62;
        }
        out[i] = ka_alnum62[rem];
    }
}

static uint32_t payload_crc(const uint8_t payload[KA_PAYLOAD_LEN])
{
    return (uint32_t)crc32(0L, payload, KA_PAYLOAD_LEN);
}

int ka_api_body_parse(const char *body, size_t len, uint8_t payload[KA_PAYLOAD_LEN])
{
    uint8_t crc[4];
    uint32_t want;

    if (len != KA_API_BODY_LEN)
        return 0;
    if (!base62_decode(body, 43, payload, KA_PAYLOAD_LEN))
        return 0;
    if (!base62_decode(body + 43, 6, crc, sizeof(crc)))
        return 0;
    want = payload_crc(payload);
    return ((uint32_t)crc[0] << 24 | (uint32_t)crc[1] << 16 | (uint32_t)crc[2] << 8 | crc[3]) ==
           want;
}

void ka_api_body_encode(const uint8_t payload[KA_PAYLOAD_LEN], char out[KA_API_BODY_LEN])
{
    uint8_t tmp[KA_PAYLOAD_LEN];
    uint32_t c = payload_crc(payload);
    uint8_t crc[4] = {(uint8_t)(c >> 24), (uint8_t)(c >> 16), (uint8_t)(c >> 8), (uint8_t)c};

    memcpy(tmp, payload, sizeof(tmp));
    base62_encode(tmp, sizeof(tmp), out, 43);
    base62_encode(crc, sizeof(crc), out + 43, 6);
}

static int is_alnum(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

int ka_write_key_valid(const char *s, size_t len)
{
    if (len != KA_WRITE_KEY_LEN)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (!is_alnum((unsigned char)s[i]))
            return 0;
    return 1;
}

int ka_id_valid(const char *s, size_t len)
{
    if (s == NULL || len != KA_ID_LEN)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (s[i] == '\0' || strchr(ka_base58, s[i]) == NULL)
            return 0;
    return 1;
}

/* A character as Go's %q writes a rune: 'x', with escapes for the unprintable. */
static void go_quote_rune(unsigned cp, const unsigned char *src, size_t n, char *out, size_t size)
{
    switch (cp) {
    case '\a':
        snprintf(out, size, "'\\a'");
        return;
    case '\b':
        snprintf(out, size, "'\\b'");
        return;
    case '\f':
        snprintf(out, size, "'\\f'");
        return;
    case '\n':
        snprintf(out, size, "'\\n'");
        return;
    case '\r':
        snprintf(out, size, "'\\r'");
        return;
    case '\t':
        snprintf(out, size, "'\\t'");
        return;
    case '\v':
        snprintf(out, size, "'\\v'");
        return;
    case '\'':
        snprintf(out, size, "'\\''");
        return;
    case '\\':
        snprintf(out, size, "'\\\\'");
        return;
    default:
        break;
    }
    if (cp < 0x20 || cp == 0x7f)
        snprintf(out, size, "'\\x%02x'", cp);
    else if ((cp >= 0x80 && cp <= 0xa0) || cp == 0xad)
        snprintf(out, size, "'\\u%04x'", cp);
    else if (cp == 0xfffd && !(n == 3 && src[0] == 0xef))
        snprintf(out, size, "'\xef\xbf\xbd'");
    else
        snprintf(out, size, "'%.*s'", (int)n, (const char *)src);
}

const char *ka_org_key_check(const char *var, const char *value, char *buf, size_t bufsize)
{
    const unsigned char *body = (const unsigned char *)value + 4;
    size_t len = strlen(value), chars = 0;
    unsigned cp;

    if (strncmp(value, "org_", 4) != 0) {
        snprintf(buf, bufsize, "%s must start with 'org_'", var);
        return buf;
    }
    for (size_t i = 4; i < len; chars++)
        i += ka_utf8_decode((const unsigned char *)value + i, len - i, &cp);
    if (chars != KA_ORG_KEY_CHARS) {
        snprintf(buf, bufsize,
                 "%s has an invalid length (expected 'org_' + 43 alphanumeric characters)", var);
        return buf;
    }
    for (const unsigned char *c = body; *c;) {
        size_t n = ka_utf8_decode(c, len - (size_t)(c - (const unsigned char *)value), &cp);
        if (!is_alnum(*c)) {
            char q[16];
            go_quote_rune(cp, c, n, q, sizeof(q));
            snprintf(buf, bufsize, "invalid format of %s, unexpected character %s", var, q);
            return buf;
        }
        c += n;
    }
    return NULL;
}

void ka_hint(const char *s, size_t len, char out[KA_HINT_MAX + 1])
{
    if (len < 10) {
        snprintf(out, KA_HINT_MAX + 1, "...");
        return;
    }
    snprintf(out, KA_HINT_MAX + 1, "%.4s...%.6s", s, s + len - 6);
}

size_t ka_pick_chars(const char *alphabet, const uint8_t *rnd, size_t rndlen, char *out, size_t n)
{
    unsigned alen = (unsigned)strlen(alphabet);
    unsigned limit = 256 - 256 % alen; /* bytes >= limit would bias the low characters */
    size_t filled = 0;

    for (size_t i = 0; i < rndlen && filled < n; i++)
        if (rnd[i] < limit)
            out[filled++] = alphabet[rnd[i] % alen];
    return filled;
}
