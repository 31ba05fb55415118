/*
 * The build engine: `kiln build` and every job of `kiln serve` run this.
 *
 *   1. resolve the base image (manifest for the platform, config);
 *   2. plan the steps (build/plan.h) and look each key up in the step
 *      cache (build/stepcache.h): a step whose record and blob are both
 *      present is not run; once one step runs, every later one runs too;
 *   3. for the steps to run: the lower layers (base layers pulled from the
 *      registry and unpacked once into the unpacked-layer store, streamed:
 *      download, gunzip and extraction overlap; earlier step layers from the
 *      blob store) are stacked in an overlay with a fresh upper dir; the
 *      step runs in an OCI runtime (build/runtime.h) as root with the host's
 *      network; its upper dir is committed into a layer (layer/pack.h,
 *      overlay whiteouts to OCI ones) straight into the blob store, and the
 *      step's record is written;
 *   4. the image config (the base's, plus diff_ids, history per step,
 *      labels io.kiln.spec / io.kiln.revision / io.kiln.version; User stays
 *      the base's) and manifest (docker v2s2 by default) are written to the
 *      blob store. "created" is the last run step's time, so an unchanged
 *      spec gives the same digest;
 *   5. optionally verified (build/verify.h) — a failed check fails the
 *      build and nothing is pushed;
 *   3b. with a shared step cache (cache_repo), a step missing from the
 *      local cache is looked up in the registry (REPO:step-<key>) first: a
 *      hit pulls its layer blob, unpacks it, writes the local record and
 *      the step counts as cached; every step that runs is pushed there
 *      (layer blob, a small config, the manifest) by a thread of its own
 *      while the build goes on. Failures are warnings (build/stepcache.h
 *      describes the documents);
 *   6. optionally pushed: base layers missing at the target are mounted from
 *      the base's repository (same registry) or copied from it; new blobs
 *      are uploaded unless present (HEAD); the manifest is PUT last, under
 *      the target's tag and every extra tag.
 *
 * State under data_dir (created as needed):
 *   store/        blob store + unpacked-layer store (one root)
 *   cache/steps/  step records
 *   builds/<id>/  one scratch dir per running build (upper, work, merged
 *                 dirs, the runtime bundle), locked while the build lives;
 *                 dirs of dead builds (kill -9) are cleaned up by the next
 *                 build: container deleted, overlay unmounted, tree removed
 *   runtime/      the OCI runtime's state (--root)
 *
 * Logging: every line the build says goes to `on_log` (phases and steps as
 * KILN_BUILD_LOG_INFO, the step's output as STDOUT/STDERR, warnings).
 * Nothing is printed. Cancel: `cancelled` is polled (steps, pulls, pushes);
 * a cancelled build kills its container and returns -KILN_ECANCELLED.
 * Thread-safe: concurrent builds (threads or processes) may share data_dir.
 */
#ifndef KILN_BUILD_ENGINE_H
#define KILN_BUILD_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "build/plan.h"
#include "build/verify.h"
#include "kiln/error.h"
#include "layer/compress.h"
#include "oci/digest.h"
#include "oci/manifest.h"
#include "registry/client.h"
#include "spec/imagespec.h"

enum kiln_build_log {
    KILN_BUILD_LOG_INFO,   /* what the engine does */
    KILN_BUILD_LOG_WARN,   /* a warning */
    KILN_BUILD_LOG_STDOUT, /* a line of a step's standard output */
    KILN_BUILD_LOG_STDERR, /* a line of a step's standard error */
};

/* The last lines of a failed step kept for the error message. */
#define KILN_BUILD_TAIL_LINES 12

struct kiln_build_options {
    const char *data_dir; /* required */
    const char *runtime;  /* "runc", "crun" or a path; NULL: detect */
    /* Registry sessions' options for the base image and for the push
     * (credentials, TLS); NULL: anonymous, defaults. */
    const struct kiln_registry_options *base_registry;
    const struct kiln_registry_options *push_registry;
    /*
     * The shared step cache (docs/build.md, "Shared step cache"): a
     * repository "host[:port]/path" (no tag, no digest) where each step
     * that runs is pushed as "REPO:step-<key>" and where a step missing
     * from the local cache is looked up before it runs. NULL: none. Best
     * effort: its failures are warnings, never the build's.
     */
    const char *cache_repo;
    /* The cache registry's session options; NULL: the push registry's
     * when the cache repository is on the target's registry, else the
     * base registry's. */
    const struct kiln_registry_options *cache_registry;
    const char *target;                    /* the image reference to push to; NULL: no push */
    const char *const *extra_tags;         /* NULL-terminated, or NULL */
    bool no_cache;                         /* run every step */
    bool verify;                           /* run the JupyterHub readiness checks */
    enum kiln_manifest_format format;      /* KILN_FORMAT_DOCKER is what PrimeHub pushed */
    struct kiln_compress_options compress; /* {0}: gzip, defaults */
    struct kiln_plan_options plan;         /* pip index, trusted hosts */
    long step_timeout_ms;                  /* 0: none */
    int64_t source_date_epoch; /* >= 0: clamp layer mtimes to it and use it as the steps'
                                  created time; < 0: now, no clamp */
    int (*cancelled)(void *userdata);
    void (*on_log)(void *userdata, enum kiln_build_log kind, const char *line, size_t len);
    void *userdata;
};

struct kiln_build_result {
    char manifest_digest[KILN_DIGEST_BUFSZ];
    char config_digest[KILN_DIGEST_BUFSZ];
    char base_digest[KILN_DIGEST_BUFSZ]; /* the base's platform manifest */
    uint64_t manifest_size;
    size_t steps_run;
    size_t steps_cached;
    bool pushed;
    uint64_t pushed_bytes; /* bytes of the blobs uploaded by the push (not mounted or present) */
    int step_status;       /* exit status of a failed step (0 otherwise) */
};

/*
 * Build the validated spec `s`. *ret (may be NULL) is filled as far as the
 * build got, also on failure (step_status). Errors: a failed step is
 * -KILN_EIO "step apt failed with exit status 100: <last lines>";
 * -KILN_ECANCELLED, -KILN_ETIMEOUT (a step's timeout), and the registry's,
 * stores' and runtime's errors prefixed with the phase.
 */
int kiln_build_run(const struct kiln_spec *s, const struct kiln_build_options *o,
                   struct kiln_build_result *ret, struct kiln_error **err);

/*
 * Check a cache_repo value: "host[:port]/path" with an explicit registry
 * host and neither tag nor digest. 0, or -KILN_EINVAL naming the problem.
 */
int kiln_build_cache_repo_check(const char *repo, struct kiln_error **err);

/*
 * `kiln verify REF`: pull the image's layers into the layer store (as base
 * layers are) and run the readiness checks (build/verify.h) with the
 * options' data_dir, runtime, base_registry (for REF), cancelled and
 * on_log. Returns 0 with *ret filled whether the image is ready or not, or
 * a negative error when the checks could not run.
 */
int kiln_build_verify_ref(const char *ref, const struct kiln_build_options *o,
                          struct kiln_verify_report *ret, struct kiln_error **err);

#endif
