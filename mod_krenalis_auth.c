/* mod_krenalis_auth: Krenalis-style API authentication at the Apache edge.
 *
 * AuthType Krenalis authenticates the Bearer token of a request against an LMDB key store
 * written by krenalis-keys, answers refusals with the Krenalis JSON errors, and hands the
 * identity to the backend (environment, optional request headers). The decisions themselves
 * live in src/decide.c. This file holds the configuration (records, merge rules, directives,
 * effective values), the start-up checks and the hook registration; the hooks live in
 * src/apache/ (see ka_private.h), as mod_ssl's live in ssl_engine_*.c. */
#include "src/apache/ka_private.h"

#include "ap_provider.h"
#include "http_connection.h"
#include "unixd.h"

#include "apr_lib.h"
#include "apr_optional_hooks.h"
#include "mod_status.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "src/cors.h"
#include "src/crypto.h"
#include "src/version.h"

#define DEFAULT_ORGS_ENV KA_ORGS_KEY_ENV

module AP_MODULE_DECLARE_DATA krenalis_auth_module;

ap_filter_rec_t *ka_kept_body_filter_handle;
ap_filter_rec_t *ka_cors_filter_handle;
ap_filter_rec_t *ka_json_error_filter_handle;

/* ---- configuration records ---- */

static void *create_srv_cfg(apr_pool_t *p, server_rec *s)
{
    ka_srv_cfg *c = apr_pcalloc(p, sizeof(ka_srv_cfg));

    c->max_stale = KA_UNSET;
    c->cache_entries = KA_UNSET;
    return c;
}

/* The server-config merge rule. A virtual host without KrenalisAuthKeyStore inherits the main
 * server's store, with its own KrenalisAuthKeyStoreSecret if it names one, else the main
 * server's. One that names a store of its own reads its own KrenalisAuthKeyStoreSecret, or
 * DIR/secret of that store, never the main server's file (a secret belongs to one store).
 * KrenalisAuthOrganizationsKeyEnv is main-server only (GLOBAL_ONLY): one key per installation.
 * KrenalisAuthMaxStaleness: a virtual host's own setting, else the main server's.
 * KrenalisAuthLookupCache is main-server only: one size for every store's table. */
static void *merge_srv_cfg(apr_pool_t *p, void *basev, void *addv)
{
    ka_srv_cfg *base = basev, *add = addv, *c = apr_pcalloc(p, sizeof(*c));

    c->store_dir = add->store_dir ? add->store_dir : base->store_dir;
    c->secret_path = add->store_dir ? add->secret_path
                                    : (add->secret_path ? add->secret_path : base->secret_path);
    c->orgs_env = base->orgs_env;
    c->max_stale = add->max_stale != KA_UNSET ? add->max_stale : base->max_stale;
    c->cache_entries = base->cache_entries;
    return c;
}

static void *create_dir_cfg(apr_pool_t *p, char *dir)
{
    ka_dir_cfg *c = apr_pcalloc(p, sizeof(*c));

    c->endpoint = KA_UNSET;
    c->ws_policy = KA_UNSET;
    c->forward_headers = KA_UNSET;
    c->pass_authorization = KA_UNSET;
    c->max_body = KA_UNSET;
    c->metrics = KA_UNSET;
    return c;
}

/* Per-directory settings: the innermost place that sets one wins; the CORS origins of a place
 * that sets KrenalisAuthCORSAllowOrigin replace the outer list as a whole. Defaults are not
 * applied here but by the ka_cfg_* getters below, so "unset" survives every merge. */
static void *merge_dir_cfg(apr_pool_t *p, void *basev, void *addv)
{
    ka_dir_cfg *base = basev, *add = addv, *c = apr_pcalloc(p, sizeof(*c));

    c->endpoint = add->endpoint != KA_UNSET ? add->endpoint : base->endpoint;
    c->ws_policy = add->ws_policy != KA_UNSET ? add->ws_policy : base->ws_policy;
    c->forward_headers =
        add->forward_headers != KA_UNSET ? add->forward_headers : base->forward_headers;
    c->pass_authorization =
        add->pass_authorization != KA_UNSET ? add->pass_authorization : base->pass_authorization;
    c->max_body = add->max_body != KA_UNSET ? add->max_body : base->max_body;
    c->metrics = add->metrics != KA_UNSET ? add->metrics : base->metrics;
    c->cors_set = add->cors_set || base->cors_set;
    c->cors_origins = add->cors_set ? add->cors_origins : base->cors_origins;
    return c;
}

/* ---- effective values (SPEC §5 defaults; the directory ones are in ka_private.h) ---- */

const char *ka_cfg_orgs_env(server_rec *s)
{
    ka_srv_cfg *c = ap_get_module_config(s->module_config, &krenalis_auth_module);
    return c->orgs_env ? c->orgs_env : DEFAULT_ORGS_ENV;
}

const char *ka_cfg_secret_path(apr_pool_t *p, const ka_srv_cfg *c)
{
    apr_size_t len = strlen(c->store_dir) + sizeof("/secret");

    if (c->secret_path)
        return c->secret_path;
    return ka_store_default_secret(c->store_dir, apr_palloc(p, len), len);
}

/* ---- directives ---- */

static const char *set_key_store(cmd_parms *cmd, void *dummy, const char *arg)
{
    ka_srv_cfg *c = ap_get_module_config(cmd->server->module_config, &krenalis_auth_module);

    c->store_dir = ap_server_root_relative(cmd->pool, arg);
    if (c->store_dir == NULL)
        return apr_pstrcat(cmd->pool, "KrenalisAuthKeyStore: invalid path ", arg, NULL);
    return NULL;
}

static const char *set_key_store_secret(cmd_parms *cmd, void *dummy, const char *arg)
{
    ka_srv_cfg *c = ap_get_module_config(cmd->server->module_config, &krenalis_auth_module);

    c->secret_path = ap_server_root_relative(cmd->pool, arg);
    if (c->secret_path == NULL)
        return apr_pstrcat(cmd->pool, "KrenalisAuthKeyStoreSecret: invalid path ", arg, NULL);
    return NULL;
}

static const char *set_orgs_env(cmd_parms *cmd, void *dummy, const char *arg)
{
    ka_srv_cfg *c = ap_get_module_config(cmd->server->module_config, &krenalis_auth_module);
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);

    if (err)
        return err;
    if (!apr_isalpha(arg[0]) && arg[0] != '_')
        return "KrenalisAuthOrganizationsKeyEnv: not an environment variable name";
    for (const char *p = arg; *p; p++)
        if (!apr_isalnum(*p) && *p != '_')
            return "KrenalisAuthOrganizationsKeyEnv: not an environment variable name";
    c->orgs_env = arg;
    return NULL;
}

/* "off" (0) or a whole number from lo to hi: 1 and *out, or 0. */
static int off_or_number(const char *arg, long lo, long hi, long *out)
{
    char *end;

    if (strcasecmp(arg, "off") == 0) {
        *out = 0;
        return 1;
    }
    errno = 0;
    *out = strtol(arg, &end, 10);
    return !errno && end != arg && !*end && *out >= lo && *out <= hi;
}

static const char *set_max_stale(cmd_parms *cmd, void *dummy, const char *arg)
{
    ka_srv_cfg *c = ap_get_module_config(cmd->server->module_config, &krenalis_auth_module);
    long v;

    if (!off_or_number(arg, 1, 86400 * 365, &v))
        return "KrenalisAuthMaxStaleness: expected off or a number of seconds (1 or more)";
    c->max_stale = (int)v;
    return NULL;
}

static const char *set_lookup_cache(cmd_parms *cmd, void *dummy, const char *arg)
{
    ka_srv_cfg *c = ap_get_module_config(cmd->server->module_config, &krenalis_auth_module);
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    long v;

    if (err)
        return err;
    if (!off_or_number(arg, KA_KC_MIN_ENTRIES, (long)KA_KC_MAX_ENTRIES, &v))
        return apr_psprintf(cmd->pool,
                            "KrenalisAuthLookupCache: expected off or a number of entries from "
                            "%d to %u",
                            KA_KC_MIN_ENTRIES, KA_KC_MAX_ENTRIES);
    c->cache_entries = (int)v;
    return NULL;
}

/* The entries of the look-up cache of each store: the main server's setting. */
unsigned ka_cfg_cache_entries(server_rec *s)
{
    ka_srv_cfg *c = ap_get_module_config(s->module_config, &krenalis_auth_module);
    return c->cache_entries == KA_UNSET ? KA_KC_DEFAULT_ENTRIES : (unsigned)c->cache_entries;
}

static const char *set_endpoint(cmd_parms *cmd, void *dconf, const char *arg)
{
    ka_dir_cfg *c = dconf;
    ka_endpoint ep;

    if (!ka_endpoint_parse(arg, &ep))
        return apr_pstrcat(cmd->pool, "KrenalisAuthEndpoint: '", arg,
                           "' is not one of " KA_ENDPOINT_NAMES, NULL);
    c->endpoint = ep;
    return NULL;
}

static const char *set_workspace(cmd_parms *cmd, void *dconf, const char *arg)
{
    ka_dir_cfg *c = dconf;
    ka_ws_policy policy;

    if (!ka_ws_policy_parse(arg, &policy))
        return apr_pstrcat(cmd->pool, "KrenalisAuthWorkspace: '", arg,
                           "' is not one of " KA_WS_POLICY_NAMES, NULL);
    c->ws_policy = policy;
    return NULL;
}

static const char *set_cors_origin(cmd_parms *cmd, void *dconf, const char *arg)
{
    ka_dir_cfg *c = dconf;

    if (!c->cors_set) {
        c->cors_set = 1;
        c->cors_origins = apr_array_make(cmd->pool, 4, sizeof(const char *));
    }
    if (strcmp(arg, "*") == 0) {
        if (c->cors_origins != NULL && c->cors_origins->nelts > 0)
            return "KrenalisAuthCORSAllowOrigin: '*' cannot be combined with origins";
        c->cors_origins = NULL;
        return NULL;
    }
    if (c->cors_origins == NULL)
        return "KrenalisAuthCORSAllowOrigin: '*' cannot be combined with origins";
    if (!ka_origin_valid(arg))
        return apr_pstrcat(cmd->pool, "KrenalisAuthCORSAllowOrigin: '", arg,
                           "' is not an origin (scheme://host[:port])", NULL);
    *(const char **)apr_array_push(c->cors_origins) = arg;
    return NULL;
}

static const char *set_max_body(cmd_parms *cmd, void *dconf, const char *arg)
{
    ka_dir_cfg *c = dconf;
    char *end;
    apr_int64_t v = apr_strtoi64(arg, &end, 10);

    if (*arg == '\0' || *end != '\0' || v < 1 || v > APR_INT64_C(1073741824))
        return "KrenalisAuthMaxBodySize: expected a number of bytes from 1 to 1073741824";
    c->max_body = (apr_off_t)v;
    return NULL;
}

static const command_rec ka_cmds[] = {
    AP_INIT_TAKE1("KrenalisAuthKeyStore", set_key_store, NULL, RSRC_CONF,
                  "The LMDB key store directory written by krenalis-keys"),
    AP_INIT_TAKE1("KrenalisAuthKeyStoreSecret", set_key_store_secret, NULL, RSRC_CONF,
                  "The store secret file (default: DIR/secret)"),
    AP_INIT_TAKE1("KrenalisAuthOrganizationsKeyEnv", set_orgs_env, NULL, RSRC_CONF,
                  "Environment variable holding the organizations key"),
    AP_INIT_TAKE1("KrenalisAuthMaxStaleness", set_max_stale, NULL, RSRC_CONF,
                  "off, or the seconds after which a mirrored store not confirmed current "
                  "answers 503"),
    AP_INIT_TAKE1("KrenalisAuthLookupCache", set_lookup_cache, NULL, RSRC_CONF,
                  "off, or the entries of each key store's look-up cache, shared by the children "
                  "(default 65536)"),
    AP_INIT_TAKE1("KrenalisAuthEndpoint", set_endpoint, NULL, OR_AUTHCFG,
                  "auto, api, ingestion, settings or organizations"),
    AP_INIT_TAKE1("KrenalisAuthWorkspace", set_workspace, NULL, OR_AUTHCFG,
                  "optional, required or forbidden"),
    AP_INIT_ITERATE("KrenalisAuthCORSAllowOrigin", set_cors_origin, NULL, OR_AUTHCFG,
                    "'*' or the origins allowed on ingestion and settings endpoints"),
    AP_INIT_FLAG("KrenalisAuthForwardHeaders", ap_set_flag_slot,
                 (void *)APR_OFFSETOF(ka_dir_cfg, forward_headers), OR_AUTHCFG,
                 "Also pass the identity as Krenalis-Auth-* request headers"),
    AP_INIT_FLAG("KrenalisAuthPassAuthorization", ap_set_flag_slot,
                 (void *)APR_OFFSETOF(ka_dir_cfg, pass_authorization), OR_AUTHCFG,
                 "Off removes Authorization before the backend sees it"),
    AP_INIT_TAKE1("KrenalisAuthMaxBodySize", set_max_body, NULL, OR_AUTHCFG,
                  "Largest ingestion body the module reads, in bytes"),
    /* Not in .htaccess: what the metrics count is the operator's choice, not a site's. */
    AP_INIT_FLAG("KrenalisAuthMetrics", ap_set_flag_slot, (void *)APR_OFFSETOF(ka_dir_cfg, metrics),
                 RSRC_CONF | ACCESS_CONF,
                 "Off: requests here are left out of the metrics (KRENALIS_REFUSAL is still "
                 "set)"),
    {NULL}};

/* ---- start-up ---- */

/* The lock file created by a root process must stay writable by the children's User. */
static void give_lock_file_to_user(apr_pool_t *p, server_rec *s, const char *dir, int existed)
{
    const char *lock = apr_pstrcat(p, dir, "/lock.mdb", NULL);

    if (!existed && geteuid() == 0 &&
        chown(lock, ap_unixd_config.user_id, ap_unixd_config.group_id) != 0)
        ap_log_error(
            APLOG_MARK, APLOG_WARNING, errno, s,
            KA_LOGNO(00001) "KrenalisAuthKeyStore %s: cannot give lock.mdb to the server's User",
            dir);
}

/* Checks that a store and its secret open; logs a message naming the directive. */
static int check_store(apr_pool_t *p, server_rec *s, const ka_srv_cfg *c)
{
    char err[512];
    uint8_t secret[KA_SECRET_LEN];
    const char *spath = ka_cfg_secret_path(p, c);
    const char *lock = apr_pstrcat(p, c->store_dir, "/lock.mdb", NULL);
    struct stat sb;
    int existed = stat(lock, &sb) == 0;
    ka_store *st;
    int rc;

    if (ka_secret_read(spath, secret, err, sizeof(err)) != NULL) {
        ap_log_error(APLOG_MARK, APLOG_STARTUP | APLOG_EMERG, 0, s, KA_LOGNO(00002) "%s: %s",
                     c->secret_path ? "KrenalisAuthKeyStoreSecret" : "KrenalisAuthKeyStore", err);
        return !OK;
    }
    rc = ka_store_open_secret(c->store_dir, secret, spath, 1, &st, err, sizeof(err));
    OPENSSL_cleanse(secret, sizeof(secret));
    if (rc != KA_OK) {
        ap_log_error(APLOG_MARK, APLOG_STARTUP | APLOG_EMERG, 0, s, KA_LOGNO(00003) "%s: %s",
                     rc == KA_BADSECRET && c->secret_path ? "KrenalisAuthKeyStoreSecret"
                                                          : "KrenalisAuthKeyStore",
                     err);
        return !OK;
    }
    ka_store_close(st);
    give_lock_file_to_user(p, s, c->store_dir, existed);
    return OK;
}

/* Runs for `apachectl -t` too, so a bad store or key fails the configuration test. */
static int ka_check_config(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp, server_rec *s)
{
    apr_hash_t *seen = apr_hash_make(ptemp);

    if (ka_orgs_key_check_config(ptemp, s) != OK)
        return !OK;
    for (server_rec *v = s; v; v = v->next) {
        ka_srv_cfg *c = ap_get_module_config(v->module_config, &krenalis_auth_module);
        const char *key;
        if (c->store_dir == NULL)
            continue;
        key = apr_pstrcat(ptemp, c->store_dir, "\n", ka_cfg_secret_path(ptemp, c), NULL);
        if (apr_hash_get(seen, key, APR_HASH_KEY_STRING))
            continue;
        apr_hash_set(seen, key, APR_HASH_KEY_STRING, "");
        if (check_store(ptemp, v, c) != OK)
            return !OK;
    }
    return OK;
}

/* Reads the secrets and the organizations key as root, once per configuration load. */
static int ka_post_config(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp, server_rec *s)
{
    ka_proc *proc = apr_pcalloc(pconf, sizeof(*proc));
    apr_hash_t *byname = apr_hash_make(ptemp);
    /* The first of the two passes of a start serves no request: no look-up cache for it. */
    int first_pass = ap_state_query(AP_SQ_MAIN_STATE) == AP_SQ_MS_CREATE_PRE_CONFIG;

    proc->orgs_key = ka_orgs_key_load(pconf, ptemp, s);
    proc->metrics = ka_metrics_attach(pconf, s);
    ka_handles_init(pconf, proc);
    for (server_rec *v = s; v; v = v->next) {
        ka_srv_cfg *c = ap_get_module_config(v->module_config, &krenalis_auth_module);
        c->proc = proc;
        if (c->store_dir == NULL)
            continue;
        c->handle = ka_handle_for(pconf, byname, proc, c->store_dir, ka_cfg_secret_path(pconf, c),
                                  first_pass ? 0 : ka_cfg_cache_entries(s), s);
        if (c->handle == NULL) {
            ap_log_error(APLOG_MARK, APLOG_EMERG, 0, v,
                         KA_LOGNO(00004) "KrenalisAuthKeyStoreSecret: cannot read the secret of %s",
                         c->store_dir);
            return !OK;
        }
    }
    if (proc->orgs_key == NULL)
        ap_log_error(APLOG_MARK, APLOG_INFO, 0, s,
                     KA_LOGNO(00005) "%s is not set: the Organizations API stays closed",
                     ka_cfg_orgs_env(s));
    /* Once per configuration load: not on the first of the two passes of a start. */
    if (!first_pass)
        ap_log_error(APLOG_MARK, APLOG_INFO, 0, s,
                     KA_LOGNO(00019) "mod_krenalis_auth/" KA_VERSION " configured");
    return OK;
}

static void ka_child_init(apr_pool_t *pchild, server_rec *s)
{
    ka_srv_cfg *c = ap_get_module_config(s->module_config, &krenalis_auth_module);

    if (c->proc != NULL) {
        ka_metrics_child_init(c->proc->metrics); /* first: a failed first open is counted */
        ka_handles_child_init(pchild, s, c->proc);
    }
}

/* ---- hooks ---- */

static void register_hooks(apr_pool_t *p)
{
    ap_hook_check_config(ka_check_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_post_config(ka_post_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_child_init(ka_child_init, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_pre_connection(ka_pre_connection, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_post_read_request(ka_strip_identity_headers, NULL, NULL, APR_HOOK_REALLY_FIRST);
    /* First: each check_user hook declines the AuthTypes not its own, so the order changes
     * nothing but cost, and ours answering first spares Krenalis locations the others' calls. */
    ap_hook_check_authn(ka_check_user, NULL, NULL, APR_HOOK_FIRST, AP_AUTH_INTERNAL_PER_CONF);
    ap_hook_fixups(ka_mark_authorized, NULL, NULL, APR_HOOK_REALLY_FIRST);
    ap_hook_fixups(ka_fixups, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_insert_filter(ka_insert_filter, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_insert_error_filter(ka_insert_error_filter, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_note_auth_failure(ka_note_auth_failure, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_handler(ka_metrics_handler, NULL, NULL, APR_HOOK_MIDDLE);
    /* Before mod_log_config: KRENALIS_REFUSAL is set on the request it logs. */
    ap_hook_log_transaction(ka_metrics_log_transaction, NULL, NULL, APR_HOOK_REALLY_FIRST);
    APR_OPTIONAL_HOOK(ap, status_hook, ka_metrics_status_hook, NULL, NULL, APR_HOOK_MIDDLE);
    ka_kept_body_filter_handle = ap_register_input_filter(KEPT_BODY_FILTER, ka_kept_body_filter,
                                                          NULL, AP_FTYPE_PROTOCOL - 1);
    ka_cors_filter_handle =
        ap_register_output_filter(CORS_FILTER, ka_cors_filter, NULL, AP_FTYPE_PROTOCOL - 1);
    ka_json_error_filter_handle = ap_register_output_filter(JSON_ERROR_FILTER, ka_json_error_filter,
                                                            NULL, AP_FTYPE_PROTOCOL - 1);
    ap_register_auth_provider(p, AUTHZ_PROVIDER_GROUP, "krenalis-key-type", AUTHZ_PROVIDER_VERSION,
                              &ka_authz_key_type, AP_AUTH_INTERNAL_PER_CONF);
    ap_register_auth_provider(p, AUTHZ_PROVIDER_GROUP, "krenalis-workspace", AUTHZ_PROVIDER_VERSION,
                              &ka_authz_workspace, AP_AUTH_INTERNAL_PER_CONF);
    ap_register_auth_provider(p, AUTHZ_PROVIDER_GROUP, "krenalis-organization",
                              AUTHZ_PROVIDER_VERSION, &ka_authz_organization,
                              AP_AUTH_INTERNAL_PER_CONF);
}

/* Not AP_DECLARE_MODULE: ka_private.h declares the log module (APLOG_USE_MODULE) for every file. */
module AP_MODULE_DECLARE_DATA krenalis_auth_module = {
    STANDARD20_MODULE_STUFF,
    create_dir_cfg, /* per-directory config */
    merge_dir_cfg,  /* merge per-directory */
    create_srv_cfg, /* per-server config */
    merge_srv_cfg,  /* merge per-server */
    ka_cmds,        /* directives */
    register_hooks  /* hooks */
};
