/*
 * Overlay mounts for build steps: the parent layers read-only below, a fresh
 * upper directory that collects the step's changes (layer/pack commits it).
 *
 * The mount options turn off the overlayfs features that store redirects or
 * metadata-only copies in xattrs (index=off, redirect_dir=off, metacopy=off):
 * layer/pack refuses such xattrs, so an upper dir made here only ever holds
 * plain files, whiteouts (0/0 character devices) and opaque directories
 * (trusted.overlay.opaque=y).
 *
 * Needs CAP_SYS_ADMIN. Never prints; thread-safe.
 */
#ifndef KILN_BUILD_OVERLAY_H
#define KILN_BUILD_OVERLAY_H

#include "kiln/error.h"

/* overlayfs stacks at most this many lower layers (the kernel's OVL_MAX_STACK). */
#define KILN_OVERLAY_LOWERS_MAX 500

/*
 * Mount an overlayfs at `merged`: lowers[0] is the TOP lower layer, lowers
 * NULL-terminated, at least one, at most KILN_OVERLAY_LOWERS_MAX (more is
 * -KILN_ETOOBIG "too many layers for overlayfs (%zu, at most 500)", before
 * any system call). upper and work must be empty directories on the same
 * file system. Options: the lower layers, upperdir, workdir, plus
 * index=off,redirect_dir=off,metacopy=off.
 *
 * Lower, upper and work paths that are empty or contain ':' ',' or '\\' are
 * -KILN_EINVAL whichever way the mount is made, so what is accepted does not
 * depend on the kernel (escaping is not attempted).
 *
 * The mount is made with the new mount API (fsopen, one fsconfig
 * "lowerdir+" per lower layer, top first, then fsmount and move_mount; Linux
 * 6.8), which has no limit on the total length of the paths. move_mount
 * does not follow a symlink at `merged` (kiln_overlay_umount does not
 * either). A path longer than 255 bytes is passed as an open directory
 * (Linux 6.13). Where the kernel or a seccomp filter lacks any of that, it
 * falls back to mount(2) with "lowerdir=a:b:c,upperdir=..,workdir=..": an
 * option string longer than the page size (4096 - 1; ~40 layers with
 * store paths) is then -KILN_ETOOBIG "too many layers for one overlay mount
 * (%zu)".
 *
 * Errors of the system calls are -KILN_EIO with errno and a message naming
 * merged and the step that failed, e.g. "mount overlay at '/m': fsconfig
 * lowerdir+ '/l/3' (kernel: ...): No such file or directory", with the
 * kernel's own explanation when it gave one; for mount(2), "mount overlay
 * at '/m' (%zu lower layers)".
 */
int kiln_overlay_mount(const char *const *lowers, const char *upper, const char *work,
                       const char *merged, struct kiln_error **err);

/*
 * Unmount the overlay at `merged` (never following a symlink); when it stays
 * busy after a few tries, detach it lazily (MNT_DETACH). Nothing mounted
 * there, or no such path, is fine (0); a mount of another file system type
 * at `merged` is left alone (0). Other failures are -KILN_EIO.
 */
int kiln_overlay_umount(const char *merged, struct kiln_error **err);

#endif
