/*
 * Fuzz what kiln reads from a registry's answers besides manifests and auth
 * (those have their own targets), with one input each round:
 *   - the whole input as an error body ({"errors":[...]}) and as a tags
 *     list page ({"name":..,"tags":[..]});
 *   - the first line as a Retry-After value, as an upload's Range header and
 *     as a Link header;
 *   - the first line as a base URL and the second as a Location header
 *     (joined, compared, redacted, their host:port taken);
 *   - the first line as a header line to redact, a repository, a tag, a
 *     digest and a host:port;
 *   - the whole input as a raw HTTP response head (registry/rawhttp.h: where
 *     the head ends, and the head parsed into a response).
 * Each result is checked against the contract in registry/http.h and
 * registry/client.h (outputs written only on success, bounded and clean
 * messages, absolute references taken as they are, redacted lines without
 * the secret); a broken promise aborts.
 */
#include "util/common.h"

#include <strings.h>

#include "registry/client.h"
#include "registry/http.h"
#include "registry/rawhttp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define NOW    ((time_t)1700000000)
#define DAY_MS (24L * 3600 * 1000)

static void check(bool cond, const char *what)
{
    if (cond)
        return;
    fprintf(stderr, "fuzz-registry: %s\n", what);
    abort();
}

static bool clean(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return false;
    return true;
}

static void fuzz_errors(const char *body, size_t len)
{
    char *code = (char *)"untouched", *msg = (char *)"untouched";
    int r = kiln_registry_parse_errors(body, len, &code, &msg);
    if (r < 0) {
        check(r == -1, "parse_errors: failure is -1");
        check(strcmp(code, "untouched") == 0 && strcmp(msg, "untouched") == 0,
              "parse_errors: outputs untouched on failure");
        return;
    }
    check(r == 0, "parse_errors: success is 0");
    check(!code || (strlen(code) <= 512 && clean(code)), "parse_errors: code bounded and clean");
    check(!msg || (strlen(msg) <= 512 + 2 && clean(msg)), "parse_errors: message bounded, clean");
    free(code);
    free(msg);
}

static void fuzz_tags(const char *body, size_t len)
{
    struct kiln_strv v = KILN_STRV_INIT;
    kiln_strv_push(&v, "before");
    struct kiln_error *e = NULL;
    int r = kiln_registry_parse_tags(body, len, &v, &e);
    if (r < 0) {
        check(r == -KILN_EINVAL || r == -KILN_ETOOBIG, "parse_tags: EINVAL or ETOOBIG");
        check(e && e->msg && clean(e->msg) && strlen(e->msg) < 1024,
              "parse_tags: a bounded, clean message");
        check(v.n == 1, "parse_tags: the list untouched on failure");
    } else {
        check(!e, "parse_tags: no error on success");
        check((size_t)r == v.n - 1, "parse_tags: returns the count appended");
        for (size_t i = 1; i < v.n; i++)
            check(kiln_registry_tag_valid(v.v[i]), "parse_tags: every tag valid");
    }
    kiln_error_free(e);
    kiln_strv_release(&v);
}

static void fuzz_link(const char *line)
{
    char *next = kiln_registry_link_next(line);
    if (next) {
        check(*next != '\0', "link_next: a non-empty target");
        for (const char *p = next; *p; p++)
            check((unsigned char)*p > 0x20 && *p != 0x7f, "link_next: no space or control");
        bool found = false;
        for (const char *at = strstr(line, next); at && !found; at = strstr(at + 1, next))
            found = at > line && at[-1] == '<' && at[strlen(next)] == '>';
        check(found, "link_next: the target between < and > of the value");
        free(next);
    }
}

static void fuzz_headers(const char *line)
{
    long ms = -7;
    if (kiln_http_retry_after_parse(line, NOW, &ms) == 0)
        check(ms >= 0 && ms <= DAY_MS, "retry_after: delay within [0, one day]");
    else
        check(ms == -7, "retry_after: output untouched on failure");

    for (int z = 0; z < 2; z++) {
        uint64_t n = 12345;
        if (kiln_http_range_parse(line, z != 0, &n) < 0)
            check(n == 12345, "range: output untouched on failure");
        else
            check(n > 0 || z, "range: zero bytes only with zero_empty");
    }

    char *red = kiln_http_header_redact(line);
    check(red != NULL, "header_redact: always a string");
    const char *colon = strchr(line, ':');
    if (colon && (size_t)(colon - line) == 13 && strncasecmp(line, "authorization", 13) == 0)
        check(strcmp(red + 13, ": <redacted>") == 0,
              "header_redact: the Authorization value is gone");
    free(red);

    (void)kiln_registry_repo_valid(line);
    (void)kiln_registry_tag_valid(line);
    int k = kiln_registry_digest_kind(line);
    check(k >= -1 && k <= 1, "digest_kind: -1, 0 or 1");
    if (k == 1)
        check(strlen(line) == 71 && strncmp(line, "sha256:", 7) == 0,
              "digest_kind: 1 only for sha256 and 64 hex digits");
    (void)kiln_http_host_is_loopback(line);
}

static bool http_url(const char *u)
{
    return strncasecmp(u, "http://", 7) == 0 || strncasecmp(u, "https://", 8) == 0;
}

static void fuzz_urls(const char *base, const char *ref)
{
    char *j = kiln_http_url_join(base, ref);
    if (j) {
        check(*j != '\0' && *ref != '\0', "url_join: a non-empty result for a non-empty reference");
        char *jhp = kiln_http_url_hostport(j);
        check(!jhp || !strchr(jhp, '@'), "url_hostport: no userinfo");
        if (jhp && http_url(j)) {
            /* an absolute reference is taken as it is */
            char *again = kiln_http_url_join(j, j);
            check(again && strcmp(again, j) == 0, "url_join: an absolute URL joins to itself");
            free(again);
        }
        free(jhp);
        (void)kiln_http_same_origin(base, j);
    }
    free(j);
    char *red = kiln_http_url_redact(ref);
    check(red != NULL, "url_redact: always a string");
    check(!strchr(red, '?') && !strchr(red, '#'), "url_redact: no query or fragment");
    free(red);
    char *hp = kiln_http_url_hostport(base);
    check(!hp || !strchr(hp, '@'), "url_hostport: no userinfo");
    check(kiln_http_same_origin(base, base) == (hp != NULL),
          "same_origin: a URL is its own origin exactly when it has an authority");
    free(hp);
}

static void fuzz_raw_head(const char *in, size_t len)
{
    size_t hl = kiln_raw_head_length(in, len);
    check(hl <= len, "raw head: length within the input");
    if (hl) {
        check(hl >= 2 && in[hl - 1] == '\n', "raw head: ends with a line feed");
        check(in[hl - 2] == '\n' || (hl >= 3 && in[hl - 2] == '\r' && in[hl - 3] == '\n'),
              "raw head: ends with a blank line");
        check(kiln_raw_head_length(in, hl - 1) == 0, "raw head: the first blank line counts");
    }
    struct kiln_http_response r;
    kiln_http_response_init(&r);
    int rc = kiln_raw_parse_head(in, hl ? hl : len, &r);
    check(rc == 0 || rc == -1, "raw head: 0 or -1");
    if (rc == 0) {
        check(r.status >= 100 && r.status <= 599, "raw head: status within 100-599");
        char *fields[] = {r.location,        r.content_type, r.docker_content_digest, r.range,
                          r.content_range,   r.retry_after,  r.chunk_min_length,      r.link,
                          r.www_authenticate};
        for (size_t i = 0; i < KILN_ARRAY_SIZE(fields); i++)
            check(!fields[i] || strlen(fields[i]) <= KILN_HTTP_HEADER_MAX,
                  "raw head: header values bounded");
        check(r.content_length >= -1, "raw head: content length -1 or a count");
    }
    kiln_http_response_release(&r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 64 * 1024)
        return 0;
    char *in = kiln_xmalloc(size + 1);
    memcpy(in, data, size);
    in[size] = '\0';

    fuzz_errors(in, size);
    fuzz_tags(in, size);
    fuzz_raw_head(in, size);

    /* lines: the first, and the second (both NUL-terminated copies) */
    size_t n1 = strcspn(in, "\n");
    char *l1 = kiln_xstrndup(in, n1);
    const char *rest = in[n1] ? in + n1 + 1 : "";
    char *l2 = kiln_xstrndup(rest, strcspn(rest, "\n"));
    fuzz_headers(l1);
    fuzz_link(l1);
    fuzz_urls(l1, l2);
    free(l1);
    free(l2);
    free(in);
    return 0;
}
