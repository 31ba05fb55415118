#include "util/common.h"

#include "oci/config.h"
#include "oci/digest.h"
#include "util/diag.h"

#define QUOTE_MAX 80
#define PATH_BUF  64

/* ---- helpers ---------------------------------------------------------------------------- */

__attribute__((format(printf, 4, 5))) static int fail(struct kiln_error **err, int code,
                                                      const char *path, const char *fmt, ...)
{
    if (!err)
        return -code;
    va_list ap;
    va_start(ap, fmt);
    _cleanup_free_ char *msg = kiln_xvasprintf(fmt, ap);
    va_end(ap);
    return kiln_error_set(err, code, 0, "%s: %s", path, msg);
}

static char *quote(const char *s)
{
    return kiln_diag_quote(s, QUOTE_MAX);
}

static bool digits(const char *s, int n, int *ret)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (s[i] - '0');
    }
    *ret = v;
    return true;
}

/* YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM|-HH:MM), as Go's time.RFC3339Nano reads it. */
static bool rfc3339_ok(const char *s)
{
    int y, mo, d, h, mi, sec, oh, om;
    if (strlen(s) < 20)
        return false;
    if (!digits(s, 4, &y) || s[4] != '-' || !digits(s + 5, 2, &mo) || s[7] != '-' ||
        !digits(s + 8, 2, &d) || (s[10] != 'T' && s[10] != 't') || !digits(s + 11, 2, &h) ||
        s[13] != ':' || !digits(s + 14, 2, &mi) || s[16] != ':' || !digits(s + 17, 2, &sec))
        return false;
    (void)y;
    if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60)
        return false;
    const char *p = s + 19;
    if (*p == '.') {
        p++;
        if (*p < '0' || *p > '9')
            return false;
        while (*p >= '0' && *p <= '9')
            p++;
    }
    if ((*p == 'Z' || *p == 'z') && p[1] == '\0')
        return true;
    if ((*p != '+' && *p != '-') || strlen(p) != 6)
        return false;
    return digits(p + 1, 2, &oh) && p[3] == ':' && digits(p + 4, 2, &om) && oh <= 23 && om <= 59;
}

/* The value of key, or NULL when absent or null. */
static json_t *field(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    return json_is_null(v) ? NULL : v;
}

/* ---- validation ------------------------------------------------------------------------- */

static int check_string(json_t *obj, const char *path, const char *key, bool required,
                        bool nonempty, struct kiln_error **err)
{
    char p[PATH_BUF];
    snprintf(p, sizeof(p), "%s%s%s", path, *path ? "." : "", key);
    json_t *v = field(obj, key);
    if (!v)
        return required ? fail(err, KILN_EINVAL, p, "missing") : 0;
    if (!json_is_string(v))
        return fail(err, KILN_EINVAL, p, "must be a string");
    if (nonempty && json_string_length(v) == 0)
        return fail(err, KILN_EINVAL, p, "must not be empty");
    return 0;
}

static int check_created(json_t *obj, const char *path, struct kiln_error **err)
{
    int r = check_string(obj, path, "created", false, false, err);
    if (r < 0)
        return r;
    const char *s = json_string_value(field(obj, "created"));
    if (s && !rfc3339_ok(s)) {
        char p[PATH_BUF];
        snprintf(p, sizeof(p), "%s%screated", path, *path ? "." : "");
        _cleanup_free_ char *q = err ? quote(s) : NULL;
        return fail(err, KILN_EINVAL, p, "invalid RFC 3339 timestamp '%s'", q);
    }
    return 0;
}

static int check_string_array(json_t *obj, const char *path, const char *key,
                              struct kiln_error **err)
{
    char p[PATH_BUF];
    snprintf(p, sizeof(p), "%s%s%s", path, *path ? "." : "", key);
    json_t *v = field(obj, key);
    if (!v)
        return 0;
    if (!json_is_array(v))
        return fail(err, KILN_EINVAL, p, "must be an array of strings");
    size_t i;
    json_t *item;
    json_array_foreach(v, i, item)
    {
        if (!json_is_string(item))
            return fail(err, KILN_EINVAL, p, "entry %zu must be a string", i);
    }
    return 0;
}

/* An object whose values all have to pass `ok`. */
static int check_object_of(json_t *obj, const char *path, const char *key, int (*ok)(json_t *),
                           const char *what, struct kiln_error **err)
{
    char p[PATH_BUF];
    snprintf(p, sizeof(p), "%s.%s", path, key);
    json_t *v = field(obj, key);
    if (!v)
        return 0;
    if (!json_is_object(v))
        return fail(err, KILN_EINVAL, p, "must be an object of %s", what);
    const char *k;
    json_t *val;
    json_object_foreach(v, k, val)
    {
        if (!ok(val)) {
            _cleanup_free_ char *q = err ? quote(k) : NULL;
            return fail(err, KILN_EINVAL, p, "value of '%s' must be %s", q, what);
        }
    }
    return 0;
}

static int is_string(json_t *v)
{
    return json_is_string(v);
}

static int is_object(json_t *v)
{
    return json_is_object(v);
}

static bool env_entry_ok(const char *s)
{
    const char *eq = strchr(s, '=');
    return eq && eq != s;
}

static int check_exec_config(json_t *root, struct kiln_error **err)
{
    json_t *cfg = field(root, "config");
    if (!cfg)
        return 0;
    if (!json_is_object(cfg))
        return fail(err, KILN_EINVAL, "config", "must be an object");
    int r;
    if ((r = check_string(cfg, "config", "User", false, false, err)) < 0 ||
        (r = check_string(cfg, "config", "WorkingDir", false, false, err)) < 0 ||
        (r = check_string(cfg, "config", "StopSignal", false, false, err)) < 0 ||
        (r = check_string_array(cfg, "config", "Env", err)) < 0 ||
        (r = check_string_array(cfg, "config", "Entrypoint", err)) < 0 ||
        (r = check_string_array(cfg, "config", "Cmd", err)) < 0 ||
        (r = check_object_of(cfg, "config", "Labels", is_string, "strings", err)) < 0 ||
        (r = check_object_of(cfg, "config", "ExposedPorts", is_object, "objects", err)) < 0 ||
        (r = check_object_of(cfg, "config", "Volumes", is_object, "objects", err)) < 0)
        return r;
    json_t *env = field(cfg, "Env");
    size_t i;
    json_t *item;
    json_array_foreach(env, i, item)
    {
        if (!env_entry_ok(json_string_value(item))) {
            char p[PATH_BUF];
            snprintf(p, sizeof(p), "config.Env[%zu]", i);
            _cleanup_free_ char *q = err ? quote(json_string_value(item)) : NULL;
            return fail(err, KILN_EINVAL, p, "must be 'NAME=value', got '%s'", q);
        }
    }
    return 0;
}

static int check_rootfs(json_t *root, struct kiln_error **err)
{
    json_t *rootfs = json_object_get(root, "rootfs");
    if (!rootfs)
        return fail(err, KILN_EINVAL, "rootfs", "missing");
    if (!json_is_object(rootfs))
        return fail(err, KILN_EINVAL, "rootfs", "must be an object");
    json_t *type = json_object_get(rootfs, "type");
    if (!json_is_string(type) || strcmp(json_string_value(type), "layers") != 0)
        return fail(err, KILN_EINVAL, "rootfs.type", "must be \"layers\"");
    json_t *ids = json_object_get(rootfs, "diff_ids");
    if (!ids)
        return fail(err, KILN_EINVAL, "rootfs.diff_ids", "missing");
    if (!json_is_array(ids))
        return fail(err, KILN_EINVAL, "rootfs.diff_ids", "must be an array of digests");
    if (json_array_size(ids) > KILN_IMAGE_CONFIG_MAX_LAYERS)
        return fail(err, KILN_ETOOBIG, "rootfs.diff_ids", "more than %d entries",
                    KILN_IMAGE_CONFIG_MAX_LAYERS);
    size_t i;
    json_t *item;
    json_array_foreach(ids, i, item)
    {
        if (!json_is_string(item))
            return fail(err, KILN_EINVAL, "rootfs.diff_ids", "entry %zu must be a string", i);
        int r = kiln_digest_validate(json_string_value(item), err);
        if (r < 0)
            return err ? kiln_error_prefix(err, "rootfs.diff_ids[%zu]", i) : r;
    }
    return 0;
}

static int check_history(json_t *root, struct kiln_error **err)
{
    json_t *h = field(root, "history");
    if (!h)
        return 0;
    if (!json_is_array(h))
        return fail(err, KILN_EINVAL, "history", "must be an array");
    if (json_array_size(h) > KILN_IMAGE_CONFIG_MAX_HISTORY)
        return fail(err, KILN_ETOOBIG, "history", "more than %d entries",
                    KILN_IMAGE_CONFIG_MAX_HISTORY);
    size_t i;
    json_t *e;
    json_array_foreach(h, i, e)
    {
        char p[PATH_BUF];
        snprintf(p, sizeof(p), "history[%zu]", i);
        if (!json_is_object(e))
            return fail(err, KILN_EINVAL, p, "must be an object");
        int r;
        if ((r = check_created(e, p, err)) < 0 ||
            (r = check_string(e, p, "created_by", false, false, err)) < 0 ||
            (r = check_string(e, p, "author", false, false, err)) < 0 ||
            (r = check_string(e, p, "comment", false, false, err)) < 0)
            return r;
        json_t *el = field(e, "empty_layer");
        if (el && !json_is_boolean(el)) {
            snprintf(p, sizeof(p), "history[%zu].empty_layer", i);
            return fail(err, KILN_EINVAL, p, "must be a boolean");
        }
    }
    return 0;
}

static int validate_root(json_t *root, struct kiln_error **err)
{
    if (!json_is_object(root))
        return kiln_error_set(err, KILN_EINVAL, 0, "image config must be a JSON object");
    int r;
    if ((r = check_string(root, "", "architecture", true, true, err)) < 0 ||
        (r = check_string(root, "", "os", true, true, err)) < 0 ||
        (r = check_string(root, "", "variant", false, false, err)) < 0 ||
        (r = check_string(root, "", "os.version", false, false, err)) < 0 ||
        (r = check_string_array(root, "", "os.features", err)) < 0 ||
        (r = check_string(root, "", "author", false, false, err)) < 0 ||
        (r = check_created(root, "", err)) < 0 || (r = check_exec_config(root, err)) < 0 ||
        (r = check_rootfs(root, err)) < 0 || (r = check_history(root, err)) < 0)
        return r;
    return 0;
}

/* ---- lifecycle -------------------------------------------------------------------------- */

int kiln_image_config_parse(const char *data, size_t len, struct kiln_image_config *ret,
                            struct kiln_error **err)
{
    if (len > KILN_IMAGE_CONFIG_MAX_SIZE)
        return kiln_error_set(err, KILN_ETOOBIG, 0, "image config is larger than %zu bytes",
                              KILN_IMAGE_CONFIG_MAX_SIZE);
    json_error_t jerr;
    json_t *root = json_loadb(data ? data : "", len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        if (!err)
            return -KILN_EINVAL;
        _cleanup_free_ char *q = quote(jerr.text);
        return kiln_error_set(err, KILN_EINVAL, 0, "invalid JSON at line %d, column %d: %s",
                              jerr.line, jerr.column, q);
    }
    int r = validate_root(root, err);
    if (r < 0) {
        json_decref(root);
        return r;
    }
    if (ret)
        ret->root = root;
    else
        json_decref(root);
    return 0;
}

int kiln_image_config_new(struct kiln_image_config *ret, const char *os, const char *arch,
                          struct kiln_error **err)
{
    if (!os || !*os || !arch || !*arch)
        return kiln_error_set(err, KILN_EINVAL, 0, "image config needs an os and an architecture");
    json_t *jos = json_string(os), *jarch = json_string(arch);
    if (!jos || !jarch) {
        json_decref(jos);
        json_decref(jarch);
        return kiln_error_set(err, KILN_EINVAL, 0, "os or architecture is not valid UTF-8");
    }
    json_t *root = json_object();
    json_object_set_new(root, "architecture", jarch);
    json_object_set_new(root, "os", jos);
    json_object_set_new(root, "config", json_object());
    json_t *rootfs = json_object();
    json_object_set_new(rootfs, "type", json_string("layers"));
    json_object_set_new(rootfs, "diff_ids", json_array());
    json_object_set_new(root, "rootfs", rootfs);
    json_object_set_new(root, "history", json_array());
    ret->root = root;
    return 0;
}

void kiln_image_config_copy(struct kiln_image_config *dst, const struct kiln_image_config *src)
{
    dst->root = src->root ? json_deep_copy(src->root) : NULL;
    if (src->root && !dst->root)
        abort(); /* only on allocation failure */
}

int kiln_image_config_validate(const struct kiln_image_config *c, struct kiln_error **err)
{
    return validate_root(c->root, err);
}

static int dump_cb(const char *buffer, size_t size, void *data)
{
    return kiln_buf_add(data, buffer, size) < 0 ? -1 : 0;
}

int kiln_image_config_serialize(const struct kiln_image_config *c, struct kiln_buf *out,
                                struct kiln_error **err)
{
    int r = validate_root(c->root, err);
    if (r < 0)
        return r;
    size_t before = out->len;
    if (json_dump_callback(c->root, dump_cb, out, JSON_COMPACT) < 0) {
        r = kiln_buf_finish(out, "image config", err);
        kiln_buf_truncate(out, before);
        return r < 0 ? r : kiln_error_set(err, KILN_EINTERNAL, 0, "cannot write JSON");
    }
    return 0;
}

void kiln_image_config_release(struct kiln_image_config *c)
{
    if (!c)
        return;
    json_decref(c->root);
    c->root = NULL;
}

/* ---- tree access ------------------------------------------------------------------------ */

static json_t *root_of(struct kiln_image_config *c)
{
    if (!json_is_object(c->root)) {
        json_decref(c->root);
        c->root = json_object();
    }
    return c->root;
}

/* config (the execution parameters), or NULL. */
static json_t *exec_config(const struct kiln_image_config *c)
{
    json_t *cfg = json_object_get(c->root, "config");
    return json_is_object(cfg) ? cfg : NULL;
}

/* obj[key] as an object, created (replacing null or another type) when needed. */
static json_t *ensure_object(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    if (!json_is_object(v)) {
        v = json_object();
        json_object_set_new(obj, key, v);
    }
    return v;
}

static json_t *ensure_array(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    if (!json_is_array(v)) {
        v = json_array();
        json_object_set_new(obj, key, v);
    }
    return v;
}

static json_t *ensure_exec_config(struct kiln_image_config *c)
{
    return ensure_object(root_of(c), "config");
}

/* ---- string fields ---------------------------------------------------------------------- */

static const struct {
    const char *key;
    bool in_config; /* under "config" */
    bool required;
} fields[] = {
    [KILN_IC_ARCHITECTURE] = {"architecture", false, true},
    [KILN_IC_OS] = {"os", false, true},
    [KILN_IC_VARIANT] = {"variant", false, false},
    [KILN_IC_OS_VERSION] = {"os.version", false, false},
    [KILN_IC_CREATED] = {"created", false, false},
    [KILN_IC_AUTHOR] = {"author", false, false},
    [KILN_IC_USER] = {"User", true, false},
    [KILN_IC_WORKING_DIR] = {"WorkingDir", true, false},
    [KILN_IC_STOP_SIGNAL] = {"StopSignal", true, false},
};

const char *kiln_image_config_get(const struct kiln_image_config *c, enum kiln_image_config_field f)
{
    if ((size_t)f >= KILN_ARRAY_SIZE(fields))
        return NULL;
    json_t *obj = fields[f].in_config ? exec_config(c) : c->root;
    return json_string_value(json_object_get(obj, fields[f].key));
}

int kiln_image_config_set(struct kiln_image_config *c, enum kiln_image_config_field f,
                          const char *value, struct kiln_error **err)
{
    if ((size_t)f >= KILN_ARRAY_SIZE(fields))
        return kiln_error_set(err, KILN_EINTERNAL, 0, "unknown image config field %d", (int)f);
    const char *key = fields[f].key;
    if (fields[f].required && (!value || !*value))
        return kiln_error_set(err, KILN_EINVAL, 0, "%s: must not be empty", key);
    if (value && f == KILN_IC_CREATED && !rfc3339_ok(value)) {
        _cleanup_free_ char *q = err ? quote(value) : NULL;
        return kiln_error_set(err, KILN_EINVAL, 0, "created: invalid RFC 3339 timestamp '%s'", q);
    }
    if (!value) {
        json_t *obj = fields[f].in_config ? exec_config(c) : c->root;
        if (obj)
            json_object_del(obj, key);
        return 0;
    }
    json_t *v = json_string(value);
    if (!v)
        return kiln_error_set(err, KILN_EINVAL, 0, "%s: not valid UTF-8", key);
    json_t *obj = fields[f].in_config ? ensure_exec_config(c) : root_of(c);
    json_object_set_new(obj, key, v);
    return 0;
}

int kiln_image_config_set_created_time(struct kiln_image_config *c, time_t t,
                                       struct kiln_error **err)
{
    struct tm tm;
    char s[64];
    if (!gmtime_r(&t, &tm) || tm.tm_year + 1900 < 0 || tm.tm_year + 1900 > 9999 ||
        strftime(s, sizeof(s), "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        return kiln_error_set(err, KILN_EINVAL, 0, "created: time %lld out of range", (long long)t);
    return kiln_image_config_set(c, KILN_IC_CREATED, s, err);
}

/* ---- Env -------------------------------------------------------------------------------- */

/* Does entry "NAME=value" set `name`? */
static bool env_is(const char *entry, const char *name, size_t n)
{
    return entry && strncmp(entry, name, n) == 0 && entry[n] == '=';
}

void kiln_image_config_env(const struct kiln_image_config *c, struct kiln_strv *ret)
{
    json_t *env = json_object_get(exec_config(c), "Env");
    size_t i;
    json_t *item;
    json_array_foreach(env, i, item)
    {
        if (json_is_string(item))
            kiln_strv_push(ret, json_string_value(item));
    }
}

const char *kiln_image_config_env_get(const struct kiln_image_config *c, const char *name)
{
    if (!name || !*name)
        return NULL;
    size_t n = strlen(name);
    json_t *env = json_object_get(exec_config(c), "Env");
    const char *found = NULL;
    size_t i;
    json_t *item;
    json_array_foreach(env, i, item)
    {
        const char *e = json_string_value(item);
        if (env_is(e, name, n))
            found = e + n + 1;
    }
    return found;
}

int kiln_image_config_env_set(struct kiln_image_config *c, const char *name, const char *value,
                              struct kiln_error **err)
{
    if (!name || !*name || strchr(name, '=')) {
        _cleanup_free_ char *q = err ? quote(name ? name : "") : NULL;
        return kiln_error_set(err, KILN_EINVAL, 0, "invalid environment variable name '%s'", q);
    }
    _cleanup_free_ char *entry = kiln_xasprintf("%s=%s", name, value ? value : "");
    json_t *v = json_string(entry);
    if (!v)
        return kiln_error_set(err, KILN_EINVAL, 0, "environment variable is not valid UTF-8");
    json_t *env = ensure_array(ensure_exec_config(c), "Env");
    size_t n = strlen(name);
    bool done = false;
    for (size_t i = 0; i < json_array_size(env);) {
        if (!env_is(json_string_value(json_array_get(env, i)), name, n)) {
            i++;
        } else if (!done) {
            json_array_set_new(env, i++, v);
            done = true;
        } else {
            json_array_remove(env, i);
        }
    }
    if (!done)
        json_array_append_new(env, v);
    return 0;
}

void kiln_image_config_env_unset(struct kiln_image_config *c, const char *name)
{
    json_t *env = json_object_get(exec_config(c), "Env");
    if (!name || !json_is_array(env))
        return;
    size_t n = strlen(name);
    for (size_t i = 0; i < json_array_size(env);) {
        if (env_is(json_string_value(json_array_get(env, i)), name, n))
            json_array_remove(env, i);
        else
            i++;
    }
}

/* ---- Entrypoint / Cmd ------------------------------------------------------------------- */

static int get_argv(const struct kiln_image_config *c, const char *key, struct kiln_strv *ret)
{
    json_t *a = json_object_get(exec_config(c), key);
    if (!json_is_array(a))
        return 0;
    size_t i;
    json_t *item;
    json_array_foreach(a, i, item)
    {
        if (json_is_string(item))
            kiln_strv_push(ret, json_string_value(item));
    }
    return 1;
}

static int set_argv(struct kiln_image_config *c, const char *key, const struct kiln_strv *argv,
                    struct kiln_error **err)
{
    if (!argv) {
        json_t *cfg = exec_config(c);
        if (cfg)
            json_object_del(cfg, key);
        return 0;
    }
    json_t *a = json_array();
    for (size_t i = 0; i < argv->n; i++) {
        json_t *v = json_string(argv->v[i]);
        if (!v) {
            json_decref(a);
            return kiln_error_set(err, KILN_EINVAL, 0, "config.%s[%zu]: not valid UTF-8", key, i);
        }
        json_array_append_new(a, v);
    }
    json_object_set_new(ensure_exec_config(c), key, a);
    return 0;
}

int kiln_image_config_entrypoint(const struct kiln_image_config *c, struct kiln_strv *ret)
{
    return get_argv(c, "Entrypoint", ret);
}

int kiln_image_config_cmd(const struct kiln_image_config *c, struct kiln_strv *ret)
{
    return get_argv(c, "Cmd", ret);
}

int kiln_image_config_set_entrypoint(struct kiln_image_config *c, const struct kiln_strv *argv,
                                     struct kiln_error **err)
{
    return set_argv(c, "Entrypoint", argv, err);
}

int kiln_image_config_set_cmd(struct kiln_image_config *c, const struct kiln_strv *argv,
                              struct kiln_error **err)
{
    return set_argv(c, "Cmd", argv, err);
}

/* ---- Labels ----------------------------------------------------------------------------- */

json_t *kiln_image_config_labels(const struct kiln_image_config *c)
{
    json_t *l = json_object_get(exec_config(c), "Labels");
    return json_is_object(l) ? l : NULL;
}

const char *kiln_image_config_label(const struct kiln_image_config *c, const char *key)
{
    if (!key)
        return NULL;
    return json_string_value(json_object_get(kiln_image_config_labels(c), key));
}

int kiln_image_config_set_label(struct kiln_image_config *c, const char *key, const char *value,
                                struct kiln_error **err)
{
    if (!key || !*key)
        return kiln_error_set(err, KILN_EINVAL, 0, "label key is empty");
    if (!value) {
        json_t *l = kiln_image_config_labels(c);
        if (l)
            json_object_del(l, key);
        return 0;
    }
    json_t *v = json_string(value);
    if (!v)
        return kiln_error_set(err, KILN_EINVAL, 0, "label value is not valid UTF-8");
    /* check the key before creating anything */
    json_t *probe = json_object();
    int bad = json_object_set(probe, key, v);
    json_decref(probe);
    if (bad < 0) {
        json_decref(v);
        return kiln_error_set(err, KILN_EINVAL, 0, "label key is not valid UTF-8");
    }
    json_object_set_new(ensure_object(ensure_exec_config(c), "Labels"), key, v);
    return 0;
}

/* ---- ExposedPorts / Volumes ------------------------------------------------------------- */

static void object_keys(json_t *obj, struct kiln_strv *ret)
{
    if (!json_is_object(obj))
        return;
    const char *k;
    json_t *v;
    json_object_foreach(obj, k, v) kiln_strv_push(ret, k);
}

void kiln_image_config_exposed_ports(const struct kiln_image_config *c, struct kiln_strv *ret)
{
    object_keys(json_object_get(exec_config(c), "ExposedPorts"), ret);
}

void kiln_image_config_volumes(const struct kiln_image_config *c, struct kiln_strv *ret)
{
    object_keys(json_object_get(exec_config(c), "Volumes"), ret);
}

/* A port number 1-65535 of 1-5 digits at s[0..n); -1 when not. */
static long port_number(const char *s, size_t n)
{
    if (n == 0 || n > 5)
        return -1;
    long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v >= 1 && v <= 65535 ? v : -1;
}

static bool port_spec_ok(const char *s)
{
    size_t n = strcspn(s, "/");
    const char *dash = memchr(s, '-', n);
    if (dash) {
        long a = port_number(s, (size_t)(dash - s));
        long b = port_number(dash + 1, n - (size_t)(dash - s) - 1);
        if (a < 0 || b < 0 || a > b)
            return false;
    } else if (port_number(s, n) < 0) {
        return false;
    }
    if (!s[n])
        return true;
    const char *proto = s + n + 1;
    return strcmp(proto, "tcp") == 0 || strcmp(proto, "udp") == 0 || strcmp(proto, "sctp") == 0;
}

int kiln_image_config_add_exposed_port(struct kiln_image_config *c, const char *port,
                                       struct kiln_error **err)
{
    if (!port || !port_spec_ok(port)) {
        _cleanup_free_ char *q = err ? quote(port ? port : "") : NULL;
        return kiln_error_set(err, KILN_EINVAL, 0,
                              "invalid exposed port '%s': want PORT[/tcp|udp|sctp]", q);
    }
    _cleanup_free_ char *key =
        strchr(port, '/') ? kiln_xstrdup(port) : kiln_xasprintf("%s/tcp", port);
    json_t *ports = ensure_object(ensure_exec_config(c), "ExposedPorts");
    if (!json_object_get(ports, key))
        json_object_set_new(ports, key, json_object());
    return 0;
}

int kiln_image_config_add_volume(struct kiln_image_config *c, const char *path,
                                 struct kiln_error **err)
{
    if (!path || path[0] != '/') {
        _cleanup_free_ char *q = err ? quote(path ? path : "") : NULL;
        return kiln_error_set(err, KILN_EINVAL, 0, "invalid volume '%s': not an absolute path", q);
    }
    json_t *probe = json_string(path);
    if (!probe)
        return kiln_error_set(err, KILN_EINVAL, 0, "volume path is not valid UTF-8");
    json_decref(probe);
    json_t *vols = ensure_object(ensure_exec_config(c), "Volumes");
    if (!json_object_get(vols, path))
        json_object_set_new(vols, path, json_object());
    return 0;
}

/* ---- rootfs.diff_ids -------------------------------------------------------------------- */

static json_t *diff_ids(const struct kiln_image_config *c)
{
    json_t *a = json_object_get(json_object_get(c->root, "rootfs"), "diff_ids");
    return json_is_array(a) ? a : NULL;
}

size_t kiln_image_config_n_diff_ids(const struct kiln_image_config *c)
{
    return json_array_size(diff_ids(c));
}

const char *kiln_image_config_diff_id(const struct kiln_image_config *c, size_t i)
{
    return json_string_value(json_array_get(diff_ids(c), i));
}

int kiln_image_config_add_diff_id(struct kiln_image_config *c, const char *digest,
                                  struct kiln_error **err)
{
    int r = kiln_digest_validate(digest, err);
    if (r < 0)
        return r;
    if (kiln_image_config_n_diff_ids(c) >= KILN_IMAGE_CONFIG_MAX_LAYERS)
        return kiln_error_set(err, KILN_ETOOBIG, 0, "rootfs.diff_ids: more than %d entries",
                              KILN_IMAGE_CONFIG_MAX_LAYERS);
    json_t *rootfs = ensure_object(root_of(c), "rootfs");
    json_t *type = json_object_get(rootfs, "type");
    if (!json_is_string(type) || strcmp(json_string_value(type), "layers") != 0)
        json_object_set_new(rootfs, "type", json_string("layers"));
    json_array_append_new(ensure_array(rootfs, "diff_ids"), json_string(digest));
    return 0;
}

/* ---- history ---------------------------------------------------------------------------- */

static json_t *history(const struct kiln_image_config *c)
{
    json_t *h = json_object_get(c->root, "history");
    return json_is_array(h) ? h : NULL;
}

size_t kiln_image_config_n_history(const struct kiln_image_config *c)
{
    return json_array_size(history(c));
}

int kiln_image_config_history(const struct kiln_image_config *c, size_t i, struct kiln_history *ret)
{
    json_t *e = json_array_get(history(c), i);
    if (!e)
        return -KILN_ENOTFOUND;
    ret->created = json_string_value(json_object_get(e, "created"));
    ret->created_by = json_string_value(json_object_get(e, "created_by"));
    ret->author = json_string_value(json_object_get(e, "author"));
    ret->comment = json_string_value(json_object_get(e, "comment"));
    ret->empty_layer = json_is_true(json_object_get(e, "empty_layer"));
    return 0;
}

int kiln_image_config_add_history(struct kiln_image_config *c, const struct kiln_history *h,
                                  struct kiln_error **err)
{
    if (h->created && !rfc3339_ok(h->created)) {
        _cleanup_free_ char *q = err ? quote(h->created) : NULL;
        return kiln_error_set(err, KILN_EINVAL, 0, "history: invalid RFC 3339 timestamp '%s'", q);
    }
    if (kiln_image_config_n_history(c) >= KILN_IMAGE_CONFIG_MAX_HISTORY)
        return kiln_error_set(err, KILN_ETOOBIG, 0, "history: more than %d entries",
                              KILN_IMAGE_CONFIG_MAX_HISTORY);
    static const char *const keys[] = {"created", "created_by", "author", "comment"};
    const char *vals[] = {h->created, h->created_by, h->author, h->comment};
    json_t *e = json_object();
    for (size_t i = 0; i < KILN_ARRAY_SIZE(keys); i++) {
        if (!vals[i])
            continue;
        json_t *v = json_string(vals[i]);
        if (!v) {
            json_decref(e);
            return kiln_error_set(err, KILN_EINVAL, 0, "history: %s is not valid UTF-8", keys[i]);
        }
        json_object_set_new(e, keys[i], v);
    }
    if (h->empty_layer)
        json_object_set_new(e, "empty_layer", json_true());
    json_array_append_new(ensure_array(root_of(c), "history"), e);
    return 0;
}
