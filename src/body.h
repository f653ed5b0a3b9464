/* The ingestion body the module reads to find a write key or a connection ID (SPEC §6.2):
 * gzip inflation with a size limit, then the JSON scan. */
#ifndef KA_BODY_H
#define KA_BODY_H

#include <stddef.h>

#include "json.h"

#define KA_BODY_OK 0
#define KA_BODY_TOO_LARGE 1 /* the inflated body is over the limit */
#define KA_BODY_BAD 2       /* not gzip, or truncated */

/* Allocator for zlib's state (the module passes one over the request pool). */
typedef void *(*ka_zalloc_fn)(void *opaque, unsigned items, unsigned size);

/* Inflates a gzip member from in into out (capacity cap). */
int ka_gunzip(const void *in, size_t inlen, void *out, size_t cap, size_t *outlen,
              ka_zalloc_fn zalloc, void *opaque);

/* Content-Encoding values the module can read: NULL/"identity" (0), "gzip"/"x-gzip" (1),
 * anything else (-1). */
int ka_content_encoding(const char *value);

#endif
