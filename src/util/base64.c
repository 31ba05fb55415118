#include "util/common.h"
#include "util/base64.h"

static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

size_t kiln_base64_encoded_len(size_t len)
{
    if (len / 3 >= SIZE_MAX / 4 - 1)
        abort(); /* no such buffer can exist */
    return (len + 2) / 3 * 4;
}

char *kiln_base64_encode(const void *data, size_t len)
{
    const uint8_t *p = data;
    size_t n = kiln_base64_encoded_len(len);
    char *out = kiln_xmalloc(n + 1);
    size_t o = 0, i = 0;

    for (; len - i >= 3; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        out[o++] = alphabet[v >> 18];
        out[o++] = alphabet[(v >> 12) & 63];
        out[o++] = alphabet[(v >> 6) & 63];
        out[o++] = alphabet[v & 63];
    }
    if (len - i == 1) {
        uint32_t v = (uint32_t)p[i] << 16;
        out[o++] = alphabet[v >> 18];
        out[o++] = alphabet[(v >> 12) & 63];
        out[o++] = '=';
        out[o++] = '=';
    } else if (len - i == 2) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8;
        out[o++] = alphabet[v >> 18];
        out[o++] = alphabet[(v >> 12) & 63];
        out[o++] = alphabet[(v >> 6) & 63];
        out[o++] = '=';
    }
    out[o] = '\0';
    return out;
}

int kiln_base64_decode(const char *s, size_t len, unsigned flags, uint8_t **ret, size_t *ret_len,
                       struct kiln_error **err)
{
    if (len > KILN_BASE64_DECODE_MAX)
        return kiln_error_set(err, KILN_ETOOBIG, 0, "base64 input longer than %zu bytes",
                              KILN_BASE64_DECODE_MAX);
    if (!s)
        len = 0;

    _cleanup_free_ uint8_t *out = kiln_xmalloc(len / 4 * 3 + 3 + 1);
    size_t o = 0, last = 0, pad_at = 0;
    uint32_t acc = 0;
    int n = 0, pads = 0;

    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((flags & KILN_BASE64_SKIP_NEWLINES) && (c == '\r' || c == '\n'))
            continue;
        if (c == '=') {
            if (pads == 0) {
                if (n < 2)
                    return kiln_error_set(err, KILN_EINVAL, 0,
                                          "unexpected base64 padding at offset %zu", i);
                pad_at = i;
            }
            if (n + ++pads > 4)
                return kiln_error_set(err, KILN_EINVAL, 0, "too much base64 padding at offset %zu",
                                      i);
            continue;
        }
        if (pads)
            return kiln_error_set(err, KILN_EINVAL, 0, "data after base64 padding at offset %zu",
                                  i);
        int v = value(c);
        if (v < 0)
            return kiln_error_set(err, KILN_EINVAL, 0, "invalid base64 character at offset %zu", i);
        acc = acc << 6 | (uint32_t)v;
        last = i;
        if (++n == 4) {
            out[o++] = (uint8_t)(acc >> 16);
            out[o++] = (uint8_t)(acc >> 8);
            out[o++] = (uint8_t)acc;
            acc = 0;
            n = 0;
        }
    }
    if (pads && n + pads != 4)
        return kiln_error_set(err, KILN_EINVAL, 0, "incomplete base64 padding at offset %zu",
                              pad_at);
    if (n == 1)
        return kiln_error_set(err, KILN_EINVAL, 0, "truncated base64 input at offset %zu", last);
    if (n == 2) {
        if (acc & 0xf)
            return kiln_error_set(err, KILN_EINVAL, 0,
                                  "non-zero trailing base64 bits at offset %zu", last);
        out[o++] = (uint8_t)(acc >> 4);
    } else if (n == 3) {
        if (acc & 0x3)
            return kiln_error_set(err, KILN_EINVAL, 0,
                                  "non-zero trailing base64 bits at offset %zu", last);
        out[o++] = (uint8_t)(acc >> 10);
        out[o++] = (uint8_t)(acc >> 2);
    }
    out[o] = '\0';
    if (ret_len)
        *ret_len = o;
    *ret = TAKE_PTR(out);
    return 0;
}
