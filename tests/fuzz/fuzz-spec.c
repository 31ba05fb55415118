/*
 * Fuzz the spec reader (YAML and JSON, both shapes, validation) and, for
 * every spec that validates, the writers: what kiln writes it must read back
 * as the same spec.
 */
#include "util/common.h"
#include "spec/dockerfile.h"
#include "spec/imagespec.h"
#include "spec/revision.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool same_opt(const char *a, const char *b)
{
    return (!a && !b) || (a && b && !strcmp(a, b));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct kiln_diags diags = KILN_DIAGS_INIT;
    struct kiln_spec *s = NULL;
    struct kiln_error *err = NULL;
    if (kiln_spec_parse((const char *)data, size, &s, &diags, &err) < 0) {
        if (!err)
            abort(); /* a failure always says why */
        kiln_error_free(err);
        kiln_diags_release(&diags);
        return 0;
    }
    char rev[KILN_REVISION_LEN + 1];
    kiln_spec_revision(s, rev);
    for (int shape = 0; shape < 2; shape++) {
        for (int fmt = 0; fmt < 2; fmt++) {
            struct kiln_buf out = KILN_BUF_INIT;
            if (kiln_spec_write(s, shape, fmt, &out, &err) < 0)
                abort();
            struct kiln_spec *t = NULL;
            if (kiln_spec_parse(out.buf, out.len, &t, NULL, &err) < 0)
                abort(); /* kiln must read what it writes */
            if (!kiln_spec_same_build(s, t) || strcmp(s->name, t->name) != 0 ||
                !same_opt(s->description, t->description) ||
                !same_opt(s->pull_secret, t->pull_secret) ||
                !same_opt(s->update_time, t->update_time))
                abort();
            kiln_spec_free(t);
            kiln_buf_release(&out);
        }
    }
    struct kiln_buf df = KILN_BUF_INIT;
    if (kiln_dockerfile_render(s, "jovyan", &df, &err) < 0)
        abort();
    kiln_buf_release(&df);
    kiln_spec_free(s);
    kiln_diags_release(&diags);
    return 0;
}
