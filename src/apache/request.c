/* The request hooks: client identity headers dropped (post_read_request), the decision
 * (check_user, SPEC §5, §6) and its re-check on internal redirects and subrequests, and the
 * identity handed to the backend (fixups, SPEC §8) with what keeps it exactly as decided
 * (trailers, Connection tokens, h2c upgrades). */
#include "ka_private.h"

#include "apr_lib.h"

#include <string.h>
#include <strings.h>

/* The module's record for r, or for the request it was redirected from or is part of. */
ka_req *ka_req_state(request_rec *r)
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
ka_req *ka_response_state(request_rec *r)
{
    request_rec *first = r;
    ka_req *q;

    while (first->prev)
        first = first->prev;
    q = ap_get_module_config(first->request_config, &krenalis_auth_module);
    return q ? q : ka_req_state(r);
}

/* One identity variable. With replace (some KRENALIS_* variable was set before), every
 * variable of name in any case goes first: apr_table_setn would keep the spelling found
 * ("krenalis_key_id"), which a CGI backend reads as another name; and a name the identity has no
 * value for stays removed, so the backend reads the identity's values and nothing else. */
static void set_env(apr_table_t *t, int replace, const char *name, const char *value)
{
    if (replace)
        apr_table_unset(t, name);
    if (value[0] != '\0')
        apr_table_addn(t, name, value);
}

/* One forwarded identity header (the client's were dropped before): none without a value. */
static void set_header(apr_table_t *t, const char *name, const char *value)
{
    if (value[0] != '\0')
        apr_table_setn(t, name, value);
}

/* Whether t has a variable named KRENALIS_* (any case, as tables compare names). */
static int has_krenalis_env(const apr_table_t *t)
{
    const apr_array_header_t *arr = apr_table_elts(t);
    const apr_table_entry_t *e = (const apr_table_entry_t *)arr->elts;

    for (int i = 0; i < arr->nelts; i++)
        if (e[i].key && strncasecmp(e[i].key, "KRENALIS_", 9) == 0)
            return 1;
    return 0;
}

/* Hands the identity to the backend (SPEC §8): environment, and headers when asked. */
static void pass_identity(request_rec *r, const ka_req *q)
{
    const ka_identity *id = &q->id;
    const char *type = ka_key_type_name(id->type);
    const char *key_id =
        id->type != KA_KEY_ORGS ? id->key_id : ""; /* an organizations key has none */
    /* Values set before (SetEnvIf, a redirect's first pass) are replaced; with none there,
     * adding skips a search of the table per name (the names share their first four letters,
     * the table's index). */
    int replace = has_krenalis_env(r->subprocess_env);
    apr_table_t *env = r->subprocess_env;

    set_env(env, replace, "KRENALIS_KEY_TYPE", type);
    set_env(env, replace, "KRENALIS_ORGANIZATION", id->org);
    set_env(env, replace, "KRENALIS_WORKSPACE", id->ws);
    set_env(env, replace, "KRENALIS_CONNECTION", id->conn);
    set_env(env, replace, "KRENALIS_KEY_ID", key_id);
    if (q->forward_headers) {
        set_header(r->headers_in, "Krenalis-Auth-Key-Type", type);
        set_header(r->headers_in, "Krenalis-Auth-Organization", id->org);
        set_header(r->headers_in, "Krenalis-Auth-Workspace", id->ws);
        set_header(r->headers_in, "Krenalis-Auth-Connection", id->conn);
        set_header(r->headers_in, "Krenalis-Auth-Key-Id", key_id);
    }
}

static int is_krenalis(request_rec *r)
{
    const char *t = ap_auth_type(r);
    return t && strcasecmp(t, AUTH_TYPE_NAME) == 0;
}

#define IDENTITY_PREFIX "krenalis-auth-"
#define IDENTITY_PREFIX_LEN (sizeof(IDENTITY_PREFIX) - 1)

/* Reads at most IDENTITY_PREFIX_LEN characters of name, stopping at the first that differs. */
static int is_identity_header(const char *name)
{
    static const char prefix[] = IDENTITY_PREFIX;

    for (size_t j = 0; j < IDENTITY_PREFIX_LEN; j++) {
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
/* HTTP/2 streams (secondary connections, each with a conn_config of its own that lives one
 * request) share their primary connection's memo: made here, where the server allows h2 or
 * h2c, before the first stream. */
int ka_pre_connection(conn_rec *c, void *csd)
{
    if (c->master == NULL && (ap_is_allowed_protocol(c, NULL, c->base_server, "h2c") ||
                              ap_is_allowed_protocol(c, NULL, c->base_server, "h2")))
        ka_memo_share(c);
    return DECLINED;
}

int ka_strip_identity_headers(request_rec *r)
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

/* The decision over the server's store, with the connection memo (store.c). */
typedef struct {
    request_rec *r;
    ka_handle *h;
    apr_off_t limit;
    ka_req *q;     /* the request's record: its decisions are timed into q->mr */
    int too_large; /* Content-Length over the limit: the body is not read */
} decide_ctx;

static ka_verdict decide_once(void *arg, const ka_request *req, ka_decision *dec)
{
    const decide_ctx *d = arg;
    ka_metrics_req *mr = &d->q->mr;
    uint64_t t0;
    ka_verdict v;

    /* KrenalisAuthMetrics Off: no clock read, no memo hit counted. */
    if (mr->off)
        return ka_store_decide(d->h, d->r, KA_DECIDE_MEMO, req, dec, NULL);
    t0 = ka_metrics_now_ns();
    v = ka_store_decide(d->h, d->r, KA_DECIDE_MEMO | KA_DECIDE_COUNT, req, dec, NULL);
    mr->decide_ns += ka_metrics_now_ns() - t0; /* krenalis_auth_decision_seconds */
    mr->timed = 1;
    return v;
}

static int read_ingestion_body(void *arg, ka_body_fields *fields)
{
    const decide_ctx *d = arg;
    return d->too_large ? HTTP_REQUEST_ENTITY_TOO_LARGE : ka_capture_body(d->r, d->limit, fields);
}

/* The body of a request whose body nobody read (ka_decide_with_body zeroes the fields). */
static int read_no_body(void *arg, ka_body_fields *fields)
{
    return OK;
}

/* Decides, reading the body when the decision needs it (ka_decide_with_body). No transaction
 * stays open while a slow client sends its body. OK with dec decided, or the HTTP status of a
 * body that could not be read. */
static int run_decision(request_rec *r, ka_srv_cfg *sc, const ka_dir_cfg *dc, ka_req *q,
                        ka_request *req, ka_decision *dec, int too_large)
{
    decide_ctx d = {r, sc->handle, ka_cfg_max_body(dc), q, too_large};
    ka_body_fields fields;
    int rc;

    if (req->route.endpoint != KA_EP_ORGS && ka_store_stale(sc->handle, sc->max_stale, r)) {
        ka_decision_unavailable(dec);
        return OK;
    }
    /* On the stack: only a decision that read the body keeps its fields (for redirects), so a
     * request that reads none adds nothing to its pool. */
    rc = ka_decide_with_body(req, decide_once, &d, read_ingestion_body, &d, &fields, dec);
    if (req->body == &fields)
        req->body = apr_pmemdup(r->pool, &fields, sizeof(fields));
    return rc;
}

/* The path the backend receives as the client sent it: with mod_proxy's nocanon, not r->uri
 * (decoded and normalized, as r->parsed_uri.path is too) but the path of the request line;
 * NULL otherwise. */
static const char *path_as_sent(request_rec *r)
{
    apr_uri_t u;

    if (!apr_table_get(r->notes, "proxy-nocanon") || r->unparsed_uri == NULL ||
        apr_uri_parse(r->pool, r->unparsed_uri, &u) != APR_SUCCESS)
        return NULL;
    return u.path;
}

/* The module's record for a request: its route and CORS answer from its own path and place. */
static ka_req *req_begin(request_rec *r, const ka_dir_cfg *dc)
{
    ka_req *q = apr_pcalloc(r->pool, sizeof(*q));

    ap_set_module_config(r->request_config, &krenalis_auth_module, q);
    q->mr.off = !ka_cfg_metrics(dc);
    ka_classify_sent(r->method, r->uri, path_as_sent(r), ka_cfg_endpoint(dc), &q->route);
    q->forward_headers = ka_cfg_forward_headers(dc);
    q->pass_authorization = ka_cfg_pass_authorization(dc);
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
    req->ws_policy = ka_cfg_ws_policy(dc);
    req->orgs_key = sc->proc ? sc->proc->orgs_key : NULL;
}

static int accepted(request_rec *r, ka_req *q, const ka_decision *dec)
{
    ka_metrics_note_accepted(&q->mr, q->route.endpoint, dec->id.type);
    q->authenticated = 1;
    q->id = dec->id;
    r->user = q->id.key_id; /* q lives as long as r */
    ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r, KA_LOGNO(00008) "authenticated %s key %s",
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
    ka_req *q = req_begin(r, dc);
    decide_ctx d = {r, sc->handle, ka_cfg_max_body(dc), q};
    ka_body_fields no_body; /* a body nobody read: no writeKey, no connectionId */
    ka_request req;
    ka_decision dec;

    if (r->prev != NULL) {
        /* The client asked for the first URL: its CORS answer stands. */
        const ka_req *o = ka_response_state(r->prev);
        q->cors = o->cors;
        q->allow_origin = o->allow_origin;
    }
    request_inputs(r, sc, dc, q, &req);
    req.authorization = first->authorization;
    req.body = first->body;
    q->body = first->body;
    q->authorization = first->authorization;
    ka_decide_with_body(&req, decide_once, &d, read_no_body, NULL, &no_body, &dec);
    if (dec.verdict == KA_VERDICT_ACCEPT)
        return accepted(r, q, &dec);
    ap_log_rerror(
        APLOG_MARK, APLOG_INFO, 0, r,
        KA_LOGNO(00009) "refused for the target of an internal redirect or subrequest: %d %s",
        ka_verdict_status(&dec), dec.code ? dec.code : "");
    if (r->main != NULL || dec.verdict == KA_VERDICT_NEED_BODY)
        return ka_verdict_status(&dec) >= 400 ? ka_verdict_status(&dec)
                                              : HTTP_INTERNAL_SERVER_ERROR;
    return ka_send_refusal(r, q, &dec);
}

/* A body refused before or while it was read (413, or an error reading it): the status rc. */
static int body_refused(request_rec *r, ka_req *q, int rc)
{
    ka_metrics_note_refused(r, &q->mr, q->route.endpoint,
                            rc == HTTP_REQUEST_ENTITY_TOO_LARGE ? KA_REFUSAL_BODY_TOO_LARGE
                                                                : KA_REFUSAL_BODY_UNREADABLE);
    return rc;
}

int ka_check_user(request_rec *r)
{
    ka_srv_cfg *sc = ap_get_module_config(r->server->module_config, &krenalis_auth_module);
    ka_dir_cfg *dc = ap_get_module_config(r->per_dir_config, &krenalis_auth_module);
    ka_req *q = ka_req_state(r);
    ka_request req;
    ka_decision dec;
    int rc, too_large;

    if (!is_krenalis(r))
        return DECLINED;
    r->ap_auth_type = AUTH_TYPE_NAME;
    if (q && q->authenticated)
        return recheck_redirect(r, sc, dc, q);
    q = req_begin(r, dc);
    if (q->cors && q->route.preflight_candidate && apr_table_get(r->headers_in, "Origin") &&
        apr_table_get(r->headers_in, "Access-Control-Request-Method"))
        return ka_send_preflight(r, q);
    /* SPEC §6: the rows before the 413 one answer first, so the credential is decided; the
     * body is never read (a decision that needs it gets 413), and no connection waits for it. */
    too_large =
        q->route.endpoint == KA_EP_INGESTION && ka_bad_content_length(r, ka_cfg_max_body(dc));
    request_inputs(r, sc, dc, q, &req);
    if ((rc = run_decision(r, sc, dc, q, &req, &dec, too_large)) != OK)
        return body_refused(r, q, rc);
    if (dec.verdict != KA_VERDICT_ACCEPT) {
        if (too_large) /* else httpd would read the whole body to keep the connection */
            r->connection->keepalive = AP_CONN_CLOSE;
        return ka_send_refusal(r, q, &dec);
    }
    if (too_large)
        return body_refused(r, q, HTTP_REQUEST_ENTITY_TOO_LARGE);
    /* A chunked ingestion body the decision did not need is still held to the limit, whole,
     * so that an oversized one never reaches the backend. Content-Length was checked above. */
    if (q->route.endpoint == KA_EP_INGESTION && req.body == NULL &&
        apr_table_get(r->headers_in, "Transfer-Encoding") != NULL) {
        const char *data;
        apr_size_t len;
        if ((rc = ka_keep_body(r, ka_cfg_max_body(dc), &data, &len)) != OK)
            return body_refused(r, q, rc);
    }
    if (trailers_refused(r, q, &dec))
        return ka_send_refusal(r, q, &dec);
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

    /* The token is not NUL-terminated, but is_identity_header stays within its prefix. */
    if (len >= IDENTITY_PREFIX_LEN && is_identity_header(name))
        return 1;
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (len == strlen(names[i]) && ap_cstr_casecmpn(name, names[i], len) == 0)
            return 1;
    return 0;
}

/* Whether c ends a Connection token: mod_proxy (ap_proxy_clear_connection) ends one at a comma
 * or at any white space, so "keep-alive Authorization" names Authorization to it. */
static int is_token_end(char c)
{
    return c == ',' || apr_isspace(c);
}

typedef struct {
    apr_pool_t *pool;
    const char *joined;
    int fields;
} conn_fields;

static int join_field(void *rec, const char *key, const char *value)
{
    conn_fields *cf = rec;

    cf->joined = cf->fields++ ? apr_pstrcat(cf->pool, cf->joined, ", ", value, NULL) : value;
    return 1;
}

/* Removes the protected names from the Connection header's tokens, keeping the others. Every
 * Connection field counts: MergeTrailers On appends a trailer as a field of its own
 * (apr_table_overlay), and mod_proxy drops the names of each. The result is one field. */
static void protect_from_connection(request_rec *r)
{
    conn_fields cf = {r->pool, NULL, 0};
    const char *conn, *p;
    char *out, *w;
    int changed;

    apr_table_do(join_field, &cf, r->headers_in, "Connection", NULL);
    if ((conn = cf.joined) == NULL)
        return;
    changed = cf.fields > 1;
    out = w = apr_palloc(r->pool, strlen(conn) + 1);
    for (p = conn; *p;) {
        const char *start, *end;
        while (*p && is_token_end(*p))
            p++;
        start = p;
        while (*p && !is_token_end(*p))
            p++;
        end = p;
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

    ka_classify_sent(r->method, r->uri, path_as_sent(r), ka_cfg_endpoint(dc), &route);
    switch (route.endpoint) {
    case KA_EP_ORGS:
        return id->type == KA_KEY_ORGS && !route.noncanonical;
    case KA_EP_INGESTION:
        return (id->type == KA_KEY_WRITE && !route.noncanonical) ||
               (id->type == KA_KEY_API && id->conn[0] != '\0');
    case KA_EP_SETTINGS:
        return id->type == KA_KEY_WRITE && !route.noncanonical;
    default:
        return id->type == KA_KEY_API;
    }
}

/* Whether name is HTTP_AUTHORIZATION behind any number of REDIRECT_ (any case, as tables
 * compare names). */
static int is_authorization_env(const char *name)
{
    while (strncasecmp(name, "REDIRECT_", 9) == 0)
        name += 9;
    return strcasecmp(name, "HTTP_AUTHORIZATION") == 0;
}

/* KrenalisAuthPassAuthorization Off: the header, and the copies a configuration made of it
 * under its CGI name (SetEnvIf Authorization "(.*)" HTTP_AUTHORIZATION=$1, mod_rewrite's
 * E=HTTP_AUTHORIZATION:%{HTTP:Authorization}), which CGI and FastCGI backends read as it. */
static void drop_authorization(request_rec *r)
{
    const apr_array_header_t *arr = apr_table_elts(r->subprocess_env);
    const apr_table_entry_t *e = (const apr_table_entry_t *)arr->elts;

    apr_table_unset(r->headers_in, "Authorization");
    /* apr_table_unset removes every entry of the name, from here on, in place. */
    for (int i = 0; i < arr->nelts;)
        if (e[i].key && is_authorization_env(e[i].key))
            apr_table_unset(r->subprocess_env, e[i].key);
        else
            i++;
}

/* A request Apache let past its access checks: a 401 or 403 sent for it later (a backend's
 * under ProxyErrorOverride, a handler's) is not a Require line denying its key. */
int ka_mark_authorized(request_rec *r)
{
    ka_req *q = ap_get_module_config(r->request_config, &krenalis_auth_module);

    if (q)
        q->authorized = 1;
    return DECLINED;
}

/* Environment, forwarded headers and Authorization removal, also after internal redirects. */
int ka_fixups(request_rec *r)
{
    ka_req *q = ka_req_state(r);
    ka_decision dec;

    if (q == NULL || !q->authenticated)
        return DECLINED;
    /* An internal redirect or a subrequest shares the first request's headers, with the
     * identity headers forwarded for it: this request forwards its own, or none. */
    if (r->prev != NULL || r->main != NULL)
        drop_identity_headers(r, &r->headers_in);
    if (ap_get_module_config(r->request_config, &krenalis_auth_module) != q &&
        !identity_fits(r, ap_get_module_config(r->per_dir_config, &krenalis_auth_module), &q->id)) {
        /* No identity here, but the credential stays where it was sent: a request a Require
         * provider denied never reached this phase to remove it. */
        if (!q->pass_authorization)
            drop_authorization(r);
        return DECLINED;
    }
    /* A body another module read before this phase may have brought trailers. */
    if (trailers_refused(r, q, &dec))
        return ka_send_refusal(r, q, &dec);
    if (will_switch_protocol(r))
        return DECLINED;
    pass_identity(r, q);
    if (!q->pass_authorization)
        drop_authorization(r);
    protect_from_connection(r);
    return DECLINED;
}
