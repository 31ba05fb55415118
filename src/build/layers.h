/*
 * Image layers into the unpacked-layer store (store/layerstore.h): each
 * layer is extracted once (overlay mode: whiteouts kept as overlayfs
 * whiteouts) and held as an overlay lower dir.
 *
 * The bytes come from the blob store when it has the blob, else from the
 * registry, streamed: the download runs in its own thread into a socket
 * pair while the unpacker reads the other end (and decompresses in a third
 * thread), so download, decompression and extraction overlap and memory
 * stays bounded. The registry client checks the compressed digest and
 * size, the unpacker gives the diff_id of what it extracted, which must
 * equal the one the image config names; on any failure the layer store
 * removes the partial tree.
 */
#ifndef KILN_BUILD_LAYERS_H
#define KILN_BUILD_LAYERS_H

#include <stdint.h>

#include "kiln/error.h"
#include "oci/manifest.h"
#include "registry/client.h"
#include "store/blobstore.h"
#include "store/layerstore.h"

struct kiln_layer_source {
    struct kiln_registry *registry; /* or NULL: the blob store only */
    const char *repo;               /* the repository on `registry` */
    struct kiln_blobstore *blobs;   /* or NULL */
    /* Download progress (from the download thread), or NULL. */
    void (*progress)(void *userdata, const char *digest, uint64_t bytes, uint64_t total);
    void *progress_data;
};

/*
 * Make sure the layer `d` (a manifest's layer descriptor) with `diff_id` is
 * unpacked, and hold it (*ret_ref, released with kiln_layerstore_release()).
 * Returns 1 when it was extracted now, 0 when it was there.
 * -KILN_ENOTFOUND when it is absent and no source has the blob;
 * -KILN_EINVAL when the extracted diff_id differs.
 */
int kiln_layers_ensure(struct kiln_layerstore *ls, const struct kiln_layer_source *src,
                       const struct kiln_descriptor *d, const char *diff_id,
                       struct kiln_layer_ref **ret_ref, struct kiln_error **err);

#endif
