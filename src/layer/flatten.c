/* Flatten an image's layers into one root file system: see flatten.h. */
#include "util/common.h"
#include "layer/flatten.h"

#include <dirent.h>
#include <inttypes.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "layer/unpack.h"
#include "oci/config.h"
#include "oci/manifest.h"

#define PROGRESS_EVERY ((uint64_t)4 << 20)

/* The source of one layer: its blob fd, counting bytes for the progress. */
struct reader {
    int fd;
    const struct kiln_flatten_options *o;
    struct kiln_flatten_event ev;
    uint64_t last;  /* bytes at the last progress call */
    bool cancelled; /* the callback asked to stop */
};

static int report(struct reader *rd)
{
    if (!rd->o->progress)
        return 0;
    if (rd->o->progress(rd->o->userdata, &rd->ev) != 0) {
        rd->cancelled = true;
        return -1;
    }
    return 0;
}

static ssize_t read_counted(void *userdata, void *buf, size_t n)
{
    struct reader *rd = userdata;
    ssize_t got = kiln_decompress_read_fd(&rd->fd, buf, n);
    if (got <= 0)
        return got;
    rd->ev.bytes += (uint64_t)got;
    rd->ev.total_bytes += (uint64_t)got;
    if (rd->ev.bytes - rd->last >= PROGRESS_EVERY) {
        rd->last = rd->ev.bytes;
        if (report(rd) < 0) {
            errno = ECANCELED;
            return -1;
        }
    }
    return got;
}

/* Open (creating when absent) the target directory; refuse a non-empty one unless force. */
static int open_target(const char *dir, bool force, struct kiln_error **err)
{
    if (mkdir(dir, 0755) < 0 && errno != EEXIST)
        return kiln_error_set(err, errno == ENOENT ? KILN_ENOTFOUND : KILN_EIO, errno,
                              "create '%s'", dir);
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOTDIR)
            return kiln_error_set(err, KILN_EEXIST, 0, "'%s' exists and is not a directory", dir);
        return kiln_error_set(err, KILN_EIO, errno, "open '%s'", dir);
    }
    if (force)
        return fd;
    int dupfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    DIR *d = dupfd < 0 ? NULL : fdopendir(dupfd);
    if (!d) {
        int e = errno;
        if (dupfd >= 0)
            close(dupfd);
        close(fd);
        return kiln_error_set(err, KILN_EIO, e, "read '%s'", dir);
    }
    bool empty = true;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0) {
            empty = false;
            break;
        }
    }
    closedir(d);
    if (!empty) {
        close(fd);
        return kiln_error_set(err, KILN_EEXIST, 0,
                              "'%s' is not empty (unpack into a new or empty directory, or force)",
                              dir);
    }
    return fd;
}

/* Resolve the name to an image manifest, picking a platform from an index. */
static int read_manifest(struct kiln_layout *layout, const char *ref_name,
                         const struct kiln_flatten_options *o, struct kiln_manifest *ret,
                         char digest[KILN_DIGEST_BUFSZ], struct kiln_error **err)
{
    _cleanup_(kiln_descriptor_release) struct kiln_descriptor desc = KILN_DESCRIPTOR_INIT;
    int r = kiln_layout_resolve(layout, ref_name, &desc, err);
    if (r < 0)
        return r;
    for (int depth = 0;; depth++) {
        _cleanup_free_ char *data = NULL;
        size_t len = 0;
        r = kiln_layout_blob_read(layout, desc.digest, KILN_MANIFEST_MAX_SIZE, &data, &len, err);
        if (r < 0)
            return r;
        enum kiln_manifest_kind kind;
        struct kiln_manifest m = KILN_MANIFEST_INIT;
        _cleanup_(kiln_index_release) struct kiln_index idx = KILN_INDEX_INIT;
        r = kiln_manifest_parse_any(data, len, desc.media_type, &kind, &m, &idx, err);
        if (r < 0)
            return kiln_error_prefix(err, "manifest %s", desc.digest);
        if (kind == KILN_KIND_MANIFEST) {
            snprintf(digest, KILN_DIGEST_BUFSZ, "%s", desc.digest);
            *ret = m;
            return 0;
        }
        if (depth >= 4)
            return kiln_error_set(err, KILN_EUNSUPPORTED, 0, "image indexes nested too deep");
        const struct kiln_descriptor *pick;
        r = kiln_index_select(&idx, o->os ? o->os : "linux", o->arch ? o->arch : "amd64",
                              o->variant, &pick, err);
        if (r < 0)
            return r;
        struct kiln_descriptor next = KILN_DESCRIPTOR_INIT;
        kiln_descriptor_copy(&next, pick);
        kiln_descriptor_release(&desc);
        desc = next;
    }
}

static int apply_layer(int rootfd, struct kiln_layout *layout, const struct kiln_descriptor *ld,
                       const char *diff_id, struct reader *rd, struct kiln_unpack_stats *st,
                       struct kiln_error **err)
{
    size_t i = rd->ev.layer, n = rd->ev.n_layers;
    if (kiln_manifest_layer_compression(ld->media_type) == KILN_COMPRESSION_UNKNOWN)
        return kiln_error_set(err, KILN_EUNSUPPORTED, 0,
                              "layer %zu of %zu (%s): unsupported media type '%s'", i + 1, n,
                              ld->digest, ld->media_type);
    int64_t size = 0;
    int fd = kiln_layout_blob_open(layout, ld->digest, &size, err);
    if (fd < 0)
        return kiln_error_prefix(err, "layer %zu of %zu", i + 1, n);
    rd->fd = fd;
    rd->last = 0;
    if (size != ld->size) {
        close(fd);
        return kiln_error_set(err, KILN_EINVAL, 0,
                              "layer %zu of %zu (%s): size mismatch: manifest says %" PRId64
                              ", blob has %" PRId64,
                              i + 1, n, ld->digest, ld->size, size);
    }
    if (report(rd) < 0) {
        close(fd);
        return kiln_error_set(err, KILN_ECANCELLED, 0, "unpack cancelled");
    }
    struct kiln_unpack_opts uo = {
        .mode = KILN_UNPACK_APPLY,
        .max_bytes = rd->o->max_bytes,
        .max_entries = rd->o->max_entries,
        .no_chown = rd->o->no_chown,
        .digest_compressed = true,
    };
    int r = kiln_unpack(rootfd, read_counted, rd, &uo, st, err);
    close(fd);
    if (r < 0 && rd->cancelled)
        return kiln_error_set(err, KILN_ECANCELLED, 0, "unpack cancelled");
    if (r < 0)
        return kiln_error_prefix(err, "layer %zu of %zu (%s)", i + 1, n, ld->digest);
    if (strcmp(st->stream.digest, ld->digest) != 0)
        return kiln_error_set(err, KILN_EINVAL, 0,
                              "layer %zu of %zu (%s): digest mismatch: content is %s", i + 1, n,
                              ld->digest, st->stream.digest);
    if (strcmp(st->stream.diff_id, diff_id) != 0)
        return kiln_error_set(err, KILN_EINVAL, 0,
                              "layer %zu of %zu (%s): diff_id mismatch: config says %s, content "
                              "is %s",
                              i + 1, n, ld->digest, diff_id, st->stream.diff_id);
    rd->ev.done = true;
    rd->ev.unpacked_bytes = st->bytes;
    if (report(rd) < 0)
        return kiln_error_set(err, KILN_ECANCELLED, 0, "unpack cancelled");
    return 0;
}

static int flatten(struct kiln_layout *layout, const char *ref_name, const char *dir,
                   const struct kiln_flatten_options *opts, struct kiln_flatten_result *ret,
                   struct kiln_error **err)
{
    static const struct kiln_flatten_options defaults = {0};
    const struct kiln_flatten_options *o = opts ? opts : &defaults;
    _cleanup_(kiln_manifest_release) struct kiln_manifest m = KILN_MANIFEST_INIT;
    _cleanup_(kiln_image_config_release) struct kiln_image_config cfg = KILN_IMAGE_CONFIG_INIT;
    struct kiln_flatten_result res = {0};
    int r = read_manifest(layout, ref_name, o, &m, res.manifest_digest, err);
    if (r < 0)
        return r;
    _cleanup_free_ char *cdata = NULL;
    size_t clen = 0;
    r = kiln_layout_blob_read(layout, m.config.digest, KILN_IMAGE_CONFIG_MAX_SIZE, &cdata, &clen,
                              err);
    if (r < 0)
        return kiln_error_prefix(err, "config");
    r = kiln_image_config_parse(cdata, clen, &cfg, err);
    if (r < 0)
        return kiln_error_prefix(err, "config %s", m.config.digest);
    size_t n = m.n_layers;
    if (kiln_image_config_n_diff_ids(&cfg) != n)
        return kiln_error_set(err, KILN_EINVAL, 0,
                              "the manifest lists %zu layers but the config has %zu diff_ids", n,
                              kiln_image_config_n_diff_ids(&cfg));
    struct reader rd = {.fd = -1, .o = o};
    rd.ev.n_layers = n;
    for (size_t i = 0; i < n; i++)
        rd.ev.total_size += (uint64_t)m.layers[i].size;

    _cleanup_close_ int rootfd = open_target(dir, o->force, err);
    if (rootfd < 0)
        return rootfd;
    for (size_t i = 0; i < n; i++) {
        const struct kiln_descriptor *ld = &m.layers[i];
        struct kiln_unpack_stats st;
        rd.ev.layer = i;
        rd.ev.digest = ld->digest;
        rd.ev.size = (uint64_t)ld->size;
        rd.ev.bytes = 0;
        rd.ev.done = false;
        rd.ev.unpacked_bytes = 0;
        r = apply_layer(rootfd, layout, ld, kiln_image_config_diff_id(&cfg, i), &rd, &st, err);
        if (r < 0)
            return r;
        res.compressed_bytes += st.stream.compressed_size;
        res.tar_bytes += st.stream.uncompressed_size;
        res.file_bytes += st.bytes;
        res.entries += st.entries;
        res.whiteouts += st.whiteouts;
        res.skipped += st.skipped;
    }
    res.n_layers = n;
    if (ret)
        *ret = res;
    return 0;
}

int kiln_flatten(struct kiln_layout *layout, const char *ref_name, const char *dir,
                 const struct kiln_flatten_options *opts, struct kiln_flatten_result *ret,
                 struct kiln_error **err)
{
    /* a local error, so that the prefixes above work when err is NULL */
    struct kiln_error *e = NULL;
    int r = flatten(layout, ref_name, dir, opts, ret, &e);
    if (r < 0 && err) {
        kiln_error_free(*err);
        *err = e;
    } else {
        kiln_error_free(e);
    }
    return r;
}
