/* The look-up cache (docs/operations.md, "Look-up cache"): what the store answered for a key
 * digest or an organization, workspace or connection ID, kept in a fixed table that every
 * child of a server shares, and valid only for the store snapshot that answered. A request
 * whose look-ups it answers reads no B-tree and begins no read transaction; the next commit to
 * the store (a key revoked, an organization disabled) makes every entry stale at once.
 *
 * The table is memory the caller gives (shared memory in the module); entries are guarded by a
 * sequence number each (a seqlock: readers never write, a writer that finds an entry busy
 * skips it), so nothing takes a lock across processes. It holds only what is found in the
 * store (an unknown key is never cached, so a client cannot fill it with its own guesses) and
 * never a token: keys are found by their HMAC digest, as in the store. */
#ifndef KA_KEYCACHE_H
#define KA_KEYCACHE_H

#include <stddef.h>
#include <stdint.h>

#include "ka.h"

/* What an entry is the answer of. A decision is an API-endpoint request's accepted identity,
 * found by the tag of the inputs it was decided on (ka_keycache_mac; decide.c). */
typedef enum {
    KA_KC_KEY = 1,
    KA_KC_ORG,
    KA_KC_WS,
    KA_KC_CONN,
    KA_KC_DECISION, /* an accepted API-endpoint decision, by the tag of its inputs */
    KA_KC_WKEY      /* an ingestion write key that passed, by the tag of the key */
} ka_kc_kind;

/* A remembered decision's key: the table's MAC of its inputs (SipHash-2-4-128). */
#define KA_KC_TAG_LEN 16

/* The store snapshot an answer came from: the data file (device, inode and birth time: an
 * inode number is reused once its file is gone) and LMDB's transaction ID. Equal snapshots
 * give equal answers; a replaced file is another store. */
typedef struct {
    uint64_t txnid, dev, ino, born;
} ka_kc_snap;

/* An answer. Keys: type, id (key ID), org, ws, conn. Entities: id, org (workspaces,
 * connections), ws (connections), enabled (organizations), flags (connections). IDs are
 * NUL-terminated when shorter than KA_ID_LEN ("" for none). */
typedef struct {
    uint8_t type; /* ka_key_type */
    uint8_t enabled;
    uint8_t flags;
    uint8_t pad; /* the cache's own */
    char id[KA_ID_LEN], org[KA_ID_LEN], ws[KA_ID_LEN], conn[KA_ID_LEN];
} ka_kc_val;

typedef struct ka_keycache ka_keycache;

#define KA_KC_MIN_ENTRIES 64
#define KA_KC_MAX_ENTRIES (1u << 24)
#define KA_KC_DEFAULT_ENTRIES 65536

/* The bytes a table of entries entries takes (entries rounded up to a power of two). */
size_t ka_keycache_bytes(unsigned entries);
/* Lays a table out in mem (ka_keycache_bytes(entries) bytes, 64-byte aligned, any content).
 * random (from a CSPRNG) makes the slots of IDs unpredictable to clients and keys the MAC of
 * decisions' inputs. Returns mem as the table. */
#define KA_KC_RANDOM_LEN 24
ka_keycache *ka_keycache_init(void *mem, unsigned entries, const uint8_t random[KA_KC_RANDOM_LEN]);
unsigned ka_keycache_entries(const ka_keycache *kc);

/* Where the answer for a key lives, from len bytes the caller has before the key itself: a
 * credential's payload (its digest comes later, from the HMAC), or an ID. Equal sources give
 * equal places; the table's seed keeps them unpredictable. */
uint64_t ka_keycache_locate(const ka_keycache *kc, ka_kc_kind kind, const void *src, size_t len);
/* Starts fetching the memory of loc, so that the look-up that follows (after the HMAC) does not
 * wait for it: the table is larger than the CPU's caches. */
void ka_keycache_prefetch(const ka_keycache *kc, uint64_t loc);

/* The tag of a decision's inputs (len bytes): a pseudorandom function of them under the table's
 * own key, which nothing outside the server's processes knows. */
void ka_keycache_mac(const ka_keycache *kc, const void *in, size_t len, uint8_t tag[KA_KC_TAG_LEN]);

/* The answer for key (a KA_DIGEST_LEN digest for KA_KC_KEY, a KA_KC_TAG_LEN tag for
 * KA_KC_DECISION, else a KA_ID_LEN ID) at loc on snap: 1 and *out, or 0. */
int ka_keycache_get(const ka_keycache *kc, const ka_kc_snap *snap, ka_kc_kind kind, uint64_t loc,
                    const void *key, ka_kc_val *out);
/* Keeps the answer read on snap (best effort: an entry another thread is writing is left). */
void ka_keycache_put(ka_keycache *kc, const ka_kc_snap *snap, ka_kc_kind kind, uint64_t loc,
                     const void *key, const ka_kc_val *val);

#endif
