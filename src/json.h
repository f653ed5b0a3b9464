/* The little JSON the request path needs: error bodies (SPEC §7) and a scan of an ingestion
 * body for its top-level "writeKey" and "connectionId" (SPEC §6.2). No allocation. */
#ifndef KA_JSON_H
#define KA_JSON_H

#include <stddef.h>

#define KA_JSON_VALUE_MAX 64 /* longer strings cannot be a write key or an ID */
#define KA_JSON_MAX_DEPTH 64 /* deeper bodies are refused as not JSON */

typedef enum { KA_JF_ABSENT = 0, KA_JF_STRING, KA_JF_OTHER } ka_jf_kind;

typedef struct {
    ka_jf_kind kind;
    int duplicate; /* the member appeared more than once, also under another case */
    int variant;   /* a member whose name is this one's only under case folding (as Go's
                      encoding/json matches names: "WriteKey", "write\u212aey"); not captured */
    int too_long;  /* a string longer than KA_JSON_VALUE_MAX */
    size_t len;    /* decoded length (valid unless too_long) */
    char val[KA_JSON_VALUE_MAX + 1]; /* decoded, NUL-terminated */
} ka_jfield;

typedef struct {
    int valid_object; /* the body is one well-formed JSON object */
    ka_jfield write_key;
    ka_jfield connection_id;
} ka_body_fields;

/* Scans buf; always fills out (valid_object = 0 when the body is not a JSON object). */
void ka_json_scan(const char *buf, size_t len, ka_body_fields *out);

/* Writes {"error":{"code":"…","message":"…"}}\n into buf; returns the length, or 0 if it does
 * not fit. */
size_t ka_json_error(char *buf, size_t cap, const char *code, const char *message);

/* Decodes the UTF-8 sequence at s (at most avail bytes) into *cp and returns its length; an
 * invalid byte is one character, U+FFFD (as Go counts and writes it). */
size_t ka_utf8_decode(const unsigned char *s, size_t avail, unsigned *cp);

/* Appends s JSON-escaped (quotes not included) to buf at *pos; 0 if it does not fit. */
int ka_json_escape(char *buf, size_t cap, size_t *pos, const char *s);

#endif
