#include "util/common.h"
#include "util/shquote.h"
#include "tap.h"

static void check(const char *in, const char *want)
{
    struct kiln_buf b = KILN_BUF_INIT;
    kiln_shquote(&b, in);
    is_str(b.buf, want, "shquote [%s]", in);
    kiln_buf_release(&b);
}

int main(void)
{
    check("curl", "'curl'");
    check("", "''");
    check("numpy>=1.17,<2", "'numpy>=1.17,<2'");
    check("a b", "'a b'");
    check("$(reboot)", "'$(reboot)'");
    check("it's", "'it'\\''s'");
    check("numpy; python_version < '3.13'", "'numpy; python_version < '\\''3.13'\\'''");
    check("`x`", "'`x`'");
    check("\\", "'\\'");
    return tap_done();
}
