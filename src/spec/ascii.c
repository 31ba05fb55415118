#include "util/common.h"
#include "spec/ascii.h"

int kiln_spec_check_ascii(const char *s, size_t len, struct kiln_error **err)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f)
            return kiln_error_set(err, KILN_EINVAL, 0,
                                  "unexpected control byte 0x%02x at offset %zu", c, i);
        if (c >= 0x80)
            return kiln_error_set(err, KILN_EINVAL, 0,
                                  "unexpected non-ASCII byte 0x%02x at offset %zu", c, i);
    }
    return 0;
}
