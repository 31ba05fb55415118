/*
 * Helper of test-store-crash.sh: drives the blob and layer stores (one
 * shared root) so the script can kill -9 it at chosen moments.
 *
 *   blob-slow ROOT FILE DIGEST READY   write FILE slowly (READY is created after
 *                                      the first chunk), then commit
 *   blob-put ROOT FILE DIGEST          write FILE at full speed and commit
 *   blob-has ROOT DIGEST               print the size; exit 1 when absent
 *   blob-rm ROOT DIGEST                remove a blob (absent is fine)
 *   layer-slow ROOT DIFF_ID READY      ensure with a fill that creates READY and hangs
 *   layer-ensure ROOT DIFF_ID          ensure with a small fill; print extracted|present
 *   layer-lookup ROOT DIFF_ID          print the path; exit 1 when absent
 *   gc ROOT [any-age]                  gc both stores (no size target), print stats
 *
 * Exit status: 0 success, 1 "absent", 2 usage, 3 error (message on stderr).
 */
#include "util/common.h"

#include <fcntl.h>
#include <inttypes.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "store/blobstore.h"
#include "store/layerstore.h"
#include "util/fs.h"

#define CHUNK ((size_t)64 << 10)

static int fail(struct kiln_error *err)
{
    fprintf(stderr, "store-crash-helper: %s\n", err ? err->msg : "error");
    kiln_error_free(err);
    return 3;
}

static void touch(const char *path)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd >= 0)
        close(fd);
}

static void sleep_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

static int blob_write(const char *root, const char *file, const char *digest, const char *ready)
{
    struct kiln_error *err = NULL;
    struct kiln_blobstore *bs = NULL;
    if (kiln_blobstore_open(root, 0, &bs, &err) < 0)
        return fail(err);
    int in = open(file, O_RDONLY | O_CLOEXEC);
    if (in < 0) {
        perror(file);
        kiln_blobstore_free(bs);
        return 3;
    }
    struct kiln_blob_writer *w = NULL;
    if (kiln_blobstore_begin(bs, &w, &err) < 0) {
        close(in);
        kiln_blobstore_free(bs);
        return fail(err);
    }
    char *buf = kiln_xmalloc(CHUNK);
    bool first = true;
    ssize_t n;
    while ((n = read(in, buf, CHUNK)) > 0) {
        if (kiln_blobstore_write(w, buf, (size_t)n, &err) < 0) {
            kiln_blobstore_abort(w);
            free(buf);
            close(in);
            kiln_blobstore_free(bs);
            return fail(err);
        }
        if (ready) {
            if (first)
                touch(ready);
            sleep_ms(20);
        }
        first = false;
    }
    free(buf);
    close(in);
    char got[KILN_DIGEST_BUFSZ];
    int r = kiln_blobstore_commit(w, digest, -1, got, &err);
    kiln_blobstore_free(bs);
    if (r < 0)
        return fail(err);
    printf("%s\n", got);
    return 0;
}

static int write_at(int dirfd, const char *name, const char *content)
{
    int fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0)
        return -1;
    int r = kiln_fs_write_all(fd, content, strlen(content));
    close(fd);
    return r;
}

static int fill_small(int dirfd, void *userdata, struct kiln_error **err)
{
    if (mkdirat(dirfd, "etc", 0755) < 0 || write_at(dirfd, "etc/os-release", "ID=kiln\n") < 0 ||
        mkdirat(dirfd, "usr", 0755) < 0 || write_at(dirfd, "usr/hello", "hello\n") < 0)
        return kiln_error_set(err, KILN_EIO, errno, "fill");
    return 0;
}

static int fill_hang(int dirfd, void *userdata, struct kiln_error **err)
{
    int r = fill_small(dirfd, NULL, err);
    if (r < 0)
        return r;
    touch(userdata);
    for (;;)
        sleep_ms(1000);
    return 0;
}

static int layer_ensure(const char *root, const char *diff_id, const char *ready)
{
    struct kiln_error *err = NULL;
    struct kiln_layerstore *ls = NULL;
    if (kiln_layerstore_open(root, 0, &ls, &err) < 0)
        return fail(err);
    int r = ready ? kiln_layerstore_ensure(ls, diff_id, fill_hang, (void *)ready, NULL, &err)
                  : kiln_layerstore_ensure(ls, diff_id, fill_small, NULL, NULL, &err);
    kiln_layerstore_free(ls);
    if (r < 0)
        return fail(err);
    printf("%s\n", r == 1 ? "extracted" : "present");
    return 0;
}

static int gc(const char *root, bool any_age)
{
    struct kiln_error *err = NULL;
    struct kiln_blobstore *bs = NULL;
    struct kiln_layerstore *ls = NULL;
    if (kiln_blobstore_open(root, 0, &bs, &err) < 0)
        return fail(err);
    if (kiln_layerstore_open(root, 0, &ls, &err) < 0) {
        kiln_blobstore_free(bs);
        return fail(err);
    }
    int64_t age = any_age ? -1 : 0;
    struct kiln_blobstore_gc_options bo = {.target_bytes = -1, .tmp_max_age_s = age};
    struct kiln_layerstore_gc_options lo = {.target_bytes = -1, .tmp_max_age_s = age};
    struct kiln_blobstore_gc_stats bst;
    struct kiln_layerstore_gc_stats lst;
    int r = kiln_blobstore_gc(bs, &bo, &bst, &err);
    if (r >= 0)
        r = kiln_layerstore_gc(ls, &lo, &lst, &err);
    kiln_blobstore_free(bs);
    kiln_layerstore_free(ls);
    if (r < 0)
        return fail(err);
    printf("tmp_removed=%" PRIu64 " blobs_removed=%" PRIu64 " layers_removed=%" PRIu64
           " locks_removed=%" PRIu64 "\n",
           bst.tmp_removed + lst.tmp_removed, bst.blobs_removed, lst.layers_removed,
           lst.locks_removed);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: store-crash-helper COMMAND ROOT ARGS...\n");
        return 2;
    }
    const char *cmd = argv[1], *root = argv[2];
    struct kiln_error *err = NULL;

    if (strcmp(cmd, "blob-slow") == 0 && argc == 6)
        return blob_write(root, argv[3], argv[4], argv[5]);
    if (strcmp(cmd, "blob-put") == 0 && argc == 5)
        return blob_write(root, argv[3], argv[4], NULL);
    if ((strcmp(cmd, "blob-has") == 0 || strcmp(cmd, "blob-rm") == 0) && argc == 4) {
        struct kiln_blobstore *bs = NULL;
        if (kiln_blobstore_open(root, 0, &bs, &err) < 0)
            return fail(err);
        uint64_t size = 0;
        int r;
        if (cmd[5] == 'h') {
            r = kiln_blobstore_has(bs, argv[3], &size, &err);
            if (r == 1)
                printf("%" PRIu64 "\n", size);
        } else {
            r = kiln_blobstore_remove(bs, argv[3], &err);
            if (r == -KILN_ENOTFOUND)
                r = 0;
        }
        kiln_blobstore_free(bs);
        if (r < 0)
            return fail(err);
        kiln_error_free(err);
        return cmd[5] == 'h' && r == 0 ? 1 : 0;
    }
    if (strcmp(cmd, "layer-slow") == 0 && argc == 5)
        return layer_ensure(root, argv[3], argv[4]);
    if (strcmp(cmd, "layer-ensure") == 0 && argc == 4)
        return layer_ensure(root, argv[3], NULL);
    if (strcmp(cmd, "layer-lookup") == 0 && argc == 4) {
        struct kiln_layerstore *ls = NULL;
        if (kiln_layerstore_open(root, 0, &ls, &err) < 0)
            return fail(err);
        char *path = NULL;
        int r = kiln_layerstore_lookup(ls, argv[3], &path, &err);
        kiln_layerstore_free(ls);
        if (r < 0)
            return fail(err);
        if (r == 0)
            return 1;
        printf("%s\n", path);
        free(path);
        return 0;
    }
    if (strcmp(cmd, "gc") == 0 && (argc == 3 || (argc == 4 && strcmp(argv[3], "any-age") == 0)))
        return gc(root, argc == 4);
    fprintf(stderr, "store-crash-helper: unknown command or wrong arguments: %s\n", cmd);
    return 2;
}
