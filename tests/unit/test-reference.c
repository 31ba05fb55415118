#include "util/common.h"

#include "oci/reference.h"
#include "util/buf.h"
#include "tap.h"

#define HEX64  "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define D256   "sha256:" HEX64
#define D512   "sha512:" HEX64 HEX64
#define TAG128 "t123456789012345678901234567890123456789012345678901234567890123" HEX64

/* A valid reference: its raw parts, its normalised string and its familiar form. */
struct valid {
    const char *in;
    const char *domain, *path, *tag, *digest;
    const char *norm;     /* NULL: normalisation must fail */
    const char *familiar; /* NULL: not checked */
};

static const struct valid valids[] = {
    {"ubuntu", NULL, "ubuntu", NULL, NULL, "docker.io/library/ubuntu:latest", "ubuntu:latest"},
    {"ubuntu:22.04", NULL, "ubuntu", "22.04", NULL, "docker.io/library/ubuntu:22.04",
     "ubuntu:22.04"},
    {"library/ubuntu", NULL, "library/ubuntu", NULL, NULL, "docker.io/library/ubuntu:latest",
     "ubuntu:latest"},
    {"docker.io/library/ubuntu", "docker.io", "library/ubuntu", NULL, NULL,
     "docker.io/library/ubuntu:latest", "ubuntu:latest"},
    {"docker.io/ubuntu", "docker.io", "ubuntu", NULL, NULL, "docker.io/library/ubuntu:latest",
     "ubuntu:latest"},
    {"index.docker.io/x", "index.docker.io", "x", NULL, NULL, "docker.io/library/x:latest",
     "x:latest"},
    {"index.docker.io/jupyter/x:1", "index.docker.io", "jupyter/x", "1", NULL,
     "docker.io/jupyter/x:1", "jupyter/x:1"},
    {"localhost/x", "localhost", "x", NULL, NULL, "localhost/x:latest", "localhost/x:latest"},
    {"localhost:5000/x", "localhost:5000", "x", NULL, NULL, "localhost:5000/x:latest",
     "localhost:5000/x:latest"},
    {"127.0.0.1:5000/a/b:tag", "127.0.0.1:5000", "a/b", "tag", NULL, "127.0.0.1:5000/a/b:tag",
     "127.0.0.1:5000/a/b:tag"},
    {"[::1]:5000/x", "[::1]:5000", "x", NULL, NULL, "[::1]:5000/x:latest", NULL},
    {"[2001:db8::1]/repo:tag", "[2001:db8::1]", "repo", "tag", NULL, "[2001:db8::1]/repo:tag",
     NULL},
    {"[2001:db8:1:2:3:4:5:6]:443/repo", "[2001:db8:1:2:3:4:5:6]:443", "repo", NULL, NULL,
     "[2001:db8:1:2:3:4:5:6]:443/repo:latest", NULL},
    {"host.example.com/a/b/c:tag@" D256, "host.example.com", "a/b/c", "tag", D256,
     "host.example.com/a/b/c:tag@" D256, NULL},
    {"host:5000/a/b:tag@" D256, "host:5000", "a/b", "tag", D256, "host:5000/a/b:tag@" D256, NULL},
    {"quay.io/jupyter/base-notebook:lab-4.0", "quay.io", "jupyter/base-notebook", "lab-4.0", NULL,
     "quay.io/jupyter/base-notebook:lab-4.0", "quay.io/jupyter/base-notebook:lab-4.0"},
    {"gcr.io/proj/img", "gcr.io", "proj/img", NULL, NULL, "gcr.io/proj/img:latest", NULL},
    {"a__b", NULL, "a__b", NULL, NULL, "docker.io/library/a__b:latest", "a__b:latest"},
    {"a-----b", NULL, "a-----b", NULL, NULL, "docker.io/library/a-----b:latest", NULL},
    {"a.b_c", NULL, "a.b_c", NULL, NULL, "docker.io/library/a.b_c:latest", "a.b_c:latest"},
    {"a.b.c-d_e__f", NULL, "a.b.c-d_e__f", NULL, NULL, "docker.io/library/a.b.c-d_e__f:latest",
     NULL},
    {"jupyter/base-notebook", NULL, "jupyter/base-notebook", NULL, NULL,
     "docker.io/jupyter/base-notebook:latest", "jupyter/base-notebook:latest"},
    {"x@" D256, NULL, "x", NULL, D256, "docker.io/library/x@" D256, "x@" D256},
    {"x@" D512, NULL, "x", NULL, D512, "docker.io/library/x@" D512, NULL},
    {"x:t@" D256, NULL, "x", "t", D256, "docker.io/library/x:t@" D256, "x:t@" D256},
    {"UPPER/x", "UPPER", "x", NULL, NULL, "UPPER/x:latest", "UPPER/x:latest"},
    {"Foo.Example.COM:8443/x", "Foo.Example.COM:8443", "x", NULL, NULL,
     "Foo.Example.COM:8443/x:latest", NULL},
    {"test.com:5000", NULL, "test.com", "5000", NULL, "docker.io/library/test.com:5000",
     "test.com:5000"},
    {"localhost:5000", NULL, "localhost", "5000", NULL, "docker.io/library/localhost:5000",
     "localhost:5000"},
    {"localhost", NULL, "localhost", NULL, NULL, "docker.io/library/localhost:latest", NULL},
    {"test_com/foo", NULL, "test_com/foo", NULL, NULL, "docker.io/test_com/foo:latest", NULL},
    {"foo/foo_bar.com:8080", NULL, "foo/foo_bar.com", "8080", NULL,
     "docker.io/foo/foo_bar.com:8080", NULL},
    {"192.168.1.1:5000/repo:5050", "192.168.1.1:5000", "repo", "5050", NULL,
     "192.168.1.1:5000/repo:5050", NULL},
    {"lowercase:Uppercase", NULL, "lowercase", "Uppercase", NULL,
     "docker.io/library/lowercase:Uppercase", NULL},
    {"xn--n3h.com/myimage:xn--n3h.com", "xn--n3h.com", "myimage", "xn--n3h.com", NULL,
     "xn--n3h.com/myimage:xn--n3h.com", NULL},
    {"sub-dom1.foo.com/bar/baz/quux:some-long-tag", "sub-dom1.foo.com", "bar/baz/quux",
     "some-long-tag", NULL, "sub-dom1.foo.com/bar/baz/quux:some-long-tag", NULL},
    {"b.gcr.io/test.example.com/my-app:test.example.com", "b.gcr.io", "test.example.com/my-app",
     "test.example.com", NULL, "b.gcr.io/test.example.com/my-app:test.example.com", NULL},
    {"test:5000/repo", "test:5000", "repo", NULL, NULL, "test:5000/repo:latest", NULL},
    {"x:_t.1-rc_2", NULL, "x", "_t.1-rc_2", NULL, "docker.io/library/x:_t.1-rc_2", NULL},
    {"x:" TAG128, NULL, "x", TAG128, NULL, "docker.io/library/x:" TAG128, NULL},
    {"docker.io/library/a/b", "docker.io", "library/a/b", NULL, NULL,
     "docker.io/library/a/b:latest", "library/a/b:latest"},
    /* the domain stays: "a.b/c" alone would read as domain "a.b" */
    {"docker.io/a.b/c", "docker.io", "a.b/c", NULL, NULL, "docker.io/a.b/c:latest",
     "docker.io/a.b/c:latest"},
    {"docker.io/localhost/c", "docker.io", "localhost/c", NULL, NULL,
     "docker.io/localhost/c:latest", "docker.io/localhost/c:latest"},
    {"localhost:65535/x", "localhost:65535", "x", NULL, NULL, "localhost:65535/x:latest", NULL},
    {"localhost:1/x", "localhost:1", "x", NULL, NULL, "localhost:1/x:latest", NULL},
    {"127.0.0.1/x", "127.0.0.1", "x", NULL, NULL, "127.0.0.1/x:latest", NULL},
    {"a/b/c/d/e", NULL, "a/b/c/d/e", NULL, NULL, "docker.io/a/b/c/d/e:latest", NULL},
    {"0/9", NULL, "0/9", NULL, NULL, "docker.io/0/9:latest", NULL},
    {HEX64 ":tag", NULL, HEX64, "tag", NULL, "docker.io/library/" HEX64 ":tag", HEX64 ":tag"},
    {"docker.io/" HEX64, "docker.io", HEX64, NULL, NULL, "docker.io/library/" HEX64 ":latest",
     HEX64 ":latest"},
    {"Docker/docker", "Docker", "docker", NULL, NULL, "Docker/docker:latest",
     "Docker/docker:latest"},
    {"busybox:latest@" D256, NULL, "busybox", "latest", D256,
     "docker.io/library/busybox:latest@" D256, "busybox:latest@" D256},
    /* a bare 64-hex string is an image id to docker: valid raw, not normalised */
    {HEX64, NULL, HEX64, NULL, NULL, NULL, NULL},
};

/* An invalid reference and a piece of the message it must give. */
struct invalid {
    const char *in;
    const char *msg;
};

static const struct invalid invalids[] = {
    {"", "empty reference"},
    {"Ubuntu", "repository name must be lowercase"},
    {"Ubuntu:tag", "repository name must be lowercase"},
    {"a/B", "repository name must be lowercase"},
    {"test:5000/Uppercase/lowercase:tag", "repository name must be lowercase"},
    {"x:", "invalid tag ''"},
    {"x@", "invalid digest ''"},
    {"x:tag@", "invalid digest ''"},
    {":tag", "missing repository name"},
    {"@" D256, "missing repository name"},
    {"-x", "must start with a letter or digit"},
    {"x-", "must end with a letter or digit"},
    {"x.", "must end with a letter or digit"},
    {"x..y", "invalid separator '..'"},
    {"x___y", "invalid separator '___'"},
    {"x._y", "invalid separator '._'"},
    {"x-.y", "invalid separator '-.'"},
    {"x/", "must not end with '/'"},
    {"/x", "must not start with '/'"},
    {"x//y", "empty path component"},
    {"a/b/", "must not end with '/'"},
    {"x y", "whitespace at offset 1"},
    {"x\ty", "whitespace at offset 1"},
    {"x\n", "whitespace at offset 1"},
    {"x\x01", "control byte 0x01 at offset 1"},
    {"x\x7f", "control byte 0x7f at offset 1"},
    {"x\xc3\xa9", "non-ascii byte 0xc3 at offset 1"},
    {"x;rm", "shell metacharacter ';' at offset 1"},
    {"$(x)", "shell metacharacter '$' at offset 0"},
    {"x|y", "shell metacharacter '|'"},
    {"x&&y", "shell metacharacter '&'"},
    {"x`id`", "shell metacharacter '`'"},
    {"x>y", "shell metacharacter '>'"},
    {"x*", "shell metacharacter '*'"},
    {"x:t@sha256:abc", "sha256 needs 64 lower-case hex digits"},
    {"x@sha256:" HEX64 "0", "sha256 needs 64 lower-case hex digits"},
    {"x@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde",
     "sha256 needs 64 lower-case hex digits"},
    {"x@sha256:0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef",
     "sha256 needs 64 lower-case hex digits"},
    {"x@sha512:" HEX64, "sha512 needs 128 lower-case hex digits"},
    {"x@md5:0123456789abcdef0123456789abcdef", "unsupported digest algorithm 'md5'"},
    {"x@sha384:" HEX64 "0123456789abcdef0123456789abcdef", "unsupported digest algorithm"},
    {"x@md5:abc", "invalid digest 'md5:abc'"},
    {"x@sha256", "missing ':' after the algorithm"},
    {"x@1sha:" HEX64, "bad algorithm '1sha'"},
    {"x@sha256.:" HEX64, "bad algorithm"},
    {"x@" D256 "@" D256, "sha256 needs 64"},
    {"x:-tag", "must start with a letter, digit or '_'"},
    {"x:.tag", "must start with a letter, digit or '_'"},
    {"x:a:b", "invalid tag 'a:b': invalid character ':'"},
    {"x:" TAG128 "9", "longer than 128 characters"},
    {"localhost:99999/x", "port '99999' is not in 1-65535"},
    {"localhost:123456/x", "is not in 1-65535"},
    {"localhost:0/x", "port '0' is not in 1-65535"},
    {"localhost:/x", "empty port"},
    {"localhost:50a/x", "must be digits only"},
    {"a:b/c", "port 'b' must be digits only"},
    {"-bad.com/x", "must not start or end with '-'"},
    {"bad-.com/x", "must not start or end with '-'"},
    {"a..com/x", "empty component"},
    {".a.com/x", "empty component"},
    {"a_b.com/x", "invalid character '_'"},
    {"[::1/x", "missing ']'"},
    {"[::g]/x", "bad IPv6 literal"},
    {"[]/x", "bad IPv6 literal"},
    {"[1:2:3:4:5:6:7:8:9]/x", "bad IPv6 literal"},
    {"[::1]x:5/y", "unexpected 'x' after the host"},
    {"[::1]:5000", "a domain must be followed by '/' and a repository path"},
    {"[::1]", "a domain must be followed by '/'"},
    {"[fe80::1%eth0]:5000/repo", "bad IPv6 literal"},
    {"a/b:c/d", "invalid character ':'"},
    {"x%y", "invalid character '%'"},
    {"https://github.com/docker/docker", "invalid domain 'https:': empty port"},
    {"fc00::1:5000/debian", "must be digits only"},
    {"[2001:db8:3:4::192.0.2.33]:5000/debian", "bad IPv6 literal"},
    {"____/____", "must start with a letter or digit"},
    {"docker/Docker", "repository name must be lowercase"},
    {"a=b", "invalid character '='"},
    {"x@sha256+b64:" HEX64, "unsupported digest algorithm 'sha256+b64'"},
    {"x@foo:abc=", "invalid digest 'foo:abc='"},
};

static void test_valid(const struct valid *v)
{
    struct kiln_ref r = KILN_REF_INIT;
    _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;
    int k = kiln_ref_parse(v->in, &r, &e);

    if (!ok(k == 0, "parse '%.60s'", v->in)) {
        printf("#   %s\n", e ? e->msg : "(no error)");
        return;
    }
    int same = (r.domain ? v->domain && strcmp(r.domain, v->domain) == 0 : !v->domain) &&
               strcmp(r.path, v->path) == 0 &&
               (r.tag ? v->tag && strcmp(r.tag, v->tag) == 0 : !v->tag) &&
               (r.digest ? v->digest && strcmp(r.digest, v->digest) == 0 : !v->digest);
    if (!ok(same, "raw parts of '%.60s'", v->in))
        printf("#   got domain '%s' path '%s' tag '%s' digest '%s'\n", r.domain ? r.domain : "-",
               r.path, r.tag ? r.tag : "-", r.digest ? r.digest : "-");
    _cleanup_free_ char *raw = kiln_ref_string(&r);
    is_str(raw, v->in, "raw round trip of '%.60s'", v->in);
    kiln_ref_release(&r);

    k = kiln_ref_parse_normalized(v->in, &r, &e);
    if (!v->norm) {
        ok(k == -KILN_EINVAL && r.path == NULL, "normalising '%.60s' fails", v->in);
        return;
    }
    if (!ok(k == 0, "normalise '%.60s'", v->in)) {
        printf("#   %s\n", e ? e->msg : "(no error)");
        return;
    }
    _cleanup_free_ char *norm = kiln_ref_string(&r);
    is_str(norm, v->norm, "normalised '%.60s'", v->in);

    /* the normalised string is a fixed point, raw and normalised */
    struct kiln_ref again = KILN_REF_INIT;
    k = kiln_ref_parse_normalized(norm, &again, NULL);
    _cleanup_free_ char *norm2 = k == 0 ? kiln_ref_string(&again) : NULL;
    is_str(norm2, v->norm, "normalised '%.60s' parses back to itself", v->in);
    kiln_ref_release(&again);
    k = kiln_ref_parse(norm, &again, NULL);
    ok(k == 0 && again.domain && strcmp(again.domain, r.domain) == 0 &&
           strcmp(again.path, r.path) == 0,
       "normalised '%.60s' has the same parts raw", v->in);
    kiln_ref_release(&again);

    _cleanup_free_ char *fam = kiln_ref_familiar(&r);
    if (v->familiar)
        is_str(fam, v->familiar, "familiar form of '%.60s'", v->in);
    k = kiln_ref_parse_normalized(fam, &again, NULL);
    _cleanup_free_ char *fam_norm = k == 0 ? kiln_ref_string(&again) : NULL;
    is_str(fam_norm, v->norm, "familiar '%.60s' normalises back", fam);
    kiln_ref_release(&again);
    kiln_ref_release(&r);
}

static void test_invalid(const struct invalid *v)
{
    char sentinel[] = "untouched";
    struct kiln_ref r = {sentinel, sentinel, sentinel, sentinel};
    _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;
    char shown[64];
    size_t n = 0;

    for (const char *p = v->in; *p && n + 5 < sizeof(shown); p++) {
        unsigned char c = (unsigned char)*p;
        if (c < 0x20 || c >= 0x7f)
            n += (size_t)snprintf(shown + n, sizeof(shown) - n, "\\x%02x", c);
        else
            shown[n++] = (char)c;
    }
    shown[n] = '\0';

    int k = kiln_ref_parse(v->in, &r, &e);
    is_int(k, -KILN_EINVAL, "'%s' is refused", shown);
    if (!ok(e && strstr(e->msg, v->msg), "'%s': message names the problem", shown))
        printf("#   got  '%s'\n#   want '...%s...'\n", e ? e->msg : "(none)", v->msg);
    ok(r.domain == sentinel && r.path == sentinel && r.tag == sentinel && r.digest == sentinel,
       "'%s': ret left alone", shown);
    kiln_error_freep(&e);
    k = kiln_ref_parse_normalized(v->in, &r, &e);
    ok(k == -KILN_EINVAL && e && strstr(e->msg, v->msg) && r.path == sentinel,
       "'%s': normalised parse refuses it the same way", shown);
}

static void test_lengths(void)
{
    _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;
    struct kiln_buf b = KILN_BUF_INIT;
    char name[300];
    size_t n = 0;

    /* "a/a/.../a" of 255 characters: valid raw, too long once docker.io/ is added */
    while (n < 254) {
        name[n++] = 'a';
        name[n++] = '/';
    }
    name[n++] = 'a';
    name[n] = '\0';
    is_int(strlen(name), 255, "255-character name built");
    is_int(kiln_ref_parse(name, NULL, &e), 0, "255-character name is valid");
    is_int(kiln_ref_parse_normalized(name, NULL, &e), -KILN_EINVAL,
           "255-character name is too long once normalised");
    ok(e && strstr(e->msg, "must not be more than 255 characters"), "normalised length message");

    /* 256 characters */
    name[n - 1] = 'b';
    name[n++] = 'b';
    name[n] = '\0';
    kiln_error_freep(&e);
    is_int(kiln_ref_parse(name, NULL, &e), -KILN_EINVAL, "256-character name is refused");
    ok(e && strstr(e->msg, "repository name must not be more than 255 characters"),
       "256-character name message");

    /* 255 with a domain, and a long tag on top */
    char *full = kiln_xasprintf("example.com/%.*s:%s", 243, name, "tag-puts-this-over");
    is_int(kiln_ref_parse_normalized(full, NULL, NULL), 0, "255-character name with domain");
    free(full);

    /* more than KILN_REF_MAX_LEN bytes */
    for (int i = 0; i <= KILN_REF_MAX_LEN; i++)
        kiln_buf_addch(&b, 'a');
    kiln_error_freep(&e);
    is_int(kiln_ref_parse(b.buf, NULL, &e), -KILN_EINVAL, "over KILN_REF_MAX_LEN is refused");
    ok(e && strstr(e->msg, "longer than 4096 bytes"), "over KILN_REF_MAX_LEN message");
    kiln_buf_release(&b);

    kiln_error_freep(&e);
    is_int(kiln_ref_parse(NULL, NULL, &e), -KILN_EINVAL, "NULL is refused");
    ok(e && strstr(e->msg, "empty reference"), "NULL is an empty reference");

    kiln_error_freep(&e);
    is_int(kiln_ref_parse_normalized(HEX64, NULL, &e), -KILN_EINVAL, "64-hex id refused");
    ok(e && strstr(e->msg, "cannot be a 64-character hexadecimal string"), "64-hex id message");
}

static void check_host(const char *in, bool norm, const char *want)
{
    struct kiln_ref r = KILN_REF_INIT;
    int k = norm ? kiln_ref_parse_normalized(in, &r, NULL) : kiln_ref_parse(in, &r, NULL);
    is_str(k == 0 ? kiln_ref_registry_host(&r) : "(parse failed)", want, "registry host of %s'%s'",
           norm ? "normalised " : "", in);
    kiln_ref_release(&r);
}

static void test_registry_host(void)
{
    check_host("ubuntu", true, "registry-1.docker.io");
    check_host("ubuntu", false, "registry-1.docker.io");
    check_host("docker.io/library/ubuntu", false, "registry-1.docker.io");
    check_host("index.docker.io/x/y", false, "registry-1.docker.io");
    check_host("index.docker.io/x/y", true, "registry-1.docker.io");
    check_host("jupyter/base-notebook:lab", true, "registry-1.docker.io");
    check_host("quay.io/jupyter/base-notebook", true, "quay.io");
    check_host("localhost:5000/x", true, "localhost:5000");
    check_host("[::1]:5000/x", false, "[::1]:5000");
    check_host("registry-1.docker.io/library/x", true, "registry-1.docker.io");
}

static void check_loopback(const char *in, bool want)
{
    struct kiln_ref r = KILN_REF_INIT;
    int k = kiln_ref_parse_normalized(in, &r, NULL);
    ok(k == 0 && kiln_ref_is_loopback(&r) == want, "'%s' is %sloopback", in, want ? "" : "not ");
    kiln_ref_release(&r);
}

static void test_loopback(void)
{
    check_loopback("localhost/x", true);
    check_loopback("localhost:5000/x", true);
    check_loopback("LocalHost:5000/x", true);
    check_loopback("127.0.0.1/x", true);
    check_loopback("127.0.0.1:5000/a/b:tag", true);
    check_loopback("127.255.255.255:80/x", true);
    check_loopback("127.1.2.3/x", true);
    check_loopback("[::1]/x", true);
    check_loopback("[::1]:5000/x", true);
    check_loopback("[0:0:0:0:0:0:0:1]:5000/x", true);
    check_loopback("ubuntu", false);
    check_loopback("localhost", false); /* a docker.io name */
    check_loopback("docker.io/x/y", false);
    check_loopback("128.0.0.1/x", false);
    check_loopback("126.0.0.1:5000/x", false);
    check_loopback("127.0.0.1.example.com/x", false);
    check_loopback("127.0.0.01/x", false);
    check_loopback("127.0.0/x", false);
    check_loopback("127.0.0.256/x", false);
    check_loopback("127.0.0.1000/x", false);
    check_loopback("[::2]:5000/x", false);
    check_loopback("[::]:5000/x", false);
    check_loopback("localhost.example.com/x", false);
    check_loopback("localhostx:5000/x", false);
    check_loopback("example.com/localhost/x", false);

    struct kiln_ref raw = KILN_REF_INIT;
    ok(kiln_ref_parse("ubuntu", &raw, NULL) == 0 && !kiln_ref_is_loopback(&raw),
       "no domain is not loopback");
    kiln_ref_release(&raw);
}

static void test_repository(void)
{
    struct kiln_ref r = KILN_REF_INIT;
    char *s = NULL;

    ok(kiln_ref_parse("host:5000/a/b:tag@" D256, &r, NULL) == 0, "parse for repository");
    s = kiln_ref_repository(&r);
    is_str(s, "host:5000/a/b", "repository with domain");
    free(s);
    kiln_ref_release(&r);
    ok(r.domain == NULL && r.path == NULL && r.tag == NULL && r.digest == NULL,
       "release resets the struct");
    kiln_ref_release(&r);
    kiln_ref_release(NULL);

    ok(kiln_ref_parse("a/b:c", &r, NULL) == 0, "parse without domain");
    s = kiln_ref_repository(&r);
    is_str(s, "a/b", "repository without domain");
    free(s);
    kiln_ref_release(&r);

    ok(kiln_ref_parse_normalized("ubuntu:22.04", &r, NULL) == 0, "parse normalised");
    s = kiln_ref_repository(&r);
    is_str(s, "docker.io/library/ubuntu", "normalised repository");
    free(s);
    kiln_ref_release(&r);

    /* a check only */
    is_int(kiln_ref_parse("ubuntu", NULL, NULL), 0, "parse with ret NULL");
    is_int(kiln_ref_parse("Ubuntu", NULL, NULL), -KILN_EINVAL, "parse with ret and err NULL");
}

int main(void)
{
    for (size_t i = 0; i < KILN_ARRAY_SIZE(valids); i++)
        test_valid(&valids[i]);
    for (size_t i = 0; i < KILN_ARRAY_SIZE(invalids); i++)
        test_invalid(&invalids[i]);
    test_lengths();
    test_registry_host();
    test_loopback();
    test_repository();
    printf("# %zu valid and %zu invalid vectors\n", KILN_ARRAY_SIZE(valids),
           KILN_ARRAY_SIZE(invalids));
    return tap_done();
}
