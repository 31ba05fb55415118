/*
 * kiln error object.
 *
 * A fallible function returns int: >= 0 on success, -KILN_E<code> on failure,
 * and takes `struct kiln_error **err` as its last parameter. On failure it
 * fills *err (when err is not NULL) with one call to kiln_error_set(); the
 * caller owns the object and frees it with kiln_error_free(). Callers add
 * context outward with kiln_error_prefix(): "push 'x': upload blob: 401".
 *
 * Messages are lower case, have no final full stop and quote their subject.
 */
#ifndef KILN_ERROR_H
#define KILN_ERROR_H

#include <stdarg.h>

/* Error categories. Each maps to a CLI exit code and an HTTP status. */
enum kiln_code {
    KILN_OK = 0,
    KILN_EINVAL,       /* invalid input (spec, request body, reference...) */
    KILN_EUSAGE,       /* wrong command-line usage */
    KILN_ENOTFOUND,    /* a named thing does not exist */
    KILN_EEXIST,       /* a named thing already exists */
    KILN_ECONFLICT,    /* state does not allow the operation */
    KILN_ETOOBIG,      /* a size or count cap was exceeded */
    KILN_EIO,          /* local file system or process error */
    KILN_ENET,         /* network / remote service error */
    KILN_EAUTH,        /* authentication or authorisation failed */
    KILN_ECANCELLED,   /* cancelled by request */
    KILN_ETIMEOUT,     /* a time limit was reached */
    KILN_EUNSUPPORTED, /* valid, but not something kiln does */
    KILN_EINTERNAL,    /* a bug or an unexpected state */
    KILN_ECODE_MAX
};

struct kiln_error {
    int code;   /* enum kiln_code, positive */
    int errnum; /* errno at the failure, or 0 */
    char *msg;  /* full message, never NULL once set */
};

/*
 * Set *err (when err != NULL) to a new error with `code`, `errnum` and the
 * formatted message; when errnum != 0, ": strerror(errnum)" is appended.
 * An error already in *err is freed first. Returns -code, so a function can
 * write `return kiln_error_set(err, KILN_EIO, errno, "open '%s'", path);`.
 */
int kiln_error_set(struct kiln_error **err, int code, int errnum, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
int kiln_error_setv(struct kiln_error **err, int code, int errnum, const char *fmt, va_list ap)
    __attribute__((format(printf, 4, 0)));

/*
 * Prepend "<formatted>: " to the message in *err. Does nothing when err or
 * *err is NULL. Returns -(*err)->code (or -KILN_EINTERNAL when no error is
 * set), so `return kiln_error_prefix(err, "pull '%s'", ref);` works.
 */
int kiln_error_prefix(struct kiln_error **err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Free an error; NULL is fine. */
void kiln_error_free(struct kiln_error *e);

/* "invalid", "not-found", ...: a stable lower-case name of a code. */
const char *kiln_error_code_name(int code);

/* The CLI exit code of a category: 1 invalid input, 2 usage, >= 3 others. */
int kiln_error_exit_code(int code);

/* The HTTP status of a category (400, 404, 409, 413, 500, 502, ...). */
int kiln_error_http_status(int code);

/* Convenience cleanup for `_cleanup_(kiln_error_freep) struct kiln_error *e = NULL`. */
void kiln_error_freep(struct kiln_error **e);

#endif
