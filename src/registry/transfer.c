#include "util/common.h"
#include "registry/transfer.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "oci/layout.h"
#include "oci/mediatype.h"
#include "oci/reference.h"
#include "util/buf.h"
#include "util/log.h"
#include "util/sha256.h"

/* ---- the state of one transfer ------------------------------------------------ */

struct xfer;

/* The registry progress hook of one side: checks for cancellation, reports uploads. */
struct hook {
    struct xfer *x;
    kiln_http_progress_fn chained;
    void *chained_data;
};

struct side {
    bool is_registry;
    /* registry */
    struct kiln_ref ref;
    char *repo; /* ref.path */
    struct kiln_registry *reg;
    bool own_reg;
    /* layout */
    struct kiln_layout *layout;
    const char *name;
    char *display; /* for messages */
};

/* A manifest or index to write at the destination. */
struct mnode {
    char *data;
    size_t len;
    char *media_type;
    char digest[KILN_DIGEST_BUFSZ];
    enum kiln_manifest_kind kind;
    struct kiln_platform *platform; /* the index entry's, when picked from an index */
};

struct blob {
    char *digest;
    char *media_type;
    uint64_t size;
    /* progress, under x->lock */
    uint64_t bytes;
    long last_emit_ms;
    bool active;
    bool present; /* found at the destination: skipped */
};

struct xfer {
    struct side src, dst;
    bool same_registry;
    struct hook hooks[2];
    /* options, defaults filled in */
    const char *os, *arch, *variant;
    bool all;
    int jobs;
    const char *const *tags;
    uint64_t stream_chunk;
    uint64_t splice_chunk; /* PATCH size of kernel moves; 0: the whole blob */
    bool verify;           /* registry -> registry: hash streamed blobs here too (verify_streams) */
    atomic_bool no_splice; /* kernel moves off (option, or found not to apply) */
    bool layout_oci_types;
    struct kiln_transfer_progress progress;
    int max_resumes; /* of streamed uploads: the destination's */

    struct mnode *nodes; /* children first; the last one is what the destination names */
    size_t n_nodes;
    struct blob *blobs;
    size_t n_blobs;
    size_t *order; /* blob indexes, largest first */

    pthread_mutex_t lock;
    pthread_cond_t lane_cond; /* a lane was freed (or the transfer stopped) */
    /* under lock: blobs to look up at the destination (order[next_check..]),
     * lookups not finished, and blobs not started yet (order[front .. end-1]) */
    size_t next_check, checks_left;
    size_t front, end;
    size_t lanes;       /* big blobs moved at once (see run_blobs()) */
    size_t big_running; /* big blobs being moved */
    atomic_bool stop;
    int rc; /* first failure */
    struct kiln_error *err;
    /* totals, under lock */
    size_t n_finished;
    uint64_t total_size;
    uint64_t finished_bytes;
    uint64_t inflight_bytes;
    struct kiln_transfer_result res;
};

/*
 * registry -> registry: a downloader thread fills a ring buffer; the worker
 * uploads from it as the bytes arrive (see "Data paths" in transfer.h).
 */
struct pipe {
    struct xfer *x;
    struct blob *b;
    char *buf; /* ring of cap bytes: blob offset o lives at buf[o % cap] */
    size_t cap;
    pthread_mutex_t lock;
    pthread_cond_t cond; /* broadcast on every change below */
    /* under lock */
    uint64_t tail; /* blob offsets [tail, head) are in the ring */
    uint64_t head;
    uint64_t rpos; /* the uploader's next byte: tail <= rpos <= head */
    bool done;     /* the current download ended */
    int rc;        /* its result */
    struct kiln_error *err;
    /* the downloader's (started and joined by the worker) */
    atomic_bool abort; /* stop the current download */
    bool running;
    pthread_t th;
    uint64_t start;          /* blob offset the current download began at */
    uint64_t pos;            /* blob offset of its next byte */
    bool verify;             /* hash the blob and check its digest */
    bool hash_final;         /* ... and that check was made */
    struct kiln_sha256 hash; /* of blob bytes [0, hashed), when verifying */
    uint64_t hashed;
    bool reverified; /* copied again with verify after the registry refused the digest */
};

/* What the current thread is moving, for the registry progress hook. */
enum tls_mode { TLS_NONE, TLS_PUSH, TLS_STREAM };
static _Thread_local struct {
    struct blob *b;
    enum tls_mode mode;
    uint64_t base;      /* TLS_PUSH: bytes of earlier requests; TLS_STREAM: request offset */
    uint64_t last_sent; /* TLS_PUSH */
    struct pipe *pipe;  /* a downloader thread: its pipe */
} tls;

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Wait on c for at most 100 ms: waiters also poll flags nobody signals (x->stop). */
static void timed_wait(pthread_cond_t *c, pthread_mutex_t *m)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += 100 * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(c, m, &ts);
}

/* Call the user's callback; lock held. */
static void emit_locked(struct xfer *x, enum kiln_transfer_event_kind kind, const struct blob *b,
                        size_t bi, const struct mnode *m, const char *ref)
{
    if (!x->progress.fn)
        return;
    struct kiln_transfer_event ev = {
        .kind = kind,
        .blob = bi,
        .ref = ref,
        .n_blobs = x->n_blobs,
        .n_finished = x->n_finished,
        .total_size = x->total_size,
        .total_bytes = x->finished_bytes + x->inflight_bytes,
    };
    if (b) {
        ev.digest = b->digest;
        ev.media_type = b->media_type;
        ev.size = b->size;
        ev.bytes = b->bytes;
    } else if (m) {
        ev.digest = m->digest;
        ev.media_type = m->media_type;
        ev.size = m->len;
        ev.bytes = m->len;
    }
    if (x->progress.fn(x->progress.userdata, &ev) != 0 && !atomic_load(&x->stop)) {
        atomic_store(&x->stop, true);
        if (x->rc == 0)
            x->rc = kiln_error_set(&x->err, KILN_ECANCELLED, 0, "transfer cancelled");
    }
}

static void emit(struct xfer *x, enum kiln_transfer_event_kind kind, struct blob *b,
                 const struct mnode *m, const char *ref)
{
    pthread_mutex_lock(&x->lock);
    emit_locked(x, kind, b, b ? (size_t)(b - x->blobs) : 0, m, ref);
    pthread_mutex_unlock(&x->lock);
}

static void blob_started(struct xfer *x, struct blob *b)
{
    pthread_mutex_lock(&x->lock);
    b->active = true;
    b->bytes = 0;
    b->last_emit_ms = now_ms();
    emit_locked(x, KILN_TRANSFER_STARTED, b, (size_t)(b - x->blobs), NULL, NULL);
    pthread_mutex_unlock(&x->lock);
}

static void blob_bytes(struct xfer *x, struct blob *b, uint64_t bytes)
{
    if (bytes > b->size)
        bytes = b->size;
    pthread_mutex_lock(&x->lock);
    if (b->active && bytes != b->bytes) {
        x->inflight_bytes = x->inflight_bytes - b->bytes + bytes;
        b->bytes = bytes;
        long t = now_ms();
        if (t - b->last_emit_ms >= KILN_TRANSFER_BYTES_EVERY_MS) {
            b->last_emit_ms = t;
            emit_locked(x, KILN_TRANSFER_BYTES, b, (size_t)(b - x->blobs), NULL, NULL);
        }
    }
    pthread_mutex_unlock(&x->lock);
}

static void blob_finished(struct xfer *x, struct blob *b, enum kiln_transfer_event_kind kind)
{
    pthread_mutex_lock(&x->lock);
    if (b->active)
        x->inflight_bytes -= b->bytes;
    b->active = false;
    b->bytes = b->size;
    x->n_finished++;
    x->finished_bytes += b->size;
    if (kind == KILN_TRANSFER_DONE) {
        x->res.n_transferred++;
        x->res.bytes_transferred += b->size;
    } else if (kind == KILN_TRANSFER_SKIPPED) {
        x->res.n_skipped++;
    } else if (kind == KILN_TRANSFER_MOUNTED) {
        x->res.n_mounted++;
    }
    emit_locked(x, kind, b, (size_t)(b - x->blobs), NULL, NULL);
    pthread_mutex_unlock(&x->lock);
}

/* Record a failure (the first one wins) and stop the other workers. Takes e. */
static void fail(struct xfer *x, struct blob *b, int rc, struct kiln_error *e)
{
    pthread_mutex_lock(&x->lock);
    bool first = x->rc == 0;
    if (first) {
        x->rc = rc;
        x->err = e;
        e = NULL;
    }
    atomic_store(&x->stop, true);
    pthread_cond_broadcast(&x->lane_cond);
    if (b) {
        if (b->active)
            x->inflight_bytes -= b->bytes;
        b->active = false;
        if (first)
            emit_locked(x, KILN_TRANSFER_FAILED, b, (size_t)(b - x->blobs), NULL, NULL);
    }
    pthread_mutex_unlock(&x->lock);
    kiln_error_free(e);
}

static int http_progress(void *ud, uint64_t received, uint64_t sent)
{
    struct hook *h = ud;
    (void)received;
    if (h->chained && h->chained(h->chained_data, received, sent) != 0)
        return 1;
    if (atomic_load(&h->x->stop))
        return 1;
    if (tls.pipe && atomic_load(&tls.pipe->abort))
        return 1;
    if (tls.b && tls.mode == TLS_PUSH) {
        /* kiln_registry_blob_push() sends one request after another, each counting from 0 */
        if (sent < tls.last_sent)
            tls.base += tls.last_sent;
        tls.last_sent = sent;
        blob_bytes(h->x, tls.b, tls.base + sent);
    } else if (tls.b && tls.mode == TLS_STREAM && sent > 0) {
        blob_bytes(h->x, tls.b, tls.base + sent);
    }
    return 0;
}

static int stopped(struct xfer *x, struct kiln_error **err)
{
    if (atomic_load(&x->stop))
        return kiln_error_set(err, KILN_ECANCELLED, 0, "transfer cancelled");
    return 0;
}

/* ---- blob transfers ------------------------------------------------------------ */

/* registry -> layout */
struct layout_sink {
    struct xfer *x;
    struct blob *b;
    struct kiln_layout_writer *w;
    uint64_t n;
};

static int layout_sink_write(void *ud, const void *data, size_t len, struct kiln_error **err)
{
    struct layout_sink *s = ud;
    int rc = kiln_layout_writer_write(s->w, data, len, err);
    if (rc < 0)
        return rc;
    s->n += len;
    blob_bytes(s->x, s->b, s->n);
    return 0;
}

static int pull_blob(struct xfer *x, struct blob *b, struct kiln_error **err)
{
    struct layout_sink s = {.x = x, .b = b};
    int rc = kiln_layout_writer_begin(x->dst.layout, b->digest, (int64_t)b->size, &s.w, err);
    if (rc < 0)
        return rc;
    rc = kiln_registry_blob_get(x->src.reg, x->src.repo, b->digest, (int64_t)b->size,
                                layout_sink_write, &s, NULL, err);
    if (rc >= 0) {
        rc = kiln_layout_writer_commit(s.w, NULL, err);
        if (rc < 0)
            kiln_error_prefix(err, "store blob %s", b->digest);
    }
    kiln_layout_writer_free(s.w);
    return rc;
}

/* layout -> registry */
static int push_blob(struct xfer *x, struct blob *b, struct kiln_error **err)
{
    int64_t size = 0;
    _cleanup_close_ int fd = kiln_layout_blob_open(x->src.layout, b->digest, &size, err);
    if (fd < 0)
        return fd;
    if ((uint64_t)size != b->size)
        return kiln_error_set(err, KILN_EINVAL, 0,
                              "blob %s in the layout has %lld bytes, the manifest says %llu",
                              b->digest, (long long)size, (unsigned long long)b->size);
    tls.b = b;
    tls.mode = TLS_PUSH;
    tls.base = 0;
    tls.last_sent = 0;
    int rc = kiln_registry_blob_push(x->dst.reg, x->dst.repo, b->digest, fd, b->size, NULL, err);
    tls.b = NULL;
    tls.mode = TLS_NONE;
    return rc < 0 ? rc : 0;
}

/* layout -> layout */
static int layout_copy_blob(struct xfer *x, struct blob *b, struct kiln_error **err)
{
    _cleanup_close_ int fd = kiln_layout_blob_open(x->src.layout, b->digest, NULL, err);
    if (fd < 0)
        return fd;
    int rc = kiln_layout_blob_write_fd(x->dst.layout, fd, b->digest, (int64_t)b->size, NULL, err);
    return rc < 0 ? kiln_error_prefix(err, "store blob %s", b->digest) : 0;
}

/* Copy the download's error into err (the worker's). */
static int pipe_error_locked(struct pipe *p, struct kiln_error **err)
{
    return kiln_error_set(err, p->rc < 0 && p->err ? p->err->code : KILN_ENET, 0, "%s",
                          p->err && p->err->msg ? p->err->msg : "download ended early");
}

/* The downloader's sink: into the ring, waiting for room. */
static int pipe_write(void *ud, const void *data, size_t len, struct kiln_error **err)
{
    struct pipe *p = ud;
    struct xfer *x = p->x;
    const char *s = data;
    if (p->verify && !p->hash_final && p->pos + len > p->hashed) {
        /* a download restarted below what was hashed: hash only what is new */
        uint64_t skip = p->hashed > p->pos ? p->hashed - p->pos : 0;
        kiln_sha256_update(&p->hash, s + skip, len - (size_t)skip);
        p->hashed = p->pos + len;
    }
    p->pos += len;
    while (len > 0) {
        pthread_mutex_lock(&p->lock);
        while (p->head - p->rpos >= p->cap && !atomic_load(&p->abort) && !atomic_load(&x->stop))
            timed_wait(&p->cond, &p->lock);
        if (atomic_load(&p->abort) || atomic_load(&x->stop)) {
            pthread_mutex_unlock(&p->lock);
            return kiln_error_set(err, KILN_ECANCELLED, 0, "transfer cancelled");
        }
        /* room: everything but the unread bytes; older bytes are kept for resends */
        size_t at = (size_t)(p->head % p->cap);
        size_t n = p->cap - (size_t)(p->head - p->rpos);
        if (n > p->cap - at)
            n = p->cap - at;
        if (n > len)
            n = len;
        if (p->head + n - p->tail > p->cap)
            p->tail = p->head + n - p->cap;
        pthread_mutex_unlock(&p->lock);
        /* the uploader never reads below tail nor at or above head */
        memcpy(p->buf + at, s, n);
        pthread_mutex_lock(&p->lock);
        p->head += n;
        pthread_cond_broadcast(&p->cond);
        pthread_mutex_unlock(&p->lock);
        s += n;
        len -= n;
    }
    return 0;
}

static void *downloader(void *ud)
{
    struct pipe *p = ud;
    struct xfer *x = p->x;
    struct blob *b = p->b;
    tls.pipe = p;
    struct kiln_error *e = NULL;
    int rc =
        kiln_registry_blob_get_range(x->src.reg, x->src.repo, b->digest, (int64_t)b->size, p->start,
                                     KILN_BLOB_GET_NO_VERIFY, pipe_write, p, NULL, &e);
    if (rc >= 0 && p->verify && !p->hash_final) {
        char hex[KILN_SHA256_HEX_LEN + 1];
        kiln_sha256_final_hex(&p->hash, hex);
        p->hash_final = true;
        if (strcmp(hex, b->digest + 7) != 0)
            rc = kiln_error_set(
                &e, KILN_ENET, 0, "blob '%s/%s@%s': digest mismatch: got sha256:%s (%llu bytes)",
                x->src.ref.domain, x->src.repo, b->digest, hex, (unsigned long long)b->size);
    }
    pthread_mutex_lock(&p->lock);
    p->done = true;
    p->rc = rc < 0 ? rc : 0;
    p->err = e;
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

static void pipe_stop_download(struct pipe *p)
{
    if (!p->running)
        return;
    atomic_store(&p->abort, true);
    pthread_mutex_lock(&p->lock);
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->lock);
    pthread_join(p->th, NULL);
    p->running = false;
    atomic_store(&p->abort, false);
}

/* (Re)start the download at blob offset `start`; the ring is emptied. */
static int pipe_start_download(struct pipe *p, uint64_t start, struct kiln_error **err)
{
    pipe_stop_download(p);
    if (p->verify && !p->hash_final && start > p->hashed)
        return kiln_error_set(err, KILN_EINTERNAL, 0, "blob %s: download from %llu of %llu hashed",
                              p->b->digest, (unsigned long long)start,
                              (unsigned long long)p->hashed);
    pthread_mutex_lock(&p->lock);
    p->tail = p->head = p->rpos = start;
    p->done = false;
    p->rc = 0;
    kiln_error_free(p->err);
    p->err = NULL;
    pthread_mutex_unlock(&p->lock);
    p->start = p->pos = start;
    int e = pthread_create(&p->th, NULL, downloader, p);
    if (e != 0)
        return kiln_error_set(err, KILN_EINTERNAL, e, "start a download thread");
    p->running = true;
    return 0;
}

/*
 * Make the uploader's next byte blob offset `off` (what the registry
 * holds): from the ring when it still has it, else by downloading again
 * from there.
 */
static int pipe_seek(struct pipe *p, uint64_t off, struct kiln_error **err)
{
    pthread_mutex_lock(&p->lock);
    bool have = off >= p->tail && off <= p->head;
    uint64_t head = p->head;
    if (have) {
        p->rpos = off;
        pthread_cond_broadcast(&p->cond);
    }
    pthread_mutex_unlock(&p->lock);
    if (have)
        return 0;
    if (off > head)
        return kiln_error_set(err, KILN_ENET, 0,
                              "upload of %s: the registry holds %llu bytes, %llu were sent",
                              p->b->digest, (unsigned long long)off, (unsigned long long)head);
    kiln_log(KILN_LOG_INFO, "transfer: %s: downloading again from byte %llu", p->b->digest,
             (unsigned long long)off);
    return pipe_start_download(p, off, err);
}

/* The uploader's body source (kiln_http_read_fn): waits for bytes. */
static int pipe_read(void *ud, void *buf, size_t cap, size_t *ret_n, struct kiln_error **err)
{
    struct pipe *p = ud;
    struct xfer *x = p->x;
    pthread_mutex_lock(&p->lock);
    while (p->rpos == p->head && !p->done && !atomic_load(&x->stop))
        timed_wait(&p->cond, &p->lock);
    if (atomic_load(&x->stop)) {
        pthread_mutex_unlock(&p->lock);
        return kiln_error_set(err, KILN_ECANCELLED, 0, "transfer cancelled");
    }
    if (p->rpos == p->head) {
        int rc = pipe_error_locked(p, err);
        pthread_mutex_unlock(&p->lock);
        return rc;
    }
    size_t at = (size_t)(p->rpos % p->cap);
    size_t n = (size_t)(p->head - p->rpos);
    if (n > p->cap - at)
        n = p->cap - at;
    if (n > cap)
        n = cap;
    pthread_mutex_unlock(&p->lock);
    /* the downloader never writes over [rpos, head) */
    memcpy(buf, p->buf + at, n);
    pthread_mutex_lock(&p->lock);
    p->rpos += n;
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->lock);
    *ret_n = n;
    return 0;
}

/* Wait for the download to end; its error, or 0 when the blob is complete (and verified). */
static int pipe_wait_done(struct pipe *p, struct kiln_error **err)
{
    struct xfer *x = p->x;
    pthread_mutex_lock(&p->lock);
    while (!p->done && !atomic_load(&x->stop))
        timed_wait(&p->cond, &p->lock);
    int rc = 0;
    if (p->done && p->rc < 0)
        rc = pipe_error_locked(p, err);
    else if (!p->done)
        rc = kiln_error_set(err, KILN_ECANCELLED, 0, "transfer cancelled");
    pthread_mutex_unlock(&p->lock);
    return rc;
}

static bool pipe_failed(struct pipe *p)
{
    pthread_mutex_lock(&p->lock);
    bool failed = p->done && p->rc < 0;
    pthread_mutex_unlock(&p->lock);
    return failed;
}

static bool upload_fatal(int rc)
{
    return !(rc == -KILN_ENET || rc == -KILN_ETIMEOUT || rc == -KILN_ENOTFOUND ||
             rc == -KILN_EINVAL);
}

static void drop_upload(struct kiln_upload **u)
{
    if (*u)
        kiln_upload_cancel(*u, NULL);
    kiln_upload_free(*u);
    *u = NULL;
}

static void pause_ms(struct xfer *x, long ms)
{
    while (ms > 0 && !atomic_load(&x->stop)) {
        long step = ms > 100 ? 100 : ms;
        struct timespec ts = {0, step * 1000000L};
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
            ;
        ms -= step;
    }
}

/*
 * The destination refused the digest of what it got: copy the blob again
 * from byte 0, hashing it here, so that a source serving other bytes than
 * its digest says is named as such (and a glitch in between is retried).
 */
static int pipe_reverify(struct pipe *p, struct kiln_error **err)
{
    pipe_stop_download(p);
    kiln_sha256_release(&p->hash);
    kiln_sha256_init(&p->hash);
    p->verify = true;
    p->hash_final = false;
    p->hashed = 0;
    p->reverified = true;
    return pipe_start_download(p, 0, err);
}

/*
 * One step of a streamed upload: PATCH the next `stream_chunk` bytes from
 * the registry's offset on (the request's body follows the download), or,
 * when the registry holds every byte, wait for the download's end (its
 * digest check) and send the final PUT. Returns 1 when the blob is
 * complete, 0 to go on. *ret_finishing tells whether the final PUT was
 * tried.
 */
static int stream_step(struct xfer *x, struct blob *b, struct pipe *p, struct kiln_upload *u,
                       bool *ret_finishing, struct kiln_error **err)
{
    uint64_t off = kiln_upload_offset(u);
    if (off > b->size)
        return kiln_error_set(err, KILN_ENET, 0,
                              "upload of %s: the registry holds %llu bytes of %llu", b->digest,
                              (unsigned long long)off, (unsigned long long)b->size);
    int rc = pipe_seek(p, off, err);
    if (rc < 0)
        return rc;
    if (off == b->size) {
        rc = pipe_wait_done(p, err);
        if (rc < 0)
            return rc;
        *ret_finishing = true;
        rc = kiln_upload_finish(u, b->digest, err);
        return rc < 0 ? rc : 1;
    }
    uint64_t chunk = x->stream_chunk;
    if (chunk < kiln_upload_min_chunk(u))
        chunk = kiln_upload_min_chunk(u);
    uint64_t n = b->size - off < chunk ? b->size - off : chunk;
    tls.b = b;
    tls.mode = TLS_STREAM;
    tls.base = off;
    rc = kiln_upload_patch_read(u, n, pipe_read, p, err);
    tls.b = NULL;
    tls.mode = TLS_NONE;
    if (rc < 0)
        return rc;
    blob_bytes(x, b, kiln_upload_offset(u));
    return 0;
}

/* Upload the blob into session *u (or new ones), resuming on failures. */
static int stream_upload(struct xfer *x, struct blob *b, struct pipe *p, struct kiln_upload **u,
                         struct kiln_error **err)
{
    int tries = 0;
    for (;;) {
        bool finishing = false;
        bool starting = !*u;
        int rc;
        if (starting)
            rc = kiln_registry_upload_start(x->dst.reg, x->dst.repo, NULL, NULL, u, err);
        else
            rc = stream_step(x, b, p, *u, &finishing, err);
        if (rc == 1) {
            kiln_upload_free(*u);
            *u = NULL;
            return 0;
        }
        if (rc >= 0)
            continue;
        if (finishing && kiln_upload_digest_rejected(*u)) {
            if (p->reverified || (p->verify && p->hash_final))
                return rc; /* the bytes matched here: the registry disagrees for good */
            kiln_log(KILN_LOG_INFO,
                     "transfer: the destination refused the digest of %s (%s), copying it again "
                     "with the digest checked here",
                     b->digest, err && *err ? (*err)->msg : "error");
            drop_upload(u);
            rc = pipe_reverify(p, err);
            if (rc < 0)
                return rc;
            continue;
        }
        /* a session start that failed on its own retries: only network trouble is retried */
        bool fatal = starting ? rc != -KILN_ENET && rc != -KILN_ETIMEOUT : upload_fatal(rc);
        if (atomic_load(&x->stop) || fatal || pipe_failed(p))
            return rc;
        if (tries >= x->max_resumes) {
            kiln_error_prefix(err, "upload of %s: gave up after %d resumes", b->digest, tries);
            return rc;
        }
        tries++;
        kiln_log(KILN_LOG_INFO, "transfer: upload of %s interrupted (%s), resuming", b->digest,
                 err && *err ? (*err)->msg : "error");
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        uint64_t rnd = (uint64_t)ts.tv_nsec * 0x9E3779B97F4A7C15ULL;
        pause_ms(x, kiln_http_backoff_ms(tries, 200, 4000, rnd ^ (rnd >> 31)));
        if (atomic_load(&x->stop))
            return stopped(x, err);
        /* the final PUT may have landed though its answer did not */
        if (finishing &&
            kiln_registry_blob_head(x->dst.reg, x->dst.repo, b->digest, NULL, NULL) == 1) {
            kiln_upload_free(*u);
            *u = NULL;
            return 0;
        }
        if (*u && rc != -KILN_ENOTFOUND && rc != -KILN_EINVAL) {
            struct kiln_error *serr = NULL;
            if (kiln_upload_status(*u, &serr) < 0) {
                kiln_log(KILN_LOG_INFO, "transfer: upload of %s: %s, restarting", b->digest,
                         serr ? serr->msg : "status failed");
                drop_upload(u);
            }
            kiln_error_free(serr);
        } else {
            drop_upload(u);
        }
    }
}

struct move {
    struct xfer *x;
    struct blob *b;
    uint64_t base; /* blob offset of the PATCH */
};

static int move_progress(void *ud, uint64_t moved)
{
    struct move *m = ud;
    if (atomic_load(&m->x->stop))
        return 1;
    blob_bytes(m->x, m->b, m->base + moved);
    return 0;
}

/*
 * Between plain http registries: the blob's bytes go from the source's
 * socket to the destination's inside the kernel (kiln_upload_patch_from()),
 * in one PATCH unless a stream chunk size was given. Returns 0 when the
 * destination holds every byte (stream_upload() sends the final PUT); *u is
 * the session, started here when NULL.
 */
static int splice_blob(struct xfer *x, struct blob *b, struct kiln_upload **u,
                       struct kiln_error **err)
{
    int rc = 0;
    if (!*u)
        rc = kiln_registry_upload_start(x->dst.reg, x->dst.repo, NULL, NULL, u, err);
    while (rc >= 0 && kiln_upload_offset(*u) < b->size) {
        struct move m = {x, b, kiln_upload_offset(*u)};
        rc = kiln_upload_patch_from(*u, x->src.reg, x->src.repo, b->digest, b->size,
                                    x->splice_chunk, move_progress, &m, err);
        if (rc >= 0) {
            uint64_t at = kiln_upload_offset(*u);
            pthread_mutex_lock(&x->lock);
            x->res.bytes_in_kernel += at > m.base ? at - m.base : 0;
            pthread_mutex_unlock(&x->lock);
            blob_bytes(x, b, at);
        }
    }
    return rc;
}

/*
 * Try splice_blob() when kernel moves are on. Returns the blob offset the
 * ring path goes on from (the size when every byte is there) with *u the
 * session to go on with (NULL: start one), or -KILN_ECANCELLED once the
 * transfer stopped. Other failures only turn to the ring path.
 */
static int64_t try_splice(struct xfer *x, struct blob *b, struct kiln_upload **u,
                          struct kiln_error **err)
{
    if (atomic_load(&x->no_splice))
        return 0;
    struct kiln_error *se = NULL;
    int rc = splice_blob(x, b, u, &se);
    if (rc < 0 && atomic_load(&x->stop)) {
        kiln_error_free(se);
        return stopped(x, err);
    }
    if (rc < 0) {
        if (rc == -KILN_EUNSUPPORTED) {
            atomic_store(&x->no_splice, true);
            kiln_log(KILN_LOG_DEBUG, "transfer: %s", se ? se->msg : "no kernel moves");
        } else {
            kiln_log(KILN_LOG_INFO, "transfer: %s: %s; copying it through memory", b->digest,
                     se ? se->msg : "error");
        }
        /* where the registry stands; a lost session starts again */
        if (*u && kiln_upload_status(*u, NULL) < 0)
            drop_upload(u);
    }
    kiln_error_free(se);
    uint64_t at = *u ? kiln_upload_offset(*u) : 0;
    if (at > b->size) {
        drop_upload(u);
        at = 0;
    }
    return (int64_t)at;
}

static int stream_blob(struct xfer *x, struct blob *b, struct kiln_upload *session,
                       struct kiln_error **err)
{
    struct kiln_upload *u = session;
    int64_t start = try_splice(x, b, &u, err);
    if (start < 0) {
        drop_upload(&u);
        return (int)start;
    }
    struct pipe p = {.x = x, .b = b, .verify = x->verify};
    /* untouched pages of the ring cost nothing when the kernel moved the bytes */
    p.cap = b->size < KILN_TRANSFER_STREAM_BUFFER ? (size_t)b->size : KILN_TRANSFER_STREAM_BUFFER;
    if (p.cap == 0)
        p.cap = 1;
    p.buf = kiln_xmalloc(p.cap);
    atomic_init(&p.abort, false);
    pthread_mutex_init(&p.lock, NULL);
    pthread_cond_init(&p.cond, NULL);
    if (p.verify)
        kiln_sha256_init(&p.hash);
    int rc = pipe_start_download(&p, (uint64_t)start, err);
    if (rc >= 0)
        rc = stream_upload(x, b, &p, &u, err);
    drop_upload(&u);
    pipe_stop_download(&p);
    kiln_sha256_release(&p.hash);
    kiln_error_free(p.err);
    pthread_cond_destroy(&p.cond);
    pthread_mutex_destroy(&p.lock);
    free(p.buf);
    return rc < 0 ? rc : 0;
}

/* Skippable foreign layers: docker's and OCI's non-distributable layers with URLs. */
static bool foreign(const struct kiln_descriptor *d)
{
    if (d->urls.n == 0 || !d->media_type)
        return false;
    return strcmp(d->media_type, KILN_MT_DOCKER_FOREIGN_LAYER) == 0 ||
           strstr(d->media_type, ".nondistributable.") != NULL;
}

/* Look a blob up at the destination: 1 (and SKIPPED) when it is there, 0 when it must move. */
static int check_blob(struct xfer *x, struct blob *b, struct kiln_error **err)
{
    int rc = stopped(x, err);
    if (rc < 0)
        return rc;
    if (x->dst.is_registry) {
        rc = kiln_registry_blob_head(x->dst.reg, x->dst.repo, b->digest, NULL, err);
        if (rc < 0)
            return rc;
    } else {
        int64_t have = -1;
        rc = kiln_layout_blob_exists(x->dst.layout, b->digest, &have, err);
        if (rc < 0)
            return rc;
        rc = rc == 1 && have == (int64_t)b->size;
    }
    if (rc == 1) {
        b->present = true;
        blob_finished(x, b, KILN_TRANSFER_SKIPPED);
    }
    return rc;
}

/* Move a blob check_blob() did not find. */
static int move_blob(struct xfer *x, struct blob *b, struct kiln_error **err)
{
    int rc = stopped(x, err);
    if (rc < 0)
        return rc;
    if (x->dst.is_registry) {
        if (!x->src.is_registry) {
            blob_started(x, b);
            rc = push_blob(x, b, err);
        } else {
            struct kiln_upload *u = NULL;
            if (x->same_registry && strcmp(x->src.repo, x->dst.repo) != 0) {
                rc = kiln_registry_upload_start(x->dst.reg, x->dst.repo, b->digest, x->src.repo, &u,
                                                err);
                if (rc < 0)
                    return rc;
                if (rc == 1) {
                    blob_finished(x, b, KILN_TRANSFER_MOUNTED);
                    return 0;
                }
            }
            blob_started(x, b);
            rc = stream_blob(x, b, u, err);
        }
    } else {
        blob_started(x, b);
        rc = x->src.is_registry ? pull_blob(x, b, err) : layout_copy_blob(x, b, err);
    }
    if (rc < 0)
        return rc;
    blob_finished(x, b, KILN_TRANSFER_DONE);
    return 0;
}

/*
 * Lanes: with blobs moving side by side, each gets a like share of what
 * limits the transfer (bandwidth, or the CPUs of registries that hash each
 * upload in one thread), so the largest blob ends last, alone, and the
 * machine idles while it does. With at most ceil(big bytes / largest blob)
 * big blobs at once (at least 2, at most jobs), the largest gets a larger
 * share early and the others still fit beside it. Nothing is lost when one
 * stream is limited on its own (latency): no blob is bigger than the
 * largest, which bounds the transfer anyway. Counts the blobs to move
 * only. Lock held.
 */
static void plan_lanes_locked(struct xfer *x)
{
    uint64_t big_total = 0, largest = 0;
    for (size_t i = 0; i < x->n_blobs; i++) {
        const struct blob *b = &x->blobs[i];
        if (!b->present && b->size >= KILN_TRANSFER_LANE_MIN) {
            big_total += b->size;
            if (b->size > largest)
                largest = b->size;
        }
    }
    x->lanes = (size_t)x->jobs;
    if (largest > 0) {
        uint64_t want = big_total / largest + (big_total % largest != 0);
        if (want < 2)
            want = 2;
        if (want < x->lanes)
            x->lanes = (size_t)want;
    }
}

/*
 * The next blob to move, or NULL when none is left or the transfer
 * stopped: the largest one not started while a lane is free, else the
 * smallest one when it is small (small blobs need no lane), else wait for
 * a lane. *ret_big tells whether the blob took a lane.
 */
static struct blob *next_blob(struct xfer *x, bool *ret_big)
{
    struct blob *b = NULL;
    pthread_mutex_lock(&x->lock);
    while (!atomic_load(&x->stop)) {
        if (x->checks_left > 0) { /* lanes are planned once every lookup is done */
            timed_wait(&x->lane_cond, &x->lock);
            continue;
        }
        while (x->front < x->end && x->blobs[x->order[x->front]].present)
            x->front++;
        while (x->end > x->front && x->blobs[x->order[x->end - 1]].present)
            x->end--;
        if (x->front >= x->end)
            break;
        struct blob *first = &x->blobs[x->order[x->front]];
        bool big = first->size >= KILN_TRANSFER_LANE_MIN;
        if (!big || x->big_running < x->lanes) {
            x->front++;
            if (big)
                x->big_running++;
            *ret_big = big;
            b = first;
            break;
        }
        struct blob *last = &x->blobs[x->order[x->end - 1]];
        if (last->size < KILN_TRANSFER_LANE_MIN) {
            x->end--;
            *ret_big = false;
            b = last;
            break;
        }
        timed_wait(&x->lane_cond, &x->lock);
    }
    pthread_mutex_unlock(&x->lock);
    return b;
}

static void *worker(void *ud)
{
    struct xfer *x = ud;
    /* every blob is looked up first, by all workers at once (a warm copy is only that) */
    for (;;) {
        pthread_mutex_lock(&x->lock);
        size_t i =
            x->next_check < x->n_blobs && !atomic_load(&x->stop) ? x->next_check++ : x->n_blobs;
        pthread_mutex_unlock(&x->lock);
        if (i == x->n_blobs)
            break;
        struct blob *cb = &x->blobs[x->order[i]];
        struct kiln_error *e = NULL;
        int rc = check_blob(x, cb, &e);
        if (rc < 0)
            fail(x, cb, rc, e);
        else
            kiln_error_free(e);
        pthread_mutex_lock(&x->lock);
        if (--x->checks_left == 0) {
            plan_lanes_locked(x);
            pthread_cond_broadcast(&x->lane_cond);
        }
        pthread_mutex_unlock(&x->lock);
    }
    bool big = false;
    struct blob *b;
    while ((b = next_blob(x, &big)) != NULL) {
        struct kiln_error *e = NULL;
        int rc = move_blob(x, b, &e);
        if (rc < 0)
            fail(x, b, rc, e);
        else
            kiln_error_free(e);
        if (big) {
            pthread_mutex_lock(&x->lock);
            x->big_running--;
            pthread_cond_broadcast(&x->lane_cond);
            pthread_mutex_unlock(&x->lock);
        }
    }
    return NULL;
}

static int by_size_desc(const void *a, const void *b, void *ud)
{
    const struct xfer *x = ud;
    uint64_t sa = x->blobs[*(const size_t *)a].size, sb = x->blobs[*(const size_t *)b].size;
    if (sa != sb)
        return sa > sb ? -1 : 1;
    return *(const size_t *)a < *(const size_t *)b ? -1 : 1;
}

static int run_blobs(struct xfer *x, struct kiln_error **err)
{
    x->order = kiln_xreallocarray(NULL, x->n_blobs ? x->n_blobs : 1, sizeof(size_t));
    for (size_t i = 0; i < x->n_blobs; i++)
        x->order[i] = i;
    qsort_r(x->order, x->n_blobs, sizeof(size_t), by_size_desc, x);
    x->front = 0;
    x->end = x->n_blobs;
    x->next_check = 0;
    x->checks_left = x->n_blobs;
    x->lanes = (size_t)x->jobs;

    pthread_mutex_lock(&x->lock);
    emit_locked(x, KILN_TRANSFER_PLAN, NULL, 0, NULL, NULL);
    pthread_mutex_unlock(&x->lock);

    size_t n = (size_t)x->jobs < x->n_blobs ? (size_t)x->jobs : x->n_blobs;
    pthread_t th[KILN_TRANSFER_MAX_JOBS];
    size_t started = 0;
    for (; started < n; started++) {
        int e = pthread_create(&th[started], NULL, worker, x);
        if (e != 0) {
            if (started == 0) {
                atomic_store(&x->stop, true);
                return kiln_error_set(err, KILN_EINTERNAL, e, "start a transfer thread");
            }
            break; /* fewer threads do */
        }
    }
    for (size_t i = 0; i < started; i++)
        pthread_join(th[i], NULL);
    if (x->rc < 0) {
        int rc = x->rc;
        if (err) {
            kiln_error_free(*err);
            *err = x->err;
        } else {
            kiln_error_free(x->err);
        }
        x->err = NULL;
        return rc;
    }
    return 0;
}

/* ---- manifests ------------------------------------------------------------------ */

static void add_blob(struct xfer *x, const struct kiln_descriptor *d)
{
    if (foreign(d))
        return;
    for (size_t i = 0; i < x->n_blobs; i++)
        if (strcmp(x->blobs[i].digest, d->digest) == 0)
            return;
    x->blobs = kiln_xreallocarray(x->blobs, x->n_blobs + 1, sizeof(*x->blobs));
    struct blob *b = &x->blobs[x->n_blobs++];
    memset(b, 0, sizeof(*b));
    b->digest = kiln_xstrdup(d->digest);
    b->media_type = d->media_type ? kiln_xstrdup(d->media_type) : NULL;
    b->size = (uint64_t)d->size;
    x->total_size += b->size;
}

static struct mnode *add_node(struct xfer *x, char *data, size_t len, const char *media_type,
                              const char *digest, enum kiln_manifest_kind kind,
                              const struct kiln_platform *platform)
{
    for (size_t i = 0; i < x->n_nodes; i++) {
        if (strcmp(x->nodes[i].digest, digest) == 0) {
            free(data);
            return &x->nodes[i];
        }
    }
    x->nodes = kiln_xreallocarray(x->nodes, x->n_nodes + 1, sizeof(*x->nodes));
    struct mnode *m = &x->nodes[x->n_nodes++];
    memset(m, 0, sizeof(*m));
    m->data = data;
    m->len = len;
    m->media_type = kiln_xstrdup(media_type);
    snprintf(m->digest, sizeof(m->digest), "%s", digest);
    m->kind = kind;
    m->platform = kiln_platform_copy(platform);
    return m;
}

/*
 * Read a manifest from the source: by `ref` (tag or digest) from a registry,
 * or the blob `ref` (a digest) from a layout. *ret_type gets the media type
 * the source gave (Content-Type, or the descriptor's `desc_type`).
 */
static int fetch(struct xfer *x, const char *ref, const char *desc_type, char **ret_data,
                 size_t *ret_len, char **ret_type, char ret_digest[KILN_DIGEST_BUFSZ],
                 struct kiln_error **err)
{
    if (x->src.is_registry) {
        struct kiln_registry_manifest m = KILN_REGISTRY_MANIFEST_INIT;
        int rc = kiln_registry_manifest_get(x->src.reg, x->src.repo, ref, NULL, &m, err);
        if (rc < 0)
            return rc;
        snprintf(ret_digest, KILN_DIGEST_BUFSZ, "%s", m.digest);
        *ret_data = TAKE_PTR(m.data);
        *ret_len = m.len;
        *ret_type =
            m.media_type ? TAKE_PTR(m.media_type) : (desc_type ? kiln_xstrdup(desc_type) : NULL);
        kiln_registry_manifest_release(&m);
        return 0;
    }
    int rc =
        kiln_layout_blob_read(x->src.layout, ref, KILN_MANIFEST_MAX_SIZE, ret_data, ret_len, err);
    if (rc < 0)
        return rc;
    snprintf(ret_digest, KILN_DIGEST_BUFSZ, "%s", ref);
    *ret_type = desc_type ? kiln_xstrdup(desc_type) : NULL;
    return 0;
}

/* The media type to serve a parsed manifest/index with. */
static const char *serve_type(enum kiln_manifest_kind kind, const char *given,
                              const struct kiln_manifest *m, const struct kiln_index *idx)
{
    if (given && kiln_manifest_kind_of(given) == kind)
        return given;
    return kind == KILN_KIND_INDEX ? kiln_index_media_type(idx) : kiln_manifest_media_type(m);
}

static int collect(struct xfer *x, char *data, size_t len, const char *type, const char *digest,
                   const struct kiln_platform *platform, bool top, int depth,
                   struct kiln_error **err)
{
    _cleanup_free_ char *owned = data;
    enum kiln_manifest_kind kind = KILN_KIND_UNKNOWN;
    _cleanup_(kiln_manifest_release) struct kiln_manifest m = KILN_MANIFEST_INIT;
    _cleanup_(kiln_index_release) struct kiln_index idx = KILN_INDEX_INIT;
    int rc = kiln_manifest_parse_any(data, len, type, &kind, &m, &idx, err);
    if (rc < 0)
        return kiln_error_prefix(err, "manifest %s", digest);
    const char *mt = serve_type(kind, type, &m, &idx);

    if (kind == KILN_KIND_MANIFEST) {
        add_blob(x, &m.config);
        for (size_t i = 0; i < m.n_layers; i++)
            add_blob(x, &m.layers[i]);
        add_node(x, TAKE_PTR(owned), len, mt, digest, kind, platform);
        return 0;
    }
    if (depth >= KILN_TRANSFER_MAX_DEPTH)
        return kiln_error_set(err, KILN_EUNSUPPORTED, 0, "index %s: nested more than %d deep",
                              digest, KILN_TRANSFER_MAX_DEPTH);
    if (top && !x->all) {
        const struct kiln_descriptor *d = NULL;
        rc = kiln_index_select(&idx, x->os, x->arch, x->variant, &d, err);
        if (rc < 0)
            return kiln_error_prefix(err, "index %s", digest);
        char *cdata = NULL, *ctype = NULL;
        size_t clen = 0;
        char cdigest[KILN_DIGEST_BUFSZ];
        rc = fetch(x, d->digest, d->media_type, &cdata, &clen, &ctype, cdigest, err);
        if (rc < 0)
            return rc;
        rc = collect(x, cdata, clen, ctype, cdigest, d->platform, true, depth + 1, err);
        free(ctype);
        return rc;
    }
    for (size_t i = 0; i < idx.n_manifests; i++) {
        const struct kiln_descriptor *d = &idx.manifests[i];
        char *cdata = NULL, *ctype = NULL;
        size_t clen = 0;
        char cdigest[KILN_DIGEST_BUFSZ];
        rc = fetch(x, d->digest, d->media_type, &cdata, &clen, &ctype, cdigest, err);
        if (rc < 0)
            return rc;
        rc = collect(x, cdata, clen, ctype, cdigest, d->platform, false, depth + 1, err);
        free(ctype);
        if (rc < 0)
            return rc;
    }
    /* an index is written after its children; it must be the last node when it is the top */
    add_node(x, TAKE_PTR(owned), len, mt, digest, kind, platform);
    return 0;
}

static int plan(struct xfer *x, struct kiln_error **err)
{
    char *data = NULL, *type = NULL;
    size_t len = 0;
    char digest[KILN_DIGEST_BUFSZ];
    int rc;
    if (x->src.is_registry) {
        const char *ref = x->src.ref.digest ? x->src.ref.digest : x->src.ref.tag;
        rc = fetch(x, ref, NULL, &data, &len, &type, digest, err);
    } else {
        _cleanup_(kiln_descriptor_release) struct kiln_descriptor d = KILN_DESCRIPTOR_INIT;
        rc = kiln_layout_resolve(x->src.layout, x->src.name, &d, err);
        if (rc >= 0)
            rc = fetch(x, d.digest, d.media_type, &data, &len, &type, digest, err);
    }
    if (rc < 0)
        return rc;
    rc = collect(x, data, len, type, digest, NULL, true, 0, err);
    free(type);
    return rc;
}

/* Docker-typed manifests and lists to OCI (layout_oci_types); children come first. */
static int convert_nodes(struct xfer *x, struct kiln_error **err)
{
    struct map {
        char from[KILN_DIGEST_BUFSZ];
        struct mnode *to;
    };
    _cleanup_free_ struct map *map = kiln_xreallocarray(NULL, x->n_nodes + 1, sizeof(*map));
    size_t n_map = 0;
    for (size_t i = 0; i < x->n_nodes; i++) {
        struct mnode *n = &x->nodes[i];
        enum kiln_manifest_kind kind;
        _cleanup_(kiln_manifest_release) struct kiln_manifest m = KILN_MANIFEST_INIT;
        _cleanup_(kiln_index_release) struct kiln_index idx = KILN_INDEX_INIT;
        int rc = kiln_manifest_parse_any(n->data, n->len, n->media_type, &kind, &m, &idx, err);
        if (rc < 0)
            return rc;
        bool docker = strstr(n->media_type, "vnd.docker.") != NULL;
        bool changed = false;
        _cleanup_(kiln_buf_release) struct kiln_buf out = KILN_BUF_INIT;
        kiln_buf_init(&out, KILN_MANIFEST_MAX_SIZE);
        if (kind == KILN_KIND_MANIFEST) {
            if (!docker)
                continue;
            rc = kiln_manifest_convert(&m, KILN_FORMAT_OCI, err);
            if (rc >= 0)
                rc = kiln_manifest_serialize(&m, &out, err);
            changed = true;
        } else {
            for (size_t j = 0; j < idx.n_manifests; j++) {
                struct kiln_descriptor *d = &idx.manifests[j];
                for (size_t k = 0; k < n_map; k++) {
                    if (strcmp(map[k].from, d->digest) == 0) {
                        free(d->digest);
                        d->digest = kiln_xstrdup(map[k].to->digest);
                        d->size = (int64_t)map[k].to->len;
                        free(d->media_type);
                        d->media_type = kiln_xstrdup(map[k].to->media_type);
                        changed = true;
                    }
                }
            }
            if (docker) {
                rc = kiln_index_convert(&idx, KILN_FORMAT_OCI, err);
                changed = true;
            }
            if (!changed)
                continue;
            if (rc >= 0)
                rc = kiln_index_serialize(&idx, &out, err);
        }
        if (rc < 0)
            return kiln_error_prefix(err, "convert %s to OCI media types", n->digest);
        if (out.err)
            return kiln_buf_finish(&out, "converted manifest", err);
        snprintf(map[n_map].from, sizeof(map[n_map].from), "%s", n->digest);
        map[n_map].to = n;
        n_map++;
        free(n->data);
        n->data = kiln_buf_detach(&out, &n->len);
        kiln_digest_buf(n->data, n->len, n->digest);
        free(n->media_type);
        n->media_type =
            kiln_xstrdup(kind == KILN_KIND_INDEX ? KILN_MT_OCI_INDEX : KILN_MT_OCI_MANIFEST);
    }
    return 0;
}

static int write_manifests(struct xfer *x, struct kiln_error **err)
{
    struct mnode *top = &x->nodes[x->n_nodes - 1];
    int rc;
    if (x->dst.is_registry) {
        for (size_t i = 0; i + 1 < x->n_nodes; i++) {
            struct mnode *n = &x->nodes[i];
            rc = kiln_registry_manifest_put(x->dst.reg, x->dst.repo, n->digest, n->media_type,
                                            n->data, n->len, NULL, err);
            if (rc < 0)
                return rc;
            x->res.n_manifests++;
            emit(x, KILN_TRANSFER_MANIFEST, NULL, n, n->digest);
        }
        if (x->dst.ref.digest && strcmp(x->dst.ref.digest, top->digest) != 0)
            return kiln_error_set(err, KILN_EINVAL, 0,
                                  "the destination names digest %s, the image is %s",
                                  x->dst.ref.digest, top->digest);
        const char *first = x->dst.ref.tag ? x->dst.ref.tag : top->digest;
        rc = kiln_registry_manifest_put(x->dst.reg, x->dst.repo, first, top->media_type, top->data,
                                        top->len, NULL, err);
        if (rc < 0)
            return rc;
        x->res.n_manifests++;
        emit(x, KILN_TRANSFER_MANIFEST, NULL, top, first);
        for (size_t i = 0; x->tags && x->tags[i]; i++) {
            rc = kiln_registry_manifest_put(x->dst.reg, x->dst.repo, x->tags[i], top->media_type,
                                            top->data, top->len, NULL, err);
            if (rc < 0)
                return rc;
            emit(x, KILN_TRANSFER_MANIFEST, NULL, top, x->tags[i]);
        }
        return 0;
    }
    for (size_t i = 0; i < x->n_nodes; i++) {
        struct mnode *n = &x->nodes[i];
        rc = kiln_layout_blob_write(x->dst.layout, n->data, n->len, n->digest, NULL, err);
        if (rc < 0)
            return rc;
        x->res.n_manifests++;
    }
    struct kiln_descriptor d = KILN_DESCRIPTOR_INIT;
    d.media_type = top->media_type;
    d.digest = top->digest;
    d.size = (int64_t)top->len;
    d.platform = top->platform;
    const char *name = x->dst.name;
    if (!name)
        name = x->src.is_registry ? x->src.ref.tag : x->src.name;
    rc = kiln_layout_index_add(x->dst.layout, &d, name, err);
    if (rc < 0)
        return rc;
    emit(x, KILN_TRANSFER_MANIFEST, NULL, top, name ? name : top->digest);
    for (size_t i = 0; x->tags && x->tags[i]; i++) {
        rc = kiln_layout_index_add(x->dst.layout, &d, x->tags[i], err);
        if (rc < 0)
            return rc;
        emit(x, KILN_TRANSFER_MANIFEST, NULL, top, x->tags[i]);
    }
    return 0;
}

/*
 * A registry destination whose tag (or digest) already names the manifest
 * being copied, with no extra tags to write: the copy has nothing to do. A
 * registry only accepts a manifest whose blobs it holds, so they are not
 * looked up one by one (a warm copy is then two requests instead of one
 * per blob). Any doubt (an error, another digest) means the full copy.
 */
static bool dst_names_image(struct xfer *x)
{
    if (!x->dst.is_registry || (x->tags && x->tags[0]) || x->n_nodes == 0)
        return false;
    const struct mnode *top = &x->nodes[x->n_nodes - 1];
    const char *ref = x->dst.ref.tag ? x->dst.ref.tag : top->digest;
    struct kiln_registry_manifest have = {0};
    int h = kiln_registry_manifest_head(x->dst.reg, x->dst.repo, ref, NULL, &have, NULL);
    bool same = h == 1 && have.digest && strcmp(have.digest, top->digest) == 0;
    kiln_registry_manifest_release(&have);
    return same;
}

/* ---- sides ---------------------------------------------------------------------- */

static int open_registry_side(struct xfer *x, struct side *s, int which, const char *ref,
                              const struct kiln_registry_options *ro, struct kiln_registry *shared,
                              struct kiln_error **err)
{
    s->is_registry = true;
    int rc = kiln_ref_parse_normalized(ref, &s->ref, err);
    if (rc < 0)
        return rc;
    s->repo = s->ref.path;
    s->display = kiln_ref_string(&s->ref);
    if (shared) {
        s->reg = shared;
        return 0;
    }
    struct kiln_registry_options o = {0};
    if (ro)
        o = *ro;
    x->hooks[which].x = x;
    x->hooks[which].chained = o.progress;
    x->hooks[which].chained_data = o.progress_data;
    o.progress = http_progress;
    o.progress_data = &x->hooks[which];
    rc = kiln_registry_new(s->ref.domain, &o, &s->reg, err);
    if (rc < 0)
        return rc;
    s->own_reg = true;
    return 0;
}

static int open_layout_side(struct side *s, const char *dir, const char *name, bool create,
                            struct kiln_error **err)
{
    s->is_registry = false;
    s->name = name;
    s->display = kiln_xasprintf("oci:%s%s%s", dir, name ? ":" : "", name ? name : "");
    if (name && !kiln_layout_ref_name_ok(name))
        return kiln_error_set(err, KILN_EINVAL, 0, "invalid layout ref name '%s'", name);
    int rc = kiln_layout_open(dir, &s->layout, create ? NULL : err);
    if (rc == -KILN_ENOTFOUND && create)
        rc = kiln_layout_create(dir, &s->layout, err);
    else if (rc < 0 && create)
        rc = kiln_layout_open(dir, &s->layout, err); /* again, for the message */
    return rc;
}

static void side_release(struct side *s)
{
    if (s->own_reg)
        kiln_registry_free(s->reg);
    kiln_layout_free(s->layout);
    kiln_ref_release(&s->ref);
    free(s->display);
}

static void xfer_release(struct xfer *x)
{
    side_release(&x->dst);
    side_release(&x->src);
    for (size_t i = 0; i < x->n_nodes; i++) {
        free(x->nodes[i].data);
        free(x->nodes[i].media_type);
        kiln_platform_free(x->nodes[i].platform);
    }
    free(x->nodes);
    for (size_t i = 0; i < x->n_blobs; i++) {
        free(x->blobs[i].digest);
        free(x->blobs[i].media_type);
    }
    free(x->blobs);
    free(x->order);
    kiln_error_free(x->err);
    pthread_cond_destroy(&x->lane_cond);
    pthread_mutex_destroy(&x->lock);
}

static void set_options(struct xfer *x, const struct kiln_transfer_options *o)
{
    static const struct kiln_transfer_options none;
    if (!o)
        o = &none;
    x->os = o->os && *o->os ? o->os : "linux";
    x->arch = o->arch && *o->arch ? o->arch : "amd64";
    x->variant = o->variant && *o->variant ? o->variant : NULL;
    x->all = o->all;
    x->jobs = o->jobs > 0 ? o->jobs : KILN_TRANSFER_JOBS;
    if (x->jobs > KILN_TRANSFER_MAX_JOBS)
        x->jobs = KILN_TRANSFER_MAX_JOBS;
    x->tags = o->tags;
    x->stream_chunk = o->stream_chunk ? o->stream_chunk : KILN_TRANSFER_STREAM_CHUNK;
    x->splice_chunk = o->stream_chunk;
    x->verify = o->verify_streams;
    atomic_store(&x->no_splice, o->no_splice || o->verify_streams);
    x->layout_oci_types = o->layout_oci_types;
    x->progress = o->progress;
}

static bool endpoint_ok(const struct kiln_transfer_endpoint *e)
{
    return e && (e->ref != NULL) != (e->layout != NULL);
}

static int check_tags(struct xfer *x, struct kiln_error **err)
{
    for (size_t i = 0; x->tags && x->tags[i]; i++) {
        bool ok = x->dst.is_registry ? kiln_registry_tag_valid(x->tags[i])
                                     : kiln_layout_ref_name_ok(x->tags[i]);
        if (!ok)
            return kiln_error_set(err, KILN_EINVAL, 0, "invalid tag '%s'", x->tags[i]);
    }
    return 0;
}

static int transfer(const struct kiln_transfer_endpoint *src,
                    const struct kiln_transfer_endpoint *dst, const struct kiln_transfer_options *o,
                    struct kiln_transfer_result *ret, struct kiln_error **err)
{
    if (!endpoint_ok(src) || !endpoint_ok(dst))
        return kiln_error_set(err, KILN_EINVAL, 0,
                              "a transfer endpoint needs either a reference or a layout");
    struct xfer x;
    memset(&x, 0, sizeof(x));
    pthread_mutex_init(&x.lock, NULL);
    pthread_cond_init(&x.lane_cond, NULL);
    atomic_init(&x.stop, false);
    set_options(&x, o);

    int rc = 0;
    if (src->ref && dst->ref) {
        struct kiln_ref sr = KILN_REF_INIT, dr = KILN_REF_INIT;
        if (kiln_ref_parse_normalized(src->ref, &sr, NULL) >= 0 &&
            kiln_ref_parse_normalized(dst->ref, &dr, NULL) >= 0)
            x.same_registry = strcasecmp(sr.domain, dr.domain) == 0;
        kiln_ref_release(&sr);
        kiln_ref_release(&dr);
    }
    /* the source first: nothing is created at the destination for a missing image */
    if (src->ref)
        rc = open_registry_side(&x, &x.src, 0, src->ref,
                                x.same_registry ? dst->registry : src->registry, NULL, err);
    else
        rc = open_layout_side(&x.src, src->layout, src->name, false, err);
    if (rc < 0)
        goto out;
    x.dst.is_registry = dst->ref != NULL;
    rc = check_tags(&x, err);
    if (rc < 0)
        goto out;
    rc = plan(&x, err);
    if (rc < 0)
        goto out;
    x.max_resumes = dst->registry && dst->registry->max_resumes > 0 ? dst->registry->max_resumes
                                                                    : KILN_REGISTRY_MAX_RESUMES;
    if (dst->ref)
        rc = open_registry_side(&x, &x.dst, 1, dst->ref, dst->registry,
                                x.same_registry ? x.src.reg : NULL, err);
    else
        rc = open_layout_side(&x.dst, dst->layout, dst->name, true, err);
    if (rc < 0)
        goto out;
    if (!x.dst.is_registry && x.layout_oci_types) {
        rc = convert_nodes(&x, err);
        if (rc < 0)
            goto out;
    }
    x.res.n_blobs = x.n_blobs;
    x.res.total_size = x.total_size;
    if (dst_names_image(&x)) {
        /* nothing to do: the destination already names this very manifest */
        x.res.n_skipped = x.n_blobs;
        emit(&x, KILN_TRANSFER_MANIFEST, NULL, &x.nodes[x.n_nodes - 1],
             x.dst.ref.tag ? x.dst.ref.tag : x.nodes[x.n_nodes - 1].digest);
    } else {
        rc = run_blobs(&x, err);
        if (rc < 0)
            goto out;
        rc = write_manifests(&x, err);
        if (rc < 0)
            goto out;
    }
    if (ret) {
        struct mnode *top = &x.nodes[x.n_nodes - 1];
        *ret = x.res;
        snprintf(ret->digest, sizeof(ret->digest), "%s", top->digest);
        snprintf(ret->media_type, sizeof(ret->media_type), "%s", top->media_type);
        ret->size = top->len;
    }
    rc = 0;
out:
    if (rc < 0 && err && *err) {
        const char *s = x.src.display ? x.src.display : (src->ref ? src->ref : src->layout);
        const char *d = x.dst.display ? x.dst.display : (dst->ref ? dst->ref : dst->layout);
        if (src->ref && !dst->ref)
            kiln_error_prefix(err, "pull '%s'", s);
        else if (!src->ref && dst->ref)
            kiln_error_prefix(err, "push to '%s'", d);
        else
            kiln_error_prefix(err, "copy '%s' to '%s'", s, d);
    }
    xfer_release(&x);
    return rc;
}

int kiln_transfer_copy(const struct kiln_transfer_endpoint *src,
                       const struct kiln_transfer_endpoint *dst,
                       const struct kiln_transfer_options *o, struct kiln_transfer_result *ret,
                       struct kiln_error **err)
{
    return transfer(src, dst, o, ret, err);
}

int kiln_transfer_pull(const char *ref, const struct kiln_registry_options *ro, const char *dir,
                       const char *name, const struct kiln_transfer_options *o,
                       struct kiln_transfer_result *ret, struct kiln_error **err)
{
    if (!ref || !dir)
        return kiln_error_set(err, KILN_EINVAL, 0, "pull needs a reference and a directory");
    struct kiln_transfer_endpoint src = {.ref = ref, .registry = ro};
    struct kiln_transfer_endpoint dst = {.layout = dir, .name = name};
    return transfer(&src, &dst, o, ret, err);
}

int kiln_transfer_push(const char *dir, const char *name, const char *ref,
                       const struct kiln_registry_options *ro,
                       const struct kiln_transfer_options *o, struct kiln_transfer_result *ret,
                       struct kiln_error **err)
{
    if (!ref || !dir)
        return kiln_error_set(err, KILN_EINVAL, 0, "push needs a directory and a reference");
    struct kiln_transfer_endpoint src = {.layout = dir, .name = name};
    struct kiln_transfer_endpoint dst = {.ref = ref, .registry = ro};
    return transfer(&src, &dst, o, ret, err);
}

/* ---- inspect ---------------------------------------------------------------------- */

void kiln_image_info_release(struct kiln_image_info *info)
{
    if (!info)
        return;
    free(info->ref);
    free(info->digest);
    free(info->media_type);
    free(info->raw);
    kiln_index_release(&info->index);
    free(info->manifest_digest);
    free(info->manifest_media_type);
    free(info->manifest_raw);
    kiln_manifest_release(&info->manifest);
    free(info->config_raw);
    kiln_image_config_release(&info->config);
    *info = (struct kiln_image_info)KILN_IMAGE_INFO_INIT;
}

static int inspect(struct xfer *x, enum kiln_inspect_depth depth_wanted,
                   struct kiln_image_info *info, struct kiln_error **err)
{
    const char *ref = x->src.ref.digest ? x->src.ref.digest : x->src.ref.tag;
    char digest[KILN_DIGEST_BUFSZ];
    info->ref = kiln_ref_string(&x->src.ref);
    int rc = fetch(x, ref, NULL, &info->raw, &info->raw_len, &info->media_type, digest, err);
    if (rc < 0)
        return rc;
    info->digest = kiln_xstrdup(digest);
    enum kiln_manifest_kind kind = KILN_KIND_UNKNOWN;
    rc = kiln_manifest_parse_any(info->raw, info->raw_len, info->media_type, &kind, &info->manifest,
                                 &info->index, err);
    if (rc < 0)
        return kiln_error_prefix(err, "manifest %s", digest);
    const char *mt = serve_type(kind, info->media_type, &info->manifest, &info->index);
    if (!info->media_type || strcmp(mt, info->media_type) != 0) {
        char *t = kiln_xstrdup(mt);
        free(info->media_type);
        info->media_type = t;
    }
    if (kind == KILN_KIND_INDEX && depth_wanted == KILN_INSPECT_TOP) {
        info->is_index = true;
        return 0;
    }
    if (kind == KILN_KIND_INDEX) {
        info->is_index = true;
        const struct kiln_descriptor *d = NULL;
        for (int depth = 0;; depth++) {
            const struct kiln_index *idx = &info->index;
            _cleanup_(kiln_index_release) struct kiln_index nested = KILN_INDEX_INIT;
            if (depth > 0) {
                /* a nested index: pick again from it */
                rc = kiln_index_parse(info->manifest_raw, info->manifest_len,
                                      info->manifest_media_type, &nested, err);
                if (rc < 0)
                    return rc;
                idx = &nested;
                free(info->manifest_raw);
                info->manifest_raw = NULL;
                free(info->manifest_media_type);
                info->manifest_media_type = NULL;
            }
            rc = kiln_index_select(idx, x->os, x->arch, x->variant, &d, err);
            if (rc < 0)
                return kiln_error_prefix(err, "index %s", digest);
            free(info->manifest_digest);
            info->manifest_digest = NULL;
            rc = fetch(x, d->digest, d->media_type, &info->manifest_raw, &info->manifest_len,
                       &info->manifest_media_type, digest, err);
            if (rc < 0)
                return rc;
            info->manifest_digest = kiln_xstrdup(digest);
            enum kiln_manifest_kind ck = kiln_manifest_kind_of(info->manifest_media_type);
            if (ck != KILN_KIND_INDEX)
                break;
            if (depth + 1 >= KILN_TRANSFER_MAX_DEPTH)
                return kiln_error_set(err, KILN_EUNSUPPORTED, 0, "index %s: nested too deep",
                                      digest);
        }
        rc = kiln_manifest_parse(info->manifest_raw, info->manifest_len, info->manifest_media_type,
                                 &info->manifest, err);
        if (rc < 0)
            return kiln_error_prefix(err, "manifest %s", info->manifest_digest);
        mt = serve_type(KILN_KIND_MANIFEST, info->manifest_media_type, &info->manifest, NULL);
        char *t = kiln_xstrdup(mt);
        free(info->manifest_media_type);
        info->manifest_media_type = t;
    } else {
        info->manifest_digest = kiln_xstrdup(info->digest);
        info->manifest_media_type = kiln_xstrdup(info->media_type);
        info->manifest_raw = kiln_xstrndup(info->raw, info->raw_len);
        info->manifest_len = info->raw_len;
    }
    if (depth_wanted != KILN_INSPECT_CONFIG)
        return 0;
    const struct kiln_descriptor *c = &info->manifest.config;
    if ((uint64_t)c->size > KILN_IMAGE_CONFIG_MAX_SIZE)
        return kiln_error_set(err, KILN_ETOOBIG, 0, "config %s: %lld bytes, more than %zu",
                              c->digest, (long long)c->size, KILN_IMAGE_CONFIG_MAX_SIZE);
    _cleanup_(kiln_buf_release) struct kiln_buf b = KILN_BUF_INIT;
    kiln_buf_init(&b, KILN_IMAGE_CONFIG_MAX_SIZE);
    rc = kiln_registry_blob_get(x->src.reg, x->src.repo, c->digest, c->size, kiln_buf_sink, &b,
                                NULL, err);
    if (rc < 0)
        return rc;
    info->config_raw = kiln_buf_detach(&b, &info->config_len);
    bool image_config = !c->media_type || strcmp(c->media_type, KILN_MT_OCI_CONFIG) == 0 ||
                        strcmp(c->media_type, KILN_MT_DOCKER_CONFIG) == 0;
    if (image_config) {
        rc = kiln_image_config_parse(info->config_raw, info->config_len, &info->config, err);
        if (rc < 0)
            return kiln_error_prefix(err, "config %s", c->digest);
    }
    return 0;
}

int kiln_transfer_inspect(const char *ref, const struct kiln_registry_options *ro,
                          const struct kiln_transfer_options *o, enum kiln_inspect_depth depth,
                          struct kiln_image_info *ret, struct kiln_error **err)
{
    struct xfer x;
    memset(&x, 0, sizeof(x));
    pthread_mutex_init(&x.lock, NULL);
    pthread_cond_init(&x.lane_cond, NULL);
    atomic_init(&x.stop, false);
    set_options(&x, o);
    struct kiln_image_info info = KILN_IMAGE_INFO_INIT;
    int rc = open_registry_side(&x, &x.src, 0, ref, ro, NULL, err);
    if (rc >= 0)
        rc = inspect(&x, depth, &info, err);
    if (rc < 0) {
        if (err && *err)
            kiln_error_prefix(err, "inspect '%s'", x.src.display ? x.src.display : ref);
        kiln_image_info_release(&info);
    } else {
        *ret = info;
    }
    xfer_release(&x);
    return rc < 0 ? rc : 0;
}
