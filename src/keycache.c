/* The look-up cache (keycache.h): a table of sets of WAYS entries, an entry found in the set its
 * key hashes to. A set begins with a cache line of tags, one per entry, from the key's hash: a
 * probe reads that line and then only the entry whose tag matches (a table larger than the CPU
 * caches costs a miss per line read). Tags are hints, checked against the entry itself. Each
 * entry is 16 words, the first its sequence number: odd while a writer fills it. A reader copies
 * the entry between two reads of the number and uses the copy only when they are equal and even
 * (Boehm, "Can seqlocks get along with programming language memory models?", 2012); every word is
 * an atomic, so the races are defined behaviour. */
#include "keycache.h"

#include "crypto.h"

#include <stdatomic.h>
#include <string.h>

#define WAYS 4
#define KEY_WORDS 4 /* a digest, or an ID zero-padded */
#define VAL_WORDS 7

_Static_assert(sizeof(ka_kc_val) <= VAL_WORDS * 8, "ka_kc_val fits its words");
_Static_assert(KA_DIGEST_LEN == KEY_WORDS * 8, "a digest fills the key words");

#define SNAP_WORDS 4
#define KIND_BYTE offsetof(ka_kc_val, pad) /* where an entry keeps its kind */

/* The value's words hold the entry's kind in the value's pad byte. */
typedef struct {
    _Atomic uint64_t seq;
    _Atomic uint64_t snap[SNAP_WORDS]; /* txnid, dev, ino, born */
    _Atomic uint64_t key[KEY_WORDS];
    _Atomic uint64_t val[VAL_WORDS];
} entry;

_Static_assert(sizeof(entry) == 128, "two cache lines an entry");

typedef struct {
    _Atomic uint64_t tag[WAYS]; /* the hash of the entry's key and kind, 0 for none */
    uint64_t pad[8 - WAYS];
    entry way[WAYS];
} set_t;

_Static_assert(sizeof(set_t) == 64 + WAYS * 128, "a tag line, then the entries");

struct ka_keycache {
    uint64_t seed;
    uint8_t mac_key[KA_SIPHASH_KEY_LEN];
    uint64_t set_mask;
    uint32_t entries;
    uint8_t pad[64 - 36];
    set_t set[];
};

_Static_assert(sizeof(struct ka_keycache) == 64, "entries start on a cache line");

static unsigned round_entries(unsigned n)
{
    unsigned p = KA_KC_MIN_ENTRIES;

    if (n > KA_KC_MAX_ENTRIES)
        n = KA_KC_MAX_ENTRIES;
    while (p < n)
        p <<= 1;
    return p;
}

size_t ka_keycache_bytes(unsigned entries)
{
    return sizeof(struct ka_keycache) + (size_t)(round_entries(entries) / WAYS) * sizeof(set_t);
}

ka_keycache *ka_keycache_init(void *mem, unsigned entries, const uint8_t random[KA_KC_RANDOM_LEN])
{
    ka_keycache *kc = mem;
    unsigned n = round_entries(entries);

    /* Every page touched now: the table's memory is the same whatever keys come later. */
    memset(kc, 0, ka_keycache_bytes(n));
    memcpy(&kc->seed, random, sizeof(kc->seed));
    memcpy(kc->mac_key, random + sizeof(kc->seed), sizeof(kc->mac_key));
    kc->entries = n;
    kc->set_mask = n / WAYS - 1;
    return kc;
}

unsigned ka_keycache_entries(const ka_keycache *kc)
{
    return kc->entries;
}

void ka_keycache_mac(const ka_keycache *kc, const void *in, size_t len, uint8_t tag[KA_KC_TAG_LEN])
{
    ka_siphash128(kc->mac_key, in, len, tag);
}

static uint64_t mix(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

/* The key as words: a digest as it is, a tag or an ID zero-padded (IDs are found by content,
 * so an ID shorter than KA_ID_LEN, never valid, still maps to one key). */
static void key_words(ka_kc_kind kind, const void *key, uint64_t w[KEY_WORDS])
{
    memset(w, 0, KEY_WORDS * 8);
    if (kind == KA_KC_KEY)
        memcpy(w, key, KA_DIGEST_LEN);
    else if (kind == KA_KC_DECISION || kind == KA_KC_WKEY)
        memcpy(w, key, KA_KC_TAG_LEN);
    else
        memcpy(w, key, strnlen(key, KA_ID_LEN));
}

uint64_t ka_keycache_locate(const ka_keycache *kc, ka_kc_kind kind, const void *src, size_t len)
{
    uint64_t w[2] = {0, 0};

    memcpy(w, src, len < sizeof(w) ? len : sizeof(w));
    return mix(mix(w[0] ^ kc->seed ^ ((uint64_t)kind << 56)) ^ w[1]) | 1;
}

/* The set of a place; the place itself is the entry's tag there (never 0). */
static set_t *set_of(const ka_keycache *kc, uint64_t loc)
{
    return (set_t *)&kc->set[(loc >> 8) & kc->set_mask];
}

void ka_keycache_prefetch(const ka_keycache *kc, uint64_t loc)
{
    const char *p;

    if (kc == NULL)
        return;
    p = (const char *)set_of(kc, loc);
    for (size_t off = 0; off < sizeof(set_t); off += 64)
        __builtin_prefetch(p + off);
}

/* A consistent copy of e's fields, or 0 when a writer was at it. With val NULL only the
 * snapshot and the key are copied. */
static int read_entry(const entry *e, uint64_t snap[SNAP_WORDS], uint64_t key[KEY_WORDS],
                      uint64_t val[VAL_WORDS])
{
    uint64_t s = atomic_load_explicit(&e->seq, memory_order_acquire);

    if (s & 1)
        return 0;
    for (int i = 0; i < SNAP_WORDS; i++)
        snap[i] = atomic_load_explicit(&e->snap[i], memory_order_relaxed);
    for (int i = 0; i < KEY_WORDS; i++)
        key[i] = atomic_load_explicit(&e->key[i], memory_order_relaxed);
    if (val)
        for (int i = 0; i < VAL_WORDS; i++)
            val[i] = atomic_load_explicit(&e->val[i], memory_order_relaxed);
    atomic_thread_fence(memory_order_acquire);
    return atomic_load_explicit(&e->seq, memory_order_relaxed) == s;
}

static void snap_words(const ka_kc_snap *snap, uint64_t w[SNAP_WORDS])
{
    w[0] = snap->txnid;
    w[1] = snap->dev;
    w[2] = snap->ino;
    w[3] = snap->born;
}

int ka_keycache_get(const ka_keycache *kc, const ka_kc_snap *snap, ka_kc_kind kind, uint64_t loc,
                    const void *key, ka_kc_val *out)
{
    uint64_t w[KEY_WORDS], sw[SNAP_WORDS], s[SNAP_WORDS], k[KEY_WORDS], v[VAL_WORDS];
    uint64_t tag = loc | 1;
    const set_t *set;

    /* Transaction 0 is never a snapshot a request read: an all-zero entry must not match. */
    if (kc == NULL || snap->txnid == 0)
        return 0;
    key_words(kind, key, w);
    snap_words(snap, sw);
    set = set_of(kc, tag);
    for (int i = 0; i < WAYS; i++) {
        if (atomic_load_explicit(&set->tag[i], memory_order_relaxed) != tag ||
            !read_entry(&set->way[i], s, k, v))
            continue;
        if (((const uint8_t *)v)[KIND_BYTE] == (uint8_t)kind && memcmp(s, sw, sizeof(s)) == 0 &&
            memcmp(k, w, sizeof(w)) == 0) {
            memcpy(out, v, sizeof(*out));
            out->pad = 0;
            return 1;
        }
    }
    return 0;
}

/* The way to overwrite: the same key's, else a stale or empty one, else one picked by the
 * hash's high bits (the sets are small: no use ranking the live ones). */
static int victim(const set_t *set, uint64_t tag, const uint64_t w[KEY_WORDS],
                  const uint64_t sw[SNAP_WORDS])
{
    uint64_t s[SNAP_WORDS], k[KEY_WORDS];
    int stale = -1;

    for (int i = 0; i < WAYS; i++) {
        uint64_t t = atomic_load_explicit(&set->tag[i], memory_order_relaxed);
        if (t == 0 || !read_entry(&set->way[i], s, k, NULL)) {
            if (t == 0 && stale < 0)
                stale = i;
            continue;
        }
        if (t == tag && memcmp(k, w, KEY_WORDS * 8) == 0)
            return i;
        if (stale < 0 && memcmp(s, sw, sizeof(s)) != 0)
            stale = i;
    }
    return stale >= 0 ? stale : (int)(mix(w[2] ^ w[3] ^ sw[0]) % WAYS);
}

void ka_keycache_put(ka_keycache *kc, const ka_kc_snap *snap, ka_kc_kind kind, uint64_t loc,
                     const void *key, const ka_kc_val *val)
{
    uint64_t w[KEY_WORDS], sw[SNAP_WORDS], v[VAL_WORDS] = {0}, tag = loc | 1, s;
    set_t *set;
    entry *e;
    int i;

    if (kc == NULL || snap->txnid == 0)
        return;
    key_words(kind, key, w);
    snap_words(snap, sw);
    memcpy(v, val, sizeof(*val));
    ((uint8_t *)v)[KIND_BYTE] = (uint8_t)kind;
    set = set_of(kc, tag);
    i = victim(set, tag, w, sw);
    e = &set->way[i];
    s = atomic_load_explicit(&e->seq, memory_order_relaxed);
    /* Another writer has it (or one died in it): leave it. */
    if ((s & 1) || !atomic_compare_exchange_strong_explicit(
                       &e->seq, &s, s + 1, memory_order_relaxed, memory_order_relaxed))
        return;
    atomic_thread_fence(memory_order_release);
    for (int j = 0; j < SNAP_WORDS; j++)
        atomic_store_explicit(&e->snap[j], sw[j], memory_order_relaxed);
    for (int j = 0; j < KEY_WORDS; j++)
        atomic_store_explicit(&e->key[j], w[j], memory_order_relaxed);
    for (int j = 0; j < VAL_WORDS; j++)
        atomic_store_explicit(&e->val[j], v[j], memory_order_relaxed);
    atomic_store_explicit(&e->seq, s + 2, memory_order_release);
    /* After the entry: a reader that sees the new tag early finds an odd or older entry. */
    atomic_store_explicit(&set->tag[i], tag, memory_order_release);
}
