/*
 * struct kiln_diags: a list of validation problems, each with the path of
 * the field it concerns ("packages.pip[2]") and a message. Validators add
 * every problem they find instead of stopping at the first, so a user sees
 * them all at once.
 *
 * Ownership: the list owns its strings; kiln_diags_release() frees them.
 */
#ifndef KILN_DIAG_H
#define KILN_DIAG_H

#include <stddef.h>

#include "kiln/error.h"

struct kiln_diag {
    char *field;   /* path of the field, e.g. "packages.pip[2]"; "" for the whole input */
    char *message; /* lower case, the subject quoted */
    int line;      /* 1-based line in a one-package-per-line string, or 0 */
};

struct kiln_diags {
    struct kiln_diag *v;
    size_t n;
    size_t alloc;
};

#define KILN_DIAGS_INIT                                                                            \
    {                                                                                              \
        NULL, 0, 0                                                                                 \
    }

/* At most this many problems are kept; more are counted in one last entry. */
#define KILN_DIAGS_MAX 200

void kiln_diags_add(struct kiln_diags *d, int line, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void kiln_diags_release(struct kiln_diags *d);

/*
 * When `d` holds problems, set *err to KILN_EINVAL with all of them joined
 * as "field: message; field: message" and return -KILN_EINVAL; else 0.
 */
int kiln_diags_to_error(const struct kiln_diags *d, struct kiln_error **err);

/*
 * A copy of `s` fit to quote in a one-line message: bytes outside printable
 * ASCII become \xNN (a newline \n), and text past `max` bytes is cut with
 * "...". The caller frees the result.
 */
char *kiln_diag_quote(const char *s, size_t max);

#endif
