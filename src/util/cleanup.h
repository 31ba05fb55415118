/*
 * Scope-bound cleanup helpers (GCC/Clang `cleanup` attribute).
 *
 * Every variable declared with one of these must be initialised (= NULL,
 * = -1). Hand ownership on with TAKE_PTR(p) / TAKE_FD(fd), which return the
 * value and reset the variable so the cleanup does nothing.
 */
#ifndef KILN_CLEANUP_H
#define KILN_CLEANUP_H

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define _cleanup_(f) __attribute__((cleanup(f)))

static inline void kiln_freep(void *p)
{
    free(*(void **)p);
}

static inline void kiln_closep(int *fd)
{
    if (*fd >= 0)
        close(*fd);
}

static inline void kiln_fclosep(FILE **f)
{
    if (*f)
        fclose(*f);
}

#define _cleanup_free_   _cleanup_(kiln_freep)
#define _cleanup_close_  _cleanup_(kiln_closep)
#define _cleanup_fclose_ _cleanup_(kiln_fclosep)

#define TAKE_PTR(p)                                                                                \
    ({                                                                                             \
        __typeof__(p) take_ptr_tmp_ = (p);                                                         \
        (p) = NULL;                                                                                \
        take_ptr_tmp_;                                                                             \
    })

#define TAKE_FD(fd)                                                                                \
    ({                                                                                             \
        int take_fd_tmp_ = (fd);                                                                   \
        (fd) = -1;                                                                                 \
        take_fd_tmp_;                                                                              \
    })

#define KILN_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

#endif
