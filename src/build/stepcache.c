#include "util/common.h"

#include <dirent.h>
#include <fcntl.h>
#include <jansson.h>
#include <unistd.h>

#include "build/stepcache.h"
#include "build/plan.h"
#include "store/blobstore.h"
#include "util/fs.h"

#define RECORD_MAX 4096

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
