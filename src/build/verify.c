#include "util/common.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "build/overlay.h"
#include "build/runtime.h"
#include "build/verify.h"
#include "util/fs.h"
#include "util/strv.h"

#define PASSWD_MAX         ((size_t)4 << 20)
#define DEFAULT_TIMEOUT_MS 60000

static const char *const check_names[] = {"none", "user", "home", "run"};

const char *kiln_verify_check_name(enum kiln_verify_check c)
{
    return (unsigned)c < 4 ? check_names[c] : "?";
}

/* Read a file of the image, resolving its path inside the root. */
static char *read_in_root(int rootfd, const char *path)
{
    struct open_how how = {
        .flags = O_RDONLY | O_CLOEXEC,
        .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
    };
    int fd = (int)syscall(SYS_openat2, rootfd, path, &how, sizeof(how));
    if (fd < 0)
        return NULL;
    struct kiln_buf b = KILN_BUF_INIT;
    kiln_buf_init(&b, PASSWD_MAX);
    char chunk[8192];
    ssize_t n;
    while ((n = read(fd, chunk, sizeof(chunk))) > 0)
        if (kiln_buf_add(&b, chunk, (size_t)n) < 0)
            break;
    close(fd);
    if (n < 0 || b.err) {
        kiln_buf_release(&b);
        return NULL;
    }
    return kiln_buf_detach(&b, NULL);
}

static bool parse_id(const char *s, uint32_t *ret)
{
    if (!*s)
        return false;
    uint64_t v = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return false;
        v = v * 10 + (uint64_t)(*s - '0');
        if (v > UINT32_MAX)
            return false;
    }
    *ret = (uint32_t)v;
    return true;
}

/*
 * Find a passwd (7 fields) or group (4 fields) entry whose name (field 0)
 * or id (field 2) is `key`; copy its fields into f (pointers into a copy
 * the caller frees through *ret_line).
 */
static bool find_entry(const char *text, const char *key, bool by_id, size_t want_fields,
                       char **ret_line, char *f[7])
{
    if (!text)
        return false;
    const char *p = text;
    while (*p) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        char *line = kiln_xstrndup(p, len);
        size_t nf = 0;
        char *q = line;
        while (nf < want_fields) {
            f[nf++] = q;
            char *colon = strchr(q, ':');
            if (!colon)
                break;
            *colon = 0;
            q = colon + 1;
        }
        if (nf == want_fields && !strcmp(by_id ? f[2] : f[0], key)) {
            *ret_line = line;
            return true;
        }
        free(line);
        p += len + (nl ? 1 : 0);
    }
    return false;
}

/* Copy src into dst, cut to cap - 1 bytes. */
static void copy_to(char *dst, size_t cap, const char *src)
{
    size_t n = src ? strnlen(src, cap - 1) : 0;
    if (n)
        memcpy(dst, src, n);
    dst[n] = '\0';
}

static int fail(struct kiln_verify_report *rep, enum kiln_verify_check c, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(struct kiln_verify_report *rep, enum kiln_verify_check c, const char *fmt, ...)
{
    rep->ready = false;
    rep->failed = c;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(rep->reason, sizeof(rep->reason), fmt, ap);
    va_end(ap);
    return 0;
}

/* Resolve config.User in the image. */
static int resolve_user(int rootfd, const char *user, struct kiln_verify_report *rep)
{
    _cleanup_free_ char *u = kiln_xstrdup(user ? user : "");
    char *group = strchr(u, ':');
    if (group)
        *group++ = 0;
    _cleanup_free_ char *passwd = read_in_root(rootfd, "/etc/passwd");
    _cleanup_free_ char *pline = NULL;
    char *pf[7];
    uint32_t uid = 0;
    bool numeric = parse_id(u, &uid);
    bool found = find_entry(passwd, u, numeric, 7, &pline, pf);
    if (!found && !numeric)
        return fail(rep, KILN_VERIFY_USER, "user '%s' is not in the image's /etc/passwd", u);
    if (found && !parse_id(pf[2], &uid))
        return fail(rep, KILN_VERIFY_USER, "user '%s' has a bad uid in /etc/passwd", u);
    uint32_t gid = 0;
    if (found && !parse_id(pf[3], &gid))
        return fail(rep, KILN_VERIFY_USER, "user '%s' has a bad gid in /etc/passwd", u);
    if (group && *group && !parse_id(group, &gid)) {
        _cleanup_free_ char *groups = read_in_root(rootfd, "/etc/group");
        _cleanup_free_ char *gline = NULL;
        char *gf[7];
        if (!find_entry(groups, group, false, 4, &gline, gf) || !parse_id(gf[2], &gid))
            return fail(rep, KILN_VERIFY_USER, "group '%s' is not in the image's /etc/group",
                        group);
    }
    rep->uid = uid;
    rep->gid = gid;
    if (found)
        copy_to(rep->home, sizeof(rep->home), pf[5]);
    if (uid == 0)
        return fail(rep, KILN_VERIFY_USER,
                    "the image runs as root (config.User '%s'): JupyterHub's single-user "
                    "servers should run as a normal user (uid 1000)",
                    user ? user : "");
    if (uid != 1000)
        snprintf(rep->warning, sizeof(rep->warning),
                 "the image's user has uid %u, not 1000 as JupyterHub images usually do",
                 (unsigned)uid);
    return 1;
}

struct run_capture {
    const struct kiln_verify_options *o;
    char first[256];
    char last[256];
    bool have_first;
};

static void capture_line(void *ud, enum kiln_proc_stream stream, const char *line, size_t len)
{
    struct run_capture *rc = ud;
    if (!rc->have_first && stream == KILN_PROC_STDOUT) {
        snprintf(rc->first, sizeof(rc->first), "%.*s", (int)len, line);
        rc->have_first = true;
    }
    snprintf(rc->last, sizeof(rc->last), "%.*s", (int)len, line);
    if (rc->o->on_line)
        rc->o->on_line(rc->o->userdata, stream, line, len);
}

static int capture_cancelled(void *ud)
{
    const struct run_capture *rc = ud;
    return rc->o->cancelled && rc->o->cancelled(rc->o->userdata);
}

static int run_as_user(const struct kiln_verify_options *o, const struct kiln_verify_report *rep,
                       const char *merged, const char *name, const char *const *argv,
                       const char *const *env, const char *cwd, struct run_capture *cap,
                       int *ret_status, struct kiln_error **err)
{
    _cleanup_free_ char *bundle = kiln_xasprintf("%s/bundle-%s", o->work_dir, name);
    int r = kiln_fs_mkdir_p_path(bundle, 0700, NULL, err);
    if (r < 0)
        return r;
    struct kiln_run_options ro = {
        .runtime = o->runtime,
        .state_dir = o->state_dir,
        .bundle_dir = bundle,
        .rootfs = merged,
        .argv = argv,
        .env = env,
        .cwd = cwd,
        .uid = rep->uid,
        .gid = rep->gid,
        .hostname = "kiln-verify",
        .host_network = false,
        .timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : DEFAULT_TIMEOUT_MS,
        .cancelled = capture_cancelled,
        .on_line = capture_line,
        .userdata = cap,
    };
    return kiln_runtime_run(&ro, ret_status, err);
}

static const char home_script[] =
    "h=\"$1\"\n"
    "[ -d \"$h\" ] || { echo \"home directory $h does not exist\"; exit 3; }\n"
    "t=\"$h/.kiln-verify.$$\"\n"
    "( : > \"$t\" ) 2>/dev/null || { echo \"uid $(id -u) cannot create files in $h\"; exit 4; }\n"
    "rm -f \"$t\" || { echo \"uid $(id -u) cannot remove files in $h\"; exit 5; }\n";

static int checks(const struct kiln_verify_options *o, const char *merged,
                  struct kiln_verify_report *rep, struct kiln_error **err)
{
    _cleanup_close_ int rootfd = open(merged, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (rootfd < 0)
        return kiln_error_set(err, KILN_EIO, errno, "open '%s'", merged);
    const char *user = kiln_image_config_get(o->config, KILN_IC_USER);
    copy_to(rep->user, sizeof(rep->user), user);
    int r = resolve_user(rootfd, user, rep);
    if (r <= 0)
        return r;

    /* the environment: the image's, with HOME when it has none */
    struct kiln_strv env = KILN_STRV_INIT;
    kiln_image_config_env(o->config, &env);
    const char *home_env = kiln_image_config_env_get(o->config, "HOME");
    if (!rep->home[0])
        copy_to(rep->home, sizeof(rep->home), home_env ? home_env : "/");
    if (!home_env) {
        kiln_strv_push_take(&env, kiln_xasprintf("HOME=%s", rep->home));
        home_env = rep->home;
    }
    if (!kiln_image_config_env_get(o->config, "PATH"))
        kiln_strv_push(&env, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");

    int status = 0;
    struct run_capture cap = {.o = o};
    const char *hargv[] = {"/bin/sh", "-c", home_script, "kiln-verify", home_env, NULL};
    r = run_as_user(o, rep, merged, "home", hargv, (const char *const *)env.v, "/", &cap, &status,
                    err);
    if (r < 0)
        goto out;
    if (status != 0) {
        fail(rep, KILN_VERIFY_HOME, "%s",
             status == 127 || !cap.last[0] ? "cannot run /bin/sh in the image to check the home"
                                           : cap.last);
        goto out;
    }

    const char *wd = kiln_image_config_get(o->config, KILN_IC_WORKING_DIR);
    struct run_capture vcap = {.o = o};
    const char *vargv[] = {"jupyterhub-singleuser", "--version", NULL};
    r = run_as_user(o, rep, merged, "run", vargv, (const char *const *)env.v, wd && *wd ? wd : "/",
                    &vcap, &status, err);
    if (r < 0)
        goto out;
    if (status != 0) {
        fail(rep, KILN_VERIFY_RUN, "`jupyterhub-singleuser --version` as uid %u exited with %d%s%s",
             (unsigned)rep->uid, status, vcap.last[0] ? ": " : "", vcap.last);
        goto out;
    }
    copy_to(rep->version, sizeof(rep->version), vcap.first);
    rep->ready = true;
    rep->failed = KILN_VERIFY_NONE;
out:
    kiln_strv_release(&env);
    return r < 0 ? r : 0;
}

int kiln_verify_run(const struct kiln_verify_options *o, struct kiln_verify_report *ret,
                    struct kiln_error **err)
{
    struct kiln_verify_report rep;
    memset(&rep, 0, sizeof(rep));
    _cleanup_free_ char *upper = kiln_xasprintf("%s/upper", o->work_dir);
    _cleanup_free_ char *work = kiln_xasprintf("%s/work", o->work_dir);
    _cleanup_free_ char *merged = kiln_xasprintf("%s/merged", o->work_dir);
    int r;
    if ((r = kiln_fs_mkdir_p_path(upper, 0755, NULL, err)) < 0 ||
        (r = kiln_fs_mkdir_p_path(work, 0700, NULL, err)) < 0 ||
        (r = kiln_fs_mkdir_p_path(merged, 0755, NULL, err)) < 0)
        return r;
    if ((r = kiln_overlay_mount(o->lowers, upper, work, merged, err)) < 0)
        return r;
    r = checks(o, merged, &rep, err);
    struct kiln_error *uerr = NULL;
    if (kiln_overlay_umount(merged, &uerr) < 0 && r >= 0)
        r = kiln_error_set(err, KILN_EIO, 0, "%s", uerr->msg);
    kiln_error_free(uerr);
    if (r >= 0 && ret)
        *ret = rep;
    return r < 0 ? r : 0;
}
