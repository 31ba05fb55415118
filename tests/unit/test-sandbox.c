/*
 * The build sandbox with a real overlay mount and a real runc: needs root,
 * runc and /bin/busybox (a static one); skipped otherwise.
 */
#include "util/common.h"

#include <dirent.h>
#include <fcntl.h>
#include <jansson.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/utsname.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <time.h>

#include "build/overlay.h"
#include "build/runtime.h"
#include "tap.h"
#include "util/buf.h"
#include "util/fs.h"
#include "util/log.h"

#ifndef FSCONFIG_SET_STRING
#define FSCONFIG_SET_STRING 1
#endif
#ifndef FSCONFIG_SET_FD
#define FSCONFIG_SET_FD 5
#endif

static char base[64];
static char lower[128], upper[128], work[128], merged[128], state[128];
static int bundle_counter;

struct capture {
    struct kiln_buf out, err;
};

static void on_line(void *userdata, enum kiln_proc_stream stream, const char *line, size_t len)
{
    struct capture *c = userdata;
    struct kiln_buf *b = stream == KILN_PROC_STDOUT ? &c->out : &c->err;
    kiln_buf_add(b, line, len);
    kiln_buf_addch(b, '\n');
}

static void log_handler(enum kiln_log_level level, const char *msg, void *userdata)
{
    printf("# log: %s\n", msg);
}

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f) {
        perror(path);
        exit(1);
    }
    fputs(text, f);
    fclose(f);
}

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    struct kiln_buf b = KILN_BUF_INIT;
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
        kiln_buf_add(&b, chunk, n);
    fclose(f);
    return kiln_buf_detach(&b, NULL);
}

static int copy_file(const char *from, const char *to, mode_t mode)
{
    int in = open(from, O_RDONLY | O_CLOEXEC);
    if (in < 0)
        return -1;
    int out = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (out < 0) {
        close(in);
        return -1;
    }
    char chunk[65536];
    ssize_t n;
    int r = 0;
    while ((n = read(in, chunk, sizeof(chunk))) > 0)
        if (kiln_fs_write_all(out, chunk, (size_t)n) < 0)
            r = -1;
    if (n < 0)
        r = -1;
    close(in);
    close(out);
    return r;
}

static void mkdir_or_die(const char *path)
{
    if (mkdir(path, 0755) < 0 && errno != EEXIST) {
        perror(path);
        exit(1);
    }
}

static void path_in(char *out, size_t size, const char *dir, const char *name)
{
    snprintf(out, size, "%s/%s", dir, name);
}

static int make_rootfs(void)
{
    static const char *const links[] = {"sh", "echo",  "cat", "id",   "sleep", "touch",
                                        "rm", "mkdir", "ls",  "grep", "cut"};
    char p[256], q[256];
    mkdir_or_die(lower);
    path_in(p, sizeof(p), lower, "bin");
    mkdir_or_die(p);
    path_in(p, sizeof(p), lower, "bin/busybox");
    if (copy_file("/bin/busybox", p, 0755) < 0)
        return -1;
    for (size_t i = 0; i < KILN_ARRAY_SIZE(links); i++) {
        snprintf(q, sizeof(q), "%s/bin/%s", lower, links[i]);
        if (symlink("busybox", q) < 0)
            return -1;
    }
    path_in(p, sizeof(p), lower, "etc");
    mkdir_or_die(p);
    path_in(p, sizeof(p), lower, "etc/file");
    write_file(p, "hello\n");
    path_in(p, sizeof(p), lower, "etc/dir");
    mkdir_or_die(p);
    path_in(p, sizeof(p), lower, "etc/dir/x");
    write_file(p, "x\n");
    path_in(p, sizeof(p), lower, "etc/gone");
    mkdir_or_die(p);
    path_in(p, sizeof(p), lower, "etc/gone/y");
    write_file(p, "y\n");
    return 0;
}

/* Common options for a run in the merged dir; each run gets a fresh bundle dir. */
static void init_opts(struct kiln_run_options *o, const char *const *argv, struct capture *c,
                      char *bundle, size_t bundle_size)
{
    static const char *const env[] = {"PATH=/bin", NULL};
    snprintf(bundle, bundle_size, "%s/bundle-%d", base, ++bundle_counter);
    mkdir_or_die(bundle);
    memset(o, 0, sizeof(*o));
    o->runtime = "runc";
    o->state_dir = state;
    o->bundle_dir = bundle;
    o->rootfs = merged;
    o->argv = argv;
    o->env = env;
    o->on_line = on_line;
    o->userdata = c;
    kiln_buf_release(&c->out);
    kiln_buf_release(&c->err);
}

static int run(struct kiln_run_options *o, int *status, struct kiln_error **err)
{
    *status = -1;
    kiln_error_free(*err);
    *err = NULL;
    int r = kiln_runtime_run(o, status, err);
    if (r < 0)
        printf("# run: %s\n", (*err)->msg);
    return r;
}

static bool is_whiteout(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0 && S_ISCHR(st.st_mode) && major(st.st_rdev) == 0 &&
           minor(st.st_rdev) == 0;
}

static bool exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

/* Processes "sleep 1000" in the cgroup of container `id`. */
static int count_sleepers(const char *id)
{
    DIR *d = opendir("/proc");
    if (!d)
        return -1;
    int n = 0;
    struct dirent *de;
    _cleanup_free_ char *needle = kiln_xasprintf("/%s\n", id);
    while ((de = readdir(d))) {
        if (de->d_name[0] < '0' || de->d_name[0] > '9')
            continue;
        char p[300];
        snprintf(p, sizeof(p), "/proc/%s/cmdline", de->d_name);
        int fd = open(p, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            continue;
        char cmd[64] = {0};
        ssize_t len = read(fd, cmd, sizeof(cmd) - 1);
        close(fd);
        if (len <= 0)
            continue;
        const char *a0 = strrchr(cmd, '/') ? strrchr(cmd, '/') + 1 : cmd;
        size_t l0 = strlen(cmd);
        if (strcmp(a0, "sleep") != 0 || (ssize_t)l0 + 1 >= len || strcmp(cmd + l0 + 1, "1000"))
            continue;
        snprintf(p, sizeof(p), "/proc/%s/cgroup", de->d_name);
        _cleanup_free_ char *cg = read_file(p);
        if (cg && strstr(cg, needle))
            n++;
    }
    closedir(d);
    return n;
}

static bool runc_lists(const char *id)
{
    const char *argv[] = {"runc", "--root", state, "list", "-q", NULL};
    struct capture c = {KILN_BUF_INIT, KILN_BUF_INIT};
    struct kiln_proc_opts po = {.argv = argv, .on_line = on_line, .userdata = &c};
    int status = -1;
    int r = kiln_proc_run(&po, &status, NULL);
    bool found = r < 0 || status != 0 || strstr(c.out.buf, id) != NULL;
    kiln_buf_release(&c.out);
    kiln_buf_release(&c.err);
    return found;
}

static int cancel_after_1s(void *userdata)
{
    long *start = userdata;
    return now_ms() - *start > 1000;
}

struct cancel_capture {
    struct capture c;
    long start;
    const char *id;
    int seen; /* sleepers found while the container ran */
};

static void cancel_on_line(void *userdata, enum kiln_proc_stream stream, const char *line,
                           size_t len)
{
    struct cancel_capture *cc = userdata;
    on_line(&cc->c, stream, line, len);
}

static int cancel_cb(void *userdata)
{
    struct cancel_capture *cc = userdata;
    if (!cancel_after_1s(&cc->start))
        return 0;
    cc->seen = count_sleepers(cc->id);
    return 1;
}

static bool is_overlay(const char *path)
{
    struct statfs sf;
    return statfs(path, &sf) == 0 && sf.f_type == 0x794c7630;
}

/* Is the running kernel at least major.minor? */
static bool kernel_at_least(int major_want, int minor_want)
{
    struct utsname u;
    int ma = 0, mi = 0;
    if (uname(&u) < 0 || sscanf(u.release, "%d.%d", &ma, &mi) != 2)
        return false;
    return ma > major_want || (ma == major_want && mi >= minor_want);
}

static void test_overlay_errors(void)
{
    struct kiln_error *e = NULL;
    const char *none[] = {NULL};
    is_int(kiln_overlay_mount(none, upper, work, merged, &e), -KILN_EINVAL, "no lowers: einval");
    kiln_error_free(e);
    e = NULL;
    const char *bad[][2] = {{"/tmp/a:b", NULL}, {"/tmp/a,b", NULL}, {"/tmp/a\\b", NULL}};
    for (size_t i = 0; i < KILN_ARRAY_SIZE(bad); i++) {
        const char *l[] = {lower, bad[i][0], NULL};
        is_int(kiln_overlay_mount(l, upper, work, merged, &e), -KILN_EINVAL, "lower '%s': einval",
               bad[i][0]);
        kiln_error_free(e);
        e = NULL;
    }
    const char *l1[] = {lower, NULL};
    is_int(kiln_overlay_mount(l1, "/tmp/u:x", work, merged, &e), -KILN_EINVAL, "upper ':' einval");
    kiln_error_free(e);
    e = NULL;

    /* More than overlayfs can stack: refused before any system call. */
    const char *many[KILN_OVERLAY_LOWERS_MAX + 2];
    char names[KILN_OVERLAY_LOWERS_MAX + 1][48];
    for (int i = 0; i <= KILN_OVERLAY_LOWERS_MAX; i++) {
        snprintf(names[i], sizeof(names[i]), "/tmp/kiln-some-lower-layer-path-%03d", i);
        many[i] = names[i];
    }
    many[KILN_OVERLAY_LOWERS_MAX + 1] = NULL;
    is_int(kiln_overlay_mount(many, upper, work, merged, &e), -KILN_ETOOBIG, "501 lowers: etoobig");
    ok(e && strstr(e->msg, "too many layers for overlayfs (501, at most 500)"), "etoobig message");
    ok(!is_overlay(merged), "501 lowers: nothing mounted");
    if (e)
        printf("# %s\n", e->msg);
    kiln_error_free(e);
    e = NULL;

    char missing[160];
    path_in(missing, sizeof(missing), base, "no-such-lower");
    const char *l2[] = {missing, NULL};
    is_int(kiln_overlay_mount(l2, upper, work, merged, &e), -KILN_EIO, "missing lower: eio");
    ok(e && strstr(e->msg, merged) && e->errnum != 0, "mount error names merged and has errno");
    if (kernel_at_least(6, 8))
        ok(e && strstr(e->msg, missing) && e->errnum == ENOENT, "mount error names the lower");
    if (e)
        printf("# %s\n", e->msg);
    kiln_error_free(e);
}

static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)))
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, ".."))
            n++;
    closedir(d);
    return n;
}

/* Lower dirs "<dir>/layer-NNN-xxx...x" (> 100 bytes a name), each with a file layer-NNN. */
static int layer_files_in(const char *dir, int n)
{
    char p[256];
    int seen = 0;
    for (int i = 0; i < n; i++) {
        snprintf(p, sizeof(p), "%s/layer-%03d", dir, i);
        seen += exists(p);
    }
    return seen;
}

/*
 * In a child: make system call `nr` fail with `errnum` (seccomp, for good);
 * with arg1 >= 0, only when its second argument is arg1 (the low 32 bits on
 * a little-endian machine; no architecture check: tests run natively).
 */
static int fail_syscall(long nr, long arg1, int errnum)
{
    unsigned int fail = SECCOMP_RET_ERRNO | ((unsigned int)errnum & SECCOMP_RET_DATA);
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned int)nr, 0, 3),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[1])),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned int)arg1, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, fail),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    if (arg1 < 0) /* skip the argument check */
        f[2] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JA, 1, 0, 0);
    struct sock_fprog prog = {(unsigned short)KILN_ARRAY_SIZE(f), f};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        return -1;
    return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog);
}

struct fallback {
    const char *what;
    long nr, arg1;
    int errnum;
    const char *const *two;  /* two lowers, the second one holding layer-001 */
    const char *const *many; /* 300 lowers, or NULL */
};

/*
 * The mount(2) fallback, in a child where a system call fails: two lowers
 * mount, 300 are too many for one page. Returns a bit mask of the checks
 * that passed (7: all).
 */
static int fallback_child(const struct fallback *fb, const char *up, const char *wk, const char *mg)
{
    char p[256];
    int bits = 0;
    struct kiln_error *e = NULL;
    if (fail_syscall(fb->nr, fb->arg1, fb->errnum) < 0)
        return 0;
    if (kiln_overlay_mount(fb->two, up, wk, mg, &e) == 0) {
        snprintf(p, sizeof(p), "%s/layer-001", mg);
        if (is_overlay(mg) && exists(p))
            bits |= 1;
        if (kiln_overlay_umount(mg, &e) == 0 && !is_overlay(mg))
            bits |= 2;
    } else {
        printf("# %s\n", e->msg);
    }
    if (!fb->many || (kiln_overlay_mount(fb->many, up, wk, mg, &e) == -KILN_ETOOBIG &&
                      strstr(e->msg, "too many layers for one overlay mount (300)")))
        bits |= 4;
    kiln_error_free(e);
    return bits;
}

static void test_fallback(const struct fallback *fb, const char *up, const char *wk, const char *mg)
{
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        exit(1);
    }
    if (pid == 0)
        _exit(fallback_child(fb, up, wk, mg));
    int status = 0;
    waitpid(pid, &status, 0);
    int bits = WIFEXITED(status) ? WEXITSTATUS(status) : 0;
    ok(bits & 1, "%s: two lowers mounted with mount(2)", fb->what);
    ok(bits & 2, "%s: and unmounted", fb->what);
    if (fb->many)
        ok(bits & 4, "%s: 300 lowers too long for mount(2): etoobig", fb->what);
}

static void test_overlay_many(void)
{
    enum { MANY = 300, ALL = KILN_OVERLAY_LOWERS_MAX };
    struct kiln_error *e = NULL;
    char dir[160], up[192], wk[192], mg[192], p[512], q[640];
    path_in(dir, sizeof(dir), base, "many");
    path_in(up, sizeof(up), dir, "upper");
    path_in(wk, sizeof(wk), dir, "work");
    path_in(mg, sizeof(mg), dir, "merged");
    mkdir_or_die(dir);
    mkdir_or_die(up);
    mkdir_or_die(wk);
    mkdir_or_die(mg);
    char filler[101];
    memset(filler, 'x', 100);
    filler[100] = '\0';
    static char *paths[ALL];
    const char *lw[ALL + 1];
    for (int i = 0; i < ALL; i++) {
        paths[i] = kiln_xasprintf("%s/layer-%03d-%s", dir, i, filler);
        mkdir_or_die(paths[i]);
        snprintf(p, sizeof(p), "%s/layer-%03d", paths[i], i);
        write_file(p, "x");
    }
    /* the top layer shadows a file of a lower one */
    snprintf(p, sizeof(p), "%s/shared", paths[0]);
    write_file(p, "top");
    snprintf(p, sizeof(p), "%s/shared", paths[MANY - 1]);
    write_file(p, "bottom");

    size_t total = 0;
    for (int i = 0; i < MANY; i++) {
        lw[i] = paths[i];
        total += strlen(paths[i]) + 1;
    }
    lw[MANY] = NULL;
    ok(total > 30000, "300 lower paths: %zu bytes", total);

    bool add = kernel_at_least(6, 8);
    int r = kiln_overlay_mount(lw, up, wk, mg, &e);
    if (!add) {
        is_int(r, -KILN_ETOOBIG, "300 lowers, no lowerdir+ before linux 6.8: etoobig");
    } else {
        is_int(r, 0, "300 lowers with long paths: mounted");
        if (r < 0)
            printf("# %s\n", e->msg);
        ok(is_overlay(mg), "300 lowers: overlay at merged");
        is_int(layer_files_in(mg, MANY), MANY, "merged shows the files of all 300 layers");
        is_int(count_entries(mg), MANY + 1, "merged shows nothing else");
        char *text = NULL;
        path_in(p, sizeof(p), mg, "shared");
        is_str(text = read_file(p), "top", "the top layer's file wins");
        free(text);
        path_in(p, sizeof(p), mg, "new");
        write_file(p, "new");
        path_in(p, sizeof(p), up, "new");
        ok(exists(p), "a file written to merged lands in upper");
        is_int(kiln_overlay_umount(mg, &e), 0, "300 lowers: umount");
        ok(!is_overlay(mg), "300 lowers: unmounted");

        for (int i = 0; i < ALL; i++)
            lw[i] = paths[i];
        lw[ALL] = NULL;
        is_int(r = kiln_overlay_mount(lw, up, wk, mg, &e), 0, "500 lowers (the limit): mounted");
        if (r < 0)
            printf("# %s\n", e->msg);
        is_int(layer_files_in(mg, ALL), ALL, "merged shows the files of all 500 layers");
        path_in(p, sizeof(p), mg, "shared");
        is_str(text = read_file(p), "top", "500 lowers: the top layer's file wins");
        free(text);
        is_int(kiln_overlay_umount(mg, &e), 0, "500 lowers: umount");
        ok(!is_overlay(mg), "500 lowers: unmounted");
    }

    /* a lower path longer than fsconfig takes as a string (255 bytes) */
    char ys[201];
    memset(ys, 'y', 200);
    ys[200] = '\0';
    path_in(p, sizeof(p), dir, ys);
    mkdir_or_die(p);
    snprintf(q, sizeof(q), "%s/%s", p, filler);
    mkdir_or_die(q);
    ok(strlen(q) > 255, "a lower path of %zu bytes", strlen(q));
    snprintf(p, sizeof(p), "%s/deep", q);
    write_file(p, "deep");
    const char *l4[] = {q, paths[1], NULL};
    is_int(r = kiln_overlay_mount(l4, up, wk, mg, &e), 0, "a lower path over 255 bytes: mounted");
    if (r < 0)
        printf("# %s\n", e->msg);
    path_in(p, sizeof(p), mg, "deep");
    ok(exists(p), "its file shows in merged");
    path_in(p, sizeof(p), mg, "layer-001");
    ok(exists(p), "and the one below");
    is_int(kiln_overlay_umount(mg, &e), 0, "long path: umount");

    /*
     * The mount(2) fallback: no new mount API (ENOSYS), a seccomp filter
     * that does not know it (EPERM), overlayfs through the legacy context
     * (before Linux 6.5: EOPNOTSUPP for FSCONFIG_SET_PATH), no "lowerdir+"
     * (EINVAL), no FSCONFIG_SET_FD for it (before Linux 6.13: EINVAL).
     */
    const char *two[] = {paths[0], paths[1], NULL};
    const char *two_long[] = {q, paths[1], NULL};
    lw[MANY] = NULL;
    const struct fallback fbs[] = {
        {"fsopen enosys", SYS_fsopen, -1, ENOSYS, two, lw},
        {"fsopen eperm", SYS_fsopen, -1, EPERM, two, lw},
        {"fsconfig eopnotsupp", SYS_fsconfig, -1, EOPNOTSUPP, two, lw},
        {"fsconfig set-string einval", SYS_fsconfig, FSCONFIG_SET_STRING, EINVAL, two, lw},
        {"fsconfig set-fd einval", SYS_fsconfig, FSCONFIG_SET_FD, EINVAL, two_long, NULL},
    };
    for (size_t i = 0; i < KILN_ARRAY_SIZE(fbs); i++)
        test_fallback(&fbs[i], up, wk, mg);

    /* a lower missing in the middle: nothing mounted, the error names it */
    char missing[256];
    path_in(missing, sizeof(missing), dir, "no-such-layer");
    const char *l3[] = {paths[0], paths[1], missing, paths[2], NULL};
    is_int(kiln_overlay_mount(l3, up, wk, mg, &e), -KILN_EIO, "a missing middle lower: eio");
    if (add)
        ok(e && strstr(e->msg, missing) && strstr(e->msg, mg) && e->errnum == ENOENT,
           "the error names the missing lower and merged");
    if (e)
        printf("# %s\n", e->msg);
    ok(!is_overlay(mg), "missing lower: nothing mounted");

    for (int i = 0; i < ALL; i++)
        free(paths[i]);
    kiln_error_free(e);
}

static void test_detect(void)
{
    struct kiln_error *e = NULL;
    char *p = NULL;
    is_int(kiln_runtime_detect(NULL, &p, &e), 0, "detect: some runtime");
    ok(p && p[0] == '/', "detect: absolute path '%s'", p ? p : "");
    free(p);
    p = NULL;
    is_int(kiln_runtime_detect("runc", &p, &e), 0, "detect runc");
    ok(p && p[0] == '/' && strstr(p, "/runc"), "runc path '%s'", p ? p : "");
    free(p);
    p = NULL;
    is_int(kiln_runtime_detect("/nonexistent/runc", &p, &e), -KILN_ENOTFOUND, "missing path");
    kiln_error_free(e);
    e = NULL;
    is_int(kiln_runtime_detect("kiln-no-such-runtime", &p, &e), -KILN_ENOTFOUND, "missing name");
    kiln_error_free(e);
    e = NULL;
    is_int(kiln_runtime_detect("/bin/false", &p, &e), -KILN_EIO, "broken runtime: eio");
    if (e)
        printf("# %s\n", e->msg);
    kiln_error_free(e);
}

static json_t *load_config(const char *bundle)
{
    char p[300];
    path_in(p, sizeof(p), bundle, "config.json");
    return json_load_file(p, 0, NULL);
}

static bool has_string(json_t *arr, const char *s)
{
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v)
    {
        if (json_is_string(v) && !strcmp(json_string_value(v), s))
            return true;
    }
    return false;
}

static bool has_namespace(json_t *c, const char *type)
{
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(json_object_get(c, "linux"), "namespaces"), i, v)
    {
        if (!strcmp(json_string_value(json_object_get(v, "type")), type))
            return true;
    }
    return false;
}

static void test_config(void)
{
    struct capture c = {KILN_BUF_INIT, KILN_BUF_INIT};
    char bundle[160];
    struct kiln_run_options o;
    const char *argv[] = {"/bin/true", NULL};
    struct kiln_error *e = NULL;
    init_opts(&o, argv, &c, bundle, sizeof(bundle));
    is_int(kiln_runtime_write_config(&o, &e), 0, "write config");
    json_t *j = load_config(bundle);
    ok(j != NULL, "config.json parses");
    json_t *lx = json_object_get(j, "linux");
    ok(!json_object_get(lx, "cgroupsPath") && !json_object_get(lx, "resources") &&
           !json_object_get(lx, "seccomp"),
       "no cgroupsPath, resources, seccomp");
    ok(!has_namespace(j, "cgroup") && has_namespace(j, "network") && has_namespace(j, "pid") &&
           has_namespace(j, "mount"),
       "namespaces");
    json_t *caps = json_object_get(json_object_get(j, "process"), "capabilities");
    ok(has_string(json_object_get(caps, "bounding"), "CAP_CHOWN") &&
           json_array_size(json_object_get(caps, "effective")) == 14,
       "root capabilities");
    is_str(json_string_value(json_object_get(j, "ociVersion")), "1.0.2", "ociVersion");
    json_decref(j);

    o.uid = 1000;
    o.gid = 100;
    o.host_network = true;
    is_int(kiln_runtime_write_config(&o, &e), 0, "write config uid 1000");
    j = load_config(bundle);
    json_t *proc = json_object_get(j, "process");
    caps = json_object_get(proc, "capabilities");
    ok(json_array_size(json_object_get(caps, "bounding")) == 0 &&
           json_array_size(json_object_get(caps, "permitted")) == 0 &&
           json_is_true(json_object_get(proc, "noNewPrivileges")),
       "no capabilities and noNewPrivileges for uid 1000");
    ok(!has_namespace(j, "network"), "host network: no network namespace");
    json_decref(j);

    o.rootfs = "relative/root";
    is_int(kiln_runtime_write_config(&o, &e), -KILN_EINVAL, "relative rootfs: einval");
    kiln_error_free(e);
    e = NULL;
    o.rootfs = merged;
    const char *bad_env[] = {"NOEQUALS", NULL};
    o.env = bad_env;
    is_int(kiln_runtime_write_config(&o, &e), -KILN_EINVAL, "env without '=': einval");
    kiln_error_free(e);
    e = NULL;
    const char *bad_utf8[] = {"/bin/echo", "\xff\xfe", NULL};
    o.env = NULL;
    o.argv = bad_utf8;
    is_int(kiln_runtime_write_config(&o, &e), -KILN_EINVAL, "non-UTF-8 argument: einval");
    kiln_error_free(e);
    e = NULL;
    o.argv = argv;
    o.id = "bad id/";
    int status = -1;
    is_int(kiln_runtime_run(&o, &status, &e), -KILN_EINVAL, "bad container id: einval");
    kiln_error_free(e);
}

static void test_runs(void)
{
    struct capture c = {KILN_BUF_INIT, KILN_BUF_INIT};
    struct kiln_error *e = NULL;
    char bundle[160], p[300];
    struct kiln_run_options o;
    int status;

    /* argv verbatim */
    const char *args[] = {"/bin/sh",   "-c",   "printf \"%s\\n\" \"$@\"", "x", "a b",
                          "\"q\" 'z'", "$(x)", "back\\slash *",           "",  "end",
                          NULL};
    init_opts(&o, args, &c, bundle, sizeof(bundle));
    is_int(run(&o, &status, &e), 0, "argv run");
    is_int(status, 0, "argv status 0");
    is_str(c.out.buf, "a b\n\"q\" 'z'\n$(x)\nback\\slash *\n\nend\n", "args arrive verbatim");

    /* exit status and streams */
    const char *exit7[] = {"/bin/sh", "-c", "echo out; echo err >&2; exit 7", NULL};
    init_opts(&o, exit7, &c, bundle, sizeof(bundle));
    is_int(run(&o, &status, &e), 0, "exit 7 run");
    is_int(status, 7, "exit status 7");
    is_str(c.out.buf, "out\n", "stdout line");
    is_str(c.err.buf, "err\n", "stderr line");

    /* env and cwd */
    const char *envcwd[] = {"/bin/sh", "-c", "echo \"$FOO\"; pwd", NULL};
    const char *env[] = {"FOO=bar  baz", "PATH=/bin", NULL};
    init_opts(&o, envcwd, &c, bundle, sizeof(bundle));
    o.env = env;
    o.cwd = "/etc";
    is_int(run(&o, &status, &e), 0, "env run");
    is_str(c.out.buf, "bar  baz\n/etc\n", "env and cwd arrive");

    /* default env: PATH only */
    const char *relname[] = {"sh", "-c", "echo $PATH", NULL};
    init_opts(&o, relname, &c, bundle, sizeof(bundle));
    o.env = NULL;
    is_int(run(&o, &status, &e), 0, "default env run");
    is_str(c.out.buf, KILN_RUNTIME_PATH "\n", "default PATH");

    /* users */
    const char *ids[] = {"/bin/sh", "-c", "id -u; id -g; grep CapEff /proc/self/status", NULL};
    init_opts(&o, ids, &c, bundle, sizeof(bundle));
    is_int(run(&o, &status, &e), 0, "uid 0 run");
    is_str(c.out.buf, "0\n0\nCapEff:\t00000000a80425fb\n", "uid 0, gid 0, docker capabilities");
    const char *ids2[] = {"/bin/sh", "-c",
                          "id -u; id -g; id -G; grep -E 'CapEff|CapBnd|NoNewPrivs' "
                          "/proc/self/status",
                          NULL};
    uint32_t groups[] = {27};
    init_opts(&o, ids2, &c, bundle, sizeof(bundle));
    o.uid = 1000;
    o.gid = 100;
    o.additional_gids = groups;
    o.n_additional_gids = 1;
    is_int(run(&o, &status, &e), 0, "uid 1000 run");
    is_str(
        c.out.buf,
        "1000\n100\n100 27\nCapEff:\t0000000000000000\nCapBnd:\t0000000000000000\nNoNewPrivs:\t1\n",
        "uid 1000, gid 100, groups, no capabilities");

    /* hostname */
    const char *hn[] = {"/bin/cat", "/proc/sys/kernel/hostname", NULL};
    init_opts(&o, hn, &c, bundle, sizeof(bundle));
    is_int(run(&o, &status, &e), 0, "hostname run");
    is_str(c.out.buf, "kiln\n", "default hostname");
    init_opts(&o, hn, &c, bundle, sizeof(bundle));
    o.hostname = "step-1";
    is_int(run(&o, &status, &e), 0, "hostname run");
    is_str(c.out.buf, "step-1\n", "hostname");

    /* network */
    const char *netdev[] = {"/bin/sh", "-c", "cat /proc/net/dev | grep : | cut -d: -f1", NULL};
    init_opts(&o, netdev, &c, bundle, sizeof(bundle));
    is_int(run(&o, &status, &e), 0, "net dev run");
    is_str(c.out.buf, "    lo\n", "no host network: only lo");
    path_in(p, sizeof(p), upper, "etc/resolv.conf");
    ok(!exists(p), "no resolv.conf made without host network");

    _cleanup_free_ char *host_resolv = read_file("/etc/resolv.conf");
    const char *resolv[] = {"/bin/cat", "/etc/resolv.conf", NULL};
    init_opts(&o, resolv, &c, bundle, sizeof(bundle));
    o.host_network = true;
    is_int(run(&o, &status, &e), 0, "host network run");
    if (host_resolv) {
        is_str(c.out.buf, host_resolv, "resolv.conf is the host's");
        ok(exists(p), "runc created /etc/resolv.conf (empty) in the upper dir");
    } else {
        ok(1, "# SKIP no /etc/resolv.conf on the host");
        ok(1, "# SKIP no /etc/resolv.conf on the host");
    }
    const char *netdev2[] = {"/bin/sh", "-c", "cat /proc/net/dev | grep -c :", NULL};
    init_opts(&o, netdev2, &c, bundle, sizeof(bundle));
    o.host_network = true;
    is_int(run(&o, &status, &e), 0, "host network dev run");
    ok(strtol(c.out.buf, NULL, 10) >= 1, "host network: %ld interfaces",
       strtol(c.out.buf, NULL, 10));

    /* binds */
    char rw[160], ro[160];
    path_in(rw, sizeof(rw), base, "cache-rw");
    path_in(ro, sizeof(ro), base, "cache-ro");
    mkdir_or_die(rw);
    mkdir_or_die(ro);
    path_in(p, sizeof(p), ro, "f");
    write_file(p, "ro-data\n");
    struct kiln_bind binds[] = {{rw, "/cache/rw", false}, {ro, "/cache/ro", true}};
    const char *wr[] = {"/bin/sh", "-c", "echo data > /cache/rw/new && cat /cache/ro/f", NULL};
    init_opts(&o, wr, &c, bundle, sizeof(bundle));
    o.binds = binds;
    o.n_binds = 2;
    is_int(run(&o, &status, &e), 0, "bind run");
    is_int(status, 0, "rw bind written");
    is_str(c.out.buf, "ro-data\n", "ro bind readable");
    path_in(p, sizeof(p), rw, "new");
    _cleanup_free_ char *got = read_file(p);
    is_str(got, "data\n", "rw bind write reaches the host");
    const char *wro[] = {"/bin/touch", "/cache/ro/x", NULL};
    init_opts(&o, wro, &c, bundle, sizeof(bundle));
    o.binds = binds;
    o.n_binds = 2;
    is_int(run(&o, &status, &e), 0, "ro bind run");
    ok(status != 0 && strstr(c.err.buf, "Read-only"), "ro bind refuses writes (status %d)", status);
    path_in(p, sizeof(p), ro, "x");
    ok(!exists(p), "nothing written to the ro bind");

    /* read-only root */
    const char *rofs[] = {"/bin/touch", "/newfile", NULL};
    init_opts(&o, rofs, &c, bundle, sizeof(bundle));
    o.readonly_rootfs = true;
    is_int(run(&o, &status, &e), 0, "ro rootfs run");
    ok(status != 0, "read-only rootfs refuses writes (status %d)", status);
    path_in(p, sizeof(p), upper, "newfile");
    ok(!exists(p), "no file in upper");

    /* overlay whiteouts */
    const char *ov[] = {"/bin/sh", "-c",
                        "rm /etc/file && rm -rf /etc/dir && mkdir /etc/dir && echo n > /etc/dir/n "
                        "&& rm -rf /etc/gone && ls /etc/dir",
                        NULL};
    init_opts(&o, ov, &c, bundle, sizeof(bundle));
    is_int(run(&o, &status, &e), 0, "overlay run");
    is_int(status, 0, "overlay changes made");
    is_str(c.out.buf, "n\n", "recreated dir holds only the new file");
    path_in(p, sizeof(p), upper, "etc/file");
    ok(is_whiteout(p), "deleted file: whiteout in upper");
    path_in(p, sizeof(p), upper, "etc/gone");
    ok(is_whiteout(p), "deleted dir: whiteout in upper");
    path_in(p, sizeof(p), upper, "etc/dir");
    char xv[8] = {0};
    ssize_t xn = lgetxattr(p, "trusted.overlay.opaque", xv, sizeof(xv) - 1);
    ok(xn == 1 && xv[0] == 'y', "recreated dir: trusted.overlay.opaque=y");
    path_in(p, sizeof(p), lower, "etc/file");
    ok(exists(p), "lower file untouched");
    path_in(p, sizeof(p), lower, "etc/dir/x");
    ok(exists(p), "lower dir untouched");
    path_in(p, sizeof(p), lower, "etc/gone/y");
    ok(exists(p), "lower deleted dir untouched");

    /* missing program */
    const char *nope[] = {"/nope", "arg", NULL};
    init_opts(&o, nope, &c, bundle, sizeof(bundle));
    is_int(run(&o, &status, &e), -KILN_ENOTFOUND, "missing program: enotfound");
    ok(e && strstr(e->msg, "/nope"), "message names the program");
    const char *nope2[] = {"nope", NULL};
    init_opts(&o, nope2, &c, bundle, sizeof(bundle));
    is_int(run(&o, &status, &e), -KILN_ENOTFOUND, "missing program in PATH: enotfound");

    kiln_buf_release(&c.out);
    kiln_buf_release(&c.err);
    kiln_error_free(e);
}

static void test_stop(bool cancel)
{
    struct cancel_capture cc = {{KILN_BUF_INIT, KILN_BUF_INIT}, 0, NULL, -1};
    struct kiln_error *e = NULL;
    char bundle[160], id[64];
    struct kiln_run_options o;
    const char *argv[] = {"sleep", "1000", NULL};
    snprintf(id, sizeof(id), "kiln-test-%s-%ld", cancel ? "cancel" : "timeout", (long)getpid());
    init_opts(&o, argv, &cc.c, bundle, sizeof(bundle));
    o.id = id;
    cc.id = id;
    o.userdata = &cc;
    o.on_line = cancel_on_line;
    if (cancel)
        o.cancelled = cancel_cb;
    else
        o.timeout_ms = 1500;
    int status = -1;
    cc.start = now_ms();
    int r = kiln_runtime_run(&o, &status, &e);
    long took = now_ms() - cc.start;
    const char *what = cancel ? "cancel" : "timeout";
    is_int(r, cancel ? -KILN_ECANCELLED : -KILN_ETIMEOUT, "%s: error code", what);
    if (e)
        printf("# %s\n", e->msg);
    ok(took < 8000, "%s: returned after %ld ms", what, took);
    if (cancel)
        is_int(cc.seen, 1, "%s: the scan saw 'sleep 1000' while the container ran", what);
    is_int(count_sleepers(id), 0, "%s: no 'sleep 1000' left in the container", what);
    ok(!runc_lists(id), "%s: runc list shows no container", what);
    kiln_buf_release(&cc.c.out);
    kiln_buf_release(&cc.c.err);
    kiln_error_free(e);
}

static void test_umount(void)
{
    struct kiln_error *e = NULL;
    is_int(kiln_overlay_umount(merged, &e), 0, "umount");
    struct statfs sf;
    ok(statfs(merged, &sf) == 0 && sf.f_type != 0x794c7630, "no overlay at merged any more");
    is_int(kiln_overlay_umount(merged, &e), 0, "second umount is fine");
    char p[160];
    path_in(p, sizeof(p), base, "never-made");
    is_int(kiln_overlay_umount(p, &e), 0, "umount of a missing path is fine");
    is_int(kiln_overlay_umount(base, &e), 0, "umount of a plain dir is fine");
    kiln_error_free(e);
}

int main(void)
{
    if (geteuid() != 0) {
        printf("1..0 # SKIP needs root (overlay mounts, runc)\n");
        return 0;
    }
    char *runc = NULL;
    if (kiln_runtime_detect("runc", &runc, NULL) < 0) {
        printf("1..0 # SKIP runc not found\n");
        return 0;
    }
    free(runc);
    if (access("/bin/busybox", X_OK) < 0) {
        printf("1..0 # SKIP /bin/busybox not found\n");
        return 0;
    }
    kiln_log_set_handler(log_handler, NULL, KILN_LOG_DEBUG);

    snprintf(base, sizeof(base), "/tmp/kiln-sandbox-XXXXXX");
    if (!mkdtemp(base)) {
        perror("mkdtemp");
        return 1;
    }
    path_in(lower, sizeof(lower), base, "lower");
    path_in(upper, sizeof(upper), base, "upper");
    path_in(work, sizeof(work), base, "work");
    path_in(merged, sizeof(merged), base, "merged");
    path_in(state, sizeof(state), base, "state");
    mkdir_or_die(upper);
    mkdir_or_die(work);
    mkdir_or_die(merged);
    ok(make_rootfs() == 0, "rootfs made");

    test_detect();
    test_overlay_errors();
    test_overlay_many();
    struct kiln_error *e = NULL;
    const char *lowers[] = {lower, NULL};
    int r = kiln_overlay_mount(lowers, upper, work, merged, &e);
    is_int(r, 0, "overlay mounted");
    if (r < 0) {
        printf("# %s\n", e->msg);
        kiln_error_free(e);
        return tap_done();
    }
    test_config();
    test_runs();
    test_stop(false);
    test_stop(true);
    test_umount();

    int tmp = open("/tmp", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    ok(kiln_fs_rm_rf_at(tmp, base + strlen("/tmp/"), &e) == 0, "cleanup");
    close(tmp);
    kiln_error_free(e);
    return tap_done();
}
