/* krenalis-keys: messages, results and listings (cli.h). */
#include <errno.h>
#include <stdarg.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>

#include "cli.h"

int fail(const char *fmt, ...)
{
    va_list ap;

    fputs(PROG ": ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return EXIT_FAIL;
}

int flush_stdout(void)
{
    if (fflush(stdout) != 0 || ferror(stdout))
        return fail("cannot write the output: %s", strerror(errno));
    return EXIT_OK;
}

json_object *jstr(const char *s)
{
    return s ? json_object_new_string(s) : NULL;
}

json_object *jopt(const char *s)
{
    return s && *s ? json_object_new_string(s) : NULL;
}

/* An object from key, value pairs ended by END; the object takes the values. */
json_object *jobj(const char *key, ...)
{
    json_object *o = json_object_new_object();
    va_list ap;

    va_start(ap, key);
    for (; key != NULL; key = va_arg(ap, const char *))
        json_object_object_add(o, key, va_arg(ap, json_object *));
    va_end(ap);
    return o;
}

/* Prints a result: o with --json, else the human line (nothing when NULL). Frees o. */
int emit(const cli *c, json_object *o, const char *human)
{
    if (c->json)
        puts(json_object_to_json_string_ext(o, JSON_FLAGS));
    else if (human != NULL)
        puts(human);
    json_object_put(o);
    return flush_stdout();
}

void list_open(lister *l, const cli *c, const char *member)
{
    l->c = c;
    l->n = 0;
    if (c->json)
        printf("{\"%s\":[", member);
}

void list_add(lister *l, json_object *item)
{
    if (l->n++ > 0)
        putchar(',');
    fputs(json_object_to_json_string_ext(item, JSON_FLAGS), stdout);
    json_object_put(item);
}

void list_close(lister *l)
{
    if (l->c->json)
        puts("]}");
}

int emit_new_key(const cli *c, const char *id, const char *member, const char *secret)
{
    char line[KA_ID_LEN + 1 + KA_API_TOKEN_LEN + 1];
    int rc;

    snprintf(line, sizeof(line), "%s %s", id, secret);
    rc = emit(c, jobj("id", jstr(id), member, jstr(secret), END), line);
    OPENSSL_cleanse(line, sizeof(line));
    return rc;
}

/* RFC 3339 UTC time, e.g. 2026-11-26T07:00:00Z. */
void rfc3339(uint64_t t, char out[32])
{
    time_t tt = (time_t)t;
    struct tm tm;

    if (gmtime_r(&tt, &tm) == NULL || strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(out, 32, "1970-01-01T00:00:00Z");
}

const char *dash(const char *s)
{
    return s && *s ? s : "-";
}
