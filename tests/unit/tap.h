/*
 * A tiny TAP producer for kiln's unit tests: `meson test` reads the output.
 * Use ok()/is_int()/is_str(), then `return tap_done();` from main.
 */
#ifndef KILN_TAP_H
#define KILN_TAP_H

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static int tap_n;
static int tap_failed;

/* The description on the test's own line: control characters escaped, so that
 * a newline in it cannot start a line TAP does not know. */
static void tap_print_escaped(const char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '\n')
            fputs("\\n", stdout);
        else if (c < 0x20 || c == 0x7f)
            printf("\\x%02x", c);
        else
            putchar(c);
    }
}

__attribute__((format(printf, 2, 3))) static int ok(int cond, const char *fmt, ...)
{
    va_list ap;
    char desc[4096];
    tap_n++;
    printf("%s %d - ", cond ? "ok" : "not ok", tap_n);
    va_start(ap, fmt);
    vsnprintf(desc, sizeof(desc), fmt, ap);
    va_end(ap);
    tap_print_escaped(desc);
    printf("\n");
    if (!cond)
        tap_failed++;
    fflush(stdout);
    return cond;
}

#define is_int(got, want, ...)                                                                     \
    do {                                                                                           \
        long long tap_g_ = (long long)(got), tap_w_ = (long long)(want);                           \
        if (!ok(tap_g_ == tap_w_, __VA_ARGS__))                                                    \
            printf("#   got %lld, want %lld\n", tap_g_, tap_w_);                                   \
    } while (0)

/* Print text as TAP comment lines, every line prefixed with "# ". */
__attribute__((unused)) static void tap_comment(const char *label, const char *s)
{
    printf("#   %s ", label);
    if (!s) {
        printf("(null)\n");
        return;
    }
    putchar('\'');
    for (; *s; s++) {
        putchar(*s);
        if (*s == '\n')
            printf("#        "); /* the next line (or the closing quote) stays a comment */
    }
    printf("'\n");
}

#define is_str(got, want, ...)                                                                     \
    do {                                                                                           \
        const char *tap_g_ = (got), *tap_w_ = (want);                                              \
        int tap_c_ = (tap_g_ && tap_w_) ? strcmp(tap_g_, tap_w_) == 0 : tap_g_ == tap_w_;          \
        if (!ok(tap_c_, __VA_ARGS__)) {                                                            \
            tap_comment("got ", tap_g_);                                                           \
            tap_comment("want", tap_w_);                                                           \
        }                                                                                          \
    } while (0)

__attribute__((unused)) static int tap_done(void)
{
    printf("1..%d\n", tap_n);
    if (tap_failed)
        printf("# %d of %d failed\n", tap_failed, tap_n);
    return tap_failed ? 1 : 0;
}

#endif
