/*
 * The build workers of `kiln serve`: N threads claim Pending jobs from the
 * store (kiln_store_job_claim, atomic) and run each with the build engine
 * (build/engine.h: exactly what `kiln build --push` runs), writing the
 * job's log to DATA/logs/<id>.log (one line per engine log line, prefixed
 * with an RFC 3339 UTC timestamp; step output lines as "TIME | line",
 * stderr "TIME ! line", warnings "TIME warning: ..."; append-only, fsync'd at
 * the end) and finishing the job Succeeded (digest, image URL = the target),
 * Failed (the engine's error message) or Cancelled.
 *
 * Stored logs: once a job is finished (its result recorded), the worker
 * keeps a copy of its log in the store (kiln_jobs_store_log), so that any
 * kiln serve sharing the database can serve it; a failure to store it is a
 * warning, never a job failure (and a crash in between leaves a finished
 * job without a stored log). While a job runs, the supervisor keeps a live
 * copy of its log's end in the store (kiln_jobs_store_live_log): every
 * KILN_JOBS_LIVE_LOG_SYNC_MS, when the log file grew since the last copy.
 * A store error there is a warning (once per job), never a job failure.
 *
 * Cancel: kiln_jobs_cancel() asks the store (Pending -> Cancelled at once,
 * Running -> cancel_requested) and tells the worker running it, whose
 * build's `cancelled` hook then returns 1 (the engine kills the step's
 * container and cleans up). Workers also poll the store's cancel flag every
 * second, so a cancel made by another process (a second `kiln serve` or
 * worker on the same database) works too. A job running longer than
 * job_timeout_ms is cancelled and finished Failed with "timed out after N s".
 *
 * Leases (store.h): several processes (hosts) may share one database. Each
 * running job is leased to the worker that claimed it; the supervisor renews
 * the lease every beat_ms (kiln_store_job_heartbeat). When a renewal finds
 * the job no longer ours (another process found the lease expired and
 * recovered it), the build is cancelled and the job left alone: not
 * finished, since it may already run elsewhere. Jobs are finished with
 * kiln_store_job_finish_as, so a worker can never overwrite a job that is
 * no longer its own. Leases are reckoned on CLOCK_REALTIME: the store must
 * keep that clock (no clock_ms in its options).
 *
 * Recovery (kiln_store_recover: Failed 'interrupted', or Pending again with
 * requeue_interrupted) of jobs left Running by a dead process:
 *  - at start, jobs whose lease expired (heartbeat older than lease_ms, or
 *    none), and at once the jobs of a dead process of this host: when the
 *    worker name is "<host>-<pid>" with this process's pid (what kiln serve
 *    uses), Running jobs of workers named "<host>-<P>" or "<host>-<P>/<n>"
 *    whose process P is gone (kill(P, 0) fails with ESRCH) or is this very
 *    process (a previous life with the same pid, as in a container) are
 *    recovered without waiting for their lease (so kill -9 and a restart
 *    recover at once). Processes that share a host name must share the
 *    PID namespace too;
 *  - while running, every lease_ms / 2 the supervisor recovers the jobs
 *    whose lease expired, so a dead host's jobs come back within about 1.5
 *    leases. This process's own workers keep renewing theirs.
 * With no registry configured (registry.configured false) no worker claims
 * anything (recovery still runs).
 *
 * No workers (no_workers true, for an API-only kiln serve): no worker thread
 * starts and nothing is claimed, built or written to DATA/logs (the log
 * directory is not even made); jobs wait for a process with workers on the
 * same store. The supervisor still runs, for what needs no local worker:
 * recovery at start and the sweep of expired leases every lease_ms / 2 (so
 * the jobs of a dead worker elsewhere come back). kiln_jobs_wake() is then a
 * no-op, kiln_jobs_cancel() asks the store only (the worker running the job,
 * wherever it is, sees the store's cancel flag within a second),
 * kiln_jobs_stats() counts nothing and kiln_jobs_stop() returns at once.
 * Pull secrets: a spec's pullSecret names a stored secret whose
 * dockerconfigjson gives the credentials for the base image's registry;
 * without one, the push credentials are used when the base image lives on
 * the push registry (registry.endpoint).
 *
 * Stop: kiln_jobs_stop() stops claiming, waits up to grace_ms for running
 * builds, then cancels them and waits for the workers to end (a cancelled
 * build stops within seconds). The jobs then are final (Cancelled, with
 * error message "kiln serve stopped").
 */
#ifndef KILN_SERVICE_JOBS_H
#define KILN_SERVICE_JOBS_H

#include <stdbool.h>
#include <stdint.h>

#include "build/engine.h"
#include "kiln/error.h"
#include "service/store.h"

/* Where jobs push: from the environment (cmd-serve reads it). */
struct kiln_registry_config {
    bool configured;         /* false: "image registry not found", no builds */
    const char *endpoint;    /* host[:port] of the registry, or NULL */
    const char *repo_prefix; /* "<endpoint>/<path>" targets: PREFIX/NAME:HASH */
    const char *push_repo;   /* single repository: REPO:NAME-HASH (wins over the prefix) */
    const struct kiln_registry_options *push; /* credentials and TLS for the endpoint */
};

/* How often the live copy of a running job's log is refreshed in the store (when it grew). */
#define KILN_JOBS_LIVE_LOG_SYNC_MS 2000L
/* The most of a running job's log kept in its live copy (its end, from a line start). */
#define KILN_JOBS_LIVE_LOG_MAX (1024u * 1024)

/* How often a worker renews the lease of its running job (default). */
#define KILN_JOBS_BEAT_MS 10000L
/* How long a lease lasts without a renewal (default). */
#define KILN_JOBS_LEASE_MS 60000L

struct kiln_jobs_options {
    struct kiln_store *store; /* borrowed */
    const char *data_dir;     /* logs in DATA/logs, the build store in DATA */
    int workers;              /* 1 to 256; 0: 1 (unless no_workers) */
    bool no_workers;          /* start no worker thread (workers must be 0, else -KILN_EINVAL) */
    long job_timeout_ms;      /* 0: 2 h */
    bool requeue_interrupted;
    const char *worker_name; /* e.g. "host-pid"; NULL: "kiln-<pid>". Workers are named
                                "NAME" (1 worker) or "NAME/<n>" */
    /* Leases (for tests): renew every beat_ms (0: KILN_JOBS_BEAT_MS, or
     * lease_ms / 6 when that is shorter), expire after lease_ms (0:
     * KILN_JOBS_LEASE_MS). beat_ms must be below lease_ms, else -KILN_EINVAL;
     * every process sharing a database should use the same lease_ms. */
    long beat_ms;
    long lease_ms;
    struct kiln_registry_config registry;
    /* Template of every build: runtime, format, plan (pip index), base
     * registry TLS settings (credentials come from the spec's pull secret),
     * step timeout. data_dir, target, push_registry, cancelled, on_log and
     * userdata are set per job. Unused with no_workers (may be NULL). */
    const struct kiln_build_options *build;
};

struct kiln_jobs;

/* Recover, then start the supervisor and the workers (none with no_workers). *ret is the
 * caller's (kiln_jobs_stop). */
int kiln_jobs_start(const struct kiln_jobs_options *o, struct kiln_jobs **ret,
                    struct kiln_error **err);

/* A job was queued: wake an idle worker. NULL-safe. */
void kiln_jobs_wake(struct kiln_jobs *j);

/*
 * Cancel job `id` (see the top of this file). Returns
 * KILN_STORE_CANCELLED_NOW or KILN_STORE_CANCEL_REQUESTED, or the store's
 * -KILN_ECONFLICT (already final) / -KILN_ENOTFOUND. With j == NULL only the
 * store is asked.
 */
int kiln_jobs_cancel(struct kiln_jobs *j, struct kiln_store *st, int64_t id,
                     struct kiln_error **err);

/* "DATA/logs/<id>.log" (caller frees); the file may not exist yet. */
char *kiln_jobs_log_path(const char *data_dir, int64_t id);

/*
 * Store the log file `path` of job `id` (kiln_store_job_log_put). A log
 * over KILN_STORE_LOG_MAX keeps its end (where the errors are), from a line
 * start, after a first line "[log truncated: the first N bytes are only on
 * HOST in PATH]" (HOST: `host`, NULL for this machine's name), and is
 * marked truncated with start offset N. It is the job's final copy
 * (kiln_store_job_log_put_final): it replaces a live one. A missing file is
 * -KILN_ENOTFOUND (nothing stored).
 */
int kiln_jobs_store_log(struct kiln_store *st, int64_t id, const char *path, const char *host,
                        struct kiln_error **err);

/*
 * Store a live copy of the log file `path` of job `id`, Running under
 * `worker` (kiln_store_job_log_put_live): the whole file when it holds at
 * most KILN_JOBS_LIVE_LOG_MAX bytes, else its last KILN_JOBS_LIVE_LOG_MAX
 * bytes at most from a line start, with the offset where they start. The
 * file's size when read goes to *ret_size (may be NULL). Returns the
 * store's 1 (stored) or 0 (the job is no longer Running under `worker`, or
 * its final copy is stored); a missing file is -KILN_ENOTFOUND.
 */
int kiln_jobs_store_live_log(struct kiln_store *st, int64_t id, const char *worker,
                             const char *path, uint64_t *ret_size, struct kiln_error **err);

/* The target image of a spec revision per the registry config (caller frees), or NULL
 * when no registry is configured. */
char *kiln_jobs_target(const struct kiln_registry_config *rc, const char *name,
                       const char *revision);

struct kiln_jobs_stats {
    uint64_t builds;              /* finished builds */
    double build_seconds_sum;     /* their total duration */
    uint64_t duration_buckets[8]; /* counts <= 10, 30, 60, 120, 300, 600, 1800, 3600 s */
    uint64_t pushed_bytes;        /* bytes uploaded by pushes */
    int running;                  /* builds running now */
};

/* Counters for /metrics. NULL-safe (zeros). */
void kiln_jobs_stats(struct kiln_jobs *j, struct kiln_jobs_stats *ret);

/* Stop (see above) and free; NULL is fine. */
void kiln_jobs_stop(struct kiln_jobs *j, long grace_ms);

#endif
