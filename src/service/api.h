/*
 * The routes of `kiln serve` (docs/api.md) without the HTTP layer: a
 * request (method, decoded path, query parameters, a few headers, the body)
 * goes in, a response (status, headers, and a body: bytes, a static asset,
 * a file range, or a stream) comes out. service/server.c feeds requests
 * from libmicrohttpd; tests and fuzz targets call kiln_api_handle()
 * directly.
 *
 * Auth: every /api/ path needs "Authorization: Bearer TOKEN" where
 * sha256(TOKEN) equals the configured hash (compared in constant time);
 * /healthz, /metrics and the web page need none.
 *
 * Streams (GET /jobs/{id}/log?follow=1 and /jobs/{id}/events) come back as
 * a struct kiln_api_stream: kiln_api_stream_read() gives the bytes ready
 * now, 0 when the caller should wait (the job is still going; poll again
 * in a fraction of a second), or KILN_API_STREAM_END once the job is final
 * and everything is sent, or kiln_api_stop_streams() was called.
 *
 * Secrets: no response and no log message ever holds a secret's value or
 * the token.
 *
 * Threads: kiln_api_handle() may run in many threads at once; one stream is
 * read by one thread at a time.
 */
#ifndef KILN_SERVICE_API_H
#define KILN_SERVICE_API_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "kiln/error.h"
#include "service/jobs.h"
#include "service/store.h"
#include "util/buf.h"
#include "util/strv.h"

struct kiln_api_options {
    struct kiln_store *store;                    /* borrowed */
    struct kiln_jobs *jobs;                      /* borrowed; NULL: store-only cancels */
    const char *data_dir;                        /* job logs: kiln_jobs_log_path() */
    const char *token_sha256;                    /* hex sha256 of the admin token */
    const struct kiln_registry_config *registry; /* borrowed; NULL: not configured */
};

struct kiln_api;

/* -KILN_EINVAL when the store, data_dir or a 64-hex-digit token hash is missing. */
int kiln_api_new(const struct kiln_api_options *o, struct kiln_api **ret, struct kiln_error **err);
/* Free; no call may be running and every stream must be freed. NULL is fine. */
void kiln_api_free(struct kiln_api *a);

struct kiln_api_request {
    const char *method;        /* "GET", "POST", ... */
    const char *path;          /* decoded, without the query: "/api/v1/specs" */
    const char *const *query;  /* NULL, or key, value, key, value, ..., NULL (values may be "") */
    const char *authorization; /* the header, or NULL */
    const char *if_none_match; /* the header, or NULL */
    const char *last_event_id; /* the header, or NULL */
    const char *body;          /* may be NULL when body_len is 0 */
    size_t body_len;
    bool body_too_big; /* the body passed KILN_API_MAX_BODY and was dropped: 413 */
};

struct kiln_api_stream;

struct kiln_api_response {
    int status;
    struct kiln_strv headers; /* name, value, name, value... */
    struct kiln_buf body;
    /* When set, the body is this static data instead (lives for the program). */
    const unsigned char *static_body;
    size_t static_len;
    /* When >= 0, the body is body_fd_len bytes of this file from body_fd_offset (owned). */
    int body_fd;
    uint64_t body_fd_offset;
    uint64_t body_fd_len;
    /* When set, the body is streamed (owned: kiln_api_stream_free). */
    struct kiln_api_stream *stream;
};

void kiln_api_response_init(struct kiln_api_response *r);
/* Frees everything the response owns (body, fd, stream) and leaves it initialised. */
void kiln_api_response_release(struct kiln_api_response *r);
void kiln_api_response_add_header(struct kiln_api_response *r, const char *name, const char *value);
/* The value of a header of the response, or NULL (names ASCII case-insensitive). */
const char *kiln_api_response_header(const struct kiln_api_response *r, const char *name);

/* An error response in the JSON error shape (status, code as in docs/api.md). */
void kiln_api_error_response(struct kiln_api_response *r, int status, const char *code,
                             const char *message);

/* Route one request; *ret must be initialised (kiln_api_response_init) and is filled. */
void kiln_api_handle(struct kiln_api *a, const struct kiln_api_request *req,
                     struct kiln_api_response *ret);

/* True when `path` is under /api/ (needs the token). */
bool kiln_api_path_needs_auth(const char *path);
/* True when the Authorization header value carries the admin token. */
bool kiln_api_authorized(const struct kiln_api *a, const char *authorization);
/* The 401 response (with WWW-Authenticate) for a missing or wrong token. */
void kiln_api_unauthorized(struct kiln_api_response *r, const char *authorization);

/* Count a response sent with `status`, for /metrics' kiln_http_requests_total. */
void kiln_api_count(struct kiln_api *a, int status);

#define KILN_API_STREAM_END (-1)

/*
 * Up to `max` bytes of the stream into buf: returns their number (> 0), 0
 * when nothing is ready yet (call again later), or KILN_API_STREAM_END.
 */
ssize_t kiln_api_stream_read(struct kiln_api_stream *s, char *buf, size_t max);
void kiln_api_stream_free(struct kiln_api_stream *s);

/* Make every stream, now and later, end at its next read (server stop). */
void kiln_api_stop_streams(struct kiln_api *a);

#endif
