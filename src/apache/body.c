/* An ingestion body (SPEC §6.2): read whole into the request pool up to
 * KrenalisAuthMaxBodySize, put back in front of the backend byte for byte (the kept-body input
 * filter), inflated when gzip and scanned for writeKey and connectionId. */
#include "ka_private.h"

#include <string.h>

typedef struct {
    const char *data;
    apr_size_t len;
    int done;
} kept_body;

/* Serves the body the module read, then EOS: the backend sees exactly the client's bytes. */
apr_status_t ka_kept_body_filter(ap_filter_t *f, apr_bucket_brigade *bb, ap_input_mode_t mode,
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

int ka_keep_body(request_rec *r, apr_off_t limit, const char **data, apr_size_t *len)
{
    kept_body *k;
    int rc = read_body(r, limit, data, len);

    if (rc != OK)
        return rc;
    k = apr_pcalloc(r->pool, sizeof(*k));
    k->data = *data;
    k->len = *len;
    ap_add_input_filter_handle(ka_kept_body_filter_handle, k, r, r->connection);
    /* The body is now whole: the backend gets it with an exact length. */
    apr_table_unset(r->headers_in, "Transfer-Encoding");
    apr_table_setn(r->headers_in, "Content-Length", apr_off_t_toa(r->pool, (apr_off_t)*len));
    return OK;
}

int ka_capture_body(request_rec *r, apr_off_t limit, ka_body_fields *fields)
{
    const char *data = NULL;
    apr_size_t len = 0;
    int enc = ka_content_encoding(apr_table_get(r->headers_in, "Content-Encoding"));
    int rc = ka_keep_body(r, limit, &data, &len);

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

int ka_bad_content_length(request_rec *r, apr_off_t limit)
{
    const char *cl = apr_table_get(r->headers_in, "Content-Length");
    apr_off_t n;

    return cl && apr_strtoff(&n, cl, NULL, 10) == APR_SUCCESS && n > limit;
}
