/* Wire formats of credentials and IDs (SPEC §2): parsing, validation, generation. Pure code. */
#ifndef KA_TOKEN_H
#define KA_TOKEN_H

#include "ka.h"

/* Bearer parsing: on success *tok and *toklen point into value (at most KA_MAX_TOKEN_LEN bytes
 * of the token). Returns 1 if valid, 0 if not. */
int ka_bearer_parse(const char *value, const char **tok, size_t *toklen);

/* API key body (49 chars after "api_"): 1 and the 32-byte payload if well formed, else 0. */
int ka_api_body_parse(const char *body, size_t len, uint8_t payload[KA_PAYLOAD_LEN]);

/* Writes the 49-character body (no NUL) for a payload. */
void ka_api_body_encode(const uint8_t payload[KA_PAYLOAD_LEN], char out[KA_API_BODY_LEN]);

/* 1 if s is exactly 32 characters of [A-Za-z0-9]. */
int ka_write_key_valid(const char *s, size_t len);

/* 1 if s is exactly 12 characters of the base58 alphabet. */
int ka_id_valid(const char *s, size_t len);

/* Organizations key validation at start-up: NULL when valid, else the message of SPEC §6.4
 * written into buf (var replaces KRENALIS_ORGANIZATIONS_API_KEY). */
const char *ka_org_key_check(const char *var, const char *value, char *buf, size_t bufsize);

/* Hint shown in listings: first 4 + "..." + last 6 characters. */
void ka_hint(const char *s, size_t len, char out[KA_HINT_MAX + 1]);

extern const char ka_base58[];  /* ID alphabet, 58 characters */
extern const char ka_alnum62[]; /* API key digit order, 62 characters */

/* Fills out[0..n) with characters of alphabet drawn from rnd by rejection sampling (no modulo
 * bias). Returns how many characters it could fill; the caller adds random bytes if < n. */
size_t ka_pick_chars(const char *alphabet, const uint8_t *rnd, size_t rndlen, char *out, size_t n);

#endif
