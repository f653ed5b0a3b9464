/* krenalis-keys: init, organization, workspace and connection (cli.h). */
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "cli.h"
#include "crypto.h"

static int lookup_user(const char *name, uid_t *uid, gid_t *gid)
{
    struct passwd *pw = getpwnam(name);
    char *end;
    unsigned long v;

    if (pw == NULL && name[0] >= '0' && name[0] <= '9') {
        v = strtoul(name, &end, 10);
        if (*end == '\0')
            pw = getpwuid((uid_t)v);
    }
    if (pw == NULL)
        return fail("--owner: no user '%s'", name);
    *uid = pw->pw_uid;
    *gid = pw->pw_gid;
    return EXIT_OK;
}

static int lookup_group(const char *name, gid_t *gid)
{
    struct group *gr = getgrnam(name);
    char *end;
    unsigned long v;

    if (gr == NULL && name[0] >= '0' && name[0] <= '9') {
        v = strtoul(name, &end, 10);
        if (*end == '\0')
            gr = getgrgid((gid_t)v);
    }
    if (gr == NULL)
        return fail("--owner: no group '%s'", name);
    *gid = gr->gr_gid;
    return EXIT_OK;
}

/* USER[:GROUP]; the group defaults to the user's primary group. */
static int parse_owner(const char *spec, uid_t *uid, gid_t *gid)
{
    char user[256];
    const char *colon = strchr(spec, ':');
    size_t ulen = colon ? (size_t)(colon - spec) : strlen(spec);

    if (ulen == 0 || ulen >= sizeof(user) || (colon && colon[1] == '\0'))
        return fail("invalid --owner '%s': expected USER or USER:GROUP", spec);
    memcpy(user, spec, ulen);
    user[ulen] = '\0';
    if (lookup_user(user, uid, gid) != EXIT_OK)
        return EXIT_FAIL;
    return colon ? lookup_group(colon + 1, gid) : EXIT_OK;
}

/* Apache's user opens the environment read-only: it reads data.mdb and writes lock.mdb. */
static int chown_store(const char *dir, uid_t uid, gid_t gid)
{
    static const char *const files[] = {"data.mdb", "lock.mdb"};
    char path[PATH_MAX_LEN];

    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, files[i]);
        if (chown(path, uid, gid) != 0)
            return fail("key store created, but cannot change the owner of %s: %s", path,
                        strerror(errno));
    }
    return EXIT_OK;
}

/* An existing secret is reused: check it before creating anything. */
static int check_existing_secret(const char *path)
{
    uint8_t secret[KA_SECRET_LEN];
    char err[ERR_MAX];
    struct stat sb;

    if (lstat(path, &sb) != 0)
        return EXIT_OK;
    if (ka_secret_read(path, secret, err, sizeof(err)) != NULL)
        return fail("%s", err);
    OPENSSL_cleanse(secret, sizeof(secret));
    return EXIT_OK;
}

int cmd_init(cli *c)
{
    const char *owner = c->a.opt[OPT_OWNER];
    char err[ERR_MAX], secret[PATH_MAX_LEN], line[2 * PATH_MAX_LEN];
    uid_t uid = 0;
    gid_t gid = 0;

    if (c->a.opt[OPT_SECRET])
        snprintf(secret, sizeof(secret), "%s", c->a.opt[OPT_SECRET]);
    else
        ka_store_default_secret(c->dir, secret, sizeof(secret));
    if (owner && parse_owner(owner, &uid, &gid) != EXIT_OK)
        return EXIT_FAIL;
    if (check_existing_secret(secret) != EXIT_OK)
        return EXIT_FAIL;
    if (ka_store_create(c->dir, c->a.opt[OPT_SECRET], err, sizeof(err)) != KA_OK)
        return fail("%s", err);
    if (owner && chown_store(c->dir, uid, gid) != EXIT_OK)
        return EXIT_FAIL;
    snprintf(line, sizeof(line), "created key store %s (secret %s)", c->dir, secret);
    return emit(c, jobj("store", jstr(c->dir), "secret", jstr(secret), END), line);
}

typedef struct {
    ka_entity e;
    int given; /* the ID came from the command line */
    rng r;
    new_key key; /* connection add: its first write key */
} add_arg;

/* Common start of the add commands: [ID] and --name. */
static int add_init(const cli *c, add_arg *a, const char *what)
{
    memset(a, 0, sizeof(*a));
    rng_init(&a->r);
    if (c->npos > 0) {
        if (check_id(what, c->pos[0]) != EXIT_OK)
            return EXIT_FAIL;
        memcpy(a->e.id, c->pos[0], KA_ID_LEN + 1);
        a->given = 1;
    }
    return take_name(c->a.opt[OPT_NAME], a->e.name);
}

static rng *id_source(add_arg *a)
{
    return a->given ? NULL : &a->r;
}

static int org_add_step(ka_store_txn *txn, ka_store *st, void *arg, char *err, size_t errlen)
{
    add_arg *a = arg;
    int rc = claim_id(txn, st, ka_get_org, "organization", a->e.id, id_source(a), err, errlen);

    if (rc != STEP_OK)
        return rc;
    return ka_put_org(txn, st, &a->e) == KA_OK ? STEP_OK : STEP_STORE;
}

int cmd_org_add(cli *c)
{
    add_arg a;
    int rc = add_init(c, &a, "organization");

    a.e.enabled = c->a.opt[OPT_DISABLED] == NULL;
    if (rc == EXIT_OK)
        rc = with_write(c, org_add_step, &a, SMALL_WRITE);
    rng_wipe(&a.r);
    return rc != EXIT_OK ? rc : emit(c, jobj("id", jstr(a.e.id), END), a.e.id);
}

typedef struct {
    const char *id;
    int enabled;
} enable_arg;

static int org_enable_step(ka_store_txn *txn, ka_store *st, void *arg, char *err, size_t errlen)
{
    enable_arg *a = arg;
    ka_entity e;
    int rc = need(ka_get_org(txn, st, a->id, &e), "organization", a->id, err, errlen);

    if (rc != STEP_OK)
        return rc;
    e.enabled = a->enabled;
    return ka_put_org(txn, st, &e) == KA_OK ? STEP_OK : STEP_STORE;
}

static int org_set_enabled(cli *c, int enabled)
{
    enable_arg a = {c->pos[0], enabled};
    int rc;

    if (check_id("organization", a.id) != EXIT_OK)
        return EXIT_FAIL;
    rc = with_write(c, org_enable_step, &a, SMALL_WRITE);
    if (rc != EXIT_OK)
        return rc;
    return emit(c, jobj("id", jstr(a.id), "enabled", json_object_new_boolean(enabled), END), NULL);
}

int cmd_org_enable(cli *c)
{
    return org_set_enabled(c, 1);
}

int cmd_org_disable(cli *c)
{
    return org_set_enabled(c, 0);
}

typedef struct {
    ka_store_status (*del)(ka_store_txn *txn, ka_store *st, const char *id);
    const char *what;
    const char *id;
} remove_arg;

static int remove_step(ka_store_txn *txn, ka_store *st, void *arg, char *err, size_t errlen)
{
    remove_arg *a = arg;
    return need(a->del(txn, st, a->id), a->what, a->id, err, errlen);
}

/* Removal cascades (keystore.c): an organization takes its workspaces, connections and keys. */
static int remove_entity(cli *c, ka_store_status (*del)(ka_store_txn *, ka_store *, const char *),
                         const char *what)
{
    remove_arg a = {del, what, c->pos[0]};
    int rc;

    if (check_id(what, a.id) != EXIT_OK)
        return EXIT_FAIL;
    rc = with_write(c, remove_step, &a, SMALL_WRITE);
    if (rc != EXIT_OK)
        return rc;
    return emit(c, jobj("id", jstr(a.id), "removed", json_object_new_boolean(1), END), NULL);
}

int cmd_org_remove(cli *c)
{
    return remove_entity(c, ka_del_org, "organization");
}

static int org_item(const ka_entity *e, void *arg)
{
    lister *l = arg;

    if (!l->c->json) {
        printf("%s\t%s\t%s\n", e->id, e->enabled ? "enabled" : "disabled", e->name);
        return 0;
    }
    list_add(l, jobj("id", jstr(e->id), "name", jstr(e->name), "enabled",
                     json_object_new_boolean(e->enabled), END));
    return 0;
}

static ka_store_status org_rows(ka_store_txn *txn, const ka_store *st, const char *unused,
                                lister *l)
{
    return ka_list_orgs(txn, st, org_item, l);
}

int cmd_org_list(cli *c)
{
    static const listing ls = {"organization", ka_get_org, "organizations", org_rows};
    return run_listing(c, &ls, NULL);
}

static int ws_add_step(ka_store_txn *txn, ka_store *st, void *arg, char *err, size_t errlen)
{
    add_arg *a = arg;
    ka_entity org;
    int rc = need(ka_get_org(txn, st, a->e.org, &org), "organization", a->e.org, err, errlen);

    if (rc == STEP_OK)
        rc = claim_id(txn, st, ka_get_ws, "workspace", a->e.id, id_source(a), err, errlen);
    if (rc != STEP_OK)
        return rc;
    return ka_put_ws(txn, st, &a->e) == KA_OK ? STEP_OK : STEP_STORE;
}

int cmd_ws_add(cli *c)
{
    add_arg a;
    int rc = add_init(c, &a, "workspace");

    if (rc == EXIT_OK)
        rc = check_id("organization", c->a.opt[OPT_ORG]);
    if (rc == EXIT_OK) {
        memcpy(a.e.org, c->a.opt[OPT_ORG], KA_ID_LEN + 1);
        a.e.enabled = 1;
        rc = with_write(c, ws_add_step, &a, SMALL_WRITE);
    }
    rng_wipe(&a.r);
    return rc != EXIT_OK ? rc : emit(c, jobj("id", jstr(a.e.id), END), a.e.id);
}

int cmd_ws_remove(cli *c)
{
    return remove_entity(c, ka_del_ws, "workspace");
}

static int ws_item(const ka_entity *e, void *arg)
{
    lister *l = arg;

    if (!l->c->json) {
        printf("%s\t%s\t%s\n", e->id, e->org, e->name);
        return 0;
    }
    list_add(l, jobj("id", jstr(e->id), "organization", jstr(e->org), "name", jstr(e->name), END));
    return 0;
}

static ka_store_status ws_rows(ka_store_txn *txn, const ka_store *st, const char *org, lister *l)
{
    return ka_list_ws(txn, st, org, ws_item, l);
}

int cmd_ws_list(cli *c)
{
    static const listing ls = {"organization", ka_get_org, "workspaces", ws_rows};
    return run_listing(c, &ls, c->a.opt[OPT_ORG]);
}

static int conn_add_step(ka_store_txn *txn, ka_store *st, void *arg, char *err, size_t errlen)
{
    add_arg *a = arg;
    ka_entity ws;
    int rc = need(ka_get_ws(txn, st, a->e.ws, &ws), "workspace", a->e.ws, err, errlen);

    if (rc == STEP_OK)
        rc = claim_id(txn, st, ka_get_conn, "connection", a->e.id, id_source(a), err, errlen);
    if (rc != STEP_OK)
        return rc;
    memcpy(a->e.org, ws.org, sizeof(a->e.org));
    if (ka_put_conn(txn, st, &a->e) != KA_OK)
        return STEP_STORE;
    return put_write_key(txn, st, &a->r, &a->e, &a->key, err, errlen);
}

int cmd_conn_add(cli *c)
{
    add_arg a;
    int rc = add_init(c, &a, "connection");

    if (rc == EXIT_OK)
        rc = check_id("workspace", c->a.opt[OPT_WS]);
    if (rc == EXIT_OK) {
        memcpy(a.e.ws, c->a.opt[OPT_WS], KA_ID_LEN + 1);
        a.e.enabled = 1;
        rc = with_write(c, conn_add_step, &a, SMALL_WRITE);
    }
    rng_wipe(&a.r);
    if (rc == EXIT_OK)
        rc = emit_new_key(c, a.e.id, "key", a.key.secret);
    OPENSSL_cleanse(&a.key, sizeof(a.key));
    return rc;
}

int cmd_conn_remove(cli *c)
{
    return remove_entity(c, ka_del_conn, "connection");
}

static int conn_item(const ka_entity *e, void *arg)
{
    lister *l = arg;

    if (!l->c->json) {
        printf("%s\t%s\t%s\t%s\n", e->id, e->ws, e->org, e->name);
        return 0;
    }
    list_add(l, jobj("id", jstr(e->id), "workspace", jstr(e->ws), "organization", jstr(e->org),
                     "name", jstr(e->name), END));
    return 0;
}

static ka_store_status conn_rows(ka_store_txn *txn, const ka_store *st, const char *ws, lister *l)
{
    return ka_list_conns(txn, st, ws, conn_item, l);
}

int cmd_conn_list(cli *c)
{
    static const listing ls = {"workspace", ka_get_ws, "connections", conn_rows};
    return run_listing(c, &ls, c->a.opt[OPT_WS]);
}
