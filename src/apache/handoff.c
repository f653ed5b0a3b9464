/* The organizations key (SPEC §6.4): checked at start-up, and handed to the running server on
 * a graceful restart.
 *
 * A restart keeps the parent's environment, but `httpd -k graceful|restart` reads the
 * configuration (and runs check_config) in its own, new environment before it signals the
 * parent. That process leaves the key it sees in a root-only file of the runtime directory;
 * the parent takes it (and removes the file) when it reloads its configuration. */
#include "ka_private.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "../token.h"

static int check_orgs_key(server_rec *s)
{
    const char *name = ka_cfg_orgs_env(s);
    const char *value = getenv(name);
    char msg[256];

    if (value != NULL && ka_org_key_check(name, value, msg, sizeof(msg)) != NULL) {
        ap_log_error(APLOG_MARK, APLOG_STARTUP | APLOG_EMERG, 0, s, KA_LOGNO(00006) "%s", msg);
        return !OK;
    }
    return OK;
}

/* The MPM strips "-k ARG" from the arguments it keeps, so the command line is read from
 * /proc (Linux). */
static int is_restart_signaller(apr_pool_t *p)
{
    char buf[8192];
    ssize_t n;
    int fd = open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC);

    if (fd < 0)
        return 0;
    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    for (const char *a = buf, *prev = ""; a < buf + n; prev = a, a += strlen(a) + 1) {
        const char *k = strcmp(prev, "-k") == 0 ? a : strncmp(a, "-k", 2) == 0 ? a + 2 : NULL;
        if (k && (strcmp(k, "graceful") == 0 || strcmp(k, "restart") == 0))
            return 1;
    }
    return 0;
}

static const char *handoff_path(apr_pool_t *p, server_rec *s)
{
    return ap_runtime_dir_relative(p, apr_pstrcat(p, "krenalis-auth.", ka_cfg_orgs_env(s), NULL));
}

static void handoff_write(apr_pool_t *p, server_rec *s, const char *value)
{
    const char *path = handoff_path(p, s);
    const char *tmp = apr_pstrcat(p, path, ".new", NULL);
    size_t len = strlen(value);
    int fd;

    unlink(tmp);
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0 || write(fd, value, len) != (ssize_t)len || close(fd) != 0 ||
        rename(tmp, path) != 0) {
        ap_log_error(
            APLOG_MARK, APLOG_WARNING, errno, s,
            KA_LOGNO(00007) "cannot hand %s to the running server; it keeps its current key",
            ka_cfg_orgs_env(s));
        if (fd >= 0)
            unlink(tmp);
    }
}

/* The key handed over by a restart command, if any; the file is removed either way. */
static const char *handoff_take(apr_pool_t *p, server_rec *s, int use)
{
    const char *path = handoff_path(p, s);
    char buf[KA_ORG_KEY_LEN + 2], msg[256];
    const char *key = NULL;
    struct stat sb;
    ssize_t n;
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);

    if (fd < 0)
        return NULL;
    unlink(path);
    /* Only a root-owned, private file may carry the key. */
    if (fstat(fd, &sb) != 0 || sb.st_uid != geteuid() || (sb.st_mode & 077) != 0) {
        close(fd);
        return NULL;
    }
    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (!use || n <= 0)
        return NULL;
    buf[n] = '\0';
    if (ka_org_key_check(ka_cfg_orgs_env(s), buf, msg, sizeof(msg)) == NULL)
        key = apr_pstrdup(p, buf);
    OPENSSL_cleanse(buf, sizeof(buf));
    return key;
}

int ka_orgs_key_check_config(apr_pool_t *ptemp, server_rec *s)
{
    const char *value = getenv(ka_cfg_orgs_env(s));

    if (check_orgs_key(s) != OK)
        return !OK;
    /* Only the command's own first reading hands over: a running server started by
     * `-k restart` (none was running) keeps those words in its command line, and its own
     * readings at each restart would replace the key the command left with its old one. */
    if (value != NULL && ap_state_query(AP_SQ_MAIN_STATE) == AP_SQ_MS_CREATE_PRE_CONFIG &&
        is_restart_signaller(ptemp))
        handoff_write(ptemp, s, value);
    return OK;
}

const char *ka_orgs_key_load(apr_pool_t *pconf, apr_pool_t *ptemp, server_rec *s)
{
    const char *value = getenv(ka_cfg_orgs_env(s));
    /* A key handed over by `-k graceful` replaces the start-up one; at a first start a
     * leftover file is only removed. */
    const char *handed = handoff_take(ptemp, s, ap_state_query(AP_SQ_CONFIG_GEN) > 0);

    if (handed) {
        value = handed;
        setenv(ka_cfg_orgs_env(s), handed, 1); /* later restarts without a hand-off keep it */
    }
    return value ? apr_pstrdup(pconf, value) : NULL;
}
