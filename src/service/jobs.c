/* The build workers of `kiln serve`: claim jobs, run the engine, write logs, finish jobs. */
#include "util/common.h"
#include "service/jobs.h"

#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "oci/reference.h"
#include "registry/auth.h"
#include "spec/revision.h"
#include "util/base64.h"
#include "util/buf.h"
#include "util/diag.h"
#include "util/fs.h"
#include "util/log.h"
#include "util/strv.h"

#define DEFAULT_TIMEOUT_MS (2L * 3600 * 1000)
/* How often the supervisor looks at the store's cancel flags and the clocks (at most). */
#define TICK_MS 1000
/* How often an idle worker looks for jobs queued by another process. */
#define IDLE_POLL_MS 2000
/* The longest log line written (longer lines are cut). */
#define LOG_LINE_MAX (64 * 1024)

/* CANCEL_LOST (the job is no longer ours: its lease expired) overrides the others. */
enum cancel_reason { CANCEL_NONE, CANCEL_USER, CANCEL_TIMEOUT, CANCEL_STOP, CANCEL_LOST };

struct worker {
    struct kiln_jobs *j;
    pthread_t thread;
    bool started;
    char *name;
    /* guarded by j->mu */
    int64_t job_id;      /* 0: idle */
    int64_t job_started; /* monotonic ms */
    int64_t last_beat;   /* monotonic ms of the claim or the last lease renewal */
    bool finishing;      /* the result is being recorded: renewals no longer count */
    /* the supervisor's own */
    bool beat_failing;
    int64_t live_job;   /* the job of the live log copy below; 0: none */
    uint64_t live_size; /* the log's size at its last live copy */
    int64_t live_next;  /* monotonic ms of the next look at the log */
    bool live_warned;   /* a live copy failed: said once per job */
    /* read by the engine's threads without the lock */
    atomic_int cancel; /* enum cancel_reason: the first reason wins (but CANCEL_LOST) */
};

struct kiln_jobs {
    struct kiln_store *st;
    char *data_dir;
    char *logs_dir;
    long timeout_ms;
    long beat_ms;                   /* renew a running job's lease this often */
    long lease_ms;                  /* a lease not renewed this long has expired */
    bool requeue;                   /* recovered jobs: Pending again, else Failed 'interrupted' */
    struct kiln_registry_config rc; /* strings owned; rc.push borrowed */
    struct kiln_build_options tmpl; /* pointers borrowed from the caller */
    bool have_tmpl;

    pthread_mutex_t mu;
    pthread_cond_t wake; /* workers: a job was queued, or stop */
    pthread_cond_t idle; /* kiln_jobs_stop: a worker finished a job */
    pthread_cond_t tick; /* the supervisor: stop */
    bool stopping;
    bool supervisor_stop;
    int busy;
    pthread_t supervisor;
    bool supervisor_started;

    int n;
    struct worker *w;

    /* stats, guarded by mu */
    uint64_t builds;
    double build_seconds_sum;
    uint64_t buckets[8];
    uint64_t pushed_bytes;
};

static const double bucket_bounds[8] = {10, 30, 60, 120, 300, 600, 1800, 3600};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The store's clock (CLOCK_REALTIME): leases are compared across processes. */
static int64_t real_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void deadline_after(struct timespec *ts, long ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

static void cond_init_mono(pthread_cond_t *c)
{
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(c, &a);
    pthread_condattr_destroy(&a);
}

char *kiln_jobs_log_path(const char *data_dir, int64_t id)
{
    return kiln_xasprintf("%s/logs/%" PRId64 ".log", data_dir, id);
}

char *kiln_jobs_target(const struct kiln_registry_config *rc, const char *name,
                       const char *revision)
{
    if (!rc || !rc->configured || !name || !revision)
        return NULL;
    char *ret = NULL;
    if (kiln_spec_target(name, revision, rc->repo_prefix, rc->push_repo, &ret, NULL) < 0)
        return NULL;
    return ret;
}

/* ---- the job's log in the store ---- */

/* Read up to `len` bytes at `off`: the number read (short at the end of the file), or -1. */
static ssize_t pread_full(int fd, char *buf, size_t len, off_t off)
{
    size_t got = 0;
    while (got < len) {
        ssize_t n = pread(fd, buf + got, len - got, off + (off_t)got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        if (n == 0)
            break;
        got += (size_t)n;
    }
    return (ssize_t)got;
}

/* Open the log file `path` of job `id` for reading: the fd and *ret_size, or < 0. */
static int open_log_file(int64_t id, const char *path, uint64_t *ret_size, struct kiln_error **err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);
    if (fd < 0)
        return kiln_error_set(err, errno == ENOENT ? KILN_ENOTFOUND : KILN_EIO, errno,
                              "job %" PRId64 ": read log '%s'", id, path);
    struct stat sb;
    if (fstat(fd, &sb) < 0) {
        int e = errno;
        close(fd);
        return kiln_error_set(err, KILN_EIO, e, "job %" PRId64 ": stat log '%s'", id, path);
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return kiln_error_set(err, KILN_EIO, 0, "job %" PRId64 ": log '%s' is not a regular file",
                              id, path);
    }
    *ret_size = (uint64_t)sb.st_size;
    return fd;
}

/* The offset in `p` (n bytes) after its first newline when a line is not too long, else 0. */
static size_t line_start(const char *p, size_t n)
{
    const char *nl = memchr(p, '\n', n < LOG_LINE_MAX * 2 ? n : LOG_LINE_MAX * 2);
    return nl ? (size_t)(nl - p) + 1 : 0;
}

int kiln_jobs_store_log(struct kiln_store *st, int64_t id, const char *path, const char *host,
                        struct kiln_error **err)
{
    char hostname[256] = "";
    if (!host) {
        if (gethostname(hostname, sizeof(hostname) - 1) < 0 || !hostname[0])
            snprintf(hostname, sizeof(hostname), "this host");
        hostname[sizeof(hostname) - 1] = '\0';
        host = hostname;
    }
    uint64_t size = 0;
    int fd = open_log_file(id, path, &size, err);
    if (fd < 0)
        return fd;
    struct kiln_buf b = KILN_BUF_INIT;
    bool truncated = size > KILN_STORE_LOG_MAX;
    uint64_t start = 0;
    int r = 0;
    if (!truncated) {
        kiln_buf_grow(&b, (size_t)size + 1);
        ssize_t n = pread_full(fd, b.buf, (size_t)size, 0);
        if (n < 0)
            r = kiln_error_set(err, KILN_EIO, errno, "job %" PRId64 ": read log '%s'", id, path);
        else
            b.len = (size_t)n;
        b.buf[b.len] = '\0';
    } else {
        /* the first line, sized for the most bytes it can name */
        _cleanup_free_ char *widest =
            kiln_xasprintf("[log truncated: the first %" PRIu64 " bytes are only on %s in %s]\n",
                           size, host, path);
        size_t room = KILN_STORE_LOG_MAX - strlen(widest);
        uint64_t off = size - room;
        _cleanup_free_ char *tail = kiln_xmalloc(room);
        ssize_t n = pread_full(fd, tail, room, (off_t)off);
        if (n < 0) {
            r = kiln_error_set(err, KILN_EIO, errno, "job %" PRId64 ": read log '%s'", id, path);
        } else {
            /* start at a line: after the first newline (when a line is not too long) */
            size_t skip = line_start(tail, (size_t)n);
            start = off + skip;
            kiln_buf_addf(&b, "[log truncated: the first %" PRIu64 " bytes are only on %s in %s]\n",
                          start, host, path);
            kiln_buf_add(&b, tail + skip, (size_t)n - skip);
        }
    }
    close(fd);
    if (r >= 0)
        r = kiln_store_job_log_put_final(st, id, b.buf ? b.buf : "", b.len, start, truncated, err);
    kiln_buf_release(&b);
    return r;
}

int kiln_jobs_store_live_log(struct kiln_store *st, int64_t id, const char *worker,
                             const char *path, uint64_t *ret_size, struct kiln_error **err)
{
    uint64_t size = 0;
    int fd = open_log_file(id, path, &size, err);
    if (fd < 0)
        return fd;
    uint64_t off = size > KILN_JOBS_LIVE_LOG_MAX ? size - KILN_JOBS_LIVE_LOG_MAX : 0;
    size_t want = (size_t)(size - off);
    _cleanup_free_ char *buf = kiln_xmalloc(want + 1);
    ssize_t n = pread_full(fd, buf, want, (off_t)off);
    int e = errno;
    close(fd);
    if (n < 0)
        return kiln_error_set(err, KILN_EIO, e, "job %" PRId64 ": read log '%s'", id, path);
    /* the part of a line before the window is left out: start at a line */
    size_t skip = off > 0 ? line_start(buf, (size_t)n) : 0;
    int r =
        kiln_store_job_log_put_live(st, id, worker, buf + skip, (size_t)n - skip, off + skip, err);
    if (r >= 0 && ret_size)
        *ret_size = off + (uint64_t)n;
    return r;
}

/* ---- the job's log file ---- */

struct joblog {
    int fd;
    pthread_mutex_t mu;
    struct kiln_strv secrets; /* strings never written: replaced by "***" */
    int64_t id;
};

static void add_secret(struct joblog *l, const char *s)
{
    if (s && strlen(s) >= 3)
        kiln_strv_push(&l->secrets, s);
}

static void add_cred_secrets(struct joblog *l, const struct kiln_cred *c)
{
    if (!c)
        return;
    add_secret(l, c->password);
    add_secret(l, c->identity_token);
    if (c->username || c->password) {
        _cleanup_free_ char *up =
            kiln_xasprintf("%s:%s", c->username ? c->username : "", c->password ? c->password : "");
        _cleanup_free_ char *b64 = kiln_base64_encode(up, strlen(up));
        if (c->password)
            add_secret(l, b64);
        explicit_bzero(up, strlen(up));
    }
}

/* Append `s` to b with every secret replaced. */
static void add_redacted(struct kiln_buf *b, const struct kiln_strv *secrets, const char *s,
                         size_t len)
{
    size_t i = 0;
    while (i < len) {
        size_t hit = 0;
        for (size_t k = 0; k < secrets->n; k++) {
            size_t sl = strlen(secrets->v[k]);
            if (sl <= len - i && memcmp(s + i, secrets->v[k], sl) == 0 && sl > hit)
                hit = sl;
        }
        if (hit) {
            kiln_buf_adds(b, "***");
            i += hit;
        } else {
            kiln_buf_addch(b, s[i]);
            i++;
        }
    }
}

static void stamp_now(char out[32])
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* Write one line per '\n'-separated piece of `line`, each "TIME<mark>piece". */
static void joblog_write(struct joblog *l, const char *mark, const char *line, size_t len)
{
    if (l->fd < 0)
        return;
    char stamp[32];
    stamp_now(stamp);
    struct kiln_buf b = KILN_BUF_INIT;
    while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
        len--;
    size_t i = 0;
    do {
        const char *nl = memchr(line + i, '\n', len - i);
        size_t n = nl ? (size_t)(nl - (line + i)) : len - i;
        size_t cut = n > LOG_LINE_MAX ? LOG_LINE_MAX : n;
        size_t e = cut;
        if (e > 0 && line[i + e - 1] == '\r')
            e--;
        kiln_buf_adds(&b, stamp);
        kiln_buf_adds(&b, mark);
        add_redacted(&b, &l->secrets, line + i, e);
        if (cut < n)
            kiln_buf_adds(&b, " [line cut]");
        kiln_buf_addch(&b, '\n');
        i += n + (nl ? 1 : 0);
    } while (i < len);
    pthread_mutex_lock(&l->mu);
    (void)kiln_fs_write_all(l->fd, b.buf, b.len);
    pthread_mutex_unlock(&l->mu);
    kiln_buf_release(&b);
}

static void joblog_printf(struct joblog *l, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void joblog_printf(struct joblog *l, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    int n = vasprintf(&s, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    joblog_write(l, " ", s, (size_t)n);
    free(s);
}

static void on_build_log(void *ud, enum kiln_build_log kind, const char *line, size_t len)
{
    struct joblog *l = ud;
    const char *mark = kind == KILN_BUILD_LOG_STDOUT   ? " | "
                       : kind == KILN_BUILD_LOG_STDERR ? " ! "
                       : kind == KILN_BUILD_LOG_WARN   ? " warning: "
                                                       : " ";
    joblog_write(l, mark, line, len);
}

/* The same text as a one-line message with the secrets replaced (caller frees). */
static char *redact(const struct joblog *l, const char *s)
{
    struct kiln_buf b = KILN_BUF_INIT;
    add_redacted(&b, &l->secrets, s, strlen(s));
    return kiln_buf_detach(&b, NULL);
}

/* ---- one job ---- */

struct build_ud {
    struct worker *w;
    struct joblog *log;
};

static int job_cancelled(void *ud)
{
    struct build_ud *b = ud;
    return atomic_load(&b->w->cancel) != CANCEL_NONE;
}

static void job_on_log(void *ud, enum kiln_build_log kind, const char *line, size_t len)
{
    struct build_ud *b = ud;
    on_build_log(b->log, kind, line, len);
}

static bool same_host(const char *a, const char *b)
{
    return a && b && strcasecmp(a, b) == 0;
}

/*
 * Credentials for the base image: the spec's pull secret (a dockerconfigjson)
 * looked up for the base's registry host; without one, the push credentials
 * when the base lives on the push registry.
 */
static int base_credentials(struct kiln_jobs *j, const struct kiln_spec *s, struct joblog *l,
                            struct kiln_cred *ret, struct kiln_error **err)
{
    _cleanup_(kiln_ref_release) struct kiln_ref r = KILN_REF_INIT;
    int rc = kiln_ref_parse_normalized(s->base_image, &r, err);
    if (rc < 0)
        return kiln_error_prefix(err, "base image");
    if (s->pull_secret && s->pull_secret[0]) {
        char *value = NULL;
        rc = kiln_store_secret_get_value(j->st, s->pull_secret, &value, err);
        if (rc == -KILN_ENOTFOUND)
            return kiln_error_set(err, KILN_ENOTFOUND, 0, "pull secret '%s' not found",
                                  s->pull_secret);
        if (rc < 0)
            return rc;
        size_t vlen = strlen(value);
        rc = kiln_auth_config_lookup(value, vlen, r.domain, ret, err);
        explicit_bzero(value, vlen);
        free(value);
        if (rc < 0)
            return kiln_error_prefix(err, "pull secret '%s'", s->pull_secret);
        if (rc == 0) {
            joblog_printf(l,
                          "warning: pull secret '%s' holds no credentials for '%s': pulling "
                          "anonymously",
                          s->pull_secret, r.domain);
            return 0;
        }
        add_cred_secrets(l, ret);
        joblog_printf(l, "pull secret '%s': credentials for '%s'", s->pull_secret, r.domain);
        return 0;
    }
    if (j->rc.configured && j->rc.push && j->rc.push->cred && kiln_cred_present(j->rc.push->cred) &&
        same_host(j->rc.endpoint, r.domain)) {
        const struct kiln_cred *pc = j->rc.push->cred;
        ret->username = pc->username ? kiln_xstrdup(pc->username) : NULL;
        ret->password = pc->password ? kiln_xstrdup(pc->password) : NULL;
        ret->identity_token = pc->identity_token ? kiln_xstrdup(pc->identity_token) : NULL;
    }
    return 0;
}

static void format_secs(char out[32], long ms)
{
    if (ms % 1000 == 0)
        snprintf(out, 32, "%ld s", ms / 1000);
    else
        snprintf(out, 32, "%.1f s", (double)ms / 1000.0);
}

static void record_stats(struct kiln_jobs *j, double secs, uint64_t pushed)
{
    pthread_mutex_lock(&j->mu);
    j->builds++;
    j->build_seconds_sum += secs;
    for (size_t i = 0; i < KILN_ARRAY_SIZE(bucket_bounds); i++)
        if (secs <= bucket_bounds[i])
            j->buckets[i]++;
    j->pushed_bytes += pushed;
    pthread_mutex_unlock(&j->mu);
}

static void run_job(struct worker *w, struct kiln_store_job *job)
{
    struct kiln_jobs *j = w->j;
    int64_t t0 = mono_ms();
    struct joblog l = {.fd = -1, .secrets = KILN_STRV_INIT, .id = job->id};
    pthread_mutex_init(&l.mu, NULL);
    _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
    _cleanup_(kiln_spec_freep) struct kiln_spec *s = NULL;
    _cleanup_free_ char *path = kiln_jobs_log_path(j->data_dir, job->id);
    _cleanup_free_ char *target = NULL;
    _cleanup_free_ char *fail = NULL; /* a failure before the build */
    struct kiln_cred base_cred = KILN_CRED_INIT;
    struct kiln_build_result res;
    memset(&res, 0, sizeof(res));
    int rc = 0;

    if (j->rc.push)
        add_cred_secrets(&l, j->rc.push->cred);
    l.fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0640);
    if (l.fd < 0)
        kiln_log(KILN_LOG_WARN, "job %" PRId64 ": cannot open log file '%s': %s", job->id, path,
                 strerror(errno));
    else if (kiln_store_job_set_log_path(j->st, job->id, path, &err) < 0) {
        kiln_log(KILN_LOG_WARN, "job %" PRId64 ": %s", job->id, err->msg);
        kiln_error_free(TAKE_PTR(err));
    }
    joblog_printf(&l, "job %" PRId64 ": building spec '%s' revision %s (attempt %d, worker %s)",
                  job->id, job->spec_name, job->revision, job->attempt, w->name);
    kiln_log(KILN_LOG_INFO, "job %" PRId64 " (%s-%s): Running on %s", job->id, job->spec_name,
             job->revision, w->name);

    /* the frozen spec */
    json_error_t jerr;
    json_t *root = job->spec_json ? json_loads(job->spec_json, 0, &jerr) : NULL;
    struct kiln_diags diags = KILN_DIAGS_INIT;
    if (!root) {
        fail = kiln_xstrdup("the job's spec is not valid JSON");
    } else if (kiln_spec_from_json(root, &s, &diags, &err) < 0 ||
               kiln_spec_validate(s, &diags) > 0) {
        if (diags.n)
            kiln_diags_to_error(&diags, &err);
        fail = kiln_xasprintf("invalid spec: %s", err ? err->msg : "unknown problem");
    }
    json_decref(root);
    kiln_diags_release(&diags);

    if (!fail) {
        target = job->target_image && job->target_image[0]
                     ? kiln_xstrdup(job->target_image)
                     : kiln_jobs_target(&j->rc, job->spec_name, job->revision);
        if (!target)
            fail = kiln_xstrdup("no target image: image registry not found");
    }
    if (!fail && base_credentials(j, s, &l, &base_cred, &err) < 0)
        fail = kiln_xstrdup(err->msg);

    if (!fail) {
        struct kiln_build_options bo;
        if (j->have_tmpl) {
            bo = j->tmpl;
        } else {
            memset(&bo, 0, sizeof(bo));
            bo.format = KILN_FORMAT_DOCKER;
            bo.source_date_epoch = -1;
        }
        struct kiln_registry_options base_ro;
        if (bo.base_registry)
            base_ro = *bo.base_registry;
        else
            memset(&base_ro, 0, sizeof(base_ro));
        base_ro.cred = kiln_cred_present(&base_cred) ? &base_cred : NULL;
        struct build_ud ud = {.w = w, .log = &l};
        bo.data_dir = j->data_dir;
        bo.target = target;
        bo.base_registry = &base_ro;
        bo.push_registry = j->rc.push;
        bo.cancelled = job_cancelled;
        bo.on_log = job_on_log;
        bo.userdata = &ud;
        joblog_printf(&l, "base image %s, target %s", s->base_image, target);
        kiln_error_free(TAKE_PTR(err));
        rc = kiln_build_run(s, &bo, &res, &err);
    }

    double secs = (double)(mono_ms() - t0) / 1000.0;
    int why = atomic_load(&w->cancel);
    enum kiln_job_phase phase;
    _cleanup_free_ char *msg = NULL;
    _cleanup_free_ char *url = NULL;
    const char *digest = NULL;
    if (fail) {
        phase = KILN_JOB_FAILED;
        msg = redact(&l, fail);
    } else if (rc >= 0) {
        phase = KILN_JOB_SUCCEEDED;
        url = kiln_xstrdup(target);
        digest = res.manifest_digest;
    } else if (why == CANCEL_TIMEOUT) {
        char t[32];
        format_secs(t, j->timeout_ms);
        phase = KILN_JOB_FAILED;
        msg = kiln_xasprintf("timed out after %s", t);
    } else if (why == CANCEL_USER) {
        phase = KILN_JOB_CANCELLED;
        msg = kiln_xstrdup("cancelled");
    } else if (why == CANCEL_STOP) {
        phase = KILN_JOB_CANCELLED;
        msg = kiln_xstrdup("kiln serve stopped");
    } else if (why == CANCEL_LOST) {
        phase = KILN_JOB_CANCELLED;
        msg = kiln_xstrdup("the job's lease expired: it was recovered by another kiln serve");
    } else {
        phase = KILN_JOB_FAILED;
        msg = redact(&l, err && err->msg ? err->msg : "build failed");
    }

    if (phase == KILN_JOB_SUCCEEDED) {
        joblog_printf(&l,
                      "job %" PRId64 ": Succeeded in %.1f s: %s@%s (%zu steps run, %zu cached, "
                      "%" PRIu64 " bytes pushed)",
                      job->id, secs, url, digest, res.steps_run, res.steps_cached,
                      res.pushed_bytes);
    } else {
        joblog_printf(&l, "job %" PRId64 ": %s after %.1f s: %s", job->id,
                      kiln_job_phase_name(phase), secs, msg);
    }
    if (l.fd >= 0) {
        (void)fsync(l.fd);
        close(l.fd);
        l.fd = -1;
    }

    kiln_error_free(TAKE_PTR(err));
    pthread_mutex_lock(&j->mu);
    w->finishing = true;
    /* the supervisor may have found the job lost since the build ended */
    bool lost = atomic_load(&w->cancel) == CANCEL_LOST;
    pthread_mutex_unlock(&j->mu);
    /* A lost job is not ours: it may already run elsewhere. finish_as refuses it anyway. */
    int r = lost ? -KILN_ECONFLICT
                 : kiln_store_job_finish_as(j->st, job->id, w->name, phase, digest, url, msg, &err);
    if (r == -KILN_ENOTFOUND)
        kiln_log(KILN_LOG_INFO, "job %" PRId64 ": deleted with its spec", job->id);
    else if (r == -KILN_ECONFLICT)
        kiln_log(KILN_LOG_WARN,
                 "job %" PRId64 ": no longer ours (its lease expired and it was recovered): "
                 "its result (%s) is not recorded%s%s",
                 job->id, kiln_job_phase_name(phase), err ? ": " : "", err ? err->msg : "");
    else if (r < 0)
        kiln_log(KILN_LOG_WARN, "job %" PRId64 ": cannot record the result: %s", job->id, err->msg);
    if (r >= 0) {
        /* a copy of the log for every kiln serve on the database: a failure is only a warning */
        kiln_error_free(TAKE_PTR(err));
        int lr = kiln_jobs_store_log(j->st, job->id, path, NULL, &err);
        if (lr < 0)
            kiln_log(KILN_LOG_WARN, "job %" PRId64 ": cannot keep its log in the store: %s",
                     job->id, err ? err->msg : "?");
    }
    if (r == -KILN_ECONFLICT)
        kiln_log(KILN_LOG_INFO, "job %" PRId64 " (%s-%s): dropped after %.1f s", job->id,
                 job->spec_name, job->revision, secs);
    else if (phase == KILN_JOB_SUCCEEDED)
        kiln_log(KILN_LOG_INFO, "job %" PRId64 " (%s-%s): Succeeded in %.1f s: %s@%s", job->id,
                 job->spec_name, job->revision, secs, url, digest);
    else
        kiln_log(KILN_LOG_INFO, "job %" PRId64 " (%s-%s): %s after %.1f s: %s", job->id,
                 job->spec_name, job->revision, kiln_job_phase_name(phase), secs, msg);
    record_stats(j, secs, res.pushed_bytes);

    kiln_cred_release(&base_cred);
    for (size_t i = 0; i < l.secrets.n; i++)
        explicit_bzero(l.secrets.v[i], strlen(l.secrets.v[i]));
    kiln_strv_release(&l.secrets);
    pthread_mutex_destroy(&l.mu);
}

/* ---- threads ---- */

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct kiln_jobs *j = w->j;
    for (;;) {
        pthread_mutex_lock(&j->mu);
        bool stop = j->stopping;
        pthread_mutex_unlock(&j->mu);
        if (stop)
            break;

        struct kiln_store_job job;
        memset(&job, 0, sizeof(job));
        int got = 0;
        if (j->rc.configured) {
            _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
            got = kiln_store_job_claim(j->st, w->name, &job, &err);
            if (got < 0)
                kiln_log(KILN_LOG_WARN, "%s: claim: %s", w->name, err->msg);
        }
        if (got > 0) {
            pthread_mutex_lock(&j->mu);
            atomic_store(&w->cancel, CANCEL_NONE);
            w->job_id = job.id;
            w->job_started = mono_ms();
            w->last_beat = w->job_started; /* the claim set the heartbeat */
            w->finishing = false;
            j->busy++;
            /* stopping began between the check and the claim: do not start it */
            if (j->stopping)
                atomic_store(&w->cancel, CANCEL_STOP);
            pthread_mutex_unlock(&j->mu);

            run_job(w, &job);

            pthread_mutex_lock(&j->mu);
            w->job_id = 0;
            w->finishing = false;
            j->busy--;
            atomic_store(&w->cancel, CANCEL_NONE);
            pthread_cond_broadcast(&j->idle);
            pthread_mutex_unlock(&j->mu);
            kiln_store_job_release(&job);
            continue; /* look for the next one at once */
        }

        pthread_mutex_lock(&j->mu);
        if (!j->stopping) {
            struct timespec ts;
            deadline_after(&ts, IDLE_POLL_MS);
            pthread_cond_timedwait(&j->wake, &j->mu, &ts);
        }
        pthread_mutex_unlock(&j->mu);
    }
    return NULL;
}

static bool try_cancel(struct worker *w, int reason)
{
    int none = CANCEL_NONE;
    return atomic_compare_exchange_strong(&w->cancel, &none, reason);
}

/*
 * Renew the lease of job `id` run by `w` (without j->mu held). When the job
 * is no longer ours, cancel the build (CANCEL_LOST: it is not finished).
 */
static void renew_lease(struct kiln_jobs *j, struct worker *w, int64_t id, int64_t now)
{
    _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
    int r = kiln_store_job_heartbeat(j->st, id, w->name, &err);
    if (r < 0) {
        /* retried at the next tick; said once */
        if (!w->beat_failing)
            kiln_log(KILN_LOG_WARN, "job %" PRId64 ": cannot renew the lease: %s", id, err->msg);
        w->beat_failing = true;
        return;
    }
    if (w->beat_failing)
        kiln_log(KILN_LOG_INFO, "job %" PRId64 ": lease renewed again", id);
    w->beat_failing = false;
    pthread_mutex_lock(&j->mu);
    if (w->job_id == id && !w->finishing) {
        if (r == 1)
            w->last_beat = now;
        else if (atomic_exchange(&w->cancel, CANCEL_LOST) != CANCEL_LOST)
            kiln_log(KILN_LOG_WARN,
                     "job %" PRId64 ": no longer Running on %s (its lease expired and another "
                     "kiln serve recovered it, or it was deleted): stopping the build",
                     id, w->name);
    }
    pthread_mutex_unlock(&j->mu);
}

/*
 * Keep the live copy of job `id`'s log (run by `w`) in the store, every
 * KILN_JOBS_LIVE_LOG_SYNC_MS when the file grew (without j->mu held). A
 * failure is a warning, once per job; it never touches the build.
 */
static void sync_live_log(struct kiln_jobs *j, struct worker *w, int64_t id, int64_t now)
{
    if (w->live_job != id) {
        w->live_job = id;
        w->live_size = 0;
        w->live_next = now;
        w->live_warned = false;
    }
    if (now < w->live_next)
        return;
    w->live_next = now + KILN_JOBS_LIVE_LOG_SYNC_MS;
    _cleanup_free_ char *path = kiln_jobs_log_path(j->data_dir, id);
    struct stat sb;
    if (stat(path, &sb) < 0 || (uint64_t)sb.st_size == w->live_size)
        return; /* no log (yet), or nothing new */
    _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
    uint64_t size = 0;
    int r = kiln_jobs_store_live_log(j->st, id, w->name, path, &size, &err);
    if (r >= 0) {
        w->live_size = size;
        return;
    }
    if (!w->live_warned)
        kiln_log(KILN_LOG_WARN,
                 "job %" PRId64 ": cannot keep a live copy of its log in the store: %s", id,
                 err ? err->msg : "?");
    w->live_warned = true;
}

/* Recover the jobs whose lease expired (a kiln serve that died elsewhere). */
static void sweep_leases(struct kiln_jobs *j)
{
    _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
    int r = kiln_store_recover(j->st, real_ms() - j->lease_ms, j->requeue, &err);
    if (r < 0) {
        kiln_log(KILN_LOG_WARN, "recover jobs whose lease expired: %s", err->msg);
        return;
    }
    if (r == 0)
        return;
    kiln_log(KILN_LOG_WARN, "%d job%s whose lease expired (its kiln serve is gone): %s", r,
             r == 1 ? "" : "s", j->requeue ? "queued again" : "failed as 'interrupted'");
    if (j->requeue)
        kiln_jobs_wake(j);
}

/*
 * Every second (or beat_ms when shorter): cancels asked for in the store
 * (maybe by another process), timeouts, lease renewals every beat_ms, live
 * copies of the running jobs' logs every KILN_JOBS_LIVE_LOG_SYNC_MS, and
 * every lease_ms / 2 the sweep of expired leases. With no workers, only the
 * sweep: the supervisor wakes for it alone.
 */
static void *supervisor_main(void *arg)
{
    struct kiln_jobs *j = arg;
    size_t n = (size_t)j->n;
    int64_t *ids = n ? kiln_xcalloc(n, sizeof(*ids)) : NULL;
    int64_t *beats = n ? kiln_xcalloc(n, sizeof(*beats)) : NULL;
    int64_t *lives = n ? kiln_xcalloc(n, sizeof(*lives)) : NULL;
    long tick = j->n == 0 ? LONG_MAX : j->beat_ms < TICK_MS ? j->beat_ms : TICK_MS;
    int64_t next_sweep = mono_ms() + j->lease_ms / 2;
    pthread_mutex_lock(&j->mu);
    while (!j->supervisor_stop) {
        /* wake at the next tick, or sooner when a build's time is up before it */
        long wait_ms = tick;
        int64_t before = mono_ms();
        for (int i = 0; i < j->n; i++) {
            struct worker *w = &j->w[i];
            if (!w->job_id || atomic_load(&w->cancel) != CANCEL_NONE)
                continue;
            int64_t left = w->job_started + j->timeout_ms - before;
            if (left < wait_ms)
                wait_ms = left > 0 ? (long)left : 0;
        }
        if (next_sweep - before < wait_ms)
            wait_ms = next_sweep > before ? (long)(next_sweep - before) : 0;
        struct timespec ts;
        deadline_after(&ts, wait_ms);
        pthread_cond_timedwait(&j->tick, &j->mu, &ts);
        if (j->supervisor_stop)
            break;
        int64_t now = mono_ms();
        for (int i = 0; i < j->n; i++) {
            struct worker *w = &j->w[i];
            ids[i] = beats[i] = lives[i] = 0;
            if (!w->job_id)
                continue;
            int why = atomic_load(&w->cancel);
            /* the log of a build still going (even a cancelled one), until the final copy */
            if (why != CANCEL_LOST && !w->finishing)
                lives[i] = w->job_id;
            /* a cancelled build still holds its job until it is finished */
            if (why != CANCEL_LOST && !w->finishing && now - w->last_beat >= j->beat_ms)
                beats[i] = w->job_id;
            if (why != CANCEL_NONE)
                continue;
            if (now - w->job_started >= j->timeout_ms) {
                if (try_cancel(w, CANCEL_TIMEOUT))
                    kiln_log(KILN_LOG_INFO, "job %" PRId64 ": timed out, cancelling", w->job_id);
                continue;
            }
            ids[i] = w->job_id;
        }
        pthread_mutex_unlock(&j->mu);
        for (int i = 0; i < j->n; i++)
            if (beats[i])
                renew_lease(j, &j->w[i], beats[i], now);
        for (int i = 0; i < j->n; i++)
            if (lives[i])
                sync_live_log(j, &j->w[i], lives[i], now);
        for (int i = 0; i < j->n; i++) {
            if (!ids[i])
                continue;
            int r = kiln_store_job_cancel_requested(j->st, ids[i], NULL);
            if (r == 1 || r == -KILN_ENOTFOUND) {
                pthread_mutex_lock(&j->mu);
                if (j->w[i].job_id == ids[i] && try_cancel(&j->w[i], CANCEL_USER))
                    kiln_log(KILN_LOG_INFO, "job %" PRId64 ": %s", ids[i],
                             r == 1 ? "cancel requested" : "job deleted, cancelling");
                pthread_mutex_unlock(&j->mu);
            }
        }
        if (now >= next_sweep) {
            next_sweep = now + j->lease_ms / 2;
            sweep_leases(j);
        }
        pthread_mutex_lock(&j->mu);
    }
    pthread_mutex_unlock(&j->mu);
    free(ids);
    free(beats);
    free(lives);
    return NULL;
}

static void jobs_free(struct kiln_jobs *j)
{
    if (!j)
        return;
    for (int i = 0; i < j->n; i++)
        free(j->w[i].name);
    free(j->w);
    free(j->data_dir);
    free(j->logs_dir);
    free((char *)j->rc.endpoint);
    free((char *)j->rc.repo_prefix);
    free((char *)j->rc.push_repo);
    pthread_cond_destroy(&j->wake);
    pthread_cond_destroy(&j->idle);
    pthread_cond_destroy(&j->tick);
    pthread_mutex_destroy(&j->mu);
    free(j);
}

static char *dup_or_null(const char *s)
{
    return s ? kiln_xstrdup(s) : NULL;
}

/* "<pid>" or "<pid>/<n>" (decimal, no sign): true and *ret_pid. */
static bool parse_worker_pid(const char *s, pid_t *ret_pid)
{
    long long pid = 0;
    size_t i = 0;
    for (; s[i] >= '0' && s[i] <= '9'; i++) {
        pid = pid * 10 + (s[i] - '0');
        if (pid > INT_MAX)
            return false;
    }
    if (i == 0 || pid <= 0)
        return false;
    if (s[i] == '/') {
        size_t k = ++i;
        while (s[i] >= '0' && s[i] <= '9')
            i++;
        if (i == k)
            return false;
    }
    if (s[i] != '\0')
        return false;
    *ret_pid = (pid_t)pid;
    return true;
}

/*
 * At start: recover the jobs of dead processes of this host at once. Only
 * when `base` is "<host>-<our pid>": then the workers "<host>-<P>" and
 * "<host>-<P>/<n>" whose process P is gone, or is us (a previous process
 * with our pid), are dead. Returns how many jobs were recovered.
 */
static int recover_dead_local(struct kiln_jobs *j, const char *base, struct kiln_error **err)
{
    pid_t self = getpid();
    char suffix[32];
    snprintf(suffix, sizeof(suffix), "-%ld", (long)self);
    size_t bl = strlen(base), sl = strlen(suffix);
    if (bl <= sl || strcmp(base + bl - sl, suffix) != 0)
        return 0;
    size_t prefix_len = bl - sl + 1; /* "<host>-" */
    struct kiln_strv names = KILN_STRV_INIT;
    int r = kiln_store_running_workers(j->st, &names, err);
    int n = 0;
    for (size_t i = 0; r >= 0 && i < names.n; i++) {
        const char *name = names.v[i];
        pid_t pid;
        if (strncmp(name, base, prefix_len) != 0 || !parse_worker_pid(name + prefix_len, &pid))
            continue;
        if (pid != self && !(kill(pid, 0) < 0 && errno == ESRCH))
            continue; /* alive (or not ours to signal): its lease tells */
        r = kiln_store_recover_worker(j->st, name, j->requeue, err);
        if (r > 0) {
            kiln_log(KILN_LOG_INFO, "worker %s is gone: %d job%s recovered", name, r,
                     r == 1 ? "" : "s");
            n += r;
        }
    }
    kiln_strv_release(&names);
    return r < 0 ? r : n;
}

int kiln_jobs_start(const struct kiln_jobs_options *o, struct kiln_jobs **ret,
                    struct kiln_error **err)
{
    if (!o || !o->store || !o->data_dir || !o->data_dir[0] || !ret)
        return kiln_error_set(err, KILN_EINVAL, 0, "jobs: store and data directory are required");
    if (o->workers < 0 || o->workers > 256)
        return kiln_error_set(err, KILN_EINVAL, 0, "jobs: %d workers: want 1 to 256", o->workers);
    if (o->no_workers && o->workers != 0)
        return kiln_error_set(err, KILN_EINVAL, 0, "jobs: no workers, yet %d workers asked for",
                              o->workers);
    if (o->job_timeout_ms < 0)
        return kiln_error_set(err, KILN_EINVAL, 0, "jobs: negative job timeout");
    if (o->beat_ms < 0 || o->lease_ms < 0)
        return kiln_error_set(err, KILN_EINVAL, 0, "jobs: negative lease time");
    long lease_ms = o->lease_ms > 0 ? o->lease_ms : KILN_JOBS_LEASE_MS;
    long beat_ms = o->beat_ms > 0                     ? o->beat_ms
                   : lease_ms / 6 < KILN_JOBS_BEAT_MS ? lease_ms / 6
                                                      : KILN_JOBS_BEAT_MS;
    if (beat_ms < 1 || beat_ms >= lease_ms)
        return kiln_error_set(err, KILN_EINVAL, 0,
                              "jobs: a lease of %ld ms renewed every %ld ms: want a renewal "
                              "shorter than the lease",
                              lease_ms, beat_ms);

    struct kiln_jobs *j = kiln_xmalloc(sizeof(*j));
    memset(j, 0, sizeof(*j));
    pthread_mutex_init(&j->mu, NULL);
    cond_init_mono(&j->wake);
    cond_init_mono(&j->idle);
    cond_init_mono(&j->tick);
    j->st = o->store;
    j->data_dir = kiln_xstrdup(o->data_dir);
    j->logs_dir = kiln_xasprintf("%s/logs", o->data_dir);
    j->timeout_ms = o->job_timeout_ms > 0 ? o->job_timeout_ms : DEFAULT_TIMEOUT_MS;
    j->beat_ms = beat_ms;
    j->lease_ms = lease_ms;
    j->requeue = o->requeue_interrupted;
    j->rc.configured = o->registry.configured;
    j->rc.endpoint = dup_or_null(o->registry.endpoint);
    j->rc.repo_prefix = dup_or_null(o->registry.repo_prefix);
    j->rc.push_repo = dup_or_null(o->registry.push_repo);
    j->rc.push = o->registry.push;
    if (o->build) {
        j->tmpl = *o->build;
        j->have_tmpl = true;
    }
    j->n = o->no_workers ? 0 : o->workers > 0 ? o->workers : 1;
    j->w = j->n > 0 ? kiln_xcalloc((size_t)j->n, sizeof(*j->w)) : NULL;
    _cleanup_free_ char *base = o->worker_name && o->worker_name[0]
                                    ? kiln_xstrdup(o->worker_name)
                                    : kiln_xasprintf("kiln-%ld", (long)getpid());
    for (int i = 0; i < j->n; i++) {
        j->w[i].j = j;
        j->w[i].name = j->n == 1 ? kiln_xstrdup(base) : kiln_xasprintf("%s/%d", base, i + 1);
        atomic_init(&j->w[i].cancel, CANCEL_NONE);
    }

    /* only workers write logs: with none, nothing is made in the data directory */
    int r = j->n > 0 ? kiln_fs_mkdir_p_path(j->logs_dir, 0750, NULL, err) : 0;
    if (r < 0) {
        jobs_free(j);
        return kiln_error_prefix(err, "jobs: log directory");
    }
    /* jobs whose lease expired, then those of dead processes of this host */
    r = kiln_store_recover(j->st, real_ms() - j->lease_ms, j->requeue, err);
    if (r >= 0) {
        int d = recover_dead_local(j, base, err);
        r = d < 0 ? d : r + d;
    }
    if (r < 0) {
        jobs_free(j);
        return kiln_error_prefix(err, "jobs: recover interrupted jobs");
    }
    if (r > 0)
        kiln_log(KILN_LOG_WARN, "%d job%s left running by a stopped kiln: %s", r, r == 1 ? "" : "s",
                 o->requeue_interrupted ? "queued again" : "failed as 'interrupted'");

    r = pthread_create(&j->supervisor, NULL, supervisor_main, j);
    if (r != 0) {
        jobs_free(j);
        return kiln_error_set(err, KILN_EIO, r, "jobs: start the supervisor thread");
    }
    j->supervisor_started = true;
    for (int i = 0; i < j->n; i++) {
        r = pthread_create(&j->w[i].thread, NULL, worker_main, &j->w[i]);
        if (r != 0) {
            kiln_jobs_stop(j, 0);
            return kiln_error_set(err, KILN_EIO, r, "jobs: start worker %d", i + 1);
        }
        j->w[i].started = true;
    }
    if (!j->rc.configured)
        kiln_log(KILN_LOG_WARN, "image registry not found: specs are saved, nothing is built");
    *ret = j;
    return 0;
}

void kiln_jobs_wake(struct kiln_jobs *j)
{
    if (!j)
        return;
    pthread_mutex_lock(&j->mu);
    pthread_cond_broadcast(&j->wake);
    pthread_mutex_unlock(&j->mu);
}

int kiln_jobs_cancel(struct kiln_jobs *j, struct kiln_store *st, int64_t id,
                     struct kiln_error **err)
{
    if (!st && j)
        st = j->st;
    if (!st)
        return kiln_error_set(err, KILN_EINVAL, 0, "jobs: no store");
    int r = kiln_store_job_request_cancel(st, id, err);
    if (r != KILN_STORE_CANCEL_REQUESTED || !j)
        return r;
    pthread_mutex_lock(&j->mu);
    for (int i = 0; i < j->n; i++)
        if (j->w[i].job_id == id && try_cancel(&j->w[i], CANCEL_USER))
            kiln_log(KILN_LOG_INFO, "job %" PRId64 ": cancel requested", id);
    pthread_mutex_unlock(&j->mu);
    return r;
}

void kiln_jobs_stats(struct kiln_jobs *j, struct kiln_jobs_stats *ret)
{
    memset(ret, 0, sizeof(*ret));
    if (!j)
        return;
    pthread_mutex_lock(&j->mu);
    ret->builds = j->builds;
    ret->build_seconds_sum = j->build_seconds_sum;
    memcpy(ret->duration_buckets, j->buckets, sizeof(ret->duration_buckets));
    ret->pushed_bytes = j->pushed_bytes;
    ret->running = j->busy;
    pthread_mutex_unlock(&j->mu);
}

void kiln_jobs_stop(struct kiln_jobs *j, long grace_ms)
{
    if (!j)
        return;
    pthread_mutex_lock(&j->mu);
    j->stopping = true;
    pthread_cond_broadcast(&j->wake);
    if (j->busy > 0 && grace_ms > 0) {
        kiln_log(KILN_LOG_INFO, "stopping: waiting up to %ld s for %d running build%s",
                 (grace_ms + 999) / 1000, j->busy, j->busy == 1 ? "" : "s");
        struct timespec ts;
        deadline_after(&ts, grace_ms);
        while (j->busy > 0)
            if (pthread_cond_timedwait(&j->idle, &j->mu, &ts) != 0)
                break;
    }
    for (int i = 0; i < j->n; i++)
        if (j->w[i].job_id && try_cancel(&j->w[i], CANCEL_STOP))
            kiln_log(KILN_LOG_INFO, "stopping: cancelling job %" PRId64, j->w[i].job_id);
    pthread_mutex_unlock(&j->mu);
    for (int i = 0; i < j->n; i++)
        if (j->w[i].started)
            pthread_join(j->w[i].thread, NULL);
    if (j->supervisor_started) {
        pthread_mutex_lock(&j->mu);
        j->supervisor_stop = true;
        pthread_cond_broadcast(&j->tick);
        pthread_mutex_unlock(&j->mu);
        pthread_join(j->supervisor, NULL);
    }
    jobs_free(j);
}
