/*
 * The JSON side of the API (docs/api.md): request bodies in (the parser of
 * outside input; tests/fuzz/fuzz-apibody.c drives it), specs, jobs, lists
 * and errors out. No store, no HTTP: pure conversions.
 *
 * Bodies: at most KILN_API_MAX_BODY bytes, a JSON object (duplicate keys
 * and NUL bytes refused). Problems with single fields go to a struct
 * kiln_diags (field path, 1-based line for package texts, message) so the
 * API can answer 422 with every field error at once; messages never quote
 * a secret value.
 *
 * Ownership: every json_t returned is a new reference the caller decrefs;
 * strings returned through ret_ parameters are the caller's to free.
 */
#ifndef KILN_SERVICE_APIJSON_H
#define KILN_SERVICE_APIJSON_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "kiln/error.h"
#include "service/store.h"
#include "spec/imagespec.h"
#include "util/buf.h"
#include "util/diag.h"

/* The largest request body accepted (413 above). */
#define KILN_API_MAX_BODY ((size_t)1 << 20)

/*
 * Parse a request body. -KILN_ETOOBIG over KILN_API_MAX_BODY; -KILN_EINVAL
 * when it is not JSON ("malformed json: line 1 column 3: ...") or not an
 * object. *ret is written only on success.
 */
int kiln_apijson_parse_body(const char *data, size_t len, json_t **ret, struct kiln_error **err);

/*
 * The spec in a body: kiln's short form or a PrimeHub ImageSpec. Package
 * lists given as one text have their '#' comments dropped first (a '#' at
 * the start of a line or after a blank starts a comment; line numbers are
 * kept). When the body has no name, `path_name` (may be NULL) is used; a
 * different name is a problem of the name field. Then every value is
 * validated (kiln_spec_validate). Returns 0 and *ret (caller frees), or
 * -KILN_EINVAL with each problem added to `diags` (and joined in *err).
 */
int kiln_apijson_spec_from_body(const json_t *body, const char *path_name, struct kiln_spec **ret,
                                struct kiln_diags *diags, struct kiln_error **err);

/*
 * A pull secret body {"name": "...", "dockerconfigjson": "{...}"}; the
 * value may also be given as an object. The name must be a DNS subdomain;
 * the value a JSON object with an "auths" object, at most 1 MiB. Returns 0
 * with *ret_name and *ret_value (compact JSON text), or -KILN_EINVAL with
 * the problems in `diags`; nothing from the value is ever quoted.
 */
int kiln_apijson_secret_from_body(const json_t *body, char **ret_name, char **ret_value,
                                  struct kiln_diags *diags, struct kiln_error **err);

/* An image body {"url": "..."}: the URL must parse as an image reference. */
int kiln_apijson_image_from_body(const json_t *body, char **ret_url, struct kiln_diags *diags,
                                 struct kiln_error **err);

/* "2026-11-25T10:00:00.123Z" (milliseconds since the epoch, UTC) into out. */
void kiln_apijson_format_time(int64_t ms, char out[32]);
/* That string, or JSON null for 0. */
json_t *kiln_apijson_time(int64_t ms);

/*
 * A cache for kiln_apijson_spec_write(): the rendered text of a stored
 * spec's own fields, keyed by its spec_json, in `slots` entries (0: 4096;
 * a new entry replaces the one in its slot). Thread-safe.
 */
struct kiln_apijson_cache;
struct kiln_apijson_cache *kiln_apijson_cache_new(size_t slots);
void kiln_apijson_cache_free(struct kiln_apijson_cache *c);

/*
 * A stored spec as the API shows it: name, baseImage, pullSecret,
 * description, packages (lists), [updateTime,] revision, status (latest
 * job's phase or null), image (its URL once Succeeded, else null), jobId,
 * createdAt, updatedAt.
 */
json_t *kiln_apijson_spec(const struct kiln_store_spec *s);
/* The same as compact JSON text appended to b (fast: for lists); `cache` may be NULL. */
void kiln_apijson_spec_write(struct kiln_buf *b, const struct kiln_store_spec *s,
                             struct kiln_apijson_cache *cache);
/* s as a JSON string appended to b. */
void kiln_apijson_add_string(struct kiln_buf *b, const char *s);

/*
 * A job as the API shows it; `detail` adds "dockerfile" (rendered from the
 * frozen spec, base user unknown). now_ms gives the duration of a job
 * still running.
 */
json_t *kiln_apijson_job(const struct kiln_store_job *j, bool detail, int64_t now_ms);

/* {"items": items, "total", "limit", "offset"}; takes the reference to items. */
json_t *kiln_apijson_list(json_t *items, int64_t total, size_t limit, size_t offset);

/*
 * {"error": {"code", "message", "fields": [{"field", "line"?, "message"}]}};
 * fields only when `diags` holds any.
 */
json_t *kiln_apijson_error(const char *code, const char *message, const struct kiln_diags *diags);

/* Compact JSON text of v (object key order kept); the caller frees it. */
char *kiln_apijson_dump(const json_t *v, size_t *ret_len);

/*
 * A decimal number from a query parameter: digits only, at most `max`.
 * Returns 0 and *ret, or -KILN_EINVAL.
 */
int kiln_apijson_parse_uint(const char *s, uint64_t max, uint64_t *ret);

#endif
