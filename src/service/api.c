#include "util/common.h"
#include "service/api.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "service/apijson.h"
#include "service/webassets.h"
#include "spec/revision.h"
#include "util/log.h"
#include "util/sha256.h"

#define API_PREFIX "/api/v1/"
/* Longest token accepted in a header (longer ones are simply wrong). */
#define TOKEN_MAX 4096
/* How often a stream looks at its job in the store. */
#define STREAM_CHECK_MS 200
/* An SSE comment this often keeps proxies from closing a quiet stream. */
#define SSE_KEEPALIVE_MS 15000
/* The largest log tail asked for in lines. */
#define TAIL_MAX 1000000
/*
 * How long after a job (that ran) finished a stream waits for its stored log
 * when there is no log file here: the worker stores it just after it
 * records the end.
 */
#define STORED_LOG_WAIT_MS 10000
/* How often a stream looks at a job's stored log while it has none or a live copy. */
#define STORE_POLL_MS 1000
/* A log line longer than this is sent in pieces over SSE. */
#define SSE_LINE_MAX (64 * 1024)
#define HTTP_CODES   600

struct kiln_api {
    struct kiln_store *store;
    struct kiln_jobs *jobs;
    char *data_dir;
    uint8_t token_hash[32];
    const struct kiln_registry_config *registry;
    struct kiln_apijson_cache *cache;
    char host[256];                   /* this host's name, as in worker names (HOST-PID, jobs.h) */
    bool stopping;                    /* atomic */
    uint64_t http_counts[HTTP_CODES]; /* atomic */
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int kiln_api_new(const struct kiln_api_options *o, struct kiln_api **ret, struct kiln_error **err)
{
    if (!o || !o->store || !o->data_dir || !*o->data_dir)
        return kiln_error_set(err, KILN_EINVAL, 0, "api: a store and a data directory are needed");
    if (!o->token_sha256 || strlen(o->token_sha256) != 64)
        return kiln_error_set(err, KILN_EINVAL, 0,
                              "api: the admin token hash must be 64 hex digits");
    struct kiln_api *a = kiln_xcalloc(1, sizeof(*a));
    for (int i = 0; i < 32; i++) {
        int hi = hexval(o->token_sha256[2 * i]), lo = hexval(o->token_sha256[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            free(a);
            return kiln_error_set(err, KILN_EINVAL, 0,
                                  "api: the admin token hash must be 64 hex digits");
        }
        a->token_hash[i] = (uint8_t)(hi << 4 | lo);
    }
    a->store = o->store;
    a->jobs = o->jobs;
    a->data_dir = kiln_xstrdup(o->data_dir);
    a->registry = o->registry;
    a->cache = kiln_apijson_cache_new(0);
    /* as cmd-serve names the workers */
    if (gethostname(a->host, sizeof(a->host) - 1) < 0)
        snprintf(a->host, sizeof(a->host), "kiln");
    a->host[sizeof(a->host) - 1] = '\0';
    *ret = a;
    return 0;
}

void kiln_api_free(struct kiln_api *a)
{
    if (!a)
        return;
    free(a->data_dir);
    kiln_apijson_cache_free(a->cache);
    free(a);
}

void kiln_api_stop_streams(struct kiln_api *a)
{
    __atomic_store_n(&a->stopping, true, __ATOMIC_SEQ_CST);
}

void kiln_api_count(struct kiln_api *a, int status)
{
    if (status >= 100 && status < HTTP_CODES)
        __atomic_add_fetch(&a->http_counts[status], 1, __ATOMIC_RELAXED);
}

static bool registry_configured(const struct kiln_api *a)
{
    return a->registry && a->registry->configured;
}

/* ---- responses ---- */

void kiln_api_response_init(struct kiln_api_response *r)
{
    memset(r, 0, sizeof(*r));
    kiln_buf_init(&r->body, 0);
    r->body_fd = -1;
}

void kiln_api_response_release(struct kiln_api_response *r)
{
    kiln_strv_release(&r->headers);
    kiln_buf_release(&r->body);
    if (r->body_fd >= 0)
        close(r->body_fd);
    kiln_api_stream_free(r->stream);
    kiln_api_response_init(r);
}

void kiln_api_response_add_header(struct kiln_api_response *r, const char *name, const char *value)
{
    kiln_strv_push(&r->headers, name);
    kiln_strv_push(&r->headers, value);
}

const char *kiln_api_response_header(const struct kiln_api_response *r, const char *name)
{
    for (size_t i = 0; i + 1 < r->headers.n; i += 2)
        if (!strcasecmp(r->headers.v[i], name))
            return r->headers.v[i + 1];
    return NULL;
}

/* Start a fresh response (drops anything set before). */
static void reset(struct kiln_api_response *r)
{
    kiln_api_response_release(r);
}

static void json_reply(struct kiln_api_response *r, int status, json_t *v)
{
    reset(r);
    r->status = status;
    size_t len = 0;
    char *text = kiln_apijson_dump(v, &len);
    json_decref(v);
    kiln_buf_add(&r->body, text, len);
    kiln_buf_addch(&r->body, '\n');
    free(text);
    kiln_api_response_add_header(r, "Content-Type", "application/json");
    kiln_api_response_add_header(r, "Cache-Control", "no-store");
}

static void error_diags(struct kiln_api_response *r, int status, const char *code,
                        const char *message, const struct kiln_diags *d)
{
    json_reply(r, status, kiln_apijson_error(code, message, d));
}

void kiln_api_error_response(struct kiln_api_response *r, int status, const char *code,
                             const char *message)
{
    error_diags(r, status, code, message, NULL);
}

__attribute__((format(printf, 4, 5))) static void errorf(struct kiln_api_response *r, int status,
                                                         const char *code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    _cleanup_free_ char *msg = kiln_xvasprintf(fmt, ap);
    va_end(ap);
    kiln_api_error_response(r, status, code, msg);
}

/* The answer to a failed store or library call. */
static void fail(struct kiln_api_response *r, int code, const struct kiln_error *e)
{
    const char *msg = e && e->msg ? e->msg : "internal error";
    switch (-code) {
    case KILN_ENOTFOUND:
        kiln_api_error_response(r, 404, "not_found", msg);
        break;
    case KILN_EEXIST:
    case KILN_ECONFLICT:
        kiln_api_error_response(r, 409, "conflict", msg);
        break;
    case KILN_EINVAL:
        kiln_api_error_response(r, 400, "bad_request", msg);
        break;
    case KILN_ETOOBIG:
        kiln_api_error_response(r, 413, "too_big", msg);
        break;
    default:
        kiln_log(KILN_LOG_ERROR, "api: %s", msg);
        kiln_api_error_response(r, 500, "internal", msg);
        break;
    }
}

static void text_reply(struct kiln_api_response *r, int status, const char *content_type,
                       const char *text)
{
    reset(r);
    r->status = status;
    kiln_buf_adds(&r->body, text);
    kiln_api_response_add_header(r, "Content-Type", content_type);
    kiln_api_response_add_header(r, "Cache-Control", "no-store");
}

static void method_not_allowed(struct kiln_api_response *r, const char *allow)
{
    kiln_api_error_response(r, 405, "method_not_allowed", "method not allowed");
    kiln_api_response_add_header(r, "Allow", allow);
}

/* ---- auth ---- */

bool kiln_api_path_needs_auth(const char *path)
{
    return path && (!strcmp(path, "/api") || !strncmp(path, "/api/", 5));
}

bool kiln_api_authorized(const struct kiln_api *a, const char *authorization)
{
    if (!authorization)
        return false;
    const char *p = authorization;
    while (*p == ' ' || *p == '\t')
        p++;
    if (strncasecmp(p, "Bearer", 6) != 0 || (p[6] != ' ' && p[6] != '\t'))
        return false;
    p += 6;
    while (*p == ' ' || *p == '\t')
        p++;
    size_t len = 0;
    while (p[len] && p[len] != ' ' && p[len] != '\t')
        len++;
    const char *rest = p + len;
    while (*rest == ' ' || *rest == '\t')
        rest++;
    if (len == 0 || len > TOKEN_MAX || *rest)
        return false;
    struct kiln_sha256 h;
    uint8_t got[32];
    kiln_sha256_init(&h);
    kiln_sha256_update(&h, p, len);
    kiln_sha256_final(&h, got);
    kiln_sha256_release(&h);
    return CRYPTO_memcmp(got, a->token_hash, sizeof(got)) == 0;
}

void kiln_api_unauthorized(struct kiln_api_response *r, const char *authorization)
{
    kiln_api_error_response(r, 401, "unauthorized",
                            authorization ? "invalid admin token"
                                          : "missing admin token (Authorization: Bearer TOKEN)");
    kiln_api_response_add_header(r, "WWW-Authenticate", "Bearer realm=\"kiln\"");
}

/* ---- request helpers ---- */

static const char *query(const struct kiln_api_request *req, const char *key)
{
    if (!req->query)
        return NULL;
    for (const char *const *q = req->query; q[0]; q += 2)
        if (!strcmp(q[0], key))
            return q[1] ? q[1] : "";
    return NULL;
}

/* A boolean query parameter: absent false, present without a value true. -1 when malformed. */
static int query_bool(const struct kiln_api_request *req, const char *key)
{
    const char *v = query(req, key);
    if (!v)
        return 0;
    if (!*v || !strcmp(v, "1") || !strcasecmp(v, "true") || !strcasecmp(v, "yes"))
        return 1;
    if (!strcmp(v, "0") || !strcasecmp(v, "false") || !strcasecmp(v, "no"))
        return 0;
    return -1;
}

/* A number parameter; false (and a 400 in r) when malformed. */
static bool query_uint(const struct kiln_api_request *req, struct kiln_api_response *r,
                       const char *key, uint64_t max, uint64_t *v)
{
    const char *s = query(req, key);
    if (!s)
        return true;
    if (kiln_apijson_parse_uint(s, max, v) < 0) {
        errorf(r, 400, "bad_request", "query parameter '%s' must be a number from 0 to %llu", key,
               (unsigned long long)max);
        return false;
    }
    return true;
}

static bool paging(const struct kiln_api_request *req, struct kiln_api_response *r, size_t *limit,
                   size_t *offset)
{
    uint64_t l = 0, o = 0;
    if (!query_uint(req, r, "limit", KILN_STORE_LIST_MAX, &l) ||
        !query_uint(req, r, "offset", (uint64_t)INT64_MAX, &o))
        return false;
    *limit = l ? (size_t)l : KILN_STORE_LIST_DEFAULT;
    *offset = (size_t)o;
    return true;
}

/* Parse the body into a JSON object, answering 413/400 when it cannot be. */
static json_t *body_json(const struct kiln_api_request *req, struct kiln_api_response *r)
{
    if (req->body_too_big || req->body_len > KILN_API_MAX_BODY) {
        errorf(r, 413, "too_big", "request body is larger than %zu bytes", KILN_API_MAX_BODY);
        return NULL;
    }
    json_t *root = NULL;
    struct kiln_error *e = NULL;
    int rc = kiln_apijson_parse_body(req->body, req->body_len, &root, &e);
    if (rc < 0) {
        kiln_api_error_response(r, rc == -KILN_ETOOBIG ? 413 : 400,
                                rc == -KILN_ETOOBIG ? "too_big" : "bad_request",
                                e ? e->msg : "bad request body");
        kiln_error_free(e);
        return NULL;
    }
    return root;
}

/* ---- specs ---- */

static json_t *spec_json_of(struct kiln_api *a, const char *name, struct kiln_api_response *r)
{
    struct kiln_store_spec s = {0};
    struct kiln_error *e = NULL;
    int rc = kiln_store_spec_get(a->store, name, &s, &e);
    if (rc < 0) {
        fail(r, rc, e);
        kiln_error_free(e);
        return NULL;
    }
    json_t *v = kiln_apijson_spec(&s);
    kiln_store_spec_release(&s);
    return v;
}

static json_t *job_json_of(struct kiln_api *a, int64_t id, bool detail, struct kiln_api_response *r)
{
    struct kiln_store_job j = {0};
    struct kiln_error *e = NULL;
    int rc = kiln_store_job_get(a->store, id, &j, &e);
    if (rc < 0) {
        fail(r, rc, e);
        kiln_error_free(e);
        return NULL;
    }
    json_t *v = kiln_apijson_job(&j, detail, now_ms());
    kiln_store_job_release(&j);
    return v;
}

static void list_specs(struct kiln_api *a, const struct kiln_api_request *req,
                       struct kiln_api_response *r)
{
    struct kiln_store_spec_query q = {0};
    if (!paging(req, r, &q.limit, &q.offset))
        return;
    q.name_contains = query(req, "name_contains");
    if (q.name_contains && strlen(q.name_contains) > 253) {
        kiln_api_error_response(r, 400, "bad_request",
                                "query parameter 'name_contains' is longer than 253 characters");
        return;
    }
    const char *order = query(req, "order");
    if (!order || !strcmp(order, "name")) {
        q.order = KILN_STORE_ORDER_NAME;
    } else if (!strcmp(order, "status")) {
        q.order = KILN_STORE_ORDER_STATUS;
    } else if (!strcmp(order, "updated")) {
        q.order = KILN_STORE_ORDER_UPDATED;
    } else {
        kiln_api_error_response(r, 400, "bad_request",
                                "query parameter 'order' must be name, status or updated");
        return;
    }
    int desc = query_bool(req, "desc");
    if (desc < 0) {
        kiln_api_error_response(r, 400, "bad_request", "query parameter 'desc' must be 0 or 1");
        return;
    }
    q.descending = desc;
    struct kiln_store_spec_list l = {0};
    struct kiln_error *e = NULL;
    int rc = kiln_store_spec_list(a->store, &q, &l, &e);
    if (rc < 0) {
        fail(r, rc, e);
        kiln_error_free(e);
        return;
    }
    /* written directly: the list is the busiest route */
    reset(r);
    r->status = 200;
    kiln_buf_adds(&r->body, "{\"items\":[");
    for (size_t i = 0; i < l.n; i++) {
        if (i)
            kiln_buf_addch(&r->body, ',');
        kiln_apijson_spec_write(&r->body, &l.v[i], a->cache);
    }
    kiln_buf_addf(&r->body, "],\"total\":%lld,\"limit\":%zu,\"offset\":%zu}\n", (long long)l.total,
                  q.limit, q.offset);
    kiln_api_response_add_header(r, "Content-Type", "application/json");
    kiln_api_response_add_header(r, "Cache-Control", "no-store");
    kiln_store_spec_list_release(&l);
}

/* Check that a spec's pull secret exists; adds a problem when it does not. */
static int check_pull_secret(struct kiln_api *a, const struct kiln_spec *s, struct kiln_diags *d,
                             struct kiln_error **err)
{
    if (!s->pull_secret || !*s->pull_secret)
        return 0;
    struct kiln_store_secret_list l = {0};
    int rc = kiln_store_secret_list(a->store, &l, err);
    if (rc < 0)
        return rc;
    bool found = false;
    for (size_t i = 0; i < l.n && !found; i++)
        found = !strcmp(l.v[i].name, s->pull_secret);
    kiln_store_secret_list_release(&l);
    if (!found) {
        _cleanup_free_ char *q = kiln_diag_quote(s->pull_secret, 80);
        kiln_diags_add(d, 0, s->shape == KILN_SPEC_SHAPE_CRD ? "spec.pullSecret" : "pullSecret",
                       "secret '%s' not found", q);
    }
    return 0;
}

/*
 * Queue a build of spec `name` at `revision`. Returns 1 with *ret_id, 0
 * with *ret_message when nothing was queued, or a negative error.
 */
static int queue_build(struct kiln_api *a, const char *name, const char *revision, int64_t *ret_id,
                       const char **ret_message, struct kiln_error **err)
{
    if (!registry_configured(a)) {
        *ret_message = "image registry not found";
        return 0;
    }
    _cleanup_free_ char *target = kiln_jobs_target(a->registry, name, revision);
    if (!target)
        return kiln_error_set(err, KILN_EINTERNAL, 0,
                              "no target image for spec '%s' (check the registry settings)", name);
    int rc = kiln_store_job_create(a->store, name, revision, target, ret_id, err);
    if (rc < 0)
        return rc;
    kiln_jobs_wake(a->jobs);
    return 1;
}

/* POST /specs (path_name NULL: create only) and PUT /specs/{name}. */
static void save_spec(struct kiln_api *a, const struct kiln_api_request *req,
                      struct kiln_api_response *r, const char *path_name)
{
    json_t *body = body_json(req, r);
    if (!body)
        return;
    struct kiln_diags d = KILN_DIAGS_INIT;
    struct kiln_error *e = NULL;
    _cleanup_(kiln_spec_freep) struct kiln_spec *s = NULL;
    _cleanup_free_ char *queued_msg = NULL, *location = NULL;
    int rc = kiln_apijson_spec_from_body(body, path_name, &s, &d, &e);
    json_decref(body);
    if (rc >= 0)
        rc = check_pull_secret(a, s, &d, &e);
    if (rc >= 0 && d.n > 0)
        rc = -KILN_EINVAL;
    if (rc < 0) {
        if (d.n)
            error_diags(r, 422, "invalid", "invalid spec", &d);
        else
            fail(r, rc, e);
        goto out;
    }
    rc = kiln_store_spec_put(a->store, s, path_name ? KILN_STORE_PUT_UPSERT : KILN_STORE_PUT_CREATE,
                             &e);
    if (rc < 0) {
        if (rc == -KILN_ECONFLICT && !path_name)
            errorf(r, 409, "conflict", "spec '%s' already exists", s->name);
        else
            fail(r, rc, e);
        goto out;
    }
    bool created = rc & KILN_STORE_PUT_NEW;
    char rev[KILN_REVISION_LEN + 1];
    kiln_spec_revision(s, rev);

    int64_t job_id = 0;
    const char *message = "no change, nothing to build";
    bool queued = false;
    if (rc & KILN_STORE_PUT_REVISION_CHANGED) {
        int q = queue_build(a, s->name, rev, &job_id, &message, &e);
        if (q == -KILN_ECONFLICT) {
            /* saved again meanwhile with another revision: that save queues its own build */
            message = "the spec changed meanwhile: its latest save queues the build";
            kiln_error_freep(&e);
        } else if (q < 0) {
            fail(r, q, e);
            goto out;
        } else if (q > 0) {
            queued = true;
        }
    }
    if (queued) {
        queued_msg = kiln_xasprintf("build queued: job %lld", (long long)job_id);
        message = queued_msg;
    }

    json_t *spec = spec_json_of(a, s->name, r);
    if (!spec)
        goto out;
    location = kiln_xasprintf(API_PREFIX "specs/%s", s->name);
    if (!path_name) {
        json_object_set_new(spec, "queued", json_boolean(queued));
        json_object_set_new(spec, "message", json_string(message));
        json_reply(r, 201, spec);
    } else {
        json_t *out = json_object();
        json_object_set_new(out, "spec", spec);
        json_object_set_new(out, "queued", json_boolean(queued));
        json_t *job = queued ? job_json_of(a, job_id, false, r) : json_null();
        if (!job) {
            json_decref(out);
            goto out;
        }
        json_object_set_new(out, "job", job);
        json_object_set_new(out, "message", json_string(message));
        json_reply(r, created ? 201 : 200, out);
    }
    if (created)
        kiln_api_response_add_header(r, "Location", location);
out:
    kiln_diags_release(&d);
    kiln_error_free(e);
}

static void remove_log(struct kiln_api *a, int64_t id)
{
    _cleanup_free_ char *path = kiln_jobs_log_path(a->data_dir, id);
    if (path && unlink(path) < 0 && errno != ENOENT)
        kiln_log(KILN_LOG_WARN, "api: remove log '%s': %s", path, strerror(errno));
}

static void delete_spec(struct kiln_api *a, const char *name, struct kiln_api_response *r)
{
    struct kiln_store_spec s = {0};
    struct kiln_error *e = NULL;
    int rc = kiln_store_spec_get(a->store, name, &s, &e);
    if (rc < 0)
        goto fail;
    kiln_store_spec_release(&s);

    /* Every job id first (the rows go with the spec), cancelling those still going. */
    int64_t *ids = NULL;
    size_t n = 0;
    for (size_t off = 0;; off += KILN_STORE_LIST_MAX) {
        struct kiln_store_job_list l = {0};
        rc = kiln_store_job_list(a->store, name, KILN_STORE_LIST_MAX, off, &l, &e);
        if (rc < 0) {
            free(ids);
            goto fail;
        }
        ids = kiln_xreallocarray(ids, n + l.n + 1, sizeof(*ids));
        for (size_t i = 0; i < l.n; i++) {
            ids[n++] = l.v[i].id;
            if (kiln_job_phase_is_final(l.v[i].phase))
                continue;
            int c = kiln_jobs_cancel(a->jobs, a->store, l.v[i].id, &e);
            if (c < 0 && c != -KILN_ECONFLICT && c != -KILN_ENOTFOUND)
                kiln_log(KILN_LOG_WARN, "api: cancel job %lld: %s", (long long)l.v[i].id,
                         e ? e->msg : "?");
            kiln_error_freep(&e);
        }
        bool last = l.n < KILN_STORE_LIST_MAX;
        kiln_store_job_list_release(&l);
        if (last)
            break;
    }
    rc = kiln_store_spec_delete(a->store, name, &e);
    if (rc < 0) {
        free(ids);
        goto fail;
    }
    for (size_t i = 0; i < n; i++)
        remove_log(a, ids[i]);
    free(ids);
    reset(r);
    r->status = 204;
    return;
fail:
    fail(r, rc, e);
    kiln_error_free(e);
}

static void list_spec_jobs(struct kiln_api *a, const char *name, const struct kiln_api_request *req,
                           struct kiln_api_response *r)
{
    size_t limit, offset;
    if (!paging(req, r, &limit, &offset))
        return;
    json_t *spec = spec_json_of(a, name, r); /* 404 for an unknown spec */
    if (!spec)
        return;
    json_decref(spec);
    struct kiln_store_job_list l = {0};
    struct kiln_error *e = NULL;
    int rc = kiln_store_job_list(a->store, name, limit, offset, &l, &e);
    if (rc < 0) {
        fail(r, rc, e);
        kiln_error_free(e);
        return;
    }
    int64_t now = now_ms();
    json_t *items = json_array();
    for (size_t i = 0; i < l.n; i++)
        json_array_append_new(items, kiln_apijson_job(&l.v[i], false, now));
    json_reply(r, 200, kiln_apijson_list(items, l.total, limit, offset));
    kiln_store_job_list_release(&l);
}

static void rebuild(struct kiln_api *a, const char *name, struct kiln_api_response *r)
{
    struct kiln_error *e = NULL;
    int rc = 0;
    int64_t id = 0;
    const char *message = NULL;
    for (int attempt = 0; attempt < 3; attempt++) {
        struct kiln_store_spec s = {0};
        rc = kiln_store_spec_get(a->store, name, &s, &e);
        if (rc < 0)
            break;
        rc = queue_build(a, name, s.revision, &id, &message, &e);
        kiln_store_spec_release(&s);
        if (rc != -KILN_ECONFLICT) /* a conflict: saved meanwhile, take the new revision */
            break;
        kiln_error_freep(&e);
    }
    if (rc < 0) {
        fail(r, rc, e);
        kiln_error_free(e);
        return;
    }
    if (rc == 0) {
        kiln_api_error_response(r, 409, "registry_not_found", message);
        return;
    }
    json_t *job = job_json_of(a, id, false, r);
    if (!job)
        return;
    json_reply(r, 202, job);
    _cleanup_free_ char *location = kiln_xasprintf(API_PREFIX "jobs/%lld", (long long)id);
    kiln_api_response_add_header(r, "Location", location);
}

/* ---- jobs ---- */

static bool parse_id(const char *s, int64_t *ret)
{
    uint64_t v;
    if (kiln_apijson_parse_uint(s, (uint64_t)INT64_MAX, &v) < 0 || v == 0)
        return false;
    *ret = (int64_t)v;
    return true;
}

static void cancel_job(struct kiln_api *a, int64_t id, struct kiln_api_response *r)
{
    struct kiln_error *e = NULL;
    int rc = kiln_jobs_cancel(a->jobs, a->store, id, &e);
    if (rc == -KILN_ECONFLICT) {
        struct kiln_store_job j = {0};
        if (kiln_store_job_get(a->store, id, &j, NULL) >= 0) {
            errorf(r, 409, "conflict", "job %lld is already %s", (long long)id,
                   kiln_job_phase_name(j.phase));
            kiln_store_job_release(&j);
        } else {
            fail(r, rc, e);
        }
        kiln_error_free(e);
        return;
    }
    if (rc < 0) {
        fail(r, rc, e);
        kiln_error_free(e);
        return;
    }
    json_t *job = job_json_of(a, id, false, r);
    if (job)
        json_reply(r, 202, job);
}

/* The offset where the last n lines of a file of `size` bytes start. */
static uint64_t tail_offset(int fd, uint64_t size, uint64_t n)
{
    if (n == 0)
        return size;
    char buf[64 * 1024];
    uint64_t pos = size, lines = 0;
    while (pos > 0) {
        size_t chunk = pos < sizeof(buf) ? (size_t)pos : sizeof(buf);
        pos -= chunk;
        ssize_t got = pread(fd, buf, chunk, (off_t)pos);
        if (got != (ssize_t)chunk)
            return 0;
        for (size_t i = chunk; i-- > 0;) {
            if (buf[i] != '\n' || pos + i == size - 1) /* a final newline ends the last line */
                continue;
            if (++lines == n)
                return pos + i + 1;
        }
    }
    return 0;
}

/* The offset where the last n lines of `size` bytes in memory start (as tail_offset). */
static uint64_t mem_tail_offset(const char *p, uint64_t size, uint64_t n)
{
    if (n == 0)
        return size;
    uint64_t lines = 0;
    for (uint64_t i = size; i-- > 0;) {
        if (p[i] != '\n' || i == size - 1)
            continue;
        if (++lines == n)
            return i + 1;
    }
    return 0;
}

static int open_log(struct kiln_api *a, int64_t id)
{
    _cleanup_free_ char *path = kiln_jobs_log_path(a->data_dir, id);
    if (!path)
        return -1;
    return open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
}

/*
 * The host part of a worker name "HOST-PID" or "HOST-PID/N" (what kiln
 * serve and kiln worker use, jobs.h): true and its length, else false.
 */
static bool worker_host(const char *worker, size_t *ret_len)
{
    size_t n = strlen(worker);
    const char *slash = strrchr(worker, '/');
    if (slash) {
        size_t k = (size_t)(slash - worker) + 1;
        if (k == n || strspn(worker + k, "0123456789") != n - k)
            return false;
        n = (size_t)(slash - worker);
    }
    size_t d = n;
    while (d > 0 && worker[d - 1] >= '0' && worker[d - 1] <= '9')
        d--;
    if (d == n || d < 2 || worker[d - 1] != '-')
        return false;
    *ret_len = d - 1;
    return true;
}

/*
 * Whether this host ran the latest attempt of job `j` (so its log file here
 * is that attempt's): the job's worker is named after this host, and the
 * job's recorded log path, when there is one, is this data directory's.
 */
static bool ran_here(const struct kiln_api *a, const struct kiln_store_job *j)
{
    size_t n = 0;
    if (!j->worker || !worker_host(j->worker, &n) || n != strlen(a->host) ||
        strncasecmp(j->worker, a->host, n) != 0)
        return false;
    if (j->log_path) {
        _cleanup_free_ char *path = kiln_jobs_log_path(a->data_dir, j->id);
        if (strcmp(j->log_path, path) != 0)
            return false;
    }
    return true;
}

/* Job `j` is Running on another host (or in another data directory of this one). */
static bool runs_elsewhere(const struct kiln_api *a, const struct kiln_store_job *j)
{
    size_t n = 0;
    return j->phase == KILN_JOB_RUNNING && j->worker && worker_host(j->worker, &n) &&
           !ran_here(a, j);
}

/*
 * The copy of job `id`'s log kept in the store: 1 and *ret (caller
 * releases); 0 when there is none; < 0 on a store error (in *err).
 */
static int stored_log(struct kiln_api *a, int64_t id, struct kiln_store_job_log *ret,
                      struct kiln_error **err)
{
    int rc = kiln_store_job_log_read(a->store, id, ret, err);
    if (rc == -KILN_ENOTFOUND) {
        if (err)
            kiln_error_freep(err);
        return 0;
    }
    return rc < 0 ? rc : 1;
}

/* The length of the line of kiln's own at the start of a truncated copy (0: none). */
static size_t stored_head(const struct kiln_store_job_log *l)
{
    /* a truncated copy of schema v4 (start 0) is served as it is */
    if (!l->truncated || l->start_offset == 0)
        return 0;
    const char *nl = memchr(l->data, '\n', l->len);
    return nl ? (size_t)(nl - l->data) + 1 : 0;
}

/* The end of the log (an offset in the whole log) that a stored copy reaches. */
static uint64_t stored_end(const struct kiln_store_job_log *l)
{
    return l->start_offset + (l->len - stored_head(l));
}

/* The line sent in place of `n` log bytes that a reader missed. */
static char *skipped_line(uint64_t n)
{
    return kiln_xasprintf("[... %llu bytes not shown ...]\n", (unsigned long long)n);
}

enum log_source { SOURCE_NONE, SOURCE_FILE, SOURCE_STORE };

/*
 * Where the log of job `j` comes from (docs/api.md, Job logs): the log file
 * here when this host ran the job's latest attempt (else the store's copy);
 * otherwise the store's copy when there is one, else the log file here
 * (not for a job running on another host: its live copy is to come).
 * SOURCE_FILE with *ret_fd, SOURCE_STORE with *ret_log (caller releases),
 * SOURCE_NONE, or < 0 on a store error (in *err).
 */
static int log_source(struct kiln_api *a, const struct kiln_store_job *j, int *ret_fd,
                      struct kiln_store_job_log *ret_log, struct kiln_error **err)
{
    bool here = ran_here(a, j);
    if (here) {
        int fd = open_log(a, j->id);
        if (fd >= 0) {
            *ret_fd = fd;
            return SOURCE_FILE;
        }
    }
    int rc = stored_log(a, j->id, ret_log, err);
    if (rc != 0)
        return rc < 0 ? rc : SOURCE_STORE;
    if (here || runs_elsewhere(a, j))
        return SOURCE_NONE;
    int fd = open_log(a, j->id);
    if (fd < 0)
        return SOURCE_NONE;
    *ret_fd = fd;
    return SOURCE_FILE;
}

/*
 * A stored copy as text to show: its data, and when it starts past the
 * log's beginning without a line of kiln's own, a line saying so in front.
 * *ret_prefix: the bytes in front of the log's (the line of kiln's own).
 */
static void stored_view(const struct kiln_store_job_log *l, struct kiln_buf *ret,
                        size_t *ret_prefix)
{
    size_t head = stored_head(l);
    if (head == 0 && l->start_offset > 0) {
        _cleanup_free_ char *line = skipped_line(l->start_offset);
        kiln_buf_adds(ret, line);
        head = strlen(line);
    }
    kiln_buf_add(ret, l->data, l->len);
    *ret_prefix = head;
}

struct kiln_api_stream {
    struct kiln_api *api;
    int64_t job_id;
    bool sse;
    enum log_source source; /* SOURCE_NONE until the log is found */
    int fd;                 /* SOURCE_FILE */
    /* SOURCE_STORE: the stored copy (live ones are read again as they grow) */
    struct kiln_store_job_log log;
    size_t log_head;     /* bytes of kiln's own line at the start of log.data */
    uint64_t off;        /* log bytes consumed (an offset in the whole log) */
    struct kiln_buf out; /* bytes ready to send */
    size_t out_pos;
    struct kiln_buf line;   /* SSE: a log line not yet ended */
    char *last_job;         /* SSE: the job JSON last sent */
    bool final_seen;        /* a look at the store found the job final (or gone) */
    bool gone;              /* deleted */
    bool ran;               /* the job was started (so it may have a stored log) */
    bool here;              /* this host ran its latest attempt */
    bool elsewhere;         /* it runs on another host */
    int64_t finished_ms;    /* the job's end (real ms), once final */
    int64_t last_store_try; /* mono ms of the last look at the stored log; 0: none */
    bool done;
    int64_t last_check; /* mono ms */
    int64_t last_sent;  /* mono ms */
};

static struct kiln_api_stream *stream_new(struct kiln_api *a, int64_t id, bool sse, uint64_t from)
{
    struct kiln_api_stream *s = kiln_xcalloc(1, sizeof(*s));
    s->api = a;
    s->job_id = id;
    s->sse = sse;
    s->fd = -1;
    s->off = from;
    kiln_buf_init(&s->out, 0);
    kiln_buf_init(&s->line, 0);
    s->last_check = -1;
    s->last_sent = mono_ms();
    if (sse)
        kiln_buf_adds(&s->out, "retry: 3000\n\n");
    return s;
}

/* Read from the stored copy `l` (taken). */
static void stream_use_stored(struct kiln_api_stream *s, struct kiln_store_job_log *l)
{
    kiln_store_job_log_release(&s->log);
    s->log = *l;
    memset(l, 0, sizeof(*l));
    s->log_head = stored_head(&s->log);
    s->source = SOURCE_STORE;
}

void kiln_api_stream_free(struct kiln_api_stream *s)
{
    if (!s)
        return;
    if (s->fd >= 0)
        close(s->fd);
    kiln_store_job_log_release(&s->log);
    kiln_buf_release(&s->out);
    kiln_buf_release(&s->line);
    free(s->last_job);
    free(s);
}

static void sse_log_line(struct kiln_api_stream *s, const char *p, size_t len)
{
    if (len && p[len - 1] == '\r')
        len--;
    kiln_buf_addf(&s->out, "id: %llu\nevent: log\ndata: ", (unsigned long long)s->off);
    size_t start = s->out.len;
    kiln_buf_add(&s->out, p, len);
    /* a CR would end the data line early in an EventSource */
    for (size_t i = start; i < s->out.len; i++)
        if (s->out.buf[i] == '\r')
            s->out.buf[i] = ' ';
    kiln_buf_adds(&s->out, "\n\n");
}

static void sse_phase(struct kiln_api_stream *s, const char *job)
{
    kiln_buf_adds(&s->out, "event: phase\ndata: ");
    kiln_buf_adds(&s->out, job);
    kiln_buf_adds(&s->out, "\n\n");
}

/* Look at the job: SSE phase events for changes, final_seen, where it runs. */
static void stream_check(struct kiln_api_stream *s)
{
    s->last_check = mono_ms();
    struct kiln_store_job j = {0};
    int rc = kiln_store_job_get(s->api->store, s->job_id, &j, NULL);
    if (rc == -KILN_ENOTFOUND) {
        s->final_seen = true; /* deleted: nothing more will come */
        s->gone = true;
        return;
    }
    if (rc < 0)
        return; /* try again next time */
    s->ran = j.started_ms > 0;
    s->here = ran_here(s->api, &j);
    s->elsewhere = runs_elsewhere(s->api, &j);
    if (kiln_job_phase_is_final(j.phase)) {
        s->final_seen = true;
        s->finished_ms = j.finished_ms;
    }
    if (s->sse) {
        json_t *v = kiln_apijson_job(&j, false, now_ms());
        /* the duration ticks while running: changes are in everything else */
        json_object_del(v, "durationSeconds");
        char *text = kiln_apijson_dump(v, NULL);
        json_decref(v);
        if (!s->last_job || strcmp(text, s->last_job) != 0) {
            free(s->last_job);
            s->last_job = text;
            if (!s->final_seen) { /* the final phase goes out after the rest of the log */
                v = kiln_apijson_job(&j, false, now_ms());
                _cleanup_free_ char *full = kiln_apijson_dump(v, NULL);
                json_decref(v);
                sse_phase(s, full);
            }
        } else {
            free(text);
        }
    }
    kiln_store_job_release(&j);
}

/*
 * Look at the stored log (at most every STORE_POLL_MS): a first copy, or a
 * newer one than the stream reads. True when the stream has a new copy.
 */
static bool stream_load_stored(struct kiln_api_stream *s)
{
    int64_t now = mono_ms();
    if (s->last_store_try && now - s->last_store_try < STORE_POLL_MS)
        return false;
    s->last_store_try = now;
    struct kiln_error *e = NULL;
    struct kiln_store_job_log l = {0};
    int rc = stored_log(s->api, s->job_id, &l, &e);
    if (rc < 0)
        kiln_log(KILN_LOG_WARN, "api: job %lld: stored log: %s", (long long)s->job_id,
                 e ? e->msg : "?");
    kiln_error_free(e);
    if (rc <= 0)
        return false;
    if (s->source == SOURCE_STORE && l.final == s->log.final && l.stored_ms == s->log.stored_ms &&
        stored_end(&l) == stored_end(&s->log)) {
        kiln_store_job_log_release(&l);
        return false; /* the same copy */
    }
    stream_use_stored(s, &l);
    return true;
}

/* Find the log (log_source(), as the stream last saw the job); true once found. */
static bool stream_open(struct kiln_api_stream *s)
{
    if (s->here) {
        s->fd = open_log(s->api, s->job_id);
        if (s->fd >= 0) {
            s->source = SOURCE_FILE;
            return true;
        }
    }
    if (stream_load_stored(s))
        return true;
    if (s->here || s->elsewhere)
        return false;
    s->fd = open_log(s->api, s->job_id);
    if (s->fd >= 0)
        s->source = SOURCE_FILE;
    return s->fd >= 0;
}

/*
 * A job final whose stored log may still come (see STORED_LOG_WAIT_MS):
 * without any log yet, or read from a live copy (the final one replaces it).
 */
static bool stream_awaits_stored(const struct kiln_api_stream *s)
{
    bool waiting = s->source == SOURCE_NONE || (s->source == SOURCE_STORE && !s->log.final);
    return waiting && !s->gone && s->ran && s->finished_ms > 0 &&
           now_ms() - s->finished_ms < STORED_LOG_WAIT_MS;
}

/* Up to `max` bytes of the log at `off` (the file, or the stored copy); <= 0 at the end. */
static ssize_t stream_pread(struct kiln_api_stream *s, char *buf, size_t max, uint64_t off)
{
    if (s->source == SOURCE_FILE)
        return pread(s->fd, buf, max, (off_t)off);
    if (s->source != SOURCE_STORE || off < s->log.start_offset)
        return 0;
    uint64_t rel = off - s->log.start_offset;
    size_t have = s->log.len - s->log_head;
    if (rel >= have)
        return 0;
    size_t n = have - (size_t)rel < max ? have - (size_t)rel : max;
    memcpy(buf, s->log.data + s->log_head + rel, n);
    return (ssize_t)n;
}

/*
 * A stream behind the stored copy's start (it left out the log's beginning,
 * or the log grew past the live copy's window between two looks): one line
 * in place of the bytes missed, then on from the copy's start.
 */
static void stream_skip_to_stored(struct kiln_api_stream *s)
{
    uint64_t start = s->log.start_offset;
    _cleanup_free_ char *line = NULL;
    if (s->off == 0 && s->log_head > 0) /* from the beginning: the copy's own first line */
        line = kiln_xstrndup(s->log.data, s->log_head);
    else
        line = skipped_line(start - s->off);
    s->off = start;
    if (!s->sse) {
        kiln_buf_adds(&s->out, line);
        return;
    }
    if (s->line.len) { /* the start of a line whose end is not shown */
        sse_log_line(s, s->line.buf, s->line.len);
        kiln_buf_reset(&s->line);
    }
    sse_log_line(s, line, strlen(line) - 1);
}

/* Read what the log has past s->off: into buf (plain) or as SSE events into s->out. */
static ssize_t stream_read_log(struct kiln_api_stream *s, char *buf, size_t max)
{
    if (s->source == SOURCE_NONE && !stream_open(s))
        return 0;
    if (s->source == SOURCE_STORE) {
        /* at the end of a live copy: look for a newer one */
        if (s->off >= stored_end(&s->log) && !s->log.final && !stream_load_stored(s))
            return 0;
        if (s->off < s->log.start_offset) {
            stream_skip_to_stored(s);
            return 0; /* s->out first */
        }
    }
    if (!s->sse) {
        ssize_t n = stream_pread(s, buf, max, s->off);
        if (n > 0)
            s->off += (uint64_t)n;
        return n < 0 ? 0 : n;
    }
    char tmp[16 * 1024];
    ssize_t n = stream_pread(s, tmp, sizeof(tmp), s->off);
    if (n <= 0)
        return 0;
    size_t i = 0;
    while (i < (size_t)n) {
        const char *nl = memchr(tmp + i, '\n', (size_t)n - i);
        size_t end = nl ? (size_t)(nl - tmp) : (size_t)n;
        size_t room = SSE_LINE_MAX - s->line.len;
        if (end - i > room) {
            /* an overlong line goes out in pieces */
            kiln_buf_add(&s->line, tmp + i, room);
            s->off += room;
            i += room;
            sse_log_line(s, s->line.buf, s->line.len);
            kiln_buf_reset(&s->line);
            continue;
        }
        kiln_buf_add(&s->line, tmp + i, end - i);
        s->off += end - i;
        i = end;
        if (nl) {
            s->off++;
            i++;
            sse_log_line(s, s->line.buf, s->line.len);
            kiln_buf_reset(&s->line);
        }
    }
    return n;
}

ssize_t kiln_api_stream_read(struct kiln_api_stream *s, char *buf, size_t max)
{
    if (max == 0)
        return 0;
    for (;;) {
        if (s->out_pos < s->out.len) {
            size_t n = s->out.len - s->out_pos;
            if (n > max)
                n = max;
            memcpy(buf, s->out.buf + s->out_pos, n);
            s->out_pos += n;
            if (s->out_pos == s->out.len) {
                kiln_buf_reset(&s->out);
                s->out_pos = 0;
            }
            s->last_sent = mono_ms();
            return (ssize_t)n;
        }
        if (s->done || __atomic_load_n(&s->api->stopping, __ATOMIC_SEQ_CST))
            return KILN_API_STREAM_END;
        int64_t now = mono_ms();
        bool final_before = s->final_seen;
        if (s->last_check < 0 || now - s->last_check >= STREAM_CHECK_MS) {
            stream_check(s);
            final_before = s->final_seen; /* seen before the read below */
        }
        ssize_t n = stream_read_log(s, buf, max);
        if (!s->sse && n > 0) {
            s->last_sent = now;
            return n;
        }
        if (s->out.len > s->out_pos)
            continue;
        if (n == 0 && final_before && !stream_awaits_stored(s)) {
            /* the job ended before this read found the end of the log: all is sent */
            if (s->sse) {
                if (s->line.len) {
                    sse_log_line(s, s->line.buf, s->line.len);
                    kiln_buf_reset(&s->line);
                }
                if (s->last_job) {
                    struct kiln_store_job j = {0};
                    if (kiln_store_job_get(s->api->store, s->job_id, &j, NULL) >= 0) {
                        json_t *v = kiln_apijson_job(&j, false, now_ms());
                        _cleanup_free_ char *full = kiln_apijson_dump(v, NULL);
                        json_decref(v);
                        sse_phase(s, full);
                        kiln_store_job_release(&j);
                    }
                }
            }
            s->done = true;
            continue;
        }
        if (n > 0)
            continue; /* SSE: a partial line only; read on */
        if (s->sse && now - s->last_sent >= SSE_KEEPALIVE_MS) {
            kiln_buf_adds(&s->out, ": keepalive\n\n");
            continue;
        }
        return 0;
    }
}

static void job_log(struct kiln_api *a, int64_t id, const struct kiln_api_request *req,
                    struct kiln_api_response *r)
{
    uint64_t tail = 0;
    bool has_tail = query(req, "tail") != NULL;
    if (!query_uint(req, r, "tail", TAIL_MAX, &tail))
        return;
    int download = query_bool(req, "download"), follow = query_bool(req, "follow");
    if (download < 0 || follow < 0) {
        kiln_api_error_response(r, 400, "bad_request",
                                "query parameters 'download' and 'follow' must be 0 or 1");
        return;
    }
    struct kiln_store_job j = {0};
    struct kiln_error *e = NULL;
    int rc = kiln_store_job_get(a->store, id, &j, &e);
    if (rc < 0) {
        fail(r, rc, e);
        kiln_error_free(e);
        return;
    }
    _cleanup_free_ char *filename = kiln_xasprintf("%s-%s.log", j.spec_name, j.revision);

    /* The log file here, or the copy in the store (see log_source). */
    int fd = -1;
    _cleanup_(kiln_store_job_log_release) struct kiln_store_job_log stored = {0};
    int source = log_source(a, &j, &fd, &stored, &e);
    kiln_store_job_release(&j);
    if (source < 0) {
        fail(r, source, e);
        kiln_error_free(e);
        return;
    }

    reset(r);
    r->status = 200;
    kiln_api_response_add_header(r, "Content-Type", "text/plain; charset=utf-8");
    kiln_api_response_add_header(r, "Cache-Control", "no-store");
    kiln_api_response_add_header(r, "X-Kiln-Log-Source",
                                 source == SOURCE_FILE    ? "file"
                                 : source == SOURCE_STORE ? "store"
                                                          : "none");
    if (download) {
        _cleanup_free_ char *cd = kiln_xasprintf("attachment; filename=\"%s\"", filename);
        kiln_api_response_add_header(r, "Content-Disposition", cd);
    }
    /* the stored copy as shown: maybe a line in front for the log's beginning left out */
    _cleanup_(kiln_buf_release) struct kiln_buf view = KILN_BUF_INIT;
    size_t prefix = 0;
    if (source == SOURCE_STORE)
        stored_view(&stored, &view, &prefix);
    struct stat st;
    uint64_t size = 0, start = 0;
    if (fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode))
        size = (uint64_t)st.st_size;
    else if (source == SOURCE_STORE)
        size = view.len;
    if (fd >= 0 && has_tail)
        start = tail_offset(fd, size, tail);
    else if (source == SOURCE_STORE && has_tail)
        start = mem_tail_offset(view.buf, size, tail);
    if (follow) {
        if (fd >= 0)
            close(fd);
        kiln_api_response_add_header(r, "X-Accel-Buffering", "no");
        uint64_t from = start;
        if (source == SOURCE_STORE) /* from the view to the whole log */
            from = start < prefix ? 0 : stored.start_offset + (start - prefix);
        r->stream = stream_new(a, id, false, from);
        if (source == SOURCE_STORE) {
            stream_use_stored(r->stream, &stored);
            r->stream->last_store_try = mono_ms();
        }
        return;
    }
    if (fd >= 0 && size > start) {
        r->body_fd = fd;
        r->body_fd_offset = start;
        r->body_fd_len = size - start;
    } else if (fd >= 0) {
        close(fd);
    } else if (source == SOURCE_STORE && size > start) {
        kiln_buf_add(&r->body, view.buf + start, (size_t)(size - start));
    }
}

static void job_events(struct kiln_api *a, int64_t id, const struct kiln_api_request *req,
                       struct kiln_api_response *r)
{
    uint64_t from = 0;
    const char *resume = query(req, "from");
    if (resume && !query_uint(req, r, "from", (uint64_t)INT64_MAX, &from))
        return;
    if (!resume && req->last_event_id && *req->last_event_id &&
        kiln_apijson_parse_uint(req->last_event_id, (uint64_t)INT64_MAX, &from) < 0)
        from = 0;
    struct kiln_store_job j = {0};
    struct kiln_error *e = NULL;
    int rc = kiln_store_job_get(a->store, id, &j, &e);
    if (rc < 0) {
        fail(r, rc, e);
        kiln_error_free(e);
        return;
    }
    bool final = kiln_job_phase_is_final(j.phase);
    reset(r);
    if (final && req->last_event_id && *req->last_event_id) {
        /* An EventSource reconnecting after the end: 204 tells it to stop. */
        int fd = -1;
        struct kiln_store_job_log stored = {0};
        int source = log_source(a, &j, &fd, &stored, NULL);
        struct stat st;
        uint64_t size = 0;
        if (source == SOURCE_FILE && fstat(fd, &st) == 0)
            size = (uint64_t)st.st_size;
        else if (source == SOURCE_STORE)
            size = stored_end(&stored);
        if (fd >= 0)
            close(fd);
        kiln_store_job_log_release(&stored);
        if (from >= size) {
            kiln_store_job_release(&j);
            r->status = 204;
            return;
        }
    }
    kiln_store_job_release(&j);
    r->status = 200;
    kiln_api_response_add_header(r, "Content-Type", "text/event-stream");
    kiln_api_response_add_header(r, "Cache-Control", "no-store");
    kiln_api_response_add_header(r, "X-Accel-Buffering", "no");
    r->stream = stream_new(a, id, true, from);
}

/* ---- registry, images, secrets ---- */

static void registry_info(struct kiln_api *a, struct kiln_api_response *r)
{
    json_t *o = json_object();
    if (registry_configured(a)) {
        const struct kiln_registry_config *rc = a->registry;
        json_object_set_new(o, "configured", json_true());
        json_object_set_new(o, "endpoint", rc->endpoint ? json_string(rc->endpoint) : json_null());
        json_object_set_new(o, "repoPrefix",
                            rc->repo_prefix ? json_string(rc->repo_prefix) : json_null());
        json_object_set_new(o, "pushRepository",
                            rc->push_repo ? json_string(rc->push_repo) : json_null());
    } else {
        json_object_set_new(o, "configured", json_false());
        json_object_set_new(o, "message", json_string("image registry not found"));
        json_t *settings = json_array();
        static const char *const names[] = {
            "KILN_REGISTRY_ENDPOINT", "PRIMEHUB_CUSTOM_IMAGE_REGISTRY_ENDPOINT",
            "KILN_REGISTRY_USERNAME", "PRIMEHUB_CUSTOM_IMAGE_REGISTRY_USERNAME",
            "KILN_REGISTRY_PASSWORD", "PRIMEHUB_CUSTOM_IMAGE_REGISTRY_PASSWORD",
            "KILN_REPO_PREFIX",       "PRIMEHUB_CUSTOM_IMAGE_REPO_PREFIX",
            "KILN_PUSH_REPOSITORY",   "KILN_INSECURE_REGISTRIES",
        };
        for (size_t i = 0; i < KILN_ARRAY_SIZE(names); i++)
            json_array_append_new(settings, json_string(names[i]));
        json_object_set_new(o, "settings", settings);
    }
    json_reply(r, 200, o);
}

static json_t *image_json(const struct kiln_store_image *im)
{
    json_t *o = json_object();
    json_object_set_new(o, "url", json_string_nocheck(im->url));
    json_object_set_new(o, "source", json_string(kiln_image_source_name(im->source)));
    json_object_set_new(o, "createdAt", kiln_apijson_time(im->created_ms));
    return o;
}

static void list_images(struct kiln_api *a, const struct kiln_api_request *req,
                        struct kiln_api_response *r)
{
    size_t limit, offset;
    if (!paging(req, r, &limit, &offset))
        return;
    struct kiln_store_image_list l = {0};
    struct kiln_error *e = NULL;
    int rc = kiln_store_image_list(a->store, &l, &e);
    if (rc < 0) {
        fail(r, rc, e);
        kiln_error_free(e);
        return;
    }
    json_t *items = json_array();
    for (size_t i = offset; i < l.n && i - offset < limit; i++)
        json_array_append_new(items, image_json(&l.v[i]));
    json_reply(r, 200, kiln_apijson_list(items, (int64_t)l.n, limit, offset));
    kiln_store_image_list_release(&l);
}

static void add_image(struct kiln_api *a, const struct kiln_api_request *req,
                      struct kiln_api_response *r)
{
    json_t *body = body_json(req, r);
    if (!body)
        return;
    struct kiln_diags d = KILN_DIAGS_INIT;
    struct kiln_error *e = NULL;
    _cleanup_free_ char *url = NULL;
    int rc = kiln_apijson_image_from_body(body, &url, &d, &e);
    json_decref(body);
    if (rc < 0) {
        error_diags(r, 422, "invalid", "invalid image", &d);
        goto out;
    }
    rc = kiln_store_image_add(a->store, url, KILN_IMAGE_ADMIN, &e);
    if (rc < 0) {
        fail(r, rc, e);
        goto out;
    }
    bool added = rc == 1;
    struct kiln_store_image_list l = {0};
    rc = kiln_store_image_list(a->store, &l, &e);
    if (rc < 0) {
        fail(r, rc, e);
        goto out;
    }
    json_t *found = NULL;
    for (size_t i = 0; i < l.n && !found; i++)
        if (!strcmp(l.v[i].url, url))
            found = image_json(&l.v[i]);
    kiln_store_image_list_release(&l);
    if (!found) {
        kiln_api_error_response(r, 409, "conflict", "the image was removed meanwhile");
        goto out;
    }
    json_reply(r, added ? 201 : 200, found);
out:
    kiln_diags_release(&d);
    kiln_error_free(e);
}

static json_t *secret_json(const struct kiln_store_secret *s)
{
    json_t *o = json_object();
    json_object_set_new(o, "name", json_string_nocheck(s->name));
    json_object_set_new(o, "createdAt", kiln_apijson_time(s->created_ms));
    return o;
}

static void list_secrets(struct kiln_api *a, const struct kiln_api_request *req,
                         struct kiln_api_response *r)
{
    size_t limit, offset;
    if (!paging(req, r, &limit, &offset))
        return;
    struct kiln_store_secret_list l = {0};
    struct kiln_error *e = NULL;
    int rc = kiln_store_secret_list(a->store, &l, &e);
    if (rc < 0) {
        fail(r, rc, e);
        kiln_error_free(e);
        return;
    }
    json_t *items = json_array();
    for (size_t i = offset; i < l.n && i - offset < limit; i++)
        json_array_append_new(items, secret_json(&l.v[i]));
    json_reply(r, 200, kiln_apijson_list(items, (int64_t)l.n, limit, offset));
    kiln_store_secret_list_release(&l);
}

static void put_secret(struct kiln_api *a, const struct kiln_api_request *req,
                       struct kiln_api_response *r)
{
    json_t *body = body_json(req, r);
    if (!body)
        return;
    struct kiln_diags d = KILN_DIAGS_INIT;
    struct kiln_error *e = NULL;
    _cleanup_free_ char *name = NULL, *value = NULL;
    int rc = kiln_apijson_secret_from_body(body, &name, &value, &d, &e);
    json_decref(body);
    if (rc < 0) {
        error_diags(r, 422, "invalid", "invalid secret", &d);
        goto out;
    }
    rc = kiln_store_secret_put(a->store, name, value, &e);
    explicit_bzero(value, strlen(value));
    if (rc < 0) {
        fail(r, rc, e);
        goto out;
    }
    bool added = rc == 1;
    struct kiln_store_secret_list l = {0};
    rc = kiln_store_secret_list(a->store, &l, &e);
    if (rc < 0) {
        fail(r, rc, e);
        goto out;
    }
    json_t *found = NULL;
    for (size_t i = 0; i < l.n && !found; i++)
        if (!strcmp(l.v[i].name, name))
            found = secret_json(&l.v[i]);
    kiln_store_secret_list_release(&l);
    if (!found) {
        kiln_api_error_response(r, 409, "conflict", "the secret was deleted meanwhile");
        goto out;
    }
    json_reply(r, added ? 201 : 200, found);
    if (added) {
        _cleanup_free_ char *location = kiln_xasprintf(API_PREFIX "secrets/%s", name);
        kiln_api_response_add_header(r, "Location", location);
    }
out:
    kiln_diags_release(&d);
    kiln_error_free(e);
}

static void delete_secret(struct kiln_api *a, const char *name, struct kiln_api_response *r)
{
    struct kiln_error *e = NULL;
    int rc = kiln_store_secret_delete(a->store, name, &e);
    if (rc < 0) {
        fail(r, rc, e);
        kiln_error_free(e);
        return;
    }
    reset(r);
    r->status = 204;
}

/* ---- /metrics ---- */

static void metrics(struct kiln_api *a, struct kiln_api_response *r)
{
    int64_t counts[KILN_JOB_PHASES] = {0};
    struct kiln_error *e = NULL;
    int rc = kiln_store_job_counts(a->store, counts, &e);
    if (rc < 0) {
        fail(r, rc, e);
        kiln_error_free(e);
        return;
    }
    struct kiln_jobs_stats js;
    memset(&js, 0, sizeof(js));
    kiln_jobs_stats(a->jobs, &js);

    reset(r);
    r->status = 200;
    struct kiln_buf *b = &r->body;
    kiln_buf_adds(b, "# HELP kiln_jobs Build jobs in the store by phase.\n"
                     "# TYPE kiln_jobs gauge\n");
    for (int p = 0; p < KILN_JOB_PHASES; p++)
        kiln_buf_addf(b, "kiln_jobs{phase=\"%s\"} %lld\n", kiln_job_phase_name(p),
                      (long long)counts[p]);
    kiln_buf_adds(b, "# HELP kiln_builds_running Builds running in this process now.\n"
                     "# TYPE kiln_builds_running gauge\n");
    kiln_buf_addf(b, "kiln_builds_running %d\n", js.running);
    static const int bounds[8] = {10, 30, 60, 120, 300, 600, 1800, 3600};
    kiln_buf_adds(b, "# HELP kiln_build_duration_seconds Durations of finished builds.\n"
                     "# TYPE kiln_build_duration_seconds histogram\n");
    for (int i = 0; i < 8; i++)
        kiln_buf_addf(b, "kiln_build_duration_seconds_bucket{le=\"%d\"} %llu\n", bounds[i],
                      (unsigned long long)js.duration_buckets[i]);
    kiln_buf_addf(b, "kiln_build_duration_seconds_bucket{le=\"+Inf\"} %llu\n",
                  (unsigned long long)js.builds);
    kiln_buf_addf(b, "kiln_build_duration_seconds_sum %.3f\n", js.build_seconds_sum);
    kiln_buf_addf(b, "kiln_build_duration_seconds_count %llu\n", (unsigned long long)js.builds);
    kiln_buf_adds(b, "# HELP kiln_pushed_bytes_total Bytes uploaded to registries by builds.\n"
                     "# TYPE kiln_pushed_bytes_total counter\n");
    kiln_buf_addf(b, "kiln_pushed_bytes_total %llu\n", (unsigned long long)js.pushed_bytes);
    kiln_buf_adds(b, "# HELP kiln_http_requests_total HTTP responses sent by status code.\n"
                     "# TYPE kiln_http_requests_total counter\n");
    for (int c = 100; c < HTTP_CODES; c++) {
        uint64_t n = __atomic_load_n(&a->http_counts[c], __ATOMIC_RELAXED);
        if (n)
            kiln_buf_addf(b, "kiln_http_requests_total{code=\"%d\"} %llu\n", c,
                          (unsigned long long)n);
    }
    kiln_api_response_add_header(r, "Content-Type", "text/plain; version=0.0.4; charset=utf-8");
    kiln_api_response_add_header(r, "Cache-Control", "no-store");
}

/* ---- web page ---- */

static void web_asset(const struct kiln_api_request *req, struct kiln_api_response *r)
{
    const struct kiln_web_asset *as = kiln_web_asset_find(req->path);
    if (!as && !strcmp(req->path, "/"))
        as = kiln_web_asset_find("/index.html");
    if (!as) {
        text_reply(r, 404, "text/plain; charset=utf-8", "not found\n");
        return;
    }
    reset(r);
    kiln_api_response_add_header(r, "Cache-Control", "no-cache");
    if (as->etag)
        kiln_api_response_add_header(r, "ETag", as->etag);
    if (as->content_type && !strncmp(as->content_type, "text/html", 9)) {
        kiln_api_response_add_header(r, "Content-Security-Policy",
                                     "default-src 'self'; img-src 'self' data:; "
                                     "style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; "
                                     "base-uri 'none'; form-action 'self'");
        kiln_api_response_add_header(r, "X-Frame-Options", "DENY");
        kiln_api_response_add_header(r, "Referrer-Policy", "no-referrer");
    }
    if (as->etag && req->if_none_match && strstr(req->if_none_match, as->etag)) {
        r->status = 304;
        return;
    }
    r->status = 200;
    kiln_api_response_add_header(r, "Content-Type",
                                 as->content_type ? as->content_type : "application/octet-stream");
    r->static_body = as->data;
    r->static_len = as->len;
}

/* ---- routing ---- */

#define MAX_SEGS 4

/* Split "a/b/c" (an optional trailing '/' ignored) into at most MAX_SEGS segments; -1 if more. */
static int split_path(const char *p, char segs[MAX_SEGS][256])
{
    int n = 0;
    while (*p) {
        const char *slash = strchr(p, '/');
        size_t len = slash ? (size_t)(slash - p) : strlen(p);
        if (len == 0 || len >= 256 || n == MAX_SEGS)
            return -1;
        memcpy(segs[n], p, len);
        segs[n][len] = '\0';
        n++;
        if (!slash)
            break;
        p = slash + 1;
    }
    return n;
}

static bool is(const char *method, const char *m)
{
    return !strcmp(method, m);
}

static void route_api(struct kiln_api *a, const struct kiln_api_request *req, const char *method,
                      struct kiln_api_response *r)
{
    char seg[MAX_SEGS][256];
    int n = -1;
    if (!strncmp(req->path, API_PREFIX, strlen(API_PREFIX)))
        n = split_path(req->path + strlen(API_PREFIX), seg);
    if (n <= 0) {
        kiln_api_error_response(r, 404, "not_found", "no such api route");
        return;
    }
    if (!strcmp(seg[0], "specs")) {
        if (n == 1) {
            if (is(method, "GET"))
                list_specs(a, req, r);
            else if (is(method, "POST"))
                save_spec(a, req, r, NULL);
            else
                method_not_allowed(r, "GET, HEAD, POST");
            return;
        }
        const char *name = seg[1];
        if (n == 2) {
            if (is(method, "GET")) {
                json_t *v = spec_json_of(a, name, r);
                if (v)
                    json_reply(r, 200, v);
            } else if (is(method, "PUT")) {
                save_spec(a, req, r, name);
            } else if (is(method, "DELETE")) {
                delete_spec(a, name, r);
            } else {
                method_not_allowed(r, "GET, HEAD, PUT, DELETE");
            }
            return;
        }
        if (n == 3 && !strcmp(seg[2], "jobs")) {
            if (is(method, "GET"))
                list_spec_jobs(a, name, req, r);
            else
                method_not_allowed(r, "GET, HEAD");
            return;
        }
        if (n == 3 && !strcmp(seg[2], "rebuild")) {
            if (is(method, "POST"))
                rebuild(a, name, r);
            else
                method_not_allowed(r, "POST");
            return;
        }
    } else if (!strcmp(seg[0], "jobs") && n >= 2 && n <= 3) {
        int64_t id;
        if (!parse_id(seg[1], &id)) {
            _cleanup_free_ char *q = kiln_diag_quote(seg[1], 40);
            errorf(r, 404, "not_found", "job '%s' not found", q);
            return;
        }
        if (n == 2) {
            if (is(method, "GET")) {
                json_t *v = job_json_of(a, id, true, r);
                if (v)
                    json_reply(r, 200, v);
            } else {
                method_not_allowed(r, "GET, HEAD");
            }
            return;
        }
        if (!strcmp(seg[2], "log") || !strcmp(seg[2], "events")) {
            if (!is(method, "GET"))
                method_not_allowed(r, "GET, HEAD");
            else if (seg[2][0] == 'l')
                job_log(a, id, req, r);
            else
                job_events(a, id, req, r);
            return;
        }
        if (!strcmp(seg[2], "cancel")) {
            if (is(method, "POST"))
                cancel_job(a, id, r);
            else
                method_not_allowed(r, "POST");
            return;
        }
    } else if (!strcmp(seg[0], "registry") && n == 1) {
        if (is(method, "GET"))
            registry_info(a, r);
        else
            method_not_allowed(r, "GET, HEAD");
        return;
    } else if (!strcmp(seg[0], "images") && n == 1) {
        if (is(method, "GET"))
            list_images(a, req, r);
        else if (is(method, "POST"))
            add_image(a, req, r);
        else
            method_not_allowed(r, "GET, HEAD, POST");
        return;
    } else if (!strcmp(seg[0], "secrets") && n <= 2) {
        if (n == 1) {
            if (is(method, "GET"))
                list_secrets(a, req, r);
            else if (is(method, "POST"))
                put_secret(a, req, r);
            else
                method_not_allowed(r, "GET, HEAD, POST");
        } else {
            if (is(method, "DELETE"))
                delete_secret(a, seg[1], r);
            else
                method_not_allowed(r, "DELETE");
        }
        return;
    }
    kiln_api_error_response(r, 404, "not_found", "no such api route");
}

void kiln_api_handle(struct kiln_api *a, const struct kiln_api_request *req,
                     struct kiln_api_response *r)
{
    reset(r);
    const char *method = req->method ? req->method : "GET";
    const char *path = req->path ? req->path : "/";
    struct kiln_api_request rq = *req;
    rq.path = path;
    /* HEAD is GET without the body (the HTTP layer drops it) */
    if (is(method, "HEAD"))
        method = "GET";

    if (kiln_api_path_needs_auth(path)) {
        if (!kiln_api_authorized(a, req->authorization)) {
            kiln_api_unauthorized(r, req->authorization);
        } else if (req->body_too_big) {
            errorf(r, 413, "too_big", "request body is larger than %zu bytes", KILN_API_MAX_BODY);
        } else {
            route_api(a, &rq, method, r);
        }
    } else if (!strcmp(path, "/healthz")) {
        if (is(method, "GET"))
            text_reply(r, 200, "text/plain; charset=utf-8", "ok\n");
        else
            method_not_allowed(r, "GET, HEAD");
    } else if (!strcmp(path, "/metrics")) {
        if (is(method, "GET"))
            metrics(a, r);
        else
            method_not_allowed(r, "GET, HEAD");
    } else if (is(method, "GET")) {
        web_asset(&rq, r);
    } else {
        method_not_allowed(r, "GET, HEAD");
    }
    kiln_api_response_add_header(r, "X-Content-Type-Options", "nosniff");
}
