/*
 * struct kiln_buf: a growable byte buffer (after git's strbuf, with curl's
 * size cap and SQLite's sticky error).
 *
 * Invariants: `buf` is never NULL and buf[len] == '\0' at all times, so a
 * buffer can be used as a C string at any point (it may also hold NULs).
 * A buffer has a size cap (`max`, in bytes of content); an append that would
 * pass it, or a formatting failure, sets a sticky error: later appends do
 * nothing, and kiln_buf_finish() reports the error once. Allocation failure
 * aborts (see util/mem.h).
 *
 * Ownership: the buffer owns `buf` until kiln_buf_detach() hands it over.
 * kiln_buf_release() frees it and leaves an empty, usable buffer.
 */
#ifndef KILN_BUF_H
#define KILN_BUF_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "kiln/error.h"

struct kiln_buf {
    char *buf;
    size_t len;
    size_t alloc; /* 0 while buf points at the shared empty string */
    size_t max;   /* content cap in bytes */
    int err;      /* sticky enum kiln_code, 0 when fine */
};

extern char kiln_buf_empty[];

/* The default cap: 64 MiB. Buffers for outside input set a smaller one. */
#define KILN_BUF_DEFAULT_MAX ((size_t)64 << 20)
#define KILN_BUF_INIT                                                                              \
    {                                                                                              \
        kiln_buf_empty, 0, 0, KILN_BUF_DEFAULT_MAX, 0                                              \
    }

/* Initialise with a cap (0 means KILN_BUF_DEFAULT_MAX). */
void kiln_buf_init(struct kiln_buf *b, size_t max);
/* Free the contents; the buffer is empty and usable again, cap kept. */
void kiln_buf_release(struct kiln_buf *b);
/* Empty the contents (keeps the allocation) and clear the sticky error. */
void kiln_buf_reset(struct kiln_buf *b);

/* Appends. Each returns 0, or -code of the sticky error (also on earlier ones). */
int kiln_buf_add(struct kiln_buf *b, const void *data, size_t len);
int kiln_buf_adds(struct kiln_buf *b, const char *s);
int kiln_buf_addch(struct kiln_buf *b, char c);
int kiln_buf_addf(struct kiln_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int kiln_buf_vaddf(struct kiln_buf *b, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

/* Make room for `extra` more bytes (beyond len). Fails like an append. */
int kiln_buf_grow(struct kiln_buf *b, size_t extra);
/* Cut the content to `len` bytes (len <= b->len). */
void kiln_buf_truncate(struct kiln_buf *b, size_t len);

/*
 * Report the sticky error, once: returns 0 when none; otherwise sets *err
 * naming `what` ("spec body: larger than 1048576 bytes"), clears the sticky
 * error and returns its -code.
 */
int kiln_buf_finish(struct kiln_buf *b, const char *what, struct kiln_error **err);

/*
 * A write sink (the shape of the registry client's blob and body sinks)
 * appending to the kiln_buf `ud`: 0, or at its cap kiln_buf_finish()'s
 * -KILN_ETOOBIG naming it "blob".
 */
int kiln_buf_sink(void *ud, const void *data, size_t len, struct kiln_error **err);

/*
 * Hand the contents over: returns a malloc'd NUL-terminated string (never
 * NULL), stores its length in *ret_len when not NULL, and leaves the buffer
 * empty. The caller frees the result.
 */
char *kiln_buf_detach(struct kiln_buf *b, size_t *ret_len);

#endif
