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

/*
 * Mount an overlayfs at `merged`: lowers[0] is the TOP lower layer, lowers
 * NULL-terminated, at least one. upper and work must be empty directories on
 * the same file system. Options: lowerdir=a:b:c,upperdir=,workdir=, plus
 * index=off,redirect_dir=off,metacopy=off. Lower, upper and work paths that
 * are empty or contain ':' ',' or '\\' are -KILN_EINVAL (escaping is not
 * attempted); an option string longer than the page size (4096 - 1) is
 * -KILN_ETOOBIG "too many layers for one overlay mount (%zu)". mount(2)
 * errors are -KILN_EIO with errno and a message naming merged.
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
