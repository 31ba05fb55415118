/*
 * The unpacked-layer store: each layer extracted once, keyed by its diff_id
 * (the sha256 of the uncompressed layer tar), kept read-only and used as an
 * overlayfs lower directory by every later build.
 *
 * Layout below the store's root directory:
 *
 *   layers/sha256/<64 hex>/  complete layers; a name appears only by an
 *                            atomic rename of a fully extracted directory
 *   locks/<64 hex>           one lock file per layer (see below); its
 *                            content is the layer's disk usage in bytes
 *                            (decimal), its mtime the layer's last use
 *   tmp/<16 hex>/            extractions in progress, layers being removed,
 *                            and after a crash their leftovers
 *
 * Locks: each lock file carries two OFD byte-range locks (fcntl
 * F_OFD_SETLK), which belong to an open file description like flock(2)
 * locks, so they work between threads of a process as between processes:
 *   - "use" (byte 0): shared by every ref and by ensure() while it runs;
 *     exclusive, taken without waiting, by removal (remove and gc);
 *   - "extract" (byte 1): exclusive while one ensure() re-checks and
 *     extracts.
 * Two locks rather than one flock: an extraction must be serialised
 * without waiting for the refs other builds hold on the same layer, and a
 * ref must hold from the first check on (flock's exclusive-to-shared
 * conversion is not atomic).
 *
 * Extraction (kiln_layerstore_ensure) takes the shared use lock, then the
 * extract lock, re-checks, fills a fresh temp directory through the
 * caller's callback (the unpacker), measures it, syncs the file system
 * (syncfs), renames the directory into place and fsyncs layers/sha256. So
 * a layer name never shows a partial tree, concurrent ensure() calls of one
 * layer (threads or processes) extract it once while the others wait on
 * the extract lock, and a crash (kill -9, power cut) leaves only a temp
 * directory, which gc removes (the dead process's locks vanish with it).
 *
 * In use: a struct kiln_layer_ref (from ensure or acquire) holds the shared
 * use lock until kiln_layerstore_release(). A build holds a ref on each
 * lower layer while its overlay is mounted. Removal needs the exclusive use
 * lock taken without waiting, so a layer with a ref is never removed.
 * Removal renames the layer out of layers/ first (atomic disappearance),
 * then deletes the tree. One thread may hold several refs of one layer.
 *
 * The store never writes into a complete layer. Read-only is the contract
 * of its users: overlayfs never modifies a lower directory, and nothing
 * else may. Sizes are disk usage (st_blocks, hard links once).
 *
 * Entries of tmp/ follow the same protocol as the blob store's (a live
 * owner holds an exclusive flock on the entry; gc removes only entries
 * older than the stale age whose lock it can take), so both stores may
 * share a root. Every function is thread-safe.
 */
#ifndef KILN_STORE_LAYERSTORE_H
#define KILN_STORE_LAYERSTORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kiln/error.h"
#include "oci/digest.h"

#ifndef KILN_STORE_TMP_MAX_AGE
/* Temps older than this and not locked are stale (seconds). */
#define KILN_STORE_TMP_MAX_AGE 3600
#endif

struct kiln_layerstore;
struct kiln_layer_ref;

/*
 * Fill an empty directory with a layer's tree. `dirfd` is an open fd of
 * the directory (owned by the store: do not close it); write only below
 * it, with *at() calls. The callback may set the directory's own mode,
 * owner, times and xattrs. Return >= 0 on success, or a negative error
 * set in *err; on failure everything it wrote is removed.
 */
typedef int (*kiln_layer_fill_fn)(int dirfd, void *userdata, struct kiln_error **err);

/*
 * Open the store at `root`, creating root, layers/sha256, locks and tmp as
 * needed. `size_cap` is the default gc target in bytes (0: no cap). *ret
 * is owned by the caller (kiln_layerstore_free).
 */
int kiln_layerstore_open(const char *root, uint64_t size_cap, struct kiln_layerstore **ret,
                         struct kiln_error **err);
/* Free the store; NULL is fine. Refs stay valid (they own their own fds). */
void kiln_layerstore_free(struct kiln_layerstore *ls);

uint64_t kiln_layerstore_size_cap(const struct kiln_layerstore *ls);
const char *kiln_layerstore_root(const struct kiln_layerstore *ls);

/*
 * Is the layer complete? Returns 1 and (when ret_path is not NULL) its
 * path "<root>/layers/sha256/<hex>", newly allocated, owned by the caller;
 * 0 when absent; a negative error for an invalid diff_id. Takes no lock:
 * to use the layer, hold a ref (kiln_layerstore_acquire/ensure).
 */
int kiln_layerstore_lookup(struct kiln_layerstore *ls, const char *diff_id, char **ret_path,
                           struct kiln_error **err);

/*
 * Make sure the layer is present, extracting it with fill(dirfd, userdata,
 * err) when it is not (see the top of this file). Returns 1 when this call
 * extracted it, 0 when it was present, or a negative error: the callback's
 * (prefixed "extract layer sha256:.."), or the store's. When ret_ref is not
 * NULL, *ret_ref receives a ref holding the layer in use (released with
 * kiln_layerstore_release). The callback's content is trusted: the store
 * does not check it against the diff_id (the unpacker does). Waits without
 * a time limit while another thread or process extracts the same layer.
 * `fill` may be NULL: then an absent layer is -KILN_ENOTFOUND. Calling
 * ensure() of a layer from inside its own fill callback deadlocks.
 */
int kiln_layerstore_ensure(struct kiln_layerstore *ls, const char *diff_id, kiln_layer_fill_fn fill,
                           void *userdata, struct kiln_layer_ref **ret_ref,
                           struct kiln_error **err);

/*
 * Hold a present layer in use, and mark it used now. -KILN_ENOTFOUND when
 * the layer is absent. Waits while the layer is being extracted.
 */
int kiln_layerstore_acquire(struct kiln_layerstore *ls, const char *diff_id,
                            struct kiln_layer_ref **ret_ref, struct kiln_error **err);

/* Release a ref (its lock); NULL is fine. */
void kiln_layerstore_release(struct kiln_layer_ref *ref);

/* The layer's directory path and diff_id; valid until the ref is released. */
const char *kiln_layer_ref_path(const struct kiln_layer_ref *ref);
const char *kiln_layer_ref_diff_id(const struct kiln_layer_ref *ref);

/*
 * Remove a layer now. -KILN_ECONFLICT "layer sha256:.. is in use" when a
 * ref holds it (or it is being extracted), -KILN_ENOTFOUND when absent.
 * `ret_bytes` (may be NULL) receives the disk usage freed.
 */
int kiln_layerstore_remove(struct kiln_layerstore *ls, const char *diff_id, uint64_t *ret_bytes,
                           struct kiln_error **err);

struct kiln_layerstore_entry {
    char diff_id[KILN_DIGEST_BUFSZ];
    uint64_t size;     /* disk usage in bytes */
    int64_t last_used; /* seconds since the epoch */
    bool in_use;       /* a ref held its use lock when listed */
};

/*
 * All complete layers, oldest use first (ties by diff_id). *ret (an array
 * of *ret_n entries) is owned by the caller: free(). Sizes come from the
 * lock file, or are measured when it has none.
 */
int kiln_layerstore_list(struct kiln_layerstore *ls, struct kiln_layerstore_entry **ret,
                         size_t *ret_n, struct kiln_error **err);

struct kiln_layerstore_gc_options {
    /* Remove LRU layers until the total is at most this; -1: the size cap (none: no removal). */
    int64_t target_bytes;
    /* NULL-terminated diff_ids never removed (may be NULL). */
    const char *const *pinned;
    /* Unlocked temps older than this (seconds) are removed; 0: 1 h; negative: any age. */
    int64_t tmp_max_age_s;
};

struct kiln_layerstore_gc_stats {
    uint64_t layers_removed;
    uint64_t bytes_freed;
    uint64_t kept_in_use;
    uint64_t kept_pinned;
    uint64_t tmp_removed;
    uint64_t tmp_bytes_freed;
    uint64_t locks_removed; /* lock files of absent layers */
    uint64_t layers_left;
    uint64_t bytes_left;
};

/*
 * Collect: stale temps, then layers in LRU order until the total is at
 * most the target (skipping pinned and in-use layers), then lock files of
 * absent layers. `opts` and `ret_stats` may be NULL. Returns 0 or a
 * negative error.
 */
int kiln_layerstore_gc(struct kiln_layerstore *ls, const struct kiln_layerstore_gc_options *opts,
                       struct kiln_layerstore_gc_stats *ret_stats, struct kiln_error **err);

#endif
