/*
 * Flatten an image into one root file system, for inspection
 * (`kiln unpack REF DIR`).
 *
 * The image is read from an OCI image layout (oci/layout.h): the entry
 * `ref_name` of index.json (NULL: the only entry) names a manifest, or an
 * index from which the manifest of the platform in the options is picked
 * (kiln_index_select()). The manifest and its config are read and
 * verified against their digests; then each layer, base first, is opened
 * from the layout and extracted with kiln_unpack() in KILN_UNPACK_APPLY
 * mode into the directory: whiteouts delete what lower layers made, opaque
 * whiteouts empty a directory of the lower layers' entries (see
 * layer/unpack.h for the rules and the safety guarantees).
 *
 * Checks: the manifest must list as many layers as the config has
 * rootfs.diff_ids; every layer's media type must be a layer type kiln
 * knows (tar, tar+gzip, tar+zstd, OCI or docker); the uncompressed stream
 * of layer i must hash to rootfs.diff_ids[i], and the compressed one to
 * the layer descriptor's digest (and size), else -KILN_EINVAL naming the
 * layer: "layer 2 of 3 (sha256:..): diff_id mismatch: config says ...,
 * content is ...". A mismatch is only known once the layer is extracted:
 * the directory then holds it.
 *
 * The directory: absent (created, mode 0755; its parent must exist) or an
 * empty directory. A non-empty directory is -KILN_EEXIST unless `force`,
 * which applies the layers over what it holds. Any other file there is
 * -KILN_EEXIST too.
 *
 * Ownership as in kiln_unpack(): kept when running as root unless
 * no_chown; device nodes and privileged xattrs are skipped (and counted in
 * the result) otherwise.
 *
 * On failure the directory holds a partial tree; the caller removes it.
 * Nothing here prints or reads the environment.
 */
#ifndef KILN_LAYER_FLATTEN_H
#define KILN_LAYER_FLATTEN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kiln/error.h"
#include "oci/digest.h"
#include "oci/layout.h"

/* What a progress call reports. */
struct kiln_flatten_event {
    size_t layer;            /* 0-based index of the layer */
    size_t n_layers;         /* layers of the image */
    const char *digest;      /* the layer's (compressed) digest */
    uint64_t size;           /* its compressed size */
    uint64_t bytes;          /* compressed bytes read so far (= size when done) */
    bool done;               /* the layer is extracted and checked */
    uint64_t total_size;     /* compressed sizes of all layers */
    uint64_t total_bytes;    /* compressed bytes read so far, all layers */
    uint64_t unpacked_bytes; /* done: file content bytes this layer wrote */
};

/*
 * Called when a layer starts (bytes 0), about every 4 MiB read, and when it
 * is done. It may be called from the decompression thread (never from two
 * threads at once). A nonzero return cancels: -KILN_ECANCELLED.
 */
typedef int (*kiln_flatten_progress_fn)(void *userdata, const struct kiln_flatten_event *ev);

struct kiln_flatten_options {
    bool force;          /* allow a non-empty directory */
    bool no_chown;       /* never chown (automatic when not root) */
    const char *os;      /* platform picked from an index; NULL: "linux" */
    const char *arch;    /* NULL: "amd64" */
    const char *variant; /* NULL: any */
    uint64_t max_bytes;  /* per-layer caps of kiln_unpack(); 0: its defaults */
    uint64_t max_entries;
    kiln_flatten_progress_fn progress; /* may be NULL */
    void *userdata;
};

struct kiln_flatten_result {
    char manifest_digest[KILN_DIGEST_BUFSZ];
    size_t n_layers;
    uint64_t compressed_bytes; /* sum of the layers' sizes */
    uint64_t tar_bytes;        /* sum of their uncompressed sizes */
    uint64_t file_bytes;       /* file content bytes written */
    uint64_t entries;          /* tar entries processed */
    uint64_t whiteouts;        /* whiteout and opaque entries applied */
    uint64_t skipped;          /* entries or xattrs not created (see kiln_unpack()) */
};

/*
 * Flatten the image `ref_name` of `layout` into `dir`. opts may be NULL
 * (defaults); *ret (may be NULL) is written on success.
 * Errors: the layout's (-KILN_ENOTFOUND for a missing name or blob), the
 * parsers' and kiln_unpack()'s; -KILN_EEXIST for a non-empty directory,
 * -KILN_EINVAL for a mismatch, -KILN_EUNSUPPORTED for an unknown layer type,
 * -KILN_ECANCELLED from the progress callback, -KILN_EIO.
 */
int kiln_flatten(struct kiln_layout *layout, const char *ref_name, const char *dir,
                 const struct kiln_flatten_options *opts, struct kiln_flatten_result *ret,
                 struct kiln_error **err);

#endif
