/* A validating JSON scanner that keeps only two top-level members, and the error body
 * encoder. Nesting is bounded by KA_JSON_MAX_DEPTH and followed without recursion; nothing is
 * allocated. */
#include "json.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

typedef struct {
    const unsigned char *p;
    const unsigned char *end;
} scanner;

/* Past the white space at p. Most bytes are not white space: one comparison tells. */
static const unsigned char *skip_ws(const unsigned char *p, const unsigned char *end)
{
    while (p < end && *p <= ' ' && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static int read_hex4(scanner *s, unsigned *out)
{
    unsigned v = 0;
    if (s->end - s->p < 4)
        return 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval(s->p[i]);
        if (h < 0)
            return 0;
        v = v << 4 | (unsigned)h;
    }
    s->p += 4;
    *out = v;
    return 1;
}

/* The character a one-letter escape stands for (the letter after the backslash), or -1 when c
 * is no such letter; 'u' is not one (four hex digits follow it). */
static int simple_escape(unsigned char c)
{
    switch (c) {
    case '"':
    case '\\':
    case '/':
        return c;
    case 'b':
        return '\b';
    case 'f':
        return '\f';
    case 'n':
        return '\n';
    case 'r':
        return '\r';
    case 't':
        return '\t';
    default:
        return -1;
    }
}

/* Appends bytes to a capture buffer, noting overflow instead of failing. */
static void cap_put(char *buf, size_t cap, size_t *len, int *overflow, const char *b, size_t n)
{
    if (*overflow || *len + n > cap) {
        *overflow = 1;
        return;
    }
    memcpy(buf + *len, b, n);
    *len += n;
}

static size_t utf8_encode(unsigned cp, char out[4])
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xc0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xe0 | cp >> 12);
        out[1] = (char)(0x80 | (cp >> 6 & 0x3f));
        out[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (char)(0xf0 | cp >> 18);
    out[1] = (char)(0x80 | (cp >> 12 & 0x3f));
    out[2] = (char)(0x80 | (cp >> 6 & 0x3f));
    out[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* A \u escape (after the "\u"), surrogate pairs joined; lone surrogates become U+FFFD. */
static int read_unicode_escape(scanner *s, unsigned *cp)
{
    unsigned hi, lo;
    if (!read_hex4(s, &hi))
        return 0;
    if (hi >= 0xd800 && hi < 0xdc00 && s->end - s->p >= 6 && s->p[0] == '\\' && s->p[1] == 'u') {
        scanner look = {s->p + 2, s->end};
        if (read_hex4(&look, &lo) && lo >= 0xdc00 && lo < 0xe000) {
            s->p = look.p;
            *cp = 0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00);
            return 1;
        }
    }
    *cp = (hi >= 0xd800 && hi < 0xe000) ? 0xfffd : hi;
    return 1;
}

/* The first byte at or after p that is '"', '\\' or a control character (end if none): the
 * plain run of a string that is skipped, not decoded. Sixteen bytes a step with SSE2 (every
 * x86-64 has it), else eight (SWAR): there a byte flagged by one of the three tests is the
 * lowest flagged one only if it is a true match (a borrow only runs upward from a true match),
 * so the lowest flag of all three is exact. */
static const unsigned char *plain_run_end(const unsigned char *p, const unsigned char *end)
{
#if defined(__SSE2__)
    const __m128i quote = _mm_set1_epi8('"'), bslash = _mm_set1_epi8('\\'),
                  ctl = _mm_set1_epi8(0x1f);

    while (end - p >= 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)p);
        /* max(v, 0x1f) == 0x1f: v is a control character. */
        __m128i hit =
            _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, bslash)),
                         _mm_cmpeq_epi8(_mm_max_epu8(v, ctl), ctl));
        unsigned mask = (unsigned)_mm_movemask_epi8(hit);

        if (mask)
            return p + __builtin_ctz(mask);
        p += 16;
    }
#endif
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;

    while (end - p >= 8) {
        uint64_t w, q, b, hit;

        memcpy(&w, p, 8);
        q = w ^ (ones * '"');
        b = w ^ (ones * '\\');
        hit = (((q - ones) & ~q) | ((b - ones) & ~b) | ((w - ones * 0x20) & ~w)) & highs;
        if (hit)
            return p + (__builtin_ctzll(hit) >> 3);
        p += 8;
    }
#endif
    while (p < end && *p != '"' && *p != '\\' && *p >= 0x20)
        p++;
    return p;
}

/* Past the string whose content starts at p (after the opening quote), or NULL when it is not
 * a valid string. Nothing is decoded: each escape is only checked. */
static const unsigned char *skip_string(const unsigned char *p, const unsigned char *end)
{
    for (;;) {
        unsigned char c;

        p = plain_run_end(p, end);
        if (p >= end)
            return NULL;
        c = *p++;
        if (c == '"')
            return p;
        if (c != '\\' || p >= end) /* a control character, or an escape cut short */
            return NULL;
        c = *p++;
        if (c == 'u') {
            /* Four hex digits; a surrogate pair is two such escapes. */
            scanner h = {p, end};
            unsigned unused;

            if (!read_hex4(&h, &unused))
                return NULL;
            p = h.p;
        } else if (simple_escape(c) < 0) {
            return NULL;
        }
    }
}

/* A string at s->p (on the opening quote), decoded into buf (capacity cap). */
static int scan_string(scanner *s, char *buf, size_t cap, size_t *len, int *overflow)
{
    s->p++;
    while (s->p < s->end) {
        const unsigned char *run = plain_run_end(s->p, s->end);
        unsigned char c;
        char tmp[4];
        size_t n = 1;

        /* The plain run in one piece: only escapes are decoded byte by byte. */
        if (run > s->p) {
            cap_put(buf, cap, len, overflow, (const char *)s->p, (size_t)(run - s->p));
            if ((s->p = run) >= s->end)
                return 0;
        }
        c = *s->p++;
        if (c == '"')
            return 1;
        if (c < 0x20)
            return 0;
        if (c == '\\') {
            unsigned cp;
            if (s->p >= s->end)
                return 0;
            c = *s->p++;
            if (c == 'u') {
                if (!read_unicode_escape(s, &cp))
                    return 0;
                n = utf8_encode(cp, tmp);
            } else {
                int e = simple_escape(c);
                if (e < 0)
                    return 0;
                tmp[0] = (char)e;
            }
        } else {
            tmp[0] = (char)c;
        }
        cap_put(buf, cap, len, overflow, tmp, n);
    }
    return 0;
}

static const unsigned char *skip_digits(const unsigned char *p, const unsigned char *end)
{
    while (p < end && *p >= '0' && *p <= '9')
        p++;
    return p;
}

/* Past the number at p, or NULL. */
static const unsigned char *skip_number(const unsigned char *p, const unsigned char *end)
{
    const unsigned char *q;

    if (p < end && *p == '-')
        p++;
    if (p < end && *p == '0')
        p++;
    else if ((q = skip_digits(p, end)) == p)
        return NULL;
    else
        p = q;
    if (p < end && *p == '.') {
        if ((q = skip_digits(p + 1, end)) == p + 1)
            return NULL;
        p = q;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            p++;
        if ((q = skip_digits(p, end)) == p)
            return NULL;
        p = q;
    }
    return p;
}

/* Past the literal word at p, or NULL. */
static const unsigned char *skip_literal(const unsigned char *p, const unsigned char *end,
                                         const char *word, size_t n)
{
    return (size_t)(end - p) >= n && memcmp(p, word, n) == 0 ? p + n : NULL;
}

/* Skips the value at s->p, which is at depth: nothing in it is kept, so its containers are
 * followed with a stack of one bit each (1 for an object) instead of recursion. A value at
 * depth d is inside d - 1 containers; one deeper than KA_JSON_MAX_DEPTH is refused. */
static int skip_value(scanner *s, int depth)
{
    const unsigned char *p = s->p, *end = s->end;
    uint64_t objects = 0; /* bit i: the container i + 1 levels up is an object */
    int open = 0;         /* containers entered and not closed */

    _Static_assert(KA_JSON_MAX_DEPTH <= 64, "one bit of the stack per level");
    for (;;) {
        /* A value at depth + open. */
        if (depth + open > KA_JSON_MAX_DEPTH)
            return 0;
        p = skip_ws(p, end);
        if (p >= end)
            return 0;
        switch (*p) {
        case '"':
            p = skip_string(p + 1, end);
            break;
        case '{':
        case '[':
            objects = objects << 1 | (*p == '{');
            open++;
            p = skip_ws(p + 1, end);
            if (p < end && *p == ((objects & 1) ? '}' : ']')) {
                p++;
                objects >>= 1;
                open--;
                break;
            }
            if (objects & 1)
                goto member;
            continue; /* the array's first element */
        case 't':
            p = skip_literal(p, end, "true", 4);
            break;
        case 'f':
            p = skip_literal(p, end, "false", 5);
            break;
        case 'n':
            p = skip_literal(p, end, "null", 4);
            break;
        default:
            p = skip_number(p, end);
            break;
        }
        /* After a value: the end of it all, a separator or the end of its container. */
        for (;;) {
            if (p == NULL)
                return 0;
            if (open == 0) {
                s->p = p;
                return 1;
            }
            p = skip_ws(p, end);
            if (p >= end)
                return 0;
            if (*p == ',') {
                p++;
                break;
            }
            if (*p != ((objects & 1) ? '}' : ']'))
                return 0;
            p++;
            objects >>= 1;
            open--;
        }
        if (!(objects & 1))
            continue; /* the array's next element */
    member:
        /* A member of an object: its name, then its value at the top of the loop. */
        p = skip_ws(p, end);
        if (p >= end || *p != '"' || (p = skip_string(p + 1, end)) == NULL)
            return 0;
        p = skip_ws(p, end);
        if (p >= end || *p != ':')
            return 0;
        p++;
    }
}

/* Whether key (len bytes, UTF-8) equals the ASCII name under Unicode simple case folding, as
 * Go's encoding/json matches member names: ASCII letters in either case, U+212A KELVIN SIGN as
 * K and U+017F LONG S as S (the only other runes that fold to ASCII letters). */
static int fold_equal(const char *key, size_t len, const char *name)
{
    size_t i = 0;

    for (; *name; name++) {
        unsigned cp;
        if (i >= len)
            return 0;
        i += ka_utf8_decode((const unsigned char *)key + i, len - i, &cp);
        if (cp == 0x212a)
            cp = 'k';
        else if (cp == 0x17f)
            cp = 's';
        else if (cp >= 'A' && cp <= 'Z')
            cp |= 0x20;
        if (cp != (unsigned)(*name | 0x20))
            return 0;
    }
    return i == len;
}

/* Which top-level member a key names, if any; *exact unless only under case folding. */
static ka_jfield *member_slot(const char *key, size_t len, int overflow, ka_body_fields *top,
                              int *exact)
{
    static const struct {
        const char *name;
        size_t off;
    } members[] = {{"writeKey", offsetof(ka_body_fields, write_key)},
                   {"connectionId", offsetof(ka_body_fields, connection_id)}};

    if (overflow)
        return NULL;
    for (size_t i = 0; i < sizeof(members) / sizeof(members[0]); i++) {
        size_t n = strlen(members[i].name);
        if (len == n && memcmp(key, members[i].name, n) == 0) {
            *exact = 1;
            return (ka_jfield *)((char *)top + members[i].off);
        }
        if (fold_equal(key, len, members[i].name)) {
            *exact = 0;
            return (ka_jfield *)((char *)top + members[i].off);
        }
    }
    return NULL;
}

/* The value of a top-level member at s->p, kept in capture when that is set. */
static int scan_member_value(scanner *s, ka_jfield *capture)
{
    s->p = skip_ws(s->p, s->end);
    if (s->p >= s->end)
        return 0;
    if (capture == NULL)
        return skip_value(s, 2);
    if (*s->p == '"') {
        int overflow = 0;
        capture->kind = KA_JF_STRING;
        capture->len = 0;
        if (!scan_string(s, capture->val, KA_JSON_VALUE_MAX, &capture->len, &overflow))
            return 0;
        capture->too_long = overflow;
        capture->val[overflow ? 0 : capture->len] = '\0';
        return 1;
    }
    capture->kind = KA_JF_OTHER;
    return skip_value(s, 2);
}

/* The top-level object at s->p (on its '{'): its member names are decoded to find the two
 * the module keeps; everything below them is only validated (skip_value). */
static int scan_top_object(scanner *s, ka_body_fields *top)
{
    s->p = skip_ws(s->p + 1, s->end);
    if (s->p < s->end && *s->p == '}') {
        s->p++;
        return 1;
    }
    for (;;) {
        char key[16] = {0};
        size_t klen = 0;
        int koverflow = 0, exact = 0;
        ka_jfield *slot;

        s->p = skip_ws(s->p, s->end);
        if (s->p >= s->end || *s->p != '"')
            return 0;
        if (!scan_string(s, key, sizeof(key), &klen, &koverflow))
            return 0;
        s->p = skip_ws(s->p, s->end);
        if (s->p >= s->end || *s->p++ != ':')
            return 0;
        slot = member_slot(key, klen, koverflow, top, &exact);
        /* A backend may read any of the copies, in any case: more than one is refused. */
        if (slot && (slot->kind != KA_JF_ABSENT || slot->variant))
            slot->duplicate = 1;
        if (slot && !exact)
            slot->variant = 1;
        if (!scan_member_value(s, slot && exact ? slot : NULL))
            return 0;
        s->p = skip_ws(s->p, s->end);
        if (s->p >= s->end)
            return 0;
        if (*s->p == '}') {
            s->p++;
            return 1;
        }
        if (*s->p++ != ',')
            return 0;
    }
}

void ka_json_scan(const char *buf, size_t len, ka_body_fields *out)
{
    scanner s = {(const unsigned char *)buf, (const unsigned char *)buf + len};

    memset(out, 0, sizeof(*out));
    s.p = skip_ws(s.p, s.end);
    if (s.p >= s.end || *s.p != '{' || !scan_top_object(&s, out) || skip_ws(s.p, s.end) != s.end) {
        memset(out, 0, sizeof(*out));
        return;
    }
    out->valid_object = 1;
}

size_t ka_utf8_decode(const unsigned char *s, size_t avail, unsigned *cp)
{
    size_t n;
    unsigned v;

    if (s[0] < 0x80) {
        *cp = s[0];
        return 1;
    }
    if (s[0] >= 0xc2 && s[0] <= 0xdf) {
        n = 2;
        v = s[0] & 0x1f;
    } else if (s[0] >= 0xe0 && s[0] <= 0xef) {
        n = 3;
        v = s[0] & 0x0f;
    } else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
        n = 4;
        v = s[0] & 0x07;
    } else {
        *cp = 0xfffd;
        return 1;
    }
    if (n > avail) {
        *cp = 0xfffd;
        return 1;
    }
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80) {
            *cp = 0xfffd;
            return 1;
        }
        v = v << 6 | (s[i] & 0x3f);
    }
    /* Overlong forms, surrogates and values past U+10FFFF are invalid too. */
    if ((n == 3 && v < 0x800) || (n == 4 && (v < 0x10000 || v > 0x10ffff)) ||
        (v >= 0xd800 && v <= 0xdfff)) {
        *cp = 0xfffd;
        return 1;
    }
    *cp = v;
    return n;
}

int ka_json_escape(char *buf, size_t cap, size_t *pos, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    size_t p = *pos;

    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char esc[6];
        size_t n = 0;

        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            n = 2;
        } else if (c == '\n' || c == '\r' || c == '\t') {
            esc[0] = '\\';
            esc[1] = c == '\n' ? 'n' : c == '\r' ? 'r' : 't';
            n = 2;
        } else if (c < 0x20 || c == 0x7f) {
            memcpy(esc, "\\u00", 4);
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 0xf];
            n = 6;
        } else if (c >= 0x80) {
            unsigned cp;
            size_t sl = ka_utf8_decode((const unsigned char *)s, strlen(s), &cp);
            if (cp == 0xfffd && sl == 1) { /* invalid UTF-8, as Go's encoder writes it */
                memcpy(esc, "\\ufffd", 6);
                n = 6;
            } else {
                if (p + sl > cap)
                    return 0;
                memcpy(buf + p, s, sl);
                p += sl;
                s += sl - 1;
                continue;
            }
        } else {
            esc[0] = (char)c;
            n = 1;
        }
        if (p + n > cap)
            return 0;
        memcpy(buf + p, esc, n);
        p += n;
    }
    *pos = p;
    return 1;
}

static int append(char *buf, size_t cap, size_t *pos, const char *s)
{
    size_t n = strlen(s);
    if (*pos + n > cap)
        return 0;
    memcpy(buf + *pos, s, n);
    *pos += n;
    return 1;
}

size_t ka_json_error(char *buf, size_t cap, const char *code, const char *message)
{
    size_t pos = 0;

    if (!append(buf, cap, &pos, "{\"error\":{\"code\":\"") ||
        !ka_json_escape(buf, cap, &pos, code) || !append(buf, cap, &pos, "\",\"message\":\"") ||
        !ka_json_escape(buf, cap, &pos, message) || !append(buf, cap, &pos, "\"}}\n"))
        return 0;
    if (pos < cap)
        buf[pos] = '\0';
    return pos;
}
