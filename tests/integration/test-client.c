/*
 * Integration test of registry/client.c against real docker-registry
 * instances that tests/integration/test-client.sh starts and describes in
 * the environment (this program is a test: it may read it):
 *   KT_NOAUTH, KT_NOAUTH_DIR      a registry without auth and its directory
 *   KT_PROXY                      faultproxy.py in front of KT_NOAUTH (optional)
 *   KT_BASIC                      a registry with htpasswd Basic auth (optional)
 *   KT_TOKEN, KT_TOKEN_DIR, KT_TOKEN_REALM, KT_TOKEN_SERVICE
 *                                 a registry with token auth (optional)
 *   KT_USER, KT_PASSWORD          a user with every right (basic, token)
 *   KT_RO_USER, KT_RO_PASSWORD    a pull-only user (token)
 *   KT_REDIRECT, KT_REDIRECT_BLOB, KT_REDIRECT_LOG, KT_REDIRECT_CA
 *                                 the fake TLS registry of test-client.sh (optional)
 *   KT_REDIRECT_REMOTE            the same as registry.kiln.test:PORT, a name pinned to
 *                                 127.0.0.1 (resolve option) that kiln does not treat as
 *                                 loopback (optional)
 *   KT_PROXY_LOG                  the request log of KT_PROXY (optional)
 *   KT_NOAUTH2                    a second registry without auth (optional)
 *   KT_PROXY2, KT_PROXY2_LOG      a fault proxy in front of KT_NOAUTH2 and its log (optional)
 *   KT_KILN                       the kiln binary, for 'kiln copy' option checks (optional)
 *   KT_NODELETE                   a registry without auth that refuses deletes (optional)
 * Output: TAP.
 */
#include "util/common.h"
#include "registry/client.h"

#include <curl/curl.h>
#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "registry/transfer.h"
#include "util/log.h"
#include "util/sha256.h"

#include "../unit/tap.h"

static char tmpdir[256];

/* ---- helpers ------------------------------------------------------------------- */

/* What the library logged (from any thread), for checks of what it did. */
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static struct kiln_buf log_text = KILN_BUF_INIT;

static void log_to_tap(enum kiln_log_level level, const char *msg, void *ud)
{
    pthread_mutex_lock(&log_lock);
    printf("# log: %s\n", msg);
    fflush(stdout);
    kiln_buf_adds(&log_text, msg);
    kiln_buf_addch(&log_text, '\n');
    pthread_mutex_unlock(&log_lock);
}

static void log_reset(void)
{
    pthread_mutex_lock(&log_lock);
    kiln_buf_release(&log_text);
    pthread_mutex_unlock(&log_lock);
}

static bool log_has(const char *s)
{
    pthread_mutex_lock(&log_lock);
    bool found = strstr(log_text.buf, s) != NULL;
    pthread_mutex_unlock(&log_lock);
    return found;
}

static const char *env(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

struct blob {
    char path[512];
    int fd;
    uint64_t size;
    char digest[80];
};

/* A file of `size` pseudo-random bytes (from `seed`) and its digest. */
static void make_blob(struct blob *b, const char *name, uint64_t size, uint32_t seed)
{
    snprintf(b->path, sizeof(b->path), "%s/%s", tmpdir, name);
    b->fd = open(b->path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (b->fd < 0) {
        printf("Bail out! cannot create %s\n", b->path);
        exit(1);
    }
    struct kiln_sha256 h;
    kiln_sha256_init(&h);
    uint8_t buf[65536];
    uint32_t x = seed * 2654435761u + 1;
    for (uint64_t done = 0; done < size;) {
        size_t n = size - done < sizeof(buf) ? (size_t)(size - done) : sizeof(buf);
        for (size_t i = 0; i < n; i++) {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            buf[i] = (uint8_t)x;
        }
        if (write(b->fd, buf, n) != (ssize_t)n) {
            printf("Bail out! cannot write %s\n", b->path);
            exit(1);
        }
        kiln_sha256_update(&h, buf, n);
        done += n;
    }
    char hex[KILN_SHA256_HEX_LEN + 1];
    kiln_sha256_final_hex(&h, hex);
    kiln_sha256_release(&h);
    snprintf(b->digest, sizeof(b->digest), "sha256:%s", hex);
    b->size = size;
}

static void blob_close(struct blob *b)
{
    if (b->fd >= 0)
        close(b->fd);
    b->fd = -1;
}

/* Whether the file at `path` holds the same bytes as blob b. */
static bool same_content(const struct blob *b, const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    struct stat st;
    bool same = fstat(fd, &st) == 0 && (uint64_t)st.st_size == b->size;
    uint8_t x[65536], y[65536];
    for (uint64_t off = 0; same && off < b->size;) {
        ssize_t n = pread(fd, x, sizeof(x), (off_t)off);
        ssize_t m = pread(b->fd, y, sizeof(y), (off_t)off);
        if (n <= 0 || n != m || memcmp(x, y, (size_t)n) != 0)
            same = false;
        off += n > 0 ? (uint64_t)n : 1;
    }
    close(fd);
    return same;
}

static struct kiln_registry *open_reg(const char *host, const char *user, const char *password,
                                      size_t chunk, int attempts)
{
    struct kiln_cred cred = {(char *)user, (char *)password, NULL};
    struct kiln_registry_options o = {0};
    o.cred = user ? &cred : NULL;
    o.chunk_size = chunk;
    o.http.max_attempts = attempts;
    o.http.backoff_base_ms = 50;
    o.http.backoff_max_ms = 400;
    o.http.retry_max_ms = 20000;
    o.http.stall_time_s = 10;
    struct kiln_registry *r = NULL;
    struct kiln_error *e = NULL;
    if (kiln_registry_new(host, &o, &r, &e) < 0) {
        printf("Bail out! kiln_registry_new '%s': %s\n", host, e->msg);
        exit(1);
    }
    return r;
}

static bool has(const struct kiln_error *e, const char *s)
{
    return e && e->msg && strstr(e->msg, s);
}

static void show(const char *label, const struct kiln_error *e)
{
    printf("#   %s: %s\n", label, e ? e->msg : "(no error)");
}

/* Check that a call failed with `code` and a message containing `text`. */
static void fails_with(int rc, struct kiln_error **e, int code, const char *text, const char *desc)
{
    bool good = rc == -code && has(*e, text);
    ok(good, "%s", desc);
    if (!good) {
        printf("#   rc %d, want %d; want text '%s'\n", rc, -code, text);
        show("error", *e);
    }
    kiln_error_free(*e);
    *e = NULL;
}

static void no_error(int rc, int want, struct kiln_error **e, const char *desc)
{
    ok(rc == want, "%s", desc);
    if (rc != want) {
        printf("#   rc %d, want %d\n", rc, want);
        show("error", *e);
    }
    kiln_error_free(*e);
    *e = NULL;
}

static size_t discard(char *p, size_t s, size_t n, void *ud)
{
    struct kiln_buf *b = ud;
    if (b)
        kiln_buf_add(b, p, s * n);
    return s * n;
}

/* A plain HTTP request for test plumbing (fault proxy control, token issuer). */
static long plain_request(const char *method, const char *url, const char *body,
                          const char *userpwd, struct kiln_buf *out)
{
    CURL *c = curl_easy_init();
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, out);
    if (body)
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    if (userpwd)
        curl_easy_setopt(c, CURLOPT_USERPWD, userpwd);
    long status = 0;
    if (curl_easy_perform(c) == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(c);
    return status;
}

static void proxy_rule(const char *proxy, const char *spec)
{
    char url[256];
    snprintf(url, sizeof(url), "http://%s/__faultproxy/rules", proxy);
    long s = plain_request("POST", url, spec, NULL, NULL);
    if (s != 200 && s != 201)
        printf("# proxy rule '%s': status %ld\n", spec, s);
}

static void proxy_clear(const char *proxy)
{
    char url[256];
    snprintf(url, sizeof(url), "http://%s/__faultproxy/rules", proxy);
    plain_request("DELETE", url, NULL, NULL, NULL);
}

/* Lines of a file containing every one of the given strings (NULL-terminated). */
static int count_lines(const char *path, const char *a, const char *b)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return -1;
    char line[8192];
    int n = 0;
    while (fgets(line, sizeof(line), f))
        if (strstr(line, a) && (!b || strstr(line, b)))
            n++;
    fclose(f);
    return n;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* An OCI manifest referencing config c and layer l. */
static char *make_manifest(const struct blob *c, const struct blob *l)
{
    return kiln_xasprintf("{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest."
                          "v1+json\",\"config\":{\"mediaType\":\"application/vnd.oci.image.config."
                          "v1+json\",\"digest\":\"%s\",\"size\":%llu},\"layers\":[{\"mediaType\":"
                          "\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"%s\","
                          "\"size\":%llu}]}",
                          c->digest, (unsigned long long)c->size, l->digest,
                          (unsigned long long)l->size);
}

#define OCI_MANIFEST "application/vnd.oci.image.manifest.v1+json"

/* GET a blob into a file and compare it with the original. */
static void get_and_compare(struct kiln_registry *r, const char *repo, const struct blob *b,
                            const char *desc)
{
    char path[600];
    snprintf(path, sizeof(path), "%s/got-%d", tmpdir, rand());
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    struct kiln_error *e = NULL;
    uint64_t got = 0;
    int rc = kiln_registry_blob_get_fd(r, repo, b->digest, (int64_t)b->size, fd, &got, &e);
    close(fd);
    ok(rc == 0 && got == b->size && same_content(b, path), "%s", desc);
    if (rc != 0)
        show("error", e);
    kiln_error_free(e);
    unlink(path);
}

static int cancel_after(void *ud, uint64_t received, uint64_t sent)
{
    uint64_t *seen = ud;
    if (received > *seen)
        *seen = received;
    return received > 100000;
}

/* ---- scheme hints (kiln_http_scheme_hint) ----------------------------------------- */

struct plain_list {
    char names[8][160];
    int n;
};

static void collect_plain(void *ud, const char *hostport)
{
    struct plain_list *l = ud;
    if (l->n < 8)
        snprintf(l->names[l->n++], sizeof(l->names[0]), "%s", hostport);
}

static bool lists_plain(struct kiln_http *h, const char *hostport)
{
    struct plain_list l = {0};
    kiln_http_schemes_plain(h, collect_plain, &l);
    for (int i = 0; i < l.n; i++)
        if (strcmp(l.names[i], hostport) == 0)
            return true;
    return false;
}

/* A plain-http hint for a loopback plain-http registry: used, then confirmed. */
static void test_hint_plain(const char *host)
{
    struct kiln_http_options ho = {.max_attempts = 2, .backoff_base_ms = 10};
    struct kiln_http *h = NULL;
    struct kiln_error *e = NULL;
    if (kiln_http_new(&ho, &h, &e) < 0) {
        printf("Bail out! kiln_http_new: %s\n", e->msg);
        exit(1);
    }
    kiln_http_scheme_hint(h, "registry.example:5000", true);
    ok(!lists_plain(h, "registry.example:5000"),
       "hint: a hint for a host that is not insecure is ignored");
    kiln_http_scheme_hint(h, host, true);
    ok(lists_plain(h, host), "hint: a loopback host hinted plain is listed");
    struct kiln_registry_options o = {0};
    o.shared_http = h;
    struct kiln_registry *r = NULL;
    kiln_registry_new(host, &o, &r, NULL);
    no_error(kiln_registry_ping(r, &e), 0, &e, "hint: ping over plain http at once");
    ok(lists_plain(h, host), "hint: the answer confirms it");
    kiln_registry_free(r);
    kiln_http_free(h);
}

/* ---- the noauth registry: every operation ---------------------------------------- */

static void test_noauth(const char *host, const char *dir)
{
    struct kiln_error *e = NULL;
    struct kiln_registry *r = open_reg(host, NULL, NULL, 0, 3);
    struct blob layer, config, chunky, small, other;
    make_blob(&layer, "layer", (3 << 20) + 123, 1);
    make_blob(&config, "config", 517, 2);
    make_blob(&chunky, "chunky", (1 << 20) + 77, 3);
    make_blob(&small, "small", 1000, 4);
    make_blob(&other, "other", 4321, 5);

    no_error(kiln_registry_ping(r, &e), 0, &e, "noauth: ping (https probe, plain http fallback)");

    uint64_t size = 0;
    no_error(kiln_registry_blob_head(r, "kt/one", layer.digest, &size, &e), 0, &e,
             "noauth: HEAD of a missing blob is 0");
    no_error(kiln_registry_blob_push(r, "kt/one", layer.digest, layer.fd, layer.size, NULL, &e), 0,
             &e, "noauth: monolithic push of a 3 MiB blob");
    no_error(kiln_registry_blob_head(r, "kt/one", layer.digest, &size, &e), 1, &e,
             "noauth: HEAD finds it");
    is_int(size, layer.size, "noauth: HEAD reports its size");
    get_and_compare(r, "kt/one", &layer, "noauth: GET streams it back, digest verified");

    /* chunked, with a small chunk size */
    struct kiln_registry *rc = open_reg(host, NULL, NULL, 64 << 10, 3);
    no_error(kiln_registry_blob_push(rc, "kt/one", chunky.digest, chunky.fd, chunky.size, NULL, &e),
             0, &e, "noauth: chunked push (64 KiB chunks) of 1 MiB + 77");
    no_error(kiln_registry_blob_head(r, "kt/one", chunky.digest, &size, &e), 1, &e,
             "noauth: chunked blob exists");
    is_int(size, chunky.size, "noauth: chunked blob has the right size");
    get_and_compare(r, "kt/one", &chunky, "noauth: chunked blob reads back identical");
    kiln_registry_free(rc);

    no_error(kiln_registry_blob_push(r, "kt/one", config.digest, config.fd, config.size, NULL, &e),
             0, &e, "noauth: push config blob");

    struct blob empty;
    make_blob(&empty, "empty", 0, 6);
    is_str(empty.digest, "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
           "empty blob digest");
    no_error(kiln_registry_blob_push(r, "kt/one", empty.digest, empty.fd, 0, NULL, &e), 0, &e,
             "noauth: push the empty blob");
    no_error(kiln_registry_blob_head(r, "kt/one", empty.digest, &size, &e), 1, &e,
             "noauth: empty blob exists");
    is_int(size, 0, "noauth: empty blob has size 0");
    get_and_compare(r, "kt/one", &empty, "noauth: empty blob reads back");
    blob_close(&empty);

    /* the low-level session API, from memory */
    struct kiln_upload *u = NULL;
    no_error(kiln_registry_upload_start(r, "kt/low", NULL, NULL, &u, &e), 0, &e,
             "noauth: upload start gives a session");
    if (u) {
        uint8_t buf[4321];
        ok(pread(other.fd, buf, sizeof(buf), 0) == (ssize_t)sizeof(buf), "read blob");
        is_int(kiln_upload_offset(u), 0, "noauth: new session at offset 0");
        no_error(kiln_upload_patch(u, buf, 2000, &e), 0, &e, "noauth: PATCH 2000 bytes");
        no_error(kiln_upload_patch(u, buf + 2000, 2000, &e), 0, &e, "noauth: PATCH 2000 more");
        no_error(kiln_upload_status(u, &e), 0, &e, "noauth: upload status");
        is_int(kiln_upload_offset(u), 4000, "noauth: registry reports 4000 bytes");
        no_error(kiln_upload_patch(u, buf + 4000, 321, &e), 0, &e, "noauth: PATCH the rest");
        no_error(kiln_upload_finish(u, other.digest, &e), 0, &e, "noauth: PUT ?digest= finishes");
        kiln_upload_free(u);
        no_error(kiln_registry_blob_head(r, "kt/low", other.digest, NULL, &e), 1, &e,
                 "noauth: blob from the session API exists");
    }
    u = NULL;
    no_error(kiln_registry_upload_start(r, "kt/low2", NULL, NULL, &u, &e), 0, &e,
             "noauth: second session");
    if (u) {
        no_error(kiln_upload_patch(u, "abc", 3, &e), 0, &e, "noauth: PATCH 3 bytes");
        fails_with(kiln_upload_finish(u, other.digest, &e), &e, KILN_EINVAL, "digest",
                   "noauth: finishing with a wrong digest fails (DIGEST_INVALID)");
        kiln_upload_free(u);
    }

    /* mounts */
    no_error(kiln_registry_blob_push(r, "kt/two", layer.digest, layer.fd, layer.size, "kt/one", &e),
             1, &e, "noauth: cross-repository mount says mounted");
    no_error(kiln_registry_blob_head(r, "kt/two", layer.digest, &size, &e), 1, &e,
             "noauth: mounted blob is in the target repository");
    no_error(
        kiln_registry_blob_push(r, "kt/two", small.digest, small.fd, small.size, "kt/none", &e), 0,
        &e, "noauth: mount of an unknown blob falls back to an upload (202)");
    no_error(kiln_registry_blob_head(r, "kt/two", small.digest, NULL, &e), 1, &e,
             "noauth: fallback upload landed");
    u = (struct kiln_upload *)1;
    no_error(kiln_registry_upload_start(r, "kt/three", config.digest, "kt/one", &u, &e), 1, &e,
             "noauth: upload_start with mount returns 1");
    ok(u == NULL, "noauth: no session after a mount");

    /* manifests */
    _cleanup_free_ char *man = make_manifest(&config, &layer);
    char hex[KILN_SHA256_HEX_LEN + 1];
    kiln_sha256_hex(man, strlen(man), hex);
    char mdigest[80];
    snprintf(mdigest, sizeof(mdigest), "sha256:%s", hex);
    char *got_digest = NULL;
    no_error(kiln_registry_manifest_put(r, "kt/one", "v1", OCI_MANIFEST, man, strlen(man),
                                        &got_digest, &e),
             0, &e, "noauth: PUT manifest by tag");
    is_str(got_digest, mdigest, "noauth: PUT returns the sha256 of the bytes");
    free(got_digest);

    struct kiln_registry_manifest m = KILN_REGISTRY_MANIFEST_INIT;
    no_error(kiln_registry_manifest_get(r, "kt/one", "v1", NULL, &m, &e), 0, &e,
             "noauth: GET manifest by tag");
    ok(m.len == strlen(man) && m.data && memcmp(m.data, man, m.len) == 0,
       "noauth: same bytes back");
    is_str(m.media_type, OCI_MANIFEST, "noauth: media type from Content-Type");
    is_str(m.digest, mdigest, "noauth: digest computed");
    kiln_registry_manifest_release(&m);
    no_error(kiln_registry_manifest_get(r, "kt/one", mdigest, NULL, &m, &e), 0, &e,
             "noauth: GET manifest by digest (verified)");
    ok(m.len == strlen(man), "noauth: by digest, same length");
    kiln_registry_manifest_release(&m);
    no_error(kiln_registry_manifest_head(r, "kt/one", "v1", NULL, &m, &e), 1, &e,
             "noauth: HEAD manifest by tag");
    is_str(m.digest, mdigest, "noauth: HEAD gives Docker-Content-Digest");
    is_int(m.len, strlen(man), "noauth: HEAD gives the length");
    ok(m.data == NULL, "noauth: HEAD has no data");
    kiln_registry_manifest_release(&m);
    no_error(kiln_registry_manifest_head(r, "kt/one", mdigest, NULL, &m, &e), 1, &e,
             "noauth: HEAD manifest by digest");
    kiln_registry_manifest_release(&m);
    no_error(kiln_registry_manifest_head(r, "kt/one", "nope", NULL, &m, &e), 0, &e,
             "noauth: HEAD of a missing tag is 0");
    fails_with(kiln_registry_manifest_get(r, "kt/one", "nope", NULL, &m, &e), &e, KILN_ENOTFOUND,
               "manifest unknown", "noauth: GET of a missing tag: not found");
    no_error(
        kiln_registry_manifest_put(r, "kt/one", mdigest, OCI_MANIFEST, man, strlen(man), NULL, &e),
        0, &e, "noauth: PUT manifest by digest");
    fails_with(kiln_registry_manifest_put(r, "kt/one", layer.digest, OCI_MANIFEST, man, strlen(man),
                                          NULL, &e),
               &e, KILN_EINVAL, "the bytes have digest", "noauth: PUT by a wrong digest refused");
    {
        struct blob missing;
        make_blob(&missing, "missing", 10, 99);
        _cleanup_free_ char *dangling = make_manifest(&config, &missing);
        fails_with(kiln_registry_manifest_put(r, "kt/one", "dangling", OCI_MANIFEST, dangling,
                                              strlen(dangling), NULL, &e),
                   &e, KILN_EINVAL, "blob unknown to registry (HTTP 400)",
                   "noauth: manifest naming a missing blob: registry error parsed");
        blob_close(&missing);
    }

    /* a blob that is corrupt on the registry's disk: digest mismatch */
    no_error(kiln_registry_blob_push(r, "kt/corrupt", small.digest, small.fd, small.size, NULL, &e),
             0, &e, "noauth: push a blob to corrupt");
    char data[1024];
    snprintf(data, sizeof(data), "%s/data/docker/registry/v2/blobs/sha256/%.2s/%s/data", dir,
             small.digest + 7, small.digest + 7);
    int cfd = open(data, O_WRONLY | O_CLOEXEC);
    ok(cfd >= 0 && pwrite(cfd, "X", 1, 500) == 1, "corrupt one byte of the stored blob");
    if (cfd >= 0)
        close(cfd);
    fails_with(kiln_registry_blob_get(r, "kt/corrupt", small.digest, (int64_t)small.size, NULL,
                                      NULL, NULL, &e),
               &e, KILN_ENET,
               "digest mismatch: got sha256:", "noauth: corrupt blob: digest mismatch reported");
    fails_with(kiln_registry_blob_get(r, "kt/one", layer.digest, (int64_t)layer.size - 1, NULL,
                                      NULL, NULL, &e),
               &e, KILN_ENET, "more than the expected", "noauth: wrong expected size fails early");
    fails_with(kiln_registry_blob_get(r, "kt/one", small.digest, -1, NULL, NULL, NULL, &e), &e,
               KILN_ENOTFOUND, "blob unknown", "noauth: GET of a missing blob: not found");

    /* failures without an error object */
    is_int(kiln_registry_blob_get(r, "kt/one", small.digest, -1, NULL, NULL, NULL, NULL),
           -KILN_ENOTFOUND, "noauth: failure with err == NULL: code only");
    is_int(kiln_registry_blob_get(r, "kt/corrupt", small.digest, -1, NULL, NULL, NULL, NULL),
           -KILN_ENET, "noauth: mismatch with err == NULL: code only");
    is_int(kiln_registry_manifest_get(r, "kt/one", "v1", NULL, &m, NULL), 0,
           "noauth: success with err == NULL");
    kiln_registry_manifest_release(&m);

    /* cancellation through the progress callback */
    {
        struct kiln_registry_options o = {0};
        o.progress = cancel_after;
        uint64_t seen = 0;
        o.progress_data = &seen;
        struct kiln_registry *rp = NULL;
        kiln_registry_new(host, &o, &rp, NULL);
        fails_with(kiln_registry_blob_get(rp, "kt/one", layer.digest, -1, NULL, NULL, NULL, &e), &e,
                   KILN_ECANCELLED, "cancelled", "noauth: progress callback cancels a GET");
        ok(seen > 0, "noauth: progress saw bytes before cancelling");
        kiln_registry_free(rp);
    }

    /* arguments */
    fails_with(kiln_registry_blob_head(r, "Kt/Upper", layer.digest, NULL, &e), &e, KILN_EINVAL,
               "invalid repository name 'Kt/Upper'", "noauth: bad repository name refused");
    fails_with(
        kiln_registry_blob_head(r, "kt/one", "sha512:0123456789abcdef0123456789abcdef", NULL, &e),
        &e, KILN_EUNSUPPORTED, "only sha256", "noauth: other digest algorithms refused");
    fails_with(kiln_registry_manifest_get(r, "kt/one", "bad tag", NULL, &m, &e), &e, KILN_EINVAL,
               "invalid tag", "noauth: bad tag refused");

    kiln_registry_free(r);
    blob_close(&layer);
    blob_close(&config);
    blob_close(&chunky);
    blob_close(&small);
    blob_close(&other);
}

/* ---- threads sharing one session -------------------------------------------------- */

struct job {
    struct kiln_registry *r;
    struct blob b;
    int rc;
    char msg[256];
};

static void *push_and_get(void *arg)
{
    struct job *j = arg;
    struct kiln_error *e = NULL;
    j->rc = kiln_registry_blob_push(j->r, "kt/threads", j->b.digest, j->b.fd, j->b.size, NULL, &e);
    if (j->rc == 0)
        j->rc = kiln_registry_blob_get(j->r, "kt/threads", j->b.digest, (int64_t)j->b.size, NULL,
                                       NULL, NULL, &e);
    if (e)
        snprintf(j->msg, sizeof(j->msg), "%s", e->msg);
    kiln_error_free(e);
    return NULL;
}

static void test_threads(const char *host, const char *user, const char *password,
                         const char *label)
{
    struct kiln_registry *r = open_reg(host, user, password, 256 << 10, 3);
    struct job jobs[6];
    pthread_t t[6];
    for (int i = 0; i < 6; i++) {
        char name[32];
        snprintf(name, sizeof(name), "thread-%s-%d", label, i);
        jobs[i].r = r;
        jobs[i].rc = -1;
        jobs[i].msg[0] = '\0';
        make_blob(&jobs[i].b, name, (uint64_t)(700 << 10) + (uint64_t)i * 1111, 100 + (uint32_t)i);
        pthread_create(&t[i], NULL, push_and_get, &jobs[i]);
    }
    int good = 0;
    for (int i = 0; i < 6; i++) {
        pthread_join(t[i], NULL);
        if (jobs[i].rc == 0)
            good++;
        else
            printf("#   thread %d: %s\n", i, jobs[i].msg);
        blob_close(&jobs[i].b);
    }
    is_int(good, 6, "%s: 6 threads push (chunked) and pull through one shared session", label);
    kiln_registry_free(r);
}

/* ---- faults ------------------------------------------------------------------------ */

static void test_faults(const char *proxy, const char *direct)
{
    struct kiln_error *e = NULL;
    struct kiln_registry *r = open_reg(proxy, NULL, NULL, 0, 4);
    struct kiln_registry *d = open_reg(direct, NULL, NULL, 0, 1);
    struct blob a, c, big, mono;
    make_blob(&a, "fault-a", (2 << 20) + 5, 11);
    make_blob(&c, "fault-c", 777, 12);
    make_blob(&big, "fault-big", (1 << 20) + 999, 13);
    make_blob(&mono, "fault-mono", (1 << 20) + 3, 14);

    no_error(kiln_registry_ping(r, &e), 0, &e, "faults: ping through the proxy");
    no_error(kiln_registry_blob_push(r, "kt/fault", a.digest, a.fd, a.size, NULL, &e), 0, &e,
             "faults: push through the proxy");

    proxy_clear(proxy);
    proxy_rule(proxy, "path=/blobs/sha256:,method=HEAD,status=503,count=2,retry-after=1");
    double t0 = now_s();
    no_error(kiln_registry_blob_head(r, "kt/fault", a.digest, NULL, &e), 1, &e,
             "faults: HEAD through two 503s with Retry-After");
    double dt = now_s() - t0;
    ok(dt >= 1.9 && dt < 10, "faults: Retry-After: 1 honoured twice (%.2f s)", dt);

    proxy_clear(proxy);
    proxy_rule(proxy, "path=/manifests/,method=PUT,status=429,count=1,retry-after=1");
    struct blob cfg;
    make_blob(&cfg, "fault-cfg", 300, 15);
    no_error(kiln_registry_blob_push(r, "kt/fault", cfg.digest, cfg.fd, cfg.size, NULL, &e), 0, &e,
             "faults: push config");
    _cleanup_free_ char *man = make_manifest(&cfg, &a);
    no_error(
        kiln_registry_manifest_put(r, "kt/fault", "t429", OCI_MANIFEST, man, strlen(man), NULL, &e),
        0, &e, "faults: manifest PUT through a 429");

    /* a stalled reply: the stall timeout fires and the retry succeeds */
    proxy_clear(proxy);
    proxy_rule(proxy, "path=/manifests/t429,method=GET,delay=4000,count=1");
    {
        struct kiln_registry_options o = {0};
        o.http.stall_time_s = 1;
        o.http.backoff_base_ms = 10;
        struct kiln_registry *rs = NULL;
        kiln_registry_new(proxy, &o, &rs, NULL);
        struct kiln_registry_manifest m = KILN_REGISTRY_MANIFEST_INIT;
        t0 = now_s();
        no_error(kiln_registry_manifest_get(rs, "kt/fault", "t429", NULL, &m, &e), 0, &e,
                 "faults: a stalled GET times out and is retried");
        dt = now_s() - t0;
        ok(dt >= 0.9 && dt < 3.5, "faults: the stall timeout (1 s) cut the 4 s delay (%.2f s)", dt);
        kiln_registry_manifest_release(&m);
        kiln_registry_free(rs);
    }

    proxy_clear(proxy);
    proxy_rule(proxy, "path=/v2/kt/fault/blobs/sha256:,method=GET,hangup=1,count=2");
    no_error(kiln_registry_blob_get(r, "kt/fault", c.digest, -1, NULL, NULL, NULL, &e),
             -KILN_ENOTFOUND, &e, "faults: connection hangups are retried (then 404 reported)");

    /* a dropped blob download resumes with Range */
    proxy_clear(proxy);
    proxy_rule(proxy, "path=/blobs/sha256:,method=GET,drop=300000,count=2");
    get_and_compare(r, "kt/fault", &a, "faults: GET dropped twice mid-blob resumes and verifies");
    ok(count_lines(getenv("KT_PROXY_LOG") ? getenv("KT_PROXY_LOG") : "/nonexistent",
                   "\"dropped\": true", NULL) >= 2,
       "faults: the proxy did drop the downloads");

    /* a chunked upload interrupted on its third PATCH resumes from the registry's Range */
    proxy_clear(proxy);
    proxy_rule(proxy, "path=/blobs/uploads/,method=PATCH,skip=2,hangup=1,count=1");
    struct kiln_registry *rc = open_reg(proxy, NULL, NULL, 128 << 10, 4);
    no_error(kiln_registry_blob_push(rc, "kt/fault", big.digest, big.fd, big.size, NULL, &e), 0, &e,
             "faults: chunked push with a hangup on the 3rd PATCH completes");
    no_error(kiln_registry_blob_head(d, "kt/fault", big.digest, NULL, &e), 1, &e,
             "faults: the resumed blob is in the registry");
    get_and_compare(d, "kt/fault", &big, "faults: the resumed blob has the right bytes");

    /* a monolithic PUT hung up: the upload is restarted */
    proxy_clear(proxy);
    proxy_rule(proxy, "path=/blobs/uploads/.*digest=,method=PUT,hangup=1,count=1");
    no_error(kiln_registry_blob_push(r, "kt/fault", mono.digest, mono.fd, mono.size, NULL, &e), 0,
             &e, "faults: monolithic PUT with a hangup is redone");
    get_and_compare(d, "kt/fault", &mono, "faults: the redone blob has the right bytes");

    /* beyond the bound: a clear error and no blob */
    proxy_clear(proxy);
    proxy_rule(proxy, "path=/blobs/uploads/,method=PATCH,status=503,count=0");
    struct blob never;
    make_blob(&never, "fault-never", 300 << 10, 16);
    t0 = now_s();
    int rcode =
        kiln_registry_blob_push(rc, "kt/fault", never.digest, never.fd, never.size, NULL, &e);
    dt = now_s() - t0;
    ok(rcode == -KILN_ENET && has(e, "gave up after") && has(e, "injected by faultproxy") &&
           has(e, "HTTP 503"),
       "faults: endless 503 fails with a clear error (%.1f s)", dt);
    show("error", e);
    kiln_error_free(e);
    e = NULL;
    no_error(kiln_registry_blob_head(d, "kt/fault", never.digest, NULL, &e), 0, &e,
             "faults: nothing half-pushed: the blob does not exist");

    proxy_clear(proxy);
    proxy_rule(proxy, "path=^/v2/$,status=503,count=0");
    struct kiln_registry *r2 = open_reg(proxy, NULL, NULL, 0, 3);
    fails_with(kiln_registry_ping(r2, &e), &e, KILN_ENET, "(HTTP 503, 3 attempts)",
               "faults: 503 beyond max attempts is reported with the count");
    kiln_registry_free(r2);
    proxy_clear(proxy);

    kiln_registry_free(rc);
    kiln_registry_free(r);
    kiln_registry_free(d);
    blob_close(&a);
    blob_close(&c);
    blob_close(&big);
    blob_close(&mono);
    blob_close(&cfg);
    blob_close(&never);
}

/* ---- blob ranges (kiln_registry_blob_get_range) ------------------------------------- */

static int buf_sink(void *ud, const void *data, size_t len, struct kiln_error **err)
{
    return kiln_buf_add(ud, data, len) < 0 ? kiln_buf_finish(ud, "test buffer", err) : 0;
}

/* Whether got holds exactly the bytes off..end of blob b. */
static bool same_range(const struct blob *b, uint64_t off, const struct kiln_buf *got)
{
    if (off > b->size || got->len != b->size - off)
        return false;
    uint8_t *want = kiln_xmalloc(got->len ? got->len : 1);
    bool same = pread(b->fd, want, got->len, (off_t)off) == (ssize_t)got->len &&
                memcmp(want, got->buf, got->len) == 0;
    free(want);
    return same;
}

/* GET blob b from `off` on and check that exactly bytes off..end arrive. */
static void range_compare(struct kiln_registry *r, const char *repo, const struct blob *b,
                          int64_t size, uint64_t off, unsigned flags, const char *desc)
{
    struct kiln_buf got = KILN_BUF_INIT;
    struct kiln_error *e = NULL;
    uint64_t n = UINT64_MAX;
    int rc =
        kiln_registry_blob_get_range(r, repo, b->digest, size, off, flags, buf_sink, &got, &n, &e);
    bool good = rc == 0 && n == b->size - off && same_range(b, off, &got);
    ok(good, "%s", desc);
    if (!good) {
        printf("#   rc %d, %llu bytes (sink got %zu), want %llu\n", rc, (unsigned long long)n,
               got.len, (unsigned long long)(b->size - off));
        show("error", e);
    }
    kiln_error_free(e);
    kiln_buf_release(&got);
}

/* Lines of a file holding all of a, b and c. */
static int count_lines3(const char *path, const char *a, const char *b, const char *c)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return -1;
    char line[8192];
    int n = 0;
    while (fgets(line, sizeof(line), f))
        if (strstr(line, a) && strstr(line, b) && strstr(line, c))
            n++;
    fclose(f);
    return n;
}

/*
 * The same, waiting up to 3 s for at least `want` such lines: the fault proxy
 * logs a request after its answer went out, so the line may come a little
 * after the client saw the answer.
 */
static int wait_lines(const char *path, const char *a, const char *b, const char *c, int want)
{
    int n = count_lines3(path, a, b ? b : "", c ? c : "");
    for (int i = 0; i < 75 && n < want; i++) {
        struct timespec ts = {0, 40 * 1000000L};
        nanosleep(&ts, NULL);
        n = count_lines3(path, a, b ? b : "", c ? c : "");
    }
    return n;
}

static void test_range(const char *direct, const char *proxy, const char *plog)
{
    struct kiln_error *e = NULL;
    struct kiln_registry *d = open_reg(direct, NULL, NULL, 0, 2);
    struct kiln_registry *p = open_reg(proxy, NULL, NULL, 0, 2);
    struct blob b;
    make_blob(&b, "range", (1 << 20) + 333, 41);
    const int64_t sz = (int64_t)b.size;
    const char *repo = "kt/range";
    no_error(kiln_registry_blob_push(d, repo, b.digest, b.fd, b.size, NULL, &e), 0, &e,
             "range: push a 1 MiB blob");

    range_compare(d, repo, &b, sz, 0, 0, "range: offset 0 (verified): the whole blob");
    range_compare(d, repo, &b, sz, 1, 0, "range: offset 1: bytes 1..end exactly");
    range_compare(d, repo, &b, sz, 123457, 0, "range: offset 123457: bytes 123457..end exactly");
    range_compare(d, repo, &b, sz, b.size - 1, 0, "range: offset size-1: the last byte");
    range_compare(d, repo, &b, -1, 654321, 0, "range: an offset with the size unknown (-1)");
    range_compare(d, repo, &b, sz, b.size, 0, "range: offset == size: no bytes, no error");
    range_compare(d, repo, &b, sz, 4096, KILN_BLOB_GET_NO_VERIFY,
                  "range: offset 4096 with NO_VERIFY: bytes 4096..end exactly");
    fails_with(
        kiln_registry_blob_get_range(d, repo, b.digest, sz, b.size + 1, 0, NULL, NULL, NULL, &e),
        &e, KILN_EINVAL, "past its", "range: offset past the size: -KILN_EINVAL");
    fails_with(kiln_registry_blob_get_range(d, repo, b.digest, 0, 1, KILN_BLOB_GET_NO_VERIFY, NULL,
                                            NULL, NULL, &e),
               &e, KILN_EINVAL, "past its 0 bytes", "range: offset 1 of an empty size: EINVAL");
    fails_with(
        kiln_registry_blob_get_range(d, repo, b.digest, sz, UINT64_MAX, 0, NULL, NULL, NULL, &e),
        &e, KILN_EINVAL, "past its", "range: offset UINT64_MAX: EINVAL");

    /* through the proxy: the request carries Range and the registry answers 206 */
    proxy_clear(proxy);
    range_compare(p, repo, &b, sz, 222222, 0, "range: through the proxy: bytes 222222..end");
    is_int(wait_lines(plog, "\"range\": \"bytes=222222-\"", "\"result\": 206", NULL, 1), 1,
           "range: one GET with Range: bytes=222222-, answered 206");

    /* a server ignoring Range: 200 with the whole body; bytes before the offset are dropped */
    proxy_rule(proxy, "path=/v2/kt/range/blobs/,method=GET,norange=1,count=1");
    range_compare(p, repo, &b, sz, 333333, 0,
                  "range: a server ignoring Range (200, whole body): still bytes 333333..end");
    is_int(wait_lines(plog, "\"range\": \"bytes=333333-\"", "\"range_stripped\": true",
                      "\"result\": 200", 1),
           1, "range: the proxy stripped Range, the registry answered 200");
    proxy_rule(proxy, "path=/v2/kt/range/blobs/,method=GET,norange=1,count=1");
    range_compare(p, repo, &b, sz, 444444, KILN_BLOB_GET_NO_VERIFY,
                  "range: ignoring Range, NO_VERIFY: still bytes 444444..end");
    /* ... and dropping the connection past the offset, or before it */
    proxy_rule(proxy, "path=/v2/kt/range/blobs/,method=GET,norange=1,drop=700000,count=1");
    range_compare(p, repo, &b, sz, 500001, 0,
                  "range: ignoring Range, dropped past the offset: resumed, bytes 500001..end");
    proxy_rule(proxy, "path=/v2/kt/range/blobs/,method=GET,norange=1,drop=300000,count=1");
    range_compare(p, repo, &b, sz, 500002, 0,
                  "range: ignoring Range, dropped before the offset: resumed, bytes 500002..end");
    proxy_clear(proxy);
    /* a Range GET dropped twice: resumed from the offset plus what arrived */
    proxy_rule(proxy, "path=/v2/kt/range/blobs/,method=GET,drop=200000,count=2");
    range_compare(p, repo, &b, sz, 100003, 0, "range: dropped twice: resumed, bytes 100003..end");
    ok(wait_lines(plog, "\"range\": \"bytes=300003-\"", NULL, NULL, 1) == 1 &&
           wait_lines(plog, "\"range\": \"bytes=500003-\"", NULL, NULL, 1) == 1,
       "range: the resumes asked for bytes=300003- and bytes=500003-");
    proxy_clear(proxy);

    /* verification: only offset 0 without NO_VERIFY hashes; the size is always checked */
    proxy_rule(proxy, "path=/v2/kt/range/blobs/,method=GET,corrupt=1000,count=1");
    fails_with(kiln_registry_blob_get_range(p, repo, b.digest, sz, 0, 0, NULL, NULL, NULL, &e), &e,
               KILN_ENET, "digest mismatch", "range: offset 0 verifies: a flipped byte is caught");
    proxy_rule(proxy, "path=/v2/kt/range/blobs/,method=GET,corrupt=1000,count=1");
    {
        struct kiln_buf got = KILN_BUF_INIT;
        uint64_t n = 0;
        int rc = kiln_registry_blob_get_range(p, repo, b.digest, sz, 0, KILN_BLOB_GET_NO_VERIFY,
                                              buf_sink, &got, &n, &e);
        uint8_t orig = 0;
        bool flipped = got.len > 1000 && pread(b.fd, &orig, 1, 1000) == 1;
        uint8_t want = (uint8_t)~orig;
        flipped = flipped && (uint8_t)got.buf[1000] == want;
        ok(rc == 0 && n == b.size && got.len == b.size && flipped,
           "range: NO_VERIFY does not hash: a flipped byte passes, the size is right");
        if (rc != 0)
            show("error", e);
        kiln_error_free(e);
        e = NULL;
        kiln_buf_release(&got);
    }
    proxy_rule(proxy, "path=/v2/kt/range/blobs/,method=GET,corrupt=10,count=1");
    {
        struct kiln_buf got = KILN_BUF_INIT;
        int rc =
            kiln_registry_blob_get_range(p, repo, b.digest, sz, 4096, 0, buf_sink, &got, NULL, &e);
        ok(rc == 0 && got.len == b.size - 4096 && !same_range(&b, 4096, &got),
           "range: an offset > 0 is not hashed (as documented): a flipped byte passes");
        kiln_error_free(e);
        e = NULL;
        kiln_buf_release(&got);
    }
    proxy_clear(proxy);
    fails_with(kiln_registry_blob_get_range(d, repo, b.digest, sz - 1, 0, KILN_BLOB_GET_NO_VERIFY,
                                            NULL, NULL, NULL, &e),
               &e, KILN_ENET, "more than the expected",
               "range: NO_VERIFY still checks the size (a byte too many)");
    fails_with(kiln_registry_blob_get_range(d, repo, b.digest, sz + 1, 0, KILN_BLOB_GET_NO_VERIFY,
                                            NULL, NULL, NULL, &e),
               &e, KILN_ENET, "bytes, expected",
               "range: NO_VERIFY still checks the size (too few)");
    fails_with(kiln_registry_blob_get_range(d, repo, b.digest, sz + 1, 5000,
                                            KILN_BLOB_GET_NO_VERIFY, NULL, NULL, NULL, &e),
               &e, KILN_ENET, "bytes, expected", "range: at an offset too, the size is checked");

    kiln_registry_free(p);
    kiln_registry_free(d);
    blob_close(&b);
}

/* ---- kiln_upload_patch_read ------------------------------------------------------------ */

/* A read callback's source: memory in pieces, or a pipe (blocking reads). */
struct feed {
    const uint8_t *data;
    size_t len;
    size_t pos;
    size_t max_piece;
    int pipe_fd;    /* >= 0: read from it */
    size_t fail_at; /* nonzero: fail once pos reaches it */
    bool zero;      /* give 0 bytes (a broken callback) */
    int calls;
    int fails;
};

static int feed_read(void *ud, void *buf, size_t cap, size_t *ret_n, struct kiln_error **err)
{
    struct feed *f = ud;
    f->calls++;
    if (f->fail_at && f->pos >= f->fail_at) {
        f->fails++;
        return kiln_error_set(err, KILN_EIO, 0, "the test source broke at byte %zu", f->pos);
    }
    if (f->zero) {
        *ret_n = 0;
        return 0;
    }
    size_t n = cap < f->max_piece ? cap : f->max_piece;
    if (f->pipe_fd >= 0) {
        ssize_t m;
        do
            m = read(f->pipe_fd, buf, n);
        while (m < 0 && errno == EINTR);
        if (m <= 0)
            return kiln_error_set(err, KILN_EIO, errno, "the test pipe ended");
        n = (size_t)m;
    } else {
        if (n > f->len - f->pos)
            n = f->len - f->pos;
        memcpy(buf, f->data + f->pos, n);
    }
    f->pos += n;
    *ret_n = n;
    return 0;
}

struct slow_writer {
    int fd;
    const uint8_t *data;
    size_t len;
};

/* Writes into a pipe in 8 KiB pieces with pauses: the reader has to wait. */
static void *slow_write(void *ud)
{
    struct slow_writer *w = ud;
    for (size_t off = 0; off < w->len;) {
        size_t n = w->len - off < 8192 ? w->len - off : 8192;
        ssize_t m = write(w->fd, w->data + off, n);
        if (m < 0 && errno == EINTR)
            continue;
        if (m <= 0)
            break;
        off += (size_t)m;
        if (off % (64 << 10) < 8192) {
            struct timespec ts = {0, 2 * 1000000L};
            nanosleep(&ts, NULL);
        }
    }
    close(w->fd);
    return NULL;
}

static void test_patch_read(const char *host)
{
    struct kiln_error *e = NULL;
    struct kiln_registry *r = open_reg(host, NULL, NULL, 0, 2);
    struct blob b;
    make_blob(&b, "patch-read", (1 << 20) + 4321, 51);
    uint8_t *data = kiln_xmalloc(b.size);
    if (pread(b.fd, data, b.size, 0) != (ssize_t)b.size) {
        printf("Bail out! cannot read %s\n", b.path);
        exit(1);
    }
    const uint64_t first = 600000;

    struct kiln_upload *u = NULL;
    no_error(kiln_registry_upload_start(r, "kt/pread", NULL, NULL, &u, &e), 0, &e,
             "patch_read: upload session");
    if (u) {
        struct feed f = {.data = data, .len = b.size, .max_piece = 7000, .pipe_fd = -1};
        no_error(kiln_upload_patch_read(u, first, feed_read, &f, &e), 0, &e,
                 "patch_read: a 600000-byte chunk from a read callback (7000-byte pieces)");
        ok(f.pos == first && f.calls >= (int)(first / 7000),
           "patch_read: the callback was asked for exactly the chunk (%zu bytes, %d calls)", f.pos,
           f.calls);
        is_int(kiln_upload_offset(u), first, "patch_read: offset after the chunk");

        /* the rest from a pipe a thread fills slowly: the callback blocks for bytes */
        int fds[2];
        pthread_t th;
        bool piped = pipe(fds) == 0;
        struct slow_writer w = {piped ? fds[1] : -1, data + first, (size_t)(b.size - first)};
        piped = piped && pthread_create(&th, NULL, slow_write, &w) == 0;
        struct feed g = {.max_piece = 1 << 20, .pipe_fd = piped ? fds[0] : -1};
        no_error(piped ? kiln_upload_patch_read(u, b.size - first, feed_read, &g, &e) : -1, 0, &e,
                 "patch_read: the rest streamed from a blocking callback (a pipe a thread fills)");
        if (piped) {
            close(fds[0]);
            pthread_join(th, NULL);
        }
        no_error(kiln_upload_status(u, &e), 0, &e, "patch_read: upload status");
        is_int(kiln_upload_offset(u), b.size, "patch_read: the registry holds every byte");
        no_error(kiln_upload_finish(u, b.digest, &e), 0, &e,
                 "patch_read: the final PUT ?digest= verifies");
        kiln_upload_free(u);
        get_and_compare(r, "kt/pread", &b, "patch_read: the blob reads back identical");
    }

    /* streamed bytes that do not match the digest: the final PUT is refused */
    u = NULL;
    no_error(kiln_registry_upload_start(r, "kt/pread2", NULL, NULL, &u, &e), 0, &e,
             "patch_read: second session");
    if (u) {
        struct feed f = {.data = data + 1, .len = 300000, .max_piece = 65536, .pipe_fd = -1};
        no_error(kiln_upload_patch_read(u, 300000, feed_read, &f, &e), 0, &e,
                 "patch_read: 300000 bytes streamed");
        fails_with(kiln_upload_finish(u, b.digest, &e), &e, KILN_EINVAL, "digest",
                   "patch_read: the final PUT with another digest is refused");
        ok(kiln_upload_digest_rejected(u), "patch_read: digest_rejected() says DIGEST_INVALID");
        kiln_upload_cancel(u, NULL);
        kiln_upload_free(u);
    }
    no_error(kiln_registry_blob_head(r, "kt/pread2", b.digest, NULL, &e), 0, &e,
             "patch_read: nothing stored under the digest");

    /* a callback error fails the request at once (never retried), with its message */
    u = NULL;
    no_error(kiln_registry_upload_start(r, "kt/pread3", NULL, NULL, &u, &e), 0, &e,
             "patch_read: third session");
    if (u) {
        struct feed f = {
            .data = data, .len = b.size, .max_piece = 7000, .pipe_fd = -1, .fail_at = 100000};
        fails_with(kiln_upload_patch_read(u, 500000, feed_read, &f, &e), &e, KILN_EIO,
                   "the test source broke at byte", "patch_read: a callback error fails the PATCH");
        is_int(f.fails, 1, "patch_read: the failing callback was called once (no retry)");
        kiln_upload_cancel(u, NULL);
        kiln_upload_free(u);
    }
    u = NULL;
    no_error(kiln_registry_upload_start(r, "kt/pread3", NULL, NULL, &u, &e), 0, &e,
             "patch_read: fourth session");
    if (u) {
        struct feed f = {.pipe_fd = -1, .zero = true, .max_piece = 1};
        fails_with(kiln_upload_patch_read(u, 1000, feed_read, &f, &e), &e, KILN_EINTERNAL,
                   "gave 0 bytes", "patch_read: a callback giving no bytes is an internal error");
        kiln_upload_cancel(u, NULL);
        kiln_upload_free(u);
    }
    free(data);
    kiln_registry_free(r);
    blob_close(&b);
}

/* ---- registry -> registry copies (registry/transfer.c) --------------------------------- */

/* Push config c, layer l and a manifest tagged `tag` into repo; its digest into mdigest. */
static void push_image(struct kiln_registry *r, const char *repo, const char *tag,
                       const struct blob *c, const struct blob *l, char mdigest[80],
                       const char *label)
{
    struct kiln_error *e = NULL;
    char desc[160];
    snprintf(desc, sizeof(desc), "%s: push the source image", label);
    _cleanup_free_ char *man = make_manifest(c, l);
    char *got = NULL;
    int rc = kiln_registry_blob_push(r, repo, l->digest, l->fd, l->size, NULL, &e);
    if (rc >= 0)
        rc = kiln_registry_blob_push(r, repo, c->digest, c->fd, c->size, NULL, &e);
    if (rc >= 0)
        rc = kiln_registry_manifest_put(r, repo, tag, OCI_MANIFEST, man, strlen(man), &got, &e);
    no_error(rc, 0, &e, desc);
    snprintf(mdigest, 80, "%s", got ? got : "");
    free(got);
}

/*
 * What the copy tests start from: registries a and b opened, a layer of
 * `lsize` and a config of `csize` pseudo-random bytes (seeds seed and
 * seed + 1, files NAME-l and NAME-c), pushed to a as REPO:1.
 */
struct copy_fixture {
    struct kiln_registry *ra, *rb;
    struct blob l, c;
    char mdigest[80];
};

static void fixture_open(struct copy_fixture *f, const char *a, const char *b, const char *name,
                         uint64_t lsize, uint64_t csize, uint32_t seed, const char *repo,
                         const char *label)
{
    char n[128];
    f->ra = open_reg(a, NULL, NULL, 0, 2);
    f->rb = open_reg(b, NULL, NULL, 0, 2);
    snprintf(n, sizeof(n), "%s-l", name);
    make_blob(&f->l, n, lsize, seed);
    snprintf(n, sizeof(n), "%s-c", name);
    make_blob(&f->c, n, csize, seed + 1);
    push_image(f->ra, repo, "1", &f->c, &f->l, f->mdigest, label);
}

static void fixture_close(struct copy_fixture *f)
{
    kiln_registry_free(f->ra);
    kiln_registry_free(f->rb);
    blob_close(&f->l);
    blob_close(&f->c);
}

/* How a registry -> registry copy moves the bytes. */
enum via { VIA_KERNEL, VIA_RING, VIA_RING_VERIFY };

static int copy_via(const char *src, const char *dst, enum via via, uint64_t chunk,
                    struct kiln_transfer_result *res, struct kiln_error **e)
{
    struct kiln_registry_options ro = {0};
    ro.http.max_attempts = 3;
    ro.http.backoff_base_ms = 50;
    ro.http.backoff_max_ms = 400;
    ro.http.retry_max_ms = 20000;
    ro.http.stall_time_s = 10;
    struct kiln_transfer_endpoint s = {.ref = src, .registry = &ro};
    struct kiln_transfer_endpoint d = {.ref = dst, .registry = &ro};
    struct kiln_transfer_options o = {.jobs = 1,
                                      .stream_chunk = chunk,
                                      .verify_streams = via == VIA_RING_VERIFY,
                                      .no_splice = via == VIA_RING};
    return kiln_transfer_copy(&s, &d, &o, res, e);
}

static int copy_image(const char *src, const char *dst, bool verify, uint64_t chunk,
                      struct kiln_transfer_result *res, struct kiln_error **e)
{
    return copy_via(src, dst, verify ? VIA_RING_VERIFY : VIA_KERNEL, chunk, res, e);
}

/* The source (behind proxy a) serves a corrupted layer; the destination is behind proxy b. */
static void test_copy_corrupt(const char *a, const char *a_proxy, const char *b,
                              const char *b_proxy, const char *b_log)
{
    struct kiln_error *e = NULL;
    struct copy_fixture f;
    fixture_open(&f, a, b, "copy-bad", (3 << 19) + 7, 400, 61, "kt/xsrc", "copy");
    char src[256], dst[256], rule[512], put[160];
    snprintf(src, sizeof(src), "%s/kt/xsrc:1", a_proxy);
    snprintf(put, sizeof(put), "digest=sha256%%3A%.64s", f.l.digest + 7);

    proxy_clear(a_proxy);
    snprintf(rule, sizeof(rule), "path=/v2/kt/xsrc/blobs/%s,method=GET,corrupt=777777,count=0",
             f.l.digest);
    proxy_rule(a_proxy, rule);

    /* default: the destination checks the digest; kiln copies again hashing, and names the blob */
    log_reset();
    snprintf(dst, sizeof(dst), "%s/kt/xbad:1", b_proxy);
    struct kiln_transfer_result res;
    int rc = copy_image(src, dst, false, 0, &res, &e);
    ok(rc == -KILN_ENET && has(e, "copy '") && has(e, f.l.digest) && has(e, "digest mismatch"),
       "copy: a source serving a corrupted blob: the copy fails, naming the blob");
    show("error", e);
    kiln_error_free(e);
    e = NULL;
    ok(log_has("refused the digest of") && log_has("(HTTP 400)"),
       "copy: the destination refused the digest (DIGEST_INVALID), kiln copied again verifying");
    is_int(wait_lines(b_log, "/v2/kt/xbad/blobs/uploads/", put, "\"result\": 400", 1), 1,
           "copy: one final PUT of the layer, refused with 400");
    is_int(count_lines(b_log, "/v2/kt/xbad/blobs/uploads/", put), 1,
           "copy: the verifying second pass sent no final PUT");
    no_error(kiln_registry_blob_head(f.rb, "kt/xbad", f.l.digest, NULL, &e), 0, &e,
             "copy: the bad layer is not stored at the destination");
    struct kiln_registry_manifest m = KILN_REGISTRY_MANIFEST_INIT;
    no_error(kiln_registry_manifest_head(f.rb, "kt/xbad", "1", NULL, &m, &e), 0, &e,
             "copy: no tag was written at the destination");
    kiln_registry_manifest_release(&m);

    /* verify_streams: the bad bytes are caught here, before any final PUT */
    log_reset();
    snprintf(dst, sizeof(dst), "%s/kt/xbad2:1", b_proxy);
    rc = copy_image(src, dst, true, 0, &res, &e);
    ok(rc == -KILN_ENET && has(e, "copy '") && has(e, f.l.digest) && has(e, "digest mismatch"),
       "copy --verify: the corrupted blob fails the copy, naming the blob");
    show("error", e);
    kiln_error_free(e);
    e = NULL;
    ok(wait_lines(b_log, "/v2/kt/xbad2/blobs/uploads/", "\"PATCH\"", NULL, 1) >= 1,
       "copy --verify: the bytes were streamed to the destination");
    is_int(count_lines(b_log, "/v2/kt/xbad2/blobs/uploads/", put), 0,
           "copy --verify: caught before the final PUT (none sent)");
    ok(!log_has("refused the digest"), "copy --verify: the destination never had to refuse it");
    no_error(kiln_registry_manifest_head(f.rb, "kt/xbad2", "1", NULL, &m, &e), 0, &e,
             "copy --verify: no tag was written at the destination");
    kiln_registry_manifest_release(&m);

    /* the same source without the fault copies */
    proxy_clear(a_proxy);
    snprintf(dst, sizeof(dst), "%s/kt/xgood:1", b_proxy);
    no_error(copy_image(src, dst, true, 0, &res, &e), 0, &e,
             "copy --verify: the intact source copies");
    is_str(res.digest, f.mdigest, "copy --verify: the destination names the source's digest");
    get_and_compare(f.rb, "kt/xgood", &f.l, "copy --verify: the layer arrived intact");

    fixture_close(&f);
}

/*
 * A PATCH cut mid-body at the destination (proxy b) with 8 MiB chunks. The
 * ring path's chunks are larger than its ring: the bytes from the
 * registry's offset are gone from the ring and come again from the source
 * (proxy a) with a Range request. The kernel path (both sides plain http)
 * asks the source for each chunk's range; when a PATCH breaks, the rest of
 * the blob takes the ring path from the registry's offset.
 */
static void test_copy_cut(const char *a, const char *a_proxy, const char *a_log, const char *b,
                          const char *b_proxy, const char *b_log)
{
    struct kiln_error *e = NULL;
    const uint64_t chunk = 8 << 20, cut = 3 << 20;
    ok(chunk > KILN_TRANSFER_STREAM_BUFFER && cut > KILN_TRANSFER_STREAM_BUFFER,
       "cut: 8 MiB chunks and a 3 MiB cut are larger than the 2 MiB ring");
    struct copy_fixture f;
    fixture_open(&f, a, b, "copy-cut", (20 << 20) + 4321, 300, 71, "kt/ysrc", "cut");
    char src[256], dst[256], rule[256], range[64];
    snprintf(src, sizeof(src), "%s/kt/ysrc:1", a_proxy);
    snprintf(range, sizeof(range), "\"range\": \"bytes=%llu-\"", (unsigned long long)chunk);

    const char *repos[] = {"kt/ycut-kernel", "kt/ycut", "kt/ycut-verify"};
    const char *labels[] = {"cut (kernel)", "cut (ring)", "cut --verify"};
    const enum via vias[] = {VIA_KERNEL, VIA_RING, VIA_RING_VERIFY};
    for (int i = 0; i < 3; i++) {
        const char *label = labels[i];
        char desc[160];
        proxy_clear(a_proxy);
        proxy_clear(b_proxy);
        snprintf(rule, sizeof(rule),
                 "path=/v2/%s/blobs/uploads/,method=PATCH,skip=1,cutbody=%llu,count=1", repos[i],
                 (unsigned long long)cut);
        proxy_rule(b_proxy, rule);
        snprintf(dst, sizeof(dst), "%s/%s:1", b_proxy, repos[i]);
        int before = count_lines3(a_log, range, f.l.digest + 7, "\"result\": 206");
        int before_first = count_lines3(a_log, "\"range\": \"bytes=0-8388607\"", f.l.digest + 7,
                                        "\"result\": 206");
        log_reset();
        struct kiln_transfer_result res;
        snprintf(desc, sizeof(desc), "%s: the copy through a PATCH cut after 3 MiB completes",
                 label);
        no_error(copy_via(src, dst, vias[i], chunk, &res, &e), 0, &e, desc);
        snprintf(desc, sizeof(desc), "%s: the destination names the source's digest", label);
        is_str(res.digest, f.mdigest, "%s", desc);
        snprintf(rule, sizeof(rule), "/v2/%s/blobs/uploads/", repos[i]);
        snprintf(desc, sizeof(desc), "%s: the proxy cut the second PATCH mid-body", label);
        is_int(wait_lines(b_log, rule, "\"cutbody\"", "\"body_read\": 3145728", 1), 1, "%s", desc);
        if (vias[i] == VIA_KERNEL) {
            snprintf(desc, sizeof(desc), "%s: the first chunk was a range of the source (206)",
                     label);
            is_int(count_lines3(a_log, "\"range\": \"bytes=0-8388607\"", f.l.digest + 7,
                                "\"result\": 206") -
                       before_first,
                   1, "%s", desc);
            snprintf(desc, sizeof(desc), "%s: the rest of the blob went through memory", label);
            ok(log_has("copying it through memory"), "%s", desc);
            ok(!log_has("downloading again"), "%s: no download was restarted", label);
        } else {
            snprintf(desc, sizeof(desc),
                     "%s: resumed from the registry's offset 8388608 (not in the ring)", label);
            ok(log_has("downloading again from byte 8388608"), "%s", desc);
            ok(!log_has("copying it through memory"), "%s: no kernel path tried", label);
        }
        snprintf(desc, sizeof(desc), "%s: the source got a Range request from 8388608 (206)",
                 label);
        is_int(wait_lines(a_log, range, f.l.digest + 7, "\"result\": 206", before + 1) - before, 1,
               "%s", desc);
        snprintf(desc, sizeof(desc), "%s: the destination has the right bytes", label);
        get_and_compare(f.rb, repos[i], &f.l, desc);
        struct kiln_registry_manifest m = KILN_REGISTRY_MANIFEST_INIT;
        snprintf(desc, sizeof(desc), "%s: the tag is written", label);
        no_error(kiln_registry_manifest_head(f.rb, repos[i], "1", NULL, &m, &e), 1, &e, desc);
        snprintf(desc, sizeof(desc), "%s: the tag names the source's digest", label);
        is_str(m.digest, f.mdigest, "%s", desc);
        kiln_registry_manifest_release(&m);
    }
    proxy_clear(a_proxy);
    proxy_clear(b_proxy);
    fixture_close(&f);
}

/*
 * The kernel path between plain registries, and what turns it off: a
 * source answering the raw GET otherwise than 200 (here one 401 from proxy
 * a) makes that blob and every later one go through memory; nothing is
 * lost and the copy completes.
 */
static void test_copy_kernel(const char *a, const char *a_proxy, const char *b)
{
    struct kiln_error *e = NULL;
    struct copy_fixture f;
    fixture_open(&f, a, b, "copy-kernel", (5 << 20) + 17, 500, 81, "kt/ksrc", "kernel");
    char src[256], dst[256];
    snprintf(src, sizeof(src), "%s/kt/ksrc:1", a_proxy);
    struct kiln_transfer_result res;

    proxy_clear(a_proxy);
    snprintf(dst, sizeof(dst), "%s/kt/kdst:1", b);
    no_error(copy_via(src, dst, VIA_KERNEL, 0, &res, &e), 0, &e,
             "kernel: a copy between plain registries");
    is_str(res.digest, f.mdigest, "kernel: the destination names the source's digest");
    is_int((long long)res.bytes_in_kernel, (long long)(f.l.size + f.c.size),
           "kernel: every byte of both blobs moved in the kernel");
    get_and_compare(f.rb, "kt/kdst", &f.l, "kernel: the layer arrived intact");

    snprintf(dst, sizeof(dst), "%s/kt/kring:1", b);
    no_error(copy_via(src, dst, VIA_RING, 0, &res, &e), 0, &e, "kernel: the same with no_splice");
    is_int((long long)res.bytes_in_kernel, 0, "kernel: no_splice moves nothing in the kernel");
    is_int((long long)res.bytes_transferred, (long long)(f.l.size + f.c.size),
           "kernel: ... and transfers both blobs");

    proxy_rule(a_proxy, "path=/blobs/sha256:,method=GET,status=401,count=1");
    snprintf(dst, sizeof(dst), "%s/kt/koff:1", b);
    no_error(copy_via(src, dst, VIA_KERNEL, 0, &res, &e), 0, &e,
             "kernel: a source refusing the raw GET once: the copy completes");
    is_str(res.digest, f.mdigest, "kernel: ... with the source's digest");
    is_int((long long)res.bytes_in_kernel, 0,
           "kernel: ... and the kernel path off for every blob after it");
    get_and_compare(f.rb, "kt/koff", &f.l, "kernel: the layer arrived intact through memory");
    proxy_clear(a_proxy);

    fixture_close(&f);
}

/* ---- kiln copy --chunk-size ------------------------------------------------------------ */

extern char **environ;

/* Run kiln with args; its exit status (or -1), stdout and stderr into files under tmpdir. */
static int run_kiln(const char *kiln, const char *const *args, char out[600], char errf[600])
{
    snprintf(out, 600, "%s/kiln.out", tmpdir);
    snprintf(errf, 600, "%s/kiln.err", tmpdir);
    const char *argv[16];
    size_t n = 0;
    argv[n++] = kiln;
    for (size_t i = 0; args[i] && n < 15; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    /* an empty docker config: no credentials from the user's */
    char dc[600];
    snprintf(dc, sizeof(dc), "DOCKER_CONFIG=%s/no-docker-config", tmpdir);
    size_t ne = 0;
    while (environ[ne])
        ne++;
    const char **envp = kiln_xreallocarray(NULL, ne + 2, sizeof(char *));
    envp[0] = dc;
    for (size_t i = 0; i < ne; i++)
        envp[i + 1] = environ[i];
    envp[ne + 1] = NULL;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_addopen(&fa, 2, errf, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    pid_t pid;
    int status = -1;
    int e = posix_spawn(&pid, kiln, &fa, NULL, (char *const *)argv, (char *const *)envp);
    posix_spawn_file_actions_destroy(&fa);
    free(envp);
    if (e != 0)
        return -1;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static bool file_has(const char *path, const char *s)
{
    return count_lines(path, s, NULL) > 0;
}

static void test_cli_chunk(const char *kiln, const char *a, const char *b)
{
    struct kiln_error *e = NULL;
    struct copy_fixture f;
    fixture_open(&f, a, b, "cli", (1 << 20) + 99, 200, 81, "kt/clisrc", "cli");
    char src[256], dst[256], out[600], errf[600];
    snprintf(src, sizeof(src), "%s/kt/clisrc:1", a);
    const char *sizes[] = {"1g", "4g", "4096m", "5g", "4097m", "0"};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        bool good = i < 3;
        char repo[64];
        snprintf(repo, sizeof(repo), "kt/cli-%s", sizes[i]);
        snprintf(dst, sizeof(dst), "%s/%s:1", b, repo);
        const char *args[] = {"copy", "-q", "--chunk-size", sizes[i], src, dst, NULL};
        int st = run_kiln(kiln, args, out, errf);
        if (good) {
            ok(st == 0 && file_has(out, f.mdigest),
               "kiln copy --chunk-size %s: accepted, the image is copied (exit %d)", sizes[i], st);
        } else {
            char want[128];
            snprintf(want, sizeof(want), "--chunk-size wants a size from 1 to 4g, not '%s'",
                     sizes[i]);
            ok(st == 2 && file_has(errf, want),
               "kiln copy --chunk-size %s: a usage error (exit %d)", sizes[i], st);
        }
        if ((st == 0) != good) {
            printf("#   stderr:\n");
            FILE *fp = fopen(errf, "re");
            char line[512];
            while (fp && fgets(line, sizeof(line), fp))
                printf("#     %s", line);
            if (fp)
                fclose(fp);
        }
        struct kiln_registry_manifest m = KILN_REGISTRY_MANIFEST_INIT;
        int h = kiln_registry_manifest_head(f.rb, repo, "1", NULL, &m, &e);
        ok(h == (good ? 1 : 0) && (!good || (m.digest && strcmp(m.digest, f.mdigest) == 0)),
           "kiln copy --chunk-size %s: %s", sizes[i],
           good ? "the destination names the source's digest" : "nothing written");
        kiln_error_free(e);
        e = NULL;
        kiln_registry_manifest_release(&m);
    }
    fixture_close(&f);
}

/* ---- auth ----------------------------------------------------------------------------- */

/* push + pull with credentials that work */
static void push_pull(struct kiln_registry *r, const char *label, const char *repo,
                      const char *mount_repo)
{
    struct kiln_error *e = NULL;
    struct blob l, c;
    char name[64];
    snprintf(name, sizeof(name), "%s-l", label);
    make_blob(&l, name, (1 << 20) + 11, 21);
    snprintf(name, sizeof(name), "%s-c", label);
    make_blob(&c, name, 222, 22);
    char desc[128];
    snprintf(desc, sizeof(desc), "%s: push layer", label);
    no_error(kiln_registry_blob_push(r, repo, l.digest, l.fd, l.size, NULL, &e), 0, &e, desc);
    snprintf(desc, sizeof(desc), "%s: push config", label);
    no_error(kiln_registry_blob_push(r, repo, c.digest, c.fd, c.size, NULL, &e), 0, &e, desc);
    _cleanup_free_ char *man = make_manifest(&c, &l);
    snprintf(desc, sizeof(desc), "%s: push manifest", label);
    no_error(
        kiln_registry_manifest_put(r, repo, "latest", OCI_MANIFEST, man, strlen(man), NULL, &e), 0,
        &e, desc);
    struct kiln_registry_manifest m = KILN_REGISTRY_MANIFEST_INIT;
    snprintf(desc, sizeof(desc), "%s: pull manifest", label);
    no_error(kiln_registry_manifest_get(r, repo, "latest", NULL, &m, &e), 0, &e, desc);
    kiln_registry_manifest_release(&m);
    snprintf(desc, sizeof(desc), "%s: pull layer", label);
    get_and_compare(r, repo, &l, desc);
    if (mount_repo) {
        snprintf(desc, sizeof(desc), "%s: mount into another repository", label);
        no_error(kiln_registry_blob_push(r, mount_repo, l.digest, l.fd, l.size, repo, &e), 1, &e,
                 desc);
    }
    blob_close(&l);
    blob_close(&c);
}

static void test_basic(const char *host, const char *user, const char *password)
{
    struct kiln_error *e = NULL;
    char subject[256];
    snprintf(subject, sizeof(subject), "authentication required for '%s/kt/x'", host);

    struct kiln_registry *anon = open_reg(host, NULL, NULL, 0, 2);
    char reg_subject[256];
    snprintf(reg_subject, sizeof(reg_subject), "authentication required for '%s'", host);
    fails_with(kiln_registry_ping(anon, &e), &e, KILN_EAUTH, reg_subject,
               "basic: anonymous ping: authentication required");
    struct kiln_registry_manifest m = KILN_REGISTRY_MANIFEST_INIT;
    fails_with(kiln_registry_manifest_get(anon, "kt/x", "latest", NULL, &m, &e), &e, KILN_EAUTH,
               subject, "basic: anonymous pull: authentication required for 'HOST/kt/x'");
    kiln_registry_free(anon);

    struct kiln_registry *wrong = open_reg(host, user, "not-the-password", 0, 2);
    int rc = kiln_registry_manifest_get(wrong, "kt/x", "latest", NULL, &m, &e);
    ok(rc == -KILN_EAUTH && has(e, "authentication failed for '") && has(e, "/kt/x'") &&
           !has(e, "not-the-password"),
       "basic: wrong password: authentication failed, password not in the message");
    show("error", e);
    kiln_error_free(e);
    e = NULL;
    kiln_registry_free(wrong);

    struct kiln_registry *r = open_reg(host, user, password, 0, 3);
    no_error(kiln_registry_ping(r, &e), 0, &e, "basic: ping with credentials");
    push_pull(r, "basic", "kt/x", "kt/y");
    kiln_registry_free(r);
    test_threads(host, user, password, "basic");
}

static void test_token(const char *host, const char *dir, const char *realm, const char *service,
                       const char *user, const char *password, const char *ro_user,
                       const char *ro_password)
{
    struct kiln_error *e = NULL;
    char issuer_log[600];
    snprintf(issuer_log, sizeof(issuer_log), "%s/issuer/requests.log", dir);
    char subject[256];
    snprintf(subject, sizeof(subject), "authentication required for '%s/kt/x'", host);

    struct kiln_registry *anon = open_reg(host, NULL, NULL, 0, 2);
    struct kiln_registry_manifest m = KILN_REGISTRY_MANIFEST_INIT;
    fails_with(kiln_registry_manifest_get(anon, "kt/x", "latest", NULL, &m, &e), &e, KILN_EAUTH,
               subject, "token: anonymous pull: authentication required for 'HOST/kt/x'");
    kiln_registry_free(anon);

    struct kiln_registry *wrong = open_reg(host, user, "not-the-password", 0, 2);
    int rc = kiln_registry_manifest_get(wrong, "kt/x", "latest", NULL, &m, &e);
    ok(rc == -KILN_EAUTH && has(e, "authentication failed for '") && !has(e, "not-the-password"),
       "token: wrong password: authentication failed");
    show("error", e);
    kiln_error_free(e);
    e = NULL;
    kiln_registry_free(wrong);

    int before = count_lines(issuer_log, "\"result\": 200", NULL);
    struct kiln_registry *r = open_reg(host, user, password, 0, 3);
    no_error(kiln_registry_ping(r, &e), 0, &e, "token: ping with credentials (scope-less token)");
    before = count_lines(issuer_log, "\"result\": 200", NULL);
    push_pull(r, "token", "kt/x", "kt/y");
    /* more operations on the same scopes: no new tokens */
    int mid = count_lines(issuer_log, "\"result\": 200", NULL);
    for (int i = 0; i < 5; i++) {
        kiln_registry_manifest_get(r, "kt/x", "latest", NULL, &m, NULL);
        kiln_registry_manifest_release(&m);
    }
    int after = count_lines(issuer_log, "\"result\": 200", NULL);
    ok(after == mid, "token: cached tokens reused (%d new token requests for 5 pulls)",
       after - mid);
    ok(mid - before <= 4, "token: a push+pull+mount asked for %d tokens", mid - before);
    kiln_registry_free(r);

    struct kiln_registry *ro = open_reg(host, ro_user, ro_password, 0, 2);
    no_error(kiln_registry_manifest_get(ro, "kt/x", "latest", NULL, &m, &e), 0, &e,
             "token: pull-only user can pull");
    kiln_registry_manifest_release(&m);
    struct blob b;
    make_blob(&b, "token-ro", 100, 31);
    rc = kiln_registry_blob_push(ro, "kt/x", b.digest, b.fd, b.size, NULL, &e);
    ok(rc == -KILN_EAUTH && has(e, "denied: "), "token: pull-only user pushing: denied");
    show("error", e);
    kiln_error_free(e);
    e = NULL;
    kiln_registry_free(ro);

    /* identity token (OAuth2 refresh token) from the issuer: POST form flow */
    char url[1024];
    snprintf(url, sizeof(url), "%s?service=%s&offline_token=true", realm, service);
    char userpwd[256];
    snprintf(userpwd, sizeof(userpwd), "%s:%s", user, password);
    struct kiln_buf body = KILN_BUF_INIT;
    long s = plain_request("GET", url, NULL, userpwd, &body);
    char *refresh = NULL;
    time_t exp;
    char *tok = NULL;
    if (s == 200 &&
        kiln_auth_token_response_parse(body.buf, body.len, time(NULL), &tok, &refresh, &exp,
                                       NULL) == 0 &&
        refresh) {
        struct kiln_cred cred = {NULL, NULL, refresh};
        struct kiln_registry_options o = {0};
        o.cred = &cred;
        struct kiln_registry *it = NULL;
        kiln_registry_new(host, &o, &it, NULL);
        int posts = count_lines(issuer_log, "\"grant_type\": \"refresh_token\"", "\"result\": 200");
        no_error(kiln_registry_manifest_get(it, "kt/x", "latest", NULL, &m, &e), 0, &e,
                 "token: pull with an identity token (POST refresh_token grant)");
        kiln_registry_manifest_release(&m);
        ok(count_lines(issuer_log, "\"grant_type\": \"refresh_token\"", "\"result\": 200") ==
               posts + 1,
           "token: the issuer saw one refresh_token POST");
        kiln_registry_free(it);
    } else {
        ok(0, "token: could not get a refresh token from the issuer (status %ld)", s);
    }
    free(tok);
    free(refresh);
    kiln_buf_release(&body);
    blob_close(&b);
    test_threads(host, user, password, "token");
}

static void test_tls(const char *hostport, const char *ca, const struct blob *b);

/* The fake TLS registry of test-client.sh: Basic auth, blob GET redirected to storage. */
static void test_redirect(const char *host, const char *blob_path, const char *log)
{
    struct kiln_error *e = NULL;
    struct blob b = {.fd = open(blob_path, O_RDONLY | O_CLOEXEC)};
    struct kiln_sha256 h;
    kiln_sha256_init(&h);
    uint8_t buf[65536];
    ssize_t n;
    while (b.fd >= 0 && (n = read(b.fd, buf, sizeof(buf))) > 0) {
        kiln_sha256_update(&h, buf, (size_t)n);
        b.size += (uint64_t)n;
    }
    char hex[KILN_SHA256_HEX_LEN + 1];
    kiln_sha256_final_hex(&h, hex);
    kiln_sha256_release(&h);
    snprintf(b.digest, sizeof(b.digest), "sha256:%s", hex);

    struct kiln_registry *r = open_reg(host, "u", "p", 0, 2);
    get_and_compare(r, "kt/r", &b,
                    "redirect: GET over TLS (loopback, unverified), redirected to "
                    "storage, digest verified");
    ok(count_lines(log, "registry /v2/kt/r/blobs/", "auth=yes") >= 1,
       "redirect: the registry got the credentials");
    ok(count_lines(log, "storage /bucket/obj", "auth=no") == 1 &&
           count_lines(log, "storage", "auth=yes") == 0,
       "redirect: the storage host got no Authorization");
    uint64_t size = 0;
    no_error(kiln_registry_blob_head(r, "kt/r", b.digest, &size, &e), 1, &e,
             "redirect: HEAD follows the redirect");
    is_int(size, b.size, "redirect: HEAD size from the storage host");
    kiln_registry_free(r);

    /* Bearer: the fake honours each token for two requests, then wants a new one */
    r = open_reg(host, "u", "p", 0, 2);
    int good = 0;
    for (int i = 0; i < 5; i++)
        if (kiln_registry_blob_head(r, "kt/b", b.digest, NULL, &e) == 1)
            good++;
        else
            show("error", e);
    kiln_error_free(e);
    e = NULL;
    is_int(good, 5, "bearer: 5 HEADs succeed while tokens go stale");
    is_int(count_lines(log, "token /token?", "scope=repository%3Akt%2Fb%3Apull"), 3,
           "bearer: a 401 on a cached token asks for a new one (3 tokens for 5 requests)");
    is_int(count_lines(log, "bearer /v2/kt/b/", "refused"), 3,
           "bearer: one anonymous 401, then one 401 per stale token");
    kiln_registry_free(r);

    if (env("KT_REDIRECT_REMOTE"))
        test_tls(env("KT_REDIRECT_REMOTE"), env("KT_REDIRECT_CA"), &b);
    blob_close(&b);
}

/* TLS policy against the fake registry reached under a name that is not loopback. */
static void test_tls(const char *hostport, const char *ca, const struct blob *b)
{
    char pin[160];
    snprintf(pin, sizeof(pin), "%s:127.0.0.1", hostport);
    const char *resolve[] = {pin, NULL};
    struct kiln_error *e = NULL;
    struct kiln_cred cred = {(char *)"u", (char *)"p", NULL};
    struct kiln_registry_options o = {0};
    o.cred = &cred;
    o.http.max_attempts = 2;
    o.http.backoff_base_ms = 10;
    o.http.resolve = resolve;
    struct kiln_registry *r = NULL;

    kiln_registry_new(hostport, &o, &r, NULL);
    int rc = kiln_registry_ping(r, &e);
    ok(rc == -KILN_ENET && has(e, "https://") && has(e, "certificate"),
       "tls: a self-signed certificate is refused by default (no http fallback)");
    show("error", e);
    kiln_error_free(e);
    e = NULL;
    kiln_registry_free(r);

    o.http.ca_file = ca;
    kiln_registry_new(hostport, &o, &r, NULL);
    no_error(kiln_registry_ping(r, &e), 0, &e, "tls: verified with the CA file option");
    get_and_compare(r, "kt/r", b, "tls: blob GET over verified TLS");
    kiln_registry_free(r);

    o.http.ca_file = NULL;
    const char *insecure[] = {hostport, NULL};
    o.http.insecure = insecure;
    kiln_registry_new(hostport, &o, &r, NULL);
    no_error(kiln_registry_ping(r, &e), 0, &e, "tls: host:port in the insecure list skips verify");
    kiln_registry_free(r);

    char host[128];
    snprintf(host, sizeof(host), "%.*s", (int)strcspn(hostport, ":"), hostport);
    const char *insecure_host[] = {host, NULL};
    o.http.insecure = insecure_host;
    kiln_registry_new(hostport, &o, &r, NULL);
    no_error(kiln_registry_ping(r, &e), 0, &e, "tls: a host entry without port covers the port");
    kiln_registry_free(r);

    /* a stale plain-http hint for a registry that speaks TLS is found out */
    o.http.insecure = insecure;
    struct kiln_http *h = NULL;
    if (kiln_http_new(&o.http, &h, &e) < 0) {
        printf("Bail out! kiln_http_new: %s\n", e->msg);
        exit(1);
    }
    kiln_http_scheme_hint(h, hostport, true);
    ok(lists_plain(h, hostport), "tls: hinted plain http");
    o.shared_http = h;
    kiln_registry_new(hostport, &o, &r, NULL);
    no_error(kiln_registry_ping(r, &e), 0, &e,
             "tls: a wrong plain-http hint is dropped, https works");
    get_and_compare(r, "kt/r", b, "tls: then a blob GET over TLS");
    ok(!lists_plain(h, hostport), "tls: the host is no longer listed as plain http");
    kiln_registry_free(r);
    kiln_http_free(h);
    o.shared_http = NULL;
}

static void test_unreachable(void)
{
    struct kiln_error *e = NULL;
    struct kiln_registry *r = open_reg("127.0.0.1:1", NULL, NULL, 0, 2);
    double t0 = now_s();
    int rc = kiln_registry_ping(r, &e);
    ok(rc == -KILN_ENET && has(e, "127.0.0.1:1") && has(e, "after 2 attempts"),
       "unreachable: connection refused after 2 attempts (%.2f s)", now_s() - t0);
    show("error", e);
    kiln_error_free(e);
    kiln_registry_free(r);
}

/* ---- tags lists and manifest deletes ---------------------------------------------- */

static bool strv_has(const struct kiln_strv *v, const char *s)
{
    for (size_t i = 0; i < v->n; i++)
        if (!strcmp(v->v[i], s))
            return true;
    return false;
}

/* The pure parsers (tags pages, Link headers). */
static void test_tags_parsers(void)
{
    struct kiln_strv v = KILN_STRV_INIT;
    struct kiln_error *e = NULL;
    const char *page = "{\"name\":\"a/b\",\"tags\":[\"v1\",\"latest\",\"step-x\"]}";
    no_error(kiln_registry_parse_tags(page, strlen(page), &v, &e), 3, &e, "parse_tags: three tags");
    ok(v.n == 3 && !strcmp(v.v[0], "v1") && !strcmp(v.v[2], "step-x"), "parse_tags: in order");
    const char *none = "{\"name\":\"a/b\",\"tags\":null}";
    no_error(kiln_registry_parse_tags(none, strlen(none), &v, &e), 0, &e,
             "parse_tags: null tags are none");
    const char *bad = "{\"tags\":[\"ok\",\"no/slash\"]}";
    fails_with(kiln_registry_parse_tags(bad, strlen(bad), &v, &e), &e, KILN_EINVAL,
               "invalid tag 'no/slash'", "parse_tags: an invalid tag is named");
    const char *nul = "{\"tags\":[\"a\\u0000b\"]}";
    fails_with(kiln_registry_parse_tags(nul, strlen(nul), &v, &e), &e, KILN_EINVAL, "tags list",
               "parse_tags: a tag with a NUL is refused");
    fails_with(kiln_registry_parse_tags("[1]", 3, &v, &e), &e, KILN_EINVAL, "not a JSON object",
               "parse_tags: not an object");
    fails_with(kiln_registry_parse_tags("{\"tags\":{}}", 11, &v, &e), &e, KILN_EINVAL,
               "not an array", "parse_tags: tags not an array");
    is_int(v.n, 3, "parse_tags: the list is untouched on failure");
    kiln_strv_release(&v);

    struct {
        const char *value, *want;
    } links[] = {
        {"</v2/a/tags/list?n=2&last=b>; rel=\"next\"", "/v2/a/tags/list?n=2&last=b"},
        {"<https://r.example/v2/x?last=a,b>;rel=next", "https://r.example/v2/x?last=a,b"},
        {"</first>; rel=\"prev\", </second>; REL=\"last Next\"", "/second"},
        {"</a>; title=\"x;rel=next\"", NULL},
        {"</a>; rel=\"prev\"; rel=\"next\"", NULL},
        {"</a b>; rel=next", NULL},
        {"<>; rel=next", NULL},
        {"</a>; rel=\"next", NULL},
        {"/a; rel=next", NULL},
        {"", NULL},
    };
    for (size_t i = 0; i < KILN_ARRAY_SIZE(links); i++) {
        char *got = kiln_registry_link_next(links[i].value);
        ok(links[i].want ? got && !strcmp(got, links[i].want) : !got, "link_next '%s': %s",
           links[i].value, links[i].want ? links[i].want : "none");
        free(got);
    }
}

static void test_tags_delete(const char *host, const char *nodelete)
{
    struct kiln_error *e = NULL;
    struct kiln_registry *r = open_reg(host, NULL, NULL, 0, 3);
    struct kiln_strv v = KILN_STRV_INIT;
    no_error(kiln_registry_tags_list(r, "kt/no-such-repo", &v, &e), 0, &e,
             "tags: an unknown repository (404 NAME_UNKNOWN) ...");
    is_int(v.n, 0, "... is an empty list");

    struct blob config, layer;
    make_blob(&config, "tags-config", 300, 41);
    make_blob(&layer, "tags-layer", 2000, 42);
    int rc = kiln_registry_blob_push(r, "kt/tags", layer.digest, layer.fd, layer.size, NULL, &e);
    if (rc >= 0)
        rc = kiln_registry_blob_push(r, "kt/tags", config.digest, config.fd, config.size, NULL, &e);
    _cleanup_free_ char *man = make_manifest(&config, &layer);
    for (int i = 0; rc >= 0 && i < 23; i++) {
        char tag[16];
        snprintf(tag, sizeof(tag), "t%02d", i);
        rc =
            kiln_registry_manifest_put(r, "kt/tags", tag, OCI_MANIFEST, man, strlen(man), NULL, &e);
    }
    /* a second manifest (another layer list) under its own tag, to delete */
    _cleanup_free_ char *man2 = kiln_xasprintf(
        "{\"schemaVersion\":2,\"mediaType\":\"%s\",\"config\":{\"mediaType\":\"application/"
        "vnd.oci.image.config.v1+json\",\"digest\":\"%s\",\"size\":%llu},\"layers\":[]}",
        OCI_MANIFEST, config.digest, (unsigned long long)config.size);
    char *del = NULL;
    if (rc >= 0)
        rc = kiln_registry_manifest_put(r, "kt/tags", "del", OCI_MANIFEST, man2, strlen(man2), &del,
                                        &e);
    no_error(rc, 0, &e, "tags: push 23 tags of one manifest and one of another");

    no_error(kiln_registry_tags_list_n(r, "kt/tags", 7, &v, &e), 0, &e,
             "tags: list with pages of 7 (docker-registry 2.8 ignores n: one page)");
    bool all = v.n == 24 && strv_has(&v, "del");
    for (int i = 0; all && i < 23; i++) {
        char tag[16];
        snprintf(tag, sizeof(tag), "t%02d", i);
        all = strv_has(&v, tag);
    }
    ok(all, "tags: the 24 tags, each once (got %zu)", v.n);
    kiln_strv_release(&v);

    no_error(kiln_registry_manifest_delete(r, "kt/tags", del ? del : "", &e), 0, &e,
             "delete: the manifest, by digest (202)");
    struct kiln_registry_manifest m = KILN_REGISTRY_MANIFEST_INIT;
    fails_with(kiln_registry_manifest_get(r, "kt/tags", del ? del : "", NULL, &m, &e), &e,
               KILN_ENOTFOUND, "(HTTP 404)", "delete: then GET by digest is 404");
    fails_with(kiln_registry_manifest_get(r, "kt/tags", "del", NULL, &m, &e), &e, KILN_ENOTFOUND,
               "(HTTP 404)", "delete: ... and its tag is gone");
    no_error(kiln_registry_tags_list(r, "kt/tags", &v, &e), 0, &e, "tags: list again");
    ok(v.n == 23 && !strv_has(&v, "del"), "tags: 'del' is no longer listed (%zu tags)", v.n);
    kiln_strv_release(&v);
    fails_with(kiln_registry_manifest_delete(r, "kt/tags", del ? del : "", &e), &e, KILN_ENOTFOUND,
               "manifest '", "delete: again is -KILN_ENOTFOUND");
    fails_with(kiln_registry_manifest_delete(r, "kt/tags", "t00", &e), &e, KILN_EINVAL,
               "invalid digest 't00'", "delete: by tag is refused (a digest is wanted)");
    no_error(kiln_registry_manifest_head(r, "kt/tags", "t00", NULL, &m, &e), 1, &e,
             "delete: the other manifest's tags stay");
    kiln_registry_manifest_release(&m);
    free(del);

    if (nodelete) {
        struct kiln_registry *nd = open_reg(nodelete, NULL, NULL, 0, 2);
        char *d = NULL;
        rc = kiln_registry_blob_push(nd, "kt/nd", layer.digest, layer.fd, layer.size, NULL, &e);
        if (rc >= 0)
            rc = kiln_registry_blob_push(nd, "kt/nd", config.digest, config.fd, config.size, NULL,
                                         &e);
        if (rc >= 0)
            rc = kiln_registry_manifest_put(nd, "kt/nd", "x", OCI_MANIFEST, man, strlen(man), &d,
                                            &e);
        no_error(rc, 0, &e, "nodelete: push an image");
        fails_with(kiln_registry_manifest_delete(nd, "kt/nd", d ? d : "", &e), &e,
                   KILN_EUNSUPPORTED,
                   "does not allow deletes (HTTP 405; docker-registry: "
                   "storage.delete.enabled)",
                   "nodelete: a registry without deletes: -KILN_EUNSUPPORTED, saying so");
        no_error(kiln_registry_manifest_head(nd, "kt/nd", "x", NULL, &m, &e), 1, &e,
                 "nodelete: the manifest is still there");
        kiln_registry_manifest_release(&m);
        free(d);
        kiln_registry_free(nd);
    } else {
        ok(1, "# SKIP no registry without deletes");
    }
    blob_close(&config);
    blob_close(&layer);
    kiln_registry_free(r);
}

/* The fake registry's 23 tags, p00 to p22, in order. */
static bool tags_p00_p22(const struct kiln_strv *v)
{
    bool good = v->n == 23;
    for (size_t i = 0; good && i < v->n; i++) {
        char want[32];
        snprintf(want, sizeof(want), "p%02zu", i);
        good = !strcmp(v->v[i], want);
    }
    return good;
}

/* Pagination against the fake registry of test-client.sh (Basic u:p). */
static void test_tags_pages(const char *host, const char *log)
{
    struct kiln_error *e = NULL;
    struct kiln_registry *r = open_reg(host, "u", "p", 0, 2);
    struct kiln_strv v = KILN_STRV_INIT;
    int before = count_lines(log, "registry /v2/kt/paged/tags/list", "auth=yes");
    no_error(kiln_registry_tags_list_n(r, "kt/paged", 5, &v, &e), 0, &e,
             "pages: a registry that pages by n and last, pages of 5");
    ok(tags_p00_p22(&v), "pages: the 23 tags in order (got %zu)", v.n);
    is_int(count_lines(log, "registry /v2/kt/paged/tags/list", "auth=yes") - before, 5,
           "pages: in 5 requests (5+5+5+5+3)");
    kiln_strv_release(&v);

    no_error(kiln_registry_tags_list_n(r, "kt/paged", 23, &v, &e), 0, &e,
             "pages: exactly one full page ...");
    is_int(v.n, 23, "... then an empty one: 23 tags");
    kiln_strv_release(&v);

    before = count_lines(log, "registry /v2/kt/nolast/tags/list", "auth=yes");
    no_error(kiln_registry_tags_list_n(r, "kt/nolast", 5, &v, &e), 0, &e,
             "pages: a registry that ignores last ...");
    ok(v.n == 5 && count_lines(log, "registry /v2/kt/nolast/tags/list", "auth=yes") - before == 2,
       "... stops when a page brings nothing new (5 tags, 2 requests)");
    kiln_strv_release(&v);

    before = count_lines(log, "registry /v2/kt/linked/tags/list", "auth=yes");
    no_error(kiln_registry_tags_list_n(r, "kt/linked", 5, &v, &e), 0, &e,
             "pages: a registry that pages by Link only (4 a page, a cursor) ...");
    ok(tags_p00_p22(&v), "... all 23 tags in order (got %zu)", v.n);
    is_int(count_lines(log, "registry /v2/kt/linked/tags/list", "auth=yes") - before, 6,
           "... in 6 requests, each the Link of the one before");
    kiln_strv_release(&v);

    before = count_lines(log, "registry /v2/kt/offsite/tags/list", "auth=yes");
    no_error(kiln_registry_tags_list_n(r, "kt/offsite", 5, &v, &e), 0, &e,
             "pages: a Link to another origin ...");
    ok(v.n == 4 && count_lines(log, "registry /v2/kt/offsite/tags/list", "auth=yes") - before == 1,
       "... is not followed (4 tags, 1 request, the short page ends the list)");
    kiln_strv_release(&v);

    kiln_strv_push(&v, "kept");
    fails_with(kiln_registry_tags_list(r, "kt/badtag", &v, &e), &e, KILN_EINVAL,
               "invalid tag 'bad tag' in the tags list", "pages: an invalid tag fails, named");
    ok(v.n == 1, "pages: the list is untouched on failure");
    kiln_strv_release(&v);
    kiln_registry_free(r);
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    signal(SIGPIPE, SIG_IGN); /* the pipe writer of test_patch_read */
    kiln_log_set_handler(log_to_tap, NULL, KILN_LOG_INFO);
    curl_global_init(CURL_GLOBAL_ALL);
    snprintf(tmpdir, sizeof(tmpdir), "%s/kiln-test-client.XXXXXX",
             env("TMPDIR") ? env("TMPDIR") : "/tmp");
    if (!mkdtemp(tmpdir)) {
        printf("Bail out! mkdtemp\n");
        return 1;
    }
    const char *noauth = env("KT_NOAUTH");
    if (!noauth) {
        printf("1..0 # SKIP KT_NOAUTH not set (run test-client.sh)\n");
        return 0;
    }
    test_unreachable();
    test_tags_parsers();
    test_tags_delete(noauth, env("KT_NODELETE"));
    test_noauth(noauth, env("KT_NOAUTH_DIR") ? env("KT_NOAUTH_DIR") : "/nonexistent");
    test_hint_plain(noauth);
    test_threads(noauth, NULL, NULL, "noauth");
    if (env("KT_PROXY"))
        test_faults(env("KT_PROXY"), noauth);
    else
        ok(1, "# SKIP no fault proxy");
    if (env("KT_PROXY"))
        test_range(noauth, env("KT_PROXY"), env("KT_PROXY_LOG"));
    else
        ok(1, "# SKIP no fault proxy: no range tests");
    test_patch_read(noauth);
    if (env("KT_PROXY") && env("KT_PROXY_LOG") && env("KT_NOAUTH2") && env("KT_PROXY2") &&
        env("KT_PROXY2_LOG")) {
        test_copy_corrupt(noauth, env("KT_PROXY"), env("KT_NOAUTH2"), env("KT_PROXY2"),
                          env("KT_PROXY2_LOG"));
        test_copy_cut(noauth, env("KT_PROXY"), env("KT_PROXY_LOG"), env("KT_NOAUTH2"),
                      env("KT_PROXY2"), env("KT_PROXY2_LOG"));
        test_copy_kernel(noauth, env("KT_PROXY"), env("KT_NOAUTH2"));
    } else {
        ok(1, "# SKIP no second registry and fault proxy: no copy tests");
    }
    if (env("KT_KILN") && env("KT_NOAUTH2"))
        test_cli_chunk(env("KT_KILN"), noauth, env("KT_NOAUTH2"));
    else
        ok(1, "# SKIP no kiln binary: no 'kiln copy' option tests");
    if (env("KT_REDIRECT")) {
        test_redirect(env("KT_REDIRECT"), env("KT_REDIRECT_BLOB"), env("KT_REDIRECT_LOG"));
        test_tags_pages(env("KT_REDIRECT"), env("KT_REDIRECT_LOG"));
    }
    if (env("KT_BASIC"))
        test_basic(env("KT_BASIC"), env("KT_USER"), env("KT_PASSWORD"));
    if (env("KT_TOKEN"))
        test_token(env("KT_TOKEN"), env("KT_TOKEN_DIR"), env("KT_TOKEN_REALM"),
                   env("KT_TOKEN_SERVICE"), env("KT_USER"), env("KT_PASSWORD"), env("KT_RO_USER"),
                   env("KT_RO_PASSWORD"));

    /* remove the temporary files */
    DIR *dir = opendir(tmpdir);
    struct dirent *de;
    while (dir && (de = readdir(dir))) {
        if (de->d_name[0] == '.')
            continue;
        char p[700];
        snprintf(p, sizeof(p), "%s/%s", tmpdir, de->d_name);
        unlink(p);
    }
    if (dir)
        closedir(dir);
    rmdir(tmpdir);
    kiln_buf_release(&log_text);
    curl_global_cleanup();
    return tap_done();
}
