/* The temporary directories of the unit tests that need a real key store (tmpdir.h). */
#include "tmpdir.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

int ka_test_tmpdir(char *root, size_t size, const char *tag)
{
    int n = snprintf(root, size, "/tmp/ka-%s-XXXXXX", tag);

    if (n < 0 || (size_t)n >= size)
        return -1;
    return mkdtemp(root) == NULL ? -1 : 0;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

int ka_test_rmtree(const char *root)
{
    return nftw(root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}
