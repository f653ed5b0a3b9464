/* gzip inflation of ingestion bodies, bounded by the configured limit. */
#include "body.h"

#include <string.h>
#include <strings.h>
#include <zlib.h>

static void zfree_noop(void *opaque, void *ptr)
{
    (void)opaque;
    (void)ptr;
}

int ka_gunzip(const void *in, size_t inlen, void *out, size_t cap, size_t *outlen,
              ka_zalloc_fn zalloc, void *opaque)
{
    z_stream zs;
    int rc;

    memset(&zs, 0, sizeof(zs));
    zs.zalloc = zalloc;
    zs.zfree = zalloc ? zfree_noop : Z_NULL; /* pool memory goes with the request */
    zs.opaque = opaque;
    if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK) /* 16: gzip wrapper only */
        return KA_BODY_BAD;
    zs.next_in = (Bytef *)in;
    zs.avail_in = (uInt)inlen;
    zs.next_out = out;
    zs.avail_out = (uInt)cap;
    rc = inflate(&zs, Z_FINISH);
    *outlen = zs.total_out;
    inflateEnd(&zs);
    if (rc == Z_STREAM_END && zs.avail_in == 0)
        return KA_BODY_OK;
    if ((rc == Z_BUF_ERROR || rc == Z_OK) && zs.avail_out == 0)
        return KA_BODY_TOO_LARGE;
    return KA_BODY_BAD;
}

int ka_content_encoding(const char *value)
{
    if (value == NULL || value[0] == '\0' || strcasecmp(value, "identity") == 0)
        return 0;
    if (strcasecmp(value, "gzip") == 0 || strcasecmp(value, "x-gzip") == 0)
        return 1;
    return -1;
}
