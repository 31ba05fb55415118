/*
 * Image references, by the grammar of the distribution project's
 * `reference` package:
 *
 *   reference  := name [ ":" tag ] [ "@" digest ]
 *   name       := [domain '/'] path-component ['/' path-component]*
 *   domain     := host [':' port]   (a first component is a domain when it
 *                 has a '.' or a ':', or is "localhost", or has upper case)
 *   host       := domain-component ('.' domain-component)* | '[' IPv6 ']'
 *   domain-component := [a-zA-Z0-9] | [a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]
 *   path-comp  := [a-z0-9]+ ((\.|_|__|-+) [a-z0-9]+)*
 *   tag        := [\w][\w.-]{0,127}
 *   digest     := algorithm ':' encoded (sha256: 64 lower-case hex, sha512: 128)
 *
 * The name is at most 255 characters. Normalisation follows the docker
 * tools: no domain -> "docker.io", "index.docker.io" -> "docker.io", a
 * single docker.io component gets "library/", neither tag nor digest -> tag
 * "latest".
 *
 * Where kiln is stricter than distribution:
 *   - a port is 1-5 digits with a value in 1-65535;
 *   - an IPv6 literal must be a real address (inet_pton), not any [0-9a-f:]+;
 *   - digests are sha256 or sha512 only; another well-formed algorithm is
 *     refused as "unsupported digest algorithm";
 *   - whitespace, control and non-ASCII bytes, and the shell metacharacters
 *     ; & | $ ` ( ) < > \ " ' * ? ! { } ~ # are refused up front, naming the
 *     offset;
 *   - the 255-character limit applies to the whole name (domain/path), and
 *     for a normalised reference to the name after "docker.io/library/" is
 *     filled in, so that every result parses again.
 * The split of domain and path uses docker's rule above in both the raw and
 * the normalised parse: kiln_ref_parse("library/ubuntu") has no domain.
 * "UPPER/x" is valid, with domain "UPPER" (as in distribution), while
 * "Ubuntu" and "host/Ubuntu" are refused: "repository name must be lowercase".
 */
#ifndef KILN_OCI_REFERENCE_H
#define KILN_OCI_REFERENCE_H

#include <stdbool.h>

#include "kiln/error.h"

/* Longest input looked at; anything longer is refused before parsing. */
#define KILN_REF_MAX_LEN 4096

/* All strings are owned by the struct; kiln_ref_release() frees them. */
struct kiln_ref {
    /* "docker.io", "localhost:5000", "[::1]:5000"; NULL when not given (unnormalised) */
    char *domain;
    char *path;   /* "library/ubuntu", "jupyter/base-notebook" */
    char *tag;    /* or NULL */
    char *digest; /* "sha256:<hex>", or NULL */
};

#define KILN_REF_INIT                                                                              \
    {                                                                                              \
        NULL, NULL, NULL, NULL                                                                     \
    }

/*
 * Parse `s` as written (no defaults filled in). Returns 0 and fills *ret
 * (may be NULL to only check; written only on success, overwritten without
 * being released first), or -KILN_EINVAL with *err naming
 * the problem ("invalid tag 'a+b': ...", "repository name must be
 * lowercase", "unsupported digest algorithm 'md5'", ...). A NULL `s` is an
 * empty reference. kiln_ref_string() of the result gives `s` back exactly.
 */
int kiln_ref_parse(const char *s, struct kiln_ref *ret, struct kiln_error **err);

/*
 * Parse and normalise: domain, "library/" and tag "latest" filled in as docker
 * does; a digest-only reference gets no tag. Also refuses, as docker does, a
 * bare 64-hex string (an image id, not a name). Same contract as
 * kiln_ref_parse(); the result always has a domain, and parsing its string
 * again (raw or normalised) gives the same reference.
 */
int kiln_ref_parse_normalized(const char *s, struct kiln_ref *ret, struct kiln_error **err);

/* "domain/path:tag@digest" with the parts present; the caller frees it. */
char *kiln_ref_string(const struct kiln_ref *r);

/* "domain/path" (or "path" when no domain); the caller frees it. */
char *kiln_ref_repository(const struct kiln_ref *r);

/*
 * docker's short form: "docker.io/library/ubuntu:latest" -> "ubuntu:latest",
 * "docker.io/jupyter/base-notebook:x" -> "jupyter/base-notebook:x"; other
 * domains are kept. Tag and digest are kept as they are. The domain is kept
 * too when dropping it would change the meaning (a first path component
 * with a '.', or "localhost"), so kiln_ref_parse_normalized() of the result
 * always gives back the same reference. The caller frees it.
 */
char *kiln_ref_familiar(const struct kiln_ref *r);

/*
 * The host to talk to for a domain: "docker.io" (and "index.docker.io", and
 * no domain at all) -> "registry-1.docker.io", everything else unchanged
 * (with its port). Static or r-owned storage: do not free.
 */
const char *kiln_ref_registry_host(const struct kiln_ref *r);

/*
 * True when the domain is a loopback host, with any port: "localhost" (any
 * case), a canonical dotted quad in 127.0.0.0/8 ("127.0.0.1", not
 * "127.1" nor "127.0.0.01", which a resolver may not read as an address),
 * or an IPv6 literal equal to ::1. False without a domain.
 */
bool kiln_ref_is_loopback(const struct kiln_ref *r);

/* Free the strings and reset to KILN_REF_INIT; NULL is fine. */
void kiln_ref_release(struct kiln_ref *r);

#endif
