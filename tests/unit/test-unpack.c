/*
 * Tests for layer/decompress and layer/unpack. The tars are built here with
 * libarchive's writer, compressed with zlib / libzstd, and unpacked into
 * fresh directories under /tmp. Trees are compared with a small walker that
 * lists path, type, mode, owner, size, link target, device, xattrs, mtime.
 * Some checks need root (devices, ownership, overlay whiteouts, mounting
 * overlayfs) and are skipped otherwise.
 */
#include "util/common.h"
#include "layer/decompress.h"
#include "layer/unpack.h"
#include "util/buf.h"
#include "util/sha256.h"
#include "util/strv.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include "tap.h"

static bool is_root;
static bool list_nlink = true; /* overlayfs shows a lower file's own nlink */
static char base_dir[64];

/* ---- building tars ------------------------------------------------------------------------ */

struct ent {
    char type; /* f file, d dir, l symlink, h hard link, c/b device, p fifo, s socket */
    const char *path;
    const char *target; /* link target, or file content */
    unsigned mode;      /* 0: 0644 / 0755 */
    int uid, gid;
    long long mtime;
    long nsec;
    const char *xname;
    const char *xval;
    size_t xlen;
    size_t big; /* file of this many pattern bytes */
    unsigned maj, min;
};

static la_ssize_t write_cb(struct archive *a, void *ud, const void *buf, size_t n)
{
    kiln_buf_add(ud, buf, n);
    return (la_ssize_t)n;
}

/* format: 'p' pax, 'g' gnutar, 'u' ustar */
static void build_tar(const struct ent *ents, char format, struct kiln_buf *out)
{
    struct archive *a = archive_write_new();
    if (format == 'g')
        archive_write_set_format_gnutar(a);
    else if (format == 'u')
        archive_write_set_format_ustar(a);
    else
        archive_write_set_format_pax(a);
    archive_write_set_bytes_in_last_block(a, 1);
    if (archive_write_open2(a, out, NULL, write_cb, NULL, NULL) != ARCHIVE_OK)
        abort();
    for (const struct ent *x = ents; x->type; x++) {
        struct archive_entry *e = archive_entry_new();
        archive_entry_set_pathname(e, x->path);
        archive_entry_set_uid(e, x->uid);
        archive_entry_set_gid(e, x->gid);
        archive_entry_set_mtime(e, x->mtime ? x->mtime : 1700000000, x->nsec);
        unsigned mode = x->mode;
        char *content = NULL;
        size_t clen = 0;
        switch (x->type) {
        case 'f':
            archive_entry_set_filetype(e, AE_IFREG);
            if (x->big) {
                content = kiln_xmalloc(x->big);
                for (size_t i = 0; i < x->big; i++)
                    content[i] = (char)((i * 7 + i / 4096) & 0xff);
                clen = x->big;
            } else if (x->target) {
                content = kiln_xstrdup(x->target);
                clen = strlen(content);
            }
            archive_entry_set_size(e, (la_int64_t)clen);
            mode = mode ? mode : 0644;
            break;
        case 'd':
            archive_entry_set_filetype(e, AE_IFDIR);
            mode = mode ? mode : 0755;
            break;
        case 'l':
            archive_entry_set_filetype(e, AE_IFLNK);
            archive_entry_set_symlink(e, x->target);
            mode = mode ? mode : 0777;
            break;
        case 'h':
            archive_entry_set_filetype(e, AE_IFREG);
            archive_entry_set_hardlink(e, x->target);
            mode = mode ? mode : 0644;
            break;
        case 'c':
        case 'b':
            archive_entry_set_filetype(e, x->type == 'c' ? AE_IFCHR : AE_IFBLK);
            archive_entry_set_rdevmajor(e, x->maj);
            archive_entry_set_rdevminor(e, x->min);
            mode = mode ? mode : 0600;
            break;
        case 'p':
            archive_entry_set_filetype(e, AE_IFIFO);
            mode = mode ? mode : 0644;
            break;
        case 's':
            archive_entry_set_filetype(e, AE_IFSOCK);
            mode = mode ? mode : 0755;
            break;
        default:
            abort();
        }
        archive_entry_set_perm(e, mode);
        if (x->xname)
            archive_entry_xattr_add_entry(e, x->xname, x->xval,
                                          x->xlen ? x->xlen : strlen(x->xval));
        if (archive_write_header(a, e) != ARCHIVE_OK) {
            fprintf(stderr, "write header '%s': %s\n", x->path, archive_error_string(a));
            abort();
        }
        if (clen && archive_write_data(a, content, clen) != (la_ssize_t)clen)
            abort();
        free(content);
        archive_entry_free(e);
    }
    archive_write_close(a);
    archive_write_free(a);
}

static void gzip_buf(const void *in, size_t n, struct kiln_buf *out, int level)
{
    z_stream z;
    memset(&z, 0, sizeof(z));
    if (deflateInit2(&z, level, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        abort();
    size_t cap = deflateBound(&z, n) + 64;
    if (kiln_buf_grow(out, cap) < 0)
        abort();
    z.next_in = (Bytef *)in;
    z.avail_in = (uInt)n;
    z.next_out = (Bytef *)out->buf + out->len;
    z.avail_out = (uInt)cap;
    if (deflate(&z, Z_FINISH) != Z_STREAM_END)
        abort();
    out->len += z.total_out;
    out->buf[out->len] = '\0';
    deflateEnd(&z);
}

static void zstd_buf(const void *in, size_t n, struct kiln_buf *out)
{
    size_t cap = ZSTD_compressBound(n);
    if (kiln_buf_grow(out, cap) < 0)
        abort();
    ZSTD_CCtx *cc = ZSTD_createCCtx();
    ZSTD_CCtx_setParameter(cc, ZSTD_c_checksumFlag, 1);
    size_t r = ZSTD_compress2(cc, out->buf + out->len, cap, in, n);
    ZSTD_freeCCtx(cc);
    if (ZSTD_isError(r))
        abort();
    out->len += r;
    out->buf[out->len] = '\0';
}

/* 'n' none, 'g' gzip, 'z' zstd */
static void compress_as(char kind, const struct kiln_buf *tar, struct kiln_buf *out)
{
    if (kind == 'g')
        gzip_buf(tar->buf, tar->len, out, 6);
    else if (kind == 'z')
        zstd_buf(tar->buf, tar->len, out);
    else
        kiln_buf_add(out, tar->buf, tar->len);
}

/* ---- a memory source ---------------------------------------------------------------------- */

struct memsrc {
    const uint8_t *p;
    size_t len, pos;
    size_t chunk;   /* max bytes per read; 0: all */
    size_t fail_at; /* fail with -EIO once pos reaches this (0: never) */
};

static ssize_t mem_read(void *ud, void *buf, size_t n)
{
    struct memsrc *m = ud;
    if (m->fail_at && m->pos >= m->fail_at)
        return -EIO;
    size_t k = m->len - m->pos;
    if (k > n)
        k = n;
    if (m->chunk && k > m->chunk)
        k = m->chunk;
    memcpy(buf, m->p + m->pos, k);
    m->pos += k;
    return (ssize_t)k;
}

static int unpack_buf(int rootfd, const struct kiln_buf *b, const struct kiln_unpack_opts *o,
                      struct kiln_unpack_stats *st, struct kiln_error **err)
{
    struct memsrc m = {(const uint8_t *)b->buf, b->len, 0, 0, 0};
    return kiln_unpack(rootfd, mem_read, &m, o, st, err);
}

/* ---- directories -------------------------------------------------------------------------- */

static int rm_cb(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    return remove(p) < 0 && errno != ENOENT ? -1 : 0;
}

static void rm_tree(const char *p)
{
    nftw(p, rm_cb, 64, FTW_DEPTH | FTW_PHYS);
}

/* A fresh empty directory under base_dir; returns its path (caller frees). */
static char *fresh_dir(const char *name)
{
    char *p = kiln_xasprintf("%s/%s", base_dir, name);
    rm_tree(p);
    if (mkdir(p, 0755) < 0)
        abort();
    return p;
}

static int open_dir_path(const char *p)
{
    int fd = open(p, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        abort();
    return fd;
}

/* ---- tree listing ------------------------------------------------------------------------- */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void list_rec(int dfd, const char *rel, const char *skip, bool with_dir_mtime,
                     struct kiln_strv *out)
{
    int fd = openat(dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *d = fdopendir(fd);
    if (!d)
        abort();
    struct dirent *de;
    while ((de = readdir(d))) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        _cleanup_free_ char *path =
            *rel ? kiln_xasprintf("%s/%s", rel, de->d_name) : kiln_xstrdup(de->d_name);
        if (skip && strcmp(path, skip) == 0)
            continue;
        struct stat st;
        if (fstatat(dfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
            abort();
        struct kiln_buf l = KILN_BUF_INIT;
        kiln_buf_addf(&l, "%s %o %o %u:%u", path, (unsigned)(st.st_mode & S_IFMT) >> 12,
                      (unsigned)(st.st_mode & 07777), (unsigned)st.st_uid, (unsigned)st.st_gid);
        if (S_ISREG(st.st_mode))
            kiln_buf_addf(&l, " size=%lld nlink=%lu", (long long)st.st_size,
                          list_nlink ? (unsigned long)st.st_nlink : 0ul);
        if (S_ISLNK(st.st_mode)) {
            char t[PATH_MAX];
            ssize_t n = readlinkat(dfd, de->d_name, t, sizeof(t) - 1);
            t[n < 0 ? 0 : n] = '\0';
            kiln_buf_addf(&l, " -> %s", t);
        }
        if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode))
            kiln_buf_addf(&l, " dev=%u,%u", major(st.st_rdev), minor(st.st_rdev));
        if (!S_ISDIR(st.st_mode) || with_dir_mtime)
            kiln_buf_addf(&l, " mtime=%lld.%09ld", (long long)st.st_mtim.tv_sec,
                          st.st_mtim.tv_nsec);
        if (!S_ISLNK(st.st_mode)) {
            _cleanup_free_ char *proc = NULL;
            int xfd = openat(dfd, de->d_name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
            proc = kiln_xasprintf("/proc/self/fd/%d", xfd);
            char names[4096];
            ssize_t nl = listxattr(proc, names, sizeof(names));
            struct kiln_strv xs = KILN_STRV_INIT;
            for (ssize_t i = 0; i < nl; i += (ssize_t)strlen(names + i) + 1)
                kiln_strv_push(&xs, names + i);
            if (xs.n)
                qsort(xs.v, xs.n, sizeof(char *), cmp_str);
            for (size_t i = 0; i < xs.n; i++) {
                uint8_t v[1024];
                ssize_t vl = getxattr(proc, xs.v[i], v, sizeof(v));
                kiln_buf_addf(&l, " %s=", xs.v[i]);
                for (ssize_t k = 0; k < vl; k++)
                    kiln_buf_addf(&l, "%02x", v[k]);
            }
            kiln_strv_release(&xs);
            close(xfd);
        }
        kiln_strv_push_take(out, kiln_buf_detach(&l, NULL));
        if (S_ISDIR(st.st_mode)) {
            int cfd = openat(dfd, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (cfd < 0)
                abort();
            list_rec(cfd, path, skip, with_dir_mtime, out);
            close(cfd);
        }
    }
    closedir(d);
}

/* The sorted listing of the tree at path, one line per entry ("" when empty). */
static char *list_tree(const char *path, const char *skip, bool with_dir_mtime)
{
    struct kiln_strv v = KILN_STRV_INIT;
    int fd = open_dir_path(path);
    list_rec(fd, "", skip, with_dir_mtime, &v);
    close(fd);
    if (v.n)
        qsort(v.v, v.n, sizeof(char *), cmp_str);
    struct kiln_buf b = KILN_BUF_INIT;
    for (size_t i = 0; i < v.n; i++)
        kiln_buf_addf(&b, "%s\n", v.v[i]);
    kiln_strv_release(&v);
    return kiln_buf_detach(&b, NULL);
}

static bool exists_at(const char *dir, const char *rel)
{
    _cleanup_free_ char *p = kiln_xasprintf("%s/%s", dir, rel);
    struct stat st;
    return lstat(p, &st) == 0;
}

static char *read_at(const char *dir, const char *rel)
{
    _cleanup_free_ char *p = kiln_xasprintf("%s/%s", dir, rel);
    _cleanup_fclose_ FILE *f = fopen(p, "re");
    if (!f)
        return NULL;
    char buf[256];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = '\0';
    return kiln_xstrdup(buf);
}

static int run_prog(const char *const argv[])
{
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        int nul = open("/dev/null", O_WRONLY);
        dup2(nul, 1);
        dup2(nul, 2);
        execvp(argv[0], (char *const *)argv);
        _exit(127);
    }
    int status;
    if (waitpid(pid, &status, 0) < 0)
        return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void write_file(const char *path, const void *data, size_t n)
{
    _cleanup_fclose_ FILE *f = fopen(path, "we");
    if (!f || fwrite(data, 1, n, f) != n)
        abort();
}

/* ---- tests: round trip -------------------------------------------------------------------- */

static const char cap_value[] = {1, 0, 0, 2, 0x00, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};

#define LONG_A                                                                                     \
    "long/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define LONG_B                                                                                     \
    LONG_A "/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb" \
           "b"
#define LONG_C                                                                                     \
    LONG_B "/cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc" \
           "cc"
#define LONG_NAME LONG_C "/file-with-a-rather-long-name-that-does-not-fit-in-100-bytes.txt"
static const char long_name[] = LONG_NAME;

static const struct ent rich[] = {
    {.type = 'd', .path = "./", .mode = 0755, .mtime = 1600000000, .nsec = 5},
    {.type = 'd', .path = "etc", .mode = 0755, .mtime = 1600000001, .nsec = 123456789},
    {.type = 'f',
     .path = "etc/hosts",
     .target = "127.0.0.1 localhost\n",
     .mode = 0644,
     .mtime = 1600000002,
     .nsec = 987654321},
    {.type = 'f', .path = "etc/empty", .target = "", .mode = 0600, .mtime = 1600000003},
    {.type = 'd', .path = "usr", .mode = 0755, .mtime = 1600000004},
    {.type = 'd', .path = "usr/bin", .mode = 0755, .mtime = 1600000005},
    {.type = 'f',
     .path = "usr/bin/ping",
     .target = "ELF",
     .mode = 04755,
     .mtime = 1600000006,
     .xname = "security.capability",
     .xval = cap_value,
     .xlen = sizeof(cap_value)},
    {.type = 'f',
     .path = "usr/bin/wall",
     .target = "ELF2",
     .mode = 02755,
     .gid = 5,
     .mtime = 1600000007},
    {.type = 'h', .path = "usr/bin/ping2", .target = "usr/bin/ping"},
    {.type = 'l', .path = "usr/bin/sh", .target = "dash", .mode = 0777, .mtime = 1600000008},
    {.type = 'l', .path = "bin", .target = "usr/bin", .mode = 0777, .mtime = 1600000009},
    {.type = 'd', .path = "tmp", .mode = 01777, .mtime = 1600000010},
    {.type = 'd', .path = "home", .mode = 0755, .mtime = 1600000011},
    {.type = 'd',
     .path = "home/jovyan",
     .mode = 0750,
     .uid = 1000,
     .gid = 100,
     .mtime = 1600000012,
     .xname = "user.kiln",
     .xval = "yes"},
    {.type = 'f',
     .path = "home/jovyan/big.bin",
     .mode = 0640,
     .uid = 1000,
     .gid = 100,
     .mtime = 1600000013,
     .big = 3u << 20},
    {.type = 'f',
     .path = "home/jovyan/.bashrc",
     .target = "export X=1\n",
     .mode = 0644,
     .uid = 1000,
     .gid = 100,
     .mtime = 1600000014,
     .xname = "user.a",
     .xval = "b"},
    {.type = 'd', .path = "dev", .mode = 0755, .mtime = 1600000015},
    {.type = 'c', .path = "dev/null", .mode = 0666, .mtime = 1600000016, .maj = 1, .min = 3},
    {.type = 'b', .path = "dev/loop0", .mode = 0660, .gid = 6, .mtime = 1600000017, .maj = 7},
    {.type = 'p', .path = "dev/fifo", .mode = 0644, .mtime = 1600000018},
    {.type = 'd', .path = "long"},
    {.type = 'd', .path = LONG_A},
    {.type = 'd', .path = LONG_B},
    {.type = 'd', .path = LONG_C},
    {.type = 'f', .path = LONG_NAME, .target = "long\n", .mode = 0644, .mtime = 1600000019},
    {.type = 'l', .path = "long/link", .target = &LONG_NAME[5], .mode = 0777, .mtime = 1600000020},
    {.type = 'd', .path = "ro", .mode = 0555, .mtime = 1600000021},
    {.type = 'f', .path = "ro/file", .target = "x", .mode = 0444, .mtime = 1600000022},
    {0},
};

static void test_roundtrip(void)
{
    struct kiln_buf tar = KILN_BUF_INIT;
    kiln_buf_init(&tar, (size_t)256 << 20);
    build_tar(rich, 'p', &tar);
    char hex[65];
    kiln_sha256_hex(tar.buf, tar.len, hex);
    _cleanup_free_ char *want_id = kiln_xasprintf("sha256:%s", hex);

    /* GNU tar's extraction of the same tar is the reference */
    _cleanup_free_ char *ref = fresh_dir("ref");
    _cleanup_free_ char *tarpath = kiln_xasprintf("%s/rich.tar", base_dir);
    write_file(tarpath, tar.buf, tar.len);
    const char *argv[] = {
        "tar", "-C", ref, "-xpf", tarpath, "--xattrs", "--xattrs-include=*", "--numeric-owner",
        NULL};
    int tr = run_prog(argv);
    _cleanup_free_ char *want = tr == 0 ? list_tree(ref, NULL, true) : NULL;
    ok(tr == 0, "GNU tar extracts the reference tree");
    /* GNU tar does not restore the root's mtime from "./" */

    const char kinds[] = {'n', 'g', 'z'};
    for (size_t k = 0; k < 3; k++)
        for (int variant = 0; variant < 4; variant++) {
            struct kiln_buf blob = KILN_BUF_INIT;
            kiln_buf_init(&blob, (size_t)256 << 20);
            compress_as(kinds[k], &tar, &blob);
            _cleanup_free_ char *dir = fresh_dir("rt");
            int fd = open_dir_path(dir);
            struct kiln_unpack_opts o = {0};
            o.mode = variant & 1 ? KILN_UNPACK_APPLY : KILN_UNPACK_OVERLAY;
            o.no_thread = variant & 2;
            o.no_openat2 = variant == 3;
            o.digest_compressed = true;
            struct kiln_unpack_stats st;
            struct kiln_error *e = NULL;
            struct memsrc m = {(const uint8_t *)blob.buf, blob.len, 0, variant == 2 ? 777 : 0, 0};
            int r = kiln_unpack(fd, mem_read, &m, &o, &st, &e);
            ok(r == 0, "unpack %c variant %d: %s", kinds[k], variant, e ? e->msg : "ok");
            is_str(st.stream.diff_id, want_id, "diff_id is the tar's sha256");
            char bhex[65];
            kiln_sha256_hex(blob.buf, blob.len, bhex);
            _cleanup_free_ char *want_dg = kiln_xasprintf("sha256:%s", bhex);
            is_str(st.stream.digest, want_dg, "digest is the blob's sha256");
            is_int(st.stream.format,
                   kinds[k] == 'g'   ? KILN_COMPRESSION_GZIP
                   : kinds[k] == 'z' ? KILN_COMPRESSION_ZSTD
                                     : KILN_COMPRESSION_NONE,
                   "format detected");
            is_int(st.entries, KILN_ARRAY_SIZE(rich) - 1, "entries counted");
            if (want) {
                _cleanup_free_ char *got = list_tree(dir, NULL, true);
                is_str(got, want, "same tree as GNU tar (%c, variant %d)", kinds[k], variant);
            }
            struct stat sb;
            ok(fstat(fd, &sb) == 0 && sb.st_mtim.tv_sec == 1600000000 && sb.st_mtim.tv_nsec == 5,
               "the root's mtime comes from './'");
            close(fd);
            kiln_error_free(e);
            kiln_buf_release(&blob);
        }

    /* the other tar formats */
    static const struct ent simple[] = {
        {.type = 'd', .path = "a", .mode = 0755, .uid = 1, .gid = 2, .mtime = 1500000000},
        {.type = 'f',
         .path = "a/b",
         .target = "hello",
         .mode = 0640,
         .uid = 3,
         .gid = 4,
         .mtime = 1500000001},
        {.type = 'l', .path = "a/c", .target = "b", .mode = 0777, .mtime = 1500000002},
        {.type = 'h', .path = "a/d", .target = "a/b"},
        {.type = 'd', .path = "g", .mtime = 1500000004},
        {.type = 'd',
         .path = "g/0123456789012345678901234567890123456789012345678901234567890123456789",
         .mtime = 1500000005},
        {.type = 'f',
         .path = "g/0123456789012345678901234567890123456789012345678901234567890123456789"
                 "/0123456789012345678901234567890123456789",
         .target = "long",
         .mode = 0644,
         .mtime = 1500000003},
        {0},
    };
    const char fmts[] = {'g', 'u'};
    for (size_t f = 0; f < 2; f++) {
        struct kiln_buf t2 = KILN_BUF_INIT;
        build_tar(simple, fmts[f], &t2);
        _cleanup_free_ char *r2 = fresh_dir("ref2");
        _cleanup_free_ char *p2 = kiln_xasprintf("%s/simple.tar", base_dir);
        write_file(p2, t2.buf, t2.len);
        const char *av[] = {"tar", "-C", r2, "-xpf", p2, "--numeric-owner", NULL};
        run_prog(av);
        _cleanup_free_ char *w2 = list_tree(r2, NULL, true);
        _cleanup_free_ char *dir = fresh_dir("rt2");
        int fd = open_dir_path(dir);
        struct kiln_error *e = NULL;
        int r = unpack_buf(fd, &t2, NULL, NULL, &e);
        ok(r == 0, "unpack %s tar: %s", fmts[f] == 'g' ? "gnu" : "ustar", e ? e->msg : "ok");
        _cleanup_free_ char *got = list_tree(dir, NULL, true);
        is_str(got, w2, "%s tar: same tree as GNU tar", fmts[f] == 'g' ? "gnu" : "ustar");
        close(fd);
        kiln_error_free(e);
        kiln_buf_release(&t2);
    }
    kiln_buf_release(&tar);
}

static void read_all(const char *path, struct kiln_buf *out)
{
    _cleanup_fclose_ FILE *f = fopen(path, "re");
    char buf[65536];
    size_t n;
    while (f && (n = fread(buf, 1, sizeof(buf), f)) > 0)
        kiln_buf_add(out, buf, n);
}

/* GNU tar's sparse files (old GNU and pax 1.0 maps) come out equal and still sparse */
static void test_sparse(void)
{
    _cleanup_free_ char *sp = fresh_dir("sp");
    _cleanup_free_ char *file = kiln_xasprintf("%s/sparse", sp);
    int fd = open(file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || ftruncate(fd, 3 << 20) < 0 || pwrite(fd, "data", 4, (1 << 20) + 5) != 4 ||
        pwrite(fd, "end", 3, (3 << 20) - 3) != 3)
        abort();
    close(fd);
    struct kiln_buf want = KILN_BUF_INIT;
    read_all(file, &want);
    const char *fmts[] = {"--format=gnu", "--format=pax"};
    for (size_t i = 0; i < 2; i++) {
        _cleanup_free_ char *tarpath = kiln_xasprintf("%s/sparse.tar", base_dir);
        const char *argv[] = {"tar", fmts[i], "-S", "-C", sp, "-cf", tarpath, "sparse", NULL};
        if (run_prog(argv) != 0) {
            ok(1, "# SKIP GNU tar cannot make sparse archives");
            continue;
        }
        struct kiln_buf t = KILN_BUF_INIT;
        read_all(tarpath, &t);
        _cleanup_free_ char *dir = fresh_dir("sprt");
        int rfd = open_dir_path(dir);
        struct kiln_error *e = NULL;
        ok(unpack_buf(rfd, &t, NULL, NULL, &e) == 0, "sparse %s: %s", fmts[i], e ? e->msg : "ok");
        close(rfd);
        struct kiln_buf got = KILN_BUF_INIT;
        _cleanup_free_ char *gp = kiln_xasprintf("%s/sparse", dir);
        read_all(gp, &got);
        ok(got.len == want.len && memcmp(got.buf, want.buf, want.len) == 0,
           "sparse %s: same content", fmts[i]);
        struct stat st;
        ok(stat(gp, &st) == 0 && st.st_blocks * 512 < (1 << 20), "sparse %s: still sparse",
           fmts[i]);
        kiln_error_free(e);
        kiln_buf_release(&got);
        kiln_buf_release(&t);
    }
    kiln_buf_release(&want);
}

/* ---- tests: whiteouts --------------------------------------------------------------------- */

static const struct ent layer1[] = {
    {.type = 'f', .path = "a", .target = "A", .mode = 0644, .mtime = 1},
    {.type = 'h', .path = "b", .target = "a"},
    {.type = 'd', .path = "d", .mode = 0755, .mtime = 2},
    {.type = 'f', .path = "d/x", .target = "x", .mode = 0644, .mtime = 3},
    {.type = 'd', .path = "e", .mode = 0755, .mtime = 4},
    {.type = 'f', .path = "e/old", .target = "old", .mode = 0644, .mtime = 5},
    {.type = 'd', .path = "e/sub", .mode = 0755, .mtime = 6},
    {.type = 'f', .path = "e/sub/lower", .target = "lower", .mode = 0644, .mtime = 7},
    {.type = 'f', .path = "f", .target = "F", .mode = 0644, .mtime = 8},
    {.type = 'd', .path = "g", .mode = 0755, .mtime = 9},
    {.type = 'f', .path = "g/old", .target = "old", .mode = 0644, .mtime = 10},
    {.type = 'd', .path = "o", .mode = 0755, .mtime = 11},
    {.type = 'f', .path = "o/old", .target = "old", .mode = 0644, .mtime = 12},
    {.type = 'd', .path = "k", .mode = 0755, .mtime = 13},
    {.type = 'f', .path = "k/keep", .target = "keep", .mode = 0644, .mtime = 14},
    {0},
};

/* OCI cases: hard-link target deleted, directory replaced by a file, opaque
 * directory with its marker after the layer's own entries, file deleted,
 * directory deleted and re-created, opaque marker first. */
static const struct ent layer2[] = {
    {.type = 'f', .path = ".wh.a", .target = "", .mode = 0644, .mtime = 20},
    {.type = 'f', .path = ".wh.d", .target = "", .mode = 0644, .mtime = 21},
    {.type = 'f', .path = "d", .target = "now a file", .mode = 0644, .mtime = 22},
    {.type = 'f', .path = "e/new", .target = "new", .mode = 0644, .mtime = 23},
    {.type = 'f', .path = "e/sub/upper", .target = "upper", .mode = 0644, .mtime = 24},
    {.type = 'f', .path = "e/.wh..wh..opq", .target = "", .mode = 0644, .mtime = 25},
    {.type = 'f', .path = ".wh.f", .target = "", .mode = 0644, .mtime = 26},
    {.type = 'f', .path = ".wh.g", .target = "", .mode = 0644, .mtime = 27},
    {.type = 'd', .path = "g", .mode = 0700, .mtime = 28},
    {.type = 'f', .path = "g/new", .target = "new", .mode = 0644, .mtime = 29},
    {.type = 'd', .path = "o", .mode = 0755, .mtime = 30},
    {.type = 'f', .path = "o/.wh..wh..opq", .target = "", .mode = 0644, .mtime = 31},
    {.type = 'f', .path = "o/new", .target = "new", .mode = 0644, .mtime = 32},
    {.type = 'f', .path = ".wh..wh.plnk", .target = "", .mode = 0644, .mtime = 33},
    {.type = 'f', .path = ".wh.missing", .target = "", .mode = 0644, .mtime = 34},
    {0},
};

static const char expect_apply[] = "b 10 644 0:0 size=1 nlink=1 mtime=1.000000000\n"
                                   "d 10 644 0:0 size=10 nlink=1 mtime=22.000000000\n"
                                   "e 4 755 0:0\n"
                                   "e/new 10 644 0:0 size=3 nlink=1 mtime=23.000000000\n"
                                   "e/sub 4 755 0:0\n"
                                   "e/sub/upper 10 644 0:0 size=5 nlink=1 mtime=24.000000000\n"
                                   "g 4 700 0:0\n"
                                   "g/new 10 644 0:0 size=3 nlink=1 mtime=29.000000000\n"
                                   "k 4 755 0:0\n"
                                   "k/keep 10 644 0:0 size=4 nlink=1 mtime=14.000000000\n"
                                   "o 4 755 0:0\n"
                                   "o/new 10 644 0:0 size=3 nlink=1 mtime=32.000000000\n";

static int unpack_layer(const char *dir, const struct ent *ents, enum kiln_unpack_mode mode,
                        bool walk, struct kiln_error **e)
{
    struct kiln_buf t = KILN_BUF_INIT;
    build_tar(ents, 'p', &t);
    int fd = open_dir_path(dir);
    struct kiln_unpack_opts o = {.mode = mode, .no_openat2 = walk};
    int r = unpack_buf(fd, &t, &o, NULL, e);
    close(fd);
    kiln_buf_release(&t);
    return r;
}

static void test_whiteouts(void)
{
    for (int walk = 0; walk < 2; walk++) {
        /* apply mode: flatten */
        _cleanup_free_ char *flat = fresh_dir("flat");
        struct kiln_error *e = NULL;
        ok(unpack_layer(flat, layer1, KILN_UNPACK_APPLY, walk, &e) == 0, "apply layer 1: %s",
           e ? e->msg : "ok");
        ok(unpack_layer(flat, layer2, KILN_UNPACK_APPLY, walk, &e) == 0, "apply layer 2: %s",
           e ? e->msg : "ok");
        _cleanup_free_ char *got = list_tree(flat, NULL, false);
        is_str(got, expect_apply, "apply mode: whiteouts and opaque dirs (walk=%d)", walk);
        _cleanup_free_ char *bc = read_at(flat, "b");
        is_str(bc, "A", "the hard link survives its whited-out target");
        kiln_error_free(e);
        e = NULL;

        if (!is_root) {
            ok(1, "# SKIP overlay whiteouts need root");
            continue;
        }
        /* overlay mode: each layer in its own directory */
        _cleanup_free_ char *l1 = fresh_dir("l1");
        _cleanup_free_ char *l2 = fresh_dir("l2");
        ok(unpack_layer(l1, layer1, KILN_UNPACK_OVERLAY, walk, &e) == 0, "overlay layer 1: %s",
           e ? e->msg : "ok");
        ok(unpack_layer(l2, layer2, KILN_UNPACK_OVERLAY, walk, &e) == 0, "overlay layer 2: %s",
           e ? e->msg : "ok");
        _cleanup_free_ char *g2 = list_tree(l2, NULL, false);
        static const char expect_overlay[] =
            "a 2 0 0:0 dev=0,0 mtime=20.000000000\n"
            "d 10 644 0:0 size=10 nlink=1 mtime=22.000000000\n"
            "e 4 755 0:0 trusted.overlay.opaque=79\n"
            "e/new 10 644 0:0 size=3 nlink=1 mtime=23.000000000\n"
            "e/sub 4 755 0:0\n"
            "e/sub/upper 10 644 0:0 size=5 nlink=1 mtime=24.000000000\n"
            "f 2 0 0:0 dev=0,0 mtime=26.000000000\n"
            "g 4 700 0:0 trusted.overlay.opaque=79\n"
            "g/new 10 644 0:0 size=3 nlink=1 mtime=29.000000000\n"
            "missing 2 0 0:0 dev=0,0 mtime=34.000000000\n"
            "o 4 755 0:0 trusted.overlay.opaque=79\n"
            "o/new 10 644 0:0 size=3 nlink=1 mtime=32.000000000\n";
        is_str(g2, expect_overlay, "overlay mode: whiteout devices and opaque xattrs (walk=%d)",
               walk);
        kiln_error_free(e);
        e = NULL;

        /* the overlay of the two layers shows the flattened tree */
        _cleanup_free_ char *mnt = fresh_dir("mnt");
        _cleanup_free_ char *opts = kiln_xasprintf("lowerdir=%s:%s", l2, l1);
        if (mount("overlay", mnt, "overlay", MS_RDONLY, opts) == 0) {
            list_nlink = false;
            _cleanup_free_ char *merged = list_tree(mnt, NULL, false);
            _cleanup_free_ char *flat2 = list_tree(flat, NULL, false);
            list_nlink = true;
            is_str(merged, flat2, "overlayfs over the layers == apply mode");
            umount2(mnt, MNT_DETACH);
        } else {
            ok(1, "# SKIP mount overlay: %s", strerror(errno));
        }
    }
}

/* ---- tests: escapes ----------------------------------------------------------------------- */

static void check_escape(const char *what, const struct ent *ents, bool want_ok,
                         const char *must_exist)
{
    for (int v = 0; v < 4; v++) {
        _cleanup_free_ char *box = fresh_dir("box");
        _cleanup_free_ char *root = kiln_xasprintf("%s/root", box);
        _cleanup_free_ char *outside = kiln_xasprintf("%s/outside", box);
        _cleanup_free_ char *sent = kiln_xasprintf("%s/sent", box);
        mkdir(root, 0755);
        mkdir(sent, 0755);
        write_file(outside, "outside", 7);
        _cleanup_free_ char *before = list_tree(box, "root", true);
        struct kiln_buf t = KILN_BUF_INIT;
        build_tar(ents, 'p', &t);
        int fd = open_dir_path(root);
        struct kiln_unpack_opts o = {.mode = v & 1 ? KILN_UNPACK_APPLY : KILN_UNPACK_OVERLAY,
                                     .no_openat2 = v & 2};
        struct kiln_error *e = NULL;
        int r = unpack_buf(fd, &t, &o, NULL, &e);
        close(fd);
        if (want_ok)
            ok(r == 0, "%s (v%d): unpacks: %s", what, v, e ? e->msg : "ok");
        else
            ok(r == -KILN_EINVAL && e, "%s (v%d): refused: %s", what, v, e ? e->msg : "no error");
        _cleanup_free_ char *after = list_tree(box, "root", true);
        is_str(after, before, "%s (v%d): nothing written outside the root", what, v);
        _cleanup_free_ char *oc = read_at(box, "outside");
        is_str(oc, "outside", "%s (v%d): outside file intact", what, v);
        if (must_exist)
            ok(exists_at(root, must_exist), "%s (v%d): '%s' inside the root", what, v, must_exist);
        kiln_error_free(e);
        kiln_buf_release(&t);
        rm_tree(box);
    }
}

static void test_escapes(void)
{
    _cleanup_free_ char *abs_evil = kiln_xasprintf("%s/box/evil", base_dir);
    _cleanup_free_ char *abs_outside = kiln_xasprintf("%s/box/outside", base_dir);
    _cleanup_free_ char *abs_sent = kiln_xasprintf("%s/box/sent", base_dir);
    _cleanup_free_ char *inside_abs = kiln_xstrdup(abs_evil + 1);

    const struct ent dotdot[] = {{.type = 'f', .path = "../evil", .target = "x"},
                                 {.type = 'f', .path = "../../../../sent/x", .target = "x"},
                                 {0}};
    check_escape("../x", dotdot, true, "evil");
    const struct ent absolute[] = {{.type = 'f', .path = abs_evil, .target = "x"},
                                   {.type = 'f', .path = "/etc/kiln-evil", .target = "x"},
                                   {0}};
    check_escape("absolute path", absolute, true, inside_abs);
    const struct ent via_root[] = {{.type = 'l', .path = "a", .target = "/"},
                                   {.type = 'f', .path = "a/evil", .target = "x"},
                                   {.type = 'f', .path = "a/etc/x", .target = "x"},
                                   {0}};
    check_escape("a -> / then a/etc/x", via_root, true, "etc/x");
    const struct ent via_up[] = {{.type = 'd', .path = "sent"},
                                 {.type = 'l', .path = "a", .target = "../../.."},
                                 {.type = 'f', .path = "a/evil", .target = "x"},
                                 {.type = 'l', .path = "b", .target = "a/../../sent"},
                                 {.type = 'f', .path = "b/y", .target = "y"},
                                 {0}};
    check_escape("a -> ../../.. then through it", via_up, true, "evil");
    const struct ent via_abs[] = {{.type = 'l', .path = "s", .target = abs_sent},
                                  {.type = 'f', .path = "s/x", .target = "x"},
                                  {0}};
    check_escape("a -> absolute outside dir, then a/x", via_abs, false, NULL);
    const struct ent hl_passwd[] = {{.type = 'h', .path = "h", .target = "/etc/passwd"}, {0}};
    check_escape("hard link to /etc/passwd", hl_passwd, false, NULL);
    const struct ent hl_out[] = {{.type = 'h', .path = "h", .target = "../outside"}, {0}};
    check_escape("hard link to ../outside", hl_out, false, NULL);
    const struct ent hl_abs[] = {{.type = 'h', .path = "h", .target = abs_outside}, {0}};
    check_escape("hard link to the outside file's absolute path", hl_abs, false, NULL);
    const struct ent hl_in[] = {{.type = 'd', .path = "etc"},
                                {.type = 'f', .path = "etc/passwd", .target = "root:x:0:0"},
                                {.type = 'h', .path = "h", .target = "/etc/passwd"},
                                {.type = 'h', .path = "h2", .target = "../../etc/passwd"},
                                {0}};
    check_escape("hard link to /etc/passwd resolved in the root", hl_in, true, "h2");
    const struct ent hl_sym[] = {{.type = 'l', .path = "s", .target = abs_outside},
                                 {.type = 'h', .path = "h", .target = "s"},
                                 {0}};
    check_escape("hard link to a symlink pointing outside", hl_sym, true, "h");
    const struct ent replace[] = {{.type = 'l', .path = "s", .target = abs_outside},
                                  {.type = 'f', .path = "s", .target = "overwritten"},
                                  {.type = 'l', .path = "t", .target = "../outside"},
                                  {.type = 'f', .path = "t", .target = "overwritten"},
                                  {0}};
    check_escape("file over a symlink to outside", replace, true, "s");
    const struct ent loop[] = {{.type = 'l', .path = "a", .target = "b"},
                               {.type = 'l', .path = "b", .target = "a"},
                               {.type = 'f', .path = "a/x", .target = "x"},
                               {0}};
    check_escape("symlink loop", loop, false, NULL);
    const struct ent dir_up[] = {{.type = 'l', .path = "d", .target = "../.."},
                                 {.type = 'd', .path = "d/x"},
                                 {.type = 'f', .path = "d/x/y", .target = "y"},
                                 {.type = 'f', .path = "d/../../evil2", .target = "z"},
                                 {0}};
    check_escape("directory through a symlink to ../..", dir_up, true, "x/y");
    const struct ent wh[] = {{.type = 'f', .path = "../.wh.outside", .target = ""},
                             {.type = 'f', .path = "../sent/.wh..wh..opq", .target = ""},
                             {.type = 'l', .path = "r", .target = "/"},
                             {.type = 'f', .path = "r/.wh.outside", .target = ""},
                             {0}};
    check_escape("whiteouts with .. and through symlinks", wh, true, NULL);
    const struct ent dots[] = {{.type = 'd', .path = ".."},
                               {.type = 'd', .path = "./../."},
                               {.type = 'f', .path = "x/../../y", .target = "y"},
                               {0}};
    check_escape("dot-dot directories", dots, true, "y");
    const struct ent link_final[] = {{.type = 'l', .path = "p", .target = abs_outside},
                                     {.type = 'h', .path = "q", .target = "p"},
                                     {.type = 'l', .path = "dl", .target = abs_sent},
                                     {.type = 'd', .path = "dl"},
                                     {0}};
    check_escape("directory over a symlink to an outside dir", link_final, true, "q");
    const struct ent root_file[] = {{.type = 'f', .path = ".", .target = "x"}, {0}};
    check_escape("a file named like the root", root_file, false, NULL);
}

/* ---- tests: caps and corrupt streams ------------------------------------------------------ */

static void expect_fail(const char *what, const struct kiln_buf *blob,
                        const struct kiln_unpack_opts *o, int code, const char *needle)
{
    _cleanup_free_ char *dir = fresh_dir("bad");
    int fd = open_dir_path(dir);
    struct kiln_error *e = NULL;
    int r = unpack_buf(fd, blob, o, NULL, &e);
    close(fd);
    ok(r == -code && e && strstr(e->msg, needle), "%s: %s", what, e ? e->msg : "no error");
    kiln_error_free(e);
}

static void test_caps(void)
{
    struct ent many[12];
    char names[11][8];
    for (int i = 0; i < 11; i++) {
        snprintf(names[i], sizeof(names[i]), "f%d", i);
        many[i] = (struct ent){.type = 'f', .path = names[i], .target = "x"};
    }
    many[11] = (struct ent){0};
    struct kiln_buf t = KILN_BUF_INIT;
    build_tar(many, 'p', &t);
    struct kiln_unpack_opts o = {.max_entries = 5};
    expect_fail("entry cap", &t, &o, KILN_ETOOBIG, "more than 5 entries");
    kiln_buf_release(&t);

    const struct ent big[] = {{.type = 'f', .path = "big", .mode = 0644, .big = 1 << 20}, {0}};
    kiln_buf_init(&t, (size_t)64 << 20);
    build_tar(big, 'p', &t);
    o = (struct kiln_unpack_opts){.max_bytes = 100000};
    expect_fail("byte cap", &t, &o, KILN_ETOOBIG, "exceeds 100000 bytes");
    kiln_buf_release(&t);

    const struct ent longn[] = {{.type = 'f', .path = long_name, .target = "x"}, {0}};
    build_tar(longn, 'p', &t);
    o = (struct kiln_unpack_opts){.max_path = 100};
    expect_fail("path cap", &t, &o, KILN_ETOOBIG, "longer than 100 bytes");
    kiln_buf_release(&t);

    /* a gzip bomb: 64 MiB of zeros in a few KiB, the stream cap stops it */
    size_t zn = (size_t)64 << 20;
    char *zeros = kiln_xcalloc(1, zn);
    struct kiln_buf gz = KILN_BUF_INIT;
    kiln_buf_init(&gz, (size_t)128 << 20);
    gzip_buf(zeros, zn, &gz, 9);
    free(zeros);
    ok(gz.len < 200000, "bomb is small (%zu bytes)", gz.len);
    o = (struct kiln_unpack_opts){.max_bytes = 1 << 20};
    expect_fail("gzip bomb", &gz, &o, KILN_ETOOBIG, "exceeds 1048576 bytes");
    kiln_buf_release(&gz);
}

static void test_corrupt(void)
{
    struct kiln_buf tar = KILN_BUF_INIT;
    kiln_buf_init(&tar, (size_t)64 << 20);
    build_tar(rich, 'p', &tar);

    struct kiln_buf gz = KILN_BUF_INIT;
    kiln_buf_init(&gz, (size_t)64 << 20);
    gzip_buf(tar.buf, tar.len, &gz, 6);
    struct kiln_buf cut = KILN_BUF_INIT;
    kiln_buf_add(&cut, gz.buf, gz.len / 2);
    expect_fail("truncated gzip", &cut, NULL, KILN_EINVAL, "gzip: truncated");
    kiln_buf_reset(&cut);
    kiln_buf_add(&cut, gz.buf, gz.len - 4);
    expect_fail("gzip without its size", &cut, NULL, KILN_EINVAL, "truncated member trailer");
    kiln_buf_reset(&cut);
    kiln_buf_add(&cut, gz.buf, gz.len);
    cut.buf[cut.len - 6] ^= 0x55;
    expect_fail("gzip crc", &cut, NULL, KILN_EINVAL, "crc mismatch");
    kiln_buf_reset(&cut);
    kiln_buf_add(&cut, gz.buf, gz.len);
    cut.buf[cut.len / 2] ^= 0xff;
    cut.buf[cut.len / 2 + 1] ^= 0xff;
    cut.buf[cut.len / 2 + 2] ^= 0xff;
    expect_fail("corrupt deflate data", &cut, NULL, KILN_EINVAL, "gzip:");
    kiln_buf_reset(&cut);
    kiln_buf_add(&cut, gz.buf, gz.len);
    kiln_buf_adds(&cut, "garbage!");
    expect_fail("gzip trailing garbage", &cut, NULL, KILN_EINVAL, "trailing garbage");
    kiln_buf_reset(&cut);
    kiln_buf_add(&cut, gz.buf, 5);
    expect_fail("gzip header only", &cut, NULL, KILN_EINVAL, "truncated");

    struct kiln_buf zs = KILN_BUF_INIT;
    kiln_buf_init(&zs, (size_t)64 << 20);
    zstd_buf(tar.buf, tar.len, &zs);
    kiln_buf_reset(&cut);
    kiln_buf_add(&cut, zs.buf, zs.len);
    cut.buf[4] ^= 0xff; /* frame header descriptor */
    cut.buf[5] ^= 0xff;
    expect_fail("corrupt zstd header", &cut, NULL, KILN_EINVAL, "zstd: corrupt stream");
    kiln_buf_reset(&cut);
    kiln_buf_add(&cut, zs.buf, zs.len);
    cut.buf[cut.len - 2] ^= 0x5a; /* content checksum */
    expect_fail("zstd checksum", &cut, NULL, KILN_EINVAL, "checksum");
    kiln_buf_reset(&cut);
    kiln_buf_add(&cut, zs.buf, zs.len - 10);
    expect_fail("truncated zstd", &cut, NULL, KILN_EINVAL, "zstd: truncated");

    kiln_buf_reset(&cut);
    kiln_buf_adds(&cut, "this is not a tar file at all, not even close to one");
    expect_fail("not a tar", &cut, NULL, KILN_EINVAL, "tar");

    /* the tar itself cut short */
    kiln_buf_reset(&cut);
    kiln_buf_add(&cut, tar.buf, tar.len / 3);
    expect_fail("truncated tar", &cut, NULL, KILN_EINVAL, "'");

    /* the source fails */
    {
        _cleanup_free_ char *dir = fresh_dir("bad");
        int fd = open_dir_path(dir);
        struct kiln_error *e = NULL;
        struct memsrc m = {(const uint8_t *)gz.buf, gz.len, 0, 4096, gz.len / 2};
        int r = kiln_unpack(fd, mem_read, &m, NULL, NULL, &e);
        ok(r == -KILN_EIO && e && strstr(e->msg, "read compressed stream"), "source error: %s",
           e ? e->msg : "none");
        kiln_error_free(e);
        close(fd);
    }
    kiln_buf_release(&cut);
    kiln_buf_release(&zs);
    kiln_buf_release(&gz);
    kiln_buf_release(&tar);
}

/* ---- tests: the decompressor on its own --------------------------------------------------- */

static int drain(struct kiln_buf *in, size_t chunk, struct kiln_decompress_opts *o,
                 struct kiln_buf *out, struct kiln_decompress_result *res, struct kiln_error **e)
{
    struct memsrc m = {(const uint8_t *)in->buf, in->len, 0, chunk, 0};
    struct kiln_decompress *d = NULL;
    int r = kiln_decompress_open(&d, mem_read, &m, o, e);
    if (r < 0)
        return r;
    char buf[7000];
    ssize_t n;
    while ((n = kiln_decompress_read(d, buf, sizeof(buf), e)) > 0)
        kiln_buf_add(out, buf, (size_t)n);
    r = n < 0 ? (int)n : kiln_decompress_finish(d, res, e);
    kiln_decompress_free(d);
    return r;
}

static void test_decompress(void)
{
    size_t n = (size_t)5 << 20;
    char *data = kiln_xmalloc(n);
    for (size_t i = 0; i < n; i++)
        data[i] = (char)("kiln layer "[i % 11] + (i % 1021 == 0));
    char hex[65];
    kiln_sha256_hex(data, n, hex);
    _cleanup_free_ char *want = kiln_xasprintf("sha256:%s", hex);

    /* several members: small ones (libdeflate) then a big one (zlib) */
    struct kiln_buf gz = KILN_BUF_INIT;
    kiln_buf_init(&gz, (size_t)64 << 20);
    size_t cuts[] = {0, 1000, 70000, 300000, 2000000, n};
    for (size_t i = 0; i + 1 < KILN_ARRAY_SIZE(cuts); i++)
        gzip_buf(data + cuts[i], cuts[i + 1] - cuts[i], &gz, 1 + (int)i);
    for (int v = 0; v < 4; v++) {
        struct kiln_buf out = KILN_BUF_INIT;
        kiln_buf_init(&out, (size_t)64 << 20);
        struct kiln_decompress_opts o = {
            .no_thread = v & 1, .block_size = v & 2 ? 65536 : 0, .nblocks = v & 2 ? 2 : 0};
        struct kiln_decompress_result res;
        struct kiln_error *e = NULL;
        int r = drain(&gz, v == 3 ? 100 : 0, &o, &out, &res, &e);
        ok(r == 0 && out.len == n && memcmp(out.buf, data, n) == 0,
           "multi-member gzip, variant %d: %s", v, e ? e->msg : "ok");
        is_str(res.diff_id, want, "multi-member gzip digest");
        is_int(res.compressed_size, gz.len, "compressed size");
        is_int(res.uncompressed_size, n, "uncompressed size");
        kiln_error_free(e);
        kiln_buf_release(&out);
    }

    /* a header with every optional field, read one byte at a time */
    struct kiln_buf hdr = KILN_BUF_INIT;
    struct kiln_buf raw = KILN_BUF_INIT;
    gzip_buf("hello, world\n", 13, &raw, 6);
    const uint8_t h[] = {0x1f, 0x8b, 8, 0x1e, 0, 0, 0, 0, 0, 3, 4, 0, 'a', 'b', 'c', 'd'};
    kiln_buf_add(&hdr, h, sizeof(h));
    kiln_buf_add(&hdr, "name.tar", 9);
    kiln_buf_add(&hdr, "a comment", 10);
    kiln_buf_add(&hdr, "\x12\x34", 2);
    kiln_buf_add(&hdr, raw.buf + 10, raw.len - 10); /* deflate data + trailer */
    struct kiln_buf out = KILN_BUF_INIT;
    struct kiln_decompress_opts o1 = {.no_thread = true};
    struct kiln_error *e = NULL;
    int r = drain(&hdr, 1, &o1, &out, NULL, &e);
    is_str(r == 0 ? out.buf : e->msg, "hello, world\n", "gzip optional header fields");
    kiln_error_free(e);
    e = NULL;
    hdr.buf[3] = 0x20;
    kiln_buf_reset(&out);
    r = drain(&hdr, 0, &o1, &out, NULL, &e);
    ok(r == -KILN_EINVAL && strstr(e->msg, "reserved"), "reserved flag: %s", e ? e->msg : "");
    kiln_error_free(e);
    e = NULL;

    /* zstd: a skippable frame, then two frames */
    struct kiln_buf zs = KILN_BUF_INIT;
    kiln_buf_init(&zs, (size_t)64 << 20);
    const uint8_t skip[] = {0x50, 0x2a, 0x4d, 0x18, 4, 0, 0, 0, 1, 2, 3, 4};
    zstd_buf(data, 1000, &zs);
    kiln_buf_add(&zs, skip, sizeof(skip));
    zstd_buf(data + 1000, n - 1000, &zs);
    kiln_buf_release(&out);
    kiln_buf_init(&out, (size_t)64 << 20);
    struct kiln_decompress_result res;
    r = drain(&zs, 3000, NULL, &out, &res, &e);
    ok(r == 0 && out.len == n && memcmp(out.buf, data, n) == 0, "zstd frames: %s",
       e ? e->msg : "ok");
    is_str(res.diff_id, want, "zstd digest");
    kiln_error_free(e);
    e = NULL;

    /* cap */
    kiln_buf_reset(&out);
    struct kiln_decompress_opts o2 = {.max_output = 1 << 20};
    r = drain(&zs, 0, &o2, &out, NULL, &e);
    ok(r == -KILN_ETOOBIG, "max_output: %s", e ? e->msg : "none");
    kiln_error_free(e);
    e = NULL;

    /* stop early: free while the thread is running */
    struct memsrc m = {(const uint8_t *)gz.buf, gz.len, 0, 1000, 0};
    struct kiln_decompress *d = NULL;
    r = kiln_decompress_open(&d, mem_read, &m, NULL, &e);
    const void *p;
    ok(r == 0 && kiln_decompress_next(d, &p, &e) > 0, "first block");
    kiln_decompress_free(d);
    ok(1, "free while running");

    /* empty and tiny inputs */
    struct kiln_buf empty = KILN_BUF_INIT;
    kiln_buf_reset(&out);
    r = drain(&empty, 0, NULL, &out, &res, &e);
    ok(r == 0 && out.len == 0, "empty stream");
    is_str(res.diff_id, "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
           "empty digest");
    is_str(kiln_decompress_format_name(kiln_decompress_detect("\x28\xb5\x2f\xfd", 4)), "zstd",
           "detect zstd");
    is_str(kiln_decompress_format_name(kiln_decompress_detect("\x1f", 1)), "none", "one byte");

    kiln_buf_release(&empty);
    kiln_buf_release(&out);
    kiln_buf_release(&zs);
    kiln_buf_release(&hdr);
    kiln_buf_release(&raw);
    kiln_buf_release(&gz);
    free(data);
}

/* ---- tests: without privileges ------------------------------------------------------------ */

static void test_unprivileged(void)
{
    static const struct ent ents[] = {
        {.type = 'd', .path = "d", .mode = 0755, .uid = 1000, .gid = 100, .mtime = 1},
        {.type = 'f',
         .path = "d/f",
         .target = "data",
         .mode = 04755,
         .uid = 1000,
         .gid = 100,
         .mtime = 2,
         .xname = "security.capability",
         .xval = cap_value,
         .xlen = sizeof(cap_value)},
        {.type = 'c', .path = "d/null", .mode = 0666, .mtime = 3, .maj = 1, .min = 3},
        {.type = 'p', .path = "d/fifo", .mode = 0644, .mtime = 4},
        {.type = 'f',
         .path = "d/u",
         .target = "u",
         .mode = 0644,
         .mtime = 5,
         .xname = "user.x",
         .xval = "1"},
        {0},
    };
    if (!is_root) {
        ok(1, "# SKIP needs root to switch users");
        return;
    }
    _cleanup_free_ char *dir = fresh_dir("unpriv");
    if (chown(dir, 65534, 65534) < 0)
        abort();
    pid_t pid = fork();
    if (pid == 0) {
        if (setgroups(0, NULL) < 0 || setgid(65534) < 0 || setuid(65534) < 0)
            _exit(10);
        struct kiln_buf t = KILN_BUF_INIT;
        build_tar(ents, 'p', &t);
        int fd = open_dir_path(dir);
        struct kiln_unpack_stats st;
        struct kiln_error *e = NULL;
        if (unpack_buf(fd, &t, NULL, &st, &e) < 0) {
            fprintf(stderr, "unprivileged unpack: %s\n", e->msg);
            _exit(11);
        }
        /* device, capability xattr */
        if (st.skipped < 2)
            _exit(12);
        /* opaque directories need CAP_SYS_ADMIN (trusted.*): a clear error */
        static const struct ent wh[] = {{.type = 'f', .path = ".wh.x", .target = ""},
                                        {.type = 'f', .path = "d/.wh..wh..opq", .target = ""},
                                        {0}};
        kiln_buf_reset(&t);
        build_tar(wh, 'p', &t);
        kiln_error_free(e);
        e = NULL;
        if (mkdirat(fd, "w", 0755) < 0)
            _exit(14);
        int wfd = openat(fd, "w", O_RDONLY | O_DIRECTORY);
        int r = unpack_buf(wfd, &t, NULL, NULL, &e);
        close(wfd);
        if (r != -KILN_EUNSUPPORTED)
            _exit(13);
        kiln_error_free(e);
        kiln_buf_release(&t);
        close(fd);
        _exit(0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    is_int(WIFEXITED(status) ? WEXITSTATUS(status) : -1, 0, "unprivileged unpack skips gracefully");
    _cleanup_free_ char *got = list_tree(dir, "w", false);
    is_str(got,
           "d 4 755 65534:65534\n"
           "d/f 10 4755 65534:65534 size=4 nlink=1 mtime=2.000000000\n"
           "d/fifo 1 644 65534:65534 mtime=4.000000000\n"
           "d/u 10 644 65534:65534 size=1 nlink=1 mtime=5.000000000 user.x=31\n",
           "unprivileged tree: own uid, no device");

    /* no_chown as root */
    _cleanup_free_ char *d2 = fresh_dir("nochown");
    struct kiln_buf t = KILN_BUF_INIT;
    build_tar(ents, 'p', &t);
    int fd = open_dir_path(d2);
    struct kiln_unpack_opts o = {.no_chown = true};
    struct kiln_error *e = NULL;
    ok(unpack_buf(fd, &t, &o, NULL, &e) == 0, "no_chown: %s", e ? e->msg : "ok");
    close(fd);
    struct stat st;
    _cleanup_free_ char *fp = kiln_xasprintf("%s/d/f", d2);
    ok(stat(fp, &st) == 0 && st.st_uid == 0 && (st.st_mode & 07777) == 04755,
       "no_chown keeps root as owner and the setuid bit");
    kiln_error_free(e);
    kiln_buf_release(&t);
}

int main(void)
{
    is_root = geteuid() == 0;
    umask(022);
    snprintf(base_dir, sizeof(base_dir), "/tmp/kiln-test-unpack-XXXXXX");
    if (!mkdtemp(base_dir) || chmod(base_dir, 0755) < 0)
        return 1;
    test_roundtrip();
    test_sparse();
    test_whiteouts();
    test_escapes();
    test_caps();
    test_corrupt();
    test_decompress();
    test_unprivileged();
    rm_tree(base_dir);
    return tap_done();
}
