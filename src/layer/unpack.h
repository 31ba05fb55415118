/*
 * Unpack a layer (tar, tar+gzip, tar+zstd) under a root directory.
 *
 * The stream is read through a kiln_read_fn (see layer/decompress.h): the
 * decompression runs in its own thread and the tar is extracted as it
 * arrives, so download, decompression and extraction overlap. The tar is
 * read with libarchive (ustar, pax, GNU: long names and links, sparse files,
 * pax/SCHILY/LIBARCHIVE xattrs). Supported entries: directories, regular
 * files, hard links, symlinks, character and block devices, fifos (sockets
 * are skipped). Kept: numeric uid/gid (names are ignored), the mode with
 * setuid/setgid/sticky, mtimes with nanoseconds (atime = mtime), xattrs
 * (user.*, trusted.*, security.* incl. security.capability, system.posix_acl_*).
 *
 * Modes:
 *   KILN_UNPACK_OVERLAY  for the unpacked-layer store (a layer later used as
 *       an overlayfs lower dir). `.wh.NAME` becomes an overlayfs whiteout, a
 *       0/0 character device NAME, and `DIR/.wh..wh..opq` sets the xattr
 *       trusted.overlay.opaque="y" on DIR. A directory entry that replaces a
 *       whiteout made earlier in the same layer (`.wh.x` then `x/`) is made
 *       opaque. A whiteout for a name this layer already created keeps the
 *       entry (a directory becomes opaque). The opaque xattr needs
 *       CAP_SYS_ADMIN, and 0/0 devices need CAP_MKNOD before Linux 5.8:
 *       without them the unpack fails with KILN_EUNSUPPORTED.
 *   KILN_UNPACK_APPLY  flatten layers one after the other into one rootfs
 *       (`kiln unpack REF DIR`). `.wh.NAME` removes NAME (recursively) and
 *       `DIR/.wh..wh..opq` removes DIR's children, but only what earlier
 *       layers wrote: entries of the layer being applied survive whatever
 *       their order in the tar (OCI image spec: whiteouts apply to lower
 *       layers only). The layer's own entries (and the directories it
 *       passes through) are tracked by inode, so a name reached through a
 *       lower layer's symlink (bin -> usr/bin) counts too; a hard link this
 *       layer makes to a lower layer's file makes that inode its own.
 * Other `.wh..wh.*` names (aufs metadata) are skipped, and so are entries
 * below a `.wh.*` directory component.
 *
 * Safety: nothing is ever written outside the root.
 *   - Entry names and hard-link targets are cleaned lexically as if rooted
 *     at "/": leading "/" dropped, "." dropped, ".." removes the previous
 *     component and stops at the root (`../x` and `/etc/x` land at `x` and
 *     `etc/x` inside the root). The empty name ("./") is the root itself:
 *     its mode, owner and mtime are applied; any other type for it is an
 *     error.
 *   - The parent directory of each entry is resolved within the root:
 *     openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS), or, on kernels
 *     without openat2, an equivalent walk one component at a time with
 *     O_NOFOLLOW that resolves symlinks itself, "/" and ".." clamped at the
 *     root. So a symlink `a -> /` or `a -> ../../..` followed by `a/etc/x`
 *     writes `etc/x` inside the root (resolved within the root, as a
 *     chroot would). Missing parents are created (0755); a
 *     parent that exists and is not a directory (or a dangling symlink) is
 *     an error.
 *   - The final component is never followed: files are created with
 *     O_CREAT|O_EXCL|O_NOFOLLOW, and an existing entry of that name is
 *     removed first (a directory only when the new entry is not one:
 *     directories merge).
 *   - Hard-link targets are resolved within the root like entry names: a
 *     link to `/etc/passwd` or `../outside` links to `etc/passwd` or
 *     `outside` inside the root, and fails (KILN_EINVAL) when that does not
 *     exist or is a directory.
 *   - Symlinks are created with their target as it is: they are only ever
 *     followed within the root here (the caller must not follow them
 *     outside a chroot or container either).
 *   - xattrs named trusted.overlay.* in the tar are dropped (they would
 *     change how overlayfs reads the layer), as are unknown namespaces.
 *   - The tree under the root is assumed not to be changed by anyone else
 *     during the unpack.
 *   Caps against tar bombs (KILN_ETOOBIG when passed): uncompressed stream
 *   bytes and the sum of entry sizes (max_bytes), entries (max_entries),
 *   entry name and link target length (max_path).
 *
 * Ownership: kept when running as root (fchownat with AT_SYMLINK_NOFOLLOW)
 * unless no_chown is set. When not root (or no_chown), nothing is chowned,
 * and device nodes that cannot be created (EPERM) are skipped and counted
 * in stats.skipped; xattrs that cannot be set for lack of privilege or
 * support (EPERM, ENOTSUP: security.capability as non-root, user.* on
 * symlinks) and owners a user namespace does not map are skipped and
 * counted too. Directories are created 0700 and get their mode at the end,
 * so read-only directories of the same layer do not stop a non-root unpack
 * (those of an earlier layer in apply mode do).
 *
 * Timestamps: set after the content; directories' modes and mtimes are set
 * at the end (a child's creation would change them). No fsync: the caller
 * syncs the file system once (syncfs) if it needs durability.
 *
 * On error the root holds a partial tree: the caller removes it.
 */
#ifndef KILN_LAYER_UNPACK_H
#define KILN_LAYER_UNPACK_H

#include <stdbool.h>
#include <stdint.h>

#include "kiln/error.h"
#include "layer/decompress.h"

enum kiln_unpack_mode {
    KILN_UNPACK_OVERLAY = 0,
    KILN_UNPACK_APPLY,
};

#define KILN_UNPACK_DEFAULT_MAX_BYTES   ((uint64_t)64 << 30) /* 64 GiB */
#define KILN_UNPACK_DEFAULT_MAX_ENTRIES ((uint64_t)4 << 20)  /* ~4 million */
#define KILN_UNPACK_DEFAULT_MAX_PATH    4096

struct kiln_unpack_opts {
    enum kiln_unpack_mode mode;
    uint64_t max_bytes;     /* 0: KILN_UNPACK_DEFAULT_MAX_BYTES */
    uint64_t max_entries;   /* 0: KILN_UNPACK_DEFAULT_MAX_ENTRIES */
    size_t max_path;        /* 0: KILN_UNPACK_DEFAULT_MAX_PATH (bytes, cleaned name) */
    bool no_chown;          /* never chown (automatic when not root) */
    bool digest_compressed; /* also compute the compressed stream's digest */
    bool no_thread;         /* decompress in the caller's thread */
    bool no_openat2;        /* use the portable resolver (tests; automatic on ENOSYS) */
};

struct kiln_unpack_stats {
    uint64_t entries;   /* tar entries processed (whiteouts and skipped ones included) */
    uint64_t bytes;     /* file content bytes written */
    uint64_t whiteouts; /* whiteout and opaque entries */
    uint64_t skipped;   /* device nodes, sockets, xattrs, aufs entries not created */
    struct kiln_decompress_result stream; /* format, sizes, diff_id, digest */
};

/*
 * Unpack the stream from read/userdata under rootfd (a directory fd; the
 * caller keeps it). opts may be NULL (overlay mode, defaults). On success
 * fills *ret_stats (may be NULL), including the diff_id of the whole
 * uncompressed stream (read to its end even after the tar's end marker).
 * Errors: KILN_EINVAL (corrupt stream or tar, refused entry: the message
 * names the entry), KILN_ETOOBIG (a cap), KILN_EIO (file system or source),
 * KILN_EUNSUPPORTED (whiteouts without privilege in overlay mode).
 */
int kiln_unpack(int rootfd, kiln_read_fn read, void *userdata, const struct kiln_unpack_opts *opts,
                struct kiln_unpack_stats *ret_stats, struct kiln_error **err);

/* kiln_unpack() reading from a file descriptor (a blob file or a pipe). */
int kiln_unpack_fd(int rootfd, int srcfd, const struct kiln_unpack_opts *opts,
                   struct kiln_unpack_stats *ret_stats, struct kiln_error **err);

#endif
