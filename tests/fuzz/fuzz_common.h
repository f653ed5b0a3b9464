/* Shared by the libFuzzer targets: property checks that abort (so that libFuzzer saves the
 * input as a crash) and small helpers. */
#ifndef KA_FUZZ_COMMON_H
#define KA_FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A property of the code under test: on violation, say which and abort. */
#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz property violated: %s (%s:%d)\n", #cond, __FILE__, __LINE__);    \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* The input as a C string in its own exact-size allocation (ASan sees any read past the NUL).
 * An embedded NUL ends the string early, as it would in an httpd header table. */
static inline char *fuzz_cstr(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (s == NULL)
        abort();
    memcpy(s, data, size);
    s[size] = '\0';
    return s;
}

/* The input bytes in their own exact-size allocation (no terminator). */
static inline uint8_t *fuzz_dup(const uint8_t *data, size_t size)
{
    uint8_t *p = malloc(size ? size : 1);
    if (p == NULL)
        abort();
    if (size)
        memcpy(p, data, size);
    return p;
}

static inline int fuzz_is_blank(char c)
{
    return c == ' ' || c == '\t';
}

#endif
