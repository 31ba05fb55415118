#include "util/common.h"
#include "build/overlay.h"

#include <sys/mount.h>
#include <sys/vfs.h>
#include <time.h>

#include "util/buf.h"

/* Mount data is copied into one page by the kernel, NUL included. */
#define OPTIONS_MAX 4095

#ifndef OVERLAYFS_SUPER_MAGIC
#define OVERLAYFS_SUPER_MAGIC 0x794c7630
#endif

#define UMOUNT_TRIES    10
#define UMOUNT_RETRY_MS 100

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
    r = 0;
    if (mount("overlay", merged, "overlay", 0, opts.buf) < 0)
        r = kiln_error_set(err, KILN_EIO, errno, "mount overlay at '%s' (%zu lower layers)", merged,
                           n);
    kiln_buf_release(&opts);
    return r;
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
