/* krenalis-keys: random characters for IDs and keys (cli.h). */
#include <string.h>

#include <openssl/crypto.h>

#include "cli.h"
#include "crypto.h"
#include "token.h"

void rng_init(rng *r)
{
    r->pos = r->len = 0;
}

void rng_wipe(rng *r)
{
    OPENSSL_cleanse(r, sizeof(*r));
}

/* n <= sizeof(r->buf) bytes, contiguous in the buffer. */
static const uint8_t *rng_take(rng *r, size_t n)
{
    const uint8_t *p;

    if (r->len - r->pos < n) {
        if (!ka_random(r->buf, sizeof(r->buf)))
            return NULL;
        r->pos = 0;
        r->len = sizeof(r->buf);
    }
    p = r->buf + r->pos;
    r->pos += n;
    return p;
}

int rng_bytes(rng *r, uint8_t *out, size_t n)
{
    const uint8_t *p = rng_take(r, n);

    if (p == NULL)
        return 0;
    memcpy(out, p, n);
    return 1;
}

/* n characters of alphabet, without modulo bias (ka_pick_chars rejects the biased bytes). */
int rng_chars(rng *r, const char *alphabet, char *out, size_t n)
{
    size_t filled = 0;

    while (filled < n) {
        size_t want = n - filled;
        const uint8_t *p = rng_take(r, want);
        if (p == NULL)
            return 0;
        filled += ka_pick_chars(alphabet, p, want, out + filled, want);
    }
    return 1;
}

int random_failed(char *err, size_t errlen)
{
    snprintf(err, errlen, "cannot get random bytes from the system");
    return STEP_ERR;
}
