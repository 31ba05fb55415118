#include "util/common.h"

#include <strings.h>

#include "oci/digest.h"
#include "oci/manifest.h"
#include "util/diag.h"

#define QUOTE_MAX   80
#define PATH_BUF    64
#define URL_MAX_LEN 4096
#define MT_PART_MAX 127 /* RFC 6838 restricted-name */
#define CT_MAX_LEN  256 /* longest Content-Type looked at */

/* ---- errors ---------------------------------------------------------------------------- */

/*
 * Set *err to "<path>.<key>: <message>" (either part may be missing) and
 * return -code.
 */
__attribute__((format(printf, 5, 6))) static int
fail(struct kiln_error **err, int code, const char *path, const char *key, const char *fmt, ...)
{
    if (!err)
        return -code;
    va_list ap;
    va_start(ap, fmt);
    _cleanup_free_ char *msg = kiln_xvasprintf(fmt, ap);
    va_end(ap);
    const char *p = path ? path : "";
    const char *k = key ? key : "";
    if (!*p && !*k)
        return kiln_error_set(err, code, 0, "%s", msg);
    return kiln_error_set(err, code, 0, "%s%s%s: %s", p, (*p && *k) ? "." : "", k, msg);
}

/* Prefix an error already in *err with "<path>.<key>: ". */
static int prefix(struct kiln_error **err, int r, const char *path, const char *key)
{
    if (!err || !*err)
        return r;
    const char *p = path ? path : "";
    const char *k = key ? key : "";
    kiln_error_prefix(err, "%s%s%s", p, (*p && *k) ? "." : "", k);
    return r;
}

static char *quote(const char *s)
{
    return kiln_diag_quote(s, QUOTE_MAX);
}

/* ---- media types ------------------------------------------------------------------------ */

static bool is_alnum(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

static bool is_mt_char(char c)
{
    return is_alnum(c) || c == '!' || c == '#' || c == '$' || c == '&' || c == '^' || c == '_' ||
           c == '.' || c == '+' || c == '-';
}

/* RFC 6838 restricted-name of 1-127 characters; returns its length or 0. */
static size_t mt_part(const char *s)
{
    if (!is_alnum(s[0]))
        return 0;
    size_t i = 1;
    while (is_mt_char(s[i]) && i < MT_PART_MAX)
        i++;
    return i;
}

/* "type/subtype" without parameters, as the OCI descriptor spec asks. */
static bool mediatype_ok(const char *s)
{
    size_t n = mt_part(s);
    if (!n || s[n] != '/')
        return false;
    size_t m = mt_part(s + n + 1);
    return m && s[n + 1 + m] == '\0';
}

static enum kiln_manifest_kind kind_exact(const char *mt)
{
    if (!mt)
        return KILN_KIND_UNKNOWN;
    if (strcmp(mt, KILN_MT_OCI_MANIFEST) == 0 || strcmp(mt, KILN_MT_DOCKER_MANIFEST) == 0)
        return KILN_KIND_MANIFEST;
    if (strcmp(mt, KILN_MT_OCI_INDEX) == 0 || strcmp(mt, KILN_MT_DOCKER_MANIFEST_LIST) == 0)
        return KILN_KIND_INDEX;
    if (strcmp(mt, KILN_MT_DOCKER_SCHEMA1) == 0 || strcmp(mt, KILN_MT_DOCKER_SCHEMA1_SIGNED) == 0)
        return KILN_KIND_SCHEMA1;
    return KILN_KIND_UNKNOWN;
}

/* A Content-Type without parameters and surrounding blanks, lower case; NULL stays NULL. */
static char *normalize_content_type(const char *ct)
{
    if (!ct)
        return NULL;
    while (*ct == ' ' || *ct == '\t')
        ct++;
    size_t n = strcspn(ct, ";");
    while (n > 0 && (ct[n - 1] == ' ' || ct[n - 1] == '\t'))
        n--;
    char *s = kiln_xstrndup(ct, n);
    for (char *p = s; *p; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');
    return s;
}

static bool is_generic_content_type(const char *ct)
{
    return !ct || !*ct || strcmp(ct, "application/json") == 0 || strcmp(ct, "text/plain") == 0 ||
           strcmp(ct, "application/octet-stream") == 0 || strcmp(ct, "binary/octet-stream") == 0;
}

enum kiln_manifest_kind kiln_manifest_kind_of(const char *media_type)
{
    if (!media_type || strlen(media_type) > CT_MAX_LEN)
        return KILN_KIND_UNKNOWN;
    _cleanup_free_ char *n = normalize_content_type(media_type);
    return kind_exact(n);
}

enum kiln_compression kiln_manifest_layer_compression(const char *mt)
{
    if (!mt)
        return KILN_COMPRESSION_UNKNOWN;
    static const struct {
        const char *mt;
        enum kiln_compression c;
    } table[] = {
        {KILN_MT_OCI_LAYER_TAR, KILN_COMPRESSION_NONE},
        {KILN_MT_OCI_LAYER_ND_TAR, KILN_COMPRESSION_NONE},
        {KILN_MT_OCI_LAYER_TAR_GZ, KILN_COMPRESSION_GZIP},
        {KILN_MT_OCI_LAYER_ND_TAR_GZ, KILN_COMPRESSION_GZIP},
        {KILN_MT_DOCKER_LAYER, KILN_COMPRESSION_GZIP},
        {KILN_MT_DOCKER_FOREIGN_LAYER, KILN_COMPRESSION_GZIP},
        {KILN_MT_OCI_LAYER_TAR_ZST, KILN_COMPRESSION_ZSTD},
        {KILN_MT_OCI_LAYER_ND_TAR_ZST, KILN_COMPRESSION_ZSTD},
    };
    for (size_t i = 0; i < KILN_ARRAY_SIZE(table); i++)
        if (strcmp(mt, table[i].mt) == 0)
            return table[i].c;
    return KILN_COMPRESSION_UNKNOWN;
}

const char *kiln_manifest_media_type(const struct kiln_manifest *m)
{
    return m->media_type ? m->media_type : KILN_MT_OCI_MANIFEST;
}

const char *kiln_index_media_type(const struct kiln_index *idx)
{
    return idx->media_type ? idx->media_type : KILN_MT_OCI_INDEX;
}

/* ---- lifecycle -------------------------------------------------------------------------- */

void kiln_platform_free(struct kiln_platform *p)
{
    if (!p)
        return;
    free(p->architecture);
    free(p->os);
    free(p->os_version);
    kiln_strv_release(&p->os_features);
    free(p->variant);
    free(p);
}

static char *xstrdup_or_null(const char *s)
{
    return s ? kiln_xstrdup(s) : NULL;
}

struct kiln_platform *kiln_platform_copy(const struct kiln_platform *p)
{
    if (!p)
        return NULL;
    struct kiln_platform *c = kiln_xcalloc(1, sizeof(*c));
    c->architecture = xstrdup_or_null(p->architecture);
    c->os = xstrdup_or_null(p->os);
    c->os_version = xstrdup_or_null(p->os_version);
    kiln_strv_copy(&c->os_features, &p->os_features);
    c->variant = xstrdup_or_null(p->variant);
    return c;
}

char *kiln_platform_string(const struct kiln_platform *p)
{
    if (!p)
        return kiln_xstrdup("");
    bool v = p->variant && *p->variant;
    return kiln_xasprintf("%s/%s%s%s", p->os ? p->os : "", p->architecture ? p->architecture : "",
                          v ? "/" : "", v ? p->variant : "");
}

void kiln_descriptor_release(struct kiln_descriptor *d)
{
    if (!d)
        return;
    free(d->media_type);
    free(d->digest);
    kiln_strv_release(&d->urls);
    json_decref(d->annotations);
    kiln_platform_free(d->platform);
    free(d->artifact_type);
    *d = (struct kiln_descriptor)KILN_DESCRIPTOR_INIT;
}

void kiln_descriptor_copy(struct kiln_descriptor *dst, const struct kiln_descriptor *src)
{
    *dst = (struct kiln_descriptor)KILN_DESCRIPTOR_INIT;
    dst->media_type = xstrdup_or_null(src->media_type);
    dst->digest = xstrdup_or_null(src->digest);
    dst->size = src->size;
    kiln_strv_copy(&dst->urls, &src->urls);
    dst->annotations = src->annotations ? json_deep_copy(src->annotations) : NULL;
    if (src->annotations && !dst->annotations)
        abort(); /* json_deep_copy only fails on allocation failure */
    dst->platform = kiln_platform_copy(src->platform);
    dst->artifact_type = xstrdup_or_null(src->artifact_type);
}

const char *kiln_descriptor_annotation(const struct kiln_descriptor *d, const char *key)
{
    if (!d->annotations || !key)
        return NULL;
    return json_string_value(json_object_get(d->annotations, key));
}

int kiln_descriptor_set_annotation(struct kiln_descriptor *d, const char *key, const char *value,
                                   struct kiln_error **err)
{
    if (!key || !*key)
        return kiln_error_set(err, KILN_EINVAL, 0, "annotation key is empty");
    if (!value) {
        if (d->annotations)
            json_object_del(d->annotations, key);
        return 0;
    }
    json_t *v = json_string(value);
    if (!v)
        return kiln_error_set(err, KILN_EINVAL, 0, "annotation value is not valid UTF-8");
    if (!d->annotations)
        d->annotations = json_object();
    if (json_object_set_new(d->annotations, key, v) < 0)
        return kiln_error_set(err, KILN_EINVAL, 0, "annotation key is not valid UTF-8");
    return 0;
}

static void descriptors_free(struct kiln_descriptor *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        kiln_descriptor_release(&v[i]);
    free(v);
}

static void descriptor_free(struct kiln_descriptor *d)
{
    kiln_descriptor_release(d);
    free(d);
}

void kiln_manifest_release(struct kiln_manifest *m)
{
    if (!m)
        return;
    free(m->media_type);
    free(m->artifact_type);
    kiln_descriptor_release(&m->config);
    descriptors_free(m->layers, m->n_layers);
    descriptor_free(m->subject);
    json_decref(m->annotations);
    *m = (struct kiln_manifest)KILN_MANIFEST_INIT;
}

void kiln_manifest_add_layer(struct kiln_manifest *m, const struct kiln_descriptor *d)
{
    m->layers = kiln_xreallocarray(m->layers, m->n_layers + 1, sizeof(*m->layers));
    kiln_descriptor_copy(&m->layers[m->n_layers++], d);
}

void kiln_index_release(struct kiln_index *idx)
{
    if (!idx)
        return;
    free(idx->media_type);
    free(idx->artifact_type);
    descriptors_free(idx->manifests, idx->n_manifests);
    descriptor_free(idx->subject);
    json_decref(idx->annotations);
    *idx = (struct kiln_index)KILN_INDEX_INIT;
}

void kiln_index_add(struct kiln_index *idx, const struct kiln_descriptor *d)
{
    idx->manifests =
        kiln_xreallocarray(idx->manifests, idx->n_manifests + 1, sizeof(*idx->manifests));
    kiln_descriptor_copy(&idx->manifests[idx->n_manifests++], d);
}

void kiln_index_remove(struct kiln_index *idx, size_t i)
{
    if (i >= idx->n_manifests)
        return;
    kiln_descriptor_release(&idx->manifests[i]);
    memmove(&idx->manifests[i], &idx->manifests[i + 1],
            (idx->n_manifests - i - 1) * sizeof(*idx->manifests));
    idx->n_manifests--;
}

/* ---- JSON field access ------------------------------------------------------------------ */

/* The value of key, or NULL when absent or null (optional fields treat null as absent). */
static json_t *field(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    return json_is_null(v) ? NULL : v;
}

/* A string field: *ret borrowed from obj, NULL when absent and not required. */
static int get_string(json_t *obj, const char *path, const char *key, bool required,
                      const char **ret, struct kiln_error **err)
{
    json_t *v = field(obj, key);
    if (!v) {
        if (required)
            return fail(err, KILN_EINVAL, path, key, "missing");
        *ret = NULL;
        return 0;
    }
    if (!json_is_string(v))
        return fail(err, KILN_EINVAL, path, key, "must be a string");
    *ret = json_string_value(v);
    return 0;
}

static int get_nonempty_string(json_t *obj, const char *path, const char *key, const char **ret,
                               struct kiln_error **err)
{
    int r = get_string(obj, path, key, true, ret, err);
    if (r < 0)
        return r;
    if (!**ret)
        return fail(err, KILN_EINVAL, path, key, "must not be empty");
    return 0;
}

static int get_mediatype(json_t *obj, const char *path, const char *key, bool required,
                         const char **ret, struct kiln_error **err)
{
    int r = get_string(obj, path, key, required, ret, err);
    if (r < 0)
        return r;
    if (*ret && !mediatype_ok(*ret)) {
        _cleanup_free_ char *q = err ? quote(*ret) : NULL;
        return fail(err, KILN_EINVAL, path, key, "invalid media type '%s'", q);
    }
    return 0;
}

static int get_string_array(json_t *obj, const char *path, const char *key, size_t max,
                            struct kiln_strv *ret, struct kiln_error **err)
{
    json_t *v = field(obj, key);
    if (!v)
        return 0;
    if (!json_is_array(v))
        return fail(err, KILN_EINVAL, path, key, "must be an array of strings");
    if (json_array_size(v) > max)
        return fail(err, KILN_ETOOBIG, path, key, "more than %zu entries", max);
    size_t i;
    json_t *item;
    json_array_foreach(v, i, item)
    {
        if (!json_is_string(item))
            return fail(err, KILN_EINVAL, path, key, "entry %zu must be a string", i);
        kiln_strv_push(ret, json_string_value(item));
    }
    return 0;
}

static int parse_annotations(json_t *obj, const char *path, json_t **ret, struct kiln_error **err)
{
    json_t *v = field(obj, "annotations");
    *ret = NULL;
    if (!v)
        return 0;
    if (!json_is_object(v))
        return fail(err, KILN_EINVAL, path, "annotations", "must be an object of strings");
    const char *k;
    json_t *val;
    json_object_foreach(v, k, val)
    {
        if (!*k)
            return fail(err, KILN_EINVAL, path, "annotations", "empty key");
        if (!json_is_string(val)) {
            _cleanup_free_ char *q = err ? quote(k) : NULL;
            return fail(err, KILN_EINVAL, path, "annotations", "value of '%s' must be a string", q);
        }
    }
    *ret = json_incref(v);
    return 0;
}

/* scheme ":" rest, RFC 3986 scheme, no blanks or control characters. */
static bool url_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > URL_MAX_LEN)
        return false;
    if (!((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z')))
        return false;
    size_t i = 1;
    while (is_alnum(s[i]) || s[i] == '+' || s[i] == '-' || s[i] == '.')
        i++;
    if (s[i] != ':' || s[i + 1] == '\0')
        return false;
    for (; s[i]; i++)
        if ((unsigned char)s[i] <= 0x20 || s[i] == 0x7f)
            return false;
    return true;
}

/* ---- descriptors ------------------------------------------------------------------------ */

static int parse_platform(json_t *v, const char *path, struct kiln_platform **ret,
                          struct kiln_error **err)
{
    if (!json_is_object(v))
        return fail(err, KILN_EINVAL, path, "platform", "must be an object");
    char ppath[PATH_BUF + 16];
    snprintf(ppath, sizeof(ppath), "%s%splatform", path, *path ? "." : "");
    const char *arch, *os, *osv, *variant;
    int r;
    if ((r = get_nonempty_string(v, ppath, "architecture", &arch, err)) < 0 ||
        (r = get_nonempty_string(v, ppath, "os", &os, err)) < 0 ||
        (r = get_string(v, ppath, "os.version", false, &osv, err)) < 0 ||
        (r = get_string(v, ppath, "variant", false, &variant, err)) < 0)
        return r;
    struct kiln_strv features = KILN_STRV_INIT;
    r = get_string_array(v, ppath, "os.features", KILN_DESCRIPTOR_MAX_URLS, &features, err);
    if (r < 0) {
        kiln_strv_release(&features);
        return r;
    }
    struct kiln_platform *p = kiln_xcalloc(1, sizeof(*p));
    p->architecture = kiln_xstrdup(arch);
    p->os = kiln_xstrdup(os);
    p->os_version = xstrdup_or_null(osv);
    p->os_features = features;
    p->variant = xstrdup_or_null(variant);
    *ret = p;
    return 0;
}

static int parse_descriptor(json_t *v, const char *path, struct kiln_descriptor *ret,
                            struct kiln_error **err)
{
    if (!json_is_object(v))
        return fail(err, KILN_EINVAL, path, NULL, "must be an object");

    const char *mt, *digest, *at;
    int r;
    if ((r = get_mediatype(v, path, "mediaType", true, &mt, err)) < 0)
        return r;
    if ((r = get_string(v, path, "digest", true, &digest, err)) < 0)
        return r;
    if ((r = kiln_digest_validate(digest, err)) < 0)
        return prefix(err, r, path, "digest");
    json_t *size = json_object_get(v, "size");
    if (!size)
        return fail(err, KILN_EINVAL, path, "size", "missing");
    if (!json_is_integer(size) || json_integer_value(size) < 0)
        return fail(err, KILN_EINVAL, path, "size", "must be a non-negative integer");
    if ((r = get_mediatype(v, path, "artifactType", false, &at, err)) < 0)
        return r;

    struct kiln_descriptor d = KILN_DESCRIPTOR_INIT;
    r = get_string_array(v, path, "urls", KILN_DESCRIPTOR_MAX_URLS, &d.urls, err);
    for (size_t i = 0; r >= 0 && i < d.urls.n; i++)
        if (!url_ok(d.urls.v[i])) {
            _cleanup_free_ char *q = err ? quote(d.urls.v[i]) : NULL;
            r = fail(err, KILN_EINVAL, path, "urls", "invalid URL '%s'", q);
        }
    if (r >= 0)
        r = parse_annotations(v, path, &d.annotations, err);
    json_t *p = field(v, "platform");
    if (r >= 0 && p)
        r = parse_platform(p, path, &d.platform, err);
    if (r < 0) {
        kiln_descriptor_release(&d);
        return r;
    }
    d.media_type = kiln_xstrdup(mt);
    d.digest = kiln_xstrdup(digest);
    d.size = (int64_t)json_integer_value(size);
    d.artifact_type = xstrdup_or_null(at);
    *ret = d;
    return 0;
}

static int parse_descriptor_array(json_t *obj, const char *key, size_t max,
                                  struct kiln_descriptor **ret, size_t *ret_n,
                                  struct kiln_error **err)
{
    json_t *v = json_object_get(obj, key);
    if (!v)
        return fail(err, KILN_EINVAL, NULL, key, "missing");
    if (!json_is_array(v))
        return fail(err, KILN_EINVAL, NULL, key, "must be an array");
    size_t n = json_array_size(v);
    if (n > max)
        return fail(err, KILN_ETOOBIG, NULL, key, "more than %zu entries", max);
    struct kiln_descriptor *d = n ? kiln_xcalloc(n, sizeof(*d)) : NULL;
    for (size_t i = 0; i < n; i++) {
        char path[PATH_BUF];
        snprintf(path, sizeof(path), "%s[%zu]", key, i);
        int r = parse_descriptor(json_array_get(v, i), path, &d[i], err);
        if (r < 0) {
            descriptors_free(d, i);
            return r;
        }
    }
    *ret = d;
    *ret_n = n;
    return 0;
}

static int parse_subject(json_t *obj, struct kiln_descriptor **ret, struct kiln_error **err)
{
    json_t *v = field(obj, "subject");
    *ret = NULL;
    if (!v)
        return 0;
    struct kiln_descriptor *d = kiln_xmalloc(sizeof(*d));
    int r = parse_descriptor(v, "subject", d, err);
    if (r < 0) {
        free(d);
        return r;
    }
    *ret = d;
    return 0;
}

static int check_schema_version(json_t *root, struct kiln_error **err)
{
    json_t *v = json_object_get(root, "schemaVersion");
    if (!v)
        return fail(err, KILN_EINVAL, NULL, "schemaVersion", "missing");
    if (json_is_integer(v) && json_integer_value(v) == 1)
        return kiln_error_set(err, KILN_EUNSUPPORTED, 0,
                              "docker schema 1 manifests are not supported");
    if (!json_is_integer(v) || json_integer_value(v) != 2)
        return fail(err, KILN_EINVAL, NULL, "schemaVersion", "must be 2");
    return 0;
}

/* The top-level mediaType, which must name `kind` when present. */
static int get_own_mediatype(json_t *root, enum kiln_manifest_kind kind, const char **ret,
                             struct kiln_error **err)
{
    int r = get_mediatype(root, NULL, "mediaType", false, ret, err);
    if (r < 0)
        return r;
    if (*ret && kind_exact(*ret) != kind) {
        _cleanup_free_ char *q = err ? quote(*ret) : NULL;
        return fail(err, KILN_EINVAL, NULL, "mediaType", "'%s' is not an image %s type", q,
                    kind == KILN_KIND_INDEX ? "index" : "manifest");
    }
    return 0;
}

static int manifest_from_json(json_t *root, struct kiln_manifest *ret, struct kiln_error **err)
{
    if (!json_is_object(root))
        return kiln_error_set(err, KILN_EINVAL, 0, "manifest must be a JSON object");
    const char *mt, *at;
    int r;
    if ((r = check_schema_version(root, err)) < 0 ||
        (r = get_own_mediatype(root, KILN_KIND_MANIFEST, &mt, err)) < 0 ||
        (r = get_mediatype(root, NULL, "artifactType", false, &at, err)) < 0)
        return r;

    struct kiln_manifest m = KILN_MANIFEST_INIT;
    json_t *config = json_object_get(root, "config");
    if (!config)
        r = fail(err, KILN_EINVAL, NULL, "config", "missing");
    else
        r = parse_descriptor(config, "config", &m.config, err);
    if (r >= 0)
        r = parse_descriptor_array(root, "layers", KILN_MANIFEST_MAX_LAYERS, &m.layers, &m.n_layers,
                                   err);
    if (r >= 0)
        r = parse_subject(root, &m.subject, err);
    if (r >= 0)
        r = parse_annotations(root, NULL, &m.annotations, err);
    if (r < 0) {
        kiln_manifest_release(&m);
        return r;
    }
    m.media_type = xstrdup_or_null(mt);
    m.artifact_type = xstrdup_or_null(at);
    *ret = m;
    return 0;
}

static int index_from_json(json_t *root, struct kiln_index *ret, struct kiln_error **err)
{
    if (!json_is_object(root))
        return kiln_error_set(err, KILN_EINVAL, 0, "index must be a JSON object");
    const char *mt, *at;
    int r;
    if ((r = check_schema_version(root, err)) < 0 ||
        (r = get_own_mediatype(root, KILN_KIND_INDEX, &mt, err)) < 0 ||
        (r = get_mediatype(root, NULL, "artifactType", false, &at, err)) < 0)
        return r;

    struct kiln_index idx = KILN_INDEX_INIT;
    r = parse_descriptor_array(root, "manifests", KILN_INDEX_MAX_MANIFESTS, &idx.manifests,
                               &idx.n_manifests, err);
    if (r >= 0)
        r = parse_subject(root, &idx.subject, err);
    if (r >= 0)
        r = parse_annotations(root, NULL, &idx.annotations, err);
    if (r < 0) {
        kiln_index_release(&idx);
        return r;
    }
    idx.media_type = xstrdup_or_null(mt);
    idx.artifact_type = xstrdup_or_null(at);
    *ret = idx;
    return 0;
}

/* ---- parsing ---------------------------------------------------------------------------- */

static int load_json(const char *data, size_t len, json_t **ret, struct kiln_error **err)
{
    if (len > KILN_MANIFEST_MAX_SIZE)
        return kiln_error_set(err, KILN_ETOOBIG, 0, "manifest is larger than %zu bytes",
                              KILN_MANIFEST_MAX_SIZE);
    json_error_t jerr;
    json_t *root = json_loadb(data ? data : "", len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        if (!err)
            return -KILN_EINVAL;
        _cleanup_free_ char *q = quote(jerr.text);
        return kiln_error_set(err, KILN_EINVAL, 0, "invalid JSON at line %d, column %d: %s",
                              jerr.line, jerr.column, q);
    }
    *ret = root;
    return 0;
}

static int schema1(struct kiln_error **err)
{
    return kiln_error_set(err, KILN_EUNSUPPORTED, 0, "docker schema 1 manifests are not supported");
}

/* Decide what `root` is, from the content type, its mediaType, or its shape. */
static int detect_kind(json_t *root, const char *content_type, enum kiln_manifest_kind *ret,
                       struct kiln_error **err)
{
    enum kiln_manifest_kind ct_kind = KILN_KIND_UNKNOWN;
    _cleanup_free_ char *ct = NULL;
    if (content_type && strlen(content_type) > CT_MAX_LEN)
        return kiln_error_set(err, KILN_EUNSUPPORTED, 0, "content type is too long");
    ct = normalize_content_type(content_type);
    if (!is_generic_content_type(ct)) {
        ct_kind = kind_exact(ct);
        if (ct_kind == KILN_KIND_SCHEMA1)
            return schema1(err);
        if (ct_kind == KILN_KIND_UNKNOWN) {
            _cleanup_free_ char *q = err ? quote(ct) : NULL;
            return kiln_error_set(err, KILN_EUNSUPPORTED, 0, "unsupported manifest media type '%s'",
                                  q);
        }
    }
    if (!json_is_object(root))
        return kiln_error_set(err, KILN_EINVAL, 0, "manifest must be a JSON object");

    json_t *sv = json_object_get(root, "schemaVersion");
    if (json_is_integer(sv) && json_integer_value(sv) == 1)
        return schema1(err);
    const char *jmt = json_string_value(json_object_get(root, "mediaType"));
    enum kiln_manifest_kind j_kind = kind_exact(jmt);
    if (j_kind == KILN_KIND_SCHEMA1)
        return schema1(err);

    if (ct_kind != KILN_KIND_UNKNOWN) {
        if (jmt && strcmp(jmt, ct) != 0) {
            if (!err)
                return -KILN_EINVAL;
            _cleanup_free_ char *q = quote(jmt);
            return kiln_error_set(err, KILN_EINVAL, 0,
                                  "mediaType: '%s' does not match the content type '%s'", q, ct);
        }
        *ret = ct_kind;
        return 0;
    }
    if (jmt) {
        if (j_kind == KILN_KIND_UNKNOWN) {
            _cleanup_free_ char *q = err ? quote(jmt) : NULL;
            return kiln_error_set(err, KILN_EUNSUPPORTED, 0,
                                  "mediaType: unsupported manifest media type '%s'", q);
        }
        *ret = j_kind;
        return 0;
    }
    bool has_manifests = json_object_get(root, "manifests") != NULL;
    bool has_config = json_object_get(root, "config") || json_object_get(root, "layers");
    if (has_manifests && has_config)
        return kiln_error_set(err, KILN_EINVAL, 0,
                              "ambiguous manifest: no mediaType, and both 'manifests' and "
                              "'config' or 'layers'");
    if (has_manifests) {
        *ret = KILN_KIND_INDEX;
        return 0;
    }
    if (has_config) {
        *ret = KILN_KIND_MANIFEST;
        return 0;
    }
    if (json_object_get(root, "fsLayers") || json_object_get(root, "signatures"))
        return schema1(err);
    return kiln_error_set(err, KILN_EINVAL, 0,
                          "cannot tell the manifest kind: no mediaType, 'manifests' or 'config'");
}

int kiln_manifest_parse_any(const char *data, size_t len, const char *content_type,
                            enum kiln_manifest_kind *ret_kind, struct kiln_manifest *ret_manifest,
                            struct kiln_index *ret_index, struct kiln_error **err)
{
    json_t *root = NULL;
    int r = load_json(data, len, &root, err);
    if (r < 0)
        return r;
    enum kiln_manifest_kind kind = KILN_KIND_UNKNOWN;
    r = detect_kind(root, content_type, &kind, err);
    if (r >= 0) {
        if (kind == KILN_KIND_MANIFEST) {
            struct kiln_manifest m;
            r = manifest_from_json(root, &m, err);
            if (r >= 0) {
                if (ret_manifest)
                    *ret_manifest = m;
                else
                    kiln_manifest_release(&m);
            }
        } else {
            struct kiln_index idx;
            r = index_from_json(root, &idx, err);
            if (r >= 0) {
                if (ret_index)
                    *ret_index = idx;
                else
                    kiln_index_release(&idx);
            }
        }
    }
    json_decref(root);
    if (r >= 0 && ret_kind)
        *ret_kind = kind;
    return r < 0 ? r : 0;
}

int kiln_manifest_parse(const char *data, size_t len, const char *content_type,
                        struct kiln_manifest *ret, struct kiln_error **err)
{
    enum kiln_manifest_kind kind;
    struct kiln_manifest m;
    struct kiln_index idx;
    int r = kiln_manifest_parse_any(data, len, content_type, &kind, &m, &idx, err);
    if (r < 0)
        return r;
    if (kind != KILN_KIND_MANIFEST) {
        kiln_index_release(&idx);
        return kiln_error_set(err, KILN_EINVAL, 0, "expected an image manifest, got an index");
    }
    if (ret)
        *ret = m;
    else
        kiln_manifest_release(&m);
    return 0;
}

int kiln_index_parse(const char *data, size_t len, const char *content_type, struct kiln_index *ret,
                     struct kiln_error **err)
{
    enum kiln_manifest_kind kind;
    struct kiln_manifest m;
    struct kiln_index idx;
    int r = kiln_manifest_parse_any(data, len, content_type, &kind, &m, &idx, err);
    if (r < 0)
        return r;
    if (kind != KILN_KIND_INDEX) {
        kiln_manifest_release(&m);
        return kiln_error_set(err, KILN_EINVAL, 0, "expected an index, got an image manifest");
    }
    if (ret)
        *ret = idx;
    else
        kiln_index_release(&idx);
    return 0;
}

/* ---- serialising ------------------------------------------------------------------------ */

struct builder {
    bool bad; /* a string was not UTF-8 */
};

static void put_string(struct builder *b, json_t *o, const char *key, const char *s)
{
    if (!s)
        return;
    json_t *v = json_string(s);
    if (!v) {
        b->bad = true;
        return;
    }
    json_object_set_new(o, key, v);
}

static void put_strv(struct builder *b, json_t *o, const char *key, const struct kiln_strv *sv)
{
    if (sv->n == 0)
        return;
    json_t *a = json_array();
    for (size_t i = 0; i < sv->n; i++) {
        json_t *v = json_string(sv->v[i]);
        if (!v)
            b->bad = true;
        else
            json_array_append_new(a, v);
    }
    json_object_set_new(o, key, a);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Annotations with the keys sorted (as Go writes maps); an empty object is left out. */
static void put_annotations(json_t *o, json_t *ann)
{
    if (!ann)
        return;
    if (!json_is_object(ann)) {
        /* left for validation to refuse */
        json_object_set_new(o, "annotations", json_deep_copy(ann));
        return;
    }
    size_t n = json_object_size(ann);
    if (n == 0)
        return;
    const char **keys = kiln_xreallocarray(NULL, n, sizeof(*keys));
    size_t i = 0;
    const char *k;
    json_t *v;
    json_object_foreach(ann, k, v) keys[i++] = k;
    qsort(keys, n, sizeof(*keys), cmp_str);
    json_t *sorted = json_object();
    for (i = 0; i < n; i++)
        json_object_set_new(sorted, keys[i], json_deep_copy(json_object_get(ann, keys[i])));
    free(keys);
    json_object_set_new(o, "annotations", sorted);
}

static json_t *platform_json(struct builder *b, const struct kiln_platform *p)
{
    json_t *o = json_object();
    put_string(b, o, "architecture", p->architecture);
    put_string(b, o, "os", p->os);
    put_string(b, o, "os.version", p->os_version);
    put_strv(b, o, "os.features", &p->os_features);
    put_string(b, o, "variant", p->variant);
    return o;
}

static json_t *descriptor_json(struct builder *b, const struct kiln_descriptor *d, bool docker)
{
    json_t *o = json_object();
    put_string(b, o, "mediaType", d->media_type);
    if (docker)
        json_object_set_new(o, "size", json_integer(d->size));
    put_string(b, o, "digest", d->digest);
    if (!docker)
        json_object_set_new(o, "size", json_integer(d->size));
    put_strv(b, o, "urls", &d->urls);
    put_annotations(o, d->annotations);
    if (d->platform)
        json_object_set_new(o, "platform", platform_json(b, d->platform));
    put_string(b, o, "artifactType", d->artifact_type);
    return o;
}

static int dump_cb(const char *buffer, size_t size, void *data)
{
    return kiln_buf_add(data, buffer, size) < 0 ? -1 : 0;
}

static int dump(json_t *root, struct kiln_buf *out, struct kiln_error **err)
{
    size_t before = out->len;
    if (json_dump_callback(root, dump_cb, out, JSON_COMPACT) < 0) {
        int r = kiln_buf_finish(out, "manifest", err);
        if (out->len > before)
            kiln_buf_truncate(out, before);
        return r < 0 ? r : kiln_error_set(err, KILN_EINTERNAL, 0, "cannot write JSON");
    }
    return 0;
}

static json_t *manifest_json(struct builder *b, const struct kiln_manifest *m)
{
    bool docker = m->media_type && strcmp(m->media_type, KILN_MT_DOCKER_MANIFEST) == 0;
    json_t *o = json_object();
    json_object_set_new(o, "schemaVersion", json_integer(m->schema_version));
    put_string(b, o, "mediaType", m->media_type);
    put_string(b, o, "artifactType", m->artifact_type);
    json_object_set_new(o, "config", descriptor_json(b, &m->config, docker));
    json_t *layers = json_array();
    for (size_t i = 0; i < m->n_layers; i++)
        json_array_append_new(layers, descriptor_json(b, &m->layers[i], docker));
    json_object_set_new(o, "layers", layers);
    if (m->subject)
        json_object_set_new(o, "subject", descriptor_json(b, m->subject, docker));
    put_annotations(o, m->annotations);
    return o;
}

static json_t *index_json(struct builder *b, const struct kiln_index *idx)
{
    bool docker = idx->media_type && strcmp(idx->media_type, KILN_MT_DOCKER_MANIFEST_LIST) == 0;
    json_t *o = json_object();
    json_object_set_new(o, "schemaVersion", json_integer(idx->schema_version));
    put_string(b, o, "mediaType", idx->media_type);
    put_string(b, o, "artifactType", idx->artifact_type);
    json_t *list = json_array();
    for (size_t i = 0; i < idx->n_manifests; i++)
        json_array_append_new(list, descriptor_json(b, &idx->manifests[i], docker));
    json_object_set_new(o, "manifests", list);
    if (idx->subject)
        json_object_set_new(o, "subject", descriptor_json(b, idx->subject, docker));
    put_annotations(o, idx->annotations);
    return o;
}

int kiln_manifest_serialize(const struct kiln_manifest *m, struct kiln_buf *out,
                            struct kiln_error **err)
{
    struct builder b = {false};
    json_t *root = manifest_json(&b, m);
    int r;
    if (b.bad) {
        r = kiln_error_set(err, KILN_EINVAL, 0, "manifest: a string is not valid UTF-8");
    } else {
        struct kiln_manifest check;
        r = manifest_from_json(root, &check, err);
        if (r >= 0) {
            kiln_manifest_release(&check);
            r = dump(root, out, err);
        }
    }
    json_decref(root);
    return r;
}

int kiln_index_serialize(const struct kiln_index *idx, struct kiln_buf *out,
                         struct kiln_error **err)
{
    struct builder b = {false};
    json_t *root = index_json(&b, idx);
    int r;
    if (b.bad) {
        r = kiln_error_set(err, KILN_EINVAL, 0, "index: a string is not valid UTF-8");
    } else {
        struct kiln_index check;
        r = index_from_json(root, &check, err);
        if (r >= 0) {
            kiln_index_release(&check);
            r = dump(root, out, err);
        }
    }
    json_decref(root);
    return r;
}

/* ---- format conversion ------------------------------------------------------------------ */

struct mt_pair {
    const char *oci, *docker;
};

static const struct mt_pair config_types[] = {
    {KILN_MT_OCI_CONFIG, KILN_MT_DOCKER_CONFIG},
};

static const struct mt_pair layer_types[] = {
    {KILN_MT_OCI_LAYER_TAR_GZ, KILN_MT_DOCKER_LAYER},
    {KILN_MT_OCI_LAYER_ND_TAR_GZ, KILN_MT_DOCKER_FOREIGN_LAYER},
};

static const struct mt_pair manifest_types[] = {
    {KILN_MT_OCI_MANIFEST, KILN_MT_DOCKER_MANIFEST},
    {KILN_MT_OCI_INDEX, KILN_MT_DOCKER_MANIFEST_LIST},
};

/*
 * The media type `mt` in format `fmt` per `pairs`: NULL when it has no
 * equivalent towards docker; unchanged when unknown towards OCI.
 */
static const char *convert_type(const char *mt, const struct mt_pair *pairs, size_t n,
                                enum kiln_manifest_format fmt)
{
    if (!mt)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(mt, pairs[i].oci) == 0 || strcmp(mt, pairs[i].docker) == 0)
            return fmt == KILN_FORMAT_DOCKER ? pairs[i].docker : pairs[i].oci;
    }
    return fmt == KILN_FORMAT_DOCKER ? NULL : mt;
}

static void replace(char **s, const char *v)
{
    if (*s == v)
        return;
    char *n = xstrdup_or_null(v);
    free(*s);
    *s = n;
}

int kiln_manifest_convert(struct kiln_manifest *m, enum kiln_manifest_format fmt,
                          struct kiln_error **err)
{
    bool docker = fmt == KILN_FORMAT_DOCKER;
    if (docker && m->subject)
        return kiln_error_set(err, KILN_EUNSUPPORTED, 0, "a docker manifest has no subject");
    if (docker && m->artifact_type)
        return kiln_error_set(err, KILN_EUNSUPPORTED, 0, "a docker manifest has no artifactType");
    const char *config =
        convert_type(m->config.media_type, config_types, KILN_ARRAY_SIZE(config_types), fmt);
    if (!config) {
        _cleanup_free_ char *q =
            err ? quote(m->config.media_type ? m->config.media_type : "") : NULL;
        return kiln_error_set(err, KILN_EUNSUPPORTED, 0,
                              "config.mediaType: '%s' has no docker equivalent", q);
    }
    _cleanup_free_ const char **layers =
        m->n_layers ? kiln_xreallocarray(NULL, m->n_layers, sizeof(*layers)) : NULL;
    for (size_t i = 0; i < m->n_layers; i++) {
        layers[i] =
            convert_type(m->layers[i].media_type, layer_types, KILN_ARRAY_SIZE(layer_types), fmt);
        if (!layers[i]) {
            const char *mt = m->layers[i].media_type;
            _cleanup_free_ char *q = err ? quote(mt ? mt : "") : NULL;
            return kiln_error_set(err, KILN_EUNSUPPORTED, 0,
                                  "layers[%zu].mediaType: '%s' has no docker equivalent", i, q);
        }
    }
    replace(&m->media_type, docker ? KILN_MT_DOCKER_MANIFEST : KILN_MT_OCI_MANIFEST);
    replace(&m->config.media_type, config);
    for (size_t i = 0; i < m->n_layers; i++)
        replace(&m->layers[i].media_type, layers[i]);
    if (docker) {
        json_decref(m->annotations);
        m->annotations = NULL;
    }
    return 0;
}

int kiln_index_convert(struct kiln_index *idx, enum kiln_manifest_format fmt,
                       struct kiln_error **err)
{
    bool docker = fmt == KILN_FORMAT_DOCKER;
    if (docker && idx->subject)
        return kiln_error_set(err, KILN_EUNSUPPORTED, 0, "a docker manifest list has no subject");
    if (docker && idx->artifact_type)
        return kiln_error_set(err, KILN_EUNSUPPORTED, 0,
                              "a docker manifest list has no artifactType");
    _cleanup_free_ const char **types =
        idx->n_manifests ? kiln_xreallocarray(NULL, idx->n_manifests, sizeof(*types)) : NULL;
    for (size_t i = 0; i < idx->n_manifests; i++) {
        types[i] = convert_type(idx->manifests[i].media_type, manifest_types,
                                KILN_ARRAY_SIZE(manifest_types), fmt);
        if (!types[i]) {
            const char *mt = idx->manifests[i].media_type;
            _cleanup_free_ char *q = err ? quote(mt ? mt : "") : NULL;
            return kiln_error_set(err, KILN_EUNSUPPORTED, 0,
                                  "manifests[%zu].mediaType: '%s' has no docker equivalent", i, q);
        }
    }
    replace(&idx->media_type, docker ? KILN_MT_DOCKER_MANIFEST_LIST : KILN_MT_OCI_INDEX);
    for (size_t i = 0; i < idx->n_manifests; i++)
        replace(&idx->manifests[i].media_type, types[i]);
    if (docker) {
        json_decref(idx->annotations);
        idx->annotations = NULL;
    }
    return 0;
}

/* ---- platform selection ----------------------------------------------------------------- */

struct norm_platform {
    const char *os;
    const char *arch;
    const char *variant; /* "" when none */
    char vbuf[8];
};

static bool eq_nocase(const char *a, const char *b)
{
    return strcasecmp(a, b) == 0;
}

static void normalize_platform(const char *os, const char *arch, const char *variant,
                               struct norm_platform *n)
{
    n->os = os ? os : "";
    n->arch = arch ? arch : "";
    n->variant = variant ? variant : "";
    if (eq_nocase(n->arch, "x86_64") || eq_nocase(n->arch, "x86-64"))
        n->arch = "amd64";
    else if (eq_nocase(n->arch, "aarch64"))
        n->arch = "arm64";
    else if (eq_nocase(n->arch, "i386") || eq_nocase(n->arch, "i686"))
        n->arch = "386";
    else if (eq_nocase(n->arch, "armhf")) {
        n->arch = "arm";
        if (!*n->variant)
            n->variant = "v7";
    } else if (eq_nocase(n->arch, "armel")) {
        n->arch = "arm";
        if (!*n->variant)
            n->variant = "v6";
    }
    /* a bare number is the version with a 'v': "8" -> "v8" */
    if (n->variant[0] >= '0' && n->variant[0] <= '9' && strlen(n->variant) < sizeof(n->vbuf) - 1) {
        snprintf(n->vbuf, sizeof(n->vbuf), "v%s", n->variant);
        n->variant = n->vbuf;
    }
    if (!*n->variant) {
        if (eq_nocase(n->arch, "arm64"))
            n->variant = "v8";
        else if (eq_nocase(n->arch, "arm"))
            n->variant = "v7";
        else if (eq_nocase(n->arch, "amd64"))
            n->variant = "v1";
    }
}

/* "vN" or "vN.M" -> N * 100 + M; anything else -1. */
static int variant_level(const char *v)
{
    if (v[0] != 'v' && v[0] != 'V')
        return -1;
    int major = 0, minor = 0, digits = 0;
    const char *p = v + 1;
    for (; *p >= '0' && *p <= '9' && digits < 4; p++, digits++)
        major = major * 10 + (*p - '0');
    if (!digits)
        return -1;
    if (*p == '.') {
        p++;
        digits = 0;
        for (; *p >= '0' && *p <= '9' && digits < 2; p++, digits++)
            minor = minor * 10 + (*p - '0');
        if (!digits)
            return -1;
    }
    return *p ? -1 : major * 100 + minor;
}

/*
 * How well an entry's platform serves the wanted one: -1 not at all, a
 * large number for an exact variant, else the (lower) variant level.
 */
static int platform_score(const struct norm_platform *want, const struct norm_platform *have)
{
    if (!eq_nocase(want->os, have->os) || !eq_nocase(want->arch, have->arch))
        return -1;
    if (eq_nocase(want->variant, have->variant))
        return 1 << 30;
    if (!eq_nocase(want->arch, "arm") && !eq_nocase(want->arch, "arm64") &&
        !eq_nocase(want->arch, "amd64"))
        return -1;
    int w = variant_level(want->variant), h = variant_level(have->variant);
    if (w < 0 || h < 0 || h > w)
        return -1;
    return h;
}

int kiln_index_select(const struct kiln_index *idx, const char *os, const char *arch,
                      const char *variant, const struct kiln_descriptor **ret_desc,
                      struct kiln_error **err)
{
    if (!os || !*os || !arch || !*arch)
        return kiln_error_set(err, KILN_EINVAL, 0, "platform needs an os and an architecture");
    struct norm_platform want;
    normalize_platform(os, arch, variant, &want);

    const struct kiln_descriptor *best = NULL;
    int best_score = -1;
    for (size_t i = 0; i < idx->n_manifests; i++) {
        const struct kiln_platform *p = idx->manifests[i].platform;
        if (!p)
            continue;
        struct norm_platform have;
        normalize_platform(p->os, p->architecture, p->variant, &have);
        int s = platform_score(&want, &have);
        if (s > best_score) {
            best_score = s;
            best = &idx->manifests[i];
        }
    }
    if (best) {
        *ret_desc = best;
        return 0;
    }
    if (!err)
        return -KILN_ENOTFOUND;

    struct kiln_buf list = KILN_BUF_INIT;
    size_t shown = 0;
    for (size_t i = 0; i < idx->n_manifests; i++) {
        const struct kiln_platform *p = idx->manifests[i].platform;
        /* attestations and other non-images say "unknown/unknown" */
        if (!p || !p->os || !p->architecture ||
            (strcmp(p->os, "unknown") == 0 && strcmp(p->architecture, "unknown") == 0))
            continue;
        _cleanup_free_ char *s = kiln_platform_string(p);
        _cleanup_free_ char *q = quote(s);
        kiln_buf_addf(&list, "%s%s", shown++ ? ", " : "", q);
    }
    bool v = variant && *variant;
    _cleanup_free_ char *wanted =
        kiln_xasprintf("%s/%s%s%s", os, arch, v ? "/" : "", v ? variant : "");
    _cleanup_free_ char *qw = quote(wanted);
    int r = kiln_error_set(err, KILN_ENOTFOUND, 0,
                           "no manifest for platform '%s' in the index; available: %s", qw,
                           shown ? list.buf : "none");
    kiln_buf_release(&list);
    return r;
}
