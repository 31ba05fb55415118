/*
 * POSIX shell quoting, for text meant to be read by /bin/sh (the rendered
 * Dockerfile). Every argument is single-quoted; a single quote inside is
 * written as '\''. The result is one shell word whatever the input.
 */
#ifndef KILN_SHQUOTE_H
#define KILN_SHQUOTE_H

#include "util/buf.h"

/* Append the quoted form of `s` to `out` (errors stick in `out`). */
void kiln_shquote(struct kiln_buf *out, const char *s);

#endif
