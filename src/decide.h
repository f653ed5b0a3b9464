/* The decision tables of SPEC §6: given what a request carries and a way to look keys up,
 * the status and error the module answers, or the identity it passes on. Pure logic: the
 * module, `krenalis-keys check` and the unit tests all call it. */
#ifndef KA_DECIDE_H
#define KA_DECIDE_H

#include "json.h"
#include "ka.h"
#include "keystore.h"
#include "metrics.h"

typedef enum { KA_EP_AUTO = 0, KA_EP_API, KA_EP_INGESTION, KA_EP_SETTINGS, KA_EP_ORGS } ka_endpoint;

typedef enum { KA_WS_OPTIONAL = 0, KA_WS_REQUIRED, KA_WS_FORBIDDEN } ka_ws_policy;

/* What the path and method make of a request. */
typedef struct {
    ka_endpoint endpoint;     /* never KA_EP_AUTO */
    int preflight_candidate;  /* OPTIONS on an ingestion or settings path */
    int body_key_allowed;     /* POST /v1/events: the write key may come in the body */
    const char *settings_key; /* settings: what follows "/settings/" (NULL: none) */
    int noncanonical;         /* ingestion or settings only once the path is normalized:
                                 event write keys are refused, API keys meet its rules */
} ka_route;

/* Paths up to this length are normalized for classification; a longer one that is not plain
 * is classified as organizations (fail closed). */
#define KA_PATH_CANON_MAX 8192

/* configured: the KrenalisAuthEndpoint value; auto applies the Krenalis route table. */
void ka_classify(const char *method, const char *path, ka_endpoint configured, ka_route *out);

/* Store look-ups, one read transaction behind them. Each returns KA_OK, KA_NOTFOUND or KA_FAIL
 * (store unreadable: the decision is 503). */
typedef struct {
    void *ctx;
    int (*api_key)(void *ctx, const uint8_t payload[KA_PAYLOAD_LEN], ka_key_rec *rec);
    int (*write_key)(void *ctx, const char key[KA_WRITE_KEY_LEN], ka_key_rec *rec);
    int (*org)(void *ctx, const char *id, ka_entity *e);
    int (*ws)(void *ctx, const char *id, ka_entity *e);
    int (*conn)(void *ctx, const char *id, ka_entity *e);
} ka_lookup;

typedef struct {
    ka_route route;
    const char *authorization; /* NULL when the header is absent */
    const char *workspace;     /* Krenalis-Workspace, NULL when absent */
    ka_ws_policy ws_policy;
    const char *orgs_key;       /* the configured organizations key, NULL when unset */
    const ka_body_fields *body; /* NULL until the body has been read */
} ka_request;

#define KA_NEED_BODY (-1) /* read the body, scan it, decide again with req.body set */
#define KA_ACCEPT 0

typedef struct {
    int status; /* KA_ACCEPT, KA_NEED_BODY or an HTTP status */
    const char *code;
    char message[256];
    ka_refusal reason;   /* why it was refused (KRENALIS_REFUSAL); KA_REFUSAL_NONE otherwise */
    int token_presented; /* a credential was presented: WWW-Authenticate error="invalid_token" */
    ka_identity id;      /* when accepted */
} ka_decision;

int ka_decide(const ka_request *req, const ka_lookup *lk, ka_decision *dec);

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
 * token, the organizations key) never touches LMDB. */
typedef struct {
    const ka_store *st;
    MDB_txn *txn;
    int (*begin)(void *arg, const ka_store **st, MDB_txn **txn); /* KA_OK or KA_FAIL */
    void *begin_arg;
    int read_failed; /* set when a look-up inside an open transaction failed */
} ka_store_lookup_ctx;
void ka_store_lookup(ka_store_lookup_ctx *ctx, ka_lookup *lk);

/* The 400 of a credential (workspace: the Krenalis-Workspace header) sent more than once, in
 * the words of the route's endpoint (SPEC §6.1, §6.2): for a copy that arrives after the
 * decision, in the trailers of a chunked body. */
void ka_decision_repeated(ka_decision *dec, const ka_route *route, int workspace);

/* The 503 of SPEC §10, used when the store cannot be read. */
void ka_decision_unavailable(ka_decision *dec);

#endif
