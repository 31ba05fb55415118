/*
 * Allocation helpers. Out of memory is not recoverable in kiln: these abort
 * with a message on stderr instead of returning NULL. Sizes that come from
 * outside input must be capped by the caller before they get here.
 */
#ifndef KILN_MEM_H
#define KILN_MEM_H

#include <stdarg.h>
#include <stddef.h>

void *kiln_xmalloc(size_t n);
void *kiln_xcalloc(size_t nmemb, size_t size);
void *kiln_xrealloc(void *p, size_t n);
/* Grow an array of `nmemb` elements of `size` bytes, aborting on overflow. */
void *kiln_xreallocarray(void *p, size_t nmemb, size_t size);
char *kiln_xstrdup(const char *s);
char *kiln_xstrndup(const char *s, size_t n);
/* A newly allocated formatted string; the caller frees it. */
char *kiln_xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
char *kiln_xvasprintf(const char *fmt, va_list ap) __attribute__((format(printf, 1, 0)));

#endif
