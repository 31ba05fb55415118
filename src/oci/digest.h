/*
 * Content digests, as the OCI image spec (descriptor.md) writes them:
 *
 *   digest    := algorithm ":" encoded
 *   algorithm := component ([+._-] component)*,  component := [a-z0-9]+
 *   encoded   := [a-zA-Z0-9=_-]+
 *
 * kiln accepts the two registered algorithms: "sha256" with exactly 64
 * lower-case hex digits and "sha512" with 128. A well-formed digest with
 * another algorithm is -KILN_EUNSUPPORTED; anything else -KILN_EINVAL.
 * kiln computes sha256 only (util/sha256.h); a sha512 digest is valid in a
 * manifest but cannot be verified (-KILN_EUNSUPPORTED from the verifier).
 */
#ifndef KILN_OCI_DIGEST_H
#define KILN_OCI_DIGEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kiln/error.h"
#include "util/sha256.h"

#define KILN_DIGEST_SHA256_LEN 71  /* "sha256:" + 64 */
#define KILN_DIGEST_MAX_LEN    135 /* "sha512:" + 128 */
/* Room for any valid digest and its NUL. */
#define KILN_DIGEST_BUFSZ (KILN_DIGEST_MAX_LEN + 1)

/*
 * Check that `s` is a valid digest. Returns 0, -KILN_EINVAL ("invalid
 * digest 'x': sha256 needs 64 lower-case hex digits") or -KILN_EUNSUPPORTED
 * ("unsupported digest algorithm 'md5'"). NULL is invalid. Long or
 * unprintable input is quoted shortened and escaped.
 */
int kiln_digest_validate(const char *s, struct kiln_error **err);

/* True when kiln_digest_validate(s) would return 0. */
bool kiln_digest_is_valid(const char *s);

/*
 * The encoded part of a valid digest (after the ':'), or NULL when `s` is
 * not a valid digest. Points into `s`.
 */
const char *kiln_digest_encoded(const char *s);

/*
 * The 64 hex digits of a sha256 digest, into *ret_hex (pointing into
 * `digest`). Returns 0, kiln_digest_validate()'s error for an invalid
 * digest, or -KILN_EUNSUPPORTED ("unsupported diff_id 'sha512:0123...':
 * only sha256") for a valid digest of another algorithm; `what` names the
 * digest in that message ("digest", "diff_id").
 */
int kiln_digest_sha256_hex(const char *digest, const char *what, const char **ret_hex,
                           struct kiln_error **err);

/* True when `s` is exactly 64 lower-case hex digits (as the name of a sha256 blob file). */
bool kiln_digest_is_sha256_hex(const char *s);

/*
 * Write the algorithm of a valid digest ("sha256", "sha512") into `out`
 * (at least 8 bytes). Returns 0, or -KILN_EINVAL when `s` is not valid.
 */
int kiln_digest_algorithm(const char *s, char out[8]);

/*
 * Finish `h` (which must then be re-initialised before reuse) and write
 * "sha256:<64 hex>" into out.
 */
void kiln_digest_from_sha256(struct kiln_sha256 *h, char out[KILN_DIGEST_BUFSZ]);

/* "sha256:<hex>" of a buffer, into out. */
void kiln_digest_buf(const void *data, size_t len, char out[KILN_DIGEST_BUFSZ]);

/* "sha256:<hex>" of a buffer, newly allocated; the caller frees it. */
char *kiln_digest_of(const void *data, size_t len);

/*
 * Streaming verification of content against an expected digest and size:
 *
 *   struct kiln_digest_verifier v;
 *   r = kiln_digest_verifier_init(&v, "sha256:ab..", 1234, err);
 *   r = kiln_digest_verifier_update(&v, data, len, err);   as often as needed
 *   r = kiln_digest_verifier_check(&v, err);
 *   v.actual now holds "sha256:<hex>" of what was seen
 *   kiln_digest_verifier_release(&v);                      always; NULL-safe
 *
 * The expected digest may be NULL (only compute it) and the size -1 (not
 * checked). Errors are -KILN_EINVAL with messages
 *   "digest mismatch: expected sha256:ab.., got sha256:cd.."
 *   "size mismatch: expected 1234 bytes, got 1300"
 * _update() already fails once more bytes than the expected size arrive
 * ("size mismatch: expected 1234 bytes, got at least 1300"), so a stream
 * that runs on can be cut early. _init() refuses an invalid expected digest,
 * or a sha512 one (-KILN_EUNSUPPORTED); after a failed _init() only
 * _release() may be called.
 */
struct kiln_digest_verifier {
    struct kiln_sha256 h;
    uint64_t n;                       /* bytes seen */
    int64_t expected_size;            /* -1: not checked */
    char expected[KILN_DIGEST_BUFSZ]; /* "": not checked */
    char actual[KILN_DIGEST_BUFSZ];   /* set by _check() */
    bool done;                        /* _check() was called */
};

int kiln_digest_verifier_init(struct kiln_digest_verifier *v, const char *expected_digest,
                              int64_t expected_size, struct kiln_error **err);
int kiln_digest_verifier_update(struct kiln_digest_verifier *v, const void *data, size_t len,
                                struct kiln_error **err);
/* Finish: 0 when digest and size match what was expected. Call once. */
int kiln_digest_verifier_check(struct kiln_digest_verifier *v, struct kiln_error **err);
void kiln_digest_verifier_release(struct kiln_digest_verifier *v);

#endif
