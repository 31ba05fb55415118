#include "util/common.h"

#include "oci/digest.h"
#include "util/diag.h"
#include "tap.h"

#define HEX64 "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define D256  "sha256:" HEX64
#define D512  "sha512:" HEX64 HEX64
#define EMPTY "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#define ABC   "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"

struct vec {
    const char *in;
    int code;        /* 0, KILN_EINVAL, KILN_EUNSUPPORTED */
    const char *msg; /* NULL: not checked */
};

static const struct vec vecs[] = {
    {D256, 0, NULL},
    {D512, 0, NULL},
    {EMPTY, 0, NULL},
    {NULL, KILN_EINVAL, "invalid digest: missing"},
    {"", KILN_EINVAL, "invalid digest '': missing ':' after the algorithm"},
    {"sha256", KILN_EINVAL, "invalid digest 'sha256': missing ':' after the algorithm"},
    {HEX64, KILN_EINVAL, NULL},
    {"sha256:", KILN_EINVAL, "invalid digest 'sha256:': sha256 needs 64 lower-case hex digits"},
    {"sha256:xyz", KILN_EINVAL,
     "invalid digest 'sha256:xyz': sha256 needs 64 lower-case hex digits"},
    {"sha256:0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef", KILN_EINVAL, NULL},
    {"sha256:" HEX64 "0", KILN_EINVAL, NULL},
    {"sha256:" HEX64 " ", KILN_EINVAL, NULL},
    {"sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde", KILN_EINVAL, NULL},
    {"sha512:" HEX64, KILN_EINVAL, NULL},
    {"SHA256:" HEX64, KILN_EINVAL, "invalid digest 'SHA256:" HEX64 "': bad algorithm"},
    {":" HEX64, KILN_EINVAL, NULL},
    {"sha256::" HEX64, KILN_EINVAL, NULL},
    {"md5:d41d8cd98f00b204e9800998ecf8427e", KILN_EUNSUPPORTED,
     "unsupported digest algorithm 'md5'"},
    {"sha256+b64u:LCa0a2j_xo_5m0U8HTBBNBNCLXBkg7-g-YpeiGJm564", KILN_EUNSUPPORTED,
     "unsupported digest algorithm 'sha256+b64u'"},
    {"multihash+base58:QmRZxt2b1FVZPNqd8hsiykDL3TdBDeTSPX9Kv46HmX4Gx8", KILN_EUNSUPPORTED, NULL},
    {"sha384:abc", KILN_EUNSUPPORTED, NULL},
    {"md5:", KILN_EINVAL, "invalid digest 'md5:': empty encoded part"},
    {"md5:ab cd", KILN_EINVAL, "invalid digest 'md5:ab cd': bad character in the encoded part"},
    {"md5:ab/cd", KILN_EINVAL, NULL},
    {"foo..bar:abc", KILN_EINVAL, "invalid digest 'foo..bar:abc': bad algorithm"},
    {"-sha:abc", KILN_EINVAL, NULL},
    {"sha-:abc", KILN_EINVAL, NULL},
    {"sh a:abc", KILN_EINVAL, NULL},
    {"sha256:\n" HEX64, KILN_EINVAL, NULL},
};

static void test_validate(void)
{
    for (size_t i = 0; i < KILN_ARRAY_SIZE(vecs); i++) {
        const struct vec *v = &vecs[i];
        struct kiln_error *e = NULL;
        char *name = v->in ? kiln_diag_quote(v->in, 200) : kiln_xstrdup("(null)");
        int r = kiln_digest_validate(v->in, &e);
        is_int(r, -v->code, "validate '%s'", name);
        if (v->code) {
            ok(e && e->code == v->code && e->msg && *e->msg, "error set for '%s'", name);
            if (v->msg)
                is_str(e ? e->msg : NULL, v->msg, "message for '%s'", name);
        } else {
            ok(!e, "no error for '%s'", name);
        }
        is_int(kiln_digest_validate(v->in, NULL), -v->code, "validate without err '%s'", name);
        is_int(kiln_digest_is_valid(v->in), v->code == 0, "is_valid '%s'", name);
        kiln_error_free(e);
        free(name);
    }

    /* long and unprintable input is quoted shortened */
    char big[1000];
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    big[3] = ':';
    big[10] = '\x01';
    struct kiln_error *e = NULL;
    kiln_digest_validate(big, &e);
    ok(e && strlen(e->msg) < 200, "long input shortened in the message");
    ok(e && strstr(e->msg, "\\x01") && strstr(e->msg, "..."), "control byte escaped, cut marked");
    kiln_error_free(e);
}

static void test_parts(void)
{
    is_str(kiln_digest_encoded(D256), HEX64, "encoded part");
    ok(kiln_digest_encoded("sha256:xyz") == NULL, "no encoded part of an invalid digest");
    ok(kiln_digest_encoded("md5:abc") == NULL, "no encoded part of an unsupported digest");
    char alg[8];
    is_int(kiln_digest_algorithm(D512, alg), 0, "algorithm of sha512");
    is_str(alg, "sha512", "algorithm sha512");
    is_int(kiln_digest_algorithm(D256, alg), 0, "algorithm of sha256");
    is_str(alg, "sha256", "algorithm sha256");
    is_int(kiln_digest_algorithm("nope", alg), -KILN_EINVAL, "algorithm of invalid");

    const char *d256 = D256, *hex = NULL;
    struct kiln_error *e = NULL;
    is_int(kiln_digest_sha256_hex(d256, "digest", &hex, &e), 0, "sha256 hex of a sha256 digest");
    ok(hex == d256 + 7, "the hex part points into the digest");
    hex = NULL;
    is_int(kiln_digest_sha256_hex(D512, "diff_id", &hex, &e), -KILN_EUNSUPPORTED,
           "sha256 hex of a sha512 digest is unsupported");
    ok(e && strstr(e->msg, "unsupported diff_id 'sha512:") && strstr(e->msg, "only sha256"),
       "the message names the field and the algorithm: %s", e ? e->msg : "(none)");
    ok(hex == NULL, "no hex for a sha512 digest");
    kiln_error_freep(&e);
    is_int(kiln_digest_sha256_hex("sha256:xyz", "digest", &hex, &e), -KILN_EINVAL,
           "sha256 hex of an invalid digest is invalid");
    ok(e && strstr(e->msg, "invalid digest"), "with the validator's message: %s",
       e ? e->msg : "(none)");
    kiln_error_freep(&e);

    ok(kiln_digest_is_sha256_hex(HEX64), "64 lower-case hex digits are a sha256 hex");
    ok(!kiln_digest_is_sha256_hex(D256), "a whole digest is not");
    char buf[80];
    snprintf(buf, sizeof(buf), "%s", HEX64);
    buf[63] = '\0';
    ok(!kiln_digest_is_sha256_hex(buf), "63 digits are not");
    snprintf(buf, sizeof(buf), "%s0", HEX64);
    ok(!kiln_digest_is_sha256_hex(buf), "65 digits are not");
    snprintf(buf, sizeof(buf), "%s", HEX64);
    buf[10] = 'A';
    ok(!kiln_digest_is_sha256_hex(buf), "upper-case hex is not");
    ok(!kiln_digest_is_sha256_hex(""), "the empty string is not");
}

static void test_compute(void)
{
    char d[KILN_DIGEST_BUFSZ];
    kiln_digest_buf("", 0, d);
    is_str(d, EMPTY, "digest of empty buffer");
    kiln_digest_buf("abc", 3, d);
    is_str(d, ABC, "digest of 'abc'");
    char *s = kiln_digest_of("abc", 3);
    is_str(s, ABC, "allocated digest of 'abc'");
    free(s);

    struct kiln_sha256 h;
    kiln_sha256_init(&h);
    kiln_sha256_update(&h, "a", 1);
    kiln_sha256_update(&h, "bc", 2);
    kiln_digest_from_sha256(&h, d);
    kiln_sha256_release(&h);
    is_str(d, ABC, "digest from a streaming hasher");
    is_int(strlen(d), KILN_DIGEST_SHA256_LEN, "sha256 digest length");
    ok(kiln_digest_is_valid(d), "computed digest is valid");
}

static void test_verifier(void)
{
    struct kiln_digest_verifier v;
    struct kiln_error *e = NULL;

    is_int(kiln_digest_verifier_init(&v, ABC, 3, &e), 0, "init with digest and size");
    is_int(kiln_digest_verifier_update(&v, "ab", 2, &e), 0, "update 1");
    is_int(kiln_digest_verifier_update(&v, "c", 1, &e), 0, "update 2");
    is_int(kiln_digest_verifier_update(&v, "", 0, &e), 0, "empty update");
    is_int(kiln_digest_verifier_check(&v, &e), 0, "match");
    is_str(v.actual, ABC, "actual digest");
    is_int(kiln_digest_verifier_check(&v, &e), -KILN_EINTERNAL, "second check refused");
    kiln_digest_verifier_release(&v);
    kiln_error_free(e);
    e = NULL;

    kiln_digest_verifier_init(&v, EMPTY, -1, NULL);
    kiln_digest_verifier_update(&v, "abc", 3, NULL);
    is_int(kiln_digest_verifier_check(&v, &e), -KILN_EINVAL, "digest mismatch");
    is_str(e ? e->msg : NULL, "digest mismatch: expected " EMPTY ", got " ABC,
           "digest mismatch message");
    kiln_digest_verifier_release(&v);
    kiln_error_free(e);
    e = NULL;

    kiln_digest_verifier_init(&v, ABC, 4, NULL);
    kiln_digest_verifier_update(&v, "abc", 3, NULL);
    is_int(kiln_digest_verifier_check(&v, &e), -KILN_EINVAL, "short content");
    is_str(e ? e->msg : NULL, "size mismatch: expected 4 bytes, got 3", "size mismatch message");
    kiln_digest_verifier_release(&v);
    kiln_error_free(e);
    e = NULL;

    kiln_digest_verifier_init(&v, NULL, 2, NULL);
    is_int(kiln_digest_verifier_update(&v, "abc", 3, &e), -KILN_EINVAL, "too long: update fails");
    is_str(e ? e->msg : NULL, "size mismatch: expected 2 bytes, got at least 3",
           "early size mismatch message");
    kiln_digest_verifier_release(&v);
    kiln_error_free(e);
    e = NULL;

    kiln_digest_verifier_init(&v, NULL, -1, NULL);
    kiln_digest_verifier_update(&v, "abc", 3, NULL);
    is_int(kiln_digest_verifier_check(&v, NULL), 0, "nothing expected: ok");
    is_str(v.actual, ABC, "nothing expected: digest computed");
    is_int(v.n, 3, "byte count");
    kiln_digest_verifier_release(&v);

    kiln_digest_verifier_init(&v, ABC, 0, NULL);
    is_int(kiln_digest_verifier_update(&v, "", 0, NULL), 0, "size 0: empty update fine");
    is_int(kiln_digest_verifier_update(&v, "a", 1, NULL), -KILN_EINVAL, "size 0: one byte fails");
    kiln_digest_verifier_release(&v);

    is_int(kiln_digest_verifier_init(&v, D512, -1, &e), -KILN_EUNSUPPORTED,
           "sha512 cannot be verified");
    kiln_digest_verifier_release(&v);
    kiln_error_free(e);
    e = NULL;
    is_int(kiln_digest_verifier_init(&v, "sha256:xyz", -1, &e), -KILN_EINVAL,
           "invalid expected digest");
    kiln_digest_verifier_release(&v);
    kiln_error_free(e);
    e = NULL;
    is_int(kiln_digest_verifier_init(&v, NULL, -5, &e), -KILN_EINVAL, "negative size refused");
    kiln_digest_verifier_release(&v);
    kiln_error_free(e);
    kiln_digest_verifier_release(NULL);
    ok(1, "release NULL");
}

int main(void)
{
    test_validate();
    test_parts();
    test_compute();
    test_verifier();
    return tap_done();
}
