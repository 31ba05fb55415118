/*
 * The JupyterHub readiness test of an image (`kiln verify`, `kiln build
 * --verify`), run on the image's layers stacked in an overlay with a
 * throw-away upper dir:
 *   1. user: config.User resolved in the image's /etc/passwd (and
 *      /etc/group for a named group). Root (empty, "root", "0") fails; a
 *      uid other than 1000 passes with a warning (JupyterHub's images use
 *      1000);
 *   2. home: the user's home (passwd, else HOME of config.Env) exists and
 *      the user can create and remove a file in it — checked by running
 *      /bin/sh as that user in the image;
 *   3. `jupyterhub-singleuser --version` runs as that user, with the
 *      config's Env and WorkingDir, and exits 0 (its output is kept).
 * Checks stop at the first failure; the report says which and why.
 */
#ifndef KILN_BUILD_VERIFY_H
#define KILN_BUILD_VERIFY_H

#include <stdbool.h>
#include <stdint.h>

#include "kiln/error.h"
#include "oci/config.h"
#include "util/proc.h"

struct kiln_verify_options {
    const char *runtime;       /* a path (build/runtime.h kiln_runtime_detect) */
    const char *state_dir;     /* the runtime's --root */
    const char *work_dir;      /* an existing empty scratch dir (upper, work, merged, bundle) */
    const char *const *lowers; /* the image's unpacked layers, TOP first, NULL-terminated */
    const struct kiln_image_config *config;
    long timeout_ms; /* per check; 0: 60 s */
    int (*cancelled)(void *userdata);
    void (*on_line)(void *userdata, enum kiln_proc_stream stream, const char *line, size_t len);
    void *userdata;
};

enum kiln_verify_check { KILN_VERIFY_NONE, KILN_VERIFY_USER, KILN_VERIFY_HOME, KILN_VERIFY_RUN };

struct kiln_verify_report {
    bool ready;                    /* every check passed */
    enum kiln_verify_check failed; /* the check that failed, or NONE */
    char reason[512];              /* why it failed ("" when ready) */
    char warning[256];             /* e.g. "uid 1001 is not 1000" ("" when none) */
    char user[64];                 /* config.User as given */
    uint32_t uid, gid;
    char home[256];
    char version[128]; /* first line of jupyterhub-singleuser --version */
};

/*
 * Run the checks. Returns 0 with *ret filled (ready or not), or a negative
 * error when the checks could not run at all (mount, runtime, cancel).
 */
int kiln_verify_run(const struct kiln_verify_options *o, struct kiln_verify_report *ret,
                    struct kiln_error **err);

const char *kiln_verify_check_name(enum kiln_verify_check c);

#endif
