/* The private header of the Apache glue, as ssl_private.h is mod_ssl's: the module's records,
 * its effective configuration and what each file of src/apache/ gives the others.
 *
 *   mod_krenalis_auth.c   configuration, directives, start-up checks, hook registration
 *   src/apache/handoff.c  the organizations key: start-up check, graceful-restart hand-off
 *   src/apache/store.c    the per-child store handles, the read-transaction pool, the SIGBUS
 *                         guard and the connection memo: one decision over the store
 *   src/apache/request.c  the request hooks: identity headers, check_user, fixups
 *   src/apache/body.c     reading, keeping and scanning an ingestion body
 *   src/apache/response.c refusals, preflights, CORS, error filters, WWW-Authenticate
 *   src/apache/authz.c    the Require providers
 *
 * docs/internals.md follows a request through them. Every file logs as the module
 * (APLOG_USE_MODULE below), so a per-module LogLevel covers it, with a tag of its own per
 * call site: KA_LOGNO(nnnnn), "KAnnnnn: ", numbers unique across the module. */
#ifndef KA_PRIVATE_H
#define KA_PRIVATE_H

#include "httpd.h"
#include "http_config.h"
#include "http_core.h"
#include "http_log.h"
#include "http_protocol.h"
#include "http_request.h"
#include "mod_auth.h"
#include "util_filter.h"

#include "apr_hash.h"
#include "apr_strings.h"

#include "../body.h"
#include "../cors.h"
#include "../decide.h"
#include "../json.h"
#include "../keystore.h"
#include "../names.h"

#include "metrics.h"

APLOG_USE_MODULE(krenalis_auth);

/* The project's own tag of a log call site (never httpd's AH numbers). */
#define KA_LOGNO(n) "KA" #n ": "

#define AUTH_TYPE_NAME "Krenalis"
#define KEPT_BODY_FILTER "KRENALIS_KEPT_BODY"
#define CORS_FILTER "KRENALIS_CORS"
#define JSON_ERROR_FILTER "KRENALIS_JSON_ERROR"

/* The module's filters as registered (mod_krenalis_auth.c, once per process and load, like
 * httpd's own ap_http_input_filter_handle): added by handle, with no look-up of the name on
 * each request. */
extern ap_filter_rec_t *ka_kept_body_filter_handle;
extern ap_filter_rec_t *ka_cors_filter_handle;
extern ap_filter_rec_t *ka_json_error_filter_handle;

/* ---- records (mod_krenalis_auth.c) ---- */

/* One key store as a child process uses it (store.c). */
typedef struct ka_handle ka_handle;

/* Per-process state shared by every server record, made once per configuration load. */
typedef struct {
    const char *orgs_key;        /* NULL: the Organizations API stays closed */
    apr_array_header_t *handles; /* ka_handle *, one per store directory and secret */
    ka_metrics *metrics;         /* the counters (metrics.c); NULL: nothing is counted */
} ka_proc;

typedef struct {
    const char *store_dir;   /* KrenalisAuthKeyStore */
    const char *secret_path; /* KrenalisAuthKeyStoreSecret; see ka_cfg_secret_path */
    const char *orgs_env;    /* main server only; see ka_cfg_orgs_env */
    int max_stale;           /* KrenalisAuthMaxStaleness seconds, 0 off, KA_UNSET unset (off) */
    int cache_entries;       /* KrenalisAuthLookupCache (main server), 0 off, KA_UNSET default */
    ka_handle *handle;       /* the store's, after post_config (NULL: no store) */
    ka_proc *proc;
} ka_srv_cfg;

/* A directory's settings as written; ka_cfg_* read them with their defaults. */
typedef struct {
    int endpoint;  /* ka_endpoint */
    int ws_policy; /* ka_ws_policy */
    int forward_headers;
    int pass_authorization;
    apr_off_t max_body;
    int metrics; /* KrenalisAuthMetrics */
    int cors_set;
    apr_array_header_t *cors_origins; /* NULL: any origin ("*") */
} ka_dir_cfg;

#define KA_UNSET (-1)              /* a directory setting not written (create_dir_cfg) */
#define KA_DEFAULT_MAX_BODY 512000 /* KrenalisAuthMaxBodySize */

/* The effective value of each directive: the defaults of SPEC §5 resolved in one place (here,
 * inline: the request path reads them on every request). */
static inline ka_endpoint ka_cfg_endpoint(const ka_dir_cfg *dc)
{
    return dc->endpoint == KA_UNSET ? KA_EP_AUTO : (ka_endpoint)dc->endpoint;
}

static inline ka_ws_policy ka_cfg_ws_policy(const ka_dir_cfg *dc)
{
    return dc->ws_policy == KA_UNSET ? KA_WS_OPTIONAL : (ka_ws_policy)dc->ws_policy;
}

static inline int ka_cfg_forward_headers(const ka_dir_cfg *dc)
{
    return dc->forward_headers == KA_UNSET ? 0 : dc->forward_headers;
}

static inline int ka_cfg_pass_authorization(const ka_dir_cfg *dc)
{
    return dc->pass_authorization == KA_UNSET ? 1 : dc->pass_authorization;
}

static inline apr_off_t ka_cfg_max_body(const ka_dir_cfg *dc)
{
    return dc->max_body == KA_UNSET ? KA_DEFAULT_MAX_BODY : dc->max_body;
}

static inline int ka_cfg_metrics(const ka_dir_cfg *dc)
{
    return dc->metrics == KA_UNSET ? 1 : dc->metrics;
}

/* The entries of each store's look-up cache, 0 for none (the main server's setting). */
unsigned ka_cfg_cache_entries(server_rec *s);
/* The environment variable of the organizations key (the main server's setting). */
const char *ka_cfg_orgs_env(server_rec *s);
/* The store secret of a server with a store: its own, else DIR/secret. */
const char *ka_cfg_secret_path(apr_pool_t *p, const ka_srv_cfg *c);

/* What the module decided for one request (request.c). */
typedef struct {
    ka_route route;
    int cors;
    const char *allow_origin; /* Access-Control-Allow-Origin value, NULL when not allowed */
    int authenticated;
    int authorized; /* past the access checks: a later 401/403 is not a Require's denial */
    ka_identity id;
    int forward_headers;
    int pass_authorization;
    int env_done;
    const ka_body_fields *body; /* the body the decision read (NULL: none), for redirects */
    const char *authorization;  /* the value decided on: KrenalisAuthPassAuthorization Off
                                   removes it from the headers an internal redirect shares */
    ka_metrics_req mr;          /* what the request counts when it is logged (metrics.c) */
} ka_req;

/* ---- the organizations key (handoff.c) ---- */

/* check_config: a malformed key stops the start; a `-k graceful|restart` command hands the
 * key it sees to the running server. OK or !OK. */
int ka_orgs_key_check_config(apr_pool_t *ptemp, server_rec *s);
/* post_config: the key this configuration load uses (NULL: none), from the environment or a
 * hand-off. */
const char *ka_orgs_key_load(apr_pool_t *pconf, apr_pool_t *ptemp, server_rec *s);

/* ---- the store (store.c) ---- */

/* KrenalisAuthMaxStaleness (SPEC §11.2): 1 (logged) when h is a mirrored store its mirror has
 * not confirmed current for more than max_stale seconds (0 or less: never). */
int ka_store_stale(ka_handle *h, int max_stale, request_rec *r);

/* A handle for the store in dir with the secret read from secret_path (as root, before the
 * fork: the secret is kept in memory left out of core dumps). NULL with a message. */
ka_handle *ka_handle_make(apr_pool_t *p, const char *dir, const char *secret_path, char *err,
                          apr_size_t errlen);
/* The handles of a configuration load: proc->handles, secrets wiped with pconf. */
void ka_handles_init(apr_pool_t *pconf, ka_proc *proc);
/* The handle of a server's store, one per store directory however spelled (byname: ptemp's
 * index), with a look-up cache of cache_entries (0: none). NULL when the secret cannot be read. */
ka_handle *ka_handle_for(apr_pool_t *pconf, apr_hash_t *byname, ka_proc *proc, const char *dir,
                         const char *secret_path, unsigned cache_entries, server_rec *s);
/* Gives h a look-up cache of entries in memory every child will share (made before the fork,
 * freed with p). APR_SUCCESS, or why not (h then has none). */
apr_status_t ka_handle_cache_make(ka_handle *h, apr_pool_t *p, unsigned entries);
/* child_init: the SIGBUS guard, then each handle's locks and environment; closed with
 * pchild. */
void ka_handles_child_init(apr_pool_t *pchild, server_rec *s, ka_proc *proc);
/* One handle alone (the bench): its locks and environment. APR_SUCCESS, or the status of a
 * lock that could not be made (the handle then answers 503). */
apr_status_t ka_handle_child_init(ka_handle *h, apr_pool_t *pchild, server_rec *s);
void ka_handle_close(ka_handle *h);
/* The handle's open store (NULL while closed): the bench times the library's steps on it. */
const ka_store *ka_handle_store(const ka_handle *h);

/* ka_store_decide's flags. */
#define KA_DECIDE_MEMO 1u  /* the connection's memo may answer and keeps what was accepted */
#define KA_DECIDE_COUNT 2u /* a memo hit is counted (KrenalisAuthMetrics On) */

/* One pass of the decision tables over h's store, as a request makes it: the read transaction
 * from the child's pool on the first look-up, under the SIGBUS guard. flags: KA_DECIDE_*.
 * began (may be NULL): set to whether a transaction was begun. h may be NULL (no store:
 * 503). */
ka_verdict ka_store_decide(ka_handle *h, request_rec *r, unsigned flags, const ka_request *req,
                           ka_decision *dec, int *began);
/* Gives c a memo its HTTP/2 streams share, with a lock (docs/operations.md, "Connection
 * memo"): called on c's own thread before its first stream, because the streams' threads may
 * not allocate from its pool. */
void ka_memo_share(conn_rec *c);
/* pre_connection (request.c): ka_memo_share where the server allows HTTP/2. */
int ka_pre_connection(conn_rec *c, void *csd);
/* A read transaction taken from the pool and put back, as a decision does (the bench). */
ka_store_status ka_store_txn_cycle(ka_handle *h, request_rec *r);

/* ---- the body (body.c) ---- */

apr_status_t ka_kept_body_filter(ap_filter_t *f, apr_bucket_brigade *bb, ap_input_mode_t mode,
                                 apr_read_type_e block, apr_off_t readbytes);
/* Reads the body (up to limit bytes) and puts it back in front of the backend; OK or an HTTP
 * status. */
int ka_keep_body(request_rec *r, apr_off_t limit, const char **data, apr_size_t *len);
/* Reads, keeps and scans the ingestion body; OK or an HTTP status. */
int ka_capture_body(request_rec *r, apr_off_t limit, ka_body_fields *fields);
/* A Content-Length over limit. */
int ka_bad_content_length(request_rec *r, apr_off_t limit);

/* ---- requests (request.c) ---- */

int ka_strip_identity_headers(request_rec *r);
int ka_check_user(request_rec *r);
int ka_fixups(request_rec *r);
/* fixups, before any other (all of them run): marks the request's record as let through by
 * the access checks. DECLINED. */
int ka_mark_authorized(request_rec *r);
/* The module's record for r, or for the request it was redirected from or is part of. */
ka_req *ka_req_state(request_rec *r);
/* The record whose route answers for the response's CORS headers. */
ka_req *ka_response_state(request_rec *r);

/* ---- responses (response.c) ---- */

/* Sends a refusal as Krenalis would (SPEC §7) and ends the request: DONE. */
int ka_send_refusal(request_rec *r, ka_req *q, const ka_decision *dec);
/* A CORS preflight, answered without a credential and without the backend (SPEC §9). */
int ka_send_preflight(request_rec *r, ka_req *q);
void ka_insert_filter(request_rec *r);
void ka_insert_error_filter(request_rec *r);
int ka_note_auth_failure(request_rec *r, const char *auth_type);
apr_status_t ka_cors_filter(ap_filter_t *f, apr_bucket_brigade *bb);
apr_status_t ka_json_error_filter(ap_filter_t *f, apr_bucket_brigade *bb);

/* The store's gauges for the metrics, after the checks a request makes (replaced: reopened;
 * closed: opened): s's last txnid and, for a mirrored store, the mirror's version and when it
 * last confirmed the store current (the mtime of DIR/mirror-confirmed). 1, or 0 (and none of
 * them) when the store cannot be read. */
int ka_handle_gauges(ka_handle *h, request_rec *r, ka_metrics_snapshot *s);

/* ---- metrics (metrics.c, over src/metrics.c; SPEC §12) ---- */

/* SetHandler krenalis-auth-metrics */
int ka_metrics_handler(request_rec *r);
/* mod_status's section (its optional status_hook) */
int ka_metrics_status_hook(request_rec *r, int flags);
/* Counts a request the module answered for, with the status sent. */
int ka_metrics_log_transaction(request_rec *r);

/* ---- Require providers (authz.c) ---- */

extern const authz_provider ka_authz_key_type, ka_authz_workspace, ka_authz_organization;

#endif
