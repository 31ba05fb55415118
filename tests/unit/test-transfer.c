/*
 * Unit test of registry/transfer.c without a network: OCI layout to OCI
 * layout copies exercise the plan (manifests, indexes, platforms, --all,
 * conversion to OCI types), the worker pool, skipping, progress events,
 * cancellation and failures. Registry transfers are covered by
 * tests/integration/test-transfer.sh against real registries.
 */
#include "util/common.h"

#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include "oci/layout.h"
#include "oci/manifest.h"
#include "oci/mediatype.h"
#include "registry/transfer.h"
#include "util/buf.h"
#include "tap.h"

static char tmproot[] = "/tmp/kiln-test-transfer-XXXXXX";

static void bail(const char *why)
{
    printf("Bail out! %s\n", why);
    exit(1);
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static char *path_of(const char *rel)
{
    return kiln_xasprintf("%s/%s", tmproot, rel);
}

/* Store `len` pseudo-random bytes made from `seed`; the digest goes to out. */
static void put_random(struct kiln_layout *l, const char *seed, size_t len,
                       char out[KILN_DIGEST_BUFSZ])
{
    char *data = kiln_xmalloc(len);
    uint64_t x = 1469598103934665603ULL;
    for (const char *p = seed; *p; p++)
        x = (x ^ (unsigned char)*p) * 1099511628211ULL;
    for (size_t i = 0; i < len; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data[i] = (char)(x & 0xff);
    }
    int r = kiln_layout_blob_write(l, data, len, NULL, out, NULL);
    if (r < 0)
        bail("store a blob");
    free(data);
}

static void put_json(struct kiln_layout *l, const char *json, char out[KILN_DIGEST_BUFSZ])
{
    if (kiln_layout_blob_write(l, json, strlen(json), NULL, out, NULL) < 0)
        bail("store a manifest");
}

/* An image with n layers; returns the manifest's digest and size. */
static void make_image(struct kiln_layout *l, const char *seed, const char *arch, int n,
                       bool docker, char digest[KILN_DIGEST_BUFSZ], size_t *size)
{
    struct kiln_buf m = KILN_BUF_INIT;
    struct kiln_buf c = KILN_BUF_INIT;
    char d[KILN_DIGEST_BUFSZ];
    kiln_buf_addf(&c,
                  "{\"architecture\":\"%s\",\"os\":\"linux\",\"rootfs\":{\"type\":\"layers\","
                  "\"diff_ids\":[",
                  arch);
    kiln_buf_addf(&m, "{\"schemaVersion\":2,\"mediaType\":\"%s\",",
                  docker ? KILN_MT_DOCKER_MANIFEST : KILN_MT_OCI_MANIFEST);
    struct kiln_buf layers = KILN_BUF_INIT;
    for (int i = 0; i < n; i++) {
        char *s = kiln_xasprintf("%s/%s/%d", seed, arch, i);
        size_t len = 1000 + (size_t)i * 70000;
        put_random(l, s, len, d);
        free(s);
        kiln_buf_addf(&layers, "%s{\"mediaType\":\"%s\",\"digest\":\"%s\",\"size\":%zu}",
                      i ? "," : "", docker ? KILN_MT_DOCKER_LAYER : KILN_MT_OCI_LAYER_TAR_GZ, d,
                      len);
        kiln_buf_addf(&c, "%s\"%s\"", i ? "," : "", d); /* any digest will do as a diff_id */
    }
    kiln_buf_adds(&c, "]}}");
    char cd[KILN_DIGEST_BUFSZ];
    put_json(l, c.buf, cd);
    kiln_buf_addf(&m, "\"config\":{\"mediaType\":\"%s\",\"digest\":\"%s\",\"size\":%zu},",
                  docker ? KILN_MT_DOCKER_CONFIG : KILN_MT_OCI_CONFIG, cd, c.len);
    kiln_buf_addf(&m, "\"layers\":[%s]}", layers.buf);
    put_json(l, m.buf, digest);
    *size = m.len;
    kiln_buf_release(&m);
    kiln_buf_release(&c);
    kiln_buf_release(&layers);
}

static void name_it(struct kiln_layout *l, const char *name, const char *mt, const char *digest,
                    size_t size)
{
    struct kiln_descriptor d = KILN_DESCRIPTOR_INIT;
    d.media_type = (char *)mt;
    d.digest = (char *)digest;
    d.size = (int64_t)size;
    if (kiln_layout_index_add(l, &d, name, NULL) < 0)
        bail("name an image");
}

struct counts {
    int kinds[KILN_TRANSFER_MANIFEST + 1];
    int cancel_at; /* cancel on this STARTED event (1-based), 0: never */
    int started;
    bool ordered; /* every blob's events came in a sane order */
    uint64_t last_total;
};

static int count_event(void *ud, const struct kiln_transfer_event *ev)
{
    struct counts *c = ud;
    c->kinds[ev->kind]++;
    if (ev->kind == KILN_TRANSFER_PLAN && ev->n_blobs == 0)
        c->ordered = false;
    if (ev->total_bytes > ev->total_size)
        c->ordered = false;
    if (ev->kind == KILN_TRANSFER_DONE && ev->bytes != ev->size)
        c->ordered = false;
    if (ev->kind == KILN_TRANSFER_STARTED && ++c->started == c->cancel_at)
        return 1;
    return 0;
}

static char *resolve(const char *dir, const char *name, struct kiln_descriptor *ret)
{
    struct kiln_layout *l = NULL;
    if (kiln_layout_open(dir, &l, NULL) < 0)
        return NULL;
    struct kiln_descriptor d = KILN_DESCRIPTOR_INIT;
    int r = kiln_layout_resolve(l, name, &d, NULL);
    kiln_layout_free(l);
    if (r < 0)
        return NULL;
    char *digest = kiln_xstrdup(d.digest);
    if (ret)
        *ret = d;
    else
        kiln_descriptor_release(&d);
    return digest;
}

int main(void)
{
    if (!mkdtemp(tmproot))
        bail("mkdtemp");
    char *src = path_of("src");
    struct kiln_layout *l = NULL;
    if (kiln_layout_create(src, &l, NULL) < 0)
        bail("create the source layout");

    char img[KILN_DIGEST_BUFSZ], amd[KILN_DIGEST_BUFSZ], arm[KILN_DIGEST_BUFSZ];
    char dimg[KILN_DIGEST_BUFSZ], idx[KILN_DIGEST_BUFSZ];
    size_t img_size, amd_size, arm_size, dimg_size;
    make_image(l, "img", "amd64", 3, false, img, &img_size);
    name_it(l, "img", KILN_MT_OCI_MANIFEST, img, img_size);
    make_image(l, "dimg", "amd64", 2, true, dimg, &dimg_size);
    name_it(l, "dimg", KILN_MT_DOCKER_MANIFEST, dimg, dimg_size);
    make_image(l, "multi", "amd64", 1, false, amd, &amd_size);
    make_image(l, "multi", "arm64", 2, false, arm, &arm_size);
    char *index = kiln_xasprintf(
        "{\"schemaVersion\":2,\"mediaType\":\"%s\",\"manifests\":["
        "{\"mediaType\":\"%s\",\"digest\":\"%s\",\"size\":%zu,"
        "\"platform\":{\"architecture\":\"amd64\",\"os\":\"linux\"}},"
        "{\"mediaType\":\"%s\",\"digest\":\"%s\",\"size\":%zu,"
        "\"platform\":{\"architecture\":\"arm64\",\"os\":\"linux\",\"variant\":\"v8\"}}]}",
        KILN_MT_OCI_INDEX, KILN_MT_OCI_MANIFEST, amd, amd_size, KILN_MT_OCI_MANIFEST, arm,
        arm_size);
    put_json(l, index, idx);
    name_it(l, "multi", KILN_MT_OCI_INDEX, idx, strlen(index));
    free(index);

    char *dst = path_of("dst");
    struct kiln_transfer_endpoint from = {.layout = src, .name = "img"};
    struct kiln_transfer_endpoint to = {.layout = dst};
    struct kiln_transfer_result res;
    struct counts c = {.ordered = true};
    struct kiln_transfer_options o = {.progress = {count_event, &c}};
    struct kiln_error *err = NULL;

    /* a plain image, into a new layout, named after the source */
    int r = kiln_transfer_copy(&from, &to, &o, &res, &err);
    ok(r == 0, "copy an image between layouts: %s", err ? err->msg : "ok");
    kiln_error_free(err);
    err = NULL;
    is_str(res.digest, img, "the result names the manifest");
    is_str(res.media_type, KILN_MT_OCI_MANIFEST, "and its media type");
    is_int((int)res.n_blobs, 4, "three layers and a config");
    is_int((int)res.n_transferred, 4, "all of them copied");
    is_int((int)res.n_manifests, 1, "one manifest written");
    is_int(c.kinds[KILN_TRANSFER_PLAN], 1, "one PLAN event");
    is_int(c.kinds[KILN_TRANSFER_STARTED], 4, "a STARTED event per blob");
    is_int(c.kinds[KILN_TRANSFER_DONE], 4, "a DONE event per blob");
    is_int(c.kinds[KILN_TRANSFER_MANIFEST], 1, "a MANIFEST event");
    ok(c.ordered, "the events are consistent");
    char *got = resolve(dst, "img", NULL);
    is_str(got, img, "the destination's index.json names the image after the source");
    free(got);

    /* again: everything is there */
    memset(&c, 0, sizeof(c));
    c.ordered = true;
    const char *tags[] = {"second", "third", NULL};
    o.tags = tags;
    o.jobs = 1;
    r = kiln_transfer_copy(&from, &to, &o, &res, NULL);
    ok(r == 0, "copy again");
    is_int((int)res.n_skipped, 4, "every blob is skipped");
    is_int(c.kinds[KILN_TRANSFER_SKIPPED], 4, "a SKIPPED event per blob");
    is_int(c.kinds[KILN_TRANSFER_STARTED], 0, "nothing started");
    got = resolve(dst, "third", NULL);
    is_str(got, img, "extra tags become names");
    free(got);
    o.tags = NULL;
    o.jobs = 0;

    /* an index: platform picked, or all of it */
    char *pdst = path_of("platforms");
    struct kiln_transfer_endpoint multi = {.layout = src, .name = "multi"};
    struct kiln_transfer_endpoint to_p = {.layout = pdst, .name = "amd"};
    r = kiln_transfer_copy(&multi, &to_p, NULL, &res, NULL);
    ok(r == 0, "copy from an index");
    is_str(res.digest, amd, "linux/amd64 is the default platform");
    struct kiln_descriptor d = KILN_DESCRIPTOR_INIT;
    got = resolve(pdst, "amd", &d);
    is_str(got, amd, "the destination names the amd64 manifest");
    ok(d.platform && !strcmp(d.platform->architecture, "amd64"), "with its platform");
    kiln_descriptor_release(&d);
    free(got);
    struct kiln_transfer_options po = {.arch = "arm64"};
    to_p.name = "arm";
    r = kiln_transfer_copy(&multi, &to_p, &po, &res, NULL);
    ok(r == 0 && !strcmp(res.digest, arm), "arch arm64 picks the arm64 manifest");
    is_int((int)res.n_blobs, 3, "its two layers and config");
    po.arch = "s390x";
    r = kiln_transfer_copy(&multi, &to_p, &po, &res, &err);
    is_int(r, -KILN_ENOTFOUND, "no manifest for s390x");
    ok(err && strstr(err->msg, "no manifest for platform 'linux/s390x'"), "named: %s",
       err ? err->msg : "");
    kiln_error_free(err);
    err = NULL;
    struct kiln_transfer_options ao = {.all = true};
    to_p.name = "all";
    r = kiln_transfer_copy(&multi, &to_p, &ao, &res, NULL);
    ok(r == 0, "copy all of an index");
    is_str(res.digest, idx, "the result is the index");
    is_int((int)res.n_manifests, 3, "two manifests and the index written");
    is_int((int)res.n_blobs, 5, "every blob of both images");
    is_int((int)res.n_skipped, 5, "all already there from the platform copies");

    /* docker types, kept or converted */
    char *ddst = path_of("docker");
    struct kiln_transfer_endpoint dsrc = {.layout = src, .name = "dimg"};
    struct kiln_transfer_endpoint to_d = {.layout = ddst, .name = "kept"};
    r = kiln_transfer_copy(&dsrc, &to_d, NULL, &res, NULL);
    ok(r == 0 && !strcmp(res.digest, dimg), "a docker image keeps its digest");
    is_str(res.media_type, KILN_MT_DOCKER_MANIFEST, "and its media type");
    struct kiln_transfer_options co = {.layout_oci_types = true};
    to_d.name = "converted";
    r = kiln_transfer_copy(&dsrc, &to_d, &co, &res, NULL);
    ok(r == 0 && strcmp(res.digest, dimg) != 0, "converted to OCI: a new digest");
    is_str(res.media_type, KILN_MT_OCI_MANIFEST, "with the OCI media type");
    is_int((int)res.n_skipped, 3, "the config and layers are the same blobs");
    {
        struct kiln_layout *dl = NULL;
        char *data = NULL;
        size_t len = 0;
        struct kiln_manifest m = KILN_MANIFEST_INIT;
        r = kiln_layout_open(ddst, &dl, NULL);
        if (r == 0)
            r = kiln_layout_blob_read(dl, res.digest, KILN_MANIFEST_MAX_SIZE, &data, &len, NULL);
        if (r == 0)
            r = kiln_manifest_parse(data, len, KILN_MT_OCI_MANIFEST, &m, NULL);
        ok(r == 0, "the converted manifest is stored and parses as OCI");
        ok(r == 0 && !strcmp(m.config.media_type, KILN_MT_OCI_CONFIG) && m.n_layers == 2 &&
               !strcmp(m.layers[0].media_type, KILN_MT_OCI_LAYER_TAR_GZ),
           "config and layers have OCI types");
        kiln_manifest_release(&m);
        free(data);
        kiln_layout_free(dl);
    }

    /* cancellation and failures leave no name behind */
    char *cdst = path_of("cancel");
    struct counts cc = {.cancel_at = 2, .ordered = true};
    struct kiln_transfer_options xo = {.jobs = 1, .progress = {count_event, &cc}};
    struct kiln_transfer_endpoint to_c = {.layout = cdst, .name = "x"};
    r = kiln_transfer_copy(&from, &to_c, &xo, &res, &err);
    is_int(r, -KILN_ECANCELLED, "a nonzero progress return cancels");
    ok(err && strstr(err->msg, "transfer cancelled"), "cancelled: %s", err ? err->msg : "");
    kiln_error_free(err);
    err = NULL;
    got = resolve(cdst, "x", NULL);
    ok(got == NULL, "a cancelled copy names nothing");
    free(got);

    /* a blob missing from the source */
    struct kiln_layout *sl = NULL;
    kiln_layout_open(src, &sl, NULL);
    char *m1 = NULL;
    size_t m1len = 0;
    struct kiln_manifest mm = KILN_MANIFEST_INIT;
    kiln_layout_blob_read(sl, arm, KILN_MANIFEST_MAX_SIZE, &m1, &m1len, NULL);
    kiln_manifest_parse(m1, m1len, NULL, &mm, NULL);
    char *victim = kiln_xasprintf("%s/blobs/sha256/%s", src, mm.layers[1].digest + 7);
    ok(unlink(victim) == 0, "remove a layer from the source");
    free(victim);
    struct kiln_transfer_options bo = {.arch = "arm64"};
    struct kiln_transfer_endpoint to_b = {.layout = path_of("broken"), .name = "b"};
    r = kiln_transfer_copy(&multi, &to_b, &bo, &res, &err);
    is_int(r, -KILN_ENOTFOUND, "a missing blob fails the copy");
    ok(err && strstr(err->msg, "copy 'oci:"), "the message names the copy: %s",
       err ? err->msg : "");
    kiln_error_free(err);
    err = NULL;
    got = resolve(to_b.layout, "b", NULL);
    ok(got == NULL, "a failed copy names nothing");
    free(got);
    free((char *)to_b.layout);
    kiln_manifest_release(&mm);
    free(m1);
    kiln_layout_free(sl);

    /* bad arguments */
    struct kiln_transfer_endpoint none = {0};
    r = kiln_transfer_copy(&none, &to, NULL, &res, NULL);
    is_int(r, -KILN_EINVAL, "an endpoint needs a reference or a layout");
    struct kiln_transfer_endpoint both = {.ref = "x/y:1", .layout = src};
    r = kiln_transfer_copy(&both, &to, NULL, &res, NULL);
    is_int(r, -KILN_EINVAL, "but not both");
    const char *bad_tags[] = {"no spaces", NULL};
    struct kiln_transfer_options to_bad = {.tags = bad_tags};
    r = kiln_transfer_copy(&from, &to, &to_bad, &res, &err);
    is_int(r, -KILN_EINVAL, "an invalid extra name is refused");
    kiln_error_free(err);
    err = NULL;
    struct kiln_transfer_endpoint noname = {.layout = src, .name = "nope"};
    r = kiln_transfer_copy(&noname, &to, NULL, &res, NULL);
    is_int(r, -KILN_ENOTFOUND, "an unknown source name");
    r = kiln_transfer_pull("Bad Ref", NULL, dst, NULL, NULL, &res, NULL);
    is_int(r, -KILN_EINVAL, "pull refuses an invalid reference");

    free(src);
    free(dst);
    free(pdst);
    free(ddst);
    free(cdst);
    kiln_layout_free(l);
    nftw(tmproot, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    return tap_done();
}
