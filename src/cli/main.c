/* krenalis-keys: the option and command tables, argument parsing and main (cli.h). */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "mirror.h"
#include "version.h"

/* ---- options ---- */

typedef struct {
    const char *name;
    int has_arg;
} opt_def;

static const opt_def OPTS[N_OPTS] = {
    [OPT_STORE] = {"store", 1},
    [OPT_JSON] = {"json", 0},
    [OPT_SECRET] = {"secret", 1},
    [OPT_HELP] = {"help", 0},
    [OPT_OWNER] = {"owner", 1},
    [OPT_NAME] = {"name", 1},
    [OPT_DISABLED] = {"disabled", 0},
    [OPT_ORG] = {"organization", 1},
    [OPT_WS] = {"workspace", 1},
    [OPT_CONN] = {"connection", 1},
    [OPT_METHOD] = {"method", 1},
    [OPT_PATH] = {"path", 1},
    [OPT_BODY] = {"body", 1},
    [OPT_ENDPOINT] = {"endpoint", 1},
    [OPT_WS_POLICY] = {"workspace-policy", 1},
    [OPT_COUNT] = {"count", 1},
    [OPT_TOKENS] = {"tokens", 1},
};

/* ---- commands ----
 * One entry a command: group, action, function, the options it takes besides the global
 * ones, those it needs, how many positional arguments (min, max), synopsis. A new command is
 * a cmd_ function in a file of its own, declared in cli.h, and one line here. */

static const command COMMANDS[] = {
    {"init", NULL, cmd_init, BIT(OPT_OWNER), 0, 0, 0,
     "init [--secret FILE] [--owner USER[:GROUP]]"},
    {"organization", "add", cmd_org_add, BIT(OPT_NAME) | BIT(OPT_DISABLED), 0, 0, 1,
     "organization add [ID] [--name NAME] [--disabled]"},
    {"organization", "enable", cmd_org_enable, 0, 0, 1, 1, "organization enable ID"},
    {"organization", "disable", cmd_org_disable, 0, 0, 1, 1, "organization disable ID"},
    {"organization", "remove", cmd_org_remove, 0, 0, 1, 1, "organization remove ID"},
    {"organization", "list", cmd_org_list, 0, 0, 0, 0, "organization list"},
    {"workspace", "add", cmd_ws_add, BIT(OPT_ORG) | BIT(OPT_NAME), BIT(OPT_ORG), 0, 1,
     "workspace add [ID] --organization ORG [--name NAME]"},
    {"workspace", "remove", cmd_ws_remove, 0, 0, 1, 1, "workspace remove ID"},
    {"workspace", "list", cmd_ws_list, BIT(OPT_ORG), 0, 0, 0,
     "workspace list [--organization ORG]"},
    {"connection", "add", cmd_conn_add, BIT(OPT_WS) | BIT(OPT_NAME), BIT(OPT_WS), 0, 1,
     "connection add [ID] --workspace WS [--name NAME]"},
    {"connection", "remove", cmd_conn_remove, 0, 0, 1, 1, "connection remove ID"},
    {"connection", "list", cmd_conn_list, BIT(OPT_WS), 0, 0, 0, "connection list [--workspace WS]"},
    {"api-key", "create", cmd_api_create, BIT(OPT_ORG) | BIT(OPT_WS) | BIT(OPT_NAME), 0, 0, 0,
     "api-key create --organization ORG [--workspace WS] [--name NAME]"},
    {"api-key", "list", cmd_api_list, BIT(OPT_ORG), 0, 0, 0, "api-key list [--organization ORG]"},
    {"api-key", "delete", cmd_api_delete, 0, 0, 1, 1, "api-key delete ID"},
    {"api-key", "bulk-create", cmd_api_bulk,
     BIT(OPT_ORG) | BIT(OPT_WS) | BIT(OPT_NAME) | BIT(OPT_COUNT) | BIT(OPT_TOKENS),
     BIT(OPT_COUNT) | BIT(OPT_TOKENS), 0, 0,
     "api-key bulk-create --organization ORG [--workspace WS] [--name NAME] --count N "
     "--tokens FILE"},
    {"write-key", "create", cmd_wk_create, BIT(OPT_CONN), BIT(OPT_CONN), 0, 0,
     "write-key create --connection CONN"},
    {"write-key", "list", cmd_wk_list, BIT(OPT_CONN), BIT(OPT_CONN), 0, 0,
     "write-key list --connection CONN"},
    {"write-key", "delete", cmd_wk_delete, BIT(OPT_CONN), BIT(OPT_CONN), 1, 1,
     "write-key delete --connection CONN KEY_ID"},
    {"write-key", "bulk-create", cmd_wk_bulk,
     BIT(OPT_WS) | BIT(OPT_NAME) | BIT(OPT_COUNT) | BIT(OPT_TOKENS),
     BIT(OPT_WS) | BIT(OPT_COUNT) | BIT(OPT_TOKENS), 0, 0,
     "write-key bulk-create --workspace WS [--name NAME] --count N --tokens FILE"},
    {"organizations-key", "generate", cmd_orgs_key, 0, 0, 0, 0, "organizations-key generate"},
    {"compact", NULL, cmd_compact, 0, 0, 0, 0, "compact"},
    {"check", NULL, cmd_check,
     BIT(OPT_METHOD) | BIT(OPT_PATH) | BIT(OPT_WS) | BIT(OPT_BODY) | BIT(OPT_ENDPOINT) |
         BIT(OPT_WS_POLICY),
     0, 1, 1,
     "check TOKEN|- [--method M] [--path P] [--workspace WS] [--body FILE] [--endpoint E] "
     "[--workspace-policy P]"},
};

#define N_COMMANDS (sizeof(COMMANDS) / sizeof(COMMANDS[0]))

static void print_help(FILE *f)
{
    fputs("usage: " PROG " [--store DIR] [--secret FILE] [--json] COMMAND [ARGS]\n\n"
          "  --store DIR    the key store (default $" STORE_ENV ", else " DEFAULT_STORE ")\n"
          "  --secret FILE  the store secret (default DIR/secret)\n"
          "  --json         print results as one JSON object\n"
          "  --version      print the version and exit\n\ncommands:\n",
          f);
    for (size_t i = 0; i < N_COMMANDS; i++)
        fprintf(f, "  %s\n", COMMANDS[i].synopsis);
    fputs("  mirror --postgres CONNINFO [--schema NAME] [--pepper-file FILE | --kms key:BASE64] "
          "[--poll-interval MS] [--once] [--resync]\n"
          "  upgrade\n",
          f);
    fputs("\nSee docs/krenalis-keys.md.\n", f);
}

/* Writes a message into err; returns -1. */
static int say(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int say(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

/* Prints a usage error and the synopsis of cmd (all of them when NULL); returns 2. */
static int usage(const command *cmd, const char *msg)
{
    fprintf(stderr, PROG ": %s\n", msg);
    if (cmd != NULL)
        fprintf(stderr, "usage: " PROG " [--store DIR] [--json] %s\n", cmd->synopsis);
    else
        fputs("usage: " PROG " [--store DIR] [--secret FILE] [--json] COMMAND [ARGS]\n"
              "run '" PROG " --help' for the list of commands\n",
              stderr);
    return EXIT_USAGE;
}

/* One option at argv[*i] (--name, --name=value or --name value). */
static int parse_option(int argc, char **argv, int *i, cli_args *a, char *err, size_t errlen)
{
    const char *s = strcmp(argv[*i], "-h") == 0 ? "--help" : argv[*i];
    const char *name = s + 2, *eq = strchr(name, '=');
    size_t len = eq ? (size_t)(eq - name) : strlen(name);
    int o;

    for (o = 0; o < N_OPTS; o++)
        if (strncmp(s, "--", 2) == 0 && strlen(OPTS[o].name) == len &&
            strncmp(OPTS[o].name, name, len) == 0)
            break;
    if (o == N_OPTS)
        return say(err, errlen, "unknown option %s", s);
    if (a->opt[o] != NULL)
        return say(err, errlen, "option --%s given twice", OPTS[o].name);
    if (!OPTS[o].has_arg) {
        if (eq)
            return say(err, errlen, "option --%s takes no value", OPTS[o].name);
        a->opt[o] = "";
    } else if (eq)
        a->opt[o] = eq + 1;
    else if (*i + 1 < argc)
        a->opt[o] = argv[++*i];
    else
        return say(err, errlen, "option --%s needs a value", OPTS[o].name);
    return 0;
}

/* Options may come anywhere; the words are the command and its positional arguments. */
static int parse_args(int argc, char **argv, cli_args *a, char *err, size_t errlen)
{
    int words_only = 0;

    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        if (!words_only && strcmp(s, "--") == 0)
            words_only = 1;
        else if (!words_only && s[0] == '-' && s[1] != '\0') {
            if (parse_option(argc, argv, &i, a, err, errlen) != 0)
                return -1;
        } else if (a->nwords == MAX_WORDS)
            return say(err, errlen, "too many arguments");
        else
            a->word[a->nwords++] = s;
    }
    return 0;
}

static const command *find_command(const cli_args *a, int *used, char *err, size_t errlen)
{
    const char *group = a->word[0], *action = a->nwords > 1 ? a->word[1] : NULL;
    int known = 0;

    for (size_t i = 0; i < N_COMMANDS; i++) {
        if (strcmp(COMMANDS[i].group, group) != 0)
            continue;
        known = 1;
        if (COMMANDS[i].action == NULL) {
            *used = 1;
            return &COMMANDS[i];
        }
        if (action && strcmp(COMMANDS[i].action, action) == 0) {
            *used = 2;
            return &COMMANDS[i];
        }
    }
    if (!known)
        snprintf(err, errlen, "unknown command '%s'", group);
    else if (action == NULL)
        snprintf(err, errlen, "'%s' needs a subcommand", group);
    else
        snprintf(err, errlen, "unknown command '%s %s'", group, action);
    return NULL;
}

/* Options the command does not take, options it needs, how many positional arguments. */
static int check_usage(const cli *c, char *err, size_t errlen)
{
    const command *cmd = c->cmd;
    char name[64];

    snprintf(name, sizeof(name), "%s%s%s", cmd->group, cmd->action ? " " : "",
             cmd->action ? cmd->action : "");
    for (int o = 0; o < N_OPTS; o++) {
        if (c->a.opt[o] && !((GLOBAL_OPTS | cmd->opts) & BIT(o)))
            return say(err, errlen, "option --%s does not apply to %s", OPTS[o].name, name);
        if (!c->a.opt[o] && (cmd->required & BIT(o)))
            return say(err, errlen, "%s needs --%s", name, OPTS[o].name);
    }
    if (c->npos < cmd->min_pos)
        return say(err, errlen, "%s: missing argument", name);
    if (c->npos > cmd->max_pos)
        return say(err, errlen, "unexpected argument '%s'", c->pos[cmd->max_pos]);
    return 0;
}

static const char *store_dir(const cli_args *a)
{
    const char *env = getenv(STORE_ENV);

    if (a->opt[OPT_STORE])
        return a->opt[OPT_STORE];
    return env && *env ? env : DEFAULT_STORE;
}

int main(int argc, char **argv)
{
    char err[ERR_MAX];
    cli c;
    int used = 0;

    if (argc == 2 && strcmp(argv[1], "--version") == 0) {
        puts(PROG " " KA_VERSION);
        return EXIT_OK;
    }
    /* mirror and upgrade parse their own options (src/mirror.c). */
    if ((used = ka_mirror_cli(argc, argv)) >= 0)
        return used;
    used = 0;
    memset(&c, 0, sizeof(c));
    if (parse_args(argc, argv, &c.a, err, sizeof(err)) != 0)
        return usage(NULL, err);
    if (c.a.opt[OPT_HELP] || (c.a.nwords > 0 && strcmp(c.a.word[0], "help") == 0)) {
        print_help(stdout);
        return EXIT_OK;
    }
    if (c.a.nwords == 0)
        return usage(NULL, "no command given");
    if ((c.cmd = find_command(&c.a, &used, err, sizeof(err))) == NULL)
        return usage(NULL, err);
    c.pos = c.a.word + used;
    c.npos = c.a.nwords - used;
    if (check_usage(&c, err, sizeof(err)) != 0)
        return usage(c.cmd, err);
    if (c.a.opt[OPT_STORE] && c.a.opt[OPT_STORE][0] == '\0')
        return usage(c.cmd, "--store needs a directory");
    c.dir = store_dir(&c.a);
    c.json = c.a.opt[OPT_JSON] != NULL;
    return c.cmd->run(&c);
}
