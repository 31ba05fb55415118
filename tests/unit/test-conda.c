#include "util/common.h"
#include "spec/conda.h"
#include "tap.h"

/*
 * Declarative vectors: a valid spec lists every field it should parse to
 * (NULL where the field is absent; keys joined by ';'), an invalid one the
 * text its error message must contain.
 */
struct good {
    const char *in;
    const char *channel, *subdir, *ns, *name, *version, *build, *keys;
};

struct bad {
    const char *in;
    const char *msg;
};

static const struct good goods[] = {
    {"numpy", NULL, NULL, NULL, "numpy", NULL, NULL, ""},
    {"python=3.8", NULL, NULL, NULL, "python", "=3.8", NULL, ""},
    {"python==3.8.1", NULL, NULL, NULL, "python", "==3.8.1", NULL, ""},
    {"numpy>=1.11,<2", NULL, NULL, NULL, "numpy", ">=1.11,<2", NULL, ""},
    {"numpy>=1.11|<0.9", NULL, NULL, NULL, "numpy", ">=1.11|<0.9", NULL, ""},
    {"numpy 1.17.* py38_0", NULL, NULL, NULL, "numpy", "1.17.*", "py38_0", ""},
    {"numpy=1.17=py38_0", NULL, NULL, NULL, "numpy", "=1.17", "py38_0", ""},
    {"conda-forge::numpy==1.17*", "conda-forge", NULL, NULL, "numpy", "==1.17*", NULL, ""},
    {"conda-forge/linux-64::numpy", "conda-forge", "linux-64", NULL, "numpy", NULL, NULL, ""},
    {"conda-forge:ns:numpy", "conda-forge", NULL, "ns", "numpy", NULL, NULL, ""},
    {"ns:numpy", NULL, NULL, "ns", "numpy", NULL, NULL, ""},
    {"numpy[version='>=1.11',build=py38*]", NULL, NULL, NULL, "numpy", NULL, NULL,
     "version=>=1.11;build=py38*"},
    {"numpy[build_number=3]", NULL, NULL, NULL, "numpy", NULL, NULL, "build_number=3"},
    {"pytorch::pytorch[channel=pytorch]", "pytorch", NULL, NULL, "pytorch", NULL, NULL,
     "channel=pytorch"},
    {"numpy!=1.17", NULL, NULL, NULL, "numpy", "!=1.17", NULL, ""},
    {"numpy~=1.17", NULL, NULL, NULL, "numpy", "~=1.17", NULL, ""},
    {"r-base>=4.0", NULL, NULL, NULL, "r-base", ">=4.0", NULL, ""},
    {"_libgcc_mutex", NULL, NULL, NULL, "_libgcc_mutex", NULL, NULL, ""},
    {"numpy=1.17.*", NULL, NULL, NULL, "numpy", "=1.17.*", NULL, ""},
    {"python>=3.8,<3.12", NULL, NULL, NULL, "python", ">=3.8,<3.12", NULL, ""},
    {"https://conda.anaconda.org/conda-forge::numpy", "https://conda.anaconda.org/conda-forge",
     NULL, NULL, "numpy", NULL, NULL, ""},
    {"https://conda.anaconda.org/conda-forge/noarch::tqdm>=4",
     "https://conda.anaconda.org/conda-forge", "noarch", NULL, "tqdm", ">=4", NULL, ""},
    {"https://repo.example.com:8443/ch::numpy", "https://repo.example.com:8443/ch", NULL, NULL,
     "numpy", NULL, NULL, ""},
    {"conda-forge/label/dev::numpy", "conda-forge/label/dev", NULL, NULL, "numpy", NULL, NULL, ""},
    {"numpy >=1.11", NULL, NULL, NULL, "numpy", ">=1.11", NULL, ""},
    {"numpy>=1.11 py38_0", NULL, NULL, NULL, "numpy", ">=1.11", "py38_0", ""},
    {"numpy>=1.0,<2=py38*", NULL, NULL, NULL, "numpy", ">=1.0,<2", "py38*", ""},
    {"numpy=1.17.*=*mkl*", NULL, NULL, NULL, "numpy", "=1.17.*", "*mkl*", ""},
    {"numpy *", NULL, NULL, NULL, "numpy", "*", NULL, ""},
    {"pkg=1!2.0", NULL, NULL, NULL, "pkg", "=1!2.0", NULL, ""},
    {"openssl 1.1.1k", NULL, NULL, NULL, "openssl", "1.1.1k", NULL, ""},
    {"numpy[version=\"1.17.*\"]", NULL, NULL, NULL, "numpy", NULL, NULL, "version=1.17.*"},
    {"numpy[version='>=1.11,<2|>3', build_number='>=3']", NULL, NULL, NULL, "numpy", NULL, NULL,
     "version=>=1.11,<2|>3;build_number=>=3"},
    {"numpy[subdir=linux-64,license=BSD-3-Clause]", NULL, NULL, NULL, "numpy", NULL, NULL,
     "subdir=linux-64;license=BSD-3-Clause"},
    {"numpy[md5=0123456789abcdef0123456789abcdef]", NULL, NULL, NULL, "numpy", NULL, NULL,
     "md5=0123456789abcdef0123456789abcdef"},
    {"numpy[sha256=0123456789abcdef0123456789abcdef0123456789ABCDEF0123456789abcdef]", NULL, NULL,
     NULL, "numpy", NULL, NULL,
     "sha256=0123456789abcdef0123456789abcdef0123456789ABCDEF0123456789abcdef"},
    {"numpy[url='https://conda.anaconda.org/conda-forge/linux-64/numpy-1.17-py38_0.conda']", NULL,
     NULL, NULL, "numpy", NULL, NULL,
     "url=https://conda.anaconda.org/conda-forge/linux-64/numpy-1.17-py38_0.conda"},
    {"numpy[fn=numpy-1.17-py38_0.tar.bz2]", NULL, NULL, NULL, "numpy", NULL, NULL,
     "fn=numpy-1.17-py38_0.tar.bz2"},
    {"numpy>=1.17[build=py38*]", NULL, NULL, NULL, "numpy", ">=1.17", NULL, "build=py38*"},
    {"numpy=1.17[version='=1.17']", NULL, NULL, NULL, "numpy", "=1.17", NULL, "version==1.17"},
    {"conda-forge/linux-64::numpy[channel=conda-forge/linux-64]", "conda-forge", "linux-64", NULL,
     "numpy", NULL, NULL, "channel=conda-forge/linux-64"},
    {"numpy[channel='https://conda.anaconda.org/conda-forge']", NULL, NULL, NULL, "numpy", NULL,
     NULL, "channel=https://conda.anaconda.org/conda-forge"},
    {"libstdcxx-ng>=12", NULL, NULL, NULL, "libstdcxx-ng", ">=12", NULL, ""},
    {"ca-certificates", NULL, NULL, NULL, "ca-certificates", NULL, NULL, ""},
    {"python_abi=3.11=*_cp311", NULL, NULL, NULL, "python_abi", "=3.11", "*_cp311", ""},
    {"zope.interface<6", NULL, NULL, NULL, "zope.interface", "<6", NULL, ""},
    {"numpy>1.0", NULL, NULL, NULL, "numpy", ">1.0", NULL, ""},
    {"numpy<=1.0", NULL, NULL, NULL, "numpy", "<=1.0", NULL, ""},
    {"x", NULL, NULL, NULL, "x", NULL, NULL, ""},
    {"numpy 1.17", NULL, NULL, NULL, "numpy", "1.17", NULL, ""},
    {"numpy<1|>2 x", NULL, NULL, NULL, "numpy", "<1|>2", "x", ""},
};

static const struct bad bads[] = {
    {"", "empty conda spec"},
    {"-numpy", "leading '-'"},
    {"--override-channels", "leading '-'"},
    {"numpy;rm", "unexpected ';' at offset 5"},
    {"numpy$x", "unexpected '$' at offset 5"},
    {"numpy>=1.0;rm -rf /", "unexpected ';' at offset 10"},
    {"numpy&&x", "unexpected '&' at offset 5"},
    {"numpy`id`", "unexpected '`' at offset 5"},
    {"numpy$(id)", "unexpected '$' at offset 5"},
    {"numpy(1.0)", "unexpected '(' at offset 5"},
    {"numpy>=(1.0|2.0)", "unexpected '(' at offset 7"},
    {"numpy|x", "unexpected '|' at offset 5"},
    {"numpy>", "missing version at offset 6"},
    {"numpy==", "missing version at offset 7"},
    {"numpy=", "missing version at offset 6"},
    {"numpy>=1.0,", "missing version at offset 11"},
    {"numpy>=1.0|", "missing version at offset 11"},
    {"numpy>>1", "unexpected '>' at offset 6"},
    {"numpy===1", "unexpected '=' at offset 7"},
    {"numpy!1", "unexpected '!' at offset 5"},
    {"numpy~1", "unexpected '~' at offset 5"},
    {"numpy>= 1.0", "unexpected ' ' at offset 7"},
    {"numpy  1.0", "unexpected ' ' at offset 6"},
    {"numpy ", "missing version at offset 6"},
    {"numpy 1.0 ", "missing build string at offset 10"},
    {"numpy 1.0 py38 x", "unexpected ' ' at offset 14"},
    {"numpy=1.0=", "missing build string at offset 10"},
    {"numpy=1.0=-x", "unexpected '-' at offset 10"},
    {"numpy\tx", "unexpected control byte 0x09 at offset 5"},
    {"numpy\n", "unexpected control byte 0x0a at offset 5"},
    {"num\xc3\xa9py", "unexpected non-ASCII byte 0xc3 at offset 3"},
    {"numpy'", "unexpected ''' at offset 5"},
    {"'numpy'", "unexpected ''' at offset 0"},
    {"\"numpy\"", "unexpected '\"' at offset 0"},
    {">=1.0", "empty package name at offset 0"},
    {"conda-forge::", "empty package name at offset 13"},
    {"conda-forge::>=1", "empty package name at offset 13"},
    {"::numpy", "empty channel at offset 0"},
    {":numpy", "empty namespace at offset 0"},
    {"conda-forge:::numpy", "unexpected ':' at offset 11"},
    {"conda forge::numpy", "unexpected ' ' at offset 5"},
    {"conda-forge/::numpy", "missing channel name at offset 12"},
    {"conda-forge/../x::numpy", "unexpected '.' at offset 12"},
    {"/opt/channel::numpy", "unexpected '/' at offset 0"},
    {"http://example.com/ch::numpy", "url scheme 'http' at offset 0 is not allowed"},
    {"file:///tmp/ch::numpy", "url scheme 'file' at offset 0 is not allowed"},
    {"https://example.com/ch:numpy", "a channel url needs '::'"},
    {"https://user@example.com/ch::numpy", "unexpected '@' at offset 12"},
    {"https://example.com/a//b::numpy", "unexpected '/' at offset 22"},
    {"https://example.com/a/../b::numpy", "'..' in url at offset 22"},
    {"https://example.com/a?x=1::numpy", "unexpected '?' at offset 21"},
    {"numpy*", "unexpected '*' at offset 5"},
    {"*", "unexpected '*' at offset 0"},
    {".numpy", "unexpected '.' at offset 0"},
    {"nu/mpy", "unexpected '/' at offset 2"},
    {"numpy[foo]", "expected '=' after 'foo' at offset 9"},
    {"numpy[]", "empty brackets at offset 5"},
    {"numpy[", "unknown bracket syntax at offset 6"},
    {"numpy[=x]", "unknown bracket syntax at offset 6"},
    {"numpy[Version=1]", "unknown bracket syntax at offset 6"},
    {"numpy[build=x", "unterminated '[' at offset 5"},
    {"numpy[build=x,]", "unknown bracket syntax at offset 14"},
    {"numpy[build=x,  license=y]", "unknown bracket syntax at offset 15"},
    {"numpy[build=x] ", "unexpected ' ' at offset 14"},
    {"numpy[build=x]]", "unexpected ']' at offset 14"},
    {"numpy[build=x][license=y]", "unexpected '[' at offset 14"},
    {"numpy[build=]", "empty value for 'build' at offset 12"},
    {"numpy[build='']", "empty value for 'build' at offset 13"},
    {"numpy[build='x\"']", "unexpected '\"' at offset 14"},
    {"numpy[build='x]", "unterminated quote at offset 12"},
    {"numpy[build=py 38]", "unexpected ' ' at offset 14"},
    {"numpy[build=a,build=b]", "duplicate key 'build' at offset 14"},
    {"numpy[version=>=1.11,<2]", "unknown bracket syntax at offset 21"},
    {"numpy[version='1.0;x']", "unexpected ';' at offset 18"},
    {"numpy[license=$(id)]", "unexpected '$' at offset 14"},
    {"numpy[license='a b']", "unexpected ' ' at offset 16"},
    {"numpy[md5=abc]", "'md5' at offset 10 must be 32 hex digits"},
    {"numpy[sha256=xyz]", "unexpected 'x' at offset 13"},
    {"numpy[url=http://example.com/x.conda]", "url scheme 'http'"},
    {"numpy[url=/tmp/x.conda]", "expected an https url at offset 10"},
    {"numpy[build_number=x]", "unexpected 'x' at offset 19"},
    {"numpy[subdir=Linux-64]", "unexpected 'L' at offset 13"},
    {"numpy[fn=../x.conda]", "unexpected '.' at offset 9"},
    {"numpy=1.0[version=2.0]", "'version' at offset 10 disagrees"},
    {"conda-forge::numpy[channel=defaults]", "'channel' at offset 19 disagrees"},
    {"numpy#comment", "unexpected '#' at offset 5"},
};

/* The input as printable text for a TAP line: control and non-ASCII bytes as \xNN. */
static const char *show(const char *s)
{
    static char out[4 * KILN_CONDA_MAX_LEN + 8];
    size_t n = 0;
    for (; *s && n + 5 < sizeof(out); s++) {
        unsigned char u = (unsigned char)*s;
        if (u < 0x20 || u >= 0x7f)
            n += (size_t)snprintf(out + n, sizeof(out) - n, "\\x%02x", u);
        else
            out[n++] = (char)u;
    }
    out[n] = '\0';
    return out;
}

static char *join_keys(const struct kiln_strv *keys)
{
    size_t n = 1;
    for (size_t k = 0; k < keys->n; k++)
        n += strlen(keys->v[k]) + 1;
    char *out = kiln_xmalloc(n);
    out[0] = '\0';
    size_t len = 0;
    for (size_t k = 0; k < keys->n; k++) {
        size_t l = strlen(keys->v[k]);
        if (k)
            out[len++] = ';';
        memcpy(out + len, keys->v[k], l + 1);
        len += l;
    }
    return out;
}

static void test_good(const struct good *g)
{
    struct kiln_conda_spec c = KILN_CONDA_SPEC_INIT;
    struct kiln_error *e = NULL;
    const char *in = show(g->in);
    int r = kiln_conda_spec_parse(g->in, &c, &e);
    if (!ok(r == 0, "valid '%s'", in)) {
        printf("#   error: %s\n", e ? e->msg : "(none)");
        kiln_error_free(e);
        return;
    }
    is_str(c.channel, g->channel, "'%s' channel", in);
    is_str(c.subdir, g->subdir, "'%s' subdir", in);
    is_str(c.ns, g->ns, "'%s' namespace", in);
    is_str(c.name, g->name, "'%s' name", in);
    is_str(c.version, g->version, "'%s' version", in);
    is_str(c.build, g->build, "'%s' build", in);
    _cleanup_free_ char *keys = join_keys(&c.keys);
    is_str(keys, g->keys, "'%s' keys", in);
    kiln_conda_spec_release(&c);

    /* Checking only (ret == NULL) agrees. */
    is_int(kiln_conda_spec_parse(g->in, NULL, NULL), 0, "'%s' check only", in);
}

static void test_bad(const struct bad *b)
{
    struct kiln_conda_spec c = KILN_CONDA_SPEC_INIT;
    struct kiln_error *e = NULL;
    const char *in = show(b->in);
    int r = kiln_conda_spec_parse(b->in, &c, &e);
    ok(r == -KILN_EINVAL && e && e->code == KILN_EINVAL, "invalid '%s'", in);
    const char *msg = e ? e->msg : "(no error)";
    if (!ok(strstr(msg, b->msg) != NULL, "message for '%s'", in))
        printf("#   got  '%s'\n#   want '%s'\n", msg, b->msg);
    ok(c.name == NULL && c.keys.n == 0, "'%s' leaves the output alone", in);
    is_int(kiln_conda_spec_parse(b->in, NULL, NULL), -KILN_EINVAL, "'%s' with err NULL", in);
    kiln_error_free(e);
}

static void test_limits(void)
{
    char buf[KILN_CONDA_MAX_LEN + 2];
    struct kiln_error *e = NULL;

    memset(buf, 'a', KILN_CONDA_MAX_LEN);
    buf[KILN_CONDA_MAX_LEN] = '\0';
    is_int(kiln_conda_spec_parse(buf, NULL, NULL), 0, "a name of exactly the maximum length");
    buf[KILN_CONDA_MAX_LEN] = 'a';
    buf[KILN_CONDA_MAX_LEN + 1] = '\0';
    is_int(kiln_conda_spec_parse(buf, NULL, &e), -KILN_EINVAL, "one byte over the maximum");
    ok(e && strstr(e->msg, "longer than 1024 bytes"), "over-long message");
    kiln_error_free(e);
    e = NULL;

    is_int(kiln_conda_spec_parse(NULL, NULL, &e), -KILN_EINVAL, "NULL input");
    kiln_error_free(e);

    /* Release twice and release NULL are fine. */
    struct kiln_conda_spec c = KILN_CONDA_SPEC_INIT;
    is_int(kiln_conda_spec_parse(
               "conda-forge:ns:numpy=1.0=py_0[md5=0123456789abcdef0123456789abcdef]", &c, NULL),
           0, "every field at once");
    kiln_conda_spec_release(&c);
    kiln_conda_spec_release(&c);
    kiln_conda_spec_release(NULL);
    ok(c.name == NULL && c.keys.v == NULL, "release resets the struct");
}

int main(void)
{
    for (size_t k = 0; k < KILN_ARRAY_SIZE(goods); k++)
        test_good(&goods[k]);
    for (size_t k = 0; k < KILN_ARRAY_SIZE(bads); k++)
        test_bad(&bads[k]);
    test_limits();
    printf("# %zu valid and %zu invalid vectors\n", KILN_ARRAY_SIZE(goods), KILN_ARRAY_SIZE(bads));
    return tap_done();
}
