#include "util/common.h"
#include "spec/pip.h"
#include "tap.h"

/* A valid requirement and the fields it parses to; extras joined with ','. */
struct good {
    const char *in;
    const char *name;
    const char *extras;
    const char *specifier;
    const char *url;
    const char *marker;
};

static const struct good goods[] = {
    /* PrimeHub examples */
    {"numpy>=1.17", "numpy", "", ">=1.17", NULL, NULL},
    {"pandas[all]", "pandas", "all", NULL, NULL, NULL},
    {"numpy==1.17.*", "numpy", "", "==1.17.*", NULL, NULL},
    {"tensorflow-gpu==2.4.1", "tensorflow-gpu", "", "==2.4.1", NULL, NULL},
    {"scikit-learn", "scikit-learn", "", NULL, NULL, NULL},
    {"requests[security,socks]>=2.8.1,==2.8.*", "requests", "security,socks", ">=2.8.1,==2.8.*",
     NULL, NULL},
    {"name@https://example.com/x.whl", "name", "", NULL, "https://example.com/x.whl", NULL},
    /* names */
    {"a", "a", "", NULL, NULL, NULL},
    {"A1", "A1", "", NULL, NULL, NULL},
    {"zope.interface", "zope.interface", "", NULL, NULL, NULL},
    {"typing_extensions", "typing_extensions", "", NULL, NULL, NULL},
    {"Django", "Django", "", NULL, NULL, NULL},
    {"  numpy  ", "numpy", "", NULL, NULL, NULL},
    {"backports.tarfile", "backports.tarfile", "", NULL, NULL, NULL},
    /* extras */
    {"pandas[]", "pandas", "", NULL, NULL, NULL},
    {"pandas [ all , sql ]", "pandas", "all,sql", NULL, NULL, NULL},
    {"ray[default,tune]==2.9.0", "ray", "default,tune", "==2.9.0", NULL, NULL},
    {"apache-airflow[google.cloud]", "apache-airflow", "google.cloud", NULL, NULL, NULL},
    /* specifiers */
    {"numpy>=1.17,<2", "numpy", "", ">=1.17,<2", NULL, NULL},
    {"numpy (>= 1.17, < 2)", "numpy", "", ">=1.17,<2", NULL, NULL},
    {"numpy(>=1.17)", "numpy", "", ">=1.17", NULL, NULL},
    {"numpy >= 1.17 , < 2 ", "numpy", "", ">=1.17,<2", NULL, NULL},
    {"requests~=2.31", "requests", "", "~=2.31", NULL, NULL},
    {"foo===1.0.post1+local", "foo", "", "===1.0.post1+local", NULL, NULL},
    {"foo!=1.5.*", "foo", "", "!=1.5.*", NULL, NULL},
    {"foo<=2,>1", "foo", "", "<=2,>1", NULL, NULL},
    {"foo==1!2.0rc1", "foo", "", "==1!2.0rc1", NULL, NULL},
    {"foo==2.0.dev3", "foo", "", "==2.0.dev3", NULL, NULL},
    {"foo==1.0-1", "foo", "", "==1.0-1", NULL, NULL},
    {"foo==v1.0", "foo", "", "==v1.0", NULL, NULL},
    {"torch==2.1.0+cu118", "torch", "", "==2.1.0+cu118", NULL, NULL},
    /* markers */
    {"numpy; python_version < '3.13'", "numpy", "", NULL, NULL, "python_version < '3.13'"},
    {"numpy;python_version<\"3.13\"", "numpy", "", NULL, NULL, "python_version<\"3.13\""},
    {"numpy>=1.17 ; python_version >= '3.8'  ", "numpy", "", ">=1.17", NULL,
     "python_version >= '3.8'"},
    {"pywin32; sys_platform == 'win32' and platform_machine != 'arm64'", "pywin32", "", NULL, NULL,
     "sys_platform == 'win32' and platform_machine != 'arm64'"},
    {"foo; (os_name == 'nt' or os_name == 'posix') and python_full_version >= '3.8.1'", "foo", "",
     NULL, NULL, "(os_name == 'nt' or os_name == 'posix') and python_full_version >= '3.8.1'"},
    {"foo; 'linux' in sys_platform", "foo", "", NULL, NULL, "'linux' in sys_platform"},
    {"foo; sys_platform not in 'win32 cygwin'", "foo", "", NULL, NULL,
     "sys_platform not in 'win32 cygwin'"},
    {"foo; extra == 'test'", "foo", "", NULL, NULL, "extra == 'test'"},
    {"foo; implementation_name == \"cpython\"", "foo", "", NULL, NULL,
     "implementation_name == \"cpython\""},
    {"foo; platform_python_implementation=='CPython'and(implementation_version>'3')", "foo", "",
     NULL, NULL, "platform_python_implementation=='CPython'and(implementation_version>'3')"},
    {"foo; platform_release ~= '5.10' or platform_system === 'Linux' or platform_version <= '1'",
     "foo", "", NULL, NULL,
     "platform_release ~= '5.10' or platform_system === 'Linux' or platform_version <= '1'"},
    {"foo; ((((python_version > '3'))))", "foo", "", NULL, NULL, "((((python_version > '3'))))"},
    {"foo; python_version > '$(x); `y` | & <>'", "foo", "", NULL, NULL,
     "python_version > '$(x); `y` | & <>'"},
    {"foo; os_name == ''", "foo", "", NULL, NULL, "os_name == ''"},
    /* urls */
    {"name @ https://example.com/x.whl", "name", "", NULL, "https://example.com/x.whl", NULL},
    {"pip[test] @ https://github.com/pypa/pip/archive/22.0.2.zip ; python_version >= '3.7'", "pip",
     "test", NULL, "https://github.com/pypa/pip/archive/22.0.2.zip", "python_version >= '3.7'"},
    {"x @ https://files.example.com:8443/a/x-1.0.tar.gz?q=1,2+3#sha256=0a1b%2Fc~", "x", "", NULL,
     "https://files.example.com:8443/a/x-1.0.tar.gz?q=1,2+3#sha256=0a1b%2Fc~", NULL},
    {"x@https://1.2.3.4:443/simple/x/x-1.0.whl", "x", "", NULL,
     "https://1.2.3.4:443/simple/x/x-1.0.whl", NULL},
    {"x @ HTTPS://Example.COM", "x", "", NULL, "HTTPS://Example.COM", NULL},
};

/* An invalid requirement and the exact error message. */
struct bad {
    const char *in;
    const char *msg;
};

static const struct bad bads[] = {
    /* PrimeHub examples */
    {"numpy; rm -rf /", "expected a marker variable at offset 7"},
    {"numpy && curl x", "unexpected '&' at offset 6"},
    {"$(reboot)", "expected a name at offset 0"},
    {"-e .", "options such as '-e' are not allowed"},
    {"--index-url=http://x", "options such as '--index-url' are not allowed"},
    {"  --extra-index-url http://x", "options such as '--extra-index-url' are not allowed"},
    {"./local.whl", "local paths are not allowed"},
    {"/abs/path", "local paths are not allowed"},
    {"~/x", "local paths are not allowed"},
    {"file:///x.whl", "local paths are not allowed"},
    {"FILE:x", "local paths are not allowed"},
    {"name @ http://insecure/x.whl", "url must use https"},
    {"name @ git+https://github.com/x/y", "url must use https"},
    {"name @ file:///x.whl", "local paths are not allowed"},
    {"name @ ./x.whl", "local paths are not allowed"},
    {"numpy\n", "unexpected control byte 0x0a at offset 5"},
    {"numpy\t>=1", "unexpected control byte 0x09 at offset 5"},
    {"numpy\x7f", "unexpected control byte 0x7f at offset 5"},
    {"numpy; os_name == 'caf\xc3\xa9'", "unexpected non-ASCII byte 0xc3 at offset 22"},
    {"numpy\"", "unexpected '\"' at offset 5"},
    {"numpy'", "unexpected ''' at offset 5"},
    {"a b", "unexpected 'b' at offset 2"},
    {"numpy>=", "expected a version at offset 7"},
    {"[all]", "expected a name at offset 0"},
    {"pandas[", "expected an extra name at offset 7"},
    {"pandas[all", "expected ',' or ']' at offset 10"},
    {"pandas[all,]", "expected an extra name at offset 11"},
    {"pandas[all;x]", "unexpected ';' at offset 10"},
    {"numpy==1.0;", "expected a marker variable at offset 11"},
    {"", "empty requirement"},
    {"    ", "empty requirement"},
    /* names */
    {"numpy-", "unexpected '-' at offset 5"},
    {"_numpy", "expected a name at offset 0"},
    {"numpy/linalg", "local paths are not allowed"},
    {"numpy-1.0-py3-none-any.whl", "'.whl' at offset 22 makes pip look for a local file; local "
                                   "paths are not allowed"},
    {"x.tar.gz", "'.tar.gz' at offset 1 makes pip look for a local file; local paths are not "
                 "allowed"},
    {"numpy==1.0.ZIP", "'.zip' at offset 10 makes pip look for a local file; local paths are not "
                       "allowed"},
    {"https://example.com/x.whl", "a url must follow a name, as in 'name @ https://...'"},
    /* specifiers */
    {"numpy=1.0", "expected a version operator (==, !=, <=, >=, <, >, ~=, ===) at offset 5"},
    {"numpy=>1.0", "expected a version operator (==, !=, <=, >=, <, >, ~=, ===) at offset 5"},
    {"numpy>=1.0,", "expected a version operator (==, !=, <=, >=, <, >, ~=, ===) at offset 11"},
    {"numpy()", "expected a version operator (==, !=, <=, >=, <, >, ~=, ===) at offset 6"},
    {"numpy (>=1.0", "expected ')' at offset 12"},
    {"numpy >=1.0)", "unexpected ')' at offset 11"},
    {"numpy ==1.0 ==2.0", "unexpected '=' at offset 12"},
    {"numpy>=1. 17", "a version must end with a letter or digit at offset 8"},
    {"numpy>=.1", "a version must start with a letter or digit at offset 7"},
    {"numpy>=1.*", "'*' is only allowed as a trailing '.*' after '==' or '!=' at offset 9"},
    {"numpy==1*", "'*' is only allowed as a trailing '.*' after '==' or '!=' at offset 8"},
    {"numpy==1.*.1", "'*' is only allowed as a trailing '.*' after '==' or '!=' at offset 9"},
    {"numpy===1.*", "'*' is only allowed as a trailing '.*' after '==' or '!=' at offset 10"},
    {"numpy==1.0 | sh", "unexpected '|' at offset 11"},
    {"numpy==`id`", "expected a version at offset 7"},
    {"numpy>1<2", "unexpected '<' at offset 7"},
    {"numpy>=1.0 --user", "unexpected '-' at offset 11"},
    /* markers */
    {"numpy; python_version < '3' and $(x)", "expected a marker variable at offset 32"},
    {"numpy; python_version < 3", "expected a marker variable at offset 24"},
    {"numpy; python_version", "expected a marker operator at offset 21"},
    {"numpy; python_version = '3'", "expected a marker operator at offset 22"},
    {"numpy; python_version notin '3'", "expected a marker operator at offset 22"},
    {"numpy; python_version not  '3'", "expected a marker operator at offset 22"},
    {"numpy; python_version < '3' and", "expected a marker variable at offset 31"},
    {"numpy; python_version < '3' andos_name == 'x'", "unexpected 'a' at offset 28"},
    {"numpy; python_version < '3' xor os_name == 'x'", "unexpected 'x' at offset 28"},
    {"numpy; python_version < '3'; rm -rf /", "unexpected ';' at offset 27"},
    {"numpy; python_version < '3", "unterminated string at offset 24"},
    {"numpy; python_version < '3\"'", "unexpected '\"' in a marker string at offset 26"},
    {"numpy; python_version < '3\\'", "unexpected '\\' in a marker string at offset 26"},
    {"numpy; (python_version < '3'", "expected ')' at offset 28"},
    {"numpy; python_version < '3')", "unexpected ')' at offset 27"},
    {"numpy; os.name == 'nt'", "expected a marker variable at offset 7"},
    {"numpy; Python_Version < '3'", "expected a marker variable at offset 7"},
    {"numpy; python_version < '3' AND os_name == 'x'", "unexpected 'A' at offset 28"},
    {"numpy; ()", "expected a marker variable at offset 8"},
    /* urls */
    {"name @", "expected a url at offset 6"},
    {"name @ https://", "expected a host name at offset 15"},
    {"name @ https:///x", "expected a host name at offset 15"},
    {"name @ https://x/$(id)", "unexpected '$' in url at offset 17"},
    {"name @ https://x/a'b", "unexpected ''' in url at offset 18"},
    {"name @ https://x/a&b", "unexpected '&' in url at offset 18"},
    {"name @ https://x/a%2", "'%' must start an escape such as '%20' at offset 18"},
    {"name @ https://x/a%zz", "'%' must start an escape such as '%20' at offset 18"},
    {"name @ https://x/y.whl;python_version<'3'",
     "unexpected ';' at offset 22 (a marker after a url needs a space before ';')"},
    {"name @ https://x/y.whl extra", "unexpected 'e' at offset 23"},
    {"name>=1 @ https://x/y.whl", "unexpected '@' at offset 8"},
    {"name @ https://x;python_version<'3'",
     "unexpected ';' at offset 16 (a marker after a url needs a space before ';')"},
    {"name @ https://~x/", "expected a host name at offset 15"},
    {"name @ https://-x/", "expected a host name at offset 15"},
    {"name @ https://x-/", "expected a host name at offset 15"},
    {"name @ https://[::1]/x.whl", "expected a host name at offset 15"},
    {"name @ https://a@b@c/x.whl", "unexpected '@' in url at offset 18"},
    {"name @ https://pypi.org@/x.whl", "credentials in a url are not allowed (offset 15); "
                                       "configure the index credentials in kiln instead"},
    {"x @ https://user:token@files.example.com/x.whl",
     "credentials in a url are not allowed (offset 12); configure the index credentials in kiln "
     "instead"},
    {"name @ https://host_x/", "unexpected '_' in url at offset 19"},
    {"name @ https://x:/", "expected a port at offset 17"},
    {"name @ https://x:123456/", "expected a port at offset 17"},
    {"name @ https://x:80a/", "unexpected 'a' in url at offset 19"},
    {"name @ https://u$x/", "unexpected '$' in url at offset 16"},
    {"-e\"2", "options such as '-e' are not allowed"},
    {"-", "options such as '-' are not allowed"},
};

static char *joined(const struct kiln_strv *v)
{
    size_t len = 1;
    for (size_t i = 0; i < v->n; i++)
        len += strlen(v->v[i]) + 1;
    char *s = kiln_xmalloc(len);
    s[0] = '\0';
    size_t at = 0;
    for (size_t i = 0; i < v->n; i++) {
        size_t n = strlen(v->v[i]);
        if (i)
            s[at++] = ',';
        memcpy(s + at, v->v[i], n + 1);
        at += n;
    }
    return s;
}

static void check_good(const struct good *g)
{
    struct kiln_pip_req req = KILN_PIP_REQ_INIT;
    _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;
    int r = kiln_pip_req_parse(g->in, &req, &e);
    is_int(r, 0, "valid: %s", g->in);
    if (r < 0) {
        printf("#   error: %s\n", e ? e->msg : "(none)");
        return;
    }
    _cleanup_free_ char *extras = joined(&req.extras);
    is_str(req.name, g->name, "  name");
    is_str(extras, g->extras, "  extras");
    is_str(req.specifier, g->specifier, "  specifier");
    is_str(req.url, g->url, "  url");
    is_str(req.marker, g->marker, "  marker");
    kiln_pip_req_release(&req);
}

static void check_bad(const struct bad *b)
{
    struct kiln_pip_req req = KILN_PIP_REQ_INIT;
    _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;
    int r = kiln_pip_req_parse(b->in, &req, &e);
    is_int(r, -KILN_EINVAL, "invalid: %s", b->msg);
    is_str(e ? e->msg : NULL, b->msg, "  message");
    ok(req.name == NULL && req.extras.n == 0 && req.specifier == NULL && req.url == NULL &&
           req.marker == NULL,
       "  result untouched");
    kiln_pip_req_release(&req);
}

static void test_length(void)
{
    _cleanup_free_ char *s = kiln_xmalloc(KILN_PIP_MAX_LEN + 2);
    /* "a==1111...": exactly the limit passes, one more byte fails */
    memcpy(s, "a==", 3);
    memset(s + 3, '1', KILN_PIP_MAX_LEN - 3);
    s[KILN_PIP_MAX_LEN] = '\0';
    struct kiln_pip_req req = KILN_PIP_REQ_INIT;
    _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;
    is_int(kiln_pip_req_parse(s, &req, &e), 0, "a requirement of %d bytes passes",
           KILN_PIP_MAX_LEN);
    ok(req.specifier && strlen(req.specifier) == KILN_PIP_MAX_LEN - 1, "  its specifier is whole");
    kiln_pip_req_release(&req);

    s[KILN_PIP_MAX_LEN] = '1';
    s[KILN_PIP_MAX_LEN + 1] = '\0';
    is_int(kiln_pip_req_parse(s, &req, &e), -KILN_EINVAL, "one byte more fails");
    is_str(e ? e->msg : NULL, "requirement is longer than 4096 bytes", "  message");
}

static void test_nesting(void)
{
    char s[256];
    _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;
    int n = snprintf(s, sizeof(s), "x; ");
    for (int i = 0; i < 32; i++)
        s[n++] = '(';
    n += snprintf(s + n, sizeof(s) - (size_t)n, "extra=='a'");
    for (int i = 0; i < 32; i++)
        s[n++] = ')';
    s[n] = '\0';
    is_int(kiln_pip_req_parse(s, NULL, &e), 0, "32 nested parentheses pass");

    n = snprintf(s, sizeof(s), "x; ");
    for (int i = 0; i < 33; i++)
        s[n++] = '(';
    snprintf(s + n, sizeof(s) - (size_t)n, "extra=='a'");
    is_int(kiln_pip_req_parse(s, NULL, &e), -KILN_EINVAL, "33 nested parentheses fail");
    is_str(e ? e->msg : NULL, "marker is nested too deeply at offset 35", "  message");
}

static void test_api(void)
{
    struct kiln_pip_req req = KILN_PIP_REQ_INIT;
    is_int(kiln_pip_req_parse("numpy", NULL, NULL), 0, "ret and err may be NULL on success");
    is_int(kiln_pip_req_parse("numpy;", NULL, NULL), -KILN_EINVAL, "err may be NULL on failure");
    is_int(kiln_pip_req_parse(NULL, &req, NULL), -KILN_EINVAL, "NULL is an empty requirement");
    kiln_pip_req_release(NULL);
    kiln_pip_req_release(&req);
    ok(req.name == NULL, "release of an empty request is fine");

    is_int(kiln_pip_req_parse("pandas[a,b,c]", &req, NULL), 0, "extras vector");
    ok(req.extras.n == 3 && req.extras.v[3] == NULL, "  three extras, NULL-terminated");
    kiln_pip_req_release(&req);
    ok(req.name == NULL && req.extras.v == NULL && req.extras.n == 0,
       "  release resets the struct");
    kiln_pip_req_release(&req);
}

int main(void)
{
    size_t ngood = KILN_ARRAY_SIZE(goods);
    for (size_t i = 0; i < ngood; i++)
        check_good(&goods[i]);
    for (size_t i = 0; i < KILN_ARRAY_SIZE(bads); i++)
        check_bad(&bads[i]);
    printf("# %zu valid and %zu invalid vectors\n", ngood, KILN_ARRAY_SIZE(bads));
    test_length();
    test_nesting();
    test_api();
    return tap_done();
}
