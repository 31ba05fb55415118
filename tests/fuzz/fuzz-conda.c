/*
 * Fuzz target for the package-name parsers: every input goes through
 * kiln_conda_spec_parse() (with and without an output struct) and
 * kiln_apt_package_check(). Besides crashes, leaks and undefined
 * behaviour, it traps when an accepted input breaks the promises the
 * headers make (no shell metacharacters, no control or non-ASCII bytes,
 * no leading '-', and for apt no trailing '-').
 */
#include "util/common.h"
#include "spec/apt.h"
#include "spec/conda.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool has_unsafe_byte(const char *s)
{
    for (; *s; s++) {
        unsigned char u = (unsigned char)*s;
        if (u < 0x20 || u >= 0x7f || strchr(";&$`()\\#\n", u))
            return true;
    }
    return false;
}

static void check_conda(const char *s)
{
    struct kiln_conda_spec c = KILN_CONDA_SPEC_INIT;
    struct kiln_error *e = NULL;
    int r = kiln_conda_spec_parse(s, &c, &e);
    int r2 = kiln_conda_spec_parse(s, NULL, NULL);

    if (r != r2)
        __builtin_trap();
    if (r == 0) {
        if (e || !c.name || !*c.name || has_unsafe_byte(s) || s[0] == '-' ||
            strlen(s) > KILN_CONDA_MAX_LEN)
            __builtin_trap();
        /* Quotes only come with brackets. */
        if ((strchr(s, '\'') || strchr(s, '"')) && !strchr(s, '['))
            __builtin_trap();
        /* '<', '>' and '|' only after the name. */
        if (strpbrk(c.name, "<>|'\" "))
            __builtin_trap();
    } else if (r != -KILN_EINVAL || !e || !e->msg || c.name || c.keys.n) {
        __builtin_trap();
    }
    kiln_conda_spec_release(&c);
    kiln_error_free(e);
}

static void check_apt(const char *s)
{
    struct kiln_error *e = NULL;
    int r = kiln_apt_package_check(s, &e);

    if (r == 0) {
        size_t len = strlen(s);
        if (e || len < 2 || len > KILN_APT_MAX_LEN || s[0] == '-' || s[len - 1] == '-')
            __builtin_trap();
        if (strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+.~:=/-") !=
            len)
            __builtin_trap();
    } else if (r != -KILN_EINVAL || !e || !e->msg) {
        __builtin_trap();
    }
    kiln_error_free(e);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* Past a little over both caps only the length check runs: skip. */
    if (size > 4 * KILN_CONDA_MAX_LEN)
        return 0;
    _cleanup_free_ char *s = kiln_xmalloc(size + 1);
    memcpy(s, data, size);
    s[size] = '\0';

    check_conda(s);
    check_apt(s);
    return 0;
}
