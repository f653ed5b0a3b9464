/* The LMDB key store (SPEC §3; layout in docs/keystore.md). The module uses the read side; the
 * krenalis-keys command uses both. LMDB stays behind this header: the store and its
 * transactions are opaque, and the functions answer with a ka_store_status. */
#ifndef KA_KEYSTORE_H
#define KA_KEYSTORE_H

#include <stddef.h>
#include <stdint.h>

#include "ka.h"

/* What a store function answers. */
typedef enum {
    KA_OK = 0,
    KA_NOTFOUND,  /* no such record */
    KA_FAIL,      /* the store failed, or holds a record this build cannot read */
    KA_BADSECRET, /* ka_store_open*: the secret is not the store's */
    KA_RESIZED,   /* ka_store_read_begin/renew: another process grew the map; with no transaction
                     of this process active, ka_store_adopt_map, then begin again */
    KA_MAPFULL,   /* ka_store_commit: the map is full; ka_store_reserve(grow) and redo it all */
} ka_store_status;

#define KA_STORE_FORMAT "krenalis-keys 3"
#define KA_STORE_FORMAT_1 "krenalis-keys 1" /* rewritten by ka_store_upgrade */
#define KA_STORE_FORMAT_2 "krenalis-keys 2" /* rewritten by ka_store_upgrade */
#define KA_STORE_MAXREADERS 4094
#define KA_STORE_DEFAULT_MAPSIZE ((size_t)1 << 30)

/* An open store: its LMDB environment and the HMAC key of its secret. Opaque. */
typedef struct ka_store ka_store;

/* A transaction on a store, read-only or writing. Opaque. */
typedef struct ka_store_txn ka_store_txn;

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
ka_store_status ka_store_open(const char *dir, const char *secret_path, int readonly,
                              ka_store **out, char *err, size_t errlen);
/* The same with the secret in memory (the module reads it as root before it forks);
 * secret_path, when not NULL, is where it came from, for the KA_BADSECRET message. */
ka_store_status ka_store_open_secret(const char *dir, const uint8_t secret[KA_SECRET_LEN],
                                     const char *secret_path, int readonly, ka_store **out,
                                     char *err, size_t errlen);
void ka_store_close(ka_store *st);
/* KA_FAIL, with a message, when a data.mdb of size bytes is shorter than the pages the store's
 * last commit uses (a truncated file: reading those pages through the map would be SIGBUS). */
ka_store_status ka_store_check_size(const ka_store *st, long long size, char *err, size_t errlen);
/* The version of the storage engine (LMDB), e.g. "0.9.24", written into buf; returns buf. */
char *ka_store_engine_version(char *buf, size_t len);
/* Which file an open store maps: device and inode, and its birth time (ns since the epoch; 0
 * where the file system does not keep one). An inode number is reused once its file is gone;
 * with the birth time, two files that ever held the same inode differ. KA_OK or KA_FAIL. */
typedef struct {
    uint64_t dev, ino, born;
} ka_store_file;
ka_store_status ka_store_file_id(const ka_store *st, ka_store_file *id);
/* The directory the store was opened from. */
const char *ka_store_dir(const ka_store *st);

/* The default secret of a store: DIR/secret (KrenalisAuthKeyStoreSecret, --secret). Writes it
 * into buf; returns buf. */
char *ka_store_default_secret(const char *dir, char *buf, size_t len);

/* Creates DIR, a new secret (mode 0600) unless secret_path names an existing one, and an empty
 * store of the current format. */
ka_store_status ka_store_create(const char *dir, const char *secret_path, char *err, size_t errlen);

/* ---- transactions ---- */

/* Begins a read transaction: KA_OK, KA_RESIZED, or KA_FAIL with a message. */
ka_store_status ka_store_read_begin(const ka_store *st, ka_store_txn **txn, char *err,
                                    size_t errlen);
/* Ends a read transaction but keeps its handle (and its reader slot) for ka_store_read_renew. */
void ka_store_read_reset(ka_store_txn *txn);
/* Begins a reset read transaction again: KA_OK, KA_RESIZED, or KA_FAIL with a message (the
 * caller aborts txn on failure). */
ka_store_status ka_store_read_renew(ka_store_txn *txn, char *err, size_t errlen);
/* Adopts a map grown by another process (after KA_RESIZED); no transaction of this process
 * may be active. */
void ka_store_adopt_map(ka_store *st);
/* The snapshot a transaction reads (LMDB's transaction ID). */
size_t ka_store_txn_id(const ka_store_txn *txn);
/* The ID of the last transaction committed to the store (read from its meta pages), or 0. */
size_t ka_store_last_commit(const ka_store *st);

/* Begins a write transaction: KA_OK or KA_FAIL with a message. */
ka_store_status ka_store_write_begin(ka_store *st, ka_store_txn **txn, char *err, size_t errlen);
/* Commits: KA_OK, KA_MAPFULL (nothing was written), or KA_FAIL with a message. */
ka_store_status ka_store_commit(ka_store_txn *txn, char *err, size_t errlen);
/* Ends a transaction without writing anything; NULL is nothing to do. */
void ka_store_abort(ka_store_txn *txn);
/* Keeps the map large enough for the next write transaction: at least twice the pages in use
 * (a transaction may copy every page it touches) plus estimate bytes and some slack; grow
 * doubles it anyway (after KA_MAPFULL). Call with no transaction open. KA_OK or KA_FAIL. */
ka_store_status ka_store_reserve(ka_store *st, size_t estimate, int grow, char *err, size_t errlen);

/* ---- records ----
 * Read side: fill the record; KA_NOTFOUND when absent. ka_get_key fills what a decision
 * needs (type, id, org, ws, conn) and leaves created, hint and name empty: they are in the
 * key-ids record, which ka_get_key_by_id and the listings read. */
ka_store_status ka_get_key(ka_store_txn *txn, const ka_store *st,
                           const uint8_t digest[KA_DIGEST_LEN], ka_key_rec *rec);
ka_store_status ka_get_org(ka_store_txn *txn, const ka_store *st, const char *id, ka_entity *e);
ka_store_status ka_get_ws(ka_store_txn *txn, const ka_store *st, const char *id, ka_entity *e);
ka_store_status ka_get_conn(ka_store_txn *txn, const ka_store *st, const char *id, ka_entity *e);

/* Digests by which keys are found. */
void ka_digest_api(const ka_store *st, const uint8_t payload[KA_PAYLOAD_LEN],
                   uint8_t out[KA_DIGEST_LEN]);
void ka_digest_write(const ka_store *st, const char key[KA_WRITE_KEY_LEN],
                     uint8_t out[KA_DIGEST_LEN]);

/* Write side (one write transaction, the caller commits). Puts overwrite. Removals cascade:
 * organization -> workspaces -> connections -> keys. */
ka_store_status ka_put_org(ka_store_txn *txn, ka_store *st, const ka_entity *e);
ka_store_status ka_put_ws(ka_store_txn *txn, ka_store *st, const ka_entity *e);
ka_store_status ka_put_conn(ka_store_txn *txn, ka_store *st, const ka_entity *e);
ka_store_status ka_put_key(ka_store_txn *txn, ka_store *st, const uint8_t digest[KA_DIGEST_LEN],
                           const ka_key_rec *rec);
ka_store_status ka_del_org(ka_store_txn *txn, ka_store *st, const char *id);
ka_store_status ka_del_ws(ka_store_txn *txn, ka_store *st, const char *id);
ka_store_status ka_del_conn(ka_store_txn *txn, ka_store *st, const char *id);
ka_store_status ka_del_key(ka_store_txn *txn, ka_store *st, const char *key_id);
/* The key record of a key ID. */
ka_store_status ka_get_key_by_id(ka_store_txn *txn, const ka_store *st, const char *key_id,
                                 ka_key_rec *rec);

/* Iteration; the callback returns 0 to go on. filter may be NULL (all). */
typedef int (*ka_entity_cb)(const ka_entity *e, void *arg);
typedef int (*ka_key_cb)(const ka_key_rec *k, void *arg);
ka_store_status ka_list_orgs(ka_store_txn *txn, const ka_store *st, ka_entity_cb cb, void *arg);
ka_store_status ka_list_ws(ka_store_txn *txn, const ka_store *st, const char *org, ka_entity_cb cb,
                           void *arg);
ka_store_status ka_list_conns(ka_store_txn *txn, const ka_store *st, const char *ws,
                              ka_entity_cb cb, void *arg);
/* API keys of org (all API keys when NULL). */
ka_store_status ka_list_api_keys(ka_store_txn *txn, const ka_store *st, const char *org,
                                 ka_key_cb cb, void *arg);
/* Write keys of one connection. */
ka_store_status ka_list_write_keys(ka_store_txn *txn, const ka_store *st, const char *conn,
                                   ka_key_cb cb, void *arg);

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
ka_store_status ka_mirror_meta_get(ka_store_txn *txn, const ka_store *st, ka_mirror_meta *m);
/* Records all of m (a snapshot), or only the version (each batch of the follow). */
ka_store_status ka_mirror_meta_put(ka_store_txn *txn, ka_store *st, const ka_mirror_meta *m);
ka_store_status ka_mirror_version_put(ka_store_txn *txn, ka_store *st, uint64_t version);
/* KA_FAIL with "key store DIR is a mirror of ..." when the store is a mirror (the CLI's write
 * commands call it), KA_OK otherwise. */
ka_store_status ka_store_refuse_mirror(ka_store *st, char *err, size_t errlen);
/* 1 when the store is a mirror (one read transaction); 0 otherwise or on a read error. */
int ka_store_is_mirror(ka_store *st);
/* Rewrites a store of format KA_STORE_FORMAT_1 or _2 to the current one: a rebuild (below)
 * that converts every record. */
ka_store_status ka_store_upgrade(const char *dir, const char *secret_path, char *err,
                                 size_t errlen);

/* ---- rebuilds and bulk loads (docs/keystore.md, "Dense stores") ----
 * A rebuild writes every record in key order (MDB_APPEND) into a fresh environment in
 * DIR.rebuild-new, with the meta records and the files of DIR (owner, mode, the secret and
 * any other file, hard-linked), and swaps it in with renameat2(RENAME_EXCHANGE), holding the
 * old store's write transaction throughout so that no other writer commits meanwhile. A
 * writer that waited meanwhile notices the replaced data.mdb and reopens (ka_store_write_begin)
 * and Apache's children reopen it within a second. */

/* Rebuilds the store dense with the same content (krenalis-keys compact); st is reopened on
 * the new store. */
ka_store_status ka_store_compact(ka_store *st, char *err, size_t errlen);

/* One new key of a bulk load. The caller fills it; ka_bulk_add may call regen_id to replace
 * an ID (key, or connection) that is already taken. */
typedef struct {
    uint8_t digest[KA_DIGEST_LEN];
    char id[KA_ID_LEN];
    char conn[KA_ID_LEN]; /* write keys: the new connection it is the key of */
    char hint[KA_HINT_MAX];
    uint8_t hint_len;
} ka_bulk_key;

/* Replaces id with a new random one; 0 on success. */
typedef int (*ka_regen_id)(char id[KA_ID_LEN], void *arg);

/* Adds n keys with the type, organization, workspace, creation time and name of tmpl; write
 * keys (tmpl->type KA_KEY_WRITE) each with a new connection conn_tmpl (workspace,
 * organization, name, flags) whose ID is the key's conn. The organization (and workspace)
 * must exist: KA_NOTFOUND otherwise. Adds in place, in key order, when n is small against what
 * the store holds, else rebuilds the store dense with the new keys (above; *rebuilt set) and
 * reopens st on it. All or nothing. keys keeps its order; a taken ID in it is replaced. */
ka_store_status ka_bulk_add(ka_store *st, const ka_key_rec *tmpl, const ka_entity *conn_tmpl,
                            ka_bulk_key *keys, size_t n, ka_regen_id regen, void *regen_arg,
                            int *rebuilt, char *err, size_t errlen);

/* Puts newdir in the place of dir in one step (renameat2 RENAME_EXCHANGE, or a rename when dir
 * is gone) and removes what was dir. 0, or -1 with a message. */
int ka_dir_swap(const char *newdir, const char *dir, char *err, size_t errlen);
/* Removes a directory tree (a failed or swapped-out store); nothing when absent. */
void ka_dir_remove(const char *path);

/* Durability of the commits that follow (the mirror's bulk writes): KA_SYNC_FULL (the
 * default), KA_SYNC_NOMETA (data synced, meta pages not: a crash loses at most the last
 * commit), KA_SYNC_NONE (nothing synced until ka_store_sync). */
typedef enum { KA_SYNC_FULL = 0, KA_SYNC_NOMETA, KA_SYNC_NONE } ka_sync_mode;
ka_store_status ka_store_set_sync(ka_store *st, ka_sync_mode mode);
/* Writes everything committed so far to disk. */
ka_store_status ka_store_sync(ka_store *st);

#endif
