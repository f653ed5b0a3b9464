/* The benchmark's floor: the least any Bearer authentication module costs Apache.
 *
 *     LoadModule bench_floor_module build/mod_bench_floor.so
 *     <Location /floor/>
 *         AuthType BenchFloor
 *         BenchFloorKey "api_..."
 *         Require valid-user
 *     </Location>
 *
 * Its check_user hook accepts the request when its Authorization header is "Bearer " followed
 * by the configured key (compared in constant time) and answers 401 otherwise: no parsing, no
 * digest, no store. What a request to such a location costs over an unauthenticated one is
 * Apache's own (the <Location> walk and merge, the auth hooks, mod_authz_core's Require): no
 * authentication module can be cheaper, so bench/run.py states every authenticated case also
 * as a ratio to this one. Built by bench/bench.mk (build/mod_bench_floor.so), never installed. */
#include <string.h>

/* clang-format off: httpd.h first */
#include "httpd.h"
#include "http_config.h"
#include "http_core.h"
#include "http_request.h"
#include "apr_strings.h"
#include "mod_auth.h"
/* clang-format on */

module AP_MODULE_DECLARE_DATA bench_floor_module;

typedef struct {
    const char *key; /* "Bearer " + the key */
    apr_size_t len;
} floor_cfg;

static void *create_dir_cfg(apr_pool_t *p, char *dir)
{
    return apr_pcalloc(p, sizeof(floor_cfg));
}

static const char *set_key(cmd_parms *cmd, void *dconf, const char *arg)
{
    floor_cfg *c = dconf;

    c->key = apr_pstrcat(cmd->pool, "Bearer ", arg, NULL);
    c->len = strlen(c->key);
    return NULL;
}

static const command_rec floor_cmds[] = {
    AP_INIT_TAKE1("BenchFloorKey", set_key, NULL, OR_AUTHCFG, "the one key this floor accepts"),
    {NULL}};

/* Constant time over the configured key's length. */
static int ct_equal(const char *a, const char *b, apr_size_t len)
{
    unsigned char acc = 0;

    for (apr_size_t i = 0; i < len; i++)
        acc |= (unsigned char)(a[i] ^ b[i]);
    return acc == 0;
}

static int floor_check_user(request_rec *r)
{
    const floor_cfg *c = ap_get_module_config(r->per_dir_config, &bench_floor_module);
    const char *type = ap_auth_type(r);
    const char *h;

    if (type == NULL || strcasecmp(type, "BenchFloor") != 0)
        return DECLINED;
    r->ap_auth_type = "BenchFloor";
    h = apr_table_get(r->headers_in, "Authorization");
    if (c->key == NULL || h == NULL || strlen(h) != c->len || !ct_equal(h, c->key, c->len))
        return HTTP_UNAUTHORIZED;
    r->user = "floor";
    return OK;
}

static void register_hooks(apr_pool_t *p)
{
    ap_hook_check_authn(floor_check_user, NULL, NULL, APR_HOOK_FIRST, AP_AUTH_INTERNAL_PER_CONF);
}

AP_DECLARE_MODULE(bench_floor) = {
    STANDARD20_MODULE_STUFF, create_dir_cfg, NULL, NULL, NULL, floor_cmds, register_hooks};
