/* What a Krenalis change does to a mirrored key store (SPEC §11.1): the rows of a snapshot and
 * the payloads of the notifications the mirror follows, written in the caller's LMDB write
 * transaction. No PostgreSQL here: the unit tests drive it directly. */
#ifndef KA_MIRROR_APPLY_H
#define KA_MIRROR_APPLY_H

#include "keystore.h"

/* The notification names that change authentication; the mirror asks PostgreSQL for the
 * payloads of these only. NULL-terminated. */
extern const char *const ka_mirror_names[];

/* 1 when name is one of ka_mirror_names. */
int ka_mirror_name_relevant(const char *name);

/* Applies one notification. payload: its JSON text (NULL for a name the mirror ignores).
 * now: creation time given to keys (a payload carries none). KA_OK, or KA_FAIL with a message
 * in err that names the notification but never repeats its payload. */
int ka_mirror_apply(ka_store_txn *txn, ka_store *st, const char *name, const char *payload,
                    size_t len, uint64_t now, char *err, size_t errlen);

/* Snapshot rows. Each returns KA_OK, KA_NOTFOUND when the row was left out (an invalid ID, a
 * parent that is not there, an MCP key), or KA_FAIL (the store failed). */
int ka_mirror_org(ka_store_txn *txn, ka_store *st, const char *id, const char *name, int enabled);
int ka_mirror_ws(ka_store_txn *txn, ka_store *st, const char *id, const char *org,
                 const char *name);
/* flags: KA_CONN_DESTINATION, KA_CONN_NO_STRATEGY. */
int ka_mirror_conn(ka_store_txn *txn, ka_store *st, const char *id, const char *ws,
                   const char *name, unsigned flags);
/* ws "" when unrestricted; digest: access_keys.hmac. replace: remove a key of the same ID
 * first (0 when building a snapshot, where an ID cannot be there yet). */
int ka_mirror_access_key(ka_store_txn *txn, ka_store *st, const char *id, const char *org,
                         const char *ws, const uint8_t *digest, size_t digest_len, const char *hint,
                         const char *name, uint64_t created, int replace);
int ka_mirror_write_key(ka_store_txn *txn, ka_store *st, const char *conn, const char *key,
                        size_t len, uint64_t created);

#endif
