#include "util/common.h"
#include "spec/revision.h"
#include "tap.h"

static struct kiln_spec *mk(const char *base, const char *apt, const char *pip, const char *conda)
{
    struct kiln_spec *s = kiln_spec_new();
    free(s->name);
    s->name = kiln_xstrdup("demo");
    free(s->base_image);
    s->base_image = kiln_xstrdup(base);
    const char *lists[KILN_PKG_KINDS] = {
        [KILN_PKG_APT] = apt, [KILN_PKG_PIP] = pip, [KILN_PKG_CONDA] = conda};
    for (int k = 0; k < KILN_PKG_KINDS; k++) {
        if (!lists[k])
            continue;
        /* '|'-separated in the test vectors */
        const char *p = lists[k];
        while (*p) {
            const char *e = strchr(p, '|');
            size_t n = e ? (size_t)(e - p) : strlen(p);
            kiln_strv_push_take(&s->pkgs[k], kiln_xstrndup(p, n));
            p += n + (e ? 1 : 0);
        }
    }
    return s;
}

static void vector(const char *base, const char *apt, const char *pip, const char *conda,
                   const char *want)
{
    struct kiln_spec *s = mk(base, apt, pip, conda);
    char rev[KILN_REVISION_LEN + 1];
    kiln_spec_revision(s, rev);
    is_str(rev, want, "revision of %s apt=%s pip=%s conda=%s", base, apt ? apt : "-",
           pip ? pip : "-", conda ? conda : "-");
    kiln_spec_free(s);
}

int main(void)
{
    /* PrimeHub's own example */
    vector("jupyter/base-notebook", "curl", NULL, NULL, "96ff7925");
    /*
     * The others are SHA-1 of the joined text, computed independently:
     *   printf '%s' 'TEXT' | sha1sum | cut -c1-8
     */
    vector("jupyter/base-notebook", NULL, NULL, NULL, "c9011819");
    vector("jupyter/base-notebook", "curl|jq", NULL, NULL, "d3bc2b02");
    vector("jupyter/base-notebook", "curl", "numpy>=1.17", "python=3.8", "513ad7eb");
    vector("jupyter/base-notebook", NULL, "numpy", NULL, "b5710291");
    vector("jupyter/base-notebook", NULL, NULL, "conda-forge::numpy==1.17*", "f54a59ff");
    vector("localhost:5000/base:v1", "curl|jq", "pandas[all]|numpy", NULL, "002a943f");

    struct kiln_spec *s = mk("b", "curl", NULL, NULL);
    char *job = kiln_spec_job_name(s, "96ff7925");
    is_str(job, "demo-96ff7925", "job name");
    free(job);
    kiln_spec_free(s);

    char *t = NULL;
    struct kiln_error *err = NULL;
    ok(kiln_spec_target("demo", "96ff7925", "localhost:5000/kiln/", NULL, &t, &err) == 0,
       "target from prefix");
    is_str(t, "localhost:5000/kiln/demo:96ff7925", "prefix/name:hash, trailing slash dropped");
    free(t);
    t = NULL;
    ok(kiln_spec_target("demo", "96ff7925", "ignored", "registry.example.com/all/images", &t,
                        &err) == 0,
       "target from push repo");
    is_str(t, "registry.example.com/all/images:demo-96ff7925", "repo:name-hash");
    free(t);
    t = NULL;
    ok(kiln_spec_target("demo", "96ff7925", NULL, NULL, &t, &err) == -KILN_EINVAL && err,
       "no prefix, no repo: error");
    kiln_error_freep(&err);
    ok(kiln_spec_target("demo", "96ff7925", "Bad Prefix", NULL, &t, &err) == -KILN_EINVAL && err,
       "invalid prefix: error (%s)", err ? err->msg : "accepted");
    kiln_error_freep(&err);
    return tap_done();
}
