/* Unit tests of the pure parts of registry/http.c (no network). */
#include "util/common.h"
#include "registry/http.h"

#include "tap.h"

static void test_retry_after(void)
{
    long ms = -1;
    time_t now = 1445412480; /* Wed, 21 Oct 2015 07:28:00 GMT */

    is_int(kiln_http_retry_after_parse("120", now, &ms), 0, "retry-after seconds");
    is_int(ms, 120000, "120 s");
    is_int(kiln_http_retry_after_parse("  0 ", now, &ms), 0, "retry-after 0 with spaces");
    is_int(ms, 0, "0 s");
    is_int(kiln_http_retry_after_parse("99999999999999999999", now, &ms), 0, "huge seconds");
    is_int(ms, 86400L * 1000, "capped at one day");
    is_int(kiln_http_retry_after_parse("Wed, 21 Oct 2015 07:28:05 GMT", now, &ms), 0,
           "IMF-fixdate");
    is_int(ms, 5000, "date 5 s ahead");
    is_int(kiln_http_retry_after_parse("Wednesday, 21-Oct-15 07:28:10 GMT", now, &ms), 0,
           "RFC 850 date");
    is_int(ms, 10000, "RFC 850 10 s ahead");
    is_int(kiln_http_retry_after_parse("Wed Oct 21 07:28:02 2015", now, &ms), 0, "asctime date");
    is_int(ms, 2000, "asctime 2 s ahead");
    is_int(kiln_http_retry_after_parse("Tue, 20 Oct 2015 07:28:00 GMT", now, &ms), 0,
           "date in the past");
    is_int(ms, 0, "past date means now");
    ms = 77;
    is_int(kiln_http_retry_after_parse("", now, &ms), -1, "empty refused");
    is_int(kiln_http_retry_after_parse("12s", now, &ms), -1, "12s refused");
    is_int(kiln_http_retry_after_parse("-5", now, &ms), -1, "negative refused");
    is_int(kiln_http_retry_after_parse("1.5", now, &ms), -1, "fraction refused");
    is_int(kiln_http_retry_after_parse(NULL, now, &ms), -1, "NULL refused");
    is_int(ms, 77, "output untouched on failure");
}

static void test_backoff(void)
{
    /* the bound doubles from base and stops at max; rnd picks within it */
    is_int(kiln_http_backoff_ms(1, 250, 16000, UINT64_MAX), UINT64_MAX % 251, "attempt 1 bound");
    is_int(kiln_http_backoff_ms(1, 250, 16000, 250), 250, "attempt 1 can reach base");
    is_int(kiln_http_backoff_ms(1, 250, 16000, 251), 0, "attempt 1 wraps");
    is_int(kiln_http_backoff_ms(3, 250, 16000, 1000), 1000, "attempt 3 up to 1000");
    is_int(kiln_http_backoff_ms(3, 250, 16000, 1001), 0, "attempt 3 not above 1000");
    is_int(kiln_http_backoff_ms(60, 250, 16000, 16000), 16000, "late attempts capped at max");
    is_int(kiln_http_backoff_ms(1000, 250, 16000, 16001), 0, "no overflow on huge attempts");
    is_int(kiln_http_backoff_ms(2, 0, 100, 5), 0, "zero base");
    int within = 1;
    for (int a = 1; a <= 40; a++)
        for (uint64_t r = 0; r < 100000; r += 997) {
            long d = kiln_http_backoff_ms(a, 100, 5000, r * 2654435761u);
            long cap = 100;
            for (int i = 1; i < a && cap < 5000; i++)
                cap *= 2;
            if (cap > 5000)
                cap = 5000;
            if (d < 0 || d > cap)
                within = 0;
        }
    ok(within, "all delays within [0, min(max, base*2^(n-1))]");
    ok(!kiln_http_status_retryable(200) && !kiln_http_status_retryable(404) &&
           !kiln_http_status_retryable(501) && kiln_http_status_retryable(408) &&
           kiln_http_status_retryable(429) && kiln_http_status_retryable(500) &&
           kiln_http_status_retryable(502) && kiln_http_status_retryable(503) &&
           kiln_http_status_retryable(504),
       "retryable statuses");
}

static void join_is(const char *base, const char *ref, const char *want)
{
    char *got = kiln_http_url_join(base, ref);
    is_str(got, want, "join '%s' + '%s'", base, ref ? ref : "(null)");
    free(got);
}

static void test_join(void)
{
    const char *b = "http://a/b/c/d;p?q";
    /* RFC 3986 5.4.1 normal examples (those with http bases) */
    join_is(b, "g", "http://a/b/c/g");
    join_is(b, "./g", "http://a/b/c/g");
    join_is(b, "g/", "http://a/b/c/g/");
    join_is(b, "/g", "http://a/g");
    join_is(b, "//g", "http://g");
    join_is(b, "?y", "http://a/b/c/d;p?y");
    join_is(b, "g?y", "http://a/b/c/g?y");
    join_is(b, "#s", "http://a/b/c/d;p?q#s");
    join_is(b, "g#s", "http://a/b/c/g#s");
    join_is(b, "g?y#s", "http://a/b/c/g?y#s");
    join_is(b, ";x", "http://a/b/c/;x");
    join_is(b, "g;x", "http://a/b/c/g;x");
    join_is(b, ".", "http://a/b/c/");
    join_is(b, "./", "http://a/b/c/");
    join_is(b, "..", "http://a/b/");
    join_is(b, "../", "http://a/b/");
    join_is(b, "../g", "http://a/b/g");
    join_is(b, "../..", "http://a/");
    join_is(b, "../../", "http://a/");
    join_is(b, "../../g", "http://a/g");
    /* 5.4.2 abnormal examples */
    join_is(b, "../../../g", "http://a/g");
    join_is(b, "../../../../g", "http://a/g");
    join_is(b, "/./g", "http://a/g");
    join_is(b, "/../g", "http://a/g");
    join_is(b, "g.", "http://a/b/c/g.");
    join_is(b, ".g", "http://a/b/c/.g");
    join_is(b, "g..", "http://a/b/c/g..");
    join_is(b, "..g", "http://a/b/c/..g");
    join_is(b, "./../g", "http://a/b/g");
    join_is(b, "./g/.", "http://a/b/c/g/");
    join_is(b, "g/./h", "http://a/b/c/g/h");
    join_is(b, "g/../h", "http://a/b/c/h");
    join_is(b, "g;x=1/./y", "http://a/b/c/g;x=1/y");
    join_is(b, "g;x=1/../y", "http://a/b/c/y");
    join_is(b, "g?y/./x", "http://a/b/c/g?y/./x");
    join_is(b, "g#s/../x", "http://a/b/c/g#s/../x");
    /* what registries send */
    join_is("https://127.0.0.1:5000/v2/x/blobs/uploads/", "/v2/x/blobs/uploads/u1?_state=abc",
            "https://127.0.0.1:5000/v2/x/blobs/uploads/u1?_state=abc");
    join_is("https://reg.example/v2/x/blobs/uploads/",
            "http://127.0.0.1:5000/v2/x/blobs/uploads/u1?_state=a%3D%3D",
            "http://127.0.0.1:5000/v2/x/blobs/uploads/u1?_state=a%3D%3D");
    join_is("https://[::1]:5000/v2/", "u?x=1", "https://[::1]:5000/v2/u?x=1");
    join_is("https://h", "x", "https://h/x");
    join_is("https://h?q", "#f", "https://h?q#f");
    join_is("https://user:pw@h/a/b", "../c", "https://user:pw@h/c");
    join_is("https://h/a", "//s3.example/bucket?sig=1", "https://s3.example/bucket?sig=1");
    join_is("ftp://h/a", "b", NULL);
    join_is("not a url", "b", NULL);
    join_is("https://h/a", "", NULL);
    join_is("https://h/a", NULL, NULL);
}

static void hostport_is(const char *url, const char *want)
{
    char *got = kiln_http_url_hostport(url);
    is_str(got, want, "hostport of '%s'", url);
    free(got);
}

static void test_urls(void)
{
    hostport_is("https://Reg.Example:5000/v2/", "reg.example:5000");
    hostport_is("http://user:secret@127.0.0.1/x", "127.0.0.1");
    hostport_is("https://[::1]:5000", "[::1]:5000");
    hostport_is("https://h?x", "h");
    hostport_is("https:///path", NULL);
    hostport_is("nope", NULL);

    ok(kiln_http_same_origin("https://H:5000/a", "HTTPS://h:5000/b?x"), "same origin");
    ok(!kiln_http_same_origin("https://h:5000/a", "http://h:5000/a"), "scheme differs");
    ok(!kiln_http_same_origin("https://h:5000/a", "https://h:5001/a"), "port differs");
    ok(!kiln_http_same_origin("https://h/a", "https://s3.amazonaws.com/a"), "host differs");
    ok(!kiln_http_same_origin("https://h/a", "garbage"), "garbage is not the same");
}

static void redact_is(const char *url, const char *want)
{
    char *got = kiln_http_url_redact(url);
    is_str(got, want, "redact '%s'", url);
    free(got);
}

static void header_redact_is(const char *line, const char *want)
{
    char *got = kiln_http_header_redact(line);
    is_str(got, want, "redact header '%.20s'", line);
    free(got);
}

static void test_scrub(void)
{
    redact_is("https://user:pass@reg:5000/v2/x/blobs/uploads/u?_state=SECRET#f",
              "https://reg:5000/v2/x/blobs/uploads/u");
    redact_is("https://s3.example/b/o?X-Amz-Signature=abc", "https://s3.example/b/o");
    redact_is("http://h", "http://h");
    redact_is("user:pw@host?x", "user:pw");
    redact_is("plain", "plain");
    redact_is(NULL, "");
    header_redact_is("Authorization: Bearer abc.def", "Authorization: <redacted>");
    header_redact_is("authorization:Basic dXNlcjpwYXNz", "authorization: <redacted>");
    header_redact_is("Proxy-Authorization: x", "Proxy-Authorization: <redacted>");
    header_redact_is("Cookie: a=b", "Cookie: <redacted>");
    header_redact_is("Accept: application/json", "Accept: application/json");
    header_redact_is("Authorizationx: y", "Authorizationx: y");
    header_redact_is("no colon", "no colon");
}

static void test_loopback(void)
{
    const char *yes[] = {"localhost",
                         "LOCALHOST:5000",
                         "reg.localhost:80",
                         "127.0.0.1",
                         "127.0.0.1:5000",
                         "127.255.1.2:1",
                         "[::1]:5000",
                         "[::1]",
                         "::1",
                         "[::ffff:127.0.0.1]:443"};
    const char *no[] = {"example.com",
                        "10.0.0.1:5000",
                        "128.0.0.1",
                        "127.0.0.1.nip.io",
                        "localhost.com",
                        "[::2]:5000",
                        "127.1",
                        "0127.0.0.1",
                        "",
                        "[fe80::1]",
                        "mylocalhost"};
    for (size_t i = 0; i < KILN_ARRAY_SIZE(yes); i++)
        ok(kiln_http_host_is_loopback(yes[i]), "'%s' is loopback", yes[i]);
    for (size_t i = 0; i < KILN_ARRAY_SIZE(no); i++)
        ok(!kiln_http_host_is_loopback(no[i]), "'%s' is not loopback", no[i]);
    ok(!kiln_http_host_is_loopback(NULL), "NULL is not loopback");
}

static void test_insecure(void)
{
    const char *list[] = {"Reg.Example:5000", "other.example", "[fd00::1]", NULL};
    struct kiln_http_options o = {.insecure = list};
    struct kiln_http *h = NULL;
    struct kiln_error *e = NULL;
    is_int(kiln_http_new(&o, &h, &e), 0, "http context created");
    ok(kiln_http_host_insecure(h, "reg.example:5000"), "listed host:port");
    ok(!kiln_http_host_insecure(h, "reg.example:5001"), "other port not listed");
    ok(!kiln_http_host_insecure(h, "reg.example"), "host without the listed port");
    ok(kiln_http_host_insecure(h, "other.example:443"), "host entry covers all ports");
    ok(kiln_http_host_insecure(h, "OTHER.example"), "case-insensitive");
    ok(kiln_http_host_insecure(h, "[fd00::1]:5000"), "ipv6 entry");
    ok(kiln_http_host_insecure(h, "127.0.0.1:5000"), "loopback is insecure");
    ok(!kiln_http_host_insecure(h, "registry.example"), "unlisted host is secure");
    kiln_http_free(h);

    const char *bad[] = {"https://reg/x", NULL};
    o.insecure = bad;
    h = NULL;
    is_int(kiln_http_new(&o, &h, &e), -KILN_EINVAL, "URL as insecure entry refused");
    ok(e && strstr(e->msg, "invalid insecure registry 'https://reg/x'"), "message names it");
    ok(h == NULL, "nothing returned");
    kiln_error_free(e);
    kiln_http_free(NULL);
}

static void range_is(const char *v, bool zero_empty, int want_rc, uint64_t want)
{
    uint64_t got = 12345;
    int rc = kiln_http_range_parse(v, zero_empty, &got);
    is_int(rc, want_rc, "range '%s' rc", v ? v : "(null)");
    if (rc == 0)
        is_int(got, want, "range '%s' length", v);
}

static void test_range(void)
{
    range_is("0-0", true, 0, 0);
    range_is("0-0", false, 0, 1);
    range_is("0-1048575", true, 0, 1048576);
    range_is("bytes=0-99", true, 0, 100);
    range_is(" 0-9 ", true, 0, 10);
    range_is("1-9", true, -1, 0);
    range_is("0-", true, -1, 0);
    range_is("0-9x", true, -1, 0);
    range_is("0-99999999999999999999999", true, -1, 0);
    range_is("", true, -1, 0);
    range_is(NULL, true, -1, 0);
}

static void test_response_init(void)
{
    struct kiln_http_response r;
    kiln_http_response_init(&r);
    ok(r.status == 0 && r.content_length == -1 && r.body.len == 0 && !r.location, "response init");
    kiln_http_response_release(&r);
    kiln_http_response_release(NULL);
    ok(r.url == NULL, "release leaves an empty response");
}

static void test_options_equal(void)
{
    struct kiln_http_options a = {0}, b = {0};
    ok(kiln_http_options_equal(&a, &b), "options: two defaults are equal");
    a.proxy = "";
    ok(kiln_http_options_equal(&a, &b), "options: an empty proxy is no proxy");
    const char *ins1[] = {"127.0.0.1:5000", NULL}, *ins2[] = {"127.0.0.1:5001", NULL};
    const char *none[] = {NULL};
    a.insecure = ins1;
    ok(!kiln_http_options_equal(&a, &b), "options: an insecure list differs from none");
    b.insecure = ins2;
    ok(!kiln_http_options_equal(&a, &b), "options: other insecure hosts differ");
    b.insecure = ins1;
    ok(kiln_http_options_equal(&a, &b), "options: the same insecure list is equal");
    a.insecure = none;
    b.insecure = NULL;
    ok(kiln_http_options_equal(&a, &b), "options: an empty list is no list");
    b.max_attempts = 2;
    ok(!kiln_http_options_equal(&a, &b), "options: other retry settings differ");
    b.max_attempts = 0;
    b.ca_file = "/etc/ca.pem";
    ok(!kiln_http_options_equal(&a, &b), "options: another CA file differs");
}

int main(void)
{
    test_retry_after();
    test_backoff();
    test_join();
    test_urls();
    test_scrub();
    test_loopback();
    test_insecure();
    test_range();
    test_response_init();
    test_options_equal();
    return tap_done();
}
