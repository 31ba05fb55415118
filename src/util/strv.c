#include "util/common.h"
#include "util/strv.h"

void kiln_strv_push_take(struct kiln_strv *s, char *str)
{
    if (s->n + 2 > s->alloc) {
        s->alloc = s->alloc ? s->alloc * 2 : 8;
        s->v = kiln_xreallocarray(s->v, s->alloc, sizeof(*s->v));
    }
    s->v[s->n++] = str;
    s->v[s->n] = NULL;
}

void kiln_strv_push(struct kiln_strv *s, const char *str)
{
    kiln_strv_push_take(s, kiln_xstrdup(str));
}

void kiln_strv_release(struct kiln_strv *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->v[i]);
    free(s->v);
    s->v = NULL;
    s->n = s->alloc = 0;
}

void kiln_strv_copy(struct kiln_strv *dst, const struct kiln_strv *src)
{
    for (size_t i = 0; i < src->n; i++)
        kiln_strv_push(dst, src->v[i]);
}

bool kiln_strv_equal(const struct kiln_strv *a, const struct kiln_strv *b)
{
    if (a->n != b->n)
        return false;
    for (size_t i = 0; i < a->n; i++)
        if (strcmp(a->v[i], b->v[i]) != 0)
            return false;
    return true;
}
