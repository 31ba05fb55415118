#include "util/common.h"
#include "spec/imagespec.h"

#include "oci/reference.h"
#include "spec/apt.h"
#include "spec/conda.h"
#include "spec/dns.h"
#include "spec/pip.h"
#include "util/yaml.h"

static const char *const kind_names[KILN_PKG_KINDS] = {"apt", "conda", "pip"};

const char *kiln_pkg_kind_name(enum kiln_pkg_kind kind)
{
    return kind < KILN_PKG_KINDS ? kind_names[kind] : "?";
}

struct kiln_spec *kiln_spec_new(void)
{
    struct kiln_spec *s = kiln_xcalloc(1, sizeof(*s));
    s->name = kiln_xstrdup("");
    s->base_image = kiln_xstrdup("");
    return s;
}

void kiln_spec_free(struct kiln_spec *s)
{
    if (!s)
        return;
    free(s->name);
    free(s->base_image);
    free(s->pull_secret);
    free(s->description);
    free(s->update_time);
    for (int k = 0; k < KILN_PKG_KINDS; k++) {
        kiln_strv_release(&s->pkgs[k]);
        free(s->pkg_line[k]);
    }
    free(s);
}

void kiln_spec_freep(struct kiln_spec **s)
{
    kiln_spec_free(*s);
    *s = NULL;
}

static char *dup_or_null(const char *s)
{
    return s ? kiln_xstrdup(s) : NULL;
}

struct kiln_spec *kiln_spec_dup(const struct kiln_spec *s)
{
    struct kiln_spec *d = kiln_xcalloc(1, sizeof(*d));
    d->name = kiln_xstrdup(s->name);
    d->base_image = kiln_xstrdup(s->base_image);
    d->pull_secret = dup_or_null(s->pull_secret);
    d->description = dup_or_null(s->description);
    d->update_time = dup_or_null(s->update_time);
    d->shape = s->shape;
    for (int k = 0; k < KILN_PKG_KINDS; k++) {
        kiln_strv_copy(&d->pkgs[k], &s->pkgs[k]);
        if (s->pkg_line[k]) {
            size_t n = s->pkgs[k].n ? s->pkgs[k].n : 1;
            d->pkg_line[k] = kiln_xreallocarray(NULL, n, sizeof(int));
            memcpy(d->pkg_line[k], s->pkg_line[k], s->pkgs[k].n * sizeof(int));
        }
    }
    return d;
}

/* ---- field paths ---- */

enum field { F_NAME, F_BASE, F_SECRET, F_DESC, F_UPDATE, F_PACKAGES };

static const char *field_path(enum kiln_spec_shape shape, enum field f)
{
    static const char *const kiln[] = {"name",        "baseImage",  "pullSecret",
                                       "description", "updateTime", "packages"};
    static const char *const crd[] = {"metadata.name",   "spec.baseImage",
                                      "spec.pullSecret", "metadata.annotations.description",
                                      "spec.updateTime", "spec.packages"};
    return shape == KILN_SPEC_SHAPE_CRD ? crd[f] : kiln[f];
}

/* ---- load ---- */

struct loadctx {
    struct kiln_diags *diags;
    size_t problems;
};

__attribute__((format(printf, 4, 5))) static void problem(struct loadctx *c, int line,
                                                          const char *field, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    _cleanup_free_ char *msg = kiln_xvasprintf(fmt, ap);
    va_end(ap);
    c->problems++;
    if (c->diags)
        kiln_diags_add(c->diags, line, field, "%s", msg);
}

/* Read an optional string field; JSON null counts as absent. */
static void get_string(struct loadctx *c, const json_t *obj, const char *key, const char *path,
                       char **dst)
{
    const json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v))
        return;
    if (!json_is_string(v)) {
        problem(c, 0, path, "must be a string");
        return;
    }
    if (strlen(json_string_value(v)) != json_string_length(v)) {
        problem(c, 0, path, "must not contain a NUL byte");
        return;
    }
    free(*dst);
    *dst = kiln_xstrdup(json_string_value(v));
}

static void check_keys(struct loadctx *c, const json_t *obj, const char *prefix,
                       const char *const *allowed)
{
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)obj, key, v)
    {
        bool ok = false;
        for (const char *const *a = allowed; *a; a++)
            if (!strcmp(*a, key))
                ok = true;
        if (!ok) {
            _cleanup_free_ char *q = kiln_diag_quote(key, 64);
            _cleanup_free_ char *path =
                prefix[0] ? kiln_xasprintf("%s.%s", prefix, q) : kiln_xstrdup(q);
            problem(c, 0, path, "unknown field");
        }
    }
}

static void add_pkg(struct kiln_spec *s, enum kiln_pkg_kind k, const char *pkg, size_t len,
                    int line)
{
    kiln_strv_push_take(&s->pkgs[k], kiln_xstrndup(pkg, len));
    if (line) {
        s->pkg_line[k] = kiln_xreallocarray(s->pkg_line[k], s->pkgs[k].n, sizeof(int));
        s->pkg_line[k][s->pkgs[k].n - 1] = line;
    }
}

static bool is_blank(char ch)
{
    return ch == ' ' || ch == '\t' || ch == '\r';
}

/* Split a one-package-per-line string; blank lines dropped, spaces trimmed. */
static void load_pkg_text(struct kiln_spec *s, enum kiln_pkg_kind k, const char *text, size_t len)
{
    int line = 0;
    size_t i = 0;
    while (i <= len) {
        size_t start = i;
        while (i < len && text[i] != '\n')
            i++;
        size_t end = i;
        line++;
        while (start < end && is_blank(text[start]))
            start++;
        while (end > start && is_blank(text[end - 1]))
            end--;
        if (end > start && s->pkgs[k].n <= KILN_SPEC_MAX_PACKAGES)
            add_pkg(s, k, text + start, end - start, line);
        i++;
    }
    if (!s->pkg_line[k])
        s->pkg_line[k] = kiln_xcalloc(1, sizeof(int)); /* marks "came as text" */
}

static void load_packages(struct loadctx *c, struct kiln_spec *s, const json_t *pk)
{
    const char *base = field_path(s->shape, F_PACKAGES);
    if (!pk || json_is_null(pk))
        return;
    if (!json_is_object(pk)) {
        problem(c, 0, base, "must be a mapping with apt, conda and pip lists");
        return;
    }
    static const char *const allowed[] = {"apt", "conda", "pip", NULL};
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)pk, key, v)
    {
        bool known = false;
        for (const char *const *a = allowed; *a; a++)
            known |= !strcmp(*a, key);
        if (!known) {
            _cleanup_free_ char *q = kiln_diag_quote(key, 64);
            _cleanup_free_ char *path = kiln_xasprintf("%s.%s", base, q);
            problem(c, 0, path, "unknown package kind (expected apt, conda or pip)");
        }
    }
    for (int k = 0; k < KILN_PKG_KINDS; k++) {
        const json_t *list = json_object_get(pk, kind_names[k]);
        _cleanup_free_ char *path = kiln_xasprintf("%s.%s", base, kind_names[k]);
        if (!list || json_is_null(list))
            continue;
        if (json_is_string(list)) {
            if (strlen(json_string_value(list)) != json_string_length(list)) {
                problem(c, 0, path, "must not contain a NUL byte");
                continue;
            }
            load_pkg_text(s, k, json_string_value(list), json_string_length(list));
        } else if (json_is_array(list)) {
            size_t i;
            json_t *item;
            json_array_foreach(list, i, item)
            {
                if (i >= KILN_SPEC_MAX_PACKAGES)
                    break;
                if (!json_is_string(item)) {
                    _cleanup_free_ char *ipath = kiln_xasprintf("%s[%zu]", path, i);
                    problem(c, 0, ipath, "must be a string");
                    continue;
                }
                if (strlen(json_string_value(item)) != json_string_length(item)) {
                    _cleanup_free_ char *ipath = kiln_xasprintf("%s[%zu]", path, i);
                    problem(c, 0, ipath, "must not contain a NUL byte");
                    continue;
                }
                add_pkg(s, k, json_string_value(item), json_string_length(item), 0);
            }
            if (json_array_size(list) > KILN_SPEC_MAX_PACKAGES)
                kiln_strv_push(&s->pkgs[k], ""); /* so the count check below fires */
        } else {
            problem(c, 0, path, "must be a list of strings or one string with a package per line");
            continue;
        }
        if (s->pkgs[k].n > KILN_SPEC_MAX_PACKAGES)
            problem(c, 0, path, "more than %d packages", KILN_SPEC_MAX_PACKAGES);
    }
}

static void load_kiln(struct loadctx *c, struct kiln_spec *s, const json_t *root)
{
    static const char *const allowed[] = {"name",       "description", "baseImage", "pullSecret",
                                          "updateTime", "packages",    NULL};
    check_keys(c, root, "", allowed);
    get_string(c, root, "name", "name", &s->name);
    get_string(c, root, "description", "description", &s->description);
    get_string(c, root, "baseImage", "baseImage", &s->base_image);
    get_string(c, root, "pullSecret", "pullSecret", &s->pull_secret);
    get_string(c, root, "updateTime", "updateTime", &s->update_time);
    load_packages(c, s, json_object_get(root, "packages"));
}

static void load_crd(struct loadctx *c, struct kiln_spec *s, const json_t *root)
{
    static const char *const allowed[] = {"apiVersion", "kind", "metadata", "spec", "status", NULL};
    check_keys(c, root, "", allowed);

    const json_t *api = json_object_get(root, "apiVersion");
    if (!json_is_string(api))
        problem(c, 0, "apiVersion", "must be '%s'", KILN_CRD_API_VERSION);
    else if (strcmp(json_string_value(api), KILN_CRD_API_VERSION) != 0) {
        _cleanup_free_ char *q = kiln_diag_quote(json_string_value(api), 80);
        problem(c, 0, "apiVersion", "'%s' is not supported (expected '%s')", q,
                KILN_CRD_API_VERSION);
    }
    const json_t *kind = json_object_get(root, "kind");
    if (!json_is_string(kind))
        problem(c, 0, "kind", "must be '%s'", KILN_CRD_KIND);
    else if (strcmp(json_string_value(kind), KILN_CRD_KIND) != 0) {
        _cleanup_free_ char *q = kiln_diag_quote(json_string_value(kind), 80);
        problem(c, 0, "kind", "'%s' is not supported (expected '%s')", q, KILN_CRD_KIND);
    }

    const json_t *meta = json_object_get(root, "metadata");
    if (!json_is_object(meta)) {
        problem(c, 0, "metadata", "must be a mapping with a name");
    } else {
        /* Other metadata (namespace, labels, uid...) is the cluster's business: ignored. */
        get_string(c, meta, "name", "metadata.name", &s->name);
        const json_t *ann = json_object_get(meta, "annotations");
        if (json_is_object(ann))
            get_string(c, ann, "description", "metadata.annotations.description", &s->description);
        else if (ann && !json_is_null(ann))
            problem(c, 0, "metadata.annotations", "must be a mapping");
    }

    const json_t *spec = json_object_get(root, "spec");
    if (!json_is_object(spec)) {
        problem(c, 0, "spec", "must be a mapping with baseImage and packages");
        return;
    }
    static const char *const spec_allowed[] = {"baseImage", "pullSecret", "packages", "updateTime",
                                               NULL};
    check_keys(c, spec, "spec", spec_allowed);
    get_string(c, spec, "baseImage", "spec.baseImage", &s->base_image);
    get_string(c, spec, "pullSecret", "spec.pullSecret", &s->pull_secret);
    get_string(c, spec, "updateTime", "spec.updateTime", &s->update_time);
    load_packages(c, s, json_object_get(spec, "packages"));
}

int kiln_spec_from_json(const json_t *root, struct kiln_spec **ret, struct kiln_diags *diags,
                        struct kiln_error **err)
{
    struct kiln_diags local = KILN_DIAGS_INIT;
    struct loadctx c = {.diags = diags ? diags : &local};
    size_t before = c.diags->n;

    if (!json_is_object(root)) {
        kiln_diags_add(c.diags, 0, "", "a spec must be a mapping");
        c.problems++;
    } else {
        _cleanup_(kiln_spec_freep) struct kiln_spec *s = kiln_spec_new();
        if (json_object_get(root, "apiVersion") || json_object_get(root, "kind")) {
            s->shape = KILN_SPEC_SHAPE_CRD;
            load_crd(&c, s, root);
        } else {
            s->shape = KILN_SPEC_SHAPE_KILN;
            load_kiln(&c, s, root);
        }
        if (c.problems == 0) {
            *ret = TAKE_PTR(s);
            kiln_diags_release(&local);
            return 0;
        }
    }
    struct kiln_diags only_new = {c.diags->v + before, c.diags->n - before, 0};
    int r = kiln_diags_to_error(&only_new, err);
    kiln_diags_release(&local);
    return r < 0 ? r : -KILN_EINVAL;
}

int kiln_spec_load(const char *data, size_t len, struct kiln_spec **ret, struct kiln_diags *diags,
                   struct kiln_error **err)
{
    if (len > KILN_SPEC_MAX_BYTES)
        return kiln_error_set(err, KILN_ETOOBIG, 0, "spec is larger than %zu bytes (1 MiB)",
                              KILN_SPEC_MAX_BYTES);
    size_t i = 0;
    while (i < len && (data[i] == ' ' || data[i] == '\t' || data[i] == '\r' || data[i] == '\n'))
        i++;
    json_t *root = NULL;
    if (i < len && data[i] == '{') {
        json_error_t je;
        root = json_loadb(data, len, JSON_REJECT_DUPLICATES, &je);
        if (!root)
            return kiln_error_set(err, KILN_EINVAL, 0, "json: line %d column %d: %s", je.line,
                                  je.column, je.text);
    } else {
        int r = kiln_yaml_load(data, len, &root, err);
        if (r < 0)
            return r;
    }
    int r = kiln_spec_from_json(root, ret, diags, err);
    json_decref(root);
    return r;
}

/* ---- validate ---- */

static void pkg_path(const struct kiln_spec *s, enum kiln_pkg_kind k, size_t i, char **ret_path,
                     int *ret_line)
{
    *ret_path = kiln_xasprintf("%s.%s[%zu]", field_path(s->shape, F_PACKAGES), kind_names[k], i);
    *ret_line = s->pkg_line[k] && s->pkgs[k].n ? s->pkg_line[k][i] : 0;
}

static size_t validate_text(struct kiln_diags *d, const char *path, const char *v, size_t max,
                            bool multiline)
{
    if (strlen(v) > max) {
        kiln_diags_add(d, 0, path, "longer than %zu characters", max);
        return 1;
    }
    for (const char *p = v; *p; p++) {
        unsigned char ch = (unsigned char)*p;
        if ((ch < 0x20 && !(multiline && (ch == '\n' || ch == '\t'))) || ch == 0x7f) {
            kiln_diags_add(d, 0, path, "must not contain control characters");
            return 1;
        }
    }
    return 0;
}

size_t kiln_spec_validate(const struct kiln_spec *s, struct kiln_diags *d)
{
    size_t problems = 0;
    struct kiln_error *e = NULL;
    const char *path;

    path = field_path(s->shape, F_NAME);
    if (!*s->name) {
        kiln_diags_add(d, 0, path, "is required");
        problems++;
    } else if (kiln_dns_subdomain_check(s->name, &e) < 0) {
        _cleanup_free_ char *q = kiln_diag_quote(s->name, 80);
        kiln_diags_add(d, 0, path, "'%s' is not a valid name: %s", q, e->msg);
        problems++;
    }
    kiln_error_freep(&e);

    path = field_path(s->shape, F_BASE);
    if (!*s->base_image) {
        kiln_diags_add(d, 0, path, "is required");
        problems++;
    } else if (kiln_ref_parse(s->base_image, NULL, &e) < 0) {
        _cleanup_free_ char *q = kiln_diag_quote(s->base_image, 120);
        kiln_diags_add(d, 0, path, "'%s' is not a valid image reference: %s", q, e->msg);
        problems++;
    }
    kiln_error_freep(&e);

    path = field_path(s->shape, F_SECRET);
    if (s->pull_secret && *s->pull_secret && kiln_dns_subdomain_check(s->pull_secret, &e) < 0) {
        _cleanup_free_ char *q = kiln_diag_quote(s->pull_secret, 80);
        kiln_diags_add(d, 0, path, "'%s' is not a valid secret name: %s", q, e->msg);
        problems++;
    }
    kiln_error_freep(&e);

    if (s->description)
        problems += validate_text(d, field_path(s->shape, F_DESC), s->description,
                                  KILN_SPEC_MAX_DESCRIPTION, true);
    if (s->update_time)
        problems += validate_text(d, field_path(s->shape, F_UPDATE), s->update_time, 64, false);

    static const char *const what[KILN_PKG_KINDS] = {"apt package", "conda match spec",
                                                     "requirement"};
    for (int k = 0; k < KILN_PKG_KINDS; k++) {
        if (s->pkgs[k].n > KILN_SPEC_MAX_PACKAGES) {
            _cleanup_free_ char *p =
                kiln_xasprintf("%s.%s", field_path(s->shape, F_PACKAGES), kind_names[k]);
            kiln_diags_add(d, 0, p, "more than %d packages", KILN_SPEC_MAX_PACKAGES);
            problems++;
            continue;
        }
        for (size_t i = 0; i < s->pkgs[k].n; i++) {
            const char *pkg = s->pkgs[k].v[i];
            int r;
            switch (k) {
            case KILN_PKG_APT:
                r = kiln_apt_package_check(pkg, &e);
                break;
            case KILN_PKG_CONDA:
                r = kiln_conda_spec_parse(pkg, NULL, &e);
                break;
            default:
                r = kiln_pip_req_parse(pkg, NULL, &e);
                break;
            }
            if (r < 0) {
                _cleanup_free_ char *p = NULL;
                int line = 0;
                pkg_path(s, k, i, &p, &line);
                _cleanup_free_ char *q = kiln_diag_quote(pkg, 120);
                if (!*pkg)
                    kiln_diags_add(d, line, p, "empty package");
                else
                    kiln_diags_add(d, line, p, "'%s' is not a valid %s: %s", q, what[k],
                                   e ? e->msg : "invalid");
                problems++;
            }
            kiln_error_freep(&e);
        }
    }
    return problems;
}

int kiln_spec_parse(const char *data, size_t len, struct kiln_spec **ret, struct kiln_diags *diags,
                    struct kiln_error **err)
{
    _cleanup_(kiln_spec_freep) struct kiln_spec *s = NULL;
    int r = kiln_spec_load(data, len, &s, diags, err);
    if (r < 0)
        return r;
    struct kiln_diags local = KILN_DIAGS_INIT;
    struct kiln_diags *d = diags ? diags : &local;
    size_t before = d->n;
    if (kiln_spec_validate(s, d) > 0) {
        struct kiln_diags only_new = {d->v + before, d->n - before, 0};
        r = kiln_diags_to_error(&only_new, err);
        kiln_diags_release(&local);
        return r < 0 ? r : -KILN_EINVAL;
    }
    kiln_diags_release(&local);
    *ret = TAKE_PTR(s);
    return 0;
}

/* ---- write ---- */

static json_t *packages_json(const struct kiln_spec *s)
{
    json_t *pk = json_object();
    for (int k = 0; k < KILN_PKG_KINDS; k++) {
        json_t *list = json_array();
        for (size_t i = 0; i < s->pkgs[k].n; i++)
            json_array_append_new(list, json_string_nocheck(s->pkgs[k].v[i]));
        json_object_set_new(pk, kind_names[k], list);
    }
    return pk;
}

static void set_opt(json_t *obj, const char *key, const char *v)
{
    if (v)
        json_object_set_new(obj, key, json_string_nocheck(v));
}

json_t *kiln_spec_to_json(const struct kiln_spec *s, enum kiln_spec_shape shape)
{
    json_t *root = json_object();
    if (shape == KILN_SPEC_SHAPE_KILN) {
        json_object_set_new(root, "name", json_string_nocheck(s->name));
        set_opt(root, "description", s->description);
        json_object_set_new(root, "baseImage", json_string_nocheck(s->base_image));
        set_opt(root, "pullSecret", s->pull_secret);
        json_object_set_new(root, "packages", packages_json(s));
        set_opt(root, "updateTime", s->update_time);
        return root;
    }
    json_object_set_new(root, "apiVersion", json_string(KILN_CRD_API_VERSION));
    json_object_set_new(root, "kind", json_string(KILN_CRD_KIND));
    json_t *meta = json_object();
    json_object_set_new(meta, "name", json_string_nocheck(s->name));
    if (s->description) {
        json_t *ann = json_object();
        json_object_set_new(ann, "description", json_string_nocheck(s->description));
        json_object_set_new(meta, "annotations", ann);
    }
    json_object_set_new(root, "metadata", meta);
    json_t *spec = json_object();
    json_object_set_new(spec, "baseImage", json_string_nocheck(s->base_image));
    set_opt(spec, "pullSecret", s->pull_secret);
    json_object_set_new(spec, "packages", packages_json(s));
    set_opt(spec, "updateTime", s->update_time);
    json_object_set_new(root, "spec", spec);
    return root;
}

static int dump_cb(const char *buffer, size_t size, void *data)
{
    return kiln_buf_add(data, buffer, size) == 0 ? 0 : -1;
}

int kiln_spec_write(const struct kiln_spec *s, enum kiln_spec_shape shape,
                    enum kiln_spec_format format, struct kiln_buf *out, struct kiln_error **err)
{
    json_t *root = kiln_spec_to_json(s, shape);
    int r;
    if (format == KILN_SPEC_FORMAT_JSON) {
        r = json_dump_callback(root, dump_cb, out, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        if (r == 0)
            kiln_buf_addch(out, '\n');
        r = kiln_buf_finish(out, "spec output", err);
    } else {
        r = kiln_yaml_dump(root, out, err);
    }
    json_decref(root);
    return r;
}

bool kiln_spec_same_build(const struct kiln_spec *a, const struct kiln_spec *b)
{
    if (strcmp(a->base_image, b->base_image) != 0)
        return false;
    for (int k = 0; k < KILN_PKG_KINDS; k++)
        if (!kiln_strv_equal(&a->pkgs[k], &b->pkgs[k]))
            return false;
    return true;
}
