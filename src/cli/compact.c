/* krenalis-keys compact (cli.h): the store rewritten dense, with the same content. */
#include <errno.h>
#include <stdio.h>
#include <sys/stat.h>

#include "cli.h"

static long long data_size(const char *dir)
{
    char path[4200];
    struct stat sb;

    snprintf(path, sizeof(path), "%s/data.mdb", dir);
    return stat(path, &sb) == 0 ? (long long)sb.st_size : -1;
}

/* Also on a mirrored store: compacting changes no record, and the mirror's next write goes to
 * the new file (ka_store_write_begin reopens a replaced store). */
int cmd_compact(cli *c)
{
    char err[ERR_MAX] = "", line[256];
    long long before = data_size(c->dir), after;
    ka_store *st;
    ka_store_status rc;

    if (before < 0 && errno == ENOENT)
        return fail("there is no key store in %s (create one with '" PROG " init')", c->dir);
    if (ka_store_open(c->dir, c->a.opt[OPT_SECRET], 0, &st, err, sizeof(err)) != KA_OK)
        return fail("%s", err);
    rc = ka_store_compact(st, err, sizeof(err));
    ka_store_close(st);
    if (rc != KA_OK)
        return fail("%s", err);
    after = data_size(c->dir);
    snprintf(line, sizeof(line), "key store %s compacted: data.mdb %lld -> %lld bytes", c->dir,
             before, after);
    return emit(c,
                jobj("store", jstr(c->dir), "bytesBefore", json_object_new_int64(before),
                     "bytesAfter", json_object_new_int64(after), END),
                line);
}
