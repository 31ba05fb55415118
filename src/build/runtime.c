#include "util/common.h"
#include "build/runtime.h"

#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <linux/capability.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/vfs.h>
#include <time.h>

#include "util/buf.h"
#include "util/fs.h"
#include "util/log.h"

#ifndef CGROUP2_SUPER_MAGIC
#define CGROUP2_SUPER_MAGIC 0x63677270
#endif

#define LOG_NAME         "runtime-log.json"
#define LOG_READ_MAX     ((size_t)256 << 10)
#define ERR_LINE_MAX     1024
#define CONTROL_TIMEOUT  30000L
#define KILL_RETRY_MS    250L
#define KILL_TRIES       8
#define ID_MAX           128
#define NOFILE_LIMIT     1048576
#define DEFAULT_HOSTNAME "kiln"

static const char *const runtime_env[] = {"PATH=" KILN_RUNTIME_PATH, NULL};

static const char *const root_caps[] = {"CAP_CHOWN",
                                        "CAP_DAC_OVERRIDE",
                                        "CAP_FSETID",
                                        "CAP_FOWNER",
                                        "CAP_MKNOD",
                                        "CAP_NET_RAW",
                                        "CAP_SETGID",
                                        "CAP_SETUID",
                                        "CAP_SETFCAP",
                                        "CAP_SETPCAP",
                                        "CAP_NET_BIND_SERVICE",
                                        "CAP_SYS_CHROOT",
                                        "CAP_KILL",
                                        "CAP_AUDIT_WRITE",
                                        NULL};

static const char *const masked_paths[] = {"/proc/asound",
                                           "/proc/acpi",
                                           "/proc/kcore",
                                           "/proc/keys",
                                           "/proc/latency_stats",
                                           "/proc/timer_list",
                                           "/proc/timer_stats",
                                           "/proc/sched_debug",
                                           "/proc/scsi",
                                           "/sys/firmware",
                                           "/sys/devices/virtual/powercap",
                                           NULL};

static const char *const readonly_paths[] = {
    "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger", NULL};

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

/* ---- running the runtime's control commands ---- */

struct last_line {
    struct kiln_buf line; /* the last stderr line, capped */
    void (*fwd)(void *userdata, enum kiln_proc_stream stream, const char *line, size_t len);
    void *fwd_userdata;
};

static void keep_last_line(void *userdata, enum kiln_proc_stream stream, const char *line,
                           size_t len)
{
    struct last_line *l = userdata;
    if (l->fwd)
        l->fwd(l->fwd_userdata, stream, line, len);
    if (stream != KILN_PROC_STDERR || len == 0)
        return;
    kiln_buf_reset(&l->line);
    kiln_buf_add(&l->line, line, len < ERR_LINE_MAX ? len : ERR_LINE_MAX);
}

/*
 * Run a short control command (--version, kill, delete) with its output
 * dropped; the last stderr line goes to *ret_line (may be NULL; the caller
 * frees it). Returns kiln_proc_run's result and status.
 */
static int run_control(const char *const *argv, int *ret_status, char **ret_line,
                       struct kiln_error **err)
{
    struct last_line l = {KILN_BUF_INIT, NULL, NULL};
    struct kiln_proc_opts po = {
        .argv = argv,
        .envp = runtime_env,
        .on_line = keep_last_line,
        .userdata = &l,
        .timeout_ms = CONTROL_TIMEOUT,
    };
    int status = -1;
    int r = kiln_proc_run(&po, &status, err);
    *ret_status = status;
    if (ret_line)
        *ret_line = kiln_buf_detach(&l.line, NULL);
    kiln_buf_release(&l.line);
    return r;
}

/* ---- detection ---- */

static bool is_executable(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, X_OK) == 0;
}

/* Look `name` up in KILN_RUNTIME_PATH; a malloc'd path or NULL. */
static char *find_program(const char *name)
{
    const char *p = KILN_RUNTIME_PATH;
    while (*p) {
        size_t n = strcspn(p, ":");
        char *cand = kiln_xasprintf("%.*s/%s", (int)n, p, name);
        if (is_executable(cand))
            return cand;
        free(cand);
        p += n;
        if (*p == ':')
            p++;
    }
    return NULL;
}

static bool pure_cgroup2(void)
{
    struct statfs sf;
    return statfs("/sys/fs/cgroup", &sf) == 0 &&
           (unsigned long)sf.f_type == (unsigned long)CGROUP2_SUPER_MAGIC;
}

int kiln_runtime_detect(const char *forced, char **ret, struct kiln_error **err)
{
    _cleanup_free_ char *path = NULL;
    if (!forced) {
        char *crun = find_program("crun");
        if (crun && pure_cgroup2()) {
            *ret = crun;
            return 0;
        }
        char *runc = find_program("runc");
        if (runc) {
            free(crun);
            *ret = runc;
            return 0;
        }
        if (crun) {
            *ret = crun;
            return 0;
        }
        return kiln_error_set(err, KILN_ENOTFOUND, 0,
                              "no OCI runtime found (install runc or crun)");
    }
    if (!*forced)
        return kiln_error_set(err, KILN_EINVAL, 0, "OCI runtime name is empty");
    if (!strchr(forced, '/')) {
        path = find_program(forced);
        if (!path)
            return kiln_error_set(err, KILN_ENOTFOUND, 0, "OCI runtime '%s' not found in %s",
                                  forced, KILN_RUNTIME_PATH);
    } else {
        if (forced[0] == '/') {
            path = kiln_xstrdup(forced);
        } else {
            char *abs = realpath(forced, NULL);
            if (!abs)
                return kiln_error_set(err, KILN_ENOTFOUND, errno, "OCI runtime '%s'", forced);
            path = abs;
        }
        if (!is_executable(path))
            return kiln_error_set(err, KILN_ENOTFOUND, 0,
                                  "OCI runtime '%s' not found or not executable", forced);
    }
    const char *argv[] = {path, "--version", NULL};
    int status = -1;
    _cleanup_free_ char *line = NULL;
    int r = run_control(argv, &status, &line, err);
    if (r < 0)
        return kiln_error_prefix(err, "OCI runtime '%s'", forced);
    if (status != 0)
        return kiln_error_set(
            err, KILN_EIO, 0,
            "OCI runtime '%s' does not work: '--version' exited with status %d%s%s", path, status,
            *line ? ": " : "", line);
    *ret = TAKE_PTR(path);
    return 0;
}

/* ---- config.json ---- */

static int add_string(json_t *arr, const char *s, const char *what, struct kiln_error **err)
{
    json_t *v = json_string(s);
    if (!v)
        return kiln_error_set(err, KILN_EINVAL, 0, "%s '%s' is not valid UTF-8", what, s);
    json_array_append_new(arr, v);
    return 0;
}

static int set_string(json_t *obj, const char *key, const char *s, const char *what,
                      struct kiln_error **err)
{
    json_t *v = json_string(s);
    if (!v)
        return kiln_error_set(err, KILN_EINVAL, 0, "%s '%s' is not valid UTF-8", what, s);
    json_object_set_new(obj, key, v);
    return 0;
}

static json_t *string_array(const char *const *v)
{
    json_t *a = json_array();
    for (size_t i = 0; v[i]; i++)
        json_array_append_new(a, json_string(v[i]));
    return a;
}

static json_t *mount_entry(const char *dest, const char *type, const char *source,
                           const char *const *options)
{
    json_t *m = json_object();
    json_object_set_new(m, "destination", json_string(dest));
    json_object_set_new(m, "type", json_string(type));
    json_object_set_new(m, "source", json_string(source));
    json_object_set_new(m, "options", string_array(options));
    return m;
}

static int add_bind(json_t *mounts, const char *source, const char *dest, bool readonly,
                    struct kiln_error **err)
{
    static const char *const rw[] = {"bind", "rbind", NULL};
    static const char *const ro[] = {"bind", "rbind", "ro", NULL};
    if (!source || source[0] != '/')
        return kiln_error_set(err, KILN_EINVAL, 0, "bind mount source '%s' is not absolute",
                              source ? source : "");
    if (!dest || dest[0] != '/')
        return kiln_error_set(err, KILN_EINVAL, 0, "bind mount destination '%s' is not absolute",
                              dest ? dest : "");
    json_t *m = json_object();
    json_array_append_new(mounts, m);
    int r;
    if ((r = set_string(m, "destination", dest, "bind mount destination", err)) < 0 ||
        (r = set_string(m, "type", "bind", "type", err)) < 0 ||
        (r = set_string(m, "source", source, "bind mount source", err)) < 0)
        return r;
    json_object_set_new(m, "options", string_array(readonly ? ro : rw));
    return 0;
}

static json_t *capabilities(bool root)
{
    static const char *const none[] = {NULL};
    const char *const *caps = root ? root_caps : none;
    json_t *c = json_object();
    json_object_set_new(c, "bounding", string_array(caps));
    json_object_set_new(c, "effective", string_array(caps));
    json_object_set_new(c, "permitted", string_array(caps));
    if (!root) {
        json_object_set_new(c, "inheritable", json_array());
        json_object_set_new(c, "ambient", json_array());
    }
    return c;
}

static bool have_sys_resource(void)
{
    struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct d[_LINUX_CAPABILITY_U32S_3];
    if (syscall(SYS_capget, &h, d) < 0)
        return false;
    return d[CAP_SYS_RESOURCE / 32].effective & (1u << (CAP_SYS_RESOURCE % 32));
}

static uint64_t read_nr_open(void)
{
    _cleanup_close_ int fd = open("/proc/sys/fs/nr_open", O_RDONLY | O_CLOEXEC);
    char text[32];
    ssize_t n = fd >= 0 ? read(fd, text, sizeof(text) - 1) : -1;
    if (n <= 0)
        return UINT64_MAX;
    text[n] = '\0';
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    return errno || end == text || v == 0 ? UINT64_MAX : (uint64_t)v;
}

/*
 * RLIMIT_NOFILE for the process: NOFILE_LIMIT, but never above what the
 * runtime can set: the kernel's nr_open and, without CAP_SYS_RESOURCE (a
 * root that is itself in a restricted container), our own hard limit.
 */
static uint64_t nofile_limit(void)
{
    uint64_t limit = NOFILE_LIMIT;
    uint64_t nr_open = read_nr_open();
    if (nr_open < limit)
        limit = nr_open;
    struct rlimit rl;
    if (!have_sys_resource() && getrlimit(RLIMIT_NOFILE, &rl) == 0 &&
        rl.rlim_max != RLIM_INFINITY && (uint64_t)rl.rlim_max < limit)
        limit = (uint64_t)rl.rlim_max;
    return limit;
}

static int build_process(const struct kiln_run_options *o, json_t *proc, struct kiln_error **err)
{
    int r;
    json_object_set_new(proc, "terminal", json_false());
    json_t *user = json_object();
    json_object_set_new(proc, "user", user);
    json_object_set_new(user, "uid", json_integer(o->uid));
    json_object_set_new(user, "gid", json_integer(o->gid));
    if (o->n_additional_gids) {
        json_t *g = json_array();
        for (size_t i = 0; i < o->n_additional_gids; i++)
            json_array_append_new(g, json_integer(o->additional_gids[i]));
        json_object_set_new(user, "additionalGids", g);
    }

    json_t *args = json_array();
    json_object_set_new(proc, "args", args);
    for (size_t i = 0; o->argv[i]; i++)
        if ((r = add_string(args, o->argv[i], "argument", err)) < 0)
            return r;

    json_t *env = json_array();
    json_object_set_new(proc, "env", env);
    const char *const *ev = o->env ? o->env : runtime_env;
    for (size_t i = 0; ev[i]; i++) {
        const char *eq = strchr(ev[i], '=');
        if (!eq || eq == ev[i])
            return kiln_error_set(err, KILN_EINVAL, 0,
                                  "environment entry '%s' is not of the form NAME=value", ev[i]);
        if ((r = add_string(env, ev[i], "environment entry", err)) < 0)
            return r;
    }

    const char *cwd = o->cwd ? o->cwd : "/";
    if (cwd[0] != '/')
        return kiln_error_set(err, KILN_EINVAL, 0, "working directory '%s' is not absolute", cwd);
    if ((r = set_string(proc, "cwd", cwd, "working directory", err)) < 0)
        return r;

    json_object_set_new(proc, "capabilities", capabilities(o->uid == 0));
    if (o->uid != 0)
        json_object_set_new(proc, "noNewPrivileges", json_true());

    json_t *rl = json_object();
    json_object_set_new(rl, "type", json_string("RLIMIT_NOFILE"));
    uint64_t nofile = nofile_limit();
    json_object_set_new(rl, "hard", json_integer((json_int_t)nofile));
    json_object_set_new(rl, "soft", json_integer((json_int_t)nofile));
    json_t *rls = json_array();
    json_array_append_new(rls, rl);
    json_object_set_new(proc, "rlimits", rls);
    return 0;
}

static int build_mounts(const struct kiln_run_options *o, json_t *mounts, struct kiln_error **err)
{
    static const char *const proc_opts[] = {"nosuid", "noexec", "nodev", NULL};
    static const char *const dev_opts[] = {"nosuid", "strictatime", "mode=755", "size=65536k",
                                           NULL};
    static const char *const pts_opts[] = {"nosuid",    "noexec", "newinstance", "ptmxmode=0666",
                                           "mode=0620", "gid=5",  NULL};
    static const char *const shm_opts[] = {"nosuid",    "noexec",      "nodev",
                                           "mode=1777", "size=65536k", NULL};
    static const char *const mq_opts[] = {"nosuid", "noexec", "nodev", NULL};
    static const char *const sys_opts[] = {"nosuid", "noexec", "nodev", "ro", NULL};
    static const char *const host_files[] = {"/etc/resolv.conf", "/etc/hosts", NULL};
    int r;

    json_array_append_new(mounts, mount_entry("/proc", "proc", "proc", proc_opts));
    json_array_append_new(mounts, mount_entry("/dev", "tmpfs", "tmpfs", dev_opts));
    json_array_append_new(mounts, mount_entry("/dev/pts", "devpts", "devpts", pts_opts));
    json_array_append_new(mounts, mount_entry("/dev/shm", "tmpfs", "shm", shm_opts));
    json_array_append_new(mounts, mount_entry("/dev/mqueue", "mqueue", "mqueue", mq_opts));
    json_array_append_new(mounts, mount_entry("/sys", "sysfs", "sysfs", sys_opts));
    if (o->host_network) {
        for (size_t i = 0; host_files[i]; i++) {
            struct stat st;
            /* follows a symlink such as systemd-resolved's: the bind takes its target */
            if (stat(host_files[i], &st) == 0 && S_ISREG(st.st_mode) &&
                (r = add_bind(mounts, host_files[i], host_files[i], true, err)) < 0)
                return r;
        }
    }
    for (size_t i = 0; i < o->n_binds; i++)
        if ((r = add_bind(mounts, o->binds[i].source, o->binds[i].destination, o->binds[i].readonly,
                          err)) < 0)
            return r;
    return 0;
}

static json_t *build_linux(const struct kiln_run_options *o)
{
    json_t *lx = json_object();
    json_t *ns = json_array();
    const char *types[] = {"pid", "ipc", "uts", "mount", o->host_network ? NULL : "network"};
    for (size_t i = 0; i < KILN_ARRAY_SIZE(types); i++) {
        if (!types[i])
            continue;
        json_t *n = json_object();
        json_object_set_new(n, "type", json_string(types[i]));
        json_array_append_new(ns, n);
    }
    json_object_set_new(lx, "namespaces", ns);
    json_object_set_new(lx, "maskedPaths", string_array(masked_paths));
    json_object_set_new(lx, "readonlyPaths", string_array(readonly_paths));
    return lx;
}

static int build_config(const struct kiln_run_options *o, json_t **ret, struct kiln_error **err)
{
    if (!o->rootfs || o->rootfs[0] != '/')
        return kiln_error_set(err, KILN_EINVAL, 0, "root file system '%s' is not absolute",
                              o->rootfs ? o->rootfs : "");
    if (!o->argv || !o->argv[0] || !o->argv[0][0])
        return kiln_error_set(err, KILN_EINVAL, 0, "no program to run");

    json_t *c = json_object();
    json_object_set_new(c, "ociVersion", json_string("1.0.2"));
    json_t *root = json_object();
    json_object_set_new(c, "root", root);
    json_t *proc = json_object();
    json_object_set_new(c, "process", proc);
    json_t *mounts = json_array();
    json_object_set_new(c, "mounts", mounts);
    int r;
    if ((r = set_string(root, "path", o->rootfs, "root file system", err)) < 0 ||
        (r = build_process(o, proc, err)) < 0 ||
        (r = set_string(c, "hostname", o->hostname ? o->hostname : DEFAULT_HOSTNAME, "hostname",
                        err)) < 0 ||
        (r = build_mounts(o, mounts, err)) < 0) {
        json_decref(c);
        return r;
    }
    json_object_set_new(root, "readonly", json_boolean(o->readonly_rootfs));
    json_object_set_new(c, "linux", build_linux(o));
    *ret = c;
    return 0;
}

int kiln_runtime_write_config(const struct kiln_run_options *o, struct kiln_error **err)
{
    if (!o->bundle_dir || !*o->bundle_dir)
        return kiln_error_set(err, KILN_EINVAL, 0, "no bundle directory");
    json_t *c = NULL;
    int r = build_config(o, &c, err);
    if (r < 0)
        return r;
    char *text = json_dumps(c, JSON_INDENT(2));
    json_decref(c);
    if (!text)
        return kiln_error_set(err, KILN_EINTERNAL, 0, "cannot serialise the runtime config");
    _cleanup_close_ int dfd = open(o->bundle_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        r = kiln_error_set(err, KILN_EIO, errno, "open bundle directory '%s'", o->bundle_dir);
    else
        r = kiln_fs_write_atomic(dfd, "config.json", text, strlen(text), 0644, err);
    free(text);
    if (r < 0)
        return kiln_error_prefix(err, "write '%s/config.json'", o->bundle_dir);
    return 0;
}

/* ---- running ---- */

static bool valid_id(const char *id)
{
    size_t n = strlen(id);
    if (n == 0 || n > ID_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = id[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.' || c == '+' || c == '-'))
            return false;
    }
    return true;
}

static char *make_id(void)
{
    static unsigned long counter;
    unsigned long n = __atomic_fetch_add(&counter, 1, __ATOMIC_RELAXED);
    char rnd[KILN_FS_RANDOM_NAME_LEN + 1];
    kiln_fs_random_name(rnd);
    return kiln_xasprintf("kiln-%ld-%lu-%.8s", (long)getpid(), n, rnd);
}

struct run_state {
    const struct kiln_run_options *o;
    const char *runtime;
    const char *id;
    long deadline; /* 0: none */
    int why;       /* KILN_ETIMEOUT or KILN_ECANCELLED once stopping */
    long next_kill;
    int kills;
    bool killed;
};

static void kill_container(struct run_state *s)
{
    const char *argv[] = {s->runtime, "--root", s->o->state_dir, "kill", s->id, "KILL", NULL};
    struct kiln_error *e = NULL;
    _cleanup_free_ char *line = NULL;
    int status = -1;
    int r = run_control(argv, &status, &line, &e);
    if (r >= 0 && status == 0) {
        s->killed = true;
    } else {
        kiln_log(KILN_LOG_DEBUG, "runtime: kill container '%s': %s", s->id,
                 r < 0 ? e->msg : (line && *line ? line : "failed"));
    }
    kiln_error_free(e);
}

/*
 * kiln_proc_run's cancel poll. On timeout or cancel, kill the container
 * through the runtime first (the runtime forwards SIGTERM to pid 1, which
 * ignores it); only then, or when the kill keeps failing (the container may
 * not exist yet), let kiln_proc_run stop the runtime's process group.
 */
static int poll_stop(void *userdata)
{
    struct run_state *s = userdata;
    long t = now_ms();
    if (!s->why) {
        if (s->deadline && t >= s->deadline)
            s->why = KILN_ETIMEOUT;
        else if (s->o->cancelled && s->o->cancelled(s->o->userdata))
            s->why = KILN_ECANCELLED;
        else
            return 0;
    }
    if (!s->killed && t >= s->next_kill) {
        s->kills++;
        kill_container(s);
        s->next_kill = now_ms() + KILL_RETRY_MS;
    }
    return s->killed || s->kills >= KILL_TRIES;
}

static void forward_line(void *userdata, enum kiln_proc_stream stream, const char *line, size_t len)
{
    const struct run_state *s = userdata;
    if (s->o->on_line)
        s->o->on_line(s->o->userdata, stream, line, len);
}

/* The last error message in the runtime's JSON log (malloc'd), or NULL. */
static char *log_error(const char *path)
{
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return NULL;
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
        return NULL;
    off_t start = st.st_size > (off_t)LOG_READ_MAX ? st.st_size - (off_t)LOG_READ_MAX : 0;
    struct kiln_buf b = KILN_BUF_INIT;
    kiln_buf_init(&b, LOG_READ_MAX);
    char chunk[8192];
    ssize_t n;
    while ((n = pread(fd, chunk, sizeof(chunk), start)) > 0 && !b.err) {
        kiln_buf_add(&b, chunk, (size_t)n);
        start += n;
    }
    char *msg = NULL;
    size_t i = 0;
    while (i < b.len) {
        size_t end = i;
        while (end < b.len && b.buf[end] != '\n')
            end++;
        json_t *j = json_loadb(b.buf + i, end - i, 0, NULL);
        const char *level = json_string_value(json_object_get(j, "level"));
        const char *m = json_string_value(json_object_get(j, "msg"));
        if (level && m && (!strcmp(level, "error") || !strcmp(level, "fatal"))) {
            free(msg);
            msg = kiln_xstrdup(m);
        }
        json_decref(j);
        i = end + 1;
    }
    kiln_buf_release(&b);
    return msg;
}

static void delete_container(const char *runtime, const char *state_dir, const char *id)
{
    const char *argv[] = {runtime, "--root", state_dir, "delete", "--force", id, NULL};
    struct kiln_error *e = NULL;
    _cleanup_free_ char *line = NULL;
    int status = -1;
    int r = run_control(argv, &status, &line, &e);
    if (r < 0 || status != 0)
        kiln_log(KILN_LOG_WARN, "runtime: delete container '%s': %s", id,
                 r < 0 ? e->msg : (line && *line ? line : "failed"));
    kiln_error_free(e);
}

static const char *base_name(const char *path)
{
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

static bool exec_not_found(const char *msg)
{
    return strcasestr(msg, "exec") &&
           (strcasestr(msg, "no such file or directory") || strcasestr(msg, "not found"));
}

int kiln_runtime_run(const struct kiln_run_options *o, int *ret_status, struct kiln_error **err)
{
    int r;
    if (!o->state_dir || !*o->state_dir)
        return kiln_error_set(err, KILN_EINVAL, 0, "no runtime state directory");
    if (o->id && !valid_id(o->id))
        return kiln_error_set(err, KILN_EINVAL, 0, "container id '%s' is not valid", o->id);
    if (o->cancelled && o->cancelled(o->userdata))
        return kiln_error_set(err, KILN_ECANCELLED, 0, "container run cancelled");

    _cleanup_free_ char *runtime = NULL;
    if ((r = kiln_runtime_detect(o->runtime, &runtime, err)) < 0)
        return r;
    if ((r = kiln_runtime_write_config(o, err)) < 0)
        return r;
    if ((r = kiln_fs_mkdir_p_path(o->state_dir, 0700, NULL, err)) < 0)
        return kiln_error_prefix(err, "runtime state directory");
    _cleanup_free_ char *id = o->id ? kiln_xstrdup(o->id) : make_id();
    _cleanup_free_ char *log_path = kiln_xasprintf("%s/%s", o->bundle_dir, LOG_NAME);
    if (unlink(log_path) < 0 && errno != ENOENT)
        return kiln_error_set(err, KILN_EIO, errno, "remove '%s'", log_path);

    const char *argv[] = {runtime, "--root", o->state_dir, "--log",       log_path, "--log-format",
                          "json",  "run",    "--bundle",   o->bundle_dir, id,       NULL};
    struct run_state s = {
        .o = o,
        .runtime = runtime,
        .id = id,
        .deadline = o->timeout_ms > 0 ? now_ms() + o->timeout_ms : 0,
    };
    struct kiln_proc_opts po = {
        .argv = argv,
        .envp = runtime_env,
        .cwd = o->bundle_dir,
        .on_line = forward_line,
        .userdata = &s, /* shared by both callbacks */
        .cancelled = poll_stop,
    };
    int status = -1;
    struct kiln_error *perr = NULL;
    r = kiln_proc_run(&po, &status, &perr);
    /* the runtime removes a container whose process ended; this catches the rest */
    delete_container(runtime, o->state_dir, id);

    if (s.why) {
        kiln_error_free(perr);
        if (s.why == KILN_ETIMEOUT)
            return kiln_error_set(err, KILN_ETIMEOUT, 0, "container '%s' timed out after %ld ms",
                                  id, o->timeout_ms);
        return kiln_error_set(err, KILN_ECANCELLED, 0, "container '%s' cancelled", id);
    }
    if (r < 0) {
        if (err) {
            kiln_error_free(*err);
            *err = perr;
        } else {
            kiln_error_free(perr);
        }
        return r;
    }
    if (status != 0) {
        _cleanup_free_ char *msg = log_error(log_path);
        if (msg)
            return kiln_error_set(err, exec_not_found(msg) ? KILN_ENOTFOUND : KILN_EIO, 0,
                                  "%s could not run container '%s': %s", base_name(runtime), id,
                                  msg);
    }
    *ret_status = status;
    return 0;
}
