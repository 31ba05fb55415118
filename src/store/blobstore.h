/*
 * The blob store: content-addressed files named by their sha256 digest.
 *
 * Layout below the store's root directory:
 *
 *   blobs/sha256/<64 hex>   committed blobs, mode 0444, never changed in place
 *   tmp/<16 hex>            writes in progress (and stale ones after a crash)
 *
 * A blob becomes visible under its digest name only by an atomic rename of
 * a complete, verified and fsynced temp file (and the directory is fsynced
 * after it), so after kill -9 or a power cut a digest name holds the whole
 * content or does not exist. Leftover temps are removed by gc.
 *
 * Concurrency: any number of threads and processes may use one store at
 * once (one struct per process is enough; every function is thread-safe).
 * Several writers of the same blob all succeed: the first rename wins, the
 * others find the blob present and drop their temps. Locks are flock(2)
 * locks, which are tied to an open file description, so they work between
 * threads of one process as between processes:
 *   - a writer holds LOCK_EX on its temp file while it lives; gc removes a
 *     temp only when it is older than the stale age AND not locked;
 *   - a reader (kiln_blobstore_open_blob) holds LOCK_SH on the blob until it
 *     closes the fd; gc removes a blob only after taking LOCK_EX | LOCK_NB,
 *     so a blob being read is never collected. (A reader that opened the
 *     file just before gc unlinked it sees st_nlink == 0 after taking its
 *     lock and reports the blob as absent.)
 *
 * Recent use: kiln_blobstore_open_blob() and a commit set the blob's atime
 * to the current time explicitly (futimens), independent of the mount's
 * atime options; gc removes the blobs with the oldest atime first. has()
 * does not count as use.
 *
 * Sizes are file sizes (st_size). The size cap given at open is the target
 * of kiln_blobstore_gc(); the store never collects by itself.
 *
 * Digests are "sha256:<64 lower-case hex>" (see oci/digest.h); a valid
 * digest of another algorithm is -KILN_EUNSUPPORTED.
 *
 * The blob store and the layer store (store/layerstore.h) may share a root:
 * both follow the same protocol for entries of tmp/.
 */
#ifndef KILN_STORE_BLOBSTORE_H
#define KILN_STORE_BLOBSTORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kiln/error.h"
#include "oci/digest.h"

#ifndef KILN_STORE_TMP_MAX_AGE
/* Temps older than this and not locked are stale (seconds). */
#define KILN_STORE_TMP_MAX_AGE 3600
#endif

struct kiln_blobstore;
struct kiln_blob_writer;

/*
 * Open the store at `root`, creating root, blobs/sha256 and tmp as needed
 * (mode 0755 before umask). `size_cap` is the default gc target in bytes
 * (0: no cap). *ret is owned by the caller (kiln_blobstore_free).
 */
int kiln_blobstore_open(const char *root, uint64_t size_cap, struct kiln_blobstore **ret,
                        struct kiln_error **err);
/* Close the store's directory fds and free it; NULL is fine. Writers must be done. */
void kiln_blobstore_free(struct kiln_blobstore *bs);

uint64_t kiln_blobstore_size_cap(const struct kiln_blobstore *bs);
/* The root path given at open. */
const char *kiln_blobstore_root(const struct kiln_blobstore *bs);

/*
 * Is the blob present? Returns 1 (and its size in *ret_size when not NULL),
 * 0 when absent, or a negative error (-KILN_EINVAL bad digest).
 */
int kiln_blobstore_has(struct kiln_blobstore *bs, const char *digest, uint64_t *ret_size,
                       struct kiln_error **err);

/*
 * Open a blob for reading. Returns an fd (O_RDONLY | O_CLOEXEC, offset 0)
 * which holds a shared lock protecting the blob from gc until it is closed;
 * the caller closes it. Marks the blob as used now. *ret_size (may be NULL)
 * gets its size. -KILN_ENOTFOUND when absent.
 */
int kiln_blobstore_open_blob(struct kiln_blobstore *bs, const char *digest, uint64_t *ret_size,
                             struct kiln_error **err);

/*
 * Path of a blob ("<root>/blobs/sha256/<hex>"), newly allocated, whether it
 * exists or not; NULL for an invalid digest. For messages and external
 * tools; reading through it takes no lock.
 */
char *kiln_blobstore_path(const struct kiln_blobstore *bs, const char *digest);

/*
 * Start writing a blob: a new temp file in tmp/ (O_CLOEXEC, unique name,
 * exclusively locked). *ret is owned by the caller until
 * kiln_blobstore_commit() or kiln_blobstore_abort(), which both free it.
 * A writer is used by one thread at a time.
 */
int kiln_blobstore_begin(struct kiln_blobstore *bs, struct kiln_blob_writer **ret,
                         struct kiln_error **err);

/*
 * Append data through the writer, hashing it on the way. After a failure
 * the writer can only be aborted.
 */
int kiln_blobstore_write(struct kiln_blob_writer *w, const void *data, size_t len,
                         struct kiln_error **err);

/*
 * The temp file's fd (O_RDWR), owned by the writer: the caller may write
 * the content through it (write, splice, copy_file_range...) instead of
 * kiln_blobstore_write(). Once it was asked for, commit hashes the file's
 * content from its start, in one more read pass.
 */
int kiln_blobstore_writer_fd(struct kiln_blob_writer *w);

/* Bytes written through kiln_blobstore_write() so far. */
uint64_t kiln_blobstore_written(const struct kiln_blob_writer *w);

/*
 * Finish the blob: compute its digest, check it against `expected_digest`
 * (NULL: not checked) and its size against `expected_size` (-1: not
 * checked), fsync, rename it to blobs/sha256/<hex> without replacing an
 * existing blob, fsync that directory. When the blob is already present
 * the temp is dropped and the call succeeds. `ret_digest` (may be NULL)
 * receives "sha256:<hex>" of the content. Frees the writer in every case.
 * On a mismatch the temp is removed and the error is -KILN_EINVAL
 * "blob digest mismatch: expected sha256:.., got sha256:.." (or "blob size
 * mismatch: expected N bytes, got M").
 */
int kiln_blobstore_commit(struct kiln_blob_writer *w, const char *expected_digest,
                          int64_t expected_size, char ret_digest[KILN_DIGEST_BUFSZ],
                          struct kiln_error **err);

/* Drop the temp and free the writer; NULL is fine. */
void kiln_blobstore_abort(struct kiln_blob_writer *w);

/*
 * Convenience: store a buffer as a blob (begin + write + commit).
 * `ret_digest` may be NULL.
 */
int kiln_blobstore_put(struct kiln_blobstore *bs, const void *data, size_t len,
                       const char *expected_digest, char ret_digest[KILN_DIGEST_BUFSZ],
                       struct kiln_error **err);

/*
 * Re-hash a blob. Returns 0 when it is intact, -KILN_ENOTFOUND when absent,
 * and -KILN_EINVAL "blob sha256:.. is corrupt (content hashes to sha256:..),
 * removed" after removing a corrupt blob (readers that have it open keep
 * their fd).
 */
int kiln_blobstore_verify(struct kiln_blobstore *bs, const char *digest, struct kiln_error **err);

/*
 * Remove a blob now, even when it is being read (readers keep their fd):
 * for a blob found corrupt. Returns 0, or -KILN_ENOTFOUND when absent.
 */
int kiln_blobstore_remove(struct kiln_blobstore *bs, const char *digest, struct kiln_error **err);

struct kiln_blobstore_entry {
    char digest[KILN_DIGEST_BUFSZ];
    uint64_t size;
    int64_t last_used; /* seconds since the epoch (the blob's atime) */
};

/*
 * All committed blobs, oldest use first (ties by digest). *ret (an array of
 * *ret_n entries) is owned by the caller: free(). Entries whose name is not
 * a digest or that are not regular files are skipped.
 */
int kiln_blobstore_list(struct kiln_blobstore *bs, struct kiln_blobstore_entry **ret, size_t *ret_n,
                        struct kiln_error **err);

struct kiln_blobstore_gc_options {
    /*
     * Remove least-recently-used blobs until the total is at most this
     * many bytes; -1: the store's size cap (no cap: no blob is removed).
     */
    int64_t target_bytes;
    /* NULL-terminated digests never removed (may be NULL). */
    const char *const *pinned;
    /*
     * Unlocked temps older than this many seconds are removed; 0:
     * KILN_STORE_TMP_MAX_AGE; negative: any age.
     */
    int64_t tmp_max_age_s;
};

struct kiln_blobstore_gc_stats {
    uint64_t blobs_removed;
    uint64_t bytes_freed; /* blobs only */
    uint64_t kept_in_use; /* candidates skipped: being read */
    uint64_t kept_pinned; /* candidates skipped: pinned */
    uint64_t tmp_removed; /* stale temps removed */
    uint64_t tmp_bytes_freed;
    uint64_t blobs_left;
    uint64_t bytes_left; /* total of the blobs left */
};

/*
 * Collect: remove stale temps, then blobs in LRU order until the total is
 * at most the target, skipping pinned blobs and blobs being read. `opts`
 * may be NULL (the defaults: the size cap, nothing pinned, 1 h).
 * `ret_stats` may be NULL. Reaching the target is not required: when only
 * in-use or pinned blobs are left the call still succeeds (see
 * bytes_left). Returns 0 or a negative error.
 */
int kiln_blobstore_gc(struct kiln_blobstore *bs, const struct kiln_blobstore_gc_options *opts,
                      struct kiln_blobstore_gc_stats *ret_stats, struct kiln_error **err);

#endif
