/* libFuzzer target: CORS origin matching (cors.c, SPEC §9).
 *
 * The input is newline-separated: the last line is the request's Origin header, the lines
 * before it the KrenalisAuthCORSAllowOrigin list (none: "*"). An input without a newline is an
 * Origin with "*". Properties:
 *   - ka_origin_valid agrees with an independent model of "scheme://host[:port]" or "null";
 *   - ka_cors_allow_origin returns "*" for no Origin, else either NULL or the request's own
 *     Origin pointer (never another string), and only for a valid origin: nothing returned
 *     can carry CR, LF, a control character or a comma into a response header;
 *   - with "*" every valid origin is reflected; with a list, an origin is reflected exactly
 *     when it equals an entry ignoring ASCII case. */
#include "cors.h"
#include "fuzz_common.h"

static int model_valid(const char *s)
{
    size_t n = strlen(s), slashes = 0;
    const char *sep;

    if (n == 0 || n > KA_ORIGIN_MAX)
        return 0;
    if (strcmp(s, "null") == 0)
        return 1;
    sep = strstr(s, "://");
    if (sep == NULL || sep == s || sep[3] == '\0')
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= ' ' || c >= 0x7f || c == ',' || c == '@' || c == '?' || c == '#')
            return 0;
        if (c == '/')
            slashes++;
    }
    /* The only slashes are the two of the first "://". */
    return slashes == 2;
}

static int ieq(const char *a, const char *b)
{
    for (;; a++, b++) {
        char x = (*a >= 'A' && *a <= 'Z') ? (char)(*a + 32) : *a;
        char y = (*b >= 'A' && *b <= 'Z') ? (char)(*b + 32) : *b;
        if (x != y)
            return 0;
        if (x == '\0')
            return 1;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = fuzz_cstr(data, size);
    char *lines[64], *origin, *p;
    const char *res;
    size_t n = 0;
    int valid;

    /* Split on '\n' (in place): each piece its own string. */
    p = s;
    for (;;) {
        char *nl = strchr(p, '\n');
        if (nl == NULL || n == 63)
            break;
        *nl = '\0';
        lines[n++] = p;
        p = nl + 1;
    }
    origin = strdup(p); /* exact-size copy */
    CHECK(origin != NULL);
    for (size_t i = 0; i < n; i++) {
        lines[i] = strdup(lines[i]);
        CHECK(lines[i] != NULL);
        CHECK(ka_origin_valid(lines[i]) == model_valid(lines[i]));
    }

    valid = ka_origin_valid(origin);
    CHECK(valid == model_valid(origin));

    CHECK(strcmp(ka_cors_allow_origin(NULL, 0, NULL), "*") == 0);
    CHECK(strcmp(ka_cors_allow_origin((const char *const *)lines, n, NULL), "*") == 0);

    res = ka_cors_allow_origin(NULL, 0, origin); /* "*" */
    CHECK(res == (valid ? origin : NULL));

    res = ka_cors_allow_origin((const char *const *)lines, n, origin);
    if (n == 0) {
        CHECK(res == NULL); /* an empty list allows nothing */
    } else {
        int want = 0;
        for (size_t i = 0; i < n; i++)
            want |= ieq(lines[i], origin);
        CHECK(res == NULL || res == origin);
        CHECK((res != NULL) == (valid && want));
    }
    if (res != NULL)
        for (const char *q = res; *q; q++)
            CHECK((unsigned char)*q > ' ' && (unsigned char)*q < 0x7f && *q != ',');

    for (size_t i = 0; i < n; i++)
        free(lines[i]);
    free(origin);
    free(s);
    return 0;
}
