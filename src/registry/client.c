#include "util/common.h"
#include "registry/client.h"

#include <ctype.h>
#include <jansson.h>
#include <pthread.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "registry/rawhttp.h"
#include "util/buf.h"
#include "util/log.h"
#include "util/sha256.h"

#define ERROR_TEXT_MAX 512

struct kiln_registry {
    struct kiln_http *http;
    bool own_http;
    char *name;     /* as given */
    char *base;     /* "https://ENDPOINT" */
    char *hostport; /* ENDPOINT, lower-case */
    struct kiln_cred cred;
    bool have_cred;
    struct kiln_token_cache *tokens;
    pthread_mutex_t lock; /* guards scheme, realm, service */
    enum kiln_auth_scheme scheme;
    char *realm;
    char *service;
    size_t chunk_size;
    int max_resumes;
    char *client_id;
    kiln_http_progress_fn progress;
    void *progress_data;
};

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

static char *dup_or_null(const char *s)
{
    return s ? kiln_xstrdup(s) : NULL;
}

/* ---- argument grammars ----------------------------------------------------- */

static bool lower_alnum(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

bool kiln_registry_repo_valid(const char *repo)
{
    if (!repo || !*repo || strlen(repo) > KILN_REGISTRY_REPO_MAX)
        return false;
    const char *p = repo;
    for (;;) {
        /* component: alnum+ ((. | _ | __ | -+) alnum+)* */
        if (!lower_alnum(*p))
            return false;
        while (lower_alnum(*p))
            p++;
        while (*p == '.' || *p == '_' || *p == '-') {
            if (*p == '.')
                p++;
            else if (*p == '_')
                p += p[1] == '_' ? 2 : 1;
            else
                while (*p == '-')
                    p++;
            if (!lower_alnum(*p))
                return false;
            while (lower_alnum(*p))
                p++;
        }
        if (*p == '\0')
            return true;
        if (*p != '/')
            return false;
        p++;
    }
}

bool kiln_registry_tag_valid(const char *tag)
{
    if (!tag || !*tag)
        return false;
    size_t n = strlen(tag);
    if (n > 128 || !(isalnum((unsigned char)tag[0]) || tag[0] == '_'))
        return false;
    for (size_t i = 1; i < n; i++)
        if (!(isalnum((unsigned char)tag[i]) || tag[i] == '_' || tag[i] == '.' || tag[i] == '-'))
            return false;
    return true;
}

int kiln_registry_digest_kind(const char *s)
{
    if (!s)
        return -1;
    const char *colon = strchr(s, ':');
    if (!colon || colon == s)
        return -1;
    for (const char *p = s; p < colon; p++)
        if (!lower_alnum(*p) && !strchr("+._-", *p))
            return -1;
    const char *hex = colon + 1;
    size_t n = strlen(hex);
    if (n < 32 || n > 128)
        return -1;
    for (size_t i = 0; i < n; i++)
        if (!isxdigit((unsigned char)hex[i]) || isupper((unsigned char)hex[i]))
            return -1;
    if ((size_t)(colon - s) == 6 && strncmp(s, "sha256", 6) == 0)
        return n == KILN_SHA256_HEX_LEN ? 1 : -1;
    return 0;
}

static int check_repo(const char *repo, struct kiln_error **err)
{
    if (!kiln_registry_repo_valid(repo))
        return kiln_error_set(err, KILN_EINVAL, 0, "invalid repository name '%s'",
                              repo ? repo : "");
    return 0;
}

static int check_digest(const char *digest, struct kiln_error **err)
{
    int k = kiln_registry_digest_kind(digest);
    if (k < 0)
        return kiln_error_set(err, KILN_EINVAL, 0, "invalid digest '%s'", digest ? digest : "");
    if (k == 0)
        return kiln_error_set(err, KILN_EUNSUPPORTED, 0,
                              "digest '%s': only sha256 digests are supported", digest);
    return 0;
}

/* check_repo() and check_digest() of a request's arguments. */
static int check_repo_digest(const char *repo, const char *digest, struct kiln_error **err)
{
    int rc = check_repo(repo, err);
    return rc < 0 ? rc : check_digest(digest, err);
}

/* A tag or a digest; *ret_is_digest tells which. */
static int check_ref(const char *ref, bool *ret_is_digest, struct kiln_error **err)
{
    if (ref && strchr(ref, ':')) {
        int r = check_digest(ref, err);
        if (r < 0)
            return r;
        *ret_is_digest = true;
        return 0;
    }
    if (!kiln_registry_tag_valid(ref))
        return kiln_error_set(err, KILN_EINVAL, 0, "invalid tag '%s'", ref ? ref : "");
    *ret_is_digest = false;
    return 0;
}

/* ---- registry error bodies -------------------------------------------------- */

static void add_clean(struct kiln_buf *b, const char *s)
{
    for (; *s && b->len < ERROR_TEXT_MAX; s++) {
        unsigned char c = (unsigned char)*s;
        kiln_buf_addch(b, (c < 0x20 || c == 0x7f) ? ' ' : (char)c);
    }
}

int kiln_registry_parse_errors(const char *body, size_t len, char **ret_code, char **ret_message)
{
    if (!body || len == 0 || len > KILN_HTTP_ERROR_BODY_MAX)
        return -1;
    json_error_t je;
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return -1;
    json_t *errors = json_object_get(root, "errors");
    if (!json_is_array(errors) || json_array_size(errors) == 0) {
        json_decref(root);
        return -1;
    }
    struct kiln_buf code = KILN_BUF_INIT, msg = KILN_BUF_INIT;
    size_t i;
    json_t *e;
    json_array_foreach(errors, i, e)
    {
        const char *c = json_string_value(json_object_get(e, "code"));
        const char *m = json_string_value(json_object_get(e, "message"));
        if (c && code.len == 0)
            add_clean(&code, c);
        if (m && *m && msg.len < ERROR_TEXT_MAX) {
            if (msg.len)
                kiln_buf_adds(&msg, "; ");
            add_clean(&msg, m);
        }
    }
    json_decref(root);
    *ret_code = code.len ? kiln_buf_detach(&code, NULL) : NULL;
    *ret_message = msg.len ? kiln_buf_detach(&msg, NULL) : NULL;
    kiln_buf_release(&code);
    kiln_buf_release(&msg);
    return 0;
}

/* ---- tags list pages and Link headers (pure) ------------------------------------ */

static char *cleaned(const char *s)
{
    struct kiln_buf b = KILN_BUF_INIT;
    add_clean(&b, s);
    char *out = kiln_buf_detach(&b, NULL);
    kiln_buf_release(&b);
    return out;
}

int kiln_registry_parse_tags(const char *body, size_t len, struct kiln_strv *out,
                             struct kiln_error **err)
{
    if (len > KILN_REGISTRY_TAGS_BODY_MAX)
        return kiln_error_set(err, KILN_ETOOBIG, 0, "tags list: %zu bytes, more than %zu", len,
                              KILN_REGISTRY_TAGS_BODY_MAX);
    json_error_t je;
    json_t *root = body ? json_loadb(body, len, JSON_REJECT_DUPLICATES, &je) : NULL;
    if (!root)
        return kiln_error_set(err, KILN_EINVAL, 0, "tags list: not a JSON document");
    json_t *tags = json_object_get(root, "tags");
    int rc = 0;
    if (!json_is_object(root))
        rc = kiln_error_set(err, KILN_EINVAL, 0, "tags list: not a JSON object");
    else if (tags && !json_is_null(tags) && !json_is_array(tags))
        rc = kiln_error_set(err, KILN_EINVAL, 0, "tags list: \"tags\" is not an array");
    else if (json_array_size(tags) > KILN_REGISTRY_TAGS_MAX)
        rc = kiln_error_set(err, KILN_ETOOBIG, 0, "tags list: %zu tags, more than %d",
                            json_array_size(tags), KILN_REGISTRY_TAGS_MAX);
    size_t i;
    json_t *t;
    if (rc == 0 && json_is_array(tags)) {
        json_array_foreach(tags, i, t)
        {
            const char *v = json_string_value(t);
            if (!v) {
                rc = kiln_error_set(err, KILN_EINVAL, 0, "tags list: entry %zu is not a string", i);
                break;
            }
            if (json_string_length(t) != strlen(v) || !kiln_registry_tag_valid(v)) {
                _cleanup_free_ char *shown = cleaned(v);
                rc = kiln_error_set(err, KILN_EINVAL, 0, "invalid tag '%.128s' in the tags list",
                                    shown);
                break;
            }
        }
    }
    size_t n = 0;
    if (rc == 0 && json_is_array(tags)) {
        json_array_foreach(tags, i, t) kiln_strv_push(out, json_string_value(t));
        n = json_array_size(tags);
    }
    json_decref(root);
    return rc < 0 ? rc : (int)n;
}

static bool tchar(char c)
{
    return isalnum((unsigned char)c) || (c && strchr("!#$%&'*+-.^_`|~", c));
}

static const char *skip_ws(const char *p)
{
    while (*p == ' ' || *p == '\t')
        p++;
    return p;
}

/* Whether a rel value (a space-separated list of relation types) holds "next". */
static bool rel_has_next(const char *v)
{
    for (;;) {
        while (*v == ' ' || *v == '\t')
            v++;
        if (!*v)
            return false;
        size_t n = strcspn(v, " \t");
        if (n == 4 && strncasecmp(v, "next", 4) == 0)
            return true;
        v += n;
    }
}

char *kiln_registry_link_next(const char *value)
{
    if (!value)
        return NULL;
    const char *p = value;
    for (;;) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        if (*p != '<')
            return NULL;
        const char *uri = p + 1;
        const char *end = strchr(uri, '>');
        if (!end)
            return NULL;
        p = end + 1;
        bool seen_rel = false, next = false;
        for (;;) {
            p = skip_ws(p);
            if (*p != ';')
                break;
            p = skip_ws(p + 1);
            const char *name = p;
            while (tchar(*p))
                p++;
            size_t nlen = (size_t)(p - name);
            if (nlen == 0)
                return NULL;
            p = skip_ws(p);
            struct kiln_buf v = KILN_BUF_INIT;
            if (*p == '=') {
                p = skip_ws(p + 1);
                if (*p == '"') {
                    for (p++; *p && *p != '"'; p++) {
                        if (*p == '\\' && p[1])
                            p++;
                        kiln_buf_addch(&v, *p);
                    }
                    if (*p != '"') {
                        kiln_buf_release(&v);
                        return NULL;
                    }
                    p++;
                } else {
                    const char *t = p;
                    while (tchar(*p))
                        p++;
                    kiln_buf_add(&v, t, (size_t)(p - t));
                }
            }
            if (!seen_rel && nlen == 3 && strncasecmp(name, "rel", 3) == 0) {
                seen_rel = true;
                next = v.buf && rel_has_next(v.buf);
            }
            kiln_buf_release(&v);
        }
        if (*p && *p != ',')
            return NULL;
        if (next) {
            if (end == uri)
                return NULL;
            for (const char *c = uri; c < end; c++)
                if ((unsigned char)*c <= 0x20 || *c == 0x7f)
                    return NULL;
            return kiln_xstrndup(uri, (size_t)(end - uri));
        }
        if (!*p)
            return NULL;
    }
}

static const char *reason(long status)
{
    switch (status) {
    case 400:
        return "bad request";
    case 401:
        return "unauthorized";
    case 403:
        return "forbidden";
    case 404:
        return "not found";
    case 405:
        return "method not allowed";
    case 408:
        return "request timeout";
    case 409:
        return "conflict";
    case 413:
        return "payload too large";
    case 416:
        return "range not satisfiable";
    case 429:
        return "too many requests";
    case 500:
        return "internal server error";
    case 502:
        return "bad gateway";
    case 503:
        return "service unavailable";
    case 504:
        return "gateway timeout";
    default:
        return "unexpected status";
    }
}

static int status_code(long status)
{
    switch (status) {
    case 400:
        return KILN_EINVAL;
    case 401:
    case 403:
        return KILN_EAUTH;
    case 404:
        return KILN_ENOTFOUND;
    case 409:
        return KILN_ECONFLICT;
    case 413:
        return KILN_ETOOBIG;
    default:
        return KILN_ENET;
    }
}

static int auth_required(struct kiln_registry *r, const char *repo, struct kiln_error **err)
{
    if (repo)
        return kiln_error_set(err, KILN_EAUTH, 0, "authentication required for '%s/%s'", r->name,
                              repo);
    return kiln_error_set(err, KILN_EAUTH, 0, "authentication required for '%s'", r->name);
}

static int auth_failed(struct kiln_registry *r, const char *repo, struct kiln_error **err)
{
    if (repo)
        return kiln_error_set(err, KILN_EAUTH, 0,
                              "authentication failed for '%s/%s': credentials rejected", r->name,
                              repo);
    return kiln_error_set(err, KILN_EAUTH, 0,
                          "authentication failed for '%s': credentials rejected", r->name);
}

static int denied(const char *msg, struct kiln_error **err)
{
    return kiln_error_set(err, KILN_EAUTH, 0, "denied: %s",
                          msg ? msg : "requested access to the resource is denied");
}

/* The error of a final non-success response. `what` names the subject. */
static int http_error(struct kiln_registry *r, const char *repo, const char *what,
                      const struct kiln_http_response *resp, struct kiln_error **err)
{
    _cleanup_free_ char *code = NULL;
    _cleanup_free_ char *msg = NULL;
    kiln_registry_parse_errors(resp->body.buf, resp->body.len, &code, &msg);
    if (resp->status == 403 || (code && strcmp(code, "DENIED") == 0))
        return denied(msg, err);
    if (resp->status == 401)
        return r->have_cred ? auth_failed(r, repo, err) : auth_required(r, repo, err);
    const char *text = msg ? msg : reason(resp->status);
    if (resp->attempts > 1)
        return kiln_error_set(err, status_code(resp->status), 0, "%s: %s (HTTP %ld, %d attempts)",
                              what, text, resp->status, resp->attempts);
    return kiln_error_set(err, status_code(resp->status), 0, "%s: %s (HTTP %ld)", what, text,
                          resp->status);
}

/* ---- session ------------------------------------------------------------------ */

static bool valid_registry_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 255)
        return false;
    const char *port = NULL;
    if (s[0] == '[') {
        const char *end = strchr(s, ']');
        if (!end || end == s + 1)
            return false;
        for (const char *p = s + 1; p < end; p++)
            if (!isxdigit((unsigned char)*p) && *p != ':' && *p != '.')
                return false;
        if (end[1] == ':')
            port = end + 2;
        else if (end[1])
            return false;
    } else {
        const char *p = s;
        for (; *p && *p != ':'; p++)
            if (!isalnum((unsigned char)*p) && *p != '.' && *p != '-' && *p != '_')
                return false;
        if (p == s || s[0] == '.' || s[0] == '-')
            return false;
        if (*p == ':')
            port = p + 1;
    }
    if (port) {
        size_t pn = strlen(port);
        if (pn == 0 || pn > 5 || strspn(port, "0123456789") != pn ||
            strtoul(port, NULL, 10) > 65535)
            return false;
    }
    return true;
}

int kiln_registry_new(const char *registry, const struct kiln_registry_options *o,
                      struct kiln_registry **ret, struct kiln_error **err)
{
    static const struct kiln_registry_options none;
    if (!o)
        o = &none;
    if (!registry || !valid_registry_name(registry))
        return kiln_error_set(err, KILN_EINVAL, 0, "invalid registry '%s': want host[:port]",
                              registry ? registry : "");
    struct kiln_http *http = o->shared_http;
    if (!http) {
        int rc = kiln_http_new(&o->http, &http, err);
        if (rc < 0)
            return rc;
    }
    struct kiln_registry *r = kiln_xcalloc(1, sizeof(*r));
    r->http = http;
    r->own_http = !o->shared_http;
    r->name = kiln_xstrdup(registry);
    const char *endpoint = registry;
    if (strcasecmp(registry, "docker.io") == 0 || strcasecmp(registry, "index.docker.io") == 0)
        endpoint = "registry-1.docker.io";
    r->base = kiln_xasprintf("https://%s", endpoint);
    r->hostport = kiln_http_url_hostport(r->base);
    r->cred = (struct kiln_cred)KILN_CRED_INIT;
    if (o->cred && kiln_cred_present(o->cred)) {
        r->cred.username = dup_or_null(o->cred->username);
        r->cred.password = dup_or_null(o->cred->password);
        r->cred.identity_token = dup_or_null(o->cred->identity_token);
        r->have_cred = true;
    }
    r->tokens = kiln_token_cache_new();
    pthread_mutex_init(&r->lock, NULL);
    r->scheme = KILN_AUTH_NONE;
    r->chunk_size = o->chunk_size;
    r->max_resumes = o->max_resumes > 0 ? o->max_resumes : KILN_REGISTRY_MAX_RESUMES;
    r->client_id = kiln_xstrdup(o->client_id ? o->client_id : "kiln");
    r->progress = o->progress;
    r->progress_data = o->progress_data;
    *ret = r;
    return 0;
}

void kiln_registry_free(struct kiln_registry *r)
{
    if (!r)
        return;
    if (r->own_http)
        kiln_http_free(r->http);
    free(r->name);
    free(r->base);
    free(r->hostport);
    kiln_cred_release(&r->cred);
    kiln_token_cache_free(r->tokens);
    pthread_mutex_destroy(&r->lock);
    free(r->realm);
    free(r->service);
    free(r->client_id);
    free(r);
}

const char *kiln_registry_name(const struct kiln_registry *r)
{
    return r->name;
}

/* ---- the auth flow ------------------------------------------------------------ */

struct op {
    const char *repo;      /* for messages; NULL for the registry itself */
    const char *scope;     /* token scope; "" for none */
    const char *alt_scope; /* a cached token for this scope serves too, or NULL */
};

enum sent { SENT_NONE, SENT_BASIC, SENT_CACHED, SENT_FRESH };

/* Ask the realm for a token for op->scope, cache it, return a copy. */
static int fetch_token(struct kiln_registry *r, const struct op *op, const char *realm,
                       const char *service, char **ret_token, struct kiln_error **err)
{
    struct kiln_challenge ch = {KILN_AUTH_BEARER, (char *)realm, (char *)service, NULL, NULL};
    struct kiln_http_request q = {0};
    struct kiln_http_response resp;
    kiln_http_response_init(&resp);
    _cleanup_secret_ char *form = NULL;
    _cleanup_secret_ char *basic = NULL;
    _cleanup_secret_ char *basic_line = NULL;
    _cleanup_free_ char *url = NULL;
    const char *headers[3] = {NULL, NULL, NULL};

    if (r->cred.identity_token) {
        form = kiln_auth_token_form(&ch, op->scope, &r->cred, r->client_id);
        q.method = "POST";
        q.url = realm;
        q.body = form;
        q.body_len = form ? strlen(form) : 0;
        headers[0] = "Content-Type: application/x-www-form-urlencoded";
    } else {
        url = kiln_auth_token_url(&ch, op->scope);
        q.url = url;
        q.flags = KILN_HTTP_FOLLOW;
        basic = kiln_auth_basic_header(&r->cred);
        if (basic) {
            basic_line = kiln_xasprintf("Authorization: %s", basic);
            headers[0] = basic_line;
        }
    }
    if (!q.url)
        return kiln_error_set(err, KILN_EINVAL, 0, "registry '%s': bad token realm", r->name);
    q.headers = headers;
    q.body_max = KILN_AUTH_TOKEN_RESPONSE_MAX;
    q.progress = r->progress;
    q.progress_data = r->progress_data;

    _cleanup_free_ char *shown = kiln_http_url_redact(realm);
    int rc = kiln_http_do(r->http, &q, &resp, err);
    if (rc < 0) {
        kiln_http_response_release(&resp);
        kiln_error_prefix(err, "token request");
        return rc;
    }
    if (resp.status != 200) {
        if (resp.status == 401)
            rc = r->have_cred ? auth_failed(r, op->repo, err) : auth_required(r, op->repo, err);
        else {
            _cleanup_free_ char *what = kiln_xasprintf("token request to '%s'", shown);
            rc = http_error(r, op->repo, what, &resp, err);
        }
        kiln_http_response_release(&resp);
        return rc;
    }
    char *token = NULL;
    time_t expires = 0;
    rc = kiln_auth_token_response_parse(resp.body.buf, resp.body.len, time(NULL), &token, NULL,
                                        &expires, err);
    explicit_bzero(resp.body.buf, resp.body.len);
    kiln_http_response_release(&resp);
    if (rc < 0) {
        kiln_error_prefix(err, "token from '%s'", shown);
        return rc;
    }
    kiln_token_cache_put(r->tokens, realm, service, op->scope, token, expires);
    *ret_token = token;
    return 0;
}

/* The Authorization line for a request to the registry, or NULL. */
static int auth_line(struct kiln_registry *r, const struct op *op, bool *fetched, char **ret_line,
                     enum sent *ret_sent, struct kiln_error **err)
{
    pthread_mutex_lock(&r->lock);
    enum kiln_auth_scheme scheme = r->scheme;
    _cleanup_free_ char *realm = dup_or_null(r->realm);
    _cleanup_free_ char *service = dup_or_null(r->service);
    pthread_mutex_unlock(&r->lock);

    *ret_line = NULL;
    *ret_sent = SENT_NONE;
    if (scheme == KILN_AUTH_BASIC) {
        _cleanup_secret_ char *basic = kiln_auth_basic_header(&r->cred);
        if (basic) {
            *ret_line = kiln_xasprintf("Authorization: %s", basic);
            *ret_sent = SENT_BASIC;
        }
        return 0;
    }
    if (scheme != KILN_AUTH_BEARER || !realm)
        return 0;
    time_t now = time(NULL);
    _cleanup_secret_ char *token = NULL;
    if (op->alt_scope)
        token = kiln_token_cache_get(r->tokens, realm, service, op->alt_scope, now);
    if (!token)
        token = kiln_token_cache_get(r->tokens, realm, service, op->scope, now);
    if (!token) {
        int rc = fetch_token(r, op, realm, service, &token, err);
        if (rc < 0)
            return rc;
        *fetched = true;
    }
    *ret_line = kiln_xasprintf("Authorization: Bearer %s", token);
    *ret_sent = *fetched ? SENT_FRESH : SENT_CACHED;
    return 0;
}

static bool to_registry(struct kiln_registry *r, const char *url)
{
    _cleanup_free_ char *hp = kiln_http_url_hostport(url);
    return hp && strcmp(hp, r->hostport) == 0;
}

/*
 * Do a request with the auth flow. `q->headers` is replaced by `extra`
 * plus Authorization. Returns 0 with the final response (any status but a
 * 401 that could be answered), or an error.
 */
static int reg_do(struct kiln_registry *r, const struct op *op, struct kiln_http_request *q,
                  const char *const *extra, struct kiln_http_response *resp,
                  struct kiln_error **err)
{
    bool send_auth = to_registry(r, q->url);
    bool fetched = false;
    bool redone_cached = false;
    if (!q->progress) {
        q->progress = r->progress;
        q->progress_data = r->progress_data;
    }
    for (int round = 0; round < 4; round++) {
        _cleanup_secret_ char *line = NULL;
        enum sent sent = SENT_NONE;
        if (send_auth) {
            int rc = auth_line(r, op, &fetched, &line, &sent, err);
            if (rc < 0)
                return rc;
        }
        const char *headers[8];
        size_t n = 0;
        for (const char *const *p = extra; p && *p && n < KILN_ARRAY_SIZE(headers) - 2; p++)
            headers[n++] = *p;
        if (line)
            headers[n++] = line;
        headers[n] = NULL;
        q->headers = headers;
        int rc = kiln_http_do(r->http, q, resp, err);
        q->headers = NULL;
        if (rc < 0)
            return rc;
        if (resp->status != 401 || !send_auth)
            return 0;
        if (q->read && !q->seek && resp->sent > 0)
            return 0; /* cannot resend this body: the caller resumes */

        struct kiln_challenge ch = KILN_CHALLENGE_INIT;
        struct kiln_error *perr = NULL;
        if (!resp->www_authenticate ||
            kiln_auth_challenge_parse(resp->www_authenticate, &ch, &perr) < 0) {
            kiln_error_free(perr);
            if (sent != SENT_NONE)
                return auth_failed(r, op->repo, err);
            return r->have_cred ? auth_failed(r, op->repo, err) : auth_required(r, op->repo, err);
        }
        pthread_mutex_lock(&r->lock);
        r->scheme = ch.scheme;
        if (ch.scheme == KILN_AUTH_BEARER) {
            free(r->realm);
            free(r->service);
            r->realm = dup_or_null(ch.realm);
            r->service = dup_or_null(ch.service);
        }
        pthread_mutex_unlock(&r->lock);

        if (ch.scheme == KILN_AUTH_BASIC) {
            kiln_challenge_release(&ch);
            if (!r->have_cred || !r->cred.username)
                return auth_required(r, op->repo, err);
            if (sent == SENT_BASIC)
                return auth_failed(r, op->repo, err);
            continue;
        }
        if (sent == SENT_FRESH) {
            kiln_challenge_release(&ch);
            if (!r->have_cred)
                return auth_required(r, op->repo, err);
            _cleanup_free_ char *code = NULL;
            _cleanup_free_ char *msg = NULL;
            kiln_registry_parse_errors(resp->body.buf, resp->body.len, &code, &msg);
            return denied(code && strcmp(code, "DENIED") == 0 ? msg : NULL, err);
        }
        if (sent == SENT_CACHED) {
            /* the cached token went stale or was revoked: ask once more */
            if (redone_cached) {
                kiln_challenge_release(&ch);
                return r->have_cred ? auth_failed(r, op->repo, err)
                                    : auth_required(r, op->repo, err);
            }
            redone_cached = true;
            kiln_token_cache_drop(r->tokens, ch.realm, ch.service, op->scope);
            if (op->alt_scope)
                kiln_token_cache_drop(r->tokens, ch.realm, ch.service, op->alt_scope);
        }
        kiln_challenge_release(&ch);
        /* the next round fetches a token (auth_line) */
    }
    return r->have_cred ? auth_failed(r, op->repo, err) : auth_required(r, op->repo, err);
}

int kiln_registry_ping(struct kiln_registry *r, struct kiln_error **err)
{
    _cleanup_free_ char *url = kiln_xasprintf("%s/v2/", r->base);
    struct op op = {NULL, "", NULL};
    struct kiln_http_request q = {.url = url};
    struct kiln_http_response resp;
    kiln_http_response_init(&resp);
    int rc = reg_do(r, &op, &q, NULL, &resp, err);
    if (rc == 0 && resp.status != 200) {
        _cleanup_free_ char *what = kiln_xasprintf("registry '%s'", r->name);
        rc = http_error(r, NULL, what, &resp, err);
    }
    kiln_http_response_release(&resp);
    return rc;
}

/* ---- manifests ---------------------------------------------------------------- */

static char *pull_scope(const char *repo)
{
    return kiln_xasprintf("repository:%s:pull", repo);
}

static char *push_scope(const char *repo)
{
    return kiln_xasprintf("repository:%s:pull,push", repo);
}

static char *media_type_of(const char *content_type)
{
    if (!content_type)
        return NULL;
    size_t n = strcspn(content_type, ";");
    while (n && (content_type[n - 1] == ' ' || content_type[n - 1] == '\t'))
        n--;
    return n ? kiln_xstrndup(content_type, n) : NULL;
}

void kiln_registry_manifest_release(struct kiln_registry_manifest *m)
{
    if (!m)
        return;
    free(m->data);
    free(m->media_type);
    free(m->digest);
    *m = (struct kiln_registry_manifest)KILN_REGISTRY_MANIFEST_INIT;
}

static char *ref_display(struct kiln_registry *r, const char *repo, const char *ref, bool digest)
{
    return kiln_xasprintf("%s/%s%c%s", r->name, repo, digest ? '@' : ':', ref);
}

static int manifest_request(struct kiln_registry *r, const char *method, const char *repo,
                            const char *ref, const char *accept, struct kiln_http_response *resp,
                            bool *ret_is_digest, char **ret_what, struct kiln_error **err)
{
    int rc = check_repo(repo, err);
    if (rc < 0)
        return rc;
    rc = check_ref(ref, ret_is_digest, err);
    if (rc < 0)
        return rc;
    if (accept && (!*accept || strpbrk(accept, "\r\n")))
        return kiln_error_set(err, KILN_EINVAL, 0, "invalid Accept value");
    _cleanup_free_ char *url = kiln_xasprintf("%s/v2/%s/manifests/%s", r->base, repo, ref);
    _cleanup_free_ char *scope = pull_scope(repo);
    _cleanup_free_ char *alt = push_scope(repo);
    _cleanup_free_ char *accept_line =
        kiln_xasprintf("Accept: %s", accept ? accept : KILN_REGISTRY_MANIFEST_ACCEPT);
    const char *extra[] = {accept_line, NULL};
    struct op op = {repo, scope, alt};
    struct kiln_http_request q = {.method = method, .url = url, .flags = KILN_HTTP_FOLLOW};
    q.body_max = KILN_REGISTRY_MANIFEST_MAX;
    _cleanup_free_ char *shown = ref_display(r, repo, ref, *ret_is_digest);
    *ret_what = kiln_xasprintf("manifest '%s'", shown);
    rc = reg_do(r, &op, &q, extra, resp, err);
    if (rc < 0) {
        if (rc == -KILN_ETOOBIG)
            return kiln_error_set(err, KILN_ETOOBIG, 0, "%s: larger than %zu bytes", *ret_what,
                                  KILN_REGISTRY_MANIFEST_MAX);
        return rc;
    }
    return 0;
}

int kiln_registry_manifest_get(struct kiln_registry *r, const char *repo, const char *ref,
                               const char *accept, struct kiln_registry_manifest *ret,
                               struct kiln_error **err)
{
    struct kiln_http_response resp;
    kiln_http_response_init(&resp);
    _cleanup_free_ char *what = NULL;
    _cleanup_free_ char *digest = NULL;
    bool is_digest = false;
    int rc = manifest_request(r, "GET", repo, ref, accept, &resp, &is_digest, &what, err);
    if (rc < 0)
        goto out;
    if (resp.status != 200) {
        rc = http_error(r, repo, what, &resp, err);
        goto out;
    }
    char hex[KILN_SHA256_HEX_LEN + 1];
    kiln_sha256_hex(resp.body.buf, resp.body.len, hex);
    digest = kiln_xasprintf("sha256:%s", hex);
    if (is_digest && strcmp(digest, ref) != 0) {
        rc = kiln_error_set(err, KILN_ENET, 0, "%s: digest mismatch: got %s", what, digest);
        goto out;
    }
    if (resp.docker_content_digest && strncmp(resp.docker_content_digest, "sha256:", 7) == 0 &&
        strcmp(resp.docker_content_digest, digest) != 0) {
        rc = kiln_error_set(err, KILN_ENET, 0,
                            "%s: digest mismatch: the registry says %.80s, the bytes are %s", what,
                            resp.docker_content_digest, digest);
        goto out;
    }
    ret->media_type = media_type_of(resp.content_type);
    ret->digest = TAKE_PTR(digest);
    ret->data = kiln_buf_detach(&resp.body, &ret->len);
    rc = 0;
out:
    kiln_http_response_release(&resp);
    return rc;
}

int kiln_registry_manifest_head(struct kiln_registry *r, const char *repo, const char *ref,
                                const char *accept, struct kiln_registry_manifest *ret,
                                struct kiln_error **err)
{
    struct kiln_http_response resp;
    kiln_http_response_init(&resp);
    _cleanup_free_ char *what = NULL;
    bool is_digest = false;
    int rc = manifest_request(r, "HEAD", repo, ref, accept, &resp, &is_digest, &what, err);
    if (rc < 0)
        goto out;
    if (resp.status == 404) {
        rc = 0;
        goto out;
    }
    if (resp.status != 200) {
        rc = http_error(r, repo, what, &resp, err);
        goto out;
    }
    if (is_digest && resp.docker_content_digest && strcmp(resp.docker_content_digest, ref) != 0) {
        rc = kiln_error_set(err, KILN_ENET, 0, "%s: the registry answered for digest '%.80s'", what,
                            resp.docker_content_digest);
        goto out;
    }
    ret->data = NULL;
    ret->len = resp.content_length > 0 ? (size_t)resp.content_length : 0;
    ret->media_type = media_type_of(resp.content_type);
    if (resp.docker_content_digest && kiln_registry_digest_kind(resp.docker_content_digest) >= 0)
        ret->digest = kiln_xstrdup(resp.docker_content_digest);
    else
        ret->digest = is_digest ? kiln_xstrdup(ref) : NULL;
    rc = 1;
out:
    kiln_http_response_release(&resp);
    return rc;
}

int kiln_registry_manifest_put(struct kiln_registry *r, const char *repo, const char *ref,
                               const char *media_type, const void *data, size_t len,
                               char **ret_digest, struct kiln_error **err)
{
    bool is_digest = false;
    int rc = check_repo(repo, err);
    if (rc < 0)
        return rc;
    rc = check_ref(ref, &is_digest, err);
    if (rc < 0)
        return rc;
    if (!media_type || !*media_type || strpbrk(media_type, "\r\n"))
        return kiln_error_set(err, KILN_EINVAL, 0, "manifest put: invalid media type");
    if (len > KILN_REGISTRY_MANIFEST_MAX)
        return kiln_error_set(err, KILN_ETOOBIG, 0, "manifest larger than %zu bytes",
                              KILN_REGISTRY_MANIFEST_MAX);
    char hex[KILN_SHA256_HEX_LEN + 1];
    kiln_sha256_hex(data, len, hex);
    _cleanup_free_ char *digest = kiln_xasprintf("sha256:%s", hex);
    _cleanup_free_ char *shown = ref_display(r, repo, ref, is_digest);
    if (is_digest && strcmp(digest, ref) != 0)
        return kiln_error_set(err, KILN_EINVAL, 0, "manifest '%s': the bytes have digest %s", shown,
                              digest);

    _cleanup_free_ char *url = kiln_xasprintf("%s/v2/%s/manifests/%s", r->base, repo, ref);
    _cleanup_free_ char *scope = push_scope(repo);
    _cleanup_free_ char *ct = kiln_xasprintf("Content-Type: %s", media_type);
    const char *extra[] = {ct, NULL};
    struct op op = {repo, scope, NULL};
    struct kiln_http_request q = {.method = "PUT", .url = url, .body = data, .body_len = len};
    if (!data)
        q.body = "";
    struct kiln_http_response resp;
    kiln_http_response_init(&resp);
    _cleanup_free_ char *what = kiln_xasprintf("manifest '%s'", shown);
    rc = reg_do(r, &op, &q, extra, &resp, err);
    if (rc < 0)
        goto out;
    if (resp.status < 200 || resp.status > 299) {
        rc = http_error(r, repo, what, &resp, err);
        goto out;
    }
    if (resp.docker_content_digest && strcmp(resp.docker_content_digest, digest) != 0) {
        rc = kiln_error_set(err, KILN_ENET, 0,
                            "%s: the registry stored digest %.80s, the bytes sent are %s", what,
                            resp.docker_content_digest, digest);
        goto out;
    }
    if (ret_digest)
        *ret_digest = TAKE_PTR(digest);
    rc = 0;
out:
    kiln_http_response_release(&resp);
    return rc;
}

int kiln_registry_manifest_delete(struct kiln_registry *r, const char *repo, const char *digest,
                                  struct kiln_error **err)
{
    int rc = check_repo_digest(repo, digest, err);
    if (rc < 0)
        return rc;
    _cleanup_free_ char *url = kiln_xasprintf("%s/v2/%s/manifests/%s", r->base, repo, digest);
    _cleanup_free_ char *scope = kiln_xasprintf("repository:%s:delete", repo);
    _cleanup_free_ char *shown = ref_display(r, repo, digest, true);
    _cleanup_free_ char *what = kiln_xasprintf("manifest '%s'", shown);
    struct op op = {repo, scope, NULL};
    struct kiln_http_request q = {.method = "DELETE", .url = url};
    struct kiln_http_response resp;
    kiln_http_response_init(&resp);
    rc = reg_do(r, &op, &q, NULL, &resp, err);
    if (rc < 0)
        goto out;
    if (resp.status == 202 || resp.status == 200 || resp.status == 204)
        rc = 0;
    else if (resp.status == 405)
        rc = kiln_error_set(err, KILN_EUNSUPPORTED, 0,
                            "%s: the registry does not allow deletes (HTTP 405; "
                            "docker-registry: storage.delete.enabled)",
                            what);
    else
        rc = http_error(r, repo, what, &resp, err);
out:
    kiln_http_response_release(&resp);
    return rc;
}

/* ---- tags ----------------------------------------------------------------------- */

/* GET one tags list page into *page; *ret_unknown when the registry answered 404. */
/*
 * The next page's URL from a tags page's Link header (rel="next"), resolved
 * against the URL that answered; NULL when there is none or it leads to
 * another origin (credentials are never sent elsewhere by a Link).
 */
static char *link_next_url(const struct kiln_http_response *resp, const char *url)
{
    if (!resp->link)
        return NULL;
    _cleanup_free_ char *ref = kiln_registry_link_next(resp->link);
    const char *base = resp->url ? resp->url : url;
    char *next = ref ? kiln_http_url_join(base, ref) : NULL;
    if (next && !kiln_http_same_origin(next, base)) {
        free(next);
        next = NULL;
    }
    return next;
}

static int tags_page(struct kiln_registry *r, const char *repo, const char *url, const char *what,
                     struct kiln_strv *page, bool *ret_unknown, char **ret_next,
                     struct kiln_error **err)
{
    _cleanup_free_ char *scope = pull_scope(repo);
    _cleanup_free_ char *alt = push_scope(repo);
    const char *extra[] = {"Accept: application/json", NULL};
    struct op op = {repo, scope, alt};
    struct kiln_http_request q = {.url = url, .flags = KILN_HTTP_FOLLOW};
    q.body_max = KILN_REGISTRY_TAGS_BODY_MAX;
    struct kiln_http_response resp;
    kiln_http_response_init(&resp);
    int rc = reg_do(r, &op, &q, extra, &resp, err);
    if (rc < 0) {
        if (rc == -KILN_ETOOBIG)
            rc = kiln_error_set(err, KILN_ETOOBIG, 0, "%s: a page larger than %zu bytes", what,
                                KILN_REGISTRY_TAGS_BODY_MAX);
        goto out;
    }
    *ret_unknown = resp.status == 404;
    if (resp.status == 404)
        goto out;
    if (resp.status != 200) {
        rc = http_error(r, repo, what, &resp, err);
        goto out;
    }
    rc = kiln_registry_parse_tags(resp.body.buf, resp.body.len, page, err);
    if (rc < 0)
        kiln_error_prefix(err, "%s", what);
    else
        *ret_next = link_next_url(&resp, url);
out:
    kiln_http_response_release(&resp);
    return rc;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The distinct strings of v[0..n) sorted, into *seen (n_seen of them). */
static void sorted_unique(char *const *v, size_t n, char ***seen, size_t *n_seen)
{
    *seen = kiln_xreallocarray(*seen, n ? n : 1, sizeof(**seen));
    if (n) {
        memcpy(*seen, v, n * sizeof(*v));
        qsort(*seen, n, sizeof(**seen), cmp_str);
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (k == 0 || strcmp((*seen)[k - 1], (*seen)[i]) != 0)
            (*seen)[k++] = (*seen)[i];
    *n_seen = k;
}

int kiln_registry_tags_list_n(struct kiln_registry *r, const char *repo, size_t page_size,
                              struct kiln_strv *ret, struct kiln_error **err)
{
    int rc = check_repo(repo, err);
    if (rc < 0)
        return rc;
    if (page_size == 0)
        page_size = KILN_REGISTRY_TAGS_PAGE;
    if (page_size > 10000)
        page_size = 10000;
    _cleanup_free_ char *what = kiln_xasprintf("tags of '%s/%s'", r->name, repo);
    struct kiln_strv raw = KILN_STRV_INIT; /* every page's tags, in order */
    char **seen = NULL;                    /* the distinct ones, sorted (borrowed from raw) */
    size_t n_seen = 0;
    _cleanup_free_ char *last = NULL, *next = NULL;
    for (;;) {
        /* the registry's Link to the next page when it gave one, else n and last */
        _cleanup_free_ char *url =
            next ? TAKE_PTR(next)
            : last
                ? kiln_xasprintf("%s/v2/%s/tags/list?n=%zu&last=%s", r->base, repo, page_size, last)
                : kiln_xasprintf("%s/v2/%s/tags/list?n=%zu", r->base, repo, page_size);
        struct kiln_strv page = KILN_STRV_INIT;
        bool unknown = false;
        rc = tags_page(r, repo, url, what, &page, &unknown, &next, err);
        if (rc < 0 || unknown) {
            kiln_strv_release(&page);
            if (rc < 0)
                goto out;
            break;
        }
        size_t fresh = 0;
        for (size_t i = 0; i < page.n; i++)
            if (!n_seen || !bsearch(&page.v[i], seen, n_seen, sizeof(*seen), cmp_str))
                fresh++;
        if (raw.n + page.n > 2 * (size_t)KILN_REGISTRY_TAGS_MAX) {
            kiln_strv_release(&page);
            rc = kiln_error_set(err, KILN_ETOOBIG, 0, "%s: more than %d tags", what,
                                KILN_REGISTRY_TAGS_MAX);
            goto out;
        }
        for (size_t i = 0; i < page.n; i++)
            kiln_strv_push_take(&raw, TAKE_PTR(page.v[i]));
        size_t got = page.n;
        free(last);
        last = got ? kiln_xstrdup(raw.v[raw.n - 1]) : NULL;
        kiln_strv_release(&page);
        sorted_unique(raw.v, raw.n, &seen, &n_seen);
        if (n_seen > KILN_REGISTRY_TAGS_MAX) {
            rc = kiln_error_set(err, KILN_ETOOBIG, 0, "%s: more than %d tags", what,
                                KILN_REGISTRY_TAGS_MAX);
            goto out;
        }
        /* a page with nothing new ends the list (last ignored, or a Link in a
         * loop); without a Link, so does a short page or a long one (n ignored) */
        if (fresh == 0 || (!next && got != page_size))
            break;
    }
    /* each tag once, where it first came */
    bool *done = kiln_xcalloc(n_seen ? n_seen : 1, sizeof(*done));
    for (size_t i = 0; i < raw.n && n_seen; i++) {
        char **hit = bsearch(&raw.v[i], seen, n_seen, sizeof(*seen), cmp_str);
        if (hit && !done[hit - seen]) {
            done[hit - seen] = true;
            kiln_strv_push(ret, raw.v[i]);
        }
    }
    free(done);
    rc = 0;
out:
    free(seen);
    kiln_strv_release(&raw);
    return rc;
}

int kiln_registry_tags_list(struct kiln_registry *r, const char *repo, struct kiln_strv *ret,
                            struct kiln_error **err)
{
    return kiln_registry_tags_list_n(r, repo, KILN_REGISTRY_TAGS_PAGE, ret, err);
}

/* ---- blobs -------------------------------------------------------------------- */

static int pause_ms(struct kiln_registry *r, long ms)
{
    while (ms > 0) {
        long step = ms > 100 ? 100 : ms;
        struct timespec ts = {step / 1000, (step % 1000) * 1000000L};
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
            ;
        ms -= step;
        if (r->progress && r->progress(r->progress_data, 0, 0) != 0)
            return -KILN_ECANCELLED;
    }
    return 0;
}

static long resume_delay(int n)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t rnd = (uint64_t)ts.tv_nsec * 0x9E3779B97F4A7C15ULL;
    return kiln_http_backoff_ms(n, 200, 4000, rnd ^ (rnd >> 31));
}

int kiln_registry_blob_head(struct kiln_registry *r, const char *repo, const char *digest,
                            uint64_t *ret_size, struct kiln_error **err)
{
    int rc = check_repo_digest(repo, digest, err);
    if (rc < 0)
        return rc;
    _cleanup_free_ char *url = kiln_xasprintf("%s/v2/%s/blobs/%s", r->base, repo, digest);
    _cleanup_free_ char *scope = pull_scope(repo);
    _cleanup_free_ char *alt = push_scope(repo);
    struct op op = {repo, scope, alt};
    struct kiln_http_request q = {.method = "HEAD", .url = url, .flags = KILN_HTTP_FOLLOW};
    struct kiln_http_response resp;
    kiln_http_response_init(&resp);
    rc = reg_do(r, &op, &q, NULL, &resp, err);
    if (rc < 0)
        goto out;
    if (resp.status == 404) {
        rc = 0;
    } else if (resp.status == 200) {
        if (ret_size)
            *ret_size = resp.content_length > 0 ? (uint64_t)resp.content_length : 0;
        rc = 1;
    } else {
        _cleanup_free_ char *what = kiln_xasprintf("blob '%s/%s@%s'", r->name, repo, digest);
        rc = http_error(r, repo, what, &resp, err);
    }
out:
    kiln_http_response_release(&resp);
    return rc;
}

struct blob_get {
    struct kiln_sha256 hash;
    bool verify;     /* hash what passes and check the digest at the end */
    uint64_t offset; /* blob offset of the first byte wanted */
    uint64_t count;  /* bytes passed on (from offset) */
    int64_t size;    /* expected size of the whole blob, or -1 */
    uint64_t start;  /* blob offset asked for in this attempt */
    uint64_t skip;   /* bytes still to drop in this attempt */
    bool started;    /* first body bytes of the attempt seen */
    bool fatal;      /* an error that no resume can fix */
    const struct kiln_http_response *resp;
    const char *what;
    kiln_registry_sink_fn sink;
    void *userdata;
};

static int parse_content_range_start(const char *v, uint64_t *ret)
{
    if (!v || strncasecmp(v, "bytes ", 6) != 0)
        return -1;
    const char *p = v + 6;
    while (*p == ' ')
        p++;
    if (!isdigit((unsigned char)*p))
        return -1;
    uint64_t s = 0;
    for (; isdigit((unsigned char)*p); p++) {
        if (s > (UINT64_MAX - 10) / 10)
            return -1;
        s = s * 10 + (uint64_t)(*p - '0');
    }
    if (*p != '-')
        return -1;
    *ret = s;
    return 0;
}

static int blob_write(void *ud, const void *data, size_t len, struct kiln_error **err)
{
    struct blob_get *g = ud;
    const char *p = data;
    if (!g->started) {
        g->started = true;
        g->skip = 0;
        if (g->resp->status == 206) {
            uint64_t s;
            if (parse_content_range_start(g->resp->content_range, &s) < 0 || s != g->start) {
                g->fatal = true;
                return kiln_error_set(err, KILN_ENET, 0,
                                      "%s: the registry answered range '%.60s' to a request from "
                                      "byte %llu",
                                      g->what, g->resp->content_range ? g->resp->content_range : "",
                                      (unsigned long long)g->start);
            }
        } else {
            g->skip = g->start; /* the whole blob again: drop what we have */
        }
    }
    if (g->skip) {
        size_t n = len < g->skip ? len : (size_t)g->skip;
        g->skip -= n;
        p += n;
        len -= n;
        if (!len)
            return 0;
    }
    if (g->size >= 0 && len > (uint64_t)g->size - g->offset - g->count) {
        g->fatal = true;
        return kiln_error_set(err, KILN_ENET, 0, "%s: more than the expected %lld bytes", g->what,
                              (long long)g->size);
    }
    if (g->verify)
        kiln_sha256_update(&g->hash, p, len);
    if (g->sink) {
        int rc = g->sink(g->userdata, p, len, err);
        if (rc < 0) {
            g->fatal = true;
            return rc;
        }
    }
    g->count += len;
    return 0;
}

int kiln_registry_blob_get(struct kiln_registry *r, const char *repo, const char *digest,
                           int64_t size, kiln_registry_sink_fn sink, void *userdata,
                           uint64_t *ret_size, struct kiln_error **err)
{
    return kiln_registry_blob_get_range(r, repo, digest, size, 0, 0, sink, userdata, ret_size, err);
}

int kiln_registry_blob_get_range(struct kiln_registry *r, const char *repo, const char *digest,
                                 int64_t size, uint64_t offset, unsigned flags,
                                 kiln_registry_sink_fn sink, void *userdata, uint64_t *ret_size,
                                 struct kiln_error **err)
{
    if (size >= 0 && offset > (uint64_t)size)
        return kiln_error_set(err, KILN_EINVAL, 0, "blob offset %llu is past its %lld bytes",
                              (unsigned long long)offset, (long long)size);
    int rc = check_repo_digest(repo, digest, err);
    if (rc < 0)
        return rc;
    if (size >= 0 && offset > 0 && offset == (uint64_t)size) {
        /* nothing left to get (and to check: offsets > 0 are not hashed); a Range
         * request from the end is unsatisfiable (416, which docker-registry sends
         * with the blob's Content-Length and a short body) */
        if (ret_size)
            *ret_size = 0;
        return 0;
    }
    _cleanup_free_ char *url = kiln_xasprintf("%s/v2/%s/blobs/%s", r->base, repo, digest);
    _cleanup_free_ char *scope = pull_scope(repo);
    _cleanup_free_ char *alt = push_scope(repo);
    _cleanup_free_ char *what = kiln_xasprintf("blob '%s/%s@%s'", r->name, repo, digest);
    struct op op = {repo, scope, alt};
    struct kiln_http_response resp;
    kiln_http_response_init(&resp);
    struct blob_get g = {.verify = offset == 0 && !(flags & KILN_BLOB_GET_NO_VERIFY),
                         .offset = offset,
                         .size = size,
                         .resp = &resp,
                         .what = what,
                         .sink = sink,
                         .userdata = userdata};
    if (g.verify)
        kiln_sha256_init(&g.hash);

    for (int resumes = 0;; resumes++) {
        _cleanup_free_ char *range = NULL;
        const char *extra[2] = {NULL, NULL};
        g.start = g.offset + g.count;
        if (g.start > 0) {
            range = kiln_xasprintf("Range: bytes=%llu-", (unsigned long long)g.start);
            extra[0] = range;
        }
        g.started = false;
        struct kiln_http_request q = {.url = url, .flags = KILN_HTTP_FOLLOW};
        q.write = blob_write;
        q.write_data = &g;
        rc = reg_do(r, &op, &q, extra, &resp, err);
        if (rc == 0) {
            if (resp.status == 200 || resp.status == 206)
                break;
            rc = http_error(r, repo, what, &resp, err);
            goto out;
        }
        /* body bytes came (the HTTP layer retries only when none did), also when
         * they were all skipped: a server ignoring Range, cut before the offset */
        bool progressed = resp.written > 0;
        if (g.fatal || (rc != -KILN_ENET && rc != -KILN_ETIMEOUT) || !progressed)
            goto out;
        if (resumes >= r->max_resumes) {
            kiln_error_prefix(err, "%s: gave up after %d resumes", what, resumes);
            goto out;
        }
        kiln_log(KILN_LOG_INFO, "registry: %s: interrupted at byte %llu, resuming", what,
                 (unsigned long long)g.count);
        rc = pause_ms(r, resume_delay(resumes + 1));
        if (rc < 0) {
            kiln_error_set(err, KILN_ECANCELLED, 0, "%s: cancelled", what);
            goto out;
        }
    }
    if (size >= 0 && g.offset + g.count != (uint64_t)size) {
        rc = kiln_error_set(err, KILN_ENET, 0, "%s: got %llu bytes, expected %lld", what,
                            (unsigned long long)(g.offset + g.count), (long long)size);
        goto out;
    }
    if (g.verify) {
        char hex[KILN_SHA256_HEX_LEN + 1];
        kiln_sha256_final_hex(&g.hash, hex);
        if (strcmp(hex, digest + 7) != 0) {
            rc =
                kiln_error_set(err, KILN_ENET, 0, "%s: digest mismatch: got sha256:%s (%llu bytes)",
                               what, hex, (unsigned long long)g.count);
            goto out;
        }
    }
    if (ret_size)
        *ret_size = g.count;
    rc = 0;
out:
    if (g.verify)
        kiln_sha256_release(&g.hash);
    kiln_http_response_release(&resp);
    return rc;
}

static int fd_sink(void *ud, const void *data, size_t len, struct kiln_error **err)
{
    int fd = *(int *)ud;
    const char *p = data;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return kiln_error_set(err, KILN_EIO, errno, "write blob");
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int kiln_registry_blob_get_fd(struct kiln_registry *r, const char *repo, const char *digest,
                              int64_t size, int fd, uint64_t *ret_size, struct kiln_error **err)
{
    return kiln_registry_blob_get(r, repo, digest, size, fd_sink, &fd, ret_size, err);
}

/* ---- uploads ------------------------------------------------------------------ */

enum hint {
    HINT_NONE,    /* fatal */
    HINT_RESUME,  /* ask the status and continue */
    HINT_RESTART, /* the registry lost the session */
    HINT_DIGEST,  /* the registry computed another digest */
};

struct kiln_upload {
    struct kiln_registry *reg;
    char *repo;
    char *scope;
    char *location; /* absolute */
    uint64_t offset;
    uint64_t min_chunk;
    long last_status;
    enum hint hint;
};

uint64_t kiln_upload_offset(const struct kiln_upload *u)
{
    return u->offset;
}

uint64_t kiln_upload_min_chunk(const struct kiln_upload *u)
{
    return u->min_chunk;
}

long kiln_upload_last_status(const struct kiln_upload *u)
{
    return u->last_status;
}

bool kiln_upload_digest_rejected(const struct kiln_upload *u)
{
    return u && u->hint == HINT_DIGEST;
}

void kiln_upload_free(struct kiln_upload *u)
{
    if (!u)
        return;
    free(u->repo);
    free(u->scope);
    free(u->location);
    free(u);
}

static int set_location(struct kiln_upload *u, const struct kiln_http_response *resp, bool required,
                        struct kiln_error **err)
{
    if (!resp->location) {
        if (required)
            return kiln_error_set(err, KILN_ENET, 0,
                                  "upload to '%s/%s': the registry sent no Location", u->reg->name,
                                  u->repo);
        return 0;
    }
    char *loc = kiln_http_url_join(resp->url, resp->location);
    if (!loc)
        return kiln_error_set(err, KILN_ENET, 0, "upload to '%s/%s': bad Location", u->reg->name,
                              u->repo);
    free(u->location);
    u->location = loc;
    return 0;
}

static uint64_t parse_u64(const char *s)
{
    uint64_t v = 0;
    if (!s)
        return 0;
    for (; isdigit((unsigned char)*s); s++) {
        if (v > (UINT64_MAX - 10) / 10)
            return 0;
        v = v * 10 + (uint64_t)(*s - '0');
    }
    return *s ? 0 : v;
}

int kiln_registry_upload_start(struct kiln_registry *r, const char *repo, const char *mount_digest,
                               const char *mount_from, struct kiln_upload **ret,
                               struct kiln_error **err)
{
    int rc = check_repo(repo, err);
    if (rc < 0)
        return rc;
    bool mount = mount_digest && mount_from;
    if (mount) {
        rc = check_digest(mount_digest, err);
        if (rc < 0)
            return rc;
        rc = check_repo(mount_from, err);
        if (rc < 0)
            return rc;
    }
    _cleanup_free_ char *url = NULL;
    _cleanup_free_ char *scope = NULL;
    if (mount) {
        url = kiln_xasprintf("%s/v2/%s/blobs/uploads/?mount=sha256%%3A%s&from=%s", r->base, repo,
                             mount_digest + 7, mount_from);
        scope = kiln_xasprintf("repository:%s:pull,push repository:%s:pull", repo, mount_from);
    } else {
        url = kiln_xasprintf("%s/v2/%s/blobs/uploads/", r->base, repo);
        scope = push_scope(repo);
    }
    _cleanup_free_ char *what = kiln_xasprintf("upload to '%s/%s'", r->name, repo);
    struct op op = {repo, scope, NULL};
    struct kiln_http_request q = {.method = "POST", .url = url};
    struct kiln_http_response resp;
    kiln_http_response_init(&resp);
    rc = reg_do(r, &op, &q, NULL, &resp, err);
    if (rc < 0)
        goto out;
    if (mount && resp.status == 201) {
        if (resp.docker_content_digest && strcmp(resp.docker_content_digest, mount_digest) != 0) {
            rc = kiln_error_set(err, KILN_ENET, 0, "%s: mounted digest %.80s, asked for %s", what,
                                resp.docker_content_digest, mount_digest);
            goto out;
        }
        *ret = NULL;
        rc = 1;
        goto out;
    }
    if (resp.status != 202) {
        rc = http_error(r, repo, what, &resp, err);
        goto out;
    }
    struct kiln_upload *u = kiln_xcalloc(1, sizeof(*u));
    u->reg = r;
    u->repo = kiln_xstrdup(repo);
    u->scope = push_scope(repo);
    rc = set_location(u, &resp, true, err);
    if (rc < 0) {
        kiln_upload_free(u);
        goto out;
    }
    uint64_t have = 0;
    if (resp.range && kiln_http_range_parse(resp.range, true, &have) == 0)
        u->offset = have;
    u->min_chunk = parse_u64(resp.chunk_min_length);
    u->last_status = resp.status;
    *ret = u;
    rc = 0;
out:
    kiln_http_response_release(&resp);
    return rc;
}

/*
 * Body sources: pread from an fd, memory, or the caller's read callback;
 * never rewound (see kiln_upload_patch).
 */
struct src {
    int fd; /* -1: memory or callback */
    const char *mem;
    kiln_http_read_fn read;
    void *read_data;
    uint64_t off;
    uint64_t len;
    uint64_t pos;
};

static int src_read(void *ud, void *buf, size_t cap, size_t *ret_n, struct kiln_error **err)
{
    struct src *s = ud;
    uint64_t left = s->len - s->pos;
    size_t want = left < cap ? (size_t)left : cap;
    if (s->read) {
        size_t n = 0;
        int rc = s->read(s->read_data, buf, want, &n, err);
        if (rc < 0)
            return rc;
        if (n > want || (n == 0 && want > 0))
            return kiln_error_set(err, KILN_EINTERNAL, 0,
                                  "upload body source gave %zu bytes for %zu wanted", n, want);
        s->pos += n;
        *ret_n = n;
        return 0;
    }
    if (s->fd < 0) {
        memcpy(buf, s->mem + s->pos, want);
        s->pos += want;
        *ret_n = want;
        return 0;
    }
    for (;;) {
        ssize_t n = pread(s->fd, buf, want, (off_t)(s->off + s->pos));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return kiln_error_set(err, KILN_EIO, errno, "read blob at offset %llu",
                                  (unsigned long long)(s->off + s->pos));
        }
        s->pos += (uint64_t)n;
        *ret_n = (size_t)n;
        return 0;
    }
}

static enum hint hint_of(const struct kiln_http_response *resp)
{
    long s = resp->status;
    if (kiln_http_status_retryable(s) || s == 416)
        return HINT_RESUME;
    if (s == 401 && resp->sent > 0)
        return HINT_RESUME;
    _cleanup_free_ char *code = NULL;
    _cleanup_free_ char *msg = NULL;
    kiln_registry_parse_errors(resp->body.buf, resp->body.len, &code, &msg);
    if (code &&
        (strcmp(code, "BLOB_UPLOAD_UNKNOWN") == 0 || strcmp(code, "BLOB_UPLOAD_INVALID") == 0))
        return HINT_RESTART;
    if (s == 404)
        return HINT_RESTART;
    if (code && strcmp(code, "DIGEST_INVALID") == 0)
        return HINT_DIGEST;
    return HINT_NONE;
}

/* A request of the session with a body from `s` (or none); fills resp. */
static int upload_request(struct kiln_upload *u, const char *method, const char *url, struct src *s,
                          const char *const *extra, struct kiln_http_response *resp,
                          struct kiln_error **err)
{
    struct op op = {u->repo, u->scope, NULL};
    struct kiln_http_request q = {.method = method, .url = url};
    if (s && s->len > 0) {
        q.read = src_read;
        q.read_data = s;
        q.read_len = s->len;
    }
    u->last_status = 0;
    u->hint = HINT_NONE;
    int rc = reg_do(u->reg, &op, &q, extra, resp, err);
    if (rc < 0) {
        if (rc == -KILN_ENET || rc == -KILN_ETIMEOUT)
            u->hint = HINT_RESUME;
        return rc;
    }
    u->last_status = resp->status;
    return 0;
}

/* The registry's answer to a PATCH of `len` bytes from u->offset on. */
static int patch_answer(struct kiln_upload *u, const struct kiln_http_response *resp, uint64_t len,
                        const char *what, struct kiln_error **err)
{
    if (resp->status != 202 && resp->status != 204) {
        u->hint = hint_of(resp);
        return http_error(u->reg, u->repo, what, resp, err);
    }
    int rc = set_location(u, resp, false, err);
    if (rc < 0)
        return rc;
    uint64_t want = u->offset + len, have = want;
    if (resp->range && kiln_http_range_parse(resp->range, false, &have) == 0 && have != want) {
        u->offset = have;
        u->hint = HINT_RESUME;
        return kiln_error_set(err, KILN_ENET, 0, "%s: the registry holds %llu bytes, expected %llu",
                              what, (unsigned long long)have, (unsigned long long)want);
    }
    u->offset = want;
    return 0;
}

static int patch(struct kiln_upload *u, struct src *s, struct kiln_error **err)
{
    if (s->len == 0)
        return 0;
    if (!u->location)
        return kiln_error_set(err, KILN_ECONFLICT, 0, "upload session is finished");
    _cleanup_free_ char *range =
        kiln_xasprintf("Content-Range: %llu-%llu", (unsigned long long)u->offset,
                       (unsigned long long)(u->offset + s->len - 1));
    const char *extra[] = {"Content-Type: application/octet-stream", range, NULL};
    _cleanup_free_ char *what = kiln_xasprintf("upload to '%s/%s'", u->reg->name, u->repo);
    struct kiln_http_response resp;
    kiln_http_response_init(&resp);
    int rc = upload_request(u, "PATCH", u->location, s, extra, &resp, err);
    if (rc >= 0)
        rc = patch_answer(u, &resp, s->len, what, err);
    kiln_http_response_release(&resp);
    return rc;
}

int kiln_upload_patch(struct kiln_upload *u, const void *data, size_t len, struct kiln_error **err)
{
    struct src s = {.fd = -1, .mem = data, .len = len};
    return patch(u, &s, err);
}

int kiln_upload_patch_fd(struct kiln_upload *u, int fd, uint64_t off, uint64_t len,
                         struct kiln_error **err)
{
    struct src s = {.fd = fd, .off = off, .len = len};
    return patch(u, &s, err);
}

int kiln_upload_patch_read(struct kiln_upload *u, uint64_t len, kiln_http_read_fn read,
                           void *userdata, struct kiln_error **err)
{
    struct src s = {.fd = -1, .read = read, .read_data = userdata, .len = len};
    return patch(u, &s, err);
}

/* The Authorization line for a raw request to url on r (none for other hosts). */
static int raw_auth(struct kiln_registry *r, const struct op *op, const char *url, char **ret_line,
                    struct kiln_error **err)
{
    *ret_line = NULL;
    if (!to_registry(r, url))
        return 0;
    bool fetched = false;
    enum sent sent = SENT_NONE;
    return auth_line(r, op, &fetched, ret_line, &sent, err);
}

int kiln_upload_patch_from(struct kiln_upload *u, struct kiln_registry *src, const char *src_repo,
                           const char *digest, uint64_t size, uint64_t len,
                           int (*progress)(void *userdata, uint64_t moved), void *userdata,
                           struct kiln_error **err)
{
    int rc = check_repo_digest(src_repo, digest, err);
    if (rc < 0)
        return rc;
    if (!u->location)
        return kiln_error_set(err, KILN_ECONFLICT, 0, "upload session is finished");
    uint64_t off = u->offset;
    if (off >= size)
        return kiln_error_set(err, KILN_EINVAL, 0, "upload of %s: the registry holds %llu of %llu",
                              digest, (unsigned long long)off, (unsigned long long)size);
    uint64_t n = size - off;
    if (len && len < n)
        n = len;
    _cleanup_free_ char *src_url = kiln_xasprintf("%s/v2/%s/blobs/%s", src->base, src_repo, digest);
    _cleanup_free_ char *src_raw = kiln_http_raw_url(src->http, src_url);
    _cleanup_free_ char *dst_raw = kiln_http_raw_url(u->reg->http, u->location);
    if (!src_raw || !dst_raw)
        return kiln_error_set(err, KILN_EUNSUPPORTED, 0,
                              "blob '%s/%s@%s': not on two plain http registries", src->name,
                              src_repo, digest);

    /* the source: nothing is sent to the destination unless it answers as expected */
    _cleanup_free_ char *scope = pull_scope(src_repo);
    _cleanup_free_ char *alt = push_scope(src_repo);
    struct op sop = {src_repo, scope, alt};
    _cleanup_secret_ char *sauth = NULL;
    rc = raw_auth(src, &sop, src_url, &sauth, err);
    if (rc < 0)
        return rc;
    bool whole = off == 0 && n == size;
    _cleanup_free_ char *range =
        whole ? NULL
              : kiln_xasprintf("Range: bytes=%llu-%llu", (unsigned long long)off,
                               (unsigned long long)(off + n - 1));
    const char *sh[3] = {NULL, NULL, NULL};
    size_t k = 0;
    if (range)
        sh[k++] = range;
    if (sauth)
        sh[k++] = sauth;
    struct kiln_raw *sc = NULL, *dc = NULL;
    _cleanup_secret_ char *dauth = NULL;
    _cleanup_free_ char *crange = NULL;
    struct kiln_http_response sresp, resp;
    kiln_http_response_init(&sresp);
    kiln_http_response_init(&resp);
    _cleanup_free_ char *what = kiln_xasprintf("upload to '%s/%s'", u->reg->name, u->repo);
    rc = kiln_raw_open(src->http, "GET", src_raw, sh, -1, &sc, err);
    if (rc >= 0)
        rc = kiln_raw_read_head(sc, &sresp, err);
    if (rc < 0)
        goto out;
    uint64_t start = 0;
    bool fits = whole ? sresp.status == 200
                      : sresp.status == 206 &&
                            parse_content_range_start(sresp.content_range, &start) == 0 &&
                            start == off;
    if (!fits || sresp.content_length != (int64_t)n) {
        rc = kiln_error_set(err, KILN_EUNSUPPORTED, 0,
                            "blob '%s/%s@%s': the source answered HTTP %ld (%lld bytes) to a plain "
                            "GET of %llu bytes",
                            src->name, src_repo, digest, sresp.status,
                            (long long)sresp.content_length, (unsigned long long)n);
        goto out;
    }

    /* the destination */
    struct op dop = {u->repo, u->scope, NULL};
    rc = raw_auth(u->reg, &dop, u->location, &dauth, err);
    if (rc < 0)
        goto out;
    crange = kiln_xasprintf("Content-Range: %llu-%llu", (unsigned long long)off,
                            (unsigned long long)(off + n - 1));
    const char *dh[4] = {"Content-Type: application/octet-stream", crange, dauth, NULL};
    u->last_status = 0;
    u->hint = HINT_RESUME; /* until the registry answers: ask where it stands */
    rc = kiln_raw_open(u->reg->http, "PATCH", dst_raw, dh, (int64_t)n, &dc, err);
    if (rc >= 0)
        rc = kiln_raw_splice(sc, dc, n, progress, userdata, NULL, err);
    if (rc >= 0)
        rc = kiln_raw_read_head(dc, &resp, err);
    if (rc >= 0)
        rc = kiln_raw_read_body(dc, &resp, KILN_HTTP_ERROR_BODY_MAX, err);
    if (rc < 0) {
        if (rc == -KILN_ECANCELLED)
            u->hint = HINT_NONE;
        goto out;
    }
    resp.sent = n;
    u->last_status = resp.status;
    u->hint = HINT_NONE;
    rc = patch_answer(u, &resp, n, what, err);
out:
    kiln_raw_free(sc);
    kiln_raw_free(dc);
    kiln_http_response_release(&sresp);
    kiln_http_response_release(&resp);
    return rc;
}

int kiln_upload_status(struct kiln_upload *u, struct kiln_error **err)
{
    if (!u->location)
        return kiln_error_set(err, KILN_ECONFLICT, 0, "upload session is finished");
    _cleanup_free_ char *what = kiln_xasprintf("upload to '%s/%s'", u->reg->name, u->repo);
    struct kiln_http_response resp;
    kiln_http_response_init(&resp);
    int rc = upload_request(u, "GET", u->location, NULL, NULL, &resp, err);
    if (rc < 0)
        goto out;
    if (resp.status != 204 && resp.status != 200) {
        u->hint = hint_of(&resp);
        rc = http_error(u->reg, u->repo, what, &resp, err);
        goto out;
    }
    uint64_t have = 0;
    if (!resp.range || kiln_http_range_parse(resp.range, true, &have) < 0) {
        rc = kiln_error_set(err, KILN_ENET, 0, "%s: status without a valid Range", what);
        goto out;
    }
    rc = set_location(u, &resp, false, err);
    if (rc < 0)
        goto out;
    u->offset = have;
    rc = 0;
out:
    kiln_http_response_release(&resp);
    return rc;
}

static int finish(struct kiln_upload *u, const char *digest, struct src *s, struct kiln_error **err)
{
    int rc = check_digest(digest, err);
    if (rc < 0)
        return rc;
    if (!u->location)
        return kiln_error_set(err, KILN_ECONFLICT, 0, "upload session is finished");
    _cleanup_free_ char *url = kiln_xasprintf("%s%cdigest=sha256%%3A%s", u->location,
                                              strchr(u->location, '?') ? '&' : '?', digest + 7);
    _cleanup_free_ char *what = kiln_xasprintf("blob '%s/%s@%s'", u->reg->name, u->repo, digest);
    const char *extra[] = {"Content-Type: application/octet-stream", NULL};
    struct kiln_http_response resp;
    kiln_http_response_init(&resp);
    rc = upload_request(u, "PUT", url, s, extra, &resp, err);
    if (rc < 0)
        goto out;
    if (resp.status != 201 && resp.status != 204 && resp.status != 200) {
        u->hint = hint_of(&resp);
        rc = http_error(u->reg, u->repo, what, &resp, err);
        goto out;
    }
    if (resp.docker_content_digest && strcmp(resp.docker_content_digest, digest) != 0) {
        rc = kiln_error_set(err, KILN_ENET, 0, "%s: the registry stored digest %.80s", what,
                            resp.docker_content_digest);
        goto out;
    }
    if (s)
        u->offset += s->len;
    free(u->location);
    u->location = NULL;
    rc = 0;
out:
    kiln_http_response_release(&resp);
    return rc;
}

int kiln_upload_finish(struct kiln_upload *u, const char *digest, struct kiln_error **err)
{
    return finish(u, digest, NULL, err);
}

int kiln_upload_finish_fd(struct kiln_upload *u, const char *digest, int fd, uint64_t off,
                          uint64_t len, struct kiln_error **err)
{
    struct src s = {.fd = fd, .off = off, .len = len};
    return finish(u, digest, &s, err);
}

int kiln_upload_finish_mem(struct kiln_upload *u, const char *digest, const void *data, size_t len,
                           struct kiln_error **err)
{
    struct src s = {.fd = -1, .mem = data, .len = len};
    return finish(u, digest, &s, err);
}

int kiln_upload_cancel(struct kiln_upload *u, struct kiln_error **err)
{
    if (!u || !u->location)
        return 0;
    struct kiln_http_response resp;
    kiln_http_response_init(&resp);
    int rc = upload_request(u, "DELETE", u->location, NULL, NULL, &resp, err);
    if (rc == 0 && resp.status != 204 && resp.status != 200 && resp.status != 202 &&
        resp.status != 404) {
        _cleanup_free_ char *what = kiln_xasprintf("upload to '%s/%s'", u->reg->name, u->repo);
        rc = http_error(u->reg, u->repo, what, &resp, err);
    }
    if (rc == 0) {
        free(u->location);
        u->location = NULL;
    }
    kiln_http_response_release(&resp);
    return rc;
}

static void drop_session(struct kiln_upload **u)
{
    if (*u && (*u)->location)
        kiln_upload_cancel(*u, NULL);
    kiln_upload_free(*u);
    *u = NULL;
}

int kiln_registry_blob_push(struct kiln_registry *r, const char *repo, const char *digest, int fd,
                            uint64_t size, const char *mount_from, struct kiln_error **err)
{
    int rc = check_repo_digest(repo, digest, err);
    if (rc < 0)
        return rc;
    _cleanup_free_ char *what = kiln_xasprintf("blob '%s/%s@%s'", r->name, repo, digest);
    bool mono = r->chunk_size == 0 || size <= r->chunk_size;
    struct kiln_upload *u = NULL;
    int tries = 0;
    bool resumed = false;
    bool first = true;
    for (;;) {
        if (!u) {
            rc = kiln_registry_upload_start(r, repo, first ? digest : NULL,
                                            first ? mount_from : NULL, &u, err);
            first = false;
            if (rc == 1)
                return 1;
            if (rc < 0)
                return rc;
        }
        bool finishing = mono || u->offset >= size;
        if (u->offset > size) {
            rc = kiln_error_set(err, KILN_ENET, 0, "%s: the registry holds %llu bytes of %llu",
                                what, (unsigned long long)u->offset, (unsigned long long)size);
            u->hint = HINT_RESTART;
        } else if (mono) {
            rc = kiln_upload_finish_fd(u, digest, fd, u->offset, size - u->offset, err);
        } else if (finishing) {
            rc = kiln_upload_finish(u, digest, err);
        } else {
            uint64_t chunk = r->chunk_size;
            if (chunk < u->min_chunk)
                chunk = u->min_chunk;
            uint64_t n = size - u->offset < chunk ? size - u->offset : chunk;
            rc = kiln_upload_patch_fd(u, fd, u->offset, n, err);
            if (rc == 0)
                continue;
        }
        if (rc == 0) {
            kiln_upload_free(u);
            return 0;
        }
        enum hint hint = u->hint;
        if (hint == HINT_DIGEST)
            hint = resumed ? HINT_RESTART : HINT_NONE;
        if (hint == HINT_NONE)
            break;
        if (tries >= r->max_resumes) {
            kiln_error_prefix(err, "%s: gave up after %d resumes", what, tries);
            break;
        }
        tries++;
        resumed = true;
        kiln_log(KILN_LOG_INFO, "registry: %s: upload interrupted at byte %llu (%s), %s", what,
                 (unsigned long long)u->offset, err && *err ? (*err)->msg : "error",
                 hint == HINT_RESTART ? "restarting" : "resuming");
        int p = pause_ms(r, resume_delay(tries));
        if (p < 0) {
            rc = kiln_error_set(err, KILN_ECANCELLED, 0, "%s: cancelled", what);
            break;
        }
        if (finishing && hint == HINT_RESUME) {
            /* the final PUT may have landed even though its answer did not */
            int h = kiln_registry_blob_head(r, repo, digest, NULL, NULL);
            if (h == 1) {
                kiln_upload_free(u);
                return 0;
            }
        }
        if (hint == HINT_RESUME) {
            struct kiln_error *serr = NULL;
            if (kiln_upload_status(u, &serr) < 0) {
                kiln_log(KILN_LOG_INFO, "registry: %s: %s, restarting", what,
                         serr ? serr->msg : "status failed");
                kiln_error_free(serr);
                hint = HINT_RESTART;
            } else {
                kiln_log(KILN_LOG_INFO, "registry: %s: the registry holds %llu bytes", what,
                         (unsigned long long)u->offset);
            }
        }
        if (hint == HINT_RESTART)
            drop_session(&u);
    }
    drop_session(&u);
    return rc;
}
