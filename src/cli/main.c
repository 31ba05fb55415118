/* kiln: the command-line program. Thin: parse arguments, call libkiln, print. */
#include "util/common.h"
#include "cli/cli.h"

#include <fcntl.h>
#include <sys/stat.h>

#include "kiln/version.h"
#include "util/buf.h"

const char *cli_env2(const char *a, const char *b)
{
    const char *v = getenv(a);
    if ((!v || !*v) && b)
        v = getenv(b);
    return v && *v ? v : NULL;
}

void cli_pip_trusted_hosts(const char *index_url, struct kiln_strv *ret)
{
    const char *v = cli_env2("KILN_PIP_TRUSTED_HOST", NULL);
    if (v) {
        while (*v) {
            size_t n = strcspn(v, " ,");
            if (n > 0)
                kiln_strv_push_take(ret, kiln_xstrndup(v, n));
            v += n;
            v += strspn(v, " ,");
        }
        return;
    }
    if (index_url && !strncmp(index_url, "http://", 7)) {
        const char *h = index_url + 7;
        size_t n = strcspn(h, "/?#");
        if (n > 0)
            kiln_strv_push_take(ret, kiln_xstrndup(h, n));
    }
}

bool cli_parse_size(const char *s, uint64_t *ret)
{
    if (!s || *s < '0' || *s > '9')
        return false;
    char *end = NULL;
    errno = 0;
    unsigned long long n = strtoull(s, &end, 10);
    if (errno)
        return false;
    unsigned shift = 0;
    switch (*end | 0x20) {
    case 'k':
        shift = 10;
        break;
    case 'm':
        shift = 20;
        break;
    case 'g':
        shift = 30;
        break;
    case 't':
        shift = 40;
        break;
    default:
        break;
    }
    if (shift) {
        end++;
        if ((*end | 0x20) == 'i')
            end++;
    }
    if ((*end | 0x20) == 'b')
        end++;
    if (*end || n > ((1ULL << 62) >> shift))
        return false;
    *ret = (uint64_t)n << shift;
    return true;
}

static const struct kiln_cmd *const commands[] = {
    &kiln_cmd_spec, &kiln_cmd_dockerfile, &kiln_cmd_inspect, &kiln_cmd_copy,   &kiln_cmd_pull,
    &kiln_cmd_push, &kiln_cmd_base,       &kiln_cmd_unpack,  &kiln_cmd_build,  &kiln_cmd_verify,
    &kiln_cmd_gc,   &kiln_cmd_serve,      &kiln_cmd_apply,   &kiln_cmd_get,    &kiln_cmd_describe,
    &kiln_cmd_logs, &kiln_cmd_cancel,     &kiln_cmd_rebuild, &kiln_cmd_delete, &kiln_cmd_worker,
};

static const char main_help[] =
    "usage: kiln [--version] [--help] COMMAND [ARGS...]\n"
    "\n"
    "kiln builds custom JupyterHub images: a base image plus apt, conda and pip\n"
    "packages, described by an image spec, built into an OCI image.\n"
    "\n"
    "commands:\n"
    "%s"
    "  help CMD     show the help of a command\n"
    "\n"
    "exit codes:\n"
    "  0  success\n"
    "  1  invalid input (a spec, a reference, a request)\n"
    "  2  wrong usage of the command line\n"
    "  3  not found          4  already exists     5  conflict\n"
    "  6  too big            7  i/o error          8  network error\n"
    "  9  authentication     10 cancelled          11 timed out\n"
    "  12 unsupported        13 internal error\n";

static void print_main_help(FILE *f)
{
    struct kiln_buf list = KILN_BUF_INIT;
    for (size_t i = 0; i < KILN_ARRAY_SIZE(commands); i++)
        kiln_buf_addf(&list, "  %-12s %s\n", commands[i]->name, commands[i]->summary);
    fprintf(f, main_help, list.buf);
    kiln_buf_release(&list);
}

static const struct kiln_cmd *find_command(const char *name)
{
    for (size_t i = 0; i < KILN_ARRAY_SIZE(commands); i++)
        if (!strcmp(commands[i]->name, name))
            return commands[i];
    return NULL;
}

int cli_fail(const struct kiln_error *err)
{
    fprintf(stderr, "kiln: %s\n", err && err->msg ? err->msg : "unknown error");
    return kiln_error_exit_code(err ? err->code : KILN_EINTERNAL);
}

int cli_usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "kiln %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n(see 'kiln help %s')\n", cmd);
    va_end(ap);
    return KILN_EXIT_USAGE;
}

void cli_print_help(const struct kiln_cmd *cmd)
{
    fputs(cmd->help, stdout);
}

bool cli_wants_help(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--"))
            return false;
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help"))
            return true;
    }
    return false;
}

int cli_read_file(const char *path, size_t max, char **ret, size_t *ret_len,
                  struct kiln_error **err)
{
    _cleanup_close_ int fd = -1;
    int in = STDIN_FILENO;
    if (strcmp(path, "-") != 0) {
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            return kiln_error_set(err, errno == ENOENT ? KILN_ENOTFOUND : KILN_EIO, errno,
                                  "open '%s'", path);
        in = fd;
    }
    _cleanup_(kiln_buf_release) struct kiln_buf b = KILN_BUF_INIT;
    kiln_buf_init(&b, max);
    for (;;) {
        char chunk[65536];
        ssize_t n = read(in, chunk, sizeof(chunk));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return kiln_error_set(err, KILN_EIO, errno, "read '%s'", path);
        }
        if (n == 0)
            break;
        if (kiln_buf_add(&b, chunk, (size_t)n) < 0)
            break;
    }
    if (b.err)
        return kiln_buf_finish(&b, path, err);
    *ret = kiln_buf_detach(&b, ret_len);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        print_main_help(stderr);
        return KILN_EXIT_USAGE;
    }
    const char *name = argv[1];
    if (!strcmp(name, "--help") || !strcmp(name, "-h")) {
        print_main_help(stdout);
        return KILN_EXIT_OK;
    }
    if (!strcmp(name, "--version") || !strcmp(name, "version")) {
        printf("kiln %s\n", kiln_version());
        return KILN_EXIT_OK;
    }
    if (!strcmp(name, "help")) {
        if (argc < 3) {
            print_main_help(stdout);
            return KILN_EXIT_OK;
        }
        const struct kiln_cmd *c = find_command(argv[2]);
        if (!c) {
            fprintf(stderr, "kiln: unknown command '%s' (see 'kiln --help')\n", argv[2]);
            return KILN_EXIT_USAGE;
        }
        cli_print_help(c);
        return KILN_EXIT_OK;
    }
    const struct kiln_cmd *c = find_command(name);
    if (!c) {
        fprintf(stderr, "kiln: unknown command '%s' (see 'kiln --help')\n", name);
        return KILN_EXIT_USAGE;
    }
    return c->run(argc - 1, argv + 1);
}
