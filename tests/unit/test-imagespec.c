#include "util/common.h"
#include "spec/imagespec.h"
#include "spec/revision.h"
#include "tap.h"

static struct kiln_spec *parse(const char *text, struct kiln_diags *d, char **ret_msg)
{
    struct kiln_spec *s = NULL;
    struct kiln_error *err = NULL;
    if (kiln_spec_parse(text, strlen(text), &s, d, &err) < 0) {
        if (ret_msg)
            *ret_msg = kiln_xstrdup(err ? err->msg : "(no message)");
        kiln_error_free(err);
        return NULL;
    }
    return s;
}

/* Does `d` hold a problem for `field` whose message contains `msg`? */
static bool has(const struct kiln_diags *d, const char *field, const char *msg)
{
    for (size_t i = 0; i < d->n; i++)
        if (!strcmp(d->v[i].field, field) && strstr(d->v[i].message, msg))
            return true;
    return false;
}

static void dump_diags(const struct kiln_diags *d)
{
    for (size_t i = 0; i < d->n; i++)
        printf("#   %s: %s\n", d->v[i].field, d->v[i].message);
}

static void expect_problems(const char *what, const char *text, const char *const *pairs)
{
    struct kiln_diags d = KILN_DIAGS_INIT;
    char *msg = NULL;
    struct kiln_spec *s = parse(text, &d, &msg);
    ok(s == NULL, "%s: rejected", what);
    size_t want = 0;
    for (const char *const *p = pairs; *p; p += 2, want++) {
        if (!ok(has(&d, p[0], p[1]), "%s: %s: %s", what, p[0], p[1]))
            dump_diags(&d);
    }
    is_int(d.n, want, "%s: exactly %zu problems", what, want);
    kiln_spec_free(s);
    kiln_diags_release(&d);
    free(msg);
}

static void short_form(void)
{
    const char *text = "name: my-env\n"
                       "description: tools for the course\n"
                       "baseImage: jupyter/base-notebook\n"
                       "pullSecret: my-secret\n"
                       "packages:\n"
                       "  apt: [curl, jq]\n"
                       "  conda: ['conda-forge::numpy==1.17*', 'python=3.8']\n"
                       "  pip: ['numpy>=1.17', 'pandas[all]']\n";
    struct kiln_diags d = KILN_DIAGS_INIT;
    char *msg = NULL;
    struct kiln_spec *s = parse(text, &d, &msg);
    if (!ok(s != NULL, "short form parses"))
        printf("#   %s\n", msg);
    if (s) {
        is_str(s->name, "my-env", "name");
        is_str(s->description, "tools for the course", "description");
        is_str(s->base_image, "jupyter/base-notebook", "baseImage");
        is_str(s->pull_secret, "my-secret", "pullSecret");
        is_int(s->pkgs[KILN_PKG_APT].n, 2, "two apt packages");
        is_str(s->pkgs[KILN_PKG_CONDA].v[0], "conda-forge::numpy==1.17*", "conda kept verbatim");
        is_str(s->pkgs[KILN_PKG_PIP].v[1], "pandas[all]", "pip extras kept");
        is_int(s->shape, KILN_SPEC_SHAPE_KILN, "shape remembered");
    }
    kiln_spec_free(s);
    kiln_diags_release(&d);
    free(msg);
}

static void crd_form(void)
{
    const char *text = "apiVersion: primehub.io/v1alpha1\n"
                       "kind: ImageSpec\n"
                       "metadata:\n"
                       "  name: tf-2\n"
                       "  namespace: hub\n"
                       "  annotations: {description: tensorflow}\n"
                       "spec:\n"
                       "  baseImage: jupyter/base-notebook\n"
                       "  updateTime: \"2020-05-01T00:00:00Z\"\n"
                       "  packages:\n"
                       "    apt: [curl]\n"
                       "status:\n"
                       "  phase: Succeeded\n";
    struct kiln_spec *s = parse(text, NULL, NULL);
    ok(s != NULL, "ImageSpec resource parses (namespace and status tolerated)");
    if (s) {
        is_str(s->name, "tf-2", "metadata.name");
        is_str(s->description, "tensorflow", "description from annotations");
        is_str(s->update_time, "2020-05-01T00:00:00Z", "updateTime");
        is_int(s->shape, KILN_SPEC_SHAPE_CRD, "shape CRD");
        char rev[9];
        kiln_spec_revision(s, rev);
        is_str(rev, "96ff7925", "PrimeHub's example revision");
    }
    kiln_spec_free(s);

    expect_problems("crd paths",
                    "apiVersion: primehub.io/v1alpha1\nkind: ImageSpec\nmetadata: {name: Bad}\n"
                    "spec:\n  baseImage: x\n  packages: {pip: ['ok', 'numpy; rm -rf /']}\n",
                    (const char *const[]){"metadata.name", "must be lower case",
                                          "spec.packages.pip[1]", "is not a valid requirement",
                                          NULL});
    expect_problems("crd wrong kind",
                    "apiVersion: primehub.io/v1\nkind: ImageSpecJob\nmetadata: {name: a}\n"
                    "spec: {baseImage: x, bogus: 1}\n",
                    (const char *const[]){"apiVersion", "is not supported", "kind",
                                          "is not supported", "spec.bogus", "unknown field", NULL});
}

static void json_forms(void)
{
    struct kiln_spec *s =
        parse("{\"name\": \"a\", \"baseImage\": \"ubuntu:22.04\", "
              "\"packages\": {\"pip\": \"numpy\\n\\n  scipy  \\n\", \"apt\": null}}",
              NULL, NULL);
    ok(s != NULL, "JSON short form with a one-per-line pip string");
    if (s) {
        is_int(s->pkgs[KILN_PKG_PIP].n, 2, "blank lines dropped");
        is_str(s->pkgs[KILN_PKG_PIP].v[1], "scipy", "spaces trimmed");
        is_int(s->pkgs[KILN_PKG_APT].n, 0, "null list is empty");
    }
    kiln_spec_free(s);

    char *msg = NULL;
    s = parse("{\"name\": \"a\", \"name\": \"b\"}", NULL, &msg);
    ok(!s && msg && strstr(msg, "duplicate"), "JSON duplicate keys rejected: %s", msg);
    free(msg);
    msg = NULL;
    s = parse("{\"name\": \"a\",", NULL, &msg);
    ok(!s && msg && strstr(msg, "json: line 1"), "JSON syntax error located: %s", msg);
    free(msg);
    msg = NULL;
    s = parse("[1]", NULL, &msg);
    ok(!s && msg && strstr(msg, "must be a mapping"), "a list is not a spec: %s", msg);
    free(msg);
}

static void lines(void)
{
    const char *text = "name: a\nbaseImage: b\npackages:\n"
                       "  pip: \"numpy>=1.17\\n\\n  pandas[all]  \\nnumpy; rm -rf /\\n\"\n";
    struct kiln_diags d = KILN_DIAGS_INIT;
    struct kiln_spec *s = parse(text, &d, NULL);
    ok(!s && d.n == 1, "the injection is the one problem");
    if (d.n == 1) {
        is_str(d.v[0].field, "packages.pip[2]", "field path of the third package");
        is_int(d.v[0].line, 4, "line 4 of the text box");
        ok(strstr(d.v[0].message, "'numpy; rm -rf /' is not a valid requirement") != NULL,
           "message as in the issue: %s", d.v[0].message);
    }
    kiln_diags_release(&d);
}

static void all_problems(void)
{
    expect_problems(
        "every problem at once",
        "name: -Bad_Name\n"
        "baseImage: 'UPPER/x:tag with space'\n"
        "pullSecret: Not_A_Secret\n"
        "packages:\n"
        "  apt: [curl, 'jq;reboot', '-y']\n"
        "  conda: ['numpy>=1.11,<2', 'x$(id)']\n"
        "  pip: ['numpy>=1.17', '--index-url=http://evil', 'a|b', '-e .']\n",
        (const char *const[]){
            "name", "is not a valid name", "baseImage", "is not a valid image reference",
            "pullSecret", "is not a valid secret name", "packages.apt[1]", "is not a valid apt",
            "packages.apt[2]", "is not a valid apt", "packages.conda[1]", "is not a valid conda",
            "packages.pip[1]", "is not a valid requirement", "packages.pip[2]",
            "is not a valid requirement", "packages.pip[3]", "is not a valid requirement", NULL});
    expect_problems("missing fields", "description: x\n",
                    (const char *const[]){"name", "is required", "baseImage", "is required", NULL});
    expect_problems("shape problems",
                    "name: a\nbaseImage: [x]\npacakges: {}\npackages: {apt: {x: 1}, npm: [x], "
                    "pip: [numpy, [nested]]}\n",
                    (const char *const[]){"baseImage", "must be a string", "pacakges",
                                          "unknown field", "packages.apt", "must be a list",
                                          "packages.npm", "unknown package kind", "packages.pip[1]",
                                          "must be a string", NULL});
    expect_problems("control bytes",
                    "name: a\nbaseImage: b\npackages: {apt: [\"cu\\x01rl\"], "
                    "pip: [\"numpy\\tx\"], conda: [\"a\\nb\"]}\n",
                    (const char *const[]){"packages.apt[0]", "is not a valid", "packages.pip[0]",
                                          "is not a valid", "packages.conda[0]", "is not a valid",
                                          NULL});
    expect_problems(
        "NUL bytes",
        "name: a\nbaseImage: b\npackages: "
        "{apt: [\"curl\\0; rm -rf /\"], pip: \"x\\0y\"}\n",
        (const char *const[]){"packages.apt[0]", "NUL byte", "packages.pip", "NUL byte", NULL});
    expect_problems("empty package in a list", "name: a\nbaseImage: b\npackages: {apt: ['']}\n",
                    (const char *const[]){"packages.apt[0]", "empty package", NULL});
}

static void limits(void)
{
    struct kiln_spec *s = parse("name: a\nbaseImage: b\n", NULL, NULL);
    ok(s != NULL, "a spec with no packages is valid");
    kiln_spec_free(s);

    struct kiln_buf b = KILN_BUF_INIT;
    kiln_buf_adds(&b, "name: a\nbaseImage: b\npackages:\n  apt:\n");
    for (int i = 0; i < KILN_SPEC_MAX_PACKAGES; i++)
        kiln_buf_addf(&b, "  - pkg%d\n", i);
    s = parse(b.buf, NULL, NULL);
    ok(s != NULL, "1000 packages are fine");
    kiln_spec_free(s);
    kiln_buf_adds(&b, "  - one-more\n");
    struct kiln_diags d = KILN_DIAGS_INIT;
    s = parse(b.buf, &d, NULL);
    ok(!s && has(&d, "packages.apt", "more than 1000 packages"), "1001 packages are not");
    kiln_diags_release(&d);

    kiln_buf_reset(&b);
    kiln_buf_adds(&b, "name: a\nbaseImage: b\ndescription: '");
    while (b.len <= KILN_SPEC_MAX_BYTES)
        kiln_buf_adds(&b, "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
    kiln_buf_adds(&b, "'\n");
    char *msg = NULL;
    s = parse(b.buf, NULL, &msg);
    ok(!s && msg && strstr(msg, "larger than"), "over 1 MiB rejected: %s", msg);
    free(msg);
    kiln_buf_release(&b);
}

static void roundtrips(void)
{
    const char *text = "name: rt\ndescription: \"two\\nlines: yes\"\nbaseImage: "
                       "localhost:5000/base:1.0\npullSecret: sec\n"
                       "packages:\n  apt: [curl]\n  conda: ['python=3.8']\n"
                       "  pip: ['numpy; python_version < \"3.13\"', '1password']\n";
    struct kiln_spec *s = parse(text, NULL, NULL);
    ok(s != NULL, "round-trip source parses");
    if (!s)
        return;
    for (int shape = 0; shape < 2; shape++) {
        for (int fmt = 0; fmt < 2; fmt++) {
            struct kiln_buf out = KILN_BUF_INIT;
            struct kiln_error *err = NULL;
            ok(kiln_spec_write(s, shape, fmt, &out, &err) == 0, "write shape %d format %d", shape,
               fmt);
            char *msg = NULL;
            struct kiln_spec *t = parse(out.buf, NULL, &msg);
            ok(t && kiln_spec_same_build(s, t) && !strcmp(s->name, t->name) &&
                   !strcmp(s->description, t->description) &&
                   !strcmp(s->pull_secret, t->pull_secret) && (int)t->shape == shape,
               "re-read shape %d format %d gives the same spec%s%s", shape, fmt, msg ? ": " : "",
               msg ? msg : "");
            kiln_spec_free(t);
            kiln_buf_release(&out);
            kiln_error_free(err);
            free(msg);
        }
    }
    struct kiln_spec *c = kiln_spec_dup(s);
    ok(kiln_spec_same_build(s, c) && !strcmp(c->name, s->name), "dup is equal");
    free(c->pkgs[KILN_PKG_PIP].v[1]);
    c->pkgs[KILN_PKG_PIP].v[1] = kiln_xstrdup("2password");
    ok(!kiln_spec_same_build(s, c), "a changed package is a different build");
    kiln_spec_free(c);
    kiln_spec_free(s);
}

int main(void)
{
    short_form();
    crd_form();
    json_forms();
    lines();
    all_problems();
    limits();
    roundtrips();
    return tap_done();
}
