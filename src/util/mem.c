#include "util/common.h"

static void die_oom(size_t n)
{
    /* The one place library code writes to stderr: there is no way on. */
    fprintf(stderr, "kiln: out of memory allocating %zu bytes\n", n);
    abort();
}

void *kiln_xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        die_oom(n);
    return p;
}

void *kiln_xcalloc(size_t nmemb, size_t size)
{
    void *p = calloc(nmemb ? nmemb : 1, size ? size : 1);
    if (!p)
        die_oom(nmemb * size);
    return p;
}

void *kiln_xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q)
        die_oom(n);
    return q;
}

void *kiln_xreallocarray(void *p, size_t nmemb, size_t size)
{
    if (size && nmemb > SIZE_MAX / size)
        die_oom(SIZE_MAX);
    return kiln_xrealloc(p, nmemb * size);
}

char *kiln_xstrdup(const char *s)
{
    return kiln_xstrndup(s, strlen(s));
}

char *kiln_xstrndup(const char *s, size_t n)
{
    size_t len = strnlen(s, n);
    char *p = kiln_xmalloc(len + 1);
    memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

char *kiln_xvasprintf(const char *fmt, va_list ap)
{
    char *p = NULL;
    if (vasprintf(&p, fmt, ap) < 0)
        die_oom(strlen(fmt));
    return p;
}

char *kiln_xasprintf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *p = kiln_xvasprintf(fmt, ap);
    va_end(ap);
    return p;
}
