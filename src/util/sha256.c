#include "util/common.h"
#include "util/sha256.h"

#include <openssl/evp.h>

void kiln_sha256_init(struct kiln_sha256 *h)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1)
        abort(); /* only fails on allocation failure */
    h->ctx = ctx;
}

void kiln_sha256_update(struct kiln_sha256 *h, const void *data, size_t len)
{
    if (len && EVP_DigestUpdate(h->ctx, data, len) != 1)
        abort();
}

void kiln_sha256_final(struct kiln_sha256 *h, uint8_t out[32])
{
    unsigned int n = 0;
    if (EVP_DigestFinal_ex(h->ctx, out, &n) != 1 || n != 32)
        abort();
}

void kiln_sha256_final_hex(struct kiln_sha256 *h, char out[KILN_SHA256_HEX_LEN + 1])
{
    static const char hex[] = "0123456789abcdef";
    uint8_t md[32];
    kiln_sha256_final(h, md);
    for (int i = 0; i < 32; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[KILN_SHA256_HEX_LEN] = '\0';
}

void kiln_sha256_release(struct kiln_sha256 *h)
{
    if (h && h->ctx) {
        EVP_MD_CTX_free(h->ctx);
        h->ctx = NULL;
    }
}

void kiln_sha256_hex(const void *data, size_t len, char out[KILN_SHA256_HEX_LEN + 1])
{
    struct kiln_sha256 h;
    kiln_sha256_init(&h);
    kiln_sha256_update(&h, data, len);
    kiln_sha256_final_hex(&h, out);
    kiln_sha256_release(&h);
}
