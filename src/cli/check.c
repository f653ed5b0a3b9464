/* krenalis-keys check: the module's decision for a request, from the command line (cli.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "cli.h"
#include "decide.h"
#include "json.h"
#include "names.h"
#include "token.h"

#define MAX_BODY ((size_t)16 << 20) /* check --body: larger files are refused */

/* Reads a whole file (check --body). */
static int read_file(const char *path, char **buf, size_t *len)
{
    FILE *f = fopen(path, "rb");
    size_t cap = MAX_BODY + 1;

    if (f == NULL)
        return fail("cannot open %s: %s", path, strerror(errno));
    *buf = malloc(cap);
    if (*buf == NULL) {
        fclose(f);
        return fail("out of memory");
    }
    *len = fread(*buf, 1, cap, f);
    if (ferror(f) || *len > MAX_BODY) {
        int big = !ferror(f);
        fclose(f);
        free(*buf);
        *buf = NULL;
        return big ? fail("%s is larger than %zu bytes", path, MAX_BODY)
                   : fail("cannot read %s", path);
    }
    fclose(f);
    return EXIT_OK;
}

typedef struct {
    ka_request req;
    const char *body; /* what --body holds, or "{}" */
    size_t body_len;
    char orgs_key[KA_ORG_KEY_LEN + 1];
} check_arg;

/* TOKEN "-": the first line of standard input, so that the token stays out of ps and the
 * shell history. */
static char *read_token(const char *arg)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;

    if (strcmp(arg, "-") != 0)
        return strdup(arg);
    if ((n = getline(&line, &cap, stdin)) < 0) {
        free(line);
        return strdup("");
    }
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        line[--n] = '\0';
    return line;
}

/* Fills the request from the options; the caller frees a->req.authorization. */
static int check_request(cli *c, check_arg *a)
{
    const char *key = getenv(KA_ORGS_KEY_ENV);
    ka_endpoint ep = KA_EP_AUTO;
    char msg[256], *auth, *tok;

    /* The words of KrenalisAuthEndpoint and KrenalisAuthWorkspace, with their rules (names.h). */
    if (c->a.opt[OPT_ENDPOINT] && !ka_endpoint_parse(c->a.opt[OPT_ENDPOINT], &ep))
        return fail("invalid --endpoint '%s': expected one of " KA_ENDPOINT_NAMES,
                    c->a.opt[OPT_ENDPOINT]);
    if (c->a.opt[OPT_WS_POLICY] && !ka_ws_policy_parse(c->a.opt[OPT_WS_POLICY], &a->req.ws_policy))
        return fail("invalid --workspace-policy '%s': expected one of " KA_WS_POLICY_NAMES,
                    c->a.opt[OPT_WS_POLICY]);
    if (key != NULL) {
        if (ka_org_key_check(KA_ORGS_KEY_ENV, key, msg, sizeof(msg)) != NULL)
            return fail("%s", msg);
        memcpy(a->orgs_key, key, sizeof(a->orgs_key));
        a->req.orgs_key = a->orgs_key;
    }
    ka_classify(c->a.opt[OPT_METHOD] ? c->a.opt[OPT_METHOD] : "GET",
                c->a.opt[OPT_PATH] ? c->a.opt[OPT_PATH] : "/v1/", ep, &a->req.route);
    a->req.workspace = c->a.opt[OPT_WS];
    if ((tok = read_token(c->pos[0])) == NULL ||
        (auth = malloc(strlen(tok) + sizeof("Bearer "))) == NULL) {
        free(tok);
        return fail("out of memory");
    }
    strcpy(auth, "Bearer ");
    strcat(auth, tok);
    OPENSSL_cleanse(tok, strlen(tok));
    free(tok);
    a->req.authorization = auth;
    return EXIT_OK;
}

static ka_verdict decide_in_txn(void *arg, const ka_request *req, ka_decision *dec)
{
    return ka_decide(req, arg, dec);
}

/* The body: what --body holds, or "{}". */
static int scan_body(void *arg, ka_body_fields *fields)
{
    const check_arg *a = arg;

    ka_json_scan(a->body, a->body_len, fields);
    return 0;
}

/* One read transaction, as the module does per request; the body only when it is needed
 * (ka_decide_with_body, the module's step). */
static void check_decide(const ka_store *st, check_arg *a, ka_decision *dec)
{
    char err[256];
    ka_store_lookup_ctx ctx = {st, NULL};
    ka_body_fields fields;
    ka_lookup lk;

    if (ka_store_read_begin(st, &ctx.txn, err, sizeof(err)) != KA_OK) {
        memset(dec, 0, sizeof(*dec));
        ka_decision_unavailable(dec);
        return;
    }
    ka_store_lookup(&ctx, &lk);
    ka_decide_with_body(&a->req, decide_in_txn, &lk, scan_body, a, &fields, dec);
    a->req.body = NULL;
    ka_store_abort(ctx.txn);
}

static int print_decision(const cli *c, const ka_decision *d)
{
    const ka_identity *id = &d->id;
    char body[1024];
    size_t n;

    int status = ka_verdict_status(d);

    if (d->verdict == KA_VERDICT_ACCEPT) {
        if (c->json)
            return emit(c,
                        jobj("status", json_object_new_int(status), "identity",
                             jobj("type", jstr(ka_key_type_name(id->type)), "organization",
                                  jopt(id->org), "workspace", jopt(id->ws), "connection",
                                  jopt(id->conn), "keyId", jopt(id->key_id), END),
                             END),
                        NULL);
        printf("%d %s organization=%s workspace=%s connection=%s key=%s\n", status,
               ka_key_type_name(id->type), dash(id->org), dash(id->ws), dash(id->conn),
               dash(id->key_id));
        return flush_stdout();
    }
    if (c->json)
        emit(c,
             jobj("status", json_object_new_int(status), "error",
                  jobj("code", jstr(d->code), "message", jstr(d->message), END), END),
             NULL);
    else {
        n = ka_json_error(body, sizeof(body), d->code ? d->code : "", d->message);
        printf("%d %.*s", status, (int)n, body);
        flush_stdout();
    }
    return EXIT_FAIL;
}

int cmd_check(cli *c)
{
    check_arg a;
    ka_decision dec;
    char *body = NULL;
    ka_store *st = NULL;
    int rc;

    memset(&a, 0, sizeof(a));
    a.body = "{}";
    a.body_len = 2;
    rc = check_request(c, &a);
    if (rc == EXIT_OK && c->a.opt[OPT_BODY]) {
        rc = read_file(c->a.opt[OPT_BODY], &body, &a.body_len);
        a.body = body;
    }
    if (rc == EXIT_OK && (st = open_store(c, 1)) == NULL)
        rc = EXIT_FAIL;
    if (rc == EXIT_OK) {
        check_decide(st, &a, &dec);
        ka_store_close(st);
    }
    if (a.req.authorization)
        OPENSSL_cleanse((void *)a.req.authorization, strlen(a.req.authorization));
    free((void *)a.req.authorization);
    free(body);
    return rc == EXIT_OK ? print_decision(c, &dec) : rc;
}
