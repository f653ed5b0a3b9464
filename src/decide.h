/* The decision tables of SPEC §6: given what a request carries and a way to look keys up,
 * the status and error the module answers, or the identity it passes on. Pure logic: the
 * module, `krenalis-keys check` and the unit tests all call it. */
#ifndef KA_DECIDE_H
#define KA_DECIDE_H

#include "json.h"
#include "ka.h"
#include "keycache.h"
#include "keystore.h"
#include "metrics.h"

/* What the path and method make of a request. */
typedef struct {
    ka_endpoint endpoint;     /* never KA_EP_AUTO */
    int preflight_candidate;  /* OPTIONS on an ingestion or settings path */
    int body_key_allowed;     /* POST /v1/events: the write key may come in the body */
    const char *settings_key; /* settings: what follows "/settings/" (NULL: none) */
    int noncanonical;         /* ingestion or settings only once the path is normalized:
                                 event write keys are refused, API keys meet its rules;
                                 organizations in another spelling than the route table's:
                                 the organizations key is refused too */
} ka_route;

/* Paths up to this length are normalized for classification; a longer one that is not plain
 * is classified as organizations (fail closed). */
#define KA_PATH_CANON_MAX 8192

/* The canonical form of path that ka_classify matches (SPEC §5, docs/security.md): written into
 * buf (cap bytes, no NUL), its length returned, or (size_t)-1 for a path longer than cap.
 * ka_path_canonical takes a one-pass way for plain paths; _full always normalizes step by
 * step. Both give the same answer for every path (tests/unit/test_decide.c). */
size_t ka_path_canonical(const char *path, char *buf, size_t cap);
size_t ka_path_canonical_full(const char *path, char *buf, size_t cap);

/* configured: the KrenalisAuthEndpoint value; auto applies the Krenalis route table. */
void ka_classify(const char *method, const char *path, ka_endpoint configured, ka_route *out);

/* ka_classify on path (r->uri, decoded), then on sent, the path as the client sent it, when the
 * backend receives that one (mod_proxy's nocanon; NULL: none): organizations if either is, and
 * an ingestion or settings path is exact only if it is exact as sent too. */
void ka_classify_sent(const char *method, const char *path, const char *sent,
                      ka_endpoint configured, ka_route *out);

/* Store look-ups, one read transaction behind them. Each returns KA_OK, KA_NOTFOUND or KA_FAIL
 * (store unreadable: the decision is 503). */
typedef struct {
    void *ctx;
    ka_store_status (*api_key)(void *ctx, const uint8_t payload[KA_PAYLOAD_LEN], ka_key_rec *rec);
    ka_store_status (*write_key)(void *ctx, const char key[KA_WRITE_KEY_LEN], ka_key_rec *rec);
    ka_store_status (*org)(void *ctx, const char *id, ka_entity *e);
    ka_store_status (*ws)(void *ctx, const char *id, ka_entity *e);
    ka_store_status (*conn)(void *ctx, const char *id, ka_entity *e);
    /* Optional (NULL: none). An ingestion write key's whole check (the key, its Source
     * connection, its organization enabled) depends on the key and the snapshot alone:
     * wk_recall answers 1 and *rec when it passed on the snapshot being read, and wk_remember
     * is told each key that passes. */
    int (*wk_recall)(void *ctx, const char key[KA_WRITE_KEY_LEN], ka_key_rec *rec);
    void (*wk_remember)(void *ctx, const char key[KA_WRITE_KEY_LEN], const ka_key_rec *rec);
} ka_lookup;

typedef struct {
    ka_route route;
    const char *authorization; /* NULL when the header is absent */
    const char *workspace;     /* Krenalis-Workspace, NULL when absent */
    ka_ws_policy ws_policy;
    const char *orgs_key;       /* the configured organizations key, NULL when unset */
    const ka_body_fields *body; /* NULL until the body has been read */
} ka_request;

/* What the decision tables make of a request. Not an HTTP status: ka_verdict_status maps it. */
typedef enum {
    KA_VERDICT_ACCEPT = 0, /* dec->id is the identity to pass on */
    KA_VERDICT_NEED_BODY,  /* read the body, scan it, decide again with req->body set */
    KA_VERDICT_REFUSE,     /* answer dec->status with the JSON error dec->code, dec->message */
    KA_VERDICT_UNAVAILABLE /* the store cannot be read: the 503 of SPEC §10, in dec too */
} ka_verdict;

typedef struct {
    ka_verdict verdict;
    int status; /* the HTTP status of a refusal (REFUSE, UNAVAILABLE); 0 otherwise */
    const char *code;
    char message[256];
    ka_refusal reason;   /* why it was refused (KRENALIS_REFUSAL); KA_REFUSAL_NONE otherwise */
    int token_presented; /* a credential was presented: WWW-Authenticate error="invalid_token" */
    ka_identity id;      /* when accepted */
} ka_decision;

/* Fills dec and returns its verdict. */
ka_verdict ka_decide(const ka_request *req, const ka_lookup *lk, ka_decision *dec);

/* The HTTP status of a decision: 200 when accepted, the refusal's status, 0 for NEED_BODY. */
int ka_verdict_status(const ka_decision *dec);

/* The decide / read the body / decide again step of the module, krenalis-keys check and the
 * bench. decide runs the tables once (over whatever transaction the caller manages); when they
 * need the body, read_body fills fields (0), or answers nonzero, which stops the step (the
 * caller knows why: a body too large, a client gone...) and is returned as it is. Otherwise
 * returns 0 with dec decided. req->body points to fields when the body was read. */
typedef ka_verdict (*ka_decide_fn)(void *arg, const ka_request *req, ka_decision *dec);
typedef int (*ka_read_body_fn)(void *arg, ka_body_fields *fields);
int ka_decide_with_body(ka_request *req, ka_decide_fn decide, void *decide_arg,
                        ka_read_body_fn read_body, void *body_arg, ka_body_fields *fields,
                        ka_decision *dec);

/* The inputs of an API-endpoint decision, kept by the module's connection memo. ka_decide reads
 * nothing but the request and the store, so on one snapshot of the store two requests with
 * equal keys get the same decision. */
#define KA_MEMO_AUTH_MAX 64 /* "Bearer " + an API key is 60 */
typedef struct {
    char auth[KA_MEMO_AUTH_MAX]; /* the Authorization value (auth_len bytes, no NUL) */
    unsigned char auth_len;      /* 0: empty key, matches nothing */
    unsigned char has_ws;        /* Krenalis-Workspace was sent: ws holds it */
    unsigned char ws_policy;
    char ws[KA_ID_LEN + 1];
} ka_memo_key;

/* Fills k from req; 0 (k untouched) when the memo does not keep such a request: not an API
 * endpoint, a body, or header values longer than any the decision accepts. */
int ka_memo_key_set(ka_memo_key *k, const ka_request *req);

/* Whether req's inputs are k's; the Authorization values are compared in constant time. */
int ka_memo_key_match(const ka_memo_key *k, const ka_request *req);

/* The look-ups over a store and a read transaction. When txn is NULL the first look-up calls
 * begin to open the store and the transaction, so a decision that reads nothing (a malformed
 * token, the organizations key) never touches LMDB. The transaction is kept here only: its
 * owner ends it through txn.
 *
 * With a look-up cache (keycache.h), the first look-up calls attach instead, which gives the
 * store and the snapshot it would read without a transaction; look-ups the cache answers for
 * that snapshot read nothing, the others begin the transaction and keep what they find. */
typedef struct {
    const ka_store *st;
    ka_store_txn *txn;
    /* KA_OK (st and txn set) or KA_FAIL */
    ka_store_status (*begin)(void *arg, const ka_store **st, ka_store_txn **txn);
    void *begin_arg;
    int read_failed;    /* set when a look-up inside an open transaction failed */
    ka_keycache *cache; /* NULL: no cache (attach is not called) */
    /* KA_OK (st and snap set), KA_NOTFOUND (st set, but no snapshot the cache can answer for:
     * every look-up reads the store) or KA_FAIL; begin is called after it, with the same arg */
    ka_store_status (*attach)(void *arg, const ka_store **st, ka_kc_snap *snap);
    ka_kc_snap snap; /* attached: the snapshot the cache answers for */
    int attached;
    int hits;   /* look-ups the cache answered */
    int misses; /* look-ups it could not answer (read from the transaction) */
    int mixed;  /* the transaction began on a newer snapshot than answers already taken from the
                   cache: decide again without the cache, so that one snapshot decides */
    /* The request's remembered-decision entry (an API-endpoint request, with a cache). */
    int tagged;
    uint8_t tag[KA_KC_TAG_LEN];
    uint64_t tag_loc;
    /* A key read for such a request, kept only if its decision is not remembered. */
    int key_pending;
    uint64_t key_loc;
    uint8_t key_digest[KA_DIGEST_LEN];
    ka_kc_val key_val;
    /* The entry of the request's ingestion write key (wk_recall), once looked for. */
    int wk_tagged;
    uint8_t wk_tag[KA_KC_TAG_LEN];
    uint64_t wk_loc;
} ka_store_lookup_ctx;
void ka_store_lookup(ka_store_lookup_ctx *ctx, ka_lookup *lk);
/* The LMDB transaction ID of the one snapshot ctx's look-ups read: the transaction's, or the
 * cache's when it answered every look-up; 0 when they read nothing. */
uint64_t ka_store_lookup_txnid(const ka_store_lookup_ctx *ctx);
/* ka_decide over ctx's look-ups; decided again without the cache when the transaction began on
 * a newer snapshot than the cache's answers (ctx->mixed), so one snapshot decides. With a cache,
 * an API-endpoint request whose inputs (Authorization, Krenalis-Workspace, workspace policy) were
 * accepted on the snapshot the store is at now is answered by that remembered decision, and an
 * accepted one is remembered (docs/security.md, "Remembered decisions"); the entry is found by
 * the tag of those inputs, with no transaction begun. */
ka_verdict ka_decide_store(const ka_request *req, ka_store_lookup_ctx *ctx, ka_decision *dec);

/* The 400 of a credential (workspace: the Krenalis-Workspace header) sent more than once, in
 * the words of the route's endpoint (SPEC §6.1, §6.2): for a copy that arrives after the
 * decision, in the trailers of a chunked body. */
void ka_decision_repeated(ka_decision *dec, const ka_route *route, int workspace);

/* The 503 of SPEC §10, used when the store cannot be read. */
void ka_decision_unavailable(ka_decision *dec);

#endif
