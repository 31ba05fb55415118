/*
 * The step cache: what a build step produced, by the step's cache key
 * (build/plan.h), so that an unchanged step is not run again.
 *
 * One small JSON file per key, DIR/<key>.json:
 *   {"digest": "sha256:..", "diff_id": "sha256:..", "size": N,
 *    "media_type": "..", "created": "RFC 3339"}
 * written atomically (temp file, fsync, rename), so concurrent builds and
 * kill -9 only ever leave whole records. A record only names a layer; the
 * blob itself lives in the blob store, and a record whose blob is gone is
 * treated by the engine as a miss. Records are never changed: a rerun with
 * --no-cache replaces the record atomically.
 */
#ifndef KILN_BUILD_STEPCACHE_H
#define KILN_BUILD_STEPCACHE_H

#include <stdint.h>

#include "kiln/error.h"
#include "oci/digest.h"

struct kiln_step_record {
    char digest[KILN_DIGEST_BUFSZ];  /* the compressed layer blob */
    char diff_id[KILN_DIGEST_BUFSZ]; /* the uncompressed tar */
    uint64_t size;                   /* of the blob */
    char media_type[128];
    char created[40]; /* when the step ran (the history entry's time) */
};

/* 1 and *ret when DIR holds a valid record for `key` (64 hex), 0 when none. */
int kiln_stepcache_get(const char *dir, const char *key, struct kiln_step_record *ret,
                       struct kiln_error **err);

/* Store the record (replacing one of that key). DIR must exist. */
int kiln_stepcache_put(const char *dir, const char *key, const struct kiln_step_record *rec,
                       struct kiln_error **err);

struct kiln_blobstore;

/*
 * Remove the records whose layer blob is no longer in `bs` (after a blob
 * store gc): they could only ever be misses. *ret_removed and *ret_kept
 * (may be NULL) get the counts.
 */
int kiln_stepcache_prune(const char *dir, struct kiln_blobstore *bs, uint64_t *ret_removed,
                         uint64_t *ret_kept, struct kiln_error **err);

#endif
