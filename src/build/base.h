/*
 * `kiln base`: a JupyterHub-ready base image made from Debian packages.
 *
 * mmdebstrap (variant minbase, the host's apt sources unless a mirror is
 * given) bootstraps a root file system with the packages to include; a
 * customize hook adds the notebook user (uid 1000, gid 100, a home under
 * /home) and removes the apt lists. The tree is committed as one layer
 * (layer/pack) into an OCI image layout, with an image config that sets
 * PATH, LANG, HOME, SHELL, NB_USER, NB_UID, NB_GID, WORKDIR the home, CMD
 * jupyterhub-singleuser and USER the uid, and a manifest in docker v2s2 or
 * OCI media types. Pushing is the caller's next step (registry/transfer).
 *
 * Runs mmdebstrap as a program (it needs root, or --mode=unshare), with its
 * output passed to `on_line`. Never prints.
 */
#ifndef KILN_BUILD_BASE_H
#define KILN_BUILD_BASE_H

#include <stdbool.h>
#include <stdint.h>

#include "kiln/error.h"
#include "layer/compress.h"
#include "oci/layout.h"
#include "oci/manifest.h"
#include "util/proc.h"

#define KILN_BASE_SUITE "bookworm"
#define KILN_BASE_USER  "jovyan"
#define KILN_BASE_UID   1000
#define KILN_BASE_GID   100
/* The default package set: Python with pip and venv, JupyterHub's single-user server. */
#define KILN_BASE_INCLUDE                                                                          \
    "python3,python3-pip,python3-venv,ca-certificates,passwd,jupyterhub,python3-notebook,"         \
    "python3-jupyter-server"

struct kiln_base_options {
    const char *suite;                /* NULL: KILN_BASE_SUITE */
    const char *include;              /* comma-separated packages; NULL: KILN_BASE_INCLUDE */
    const char *mirror;               /* an apt mirror URL, or NULL for the host's sources */
    const char *user;                 /* NULL: KILN_BASE_USER */
    const char *work_dir;             /* scratch space for the root file system (must exist) */
    const char *mmdebstrap;           /* the program; NULL: "mmdebstrap" */
    const char *arch;                 /* image architecture; NULL: "amd64" */
    enum kiln_manifest_format format; /* KILN_FORMAT_DOCKER (0 is OCI: set it) */
    struct kiln_compress_options compress;
    int64_t source_date_epoch; /* clamp mtimes and set "created"; < 0: now, no clamp */
    void (*on_line)(void *userdata, enum kiln_proc_stream stream, const char *line, size_t len);
    void *userdata;
    int (*cancelled)(void *userdata);
};

struct kiln_base_result {
    char manifest_digest[KILN_DIGEST_BUFSZ];
    char layer_digest[KILN_DIGEST_BUFSZ];
    char diff_id[KILN_DIGEST_BUFSZ];
    uint64_t layer_size;
    uint64_t rootfs_bytes;
};

/*
 * Bootstrap, commit and write the image into `layout` under `name` (an
 * index.json ref name). *ret (may be NULL) is written on success. The
 * scratch root file system is removed in every case.
 */
int kiln_base_build(const struct kiln_base_options *o, struct kiln_layout *layout, const char *name,
                    struct kiln_base_result *ret, struct kiln_error **err);

/* The mmdebstrap argv for these options (for logs and tests); release with kiln_strv_release. */
void kiln_base_mmdebstrap_argv(const struct kiln_base_options *o, const char *target,
                               struct kiln_strv *ret);

#endif
