/* What the module answers itself: refusals with the Krenalis JSON errors (SPEC §7), CORS
 * preflights and the CORS headers of ingestion and settings responses (SPEC §9), JSON errors
 * for a Require that denies, and WWW-Authenticate. */
#include "ka_private.h"

#include <string.h>

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

typedef struct {
    apr_pool_t *pool;
    const char *out; /* the tokens kept so far, NULL for none */
} vary_tokens;

/* Adds the tokens of one Vary field to v->out, but Origin and those already there. */
static int vary_add(void *rec, const char *key, const char *value)
{
    vary_tokens *v = rec;
    char *copy = apr_pstrdup(v->pool, value), *tok, *state;

    for (tok = apr_strtok(copy, ", \t", &state); tok; tok = apr_strtok(NULL, ", \t", &state)) {
        if (strcasecmp(tok, "Origin") == 0 || (v->out && ap_find_token(v->pool, v->out, tok)))
            continue;
        v->out = v->out ? apr_pstrcat(v->pool, v->out, ", ", tok, NULL) : tok;
    }
    return 1;
}

/* Vary with Origin exactly once, keeping the other tokens the response already varies on, from
 * every Vary field (a proxied backend's repeated fields are entries of their own). */
static const char *vary_with_origin(request_rec *r)
{
    vary_tokens v = {r->pool, NULL};

    apr_table_do(vary_add, &v, r->headers_out, "Vary", NULL);
    apr_table_do(vary_add, &v, r->err_headers_out, "Vary", NULL);
    return v.out ? apr_pstrcat(r->pool, v.out, ", Origin", NULL) : "Origin";
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

/* SPEC §7; the one place a verdict becomes an HTTP status (ka_verdict_status). */
int ka_send_refusal(request_rec *r, ka_req *q, const ka_decision *dec)
{
    char body[512];
    size_t len = ka_json_error(body, sizeof(body), dec->code, dec->message);
    int status = ka_verdict_status(dec); /* the one mapping of a verdict to HTTP */

    r->status = status;
    r->status_line = NULL;
    ap_set_content_type(r, "application/json; charset=utf-8");
    ap_set_content_length(r, (apr_off_t)len);
    set_error_headers(r);
    if (status == HTTP_UNAUTHORIZED)
        apr_table_setn(r->err_headers_out, "WWW-Authenticate",
                       apr_psprintf(r->pool, "Bearer realm=\"%s\"%s", realm_of(r),
                                    dec->token_presented ? ", error=\"invalid_token\"" : ""));
    if (q->cors)
        cors_apply(r, q);
    ka_metrics_note_refused(r, &q->mr, q->route.endpoint, dec->reason);
    ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, KA_LOGNO(00010) "refused: %d %s (%s)", status,
                  dec->code, ka_refusal_name(dec->reason));
    ap_rwrite(body, (int)len, r);
    return DONE;
}

int ka_send_preflight(request_rec *r, ka_req *q)
{
    int settings = q->route.endpoint == KA_EP_SETTINGS;

    ka_metrics_note_preflight(&q->mr);
    r->status = HTTP_NO_CONTENT;
    cors_apply(r, q);
    apr_table_setn(r->err_headers_out, "Access-Control-Allow-Methods", settings ? "GET" : "POST");
    apr_table_setn(r->err_headers_out, "Access-Control-Allow-Headers",
                   "Authorization, Content-Type");
    apr_table_setn(r->err_headers_out, "Access-Control-Max-Age", settings ? "900" : "86400");
    return DONE;
}

void ka_insert_filter(request_rec *r)
{
    ka_req *q = r->main ? NULL : ka_response_state(r);
    if (q && q->cors)
        ap_add_output_filter_handle(ka_cors_filter_handle, q, r, r->connection);
}

/* A Require that denies an authenticated key: a JSON error like the module's own. An
 * ErrorDocument URL still wins (Apache redirects before it gets here). */
void ka_insert_error_filter(request_rec *r)
{
    ka_req *q = ka_req_state(r);
    char body[256];
    size_t len;

    if (q == NULL)
        return;
    /* ap_custom_response takes the text as is (it marks it as text itself). */
    if (q->authenticated && !q->authorized &&
        (r->status == HTTP_FORBIDDEN || r->status == HTTP_UNAUTHORIZED)) {
        ka_metrics_note_refused(r, &q->mr, q->route.endpoint, KA_REFUSAL_NOT_ALLOWED);
        len = ka_json_error(body, sizeof(body),
                            r->status == HTTP_FORBIDDEN ? "Forbidden" : "Unauthorized",
                            "the key is not allowed to access this resource");
        if (len > 0) {
            ap_custom_response(r, r->status, body);
            ap_add_output_filter_handle(ka_json_error_filter_handle, q, r, r->connection);
        }
    }
    q = r->main ? NULL : ka_response_state(r);
    if (q && q->cors)
        ap_add_output_filter_handle(ka_cors_filter_handle, q, r, r->connection);
}

apr_status_t ka_json_error_filter(ap_filter_t *f, apr_bucket_brigade *bb)
{
    ap_set_content_type(f->r, "application/json; charset=utf-8");
    set_error_headers(f->r);
    ap_remove_output_filter(f);
    return ap_pass_brigade(f->next, bb);
}

/* WWW-Authenticate for 401s that Apache itself sends (a Require that denies). */
int ka_note_auth_failure(request_rec *r, const char *auth_type)
{
    const ka_req *q = ka_req_state(r);

    if (strcasecmp(auth_type, AUTH_TYPE_NAME) != 0)
        return DECLINED;
    apr_table_setn(r->err_headers_out, "WWW-Authenticate",
                   apr_psprintf(r->pool, "Bearer realm=\"%s\"%s", realm_of(r),
                                q && q->authenticated ? ", error=\"insufficient_scope\"" : ""));
    return OK;
}

apr_status_t ka_cors_filter(ap_filter_t *f, apr_bucket_brigade *bb)
{
    cors_apply(f->r, f->ctx);
    ap_remove_output_filter(f);
    return ap_pass_brigade(f->next, bb);
}
