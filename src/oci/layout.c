#include "util/common.h"

#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "oci/layout.h"
#include "oci/mediatype.h"
#include "util/buf.h"
#include "util/diag.h"
#include "util/fs.h"

#define LAYOUT_FILE     "oci-layout"
#define INDEX_FILE      "index.json"
#define BLOBS_DIR       "blobs"
#define LAYOUT_FILE_MAX 4096
#define IO_CHUNK        ((size_t)128 << 10)
#define DIR_MODE        0755
#define FILE_MODE       0644
#define TMP_NAME_BUF    64
#define REF_NAME_MAX    4096
#define QUOTE_MAX       80
#define NAMES_SHOWN     20

struct kiln_layout {
    char *path;
    int dirfd;
    int blobsfd;
};

struct kiln_layout_writer {
    struct kiln_layout *l;
    int fd;
    char tmpname[TMP_NAME_BUF]; /* in blobs/ */
    struct kiln_digest_verifier v;
    bool failed;
    bool committed;
};

static char *quote(const char *s)
{
    return kiln_diag_quote(s, QUOTE_MAX);
}

/* ---- low-level file helpers ------------------------------------------------------------- */

static void random_name(char out[TMP_NAME_BUF], const char *prefix)
{
    static unsigned counter;
    uint64_t r = 0;
    if (getrandom(&r, sizeof(r), GRND_NONBLOCK) != (ssize_t)sizeof(r)) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        r = ((uint64_t)getpid() << 40) ^ ((uint64_t)ts.tv_nsec << 8) ^
            __atomic_add_fetch(&counter, 1, __ATOMIC_RELAXED);
    }
    snprintf(out, TMP_NAME_BUF, "%s%016" PRIx64, prefix, r);
}

/* Create a new temporary file in dfd; returns the fd, its name in `name`. */
static int create_tmp(int dfd, const char *prefix, char name[TMP_NAME_BUF], const char *where,
                      struct kiln_error **err)
{
    for (int tries = 0; tries < 16; tries++) {
        random_name(name, prefix);
        int fd = openat(dfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY,
                        FILE_MODE);
        if (fd >= 0)
            return fd;
        if (errno != EEXIST)
            return kiln_error_set(err, KILN_EIO, errno, "create a temporary file in '%s'", where);
    }
    return kiln_error_set(err, KILN_EIO, EEXIST, "create a temporary file in '%s'", where);
}

/* 0, or -errno. */
static int write_all(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* read() that retries on EINTR. */
static ssize_t read_some(int fd, void *buf, size_t len)
{
    for (;;) {
        ssize_t n = read(fd, buf, len);
        if (n >= 0 || errno != EINTR)
            return n;
    }
}

/*
 * Replace dfd/name with `data` atomically: temporary file, fsync, rename,
 * fsync of the directory. `display` names the file in messages.
 */
static int write_file_atomic(int dfd, const char *name, const void *data, size_t len,
                             const char *display, struct kiln_error **err)
{
    char tmp[TMP_NAME_BUF];
    _cleanup_free_ char *prefix = kiln_xasprintf(".%s.tmp-", name);
    int fd = create_tmp(dfd, prefix, tmp, display, err);
    if (fd < 0)
        return fd;
    int e = write_all(fd, data, len);
    if (!e && fsync(fd) < 0)
        e = -errno;
    if (close(fd) < 0 && !e)
        e = -errno;
    if (!e && renameat(dfd, tmp, dfd, name) < 0)
        e = -errno;
    if (e) {
        unlinkat(dfd, tmp, 0);
        return kiln_error_set(err, KILN_EIO, -e, "write '%s'", display);
    }
    if (fsync(dfd) < 0)
        return kiln_error_set(err, KILN_EIO, errno, "sync the directory of '%s'", display);
    return 0;
}

/*
 * Read dfd/name (a regular file, not followed if a symlink) of at most max
 * bytes. *ret is NUL-terminated; the caller frees it.
 */
static int read_file_at(int dfd, const char *name, const char *display, size_t max, char **ret,
                        size_t *ret_len, struct kiln_error **err)
{
    _cleanup_close_ int fd = openat(dfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);
    if (fd < 0) {
        if (errno == ENOENT)
            return kiln_error_set(err, KILN_ENOTFOUND, 0, "'%s' not found", display);
        return kiln_error_set(err, KILN_EIO, errno, "open '%s'", display);
    }
    struct stat st;
    if (fstat(fd, &st) < 0)
        return kiln_error_set(err, KILN_EIO, errno, "stat '%s'", display);
    if (!S_ISREG(st.st_mode))
        return kiln_error_set(err, KILN_EINVAL, 0, "'%s' is not a regular file", display);
    if ((uint64_t)st.st_size > max)
        return kiln_error_set(err, KILN_ETOOBIG, 0, "'%s' is larger than %zu bytes", display, max);
    char *data = NULL;
    size_t len = 0;
    int r = kiln_fs_read_all(fd, max, &data, &len);
    if (r == -KILN_ETOOBIG)
        return kiln_error_set(err, KILN_ETOOBIG, 0, "'%s' is larger than %zu bytes", display, max);
    if (r < 0)
        return kiln_error_set(err, KILN_EIO, errno, "read '%s'", display);
    *ret = data;
    *ret_len = len;
    return 0;
}

/* Make dfd/name a directory (an existing one is fine) and open it. */
static int mkdir_open(int dfd, const char *name, const char *display, struct kiln_error **err)
{
    if (mkdirat(dfd, name, DIR_MODE) < 0 && errno != EEXIST)
        return kiln_error_set(err, KILN_EIO, errno, "create '%s'", display);
    int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return kiln_error_set(err, KILN_EIO, errno, "open '%s'", display);
    return fd;
}

/* An fd of the layout directory holding an exclusive flock(); close it to unlock. */
static int lock_layout(struct kiln_layout *l, struct kiln_error **err)
{
    int fd = openat(l->dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return kiln_error_set(err, KILN_EIO, errno, "open '%s'", l->path);
    while (flock(fd, LOCK_EX) < 0) {
        if (errno != EINTR) {
            int e = errno;
            close(fd);
            return kiln_error_set(err, KILN_EIO, e, "lock '%s'", l->path);
        }
    }
    return fd;
}

/* ---- open / create ---------------------------------------------------------------------- */

void kiln_layout_free(struct kiln_layout *l)
{
    if (!l)
        return;
    if (l->blobsfd >= 0)
        close(l->blobsfd);
    if (l->dirfd >= 0)
        close(l->dirfd);
    free(l->path);
    free(l);
}

const char *kiln_layout_path(const struct kiln_layout *l)
{
    return l->path;
}

int kiln_layout_dirfd(const struct kiln_layout *l)
{
    return l->dirfd;
}

static struct kiln_layout *layout_new(const char *path)
{
    struct kiln_layout *l = kiln_xcalloc(1, sizeof(*l));
    l->path = kiln_xstrdup(path);
    l->dirfd = -1;
    l->blobsfd = -1;
    return l;
}

static void layout_freep(struct kiln_layout **l)
{
    kiln_layout_free(*l);
}

static int open_dir(const char *path, struct kiln_error **err)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return kiln_error_set(err, KILN_ENOTFOUND, 0, "'%s' not found", path);
        return kiln_error_set(err, KILN_EIO, errno, "open '%s'", path);
    }
    return fd;
}

int kiln_layout_create(const char *path, struct kiln_layout **ret, struct kiln_error **err)
{
    if (!path || !*path)
        return kiln_error_set(err, KILN_EINVAL, 0, "layout path is empty");
    if (mkdir(path, DIR_MODE) < 0 && errno != EEXIST)
        return kiln_error_set(err, KILN_EIO, errno, "create '%s'", path);
    _cleanup_(layout_freep) struct kiln_layout *l = layout_new(path);
    l->dirfd = open_dir(path, err);
    if (l->dirfd < 0)
        return l->dirfd;
    _cleanup_close_ int lock = lock_layout(l, err);
    if (lock < 0)
        return lock;

    struct stat st;
    if (fstatat(l->dirfd, LAYOUT_FILE, &st, AT_SYMLINK_NOFOLLOW) == 0)
        return kiln_error_set(err, KILN_EEXIST, 0, "'%s' is already an OCI layout", path);
    if (errno != ENOENT)
        return kiln_error_set(err, KILN_EIO, errno, "stat '%s/%s'", path, LAYOUT_FILE);

    _cleanup_free_ char *blobs = kiln_xasprintf("%s/%s", path, BLOBS_DIR);
    l->blobsfd = mkdir_open(l->dirfd, BLOBS_DIR, blobs, err);
    if (l->blobsfd < 0)
        return l->blobsfd;
    _cleanup_free_ char *sha = kiln_xasprintf("%s/sha256", blobs);
    _cleanup_close_ int shafd = mkdir_open(l->blobsfd, "sha256", sha, err);
    if (shafd < 0)
        return shafd;
    if (fsync(l->blobsfd) < 0)
        return kiln_error_set(err, KILN_EIO, errno, "sync '%s'", blobs);

    _cleanup_(kiln_index_release) struct kiln_index idx = KILN_INDEX_INIT;
    idx.media_type = kiln_xstrdup(KILN_MT_OCI_INDEX);
    _cleanup_(kiln_buf_release) struct kiln_buf b = KILN_BUF_INIT;
    int r = kiln_index_serialize(&idx, &b, err);
    if (r < 0)
        return r;
    _cleanup_free_ char *index = kiln_xasprintf("%s/%s", path, INDEX_FILE);
    r = write_file_atomic(l->dirfd, INDEX_FILE, b.buf, b.len, index, err);
    if (r < 0)
        return r;
    /* last: a directory is a layout once this file is there */
    static const char layout[] = "{\"imageLayoutVersion\":\"" KILN_LAYOUT_VERSION "\"}";
    _cleanup_free_ char *lf = kiln_xasprintf("%s/%s", path, LAYOUT_FILE);
    r = write_file_atomic(l->dirfd, LAYOUT_FILE, layout, sizeof(layout) - 1, lf, err);
    if (r < 0)
        return r;
    *ret = TAKE_PTR(l);
    return 0;
}

static int check_layout_file(struct kiln_layout *l, struct kiln_error **err)
{
    _cleanup_free_ char *display = kiln_xasprintf("%s/%s", l->path, LAYOUT_FILE);
    _cleanup_free_ char *data = NULL;
    size_t len = 0;
    int r = read_file_at(l->dirfd, LAYOUT_FILE, display, LAYOUT_FILE_MAX, &data, &len, err);
    if (r == -KILN_ENOTFOUND)
        return kiln_error_set(err, KILN_ENOTFOUND, 0, "'%s' is not an OCI layout: no %s file",
                              l->path, LAYOUT_FILE);
    if (r < 0)
        return r;
    json_error_t jerr;
    json_t *root = json_loadb(data, len, JSON_REJECT_DUPLICATES, &jerr);
    const char *v = json_string_value(json_object_get(root, "imageLayoutVersion"));
    if (!v) {
        json_decref(root);
        return kiln_error_set(err, KILN_EINVAL, 0, "'%s': no imageLayoutVersion", display);
    }
    /* 1.0.x: patch versions do not change the format */
    if (strncmp(v, "1.0.", 4) != 0 || !v[4] || strspn(v + 4, "0123456789") != strlen(v + 4)) {
        _cleanup_free_ char *q = quote(v);
        json_decref(root);
        return kiln_error_set(err, KILN_EUNSUPPORTED, 0,
                              "'%s': unsupported imageLayoutVersion '%s'", display, q);
    }
    json_decref(root);
    return 0;
}

int kiln_layout_open(const char *path, struct kiln_layout **ret, struct kiln_error **err)
{
    if (!path || !*path)
        return kiln_error_set(err, KILN_EINVAL, 0, "layout path is empty");
    _cleanup_(layout_freep) struct kiln_layout *l = layout_new(path);
    l->dirfd = open_dir(path, err);
    if (l->dirfd < 0)
        return l->dirfd;
    int r = check_layout_file(l, err);
    if (r < 0)
        return r;
    l->blobsfd = openat(l->dirfd, BLOBS_DIR, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (l->blobsfd < 0) {
        if (errno == ENOENT || errno == ENOTDIR || errno == ELOOP)
            return kiln_error_set(err, KILN_EINVAL, 0, "'%s' is not an OCI layout: no %s directory",
                                  path, BLOBS_DIR);
        return kiln_error_set(err, KILN_EIO, errno, "open '%s/%s'", path, BLOBS_DIR);
    }
    struct kiln_index idx = KILN_INDEX_INIT;
    r = kiln_layout_index_read(l, &idx, err);
    if (r < 0)
        return r;
    kiln_index_release(&idx);
    *ret = TAKE_PTR(l);
    return 0;
}

/* ---- blobs ------------------------------------------------------------------------------ */

/*
 * Open blobs/<alg>/ for a digest (made when `create`); *ret_hex points at the
 * encoded part of digest. -KILN_ENOTFOUND (no error set) when the directory is
 * missing and not to be made.
 */
static int alg_dir(struct kiln_layout *l, const char *digest, bool create, const char **ret_hex,
                   struct kiln_error **err)
{
    int r = kiln_digest_validate(digest, err);
    if (r < 0)
        return r;
    char alg[8];
    kiln_digest_algorithm(digest, alg);
    *ret_hex = kiln_digest_encoded(digest);
    if (create) {
        if (mkdirat(l->blobsfd, alg, DIR_MODE) == 0) {
            if (fsync(l->blobsfd) < 0)
                return kiln_error_set(err, KILN_EIO, errno, "sync '%s/%s'", l->path, BLOBS_DIR);
        } else if (errno != EEXIST) {
            return kiln_error_set(err, KILN_EIO, errno, "create '%s/%s/%s'", l->path, BLOBS_DIR,
                                  alg);
        }
    }
    int fd = openat(l->blobsfd, alg, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT && !create)
            return -KILN_ENOTFOUND;
        return kiln_error_set(err, KILN_EIO, errno, "open '%s/%s/%s'", l->path, BLOBS_DIR, alg);
    }
    return fd;
}

int kiln_layout_blob_exists(struct kiln_layout *l, const char *digest, int64_t *ret_size,
                            struct kiln_error **err)
{
    const char *hex;
    _cleanup_close_ int dfd = alg_dir(l, digest, false, &hex, err);
    if (dfd == -KILN_ENOTFOUND)
        return 0;
    if (dfd < 0)
        return dfd;
    struct stat st;
    if (fstatat(dfd, hex, &st, AT_SYMLINK_NOFOLLOW) < 0) {
        if (errno == ENOENT)
            return 0;
        return kiln_error_set(err, KILN_EIO, errno, "stat blob %s", digest);
    }
    if (!S_ISREG(st.st_mode))
        return kiln_error_set(err, KILN_EINVAL, 0, "blob %s is not a regular file", digest);
    if (ret_size)
        *ret_size = (int64_t)st.st_size;
    return 1;
}

int kiln_layout_blob_open(struct kiln_layout *l, const char *digest, int64_t *ret_size,
                          struct kiln_error **err)
{
    const char *hex;
    _cleanup_close_ int dfd = alg_dir(l, digest, false, &hex, err);
    if (dfd == -KILN_ENOTFOUND)
        return kiln_error_set(err, KILN_ENOTFOUND, 0, "blob %s not found in '%s'", digest, l->path);
    if (dfd < 0)
        return dfd;
    _cleanup_close_ int fd = openat(dfd, hex, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);
    if (fd < 0) {
        if (errno == ENOENT)
            return kiln_error_set(err, KILN_ENOTFOUND, 0, "blob %s not found in '%s'", digest,
                                  l->path);
        return kiln_error_set(err, KILN_EIO, errno, "open blob %s", digest);
    }
    struct stat st;
    if (fstat(fd, &st) < 0)
        return kiln_error_set(err, KILN_EIO, errno, "stat blob %s", digest);
    if (!S_ISREG(st.st_mode))
        return kiln_error_set(err, KILN_EINVAL, 0, "blob %s is not a regular file", digest);
    if (ret_size)
        *ret_size = (int64_t)st.st_size;
    return TAKE_FD(fd);
}

int kiln_layout_blob_read(struct kiln_layout *l, const char *digest, size_t max, char **ret_data,
                          size_t *ret_len, struct kiln_error **err)
{
    int64_t size = 0;
    _cleanup_close_ int fd = kiln_layout_blob_open(l, digest, &size, err);
    if (fd < 0)
        return fd;
    if ((uint64_t)size > max)
        return kiln_error_set(err, KILN_ETOOBIG, 0, "blob %s is larger than %zu bytes", digest,
                              max);
    struct kiln_digest_verifier v;
    int r = kiln_digest_verifier_init(&v, digest, size, err);
    if (r < 0) {
        kiln_digest_verifier_release(&v);
        return r;
    }
    /* one byte more than expected, to notice a file that grew */
    size_t cap = (size_t)size + 1, len = 0;
    _cleanup_free_ char *data = kiln_xmalloc(cap + 1);
    for (;;) {
        ssize_t n = read_some(fd, data + len, cap - len);
        if (n < 0) {
            r = kiln_error_set(err, KILN_EIO, errno, "read blob %s", digest);
            break;
        }
        if (n == 0)
            break;
        len += (size_t)n;
        if (len == cap)
            break;
    }
    if (r >= 0)
        r = kiln_digest_verifier_update(&v, data, len, err);
    if (r >= 0)
        r = kiln_digest_verifier_check(&v, err);
    kiln_digest_verifier_release(&v);
    if (r < 0)
        return err ? kiln_error_prefix(err, "blob %s", digest) : r;
    data[len] = '\0';
    *ret_data = TAKE_PTR(data);
    *ret_len = len;
    return 0;
}

int kiln_layout_blob_verify(struct kiln_layout *l, const char *digest, struct kiln_error **err)
{
    int64_t size = 0;
    _cleanup_close_ int fd = kiln_layout_blob_open(l, digest, &size, err);
    if (fd < 0)
        return fd;
    struct kiln_digest_verifier v;
    int r = kiln_digest_verifier_init(&v, digest, -1, err);
    _cleanup_free_ char *buf = r >= 0 ? kiln_xmalloc(IO_CHUNK) : NULL;
    while (r >= 0) {
        ssize_t n = read_some(fd, buf, IO_CHUNK);
        if (n < 0)
            r = kiln_error_set(err, KILN_EIO, errno, "read blob %s", digest);
        else if (n == 0)
            break;
        else
            r = kiln_digest_verifier_update(&v, buf, (size_t)n, err);
    }
    if (r >= 0)
        r = kiln_digest_verifier_check(&v, err);
    kiln_digest_verifier_release(&v);
    if (r < 0 && err && r != -KILN_EIO)
        return kiln_error_prefix(err, "blob %s", digest);
    return r < 0 ? r : 0;
}

/* ---- blob writer ------------------------------------------------------------------------ */

void kiln_layout_writer_free(struct kiln_layout_writer *w)
{
    if (!w)
        return;
    if (w->fd >= 0)
        close(w->fd);
    if (!w->committed && w->tmpname[0])
        unlinkat(w->l->blobsfd, w->tmpname, 0);
    kiln_digest_verifier_release(&w->v);
    free(w);
}

static void writer_freep(struct kiln_layout_writer **w)
{
    kiln_layout_writer_free(*w);
}

int kiln_layout_writer_begin(struct kiln_layout *l, const char *expected_digest,
                             int64_t expected_size, struct kiln_layout_writer **ret,
                             struct kiln_error **err)
{
    _cleanup_(writer_freep) struct kiln_layout_writer *w = kiln_xcalloc(1, sizeof(*w));
    w->l = l;
    w->fd = -1;
    int r = kiln_digest_verifier_init(&w->v, expected_digest, expected_size, err);
    if (r < 0)
        return r;
    _cleanup_free_ char *where = kiln_xasprintf("%s/%s", l->path, BLOBS_DIR);
    w->fd = create_tmp(l->blobsfd, ".tmp-", w->tmpname, where, err);
    if (w->fd < 0) {
        w->tmpname[0] = '\0';
        return w->fd;
    }
    *ret = TAKE_PTR(w);
    return 0;
}

int kiln_layout_writer_write(struct kiln_layout_writer *w, const void *data, size_t len,
                             struct kiln_error **err)
{
    if (w->failed || w->committed)
        return kiln_error_set(err, KILN_EINTERNAL, 0, "blob writer used after failure or commit");
    int r = kiln_digest_verifier_update(&w->v, data, len, err);
    if (r < 0) {
        w->failed = true;
        return r;
    }
    int e = write_all(w->fd, data, len);
    if (e) {
        w->failed = true;
        return kiln_error_set(err, KILN_EIO, -e, "write blob to '%s/%s/%s'", w->l->path, BLOBS_DIR,
                              w->tmpname);
    }
    return 0;
}

int kiln_layout_writer_commit(struct kiln_layout_writer *w, char ret_digest[KILN_DIGEST_BUFSZ],
                              struct kiln_error **err)
{
    if (w->failed || w->committed)
        return kiln_error_set(err, KILN_EINTERNAL, 0, "blob writer used after failure or commit");
    w->failed = true; /* until the end is reached */
    int r = kiln_digest_verifier_check(&w->v, err);
    if (r < 0)
        return r;
    if (fsync(w->fd) < 0)
        return kiln_error_set(err, KILN_EIO, errno, "sync blob %s", w->v.actual);
    int fd = TAKE_FD(w->fd);
    if (close(fd) < 0)
        return kiln_error_set(err, KILN_EIO, errno, "close blob %s", w->v.actual);
    const char *hex;
    _cleanup_close_ int dfd = alg_dir(w->l, w->v.actual, true, &hex, err);
    if (dfd < 0)
        return dfd;
    if (renameat(w->l->blobsfd, w->tmpname, dfd, hex) < 0)
        return kiln_error_set(err, KILN_EIO, errno, "store blob %s", w->v.actual);
    w->committed = true;
    w->failed = false;
    if (fsync(dfd) < 0)
        return kiln_error_set(err, KILN_EIO, errno, "sync the directory of blob %s", w->v.actual);
    if (ret_digest)
        memcpy(ret_digest, w->v.actual, strlen(w->v.actual) + 1);
    return 0;
}

int kiln_layout_blob_write(struct kiln_layout *l, const void *data, size_t len,
                           const char *expected_digest, char ret_digest[KILN_DIGEST_BUFSZ],
                           struct kiln_error **err)
{
    struct kiln_digest_verifier v;
    int r = kiln_digest_verifier_init(&v, expected_digest, (int64_t)len, err);
    if (r >= 0)
        r = kiln_digest_verifier_update(&v, data, len, err);
    if (r >= 0)
        r = kiln_digest_verifier_check(&v, err);
    kiln_digest_verifier_release(&v);
    if (r < 0)
        return r;

    r = kiln_layout_blob_exists(l, v.actual, NULL, err);
    if (r < 0)
        return r;
    if (r == 0) {
        _cleanup_(writer_freep) struct kiln_layout_writer *w = NULL;
        r = kiln_layout_writer_begin(l, v.actual, (int64_t)len, &w, err);
        if (r >= 0)
            r = kiln_layout_writer_write(w, data, len, err);
        if (r >= 0)
            r = kiln_layout_writer_commit(w, NULL, err);
        if (r < 0)
            return r;
    }
    if (ret_digest)
        memcpy(ret_digest, v.actual, strlen(v.actual) + 1);
    return 0;
}

int kiln_layout_blob_write_fd(struct kiln_layout *l, int fd, const char *expected_digest,
                              int64_t expected_size, char ret_digest[KILN_DIGEST_BUFSZ],
                              struct kiln_error **err)
{
    _cleanup_(writer_freep) struct kiln_layout_writer *w = NULL;
    int r = kiln_layout_writer_begin(l, expected_digest, expected_size, &w, err);
    if (r < 0)
        return r;
    _cleanup_free_ char *buf = kiln_xmalloc(IO_CHUNK);
    for (;;) {
        ssize_t n = read_some(fd, buf, IO_CHUNK);
        if (n < 0)
            return kiln_error_set(err, KILN_EIO, errno, "read blob content");
        if (n == 0)
            break;
        r = kiln_layout_writer_write(w, buf, (size_t)n, err);
        if (r < 0)
            return r;
    }
    return kiln_layout_writer_commit(w, ret_digest, err);
}

/* ---- index.json ------------------------------------------------------------------------- */

static bool is_alnum(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

static bool is_ref_sep(char c)
{
    return c == '-' || c == '.' || c == '_' || c == ':' || c == '@' || c == '+';
}

bool kiln_layout_ref_name_ok(const char *name)
{
    if (!name || !*name || strlen(name) > REF_NAME_MAX)
        return false;
    const char *p = name;
    for (;;) {
        /* component := alnum (separator alnum)* */
        if (!is_alnum(*p))
            return false;
        for (;;) {
            while (is_alnum(*p))
                p++;
            if (p[0] == '-' && p[1] == '-')
                p += 2;
            else if (is_ref_sep(*p))
                p++;
            else
                break;
            if (!is_alnum(*p))
                return false;
        }
        if (*p == '\0')
            return true;
        if (*p != '/')
            return false;
        p++;
    }
}

int kiln_layout_index_read(struct kiln_layout *l, struct kiln_index *ret, struct kiln_error **err)
{
    _cleanup_free_ char *display = kiln_xasprintf("%s/%s", l->path, INDEX_FILE);
    _cleanup_free_ char *data = NULL;
    size_t len = 0;
    int r = read_file_at(l->dirfd, INDEX_FILE, display, KILN_MANIFEST_MAX_SIZE, &data, &len, err);
    if (r < 0)
        return r;
    r = kiln_index_parse(data, len, NULL, ret, err);
    if (r < 0)
        return err ? kiln_error_prefix(err, "'%s'", display) : r;
    return 0;
}

static const char *ref_name_of(const struct kiln_descriptor *d)
{
    return kiln_descriptor_annotation(d, KILN_ANNOTATION_REF_NAME);
}

int kiln_layout_index_add(struct kiln_layout *l, const struct kiln_descriptor *desc,
                          const char *ref_name, struct kiln_error **err)
{
    if (ref_name && !kiln_layout_ref_name_ok(ref_name)) {
        _cleanup_free_ char *q = err ? quote(ref_name) : NULL;
        return kiln_error_set(err, KILN_EINVAL, 0, "invalid ref name '%s'", q);
    }
    _cleanup_(kiln_descriptor_release) struct kiln_descriptor d = KILN_DESCRIPTOR_INIT;
    kiln_descriptor_copy(&d, desc);
    if (ref_name) {
        int r = kiln_descriptor_set_annotation(&d, KILN_ANNOTATION_REF_NAME, ref_name, err);
        if (r < 0)
            return r;
    }
    const char *name = ref_name_of(&d);

    _cleanup_close_ int lock = lock_layout(l, err);
    if (lock < 0)
        return lock;
    _cleanup_(kiln_index_release) struct kiln_index idx = KILN_INDEX_INIT;
    int r = kiln_layout_index_read(l, &idx, err);
    if (r < 0)
        return r;
    for (size_t i = 0; i < idx.n_manifests;) {
        const struct kiln_descriptor *e = &idx.manifests[i];
        const char *en = ref_name_of(e);
        bool same = name ? (en && strcmp(en, name) == 0)
                         : (!en && e->digest && d.digest && strcmp(e->digest, d.digest) == 0);
        if (same)
            kiln_index_remove(&idx, i);
        else
            i++;
    }
    kiln_index_add(&idx, &d);

    _cleanup_(kiln_buf_release) struct kiln_buf b = KILN_BUF_INIT;
    kiln_buf_init(&b, KILN_MANIFEST_MAX_SIZE);
    _cleanup_free_ char *display = kiln_xasprintf("%s/%s", l->path, INDEX_FILE);
    r = kiln_index_serialize(&idx, &b, err);
    if (r < 0)
        return err ? kiln_error_prefix(err, "update '%s'", display) : r;
    return write_file_atomic(l->dirfd, INDEX_FILE, b.buf, b.len, display, err);
}

int kiln_layout_resolve(struct kiln_layout *l, const char *ref_name, struct kiln_descriptor *ret,
                        struct kiln_error **err)
{
    _cleanup_(kiln_index_release) struct kiln_index idx = KILN_INDEX_INIT;
    int r = kiln_layout_index_read(l, &idx, err);
    if (r < 0)
        return r;
    if (!ref_name) {
        if (idx.n_manifests == 1) {
            kiln_descriptor_copy(ret, &idx.manifests[0]);
            return 0;
        }
        if (idx.n_manifests == 0)
            return kiln_error_set(err, KILN_ENOTFOUND, 0, "'%s/%s' has no manifests", l->path,
                                  INDEX_FILE);
    } else {
        for (size_t i = 0; i < idx.n_manifests; i++) {
            const char *en = ref_name_of(&idx.manifests[i]);
            if (en && strcmp(en, ref_name) == 0) {
                kiln_descriptor_copy(ret, &idx.manifests[i]);
                return 0;
            }
        }
    }
    if (!err)
        return ref_name ? -KILN_ENOTFOUND : -KILN_EINVAL;

    _cleanup_(kiln_buf_release) struct kiln_buf names = KILN_BUF_INIT;
    size_t shown = 0;
    for (size_t i = 0; i < idx.n_manifests; i++) {
        const char *en = ref_name_of(&idx.manifests[i]);
        if (!en)
            continue;
        if (shown == NAMES_SHOWN) {
            kiln_buf_adds(&names, ", ...");
            break;
        }
        _cleanup_free_ char *q = quote(en);
        kiln_buf_addf(&names, "%s%s", shown++ ? ", " : "", q);
    }
    if (!ref_name)
        return kiln_error_set(err, KILN_EINVAL, 0,
                              "'%s/%s' has %zu manifests: name one (names: %s)", l->path,
                              INDEX_FILE, idx.n_manifests, shown ? names.buf : "none");
    _cleanup_free_ char *q = quote(ref_name);
    return kiln_error_set(err, KILN_ENOTFOUND, 0, "no manifest named '%s' in '%s/%s'; names: %s", q,
                          l->path, INDEX_FILE, shown ? names.buf : "none");
}
