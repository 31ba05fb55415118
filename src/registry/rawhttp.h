/*
 * Plain HTTP/1.1 on sockets of our own, for the one thing libcurl cannot
 * do: move a blob from one registry's response body into another
 * registry's request body inside the kernel (splice(2) through a pipe), so
 * that its bytes never enter this process. Copying them through curl costs
 * two copies into and out of the kernel and two in memory per byte; on a
 * registry-to-registry copy that was a sixth of all the CPU time spent by
 * kiln and both registries together (see docs/registry.md).
 *
 * Scope: http:// URLs only (no TLS, no proxy; registry/http.h's
 * kiln_http_raw_url() says when a URL qualifies), one request per
 * connection ("Connection: close"), no redirects, no retries, no auth flow:
 * the caller (the registry client) adds the Authorization line it already
 * holds, and falls back to its curl path when anything here does not fit.
 * Response heads are parsed by kiln_raw_parse_head() (fuzzed) into a
 * struct kiln_http_response, so that both transports fill the same fields.
 *
 * Timeouts: connecting is bounded by the connect timeout of the
 * struct kiln_http the connection is opened with; every later wait ends in
 * -KILN_ETIMEOUT when no byte moves for its stall time. Transport failures
 * are -KILN_ENET naming the method and the URL (without userinfo or query).
 * SIGPIPE is never raised by these calls. A connection belongs to one
 * thread at a time. Nothing here prints or reads the environment.
 */
#ifndef KILN_REGISTRY_RAWHTTP_H
#define KILN_REGISTRY_RAWHTTP_H

#include <stddef.h>
#include <stdint.h>

#include "kiln/error.h"
#include "registry/http.h"

#define KILN_RAW_HEAD_MAX  ((size_t)64 << 10)   /* longest response head read */
#define KILN_RAW_PIPE_SIZE ((size_t)1 << 20)    /* pipe between the two sockets */
#define KILN_RAW_BODY_MAX  ((uint64_t)16 << 20) /* longest response body read */

struct kiln_raw;

/*
 * Connect to the host of `url` (http://HOST[:PORT]/..., port 80 by
 * default; names are resolved, every address tried in turn) and send the
 * request head: "METHOD PATH?QUERY HTTP/1.1", Host, User-Agent, the caller's
 * `headers` (NULL-terminated "Name: value" lines, or NULL), Content-Length
 * when body_len >= 0, and Connection: close. The body, if any, is sent
 * with kiln_raw_splice(). Free the connection with kiln_raw_free().
 */
int kiln_raw_open(struct kiln_http *h, const char *method, const char *url,
                  const char *const *headers, int64_t body_len, struct kiln_raw **ret,
                  struct kiln_error **err);

/*
 * Read the response head into resp (released first; resp->url is set to
 * the request URL): 1xx responses are skipped; the body is left unread on
 * the socket. -KILN_ENET on a closed connection or a malformed head (also
 * one longer than KILN_RAW_HEAD_MAX).
 */
int kiln_raw_read_head(struct kiln_raw *c, struct kiln_http_response *resp,
                       struct kiln_error **err);

/*
 * Read the rest of the response body (Content-Length bytes, or to the end
 * of the connection when it has none) into resp->body, keeping at most
 * `max` bytes (the rest is read and dropped). A body that ends before its
 * Content-Length is -KILN_ENET; one longer than KILN_RAW_BODY_MAX (these
 * are answers to PATCH requests: a few hundred bytes) -KILN_ETOOBIG.
 */
int kiln_raw_read_body(struct kiln_raw *c, struct kiln_http_response *resp, size_t max,
                       struct kiln_error **err);

/*
 * Move exactly `len` bytes from the response body of `from` to the request
 * body of `to`, through a pipe (KILN_RAW_PIPE_SIZE when the kernel allows).
 * `progress`, when set, is called after each step with the bytes moved so
 * far; a nonzero return stops with -KILN_ECANCELLED (it is also asked at
 * least every 100 ms while waiting). A source that ends early or a
 * destination that closes is -KILN_ENET; *ret_moved (may be NULL) tells how
 * many bytes reached `to`'s socket.
 */
int kiln_raw_splice(struct kiln_raw *from, struct kiln_raw *to, uint64_t len,
                    int (*progress)(void *userdata, uint64_t moved), void *userdata,
                    uint64_t *ret_moved, struct kiln_error **err);

/* Close the connection and free it; NULL is fine. */
void kiln_raw_free(struct kiln_raw *c);

/*
 * Parse a complete response head (`len` bytes: a status line, header lines
 * and the blank line, CRLF or LF line ends) into resp, as
 * kiln_raw_read_head() does for each head it reads. Returns 0, or -1 when
 * the status line is not "HTTP/1.x NNN ..." with a status of 100-599, a
 * header line is not "Name: value" with a token name (so no line after
 * the first is taken for a status line), or a line holds a NUL or a bare
 * CR. resp is released first.
 */
int kiln_raw_parse_head(const char *head, size_t len, struct kiln_http_response *resp);

/*
 * The length of the head at the start of buf (through the blank line that
 * ends it), or 0 when buf holds no complete head yet.
 */
size_t kiln_raw_head_length(const char *buf, size_t len);

#endif
