#include "util/common.h"
#include "util/diag.h"
#include "tap.h"

int main(void)
{
    struct kiln_diags d = KILN_DIAGS_INIT;
    struct kiln_error *err = NULL;
    is_int(kiln_diags_to_error(&d, &err), 0, "no problems, no error");
    kiln_diags_add(&d, 0, "name", "is required");
    kiln_diags_add(&d, 3, "packages.pip[2]", "'%s' is not a valid requirement", "x;y");
    is_int(d.n, 2, "two problems kept");
    is_int(d.v[1].line, 3, "line kept");
    is_int(kiln_diags_to_error(&d, &err), -KILN_EINVAL, "problems make an invalid error");
    is_str(err->msg, "name: is required; packages.pip[2]: 'x;y' is not a valid requirement",
           "all problems joined");
    kiln_error_free(err);
    kiln_diags_release(&d);

    for (int i = 0; i < KILN_DIAGS_MAX + 50; i++)
        kiln_diags_add(&d, 0, "f", "p%d", i);
    is_int(d.n, KILN_DIAGS_MAX + 1, "capped, with one summary entry");
    ok(strstr(d.v[KILN_DIAGS_MAX].message, "more than") != NULL, "summary says more");
    kiln_diags_release(&d);

    char *q = kiln_diag_quote("a\nb\x01\xff", 100);
    is_str(q, "a\\nb\\x01\\xff", "quote escapes control and non-ASCII bytes");
    free(q);
    q = kiln_diag_quote("abcdefgh", 4);
    is_str(q, "abcd...", "quote cuts long text");
    free(q);
    return tap_done();
}
