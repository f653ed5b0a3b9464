/* krenalis-keys, the command that creates and manages the key store (SPEC §4; reference for
 * operators: docs/krenalis-keys.md). The private header of src/cli/:
 *
 *   main.c      the option and command tables, argument parsing, usage, main
 *   output.c    messages, JSON and text results, listings
 *   args.c      checks of argument values (IDs, names, counts)
 *   rng.c       random characters for IDs and keys
 *   store.c     opening the store, the read and write transaction runners
 *   entities.c  init, organization, workspace, connection
 *   keys.c      api-key, write-key, organizations-key
 *   bulk.c      api-key bulk-create, write-key bulk-create
 *   check.c     check: the module's decision for a request
 *
 * A command is a function int cmd_x(cli *c) declared below and one line of COMMANDS in
 * main.c, which checks its options and arguments before it runs. */
#ifndef KA_CLI_H
#define KA_CLI_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <json-c/json.h>

#include "keystore.h"

#define PROG "krenalis-keys"
#define EXIT_OK 0
#define EXIT_FAIL 1
#define EXIT_USAGE 2

#define DEFAULT_STORE "/var/lib/krenalis-auth"
#define STORE_ENV "KRENALIS_KEY_STORE"

#define ERR_MAX 8192
#define PATH_MAX_LEN 4200
#define MAX_WORDS 8
#define SMALL_WRITE ((size_t)64 << 10) /* store space a single-record command may need */

#define JSON_FLAGS (JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)
#define END ((const char *)NULL) /* ends the key/value list of jobj() */

/* ---- options and commands (main.c) ---- */

enum {
    OPT_STORE,
    OPT_JSON,
    OPT_SECRET,
    OPT_HELP,
    OPT_OWNER,
    OPT_NAME,
    OPT_DISABLED,
    OPT_ORG,
    OPT_WS,
    OPT_CONN,
    OPT_METHOD,
    OPT_PATH,
    OPT_BODY,
    OPT_ENDPOINT,
    OPT_WS_POLICY,
    OPT_COUNT,
    OPT_TOKENS,
    N_OPTS
};

#define BIT(o) (1u << (o))
#define GLOBAL_OPTS (BIT(OPT_STORE) | BIT(OPT_JSON) | BIT(OPT_SECRET) | BIT(OPT_HELP))

typedef struct {
    const char *opt[N_OPTS]; /* flags are "" when given */
    const char *word[MAX_WORDS];
    int nwords;
} cli_args;

struct command;

typedef struct {
    cli_args a;
    const struct command *cmd;
    const char *const *pos; /* words after the command's own */
    int npos;
    const char *dir;
    int json;
} cli;

typedef struct command {
    const char *group;
    const char *action; /* NULL: a one-word command */
    int (*run)(cli *c);
    unsigned opts;     /* options it takes besides the global ones */
    unsigned required; /* options it cannot do without */
    int min_pos, max_pos;
    const char *synopsis;
} command;

/* The commands (COMMANDS in main.c). */
int cmd_init(cli *c);
int cmd_org_add(cli *c);
int cmd_org_enable(cli *c);
int cmd_org_disable(cli *c);
int cmd_org_remove(cli *c);
int cmd_org_list(cli *c);
int cmd_ws_add(cli *c);
int cmd_ws_remove(cli *c);
int cmd_ws_list(cli *c);
int cmd_conn_add(cli *c);
int cmd_conn_remove(cli *c);
int cmd_conn_list(cli *c);
int cmd_api_create(cli *c);
int cmd_api_list(cli *c);
int cmd_api_delete(cli *c);
int cmd_api_bulk(cli *c);
int cmd_wk_create(cli *c);
int cmd_wk_list(cli *c);
int cmd_wk_delete(cli *c);
int cmd_wk_bulk(cli *c);
int cmd_orgs_key(cli *c);
int cmd_check(cli *c);
int cmd_compact(cli *c);

/* ---- output (output.c) ---- */

/* "krenalis-keys: <message>" on standard error; returns EXIT_FAIL. */
int fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int flush_stdout(void);
/* A JSON string, or null for NULL. */
json_object *jstr(const char *s);
/* A JSON string, or null for NULL and "". */
json_object *jopt(const char *s);
/* An object from key, value pairs ended by END; the object takes the values. */
json_object *jobj(const char *key, ...);
/* Prints a result: o with --json, else the human line (nothing when NULL). Frees o. */
int emit(const cli *c, json_object *o, const char *human);

/* Streams a listing: {"member":[item,…]} with --json, one line per item otherwise. */
typedef struct {
    const cli *c;
    size_t n;
} lister;
void list_open(lister *l, const cli *c, const char *member);
void list_add(lister *l, json_object *item);
void list_close(lister *l);

/* RFC 3339 UTC time, e.g. 2026-11-26T07:00:00Z. */
void rfc3339(uint64_t t, char out[32]);
/* s, or "-" when NULL or empty. */
const char *dash(const char *s);

/* ---- argument values (args.c) ---- */

int check_id(const char *what, const char *id);
/* Copies a --name value after checking it: UTF-8, no control characters, KA_NAME_MAX bytes. */
int take_name(const char *name, char out[KA_NAME_MAX + 1]);
int take_count(const char *s, size_t *out);

/* ---- random characters (rng.c) ---- */

/* A buffer of CSPRNG bytes, refilled as it runs out, so that bulk creation does not call the
 * generator once per key. Every byte is used at most once. Wipe with rng_wipe. */
typedef struct {
    uint8_t buf[4096];
    size_t pos, len;
} rng;

void rng_init(rng *r);
void rng_wipe(rng *r);
int rng_bytes(rng *r, uint8_t *out, size_t n);
/* n characters of alphabet, without modulo bias. */
int rng_chars(rng *r, const char *alphabet, char *out, size_t n);

/* ---- the store (store.c) ---- */

/* What a transaction step returns. */
#define STEP_OK 0
#define STEP_ERR 1   /* refused (message in err): nothing to retry */
#define STEP_STORE 2 /* the store failed (a full map?): worth one retry */

/* "cannot get random bytes from the system" in err; STEP_ERR. */
int random_failed(char *err, size_t errlen);

typedef int (*txn_fn)(ka_store_txn *txn, ka_store *st, void *arg, char *err, size_t errlen);

/* The store of --store, with --secret; NULL after a message. */
ka_store *open_store(const cli *c, int readonly);
/* Runs fn in one write transaction and commits it: all of it is written, or none. Redoes it
 * in a larger map after a full one (fn must start afresh each time it is called). */
int run_write(ka_store *st, txn_fn fn, void *arg, size_t estimate, char *err, size_t errlen);
/* Opens the store for writing, runs fn in one transaction, closes. */
int with_write(const cli *c, txn_fn fn, void *arg, size_t estimate);
/* Opens the store read-only, runs fn in one read transaction, closes. */
int with_read(const cli *c, txn_fn fn, void *arg);
/* KA_OK -> STEP_OK; KA_NOTFOUND -> "<what> <id> does not exist"; KA_FAIL -> STEP_STORE. */
int need(ka_store_status rc, const char *what, const char *id, char *err, size_t errlen);

typedef ka_store_status (*entity_get)(ka_store_txn *txn, const ka_store *st, const char *id,
                                      ka_entity *e);
/* Same shape as the entity getters: whether a key ID is taken. */
ka_store_status get_key_id(ka_store_txn *txn, const ka_store *st, const char *id,
                           ka_entity *unused);
/* Makes id a free ID of the table behind get: with r, draws one until it is free; without,
 * id is the one the user gave and must be free. */
int claim_id(ka_store_txn *txn, const ka_store *st, entity_get get, const char *what,
             char id[KA_ID_LEN + 1], rng *r, char *err, size_t errlen);

/* ---- keys (keys.c) ---- */

typedef struct {
    char id[KA_ID_LEN + 1];
    char secret[KA_API_TOKEN_LEN + 1]; /* "api_…" token, or a 32-character write key */
} new_key;

/* A listing command: the rows of the store under a filter that must exist when given. */
typedef struct {
    const char *filter_what; /* "organization", "workspace", "connection" */
    entity_get filter_get;   /* finds the filter */
    const char *member;      /* the JSON array: {"<member>":[…]} */
    /* Calls list_row (through the store's listing) for each row. */
    ka_store_status (*rows)(ka_store_txn *txn, const ka_store *st, const char *filter, lister *l);
} listing;

/* Runs a listing with filter (NULL: all; else checked, and it must exist). */
int run_listing(cli *c, const listing *ls, const char *filter);

/* Prints a new credential, {"id":…,"<member>":"<secret>"} or "ID SECRET", and wipes the line. */
int emit_new_key(const cli *c, const char *id, const char *member, const char *secret);

/* Creates an API key from tmpl (org, ws, name, created): a new payload, ID and hint. */
int put_api_key(ka_store_txn *txn, ka_store *st, rng *r, const ka_key_rec *tmpl, new_key *out,
                char *err, size_t errlen);
/* Creates an event write key of connection conn. */
int put_write_key(ka_store_txn *txn, ka_store *st, rng *r, const ka_entity *conn, new_key *out,
                  char *err, size_t errlen);
/* The organization and workspace of a new API key (--organization and/or --workspace). */
int resolve_scope(ka_store_txn *txn, const ka_store *st, const char *org, const char *ws,
                  ka_key_rec *tmpl, char *err, size_t errlen);
/* --organization and --workspace of api-key create and bulk-create. */
int api_scope_args(cli *c, const char **org, const char **ws);

#endif
