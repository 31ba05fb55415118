/*
 * Tests for layer/flatten: layers built here as tars with libarchive (one
 * gzip-compressed), stored in a fresh OCI layout with a hand-made config and
 * manifest, then flattened into directories under /tmp.
 */
#include "util/common.h"
#include "layer/flatten.h"
#include "oci/config.h"
#include "oci/layout.h"
#include "oci/manifest.h"
#include "util/buf.h"
#include "util/fs.h"
#include "util/sha256.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tap.h"

static char base_dir[64];

struct ent {
    char type; /* f file, d dir, l symlink */
    const char *path;
    const char *content; /* file content or link target */
};

static la_ssize_t write_cb(struct archive *a, void *ud, const void *buf, size_t n)
{
    kiln_buf_add(ud, buf, n);
    return (la_ssize_t)n;
}

static void make_tar(struct kiln_buf *out, const struct ent *ents, size_t n, bool gzip)
{
    struct archive *a = archive_write_new();
    archive_write_set_format_pax_restricted(a);
    if (gzip)
        archive_write_add_filter_gzip(a);
    archive_write_set_bytes_in_last_block(a, 1);
    archive_write_open(a, out, NULL, write_cb, NULL);
    for (size_t i = 0; i < n; i++) {
        struct archive_entry *e = archive_entry_new();
        archive_entry_set_pathname(e, ents[i].path);
        archive_entry_set_mtime(e, 1700000000, 0);
        size_t len = 0;
        switch (ents[i].type) {
        case 'd':
            archive_entry_set_filetype(e, AE_IFDIR);
            archive_entry_set_perm(e, 0755);
            break;
        case 'l':
            archive_entry_set_filetype(e, AE_IFLNK);
            archive_entry_set_perm(e, 0777);
            archive_entry_set_symlink(e, ents[i].content);
            break;
        default:
            len = ents[i].content ? strlen(ents[i].content) : 0;
            archive_entry_set_filetype(e, AE_IFREG);
            archive_entry_set_perm(e, 0644);
            archive_entry_set_size(e, (la_int64_t)len);
            break;
        }
        archive_write_header(a, e);
        if (len)
            archive_write_data(a, ents[i].content, len);
        archive_entry_free(e);
    }
    archive_write_close(a);
    archive_write_free(a);
}

/* The sha256 of the uncompressed stream: the tar itself, or gunzipped. */
static void tar_diff_id(const struct kiln_buf *tar, char out[KILN_DIGEST_BUFSZ])
{
    char hex[KILN_SHA256_HEX_LEN + 1];
    kiln_sha256_hex(tar->buf, tar->len, hex);
    snprintf(out, KILN_DIGEST_BUFSZ, "sha256:%s", hex);
}

struct layer {
    const struct ent *ents;
    size_t n;
    bool gzip;
};

/*
 * Store an image of these layers in a new layout `name` under base_dir,
 * tagged "img". With bad_diff_id >= 0, that layer's diff_id in the config is
 * wrong.
 */
static struct kiln_layout *make_image(const char *name, const struct layer *layers, size_t n,
                                      int bad_diff_id)
{
    char *dir = kiln_xasprintf("%s/%s", base_dir, name);
    struct kiln_layout *l = NULL;
    if (kiln_layout_create(dir, &l, NULL) < 0) {
        free(dir);
        return NULL;
    }
    free(dir);
    struct kiln_image_config cfg = KILN_IMAGE_CONFIG_INIT;
    kiln_image_config_new(&cfg, "linux", "amd64", NULL);
    struct kiln_manifest m = KILN_MANIFEST_INIT;
    m.media_type = kiln_xstrdup(KILN_MT_OCI_MANIFEST);
    for (size_t i = 0; i < n; i++) {
        struct kiln_buf tar = KILN_BUF_INIT, blob = KILN_BUF_INIT;
        make_tar(&tar, layers[i].ents, layers[i].n, false);
        char diff_id[KILN_DIGEST_BUFSZ], digest[KILN_DIGEST_BUFSZ];
        tar_diff_id(&tar, diff_id);
        if ((int)i == bad_diff_id)
            diff_id[7] = diff_id[7] == '0' ? '1' : '0';
        kiln_image_config_add_diff_id(&cfg, diff_id, NULL);
        if (layers[i].gzip)
            make_tar(&blob, layers[i].ents, layers[i].n, true);
        const struct kiln_buf *b = layers[i].gzip ? &blob : &tar;
        kiln_layout_blob_write(l, b->buf, b->len, NULL, digest, NULL);
        struct kiln_descriptor ld = KILN_DESCRIPTOR_INIT;
        ld.media_type =
            kiln_xstrdup(layers[i].gzip ? KILN_MT_OCI_LAYER_TAR_GZ : KILN_MT_OCI_LAYER_TAR);
        ld.digest = kiln_xstrdup(digest);
        ld.size = (int64_t)b->len;
        kiln_manifest_add_layer(&m, &ld);
        kiln_descriptor_release(&ld);
        kiln_buf_release(&tar);
        kiln_buf_release(&blob);
    }
    struct kiln_buf cb = KILN_BUF_INIT, mb = KILN_BUF_INIT;
    char config_d[KILN_DIGEST_BUFSZ], manifest_d[KILN_DIGEST_BUFSZ];
    kiln_image_config_serialize(&cfg, &cb, NULL);
    kiln_layout_blob_write(l, cb.buf, cb.len, NULL, config_d, NULL);
    m.config.media_type = kiln_xstrdup(KILN_MT_OCI_CONFIG);
    m.config.digest = kiln_xstrdup(config_d);
    m.config.size = (int64_t)cb.len;
    kiln_manifest_serialize(&m, &mb, NULL);
    kiln_layout_blob_write(l, mb.buf, mb.len, NULL, manifest_d, NULL);
    struct kiln_descriptor md = KILN_DESCRIPTOR_INIT;
    md.media_type = kiln_xstrdup(KILN_MT_OCI_MANIFEST);
    md.digest = kiln_xstrdup(manifest_d);
    md.size = (int64_t)mb.len;
    kiln_layout_index_add(l, &md, "img", NULL);
    kiln_descriptor_release(&md);
    kiln_manifest_release(&m);
    kiln_image_config_release(&cfg);
    kiln_buf_release(&cb);
    kiln_buf_release(&mb);
    return l;
}

static bool exists(const char *root, const char *path)
{
    char *p = kiln_xasprintf("%s/%s", root, path);
    struct stat st;
    bool r = lstat(p, &st) == 0;
    free(p);
    return r;
}

static char *content(const char *root, const char *path)
{
    char *p = kiln_xasprintf("%s/%s", root, path);
    char buf[256];
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    free(p);
    if (fd < 0)
        return kiln_xstrdup("<missing>");
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    buf[n < 0 ? 0 : n] = '\0';
    return kiln_xstrdup(buf);
}

struct count {
    size_t starts, dones;
    size_t last_layer, n_layers;
    uint64_t total_bytes;
};

static int on_progress(void *userdata, const struct kiln_flatten_event *ev)
{
    struct count *c = userdata;
    if (ev->done)
        c->dones++;
    else if (ev->bytes == 0)
        c->starts++;
    c->last_layer = ev->layer;
    c->n_layers = ev->n_layers;
    c->total_bytes = ev->total_bytes;
    return 0;
}

static const struct ent base_ents[] = {
    {'d', "etc/", NULL},
    {'f', "etc/passwd", "root:x:0:0\n"},
    {'f', "etc/motd", "hello\n"},
    {'d', "opt/", NULL},
    {'d', "opt/app/", NULL},
    {'f', "opt/app/old1", "one\n"},
    {'f', "opt/app/old2", "two\n"},
    {'d', "opt/app/sub/", NULL},
    {'f', "opt/app/sub/deep", "deep\n"},
    {'d', "usr/", NULL},
    {'d', "usr/bin/", NULL},
    {'l', "bin", "usr/bin"},
    {'f', "usr/bin/tool", "v1\n"},
};

static const struct ent mid_ents[] = {
    {'f', "etc/.wh.motd", ""},         /* delete a lower file */
    {'d', "opt/app/", NULL},           /* opaque: the lower contents go */
    {'f', "opt/app/.wh..wh..opq", ""}, /* ... */
    {'f', "opt/app/new", "new\n"},     /* ... but this layer's entries stay */
    {'f', "usr/bin/tool", "v2\n"},     /* replace a file */
};

static const struct ent top_ents[] = {
    {'f', ".wh.bin", ""}, /* delete a symlink */
    {'d', "home/", NULL},
    {'f', "home/readme", "hi\n"},
};

static void test_apply(void)
{
    const struct layer layers[] = {
        {base_ents, KILN_ARRAY_SIZE(base_ents), true},
        {mid_ents, KILN_ARRAY_SIZE(mid_ents), false},
        {top_ents, KILN_ARRAY_SIZE(top_ents), true},
    };
    struct kiln_layout *l = make_image("layout", layers, 3, -1);
    ok(l != NULL, "image made");
    if (!l)
        return;
    char *root = kiln_xasprintf("%s/root", base_dir);
    struct count c = {0};
    struct kiln_flatten_options o = {.progress = on_progress, .userdata = &c};
    struct kiln_flatten_result res;
    struct kiln_error *err = NULL;
    int r = kiln_flatten(l, "img", root, &o, &res, &err);
    is_int(r, 0, "flatten 3 layers%s%s", err ? ": " : "", err ? err->msg : "");
    kiln_error_free(err);
    err = NULL;
    is_int((int)res.n_layers, 3, "3 layers in the result");
    ok(strncmp(res.manifest_digest, "sha256:", 7) == 0, "manifest digest reported");
    ok(res.whiteouts >= 3, "whiteouts counted (%" PRIu64 ")", res.whiteouts);
    is_int((int)c.starts, 3, "a start event per layer");
    is_int((int)c.dones, 3, "a done event per layer");
    is_int((int)c.n_layers, 3, "events know n");
    is_int((int)c.last_layer, 2, "last event for layer 3");
    ok(c.total_bytes == res.compressed_bytes, "total bytes = compressed sizes");

    char *s;
    is_str(s = content(root, "etc/passwd"), "root:x:0:0\n", "lower file kept");
    free(s);
    ok(!exists(root, "etc/motd"), "whiteout deleted a lower file");
    ok(!exists(root, "etc/.wh.motd"), "no whiteout file left");
    ok(!exists(root, "opt/app/old1") && !exists(root, "opt/app/old2") &&
           !exists(root, "opt/app/sub"),
       "opaque dir dropped the lower contents");
    is_str(s = content(root, "opt/app/new"), "new\n", "opaque dir keeps its layer's file");
    free(s);
    ok(!exists(root, "opt/app/.wh..wh..opq"), "no opaque marker left");
    is_str(s = content(root, "usr/bin/tool"), "v2\n", "upper file replaces lower");
    free(s);
    ok(!exists(root, "bin"), "whiteout deleted a symlink");
    is_str(s = content(root, "home/readme"), "hi\n", "top layer file");
    free(s);

    /* a second flatten into the now non-empty directory */
    r = kiln_flatten(l, "img", root, NULL, NULL, &err);
    is_int(r, -KILN_EEXIST, "non-empty directory refused");
    ok(err && strstr(err->msg, "not empty"), "message: %s", err ? err->msg : "(none)");
    kiln_error_free(err);
    err = NULL;
    is_str(s = content(root, "home/readme"), "hi\n", "refusal left the tree alone");
    free(s);
    struct kiln_flatten_options force = {.force = true};
    is_int(kiln_flatten(l, "img", root, &force, NULL, NULL), 0, "force applies over it");

    /* an existing empty directory is fine; a file is not */
    char *empty = kiln_xasprintf("%s/empty", base_dir);
    mkdir(empty, 0755);
    is_int(kiln_flatten(l, "img", empty, NULL, NULL, NULL), 0, "empty directory accepted");
    ok(exists(empty, "opt/app/new"), "into the empty directory");
    char *file = kiln_xasprintf("%s/file", base_dir);
    int fd = open(file, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd >= 0)
        close(fd);
    is_int(kiln_flatten(l, "img", file, NULL, NULL, NULL), -KILN_EEXIST, "a file is refused");
    char *noparent = kiln_xasprintf("%s/no/such", base_dir);
    is_int(kiln_flatten(l, "img", noparent, NULL, NULL, NULL), -KILN_ENOTFOUND,
           "missing parent refused");
    is_int(kiln_flatten(l, "nope", empty, &force, NULL, NULL), -KILN_ENOTFOUND, "unknown ref name");

    free(noparent);
    free(file);
    free(empty);
    free(root);
    kiln_layout_free(l);
}

static void test_diff_id_mismatch(void)
{
    const struct layer layers[] = {
        {base_ents, KILN_ARRAY_SIZE(base_ents), true},
        {mid_ents, KILN_ARRAY_SIZE(mid_ents), false},
    };
    struct kiln_layout *l = make_image("bad", layers, 2, 1);
    ok(l != NULL, "bad image made");
    if (!l)
        return;
    char *root = kiln_xasprintf("%s/badroot", base_dir);
    struct kiln_error *err = NULL;
    int r = kiln_flatten(l, NULL, root, NULL, NULL, &err);
    is_int(r, -KILN_EINVAL, "diff_id mismatch is an error");
    ok(err && strstr(err->msg, "layer 2 of 2") && strstr(err->msg, "diff_id mismatch"),
       "message names the layer: %s", err ? err->msg : "(none)");
    kiln_error_free(err);
    free(root);
    kiln_layout_free(l);
}

int main(void)
{
    snprintf(base_dir, sizeof(base_dir), "/tmp/kiln-test-flatten.XXXXXX");
    if (!mkdtemp(base_dir)) {
        ok(0, "mkdtemp");
        return tap_done();
    }
    test_apply();
    test_diff_id_mismatch();
    /* kiln_fs_rm_rf_at() takes a relative path */
    int tmpfd = open("/tmp", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (tmpfd >= 0) {
        kiln_fs_rm_rf_at(tmpfd, base_dir + strlen("/tmp/"), NULL);
        close(tmpfd);
    }
    return tap_done();
}
