/*
 * Golden files: tests/unit/data/df-<name>.yaml renders to
 * df-<name>[.<user>].Dockerfile (':' in the user written as '-'). Set KILN_UPDATE_GOLDEN=1 to
 * rewrite them (then read the diff before committing).
 */
#include "util/common.h"
#include "spec/dockerfile.h"
#include "tap.h"

static char *slurp(const char *path, size_t *ret_len)
{
    FILE *f = fopen(path, "rbe");
    if (!f)
        return NULL;
    struct kiln_buf b = KILN_BUF_INIT;
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
        kiln_buf_add(&b, chunk, n);
    fclose(f);
    return kiln_buf_detach(&b, ret_len);
}

static void golden(const char *name, const char *user)
{
    char *spec_path = kiln_xasprintf("%s/df-%s.yaml", KILN_TEST_DATA, name);
    char *suffix = kiln_xstrdup(user ? (*user ? user : "root") : "");
    for (char *p = suffix; *p; p++)
        if (*p == ':')
            *p = '-';
    char *want_path =
        kiln_xasprintf("%s/df-%s%s%s.Dockerfile", KILN_TEST_DATA, name, user ? "." : "", suffix);
    free(suffix);
    size_t len = 0;
    char *text = slurp(spec_path, &len);
    struct kiln_spec *s = NULL;
    struct kiln_error *err = NULL;
    struct kiln_buf out = KILN_BUF_INIT;
    if (!ok(text && kiln_spec_parse(text, len, &s, NULL, &err) == 0, "parse %s", spec_path)) {
        printf("#   %s\n", err ? err->msg : "cannot read");
        goto out;
    }
    ok(kiln_dockerfile_render(s, user, &out, &err) == 0, "render %s", name);
    if (getenv("KILN_UPDATE_GOLDEN")) {
        FILE *f = fopen(want_path, "we");
        if (f) {
            fwrite(out.buf, 1, out.len, f);
            fclose(f);
        }
    }
    char *want = slurp(want_path, NULL);
    is_str(out.buf, want, "golden %s", want_path);
    free(want);
out:
    kiln_error_free(err);
    kiln_spec_free(s);
    kiln_buf_release(&out);
    free(text);
    free(spec_path);
    free(want_path);
}

int main(void)
{
    golden("full", "jovyan");
    golden("full", NULL);
    golden("apt", "1000");
    golden("apt", "");
    golden("pip", "1000:100");
    golden("none", "jovyan");

    struct kiln_spec *s = kiln_spec_new();
    struct kiln_buf out = KILN_BUF_INIT;
    struct kiln_error *err = NULL;
    ok(kiln_dockerfile_render(s, "x; rm -rf /", &out, &err) == -KILN_EINVAL,
       "a base user with shell characters is refused");
    kiln_error_free(err);
    err = NULL;
    ok(kiln_dockerfile_render(s, "-x", &out, &err) == -KILN_EINVAL, "leading '-' refused");
    kiln_error_free(err);
    kiln_buf_release(&out);
    kiln_spec_free(s);
    return tap_done();
}
