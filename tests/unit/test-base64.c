#include "util/common.h"

#include "tap.h"
#include "util/base64.h"

static void test_rfc4648(void)
{
    static const struct {
        const char *plain, *enc;
    } v[] = {
        {"", ""},
        {"f", "Zg=="},
        {"fo", "Zm8="},
        {"foo", "Zm9v"},
        {"foob", "Zm9vYg=="},
        {"fooba", "Zm9vYmE="},
        {"foobar", "Zm9vYmFy"},
        {"user:pass", "dXNlcjpwYXNz"},
        {"_json_key:{\"a\":1}", "X2pzb25fa2V5OnsiYSI6MX0="},
        {"\xff\xfe\xfd", "//79"},
        {"\xfb\xff", "+/8="},
    };
    for (size_t k = 0; k < KILN_ARRAY_SIZE(v); k++) {
        char *e = kiln_base64_encode(v[k].plain, strlen(v[k].plain));
        is_str(e, v[k].enc, "encode '%s'", v[k].enc);
        is_int(kiln_base64_encoded_len(strlen(v[k].plain)), strlen(v[k].enc), "encoded length %zu",
               strlen(v[k].plain));
        free(e);

        uint8_t *d = NULL;
        size_t n = 99;
        int r = kiln_base64_decode(v[k].enc, strlen(v[k].enc), 0, &d, &n, NULL);
        ok(r == 0 && n == strlen(v[k].plain) && memcmp(d, v[k].plain, n) == 0 && d[n] == '\0',
           "decode '%s'", v[k].enc);
        free(d);

        /* the same without padding */
        size_t len = strlen(v[k].enc);
        while (len && v[k].enc[len - 1] == '=')
            len--;
        d = NULL;
        r = kiln_base64_decode(v[k].enc, len, 0, &d, &n, NULL);
        ok(r == 0 && n == strlen(v[k].plain) && memcmp(d, v[k].plain, n) == 0,
           "decode '%.*s' (no padding)", (int)len, v[k].enc);
        free(d);
    }
}

static void test_roundtrip(void)
{
    uint8_t data[300];
    unsigned x = 12345;
    for (size_t k = 0; k < sizeof(data); k++) {
        x = x * 1103515245u + 12345u;
        data[k] = (uint8_t)(x >> 16);
    }
    int bad = 0;
    for (size_t len = 0; len <= sizeof(data); len++) {
        char *e = kiln_base64_encode(data, len);
        uint8_t *d = NULL;
        size_t n = 0;
        if (strlen(e) != kiln_base64_encoded_len(len) ||
            kiln_base64_decode(e, strlen(e), 0, &d, &n, NULL) != 0 || n != len ||
            memcmp(d, data, len) != 0)
            bad++;
        free(d);
        free(e);
    }
    is_int(bad, 0, "binary round trip of lengths 0..300");

    /* every byte value */
    uint8_t all[256];
    for (int k = 0; k < 256; k++)
        all[k] = (uint8_t)k;
    char *e = kiln_base64_encode(all, sizeof(all));
    uint8_t *d = NULL;
    size_t n = 0;
    ok(kiln_base64_decode(e, strlen(e), 0, &d, &n, NULL) == 0 && n == 256 &&
           memcmp(d, all, 256) == 0,
       "all 256 byte values round trip");
    free(d);
    free(e);
}

/* The input made printable for a test description (TAP lines must stay single). */
static const char *show(const char *in, size_t len)
{
    static char out[256];
    size_t o = 0;
    for (size_t k = 0; k < len && o + 5 < sizeof(out); k++) {
        unsigned char c = (unsigned char)in[k];
        if (c >= 0x20 && c < 0x7f)
            out[o++] = (char)c;
        else
            o += (size_t)snprintf(out + o, sizeof(out) - o, "\\x%02x", c);
    }
    out[o] = '\0';
    return out;
}

static void bad(const char *in, size_t len, unsigned flags, int code, const char *msg)
{
    struct kiln_error *err = NULL;
    static uint8_t sentinel[1];
    uint8_t *d = sentinel;
    size_t n = 77;
    int r = kiln_base64_decode(in, len, flags, &d, &n, &err);
    is_int(r, -code, "'%s' fails", show(in, len));
    ok(d == sentinel && n == 77, "'%s': outputs untouched", show(in, len));
    is_str(err ? err->msg : NULL, msg, "'%s': message", show(in, len));
    kiln_error_free(err);
}

static void test_malformed(void)
{
    bad("Zg=", 3, 0, KILN_EINVAL, "incomplete base64 padding at offset 2");
    bad("Zm9vYg=", 7, 0, KILN_EINVAL, "incomplete base64 padding at offset 6");
    bad("Z", 1, 0, KILN_EINVAL, "truncated base64 input at offset 0");
    bad("Zm9vY", 5, 0, KILN_EINVAL, "truncated base64 input at offset 4");
    bad("Zh==", 4, 0, KILN_EINVAL, "non-zero trailing base64 bits at offset 1");
    bad("Zm9=", 4, 0, KILN_EINVAL, "non-zero trailing base64 bits at offset 2");
    bad("Zm9v!", 5, 0, KILN_EINVAL, "invalid base64 character at offset 4");
    bad("Zm-9", 4, 0, KILN_EINVAL, "invalid base64 character at offset 2");
    bad("Zm_9", 4, 0, KILN_EINVAL, "invalid base64 character at offset 2");
    bad(" Zg==", 5, 0, KILN_EINVAL, "invalid base64 character at offset 0");
    bad("Zg== ", 5, 0, KILN_EINVAL, "data after base64 padding at offset 4");
    bad("Zg==Zg==", 8, 0, KILN_EINVAL, "data after base64 padding at offset 4");
    bad("Zm8=Zg", 6, 0, KILN_EINVAL, "data after base64 padding at offset 4");
    bad("=", 1, 0, KILN_EINVAL, "unexpected base64 padding at offset 0");
    bad("Z=", 2, 0, KILN_EINVAL, "unexpected base64 padding at offset 1");
    bad("Zm9v=", 5, 0, KILN_EINVAL, "unexpected base64 padding at offset 4");
    bad("Zg===", 5, 0, KILN_EINVAL, "too much base64 padding at offset 4");
    bad("Zm8==", 5, 0, KILN_EINVAL, "too much base64 padding at offset 4");
    bad("Zm\n9v", 5, 0, KILN_EINVAL, "invalid base64 character at offset 2");
    bad("Zm\t9v", 5, KILN_BASE64_SKIP_NEWLINES, KILN_EINVAL,
        "invalid base64 character at offset 2");
    bad("Zm\0009v", 5, 0, KILN_EINVAL, "invalid base64 character at offset 2");
    bad("Zm9v\xc3\xa9", 6, 0, KILN_EINVAL, "invalid base64 character at offset 4");

    /* the message never quotes the input */
    struct kiln_error *err = NULL;
    uint8_t *d = NULL;
    ok(kiln_base64_decode("c2VjcmV0!", 9, 0, &d, NULL, &err) < 0 && err &&
           !strstr(err->msg, "c2VjcmV0"),
       "message does not quote the input");
    kiln_error_free(err);
}

static void test_newlines(void)
{
    uint8_t *d = NULL;
    size_t n = 0;
    const char *in = "Zm9v\r\nYmFy\nZg=\n=\n";
    ok(kiln_base64_decode(in, strlen(in), KILN_BASE64_SKIP_NEWLINES, &d, &n, NULL) == 0 && n == 7 &&
           memcmp(d, "foobarf", 7) == 0,
       "CR/LF skipped with KILN_BASE64_SKIP_NEWLINES");
    free(d);
    d = NULL;
    ok(kiln_base64_decode("\n", 1, KILN_BASE64_SKIP_NEWLINES, &d, &n, NULL) == 0 && n == 0,
       "only a newline decodes to nothing");
    free(d);
    d = NULL;
    ok(kiln_base64_decode(NULL, 0, 0, &d, &n, NULL) == 0 && n == 0 && d && d[0] == '\0',
       "NULL, 0 decodes to an empty buffer");
    free(d);
    d = NULL;
    ok(kiln_base64_decode("YQ==", 4, 0, &d, NULL, NULL) == 0 && d && strcmp((char *)d, "a") == 0,
       "ret_len may be NULL");
    free(d);
}

static void test_cap(void)
{
    size_t len = KILN_BASE64_DECODE_MAX + 4;
    char *big = kiln_xmalloc(len);
    memset(big, 'A', len);
    struct kiln_error *err = NULL;
    uint8_t *d = NULL;
    is_int(kiln_base64_decode(big, len, 0, &d, NULL, &err), -KILN_ETOOBIG, "over the cap");
    ok(err && strstr(err->msg, "longer than"), "cap message");
    kiln_error_free(err);
    ok(kiln_base64_decode(big, KILN_BASE64_DECODE_MAX, 0, &d, NULL, NULL) == 0,
       "exactly the cap decodes");
    free(d);
    free(big);
}

int main(void)
{
    test_rfc4648();
    test_roundtrip();
    test_malformed();
    test_newlines();
    test_cap();
    return tap_done();
}
