/* CORS for ingestion and settings endpoints (SPEC §9). */
#ifndef KA_CORS_H
#define KA_CORS_H

#include <stddef.h>

#define KA_ORIGIN_MAX 1024

/* The Access-Control-Allow-Origin value for a request: origin itself when allowed (any when
 * allowed == NULL, i.e. "*"), "*" when the request has no Origin, NULL when not allowed. */
const char *ka_cors_allow_origin(const char *const *allowed, size_t n, const char *origin);

/* 1 if s is one serialized origin: scheme "://" host [":" port], or "null". */
int ka_origin_valid(const char *s);

#endif
