/* The shared step cache's documents (build/stepcache.h); the local records are in test-plan.c. */
#include "util/common.h"

#include "build/stepcache.h"
#include "util/buf.h"
#include "tap.h"

#define KEY   "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define KEY2  "1123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define DIFF  "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define LAYER "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
#define CFG   "sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"
#define MT_GZ "application/vnd.oci.image.layer.v1.tar+gzip"

static struct kiln_step_record record(void)
{
    struct kiln_step_record rec;
    memset(&rec, 0, sizeof(rec));
    snprintf(rec.digest, sizeof(rec.digest), "%s", LAYER);
    snprintf(rec.diff_id, sizeof(rec.diff_id), "%s", DIFF);
    rec.size = 1234;
    snprintf(rec.media_type, sizeof(rec.media_type), "%s", MT_GZ);
    snprintf(rec.created, sizeof(rec.created), "2024-05-06T07:08:09Z");
    return rec;
}

static void test_tag(void)
{
    char tag[KILN_STEPCACHE_TAG_LEN + 1];
    struct kiln_error *err = NULL;
    is_int(kiln_stepcache_tag(KEY, tag, &err), 0, "tag of a key");
    is_str(tag, "step-" KEY, "tag is step-<key>");
    is_int((int)strlen(tag), 69, "69 characters (the tag grammar allows 128)");
    is_int(kiln_stepcache_tag("ABC", tag, &err), -KILN_EINVAL, "a bad key has no tag");
    kiln_error_free(err);
}

static int parse_cfg(const char *text, const char *key, const char *kind,
                     struct kiln_step_record *rec, struct kiln_error **err)
{
    return kiln_stepcache_config_parse(text, strlen(text), key, kind, rec, err);
}

static void test_config(void)
{
    struct kiln_step_record rec = record();
    struct kiln_buf b = KILN_BUF_INIT;
    struct kiln_error *err = NULL;
    is_int(
        kiln_stepcache_config_make(KEY, "apt", "RUN /bin/sh -c 'x' \"y\"", &rec, "1.2.3", &b, &err),
        0, "config made");
    ok(strstr(b.buf, "\"kiln_version\":\"1.2.3\"") != NULL, "config names kiln's version");
    ok(strstr(b.buf, "\"created_by\":\"RUN /bin/sh -c 'x' \\\"y\\\"\"") != NULL,
       "config holds the step text, JSON-escaped");

    struct kiln_step_record got;
    memset(&got, 0, sizeof(got));
    is_int(kiln_stepcache_config_parse(b.buf, b.len, KEY, "apt", &got, &err), 0,
           "config read back");
    is_str(got.diff_id, DIFF, "diff_id read back");
    is_str(got.created, "2024-05-06T07:08:09Z", "created read back");
    is_str(got.digest, "", "the layer fields are untouched");

    memset(&got, 0, sizeof(got));
    is_int(kiln_stepcache_config_parse(b.buf, b.len, KEY2, "apt", &got, &err), -KILN_EINVAL,
           "another key is refused");
    ok(err && strstr(err->msg, "names another key"), "... saying so: %s", err ? err->msg : "");
    kiln_error_free(err);
    err = NULL;
    is_str(got.diff_id, "", "... and *ret is untouched");
    is_int(kiln_stepcache_config_parse(b.buf, b.len, KEY, "pip", &got, &err), -KILN_EINVAL,
           "another kind is refused");
    kiln_error_free(err);
    err = NULL;
    kiln_buf_release(&b);

    static const char *const bad[] = {
        "",
        "[]",
        "{\"key\":\"" KEY "\",\"kind\":\"apt\",\"diff_id\":\"" DIFF "\"}",
        "{\"key\":\"" KEY "\",\"kind\":\"apt\",\"diff_id\":\"sha256:xyz\",\"created\":"
        "\"2024-05-06T07:08:09Z\"}",
        "{\"key\":\"" KEY "\",\"kind\":\"apt\",\"diff_id\":\"" DIFF "\",\"created\":\"yesterday\"}",
        "{\"key\":\"" KEY "\",\"kind\":\"apt\",\"diff_id\":\"" DIFF "\",\"created\":"
        "\"2024-05-06T07:08:09\"}",
        "{\"key\":\"" KEY "\",\"kind\":\"apt\",\"diff_id\":\"" DIFF "\",\"created\":"
        "\"2024-05-06T07:08:09.1234567890Z\"}",
        "{\"key\":\"" KEY "\",\"key\":\"" KEY "\",\"kind\":\"apt\",\"diff_id\":\"" DIFF
        "\",\"created\":\"2024-05-06T07:08:09Z\"}",
        "{\"key\":" KEY ",\"kind\":\"apt\"}",
        NULL,
    };
    for (size_t i = 0; bad[i]; i++) {
        ok(parse_cfg(bad[i], KEY, "apt", &got, &err) == -KILN_EINVAL, "bad config %zu refused: %s",
           i, err ? err->msg : "");
        kiln_error_free(err);
        err = NULL;
    }
    static const char *const good[] = {
        "{\"key\":\"" KEY "\",\"kind\":\"apt\",\"diff_id\":\"" DIFF "\",\"created\":"
        "\"2024-05-06T07:08:09.123456789Z\"}",
        "{\"key\":\"" KEY "\",\"kind\":\"apt\",\"diff_id\":\"" DIFF "\",\"created\":"
        "\"2024-05-06T07:08:09+02:00\",\"extra\":[1]}",
        NULL,
    };
    for (size_t i = 0; good[i]; i++) {
        ok(parse_cfg(good[i], KEY, "apt", &got, &err) == 0, "config %zu accepted%s%s", i,
           err ? ": " : "", err ? err->msg : "");
        kiln_error_free(err);
        err = NULL;
    }

    /* the size cap comes first */
    size_t n = KILN_STEPCACHE_CONFIG_MAX + 1;
    char *big = kiln_xmalloc(n);
    memset(big, ' ', n);
    is_int(kiln_stepcache_config_parse(big, n, KEY, "apt", &got, &err), -KILN_ETOOBIG,
           "a config over the cap is refused");
    kiln_error_free(err);
    free(big);
}

static int parse_man(const char *text, char cfg[KILN_DIGEST_BUFSZ], uint64_t *size,
                     struct kiln_step_record *rec, struct kiln_error **err)
{
    return kiln_stepcache_manifest_parse(text, strlen(text), NULL, cfg, size, rec, err);
}

#define MAN(mt, cmt, csize, layers)                                                                \
    "{\"schemaVersion\":2,\"mediaType\":\"" mt "\",\"config\":{\"mediaType\":\"" cmt               \
    "\",\"digest\":\"" CFG "\",\"size\":" csize "},\"layers\":[" layers "]}"
#define LAYER_DESC(mt) "{\"mediaType\":\"" mt "\",\"digest\":\"" LAYER "\",\"size\":1234}"
#define OCI_MAN        "application/vnd.oci.image.manifest.v1+json"

static void test_manifest(void)
{
    struct kiln_step_record rec = record();
    struct kiln_buf b = KILN_BUF_INIT;
    struct kiln_error *err = NULL;
    is_int(kiln_stepcache_manifest_make(CFG, 321, &rec, &b, &err), 0, "manifest made");
    char cfg[KILN_DIGEST_BUFSZ] = "";
    uint64_t csize = 0;
    struct kiln_step_record got;
    memset(&got, 0, sizeof(got));
    is_int(kiln_stepcache_manifest_parse(b.buf, b.len, OCI_MAN, cfg, &csize, &got, &err), 0,
           "manifest read back%s%s", err ? ": " : "", err ? err->msg : "");
    is_str(cfg, CFG, "config digest");
    is_int((int)csize, 321, "config size");
    is_str(got.digest, LAYER, "layer digest");
    is_str(got.media_type, MT_GZ, "layer media type as committed");
    is_int((int)got.size, 1234, "layer size");
    is_str(got.diff_id, "", "diff_id untouched (the config has it)");
    kiln_buf_release(&b);

    ok(parse_man(MAN(OCI_MAN, KILN_STEPCACHE_CONFIG_MT, "10",
                     LAYER_DESC("application/vnd.docker.image.rootfs.diff.tar.gzip")),
                 cfg, &csize, &got, &err) == 0,
       "a docker layer type is accepted");
    static const char *const bad[] = {
        "",
        "{}",
        MAN(OCI_MAN, "application/vnd.oci.image.config.v1+json", "10", LAYER_DESC(MT_GZ)),
        MAN(OCI_MAN, KILN_STEPCACHE_CONFIG_MT, "10", ""),
        MAN(OCI_MAN, KILN_STEPCACHE_CONFIG_MT, "10", LAYER_DESC(MT_GZ) "," LAYER_DESC(MT_GZ)),
        MAN(OCI_MAN, KILN_STEPCACHE_CONFIG_MT, "10", LAYER_DESC("application/x-evil")),
        MAN(OCI_MAN, KILN_STEPCACHE_CONFIG_MT, "99999999999", LAYER_DESC(MT_GZ)),
        MAN("application/vnd.docker.distribution.manifest.v2+json", KILN_STEPCACHE_CONFIG_MT, "10",
            LAYER_DESC(MT_GZ)),
        "{\"schemaVersion\":2,\"mediaType\":\"" OCI_MAN "\",\"manifests\":[]}",
        NULL,
    };
    for (size_t i = 0; bad[i]; i++) {
        memset(&got, 0, sizeof(got));
        int r = parse_man(bad[i], cfg, &csize, &got, &err);
        ok(r < 0 && got.digest[0] == 0, "bad manifest %zu refused: %s", i, err ? err->msg : "");
        kiln_error_free(err);
        err = NULL;
    }
    size_t n = KILN_STEPCACHE_MANIFEST_MAX + 1;
    char *big = kiln_xmalloc(n);
    memset(big, ' ', n);
    is_int(kiln_stepcache_manifest_parse(big, n, NULL, cfg, &csize, &got, &err), -KILN_ETOOBIG,
           "a manifest over the cap is refused");
    kiln_error_free(err);
    free(big);
}

/* kiln_stepcache_config_created(): any key and kind, the same other checks. */
static void test_config_created(void)
{
    struct kiln_step_record rec = record();
    struct kiln_buf b = KILN_BUF_INIT;
    struct kiln_error *err = NULL;
    is_int(kiln_stepcache_config_make(KEY2, "pip", "RUN x", &rec, "1", &b, &err), 0,
           "created: a config made");
    struct kiln_step_record got;
    memset(&got, 0, sizeof(got));
    char key[KILN_STEPCACHE_KEY_BUFSZ] = "untouched";
    is_int(kiln_stepcache_config_created(b.buf, b.len, key, &got, &err), 0,
           "created: read without knowing the key or kind");
    is_str(key, KEY2, "created: the key");
    is_str(got.created, "2024-05-06T07:08:09Z", "created: the time");
    is_str(got.digest, "", "created: the layer fields are untouched");
    kiln_buf_release(&b);

    static const char *const bad[] = {
        "{\"key\":\"ABC\",\"kind\":\"apt\",\"diff_id\":\"" DIFF "\",\"created\":"
        "\"2024-05-06T07:08:09Z\"}",
        "{\"kind\":\"apt\",\"diff_id\":\"" DIFF "\",\"created\":\"2024-05-06T07:08:09Z\"}",
        "{\"key\":\"" KEY "\",\"kind\":\"apt\",\"diff_id\":\"" DIFF "\",\"created\":\"soon\"}",
        "{\"key\":\"" KEY "\",\"kind\":\"apt\",\"created\":\"2024-05-06T07:08:09Z\"}",
        "[]",
        NULL,
    };
    for (size_t i = 0; bad[i]; i++) {
        ok(kiln_stepcache_config_created(bad[i], strlen(bad[i]), key, &got, &err) == -KILN_EINVAL,
           "created: bad config %zu refused: %s", i, err ? err->msg : "");
        kiln_error_free(err);
        err = NULL;
    }
    is_str(key, KEY2, "created: the key is untouched on failure");
    const char *nokind = "{\"key\":\"" KEY "\",\"diff_id\":\"" DIFF "\",\"created\":"
                         "\"2024-05-06T07:08:09Z\"}";
    is_int(kiln_stepcache_config_created(nokind, strlen(nokind), key, &got, &err), 0,
           "created: the kind is not checked");
    size_t n = KILN_STEPCACHE_CONFIG_MAX + 1;
    char *big = kiln_xmalloc(n);
    memset(big, ' ', n);
    is_int(kiln_stepcache_config_created(big, n, key, &got, &err), -KILN_ETOOBIG,
           "created: the size cap");
    kiln_error_free(err);
    free(big);

    struct {
        const char *s;
        int rc;
        int64_t t;
    } times[] = {
        {"1970-01-01T00:00:00Z", 0, 0},
        {"2024-05-06T07:08:09Z", 0, 1714979289},
        {"2024-05-06T07:08:09.999Z", 0, 1714979289},
        {"2024-05-06T09:08:09+02:00", 0, 1714979289},
        {"2024-05-06T05:38:09-01:30", 0, 1714979289},
        {"2024-13-06T07:08:09Z", -1, 0},
        {"2024-05-06T24:08:09Z", -1, 0},
        {"2024-05-06 07:08:09Z", -1, 0},
        {"", -1, 0},
    };
    for (size_t i = 0; i < KILN_ARRAY_SIZE(times); i++) {
        int64_t t = 42;
        int rc = kiln_stepcache_created_time(times[i].s, &t);
        ok(rc == times[i].rc && (rc < 0 ? t == 42 : t == times[i].t), "created_time '%s': %lld",
           times[i].s, (long long)t);
    }
}

int main(void)
{
    test_tag();
    test_config();
    test_config_created();
    test_manifest();
    return tap_done();
}
