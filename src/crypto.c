/* The low-level SHA-256 API lets the HMAC pad states be computed once and copied per digest
 * with no allocation (EVP would allocate on every copy); OpenSSL 3 still ships it. */
#define OPENSSL_API_COMPAT 0x10101000L

#include "crypto.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

void ka_hmac_init(ka_hmac_key *k, const uint8_t secret[KA_SECRET_LEN])
{
    uint8_t pad[SHA256_CBLOCK];

    memset(pad, 0x36, sizeof(pad));
    for (size_t i = 0; i < KA_SECRET_LEN; i++)
        pad[i] ^= secret[i];
    SHA256_Init(&k->inner);
    SHA256_Update(&k->inner, pad, sizeof(pad));
    memset(pad, 0x5c, sizeof(pad));
    for (size_t i = 0; i < KA_SECRET_LEN; i++)
        pad[i] ^= secret[i];
    SHA256_Init(&k->outer);
    SHA256_Update(&k->outer, pad, sizeof(pad));
    OPENSSL_cleanse(pad, sizeof(pad));
}

void ka_hmac(const ka_hmac_key *k, const void *msg, size_t len, uint8_t out[KA_DIGEST_LEN])
{
    SHA256_CTX c = k->inner;
    uint8_t ih[SHA256_DIGEST_LENGTH];

    SHA256_Update(&c, msg, len);
    SHA256_Final(ih, &c);
    c = k->outer;
    SHA256_Update(&c, ih, sizeof(ih));
    SHA256_Final(out, &c);
    ka_cleanse(&c, sizeof(c));
}

/* Little-endian loads and stores, whatever the host's order (one move on x86 and arm64). */
static uint64_t le64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return le64toh(v);
}

static void put_le64(uint8_t *p, uint64_t v)
{
    v = htole64(v);
    memcpy(p, &v, 8);
}

#define ROTL(x, b) (((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                                                   \
    do {                                                                                           \
        v0 += v1;                                                                                  \
        v1 = ROTL(v1, 13) ^ v0;                                                                    \
        v0 = ROTL(v0, 32);                                                                         \
        v2 += v3;                                                                                  \
        v3 = ROTL(v3, 16) ^ v2;                                                                    \
        v0 += v3;                                                                                  \
        v3 = ROTL(v3, 21) ^ v0;                                                                    \
        v2 += v1;                                                                                  \
        v1 = ROTL(v1, 17) ^ v2;                                                                    \
        v2 = ROTL(v2, 32);                                                                         \
    } while (0)

void ka_siphash128(const uint8_t key[KA_SIPHASH_KEY_LEN], const void *msg, size_t len,
                   uint8_t out[KA_SIPHASH_OUT_LEN])
{
    const uint8_t *m = msg;
    uint64_t k0 = le64(key), k1 = le64(key + 8);
    uint64_t v0 = k0 ^ 0x736f6d6570736575ULL, v1 = k1 ^ 0x646f72616e646f6dULL ^ 0xee;
    uint64_t v2 = k0 ^ 0x6c7967656e657261ULL, v3 = k1 ^ 0x7465646279746573ULL;
    uint64_t b = (uint64_t)len << 56, w;
    size_t i = 0;

    for (; i + 8 <= len; i += 8) {
        w = le64(m + i);
        v3 ^= w;
        SIPROUND;
        SIPROUND;
        v0 ^= w;
    }
    if (i < len) {
        uint8_t last[8] = {0};
        memcpy(last, m + i, len - i);
        b |= le64(last);
    }
    v3 ^= b;
    SIPROUND;
    SIPROUND;
    v0 ^= b;
    v2 ^= 0xee;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    put_le64(out, v0 ^ v1 ^ v2 ^ v3);
    v1 ^= 0xdd;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    put_le64(out + 8, v0 ^ v1 ^ v2 ^ v3);
}

/* glibc's explicit_bzero is memset behind a barrier: a few instructions for the stack copies
 * of a request path, where OPENSSL_cleanse stores byte by byte. */
void ka_cleanse(void *p, size_t len)
{
    explicit_bzero(p, len);
}

/* Eight bytes a step (CRYPTO_memcmp goes byte by byte: 7 instructions a byte). The empty asm
 * hides acc from the optimizer, which could otherwise stop at the first difference. */
int ka_ct_equal(const void *a, const void *b, size_t len)
{
    const unsigned char *x = a, *y = b;
    uint64_t acc = 0, u, v;
    size_t i = 0;

    for (; i + 8 <= len; i += 8) {
        memcpy(&u, x + i, 8);
        memcpy(&v, y + i, 8);
        acc |= u ^ v;
        __asm__("" : "+r"(acc));
    }
    for (; i < len; i++) {
        acc |= (uint64_t)(x[i] ^ y[i]);
        __asm__("" : "+r"(acc));
    }
    return acc == 0;
}

int ka_random(void *buf, size_t len)
{
    return RAND_bytes(buf, (int)len) == 1;
}

void *ka_secure_alloc(size_t len)
{
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

    if (p == MAP_FAILED)
        return NULL;
    /* Best effort: a kernel without MADV_DONTDUMP still gets working memory. */
    (void)madvise(p, len, MADV_DONTDUMP);
    return p;
}

void ka_secure_free(void *p, size_t len)
{
    if (p == NULL)
        return;
    OPENSSL_cleanse(p, len);
    munmap(p, len);
}

const char *ka_secret_read(const char *path, uint8_t secret[KA_SECRET_LEN], char *errbuf,
                           size_t errlen)
{
    struct stat st;
    ssize_t n;
    uint8_t extra;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);

    if (fd < 0) {
        snprintf(errbuf, errlen, "cannot open store secret %s: %s", path, strerror(errno));
        return errbuf;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        snprintf(errbuf, errlen, "store secret %s is not a regular file", path);
        return errbuf;
    }
    n = read(fd, secret, KA_SECRET_LEN);
    if (n == KA_SECRET_LEN && read(fd, &extra, 1) == 0) {
        close(fd);
        return NULL;
    }
    close(fd);
    OPENSSL_cleanse(secret, KA_SECRET_LEN);
    snprintf(errbuf, errlen, "store secret %s must hold exactly %d bytes", path, KA_SECRET_LEN);
    return errbuf;
}
