/*
 * `kiln base`: a base image made from Debian packages, in one of two
 * profiles.
 *
 * mmdebstrap (variant minbase, the host's apt sources unless a mirror is
 * given) bootstraps a root file system with the packages to include; a
 * customize hook removes the apt lists. The tree is committed as one layer
 * (layer/pack) into an OCI image layout, with an image config and a
 * manifest in docker v2s2 or OCI media types. Pushing is the caller's next
 * step (registry/transfer).
 *
 * - The JupyterHub base (self_binary NULL): a hook adds the notebook user
 *   (uid 1000, gid 100, a home under /home); the config sets PATH, LANG,
 *   HOME, SHELL, NB_USER, NB_UID, NB_GID, WORKDIR the home, CMD
 *   jupyterhub-singleuser, USER the uid, EXPOSE 8888.
 * - kiln's own image (self_binary set): the packages kiln needs at run time,
 *   no user; the executable self_binary is copied to KILN_BASE_SELF_BINARY
 *   (root:root, 0755) and an empty KILN_BASE_SELF_DATA_DIR (root:root, 0700)
 *   is made before the commit; the config sets ENTRYPOINT the binary, CMD
 *   `serve --listen KILN_BASE_SELF_LISTEN`, PATH, LANG and KILN_DATA_DIR,
 *   WORKDIR and VOLUME the data dir, USER 0 (kiln serve's builds mount
 *   overlays and run runc), EXPOSE 8080, and the OCI title and version
 *   labels (kiln_version()).
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
/*
 * The default package set of kiln's own image: CA certificates for the
 * registries, runc for the build steps, mmdebstrap for `kiln base`, and the
 * packages of the shared libraries kiln links (libc6 is in minbase).
 */
#define KILN_BASE_SELF_INCLUDE                                                                     \
    "ca-certificates,runc,mmdebstrap,libcurl4,libjansson4,libyaml-0-2,libsqlite3-0,libpq5,"        \
    "libmicrohttpd12,libzstd1,libdeflate0,libisal2,libssl3"
#define KILN_BASE_SELF_BINARY   "/usr/local/bin/kiln"
#define KILN_BASE_SELF_DATA_DIR "/var/lib/kiln" /* kiln serve's default --data-dir */
#define KILN_BASE_SELF_LISTEN   "0.0.0.0:8080"

struct kiln_base_options {
    const char *suite;                /* NULL: KILN_BASE_SUITE */
    const char *include;              /* comma-separated packages; NULL: KILN_BASE_INCLUDE, or
                                         KILN_BASE_SELF_INCLUDE with self_binary */
    const char *mirror;               /* an apt mirror URL, or NULL for the host's sources */
    const char *user;                 /* NULL: KILN_BASE_USER; must be NULL with self_binary */
    const char *self_binary;          /* a kiln executable: make kiln's own image; NULL: the
                                         JupyterHub base */
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
 * scratch root file system is removed in every case. With self_binary, the
 * file is opened (it must be a regular file) before mmdebstrap runs, and
 * installing it needs root (the copy is chowned to 0:0).
 */
int kiln_base_build(const struct kiln_base_options *o, struct kiln_layout *layout, const char *name,
                    struct kiln_base_result *ret, struct kiln_error **err);

/* The mmdebstrap argv for these options (for logs and tests); release with kiln_strv_release. */
void kiln_base_mmdebstrap_argv(const struct kiln_base_options *o, const char *target,
                               struct kiln_strv *ret);

#endif
