/* What a Krenalis change does to a mirrored key store: see mirror_apply.h and SPEC §11.1. */
#include "mirror_apply.h"

#include <stdio.h>
#include <string.h>

#include <json-c/json.h>
#include <openssl/crypto.h>

#include "kms.h"
#include "token.h"

const char *const ka_mirror_names[] = {"CreateOrganization",
                                       "SetOrganizationStatus",
                                       "UpdateOrganization",
                                       "DeleteOrganization",
                                       "CreateWorkspace",
                                       "RenameWorkspace",
                                       "UpdateWorkspace",
                                       "DeleteWorkspace",
                                       "CreateConnection",
                                       "UpdateConnection",
                                       "RenameConnection",
                                       "DeleteConnection",
                                       "CreateAccessKey",
                                       "DeleteAccessKey",
                                       "CreateEventWriteKey",
                                       "DeleteEventWriteKey",
                                       NULL};

int ka_mirror_name_relevant(const char *name)
{
    for (const char *const *n = ka_mirror_names; *n; n++)
        if (strcmp(*n, name) == 0)
            return 1;
    return 0;
}

static int valid_id(const char *id)
{
    return id != NULL && ka_id_valid(id, strlen(id));
}

static void set_text(char *dst, size_t size, const char *src)
{
    snprintf(dst, size, "%s", src ? src : "");
}

/* ---- snapshot rows (also used by the notifications) ---- */

int ka_mirror_org(ka_store_txn *txn, ka_store *st, const char *id, const char *name, int enabled)
{
    ka_entity e;

    if (!valid_id(id))
        return KA_NOTFOUND;
    memset(&e, 0, sizeof(e));
    set_text(e.id, sizeof(e.id), id);
    set_text(e.name, sizeof(e.name), name);
    e.enabled = enabled != 0;
    return ka_put_org(txn, st, &e);
}

int ka_mirror_ws(ka_store_txn *txn, ka_store *st, const char *id, const char *org, const char *name)
{
    ka_entity e;

    if (!valid_id(id) || !valid_id(org))
        return KA_NOTFOUND;
    memset(&e, 0, sizeof(e));
    set_text(e.id, sizeof(e.id), id);
    set_text(e.org, sizeof(e.org), org);
    set_text(e.name, sizeof(e.name), name);
    return ka_put_ws(txn, st, &e);
}

int ka_mirror_conn(ka_store_txn *txn, ka_store *st, const char *id, const char *ws,
                   const char *name, unsigned flags)
{
    ka_entity w, e;
    int rc;

    if (!valid_id(id) || !valid_id(ws))
        return KA_NOTFOUND;
    if ((rc = ka_get_ws(txn, st, ws, &w)) != KA_OK)
        return rc;
    memset(&e, 0, sizeof(e));
    set_text(e.id, sizeof(e.id), id);
    set_text(e.ws, sizeof(e.ws), ws);
    set_text(e.org, sizeof(e.org), w.org);
    set_text(e.name, sizeof(e.name), name);
    e.enabled = 1;
    e.conn_flags = flags;
    return ka_put_conn(txn, st, &e);
}

int ka_mirror_access_key(ka_store_txn *txn, ka_store *st, const char *id, const char *org,
                         const char *ws, const uint8_t *digest, size_t digest_len, const char *hint,
                         const char *name, uint64_t created, int replace)
{
    ka_key_rec r;

    if (!valid_id(id) || !valid_id(org) || (ws && ws[0] && !valid_id(ws)) ||
        digest_len != KA_DIGEST_LEN)
        return KA_NOTFOUND;
    memset(&r, 0, sizeof(r));
    r.type = KA_KEY_API;
    set_text(r.id, sizeof(r.id), id);
    set_text(r.org, sizeof(r.org), org);
    set_text(r.ws, sizeof(r.ws), ws);
    set_text(r.hint, sizeof(r.hint), hint);
    set_text(r.name, sizeof(r.name), name);
    r.created = created;
    /* A key ID names one key: a re-created ID must not leave its old digest behind. */
    if (replace && ka_del_key(txn, st, r.id) == KA_FAIL)
        return KA_FAIL;
    return ka_put_key(txn, st, digest, &r);
}

/* A write key has no ID in Krenalis; the store's is derived from its digest (12 base58
 * characters), so that the same key always gets the same ID and nothing secret shows in it. */
static void write_key_id(const uint8_t digest[KA_DIGEST_LEN], char id[KA_ID_LEN + 1])
{
    for (int i = 0; i < KA_ID_LEN; i++)
        id[i] = ka_base58[digest[i] % 58];
    id[KA_ID_LEN] = '\0';
}

int ka_mirror_write_key(ka_store_txn *txn, ka_store *st, const char *conn, const char *key,
                        size_t len, uint64_t created)
{
    uint8_t digest[KA_DIGEST_LEN];
    ka_entity c;
    ka_key_rec r;
    int rc;

    if (!valid_id(conn) || !ka_write_key_valid(key, len))
        return KA_NOTFOUND;
    if ((rc = ka_get_conn(txn, st, conn, &c)) != KA_OK)
        return rc;
    ka_digest_write(st, key, digest);
    memset(&r, 0, sizeof(r));
    r.type = KA_KEY_WRITE;
    write_key_id(digest, r.id);
    set_text(r.org, sizeof(r.org), c.org);
    set_text(r.ws, sizeof(r.ws), c.ws);
    set_text(r.conn, sizeof(r.conn), conn);
    ka_hint(key, len, r.hint);
    r.created = created;
    rc = ka_put_key(txn, st, digest, &r);
    OPENSSL_cleanse(digest, sizeof(digest));
    return rc;
}

/* Removes the write key key of connection conn (nothing when it is not there). */
static int unmirror_write_key(ka_store_txn *txn, ka_store *st, const char *conn, const char *key,
                              size_t len)
{
    uint8_t digest[KA_DIGEST_LEN];
    ka_key_rec r;
    int rc;

    if (!ka_write_key_valid(key, len))
        return KA_OK;
    ka_digest_write(st, key, digest);
    rc = ka_get_key(txn, st, digest, &r);
    OPENSSL_cleanse(digest, sizeof(digest));
    if (rc == KA_NOTFOUND)
        return KA_OK;
    if (rc != KA_OK)
        return KA_FAIL;
    if (r.type != KA_KEY_WRITE || strcmp(r.conn, conn) != 0)
        return KA_OK;
    return ka_del_key(txn, st, r.id) == KA_FAIL ? KA_FAIL : KA_OK;
}

/* ---- notifications ---- */

/* Members of a payload object; NULL when absent or of another type. */
static const char *j_str(json_object *o, const char *name)
{
    json_object *v;
    if (!json_object_object_get_ex(o, name, &v) || !json_object_is_type(v, json_type_string))
        return NULL;
    return json_object_get_string(v);
}

static int j_len(json_object *o, const char *name)
{
    json_object *v;
    if (!json_object_object_get_ex(o, name, &v) || !json_object_is_type(v, json_type_string))
        return -1;
    return json_object_get_string_len(v);
}

/* -1 absent or not a boolean. */
static int j_bool(json_object *o, const char *name)
{
    json_object *v;
    if (!json_object_object_get_ex(o, name, &v) || !json_object_is_type(v, json_type_boolean))
        return -1;
    return json_object_get_boolean(v);
}

/* -1 absent or not an integer. */
static long long j_int(json_object *o, const char *name)
{
    json_object *v;
    if (!json_object_object_get_ex(o, name, &v) || !json_object_is_type(v, json_type_int))
        return -1;
    return (long long)json_object_get_int64(v);
}

/* Strategy: a string, or null / absent (none). */
static unsigned strategy_flag(json_object *o)
{
    const char *s = j_str(o, "Strategy");
    return s && s[0] ? 0u : KA_CONN_NO_STRATEGY;
}

/* KA_NOTFOUND ("changes nothing") counts as done. */
static int done(int rc)
{
    return rc == KA_FAIL ? KA_FAIL : KA_OK;
}

static int rename_entity(ka_store_txn *txn, ka_store *st, json_object *o, const char *member,
                         ka_store_status (*get)(ka_store_txn *, const ka_store *, const char *,
                                                ka_entity *),
                         ka_store_status (*put)(ka_store_txn *, ka_store *, const ka_entity *))
{
    const char *id = j_str(o, member), *name = j_str(o, "Name");
    ka_entity e;
    int rc;

    if (!valid_id(id) || name == NULL)
        return KA_FAIL;
    if ((rc = get(txn, st, id, &e)) != KA_OK)
        return done(rc);
    set_text(e.name, sizeof(e.name), name);
    return put(txn, st, &e);
}

static int apply_org(ka_store_txn *txn, ka_store *st, const char *name, json_object *o)
{
    const char *id = j_str(o, "ID");
    ka_entity e;
    int rc, en;

    if (!valid_id(id))
        return KA_FAIL;
    if (strcmp(name, "CreateOrganization") == 0) {
        if ((en = j_bool(o, "Enabled")) < 0 || j_str(o, "Name") == NULL)
            return KA_FAIL;
        return ka_mirror_org(txn, st, id, j_str(o, "Name"), en);
    }
    if (strcmp(name, "DeleteOrganization") == 0)
        return done(ka_del_org(txn, st, id));
    if (strcmp(name, "UpdateOrganization") == 0)
        return rename_entity(txn, st, o, "ID", ka_get_org, ka_put_org);
    /* SetOrganizationStatus */
    if ((en = j_bool(o, "Enabled")) < 0)
        return KA_FAIL;
    if ((rc = ka_get_org(txn, st, id, &e)) != KA_OK)
        return done(rc);
    e.enabled = en;
    return ka_put_org(txn, st, &e);
}

static int apply_ws(ka_store_txn *txn, ka_store *st, const char *name, json_object *o)
{
    if (strcmp(name, "CreateWorkspace") == 0) {
        const char *id = j_str(o, "ID"), *org = j_str(o, "Organization");
        if (!valid_id(id) || !valid_id(org) || j_str(o, "Name") == NULL)
            return KA_FAIL;
        return ka_mirror_ws(txn, st, id, org, j_str(o, "Name"));
    }
    if (strcmp(name, "DeleteWorkspace") == 0) {
        const char *id = j_str(o, "ID");
        return valid_id(id) ? done(ka_del_ws(txn, st, id)) : KA_FAIL;
    }
    return rename_entity(txn, st, o, "Workspace", ka_get_ws, ka_put_ws);
}

static int apply_conn(ka_store_txn *txn, ka_store *st, const char *name, json_object *o,
                      uint64_t now)
{
    ka_entity e;
    int rc;

    if (strcmp(name, "CreateConnection") == 0) {
        const char *id = j_str(o, "ID"), *ws = j_str(o, "Workspace"), *cname = j_str(o, "Name");
        const char *key = j_str(o, "EventWriteKey");
        long long role = j_int(o, "Role");
        if (!valid_id(id) || !valid_id(ws) || cname == NULL || (role != 1 && role != 2))
            return KA_FAIL;
        rc = ka_mirror_conn(txn, st, id, ws, cname,
                            (role == 2 ? KA_CONN_DESTINATION : 0u) | strategy_flag(o));
        if (rc != KA_OK || key == NULL || key[0] == '\0')
            return done(rc);
        return done(ka_mirror_write_key(txn, st, id, key, (size_t)j_len(o, "EventWriteKey"), now));
    }
    if (strcmp(name, "DeleteConnection") == 0) {
        const char *id = j_str(o, "ID");
        return valid_id(id) ? done(ka_del_conn(txn, st, id)) : KA_FAIL;
    }
    if (strcmp(name, "RenameConnection") == 0)
        return rename_entity(txn, st, o, "Connection", ka_get_conn, ka_put_conn);
    /* UpdateConnection: the name and the strategy. */
    {
        const char *id = j_str(o, "Connection"), *cname = j_str(o, "Name");
        if (!valid_id(id) || cname == NULL)
            return KA_FAIL;
        if ((rc = ka_get_conn(txn, st, id, &e)) != KA_OK)
            return done(rc);
        set_text(e.name, sizeof(e.name), cname);
        e.conn_flags = (e.conn_flags & KA_CONN_DESTINATION) | strategy_flag(o);
        return ka_put_conn(txn, st, &e);
    }
}

static int apply_key(ka_store_txn *txn, ka_store *st, const char *name, json_object *o,
                     uint64_t now)
{
    if (strcmp(name, "CreateAccessKey") == 0) {
        const char *id = j_str(o, "ID"), *org = j_str(o, "Organization");
        const char *ws = j_str(o, "Workspace"), *hmac = j_str(o, "HMAC");
        long long type = j_int(o, "Type");
        uint8_t digest[KA_DIGEST_LEN + 1];
        long n;
        int rc;

        if (!valid_id(id) || !valid_id(org) || ws == NULL || (ws[0] && !valid_id(ws)) ||
            hmac == NULL || (type != 0 && type != 1))
            return KA_FAIL;
        if (type == 1)
            return KA_OK; /* MCP keys never authenticate here: not kept */
        n = ka_base64_decode(hmac, strlen(hmac), digest, sizeof(digest));
        if (n != KA_DIGEST_LEN)
            return KA_FAIL;
        rc = ka_mirror_access_key(txn, st, id, org, ws, digest, (size_t)n, "", "", now, 1);
        OPENSSL_cleanse(digest, sizeof(digest));
        return done(rc);
    }
    if (strcmp(name, "DeleteAccessKey") == 0) {
        const char *id = j_str(o, "ID");
        return valid_id(id) ? done(ka_del_key(txn, st, id)) : KA_FAIL;
    }
    {
        const char *conn = j_str(o, "Connection"), *key = j_str(o, "Key");
        if (!valid_id(conn) || key == NULL)
            return KA_FAIL;
        if (strcmp(name, "CreateEventWriteKey") == 0)
            return done(ka_mirror_write_key(txn, st, conn, key, (size_t)j_len(o, "Key"), now));
        return unmirror_write_key(txn, st, conn, key, (size_t)j_len(o, "Key"));
    }
}

int ka_mirror_apply(ka_store_txn *txn, ka_store *st, const char *name, const char *payload,
                    size_t len, uint64_t now, char *err, size_t errlen)
{
    json_tokener *tok;
    json_object *o;
    int rc;

    if (!ka_mirror_name_relevant(name))
        return KA_OK;
    if (payload == NULL) {
        snprintf(err, errlen, "a %s notification has no payload", name);
        return KA_FAIL;
    }
    tok = json_tokener_new();
    o = tok ? json_tokener_parse_ex(tok, payload, (int)len) : NULL;
    if (o == NULL || json_tokener_get_error(tok) != json_tokener_success ||
        !json_object_is_type(o, json_type_object)) {
        json_object_put(o);
        json_tokener_free(tok);
        snprintf(err, errlen, "a %s notification's payload is not a JSON object", name);
        return KA_FAIL;
    }
    json_tokener_free(tok);
    if (strstr(name, "Organization"))
        rc = apply_org(txn, st, name, o);
    else if (strstr(name, "Workspace"))
        rc = apply_ws(txn, st, name, o);
    else if (strstr(name, "Connection"))
        rc = apply_conn(txn, st, name, o, now);
    else
        rc = apply_key(txn, st, name, o, now);
    json_object_put(o);
    if (rc != KA_OK)
        snprintf(err, errlen,
                 "a %s notification cannot be applied (a payload without the fields "
                 "of SPEC 11.1, or the store failed)",
                 name);
    return rc;
}
