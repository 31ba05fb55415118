/*
 * The first check of every package grammar: only printable ASCII.
 */
#ifndef KILN_SPEC_ASCII_H
#define KILN_SPEC_ASCII_H

#include <stddef.h>

#include "kiln/error.h"

/*
 * 0 when the `len` bytes of `s` are all printable ASCII (0x20-0x7e);
 * else -KILN_EINVAL naming the first offending byte and its offset:
 * "unexpected control byte 0x0a at offset 5",
 * "unexpected non-ASCII byte 0xc3 at offset 2".
 */
int kiln_spec_check_ascii(const char *s, size_t len, struct kiln_error **err);

#endif
