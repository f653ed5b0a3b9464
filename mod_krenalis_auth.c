/* mod_krenalis_auth: Krenalis-style API authentication at the Apache edge.
 *
 * AuthType Krenalis authenticates the Bearer token of a request against an LMDB key store
 * written by krenalis-keys, answers refusals with the Krenalis JSON errors, and hands the
 * identity to the backend (environment, optional request headers). The decisions themselves
 * live in src/decide.c; this file is the glue: directives, hooks, filters, providers. */
#include "httpd.h"
#include "http_config.h"
#include "http_connection.h"
#include "http_core.h"
#include "http_log.h"
#include "http_protocol.h"
#include "http_request.h"
#include "ap_provider.h"
#include "mod_auth.h"
#include "unixd.h"
#include "util_filter.h"

#include "apr_hash.h"
#include "apr_lib.h"
#include "apr_strings.h"
#include "apr_thread_mutex.h"
#include "apr_thread_rwlock.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "src/body.h"
#include "src/cors.h"
#include "src/decide.h"
#include "src/json.h"
#include "src/keystore.h"
#include "src/mapguard.h"
#include "src/token.h"
#include "src/version.h"

#define AUTH_TYPE_NAME "Krenalis"
#define DEFAULT_ORGS_ENV "KRENALIS_ORGANIZATIONS_API_KEY"
#define DEFAULT_MAX_BODY 512000
#define KEPT_BODY_FILTER "KRENALIS_KEPT_BODY"
#define CORS_FILTER "KRENALIS_CORS"
#define JSON_ERROR_FILTER "KRENALIS_JSON_ERROR"

module AP_MODULE_DECLARE_DATA krenalis_auth_module;

/* ---- configuration records ---- */

/* One key store as opened by a child process. Allocated in pconf before the fork; the LMDB
 * environment is opened after it (LMDB environments must not cross fork()). */
typedef struct {
    const char *dir;
    const char *secret_path;
    uint8_t *secret;               /* KA_SECRET_LEN bytes, ka_secure_alloc: not in core dumps */
    const char *data_path;         /* DIR/data.mdb */
    ka_store *st;                  /* NULL until opened in the child, or after a fault */
    apr_thread_mutex_t *open_lock; /* serializes opening, closing and the checks below */
    apr_thread_rwlock_t *env_lock; /* readers share it; resizing or closing takes it alone */
    apr_time_t checked;            /* last look at data_path */
    apr_time_t failed_at;          /* last failed open */
    dev_t dev;                     /* identity of the data.mdb that st maps */
    ino_t ino;
    int failing;                   /* the last open failed (logged once, not per request) */
    unsigned long opens;           /* how many times st was opened: a memo names the one */
    apr_thread_mutex_t *pool_lock; /* guards the idle transactions below */
    MDB_txn **idle;                /* reset read transactions: renewing one keeps its */
    int nidle;                     /* reader slot, so no reader-table lock per request */
    /* A mirrored store (krenalis-keys mirror): when the mirror last confirmed it current, the
     * mtime of DIR/mirror-confirmed, read at most once a second. */
    int mirrored;
    const char *confirmed_path;
    apr_time_t confirmed_checked;
    apr_time_t confirmed; /* Unix seconds; 0: no mark */
} ka_handle;

#define IDLE_TXNS 512

/* Per-process state shared by every server record. */
typedef struct {
    const char *orgs_key; /* NULL: the Organizations API stays closed */
    apr_array_header_t *handles;
} ka_proc;

typedef struct {
    const char *store_dir;
    const char *secret_path;
    const char *orgs_env; /* main server only */
    int max_stale;        /* KrenalisAuthMaxStaleness seconds, 0 off, -1 unset */
    ka_handle *handle;
    ka_proc *proc;
} ka_srv_cfg;

#define UNSET (-1)

typedef struct {
    int endpoint;  /* ka_endpoint */
    int ws_policy; /* ka_ws_policy */
    int forward_headers;
    int pass_authorization;
    apr_off_t max_body;
    int cors_set;
    apr_array_header_t *cors_origins; /* NULL: any origin ("*") */
} ka_dir_cfg;

/* What the module decided for one request. */
typedef struct {
    ka_route route;
    int cors;
    const char *allow_origin; /* Access-Control-Allow-Origin value, NULL when not allowed */
    int authenticated;
    ka_identity id;
    int forward_headers;
    int pass_authorization;
    int env_done;
    const ka_body_fields *body; /* the body the decision read (NULL: none), for redirects */
    const char *authorization;  /* the value decided on: KrenalisAuthPassAuthorization Off
                                   removes it from the headers an internal redirect shares */
} ka_req;

static void *create_srv_cfg(apr_pool_t *p, server_rec *s)
{
    ka_srv_cfg *c = apr_pcalloc(p, sizeof(ka_srv_cfg));
    c->max_stale = UNSET;
    return c;
}

static void *merge_srv_cfg(apr_pool_t *p, void *basev, void *addv)
{
    ka_srv_cfg *base = basev, *add = addv, *c = apr_pcalloc(p, sizeof(*c));

    c->store_dir = add->store_dir ? add->store_dir : base->store_dir;
    c->secret_path = add->store_dir ? add->secret_path
                                    : (add->secret_path ? add->secret_path : base->secret_path);
    c->orgs_env = base->orgs_env;
    c->max_stale = add->max_stale != UNSET ? add->max_stale : base->max_stale;
    return c;
}

static void *create_dir_cfg(apr_pool_t *p, char *dir)
{
    ka_dir_cfg *c = apr_pcalloc(p, sizeof(*c));

    c->endpoint = UNSET;
    c->ws_policy = UNSET;
    c->forward_headers = UNSET;
    c->pass_authorization = UNSET;
    c->max_body = UNSET;
    return c;
}

static void *merge_dir_cfg(apr_pool_t *p, void *basev, void *addv)
{
    ka_dir_cfg *base = basev, *add = addv, *c = apr_pcalloc(p, sizeof(*c));

    c->endpoint = add->endpoint != UNSET ? add->endpoint : base->endpoint;
    c->ws_policy = add->ws_policy != UNSET ? add->ws_policy : base->ws_policy;
    c->forward_headers =
        add->forward_headers != UNSET ? add->forward_headers : base->forward_headers;
    c->pass_authorization =
        add->pass_authorization != UNSET ? add->pass_authorization : base->pass_authorization;
    c->max_body = add->max_body != UNSET ? add->max_body : base->max_body;
    c->cors_set = add->cors_set || base->cors_set;
    c->cors_origins = add->cors_set ? add->cors_origins : base->cors_origins;
    return c;
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

static const char *set_max_stale(cmd_parms *cmd, void *dummy, const char *arg)
{
    ka_srv_cfg *c = ap_get_module_config(cmd->server->module_config, &krenalis_auth_module);
    char *end;
    long v;

    if (strcasecmp(arg, "off") == 0) {
        c->max_stale = 0;
        return NULL;
    }
    errno = 0;
    v = strtol(arg, &end, 10);
    if (errno || end == arg || *end || v < 1 || v > 86400 * 365)
        return "KrenalisAuthMaxStaleness: expected off or a number of seconds (1 or more)";
    c->max_stale = (int)v;
    return NULL;
}

static const char *set_endpoint(cmd_parms *cmd, void *dconf, const char *arg)
{
    ka_dir_cfg *c = dconf;

    if (!strcasecmp(arg, "auto"))
        c->endpoint = KA_EP_AUTO;
    else if (!strcasecmp(arg, "api"))
        c->endpoint = KA_EP_API;
    else if (!strcasecmp(arg, "ingestion"))
        c->endpoint = KA_EP_INGESTION;
    else if (!strcasecmp(arg, "settings"))
        c->endpoint = KA_EP_SETTINGS;
    else if (!strcasecmp(arg, "organizations"))
        c->endpoint = KA_EP_ORGS;
    else
        return apr_pstrcat(cmd->pool, "KrenalisAuthEndpoint: '", arg,
                           "' is not one of auto, api, ingestion, settings, organizations", NULL);
    return NULL;
}

static const char *set_workspace(cmd_parms *cmd, void *dconf, const char *arg)
{
    ka_dir_cfg *c = dconf;

    if (!strcasecmp(arg, "optional"))
        c->ws_policy = KA_WS_OPTIONAL;
    else if (!strcasecmp(arg, "required"))
        c->ws_policy = KA_WS_REQUIRED;
    else if (!strcasecmp(arg, "forbidden"))
        c->ws_policy = KA_WS_FORBIDDEN;
    else
        return apr_pstrcat(cmd->pool, "KrenalisAuthWorkspace: '", arg,
                           "' is not one of optional, required, forbidden", NULL);
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
    {NULL}};

/* ---- start-up ---- */

static const char *orgs_env_name(server_rec *s)
{
    ka_srv_cfg *c = ap_get_module_config(s->module_config, &krenalis_auth_module);
    return c->orgs_env ? c->orgs_env : DEFAULT_ORGS_ENV;
}

static const char *secret_path_of(apr_pool_t *p, const ka_srv_cfg *c)
{
    return c->secret_path ? c->secret_path : apr_pstrcat(p, c->store_dir, "/secret", NULL);
}

/* The lock file created by a root process must stay writable by the children's User. */
static void give_lock_file_to_user(apr_pool_t *p, const char *dir, int existed)
{
    const char *lock = apr_pstrcat(p, dir, "/lock.mdb", NULL);

    if (!existed && geteuid() == 0 &&
        chown(lock, ap_unixd_config.user_id, ap_unixd_config.group_id) != 0)
        ap_log_error(APLOG_MARK, APLOG_WARNING, errno, NULL,
                     "KrenalisAuthKeyStore %s: cannot give lock.mdb to the server's User", dir);
}

/* Checks that a store and its secret open; logs a message naming the directive. */
static int check_store(apr_pool_t *p, server_rec *s, const ka_srv_cfg *c)
{
    char err[512];
    uint8_t secret[KA_SECRET_LEN];
    const char *spath = secret_path_of(p, c);
    const char *lock = apr_pstrcat(p, c->store_dir, "/lock.mdb", NULL);
    struct stat sb;
    int existed = stat(lock, &sb) == 0;
    ka_store *st;
    int rc;

    if (ka_secret_read(spath, secret, err, sizeof(err)) != NULL) {
        ap_log_error(APLOG_MARK, APLOG_STARTUP | APLOG_EMERG, 0, NULL, "%s: %s",
                     c->secret_path ? "KrenalisAuthKeyStoreSecret" : "KrenalisAuthKeyStore", err);
        return !OK;
    }
    rc = ka_store_open_secret(c->store_dir, secret, 1, &st, err, sizeof(err));
    OPENSSL_cleanse(secret, sizeof(secret));
    if (rc != KA_OK) {
        if (rc == KA_BADSECRET)
            ka_store_bad_secret_msg(c->store_dir, spath, err, sizeof(err));
        ap_log_error(APLOG_MARK, APLOG_STARTUP | APLOG_EMERG, 0, NULL, "%s: %s",
                     rc == KA_BADSECRET && c->secret_path ? "KrenalisAuthKeyStoreSecret"
                                                          : "KrenalisAuthKeyStore",
                     err);
        return !OK;
    }
    ka_store_close(st);
    give_lock_file_to_user(p, c->store_dir, existed);
    return OK;
}

static int check_orgs_key(server_rec *s)
{
    const char *name = orgs_env_name(s);
    const char *value = getenv(name);
    char msg[256];

    if (value != NULL && ka_org_key_check(name, value, msg, sizeof(msg)) != NULL) {
        ap_log_error(APLOG_MARK, APLOG_STARTUP | APLOG_EMERG, 0, NULL, "%s", msg);
        return !OK;
    }
    return OK;
}

/* ---- organizations key hand-off on graceful restart ----
 * A restart keeps the parent's environment, but `httpd -k graceful|restart` reads the
 * configuration (and runs check_config) in its own, new environment before it signals the
 * parent. That process leaves the key it sees in a root-only file of the runtime directory;
 * the parent takes it (and removes the file) when it reloads its configuration. */

/* The MPM strips "-k ARG" from the arguments it keeps, so the command line is read from
 * /proc (Linux). */
static int is_restart_signaller(apr_pool_t *p)
{
    char buf[8192];
    ssize_t n;
    int fd = open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC);

    if (fd < 0)
        return 0;
    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    for (const char *a = buf, *prev = ""; a < buf + n; prev = a, a += strlen(a) + 1) {
        const char *k = strcmp(prev, "-k") == 0 ? a : strncmp(a, "-k", 2) == 0 ? a + 2 : NULL;
        if (k && (strcmp(k, "graceful") == 0 || strcmp(k, "restart") == 0))
            return 1;
    }
    return 0;
}

static const char *handoff_path(apr_pool_t *p, server_rec *s)
{
    return ap_runtime_dir_relative(p, apr_pstrcat(p, "krenalis-auth.", orgs_env_name(s), NULL));
}

static void handoff_write(apr_pool_t *p, server_rec *s, const char *value)
{
    const char *path = handoff_path(p, s);
    const char *tmp = apr_pstrcat(p, path, ".new", NULL);
    size_t len = strlen(value);
    int fd;

    unlink(tmp);
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0 || write(fd, value, len) != (ssize_t)len || close(fd) != 0 ||
        rename(tmp, path) != 0) {
        ap_log_error(APLOG_MARK, APLOG_WARNING, errno, s,
                     "cannot hand %s to the running server; it keeps its current key",
                     orgs_env_name(s));
        if (fd >= 0)
            unlink(tmp);
    }
}

/* The key handed over by a restart command, if any; the file is removed either way. */
static const char *handoff_take(apr_pool_t *p, server_rec *s, int use)
{
    const char *path = handoff_path(p, s);
    char buf[KA_ORG_KEY_LEN + 2], msg[256];
    struct stat sb;
    ssize_t n;
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);

    if (fd < 0)
        return NULL;
    unlink(path);
    /* Only a root-owned, private file may carry the key. */
    if (fstat(fd, &sb) != 0 || sb.st_uid != geteuid() || (sb.st_mode & 077) != 0) {
        close(fd);
        return NULL;
    }
    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (!use || n <= 0)
        return NULL;
    buf[n] = '\0';
    if (ka_org_key_check(orgs_env_name(s), buf, msg, sizeof(msg)) != NULL)
        return NULL;
    return apr_pstrdup(p, buf);
}

/* Runs for `apachectl -t` too, so a bad store or key fails the configuration test. */
static int ka_check_config(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp, server_rec *s)
{
    apr_hash_t *seen = apr_hash_make(ptemp);

    if (check_orgs_key(s) != OK)
        return !OK;
    if (is_restart_signaller(ptemp) && getenv(orgs_env_name(s)) != NULL)
        handoff_write(ptemp, s, getenv(orgs_env_name(s)));
    for (server_rec *v = s; v; v = v->next) {
        ka_srv_cfg *c = ap_get_module_config(v->module_config, &krenalis_auth_module);
        const char *key;
        if (c->store_dir == NULL)
            continue;
        key = apr_pstrcat(ptemp, c->store_dir, "\n", secret_path_of(ptemp, c), NULL);
        if (apr_hash_get(seen, key, APR_HASH_KEY_STRING))
            continue;
        apr_hash_set(seen, key, APR_HASH_KEY_STRING, "");
        if (check_store(ptemp, v, c) != OK)
            return !OK;
    }
    return OK;
}

static ka_handle *handle_for(apr_pool_t *pconf, apr_hash_t *byname, ka_proc *proc,
                             const ka_srv_cfg *c)
{
    char err[512];
    const char *spath = secret_path_of(pconf, c);
    const char *key = apr_pstrcat(pconf, c->store_dir, "\n", spath, NULL);
    ka_handle *h = apr_hash_get(byname, key, APR_HASH_KEY_STRING);

    if (h)
        return h;
    h = apr_pcalloc(pconf, sizeof(*h));
    h->dir = c->store_dir;
    h->data_path = apr_pstrcat(pconf, c->store_dir, "/data.mdb", NULL);
    h->confirmed_path = apr_pstrcat(pconf, c->store_dir, "/" KA_MIRROR_CONFIRMED_FILE, NULL);
    h->secret_path = spath;
    h->secret = ka_secure_alloc(KA_SECRET_LEN);
    if (h->secret == NULL || ka_secret_read(spath, h->secret, err, sizeof(err)) != NULL) {
        ka_secure_free(h->secret, KA_SECRET_LEN);
        return NULL;
    }
    apr_hash_set(byname, key, APR_HASH_KEY_STRING, h);
    *(ka_handle **)apr_array_push(proc->handles) = h;
    return h;
}

static apr_status_t wipe_handles(void *data)
{
    ka_proc *proc = data;
    for (int i = 0; i < proc->handles->nelts; i++) {
        ka_handle *h = APR_ARRAY_IDX(proc->handles, i, ka_handle *);
        ka_secure_free(h->secret, KA_SECRET_LEN);
        h->secret = NULL;
    }
    return APR_SUCCESS;
}

/* Reads the secrets and the organizations key as root, once per configuration load. */
static int ka_post_config(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp, server_rec *s)
{
    ka_proc *proc = apr_pcalloc(pconf, sizeof(*proc));
    apr_hash_t *byname = apr_hash_make(ptemp);
    const char *value = getenv(orgs_env_name(s));
    /* A key handed over by `-k graceful` replaces the start-up one; at a first start a
     * leftover file is only removed. */
    const char *handed = handoff_take(ptemp, s, ap_state_query(AP_SQ_CONFIG_GEN) > 0);

    if (handed) {
        value = handed;
        setenv(orgs_env_name(s), handed, 1); /* later restarts without a hand-off keep it */
    }

    proc->handles = apr_array_make(pconf, 2, sizeof(ka_handle *));
    proc->orgs_key = value ? apr_pstrdup(pconf, value) : NULL;
    apr_pool_cleanup_register(pconf, proc, wipe_handles, apr_pool_cleanup_null);
    for (server_rec *v = s; v; v = v->next) {
        ka_srv_cfg *c = ap_get_module_config(v->module_config, &krenalis_auth_module);
        c->proc = proc;
        if (c->store_dir == NULL)
            continue;
        c->handle = handle_for(pconf, byname, proc, c);
        if (c->handle == NULL) {
            ap_log_error(APLOG_MARK, APLOG_EMERG, 0, s,
                         "KrenalisAuthKeyStoreSecret: cannot read the secret of %s", c->store_dir);
            return !OK;
        }
    }
    if (proc->orgs_key == NULL)
        ap_log_error(APLOG_MARK, APLOG_INFO, 0, s,
                     "%s is not set: the Organizations API stays closed", orgs_env_name(s));
    /* Once per configuration load: not on the first of the two passes of a start. */
    if (ap_state_query(AP_SQ_MAIN_STATE) != AP_SQ_MS_CREATE_PRE_CONFIG)
        ap_log_error(APLOG_MARK, APLOG_INFO, 0, s, "mod_krenalis_auth/" KA_VERSION " configured");
    return OK;
}

/* Logs, once until the store opens again, why requests get 503. */
static void handle_failing(ka_handle *h, server_rec *s, const char *directive, const char *why)
{
    if (!h->failing)
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, s, "%s: %s; requests get 503 until it opens",
                     directive, why);
    h->failing = 1;
}

/* Opens a handle's environment in this child; the caller holds open_lock. */
static int handle_open(ka_handle *h, server_rec *s)
{
    char err[512];
    struct stat sb;
    ka_store *st = NULL;
    ka_map_guard g;
    int rc;

    if (h->st)
        return KA_OK;
    if (sigsetjmp(g.jb, 0) == 0) {
        ka_map_guard_arm(&g);
        rc = ka_store_open_secret(h->dir, h->secret, 1, &st, err, sizeof(err));
        ka_map_guard_disarm(&g);
    } else {
        /* Truncated between the size check and the reads: st is lost (a rare leak). */
        ka_map_guard_recover();
        snprintf(err, sizeof(err), "key store %s: data.mdb shrank while opening", h->dir);
        handle_failing(h, s, "KrenalisAuthKeyStore", err);
        return KA_FAIL;
    }
    if (rc == KA_OK && stat(h->data_path, &sb) != 0) {
        snprintf(err, sizeof(err), "key store %s: data.mdb vanished while opening", h->dir);
        rc = KA_FAIL;
    }
    if (rc != KA_OK) {
        if (rc == KA_BADSECRET)
            ka_store_bad_secret_msg(h->dir, h->secret_path, err, sizeof(err));
        handle_failing(
            h, s, rc == KA_BADSECRET ? "KrenalisAuthKeyStoreSecret" : "KrenalisAuthKeyStore", err);
        ka_store_close(st);
        return KA_FAIL;
    }
    /* ka_store_open_secret has cleared the reader slots of dead children already. */
    h->dev = sb.st_dev;
    h->ino = sb.st_ino;
    h->mirrored = ka_store_is_mirror(st);
    h->confirmed_checked = 0;
    if (h->failing)
        ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, s, "key store %s is readable again", h->dir);
    h->failing = 0;
    apr_thread_rwlock_wrlock(h->env_lock);
    h->st = st;
    h->opens++;
    apr_thread_rwlock_unlock(h->env_lock);
    return KA_OK;
}

/* Closes a handle's environment; the caller holds open_lock and env_lock (write). */
static void handle_close(ka_handle *h)
{
    while (h->nidle > 0)
        mdb_txn_abort(h->idle[--h->nidle]);
    ka_store_close(h->st);
    h->st = NULL;
}

/* What the log says when a read of the map faulted (SIGBUS). */
static void shrank_msg(const ka_handle *h, char *err, size_t errlen)
{
    snprintf(err, errlen, "key store %s: data.mdb shrank under a read: it was truncated", h->dir);
}

/* Closes the environment once no request reads it; the caller holds open_lock. */
static void handle_drop(ka_handle *h)
{
    apr_thread_rwlock_wrlock(h->env_lock);
    if (h->st)
        handle_close(h);
    apr_thread_rwlock_unlock(h->env_lock);
}

/* Closes a store that cannot be read, logs why once, and lets the next open wait a second;
 * the caller holds open_lock. */
static void handle_shut(ka_handle *h, request_rec *r, const char *why)
{
    handle_drop(h);
    handle_failing(h, r->server, "KrenalisAuthKeyStore", why);
    h->failed_at = r->request_time;
}

/* Whether data.mdb still holds every page of the open store; the caller holds open_lock. */
static int handle_size_ok(ka_handle *h, long long size, char *err, size_t errlen)
{
    ka_map_guard g;
    int rc;

    /* env_lock: a map being resized by another thread must not be read. */
    apr_thread_rwlock_rdlock(h->env_lock);
    if (sigsetjmp(g.jb, 0) == 0) {
        ka_map_guard_arm(&g);
        rc = ka_store_check_size(h->st, size, err, errlen);
        ka_map_guard_disarm(&g);
    } else {
        ka_map_guard_recover();
        shrank_msg(h, err, errlen);
        rc = KA_FAIL;
    }
    apr_thread_rwlock_unlock(h->env_lock);
    return rc == KA_OK;
}

/* At most once a second per child: a store removed or replaced while serving (a new
 * `krenalis-keys init`, a restored backup) must not keep answering from the old file, and a
 * truncated one must be closed before a read of a missing page. */
static void handle_recheck(ka_handle *h, request_rec *r)
{
    char err[512];
    struct stat sb;

    if (r->request_time - h->checked < apr_time_from_sec(1))
        return;
    apr_thread_mutex_lock(h->open_lock);
    if (r->request_time - h->checked >= apr_time_from_sec(1)) {
        if (h->st && (stat(h->data_path, &sb) != 0 || sb.st_ino != h->ino || sb.st_dev != h->dev)) {
            ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, r,
                          "key store %s was removed or replaced; reopening it", h->dir);
            handle_drop(h);
        } else if (h->st && !handle_size_ok(h, (long long)sb.st_size, err, sizeof(err))) {
            handle_shut(h, r, err);
        }
        /* Only now: a concurrent request that saw the old time waits on open_lock above
         * instead of reading the store being closed. */
        h->checked = r->request_time;
    }
    apr_thread_mutex_unlock(h->open_lock);
}

/* A read of the map faulted (SIGBUS: data.mdb shrank under it). The environment is closed, so
 * that the next request reopens it, which refuses the file until it is whole again. */
static void handle_fault(ka_handle *h, request_rec *r)
{
    char err[512];

    shrank_msg(h, err, sizeof(err));
    apr_thread_mutex_lock(h->open_lock);
    handle_shut(h, r, err);
    apr_thread_mutex_unlock(h->open_lock);
}

/* Opens the store if it is closed, trying at most once a second while it fails. */
static int handle_ensure_open(ka_handle *h, request_rec *r)
{
    int rc = KA_FAIL;

    apr_thread_mutex_lock(h->open_lock);
    if (h->st)
        rc = KA_OK;
    else if (!h->failing || r->request_time - h->failed_at >= apr_time_from_sec(1)) {
        rc = handle_open(h, r->server);
        if (rc != KA_OK)
            h->failed_at = r->request_time;
    }
    apr_thread_mutex_unlock(h->open_lock);
    return rc;
}

static apr_status_t close_handles(void *data)
{
    ka_proc *proc = data;
    for (int i = 0; i < proc->handles->nelts; i++)
        handle_close(APR_ARRAY_IDX(proc->handles, i, ka_handle *));
    return APR_SUCCESS;
}

static void ka_child_init(apr_pool_t *pchild, server_rec *s)
{
    ka_srv_cfg *c = ap_get_module_config(s->module_config, &krenalis_auth_module);
    ka_proc *proc = c->proc;

    if (proc == NULL)
        return;
    /* Before the first open: the open reads the map too. */
    if (ka_map_guard_install() != 0)
        ap_log_error(APLOG_MARK, APLOG_WARNING, errno, s,
                     "cannot install the SIGBUS handler: a truncated key store would kill "
                     "children instead of answering 503");
    for (int i = 0; i < proc->handles->nelts; i++) {
        ka_handle *h = APR_ARRAY_IDX(proc->handles, i, ka_handle *);
        apr_thread_mutex_create(&h->open_lock, APR_THREAD_MUTEX_DEFAULT, pchild);
        apr_thread_rwlock_create(&h->env_lock, pchild);
        apr_thread_mutex_create(&h->pool_lock, APR_THREAD_MUTEX_DEFAULT, pchild);
        h->idle = apr_pcalloc(pchild, IDLE_TXNS * sizeof(MDB_txn *));
        h->checked = apr_time_now();
        handle_open(h, s);
    }
    apr_pool_cleanup_register(pchild, proc, close_handles, apr_pool_cleanup_null);
}

/* ---- the store on the request path ---- */

/* The last API-endpoint decision a connection accepted: its inputs, its answer and the store
 * snapshot it read. A keep-alive client sends the same headers on every request; while the
 * store has committed nothing since, ka_decide would answer the same, so the next such request
 * skips it (docs/operations.md, "Connection memo"). */
typedef struct {
    /* Set when the memo is shared by the streams of an HTTP/2 connection, which run on several
     * threads at once: every read and write of the fields below holds it. NULL for a memo only
     * its own connection's thread uses. */
    apr_thread_mutex_t *lock;
    const ka_handle *h;
    unsigned long opens; /* h->opens of the environment that decided */
    size_t txnid;        /* the snapshot (LMDB transaction ID) it read; 0: empty */
    ka_memo_key key;
    ka_identity id;
} conn_memo;

/* One request's access to a store: the read transaction is begun on the first look-up. */
typedef struct {
    request_rec *r;
    ka_handle *h;
    MDB_txn *txn;
    int locked;      /* holds env_lock (shared, or alone while adopting a grown map) */
    conn_memo *memo; /* the connection's memo, NULL until a decision is kept on it */
} ka_txn;

/* A reset transaction from the idle list renewed, or a new one. */
static int txn_get(ka_handle *h, MDB_txn **txn)
{
    MDB_txn *t = NULL;
    int rc;

    apr_thread_mutex_lock(h->pool_lock);
    if (h->nidle > 0)
        t = h->idle[--h->nidle];
    apr_thread_mutex_unlock(h->pool_lock);
    if (t == NULL)
        return mdb_txn_begin(h->st->env, NULL, MDB_RDONLY, txn);
    rc = mdb_txn_renew(t);
    if (rc != 0) {
        mdb_txn_abort(t);
        return rc;
    }
    *txn = t;
    return 0;
}

/* env_lock, shared (read) or alone, noted in t for the SIGBUS path of decide_once. */
static void txn_lock(ka_txn *t, int shared)
{
    if (shared)
        apr_thread_rwlock_rdlock(t->h->env_lock);
    else
        apr_thread_rwlock_wrlock(t->h->env_lock);
    t->locked = 1;
}

static void txn_unlock(ka_txn *t)
{
    t->locked = 0;
    apr_thread_rwlock_unlock(t->h->env_lock);
}

/* Begins the request's read transaction (ka_store_lookup_ctx.begin). LMDB reports a map
 * grown by krenalis-keys as MDB_MAP_RESIZED; adopting the new size needs no transaction of
 * this process to be active, hence the rwlock. */
static int txn_begin(void *arg, const ka_store **st, MDB_txn **txn)
{
    ka_txn *t = arg;
    ka_handle *h = t->h;
    int rc;

    if (h == NULL) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, t->r,
                      "AuthType Krenalis without KrenalisAuthKeyStore for this server");
        return KA_FAIL;
    }
    handle_recheck(h, t->r);
    txn_lock(t, 1);
    while (h->st == NULL) {
        txn_unlock(t);
        if (handle_ensure_open(h, t->r) != KA_OK)
            return KA_FAIL;
        txn_lock(t, 1);
    }
    rc = txn_get(h, &t->txn);
    if (rc == MDB_MAP_RESIZED) {
        txn_unlock(t);
        txn_lock(t, 0);
        if (h->st)
            mdb_env_set_mapsize(h->st->env, 0);
        txn_unlock(t);
        txn_lock(t, 1);
        rc = h->st ? txn_get(h, &t->txn) : MDB_PANIC; /* closed meanwhile: this request 503s */
    }
    if (rc != 0) {
        txn_unlock(t);
        t->txn = NULL;
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, t->r, "key store %s cannot be read: %s", h->dir,
                      mdb_strerror(rc));
        return KA_FAIL;
    }
    *st = h->st;
    *txn = t->txn;
    return KA_OK;
}

/* Ends the read transaction, keeping its handle (and reader slot) for the next request. */
static void txn_end(ka_txn *t)
{
    ka_handle *h = t->h;

    if (h == NULL || t->txn == NULL)
        return;
    mdb_txn_reset(t->txn);
    apr_thread_mutex_lock(h->pool_lock);
    if (h->nidle < IDLE_TXNS) {
        h->idle[h->nidle++] = t->txn;
        t->txn = NULL;
    }
    apr_thread_mutex_unlock(h->pool_lock);
    if (t->txn)
        mdb_txn_abort(t->txn);
    t->txn = NULL;
    txn_unlock(t);
}

/* ---- the connection memo ---- */

static apr_status_t memo_wipe(void *data)
{
    OPENSSL_cleanse(data, sizeof(conn_memo));
    return APR_SUCCESS;
}

/* An HTTP/2 connection's memo, made before its first stream: the streams (secondary
 * connections, each with a conn_config of its own that lives one request) share their primary
 * connection's memo, under its lock. Only where the server allows HTTP/2; made here, on the
 * primary connection's own thread, because the streams' threads may not allocate from its pool. */
static int ka_pre_connection(conn_rec *c, void *csd)
{
    conn_memo *m;

    if (c->master != NULL || (!ap_is_allowed_protocol(c, NULL, c->base_server, "h2c") &&
                              !ap_is_allowed_protocol(c, NULL, c->base_server, "h2")))
        return DECLINED;
    m = apr_pcalloc(c->pool, sizeof(*m));
    if (apr_thread_mutex_create(&m->lock, APR_THREAD_MUTEX_DEFAULT, c->pool) != APR_SUCCESS)
        return DECLINED; /* no memo: every request is decided in full */
    /* Registered after the mutex's own cleanup, so run before it: the lock is still there. */
    apr_pool_cleanup_register(c->pool, m, memo_wipe, apr_pool_cleanup_null);
    ap_set_module_config(c->conn_config, &krenalis_auth_module, m);
    return DECLINED;
}

/* The memo a request may use: its connection's, or for an HTTP/2 stream its primary
 * connection's when that one was made shareable (ka_pre_connection). */
static conn_memo *memo_of(conn_rec *c)
{
    conn_memo *m;

    if (c->master == NULL)
        return ap_get_module_config(c->conn_config, &krenalis_auth_module);
    m = ap_get_module_config(c->master->conn_config, &krenalis_auth_module);
    return m && m->lock ? m : NULL;
}

/* Answers dec from the memo when req has its inputs (the Authorization value compared in
 * constant time: behind a proxy one connection carries many clients' keys) and the store has
 * committed nothing since. */
static int memo_answer(ka_txn *t, const ka_request *req, ka_decision *dec)
{
    conn_memo *m = t->memo;
    ka_handle *h = t->h;
    MDB_envinfo info;
    unsigned long opens = 0;
    size_t txnid = 0;
    ka_identity id;
    int hit;

    if (m == NULL)
        return 0;
    /* What the checks below need, copied under the lock (another stream may replace it). */
    if (m->lock)
        apr_thread_mutex_lock(m->lock);
    hit = m->txnid != 0 && m->h == h && ka_memo_key_match(&m->key, req);
    if (hit) {
        opens = m->opens;
        txnid = m->txnid;
        id = m->id;
    }
    if (m->lock)
        apr_thread_mutex_unlock(m->lock);
    if (!hit)
        return 0;
    handle_recheck(h, t->r);
    txn_lock(t, 1);
    /* The last committed transaction, read from the meta pages (under the caller's map guard). */
    hit = h->st && h->opens == opens && mdb_env_info(h->st->env, &info) == 0 &&
          info.me_last_txnid == txnid;
    txn_unlock(t);
    if (!hit)
        return 0;
    dec->status = KA_ACCEPT;
    dec->code = NULL;
    dec->message[0] = '\0';
    dec->token_presented = 1;
    dec->id = id;
    return 1;
}

/* Keeps an accepted decision that read the store in the transaction still open. */
static void memo_keep(ka_txn *t, const ka_request *req, const ka_decision *dec)
{
    conn_rec *c = t->r->connection;
    conn_memo *m = t->memo;
    ka_memo_key key;
    size_t txnid;

    if (t->txn == NULL || !ka_memo_key_set(&key, req))
        return;
    if (m == NULL) {
        /* An HTTP/2 stream without a shareable memo keeps none: its conn_config and pool end
         * with its request, and its primary connection's pool is another thread's. */
        if (c->master != NULL) {
            OPENSSL_cleanse(&key, sizeof(key));
            return;
        }
        /* Once per connection, from its pool; wiped when the connection ends. */
        m = t->memo = apr_pcalloc(c->pool, sizeof(*m));
        ap_set_module_config(c->conn_config, &krenalis_auth_module, m);
        apr_pool_cleanup_register(c->pool, m, memo_wipe, apr_pool_cleanup_null);
    }
    txnid = mdb_txn_id(t->txn);
    /* Nothing under the lock reads the store's map: a fault there (mapguard.h) never jumps out
     * with the lock held. */
    if (m->lock)
        apr_thread_mutex_lock(m->lock);
    m->h = t->h;
    m->opens = t->h->opens;
    m->txnid = txnid;
    m->key = key;
    m->id = dec->id;
    if (m->lock)
        apr_thread_mutex_unlock(m->lock);
    OPENSSL_cleanse(&key, sizeof(key));
}

/* ---- responses ---- */

static const char *realm_of(request_rec *r)
{
    const char *name = ap_auth_name(r);
    char *q;

    if (name == NULL)
        return AUTH_TYPE_NAME;
    if (strchr(name, '"') == NULL && strchr(name, '\\') == NULL)
        return name;
    q = apr_palloc(r->pool, strlen(name) * 2 + 1);
    {
        char *o = q;
        for (const char *p = name; *p; p++) {
            if (*p == '"' || *p == '\\')
                *o++ = '\\';
            *o++ = *p;
        }
        *o = '\0';
    }
    return q;
}

/* Vary with Origin exactly once, keeping the other tokens the response already varies on. */
static const char *vary_with_origin(request_rec *r)
{
    const char *vals[2] = {apr_table_get(r->headers_out, "Vary"),
                           apr_table_get(r->err_headers_out, "Vary")};
    const char *out = NULL;

    for (int i = 0; i < 2; i++) {
        char *copy, *tok, *state;
        if (vals[i] == NULL)
            continue;
        copy = apr_pstrdup(r->pool, vals[i]);
        for (tok = apr_strtok(copy, ", \t", &state); tok; tok = apr_strtok(NULL, ", \t", &state)) {
            if (strcasecmp(tok, "Origin") == 0 || (out && ap_find_token(r->pool, out, tok)))
                continue;
            out = out ? apr_pstrcat(r->pool, out, ", ", tok, NULL) : tok;
        }
    }
    return out ? apr_pstrcat(r->pool, out, ", Origin", NULL) : "Origin";
}

/* Sets the CORS headers of SPEC §9 exactly once, whatever the backend set. */
static void cors_apply(request_rec *r, const ka_req *q)
{
    static const char *const owned[] = {"Access-Control-Allow-Origin",
                                        "Access-Control-Expose-Headers",
                                        "Access-Control-Allow-Credentials"};
    const char *vary = vary_with_origin(r);

    for (size_t i = 0; i < sizeof(owned) / sizeof(owned[0]); i++) {
        apr_table_unset(r->headers_out, owned[i]);
        apr_table_unset(r->err_headers_out, owned[i]);
    }
    apr_table_unset(r->headers_out, "Vary");
    apr_table_setn(r->err_headers_out, "Vary", vary);
    if (q->allow_origin)
        apr_table_setn(r->err_headers_out, "Access-Control-Allow-Origin", q->allow_origin);
    apr_table_setn(r->err_headers_out, "Access-Control-Expose-Headers", "Retry-After");
}

static void set_error_headers(request_rec *r)
{
    apr_table_t *h = r->err_headers_out;

    apr_table_setn(h, "X-Content-Type-Options", "nosniff");
    apr_table_setn(h, "Cache-Control", "no-store, max-age=0");
    apr_table_setn(h, "Pragma", "no-cache");
    apr_table_setn(h, "Expires", "0");
}

/* Sends a refusal as Krenalis would (SPEC §7) and ends the request. */
static int send_refusal(request_rec *r, const ka_req *q, const ka_decision *dec)
{
    char body[512];
    size_t len = ka_json_error(body, sizeof(body), dec->code, dec->message);

    r->status = dec->status;
    r->status_line = NULL;
    ap_set_content_type(r, "application/json; charset=utf-8");
    ap_set_content_length(r, (apr_off_t)len);
    set_error_headers(r);
    if (dec->status == HTTP_UNAUTHORIZED)
        apr_table_setn(r->err_headers_out, "WWW-Authenticate",
                       apr_psprintf(r->pool, "Bearer realm=\"%s\"%s", realm_of(r),
                                    dec->token_presented ? ", error=\"invalid_token\"" : ""));
    if (q->cors)
        cors_apply(r, q);
    ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, "refused: %d %s", dec->status, dec->code);
    ap_rwrite(body, (int)len, r);
    return DONE;
}

/* A CORS preflight, answered without a credential and without the backend (SPEC §9). */
static int send_preflight(request_rec *r, const ka_req *q)
{
    int settings = q->route.endpoint == KA_EP_SETTINGS;

    r->status = HTTP_NO_CONTENT;
    cors_apply(r, q);
    apr_table_setn(r->err_headers_out, "Access-Control-Allow-Methods", settings ? "GET" : "POST");
    apr_table_setn(r->err_headers_out, "Access-Control-Allow-Headers",
                   "Authorization, Content-Type");
    apr_table_setn(r->err_headers_out, "Access-Control-Max-Age", settings ? "900" : "86400");
    return DONE;
}

/* ---- identity ---- */

/* The module's record for r, or for the request it was redirected from or is part of. */
static ka_req *req_state(request_rec *r)
{
    for (request_rec *cur = r; cur; cur = cur->prev ? cur->prev : cur->main) {
        ka_req *q = ap_get_module_config(cur->request_config, &krenalis_auth_module);
        if (q)
            return q;
    }
    return NULL;
}

/* The record whose route answers for the response's CORS headers: the first request of an
 * internal redirect chain (the URL the client asked for), else the request's own. */
static ka_req *response_state(request_rec *r)
{
    request_rec *first = r;
    ka_req *q;

    while (first->prev)
        first = first->prev;
    q = ap_get_module_config(first->request_config, &krenalis_auth_module);
    return q ? q : req_state(r);
}

static void set_env(apr_table_t *t, const char *name, const char *value)
{
    if (value[0] != '\0')
        apr_table_setn(t, name, value);
}

/* Hands the identity to the backend (SPEC §8): environment, and headers when asked. */
static void pass_identity(request_rec *r, const ka_req *q)
{
    const ka_identity *id = &q->id;
    const char *type = ka_key_type_name(id->type);

    apr_table_setn(r->subprocess_env, "KRENALIS_KEY_TYPE", type);
    set_env(r->subprocess_env, "KRENALIS_ORGANIZATION", id->org);
    set_env(r->subprocess_env, "KRENALIS_WORKSPACE", id->ws);
    set_env(r->subprocess_env, "KRENALIS_CONNECTION", id->conn);
    if (id->type != KA_KEY_ORGS)
        set_env(r->subprocess_env, "KRENALIS_KEY_ID", id->key_id);
    if (q->forward_headers) {
        apr_table_setn(r->headers_in, "Krenalis-Auth-Key-Type", type);
        set_env(r->headers_in, "Krenalis-Auth-Organization", id->org);
        set_env(r->headers_in, "Krenalis-Auth-Workspace", id->ws);
        set_env(r->headers_in, "Krenalis-Auth-Connection", id->conn);
        if (id->type != KA_KEY_ORGS)
            set_env(r->headers_in, "Krenalis-Auth-Key-Id", id->key_id);
    }
}

/* ---- the kept body ---- */

typedef struct {
    const char *data;
    apr_size_t len;
    int done;
} kept_body;

/* Serves the body the module read, then EOS: the backend sees exactly the client's bytes. */
static apr_status_t kept_body_filter(ap_filter_t *f, apr_bucket_brigade *bb, ap_input_mode_t mode,
                                     apr_read_type_e block, apr_off_t readbytes)
{
    kept_body *k = f->ctx;
    apr_bucket_alloc_t *ba = f->c->bucket_alloc;

    if (mode != AP_MODE_READBYTES && mode != AP_MODE_GETLINE && mode != AP_MODE_SPECULATIVE)
        return APR_ENOTIMPL;
    if (k->done) {
        APR_BRIGADE_INSERT_TAIL(bb, apr_bucket_eos_create(ba));
        return APR_SUCCESS;
    }
    if (k->len > 0) {
        apr_size_t n =
            readbytes > 0 && (apr_size_t)readbytes < k->len ? (apr_size_t)readbytes : k->len;
        if (mode == AP_MODE_GETLINE) {
            const char *nl = memchr(k->data, '\n', n);
            if (nl)
                n = (apr_size_t)(nl - k->data) + 1;
        }
        APR_BRIGADE_INSERT_TAIL(bb, apr_bucket_transient_create(k->data, n, ba));
        if (mode != AP_MODE_SPECULATIVE) {
            k->data += n;
            k->len -= n;
        }
        return APR_SUCCESS;
    }
    if (mode != AP_MODE_SPECULATIVE)
        k->done = 1;
    APR_BRIGADE_INSERT_TAIL(bb, apr_bucket_eos_create(ba));
    return APR_SUCCESS;
}

/* Reads the whole request body into pool memory, up to limit bytes. */
static int read_body(request_rec *r, apr_off_t limit, const char **data, apr_size_t *len)
{
    apr_bucket_brigade *bb = apr_brigade_create(r->pool, r->connection->bucket_alloc);
    const char *cl = apr_table_get(r->headers_in, "Content-Length");
    apr_size_t cap = cl ? (apr_size_t)apr_atoi64(cl) + 1 : 8192, n = 0;
    char *buf;
    int seen_eos = 0;

    if (cap > (apr_size_t)limit + 1)
        cap = (apr_size_t)limit + 1;
    buf = apr_palloc(r->pool, cap);
    while (!seen_eos) {
        apr_status_t rv = ap_get_brigade(r->input_filters, bb, AP_MODE_READBYTES, APR_BLOCK_READ,
                                         HUGE_STRING_LEN);
        if (rv != APR_SUCCESS)
            return ap_map_http_request_error(rv, HTTP_BAD_REQUEST);
        for (apr_bucket *b = APR_BRIGADE_FIRST(bb); b != APR_BRIGADE_SENTINEL(bb);
             b = APR_BUCKET_NEXT(b)) {
            const char *d;
            apr_size_t dl;
            if (APR_BUCKET_IS_EOS(b)) {
                seen_eos = 1;
                break;
            }
            if (APR_BUCKET_IS_METADATA(b))
                continue;
            if (apr_bucket_read(b, &d, &dl, APR_BLOCK_READ) != APR_SUCCESS)
                return HTTP_BAD_REQUEST;
            if ((apr_off_t)(n + dl) > limit)
                return HTTP_REQUEST_ENTITY_TOO_LARGE;
            if (n + dl > cap) {
                apr_size_t ncap = cap * 2 > n + dl ? cap * 2 : n + dl;
                char *nb;
                if (ncap > (apr_size_t)limit + 1)
                    ncap = (apr_size_t)limit + 1;
                nb = apr_palloc(r->pool, ncap);
                memcpy(nb, buf, n);
                buf = nb;
                cap = ncap;
            }
            memcpy(buf + n, d, dl);
            n += dl;
        }
        apr_brigade_cleanup(bb);
    }
    *data = buf;
    *len = n;
    return OK;
}

static void *pool_zalloc(void *opaque, unsigned items, unsigned size)
{
    return apr_palloc(opaque, (apr_size_t)items * size);
}

/* Reads the body and puts it back in front of the backend; OK or an HTTP status. */
static int keep_body(request_rec *r, apr_off_t limit, const char **data, apr_size_t *len)
{
    kept_body *k;
    int rc = read_body(r, limit, data, len);

    if (rc != OK)
        return rc;
    k = apr_pcalloc(r->pool, sizeof(*k));
    k->data = *data;
    k->len = *len;
    ap_add_input_filter(KEPT_BODY_FILTER, k, r, r->connection);
    /* The body is now whole: the backend gets it with an exact length. */
    apr_table_unset(r->headers_in, "Transfer-Encoding");
    apr_table_setn(r->headers_in, "Content-Length", apr_off_t_toa(r->pool, (apr_off_t)*len));
    return OK;
}

/* Reads, keeps and scans the ingestion body; OK or an HTTP status. */
static int capture_body(request_rec *r, apr_off_t limit, ka_body_fields *fields)
{
    const char *data = NULL;
    apr_size_t len = 0;
    int enc = ka_content_encoding(apr_table_get(r->headers_in, "Content-Encoding"));
    int rc = keep_body(r, limit, &data, &len);

    memset(fields, 0, sizeof(*fields));
    if (rc != OK)
        return rc;
    if (enc == 0) {
        ka_json_scan(data, len, fields);
    } else if (enc == 1) {
        char *out = apr_palloc(r->pool, (apr_size_t)limit);
        apr_size_t outlen;
        int zr = ka_gunzip(data, len, out, (apr_size_t)limit, &outlen, pool_zalloc, r->pool);
        if (zr == KA_BODY_TOO_LARGE)
            return HTTP_REQUEST_ENTITY_TOO_LARGE;
        if (zr == KA_BODY_OK)
            ka_json_scan(out, outlen, fields);
    }
    return OK;
}

/* ---- hooks ---- */

static int is_krenalis(request_rec *r)
{
    const char *t = ap_auth_type(r);
    return t && strcasecmp(t, AUTH_TYPE_NAME) == 0;
}

static int is_identity_header(const char *name)
{
    static const char prefix[] = "krenalis-auth-";

    for (size_t j = 0; j < sizeof(prefix) - 1; j++) {
        char c = name[j] == '_' ? '-' : (char)apr_tolower(name[j]);
        if (c != prefix[j])
            return 0;
    }
    return 1;
}

/* Drops Krenalis-Auth-* fields (any case, '-' or '_') from *tp. One pass; a table without them
 * is built only when there is one to drop (apr_table_unset per name is quadratic in the number
 * of fields). */
static void drop_identity_headers(request_rec *r, apr_table_t **tp)
{
    const apr_array_header_t *arr = apr_table_elts(*tp);
    const apr_table_entry_t *e = (const apr_table_entry_t *)arr->elts;
    apr_table_t *kept;
    int i;

    for (i = 0; i < arr->nelts; i++)
        if (e[i].key && is_identity_header(e[i].key))
            break;
    if (i == arr->nelts)
        return;
    kept = apr_table_make(r->pool, arr->nelts);
    for (i = 0; i < arr->nelts; i++)
        if (e[i].key && !is_identity_header(e[i].key))
            apr_table_addn(kept, e[i].key, e[i].val);
    *tp = kept;
}

/* Client-sent Krenalis-Auth-* headers never reach a backend. */
static int strip_identity_headers(request_rec *r)
{
    drop_identity_headers(r, &r->headers_in);
    return DECLINED;
}

/* Trailers come with the end of a chunked body, after the decision, and MergeTrailers On merges
 * them into the headers a backend sees: identity names are dropped again, and a credential or a
 * workspace among them is a second copy of what was decided on (SPEC §2: sent more than once).
 * Returns 1 with dec filled when the request is to be refused. */
static int trailers_refused(request_rec *r, const ka_req *q, ka_decision *dec)
{
    int ws;

    if (r->trailers_in == NULL || apr_is_empty_table(r->trailers_in))
        return 0;
    drop_identity_headers(r, &r->trailers_in);
    drop_identity_headers(r, &r->headers_in);
    ws = q->route.endpoint != KA_EP_ORGS && apr_table_get(r->trailers_in, "Krenalis-Workspace");
    if (!ws && apr_table_get(r->trailers_in, "Authorization") == NULL)
        return 0;
    ka_decision_repeated(dec, &q->route, ws && !apr_table_get(r->trailers_in, "Authorization"));
    return 1;
}

static apr_off_t body_limit(const ka_dir_cfg *dc)
{
    return dc->max_body == UNSET ? DEFAULT_MAX_BODY : dc->max_body;
}

static int bad_content_length(request_rec *r, apr_off_t limit)
{
    const char *cl = apr_table_get(r->headers_in, "Content-Length");
    apr_off_t n;

    return cl && apr_strtoff(&n, cl, NULL, 10) == APR_SUCCESS && n > limit;
}

/* The decision faulted on the map (mapguard.h): let go of the transaction and the lock it
 * held, close the store and answer 503. */
static int decide_faulted(ka_txn *t, ka_decision *dec)
{
    if (t->txn)
        mdb_txn_abort(t->txn); /* a read transaction: touches lock.mdb, not the lost pages */
    t->txn = NULL;
    if (t->locked)
        txn_unlock(t);
    handle_fault(t->h, t->r);
    ka_decision_unavailable(dec);
    return dec->status;
}

/* The decision under the SIGBUS guard. t and lctx change after sigsetjmp and are read after a
 * siglongjmp, so they live in the caller's frame (never inlined into it), not in this one. */
static __attribute__((noinline)) int decide_guarded(ka_txn *t, ka_store_lookup_ctx *lctx,
                                                    const ka_request *req, ka_decision *dec)
{
    request_rec *r = t->r;
    ka_map_guard g;
    ka_lookup lk;
    int rc;

    ka_store_lookup(lctx, &lk);
    if (sigsetjmp(g.jb, 0) != 0) {
        ka_map_guard_recover();
        return decide_faulted(t, dec);
    }
    ka_map_guard_arm(&g);
    if (memo_answer(t, req, dec)) {
        rc = KA_ACCEPT;
    } else {
        rc = ka_decide(req, &lk, dec);
        if (rc == KA_ACCEPT)
            memo_keep(t, req, dec);
    }
    txn_end(t);
    ka_map_guard_disarm(&g);
    if (lctx->read_failed)
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, "key store %s: a read failed (damaged data?)",
                      t->h->dir);
    return rc;
}

/* KrenalisAuthMaxStaleness (SPEC §11.2): whether a mirrored store has gone unconfirmed for
 * longer than allowed. The mark is outside the LMDB data, so the memo stays valid meanwhile. */
static int store_stale(ka_handle *h, const ka_srv_cfg *sc, request_rec *r)
{
    struct stat sb;

    if (sc->max_stale <= 0 || h == NULL || !h->mirrored)
        return 0;
    if (r->request_time - h->confirmed_checked >= apr_time_from_sec(1)) {
        h->confirmed = stat(h->confirmed_path, &sb) == 0 ? sb.st_mtime : 0;
        h->confirmed_checked = r->request_time;
    }
    if (apr_time_sec(r->request_time) - h->confirmed <= sc->max_stale)
        return 0;
    ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r,
                  "key store %s: its mirror has not confirmed it current for more than %d s "
                  "(KrenalisAuthMaxStaleness): 503",
                  h->dir, sc->max_stale);
    return 1;
}

/* One pass of the decision tables over the store, guarded against a data.mdb truncated under
 * the map. On the stack, not in the request pool: nothing per request outgrows its first
 * block because of the module. */
static int decide_once(request_rec *r, ka_handle *h, const ka_request *req, ka_decision *dec)
{
    ka_txn t;
    ka_store_lookup_ctx lctx;

    memset(&t, 0, sizeof(t));
    memset(&lctx, 0, sizeof(lctx));
    t.r = r;
    t.h = h;
    t.memo = memo_of(r->connection);
    lctx.begin = txn_begin;
    lctx.begin_arg = &t;
    return decide_guarded(&t, &lctx, req, dec);
}

/* Decides, reading the body when the decision needs it. No transaction stays open while a
 * slow client sends its body. */
static int run_decision(request_rec *r, ka_srv_cfg *sc, const ka_dir_cfg *dc, ka_request *req,
                        ka_decision *dec)
{
    apr_off_t limit = body_limit(dc);
    ka_body_fields *fields;
    int rc;

    if (req->route.endpoint != KA_EP_ORGS && store_stale(sc->handle, sc, r)) {
        ka_decision_unavailable(dec);
        return dec->status;
    }
    rc = decide_once(r, sc->handle, req, dec);
    if (rc != KA_NEED_BODY)
        return rc;
    fields = apr_pcalloc(r->pool, sizeof(*fields));
    if ((rc = capture_body(r, limit, fields)) != OK)
        return rc;
    req->body = fields;
    return decide_once(r, sc->handle, req, dec);
}

/* The module's record for a request: its route and CORS answer from its own path and place. */
static ka_req *req_begin(request_rec *r, const ka_dir_cfg *dc)
{
    ka_req *q = apr_pcalloc(r->pool, sizeof(*q));

    ap_set_module_config(r->request_config, &krenalis_auth_module, q);
    ka_classify(r->method, r->uri, dc->endpoint == UNSET ? KA_EP_AUTO : dc->endpoint, &q->route);
    q->forward_headers = dc->forward_headers == 1;
    q->pass_authorization = dc->pass_authorization != 0;
    q->cors = q->route.endpoint == KA_EP_INGESTION || q->route.endpoint == KA_EP_SETTINGS;
    if (q->cors) {
        const apr_array_header_t *o = dc->cors_origins;
        q->allow_origin =
            ka_cors_allow_origin(o ? (const char *const *)o->elts : NULL, o ? (size_t)o->nelts : 0,
                                 apr_table_get(r->headers_in, "Origin"));
    }
    return q;
}

static void request_inputs(request_rec *r, const ka_srv_cfg *sc, const ka_dir_cfg *dc,
                           const ka_req *q, ka_request *req)
{
    memset(req, 0, sizeof(*req));
    req->route = q->route;
    req->authorization = apr_table_get(r->headers_in, "Authorization");
    req->workspace =
        q->route.endpoint == KA_EP_ORGS ? NULL : apr_table_get(r->headers_in, "Krenalis-Workspace");
    req->ws_policy = dc->ws_policy == UNSET ? KA_WS_OPTIONAL : dc->ws_policy;
    req->orgs_key = sc->proc ? sc->proc->orgs_key : NULL;
}

static int accepted(request_rec *r, ka_req *q, const ka_decision *dec)
{
    q->authenticated = 1;
    q->id = dec->id;
    r->user = q->id.key_id; /* q lives as long as r */
    ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r, "authenticated %s key %s",
                  ka_key_type_name(dec->id.type), dec->id.key_id);
    return OK;
}

/* An internal redirect or subrequest of an authenticated request (ErrorDocument, SSI, mod_dir,
 * mod_rewrite): the same credential is decided again for the target's own route and rules, on
 * the body the first decision read, so the target gets the identity only where the credential
 * sent to it directly would be accepted. A subrequest is refused without a body of its own. */
static int recheck_redirect(request_rec *r, ka_srv_cfg *sc, const ka_dir_cfg *dc,
                            const ka_req *first)
{
    static const ka_body_fields no_body; /* a body nobody read: no writeKey, no connectionId */
    ka_req *q = req_begin(r, dc);
    ka_request req;
    ka_decision dec;
    int rc;

    if (r->prev != NULL) {
        /* The client asked for the first URL: its CORS answer stands. */
        const ka_req *o = response_state(r->prev);
        q->cors = o->cors;
        q->allow_origin = o->allow_origin;
    }
    request_inputs(r, sc, dc, q, &req);
    req.authorization = first->authorization;
    req.body = first->body;
    q->body = first->body;
    q->authorization = first->authorization;
    rc = decide_once(r, sc->handle, &req, &dec);
    if (rc == KA_NEED_BODY) {
        req.body = &no_body;
        rc = decide_once(r, sc->handle, &req, &dec);
    }
    if (rc == KA_ACCEPT)
        return accepted(r, q, &dec);
    ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r,
                  "refused for the target of an internal redirect or subrequest: %d %s", dec.status,
                  dec.code ? dec.code : "");
    if (r->main != NULL || dec.status < 400)
        return dec.status >= 400 ? dec.status : HTTP_INTERNAL_SERVER_ERROR;
    return send_refusal(r, q, &dec);
}

static int ka_check_user(request_rec *r)
{
    ka_srv_cfg *sc = ap_get_module_config(r->server->module_config, &krenalis_auth_module);
    ka_dir_cfg *dc = ap_get_module_config(r->per_dir_config, &krenalis_auth_module);
    ka_req *q = req_state(r);
    ka_request req;
    ka_decision dec;
    int rc;

    if (!is_krenalis(r))
        return DECLINED;
    r->ap_auth_type = AUTH_TYPE_NAME;
    if (q && q->authenticated)
        return recheck_redirect(r, sc, dc, q);
    q = req_begin(r, dc);
    if (q->cors && q->route.preflight_candidate && apr_table_get(r->headers_in, "Origin") &&
        apr_table_get(r->headers_in, "Access-Control-Request-Method"))
        return send_preflight(r, q);
    if (q->route.endpoint == KA_EP_INGESTION && bad_content_length(r, body_limit(dc)))
        return HTTP_REQUEST_ENTITY_TOO_LARGE;
    request_inputs(r, sc, dc, q, &req);
    rc = run_decision(r, sc, dc, &req, &dec);
    if (rc != KA_ACCEPT)
        return rc >= 400 && dec.status == rc ? send_refusal(r, q, &dec) : rc;
    /* A chunked ingestion body the decision did not need is still held to the limit, whole,
     * so that an oversized one never reaches the backend. Content-Length was checked above. */
    if (q->route.endpoint == KA_EP_INGESTION && req.body == NULL &&
        apr_table_get(r->headers_in, "Transfer-Encoding") != NULL) {
        const char *data;
        apr_size_t len;
        if ((rc = keep_body(r, body_limit(dc), &data, &len)) != OK)
            return rc;
    }
    if (trailers_refused(r, q, &dec))
        return send_refusal(r, q, &dec);
    q->body = req.body;
    q->authorization = req.authorization;
    return accepted(r, q, &dec);
}

/* core's upgrade handler (h2c) answers 101 and turns this request into a new HTTP/2 stream
 * built from these very headers, which the module decides again: so they are left as the
 * client sent them. The same test as core_upgrade_handler's. */
static int will_switch_protocol(request_rec *r)
{
    conn_rec *c = r->connection;
    const char *upgrade = apr_table_get(r->headers_in, "Upgrade");
    const char *conn, *proto;
    apr_array_header_t *offers = NULL;

    if (c->master != NULL || upgrade == NULL || *upgrade == '\0')
        return 0;
    conn = apr_table_get(r->headers_in, "Connection");
    if (conn == NULL || !ap_find_token(r->pool, conn, "upgrade") ||
        ap_parse_token_list_strict(r->pool, upgrade, &offers, 0) != NULL || offers == NULL ||
        offers->nelts == 0)
        return 0;
    proto = ap_select_protocol(c, r, NULL, offers);
    return proto != NULL && strcmp(proto, ap_get_protocol(c)) != 0;
}

/* Whether a header named in Connection must still reach the backend: mod_proxy drops the
 * fields a client names there (hop-by-hop), and the identity, the credential and the workspace
 * the decision was made on are not the client's to drop. */
static int is_protected_name(const char *name, apr_size_t len)
{
    static const char *const names[] = {"Authorization", "Krenalis-Workspace"};
    char buf[32];

    if (len >= 14 && len < sizeof(buf)) {
        memcpy(buf, name, len);
        buf[len] = '\0';
        if (is_identity_header(buf))
            return 1;
    }
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (len == strlen(names[i]) && ap_cstr_casecmpn(name, names[i], len) == 0)
            return 1;
    return 0;
}

/* Removes the protected names from the Connection header's tokens, keeping the others. */
static void protect_from_connection(request_rec *r)
{
    const char *conn = apr_table_get(r->headers_in, "Connection");
    const char *p;
    char *out, *w;
    int changed = 0;

    if (conn == NULL)
        return;
    out = w = apr_palloc(r->pool, strlen(conn) + 1);
    for (p = conn; *p;) {
        const char *start, *end;
        while (*p == ',' || *p == ' ' || *p == '\t')
            p++;
        start = p;
        while (*p && *p != ',')
            p++;
        end = p;
        while (end > start && (end[-1] == ' ' || end[-1] == '\t'))
            end--;
        if (end == start)
            continue;
        if (is_protected_name(start, (apr_size_t)(end - start))) {
            changed = 1;
            continue;
        }
        if (w != out) {
            memcpy(w, ", ", 2);
            w += 2;
        }
        memcpy(w, start, (apr_size_t)(end - start));
        w += end - start;
    }
    *w = '\0';
    if (!changed)
        return;
    if (w == out)
        apr_table_unset(r->headers_in, "Connection");
    else
        apr_table_setn(r->headers_in, "Connection", out);
}

/* Whether an identity decided for another request (the target is outside the module's
 * places) fits the target's route: it is passed on only where its credential could be used. */
static int identity_fits(request_rec *r, const ka_dir_cfg *dc, const ka_identity *id)
{
    ka_route route;

    ka_classify(r->method, r->uri, dc->endpoint == UNSET ? KA_EP_AUTO : dc->endpoint, &route);
    switch (route.endpoint) {
    case KA_EP_ORGS:
        return id->type == KA_KEY_ORGS;
    case KA_EP_INGESTION:
        return (id->type == KA_KEY_WRITE && !route.noncanonical) ||
               (id->type == KA_KEY_API && id->conn[0] != '\0');
    case KA_EP_SETTINGS:
        return id->type == KA_KEY_WRITE && !route.noncanonical;
    default:
        return id->type == KA_KEY_API;
    }
}

/* Environment, forwarded headers and Authorization removal, also after internal redirects. */
static int ka_fixups(request_rec *r)
{
    ka_req *q = req_state(r);
    ka_decision dec;

    if (q == NULL || !q->authenticated)
        return DECLINED;
    /* An internal redirect or a subrequest shares the first request's headers, with the
     * identity headers forwarded for it: this request forwards its own, or none. */
    if (r->prev != NULL || r->main != NULL)
        drop_identity_headers(r, &r->headers_in);
    if (ap_get_module_config(r->request_config, &krenalis_auth_module) != q &&
        !identity_fits(r, ap_get_module_config(r->per_dir_config, &krenalis_auth_module), &q->id))
        return DECLINED;
    /* A body another module read before this phase may have brought trailers. */
    if (trailers_refused(r, q, &dec))
        return send_refusal(r, q, &dec);
    if (will_switch_protocol(r))
        return DECLINED;
    pass_identity(r, q);
    if (!q->pass_authorization)
        apr_table_unset(r->headers_in, "Authorization");
    protect_from_connection(r);
    return DECLINED;
}

static void ka_insert_filter(request_rec *r)
{
    ka_req *q = r->main ? NULL : response_state(r);
    if (q && q->cors)
        ap_add_output_filter(CORS_FILTER, q, r, r->connection);
}

/* A Require that denies an authenticated key: a JSON error like the module's own. An
 * ErrorDocument URL still wins (Apache redirects before it gets here). */
static void ka_insert_error_filter(request_rec *r)
{
    ka_req *q = req_state(r);
    char body[256];
    size_t len;

    if (q == NULL)
        return;
    /* ap_custom_response takes the text as is (it marks it as text itself). */
    if (q->authenticated && (r->status == HTTP_FORBIDDEN || r->status == HTTP_UNAUTHORIZED)) {
        len = ka_json_error(body, sizeof(body),
                            r->status == HTTP_FORBIDDEN ? "Forbidden" : "Unauthorized",
                            "the key is not allowed to access this resource");
        if (len > 0) {
            ap_custom_response(r, r->status, body);
            ap_add_output_filter(JSON_ERROR_FILTER, q, r, r->connection);
        }
    }
    q = r->main ? NULL : response_state(r);
    if (q && q->cors)
        ap_add_output_filter(CORS_FILTER, q, r, r->connection);
}

static apr_status_t json_error_filter(ap_filter_t *f, apr_bucket_brigade *bb)
{
    ap_set_content_type(f->r, "application/json; charset=utf-8");
    set_error_headers(f->r);
    ap_remove_output_filter(f);
    return ap_pass_brigade(f->next, bb);
}

/* WWW-Authenticate for 401s that Apache itself sends (a Require that denies). */
static int ka_note_auth_failure(request_rec *r, const char *auth_type)
{
    const ka_req *q = req_state(r);

    if (strcasecmp(auth_type, AUTH_TYPE_NAME) != 0)
        return DECLINED;
    apr_table_setn(r->err_headers_out, "WWW-Authenticate",
                   apr_psprintf(r->pool, "Bearer realm=\"%s\"%s", realm_of(r),
                                q && q->authenticated ? ", error=\"insufficient_scope\"" : ""));
    return OK;
}

static apr_status_t cors_filter(ap_filter_t *f, apr_bucket_brigade *bb)
{
    cors_apply(f->r, f->ctx);
    ap_remove_output_filter(f);
    return ap_pass_brigade(f->next, bb);
}

/* ---- authorization providers ---- */

/* The words of a Require line, checked once when the configuration is read. */
typedef struct {
    int n;
    const char **words;
} require_words;

static const char *parse_words(cmd_parms *cmd, const char *line, const void **parsed,
                               int (*valid)(const char *), const char *what)
{
    require_words *w = apr_pcalloc(cmd->pool, sizeof(*w));
    apr_array_header_t *a = apr_array_make(cmd->pool, 2, sizeof(const char *));
    const char *word;

    while (*(word = ap_getword_conf(cmd->pool, &line)) != '\0') {
        if (!valid(word))
            return apr_pstrcat(cmd->pool, what, ": '", word, "' is not valid", NULL);
        *(const char **)apr_array_push(a) = word;
    }
    if (a->nelts == 0)
        return apr_pstrcat(cmd->pool, what, " needs at least one value", NULL);
    w->n = a->nelts;
    w->words = (const char **)a->elts;
    *parsed = w;
    return NULL;
}

static int valid_key_type(const char *s)
{
    return !strcmp(s, "api") || !strcmp(s, "event-write") || !strcmp(s, "organizations");
}

static int valid_id_word(const char *s)
{
    return ka_id_valid(s, strlen(s));
}

static const char *parse_key_type(cmd_parms *cmd, const char *line, const void **parsed)
{
    return parse_words(cmd, line, parsed, valid_key_type, "Require krenalis-key-type");
}

static const char *parse_workspace(cmd_parms *cmd, const char *line, const void **parsed)
{
    return parse_words(cmd, line, parsed, valid_id_word, "Require krenalis-workspace");
}

static const char *parse_organization(cmd_parms *cmd, const char *line, const void **parsed)
{
    return parse_words(cmd, line, parsed, valid_id_word, "Require krenalis-organization");
}

static authz_status match_identity(request_rec *r, const void *parsed, int field)
{
    const require_words *w = parsed;
    const ka_req *q;
    const char *have;

    if (r->user == NULL)
        return AUTHZ_DENIED_NO_USER;
    q = req_state(r);
    if (q == NULL || !q->authenticated)
        return AUTHZ_DENIED;
    have = field == 0 ? ka_key_type_name(q->id.type) : field == 1 ? q->id.ws : q->id.org;
    for (int i = 0; i < w->n; i++)
        if (have[0] != '\0' && strcmp(have, w->words[i]) == 0)
            return AUTHZ_GRANTED;
    return AUTHZ_DENIED;
}

static authz_status check_key_type(request_rec *r, const char *line, const void *parsed)
{
    return match_identity(r, parsed, 0);
}

static authz_status check_workspace(request_rec *r, const char *line, const void *parsed)
{
    return match_identity(r, parsed, 1);
}

static authz_status check_organization(request_rec *r, const char *line, const void *parsed)
{
    return match_identity(r, parsed, 2);
}

static const authz_provider authz_key_type = {check_key_type, parse_key_type};
static const authz_provider authz_workspace = {check_workspace, parse_workspace};
static const authz_provider authz_organization = {check_organization, parse_organization};

static void register_hooks(apr_pool_t *p)
{
    ap_hook_check_config(ka_check_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_post_config(ka_post_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_child_init(ka_child_init, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_pre_connection(ka_pre_connection, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_post_read_request(strip_identity_headers, NULL, NULL, APR_HOOK_REALLY_FIRST);
    /* First: each check_user hook declines the AuthTypes not its own, so the order changes
     * nothing but cost, and ours answering first spares Krenalis locations the others' calls. */
    ap_hook_check_authn(ka_check_user, NULL, NULL, APR_HOOK_FIRST, AP_AUTH_INTERNAL_PER_CONF);
    ap_hook_fixups(ka_fixups, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_insert_filter(ka_insert_filter, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_insert_error_filter(ka_insert_error_filter, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_note_auth_failure(ka_note_auth_failure, NULL, NULL, APR_HOOK_MIDDLE);
    ap_register_input_filter(KEPT_BODY_FILTER, kept_body_filter, NULL, AP_FTYPE_PROTOCOL - 1);
    ap_register_output_filter(CORS_FILTER, cors_filter, NULL, AP_FTYPE_PROTOCOL - 1);
    ap_register_output_filter(JSON_ERROR_FILTER, json_error_filter, NULL, AP_FTYPE_PROTOCOL - 1);
    ap_register_auth_provider(p, AUTHZ_PROVIDER_GROUP, "krenalis-key-type", AUTHZ_PROVIDER_VERSION,
                              &authz_key_type, AP_AUTH_INTERNAL_PER_CONF);
    ap_register_auth_provider(p, AUTHZ_PROVIDER_GROUP, "krenalis-workspace", AUTHZ_PROVIDER_VERSION,
                              &authz_workspace, AP_AUTH_INTERNAL_PER_CONF);
    ap_register_auth_provider(p, AUTHZ_PROVIDER_GROUP, "krenalis-organization",
                              AUTHZ_PROVIDER_VERSION, &authz_organization,
                              AP_AUTH_INTERNAL_PER_CONF);
}

AP_DECLARE_MODULE(krenalis_auth) = {
    STANDARD20_MODULE_STUFF,
    create_dir_cfg, /* per-directory config */
    merge_dir_cfg,  /* merge per-directory */
    create_srv_cfg, /* per-server config */
    merge_srv_cfg,  /* merge per-server */
    ka_cmds,        /* directives */
    register_hooks  /* hooks */
};
