/*
 * Fuzz the shared step cache's readers (build/stepcache.h): what a cache
 * repository serves is outside input. Each round:
 *   - the whole input as a cache manifest, with no content type and with
 *     the OCI manifest type;
 *   - the whole input as a step config document, for a fixed key and kind.
 * Results are checked against the header's contract (outputs only on
 * success, sizes within their caps, digests valid, a message on failure);
 * a broken promise aborts.
 */
#include "util/common.h"

#include "build/stepcache.h"
#include "oci/digest.h"

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
    struct kiln_error *e = NULL;
    int r = kiln_stepcache_manifest_parse(in, len, content_type, cfg, &cfg_size, &rec, &e);
    if (r < 0) {
        check_error(r, e, "manifest: failure with its message");
        check(strcmp(cfg, "untouched") == 0 && cfg_size == 7,
              "manifest: config outputs untouched on failure");
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
