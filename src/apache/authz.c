/* The Require providers (SPEC §5): krenalis-key-type, krenalis-workspace and
 * krenalis-organization match the identity the request was authenticated with. */
#include "ka_private.h"

#include <string.h>

#include "../token.h"

/* The words of a Require line, checked once when the configuration is read. */
typedef struct {
    int n;
    const char **words;
} require_words;

static const char *parse_words(cmd_parms *cmd, const char *line, const void **parsed,
                               int (*valid)(const char *), const char *what)
{
    require_words *w = apr_pcalloc(cmd->pool, sizeof(*w));
    apr_array_header_t *a = apr_array_make(cmd->pool, 2, sizeof(const char *));
    const char *word;

    while (*(word = ap_getword_conf(cmd->pool, &line)) != '\0') {
        if (!valid(word))
            return apr_pstrcat(cmd->pool, what, ": '", word, "' is not valid", NULL);
        *(const char **)apr_array_push(a) = word;
    }
    if (a->nelts == 0)
        return apr_pstrcat(cmd->pool, what, " needs at least one value", NULL);
    w->n = a->nelts;
    w->words = (const char **)a->elts;
    *parsed = w;
    return NULL;
}

static int valid_key_type(const char *s)
{
    ka_key_type t;
    return ka_key_type_parse(s, &t);
}

static int valid_id_word(const char *s)
{
    return ka_id_valid(s, strlen(s));
}

static const char *parse_key_type(cmd_parms *cmd, const char *line, const void **parsed)
{
    return parse_words(cmd, line, parsed, valid_key_type, "Require krenalis-key-type");
}

static const char *parse_workspace(cmd_parms *cmd, const char *line, const void **parsed)
{
    return parse_words(cmd, line, parsed, valid_id_word, "Require krenalis-workspace");
}

static const char *parse_organization(cmd_parms *cmd, const char *line, const void **parsed)
{
    return parse_words(cmd, line, parsed, valid_id_word, "Require krenalis-organization");
}

static authz_status match_identity(request_rec *r, const void *parsed, int field)
{
    const require_words *w = parsed;
    const ka_req *q;
    const char *have;

    if (r->user == NULL)
        return AUTHZ_DENIED_NO_USER;
    q = ka_req_state(r);
    if (q == NULL || !q->authenticated)
        return AUTHZ_DENIED;
    have = field == 0 ? ka_key_type_name(q->id.type) : field == 1 ? q->id.ws : q->id.org;
    for (int i = 0; i < w->n; i++)
        if (have[0] != '\0' && strcmp(have, w->words[i]) == 0)
            return AUTHZ_GRANTED;
    return AUTHZ_DENIED;
}

static authz_status check_key_type(request_rec *r, const char *line, const void *parsed)
{
    return match_identity(r, parsed, 0);
}

static authz_status check_workspace(request_rec *r, const char *line, const void *parsed)
{
    return match_identity(r, parsed, 1);
}

static authz_status check_organization(request_rec *r, const char *line, const void *parsed)
{
    return match_identity(r, parsed, 2);
}

const authz_provider ka_authz_key_type = {check_key_type, parse_key_type};
const authz_provider ka_authz_workspace = {check_workspace, parse_workspace};
const authz_provider ka_authz_organization = {check_organization, parse_organization};
