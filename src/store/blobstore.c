#include "util/common.h"

#include <fcntl.h>
#include <dirent.h>
#include <inttypes.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "oci/digest.h"
#include "store/blobstore.h"
#include "util/fs.h"
#include "util/sha256.h"

#define HASH_CHUNK ((size_t)256 << 10)
/* Times a reader retries when gc removed the blob under it. */
#define OPEN_RETRIES 3

struct kiln_blobstore {
    char *root;
    int rootfd;
    int blobsfd; /* blobs/sha256 */
    int tmpfd;   /* tmp */
    uint64_t cap;
};

struct kiln_blob_writer {
    struct kiln_blobstore *bs;
    int fd;
    char name[KILN_FS_RANDOM_NAME_LEN + 1];
    struct kiln_sha256 h;
    uint64_t n;
    bool fd_exposed;
    bool failed;
};

int kiln_blobstore_open(const char *root, uint64_t size_cap, struct kiln_blobstore **ret,
                        struct kiln_error **err)
{
    int rootfd = -1;
    int r = kiln_fs_mkdir_p_path(root, 0755, &rootfd, err);
    if (r < 0) {
        kiln_error_prefix(err, "open blob store");
        return r;
    }

    struct kiln_blobstore *bs = kiln_xcalloc(1, sizeof(*bs));
    bs->root = kiln_xstrdup(root);
    bs->rootfd = rootfd;
    bs->blobsfd = bs->tmpfd = -1;
    bs->cap = size_cap;
    r = kiln_fs_mkdir_p_at(rootfd, "blobs/sha256", 0755, &bs->blobsfd, err);
    if (r >= 0)
        r = kiln_fs_mkdir_p_at(rootfd, "tmp", 0755, &bs->tmpfd, err);
    if (r < 0) {
        kiln_error_prefix(err, "open blob store '%s'", root);
        kiln_blobstore_free(bs);
        return r;
    }
    *ret = bs;
    return 0;
}

void kiln_blobstore_free(struct kiln_blobstore *bs)
{
    if (!bs)
        return;
    if (bs->tmpfd >= 0)
        close(bs->tmpfd);
    if (bs->blobsfd >= 0)
        close(bs->blobsfd);
    if (bs->rootfd >= 0)
        close(bs->rootfd);
    free(bs->root);
    free(bs);
}

uint64_t kiln_blobstore_size_cap(const struct kiln_blobstore *bs)
{
    return bs->cap;
}

const char *kiln_blobstore_root(const struct kiln_blobstore *bs)
{
    return bs->root;
}

/* The hex part of a sha256 digest, or an error. */
static int digest_hex(const char *digest, const char **ret_hex, struct kiln_error **err)
{
    int r = kiln_digest_sha256_hex(digest, "digest", ret_hex, err);
    return r < 0 ? kiln_error_prefix(err, "blob store") : 0;
}

char *kiln_blobstore_path(const struct kiln_blobstore *bs, const char *digest)
{
    const char *hex = NULL;
    if (digest_hex(digest, &hex, NULL) < 0)
        return NULL;
    return kiln_xasprintf("%s/blobs/sha256/%s", bs->root, hex);
}

int kiln_blobstore_has(struct kiln_blobstore *bs, const char *digest, uint64_t *ret_size,
                       struct kiln_error **err)
{
    const char *hex = NULL;
    int r = digest_hex(digest, &hex, err);
    if (r < 0)
        return r;
    struct stat st;
    if (fstatat(bs->blobsfd, hex, &st, AT_SYMLINK_NOFOLLOW) < 0) {
        if (errno == ENOENT)
            return 0;
        return kiln_error_set(err, KILN_EIO, errno, "blob '%s': stat", digest);
    }
    if (!S_ISREG(st.st_mode))
        return 0;
    if (ret_size)
        *ret_size = (uint64_t)st.st_size;
    return 1;
}

static void touch_atime(int fd)
{
    struct timespec ts[2] = {{.tv_nsec = UTIME_NOW}, {.tv_nsec = UTIME_OMIT}};
    /* Best effort: a store shared read-only with us cannot record use. */
    (void)futimens(fd, ts);
}

/* Open and share-lock a blob; `touch` marks it used. */
static int open_locked(struct kiln_blobstore *bs, const char *digest, bool touch,
                       uint64_t *ret_size, struct kiln_error **err)
{
    const char *hex = NULL;
    int r = digest_hex(digest, &hex, err);
    if (r < 0)
        return r;

    for (int attempt = 0; attempt < OPEN_RETRIES; attempt++) {
        _cleanup_close_ int fd =
            openat(bs->blobsfd, hex, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
        if (fd < 0) {
            if (errno == ENOENT)
                break;
            return kiln_error_set(err, KILN_EIO, errno, "blob '%s': open", digest);
        }
        while (flock(fd, LOCK_SH) < 0) {
            if (errno != EINTR)
                return kiln_error_set(err, KILN_EIO, errno, "blob '%s': lock", digest);
        }
        struct stat st;
        if (fstat(fd, &st) < 0)
            return kiln_error_set(err, KILN_EIO, errno, "blob '%s': stat", digest);
        if (!S_ISREG(st.st_mode))
            return kiln_error_set(err, KILN_EIO, 0, "blob '%s': not a regular file", digest);
        if (st.st_nlink == 0)
            continue; /* gc removed it between our open and our lock */
        /* Back to blocking reads for the caller. */
        int fl = fcntl(fd, F_GETFL);
        if (fl >= 0)
            (void)fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
        if (touch)
            touch_atime(fd);
        if (ret_size)
            *ret_size = (uint64_t)st.st_size;
        return TAKE_FD(fd);
    }
    return kiln_error_set(err, KILN_ENOTFOUND, 0, "blob '%s' not found", digest);
}

int kiln_blobstore_open_blob(struct kiln_blobstore *bs, const char *digest, uint64_t *ret_size,
                             struct kiln_error **err)
{
    return open_locked(bs, digest, true, ret_size, err);
}

int kiln_blobstore_begin(struct kiln_blobstore *bs, struct kiln_blob_writer **ret,
                         struct kiln_error **err)
{
    struct kiln_blob_writer *w = kiln_xcalloc(1, sizeof(*w));
    w->bs = bs;
    w->fd = kiln_fs_create_locked_temp(bs->tmpfd, false, w->name, err);
    if (w->fd < 0) {
        int r = w->fd;
        free(w);
        kiln_error_prefix(err, "blob store '%s'", bs->root);
        return r;
    }
    kiln_sha256_init(&w->h);
    *ret = w;
    return 0;
}

int kiln_blobstore_write(struct kiln_blob_writer *w, const void *data, size_t len,
                         struct kiln_error **err)
{
    if (w->failed)
        return kiln_error_set(err, KILN_EINTERNAL, 0, "blob write after a failure");
    if (kiln_fs_write_all(w->fd, data, len) < 0) {
        w->failed = true;
        return kiln_error_set(err, KILN_EIO, errno, "blob store '%s': write temp file",
                              w->bs->root);
    }
    kiln_sha256_update(&w->h, data, len);
    w->n += len;
    return 0;
}

int kiln_blobstore_writer_fd(struct kiln_blob_writer *w)
{
    w->fd_exposed = true;
    return w->fd;
}

uint64_t kiln_blobstore_written(const struct kiln_blob_writer *w)
{
    return w->n;
}

static void writer_free(struct kiln_blob_writer *w, bool drop)
{
    if (!w)
        return;
    if (drop && w->fd >= 0)
        unlinkat(w->bs->tmpfd, w->name, 0);
    if (w->fd >= 0)
        close(w->fd); /* releases the lock, after the unlink or rename */
    kiln_sha256_release(&w->h);
    free(w);
}

void kiln_blobstore_abort(struct kiln_blob_writer *w)
{
    writer_free(w, true);
}

/* Hash the whole file behind fd from offset 0. */
static int hash_fd(int fd, char out[KILN_DIGEST_BUFSZ], uint64_t *ret_size)
{
    struct kiln_sha256 h;
    _cleanup_free_ char *buf = kiln_xmalloc(HASH_CHUNK);
    uint64_t off = 0;
    kiln_sha256_init(&h);
    for (;;) {
        ssize_t n = pread(fd, buf, HASH_CHUNK, (off_t)off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            int e = errno;
            kiln_sha256_release(&h);
            errno = e;
            return -KILN_EIO;
        }
        if (n == 0)
            break;
        kiln_sha256_update(&h, buf, (size_t)n);
        off += (uint64_t)n;
    }
    kiln_digest_from_sha256(&h, out);
    kiln_sha256_release(&h);
    *ret_size = off;
    return 0;
}

int kiln_blobstore_commit(struct kiln_blob_writer *w, const char *expected_digest,
                          int64_t expected_size, char ret_digest[KILN_DIGEST_BUFSZ],
                          struct kiln_error **err)
{
    struct kiln_blobstore *bs = w->bs;
    char digest[KILN_DIGEST_BUFSZ];
    uint64_t size = 0;
    int r;

    if (w->failed) {
        writer_free(w, true);
        return kiln_error_set(err, KILN_EINTERNAL, 0, "blob commit after a failure");
    }
    if (expected_digest) {
        const char *hex = NULL;
        r = digest_hex(expected_digest, &hex, err);
        if (r < 0) {
            writer_free(w, true);
            return r;
        }
    }
    if (w->fd_exposed) {
        if (hash_fd(w->fd, digest, &size) < 0) {
            int e = errno;
            writer_free(w, true);
            return kiln_error_set(err, KILN_EIO, e, "blob store '%s': read temp file", bs->root);
        }
    } else {
        kiln_digest_from_sha256(&w->h, digest);
        size = w->n;
    }

    if (expected_digest && strcmp(expected_digest, digest) != 0) {
        writer_free(w, true);
        return kiln_error_set(err, KILN_EINVAL, 0, "blob digest mismatch: expected %s, got %s",
                              expected_digest, digest);
    }
    if (expected_size >= 0 && (uint64_t)expected_size != size) {
        writer_free(w, true);
        return kiln_error_set(err, KILN_EINVAL, 0,
                              "blob size mismatch: expected %" PRId64 " bytes, got %" PRIu64,
                              expected_size, size);
    }

    if (fchmod(w->fd, 0444) < 0 || fsync(w->fd) < 0) {
        int e = errno;
        writer_free(w, true);
        return kiln_error_set(err, KILN_EIO, e, "blob '%s': sync temp file", digest);
    }

    const char *hex = digest + 7;
    bool placed = false;
    if (renameat2(bs->tmpfd, w->name, bs->blobsfd, hex, RENAME_NOREPLACE) == 0) {
        placed = true;
    } else if (errno == EEXIST) {
        /* Someone committed it first: keep theirs unless it is visibly damaged. */
        struct stat st;
        if (fstatat(bs->blobsfd, hex, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode) &&
            (uint64_t)st.st_size == size) {
            struct timespec ts[2] = {{.tv_nsec = UTIME_NOW}, {.tv_nsec = UTIME_OMIT}};
            (void)utimensat(bs->blobsfd, hex, ts, AT_SYMLINK_NOFOLLOW);
        } else if (renameat(bs->tmpfd, w->name, bs->blobsfd, hex) == 0) {
            placed = true;
        } else {
            int e = errno;
            writer_free(w, true);
            return kiln_error_set(err, KILN_EIO, e, "blob '%s': replace damaged blob", digest);
        }
    } else if (errno == EINVAL || errno == ENOSYS) {
        /* No RENAME_NOREPLACE here: identical content makes a plain rename safe. */
        struct stat st;
        if (fstatat(bs->blobsfd, hex, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode) &&
            (uint64_t)st.st_size == size) {
            /* present already */
        } else if (renameat(bs->tmpfd, w->name, bs->blobsfd, hex) == 0) {
            placed = true;
        } else {
            int e = errno;
            writer_free(w, true);
            return kiln_error_set(err, KILN_EIO, e, "blob '%s': rename into place", digest);
        }
    } else {
        int e = errno;
        writer_free(w, true);
        return kiln_error_set(err, KILN_EIO, e, "blob '%s': rename into place", digest);
    }

    if (placed) {
        if (fsync(bs->blobsfd) < 0) {
            int e = errno;
            writer_free(w, false);
            return kiln_error_set(err, KILN_EIO, e, "blob '%s': fsync directory", digest);
        }
        writer_free(w, false);
    } else {
        writer_free(w, true);
    }
    if (ret_digest)
        memcpy(ret_digest, digest, sizeof(digest));
    return 0;
}

int kiln_blobstore_put(struct kiln_blobstore *bs, const void *data, size_t len,
                       const char *expected_digest, char ret_digest[KILN_DIGEST_BUFSZ],
                       struct kiln_error **err)
{
    struct kiln_blob_writer *w = NULL;
    int r = kiln_blobstore_begin(bs, &w, err);
    if (r < 0)
        return r;
    r = kiln_blobstore_write(w, data, len, err);
    if (r < 0) {
        kiln_blobstore_abort(w);
        return r;
    }
    return kiln_blobstore_commit(w, expected_digest, (int64_t)len, ret_digest, err);
}

int kiln_blobstore_verify(struct kiln_blobstore *bs, const char *digest, struct kiln_error **err)
{
    uint64_t size = 0;
    _cleanup_close_ int fd = open_locked(bs, digest, false, &size, err);
    if (fd < 0)
        return fd;
    char actual[KILN_DIGEST_BUFSZ];
    if (hash_fd(fd, actual, &size) < 0)
        return kiln_error_set(err, KILN_EIO, errno, "blob '%s': read", digest);
    if (strcmp(actual, digest) == 0)
        return 0;

    /* Remove it, unless the name was replaced meanwhile (by a good copy). */
    struct stat mine, cur;
    const char *hex = digest + 7;
    if (fstat(fd, &mine) == 0 && fstatat(bs->blobsfd, hex, &cur, AT_SYMLINK_NOFOLLOW) == 0 &&
        mine.st_ino == cur.st_ino && mine.st_dev == cur.st_dev) {
        if (unlinkat(bs->blobsfd, hex, 0) < 0 && errno != ENOENT)
            return kiln_error_set(err, KILN_EIO, errno,
                                  "blob %s is corrupt (content hashes to %s); remove", digest,
                                  actual);
        (void)fsync(bs->blobsfd);
    }
    return kiln_error_set(err, KILN_EINVAL, 0, "blob %s is corrupt (content hashes to %s), removed",
                          digest, actual);
}

int kiln_blobstore_remove(struct kiln_blobstore *bs, const char *digest, struct kiln_error **err)
{
    const char *hex = NULL;
    int r = digest_hex(digest, &hex, err);
    if (r < 0)
        return r;
    if (unlinkat(bs->blobsfd, hex, 0) < 0) {
        if (errno == ENOENT)
            return kiln_error_set(err, KILN_ENOTFOUND, 0, "blob '%s' not found", digest);
        return kiln_error_set(err, KILN_EIO, errno, "blob '%s': remove", digest);
    }
    (void)fsync(bs->blobsfd);
    return 0;
}

struct scan_entry {
    struct kiln_blobstore_entry e;
    struct timespec atime;
};

static int cmp_scan(const void *a, const void *b)
{
    const struct scan_entry *x = a, *y = b;
    if (x->atime.tv_sec != y->atime.tv_sec)
        return x->atime.tv_sec < y->atime.tv_sec ? -1 : 1;
    if (x->atime.tv_nsec != y->atime.tv_nsec)
        return x->atime.tv_nsec < y->atime.tv_nsec ? -1 : 1;
    return strcmp(x->e.digest, y->e.digest);
}

/* Every committed blob, sorted oldest use first. */
static int scan(struct kiln_blobstore *bs, struct scan_entry **ret, size_t *ret_n,
                struct kiln_error **err)
{
    /* A private fd: a shared one would share its directory offset between threads. */
    int lfd = openat(bs->blobsfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (lfd < 0)
        return kiln_error_set(err, KILN_EIO, errno, "blob store '%s': open blobs", bs->root);
    DIR *d = fdopendir(lfd);
    if (!d) {
        int e = errno;
        close(lfd);
        return kiln_error_set(err, KILN_EIO, e, "blob store '%s': open blobs", bs->root);
    }
    struct scan_entry *v = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        errno = 0;
        struct dirent *de = readdir(d);
        if (!de) {
            if (errno) {
                int e = errno;
                closedir(d);
                free(v);
                return kiln_error_set(err, KILN_EIO, e, "blob store '%s': read blobs", bs->root);
            }
            break;
        }
        if (!kiln_digest_is_sha256_hex(de->d_name))
            continue;
        struct stat st;
        if (fstatat(bs->blobsfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode))
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            v = kiln_xreallocarray(v, cap, sizeof(*v));
        }
        memset(&v[n], 0, sizeof(v[n]));
        memcpy(v[n].e.digest, "sha256:", 7);
        memcpy(v[n].e.digest + 7, de->d_name, KILN_SHA256_HEX_LEN + 1);
        v[n].e.size = (uint64_t)st.st_size;
        v[n].e.last_used = (int64_t)st.st_atim.tv_sec;
        v[n].atime = st.st_atim;
        n++;
    }
    closedir(d);
    if (n)
        qsort(v, n, sizeof(*v), cmp_scan);
    *ret = v;
    *ret_n = n;
    return 0;
}

int kiln_blobstore_list(struct kiln_blobstore *bs, struct kiln_blobstore_entry **ret, size_t *ret_n,
                        struct kiln_error **err)
{
    struct scan_entry *v = NULL;
    size_t n = 0;
    int r = scan(bs, &v, &n, err);
    if (r < 0)
        return r;
    struct kiln_blobstore_entry *out = kiln_xcalloc(n ? n : 1, sizeof(*out));
    for (size_t i = 0; i < n; i++)
        out[i] = v[i].e;
    free(v);
    *ret = out;
    *ret_n = n;
    return 0;
}

static bool is_pinned(const char *const *pinned, const char *digest)
{
    for (; pinned && *pinned; pinned++)
        if (strcmp(*pinned, digest) == 0)
            return true;
    return false;
}

/*
 * Remove one blob if nobody reads it and it was not used since the scan.
 * Returns 1 removed, 0 kept (in use), -1 vanished already, < -1 error.
 */
static int try_remove(struct kiln_blobstore *bs, const struct scan_entry *s,
                      struct kiln_error **err)
{
    const char *hex = s->e.digest + 7;
    _cleanup_close_ int fd =
        openat(bs->blobsfd, hex, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0) {
        if (errno == ENOENT)
            return -1;
        return kiln_error_set(err, KILN_EIO, errno, "gc: open blob '%s'", s->e.digest);
    }
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        if (errno == EWOULDBLOCK || errno == EINTR)
            return 0;
        return kiln_error_set(err, KILN_EIO, errno, "gc: lock blob '%s'", s->e.digest);
    }
    struct stat mine, cur;
    if (fstat(fd, &mine) < 0 || fstatat(bs->blobsfd, hex, &cur, AT_SYMLINK_NOFOLLOW) < 0 ||
        mine.st_ino != cur.st_ino || mine.st_dev != cur.st_dev)
        return -1;
    /* Used since the scan (opened and closed again): it is not the oldest any more. */
    if (mine.st_atim.tv_sec != s->atime.tv_sec || mine.st_atim.tv_nsec != s->atime.tv_nsec)
        return 0;
    if (unlinkat(bs->blobsfd, hex, 0) < 0) {
        if (errno == ENOENT)
            return -1;
        return kiln_error_set(err, KILN_EIO, errno, "gc: remove blob '%s'", s->e.digest);
    }
    return 1;
}

int kiln_blobstore_gc(struct kiln_blobstore *bs, const struct kiln_blobstore_gc_options *opts,
                      struct kiln_blobstore_gc_stats *ret_stats, struct kiln_error **err)
{
    struct kiln_blobstore_gc_options def = {.target_bytes = -1};
    if (!opts)
        opts = &def;
    struct kiln_blobstore_gc_stats st = {0};
    int64_t age = opts->tmp_max_age_s == 0 ? KILN_STORE_TMP_MAX_AGE : opts->tmp_max_age_s;

    int r = kiln_fs_remove_stale_at(bs->tmpfd, age, &st.tmp_removed, &st.tmp_bytes_freed, err);
    if (r < 0) {
        kiln_error_prefix(err, "gc blob store '%s'", bs->root);
        return r;
    }

    struct scan_entry *v = NULL;
    size_t n = 0;
    r = scan(bs, &v, &n, err);
    if (r < 0)
        return r;
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += v[i].e.size;

    bool limited = opts->target_bytes >= 0 || bs->cap > 0;
    uint64_t target = opts->target_bytes >= 0 ? (uint64_t)opts->target_bytes : bs->cap;
    uint64_t left = n;
    for (size_t i = 0; limited && i < n && total > target; i++) {
        if (is_pinned(opts->pinned, v[i].e.digest)) {
            st.kept_pinned++;
            continue;
        }
        r = try_remove(bs, &v[i], err);
        if (r < -1)
            break;
        if (r == 0) {
            st.kept_in_use++;
            continue;
        }
        total -= v[i].e.size;
        left--;
        if (r == 1) {
            st.blobs_removed++;
            st.bytes_freed += v[i].e.size;
        }
        r = 0;
    }
    free(v);
    if (st.blobs_removed)
        (void)fsync(bs->blobsfd);
    if (r < 0)
        return r;
    st.blobs_left = left;
    st.bytes_left = total;
    if (ret_stats)
        *ret_stats = st;
    return 0;
}
