/* Test helper: seals a 32-byte pepper the way Krenalis keeps it in
 * metadata.kms_encrypted_api_key_pepper (AES-256-GCM, no AAD: nonce ‖ ciphertext ‖ tag).
 *   kms_seal KEY_HEX PEPPER_HEX   ->  the 60 bytes in hex on stdout */
#include <stdio.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

static int unhex(const char *s, unsigned char *out, size_t n)
{
    if (strlen(s) != 2 * n)
        return -1;
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        if (sscanf(s + 2 * i, "%2x", &v) != 1)
            return -1;
        out[i] = (unsigned char)v;
    }
    return 0;
}

int main(int argc, char **argv)
{
    unsigned char key[32], pepper[32], out[60];
    int n = 0, fin = 0;
    EVP_CIPHER_CTX *ctx;

    if (argc != 3 || unhex(argv[1], key, 32) || unhex(argv[2], pepper, 32)) {
        fprintf(stderr, "usage: kms_seal KEY_HEX PEPPER_HEX\n");
        return 2;
    }
    ctx = EVP_CIPHER_CTX_new();
    if (RAND_bytes(out, 12) != 1 || !ctx ||
        EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, 12, NULL) != 1 ||
        EVP_EncryptInit_ex(ctx, NULL, NULL, key, out) != 1 ||
        EVP_EncryptUpdate(ctx, out + 12, &n, pepper, 32) != 1 || n != 32 ||
        EVP_EncryptFinal_ex(ctx, out + 44, &fin) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, 16, out + 44) != 1)
        return 1;
    EVP_CIPHER_CTX_free(ctx);
    for (int i = 0; i < 60; i++)
        printf("%02x", out[i]);
    printf("\n");
    return 0;
}
