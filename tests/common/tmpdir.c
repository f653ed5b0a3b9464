/* The temporary directories of the unit tests that need a real key store (tmpdir.h). */
#include "tmpdir.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "keystore.h"

int ka_test_tmpdir(char *root, size_t size, const char *tag)
{
    int n = snprintf(root, size, "/tmp/ka-%s-XXXXXX", tag);

    if (n < 0 || (size_t)n >= size)
        return -1;
    return mkdtemp(root) == NULL ? -1 : 0;
}

int ka_test_rmtree(const char *root)
{
    ka_dir_remove(root);
    return access(root, F_OK) == 0 ? -1 : 0;
}
