/*
 * Fuzz the registry authentication parsers with one input each round:
 *   - the whole input as a WWW-Authenticate header;
 *   - the whole input as a config.json, looked up for a few registries,
 *     and, when the first line is short, the rest looked up for that line;
 *   - the whole input as a token endpoint reply;
 *   - the whole input as base64 (what decodes must encode and decode back).
 * Each result is checked against the contract in registry/auth.h (outputs
 * written only on success, messages on failure, realms that are URLs,
 * tokens fit for a header); a broken promise aborts.
 */
#include "util/common.h"

#include <strings.h>

#include "registry/auth.h"
#include "util/base64.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define NOW ((time_t)1700000000)

static void check(bool cond, const char *what)
{
    if (cond)
        return;
    fprintf(stderr, "fuzz-auth: %s\n", what);
    abort();
}

static void check_error(int r, struct kiln_error *e, const char *what)
{
    check(r < 0 && e && e->code == -r && e->msg && *e->msg, what);
}

static void fuzz_challenge(const char *in)
{
    struct kiln_challenge c = KILN_CHALLENGE_INIT;
    struct kiln_error *e = NULL;
    int r = kiln_auth_challenge_parse(in, &c, &e);
    if (r < 0) {
        check_error(r, e, "challenge failure without message");
        check(c.scheme == KILN_AUTH_NONE && !c.realm && !c.service && !c.scope && !c.error,
              "failed challenge parse wrote its output");
        kiln_error_free(e);
        return;
    }
    check(r == 0 && !e, "challenge success with an error");
    check(c.scheme == KILN_AUTH_BASIC || c.scheme == KILN_AUTH_BEARER, "challenge scheme");
    check((!c.realm || *c.realm) && (!c.service || *c.service) && (!c.scope || *c.scope) &&
              (!c.error || *c.error),
          "empty challenge value instead of NULL");
    if (c.scheme == KILN_AUTH_BEARER) {
        check(c.realm && (strncasecmp(c.realm, "http://", 7) == 0 ||
                          strncasecmp(c.realm, "https://", 8) == 0),
              "bearer realm is not an http(s) URL");
        char *url = kiln_auth_token_url(&c, NULL);
        check(url && strncmp(url, c.realm, strlen(c.realm)) == 0, "token url");
        for (const char *q = url; *q; q++)
            check(*q > 0x20 && *q < 0x7f, "token url has a space or control character");
        free(url);
        struct kiln_cred cred = {(char *)"u", (char *)"p", NULL};
        char *form = kiln_auth_token_form(&c, NULL, &cred, NULL);
        check(form && strncmp(form, "grant_type=password&", 20) == 0, "token form");
        free(form);
    }
    kiln_challenge_release(&c);
}

static void fuzz_lookup(const char *json, size_t len, const char *registry)
{
    struct kiln_cred c = KILN_CRED_INIT;
    struct kiln_error *e = NULL;
    int r = kiln_auth_config_lookup(json, len, registry, &c, &e);
    if (r < 0) {
        check_error(r, e, "config failure without message");
        kiln_error_free(e);
    } else {
        check(!e && (r == 0 || r == 1), "config lookup result");
    }
    if (r != 1) {
        check(!c.username && !c.password && !c.identity_token, "config lookup wrote its output");
        return;
    }
    check(kiln_cred_present(&c), "found credentials not present");
    check((!c.username || *c.username) && (!c.password || *c.password) &&
              (!c.identity_token || *c.identity_token),
          "empty credential field instead of NULL");
    char *h = kiln_auth_basic_header(&c);
    check(!h == (!c.username && !c.password), "basic header");
    free(h);
    kiln_cred_release(&c);
}

static void fuzz_token(const char *in, size_t len)
{
    char *tok = NULL, *ref = NULL;
    time_t exp = 0;
    struct kiln_error *e = NULL;
    int r = kiln_auth_token_response_parse(in, len, NOW, &tok, &ref, &exp, &e);
    if (r < 0) {
        check_error(r, e, "token failure without message");
        check(!tok && !ref && exp == 0, "failed token parse wrote its output");
        kiln_error_free(e);
        return;
    }
    check(tok && *tok && (!ref || *ref), "token outputs");
    for (const char *q = tok; *q; q++)
        check(*q > 0x20 && *q < 0x7f, "token not fit for a header");
    check(exp >= NOW + 60 && exp <= NOW + KILN_AUTH_EXPIRES_MAX, "token expiry");

    struct kiln_token_cache *cache = kiln_token_cache_new();
    kiln_token_cache_put(cache, "r", "s", ref, tok, exp);
    char *got = kiln_token_cache_get(cache, "r", "s", ref, NOW);
    check(got && strcmp(got, tok) == 0, "token cache round trip");
    free(got);
    kiln_token_cache_free(cache);
    free(tok);
    free(ref);
}

static void fuzz_base64(const char *in, size_t len)
{
    uint8_t *d = NULL;
    size_t n = 0;
    struct kiln_error *e = NULL;
    int r = kiln_base64_decode(in, len, KILN_BASE64_SKIP_NEWLINES, &d, &n, &e);
    if (r < 0) {
        check_error(r, e, "base64 failure without message");
        kiln_error_free(e);
        return;
    }
    char *enc = kiln_base64_encode(d, n);
    uint8_t *d2 = NULL;
    size_t n2 = 0;
    check(kiln_base64_decode(enc, strlen(enc), 0, &d2, &n2, NULL) == 0 && n2 == n &&
              memcmp(d, d2, n) == 0,
          "base64 round trip");
    /* strict decoding: without newlines and padding the input is the encoding */
    size_t k = 0, m = 0;
    for (; k < len; k++)
        if (in[k] != '\r' && in[k] != '\n' && in[k] != '=')
            check(in[k] == enc[m++], "base64 input is not the canonical encoding");
    check(m <= strlen(enc) && m + strspn(enc + m, "=") == strlen(enc), "base64 length");
    free(d2);
    free(enc);
    free(d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* a little past the header cap, so its check is reached too */
    if (size > KILN_AUTH_HEADER_MAX + 64)
        return 0;
    char *in = kiln_xmalloc(size + 1);
    memcpy(in, data, size);
    in[size] = '\0';

    fuzz_challenge(in);
    fuzz_lookup(in, size, "docker.io");
    fuzz_lookup(in, size, "localhost:5000");
    const char *nl = memchr(in, '\n', size < 256 ? size : 256);
    if (nl && nl > in) {
        char *reg = kiln_xstrndup(in, (size_t)(nl - in));
        fuzz_lookup(nl + 1, size - (size_t)(nl + 1 - in), reg);
        free(reg);
    }
    fuzz_token(in, size);
    fuzz_base64(in, size);
    free(in);
    return 0;
}
