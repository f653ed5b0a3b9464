/* The words of the configuration and of krenalis-keys (names.h). */
#include "names.h"

#include <string.h>
#include <strings.h>

static const char *const KEY_TYPES[] = {[KA_KEY_NONE] = "",
                                        [KA_KEY_API] = "api",
                                        [KA_KEY_WRITE] = "event-write",
                                        [KA_KEY_ORGS] = "organizations"};

static const char *const ENDPOINTS[] = {[KA_EP_AUTO] = "auto",
                                        [KA_EP_API] = "api",
                                        [KA_EP_INGESTION] = "ingestion",
                                        [KA_EP_SETTINGS] = "settings",
                                        [KA_EP_ORGS] = "organizations"};

static const char *const WS_POLICIES[] = {
    [KA_WS_OPTIONAL] = "optional", [KA_WS_REQUIRED] = "required", [KA_WS_FORBIDDEN] = "forbidden"};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

const char *ka_key_type_name(ka_key_type t)
{
    return (unsigned)t < COUNT(KEY_TYPES) ? KEY_TYPES[t] : "";
}

int ka_key_type_parse(const char *s, ka_key_type *out)
{
    for (size_t i = KA_KEY_API; i < COUNT(KEY_TYPES); i++)
        if (strcmp(s, KEY_TYPES[i]) == 0) {
            *out = (ka_key_type)i;
            return 1;
        }
    return 0;
}

/* The index of s in names (case-insensitive), or -1. */
static int find_name(const char *const *names, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++)
        if (strcasecmp(s, names[i]) == 0)
            return (int)i;
    return -1;
}

int ka_endpoint_parse(const char *s, ka_endpoint *out)
{
    int i = find_name(ENDPOINTS, COUNT(ENDPOINTS), s);

    if (i < 0)
        return 0;
    *out = (ka_endpoint)i;
    return 1;
}

int ka_ws_policy_parse(const char *s, ka_ws_policy *out)
{
    int i = find_name(WS_POLICIES, COUNT(WS_POLICIES), s);

    if (i < 0)
        return 0;
    *out = (ka_ws_policy)i;
    return 1;
}
