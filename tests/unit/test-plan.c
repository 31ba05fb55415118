#include "util/common.h"

#include <stdlib.h>
#include <unistd.h>

#include "build/plan.h"
#include "build/stepcache.h"
#include "tap.h"

#define BASE  "sha256:1111111111111111111111111111111111111111111111111111111111111111"
#define BASE2 "sha256:2222222222222222222222222222222222222222222222222222222222222222"

static struct kiln_spec *mk(const char *apt, const char *conda, const char *pip)
{
    struct kiln_spec *s = kiln_spec_new();
    const char *lists[KILN_PKG_KINDS] = {
        [KILN_PKG_APT] = apt, [KILN_PKG_CONDA] = conda, [KILN_PKG_PIP] = pip};
    for (int k = 0; k < KILN_PKG_KINDS; k++) {
        const char *p = lists[k];
        while (p && *p) {
            const char *e = strchr(p, '|');
            size_t n = e ? (size_t)(e - p) : strlen(p);
            kiln_strv_push_take(&s->pkgs[k], kiln_xstrndup(p, n));
            p += n + (e ? 1 : 0);
        }
    }
    return s;
}

static void plan(const char *base, const char *apt, const char *conda, const char *pip,
                 const struct kiln_plan_options *o, struct kiln_plan *p)
{
    struct kiln_spec *s = mk(apt, conda, pip);
    struct kiln_error *err = NULL;
    int r = kiln_plan_make(s, base, o, p, &err);
    ok(r == 0, "plan made%s%s", err ? ": " : "", err ? err->msg : "");
    kiln_error_free(err);
    kiln_spec_free(s);
}

static void test_shape(void)
{
    struct kiln_plan p = KILN_PLAN_INIT;
    plan(BASE, "curl|jq", "numpy>=1.11,<2", "requests[socks]>=2; python_version>'3'", NULL, &p);
    is_int(p.n_steps, 3, "three steps");
    is_str(kiln_step_name(&p.steps[0]), "apt", "apt first");
    is_str(kiln_step_name(&p.steps[1]), "conda", "conda second");
    is_str(kiln_step_name(&p.steps[2]), "pip", "pip last");
    /* packages are argv entries after the fixed script, never inside it */
    const struct kiln_step *a = &p.steps[0];
    is_int(a->argv.n, 6, "apt argv: sh -c SCRIPT NAME curl jq");
    is_str(a->argv.v[0], "/bin/sh", "argv[0]");
    ok(strstr(a->argv.v[2], "\"$@\"") != NULL, "the script takes the packages as \"$@\"");
    ok(strstr(a->argv.v[2], "curl") == NULL, "no package inside the script");
    is_str(a->argv.v[4], "curl", "first package");
    is_str(a->argv.v[5], "jq", "second package");
    const struct kiln_step *pip = &p.steps[2];
    is_str(pip->argv.v[4], "requests[socks]>=2; python_version>'3'", "pip requirement verbatim");
    ok(strstr(pip->created_by, "'requests[socks]>=2; python_version>'\\''3'\\'''") != NULL,
       "history text is shell-quoted: %s", pip->created_by);
    ok(strstr(a->created_by, "rm -rf /var/lib/apt/lists/*") != NULL, "apt lists removed");
    bool have_nocache = false;
    for (size_t i = 0; i < pip->env.n; i++)
        have_nocache |= !strcmp(pip->env.v[i], "PIP_NO_CACHE_DIR=1");
    ok(have_nocache, "pip runs without a cache");
    is_int(strlen(a->key), KILN_STEP_KEY_LEN, "keys are 64 hex");
    kiln_plan_release(&p);

    plan(BASE, NULL, NULL, "six", NULL, &p);
    is_int(p.n_steps, 1, "pip only: one step");
    kiln_plan_release(&p);
    plan(BASE, NULL, NULL, NULL, NULL, &p);
    is_int(p.n_steps, 0, "no packages: no step");
    kiln_plan_release(&p);
}

static void test_keys(void)
{
    struct kiln_plan a = KILN_PLAN_INIT, b = KILN_PLAN_INIT;
    plan(BASE, "curl", NULL, "six", NULL, &a);
    plan(BASE, "curl", NULL, "six", NULL, &b);
    is_str(a.steps[0].key, b.steps[0].key, "same spec, same apt key");
    is_str(a.steps[1].key, b.steps[1].key, "same spec, same pip key");
    kiln_plan_release(&b);

    plan(BASE, "curl", NULL, "six==1.16", NULL, &b);
    is_str(a.steps[0].key, b.steps[0].key, "pip change keeps the apt key");
    ok(strcmp(a.steps[1].key, b.steps[1].key) != 0, "pip change changes the pip key");
    kiln_plan_release(&b);

    plan(BASE, "curl|jq", NULL, "six", NULL, &b);
    ok(strcmp(a.steps[0].key, b.steps[0].key) != 0, "apt change changes the apt key");
    ok(strcmp(a.steps[1].key, b.steps[1].key) != 0, "... and every later key");
    kiln_plan_release(&b);

    plan(BASE2, "curl", NULL, "six", NULL, &b);
    ok(strcmp(a.steps[0].key, b.steps[0].key) != 0, "another base changes the keys");
    kiln_plan_release(&b);

    const char *hosts[] = {"127.0.0.1:8080", NULL};
    struct kiln_plan_options o = {.pip_index_url = "http://127.0.0.1:8080/simple",
                                  .pip_trusted_hosts = hosts};
    plan(BASE, "curl", NULL, "six", &o, &b);
    is_str(a.steps[0].key, b.steps[0].key, "the pip index does not touch the apt key");
    ok(strcmp(a.steps[1].key, b.steps[1].key) != 0, "the pip index enters the pip key");
    bool idx = false, th = false;
    for (size_t i = 0; i < b.steps[1].env.n; i++) {
        idx |= !strcmp(b.steps[1].env.v[i], "PIP_INDEX_URL=http://127.0.0.1:8080/simple");
        th |= !strcmp(b.steps[1].env.v[i], "PIP_TRUSTED_HOST=127.0.0.1:8080");
    }
    ok(idx && th, "index and trusted host in the pip step's env");
    kiln_plan_release(&b);
    kiln_plan_release(&a);

    struct kiln_spec *s = mk(NULL, NULL, "six");
    struct kiln_error *err = NULL;
    struct kiln_plan_options bad = {.pip_index_url = "http://x/\nsimple"};
    ok(kiln_plan_make(s, BASE, &bad, &a, &err) == -KILN_EINVAL, "a newline in the index: EINVAL");
    kiln_error_free(err);
    err = NULL;
    ok(kiln_plan_make(s, "", NULL, &a, &err) == -KILN_EINVAL, "no base digest: EINVAL");
    kiln_error_free(err);
    kiln_spec_free(s);
}

static void test_stepcache(void)
{
    char dir[] = "/tmp/kiln-test-stepcache-XXXXXX";
    ok(mkdtemp(dir) != NULL, "temp dir");
    const char *key = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    struct kiln_step_record rec, got;
    memset(&rec, 0, sizeof(rec));
    snprintf(rec.digest, sizeof(rec.digest), "%s", BASE);
    snprintf(rec.diff_id, sizeof(rec.diff_id), "%s", BASE2);
    rec.size = 12345;
    snprintf(rec.media_type, sizeof(rec.media_type), "application/vnd.oci.image.layer.v1.tar+gzip");
    snprintf(rec.created, sizeof(rec.created), "2026-11-25T10:00:00Z");
    struct kiln_error *err = NULL;
    is_int(kiln_stepcache_get(dir, key, &got, &err), 0, "absent: miss");
    is_int(kiln_stepcache_put(dir, key, &rec, &err), 0, "put");
    is_int(kiln_stepcache_get(dir, key, &got, &err), 1, "hit");
    is_str(got.digest, rec.digest, "digest back");
    is_str(got.diff_id, rec.diff_id, "diff_id back");
    ok(got.size == 12345, "size back");
    is_str(got.created, rec.created, "created back");
    ok(kiln_stepcache_get(dir, "../etc/passwd", &got, &err) == -KILN_EINVAL, "bad key refused");
    kiln_error_free(err);
    err = NULL;
    /* a damaged record is a miss, never an error */
    char path[256];
    snprintf(path, sizeof(path), "%s/%s.json", dir, key);
    FILE *f = fopen(path, "w");
    fputs("{\"digest\": \"sha256:12", f);
    fclose(f);
    is_int(kiln_stepcache_get(dir, key, &got, &err), 0, "truncated record: miss");
    f = fopen(path, "w");
    fputs(
        "{\"digest\":\"md5:x\",\"diff_id\":\"x\",\"size\":-1,\"media_type\":\"\",\"created\":\"\"}",
        f);
    fclose(f);
    is_int(kiln_stepcache_get(dir, key, &got, &err), 0, "invalid record: miss");
    unlink(path);
    rmdir(dir);
}

int main(void)
{
    test_shape();
    test_keys();
    test_stepcache();
    return tap_done();
}
