#include "util/common.h"
#include "spec/ascii.h"
#include "spec/conda.h"

/*
 * A strict hand-written parser for the subset of conda's MatchSpec string
 * form described in conda.h. It works on byte ranges [a, b) of the input so
 * every message can give the absolute 0-based offset of the problem.
 *
 * Layout of the input, from left to right:
 *   head     everything before the first '[' (brackets may not nest);
 *   prefix   the part of head before its last ':' (channel and namespace);
 *   body     the rest of head: name, version and build;
 *   brackets from the first '[' to the end.
 * Versions and builds never contain ':', and ':' is only looked for in the
 * head, so a URL in a bracket value cannot confuse the split.
 */

/* Platform subdirectories recognised as the last component of a channel. */
static const char *const known_subdirs[] = {
    "noarch",        "linux-32",      "linux-64",
    "linux-aarch64", "linux-armv6l",  "linux-armv7l",
    "linux-ppc64",   "linux-ppc64le", "linux-s390x",
    "linux-riscv64", "osx-64",        "osx-arm64",
    "win-32",        "win-64",        "win-arm64",
    "zos-z",         "freebsd-64",    "emscripten-wasm32",
    "wasi-wasm32",   "emscripten-32",
};

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static bool is_alnum(char c)
{
    return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_hex(char c)
{
    return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* Package names and namespaces. */
static bool is_name_char(char c)
{
    return is_alnum(c) || c == '_' || c == '.' || c == '-';
}

/* One component of a named channel ("conda-forge", "label", "dev"). */
static bool is_channel_char(char c)
{
    return is_alnum(c) || c == '_' || c == '.' || c == '-';
}

/* Inside a version term, after the operator ('!' is handled apart). */
static bool is_version_char(char c)
{
    return is_alnum(c) || c == '.' || c == '*' || c == '+' || c == '_' || c == '-';
}

static bool is_build_char(char c)
{
    return is_alnum(c) || c == '_' || c == '.' || c == '*' || c == '+' || c == '-';
}

/* A path segment of an https URL: RFC 3986 unreserved characters and '+'. */
static bool is_url_path_char(char c)
{
    return is_alnum(c) || c == '.' || c == '_' || c == '~' || c == '-' || c == '+';
}

/* Values of bracket keys kiln has no stricter rule for (license, features...). */
static bool is_generic_value_char(char c)
{
    return is_alnum(c) || c == '.' || c == '_' || c == '*' || c == '+' || c == '!' || c == '-';
}

static bool range_is(const char *s, size_t a, size_t b, const char *word)
{
    size_t n = strlen(word);
    return b - a == n && memcmp(s + a, word, n) == 0;
}

static bool is_known_subdir(const char *s, size_t a, size_t b)
{
    for (size_t k = 0; k < KILN_ARRAY_SIZE(known_subdirs); k++)
        if (range_is(s, a, b, known_subdirs[k]))
            return true;
    return false;
}

/* Whether [a, b) contains "://", i.e. is meant as a URL. */
static bool has_scheme(const char *s, size_t a, size_t b)
{
    for (size_t i = a; i + 3 <= b; i++)
        if (memcmp(s + i, "://", 3) == 0)
            return true;
    return false;
}

static int unexpected(const char *s, size_t at, struct kiln_error **err)
{
    if (s[at] == '\0')
        return kiln_error_set(err, KILN_EINVAL, 0, "unexpected end of spec at offset %zu", at);
    return kiln_error_set(err, KILN_EINVAL, 0, "unexpected '%c' at offset %zu", s[at], at);
}

/* Report the character at `at`, or, when at == b, a missing `what`. */
static int unexpected_or_missing(const char *s, size_t at, size_t b, const char *what,
                                 struct kiln_error **err)
{
    if (at >= b)
        return kiln_error_set(err, KILN_EINVAL, 0, "missing %s at offset %zu", what, at);
    return unexpected(s, at, err);
}

static void set_field(char **field, const char *s, size_t a, size_t b)
{
    free(*field);
    *field = kiln_xstrndup(s + a, b - a);
}

/*
 * "https://host[:port][/seg...]" in [a, b). Only https: other schemes
 * (http, file, s3...) and local paths are refused. No user info, query or
 * fragment; no "." or ".." segments. When ret_last is not NULL it gets the
 * start of the last path segment (or b when there is none).
 */
static int parse_https_url(const char *s, size_t a, size_t b, size_t *ret_last,
                           struct kiln_error **err)
{
    static const char scheme[] = "https://";
    size_t i = a, n = sizeof(scheme) - 1;

    if (b - a < n || memcmp(s + a, scheme, n) != 0) {
        size_t k = a;
        while (k < b && (is_alnum(s[k]) || s[k] == '+' || s[k] == '.' || s[k] == '-'))
            k++;
        if (k < b && s[k] == ':' && k > a)
            return kiln_error_set(err, KILN_EINVAL, 0,
                                  "url scheme '%.*s' at offset %zu is not allowed (https only)",
                                  (int)(k - a), s + a, a);
        return kiln_error_set(err, KILN_EINVAL, 0, "expected an https url at offset %zu", a);
    }
    i += n;
    size_t host = i;
    while (i < b && (is_alnum(s[i]) || s[i] == '.' || s[i] == '-'))
        i++;
    if (i == host || !is_alnum(s[host]))
        return unexpected_or_missing(s, host, b, "host name", err);
    if (i < b && s[i] == ':') {
        size_t port = ++i;
        while (i < b && is_digit(s[i]) && i - port < 5)
            i++;
        if (i == port)
            return unexpected_or_missing(s, i, b, "port", err);
    }
    size_t last = b;
    while (i < b) {
        if (s[i] != '/')
            return unexpected(s, i, err);
        size_t seg = ++i;
        while (i < b && is_url_path_char(s[i]))
            i++;
        if (i == seg && i < b)
            return unexpected(s, i, err);
        if (range_is(s, seg, i, ".") || range_is(s, seg, i, ".."))
            return kiln_error_set(err, KILN_EINVAL, 0, "'%.*s' in url at offset %zu",
                                  (int)(i - seg), s + seg, seg);
        if (i > seg)
            last = seg;
    }
    if (ret_last)
        *ret_last = last;
    return 0;
}

/*
 * A channel in [a, b): a name made of '/'-separated components, or an https
 * URL. A last component that is a known platform subdir ("linux-64") is
 * split off. Fills *ret_channel and *ret_subdir when not NULL.
 */
static int parse_channel(const char *s, size_t a, size_t b, char **ret_channel, char **ret_subdir,
                         struct kiln_error **err)
{
    size_t last = b;
    size_t ncomp = 0;
    int r;

    if (a == b)
        return kiln_error_set(err, KILN_EINVAL, 0, "empty channel at offset %zu", a);

    if (has_scheme(s, a, b)) {
        r = parse_https_url(s, a, b, &last, err);
        if (r < 0)
            return r;
        ncomp = last < b ? 2 : 1;
    } else {
        size_t i = a;
        while (i <= b) {
            size_t comp = i;
            while (i < b && is_channel_char(s[i]))
                i++;
            if (i == comp || !(is_alnum(s[comp]) || s[comp] == '_'))
                return unexpected_or_missing(s, comp, b, "channel name", err);
            if (i < b && s[i] != '/')
                return unexpected(s, i, err);
            last = comp;
            ncomp++;
            i++;
        }
    }

    size_t chan_end = b;
    if (ncomp >= 2 && is_known_subdir(s, last, b))
        chan_end = last - 1;
    if (ret_channel)
        set_field(ret_channel, s, a, chan_end);
    if (ret_subdir && chan_end < b)
        set_field(ret_subdir, s, last, b);
    return 0;
}

/* A name or namespace: [A-Za-z0-9_.-]+, starting alphanumeric or '_'. */
static int check_name(const char *s, size_t a, size_t b, const char *what, struct kiln_error **err)
{
    if (a == b)
        return kiln_error_set(err, KILN_EINVAL, 0, "empty %s at offset %zu", what, a);
    if (!is_alnum(s[a]) && s[a] != '_')
        return unexpected(s, a, err);
    for (size_t i = a; i < b; i++)
        if (!is_name_char(s[i]))
            return unexpected(s, i, err);
    return 0;
}

/* The channel/subdir and namespace: [0, end), where end is the last ':' of the head. */
static int parse_prefix(const char *s, size_t end, struct kiln_conda_spec *c,
                        struct kiln_error **err)
{
    size_t ch_end = end;
    int r;

    if (has_scheme(s, 0, end)) {
        /* A URL has ':' of its own (scheme, port): it needs "::" and takes no namespace. */
        if (end == 0 || s[end - 1] != ':')
            return kiln_error_set(err, KILN_EINVAL, 0,
                                  "a channel url needs '::' before the package name at offset %zu",
                                  end);
        ch_end = end - 1;
    } else {
        for (size_t i = 0; i < end; i++)
            if (s[i] == ':')
                ch_end = i;
    }

    if (ch_end == end) {
        /* "ns:name": a namespace without a channel. */
        r = check_name(s, 0, end, "namespace", err);
        if (r < 0)
            return r;
        set_field(&c->ns, s, 0, end);
        return 0;
    }

    r = parse_channel(s, 0, ch_end, &c->channel, &c->subdir, err);
    if (r < 0)
        return r;
    if (ch_end + 1 < end) {
        r = check_name(s, ch_end + 1, end, "namespace", err);
        if (r < 0)
            return r;
        set_field(&c->ns, s, ch_end + 1, end);
    }
    return 0;
}

/*
 * One version term at *p: an optional operator, then a version string that
 * starts alphanumeric or with '*'. '!' (the epoch mark, "1!2.0") is only
 * taken when a letter or digit follows it.
 */
static int parse_version_term(const char *s, size_t *p, size_t b, struct kiln_error **err)
{
    static const char *const ops2[] = {"==", "!=", "<=", ">=", "~="};
    size_t i = *p;

    bool two = false;
    if (i + 1 < b)
        for (size_t k = 0; k < KILN_ARRAY_SIZE(ops2); k++)
            if (s[i] == ops2[k][0] && s[i + 1] == ops2[k][1])
                two = true;
    if (two)
        i += 2;
    else if (i < b && (s[i] == '<' || s[i] == '>' || s[i] == '='))
        i++;

    if (i >= b || !(is_alnum(s[i]) || s[i] == '*'))
        return unexpected_or_missing(s, i, b, "version", err);
    while (i < b && (is_version_char(s[i]) || (s[i] == '!' && i + 1 < b && is_alnum(s[i + 1]))))
        i++;
    *p = i;
    return 0;
}

/*
 * A version expression at *p: terms joined by ',' (and) and '|' (or). Stops
 * at the first character that cannot continue it; the caller decides
 * whether that character is allowed there.
 */
static int parse_version(const char *s, size_t *p, size_t b, struct kiln_error **err)
{
    for (;;) {
        int r = parse_version_term(s, p, b, err);
        if (r < 0)
            return r;
        if (*p < b && (s[*p] == ',' || s[*p] == '|')) {
            (*p)++;
            continue;
        }
        return 0;
    }
}

static bool is_op_start(char c)
{
    return c == '=' || c == '<' || c == '>' || c == '!' || c == '~';
}

/* name, then optionally (' ' or an operator) version, then (' ' or '=') build. */
static int parse_body(const char *s, size_t a, size_t b, struct kiln_conda_spec *c,
                      struct kiln_error **err)
{
    size_t i = a;
    int r;

    if (i >= b || is_op_start(s[i]) || s[i] == ' ')
        return kiln_error_set(err, KILN_EINVAL, 0, "empty package name at offset %zu", a);
    if (!is_alnum(s[i]) && s[i] != '_')
        return unexpected(s, i, err);
    while (i < b && is_name_char(s[i]))
        i++;
    set_field(&c->name, s, a, i);
    if (i == b)
        return 0;

    if (s[i] == ' ')
        i++;
    else if (!is_op_start(s[i]))
        return unexpected(s, i, err);
    size_t v = i;
    r = parse_version(s, &i, b, err);
    if (r < 0)
        return r;
    set_field(&c->version, s, v, i);
    if (i == b)
        return 0;

    /* "name version build" or "name=version=build". */
    if (s[i] != ' ' && s[i] != '=')
        return unexpected(s, i, err);
    size_t bs = ++i;
    if (i >= b || s[i] == '-')
        return unexpected_or_missing(s, i, b, "build string", err);
    while (i < b && is_build_char(s[i]))
        i++;
    if (i == bs || i < b)
        return unexpected(s, i, err);
    set_field(&c->build, s, bs, i);
    return 0;
}

static int check_chars(const char *s, size_t a, size_t b, bool (*ok)(char), struct kiln_error **err)
{
    for (size_t i = a; i < b; i++)
        if (!ok(s[i]))
            return unexpected(s, i, err);
    return 0;
}

static bool is_subdir_char(char c)
{
    return (c >= 'a' && c <= 'z') || is_digit(c) || c == '-' || c == '_';
}

static bool is_fn_char(char c)
{
    return is_alnum(c) || c == '.' || c == '_' || c == '+' || c == '!' || c == '-';
}

static int check_hex(const char *s, size_t a, size_t b, size_t want, const char *key,
                     struct kiln_error **err)
{
    int r = check_chars(s, a, b, is_hex, err);
    if (r < 0)
        return r;
    if (b - a != want)
        return kiln_error_set(err, KILN_EINVAL, 0, "'%s' at offset %zu must be %zu hex digits", key,
                              a, want);
    return 0;
}

/* The value [a, b) of bracket key `key`, by the rules of that key. */
static int check_value(const char *key, const char *s, size_t a, size_t b, struct kiln_error **err)
{
    size_t i = a;
    int r;

    if (strcmp(key, "version") == 0) {
        r = parse_version(s, &i, b, err);
        return r < 0 ? r : i < b ? unexpected(s, i, err) : 0;
    }
    if (strcmp(key, "build") == 0) {
        if (s[a] == '-')
            return unexpected(s, a, err);
        return check_chars(s, a, b, is_build_char, err);
    }
    if (strcmp(key, "build_number") == 0) {
        if (i + 1 < b && (s[i] == '=' || s[i] == '!' || s[i] == '<' || s[i] == '>') &&
            s[i + 1] == '=')
            i += 2;
        else if (s[i] == '<' || s[i] == '>' || s[i] == '=')
            i++;
        if (i >= b)
            return unexpected_or_missing(s, i, b, "build number", err);
        return check_chars(s, i, b, is_digit, err);
    }
    if (strcmp(key, "channel") == 0)
        return parse_channel(s, a, b, NULL, NULL, err);
    if (strcmp(key, "subdir") == 0) {
        if (!is_alnum(s[a]))
            return unexpected(s, a, err);
        return check_chars(s, a, b, is_subdir_char, err);
    }
    if (strcmp(key, "md5") == 0)
        return check_hex(s, a, b, 32, key, err);
    if (strcmp(key, "sha256") == 0)
        return check_hex(s, a, b, 64, key, err);
    if (strcmp(key, "url") == 0)
        return parse_https_url(s, a, b, NULL, err);
    if (strcmp(key, "name") == 0)
        return check_name(s, a, b, "package name", err);
    if (strcmp(key, "namespace") == 0)
        return check_name(s, a, b, "namespace", err);
    if (strcmp(key, "fn") == 0) {
        if (!is_alnum(s[a]))
            return unexpected(s, a, err);
        return check_chars(s, a, b, is_fn_char, err);
    }
    return check_chars(s, a, b, is_generic_value_char, err);
}

/*
 * A field given both before the brackets and inside them must agree:
 * "pytorch::pytorch[channel=pytorch]" is fine, "numpy=1[version=2]" is not.
 * The positional channel is compared as written, subdir included.
 */
static int check_agrees(const struct kiln_conda_spec *c, const char *key, const char *value,
                        size_t at, struct kiln_error **err)
{
    _cleanup_free_ char *channel = NULL;
    const char *have = NULL;

    if (strcmp(key, "version") == 0)
        have = c->version;
    else if (strcmp(key, "build") == 0)
        have = c->build;
    else if (strcmp(key, "name") == 0)
        have = c->name;
    else if (strcmp(key, "namespace") == 0)
        have = c->ns;
    else if (strcmp(key, "subdir") == 0)
        have = c->subdir;
    else if (strcmp(key, "channel") == 0 && c->channel) {
        channel =
            c->subdir ? kiln_xasprintf("%s/%s", c->channel, c->subdir) : kiln_xstrdup(c->channel);
        have = channel;
    }
    if (have && strcmp(have, value) != 0)
        return kiln_error_set(err, KILN_EINVAL, 0,
                              "'%s' at offset %zu disagrees with the %s given before '['", key, at,
                              key);
    return 0;
}

static bool has_key(const struct kiln_strv *keys, const char *key, size_t klen)
{
    for (size_t k = 0; k < keys->n; k++)
        if (strncmp(keys->v[k], key, klen) == 0 && keys->v[k][klen] == '=')
            return true;
    return false;
}

/*
 * "[key=value,key='value', key=\"value\"]" from a (the '[') to b (the end of
 * the input). Pairs are separated by ',' and at most one space after it.
 */
static int parse_brackets(const char *s, size_t a, size_t b, struct kiln_conda_spec *c,
                          struct kiln_error **err)
{
    size_t i = a + 1;
    int r;

    if (i < b && s[i] == ']')
        return kiln_error_set(err, KILN_EINVAL, 0, "empty brackets at offset %zu", a);
    for (;;) {
        size_t k = i;
        while (i < b && ((s[i] >= 'a' && s[i] <= 'z') || s[i] == '_' || (i > k && is_digit(s[i]))))
            i++;
        if (i == k)
            return kiln_error_set(err, KILN_EINVAL, 0, "unknown bracket syntax at offset %zu", k);
        if (i >= b || s[i] != '=')
            return kiln_error_set(err, KILN_EINVAL, 0, "expected '=' after '%.*s' at offset %zu",
                                  (int)(i - k), s + k, i);
        _cleanup_free_ char *key = kiln_xstrndup(s + k, i - k);
        if (has_key(&c->keys, key, i - k))
            return kiln_error_set(err, KILN_EINVAL, 0, "duplicate key '%s' at offset %zu", key, k);
        i++;

        size_t va, vb;
        if (i < b && (s[i] == '\'' || s[i] == '"')) {
            const char *close = memchr(s + i + 1, s[i], b - i - 1);
            if (!close)
                return kiln_error_set(err, KILN_EINVAL, 0, "unterminated quote at offset %zu", i);
            va = i + 1;
            vb = (size_t)(close - s);
            i = vb + 1;
        } else {
            va = i;
            while (i < b && s[i] != ',' && s[i] != ']')
                i++;
            vb = i;
        }
        if (va == vb)
            return kiln_error_set(err, KILN_EINVAL, 0, "empty value for '%s' at offset %zu", key,
                                  va);
        r = check_value(key, s, va, vb, err);
        if (r < 0)
            return r;
        _cleanup_free_ char *value = kiln_xstrndup(s + va, vb - va);
        r = check_agrees(c, key, value, k, err);
        if (r < 0)
            return r;
        kiln_strv_push_take(&c->keys, kiln_xasprintf("%s=%s", key, value));

        if (i >= b)
            return kiln_error_set(err, KILN_EINVAL, 0, "unterminated '[' at offset %zu", a);
        if (s[i] == ']')
            break;
        if (s[i] != ',')
            return unexpected(s, i, err);
        i++;
        if (i < b && s[i] == ' ')
            i++;
    }
    i++;
    return i < b ? unexpected(s, i, err) : 0;
}

int kiln_conda_spec_parse(const char *s, struct kiln_conda_spec *ret, struct kiln_error **err)
{
    _cleanup_(kiln_conda_spec_release) struct kiln_conda_spec c = KILN_CONDA_SPEC_INIT;
    int r;

    if (!s || !*s)
        return kiln_error_set(err, KILN_EINVAL, 0, "empty conda spec");
    size_t len = strnlen(s, KILN_CONDA_MAX_LEN + 1);
    if (len > KILN_CONDA_MAX_LEN)
        return kiln_error_set(err, KILN_EINVAL, 0, "conda spec is longer than %d bytes",
                              KILN_CONDA_MAX_LEN);
    r = kiln_spec_check_ascii(s, len, err);
    if (r < 0)
        return r;
    if (s[0] == '-')
        return kiln_error_set(err, KILN_EINVAL, 0, "leading '-' at offset 0 (no options)");

    size_t head = strcspn(s, "[");
    size_t colon = len;
    for (size_t i = 0; i < head; i++)
        if (s[i] == ':')
            colon = i;

    size_t body = 0;
    if (colon < len) {
        r = parse_prefix(s, colon, &c, err);
        if (r < 0)
            return r;
        body = colon + 1;
    }
    r = parse_body(s, body, head, &c, err);
    if (r < 0)
        return r;
    if (head < len) {
        r = parse_brackets(s, head, len, &c, err);
        if (r < 0)
            return r;
    }

    if (ret) {
        *ret = c;
        c = (struct kiln_conda_spec)KILN_CONDA_SPEC_INIT;
    }
    return 0;
}

void kiln_conda_spec_release(struct kiln_conda_spec *c)
{
    if (!c)
        return;
    free(c->channel);
    free(c->subdir);
    free(c->ns);
    free(c->name);
    free(c->version);
    free(c->build);
    kiln_strv_release(&c->keys);
    *c = (struct kiln_conda_spec)KILN_CONDA_SPEC_INIT;
}
