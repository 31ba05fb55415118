/*
 * Safe file-system helpers, all relative to a directory fd.
 *
 * Every function here works with *at() calls from a directory fd the caller
 * owns (AT_FDCWD is accepted too), opens everything O_CLOEXEC and never
 * follows a symbolic link: not in the last component, not in any directory
 * on the way. A relative `path` is split on '/'; empty components and "."
 * are skipped; "..", an absolute path and an empty path are -KILN_EINVAL.
 * A symlink met on the way is -KILN_EIO ("... is a symbolic link").
 *
 * Files that matter are written atomically: a temp file in the same
 * directory, fsync, rename over the name, fsync of the directory.
 *
 * The tree walks (kiln_fs_rm_rf_at, kiln_fs_disk_usage_at) hold a bounded
 * number of file descriptors whatever the depth of the tree (deeper levels
 * are reopened through ".." and checked by device and inode number), and
 * never cross into another mounted file system.
 *
 * No function prints or reads the environment; all are thread-safe.
 */
#ifndef KILN_UTIL_FS_H
#define KILN_UTIL_FS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "kiln/error.h"

/* Length of a random name made by kiln_fs_random_name() (without NUL). */
#define KILN_FS_RANDOM_NAME_LEN 16

/*
 * Write KILN_FS_RANDOM_NAME_LEN lower-case hex characters from getrandom()
 * and a NUL into out. Never fails (falls back to a time/pid/counter mix).
 */
void kiln_fs_random_name(char out[KILN_FS_RANDOM_NAME_LEN + 1]);

/*
 * Write all `len` bytes to fd, retrying on EINTR and short writes. Returns
 * 0, or -KILN_EIO with errno set (no error object: callers add the name).
 */
int kiln_fs_write_all(int fd, const void *data, size_t len);

/*
 * Read fd from its position to the end, at most `max` bytes, retrying on
 * EINTR, into a new NUL-terminated buffer (*ret, the caller frees it; its
 * length in *ret_len). Returns 0; -KILN_ETOOBIG when there is more than
 * max (nothing returned); -KILN_EIO with errno set on a read error. No
 * error object: callers add the name.
 */
int kiln_fs_read_all(int fd, size_t max, char **ret, size_t *ret_len);

/*
 * Open the directory `path` below `dirfd` (O_RDONLY | O_DIRECTORY |
 * O_CLOEXEC), following no symlink on the way. "." opens dirfd's directory
 * again. Returns the new fd (the caller closes it) or a negative error:
 * -KILN_ENOTFOUND when a component does not exist, -KILN_EIO otherwise.
 */
int kiln_fs_open_dir(int dirfd, const char *path, struct kiln_error **err);

/*
 * mkdir -p `path` below `dirfd` with `mode` (before umask) for each
 * directory it creates; existing directories are fine (their mode is left
 * alone), an existing non-directory or symlink on the way is -KILN_EIO.
 * When ret_fd is not NULL, *ret_fd receives an open fd of the last
 * directory (the caller closes it). Returns 0 or a negative error.
 */
int kiln_fs_mkdir_p_at(int dirfd, const char *path, mode_t mode, int *ret_fd,
                       struct kiln_error **err);

/*
 * mkdir -p of a trusted path such as a store root from the configuration:
 * absolute or relative to the working directory, symlinks in it followed.
 * Missing directories are created with `mode` (before umask). When ret_fd
 * is not NULL, *ret_fd receives an open fd of the directory. Returns 0 or
 * -KILN_EIO.
 */
int kiln_fs_mkdir_p_path(const char *path, mode_t mode, int *ret_fd, struct kiln_error **err);

/*
 * Write `len` bytes atomically to `path` below `dirfd` with `mode`
 * (applied with fchmod, so not subject to umask): the data goes to a
 * uniquely named temp file ".<name>.<random>.tmp" in the same directory,
 * which is fsynced and renamed over `path`; then the directory is fsynced.
 * Readers see the old content or the new one, never a mix, and after a
 * crash at most a stray temp file remains. The parent directory must
 * exist. On failure the temp file is removed. Returns 0 or -KILN_EIO.
 */
int kiln_fs_write_atomic(int dirfd, const char *path, const void *data, size_t len, mode_t mode,
                         struct kiln_error **err);

/* fsync a directory fd (or any fd). Returns 0 or -KILN_EIO. */
int kiln_fs_fsync_dir(int dirfd, struct kiln_error **err);

/*
 * rm -rf `path` below `dirfd`, never following a symlink (a symlink is
 * removed itself, its target is left alone) and never descending into
 * another mounted file system (-KILN_EIO "refusing to cross a mount point").
 * Directories without write or search permission for the owner get u+rwx
 * so their contents can be removed. A missing `path` is success (0); so
 * are entries that vanish while the walk runs. Returns 0 or a negative
 * error; on error part of the tree may be gone.
 */
int kiln_fs_rm_rf_at(int dirfd, const char *path, struct kiln_error **err);

/*
 * Disk usage of the tree at `path` below `dirfd` (the path itself
 * included): the sum of st_blocks * 512 over every inode, each hard-linked
 * inode counted once, not following symlinks and not crossing mount points.
 * Writes *ret_bytes on success. Returns 0 or a negative error.
 */
int kiln_fs_disk_usage_at(int dirfd, const char *path, uint64_t *ret_bytes,
                          struct kiln_error **err);

/*
 * Create a new uniquely named temp entry in the directory `dirfd` (a
 * store's tmp/) and lock it, the owner's half of the protocol that
 * kiln_fs_remove_stale_at() follows: a regular file (mode 0644, opened
 * O_RDWR) or, when `directory`, a directory (mode 0755, opened O_RDONLY).
 * The returned fd holds an exclusive flock, taken after checking that the
 * entry is still the one created (a sweep of any age may remove a fresh
 * entry before its owner locks it; then another name is tried). Writes the
 * name (KILN_FS_RANDOM_NAME_LEN hex characters) into ret_name. Returns the
 * fd (O_CLOEXEC; the caller closes it, which releases the lock) or
 * -KILN_EIO.
 */
int kiln_fs_create_locked_temp(int dirfd, bool directory,
                               char ret_name[KILN_FS_RANDOM_NAME_LEN + 1], struct kiln_error **err);

/*
 * Remove the stale entries of the directory `dirfd` (a store's tmp/): an
 * entry is stale when its mtime is more than `max_age_s` seconds old
 * (negative: any age) and a non-blocking exclusive flock on it succeeds,
 * i.e. no live writer holds its lock. Files and directories (removed like
 * kiln_fs_rm_rf_at) are handled; symlinks and other entries only by age.
 * The lock is held while the entry is removed. Adds the number of entries
 * removed and their disk usage to *count and *bytes (either may be NULL).
 * Returns 0 or the first error (the sweep goes on after one).
 */
int kiln_fs_remove_stale_at(int dirfd, int64_t max_age_s, uint64_t *count, uint64_t *bytes,
                            struct kiln_error **err);

#endif
