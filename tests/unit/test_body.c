/* body.c: gzip inflation of ingestion bodies with a size limit, Content-Encoding values. */
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "body.h"
#include "tests.h"

/* Compresses in with zlib: windowBits 15 + 16 gzip, 15 zlib, -15 raw deflate. */
static unsigned char *compress_with(const void *in, size_t inlen, int window_bits, size_t *outlen)
{
    z_stream zs;
    size_t cap = inlen + inlen / 100 + 128;
    unsigned char *out = malloc(cap);

    assert_non_null(out);
    memset(&zs, 0, sizeof(zs));
    assert_int_equal(
        deflateInit2(&zs, Z_BEST_COMPRESSION, Z_DEFLATED, window_bits, 8, Z_DEFAULT_STRATEGY),
        Z_OK);
    zs.next_in = (Bytef *)in;
    zs.avail_in = (uInt)inlen;
    zs.next_out = out;
    zs.avail_out = (uInt)cap;
    assert_int_equal(deflate(&zs, Z_FINISH), Z_STREAM_END);
    *outlen = zs.total_out;
    deflateEnd(&zs);
    return out;
}

static unsigned char *gzip(const void *in, size_t inlen, size_t *outlen)
{
    return compress_with(in, inlen, 16 + MAX_WBITS, outlen);
}

/* A JSON-ish body that does not compress to nothing. */
static char *sample(size_t n)
{
    char *s = malloc(n + 1);
    uint32_t x = 12345;

    assert_non_null(s);
    for (size_t i = 0; i < n; i++) {
        x = x * 1103515245u + 12345u;
        s[i] = "{}\":,abcdefghijklmnopqrstuvwxyz0123456789 "[(x >> 16) % 42];
    }
    s[n] = '\0';
    return s;
}

static void test_gunzip_round_trip(void **state)
{
    static const size_t sizes[] = {0, 1, 100, 4096, 100000};

    (void)state;
    for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
        size_t n = sizes[k], zlen, outlen = 999;
        char *plain = sample(n);
        unsigned char *z = gzip(plain, n, &zlen);
        char *out = malloc(n + 16);

        assert_non_null(out);
        assert_int_equal(ka_gunzip(z, zlen, out, n + 16, &outlen, NULL, NULL), KA_BODY_OK);
        assert_int_equal(outlen, n);
        assert_memory_equal(out, plain, n);
        free(plain);
        free(z);
        free(out);
    }
}

static void test_gunzip_exact_limit(void **state)
{
    size_t n = 5000, zlen, outlen;
    char *plain = sample(n);
    unsigned char *z = gzip(plain, n, &zlen);
    char *out = malloc(n);

    (void)state;
    assert_non_null(out);
    /* Exactly the limit is fine. */
    assert_int_equal(ka_gunzip(z, zlen, out, n, &outlen, NULL, NULL), KA_BODY_OK);
    assert_int_equal(outlen, n);
    assert_memory_equal(out, plain, n);
    /* One byte over the limit. */
    assert_int_equal(ka_gunzip(z, zlen, out, n - 1, &outlen, NULL, NULL), KA_BODY_TOO_LARGE);
    assert_int_equal(ka_gunzip(z, zlen, out, 100, &outlen, NULL, NULL), KA_BODY_TOO_LARGE);
    free(plain);
    free(z);
    free(out);
}

static void test_gunzip_bomb(void **state)
{
    /* 4 MB of zeros compress to about 4 KB; the limit stops inflation. */
    size_t n = 4u << 20, zlen, outlen = 0, cap = 512000;
    char *zeros = calloc(1, n);
    unsigned char *z;
    char *out = malloc(cap);

    (void)state;
    assert_non_null(zeros);
    assert_non_null(out);
    z = gzip(zeros, n, &zlen);
    assert_true(zlen < 20000);
    assert_int_equal(ka_gunzip(z, zlen, out, cap, &outlen, NULL, NULL), KA_BODY_TOO_LARGE);
    assert_int_equal(outlen, cap);
    free(zeros);
    free(z);
    free(out);
}

static void test_gunzip_truncated(void **state)
{
    size_t n = 20000, zlen, outlen;
    char *plain = sample(n);
    unsigned char *z = gzip(plain, n, &zlen);
    char *out = malloc(n + 16);

    (void)state;
    assert_non_null(out);
    /* Without the trailer (CRC and length), part of it, half of the data, only the header. */
    assert_int_equal(ka_gunzip(z, zlen - 8, out, n + 16, &outlen, NULL, NULL), KA_BODY_BAD);
    assert_int_equal(ka_gunzip(z, zlen - 1, out, n + 16, &outlen, NULL, NULL), KA_BODY_BAD);
    assert_int_equal(ka_gunzip(z, zlen / 2, out, n + 16, &outlen, NULL, NULL), KA_BODY_BAD);
    assert_int_equal(ka_gunzip(z, 10, out, n + 16, &outlen, NULL, NULL), KA_BODY_BAD);
    assert_int_equal(ka_gunzip(z, 3, out, n + 16, &outlen, NULL, NULL), KA_BODY_BAD);
    assert_int_equal(ka_gunzip(z, 0, out, n + 16, &outlen, NULL, NULL), KA_BODY_BAD);
    free(plain);
    free(z);
    free(out);
}

static void test_gunzip_corrupt(void **state)
{
    size_t n = 2000, zlen, outlen;
    char *plain = sample(n);
    unsigned char *z = gzip(plain, n, &zlen);
    char *out = malloc(n + 16);

    (void)state;
    assert_non_null(out);
    /* Wrong CRC-32 in the trailer. */
    z[zlen - 8] ^= 0x01;
    assert_int_equal(ka_gunzip(z, zlen, out, n + 16, &outlen, NULL, NULL), KA_BODY_BAD);
    z[zlen - 8] ^= 0x01;
    /* Wrong length in the trailer. */
    z[zlen - 4] ^= 0x01;
    assert_int_equal(ka_gunzip(z, zlen, out, n + 16, &outlen, NULL, NULL), KA_BODY_BAD);
    z[zlen - 4] ^= 0x01;
    /* Wrong magic. */
    z[0] ^= 0xff;
    assert_int_equal(ka_gunzip(z, zlen, out, n + 16, &outlen, NULL, NULL), KA_BODY_BAD);
    z[0] ^= 0xff;
    /* Still good. */
    assert_int_equal(ka_gunzip(z, zlen, out, n + 16, &outlen, NULL, NULL), KA_BODY_OK);
    free(plain);
    free(z);
    free(out);
}

static void test_gunzip_not_gzip(void **state)
{
    static const char json[] = "{\"writeKey\":\"WriteKeyA1xxxxxxxxxxxxxxxxxxxxxx\"}";
    char out[256];
    size_t zlen, outlen;
    unsigned char *z;

    (void)state;
    assert_int_equal(ka_gunzip(json, strlen(json), out, sizeof(out), &outlen, NULL, NULL),
                     KA_BODY_BAD);
    /* zlib and raw deflate streams are not gzip. */
    z = compress_with(json, strlen(json), MAX_WBITS, &zlen);
    assert_int_equal(ka_gunzip(z, zlen, out, sizeof(out), &outlen, NULL, NULL), KA_BODY_BAD);
    free(z);
    z = compress_with(json, strlen(json), -MAX_WBITS, &zlen);
    assert_int_equal(ka_gunzip(z, zlen, out, sizeof(out), &outlen, NULL, NULL), KA_BODY_BAD);
    free(z);
}

static void test_gunzip_trailing_garbage(void **state)
{
    static const char json[] = "{\"a\":1}";
    char out[256];
    size_t zlen, outlen;
    unsigned char *z = gzip(json, strlen(json), &zlen);
    unsigned char *more = malloc(zlen + 4);

    (void)state;
    assert_non_null(more);
    memcpy(more, z, zlen);
    memcpy(more + zlen, "junk", 4);
    assert_int_equal(ka_gunzip(more, zlen + 4, out, sizeof(out), &outlen, NULL, NULL), KA_BODY_BAD);
    free(z);
    free(more);
}

/* A pool-like allocator: one arena, nothing freed individually (as the module's request pool). */
typedef struct {
    unsigned char mem[96 * 1024];
    size_t used;
    int calls;
} arena;

static void *arena_alloc(void *opaque, unsigned items, unsigned size)
{
    arena *a = opaque;
    size_t n = ((size_t)items * size + 15) & ~(size_t)15;

    a->calls++;
    if (a->used + n > sizeof(a->mem))
        return NULL;
    a->used += n;
    return a->mem + a->used - n;
}

static void test_gunzip_custom_allocator(void **state)
{
    static arena a;
    size_t n = 3000, zlen, outlen;
    char *plain = sample(n);
    unsigned char *z = gzip(plain, n, &zlen);
    char *out = malloc(n);

    (void)state;
    assert_non_null(out);
    a.used = 0;
    a.calls = 0;
    assert_int_equal(ka_gunzip(z, zlen, out, n, &outlen, arena_alloc, &a), KA_BODY_OK);
    assert_int_equal(outlen, n);
    assert_memory_equal(out, plain, n);
    assert_true(a.calls > 0);
    free(plain);
    free(z);
    free(out);
}

static void test_content_encoding(void **state)
{
    (void)state;
    assert_int_equal(ka_content_encoding(NULL), 0);
    assert_int_equal(ka_content_encoding(""), 0);
    assert_int_equal(ka_content_encoding("identity"), 0);
    assert_int_equal(ka_content_encoding("IDENTITY"), 0);
    assert_int_equal(ka_content_encoding("gzip"), 1);
    assert_int_equal(ka_content_encoding("GZip"), 1);
    assert_int_equal(ka_content_encoding("x-gzip"), 1);
    assert_int_equal(ka_content_encoding("X-GZIP"), 1);
    assert_int_equal(ka_content_encoding("deflate"), -1);
    assert_int_equal(ka_content_encoding("br"), -1);
    assert_int_equal(ka_content_encoding("zstd"), -1);
    assert_int_equal(ka_content_encoding("gzip, gzip"), -1);
    assert_int_equal(ka_content_encoding("gzip, identity"), -1);
    assert_int_equal(ka_content_encoding("gzipx"), -1);
}

int run_body_tests(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gunzip_round_trip),
        cmocka_unit_test(test_gunzip_exact_limit),
        cmocka_unit_test(test_gunzip_bomb),
        cmocka_unit_test(test_gunzip_truncated),
        cmocka_unit_test(test_gunzip_corrupt),
        cmocka_unit_test(test_gunzip_not_gzip),
        cmocka_unit_test(test_gunzip_trailing_garbage),
        cmocka_unit_test(test_gunzip_custom_allocator),
        cmocka_unit_test(test_content_encoding),
    };
    return cmocka_run_group_tests_name("body", tests, NULL, NULL);
}
