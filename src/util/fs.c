#include "util/common.h"

#include <fcntl.h>
#include <dirent.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "util/fs.h"

#ifndef STATX_ATTR_MOUNT_ROOT
#define STATX_ATTR_MOUNT_ROOT 0x00002000
#endif

/* Directory levels of a tree walk that keep their fd open; deeper ones reopen via "..". */
#define WALK_KEEP_FDS 16

void kiln_fs_random_name(char out[KILN_FS_RANDOM_NAME_LEN + 1])
{
    static const char hex[] = "0123456789abcdef";
    uint8_t raw[KILN_FS_RANDOM_NAME_LEN / 2];
    size_t got = 0;

    while (got < sizeof(raw)) {
        ssize_t n = getrandom(raw + got, sizeof(raw) - got, GRND_NONBLOCK);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    if (got < sizeof(raw)) {
        /* No entropy yet (early boot): a unique-enough mix is all a temp name needs. */
        static unsigned long counter;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t x =
            (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 30) ^ ((uint64_t)getpid() << 16) ^
            (uint64_t)__atomic_add_fetch(&counter, 1, __ATOMIC_RELAXED) * 0x9e3779b97f4a7c15ULL;
        for (size_t i = 0; i < sizeof(raw); i++)
            raw[i] = (uint8_t)(x >> (8 * (i % 8)));
    }
    for (size_t i = 0; i < sizeof(raw); i++) {
        out[2 * i] = hex[raw[i] >> 4];
        out[2 * i + 1] = hex[raw[i] & 15];
    }
    out[KILN_FS_RANDOM_NAME_LEN] = '\0';
}

int kiln_fs_write_all(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -KILN_EIO;
        }
        if (n == 0) {
            errno = EIO;
            return -KILN_EIO;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int kiln_fs_read_all(int fd, size_t max, char **ret, size_t *ret_len)
{
    size_t cap = 4096, len = 0;
    _cleanup_free_ char *data = kiln_xmalloc(cap + 1);
    for (;;) {
        if (len == cap) {
            cap *= 2;
            data = kiln_xrealloc(data, cap + 1);
        }
        ssize_t n = read(fd, data + len, cap - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -KILN_EIO;
        if (n == 0)
            break;
        len += (size_t)n;
        if (len > max)
            return -KILN_ETOOBIG;
    }
    data[len] = '\0';
    *ret = TAKE_PTR(data);
    if (ret_len)
        *ret_len = len;
    return 0;
}

static int check_path(const char *path, const char *what, struct kiln_error **err)
{
    if (!path || !*path)
        return kiln_error_set(err, KILN_EINVAL, 0, "%s: empty path", what);
    if (path[0] == '/')
        return kiln_error_set(err, KILN_EINVAL, 0, "%s '%s': absolute path", what, path);
    for (const char *p = path; *p;) {
        const char *e = strchr(p, '/');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (n == 2 && p[0] == '.' && p[1] == '.')
            return kiln_error_set(err, KILN_EINVAL, 0, "%s '%s': '..' component", what, path);
        p += n;
        while (*p == '/')
            p++;
    }
    return 0;
}

/* Explain why openat(O_DIRECTORY | O_NOFOLLOW) of `name` failed with `e`. */
static int open_dir_error(int fd, const char *name, const char *path, int e, const char *what,
                          struct kiln_error **err)
{
    struct stat st;
    if (e == ENOENT)
        return kiln_error_set(err, KILN_ENOTFOUND, 0, "%s '%s': '%s' does not exist", what, path,
                              name);
    if ((e == ELOOP || e == ENOTDIR) && fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
        if (S_ISLNK(st.st_mode))
            return kiln_error_set(err, KILN_EIO, 0, "%s '%s': '%s' is a symbolic link", what, path,
                                  name);
        if (!S_ISDIR(st.st_mode))
            return kiln_error_set(err, KILN_EIO, 0, "%s '%s': '%s' is not a directory", what, path,
                                  name);
    }
    return kiln_error_set(err, KILN_EIO, e, "%s '%s': open '%s'", what, path, name);
}

/* Walk `path` below dirfd component by component, creating directories when `create`. */
static int walk_dirs(int dirfd, const char *path, bool create, mode_t mode, const char *what,
                     struct kiln_error **err)
{
    int r = check_path(path, what, err);
    if (r < 0)
        return r;

    _cleanup_close_ int cur = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (cur < 0)
        return kiln_error_set(err, KILN_EIO, errno, "%s '%s': open start directory", what, path);

    _cleanup_free_ char *copy = kiln_xstrdup(path);
    char *p = copy;
    while (*p) {
        char *e = strchr(p, '/');
        if (e)
            *e = '\0';
        if (*p && strcmp(p, ".") != 0) {
            if (create && mkdirat(cur, p, mode) < 0 && errno != EEXIST)
                return kiln_error_set(err, KILN_EIO, errno, "%s '%s': mkdir '%s'", what, path, p);
            int fd = openat(cur, p, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (fd < 0)
                return open_dir_error(cur, p, path, errno, what, err);
            close(cur);
            cur = fd;
        }
        if (!e)
            break;
        p = e + 1;
    }
    return TAKE_FD(cur);
}

int kiln_fs_open_dir(int dirfd, const char *path, struct kiln_error **err)
{
    return walk_dirs(dirfd, path, false, 0, "open directory", err);
}

int kiln_fs_mkdir_p_at(int dirfd, const char *path, mode_t mode, int *ret_fd,
                       struct kiln_error **err)
{
    int fd = walk_dirs(dirfd, path, true, mode, "create directory", err);
    if (fd < 0)
        return fd;
    if (ret_fd)
        *ret_fd = fd;
    else
        close(fd);
    return 0;
}

int kiln_fs_fsync_dir(int dirfd, struct kiln_error **err)
{
    if (fsync(dirfd) < 0 && errno != EINVAL && errno != EROFS)
        return kiln_error_set(err, KILN_EIO, errno, "fsync directory");
    return 0;
}

/*
 * Split `path` into an open fd of its parent directory and its last
 * component (pointing into path). The last component may not be "." or "..".
 */
static int open_parent(int dirfd, const char *path, const char **ret_base, const char *what,
                       struct kiln_error **err)
{
    int r = check_path(path, what, err);
    if (r < 0)
        return r;
    size_t len = strlen(path);
    while (len > 1 && path[len - 1] == '/')
        len--;
    _cleanup_free_ char *trimmed = kiln_xstrndup(path, len);
    char *slash = strrchr(trimmed, '/');
    const char *base = slash ? slash + 1 : trimmed;
    if (!*base || strcmp(base, ".") == 0)
        return kiln_error_set(err, KILN_EINVAL, 0, "%s '%s': no file name", what, path);

    int fd;
    if (slash) {
        *slash = '\0';
        fd = walk_dirs(dirfd, *trimmed ? trimmed : ".", false, 0, what, err);
    } else {
        fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
            fd = kiln_error_set(err, KILN_EIO, errno, "%s '%s': open directory", what, path);
    }
    if (fd < 0)
        return fd;
    /* The base lives in the original path at the same offset. */
    *ret_base = path + (base - trimmed);
    return fd;
}

int kiln_fs_write_atomic(int dirfd, const char *path, const void *data, size_t len, mode_t mode,
                         struct kiln_error **err)
{
    const char *base = NULL;
    _cleanup_close_ int pfd = open_parent(dirfd, path, &base, "write", err);
    if (pfd < 0)
        return pfd;
    _cleanup_free_ char *name = NULL;
    {
        size_t blen = strcspn(base, "/");
        name = kiln_xstrndup(base, blen);
    }

    char rnd[KILN_FS_RANDOM_NAME_LEN + 1];
    kiln_fs_random_name(rnd);
    /* Keep the temp name within NAME_MAX whatever the length of the final one. */
    _cleanup_free_ char *tmp = kiln_xasprintf(".%.200s.%s.tmp", name, rnd);

    _cleanup_close_ int fd =
        openat(pfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return kiln_error_set(err, KILN_EIO, errno, "write '%s': create temp file", path);

    int e = 0;
    const char *step = NULL;
    if (kiln_fs_write_all(fd, data, len) < 0)
        e = errno, step = "write";
    else if (fchmod(fd, mode & 07777) < 0)
        e = errno, step = "chmod";
    else if (fsync(fd) < 0)
        e = errno, step = "fsync";
    else if (renameat(pfd, tmp, pfd, name) < 0)
        e = errno, step = "rename";
    if (step) {
        unlinkat(pfd, tmp, 0);
        return kiln_error_set(err, KILN_EIO, e, "write '%s': %s", path, step);
    }
    if (fsync(pfd) < 0 && errno != EINVAL)
        return kiln_error_set(err, KILN_EIO, errno, "write '%s': fsync directory", path);
    return 0;
}

/* ---- tree walks ---- */

struct inode_set {
    uint64_t *keys; /* pairs (dev, ino); 0,0 marks a free slot */
    size_t cap;     /* slots, a power of two */
    size_t n;
};

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

/* Add (dev, ino); returns true when it was new. */
static bool inode_set_add(struct inode_set *s, uint64_t dev, uint64_t ino)
{
    if ((s->n + 1) * 2 > s->cap) {
        size_t ncap = s->cap ? s->cap * 2 : 64;
        uint64_t *nk = kiln_xcalloc(ncap * 2, sizeof(uint64_t));
        for (size_t i = 0; i < s->cap; i++) {
            uint64_t d = s->keys[2 * i], n = s->keys[2 * i + 1];
            if (!d && !n)
                continue;
            size_t j = mix64(d * 31 + n) & (ncap - 1);
            while (nk[2 * j] || nk[2 * j + 1])
                j = (j + 1) & (ncap - 1);
            nk[2 * j] = d;
            nk[2 * j + 1] = n;
        }
        free(s->keys);
        s->keys = nk;
        s->cap = ncap;
    }
    if (!dev && !ino)
        ino = UINT64_MAX; /* keep the free marker free */
    size_t j = mix64(dev * 31 + ino) & (s->cap - 1);
    while (s->keys[2 * j] || s->keys[2 * j + 1]) {
        if (s->keys[2 * j] == dev && s->keys[2 * j + 1] == ino)
            return false;
        j = (j + 1) & (s->cap - 1);
    }
    s->keys[2 * j] = dev;
    s->keys[2 * j + 1] = ino;
    s->n++;
    return true;
}

struct walker {
    bool rm;        /* remove entries (else: measure) */
    uint64_t bytes; /* du */
    struct inode_set links;
    dev_t root_dev;
    const char *path; /* for messages */
};

struct level {
    int fd; /* -1 while closed to save descriptors */
    dev_t dev;
    ino_t ino;
    char **names; /* entries, read at once */
    size_t n, i;
};

static void level_release(struct level *l)
{
    if (l->fd >= 0)
        close(l->fd);
    l->fd = -1;
    for (size_t k = 0; k < l->n; k++)
        free(l->names[k]);
    free(l->names);
    l->names = NULL;
    l->n = l->i = 0;
}

static int read_names(struct walker *w, int fd, struct level *l, struct kiln_error **err)
{
    int dfd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    if (dfd < 0)
        return kiln_error_set(err, KILN_EIO, errno, "walk '%s': dup", w->path);
    DIR *d = fdopendir(dfd);
    if (!d) {
        int e = errno;
        close(dfd);
        return kiln_error_set(err, KILN_EIO, e, "walk '%s': opendir", w->path);
    }
    size_t cap = 0;
    for (;;) {
        errno = 0;
        struct dirent *de = readdir(d);
        if (!de) {
            if (errno) {
                int e = errno;
                closedir(d);
                return kiln_error_set(err, KILN_EIO, e, "walk '%s': readdir", w->path);
            }
            break;
        }
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        if (l->n == cap) {
            cap = cap ? cap * 2 : 16;
            l->names = kiln_xreallocarray(l->names, cap, sizeof(char *));
        }
        l->names[l->n++] = kiln_xstrdup(de->d_name);
    }
    closedir(d);
    return 0;
}

static bool is_mount_root(int fd)
{
    struct statx stx;
    if (statx(fd, "", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS, &stx) < 0)
        return false;
    return (stx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT) &&
           (stx.stx_attributes & STATX_ATTR_MOUNT_ROOT);
}

/* Called once a directory is open, before its entries. */
static void on_dir_enter(struct walker *w, int fd, const struct stat *st)
{
    if (w->rm) {
        if ((st->st_mode & 0700) != 0700)
            (void)fchmod(fd, (st->st_mode | 0700) & 07777);
    } else {
        /* Directories cannot be hard links: count each one. */
        w->bytes += (uint64_t)st->st_blocks * 512;
    }
}

static int on_file(struct walker *w, int dirfd, const char *name, const struct stat *st,
                   struct kiln_error **err)
{
    if (w->rm) {
        if (unlinkat(dirfd, name, 0) < 0 && errno != ENOENT)
            return kiln_error_set(err, KILN_EIO, errno, "remove '%s': unlink '%s'", w->path, name);
        return 0;
    }
    if (st->st_nlink <= 1 || inode_set_add(&w->links, st->st_dev, st->st_ino))
        w->bytes += (uint64_t)st->st_blocks * 512;
    return 0;
}

/*
 * Open the subdirectory `name` of dirfd whose lstat is `st`, checking that
 * what got opened is that directory. Returns the fd, 0 to skip the entry
 * (it vanished, or is a mount point while measuring), or an error.
 */
static int open_subdir(struct walker *w, int dirfd, const char *name, const struct stat *st,
                       struct kiln_error **err)
{
    if (st->st_dev != w->root_dev) {
        if (!w->rm)
            return 0;
        return kiln_error_set(err, KILN_EIO, 0,
                              "remove '%s': refusing to cross a mount point at '%s'", w->path,
                              name);
    }
    int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 && errno == EACCES && w->rm) {
        /* Best effort: when it fails, the open below reports the error. */
        if (fchmodat(dirfd, name, (st->st_mode | 0700) & 07777, AT_SYMLINK_NOFOLLOW) < 0)
            errno = EACCES;
        fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    }
    if (fd < 0) {
        if (errno == ENOENT)
            return 0;
        if (errno == EACCES && !w->rm) {
            /* Unreadable while measuring: count the directory itself only. */
            w->bytes += (uint64_t)st->st_blocks * 512;
            return 0;
        }
        return kiln_error_set(err, KILN_EIO, errno, "walk '%s': open '%s'", w->path, name);
    }
    struct stat got;
    if (fstat(fd, &got) < 0 || got.st_dev != st->st_dev || got.st_ino != st->st_ino) {
        close(fd);
        return kiln_error_set(err, KILN_EIO, 0, "walk '%s': '%s' changed during the walk", w->path,
                              name);
    }
    if (is_mount_root(fd)) {
        close(fd);
        if (!w->rm)
            return 0;
        return kiln_error_set(err, KILN_EIO, 0,
                              "remove '%s': refusing to cross a mount point at '%s'", w->path,
                              name);
    }
    /* fd 0 would read as "skip": move it out of the way (only when stdin was closed). */
    if (fd == 0) {
        int nfd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
        close(fd);
        if (nfd < 0)
            return kiln_error_set(err, KILN_EIO, errno, "walk '%s': dup", w->path);
        fd = nfd;
    }
    return fd;
}

/*
 * Walk the directory open as `rootfd` (consumed), whose stat is `st`:
 * every entry below it, post-order. The root itself is entered but not
 * removed.
 */
static int walk_tree(struct walker *w, int rootfd, const struct stat *st, struct kiln_error **err)
{
    size_t cap = 8, depth = 0;
    struct level *lv = kiln_xcalloc(cap, sizeof(*lv));
    int r = 0;

    lv[0].fd = rootfd;
    lv[0].dev = st->st_dev;
    lv[0].ino = st->st_ino;
    w->root_dev = st->st_dev;
    on_dir_enter(w, rootfd, st);
    r = read_names(w, rootfd, &lv[0], err);

    while (r >= 0) {
        struct level *l = &lv[depth];
        if (l->i == l->n) {
            if (depth == 0)
                break;
            struct level *p = &lv[depth - 1];
            if (p->fd < 0) {
                p->fd = openat(l->fd, "..", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                struct stat pst;
                if (p->fd < 0) {
                    r = kiln_error_set(err, KILN_EIO, errno, "walk '%s': reopen parent", w->path);
                    break;
                }
                if (fstat(p->fd, &pst) < 0 || pst.st_dev != p->dev || pst.st_ino != p->ino) {
                    r = kiln_error_set(err, KILN_EIO, 0,
                                       "walk '%s': a directory moved during the walk", w->path);
                    break;
                }
            }
            level_release(l);
            depth--;
            if (w->rm && unlinkat(p->fd, p->names[p->i], AT_REMOVEDIR) < 0 && errno != ENOENT) {
                r = kiln_error_set(err, KILN_EIO, errno, "remove '%s': rmdir '%s'", w->path,
                                   p->names[p->i]);
                break;
            }
            p->i++;
            continue;
        }

        const char *name = l->names[l->i];
        struct stat est;
        if (fstatat(l->fd, name, &est, AT_SYMLINK_NOFOLLOW) < 0) {
            if (errno == ENOENT) {
                l->i++;
                continue;
            }
            r = kiln_error_set(err, KILN_EIO, errno, "walk '%s': stat '%s'", w->path, name);
            break;
        }
        if (!S_ISDIR(est.st_mode)) {
            r = on_file(w, l->fd, name, &est, err);
            l->i++;
            continue;
        }
        int fd = open_subdir(w, l->fd, name, &est, err);
        if (fd < 0) {
            r = fd;
            break;
        }
        if (fd == 0) {
            l->i++;
            continue;
        }
        if (depth + 1 == cap) {
            lv = kiln_xreallocarray(lv, cap * 2, sizeof(*lv));
            memset(lv + cap, 0, cap * sizeof(*lv));
            cap *= 2;
            l = &lv[depth];
        }
        struct level *c = &lv[depth + 1];
        c->fd = fd;
        c->dev = est.st_dev;
        c->ino = est.st_ino;
        on_dir_enter(w, fd, &est);
        r = read_names(w, fd, c, err);
        if (r < 0) {
            depth++;
            break;
        }
        /* Bound the open descriptors: deep levels come back through "..". */
        if (depth >= WALK_KEEP_FDS && l->fd >= 0) {
            close(l->fd);
            l->fd = -1;
        }
        depth++;
    }

    for (size_t k = 0; k <= depth; k++)
        level_release(&lv[k]);
    free(lv);
    return r;
}

int kiln_fs_rm_rf_at(int dirfd, const char *path, struct kiln_error **err)
{
    const char *base = NULL;
    struct kiln_error *perr = NULL;
    _cleanup_close_ int pfd = open_parent(dirfd, path, &base, "remove", &perr);
    if (pfd < 0) {
        if (pfd == -KILN_ENOTFOUND) {
            kiln_error_free(perr);
            return 0;
        }
        if (err) {
            kiln_error_free(*err);
            *err = perr;
        } else {
            kiln_error_free(perr);
        }
        return pfd;
    }
    _cleanup_free_ char *name = kiln_xstrndup(base, strcspn(base, "/"));

    struct stat st;
    if (fstatat(pfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
        if (errno == ENOENT)
            return 0;
        return kiln_error_set(err, KILN_EIO, errno, "remove '%s': stat", path);
    }
    if (!S_ISDIR(st.st_mode)) {
        if (unlinkat(pfd, name, 0) < 0 && errno != ENOENT)
            return kiln_error_set(err, KILN_EIO, errno, "remove '%s'", path);
        return 0;
    }

    struct walker w = {.rm = true, .path = path};
    struct stat pst;
    if (fstat(pfd, &pst) < 0)
        return kiln_error_set(err, KILN_EIO, errno, "remove '%s': stat parent", path);
    w.root_dev = pst.st_dev;
    int fd = open_subdir(&w, pfd, name, &st, err);
    if (fd < 0)
        return fd;
    if (fd == 0)
        return 0;
    int r = walk_tree(&w, fd, &st, err);
    if (r < 0)
        return r;
    if (unlinkat(pfd, name, AT_REMOVEDIR) < 0 && errno != ENOENT)
        return kiln_error_set(err, KILN_EIO, errno, "remove '%s': rmdir", path);
    return 0;
}

int kiln_fs_disk_usage_at(int dirfd, const char *path, uint64_t *ret_bytes, struct kiln_error **err)
{
    int r = check_path(path, "measure", err);
    if (r < 0)
        return r;

    struct walker w = {.rm = false, .path = path};
    struct stat st;
    int fd = -1;
    bool is_dot = true;
    for (const char *p = path; *p; p++)
        if (*p != '.' && *p != '/')
            is_dot = false;
    if (is_dot) {
        fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
            return kiln_error_set(err, KILN_EIO, errno, "measure '%s': open", path);
        if (fstat(fd, &st) < 0) {
            int e = errno;
            close(fd);
            return kiln_error_set(err, KILN_EIO, e, "measure '%s': stat", path);
        }
    } else {
        const char *base = NULL;
        _cleanup_close_ int pfd = open_parent(dirfd, path, &base, "measure", err);
        if (pfd < 0)
            return pfd;
        _cleanup_free_ char *name = kiln_xstrndup(base, strcspn(base, "/"));
        if (fstatat(pfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
            if (errno == ENOENT)
                return kiln_error_set(err, KILN_ENOTFOUND, 0, "measure '%s': does not exist", path);
            return kiln_error_set(err, KILN_EIO, errno, "measure '%s': stat", path);
        }
        if (!S_ISDIR(st.st_mode)) {
            *ret_bytes = (uint64_t)st.st_blocks * 512;
            return 0;
        }
        fd = openat(pfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
            return kiln_error_set(err, KILN_EIO, errno, "measure '%s': open", path);
        struct stat got;
        if (fstat(fd, &got) < 0 || got.st_ino != st.st_ino || got.st_dev != st.st_dev) {
            close(fd);
            return kiln_error_set(err, KILN_EIO, 0, "measure '%s': changed during the walk", path);
        }
    }
    r = walk_tree(&w, fd, &st, err);
    free(w.links.keys);
    if (r < 0)
        return r;
    *ret_bytes = w.bytes;
    return 0;
}

int kiln_fs_mkdir_p_path(const char *path, mode_t mode, int *ret_fd, struct kiln_error **err)
{
    if (!path || !*path)
        return kiln_error_set(err, KILN_EINVAL, 0, "create directory: empty path");

    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT) {
        _cleanup_free_ char *copy = kiln_xstrdup(path);
        for (char *p = copy + 1; *p; p++) {
            if (*p != '/')
                continue;
            *p = '\0';
            if (mkdir(copy, mode) < 0 && errno != EEXIST) {
                int e = errno;
                *p = '/';
                return kiln_error_set(err, KILN_EIO, e, "create directory '%s'", path);
            }
            *p = '/';
        }
        if (mkdir(copy, mode) < 0 && errno != EEXIST)
            return kiln_error_set(err, KILN_EIO, errno, "create directory '%s'", path);
        fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    }
    if (fd < 0)
        return kiln_error_set(err, KILN_EIO, errno, "open directory '%s'", path);
    if (ret_fd)
        *ret_fd = fd;
    else
        close(fd);
    return 0;
}

int kiln_fs_create_locked_temp(int dirfd, bool directory,
                               char ret_name[KILN_FS_RANDOM_NAME_LEN + 1], struct kiln_error **err)
{
    const char *what = directory ? "temp directory" : "temp file";
    for (int attempt = 0; attempt < 64; attempt++) {
        char name[KILN_FS_RANDOM_NAME_LEN + 1];
        kiln_fs_random_name(name);
        int fd;
        if (directory) {
            if (mkdirat(dirfd, name, 0755) < 0) {
                if (errno == EEXIST)
                    continue;
                return kiln_error_set(err, KILN_EIO, errno, "create %s", what);
            }
            fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        } else {
            fd = openat(dirfd, name, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
            if (fd < 0 && errno == EEXIST)
                continue;
        }
        if (fd < 0) {
            if (errno == ENOENT)
                continue; /* swept before we opened it */
            return kiln_error_set(err, KILN_EIO, errno, "create %s", what);
        }
        /* Fails only when a sweep holds it: that sweep is removing it. */
        if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
            int e = errno;
            close(fd);
            if (e == EWOULDBLOCK || e == EINTR)
                continue;
            return kiln_error_set(err, KILN_EIO, e, "lock %s", what);
        }
        struct stat mine, cur;
        if (fstat(fd, &mine) < 0 || fstatat(dirfd, name, &cur, AT_SYMLINK_NOFOLLOW) < 0 ||
            mine.st_ino != cur.st_ino || mine.st_dev != cur.st_dev) {
            /* Swept between creation and lock: what we hold is unlinked. */
            close(fd);
            continue;
        }
        memcpy(ret_name, name, sizeof(name));
        return fd;
    }
    return kiln_error_set(err, KILN_EIO, 0, "create %s: no free name after 64 attempts", what);
}

/* Remove one stale entry whose lstat is `st`; returns 1 removed, 0 kept, < 0 error. */
static int remove_stale_one(int dirfd, const char *name, const struct stat *st, uint64_t *bytes,
                            struct kiln_error **err)
{
    if (!S_ISREG(st->st_mode) && !S_ISDIR(st->st_mode)) {
        if (unlinkat(dirfd, name, 0) < 0 && errno != ENOENT)
            return kiln_error_set(err, KILN_EIO, errno, "remove stale '%s'", name);
        return 1;
    }
    int flags = O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK;
    if (S_ISDIR(st->st_mode))
        flags |= O_DIRECTORY;
    _cleanup_close_ int fd = openat(dirfd, name, flags);
    if (fd < 0)
        return errno == ENOENT ? 0 : kiln_error_set(err, KILN_EIO, errno, "open stale '%s'", name);
    if (flock(fd, LOCK_EX | LOCK_NB) < 0)
        return errno == EWOULDBLOCK || errno == EINTR
                   ? 0
                   : kiln_error_set(err, KILN_EIO, errno, "lock stale '%s'", name);
    /* Still the entry we judged, and still linked (a writer may have just committed it). */
    struct stat got, now;
    if (fstat(fd, &got) < 0 || got.st_ino != st->st_ino || got.st_dev != st->st_dev ||
        got.st_nlink == 0)
        return 0;
    if (fstatat(dirfd, name, &now, AT_SYMLINK_NOFOLLOW) < 0 || now.st_ino != got.st_ino ||
        now.st_dev != got.st_dev)
        return 0;

    uint64_t used = (uint64_t)got.st_blocks * 512;
    if (S_ISDIR(got.st_mode)) {
        if (kiln_fs_disk_usage_at(fd, ".", &used, NULL) < 0)
            used = (uint64_t)got.st_blocks * 512;
        int r = kiln_fs_rm_rf_at(dirfd, name, err);
        if (r < 0)
            return r;
    } else if (unlinkat(dirfd, name, 0) < 0) {
        return errno == ENOENT ? 0
                               : kiln_error_set(err, KILN_EIO, errno, "remove stale '%s'", name);
    }
    *bytes += used;
    return 1;
}

int kiln_fs_remove_stale_at(int dirfd, int64_t max_age_s, uint64_t *count, uint64_t *bytes,
                            struct kiln_error **err)
{
    int lfd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (lfd < 0)
        return kiln_error_set(err, KILN_EIO, errno, "open temp directory");
    struct walker w = {.path = "temp directory"};
    struct level l = {.fd = -1};
    int r = read_names(&w, lfd, &l, err);
    close(lfd);
    if (r < 0)
        return r;

    time_t now = time(NULL);
    uint64_t n_removed = 0, n_bytes = 0;
    int first = 0;
    for (size_t i = 0; i < l.n; i++) {
        struct stat st;
        if (fstatat(dirfd, l.names[i], &st, AT_SYMLINK_NOFOLLOW) < 0)
            continue;
        if (max_age_s >= 0 && (int64_t)(now - st.st_mtime) <= max_age_s)
            continue;
        struct kiln_error *e1 = NULL;
        r = remove_stale_one(dirfd, l.names[i], &st, &n_bytes, err && !first ? &e1 : NULL);
        if (r > 0)
            n_removed++;
        if (r < 0 && !first) {
            first = r;
            if (err) {
                kiln_error_free(*err);
                *err = e1;
                e1 = NULL;
            }
        }
        kiln_error_free(e1);
    }
    level_release(&l);
    if (count)
        *count += n_removed;
    if (bytes)
        *bytes += n_bytes;
    return first;
}
