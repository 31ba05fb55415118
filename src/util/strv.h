/*
 * struct kiln_strv: an owned, growable array of owned C strings.
 * v[n] is NULL whenever v is not NULL. kiln_strv_release() frees all.
 */
#ifndef KILN_STRV_H
#define KILN_STRV_H

#include <stdbool.h>
#include <stddef.h>

struct kiln_strv {
    char **v;
    size_t n;
    size_t alloc;
};

#define KILN_STRV_INIT                                                                             \
    {                                                                                              \
        NULL, 0, 0                                                                                 \
    }

/* Append a copy of s. */
void kiln_strv_push(struct kiln_strv *s, const char *str);
/* Append s, taking ownership of it. */
void kiln_strv_push_take(struct kiln_strv *s, char *str);
void kiln_strv_release(struct kiln_strv *s);
/* Deep copy of src into an initialised, empty dst. */
void kiln_strv_copy(struct kiln_strv *dst, const struct kiln_strv *src);
bool kiln_strv_equal(const struct kiln_strv *a, const struct kiln_strv *b);

#endif
