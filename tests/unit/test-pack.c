#include "util/common.h"
#include "layer/pack.h"
#include "oci/mediatype.h"
#include "util/buf.h"
#include "util/sha256.h"
#include "tap.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <ftw.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

static char tmpdir[] = "/tmp/kiln-test-pack-XXXXXX";
static bool is_root;

#define SDE   INT64_C(1600000000)
#define LONGN "long-name-0123456789-0123456789-0123456789-0123456789-0123456789-0123456789-0123"

/* a file capability: v2, cap_net_raw (13) permitted + effective */
static const uint8_t fcap[20] = {0x01, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00, 0x00, 0x00,
                                 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00};

/* ---- helpers ------------------------------------------------------------------ */

static char *tpath(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *tpath(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *rel = kiln_xvasprintf(fmt, ap);
    va_end(ap);
    char *p = kiln_xasprintf("%s/%s", tmpdir, rel);
    free(rel);
    return p;
}

static int run(const char *const argv[])
{
    pid_t pid = fork();
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
        if (devnull >= 0)
            dup2(devnull, 1);
        execvp(argv[0], (char *const *)argv);
        _exit(127);
    }
    int st = 0;
    if (pid < 0 || waitpid(pid, &st, 0) < 0)
        return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void put(const char *root, const char *rel, const char *content, mode_t mode)
{
    char *p = kiln_xasprintf("%s/%s", root, rel);
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    size_t n = strlen(content);
    if (fd < 0 || write(fd, content, n) != (ssize_t)n)
        printf("# cannot write %s\n", p);
    if (fd >= 0) {
        fchmod(fd, mode);
        close(fd);
    }
    free(p);
}

static void mkd(const char *root, const char *rel, mode_t mode)
{
    char *p = kiln_xasprintf("%s/%s", root, rel);
    if (mkdir(p, mode) < 0 && errno != EEXIST)
        printf("# mkdir %s: %s\n", p, strerror(errno));
    chmod(p, mode);
    free(p);
}

static void lnk(const char *root, const char *from, const char *to)
{
    char *a = kiln_xasprintf("%s/%s", root, from), *b = kiln_xasprintf("%s/%s", root, to);
    if (link(a, b) < 0)
        printf("# link %s: %s\n", b, strerror(errno));
    free(a);
    free(b);
}

static void sym(const char *root, const char *target, const char *rel)
{
    char *p = kiln_xasprintf("%s/%s", root, rel);
    if (symlink(target, p) < 0)
        printf("# symlink %s: %s\n", p, strerror(errno));
    free(p);
}

static int rm_cb(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(p) < 0 ? -1 : 0;
}

static void rm_rf(const char *p)
{
    nftw(p, rm_cb, 64, FTW_DEPTH | FTW_PHYS);
}

static int set_mtime_cb(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    struct timespec ts[2] = {{time(NULL) + 5000, 0}, {time(NULL) + 5000, 123}};
    utimensat(AT_FDCWD, p, ts, AT_SYMLINK_NOFOLLOW);
    return 0;
}

/*
 * The test tree: every kind of entry, names that sort tricky ("a-c" before
 * "a/"), hard links across directories, xattrs, a long name and link.
 */
static void make_tree(const char *root, bool reverse_creation)
{
    mkd(root, "", 0755);
    if (reverse_creation) /* another readdir order */
        for (int i = 9; i >= 0; i--) {
            char name[16];
            snprintf(name, sizeof(name), "n%d", i);
            put(root, name, name, 0644);
        }
    mkd(root, "a", 0755);
    mkd(root, "a/sub", 0700);
    put(root, "a/file", "hello world\n", 04755);
    put(root, "a-c", "", 0600);
    put(root, "z", "zzz", 0640);
    lnk(root, "a/file", "z-link");
    mkd(root, "b", 0755);
    lnk(root, "a/file", "b/link2");
    sym(root, "../a/file", "b/sym");
    sym(root, "/" LONGN "/" LONGN, "b/longsym");
    mkd(root, LONGN, 0755);
    put(root, LONGN "/" LONGN, "long", 0644);
    put(root, "\xc3\xa9t\xc3\xa9-\xff", "non-utf8 name", 0644);
    if (!reverse_creation)
        for (int i = 0; i <= 9; i++) {
            char name[16];
            snprintf(name, sizeof(name), "n%d", i);
            put(root, name, name, 0644);
        }
    char *p = kiln_xasprintf("%s/a/file", root);
    setxattr(p, "user.note", "v\0x", 3, 0);
    setxattr(p, "user.another", "1", 1, 0);
    if (is_root) {
        setxattr(p, "security.capability", fcap, sizeof(fcap), 0);
        setxattr(p, "trusted.secret", "no", 2, 0);
    }
    free(p);
    p = kiln_xasprintf("%s/b", root);
    setxattr(p, "user.dir", "d", 1, 0);
    free(p);
    p = kiln_xasprintf("%s/b/fifo", root);
    mkfifo(p, 0644);
    free(p);
    if (is_root) {
        p = kiln_xasprintf("%s/b/null", root);
        mknod(p, S_IFCHR | 0666, makedev(1, 3));
        chmod(p, 0666);
        free(p);
        p = kiln_xasprintf("%s/b/blk", root);
        mknod(p, S_IFBLK | 0600, makedev(7, 200));
        free(p);
        p = kiln_xasprintf("%s/a/sub", root);
        if (chown(p, 1000, 100) < 0)
            printf("# chown %s: %s\n", p, strerror(errno));
        free(p);
        p = kiln_xasprintf("%s/z", root);
        if (chown(p, 3000000, 4000000) < 0)
            printf("# chown %s: %s\n", p, strerror(errno));
        free(p);
    }
    /* a socket: tar cannot hold it */
    p = kiln_xasprintf("%s/b/sock", root);
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", p);
    if (s < 0 || bind(s, (struct sockaddr *)&sa, sizeof(sa)) < 0)
        printf("# socket %s: %s\n", p, strerror(errno));
    if (s >= 0)
        close(s);
    free(p);
}

/* Pack `root` into `file`; returns the pack result code. */
static int pack_to(const char *root, const char *file, const struct kiln_pack_options *o,
                   struct kiln_compress_result *res, struct kiln_pack_stats *st,
                   struct kiln_error **e)
{
    int dfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int ofd = open(file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int r = kiln_pack_dir_fd(dfd, o, ofd, res, st, e);
    if (r < 0)
        printf("# pack '%s': %s\n", root, *e ? (*e)->msg : "?");
    close(dfd);
    close(ofd);
    return r;
}

static void file_digest(const char *file, char out[KILN_DIGEST_BUFSZ], uint64_t *size)
{
    struct kiln_sha256 h;
    kiln_sha256_init(&h);
    uint8_t buf[65536];
    ssize_t n;
    *size = 0;
    int fd = open(file, O_RDONLY | O_CLOEXEC);
    while (fd >= 0 && (n = read(fd, buf, sizeof(buf))) > 0) {
        kiln_sha256_update(&h, buf, (size_t)n);
        *size += (uint64_t)n;
    }
    if (fd >= 0)
        close(fd);
    kiln_digest_from_sha256(&h, out);
    kiln_sha256_release(&h);
}

/* zlib-decompress a gzip file, hash the plain bytes. -1 unless exactly one member. */
static int gunzip_digest(const char *file, char out[KILN_DIGEST_BUFSZ], uint64_t *size)
{
    gzFile g = gzopen(file, "rb");
    if (!g)
        return -1;
    struct kiln_sha256 h;
    kiln_sha256_init(&h);
    uint8_t buf[65536];
    int n;
    *size = 0;
    while ((n = gzread(g, buf, sizeof(buf))) > 0) {
        kiln_sha256_update(&h, buf, (size_t)n);
        *size += (uint64_t)n;
    }
    int r = n < 0 ? -1 : 0;
    gzclose(g);
    kiln_digest_from_sha256(&h, out);
    kiln_sha256_release(&h);
    return r;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/*
 * One line per tar entry, read back with libarchive (an independent reader):
 * "path type mode uid/gid size mtime [-> link] [= hardlink] [dev M,m] [xattrs]".
 */
static char *list_tar(const char *file)
{
    struct archive *a = archive_read_new();
    archive_read_support_filter_all(a);
    archive_read_support_format_all(a);
    struct kiln_buf b = KILN_BUF_INIT;
    if (archive_read_open_filename(a, file, 65536) != ARCHIVE_OK) {
        archive_read_free(a);
        return kiln_xstrdup("(unreadable)");
    }
    struct archive_entry *e;
    int r;
    while ((r = archive_read_next_header(a, &e)) == ARCHIVE_OK) {
        const char *type = "?";
        switch (archive_entry_filetype(e)) {
        case AE_IFREG:
            type = "f";
            break;
        case AE_IFDIR:
            type = "d";
            break;
        case AE_IFLNK:
            type = "l";
            break;
        case AE_IFCHR:
            type = "c";
            break;
        case AE_IFBLK:
            type = "b";
            break;
        case AE_IFIFO:
            type = "p";
            break;
        }
        if (archive_entry_hardlink(e))
            type = "h";
        kiln_buf_addf(&b, "%s %s %04o %lld/%lld %lld %lld", archive_entry_pathname(e), type,
                      (unsigned)archive_entry_perm(e), (long long)archive_entry_uid(e),
                      (long long)archive_entry_gid(e), (long long)archive_entry_size(e),
                      (long long)archive_entry_mtime(e));
        if (archive_entry_symlink(e))
            kiln_buf_addf(&b, " -> %s", archive_entry_symlink(e));
        if (archive_entry_hardlink(e))
            kiln_buf_addf(&b, " = %s", archive_entry_hardlink(e));
        if (archive_entry_filetype(e) == AE_IFCHR || archive_entry_filetype(e) == AE_IFBLK)
            kiln_buf_addf(&b, " dev %u,%u", (unsigned)archive_entry_rdevmajor(e),
                          (unsigned)archive_entry_rdevminor(e));
        if ((archive_entry_uname(e) && *archive_entry_uname(e)) ||
            (archive_entry_gname(e) && *archive_entry_gname(e)))
            kiln_buf_addf(&b, " uname='%s' gname='%s'",
                          archive_entry_uname(e) ? archive_entry_uname(e) : "",
                          archive_entry_gname(e) ? archive_entry_gname(e) : "");
        if (archive_entry_atime_is_set(e) || archive_entry_ctime_is_set(e))
            kiln_buf_adds(&b, " atime/ctime!");
        /* xattrs sorted here: libarchive does not keep their order */
        archive_entry_xattr_reset(e);
        const char *name;
        const void *value;
        size_t len;
        char *xs[16];
        size_t nx = 0;
        while (nx < 16 && archive_entry_xattr_next(e, &name, &value, &len) == ARCHIVE_OK) {
            struct kiln_buf x = KILN_BUF_INIT;
            kiln_buf_addf(&x, " %s=", name);
            for (size_t i = 0; i < len; i++)
                kiln_buf_addf(&x, "%02x", ((const uint8_t *)value)[i]);
            xs[nx++] = kiln_buf_detach(&x, NULL);
        }
        qsort(xs, nx, sizeof(*xs), cmp_str);
        for (size_t i = 0; i < nx; i++) {
            kiln_buf_adds(&b, xs[i]);
            free(xs[i]);
        }
        kiln_buf_addch(&b, '\n');
    }
    if (r != ARCHIVE_EOF)
        kiln_buf_addf(&b, "(read error: %s)\n", archive_error_string(a));
    archive_read_free(a);
    return kiln_buf_detach(&b, NULL);
}

static bool has_line(const char *list, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = list; (p = strstr(p, line)); p++)
        if ((p == list || p[-1] == '\n') && (p[n] == '\n' || p[n] == '\0'))
            return true;
    return false;
}

/* has_line() with " 0/0 " standing for the test's own uid/gid (root or not). */
static bool has_own_line(const char *list, const char *line)
{
    struct kiln_buf b = KILN_BUF_INIT;
    char *own = kiln_xasprintf(" %u/%u ", (unsigned)geteuid(), (unsigned)getegid());
    for (const char *p = line; *p;) {
        if (strncmp(p, " 0/0 ", 5) == 0) {
            kiln_buf_adds(&b, own);
            p += 5;
        } else {
            kiln_buf_addch(&b, *p++);
        }
    }
    bool r = has_line(list, b.buf);
    kiln_buf_release(&b);
    free(own);
    return r;
}

/* The position of the line starting with `prefix `, or -1. */
static int line_index(const char *list, const char *prefix)
{
    int i = 0;
    size_t n = strlen(prefix);
    for (const char *p = list; *p; i++) {
        if (strncmp(p, prefix, n) == 0 && p[n] == ' ')
            return i;
        p = strchr(p, '\n');
        if (!p)
            break;
        p++;
    }
    return -1;
}

/* ---- a tree description to compare a source tree with an extracted one ------ */

static struct kiln_strv_lines {
    char **v;
    size_t n;
    size_t root_len;
    bool clamp;
} desc;

static int desc_cb(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    if (strlen(p) <= desc.root_len)
        return 0;
    if (S_ISSOCK(st->st_mode))
        return 0;
    struct kiln_buf b = KILN_BUF_INIT;
    int64_t mt = st->st_mtim.tv_sec;
    if (desc.clamp && mt > SDE)
        mt = SDE;
    kiln_buf_addf(&b, "%s %o %o %u/%u", p + desc.root_len + 1, (unsigned)(st->st_mode & S_IFMT),
                  (unsigned)(st->st_mode & 07777), (unsigned)st->st_uid, (unsigned)st->st_gid);
    if (S_ISREG(st->st_mode))
        kiln_buf_addf(&b, " size %lld nlink %u", (long long)st->st_size, (unsigned)st->st_nlink);
    if (!S_ISLNK(st->st_mode))
        kiln_buf_addf(&b, " mtime %lld", (long long)mt);
    if (S_ISLNK(st->st_mode)) {
        char t[4096];
        ssize_t n = readlink(p, t, sizeof(t) - 1);
        t[n > 0 ? n : 0] = '\0';
        kiln_buf_addf(&b, " -> %s", t);
    }
    if (S_ISCHR(st->st_mode) || S_ISBLK(st->st_mode))
        kiln_buf_addf(&b, " dev %u,%u", major(st->st_rdev), minor(st->st_rdev));
    if (S_ISREG(st->st_mode) || S_ISDIR(st->st_mode)) {
        char names[4096], val[4096];
        ssize_t n = llistxattr(p, names, sizeof(names));
        /* sorted list of kept names */
        const char *keep[32];
        size_t nk = 0;
        for (ssize_t off = 0; off < n && nk < 32; off += (ssize_t)strlen(names + off) + 1)
            if (strncmp(names + off, "trusted.", 8) != 0 &&
                strcmp(names + off, "security.selinux") != 0)
                keep[nk++] = names + off;
        for (size_t i = 1; i < nk; i++)
            for (size_t j = i; j > 0 && strcmp(keep[j - 1], keep[j]) > 0; j--) {
                const char *t = keep[j];
                keep[j] = keep[j - 1];
                keep[j - 1] = t;
            }
        for (size_t i = 0; i < nk; i++) {
            ssize_t vn = lgetxattr(p, keep[i], val, sizeof(val));
            kiln_buf_addf(&b, " %s=", keep[i]);
            for (ssize_t k = 0; k < vn; k++)
                kiln_buf_addf(&b, "%02x", (uint8_t)val[k]);
        }
    }
    if (S_ISREG(st->st_mode)) {
        int fd = open(p, O_RDONLY | O_CLOEXEC);
        char buf[256];
        ssize_t n = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : -1;
        if (fd >= 0)
            close(fd);
        buf[n > 0 ? n : 0] = '\0';
        char hex[KILN_SHA256_HEX_LEN + 1];
        kiln_sha256_hex(buf, strlen(buf), hex);
        kiln_buf_addf(&b, " data %.12s", hex);
    }
    desc.v = kiln_xreallocarray(desc.v, desc.n + 1, sizeof(*desc.v));
    desc.v[desc.n++] = kiln_buf_detach(&b, NULL);
    return 0;
}

static char *describe(const char *root, bool clamp)
{
    desc = (struct kiln_strv_lines){.root_len = strlen(root), .clamp = clamp};
    nftw(root, desc_cb, 64, FTW_PHYS);
    qsort(desc.v, desc.n, sizeof(*desc.v), cmp_str);
    struct kiln_buf b = KILN_BUF_INIT;
    for (size_t i = 0; i < desc.n; i++) {
        kiln_buf_adds(&b, desc.v[i]);
        kiln_buf_addch(&b, '\n');
        free(desc.v[i]);
    }
    free(desc.v);
    return kiln_buf_detach(&b, NULL);
}

/* ---- tests --------------------------------------------------------------------- */

static void test_entries(void)
{
    char *root = tpath("t1"), *tar = tpath("t1.tar");
    make_tree(root, false);
    char *n0 = tpath("t1/n0");
    struct timespec before1970[2] = {{-100, 0}, {-100, 0}};
    utimensat(AT_FDCWD, n0, before1970, 0);
    free(n0);
    struct kiln_pack_options o = {
        .compress.algo = KILN_COMPRESSION_NONE, .clamp_mtime = true, .source_date_epoch = SDE};
    struct kiln_compress_result res;
    struct kiln_pack_stats st;
    struct kiln_error *e = NULL;
    is_int(pack_to(root, tar, &o, &res, &st, &e), 0, "pack a tree of every kind of entry");
    char *l = list_tar(tar);
    printf("# entries:\n");
    tap_comment("tar", l);

    /* order: depth first, each directory sorted bytewise; "a/" then its contents, then "a-c" */
    int ia = line_index(l, "a/"), isub = line_index(l, "a/sub/"), ifile = line_index(l, "a/file"),
        iac = line_index(l, "a-c"), ib = line_index(l, "b/"), iz = line_index(l, "z"),
        izl = line_index(l, "z-link"), iu = line_index(l, "\xc3\xa9t\xc3\xa9-\xff");
    ok(ia == 0 && ifile == 1 && isub == 2 && iac == 3 && ib == 4, "sorted, a directory before "
                                                                  "its contents");
    ok(iu > iz && izl > iz && iu > izl, "bytewise order: 'z' < 'z-link' < non-ASCII names");
    ok(strstr(l, "uname=") == NULL, "no user or group names");
    ok(strstr(l, "atime/ctime!") == NULL, "no atime or ctime");
    const char *want_file =
        is_root ? "a/file f 4755 0/0 12 1600000000 "
                  "security.capability=0100000200200000000000000000000000000000 "
                  "user.another=31 user.note=760078"
                : "a/file f 4755 0/0 12 1600000000 user.another=31 user.note=760078";
    ok(has_own_line(l, want_file),
       "file: mode with setuid, size, clamped mtime, sorted xattrs, no trusted.*");
    struct kiln_buf raw = KILN_BUF_INIT;
    kiln_buf_init(&raw, 1u << 20);
    int tfd = open(tar, O_RDONLY | O_CLOEXEC);
    char chunk[8192];
    ssize_t k;
    while (tfd >= 0 && (k = read(tfd, chunk, sizeof(chunk))) > 0)
        kiln_buf_add(&raw, chunk, (size_t)k);
    if (tfd >= 0)
        close(tfd);
    const char *x1 = memmem(raw.buf, raw.len, "SCHILY.xattr.user.another=", 26),
               *x2 = memmem(raw.buf, raw.len, "SCHILY.xattr.user.note=", 23),
               *x0 = memmem(raw.buf, raw.len, "SCHILY.xattr.security.capability=", 33);
    ok(x1 && x2 && x1 < x2 && (!is_root || (x0 && x0 < x1)), "xattr records sorted by name");
    ok(!memmem(raw.buf, raw.len, "trusted.secret", 14), "trusted.* not recorded");
    ok(!memmem(raw.buf, raw.len, "hdrcharset", 10), "no hdrcharset records");
    kiln_buf_release(&raw);
    ok(has_own_line(l, "b/link2 h 4755 0/0 0 1600000000 = a/file"), "later path is a hard link");
    ok(has_own_line(l, "z-link h 4755 0/0 0 1600000000 = a/file"), "a third link too");
    ok(has_own_line(l, "b/sym l 0777 0/0 0 1600000000 -> ../a/file"), "symlink");
    ok(has_own_line(l, "b/longsym l 0777 0/0 0 1600000000 -> /" LONGN "/" LONGN),
       "symlink with a long target (pax linkpath)");
    ok(has_own_line(l, LONGN "/" LONGN " f 0644 0/0 4 1600000000"), "long path (pax path)");
    ok(has_own_line(l, "b/fifo p 0644 0/0 0 1600000000"), "fifo");
    ok(has_own_line(l, "n0 f 0644 0/0 2 -100"), "mtime before 1970 (pax mtime)");
    ok(line_index(l, "b/sock") < 0 && st.skipped == 1, "socket skipped");
    ok(has_own_line(l, "b/ d 0755 0/0 0 1600000000 user.dir=64"), "directory xattr");
    if (is_root) {
        ok(has_line(l, "b/null c 0666 0/0 0 1600000000 dev 1,3"), "char device");
        ok(has_line(l, "b/blk b 0600 0/0 0 1600000000 dev 7,200"), "block device");
        ok(has_line(l, "a/sub/ d 0700 1000/100 0 1600000000"), "numeric owner");
        ok(has_line(l, "z f 0640 3000000/4000000 3 1600000000"), "large ids (pax uid/gid)");
    }
    is_int(st.hardlinks, 2, "two hard link entries");
    is_str(res.digest, res.diff_id, "uncompressed: digest is the diff_id");
    uint64_t size;
    char d[KILN_DIGEST_BUFSZ];
    file_digest(tar, d, &size);
    is_str(res.diff_id, d, "diff_id is the sha256 of the tar");
    is_int(res.uncompressed_size, size, "size");
    ok(size % 512 == 0, "whole blocks");

    /* GNU tar extracts the same tree */
    char *x = tpath("t1-x");
    mkd(x, "", 0755);
    const char *argv[] = {
        "tar", "--xattrs", "--xattrs-include=*", "--numeric-owner", "-p", "-xf", tar, "-C",
        x,     NULL};
    int rc = run(argv);
    if (rc == 127) {
        ok(1, "# SKIP GNU tar not installed");
    } else {
        is_int(rc, 0, "GNU tar extracts the layer");
        char *want = describe(root, true), *got = describe(x, false);
        is_str(got, want,
               "the extracted tree equals the source (paths, modes, owners, links, "
               "sizes, mtimes, xattrs, data)");
        free(want);
        free(got);
    }
    free(l);
    free(x);
    free(root);
    free(tar);
    kiln_error_free(e);
}

static void test_determinism(void)
{
    char *r1 = tpath("d1"), *r2 = tpath("d2"), *f1 = tpath("d1.gz"), *f2 = tpath("d2.gz");
    make_tree(r1, false);
    make_tree(r2, true);
    nftw(r2, set_mtime_cb, 64, FTW_PHYS);
    struct kiln_pack_options o = {
        .compress = KILN_COMPRESS_OPTIONS_INIT, .clamp_mtime = true, .source_date_epoch = SDE};
    struct kiln_compress_result a, b, c;
    struct kiln_error *e = NULL;
    pack_to(r1, f1, &o, &a, NULL, &e);
    pack_to(r1, f2, &o, &b, NULL, &e);
    is_str(a.digest, b.digest, "the same tree twice: same digest");
    is_str(a.diff_id, b.diff_id, "the same tree twice: same diff_id");
    o.compress.threads = 1;
    pack_to(r2, f2, &o, &c, NULL, &e);
    is_str(c.digest, a.digest,
           "a copy made in another order with newer mtimes, one thread: "
           "same digest under SOURCE_DATE_EPOCH");
    is_str(c.diff_id, a.diff_id, "and the same diff_id");
    o.clamp_mtime = false;
    pack_to(r2, f2, &o, &c, NULL, &e);
    ok(strcmp(c.diff_id, a.diff_id) != 0, "without the clamp the mtimes show");

    /* gzip checks: gzip -t, one member that zlib inflates to the diff_id, digest of the file */
    o.clamp_mtime = true;
    o.compress.threads = 0;
    pack_to(r1, f1, &o, &a, NULL, &e);
    const char *gz[] = {"gzip", "-t", f1, NULL};
    int rc = run(gz);
    ok(rc == 0 || rc == 127, "gzip -t accepts the layer%s", rc == 127 ? " # SKIP no gzip" : "");
    uint64_t size;
    char d[KILN_DIGEST_BUFSZ];
    file_digest(f1, d, &size);
    is_str(a.digest, d, "gzip: digest is the sha256 of the blob");
    is_int(a.size, size, "gzip: size is the blob's");
    is_str(a.media_type, KILN_MT_OCI_LAYER_TAR_GZ, "gzip media type");
    ok(gunzip_digest(f1, d, &size) == 0, "zlib reads the blob");
    is_str(d, a.diff_id, "gzip: inflated bytes hash to the diff_id");
    is_int(size, a.uncompressed_size, "gzip: uncompressed size");

    o.compress.algo = KILN_COMPRESSION_ZSTD;
    pack_to(r1, f2, &o, &b, NULL, &e);
    is_str(b.diff_id, a.diff_id, "zstd: same diff_id as gzip");
    file_digest(f2, d, &size);
    is_str(b.digest, d, "zstd: digest is the sha256 of the blob");
    is_str(b.media_type, KILN_MT_OCI_LAYER_TAR_ZST, "zstd media type");
    const char *zt[] = {"zstd", "-q", "-t", f2, NULL};
    rc = run(zt);
    ok(rc == 0 || rc == 127, "zstd -t accepts the layer%s", rc == 127 ? " # SKIP no zstd" : "");
    char *zl = list_tar(f2), *tl = list_tar(f1);
    is_str(zl, tl, "zstd and gzip layers hold the same entries");
    free(zl);
    free(tl);
    free(r1);
    free(r2);
    free(f1);
    free(f2);
    kiln_error_free(e);
}

static void test_exclude(void)
{
    char *root = tpath("ex"), *tar = tpath("ex.tar");
    mkd(root, "", 0755);
    mkd(root, "var", 0755);
    mkd(root, "var/lib", 0755);
    mkd(root, "var/lib/apt", 0755);
    mkd(root, "var/lib/apt/lists", 0755);
    mkd(root, "var/lib/apt/lists/partial", 0700);
    put(root, "var/lib/apt/lists/deb_InRelease", "x", 0644);
    put(root, "var/lib/apt/lists/.hidden", "x", 0644);
    put(root, "var/lib/apt/extended_states", "x", 0644);
    mkd(root, "root", 0700);
    mkd(root, "root/.cache", 0755);
    mkd(root, "root/.cache/pip", 0755);
    put(root, "root/.cache/pip/wheel", "x", 0644);
    put(root, "root/.cache/other", "x", 0644);
    put(root, "root/.cache/pipx", "x", 0644);
    put(root, "keep.pyc", "x", 0644);
    const char *pats[] = {"/var/lib/apt/lists/*", "./root/.cache/pip/", "*.pyc", NULL};
    struct kiln_pack_options o = {.compress.algo = KILN_COMPRESSION_NONE, .exclude = pats};
    struct kiln_compress_result res;
    struct kiln_pack_stats st;
    struct kiln_error *e = NULL;
    is_int(pack_to(root, tar, &o, &res, &st, &e), 0, "pack with exclusions");
    char *l = list_tar(tar);
    ok(line_index(l, "var/lib/apt/lists/") >= 0, "the lists directory itself stays");
    ok(strstr(l, "lists/deb_InRelease") == NULL && strstr(l, "lists/partial") == NULL &&
           strstr(l, "lists/.hidden") == NULL,
       "its contents go, dot files included");
    ok(line_index(l, "var/lib/apt/extended_states") >= 0, "siblings stay");
    ok(strstr(l, "root/.cache/pip/") == NULL && strstr(l, "pip/wheel") == NULL,
       "an excluded directory goes with its contents");
    ok(line_index(l, "root/.cache/other") >= 0 && line_index(l, "root/.cache/pipx") >= 0,
       "a pattern is no mere prefix");
    ok(line_index(l, "keep.pyc") < 0, "a top-level glob");
    is_int(st.excluded, 5, "five entries excluded");
    free(l);

    const char *bad[] = {"/", NULL};
    o.exclude = bad;
    is_int(pack_to(root, tar, &o, &res, &st, &e), -KILN_EINVAL, "empty pattern refused");
    is_str(e ? e->msg : NULL, "invalid exclude pattern '/'", "message");
    free(root);
    free(tar);
    kiln_error_free(e);
}

static int cancel_after(void *userdata, uint64_t bytes, uint64_t entries)
{
    return entries >= *(uint64_t *)userdata;
}

static int failing_sink(void *userdata, const void *data, size_t len, struct kiln_error **err)
{
    return kiln_error_set(err, KILN_EIO, 28, "write blob 'tmp'");
}

static void test_errors(void)
{
    char *root = tpath("er"), *tar = tpath("er.tar");
    struct kiln_pack_options o = {.compress.algo = KILN_COMPRESSION_NONE};
    struct kiln_compress_result res;
    struct kiln_error *e = NULL;

    mkd(root, "", 0755);
    mkd(root, "d", 0755);
    put(root, "d/.wh.x", "", 0644);
    is_int(pack_to(root, tar, &o, &res, NULL, &e), -KILN_EUNSUPPORTED, "a '.wh.' name is refused");
    is_str(e ? e->msg : NULL,
           "'d/.wh.x': names starting with '.wh.' are reserved for whiteouts in image layers",
           "message names the path");
    rm_rf(root);

    make_tree(root, false);
    uint64_t limit = 3;
    o.progress = cancel_after;
    o.progress_data = &limit;
    is_int(pack_to(root, tar, &o, &res, NULL, &e), -KILN_ECANCELLED, "progress cancels");
    o.progress = NULL;

    int dfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    is_int(kiln_pack_dir(dfd, &o, failing_sink, NULL, &res, NULL, &e), -KILN_EIO,
           "output error passed on");
    is_str(e ? e->msg : NULL, "write blob 'tmp': No space left on device", "with its message");
    close(dfd);

    char *f = tpath("er/z");
    dfd = open(f, O_RDONLY | O_CLOEXEC);
    is_int(kiln_pack_dir(dfd, &o, failing_sink, NULL, &res, NULL, &e), -KILN_EINVAL,
           "a file as root refused");
    close(dfd);
    free(f);

    /* an empty directory: just the end-of-archive blocks */
    char *empty = tpath("empty");
    mkd(empty, "", 0755);
    is_int(pack_to(empty, tar, &o, &res, NULL, &e), 0, "pack an empty directory");
    is_int(res.uncompressed_size, 1024, "1024 zero bytes");
    free(empty);
    free(root);
    free(tar);
    kiln_error_free(e);
}

static void test_overlay(void)
{
    char *lower = tpath("ov/lower"), *upper = tpath("ov/upper"), *work = tpath("ov/work"),
         *merged = tpath("ov/merged"), *tar = tpath("ov.tar");
    char *base = tpath("ov");
    mkd(base, "", 0755);
    mkd(lower, "", 0755);
    mkd(upper, "", 0755);
    mkd(work, "", 0755);
    mkd(merged, "", 0755);
    mkd(lower, "etc", 0755);
    put(lower, "etc/deleted", "x", 0644);
    put(lower, "etc/deleted2", "x", 0644);
    put(lower, "etc/kept", "x", 0644);
    mkd(lower, "replaced", 0755);
    put(lower, "replaced/inside", "x", 0644);
    mkd(lower, "opaque", 0755);
    put(lower, "opaque/old", "x", 0644);
    mkd(lower, "opaque/olddir", 0755);
    mkd(lower, "var", 0755);
    mkd(lower, "var/cache", 0755);
    put(lower, "var/cache/gone", "x", 0644);

    char *opts = kiln_xasprintf("lowerdir=%s,upperdir=%s,workdir=%s", lower, upper, work);
    if (!is_root || mount("overlay", merged, "overlay", 0, opts) < 0) {
        ok(1, "# SKIP cannot mount an overlay: %s", is_root ? strerror(errno) : "not root");
        goto out;
    }
    /* changes through the merged view */
    char *p = kiln_xasprintf("%s/etc/deleted", merged);
    unlink(p);
    free(p);
    p = kiln_xasprintf("%s/etc/deleted2", merged);
    unlink(p);
    free(p);
    p = kiln_xasprintf("%s/replaced", merged);
    rm_rf(p); /* a directory replaced by a file */
    free(p);
    put(merged, "replaced", "now a file", 0644);
    p = kiln_xasprintf("%s/opaque", merged);
    rm_rf(p); /* rm -rf dir; mkdir dir: an opaque directory */
    free(p);
    mkd(merged, "opaque", 0750);
    put(merged, "opaque/new", "new", 0644);
    put(merged, "etc/added", "added", 0644);
    p = kiln_xasprintf("%s/var/cache/gone", merged);
    unlink(p);
    free(p);
    umount2(merged, 0);

    char *up_opaque = kiln_xasprintf("%s/opaque", upper);
    char v[4] = "";
    ok(getxattr(up_opaque, "trusted.overlay.opaque", v, sizeof(v)) == 1 && v[0] == 'y',
       "the kernel marked the upper dir opaque");
    free(up_opaque);

    const char *pats[] = {"var/cache/*", NULL};
    struct kiln_pack_options o = {.compress.algo = KILN_COMPRESSION_NONE,
                                  .overlay = true,
                                  .clamp_mtime = true,
                                  .source_date_epoch = SDE,
                                  .exclude = pats};
    struct kiln_compress_result res;
    struct kiln_pack_stats st;
    struct kiln_error *e = NULL;
    is_int(pack_to(upper, tar, &o, &res, &st, &e), 0, "pack the upper dir in overlay mode");
    char *l = list_tar(tar);
    tap_comment("tar", l);
    const char *want_order[] = {"etc/",    "etc/.wh.deleted",     "etc/.wh.deleted2", "etc/added",
                                "opaque/", "opaque/.wh..wh..opq", "opaque/new",       "replaced",
                                "var/",    "var/cache/"};
    int prev = -1;
    bool in_order = true;
    for (size_t i = 0; i < KILN_ARRAY_SIZE(want_order); i++) {
        int idx = line_index(l, want_order[i]);
        if (idx != prev + 1) {
            printf("# '%s' at %d, want %d\n", want_order[i], idx, prev + 1);
            in_order = false;
        }
        prev = idx;
    }
    ok(in_order, "entries: whiteouts, opaque marker first in its directory, replaced dir");
    ok(strstr(l, "etc/.wh.deleted f 0000 0/0 0 1600000000\n") != NULL,
       "a whiteout is an empty regular file");
    ok(strstr(l, " = ") == NULL, "whiteouts sharing an inode are not hard links");
    ok(strstr(l, "opaque/.wh..wh..opq f 0750 0/0 0 1600000000\n") != NULL,
       "the opaque marker has the directory's mode");
    ok(strstr(l, "trusted.overlay") == NULL, "no overlay xattrs");
    ok(strstr(l, "var/cache/.wh.gone") == NULL, "an excluded path's whiteout is left out");
    is_int(st.whiteouts, 2, "two whiteouts");
    is_int(st.opaque_dirs, 1, "one opaque directory");
    ok(line_index(l, "etc/kept") < 0, "unchanged lower files are not in the layer");
    free(l);

    /* redirect_dir cannot be represented */
    p = kiln_xasprintf("%s/etc", upper);
    setxattr(p, "trusted.overlay.redirect", "/x", 2, 0);
    free(p);
    is_int(pack_to(upper, tar, &o, &res, &st, &e), -KILN_EUNSUPPORTED, "redirect_dir refused");
    kiln_error_free(e);
out:
    free(opts);
    free(lower);
    free(upper);
    free(work);
    free(merged);
    free(tar);
    free(base);
}

/*
 * "test-pack pack DIR OUT [gzip|zstd|none] [--overlay] [--sde N] [--exclude P]...":
 * a packer for tests/integration/test-pack-interop.sh. Prints
 * "DIGEST SIZE DIFF_ID UNCOMPRESSED_SIZE MEDIA_TYPE".
 */
static int pack_cli(int argc, char **argv)
{
    struct kiln_pack_options o = {.compress = KILN_COMPRESS_OPTIONS_INIT};
    const char *ex[64];
    size_t nex = 0;
    for (int i = 4; i < argc; i++) {
        if (strcmp(argv[i], "--overlay") == 0) {
            o.overlay = true;
        } else if (strcmp(argv[i], "--sde") == 0 && i + 1 < argc) {
            o.clamp_mtime = true;
            o.source_date_epoch = strtoll(argv[++i], NULL, 10);
        } else if (strcmp(argv[i], "--exclude") == 0 && i + 1 < argc && nex < 63) {
            ex[nex++] = argv[++i];
        } else if (kiln_compression_parse(argv[i], &o.compress.algo, NULL) < 0) {
            fprintf(stderr, "test-pack: unknown argument '%s'\n", argv[i]);
            return 2;
        }
    }
    ex[nex] = NULL;
    o.exclude = ex;
    struct kiln_compress_result res;
    struct kiln_error *e = NULL;
    if (pack_to(argv[2], argv[3], &o, &res, NULL, &e) < 0) {
        fprintf(stderr, "test-pack: %s\n", e ? e->msg : "failed");
        kiln_error_free(e);
        return 1;
    }
    printf("%s %llu %s %llu %s\n", res.digest, (unsigned long long)res.size, res.diff_id,
           (unsigned long long)res.uncompressed_size, res.media_type);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 4 && strcmp(argv[1], "pack") == 0)
        return pack_cli(argc, argv);
    is_root = geteuid() == 0;
    if (!mkdtemp(tmpdir)) {
        printf("Bail out! mkdtemp\n");
        return 1;
    }
    test_entries();
    test_determinism();
    test_exclude();
    test_errors();
    test_overlay();
    rm_rf(tmpdir);
    return tap_done();
}
