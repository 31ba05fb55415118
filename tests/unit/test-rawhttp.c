/*
 * Unit tests of registry/rawhttp.c: head parsing, then requests over real
 * loopback sockets to small scripted servers, each running in a thread of
 * its own and serving one connection.
 */
#include "util/common.h"
#include "registry/rawhttp.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "util/sha256.h"

#include "tap.h"

#define CHUNK    ((size_t)64 << 10)
#define HEAD_CAP ((size_t)64 << 10)

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- generated bodies ------------------------------------------------------------ */

/* splitmix64: a stream of bytes fixed by its seed. */
struct prng {
    uint64_t s;
};

static uint64_t prng_next(struct prng *p)
{
    uint64_t z = (p->s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* The next n bytes; n is a multiple of 8 except in the last call on a stream. */
static void prng_fill(struct prng *p, uint8_t *buf, size_t n)
{
    for (size_t i = 0; i < n; i += 8) {
        uint64_t v = prng_next(p);
        memcpy(buf + i, &v, n - i < 8 ? n - i : 8);
    }
}

/* The first len bytes of the stream of `seed`, in CHUNK pieces as the servers send them. */
static void stream_hex(uint64_t seed, uint64_t len, char hex[KILN_SHA256_HEX_LEN + 1])
{
    struct prng p = {seed};
    struct kiln_sha256 sh;
    uint8_t *buf = kiln_xmalloc(CHUNK);
    kiln_sha256_init(&sh);
    for (uint64_t done = 0; done < len;) {
        size_t n = len - done < CHUNK ? (size_t)(len - done) : CHUNK;
        prng_fill(&p, buf, n);
        kiln_sha256_update(&sh, buf, n);
        done += n;
    }
    kiln_sha256_final_hex(&sh, hex);
    kiln_sha256_release(&sh);
    free(buf);
}

static uint8_t *stream_bytes(uint64_t seed, size_t len)
{
    struct prng p = {seed};
    uint8_t *buf = kiln_xmalloc(len + 1);
    for (size_t done = 0; done < len;) {
        size_t n = len - done < CHUNK ? len - done : CHUNK;
        prng_fill(&p, buf + done, n);
        done += n;
    }
    return buf;
}

/* ---- scripted servers ------------------------------------------------------------- */

struct server {
    /* the script, set before server_start() */
    const char *answer;   /* bytes sent after the request (a head...), or NULL: none */
    size_t answer_len;    /* 0: strlen(answer) */
    uint64_t body_len;    /* generated body bytes after the answer */
    uint64_t body_cut;    /* when nonzero, send only this many of them, then close */
    uint64_t seed;        /* of the generated body */
    bool read_body;       /* read the request's Content-Length body first (hashing it) */
    bool drop_after_head; /* close right after reading the request head */
    bool fin_first;       /* with drop_after_head: shut down writing, wait 100 ms, then close */
    bool hang;            /* after answering, wait for the peer to close or the test's stop */

    /* set by server_start() */
    int lfd;
    int port;
    int stop[2];
    pthread_t thread;

    /* what the server saw (read after server_done()) */
    char *head;   /* the request head, through its blank line */
    int64_t want; /* the request's Content-Length, -1 none */
    uint64_t got; /* request body bytes read */
    char hex[KILN_SHA256_HEX_LEN + 1];
    uint64_t sent; /* generated body bytes sent */
    int accepted;  /* connections accepted */
    int non_http;  /* of them, dropped because they did not start like HTTP (TLS probes) */
};

/* Wait until fd has `ev`; false when the test said stop (or after 20 s, so nothing hangs). */
static bool srv_wait(struct server *s, int fd, short ev)
{
    struct pollfd p[2] = {{.fd = fd, .events = ev}, {.fd = s->stop[0], .events = POLLIN}};
    for (;;) {
        int r = poll(p, 2, 20000);
        if (r < 0 && errno == EINTR)
            continue;
        return r > 0 && !(p[1].revents & POLLIN);
    }
}

static bool srv_send(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return false;
        p += n;
        len -= (size_t)n;
    }
    return true;
}

static int64_t head_content_length(const char *head)
{
    const char *p = strcasestr(head, "\r\ncontent-length:");
    if (!p)
        return -1;
    p += strlen("\r\ncontent-length:");
    while (*p == ' ')
        p++;
    char *end = NULL;
    long long v = strtoll(p, &end, 10);
    return end == p ? -1 : v;
}

/* One connection: 0 done, 1 dropped as not HTTP (wait for the next one). */
static int serve(struct server *s, int fd)
{
    char *buf = kiln_xmalloc(HEAD_CAP + 1);
    size_t have = 0, hl = 0;
    while (!hl) {
        if (have == HEAD_CAP || !srv_wait(s, fd, POLLIN)) {
            free(buf);
            return 0;
        }
        ssize_t n = recv(fd, buf + have, HEAD_CAP - have, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            free(buf);
            return 0;
        }
        if (have == 0 && (buf[0] < 'A' || buf[0] > 'Z')) {
            s->non_http++;
            free(buf);
            return 1;
        }
        have += (size_t)n;
        const char *end = memmem(buf, have, "\r\n\r\n", 4);
        if (end)
            hl = (size_t)(end - buf) + 4;
    }
    s->head = kiln_xstrndup(buf, hl);
    if (s->drop_after_head) {
        if (s->fin_first) {
            /* the peer sees our FIN first; its later sends then fail with EPIPE (the
             * error that comes with SIGPIPE) rather than ECONNRESET */
            shutdown(fd, SHUT_WR);
            struct pollfd p = {.fd = s->stop[0], .events = POLLIN};
            poll(&p, 1, 100);
        }
        free(buf);
        return 0;
    }
    s->want = head_content_length(s->head);
    if (s->read_body && s->want >= 0) {
        uint64_t want = (uint64_t)s->want;
        struct kiln_sha256 sh;
        kiln_sha256_init(&sh);
        uint64_t got = have - hl < want ? have - hl : want;
        kiln_sha256_update(&sh, buf + hl, (size_t)got);
        char *rb = kiln_xmalloc(CHUNK);
        while (got < want && srv_wait(s, fd, POLLIN)) {
            size_t ask = want - got < CHUNK ? (size_t)(want - got) : CHUNK;
            ssize_t n = recv(fd, rb, ask, 0);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                break;
            kiln_sha256_update(&sh, rb, (size_t)n);
            got += (uint64_t)n;
        }
        kiln_sha256_final_hex(&sh, s->hex);
        kiln_sha256_release(&sh);
        free(rb);
        s->got = got;
    }
    bool alive = true;
    if (s->answer)
        alive = srv_send(fd, s->answer, s->answer_len ? s->answer_len : strlen(s->answer));
    uint64_t total = s->body_cut ? s->body_cut : s->body_len;
    if (alive && total > 0) {
        struct prng p = {s->seed};
        uint8_t *gb = kiln_xmalloc(CHUNK);
        while (s->sent < total) {
            size_t n = s->body_len - s->sent < CHUNK ? (size_t)(s->body_len - s->sent) : CHUNK;
            prng_fill(&p, gb, n);
            if (n > total - s->sent)
                n = (size_t)(total - s->sent);
            if (!srv_send(fd, gb, n))
                break;
            s->sent += n;
        }
        free(gb);
    }
    if (s->hang) {
        char tmp[4096];
        while (srv_wait(s, fd, POLLIN)) {
            ssize_t n = recv(fd, tmp, sizeof(tmp), 0);
            if (n == 0 || (n < 0 && errno != EINTR))
                break;
        }
    }
    free(buf);
    return 0;
}

static void *server_main(void *ud)
{
    struct server *s = ud;
    for (;;) {
        if (!srv_wait(s, s->lfd, POLLIN))
            return NULL;
        int fd = accept4(s->lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            return NULL;
        s->accepted++;
        int r = serve(s, fd);
        close(fd);
        if (r == 0)
            return NULL;
    }
}

/* A loopback socket (::1 when `v6`) bound to a free port, listening when `listening`; -1 when
 * the address family is not there (IPv6 only). */
static int bind_loopback(bool v6, bool listening, int *ret_port)
{
    int fd = socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a4 = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct sockaddr_in6 a6 = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    struct sockaddr *a = v6 ? (struct sockaddr *)&a6 : (struct sockaddr *)&a4;
    socklen_t al = v6 ? sizeof(a6) : sizeof(a4);
    if (fd < 0 || bind(fd, a, al) < 0 || (listening && listen(fd, 16) < 0) ||
        getsockname(fd, a, &al) < 0) {
        if (v6) {
            if (fd >= 0)
                close(fd);
            return -1;
        }
        perror("bind a loopback socket");
        abort();
    }
    *ret_port = ntohs(v6 ? a6.sin6_port : a4.sin_port);
    return fd;
}

/* Start the server on 127.0.0.1 (or ::1 when `v6`); false when there is no IPv6. */
static bool server_start_on(struct server *s, bool v6)
{
    s->lfd = bind_loopback(v6, true, &s->port);
    if (s->lfd < 0)
        return false;
    s->want = -1;
    if (pipe2(s->stop, O_CLOEXEC) < 0 || pthread_create(&s->thread, NULL, server_main, s) != 0) {
        perror("start a server");
        abort();
    }
    return true;
}

static void server_start(struct server *s)
{
    server_start_on(s, false);
}

/* Tell the server to stop waiting, and join it. s->head stays for the caller to free. */
static void server_done(struct server *s)
{
    if (write(s->stop[1], "x", 1) != 1)
        abort();
    pthread_join(s->thread, NULL);
    close(s->stop[0]);
    close(s->stop[1]);
    close(s->lfd);
}

/* ---- helpers ------------------------------------------------------------------------ */

static struct kiln_http *new_http(long stall_s, const char *proxy, const char *const *resolve)
{
    struct kiln_http_options o = {.user_agent = "kiln-test/1",
                                  .connect_timeout_ms = 3000,
                                  .stall_time_s = stall_s,
                                  .max_attempts = 1,
                                  .proxy = proxy,
                                  .resolve = resolve};
    struct kiln_http *h = NULL;
    struct kiln_error *e = NULL;
    if (kiln_http_new(&o, &h, &e) < 0) {
        fprintf(stderr, "kiln_http_new: %s\n", e->msg);
        abort();
    }
    return h;
}

/* ok() on a call's result; the error message as a comment when it is not what was wanted. */
__attribute__((format(printf, 4, 5))) static bool rc_is(int rc, int want, struct kiln_error **e,
                                                        const char *fmt, ...)
{
    char what[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    bool good = ok(rc == want, "%s: %d", what, want);
    if (!good) {
        printf("#   got %d\n", rc);
        tap_comment("error", *e ? (*e)->msg : NULL);
    }
    return good;
}

static void clear_err(struct kiln_error **e)
{
    kiln_error_free(*e);
    *e = NULL;
}

static bool contains(const char *hay, const char *needle)
{
    return hay && strstr(hay, needle) != NULL;
}

struct progress {
    int calls;
    uint64_t last;
    bool decreased;
    int cancel_at; /* return nonzero on this call (1-based); 0 never */
};

static int progress_cb(void *ud, uint64_t moved)
{
    struct progress *p = ud;
    p->calls++;
    if (moved < p->last)
        p->decreased = true;
    p->last = moved;
    return p->cancel_at && p->calls >= p->cancel_at;
}

/* ---- heads ---------------------------------------------------------------------------- */

static void test_head_length(void)
{
    const char *crlf = "HTTP/1.1 200 OK\r\nA: b\r\n\r\n";
    is_int(kiln_raw_head_length(crlf, strlen(crlf)), strlen(crlf), "CRLF head length");
    const char *lf = "HTTP/1.1 200 OK\nA: b\n\n";
    is_int(kiln_raw_head_length(lf, strlen(lf)), strlen(lf), "LF head length");
    const char *mixed = "HTTP/1.1 200 OK\r\nA: b\n\r\n";
    is_int(kiln_raw_head_length(mixed, strlen(mixed)), strlen(mixed), "mixed line ends");
    const char *with_body = "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n\r\n\r\nbody";
    is_int(kiln_raw_head_length(with_body, strlen(with_body)), strlen(with_body) - 8,
           "length stops at the blank line, not in the body");
    is_int(kiln_raw_head_length(crlf, strlen(crlf) - 1), 0, "CRLF head without its last LF");
    is_int(kiln_raw_head_length(crlf, strlen(crlf) - 2), 0, "CRLF head without its blank line");
    is_int(kiln_raw_head_length(lf, strlen(lf) - 1), 0, "LF head without its blank line");
    is_int(kiln_raw_head_length("HTTP/1.1 200 OK\r\n", 17), 0, "status line only");
    is_int(kiln_raw_head_length("", 0), 0, "empty buffer");
    is_int(kiln_raw_head_length("\n", 1), 0, "a single LF");
}

static void test_parse_head(void)
{
    struct kiln_http_response r;
    kiln_http_response_init(&r);
    const char *head = "HTTP/1.1 201 Created\r\n"
                       "Location: /v2/a/blobs/sha256:ab\r\n"
                       "content-length:  42 \r\n"
                       "Range: 0-41\r\n"
                       "Docker-Content-Digest: sha256:ab\r\n"
                       "WWW-Authenticate: Bearer realm=\"https://auth/token\"\r\n"
                       "Www-Authenticate: Basic realm=\"reg\"\r\n"
                       "\r\n";
    is_int(kiln_raw_parse_head(head, strlen(head), &r), 0, "valid head parsed");
    is_int(r.status, 201, "status");
    is_str(r.location, "/v2/a/blobs/sha256:ab", "location");
    is_int(r.content_length, 42, "content length");
    is_str(r.range, "0-41", "range");
    is_str(r.docker_content_digest, "sha256:ab", "docker-content-digest");
    is_str(r.www_authenticate, "Bearer realm=\"https://auth/token\", Basic realm=\"reg\"",
           "two www-authenticate lines joined");
    ok(r.content_range == NULL && r.link == NULL, "absent headers are NULL");

    /* LF line ends; resp is released first */
    const char *lf = "HTTP/1.0 404 Not Found\nContent-Type: text/plain\n\n";
    is_int(kiln_raw_parse_head(lf, strlen(lf), &r), 0, "LF head parsed");
    is_int(r.status, 404, "LF status");
    is_str(r.content_type, "text/plain", "LF content-type");
    ok(r.location == NULL && r.range == NULL && r.www_authenticate == NULL,
       "fields of the earlier head are gone");
    is_int(r.content_length, -1, "no content length: -1");

    const char *nr = "HTTP/1.1 204\r\n\r\n";
    is_int(kiln_raw_parse_head(nr, strlen(nr), &r), 0, "status line without a reason");
    is_int(r.status, 204, "status 204");

    static const struct {
        const char *head;
        size_t len; /* 0: strlen */
        const char *what;
    } bad[] = {
        {"HTTP/2 200 OK\r\n\r\n", 0, "HTTP/2"},
        {"HTTP/1.1 20 x\r\n\r\n", 0, "two-digit status"},
        {"HTTP/1.1 600 x\r\n\r\n", 0, "status 600"},
        {"HTTP/1.1 099 x\r\n\r\n", 0, "status 099"},
        {"HTTP/1.1 2000 x\r\n\r\n", 0, "four-digit status"},
        {"HTTP/1.1 200x\r\n\r\n", 0, "status glued to the reason"},
        {"HTTP/1.x 200 OK\r\n\r\n", 0, "minor version not a digit"},
        {"FOO 200\r\n\r\n", 0, "not HTTP"},
        {"HTTP/1.1 200 OK\r\nA: b\0c\r\n\r\n", 27, "NUL inside a header line"},
        {"HTTP/1.1 200 O\0K\r\n\r\n", 20, "NUL inside the status line"},
        {"HTTP/1.1 200 OK\r\nA: b\rc\r\n\r\n", 0, "bare CR inside a header line"},
        {"HTTP/1.1 200 OK\r\r\n\r\n", 0, "bare CR before CRLF"},
        {"", 0, "empty input"},
    };
    for (size_t i = 0; i < KILN_ARRAY_SIZE(bad); i++) {
        kiln_http_response_header_line(&r, "Location: /stale", 16);
        size_t len = bad[i].len ? bad[i].len : strlen(bad[i].head);
        is_int(kiln_raw_parse_head(bad[i].head, len, &r), -1, "rejected: %s", bad[i].what);
        ok(r.location == NULL, "resp released even when rejected: %s", bad[i].what);
    }
    kiln_http_response_release(&r);
}

/* ---- end to end ------------------------------------------------------------------------ */

static void test_end_to_end(struct kiln_http *h)
{
    const uint64_t len = ((uint64_t)12 << 20) + 123;
    struct kiln_error *e = NULL;
    struct kiln_http_response resp, ans;
    kiln_http_response_init(&resp);
    kiln_http_response_init(&ans);
    char want_hex[KILN_SHA256_HEX_LEN + 1];
    stream_hex(7, len, want_hex);

    struct server src = {.body_len = len, .seed = 7};
    _cleanup_free_ char *src_answer = kiln_xasprintf(
        "HTTP/1.1 200 OK\r\nContent-Length: %llu\r\nDocker-Content-Digest: sha256:%s\r\n\r\n",
        (unsigned long long)len, want_hex);
    src.answer = src_answer;
    server_start(&src);
    struct server dst = {.read_body = true};
    _cleanup_free_ char *dst_answer =
        kiln_xasprintf("HTTP/1.1 202 Accepted\r\nLocation: /v2/a/b/blobs/uploads/u2?_state=next\r\n"
                       "Range: 0-%llu\r\nContent-Length: 5\r\n\r\nhello",
                       (unsigned long long)(len - 1));
    dst.answer = dst_answer;
    server_start(&dst);

    _cleanup_free_ char *src_url =
        kiln_xasprintf("http://user:secret@127.0.0.1:%d/v2/a/b?x=1#frag", src.port);
    _cleanup_free_ char *dst_url =
        kiln_xasprintf("http://127.0.0.1:%d/v2/a/b/blobs/uploads/u1?_state=abc", dst.port);
    const char *src_headers[] = {"Authorization: Bearer tok", "X-Kiln-Test: one", NULL};
    const char *dst_headers[] = {"Content-Type: application/octet-stream", NULL};
    struct kiln_raw *from = NULL, *to = NULL;
    struct progress pg = {0};
    uint64_t moved = 0;
    _cleanup_free_ char *range = kiln_xasprintf("0-%llu", (unsigned long long)(len - 1));

    if (!rc_is(kiln_raw_open(h, "GET", src_url, src_headers, -1, &from, &e), 0, &e,
               "open the source"))
        goto out;
    if (!rc_is(kiln_raw_read_head(from, &resp, &e), 0, &e, "read the source's head"))
        goto out;
    is_int(resp.status, 200, "source status");
    is_int(resp.content_length, (int64_t)len, "source content length");
    is_str(resp.url, src_url, "resp->url is the request URL");
    ok(contains(resp.docker_content_digest, want_hex), "source digest header");
    if (!rc_is(kiln_raw_open(h, "PATCH", dst_url, dst_headers, (int64_t)len, &to, &e), 0, &e,
               "open the destination"))
        goto out;
    rc_is(kiln_raw_splice(from, to, len, progress_cb, &pg, &moved, &e), 0, &e, "splice");
    is_int(moved, len, "*ret_moved is the length");
    ok(pg.calls >= 2, "progress called several times (%d)", pg.calls);
    ok(!pg.decreased, "progress never went back");
    is_int(pg.last, len, "progress ends at the length");
    if (!rc_is(kiln_raw_read_head(to, &ans, &e), 0, &e, "read the destination's head"))
        goto out;
    is_int(ans.status, 202, "destination status");
    is_str(ans.location, "/v2/a/b/blobs/uploads/u2?_state=next", "destination location");
    is_str(ans.range, range, "destination range");
    is_int(ans.content_length, 5, "destination content length");
    is_str(ans.url, dst_url, "destination resp->url");
    rc_is(kiln_raw_read_body(to, &ans, 1024, &e), 0, &e, "read the destination's body");
    is_str(ans.body.buf, "hello", "destination body");

out:
    clear_err(&e);
    kiln_raw_free(from);
    kiln_raw_free(to);
    server_done(&src);
    server_done(&dst);

    const char *sh = src.head ? src.head : "";
    ok(strncmp(sh, "GET /v2/a/b?x=1 HTTP/1.1\r\n", 26) == 0, "GET request line, query kept");
    _cleanup_free_ char *src_host = kiln_xasprintf("\r\nHost: 127.0.0.1:%d\r\n", src.port);
    ok(contains(sh, src_host), "GET Host line");
    ok(contains(sh, "\r\nUser-Agent: kiln-test/1\r\n"), "GET User-Agent of the context");
    ok(contains(sh, "\r\nAuthorization: Bearer tok\r\n") &&
           contains(sh, "\r\nX-Kiln-Test: one\r\n"),
       "GET carries the caller's header lines");
    ok(contains(sh, "\r\nConnection: close\r\n"), "GET Connection: close");
    ok(!strcasestr(sh, "content-length"), "GET has no Content-Length");
    ok(!contains(sh, "secret") && !contains(sh, "user") && !contains(sh, "frag") &&
           !contains(sh, "#"),
       "GET head holds neither userinfo nor fragment");
    if (!ok(strlen(sh) > 4 && strcmp(sh + strlen(sh) - 4, "\r\n\r\n") == 0, "GET head complete"))
        tap_comment("head", sh);

    const char *dh = dst.head ? dst.head : "";
    ok(strncmp(dh, "PATCH /v2/a/b/blobs/uploads/u1?_state=abc HTTP/1.1\r\n", 52) == 0,
       "PATCH request line");
    _cleanup_free_ char *dst_host = kiln_xasprintf("\r\nHost: 127.0.0.1:%d\r\n", dst.port);
    ok(contains(dh, dst_host), "PATCH Host line");
    ok(contains(dh, "\r\nContent-Type: application/octet-stream\r\n"), "PATCH caller's header");
    ok(contains(dh, "\r\nConnection: close\r\n"), "PATCH Connection: close");
    ok(!contains(dh, "Authorization"), "PATCH has no header of the other request");
    is_int(dst.want, (int64_t)len, "PATCH Content-Length");
    is_int(dst.got, len, "destination received every byte");
    is_str(dst.hex, want_hex, "destination received the source's bytes");
    is_int(src.sent, len, "source sent its whole body");

    free(src.head);
    free(dst.head);
    kiln_http_response_release(&resp);
    kiln_http_response_release(&ans);
}

static void test_continue(struct kiln_http *h)
{
    static const char answer[] = "HTTP/1.1 100 Continue\r\nRange: 0-9\r\n\r\n"
                                 "HTTP/1.1 200 OK\r\nLocation: /x\r\nContent-Length: 3\r\n\r\nabc";
    struct server s = {.answer = answer, .hang = true};
    server_start(&s);
    struct kiln_error *e = NULL;
    struct kiln_http_response r;
    kiln_http_response_init(&r);
    struct kiln_raw *c = NULL;
    _cleanup_free_ char *url = kiln_xasprintf("http://127.0.0.1:%d/c", s.port);
    if (rc_is(kiln_raw_open(h, "GET", url, NULL, -1, &c, &e), 0, &e, "open (100 Continue)") &&
        rc_is(kiln_raw_read_head(c, &r, &e), 0, &e, "read head after a 100")) {
        is_int(r.status, 200, "the 100 is skipped");
        is_str(r.location, "/x", "location of the 200");
        ok(r.range == NULL, "headers of the 100 are forgotten");
        is_int(r.content_length, 3, "content length of the 200");
        rc_is(kiln_raw_read_body(c, &r, 100, &e), 0, &e, "read the body after a 100");
        is_str(r.body.buf, "abc", "body after a 100");
    }
    clear_err(&e);
    kiln_raw_free(c);
    server_done(&s);
    free(s.head);
    kiln_http_response_release(&r);
}

/*
 * Start the servers `src` and `dst`, open src (GET) and dst (PATCH of len
 * bytes) and read the source's head. close_pair() undoes it, whatever
 * succeeded.
 */
static bool open_pair(struct kiln_http *h, struct server *src, struct server *dst, uint64_t len,
                      struct kiln_raw **from, struct kiln_raw **to, struct kiln_error **e)
{
    server_start(src);
    server_start(dst);
    struct kiln_http_response r;
    kiln_http_response_init(&r);
    _cleanup_free_ char *su = kiln_xasprintf("http://u:secret@127.0.0.1:%d/v2/src?q=1", src->port);
    _cleanup_free_ char *du = kiln_xasprintf("http://127.0.0.1:%d/v2/dst?q=2", dst->port);
    bool good = rc_is(kiln_raw_open(h, "GET", su, NULL, -1, from, e), 0, e, "open the source") &&
                rc_is(kiln_raw_read_head(*from, &r, e), 0, e, "read the source's head") &&
                rc_is(kiln_raw_open(h, "PATCH", du, NULL, (int64_t)len, to, e), 0, e,
                      "open the destination");
    kiln_http_response_release(&r);
    return good;
}

static void close_pair(struct server *src, struct server *dst, struct kiln_raw *from,
                       struct kiln_raw *to, struct kiln_error **e)
{
    clear_err(e);
    kiln_raw_free(from);
    kiln_raw_free(to);
    server_done(src);
    server_done(dst);
    free(src->head);
    free(dst->head);
}

static void test_short_source(struct kiln_http *h)
{
    const uint64_t len = (uint64_t)1 << 20;
    _cleanup_free_ char *answer =
        kiln_xasprintf("HTTP/1.1 200 OK\r\nContent-Length: %llu\r\n\r\n", (unsigned long long)len);
    struct server src = {.answer = answer, .body_len = len, .body_cut = len / 2, .seed = 3};
    struct server dst = {.read_body = true};
    struct kiln_raw *from = NULL, *to = NULL;
    struct kiln_error *e = NULL;
    uint64_t moved = 77;
    if (open_pair(h, &src, &dst, len, &from, &to, &e)) {
        int rc = kiln_raw_splice(from, to, len, NULL, NULL, &moved, &e);
        rc_is(rc, -KILN_ENET, &e, "a source ending early");
        ok(e && contains(e->msg, "ended after"), "the message says it ended after");
        ok(e && contains(e->msg, "'http://127.0.0.1:") && !contains(e->msg, "secret") &&
               !contains(e->msg, "q=1"),
           "the message names the URL without userinfo or query");
        if (e)
            tap_comment("message", e->msg);
        ok(moved <= len / 2, "no more moved than the source sent (%llu)",
           (unsigned long long)moved);
    }
    close_pair(&src, &dst, from, to, &e);
    is_int(src.sent, len / 2, "the source sent half");
}

static void test_closing_destination(struct kiln_http *h, bool fin_first)
{
    const uint64_t len = (uint64_t)64 << 20;
    _cleanup_free_ char *answer =
        kiln_xasprintf("HTTP/1.1 200 OK\r\nContent-Length: %llu\r\n\r\n", (unsigned long long)len);
    struct server src = {.answer = answer, .body_len = len, .seed = 5};
    struct server dst = {.drop_after_head = true, .fin_first = fin_first};
    struct kiln_raw *from = NULL, *to = NULL;
    struct kiln_error *e = NULL;
    uint64_t moved = 0;
    if (open_pair(h, &src, &dst, len, &from, &to, &e)) {
        int rc = kiln_raw_splice(from, to, len, NULL, NULL, &moved, &e);
        rc_is(rc, -KILN_ENET, &e, "a destination that closes");
        ok(moved < len, "not everything reached the destination (%llu)", (unsigned long long)moved);
        if (e)
            printf("#   errno %d, message '%s'\n", e->errnum, e->msg);
        /* EPIPE from a send without MSG_NOSIGNAL means the kernel raised SIGPIPE */
        if (fin_first)
            ok(e && e->errnum == EPIPE, "the send failed with EPIPE");
    }
    ok(1, "the process survived a closed destination%s", fin_first ? " (EPIPE)" : "");
    sigset_t set;
    sigemptyset(&set);
    sigpending(&set);
    ok(!sigismember(&set, SIGPIPE), "no SIGPIPE left pending");
    sigemptyset(&set);
    pthread_sigmask(SIG_BLOCK, NULL, &set);
    ok(!sigismember(&set, SIGPIPE), "SIGPIPE not left blocked");
    close_pair(&src, &dst, from, to, &e);
}

static void test_cancel(struct kiln_http *h)
{
    const uint64_t len = (uint64_t)8 << 20;
    _cleanup_free_ char *answer =
        kiln_xasprintf("HTTP/1.1 200 OK\r\nContent-Length: %llu\r\n\r\n", (unsigned long long)len);
    struct server src = {.answer = answer, .body_len = len, .seed = 9};
    struct server dst = {.read_body = true};
    struct kiln_raw *from = NULL, *to = NULL;
    struct kiln_error *e = NULL;
    struct progress pg = {.cancel_at = 2};
    uint64_t moved = 0;
    if (open_pair(h, &src, &dst, len, &from, &to, &e)) {
        int rc = kiln_raw_splice(from, to, len, progress_cb, &pg, &moved, &e);
        rc_is(rc, -KILN_ECANCELLED, &e, "progress said stop");
        is_int(pg.calls, 2, "no progress call after the one that said stop");
        ok(moved < len, "stopped before the end (%llu)", (unsigned long long)moved);
    }
    close_pair(&src, &dst, from, to, &e);
}

static void test_stall(struct kiln_http *hs)
{
    struct server src = {.answer = "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n", .hang = true};
    struct server dst = {.read_body = true};
    struct kiln_raw *from = NULL, *to = NULL;
    struct kiln_error *e = NULL;
    if (open_pair(hs, &src, &dst, 1000, &from, &to, &e)) {
        int64_t t0 = now_ms();
        int rc = kiln_raw_splice(from, to, 1000, NULL, NULL, NULL, &e);
        int64_t dt = now_ms() - t0;
        rc_is(rc, -KILN_ETIMEOUT, &e, "a stalled source");
        ok(dt >= 900 && dt < 5000, "it ends after the stall time of 1 s (%lld ms)", (long long)dt);
    }
    close_pair(&src, &dst, from, to, &e);

    /* a server that reads the request and never answers */
    struct server mute = {.hang = true};
    server_start(&mute);
    struct kiln_raw *c = NULL;
    struct kiln_http_response r;
    kiln_http_response_init(&r);
    _cleanup_free_ char *url = kiln_xasprintf("http://127.0.0.1:%d/mute", mute.port);
    if (rc_is(kiln_raw_open(hs, "GET", url, NULL, -1, &c, &e), 0, &e, "open (mute server)")) {
        int64_t t0 = now_ms();
        int rc = kiln_raw_read_head(c, &r, &e);
        int64_t dt = now_ms() - t0;
        rc_is(rc, -KILN_ETIMEOUT, &e, "no answer");
        ok(dt >= 900 && dt < 5000, "read_head ends after the stall time (%lld ms)", (long long)dt);
    }
    clear_err(&e);
    kiln_raw_free(c);
    server_done(&mute);
    free(mute.head);
    kiln_http_response_release(&r);
}

/*
 * GET from server s (started and joined here): the head, then with
 * `body` the body kept up to max. The result of the first call that failed.
 */
static int exchange(struct kiln_http *h, struct server *s, bool body, size_t max,
                    struct kiln_http_response *r, struct kiln_error **e)
{
    server_start(s);
    struct kiln_raw *c = NULL;
    _cleanup_free_ char *url = kiln_xasprintf("http://127.0.0.1:%d/%s", s->port, body ? "b" : "h");
    int rc = kiln_raw_open(h, "GET", url, NULL, -1, &c, e);
    if (rc == 0)
        rc = kiln_raw_read_head(c, r, e);
    if (rc == 0 && body)
        rc = kiln_raw_read_body(c, r, max, e);
    kiln_raw_free(c);
    server_done(s);
    free(s->head);
    return rc;
}

static int head_of(struct kiln_http *h, struct server *s, struct kiln_http_response *r,
                   struct kiln_error **e)
{
    return exchange(h, s, false, 0, r, e);
}

static void test_bad_answers(struct kiln_http *h)
{
    struct kiln_error *e = NULL;
    struct kiln_http_response r;
    kiln_http_response_init(&r);

    /* a head that never ends */
    size_t n = KILN_RAW_HEAD_MAX + 4096;
    char *big = kiln_xmalloc(n);
    memset(big, 'a', n);
    memcpy(big, "HTTP/1.1 200 OK\r\nX-Pad: ", 24);
    struct server s1 = {.answer = big, .answer_len = n, .hang = true};
    rc_is(head_of(h, &s1, &r, &e), -KILN_ENET, &e, "a head longer than KILN_RAW_HEAD_MAX");
    ok(e && contains(e->msg, "longer than"), "the message says the head is too long");
    clear_err(&e);
    free(big);

    /* a long head that does end within the limit is fine */
    n = KILN_RAW_HEAD_MAX - 1024;
    big = kiln_xmalloc(n);
    memset(big, 'a', n);
    memcpy(big, "HTTP/1.1 200 OK\r\nX-Pad: ", 24);
    memcpy(big + n - 4, "\r\n\r\n", 4);
    struct server s2 = {.answer = big, .answer_len = n, .hang = true};
    rc_is(head_of(h, &s2, &r, &e), 0, &e, "a head just under the limit");
    is_int(r.status, 200, "status of a long head");
    clear_err(&e);
    free(big);

    struct server s3 = {.drop_after_head = true};
    rc_is(head_of(h, &s3, &r, &e), -KILN_ENET, &e, "a server that closes without answering");
    ok(e && contains(e->msg, "without an answer"), "the message says without an answer");
    clear_err(&e);

    struct server s4 = {.answer = "HTTP/1.1 200 OK\r\nContent-"};
    rc_is(head_of(h, &s4, &r, &e), -KILN_ENET, &e, "a server that closes inside the head");
    ok(e && contains(e->msg, "in the middle"), "the message says in the middle");
    clear_err(&e);

    struct server s5 = {.answer = "HTTP/2 200\r\n\r\n", .hang = true};
    rc_is(head_of(h, &s5, &r, &e), -KILN_ENET, &e, "a malformed head");
    ok(e && contains(e->msg, "malformed"), "the message says malformed");
    clear_err(&e);

    kiln_http_response_release(&r);
}

static void test_open_errors(struct kiln_http *h)
{
    struct kiln_error *e = NULL;
    struct kiln_raw *c = NULL;
    rc_is(kiln_raw_open(h, "GET", "https://127.0.0.1:1/v2/", NULL, -1, &c, &e), -KILN_EINVAL, &e,
          "https URL");
    clear_err(&e);
    int port = 0;
    int fd = bind_loopback(false, false, &port);
    close(fd);
    _cleanup_free_ char *refused = kiln_xasprintf("http://127.0.0.1:%d/v2/", port);
    rc_is(kiln_raw_open(h, "GET", refused, NULL, -1, &c, &e), -KILN_ENET, &e, "refused port");
    ok(e && contains(e->msg, "GET '") && contains(e->msg, refused),
       "the message names method and URL");
    clear_err(&e);
    rc_is(kiln_raw_open(h, "GET", "http://127.0.0.1:99999999/", NULL, -1, &c, &e), -KILN_EINVAL, &e,
          "bad port");
    clear_err(&e);
    /* a five-digit port past 65535 must not wrap around to another port (99999 is 34463) */
    rc_is(kiln_raw_open(h, "GET", "http://127.0.0.1:99999/", NULL, -1, &c, &e), -KILN_EINVAL, &e,
          "port 99999");
    clear_err(&e);
    kiln_raw_free(c);
    c = NULL;
    rc_is(kiln_raw_open(h, "GET", "http://127.0.0.1:65536/", NULL, -1, &c, &e), -KILN_EINVAL, &e,
          "port 65536");
    clear_err(&e);
    kiln_raw_free(c);
    c = NULL;
    rc_is(kiln_raw_open(h, "GET", "http://127.0.0.1:/", NULL, -1, &c, &e), -KILN_EINVAL, &e,
          "empty port");
    clear_err(&e);
    rc_is(kiln_raw_open(h, "GET", "http:///v2/", NULL, -1, &c, &e), -KILN_EINVAL, &e, "no host");
    clear_err(&e);
    rc_is(kiln_raw_open(h, "GET", "http://127.0.0.1:1/a b", NULL, -1, &c, &e), -KILN_EINVAL, &e,
          "a space in the path");
    clear_err(&e);
    rc_is(kiln_raw_open(h, "GET", "http://nonexistent.invalid/", NULL, -1, &c, &e), -KILN_ENET, &e,
          "a name that does not resolve");
    clear_err(&e);
    ok(c == NULL, "no connection on failure");
    kiln_raw_free(NULL);
}

static int body_of(struct kiln_http *h, struct server *s, size_t max, struct kiln_http_response *r,
                   struct kiln_error **e)
{
    return exchange(h, s, true, max, r, e);
}

static void test_read_body(struct kiln_http *h)
{
    struct kiln_error *e = NULL;
    struct kiln_http_response r;
    kiln_http_response_init(&r);
    uint8_t *want = stream_bytes(11, (size_t)3 << 20);

    /* Content-Length 1000, kept up to 100; the server stays: the read ends at the length */
    struct server s1 = {.answer = "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n",
                        .body_len = 1000,
                        .seed = 11,
                        .hang = true};
    rc_is(body_of(h, &s1, 100, &r, &e), 0, &e, "body cut at max");
    is_int(r.body.len, 100, "100 bytes kept");
    ok(r.body.len == 100 && memcmp(r.body.buf, want, 100) == 0, "the first 100 bytes");
    clear_err(&e);

    /* the bytes past max are still read: a short body is an error */
    struct server s2 = {.answer = "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n",
                        .body_len = 1000,
                        .body_cut = 500,
                        .seed = 11};
    rc_is(body_of(h, &s2, 100, &r, &e), -KILN_ENET, &e, "body shorter than its length");
    ok(e && contains(e->msg, "ended after 500 of 1000"), "the message says ended after");
    clear_err(&e);

    struct server s3 = {.answer = "HTTP/1.1 200 OK\r\n\r\n", .body_len = 3000, .seed = 11};
    rc_is(body_of(h, &s3, 1 << 20, &r, &e), 0, &e, "body without a length");
    is_int(r.body.len, 3000, "read to the end of the connection");
    ok(r.body.len == 3000 && memcmp(r.body.buf, want, 3000) == 0, "the bytes of that body");
    clear_err(&e);

    struct server s4 = {.answer = "HTTP/1.1 200 OK\r\n\r\n", .body_len = 3000, .seed = 11};
    rc_is(body_of(h, &s4, 10, &r, &e), 0, &e, "body without a length, cut at max");
    is_int(r.body.len, 10, "10 bytes kept");
    clear_err(&e);

    struct server s5 = {.answer = "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
                        .hang = true};
    rc_is(body_of(h, &s5, 100, &r, &e), 0, &e, "empty body with Content-Length: 0");
    is_int(r.body.len, 0, "nothing kept");
    clear_err(&e);

    /* a body over 1 MiB with a max above it is kept whole (the contract: up to max) */
    const size_t big = ((size_t)3 << 19) + 5; /* 1.5 MiB + 5 */
    _cleanup_free_ char *a6 = kiln_xasprintf("HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n", big);
    struct server s6 = {.answer = a6, .body_len = big, .seed = 11, .hang = true};
    rc_is(body_of(h, &s6, (size_t)2 << 20, &r, &e), 0, &e, "a 1.5 MiB body, max 2 MiB");
    is_int(r.body.len, big, "all of it kept");
    ok(r.body.len == big && memcmp(r.body.buf, want, big) == 0, "the bytes of the 1.5 MiB body");
    clear_err(&e);

    /* and one that ends early past 1 MiB is an error like any other */
    _cleanup_free_ char *a7 =
        kiln_xasprintf("HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n", (size_t)3 << 20);
    struct server s7 = {
        .answer = a7, .body_len = (size_t)3 << 20, .body_cut = (size_t)2 << 20, .seed = 11};
    rc_is(body_of(h, &s7, 100, &r, &e), -KILN_ENET, &e, "a 3 MiB body ending after 2 MiB");
    clear_err(&e);

    free(want);
    kiln_http_response_release(&r);
}

/* GET http://HOST:PORT<rest> from a server; check the request line and Host line it saw. */
static void get_from(struct kiln_http *h, bool v6, const char *host, const char *rest,
                     const char *want_target, const char *want_host, const char *what)
{
    struct server s = {.answer = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi", .hang = true};
    if (!server_start_on(&s, v6)) {
        ok(1, "%s # SKIP no IPv6 loopback", what);
        return;
    }
    struct kiln_error *e = NULL;
    struct kiln_raw *c = NULL;
    struct kiln_http_response r;
    kiln_http_response_init(&r);
    _cleanup_free_ char *url = kiln_xasprintf("http://%s:%d%s", host, s.port, rest);
    if (rc_is(kiln_raw_open(h, "GET", url, NULL, -1, &c, &e), 0, &e, "%s: open", what) &&
        rc_is(kiln_raw_read_head(c, &r, &e), 0, &e, "%s: head", what) &&
        rc_is(kiln_raw_read_body(c, &r, 100, &e), 0, &e, "%s: body", what))
        is_str(r.body.buf, "hi", "%s: the answer", what);
    clear_err(&e);
    kiln_raw_free(c);
    server_done(&s);
    _cleanup_free_ char *line = kiln_xasprintf("GET %s HTTP/1.1\r\n", want_target);
    ok(s.head && strncmp(s.head, line, strlen(line)) == 0, "%s: request line", what);
    _cleanup_free_ char *hl = kiln_xasprintf("\r\nHost: %s:%d\r\n", want_host, s.port);
    ok(contains(s.head, hl), "%s: Host line", what);
    free(s.head);
    kiln_http_response_release(&r);
}

static void test_addresses(struct kiln_http *h)
{
    get_from(h, true, "[::1]", "/six?y=2", "/six?y=2", "[::1]", "IPv6 literal");
    get_from(h, false, "LocalHost", "?q", "/?q", "localhost", "a host name");
    get_from(h, false, "127.0.0.1", "#f", "/", "127.0.0.1", "no path, a fragment");
}

static void test_raw_url(struct kiln_http *h)
{
    char *u = kiln_http_raw_url(h, "http://127.0.0.1:5000/v2/x?y=1");
    is_str(u, "http://127.0.0.1:5000/v2/x?y=1", "an http URL is itself");
    free(u);
    u = kiln_http_raw_url(h, "https://registry.example/v2/");
    is_str(u, NULL, "https to an unknown host: NULL");
    free(u);

    struct server s = {.answer = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"};
    server_start(&s);
    _cleanup_free_ char *tls = kiln_xasprintf("https://127.0.0.1:%d/v2/", s.port);
    u = kiln_http_raw_url(h, tls);
    is_str(u, NULL, "https to a loopback host not yet seen: NULL");
    free(u);

    /* a hint is not enough */
    struct kiln_http *hh = new_http(10, NULL, NULL);
    _cleanup_free_ char *hp = kiln_xasprintf("127.0.0.1:%d", s.port);
    kiln_http_scheme_hint(hh, hp, true);
    u = kiln_http_raw_url(hh, tls);
    is_str(u, NULL, "a plain-http hint does not count");
    free(u);
    kiln_http_free(hh);

    /* a real answer over the plain http fallback makes the host known */
    _cleanup_free_ char *root = kiln_xasprintf("https://127.0.0.1:%d/", s.port);
    struct kiln_http_request q = {.url = root, .flags = KILN_HTTP_NO_RETRY};
    struct kiln_http_response r;
    kiln_http_response_init(&r);
    struct kiln_error *e = NULL;
    rc_is(kiln_http_do(h, &q, &r, &e), 0, &e, "GET over https falls back to http");
    is_int(r.status, 200, "fallback status");
    ok(r.url && strncmp(r.url, "http://", 7) == 0, "answered over plain http");
    clear_err(&e);
    kiln_http_response_release(&r);
    server_done(&s);
    ok(s.non_http >= 1 && s.accepted == s.non_http + 1,
       "the server saw a TLS attempt, then one plain request (%d, %d)", s.non_http, s.accepted);
    free(s.head);
    u = kiln_http_raw_url(h, tls);
    _cleanup_free_ char *plain = kiln_xasprintf("http://127.0.0.1:%d/v2/", s.port);
    is_str(u, plain, "https to a host known to speak plain http: its http URL");
    free(u);
    _cleanup_free_ char *other = kiln_xasprintf("https://127.0.0.1:%d/v2/", s.port == 1 ? 2 : 1);
    u = kiln_http_raw_url(h, other);
    is_str(u, NULL, "another port of that host: NULL");
    free(u);

    struct kiln_http *hp_ctx = new_http(10, "http://127.0.0.1:3128", NULL);
    u = kiln_http_raw_url(hp_ctx, "http://127.0.0.1:5000/v2/");
    is_str(u, NULL, "with a proxy: NULL");
    free(u);
    kiln_http_free(hp_ctx);

    const char *const resolve[] = {"reg.test:5000:127.0.0.1", NULL};
    struct kiln_http *hr = new_http(10, NULL, resolve);
    u = kiln_http_raw_url(hr, "http://127.0.0.1:5000/v2/");
    is_str(u, NULL, "with resolve: NULL");
    free(u);
    kiln_http_free(hr);
}

int main(void)
{
    test_head_length();
    test_parse_head();

    struct kiln_http *h = new_http(10, NULL, NULL);
    struct kiln_http *hs = new_http(1, NULL, NULL);
    test_end_to_end(h);
    test_continue(h);
    test_short_source(h);
    test_closing_destination(h, false);
    test_closing_destination(h, true);
    test_cancel(h);
    test_stall(hs);
    test_bad_answers(h);
    test_open_errors(h);
    test_addresses(h);
    test_read_body(h);
    test_raw_url(h);
    kiln_http_free(h);
    kiln_http_free(hs);
    return tap_done();
}
