/* Digests of credentials, constant-time comparison and random bytes (SPEC §3). */
#ifndef KA_CRYPTO_H
#define KA_CRYPTO_H

#include <openssl/sha.h>

#include "ka.h"

/* HMAC-SHA-256 keyed with the store secret, with the inner and outer pad states computed once
 * so that a digest on the request path is two struct copies and two short hashes. */
typedef struct {
    SHA256_CTX inner;
    SHA256_CTX outer;
} ka_hmac_key;

void ka_hmac_init(ka_hmac_key *k, const uint8_t secret[KA_SECRET_LEN]);
void ka_hmac(const ka_hmac_key *k, const void *msg, size_t len, uint8_t out[KA_DIGEST_LEN]);

/* SipHash-2-4 with its 128-bit output (Aumasson and Bernstein, 2012): a keyed pseudorandom
 * function, here the tag of a remembered decision's inputs (decide.c). out is two little-endian
 * words, as the reference writes them. Allocates nothing. */
#define KA_SIPHASH_KEY_LEN 16
#define KA_SIPHASH_OUT_LEN 16
void ka_siphash128(const uint8_t key[KA_SIPHASH_KEY_LEN], const void *msg, size_t len,
                   uint8_t out[KA_SIPHASH_OUT_LEN]);
/* Zeroes len bytes the compiler may not skip (explicit_bzero). */
void ka_cleanse(void *p, size_t len);

/* 1 when equal; time depends only on len. */
int ka_ct_equal(const void *a, const void *b, size_t len);

/* CSPRNG; 0 on failure. */
int ka_random(void *buf, size_t len);

/* Memory for secrets and what is derived from them: pages of their own, left out of core
 * dumps (MADV_DONTDUMP). Zeroed; NULL on failure. ka_secure_free cleanses before unmapping. */
void *ka_secure_alloc(size_t len);
void ka_secure_free(void *p, size_t len);

/* Reads a secret file: exactly 32 bytes. Returns NULL or an error message (static or in errbuf). */
const char *ka_secret_read(const char *path, uint8_t secret[KA_SECRET_LEN], char *errbuf,
                           size_t errlen);

#endif
