/*
 * Shared pieces of the kiln command-line program: the command table entry,
 * input reading and error reporting. Only the program (src/cli/) prints.
 */
#ifndef KILN_CLI_H
#define KILN_CLI_H

#include <stdbool.h>
#include <stddef.h>

#include "kiln/error.h"
#include "util/strv.h"

/* Exit codes, as documented in `kiln --help`. */
#define KILN_EXIT_OK      0
#define KILN_EXIT_INVALID 1
#define KILN_EXIT_USAGE   2

struct kiln_cmd {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
    const char *help; /* full help text, printed by `kiln help CMD` and `CMD --help` */
};

extern const struct kiln_cmd kiln_cmd_spec;
extern const struct kiln_cmd kiln_cmd_dockerfile;
extern const struct kiln_cmd kiln_cmd_inspect;
extern const struct kiln_cmd kiln_cmd_copy;
extern const struct kiln_cmd kiln_cmd_pull;
extern const struct kiln_cmd kiln_cmd_push;
extern const struct kiln_cmd kiln_cmd_base;
extern const struct kiln_cmd kiln_cmd_unpack;
extern const struct kiln_cmd kiln_cmd_build;
extern const struct kiln_cmd kiln_cmd_verify;
extern const struct kiln_cmd kiln_cmd_gc;
extern const struct kiln_cmd kiln_cmd_serve;
extern const struct kiln_cmd kiln_cmd_worker;
extern const struct kiln_cmd kiln_cmd_apply;
extern const struct kiln_cmd kiln_cmd_get;
extern const struct kiln_cmd kiln_cmd_describe;
extern const struct kiln_cmd kiln_cmd_logs;
extern const struct kiln_cmd kiln_cmd_cancel;
extern const struct kiln_cmd kiln_cmd_rebuild;
extern const struct kiln_cmd kiln_cmd_delete;

/* Print "kiln: <msg>" to stderr and return the exit code of the error's category. */
int cli_fail(const struct kiln_error *err);
/* Print "kiln <cmd>: <msg>" + a hint to run --help, and return KILN_EXIT_USAGE. */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * Read all of FILE ("-" is standard input), at most `max` bytes.
 * *ret is NUL-terminated, the caller frees it.
 */
int cli_read_file(const char *path, size_t max, char **ret, size_t *ret_len,
                  struct kiln_error **err);

/*
 * Parse a size: digits with an optional k, m, g or t suffix (binary:
 * 1k = 1024), case-insensitive, optionally followed by "b" or "ib".
 * False for anything else or a value above 2^62.
 */
bool cli_parse_size(const char *s, uint64_t *ret);

/* kiln's state directory when neither --data-dir nor KILN_DATA_DIR says. */
#define KILN_DEFAULT_DATA_DIR "/var/lib/kiln"

/* The value of environment variable `a`, else of `b` (may be NULL); NULL when unset or empty. */
const char *cli_env2(const char *a, const char *b);

/*
 * The hosts pip trusts: KILN_PIP_TRUSTED_HOST (space or comma separated), or,
 * when it is unset, the host[:port] of an http:// index. Appended to ret.
 */
void cli_pip_trusted_hosts(const char *index_url, struct kiln_strv *ret);

/* Print a command's help text to stdout. */
void cli_print_help(const struct kiln_cmd *cmd);

/* True when argv holds -h or --help before any "--". */
bool cli_wants_help(int argc, char **argv);

#endif
