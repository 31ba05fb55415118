/*
 * libmicrohttpd in "internal polling thread" mode with epoll and a thread
 * pool (MHD_OPTION_THREAD_POOL_SIZE): a few threads serve every connection,
 * which keeps short API calls fast under many keep-alive clients (the
 * list/tail benchmark), unlike a thread per connection.
 *
 * Streams (log ?follow=1, /events) must not hold a pool thread while they
 * wait for the log to grow: their content reader returns what is ready, and
 * when nothing is, suspends its connection (MHD_suspend_connection, allowed
 * from a content reader) and returns 0. A ticker thread resumes every
 * suspended stream each TICK_MS; the reader then looks at the log file and
 * the job again. A suspended connection costs no thread and no CPU.
 *
 * Lock order: srv->mu, then libmicrohttpd's own locks (suspend and resume
 * are called with srv->mu held). Callbacks that libmicrohttpd may call with
 * its locks held (completion, response free) never take srv->mu.
 *
 * Stop: stop accepting (MHD_quiesce_daemon), make streams end (their next
 * read returns the end, so chunked replies finish properly), resume the
 * suspended ones, wait a little for them to finish, then MHD_stop_daemon,
 * which waits for the handlers running in the pool threads.
 */
#include "util/common.h"
#include "service/server.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "service/api.h"
#include "service/apijson.h"
#include "util/log.h"

#define TICK_MS        200
#define STREAM_BLOCK   (16 * 1024)
#define STOP_WAIT_MS   5000
#define DISCARD_MAX    ((uint64_t)16 << 20) /* body bytes read past the cap before hanging up */
#define CONN_MEMORY    ((size_t)128 * 1024)
#define CONN_TIMEOUT_S 120
#define MIN_THREADS    2
#define MAX_THREADS    64

struct stream_ctx;

struct kiln_server {
    struct MHD_Daemon *d;
    struct kiln_api *api;
    uint16_t port;

    pthread_mutex_t mu;
    pthread_cond_t cond;
    bool stopping;            /* under mu: no stream suspends any more */
    bool quit;                /* under mu: the ticker ends */
    struct stream_ctx **susp; /* under mu: suspended streams */
    size_t nsusp, asusp;
    pthread_t ticker;
    bool ticker_started;

    int active_streams; /* atomic */
    char last_log[256]; /* libmicrohttpd's last message (start errors) */
};

struct stream_ctx {
    struct kiln_server *srv;
    struct MHD_Connection *conn;
    struct kiln_api_stream *st;
};

struct request {
    struct kiln_buf body;
    bool too_big;
    bool answered;
    uint64_t discarded;
};

__attribute__((format(printf, 2, 0))) static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    struct kiln_server *srv = cls;
    char *msg = kiln_xvasprintf(fmt, ap);
    size_t len = strlen(msg);
    while (len && (msg[len - 1] == '\n' || msg[len - 1] == '\r'))
        msg[--len] = '\0';
    snprintf(srv->last_log, sizeof(srv->last_log), "%s", msg);
    kiln_log(KILN_LOG_WARN, "http: %s", msg);
    free(msg);
}

/* ---- streams ---- */

static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct stream_ctx *sc = cls;
    ssize_t n = kiln_api_stream_read(sc->st, buf, max);
    if (n > 0)
        return n;
    if (n < 0)
        return MHD_CONTENT_READER_END_OF_STREAM;
    struct kiln_server *srv = sc->srv;
    pthread_mutex_lock(&srv->mu);
    if (srv->stopping) {
        pthread_mutex_unlock(&srv->mu);
        return MHD_CONTENT_READER_END_OF_STREAM;
    }
    if (srv->nsusp == srv->asusp) {
        srv->asusp = srv->asusp ? 2 * srv->asusp : 16;
        srv->susp = kiln_xreallocarray(srv->susp, srv->asusp, sizeof(*srv->susp));
    }
    srv->susp[srv->nsusp++] = sc;
    MHD_suspend_connection(sc->conn);
    pthread_mutex_unlock(&srv->mu);
    return 0;
}

static void stream_free(void *cls)
{
    struct stream_ctx *sc = cls;
    kiln_api_stream_free(sc->st);
    __atomic_sub_fetch(&sc->srv->active_streams, 1, __ATOMIC_SEQ_CST);
    free(sc);
}

/* Resume every suspended stream; srv->mu held. */
static void resume_all(struct kiln_server *srv)
{
    for (size_t i = 0; i < srv->nsusp; i++)
        MHD_resume_connection(srv->susp[i]->conn);
    srv->nsusp = 0;
}

static void *ticker_main(void *arg)
{
    struct kiln_server *srv = arg;
    pthread_mutex_lock(&srv->mu);
    while (!srv->quit) {
        resume_all(srv);
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += (long)TICK_MS * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&srv->cond, &srv->mu, &ts);
    }
    resume_all(srv);
    pthread_mutex_unlock(&srv->mu);
    return NULL;
}

/* ---- requests ---- */

static enum MHD_Result collect_arg(void *cls, enum MHD_ValueKind kind, const char *key,
                                   const char *value)
{
    struct kiln_strv *q = cls;
    if (q->n >= 2 * 64) /* enough for every route; the rest is ignored */
        return MHD_NO;
    kiln_strv_push(q, key ? key : "");
    kiln_strv_push(q, value ? value : "");
    return MHD_YES;
}

static const char *header(struct MHD_Connection *c, const char *name)
{
    return MHD_lookup_connection_value(c, MHD_HEADER_KIND, name);
}

static enum MHD_Result send_response(struct kiln_server *srv, struct MHD_Connection *c,
                                     struct kiln_api_response *r)
{
    struct MHD_Response *resp = NULL;
    if (r->stream) {
        struct stream_ctx *sc = kiln_xcalloc(1, sizeof(*sc));
        sc->srv = srv;
        sc->conn = c;
        sc->st = TAKE_PTR(r->stream);
        __atomic_add_fetch(&srv->active_streams, 1, __ATOMIC_SEQ_CST);
        resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, STREAM_BLOCK, stream_reader, sc,
                                                 stream_free);
        if (!resp)
            stream_free(sc);
    } else if (r->body_fd >= 0) {
        resp =
            MHD_create_response_from_fd_at_offset64(r->body_fd_len, r->body_fd, r->body_fd_offset);
        if (resp)
            r->body_fd = -1; /* libmicrohttpd closes it */
    } else if (r->static_body) {
        resp = MHD_create_response_from_buffer(r->static_len, (void *)r->static_body,
                                               MHD_RESPMEM_PERSISTENT);
    } else {
        size_t len = 0;
        char *body = kiln_buf_detach(&r->body, &len);
        resp = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
        if (!resp)
            free(body);
    }
    if (!resp) {
        kiln_log(KILN_LOG_ERROR, "http: cannot create a response");
        kiln_api_response_release(r);
        return MHD_NO;
    }
    for (size_t i = 0; i + 1 < r->headers.n; i += 2)
        MHD_add_response_header(resp, r->headers.v[i], r->headers.v[i + 1]);
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)r->status, resp);
    MHD_destroy_response(resp);
    kiln_api_count(srv->api, r->status);
    kiln_api_response_release(r);
    return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    struct kiln_server *srv = cls;
    struct request *rq = *con_cls;
    struct kiln_api_response resp;

    if (!rq) {
        rq = kiln_xcalloc(1, sizeof(*rq));
        kiln_buf_init(&rq->body, KILN_API_MAX_BODY);
        *con_cls = rq;
        /* Refuse before reading any body: no valid token, or a declared size over the cap. */
        if (kiln_api_path_needs_auth(url)) {
            const char *auth = header(c, MHD_HTTP_HEADER_AUTHORIZATION);
            if (!kiln_api_authorized(srv->api, auth)) {
                rq->answered = true;
                kiln_api_response_init(&resp);
                kiln_api_unauthorized(&resp, auth);
                kiln_api_response_add_header(&resp, "X-Content-Type-Options", "nosniff");
                return send_response(srv, c, &resp);
            }
        }
        const char *cl = header(c, MHD_HTTP_HEADER_CONTENT_LENGTH);
        uint64_t declared = 0;
        if (cl && kiln_apijson_parse_uint(cl, UINT64_MAX, &declared) == 0 &&
            declared > KILN_API_MAX_BODY) {
            rq->answered = true;
            kiln_api_response_init(&resp);
            _cleanup_free_ char *msg =
                kiln_xasprintf("request body is larger than %zu bytes", KILN_API_MAX_BODY);
            kiln_api_error_response(&resp, 413, "too_big", msg);
            return send_response(srv, c, &resp);
        }
        return MHD_YES;
    }

    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (rq->answered)
            return MHD_YES;
        if (!rq->too_big && rq->body.len + n > KILN_API_MAX_BODY) {
            rq->too_big = true;
            kiln_buf_release(&rq->body);
        }
        if (rq->too_big) {
            rq->discarded += n;
            return rq->discarded > DISCARD_MAX ? MHD_NO : MHD_YES;
        }
        kiln_buf_add(&rq->body, upload_data, n);
        return MHD_YES;
    }
    if (rq->answered)
        return MHD_YES;
    rq->answered = true;

    struct kiln_strv q = KILN_STRV_INIT;
    MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, collect_arg, &q);
    struct kiln_api_request req = {
        .method = method,
        .path = url,
        .query = (const char *const *)q.v,
        .authorization = header(c, MHD_HTTP_HEADER_AUTHORIZATION),
        .if_none_match = header(c, MHD_HTTP_HEADER_IF_NONE_MATCH),
        .last_event_id = header(c, "Last-Event-ID"),
        .body = rq->body.buf,
        .body_len = rq->body.len,
        .body_too_big = rq->too_big,
    };
    kiln_api_response_init(&resp);
    kiln_api_handle(srv->api, &req, &resp);
    kiln_strv_release(&q);
    kiln_log(KILN_LOG_DEBUG, "http: %s %s %d", method, url, resp.status);
    return send_response(srv, c, &resp);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct request *rq = *con_cls;
    if (!rq)
        return;
    kiln_buf_release(&rq->body);
    free(rq);
    *con_cls = NULL;
}

/* ---- start and stop ---- */

static int parse_listen(const char *listen, struct sockaddr_storage *ss, bool *v6,
                        struct kiln_error **err)
{
    const char *colon = strrchr(listen, ':');
    if (!colon)
        return kiln_error_set(err, KILN_EINVAL, 0, "listen address '%s': expected ADDR:PORT",
                              listen);
    _cleanup_free_ char *host = kiln_xstrndup(listen, (size_t)(colon - listen));
    uint64_t port;
    if (kiln_apijson_parse_uint(colon + 1, 65535, &port) < 0)
        return kiln_error_set(err, KILN_EINVAL, 0, "listen address '%s': bad port", listen);
    memset(ss, 0, sizeof(*ss));
    size_t hl = strlen(host);
    if (hl >= 2 && host[0] == '[' && host[hl - 1] == ']') {
        host[hl - 1] = '\0';
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        if (inet_pton(AF_INET6, host + 1, &s6->sin6_addr) != 1)
            return kiln_error_set(err, KILN_EINVAL, 0, "listen address '%s': bad IPv6 address",
                                  listen);
        *v6 = true;
        return 0;
    }
    struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
    s4->sin_family = AF_INET;
    s4->sin_port = htons((uint16_t)port);
    const char *addr = host;
    if (!*addr || !strcmp(addr, "*"))
        addr = "0.0.0.0";
    else if (!strcmp(addr, "localhost"))
        addr = "127.0.0.1";
    if (inet_pton(AF_INET, addr, &s4->sin_addr) != 1)
        return kiln_error_set(err, KILN_EINVAL, 0,
                              "listen address '%s': expected an IPv4 address or [IPv6]:PORT",
                              listen);
    *v6 = false;
    return 0;
}

int kiln_server_start(const struct kiln_server_options *o, struct kiln_server **ret,
                      struct kiln_error **err)
{
    if (!o || !o->store || !o->token_sha256 || !o->data_dir)
        return kiln_error_set(err, KILN_EINVAL, 0,
                              "server: a store, a data directory and a token hash are needed");
    struct sockaddr_storage ss;
    bool v6 = false;
    int r = parse_listen(o->listen ? o->listen : "127.0.0.1:8080", &ss, &v6, err);
    if (r < 0)
        return r;

    struct kiln_server *srv = kiln_xcalloc(1, sizeof(*srv));
    struct kiln_api_options ao = {
        .store = o->store,
        .jobs = o->jobs,
        .data_dir = o->data_dir,
        .token_sha256 = o->token_sha256,
        .registry = o->registry,
    };
    r = kiln_api_new(&ao, &srv->api, err);
    if (r < 0) {
        free(srv);
        return r;
    }
    pthread_mutex_init(&srv->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&srv->cond, &ca);
    pthread_condattr_destroy(&ca);

    /* A thread per CPU serves best (the bench: 2 threads on 2 cores beat 4). */
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    unsigned threads = o->threads > 0 ? (unsigned)o->threads
                                      : (unsigned)(cpus < MIN_THREADS   ? MIN_THREADS
                                                   : cpus > MAX_THREADS ? MAX_THREADS
                                                                        : cpus);
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME |
                     MHD_USE_ERROR_LOG;
    if (v6)
        flags |= MHD_USE_IPv6;
    /* the logger first, so that option errors reach it too */
    srv->d = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, srv, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, srv,
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss, MHD_OPTION_THREAD_POOL_SIZE, threads,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, srv, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)CONN_TIMEOUT_S, MHD_OPTION_CONNECTION_MEMORY_LIMIT, CONN_MEMORY,
        MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned)1024, MHD_OPTION_END);
    if (!srv->d) {
        r = kiln_error_set(err, KILN_EIO, 0, "listen on '%s': %s",
                           o->listen ? o->listen : "127.0.0.1:8080",
                           srv->last_log[0] ? srv->last_log : "cannot start the http server");
        goto fail;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(srv->d, MHD_DAEMON_INFO_BIND_PORT);
    srv->port = info ? info->port : 0;
    if (pthread_create(&srv->ticker, NULL, ticker_main, srv) != 0) {
        r = kiln_error_set(err, KILN_EIO, errno, "server: start the stream ticker");
        MHD_stop_daemon(srv->d);
        goto fail;
    }
    srv->ticker_started = true;
    *ret = srv;
    return 0;
fail:
    pthread_mutex_destroy(&srv->mu);
    pthread_cond_destroy(&srv->cond);
    kiln_api_free(srv->api);
    free(srv);
    return r;
}

uint16_t kiln_server_port(const struct kiln_server *s)
{
    return s ? s->port : 0;
}

void kiln_server_stop(struct kiln_server *s)
{
    if (!s)
        return;
    kiln_api_stop_streams(s->api);
    pthread_mutex_lock(&s->mu);
    s->stopping = true;
    resume_all(s);
    pthread_mutex_unlock(&s->mu);
    MHD_socket lfd = MHD_quiesce_daemon(s->d);

    /* Let the streams send their end (the chunked terminator) before the hard stop. */
    for (int waited = 0; waited < STOP_WAIT_MS; waited += 10) {
        if (__atomic_load_n(&s->active_streams, __ATOMIC_SEQ_CST) == 0)
            break;
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }

    pthread_mutex_lock(&s->mu);
    s->quit = true;
    pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->mu);
    if (s->ticker_started)
        pthread_join(s->ticker, NULL);
    MHD_stop_daemon(s->d); /* waits for the handlers in the pool threads */
    if (lfd != MHD_INVALID_SOCKET)
        close(lfd);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cond);
    free(s->susp);
    kiln_api_free(s->api);
    free(s);
}
