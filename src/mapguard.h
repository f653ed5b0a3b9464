/* Reading a memory-mapped file past its end raises SIGBUS: a data.mdb truncated under a
 * running server would kill the child mid-request. A guard turns that fault, inside the code
 * it covers, into a jump back to the guard, which answers 503 and reopens the store.
 *
 *     ka_map_guard g;
 *     if (sigsetjmp(g.jb, 0) == 0) {
 *         ka_map_guard_arm(&g);
 *         ... reads of the map ...
 *         ka_map_guard_disarm(&g);
 *     } else {
 *         ka_map_guard_recover();
 *         ... the reads faulted: objects changed since sigsetjmp must not be automatic ...
 *     }
 *
 * Guards nest, per thread. A SIGBUS outside any guard goes to the handler that was installed
 * before ka_map_guard_install. */
#ifndef KA_MAPGUARD_H
#define KA_MAPGUARD_H

#include <setjmp.h>

typedef struct ka_map_guard {
    sigjmp_buf jb;
    struct ka_map_guard *prev;
} ka_map_guard;

/* Once per process, before threads start. Returns 0, or -1 with errno. */
int ka_map_guard_install(void);
void ka_map_guard_arm(ka_map_guard *g);
void ka_map_guard_disarm(ka_map_guard *g);
/* On the fault branch: unblocks SIGBUS, which the jump out of the handler left blocked. */
void ka_map_guard_recover(void);

#endif
