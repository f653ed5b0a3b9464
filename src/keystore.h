/* The LMDB key store (SPEC §3; layout in docs/keystore.md). The module uses the read side; the
 * krenalis-keys command uses both. Functions return KA_OK, KA_NOTFOUND or KA_FAIL. */
#ifndef KA_KEYSTORE_H
#define KA_KEYSTORE_H

#include <lmdb.h>

#include "crypto.h"
#include "ka.h"

#define KA_OK 0
#define KA_NOTFOUND 1
#define KA_FAIL (-1)
#define KA_BADSECRET (-2) /* ka_store_open*: the secret is not the store's */

#define KA_STORE_FORMAT "krenalis-keys 1"
#define KA_STORE_MAXREADERS 4094
#define KA_STORE_DEFAULT_MAPSIZE ((size_t)1 << 30)

typedef struct ka_store {
    MDB_env *env;
    MDB_dbi meta, orgs, wss, conns, keys, kids, idx;
    ka_hmac_key hmac;
    unsigned psize; /* LMDB page size of data.mdb */
    char dir[4096];
} ka_store;

typedef struct {
    ka_key_type type; /* KA_KEY_API or KA_KEY_WRITE */
    char id[KA_ID_LEN + 1];
    char org[KA_ID_LEN + 1];
    char ws[KA_ID_LEN + 1];   /* "" when unrestricted (API key) */
    char conn[KA_ID_LEN + 1]; /* write keys only */
    uint64_t created;         /* Unix seconds */
    char hint[KA_HINT_MAX + 1];
    char name[KA_NAME_MAX + 1];
} ka_key_rec;

typedef struct {
    char id[KA_ID_LEN + 1];
    char org[KA_ID_LEN + 1]; /* workspaces, connections */
    char ws[KA_ID_LEN + 1];  /* connections */
    int enabled;             /* organizations */
    char name[KA_NAME_MAX + 1];
} ka_entity;

/* Opens an existing store and checks its format, its secret (KA_BADSECRET when the store was
 * created with another) and that data.mdb is whole. readonly: the module's mode (MDB_RDONLY,
 * MDB_NOTLS). secret_path may be NULL for DIR/secret. On failure returns KA_FAIL and a
 * message in err. The store is mapped memory of its own, left out of core dumps (it holds
 * the HMAC key), a per-process resource. */
int ka_store_open(const char *dir, const char *secret_path, int readonly, ka_store **out, char *err,
                  size_t errlen);
/* The same with the secret in memory (the module reads it as root before it forks). */
int ka_store_open_secret(const char *dir, const uint8_t secret[KA_SECRET_LEN], int readonly,
                         ka_store **out, char *err, size_t errlen);
void ka_store_close(ka_store *st);
/* The message for KA_BADSECRET when the caller knows the secret's path. */
void ka_store_bad_secret_msg(const char *dir, const char *secret_path, char *err, size_t errlen);
/* KA_FAIL, with a message, when a data.mdb of size bytes is shorter than the pages the store's
 * last commit uses (a truncated file: reading those pages through the map would be SIGBUS). */
int ka_store_check_size(const ka_store *st, long long size, char *err, size_t errlen);

/* Creates DIR, a new secret (mode 0600) unless secret_path names an existing one, and an empty
 * store of the current format. */
int ka_store_create(const char *dir, const char *secret_path, char *err, size_t errlen);

/* Read side: fill the record; KA_NOTFOUND when absent. */
int ka_get_key(MDB_txn *txn, const ka_store *st, const uint8_t digest[KA_DIGEST_LEN],
               ka_key_rec *rec);
int ka_get_org(MDB_txn *txn, const ka_store *st, const char *id, ka_entity *e);
int ka_get_ws(MDB_txn *txn, const ka_store *st, const char *id, ka_entity *e);
int ka_get_conn(MDB_txn *txn, const ka_store *st, const char *id, ka_entity *e);

/* Digests by which keys are found. */
void ka_digest_api(const ka_store *st, const uint8_t payload[KA_PAYLOAD_LEN],
                   uint8_t out[KA_DIGEST_LEN]);
void ka_digest_write(const ka_store *st, const char key[KA_WRITE_KEY_LEN],
                     uint8_t out[KA_DIGEST_LEN]);

/* Write side (one write transaction, the caller commits). Puts overwrite. Removals cascade:
 * organization -> workspaces -> connections -> keys. */
int ka_put_org(MDB_txn *txn, ka_store *st, const ka_entity *e);
int ka_put_ws(MDB_txn *txn, ka_store *st, const ka_entity *e);
int ka_put_conn(MDB_txn *txn, ka_store *st, const ka_entity *e);
int ka_put_key(MDB_txn *txn, ka_store *st, const uint8_t digest[KA_DIGEST_LEN],
               const ka_key_rec *rec);
int ka_del_org(MDB_txn *txn, ka_store *st, const char *id);
int ka_del_ws(MDB_txn *txn, ka_store *st, const char *id);
int ka_del_conn(MDB_txn *txn, ka_store *st, const char *id);
int ka_del_key(MDB_txn *txn, ka_store *st, const char *key_id);
/* The key record of a key ID. */
int ka_get_key_by_id(MDB_txn *txn, const ka_store *st, const char *key_id, ka_key_rec *rec);

/* Iteration; the callback returns 0 to go on. filter may be NULL (all). */
typedef int (*ka_entity_cb)(const ka_entity *e, void *arg);
typedef int (*ka_key_cb)(const ka_key_rec *k, void *arg);
int ka_list_orgs(MDB_txn *txn, const ka_store *st, ka_entity_cb cb, void *arg);
int ka_list_ws(MDB_txn *txn, const ka_store *st, const char *org, ka_entity_cb cb, void *arg);
int ka_list_conns(MDB_txn *txn, const ka_store *st, const char *ws, ka_entity_cb cb, void *arg);
/* API keys of org (all API keys when NULL). */
int ka_list_api_keys(MDB_txn *txn, const ka_store *st, const char *org, ka_key_cb cb, void *arg);
/* Write keys of one connection. */
int ka_list_write_keys(MDB_txn *txn, const ka_store *st, const char *conn, ka_key_cb cb, void *arg);

/* The last LMDB error as text, for messages. */
const char *ka_store_strerror(int rc);

#endif
