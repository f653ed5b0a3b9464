/* Proves that ka_ct_equal takes no branch on the bytes it compares (SPEC §10: the organizations
 * key and remembered API keys are compared in constant time). Run under valgrind's memcheck:
 * both inputs are marked undefined, so a conditional jump or a memory index that depends on
 * them is reported as an error (`--error-exitcode`). With --leaky the same inputs go through
 * memcmp, which stops at the first difference: the run must then report errors, which shows
 * that the check can fail. */
#include <stdio.h>
#include <string.h>
#include <valgrind/memcheck.h>

#include "crypto.h"

#define MAX_LEN 72

int main(int argc, char **argv)
{
    unsigned char a[MAX_LEN + 8], b[MAX_LEN + 8];
    int leaky = argc > 1 && strcmp(argv[1], "--leaky") == 0;
    unsigned equal = 0, runs = 0;

    if (!RUNNING_ON_VALGRIND) {
        fprintf(stderr, "ct_check: run me under valgrind\n");
        return 2;
    }
    for (size_t len = 1; len <= MAX_LEN; len++)
        for (size_t off = 0; off < 8; off++)
            for (size_t diff = 0; diff <= len; diff++) {
                int r;
                for (size_t i = 0; i < sizeof(a); i++)
                    a[i] = b[i] = (unsigned char)(i * 131 + len);
                if (diff < len)
                    b[off + diff] ^= 0x40; /* one differing byte, or none */
                VALGRIND_MAKE_MEM_UNDEFINED(a, sizeof(a));
                VALGRIND_MAKE_MEM_UNDEFINED(b, sizeof(b));
                r = leaky ? memcmp(a + off, b + off, len) == 0 : ka_ct_equal(a + off, b + off, len);
                VALGRIND_MAKE_MEM_DEFINED(&r, sizeof(r));
                equal += (unsigned)r;
                runs++;
            }
    /* One equal pair per (len, off): the answers are right as well as branch-free. */
    printf("ct_check: %u compares, %u equal\n", runs, equal);
    return equal == MAX_LEN * 8 ? 0 : 1;
}
