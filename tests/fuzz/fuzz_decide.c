/* libFuzzer target: ka_classify + ka_decide (SPEC §5 route table, §6 decision tables) over
 * every endpoint, with the fake in-memory store of fake_store.h.
 *
 * Input layout:
 *   byte 0: bits 0-2 KrenalisAuthEndpoint (0 auto, 1 api, 2 ingestion, 3 settings, 4 orgs,
 *           5-7 auto); bits 3-4 KrenalisAuthWorkspace (0 optional, 1 required, 2 forbidden,
 *           3 optional); bit 5 no Authorization header; bit 6 no Krenalis-Workspace header;
 *           bit 7 an organizations key is configured;
 *   byte 1: bits 0-2 method (GET POST OPTIONS PUT DELETE PATCH HEAD post); bits 3-6: the
 *           store fails from that look-up on (0: never); bit 7: the body is known up front;
 *   then, separated by '\n': path, Authorization value, Krenalis-Workspace value, and the
 *   body (the rest, newlines included).
 * In the text fields, $A0-$A8 stand for the fake store's API tokens, $W0-$W5 for its write
 * keys, $O for the organizations key, $G0-$G3 / $S0-$S4 / $C0-$C4 for organization /
 * workspace / connection IDs (fake_store.h says which exist), so that the fuzzer reaches
 * the rows behind a valid credential.
 * Properties:
 *   - accepted only if the credential is exactly one the store (or configuration) holds, it
 *     is usable (organization there and enabled, restricted workspace there), the workspace
 *     and connection rules hold, and the identity is that credential's;
 *   - a failing store always gives the 503 of SPEC §10, never an acceptance;
 *   - a malformed API key, a malformed write key, an invalid ID never reach the store;
 *   - KA_VERDICT_NEED_BODY only for ingestion without a body, and never once the body is there;
 *   - every refusal has a code, a message, and an error body that is a JSON object;
 *   - the decision is deterministic. */
#include "decide.h"
#include "fake_data.h"
#include "fuzz_common.h"
#include "json.h"
#include "token.h"

static const char *const METHODS[8] = {"GET",    "POST",  "OPTIONS", "PUT",
                                       "DELETE", "PATCH", "HEAD",    "post"};
static const char *const ORG_IDS[] = {F_ORG_A, F_ORG_B, F_ORG_C, F_ORG_G};
static const char *const WS_IDS[] = {F_WS_A1, F_WS_A2, F_WS_B1, F_WS_C1, F_WS_G};
static const char *const CONN_IDS[] = {F_CN_A1, F_CN_A2, F_CN_B1, F_CN_C1, F_CN_G};
#define N(a) (sizeof(a) / sizeof((a)[0]))

/* Expands the placeholders of src[0..n) into a new exact-size allocation; *outlen its
 * length (the string is also NUL-terminated; embedded NULs are kept). */
static char *expand(const uint8_t *src, size_t n, size_t *outlen)
{
    size_t cap = n * 48 + 1, o = 0;
    char *out = malloc(cap), *fit;

    CHECK(out != NULL);
    for (size_t i = 0; i < n; i++) {
        const char *rep = NULL;
        size_t skip = 0;
        if (src[i] == '$' && i + 1 < n) {
            unsigned d = (i + 2 < n && src[i + 2] >= '0' && src[i + 2] <= '9')
                             ? (unsigned)(src[i + 2] - '0')
                             : 100;
            switch (src[i + 1]) {
            case 'A':
                if (d < FAKE_NAPI)
                    rep = FAKE_API[d].token, skip = 2;
                break;
            case 'W':
                if (d < FAKE_NWRITE)
                    rep = FAKE_WRITE[d].token, skip = 2;
                break;
            case 'G':
                if (d < N(ORG_IDS))
                    rep = ORG_IDS[d], skip = 2;
                break;
            case 'S':
                if (d < N(WS_IDS))
                    rep = WS_IDS[d], skip = 2;
                break;
            case 'C':
                if (d < N(CONN_IDS))
                    rep = CONN_IDS[d], skip = 2;
                break;
            case 'O':
                rep = FAKE_ORGS_KEY, skip = 1;
                break;
            default:
                break;
            }
        }
        if (rep) {
            size_t l = strlen(rep);
            memcpy(out + o, rep, l);
            o += l;
            i += skip;
        } else {
            out[o++] = (char)src[i];
        }
    }
    out[o] = '\0';
    fit = malloc(o + 1);
    CHECK(fit != NULL);
    memcpy(fit, out, o + 1);
    free(out);
    *outlen = o;
    return fit;
}

/* Splits off the next '\n'-terminated field (the last one takes the rest). */
static const uint8_t *field(const uint8_t **p, const uint8_t *end, size_t *len, int last)
{
    const uint8_t *start = *p, *nl = last ? NULL : memchr(start, '\n', (size_t)(end - start));
    if (nl == NULL) {
        *len = (size_t)(end - start);
        *p = end;
    } else {
        *len = (size_t)(nl - start);
        *p = nl + 1;
    }
    return start;
}

/* ---- the route table (SPEC §5), written independently ---- */

/* Nothing a backend could normalize: lower-case letters, digits, '-' and '_' in segments
 * separated by single '/', none of them "." or "..", no trailing '/'. */
static int plain_path(const char *p)
{
    int prev_slash = 0;

    for (; *p; p++) {
        if (*p == '/') {
            if (prev_slash)
                return 0;
            prev_slash = 1;
            continue;
        }
        prev_slash = 0;
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' || *p == '_'))
            return 0;
    }
    return !prev_slash;
}

/* The one-pass way for plain paths gives what the full normalization does, at a capacity that
 * fits the path and at one that is a byte short. */
static void check_canonical(const char *path)
{
    static char a[KA_PATH_CANON_MAX], b[KA_PATH_CANON_MAX];
    size_t n = strlen(path), caps[2] = {n, n - 1};

    for (int i = 0; i < 2 && caps[i] <= sizeof(a); i++) {
        size_t x = ka_path_canonical(path, a, caps[i]);
        size_t y = ka_path_canonical_full(path, b, caps[i]);
        CHECK(x == y && (x == (size_t)-1 || memcmp(a, b, x) == 0));
    }
}

static void check_route(const char *method, const char *path, ka_endpoint conf, const ka_route *r)
{
    static const char *const types[] = {"alias", "group", "identify", "page", "screen", "track"};
    int post = strcmp(method, "POST") == 0, opt = strcmp(method, "OPTIONS") == 0;
    int get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;

    CHECK(r->endpoint >= KA_EP_API && r->endpoint <= KA_EP_ORGS);
    CHECK(!r->preflight_candidate ||
          (opt && (r->endpoint == KA_EP_INGESTION || r->endpoint == KA_EP_SETTINGS)));
    CHECK(!r->body_key_allowed || (post && r->endpoint == KA_EP_INGESTION));
    if (r->settings_key) {
        size_t pl = strlen(path), kl = strlen(r->settings_key);
        CHECK(r->endpoint == KA_EP_SETTINGS);
        CHECK(kl <= pl && r->settings_key == path + (pl - kl)); /* a suffix of the path */
    }
    if (conf != KA_EP_AUTO) {
        CHECK(r->endpoint == conf);
        return;
    }
    /* Whatever a backend's normalization could turn into the Organizations API is (fail
     * closed): only a path with something to normalize may be classified so without
     * starting with it. */
    if (strncmp(path, "/v1/organizations", 17) == 0 && strstr(path, "/.") == NULL &&
        strpbrk(path, "%\\") == NULL) {
        CHECK(r->endpoint == KA_EP_ORGS);
        CHECK(r->noncanonical == (path[17] != '\0' && path[17] != '/'));
        return;
    }
    if (r->endpoint == KA_EP_ORGS) {
        CHECK(!plain_path(path));
        /* the organizations key only where the route table spells it */
        CHECK(r->noncanonical || (strncmp(path, "/v1/organizations", 17) == 0 &&
                                  (path[17] == '\0' || path[17] == '/')));
        return;
    }
    if ((post || opt) && strncmp(path, "/v1/events", 10) == 0) {
        int bare = path[10] == '\0', typed = 0;
        for (size_t i = 0; i < N(types); i++)
            typed |= path[10] == '/' && strcmp(path + 11, types[i]) == 0;
        if (bare || typed) {
            CHECK(r->endpoint == KA_EP_INGESTION && !r->noncanonical);
            CHECK(r->preflight_candidate == opt);
            CHECK(r->body_key_allowed == (post && bare));
            return;
        }
    }
    if ((opt || get) && strncmp(path, "/v1/events/settings/", 20) == 0) {
        CHECK(r->endpoint == KA_EP_SETTINGS && r->settings_key == path + 20);
        CHECK(r->preflight_candidate == opt && !r->noncanonical);
        return;
    }
    /* Ingestion or settings only once normalized: write keys refused, no body key, no
     * settings key; a plain path is never that. */
    if (r->noncanonical) {
        CHECK(!plain_path(path));
        CHECK(r->endpoint == KA_EP_INGESTION || r->endpoint == KA_EP_SETTINGS);
        CHECK(!r->body_key_allowed && !r->settings_key && r->preflight_candidate == opt);
        CHECK(r->endpoint == KA_EP_SETTINGS ? (get || opt) : (post || opt));
        return;
    }
    CHECK(r->endpoint == KA_EP_API);
    CHECK(!r->preflight_candidate && !r->body_key_allowed && !r->settings_key);
}

/* ---- oracles ---- */

static int id_eq(const char *a, const char *b)
{
    return strcmp(a, b ? b : "") == 0;
}

/* The workspace an accepted API-key request selects, checked against the rules. */
static void check_api_ws(const ka_request *req, const fake_key *k, const char *sel)
{
    if (k->ws[0]) {
        CHECK(req->workspace == NULL);
        CHECK(strcmp(sel, k->ws) == 0);
    } else if (req->workspace) {
        const fake_ent *w = fake_find_ws(req->workspace);
        CHECK(w != NULL && strcmp(w->org, k->org) == 0);
        CHECK(strcmp(sel, req->workspace) == 0);
    } else {
        CHECK(sel[0] == '\0');
    }
    if (req->ws_policy == KA_WS_REQUIRED)
        CHECK(sel[0] != '\0');
    if (req->ws_policy == KA_WS_FORBIDDEN)
        CHECK(sel[0] == '\0');
}

static void check_accept(const ka_request *req, const ka_decision *d)
{
    const ka_identity *id = &d->id;
    const char *tok = NULL;
    size_t len = 0;
    int bearer = req->authorization && !strchr(req->authorization, ',') &&
                 ka_bearer_parse(req->authorization, &tok, &len);

    switch (req->route.endpoint) {
    case KA_EP_API: {
        const fake_key *k = bearer ? fake_find_token(FAKE_API, FAKE_NAPI, tok, len) : NULL;
        CHECK(fake_api_usable(k));
        CHECK(id->type == KA_KEY_API && id_eq(id->key_id, k->id) && id_eq(id->org, k->org));
        CHECK(id->conn[0] == '\0');
        check_api_ws(req, k, id->ws);
        break;
    }
    case KA_EP_INGESTION:
        if (id->type == KA_KEY_API) {
            const fake_key *k = bearer ? fake_find_token(FAKE_API, FAKE_NAPI, tok, len) : NULL;
            const ka_jfield *cid;
            const fake_ent *c;
            char sel[KA_ID_LEN + 1];
            CHECK(fake_api_usable(k));
            CHECK(id_eq(id->key_id, k->id) && id_eq(id->org, k->org));
            /* The selected workspace: the key's, or the header's. */
            snprintf(sel, sizeof(sel), "%s",
                     k->ws[0]         ? k->ws
                     : req->workspace ? req->workspace
                                      : "");
            check_api_ws(req, k, sel);
            CHECK(req->body && req->body->valid_object);
            cid = &req->body->connection_id;
            CHECK(cid->kind == KA_JF_STRING && !cid->too_long && cid->len == KA_ID_LEN);
            CHECK(strcmp(cid->val, id->conn) == 0);
            c = fake_find_conn(id->conn);
            CHECK(c != NULL && strcmp(c->org, k->org) == 0);
            CHECK(sel[0] == '\0' || strcmp(c->ws, sel) == 0);
            CHECK(id_eq(id->ws, c->ws));
        } else {
            const fake_key *w;
            const fake_org *o;
            CHECK(id->type == KA_KEY_WRITE);
            if (req->authorization) {
                CHECK(bearer);
                w = fake_find_token(FAKE_WRITE, FAKE_NWRITE, tok, len);
                /* Issue 3: with a header write key the body is not needed (it streams to the
                 * backend untouched): whatever a known body holds does not matter. */
            } else {
                const ka_jfield *wk;
                CHECK(req->route.body_key_allowed && req->body && req->body->valid_object);
                wk = &req->body->write_key;
                CHECK(wk->kind == KA_JF_STRING && !wk->duplicate && !wk->too_long);
                CHECK(req->body->connection_id.kind == KA_JF_ABSENT);
                w = fake_find_token(FAKE_WRITE, FAKE_NWRITE, wk->val, wk->len);
            }
            CHECK(w != NULL && w->type == KA_KEY_WRITE);
            CHECK((o = fake_find_org(w->org)) != NULL && o->enabled);
            CHECK(id_eq(id->key_id, w->id) && id_eq(id->org, w->org) && id_eq(id->ws, w->ws) &&
                  id_eq(id->conn, w->conn));
        }
        break;
    case KA_EP_SETTINGS: {
        const char *key = req->route.settings_key;
        const fake_key *w = key ? fake_find_token(FAKE_WRITE, FAKE_NWRITE, key, strlen(key)) : NULL;
        CHECK(w != NULL && w->type == KA_KEY_WRITE);
        CHECK(id->type == KA_KEY_WRITE && id_eq(id->key_id, w->id) && id_eq(id->org, w->org) &&
              id_eq(id->ws, w->ws) && id_eq(id->conn, w->conn));
        break;
    }
    case KA_EP_ORGS:
        CHECK(!req->route.noncanonical);
        CHECK(bearer && req->orgs_key && len == strlen(req->orgs_key) &&
              memcmp(tok, req->orgs_key, len) == 0);
        CHECK(id->type == KA_KEY_ORGS && strcmp(id->key_id, "organizations") == 0);
        CHECK(!id->org[0] && !id->ws[0] && !id->conn[0]);
        break;
    default:
        CHECK(0);
    }
}

static void check_refusal(const ka_request *req, const ka_decision *d, const fake_store *fc)
{
    char buf[1024];
    size_t n;
    ka_body_fields f;

    CHECK(d->verdict == KA_VERDICT_REFUSE || d->verdict == KA_VERDICT_UNAVAILABLE);
    CHECK(ka_verdict_status(d) == d->status);
    CHECK(d->status == 400 || d->status == 401 || d->status == 403 || d->status == 404 ||
          d->status == 422 || d->status == 503);
    CHECK(d->code != NULL && d->code[0] != '\0');
    CHECK(memchr(d->message, '\0', sizeof(d->message)) != NULL);
    CHECK(d->message[0] != '\0' || d->status == 404);
    n = ka_json_error(buf, sizeof(buf), d->code, d->message);
    CHECK(n > 0);
    ka_json_scan(buf, n, &f);
    CHECK(f.valid_object);
    if (d->status == 503 && !fc->failed)
        CHECK(req->route.endpoint == KA_EP_INGESTION &&
              strcmp(d->message, "organization is disabled") == 0);
    if (d->status == 401 && strcmp(d->code, "Unauthorized") != 0)
        CHECK(0);
}

static void decide_once(const ka_request *req, int fail_from, ka_decision *d, fake_store *fc)
{
    ka_lookup lk;
    fake_lookup(fc, &FAKE_DATA, &lk);
    fc->fail_from = fail_from;
    ka_decide(req, &lk, d);
}

static void check_decision(const ka_request *req, int fail_from, ka_decision *d)
{
    fake_store fc, fc2;
    ka_decision d2;
    const char *tok;
    size_t len;

    decide_once(req, fail_from, d, &fc);
    /* Deterministic. */
    decide_once(req, fail_from, &d2, &fc2);
    CHECK(d->verdict == d2.verdict && d->status == d2.status &&
          d->token_presented == d2.token_presented);
    CHECK((d->code == NULL) == (d2.code == NULL) && (!d->code || strcmp(d->code, d2.code) == 0));
    CHECK(strcmp(d->message, d2.message) == 0);
    CHECK(d->verdict != KA_VERDICT_ACCEPT || memcmp(&d->id, &d2.id, sizeof(d->id)) == 0);

    /* Fails closed. */
    if (fc.failed)
        CHECK(d->verdict == KA_VERDICT_UNAVAILABLE && d->status == 503 &&
              strcmp(d->code, "ServiceUnavailable") == 0 &&
              strcmp(d->message, "request cannot be processed at this time; try again later") == 0);
    /* A malformed API key never reaches the store. */
    if (req->authorization && ka_bearer_parse(req->authorization, &tok, &len) && len >= 4 &&
        memcmp(tok, "api_", 4) == 0) {
        uint8_t p[KA_PAYLOAD_LEN];
        if (!ka_api_body_parse(tok + 4, len - 4, p))
            CHECK(fc.api_calls == 0);
    }
    if (req->route.endpoint == KA_EP_ORGS)
        CHECK(fc.calls == 0 && fc.api_calls == 0 && fc.write_calls == 0);
    if (d->token_presented)
        CHECK(req->authorization || req->route.endpoint == KA_EP_SETTINGS ||
              (req->body && req->body->write_key.kind != KA_JF_ABSENT));

    if (d->verdict == KA_VERDICT_UNAVAILABLE)
        CHECK(fc.failed);
    if (d->verdict == KA_VERDICT_ACCEPT) {
        CHECK(!fc.failed && d->status == 0 && ka_verdict_status(d) == 200);
        check_accept(req, d);
    } else if (d->verdict == KA_VERDICT_NEED_BODY) {
        CHECK(req->route.endpoint == KA_EP_INGESTION && req->body == NULL && !fc.failed);
    } else {
        check_refusal(req, d, &fc);
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char buf[256];
    (void)argc;
    (void)argv;
    fake_init();
    CHECK(ka_org_key_check("K", FAKE_ORGS_KEY, buf, sizeof(buf)) == NULL);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *p, *end = data + size, *f;
    size_t len, plen, alen, wlen, blen;
    char *path, *auth, *ws, *body;
    unsigned b0, b1;
    ka_endpoint conf;
    ka_request req;
    ka_decision d;
    ka_body_fields fields;
    const char *method;
    int fail_from;

    if (size < 2)
        return 0;
    b0 = data[0];
    b1 = data[1];
    conf = (b0 & 7) <= 4 ? (ka_endpoint)(b0 & 7) : KA_EP_AUTO;
    method = METHODS[b1 & 7];
    fail_from = (int)((b1 >> 3) & 15);
    p = data + 2;
    f = field(&p, end, &len, 0);
    path = expand(f, len, &plen);
    f = field(&p, end, &len, 0);
    auth = expand(f, len, &alen);
    f = field(&p, end, &len, 0);
    ws = expand(f, len, &wlen);
    f = field(&p, end, &len, 1);
    body = expand(f, len, &blen);

    memset(&req, 0, sizeof(req));
    ka_classify(method, path, conf, &req.route);
    check_route(method, path, conf, &req.route);
    check_canonical(path);
    req.authorization = (b0 & 0x20) ? NULL : auth;
    req.workspace = (b0 & 0x40) ? NULL : ws;
    req.ws_policy = ((b0 >> 3) & 3) == 3 ? KA_WS_OPTIONAL : (ka_ws_policy)((b0 >> 3) & 3);
    req.orgs_key = (b0 & 0x80) ? FAKE_ORGS_KEY : NULL;
    ka_json_scan(body, blen, &fields);
    req.body = (b1 & 0x80) ? &fields : NULL;

    check_decision(&req, fail_from, &d);
    if (d.verdict == KA_VERDICT_NEED_BODY) {
        /* As the module does: read the body, decide again. */
        req.body = &fields;
        check_decision(&req, fail_from, &d);
        CHECK(d.verdict != KA_VERDICT_NEED_BODY);
    }

    free(path);
    free(auth);
    free(ws);
    free(body);
    return 0;
}
