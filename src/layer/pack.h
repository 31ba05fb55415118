/*
 * Commit a directory tree into an image layer: a deterministic tar stream,
 * compressed and digested in one pass (layer/compress.h).
 *
 *   struct kiln_pack_options o = {.compress = KILN_COMPRESS_OPTIONS_INIT,
 *                                 .overlay = true, .clamp_mtime = true,
 *                                 .source_date_epoch = 1700000000};
 *   struct kiln_compress_result res;
 *   r = kiln_pack_dir_fd(upper_fd, &o, blob_fd, &res, NULL, err);
 *   res.digest (manifest), res.diff_id (config rootfs), res.size, res.media_type
 *
 * The tar (POSIX pax, written by kiln itself so that the bytes depend on
 * nothing but the tree and the options — not on the locale, the host, the
 * time or the thread count):
 *  - order: depth first from the root, the entries of each directory sorted
 *    bytewise (strcmp) by their name in the tar, a directory right before
 *    its contents (the order of `tar --sort=name`); the root itself is not
 *    an entry; paths are relative ("etc/passwd", directories "etc/");
 *  - numeric uid/gid only (uname/gname empty), permission bits incl.
 *    setuid/setgid/sticky, mtimes in whole seconds (when clamp_mtime is set,
 *    an mtime later than source_date_epoch becomes source_date_epoch);
 *    no atime/ctime;
 *  - hard links (same st_dev + st_ino, any non-directory) as link entries:
 *    the first path in the order above holds the data, later ones link to it;
 *  - regular files, directories, symlinks, char/block devices, fifos;
 *    sockets are skipped (tar cannot hold them);
 *  - xattrs of regular files and directories as SCHILY.xattr.NAME records,
 *    sorted by name, including security.capability; trusted.* and
 *    security.selinux are never recorded (nor, in overlay mode, user.overlay.*).
 *    Linux allows no user.* xattrs on symlinks, devices and fifos, and those
 *    are not read;
 *  - pax extended headers only where ustar cannot hold a value (path or link
 *    longer than 100 bytes, large ids, sizes of 8 GiB or more, mtimes before
 *    1970, xattrs); named "<dir>/PaxHeaders.0/<base>", mode 0644, mtime 0;
 *  - names starting with ".wh." are refused (-KILN_EUNSUPPORTED): image
 *    layers reserve them for whiteouts;
 *  - mount points: directories on another file system than the root are
 *    recorded, their contents not (like tar --one-file-system).
 *
 * Overlay mode (an overlayfs upper dir; run as root to read trusted.* xattrs):
 *  - a whiteout (a 0/0 char device) NAME becomes an empty regular file
 *    ".wh.NAME" (its mode bits, owner and mtime kept);
 *    a whiteout is never a hard link, even when overlayfs shares its inode;
 *  - a directory with trusted.overlay.opaque=y (or user.overlay.opaque=y)
 *    gets a ".wh..wh..opq" entry right after it, before its contents, with
 *    the directory's mode, owner and mtime;
 *  - trusted.overlay.redirect or .metacopy (an overlay mounted with
 *    redirect_dir or metacopy on) cannot be represented: -KILN_EUNSUPPORTED.
 *
 * Exclusions: each pattern is a glob matched with fnmatch(3) and
 * FNM_PATHNAME (so '*' and '?' do not cross '/', and '*' matches a leading
 * '.') against the whole relative path, e.g. "root/.cache/pip" or
 * "var/lib/apt/lists/" followed by "*". A leading "/" or "./" and a
 * trailing "/" of a pattern are ignored. A matching entry is left out
 * together with everything below it; so "dir/" + "*" keeps the directory
 * and drops its contents. Whiteouts are matched by the path they delete.
 *
 * Errors: -KILN_EIO (file system), -KILN_EUNSUPPORTED (see above),
 * -KILN_EINVAL (options), -KILN_ECANCELLED (progress), -KILN_ETOOBIG (more
 * than 512 directory levels), or the output callback's error. On failure the
 * output so far is garbage the caller discards.
 *
 * Memory: the compressor's (see compress.h) plus the sorted listings of the
 * directories on the current path and one path per hard-linked inode.
 * The tree must not change while it is packed; a file that shrinks is an
 * error, bytes appended to a file after its header are left out.
 */
#ifndef KILN_LAYER_PACK_H
#define KILN_LAYER_PACK_H

#include <stdbool.h>
#include <stdint.h>

#include "kiln/error.h"
#include "layer/compress.h"

/* Called once per entry and every 4 MiB of file data; nonzero cancels. */
typedef int (*kiln_pack_progress_fn)(void *userdata, uint64_t tar_bytes, uint64_t entries);

struct kiln_pack_options {
    struct kiln_compress_options compress; /* set .algo: zero is uncompressed */
    bool overlay;                          /* the tree is an overlayfs upper dir */
    bool clamp_mtime;                      /* clamp mtimes to source_date_epoch */
    int64_t source_date_epoch;             /* seconds since 1970 */
    const char *const *exclude;            /* NULL-terminated patterns, or NULL */
    kiln_pack_progress_fn progress;        /* or NULL */
    void *progress_data;
};

struct kiln_pack_stats {
    uint64_t entries;     /* tar entries, including whiteouts and opaque markers */
    uint64_t files;       /* regular files with their data */
    uint64_t file_bytes;  /* their bytes */
    uint64_t hardlinks;   /* link entries */
    uint64_t whiteouts;   /* .wh.NAME entries */
    uint64_t opaque_dirs; /* .wh..wh..opq entries */
    uint64_t excluded;    /* entries left out by a pattern (a directory counts once) */
    uint64_t skipped;     /* sockets */
};

/*
 * Pack the tree below `dirfd` (an open directory; not closed, its position
 * not used) and send the compressed layer to `fn`. o may be NULL: gzip with
 * the defaults, nothing excluded, mtimes as they are, not overlay mode. *ret gets the digests,
 * sizes and media type; *ret_stats (may be NULL) the counts.
 */
int kiln_pack_dir(int dirfd, const struct kiln_pack_options *o, kiln_compress_write_fn fn,
                  void *userdata, struct kiln_compress_result *ret,
                  struct kiln_pack_stats *ret_stats, struct kiln_error **err);

/* The same, writing the layer to `out_fd` with write(2). */
int kiln_pack_dir_fd(int dirfd, const struct kiln_pack_options *o, int out_fd,
                     struct kiln_compress_result *ret, struct kiln_pack_stats *ret_stats,
                     struct kiln_error **err);

#endif
