/* Unit tests of util/fs: atomic writes, mkdir -p, rm -rf, du and the stale-temp sweep. */
#include "util/common.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "tap.h"
#include "util/fs.h"

static char base[256];
static int basefd = -1;

static char *at(const char *rel)
{
    return kiln_xasprintf("%s/%s", base, rel);
}

static bool exists(const char *rel)
{
    _cleanup_free_ char *p = at(rel);
    struct stat st;
    return lstat(p, &st) == 0;
}

static char *slurp(const char *rel)
{
    _cleanup_free_ char *p = at(rel);
    FILE *f = fopen(p, "re");
    if (!f)
        return NULL;
    char *buf = kiln_xcalloc(1, 4096);
    size_t n = fread(buf, 1, 4095, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static void put(const char *rel, const char *content)
{
    _cleanup_free_ char *p = at(rel);
    FILE *f = fopen(p, "we");
    if (f) {
        fputs(content, f);
        fclose(f);
    }
}

static void mk(const char *rel)
{
    _cleanup_free_ char *p = at(rel);
    (void)mkdir(p, 0755);
}

static int count_entries(const char *rel)
{
    _cleanup_free_ char *p = at(rel);
    DIR *d = opendir(p);
    if (!d)
        return -1;
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)))
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
            n++;
    closedir(d);
    return n;
}

static void set_mtime_ago(const char *rel, time_t secs)
{
    _cleanup_free_ char *p = at(rel);
    struct timespec ts[2] = {{.tv_sec = time(NULL) - secs}, {.tv_sec = time(NULL) - secs}};
    (void)utimensat(AT_FDCWD, p, ts, AT_SYMLINK_NOFOLLOW);
}

static void test_random_name(void)
{
    char a[KILN_FS_RANDOM_NAME_LEN + 1], b[KILN_FS_RANDOM_NAME_LEN + 1];
    kiln_fs_random_name(a);
    kiln_fs_random_name(b);
    is_int(strlen(a), KILN_FS_RANDOM_NAME_LEN, "random name has 16 characters");
    ok(strspn(a, "0123456789abcdef") == KILN_FS_RANDOM_NAME_LEN, "random name is hex");
    ok(strcmp(a, b) != 0, "two random names differ");
}

static void test_mkdir_p(void)
{
    struct kiln_error *err = NULL;
    int fd = -1;
    is_int(kiln_fs_mkdir_p_at(basefd, "m/a/b/c", 0755, &fd, &err), 0, "mkdir -p nested");
    ok(fd >= 0 && exists("m/a/b/c"), "nested directory exists, fd returned");
    if (fd >= 0) {
        ok(mkdirat(fd, "d", 0755) == 0 && exists("m/a/b/c/d"), "returned fd is the last directory");
        close(fd);
    }
    is_int(kiln_fs_mkdir_p_at(basefd, "m/a/b/c", 0755, NULL, &err), 0, "existing path is fine");
    is_int(kiln_fs_mkdir_p_at(basefd, "m//a/./b/", 0755, NULL, &err), 0,
           "empty and '.' components are skipped");

    put("m/file", "x");
    is_int(kiln_fs_mkdir_p_at(basefd, "m/file/sub", 0755, NULL, &err), -KILN_EIO,
           "a file on the way is an error");
    ok(err && strstr(err->msg, "'file' is not a directory"), "message names the file: %s",
       err ? err->msg : "");
    kiln_error_free(err);
    err = NULL;

    mk("outside");
    _cleanup_free_ char *target = at("outside");
    _cleanup_free_ char *link = at("m/link");
    ok(symlink(target, link) == 0, "symlink to outside created");
    is_int(kiln_fs_mkdir_p_at(basefd, "m/link/evil", 0755, NULL, &err), -KILN_EIO,
           "a symlink on the way is refused");
    ok(err && strstr(err->msg, "is a symbolic link"), "message says symbolic link: %s",
       err ? err->msg : "");
    ok(!exists("outside/evil"), "nothing created through the symlink");
    kiln_error_free(err);
    err = NULL;

    is_int(kiln_fs_mkdir_p_at(basefd, "m/../x", 0755, NULL, &err), -KILN_EINVAL, "'..' refused");
    kiln_error_free(err);
    err = NULL;
    is_int(kiln_fs_mkdir_p_at(basefd, "/tmp/x", 0755, NULL, &err), -KILN_EINVAL,
           "absolute path refused");
    kiln_error_free(err);
    err = NULL;
    is_int(kiln_fs_mkdir_p_at(basefd, "", 0755, NULL, &err), -KILN_EINVAL, "empty path refused");
    kiln_error_free(err);
    err = NULL;

    fd = kiln_fs_open_dir(basefd, "m/a", &err);
    ok(fd >= 0, "open_dir of a directory");
    if (fd >= 0)
        close(fd);
    is_int(kiln_fs_open_dir(basefd, "m/link", &err), -KILN_EIO, "open_dir of a symlink refused");
    kiln_error_free(err);
    err = NULL;
    is_int(kiln_fs_open_dir(basefd, "m/nope", &err), -KILN_ENOTFOUND, "open_dir of a missing one");
    kiln_error_free(err);

    _cleanup_free_ char *deep = at("mp/x/y");
    err = NULL;
    is_int(kiln_fs_mkdir_p_path(deep, 0755, &fd, &err), 0, "mkdir_p_path absolute");
    ok(fd >= 0 && exists("mp/x/y"), "mkdir_p_path created it");
    if (fd >= 0)
        close(fd);
}

static void test_write_atomic(void)
{
    struct kiln_error *err = NULL;
    mk("w");
    is_int(kiln_fs_write_atomic(basefd, "w/f.txt", "hello", 5, 0640, &err), 0, "atomic write");
    _cleanup_free_ char *c1 = slurp("w/f.txt");
    is_str(c1, "hello", "content written");
    struct stat st;
    _cleanup_free_ char *p = at("w/f.txt");
    ok(stat(p, &st) == 0 && (st.st_mode & 07777) == 0640, "mode applied exactly");
    is_int(kiln_fs_write_atomic(basefd, "w/f.txt", "bye", 3, 0644, &err), 0, "overwrite");
    _cleanup_free_ char *c2 = slurp("w/f.txt");
    is_str(c2, "bye", "content replaced");
    is_int(count_entries("w"), 1, "no temp file left behind");

    int wfd = kiln_fs_open_dir(basefd, "w", NULL);
    is_int(kiln_fs_write_atomic(wfd, "g", "", 0, 0600, &err), 0,
           "empty file, relative to a dir fd");
    ok(exists("w/g"), "written relative to the fd");
    is_int(kiln_fs_fsync_dir(wfd, &err), 0, "fsync dir");
    close(wfd);

    _cleanup_free_ char *target = at("outside");
    _cleanup_free_ char *link = at("w/ln");
    ok(symlink(target, link) == 0, "symlink for a write through it");
    is_int(kiln_fs_write_atomic(basefd, "w/ln/x", "no", 2, 0644, &err), -KILN_EIO,
           "no write through a symlinked parent");
    ok(!exists("outside/x"), "nothing written outside");
    kiln_error_free(err);
    err = NULL;
    is_int(kiln_fs_write_atomic(basefd, "w/missing/x", "no", 2, 0644, &err), -KILN_ENOTFOUND,
           "missing parent directory");
    kiln_error_free(err);
    err = NULL;
    is_int(kiln_fs_write_atomic(basefd, "w/..", "no", 2, 0644, &err), -KILN_EINVAL,
           "'..' as the name refused");
    kiln_error_free(err);
}

static void test_rm_rf(void)
{
    struct kiln_error *err = NULL;
    mk("r");
    mk("r/a");
    mk("r/a/b");
    put("r/a/b/f", "1");
    put("r/a/g", "2");
    put("outside/keep", "k");
    _cleanup_free_ char *target = at("outside");
    _cleanup_free_ char *l1 = at("r/a/to-outside");
    ok(symlink(target, l1) == 0, "symlink to outside inside the tree");
    _cleanup_free_ char *fifo = at("r/a/fifo");
    ok(mkfifo(fifo, 0644) == 0, "a fifo in the tree");
    mk("r/ro");
    put("r/ro/f", "x");
    _cleanup_free_ char *ro = at("r/ro");
    chmod(ro, 0500);
    mk("r/none");
    put("r/none/f", "x");
    _cleanup_free_ char *none = at("r/none");
    chmod(none, 0);

    is_int(kiln_fs_rm_rf_at(basefd, "r", &err), 0, "rm -rf a tree");
    ok(!exists("r"), "the tree is gone");
    ok(exists("outside/keep"), "the symlink target's content is untouched");
    is_int(kiln_fs_rm_rf_at(basefd, "r", &err), 0, "rm -rf of a missing path is fine");
    is_int(kiln_fs_rm_rf_at(basefd, "no/such/dir", &err), 0, "missing parent is fine too");
    ok(err == NULL, "and leaves no error object behind");

    _cleanup_free_ char *l2 = at("toplink");
    ok(symlink(target, l2) == 0, "top-level symlink");
    is_int(kiln_fs_rm_rf_at(basefd, "toplink", &err), 0, "rm -rf of a symlink");
    ok(!exists("toplink") && exists("outside/keep"), "only the link removed");

    put("plain", "p");
    is_int(kiln_fs_rm_rf_at(basefd, "plain", &err), 0, "rm -rf of a file");
    ok(!exists("plain"), "file removed");

    /* A tree deeper than the fd limit: the walk holds a bounded number of fds. */
    struct rlimit old, low;
    getrlimit(RLIMIT_NOFILE, &old);
    int dfd = -1;
    is_int(kiln_fs_mkdir_p_at(basefd, "deep", 0755, &dfd, &err), 0, "deep root");
    for (int i = 0; i < 300 && dfd >= 0; i++) {
        (void)mkdirat(dfd, "d", 0755);
        int f = openat(dfd, "file", O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
        if (f >= 0)
            close(f);
        int nfd = openat(dfd, "d", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        close(dfd);
        dfd = nfd;
    }
    if (dfd >= 0)
        close(dfd);
    low = old;
    low.rlim_cur = 64;
    setrlimit(RLIMIT_NOFILE, &low);
    uint64_t du = 0;
    int r1 = kiln_fs_disk_usage_at(basefd, "deep", &du, &err);
    int r2 = kiln_fs_rm_rf_at(basefd, "deep", &err);
    setrlimit(RLIMIT_NOFILE, &old);
    is_int(r1, 0, "du of a 300-level tree with 64 fds");
    ok(du >= 300 * 4096ULL, "du counts every level (%llu)", (unsigned long long)du);
    is_int(r2, 0, "rm -rf of a 300-level tree with 64 fds");
    if (r2 < 0 && err)
        printf("# %s\n", err->msg);
    ok(!exists("deep"), "deep tree gone");

    is_int(kiln_fs_rm_rf_at(basefd, "../x", &err), -KILN_EINVAL, "'..' refused");
    kiln_error_free(err);
}

/* As an unprivileged owner, rm -rf gets into directories without permissions. */
static void test_rm_rf_unprivileged(void)
{
    if (geteuid() != 0) {
        ok(1, "# SKIP needs root to switch to an unprivileged user");
        return;
    }
    mk("nob");
    _cleanup_free_ char *p = at("nob");
    int nfd = open(p, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (nfd < 0 || fchown(nfd, 65534, 65534) < 0) {
        ok(1, "# SKIP cannot chown to 65534");
        if (nfd >= 0)
            close(nfd);
        return;
    }
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        if (setgid(65534) < 0 || setuid(65534) < 0)
            _exit(2);
        if (mkdirat(nfd, "t", 0755) < 0 || mkdirat(nfd, "t/a", 0755) < 0 ||
            mkdirat(nfd, "t/a/b", 0755) < 0)
            _exit(3);
        int f = openat(nfd, "t/a/b/f", O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
        if (f < 0)
            _exit(4);
        close(f);
        if (fchmodat(nfd, "t/a/b", 0, 0) < 0 || fchmodat(nfd, "t/a", 0500, 0) < 0 ||
            fchmodat(nfd, "t", 0555, 0) < 0)
            _exit(5);
        struct kiln_error *e = NULL;
        int r = kiln_fs_rm_rf_at(nfd, "t", &e);
        struct stat st;
        _exit(r == 0 && fstatat(nfd, "t", &st, AT_SYMLINK_NOFOLLOW) < 0 ? 0 : 1);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    ok(WIFEXITED(status) && WEXITSTATUS(status) == 0,
       "unprivileged rm -rf of directories with modes 0555, 0500, 0 (exit %d)",
       WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    close(nfd);
}

/* rm -rf never descends into another mounted file system. */
static void test_rm_rf_mount(void)
{
    mk("mnt");
    mk("mnt/m");
    _cleanup_free_ char *m = at("mnt/m");
    if (geteuid() != 0 || mount("kiln-test", m, "tmpfs", 0, "size=1m") < 0) {
        ok(1, "# SKIP cannot mount a tmpfs here");
        ok(1, "# SKIP cannot mount a tmpfs here");
        return;
    }
    put("mnt/m/precious", "p");
    struct kiln_error *err = NULL;
    is_int(kiln_fs_rm_rf_at(basefd, "mnt", &err), -KILN_EIO, "rm -rf stops at a mount point");
    ok(exists("mnt/m/precious"), "the mounted file system is untouched");
    kiln_error_free(err);
    umount2(m, MNT_DETACH);
}

static void test_du(void)
{
    struct kiln_error *err = NULL;
    mk("du");
    char block[8192];
    memset(block, 'x', sizeof(block));
    _cleanup_free_ char *f = at("du/f");
    FILE *fp = fopen(f, "we");
    fwrite(block, 1, sizeof(block), fp);
    fclose(fp);
    _cleanup_free_ char *h = at("du/h");
    ok(link(f, h) == 0, "hard link");
    struct stat st, dst;
    stat(f, &st);
    _cleanup_free_ char *d = at("du");
    stat(d, &dst);
    uint64_t bytes = 0;
    is_int(kiln_fs_disk_usage_at(basefd, "du", &bytes, &err), 0, "du");
    is_int(bytes, (uint64_t)(st.st_blocks + dst.st_blocks) * 512,
           "hard-linked file counted once, directory counted");
    uint64_t one = 0;
    is_int(kiln_fs_disk_usage_at(basefd, "du/f", &one, &err), 0, "du of a file");
    is_int(one, (uint64_t)st.st_blocks * 512, "a file's own blocks");
    is_int(kiln_fs_disk_usage_at(basefd, "nope", &one, &err), -KILN_ENOTFOUND, "du of missing");
    kiln_error_free(err);
}

static void test_stale(void)
{
    struct kiln_error *err = NULL;
    int tfd = -1;
    is_int(kiln_fs_mkdir_p_at(basefd, "tmp", 0755, &tfd, &err), 0, "tmp dir");
    put("tmp/fresh", "f");
    put("tmp/old", "o");
    set_mtime_ago("tmp/old", 7200);
    put("tmp/old-locked", "l");
    set_mtime_ago("tmp/old-locked", 7200);
    mk("tmp/olddir");
    mk("tmp/olddir/sub");
    put("tmp/olddir/sub/f", "x");
    set_mtime_ago("tmp/olddir", 7200);
    mk("tmp/olddir-locked");
    set_mtime_ago("tmp/olddir-locked", 7200);

    _cleanup_free_ char *lp = at("tmp/old-locked");
    int lfd = open(lp, O_RDONLY | O_CLOEXEC);
    ok(lfd >= 0 && flock(lfd, LOCK_EX) == 0, "hold a lock on one old file");
    _cleanup_free_ char *ldp = at("tmp/olddir-locked");
    int ldfd = open(ldp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    ok(ldfd >= 0 && flock(ldfd, LOCK_EX) == 0, "hold a lock on one old directory");

    uint64_t count = 0, bytes = 0;
    is_int(kiln_fs_remove_stale_at(tfd, 3600, &count, &bytes, &err), 0, "sweep");
    is_int(count, 2, "two stale entries removed");
    ok(bytes > 0, "their size is reported");
    ok(!exists("tmp/old") && !exists("tmp/olddir"), "the old unlocked ones are gone");
    ok(exists("tmp/fresh"), "the fresh one stays");
    ok(exists("tmp/old-locked") && exists("tmp/olddir-locked"), "the locked ones stay");

    close(lfd);
    close(ldfd);
    count = 0;
    is_int(kiln_fs_remove_stale_at(tfd, -1, &count, NULL, &err), 0, "sweep of any age");
    is_int(count, 3, "everything unlocked removed");
    is_int(count_entries("tmp"), 0, "tmp is empty");
    close(tfd);
    kiln_error_free(err);
}

static void test_locked_temp(void)
{
    struct kiln_error *err = NULL;
    int tfd = -1;
    kiln_fs_mkdir_p_at(basefd, "lt", 0755, &tfd, &err);
    char name[KILN_FS_RANDOM_NAME_LEN + 1];
    int fd = kiln_fs_create_locked_temp(tfd, false, name, &err);
    ok(fd >= 0 && strlen(name) == KILN_FS_RANDOM_NAME_LEN, "locked temp file created");
    int other = openat(tfd, name, O_RDONLY | O_CLOEXEC);
    ok(other >= 0 && flock(other, LOCK_EX | LOCK_NB) < 0 && errno == EWOULDBLOCK,
       "it is exclusively locked");
    ok((fcntl(fd, F_GETFD) & FD_CLOEXEC) && kiln_fs_write_all(fd, "x", 1) == 0,
       "close-on-exec and writable");
    uint64_t count = 0;
    set_mtime_ago("lt", 0);
    kiln_fs_remove_stale_at(tfd, -1, &count, NULL, &err);
    is_int(count, 0, "a sweep of any age leaves a locked temp alone");
    close(fd);
    if (other >= 0)
        close(other);
    char dname[KILN_FS_RANDOM_NAME_LEN + 1];
    int dfd = kiln_fs_create_locked_temp(tfd, true, dname, &err);
    ok(dfd >= 0 && mkdirat(dfd, "sub", 0755) == 0, "locked temp directory created, usable");
    kiln_fs_remove_stale_at(tfd, -1, &count, NULL, &err);
    is_int(count, 1, "the sweep takes the unlocked file only");
    if (dfd >= 0)
        close(dfd);
    kiln_fs_remove_stale_at(tfd, -1, &count, NULL, &err);
    is_int(count, 2, "and the directory once unlocked");
    close(tfd);
    kiln_error_free(err);
}

/* A file holding `len` bytes of a pattern, opened for reading. */
static int pattern_file(const char *name, size_t len)
{
    char *data = kiln_xmalloc(len + 1);
    for (size_t i = 0; i < len; i++)
        data[i] = (char)('a' + i % 26);
    int fd = openat(basefd, name, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd >= 0 && (kiln_fs_write_all(fd, data, len) < 0 || lseek(fd, 0, SEEK_SET) < 0)) {
        close(fd);
        fd = -1;
    }
    free(data);
    return fd;
}

static void test_read_all(void)
{
    char *got = NULL;
    size_t len = 99;
    int fd = pattern_file("ra-empty", 0);
    ok(kiln_fs_read_all(fd, 10, &got, &len) == 0 && got && got[0] == '\0' && len == 0,
       "read_all: an empty file is an empty string");
    free(got);
    close(fd);

    fd = pattern_file("ra-small", 26);
    got = NULL;
    ok(kiln_fs_read_all(fd, 26, &got, &len) == 0 && len == 26 &&
           strcmp(got, "abcdefghijklmnopqrstuvwxyz") == 0,
       "read_all: exactly max bytes, NUL-terminated");
    free(got);
    close(fd);

    fd = pattern_file("ra-over", 27);
    got = NULL;
    is_int(kiln_fs_read_all(fd, 26, &got, &len), -KILN_ETOOBIG, "read_all: max + 1 is ETOOBIG");
    ok(got == NULL, "read_all: nothing returned when too big");
    close(fd);

    fd = pattern_file("ra-big", 100000);
    got = NULL;
    ok(kiln_fs_read_all(fd, 1 << 20, &got, NULL) == 0 && strlen(got) == 100000 &&
           got[99999] == (char)('a' + 99999 % 26),
       "read_all: 100000 bytes (the buffer grows), ret_len may be NULL");
    free(got);
    is_int(lseek(fd, 0, SEEK_SET), 0, "rewind");
    got = NULL;
    is_int(kiln_fs_read_all(fd, 5000, &got, &len), -KILN_ETOOBIG,
           "read_all: a big file over a small max is ETOOBIG");
    close(fd);

    int p[2];
    ok(pipe(p) == 0, "pipe");
    ok(write(p[1], "from a pipe", 11) == 11, "write to the pipe");
    close(p[1]);
    got = NULL;
    ok(kiln_fs_read_all(p[0], 100, &got, &len) == 0 && len == 11 && !strcmp(got, "from a pipe"),
       "read_all: a pipe, read to its end");
    free(got);
    close(p[0]);

    got = NULL;
    is_int(kiln_fs_read_all(-1, 100, &got, &len), -KILN_EIO, "read_all: a bad fd is EIO");
    ok(got == NULL, "read_all: nothing returned on error");
}

int main(void)
{
    snprintf(base, sizeof(base), "%s/kiln-test-fs.XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(base)) {
        printf("Bail out! mkdtemp\n");
        return 1;
    }
    basefd = open(base, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

    test_random_name();
    test_mkdir_p();
    test_write_atomic();
    test_rm_rf();
    test_rm_rf_unprivileged();
    test_rm_rf_mount();
    test_du();
    test_stale();
    test_locked_temp();
    test_read_all();

    struct kiln_error *err = NULL;
    int pfd = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int r = kiln_fs_rm_rf_at(pfd, base + 1, &err);
    close(pfd);
    ok(r == 0, "clean up the test directory");
    kiln_error_free(err);
    close(basefd);
    return tap_done();
}
