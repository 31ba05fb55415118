/*
 * pip requirements: the PEP 508 grammar, as kiln accepts it in a spec.
 *
 * Accepted: a distribution name (letters, digits, '-', '_', '.'; starts and
 * ends alphanumeric), optional extras ("pandas[all,sql]"), then either a
 * version specifier list (">=1.17,<2", "~=1.4", "===1.0", "==1.*", with or
 * without parentheses) or a URL ("name @ https://host/x.whl" - https only),
 * then an optional environment marker ("; python_version < '3.13'") parsed
 * strictly by PEP 508's marker grammar. Spaces are allowed where PEP 508
 * allows whitespace (a tab is not: it is a control byte). A marker after a
 * URL needs a space before its ';', as PEP 508 says.
 *
 * Rejected: pip options ("-e", "--index-url ..."), local paths and file:
 * URLs, names or versions ending like an archive ("x.whl", "x==1.tar.gz",
 * which pip would look for as a local file), non-https URLs, URLs holding
 * quotes, spaces or shell metacharacters, shell metacharacters, quotes,
 * control bytes, non-ASCII bytes and newlines anywhere outside a marker's
 * quoted strings, and anything else outside the grammar. Versions hold
 * [A-Za-z0-9._+!-], start and end alphanumeric, and may end in ".*" only
 * after "==" or "!=". Inside a marker's quoted string any printable ASCII
 * but a backslash or either quote is allowed, including shell
 * metacharacters: callers must still quote a requirement for a shell.
 */
#ifndef KILN_SPEC_PIP_H
#define KILN_SPEC_PIP_H

#include "kiln/error.h"
#include "util/strv.h"

/* Longest requirement string accepted, in bytes. */
#define KILN_PIP_MAX_LEN 4096

struct kiln_pip_req {
    char *name;              /* as written */
    struct kiln_strv extras; /* as written, in order */
    char *specifier;         /* e.g. ">=1.17,<2" without spaces or parens, or NULL */
    char *url;               /* the https URL after '@', or NULL */
    char *marker;            /* the marker text after ';', trimmed, or NULL */
};

#define KILN_PIP_REQ_INIT                                                                          \
    {                                                                                              \
        NULL, KILN_STRV_INIT, NULL, NULL, NULL                                                     \
    }

/*
 * Parse `s` (NUL-terminated). On success fills *ret (which the caller
 * releases with kiln_pip_req_release()) and returns 0. On failure returns
 * -KILN_EINVAL, leaves *ret untouched and sets *err to a message saying
 * what is wrong and where, e.g. "unexpected ';' at offset 5" (a 0-based
 * byte offset into `s`), without repeating the whole input. `ret` may be
 * NULL to only check; a NULL `s` is an empty requirement.
 */
int kiln_pip_req_parse(const char *s, struct kiln_pip_req *ret, struct kiln_error **err);

/* Free the fields and reset *r to KILN_PIP_REQ_INIT; NULL is fine. */
void kiln_pip_req_release(struct kiln_pip_req *r);

#endif
