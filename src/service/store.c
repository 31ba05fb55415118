#include "util/common.h"
#include "service/store.h"

#include <time.h>

#include <jansson.h>

struct kiln_store {
    const struct kiln_store_ops *ops;
    void *impl;
};

static const char *const phase_names[KILN_JOB_PHASES] = {
    [KILN_JOB_PENDING] = "Pending",     [KILN_JOB_RUNNING] = "Running",
    [KILN_JOB_SUCCEEDED] = "Succeeded", [KILN_JOB_FAILED] = "Failed",
    [KILN_JOB_CANCELLED] = "Cancelled", [KILN_JOB_UNKNOWN] = "Unknown",
};

const char *kiln_job_phase_name(enum kiln_job_phase phase)
{
    if ((unsigned)phase >= KILN_JOB_PHASES)
        return "Unknown";
    return phase_names[phase];
}

int kiln_job_phase_from_name(const char *name)
{
    if (!name)
        return -1;
    for (int i = 0; i < KILN_JOB_PHASES; i++)
        if (strcmp(name, phase_names[i]) == 0)
            return i;
    return -1;
}

bool kiln_job_phase_is_final(enum kiln_job_phase phase)
{
    return phase == KILN_JOB_SUCCEEDED || phase == KILN_JOB_FAILED || phase == KILN_JOB_CANCELLED;
}

const char *kiln_image_source_name(enum kiln_image_source src)
{
    return src == KILN_IMAGE_ADMIN ? "admin" : "built";
}

/* Results of the backend: its errors get the "store: " prefix. */
static int backend(int r, struct kiln_error **err)
{
    return kiln_store_errctx(r, err, "store");
}

/* ---- release functions ---- */

void kiln_store_spec_release(struct kiln_store_spec *s)
{
    if (!s)
        return;
    free(s->name);
    free(s->spec_json);
    free(s->job_image_url);
    memset(s, 0, sizeof(*s));
}

void kiln_store_spec_list_release(struct kiln_store_spec_list *l)
{
    if (!l)
        return;
    for (size_t i = 0; i < l->n; i++)
        kiln_store_spec_release(&l->v[i]);
    free(l->v);
    memset(l, 0, sizeof(*l));
}

void kiln_store_job_release(struct kiln_store_job *j)
{
    if (!j)
        return;
    free(j->spec_name);
    free(j->spec_json);
    free(j->target_image);
    free(j->image_digest);
    free(j->image_url);
    free(j->error_message);
    free(j->worker);
    free(j->log_path);
    memset(j, 0, sizeof(*j));
}

void kiln_store_job_list_release(struct kiln_store_job_list *l)
{
    if (!l)
        return;
    for (size_t i = 0; i < l->n; i++)
        kiln_store_job_release(&l->v[i]);
    free(l->v);
    memset(l, 0, sizeof(*l));
}

void kiln_store_secret_list_release(struct kiln_store_secret_list *l)
{
    if (!l)
        return;
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i].name);
    free(l->v);
    memset(l, 0, sizeof(*l));
}

void kiln_store_image_list_release(struct kiln_store_image_list *l)
{
    if (!l)
        return;
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i].url);
    free(l->v);
    memset(l, 0, sizeof(*l));
}

/* ---- shared helpers ---- */

char *kiln_store_like_contains(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    char *p = kiln_xmalloc(2 * n + 3);
    size_t o = 0;
    p[o++] = '%';
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\\' || s[i] == '%' || s[i] == '_')
            p[o++] = '\\';
        p[o++] = s[i];
    }
    p[o++] = '%';
    p[o] = '\0';
    return p;
}

int64_t kiln_store_now_ms(const struct kiln_store_options *opts)
{
    if (opts && opts->clock_ms)
        return opts->clock_ms(opts->clock_userdata);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- handle and dispatch ---- */

struct kiln_store *kiln_store_new(const struct kiln_store_ops *ops, void *impl)
{
    struct kiln_store *st = kiln_xcalloc(1, sizeof(*st));
    st->ops = ops;
    st->impl = impl;
    return st;
}

void kiln_store_free(struct kiln_store *st)
{
    if (!st)
        return;
    st->ops->free(st->impl);
    free(st);
}

void kiln_store_freep(struct kiln_store **st)
{
    kiln_store_free(*st);
}

const char *kiln_store_backend(const struct kiln_store *st)
{
    return st->ops->name;
}

static bool has_prefix(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

int kiln_store_open(const char *url, const struct kiln_store_options *opts, struct kiln_store **ret,
                    struct kiln_error **err)
{
    if (!url || !*url)
        return kiln_error_set(err, KILN_EINVAL, 0, "store: no database given");
    if (has_prefix(url, "postgres://") || has_prefix(url, "postgresql://"))
        return kiln_store_open_postgres(url, opts, ret, err);
    const char *path = url;
    if (has_prefix(url, "sqlite://"))
        path = url + strlen("sqlite://");
    else if (has_prefix(url, "sqlite:"))
        path = url + strlen("sqlite:");
    else if (strstr(url, "://"))
        return kiln_error_set(err, KILN_EUNSUPPORTED, 0, "store: unknown database URL '%s'", url);
    if (!*path)
        return kiln_error_set(err, KILN_EINVAL, 0, "store: no database path in '%s'", url);
    return kiln_store_open_sqlite(path, opts, ret, err);
}

int kiln_store_schema_version(struct kiln_store *st, struct kiln_error **err)
{
    return backend(st->ops->schema_version(st->impl, err), err);
}

int kiln_store_check(struct kiln_store *st, struct kiln_error **err)
{
    return backend(st->ops->check(st->impl, err), err);
}

static int check_name(const char *what, const char *name, struct kiln_error **err)
{
    if (!name || !*name)
        return kiln_error_set(err, KILN_EINVAL, 0, "store: empty %s name", what);
    return 0;
}

static int check_limit(size_t *limit, struct kiln_error **err)
{
    if (*limit == 0)
        *limit = KILN_STORE_LIST_DEFAULT;
    if (*limit > KILN_STORE_LIST_MAX)
        return kiln_error_set(err, KILN_EINVAL, 0, "store: page size %zu is over %d", *limit,
                              KILN_STORE_LIST_MAX);
    return 0;
}

static int check_offset(size_t offset, struct kiln_error **err)
{
    if (offset > (size_t)INT64_MAX)
        return kiln_error_set(err, KILN_EINVAL, 0, "store: offset %zu is too large", offset);
    return 0;
}

/* ---- specs ---- */

int kiln_store_spec_parse(const struct kiln_store_spec *s, struct kiln_spec **ret,
                          struct kiln_error **err)
{
    json_error_t jerr;
    json_t *root = json_loads(s->spec_json ? s->spec_json : "", 0, &jerr);
    if (!root)
        return kiln_error_set(err, KILN_EINTERNAL, 0, "store: spec '%s': stored JSON: %s",
                              s->name ? s->name : "", jerr.text);
    int r = kiln_spec_from_json(root, ret, NULL, err);
    json_decref(root);
    if (r < 0)
        return kiln_store_errctx(r, err, "store: spec '%s'", s->name ? s->name : "");
    return r;
}

int kiln_store_spec_put(struct kiln_store *st, const struct kiln_spec *spec,
                        enum kiln_store_put_mode mode, struct kiln_error **err)
{
    if (!spec)
        return kiln_error_set(err, KILN_EINVAL, 0, "store: no spec given");
    int r = check_name("spec", spec->name, err);
    if (r < 0)
        return r;
    if (mode != KILN_STORE_PUT_UPSERT && mode != KILN_STORE_PUT_CREATE &&
        mode != KILN_STORE_PUT_UPDATE)
        return kiln_error_set(err, KILN_EINVAL, 0, "store: unknown put mode %d", (int)mode);
    if (!spec->base_image)
        return kiln_error_set(err, KILN_EINVAL, 0, "store: spec '%s': no base image", spec->name);
    json_t *root = kiln_spec_to_json(spec, KILN_SPEC_SHAPE_KILN);
    char *text = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(root);
    if (!text)
        return kiln_error_set(err, KILN_EINTERNAL, 0, "store: spec '%s': cannot write JSON",
                              spec->name);
    char rev[KILN_REVISION_LEN + 1];
    kiln_spec_revision(spec, rev);
    r = backend(st->ops->spec_put(st->impl, spec->name, text, rev, mode, err), err);
    free(text);
    return r;
}

int kiln_store_spec_get(struct kiln_store *st, const char *name, struct kiln_store_spec *ret,
                        struct kiln_error **err)
{
    int r = check_name("spec", name, err);
    if (r < 0)
        return r;
    struct kiln_store_spec s = {0};
    r = backend(st->ops->spec_get(st->impl, name, &s, err), err);
    if (r < 0) {
        kiln_store_spec_release(&s);
        return r;
    }
    *ret = s;
    return r;
}

int kiln_store_spec_delete(struct kiln_store *st, const char *name, struct kiln_error **err)
{
    int r = check_name("spec", name, err);
    if (r < 0)
        return r;
    return backend(st->ops->spec_delete(st->impl, name, err), err);
}

int kiln_store_spec_list(struct kiln_store *st, const struct kiln_store_spec_query *q,
                         struct kiln_store_spec_list *ret, struct kiln_error **err)
{
    struct kiln_store_spec_query qq = {0};
    if (q)
        qq = *q;
    if (qq.order != KILN_STORE_ORDER_NAME && qq.order != KILN_STORE_ORDER_STATUS &&
        qq.order != KILN_STORE_ORDER_UPDATED)
        return kiln_error_set(err, KILN_EINVAL, 0, "store: unknown spec order %d", (int)qq.order);
    int r = check_limit(&qq.limit, err);
    if (r < 0)
        return r;
    r = check_offset(qq.offset, err);
    if (r < 0)
        return r;
    _cleanup_free_ char *like = kiln_store_like_contains(qq.name_contains);
    struct kiln_store_spec_list l = {0};
    r = backend(st->ops->spec_list(st->impl, &qq, like, &l, err), err);
    if (r < 0) {
        kiln_store_spec_list_release(&l);
        return r;
    }
    *ret = l;
    return r;
}

/* ---- jobs ---- */

static int check_id(int64_t id, struct kiln_error **err)
{
    if (id <= 0)
        return kiln_error_set(err, KILN_EINVAL, 0, "store: invalid job id %lld", (long long)id);
    return 0;
}

int kiln_store_job_create(struct kiln_store *st, const char *spec_name, const char *revision,
                          const char *target_image, int64_t *ret_id, struct kiln_error **err)
{
    int r = check_name("spec", spec_name, err);
    if (r < 0)
        return r;
    if (!target_image || !*target_image)
        return kiln_error_set(err, KILN_EINVAL, 0, "store: spec '%s': job without target image",
                              spec_name);
    int64_t id = 0;
    r = backend(st->ops->job_create(st->impl, spec_name, revision, target_image, &id, err), err);
    if (r >= 0 && ret_id)
        *ret_id = id;
    return r;
}

int kiln_store_job_get(struct kiln_store *st, int64_t id, struct kiln_store_job *ret,
                       struct kiln_error **err)
{
    int r = check_id(id, err);
    if (r < 0)
        return r;
    struct kiln_store_job j = {0};
    r = backend(st->ops->job_get(st->impl, id, &j, err), err);
    if (r < 0) {
        kiln_store_job_release(&j);
        return r;
    }
    *ret = j;
    return r;
}

int kiln_store_job_list(struct kiln_store *st, const char *spec_name, size_t limit, size_t offset,
                        struct kiln_store_job_list *ret, struct kiln_error **err)
{
    int r = check_name("spec", spec_name, err);
    if (r < 0)
        return r;
    r = check_limit(&limit, err);
    if (r < 0)
        return r;
    r = check_offset(offset, err);
    if (r < 0)
        return r;
    struct kiln_store_job_list l = {0};
    r = backend(st->ops->job_list(st->impl, spec_name, limit, offset, &l, err), err);
    if (r < 0) {
        kiln_store_job_list_release(&l);
        return r;
    }
    *ret = l;
    return r;
}

int kiln_store_job_set_log_path(struct kiln_store *st, int64_t id, const char *log_path,
                                struct kiln_error **err)
{
    int r = check_id(id, err);
    if (r < 0)
        return r;
    return backend(st->ops->job_set_log_path(st->impl, id, log_path, err), err);
}

int kiln_store_job_claim(struct kiln_store *st, const char *worker, struct kiln_store_job *ret,
                         struct kiln_error **err)
{
    int r = check_name("worker", worker, err);
    if (r < 0)
        return r;
    struct kiln_store_job j = {0};
    r = backend(st->ops->job_claim(st->impl, worker, &j, err), err);
    if (r <= 0) {
        kiln_store_job_release(&j);
        return r;
    }
    *ret = j;
    return r;
}

static int job_finish(struct kiln_store *st, int64_t id, const char *worker,
                      enum kiln_job_phase phase, const char *image_digest, const char *image_url,
                      const char *error_message, struct kiln_error **err)
{
    int r = check_id(id, err);
    if (r < 0)
        return r;
    if (!kiln_job_phase_is_final(phase))
        return kiln_error_set(err, KILN_EINVAL, 0, "store: job %lld: cannot finish as '%s'",
                              (long long)id, kiln_job_phase_name(phase));
    return backend(st->ops->job_finish(st->impl, id, worker, phase, image_digest, image_url,
                                       error_message, err),
                   err);
}

int kiln_store_job_finish(struct kiln_store *st, int64_t id, enum kiln_job_phase phase,
                          const char *image_digest, const char *image_url,
                          const char *error_message, struct kiln_error **err)
{
    return job_finish(st, id, NULL, phase, image_digest, image_url, error_message, err);
}

int kiln_store_job_finish_as(struct kiln_store *st, int64_t id, const char *worker,
                             enum kiln_job_phase phase, const char *image_digest,
                             const char *image_url, const char *error_message,
                             struct kiln_error **err)
{
    int r = check_name("worker", worker, err);
    if (r < 0)
        return r;
    return job_finish(st, id, worker, phase, image_digest, image_url, error_message, err);
}

int kiln_store_job_heartbeat(struct kiln_store *st, int64_t id, const char *worker,
                             struct kiln_error **err)
{
    int r = check_id(id, err);
    if (r >= 0)
        r = check_name("worker", worker, err);
    if (r < 0)
        return r;
    return backend(st->ops->job_heartbeat(st->impl, id, worker, err), err);
}

int kiln_store_job_request_cancel(struct kiln_store *st, int64_t id, struct kiln_error **err)
{
    int r = check_id(id, err);
    if (r < 0)
        return r;
    return backend(st->ops->job_request_cancel(st->impl, id, err), err);
}

int kiln_store_job_cancel_requested(struct kiln_store *st, int64_t id, struct kiln_error **err)
{
    int r = check_id(id, err);
    if (r < 0)
        return r;
    return backend(st->ops->job_cancel_requested(st->impl, id, err), err);
}

int kiln_store_recover(struct kiln_store *st, int64_t stale_before_ms, bool requeue,
                       struct kiln_error **err)
{
    return backend(st->ops->recover(st->impl, stale_before_ms, NULL, requeue, err), err);
}

int kiln_store_recover_worker(struct kiln_store *st, const char *worker, bool requeue,
                              struct kiln_error **err)
{
    int r = check_name("worker", worker, err);
    if (r < 0)
        return r;
    return backend(st->ops->recover(st->impl, INT64_MAX, worker, requeue, err), err);
}

int kiln_store_running_workers(struct kiln_store *st, struct kiln_strv *ret,
                               struct kiln_error **err)
{
    struct kiln_strv v = KILN_STRV_INIT;
    int r = backend(st->ops->running_workers(st->impl, &v, err), err);
    if (r < 0) {
        kiln_strv_release(&v);
        return r;
    }
    *ret = v;
    return r;
}

int kiln_store_job_counts(struct kiln_store *st, int64_t ret_counts[KILN_JOB_PHASES],
                          struct kiln_error **err)
{
    int64_t c[KILN_JOB_PHASES] = {0};
    int r = backend(st->ops->job_counts(st->impl, c, err), err);
    if (r >= 0)
        memcpy(ret_counts, c, sizeof(c));
    return r;
}

static int check_log(int64_t id, const char *data, size_t len, uint64_t start_offset,
                     struct kiln_error **err)
{
    int r = check_id(id, err);
    if (r < 0)
        return r;
    if (!data && len > 0)
        return kiln_error_set(err, KILN_EINVAL, 0, "store: job %lld: no log given", (long long)id);
    if (len > KILN_STORE_LOG_MAX)
        return kiln_error_set(err, KILN_EINVAL, 0, "store: job %lld: a log of %zu bytes is over %u",
                              (long long)id, len, KILN_STORE_LOG_MAX);
    if (start_offset > (uint64_t)INT64_MAX)
        return kiln_error_set(err, KILN_EINVAL, 0, "store: job %lld: log offset %llu is too large",
                              (long long)id, (unsigned long long)start_offset);
    return 0;
}

int kiln_store_job_log_put(struct kiln_store *st, int64_t id, const char *data, size_t len,
                           bool truncated, struct kiln_error **err)
{
    return kiln_store_job_log_put_final(st, id, data, len, 0, truncated, err);
}

int kiln_store_job_log_put_final(struct kiln_store *st, int64_t id, const char *data, size_t len,
                                 uint64_t start_offset, bool truncated, struct kiln_error **err)
{
    int r = check_log(id, data, len, start_offset, err);
    if (r < 0)
        return r;
    if (start_offset > 0 && !truncated)
        return kiln_error_set(err, KILN_EINVAL, 0,
                              "store: job %lld: a final log from offset %llu must be truncated",
                              (long long)id, (unsigned long long)start_offset);
    r = backend(st->ops->job_log_put(st->impl, id, NULL, data ? data : "", len, start_offset,
                                     truncated, true, err),
                err);
    return r < 0 ? r : 0;
}

int kiln_store_job_log_put_live(struct kiln_store *st, int64_t id, const char *worker,
                                const char *data, size_t len, uint64_t start_offset,
                                struct kiln_error **err)
{
    int r = check_log(id, data, len, start_offset, err);
    if (r < 0)
        return r;
    if (worker && !*worker)
        return check_name("worker", worker, err);
    return backend(st->ops->job_log_put(st->impl, id, worker, data ? data : "", len, start_offset,
                                        false, false, err),
                   err);
}

void kiln_store_job_log_release(struct kiln_store_job_log *l)
{
    if (!l)
        return;
    free(l->data);
    memset(l, 0, sizeof(*l));
}

int kiln_store_job_log_read(struct kiln_store *st, int64_t id, struct kiln_store_job_log *ret,
                            struct kiln_error **err)
{
    int r = check_id(id, err);
    if (r < 0)
        return r;
    struct kiln_store_job_log l = {0};
    r = backend(st->ops->job_log_get(st->impl, id, &l, err), err);
    if (r < 0) {
        kiln_store_job_log_release(&l);
        return r;
    }
    *ret = l;
    return 0;
}

int kiln_store_job_log_get(struct kiln_store *st, int64_t id, char **ret, size_t *ret_len,
                           bool *ret_truncated, struct kiln_error **err)
{
    struct kiln_store_job_log l = {0};
    int r = kiln_store_job_log_read(st, id, &l, err);
    if (r < 0)
        return r;
    *ret = TAKE_PTR(l.data);
    *ret_len = l.len;
    if (ret_truncated)
        *ret_truncated = l.truncated;
    return 0;
}

/* ---- secrets ---- */

int kiln_store_secret_put(struct kiln_store *st, const char *name, const char *dockerconfigjson,
                          struct kiln_error **err)
{
    int r = check_name("secret", name, err);
    if (r < 0)
        return r;
    if (!dockerconfigjson)
        return kiln_error_set(err, KILN_EINVAL, 0, "store: secret '%s': no value", name);
    return backend(st->ops->secret_put(st->impl, name, dockerconfigjson, err), err);
}

int kiln_store_secret_list(struct kiln_store *st, struct kiln_store_secret_list *ret,
                           struct kiln_error **err)
{
    struct kiln_store_secret_list l = {0};
    int r = backend(st->ops->secret_list(st->impl, &l, err), err);
    if (r < 0) {
        kiln_store_secret_list_release(&l);
        return r;
    }
    *ret = l;
    return r;
}

int kiln_store_secret_get_value(struct kiln_store *st, const char *name, char **ret,
                                struct kiln_error **err)
{
    int r = check_name("secret", name, err);
    if (r < 0)
        return r;
    char *v = NULL;
    r = backend(st->ops->secret_get_value(st->impl, name, &v, err), err);
    if (r < 0) {
        free(v);
        return r;
    }
    *ret = v;
    return r;
}

int kiln_store_secret_delete(struct kiln_store *st, const char *name, struct kiln_error **err)
{
    int r = check_name("secret", name, err);
    if (r < 0)
        return r;
    return backend(st->ops->secret_delete(st->impl, name, err), err);
}

/* ---- images ---- */

int kiln_store_image_add(struct kiln_store *st, const char *url, enum kiln_image_source source,
                         struct kiln_error **err)
{
    if (!url || !*url)
        return kiln_error_set(err, KILN_EINVAL, 0, "store: empty image URL");
    if (source != KILN_IMAGE_BUILT && source != KILN_IMAGE_ADMIN)
        return kiln_error_set(err, KILN_EINVAL, 0, "store: image '%s': unknown source %d", url,
                              (int)source);
    return backend(st->ops->image_add(st->impl, url, source, err), err);
}

int kiln_store_image_list(struct kiln_store *st, struct kiln_store_image_list *ret,
                          struct kiln_error **err)
{
    struct kiln_store_image_list l = {0};
    int r = backend(st->ops->image_list(st->impl, &l, err), err);
    if (r < 0) {
        kiln_store_image_list_release(&l);
        return r;
    }
    *ret = l;
    return r;
}

/* ---- settings ---- */

int kiln_store_setting_get(struct kiln_store *st, const char *key, char **ret,
                           struct kiln_error **err)
{
    int r = check_name("setting", key, err);
    if (r < 0)
        return r;
    char *v = NULL;
    r = backend(st->ops->setting_get(st->impl, key, &v, err), err);
    if (r <= 0) {
        free(v);
        return r;
    }
    *ret = v;
    return r;
}

int kiln_store_setting_set(struct kiln_store *st, const char *key, const char *value,
                           struct kiln_error **err)
{
    int r = check_name("setting", key, err);
    if (r < 0)
        return r;
    return backend(st->ops->setting_set(st->impl, key, value, err), err);
}

int kiln_store_errctx(int r, struct kiln_error **err, const char *fmt, ...)
{
    if (r >= 0 || !err || !*err)
        return r;
    va_list ap;
    va_start(ap, fmt);
    _cleanup_free_ char *prefix = kiln_xvasprintf(fmt, ap);
    va_end(ap);
    kiln_error_prefix(err, "%s", prefix);
    return r;
}
