/*
 * Fuzz the shared step cache's readers (build/stepcache.h): what a cache
 * repository serves is outside input. Each round:
 *   - the whole input as a cache manifest, with no content type and with
 *     the OCI manifest type (and its "used" annotation); one that checks
 *     out is made again (with that used time) and must read back the same;
 *   - the whole input as a step config document, for a fixed key and kind.
 * Results are checked against the header's contract (outputs only on
 * success, sizes within their caps, digests valid, a message on failure);
 * a broken promise aborts.
 */
#include "util/common.h"

#include "build/stepcache.h"
#include "oci/digest.h"
#include "util/buf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define KEY "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

static void check(bool cond, const char *what)
{
    if (cond)
        return;
    fprintf(stderr, "fuzz-stepcache: %s\n", what);
    abort();
}

static void check_error(int r, struct kiln_error *e, const char *what)
{
    check(r < 0 && e && e->code == -r && e->msg && *e->msg, what);
}

static void fuzz_manifest(const char *in, size_t len, const char *content_type)
{
    struct kiln_step_record rec;
    memset(&rec, 0x5a, sizeof(rec));
    char cfg[KILN_DIGEST_BUFSZ] = "untouched";
    uint64_t cfg_size = 7;
    char used[KILN_STEPCACHE_TIME_BUFSZ] = "untouched";
    struct kiln_error *e = NULL;
    int r = kiln_stepcache_manifest_parse(in, len, content_type, cfg, &cfg_size, &rec, used, &e);
    if (r < 0) {
        check_error(r, e, "manifest: failure with its message");
        check(strcmp(cfg, "untouched") == 0 && cfg_size == 7 && strcmp(used, "untouched") == 0,
              "manifest: config and used outputs untouched on failure");
        kiln_error_free(e);
        return;
    }
    check(e == NULL, "manifest: no error on success");
    check(kiln_digest_is_valid(cfg), "manifest: a valid config digest");
    check(cfg_size <= KILN_STEPCACHE_CONFIG_MAX, "manifest: config within its cap");
    check(memchr(rec.digest, '\0', sizeof(rec.digest)) && kiln_digest_is_valid(rec.digest),
          "manifest: a valid layer digest");
    check(memchr(rec.media_type, '\0', sizeof(rec.media_type)) != NULL,
          "manifest: a terminated media type");
    check(len <= KILN_STEPCACHE_MANIFEST_MAX, "manifest: within its cap");
    /* a used time is "" or one that counts: with the config's created, a last time */
    int64_t t = 0;
    check(!used[0] || kiln_stepcache_last_time("1970-01-01T00:00:00Z", used, &t, NULL) == 0,
          "manifest: a used time that reads back");
    /* made again with it: the same layer and config, and the same used time */
    struct kiln_buf b = KILN_BUF_INIT;
    struct kiln_step_record again;
    memset(&again, 0, sizeof(again));
    char cfg2[KILN_DIGEST_BUFSZ], used2[KILN_STEPCACHE_TIME_BUFSZ];
    uint64_t cfg_size2 = 0;
    r = kiln_stepcache_manifest_make(cfg, cfg_size, &rec, used[0] ? used : NULL, &b, &e);
    check(r == 0, "manifest: made again from what was read");
    r = kiln_stepcache_manifest_parse(b.buf, b.len, NULL, cfg2, &cfg_size2, &again, used2, &e);
    check(r == 0 && !strcmp(cfg, cfg2) && cfg_size == cfg_size2 &&
              !strcmp(rec.digest, again.digest) && rec.size == again.size &&
              !strcmp(rec.media_type, again.media_type) && !strcmp(used, used2),
          "manifest: what is made again reads back the same");
    kiln_error_free(e);
    kiln_buf_release(&b);
}

static void fuzz_config(const char *in, size_t len)
{
    struct kiln_step_record rec;
    memset(&rec, 0, sizeof(rec));
    snprintf(rec.created, sizeof(rec.created), "untouched");
    struct kiln_error *e = NULL;
    int r = kiln_stepcache_config_parse(in, len, KEY, "apt", &rec, &e);
    if (r < 0) {
        check_error(r, e, "config: failure with its message");
        check(strcmp(rec.created, "untouched") == 0 && rec.diff_id[0] == '\0',
              "config: record untouched on failure");
        kiln_error_free(e);
        return;
    }
    check(e == NULL, "config: no error on success");
    check(kiln_digest_is_valid(rec.diff_id), "config: a valid diff_id");
    check(memchr(rec.created, '\0', sizeof(rec.created)) && rec.created[0],
          "config: a terminated, non-empty created");
    check(len <= KILN_STEPCACHE_CONFIG_MAX, "config: within its cap");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 256 * 1024)
        return 0;
    char *in = kiln_xmalloc(size + 1);
    memcpy(in, data, size);
    in[size] = '\0';
    fuzz_manifest(in, size, NULL);
    fuzz_manifest(in, size, "application/vnd.oci.image.manifest.v1+json");
    fuzz_config(in, size);
    free(in);
    return 0;
}
