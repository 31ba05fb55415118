#include "util/common.h"
#include "service/apijson.h"

#include <pthread.h>

#include "oci/reference.h"
#include "spec/dns.h"
#include "spec/dockerfile.h"
#include "util/buf.h"

/* ---- bodies ---- */

int kiln_apijson_parse_body(const char *data, size_t len, json_t **ret, struct kiln_error **err)
{
    if (len > KILN_API_MAX_BODY)
        return kiln_error_set(err, KILN_ETOOBIG, 0, "request body is larger than %zu bytes",
                              KILN_API_MAX_BODY);
    if (len == 0)
        return kiln_error_set(err, KILN_EINVAL, 0,
                              "request body is empty (expected a json object)");
    json_error_t je;
    json_t *root = json_loadb(data ? data : "", len, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        _cleanup_free_ char *q = kiln_diag_quote(je.text, 160);
        return kiln_error_set(err, KILN_EINVAL, 0, "malformed json: line %d column %d: %s", je.line,
                              je.column, q);
    }
    if (!json_is_object(root)) {
        json_decref(root);
        return kiln_error_set(err, KILN_EINVAL, 0, "request body must be a json object");
    }
    *ret = root;
    return 0;
}

/* Blank out '#' comments of a one-package-per-line text, keeping every line. */
static char *strip_comments(const char *text, size_t len)
{
    char *out = kiln_xmalloc(len + 1);
    size_t o = 0;
    bool in_comment = false;
    for (size_t i = 0; i < len; i++) {
        char c = text[i];
        if (c == '\n') {
            in_comment = false;
            out[o++] = c;
            continue;
        }
        if (c == '#' && !in_comment) {
            /* as in pip's requirement files: "pkg @ url#frag" keeps its '#' */
            if (i == 0 || text[i - 1] == '\n' || text[i - 1] == ' ' || text[i - 1] == '\t' ||
                text[i - 1] == '\r')
                in_comment = true;
        }
        if (!in_comment)
            out[o++] = c;
    }
    out[o] = '\0';
    return out;
}

/* The packages object of a body in either shape, or NULL. */
static json_t *packages_of(json_t *root)
{
    if (json_object_get(root, "apiVersion") || json_object_get(root, "kind")) {
        json_t *spec = json_object_get(root, "spec");
        return json_is_object(spec) ? json_object_get(spec, "packages") : NULL;
    }
    return json_object_get(root, "packages");
}

int kiln_apijson_spec_from_body(const json_t *body, const char *path_name, struct kiln_spec **ret,
                                struct kiln_diags *diags, struct kiln_error **err)
{
    struct kiln_diags local = KILN_DIAGS_INIT;
    struct kiln_diags *d = diags ? diags : &local;
    size_t before = d->n;
    if (!json_is_object(body)) {
        kiln_diags_add(d, 0, "", "a spec must be a json object");
        goto fail;
    }

    /* A copy whose package texts lose their comments. */
    json_t *root = json_deep_copy(body);
    if (!root)
        return kiln_error_set(err, KILN_EINTERNAL, 0, "copy of the request body failed");
    json_t *pk = packages_of(root);
    if (json_is_object(pk)) {
        static const char *const kinds[] = {"apt", "conda", "pip"};
        for (size_t k = 0; k < KILN_ARRAY_SIZE(kinds); k++) {
            json_t *v = json_object_get(pk, kinds[k]);
            if (!json_is_string(v) || strchr(json_string_value(v), '#') == NULL)
                continue;
            /* a NUL inside is left for the spec reader to refuse */
            if (strlen(json_string_value(v)) != json_string_length(v))
                continue;
            _cleanup_free_ char *s = strip_comments(json_string_value(v), json_string_length(v));
            json_object_set_new(pk, kinds[k], json_string_nocheck(s));
        }
    }

    struct kiln_spec *s = NULL;
    int r = kiln_spec_from_json(root, &s, d, NULL);
    json_decref(root);
    if (r < 0)
        goto fail;

    const char *name_field = s->shape == KILN_SPEC_SHAPE_CRD ? "metadata.name" : "name";
    if (path_name) {
        if (!*s->name) {
            free(s->name);
            s->name = kiln_xstrdup(path_name);
        } else if (strcmp(s->name, path_name) != 0) {
            _cleanup_free_ char *q = kiln_diag_quote(s->name, 80);
            _cleanup_free_ char *p = kiln_diag_quote(path_name, 80);
            kiln_diags_add(d, 0, name_field, "'%s' differs from the name in the url '%s'", q, p);
        }
    }
    kiln_spec_validate(s, d);
    if (d->n > before) {
        kiln_spec_free(s);
        goto fail;
    }
    kiln_diags_release(&local);
    *ret = s;
    return 0;

fail:;
    struct kiln_diags only_new = {d->v + before, d->n - before, 0};
    r = kiln_diags_to_error(&only_new, err);
    kiln_diags_release(&local);
    return r < 0 ? r : kiln_error_set(err, KILN_EINVAL, 0, "invalid spec");
}

static void check_keys(const json_t *obj, const char *const *allowed, struct kiln_diags *d)
{
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)obj, key, v)
    {
        bool known = false;
        for (const char *const *a = allowed; *a; a++)
            known |= !strcmp(*a, key);
        if (!known) {
            _cleanup_free_ char *q = kiln_diag_quote(key, 64);
            kiln_diags_add(d, 0, q, "unknown field");
        }
    }
}

/* A required string field without NUL bytes, or NULL with a problem added. */
static const char *req_string(const json_t *obj, const char *key, struct kiln_diags *d)
{
    const json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) {
        kiln_diags_add(d, 0, key, "is required");
        return NULL;
    }
    if (!json_is_string(v)) {
        kiln_diags_add(d, 0, key, "must be a string");
        return NULL;
    }
    if (strlen(json_string_value(v)) != json_string_length(v)) {
        kiln_diags_add(d, 0, key, "must not contain a NUL byte");
        return NULL;
    }
    return json_string_value(v);
}

static int diags_fail(struct kiln_diags *d, size_t before, struct kiln_error **err)
{
    struct kiln_diags only_new = {d->v + before, d->n - before, 0};
    int r = kiln_diags_to_error(&only_new, err);
    return r < 0 ? r : kiln_error_set(err, KILN_EINVAL, 0, "invalid request");
}

int kiln_apijson_secret_from_body(const json_t *body, char **ret_name, char **ret_value,
                                  struct kiln_diags *diags, struct kiln_error **err)
{
    struct kiln_diags local = KILN_DIAGS_INIT;
    struct kiln_diags *d = diags ? diags : &local;
    size_t before = d->n;
    static const char *const allowed[] = {"name", "dockerconfigjson", NULL};
    check_keys(body, allowed, d);

    const char *name = req_string(body, "name", d);
    if (name) {
        struct kiln_error *e = NULL;
        if (kiln_dns_subdomain_check(name, &e) < 0) {
            _cleanup_free_ char *q = kiln_diag_quote(name, 80);
            kiln_diags_add(d, 0, "name", "'%s' is not a valid secret name: %s", q, e->msg);
        }
        kiln_error_free(e);
    }

    /* The value: never quoted in a message, whatever it holds. */
    json_t *doc = NULL;
    const json_t *v = json_object_get(body, "dockerconfigjson");
    if (!v || json_is_null(v)) {
        kiln_diags_add(d, 0, "dockerconfigjson", "is required");
    } else if (json_is_object(v)) {
        doc = json_incref((json_t *)v);
    } else if (!json_is_string(v)) {
        kiln_diags_add(d, 0, "dockerconfigjson", "must be a string holding a docker config json");
    } else if (json_string_length(v) > KILN_API_MAX_BODY) {
        kiln_diags_add(d, 0, "dockerconfigjson", "is larger than %zu bytes", KILN_API_MAX_BODY);
    } else {
        json_error_t je;
        doc = json_loadb(json_string_value(v), json_string_length(v), JSON_REJECT_DUPLICATES, &je);
        if (!doc)
            kiln_diags_add(d, 0, "dockerconfigjson", "is not valid json (line %d column %d)",
                           je.line, je.column);
    }
    if (doc) {
        const json_t *auths = json_object_get(doc, "auths");
        if (!json_is_object(doc) || !json_is_object(auths)) {
            kiln_diags_add(d, 0, "dockerconfigjson",
                           "must be a docker config json object with an \"auths\" object");
        } else {
            const char *key;
            json_t *entry;
            json_object_foreach((json_t *)auths, key, entry)
            {
                if (!json_is_object(entry)) {
                    _cleanup_free_ char *q = kiln_diag_quote(key, 80);
                    kiln_diags_add(d, 0, "dockerconfigjson", "auths entry '%s' must be an object",
                                   q);
                }
            }
        }
    }
    if (d->n > before) {
        json_decref(doc);
        int r = diags_fail(d, before, err);
        kiln_diags_release(&local);
        return r;
    }
    char *value = kiln_apijson_dump(doc, NULL);
    json_decref(doc);
    *ret_name = kiln_xstrdup(name);
    *ret_value = value;
    kiln_diags_release(&local);
    return 0;
}

int kiln_apijson_image_from_body(const json_t *body, char **ret_url, struct kiln_diags *diags,
                                 struct kiln_error **err)
{
    struct kiln_diags local = KILN_DIAGS_INIT;
    struct kiln_diags *d = diags ? diags : &local;
    size_t before = d->n;
    static const char *const allowed[] = {"url", NULL};
    check_keys(body, allowed, d);
    const char *url = req_string(body, "url", d);
    if (url) {
        struct kiln_error *e = NULL;
        if (kiln_ref_parse(url, NULL, &e) < 0) {
            _cleanup_free_ char *q = kiln_diag_quote(url, 120);
            kiln_diags_add(d, 0, "url", "'%s' is not a valid image reference: %s", q,
                           e ? e->msg : "invalid");
        }
        kiln_error_free(e);
    }
    if (d->n > before) {
        int r = diags_fail(d, before, err);
        kiln_diags_release(&local);
        return r;
    }
    *ret_url = kiln_xstrdup(url);
    kiln_diags_release(&local);
    return 0;
}

/* ---- out ---- */

/* Days since 1970-01-01 to a civil date (proleptic Gregorian; H. Hinnant's algorithm). */
static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

void kiln_apijson_format_time(int64_t ms, char out[32])
{
    /* by hand: gmtime_r takes glibc's time zone lock on every call */
    int64_t secs = ms / 1000, frac = ms % 1000;
    if (frac < 0) {
        frac += 1000;
        secs--;
    }
    int64_t days = secs / 86400, rem = secs % 86400;
    if (rem < 0) {
        rem += 86400;
        days--;
    }
    int64_t y;
    unsigned mo, d;
    civil_from_days(days, &y, &mo, &d);
    if (y < 0 || y > 9999) {
        y = 1970;
        mo = d = 1;
        rem = frac = 0;
    }
    unsigned v[7] = {(unsigned)y,
                     mo,
                     d,
                     (unsigned)(rem / 3600),
                     (unsigned)(rem / 60 % 60),
                     (unsigned)(rem % 60),
                     (unsigned)frac};
    char *p = out;
    static const char sep[7] = {'-', '-', 'T', ':', ':', '.', 'Z'};
    static const int width[7] = {4, 2, 2, 2, 2, 2, 3};
    for (int i = 0; i < 7; i++) {
        for (int k = width[i] - 1; k >= 0; k--) {
            p[k] = (char)('0' + v[i] % 10);
            v[i] /= 10;
        }
        p += width[i];
        *p++ = sep[i];
    }
    *p = '\0';
}

json_t *kiln_apijson_time(int64_t ms)
{
    if (ms == 0)
        return json_null();
    char t[32];
    kiln_apijson_format_time(ms, t);
    return json_string(t);
}

static json_t *str_or_null(const char *s)
{
    return s ? json_string_nocheck(s) : json_null();
}

/* A member of a stored short-form spec, copied, or null. */
static json_t *member_or_null(const json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    return v ? json_incref(v) : json_null();
}

static json_t *packages_out(const json_t *spec)
{
    const json_t *pk = json_object_get(spec, "packages");
    json_t *out = json_object();
    static const char *const kinds[] = {"apt", "conda", "pip"};
    for (size_t k = 0; k < KILN_ARRAY_SIZE(kinds); k++) {
        json_t *v = json_object_get(pk, kinds[k]);
        json_object_set_new(out, kinds[k], json_is_array(v) ? json_incref(v) : json_array());
    }
    return out;
}

void kiln_apijson_add_string(struct kiln_buf *b, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    kiln_buf_addch(b, '"');
    const char *run = s;
    for (const char *p = s; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        kiln_buf_add(b, run, (size_t)(p - run));
        run = p + 1;
        switch (c) {
        case '"':
            kiln_buf_adds(b, "\\\"");
            break;
        case '\\':
            kiln_buf_adds(b, "\\\\");
            break;
        case '\n':
            kiln_buf_adds(b, "\\n");
            break;
        case '\t':
            kiln_buf_adds(b, "\\t");
            break;
        case '\r':
            kiln_buf_adds(b, "\\r");
            break;
        default: {
            char u[7] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15], '\0'};
            kiln_buf_adds(b, u);
            break;
        }
        }
    }
    kiln_buf_adds(b, run);
    kiln_buf_addch(b, '"');
}

/* The stored spec's own fields as JSON members without the braces. */
static char *stored_fields(const char *spec_json)
{
    json_t *stored = spec_json ? json_loads(spec_json, 0, NULL) : NULL;
    if (!json_is_object(stored)) {
        json_decref(stored);
        stored = json_object();
    }
    json_t *o = json_object();
    json_object_set_new(o, "baseImage", member_or_null(stored, "baseImage"));
    json_object_set_new(o, "pullSecret", member_or_null(stored, "pullSecret"));
    json_object_set_new(o, "description", member_or_null(stored, "description"));
    json_object_set_new(o, "packages", packages_out(stored));
    if (json_object_get(stored, "updateTime"))
        json_object_set_new(o, "updateTime", member_or_null(stored, "updateTime"));
    size_t len = 0;
    char *text = kiln_apijson_dump(o, &len);
    json_decref(o);
    json_decref(stored);
    /* "{...}" -> "..." */
    memmove(text, text + 1, len - 2);
    text[len - 2] = '\0';
    return text;
}

#define CACHE_STRIPES 64

struct cache_slot {
    uint64_t hash;
    char *key;
    char *fields;
};

struct kiln_apijson_cache {
    size_t n;
    struct cache_slot *slots;
    pthread_mutex_t mu[CACHE_STRIPES];
};

struct kiln_apijson_cache *kiln_apijson_cache_new(size_t slots)
{
    struct kiln_apijson_cache *c = kiln_xcalloc(1, sizeof(*c));
    c->n = slots ? slots : 4096;
    c->slots = kiln_xcalloc(c->n, sizeof(*c->slots));
    for (int i = 0; i < CACHE_STRIPES; i++)
        pthread_mutex_init(&c->mu[i], NULL);
    return c;
}

void kiln_apijson_cache_free(struct kiln_apijson_cache *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->n; i++) {
        free(c->slots[i].key);
        free(c->slots[i].fields);
    }
    for (int i = 0; i < CACHE_STRIPES; i++)
        pthread_mutex_destroy(&c->mu[i]);
    free(c->slots);
    free(c);
}

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 14695981039346656037ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

/* Append the stored fields of spec_json, from the cache when it has them. */
static void add_stored_fields(struct kiln_buf *b, const char *spec_json,
                              struct kiln_apijson_cache *c)
{
    if (!c || !spec_json) {
        char *f = stored_fields(spec_json);
        kiln_buf_adds(b, f);
        free(f);
        return;
    }
    uint64_t h = fnv1a(spec_json);
    size_t i = (size_t)(h % c->n);
    struct cache_slot *slot = &c->slots[i];
    pthread_mutex_t *mu = &c->mu[i % CACHE_STRIPES];
    pthread_mutex_lock(mu);
    if (slot->key && slot->hash == h && !strcmp(slot->key, spec_json)) {
        kiln_buf_adds(b, slot->fields);
        pthread_mutex_unlock(mu);
        return;
    }
    pthread_mutex_unlock(mu);
    char *f = stored_fields(spec_json);
    kiln_buf_adds(b, f);
    char *key = kiln_xstrdup(spec_json);
    pthread_mutex_lock(mu);
    free(slot->key);
    free(slot->fields);
    slot->hash = h;
    slot->key = key;
    slot->fields = f;
    pthread_mutex_unlock(mu);
}

static void add_time(struct kiln_buf *b, int64_t ms)
{
    if (ms == 0) {
        kiln_buf_adds(b, "null");
        return;
    }
    char t[32];
    kiln_apijson_format_time(ms, t);
    kiln_buf_addch(b, '"');
    kiln_buf_adds(b, t);
    kiln_buf_addch(b, '"');
}

void kiln_apijson_spec_write(struct kiln_buf *b, const struct kiln_store_spec *s,
                             struct kiln_apijson_cache *cache)
{
    kiln_buf_adds(b, "{\"name\":");
    kiln_apijson_add_string(b, s->name ? s->name : "");
    kiln_buf_addch(b, ',');
    add_stored_fields(b, s->spec_json, cache);
    kiln_buf_adds(b, ",\"revision\":");
    kiln_apijson_add_string(b, s->revision);
    bool has_job = s->job_id != 0;
    kiln_buf_adds(b, ",\"status\":");
    if (has_job)
        kiln_apijson_add_string(b, kiln_job_phase_name(s->job_phase));
    else
        kiln_buf_adds(b, "null");
    kiln_buf_adds(b, ",\"image\":");
    if (has_job && s->job_phase == KILN_JOB_SUCCEEDED && s->job_image_url)
        kiln_apijson_add_string(b, s->job_image_url);
    else
        kiln_buf_adds(b, "null");
    if (has_job)
        kiln_buf_addf(b, ",\"jobId\":%lld", (long long)s->job_id);
    else
        kiln_buf_adds(b, ",\"jobId\":null");
    kiln_buf_adds(b, ",\"createdAt\":");
    add_time(b, s->created_ms);
    kiln_buf_adds(b, ",\"updatedAt\":");
    add_time(b, s->updated_ms);
    kiln_buf_addch(b, '}');
}

json_t *kiln_apijson_spec(const struct kiln_store_spec *s)
{
    struct kiln_buf b = KILN_BUF_INIT;
    kiln_apijson_spec_write(&b, s, NULL);
    json_t *o = json_loadb(b.buf, b.len, 0, NULL);
    kiln_buf_release(&b);
    return o ? o : json_object();
}

static json_t *dockerfile_of(const json_t *snapshot)
{
    if (!json_is_object(snapshot))
        return json_null();
    struct kiln_spec *s = NULL;
    if (kiln_spec_from_json(snapshot, &s, NULL, NULL) < 0)
        return json_null();
    struct kiln_buf b = KILN_BUF_INIT;
    json_t *out = json_null();
    if (kiln_dockerfile_render(s, NULL, &b, NULL) >= 0)
        out = json_string_nocheck(b.buf);
    kiln_buf_release(&b);
    kiln_spec_free(s);
    return out ? out : json_null();
}

json_t *kiln_apijson_job(const struct kiln_store_job *j, bool detail, int64_t now_ms)
{
    json_t *o = json_object();
    const char *spec = j->spec_name ? j->spec_name : "";
    json_object_set_new(o, "id", json_integer(j->id));
    json_object_set_new(o, "spec", json_string_nocheck(spec));
    json_object_set_new(o, "revision", json_string_nocheck(j->revision));
    _cleanup_free_ char *name = kiln_xasprintf("%s-%s", spec, j->revision);
    json_object_set_new(o, "name", json_string_nocheck(name));
    json_object_set_new(o, "phase", json_string(kiln_job_phase_name(j->phase)));
    json_object_set_new(o, "targetImage", str_or_null(j->target_image));
    json_object_set_new(o, "image",
                        j->phase == KILN_JOB_SUCCEEDED ? str_or_null(j->image_url) : json_null());
    json_object_set_new(o, "digest", str_or_null(j->image_digest));
    json_object_set_new(o, "error", str_or_null(j->error_message));
    json_object_set_new(o, "createdAt", kiln_apijson_time(j->created_ms));
    json_object_set_new(o, "startedAt", kiln_apijson_time(j->started_ms));
    json_object_set_new(o, "finishedAt", kiln_apijson_time(j->finished_ms));
    if (j->started_ms) {
        int64_t end = j->finished_ms ? j->finished_ms : now_ms;
        double secs = end > j->started_ms ? (double)(end - j->started_ms) / 1000.0 : 0.0;
        json_object_set_new(o, "durationSeconds", json_real(secs));
    } else {
        json_object_set_new(o, "durationSeconds", json_null());
    }
    json_object_set_new(o, "attempt", json_integer(j->attempt));
    json_object_set_new(o, "cancelRequested", json_boolean(j->cancel_requested));
    json_t *snap = j->spec_json ? json_loads(j->spec_json, 0, NULL) : NULL;
    if (detail)
        json_object_set_new(o, "dockerfile", dockerfile_of(snap));
    json_object_set_new(o, "specSnapshot", snap ? snap : json_null());
    return o;
}

json_t *kiln_apijson_list(json_t *items, int64_t total, size_t limit, size_t offset)
{
    json_t *o = json_object();
    json_object_set_new(o, "items", items ? items : json_array());
    json_object_set_new(o, "total", json_integer(total));
    json_object_set_new(o, "limit", json_integer((json_int_t)limit));
    json_object_set_new(o, "offset", json_integer((json_int_t)offset));
    return o;
}

json_t *kiln_apijson_error(const char *code, const char *message, const struct kiln_diags *diags)
{
    json_t *e = json_object();
    json_object_set_new(e, "code", json_string(code));
    /* messages may quote input: invalid UTF-8 must not make the error vanish */
    json_t *m = json_string(message);
    if (!m) {
        _cleanup_free_ char *q = kiln_diag_quote(message, 4096);
        m = json_string(q);
    }
    json_object_set_new(e, "message", m ? m : json_string("error"));
    if (diags && diags->n) {
        json_t *fields = json_array();
        for (size_t i = 0; i < diags->n; i++) {
            json_t *f = json_object();
            json_object_set_new(f, "field", json_string(diags->v[i].field));
            if (diags->v[i].line > 0)
                json_object_set_new(f, "line", json_integer(diags->v[i].line));
            json_t *fm = json_string(diags->v[i].message);
            if (!fm) {
                _cleanup_free_ char *q = kiln_diag_quote(diags->v[i].message, 4096);
                fm = json_string(q);
            }
            json_object_set_new(f, "message", fm);
            json_array_append_new(fields, f);
        }
        json_object_set_new(e, "fields", fields);
    }
    json_t *o = json_object();
    json_object_set_new(o, "error", e);
    return o;
}

static int dump_cb(const char *buffer, size_t size, void *data)
{
    return kiln_buf_add(data, buffer, size) == 0 ? 0 : -1;
}

char *kiln_apijson_dump(const json_t *v, size_t *ret_len)
{
    struct kiln_buf b = KILN_BUF_INIT;
    if (json_dump_callback(v, dump_cb, &b, JSON_COMPACT | JSON_PRESERVE_ORDER) < 0) {
        kiln_buf_release(&b);
        kiln_buf_adds(&b, "null");
    }
    return kiln_buf_detach(&b, ret_len);
}

int kiln_apijson_parse_uint(const char *s, uint64_t max, uint64_t *ret)
{
    if (!s || !*s || strlen(s) > 20)
        return -KILN_EINVAL;
    uint64_t v = 0;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return -KILN_EINVAL;
        unsigned digit = (unsigned)(*p - '0');
        if (v > (UINT64_MAX - digit) / 10)
            return -KILN_EINVAL;
        v = v * 10 + digit;
    }
    if (v > max)
        return -KILN_EINVAL;
    *ret = v;
    return 0;
}
