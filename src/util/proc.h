/*
 * Run a program and stream its output, line by line.
 *
 * The child runs in its own process group with stdin from /dev/null and
 * stdout/stderr on pipes; each complete line (without its '\n'; lines longer
 * than KILN_PROC_LINE_MAX are passed on in pieces) goes to the `on_line`
 * callback, in the order the child wrote them per stream. On timeout or when
 * `cancelled` returns nonzero, the whole group gets SIGTERM, then SIGKILL
 * after KILN_PROC_KILL_GRACE_MS. The caller's environment is passed on when
 * `envp` is NULL (the library never reads it itself).
 */
#ifndef KILN_PROC_H
#define KILN_PROC_H

#include <stddef.h>

#include "kiln/error.h"

#define KILN_PROC_LINE_MAX      65536
#define KILN_PROC_KILL_GRACE_MS 5000

enum kiln_proc_stream { KILN_PROC_STDOUT = 1, KILN_PROC_STDERR = 2 };

struct kiln_proc_opts {
    const char *const *argv; /* argv[0] is looked up in PATH when it has no '/' */
    const char *const *envp; /* NULL: the current environment */
    const char *cwd;         /* or NULL */
    void (*on_line)(void *userdata, enum kiln_proc_stream stream, const char *line, size_t len);
    void *userdata;
    long timeout_ms;                  /* 0: none */
    int (*cancelled)(void *userdata); /* polled about 10 times a second; or NULL */
};

/*
 * Run to completion. Returns 0 and the exit status in *ret_status (0-255,
 * or 128 + signal number when killed by a signal); -KILN_ETIMEOUT or
 * -KILN_ECANCELLED after killing the group (the status is still written);
 * -KILN_ENOTFOUND when the program does not exist; -KILN_EIO on other
 * failures to start it.
 */
int kiln_proc_run(const struct kiln_proc_opts *o, int *ret_status, struct kiln_error **err);

#endif
