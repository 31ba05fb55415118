#include "util/common.h"
#include "util/buf.h"
#include "util/diag.h"

void kiln_diags_add(struct kiln_diags *d, int line, const char *field, const char *fmt, ...)
{
    if (d->n > KILN_DIAGS_MAX)
        return;
    if (d->n == d->alloc) {
        d->alloc = d->alloc ? d->alloc * 2 : 8;
        d->v = kiln_xreallocarray(d->v, d->alloc, sizeof(*d->v));
    }
    struct kiln_diag *e = &d->v[d->n++];
    if (d->n > KILN_DIAGS_MAX) {
        e->field = kiln_xstrdup("");
        e->message =
            kiln_xasprintf("more than %d problems, the rest are not listed", KILN_DIAGS_MAX);
        e->line = 0;
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    e->message = kiln_xvasprintf(fmt, ap);
    va_end(ap);
    e->field = kiln_xstrdup(field ? field : "");
    e->line = line;
}

void kiln_diags_release(struct kiln_diags *d)
{
    for (size_t i = 0; i < d->n; i++) {
        free(d->v[i].field);
        free(d->v[i].message);
    }
    free(d->v);
    d->v = NULL;
    d->n = d->alloc = 0;
}

int kiln_diags_to_error(const struct kiln_diags *d, struct kiln_error **err)
{
    if (d->n == 0)
        return 0;
    _cleanup_(kiln_buf_release) struct kiln_buf b = KILN_BUF_INIT;
    for (size_t i = 0; i < d->n; i++) {
        if (i)
            kiln_buf_adds(&b, "; ");
        if (d->v[i].field[0])
            kiln_buf_addf(&b, "%s: ", d->v[i].field);
        kiln_buf_adds(&b, d->v[i].message);
    }
    return kiln_error_set(err, KILN_EINVAL, 0, "%s", b.buf);
}

char *kiln_diag_quote(const char *s, size_t max)
{
    struct kiln_buf b = KILN_BUF_INIT;
    size_t i;
    for (i = 0; s[i] && i < max; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\n')
            kiln_buf_adds(&b, "\\n");
        else if (c == '\t')
            kiln_buf_adds(&b, "\\t");
        else if (c < 0x20 || c >= 0x7f)
            kiln_buf_addf(&b, "\\x%02x", c);
        else
            kiln_buf_addch(&b, (char)c);
    }
    if (s[i])
        kiln_buf_adds(&b, "...");
    return kiln_buf_detach(&b, NULL);
}
