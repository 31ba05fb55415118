/*
 * Image transfers: pull an image from a registry into an OCI image layout,
 * push an image from a layout to a registry, copy an image between
 * registries (or between any two of registry and layout), and inspect an
 * image in a registry. Built on registry/client.h and oci/layout.h.
 *
 * An endpoint is a registry reference ("127.0.0.1:5000/team/img:tag",
 * normalised as in oci/reference.h) with the options of its registry
 * session (credentials, TLS, retries), or an OCI image layout directory with
 * a ref name (the "org.opencontainers.image.ref.name" of an index.json
 * entry).
 *
 * What is copied: the manifest the source names. When that is an image
 * index (or docker manifest list), only the manifest of the chosen platform
 * (default linux/amd64) is copied, and the destination names that manifest;
 * with `all`, every manifest of the index is copied (nested indexes too, up
 * to KILN_TRANSFER_MAX_DEPTH levels) and then the index itself. The
 * destination gets the source's bytes: digests are kept (except with
 * `layout_oci_types`, below).
 *
 * Order of work, and what a failure leaves behind:
 *   1. the manifests are read and parsed; the distinct blobs (configs and
 *      layers) of all of them are collected;
 *   2. the blobs are handled by `jobs` worker threads: first each one is
 *      looked up at the destination (registry: HEAD; layout: the blob
 *      file), all of them at once, and those present are skipped; then the
 *      others move, largest first: mounted (registry to the same registry:
 *      a cross-repository mount from the source repository, falling back
 *      to an upload when the registry declines), uploaded or downloaded.
 *      At most `lanes` blobs of KILN_TRANSFER_LANE_MIN bytes or more move
 *      at once: lanes = ceil(bytes of such blobs / the largest one), at
 *      least 2, at most jobs, so that the largest blob gets the larger
 *      share it needs not to end alone; smaller blobs move beside them.
 *      The first failure stops the others (transfers in flight are
 *      cancelled);
 *   Before step 2, a registry destination whose tag (or digest) already
 *      names the very manifest being copied, with no extra tags asked for,
 *      ends the transfer: one HEAD, nothing written (a registry accepts a
 *      manifest only when it holds its blobs);
 *   3. only when every blob is in place are the manifests written: the
 *      children of an index by digest, then the top manifest under the
 *      destination's tag (or digest), then under every extra tag. A failed
 *      transfer therefore never makes a tag point to an incomplete image;
 *      blobs already uploaded stay (they are unreachable until used).
 *
 * Data paths (memory stays bounded whatever the blob sizes):
 *   registry -> layout: the GET is streamed into a kiln_layout_writer
 *     (digest and size verified by both the client and the writer; blobs
 *     appear under their digest name only when complete and verified);
 *   layout -> registry: kiln_registry_blob_push() from the blob file (one
 *     PUT up to the session's chunk_size, PATCH chunks above it; resumes as
 *     documented there);
 *   registry -> other registry: a downloader thread streams the GET into a
 *     ring buffer of KILN_TRANSFER_STREAM_BUFFER bytes (at most the blob's
 *     size) while the worker uploads from it: PATCH requests of
 *     `stream_chunk` bytes (at least OCI-Chunk-Min-Length) whose bodies
 *     follow the download, then the final PUT ?digest= without a body once
 *     the download has ended. Nothing touches the disk; memory is one ring
 *     per blob in flight, whatever the blob sizes. An interrupted PATCH is
 *     resumed from the offset the registry reports (GET on the upload URL),
 *     a lost session restarted, at most max_resumes (registry options)
 *     times per blob: the bytes from that offset come from the ring when it
 *     still holds them, else from a new download starting there (a Range
 *     request); the download also resumes on its own
 *     (kiln_registry_blob_get_range()).
 *     Digests: the destination registry computes the digest of what it
 *     received and refuses the final PUT when it differs from the one in
 *     ?digest= (the distribution spec requires it: 400 DIGEST_INVALID, and
 *     the blob is not stored), and kiln checks the digest the registry
 *     answers with (Docker-Content-Digest). That check is what guarantees
 *     the copy: by default the streamed bytes are not hashed again here
 *     (on a machine running both registries that hash is ~15% of a copy's
 *     CPU). With `verify_streams` they are, and the final PUT is only sent
 *     after the source's bytes matched their digest. Sizes are always
 *     checked. Pulls into a layout always verify (above).
 *   registry -> other registry, both plain http and no proxy (the usual
 *     case on loopback and for in-cluster registries): unless `no_splice`
 *     or `verify_streams`, the bytes do not pass through this process at
 *     all: kiln_upload_patch_from() sends one PATCH per blob (or PATCHes
 *     of `stream_chunk` bytes when it is set) whose body is spliced from
 *     the source's GET response (see registry/rawhttp.h). When that path
 *     does not apply (-KILN_EUNSUPPORTED: a redirect, an auth challenge,
 *     TLS...) it is off for the rest of the transfer; when it fails midway
 *     the registry is asked where the upload stands and the rest of that
 *     blob takes the ring path above, with its resumes. Either way the
 *     final PUT and the digest checks are the ring path's.
 *   layout -> layout: the blob file is copied through a kiln_layout_writer.
 *
 * Layouts as destination: the directory is created when missing (its parent
 * must exist) or added to; manifests and indexes are stored as blobs and
 * index.json gets one entry per name (replacing an entry of that name),
 * carrying the platform when one was selected from an index. The manifest
 * keeps its media type, so a docker v2 schema 2 image stays docker-typed in
 * the layout: umoci reads such layouts, skopeo (containers/image as of
 * skopeo 1.9) does not ("no descriptor found for reference"). With
 * `layout_oci_types`, docker manifests and lists are converted to the OCI
 * media types before they are stored (kiln_manifest_convert(): config and
 * layer bytes are unchanged, the manifest bytes and digest change; an
 * index's entries are rewritten with the converted digests).
 *
 * Progress: every event goes to `progress.fn`, called with the library's
 * lock held (never from two threads at once, but from worker threads:
 * the callback must not call back into this module). BYTES events come at
 * most every KILN_TRANSFER_BYTES_EVERY_MS per blob. A nonzero return
 * cancels the transfer (-KILN_ECANCELLED "transfer cancelled") as soon as
 * the threads notice (a running request is aborted by its progress hook).
 *
 * Threads: each call creates and joins its own threads; calls may run
 * concurrently. Nothing here prints or reads the environment.
 *
 * Errors: the client's and the layout's (see their headers), prefixed with
 * what was being done ("copy '127.0.0.1:5000/a:1' to '...': blob
 * sha256:..: ..."), plus -KILN_EINVAL for bad references and options,
 * -KILN_ENOTFOUND when a layout has no such name or the index no such
 * platform, -KILN_EUNSUPPORTED for schema 1 or non-image artifacts.
 */
#ifndef KILN_REGISTRY_TRANSFER_H
#define KILN_REGISTRY_TRANSFER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kiln/error.h"
#include "oci/config.h"
#include "oci/digest.h"
#include "oci/manifest.h"
#include "registry/client.h"

#define KILN_TRANSFER_JOBS           4                    /* default blobs in flight */
#define KILN_TRANSFER_MAX_JOBS       64                   /* cap of `jobs` */
#define KILN_TRANSFER_STREAM_CHUNK   ((uint64_t)16 << 20) /* default PATCH size of a stream */
#define KILN_TRANSFER_STREAM_BUFFER  ((size_t)2 << 20)    /* ring of a stream (per blob) */
#define KILN_TRANSFER_LANE_MIN       ((uint64_t)1 << 20)  /* blobs this big need a lane */
#define KILN_TRANSFER_MAX_DEPTH      4                    /* nested indexes followed with `all` */
#define KILN_TRANSFER_BYTES_EVERY_MS 100

enum kiln_transfer_event_kind {
    KILN_TRANSFER_PLAN,     /* once, before any blob: n_blobs and total_size are known */
    KILN_TRANSFER_STARTED,  /* a blob starts to move (after the destination lookup) */
    KILN_TRANSFER_BYTES,    /* bytes of a blob moved so far */
    KILN_TRANSFER_DONE,     /* a blob was uploaded / downloaded */
    KILN_TRANSFER_SKIPPED,  /* a blob was already at the destination */
    KILN_TRANSFER_MOUNTED,  /* a blob was mounted from the source repository */
    KILN_TRANSFER_FAILED,   /* a blob failed (the transfer fails) */
    KILN_TRANSFER_MANIFEST, /* a manifest or index was written; `ref` says under what */
};

struct kiln_transfer_event {
    enum kiln_transfer_event_kind kind;
    size_t blob;            /* blob events: its index, 0 <= blob < n_blobs */
    const char *digest;     /* blob or manifest digest (NULL for PLAN) */
    const char *media_type; /* its media type, or NULL */
    uint64_t size;          /* the blob's (or manifest's) size */
    uint64_t bytes;         /* bytes moved so far (BYTES; = size for DONE) */
    const char *ref;        /* MANIFEST: the tag, digest or layout name written */
    /* totals of the whole transfer */
    size_t n_blobs;
    size_t n_finished;    /* done + skipped + mounted */
    uint64_t total_size;  /* of all blobs */
    uint64_t total_bytes; /* finished blobs' sizes + bytes in flight */
};

struct kiln_transfer_progress {
    /* May be NULL. Nonzero cancels the transfer. */
    int (*fn)(void *userdata, const struct kiln_transfer_event *ev);
    void *userdata;
};

struct kiln_transfer_options {
    /* Platform picked from an index: os/arch/variant; NULL: linux, amd64, none. */
    const char *os;
    const char *arch;
    const char *variant;
    bool all; /* copy every manifest of an index and the index itself */
    int jobs; /* blobs in flight; 0: KILN_TRANSFER_JOBS, at most KILN_TRANSFER_MAX_JOBS */
    const char *const *tags; /* NULL-terminated extra tags (registry) or names (layout), or NULL */
    uint64_t stream_chunk;   /* registry -> registry PATCH size; 0: KILN_TRANSFER_STREAM_CHUNK */
    bool verify_streams;     /* registry -> registry: also check digests here (see above) */
    bool no_splice;          /* registry -> registry: never move bytes in the kernel (above) */
    const char *spool_dir;   /* unused (streams go through memory); kept for callers */
    bool layout_oci_types;   /* layout destination: store docker manifests converted to OCI */
    struct kiln_transfer_progress progress;
};

/* One side of a transfer. */
struct kiln_transfer_endpoint {
    /* Registry: `ref` (required) and `registry` (may be NULL: anonymous,
     * defaults). Only the credentials, HTTP settings, chunk_size,
     * max_resumes, client_id and progress (chained: a nonzero return
     * cancels) of the options are used; a session is opened per call. When
     * both sides are on the same registry host, one session is opened with
     * the destination's options (it needs pull on the source repository
     * for mounts). */
    const char *ref;
    const struct kiln_registry_options *registry;
    /* Layout: `layout` (a directory) and `name` (a ref name; NULL: as a
     * source, the only entry of index.json; as a destination, the tag of
     * the source reference, or no name when it has none). */
    const char *layout;
    const char *name;
};

/* What a transfer did. Fixed-size fields: nothing to free. */
struct kiln_transfer_result {
    char digest[KILN_DIGEST_BUFSZ]; /* of the manifest or index the destination names */
    char media_type[128];           /* its media type (cut at 127 bytes) */
    uint64_t size;                  /* its size */
    size_t n_manifests;             /* manifests and indexes written */
    size_t n_blobs;                 /* distinct blobs of the image */
    size_t n_transferred;           /* uploaded or downloaded */
    size_t n_skipped;               /* already at the destination */
    size_t n_mounted;               /* mounted from the source repository */
    uint64_t total_size;            /* bytes of all blobs */
    uint64_t bytes_transferred;     /* bytes of the blobs moved */
    uint64_t bytes_in_kernel;       /* of those, bytes moved socket to socket in the kernel */
};

/*
 * Copy the image `src` names to `dst`. Exactly one of ref / layout must be
 * set in each endpoint (-KILN_EINVAL). *ret (may be NULL) is written on
 * success only.
 */
int kiln_transfer_copy(const struct kiln_transfer_endpoint *src,
                       const struct kiln_transfer_endpoint *dst,
                       const struct kiln_transfer_options *o, struct kiln_transfer_result *ret,
                       struct kiln_error **err);

/* Shorthands: registry `ref` to layout `dir` under `name`; layout to registry. */
int kiln_transfer_pull(const char *ref, const struct kiln_registry_options *ro, const char *dir,
                       const char *name, const struct kiln_transfer_options *o,
                       struct kiln_transfer_result *ret, struct kiln_error **err);
int kiln_transfer_push(const char *dir, const char *name, const char *ref,
                       const struct kiln_registry_options *ro,
                       const struct kiln_transfer_options *o, struct kiln_transfer_result *ret,
                       struct kiln_error **err);

/* ---- inspect ------------------------------------------------------------------ */

/*
 * An image as a registry serves it. All owned; release with
 * kiln_image_info_release().
 */
struct kiln_image_info {
    char *ref;        /* the normalised reference */
    char *digest;     /* of what the reference names */
    char *media_type; /* its media type */
    char *raw;        /* its bytes (NUL-terminated) */
    size_t raw_len;
    bool is_index;
    struct kiln_index index; /* when is_index */
    /* The image manifest: the one the reference names, or the one picked
     * for the platform from the index. */
    char *manifest_digest;
    char *manifest_media_type;
    char *manifest_raw;
    size_t manifest_len;
    struct kiln_manifest manifest;
    /* The config blob (when asked for): its bytes, and the parsed config
     * when it is an image config (config.root NULL otherwise, e.g. for an
     * artifact). */
    char *config_raw;
    size_t config_len;
    struct kiln_image_config config;
};

#define KILN_IMAGE_INFO_INIT                                                                       \
    {                                                                                              \
        NULL, NULL, NULL, NULL, 0, false, KILN_INDEX_INIT, NULL, NULL, NULL, 0,                    \
            KILN_MANIFEST_INIT, NULL, 0, KILN_IMAGE_CONFIG_INIT                                    \
    }

/* How far kiln_transfer_inspect() goes. */
enum kiln_inspect_depth {
    KILN_INSPECT_TOP,      /* only what the reference names (no platform pick) */
    KILN_INSPECT_MANIFEST, /* and, for an index, the manifest of the platform */
    KILN_INSPECT_CONFIG,   /* and the config blob */
};

/*
 * Fetch what `ref` names and, as `depth` says, for an index the manifest of
 * the platform in `o` (only os/arch/variant are used; o may be NULL), and
 * the config blob (at most KILN_IMAGE_CONFIG_MAX_SIZE bytes, verified). An
 * index without a manifest for the platform is -KILN_ENOTFOUND, as in
 * kiln_index_select(). With KILN_INSPECT_TOP and an index, the manifest_*
 * fields stay empty. *ret is written only on success.
 */
int kiln_transfer_inspect(const char *ref, const struct kiln_registry_options *ro,
                          const struct kiln_transfer_options *o, enum kiln_inspect_depth depth,
                          struct kiln_image_info *ret, struct kiln_error **err);

void kiln_image_info_release(struct kiln_image_info *info);

#endif
