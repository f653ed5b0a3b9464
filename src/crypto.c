/* The low-level SHA-256 API lets the HMAC pad states be computed once and copied per digest
 * with no allocation (EVP would allocate on every copy); OpenSSL 3 still ships it. */
#define OPENSSL_API_COMPAT 0x10101000L

#include "crypto.h"

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
    OPENSSL_cleanse(&c, sizeof(c));
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
