/*
 * conda match specs, as kiln accepts them in a spec (a strict subset of
 * conda's MatchSpec string form):
 *
 *   (channel(/subdir):(namespace):)name(version(build))[key1=value1,...]
 *
 * e.g. "numpy", "python=3.8", "numpy>=1.11,<2", "numpy 1.17.* py38_0",
 * "numpy=1.17=py38_0", "conda-forge::numpy==1.17*",
 * "conda-forge/linux-64::numpy", "numpy[version='>=1.11',build=py38*]".
 *
 * channel   '/'-separated components of letters, digits, '-', '_', '.', each
 *           starting with a letter, digit or '_' ("conda-forge",
 *           "conda-forge/label/dev"); or an https URL
 *           ("https://conda.anaconda.org/conda-forge": lower-case "https://",
 *           a host, an optional port, a path of RFC 3986 unreserved
 *           characters and '+'; no user info, query, fragment, '.' or '..'
 *           segments). Other schemes (http, file, s3...) and local paths are
 *           rejected. A URL channel must be followed by "::" and takes no
 *           namespace, because ':' also appears in its scheme and port.
 * subdir    the last channel component, when it is a known platform
 *           ("linux-64", "noarch", "osx-arm64", ...); it is split off into
 *           `subdir`. Any other last component stays part of the channel.
 * namespace "channel:ns:name", or "ns:name" without a channel; same
 *           characters as a name. "channel::name" has no namespace.
 * name      letters, digits, '_', '.', '-'; starts with a letter, digit or
 *           '_'. No globs: kiln installs packages, it does not search them.
 * version   terms joined by ',' (and) and '|' (or); a term is an optional
 *           operator (== != <= >= ~= < > =) and a version of letters,
 *           digits and . * + _ - (plus '!' as the epoch mark, "1!2.0"),
 *           starting with a letter, digit or '*'. Parentheses are not
 *           accepted. The version follows the name directly when it starts
 *           with an operator, or after exactly one space.
 * build     letters, digits and _ . * + -, not starting with '-'; after the
 *           version, separated by exactly one space or by '='.
 * brackets  at the very end; "key=value" pairs separated by ',' and at
 *           most one space after it. Keys are [a-z_][a-z0-9_]*, each at most
 *           once. Values are bare (ending at ',' or ']') or wrapped in '...'
 *           or "..." (quotes are only allowed as these delimiters, and a
 *           quoted value may contain ','). Values are checked per key:
 *           version and build as above, build_number as an optional
 *           operator and digits, channel as above, subdir [a-z0-9_-],
 *           md5 32 and sha256 64 hex digits, url an https URL, name and
 *           namespace as above, fn a file name (no '/'); any other key
 *           (license, features, track_features...) letters, digits and
 *           . _ * + ! -. Spaces inside values are not accepted.
 *           A key that repeats a field given before '[' (version, build,
 *           name, namespace, subdir, channel - compared with its subdir, as
 *           written) must have the same value.
 *
 * Rejected: shell metacharacters (; & $ ` ( ) \ # and '|' '<' '>' outside a
 * version), quotes other than bracket delimiters, spaces other than the
 * separators above, control bytes, newlines, non-ASCII bytes, a leading
 * '-', the empty string, more than KILN_CONDA_MAX_LEN bytes, and anything
 * else outside the grammar.
 *
 * Fields hold the text as written: no normalisation ("=1.17" stays "=1.17",
 * not conda's "1.17.*"); kiln hands the original string to the solver.
 */
#ifndef KILN_SPEC_CONDA_H
#define KILN_SPEC_CONDA_H

#include "kiln/error.h"
#include "util/strv.h"

/* Longest spec accepted, in bytes. */
#define KILN_CONDA_MAX_LEN 1024

/* Every string is owned by the struct; kiln_conda_spec_release() frees them. */
struct kiln_conda_spec {
    char *channel;         /* without the subdir, or NULL */
    char *subdir;          /* or NULL */
    char *ns;              /* namespace, or NULL */
    char *name;            /* never NULL after a successful parse */
    char *version;         /* with its operators, e.g. ">=1.11,<2", or NULL */
    char *build;           /* or NULL */
    struct kiln_strv keys; /* bracket "key=value" pairs in order, values unquoted */
};

#define KILN_CONDA_SPEC_INIT                                                                       \
    {                                                                                              \
        NULL, NULL, NULL, NULL, NULL, NULL, KILN_STRV_INIT                                         \
    }

/*
 * Parse `s` (NUL-terminated). On success overwrites *ret (which need not be
 * initialised and is not released first; the caller releases it with
 * kiln_conda_spec_release()) and returns 0; `ret` may be NULL to only check.
 * On failure returns -KILN_EINVAL, leaves *ret untouched and sets *err to a
 * message saying what is wrong and where, with a 0-based byte offset, e.g.
 * "unexpected '$' at offset 6", without repeating the input.
 */
int kiln_conda_spec_parse(const char *s, struct kiln_conda_spec *ret, struct kiln_error **err);

/* Free the contents and reset *c to KILN_CONDA_SPEC_INIT; NULL is fine. */
void kiln_conda_spec_release(struct kiln_conda_spec *c);

#endif
