/*
 * Registry authentication pieces that involve no network: challenge
 * parsing, credentials from docker config files, token responses, and a
 * token cache. The HTTP client (registry/client.c) drives the flow:
 *
 *   401 + WWW-Authenticate  -> kiln_auth_challenge_parse()
 *   Basic                   -> kiln_auth_basic_header(cred)
 *   Bearer                  -> GET realm?service=..&scope=.. (with Basic
 *                              credentials, or a refresh/identity token by
 *                              POST), kiln_auth_token_response_parse(),
 *                              kiln_token_cache_put(); later requests use
 *                              kiln_token_cache_get() until expiry.
 *
 * Secrets (passwords, tokens, auth strings) never appear in error messages
 * or logs produced here.
 */
#ifndef KILN_REGISTRY_AUTH_H
#define KILN_REGISTRY_AUTH_H

#include <stddef.h>
#include <time.h>

#include "kiln/error.h"

#define KILN_AUTH_HEADER_MAX         8192          /* longest WWW-Authenticate accepted */
#define KILN_AUTH_CONFIG_MAX         (1 << 20)     /* largest config.json accepted */
#define KILN_AUTH_TOKEN_RESPONSE_MAX (1 << 20)     /* largest token endpoint reply accepted */
#define KILN_AUTH_EXPIRES_MAX        (366 * 86400) /* longer token lifetimes are cut to this */
#define KILN_TOKEN_CACHE_MAX         256           /* entries; putting one more evicts the oldest */

enum kiln_auth_scheme { KILN_AUTH_NONE, KILN_AUTH_BASIC, KILN_AUTH_BEARER };

struct kiln_challenge {
    enum kiln_auth_scheme scheme;
    char *realm;   /* Bearer: the token endpoint URL (required); Basic: the realm or NULL */
    char *service; /* or NULL */
    char *scope;   /* or NULL; several scopes are joined with ' ' */
    char *error;   /* e.g. "insufficient_scope", or NULL */
};

#define KILN_CHALLENGE_INIT                                                                        \
    {                                                                                              \
        KILN_AUTH_NONE, NULL, NULL, NULL, NULL                                                     \
    }

/*
 * Parse a WWW-Authenticate header value (RFC 7235 syntax: auth-scheme, then
 * auth-params as token=token or token="quoted string" separated by commas;
 * several challenges may be listed). Picks Bearer when offered, else Basic.
 * Fails with -KILN_EINVAL (message names the problem and offset) on bad
 * syntax, -KILN_EUNSUPPORTED when only other schemes are offered, and when
 * a Bearer challenge lacks a realm or its realm is not an http(s) URL.
 *
 * Details: scheme and parameter names are case-insensitive; spaces and tabs
 * around ',' and '=' are skipped, and so is a trailing CR/LF; empty list
 * elements (", ,") are allowed; quoted strings take backslash escapes and
 * refuse control characters; a scheme may carry a token68 instead of
 * parameters (ignored), but then no parameters after it. Only the first
 * Bearer and the first Basic challenge are looked at; unknown parameters
 * are ignored; a repeated realm, service or error is an error, while
 * repeated scope parameters are joined with ' '. Empty values count as
 * absent (NULL). A realm must be printable ASCII without spaces.
 * The header is at most KILN_AUTH_HEADER_MAX bytes (else -KILN_ETOOBIG).
 * *ret is written only on success; release it with kiln_challenge_release().
 */
int kiln_auth_challenge_parse(const char *header, struct kiln_challenge *ret,
                              struct kiln_error **err);
void kiln_challenge_release(struct kiln_challenge *c);

struct kiln_cred {
    char *username;       /* or NULL */
    char *password;       /* or NULL */
    char *identity_token; /* config.json "identitytoken" (OAuth2 refresh token), or NULL */
};

#define KILN_CRED_INIT                                                                             \
    {                                                                                              \
        NULL, NULL, NULL                                                                           \
    }

/* Frees the strings (wiping the secrets first) and resets the fields; NULL is fine. */
void kiln_cred_release(struct kiln_cred *c);
/* True when the credentials hold anything usable (a non-NULL field). */
int kiln_cred_present(const struct kiln_cred *c);

/*
 * Find the credentials for `registry` (a host[:port], e.g. "localhost:5000"
 * or "docker.io") in a docker config.json or a Kubernetes dockerconfigjson
 * secret payload (both: {"auths": {KEY: {"auth": base64(user:pass) |
 * "username"+"password", "identitytoken": ...}}}; a bare {KEY: {...}}
 * (old .dockercfg) is accepted too). KEY may be "host", "https://host",
 * "http://host" or "https://host/v1/"; docker.io also matches
 * "https://index.docker.io/v1/" and "index.docker.io".
 * Returns 1 and fills *ret when found, 0 when not, or -KILN_EINVAL when the
 * document is malformed (the message never contains a secret).
 *
 * Matching: a key equal to `registry` wins; otherwise keys are reduced to
 * their host[:port] (scheme and path dropped, host compared case-
 * insensitively, "index.docker.io" and "registry-1.docker.io" read as
 * "docker.io") and the first usable match in document order is taken.
 * "auth" (base64 with or without padding, CR/LF skipped, split at the
 * first ':') overrides "username"/"password", as in docker. Empty strings
 * count as absent; an entry with nothing usable counts as not found.
 * Malformed entries that do not match are ignored. The document is at
 * most KILN_AUTH_CONFIG_MAX bytes (else -KILN_ETOOBIG). *ret is written
 * only when 1 is returned; the caller releases it with kiln_cred_release().
 */
int kiln_auth_config_lookup(const char *json, size_t len, const char *registry,
                            struct kiln_cred *ret, struct kiln_error **err);

/*
 * "Basic " + base64(username ":" password) (a NULL part counts as ""); the
 * caller frees it. NULL when c is NULL or has neither username nor password.
 */
char *kiln_auth_basic_header(const struct kiln_cred *c);

/*
 * The URL of a token GET request: the challenge's realm with "service=" and
 * one "scope=" per space-separated scope appended, URL-encoded ('?', or '&'
 * when the realm already has a query). `scope` overrides the challenge's
 * scope when not NULL ("" for none). NULL when the challenge has no realm.
 * The caller frees the result.
 */
char *kiln_auth_token_url(const struct kiln_challenge *c, const char *scope);

/*
 * The form body (application/x-www-form-urlencoded) of a token POST request
 * (OAuth2, as in the distribution token spec): with an identity token,
 * "grant_type=refresh_token&refresh_token=..", otherwise with a username and
 * password "grant_type=password&username=..&password=..", followed by
 * "&service=..&client_id=..&scope=.." (scopes space-separated in one
 * parameter; `scope` as in kiln_auth_token_url(); client_id NULL means
 * "kiln"). NULL when cred holds neither. The result holds secrets: the
 * caller frees it (ideally wiping it first).
 */
char *kiln_auth_token_form(const struct kiln_challenge *c, const char *scope,
                           const struct kiln_cred *cred, const char *client_id);

/*
 * Parse a token endpoint's JSON reply: "token" or "access_token" (either),
 * "expires_in" seconds (default 60, minimum 60 as the distribution spec
 * says), "issued_at" (RFC 3339, optional), "refresh_token" (optional).
 * *ret_token and *ret_refresh (may be NULL) are the caller's to free;
 * *ret_expires (may be NULL) is an absolute time (now + expires_in).
 *
 * Details: a non-empty "access_token" wins over "token" (as in docker);
 * the token must be printable ASCII without spaces (it goes into a header).
 * issued_at is checked but not used: the local clock decides the expiry,
 * so clock skew cannot expire a token early. expires_in is cut to
 * KILN_AUTH_EXPIRES_MAX. *ret_refresh is NULL when there is none. Errors
 * (-KILN_EINVAL, -KILN_ETOOBIG above KILN_AUTH_TOKEN_RESPONSE_MAX) never
 * quote the body. Outputs are written only on success.
 */
int kiln_auth_token_response_parse(const char *body, size_t len, time_t now, char **ret_token,
                                   char **ret_refresh, time_t *ret_expires,
                                   struct kiln_error **err);

/*
 * A thread-safe cache of bearer tokens keyed by (realm, service, scope).
 * An entry is returned until 10 seconds before it expires. NULL key parts
 * equal "". At most KILN_TOKEN_CACHE_MAX entries: a put of a new key into a
 * full cache evicts the entry put longest ago (putting a key again renews
 * it); putting a NULL token drops the key. Tokens are wiped when dropped.
 * Every function accepts a NULL cache (a miss, a no-op).
 */
struct kiln_token_cache;
struct kiln_token_cache *kiln_token_cache_new(void);
void kiln_token_cache_free(struct kiln_token_cache *c);
/* A copy of the cached token (caller frees), or NULL. */
char *kiln_token_cache_get(struct kiln_token_cache *c, const char *realm, const char *service,
                           const char *scope, time_t now);
void kiln_token_cache_put(struct kiln_token_cache *c, const char *realm, const char *service,
                          const char *scope, const char *token, time_t expires);
/* Number of entries (for tests and stats). */
size_t kiln_token_cache_size(struct kiln_token_cache *c);
/* Forget one entry (after a 401 with a cached token). */
void kiln_token_cache_drop(struct kiln_token_cache *c, const char *realm, const char *service,
                           const char *scope);

#endif
