#include "util/common.h"
#include "util/sha256.h"
#include "tap.h"

int main(void)
{
    char hex[KILN_SHA256_HEX_LEN + 1];
    kiln_sha256_hex("", 0, hex);
    is_str(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", "empty");
    kiln_sha256_hex("abc", 3, hex);
    is_str(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", "abc");

    /* streaming in odd pieces gives the one-shot digest */
    static char big[100000];
    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = (char)(i * 7 + 3);
    char one[KILN_SHA256_HEX_LEN + 1];
    kiln_sha256_hex(big, sizeof(big), one);
    struct kiln_sha256 h;
    kiln_sha256_init(&h);
    for (size_t off = 0, step = 1; off < sizeof(big); off += step, step = step * 3 % 4097 + 1)
        kiln_sha256_update(&h, big + off, off + step > sizeof(big) ? sizeof(big) - off : step);
    kiln_sha256_final_hex(&h, hex);
    kiln_sha256_release(&h);
    is_str(hex, one, "streamed digest equals one-shot digest");
    kiln_sha256_release(&h);
    ok(1, "release twice is harmless");
    return tap_done();
}
