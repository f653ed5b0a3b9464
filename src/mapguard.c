/* SIGBUS guard for reads of a memory-mapped store (see mapguard.h). */
#include "mapguard.h"

#include <signal.h>
#include <stddef.h>

/* The innermost armed guard of this thread. initial-exec: the handler must not make glibc
 * allocate this thread's TLS block (not async-signal-safe) in a module loaded by dlopen. */
static __thread ka_map_guard *current __attribute__((tls_model("initial-exec")));
/* The disposition that was in place before ours (per process). */
static struct sigaction previous;

static void on_sigbus(int sig, siginfo_t *si, void *uctx)
{
    ka_map_guard *g = current;

    (void)uctx;
    if (g != NULL && si != NULL && si->si_code > 0) {
        /* A fault of this thread inside a guard (si_code > 0: not sent by kill). */
        current = g->prev;
        siglongjmp(g->jb, 1);
    }
    /* Not ours: put the previous disposition back. A fault recurs on return and reaches it;
     * a signal sent by kill is sent again, and delivered when this handler returns. */
    sigaction(SIGBUS, &previous, NULL);
    if (si == NULL || si->si_code <= 0)
        raise(sig);
}

int ka_map_guard_install(void)
{
    struct sigaction sa;

    /* Installed twice, the handler would chain to itself. */
    if (sigaction(SIGBUS, NULL, &sa) != 0)
        return -1;
    if ((sa.sa_flags & SA_SIGINFO) && sa.sa_sigaction == on_sigbus)
        return 0;
    sa.sa_sigaction = on_sigbus;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    return sigaction(SIGBUS, &sa, &previous);
}

void ka_map_guard_arm(ka_map_guard *g)
{
    g->prev = current;
    current = g;
}

void ka_map_guard_disarm(ka_map_guard *g)
{
    current = g->prev;
}

void ka_map_guard_recover(void)
{
    sigset_t set;

    sigemptyset(&set);
    sigaddset(&set, SIGBUS);
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
}
