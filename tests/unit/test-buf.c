#include "util/common.h"
#include "util/buf.h"
#include "tap.h"

int main(void)
{
    struct kiln_buf b = KILN_BUF_INIT;
    ok(b.buf != NULL && b.buf[0] == '\0' && b.len == 0, "init: empty, NUL-terminated, not NULL");
    is_int(kiln_buf_adds(&b, "hello"), 0, "adds");
    is_int(kiln_buf_addch(&b, ' '), 0, "addch");
    is_int(kiln_buf_addf(&b, "%s %d", "world", 42), 0, "addf");
    is_str(b.buf, "hello world 42", "content");
    is_int(b.len, 14, "length");
    kiln_buf_add(&b, "\0x", 2);
    is_int(b.len, 16, "binary-safe add keeps NULs");
    ok(b.buf[16] == '\0', "still NUL-terminated after binary add");
    kiln_buf_truncate(&b, 5);
    is_str(b.buf, "hello", "truncate");

    /* a long formatted string grows the buffer */
    for (int i = 0; i < 1000; i++)
        kiln_buf_addf(&b, "%04d", i);
    is_int(b.len, 5 + 4000, "grows past many reallocations");
    ok(!memcmp(b.buf + b.len - 4, "0999", 4), "content kept while growing");

    size_t len = 0;
    char *s = kiln_buf_detach(&b, &len);
    is_int(len, 4005, "detach hands the length");
    ok(b.len == 0 && b.buf[0] == '\0', "buffer empty after detach");
    free(s);

    /* the cap and the sticky error */
    struct kiln_buf c;
    kiln_buf_init(&c, 8);
    is_int(kiln_buf_adds(&c, "12345678"), 0, "fill up to the cap");
    is_int(kiln_buf_addch(&c, '9'), -KILN_ETOOBIG, "one byte past the cap fails");
    is_int(kiln_buf_adds(&c, ""), -KILN_ETOOBIG, "error sticks for later appends");
    is_str(c.buf, "12345678", "content unchanged by failed appends");
    struct kiln_error *err = NULL;
    is_int(kiln_buf_finish(&c, "thing", &err), -KILN_ETOOBIG, "finish reports it");
    ok(err && strstr(err->msg, "thing: larger than 8 bytes") != NULL, "message names it: %s",
       err ? err->msg : "");
    kiln_error_free(err);
    err = NULL;
    is_int(kiln_buf_finish(&c, "thing", &err), 0, "reported once only");

    /* the write sink */
    struct kiln_buf k;
    kiln_buf_init(&k, 6);
    is_int(kiln_buf_sink(&k, "abc", 3, &err), 0, "sink: appends");
    is_int(kiln_buf_sink(&k, "def", 3, &err), 0, "sink: up to the cap");
    is_str(k.buf, "abcdef", "sink: the content");
    is_int(kiln_buf_sink(&k, "g", 1, &err), -KILN_ETOOBIG, "sink: past the cap fails");
    ok(err && strstr(err->msg, "blob: larger than 6 bytes") != NULL, "sink: message: %s",
       err ? err->msg : "");
    kiln_error_free(err);
    err = NULL;
    kiln_buf_release(&k);
    ok(err == NULL, "no error object the second time");
    kiln_buf_release(&c);
    ok(c.max == 8 && c.len == 0, "release keeps the cap");

    /* detach of a never-grown buffer gives a fresh empty string */
    struct kiln_buf d = KILN_BUF_INIT;
    char *e = kiln_buf_detach(&d, NULL);
    is_str(e, "", "detach of empty buffer");
    free(e);
    kiln_buf_release(&b);
    return tap_done();
}
