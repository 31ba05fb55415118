/*
 * The build service's store: specs, their build jobs, pull secrets, known
 * images and settings, kept in a database: SQLite (one machine) or
 * PostgreSQL (several kiln processes or hosts sharing one database).
 *
 * struct kiln_store is an opaque handle over a backend: a table of function
 * pointers (struct kiln_store_ops, below) and the backend's own state. The
 * kiln_store_* functions check their arguments, then call the backend.
 *
 * Data:
 *   specs    one row per spec name: the spec as JSON text in kiln's short
 *            form (kiln_spec_to_json), its revision (spec/revision.h) and
 *            created/updated times
 *   jobs     build jobs of a spec (ids grow, never reused), each with a
 *            frozen copy of the spec's JSON and revision at creation; they
 *            go with their spec when it is deleted
 *   secrets  registry pull secrets (a .dockerconfigjson text); list
 *            functions never return the value
 *   images   image URLs kiln knows of: 'built' (added by a successful
 *            job) or 'admin' (added by hand)
 *   settings key -> text (the admin token's hash is 'admin_token_sha256')
 *   job_logs a copy of a job's log, kept so that any process sharing the
 *            database can serve it; it goes with its job. Either the final
 *            copy, written once the job is finished (its last
 *            KILN_STORE_LOG_MAX bytes at most), or a live copy that the
 *            worker refreshes while the job runs (the end of the log so far,
 *            KILN_JOBS_LIVE_LOG_MAX bytes at most: service/jobs.h). Each has
 *            its start offset (where its bytes start in the whole log) and
 *            whether it is final. The final copy replaces a live one; a live
 *            copy never replaces a final one (schema v5; rows of v4 are
 *            final copies with start offset 0)
 *
 * Times are milliseconds since the epoch (int64_t), 0 meaning "not yet".
 *
 * Job life cycle:
 *   Pending --claim--> Running --finish--> Succeeded | Failed | Cancelled
 *   Pending --request cancel--> Cancelled
 *   Running --request cancel--> Running with cancel_requested (the worker
 *                               polls it, stops and finishes as Cancelled)
 *   Running --recover--> Failed ('interrupted') or back to Pending
 * At most one job of a spec is Running at a time: a claim skips specs that
 * have one.
 *
 * Leases: a Running job belongs to the worker that claimed it (its name is
 * in the job) for as long as the worker renews its lease: the claim sets
 * heartbeat_ms, and the worker calls kiln_store_job_heartbeat() now and
 * then. Whoever sees a lease expired (heartbeat_ms older than the lease
 * length) may recover the job (kiln_store_recover with stale_before_ms), and
 * the worker, whose next heartbeat returns 0, must then drop the job: stop
 * the build and not finish it (kiln_store_job_finish_as refuses anyway).
 * Lease lengths are the caller's (service/jobs.h); all processes sharing a
 * database must use clocks that agree to well within a lease.
 *
 * Errors: every function returns >= 0 on success, or -KILN_E<code> with *err
 * naming what failed ("store: spec 'x': not found"); the code is the same
 * when err is NULL. Database failures are -KILN_EIO (-KILN_ETIMEOUT when the
 * database stayed locked past the busy timeout, or PostgreSQL gave up on a
 * lock, a deadlock or a statement timeout; -KILN_ECONFLICT on a
 * constraint). Messages never hold a secret's value nor a password.
 *
 * Ownership: structs filled by the store own their strings; free them with
 * the matching _release function (which accepts a zeroed struct, and leaves
 * one). Out-parameters are written only on success.
 *
 * Threads: every function is thread-safe; one store is shared by worker and
 * HTTP threads. Several processes may open the same SQLite file or
 * PostgreSQL database (claims stay exclusive across them, and leases let
 * each recover only the jobs of the dead); a store is not carried across
 * fork() (the child opens its own).
 */
#ifndef KILN_SERVICE_STORE_H
#define KILN_SERVICE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kiln/error.h"
#include "spec/imagespec.h"
#include "spec/revision.h"
#include "util/strv.h"

struct kiln_store;

/* The largest page a list function returns. */
#define KILN_STORE_LIST_MAX 1000
/* The page size used when a query gives limit 0. */
#define KILN_STORE_LIST_DEFAULT 50

/* The largest job log kept in the store (kiln_store_job_log_put). */
#define KILN_STORE_LOG_MAX (8u * 1024 * 1024)

/* The settings key of the admin token's SHA-256 (hex). */
#define KILN_STORE_SETTING_ADMIN_TOKEN "admin_token_sha256"

enum kiln_job_phase {
    KILN_JOB_PENDING,
    KILN_JOB_RUNNING,
    KILN_JOB_SUCCEEDED,
    KILN_JOB_FAILED,
    KILN_JOB_CANCELLED,
    KILN_JOB_UNKNOWN,
    KILN_JOB_PHASES
};

/* "Pending", "Running", ...: the names stored and shown. */
const char *kiln_job_phase_name(enum kiln_job_phase phase);
/* The phase of a name (exact case), or -1. */
int kiln_job_phase_from_name(const char *name);
/* Succeeded, Failed or Cancelled. */
bool kiln_job_phase_is_final(enum kiln_job_phase phase);

struct kiln_store_options {
    /* Connections in the pool (0: 4, at most 64; SQLite: 1 for ":memory:"). */
    unsigned connections;
    /* The clock, for tests (NULL: CLOCK_REALTIME). */
    int64_t (*clock_ms)(void *userdata);
    void *clock_userdata;
};

/*
 * Open a store. `url` is "sqlite:PATH", "sqlite://PATH" or a plain file
 * path (SQLite), or a "postgres://..." / "postgresql://..." URI
 * (PostgreSQL, passed to libpq as it is). `opts` may be NULL. The database
 * (for PostgreSQL: its tables; the database itself must exist) is created
 * and migrated to the current schema as needed (each migration in its own
 * transaction, recorded in table schema_version); a database newer than
 * this kiln is -KILN_EUNSUPPORTED. *ret is the caller's (kiln_store_free).
 */
int kiln_store_open(const char *url, const struct kiln_store_options *opts, struct kiln_store **ret,
                    struct kiln_error **err);

/*
 * The SQLite backend (store-sqlite.c). A new file is created with mode 0600
 * (it holds secrets). Connections use WAL mode, foreign_keys=ON,
 * busy_timeout=5000 ms and synchronous=NORMAL; a transaction that writes
 * starts with BEGIN IMMEDIATE.
 */
int kiln_store_open_sqlite(const char *path, const struct kiln_store_options *opts,
                           struct kiln_store **ret, struct kiln_error **err);

/*
 * The PostgreSQL backend (store-pg.c). `conninfo` is anything libpq takes:
 * a "postgresql://user:password@host:port/dbname?param=value" URI or
 * "key=value" pairs; what it leaves out libpq may take from PG* environment
 * variables and ~/.pgpass. Messages name the database as 'host/dbname',
 * never with the password; a server that cannot be reached is -KILN_EIO
 * ("store: connect to 'host/dbname': ..."), a string libpq cannot parse
 * -KILN_EINVAL. A connection found broken is reset once before the next
 * statement. Migrations run under pg_advisory_xact_lock, so processes that
 * start together do not race; claims use FOR ... SKIP LOCKED.
 */
int kiln_store_open_postgres(const char *conninfo, const struct kiln_store_options *opts,
                             struct kiln_store **ret, struct kiln_error **err);

/* Close every connection and free the store; NULL is fine. No call may be running. */
void kiln_store_free(struct kiln_store *st);
void kiln_store_freep(struct kiln_store **st);

/* "sqlite" or "postgresql". */
const char *kiln_store_backend(const struct kiln_store *st);
/* The schema version of the open database (>= 1). */
int kiln_store_schema_version(struct kiln_store *st, struct kiln_error **err);
/*
 * Check the database's integrity: 0, or -KILN_EIO naming the problem.
 * SQLite: PRAGMA integrity_check. PostgreSQL (the server keeps its own
 * files): every spec's latest job agrees with the jobs table.
 */
int kiln_store_check(struct kiln_store *st, struct kiln_error **err);

/* ---- specs ---- */

struct kiln_store_spec {
    char *name;
    char *spec_json; /* kiln's short form, compact JSON */
    char revision[KILN_REVISION_LEN + 1];
    int64_t created_ms;
    int64_t updated_ms;
    /* The spec's latest job (highest id): job_id 0 when it has none. */
    int64_t job_id;
    enum kiln_job_phase job_phase; /* valid when job_id != 0 */
    char *job_image_url;           /* or NULL */
};
void kiln_store_spec_release(struct kiln_store_spec *s);

/* Parse spec_json back into a spec; *ret is the caller's (kiln_spec_free). */
int kiln_store_spec_parse(const struct kiln_store_spec *s, struct kiln_spec **ret,
                          struct kiln_error **err);

enum kiln_store_put_mode {
    KILN_STORE_PUT_UPSERT, /* insert or update */
    KILN_STORE_PUT_CREATE, /* insert only: a taken name is -KILN_ECONFLICT */
    KILN_STORE_PUT_UPDATE, /* update only: a missing name is -KILN_ENOTFOUND */
};

/* Bits of kiln_store_spec_put()'s result. */
#define KILN_STORE_PUT_NEW              1 /* the name was new */
#define KILN_STORE_PUT_CHANGED          2 /* the stored JSON changed (always with NEW) */
#define KILN_STORE_PUT_REVISION_CHANGED 4 /* the revision changed (always with NEW) */

/*
 * Store `spec` under spec->name (non-empty) as its short-form JSON and
 * revision. An update that leaves the JSON as it was changes nothing (not
 * even updated_ms) and returns 0; otherwise returns KILN_STORE_PUT_* bits.
 * The spec is not validated here (kiln_spec_validate is the caller's job).
 */
int kiln_store_spec_put(struct kiln_store *st, const struct kiln_spec *spec,
                        enum kiln_store_put_mode mode, struct kiln_error **err);

/* Fill *ret (caller releases) with the spec `name`; -KILN_ENOTFOUND when absent. */
int kiln_store_spec_get(struct kiln_store *st, const char *name, struct kiln_store_spec *ret,
                        struct kiln_error **err);

/* Delete a spec and all its jobs (and their stored logs); -KILN_ENOTFOUND when absent. */
int kiln_store_spec_delete(struct kiln_store *st, const char *name, struct kiln_error **err);

enum kiln_store_spec_order {
    KILN_STORE_ORDER_NAME,
    /* the latest job's phase: Running, Pending, Failed, Cancelled, Unknown,
       Succeeded, then specs without jobs; ties by name */
    KILN_STORE_ORDER_STATUS,
    KILN_STORE_ORDER_UPDATED, /* updated_ms, ties by name */
};

struct kiln_store_spec_query {
    const char *name_contains; /* NULL or "": every spec. Taken literally ('%', '_'
                                  are not wildcards); ASCII case-insensitive */
    enum kiln_store_spec_order order;
    bool descending; /* reverses the main key; ties stay by name ascending */
    size_t limit;    /* 0: KILN_STORE_LIST_DEFAULT; over KILN_STORE_LIST_MAX: -KILN_EINVAL */
    size_t offset;
};

struct kiln_store_spec_list {
    struct kiln_store_spec *v; /* n entries; NULL when n == 0 */
    size_t n;
    int64_t total; /* specs matching the filter, all pages */
};
void kiln_store_spec_list_release(struct kiln_store_spec_list *l);

/* One page of specs, each with its latest job, and the total; q may be NULL (defaults). */
int kiln_store_spec_list(struct kiln_store *st, const struct kiln_store_spec_query *q,
                         struct kiln_store_spec_list *ret, struct kiln_error **err);

/* ---- jobs ---- */

struct kiln_store_job {
    int64_t id;
    char *spec_name;
    char revision[KILN_REVISION_LEN + 1];
    char *spec_json; /* the spec as it was when the job was created */
    char *target_image;
    enum kiln_job_phase phase;
    int64_t created_ms;
    int64_t started_ms;   /* 0 until claimed */
    int64_t finished_ms;  /* 0 until final */
    int64_t heartbeat_ms; /* the lease's last renewal (claim or heartbeat); 0: none */
    char *image_digest;   /* or NULL; so are the next four */
    char *image_url;
    char *error_message;
    char *worker;
    char *log_path;
    int attempt; /* claims so far */
    bool cancel_requested;
};
void kiln_store_job_release(struct kiln_store_job *j);

struct kiln_store_job_list {
    struct kiln_store_job *v; /* n entries; NULL when n == 0 */
    size_t n;
    int64_t total; /* jobs of the spec, all pages */
};
void kiln_store_job_list_release(struct kiln_store_job_list *l);

/*
 * Create a Pending job of spec `spec_name` building `target_image`, with a
 * frozen copy of the spec's current JSON and revision. When `revision` is
 * not NULL it must be the spec's current revision, or -KILN_ECONFLICT (so a
 * target computed from a revision cannot be paired with a newer spec).
 * -KILN_ENOTFOUND when the spec does not exist. The new id goes to *ret_id
 * (may be NULL).
 */
int kiln_store_job_create(struct kiln_store *st, const char *spec_name, const char *revision,
                          const char *target_image, int64_t *ret_id, struct kiln_error **err);

/* Fill *ret (caller releases) with job `id`; -KILN_ENOTFOUND when absent. */
int kiln_store_job_get(struct kiln_store *st, int64_t id, struct kiln_store_job *ret,
                       struct kiln_error **err);

/*
 * Jobs of a spec, newest first; limit as in kiln_store_spec_query. A spec
 * without jobs, or an unknown one, gives an empty list.
 */
int kiln_store_job_list(struct kiln_store *st, const char *spec_name, size_t limit, size_t offset,
                        struct kiln_store_job_list *ret, struct kiln_error **err);

/* Record where job `id` writes its log (NULL clears it); -KILN_ENOTFOUND when absent. */
int kiln_store_job_set_log_path(struct kiln_store *st, int64_t id, const char *log_path,
                                struct kiln_error **err);

/*
 * Atomically take the oldest Pending job whose spec has no Running job: it
 * becomes Running with started_ms and heartbeat_ms now, `worker`
 * (non-empty) and attempt + 1.
 * Returns 1 and fills *ret (caller releases) with the claimed job, or 0 when
 * no job can be claimed now. Each job is claimed by exactly one caller, also
 * across processes.
 */
int kiln_store_job_claim(struct kiln_store *st, const char *worker, struct kiln_store_job *ret,
                         struct kiln_error **err);

/*
 * Renew the lease of job `id` held by `worker` (non-empty): heartbeat_ms
 * becomes now when the job is Running under that worker. Returns 1 when
 * renewed, 0 when the job is not (or no longer) Running under `worker`:
 * recovered by someone who found its lease expired (and maybe claimed
 * again), finished, or deleted with its spec. On 0 the worker must drop the
 * job: stop its build and not finish it.
 */
int kiln_store_job_heartbeat(struct kiln_store *st, int64_t id, const char *worker,
                             struct kiln_error **err);

/*
 * Finish Running job `id` as `phase` (Succeeded, Failed or Cancelled, else
 * -KILN_EINVAL) with finished_ms now and the given digest, URL and error
 * message (each may be NULL). When it Succeeded with an image URL, the URL
 * is added to the images as 'built' in the same transaction. A job that is
 * not Running is -KILN_ECONFLICT; an unknown one -KILN_ENOTFOUND.
 * Whatever worker runs it: for admin tools and tests; a worker uses
 * kiln_store_job_finish_as.
 */
int kiln_store_job_finish(struct kiln_store *st, int64_t id, enum kiln_job_phase phase,
                          const char *image_digest, const char *image_url,
                          const char *error_message, struct kiln_error **err);

/*
 * kiln_store_job_finish() by the worker that claimed the job: only when it
 * is Running under `worker` (non-empty). A job recovered since (its lease
 * expired) and maybe claimed by another worker is -KILN_ECONFLICT, and left
 * as it is: a worker can never overwrite a job that is no longer its own.
 */
int kiln_store_job_finish_as(struct kiln_store *st, int64_t id, const char *worker,
                             enum kiln_job_phase phase, const char *image_digest,
                             const char *image_url, const char *error_message,
                             struct kiln_error **err);

/* Results of kiln_store_job_request_cancel(). */
#define KILN_STORE_CANCELLED_NOW    1 /* it was Pending: now Cancelled */
#define KILN_STORE_CANCEL_REQUESTED 2 /* it is Running: cancel_requested set */

/*
 * Cancel job `id`: returns KILN_STORE_CANCELLED_NOW or
 * KILN_STORE_CANCEL_REQUESTED; -KILN_ECONFLICT when it is already final,
 * -KILN_ENOTFOUND when absent.
 */
int kiln_store_job_request_cancel(struct kiln_store *st, int64_t id, struct kiln_error **err);

/* 1 when a cancel of job `id` was requested, else 0; -KILN_ENOTFOUND when absent. */
int kiln_store_job_cancel_requested(struct kiln_store *st, int64_t id, struct kiln_error **err);

/*
 * Recover the Running jobs whose lease expired: those with heartbeat_ms
 * NULL (claimed before schema version 3) or older than `stale_before_ms`
 * (INT64_MAX: every Running job). Each becomes Failed with error message
 * 'interrupted' and finished_ms now, or, when `requeue`, Pending again
 * (started_ms, heartbeat_ms and worker cleared; attempt kept) except those
 * with a cancel requested, which become Cancelled. Returns how many jobs
 * were recovered. A job whose lease is renewed at the same moment is either
 * recovered (and the heartbeat returns 0) or not, never half.
 */
int kiln_store_recover(struct kiln_store *st, int64_t stale_before_ms, bool requeue,
                       struct kiln_error **err);

/*
 * kiln_store_recover() of every Running job of worker `worker` (non-empty),
 * whatever its lease: for a worker known to be dead (a process of this
 * host that is gone). Returns how many jobs were recovered.
 */
int kiln_store_recover_worker(struct kiln_store *st, const char *worker, bool requeue,
                              struct kiln_error **err);

/*
 * The names of the workers that have a Running job, each once, in byte
 * order, into *ret (caller releases; written only on success).
 */
int kiln_store_running_workers(struct kiln_store *st, struct kiln_strv *ret,
                               struct kiln_error **err);

/* The number of jobs in each phase (for /metrics), into ret_counts. */
int kiln_store_job_counts(struct kiln_store *st, int64_t ret_counts[KILN_JOB_PHASES],
                          struct kiln_error **err);

/*
 * Store (or replace) the final copy of the log of job `id`: `len` bytes of
 * `data` (any bytes, NUL included; data may be NULL when len is 0), at most
 * KILN_STORE_LOG_MAX (else -KILN_EINVAL: the caller keeps the end of a
 * longer log), and whether it was `truncated` (the beginning left out).
 * Its start offset is 0. The log goes with the job (deleting the spec
 * deletes it). Any job may have one, whatever its phase; a worker stores it
 * once the job is finished. It replaces a live copy. -KILN_ENOTFOUND when
 * the job does not exist.
 */
int kiln_store_job_log_put(struct kiln_store *st, int64_t id, const char *data, size_t len,
                           bool truncated, struct kiln_error **err);

/*
 * kiln_store_job_log_put() with the start offset: when `truncated`, `data`
 * begins with one line of kiln's own that is not part of the log (e.g.
 * "[log truncated: the first N bytes ...]\n"), and `start_offset` is where
 * the bytes after that line start in the whole log (N); otherwise it must
 * be 0 (else -KILN_EINVAL).
 */
int kiln_store_job_log_put_final(struct kiln_store *st, int64_t id, const char *data, size_t len,
                                 uint64_t start_offset, bool truncated, struct kiln_error **err);

/*
 * Store a live copy of the log of job `id` while it runs: `len` bytes of
 * `data` (at most KILN_STORE_LOG_MAX, else -KILN_EINVAL) found at
 * `start_offset` (at most INT64_MAX) in the whole log so far. Only while
 * the job is Running under `worker` (NULL: any worker), and never over a
 * final copy: returns 1 when stored, 0 when nothing was written (the job
 * is no longer Running there, or its final copy is stored).
 * -KILN_ENOTFOUND when the job does not exist.
 */
int kiln_store_job_log_put_live(struct kiln_store *st, int64_t id, const char *worker,
                                const char *data, size_t len, uint64_t start_offset,
                                struct kiln_error **err);

/*
 * The stored text of the log of job `id` (final or live, as it is): *ret
 * (the caller frees; always NUL-terminated after its *ret_len bytes) and
 * *ret_truncated (may be NULL). -KILN_ENOTFOUND when the job has no stored
 * log (or does not exist).
 */
int kiln_store_job_log_get(struct kiln_store *st, int64_t id, char **ret, size_t *ret_len,
                           bool *ret_truncated, struct kiln_error **err);

/* A stored copy of a job's log, as kiln_store_job_log_read() gives it. */
struct kiln_store_job_log {
    char *data; /* len bytes, then a NUL */
    size_t len;
    /* where the log's bytes in data start in the whole log: data[0] when not
       truncated; after data's first line (kiln's own) when truncated. A
       truncated final copy of schema v4 says 0 (not known) */
    uint64_t start_offset;
    bool truncated; /* data begins with a line of kiln's own: the beginning is left out */
    bool final;     /* written at the job's end; else a live copy of a running job */
    int64_t stored_ms;
};
void kiln_store_job_log_release(struct kiln_store_job_log *l);

/* The stored copy of job `id`'s log into *ret (caller releases); -KILN_ENOTFOUND as above. */
int kiln_store_job_log_read(struct kiln_store *st, int64_t id, struct kiln_store_job_log *ret,
                            struct kiln_error **err);

/* ---- secrets ---- */

struct kiln_store_secret {
    char *name;
    int64_t created_ms;
};
struct kiln_store_secret_list {
    struct kiln_store_secret *v; /* n entries, by name; NULL when n == 0 */
    size_t n;
};
void kiln_store_secret_list_release(struct kiln_store_secret_list *l);

/*
 * Store (or replace) pull secret `name` with a .dockerconfigjson text (not
 * checked here). Returns 1 when the name was new, 0 when it was replaced
 * (created_ms kept).
 */
int kiln_store_secret_put(struct kiln_store *st, const char *name, const char *dockerconfigjson,
                          struct kiln_error **err);
/* Names and creation times only: never the values. */
int kiln_store_secret_list(struct kiln_store *st, struct kiln_store_secret_list *ret,
                           struct kiln_error **err);
/* The value, for the engine; *ret is the caller's to free. -KILN_ENOTFOUND when absent. */
int kiln_store_secret_get_value(struct kiln_store *st, const char *name, char **ret,
                                struct kiln_error **err);
/* -KILN_ENOTFOUND when absent. */
int kiln_store_secret_delete(struct kiln_store *st, const char *name, struct kiln_error **err);

/* ---- images ---- */

enum kiln_image_source { KILN_IMAGE_BUILT, KILN_IMAGE_ADMIN };

/* "built", "admin". */
const char *kiln_image_source_name(enum kiln_image_source src);

struct kiln_store_image {
    char *url;
    enum kiln_image_source source;
    int64_t created_ms;
};
struct kiln_store_image_list {
    struct kiln_store_image *v; /* n entries, by URL; NULL when n == 0 */
    size_t n;
};
void kiln_store_image_list_release(struct kiln_store_image_list *l);

/* Add an image URL; returns 1 when new, 0 when already known (its source kept). */
int kiln_store_image_add(struct kiln_store *st, const char *url, enum kiln_image_source source,
                         struct kiln_error **err);
int kiln_store_image_list(struct kiln_store *st, struct kiln_store_image_list *ret,
                          struct kiln_error **err);

/* ---- settings ---- */

/* Returns 1 and *ret (caller frees) when `key` is set, else 0 and leaves *ret alone. */
int kiln_store_setting_get(struct kiln_store *st, const char *key, char **ret,
                           struct kiln_error **err);
/* Set `key` to `value`; a NULL value deletes the key. */
int kiln_store_setting_set(struct kiln_store *st, const char *key, const char *value,
                           struct kiln_error **err);

/*
 * ---- backends ----
 *
 * A backend implements these on its own state `impl`, then wraps them with
 * kiln_store_new(). The kiln_store_* wrappers have already checked the
 * arguments (non-NULL names, known phases, limit in 1..KILN_STORE_LIST_MAX,
 * a spec turned into JSON text and revision), and zeroed the out structs.
 * Same results and error codes as the wrappers, with messages that leave
 * out the "store: " the wrappers put in front. Every op must be thread-safe.
 */
struct kiln_store_ops {
    const char *name;
    void (*free)(void *impl);
    int (*schema_version)(void *impl, struct kiln_error **err);
    int (*check)(void *impl, struct kiln_error **err);

    int (*spec_put)(void *impl, const char *name, const char *spec_json, const char *revision,
                    enum kiln_store_put_mode mode, struct kiln_error **err);
    int (*spec_get)(void *impl, const char *name, struct kiln_store_spec *ret,
                    struct kiln_error **err);
    int (*spec_delete)(void *impl, const char *name, struct kiln_error **err);
    /* `like` is the LIKE pattern ('\' escapes) for name_contains; q->limit is set */
    int (*spec_list)(void *impl, const struct kiln_store_spec_query *q, const char *like,
                     struct kiln_store_spec_list *ret, struct kiln_error **err);

    int (*job_create)(void *impl, const char *spec_name, const char *revision,
                      const char *target_image, int64_t *ret_id, struct kiln_error **err);
    int (*job_get)(void *impl, int64_t id, struct kiln_store_job *ret, struct kiln_error **err);
    int (*job_list)(void *impl, const char *spec_name, size_t limit, size_t offset,
                    struct kiln_store_job_list *ret, struct kiln_error **err);
    int (*job_set_log_path)(void *impl, int64_t id, const char *log_path, struct kiln_error **err);
    int (*job_claim)(void *impl, const char *worker, struct kiln_store_job *ret,
                     struct kiln_error **err);
    /* worker: NULL for any worker */
    int (*job_finish)(void *impl, int64_t id, const char *worker, enum kiln_job_phase phase,
                      const char *image_digest, const char *image_url, const char *error_message,
                      struct kiln_error **err);
    int (*job_heartbeat)(void *impl, int64_t id, const char *worker, struct kiln_error **err);
    int (*job_request_cancel)(void *impl, int64_t id, struct kiln_error **err);
    int (*job_cancel_requested)(void *impl, int64_t id, struct kiln_error **err);
    /* worker: NULL for any worker */
    int (*recover)(void *impl, int64_t stale_before_ms, const char *worker, bool requeue,
                   struct kiln_error **err);
    int (*running_workers)(void *impl, struct kiln_strv *ret, struct kiln_error **err);
    int (*job_counts)(void *impl, int64_t ret_counts[KILN_JOB_PHASES], struct kiln_error **err);
    /* len <= KILN_STORE_LOG_MAX; data non-NULL (maybe ""); start_offset <= INT64_MAX.
     * final: store (or replace) the final copy, returns 0. Else a live copy
     * (truncated false), only while the job is Running under `worker` (NULL:
     * any) and over no final copy: returns 1 when stored, else 0. */
    int (*job_log_put)(void *impl, int64_t id, const char *worker, const char *data, size_t len,
                       uint64_t start_offset, bool truncated, bool final, struct kiln_error **err);
    /* ret->data NUL-terminated after ret->len bytes */
    int (*job_log_get)(void *impl, int64_t id, struct kiln_store_job_log *ret,
                       struct kiln_error **err);

    int (*secret_put)(void *impl, const char *name, const char *value, struct kiln_error **err);
    int (*secret_list)(void *impl, struct kiln_store_secret_list *ret, struct kiln_error **err);
    int (*secret_get_value)(void *impl, const char *name, char **ret, struct kiln_error **err);
    int (*secret_delete)(void *impl, const char *name, struct kiln_error **err);

    int (*image_add)(void *impl, const char *url, enum kiln_image_source source,
                     struct kiln_error **err);
    int (*image_list)(void *impl, struct kiln_store_image_list *ret, struct kiln_error **err);

    int (*setting_get)(void *impl, const char *key, char **ret, struct kiln_error **err);
    int (*setting_set)(void *impl, const char *key, const char *value, struct kiln_error **err);
};

/* Wrap a backend's state; the store owns `impl` (ops->free frees it). */
struct kiln_store *kiln_store_new(const struct kiln_store_ops *ops, void *impl);

/*
 * Shared helpers for backends.
 * kiln_store_like_contains: the LIKE pattern matching `s` as a substring,
 * with '\', '%' and '_' escaped by '\' (use ESCAPE '\'); the caller frees it.
 * kiln_store_now_ms: the options' clock, or CLOCK_REALTIME in ms.
 * kiln_store_errctx: when r < 0 and *err is set, prefix the message with the
 * formatted context; returns r (its code kept even when err is NULL).
 */
char *kiln_store_like_contains(const char *s);
int64_t kiln_store_now_ms(const struct kiln_store_options *opts);
int kiln_store_errctx(int r, struct kiln_error **err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
