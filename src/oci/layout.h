/*
 * OCI image layout directories (image-spec image-layout.md):
 *
 *   DIR/oci-layout          {"imageLayoutVersion":"1.0.0"}
 *   DIR/index.json          an image index; entries named by the annotation
 *                           "org.opencontainers.image.ref.name"
 *   DIR/blobs/<alg>/<hex>   content, named by its digest
 *
 * as skopeo ("oci:DIR:tag") and umoci read and write them.
 *
 * Safety: every file is reached with *at() calls from the layout's
 * directory fd, one component at a time with O_NOFOLLOW, and every fd is
 * O_CLOEXEC. Blobs are written to a temporary file in blobs/ (".tmp-*"),
 * verified, fsynced and renamed to their digest name, then the directory is
 * fsynced: a partial or unverified file never appears under a digest name.
 * index.json and oci-layout are replaced the same way (temporary file,
 * fsync, rename, fsync); updates of index.json are serialised between
 * processes with flock() on the layout directory.
 *
 * Errors: -KILN_ENOTFOUND (no layout, no blob, no such name), -KILN_EEXIST,
 * -KILN_EINVAL (bad digest, bad name, corrupt content, digest or size
 * mismatch), -KILN_EUNSUPPORTED (layout version, sha512 verification),
 * -KILN_ETOOBIG, -KILN_EIO (with errno).
 */
#ifndef KILN_OCI_LAYOUT_H
#define KILN_OCI_LAYOUT_H

#include <stddef.h>
#include <stdint.h>

#include "kiln/error.h"
#include "oci/digest.h"
#include "oci/manifest.h"

#define KILN_LAYOUT_VERSION "1.0.0"

/*
 * An open layout; owns its directory fds. Its functions may be called from
 * several threads at once (index.json updates take a file lock).
 */
struct kiln_layout;

/*
 * Create a new layout at `path`: the directory is made (0755) when missing,
 * its parent must exist. blobs/sha256/, an empty index.json and, last,
 * oci-layout are written. -KILN_EEXIST when `path` already holds an
 * oci-layout file. *ret is set only on success; kiln_layout_free() it.
 */
int kiln_layout_create(const char *path, struct kiln_layout **ret, struct kiln_error **err);

/*
 * Open an existing layout: oci-layout must say version 1.0.x, index.json
 * must parse as an index and blobs/ must be a directory. -KILN_ENOTFOUND
 * when `path` or its oci-layout is missing.
 */
int kiln_layout_open(const char *path, struct kiln_layout **ret, struct kiln_error **err);

/* Close the fds and free; NULL is fine. */
void kiln_layout_free(struct kiln_layout *l);

/* The path given at open/create and the directory fd (owned by l). */
const char *kiln_layout_path(const struct kiln_layout *l);
int kiln_layout_dirfd(const struct kiln_layout *l);

/* ---- blobs ---- */

/*
 * 1 when the blob exists (as a regular file; *ret_size set when not NULL),
 * 0 when not, negative on an invalid digest or an I/O error.
 */
int kiln_layout_blob_exists(struct kiln_layout *l, const char *digest, int64_t *ret_size,
                            struct kiln_error **err);

/*
 * Open a blob for reading: returns an fd (O_RDONLY | O_CLOEXEC) the caller
 * closes, and its size in *ret_size when not NULL. The content is not
 * verified. -KILN_ENOTFOUND when absent.
 */
int kiln_layout_blob_open(struct kiln_layout *l, const char *digest, int64_t *ret_size,
                          struct kiln_error **err);

/*
 * Read a whole blob of at most `max` bytes (-KILN_ETOOBIG beyond) and verify
 * it against its digest. *ret_data is a malloc'd buffer with a NUL after the
 * content (the caller frees it), *ret_len its length.
 */
int kiln_layout_blob_read(struct kiln_layout *l, const char *digest, size_t max, char **ret_data,
                          size_t *ret_len, struct kiln_error **err);

/* Hash a stored blob and compare: "digest mismatch: expected ..., got ...". */
int kiln_layout_blob_verify(struct kiln_layout *l, const char *digest, struct kiln_error **err);

/*
 * Store a buffer. With `expected_digest` (may be NULL) the content must
 * match it; a blob that is already there is left alone. The digest
 * ("sha256:<hex>") goes into ret_digest when not NULL.
 */
int kiln_layout_blob_write(struct kiln_layout *l, const void *data, size_t len,
                           const char *expected_digest, char ret_digest[KILN_DIGEST_BUFSZ],
                           struct kiln_error **err);

/*
 * Store what `fd` gives up to EOF, checked against `expected_digest` and
 * `expected_size` (NULL / -1: not checked). On a mismatch or error nothing
 * is stored. fd is not closed.
 */
int kiln_layout_blob_write_fd(struct kiln_layout *l, int fd, const char *expected_digest,
                              int64_t expected_size, char ret_digest[KILN_DIGEST_BUFSZ],
                              struct kiln_error **err);

/*
 * A streaming blob writer, for content that arrives in pieces (HTTP):
 *
 *   struct kiln_layout_writer *w;
 *   r = kiln_layout_writer_begin(l, "sha256:..", size, &w, err);
 *   r = kiln_layout_writer_write(w, data, len, err);     as often as needed
 *   r = kiln_layout_writer_commit(w, digest_out, err);   verify, fsync, rename
 *   kiln_layout_writer_free(w);   always; removes the temporary file unless committed
 *
 * _write() fails early when more than the expected size arrives. After a
 * failed _write() the writer is spent: _commit() fails too. The layout
 * must outlive the writer.
 */
struct kiln_layout_writer;

int kiln_layout_writer_begin(struct kiln_layout *l, const char *expected_digest,
                             int64_t expected_size, struct kiln_layout_writer **ret,
                             struct kiln_error **err);
int kiln_layout_writer_write(struct kiln_layout_writer *w, const void *data, size_t len,
                             struct kiln_error **err);
int kiln_layout_writer_commit(struct kiln_layout_writer *w, char ret_digest[KILN_DIGEST_BUFSZ],
                              struct kiln_error **err);
void kiln_layout_writer_free(struct kiln_layout_writer *w);

/* ---- index.json ---- */

/*
 * True when `name` is a valid ref name (annotations.md):
 *   ref := component ("/" component)*,  component := alnum (separator alnum)*
 *   alnum := [A-Za-z0-9]+,  separator := [-._:@+] | "--"
 */
bool kiln_layout_ref_name_ok(const char *name);

/* Read and parse index.json into *ret (kiln_index_release() it). */
int kiln_layout_index_read(struct kiln_layout *l, struct kiln_index *ret, struct kiln_error **err);

/*
 * Add `desc` (a manifest or index descriptor; the blob need not be there)
 * to index.json. With `ref_name`, the entry carries it as
 * "org.opencontainers.image.ref.name" and replaces every entry with that
 * name; without, an unnamed entry with the same digest is replaced. The
 * other entries are kept in order. index.json is rewritten from the parsed
 * index (fields kiln does not model are dropped, as skopeo does) and
 * replaced atomically.
 *
 * Interop: skopeo (containers/image) only resolves entries whose mediaType
 * is the OCI manifest or index type; store OCI-typed manifests in a layout
 * (kiln_manifest_convert()) when skopeo is to read it. umoci reads both.
 */
int kiln_layout_index_add(struct kiln_layout *l, const struct kiln_descriptor *desc,
                          const char *ref_name, struct kiln_error **err);

/*
 * Find the descriptor named `ref_name` in index.json, or with ref_name NULL
 * the only entry. -KILN_ENOTFOUND ("no manifest named 'x' in index.json;
 * names: a, b"), -KILN_EINVAL when ref_name is NULL and there are several
 * entries. *ret is a deep copy (kiln_descriptor_release() it).
 */
int kiln_layout_resolve(struct kiln_layout *l, const char *ref_name, struct kiln_descriptor *ret,
                        struct kiln_error **err);

#endif
