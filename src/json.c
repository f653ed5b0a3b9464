/* A validating JSON scanner that keeps only two top-level members, and the error body
 * encoder. Recursion is bounded by KA_JSON_MAX_DEPTH; nothing is allocated. */
#include "json.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    const unsigned char *p;
    const unsigned char *end;
} scanner;

static void skip_ws(scanner *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
        s->p++;
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
 * plain run of a string that is skipped, not decoded. Eight bytes a step (SWAR): a byte
 * flagged by one of the three tests is the lowest flagged one only if it is a true match (a
 * borrow only runs upward from a true match), so the lowest flag of all three is exact. */
static const unsigned char *plain_run_end(const unsigned char *p, const unsigned char *end)
{
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

/* A string at s->p (on the opening quote). Decodes into buf (capacity cap) when buf is set. */
static int scan_string(scanner *s, char *buf, size_t cap, size_t *len, int *overflow)
{
    s->p++;
    while (s->p < s->end) {
        unsigned char c;
        char tmp[4];
        size_t n = 1;

        /* Most of a body is strings nobody keeps: skip their plain runs in bulk. */
        if (buf == NULL && (s->p = plain_run_end(s->p, s->end)) >= s->end)
            return 0;
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
            switch (c) {
            case '"':
            case '\\':
            case '/':
                tmp[0] = (char)c;
                break;
            case 'b':
                tmp[0] = '\b';
                break;
            case 'f':
                tmp[0] = '\f';
                break;
            case 'n':
                tmp[0] = '\n';
                break;
            case 'r':
                tmp[0] = '\r';
                break;
            case 't':
                tmp[0] = '\t';
                break;
            case 'u':
                if (!read_unicode_escape(s, &cp))
                    return 0;
                n = utf8_encode(cp, tmp);
                break;
            default:
                return 0;
            }
        } else {
            tmp[0] = (char)c;
        }
        if (buf)
            cap_put(buf, cap, len, overflow, tmp, n);
    }
    return 0;
}

static int scan_digits(scanner *s)
{
    const unsigned char *start = s->p;
    while (s->p < s->end && *s->p >= '0' && *s->p <= '9')
        s->p++;
    return s->p > start;
}

static int scan_number(scanner *s)
{
    if (s->p < s->end && *s->p == '-')
        s->p++;
    if (s->p < s->end && *s->p == '0')
        s->p++;
    else if (!scan_digits(s))
        return 0;
    if (s->p < s->end && *s->p == '.') {
        s->p++;
        if (!scan_digits(s))
            return 0;
    }
    if (s->p < s->end && (*s->p == 'e' || *s->p == 'E')) {
        s->p++;
        if (s->p < s->end && (*s->p == '+' || *s->p == '-'))
            s->p++;
        if (!scan_digits(s))
            return 0;
    }
    return 1;
}

static int scan_literal(scanner *s, const char *word)
{
    size_t n = strlen(word);
    if ((size_t)(s->end - s->p) < n || memcmp(s->p, word, n) != 0)
        return 0;
    s->p += n;
    return 1;
}

static int scan_value(scanner *s, int depth, ka_jfield *capture);

static int scan_array(scanner *s, int depth)
{
    s->p++;
    skip_ws(s);
    if (s->p < s->end && *s->p == ']') {
        s->p++;
        return 1;
    }
    for (;;) {
        if (!scan_value(s, depth + 1, NULL))
            return 0;
        skip_ws(s);
        if (s->p >= s->end)
            return 0;
        if (*s->p == ']') {
            s->p++;
            return 1;
        }
        if (*s->p++ != ',')
            return 0;
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

    if (top == NULL || overflow)
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

static int scan_object(scanner *s, int depth, ka_body_fields *top)
{
    s->p++;
    skip_ws(s);
    if (s->p < s->end && *s->p == '}') {
        s->p++;
        return 1;
    }
    for (;;) {
        char key[16] = {0};
        size_t klen = 0;
        int koverflow = 0, exact = 0;
        ka_jfield *slot;

        skip_ws(s);
        if (s->p >= s->end || *s->p != '"')
            return 0;
        if (!scan_string(s, top ? key : NULL, sizeof(key), &klen, &koverflow))
            return 0;
        skip_ws(s);
        if (s->p >= s->end || *s->p++ != ':')
            return 0;
        slot = member_slot(key, klen, koverflow, top, &exact);
        /* A backend may read any of the copies, in any case: more than one is refused. */
        if (slot && (slot->kind != KA_JF_ABSENT || slot->variant))
            slot->duplicate = 1;
        if (slot && !exact)
            slot->variant = 1;
        if (!scan_value(s, depth + 1, slot && exact ? slot : NULL))
            return 0;
        skip_ws(s);
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

static int scan_value(scanner *s, int depth, ka_jfield *capture)
{
    if (depth > KA_JSON_MAX_DEPTH)
        return 0;
    skip_ws(s);
    if (s->p >= s->end)
        return 0;
    if (capture)
        capture->kind = KA_JF_OTHER;
    switch (*s->p) {
    case '"':
        if (capture) {
            int overflow = 0;
            capture->kind = KA_JF_STRING;
            capture->len = 0;
            if (!scan_string(s, capture->val, KA_JSON_VALUE_MAX, &capture->len, &overflow))
                return 0;
            capture->too_long = overflow;
            capture->val[overflow ? 0 : capture->len] = '\0';
            return 1;
        }
        {
            size_t unused = 0;
            int ov = 0;
            return scan_string(s, NULL, 0, &unused, &ov);
        }
    case '{':
        return scan_object(s, depth, NULL);
    case '[':
        return scan_array(s, depth);
    case 't':
        return scan_literal(s, "true");
    case 'f':
        return scan_literal(s, "false");
    case 'n':
        return scan_literal(s, "null");
    default:
        return scan_number(s);
    }
}

void ka_json_scan(const char *buf, size_t len, ka_body_fields *out)
{
    scanner s = {(const unsigned char *)buf, (const unsigned char *)buf + len};

    memset(out, 0, sizeof(*out));
    skip_ws(&s);
    if (s.p >= s.end || *s.p != '{' || !scan_object(&s, 1, out)) {
        memset(out, 0, sizeof(*out));
        return;
    }
    skip_ws(&s);
    if (s.p != s.end) {
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
