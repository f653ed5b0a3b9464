/* The API-key pepper of a Krenalis database (SPEC §11): decrypted from
 * metadata.kms_encrypted_api_key_pepper with the Krenalis master key (--kms key:BASE64 or
 * KRENALIS_KMS), and the standard base64 of Krenalis's []byte values. */
#ifndef KA_KMS_H
#define KA_KMS_H

#include <stddef.h>
#include <stdint.h>

#define KA_KMS_KEY_LEN 32
#define KA_KMS_NONCE_LEN 12
#define KA_KMS_TAG_LEN 16
#define KA_KMS_BLOB_LEN (KA_KMS_NONCE_LEN + 32 + KA_KMS_TAG_LEN) /* 60 */

/* Decodes standard base64 (RFC 4648 §4), padded or not, into at most cap bytes. Returns the
 * length, or -1 when the text is not base64 or does not fit. */
long ka_base64_decode(const char *in, size_t len, uint8_t *out, size_t cap);

/* Parses "key:BASE64" into the 32-byte master key. 0, or -1 with a message in err (which
 * never repeats the key). */
int ka_kms_parse(const char *spec, uint8_t key[KA_KMS_KEY_LEN], char *err, size_t errlen);

/* AES-256-GCM, no AAD: blob = nonce ‖ ciphertext of the 32-byte pepper ‖ tag. 0, or -1 with a
 * message in err. */
int ka_kms_decrypt_pepper(const uint8_t key[KA_KMS_KEY_LEN], const uint8_t *blob, size_t len,
                          uint8_t pepper[32], char *err, size_t errlen);

#endif
