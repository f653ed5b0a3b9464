/* libFuzzer target: ka_bearer_parse (SPEC §2 "Bearer parsing") on an Authorization value.
 *
 * The input is the header value; an embedded NUL ends it, as in httpd's header table.
 * Properties: the result equals an independent model of the SPEC rule; an accepted token is the
 * non-empty rest of the value cut to KA_MAX_TOKEN_LEN bytes, starts with no blank; nothing is
 * read past the terminator (ASan). */
#include "fuzz_common.h"
#include "token.h"

static char lower(char c)
{
    return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

/* The SPEC rule, written independently: "bearer" in any case, at least one space or tab,
 * further blanks skipped, the non-empty rest is the token (cut to KA_MAX_TOKEN_LEN). */
static int model(const char *v, size_t *start, size_t *len)
{
    static const char scheme[] = "bearer";
    size_t n = strlen(v), i;

    if (n < 7)
        return 0;
    for (i = 0; i < 6; i++)
        if (lower(v[i]) != scheme[i])
            return 0;
    if (!fuzz_is_blank(v[6]))
        return 0;
    for (i = 7; i < n && fuzz_is_blank(v[i]); i++)
        ;
    if (i == n)
        return 0;
    *start = i;
    *len = n - i > KA_MAX_TOKEN_LEN ? KA_MAX_TOKEN_LEN : n - i;
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *v = fuzz_cstr(data, size);
    size_t n = strlen(v), start = 0, want_len = 0, toklen = 12345;
    const char *tok = NULL;
    int got, want;

    got = ka_bearer_parse(v, &tok, &toklen);
    want = model(v, &start, &want_len);
    CHECK(got == 0 || got == 1);
    CHECK(got == want);
    if (got) {
        CHECK(tok >= v && tok < v + n); /* points into the value */
        CHECK(toklen > 0 && toklen <= KA_MAX_TOKEN_LEN);
        CHECK(toklen == want_len); /* the rest of the input, cut */
        CHECK(tok == v + start);
        CHECK(!fuzz_is_blank(tok[0]));
        CHECK(memchr(tok, '\0', toklen) == NULL);
        /* Parsing is idempotent over the canonical form "Bearer <token>". */
        {
            char *canon = malloc(toklen + 8);
            const char *t2;
            size_t l2;
            CHECK(canon != NULL);
            memcpy(canon, "Bearer ", 7);
            memcpy(canon + 7, tok, toklen);
            canon[7 + toklen] = '\0';
            CHECK(ka_bearer_parse(canon, &t2, &l2) == 1);
            CHECK(l2 == toklen && memcmp(t2, tok, toklen) == 0);
            free(canon);
        }
    }
    CHECK(ka_bearer_parse(NULL, &tok, &toklen) == 0);
    free(v);
    return 0;
}
