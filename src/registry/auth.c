#include "util/common.h"
#include "registry/auth.h"

#include <ctype.h>
#include <jansson.h>
#include <limits.h>
#include <pthread.h>
#include <strings.h>

#include "util/base64.h"
#include "util/buf.h"

/* Free a string that may hold a secret, wiping it first. */
static void free_secret(char *s)
{
    if (s) {
        explicit_bzero(s, strlen(s));
        free(s);
    }
}

static void free_secretp(char **s)
{
    free_secret(*s);
}

#define _cleanup_secret_ _cleanup_(free_secretp)

/* ---- WWW-Authenticate ---------------------------------------------------- */

/* RFC 7230 tchar */
static bool is_tchar(unsigned char c)
{
    return isalnum(c) || (c && strchr("!#$%&'*+-.^_`|~", c));
}

static bool is_token68_char(unsigned char c)
{
    return isalnum(c) || (c && strchr("-._~+/", c));
}

static bool is_ws(char c)
{
    return c == ' ' || c == '\t';
}

/* One challenge being collected. `kind` NONE means "parse, but ignore". */
struct chal {
    enum kiln_auth_scheme kind;
    bool token68;
    char *realm, *service, *error;
    struct kiln_buf scope;
};

static void chal_release(struct chal *c)
{
    free(c->realm);
    free(c->service);
    free(c->error);
    kiln_buf_release(&c->scope);
}

struct parser {
    const char *s;
    size_t len, i;
    struct kiln_error **err;
};

static void skip_ws(struct parser *p)
{
    while (p->i < p->len && is_ws(p->s[p->i]))
        p->i++;
}

static int unexpected(struct parser *p, const char *what)
{
    if (p->i >= p->len)
        return kiln_error_set(p->err, KILN_EINVAL, 0, "expected %s at offset %zu (end of header)",
                              what, p->i);
    unsigned char c = (unsigned char)p->s[p->i];
    if (c > 0x20 && c < 0x7f)
        return kiln_error_set(p->err, KILN_EINVAL, 0, "expected %s, got '%c' at offset %zu", what,
                              c, p->i);
    return kiln_error_set(p->err, KILN_EINVAL, 0, "expected %s, got byte 0x%02x at offset %zu",
                          what, c, p->i);
}

/* Reads a quoted-string starting at the '"'; the unescaped value goes to *out. */
static int quoted_string(struct parser *p, struct kiln_buf *out)
{
    size_t start = p->i++;
    while (p->i < p->len) {
        unsigned char c = (unsigned char)p->s[p->i];
        if (c == '"') {
            p->i++;
            return 0;
        }
        if (c == '\\') {
            p->i++;
            if (p->i >= p->len)
                break;
            c = (unsigned char)p->s[p->i];
        }
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return kiln_error_set(p->err, KILN_EINVAL, 0,
                                  "control character 0x%02x in quoted string at offset %zu", c,
                                  p->i);
        kiln_buf_addch(out, (char)c);
        p->i++;
    }
    return kiln_error_set(p->err, KILN_EINVAL, 0, "unterminated quoted string at offset %zu",
                          start);
}

static int set_once(struct parser *p, char **dst, const char *name, size_t at, struct kiln_buf *v)
{
    if (*dst)
        return kiln_error_set(p->err, KILN_EINVAL, 0, "duplicate parameter '%s' at offset %zu",
                              name, at);
    *dst = kiln_buf_detach(v, NULL);
    return 0;
}

/*
 * auth-param = token BWS "=" BWS ( token / quoted-string ), then OWS and a
 * ',' (consumed) or the end.
 */
static int auth_param(struct parser *p, struct chal *c)
{
    size_t name_at = p->i;
    while (p->i < p->len && is_tchar((unsigned char)p->s[p->i]))
        p->i++;
    size_t name_len = p->i - name_at;
    if (name_len == 0)
        return unexpected(p, "a parameter name");
    skip_ws(p);
    if (p->i >= p->len || p->s[p->i] != '=')
        return unexpected(p, "'='");
    p->i++;
    skip_ws(p);

    _cleanup_(kiln_buf_release) struct kiln_buf v = KILN_BUF_INIT;
    kiln_buf_init(&v, KILN_AUTH_HEADER_MAX);
    if (p->i < p->len && p->s[p->i] == '"') {
        int r = quoted_string(p, &v);
        if (r < 0)
            return r;
    } else {
        size_t at = p->i;
        while (p->i < p->len && is_tchar((unsigned char)p->s[p->i]))
            p->i++;
        if (p->i == at)
            return unexpected(p, "a parameter value");
        kiln_buf_add(&v, p->s + at, p->i - at);
    }
    skip_ws(p);
    if (p->i < p->len) {
        if (p->s[p->i] != ',')
            return unexpected(p, "','");
        p->i++;
    }

    if (c->kind == KILN_AUTH_NONE || v.len == 0)
        return 0;
    const char *name = p->s + name_at;
#define IS(n) (name_len == strlen(n) && strncasecmp(name, n, name_len) == 0)
    if (IS("realm"))
        return set_once(p, &c->realm, "realm", name_at, &v);
    if (IS("service"))
        return set_once(p, &c->service, "service", name_at, &v);
    if (IS("error"))
        return set_once(p, &c->error, "error", name_at, &v);
    if (IS("scope")) {
        if (c->scope.len)
            kiln_buf_addch(&c->scope, ' ');
        kiln_buf_add(&c->scope, v.buf, v.len);
    }
#undef IS
    return 0;
}

/*
 * At p->i, after "scheme 1*SP": a token68 is 1*tchar68 *"=" followed by OWS
 * and ',' or the end. Consumes it (and the ',') and returns true if so.
 */
static bool token68(struct parser *p)
{
    size_t k = p->i;
    while (k < p->len && is_token68_char((unsigned char)p->s[k]))
        k++;
    if (k == p->i)
        return false;
    while (k < p->len && p->s[k] == '=')
        k++;
    while (k < p->len && is_ws(p->s[k]))
        k++;
    if (k < p->len && p->s[k] != ',')
        return false;
    p->i = k < p->len ? k + 1 : k;
    return true;
}

static bool realm_is_url(const char *r)
{
    size_t n;
    if (strncasecmp(r, "https://", 8) == 0)
        n = 8;
    else if (strncasecmp(r, "http://", 7) == 0)
        n = 7;
    else
        return false;
    if (!r[n] || strchr("/?#", r[n]))
        return false;
    for (const unsigned char *q = (const unsigned char *)r; *q; q++)
        if (*q <= 0x20 || *q >= 0x7f)
            return false;
    return true;
}

int kiln_auth_challenge_parse(const char *header, struct kiln_challenge *ret,
                              struct kiln_error **err)
{
    if (!header)
        return kiln_error_set(err, KILN_EINVAL, 0, "no challenge");
    size_t len = strnlen(header, KILN_AUTH_HEADER_MAX + 1);
    if (len > KILN_AUTH_HEADER_MAX)
        return kiln_error_set(err, KILN_ETOOBIG, 0, "challenge longer than %d bytes",
                              KILN_AUTH_HEADER_MAX);
    /* a header line's end may have been left on */
    while (len > 0 && strchr(" \t\r\n", header[len - 1]))
        len--;

    struct parser p = {header, len, 0, err};
    /* [0] the first Bearer, [1] the first Basic, [2] anything else */
    struct chal ch[3] = {{KILN_AUTH_BEARER, false, NULL, NULL, NULL, KILN_BUF_INIT},
                         {KILN_AUTH_BASIC, false, NULL, NULL, NULL, KILN_BUF_INIT},
                         {KILN_AUTH_NONE, false, NULL, NULL, NULL, KILN_BUF_INIT}};
    bool seen[2] = {false, false};
    struct chal *cur = NULL;
    char other[64] = "";
    size_t nchal = 0;
    int r = 0;

    for (int k = 0; k < 3; k++)
        kiln_buf_init(&ch[k].scope, KILN_AUTH_HEADER_MAX);

    for (;;) {
        skip_ws(&p);
        if (p.i >= p.len)
            break;
        if (header[p.i] == ',') {
            p.i++;
            continue;
        }
        size_t tok_at = p.i;
        while (p.i < p.len && is_tchar((unsigned char)header[p.i]))
            p.i++;
        size_t tok_len = p.i - tok_at;
        if (tok_len == 0) {
            r = unexpected(&p, "an authentication scheme");
            goto out;
        }
        size_t j = p.i;
        while (j < p.len && is_ws(header[j]))
            j++;
        if (j < p.len && header[j] == '=') {
            /* "name=value" after a ',' continues the current challenge */
            if (!cur) {
                r = kiln_error_set(err, KILN_EINVAL, 0,
                                   "parameter before any authentication scheme at offset %zu",
                                   tok_at);
                goto out;
            }
            if (cur->token68) {
                r = kiln_error_set(err, KILN_EINVAL, 0, "parameter after a token68 at offset %zu",
                                   tok_at);
                goto out;
            }
            p.i = tok_at;
            if ((r = auth_param(&p, cur)) < 0)
                goto out;
            continue;
        }

        /* a new challenge */
        nchal++;
        const char *scheme = header + tok_at;
        if (tok_len == 6 && strncasecmp(scheme, "bearer", 6) == 0 && !seen[0]) {
            cur = &ch[0];
            seen[0] = true;
        } else if (tok_len == 5 && strncasecmp(scheme, "basic", 5) == 0 && !seen[1]) {
            cur = &ch[1];
            seen[1] = true;
        } else {
            cur = &ch[2];
            if (!other[0])
                snprintf(other, sizeof(other), "%.*s", (int)tok_len, scheme);
        }
        cur->token68 = false;
        if (j >= p.len || header[j] == ',') {
            p.i = j;
            continue;
        }
        if (j == p.i) {
            r = unexpected(&p, "a space after the authentication scheme");
            goto out;
        }
        p.i = j;
        if (token68(&p)) {
            cur->token68 = true;
            continue;
        }
        if ((r = auth_param(&p, cur)) < 0)
            goto out;
    }

    for (int k = 0; k < 3; k++)
        if ((r = kiln_buf_finish(&ch[k].scope, "scope", err)) < 0)
            goto out;

    struct chal *pick = seen[0] ? &ch[0] : seen[1] ? &ch[1] : NULL;
    if (!pick) {
        if (nchal == 0)
            r = kiln_error_set(err, KILN_EINVAL, 0, "no challenge in header");
        else
            r = kiln_error_set(err, KILN_EUNSUPPORTED, 0, "unsupported authentication scheme '%s'",
                               other);
        goto out;
    }
    if (pick->kind == KILN_AUTH_BEARER) {
        if (!pick->realm) {
            r = kiln_error_set(err, KILN_EUNSUPPORTED, 0, "bearer challenge has no realm");
            goto out;
        }
        if (!realm_is_url(pick->realm)) {
            r = kiln_error_set(err, KILN_EUNSUPPORTED, 0,
                               "bearer realm '%.200s' is not an http(s) URL", pick->realm);
            goto out;
        }
    }
    ret->scheme = pick->kind;
    ret->realm = TAKE_PTR(pick->realm);
    ret->service = TAKE_PTR(pick->service);
    ret->error = TAKE_PTR(pick->error);
    ret->scope = pick->scope.len ? kiln_buf_detach(&pick->scope, NULL) : NULL;
    r = 0;
out:
    for (int k = 0; k < 3; k++)
        chal_release(&ch[k]);
    return r;
}

void kiln_challenge_release(struct kiln_challenge *c)
{
    if (!c)
        return;
    free(c->realm);
    free(c->service);
    free(c->scope);
    free(c->error);
    *c = (struct kiln_challenge)KILN_CHALLENGE_INIT;
}

/* ---- URLs and forms ------------------------------------------------------ */

static void add_escaped(struct kiln_buf *b, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *q = (const unsigned char *)s; *q; q++) {
        if (isalnum(*q) || strchr("-._~", *q)) {
            kiln_buf_addch(b, (char)*q);
        } else {
            kiln_buf_addch(b, '%');
            kiln_buf_addch(b, hex[*q >> 4]);
            kiln_buf_addch(b, hex[*q & 15]);
        }
    }
}

/* Appends "&name=value" (sep instead of '&' for the first). */
static void add_param(struct kiln_buf *b, const char **sep, const char *name, const char *value)
{
    kiln_buf_adds(b, *sep);
    *sep = "&";
    kiln_buf_adds(b, name);
    kiln_buf_addch(b, '=');
    add_escaped(b, value);
}

char *kiln_auth_token_url(const struct kiln_challenge *c, const char *scope)
{
    if (!c || !c->realm)
        return NULL;
    struct kiln_buf b = KILN_BUF_INIT;
    kiln_buf_adds(&b, c->realm);
    const char *q = strchr(c->realm, '?');
    const char *sep = !q ? "?" : (q[1] && c->realm[strlen(c->realm) - 1] != '&') ? "&" : "";

    if (c->service)
        add_param(&b, &sep, "service", c->service);
    const char *w = scope ? scope : c->scope ? c->scope : "";
    while (*w) {
        size_t n = strcspn(w, " ");
        if (n) {
            _cleanup_free_ char *one = kiln_xstrndup(w, n);
            add_param(&b, &sep, "scope", one);
        }
        w += n;
        w += strspn(w, " ");
    }
    return kiln_buf_detach(&b, NULL);
}

char *kiln_auth_token_form(const struct kiln_challenge *c, const char *scope,
                           const struct kiln_cred *cred, const char *client_id)
{
    if (!c || !cred)
        return NULL;
    struct kiln_buf b = KILN_BUF_INIT;
    const char *sep = "";
    if (cred->identity_token) {
        add_param(&b, &sep, "grant_type", "refresh_token");
        add_param(&b, &sep, "refresh_token", cred->identity_token);
    } else if (cred->username && cred->password) {
        add_param(&b, &sep, "grant_type", "password");
        add_param(&b, &sep, "username", cred->username);
        add_param(&b, &sep, "password", cred->password);
    } else {
        return NULL;
    }
    if (c->service)
        add_param(&b, &sep, "service", c->service);
    add_param(&b, &sep, "client_id", client_id ? client_id : "kiln");
    const char *sc = scope ? scope : c->scope;
    if (sc && *sc)
        add_param(&b, &sep, "scope", sc);
    return kiln_buf_detach(&b, NULL);
}

/* ---- credentials --------------------------------------------------------- */

void kiln_cred_release(struct kiln_cred *c)
{
    if (!c)
        return;
    free_secret(c->username);
    free_secret(c->password);
    free_secret(c->identity_token);
    *c = (struct kiln_cred)KILN_CRED_INIT;
}

int kiln_cred_present(const struct kiln_cred *c)
{
    return c && (c->username || c->password || c->identity_token);
}

char *kiln_auth_basic_header(const struct kiln_cred *c)
{
    if (!c || (!c->username && !c->password))
        return NULL;
    _cleanup_secret_ char *pair =
        kiln_xasprintf("%s:%s", c->username ? c->username : "", c->password ? c->password : "");
    _cleanup_secret_ char *enc = kiln_base64_encode(pair, strlen(pair));
    return kiln_xasprintf("Basic %s", enc);
}

/* A jansson parse failure, without jansson's text (which quotes the input). */
static int json_failure(const json_error_t *je, const char *what, struct kiln_error **err)
{
    const char *why;
    switch (json_error_code(je)) {
    case json_error_premature_end_of_input:
        why = "unexpected end of input";
        break;
    case json_error_end_of_input_expected:
        why = "data after the document";
        break;
    case json_error_invalid_utf8:
        why = "invalid UTF-8";
        break;
    case json_error_null_character:
    case json_error_null_byte_in_key:
        why = "NUL character";
        break;
    case json_error_numeric_overflow:
        why = "number out of range";
        break;
    case json_error_stack_overflow:
        why = "nested too deeply";
        break;
    default:
        why = "invalid syntax";
        break;
    }
    return kiln_error_set(err, KILN_EINVAL, 0, "%s: invalid JSON at line %d column %d: %s", what,
                          je->line, je->column, why);
}

/* "https://Host:5000/v1/" -> "host:5000"; the docker.io aliases -> "docker.io" */
static char *host_of(const char *key)
{
    if (strncasecmp(key, "https://", 8) == 0)
        key += 8;
    else if (strncasecmp(key, "http://", 7) == 0)
        key += 7;
    char *h = kiln_xstrndup(key, strcspn(key, "/"));
    for (char *q = h; *q; q++)
        *q = (char)tolower((unsigned char)*q);
    if (strcmp(h, "index.docker.io") == 0 || strcmp(h, "registry-1.docker.io") == 0) {
        free(h);
        h = kiln_xstrdup("docker.io");
    }
    return h;
}

/* Field `name` of an entry: NULL when absent, null or ""; error when not a string. */
static int opt_string(const json_t *entry, const char *key, const char *name, const char **ret,
                      struct kiln_error **err)
{
    const json_t *v = json_object_get(entry, name);
    *ret = NULL;
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_string(v))
        return kiln_error_set(err, KILN_EINVAL, 0, "auths entry '%.200s': '%s' is not a string",
                              key, name);
    if (json_string_length(v) > 0)
        *ret = json_string_value(v);
    return 0;
}

static char *dup_or_null(const char *s, size_t n)
{
    return n ? kiln_xstrndup(s, n) : NULL;
}

/* Returns 1 with *ret filled when the entry holds something usable, else 0 or an error. */
static int load_entry(const char *key, const json_t *entry, struct kiln_cred *ret,
                      struct kiln_error **err)
{
    const char *auth, *user, *pass, *idtok;
    int r;

    if (!json_is_object(entry))
        return kiln_error_set(err, KILN_EINVAL, 0, "auths entry '%.200s' is not an object", key);
    if ((r = opt_string(entry, key, "auth", &auth, err)) < 0 ||
        (r = opt_string(entry, key, "username", &user, err)) < 0 ||
        (r = opt_string(entry, key, "password", &pass, err)) < 0 ||
        (r = opt_string(entry, key, "identitytoken", &idtok, err)) < 0)
        return r;

    struct kiln_cred c = KILN_CRED_INIT;
    if (auth) {
        uint8_t *raw = NULL;
        size_t n = 0;
        r = kiln_base64_decode(auth, strlen(auth), KILN_BASE64_SKIP_NEWLINES, &raw, &n, err);
        if (r < 0)
            return kiln_error_prefix(err, "auths entry '%.200s': auth", key);
        _cleanup_secret_ char *pair = (char *)raw;
        if (strlen(pair) != n)
            return kiln_error_set(err, KILN_EINVAL, 0,
                                  "auths entry '%.200s': auth contains a NUL byte", key);
        char *colon = strchr(pair, ':');
        if (!colon)
            return kiln_error_set(err, KILN_EINVAL, 0,
                                  "auths entry '%.200s': auth is not 'username:password'", key);
        c.username = dup_or_null(pair, (size_t)(colon - pair));
        c.password = dup_or_null(colon + 1, strlen(colon + 1));
    } else {
        c.username = dup_or_null(user, user ? strlen(user) : 0);
        c.password = dup_or_null(pass, pass ? strlen(pass) : 0);
    }
    c.identity_token = dup_or_null(idtok, idtok ? strlen(idtok) : 0);
    if (!kiln_cred_present(&c))
        return 0;
    *ret = c;
    return 1;
}

int kiln_auth_config_lookup(const char *json, size_t len, const char *registry,
                            struct kiln_cred *ret, struct kiln_error **err)
{
    if (!registry || !*registry)
        return kiln_error_set(err, KILN_EINVAL, 0, "no registry to look up");
    if (len > KILN_AUTH_CONFIG_MAX)
        return kiln_error_set(err, KILN_ETOOBIG, 0, "config larger than %d bytes",
                              KILN_AUTH_CONFIG_MAX);
    if (!json)
        return kiln_error_set(err, KILN_EINVAL, 0, "config: empty");

    json_error_t je;
    json_t *root = json_loadb(json, len, 0, &je);
    if (!root)
        return json_failure(&je, "config", err);

    int r = 0;
    _cleanup_free_ char *want = host_of(registry);
    const json_t *auths = root;
    const char *key;
    json_t *entry;

    if (!json_is_object(root)) {
        r = kiln_error_set(err, KILN_EINVAL, 0, "config is not a JSON object");
        goto out;
    }
    if (json_object_get(root, "auths")) {
        auths = json_object_get(root, "auths");
        if (!json_is_object(auths)) {
            r = kiln_error_set(err, KILN_EINVAL, 0, "config: 'auths' is not an object");
            goto out;
        }
    }

    entry = json_object_get(auths, registry);
    if (entry && (r = load_entry(registry, entry, ret, err)) != 0)
        goto out;
    json_object_foreach((json_t *)auths, key, entry)
    {
        _cleanup_free_ char *h = host_of(key);
        if (strcmp(h, want) != 0 || strcmp(key, registry) == 0)
            continue;
        if ((r = load_entry(key, entry, ret, err)) != 0)
            goto out;
    }
out:
    json_decref(root);
    return r;
}

/* ---- token responses ----------------------------------------------------- */

static bool digits(const char *s, int n, int *ret)
{
    int v = 0;
    for (int k = 0; k < n; k++) {
        if (s[k] < '0' || s[k] > '9')
            return false;
        v = v * 10 + (s[k] - '0');
    }
    *ret = v;
    return true;
}

/* RFC 3339 date-time: 2006-01-02T15:04:05(.frac)?(Z|+hh:mm|-hh:mm) */
static bool rfc3339_valid(const char *s)
{
    static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int y, mo, d, h, mi, se, oh, om;
    if (strlen(s) < 20 || !digits(s, 4, &y) || s[4] != '-' || !digits(s + 5, 2, &mo) ||
        s[7] != '-' || !digits(s + 8, 2, &d) || (s[10] != 'T' && s[10] != 't') ||
        !digits(s + 11, 2, &h) || s[13] != ':' || !digits(s + 14, 2, &mi) || s[16] != ':' ||
        !digits(s + 17, 2, &se))
        return false;
    if (mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] || h > 23 || mi > 59 || se > 60)
        return false;
    if (mo == 2 && d == 29 && !(y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)))
        return false;
    const char *q = s + 19;
    if (*q == '.') {
        q++;
        if (*q < '0' || *q > '9')
            return false;
        while (*q >= '0' && *q <= '9')
            q++;
    }
    if ((*q == 'Z' || *q == 'z') && q[1] == '\0')
        return true;
    if ((*q == '+' || *q == '-') && strlen(q) == 6 && digits(q + 1, 2, &oh) && q[3] == ':' &&
        digits(q + 4, 2, &om))
        return oh <= 23 && om <= 59;
    return false;
}

/* A string field: NULL when absent or null, error when another type. */
static int resp_string(const json_t *root, const char *name, const char **ret,
                       struct kiln_error **err)
{
    const json_t *v = json_object_get(root, name);
    *ret = NULL;
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_string(v))
        return kiln_error_set(err, KILN_EINVAL, 0, "token response: '%s' is not a string", name);
    *ret = json_string_value(v);
    return 0;
}

int kiln_auth_token_response_parse(const char *body, size_t len, time_t now, char **ret_token,
                                   char **ret_refresh, time_t *ret_expires, struct kiln_error **err)
{
    if (len > KILN_AUTH_TOKEN_RESPONSE_MAX)
        return kiln_error_set(err, KILN_ETOOBIG, 0, "token response larger than %d bytes",
                              KILN_AUTH_TOKEN_RESPONSE_MAX);
    if (!body)
        return kiln_error_set(err, KILN_EINVAL, 0, "token response: empty");

    json_error_t je;
    /* integers as reals: a huge expires_in is cut, not a parse error */
    json_t *root = json_loadb(body, len, JSON_DECODE_INT_AS_REAL, &je);
    if (!root)
        return json_failure(&je, "token response", err);

    int r;
    const char *token, *access, *refresh, *issued;
    if (!json_is_object(root)) {
        r = kiln_error_set(err, KILN_EINVAL, 0, "token response is not a JSON object");
        goto out;
    }
    if ((r = resp_string(root, "token", &token, err)) < 0 ||
        (r = resp_string(root, "access_token", &access, err)) < 0 ||
        (r = resp_string(root, "refresh_token", &refresh, err)) < 0 ||
        (r = resp_string(root, "issued_at", &issued, err)) < 0)
        goto out;
    if (access && *access)
        token = access;
    if (!token || !*token) {
        r = kiln_error_set(err, KILN_EINVAL, 0, "token response has no token");
        goto out;
    }
    for (const unsigned char *q = (const unsigned char *)token; *q; q++) {
        if (*q <= 0x20 || *q >= 0x7f) {
            r = kiln_error_set(err, KILN_EINVAL, 0,
                               "token response: token has a character not allowed in a header");
            goto out;
        }
    }
    if (issued && !rfc3339_valid(issued)) {
        r = kiln_error_set(err, KILN_EINVAL, 0,
                           "token response: 'issued_at' is not an RFC 3339 time");
        goto out;
    }

    long long expires_in = 60;
    const json_t *ex = json_object_get(root, "expires_in");
    if (ex && !json_is_null(ex)) {
        if (!json_is_number(ex)) {
            r = kiln_error_set(err, KILN_EINVAL, 0, "token response: 'expires_in' is not a number");
            goto out;
        }
        double d = json_number_value(ex);
        if (d > KILN_AUTH_EXPIRES_MAX)
            expires_in = KILN_AUTH_EXPIRES_MAX;
        else if (d > 60)
            expires_in = (long long)d;
    }

    *ret_token = kiln_xstrdup(token);
    if (ret_refresh)
        *ret_refresh = refresh && *refresh ? kiln_xstrdup(refresh) : NULL;
    if (ret_expires) {
        /* saturate instead of overflowing time_t */
        if (now > 0 && (long long)now > LLONG_MAX - expires_in)
            *ret_expires = now;
        else
            *ret_expires = (time_t)(now + expires_in);
    }
    r = 0;
out:
    json_decref(root);
    return r;
}

/* ---- token cache --------------------------------------------------------- */

struct entry {
    char *realm, *service, *scope, *token;
    time_t expires;
    uint64_t seq;
};

struct kiln_token_cache {
    pthread_mutex_t lock;
    size_t n;
    uint64_t seq;
    struct entry e[KILN_TOKEN_CACHE_MAX];
};

static const char *nz(const char *s)
{
    return s ? s : "";
}

static void entry_clear(struct entry *e)
{
    free(e->realm);
    free(e->service);
    free(e->scope);
    free_secret(e->token);
    memset(e, 0, sizeof(*e));
}

/* Remove entry k, keeping the array dense. */
static void entry_remove(struct kiln_token_cache *c, size_t k)
{
    entry_clear(&c->e[k]);
    c->n--;
    if (k != c->n) {
        c->e[k] = c->e[c->n];
        memset(&c->e[c->n], 0, sizeof(c->e[c->n]));
    }
}

static struct entry *find(struct kiln_token_cache *c, const char *realm, const char *service,
                          const char *scope, size_t *ret_index)
{
    for (size_t k = 0; k < c->n; k++) {
        struct entry *e = &c->e[k];
        if (strcmp(e->realm, nz(realm)) == 0 && strcmp(e->service, nz(service)) == 0 &&
            strcmp(e->scope, nz(scope)) == 0) {
            *ret_index = k;
            return e;
        }
    }
    return NULL;
}

struct kiln_token_cache *kiln_token_cache_new(void)
{
    struct kiln_token_cache *c = kiln_xcalloc(1, sizeof(*c));
    if (pthread_mutex_init(&c->lock, NULL) != 0)
        abort();
    return c;
}

void kiln_token_cache_free(struct kiln_token_cache *c)
{
    if (!c)
        return;
    for (size_t k = 0; k < c->n; k++)
        entry_clear(&c->e[k]);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

char *kiln_token_cache_get(struct kiln_token_cache *c, const char *realm, const char *service,
                           const char *scope, time_t now)
{
    char *tok = NULL;
    size_t k;
    if (!c)
        return NULL;
    pthread_mutex_lock(&c->lock);
    struct entry *e = find(c, realm, service, scope, &k);
    if (e) {
        /* unsigned difference: no overflow whatever the two times are */
        if (e->expires > now && (unsigned long long)e->expires - (unsigned long long)now > 10)
            tok = kiln_xstrdup(e->token);
        else
            entry_remove(c, k);
    }
    pthread_mutex_unlock(&c->lock);
    return tok;
}

void kiln_token_cache_put(struct kiln_token_cache *c, const char *realm, const char *service,
                          const char *scope, const char *token, time_t expires)
{
    size_t k;
    if (!c)
        return;
    if (!token) {
        kiln_token_cache_drop(c, realm, service, scope);
        return;
    }
    pthread_mutex_lock(&c->lock);
    struct entry *e = find(c, realm, service, scope, &k);
    if (e) {
        free_secret(e->token);
    } else {
        if (c->n == KILN_TOKEN_CACHE_MAX) {
            size_t oldest = 0;
            for (k = 1; k < c->n; k++)
                if (c->e[k].seq < c->e[oldest].seq)
                    oldest = k;
            entry_remove(c, oldest);
        }
        e = &c->e[c->n++];
        e->realm = kiln_xstrdup(nz(realm));
        e->service = kiln_xstrdup(nz(service));
        e->scope = kiln_xstrdup(nz(scope));
    }
    e->token = kiln_xstrdup(token);
    e->expires = expires;
    e->seq = ++c->seq;
    pthread_mutex_unlock(&c->lock);
}

void kiln_token_cache_drop(struct kiln_token_cache *c, const char *realm, const char *service,
                           const char *scope)
{
    size_t k;
    if (!c)
        return;
    pthread_mutex_lock(&c->lock);
    if (find(c, realm, service, scope, &k))
        entry_remove(c, k);
    pthread_mutex_unlock(&c->lock);
}

size_t kiln_token_cache_size(struct kiln_token_cache *c)
{
    if (!c)
        return 0;
    pthread_mutex_lock(&c->lock);
    size_t n = c->n;
    pthread_mutex_unlock(&c->lock);
    return n;
}
