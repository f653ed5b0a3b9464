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

#define KA_STORE_FORMAT "krenalis-keys 2"
#define KA_STORE_FORMAT_1 "krenalis-keys 1" /* upgraded in place by ka_store_upgrade */
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
    unsigned conn_flags;     /* connections: KA_CONN_* (0: a source with a strategy) */
    char name[KA_NAME_MAX + 1];
} ka_entity;

/* A connection's flags. Zero is what krenalis-keys creates: a source connection whose write
 * keys authenticate everywhere; a mirrored store holds every connection of Krenalis. */
#define KA_CONN_DESTINATION 1u /* role Destination: its write keys do not authenticate */
#define KA_CONN_NO_STRATEGY 2u /* strategy NULL: the settings endpoint refuses its keys */

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

/* ---- mirrored stores (krenalis-keys mirror, docs/mirror.md) ---- */

/* What the meta database records about the Krenalis database a store mirrors. */
#define KA_MIRROR_SOURCE_MAX 255
#define KA_MIRROR_CONNINFO_MAX 1023
typedef struct {
    char source[KA_MIRROR_SOURCE_MAX + 1];     /* "SYSTEM_ID/DATABASE/SCHEMA" */
    char conninfo[KA_MIRROR_CONNINFO_MAX + 1]; /* the connection string, password elided */
    uint64_t version;                          /* last notifications.version applied */
} ka_mirror_meta;

/* The file whose mtime is when the mirror last confirmed the store current; outside the LMDB
 * data, so that touching it commits nothing (the module's memo stays valid). */
#define KA_MIRROR_CONFIRMED_FILE "mirror-confirmed"

/* KA_NOTFOUND when the store is not a mirror. */
int ka_mirror_meta_get(MDB_txn *txn, const ka_store *st, ka_mirror_meta *m);
/* Records all of m (a snapshot), or only the version (each batch of the follow). */
int ka_mirror_meta_put(MDB_txn *txn, ka_store *st, const ka_mirror_meta *m);
int ka_mirror_version_put(MDB_txn *txn, ka_store *st, uint64_t version);
/* KA_FAIL with "key store DIR is a mirror of ..." when the store is a mirror (the CLI's write
 * commands call it), KA_OK otherwise. */
int ka_store_refuse_mirror(ka_store *st, char *err, size_t errlen);
/* 1 when the store is a mirror (one read transaction); 0 otherwise or on a read error. */
int ka_store_is_mirror(ka_store *st);
/* Rewrites a store of format KA_STORE_FORMAT_1 to the current one, in one transaction. */
int ka_store_upgrade(const char *dir, const char *secret_path, char *err, size_t errlen);

/* The last LMDB error as text, for messages. */
const char *ka_store_strerror(int rc);

#endif
