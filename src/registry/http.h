/*
 * HTTP for the registry client: one request function over libcurl with
 * retries, timeouts, TLS policy and connection sharing.
 *
 * A `struct kiln_http` holds the options and a curl share (connections, DNS
 * cache, TLS sessions) guarded by locks: one instance is meant to be shared
 * by every thread of the process that talks to registries, and
 * kiln_http_do() may be called from several threads at once (each call
 * uses its own curl easy handle). Free it only after every call returned.
 *
 * TLS is verified by default (system CA store, or `ca_file`). Hosts in the
 * `insecure` list and loopback hosts (localhost, *.localhost, 127.0.0.0/8,
 * ::1) are treated as docker treats insecure registries: an https:// URL is
 * tried over TLS without verification, and when that fails at the
 * transport level, over plain http://; the answer that worked is cached
 * per host[:port] for the life of the struct. An http:// URL is always
 * used as given.
 *
 * Retries: connection-level failures (refused, reset, timeouts, empty
 * replies) and the statuses 408, 429, 500, 502, 503 and 504 are retried
 * with exponential backoff and full jitter (a uniform delay in
 * [0, min(backoff_max, backoff_base * 2^(n-1))] after the n-th attempt); a
 * Retry-After (seconds or HTTP-date) on 429 and 503 replaces the computed
 * delay. Retrying stops after `max_attempts` attempts or when the next
 * delay would pass `retry_max_ms` since the first attempt started. A
 * request body read from a callback is resent only when the callback has a
 * seek function or no byte of it was consumed yet; a response body already
 * partly passed to the caller's write callback is never restarted. In both
 * cases the failure is returned and the caller resumes (see
 * kiln_http_response.written).
 *
 * Secrets: request headers are never logged nor put into errors; error
 * messages and log lines show URLs without userinfo, query or fragment.
 * No function here prints or reads the environment.
 */
#ifndef KILN_REGISTRY_HTTP_H
#define KILN_REGISTRY_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "kiln/error.h"
#include "util/buf.h"

/* Defaults used when an option is 0. */
#define KILN_HTTP_CONNECT_TIMEOUT_MS 30000L
#define KILN_HTTP_STALL_TIME_S       60L /* abort when slower than stall_speed this long */
#define KILN_HTTP_STALL_SPEED        1L  /* bytes per second */
#define KILN_HTTP_MAX_ATTEMPTS       5
#define KILN_HTTP_RETRY_MAX_MS       120000L
#define KILN_HTTP_BACKOFF_BASE_MS    250L
#define KILN_HTTP_BACKOFF_MAX_MS     16000L
#define KILN_HTTP_BODY_MAX           ((size_t)1 << 20)  /* in-memory 2xx body */
#define KILN_HTTP_ERROR_BODY_MAX     ((size_t)64 << 10) /* non-2xx body kept (rest dropped) */
#define KILN_HTTP_HEADER_MAX         16384              /* longest kept header value */
#define KILN_HTTP_MAX_REDIRECTS      10

struct kiln_http_options {
    const char *const *insecure; /* NULL-terminated host[:port] list, or NULL */
    const char *ca_file;         /* PEM CA bundle replacing the system store, or NULL */
    const char *user_agent;      /* NULL: "kiln/VERSION" */
    const char *proxy;           /* proxy URL; NULL or "": none (the environment's
                                    http_proxy etc. are ignored: the program passes them) */
    const char *no_proxy;        /* hosts that bypass `proxy` (curl's NOPROXY syntax), or NULL */
    /*
     * NULL-terminated "host:port:address" entries that pin a name to an
     * address without DNS (curl's CURLOPT_RESOLVE), or NULL. The tests use
     * it to reach a loopback server under a name that is not loopback.
     */
    const char *const *resolve;
    long connect_timeout_ms;
    long stall_time_s;
    long stall_speed;
    int max_attempts; /* 1 disables retries */
    long retry_max_ms;
    long backoff_base_ms;
    long backoff_max_ms;
};

struct kiln_http;

/*
 * Create a shared HTTP context; the options are copied. Initialises libcurl
 * once per process. Fails with -KILN_EINTERNAL when libcurl cannot be set
 * up, -KILN_EINVAL on a malformed insecure entry.
 */
int kiln_http_new(const struct kiln_http_options *o, struct kiln_http **ret,
                  struct kiln_error **err);
void kiln_http_free(struct kiln_http *h);

/* True when two option sets make the same context (NULL and "" strings alike). */
bool kiln_http_options_equal(const struct kiln_http_options *a, const struct kiln_http_options *b);

/* True when host[:port] is in the insecure list or is a loopback host. */
bool kiln_http_host_insecure(struct kiln_http *h, const char *hostport);

/*
 * What an insecure host speaks, carried from one context to the next (e.g.
 * a file the caller keeps between processes), so that a plain-http registry
 * costs no TLS attempt each time. A hint of plain http for an insecure
 * host:port makes its requests go over http at once. The hint stands until
 * the first answer: an answer other than 400 confirms it; a transport
 * failure or a 400 (what a TLS server answers to plain http) drops it and
 * that request starts again with the usual https-first probe. Hints for hosts
 * that are not insecure, and hints of https, are ignored.
 */
void kiln_http_scheme_hint(struct kiln_http *h, const char *hostport, bool plain);
/* Calls fn for every host:port known, or still hinted, to speak plain http. */
void kiln_http_schemes_plain(struct kiln_http *h, void (*fn)(void *ud, const char *hostport),
                             void *ud);

/*
 * For registry/rawhttp.h: the plain http:// URL under which `url` is
 * reached with a socket of the caller's own, or NULL when this context
 * would not reach it that way: https (or a host not yet known to speak
 * plain http: a hint does not count), a proxy, or names pinned by
 * `resolve`. Caller frees.
 */
char *kiln_http_raw_url(struct kiln_http *h, const char *url);
/* The context's connect timeout, stall time (both ms) and User-Agent (owned by h). */
void kiln_http_raw_limits(struct kiln_http *h, long *ret_connect_ms, long *ret_stall_ms,
                          const char **ret_user_agent);

/*
 * Callbacks. Each returns >= 0 on success or a negative -KILN_E code after
 * setting *err; the request then fails with that error (never retried).
 *   read:  fill up to `cap` bytes of buf, store the count in *ret_n (0 only
 *          at the end of the body, which must be exactly read_len bytes)
 *   seek:  restart reading at body offset `offset` (only 0 is asked for
 *          by this module; curl may ask for others on its own)
 *   write: take the next `len` bytes of a 2xx response body
 *   progress: called now and then (also while waiting to retry) with the
 *          bytes received and sent in the current attempt; return nonzero
 *          to cancel the request (-KILN_ECANCELLED)
 */
typedef int (*kiln_http_read_fn)(void *userdata, void *buf, size_t cap, size_t *ret_n,
                                 struct kiln_error **err);
typedef int (*kiln_http_seek_fn)(void *userdata, uint64_t offset, struct kiln_error **err);
typedef int (*kiln_http_write_fn)(void *userdata, const void *data, size_t len,
                                  struct kiln_error **err);
typedef int (*kiln_http_progress_fn)(void *userdata, uint64_t received, uint64_t sent);

enum {
    KILN_HTTP_NO_RETRY = 1 << 0, /* one attempt (the insecure http fallback still happens) */
    KILN_HTTP_FOLLOW = 1 << 1,   /* follow redirects (GET/HEAD only); Authorization headers
                                    are dropped once the origin changes */
};

struct kiln_http_request {
    const char *method;         /* "GET", "HEAD", "PUT", "POST", "PATCH", "DELETE"; NULL: GET */
    const char *url;            /* absolute http:// or https:// URL */
    const char *const *headers; /* NULL-terminated "Name: value" lines, or NULL */

    /* Request body: from memory (body, body_len), or from a callback
     * (read != NULL) of exactly read_len bytes. Neither: no body. */
    const void *body;
    size_t body_len;
    kiln_http_read_fn read;
    kiln_http_seek_fn seek; /* NULL: the body cannot be rewound */
    void *read_data;
    uint64_t read_len;

    /* Response body of 2xx statuses: to write() when set, else into
     * response.body up to body_max bytes (0: KILN_HTTP_BODY_MAX; more is
     * -KILN_ETOOBIG). Other statuses always go to response.body, cut at
     * KILN_HTTP_ERROR_BODY_MAX. While write() runs, the status and headers
     * of the response being received are already in the caller's struct
     * kiln_http_response (so a writer can look at status/content_range). */
    kiln_http_write_fn write;
    void *write_data;
    size_t body_max;

    kiln_http_progress_fn progress;
    void *progress_data;
    unsigned flags;
};

/*
 * The final response. Header fields are NULL when absent; values are
 * trimmed, cut at KILN_HTTP_HEADER_MAX; repeated WWW-Authenticate headers
 * are joined with ", ", for the others the first one counts.
 */
struct kiln_http_response {
    long status;
    char *url; /* the URL that answered (after the http fallback and redirects) */
    struct kiln_buf body;
    char *location;
    char *content_type;
    char *docker_content_digest;
    char *www_authenticate;
    char *range;
    char *content_range;
    char *retry_after;
    char *chunk_min_length; /* OCI-Chunk-Min-Length */
    char *link;             /* Link (the first one) */
    int64_t content_length; /* -1 when absent */
    uint64_t written;       /* body bytes passed to write() in the last attempt */
    uint64_t sent;          /* request body bytes read from the source in the last attempt */
    int attempts;           /* attempts made for the URL that answered */
};

void kiln_http_response_init(struct kiln_http_response *r);
/* Free the contents; the response is initialised again. NULL is fine. */
void kiln_http_response_release(struct kiln_http_response *r);

/*
 * Take one line of a response head into r, as the transport does: a status
 * line ("HTTP/1.1 200 OK") starts a new response (headers of an earlier 1xx
 * forgotten, status set, body emptied); "Name: value" lines fill the fields
 * above (values trimmed and cut at KILN_HTTP_HEADER_MAX); anything else is
 * ignored. A trailing CR/LF is allowed. For registry/rawhttp.c and tests.
 */
void kiln_http_response_header_line(struct kiln_http_response *r, const char *line, size_t len);

/*
 * Perform a request, with retries as described above. Returns 0 when a
 * final HTTP response was received, whatever its status (a retryable status
 * that outlived the retries is returned as such, with resp->attempts
 * telling how many were made); *resp must be initialised and is released
 * first. Fails with -KILN_ENET (connection-level failure, naming method,
 * URL and the curl reason), -KILN_ETIMEOUT (connect or stall timeout),
 * -KILN_ETOOBIG (in-memory body over its cap), -KILN_ECANCELLED (progress
 * callback), -KILN_EINVAL (bad URL, too many redirects), or the error of a
 * callback. resp->written and resp->sent stay meaningful after a failure.
 */
int kiln_http_do(struct kiln_http *h, const struct kiln_http_request *req,
                 struct kiln_http_response *resp, struct kiln_error **err);

/* ---- pure helpers (exposed for the client and tests) ---------------------- */

/* Whether a status is retried: 408, 429, 500, 502, 503, 504. */
bool kiln_http_status_retryable(long status);

/*
 * Parse a Retry-After value: delta-seconds or an HTTP-date (IMF-fixdate,
 * RFC 850 or asctime), relative to `now`. Writes the delay in milliseconds
 * (0 for dates in the past; capped at one day) and returns 0, or returns -1
 * on a malformed value.
 */
int kiln_http_retry_after_parse(const char *value, time_t now, long *ret_ms);

/*
 * The full-jitter delay after attempt `attempt` (1-based): `rnd` scaled into
 * [0, min(max_ms, base_ms * 2^(attempt-1))].
 */
long kiln_http_backoff_ms(int attempt, long base_ms, long max_ms, uint64_t rnd);

/*
 * Resolve `ref` (a URL or an absolute/relative reference, RFC 3986 section
 * 5.2 including dot-segment removal) against the absolute URL `base`.
 * Returns a new string (caller frees) or NULL when base is not an absolute
 * http(s) URL or ref is empty.
 */
char *kiln_http_url_join(const char *base, const char *ref);

/*
 * "host[:port]" of an absolute URL, host lower-cased (IPv6 in brackets),
 * userinfo dropped; NULL when the URL has no authority. Caller frees.
 */
char *kiln_http_url_hostport(const char *url);

/* Same scheme (case-insensitive) and host[:port]. */
bool kiln_http_same_origin(const char *a, const char *b);

/* The URL without userinfo, query and fragment (for messages). Caller frees. */
char *kiln_http_url_redact(const char *url);

/*
 * A header line fit for a log: secrets (Authorization, Proxy-Authorization,
 * Cookie, Set-Cookie) replaced by "<redacted>". Caller frees.
 */
char *kiln_http_header_redact(const char *line);

/* localhost, *.localhost, 127.0.0.0/8, ::1 (also ::ffff:127.x.y.z); port ignored. */
bool kiln_http_host_is_loopback(const char *hostport);

/*
 * Parse a Range header of an upload ("0-N" or "bytes=0-N", inclusive end):
 * writes the number of bytes held (N + 1, or 0 for "0-0" when `zero_empty`,
 * as docker's registry reports an empty upload that way) and returns 0, or
 * -1 when malformed or not starting at 0.
 */
int kiln_http_range_parse(const char *value, bool zero_empty, uint64_t *ret_len);

#endif
