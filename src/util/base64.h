/*
 * Standard base64 (RFC 4648 section 4: A-Z a-z 0-9 + /, '=' padding).
 *
 * Encoding always pads. Decoding is strict: every byte must be in the
 * alphabet, padding is either absent or exactly right and ends the input,
 * a final group of one character is refused, and the unused low bits of
 * the last character must be zero, so each output has exactly one
 * accepted encoding (besides the unpadded form). With
 * KILN_BASE64_SKIP_NEWLINES, CR and LF are skipped anywhere (as Go's
 * decoder does, which wrote most docker config files); any other
 * whitespace is an error.
 *
 * Error messages name the offset in the input but never quote the input:
 * base64 here usually carries credentials.
 */
#ifndef KILN_UTIL_BASE64_H
#define KILN_UTIL_BASE64_H

#include <stddef.h>
#include <stdint.h>

#include "kiln/error.h"

/* Longest input kiln_base64_decode() looks at (16 MiB). */
#define KILN_BASE64_DECODE_MAX ((size_t)16 << 20)

enum {
    KILN_BASE64_SKIP_NEWLINES = 1 << 0,
};

/* Length of the padded encoding of `len` bytes, without the NUL. */
size_t kiln_base64_encoded_len(size_t len);

/*
 * Encode `len` bytes; returns a NUL-terminated string the caller frees
 * (never NULL; "" for len 0). Aborts when the result would not fit in memory.
 */
char *kiln_base64_encode(const void *data, size_t len);

/*
 * Decode `len` characters of `s` (NULs in s are invalid characters).
 * On success returns 0 and sets *ret to a malloc'd buffer of *ret_len bytes
 * plus a terminating NUL (the data may itself contain NULs); the caller
 * frees it. ret_len may be NULL. On failure nothing is written and the
 * result is -KILN_EINVAL ("invalid base64 character at offset 4",
 * "base64 padding ... at offset N", "truncated base64 input", ...) or
 * -KILN_ETOOBIG when len > KILN_BASE64_DECODE_MAX.
 */
int kiln_base64_decode(const char *s, size_t len, unsigned flags, uint8_t **ret, size_t *ret_len,
                       struct kiln_error **err);

#endif
