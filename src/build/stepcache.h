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

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kiln/error.h"
#include "oci/digest.h"

struct kiln_step_record {
    char digest[KILN_DIGEST_BUFSZ];  /* the compressed layer blob */
    char diff_id[KILN_DIGEST_BUFSZ]; /* the uncompressed tar */
    uint64_t size;                   /* of the blob */
    char media_type[128];
    /* when the step ran, or the build's source_date_epoch (the history entry's time) */
    char created[40];
};

/* 1 and *ret when DIR holds a valid record for `key` (64 hex), 0 when none. */
int kiln_stepcache_get(const char *dir, const char *key, struct kiln_step_record *ret,
                       struct kiln_error **err);

/* Store the record (replacing one of that key). DIR must exist. */
int kiln_stepcache_put(const char *dir, const char *key, const struct kiln_step_record *rec,
                       struct kiln_error **err);

/* ---- the shared step cache (a registry repository) ---------------------------------
 *
 * A step's layer is shared through a registry repository as an OCI image
 * manifest tagged "step-<key>" (KILN_STEPCACHE_TAG_LEN characters, within the
 * tag grammar's 128): its config is a small JSON document of media type
 * KILN_STEPCACHE_CONFIG_MT,
 *   {"key": "<64 hex>", "kind": "apt", "created_by": "RUN ...",
 *    "diff_id": "sha256:..", "created": "RFC 3339", "kiln_version": ".."}
 * and its single layer is the step's layer blob, with the media type it was
 * committed with. The manifest may carry one annotation,
 * KILN_STEPCACHE_USED_ANNOTATION: the RFC 3339 time a build last pulled the
 * step (a pull rewrites the manifest with it when the newer of that and the
 * config's "created" is more than KILN_STEPCACHE_TOUCH_SECONDS old), so that
 * kiln gc --cache-repo keeps a step still in use. The engine
 * (build/engine.c) pushes, reads and touches them; the functions here only
 * make and check the documents.
 */
#define KILN_STEPCACHE_CONFIG_MT  "application/vnd.kiln.step.v1+json"
#define KILN_STEPCACHE_TAG_PREFIX "step-"
#define KILN_STEPCACHE_TAG_LEN    69 /* "step-" + 64 hex */
/* Largest config document accepted (it holds the step's command text). */
#define KILN_STEPCACHE_CONFIG_MAX ((size_t)4 << 20)
/* Largest cache manifest accepted (one config and one layer descriptor). */
#define KILN_STEPCACHE_MANIFEST_MAX ((size_t)64 << 10)
/* The cache manifest's annotation of the time a build last pulled the step. */
#define KILN_STEPCACHE_USED_ANNOTATION "io.kiln.step.used"
/* A pull records its time when the step's last time is older than this (1 day). */
#define KILN_STEPCACHE_TOUCH_SECONDS ((int64_t)24 * 60 * 60)
/* A "used" time and its NUL (the size of a record's "created"). */
#define KILN_STEPCACHE_TIME_BUFSZ 40

struct kiln_buf;

/* "step-<key>" into out; -KILN_EINVAL for a key that is not 64 lower-case hex. */
int kiln_stepcache_tag(const char *key, char out[KILN_STEPCACHE_TAG_LEN + 1],
                       struct kiln_error **err);

/*
 * The config document of the step `key` of kind `kind` ("apt"...) with
 * history text `created_by`, whose layer is rec (diff_id and created are
 * used), made by kiln `version`. Appended to `out` (its cap applies).
 * -KILN_EINVAL for an invalid key or text that is not UTF-8.
 */
int kiln_stepcache_config_make(const char *key, const char *kind, const char *created_by,
                               const struct kiln_step_record *rec, const char *version,
                               struct kiln_buf *out, struct kiln_error **err);

/*
 * Check a config document read from a cache repository: at most
 * KILN_STEPCACHE_CONFIG_MAX bytes of JSON naming `key` and `kind`, a valid
 * diff_id and an RFC 3339 UTC or offset "created" that fits the record.
 * Fills ret->diff_id and ret->created (the rest of *ret is untouched) only on
 * success; -KILN_EINVAL naming the problem, -KILN_ETOOBIG for a long one.
 */
int kiln_stepcache_config_parse(const char *data, size_t len, const char *key, const char *kind,
                                struct kiln_step_record *ret, struct kiln_error **err);

/* A key and its NUL. */
#define KILN_STEPCACHE_KEY_BUFSZ 65

/*
 * The same checks without knowing the step (for kiln gc --cache-repo): any
 * valid key (64 lower-case hex) and any kind. On success ret_key gets the
 * key and ret->diff_id, ret->created are filled (the rest of *ret is
 * untouched); errors as above.
 */
int kiln_stepcache_config_created(const char *data, size_t len,
                                  char ret_key[KILN_STEPCACHE_KEY_BUFSZ],
                                  struct kiln_step_record *ret, struct kiln_error **err);

/*
 * Seconds since the epoch of a "created" time as the config parsers accept
 * it (RFC 3339, fraction dropped, offset applied): 0 and *ret_epoch, or -1
 * when malformed (also an out-of-range month, day, hour...).
 */
int kiln_stepcache_created_time(const char *created, int64_t *ret_epoch);

/*
 * The time that counts for a cached step's age: the newer of its config's
 * `created` and its manifest's `used` (NULL or "": none), in seconds since
 * the epoch, as kiln_stepcache_created_time() reads them. 0 and
 * *ret_epoch, *ret_is_used (may be NULL: true when `used` is the newer);
 * -1 when either time is malformed (outputs untouched).
 */
int kiln_stepcache_last_time(const char *created, const char *used, int64_t *ret_epoch,
                             bool *ret_is_used);

/*
 * The cache manifest: an OCI image manifest with the config blob
 * (config_digest, config_size) and the layer of rec (media_type, digest,
 * size), appended to `out`. `used` NULL: no annotations (the bytes kiln
 * always made); else the manifest's annotations are
 * {KILN_STEPCACHE_USED_ANNOTATION: used}, which must be an RFC 3339 time
 * shorter than KILN_STEPCACHE_TIME_BUFSZ (else -KILN_EINVAL).
 */
int kiln_stepcache_manifest_make(const char *config_digest, uint64_t config_size,
                                 const struct kiln_step_record *rec, const char *used,
                                 struct kiln_buf *out, struct kiln_error **err);

/*
 * Check a cache manifest (`content_type` as the registry sent it, or NULL):
 * at most KILN_STEPCACHE_MANIFEST_MAX bytes, an OCI image manifest whose
 * config has media type KILN_STEPCACHE_CONFIG_MT and a size up to
 * KILN_STEPCACHE_CONFIG_MAX, and exactly one layer of a tar, tar+gzip or
 * tar+zstd type (OCI or docker), and a KILN_STEPCACHE_USED_ANNOTATION, if
 * any, that kiln_stepcache_created_time() accepts and that fits
 * KILN_STEPCACHE_TIME_BUFSZ (else -KILN_EINVAL naming the annotation; other
 * annotations are ignored). On success ret_config_digest / *ret_config_size
 * get the config blob, ret->digest, ->size and ->media_type the layer (the
 * rest of *ret is untouched), and ret_used (may be NULL) the annotation's
 * time, or "" when the manifest has none. Nothing is written on failure.
 */
int kiln_stepcache_manifest_parse(const char *data, size_t len, const char *content_type,
                                  char ret_config_digest[KILN_DIGEST_BUFSZ],
                                  uint64_t *ret_config_size, struct kiln_step_record *ret,
                                  char ret_used[KILN_STEPCACHE_TIME_BUFSZ],
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
