#include "util/common.h"

#include <fcntl.h>
#include <pthread.h>
#include <unistd.h>
#include <sys/socket.h>

#include "build/layers.h"
#include "layer/unpack.h"

struct fill {
    const struct kiln_layer_source *src;
    const struct kiln_descriptor *d;
    const char *diff_id;
    /* the download thread */
    int sock;
    uint64_t bytes;
    uint64_t last_report;
    int rc;
    struct kiln_error *err;
};

static int sink(void *ud, const void *data, size_t len, struct kiln_error **err)
{
    struct fill *f = ud;
    const char *p = data;
    while (len > 0) {
        ssize_t n = send(f->sock, p, len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            /* EPIPE: the unpacker stopped reading; its error is the one to report */
            return kiln_error_set(err, KILN_EIO, errno, "stream layer to the unpacker");
        }
        p += n;
        len -= (size_t)n;
        f->bytes += (uint64_t)n;
    }
    if (f->src->progress &&
        (f->bytes - f->last_report >= ((uint64_t)8 << 20) || f->bytes == (uint64_t)f->d->size)) {
        f->last_report = f->bytes;
        f->src->progress(f->src->progress_data, f->d->digest, f->bytes, (uint64_t)f->d->size);
    }
    return 0;
}

static void *download(void *ud)
{
    struct fill *f = ud;
    f->rc = kiln_registry_blob_get(f->src->registry, f->src->repo, f->d->digest, f->d->size, sink,
                                   f, NULL, &f->err);
    shutdown(f->sock, SHUT_WR);
    return NULL;
}

/* Hand `e` (set) to the caller's err. */
static int move_error(struct kiln_error **err, struct kiln_error *e)
{
    int code = e ? e->code : KILN_EINTERNAL;
    if (err) {
        kiln_error_free(*err);
        *err = e;
    } else {
        kiln_error_free(e);
    }
    return -code;
}

static int check_diff_id(const struct fill *f, const struct kiln_unpack_stats *st,
                         struct kiln_error **err)
{
    if (strcmp(st->stream.diff_id, f->diff_id) != 0)
        return kiln_error_set(err, KILN_EINVAL, 0,
                              "layer %s: its content has diff_id %s, the image config says %s",
                              f->d->digest, st->stream.diff_id, f->diff_id);
    return 0;
}

static int fill_layer(int dirfd, void *ud, struct kiln_error **err)
{
    struct fill *f = ud;
    struct kiln_unpack_opts uo = {.mode = KILN_UNPACK_OVERLAY};
    struct kiln_unpack_stats st;
    int r;
    if (f->src->blobs) {
        uint64_t size = 0;
        int fd = kiln_blobstore_open_blob(f->src->blobs, f->d->digest, &size, NULL);
        if (fd >= 0) {
            r = kiln_unpack_fd(dirfd, fd, &uo, &st, err);
            close(fd);
            return r < 0 ? r : check_diff_id(f, &st, err);
        }
    }
    if (!f->src->registry)
        return kiln_error_set(err, KILN_ENOTFOUND, 0, "layer %s: blob not found", f->d->digest);

    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        return kiln_error_set(err, KILN_EIO, errno, "socketpair");
    int bufsz = 4 << 20;
    setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &bufsz, sizeof(bufsz));
    setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &bufsz, sizeof(bufsz));
    f->sock = sv[0];
    pthread_t th;
    if ((errno = pthread_create(&th, NULL, download, f)) != 0) {
        close(sv[0]);
        close(sv[1]);
        return kiln_error_set(err, KILN_EIO, errno, "start the download thread");
    }
    struct kiln_error *uerr = NULL;
    r = kiln_unpack_fd(dirfd, sv[1], &uo, &st, &uerr);
    /* the downloader may be blocked writing: closing our end ends it */
    shutdown(sv[1], SHUT_RDWR);
    pthread_join(th, NULL);
    close(sv[0]);
    close(sv[1]);
    if (f->rc < 0) {
        /* the download's error explains a truncated stream */
        kiln_error_free(uerr);
        move_error(err, f->err);
        f->err = NULL;
        return f->rc;
    }
    kiln_error_free(f->err);
    f->err = NULL;
    if (r < 0) {
        move_error(err, uerr);
        return r;
    }
    return check_diff_id(f, &st, err);
}

int kiln_layers_ensure(struct kiln_layerstore *ls, const struct kiln_layer_source *src,
                       const struct kiln_descriptor *d, const char *diff_id,
                       struct kiln_layer_ref **ret_ref, struct kiln_error **err)
{
    if (!diff_id || !kiln_digest_is_valid(diff_id))
        return kiln_error_set(err, KILN_EINVAL, 0, "layer %s: no valid diff_id", d->digest);
    struct fill f = {.src = src, .d = d, .diff_id = diff_id, .sock = -1};
    return kiln_layerstore_ensure(ls, diff_id, fill_layer, &f, ret_ref, err);
}
