#include "util/common.h"
#include "util/buf.h"

char kiln_buf_empty[1];

void kiln_buf_init(struct kiln_buf *b, size_t max)
{
    b->buf = kiln_buf_empty;
    b->len = 0;
    b->alloc = 0;
    b->max = max ? max : KILN_BUF_DEFAULT_MAX;
    b->err = 0;
}

void kiln_buf_release(struct kiln_buf *b)
{
    if (b->alloc)
        free(b->buf);
    kiln_buf_init(b, b->max);
}

void kiln_buf_reset(struct kiln_buf *b)
{
    b->err = 0;
    kiln_buf_truncate(b, 0);
}

void kiln_buf_truncate(struct kiln_buf *b, size_t len)
{
    if (len > b->len)
        len = b->len;
    b->len = len;
    if (b->alloc)
        b->buf[len] = '\0';
}

int kiln_buf_grow(struct kiln_buf *b, size_t extra)
{
    if (b->err)
        return -b->err;
    if (extra > b->max || b->len > b->max - extra) {
        b->err = KILN_ETOOBIG;
        return -b->err;
    }
    size_t need = b->len + extra + 1;
    if (need <= b->alloc)
        return 0;
    size_t n = b->alloc ? b->alloc : 64;
    while (n < need)
        n = n > SIZE_MAX / 2 ? need : n * 2;
    if (b->alloc) {
        b->buf = kiln_xrealloc(b->buf, n);
    } else {
        b->buf = kiln_xmalloc(n);
        b->buf[0] = '\0';
    }
    b->alloc = n;
    return 0;
}

int kiln_buf_add(struct kiln_buf *b, const void *data, size_t len)
{
    int r = kiln_buf_grow(b, len);
    if (r < 0)
        return r;
    if (len)
        memcpy(b->buf + b->len, data, len);
    b->len += len;
    if (b->alloc)
        b->buf[b->len] = '\0';
    return 0;
}

int kiln_buf_adds(struct kiln_buf *b, const char *s)
{
    return kiln_buf_add(b, s, strlen(s));
}

int kiln_buf_addch(struct kiln_buf *b, char c)
{
    return kiln_buf_add(b, &c, 1);
}

int kiln_buf_vaddf(struct kiln_buf *b, const char *fmt, va_list ap)
{
    if (b->err)
        return -b->err;
    va_list cp;
    va_copy(cp, ap);
    int n = vsnprintf(NULL, 0, fmt, cp);
    va_end(cp);
    if (n < 0) {
        b->err = KILN_EINTERNAL;
        return -b->err;
    }
    int r = kiln_buf_grow(b, (size_t)n);
    if (r < 0)
        return r;
    vsnprintf(b->buf + b->len, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
    return 0;
}

int kiln_buf_addf(struct kiln_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int r = kiln_buf_vaddf(b, fmt, ap);
    va_end(ap);
    return r;
}

int kiln_buf_finish(struct kiln_buf *b, const char *what, struct kiln_error **err)
{
    int code = b->err;
    if (!code)
        return 0;
    b->err = 0;
    if (code == KILN_ETOOBIG)
        return kiln_error_set(err, code, 0, "%s: larger than %zu bytes", what, b->max);
    return kiln_error_set(err, code, 0, "%s: cannot format text", what);
}

char *kiln_buf_detach(struct kiln_buf *b, size_t *ret_len)
{
    char *p;
    if (b->alloc) {
        p = b->buf;
    } else {
        p = kiln_xstrdup("");
    }
    if (ret_len)
        *ret_len = b->len;
    kiln_buf_init(b, b->max);
    return p;
}

int kiln_buf_sink(void *ud, const void *data, size_t len, struct kiln_error **err)
{
    struct kiln_buf *b = ud;
    if (kiln_buf_add(b, data, len) < 0)
        return kiln_buf_finish(b, "blob", err);
    return 0;
}
