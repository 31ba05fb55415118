/*
 * The build plan: the steps a spec's build runs on top of its base image,
 * each with its exact command, environment and cache key.
 *
 * Steps, in order, one layer each, only for kinds with packages:
 *   apt    /bin/sh -c APT_SCRIPT kiln-apt PKG...    (apt-get update, install
 *          --no-install-recommends, clean, apt lists removed)
 *   conda  /bin/sh -c CONDA_SCRIPT kiln-conda SPEC... (conda install --yes,
 *          conda clean --all -f -y)
 *   pip    /bin/sh -c PIP_SCRIPT kiln-pip REQ...    (pip install
 *          --no-cache-dir, or python3 -m pip when there is no pip program)
 * The scripts are fixed text: packages arrive as the shell's positional
 * parameters ("$@"), never pasted into a command string. All steps run as
 * root; the image keeps the base image's user (config.User is not changed).
 *
 * Step environment (on top of the image config's Env): the pip step gets
 * PIP_INDEX_URL / PIP_TRUSTED_HOST from the options (kiln's configuration,
 * never the spec), PIP_NO_CACHE_DIR, PIP_DISABLE_PIP_VERSION_CHECK and
 * PIP_NO_INPUT and PIP_ROOT_USER_ACTION=ignore (steps run as root on
 * purpose). pip runs with --no-warn-conflicts: its check of every
 * installed distribution after the install costs about half a second on
 * images with many packages, and only ever printed a warning.
 * Whether the image's Python is externally managed (PEP 668, as on Debian)
 * is found out by the engine on the step's tree just before it runs
 * (build/engine.c), which then adds PIP_BREAK_SYSTEM_PACKAGES=1; it does not
 * enter the key: it follows from the parent's tree, which the parent key
 * names.
 *
 * Cache key of a step (64 hex): sha256 of "kiln-step-v1", the parent's key
 * (the base image's manifest digest for the first step), the step's argv
 * and its environment, each NUL-terminated, lists ended by an empty entry.
 * So a changed package, option or pip index changes that step's key and
 * every later one's; earlier steps keep theirs.
 */
#ifndef KILN_BUILD_PLAN_H
#define KILN_BUILD_PLAN_H

#include <stddef.h>

#include "kiln/error.h"
#include "spec/imagespec.h"
#include "util/strv.h"

#define KILN_STEP_KEY_LEN 64

struct kiln_step {
    enum kiln_pkg_kind kind;
    struct kiln_strv argv;      /* the process args */
    struct kiln_strv env;       /* NAME=value added to the image's Env for this step */
    char *created_by;           /* the history text: a readable, shell-quoted command */
    const char *const *exclude; /* paths left out of the layer (layer/pack patterns) */
    char key[KILN_STEP_KEY_LEN + 1];
};

struct kiln_plan {
    struct kiln_step *steps;
    size_t n_steps;
};

#define KILN_PLAN_INIT                                                                             \
    {                                                                                              \
        NULL, 0                                                                                    \
    }

struct kiln_plan_options {
    const char *pip_index_url;            /* or NULL: pip's default */
    const char *const *pip_trusted_hosts; /* NULL-terminated, or NULL */
};

/*
 * Plan the build of a validated spec on the base image whose (platform)
 * manifest digest is `base_digest`. o may be NULL. Fails with -KILN_EINVAL
 * when an option value holds a newline or NUL-unsafe text.
 */
int kiln_plan_make(const struct kiln_spec *s, const char *base_digest,
                   const struct kiln_plan_options *o, struct kiln_plan *ret,
                   struct kiln_error **err);

void kiln_plan_release(struct kiln_plan *p);

/* "apt", "conda", "pip". */
const char *kiln_step_name(const struct kiln_step *st);

#endif
