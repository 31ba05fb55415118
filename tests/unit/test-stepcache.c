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
    return kiln_stepcache_manifest_parse(text, strlen(text), NULL, cfg, size, rec, NULL, err);
}

#define MAN(mt, cmt, csize, layers)                                                                \
    "{\"schemaVersion\":2,\"mediaType\":\"" mt "\",\"config\":{\"mediaType\":\"" cmt               \
    "\",\"digest\":\"" CFG "\",\"size\":" csize "},\"layers\":[" layers "]}"
#define LAYER_DESC(mt) "{\"mediaType\":\"" mt "\",\"digest\":\"" LAYER "\",\"size\":1234}"
#define OCI_MAN        "application/vnd.oci.image.manifest.v1+json"
/* kiln_stepcache_manifest_make(CFG, 321, record(), NULL) as kiln made it before "used" */
#define MADE_MAN                                                                                   \
    "{\"config\":{\"digest\":\"" CFG "\",\"mediaType\":\"application/vnd.kiln.step.v1+json\","     \
    "\"size\":321},\"layers\":[{\"digest\":\"" LAYER "\",\"mediaType\":\"" MT_GZ "\","             \
    "\"size\":1234}],\"mediaType\":\"" OCI_MAN "\",\"schemaVersion\":2}"
/* MAN() with annotations (a JSON object's text) */
#define MAN_ANN(ann)                                                                               \
    "{\"schemaVersion\":2,\"mediaType\":\"" OCI_MAN                                                \
    "\",\"config\":{\"mediaType\":\"" KILN_STEPCACHE_CONFIG_MT "\",\"digest\":\"" CFG              \
    "\",\"size\":10},\"layers\":[" LAYER_DESC(MT_GZ) "],\"annotations\":" ann "}"

static void test_manifest(void)
{
    struct kiln_step_record rec = record();
    struct kiln_buf b = KILN_BUF_INIT;
    struct kiln_error *err = NULL;
    is_int(kiln_stepcache_manifest_make(CFG, 321, &rec, NULL, &b, &err), 0, "manifest made");
    is_str(b.buf, MADE_MAN, "without a used time: the bytes kiln always made, no annotations");
    char cfg[KILN_DIGEST_BUFSZ] = "";
    uint64_t csize = 0;
    struct kiln_step_record got;
    memset(&got, 0, sizeof(got));
    char used[KILN_STEPCACHE_TIME_BUFSZ] = "untouched";
    is_int(kiln_stepcache_manifest_parse(b.buf, b.len, OCI_MAN, cfg, &csize, &got, used, &err), 0,
           "manifest read back%s%s", err ? ": " : "", err ? err->msg : "");
    is_str(used, "", "no used annotation: an empty used time");
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
    is_int(kiln_stepcache_manifest_parse(big, n, NULL, cfg, &csize, &got, NULL, &err),
           -KILN_ETOOBIG, "a manifest over the cap is refused");
    kiln_error_free(err);
    free(big);
}

/* The "used" annotation: made, read back, refused when malformed; last_time(). */
static void test_used(void)
{
    struct kiln_step_record rec = record();
    struct kiln_buf b = KILN_BUF_INIT;
    struct kiln_error *err = NULL;
    is_int(kiln_stepcache_manifest_make(CFG, 321, &rec, "2026-11-25T21:00:00Z", &b, &err), 0,
           "used: a manifest made with a used time");
    ok(b.buf && strstr(b.buf, "\"annotations\":{\"" KILN_STEPCACHE_USED_ANNOTATION
                              "\":\"2026-11-25T21:00:00Z\"}") != NULL,
       "used: it is the manifest's only annotation: %s", b.buf ? b.buf : "");
    char cfg[KILN_DIGEST_BUFSZ] = "";
    uint64_t csize = 0;
    struct kiln_step_record got;
    memset(&got, 0, sizeof(got));
    char used[KILN_STEPCACHE_TIME_BUFSZ] = "untouched";
    is_int(kiln_stepcache_manifest_parse(b.buf, b.len, OCI_MAN, cfg, &csize, &got, used, &err), 0,
           "used: read back%s%s", err ? ": " : "", err ? err->msg : "");
    is_str(used, "2026-11-25T21:00:00Z", "used: the time read back");
    is_str(cfg, CFG, "used: the config digest read back");
    is_str(got.digest, LAYER, "used: the layer read back");
    is_int((int)csize, 321, "used: the config size read back");

    /* the same manifest without the annotation is what a push without it makes */
    struct kiln_buf b0 = KILN_BUF_INIT;
    is_int(kiln_stepcache_manifest_make(CFG, 321, &rec, NULL, &b0, &err), 0, "used: made without");
    ok(b0.len < b.len && !strstr(b0.buf, "annotations"), "used: ... which has no annotations");
    kiln_buf_release(&b0);
    kiln_buf_release(&b);

    /* make refuses a used time it would not read back */
    static const char *const bad_times[] = {"yesterday", "2026-11-25T21:00:00",
                                            "2026-13-25T21:00:00Z", "", NULL};
    for (size_t i = 0; bad_times[i]; i++) {
        is_int(kiln_stepcache_manifest_make(CFG, 321, &rec, bad_times[i], &b, &err), -KILN_EINVAL,
               "used: make refuses '%s'", bad_times[i]);
        ok(err && strstr(err->msg, KILN_STEPCACHE_USED_ANNOTATION), "used: ... naming it: %s",
           err ? err->msg : "");
        is_int((int)b.len, 0, "used: ... and appends nothing");
        kiln_error_free(err);
        err = NULL;
    }
    kiln_buf_release(&b);

    /* other annotations are ignored, with or without a used time */
    struct {
        const char *text, *used;
    } good[] = {
        {MAN_ANN("{}"), ""},
        {MAN_ANN("{\"org.example\":\"x\"}"), ""},
        {MAN_ANN("{\"org.example\":\"x\",\"" KILN_STEPCACHE_USED_ANNOTATION
                 "\":\"2026-11-25T22:00:00+01:00\"}"),
         "2026-11-25T22:00:00+01:00"},
        {MAN_ANN("{\"" KILN_STEPCACHE_USED_ANNOTATION "\":\"2026-11-25T21:00:00.123456789Z\"}"),
         "2026-11-25T21:00:00.123456789Z"},
        {MAN_ANN("null"), ""},
    };
    for (size_t i = 0; i < KILN_ARRAY_SIZE(good); i++) {
        snprintf(used, sizeof(used), "untouched");
        int r = kiln_stepcache_manifest_parse(good[i].text, strlen(good[i].text), NULL, cfg, &csize,
                                              &got, used, &err);
        ok(r == 0 && !strcmp(used, good[i].used), "used: annotations %zu read: '%s'%s%s", i, used,
           err ? ": " : "", err ? err->msg : "");
        kiln_error_free(err);
        err = NULL;
    }

    /* a used annotation that is there but malformed: the manifest is refused */
    static const char *const bad[] = {
        MAN_ANN("{\"" KILN_STEPCACHE_USED_ANNOTATION "\":\"yesterday\"}"),
        MAN_ANN("{\"" KILN_STEPCACHE_USED_ANNOTATION "\":\"\"}"),
        MAN_ANN("{\"" KILN_STEPCACHE_USED_ANNOTATION "\":\"2026-11-25 21:00:00Z\"}"),
        MAN_ANN("{\"" KILN_STEPCACHE_USED_ANNOTATION "\":\"2026-11-25T25:00:00Z\"}"),
        MAN_ANN("{\"" KILN_STEPCACHE_USED_ANNOTATION "\":\"2026-11-25T21:00:00.1234567890Z\"}"),
        MAN_ANN("{\"" KILN_STEPCACHE_USED_ANNOTATION "\":1764104400}"),
        MAN_ANN("{\"" KILN_STEPCACHE_USED_ANNOTATION "\":null}"),
        MAN_ANN("{\"" KILN_STEPCACHE_USED_ANNOTATION "\":[\"2026-11-25T21:00:00Z\"]}"),
        NULL,
    };
    for (size_t i = 0; bad[i]; i++) {
        memset(&got, 0, sizeof(got));
        snprintf(cfg, sizeof(cfg), "untouched");
        snprintf(used, sizeof(used), "untouched");
        int r = kiln_stepcache_manifest_parse(bad[i], strlen(bad[i]), NULL, cfg, &csize, &got, used,
                                              &err);
        ok(r == -KILN_EINVAL && err && strstr(err->msg, KILN_STEPCACHE_USED_ANNOTATION),
           "used: malformed %zu refused, naming the annotation: %s", i, err ? err->msg : "");
        ok(!strcmp(used, "untouched") && !strcmp(cfg, "untouched") && got.digest[0] == 0,
           "used: ... the outputs untouched");
        kiln_error_free(err);
        err = NULL;
    }

    /* the newer of created and used counts */
    struct {
        const char *created, *used;
        int rc;
        int64_t t;
        bool by_use;
    } last[] = {
        {"2024-05-06T07:08:09Z", NULL, 0, 1714979289, false},
        {"2024-05-06T07:08:09Z", "", 0, 1714979289, false},
        {"2024-05-06T07:08:09Z", "2024-05-06T07:08:10Z", 0, 1714979290, true},
        {"2024-05-06T07:08:09Z", "2024-05-06T07:08:09Z", 0, 1714979289, false},
        {"2024-05-06T07:08:09Z", "2024-05-06T07:08:08Z", 0, 1714979289, false},
        {"2024-05-06T09:08:09+02:00", "2024-05-06T08:08:09+02:00", 0, 1714979289, false},
        {"2020-09-13T12:26:40Z", "2024-05-06T05:38:09-01:30", 0, 1714979289, true},
        {"soon", "2024-05-06T07:08:09Z", -1, 42, false},
        {"2024-05-06T07:08:09Z", "later", -1, 42, false},
        {NULL, NULL, -1, 42, false},
    };
    for (size_t i = 0; i < KILN_ARRAY_SIZE(last); i++) {
        int64_t t = 42;
        bool by_use = false;
        int rc = kiln_stepcache_last_time(last[i].created, last[i].used, &t, &by_use);
        ok(rc == last[i].rc && t == last[i].t && by_use == last[i].by_use,
           "last_time '%s' '%s': %d %lld %d", last[i].created ? last[i].created : "(null)",
           last[i].used ? last[i].used : "(null)", rc, (long long)t, by_use);
    }
    int64_t t = 0;
    is_int(kiln_stepcache_last_time("2020-09-13T12:26:40Z", NULL, &t, NULL), 0,
           "last_time: ret_is_used may be NULL");
    is_int((int)t, 1600000000, "last_time: SOURCE_DATE_EPOCH=1600000000 is 2020-09-13T12:26:40Z");
    ok(KILN_STEPCACHE_TOUCH_SECONDS == 86400, "a pull records its use after a day");
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
    test_used();
    return tap_done();
}
