/* A small JSON client of the `kiln serve` API (see client.h). */
#include "util/common.h"
#include "cli/client.h"

#include <curl/curl.h>
#include <strings.h>

#include "kiln/version.h"
#include "util/buf.h"

/* Connecting should be quick on the networks kiln serve runs on. */
#define CONNECT_TIMEOUT_MS 10000L
/* A JSON call (listing 1000 specs included) answers well within this. */
#define CALL_TIMEOUT_MS 300000L
/* An error answer kept while streaming. */
#define ERROR_BODY_MAX ((size_t)1 << 20)
/* The longest server text quoted in a message. */
#define QUOTE_MAX 2000

struct kiln_client {
    char *url;         /* base, without a trailing '/' */
    char *auth_header; /* "Authorization: Bearer ..." or NULL */
    CURL *curl;
    struct kiln_diags fields; /* of the last failed call */
    char errbuf[CURL_ERROR_SIZE];
};

struct sink {
    struct kiln_client *c;
    struct kiln_buf body; /* the answer (calls) or an error answer (streams) */
    FILE *out;            /* streams: where a 2xx body goes */
    int out_errno;        /* streams: a write to `out` failed */
};

static bool has_prefix_ci(const char *s, const char *prefix)
{
    return strncasecmp(s, prefix, strlen(prefix)) == 0;
}

static bool printable_token(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p <= ' ' || *p == 0x7f)
            return false;
    return true;
}

int kiln_client_new(const char *url, const char *token, struct kiln_client **ret,
                    struct kiln_error **err)
{
    if (!url || !*url)
        url = getenv("KILN_URL");
    if (!url || !*url)
        url = KILN_CLIENT_DEFAULT_URL;
    if (!token)
        token = getenv("KILN_TOKEN");

    size_t scheme = has_prefix_ci(url, "http://") ? 7 : has_prefix_ci(url, "https://") ? 8 : 0;
    if (!scheme || !url[scheme])
        return kiln_error_set(err, KILN_EUSAGE, 0,
                              "server URL '%s' is not an http:// or https:// URL", url);
    for (const unsigned char *p = (const unsigned char *)url; *p; p++)
        if (*p <= ' ' || *p == 0x7f)
            return kiln_error_set(err, KILN_EUSAGE, 0,
                                  "server URL holds a space or a control character");
    /* Never quote the token: the message would print it. */
    if (token && *token && !printable_token(token))
        return kiln_error_set(err, KILN_EUSAGE, 0,
                              "the token holds a space or a control character");

    if (curl_global_init(CURL_GLOBAL_ALL) != CURLE_OK)
        return kiln_error_set(err, KILN_EINTERNAL, 0, "cannot initialise libcurl");
    CURL *h = curl_easy_init();
    if (!h) {
        curl_global_cleanup();
        return kiln_error_set(err, KILN_EINTERNAL, 0, "cannot initialise libcurl");
    }

    struct kiln_client *c = kiln_xcalloc(1, sizeof(*c));
    c->curl = h;
    size_t n = strlen(url);
    while (n > scheme && url[n - 1] == '/')
        n--;
    c->url = kiln_xstrndup(url, n);
    if (token && *token)
        c->auth_header = kiln_xasprintf("Authorization: Bearer %s", token);
    *ret = c;
    return 0;
}

void kiln_client_free(struct kiln_client *c)
{
    if (!c)
        return;
    curl_easy_cleanup(c->curl);
    curl_global_cleanup();
    if (c->auth_header) {
        /* The token should not linger in freed memory. */
        explicit_bzero(c->auth_header, strlen(c->auth_header));
        free(c->auth_header);
    }
    free(c->url);
    kiln_diags_release(&c->fields);
    free(c);
}

void kiln_client_freep(struct kiln_client **c)
{
    kiln_client_free(*c);
    *c = NULL;
}

const char *kiln_client_url(const struct kiln_client *c)
{
    return c->url;
}

const struct kiln_diags *kiln_client_fields(const struct kiln_client *c)
{
    return &c->fields;
}

char *kiln_client_escape(const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    struct kiln_buf b = KILN_BUF_INIT;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        unsigned char ch = *p;
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
            ch == '-' || ch == '_' || ch == '.' || ch == '~') {
            kiln_buf_addch(&b, (char)ch);
        } else {
            kiln_buf_addch(&b, '%');
            kiln_buf_addch(&b, hex[ch >> 4]);
            kiln_buf_addch(&b, hex[ch & 15]);
        }
    }
    return kiln_buf_detach(&b, NULL);
}

/* ---- answers ---------------------------------------------------------------- */

static size_t on_body(char *data, size_t size, size_t nmemb, void *userdata)
{
    struct sink *s = userdata;
    size_t n = size * nmemb;
    if (s->out) {
        long status = 0;
        curl_easy_getinfo(s->c->curl, CURLINFO_RESPONSE_CODE, &status);
        if (status >= 200 && status < 300) {
            if (n && (fwrite(data, 1, n, s->out) != n || fflush(s->out) != 0)) {
                s->out_errno = errno ? errno : EIO;
                return 0;
            }
            return n;
        }
    }
    if (kiln_buf_add(&s->body, data, n) < 0)
        return 0;
    return n;
}

static int status_code(long status)
{
    switch (status) {
    case 400:
    case 422:
        return KILN_EINVAL;
    case 401:
    case 403:
        return KILN_EAUTH;
    case 404:
        return KILN_ENOTFOUND;
    case 409:
        return KILN_ECONFLICT;
    case 413:
        return KILN_ETOOBIG;
    case 405:
    case 500:
        return KILN_EINTERNAL;
    case 501:
        return KILN_EUNSUPPORTED;
    case 504:
        return KILN_ETIMEOUT;
    default:
        return KILN_ENET;
    }
}

static void add_field(struct kiln_diags *d, const json_t *f)
{
    if (!json_is_object(f))
        return;
    const char *field = json_string_value(json_object_get(f, "field"));
    const char *msg = json_string_value(json_object_get(f, "message"));
    json_t *line = json_object_get(f, "line");
    _cleanup_free_ char *qf = kiln_diag_quote(field ? field : "", 200);
    _cleanup_free_ char *qm = kiln_diag_quote(msg ? msg : "invalid", QUOTE_MAX);
    json_int_t l = json_is_integer(line) ? json_integer_value(line) : 0;
    kiln_diags_add(d, l > 0 && l < 1000000 ? (int)l : 0, qf, "%s", qm);
}

/* Turn an error answer into *err and the client's field list. */
static int answer_error(struct kiln_client *c, const char *method, const char *path, long status,
                        const struct kiln_buf *body, struct kiln_error **err)
{
    int code = status_code(status);
    _cleanup_free_ char *msg = NULL;
    bool no_registry = false;

    json_t *root = json_loadb(body->buf, body->len, 0, NULL);
    json_t *e = json_object_get(root, "error");
    if (json_is_object(e)) {
        const char *m = json_string_value(json_object_get(e, "message"));
        const char *api_code = json_string_value(json_object_get(e, "code"));
        no_registry = api_code && !strcmp(api_code, "registry_not_found");
        if (m && *m)
            msg = kiln_diag_quote(m, QUOTE_MAX);
        json_t *fields = json_object_get(e, "fields");
        size_t i;
        json_t *f;
        json_array_foreach(fields, i, f) add_field(&c->fields, f);
    }
    if (!msg) {
        /* Not kiln's error shape (a proxy, another server): show its first line. */
        size_t n = strcspn(body->buf, "\r\n");
        _cleanup_free_ char *first = kiln_xstrndup(body->buf, n);
        _cleanup_free_ char *q = kiln_diag_quote(first, 200);
        msg = *q ? kiln_xasprintf("%s %s: HTTP %ld: %s", method, path, status, q)
                 : kiln_xasprintf("%s %s: HTTP %ld", method, path, status);
    }
    json_decref(root);

    if (code == KILN_EAUTH)
        return kiln_error_set(err, code, 0, "%s (%s)", msg,
                              c->auth_header
                                  ? "check the admin token given by --token or KILN_TOKEN"
                                  : "give the admin token with --token or KILN_TOKEN");
    if (no_registry)
        return kiln_error_set(err, code, 0, "%s (configure a registry for kiln serve)", msg);
    return kiln_error_set(err, code, 0, "%s", msg);
}

/* Turn a libcurl failure into *err, naming the server. */
static int transfer_error(struct kiln_client *c, CURLcode rc, struct sink *s,
                          struct kiln_error **err)
{
    long os_errno = 0;
    curl_easy_getinfo(c->curl, CURLINFO_OS_ERRNO, &os_errno);
    switch (rc) {
    case CURLE_COULDNT_CONNECT:
        return kiln_error_set(err, KILN_ENET, 0,
                              "cannot connect to kiln serve at '%s': %s (is it running? "
                              "set the URL with --url or KILN_URL)",
                              c->url, os_errno ? strerror((int)os_errno) : "connection failed");
    case CURLE_COULDNT_RESOLVE_HOST:
        return kiln_error_set(err, KILN_ENET, 0,
                              "cannot connect to kiln serve at '%s': unknown host", c->url);
    case CURLE_OPERATION_TIMEDOUT:
        return kiln_error_set(err, KILN_ETIMEOUT, 0, "kiln serve at '%s' did not answer in time",
                              c->url);
    case CURLE_WRITE_ERROR:
        if (s->out_errno)
            return kiln_error_set(err, KILN_EIO, s->out_errno, "write output");
        if (s->body.err)
            return kiln_error_set(err, KILN_ETOOBIG, 0,
                                  "the answer of kiln serve at '%s' is too large", c->url);
        break;
    default:
        break;
    }
    _cleanup_free_ char *detail =
        kiln_diag_quote(c->errbuf[0] ? c->errbuf : curl_easy_strerror(rc), 300);
    return kiln_error_set(err, KILN_ENET, 0, "request to kiln serve at '%s' failed: %s", c->url,
                          detail);
}

static int perform(struct kiln_client *c, const char *method, const char *path, const json_t *body,
                   struct sink *s, long *ret_status, struct kiln_error **err)
{
    CURL *h = c->curl;
    kiln_diags_release(&c->fields);
    curl_easy_reset(h);
    c->errbuf[0] = '\0';

    _cleanup_free_ char *url = kiln_xasprintf("%s%s", c->url, path);
    _cleanup_free_ char *json = NULL;
    if (body) {
        json = json_dumps(body, JSON_COMPACT);
        if (!json)
            return kiln_error_set(err, KILN_EINTERNAL, 0, "cannot encode the request body");
    }
    _cleanup_free_ char *agent = kiln_xasprintf("kiln/%s", kiln_version());

    struct curl_slist *headers = NULL;
    headers = curl_slist_append(headers, "Accept: application/json, text/plain");
    if (json)
        headers = curl_slist_append(headers, "Content-Type: application/json");
    headers = curl_slist_append(headers, "Expect:");
    if (c->auth_header)
        headers = curl_slist_append(headers, c->auth_header);

    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 1L);
    curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, CONNECT_TIMEOUT_MS);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, s->out ? 0L : CALL_TIMEOUT_MS);
    curl_easy_setopt(h, CURLOPT_USERAGENT, agent);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, c->errbuf);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, s);
    if (!strcmp(method, "GET")) {
        curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
    } else {
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
        if (json || strcmp(method, "DELETE") != 0) {
            curl_easy_setopt(h, CURLOPT_POSTFIELDS, json ? json : "");
            curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(json ? strlen(json) : 0));
        }
    }

    CURLcode rc = curl_easy_perform(h);
    curl_slist_free_all(headers);
    if (rc != CURLE_OK)
        return transfer_error(c, rc, s, err);
    long status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    if (status < 200 || status >= 300)
        return answer_error(c, method, path, status, &s->body, err);
    if (ret_status)
        *ret_status = status;
    return 0;
}

int kiln_client_call(struct kiln_client *c, const char *method, const char *path,
                     const json_t *body, long *ret_status, json_t **ret_json,
                     struct kiln_error **err)
{
    struct sink s = {.c = c, .body = KILN_BUF_INIT};
    kiln_buf_init(&s.body, KILN_CLIENT_MAX_BODY);
    long status = 0;
    int r = perform(c, method, path, body, &s, &status, err);
    if (r < 0) {
        kiln_buf_release(&s.body);
        return r;
    }
    json_t *root = NULL;
    if (ret_json && s.body.len > 0) {
        json_error_t je;
        root = json_loadb(s.body.buf, s.body.len, 0, &je);
        if (!root) {
            kiln_buf_release(&s.body);
            return kiln_error_set(err, KILN_ENET, 0,
                                  "%s %s: the answer of kiln serve at '%s' is not JSON", method,
                                  path, c->url);
        }
    }
    kiln_buf_release(&s.body);
    if (ret_status)
        *ret_status = status;
    if (ret_json)
        *ret_json = root;
    return 0;
}

int kiln_client_stream(struct kiln_client *c, const char *path, FILE *out, struct kiln_error **err)
{
    struct sink s = {.c = c, .body = KILN_BUF_INIT, .out = out};
    kiln_buf_init(&s.body, ERROR_BODY_MAX);
    int r = perform(c, "GET", path, NULL, &s, NULL, err);
    kiln_buf_release(&s.body);
    return r;
}

int kiln_client_fail(const struct kiln_client *c, const struct kiln_error *err)
{
    fprintf(stderr, "kiln: %s\n", err && err->msg ? err->msg : "unknown error");
    if (c) {
        for (size_t i = 0; i < c->fields.n; i++) {
            const struct kiln_diag *d = &c->fields.v[i];
            if (d->line > 0)
                fprintf(stderr, "  %s (line %d): %s\n", d->field[0] ? d->field : "-", d->line,
                        d->message);
            else if (d->field[0])
                fprintf(stderr, "  %s: %s\n", d->field, d->message);
            else
                fprintf(stderr, "  %s\n", d->message);
        }
    }
    return kiln_error_exit_code(err ? err->code : KILN_EINTERNAL);
}
