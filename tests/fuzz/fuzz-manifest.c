/*
 * Fuzz the manifest / index parser and the image config parser. Every input
 * goes to kiln_manifest_parse_any() (without a content type, and with one
 * picked by its length) and to kiln_image_config_parse(). Whatever parses
 * must serialise, the bytes must parse again, and serialising that must give
 * the same bytes; index platform selection and the config accessors run on
 * what parsed. A failure must come with a message. Anything else aborts.
 */
#include "util/common.h"

#include "oci/config.h"
#include "oci/digest.h"
#include "oci/manifest.h"
#include "util/buf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define EMPTY_DIGEST "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

static const char *const content_types[] = {
    KILN_MT_OCI_MANIFEST,           KILN_MT_OCI_INDEX,
    KILN_MT_DOCKER_MANIFEST,        KILN_MT_DOCKER_MANIFEST_LIST,
    KILN_MT_DOCKER_SCHEMA1_SIGNED,  "application/json; charset=utf-8",
    "application/vnd.example+json",
};

static void check(bool cond, const char *what)
{
    if (cond)
        return;
    fprintf(stderr, "fuzz-manifest: %s\n", what);
    abort();
}

static void check_error(int r, struct kiln_error *e, const char *what)
{
    check(r < 0 && e && e->code > 0 && e->code < KILN_ECODE_MAX && e->msg && *e->msg &&
              -r == e->code,
          what);
}

static void manifest_round_trip(const struct kiln_manifest *m)
{
    struct kiln_buf a = KILN_BUF_INIT, b = KILN_BUF_INIT;
    struct kiln_error *e = NULL;
    int r = kiln_manifest_serialize(m, &a, &e);
    if (r < 0)
        fprintf(stderr, "serialise: %s\n", e ? e->msg : "?");
    check(r == 0, "parsed manifest does not serialise");
    struct kiln_manifest again = KILN_MANIFEST_INIT;
    r = kiln_manifest_parse(a.buf, a.len, m->media_type, &again, &e);
    if (r < 0)
        fprintf(stderr, "re-parse: %s\n%s\n", e ? e->msg : "?", a.buf);
    check(r == 0, "serialised manifest does not parse");
    check(again.n_layers == m->n_layers, "layer count changed");
    check(kiln_manifest_serialize(&again, &b, NULL) == 0, "re-parsed manifest does not serialise");
    check(a.len == b.len && memcmp(a.buf, b.buf, a.len) == 0, "manifest round trip differs");

    /* a deep copy serialises the same */
    struct kiln_manifest copy = KILN_MANIFEST_INIT;
    copy.media_type = m->media_type ? kiln_xstrdup(m->media_type) : NULL;
    copy.artifact_type = m->artifact_type ? kiln_xstrdup(m->artifact_type) : NULL;
    kiln_descriptor_copy(&copy.config, &m->config);
    for (size_t i = 0; i < m->n_layers; i++)
        kiln_manifest_add_layer(&copy, &m->layers[i]);
    kiln_buf_reset(&b);
    check(kiln_manifest_serialize(&copy, &b, NULL) == 0, "copy does not serialise");
    kiln_manifest_release(&copy);

    for (size_t i = 0; i < m->n_layers; i++)
        (void)kiln_manifest_layer_compression(m->layers[i].media_type);
    /* conversion either works and still serialises, or leaves the struct alone */
    struct kiln_manifest conv = KILN_MANIFEST_INIT;
    kiln_manifest_parse(a.buf, a.len, m->media_type, &conv, NULL);
    for (int f = KILN_FORMAT_OCI; f <= KILN_FORMAT_DOCKER; f++) {
        struct kiln_error *ce = NULL;
        r = kiln_manifest_convert(&conv, (enum kiln_manifest_format)f, &ce);
        if (r < 0)
            check_error(r, ce, "conversion failed without a message");
        kiln_error_free(ce);
        kiln_buf_reset(&b);
        check(kiln_manifest_serialize(&conv, &b, NULL) == 0,
              "converted manifest does not serialise");
    }
    kiln_manifest_release(&conv);
    kiln_manifest_release(&again);
    kiln_error_free(e);
    kiln_buf_release(&a);
    kiln_buf_release(&b);
}

static void index_round_trip(const struct kiln_index *idx)
{
    struct kiln_buf a = KILN_BUF_INIT, b = KILN_BUF_INIT;
    struct kiln_error *e = NULL;
    int r = kiln_index_serialize(idx, &a, &e);
    if (r < 0)
        fprintf(stderr, "serialise: %s\n", e ? e->msg : "?");
    check(r == 0, "parsed index does not serialise");
    struct kiln_index again = KILN_INDEX_INIT;
    r = kiln_index_parse(a.buf, a.len, idx->media_type, &again, &e);
    if (r < 0)
        fprintf(stderr, "re-parse: %s\n%s\n", e ? e->msg : "?", a.buf);
    check(r == 0, "serialised index does not parse");
    check(again.n_manifests == idx->n_manifests, "entry count changed");
    check(kiln_index_serialize(&again, &b, NULL) == 0, "re-parsed index does not serialise");
    check(a.len == b.len && memcmp(a.buf, b.buf, a.len) == 0, "index round trip differs");

    static const char *const plats[][3] = {
        {"linux", "amd64", NULL},   {"linux", "arm64", NULL},  {"linux", "arm", "v6"},
        {"windows", "amd64", NULL}, {"linux", "x86_64", "v3"},
    };
    for (size_t i = 0; i < KILN_ARRAY_SIZE(plats); i++) {
        const struct kiln_descriptor *d = NULL;
        struct kiln_error *se = NULL;
        r = kiln_index_select(idx, plats[i][0], plats[i][1], plats[i][2], &d, &se);
        if (r == 0)
            check(d >= idx->manifests && d < idx->manifests + idx->n_manifests && d->platform,
                  "selected descriptor not from the index");
        else
            check_error(r, se, "select failed without a message");
        kiln_error_free(se);
    }
    for (int f = KILN_FORMAT_OCI; f <= KILN_FORMAT_DOCKER; f++) {
        struct kiln_error *ce = NULL;
        r = kiln_index_convert(&again, (enum kiln_manifest_format)f, &ce);
        if (r < 0)
            check_error(r, ce, "index conversion failed without a message");
        kiln_error_free(ce);
        kiln_buf_reset(&b);
        check(kiln_index_serialize(&again, &b, NULL) == 0, "converted index does not serialise");
    }
    kiln_index_release(&again);
    kiln_error_free(e);
    kiln_buf_release(&a);
    kiln_buf_release(&b);
}

static void fuzz_manifest(const char *in, size_t size, const char *ct)
{
    enum kiln_manifest_kind kind = KILN_KIND_UNKNOWN;
    struct kiln_manifest m = KILN_MANIFEST_INIT;
    struct kiln_index idx = KILN_INDEX_INIT;
    struct kiln_error *e = NULL;
    int r = kiln_manifest_parse_any(in, size, ct, &kind, &m, &idx, &e);
    if (r < 0) {
        check_error(r, e, "manifest failure without a message");
        check(kind == KILN_KIND_UNKNOWN && !m.layers && !idx.manifests, "outputs set on failure");
        kiln_error_free(e);
        return;
    }
    check(!e, "error set on success");
    if (kind == KILN_KIND_MANIFEST) {
        check(!idx.manifests, "index set for a manifest");
        manifest_round_trip(&m);
    } else {
        check(kind == KILN_KIND_INDEX && !m.layers, "bad kind");
        index_round_trip(&idx);
    }
    kiln_manifest_release(&m);
    kiln_index_release(&idx);
}

static void fuzz_config(const char *in, size_t size)
{
    struct kiln_image_config c = KILN_IMAGE_CONFIG_INIT;
    struct kiln_error *e = NULL;
    int r = kiln_image_config_parse(in, size, &c, &e);
    if (r < 0) {
        check_error(r, e, "config failure without a message");
        check(c.root == NULL, "config set on failure");
        kiln_error_free(e);
        return;
    }
    struct kiln_buf a = KILN_BUF_INIT, b = KILN_BUF_INIT;
    check(kiln_image_config_serialize(&c, &a, NULL) == 0, "parsed config does not serialise");
    struct kiln_image_config again = KILN_IMAGE_CONFIG_INIT;
    check(kiln_image_config_parse(a.buf, a.len, &again, NULL) == 0,
          "serialised config does not parse");
    check(kiln_image_config_serialize(&again, &b, NULL) == 0,
          "re-parsed config does not serialise");
    check(a.len == b.len && memcmp(a.buf, b.buf, a.len) == 0, "config round trip differs");

    /* the accessors on whatever parsed */
    check(kiln_image_config_get(&c, KILN_IC_OS) && kiln_image_config_get(&c, KILN_IC_ARCHITECTURE),
          "valid config without os/architecture");
    struct kiln_strv sv = KILN_STRV_INIT;
    kiln_image_config_env(&c, &sv);
    for (size_t i = 0; i < sv.n; i++) {
        char *name = kiln_xstrndup(sv.v[i], strcspn(sv.v[i], "="));
        check(kiln_image_config_env_get(&c, name) != NULL, "env entry not found by name");
        free(name);
    }
    kiln_strv_release(&sv);
    kiln_image_config_entrypoint(&c, &sv);
    kiln_image_config_cmd(&c, &sv);
    kiln_image_config_exposed_ports(&c, &sv);
    kiln_image_config_volumes(&c, &sv);
    kiln_strv_release(&sv);
    for (size_t i = 0; i < kiln_image_config_n_diff_ids(&c); i++)
        check(kiln_digest_validate(kiln_image_config_diff_id(&c, i), NULL) == 0,
              "invalid diff_id accepted");
    struct kiln_history h;
    for (size_t i = 0; i < kiln_image_config_n_history(&c); i++)
        check(kiln_image_config_history(&c, i, &h) == 0, "history entry missing");

    /* edits keep it valid */
    check(kiln_image_config_env_set(&c, "PATH", "/usr/bin", NULL) == 0, "env_set failed");
    check(kiln_image_config_set_label(&c, "org.example", "x", NULL) == 0, "set_label failed");
    check(kiln_image_config_set(&c, KILN_IC_USER, "1000", NULL) == 0, "set User failed");
    kiln_image_config_add_diff_id(&c, EMPTY_DIGEST, NULL);
    struct kiln_history nh = {"2024-01-01T00:00:00Z", "fuzz", NULL, NULL, true};
    kiln_image_config_add_history(&c, &nh, NULL);
    kiln_buf_reset(&b);
    struct kiln_error *se = NULL;
    r = kiln_image_config_serialize(&c, &b, &se);
    if (r < 0)
        fprintf(stderr, "edited: %s\n", se ? se->msg : "?");
    check(r == 0, "edited config does not serialise");

    kiln_image_config_release(&again);
    kiln_image_config_release(&c);
    kiln_buf_release(&a);
    kiln_buf_release(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* a little past the caps, so the size checks are reached too */
    if (size > KILN_IMAGE_CONFIG_MAX_SIZE + 16)
        return 0;
    char *in = kiln_xmalloc(size + 1);
    memcpy(in, data, size);
    in[size] = '\0';

    fuzz_manifest(in, size, NULL);
    fuzz_manifest(in, size, content_types[size % KILN_ARRAY_SIZE(content_types)]);
    fuzz_config(in, size);
    (void)kiln_digest_is_valid(in);
    (void)kiln_manifest_kind_of(in);

    free(in);
    return 0;
}
