#include "util/common.h"
#include "registry/rawhttp.h"

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "util/buf.h"

struct kiln_raw {
    int fd;
    char *method;
    char *shown; /* the URL for messages (no userinfo, query, fragment) */
    char *url;
    long stall_ms;
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void kiln_raw_free(struct kiln_raw *c)
{
    if (!c)
        return;
    if (c->fd >= 0)
        close(c->fd);
    free(c->method);
    free(c->shown);
    free(c->url);
    free(c);
}

/* Wait until fd is ready for `events`, at most `ms`: 1 ready, 0 timed out. */
static int wait_fd(int fd, short events, long ms)
{
    struct pollfd p = {.fd = fd, .events = events};
    for (;;) {
        int r = poll(&p, 1, ms > INT32_MAX ? INT32_MAX : (int)ms);
        if (r >= 0)
            return r > 0;
        if (errno != EINTR)
            return 1; /* let the next call report the error */
    }
}

/*
 * After EAGAIN: wait for `events` until c's stall time has passed since
 * `last` (the last byte moved). 0: try again; -KILN_ETIMEOUT "METHOD 'URL': WHAT".
 */
static int wait_or_stall(struct kiln_raw *c, short events, int64_t last, const char *what,
                         struct kiln_error **err)
{
    long left = c->stall_ms - (long)(now_ms() - last);
    if (left <= 0 || wait_fd(c->fd, events, left) == 0)
        return kiln_error_set(err, KILN_ETIMEOUT, 0, "%s '%s': %s", c->method, c->shown, what);
    return 0;
}

/*
 * recv() into buf, waiting out EAGAIN and EINTR: the bytes received (0: the
 * peer closed), or -KILN_ETIMEOUT ("WHAT") / -KILN_ENET. *last is when a
 * byte last came.
 */
static ssize_t recv_wait(struct kiln_raw *c, void *buf, size_t len, int flags, int64_t *last,
                         const char *what, struct kiln_error **err)
{
    for (;;) {
        ssize_t n = recv(c->fd, buf, len, flags);
        if (n >= 0) {
            if (n > 0)
                *last = now_ms();
            return n;
        }
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return kiln_error_set(err, KILN_ENET, errno, "%s '%s': receive", c->method, c->shown);
        int rc = wait_or_stall(c, POLLIN, *last, what, err);
        if (rc < 0)
            return rc;
    }
}

/* ---- heads -------------------------------------------------------------------- */

size_t kiln_raw_head_length(const char *buf, size_t len)
{
    for (size_t i = 0; i + 1 < len; i++) {
        if (buf[i] != '\n')
            continue;
        if (buf[i + 1] == '\n')
            return i + 2;
        if (buf[i + 1] == '\r' && i + 2 < len && buf[i + 2] == '\n')
            return i + 3;
    }
    return 0;
}

static bool status_line_ok(const char *s, size_t len)
{
    /* HTTP/1.x NNN[ reason] */
    if (len < 12 || memcmp(s, "HTTP/1.", 7) != 0 || s[7] < '0' || s[7] > '9' || s[8] != ' ')
        return false;
    for (size_t i = 9; i < 12; i++)
        if (s[i] < '0' || s[i] > '9')
            return false;
    if (s[9] < '1' || s[9] > '5')
        return false;
    return len == 12 || s[12] == ' ';
}

/* "Name:" with a token name (RFC 9110 tchar) */
static bool header_line_ok(const char *s, size_t len)
{
    size_t i = 0;
    while (i < len && s[i] != ':') {
        unsigned char ch = (unsigned char)s[i];
        if (ch <= 0x20 || ch >= 0x7f || strchr("\"(),/;<=>?@[\\]{}", ch))
            return false;
        i++;
    }
    return i > 0 && i < len;
}

int kiln_raw_parse_head(const char *head, size_t len, struct kiln_http_response *resp)
{
    kiln_http_response_release(resp);
    const char *p = head, *end = head + len;
    bool first = true;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        size_t n = (size_t)(le - p);
        if (n && p[n - 1] == '\r')
            n--;
        if (memchr(p, '\0', n) || memchr(p, '\r', n))
            return -1;
        if (first) {
            if (!status_line_ok(p, n))
                return -1;
            first = false;
        } else if (n == 0) {
            break; /* the blank line ends the head */
        } else if (!header_line_ok(p, n)) {
            return -1;
        }
        kiln_http_response_header_line(resp, p, n);
        p = nl ? nl + 1 : end;
    }
    return first ? -1 : 0;
}

/* ---- connections ----------------------------------------------------------------- */

/* Split http://[userinfo@]HOST[:PORT]/PATH?QUERY#FRAG into host, port and request target. */
static bool split_url(const char *url, char **ret_host, char **ret_port, char **ret_target)
{
    if (strncasecmp(url, "http://", 7) != 0)
        return false;
    const char *auth = url + 7;
    size_t alen = strcspn(auth, "/?#");
    const char *rest = auth + alen;
    const char *at = memchr(auth, '@', alen);
    if (at) {
        alen -= (size_t)(at + 1 - auth);
        auth = at + 1;
    }
    if (alen == 0)
        return false;
    const char *port = NULL;
    size_t hlen = alen;
    if (auth[0] == '[') {
        const char *rb = memchr(auth, ']', alen);
        if (!rb)
            return false;
        hlen = (size_t)(rb - auth) + 1;
        if (hlen < alen) {
            if (auth[hlen] != ':')
                return false;
            port = auth + hlen + 1;
        }
    } else {
        const char *colon = memchr(auth, ':', alen);
        if (colon) {
            hlen = (size_t)(colon - auth);
            port = colon + 1;
        }
    }
    size_t plen = port ? (size_t)(auth + alen - port) : 0;
    if (port && (plen == 0 || plen > 5 || strspn(port, "0123456789") < plen))
        return false;
    if (port) {
        unsigned long pn = 0;
        for (size_t i = 0; i < plen; i++)
            pn = pn * 10 + (unsigned long)(port[i] - '0');
        if (pn == 0 || pn > 65535)
            return false;
    }
    if (auth[0] == '[')
        *ret_host = kiln_xstrndup(auth + 1, hlen - 2);
    else
        *ret_host = kiln_xstrndup(auth, hlen);
    *ret_port = port ? kiln_xstrndup(port, plen) : kiln_xstrdup("80");
    size_t tlen = strcspn(rest, "#");
    *ret_target = tlen == 0        ? kiln_xstrdup("/")
                  : rest[0] == '?' ? kiln_xasprintf("/%.*s", (int)tlen, rest)
                                   : kiln_xstrndup(rest, tlen);
    return **ret_host != '\0';
}

static int connect_addr(const struct addrinfo *ai, long timeout_ms)
{
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0)
        return -1;
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
        if (errno != EINPROGRESS) {
            close(fd);
            return -1;
        }
        int soerr = 0;
        socklen_t sl = sizeof(soerr);
        if (wait_fd(fd, POLLOUT, timeout_ms) != 1 ||
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0 || soerr != 0) {
            close(fd);
            errno = soerr ? soerr : ETIMEDOUT;
            return -1;
        }
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

/* Send all of buf; never raises SIGPIPE. */
static int send_all(struct kiln_raw *c, const char *buf, size_t len, struct kiln_error **err)
{
    int64_t last = now_ms();
    while (len > 0) {
        ssize_t n = send(c->fd, buf, len, MSG_NOSIGNAL);
        if (n > 0) {
            buf += n;
            len -= (size_t)n;
            last = now_ms();
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int rc = wait_or_stall(c, POLLOUT, last, "send stalled", err);
            if (rc < 0)
                return rc;
            continue;
        }
        return kiln_error_set(err, KILN_ENET, errno, "%s '%s': send", c->method, c->shown);
    }
    return 0;
}

int kiln_raw_open(struct kiln_http *h, const char *method, const char *url,
                  const char *const *headers, int64_t body_len, struct kiln_raw **ret,
                  struct kiln_error **err)
{
    long connect_ms = 0, stall_ms = 0;
    const char *agent = NULL;
    kiln_http_raw_limits(h, &connect_ms, &stall_ms, &agent);
    _cleanup_free_ char *host = NULL;
    _cleanup_free_ char *port = NULL;
    _cleanup_free_ char *target = NULL;
    _cleanup_free_ char *shown = kiln_http_url_redact(url);
    if (!split_url(url, &host, &port, &target))
        return kiln_error_set(err, KILN_EINVAL, 0, "%s '%s': not a plain http URL", method,
                              shown ? shown : "?");
    for (const char *t = target; *t; t++)
        if ((unsigned char)*t <= 0x20 || *t == 0x7f)
            return kiln_error_set(err, KILN_EINVAL, 0, "%s '%s': bad character in the URL", method,
                                  shown);
    _cleanup_free_ char *hostport = kiln_http_url_hostport(url);

    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    int gr = getaddrinfo(host, port, &hints, &res);
    if (gr != 0)
        return kiln_error_set(err, KILN_ENET, 0, "%s '%s': cannot resolve '%s': %s", method, shown,
                              host, gai_strerror(gr));
    int fd = -1, cerr = 0;
    int64_t deadline = now_ms() + connect_ms;
    for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
        long left = (long)(deadline - now_ms());
        if (left <= 0) {
            cerr = ETIMEDOUT;
            break;
        }
        fd = connect_addr(ai, left);
        if (fd < 0)
            cerr = errno;
    }
    freeaddrinfo(res);
    if (fd < 0)
        return kiln_error_set(err, cerr == ETIMEDOUT ? KILN_ETIMEOUT : KILN_ENET, cerr,
                              "%s '%s': connect", method, shown);

    struct kiln_raw *c = kiln_xcalloc(1, sizeof(*c));
    c->fd = fd;
    c->method = kiln_xstrdup(method);
    c->shown = TAKE_PTR(shown);
    c->url = kiln_xstrdup(url);
    c->stall_ms = stall_ms > 0 ? stall_ms : 60000;

    struct kiln_buf b;
    kiln_buf_init(&b, 64 << 10);
    kiln_buf_addf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: %s\r\n", method, target, hostport,
                  agent ? agent : "kiln");
    for (const char *const *p = headers; p && *p; p++)
        kiln_buf_addf(&b, "%s\r\n", *p);
    if (body_len >= 0)
        kiln_buf_addf(&b, "Content-Length: %lld\r\n", (long long)body_len);
    kiln_buf_adds(&b, "Connection: close\r\n\r\n");
    int rc = kiln_buf_finish(&b, "request head", err);
    if (rc >= 0)
        rc = send_all(c, b.buf, b.len, err);
    explicit_bzero(b.buf, b.len); /* it may hold an Authorization line */
    kiln_buf_release(&b);
    if (rc < 0) {
        kiln_raw_free(c);
        return rc;
    }
    *ret = c;
    return 0;
}

int kiln_raw_read_head(struct kiln_raw *c, struct kiln_http_response *resp, struct kiln_error **err)
{
    _cleanup_free_ char *acc = kiln_xmalloc(KILN_RAW_HEAD_MAX);
    size_t have = 0;
    int64_t last = now_ms();
    for (;;) {
        /* peek, so that no byte of the body is taken; consume only head bytes */
        ssize_t n =
            recv_wait(c, acc + have, KILN_RAW_HEAD_MAX - have, MSG_PEEK, &last, "no answer", err);
        if (n < 0)
            return (int)n;
        if (n == 0)
            return kiln_error_set(err, KILN_ENET, 0, "%s '%s': the connection closed %s", c->method,
                                  c->shown,
                                  have ? "in the middle of the answer" : "without an answer");
        size_t hl = kiln_raw_head_length(acc, have + (size_t)n);
        size_t take = hl ? hl - have : (size_t)n;
        while (take > 0) {
            ssize_t r = recv(c->fd, acc + have, take, 0);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0) /* what was peeked is there to take */
                return kiln_error_set(err, KILN_ENET, r < 0 ? errno : 0, "%s '%s': receive",
                                      c->method, c->shown);
            have += (size_t)r;
            take -= (size_t)r;
        }
        if (!hl) {
            if (have == KILN_RAW_HEAD_MAX)
                return kiln_error_set(err, KILN_ENET, 0,
                                      "%s '%s': response head longer than %zu bytes", c->method,
                                      c->shown, KILN_RAW_HEAD_MAX);
            continue;
        }
        if (kiln_raw_parse_head(acc, hl, resp) < 0)
            return kiln_error_set(err, KILN_ENET, 0, "%s '%s': malformed response head", c->method,
                                  c->shown);
        if (resp->status >= 200) {
            resp->url = kiln_xstrdup(c->url);
            return 0;
        }
        have = 0; /* a 1xx: the real answer follows */
    }
}

int kiln_raw_read_body(struct kiln_raw *c, struct kiln_http_response *resp, size_t max,
                       struct kiln_error **err)
{
    uint64_t want = resp->content_length >= 0 ? (uint64_t)resp->content_length : UINT64_MAX;
    uint64_t got = 0;
    char buf[16384];
    int64_t last = now_ms();
    while (got < want) {
        if (got >= KILN_RAW_BODY_MAX)
            return kiln_error_set(err, KILN_ETOOBIG, 0,
                                  "%s '%s': response body larger than %llu bytes", c->method,
                                  c->shown, (unsigned long long)KILN_RAW_BODY_MAX);
        size_t ask = sizeof(buf);
        if (want - got < ask)
            ask = (size_t)(want - got);
        ssize_t n = recv_wait(c, buf, ask, 0, &last, "response body stalled", err);
        if (n < 0)
            return (int)n;
        if (n == 0) {
            if (want == UINT64_MAX)
                break;
            return kiln_error_set(
                err, KILN_ENET, 0, "%s '%s': response body ended after %llu of %llu bytes",
                c->method, c->shown, (unsigned long long)got, (unsigned long long)want);
        }
        size_t keep = resp->body.len < max ? max - resp->body.len : 0;
        if (keep)
            kiln_buf_add(&resp->body, buf, (size_t)n < keep ? (size_t)n : keep);
        got += (size_t)n;
    }
    return 0;
}

/* ---- splice ----------------------------------------------------------------------- */

int kiln_raw_splice(struct kiln_raw *from, struct kiln_raw *to, uint64_t len,
                    int (*progress)(void *userdata, uint64_t moved), void *userdata,
                    uint64_t *ret_moved, struct kiln_error **err)
{
    uint64_t in = 0, out = 0;
    int rc = 0;
    if (ret_moved)
        *ret_moved = 0;
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC | O_NONBLOCK) < 0)
        return kiln_error_set(err, KILN_EIO, errno, "make a pipe");
    fcntl(pfd[1], F_SETPIPE_SZ, (int)KILN_RAW_PIPE_SIZE); /* smaller is fine */
    int psz = fcntl(pfd[1], F_GETPIPE_SZ);
    uint64_t cap = psz > 0 ? (uint64_t)psz : 65536;

    /* a closing destination must not kill the process: SIGPIPE blocked, and
     * one raised here taken back before the mask is restored */
    sigset_t pipe_set, old_set, pending;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, &old_set);
    sigpending(&pending);
    bool was_pending = sigismember(&pending, SIGPIPE) == 1;

    int64_t last = now_ms();
    while (out < len) {
        bool moved = false;
        if (in < len && in - out < cap) {
            uint64_t ask = cap - (in - out);
            if (ask > len - in)
                ask = len - in;
            ssize_t n = splice(from->fd, NULL, pfd[1], NULL, (size_t)ask,
                               SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
            if (n > 0) {
                in += (uint64_t)n;
                moved = true;
            } else if (n == 0) {
                rc = kiln_error_set(
                    err, KILN_ENET, 0, "%s '%s': response body ended after %llu of %llu bytes",
                    from->method, from->shown, (unsigned long long)in, (unsigned long long)len);
                break;
            } else if (errno != EAGAIN && errno != EINTR) {
                rc = kiln_error_set(err, KILN_ENET, errno, "%s '%s': receive", from->method,
                                    from->shown);
                break;
            }
        }
        if (in > out) {
            ssize_t n = splice(pfd[0], NULL, to->fd, NULL, (size_t)(in - out),
                               SPLICE_F_MOVE | SPLICE_F_NONBLOCK | SPLICE_F_MORE);
            if (n > 0) {
                out += (uint64_t)n;
                moved = true;
            } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
                rc = kiln_error_set(err, KILN_ENET, errno, "%s '%s': send", to->method, to->shown);
                break;
            }
        }
        int64_t t = now_ms();
        if (moved)
            last = t;
        if (progress && (moved || t - last >= 100) && progress(userdata, out) != 0) {
            rc = kiln_error_set(err, KILN_ECANCELLED, 0, "%s '%s': cancelled", to->method,
                                to->shown);
            break;
        }
        if (moved)
            continue;
        long stall = in > out ? to->stall_ms : from->stall_ms;
        long left = stall - (long)(t - last);
        if (left <= 0) {
            rc = kiln_error_set(err, KILN_ETIMEOUT, 0, "%s '%s': no byte moved for %ld s",
                                to->method, to->shown, stall / 1000);
            break;
        }
        /* a full pipe is drained by the destination; an empty one filled by the source */
        if (in > out)
            wait_fd(to->fd, POLLOUT, left < 100 ? left : 100);
        else
            wait_fd(from->fd, POLLIN, left < 100 ? left : 100);
    }

    sigpending(&pending);
    if (!was_pending && sigismember(&pending, SIGPIPE) == 1) {
        struct timespec zero = {0, 0};
        while (sigtimedwait(&pipe_set, NULL, &zero) < 0 && errno == EINTR)
            ;
    }
    pthread_sigmask(SIG_SETMASK, &old_set, NULL);
    close(pfd[0]);
    close(pfd[1]);
    if (ret_moved)
        *ret_moved = out;
    return rc;
}
