#include "util/common.h"

#include <inttypes.h>

#include "oci/digest.h"
#include "util/diag.h"

/* Longest algorithm name or input quoted in a message. */
#define QUOTE_MAX 80

static bool is_lower_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

static bool is_alg_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

static bool is_alg_sep(char c)
{
    return c == '+' || c == '.' || c == '_' || c == '-';
}

static bool is_encoded_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '=' ||
           c == '_' || c == '-';
}

/* Length of the registered algorithm's hex part, or 0 when not registered. */
static size_t registered_hex_len(const char *alg, size_t n)
{
    if (n == 6 && memcmp(alg, "sha256", 6) == 0)
        return 64;
    if (n == 6 && memcmp(alg, "sha512", 6) == 0)
        return 128;
    return 0;
}

/* Does [s, s+n) match the algorithm grammar? */
static bool algorithm_ok(const char *s, size_t n)
{
    if (n == 0 || !is_alg_char(s[0]) || !is_alg_char(s[n - 1]))
        return false;
    for (size_t i = 1; i < n; i++) {
        if (is_alg_sep(s[i]) && is_alg_sep(s[i - 1]))
            return false;
        if (!is_alg_char(s[i]) && !is_alg_sep(s[i]))
            return false;
    }
    return true;
}

static int invalid(struct kiln_error **err, const char *s, const char *why)
{
    if (!err)
        return -KILN_EINVAL;
    _cleanup_free_ char *q = kiln_diag_quote(s, QUOTE_MAX);
    return kiln_error_set(err, KILN_EINVAL, 0, "invalid digest '%s': %s", q, why);
}

int kiln_digest_validate(const char *s, struct kiln_error **err)
{
    if (!s)
        return kiln_error_set(err, KILN_EINVAL, 0, "invalid digest: missing");
    const char *colon = strchr(s, ':');
    if (!colon)
        return invalid(err, s, "missing ':' after the algorithm");
    size_t an = (size_t)(colon - s);
    const char *enc = colon + 1;
    size_t en = strlen(enc);
    if (!algorithm_ok(s, an))
        return invalid(err, s, "bad algorithm");

    size_t want = registered_hex_len(s, an);
    if (want) {
        bool hex = en == want;
        for (size_t i = 0; hex && i < en; i++)
            hex = is_lower_hex(enc[i]);
        if (!hex) {
            if (!err)
                return -KILN_EINVAL;
            _cleanup_free_ char *q = kiln_diag_quote(s, QUOTE_MAX);
            return kiln_error_set(err, KILN_EINVAL, 0,
                                  "invalid digest '%s': %.*s needs %zu lower-case hex digits", q,
                                  (int)an, s, want);
        }
        return 0;
    }

    if (en == 0)
        return invalid(err, s, "empty encoded part");
    for (size_t i = 0; i < en; i++)
        if (!is_encoded_char(enc[i]))
            return invalid(err, s, "bad character in the encoded part");
    if (!err)
        return -KILN_EUNSUPPORTED;
    _cleanup_free_ char *q = kiln_xstrndup(s, an);
    _cleanup_free_ char *qq = kiln_diag_quote(q, QUOTE_MAX);
    return kiln_error_set(err, KILN_EUNSUPPORTED, 0, "unsupported digest algorithm '%s'", qq);
}

bool kiln_digest_is_valid(const char *s)
{
    return kiln_digest_validate(s, NULL) == 0;
}

const char *kiln_digest_encoded(const char *s)
{
    if (!kiln_digest_is_valid(s))
        return NULL;
    return strchr(s, ':') + 1;
}

int kiln_digest_sha256_hex(const char *digest, const char *what, const char **ret_hex,
                           struct kiln_error **err)
{
    int r = kiln_digest_validate(digest, err);
    if (r < 0)
        return r;
    if (strncmp(digest, "sha256:", 7) != 0)
        return kiln_error_set(err, KILN_EUNSUPPORTED, 0, "unsupported %s '%.16s...': only sha256",
                              what, digest);
    *ret_hex = digest + 7;
    return 0;
}

bool kiln_digest_is_sha256_hex(const char *s)
{
    size_t i = 0;
    for (; s[i]; i++)
        if (!is_lower_hex(s[i]))
            return false;
    return i == KILN_SHA256_HEX_LEN;
}

int kiln_digest_algorithm(const char *s, char out[8])
{
    if (!kiln_digest_is_valid(s))
        return -KILN_EINVAL;
    /* both registered names are 6 characters */
    memcpy(out, s, 6);
    out[6] = '\0';
    return 0;
}

void kiln_digest_from_sha256(struct kiln_sha256 *h, char out[KILN_DIGEST_BUFSZ])
{
    memcpy(out, "sha256:", 7);
    kiln_sha256_final_hex(h, out + 7);
}

void kiln_digest_buf(const void *data, size_t len, char out[KILN_DIGEST_BUFSZ])
{
    memcpy(out, "sha256:", 7);
    kiln_sha256_hex(data, len, out + 7);
}

char *kiln_digest_of(const void *data, size_t len)
{
    char d[KILN_DIGEST_BUFSZ];
    kiln_digest_buf(data, len, d);
    return kiln_xstrdup(d);
}

int kiln_digest_verifier_init(struct kiln_digest_verifier *v, const char *expected_digest,
                              int64_t expected_size, struct kiln_error **err)
{
    memset(v, 0, sizeof(*v));
    v->expected_size = -1;
    if (expected_digest) {
        int r = kiln_digest_validate(expected_digest, err);
        if (r < 0)
            return r;
        if (strncmp(expected_digest, "sha256:", 7) != 0)
            return kiln_error_set(err, KILN_EUNSUPPORTED, 0,
                                  "cannot verify digest '%.6s...': only sha256 is computed",
                                  expected_digest);
        memcpy(v->expected, expected_digest, strlen(expected_digest) + 1);
    }
    if (expected_size < -1)
        return kiln_error_set(err, KILN_EINVAL, 0, "invalid expected size %" PRId64, expected_size);
    v->expected_size = expected_size;
    kiln_sha256_init(&v->h);
    return 0;
}

int kiln_digest_verifier_update(struct kiln_digest_verifier *v, const void *data, size_t len,
                                struct kiln_error **err)
{
    if (v->done || !v->h.ctx)
        return kiln_error_set(err, KILN_EINTERNAL, 0, "digest verifier used after check");
    v->n += len;
    if (v->expected_size >= 0 && v->n > (uint64_t)v->expected_size)
        return kiln_error_set(err, KILN_EINVAL, 0,
                              "size mismatch: expected %" PRId64 " bytes, got at least %" PRIu64,
                              v->expected_size, v->n);
    kiln_sha256_update(&v->h, data, len);
    return 0;
}

int kiln_digest_verifier_check(struct kiln_digest_verifier *v, struct kiln_error **err)
{
    if (v->done || !v->h.ctx)
        return kiln_error_set(err, KILN_EINTERNAL, 0, "digest verifier checked twice");
    v->done = true;
    kiln_digest_from_sha256(&v->h, v->actual);
    if (v->expected_size >= 0 && v->n != (uint64_t)v->expected_size)
        return kiln_error_set(err, KILN_EINVAL, 0,
                              "size mismatch: expected %" PRId64 " bytes, got %" PRIu64,
                              v->expected_size, v->n);
    if (v->expected[0] && strcmp(v->expected, v->actual) != 0)
        return kiln_error_set(err, KILN_EINVAL, 0, "digest mismatch: expected %s, got %s",
                              v->expected, v->actual);
    return 0;
}

void kiln_digest_verifier_release(struct kiln_digest_verifier *v)
{
    if (!v)
        return;
    kiln_sha256_release(&v->h);
}
