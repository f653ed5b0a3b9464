/* krenalis-keys: checks of argument values (cli.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "json.h"
#include "token.h"

#define MAX_BULK 100000000UL /* largest --count */

int check_id(const char *what, const char *id)
{
    size_t len = strlen(id);

    if (ka_id_valid(id, len))
        return EXIT_OK;
    /* Longer than any ID typo: maybe a credential pasted in its place, not to be printed. */
    if (len > 2 * KA_ID_LEN)
        return fail("invalid %s ID (%zu characters): an ID is 12 characters of the base58 "
                    "alphabet",
                    what, len);
    return fail("invalid %s ID '%s': an ID is 12 characters of the base58 alphabet", what, id);
}

int take_name(const char *name, char out[KA_NAME_MAX + 1])
{
    const unsigned char *s = (const unsigned char *)(name ? name : "");
    size_t len = strlen((const char *)s);

    if (len > KA_NAME_MAX)
        return fail("name is longer than %d bytes", KA_NAME_MAX);
    for (size_t i = 0, n; i < len; i += n) {
        unsigned cp;
        if (s[i] < 0x20 || s[i] == 0x7f)
            return fail("name contains a control character");
        /* The one decoder (json.c): an invalid sequence is one byte read as U+FFFD. */
        n = ka_utf8_decode(s + i, len - i, &cp);
        if (cp == 0xfffd && n == 1)
            return fail("name is not valid UTF-8");
        if (cp >= 0x80 && cp <= 0x9f) /* C1 controls: U+009B is a terminal's CSI */
            return fail("name contains a control character");
    }
    memcpy(out, s, len + 1);
    return EXIT_OK;
}

int take_count(const char *s, size_t *out)
{
    char *end;
    unsigned long v;

    errno = 0;
    v = strtoul(s, &end, 10);
    if (s[0] < '0' || s[0] > '9' || *end != '\0' || errno != 0 || v < 1 || v > MAX_BULK)
        return fail("invalid --count '%s': expected a number from 1 to %lu", s, MAX_BULK);
    *out = (size_t)v;
    return EXIT_OK;
}
