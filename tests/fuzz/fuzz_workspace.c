/* libFuzzer target: the Krenalis-Workspace check (SPEC §2 IDs, §6.1 and §6.2 workspace rows).
 *
 * The input is the header value (an embedded NUL ends it, as in httpd's header table). It is
 * checked with ka_id_valid, and decided by ka_decide with a valid API key over a fake store, on
 * an api endpoint and on an ingestion endpoint, for an unrestricted and a workspace-restricted
 * key, under each KrenalisAuthWorkspace policy. Properties:
 *   - ka_id_valid agrees with "exactly 12 characters of the base58 alphabet";
 *   - each decision equals the SPEC row that applies, in the SPEC's order (status, code and
 *     exact message), and an accepted request selects exactly the header's workspace;
 *   - the store is asked only about valid IDs (fake_store.h), and about no workspace at all
 *     when the header is refused before the look-up. */
#include "decide.h"
#include "fake_data.h"
#include "fuzz_common.h"
#include "json.h"
#include "token.h"

static int model_id(const uint8_t *s, size_t n)
{
    static const char b58[] = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
    if (n != 12)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (s[i] == 0 || memchr(b58, s[i], sizeof(b58) - 1) == NULL)
            return 0;
    return 1;
}

static void expect(const ka_decision *d, int status, const char *code, const char *msg)
{
    if (ka_verdict_status(d) != status || (code && (!d->code || strcmp(d->code, code) != 0)) ||
        (msg && strcmp(d->message, msg) != 0)) {
        fprintf(stderr, "got %d %s \"%s\", want %d %s \"%s\"\n", ka_verdict_status(d),
                d->code ? d->code : "-", d->message, status, code ? code : "-", msg ? msg : "-");
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *h = fuzz_cstr(data, size);
    size_t hl = strlen(h);
    int valid = model_id((const uint8_t *)h, hl);
    const fake_ent *ws = valid ? fake_find_ws(h) : NULL;
    int in_org = ws && strcmp(ws->org, F_ORG_A) == 0;
    ka_body_fields body;
    static const char body_json[] = "{\"connectionId\":\"" F_CN_A1 "\",\"batch\":[]}";
    char notfound[64];

    fake_init();
    {
        uint8_t *copy = fuzz_dup(data, size);
        CHECK(ka_id_valid((const char *)copy, size) == model_id(copy, size));
        free(copy);
    }
    CHECK(ka_id_valid(h, hl) == valid);
    ka_json_scan(body_json, sizeof(body_json) - 1, &body);
    CHECK(body.valid_object);
    snprintf(notfound, sizeof(notfound), "workspace %s does not exist", h);

    for (int ep = 0; ep < 2; ep++) {
        int ingestion = ep == 1;
        for (int k = 0; k < 2; k++) {
            const fake_key *key = &FAKE_API[k]; /* A0 unrestricted, A1 restricted to WS_A1 */
            char auth[80];
            for (int pol = KA_WS_OPTIONAL; pol <= KA_WS_FORBIDDEN; pol++) {
                ka_request req;
                ka_decision d;
                ka_lookup lk;
                fake_store fc;

                memset(&req, 0, sizeof(req));
                snprintf(auth, sizeof(auth), "Bearer %s", key->token);
                req.route.endpoint = ingestion ? KA_EP_INGESTION : KA_EP_API;
                req.route.body_key_allowed = ingestion;
                req.authorization = auth;
                req.workspace = h;
                req.ws_policy = (ka_ws_policy)pol;
                req.body = ingestion ? &body : NULL;
                fake_lookup(&fc, &FAKE_DATA, &lk);
                ka_decide(&req, &lk, &d);

                if (strchr(h, ',')) {
                    expect(&d, 400, "BadRequest",
                           ingestion ? "request contains multiple \"Krenalis-Workspace\" headers"
                                     : "request contains multiple Krenalis-Workspace headers");
                } else if (key->ws[0]) {
                    expect(&d, 400, "BadRequest",
                           "\"Krenalis-Workspace\" header cannot be provided with a workspace "
                           "restricted key");
                } else if (!valid) {
                    expect(&d, 400, "BadRequest",
                           ingestion ? "\"Krenalis-Workspace\" header is invalid; use "
                                       "\"Krenalis-Workspace: <WORKSPACE_ID>\""
                                     : "Krenalis-Workspace header is invalid; it should be in "
                                       "the format 'Krenalis-Workspace: <WORKSPACE_ID>'");
                } else if (!in_org) {
                    expect(&d, 404, "NotFound", notfound);
                } else if (pol == KA_WS_FORBIDDEN) {
                    expect(&d, 401, "Unauthorized",
                           "organization request cannot specify a workspace");
                } else if (ingestion && strcmp(h, F_WS_A1) != 0) {
                    expect(&d, 422, "ConnectionNotExist", "connection " F_CN_A1 " does not exist");
                } else {
                    expect(&d, 200, NULL, "");
                    CHECK(d.id.type == KA_KEY_API);
                    CHECK(strcmp(d.id.key_id, key->id) == 0 && strcmp(d.id.org, F_ORG_A) == 0);
                    CHECK(strcmp(d.id.ws, h) == 0);
                    CHECK(strcmp(d.id.conn, ingestion ? F_CN_A1 : "") == 0);
                }
                CHECK(d.verdict == KA_VERDICT_ACCEPT || d.token_presented);
                /* A refused header costs no workspace look-up. */
                if (strchr(h, ',') || key->ws[0] || !valid)
                    CHECK(fc.ws_calls == (key->ws[0] ? 1 : 0));
            }
        }
    }
    free(h);
    return 0;
}
