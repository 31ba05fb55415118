#include "util/common.h"

#include <limits.h>
#include <pthread.h>

#include "registry/auth.h"
#include "tap.h"
#include "util/base64.h"

/* ---- challenges ---------------------------------------------------------- */

struct chal_case {
    const char *hdr;
    enum kiln_auth_scheme scheme;
    const char *realm, *service, *scope, *error;
};

static const struct chal_case good[] = {
    {"Bearer realm=\"https://auth.docker.io/token\",service=\"registry.docker.io\","
     "scope=\"repository:library/ubuntu:pull\"",
     KILN_AUTH_BEARER, "https://auth.docker.io/token", "registry.docker.io",
     "repository:library/ubuntu:pull", NULL},
    {"Basic realm=\"Registry Realm\"", KILN_AUTH_BASIC, "Registry Realm", NULL, NULL, NULL},
    {"Bearer realm=\"https://gcr.io/v2/token\",service=\"gcr.io\",scope=\"repository:p/i:pull,"
     "push\"",
     KILN_AUTH_BEARER, "https://gcr.io/v2/token", "gcr.io", "repository:p/i:pull,push", NULL},
    {"Bearer realm=\"http://127.0.0.1:5001/token\",service=\"kiln-test\",error=\"insufficient_"
     "scope\"",
     KILN_AUTH_BEARER, "http://127.0.0.1:5001/token", "kiln-test", NULL, "insufficient_scope"},
    /* case-insensitive scheme and parameter names */
    {"BEARER REALM=\"https://x/t\",SERVICE=\"s\",Scope=\"a\",ErRoR=invalid_token", KILN_AUTH_BEARER,
     "https://x/t", "s", "a", "invalid_token"},
    {"bAsIc ReAlM=r", KILN_AUTH_BASIC, "r", NULL, NULL, NULL},
    /* whitespace */
    {"  Bearer   realm = \"https://x/t\" ,  service = s  ,scope=\"a b\"  ", KILN_AUTH_BEARER,
     "https://x/t", "s", "a b", NULL},
    {"\tBearer\trealm\t=\t\"https://x/t\"\t,\tservice=s", KILN_AUTH_BEARER, "https://x/t", "s",
     NULL, NULL},
    {"Bearer realm=\"https://x/t\"\r\n", KILN_AUTH_BEARER, "https://x/t", NULL, NULL, NULL},
    /* several challenges */
    {"Basic realm=\"r\", Bearer realm=\"https://x/t\",service=\"s\"", KILN_AUTH_BEARER,
     "https://x/t", "s", NULL, NULL},
    {"Bearer realm=\"https://x/t\", Basic realm=\"b\"", KILN_AUTH_BEARER, "https://x/t", NULL, NULL,
     NULL},
    {"Negotiate, Basic realm=\"x\"", KILN_AUTH_BASIC, "x", NULL, NULL, NULL},
    {"Negotiate abc==, Basic realm=\"x\"", KILN_AUTH_BASIC, "x", NULL, NULL, NULL},
    {"Negotiate a/b+c~d.e-f_g , Basic", KILN_AUTH_BASIC, NULL, NULL, NULL, NULL},
    {"Digest realm=\"d\", nonce=\"n\", qop=\"auth,auth-int\", Bearer realm=\"https://x/t\"",
     KILN_AUTH_BEARER, "https://x/t", NULL, NULL, NULL},
    {"Bearer realm=\"https://a/t\", Bearer realm=\"https://b/t\",service=x", KILN_AUTH_BEARER,
     "https://a/t", NULL, NULL, NULL},
    {"Basic realm=a, Basic realm=b", KILN_AUTH_BASIC, "a", NULL, NULL, NULL},
    /* quoted strings */
    {"Bearer realm=\"https://x/t\",service=\"a\\\"b\\\\c\\d\"", KILN_AUTH_BEARER, "https://x/t",
     "a\"b\\cd", NULL, NULL},
    {"Bearer realm=\"https://x/t\",service=\"caf\xc3\xa9 \t,=x\"", KILN_AUTH_BEARER, "https://x/t",
     "caf\xc3\xa9 \t,=x", NULL, NULL},
    {"Bearer realm=\"https://x/t\",service=registry.docker.io", KILN_AUTH_BEARER, "https://x/t",
     "registry.docker.io", NULL, NULL},
    {"Bearer realm=\"https://x/t\",scope=\"repository:a:pull\",scope=\"repository:b:pull\"",
     KILN_AUTH_BEARER, "https://x/t", NULL, "repository:a:pull repository:b:pull", NULL},
    /* list details */
    {",, Bearer realm=\"https://x/t\" ,,", KILN_AUTH_BEARER, "https://x/t", NULL, NULL, NULL},
    {"Bearer realm=\"https://x/t\",", KILN_AUTH_BEARER, "https://x/t", NULL, NULL, NULL},
    {"Bearer ,realm=\"https://x/t\"", KILN_AUTH_BEARER, "https://x/t", NULL, NULL, NULL},
    {"Bearer realm=\"https://x/t\",foo=\"bar\",error_description=\"x y\",service=s",
     KILN_AUTH_BEARER, "https://x/t", "s", NULL, NULL},
    {"Bearer realm=\"https://x/t\",service=\"\",scope=\"\"", KILN_AUTH_BEARER, "https://x/t", NULL,
     NULL, NULL},
    {"Basic", KILN_AUTH_BASIC, NULL, NULL, NULL, NULL},
    {"Basic realm=\"\"", KILN_AUTH_BASIC, NULL, NULL, NULL, NULL},
    {"Basic YWxhZGRpbjpvcGVuc2VzYW1l", KILN_AUTH_BASIC, NULL, NULL, NULL, NULL},
    /* realms */
    {"Bearer realm=\"https://x/t?a=b\"", KILN_AUTH_BEARER, "https://x/t?a=b", NULL, NULL, NULL},
    {"Bearer realm=\"HTTPS://X:443/t\"", KILN_AUTH_BEARER, "HTTPS://X:443/t", NULL, NULL, NULL},
    {"Bearer realm=\"http://[::1]:5001/token\"", KILN_AUTH_BEARER, "http://[::1]:5001/token", NULL,
     NULL, NULL},
    {"Bearer realm=\"https://x\"", KILN_AUTH_BEARER, "https://x", NULL, NULL, NULL},
};

struct bad_case {
    const char *hdr;
    int code;
    const char *msg;
};

static const struct bad_case bad[] = {
    {"", KILN_EINVAL, "no challenge in header"},
    {"   ", KILN_EINVAL, "no challenge in header"},
    {" , ,", KILN_EINVAL, "no challenge in header"},
    {"realm=\"x\"", KILN_EINVAL, "parameter before any authentication scheme at offset 0"},
    {"Bearer realm=\"https://x/t", KILN_EINVAL, "unterminated quoted string at offset 13"},
    {"Bearer realm=\"a\\", KILN_EINVAL, "unterminated quoted string at offset 13"},
    {"Bearer realm=\"https://x/t\" service=\"s\"", KILN_EINVAL,
     "expected ',', got 's' at offset 27"},
    {"Bearer service=s, realm=", KILN_EINVAL,
     "expected a parameter value at offset 24 (end of header)"},
    {"Bearer service=s,realm= ,", KILN_EINVAL, "expected a parameter value, got ',' at offset 24"},
    {"Bearer realm=", KILN_EUNSUPPORTED, "bearer challenge has no realm"}, /* a token68 */
    {"Bearer realm= ,", KILN_EUNSUPPORTED, "bearer challenge has no realm"},
    {"Bearer realm = = \"x\"", KILN_EINVAL, "expected a parameter value, got '=' at offset 15"},
    {"Bearer realm=https://x/t", KILN_EINVAL, "expected ',', got ':' at offset 18"},
    {"Bearer realm=\"https://x/\x01\"", KILN_EINVAL,
     "control character 0x01 in quoted string at offset 24"},
    {"Bearer realm=\"https://x/\\\x7f\"", KILN_EINVAL,
     "control character 0x7f in quoted string at offset 25"},
    {"Bearer realm=\"https://x/t\",realm=\"https://y/t\"", KILN_EINVAL,
     "duplicate parameter 'realm' at offset 27"},
    {"Bearer realm=\"https://x/t\",service=a,SERVICE=b", KILN_EINVAL,
     "duplicate parameter 'service' at offset 37"},
    {"Bearer realm=\"https://x/t\",error=a,error=b", KILN_EINVAL,
     "duplicate parameter 'error' at offset 35"},
    {"Bearer\"x\"", KILN_EINVAL,
     "expected a space after the authentication scheme, got '\"' at offset 6"},
    {"@Bearer", KILN_EINVAL, "expected an authentication scheme, got '@' at offset 0"},
    {"Bearer realm=\"https://x/t\", =x", KILN_EINVAL,
     "expected an authentication scheme, got '=' at offset 28"},
    {"Bearer realm=\"https://x/t\"\x01", KILN_EINVAL, "expected ',', got byte 0x01 at offset 26"},
    {"Bearer r\xc3\xa9\x61lm=x", KILN_EINVAL, "expected '=', got byte 0xc3 at offset 8"},
    {"B\xc3\xa9"
     "arer realm=x",
     KILN_EINVAL, "expected a space after the authentication scheme, got byte 0xc3 at offset 1"},
    {"Basic abc==, realm=\"x\"", KILN_EINVAL, "parameter after a token68 at offset 13"},
    {"Basic realm=\"x\" \"y\"", KILN_EINVAL, "expected ',', got '\"' at offset 16"},
    {"Basic a b", KILN_EINVAL, "expected '=', got 'b' at offset 8"},
    {"Bearer realm", KILN_EUNSUPPORTED, "bearer challenge has no realm"},
    {"Bearer service=\"s\"", KILN_EUNSUPPORTED, "bearer challenge has no realm"},
    {"Bearer realm=\"\"", KILN_EUNSUPPORTED, "bearer challenge has no realm"},
    {"Bearer realm=\"ftp://x/t\"", KILN_EUNSUPPORTED,
     "bearer realm 'ftp://x/t' is not an http(s) URL"},
    {"Bearer realm=\"https://\"", KILN_EUNSUPPORTED,
     "bearer realm 'https://' is not an http(s) URL"},
    {"Bearer realm=\"https:///x\"", KILN_EUNSUPPORTED,
     "bearer realm 'https:///x' is not an http(s) URL"},
    {"Bearer realm=\"https://x y/t\"", KILN_EUNSUPPORTED,
     "bearer realm 'https://x y/t' is not an http(s) URL"},
    {"Bearer realm=\"/token\"", KILN_EUNSUPPORTED, "bearer realm '/token' is not an http(s) URL"},
    {"Digest realm=\"x\", nonce=\"y\"", KILN_EUNSUPPORTED,
     "unsupported authentication scheme 'Digest'"},
    {"Negotiate abc==", KILN_EUNSUPPORTED, "unsupported authentication scheme 'Negotiate'"},
    {"Negotiate, NTLM", KILN_EUNSUPPORTED, "unsupported authentication scheme 'Negotiate'"},
};

static void test_challenges(void)
{
    for (size_t k = 0; k < KILN_ARRAY_SIZE(good); k++) {
        const struct chal_case *t = &good[k];
        struct kiln_challenge c = KILN_CHALLENGE_INIT;
        struct kiln_error *err = NULL;
        int r = kiln_auth_challenge_parse(t->hdr, &c, &err);
        if (!ok(r == 0, "challenge %zu parses", k))
            tap_comment("error", err ? err->msg : NULL);
        is_int(c.scheme, t->scheme, "challenge %zu scheme", k);
        is_str(c.realm, t->realm, "challenge %zu realm", k);
        is_str(c.service, t->service, "challenge %zu service", k);
        is_str(c.scope, t->scope, "challenge %zu scope", k);
        is_str(c.error, t->error, "challenge %zu error", k);
        kiln_challenge_release(&c);
        ok(c.realm == NULL && c.scheme == KILN_AUTH_NONE, "challenge %zu released", k);
        kiln_error_free(err);
    }
    for (size_t k = 0; k < KILN_ARRAY_SIZE(bad); k++) {
        const struct bad_case *t = &bad[k];
        struct kiln_challenge c = KILN_CHALLENGE_INIT;
        struct kiln_error *err = NULL;
        int r = kiln_auth_challenge_parse(t->hdr, &c, &err);
        is_int(r, -t->code, "bad challenge %zu fails", k);
        is_str(err ? err->msg : NULL, t->msg, "bad challenge %zu message", k);
        ok(c.scheme == KILN_AUTH_NONE && !c.realm && !c.service && !c.scope && !c.error,
           "bad challenge %zu leaves *ret alone", k);
        kiln_error_free(err);
    }

    struct kiln_error *err = NULL;
    struct kiln_challenge c = KILN_CHALLENGE_INIT;
    is_int(kiln_auth_challenge_parse(NULL, &c, &err), -KILN_EINVAL, "NULL header");
    kiln_error_free(err);
    err = NULL;

    /* the size cap */
    size_t n = KILN_AUTH_HEADER_MAX + 1;
    char *big = kiln_xmalloc(n + 1);
    memset(big, 'a', n);
    big[n] = '\0';
    memcpy(big, "Basic realm=", 12);
    is_int(kiln_auth_challenge_parse(big, &c, &err), -KILN_ETOOBIG, "header over the cap");
    is_str(err ? err->msg : NULL, "challenge longer than 8192 bytes", "cap message");
    kiln_error_free(err);
    err = NULL;
    big[n - 1] = '\0';
    ok(kiln_auth_challenge_parse(big, &c, NULL) == 0 && c.realm &&
           strlen(c.realm) == KILN_AUTH_HEADER_MAX - 12,
       "header of exactly the cap parses");
    kiln_challenge_release(&c);
    free(big);
    kiln_challenge_release(NULL);
}

/* ---- token URL and form -------------------------------------------------- */

static void test_token_requests(void)
{
    struct kiln_challenge c = {KILN_AUTH_BEARER, (char *)"https://auth.docker.io/token",
                               (char *)"registry.docker.io",
                               (char *)"repository:library/ubuntu:pull", NULL};
    char *u = kiln_auth_token_url(&c, NULL);
    is_str(u,
           "https://auth.docker.io/token?service=registry.docker.io&scope=repository%3Alibrary%"
           "2Fubuntu%3Apull",
           "token url from the challenge");
    free(u);
    u = kiln_auth_token_url(&c, "repository:a/b:pull,push  repository:c:pull ");
    is_str(u,
           "https://auth.docker.io/token?service=registry.docker.io&scope=repository%3Aa%2Fb%"
           "3Apull%2Cpush&scope=repository%3Ac%3Apull",
           "token url with two scopes");
    free(u);
    u = kiln_auth_token_url(&c, "");
    is_str(u, "https://auth.docker.io/token?service=registry.docker.io", "empty scope overrides");
    free(u);

    struct kiln_challenge q = {KILN_AUTH_BEARER, (char *)"http://h/t?x=1", NULL, (char *)"a b",
                               NULL};
    u = kiln_auth_token_url(&q, NULL);
    is_str(u, "http://h/t?x=1&scope=a&scope=b", "realm with a query");
    free(u);
    q.realm = (char *)"http://h/t?";
    u = kiln_auth_token_url(&q, NULL);
    is_str(u, "http://h/t?scope=a&scope=b", "realm ending in '?'");
    free(u);
    q.realm = (char *)"http://h/t";
    q.scope = NULL;
    u = kiln_auth_token_url(&q, NULL);
    is_str(u, "http://h/t", "no service, no scope");
    free(u);
    q.realm = NULL;
    ok(kiln_auth_token_url(&q, NULL) == NULL, "no realm, no url");
    ok(kiln_auth_token_url(NULL, NULL) == NULL, "NULL challenge, no url");

    struct kiln_cred pw = {(char *)"us er", (char *)"p&ss=:w", NULL};
    char *f = kiln_auth_token_form(&c, NULL, &pw, NULL);
    is_str(f,
           "grant_type=password&username=us%20er&password=p%26ss%3D%3Aw&service=registry.docker."
           "io&client_id=kiln&scope=repository%3Alibrary%2Fubuntu%3Apull",
           "password form");
    free(f);
    struct kiln_cred id = {(char *)"<token>", NULL, (char *)"rt-123"};
    f = kiln_auth_token_form(&c, "a b", &id, "my-client");
    is_str(f,
           "grant_type=refresh_token&refresh_token=rt-123&service=registry.docker.io&client_id=my-"
           "client&scope=a%20b",
           "refresh token form, scopes in one parameter");
    free(f);
    struct kiln_cred user_only = {(char *)"u", NULL, NULL};
    ok(kiln_auth_token_form(&c, NULL, &user_only, NULL) == NULL, "no form without a password");
    ok(kiln_auth_token_form(&c, NULL, NULL, NULL) == NULL, "no form without credentials");
}

/* ---- config.json --------------------------------------------------------- */

static char *b64(const char *s)
{
    return kiln_base64_encode(s, strlen(s));
}

struct lookup_case {
    const char *json;
    const char *registry;
    int rc;
    const char *user, *pass, *idtok;
};

static void check_lookup(size_t k, const struct lookup_case *t)
{
    struct kiln_cred c = KILN_CRED_INIT;
    struct kiln_error *err = NULL;
    int r = kiln_auth_config_lookup(t->json, strlen(t->json), t->registry, &c, &err);
    if (!ok(r == t->rc, "lookup %zu '%s' returns %d", k, t->registry, t->rc)) {
        printf("#   got %d\n", r);
        tap_comment("error", err ? err->msg : NULL);
    }
    if (t->rc == 1) {
        is_str(c.username, t->user, "lookup %zu username", k);
        is_str(c.password, t->pass, "lookup %zu password", k);
        is_str(c.identity_token, t->idtok, "lookup %zu identity token", k);
        ok(kiln_cred_present(&c), "lookup %zu present", k);
    } else {
        ok(!c.username && !c.password && !c.identity_token, "lookup %zu leaves *ret alone", k);
    }
    kiln_cred_release(&c);
    ok(!c.username && !c.password && !c.identity_token, "lookup %zu released", k);
    kiln_error_free(err);
}

static void test_config(void)
{
    _cleanup_free_ char *up = b64("user:pa:ss");
    _cleanup_free_ char *hub = b64("hubuser:hubpass");
    _cleanup_free_ char *gcr =
        b64("_json_key:{\"type\": \"service_account\", \"private_key\": \"-----BEGIN PRIVATE "
            "KEY-----\\nMIIE\\n-----END PRIVATE KEY-----\\n\"}");
    _cleanup_free_ char *empty_user = b64(":onlypass");
    _cleanup_free_ char *colon = b64(":");
    _cleanup_free_ char *tokuser = b64("<token>:");

    _cleanup_free_ char *j_basic = kiln_xasprintf(
        "{\"auths\": {\"localhost:5000\": {\"auth\": \"%s\"}, \"https://index.docker.io/v1/\": "
        "{\"auth\": \"%s\"}, \"http://reg.example.com:5000\": {\"username\": \"u2\", "
        "\"password\": \"p2\"}, \"https://Other.Example.COM/v1/\": {\"username\": \"u3\", "
        "\"password\": \"p:3\"}}}",
        up, hub);
    _cleanup_free_ char *j_index = kiln_xasprintf(
        "{\"auths\": {\"index.docker.io\": {\"auth\": \"%s\"}, \"registry-1.docker.io\": {}}}", up);
    _cleanup_free_ char *j_dockerio =
        kiln_xasprintf("{\"auths\": {\"docker.io\": {\"auth\": \"%s\"}}}", hub);
    _cleanup_free_ char *j_gcr =
        kiln_xasprintf("{\"auths\": {\"gcr.io\": {\"auth\": \"%s\"}, \"https://asia.gcr.io\": "
                       "{\"username\": \"_json_key\", \"password\": \"{\\\"type\\\": "
                       "\\\"service_account\\\"}\"}}}",
                       gcr);
    _cleanup_free_ char *j_override = kiln_xasprintf(
        "{\"auths\": {\"r\": {\"auth\": \"%s\", \"username\": \"x\", \"password\": \"y\"}}}", up);
    _cleanup_free_ char *j_emptyauth = kiln_xasprintf(
        "{\"auths\": {\"r\": {\"auth\": \"\", \"username\": \"x\", \"password\": \"y\"}}}");
    _cleanup_free_ char *j_old = kiln_xasprintf(
        "{\"https://index.docker.io/v1/\": {\"auth\": \"%s\", \"email\": \"a@b.c\"}}", hub);
    _cleanup_free_ char *j_exact = kiln_xasprintf(
        "{\"auths\": {\"https://reg:5000\": {\"auth\": \"%s\"}, \"reg:5000\": {\"auth\": \"%s\"}}}",
        up, hub);
    _cleanup_free_ char *j_alias = kiln_xasprintf(
        "{\"auths\": {\"docker.io\": {}, \"https://index.docker.io/v1/\": {\"auth\": \"%s\"}}}",
        hub);
    _cleanup_free_ char *j_idtok = kiln_xasprintf(
        "{\"auths\": {\"r.io\": {\"auth\": \"%s\", \"identitytoken\": \"eyJ.refresh\"}, \"o.io\": "
        "{\"identitytoken\": \"tok2\"}}}",
        tokuser);
    _cleanup_free_ char *j_unpadded =
        kiln_xasprintf("{\"auths\": {\"r\": {\"auth\": \"dXNlcjpwYXNzMQ\"}}}"); /* user:pass1 */
    _cleanup_free_ char *j_newlines = kiln_xasprintf(
        "{\"auths\": {\"r\": {\"auth\": \"dXNl\\ncjpw\\r\\nYXNzMQ==\\n\"}}}"); /* user:pass1 */
    _cleanup_free_ char *j_emptyuser = kiln_xasprintf(
        "{\"auths\": {\"r\": {\"auth\": \"%s\"}, \"c\": {\"auth\": \"%s\"}}}", empty_user, colon);

    const struct lookup_case cases[] = {
        {j_basic, "localhost:5000", 1, "user", "pa:ss", NULL},
        {j_basic, "docker.io", 1, "hubuser", "hubpass", NULL},
        {j_basic, "index.docker.io", 1, "hubuser", "hubpass", NULL},
        {j_basic, "https://index.docker.io/v1/", 1, "hubuser", "hubpass", NULL},
        {j_basic, "reg.example.com:5000", 1, "u2", "p2", NULL},
        {j_basic, "REG.EXAMPLE.COM:5000", 1, "u2", "p2", NULL},
        {j_basic, "other.example.com", 1, "u3", "p:3", NULL},
        {j_basic, "reg.example.com", 0, NULL, NULL, NULL},
        {j_basic, "localhost", 0, NULL, NULL, NULL},
        {j_basic, "localhost:5001", 0, NULL, NULL, NULL},
        {j_basic, "quay.io", 0, NULL, NULL, NULL},
        {j_index, "docker.io", 1, "user", "pa:ss", NULL},
        {j_dockerio, "index.docker.io", 1, "hubuser", "hubpass", NULL},
        {j_dockerio, "registry-1.docker.io", 1, "hubuser", "hubpass", NULL},
        {j_gcr, "gcr.io", 1, "_json_key",
         "{\"type\": \"service_account\", \"private_key\": \"-----BEGIN PRIVATE "
         "KEY-----\\nMIIE\\n-----END PRIVATE KEY-----\\n\"}",
         NULL},
        {j_gcr, "asia.gcr.io", 1, "_json_key", "{\"type\": \"service_account\"}", NULL},
        {j_override, "r", 1, "user", "pa:ss", NULL},
        {j_emptyauth, "r", 1, "x", "y", NULL},
        {j_old, "docker.io", 1, "hubuser", "hubpass", NULL},
        {j_exact, "reg:5000", 1, "hubuser", "hubpass", NULL},
        {j_exact, "https://reg:5000", 1, "user", "pa:ss", NULL},
        {j_alias, "docker.io", 1, "hubuser", "hubpass", NULL},
        {j_idtok, "r.io", 1, "<token>", NULL, "eyJ.refresh"},
        {j_idtok, "o.io", 1, NULL, NULL, "tok2"},
        {j_unpadded, "r", 1, "user", "pass1", NULL},
        {j_newlines, "r", 1, "user", "pass1", NULL},
        {j_emptyuser, "r", 1, NULL, "onlypass", NULL},
        {j_emptyuser, "c", 0, NULL, NULL, NULL},
        {"{}", "docker.io", 0, NULL, NULL, NULL},
        {"{\"auths\": {}}", "docker.io", 0, NULL, NULL, NULL},
        {"{\"credsStore\": \"desktop\"}", "docker.io", 0, NULL, NULL, NULL},
        {"{\"auths\": {\"docker.io\": {}}, \"credsStore\": \"desktop\"}", "docker.io", 0, NULL,
         NULL, NULL},
        {"{\"auths\": {\"r\": {\"username\": \"\", \"password\": \"\", \"auth\": null}}}", "r", 0,
         NULL, NULL, NULL},
        /* malformed entries that do not match are ignored */
        {"{\"auths\": {\"x\": 5, \"y\": {\"auth\": \"!!\"}, \"r\": {\"username\": \"a\", "
         "\"password\": \"b\"}}}",
         "r", 1, "a", "b", NULL},
        {"{\"auths\": {\"r\": {\"username\": \"a\", \"password\": \"b\"}}}", "r:80", 0, NULL, NULL,
         NULL},
        {"{\"auths\": {\"r\": {\"username\": \"us\\u00e9r\", \"password\": \"p\"}}}", "r", 1,
         "us\xc3\xa9r", "p", NULL},
    };
    for (size_t k = 0; k < KILN_ARRAY_SIZE(cases); k++)
        check_lookup(k, &cases[k]);
}

struct config_bad {
    const char *json;
    const char *registry;
    int code;
    const char *msg;
};

static void test_config_bad(void)
{
    _cleanup_free_ char *nocolon = b64("secretuserpass");
    _cleanup_free_ char *nul = kiln_base64_encode("us\0er:secret", 12);
    _cleanup_free_ char *j_nocolon =
        kiln_xasprintf("{\"auths\": {\"r\": {\"auth\": \"%s\"}}}", nocolon);
    _cleanup_free_ char *j_nul = kiln_xasprintf("{\"auths\": {\"r\": {\"auth\": \"%s\"}}}", nul);

    const struct config_bad cases[] = {
        {j_nocolon, "r", KILN_EINVAL, "auths entry 'r': auth is not 'username:password'"},
        {j_nul, "r", KILN_EINVAL, "auths entry 'r': auth contains a NUL byte"},
        {"{\"auths\": {\"r\": {\"auth\": \"c2VjcmV0!\"}}}", "r", KILN_EINVAL,
         "auths entry 'r': auth: invalid base64 character at offset 8"},
        {"{\"auths\": {\"r\": {\"auth\": \"c2VjcmV0Og=\"}}}", "r", KILN_EINVAL,
         "auths entry 'r': auth: incomplete base64 padding at offset 10"},
        {"{\"auths\": {\"r\": {\"auth\": 5}}}", "r", KILN_EINVAL,
         "auths entry 'r': 'auth' is not a string"},
        {"{\"auths\": {\"r\": {\"password\": [\"secret\"]}}}", "r", KILN_EINVAL,
         "auths entry 'r': 'password' is not a string"},
        {"{\"auths\": {\"r\": {\"identitytoken\": {}}}}", "r", KILN_EINVAL,
         "auths entry 'r': 'identitytoken' is not a string"},
        {"{\"auths\": {\"https://r/v1/\": \"secret\"}}", "r", KILN_EINVAL,
         "auths entry 'https://r/v1/' is not an object"},
        {"{\"auths\": []}", "r", KILN_EINVAL, "config: 'auths' is not an object"},
        {"{\"auths\": null}", "r", KILN_EINVAL, "config: 'auths' is not an object"},
        {"[]", "r", KILN_EINVAL, "config is not a JSON object"},
        {"", "r", KILN_EINVAL, "config: invalid JSON at line 1 column 0: unexpected end of input"},
        {"{\"auths\": {\"r\": {\"auth\": \"c2VjcmV0\" oops}}}", "r", KILN_EINVAL,
         "config: invalid JSON at line 1 column 40: invalid syntax"},
        {"{\"auths\": {\"r\": {\"auth\": \"c2VjcmV0\"", "r", KILN_EINVAL,
         "config: invalid JSON at line 1 column 35: unexpected end of input"},
        {"{\"auths\": {\"r\": {\"password\": \"sec\\u0000ret\"}}}", "r", KILN_EINVAL,
         "config: invalid JSON at line 1 column 43: NUL character"},
        {"{\"auths\": {\"r\": {\"password\": \"sec\xffret\"}}}", "r", KILN_EINVAL,
         "config: invalid JSON at line 1 column 33: invalid UTF-8"},
        {"{} {\"secret\": 1}", "r", KILN_EINVAL,
         "config: invalid JSON at line 1 column 4: data after the document"},
        {"{}", "", KILN_EINVAL, "no registry to look up"},
        {"{}", NULL, KILN_EINVAL, "no registry to look up"},
    };
    for (size_t k = 0; k < KILN_ARRAY_SIZE(cases); k++) {
        const struct config_bad *t = &cases[k];
        struct kiln_cred c = KILN_CRED_INIT;
        struct kiln_error *err = NULL;
        int r = kiln_auth_config_lookup(t->json, strlen(t->json), t->registry, &c, &err);
        is_int(r, -t->code, "bad config %zu fails", k);
        is_str(err ? err->msg : NULL, t->msg, "bad config %zu message", k);
        ok(err && !strstr(err->msg, "secret") && !strstr(err->msg, "c2VjcmV0") &&
               !strstr(err->msg, "oops"),
           "bad config %zu message holds no secret", k);
        ok(!c.username && !c.password && !c.identity_token, "bad config %zu leaves *ret alone", k);
        kiln_error_free(err);
    }

    struct kiln_error *err = NULL;
    struct kiln_cred c = KILN_CRED_INIT;
    is_int(kiln_auth_config_lookup("{}", KILN_AUTH_CONFIG_MAX + 1, "r", &c, &err), -KILN_ETOOBIG,
           "config over the cap");
    kiln_error_free(err);
    err = NULL;
    is_int(kiln_auth_config_lookup(NULL, 0, "r", &c, &err), -KILN_EINVAL, "NULL config");
    kiln_error_free(err);
}

static void test_basic_header(void)
{
    struct kiln_cred c = {(char *)"user", (char *)"pass", NULL};
    char *h = kiln_auth_basic_header(&c);
    is_str(h, "Basic dXNlcjpwYXNz", "basic header");
    free(h);
    c.password = (char *)"pa:ss";
    h = kiln_auth_basic_header(&c);
    is_str(h, "Basic dXNlcjpwYTpzcw==", "basic header, ':' in the password");
    free(h);
    c.password = NULL;
    h = kiln_auth_basic_header(&c);
    is_str(h, "Basic dXNlcjo=", "basic header, no password");
    free(h);
    struct kiln_cred none = KILN_CRED_INIT;
    ok(kiln_auth_basic_header(&none) == NULL, "no basic header without credentials");
    ok(kiln_auth_basic_header(NULL) == NULL, "no basic header for NULL");
    ok(!kiln_cred_present(&none) && !kiln_cred_present(NULL), "empty credentials not present");
    kiln_cred_release(NULL);
}

/* ---- token responses ----------------------------------------------------- */

struct tok_case {
    const char *body;
    const char *token, *refresh;
    long long expires_in;
};

#define NOW ((time_t)1700000000)

static void test_token_response(void)
{
    const struct tok_case cases[] = {
        {"{\"token\":\"abc\",\"expires_in\":300,\"issued_at\":\"2024-01-01T00:00:00Z\"}", "abc",
         NULL, 300},
        {"{\"access_token\":\"x.y.z\"}", "x.y.z", NULL, 60},
        {"{\"token\":\"t1\",\"access_token\":\"t2\"}", "t2", NULL, 60},
        {"{\"token\":\"t1\",\"access_token\":\"\"}", "t1", NULL, 60},
        {"{\"token\":\"t1\",\"access_token\":null}", "t1", NULL, 60},
        {"{\"token\":\"t\",\"expires_in\":10}", "t", NULL, 60},
        {"{\"token\":\"t\",\"expires_in\":-5}", "t", NULL, 60},
        {"{\"token\":\"t\",\"expires_in\":0}", "t", NULL, 60},
        {"{\"token\":\"t\",\"expires_in\":61}", "t", NULL, 61},
        {"{\"token\":\"t\",\"expires_in\":300.9}", "t", NULL, 300},
        {"{\"token\":\"t\",\"expires_in\":1e300}", "t", NULL, KILN_AUTH_EXPIRES_MAX},
        {"{\"token\":\"t\",\"expires_in\":99999999999999999999}", "t", NULL, KILN_AUTH_EXPIRES_MAX},
        {"{\"token\":\"t\",\"expires_in\":-99999999999999999999}", "t", NULL, 60},
        {"{\"token\":\"t\",\"expires_in\":null}", "t", NULL, 60},
        {"{\"token\":\"t\",\"refresh_token\":\"r-1\",\"expires_in\":3600}", "t", "r-1", 3600},
        {"{\"token\":\"t\",\"refresh_token\":\"\"}", "t", NULL, 60},
        {"{\"token\":\"t\",\"issued_at\":\"2024-01-01T00:00:00.123456789+01:00\"}", "t", NULL, 60},
        {"{\"token\":\"t\",\"issued_at\":\"2024-02-29t23:59:60z\"}", "t", NULL, 60},
        {"{\"token\":\"t\",\"issued_at\":\"2024-01-01T00:00:00-23:59\"}", "t", NULL, 60},
        {"{\"token\":\"t\",\"issued_at\":null}", "t", NULL, 60},
        {"{\"token\":\"t\",\"scope\":\"repository:a:pull\",\"extra\":[1,{\"x\":null}]}", "t", NULL,
         60},
        {"  {\"token\" : \"eyJhbGciOiJFUzI1NiJ9.e30.sig-_~+/=\"}\n",
         "eyJhbGciOiJFUzI1NiJ9.e30.sig-_~+/=", NULL, 60},
    };
    for (size_t k = 0; k < KILN_ARRAY_SIZE(cases); k++) {
        const struct tok_case *t = &cases[k];
        char *tok = NULL, *ref = (char *)"unset";
        time_t exp = 0;
        struct kiln_error *err = NULL;
        int r =
            kiln_auth_token_response_parse(t->body, strlen(t->body), NOW, &tok, &ref, &exp, &err);
        if (!ok(r == 0, "token response %zu parses", k))
            tap_comment("error", err ? err->msg : NULL);
        is_str(tok, t->token, "token response %zu token", k);
        is_str(ref, t->refresh, "token response %zu refresh token", k);
        is_int(exp - NOW, t->expires_in, "token response %zu expiry", k);
        free(tok);
        if (r == 0)
            free(ref);
        kiln_error_free(err);
    }

    /* ret_refresh and ret_expires may be NULL */
    char *tok = NULL;
    const char *b = "{\"token\":\"t\",\"refresh_token\":\"r\"}";
    ok(kiln_auth_token_response_parse(b, strlen(b), NOW, &tok, NULL, NULL, NULL) == 0 && tok &&
           strcmp(tok, "t") == 0,
       "refresh and expiry outputs may be NULL");
    free(tok);

    /* saturating expiry */
    time_t exp = 0;
    tok = NULL;
    b = "{\"token\":\"t\",\"expires_in\":3600}";
    ok(kiln_auth_token_response_parse(b, strlen(b), (time_t)LLONG_MAX - 5, &tok, NULL, &exp,
                                      NULL) == 0 &&
           exp == (time_t)LLONG_MAX - 5,
       "expiry saturates near the end of time");
    free(tok);
}

static void test_token_response_bad(void)
{
    static const struct {
        const char *body;
        int code;
        const char *msg;
    } cases[] = {
        {"{}", KILN_EINVAL, "token response has no token"},
        {"{\"token\":\"\"}", KILN_EINVAL, "token response has no token"},
        {"{\"access_token\":\"\",\"token\":null}", KILN_EINVAL, "token response has no token"},
        {"{\"token\":5}", KILN_EINVAL, "token response: 'token' is not a string"},
        {"{\"token\":\"t\",\"access_token\":true}", KILN_EINVAL,
         "token response: 'access_token' is not a string"},
        {"{\"token\":\"t\",\"refresh_token\":{}}", KILN_EINVAL,
         "token response: 'refresh_token' is not a string"},
        {"{\"token\":\"secret token\"}", KILN_EINVAL,
         "token response: token has a character not allowed in a header"},
        {"{\"token\":\"secret\\r\\nX-Evil: 1\"}", KILN_EINVAL,
         "token response: token has a character not allowed in a header"},
        {"{\"token\":\"secret\\u00e9\"}", KILN_EINVAL,
         "token response: token has a character not allowed in a header"},
        {"{\"token\":\"secret\",\"expires_in\":\"300\"}", KILN_EINVAL,
         "token response: 'expires_in' is not a number"},
        {"{\"token\":\"secret\",\"issued_at\":\"yesterday\"}", KILN_EINVAL,
         "token response: 'issued_at' is not an RFC 3339 time"},
        {"{\"token\":\"secret\",\"issued_at\":\"2023-02-29T00:00:00Z\"}", KILN_EINVAL,
         "token response: 'issued_at' is not an RFC 3339 time"},
        {"{\"token\":\"secret\",\"issued_at\":\"2024-01-01 00:00:00Z\"}", KILN_EINVAL,
         "token response: 'issued_at' is not an RFC 3339 time"},
        {"{\"token\":\"secret\",\"issued_at\":\"2024-01-01T00:00:00\"}", KILN_EINVAL,
         "token response: 'issued_at' is not an RFC 3339 time"},
        {"{\"token\":\"secret\",\"issued_at\":\"2024-01-01T00:00:00.Z\"}", KILN_EINVAL,
         "token response: 'issued_at' is not an RFC 3339 time"},
        {"{\"token\":\"secret\",\"issued_at\":\"2024-13-01T00:00:00Z\"}", KILN_EINVAL,
         "token response: 'issued_at' is not an RFC 3339 time"},
        {"{\"token\":\"secret\",\"issued_at\":\"2024-01-01T24:00:00Z\"}", KILN_EINVAL,
         "token response: 'issued_at' is not an RFC 3339 time"},
        {"{\"token\":\"secret\",\"issued_at\":\"2024-01-01T00:00:00+0100\"}", KILN_EINVAL,
         "token response: 'issued_at' is not an RFC 3339 time"},
        {"{\"token\":\"secret\",\"issued_at\":\"2024-01-01T00:00:00Zjunk\"}", KILN_EINVAL,
         "token response: 'issued_at' is not an RFC 3339 time"},
        {"{\"token\":\"secret\",\"issued_at\":1700000000}", KILN_EINVAL,
         "token response: 'issued_at' is not a string"},
        {"[\"secret\"]", KILN_EINVAL, "token response is not a JSON object"},
        {"", KILN_EINVAL,
         "token response: invalid JSON at line 1 column 0: unexpected end of input"},
        {"<html>secret</html>", KILN_EINVAL,
         "token response: invalid JSON at line 1 column 1: invalid syntax"},
        {"{\"token\":\"secret\"", KILN_EINVAL,
         "token response: invalid JSON at line 1 column 17: unexpected end of input"},
        {"{\"token\":\"secret\"}{}", KILN_EINVAL,
         "token response: invalid JSON at line 1 column 19: data after the document"},
    };
    for (size_t k = 0; k < KILN_ARRAY_SIZE(cases); k++) {
        char *tok = NULL, *ref = NULL;
        time_t exp = 0;
        struct kiln_error *err = NULL;
        int r = kiln_auth_token_response_parse(cases[k].body, strlen(cases[k].body), NOW, &tok,
                                               &ref, &exp, &err);
        is_int(r, -cases[k].code, "bad token response %zu fails", k);
        is_str(err ? err->msg : NULL, cases[k].msg, "bad token response %zu message", k);
        ok(err && !strstr(err->msg, "secret"), "bad token response %zu holds no secret", k);
        ok(!tok && !ref && exp == 0, "bad token response %zu writes no output", k);
        kiln_error_free(err);
    }
    struct kiln_error *err = NULL;
    char *tok = NULL;
    is_int(kiln_auth_token_response_parse("{}", KILN_AUTH_TOKEN_RESPONSE_MAX + 1, NOW, &tok, NULL,
                                          NULL, &err),
           -KILN_ETOOBIG, "token response over the cap");
    kiln_error_free(err);
    err = NULL;
    is_int(kiln_auth_token_response_parse(NULL, 0, NOW, &tok, NULL, NULL, &err), -KILN_EINVAL,
           "NULL token response");
    kiln_error_free(err);
}

/* ---- token cache --------------------------------------------------------- */

static void test_cache(void)
{
    struct kiln_token_cache *c = kiln_token_cache_new();
    char *t;

    ok(kiln_token_cache_get(c, "r", "s", "x", NOW) == NULL, "empty cache misses");
    kiln_token_cache_put(c, "r", "s", "x", "tok1", NOW + 60);
    t = kiln_token_cache_get(c, "r", "s", "x", NOW);
    is_str(t, "tok1", "hit");
    free(t);
    ok(kiln_token_cache_get(c, "r", "s", "y", NOW) == NULL, "other scope misses");
    ok(kiln_token_cache_get(c, "r", "t", "x", NOW) == NULL, "other service misses");
    ok(kiln_token_cache_get(c, "q", "s", "x", NOW) == NULL, "other realm misses");

    t = kiln_token_cache_get(c, "r", "s", "x", NOW + 49);
    is_str(t, "tok1", "hit 11 s before expiry");
    free(t);
    is_int(kiln_token_cache_size(c), 1, "one entry");
    ok(kiln_token_cache_get(c, "r", "s", "x", NOW + 50) == NULL, "miss 10 s before expiry");
    is_int(kiln_token_cache_size(c), 0, "expired entry removed on get");

    kiln_token_cache_put(c, "r", NULL, NULL, "tok2", NOW + 60);
    t = kiln_token_cache_get(c, "r", "", "", NOW);
    is_str(t, "tok2", "NULL key parts equal \"\"");
    free(t);
    kiln_token_cache_put(c, "r", "", "", "tok3", NOW + 120);
    is_int(kiln_token_cache_size(c), 1, "put of the same key replaces");
    t = kiln_token_cache_get(c, "r", NULL, NULL, NOW + 100);
    is_str(t, "tok3", "replaced token and expiry");
    free(t);
    kiln_token_cache_drop(c, "r", NULL, "");
    is_int(kiln_token_cache_size(c), 0, "drop");
    kiln_token_cache_drop(c, "r", NULL, "");
    kiln_token_cache_put(c, "r", "s", "x", "tok", NOW + 60);
    kiln_token_cache_put(c, "r", "s", "x", NULL, NOW + 60);
    is_int(kiln_token_cache_size(c), 0, "put of NULL drops");
    kiln_token_cache_put(c, "r", "s", "x", "old", NOW - 100);
    ok(kiln_token_cache_get(c, "r", "s", "x", NOW) == NULL, "already expired token misses");
    kiln_token_cache_put(c, "r", "s", "x", "old", (time_t)LLONG_MIN);
    ok(kiln_token_cache_get(c, "r", "s", "x", (time_t)LLONG_MAX) == NULL, "extreme times");

    /* the bound: 300 puts keep the last 256; a re-put entry counts as new */
    for (int k = 0; k < 300; k++) {
        char scope[32], tok[32];
        snprintf(scope, sizeof(scope), "scope-%d", k);
        snprintf(tok, sizeof(tok), "tok-%d", k);
        kiln_token_cache_put(c, "r", "s", scope, tok, NOW + 600);
        if (k == 100)
            kiln_token_cache_put(c, "r", "s", "scope-0", "tok-0b", NOW + 600);
    }
    is_int(kiln_token_cache_size(c), KILN_TOKEN_CACHE_MAX, "cache is bounded");
    t = kiln_token_cache_get(c, "r", "s", "scope-0", NOW);
    is_str(t, "tok-0b", "entry put again survives eviction");
    free(t);
    ok(kiln_token_cache_get(c, "r", "s", "scope-1", NOW) == NULL, "oldest entry evicted");
    ok(kiln_token_cache_get(c, "r", "s", "scope-44", NOW) == NULL, "45th oldest evicted");
    t = kiln_token_cache_get(c, "r", "s", "scope-45", NOW);
    is_str(t, "tok-45", "46th oldest kept");
    free(t);
    t = kiln_token_cache_get(c, "r", "s", "scope-299", NOW);
    is_str(t, "tok-299", "newest kept");
    free(t);
    kiln_token_cache_free(c);
    kiln_token_cache_free(NULL);
    ok(kiln_token_cache_get(NULL, "r", "s", "x", NOW) == NULL, "NULL cache misses");
    kiln_token_cache_put(NULL, "r", "s", "x", "t", NOW);
    kiln_token_cache_drop(NULL, "r", "s", "x");
    is_int(kiln_token_cache_size(NULL), 0, "NULL cache is empty");
}

struct worker {
    struct kiln_token_cache *c;
    int id;
    int bad;
};

static void *work(void *arg)
{
    struct worker *w = arg;
    for (int k = 0; k < 2000; k++) {
        char scope[32], tok[32];
        snprintf(scope, sizeof(scope), "s-%d-%d", w->id, k % 100);
        snprintf(tok, sizeof(tok), "t-%d-%d", w->id, k % 100);
        kiln_token_cache_put(w->c, "realm", "svc", scope, tok, NOW + 600);
        char *t = kiln_token_cache_get(w->c, "realm", "svc", scope, NOW);
        /* another thread may have evicted it, but never changed it */
        if (t && strcmp(t, tok) != 0)
            w->bad++;
        free(t);
        if (k % 7 == 0)
            kiln_token_cache_drop(w->c, "realm", "svc", scope);
        t = kiln_token_cache_get(w->c, "realm", "svc", "shared", NOW);
        free(t);
        kiln_token_cache_put(w->c, "realm", "svc", "shared", tok, NOW + 600);
    }
    return NULL;
}

static void test_cache_threads(void)
{
    struct kiln_token_cache *c = kiln_token_cache_new();
    struct worker w[4];
    pthread_t th[4];
    for (int k = 0; k < 4; k++) {
        w[k] = (struct worker){c, k, 0};
        pthread_create(&th[k], NULL, work, &w[k]);
    }
    int bad_total = 0;
    for (int k = 0; k < 4; k++) {
        pthread_join(th[k], NULL);
        bad_total += w[k].bad;
    }
    is_int(bad_total, 0, "4 threads: every hit is the token put for the key");
    ok(kiln_token_cache_size(c) <= KILN_TOKEN_CACHE_MAX, "4 threads: still bounded");
    kiln_token_cache_free(c);
}

int main(void)
{
    test_challenges();
    test_token_requests();
    test_config();
    test_config_bad();
    test_basic_header();
    test_token_response();
    test_token_response_bad();
    test_cache();
    test_cache_threads();
    return tap_done();
}
