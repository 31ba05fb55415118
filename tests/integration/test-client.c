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
 * Output: TAP.
 */
#include "util/common.h"
#include "registry/client.h"

#include <curl/curl.h>
#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "util/log.h"
#include "util/sha256.h"

#include "../unit/tap.h"

static char tmpdir[256];

/* ---- helpers ------------------------------------------------------------------- */

static void log_to_tap(enum kiln_log_level level, const char *msg, void *ud)
{
    printf("# log: %s\n", msg);
    fflush(stdout);
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

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
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
    test_noauth(noauth, env("KT_NOAUTH_DIR") ? env("KT_NOAUTH_DIR") : "/nonexistent");
    test_threads(noauth, NULL, NULL, "noauth");
    if (env("KT_PROXY"))
        test_faults(env("KT_PROXY"), noauth);
    else
        ok(1, "# SKIP no fault proxy");
    if (env("KT_REDIRECT"))
        test_redirect(env("KT_REDIRECT"), env("KT_REDIRECT_BLOB"), env("KT_REDIRECT_LOG"));
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
    curl_global_cleanup();
    return tap_done();
}
