#include "util/common.h"
#include "spec/ascii.h"
#include "spec/apt.h"

/*
 * A strict checker for one apt-get install argument (grammar in apt.h). It
 * is a plain left-to-right scan; offsets in messages are 0-based byte
 * offsets.
 *
 * The argument goes to apt-get as its own argv element, so the danger is
 * not the shell but apt-get's own reading of it; hence, on top of the
 * grammar:
 * - a leading '-' is an option to apt-get;
 * - a trailing '-' makes "apt-get install" remove the package, so it is
 *   refused anywhere (name, arch, release); a trailing '+' (install) is
 *   kept, as real names end in it ("g++", "libstdc++");
 * - globs ('*', '?', '[') and regexes ('^', '$'), and apt patterns ('~n',
 *   '?installed') would select an open-ended set of packages: none of
 *   their characters is in the grammar;
 * - local .deb files ("./x.deb", "/tmp/x.deb") would install files from
 *   the build context: an argument may not start with '.' or '/'.
 * Upper case is refused as Debian Policy 5.6.1 makes names lower case.
 * Caveat: apt-get (Debian 12) reads an argument that names no package and
 * contains '.' as a POSIX regular expression over all package names, so a
 * misspelt "python3.11" could match several packages. The syntax cannot
 * tell; the caller that runs apt-get has to check the name exists first
 * (build/plan's apt step does, against `apt-cache --all-names pkgnames`).
 */

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static bool is_lower_alnum(char c)
{
    return is_digit(c) || (c >= 'a' && c <= 'z');
}

static bool is_alnum(char c)
{
    return is_lower_alnum(c) || (c >= 'A' && c <= 'Z');
}

static bool is_name_char(char c)
{
    return is_lower_alnum(c) || c == '+' || c == '.' || c == '-';
}

static bool is_arch_char(char c)
{
    return is_lower_alnum(c) || c == '-';
}

static bool is_release_char(char c)
{
    return is_alnum(c) || c == '.' || c == '+' || c == '-';
}

/* Characters of a Debian upstream version or revision (no ':' here). */
static bool is_version_char(char c)
{
    return is_alnum(c) || c == '.' || c == '+' || c == '~' || c == '-';
}

static int unexpected(const char *s, size_t at, struct kiln_error **err)
{
    return kiln_error_set(err, KILN_EINVAL, 0, "unexpected '%c' at offset %zu", s[at], at);
}

static int unexpected_in_name(const char *s, size_t at, struct kiln_error **err)
{
    if (s[at] >= 'A' && s[at] <= 'Z')
        return kiln_error_set(err, KILN_EINVAL, 0,
                              "unexpected '%c' at offset %zu (package names are lower case)", s[at],
                              at);
    return unexpected(s, at, err);
}

/*
 * "[epoch:]upstream[-revision]" in [a, b): epoch digits, upstream starting
 * with a digit, revision after the last '-' and free of '-'.
 */
static int check_version(const char *s, size_t a, size_t b, struct kiln_error **err)
{
    size_t i = a;

    if (a == b)
        return kiln_error_set(err, KILN_EINVAL, 0, "empty version at offset %zu", a);

    const char *colon = memchr(s + a, ':', b - a);
    if (colon) {
        size_t c = (size_t)(colon - s);
        if (c == a)
            return kiln_error_set(err, KILN_EINVAL, 0, "empty epoch at offset %zu", a);
        for (; i < c; i++)
            if (!is_digit(s[i]))
                return kiln_error_set(err, KILN_EINVAL, 0, "unexpected '%c' in epoch at offset %zu",
                                      s[i], i);
        i = c + 1;
    }

    if (i >= b)
        return kiln_error_set(err, KILN_EINVAL, 0, "empty upstream version at offset %zu", i);
    if (!is_digit(s[i]))
        return kiln_error_set(err, KILN_EINVAL, 0,
                              "version must start with a digit at offset %zu, not '%c'", i, s[i]);
    size_t dash = b;
    for (; i < b; i++) {
        if (!is_version_char(s[i]))
            return unexpected(s, i, err);
        if (s[i] == '-')
            dash = i;
    }
    if (dash != b && dash + 1 == b)
        return kiln_error_set(err, KILN_EINVAL, 0, "empty revision at offset %zu", b);
    return 0;
}

int kiln_apt_package_check(const char *s, struct kiln_error **err)
{
    if (!s || !*s)
        return kiln_error_set(err, KILN_EINVAL, 0, "empty package name");
    size_t len = strnlen(s, KILN_APT_MAX_LEN + 1);
    if (len > KILN_APT_MAX_LEN)
        return kiln_error_set(err, KILN_EINVAL, 0, "package argument is longer than %d bytes",
                              KILN_APT_MAX_LEN);
    int bad = kiln_spec_check_ascii(s, len, err);
    if (bad < 0)
        return bad;

    if (s[0] == '-')
        return kiln_error_set(err, KILN_EINVAL, 0,
                              "leading '-' at offset 0 (apt-get would read an option)");
    if (s[0] == '.' || s[0] == '/')
        return kiln_error_set(err, KILN_EINVAL, 0, "local package files are not allowed");
    /* apt-get install reads "name-" as "remove name". */
    if (s[len - 1] == '-')
        return kiln_error_set(err, KILN_EINVAL, 0,
                              "trailing '-' at offset %zu (apt-get would remove the package)",
                              len - 1);

    size_t i = 0;
    if (!is_lower_alnum(s[0]))
        return unexpected_in_name(s, 0, err);
    while (i < len && is_name_char(s[i]))
        i++;
    if (i < len && s[i] != ':' && s[i] != '=' && s[i] != '/')
        return unexpected_in_name(s, i, err);
    if (i < 2)
        return kiln_error_set(err, KILN_EINVAL, 0,
                              "package name '%.*s' is too short (at least 2 characters)", (int)i,
                              s);
    if (i == len)
        return 0;

    if (s[i] == ':') {
        size_t a = ++i;
        while (i < len && is_arch_char(s[i]))
            i++;
        if (i == a && (i == len || s[i] == '=' || s[i] == '/'))
            return kiln_error_set(err, KILN_EINVAL, 0, "empty architecture at offset %zu", a);
        if (!is_lower_alnum(s[a]))
            return unexpected(s, a, err);
        if (i == len)
            return 0;
    }

    if (s[i] == '=') {
        size_t v = ++i;
        /* A version runs to the end: '/' or ' ' in it is an error below. */
        while (i < len && (is_version_char(s[i]) || s[i] == ':'))
            i++;
        if (i < len)
            return unexpected(s, i, err);
        return check_version(s, v, len, err);
    }
    if (s[i] == '/') {
        size_t r = ++i;
        while (i < len && is_release_char(s[i]))
            i++;
        if (i == r)
            return i < len ? unexpected(s, i, err)
                           : kiln_error_set(err, KILN_EINVAL, 0, "empty release at offset %zu", r);
        if (!is_alnum(s[r]))
            return unexpected(s, r, err);
        return i < len ? unexpected(s, i, err) : 0;
    }
    return unexpected(s, i, err);
}
