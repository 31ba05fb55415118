#include "util/common.h"
#include "util/shquote.h"

void kiln_shquote(struct kiln_buf *out, const char *s)
{
    kiln_buf_addch(out, '\'');
    for (; *s; s++) {
        if (*s == '\'')
            kiln_buf_adds(out, "'\\''");
        else
            kiln_buf_addch(out, *s);
    }
    kiln_buf_addch(out, '\'');
}
