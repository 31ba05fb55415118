#include "util/common.h"
#include "layer/pack.h"

#include <dirent.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <inttypes.h>
#include <limits.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "util/buf.h"
#include "util/log.h"

#define MAX_DEPTH       512
#define IO_SIZE         ((size_t)256 << 10)
#define PROGRESS_BYTES  ((uint64_t)4 << 20)
#define XATTR_LIST_CAP  ((size_t)64 << 10) /* Linux XATTR_LIST_MAX */
#define XATTR_VALUE_CAP ((size_t)64 << 10) /* Linux XATTR_SIZE_MAX */
#define PAX_CAP         ((size_t)16 << 20)
#define PATH_CAP        ((size_t)1 << 20)
#define WH_PREFIX       ".wh."
#define WH_OPAQUE       ".wh..wh..opq"

/* ustar numeric field limits (octal digits that fit) */
#define USTAR_MAX_ID   UINT64_C(07777777)
#define USTAR_MAX_SIZE UINT64_C(077777777777)

struct xattr {
    char *name;
    uint8_t *value;
    size_t len;
};

struct xattrs {
    struct xattr *v;
    size_t n;
};

struct link_slot {
    dev_t dev;
    ino_t ino;
    char *path; /* NULL: empty slot */
};

struct dent {
    char *name;     /* on disk */
    char *tar_name; /* in the tar: ".wh.NAME" for a whiteout, else name */
    struct stat st;
    bool whiteout;
};

/* One tar entry to write. */
struct entry {
    const char *path; /* relative, directories with a trailing '/' */
    size_t path_len;
    char type;
    uint32_t mode;
    uint64_t uid, gid, size;
    int64_t mtime;
    const char *link; /* hard link or symlink target, or NULL */
    uint32_t devmajor, devminor;
    const struct xattrs *xattrs; /* or NULL */
};

struct packer {
    const struct kiln_pack_options *o;
    struct kiln_compressor *c;
    struct kiln_buf path; /* the current entry's relative path, no trailing '/' */
    struct kiln_buf pax;  /* extended header records */
    struct kiln_buf name; /* scratch */
    struct link_slot *links;
    size_t links_cap, links_n;
    char **exclude;
    size_t nexclude;
    uint8_t *io;
    char *xlist;
    uint8_t *xval;
    dev_t root_dev;
    uint64_t tar_bytes, next_progress;
    struct kiln_pack_stats st;
};

static const uint8_t zeros[1024];

/* ---- tar writing ----------------------------------------------------------------- */

static int out(struct packer *p, const void *data, size_t len, struct kiln_error **err)
{
    p->tar_bytes += len;
    return kiln_compress_write(p->c, data, len, err);
}

static int pad(struct packer *p, uint64_t size, struct kiln_error **err)
{
    size_t rest = (size_t)(size % 512);
    return rest ? out(p, zeros, 512 - rest, err) : 0;
}

/* Octal, zero-padded, NUL-terminated in a field of `width` bytes. */
static void put_octal(uint8_t *field, size_t width, uint64_t v)
{
    field[width - 1] = '\0';
    for (size_t i = width - 1; i-- > 0; v >>= 3)
        field[i] = (uint8_t)('0' + (v & 7));
}

static size_t ndigits(size_t n)
{
    size_t d = 1;
    while (n >= 10) {
        n /= 10;
        d++;
    }
    return d;
}

/* A pax record "LEN KEY=VALUE\n", LEN counting the whole record. */
static void pax_add(struct kiln_buf *b, const char *key, const void *value, size_t vlen)
{
    size_t base = strlen(key) + vlen + 3, d = 1;
    while (ndigits(base + d) > d)
        d++;
    kiln_buf_addf(b, "%zu %s=", base + d, key);
    kiln_buf_add(b, value, vlen);
    kiln_buf_addch(b, '\n');
}

static void pax_add_num(struct kiln_buf *b, const char *key, bool is_signed, uint64_t v)
{
    char num[32];
    int n = is_signed ? snprintf(num, sizeof(num), "%" PRId64, (int64_t)v)
                      : snprintf(num, sizeof(num), "%" PRIu64, v);
    pax_add(b, key, num, (size_t)n);
}

static void header_block(uint8_t h[512], const char *name, size_t name_len, char type,
                         uint32_t mode, uint64_t uid, uint64_t gid, uint64_t size, uint64_t mtime,
                         const char *link, uint32_t devmajor, uint32_t devminor)
{
    memset(h, 0, 512);
    memcpy(h, name, name_len > 100 ? 100 : name_len);
    put_octal(h + 100, 8, mode);
    put_octal(h + 108, 8, uid);
    put_octal(h + 116, 8, gid);
    put_octal(h + 124, 12, size);
    put_octal(h + 136, 12, mtime);
    h[156] = (uint8_t)type;
    if (link) {
        size_t n = strlen(link);
        memcpy(h + 157, link, n > 100 ? 100 : n);
    }
    memcpy(h + 257, "ustar", 6);
    memcpy(h + 263, "00", 2);
    if (type == '3' || type == '4') {
        put_octal(h + 329, 8, devmajor);
        put_octal(h + 337, 8, devminor);
    }
    memset(h + 148, ' ', 8);
    unsigned sum = 0;
    for (size_t i = 0; i < 512; i++)
        sum += h[i];
    put_octal(h + 148, 7, sum);
    h[155] = ' ';
}

static int write_entry(struct packer *p, const struct entry *e, struct kiln_error **err)
{
    uint8_t h[512];
    uint64_t uid = e->uid, gid = e->gid, size = e->size, mtime = (uint64_t)e->mtime;

    kiln_buf_reset(&p->pax);
    if (e->path_len > 100)
        pax_add(&p->pax, "path", e->path, e->path_len);
    if (e->link && strlen(e->link) > 100)
        pax_add(&p->pax, "linkpath", e->link, strlen(e->link));
    if (size > USTAR_MAX_SIZE) {
        pax_add_num(&p->pax, "size", false, size);
        size = 0;
    }
    if (uid > USTAR_MAX_ID) {
        pax_add_num(&p->pax, "uid", false, uid);
        uid = 0;
    }
    if (gid > USTAR_MAX_ID) {
        pax_add_num(&p->pax, "gid", false, gid);
        gid = 0;
    }
    if (e->mtime < 0 || (uint64_t)e->mtime > USTAR_MAX_SIZE) {
        pax_add_num(&p->pax, "mtime", true, (uint64_t)e->mtime);
        mtime = 0;
    }
    for (size_t i = 0; e->xattrs && i < e->xattrs->n; i++) {
        const struct xattr *x = &e->xattrs->v[i];
        kiln_buf_reset(&p->name);
        kiln_buf_adds(&p->name, "SCHILY.xattr.");
        kiln_buf_adds(&p->name, x->name);
        pax_add(&p->pax, p->name.buf, x->value, x->len);
    }
    int r = kiln_buf_finish(&p->pax, "pax header", err);
    if (r < 0)
        return kiln_error_prefix(err, "'%.*s'", (int)e->path_len, e->path);

    if (p->pax.len) {
        /* named like Go's archive/tar: <dir>/PaxHeaders.0/<base> */
        size_t end = e->path_len;
        while (end > 0 && e->path[end - 1] == '/')
            end--;
        size_t slash = end;
        while (slash > 0 && e->path[slash - 1] != '/')
            slash--;
        kiln_buf_reset(&p->name);
        kiln_buf_add(&p->name, e->path, slash);
        kiln_buf_adds(&p->name, "PaxHeaders.0/");
        kiln_buf_add(&p->name, e->path + slash, end - slash);
        header_block(h, p->name.buf, p->name.len, 'x', 0644, 0, 0, p->pax.len, 0, NULL, 0, 0);
        if ((r = out(p, h, 512, err)) < 0 || (r = out(p, p->pax.buf, p->pax.len, err)) < 0 ||
            (r = pad(p, p->pax.len, err)) < 0)
            return r;
    }
    header_block(h, e->path, e->path_len, e->type, e->mode, uid, gid, size, mtime, e->link,
                 e->devmajor, e->devminor);
    p->st.entries++;
    return out(p, h, 512, err);
}

/* ---- helpers ----------------------------------------------------------------- */

static int progress(struct packer *p, struct kiln_error **err)
{
    if (p->o->progress && p->o->progress(p->o->progress_data, p->tar_bytes, p->st.entries))
        return kiln_error_set(err, KILN_ECANCELLED, 0, "pack cancelled");
    return 0;
}

static int64_t entry_mtime(const struct packer *p, const struct stat *st)
{
    int64_t t = (int64_t)st->st_mtim.tv_sec;
    if (p->o->clamp_mtime && t > p->o->source_date_epoch)
        t = p->o->source_date_epoch;
    return t;
}

static void entry_from_stat(const struct packer *p, struct entry *e, const struct stat *st)
{
    e->mode = (uint32_t)(st->st_mode & 07777);
    e->uid = st->st_uid;
    e->gid = st->st_gid;
    e->mtime = entry_mtime(p, st);
}

static bool excluded(const struct packer *p)
{
    for (size_t i = 0; i < p->nexclude; i++)
        if (fnmatch(p->exclude[i], p->path.buf, FNM_PATHNAME) == 0)
            return true;
    return false;
}

static size_t link_hash(dev_t dev, ino_t ino)
{
    uint64_t h = ((uint64_t)ino ^ ((uint64_t)dev << 32 | (uint64_t)dev >> 32)) *
                 UINT64_C(0x9E3779B97F4A7C15);
    return (size_t)(h ^ (h >> 31));
}

static const char *link_find(const struct packer *p, dev_t dev, ino_t ino)
{
    if (!p->links_cap)
        return NULL;
    for (size_t i = link_hash(dev, ino) & (p->links_cap - 1); p->links[i].path;
         i = (i + 1) & (p->links_cap - 1))
        if (p->links[i].dev == dev && p->links[i].ino == ino)
            return p->links[i].path;
    return NULL;
}

static void link_put(struct link_slot *slots, size_t cap, dev_t dev, ino_t ino, char *path)
{
    size_t i = link_hash(dev, ino) & (cap - 1);
    while (slots[i].path)
        i = (i + 1) & (cap - 1);
    slots[i] = (struct link_slot){dev, ino, path};
}

static void link_add(struct packer *p, dev_t dev, ino_t ino, const char *path)
{
    if ((p->links_n + 1) * 2 > p->links_cap) {
        size_t cap = p->links_cap ? p->links_cap * 2 : 256;
        struct link_slot *slots = kiln_xcalloc(cap, sizeof(*slots));
        for (size_t i = 0; i < p->links_cap; i++)
            if (p->links[i].path)
                link_put(slots, cap, p->links[i].dev, p->links[i].ino, p->links[i].path);
        free(p->links);
        p->links = slots;
        p->links_cap = cap;
    }
    link_put(p->links, p->links_cap, dev, ino, kiln_xstrdup(path));
    p->links_n++;
}

static void xattrs_release(struct xattrs *xs)
{
    for (size_t i = 0; i < xs->n; i++) {
        free(xs->v[i].name);
        free(xs->v[i].value);
    }
    free(xs->v);
    xs->v = NULL;
    xs->n = 0;
}

static int cmp_xattr(const void *a, const void *b)
{
    return strcmp(((const struct xattr *)a)->name, ((const struct xattr *)b)->name);
}

static bool has_prefix(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* An overlay xattr ("trusted.overlay.x" or "user.overlay.x") named x, or NULL. */
static const char *overlay_key(const char *name)
{
    if (has_prefix(name, "trusted.overlay."))
        return name + strlen("trusted.overlay.");
    if (has_prefix(name, "user.overlay."))
        return name + strlen("user.overlay.");
    return NULL;
}

/*
 * Read the xattrs of an open file or directory that go into the tar, sorted
 * by name; in overlay mode also whether it is an opaque directory.
 */
static int read_xattrs(struct packer *p, int fd, struct xattrs *ret, bool *ret_opaque,
                       struct kiln_error **err)
{
    *ret_opaque = false;
    ssize_t n = flistxattr(fd, p->xlist, XATTR_LIST_CAP);
    if (n < 0) {
        if (errno == ENOTSUP)
            return 0;
        return kiln_error_set(err, KILN_EIO, errno, "list xattrs of '%s'", p->path.buf);
    }
    for (ssize_t off = 0; off < n;) {
        const char *name = p->xlist + off;
        off += (ssize_t)strlen(name) + 1;
        const char *ovl = p->o->overlay ? overlay_key(name) : NULL;
        bool keep = !ovl && !has_prefix(name, "trusted.") && strcmp(name, "security.selinux") != 0;
        if (!keep && !ovl)
            continue;
        ssize_t vn = fgetxattr(fd, name, p->xval, XATTR_VALUE_CAP);
        if (vn < 0) {
            if (errno == ENODATA)
                continue;
            return kiln_error_set(err, KILN_EIO, errno, "read xattr '%s' of '%s'", name,
                                  p->path.buf);
        }
        if (ovl) {
            if (strcmp(ovl, "opaque") == 0 && vn == 1 && p->xval[0] == 'y')
                *ret_opaque = true;
            if (strcmp(ovl, "redirect") == 0 || strcmp(ovl, "metacopy") == 0)
                return kiln_error_set(err, KILN_EUNSUPPORTED, 0,
                                      "'%s' has overlay xattr '%s': mount the overlay with "
                                      "redirect_dir=off,metacopy=off",
                                      p->path.buf, name);
            continue;
        }
        ret->v = kiln_xreallocarray(ret->v, ret->n + 1, sizeof(*ret->v));
        struct xattr *x = &ret->v[ret->n++];
        x->name = kiln_xstrdup(name);
        x->value = kiln_xmalloc(vn ? (size_t)vn : 1);
        memcpy(x->value, p->xval, (size_t)vn);
        x->len = (size_t)vn;
    }
    if (ret->n > 1)
        qsort(ret->v, ret->n, sizeof(*ret->v), cmp_xattr);
    return 0;
}

/* ---- the walk ----------------------------------------------------------------- */

static int cmp_dent(const void *a, const void *b)
{
    return strcmp(((const struct dent *)a)->tar_name, ((const struct dent *)b)->tar_name);
}

static void dents_free(struct dent *d, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (d[i].tar_name != d[i].name)
            free(d[i].tar_name);
        free(d[i].name);
    }
    free(d);
}

/* List a directory: every entry but . and .., lstat'ed, sorted by tar name. */
static int list_dir(struct packer *p, int fd, struct dent **ret, size_t *ret_n,
                    struct kiln_error **err)
{
    int lfd = openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (lfd < 0)
        return kiln_error_set(err, KILN_EIO, errno, "open directory '%s'", p->path.buf);
    DIR *dir = fdopendir(lfd);
    if (!dir) {
        int e = errno;
        close(lfd);
        return kiln_error_set(err, KILN_EIO, e, "open directory '%s'", p->path.buf);
    }
    struct dent *v = NULL;
    size_t n = 0;
    int r = 0;
    for (;;) {
        errno = 0;
        struct dirent *de = readdir(dir);
        if (!de) {
            if (errno)
                r = kiln_error_set(err, KILN_EIO, errno, "read directory '%s'", p->path.buf);
            break;
        }
        const char *name = de->d_name;
        if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
            continue;
        if (has_prefix(name, WH_PREFIX)) {
            r = kiln_error_set(err, KILN_EUNSUPPORTED, 0,
                               "'%s%s%s': names starting with '.wh.' are reserved for "
                               "whiteouts in image layers",
                               p->path.buf, p->path.len ? "/" : "", name);
            break;
        }
        struct stat st;
        if (fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
            r = kiln_error_set(err, KILN_EIO, errno, "stat '%s%s%s'", p->path.buf,
                               p->path.len ? "/" : "", name);
            break;
        }
        v = kiln_xreallocarray(v, n + 1, sizeof(*v));
        struct dent *d = &v[n++];
        d->name = kiln_xstrdup(name);
        d->st = st;
        d->whiteout = p->o->overlay && S_ISCHR(st.st_mode) && st.st_rdev == makedev(0, 0);
        d->tar_name = d->whiteout ? kiln_xasprintf(WH_PREFIX "%s", name) : d->name;
    }
    closedir(dir);
    if (r < 0) {
        dents_free(v, n);
        return r;
    }
    if (n > 1)
        qsort(v, n, sizeof(*v), cmp_dent);
    *ret = v;
    *ret_n = n;
    return 0;
}

static int same_inode(const struct packer *p, int fd, const struct stat *want, struct stat *got,
                      struct kiln_error **err)
{
    if (fstat(fd, got) < 0)
        return kiln_error_set(err, KILN_EIO, errno, "stat '%s'", p->path.buf);
    if (got->st_ino != want->st_ino || got->st_dev != want->st_dev)
        return kiln_error_set(err, KILN_EIO, 0, "'%s' changed while packing", p->path.buf);
    return 0;
}

static int walk(struct packer *p, int fd, int depth, struct kiln_error **err);

static int pack_dir(struct packer *p, int parent, const struct dent *d, int depth,
                    struct kiln_error **err)
{
    _cleanup_close_ int fd =
        openat(parent, d->name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    struct stat st;
    struct xattrs xs = {0};
    bool opaque = false;
    if (fd < 0)
        return kiln_error_set(err, KILN_EIO, errno, "open directory '%s'", p->path.buf);
    int r = same_inode(p, fd, &d->st, &st, err);
    if (r >= 0)
        r = read_xattrs(p, fd, &xs, &opaque, err);
    if (r < 0) {
        xattrs_release(&xs);
        return r;
    }
    size_t base = p->path.len;
    kiln_buf_addch(&p->path, '/');
    struct entry e = {.path = p->path.buf, .path_len = p->path.len, .type = '5', .xattrs = &xs};
    entry_from_stat(p, &e, &st);
    r = write_entry(p, &e, err);
    xattrs_release(&xs);
    if (r >= 0 && opaque) {
        kiln_buf_adds(&p->path, WH_OPAQUE);
        e = (struct entry){.path = p->path.buf, .path_len = p->path.len, .type = '0'};
        entry_from_stat(p, &e, &st);
        r = write_entry(p, &e, err);
        p->st.opaque_dirs++;
    }
    kiln_buf_truncate(&p->path, base);
    if (r < 0)
        return r;
    if (st.st_dev != p->root_dev) {
        kiln_log(KILN_LOG_DEBUG, "pack: '%s' is a mount point, its contents are left out",
                 p->path.buf);
        return 0;
    }
    return walk(p, fd, depth + 1, err);
}

static int pack_file(struct packer *p, int parent, const struct dent *d, struct kiln_error **err)
{
    _cleanup_close_ int fd =
        openat(parent, d->name, O_RDONLY | O_NOFOLLOW | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
    struct stat st;
    struct xattrs xs = {0};
    bool opaque;
    if (fd < 0)
        return kiln_error_set(err, KILN_EIO, errno, "open '%s'", p->path.buf);
    int r = same_inode(p, fd, &d->st, &st, err);
    if (r >= 0 && !S_ISREG(st.st_mode))
        r = kiln_error_set(err, KILN_EIO, 0, "'%s' changed while packing", p->path.buf);
    if (r >= 0)
        r = read_xattrs(p, fd, &xs, &opaque, err);
    if (r >= 0) {
        struct entry e = {.path = p->path.buf,
                          .path_len = p->path.len,
                          .type = '0',
                          .size = (uint64_t)st.st_size,
                          .xattrs = &xs};
        entry_from_stat(p, &e, &st);
        r = write_entry(p, &e, err);
    }
    xattrs_release(&xs);
    if (r < 0)
        return r;

    uint64_t left = (uint64_t)st.st_size;
    while (left) {
        ssize_t n = read(fd, p->io, left < IO_SIZE ? (size_t)left : IO_SIZE);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return kiln_error_set(err, KILN_EIO, errno, "read '%s'", p->path.buf);
        if (n == 0)
            return kiln_error_set(err, KILN_EIO, 0, "'%s' shrank while packing", p->path.buf);
        if ((r = out(p, p->io, (size_t)n, err)) < 0)
            return r;
        left -= (uint64_t)n;
        if (p->tar_bytes >= p->next_progress) {
            p->next_progress = p->tar_bytes + PROGRESS_BYTES;
            if ((r = progress(p, err)) < 0)
                return r;
        }
    }
    p->st.files++;
    p->st.file_bytes += (uint64_t)st.st_size;
    return pad(p, (uint64_t)st.st_size, err);
}

static int pack_other(struct packer *p, int parent, const struct dent *d, struct kiln_error **err)
{
    char target[PATH_MAX + 1];
    struct entry e = {.path = p->path.buf, .path_len = p->path.len};
    entry_from_stat(p, &e, &d->st);
    switch (d->st.st_mode & S_IFMT) {
    case S_IFLNK: {
        ssize_t n = readlinkat(parent, d->name, target, sizeof(target));
        if (n < 0)
            return kiln_error_set(err, KILN_EIO, errno, "read link '%s'", p->path.buf);
        if ((size_t)n >= sizeof(target))
            return kiln_error_set(err, KILN_ETOOBIG, 0, "link '%s': target too long", p->path.buf);
        target[n] = '\0';
        e.type = '2';
        e.link = target;
        break;
    }
    case S_IFCHR:
    case S_IFBLK:
        e.type = S_ISCHR(d->st.st_mode) ? '3' : '4';
        e.devmajor = major(d->st.st_rdev);
        e.devminor = minor(d->st.st_rdev);
        break;
    case S_IFIFO:
        e.type = '6';
        break;
    default:
        return kiln_error_set(err, KILN_EINTERNAL, 0, "'%s': unexpected file type", p->path.buf);
    }
    return write_entry(p, &e, err);
}

static int pack_one(struct packer *p, int parent, const struct dent *d, int depth,
                    struct kiln_error **err)
{
    mode_t type = d->st.st_mode & S_IFMT;
    if (d->whiteout) {
        size_t base = p->path.len;
        while (base > 0 && p->path.buf[base - 1] != '/')
            base--;
        kiln_buf_truncate(&p->path, base);
        kiln_buf_adds(&p->path, d->tar_name);
        struct entry e = {.path = p->path.buf, .path_len = p->path.len, .type = '0'};
        entry_from_stat(p, &e, &d->st);
        p->st.whiteouts++;
        return write_entry(p, &e, err);
    }
    if (type == S_IFSOCK) {
        kiln_log(KILN_LOG_DEBUG, "pack: socket '%s' left out", p->path.buf);
        p->st.skipped++;
        return 0;
    }
    if (type == S_IFDIR)
        return pack_dir(p, parent, d, depth, err);
    if (d->st.st_nlink > 1) {
        const char *first = link_find(p, d->st.st_dev, d->st.st_ino);
        if (first) {
            struct entry e = {
                .path = p->path.buf, .path_len = p->path.len, .type = '1', .link = first};
            entry_from_stat(p, &e, &d->st);
            p->st.hardlinks++;
            return write_entry(p, &e, err);
        }
        link_add(p, d->st.st_dev, d->st.st_ino, p->path.buf);
    }
    if (type == S_IFREG)
        return pack_file(p, parent, d, err);
    return pack_other(p, parent, d, err);
}

static int walk(struct packer *p, int fd, int depth, struct kiln_error **err)
{
    if (depth >= MAX_DEPTH)
        return kiln_error_set(err, KILN_ETOOBIG, 0, "'%s': more than %d directory levels",
                              p->path.buf, MAX_DEPTH);
    struct dent *v = NULL;
    size_t n = 0;
    int r = list_dir(p, fd, &v, &n, err);
    if (r < 0)
        return r;
    size_t base = p->path.len;
    for (size_t i = 0; i < n && r >= 0; i++) {
        if (base)
            kiln_buf_addch(&p->path, '/');
        kiln_buf_adds(&p->path, v[i].name);
        if (p->path.err || p->path.len + 64 > PATH_CAP) {
            kiln_buf_truncate(&p->path, base);
            r = kiln_error_set(err, KILN_ETOOBIG, 0, "'%s': path too long", p->path.buf);
            break;
        }
        if (excluded(p)) {
            p->st.excluded++;
        } else {
            r = pack_one(p, fd, &v[i], depth, err);
            if (r >= 0)
                r = progress(p, err);
        }
        kiln_buf_truncate(&p->path, base);
    }
    dents_free(v, n);
    return r;
}

/* ---- public ----------------------------------------------------------------- */

static int normalise_exclude(struct packer *p, const char *const *patterns, struct kiln_error **err)
{
    for (size_t i = 0; patterns && patterns[i]; i++) {
        const char *s = patterns[i];
        for (;;) {
            if (s[0] == '/')
                s++;
            else if (s[0] == '.' && s[1] == '/')
                s += 2;
            else
                break;
        }
        size_t len = strlen(s);
        while (len > 0 && s[len - 1] == '/')
            len--;
        if (!len)
            return kiln_error_set(err, KILN_EINVAL, 0, "invalid exclude pattern '%s'", patterns[i]);
        p->exclude = kiln_xreallocarray(p->exclude, p->nexclude + 1, sizeof(*p->exclude));
        p->exclude[p->nexclude++] = kiln_xstrndup(s, len);
    }
    return 0;
}

static void packer_release(struct packer *p)
{
    kiln_compress_free(p->c);
    kiln_buf_release(&p->path);
    kiln_buf_release(&p->pax);
    kiln_buf_release(&p->name);
    for (size_t i = 0; i < p->links_cap; i++)
        free(p->links[i].path);
    free(p->links);
    for (size_t i = 0; i < p->nexclude; i++)
        free(p->exclude[i]);
    free(p->exclude);
    free(p->io);
    free(p->xlist);
    free(p->xval);
}

int kiln_pack_dir(int dirfd, const struct kiln_pack_options *o, kiln_compress_write_fn fn,
                  void *userdata, struct kiln_compress_result *ret,
                  struct kiln_pack_stats *ret_stats, struct kiln_error **err)
{
    static const struct kiln_pack_options defaults = {.compress = KILN_COMPRESS_OPTIONS_INIT};
    struct packer p = {.o = o ? o : &defaults};
    struct stat st;
    struct kiln_compress_result res;
    int r;

    kiln_buf_init(&p.path, PATH_CAP);
    kiln_buf_init(&p.pax, PAX_CAP);
    kiln_buf_init(&p.name, PATH_CAP + 64);
    if ((r = normalise_exclude(&p, p.o->exclude, err)) < 0)
        goto out;
    if (fstat(dirfd, &st) < 0) {
        r = kiln_error_set(err, KILN_EIO, errno, "pack: stat root");
        goto out;
    }
    if (!S_ISDIR(st.st_mode)) {
        r = kiln_error_set(err, KILN_EINVAL, 0, "pack: root is not a directory");
        goto out;
    }
    p.root_dev = st.st_dev;
    p.io = kiln_xmalloc(IO_SIZE);
    p.xlist = kiln_xmalloc(XATTR_LIST_CAP);
    p.xval = kiln_xmalloc(XATTR_VALUE_CAP);
    p.next_progress = PROGRESS_BYTES;
    if ((r = kiln_compress_new(&p.o->compress, fn, userdata, &p.c, err)) < 0)
        goto out;
    if ((r = walk(&p, dirfd, 0, err)) < 0)
        goto out;
    /* end of archive: two zero blocks */
    if ((r = out(&p, zeros, 1024, err)) < 0)
        goto out;
    if ((r = kiln_compress_finish(p.c, &res, err)) < 0)
        goto out;
    *ret = res;
    if (ret_stats)
        *ret_stats = p.st;
    r = 0;
out:
    packer_release(&p);
    return r;
}

struct fd_sink {
    int fd;
};

static int fd_sink_write(void *userdata, const void *data, size_t len, struct kiln_error **err)
{
    const struct fd_sink *s = userdata;
    const uint8_t *q = data;
    while (len) {
        ssize_t n = write(s->fd, q, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return kiln_error_set(err, KILN_EIO, errno, "write layer");
        }
        q += n;
        len -= (size_t)n;
    }
    return 0;
}

int kiln_pack_dir_fd(int dirfd, const struct kiln_pack_options *o, int out_fd,
                     struct kiln_compress_result *ret, struct kiln_pack_stats *ret_stats,
                     struct kiln_error **err)
{
    struct fd_sink s = {out_fd};
    if (out_fd < 0)
        return kiln_error_set(err, KILN_EINVAL, 0, "pack: invalid output fd '%d'", out_fd);
    return kiln_pack_dir(dirfd, o, fd_sink_write, &s, ret, ret_stats, err);
}
