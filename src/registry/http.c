#include "util/common.h"
#include "registry/http.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <curl/curl.h>
#include <pthread.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>

#include "kiln/version.h"
#include "util/log.h"
#include "util/strv.h"

#define SCHEME_CACHE_MAX 64

/* ---- process-wide libcurl initialisation --------------------------------- */

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static CURLcode global_rc = CURLE_FAILED_INIT;

static void global_init(void)
{
    global_rc = curl_global_init(CURL_GLOBAL_ALL);
}

/* ---- the shared context --------------------------------------------------- */

struct scheme_entry {
    char *hostport;
    bool plain;  /* https failed, http worked */
    bool hinted; /* plain from kiln_http_scheme_hint(), no answer seen yet */
};

struct kiln_http {
    CURLSH *share;
    pthread_mutex_t share_locks[CURL_LOCK_DATA_LAST];
    pthread_mutex_t lock; /* guards schemes */
    struct scheme_entry schemes[SCHEME_CACHE_MAX];
    size_t n_schemes;
    size_t next_evict;
    struct kiln_strv insecure;
    char *ca_file;
    char *user_agent;
    char *proxy;
    char *no_proxy;
    struct curl_slist *resolve;
    long connect_timeout_ms;
    long stall_time_s;
    long stall_speed;
    int max_attempts;
    long retry_max_ms;
    long backoff_base_ms;
    long backoff_max_ms;
};

static void share_lock(CURL *handle, curl_lock_data data, curl_lock_access access, void *userptr)
{
    struct kiln_http *h = userptr;
    if ((int)data >= 0 && data < CURL_LOCK_DATA_LAST)
        pthread_mutex_lock(&h->share_locks[data]);
}

static void share_unlock(CURL *handle, curl_lock_data data, void *userptr)
{
    struct kiln_http *h = userptr;
    if ((int)data >= 0 && data < CURL_LOCK_DATA_LAST)
        pthread_mutex_unlock(&h->share_locks[data]);
}

static bool valid_hostport(const char *s)
{
    if (!*s || strlen(s) > 255)
        return false;
    for (const char *p = s; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (!isalnum(c) && !strchr(".-_:[]", c))
            return false;
    }
    return true;
}

static char *lowercase(char *s)
{
    for (char *p = s; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    return s;
}

int kiln_http_new(const struct kiln_http_options *o, struct kiln_http **ret,
                  struct kiln_error **err)
{
    static const struct kiln_http_options none;
    if (!o)
        o = &none;

    pthread_once(&global_once, global_init);
    if (global_rc != CURLE_OK)
        return kiln_error_set(err, KILN_EINTERNAL, 0, "libcurl initialisation failed: %s",
                              curl_easy_strerror(global_rc));

    struct kiln_http *h = kiln_xcalloc(1, sizeof(*h));
    h->insecure = (struct kiln_strv)KILN_STRV_INIT;
    for (const char *const *p = o->insecure; p && *p; p++) {
        if (!valid_hostport(*p)) {
            kiln_strv_release(&h->insecure);
            free(h);
            return kiln_error_set(err, KILN_EINVAL, 0,
                                  "invalid insecure registry '%s': want host[:port]", *p);
        }
        kiln_strv_push_take(&h->insecure, lowercase(kiln_xstrdup(*p)));
    }
    h->ca_file = o->ca_file ? kiln_xstrdup(o->ca_file) : NULL;
    h->proxy = kiln_xstrdup(o->proxy ? o->proxy : "");
    h->no_proxy = o->no_proxy ? kiln_xstrdup(o->no_proxy) : NULL;
    for (const char *const *p = o->resolve; p && *p; p++) {
        struct curl_slist *l = curl_slist_append(h->resolve, *p);
        if (!l)
            abort(); /* allocation failure */
        h->resolve = l;
    }
    h->user_agent =
        o->user_agent ? kiln_xstrdup(o->user_agent) : kiln_xasprintf("kiln/%s", kiln_version());
    h->connect_timeout_ms =
        o->connect_timeout_ms > 0 ? o->connect_timeout_ms : KILN_HTTP_CONNECT_TIMEOUT_MS;
    h->stall_time_s = o->stall_time_s > 0 ? o->stall_time_s : KILN_HTTP_STALL_TIME_S;
    h->stall_speed = o->stall_speed > 0 ? o->stall_speed : KILN_HTTP_STALL_SPEED;
    h->max_attempts = o->max_attempts > 0 ? o->max_attempts : KILN_HTTP_MAX_ATTEMPTS;
    h->retry_max_ms = o->retry_max_ms > 0 ? o->retry_max_ms : KILN_HTTP_RETRY_MAX_MS;
    h->backoff_base_ms = o->backoff_base_ms > 0 ? o->backoff_base_ms : KILN_HTTP_BACKOFF_BASE_MS;
    h->backoff_max_ms = o->backoff_max_ms > 0 ? o->backoff_max_ms : KILN_HTTP_BACKOFF_MAX_MS;

    for (size_t i = 0; i < CURL_LOCK_DATA_LAST; i++)
        pthread_mutex_init(&h->share_locks[i], NULL);
    pthread_mutex_init(&h->lock, NULL);

    h->share = curl_share_init();
    if (!h->share || curl_share_setopt(h->share, CURLSHOPT_LOCKFUNC, share_lock) != CURLSHE_OK ||
        curl_share_setopt(h->share, CURLSHOPT_UNLOCKFUNC, share_unlock) != CURLSHE_OK ||
        curl_share_setopt(h->share, CURLSHOPT_USERDATA, h) != CURLSHE_OK ||
        curl_share_setopt(h->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS) != CURLSHE_OK ||
        curl_share_setopt(h->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION) != CURLSHE_OK ||
        curl_share_setopt(h->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT) != CURLSHE_OK) {
        kiln_http_free(h);
        return kiln_error_set(err, KILN_EINTERNAL, 0, "cannot set up a libcurl share");
    }
    *ret = h;
    return 0;
}

void kiln_http_free(struct kiln_http *h)
{
    if (!h)
        return;
    if (h->share)
        curl_share_cleanup(h->share);
    for (size_t i = 0; i < CURL_LOCK_DATA_LAST; i++)
        pthread_mutex_destroy(&h->share_locks[i]);
    pthread_mutex_destroy(&h->lock);
    for (size_t i = 0; i < h->n_schemes; i++)
        free(h->schemes[i].hostport);
    kiln_strv_release(&h->insecure);
    free(h->ca_file);
    free(h->user_agent);
    free(h->proxy);
    free(h->no_proxy);
    curl_slist_free_all(h->resolve);
    free(h);
}

/* The host part of host[:port] (brackets kept for IPv6), as a new string. */
static char *host_part(const char *hostport)
{
    if (hostport[0] == '[') {
        const char *end = strchr(hostport, ']');
        return kiln_xstrndup(hostport, end ? (size_t)(end - hostport + 1) : strlen(hostport));
    }
    const char *colon = strchr(hostport, ':');
    if (colon && !strchr(colon + 1, ':'))
        return kiln_xstrndup(hostport, (size_t)(colon - hostport));
    return kiln_xstrdup(hostport);
}

bool kiln_http_host_insecure(struct kiln_http *h, const char *hostport)
{
    if (kiln_http_host_is_loopback(hostport))
        return true;
    _cleanup_free_ char *hp = lowercase(kiln_xstrdup(hostport));
    _cleanup_free_ char *host = host_part(hp);
    for (size_t i = 0; i < h->insecure.n; i++) {
        const char *e = h->insecure.v[i];
        if (strcmp(e, hp) == 0)
            return true;
        /* an entry without a port covers every port of that host */
        _cleanup_free_ char *ehost = host_part(e);
        if (strcmp(ehost, e) == 0 && strcmp(ehost, host) == 0)
            return true;
    }
    return false;
}

/* 1: plain http known to work (or hinted: *hinted), 0: https known to work, -1: unknown. */
static int scheme_get(struct kiln_http *h, const char *hostport, bool *hinted)
{
    int r = -1;
    *hinted = false;
    pthread_mutex_lock(&h->lock);
    for (size_t i = 0; i < h->n_schemes; i++)
        if (strcmp(h->schemes[i].hostport, hostport) == 0) {
            r = h->schemes[i].plain;
            *hinted = h->schemes[i].hinted;
            break;
        }
    pthread_mutex_unlock(&h->lock);
    return r;
}

static void scheme_set(struct kiln_http *h, const char *hostport, bool plain, bool hinted)
{
    pthread_mutex_lock(&h->lock);
    for (size_t i = 0; i < h->n_schemes; i++)
        if (strcmp(h->schemes[i].hostport, hostport) == 0) {
            if (!hinted || h->schemes[i].hinted) {
                h->schemes[i].plain = plain;
                h->schemes[i].hinted = hinted;
            }
            pthread_mutex_unlock(&h->lock);
            return;
        }
    struct scheme_entry *e;
    if (h->n_schemes < SCHEME_CACHE_MAX) {
        e = &h->schemes[h->n_schemes++];
    } else {
        e = &h->schemes[h->next_evict];
        h->next_evict = (h->next_evict + 1) % SCHEME_CACHE_MAX;
        free(e->hostport);
    }
    e->hostport = kiln_xstrdup(hostport);
    e->plain = plain;
    e->hinted = hinted;
    pthread_mutex_unlock(&h->lock);
    kiln_log(KILN_LOG_DEBUG, "http: '%s' speaks %s%s", hostport, plain ? "plain http" : "https",
             hinted ? " (hint)" : "");
}

static void scheme_put(struct kiln_http *h, const char *hostport, bool plain)
{
    scheme_set(h, hostport, plain, false);
}

/* Forget a hint that turned out wrong. */
static void scheme_drop_hint(struct kiln_http *h, const char *hostport)
{
    pthread_mutex_lock(&h->lock);
    for (size_t i = 0; i < h->n_schemes; i++)
        if (strcmp(h->schemes[i].hostport, hostport) == 0 && h->schemes[i].hinted) {
            free(h->schemes[i].hostport);
            h->schemes[i] = h->schemes[--h->n_schemes];
            h->schemes[h->n_schemes] = (struct scheme_entry){0};
            if (h->next_evict >= h->n_schemes)
                h->next_evict = 0;
            break;
        }
    pthread_mutex_unlock(&h->lock);
    kiln_log(KILN_LOG_DEBUG, "http: '%s': the plain http hint was wrong", hostport);
}

void kiln_http_scheme_hint(struct kiln_http *h, const char *hostport, bool plain)
{
    if (!h || !hostport || !*hostport || !plain || !kiln_http_host_insecure(h, hostport))
        return;
    scheme_set(h, hostport, true, true); /* a known answer is never overridden by a hint */
}

void kiln_http_schemes_plain(struct kiln_http *h, void (*fn)(void *ud, const char *hostport),
                             void *ud)
{
    pthread_mutex_lock(&h->lock);
    for (size_t i = 0; i < h->n_schemes; i++)
        if (h->schemes[i].plain)
            fn(ud, h->schemes[i].hostport);
    pthread_mutex_unlock(&h->lock);
}

char *kiln_http_raw_url(struct kiln_http *h, const char *url)
{
    if (!url || (h->proxy && *h->proxy) || h->resolve)
        return NULL;
    if (strncasecmp(url, "http://", 7) == 0)
        return kiln_xstrdup(url);
    if (strncasecmp(url, "https://", 8) != 0)
        return NULL;
    _cleanup_free_ char *hp = kiln_http_url_hostport(url);
    bool hinted = false;
    if (!hp || scheme_get(h, hp, &hinted) != 1 || hinted)
        return NULL;
    return kiln_xasprintf("http://%s", url + 8);
}

void kiln_http_raw_limits(struct kiln_http *h, long *ret_connect_ms, long *ret_stall_ms,
                          const char **ret_user_agent)
{
    *ret_connect_ms = h->connect_timeout_ms;
    *ret_stall_ms = h->stall_time_s * 1000;
    *ret_user_agent = h->user_agent;
}

/* ---- pure helpers ---------------------------------------------------------- */

bool kiln_http_status_retryable(long status)
{
    return status == 408 || status == 429 || status == 500 || status == 502 || status == 503 ||
           status == 504;
}

int kiln_http_retry_after_parse(const char *value, time_t now, long *ret_ms)
{
    if (!value)
        return -1;
    while (*value == ' ' || *value == '\t')
        value++;
    size_t len = strlen(value);
    while (len && (value[len - 1] == ' ' || value[len - 1] == '\t'))
        len--;
    if (!len || len > 64)
        return -1;
    const long day_ms = 86400L * 1000;
    if (isdigit((unsigned char)value[0])) {
        long long secs = 0;
        for (size_t i = 0; i < len; i++) {
            if (!isdigit((unsigned char)value[i]))
                return -1;
            if (secs < 86400)
                secs = secs * 10 + (value[i] - '0');
        }
        *ret_ms = secs >= 86400 ? day_ms : (long)secs * 1000;
        return 0;
    }
    /* HTTP-date: all three forms start with a day name */
    if (!isalpha((unsigned char)value[0]))
        return -1;
    _cleanup_free_ char *copy = kiln_xstrndup(value, len);
    time_t t = curl_getdate(copy, NULL);
    if (t == (time_t)-1)
        return -1;
    if (t <= now)
        *ret_ms = 0;
    else if (t - now >= 86400)
        *ret_ms = day_ms;
    else
        *ret_ms = (long)(t - now) * 1000;
    return 0;
}

long kiln_http_backoff_ms(int attempt, long base_ms, long max_ms, uint64_t rnd)
{
    if (base_ms <= 0 || max_ms <= 0)
        return 0;
    long cap = base_ms;
    for (int i = 1; i < attempt && cap < max_ms; i++)
        cap = cap > max_ms / 2 ? max_ms : cap * 2;
    if (cap > max_ms)
        cap = max_ms;
    return (long)(rnd % ((uint64_t)cap + 1));
}

/* Offsets into an absolute URL "scheme://authority/path?query#fragment". */
struct url {
    size_t scheme_end; /* s[0..scheme_end) is the scheme */
    size_t auth;       /* start of the authority (after "//") */
    size_t host;       /* start of host[:port] (after userinfo) */
    size_t path;       /* end of the authority = start of the path */
    size_t query;      /* '?' or end of path */
    size_t frag;       /* '#' or strlen */
};

static bool parse_url(const char *s, struct url *u)
{
    size_t i = 0;
    if (!isalpha((unsigned char)s[0]))
        return false;
    while (isalnum((unsigned char)s[i]) || s[i] == '+' || s[i] == '-' || s[i] == '.')
        i++;
    if (s[i] != ':' || s[i + 1] != '/' || s[i + 2] != '/')
        return false;
    u->scheme_end = i;
    u->auth = i + 3;
    size_t j = u->auth;
    while (s[j] && s[j] != '/' && s[j] != '?' && s[j] != '#')
        j++;
    u->path = j;
    u->host = u->auth;
    for (size_t k = u->auth; k < u->path; k++)
        if (s[k] == '@')
            u->host = k + 1;
    if (u->host == u->path)
        return false;
    while (s[j] && s[j] != '?' && s[j] != '#')
        j++;
    u->query = j;
    while (s[j] && s[j] != '#')
        j++;
    u->frag = j;
    return true;
}

static bool is_http_scheme(const char *s, const struct url *u)
{
    return (u->scheme_end == 4 && strncasecmp(s, "http", 4) == 0) ||
           (u->scheme_end == 5 && strncasecmp(s, "https", 5) == 0);
}

char *kiln_http_url_hostport(const char *url)
{
    struct url u;
    if (!url || !parse_url(url, &u))
        return NULL;
    return lowercase(kiln_xstrndup(url + u.host, u.path - u.host));
}

bool kiln_http_same_origin(const char *a, const char *b)
{
    struct url ua, ub;
    if (!a || !b || !parse_url(a, &ua) || !parse_url(b, &ub))
        return false;
    if (ua.scheme_end != ub.scheme_end || strncasecmp(a, b, ua.scheme_end) != 0)
        return false;
    size_t la = ua.path - ua.host, lb = ub.path - ub.host;
    return la == lb && strncasecmp(a + ua.host, b + ub.host, la) == 0;
}

char *kiln_http_url_redact(const char *url)
{
    struct url u;
    if (!url)
        return kiln_xstrdup("");
    if (!parse_url(url, &u)) {
        /* not a URL we understand: keep only what precedes '?', '#' or '@' */
        size_t n = strcspn(url, "?#@");
        return kiln_xstrndup(url, n);
    }
    return kiln_xasprintf("%.*s://%.*s%.*s", (int)u.scheme_end, url, (int)(u.path - u.host),
                          url + u.host, (int)(u.query - u.path), url + u.path);
}

char *kiln_http_header_redact(const char *line)
{
    static const char *const secret[] = {"authorization", "proxy-authorization", "cookie",
                                         "set-cookie"};
    const char *colon = strchr(line, ':');
    if (!colon)
        return kiln_xstrdup(line);
    size_t n = (size_t)(colon - line);
    for (size_t i = 0; i < KILN_ARRAY_SIZE(secret); i++)
        if (strlen(secret[i]) == n && strncasecmp(line, secret[i], n) == 0)
            return kiln_xasprintf("%.*s: <redacted>", (int)n, line);
    return kiln_xstrdup(line);
}

bool kiln_http_host_is_loopback(const char *hostport)
{
    if (!hostport || !*hostport)
        return false;
    _cleanup_free_ char *host = host_part(hostport);
    size_t n = strlen(host);
    if (host[0] == '[' && n >= 2 && host[n - 1] == ']') {
        memmove(host, host + 1, n - 2);
        host[n - 2] = '\0';
        n -= 2;
    }
    if (strcasecmp(host, "localhost") == 0 ||
        (n > 10 && strcasecmp(host + n - 10, ".localhost") == 0))
        return true;
    struct in_addr a4;
    if (inet_pton(AF_INET, host, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    struct in6_addr a6;
    if (inet_pton(AF_INET6, host, &a6) == 1) {
        if (IN6_IS_ADDR_LOOPBACK(&a6))
            return true;
        return IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127;
    }
    return false;
}

int kiln_http_range_parse(const char *value, bool zero_empty, uint64_t *ret_len)
{
    if (!value)
        return -1;
    while (*value == ' ')
        value++;
    if (strncasecmp(value, "bytes=", 6) == 0)
        value += 6;
    if (value[0] != '0' || value[1] != '-')
        return -1;
    const char *p = value + 2;
    if (!isdigit((unsigned char)*p))
        return -1;
    uint64_t end = 0;
    for (; isdigit((unsigned char)*p); p++) {
        if (end > (UINT64_MAX - 10) / 10)
            return -1;
        end = end * 10 + (uint64_t)(*p - '0');
    }
    while (*p == ' ')
        p++;
    if (*p)
        return -1;
    *ret_len = (end == 0 && zero_empty) ? 0 : end + 1;
    return 0;
}

/* RFC 3986 5.2.4 */
static void remove_dot_segments(const char *in, size_t len, struct kiln_buf *out)
{
    const char *end = in + len;
    while (in < end) {
        size_t rest = (size_t)(end - in);
        if (rest >= 3 && memcmp(in, "../", 3) == 0) {
            in += 3;
        } else if (rest >= 2 && memcmp(in, "./", 2) == 0) {
            in += 2;
        } else if (rest >= 3 && memcmp(in, "/./", 3) == 0) {
            in += 2;
        } else if (rest == 2 && memcmp(in, "/.", 2) == 0) {
            kiln_buf_addch(out, '/');
            in += 2;
        } else if ((rest >= 4 && memcmp(in, "/../", 4) == 0) ||
                   (rest == 3 && memcmp(in, "/..", 3) == 0)) {
            char *slash = memrchr(out->buf, '/', out->len);
            kiln_buf_truncate(out, slash ? (size_t)(slash - out->buf) : 0);
            if (rest == 3) {
                kiln_buf_addch(out, '/');
                in += 3;
            } else {
                in += 3;
            }
        } else if ((rest == 1 && in[0] == '.') || (rest == 2 && memcmp(in, "..", 2) == 0)) {
            in = end;
        } else {
            const char *seg = in + (in[0] == '/' ? 1 : 0);
            const char *next = memchr(seg, '/', (size_t)(end - seg));
            if (!next)
                next = end;
            kiln_buf_add(out, in, (size_t)(next - in));
            in = next;
        }
    }
}

char *kiln_http_url_join(const char *base, const char *ref)
{
    struct url b;
    if (!base || !ref || !*ref || !parse_url(base, &b) || !is_http_scheme(base, &b))
        return NULL;
    /* a reference with a scheme is absolute */
    size_t i = 0;
    if (isalpha((unsigned char)ref[0])) {
        while (isalnum((unsigned char)ref[i]) || ref[i] == '+' || ref[i] == '-' || ref[i] == '.')
            i++;
        if (ref[i] == ':')
            return kiln_xstrdup(ref);
    }
    if (ref[0] == '/' && ref[1] == '/')
        return kiln_xasprintf("%.*s:%s", (int)b.scheme_end, base, ref);

    size_t rpath_end = strcspn(ref, "?#");
    const char *rq = ref + rpath_end; /* "?query#frag", "#frag" or "" */
    struct kiln_buf out = KILN_BUF_INIT;
    kiln_buf_add(&out, base, b.path); /* scheme://authority */
    if (rpath_end == 0) {
        kiln_buf_add(&out, base + b.path, b.query - b.path);
        if (*rq != '?')
            kiln_buf_add(&out, base + b.query, b.frag - b.query);
        kiln_buf_adds(&out, rq);
        return kiln_buf_detach(&out, NULL);
    }
    struct kiln_buf merged = KILN_BUF_INIT;
    if (ref[0] == '/') {
        kiln_buf_add(&merged, ref, rpath_end);
    } else {
        if (b.query == b.path) {
            kiln_buf_addch(&merged, '/');
        } else {
            const char *slash = memrchr(base + b.path, '/', b.query - b.path);
            kiln_buf_add(&merged, base + b.path, (size_t)(slash - (base + b.path)) + 1);
        }
        kiln_buf_add(&merged, ref, rpath_end);
    }
    struct kiln_buf path = KILN_BUF_INIT;
    remove_dot_segments(merged.buf, merged.len, &path);
    kiln_buf_add(&out, path.buf, path.len);
    kiln_buf_release(&path);
    kiln_buf_release(&merged);
    kiln_buf_adds(&out, rq);
    return kiln_buf_detach(&out, NULL);
}

/* ---- one transfer ------------------------------------------------------------ */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t random_u64(void)
{
    uint64_t v;
    if (getrandom(&v, sizeof(v), GRND_NONBLOCK) == (ssize_t)sizeof(v))
        return v;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    v = (uint64_t)ts.tv_nsec * 0x9E3779B97F4A7C15ULL ^ (uint64_t)ts.tv_sec;
    return v ^ (v >> 29);
}

struct xfer {
    const struct kiln_http_request *req;
    struct kiln_http_response *resp;
    size_t body_max;
    uint64_t mem_pos;          /* read position in a memory body */
    struct kiln_error *cb_err; /* error of a caller callback */
    int cb_code;               /* its -code, or 0 */
    bool too_big;              /* in-memory body passed body_max */
    bool cancelled;            /* progress callback said stop */
    bool early_eof;            /* read callback ended before read_len */
};

static void set_header(char **dst, const char *v, size_t n, bool join)
{
    if (n > KILN_HTTP_HEADER_MAX)
        n = KILN_HTTP_HEADER_MAX;
    if (*dst && join) {
        char *j = kiln_xasprintf("%s, %.*s", *dst, (int)n, v);
        free(*dst);
        *dst = j;
        if (strlen(j) > KILN_HTTP_HEADER_MAX)
            j[KILN_HTTP_HEADER_MAX] = '\0';
    } else if (!*dst) {
        *dst = kiln_xstrndup(v, n);
    }
}

static void clear_headers(struct kiln_http_response *r)
{
    char **fields[] = {
        &r->location, &r->content_type,  &r->docker_content_digest, &r->www_authenticate,
        &r->range,    &r->content_range, &r->retry_after,           &r->chunk_min_length,
        &r->link};
    for (size_t i = 0; i < KILN_ARRAY_SIZE(fields); i++) {
        free(*fields[i]);
        *fields[i] = NULL;
    }
    r->content_length = -1;
}

void kiln_http_response_header_line(struct kiln_http_response *r, const char *data, size_t len)
{
    while (len && (data[len - 1] == '\n' || data[len - 1] == '\r'))
        len--;
    if (len >= 5 && strncmp(data, "HTTP/", 5) == 0) {
        /* a new response (after 1xx): forget the previous headers */
        clear_headers(r);
        const char *sp = memchr(data, ' ', len);
        long status = 0;
        if (sp) {
            for (const char *p = sp + 1;
                 p < data + len && isdigit((unsigned char)*p) && status < 1000; p++)
                status = status * 10 + (*p - '0');
        }
        r->status = status;
        kiln_buf_reset(&r->body);
        return;
    }
    const char *colon = memchr(data, ':', len);
    if (!colon)
        return;
    size_t nlen = (size_t)(colon - data);
    const char *v = colon + 1;
    const char *end = data + len;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    size_t vlen = (size_t)(end - v);
#define IS(name) (nlen == strlen(name) && strncasecmp(data, name, nlen) == 0)
    if (IS("location"))
        set_header(&r->location, v, vlen, false);
    else if (IS("content-type"))
        set_header(&r->content_type, v, vlen, false);
    else if (IS("docker-content-digest"))
        set_header(&r->docker_content_digest, v, vlen, false);
    else if (IS("www-authenticate"))
        set_header(&r->www_authenticate, v, vlen, true);
    else if (IS("range"))
        set_header(&r->range, v, vlen, false);
    else if (IS("content-range"))
        set_header(&r->content_range, v, vlen, false);
    else if (IS("retry-after"))
        set_header(&r->retry_after, v, vlen, false);
    else if (IS("oci-chunk-min-length"))
        set_header(&r->chunk_min_length, v, vlen, false);
    else if (IS("link"))
        set_header(&r->link, v, vlen, false);
    else if (IS("content-length") && r->content_length < 0) {
        int64_t cl = 0;
        bool okv = vlen > 0 && vlen <= 18;
        for (size_t i = 0; okv && i < vlen; i++) {
            if (!isdigit((unsigned char)v[i]))
                okv = false;
            else
                cl = cl * 10 + (v[i] - '0');
        }
        if (okv)
            r->content_length = cl;
    }
#undef IS
}

static size_t header_cb(char *data, size_t size, size_t nmemb, void *ud)
{
    struct xfer *x = ud;
    kiln_http_response_header_line(x->resp, data, size * nmemb);
    return size * nmemb;
}

static bool status_ok(long s)
{
    return s >= 200 && s < 300;
}

static size_t write_cb(char *data, size_t size, size_t nmemb, void *ud)
{
    struct xfer *x = ud;
    struct kiln_http_response *r = x->resp;
    size_t n = size * nmemb;
    if (!status_ok(r->status)) {
        size_t room = KILN_HTTP_ERROR_BODY_MAX - r->body.len;
        if (r->body.len < KILN_HTTP_ERROR_BODY_MAX)
            kiln_buf_add(&r->body, data, n < room ? n : room);
        return n;
    }
    if (x->req->write) {
        int rc = x->req->write(x->req->write_data, data, n, &x->cb_err);
        if (rc < 0) {
            x->cb_code = rc;
            return 0;
        }
        r->written += n;
        return n;
    }
    if (n > x->body_max - r->body.len || kiln_buf_add(&r->body, data, n) < 0) {
        x->too_big = true;
        return 0;
    }
    return n;
}

static size_t read_cb(char *buf, size_t size, size_t nmemb, void *ud)
{
    struct xfer *x = ud;
    const struct kiln_http_request *q = x->req;
    size_t cap = size * nmemb;
    if (!q->read) {
        size_t left = q->body_len - (size_t)x->mem_pos;
        size_t n = left < cap ? left : cap;
        memcpy(buf, (const char *)q->body + x->mem_pos, n);
        x->mem_pos += n;
        x->resp->sent += n;
        return n;
    }
    uint64_t left = q->read_len - x->resp->sent;
    if (left == 0)
        return 0;
    if (cap > left)
        cap = (size_t)left;
    size_t got = 0;
    int rc = q->read(q->read_data, buf, cap, &got, &x->cb_err);
    if (rc < 0) {
        x->cb_code = rc;
        return CURL_READFUNC_ABORT;
    }
    if (got == 0 || got > cap) {
        x->early_eof = true;
        return CURL_READFUNC_ABORT;
    }
    x->resp->sent += got;
    return got;
}

static int seek_cb(void *ud, curl_off_t offset, int origin)
{
    struct xfer *x = ud;
    const struct kiln_http_request *q = x->req;
    if (origin != SEEK_SET || offset < 0)
        return CURL_SEEKFUNC_CANTSEEK;
    if (!q->read) {
        if ((uint64_t)offset > q->body_len)
            return CURL_SEEKFUNC_FAIL;
        x->mem_pos = (uint64_t)offset;
        x->resp->sent = (uint64_t)offset;
        return CURL_SEEKFUNC_OK;
    }
    if (!q->seek || (uint64_t)offset > q->read_len)
        return CURL_SEEKFUNC_CANTSEEK;
    int rc = q->seek(q->read_data, (uint64_t)offset, &x->cb_err);
    if (rc < 0) {
        x->cb_code = rc;
        return CURL_SEEKFUNC_FAIL;
    }
    x->resp->sent = (uint64_t)offset;
    return CURL_SEEKFUNC_OK;
}

static int progress_cb(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
    struct xfer *x = ud;
    if (x->req->progress &&
        x->req->progress(x->req->progress_data, (uint64_t)dlnow, (uint64_t)ulnow) != 0) {
        x->cancelled = true;
        return 1;
    }
    return 0;
}

static bool has_body(const struct kiln_http_request *q)
{
    return q->read || q->body;
}

static bool is_auth_header(const char *line)
{
    return strncasecmp(line, "authorization:", 14) == 0;
}

/* Result of one attempt: 0 and a response, or a curl failure, or a fatal error. */
enum outcome { OUT_RESPONSE, OUT_TRANSPORT, OUT_FATAL };

struct attempt {
    int fatal; /* OUT_FATAL: the -code (also set in *err when err is not NULL) */
    CURLcode code;
    char errbuf[CURL_ERROR_SIZE];
};

static enum outcome perform(struct kiln_http *h, const struct kiln_http_request *q,
                            const char *method, const char *url, bool drop_auth, bool verify,
                            struct kiln_http_response *resp, struct attempt *a,
                            struct kiln_error **err)
{
    struct xfer x = {.req = q, .resp = resp};
    x.body_max = q->body_max ? q->body_max : KILN_HTTP_BODY_MAX;
    a->fatal = 0;
    a->errbuf[0] = '\0';
    a->code = CURLE_OK;

    /* fresh response state, but keep the attempt counter */
    int attempts = resp->attempts;
    kiln_http_response_release(resp);
    kiln_buf_init(&resp->body,
                  (x.body_max > KILN_HTTP_ERROR_BODY_MAX ? x.body_max : KILN_HTTP_ERROR_BODY_MAX) +
                      1);
    resp->attempts = attempts + 1;
    resp->url = kiln_xstrdup(url);

    CURL *e = curl_easy_init();
    if (!e) {
        a->fatal = kiln_error_set(err, KILN_EINTERNAL, 0, "cannot create a libcurl handle");
        return OUT_FATAL;
    }
    struct curl_slist *hl = NULL;
    for (const char *const *p = q->headers; p && *p; p++) {
        if (drop_auth && is_auth_header(*p))
            continue;
        hl = curl_slist_append(hl, *p);
    }
    bool has_type = false;
    for (const char *const *p = q->headers; p && *p; p++)
        if (strncasecmp(*p, "content-type:", 13) == 0)
            has_type = true;
    if (q->body && !q->read)
        hl = curl_slist_append(hl, "Expect:"); /* small bodies: no 100-continue round trip */
    if (!has_body(q) && !has_type)
        hl = curl_slist_append(hl, "Content-Type:"); /* no form type on empty POST/PUT */

    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_SHARE, h->share);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, h->connect_timeout_ms);
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, h->stall_speed);
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, h->stall_time_s);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_USERAGENT, h->user_agent);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, a->errbuf);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, header_cb);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, &x);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &x);
    curl_easy_setopt(e, CURLOPT_BUFFERSIZE, 256L * 1024);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, verify ? 1L : 0L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, verify ? 2L : 0L);
    if (!verify) {
        /* nothing is verified: do not parse the CA store (~3 ms of PEM per handshake) */
        curl_easy_setopt(e, CURLOPT_CAINFO, NULL);
        curl_easy_setopt(e, CURLOPT_CAPATH, NULL);
    } else if (h->ca_file) {
        curl_easy_setopt(e, CURLOPT_CAINFO, h->ca_file);
    }
    curl_easy_setopt(e, CURLOPT_PROXY, h->proxy); /* "" also stops curl reading the environment */
    if (h->no_proxy)
        curl_easy_setopt(e, CURLOPT_NOPROXY, h->no_proxy);
    if (h->resolve)
        curl_easy_setopt(e, CURLOPT_RESOLVE, h->resolve);
    if (q->progress) {
        curl_easy_setopt(e, CURLOPT_NOPROGRESS, 0L);
        curl_easy_setopt(e, CURLOPT_XFERINFOFUNCTION, progress_cb);
        curl_easy_setopt(e, CURLOPT_XFERINFODATA, &x);
    }

    if (strcmp(method, "HEAD") == 0) {
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    } else if (strcmp(method, "GET") == 0 && !has_body(q)) {
        curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    } else if (has_body(q)) {
        curl_easy_setopt(e, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
        curl_easy_setopt(e, CURLOPT_INFILESIZE_LARGE,
                         (curl_off_t)(q->read ? q->read_len : q->body_len));
        curl_easy_setopt(e, CURLOPT_READFUNCTION, read_cb);
        curl_easy_setopt(e, CURLOPT_READDATA, &x);
        curl_easy_setopt(e, CURLOPT_SEEKFUNCTION, seek_cb);
        curl_easy_setopt(e, CURLOPT_SEEKDATA, &x);
        curl_easy_setopt(e, CURLOPT_UPLOAD_BUFFERSIZE, 512L * 1024);
    } else if (strcmp(method, "DELETE") == 0) {
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    } else {
        /* POST/PUT/PATCH without a body: send Content-Length: 0 */
        curl_easy_setopt(e, CURLOPT_POST, 1L);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, "");
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, 0L);
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    }

    CURLcode rc = curl_easy_perform(e);
    a->code = rc;
    long status = 0;
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(e);
    curl_slist_free_all(hl);

    _cleanup_free_ char *shown = kiln_http_url_redact(url);
    if (x.cb_code < 0) {
        a->fatal = x.cb_code;
        if (err) {
            kiln_error_free(*err);
            *err = x.cb_err;
        } else {
            kiln_error_free(x.cb_err);
        }
        return OUT_FATAL;
    }
    kiln_error_free(x.cb_err);
    if (x.too_big) {
        a->fatal =
            kiln_error_set(err, KILN_ETOOBIG, 0, "%s '%s': response body larger than %zu bytes",
                           method, shown, x.body_max);
        return OUT_FATAL;
    }
    if (x.cancelled) {
        a->fatal = kiln_error_set(err, KILN_ECANCELLED, 0, "%s '%s': cancelled", method, shown);
        return OUT_FATAL;
    }
    if (x.early_eof) {
        a->fatal = kiln_error_set(
            err, KILN_EIO, 0, "%s '%s': request body ended after %llu of %llu bytes", method, shown,
            (unsigned long long)resp->sent, (unsigned long long)q->read_len);
        return OUT_FATAL;
    }
    if (rc != CURLE_OK)
        return OUT_TRANSPORT;
    if (status)
        resp->status = status;
    return OUT_RESPONSE;
}

static bool transport_retryable(CURLcode c)
{
    switch (c) {
    case CURLE_COULDNT_CONNECT:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
        return true;
    default:
        return false;
    }
}

/* Whether the request body can be sent again from its start. */
static bool body_replayable(const struct kiln_http_request *q, const struct kiln_http_response *r)
{
    if (!q->read)
        return true;
    return q->seek || r->sent == 0;
}

static int rewind_body(const struct kiln_http_request *q, const struct kiln_http_response *r,
                       struct kiln_error **err)
{
    if (q->read && q->seek && r->sent > 0)
        return q->seek(q->read_data, 0, err);
    return 0;
}

/* Sleep `ms`, waking up every 100 ms to ask the progress callback. */
static bool sleep_ms(const struct kiln_http_request *q, long ms)
{
    while (ms > 0) {
        long step = ms > 100 ? 100 : ms;
        struct timespec ts = {step / 1000, (step % 1000) * 1000000L};
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
            ;
        ms -= step;
        if (q->progress && q->progress(q->progress_data, 0, 0) != 0)
            return false;
    }
    return true;
}

static int transport_error(const char *method, const char *url, const struct attempt *a,
                           int attempts, struct kiln_error **err)
{
    _cleanup_free_ char *shown = kiln_http_url_redact(url);
    const char *why = a->errbuf[0] ? a->errbuf : curl_easy_strerror(a->code);
    int code = a->code == CURLE_OPERATION_TIMEDOUT ? KILN_ETIMEOUT : KILN_ENET;
    if (attempts > 1)
        return kiln_error_set(err, code, 0, "%s '%s': %s (after %d attempts)", method, shown, why,
                              attempts);
    return kiln_error_set(err, code, 0, "%s '%s': %s", method, shown, why);
}

/* One URL, with the insecure fallback and retries. */
static int do_retrying(struct kiln_http *h, const struct kiln_http_request *q, const char *method,
                       const char *url_in, bool drop_auth, struct kiln_http_response *resp,
                       struct kiln_error **err)
{
    struct url u;
    if (!parse_url(url_in, &u) || !is_http_scheme(url_in, &u)) {
        _cleanup_free_ char *shown = kiln_http_url_redact(url_in);
        return kiln_error_set(err, KILN_EINVAL, 0, "'%s' is not an http(s) URL", shown);
    }
    _cleanup_free_ char *hostport = kiln_http_url_hostport(url_in);
    bool insecure = kiln_http_host_insecure(h, hostport);
    _cleanup_free_ char *url = kiln_xstrdup(url_in);
    _cleanup_free_ char *plain_url = NULL;
    bool probe = false;
    bool plain_pending = false; /* on http after a TLS failure, not cached yet */
    bool hint = false;          /* on http because of a hint: the first answer decides */
    if (u.scheme_end == 5 && insecure) {
        plain_url = kiln_xasprintf("http%s", url_in + 5);
        int known = scheme_get(h, hostport, &hint);
        if (known == 1) {
            free(url);
            url = kiln_xstrdup(plain_url);
        } else if (known < 0) {
            probe = true;
        }
    }

    int max_attempts = (q->flags & KILN_HTTP_NO_RETRY) ? 1 : h->max_attempts;
    int64_t start = now_ms();
    struct attempt a;
    for (;;) {
        enum outcome o = perform(h, q, method, url, drop_auth, !insecure, resp, &a, err);
        if (o == OUT_FATAL)
            return a.fatal;
        if (hint) {
            hint = false;
            if (o == OUT_RESPONSE && resp->status != 400) {
                scheme_put(h, hostport, true);
            } else if (resp->written == 0 && body_replayable(q, resp)) {
                /* a TLS server, or gone: forget the hint, probe as usual */
                scheme_drop_hint(h, hostport);
                int r = rewind_body(q, resp, err);
                if (r < 0)
                    return r;
                resp->attempts--;
                free(url);
                url = kiln_xstrdup(url_in);
                probe = true;
                continue;
            }
        }
        if (plain_pending && o == OUT_RESPONSE) {
            scheme_put(h, hostport, true);
            plain_pending = false;
        }
        if (probe) {
            if (o == OUT_RESPONSE) {
                scheme_put(h, hostport, false);
                probe = false;
            } else if (resp->written == 0 && body_replayable(q, resp)) {
                /* https failed at the transport level: try plain http now */
                int r = rewind_body(q, resp, err);
                if (r < 0)
                    return r;
                struct attempt a2;
                enum outcome o2 =
                    perform(h, q, method, plain_url, drop_auth, false, resp, &a2, err);
                resp->attempts--; /* the fallback is part of the same attempt */
                if (o2 == OUT_FATAL)
                    return a2.fatal;
                if (o2 == OUT_RESPONSE) {
                    scheme_put(h, hostport, true);
                    probe = false;
                    free(url);
                    url = kiln_xstrdup(plain_url);
                    o = o2;
                } else {
                    if (a.code == CURLE_SSL_CONNECT_ERROR) {
                        /* the server does not speak TLS: stay on http for this
                         * request (cached once an answer comes) */
                        free(url);
                        url = kiln_xstrdup(plain_url);
                        probe = false;
                        plain_pending = true;
                    }
                    a = a2;
                }
            }
        }

        bool retry;
        long delay = -1;
        if (o == OUT_RESPONSE) {
            retry = kiln_http_status_retryable(resp->status);
            long ra;
            if (retry && (resp->status == 429 || resp->status == 503) && resp->retry_after &&
                kiln_http_retry_after_parse(resp->retry_after, time(NULL), &ra) == 0)
                delay = ra;
        } else {
            retry = transport_retryable(a.code);
        }
        if (retry && resp->written > 0)
            retry = false; /* the caller got part of a body: it resumes */
        if (retry && !body_replayable(q, resp))
            retry = false; /* the body cannot be sent again */
        if (retry && resp->attempts >= max_attempts)
            retry = false;
        if (retry) {
            if (delay < 0)
                delay = kiln_http_backoff_ms(resp->attempts, h->backoff_base_ms, h->backoff_max_ms,
                                             random_u64());
            if (now_ms() - start + delay > h->retry_max_ms)
                retry = false;
        }
        if (!retry) {
            if (o == OUT_TRANSPORT)
                return transport_error(method, url, &a, resp->attempts, err);
            return 0;
        }
        _cleanup_free_ char *shown = kiln_http_url_redact(url);
        if (o == OUT_RESPONSE)
            kiln_log(KILN_LOG_INFO, "http: %s '%s': %ld, retrying in %ld ms (attempt %d of %d)",
                     method, shown, resp->status, delay, resp->attempts + 1, max_attempts);
        else
            kiln_log(KILN_LOG_INFO, "http: %s '%s': %s, retrying in %ld ms (attempt %d of %d)",
                     method, shown, a.errbuf[0] ? a.errbuf : curl_easy_strerror(a.code), delay,
                     resp->attempts + 1, max_attempts);
        if (!sleep_ms(q, delay))
            return kiln_error_set(err, KILN_ECANCELLED, 0, "%s '%s': cancelled", method, shown);
        int r = rewind_body(q, resp, err);
        if (r < 0)
            return r;
    }
}

void kiln_http_response_init(struct kiln_http_response *r)
{
    memset(r, 0, sizeof(*r));
    kiln_buf_init(&r->body, 0);
    r->content_length = -1;
}

void kiln_http_response_release(struct kiln_http_response *r)
{
    if (!r)
        return;
    clear_headers(r);
    free(r->url);
    kiln_buf_release(&r->body);
    kiln_http_response_init(r);
}

static bool is_redirect(long s)
{
    return s == 301 || s == 302 || s == 303 || s == 307 || s == 308;
}

int kiln_http_do(struct kiln_http *h, const struct kiln_http_request *q,
                 struct kiln_http_response *resp, struct kiln_error **err)
{
    const char *method = q->method ? q->method : "GET";
    kiln_http_response_release(resp);
    if (!q->url)
        return kiln_error_set(err, KILN_EINVAL, 0, "no URL");
    bool follow = (q->flags & KILN_HTTP_FOLLOW) &&
                  (strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0);
    _cleanup_free_ char *url = kiln_xstrdup(q->url);
    bool drop_auth = false;
    for (int hop = 0;; hop++) {
        resp->attempts = 0;
        int r = do_retrying(h, q, method, url, drop_auth, resp, err);
        if (r < 0)
            return r;
        _cleanup_free_ char *shown = kiln_http_url_redact(resp->url);
        kiln_log(KILN_LOG_DEBUG, "http: %s '%s' -> %ld", method, shown, resp->status);
        if (!follow || !is_redirect(resp->status) || !resp->location)
            return 0;
        if (hop >= KILN_HTTP_MAX_REDIRECTS)
            return kiln_error_set(err, KILN_EINVAL, 0, "%s '%s': more than %d redirects", method,
                                  shown, KILN_HTTP_MAX_REDIRECTS);
        char *next = kiln_http_url_join(resp->url, resp->location);
        if (!next)
            return kiln_error_set(err, KILN_ENET, 0, "%s '%s': bad redirect location", method,
                                  shown);
        if (!kiln_http_same_origin(resp->url, next))
            drop_auth = true;
        free(url);
        url = next;
    }
}

static bool strv_equal(const char *const *a, const char *const *b)
{
    size_t i = 0;
    for (; a && b && a[i] && b[i]; i++)
        if (strcmp(a[i], b[i]))
            return false;
    return (!a || !a[i]) && (!b || !b[i]);
}

static bool str_equal(const char *a, const char *b)
{
    return (!a || !*a) ? (!b || !*b) : (b && !strcmp(a, b));
}

bool kiln_http_options_equal(const struct kiln_http_options *a, const struct kiln_http_options *b)
{
    return strv_equal(a->insecure, b->insecure) && str_equal(a->ca_file, b->ca_file) &&
           str_equal(a->user_agent, b->user_agent) && str_equal(a->proxy, b->proxy) &&
           str_equal(a->no_proxy, b->no_proxy) && strv_equal(a->resolve, b->resolve) &&
           a->connect_timeout_ms == b->connect_timeout_ms && a->stall_time_s == b->stall_time_s &&
           a->stall_speed == b->stall_speed && a->max_attempts == b->max_attempts &&
           a->retry_max_ms == b->retry_max_ms && a->backoff_base_ms == b->backoff_base_ms &&
           a->backoff_max_ms == b->backoff_max_ms;
}
