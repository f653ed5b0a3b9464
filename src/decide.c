/* The decision tables of SPEC §6, in the order the SPEC evaluates them. */
#include "decide.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "crypto.h"
#include "token.h"

static const char MSG_MULTI_AUTH[] = "request contains multiple Authorization headers";

/* ---- routes ---- */

static const char *const event_types[] = {"alias", "group", "identify", "page", "screen", "track"};

static int is_event_type(const char *s, size_t n)
{
    for (size_t i = 0; i < sizeof(event_types) / sizeof(event_types[0]); i++)
        if (strlen(event_types[i]) == n && memcmp(s, event_types[i], n) == 0)
            return 1;
    return 0;
}

/* 1 if path (n bytes) is /v1/events or /v1/events/<type>; *bare set for /v1/events itself. */
static int is_ingestion_path(const char *path, size_t n, int *bare)
{
    static const char base[] = "/v1/events";
    size_t b = sizeof(base) - 1;

    if (n < b || memcmp(path, base, b) != 0)
        return 0;
    *bare = n == b;
    return *bare || (path[b] == '/' && is_event_type(path + b + 1, n - b - 1));
}

static const char *settings_key_of(const char *path)
{
    const char *p = strstr(path, "/settings/");
    return p ? p + strlen("/settings/") : NULL;
}

/* The last path segment names an event type (explicit ingestion places). */
static int ends_in_event_type(const char *path)
{
    const char *slash = strrchr(path, '/');
    const char *last = slash ? slash + 1 : path;
    return is_event_type(last, strlen(last));
}

static int has_prefix(const char *s, size_t n, const char *prefix)
{
    size_t p = strlen(prefix);
    return n >= p && memcmp(s, prefix, p) == 0;
}

static int hex_digit(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 0x20;
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* One pass of percent-decoding in place; returns the new length (shorter when it decoded). */
static size_t percent_decode(char *s, size_t n)
{
    size_t r = 0, w = 0;

    while (r < n) {
        int hi, lo;
        if (s[r] == '%' && r + 2 < n && (hi = hex_digit((unsigned char)s[r + 1])) >= 0 &&
            (lo = hex_digit((unsigned char)s[r + 2])) >= 0) {
            s[w++] = (char)(hi << 4 | lo);
            r += 3;
        } else {
            s[w++] = s[r++];
        }
    }
    return w;
}

static int is_trim_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

/* Copies path into buf (cap bytes) with its literal "." and ".." segments resolved: '/'-separated
 * segments of exactly those bytes, the only ones Go's ServeMux cleans. Returns the length, or
 * (size_t)-1 when it does not fit. */
static size_t literal_dot_segments(const char *path, char *buf, size_t cap)
{
    size_t r = 0, w = 0;

    while (path[r] != '\0') {
        size_t start, len;
        while (path[r] == '/')
            r++;
        start = r;
        while (path[r] != '\0' && path[r] != '/')
            r++;
        len = r - start;
        if (len == 0 || (len == 1 && path[start] == '.'))
            continue;
        if (len == 2 && path[start] == '.' && path[start + 1] == '.') {
            while (w > 0 && buf[--w] != '/')
                ;
            continue;
        }
        if (w + 1 + len > cap)
            return (size_t)-1;
        buf[w++] = '/';
        memcpy(buf + w, path + start, len);
        w += len;
    }
    return w;
}

/* The canonical form of a path that any backend's normalization could reach (SPEC §5, docs/
 * security.md): percent-decoded until nothing decodes, '\' read as '/', empty segments merged,
 * ";params" cut, trailing white space and dots dropped, "." and ".." resolved, lower case.
 * Writes into buf (cap bytes, no NUL); returns the length, or (size_t)-1 when path is longer.
 * With literal_dots, only the literal dot segments of path are resolved, before anything else
 * (what a backend that resolves no look-alike routes); else *popped tells whether a ".." was
 * resolved. */
static size_t canonical(const char *path, char *buf, size_t cap, int literal_dots, int *popped)
{
    size_t n = strlen(path), len, w = 0;

    if (n > cap)
        return (size_t)-1;
    if (literal_dots) {
        if ((n = literal_dot_segments(path, buf, cap)) == (size_t)-1)
            return n;
    } else {
        memcpy(buf, path, n);
    }
    for (;;) {
        size_t m = percent_decode(buf, n);
        if (m == n)
            break;
        n = m;
    }
    len = n;
    /* Segments are read from buf[r] and written back at buf[w] <= r. */
    for (size_t r = 0; r < len;) {
        size_t start, end, cut;
        while (r < len && (buf[r] == '/' || buf[r] == '\\'))
            r++;
        start = r;
        while (r < len && buf[r] != '/' && buf[r] != '\\')
            r++;
        end = r;
        cut = start;
        while (cut < end && buf[cut] != ';')
            cut++;
        while (cut > start && is_trim_space(buf[cut - 1]))
            cut--;
        if (!literal_dots && cut - start == 1 && buf[start] == '.')
            continue;
        if (!literal_dots && cut - start == 2 && buf[start] == '.' && buf[start + 1] == '.') {
            while (w > 0 && buf[--w] != '/')
                ;
            *popped = 1;
            continue;
        }
        while (cut > start && (buf[cut - 1] == '.' || is_trim_space(buf[cut - 1])))
            cut--;
        if (cut == start)
            continue;
        buf[w++] = '/';
        for (size_t i = start; i < cut; i++)
            buf[w++] = buf[i] >= 'A' && buf[i] <= 'Z' ? (char)(buf[i] | 0x20) : buf[i];
    }
    return w;
}

size_t ka_path_canonical_full(const char *path, char *buf, size_t cap)
{
    int popped = 0;
    return canonical(path, buf, cap, 0, &popped);
}

/* Bytes ka_path_canonical_full acts on besides letters' case ('/' and '.' only in some places). */
static const unsigned char path_special[256] = {
    ['\0'] = 1, ['%'] = 1,  ['\\'] = 1, [';'] = 1,  ['.'] = 1,  ['/'] = 1,
    [' '] = 1,  ['\t'] = 1, ['\r'] = 1, ['\n'] = 1, ['\v'] = 1, ['\f'] = 1};

/* The canonical form in one pass for a plain path (what nearly every request has): it begins
 * with '/', has nothing to decode, no '\\', ';' or white space, no empty segment but a final
 * one, and no segment that ends in '.' (so none is "." or ".."). Then only case and the final
 * '/' change. (size_t)-2 for any other path, which ka_path_canonical_full normalizes. */
static size_t plain_canonical(const char *path, char *buf, size_t cap)
{
    size_t i = 0;

    if (path[0] != '/')
        return (size_t)-2;
    for (;; i++) {
        unsigned char c = (unsigned char)path[i];
        if (path_special[c]) {
            if (c == '\0' || (c == '/' && path[i + 1] == '\0' && i < cap))
                return i; /* a final '/' is an empty segment, dropped */
            if ((c != '/' && c != '.') || path[i + 1] == '/' || path[i + 1] == '\0')
                return (size_t)-2;
        }
        if (i == cap) /* longer than cap, as ka_path_canonical_full says */
            return (size_t)-1;
        buf[i] = (char)((unsigned)(c - 'A') < 26 ? c | 0x20 : c);
    }
}

/* The canonical form, in one pass for a plain path; *popped tells whether a ".." was
 * resolved. */
static size_t path_canonical(const char *path, char *buf, size_t cap, int *popped)
{
    size_t n = plain_canonical(path, buf, cap);
    return n == (size_t)-2 ? canonical(path, buf, cap, 0, popped) : n;
}

size_t ka_path_canonical(const char *path, char *buf, size_t cap)
{
    int popped = 0;
    return path_canonical(path, buf, cap, &popped);
}

#define ORGS_PREFIX "/v1/organizations"

/* A path too long to normalize: only a plain one (nothing a backend would decode or
 * normalize) can be told apart from the Organizations API. */
static int could_be_anything(const char *path)
{
    return strpbrk(path, "%\\;.\t ") != NULL || strstr(path, "//") != NULL ||
           strncasecmp(path, ORGS_PREFIX, strlen(ORGS_PREFIX)) == 0;
}

/* Whether path is /v1/organizations or below it as Krenalis's route table spells it. */
static int is_orgs_route(const char *path)
{
    size_t n = strlen(ORGS_PREFIX);
    return strncmp(path, ORGS_PREFIX, n) == 0 && (path[n] == '\0' || path[n] == '/');
}

/* Whether path, its literal dot segments resolved and nothing else, is in canonical form
 * below the Organizations API. */
static int below_orgs_literally(const char *path)
{
    char canon[KA_PATH_CANON_MAX];
    size_t n = canonical(path, canon, sizeof(canon), 1, NULL);
    return n == (size_t)-1 || has_prefix(canon, n, ORGS_PREFIX);
}

/* What a path is to Krenalis's route table, matched exactly (case-sensitive, as Go's ServeMux). */
static ka_endpoint exact_class(const char *path, size_t n, int post, int options, int get,
                               int *bare)
{
    static const char settings[] = "/v1/events/settings/";

    if ((post || options) && is_ingestion_path(path, n, bare))
        return KA_EP_INGESTION;
    if ((get || options) && has_prefix(path, n, settings))
        return KA_EP_SETTINGS;
    return KA_EP_API;
}

void ka_classify(const char *method, const char *path, ka_endpoint configured, ka_route *out)
{
    /* The first letter first: this runs on every request, most of them GET. */
    int post = method[0] == 'P' && strcmp(method, "POST") == 0;
    int options = method[0] == 'O' && strcmp(method, "OPTIONS") == 0;
    /* Go's ServeMux routes HEAD to a GET pattern, so HEAD is a settings request too. */
    int get = (method[0] == 'G' && strcmp(method, "GET") == 0) ||
              (method[0] == 'H' && strcmp(method, "HEAD") == 0);
    int bare = 0, popped = 0, orgs;
    char canon[KA_PATH_CANON_MAX];
    size_t clen;
    ka_endpoint exact, loose;

    memset(out, 0, sizeof(*out));
    if (configured != KA_EP_AUTO) {
        out->endpoint = configured;
        if (configured == KA_EP_SETTINGS)
            out->settings_key = settings_key_of(path);
        out->preflight_candidate =
            options && (configured == KA_EP_INGESTION || configured == KA_EP_SETTINGS);
        out->body_key_allowed = configured == KA_EP_INGESTION && post && !ends_in_event_type(path);
        return;
    }
    clen = path_canonical(path, canon, sizeof(canon), &popped);
    /* Whatever could be the Organizations API after a backend's normalization is (fail
     * closed); a path too long to normalize here is, unless it is plain. A ".." that took the
     * path out of it may be a look-alike ("..;x", "%2e%2e") that the backend keeps as a
     * segment below it: the path is read again with its literal dot segments only. */
    if (clen == (size_t)-1)
        orgs = could_be_anything(path);
    else
        orgs = has_prefix(canon, clen, ORGS_PREFIX) || (popped && below_orgs_literally(path));
    if (orgs) {
        /* Only as the route table spells it does the backend route it there: the
         * organizations key is refused on the other spellings. */
        out->endpoint = KA_EP_ORGS;
        out->noncanonical = !is_orgs_route(path);
        return;
    }
    exact = exact_class(path, strlen(path), post, options, get, &bare);
    if (exact != KA_EP_API) {
        out->endpoint = exact;
        out->preflight_candidate = options;
        if (exact == KA_EP_INGESTION)
            out->body_key_allowed = post && bare;
        else
            out->settings_key = path + strlen("/v1/events/settings/");
        return;
    }
    /* Ingestion or settings only once normalized: API keys meet the ingestion rules, and an
     * event write key is refused (it is good only on the exact paths). */
    loose = clen == (size_t)-1 ? KA_EP_API : exact_class(canon, clen, post, options, get, &bare);
    out->endpoint = loose;
    out->noncanonical = loose != KA_EP_API;
    out->preflight_candidate = options && loose != KA_EP_API;
}

void ka_classify_sent(const char *method, const char *path, const char *sent,
                      ka_endpoint configured, ka_route *out)
{
    ka_route as_sent;

    ka_classify(method, path, configured, out);
    if (configured != KA_EP_AUTO || sent == NULL || strcmp(sent, path) == 0)
        return;
    ka_classify(method, sent, configured, &as_sent);
    if (as_sent.endpoint == KA_EP_ORGS && out->endpoint != KA_EP_ORGS) {
        *out = as_sent;
        return;
    }
    /* A write key or the organizations key is good on the exact paths only: as the backend
     * receives them too. */
    if (out->endpoint != KA_EP_API && !out->noncanonical &&
        (as_sent.endpoint != out->endpoint || as_sent.noncanonical)) {
        out->noncanonical = 1;
        out->body_key_allowed = 0;
        out->settings_key = NULL;
    }
}

/* ---- helpers ---- */

/* The helpers below return a verdict, or KA_GO_ON: the row does not apply, the tables go on.
 * KA_GO_ON is no verdict of ka_decide's. */
#define KA_GO_ON ((ka_verdict)-1)

static ka_verdict refuse(ka_decision *dec, ka_refusal reason, int status, const char *code,
                         const char *message)
{
    dec->verdict = KA_VERDICT_REFUSE;
    dec->reason = reason;
    dec->status = status;
    dec->code = code;
    snprintf(dec->message, sizeof(dec->message), "%s", message);
    return dec->verdict;
}

static ka_verdict refuse_id(ka_decision *dec, ka_refusal reason, int status, const char *code,
                            const char *fmt, const char *id)
{
    dec->verdict = KA_VERDICT_REFUSE;
    dec->reason = reason;
    dec->status = status;
    dec->code = code;
    snprintf(dec->message, sizeof(dec->message), fmt, id);
    return dec->verdict;
}

void ka_decision_unavailable(ka_decision *dec)
{
    dec->token_presented = 0;
    refuse(dec, KA_REFUSAL_UNAVAILABLE, 503, "ServiceUnavailable",
           "request cannot be processed at this time; try again later");
    dec->verdict = KA_VERDICT_UNAVAILABLE;
}

static ka_verdict unavailable(ka_decision *dec)
{
    ka_decision_unavailable(dec);
    return dec->verdict;
}

static ka_verdict need_body(ka_decision *dec)
{
    dec->verdict = KA_VERDICT_NEED_BODY;
    dec->status = 0;
    return dec->verdict;
}

int ka_verdict_status(const ka_decision *dec)
{
    switch (dec->verdict) {
    case KA_VERDICT_ACCEPT:
        return 200;
    case KA_VERDICT_NEED_BODY:
        return 0;
    default:
        return dec->status;
    }
}

int ka_decide_with_body(ka_request *req, ka_decide_fn decide, void *decide_arg,
                        ka_read_body_fn read_body, void *body_arg, ka_body_fields *fields,
                        ka_decision *dec)
{
    int rc;

    if (decide(decide_arg, req, dec) != KA_VERDICT_NEED_BODY)
        return 0;
    memset(fields, 0, sizeof(*fields));
    if ((rc = read_body(body_arg, fields)) != 0)
        return rc;
    req->body = fields;
    decide(decide_arg, req, dec);
    return 0;
}

static void set_id(char *dst, size_t size, const char *src)
{
    size_t n = src ? strnlen(src, size - 1) : 0;

    memcpy(dst, src ? src : "", n);
    dst[n] = '\0';
}

static ka_verdict accept(ka_decision *dec, ka_key_type type, const char *key_id, const char *org,
                         const char *ws, const char *conn)
{
    dec->verdict = KA_VERDICT_ACCEPT;
    dec->status = 0;
    dec->code = NULL;
    dec->message[0] = '\0';
    dec->id.type = type;
    set_id(dec->id.key_id, sizeof(dec->id.key_id), key_id);
    set_id(dec->id.org, sizeof(dec->id.org), org);
    set_id(dec->id.ws, sizeof(dec->id.ws), ws);
    set_id(dec->id.conn, sizeof(dec->id.conn), conn);
    return KA_VERDICT_ACCEPT;
}

/* The messages that differ between api (§6.1) and ingestion (§6.2) endpoints. */
typedef struct {
    int malformed_status;
    const char *malformed_code;
    const char *invalid_bearer;
    const char *malformed;
    const char *unknown;
    const char *ws_multi;
    const char *ws_restricted;
    const char *ws_invalid;
} api_msgs;

static const api_msgs API_MSGS = {
    401,
    "Unauthorized",
    "Authorization header is invalid; it should be in the format 'Authorization: Bearer "
    "<YOUR_API_KEY>'",
    "API key in the Authorization header of the request is malformed",
    "API key in the Authorization header of the request does not exist",
    "request contains multiple Krenalis-Workspace headers",
    "\"Krenalis-Workspace\" header cannot be provided with a workspace restricted key",
    "Krenalis-Workspace header is invalid; it should be in the format 'Krenalis-Workspace: "
    "<WORKSPACE_ID>'",
};

static const api_msgs INGESTION_MSGS = {
    400,
    "BadRequest",
    "Authorization header is invalid; use \"Authorization: Bearer <KEY>\" with an API key or an "
    "event write key",
    "API key in the Authorization header is malformed; check that it was copied correctly",
    "API key in the Authorization header is invalid",
    "request contains multiple \"Krenalis-Workspace\" headers",
    "\"Krenalis-Workspace\" header cannot be provided with a workspace restricted key",
    "\"Krenalis-Workspace\" header is invalid; use \"Krenalis-Workspace: <WORKSPACE_ID>\"",
};

void ka_decision_repeated(ka_decision *dec, const ka_route *route, int workspace)
{
    const api_msgs *m = route->endpoint == KA_EP_API ? &API_MSGS : &INGESTION_MSGS;

    memset(dec, 0, sizeof(*dec));
    refuse(dec, KA_REFUSAL_REPEATED, 400, "BadRequest", workspace ? m->ws_multi : MSG_MULTI_AUTH);
}

/* Authenticates an api_ token: key, its organization and restricted workspace. Returns KA_GO_ON
 * and fills rec when the tables go on, else the verdict. */
static ka_verdict api_key_auth(const char *tok, size_t len, const ka_lookup *lk, const api_msgs *m,
                               ka_key_rec *rec, ka_decision *dec)
{
    uint8_t payload[KA_PAYLOAD_LEN];
    ka_entity org, ws;
    ka_store_status rc;

    if (!ka_api_body_parse(tok + 4, len - 4, payload))
        return refuse(dec, KA_REFUSAL_MALFORMED, m->malformed_status, m->malformed_code,
                      m->malformed);
    rc = lk->api_key(lk->ctx, payload, rec);
    if (rc != KA_OK && rc != KA_NOTFOUND)
        return unavailable(dec);
    if (rc == KA_NOTFOUND || rec->type != KA_KEY_API)
        return refuse(dec, KA_REFUSAL_UNKNOWN_KEY, 401, "Unauthorized", m->unknown);
    rc = lk->org(lk->ctx, rec->org, &org);
    if (rc == KA_FAIL)
        return unavailable(dec);
    if (rc == KA_NOTFOUND)
        return refuse(dec, KA_REFUSAL_UNKNOWN_KEY, 401, "Unauthorized", m->unknown);
    if (rec->ws[0] != '\0') {
        rc = lk->ws(lk->ctx, rec->ws, &ws);
        if (rc == KA_FAIL)
            return unavailable(dec);
        if (rc == KA_NOTFOUND || strcmp(ws.org, rec->org) != 0)
            return refuse(dec, KA_REFUSAL_UNKNOWN_KEY, 401, "Unauthorized", m->unknown);
    }
    if (!org.enabled)
        return refuse_id(dec, KA_REFUSAL_DISABLED_ORG, 422, "OrganizationDisabled",
                         "organization %s is disabled", rec->org);
    return KA_GO_ON;
}

/* The Krenalis-Workspace rows; fills selected (possibly "") on success. */
static ka_verdict select_workspace(const ka_request *req, const ka_lookup *lk, const api_msgs *m,
                                   const ka_key_rec *rec, char selected[KA_ID_LEN + 1],
                                   ka_decision *dec)
{
    const char *h = req->workspace;
    ka_entity ws;
    ka_store_status rc;

    set_id(selected, KA_ID_LEN + 1, rec->ws);
    if (h != NULL) {
        if (strchr(h, ',') != NULL)
            return refuse(dec, KA_REFUSAL_REPEATED, 400, "BadRequest", m->ws_multi);
        if (rec->ws[0] != '\0')
            return refuse(dec, KA_REFUSAL_WS_INVALID, 400, "BadRequest", m->ws_restricted);
        if (!ka_id_valid(h, strlen(h)))
            return refuse(dec, KA_REFUSAL_WS_INVALID, 400, "BadRequest", m->ws_invalid);
        rc = lk->ws(lk->ctx, h, &ws);
        if (rc == KA_FAIL)
            return unavailable(dec);
        if (rc == KA_NOTFOUND || strcmp(ws.org, rec->org) != 0)
            return refuse_id(dec, KA_REFUSAL_WS_UNKNOWN, 404, "NotFound",
                             "workspace %s does not exist", h);
        set_id(selected, KA_ID_LEN + 1, h);
    }
    if (req->ws_policy == KA_WS_REQUIRED && selected[0] == '\0')
        return refuse(dec, KA_REFUSAL_WS_POLICY, 403, "Forbidden",
                      "Krenalis-Workspace header is missing; provide it in the format "
                      "'Krenalis-Workspace: <WORKSPACE_ID>'");
    if (req->ws_policy == KA_WS_FORBIDDEN && selected[0] != '\0')
        return refuse(dec, KA_REFUSAL_WS_POLICY, 401, "Unauthorized",
                      "organization request cannot specify a workspace");
    return KA_GO_ON;
}

/* Common head of the Authorization rows: multiple, then Bearer syntax. */
static ka_verdict bearer_token(const char *auth, const char *invalid_msg, const char **tok,
                               size_t *len, ka_decision *dec)
{
    if (strchr(auth, ',') != NULL)
        return refuse(dec, KA_REFUSAL_REPEATED, 400, "BadRequest", MSG_MULTI_AUTH);
    if (!ka_bearer_parse(auth, tok, len))
        return refuse(dec, KA_REFUSAL_BAD_AUTHZ, 400, "BadRequest", invalid_msg);
    dec->token_presented = 1;
    return KA_GO_ON;
}

static int has_api_prefix(const char *tok, size_t len)
{
    return len >= 4 && memcmp(tok, "api_", 4) == 0;
}

/* ---- §6.1 ---- */

static ka_verdict decide_api(const ka_request *req, const ka_lookup *lk, ka_decision *dec)
{
    const char *tok;
    size_t len;
    ka_key_rec rec;
    char ws[KA_ID_LEN + 1];
    ka_verdict v;

    if (req->authorization == NULL)
        return refuse(dec, KA_REFUSAL_MISSING, 401, "Unauthorized",
                      "Authorization header with the API key is not present in the request");
    if ((v = bearer_token(req->authorization, API_MSGS.invalid_bearer, &tok, &len, dec)) !=
        KA_GO_ON)
        return v;
    if (!has_api_prefix(tok, len))
        return refuse(dec, KA_REFUSAL_WRONG_ENDPOINT, 400, "BadRequest",
                      "API key is not valid; API keys start with the api_ prefix");
    if ((v = api_key_auth(tok, len, lk, &API_MSGS, &rec, dec)) != KA_GO_ON)
        return v;
    if ((v = select_workspace(req, lk, &API_MSGS, &rec, ws, dec)) != KA_GO_ON)
        return v;
    return accept(dec, KA_KEY_API, rec.id, rec.org, ws, NULL);
}

/* ---- §6.2 ---- */

/* A write key's organization: gone means the key is not valid, disabled means 503. */
static ka_verdict write_key_org(const ka_lookup *lk, const ka_key_rec *rec, const char *unknown_msg,
                                ka_decision *dec)
{
    ka_entity org;
    ka_store_status rc = lk->org(lk->ctx, rec->org, &org);

    if (rc == KA_FAIL)
        return unavailable(dec);
    if (rc == KA_NOTFOUND)
        return refuse(dec, KA_REFUSAL_UNKNOWN_KEY, 401, "Unauthorized", unknown_msg);
    if (!org.enabled)
        return refuse(dec, KA_REFUSAL_DISABLED_ORG, 503, "ServiceUnavailable",
                      "organization is disabled");
    return KA_GO_ON;
}

/* Looks a write key up (no store read when its form is wrong). */
static ka_verdict find_write_key(const char *key, size_t len, const ka_lookup *lk,
                                 const char *unknown_msg, ka_key_rec *rec, ka_decision *dec)
{
    ka_store_status rc;

    if (!ka_write_key_valid(key, len))
        return refuse(dec, KA_REFUSAL_UNKNOWN_KEY, 401, "Unauthorized", unknown_msg);
    rc = lk->write_key(lk->ctx, key, rec);
    if (rc != KA_OK && rc != KA_NOTFOUND)
        return unavailable(dec);
    if (rc == KA_NOTFOUND || rec->type != KA_KEY_WRITE)
        return refuse(dec, KA_REFUSAL_UNKNOWN_KEY, 401, "Unauthorized", unknown_msg);
    return KA_GO_ON;
}

/* A write key authenticates only for a Source connection (SPEC §11.2); the settings endpoint
 * also needs the connection's strategy set. Else it is unknown, as in Krenalis. */
static ka_verdict write_key_conn(const ka_lookup *lk, const ka_key_rec *rec, int need_strategy,
                                 const char *unknown_msg, ka_decision *dec)
{
    ka_entity conn;
    ka_store_status rc = lk->conn(lk->ctx, rec->conn, &conn);

    if (rc == KA_FAIL)
        return unavailable(dec);
    if (rc == KA_NOTFOUND || (conn.conn_flags & KA_CONN_DESTINATION) ||
        (need_strategy && (conn.conn_flags & KA_CONN_NO_STRATEGY)))
        return refuse(dec, KA_REFUSAL_UNKNOWN_KEY, 401, "Unauthorized", unknown_msg);
    return KA_GO_ON;
}

/* An ingestion write key: known, of a Source connection, of an enabled organization. That
 * depends on the key and the store's snapshot alone, so a look-up cache may remember it. */
static ka_verdict ingest_write_key(const char *key, size_t len, const ka_lookup *lk,
                                   const char *unknown_msg, ka_key_rec *rec, ka_decision *dec)
{
    ka_verdict v;

    if (lk->wk_recall != NULL && ka_write_key_valid(key, len) && lk->wk_recall(lk->ctx, key, rec))
        return KA_GO_ON;
    if ((v = find_write_key(key, len, lk, unknown_msg, rec, dec)) != KA_GO_ON ||
        (v = write_key_conn(lk, rec, 0, unknown_msg, dec)) != KA_GO_ON ||
        (v = write_key_org(lk, rec, unknown_msg, dec)) != KA_GO_ON)
        return v;
    if (lk->wk_remember != NULL)
        lk->wk_remember(lk->ctx, key, rec);
    return KA_GO_ON;
}

static ka_verdict ingest_with_api_key(const ka_request *req, const char *tok, size_t len,
                                      const ka_lookup *lk, ka_decision *dec)
{
    ka_key_rec rec;
    ka_entity conn;
    char ws[KA_ID_LEN + 1];
    const ka_jfield *cid;
    ka_verdict v;
    ka_store_status rc;

    if ((v = api_key_auth(tok, len, lk, &INGESTION_MSGS, &rec, dec)) != KA_GO_ON)
        return v;
    if ((v = select_workspace(req, lk, &INGESTION_MSGS, &rec, ws, dec)) != KA_GO_ON)
        return v;
    if (req->body == NULL)
        return need_body(dec);
    cid = &req->body->connection_id;
    /* A repeated connectionId could be read differently by the backend: refuse it. */
    if (!req->body->valid_object || cid->kind != KA_JF_STRING || cid->too_long || cid->len == 0 ||
        cid->duplicate)
        return refuse(dec, KA_REFUSAL_CONNECTION_ID, 400, "BadRequest",
                      "parameter 'connectionId' is required when using API key authentication");
    if (!ka_id_valid(cid->val, cid->len))
        return refuse_id(dec, KA_REFUSAL_UNKNOWN_CONN, 422, "ConnectionNotExist",
                         "connection %s does not exist", cid->val);
    rc = lk->conn(lk->ctx, cid->val, &conn);
    if (rc == KA_FAIL)
        return unavailable(dec);
    if (rc == KA_NOTFOUND || strcmp(conn.org, rec.org) != 0 ||
        (ws[0] != '\0' && strcmp(conn.ws, ws) != 0))
        return refuse_id(dec, KA_REFUSAL_UNKNOWN_CONN, 422, "ConnectionNotExist",
                         "connection %s does not exist", cid->val);
    return accept(dec, KA_KEY_API, rec.id, rec.org, conn.ws, conn.id);
}

static ka_verdict ingest_with_body_key(const ka_request *req, const ka_lookup *lk, ka_decision *dec)
{
    static const char unknown[] = "the event write key in the request body does not exist";
    const ka_jfield *wk;
    ka_key_rec rec;
    ka_verdict v;

    if (!req->route.body_key_allowed)
        return refuse(dec, KA_REFUSAL_MISSING, 401, "Unauthorized",
                      "Authorization header is missing");
    if (req->body == NULL)
        return need_body(dec);
    wk = &req->body->write_key;
    /* A repeated writeKey (also under another case) could be read differently by the
     * backend: refuse it. */
    if (req->body->valid_object && wk->duplicate)
        return refuse(dec, KA_REFUSAL_BODY_WRITE_KEY, 400, "BadRequest",
                      "property 'writeKey' is not a valid string");
    if (!req->body->valid_object || wk->kind == KA_JF_ABSENT)
        return refuse(dec, KA_REFUSAL_MISSING, 401, "Unauthorized",
                      "Authorization header is missing");
    if (wk->kind != KA_JF_STRING)
        return refuse(dec, KA_REFUSAL_BODY_WRITE_KEY, 400, "BadRequest",
                      "property 'writeKey' is not a valid string");
    if (!wk->too_long && wk->len == 0)
        return refuse(dec, KA_REFUSAL_BODY_WRITE_KEY, 400, "BadRequest",
                      "property 'writeKey' cannot be empty");
    dec->token_presented = 1;
    if ((v = ingest_write_key(wk->val, wk->too_long ? 0 : wk->len, lk, unknown, &rec, dec)) !=
        KA_GO_ON)
        return v;
    if (req->body->connection_id.kind != KA_JF_ABSENT || req->body->connection_id.variant)
        return refuse(dec, KA_REFUSAL_CONNECTION_ID, 400, "BadRequest",
                      "property 'connectionId' cannot be provided when using an event write key "
                      "for authentication");
    return accept(dec, KA_KEY_WRITE, rec.id, rec.org, rec.ws, rec.conn);
}

static ka_verdict decide_ingestion(const ka_request *req, const ka_lookup *lk, ka_decision *dec)
{
    static const char unknown[] = "event write key in the Authorization header is not valid";
    const char *tok;
    size_t len;
    ka_key_rec rec;
    ka_verdict v;

    if (req->authorization == NULL)
        return ingest_with_body_key(req, lk, dec);
    if ((v = bearer_token(req->authorization, INGESTION_MSGS.invalid_bearer, &tok, &len, dec)) !=
        KA_GO_ON)
        return v;
    if (has_api_prefix(tok, len))
        return ingest_with_api_key(req, tok, len, lk, dec);
    /* A write key is good only on the exact ingestion paths. */
    if (req->route.noncanonical)
        return refuse(dec, KA_REFUSAL_WRONG_ENDPOINT, 401, "Unauthorized", unknown);
    if ((v = ingest_write_key(tok, len, lk, unknown, &rec, dec)) != KA_GO_ON)
        return v;
    return accept(dec, KA_KEY_WRITE, rec.id, rec.org, rec.ws, rec.conn);
}

/* ---- §6.3 ---- */

static ka_verdict decide_settings(const ka_request *req, const ka_lookup *lk, ka_decision *dec)
{
    static const char unknown[] = "event write key in the path is invalid";
    const char *key = req->route.settings_key;
    ka_key_rec rec;
    ka_verdict v;

    if (key == NULL || key[0] == '\0' || strchr(key, '/') != NULL)
        return refuse(dec, KA_REFUSAL_SETTINGS_PATH, 404, "NotFound", "");
    dec->token_presented = 1;
    if ((v = find_write_key(key, strlen(key), lk, unknown, &rec, dec)) != KA_GO_ON)
        return v;
    if ((v = write_key_conn(lk, &rec, 1, unknown, dec)) != KA_GO_ON)
        return v;
    return accept(dec, KA_KEY_WRITE, rec.id, rec.org, rec.ws, rec.conn);
}

/* ---- §6.4 ---- */

static ka_verdict decide_orgs(const ka_request *req, ka_decision *dec)
{
    const char *tok;
    size_t len;
    ka_verdict v;

    if (req->authorization == NULL)
        return refuse(dec, KA_REFUSAL_MISSING, 401, "Unauthorized",
                      "Authorization header with the platform management API key is not present "
                      "in the request");
    if ((v = bearer_token(req->authorization,
                          "Authorization header is invalid; it should be in the format "
                          "'Authorization: Bearer <YOUR_PLATFORM_MANAGEMENT_API_KEY>'",
                          &tok, &len, dec)) != KA_GO_ON)
        return v;
    if (len < 4 || memcmp(tok, "org_", 4) != 0)
        return refuse(dec, KA_REFUSAL_WRONG_ENDPOINT, 400, "BadRequest",
                      "platform management APIs require specific keys for authentication (these "
                      "are keys that begin with 'org_')");
    /* Another spelling of the path: the backend routes it elsewhere (ka_classify). */
    if (req->route.noncanonical)
        return refuse(dec, KA_REFUSAL_WRONG_ENDPOINT, 401, "Unauthorized",
                      "platform management API key in the Authorization header of the request is "
                      "not valid");
    /* The length of a key is public (SPEC §2); only equal-length tokens reach the comparison. */
    if (req->orgs_key == NULL || len != strlen(req->orgs_key) ||
        !ka_ct_equal(tok, req->orgs_key, len))
        return refuse(dec, KA_REFUSAL_ORGS_KEY, 401, "Unauthorized",
                      "platform management API key in the Authorization header of the request is "
                      "not valid");
    return accept(dec, KA_KEY_ORGS, "organizations", NULL, NULL, NULL);
}

ka_verdict ka_decide(const ka_request *req, const ka_lookup *lk, ka_decision *dec)
{
    memset(dec, 0, sizeof(*dec));
    switch (req->route.endpoint) {
    case KA_EP_INGESTION:
        return decide_ingestion(req, lk, dec);
    case KA_EP_SETTINGS:
        return decide_settings(req, lk, dec);
    case KA_EP_ORGS:
        return decide_orgs(req, dec);
    default:
        return decide_api(req, lk, dec);
    }
}

/* ---- the memo key ---- */

/* decide_api reads the Authorization and Krenalis-Workspace values and the workspace policy,
 * nothing else of the request: they are the whole key. */
static int memo_applies(const ka_request *req)
{
    return req->route.endpoint == KA_EP_API && req->body == NULL && req->authorization != NULL;
}

static int memo_keeps(const ka_request *req, size_t *auth_len, size_t *ws_len)
{
    if (!memo_applies(req))
        return 0;
    *auth_len = strnlen(req->authorization, KA_MEMO_AUTH_MAX + 1);
    *ws_len = req->workspace ? strnlen(req->workspace, KA_ID_LEN + 1) : 0;
    return *auth_len > 0 && *auth_len <= KA_MEMO_AUTH_MAX && *ws_len <= KA_ID_LEN;
}

int ka_memo_key_set(ka_memo_key *k, const ka_request *req)
{
    size_t an, wn;

    if (!memo_keeps(req, &an, &wn))
        return 0;
    memset(k, 0, sizeof(*k));
    memcpy(k->auth, req->authorization, an);
    k->auth_len = (unsigned char)an;
    k->has_ws = req->workspace != NULL;
    k->ws_policy = (unsigned char)req->ws_policy;
    if (wn > 0)
        memcpy(k->ws, req->workspace, wn);
    return 1;
}

int ka_memo_key_match(const ka_memo_key *k, const ka_request *req)
{
    const char *a = req->authorization, *w = req->workspace;

    /* k was set from a request memo_keeps accepted: equal values pass its length limits too. */
    if (k->auth_len == 0 || !memo_applies(req) || (w != NULL) != k->has_ws ||
        (unsigned)req->ws_policy != k->ws_policy)
        return 0;
    if (w != NULL && strcmp(w, k->ws) != 0)
        return 0;
    return strnlen(a, (size_t)k->auth_len + 1) == k->auth_len &&
           ka_ct_equal(k->auth, a, k->auth_len);
}

/* ---- look-ups over the store ---- */

/* The transaction of a look-up, begun on first use. */
static ka_store_status lk_txn(ka_store_lookup_ctx *c)
{
    if (c->txn != NULL)
        return KA_OK;
    if (c->begin == NULL || c->begin(c->begin_arg, &c->st, &c->txn) != KA_OK) {
        c->txn = NULL;
        return KA_FAIL;
    }
    /* A commit since attach: answers already taken from the cache are of an older snapshot
     * (decide again); with none taken, the cache answers for the transaction's from now on,
     * so that one snapshot decides either way. */
    if (c->attached && ka_store_txn_id(c->txn) != c->snap.txnid) {
        if (c->hits > 0)
            c->mixed = 1;
        else
            c->snap.txnid = ka_store_txn_id(c->txn);
    }
    return KA_OK;
}

/* The store (for its HMAC key) and, with a cache, the snapshot it answers for. */
static ka_store_status lk_attach(ka_store_lookup_ctx *c)
{
    if (c->st != NULL)
        return KA_OK;
    if (c->cache == NULL || c->attach == NULL)
        return lk_txn(c);
    switch (c->attach(c->begin_arg, &c->st, &c->snap)) {
    case KA_OK:
        c->attached = 1;
        return KA_OK;
    case KA_NOTFOUND:
        return KA_OK;
    default:
        c->st = NULL;
        return KA_FAIL;
    }
}

/* Notes a read error inside the transaction, so the caller can say why it answered 503. */
static ka_store_status lk_read(ka_store_lookup_ctx *c, ka_store_status rc)
{
    if (rc == KA_FAIL)
        c->read_failed = 1;
    return rc;
}

/* Where the cache keeps the answer for src, its memory fetched meanwhile (the key's place is
 * known from the credential before the HMAC that gives its digest); 0 without a cache. */
static uint64_t lk_locate(ka_store_lookup_ctx *c, ka_kc_kind kind, const void *src, size_t len)
{
    uint64_t loc;

    if (c->cache == NULL)
        return 0;
    loc = ka_keycache_locate(c->cache, kind, src, len);
    ka_keycache_prefetch(c->cache, loc);
    return loc;
}

/* The cache's answer for the attached snapshot, when it has one. */
static int lk_cached(ka_store_lookup_ctx *c, ka_kc_kind kind, uint64_t loc, const void *key,
                     ka_kc_val *v)
{
    if (!c->attached || c->mixed || !ka_keycache_get(c->cache, &c->snap, kind, loc, key, v))
        return 0;
    c->hits++;
    return 1;
}

/* Counts a look-up the cache could have answered but did not. */
static void lk_missed(ka_store_lookup_ctx *c)
{
    if (c->attached)
        c->misses++;
}

uint64_t ka_store_lookup_txnid(const ka_store_lookup_ctx *c)
{
    if (c->txn != NULL)
        return ka_store_txn_id(c->txn);
    return c->attached ? c->snap.txnid : 0;
}

/* Keeps v for the snapshot the look-ups read (the attached file, the transaction's ID). */
static void lk_put(ka_store_lookup_ctx *c, ka_kc_kind kind, uint64_t loc, const void *key,
                   const ka_kc_val *v)
{
    ka_kc_snap snap = c->snap;

    snap.txnid = ka_store_lookup_txnid(c);
    ka_keycache_put(c->cache, &snap, kind, loc, key, v);
}

/* Keeps what the transaction found, for the snapshot it read. */
static void lk_keep(ka_store_lookup_ctx *c, ka_kc_kind kind, uint64_t loc, const void *key,
                    const ka_kc_val *v)
{
    if (c->attached && c->txn != NULL)
        lk_put(c, kind, loc, key, v);
}

static void id_put(char dst[KA_ID_LEN], const char *src)
{
    memset(dst, 0, KA_ID_LEN);
    memcpy(dst, src, strnlen(src, KA_ID_LEN));
}

/* A cache entry's value: a key's record, or an entity's. */
static void val_set(ka_kc_val *v, ka_key_type type, int enabled, unsigned flags, const char *id,
                    const char *org, const char *ws, const char *conn)
{
    memset(v, 0, sizeof(*v));
    v->type = (uint8_t)type;
    v->enabled = (uint8_t)enabled;
    v->flags = (uint8_t)flags;
    id_put(v->id, id);
    id_put(v->org, org);
    id_put(v->ws, ws);
    id_put(v->conn, conn);
}

static void id_get(char dst[KA_ID_LEN + 1], const char src[KA_ID_LEN])
{
    memcpy(dst, src, KA_ID_LEN);
    dst[KA_ID_LEN] = '\0';
}

/* A key's record from its cache entry (a key look-up's, or a write key's remembered pass). */
static void rec_from_val(ka_key_rec *rec, const ka_kc_val *v)
{
    memset(rec, 0, sizeof(*rec));
    rec->type = (ka_key_type)v->type;
    id_get(rec->id, v->id);
    id_get(rec->org, v->org);
    id_get(rec->ws, v->ws);
    id_get(rec->conn, v->conn);
}

static ka_store_status lk_key(ka_store_lookup_ctx *c, uint64_t loc,
                              const uint8_t digest[KA_DIGEST_LEN], ka_key_rec *rec)
{
    ka_kc_val v;
    ka_store_status rc;

    if (lk_cached(c, KA_KC_KEY, loc, digest, &v)) {
        rec_from_val(rec, &v);
        return KA_OK;
    }
    if (lk_txn(c) != KA_OK)
        return KA_FAIL;
    lk_missed(c);
    rc = lk_read(c, ka_get_key(c->txn, c->st, digest, rec));
    if (rc == KA_OK && c->attached) {
        val_set(&v, rec->type, 0, 0, rec->id, rec->org, rec->ws, rec->conn);
        /* A request whose decision may be remembered keeps its key only if it is not (ka_decide_
         * store): a remembered decision answers it next time, and the key's entry would only
         * take a place in the table. */
        if (c->tagged) {
            c->key_pending = 1;
            c->key_loc = loc;
            memcpy(c->key_digest, digest, KA_DIGEST_LEN);
            c->key_val = v;
        } else {
            lk_keep(c, KA_KC_KEY, loc, digest, &v);
        }
    }
    return rc;
}

static ka_store_status lk_api_key(void *ctx, const uint8_t payload[KA_PAYLOAD_LEN], ka_key_rec *rec)
{
    ka_store_lookup_ctx *c = ctx;
    uint8_t digest[KA_DIGEST_LEN];
    uint64_t loc = lk_locate(c, KA_KC_KEY, payload, KA_PAYLOAD_LEN);

    if (lk_attach(c) != KA_OK)
        return KA_FAIL;
    ka_digest_api(c->st, payload, digest);
    return lk_key(c, loc, digest, rec);
}

static ka_store_status lk_write_key(void *ctx, const char key[KA_WRITE_KEY_LEN], ka_key_rec *rec)
{
    ka_store_lookup_ctx *c = ctx;
    uint8_t digest[KA_DIGEST_LEN];
    uint64_t loc = lk_locate(c, KA_KC_KEY, key, KA_WRITE_KEY_LEN);

    if (lk_attach(c) != KA_OK)
        return KA_FAIL;
    ka_digest_write(c->st, key, digest);
    return lk_key(c, loc, digest, rec);
}

typedef ka_store_status (*entity_get)(ka_store_txn *, const ka_store *, const char *, ka_entity *);

/* An organization, workspace or connection by ID, from the cache or the transaction. */
static ka_store_status lk_entity(ka_store_lookup_ctx *c, ka_kc_kind kind, entity_get get,
                                 const char *id, ka_entity *e)
{
    ka_kc_val v;
    ka_store_status rc;
    uint64_t loc = lk_locate(c, kind, id, strnlen(id, KA_ID_LEN));

    if (lk_attach(c) != KA_OK)
        return KA_FAIL;
    if (lk_cached(c, kind, loc, id, &v)) {
        memset(e, 0, sizeof(*e));
        id_get(e->id, v.id);
        id_get(e->org, v.org);
        id_get(e->ws, v.ws);
        e->enabled = v.enabled;
        e->conn_flags = v.flags;
        return KA_OK;
    }
    if (lk_txn(c) != KA_OK)
        return KA_FAIL;
    lk_missed(c);
    rc = lk_read(c, get(c->txn, c->st, id, e));
    if (rc == KA_OK && c->attached) {
        val_set(&v, KA_KEY_NONE, e->enabled != 0, e->conn_flags, e->id, e->org, e->ws, "");
        lk_keep(c, kind, loc, id, &v);
    }
    return rc;
}

static ka_store_status lk_org(void *ctx, const char *id, ka_entity *e)
{
    return lk_entity(ctx, KA_KC_ORG, ka_get_org, id, e);
}

static ka_store_status lk_ws(void *ctx, const char *id, ka_entity *e)
{
    return lk_entity(ctx, KA_KC_WS, ka_get_ws, id, e);
}

static ka_store_status lk_conn(void *ctx, const char *id, ka_entity *e)
{
    return lk_entity(ctx, KA_KC_CONN, ka_get_conn, id, e);
}

/* A remembered entry (a decision, a write key's pass): its tag from in (wiped after), its place
 * from the tag, its set fetched from memory while the store's last commit is read; 1 and *v
 * when the cache holds it for the snapshot the store is at. No transaction begins. */
static int lk_recall(ka_store_lookup_ctx *c, ka_kc_kind kind, uint8_t *in, size_t n,
                     uint8_t tag[KA_KC_TAG_LEN], uint64_t *loc, ka_kc_val *v)
{
    ka_keycache_mac(c->cache, in, n, tag);
    ka_cleanse(in, n);
    *loc = ka_keycache_locate(c->cache, kind, tag, KA_KC_TAG_LEN);
    ka_keycache_prefetch(c->cache, *loc);
    return lk_attach(c) == KA_OK && lk_cached(c, kind, *loc, tag, v);
}

/* A write key's entry: the tag of the key alone (a leading 0, which no remembered decision's
 * inputs begin with). */
static int lk_wk_recall(void *ctx, const char key[KA_WRITE_KEY_LEN], ka_key_rec *rec)
{
    ka_store_lookup_ctx *c = ctx;
    uint8_t in[1 + KA_WRITE_KEY_LEN];
    ka_kc_val v;

    if (c->cache == NULL)
        return 0;
    in[0] = 0;
    memcpy(in + 1, key, KA_WRITE_KEY_LEN);
    c->wk_tagged = 1;
    if (!lk_recall(c, KA_KC_WKEY, in, sizeof(in), c->wk_tag, &c->wk_loc, &v))
        return 0;
    rec_from_val(rec, &v);
    return 1;
}

/* Remembers a write key that passed, for the one snapshot its look-ups read; not when they
 * mixed two (the decision is taken again on the newer alone). */
static void lk_wk_remember(void *ctx, const char key[KA_WRITE_KEY_LEN], const ka_key_rec *rec)
{
    ka_store_lookup_ctx *c = ctx;
    ka_kc_val v;

    (void)key;
    if (!c->wk_tagged || c->cache == NULL || !c->attached || c->mixed)
        return;
    val_set(&v, rec->type, 0, 0, rec->id, rec->org, rec->ws, rec->conn);
    lk_put(c, KA_KC_WKEY, c->wk_loc, c->wk_tag, &v);
}

void ka_store_lookup(ka_store_lookup_ctx *ctx, ka_lookup *lk)
{
    lk->ctx = ctx;
    lk->api_key = lk_api_key;
    lk->write_key = lk_write_key;
    lk->org = lk_org;
    lk->ws = lk_ws;
    lk->conn = lk_conn;
    lk->wk_recall = lk_wk_recall;
    lk->wk_remember = lk_wk_remember;
}

/* ---- remembered decisions ---- */

/* The inputs decide_api reads, each length before its bytes (so that no two inputs encode
 * alike): 0 when the request is not one whose decision is remembered. */
#define INPUTS_MAX (3 + KA_MEMO_AUTH_MAX + KA_ID_LEN)
static size_t decision_inputs(const ka_request *req, uint8_t in[INPUTS_MAX])
{
    size_t an, wn;

    if (!memo_keeps(req, &an, &wn) || an == 0)
        return 0;
    in[0] = (uint8_t)an;
    in[1] = (uint8_t)req->ws_policy;
    in[2] = req->workspace == NULL ? 0xff : (uint8_t)wn;
    memcpy(in + 3, req->authorization, an);
    memcpy(in + 3 + an, req->workspace ? req->workspace : "", wn);
    return 3 + an + wn;
}

/* The identity accepted for req's inputs on the snapshot the store is at, when one is
 * remembered (lk_recall: no transaction begins and no B-tree is read, so a malformed or unknown
 * credential, never remembered, still reads none). */
static int recall(ka_store_lookup_ctx *c, const ka_request *req, ka_decision *dec)
{
    uint8_t in[INPUTS_MAX];
    size_t n = decision_inputs(req, in);
    ka_kc_val v;

    if (n == 0)
        return 0;
    c->tagged = 1;
    if (!lk_recall(c, KA_KC_DECISION, in, n, c->tag, &c->tag_loc, &v))
        return 0;
    /* accept()'s fields on a zeroed decision: no status, code or message. */
    memset(dec, 0, sizeof(*dec));
    dec->verdict = KA_VERDICT_ACCEPT;
    dec->token_presented = 1;
    dec->id.type = (ka_key_type)v.type;
    id_get(dec->id.key_id, v.id);
    id_get(dec->id.org, v.org);
    id_get(dec->id.ws, v.ws);
    id_get(dec->id.conn, v.conn);
    return 1;
}

/* Remembers an accepted decision for the one snapshot it read (the transaction's, or the
 * cache's when that answered every look-up). */
static int remember(ka_store_lookup_ctx *c, const ka_decision *dec)
{
    ka_kc_val v;

    if (!c->tagged || c->cache == NULL || !c->attached)
        return 0;
    val_set(&v, dec->id.type, 0, 0, dec->id.key_id, dec->id.org, dec->id.ws, dec->id.conn);
    lk_put(c, KA_KC_DECISION, c->tag_loc, c->tag, &v);
    return 1;
}

ka_verdict ka_decide_store(const ka_request *req, ka_store_lookup_ctx *ctx, ka_decision *dec)
{
    ka_lookup lk;
    ka_verdict v;

    if (ctx->cache != NULL && recall(ctx, req, dec))
        return KA_VERDICT_ACCEPT;
    ka_store_lookup(ctx, &lk);
    v = ka_decide(req, &lk, dec);
    if (ctx->mixed) {
        /* The store committed between the cache's answers and the transaction: decide again
         * on the transaction's snapshot alone (and remember nothing). */
        ctx->cache = NULL;
        ctx->attached = 0;
        ctx->mixed = 0;
        v = ka_decide(req, &lk, dec);
    }
    if (!(v == KA_VERDICT_ACCEPT && remember(ctx, dec)) && ctx->key_pending)
        lk_keep(ctx, KA_KC_KEY, ctx->key_loc, ctx->key_digest, &ctx->key_val);
    return v;
}
