#include "util/common.h"
#include "layer/unpack.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "util/log.h"

#define MAX_SYMLINK_HOPS 40
#define OPAQUE_XATTR     "trusted.overlay.opaque"
#define WH_PREFIX        ".wh."
#define WH_META_PREFIX   ".wh..wh."
#define WH_OPAQUE        ".wh..wh..opq"

/* ---- small hash sets ---------------------------------------------------------------------- */

struct inoset {
    uint64_t *keys; /* pairs: dev, ino; ino 0 = empty slot */
    size_t cap, n;  /* cap: slots (power of two) */
};

static size_t ino_hash(uint64_t dev, uint64_t ino)
{
    uint64_t h = (ino ^ (dev << 32) ^ (dev >> 32)) * 0x9e3779b97f4a7c15ull;
    return (size_t)(h >> 17);
}

static bool inoset_has(const struct inoset *s, dev_t dev, ino_t ino)
{
    if (!s->cap || ino == 0)
        return false;
    for (size_t i = ino_hash(dev, ino) & (s->cap - 1);; i = (i + 1) & (s->cap - 1)) {
        if (s->keys[2 * i + 1] == 0)
            return false;
        if (s->keys[2 * i] == (uint64_t)dev && s->keys[2 * i + 1] == (uint64_t)ino)
            return true;
    }
}

static void inoset_put(struct inoset *s, dev_t dev, ino_t ino);

static void inoset_grow(struct inoset *s)
{
    struct inoset old = *s;
    s->cap = old.cap ? old.cap * 2 : 1024;
    s->n = 0;
    s->keys = kiln_xcalloc(s->cap * 2, sizeof(uint64_t));
    for (size_t i = 0; i < old.cap; i++)
        if (old.keys[2 * i + 1])
            inoset_put(s, (dev_t)old.keys[2 * i], (ino_t)old.keys[2 * i + 1]);
    free(old.keys);
}

static void inoset_put(struct inoset *s, dev_t dev, ino_t ino)
{
    if (ino == 0)
        return;
    if ((s->n + 1) * 2 > s->cap)
        inoset_grow(s);
    for (size_t i = ino_hash(dev, ino) & (s->cap - 1);; i = (i + 1) & (s->cap - 1)) {
        if (s->keys[2 * i + 1] == 0) {
            s->keys[2 * i] = (uint64_t)dev;
            s->keys[2 * i + 1] = (uint64_t)ino;
            s->n++;
            return;
        }
        if (s->keys[2 * i] == (uint64_t)dev && s->keys[2 * i + 1] == (uint64_t)ino)
            return;
    }
}

struct strset {
    char **keys;
    size_t cap, n;
};

static size_t str_hash(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return (size_t)h;
}

static bool strset_has(const struct strset *s, const char *k)
{
    if (!s->cap)
        return false;
    for (size_t i = str_hash(k) & (s->cap - 1);; i = (i + 1) & (s->cap - 1)) {
        if (!s->keys[i])
            return false;
        if (strcmp(s->keys[i], k) == 0)
            return true;
    }
}

static void strset_insert(struct strset *s, char *owned)
{
    for (size_t i = str_hash(owned) & (s->cap - 1);; i = (i + 1) & (s->cap - 1)) {
        if (!s->keys[i]) {
            s->keys[i] = owned;
            s->n++;
            return;
        }
    }
}

static void strset_add(struct strset *s, const char *k)
{
    if (strset_has(s, k))
        return;
    if ((s->n + 1) * 2 > s->cap) {
        struct strset old = *s;
        s->cap = old.cap ? old.cap * 2 : 256;
        s->n = 0;
        s->keys = kiln_xcalloc(s->cap, sizeof(char *));
        for (size_t i = 0; i < old.cap; i++)
            if (old.keys[i])
                strset_insert(s, old.keys[i]);
        free(old.keys);
    }
    strset_insert(s, kiln_xstrdup(k));
}

static void strset_clear(struct strset *s)
{
    for (size_t i = 0; i < s->cap; i++)
        free(s->keys[i]);
    free(s->keys);
    s->keys = NULL;
    s->cap = s->n = 0;
}

/* ---- context ------------------------------------------------------------------------------ */

struct dirfix {
    char *path;
    mode_t mode;
    struct timespec mtime;
    bool has_mtime;
    dev_t dev;
    ino_t ino;
};

struct ctx {
    int rootfd;
    struct kiln_unpack_opts o;
    bool chown_ok;
    bool openat2_ok;
    struct archive *a;
    struct kiln_decompress *d;
    struct kiln_error *read_err; /* the decompressor's error, seen in the read callback */
    struct kiln_unpack_stats st;
    uint64_t sum_sizes;

    char *cache_path; /* parent directory cache: cleaned path and an open fd */
    int cache_fd;
    bool cache_valid; /* false after a removal; the fd stays open until replaced */

    struct dirfix *dirs;
    size_t ndirs, adirs;

    struct inoset own;  /* apply mode: inodes this layer created or passed through */
    struct strset seen; /* apply mode: parent paths whose ancestors are in `own` */
};

static void cache_drop(struct ctx *c)
{
    free(c->cache_path);
    c->cache_path = NULL;
    if (c->cache_fd >= 0)
        close(c->cache_fd);
    c->cache_fd = -1;
}

/*
 * Something was removed: paths may now resolve differently. The cached fd
 * may be in use by the caller, so it is only marked stale here.
 */
static void tree_changed(struct ctx *c)
{
    c->cache_valid = false;
    strset_clear(&c->seen);
}

/* ---- paths -------------------------------------------------------------------------------- */

/*
 * Clean a tar name as if rooted at "/": drop empty and "." components, ".."
 * pops (never above the root). Writes the result ("" for the root) into a
 * new string in *ret. Returns 0 or -ENAMETOOLONG when longer than max.
 */
static int clean_path(const char *in, size_t max, char **ret)
{
    size_t n = strlen(in);
    char *out = kiln_xmalloc(n + 1);
    size_t len = 0;
    const char *p = in;
    while (*p) {
        while (*p == '/')
            p++;
        const char *s = p;
        while (*p && *p != '/')
            p++;
        size_t k = (size_t)(p - s);
        if (k == 0 || (k == 1 && s[0] == '.'))
            continue;
        if (k == 2 && s[0] == '.' && s[1] == '.') {
            while (len > 0 && out[len - 1] != '/')
                len--;
            if (len > 0)
                len--;
            continue;
        }
        if (len > 0)
            out[len++] = '/';
        memcpy(out + len, s, k);
        len += k;
    }
    out[len] = '\0';
    if (len > max) {
        free(out);
        return -ENAMETOOLONG;
    }
    *ret = out;
    return 0;
}

/* ---- resolution within the root ----------------------------------------------------------- */

static int reopen_root(struct ctx *c)
{
    int fd = openat(c->rootfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    return fd >= 0 ? fd : -errno;
}

/*
 * The portable resolver: like openat2(RESOLVE_IN_ROOT) for a directory, one
 * component at a time with O_NOFOLLOW, symlinks expanded here ("/" and ".."
 * clamped at the root). `follow_last`: whether a final symlink is followed
 * (else -ELOOP). Returns an O_RDONLY|O_DIRECTORY fd or -errno.
 */
static int resolve_walk(struct ctx *c, const char *path, bool follow_last)
{
    /* rest: components still to walk; canon: real directories walked so far */
    _cleanup_free_ char *rest = kiln_xstrdup(path);
    struct {
        char **v;
        size_t n, a;
    } canon = {NULL, 0, 0};
    int cur = reopen_root(c);
    int hops = 0, r = 0;
    if (cur < 0)
        return cur;
    size_t pos = 0;
    for (;;) {
        while (rest[pos] == '/')
            pos++;
        if (!rest[pos])
            break;
        size_t s = pos;
        while (rest[pos] && rest[pos] != '/')
            pos++;
        size_t k = pos - s;
        _cleanup_free_ char *comp = kiln_xstrndup(rest + s, k);
        size_t after = pos;
        while (rest[after] == '/')
            after++;
        bool last = rest[after] == '\0';
        if (strcmp(comp, ".") == 0)
            continue;
        if (strcmp(comp, "..") == 0) {
            if (canon.n == 0)
                continue;
            free(canon.v[--canon.n]);
            /* walk the canonical (symlink-free) prefix again from the root */
            close(cur);
            cur = reopen_root(c);
            for (size_t i = 0; cur >= 0 && i < canon.n; i++) {
                int nfd = openat(cur, canon.v[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                int e = errno;
                close(cur);
                cur = nfd >= 0 ? nfd : -e;
            }
            if (cur < 0) {
                r = cur;
                goto out;
            }
            continue;
        }
        int fd = openat(cur, comp, O_PATH | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0) {
            r = -errno;
            goto out;
        }
        struct stat st;
        if (fstat(fd, &st) < 0) {
            r = -errno;
            close(fd);
            goto out;
        }
        if (S_ISLNK(st.st_mode)) {
            if (last && !follow_last) {
                close(fd);
                r = -ELOOP;
                goto out;
            }
            if (++hops > MAX_SYMLINK_HOPS) {
                close(fd);
                r = -ELOOP;
                goto out;
            }
            char target[PATH_MAX + 1];
            ssize_t tl = readlinkat(fd, "", target, sizeof(target) - 1);
            close(fd);
            if (tl < 0) {
                r = -errno;
                goto out;
            }
            if (tl == 0) {
                r = -ENOENT;
                goto out;
            }
            target[tl] = '\0';
            char *nrest = kiln_xasprintf("%s/%s", target, rest + pos);
            free(rest);
            rest = nrest;
            pos = 0;
            if (target[0] == '/') {
                while (canon.n)
                    free(canon.v[--canon.n]);
                close(cur);
                cur = reopen_root(c);
                if (cur < 0) {
                    r = cur;
                    goto out;
                }
            }
            continue;
        }
        if (!S_ISDIR(st.st_mode)) {
            close(fd);
            r = -ENOTDIR;
            goto out;
        }
        int nfd = openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        int e = errno;
        close(fd);
        if (nfd < 0) {
            r = -e;
            goto out;
        }
        close(cur);
        cur = nfd;
        if (canon.n == canon.a) {
            canon.a = canon.a ? canon.a * 2 : 16;
            canon.v = kiln_xreallocarray(canon.v, canon.a, sizeof(char *));
        }
        canon.v[canon.n++] = TAKE_PTR(comp);
    }
out:
    while (canon.n)
        free(canon.v[--canon.n]);
    free(canon.v);
    if (r < 0) {
        if (cur >= 0)
            close(cur);
        return r;
    }
    return cur;
}

/*
 * Open the directory `path` (cleaned; "" is the root) resolved within the
 * root. follow_last=false refuses a final symlink (-ELOOP). Returns an
 * O_RDONLY|O_DIRECTORY fd or -errno.
 */
static int open_dir(struct ctx *c, const char *path, bool follow_last)
{
    if (!*path)
        return reopen_root(c);
    if (c->openat2_ok) {
        struct open_how how = {
            .flags = O_RDONLY | O_DIRECTORY | O_CLOEXEC | (follow_last ? 0 : O_NOFOLLOW),
            .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
        };
        for (int tries = 0; tries < 16; tries++) {
            long fd = syscall(SYS_openat2, c->rootfd, path, &how, sizeof(how));
            if (fd >= 0)
                return (int)fd;
            if (errno == EAGAIN || errno == EINTR)
                continue;
            if (errno == ENOSYS || errno == EPERM) {
                /* no openat2 (old kernel, or a seccomp filter): walk */
                c->openat2_ok = false;
                break;
            }
            return -errno;
        }
        if (c->openat2_ok)
            return -EAGAIN;
    }
    return resolve_walk(c, path, follow_last);
}

/* Mark `fd`'s inode as this layer's own (apply mode). */
static void own_fd(struct ctx *c, int fd)
{
    struct stat st;
    if (c->o.mode == KILN_UNPACK_APPLY && fstat(fd, &st) == 0)
        inoset_put(&c->own, st.st_dev, st.st_ino);
}

static void own_at(struct ctx *c, int dirfd, const char *name)
{
    struct stat st;
    if (c->o.mode == KILN_UNPACK_APPLY && fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0)
        inoset_put(&c->own, st.st_dev, st.st_ino);
}

/* Apply mode: mark the ancestors of `dir` (whose fd is dfd) as this layer's. */
static void own_ancestors(struct ctx *c, const char *dir, int dfd)
{
    if (c->o.mode != KILN_UNPACK_APPLY || !*dir || strset_has(&c->seen, dir))
        return;
    own_fd(c, dfd);
    strset_add(&c->seen, dir);
    _cleanup_free_ char *p = kiln_xstrdup(dir);
    for (;;) {
        char *slash = strrchr(p, '/');
        if (!slash)
            break;
        *slash = '\0';
        if (strset_has(&c->seen, p))
            break;
        strset_add(&c->seen, p);
        int fd = open_dir(c, p, true);
        if (fd >= 0) {
            own_fd(c, fd);
            close(fd);
        }
    }
}

/* Create the missing directories of `path` (within the root); returns an fd of it or -errno. */
static int mkdir_parents(struct ctx *c, const char *path)
{
    _cleanup_free_ char *p = kiln_xstrdup(path);
    int prev = reopen_root(c);
    if (prev < 0)
        return prev;
    char *s = p;
    for (;;) {
        char *slash = strchr(s, '/');
        if (slash)
            *slash = '\0';
        int fd = open_dir(c, p, true);
        if (fd == -ENOENT) {
            const char *name = strrchr(p, '/') ? strrchr(p, '/') + 1 : p;
            if (mkdirat(prev, name, 0755) < 0) {
                int e = errno;
                close(prev);
                /* EEXIST: something that is not a directory, e.g. a dangling symlink */
                return e == EEXIST ? -ENOTDIR : -e;
            }
            fd = openat(prev, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (fd < 0)
                fd = -errno;
            else
                own_fd(c, fd);
        }
        close(prev);
        if (fd < 0)
            return fd;
        prev = fd;
        if (!slash)
            return prev;
        *slash = '/';
        s = slash + 1;
    }
}

/* The parent directory fd (cached; do not close it). */
static int get_parent(struct ctx *c, const char *dir, const char *entry, int *ret_fd,
                      struct kiln_error **err)
{
    if (c->cache_valid && c->cache_path && strcmp(c->cache_path, dir) == 0) {
        *ret_fd = c->cache_fd;
        return 0;
    }
    cache_drop(c);
    int fd = open_dir(c, dir, true);
    if (fd == -ENOENT)
        fd = mkdir_parents(c, dir);
    if (fd < 0) {
        if (fd == -ENOTDIR || fd == -ELOOP)
            return kiln_error_set(err, KILN_EINVAL, 0,
                                  "'%s': parent '%s' is not a directory within the root", entry,
                                  dir);
        return kiln_error_set(err, KILN_EIO, -fd, "'%s': open parent '%s'", entry, dir);
    }
    c->cache_path = kiln_xstrdup(dir);
    c->cache_fd = fd;
    c->cache_valid = true;
    own_ancestors(c, dir, fd);
    *ret_fd = fd;
    return 0;
}

/* ---- removal ------------------------------------------------------------------------------ */

/* Remove dirfd/name, recursively when a directory; never follows symlinks. Returns 0 or -errno. */
static int rm_rf(int dirfd, const char *name)
{
    if (unlinkat(dirfd, name, 0) == 0 || errno == ENOENT)
        return 0;
    if (errno != EISDIR && errno != EPERM)
        return -errno;
    for (int pass = 0; pass < 4; pass++) {
        int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
            return errno == ENOENT ? 0 : -errno;
        DIR *dir = fdopendir(fd);
        if (!dir) {
            int e = errno;
            close(fd);
            return -e;
        }
        struct dirent *de;
        int r = 0;
        while ((de = readdir(dir))) {
            if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
                continue;
            r = rm_rf(fd, de->d_name);
            if (r < 0)
                break;
        }
        closedir(dir);
        if (r < 0)
            return r;
        if (unlinkat(dirfd, name, AT_REMOVEDIR) == 0 || errno == ENOENT)
            return 0;
        if (errno != ENOTEMPTY)
            return -errno;
    }
    return -ENOTEMPTY;
}

/* Remove an existing dirfd/name before creating an entry there. */
static int replace_existing(struct ctx *c, int dirfd, const char *name, const char *entry,
                            struct kiln_error **err)
{
    int r = rm_rf(dirfd, name);
    tree_changed(c);
    if (r < 0)
        return kiln_error_set(err, KILN_EIO, -r, "'%s': remove existing entry", entry);
    return 0;
}

/* ---- metadata ----------------------------------------------------------------------------- */

static bool xattr_allowed(const char *name)
{
    if (strncmp(name, "trusted.overlay.", 16) == 0 || strncmp(name, "user.overlay.", 13) == 0)
        return false;
    return strncmp(name, "user.", 5) == 0 || strncmp(name, "trusted.", 8) == 0 ||
           strncmp(name, "security.", 9) == 0 || strcmp(name, "system.posix_acl_access") == 0 ||
           strcmp(name, "system.posix_acl_default") == 0;
}

/*
 * Set the entry's xattrs on fd (fd_is_path: an O_PATH fd, set through
 * /proc/self/fd). Privilege or support failures are skipped and counted.
 */
static int set_xattrs(struct ctx *c, struct archive_entry *e, int fd, bool fd_is_path,
                      const char *entry, struct kiln_error **err)
{
    if (archive_entry_xattr_reset(e) == 0)
        return 0;
    const char *name;
    const void *value;
    size_t size;
    char proc[64];
    if (fd_is_path)
        snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
    while (archive_entry_xattr_next(e, &name, &value, &size) == ARCHIVE_OK) {
        if (!name || !xattr_allowed(name)) {
            c->st.skipped++;
            continue;
        }
        int r =
            fd_is_path ? setxattr(proc, name, value, size, 0) : fsetxattr(fd, name, value, size, 0);
        if (r == 0)
            continue;
        if (errno == EPERM || errno == ENOTSUP || errno == EACCES || errno == ENOENT) {
            c->st.skipped++;
            continue;
        }
        return kiln_error_set(
            err, errno == EINVAL || errno == E2BIG || errno == ERANGE ? KILN_EINVAL : KILN_EIO,
            errno, "'%s': set xattr '%s'", entry, name);
    }
    return 0;
}

static int set_xattrs_at(struct ctx *c, struct archive_entry *e, int dirfd, const char *name,
                         const char *entry, struct kiln_error **err)
{
    if (archive_entry_xattr_count(e) == 0)
        return 0;
    _cleanup_close_ int fd = openat(dirfd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return kiln_error_set(err, KILN_EIO, errno, "'%s': open for xattrs", entry);
    return set_xattrs(c, e, fd, true, entry, err);
}

static void entry_times(struct archive_entry *e, struct timespec ts[2])
{
    if (!archive_entry_mtime_is_set(e)) {
        ts[0].tv_nsec = ts[1].tv_nsec = UTIME_OMIT;
        ts[0].tv_sec = ts[1].tv_sec = 0;
        return;
    }
    ts[1].tv_sec = archive_entry_mtime(e);
    long ns = archive_entry_mtime_nsec(e);
    ts[1].tv_nsec = ns >= 0 && ns < 1000000000 ? ns : 0;
    ts[0] = ts[1];
}

static int do_chown_at(struct ctx *c, struct archive_entry *e, int dirfd, const char *name, int fd,
                       const char *entry, struct kiln_error **err)
{
    if (!c->chown_ok)
        return 0;
    la_int64_t uid = archive_entry_uid(e), gid = archive_entry_gid(e);
    if (uid < 0 || gid < 0 || uid > UINT32_MAX - 1 || gid > UINT32_MAX - 1)
        return kiln_error_set(err, KILN_EINVAL, 0, "'%s': invalid owner %lld:%lld", entry,
                              (long long)uid, (long long)gid);
    int r = fd >= 0 ? fchown(fd, (uid_t)uid, (gid_t)gid)
                    : fchownat(dirfd, name, (uid_t)uid, (gid_t)gid, AT_SYMLINK_NOFOLLOW);
    if (r < 0) {
        if (errno == EINVAL || errno == EPERM) {
            /* an id the user namespace does not map */
            c->st.skipped++;
            return 0;
        }
        return kiln_error_set(err, KILN_EIO, errno, "'%s': chown", entry);
    }
    return 0;
}

/* ---- entry kinds -------------------------------------------------------------------------- */

static int do_file(struct ctx *c, struct archive_entry *e, int pfd, const char *name,
                   const char *entry, struct kiln_error **err)
{
    _cleanup_close_ int fd =
        openat(pfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0 && errno == EEXIST) {
        int r = replace_existing(c, pfd, name, entry, err);
        if (r < 0)
            return r;
        fd = openat(pfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    }
    if (fd < 0)
        return kiln_error_set(err, KILN_EIO, errno, "'%s': create", entry);

    la_int64_t size = archive_entry_size_is_set(e) ? archive_entry_size(e) : 0;
    uint64_t pos = 0;
    for (;;) {
        const void *buf;
        size_t n;
        la_int64_t off;
        int r = archive_read_data_block(c->a, &buf, &n, &off);
        if (r == ARCHIVE_EOF)
            break;
        if (r < ARCHIVE_WARN) {
            if (c->read_err)
                return kiln_error_set(err, c->read_err->code, 0, "%s", c->read_err->msg);
            return kiln_error_set(err, KILN_EINVAL, 0, "'%s': read data: %s", entry,
                                  archive_error_string(c->a));
        }
        if (off < 0 || (uint64_t)off > (uint64_t)size || n > (uint64_t)size - (uint64_t)off)
            return kiln_error_set(err, KILN_EINVAL, 0, "'%s': data block outside the file size",
                                  entry);
        const uint8_t *p = buf;
        uint64_t at = (uint64_t)off;
        while (n > 0) {
            ssize_t w = at == pos ? write(fd, p, n) : pwrite(fd, p, n, (off_t)at);
            if (w < 0) {
                if (errno == EINTR)
                    continue;
                return kiln_error_set(err, KILN_EIO, errno, "'%s': write", entry);
            }
            if (at != pos && lseek(fd, (off_t)(at + (uint64_t)w), SEEK_SET) < 0)
                return kiln_error_set(err, KILN_EIO, errno, "'%s': seek", entry);
            p += w;
            n -= (size_t)w;
            at += (uint64_t)w;
            pos = at;
            c->st.bytes += (uint64_t)w;
        }
    }
    if (pos < (uint64_t)size && ftruncate(fd, (off_t)size) < 0)
        return kiln_error_set(err, KILN_EIO, errno, "'%s': set size", entry);
    int r = do_chown_at(c, e, -1, NULL, fd, entry, err);
    if (r < 0)
        return r;
    if (fchmod(fd, archive_entry_perm(e) & 07777) < 0)
        return kiln_error_set(err, KILN_EIO, errno, "'%s': chmod", entry);
    if ((r = set_xattrs(c, e, fd, false, entry, err)) < 0)
        return r;
    struct timespec ts[2];
    entry_times(e, ts);
    if (futimens(fd, ts) < 0)
        return kiln_error_set(err, KILN_EIO, errno, "'%s': set times", entry);
    own_fd(c, fd);
    return 0;
}

static int set_opaque(int dfd, const char *entry, struct kiln_error **err)
{
    if (fsetxattr(dfd, OPAQUE_XATTR, "y", 1, 0) == 0)
        return 0;
    if (errno == EPERM || errno == ENOTSUP)
        return kiln_error_set(err, KILN_EUNSUPPORTED, errno,
                              "'%s': set " OPAQUE_XATTR " (needs CAP_SYS_ADMIN and xattr support)",
                              entry);
    return kiln_error_set(err, KILN_EIO, errno, "'%s': set " OPAQUE_XATTR, entry);
}

static bool is_whiteout_node(const struct stat *st)
{
    return S_ISCHR(st->st_mode) && st->st_rdev == makedev(0, 0);
}

static int add_dirfix(struct ctx *c, const char *path, struct archive_entry *e, int dfd)
{
    struct stat st;
    if (fstat(dfd, &st) < 0)
        return -errno;
    if (c->ndirs == c->adirs) {
        c->adirs = c->adirs ? c->adirs * 2 : 256;
        c->dirs = kiln_xreallocarray(c->dirs, c->adirs, sizeof(*c->dirs));
    }
    struct dirfix *f = &c->dirs[c->ndirs++];
    f->path = kiln_xstrdup(path);
    f->mode = archive_entry_perm(e) & 07777;
    struct timespec ts[2];
    entry_times(e, ts);
    f->mtime = ts[1];
    f->has_mtime = ts[1].tv_nsec != UTIME_OMIT;
    f->dev = st.st_dev;
    f->ino = st.st_ino;
    return 0;
}

static int do_dir(struct ctx *c, struct archive_entry *e, int pfd, const char *name,
                  const char *path, struct kiln_error **err)
{
    bool opaque = false;
    if (mkdirat(pfd, name, 0700) < 0) {
        if (errno != EEXIST)
            return kiln_error_set(err, KILN_EIO, errno, "'%s': mkdir", path);
        struct stat st;
        if (fstatat(pfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
            return kiln_error_set(err, KILN_EIO, errno, "'%s': stat", path);
        if (!S_ISDIR(st.st_mode)) {
            /* overlay: a directory replacing this layer's whiteout hides the lower one */
            opaque = c->o.mode == KILN_UNPACK_OVERLAY && is_whiteout_node(&st);
            int r = replace_existing(c, pfd, name, path, err);
            if (r < 0)
                return r;
            if (mkdirat(pfd, name, 0700) < 0)
                return kiln_error_set(err, KILN_EIO, errno, "'%s': mkdir", path);
        }
    }
    _cleanup_close_ int dfd = openat(pfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dfd < 0)
        return kiln_error_set(err, KILN_EIO, errno, "'%s': open directory", path);
    int r = do_chown_at(c, e, -1, NULL, dfd, path, err);
    if (r < 0)
        return r;
    if ((r = set_xattrs(c, e, dfd, false, path, err)) < 0)
        return r;
    if (opaque && (r = set_opaque(dfd, path, err)) < 0)
        return r;
    if (add_dirfix(c, path, e, dfd) < 0)
        return kiln_error_set(err, KILN_EIO, errno, "'%s': stat", path);
    own_fd(c, dfd);
    return 0;
}

static int do_symlink(struct ctx *c, struct archive_entry *e, int pfd, const char *name,
                      const char *entry, struct kiln_error **err)
{
    const char *target = archive_entry_symlink(e);
    if (!target)
        target = archive_entry_symlink_utf8(e);
    if (!target || !*target)
        return kiln_error_set(err, KILN_EINVAL, 0, "'%s': symlink without a target", entry);
    if (strlen(target) > c->o.max_path)
        return kiln_error_set(err, KILN_ETOOBIG, 0, "'%s': symlink target longer than %zu bytes",
                              entry, c->o.max_path);
    if (symlinkat(target, pfd, name) < 0) {
        if (errno != EEXIST)
            return kiln_error_set(err, KILN_EIO, errno, "'%s': symlink", entry);
        int r = replace_existing(c, pfd, name, entry, err);
        if (r < 0)
            return r;
        if (symlinkat(target, pfd, name) < 0)
            return kiln_error_set(err, KILN_EIO, errno, "'%s': symlink", entry);
    }
    int r = do_chown_at(c, e, pfd, name, -1, entry, err);
    if (r < 0)
        return r;
    if ((r = set_xattrs_at(c, e, pfd, name, entry, err)) < 0)
        return r;
    struct timespec ts[2];
    entry_times(e, ts);
    if (utimensat(pfd, name, ts, AT_SYMLINK_NOFOLLOW) < 0)
        return kiln_error_set(err, KILN_EIO, errno, "'%s': set times", entry);
    own_at(c, pfd, name);
    return 0;
}

static int do_node(struct ctx *c, struct archive_entry *e, int pfd, const char *name,
                   const char *entry, struct kiln_error **err)
{
    mode_t type = archive_entry_filetype(e);
    dev_t rdev = type == AE_IFIFO ? 0 : archive_entry_rdev(e);
    if (mknodat(pfd, name, type | 0600, rdev) < 0) {
        if (errno == EEXIST) {
            int r = replace_existing(c, pfd, name, entry, err);
            if (r < 0)
                return r;
            if (mknodat(pfd, name, type | 0600, rdev) == 0)
                goto made;
        }
        if ((errno == EPERM || errno == EACCES) && type != AE_IFIFO) {
            c->st.skipped++;
            kiln_log(KILN_LOG_DEBUG, "unpack: skip device '%s': %s", entry, strerror(errno));
            return 0;
        }
        return kiln_error_set(err, KILN_EIO, errno, "'%s': mknod", entry);
    }
made:;
    int r = do_chown_at(c, e, pfd, name, -1, entry, err);
    if (r < 0)
        return r;
    /* fchmodat follows symlinks, but this name was just made by mknodat */
    if (fchmodat(pfd, name, archive_entry_perm(e) & 07777, 0) < 0)
        return kiln_error_set(err, KILN_EIO, errno, "'%s': chmod", entry);
    if ((r = set_xattrs_at(c, e, pfd, name, entry, err)) < 0)
        return r;
    struct timespec ts[2];
    entry_times(e, ts);
    if (utimensat(pfd, name, ts, AT_SYMLINK_NOFOLLOW) < 0)
        return kiln_error_set(err, KILN_EIO, errno, "'%s': set times", entry);
    own_at(c, pfd, name);
    return 0;
}

static int do_hardlink(struct ctx *c, const char *raw_target, int pfd, const char *name,
                       const char *path, struct kiln_error **err)
{
    _cleanup_free_ char *target = NULL;
    if (clean_path(raw_target, c->o.max_path, &target) < 0)
        return kiln_error_set(err, KILN_ETOOBIG, 0, "'%s': link target longer than %zu bytes", path,
                              c->o.max_path);
    if (!*target)
        return kiln_error_set(err, KILN_EINVAL, 0, "'%s': hard link to the root", path);
    if (strcmp(target, path) == 0)
        return 0;
    const char *slash = strrchr(target, '/');
    const char *tbase = slash ? slash + 1 : target;
    _cleanup_free_ char *tdir = kiln_xstrndup(target, slash ? (size_t)(slash - target) : 0);
    _cleanup_close_ int tfd = open_dir(c, tdir, true);
    if (tfd < 0)
        return kiln_error_set(err, KILN_EINVAL, -tfd, "'%s': hard link target '%s'", path, target);
    if (linkat(tfd, tbase, pfd, name, 0) == 0)
        goto done;
    if (errno == EEXIST) {
        struct stat a, b;
        if (fstatat(tfd, tbase, &a, AT_SYMLINK_NOFOLLOW) == 0 &&
            fstatat(pfd, name, &b, AT_SYMLINK_NOFOLLOW) == 0 && a.st_dev == b.st_dev &&
            a.st_ino == b.st_ino)
            return 0;
        int r = replace_existing(c, pfd, name, path, err);
        if (r < 0)
            return r;
        if (linkat(tfd, tbase, pfd, name, 0) == 0)
            goto done;
    }
    if (errno == ENOENT || errno == EPERM || errno == EXDEV)
        return kiln_error_set(err, KILN_EINVAL, errno, "'%s': hard link to '%s'", path, target);
    return kiln_error_set(err, KILN_EIO, errno, "'%s': hard link to '%s'", path, target);
done:
    own_at(c, pfd, name);
    return 0;
}

/* ---- whiteouts ---------------------------------------------------------------------------- */

/* Apply mode: remove the children of dfd that are not this layer's own. */
static int opaque_clean(struct ctx *c, int dfd, const char *entry, unsigned depth,
                        struct kiln_error **err)
{
    if (depth > 4096)
        return kiln_error_set(err, KILN_ETOOBIG, 0, "'%s': directory tree too deep", entry);
    int fd = openat(dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return kiln_error_set(err, KILN_EIO, errno, "'%s': open directory", entry);
    DIR *dir = fdopendir(fd);
    if (!dir) {
        close(fd);
        return kiln_error_set(err, KILN_EIO, errno, "'%s': read directory", entry);
    }
    /* collect names first: removing while reading is not portable */
    char **names = NULL;
    size_t n = 0, a = 0;
    struct dirent *de;
    while ((de = readdir(dir))) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        if (n == a) {
            a = a ? a * 2 : 32;
            names = kiln_xreallocarray(names, a, sizeof(char *));
        }
        names[n++] = kiln_xstrdup(de->d_name);
    }
    closedir(dir);
    int r = 0;
    for (size_t i = 0; i < n && r >= 0; i++) {
        struct stat st;
        if (fstatat(dfd, names[i], &st, AT_SYMLINK_NOFOLLOW) < 0)
            continue;
        if (!inoset_has(&c->own, st.st_dev, st.st_ino)) {
            int e = rm_rf(dfd, names[i]);
            tree_changed(c);
            if (e < 0)
                r = kiln_error_set(err, KILN_EIO, -e, "'%s': remove '%s'", entry, names[i]);
        } else if (S_ISDIR(st.st_mode)) {
            int cfd = openat(dfd, names[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (cfd >= 0) {
                r = opaque_clean(c, cfd, entry, depth + 1, err);
                close(cfd);
            }
        }
    }
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    return r;
}

/* `.wh..wh..opq` in the directory pfd. */
static int do_opaque(struct ctx *c, int pfd, const char *entry, struct kiln_error **err)
{
    c->st.whiteouts++;
    if (c->o.mode == KILN_UNPACK_OVERLAY)
        return set_opaque(pfd, entry, err);
    return opaque_clean(c, pfd, entry, 0, err);
}

/* `.wh.NAME` in the directory pfd. */
static int do_whiteout(struct ctx *c, struct archive_entry *e, int pfd, const char *name,
                       const char *entry, struct kiln_error **err)
{
    c->st.whiteouts++;
    struct stat st;
    bool exists = fstatat(pfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0;
    if (!exists && errno != ENOENT)
        return kiln_error_set(err, KILN_EIO, errno, "'%s': stat", entry);
    if (c->o.mode == KILN_UNPACK_OVERLAY) {
        if (exists) {
            /* this layer's own entry stays; a directory of it hides the lower one */
            if (!S_ISDIR(st.st_mode))
                return 0;
            _cleanup_close_ int dfd =
                openat(pfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (dfd < 0)
                return kiln_error_set(err, KILN_EIO, errno, "'%s': open directory", entry);
            return set_opaque(dfd, entry, err);
        }
        if (mknodat(pfd, name, S_IFCHR | 0000, makedev(0, 0)) < 0) {
            if (errno == EPERM)
                return kiln_error_set(err, KILN_EUNSUPPORTED, errno,
                                      "'%s': create overlay whiteout (needs CAP_MKNOD)", entry);
            return kiln_error_set(err, KILN_EIO, errno, "'%s': create overlay whiteout", entry);
        }
        int r = do_chown_at(c, e, pfd, name, -1, entry, err);
        if (r < 0)
            return r;
        struct timespec ts[2];
        entry_times(e, ts);
        if (utimensat(pfd, name, ts, AT_SYMLINK_NOFOLLOW) < 0)
            return kiln_error_set(err, KILN_EIO, errno, "'%s': set times", entry);
        return 0;
    }
    if (!exists)
        return 0;
    if (inoset_has(&c->own, st.st_dev, st.st_ino)) {
        if (!S_ISDIR(st.st_mode))
            return 0;
        _cleanup_close_ int dfd =
            openat(pfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (dfd < 0)
            return kiln_error_set(err, KILN_EIO, errno, "'%s': open directory", entry);
        return opaque_clean(c, dfd, entry, 0, err);
    }
    int r = rm_rf(pfd, name);
    tree_changed(c);
    if (r < 0)
        return kiln_error_set(err, KILN_EIO, -r, "'%s': remove", entry);
    return 0;
}

/* ---- the entry loop ----------------------------------------------------------------------- */

static bool has_wh_component(const char *dir)
{
    for (const char *p = dir; *p;) {
        if (strncmp(p, WH_PREFIX, 4) == 0)
            return true;
        p = strchr(p, '/');
        if (!p)
            break;
        p++;
    }
    return false;
}

static int do_root(struct ctx *c, struct archive_entry *e, struct kiln_error **err)
{
    if (archive_entry_filetype(e) != AE_IFDIR || archive_entry_hardlink(e))
        return kiln_error_set(err, KILN_EINVAL, 0, "'%s': only a directory can name the root",
                              archive_entry_pathname(e) ? archive_entry_pathname(e) : "");
    _cleanup_close_ int fd = reopen_root(c);
    if (fd < 0)
        return kiln_error_set(err, KILN_EIO, -fd, "open the root");
    int r = do_chown_at(c, e, -1, NULL, fd, "./", err);
    if (r < 0)
        return r;
    if ((r = set_xattrs(c, e, fd, false, "./", err)) < 0)
        return r;
    if (add_dirfix(c, "", e, fd) < 0)
        return kiln_error_set(err, KILN_EIO, errno, "stat the root");
    return 0;
}

static int process(struct ctx *c, struct archive_entry *e, struct kiln_error **err)
{
    if (++c->st.entries > c->o.max_entries)
        return kiln_error_set(err, KILN_ETOOBIG, 0, "layer has more than %llu entries",
                              (unsigned long long)c->o.max_entries);
    const char *raw = archive_entry_pathname(e);
    if (!raw)
        raw = archive_entry_pathname_utf8(e);
    if (!raw)
        return kiln_error_set(err, KILN_EINVAL, 0, "entry %llu has no name",
                              (unsigned long long)c->st.entries);
    _cleanup_free_ char *path = NULL;
    if (clean_path(raw, c->o.max_path, &path) < 0)
        return kiln_error_set(err, KILN_ETOOBIG, 0, "entry %llu: name longer than %zu bytes",
                              (unsigned long long)c->st.entries, c->o.max_path);
    mode_t type = archive_entry_filetype(e);
    const char *hardlink = archive_entry_hardlink(e);
    if (!hardlink)
        hardlink = archive_entry_hardlink_utf8(e);
    if (type == AE_IFREG && !hardlink && archive_entry_size_is_set(e)) {
        la_int64_t sz = archive_entry_size(e);
        if (sz < 0)
            return kiln_error_set(err, KILN_EINVAL, 0, "'%s': negative size", path);
        c->sum_sizes += (uint64_t)sz;
        if (c->sum_sizes > c->o.max_bytes)
            return kiln_error_set(err, KILN_ETOOBIG, 0, "'%s': layer content exceeds %llu bytes",
                                  path, (unsigned long long)c->o.max_bytes);
    }
    if (!*path)
        return do_root(c, e, err);

    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    _cleanup_free_ char *dir = kiln_xstrndup(path, slash ? (size_t)(slash - path) : 0);
    if (has_wh_component(dir) ||
        (strncmp(base, WH_META_PREFIX, 8) == 0 && strcmp(base, WH_OPAQUE) != 0)) {
        /* aufs metadata, or below a whiteout */
        c->st.skipped++;
        return 0;
    }
    int pfd = -1;
    int r = get_parent(c, dir, path, &pfd, err);
    if (r < 0)
        return r;
    if (strcmp(base, WH_OPAQUE) == 0)
        return do_opaque(c, pfd, path, err);
    if (strncmp(base, WH_PREFIX, 4) == 0) {
        const char *name = base + 4;
        if (!*name || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
            return kiln_error_set(err, KILN_EINVAL, 0, "'%s': invalid whiteout name", path);
        return do_whiteout(c, e, pfd, name, path, err);
    }
    if (hardlink)
        return do_hardlink(c, hardlink, pfd, base, path, err);
    switch (type) {
    case AE_IFREG:
        return do_file(c, e, pfd, base, path, err);
    case AE_IFDIR:
        return do_dir(c, e, pfd, base, path, err);
    case AE_IFLNK:
        return do_symlink(c, e, pfd, base, path, err);
    case AE_IFCHR:
    case AE_IFBLK:
    case AE_IFIFO:
        return do_node(c, e, pfd, base, path, err);
    default:
        /* sockets and unknown types are not extracted */
        c->st.skipped++;
        return 0;
    }
}

/* Set the directories' modes and mtimes, now that nothing more is created in them. */
static int fix_dirs(struct ctx *c, struct kiln_error **err)
{
    for (size_t i = 0; i < c->ndirs; i++) {
        struct dirfix *f = &c->dirs[i];
        _cleanup_close_ int fd = open_dir(c, f->path, false);
        if (fd < 0) {
            if (fd == -ENOENT || fd == -ENOTDIR || fd == -ELOOP)
                continue; /* replaced or removed by a later entry */
            return kiln_error_set(err, KILN_EIO, -fd, "'%s': open directory", f->path);
        }
        struct stat st;
        if (fstat(fd, &st) < 0)
            return kiln_error_set(err, KILN_EIO, errno, "'%s': stat", f->path);
        if (st.st_dev != f->dev || st.st_ino != f->ino)
            continue;
        if (fchmod(fd, f->mode) < 0)
            return kiln_error_set(err, KILN_EIO, errno, "'%s': chmod", f->path);
        if (f->has_mtime) {
            struct timespec ts[2] = {f->mtime, f->mtime};
            if (futimens(fd, ts) < 0)
                return kiln_error_set(err, KILN_EIO, errno, "'%s': set times", f->path);
        }
    }
    return 0;
}

static la_ssize_t read_cb(struct archive *a, void *ud, const void **buf)
{
    struct ctx *c = ud;
    ssize_t n = kiln_decompress_next(c->d, buf, &c->read_err);
    if (n < 0) {
        archive_set_error(a, EIO, "%s", c->read_err ? c->read_err->msg : "read failed");
        return -1;
    }
    return (la_ssize_t)n;
}

static int run(struct ctx *c, kiln_read_fn read, void *userdata, struct kiln_error **err)
{
    struct kiln_decompress_opts dopts = {
        .no_thread = c->o.no_thread,
        .digest_compressed = c->o.digest_compressed,
        .max_output = c->o.max_bytes,
    };
    int r = kiln_decompress_open(&c->d, read, userdata, &dopts, err);
    if (r < 0)
        return r;
    c->a = archive_read_new();
    if (!c->a)
        return kiln_error_set(err, KILN_EINTERNAL, ENOMEM, "archive_read_new");
    archive_read_support_format_tar(c->a);
    if (archive_read_open2(c->a, c, NULL, read_cb, NULL, NULL) != ARCHIVE_OK) {
        if (c->read_err)
            return kiln_error_set(err, c->read_err->code, 0, "%s", c->read_err->msg);
        return kiln_error_set(err, KILN_EINVAL, 0, "open tar: %s", archive_error_string(c->a));
    }
    for (;;) {
        struct archive_entry *e;
        int ar = archive_read_next_header(c->a, &e);
        if (ar == ARCHIVE_EOF)
            break;
        if (ar < ARCHIVE_WARN) {
            if (c->read_err)
                return kiln_error_set(err, c->read_err->code, 0, "%s", c->read_err->msg);
            return kiln_error_set(err, KILN_EINVAL, 0, "tar entry %llu: %s",
                                  (unsigned long long)c->st.entries + 1,
                                  archive_error_string(c->a));
        }
        if (ar == ARCHIVE_WARN)
            kiln_log(KILN_LOG_DEBUG, "unpack: tar entry %llu: %s",
                     (unsigned long long)c->st.entries + 1, archive_error_string(c->a));
        if ((r = process(c, e, err)) < 0)
            return r;
    }
    if ((r = kiln_decompress_finish(c->d, &c->st.stream, err)) < 0)
        return r;
    return fix_dirs(c, err);
}

int kiln_unpack(int rootfd, kiln_read_fn read, void *userdata, const struct kiln_unpack_opts *opts,
                struct kiln_unpack_stats *ret_stats, struct kiln_error **err)
{
    struct ctx c = {.rootfd = rootfd, .cache_fd = -1, .openat2_ok = true};
    if (opts)
        c.o = *opts;
    if (!c.o.max_bytes)
        c.o.max_bytes = KILN_UNPACK_DEFAULT_MAX_BYTES;
    if (!c.o.max_entries)
        c.o.max_entries = KILN_UNPACK_DEFAULT_MAX_ENTRIES;
    if (!c.o.max_path)
        c.o.max_path = KILN_UNPACK_DEFAULT_MAX_PATH;
    c.openat2_ok = !c.o.no_openat2;
    c.chown_ok = !c.o.no_chown && geteuid() == 0;

    int r = run(&c, read, userdata, err);
    if (r >= 0 && ret_stats)
        *ret_stats = c.st;

    if (c.a)
        archive_read_free(c.a);
    kiln_decompress_free(c.d);
    kiln_error_free(c.read_err);
    cache_drop(&c);
    for (size_t i = 0; i < c.ndirs; i++)
        free(c.dirs[i].path);
    free(c.dirs);
    free(c.own.keys);
    strset_clear(&c.seen);
    return r;
}

int kiln_unpack_fd(int rootfd, int srcfd, const struct kiln_unpack_opts *opts,
                   struct kiln_unpack_stats *ret_stats, struct kiln_error **err)
{
    return kiln_unpack(rootfd, kiln_decompress_read_fd, &srcfd, opts, ret_stats, err);
}
