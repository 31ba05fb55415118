#include "util/common.h"

#include <dirent.h>
#include <fcntl.h>
#include <jansson.h>
#include <time.h>
#include <unistd.h>

#include "build/stepcache.h"
#include "build/plan.h"
#include "oci/manifest.h"
#include "oci/mediatype.h"
#include "store/blobstore.h"
#include "util/buf.h"
#include "util/fs.h"

#define RECORD_MAX 4096

_Static_assert(KILN_STEPCACHE_TIME_BUFSZ == sizeof(((struct kiln_step_record *)0)->created),
               "a used time fits where a created one does");

static bool key_ok(const char *key)
{
    if (!key || strlen(key) != KILN_STEP_KEY_LEN)
        return false;
    for (const char *p = key; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
            return false;
    return true;
}

static bool copy_str(char *dst, size_t cap, json_t *v)
{
    const char *s = json_string_value(v);
    if (!s || strlen(s) >= cap)
        return false;
    memcpy(dst, s, strlen(s) + 1);
    return true;
}

int kiln_stepcache_get(const char *dir, const char *key, struct kiln_step_record *ret,
                       struct kiln_error **err)
{
    if (!key_ok(key))
        return kiln_error_set(err, KILN_EINVAL, 0, "step cache: invalid key '%s'", key);
    _cleanup_free_ char *path = kiln_xasprintf("%s/%s.json", dir, key);
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        if (errno == ENOENT)
            return 0;
        return kiln_error_set(err, KILN_EIO, errno, "step cache: open '%s'", path);
    }
    char buf[RECORD_MAX];
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    if (n < 0)
        return kiln_error_set(err, KILN_EIO, errno, "step cache: read '%s'", path);
    json_error_t je;
    json_t *root = json_loadb(buf, (size_t)n, JSON_REJECT_DUPLICATES, &je);
    struct kiln_step_record rec;
    memset(&rec, 0, sizeof(rec));
    json_t *size = root ? json_object_get(root, "size") : NULL;
    bool ok =
        root && json_is_object(root) &&
        copy_str(rec.digest, sizeof(rec.digest), json_object_get(root, "digest")) &&
        copy_str(rec.diff_id, sizeof(rec.diff_id), json_object_get(root, "diff_id")) &&
        copy_str(rec.media_type, sizeof(rec.media_type), json_object_get(root, "media_type")) &&
        copy_str(rec.created, sizeof(rec.created), json_object_get(root, "created")) &&
        json_is_integer(size) && json_integer_value(size) >= 0 &&
        kiln_digest_is_valid(rec.digest) && kiln_digest_is_valid(rec.diff_id);
    if (ok)
        rec.size = (uint64_t)json_integer_value(size);
    json_decref(root);
    if (!ok)
        return 0; /* a damaged record is a miss; the rerun replaces it */
    *ret = rec;
    return 1;
}

int kiln_stepcache_put(const char *dir, const char *key, const struct kiln_step_record *rec,
                       struct kiln_error **err)
{
    if (!key_ok(key))
        return kiln_error_set(err, KILN_EINVAL, 0, "step cache: invalid key '%s'", key);
    json_t *root = json_pack("{s:s, s:s, s:I, s:s, s:s}", "digest", rec->digest, "diff_id",
                             rec->diff_id, "size", (json_int_t)rec->size, "media_type",
                             rec->media_type, "created", rec->created);
    if (!root)
        return kiln_error_set(err, KILN_EINVAL, 0, "step cache: record not UTF-8");
    _cleanup_free_ char *text = json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(root);
    _cleanup_close_ int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return kiln_error_set(err, KILN_EIO, errno, "step cache: open '%s'", dir);
    _cleanup_free_ char *name = kiln_xasprintf("%s.json", key);
    int r = kiln_fs_write_atomic(dfd, name, text, strlen(text), 0644, err);
    if (r < 0)
        kiln_error_prefix(err, "step cache");
    return r;
}

int kiln_stepcache_prune(const char *dir, struct kiln_blobstore *bs, uint64_t *ret_removed,
                         uint64_t *ret_kept, struct kiln_error **err)
{
    uint64_t removed = 0, kept = 0;
    DIR *d = opendir(dir);
    if (!d) {
        if (errno == ENOENT)
            goto out;
        return kiln_error_set(err, KILN_EIO, errno, "step cache: open '%s'", dir);
    }
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t n = strlen(e->d_name);
        if (n != KILN_STEP_KEY_LEN + 5 || strcmp(e->d_name + KILN_STEP_KEY_LEN, ".json") != 0)
            continue;
        char key[KILN_STEP_KEY_LEN + 1];
        memcpy(key, e->d_name, KILN_STEP_KEY_LEN);
        key[KILN_STEP_KEY_LEN] = 0;
        struct kiln_step_record rec;
        int r = kiln_stepcache_get(dir, key, &rec, NULL);
        if (r == 1 && kiln_blobstore_has(bs, rec.digest, NULL, NULL) == 1) {
            kept++;
            continue;
        }
        if (r < 0)
            continue;
        if (unlinkat(dirfd(d), e->d_name, 0) == 0)
            removed++;
    }
    closedir(d);
out:
    if (ret_removed)
        *ret_removed = removed;
    if (ret_kept)
        *ret_kept = kept;
    return 0;
}

/* ---- the shared step cache's documents ---------------------------------------------- */

int kiln_stepcache_tag(const char *key, char out[KILN_STEPCACHE_TAG_LEN + 1],
                       struct kiln_error **err)
{
    if (!key_ok(key))
        return kiln_error_set(err, KILN_EINVAL, 0, "step cache: invalid key '%s'", key);
    snprintf(out, KILN_STEPCACHE_TAG_LEN + 1, KILN_STEPCACHE_TAG_PREFIX "%s", key);
    return 0;
}

/* Append a JSON document to `out`; `root` is consumed. */
static int dump_json(json_t *root, const char *what, struct kiln_buf *out, struct kiln_error **err)
{
    if (!root)
        return kiln_error_set(err, KILN_EINVAL, 0, "step cache: %s: text not UTF-8", what);
    char *text = json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(root);
    if (!text)
        return kiln_error_set(err, KILN_EINVAL, 0, "step cache: %s: cannot serialize", what);
    int r = kiln_buf_adds(out, text);
    free(text);
    if (r < 0)
        return kiln_buf_finish(out, what, err);
    return 0;
}

int kiln_stepcache_config_make(const char *key, const char *kind, const char *created_by,
                               const struct kiln_step_record *rec, const char *version,
                               struct kiln_buf *out, struct kiln_error **err)
{
    if (!key_ok(key))
        return kiln_error_set(err, KILN_EINVAL, 0, "step cache: invalid key '%s'", key);
    json_t *root = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "key", key, "kind", kind,
                             "created_by", created_by, "diff_id", rec->diff_id, "created",
                             rec->created, "kiln_version", version);
    return dump_json(root, "step config", out, err);
}

static bool digits(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return false;
    return true;
}

/* YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM|-HH:MM) */
static bool rfc3339_ok(const char *s)
{
    size_t n = strlen(s);
    if (n < 20 || !digits(s, 4) || s[4] != '-' || !digits(s + 5, 2) || s[7] != '-' ||
        !digits(s + 8, 2) || s[10] != 'T' || !digits(s + 11, 2) || s[13] != ':' ||
        !digits(s + 14, 2) || s[16] != ':' || !digits(s + 17, 2))
        return false;
    const char *p = s + 19;
    if (*p == '.') {
        size_t f = strspn(p + 1, "0123456789");
        if (f < 1 || f > 9)
            return false;
        p += 1 + f;
    }
    if (!strcmp(p, "Z"))
        return true;
    return (p[0] == '+' || p[0] == '-') && strlen(p) == 6 && digits(p + 1, 2) && p[3] == ':' &&
           digits(p + 4, 2);
}

/*
 * The checks of a config document; `key` and `kind` NULL: any valid key,
 * any kind. On success ret->diff_id, ret->created and ret_key (may be NULL)
 * are filled.
 */
static int config_check(const char *data, size_t len, const char *key, const char *kind,
                        struct kiln_step_record *ret, char *ret_key, struct kiln_error **err)
{
    if (len > KILN_STEPCACHE_CONFIG_MAX)
        return kiln_error_set(err, KILN_ETOOBIG, 0, "step config: %zu bytes, more than %zu", len,
                              KILN_STEPCACHE_CONFIG_MAX);
    json_error_t je;
    json_t *root = data ? json_loadb(data, len, JSON_REJECT_DUPLICATES, &je) : NULL;
    if (!root)
        return kiln_error_set(err, KILN_EINVAL, 0, "step config: not JSON: %s",
                              data ? je.text : "no data");
    const char *k = json_string_value(json_object_get(root, "key"));
    const char *kd = json_string_value(json_object_get(root, "kind"));
    const char *diff_id = json_string_value(json_object_get(root, "diff_id"));
    const char *created = json_string_value(json_object_get(root, "created"));
    struct kiln_step_record rec;
    int r = 0;
    if (!json_is_object(root))
        r = kiln_error_set(err, KILN_EINVAL, 0, "step config: not a JSON object");
    else if (key && (!k || strcmp(k, key) != 0))
        r = kiln_error_set(err, KILN_EINVAL, 0, "step config: names another key than '%s'", key);
    else if (!key && !key_ok(k))
        r = kiln_error_set(err, KILN_EINVAL, 0, "step config: no valid key");
    else if (kind && (!kd || strcmp(kd, kind) != 0))
        r = kiln_error_set(err, KILN_EINVAL, 0, "step config: names another kind than '%s'", kind);
    else if (!diff_id || strlen(diff_id) >= sizeof(rec.diff_id) || !kiln_digest_is_valid(diff_id))
        r = kiln_error_set(err, KILN_EINVAL, 0, "step config: no valid diff_id");
    else if (!created || strlen(created) >= sizeof(rec.created) || !rfc3339_ok(created))
        r = kiln_error_set(err, KILN_EINVAL, 0, "step config: no valid created time");
    if (r >= 0) {
        memcpy(ret->diff_id, diff_id, strlen(diff_id) + 1);
        memcpy(ret->created, created, strlen(created) + 1);
        if (ret_key)
            memcpy(ret_key, k, KILN_STEP_KEY_LEN + 1);
    }
    json_decref(root);
    return r;
}

int kiln_stepcache_config_parse(const char *data, size_t len, const char *key, const char *kind,
                                struct kiln_step_record *ret, struct kiln_error **err)
{
    return config_check(data, len, key ? key : "", kind ? kind : "", ret, NULL, err);
}

int kiln_stepcache_config_created(const char *data, size_t len,
                                  char ret_key[KILN_STEPCACHE_KEY_BUFSZ],
                                  struct kiln_step_record *ret, struct kiln_error **err)
{
    return config_check(data, len, NULL, NULL, ret, ret_key, err);
}

int kiln_stepcache_created_time(const char *created, int64_t *ret_epoch)
{
    if (!created || !rfc3339_ok(created))
        return -1;
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    tm.tm_year = (int)strtol(created, NULL, 10) - 1900;
    tm.tm_mon = (int)strtol(created + 5, NULL, 10) - 1;
    tm.tm_mday = (int)strtol(created + 8, NULL, 10);
    tm.tm_hour = (int)strtol(created + 11, NULL, 10);
    tm.tm_min = (int)strtol(created + 14, NULL, 10);
    tm.tm_sec = (int)strtol(created + 17, NULL, 10);
    if (tm.tm_mon > 11 || tm.tm_mday < 1 || tm.tm_mday > 31 || tm.tm_hour > 23 || tm.tm_min > 59 ||
        tm.tm_sec > 60)
        return -1;
    int64_t t = (int64_t)timegm(&tm);
    const char *z = created + 19;
    if (*z == '.')
        z += 1 + strspn(z + 1, "0123456789");
    if (*z == '+' || *z == '-') {
        int64_t off = strtol(z + 1, NULL, 10) * 3600 + strtol(z + 4, NULL, 10) * 60;
        t += *z == '+' ? -off : off;
    }
    *ret_epoch = t;
    return 0;
}

int kiln_stepcache_last_time(const char *created, const char *used, int64_t *ret_epoch,
                             bool *ret_is_used)
{
    int64_t c = 0, u = 0;
    bool have_used = used && *used;
    if (kiln_stepcache_created_time(created, &c) < 0 ||
        (have_used && kiln_stepcache_created_time(used, &u) < 0))
        return -1;
    bool is_used = have_used && u > c;
    *ret_epoch = is_used ? u : c;
    if (ret_is_used)
        *ret_is_used = is_used;
    return 0;
}

/* A "used" annotation kiln makes and accepts. */
static bool used_ok(const char *used)
{
    int64_t t;
    return strlen(used) < KILN_STEPCACHE_TIME_BUFSZ && kiln_stepcache_created_time(used, &t) == 0;
}

int kiln_stepcache_manifest_make(const char *config_digest, uint64_t config_size,
                                 const struct kiln_step_record *rec, const char *used,
                                 struct kiln_buf *out, struct kiln_error **err)
{
    if (used && !used_ok(used))
        return kiln_error_set(err, KILN_EINVAL, 0,
                              "step manifest: annotation '%s' is not an RFC 3339 time",
                              KILN_STEPCACHE_USED_ANNOTATION);
    json_t *root = json_pack("{s:i, s:s, s:{s:s, s:s, s:I}, s:[{s:s, s:s, s:I}]}", "schemaVersion",
                             2, "mediaType", KILN_MT_OCI_MANIFEST, "config", "mediaType",
                             KILN_STEPCACHE_CONFIG_MT, "digest", config_digest, "size",
                             (json_int_t)config_size, "layers", "mediaType", rec->media_type,
                             "digest", rec->digest, "size", (json_int_t)rec->size);
    if (root && used &&
        json_object_set_new(root, "annotations",
                            json_pack("{s:s}", KILN_STEPCACHE_USED_ANNOTATION, used)) < 0) {
        json_decref(root);
        root = NULL;
    }
    return dump_json(root, "step manifest", out, err);
}

static bool is_sha256(const char *d)
{
    return d && !strncmp(d, "sha256:", 7) && kiln_digest_is_sha256_hex(d + 7);
}

static bool layer_type_ok(const char *mt)
{
    static const char *const ok[] = {KILN_MT_OCI_LAYER_TAR, KILN_MT_OCI_LAYER_TAR_GZ,
                                     KILN_MT_OCI_LAYER_TAR_ZST, KILN_MT_DOCKER_LAYER, NULL};
    for (size_t i = 0; mt && ok[i]; i++)
        if (!strcmp(mt, ok[i]))
            return true;
    return false;
}

int kiln_stepcache_manifest_parse(const char *data, size_t len, const char *content_type,
                                  char ret_config_digest[KILN_DIGEST_BUFSZ],
                                  uint64_t *ret_config_size, struct kiln_step_record *ret,
                                  char ret_used[KILN_STEPCACHE_TIME_BUFSZ], struct kiln_error **err)
{
    if (len > KILN_STEPCACHE_MANIFEST_MAX)
        return kiln_error_set(err, KILN_ETOOBIG, 0, "step manifest: %zu bytes, more than %zu", len,
                              KILN_STEPCACHE_MANIFEST_MAX);
    struct kiln_manifest m = KILN_MANIFEST_INIT;
    int r = kiln_manifest_parse(data, len, content_type, &m, err);
    if (r < 0)
        return kiln_error_prefix(err, "step manifest");
    const struct kiln_descriptor *l = m.n_layers == 1 ? &m.layers[0] : NULL;
    /* kiln_manifest_parse() took annotations only as an object of strings */
    const char *used =
        json_string_value(json_object_get(m.annotations, KILN_STEPCACHE_USED_ANNOTATION));
    if (!m.media_type || strcmp(m.media_type, KILN_MT_OCI_MANIFEST) != 0)
        r = kiln_error_set(err, KILN_EINVAL, 0, "step manifest: not an OCI image manifest");
    else if (!m.config.media_type || strcmp(m.config.media_type, KILN_STEPCACHE_CONFIG_MT) != 0)
        r = kiln_error_set(err, KILN_EINVAL, 0, "step manifest: config media type '%s', not '%s'",
                           m.config.media_type ? m.config.media_type : "",
                           KILN_STEPCACHE_CONFIG_MT);
    else if ((uint64_t)m.config.size > KILN_STEPCACHE_CONFIG_MAX)
        r = kiln_error_set(err, KILN_ETOOBIG, 0, "step manifest: config of %lld bytes",
                           (long long)m.config.size);
    else if (!l)
        r = kiln_error_set(err, KILN_EINVAL, 0, "step manifest: %zu layers, not 1", m.n_layers);
    else if (!layer_type_ok(l->media_type))
        r = kiln_error_set(err, KILN_EINVAL, 0, "step manifest: layer media type '%s'",
                           l->media_type ? l->media_type : "");
    else if (!is_sha256(m.config.digest) || !is_sha256(l->digest))
        r = kiln_error_set(err, KILN_EINVAL, 0, "step manifest: digests must be sha256");
    else if (used && !used_ok(used))
        r = kiln_error_set(err, KILN_EINVAL, 0,
                           "step manifest: annotation '%s' is not an RFC 3339 time",
                           KILN_STEPCACHE_USED_ANNOTATION);
    if (r >= 0) {
        snprintf(ret_config_digest, KILN_DIGEST_BUFSZ, "%s", m.config.digest);
        *ret_config_size = (uint64_t)m.config.size;
        snprintf(ret->digest, sizeof(ret->digest), "%s", l->digest);
        snprintf(ret->media_type, sizeof(ret->media_type), "%s", l->media_type);
        ret->size = (uint64_t)l->size;
        if (ret_used)
            snprintf(ret_used, KILN_STEPCACHE_TIME_BUFSZ, "%s", used ? used : "");
    }
    kiln_manifest_release(&m);
    return r;
}
