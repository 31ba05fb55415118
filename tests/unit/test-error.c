#include "util/common.h"
#include "tap.h"

static int fails_io(struct kiln_error **err)
{
    return kiln_error_set(err, KILN_EIO, ENOENT, "open '%s'", "/nope");
}

int main(void)
{
    struct kiln_error *err = NULL;
    is_int(fails_io(&err), -KILN_EIO, "set returns -code");
    ok(err != NULL, "error filled");
    is_str(err->msg, "open '/nope': No such file or directory", "errno text appended");
    is_int(err->errnum, ENOENT, "errno kept");
    is_int(kiln_error_prefix(&err, "load spec '%s'", "x.yaml"), -KILN_EIO, "prefix returns -code");
    is_str(err->msg, "load spec 'x.yaml': open '/nope': No such file or directory",
           "context added outward");
    kiln_error_free(err);

    is_int(fails_io(NULL), -KILN_EIO, "NULL err is allowed");
    err = NULL;
    kiln_error_set(&err, KILN_EINVAL, 0, "first");
    kiln_error_set(&err, KILN_ENOTFOUND, 0, "second");
    is_str(err->msg, "second", "a second set replaces the first");
    kiln_error_freep(&err);
    ok(err == NULL, "freep resets");
    kiln_error_free(NULL);

    is_int(kiln_error_exit_code(KILN_EINVAL), 1, "invalid input exits 1");
    is_int(kiln_error_exit_code(-KILN_EUSAGE), 2, "usage exits 2 (negative codes too)");
    ok(kiln_error_exit_code(KILN_EIO) >= 3, "other errors exit >= 3");
    is_int(kiln_error_http_status(KILN_EINVAL), 400, "invalid is 400");
    is_int(kiln_error_http_status(KILN_ENOTFOUND), 404, "not found is 404");
    is_int(kiln_error_http_status(KILN_ETOOBIG), 413, "too big is 413");
    is_str(kiln_error_code_name(KILN_ENET), "network", "code names");
    is_str(kiln_error_code_name(999), "internal", "unknown codes map to internal");
    is_int(kiln_error_set(&err, 999, 0, "x"), -KILN_EINTERNAL, "bad code becomes internal");
    kiln_error_free(err);
    return tap_done();
}
