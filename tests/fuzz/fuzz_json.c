/* libFuzzer target: the scan of an ingestion body for its top-level "writeKey" and
 * "connectionId" (json.c), raw and gzip (body.c), and the error-body encoder.
 *
 * The first byte selects (sel % 3) and varies (sel / 3) the mode; the rest is the body:
 *   '0' (mode 0) raw: ka_json_scan on the bytes;
 *   '1' (mode 1) gzip: the bytes are a gzip member, inflated by ka_gunzip with a limit, then
 *       scanned, as the module does with Content-Encoding: gzip;
 *   '2' (mode 2) round trip: the bytes are gzip-compressed here, inflated by ka_gunzip with a
 *       limit at, below or above their length, and must scan exactly as the raw bytes do.
 * Properties:
 *   - every buffer is an exact-size allocation: ASan catches any read past the body;
 *   - ka_json_scan agrees with an independent RFC 8259 validator and extractor (same depth
 *     limit, lone surrogates as U+FFFD, duplicate members flagged, last one kept);
 *   - a refused body leaves the result all zero; captured strings are NUL-terminated;
 *   - trailing white space changes nothing; a member nested one level down is never captured;
 *   - ka_gunzip agrees with plain zlib: OK only for one complete member with nothing after it
 *     that fits the limit, TOO_LARGE only when the output reached the limit, never more than
 *     the limit written;
 *   - ka_content_encoding agrees with "identity/none 0, gzip/x-gzip 1, else -1" (any case);
 *   - ka_json_escape + ka_json_scan round-trips the input as a string; ka_json_error produces
 *     a JSON object that fits exactly the length it reports. */
#include <ctype.h>
#include <strings.h>
#include <zlib.h>

#include "body.h"
#include "fuzz_common.h"
#include "json.h"

/* ------------------------------------------------------------------------------------------
 * Reference model: a recursive-descent validator written from RFC 8259. */

typedef struct {
    int kind; /* KA_JF_* */
    int duplicate;
    int variant;
    size_t len; /* full decoded length */
    unsigned char val[KA_JSON_VALUE_MAX + 1];
} ref_field;

typedef struct {
    const unsigned char *p, *end;
} ref_in;

typedef struct {
    size_t len;
    unsigned char buf[KA_JSON_VALUE_MAX + 1]; /* the first bytes */
} ref_str;

static int ref_peek(ref_in *in)
{
    return in->p < in->end ? *in->p : -1;
}

static void ref_ws(ref_in *in)
{
    int c;
    while ((c = ref_peek(in)) == ' ' || c == '\t' || c == '\n' || c == '\r')
        in->p++;
}

static void ref_put(ref_str *s, unsigned char c)
{
    if (s->len < sizeof(s->buf))
        s->buf[s->len] = c;
    s->len++;
}

static void ref_put_cp(ref_str *s, unsigned long cp)
{
    if (cp < 0x80) {
        ref_put(s, (unsigned char)cp);
    } else if (cp < 0x800) {
        ref_put(s, (unsigned char)(0xc0 | (cp >> 6)));
        ref_put(s, (unsigned char)(0x80 | (cp & 0x3f)));
    } else if (cp < 0x10000) {
        ref_put(s, (unsigned char)(0xe0 | (cp >> 12)));
        ref_put(s, (unsigned char)(0x80 | ((cp >> 6) & 0x3f)));
        ref_put(s, (unsigned char)(0x80 | (cp & 0x3f)));
    } else {
        ref_put(s, (unsigned char)(0xf0 | (cp >> 18)));
        ref_put(s, (unsigned char)(0x80 | ((cp >> 12) & 0x3f)));
        ref_put(s, (unsigned char)(0x80 | ((cp >> 6) & 0x3f)));
        ref_put(s, (unsigned char)(0x80 | (cp & 0x3f)));
    }
}

static long ref_hex4(const unsigned char *p, const unsigned char *end)
{
    long v = 0;
    if (end - p < 4)
        return -1;
    for (int i = 0; i < 4; i++) {
        unsigned char c = p[i];
        int h = (c >= '0' && c <= '9')   ? c - '0'
                : (c >= 'a' && c <= 'f') ? c - 'a' + 10
                : (c >= 'A' && c <= 'F') ? c - 'A' + 10
                                         : -1;
        if (h < 0)
            return -1;
        v = v * 16 + h;
    }
    return v;
}

/* On the opening quote. */
static int ref_string(ref_in *in, ref_str *out)
{
    out->len = 0;
    in->p++;
    for (;;) {
        int c = ref_peek(in);
        if (c < 0 || c < 0x20)
            return 0;
        in->p++;
        if (c == '"')
            return 1;
        if (c != '\\') {
            ref_put(out, (unsigned char)c);
            continue;
        }
        c = ref_peek(in);
        in->p++;
        switch (c) {
        case '"':
        case '\\':
        case '/':
            ref_put(out, (unsigned char)c);
            break;
        case 'b':
            ref_put(out, 8);
            break;
        case 'f':
            ref_put(out, 12);
            break;
        case 'n':
            ref_put(out, 10);
            break;
        case 'r':
            ref_put(out, 13);
            break;
        case 't':
            ref_put(out, 9);
            break;
        case 'u': {
            long u = ref_hex4(in->p, in->end), lo;
            if (u < 0)
                return 0;
            in->p += 4;
            if (u >= 0xd800 && u <= 0xdbff && in->end - in->p >= 6 && in->p[0] == '\\' &&
                in->p[1] == 'u' && (lo = ref_hex4(in->p + 2, in->end)) >= 0xdc00 && lo <= 0xdfff) {
                in->p += 6;
                ref_put_cp(out, 0x10000 + (((unsigned long)u - 0xd800) << 10) +
                                    ((unsigned long)lo - 0xdc00));
            } else if (u >= 0xd800 && u <= 0xdfff) {
                ref_put_cp(out, 0xfffd);
            } else {
                ref_put_cp(out, (unsigned long)u);
            }
            break;
        }
        default:
            return 0;
        }
    }
}

static int ref_digits(ref_in *in)
{
    int n = 0, c;
    while ((c = ref_peek(in)) >= '0' && c <= '9') {
        in->p++;
        n++;
    }
    return n;
}

static int ref_number(ref_in *in)
{
    int c;
    if (ref_peek(in) == '-')
        in->p++;
    c = ref_peek(in);
    if (c == '0')
        in->p++;
    else if (c >= '1' && c <= '9')
        ref_digits(in);
    else
        return 0;
    if (ref_peek(in) == '.') {
        in->p++;
        if (!ref_digits(in))
            return 0;
    }
    c = ref_peek(in);
    if (c == 'e' || c == 'E') {
        in->p++;
        c = ref_peek(in);
        if (c == '+' || c == '-')
            in->p++;
        if (!ref_digits(in))
            return 0;
    }
    return 1;
}

static int ref_value(ref_in *in, int depth, ref_field *cap);

/* Whether key names the member, as Go's encoding/json matches names (Unicode simple case
 * folding): each character of name in either ASCII case, K also as U+212A (E2 84 AA), S also as
 * U+017F (C5 BF). *exact when byte for byte. Written apart from the scanner's own. */
static int ref_name(const ref_str *key, const char *name, int *exact)
{
    size_t i = 0, n = strlen(name);

    if (key->len > sizeof(key->buf))
        return 0;
    *exact = key->len == n && memcmp(key->buf, name, n) == 0;
    for (size_t j = 0; j < n; j++) {
        char lc = (char)tolower((unsigned char)name[j]);
        if (i < key->len && tolower(key->buf[i]) == lc && key->buf[i] < 0x80) {
            i++;
        } else if (lc == 'k' && i + 3 <= key->len && memcmp(key->buf + i, "\xe2\x84\xaa", 3) == 0) {
            i += 3;
        } else if (lc == 's' && i + 2 <= key->len && memcmp(key->buf + i, "\xc5\xbf", 2) == 0) {
            i += 2;
        } else {
            return 0;
        }
    }
    return i == key->len;
}

/* A value at depth d is inside d-1 containers; the scanner refuses d > KA_JSON_MAX_DEPTH. */
static int ref_object(ref_in *in, int depth, ref_field *wk, ref_field *cid)
{
    in->p++;
    ref_ws(in);
    if (ref_peek(in) == '}') {
        in->p++;
        return 1;
    }
    for (;;) {
        ref_str key;
        ref_field *slot = NULL;
        int exact;
        ref_ws(in);
        if (ref_peek(in) != '"' || !ref_string(in, &key))
            return 0;
        ref_ws(in);
        if (ref_peek(in) != ':')
            return 0;
        in->p++;
        exact = 1;
        if (wk && ref_name(&key, "writeKey", &exact))
            slot = wk;
        else if (cid && ref_name(&key, "connectionId", &exact))
            slot = cid;
        /* Any two copies, in any case, are a duplicate; a variant is never captured. */
        if (slot && (slot->kind != KA_JF_ABSENT || slot->variant))
            slot->duplicate = 1;
        if (slot && !exact)
            slot->variant = 1;
        if (!ref_value(in, depth + 1, slot && exact ? slot : NULL))
            return 0;
        ref_ws(in);
        if (ref_peek(in) == '}') {
            in->p++;
            return 1;
        }
        if (ref_peek(in) != ',')
            return 0;
        in->p++;
    }
}

static int ref_array(ref_in *in, int depth)
{
    in->p++;
    ref_ws(in);
    if (ref_peek(in) == ']') {
        in->p++;
        return 1;
    }
    for (;;) {
        if (!ref_value(in, depth + 1, NULL))
            return 0;
        ref_ws(in);
        if (ref_peek(in) == ']') {
            in->p++;
            return 1;
        }
        if (ref_peek(in) != ',')
            return 0;
        in->p++;
    }
}

static int ref_literal(ref_in *in, const char *w)
{
    size_t n = strlen(w);
    if ((size_t)(in->end - in->p) < n || memcmp(in->p, w, n) != 0)
        return 0;
    in->p += n;
    return 1;
}

static int ref_value(ref_in *in, int depth, ref_field *cap)
{
    if (depth > KA_JSON_MAX_DEPTH)
        return 0;
    ref_ws(in);
    switch (ref_peek(in)) {
    case '"': {
        ref_str s;
        if (!ref_string(in, &s))
            return 0;
        if (cap) {
            cap->kind = KA_JF_STRING;
            cap->len = s.len;
            memcpy(cap->val, s.buf, s.len < sizeof(s.buf) ? s.len : sizeof(s.buf));
        }
        return 1;
    }
    case '{':
        if (cap)
            cap->kind = KA_JF_OTHER;
        return ref_object(in, depth, NULL, NULL);
    case '[':
        if (cap)
            cap->kind = KA_JF_OTHER;
        return ref_array(in, depth);
    case -1:
        return 0;
    default:
        if (cap)
            cap->kind = KA_JF_OTHER;
        return ref_literal(in, "true") || ref_literal(in, "false") || ref_literal(in, "null") ||
               ref_number(in);
    }
}

static int ref_scan(const unsigned char *buf, size_t len, ref_field *wk, ref_field *cid)
{
    ref_in in = {buf, buf + len};
    memset(wk, 0, sizeof(*wk));
    memset(cid, 0, sizeof(*cid));
    ref_ws(&in);
    if (ref_peek(&in) != '{' || !ref_object(&in, 1, wk, cid))
        return 0;
    ref_ws(&in);
    return in.p == in.end;
}

/* ------------------------------------------------------------------------------------------
 * Properties of one scan. */

static void check_field(const ka_jfield *f, const ref_field *r)
{
    CHECK(f->kind == KA_JF_ABSENT || f->kind == KA_JF_STRING || f->kind == KA_JF_OTHER);
    CHECK((int)f->kind == r->kind);
    CHECK(f->duplicate == r->duplicate);
    CHECK(f->variant == r->variant);
    CHECK(memchr(f->val, '\0', sizeof(f->val)) != NULL);
    if (f->kind == KA_JF_ABSENT) {
        CHECK((!f->duplicate || f->variant) && !f->too_long && f->len == 0 && f->val[0] == '\0');
    } else if (f->kind == KA_JF_STRING) {
        CHECK(f->too_long == (r->len > KA_JSON_VALUE_MAX));
        if (f->too_long) {
            CHECK(f->val[0] == '\0');
        } else {
            CHECK(f->len == r->len);
            CHECK(f->val[f->len] == '\0');
            CHECK(memcmp(f->val, r->val, f->len) == 0);
        }
    }
}

static void scan_checked(const uint8_t *body, size_t len, ka_body_fields *out)
{
    static const ka_body_fields zero;
    uint8_t *copy = fuzz_dup(body, len);
    ref_field wk, cid;
    int valid;

    ka_json_scan((const char *)copy, len, out);
    valid = ref_scan(copy, len, &wk, &cid);
    CHECK(out->valid_object == valid);
    if (!valid) {
        CHECK(memcmp(out, &zero, sizeof(zero)) == 0);
    } else {
        check_field(&out->write_key, &wk);
        check_field(&out->connection_id, &cid);
    }
    free(copy);
}

static int fields_equal(const ka_body_fields *a, const ka_body_fields *b)
{
    const ka_jfield *fa[2] = {&a->write_key, &a->connection_id};
    const ka_jfield *fb[2] = {&b->write_key, &b->connection_id};
    if (a->valid_object != b->valid_object)
        return 0;
    for (int i = 0; i < 2; i++) {
        if (fa[i]->kind != fb[i]->kind || fa[i]->duplicate != fb[i]->duplicate ||
            fa[i]->variant != fb[i]->variant)
            return 0;
        if (fa[i]->kind == KA_JF_STRING &&
            (fa[i]->too_long != fb[i]->too_long ||
             (!fa[i]->too_long &&
              (fa[i]->len != fb[i]->len || memcmp(fa[i]->val, fb[i]->val, fa[i]->len) != 0))))
            return 0;
    }
    return 1;
}

/* Metamorphic checks on small bodies: trailing white space, nesting one level down. */
static void check_metamorphic(const uint8_t *body, size_t len, const ka_body_fields *base)
{
    ka_body_fields other;
    uint8_t *buf;

    if (len > 2048)
        return;
    buf = malloc(len + 16);
    CHECK(buf != NULL);
    memcpy(buf, body, len);
    memcpy(buf + len, " \t\r\n", 4);
    ka_json_scan((const char *)buf, len + 4, &other);
    CHECK(fields_equal(base, &other));
    if (base->valid_object) {
        buf[len] = '}';
        ka_json_scan((const char *)buf, len + 1, &other);
        CHECK(!other.valid_object);
    }
    /* {"x": BODY}, BODY one valid object: BODY's own members are one level down, never
     * captured. (A BODY that is not one value can close the string or object it is put in and
     * add members to the top level: nothing to check then.) */
    if (base->valid_object) {
        memcpy(buf, "{\"x\":", 5);
        memcpy(buf + 5, body, len);
        buf[len + 5] = '}';
        ka_json_scan((const char *)buf, len + 6, &other);
        if (other.valid_object) /* not when BODY was already as deep as allowed */
            CHECK(other.write_key.kind == KA_JF_ABSENT && other.connection_id.kind == KA_JF_ABSENT);
    }
    free(buf);
}

/* Length of the well-formed UTF-8 sequence at s (Unicode Table 3-7), 0 if there is none. */
static size_t model_utf8_len(const unsigned char *s, size_t avail)
{
    unsigned char c = s[0], lo = 0x80, hi = 0xbf;
    size_t n;

    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        n = 2;
    else if (c >= 0xe0 && c <= 0xef)
        n = 3;
    else if (c >= 0xf0 && c <= 0xf4)
        n = 4;
    else
        return 0;
    if (c == 0xe0)
        lo = 0xa0;
    else if (c == 0xed)
        hi = 0x9f;
    else if (c == 0xf0)
        lo = 0x90;
    else if (c == 0xf4)
        hi = 0x8f;
    if (avail < n || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++)
        if (s[i] < 0x80 || s[i] > 0xbf)
            return 0;
    return n;
}

/* The escaper and the scanner agree: {"writeKey":"<escaped s>"} gives s back, with each byte
 * that is not part of well-formed UTF-8 replaced by U+FFFD (as Go's encoder writes it); the
 * escaped text is well-formed UTF-8 with no raw control character. */
static void check_escape(const uint8_t *data, size_t size)
{
    char *s = fuzz_cstr(data, size);
    size_t n = strlen(s), cap = 6 * n + 64, pos = 0, elen, wn = 0;
    char *buf = malloc(cap), *want = malloc(3 * n + 1);
    ka_body_fields f;

    CHECK(buf != NULL && want != NULL);
    for (size_t i = 0; i < n;) {
        size_t l = model_utf8_len((const unsigned char *)s + i, n - i);
        if (l == 0) {
            memcpy(want + wn, "\xef\xbf\xbd", 3);
            wn += 3;
            i++;
        } else {
            memcpy(want + wn, s + i, l);
            wn += l;
            i += l;
        }
    }
    memcpy(buf, "{\"writeKey\":\"", 13);
    pos = 13;
    CHECK(ka_json_escape(buf, cap, &pos, s) == 1);
    for (size_t i = 13; i < pos;) {
        size_t l = model_utf8_len((const unsigned char *)buf + i, pos - i);
        CHECK(l > 0);
        CHECK((unsigned char)buf[i] >= 0x20 && buf[i] != 0x7f);
        i += l;
    }
    memcpy(buf + pos, "\"}", 2);
    ka_json_scan(buf, pos + 2, &f);
    CHECK(f.valid_object);
    CHECK(f.write_key.kind == KA_JF_STRING);
    CHECK(f.write_key.too_long == (wn > KA_JSON_VALUE_MAX));
    if (!f.write_key.too_long)
        CHECK(f.write_key.len == wn && memcmp(f.write_key.val, want, wn) == 0);
    free(want);
    /* Too small a buffer: refused, *pos untouched. */
    if (n > 0) {
        size_t p2 = 0, used = pos - 13;
        char *small = malloc(used - 1 ? used - 1 : 1);
        CHECK(small != NULL);
        CHECK(ka_json_escape(small, used - 1, &p2, s) == 0 && p2 == 0);
        free(small);
    }

    /* The error body: an object with an exact length; one byte less does not fit. */
    elen = ka_json_error(buf, cap, "BadRequest", s);
    CHECK(elen > 0 && elen < cap && buf[elen] == '\0');
    CHECK(elen >= 4 && memcmp(buf + elen - 4, "\"}}\n", 4) == 0);
    {
        char *exact = malloc(elen);
        ka_body_fields e;
        CHECK(exact != NULL);
        CHECK(ka_json_error(exact, elen, "BadRequest", s) == elen);
        CHECK(memcmp(exact, buf, elen) == 0);
        CHECK(ka_json_error(exact, elen - 1, "BadRequest", s) == 0);
        ka_json_scan(exact, elen, &e);
        CHECK(e.valid_object && e.write_key.kind == KA_JF_ABSENT);
        free(exact);
    }
    free(buf);
    free(s);
}

/* Content-Encoding: identity (or none) 0, gzip/x-gzip 1, anything else -1; any case. */
static void check_content_encoding(const uint8_t *data, size_t size)
{
    char *v = fuzz_cstr(data, size);
    int want = -1;

    if (v[0] == '\0' || strcasecmp(v, "identity") == 0)
        want = 0;
    else if (strcasecmp(v, "gzip") == 0 || strcasecmp(v, "x-gzip") == 0)
        want = 1;
    CHECK(ka_content_encoding(v) == want);
    CHECK(ka_content_encoding(NULL) == 0);
    free(v);
}

/* ------------------------------------------------------------------------------------------
 * gzip */

/* A pool-like allocator (the module passes one with a no-op free): remembered, freed at the
 * end of the input. */
typedef struct {
    void *p[32];
    int n;
} pool;

static void *pool_alloc(void *opaque, unsigned items, unsigned size)
{
    pool *pl = opaque;
    void *p;
    if (pl->n == 32)
        return NULL;
    p = malloc((size_t)items * size);
    if (p)
        pl->p[pl->n++] = p;
    return p;
}

static void pool_free_all(pool *pl)
{
    for (int i = 0; i < pl->n; i++)
        free(pl->p[i]);
    pl->n = 0;
}

#define REF_MAX (1u << 20)

/* Plain zlib: 1 when in is one complete gzip member and nothing else; *n bytes produced
 * (before an error too, capped at REF_MAX). */
static int ref_gunzip(const uint8_t *in, size_t len, uint8_t *out, size_t *n)
{
    z_stream zs;
    int rc;
    memset(&zs, 0, sizeof(zs));
    CHECK(inflateInit2(&zs, 16 + MAX_WBITS) == Z_OK);
    zs.next_in = (Bytef *)in;
    zs.avail_in = (uInt)len;
    zs.next_out = out;
    zs.avail_out = REF_MAX;
    rc = inflate(&zs, Z_FINISH);
    *n = zs.total_out;
    inflateEnd(&zs);
    return rc == Z_STREAM_END && zs.avail_in == 0;
}

/* ka_gunzip with limit cap, checked against plain zlib. Returns 1 and the output when OK. */
static int gunzip_checked(const uint8_t *in, size_t len, size_t cap, int use_pool, uint8_t **out,
                          size_t *outlen)
{
    static uint8_t *ref;
    uint8_t *copy = fuzz_dup(in, len), *buf = malloc(cap ? cap : 1);
    size_t refn = 0, n = (size_t)-1;
    pool pl = {{0}, 0};
    int rc, ok;

    if (ref == NULL)
        ref = malloc(REF_MAX);
    CHECK(ref != NULL && buf != NULL);
    rc = ka_gunzip(copy, len, buf, cap, &n, use_pool ? pool_alloc : NULL, &pl);
    pool_free_all(&pl);
    ok = ref_gunzip(copy, len, ref, &refn);
    CHECK(rc == KA_BODY_OK || rc == KA_BODY_TOO_LARGE || rc == KA_BODY_BAD);
    CHECK(n <= cap);
    if (rc == KA_BODY_OK) {
        CHECK(ok && refn == n && memcmp(buf, ref, n) == 0);
    } else if (rc == KA_BODY_TOO_LARGE) {
        /* The limit was reached (a stream cut exactly at the limit counts as too large). */
        CHECK(n == cap && refn >= cap && (refn > cap || !ok));
    } else {
        CHECK(!ok); /* not one complete gzip member with nothing after it */
    }
    if (ok && refn <= cap)
        CHECK(rc == KA_BODY_OK); /* a body within the limit is always read */
    if (ok && refn > cap)
        CHECK(rc == KA_BODY_TOO_LARGE);
    free(copy);
    if (rc != KA_BODY_OK) {
        free(buf);
        return 0;
    }
    *out = buf;
    *outlen = n;
    return 1;
}

static size_t gzip_compress(const uint8_t *in, size_t len, int level, uint8_t **out)
{
    z_stream zs;
    size_t cap = len + len / 100 + 64;
    uint8_t *buf = malloc(cap);
    CHECK(buf != NULL);
    memset(&zs, 0, sizeof(zs));
    CHECK(deflateInit2(&zs, level, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) == Z_OK);
    zs.next_in = (Bytef *)in;
    zs.avail_in = (uInt)len;
    zs.next_out = buf;
    zs.avail_out = (uInt)cap;
    CHECK(deflate(&zs, Z_FINISH) == Z_STREAM_END);
    cap = zs.total_out;
    deflateEnd(&zs);
    *out = buf;
    return cap;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ka_body_fields f, g;
    unsigned sel, mode, variant;
    const uint8_t *body;
    size_t len;

    if (size == 0)
        return 0;
    sel = data[0];
    mode = sel % 3;
    variant = sel / 3;
    body = data + 1;
    len = size - 1;

    if (mode == 0) {
        scan_checked(body, len, &f);
        check_metamorphic(body, len, &f);
        check_escape(body, len);
        if (len <= 16)
            check_content_encoding(body, len);
    } else if (mode == 1) {
        static const size_t caps[4] = {65536, 16, 256, 1};
        uint8_t *out;
        size_t n;
        if (gunzip_checked(body, len, caps[variant % 4], (variant / 4) % 2, &out, &n)) {
            scan_checked(out, n, &f);
            free(out);
        }
    } else {
        uint8_t *gz, *out;
        size_t gzlen, n, cap;
        gzlen = gzip_compress(body, len, (int)(variant % 10), &gz);
        switch ((variant / 10) % 4) {
        case 0:
            cap = 65536 > len ? 65536 : len;
            break;
        case 1:
            cap = len;
            break;
        case 2:
            cap = len ? len - 1 : 0;
            break;
        default:
            cap = len / 2;
            break;
        }
        if (gunzip_checked(gz, gzlen, cap, (variant / 40) % 2, &out, &n)) {
            CHECK(n == len && memcmp(out, body, len) == 0);
            scan_checked(out, n, &f);
            scan_checked(body, len, &g);
            CHECK(fields_equal(&f, &g));
            free(out);
        } else {
            CHECK(len > cap);
        }
        free(gz);
    }
    return 0;
}
