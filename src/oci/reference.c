#include "util/common.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include "oci/reference.h"

#define NAME_MAX_LEN 255
#define TAG_MAX_LEN  128
#define PORT_MAX     65535

#define DEFAULT_DOMAIN  "docker.io"
#define LEGACY_DOMAIN   "index.docker.io"
#define DEFAULT_HOST    "registry-1.docker.io"
#define OFFICIAL_PREFIX "library/"
#define DEFAULT_TAG     "latest"

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static bool is_lower(char c)
{
    return c >= 'a' && c <= 'z';
}

static bool is_upper(char c)
{
    return c >= 'A' && c <= 'Z';
}

static bool is_alnum(char c)
{
    return is_digit(c) || is_lower(c) || is_upper(c);
}

static bool is_word(char c)
{
    return is_alnum(c) || c == '_';
}

static bool is_lower_hex(char c)
{
    return is_digit(c) || (c >= 'a' && c <= 'f');
}

static bool is_hex(char c)
{
    return is_lower_hex(c) || (c >= 'A' && c <= 'F');
}

static bool mem_has(const char *s, size_t n, char c)
{
    return n > 0 && memchr(s, c, n) != NULL;
}

static bool mem_eq(const char *s, size_t n, const char *lit)
{
    return strlen(lit) == n && memcmp(s, lit, n) == 0;
}

static bool mem_eq_nocase(const char *s, size_t n, const char *lit)
{
    if (strlen(lit) != n)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = is_upper(s[i]) ? (char)(s[i] - 'A' + 'a') : s[i];
        if (c != lit[i])
            return false;
    }
    return true;
}

/*
 * Bytes that have no place in a reference and that would be dangerous if a
 * reference ever reached a shell or a file name. '[' and ']' are missing on
 * purpose: they bracket IPv6 literals.
 */
static bool is_shell_meta(char c)
{
    return c != '\0' && strchr(";&|$`()<>\\\"'*?!{}~#", c) != NULL;
}

/* Reject what can never be part of a reference, with the offending offset. */
static int check_bytes(const char *s, size_t len, struct kiln_error **err)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f')
            return kiln_error_set(err, KILN_EINVAL, 0,
                                  "invalid reference: whitespace at offset %zu", i);
        if (c < 0x20 || c == 0x7f)
            return kiln_error_set(err, KILN_EINVAL, 0,
                                  "invalid reference: control byte 0x%02x at offset %zu", c, i);
        if (c >= 0x80)
            return kiln_error_set(err, KILN_EINVAL, 0,
                                  "invalid reference: non-ascii byte 0x%02x at offset %zu", c, i);
        if (is_shell_meta((char)c))
            return kiln_error_set(err, KILN_EINVAL, 0,
                                  "invalid reference: shell metacharacter '%c' at offset %zu",
                                  (char)c, i);
    }
    return 0;
}

/* port := [0-9]{1,5}, value 1-65535 (stricter than distribution's [0-9]+) */
static int check_port(const char *p, size_t n, const char *dom, size_t dn, struct kiln_error **err)
{
    unsigned long v = 0;
    if (n == 0)
        return kiln_error_set(err, KILN_EINVAL, 0, "invalid domain '%.*s': empty port", (int)dn,
                              dom);
    for (size_t i = 0; i < n; i++) {
        if (!is_digit(p[i]))
            return kiln_error_set(err, KILN_EINVAL, 0,
                                  "invalid domain '%.*s': port '%.*s' must be digits only", (int)dn,
                                  dom, (int)n, p);
        if (i < 5)
            v = v * 10 + (unsigned long)(p[i] - '0');
    }
    if (n > 5 || v == 0 || v > PORT_MAX)
        return kiln_error_set(err, KILN_EINVAL, 0,
                              "invalid domain '%.*s': port '%.*s' is not in 1-65535", (int)dn, dom,
                              (int)n, p);
    return 0;
}

/* '[' [0-9a-fA-F:]+ ']', and it must really be an IPv6 address. */
static int check_ipv6(const char *s, size_t n, const char *dom, size_t dn, struct kiln_error **err)
{
    char tmp[INET6_ADDRSTRLEN + 1];
    struct in6_addr a;
    bool chars_ok = n > 2 && s[n - 1] == ']';
    for (size_t i = 1; chars_ok && i + 1 < n; i++)
        chars_ok = is_hex(s[i]) || s[i] == ':';
    if (!chars_ok || n - 2 >= sizeof(tmp))
        return kiln_error_set(err, KILN_EINVAL, 0, "invalid domain '%.*s': bad IPv6 literal",
                              (int)dn, dom);
    memcpy(tmp, s + 1, n - 2);
    tmp[n - 2] = '\0';
    if (inet_pton(AF_INET6, tmp, &a) != 1)
        return kiln_error_set(err, KILN_EINVAL, 0, "invalid domain '%.*s': bad IPv6 literal",
                              (int)dn, dom);
    return 0;
}

/* domain-component ('.' domain-component)*, component = [a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])? */
static int check_hostname(const char *s, size_t n, const char *dom, size_t dn,
                          struct kiln_error **err)
{
    size_t start = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i < n && s[i] != '.') {
            if (!is_alnum(s[i]) && s[i] != '-')
                return kiln_error_set(err, KILN_EINVAL, 0,
                                      "invalid domain '%.*s': invalid character '%c'", (int)dn, dom,
                                      s[i]);
            continue;
        }
        if (i == start)
            return kiln_error_set(err, KILN_EINVAL, 0, "invalid domain '%.*s': empty component",
                                  (int)dn, dom);
        if (s[start] == '-' || s[i - 1] == '-')
            return kiln_error_set(err, KILN_EINVAL, 0,
                                  "invalid domain '%.*s': a component must not start or end "
                                  "with '-'",
                                  (int)dn, dom);
        start = i + 1;
    }
    return 0;
}

/* domain := host [':' port], host := hostname | '[' IPv6 ']' */
static int check_domain(const char *d, size_t n, struct kiln_error **err)
{
    size_t hn;
    int r;

    if (n > 0 && d[0] == '[') {
        const char *close = memchr(d, ']', n);
        if (!close)
            return kiln_error_set(err, KILN_EINVAL, 0, "invalid domain '%.*s': missing ']'", (int)n,
                                  d);
        hn = (size_t)(close - d) + 1;
        r = check_ipv6(d, hn, d, n, err);
    } else {
        const char *colon = memchr(d, ':', n);
        hn = colon ? (size_t)(colon - d) : n;
        r = check_hostname(d, hn, d, n, err);
    }
    if (r < 0)
        return r;
    if (hn == n)
        return 0;
    if (d[hn] != ':')
        return kiln_error_set(err, KILN_EINVAL, 0,
                              "invalid domain '%.*s': unexpected '%c' after the host", (int)n, d,
                              d[hn]);
    return check_port(d + hn + 1, n - hn - 1, d, n, err);
}

/*
 * path-component := [a-z0-9]+ (separator [a-z0-9]+)*, separator := [_.]|__|[-]+
 * Upper-case letters are checked as if lower case, so that a name that is
 * only wrong by its case gets the message saying so.
 */
static int check_path_component(const char *c, size_t n, bool *saw_upper, struct kiln_error **err)
{
    for (size_t i = 0; i < n; i++) {
        if (is_upper(c[i]))
            *saw_upper = true;
        else if (!is_alnum(c[i]) && c[i] != '.' && c[i] != '_' && c[i] != '-')
            return kiln_error_set(err, KILN_EINVAL, 0,
                                  "invalid repository name component '%.*s': invalid character "
                                  "'%c'",
                                  (int)n, c, c[i]);
    }
    if (!is_alnum(c[0]))
        return kiln_error_set(err, KILN_EINVAL, 0,
                              "invalid repository name component '%.*s': must start with a letter "
                              "or digit",
                              (int)n, c);
    if (!is_alnum(c[n - 1]))
        return kiln_error_set(err, KILN_EINVAL, 0,
                              "invalid repository name component '%.*s': must end with a letter "
                              "or digit",
                              (int)n, c);
    for (size_t i = 0; i < n;) {
        if (is_alnum(c[i])) {
            i++;
            continue;
        }
        size_t j = i;
        while (j < n && !is_alnum(c[j]))
            j++;
        const char *sep = c + i;
        size_t sn = j - i;
        bool dashes = true;
        for (size_t k = 0; k < sn; k++)
            dashes = dashes && sep[k] == '-';
        if (!(dashes || mem_eq(sep, sn, ".") || mem_eq(sep, sn, "_") || mem_eq(sep, sn, "__")))
            return kiln_error_set(err, KILN_EINVAL, 0,
                                  "invalid repository name component '%.*s': invalid separator "
                                  "'%.*s'",
                                  (int)n, c, (int)sn, sep);
        i = j;
    }
    return 0;
}

/* path := path-component ('/' path-component)* */
static int check_path(const char *p, size_t n, struct kiln_error **err)
{
    bool saw_upper = false;
    size_t start = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i < n && p[i] != '/')
            continue;
        if (i == start)
            return kiln_error_set(err, KILN_EINVAL, 0,
                                  "invalid repository name '%.*s': empty path component", (int)n,
                                  p);
        int r = check_path_component(p + start, i - start, &saw_upper, err);
        if (r < 0)
            return r;
        start = i + 1;
    }
    if (saw_upper)
        return kiln_error_set(err, KILN_EINVAL, 0,
                              "invalid repository name '%.*s': repository name must be lowercase",
                              (int)n, p);
    return 0;
}

/* tag := [\w][\w.-]{0,127} */
static int check_tag(const char *t, size_t n, struct kiln_error **err)
{
    if (n == 0)
        return kiln_error_set(err, KILN_EINVAL, 0, "invalid tag '': empty after ':'");
    if (n > TAG_MAX_LEN)
        return kiln_error_set(err, KILN_EINVAL, 0, "invalid tag '%.*s': longer than %d characters",
                              (int)n, t, TAG_MAX_LEN);
    if (!is_word(t[0]))
        return kiln_error_set(err, KILN_EINVAL, 0,
                              "invalid tag '%.*s': must start with a letter, digit or '_'", (int)n,
                              t);
    for (size_t i = 1; i < n; i++)
        if (!is_word(t[i]) && t[i] != '.' && t[i] != '-')
            return kiln_error_set(err, KILN_EINVAL, 0, "invalid tag '%.*s': invalid character '%c'",
                                  (int)n, t, t[i]);
    return 0;
}

/*
 * digest := algorithm ':' encoded
 * algorithm := [A-Za-z][A-Za-z0-9]* ([+._-] [A-Za-z][A-Za-z0-9]*)*
 * encoded := [a-zA-Z0-9=_-]{32,}
 * kiln takes sha256 (64 lower-case hex) and sha512 (128) only.
 */
static int check_digest(const char *d, size_t n, struct kiln_error **err)
{
    if (n == 0)
        return kiln_error_set(err, KILN_EINVAL, 0, "invalid digest '': empty after '@'");
    const char *colon = memchr(d, ':', n);
    if (!colon)
        return kiln_error_set(err, KILN_EINVAL, 0,
                              "invalid digest '%.*s': missing ':' after the algorithm", (int)n, d);
    size_t an = (size_t)(colon - d);
    const char *enc = colon + 1;
    size_t en = n - an - 1;

    bool alg_ok = an > 0;
    bool want_letter = true;
    for (size_t i = 0; alg_ok && i < an; i++) {
        char c = d[i];
        if (want_letter) {
            alg_ok = is_lower(c) || is_upper(c);
            want_letter = false;
        } else if (c == '+' || c == '.' || c == '_' || c == '-') {
            want_letter = true;
        } else {
            alg_ok = is_alnum(c);
        }
    }
    if (!alg_ok || want_letter)
        return kiln_error_set(err, KILN_EINVAL, 0, "invalid digest '%.*s': bad algorithm '%.*s'",
                              (int)n, d, (int)an, d);

    size_t want = 0;
    if (mem_eq(d, an, "sha256"))
        want = 64;
    else if (mem_eq(d, an, "sha512"))
        want = 128;
    if (want) {
        bool hex_ok = en == want;
        for (size_t i = 0; hex_ok && i < en; i++)
            hex_ok = is_lower_hex(enc[i]);
        if (!hex_ok)
            return kiln_error_set(err, KILN_EINVAL, 0,
                                  "invalid digest '%.*s': %.*s needs %zu lower-case hex digits",
                                  (int)n, d, (int)an, d, want);
        return 0;
    }

    bool enc_ok = en >= 32;
    for (size_t i = 0; enc_ok && i < en; i++)
        enc_ok = is_alnum(enc[i]) || enc[i] == '=' || enc[i] == '_' || enc[i] == '-';
    if (!enc_ok)
        return kiln_error_set(err, KILN_EINVAL, 0, "invalid digest '%.*s'", (int)n, d);
    return kiln_error_set(err, KILN_EINVAL, 0, "unsupported digest algorithm '%.*s'", (int)an, d);
}

/*
 * docker's rule for the first of several components: a domain when it has a
 * '.' or a ':', is "localhost", or has upper case (which a path may not). A
 * leading '[' (never valid in a path) counts too, for a better message.
 */
static bool looks_like_domain(const char *c, size_t n)
{
    if (n == 0)
        return false;
    if (mem_has(c, n, '.') || mem_has(c, n, ':') || mem_eq(c, n, "localhost") || c[0] == '[')
        return true;
    for (size_t i = 0; i < n; i++)
        if (is_upper(c[i]))
            return true;
    return false;
}

int kiln_ref_parse(const char *s, struct kiln_ref *ret, struct kiln_error **err)
{
    if (!s || !*s)
        return kiln_error_set(err, KILN_EINVAL, 0, "invalid reference: empty reference");
    size_t len = strnlen(s, KILN_REF_MAX_LEN + 1);
    if (len > KILN_REF_MAX_LEN)
        return kiln_error_set(err, KILN_EINVAL, 0, "invalid reference: longer than %d bytes",
                              KILN_REF_MAX_LEN);
    int r = check_bytes(s, len, err);
    if (r < 0)
        return r;

    /* Neither name nor tag may hold '@', so the first one starts the digest. */
    const char *at = memchr(s, '@', len);
    size_t nt_len = at ? (size_t)(at - s) : len;
    const char *digest = at ? at + 1 : NULL;
    size_t digest_len = at ? len - nt_len - 1 : 0;

    /* The tag starts at the first ':' after the last '/': a domain may hold ':' too. */
    size_t last_slash = 0;
    bool has_slash = false;
    for (size_t i = 0; i < nt_len; i++)
        if (s[i] == '/') {
            last_slash = i;
            has_slash = true;
        }
    const char *colon =
        memchr(s + (has_slash ? last_slash : 0), ':', nt_len - (has_slash ? last_slash : 0));
    size_t name_len = colon ? (size_t)(colon - s) : nt_len;
    const char *tag = colon ? colon + 1 : NULL;
    size_t tag_len = colon ? nt_len - name_len - 1 : 0;

    if (name_len == 0)
        return kiln_error_set(err, KILN_EINVAL, 0, "invalid reference: missing repository name");
    if (s[0] == '/')
        return kiln_error_set(err, KILN_EINVAL, 0,
                              "invalid repository name '%.*s': must not start with '/'",
                              (int)name_len, s);
    if (s[name_len - 1] == '/')
        return kiln_error_set(err, KILN_EINVAL, 0,
                              "invalid repository name '%.*s': must not end with '/'",
                              (int)name_len, s);
    if (!has_slash && s[0] == '[')
        return kiln_error_set(err, KILN_EINVAL, 0,
                              "invalid reference '%.*s': a domain must be followed by '/' and a "
                              "repository path",
                              (int)nt_len, s);
    if (name_len > NAME_MAX_LEN)
        return kiln_error_set(err, KILN_EINVAL, 0,
                              "repository name must not be more than %d characters", NAME_MAX_LEN);

    const char *slash = memchr(s, '/', name_len);
    size_t dom_len = 0;
    if (slash && looks_like_domain(s, (size_t)(slash - s))) {
        dom_len = (size_t)(slash - s);
        r = check_domain(s, dom_len, err);
        if (r < 0)
            return r;
    }
    const char *path = dom_len ? s + dom_len + 1 : s;
    size_t path_len = dom_len ? name_len - dom_len - 1 : name_len;
    r = check_path(path, path_len, err);
    if (r < 0)
        return r;
    if (tag) {
        r = check_tag(tag, tag_len, err);
        if (r < 0)
            return r;
    }
    if (digest) {
        r = check_digest(digest, digest_len, err);
        if (r < 0)
            return r;
    }

    if (ret) {
        *ret = (struct kiln_ref)KILN_REF_INIT;
        ret->domain = dom_len ? kiln_xstrndup(s, dom_len) : NULL;
        ret->path = kiln_xstrndup(path, path_len);
        ret->tag = tag ? kiln_xstrndup(tag, tag_len) : NULL;
        ret->digest = digest ? kiln_xstrndup(digest, digest_len) : NULL;
    }
    return 0;
}

static bool is_identifier(const char *s)
{
    size_t i = 0;
    for (; s[i]; i++)
        if (!is_lower_hex(s[i]))
            return false;
    return i == 64;
}

int kiln_ref_parse_normalized(const char *s, struct kiln_ref *ret, struct kiln_error **err)
{
    _cleanup_(kiln_ref_release) struct kiln_ref r = KILN_REF_INIT;
    int k = kiln_ref_parse(s, &r, err);
    if (k < 0)
        return k;

    /* As docker: a bare 64-hex string is an image id, not a name. */
    if (!r.domain && !r.tag && !r.digest && is_identifier(r.path))
        return kiln_error_set(err, KILN_EINVAL, 0,
                              "invalid repository name '%s': cannot be a 64-character hexadecimal "
                              "string",
                              r.path);

    if (!r.domain || strcmp(r.domain, LEGACY_DOMAIN) == 0) {
        free(r.domain);
        r.domain = kiln_xstrdup(DEFAULT_DOMAIN);
    }
    if (strcmp(r.domain, DEFAULT_DOMAIN) == 0 && !strchr(r.path, '/')) {
        char *p = kiln_xasprintf(OFFICIAL_PREFIX "%s", r.path);
        free(r.path);
        r.path = p;
    }
    if (!r.tag && !r.digest)
        r.tag = kiln_xstrdup(DEFAULT_TAG);

    /* The filled-in name must still parse, so the limit holds for it too. */
    if (strlen(r.domain) + 1 + strlen(r.path) > NAME_MAX_LEN)
        return kiln_error_set(err, KILN_EINVAL, 0,
                              "repository name must not be more than %d characters", NAME_MAX_LEN);

    if (ret) {
        *ret = r;
        r = (struct kiln_ref)KILN_REF_INIT;
    }
    return 0;
}

static char *format_ref(const char *domain, const char *path, const char *tag, const char *digest)
{
    return kiln_xasprintf("%s%s%s%s%s%s%s", domain ? domain : "", domain ? "/" : "",
                          path ? path : "", tag ? ":" : "", tag ? tag : "", digest ? "@" : "",
                          digest ? digest : "");
}

char *kiln_ref_string(const struct kiln_ref *r)
{
    return format_ref(r->domain, r->path, r->tag, r->digest);
}

char *kiln_ref_repository(const struct kiln_ref *r)
{
    return kiln_xasprintf("%s%s%s", r->domain ? r->domain : "", r->domain ? "/" : "",
                          r->path ? r->path : "");
}

/* Would a parse of this name without a domain take its first component for one? */
static bool first_component_is_domain(const char *path)
{
    const char *slash = strchr(path, '/');
    return slash && looks_like_domain(path, (size_t)(slash - path));
}

char *kiln_ref_familiar(const struct kiln_ref *r)
{
    const char *path = r->path ? r->path : "";
    bool hub = !r->domain || strcmp(r->domain, DEFAULT_DOMAIN) == 0 ||
               strcmp(r->domain, LEGACY_DOMAIN) == 0;
    const char *name = path;

    if (hub && strncmp(path, OFFICIAL_PREFIX, strlen(OFFICIAL_PREFIX)) == 0) {
        const char *rest = path + strlen(OFFICIAL_PREFIX);
        /* "library/<64 hex>" alone would read back as an image id */
        if (!strchr(rest, '/') && !(!r->tag && !r->digest && is_identifier(rest)))
            name = rest;
    }
    /* Keep the domain when dropping it would change what the name means. */
    if (!hub || first_component_is_domain(name))
        return format_ref(r->domain ? r->domain : DEFAULT_DOMAIN, path, r->tag, r->digest);
    return format_ref(NULL, name, r->tag, r->digest);
}

const char *kiln_ref_registry_host(const struct kiln_ref *r)
{
    if (!r->domain || mem_eq_nocase(r->domain, strlen(r->domain), DEFAULT_DOMAIN) ||
        mem_eq_nocase(r->domain, strlen(r->domain), LEGACY_DOMAIN))
        return DEFAULT_HOST;
    return r->domain;
}

/* A canonical dotted quad in 127.0.0.0/8: "127.0.0.1", not "127.0.0.01" nor "127.1". */
static bool is_loopback_ipv4(const char *h, size_t n)
{
    if (n < 4 || memcmp(h, "127.", 4) != 0)
        return false;
    size_t i = 4;
    for (int octet = 0; octet < 3; octet++) {
        size_t start = i;
        unsigned v = 0;
        while (i < n && is_digit(h[i]) && i - start < 3)
            v = v * 10 + (unsigned)(h[i++] - '0');
        size_t digits = i - start;
        if (digits == 0 || v > 255 || (digits > 1 && h[start] == '0'))
            return false;
        if (octet < 2) {
            if (i >= n || h[i] != '.')
                return false;
            i++;
        }
    }
    return i == n;
}

bool kiln_ref_is_loopback(const struct kiln_ref *r)
{
    if (!r->domain)
        return false;
    const char *d = r->domain;
    size_t n = strlen(d);

    if (d[0] == '[') {
        const char *close = strchr(d, ']');
        char tmp[INET6_ADDRSTRLEN + 1];
        struct in6_addr a;
        size_t hn = close ? (size_t)(close - d) - 1 : 0;
        if (!close || hn == 0 || hn >= sizeof(tmp))
            return false;
        memcpy(tmp, d + 1, hn);
        tmp[hn] = '\0';
        return inet_pton(AF_INET6, tmp, &a) == 1 && IN6_IS_ADDR_LOOPBACK(&a);
    }
    const char *colon = strchr(d, ':');
    size_t hn = colon ? (size_t)(colon - d) : n;
    return mem_eq_nocase(d, hn, "localhost") || is_loopback_ipv4(d, hn);
}

void kiln_ref_release(struct kiln_ref *r)
{
    if (!r)
        return;
    free(r->domain);
    free(r->path);
    free(r->tag);
    free(r->digest);
    *r = (struct kiln_ref)KILN_REF_INIT;
}
