/* mapguard.c: a read of a mapped file past its end, inside a guard, comes back as a jump to
 * the guard (repeatedly, nested); outside a guard it still kills the process. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "mapguard.h"
#include "tests.h"

static char path[64];
static volatile unsigned char *map;
static long page;

/* Two mapped pages of a file that now holds one. */
static int setup(void **state)
{
    int fd;

    (void)state;
    page = sysconf(_SC_PAGESIZE);
    snprintf(path, sizeof(path), "/tmp/ka-guard-XXXXXX");
    fd = mkstemp(path);
    if (fd < 0 || ftruncate(fd, 2 * page) != 0)
        return -1;
    map = mmap(NULL, 2 * page, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    return map == MAP_FAILED || truncate(path, page) != 0 ? -1 : 0;
}

static int teardown(void **state)
{
    (void)state;
    munmap((void *)map, 2 * page);
    return unlink(path);
}

/* cmocka puts its own SIGBUS handler in place for each test: ours chains to it. */
static void install(void)
{
    assert_int_equal(ka_map_guard_install(), 0);
    assert_int_equal(ka_map_guard_install(), 0); /* idempotent */
}

/* 1 when reading byte off faulted, inside a guard. */
static int guarded_read(size_t off, volatile unsigned char *out)
{
    ka_map_guard g;

    if (sigsetjmp(g.jb, 0) != 0) {
        ka_map_guard_recover();
        return 1;
    }
    ka_map_guard_arm(&g);
    *out = map[off];
    ka_map_guard_disarm(&g);
    return 0;
}

static void test_fault_is_caught(void **state)
{
    volatile unsigned char c = 1;

    (void)state;
    install();
    assert_int_equal(guarded_read(0, &c), 0);
    assert_int_equal(c, 0);
    /* Past the end, again and again: SIGBUS must be unblocked after each jump. */
    for (int i = 0; i < 3; i++)
        assert_int_equal(guarded_read((size_t)page + 8, &c), 1);
    assert_int_equal(guarded_read(8, &c), 0);
}

static void test_nested(void **state)
{
    ka_map_guard outer;
    volatile int inner_faulted = 0, outer_faulted = 0;
    volatile unsigned char c;

    (void)state;
    install();
    if (sigsetjmp(outer.jb, 0) == 0) {
        ka_map_guard_arm(&outer);
        /* The inner guard takes the fault, the outer one stays armed after it. */
        inner_faulted = guarded_read((size_t)page, &c);
        c = map[(size_t)page + 1];
        ka_map_guard_disarm(&outer);
    } else {
        ka_map_guard_recover();
        outer_faulted = 1;
    }
    assert_int_equal(inner_faulted, 1);
    assert_int_equal(outer_faulted, 1);
}

static void test_unguarded_fault_kills(void **state)
{
    int status = 0;
    pid_t pid;

    (void)state;
    /* valgrind reports the deliberate fault as an invalid read and kills with SIGSEGV. */
    if (getenv("LD_PRELOAD") && strstr(getenv("LD_PRELOAD"), "vgpreload")) {
        skip();
        return;
    }
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        /* The previous disposition (here the default: terminate) handles it. */
        volatile unsigned char c;
        signal(SIGBUS, SIG_DFL);
        if (ka_map_guard_install() != 0)
            _exit(2);
        c = map[(size_t)page + 16];
        (void)c;
        _exit(0);
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGBUS);
    /* Also a SIGBUS sent by kill(2) to a thread inside a guard is not a fault of the map. */
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        ka_map_guard g;
        signal(SIGBUS, SIG_DFL);
        if (ka_map_guard_install() != 0)
            _exit(2);
        if (sigsetjmp(g.jb, 0) == 0) {
            ka_map_guard_arm(&g);
            raise(SIGBUS);
            ka_map_guard_disarm(&g);
        }
        _exit(0);
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGBUS);
}

int run_mapguard_tests(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fault_is_caught),
        cmocka_unit_test(test_nested),
        cmocka_unit_test(test_unguarded_fault_kills),
    };
    return cmocka_run_group_tests_name("mapguard", tests, setup, teardown);
}
