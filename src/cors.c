/* Origin matching for CORS. Origins are compared as the browser serializes them. */
#include "cors.h"

#include <string.h>
#include <strings.h>

int ka_origin_valid(const char *s)
{
    const char *sep;
    size_t len = strlen(s);

    if (len == 0 || len > KA_ORIGIN_MAX)
        return 0;
    if (strcmp(s, "null") == 0)
        return 1;
    sep = strstr(s, "://");
    if (sep == NULL || sep == s || sep[3] == '\0')
        return 0;
    for (const char *p = s; *p; p++) {
        unsigned char c = (unsigned char)*p;
        /* No path, query, user info, list separator or white space in an origin. */
        if (c <= 0x20 || c >= 0x7f || c == ',' || c == '@' || c == '?' || c == '#' ||
            (c == '/' && (p < sep + 1 || p > sep + 2)))
            return 0;
    }
    return 1;
}

const char *ka_cors_allow_origin(const char *const *allowed, size_t n, const char *origin)
{
    if (origin == NULL)
        return "*";
    if (!ka_origin_valid(origin))
        return NULL;
    if (allowed == NULL)
        return origin;
    for (size_t i = 0; i < n; i++)
        if (strcasecmp(allowed[i], origin) == 0)
            return origin;
    return NULL;
}
