/*
 * Streaming SHA-256 (OpenSSL's EVP, which uses SHA-NI where the CPU has it).
 *
 *   struct kiln_sha256 h;
 *   kiln_sha256_init(&h);
 *   kiln_sha256_update(&h, data, len);   ... as often as needed
 *   kiln_sha256_final_hex(&h, hex);      hex: 64 lower-case digits + NUL
 *   kiln_sha256_release(&h);             also fine without final; NULL-safe
 */
#ifndef KILN_SHA256_H
#define KILN_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define KILN_SHA256_HEX_LEN 64

struct kiln_sha256 {
    void *ctx; /* EVP_MD_CTX */
};

void kiln_sha256_init(struct kiln_sha256 *h);
void kiln_sha256_update(struct kiln_sha256 *h, const void *data, size_t len);
/* Finish and write the digest; the state must be re-initialised before reuse. */
void kiln_sha256_final(struct kiln_sha256 *h, uint8_t out[32]);
void kiln_sha256_final_hex(struct kiln_sha256 *h, char out[KILN_SHA256_HEX_LEN + 1]);
void kiln_sha256_release(struct kiln_sha256 *h);

/* One-shot: hex digest of a buffer. */
void kiln_sha256_hex(const void *data, size_t len, char out[KILN_SHA256_HEX_LEN + 1]);

#endif
