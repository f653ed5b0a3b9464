/* The pepper of a Krenalis database: see kms.h. */
#include "kms.h"

#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

static int b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

long ka_base64_decode(const char *in, size_t len, uint8_t *out, size_t cap)
{
    uint32_t acc = 0;
    size_t n = 0, bits = 0, pad = 0;

    /* Padding only at the end, and only as much as makes a whole group. */
    while (pad < 2 && len > 0 && in[len - 1] == '=') {
        len--;
        pad++;
    }
    if (pad > 0 && (len + pad) % 4 != 0)
        return -1;
    if (len % 4 == 1)
        return -1;
    for (size_t i = 0; i < len; i++) {
        int v = b64_value((unsigned char)in[i]);
        if (v < 0)
            return -1;
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (n == cap)
                return -1;
            out[n++] = (uint8_t)(acc >> bits);
        }
    }
    /* The bits left over must be zero (a canonical encoding). */
    if ((acc & ((1u << bits) - 1)) != 0)
        return -1;
    return (long)n;
}

int ka_kms_parse(const char *spec, uint8_t key[KA_KMS_KEY_LEN], char *err, size_t errlen)
{
    uint8_t buf[KA_KMS_KEY_LEN + 3];
    long n;

    if (strncmp(spec, "key:", 4) != 0) {
        snprintf(err, errlen, "the KMS setting must be 'key:BASE64' (a 32-byte key in base64)");
        return -1;
    }
    n = ka_base64_decode(spec + 4, strlen(spec + 4), buf, sizeof(buf));
    if (n != KA_KMS_KEY_LEN) {
        OPENSSL_cleanse(buf, sizeof(buf));
        snprintf(err, errlen,
                 "the KMS key is not 32 bytes of standard base64 (44 characters padded, 43 not)");
        return -1;
    }
    memcpy(key, buf, KA_KMS_KEY_LEN);
    OPENSSL_cleanse(buf, sizeof(buf));
    return 0;
}

int ka_kms_decrypt_pepper(const uint8_t key[KA_KMS_KEY_LEN], const uint8_t *blob, size_t len,
                          uint8_t pepper[32], char *err, size_t errlen)
{
    EVP_CIPHER_CTX *ctx;
    uint8_t out[32 + 16];
    int n = 0, fin = 0, ok;

    if (len != KA_KMS_BLOB_LEN) {
        snprintf(err, errlen,
                 "metadata.kms_encrypted_api_key_pepper holds %zu bytes, not %d (nonce, "
                 "encrypted pepper, tag)",
                 len, KA_KMS_BLOB_LEN);
        return -1;
    }
    ctx = EVP_CIPHER_CTX_new();
    ok = ctx != NULL && EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) == 1 &&
         EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, KA_KMS_NONCE_LEN, NULL) == 1 &&
         EVP_DecryptInit_ex(ctx, NULL, NULL, key, blob) == 1 &&
         EVP_DecryptUpdate(ctx, out, &n, blob + KA_KMS_NONCE_LEN, 32) == 1 && n == 32 &&
         EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, KA_KMS_TAG_LEN,
                             (void *)(blob + KA_KMS_NONCE_LEN + 32)) == 1 &&
         EVP_DecryptFinal_ex(ctx, out + n, &fin) == 1 && fin == 0;
    EVP_CIPHER_CTX_free(ctx);
    if (ok)
        memcpy(pepper, out, 32);
    OPENSSL_cleanse(out, sizeof(out));
    if (!ok)
        snprintf(err, errlen,
                 "the API-key pepper does not decrypt with the KMS key given (is it this "
                 "database's KRENALIS_KMS?)");
    return ok ? 0 : -1;
}
