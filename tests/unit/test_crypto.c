/* crypto.c: HMAC-SHA-256 with precomputed pads (checked against OpenSSL's HMAC() and fixed
 * vectors), constant-time comparison, random bytes, the store secret file. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/params.h>

#include "crypto.h"
#include "tests.h"

static void hex_to_bytes(const char *hex, uint8_t *out, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        assert_int_equal(sscanf(hex + 2 * i, "%2x", &v), 1);
        out[i] = (uint8_t)v;
    }
}

static void openssl_hmac(const uint8_t key[32], const void *msg, size_t len, uint8_t out[32])
{
    unsigned outlen = 0;
    assert_non_null(HMAC(EVP_sha256(), key, 32, msg, len, out, &outlen));
    assert_int_equal(outlen, 32);
}

/* Fixed vectors computed with Python's hmac module, key = 0x00..0x1f. */
static void test_hmac_vectors(void **state)
{
    static const struct {
        size_t len;
        int kind; /* 0: "", 1: "abc", 2: 0x01..0x20, 3: 'a' * len */
        const char *hex;
    } v[] = {
        {0, 0, "d38b42096d80f45f826b44a9d5607de72496a415d3f4a1a8c88e3bb9da8dc1cb"},
        {3, 1, "f0133729c4163dede81e21cd47839256da58171238c8a0d874397c73b14e1e47"},
        {32, 2, "38a55899ea94c6403bff310ff0692a6d2ad1add5edd3cc8400508b74a9328bd2"},
        {64, 3, "0b28b35a2636ba2e13226c4f5da305efe29561a71cf2b095c23ff285c0f994ca"},
        {1000, 3, "d33e4e55394fcab1568facc89482436010a135f08717d32a15dfb3176c7b5004"},
    };
    uint8_t key[32], msg[1000], want[32], got[32];
    ka_hmac_key k;

    (void)state;
    for (int i = 0; i < 32; i++)
        key[i] = (uint8_t)i;
    ka_hmac_init(&k, key);
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        if (v[i].kind == 1)
            memcpy(msg, "abc", 3);
        else if (v[i].kind == 2)
            for (int j = 0; j < 32; j++)
                msg[j] = (uint8_t)(j + 1);
        else if (v[i].kind == 3)
            memset(msg, 'a', v[i].len);
        hex_to_bytes(v[i].hex, want, 32);
        memset(got, 0, sizeof(got));
        ka_hmac(&k, msg, v[i].len, got);
        assert_memory_equal(got, want, 32);
    }
}

static void test_hmac_write_key_vector(void **state)
{
    static const char wk[] = "WriteKeyA1xxxxxxxxxxxxxxxxxxxxxx";
    uint8_t key[32], want[32], got[32];
    ka_hmac_key k;

    (void)state;
    memset(key, 0xff, sizeof(key));
    ka_hmac_init(&k, key);
    ka_hmac(&k, wk, 32, got);
    hex_to_bytes("c3a6995ca616dad282281f14a8ef8bc4991859e1defc171ae124ce022934a293", want, 32);
    assert_memory_equal(got, want, 32);
}

/* Random 32-byte secrets against OpenSSL's one-shot HMAC(), across block boundaries. */
static void test_hmac_matches_openssl(void **state)
{
    static const size_t lens[] = {0,  1,  31,  32,  33,  55,  56,   63,
                                  64, 65, 119, 127, 128, 129, 1000, 4096};
    static uint8_t msg[4096];

    (void)state;
    for (int round = 0; round < 50; round++) {
        uint8_t secret[32], want[32], got[32];
        ka_hmac_key k;

        assert_int_equal(ka_random(secret, sizeof(secret)), 1);
        assert_int_equal(ka_random(msg, sizeof(msg)), 1);
        ka_hmac_init(&k, secret);
        for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
            openssl_hmac(secret, msg, lens[i], want);
            ka_hmac(&k, msg, lens[i], got);
            assert_memory_equal(got, want, 32);
            /* The key is not consumed: the same digest again. */
            memset(got, 0, sizeof(got));
            ka_hmac(&k, msg, lens[i], got);
            assert_memory_equal(got, want, 32);
        }
    }
}

static void test_hmac_key_sensitivity(void **state)
{
    uint8_t s1[32], s2[32], d1[32], d2[32];
    ka_hmac_key k1, k2;

    (void)state;
    memset(s1, 7, sizeof(s1));
    memcpy(s2, s1, sizeof(s2));
    s2[31] ^= 1; /* the last secret byte counts */
    ka_hmac_init(&k1, s1);
    ka_hmac_init(&k2, s2);
    ka_hmac(&k1, "x", 1, d1);
    ka_hmac(&k2, "x", 1, d2);
    assert_memory_not_equal(d1, d2, 32);
    ka_hmac(&k1, "y", 1, d2);
    assert_memory_not_equal(d1, d2, 32);
}

/* SipHash-2-4-128: the reference's vectors (key 00..0f, message 00 01 02 ... of each length),
 * then OpenSSL's SIPHASH MAC over every length up to 100 with random keys and messages. */
static void test_siphash128(void **state)
{
    static const struct {
        size_t len;
        const char *hex;
    } vec[] = {{0, "a3817f04ba25a8e66df67214c7550293"},
               {7, "a1f1ebbed8dbc153c0b84aa61ff08239"},
               {8, "3b62a9ba6258f5610f83e264f31497b4"},
               {15, "5493e99933b0a8117e08ec0f97cfc3d9"},
               {63, "5150d1772f50834a503e069a973fbd7c"}};
    uint8_t key[KA_SIPHASH_KEY_LEN], msg[100], got[KA_SIPHASH_OUT_LEN], want[KA_SIPHASH_OUT_LEN];
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "SIPHASH", NULL);
    size_t outlen = sizeof(want);
    OSSL_PARAM params[2];

    (void)state;
    for (size_t i = 0; i < sizeof(key); i++)
        key[i] = (uint8_t)i;
    for (size_t i = 0; i < sizeof(msg); i++)
        msg[i] = (uint8_t)i;
    for (size_t i = 0; i < sizeof(vec) / sizeof(vec[0]); i++) {
        hex_to_bytes(vec[i].hex, want, sizeof(want));
        ka_siphash128(key, msg, vec[i].len, got);
        assert_memory_equal(got, want, sizeof(want));
    }
    assert_non_null(mac);
    params[0] = OSSL_PARAM_construct_size_t("size", &outlen);
    params[1] = OSSL_PARAM_construct_end();
    for (size_t len = 0; len <= sizeof(msg); len++) {
        EVP_MAC_CTX *ctx = EVP_MAC_CTX_new(mac);
        size_t n = 0;
        assert_int_equal(ka_random(key, sizeof(key)), 1);
        assert_int_equal(ka_random(msg, sizeof(msg)), 1);
        assert_non_null(ctx);
        assert_int_equal(EVP_MAC_init(ctx, key, sizeof(key), params), 1);
        assert_int_equal(EVP_MAC_update(ctx, msg, len), 1);
        assert_int_equal(EVP_MAC_final(ctx, want, &n, sizeof(want)), 1);
        assert_int_equal(n, sizeof(want));
        EVP_MAC_CTX_free(ctx);
        ka_siphash128(key, msg, len, got);
        assert_memory_equal(got, want, sizeof(want));
    }
    EVP_MAC_free(mac);
}

static void test_ct_equal(void **state)
{
    (void)state;
    assert_int_equal(ka_ct_equal("abcdef", "abcdef", 6), 1);
    assert_int_equal(ka_ct_equal("abcdef", "Abcdef", 6), 0);
    assert_int_equal(ka_ct_equal("abcdef", "abcdeF", 6), 0);
    assert_int_equal(ka_ct_equal("abcdef", "abcxef", 6), 0);
    assert_int_equal(ka_ct_equal("abcdef", "abcdeF", 5), 1);
    assert_int_equal(ka_ct_equal("a", "b", 0), 1);
    {
        uint8_t a[256], b[256];
        for (int i = 0; i < 256; i++)
            a[i] = b[i] = (uint8_t)i;
        assert_int_equal(ka_ct_equal(a, b, 256), 1);
        for (int i = 0; i < 256; i++) {
            b[i] ^= 0x80;
            assert_int_equal(ka_ct_equal(a, b, 256), 0);
            b[i] ^= 0x80;
        }
        /* Every length and alignment around the 8-byte steps, every bit of every byte. */
        for (size_t off = 0; off < 8; off++)
            for (size_t len = 1; len <= 70; len++)
                for (size_t i = 0; i < len; i++)
                    for (int bit = 0; bit < 8; bit++) {
                        b[off + i] ^= (uint8_t)(1u << bit);
                        assert_int_equal(ka_ct_equal(a + off, b + off, len), 0);
                        assert_int_equal(ka_ct_equal(a + off, b + off, i), 1);
                        b[off + i] ^= (uint8_t)(1u << bit);
                        assert_int_equal(ka_ct_equal(a + off, b + off, len), 1);
                    }
    }
}

static void test_random(void **state)
{
    uint8_t a[32], b[32], zero[32];

    (void)state;
    memset(a, 0, sizeof(a));
    memset(b, 0, sizeof(b));
    memset(zero, 0, sizeof(zero));
    assert_int_equal(ka_random(a, sizeof(a)), 1);
    assert_int_equal(ka_random(b, sizeof(b)), 1);
    assert_memory_not_equal(a, zero, 32);
    assert_memory_not_equal(a, b, 32);
}

/* ---- the secret file ---- */

static char tmpdir[64];

static int secret_setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/ka-crypto-XXXXXX");
    return mkdtemp(tmpdir) == NULL ? -1 : 0;
}

static int secret_teardown(void **state)
{
    static const char *const names[] = {"s32", "s31", "s33", "s0", "link", "dir"};
    char p[128];

    (void)state;
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        snprintf(p, sizeof(p), "%s/%s", tmpdir, names[i]);
        if (unlink(p) != 0)
            rmdir(p);
    }
    return rmdir(tmpdir);
}

static void write_file(const char *name, const void *data, size_t n, char *path, size_t plen)
{
    int fd;

    snprintf(path, plen, "%s/%s", tmpdir, name);
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, n), (ssize_t)n);
    close(fd);
}

static void test_secret_read(void **state)
{
    uint8_t data[40], secret[KA_SECRET_LEN];
    char path[128], want[256], err[256];
    const char *m;

    (void)state;
    for (int i = 0; i < 40; i++)
        data[i] = (uint8_t)(0xa0 + i);

    write_file("s32", data, 32, path, sizeof(path));
    memset(secret, 0, sizeof(secret));
    m = ka_secret_read(path, secret, err, sizeof(err));
    assert_null(m);
    assert_memory_equal(secret, data, 32);

    write_file("s31", data, 31, path, sizeof(path));
    m = ka_secret_read(path, secret, err, sizeof(err));
    assert_non_null(m);
    snprintf(want, sizeof(want), "store secret %s must hold exactly 32 bytes", path);
    assert_string_equal(m, want);

    write_file("s33", data, 33, path, sizeof(path));
    m = ka_secret_read(path, secret, err, sizeof(err));
    assert_non_null(m);
    snprintf(want, sizeof(want), "store secret %s must hold exactly 32 bytes", path);
    assert_string_equal(m, want);
    /* Nothing of a refused secret is left behind. */
    {
        uint8_t zero[KA_SECRET_LEN] = {0};
        assert_memory_equal(secret, zero, KA_SECRET_LEN);
    }

    write_file("s0", data, 0, path, sizeof(path));
    m = ka_secret_read(path, secret, err, sizeof(err));
    snprintf(want, sizeof(want), "store secret %s must hold exactly 32 bytes", path);
    assert_string_equal(m, want);

    snprintf(path, sizeof(path), "%s/missing", tmpdir);
    m = ka_secret_read(path, secret, err, sizeof(err));
    snprintf(want, sizeof(want), "cannot open store secret %s: No such file or directory", path);
    assert_string_equal(m, want);

    snprintf(path, sizeof(path), "%s/dir", tmpdir);
    assert_int_equal(mkdir(path, 0700), 0);
    m = ka_secret_read(path, secret, err, sizeof(err));
    snprintf(want, sizeof(want), "store secret %s is not a regular file", path);
    assert_string_equal(m, want);

    /* A symbolic link is not followed. */
    {
        char target[128];
        snprintf(target, sizeof(target), "%s/s32", tmpdir);
        snprintf(path, sizeof(path), "%s/link", tmpdir);
        assert_int_equal(symlink(target, path), 0);
        m = ka_secret_read(path, secret, err, sizeof(err));
        snprintf(want, sizeof(want),
                 "cannot open store secret %s: Too many levels of symbolic links", path);
        assert_string_equal(m, want);
    }
}

int run_crypto_tests(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hmac_vectors),
        cmocka_unit_test(test_hmac_write_key_vector),
        cmocka_unit_test(test_hmac_matches_openssl),
        cmocka_unit_test(test_hmac_key_sensitivity),
        cmocka_unit_test(test_siphash128),
        cmocka_unit_test(test_ct_equal),
        cmocka_unit_test(test_random),
        cmocka_unit_test_setup_teardown(test_secret_read, secret_setup, secret_teardown),
    };
    return cmocka_run_group_tests_name("crypto", tests, NULL, NULL);
}
