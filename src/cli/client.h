/*
 * A small JSON client of the `kiln serve` API (docs/api.md), for the CLI's
 * apply/get/describe/logs/cancel/rebuild/delete commands.
 *
 * The base URL comes from the caller (--url), else KILN_URL, else
 * KILN_CLIENT_DEFAULT_URL; the admin token from --token, else KILN_TOKEN.
 * The token is sent as "Authorization: Bearer <token>" and never appears in
 * a message, an error or any output.
 *
 * Errors: a failed call returns -KILN_E<code> with *err holding the API's
 * error message ("spec 'x' not found"); the code follows the HTTP status
 * (400/422 invalid, 401/403 auth, 404 not found, 409 conflict, 413 too big,
 * 5xx internal or network), so kiln_error_exit_code() gives the exit code.
 * The API's field errors of the last failed call are kept in the client
 * (kiln_client_fields) for kiln_client_fail() to print. When the server
 * cannot be reached the code is KILN_ENET and the message names the URL.
 *
 * Ownership: the client is the caller's (kiln_client_free); JSON trees
 * returned are new references the caller json_decref()s.
 */
#ifndef KILN_CLI_CLIENT_H
#define KILN_CLI_CLIENT_H

#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>

#include "kiln/error.h"
#include "util/diag.h"

#define KILN_CLIENT_DEFAULT_URL "http://127.0.0.1:8080"

/* The largest response body kept in memory (a JSON answer). */
#define KILN_CLIENT_MAX_BODY ((size_t)64 << 20)

struct kiln_client;

/*
 * A client of the server at `url` (NULL: KILN_URL, else the default; an
 * http:// or https:// URL, a trailing '/' is ignored; it may have a path
 * prefix) with `token` (NULL: KILN_TOKEN; may end up NULL: the server then
 * answers 401). Fails with -KILN_EUSAGE on a URL or token that cannot be
 * used. *ret is the caller's.
 */
int kiln_client_new(const char *url, const char *token, struct kiln_client **ret,
                    struct kiln_error **err);
void kiln_client_free(struct kiln_client *c);
void kiln_client_freep(struct kiln_client **c);

/* The base URL in use (no trailing '/'). */
const char *kiln_client_url(const struct kiln_client *c);

/* `s` escaped for use as one path segment or a query value; the caller frees it. */
char *kiln_client_escape(const char *s);

/*
 * Send `method` to base URL + `path` ("/api/v1/specs?limit=10"), with
 * `body` as JSON when not NULL. On a 2xx answer returns 0, stores the status
 * in *ret_status (may be NULL) and the parsed JSON answer in *ret_json (may
 * be NULL; set to NULL for an empty body such as 204's).
 */
int kiln_client_call(struct kiln_client *c, const char *method, const char *path,
                     const json_t *body, long *ret_status, json_t **ret_json,
                     struct kiln_error **err);

/*
 * GET base URL + `path` and write the body to `out` as it arrives (flushed
 * after each piece: a followed log shows up live). No overall time limit.
 * An error answer is not written: it fails like kiln_client_call().
 */
int kiln_client_stream(struct kiln_client *c, const char *path, FILE *out, struct kiln_error **err);

/* The field errors of the last failed call (empty when none). */
const struct kiln_diags *kiln_client_fields(const struct kiln_client *c);

/*
 * Print "kiln: <message>" and then one line per field error of the last
 * failed call ("  packages.pip[2] (line 3): message") to stderr; return
 * the exit code of err's category. `c` may be NULL.
 */
int kiln_client_fail(const struct kiln_client *c, const struct kiln_error *err);

#endif
