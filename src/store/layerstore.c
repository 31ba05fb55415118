#include "util/common.h"

#include <fcntl.h>
#include <dirent.h>
#include <inttypes.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "oci/digest.h"
#include "store/layerstore.h"
#include "util/fs.h"

struct kiln_layerstore {
    char *root;
    int rootfd;
    int layersfd; /* layers/sha256 */
    int locksfd;  /* locks */
    int tmpfd;    /* tmp */
    uint64_t cap;
};

struct kiln_layer_ref {
    int lockfd;
    char *path;
    char diff_id[KILN_DIGEST_BUFSZ];
};

int kiln_layerstore_open(const char *root, uint64_t size_cap, struct kiln_layerstore **ret,
                         struct kiln_error **err)
{
    int rootfd = -1;
    int r = kiln_fs_mkdir_p_path(root, 0755, &rootfd, err);
    if (r < 0) {
        kiln_error_prefix(err, "open layer store");
        return r;
    }
    struct kiln_layerstore *ls = kiln_xcalloc(1, sizeof(*ls));
    ls->root = kiln_xstrdup(root);
    ls->rootfd = rootfd;
    ls->layersfd = ls->locksfd = ls->tmpfd = -1;
    ls->cap = size_cap;
    r = kiln_fs_mkdir_p_at(rootfd, "layers/sha256", 0755, &ls->layersfd, err);
    if (r >= 0)
        r = kiln_fs_mkdir_p_at(rootfd, "locks", 0755, &ls->locksfd, err);
    if (r >= 0)
        r = kiln_fs_mkdir_p_at(rootfd, "tmp", 0755, &ls->tmpfd, err);
    if (r < 0) {
        kiln_error_prefix(err, "open layer store '%s'", root);
        kiln_layerstore_free(ls);
        return r;
    }
    *ret = ls;
    return 0;
}

void kiln_layerstore_free(struct kiln_layerstore *ls)
{
    if (!ls)
        return;
    int *fds[] = {&ls->tmpfd, &ls->locksfd, &ls->layersfd, &ls->rootfd};
    for (size_t i = 0; i < KILN_ARRAY_SIZE(fds); i++)
        if (*fds[i] >= 0)
            close(*fds[i]);
    free(ls->root);
    free(ls);
}

uint64_t kiln_layerstore_size_cap(const struct kiln_layerstore *ls)
{
    return ls->cap;
}

const char *kiln_layerstore_root(const struct kiln_layerstore *ls)
{
    return ls->root;
}

static int diff_id_hex(const char *diff_id, const char **ret_hex, struct kiln_error **err)
{
    int r = kiln_digest_sha256_hex(diff_id, "diff_id", ret_hex, err);
    return r < 0 ? kiln_error_prefix(err, "layer store") : 0;
}

static bool layer_exists(struct kiln_layerstore *ls, const char *hex)
{
    struct stat st;
    return fstatat(ls->layersfd, hex, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode);
}

/*
 * Each lock file carries two OFD byte-range locks (fcntl F_OFD_SETLK: owned
 * by the open file description like flock, so they work between threads
 * too, but on separate bytes):
 *   byte 0, "use": shared by every ref and by ensure() while it runs,
 *           exclusive (taken without waiting) by removal;
 *   byte 1, "extract": exclusive while one ensure() checks and extracts.
 * Extraction is serialised without ever waiting for refs, and a ref never
 * has to convert a lock (which is not atomic), so it holds from the first
 * check on.
 */
#define BYTE_USE     0
#define BYTE_EXTRACT 1

/* Returns 0, -EAGAIN when `wait` is false and the lock is held, or -errno. */
static int ofd_lock(int fd, short type, off_t byte, bool wait)
{
    struct flock fl = {.l_type = type, .l_whence = SEEK_SET, .l_start = byte, .l_len = 1};
    for (;;) {
        if (fcntl(fd, wait ? F_OFD_SETLKW : F_OFD_SETLK, &fl) == 0)
            return 0;
        if (errno == EINTR)
            continue;
        return errno == EACCES ? -EAGAIN : -errno;
    }
}

/*
 * Open locks/<hex> (created when missing) and take its "use" lock, shared
 * or exclusive (F_RDLCK / F_WRLCK), waiting or not. Returns the fd;
 * -KILN_ECONFLICT (no message) when not waiting and the lock is held;
 * another negative error otherwise. Lock files are removed only by a
 * holder of the exclusive use lock, so after locking, the fd must still be
 * the file at that name; when it is not, start over.
 */
static int lock_layer(struct kiln_layerstore *ls, const char *hex, short type, bool wait,
                      struct kiln_error **err)
{
    for (;;) {
        _cleanup_close_ int fd =
            openat(ls->locksfd, hex, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0644);
        if (fd < 0)
            return kiln_error_set(err, KILN_EIO, errno, "layer sha256:%s: open lock file", hex);
        int r = ofd_lock(fd, type, BYTE_USE, wait);
        if (r == -EAGAIN && !wait)
            return -KILN_ECONFLICT;
        if (r < 0)
            return kiln_error_set(err, KILN_EIO, -r, "layer sha256:%s: lock", hex);
        struct stat mine, cur;
        if (fstat(fd, &mine) < 0)
            return kiln_error_set(err, KILN_EIO, errno, "layer sha256:%s: stat lock file", hex);
        if (fstatat(ls->locksfd, hex, &cur, AT_SYMLINK_NOFOLLOW) < 0) {
            if (errno == ENOENT)
                continue;
            return kiln_error_set(err, KILN_EIO, errno, "layer sha256:%s: stat lock file", hex);
        }
        if (mine.st_ino != cur.st_ino || mine.st_dev != cur.st_dev)
            continue;
        return TAKE_FD(fd);
    }
}

/* Record a use: the lock file's mtime. */
static void touch_lock(int fd)
{
    struct timespec ts[2] = {{.tv_nsec = UTIME_OMIT}, {.tv_nsec = UTIME_NOW}};
    (void)futimens(fd, ts);
}

/* The size recorded in the lock file, or -1. */
static int64_t read_size(int fd)
{
    char buf[32];
    ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
    if (n <= 0)
        return -1;
    buf[n] = '\0';
    if (buf[0] < '0' || buf[0] > '9')
        return -1;
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(buf, &end, 10);
    if (errno || (*end && *end != '\n') || v > INT64_MAX)
        return -1;
    return (int64_t)v;
}

static void write_size(int fd, uint64_t size)
{
    char buf[32];
    int n = snprintf(buf, sizeof(buf), "%" PRIu64 "\n", size);
    /* Only a cache of the measured size: failures just mean measuring again later. */
    if (n <= 0 || pwrite(fd, buf, (size_t)n, 0) != n)
        return;
    if (ftruncate(fd, n) < 0)
        return;
}

static struct kiln_layer_ref *ref_new(struct kiln_layerstore *ls, int lockfd, const char *diff_id)
{
    struct kiln_layer_ref *ref = kiln_xcalloc(1, sizeof(*ref));
    ref->lockfd = lockfd;
    ref->path = kiln_xasprintf("%s/layers/sha256/%s", ls->root, diff_id + 7);
    memcpy(ref->diff_id, diff_id, strlen(diff_id) + 1);
    return ref;
}

void kiln_layerstore_release(struct kiln_layer_ref *ref)
{
    if (!ref)
        return;
    if (ref->lockfd >= 0)
        close(ref->lockfd);
    free(ref->path);
    free(ref);
}

const char *kiln_layer_ref_path(const struct kiln_layer_ref *ref)
{
    return ref->path;
}

const char *kiln_layer_ref_diff_id(const struct kiln_layer_ref *ref)
{
    return ref->diff_id;
}

int kiln_layerstore_lookup(struct kiln_layerstore *ls, const char *diff_id, char **ret_path,
                           struct kiln_error **err)
{
    const char *hex = NULL;
    int r = diff_id_hex(diff_id, &hex, err);
    if (r < 0)
        return r;
    if (!layer_exists(ls, hex))
        return 0;
    if (ret_path)
        *ret_path = kiln_xasprintf("%s/layers/sha256/%s", ls->root, hex);
    return 1;
}

/* Extract into a temp dir and rename it into place; the caller holds the extract lock. */
static int extract(struct kiln_layerstore *ls, const char *diff_id, const char *hex, int lockfd,
                   kiln_layer_fill_fn fill, void *userdata, struct kiln_error **err)
{
    char name[KILN_FS_RANDOM_NAME_LEN + 1];
    int r;
    if (!fill)
        return kiln_error_set(err, KILN_ENOTFOUND, 0,
                              "layer %s not found (nothing to extract it from)", diff_id);
    _cleanup_close_ int dfd = kiln_fs_create_locked_temp(ls->tmpfd, true, name, err);
    if (dfd < 0) {
        kiln_error_prefix(err, "extract layer %s", diff_id);
        return dfd;
    }

    const char *step = NULL;
    r = fill(dfd, userdata, err);
    if (r < 0) {
        if (err && !*err)
            kiln_error_set(err, KILN_EINTERNAL, 0, "fill callback failed without a message");
        kiln_error_prefix(err, "extract layer %s", diff_id);
        (void)kiln_fs_rm_rf_at(ls->tmpfd, name, NULL);
        return r;
    }

    uint64_t size = 0;
    r = kiln_fs_disk_usage_at(dfd, ".", &size, err);
    if (r < 0) {
        kiln_error_prefix(err, "extract layer %s", diff_id);
        (void)kiln_fs_rm_rf_at(ls->tmpfd, name, NULL);
        return r;
    }
    /* Everything extracted reaches the disk before the name says "complete". */
    if (syncfs(dfd) < 0)
        step = "sync";
    else
        write_size(lockfd, size);
    bool placed = false;
    if (!step) {
        if (renameat2(ls->tmpfd, name, ls->layersfd, hex, RENAME_NOREPLACE) == 0)
            placed = true;
        else if ((errno == EINVAL || errno == ENOSYS) &&
                 renameat(ls->tmpfd, name, ls->layersfd, hex) == 0)
            placed = true;
        else if (errno != EEXIST)
            step = "rename into place";
        /* EEXIST: someone made it without the lock; theirs stays, ours goes below. */
    }
    if (step) {
        int e = errno;
        (void)kiln_fs_rm_rf_at(ls->tmpfd, name, NULL);
        return kiln_error_set(err, KILN_EIO, e, "extract layer %s: %s", diff_id, step);
    }
    if (!placed) {
        (void)kiln_fs_rm_rf_at(ls->tmpfd, name, NULL);
        return 0;
    }
    if (fsync(ls->layersfd) < 0)
        return kiln_error_set(err, KILN_EIO, errno, "extract layer %s: fsync layers", diff_id);
    return 1;
}

int kiln_layerstore_ensure(struct kiln_layerstore *ls, const char *diff_id, kiln_layer_fill_fn fill,
                           void *userdata, struct kiln_layer_ref **ret_ref, struct kiln_error **err)
{
    const char *hex = NULL;
    int r = diff_id_hex(diff_id, &hex, err);
    if (r < 0)
        return r;
    int extracted = 0;

    /* Holding the shared use lock from here on: nothing can remove the layer under us. */
    _cleanup_close_ int fd = lock_layer(ls, hex, F_RDLCK, true, err);
    if (fd < 0)
        return fd;
    if (!layer_exists(ls, hex)) {
        r = ofd_lock(fd, F_WRLCK, BYTE_EXTRACT, true);
        if (r < 0)
            return kiln_error_set(err, KILN_EIO, -r, "layer %s: lock for extraction", diff_id);
        if (!layer_exists(ls, hex)) {
            r = extract(ls, diff_id, hex, fd, fill, userdata, err);
            if (r < 0)
                return r;
            extracted = r;
        }
        (void)ofd_lock(fd, F_UNLCK, BYTE_EXTRACT, false);
    }
    touch_lock(fd);
    if (ret_ref)
        *ret_ref = ref_new(ls, TAKE_FD(fd), diff_id);
    return extracted;
}

int kiln_layerstore_acquire(struct kiln_layerstore *ls, const char *diff_id,
                            struct kiln_layer_ref **ret_ref, struct kiln_error **err)
{
    const char *hex = NULL;
    int r = diff_id_hex(diff_id, &hex, err);
    if (r < 0)
        return r;
    _cleanup_close_ int fd = lock_layer(ls, hex, F_RDLCK, true, err);
    if (fd < 0)
        return fd;
    if (!layer_exists(ls, hex))
        return kiln_error_set(err, KILN_ENOTFOUND, 0, "layer %s not found", diff_id);
    touch_lock(fd);
    *ret_ref = ref_new(ls, TAKE_FD(fd), diff_id);
    return 0;
}

/*
 * Remove a layer under an exclusive lock taken without waiting. When
 * `seen_mtime` is not NULL and the lock file's mtime differs (the layer was
 * used since it was listed), keep it. Returns 1 removed, 0 kept (in use or
 * used), -KILN_ENOTFOUND absent (no message), other errors with a message.
 */
static int remove_layer(struct kiln_layerstore *ls, const char *hex,
                        const struct timespec *seen_mtime, uint64_t *ret_bytes,
                        struct kiln_error **err)
{
    _cleanup_close_ int fd = lock_layer(ls, hex, F_WRLCK, false, err);
    if (fd == -KILN_ECONFLICT)
        return 0;
    if (fd < 0)
        return fd;
    if (!layer_exists(ls, hex)) {
        /* A lock file without a layer: tidy it while we hold it. */
        (void)unlinkat(ls->locksfd, hex, 0);
        return -KILN_ENOTFOUND;
    }
    struct stat lst;
    if (seen_mtime && fstat(fd, &lst) == 0 &&
        (lst.st_mtim.tv_sec != seen_mtime->tv_sec || lst.st_mtim.tv_nsec != seen_mtime->tv_nsec))
        return 0;

    int64_t size = read_size(fd);
    _cleanup_close_ int dfd =
        openat(ls->layersfd, hex, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dfd < 0)
        return kiln_error_set(err, KILN_EIO, errno, "remove layer sha256:%s: open", hex);
    if (size < 0) {
        uint64_t du = 0;
        size = kiln_fs_disk_usage_at(dfd, ".", &du, NULL) < 0 ? 0 : (int64_t)du;
    }
    /* Our temp-protocol lock: gc of tmp/ leaves the tree to us while we delete it. */
    if (flock(dfd, LOCK_EX | LOCK_NB) < 0)
        return kiln_error_set(err, KILN_EIO, errno, "remove layer sha256:%s: lock", hex);

    char name[KILN_FS_RANDOM_NAME_LEN + 1];
    int attempt = 0;
    for (;;) {
        kiln_fs_random_name(name);
        if (renameat2(ls->layersfd, hex, ls->tmpfd, name, RENAME_NOREPLACE) == 0)
            break;
        if (errno == EINVAL || errno == ENOSYS) {
            if (renameat(ls->layersfd, hex, ls->tmpfd, name) == 0)
                break;
        }
        if (errno != EEXIST || ++attempt == 16)
            return kiln_error_set(err, KILN_EIO, errno, "remove layer sha256:%s: rename", hex);
    }
    (void)fsync(ls->layersfd);
    (void)unlinkat(ls->locksfd, hex, 0);
    close(TAKE_FD(fd)); /* the name is gone: others may lock and extract anew */

    int r = kiln_fs_rm_rf_at(ls->tmpfd, name, err);
    if (r < 0) {
        kiln_error_prefix(err, "remove layer sha256:%s", hex);
        return r;
    }
    if (ret_bytes)
        *ret_bytes = (uint64_t)size;
    return 1;
}

int kiln_layerstore_remove(struct kiln_layerstore *ls, const char *diff_id, uint64_t *ret_bytes,
                           struct kiln_error **err)
{
    const char *hex = NULL;
    int r = diff_id_hex(diff_id, &hex, err);
    if (r < 0)
        return r;
    uint64_t bytes = 0;
    r = remove_layer(ls, hex, NULL, &bytes, err);
    if (r == -KILN_ENOTFOUND)
        return kiln_error_set(err, KILN_ENOTFOUND, 0, "layer %s not found", diff_id);
    if (r == 0)
        return kiln_error_set(err, KILN_ECONFLICT, 0, "layer %s is in use", diff_id);
    if (r < 0)
        return r;
    if (ret_bytes)
        *ret_bytes = bytes;
    return 0;
}

struct scan_entry {
    struct kiln_layerstore_entry e;
    struct timespec used;  /* sort key */
    struct timespec mtime; /* the lock file's, for the gc re-check */
    bool has_lock;
};

static int cmp_scan(const void *a, const void *b)
{
    const struct scan_entry *x = a, *y = b;
    if (x->used.tv_sec != y->used.tv_sec)
        return x->used.tv_sec < y->used.tv_sec ? -1 : 1;
    if (x->used.tv_nsec != y->used.tv_nsec)
        return x->used.tv_nsec < y->used.tv_nsec ? -1 : 1;
    return strcmp(x->e.diff_id, y->e.diff_id);
}

/* Read the names of a store directory through a private fd. */
static int read_dir(int dirfd, char ***ret, size_t *ret_n, struct kiln_error **err)
{
    int lfd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (lfd < 0)
        return kiln_error_set(err, KILN_EIO, errno, "layer store: open directory");
    DIR *d = fdopendir(lfd);
    if (!d) {
        int e = errno;
        close(lfd);
        return kiln_error_set(err, KILN_EIO, e, "layer store: open directory");
    }
    char **v = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!kiln_digest_is_sha256_hex(de->d_name))
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            v = kiln_xreallocarray(v, cap, sizeof(*v));
        }
        v[n++] = kiln_xstrdup(de->d_name);
    }
    closedir(d);
    *ret = v;
    *ret_n = n;
    return 0;
}

static void free_names(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

static int scan(struct kiln_layerstore *ls, struct scan_entry **ret, size_t *ret_n,
                struct kiln_error **err)
{
    char **names = NULL;
    size_t n = 0;
    int r = read_dir(ls->layersfd, &names, &n, err);
    if (r < 0)
        return r;
    struct scan_entry *v = kiln_xcalloc(n ? n : 1, sizeof(*v));
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        struct stat st;
        if (fstatat(ls->layersfd, names[i], &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISDIR(st.st_mode))
            continue;
        struct scan_entry *s = &v[k];
        memcpy(s->e.diff_id, "sha256:", 7);
        memcpy(s->e.diff_id + 7, names[i], KILN_SHA256_HEX_LEN + 1);
        s->used = st.st_ctim; /* renamed into place: a use when nothing better is known */
        int64_t size = -1;
        _cleanup_close_ int lfd =
            openat(ls->locksfd, names[i], O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
        struct stat lst;
        if (lfd >= 0 && fstat(lfd, &lst) == 0) {
            s->has_lock = true;
            s->used = s->mtime = lst.st_mtim;
            size = read_size(lfd);
            /* Ask without taking: a probe lock would make a concurrent removal fail. */
            struct flock fl = {
                .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = BYTE_USE, .l_len = 1};
            if (fcntl(lfd, F_OFD_GETLK, &fl) == 0)
                s->e.in_use = fl.l_type != F_UNLCK;
        }
        if (size < 0) {
            uint64_t du = 0;
            if (kiln_fs_disk_usage_at(ls->layersfd, names[i], &du, NULL) == 0)
                size = (int64_t)du;
            else
                size = 0;
        }
        s->e.size = (uint64_t)size;
        s->e.last_used = (int64_t)s->used.tv_sec;
        k++;
    }
    free_names(names, n);
    if (k)
        qsort(v, k, sizeof(*v), cmp_scan);
    *ret = v;
    *ret_n = k;
    return 0;
}

int kiln_layerstore_list(struct kiln_layerstore *ls, struct kiln_layerstore_entry **ret,
                         size_t *ret_n, struct kiln_error **err)
{
    struct scan_entry *v = NULL;
    size_t n = 0;
    int r = scan(ls, &v, &n, err);
    if (r < 0)
        return r;
    struct kiln_layerstore_entry *out = kiln_xcalloc(n ? n : 1, sizeof(*out));
    for (size_t i = 0; i < n; i++)
        out[i] = v[i].e;
    free(v);
    *ret = out;
    *ret_n = n;
    return 0;
}

static bool is_pinned(const char *const *pinned, const char *diff_id)
{
    for (; pinned && *pinned; pinned++)
        if (strcmp(*pinned, diff_id) == 0)
            return true;
    return false;
}

/* Remove lock files whose layer is absent and that nobody holds. */
static int sweep_locks(struct kiln_layerstore *ls, uint64_t *count, struct kiln_error **err)
{
    char **names = NULL;
    size_t n = 0;
    int r = read_dir(ls->locksfd, &names, &n, err);
    if (r < 0)
        return r;
    for (size_t i = 0; i < n; i++) {
        if (layer_exists(ls, names[i]))
            continue;
        _cleanup_close_ int fd = lock_layer(ls, names[i], F_WRLCK, false, NULL);
        if (fd < 0)
            continue;
        if (!layer_exists(ls, names[i]) && unlinkat(ls->locksfd, names[i], 0) == 0)
            (*count)++;
    }
    free_names(names, n);
    return 0;
}

int kiln_layerstore_gc(struct kiln_layerstore *ls, const struct kiln_layerstore_gc_options *opts,
                       struct kiln_layerstore_gc_stats *ret_stats, struct kiln_error **err)
{
    struct kiln_layerstore_gc_options def = {.target_bytes = -1};
    if (!opts)
        opts = &def;
    struct kiln_layerstore_gc_stats st = {0};
    int64_t age = opts->tmp_max_age_s == 0 ? KILN_STORE_TMP_MAX_AGE : opts->tmp_max_age_s;

    int r = kiln_fs_remove_stale_at(ls->tmpfd, age, &st.tmp_removed, &st.tmp_bytes_freed, err);
    if (r < 0) {
        kiln_error_prefix(err, "gc layer store '%s'", ls->root);
        return r;
    }

    struct scan_entry *v = NULL;
    size_t n = 0;
    r = scan(ls, &v, &n, err);
    if (r < 0)
        return r;
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += v[i].e.size;

    bool limited = opts->target_bytes >= 0 || ls->cap > 0;
    uint64_t target = opts->target_bytes >= 0 ? (uint64_t)opts->target_bytes : ls->cap;
    uint64_t left = n;
    for (size_t i = 0; limited && i < n && total > target; i++) {
        if (is_pinned(opts->pinned, v[i].e.diff_id)) {
            st.kept_pinned++;
            continue;
        }
        uint64_t freed = 0;
        r = remove_layer(ls, v[i].e.diff_id + 7, v[i].has_lock ? &v[i].mtime : NULL, &freed, err);
        if (r == 0) {
            st.kept_in_use++;
            continue;
        }
        if (r == -KILN_ENOTFOUND) {
            r = 0;
        } else if (r < 0) {
            break;
        } else {
            st.layers_removed++;
            st.bytes_freed += freed;
            r = 0;
        }
        total -= v[i].e.size;
        left--;
    }
    free(v);
    if (r < 0)
        return r;

    r = sweep_locks(ls, &st.locks_removed, err);
    if (r < 0)
        return r;
    st.layers_left = left;
    st.bytes_left = total;
    if (ret_stats)
        *ret_stats = st;
    return 0;
}
