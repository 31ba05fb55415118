#include "util/common.h"
#include "build/overlay.h"

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#include "util/buf.h"
#include "util/log.h"

/* Mount data is copied into one page by the kernel, NUL included. */
#define OPTIONS_MAX 4095

/* fsconfig(FSCONFIG_SET_STRING) copies at most 256 bytes, NUL included. */
#define FSCONFIG_STRING_MAX 255

/* The kernel's buffer for one fs context log message is smaller than this. */
#define FSCONTEXT_MSG_MAX 1024

#ifndef OVERLAYFS_SUPER_MAGIC
#define OVERLAYFS_SUPER_MAGIC 0x794c7630
#endif

/* The new mount API's constants, for headers older than glibc 2.36. */
#ifndef FSOPEN_CLOEXEC
#define FSOPEN_CLOEXEC 0x00000001
#endif
#ifndef FSMOUNT_CLOEXEC
#define FSMOUNT_CLOEXEC 0x00000001
#endif
#ifndef MOVE_MOUNT_F_EMPTY_PATH
#define MOVE_MOUNT_F_EMPTY_PATH 0x00000004
#endif
#ifndef FSCONFIG_SET_STRING
#define FSCONFIG_SET_STRING 1
#endif
#ifndef FSCONFIG_SET_PATH
#define FSCONFIG_SET_PATH 3
#endif
#ifndef FSCONFIG_SET_FD
#define FSCONFIG_SET_FD 5
#endif
#ifndef FSCONFIG_CMD_CREATE
#define FSCONFIG_CMD_CREATE 6
#endif

#define UMOUNT_TRIES    10
#define UMOUNT_RETRY_MS 100

/* mount_fsconfig(): the kernel cannot make this mount with the new API. */
#define USE_MOUNT2 1

/*
 * Raw system calls: glibc has wrappers only since 2.36, and a syscall()
 * number missing from old headers turns into ENOSYS (and the fallback).
 */
static int sys_fsopen(const char *fstype, unsigned int flags)
{
#ifdef SYS_fsopen
    return (int)syscall(SYS_fsopen, fstype, flags);
#else
    (void)fstype;
    (void)flags;
    errno = ENOSYS;
    return -1;
#endif
}

static int sys_fsconfig(int fd, unsigned int cmd, const char *key, const void *value, int aux)
{
#ifdef SYS_fsconfig
    return (int)syscall(SYS_fsconfig, fd, cmd, key, value, aux);
#else
    (void)fd;
    (void)cmd;
    (void)key;
    (void)value;
    (void)aux;
    errno = ENOSYS;
    return -1;
#endif
}

static int sys_fsmount(int fd, unsigned int flags, unsigned int attr_flags)
{
#ifdef SYS_fsmount
    return (int)syscall(SYS_fsmount, fd, flags, attr_flags);
#else
    (void)fd;
    (void)flags;
    (void)attr_flags;
    errno = ENOSYS;
    return -1;
#endif
}

static int sys_move_mount(int from_dfd, const char *from, int to_dfd, const char *to,
                          unsigned int flags)
{
#ifdef SYS_move_mount
    return (int)syscall(SYS_move_mount, from_dfd, from, to_dfd, to, flags);
#else
    (void)from_dfd;
    (void)from;
    (void)to_dfd;
    (void)to;
    (void)flags;
    errno = ENOSYS;
    return -1;
#endif
}

static int check_path(const char *what, const char *path, struct kiln_error **err)
{
    if (!path || !*path)
        return kiln_error_set(err, KILN_EINVAL, 0, "overlay %s path is empty", what);
    const char *bad = strpbrk(path, ":,\\");
    if (bad)
        return kiln_error_set(err, KILN_EINVAL, 0, "overlay %s path '%s' contains '%c'", what, path,
                              *bad);
    return 0;
}

/*
 * The last message the kernel left in the fs context's log ("e overlay:
 * failed to resolve ..."), without its level prefix and newline, into msg
 * (empty when there is none). Reading consumes the messages.
 */
static void context_msg(int fs, char *msg, size_t size)
{
    char buf[FSCONTEXT_MSG_MAX];
    ssize_t n;
    msg[0] = '\0';
    for (int i = 0; i < 16; i++) {
        n = read(fs, buf, sizeof(buf) - 1);
        if (n < 0 && errno == EMSGSIZE)
            continue;
        if (n <= 0)
            break;
        buf[n] = '\0';
        while (n > 0 && buf[n - 1] == '\n')
            buf[--n] = '\0';
        const char *text = buf;
        if (n >= 2 && buf[1] == ' ' && strchr("ewi", buf[0]))
            text += 2;
        snprintf(msg, size, "%s", text);
    }
}

/*
 * Set *err for a failed step of the new mount API ("fsconfig lowerdir+
 * '/x'"), adding the kernel's own words from the context log when fs >= 0.
 */
static int fs_error(int fs, int errnum, const char *merged, const char *step,
                    struct kiln_error **err)
{
    char msg[FSCONTEXT_MSG_MAX];
    msg[0] = '\0';
    if (fs >= 0)
        context_msg(fs, msg, sizeof(msg));
    if (msg[0])
        return kiln_error_set(err, KILN_EIO, errnum, "mount overlay at '%s': %s (kernel: %s)",
                              merged, step, msg);
    return kiln_error_set(err, KILN_EIO, errnum, "mount overlay at '%s': %s", merged, step);
}

/*
 * Pass a directory to the context under `key`. A path too long for
 * FSCONFIG_SET_STRING is passed as an open directory (FSCONFIG_SET_FD, Linux
 * 6.13); a kernel that refuses that (EINVAL) leaves the mount to mount(2),
 * as does one that does not know "lowerdir+" (Linux 6.5 to 6.7: EINVAL,
 * "Unknown parameter", on the first lower layer).
 */
static int set_dir(int fs, const char *key, const char *path, bool first_lower, const char *merged,
                   struct kiln_error **err)
{
    _cleanup_free_ char *step = kiln_xasprintf("fsconfig %s '%s'", key, path);
    if (strlen(path) > FSCONFIG_STRING_MAX) {
        _cleanup_close_ int dfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0)
            return kiln_error_set(err, KILN_EIO, errno, "mount overlay at '%s': open %s '%s'",
                                  merged, key, path);
        if (sys_fsconfig(fs, FSCONFIG_SET_FD, key, NULL, dfd) == 0)
            return 0;
        if (errno == EINVAL)
            return USE_MOUNT2;
        return fs_error(fs, errno, merged, step, err);
    }
    if (sys_fsconfig(fs, FSCONFIG_SET_STRING, key, path, 0) == 0)
        return 0;
    int errnum = errno;
    if (first_lower && errnum == EINVAL) {
        char msg[FSCONTEXT_MSG_MAX];
        context_msg(fs, msg, sizeof(msg));
        if (!msg[0] || strstr(msg, "Unknown parameter"))
            return USE_MOUNT2;
        return kiln_error_set(err, KILN_EIO, errnum, "mount overlay at '%s': %s (kernel: %s)",
                              merged, step, msg);
    }
    return fs_error(fs, errnum, merged, step, err);
}

static int set_string(int fs, const char *key, const char *value, const char *merged,
                      struct kiln_error **err)
{
    if (sys_fsconfig(fs, FSCONFIG_SET_STRING, key, value, 0) == 0)
        return 0;
    int errnum = errno;
    _cleanup_free_ char *step = kiln_xasprintf("fsconfig %s=%s", key, value);
    return fs_error(fs, errnum, merged, step, err);
}

/*
 * The new mount API: one fsconfig() per lower layer, so neither the page
 * limit of mount(2) nor its escaping applies. 0 when mounted, USE_MOUNT2
 * when this kernel cannot do it, or an error.
 */
static int mount_fsconfig(const char *const *lowers, size_t n, const char *upper, const char *work,
                          const char *merged, struct kiln_error **err)
{
    int r;
    _cleanup_close_ int fs = sys_fsopen("overlay", FSOPEN_CLOEXEC);
    if (fs < 0) {
        /* EPERM: a seccomp filter that does not know the call; mount(2) decides */
        if (errno == ENOSYS || errno == EPERM)
            return USE_MOUNT2;
        return fs_error(-1, errno, merged, "fsopen", err);
    }
    /*
     * Before Linux 6.5 overlayfs took its options through the legacy
     * context, which accepts any key and fails only at create time. It
     * refuses FSCONFIG_SET_PATH before looking at the key (EOPNOTSUPP);
     * overlayfs's own parser knows no such key (EINVAL, nothing set).
     */
    if (sys_fsconfig(fs, FSCONFIG_SET_PATH, "kiln-probe", "/", AT_FDCWD) == 0 ||
        errno == EOPNOTSUPP)
        return USE_MOUNT2;
    char drain[FSCONTEXT_MSG_MAX];
    context_msg(fs, drain, sizeof(drain));

    for (size_t i = 0; i < n; i++)
        if ((r = set_dir(fs, "lowerdir+", lowers[i], i == 0, merged, err)) != 0)
            return r;
    if ((r = set_dir(fs, "upperdir", upper, false, merged, err)) != 0 ||
        (r = set_dir(fs, "workdir", work, false, merged, err)) != 0)
        return r;
    if ((r = set_string(fs, "index", "off", merged, err)) < 0 ||
        (r = set_string(fs, "redirect_dir", "off", merged, err)) < 0 ||
        (r = set_string(fs, "metacopy", "off", merged, err)) < 0)
        return r;
    if (sys_fsconfig(fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0)
        return fs_error(fs, errno, merged, "fsconfig create", err);
    _cleanup_close_ int mnt = sys_fsmount(fs, FSMOUNT_CLOEXEC, 0);
    if (mnt < 0)
        return fs_error(fs, errno, merged, "fsmount", err);
    /* Closing mnt after a failed move drops the detached mount. */
    if (sys_move_mount(mnt, "", AT_FDCWD, merged, MOVE_MOUNT_F_EMPTY_PATH) < 0)
        return fs_error(-1, errno, merged, "move_mount", err);
    return 0;
}

/* mount(2) with one option string: at most one page, so ~40 store layers. */
static int mount_data(const char *const *lowers, size_t n, const char *upper, const char *work,
                      const char *merged, struct kiln_error **err)
{
    struct kiln_buf opts = KILN_BUF_INIT;
    kiln_buf_init(&opts, OPTIONS_MAX);
    kiln_buf_adds(&opts, "lowerdir=");
    for (size_t i = 0; i < n; i++) {
        if (i)
            kiln_buf_addch(&opts, ':');
        kiln_buf_adds(&opts, lowers[i]);
    }
    kiln_buf_addf(&opts, ",upperdir=%s,workdir=%s,index=off,redirect_dir=off,metacopy=off", upper,
                  work);
    if (opts.err) {
        kiln_buf_release(&opts);
        return kiln_error_set(err, KILN_ETOOBIG, 0, "too many layers for one overlay mount (%zu)",
                              n);
    }
    int r = 0;
    if (mount("overlay", merged, "overlay", 0, opts.buf) < 0)
        r = kiln_error_set(err, KILN_EIO, errno, "mount overlay at '%s' (%zu lower layers)", merged,
                           n);
    kiln_buf_release(&opts);
    return r;
}

int kiln_overlay_mount(const char *const *lowers, const char *upper, const char *work,
                       const char *merged, struct kiln_error **err)
{
    int r;
    if (!lowers || !lowers[0])
        return kiln_error_set(err, KILN_EINVAL, 0, "overlay needs at least one lower layer");
    if (!merged || !*merged)
        return kiln_error_set(err, KILN_EINVAL, 0, "overlay mount point path is empty");
    size_t n = 0;
    for (; lowers[n]; n++)
        if ((r = check_path("lower layer", lowers[n], err)) < 0)
            return r;
    if ((r = check_path("upper", upper, err)) < 0 || (r = check_path("work", work, err)) < 0)
        return r;
    if (n > KILN_OVERLAY_LOWERS_MAX)
        return kiln_error_set(err, KILN_ETOOBIG, 0,
                              "too many layers for overlayfs (%zu, at most %d)", n,
                              KILN_OVERLAY_LOWERS_MAX);

    r = mount_fsconfig(lowers, n, upper, work, merged, err);
    if (r != USE_MOUNT2)
        return r;
    kiln_log(KILN_LOG_DEBUG, "overlay at '%s': no \"lowerdir+\" in this kernel, using mount(2)",
             merged);
    return mount_data(lowers, n, upper, work, merged, err);
}

int kiln_overlay_umount(const char *merged, struct kiln_error **err)
{
    struct statfs sf;
    if (!merged || !*merged)
        return kiln_error_set(err, KILN_EINVAL, 0, "overlay mount point path is empty");
    if (statfs(merged, &sf) < 0) {
        if (errno == ENOENT || errno == ENOTDIR)
            return 0;
        return kiln_error_set(err, KILN_EIO, errno, "statfs '%s'", merged);
    }
    /* Whatever else is mounted there is not ours to remove. */
    if ((unsigned long)sf.f_type != (unsigned long)OVERLAYFS_SUPER_MAGIC)
        return 0;
    for (int i = 0; i < UMOUNT_TRIES; i++) {
        if (umount2(merged, UMOUNT_NOFOLLOW) == 0)
            return 0;
        /* EINVAL: not a mount point (e.g. a directory inside another overlay) */
        if (errno == EINVAL || errno == ENOENT)
            return 0;
        if (errno != EBUSY)
            return kiln_error_set(err, KILN_EIO, errno, "unmount overlay at '%s'", merged);
        struct timespec ts = {0, UMOUNT_RETRY_MS * 1000000L};
        nanosleep(&ts, NULL);
    }
    if (umount2(merged, MNT_DETACH | UMOUNT_NOFOLLOW) == 0 || errno == EINVAL)
        return 0;
    return kiln_error_set(err, KILN_EIO, errno, "unmount overlay at '%s' (detach)", merged);
}
