/*
 * Included first by every kiln source file: the standard headers, the
 * cleanup helpers, memory helpers, and banned.h last.
 */
#ifndef KILN_COMMON_H
#define KILN_COMMON_H

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kiln/error.h"
#include "util/cleanup.h"
#include "util/mem.h"

#include "util/banned.h"

#endif
