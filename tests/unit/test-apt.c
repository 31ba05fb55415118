#include "util/common.h"
#include "spec/apt.h"
#include "tap.h"

/* A valid argument has msg NULL; an invalid one the text its error must contain. */
struct vector {
    const char *in;
    const char *msg;
};

static const struct vector vectors[] = {
    /* valid */
    {"curl", NULL},
    {"jq", NULL},
    {"libssl-dev", NULL},
    {"g++", NULL},
    {"libstdc++6", NULL},
    {"libstdc++-12-dev", NULL},
    {"python3.11", NULL},
    {"libc6:i386", NULL},
    {"libc6:amd64=2.36-9+deb12u4", NULL},
    {"curl=7.88.1-10+deb12u5", NULL},
    {"vim/bookworm-backports", NULL},
    {"nginx=1:1.22.1-9", NULL},
    {"gcc:native", NULL},
    {"tzdata:all", NULL},
    {"foo=1.0~rc1", NULL},
    {"foo=1.0+dfsg-1~bpo12+1", NULL},
    {"foo=2.0", NULL},
    {"foo=10:2.0-a-b", NULL},
    {"0ad", NULL},
    {"curl/stable", NULL},
    {"curl/12.5", NULL},
    {"linux-image-6.1.0-18-amd64", NULL},
    /* invalid */
    {"", "empty package name"},
    {"Curl", "unexpected 'C' at offset 0 (package names are lower case)"},
    {"libSSL", "unexpected 'S' at offset 3 (package names are lower case)"},
    {"c", "package name 'c' is too short"},
    {"c:amd64", "package name 'c' is too short"},
    {"c;x", "unexpected ';' at offset 1"},
    {"curl;rm", "unexpected ';' at offset 4"},
    {"-curl", "leading '-' at offset 0"},
    {"--allow-unauthenticated", "leading '-' at offset 0"},
    {"curl-", "trailing '-' at offset 4 (apt-get would remove the package)"},
    {"curl:amd64-", "trailing '-' at offset 10"},
    {"curl=", "empty version at offset 5"},
    {"curl=abc", "version must start with a digit at offset 5"},
    {"curl=:1.0", "empty epoch at offset 5"},
    {"curl=1:", "empty upstream version at offset 7"},
    {"curl=a:1.0", "unexpected 'a' in epoch at offset 5"},
    {"curl=1:2:3", "unexpected ':' at offset 8"},
    {"curl=1.0_1", "unexpected '_' at offset 8"},
    {"curl/", "empty release at offset 5"},
    {"curl/-x", "unexpected '-' at offset 5"},
    {"curl/bookworm/x", "unexpected '/' at offset 13"},
    {"curl:", "empty architecture at offset 5"},
    {"curl:=1.0", "empty architecture at offset 5"},
    {"curl:AMD64", "unexpected 'A' at offset 5"},
    {"curl:amd64:i386", "unexpected ':' at offset 10"},
    {"curl=1.0 jq", "unexpected ' ' at offset 8"},
    {"curl jq", "unexpected ' ' at offset 4"},
    {"curl=1.0/bookworm", "unexpected '/' at offset 8"},
    {"curl/bookworm=1.0", "unexpected '=' at offset 13"},
    {"$(x)", "unexpected '$' at offset 0"},
    {"curl$(x)", "unexpected '$' at offset 4"},
    {"curl`id`", "unexpected '`' at offset 4"},
    {"curl\n", "unexpected control byte 0x0a at offset 4"},
    {"curl\t", "unexpected control byte 0x09 at offset 4"},
    {"cu\xc3\xa9rl", "unexpected non-ASCII byte 0xc3 at offset 2"},
    {"*", "unexpected '*' at offset 0"},
    {"curl*", "unexpected '*' at offset 4"},
    {"lib?ssl", "unexpected '?' at offset 3"},
    {"^curl$", "unexpected '^' at offset 0"},
    {"~nfoo", "unexpected '~' at offset 0"},
    {"?installed", "unexpected '?' at offset 0"},
    {"../x.deb", "local package files are not allowed"},
    {"./x.deb", "local package files are not allowed"},
    {"/tmp/x.deb", "local package files are not allowed"},
    {"curl&", "unexpected '&' at offset 4"},
    {"curl|sh", "unexpected '|' at offset 4"},
    {"curl>x", "unexpected '>' at offset 4"},
    {"'curl'", "unexpected ''' at offset 0"},
    {"+curl", "unexpected '+' at offset 0"},
    {"curl[amd64]", "unexpected '[' at offset 4"},
};

static const char *show(const char *s)
{
    static char out[4 * KILN_APT_MAX_LEN + 8];
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

static void test_vector(const struct vector *v)
{
    struct kiln_error *e = NULL;
    const char *in = show(v->in);
    int r = kiln_apt_package_check(v->in, &e);

    if (!v->msg) {
        if (!ok(r == 0 && !e, "valid '%s'", in))
            printf("#   error: %s\n", e ? e->msg : "(none)");
    } else {
        ok(r == -KILN_EINVAL && e && e->code == KILN_EINVAL, "invalid '%s'", in);
        const char *msg = e ? e->msg : "(no error)";
        if (!ok(strstr(msg, v->msg) != NULL, "message for '%s'", in))
            printf("#   got  '%s'\n#   want '%s'\n", msg, v->msg);
    }
    is_int(kiln_apt_package_check(v->in, NULL), v->msg ? -KILN_EINVAL : 0, "'%s' with err NULL",
           in);
    kiln_error_free(e);
}

static void test_limits(void)
{
    char buf[KILN_APT_MAX_LEN + 2];
    struct kiln_error *e = NULL;

    memset(buf, 'a', KILN_APT_MAX_LEN);
    buf[KILN_APT_MAX_LEN] = '\0';
    is_int(kiln_apt_package_check(buf, NULL), 0, "a name of exactly the maximum length");
    buf[KILN_APT_MAX_LEN] = 'a';
    buf[KILN_APT_MAX_LEN + 1] = '\0';
    is_int(kiln_apt_package_check(buf, &e), -KILN_EINVAL, "one byte over the maximum");
    ok(e && strstr(e->msg, "longer than 512 bytes"), "over-long message");
    kiln_error_free(e);
    e = NULL;
    is_int(kiln_apt_package_check(NULL, &e), -KILN_EINVAL, "NULL input");
    kiln_error_free(e);
}

int main(void)
{
    size_t valid = 0;
    for (size_t k = 0; k < KILN_ARRAY_SIZE(vectors); k++) {
        test_vector(&vectors[k]);
        valid += vectors[k].msg == NULL;
    }
    test_limits();
    printf("# %zu valid and %zu invalid vectors\n", valid, KILN_ARRAY_SIZE(vectors) - valid);
    return tap_done();
}
