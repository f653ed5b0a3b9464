/* A private directory under /tmp for a unit-test group's stores, and its removal. */
#ifndef KA_TEST_TMPDIR_H
#define KA_TEST_TMPDIR_H

#include <stddef.h>

/* Makes /tmp/ka-TAG-XXXXXX into root (size bytes); 0, or -1 when it cannot. */
int ka_test_tmpdir(char *root, size_t size, const char *tag);

/* Removes root and everything below it (links are removed, not followed); 0 on success. */
int ka_test_rmtree(const char *root);

#endif
