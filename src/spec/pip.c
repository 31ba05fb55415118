#include "util/common.h"
#include "spec/ascii.h"
#include "spec/pip.h"
#include "util/buf.h"

/*
 * A strict recursive-descent parser for the subset of PEP 508 described in
 * pip.h. Only ' ' counts as whitespace (PEP 508 also allows '\t'; kiln
 * rejects every control byte). Offsets in messages are 0-based byte offsets
 * into the string as given, leading spaces included.
 */

/* Deepest parenthesis nesting accepted in a marker. */
#define MARKER_MAX_DEPTH 32

/* Longest option or word quoted back in a message. */
#define QUOTE_MAX 32

struct parser {
    const char *s;
    size_t len;
    size_t i;
    unsigned depth;
    struct kiln_error **err;
};

static const char *const marker_vars[] = {
    "python_version",      "python_full_version",    "os_name",
    "sys_platform",        "platform_release",       "platform_system",
    "platform_version",    "platform_machine",       "platform_python_implementation",
    "implementation_name", "implementation_version", "extra",
};

/* pip treats a requirement ending like an archive as a file name. */
static const char *const archive_suffixes[] = {
    ".whl", ".zip",    ".tar", ".tar.gz", ".tgz",    ".tar.bz2",
    ".tbz", ".tar.xz", ".txz", ".tlz",    ".tar.lz", ".tar.lzma",
};

/* strchr() that does not match the terminating NUL */
static bool in_set(char c, const char *set)
{
    return c != '\0' && strchr(set, c) != NULL;
}

static bool is_alpha(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static bool is_alnum(char c)
{
    return is_alpha(c) || is_digit(c);
}

static bool is_name_char(char c)
{
    return is_alnum(c) || c == '-' || c == '_' || c == '.';
}

/* A character of a marker word (variable or keyword), for word boundaries. */
static bool is_word_char(char c)
{
    return is_alnum(c) || c == '_' || c == '.';
}

static bool is_version_char(char c)
{
    return is_alnum(c) || in_set(c, "-_.*+!");
}

static bool is_hex(char c)
{
    return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/*
 * URL characters: RFC 3986 unreserved, plus the gen-delims and sub-delims
 * that carry no meaning to a shell: no quotes, '$', '&', ';', '(', ')',
 * '*', '!', '[', ']' (IPv6 literals are not supported), and '%' only as
 * an escape.
 */
static bool is_url_char(char c)
{
    return is_alnum(c) || in_set(c, "-._~:/?#@+,=%");
}

static char lower(char c)
{
    return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

static bool has_prefix_icase(const char *s, size_t len, const char *prefix)
{
    size_t n = strlen(prefix);
    if (len < n)
        return false;
    for (size_t k = 0; k < n; k++)
        if (lower(s[k]) != prefix[k])
            return false;
    return true;
}

static bool has_suffix_icase(const char *s, size_t len, const char *suffix)
{
    size_t n = strlen(suffix);
    return len >= n && has_prefix_icase(s + len - n, n, suffix);
}

static char peek(const struct parser *p)
{
    return p->i < p->len ? p->s[p->i] : '\0';
}

static bool at_end(const struct parser *p)
{
    return p->i >= p->len;
}

static size_t skip_ws(struct parser *p)
{
    size_t start = p->i;
    while (peek(p) == ' ')
        p->i++;
    return p->i - start;
}

/* Length of the marker word starting at the current position. */
static size_t word_len(const struct parser *p)
{
    size_t n = 0;
    while (p->i + n < p->len && is_word_char(p->s[p->i + n]))
        n++;
    return n;
}

static bool word_is(const struct parser *p, size_t n, const char *w)
{
    return n == strlen(w) && memcmp(p->s + p->i, w, n) == 0;
}

static int fail_unexpected_at(struct parser *p, size_t at)
{
    if (at >= p->len)
        return kiln_error_set(p->err, KILN_EINVAL, 0, "unexpected end of requirement at offset %zu",
                              at);
    return kiln_error_set(p->err, KILN_EINVAL, 0, "unexpected '%c' at offset %zu", p->s[at], at);
}

static int fail_unexpected(struct parser *p)
{
    return fail_unexpected_at(p, p->i);
}

static int fail_expected(struct parser *p, const char *what)
{
    return kiln_error_set(p->err, KILN_EINVAL, 0, "expected %s at offset %zu", what, p->i);
}

/* Control bytes and non-ASCII are refused everywhere, even in marker strings. */
static int check_bytes(struct parser *p)
{
    return kiln_spec_check_ascii(p->s, p->len, p->err);
}

/*
 * Friendlier messages for the things people try first: pip options, paths
 * and bare URLs. Called at the first non-space character.
 */
static int check_start(struct parser *p)
{
    const char *s = p->s + p->i;
    size_t len = p->len - p->i;

    if (s[0] == '-') {
        size_t n = 0;
        while (n < len && n < QUOTE_MAX && (s[n] == '-' || s[n] == '_' || is_alnum(s[n])))
            n++;
        return kiln_error_set(p->err, KILN_EINVAL, 0, "options such as '%.*s' are not allowed",
                              (int)n, s);
    }
    if (s[0] == '.' || s[0] == '/' || s[0] == '~' || has_prefix_icase(s, len, "file:"))
        return kiln_error_set(p->err, KILN_EINVAL, 0, "local paths are not allowed");

    /* "scheme:" at the start: a URL without a name in front */
    if (is_alpha(s[0])) {
        size_t n = 1;
        while (n < len && (is_alnum(s[n]) || s[n] == '+' || s[n] == '-' || s[n] == '.'))
            n++;
        if (has_prefix_icase(s + n, len - n, "://"))
            return kiln_error_set(p->err, KILN_EINVAL, 0,
                                  "a url must follow a name, as in 'name @ https://...'");
    }
    return 0;
}

/*
 * pip takes a requirement whose name, or whose text before the marker, ends
 * like an archive ("x.whl", "x==1.tar.gz") for a local file name, so such
 * a name or version could never reach an index anyway.
 */
static int check_archive(struct parser *p, size_t start, size_t n)
{
    for (size_t k = 0; k < KILN_ARRAY_SIZE(archive_suffixes); k++)
        if (has_suffix_icase(p->s + start, n, archive_suffixes[k]))
            return kiln_error_set(p->err, KILN_EINVAL, 0,
                                  "'%s' at offset %zu makes pip look for a local file; local "
                                  "paths are not allowed",
                                  archive_suffixes[k], start + n - strlen(archive_suffixes[k]));
    return 0;
}

/* identifier = letterOrDigit ( ('-' | '_' | '.')* letterOrDigit )* */
static int parse_identifier(struct parser *p, const char *what, size_t *ret_start, size_t *ret_len)
{
    size_t start = p->i;
    if (!is_alnum(peek(p)))
        return fail_expected(p, what);
    while (is_name_char(peek(p)))
        p->i++;
    /* the identifier ends at its last letter or digit; what follows is not grammar */
    size_t end = p->i;
    while (!is_alnum(p->s[end - 1]))
        end--;
    if (end != p->i)
        return fail_unexpected_at(p, end);
    *ret_start = start;
    *ret_len = end - start;
    return 0;
}

static int parse_name(struct parser *p, char **ret_name)
{
    size_t start, n;
    int r = parse_identifier(p, "a name", &start, &n);
    if (r < 0)
        return r;
    if (peek(p) == '/' || peek(p) == '\\')
        return kiln_error_set(p->err, KILN_EINVAL, 0, "local paths are not allowed");
    r = check_archive(p, start, n);
    if (r < 0)
        return r;
    *ret_name = kiln_xstrndup(p->s + start, n);
    return 0;
}

/* extras = '[' wsp* extras_list? wsp* ']'; the '[' is current */
static int parse_extras(struct parser *p, struct kiln_strv *extras)
{
    p->i++;
    skip_ws(p);
    if (peek(p) == ']') {
        p->i++;
        return 0;
    }
    for (;;) {
        size_t start, n;
        int r = parse_identifier(p, "an extra name", &start, &n);
        if (r < 0)
            return r;
        kiln_strv_push_take(extras, kiln_xstrndup(p->s + start, n));
        skip_ws(p);
        if (peek(p) == ']') {
            p->i++;
            return 0;
        }
        if (peek(p) != ',')
            return at_end(p) ? fail_expected(p, "',' or ']'") : fail_unexpected(p);
        p->i++;
        skip_ws(p);
    }
}

/* Length of the comparison operator at the current position, or 0. */
static size_t cmp_op_len(const struct parser *p)
{
    const char *s = p->s + p->i;
    size_t left = p->len - p->i;
    if (left >= 3 && memcmp(s, "===", 3) == 0)
        return 3;
    if (left >= 2 && s[1] == '=' && in_set(s[0], "=!<>~"))
        return 2;
    if (left >= 1 && (s[0] == '<' || s[0] == '>'))
        return 1;
    return 0;
}

/* version_one = version_cmp version wsp*, appended to `out` without spaces */
static int parse_version_one(struct parser *p, struct kiln_buf *out)
{
    skip_ws(p);
    size_t op_at = p->i, op_len = cmp_op_len(p);
    if (op_len == 0)
        return fail_expected(p, "a version operator (==, !=, <=, >=, <, >, ~=, ===)");
    p->i += op_len;
    skip_ws(p);

    size_t start = p->i;
    while (is_version_char(peek(p)))
        p->i++;
    size_t n = p->i - start;
    const char *v = p->s + start;
    if (n == 0)
        return fail_expected(p, "a version");
    if (!is_alnum(v[0]))
        return kiln_error_set(p->err, KILN_EINVAL, 0,
                              "a version must start with a letter or digit at offset %zu", start);

    /* '*' only as a trailing ".*" prefix match, which PEP 440 allows with == and != only */
    const char *star = memchr(v, '*', n);
    if (star) {
        bool prefix_op = op_len == 2 && (p->s[op_at] == '=' || p->s[op_at] == '!');
        if (!prefix_op || star != v + n - 1 || star[-1] != '.')
            return kiln_error_set(p->err, KILN_EINVAL, 0,
                                  "'*' is only allowed as a trailing '.*' after '==' or '!=' at "
                                  "offset %zu",
                                  start + (size_t)(star - v));
    } else if (!is_alnum(v[n - 1])) {
        return kiln_error_set(p->err, KILN_EINVAL, 0,
                              "a version must end with a letter or digit at offset %zu",
                              start + n - 1);
    }

    int r = check_archive(p, start, n);
    if (r < 0)
        return r;

    kiln_buf_add(out, p->s + op_at, op_len);
    kiln_buf_add(out, v, n);
    skip_ws(p);
    return 0;
}

/* versionspec = '(' version_many ')' | version_many */
static int parse_versionspec(struct parser *p, char **ret_spec)
{
    _cleanup_(kiln_buf_release) struct kiln_buf out = KILN_BUF_INIT;
    bool paren = peek(p) == '(';
    if (paren)
        p->i++;
    for (;;) {
        int r = parse_version_one(p, &out);
        if (r < 0)
            return r;
        if (peek(p) != ',')
            break;
        p->i++;
        kiln_buf_addch(&out, ',');
    }
    if (paren) {
        skip_ws(p);
        if (peek(p) != ')')
            return at_end(p) ? fail_expected(p, "')'") : fail_unexpected(p);
        p->i++;
    }
    /* the output is never longer than the capped input, so the buffer cannot fail */
    int r = kiln_buf_finish(&out, "specifier", p->err);
    if (r < 0)
        return r;
    *ret_spec = kiln_buf_detach(&out, NULL);
    return 0;
}

static int fail_url_char(struct parser *p, size_t at)
{
    if (p->s[at] == ';')
        return kiln_error_set(p->err, KILN_EINVAL, 0,
                              "unexpected ';' at offset %zu (a marker after a url needs a space "
                              "before ';')",
                              at);
    return kiln_error_set(p->err, KILN_EINVAL, 0, "unexpected '%c' in url at offset %zu", p->s[at],
                          at);
}

/*
 * authority = host [':' port] in s[from, to): a DNS name or IPv4 address as
 * host (no IPv6 literals, no escapes). A userinfo ("user:token@") is refused:
 * credentials in a spec would end up in logs, job records and image history.
 */
static int check_authority(struct parser *p, size_t from, size_t to)
{
    size_t end = from, at = 0, nat = 0;
    while (end < to && !in_set(p->s[end], "/?#")) {
        if (p->s[end] == '@') {
            at = end;
            nat++;
        }
        end++;
    }
    if (nat > 1)
        return fail_url_char(p, at);
    if (nat)
        return kiln_error_set(p->err, KILN_EINVAL, 0,
                              "credentials in a url are not allowed (offset %zu); configure the "
                              "index credentials in kiln instead",
                              from);
    size_t host = nat ? at + 1 : from;
    size_t k = host;
    while (k < end && (is_alnum(p->s[k]) || p->s[k] == '-' || p->s[k] == '.'))
        k++;
    if (k == host || !is_alnum(p->s[host]) || !is_alnum(p->s[k - 1]))
        return kiln_error_set(p->err, KILN_EINVAL, 0, "expected a host name at offset %zu", host);
    if (k < end && p->s[k] == ':') {
        size_t port = ++k;
        while (k < end && is_digit(p->s[k]))
            k++;
        if (k == port || k - port > 5)
            return kiln_error_set(p->err, KILN_EINVAL, 0, "expected a port at offset %zu", port);
    }
    if (k < end)
        return fail_url_char(p, k);
    return 0;
}

/* urlspec = '@' wsp* URI; the '@' is current. The URL ends at a space or the end. */
static int parse_url(struct parser *p, char **ret_url)
{
    p->i++;
    skip_ws(p);
    size_t start = p->i;
    while (!at_end(p) && peek(p) != ' ')
        p->i++;
    const char *u = p->s + start;
    size_t n = p->i - start;

    if (n == 0) {
        p->i = start;
        return fail_expected(p, "a url");
    }
    if (u[0] == '.' || u[0] == '/' || u[0] == '~' || has_prefix_icase(u, n, "file:"))
        return kiln_error_set(p->err, KILN_EINVAL, 0, "local paths are not allowed");
    if (!has_prefix_icase(u, n, "https://"))
        return kiln_error_set(p->err, KILN_EINVAL, 0, "url must use https");

    size_t host = strlen("https://");
    int r = check_authority(p, start + host, start + n);
    if (r < 0)
        return r;
    for (size_t k = host; k < n; k++) {
        if (!is_url_char(u[k]))
            return fail_url_char(p, start + k);
        if (u[k] == '%' && (k + 2 >= n || !is_hex(u[k + 1]) || !is_hex(u[k + 2])))
            return kiln_error_set(p->err, KILN_EINVAL, 0,
                                  "'%%' must start an escape such as '%%20' at offset %zu",
                                  start + k);
    }
    *ret_url = kiln_xstrndup(u, n);
    return 0;
}

static int parse_marker_or(struct parser *p);

/* python_str, without a backslash or the other kind of quote inside */
static int parse_marker_string(struct parser *p)
{
    size_t start = p->i;
    char q = p->s[p->i++];
    for (;;) {
        if (at_end(p))
            return kiln_error_set(p->err, KILN_EINVAL, 0, "unterminated string at offset %zu",
                                  start);
        char c = p->s[p->i];
        if (c == q) {
            p->i++;
            return 0;
        }
        if (c == '"' || c == '\'' || c == '\\')
            return kiln_error_set(p->err, KILN_EINVAL, 0,
                                  "unexpected '%c' in a marker string at offset %zu", c, p->i);
        p->i++;
    }
}

/* marker_var = wsp* (env_var | python_str) */
static int parse_marker_var(struct parser *p)
{
    skip_ws(p);
    char c = peek(p);
    if (c == '"' || c == '\'')
        return parse_marker_string(p);
    size_t n = word_len(p);
    for (size_t k = 0; k < KILN_ARRAY_SIZE(marker_vars); k++) {
        if (word_is(p, n, marker_vars[k])) {
            p->i += n;
            return 0;
        }
    }
    return fail_expected(p, "a marker variable");
}

/* marker_op = version_cmp | wsp* 'in' | wsp* 'not' wsp+ 'in' */
static int parse_marker_op(struct parser *p)
{
    skip_ws(p);
    size_t n = cmp_op_len(p);
    if (n > 0) {
        p->i += n;
        return 0;
    }
    n = word_len(p);
    if (word_is(p, n, "in")) {
        p->i += n;
        return 0;
    }
    if (word_is(p, n, "not")) {
        size_t at = p->i;
        p->i += n;
        if (skip_ws(p) > 0) {
            n = word_len(p);
            if (word_is(p, n, "in")) {
                p->i += n;
                return 0;
            }
        }
        p->i = at;
    }
    return fail_expected(p, "a marker operator");
}

/* marker_expr = marker_var marker_op marker_var | wsp* '(' marker wsp* ')' */
static int parse_marker_expr(struct parser *p)
{
    int r;
    skip_ws(p);
    if (peek(p) == '(') {
        if (p->depth >= MARKER_MAX_DEPTH)
            return kiln_error_set(p->err, KILN_EINVAL, 0,
                                  "marker is nested too deeply at offset %zu", p->i);
        p->depth++;
        p->i++;
        r = parse_marker_or(p);
        if (r < 0)
            return r;
        skip_ws(p);
        if (peek(p) != ')')
            return at_end(p) ? fail_expected(p, "')'") : fail_unexpected(p);
        p->i++;
        p->depth--;
        return 0;
    }
    r = parse_marker_var(p);
    if (r < 0)
        return r;
    r = parse_marker_op(p);
    if (r < 0)
        return r;
    return parse_marker_var(p);
}

/* Consume `wsp* keyword` when the next word is exactly `keyword`. */
static bool accept_keyword(struct parser *p, const char *keyword)
{
    size_t at = p->i;
    skip_ws(p);
    size_t n = word_len(p);
    if (word_is(p, n, keyword)) {
        p->i += n;
        return true;
    }
    p->i = at;
    return false;
}

/* marker_and = marker_expr (wsp* 'and' marker_expr)* */
static int parse_marker_and(struct parser *p)
{
    int r = parse_marker_expr(p);
    while (r >= 0 && accept_keyword(p, "and"))
        r = parse_marker_expr(p);
    return r;
}

/* marker_or = marker_and (wsp* 'or' marker_and)* */
static int parse_marker_or(struct parser *p)
{
    int r = parse_marker_and(p);
    while (r >= 0 && accept_keyword(p, "or"))
        r = parse_marker_and(p);
    return r;
}

/* quoted_marker = ';' wsp* marker; the ';' is current */
static int parse_marker(struct parser *p, char **ret_marker)
{
    p->i++;
    skip_ws(p);
    size_t start = p->i;
    int r = parse_marker_or(p);
    if (r < 0)
        return r;
    *ret_marker = kiln_xstrndup(p->s + start, p->i - start);
    return 0;
}

static int parse(struct parser *p, struct kiln_pip_req *req)
{
    int r;

    skip_ws(p);
    if (at_end(p))
        return kiln_error_set(p->err, KILN_EINVAL, 0, "empty requirement");
    r = check_start(p);
    if (r < 0)
        return r;

    r = parse_name(p, &req->name);
    if (r < 0)
        return r;
    skip_ws(p);
    if (peek(p) == '[') {
        r = parse_extras(p, &req->extras);
        if (r < 0)
            return r;
        skip_ws(p);
    }

    char c = peek(p);
    if (c == '@') {
        r = parse_url(p, &req->url);
        if (r < 0)
            return r;
        /* PEP 508 needs a space between a url and its marker: ';' is a url character */
        if (skip_ws(p) > 0 && peek(p) == ';') {
            r = parse_marker(p, &req->marker);
            if (r < 0)
                return r;
        }
    } else {
        if (in_set(c, "(<>=!~")) {
            r = parse_versionspec(p, &req->specifier);
            if (r < 0)
                return r;
            skip_ws(p);
        }
        if (peek(p) == ';') {
            r = parse_marker(p, &req->marker);
            if (r < 0)
                return r;
        }
    }
    skip_ws(p);
    if (!at_end(p))
        return fail_unexpected(p);
    return 0;
}

int kiln_pip_req_parse(const char *s, struct kiln_pip_req *ret, struct kiln_error **err)
{
    if (!s)
        return kiln_error_set(err, KILN_EINVAL, 0, "empty requirement");
    size_t len = strnlen(s, KILN_PIP_MAX_LEN + 1);
    if (len > KILN_PIP_MAX_LEN)
        return kiln_error_set(err, KILN_EINVAL, 0, "requirement is longer than %d bytes",
                              KILN_PIP_MAX_LEN);

    struct parser p = {.s = s, .len = len, .i = 0, .depth = 0, .err = err};
    int r = check_bytes(&p);
    if (r < 0)
        return r;

    struct kiln_pip_req req = KILN_PIP_REQ_INIT;
    r = parse(&p, &req);
    if (r < 0 || !ret) {
        kiln_pip_req_release(&req);
        return r;
    }
    *ret = req;
    return 0;
}

void kiln_pip_req_release(struct kiln_pip_req *r)
{
    if (!r)
        return;
    free(r->name);
    kiln_strv_release(&r->extras);
    free(r->specifier);
    free(r->url);
    free(r->marker);
    *r = (struct kiln_pip_req)KILN_PIP_REQ_INIT;
}
