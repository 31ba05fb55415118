/*
 * Tests for the streaming gzip body path of layer/decompress: ISA-L's
 * isal_inflate when built with it (KILN_HAVE_ISAL), zlib otherwise. Both
 * builds must pass the same checks. The members are made here with zlib; the
 * first large member turns the libdeflate fast path off for the rest of the
 * stream, so the later members all go through the streaming inflater.
 *
 * The delicate part is where a deflate stream ends: ISA-L reads ahead into a
 * 64-bit bit buffer, so at the end of a member it holds bytes of the trailer
 * (or of the next member) that must be given back. The source here can put a
 * read boundary at any chosen offset, so every position of the input buffer's
 * end around a member's end is tried.
 */
#include "util/common.h"
#include "layer/decompress.h"
#include "util/buf.h"
#include "util/sha256.h"
#include "tap.h"

#include <zlib.h>

#define BLOCK ((size_t)64 << 10) /* the smallest block (and input buffer) size */

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* n bytes: text-like runs (compressible), mixed with random runs when `mixed`. */
static uint8_t *make_data(size_t n, bool mixed)
{
    static const char *words[] = {"import ", "def ",  "return ", "self", "(", "):\n",
                                  "    ",    "layer", "kiln",    "=",    " ", "\n"};
    uint8_t *p = kiln_xmalloc(n ? n : 1);
    size_t i = 0;
    while (i < n) {
        size_t run = 1 + rnd() % 40000;
        if (run > n - i)
            run = n - i;
        if (mixed && rnd() % 3 == 0) {
            for (size_t j = 0; j < run; j++)
                p[i + j] = (uint8_t)rnd();
        } else {
            for (size_t j = 0; j < run;) {
                const char *w = words[rnd() % KILN_ARRAY_SIZE(words)];
                for (; *w && j < run; w++, j++)
                    p[i + j] = (uint8_t)*w;
            }
        }
        i += run;
    }
    return p;
}

/* Append one gzip member of in[0, n) to out; strategy as for deflateInit2(). */
static void add_member(struct kiln_buf *out, const uint8_t *in, size_t n, int level, int strategy)
{
    z_stream z;
    memset(&z, 0, sizeof(z));
    if (deflateInit2(&z, level, Z_DEFLATED, 31, 8, strategy) != Z_OK)
        abort();
    size_t cap = deflateBound(&z, n) + 64;
    if (kiln_buf_grow(out, cap) < 0)
        abort();
    z.next_in = (Bytef *)in;
    z.avail_in = (uInt)n;
    z.next_out = (Bytef *)out->buf + out->len;
    z.avail_out = (uInt)cap;
    if (deflate(&z, Z_FINISH) != Z_STREAM_END)
        abort();
    out->len += z.total_out;
    deflateEnd(&z);
}

/* ---- a memory source with a read boundary at a chosen offset ------------------------------- */

struct src {
    const uint8_t *p;
    size_t len, pos;
    size_t chunk;   /* max bytes per read (0: as many as asked) */
    bool random;    /* each read returns 1..chunk bytes */
    size_t lo, hi;  /* when hi > 0, chunk applies only to reads starting in [lo, hi) */
    size_t split;   /* no read crosses this offset (0: none) */
    uint64_t state; /* for random */
};

static ssize_t src_read(void *ud, void *buf, size_t n)
{
    struct src *s = ud;
    size_t k = s->len - s->pos;
    if (k > n)
        k = n;
    if (s->chunk && (!s->hi || (s->pos >= s->lo && s->pos < s->hi))) {
        size_t c = s->chunk;
        if (s->random) {
            s->state = s->state * 6364136223846793005ULL + 1442695040888963407ULL;
            c = 1 + (size_t)(s->state >> 33) % s->chunk;
        }
        if (k > c)
            k = c;
    }
    if (s->hi && s->lo > s->pos && s->pos + k > s->lo)
        k = s->lo - s->pos;
    if (s->split > s->pos && s->pos + k > s->split)
        k = s->split - s->pos;
    memcpy(buf, s->p + s->pos, k);
    s->pos += k;
    return (ssize_t)k;
}

/*
 * Decompress all of `in` through src `s` with opts `o`; compare with `want`
 * (when not NULL). Returns 0 or the error code; *msg gets the error message.
 */
static int run(struct src *s, const struct kiln_decompress_opts *o, const uint8_t *want,
               size_t want_len, struct kiln_decompress_result *res, char **msg)
{
    struct kiln_decompress *d = NULL;
    struct kiln_error *e = NULL;
    *msg = NULL;
    int r = kiln_decompress_open(&d, src_read, s, o, &e);
    size_t got = 0;
    bool same = true;
    if (r == 0) {
        const void *p;
        ssize_t n;
        while ((n = kiln_decompress_next(d, &p, &e)) > 0) {
            if (want && (got + (size_t)n > want_len || memcmp(want + got, p, (size_t)n) != 0))
                same = false;
            got += (size_t)n;
        }
        r = n < 0 ? (int)n : kiln_decompress_finish(d, res, &e);
    }
    kiln_decompress_free(d);
    if (r < 0) {
        *msg = kiln_xstrdup(e && e->msg ? e->msg : "(no message)");
        kiln_error_free(e);
        return r;
    }
    if (want && (!same || got != want_len)) {
        *msg = kiln_xasprintf("output differs (%zu bytes, want %zu)", got, want_len);
        return -KILN_EINTERNAL;
    }
    return 0;
}

/* Expect success with output `want`. */
static void expect_ok(const char *what, struct src *s, const struct kiln_decompress_opts *o,
                      const uint8_t *want, size_t want_len)
{
    char *msg = NULL;
    struct kiln_decompress_result res;
    int r = run(s, o, want, want_len, &res, &msg);
    ok(r == 0 && res.uncompressed_size == want_len && res.compressed_size == s->len, "%s: %s", what,
       msg ? msg : "ok");
    free(msg);
}

/* Expect KILN_EINVAL with a message containing needle (and needle2 when not NULL). */
static void expect_fail(const char *what, struct src *s, const struct kiln_decompress_opts *o,
                        const char *needle, const char *needle2)
{
    char *msg = NULL;
    int r = run(s, o, NULL, 0, NULL, &msg);
    ok(r == -KILN_EINVAL && msg && strstr(msg, needle) && (!needle2 || strstr(msg, needle2)),
       "%s: %s", what, msg ? msg : "no error");
    free(msg);
}

static struct src src_of(const struct kiln_buf *b)
{
    return (struct src){.p = (const uint8_t *)b->buf, .len = b->len};
}

/* ---- many members of random sizes --------------------------------------------------------- */

static void test_many_members(void)
{
    static const int strategies[] = {Z_DEFAULT_STRATEGY, Z_FILTERED, Z_HUFFMAN_ONLY, Z_RLE,
                                     Z_FIXED};
    size_t total = (size_t)12 << 20;
    uint8_t *data = make_data(total, true);
    /* a large member first (libdeflate off), then 300 of random sizes, 0 to ~400 KiB */
    struct kiln_buf gz = KILN_BUF_INIT;
    kiln_buf_init(&gz, (size_t)16 << 20);
    size_t pos = 0, members = 0;
    add_member(&gz, data, 3 * BLOCK + 123, 6, Z_DEFAULT_STRATEGY);
    pos = 3 * BLOCK + 123;
    members++;
    while (members < 300 && pos < total) {
        size_t n = rnd() % 8 == 0 ? rnd() % (400 << 10) : rnd() % 5000;
        if (rnd() % 16 == 0)
            n = 0;
        if (n > total - pos)
            n = total - pos;
        add_member(&gz, data + pos, n, (int)(rnd() % 10),
                   strategies[rnd() % KILN_ARRAY_SIZE(strategies)]);
        pos += n;
        members++;
    }
    char hex[KILN_SHA256_HEX_LEN + 1];
    kiln_sha256_hex(data, pos, hex);
    _cleanup_free_ char *want_id = kiln_xasprintf("sha256:%s", hex);

    struct {
        size_t block, chunk;
        bool random, no_thread;
    } v[] = {
        {0, 0, false, false},
        {BLOCK, 0, false, false},
        {BLOCK, 0, false, true},
        {BLOCK, 4096, true, false},
        {BLOCK, 1000, false, true},
        {BLOCK, 77777, true, true},
        {(size_t)2 << 20, 0, false, false},
    };
    for (size_t i = 0; i < KILN_ARRAY_SIZE(v); i++) {
        struct src s = src_of(&gz);
        s.chunk = v[i].chunk;
        s.random = v[i].random;
        s.state = i;
        struct kiln_decompress_opts o = {
            .block_size = v[i].block, .no_thread = v[i].no_thread, .digest_compressed = true};
        char *msg = NULL;
        struct kiln_decompress_result res;
        int r = run(&s, &o, data, pos, &res, &msg);
        ok(r == 0, "%zu members, block %zu, reads of %s%zu%s: %s", members, v[i].block,
           v[i].random ? "1.." : "", v[i].chunk, v[i].no_thread ? ", no thread" : "",
           msg ? msg : "ok");
        if (r == 0) {
            is_str(res.diff_id, want_id, "diff_id");
            is_int(res.compressed_size, gz.len, "compressed size");
        }
        free(msg);
    }

    /* members one byte per read (text only, a short stream: it is slow) */
    size_t tn = 3 * BLOCK;
    uint8_t *text = make_data(tn, false);
    struct kiln_buf small = KILN_BUF_INIT;
    size_t spos = 2 * BLOCK + 5;
    add_member(&small, text, spos, 6, Z_DEFAULT_STRATEGY);
    for (int k = 0; k < 20; k++) {
        size_t n = rnd() % 3000;
        add_member(&small, text + spos, n, 1 + k % 9, strategies[k % 5]);
        spos += n;
    }
    struct src s = src_of(&small);
    s.chunk = 1;
    struct kiln_decompress_opts o = {.block_size = BLOCK};
    _cleanup_free_ char *what =
        kiln_xasprintf("21 members (%zu bytes), one byte per read", small.len);
    expect_ok(what, &s, &o, text, spos);

    /* bytes after the last member are refused, zeros included */
    kiln_buf_add(&small, "\0\0\0\0\0\0\0\0", 8);
    s = src_of(&small);
    expect_fail("zero padding after the last member", &s, &o, "trailing garbage after member 21",
                NULL);

    kiln_buf_release(&small);
    kiln_buf_release(&gz);
    free(text);
    free(data);
}

/* ---- a member ending at a read-buffer boundary -------------------------------------------- */

/*
 * Member A then member B; a read ends at every offset from a little before
 * A's deflate end to a little after its trailer, so the input buffer ends
 * there. Member A's output ends at, or a few bytes after, the end of an
 * output block: the inflater may stop with the end of A decoded but not all
 * of it delivered, the bytes after A's deflate data already in its bit
 * buffer, and finish on the next call after the input buffer was refilled
 * (those bytes then have to be put back in front of the new ones).
 */
static void test_boundaries(void)
{
    static const struct {
        size_t na, nb;
        int level, strategy_a, strategy_b;
    } shapes[] = {
        {2 * BLOCK + 1000, 300, 6, Z_DEFAULT_STRATEGY, Z_DEFAULT_STRATEGY},
        {3 * BLOCK, 300, 6, Z_DEFAULT_STRATEGY, Z_DEFAULT_STRATEGY},
        {3 * BLOCK, 5 * BLOCK, 6, Z_DEFAULT_STRATEGY, Z_FIXED},
        {2 * BLOCK + 1000, 5 * BLOCK, 0, Z_DEFAULT_STRATEGY, Z_DEFAULT_STRATEGY},
        {3 * BLOCK + 1, 300, 6, Z_HUFFMAN_ONLY, Z_DEFAULT_STRATEGY},
        {3 * BLOCK + 2, 300, 6, Z_HUFFMAN_ONLY, Z_DEFAULT_STRATEGY},
        {3 * BLOCK + 3, 300, 6, Z_FIXED, Z_DEFAULT_STRATEGY},
        {3 * BLOCK + 5, 300, 6, Z_HUFFMAN_ONLY, Z_DEFAULT_STRATEGY},
        {3 * BLOCK + 9, 300, 1, Z_DEFAULT_STRATEGY, Z_DEFAULT_STRATEGY},
    };
    static const size_t chunks[] = {0, 0, BLOCK / 2, 8, 5, 3};
    for (size_t i = 0; i < KILN_ARRAY_SIZE(shapes); i++) {
        size_t na = shapes[i].na, nb = shapes[i].nb;
        uint8_t *data = make_data(na + nb, true);
        struct kiln_buf gz = KILN_BUF_INIT;
        add_member(&gz, data, na, shapes[i].level, shapes[i].strategy_a);
        size_t end_a = gz.len; /* after A's trailer */
        add_member(&gz, data + na, nb, 9, shapes[i].strategy_b);
        size_t deflate_end = end_a - 8;
        int bad = 0, runs = 0;
        char *first_bad = NULL;
        for (size_t x = deflate_end - 24; x <= end_a + 24; x++) {
            for (size_t mode = 0; mode < KILN_ARRAY_SIZE(chunks); mode++) {
                struct src s = src_of(&gz);
                s.split = x;
                s.chunk = chunks[mode];
                s.lo = deflate_end - 64;
                s.hi = end_a + 64;
                struct kiln_decompress_opts o = {.block_size = BLOCK, .no_thread = mode != 1};
                char *msg = NULL;
                struct kiln_decompress_result res;
                int r = run(&s, &o, data, na + nb, &res, &msg);
                runs++;
                if (r != 0 && bad++ == 0)
                    first_bad = kiln_xasprintf("split at %zu (deflate end %zu), reads of %zu: %s",
                                               x, deflate_end, chunks[mode], msg);
                free(msg);
            }
        }
        ok(bad == 0, "%zu + %zu bytes: %d splits around the member end: %s", na, nb, runs,
           first_bad ? first_bad : "all ok");
        free(first_bad);

        struct src s = src_of(&gz);
        s.chunk = 1;
        s.lo = deflate_end - 2000;
        s.hi = end_a + 2000;
        struct kiln_decompress_opts o = {.block_size = BLOCK, .no_thread = true};
        expect_ok("one byte per read around the member end", &s, &o, data, na + nb);
        kiln_buf_release(&gz);
        free(data);
    }
}

/*
 * Append a gzip member of in[0, n) whose header has an extra field sized so
 * that the deflate data ends `delta` bytes before a multiple of BLOCK.
 */
static void add_aligned_member(struct kiln_buf *out, const uint8_t *in, size_t n, size_t delta)
{
    z_stream z;
    memset(&z, 0, sizeof(z));
    if (deflateInit2(&z, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        abort();
    size_t cap = deflateBound(&z, n) + 64;
    uint8_t *raw = kiln_xmalloc(cap);
    z.next_in = (Bytef *)in;
    z.avail_in = (uInt)n;
    z.next_out = raw;
    z.avail_out = (uInt)cap;
    if (deflate(&z, Z_FINISH) != Z_STREAM_END)
        abort();
    size_t rawlen = z.total_out;
    deflateEnd(&z);
    size_t xlen = (BLOCK - (out->len + 12 + rawlen + delta) % BLOCK) % BLOCK;
    const uint8_t hdr[] = {
        0x1f, 0x8b, 8, 0x04, 0, 0, 0, 0, 0, 3, (uint8_t)xlen, (uint8_t)(xlen >> 8)};
    kiln_buf_add(out, hdr, sizeof(hdr));
    for (size_t i = 0; i < xlen; i++)
        kiln_buf_addch(out, 'x');
    kiln_buf_add(out, raw, rawlen);
    uint32_t crc = (uint32_t)crc32(0, in, (uInt)n), size = (uint32_t)n;
    const uint8_t tr[] = {(uint8_t)crc,          (uint8_t)(crc >> 8),  (uint8_t)(crc >> 16),
                          (uint8_t)(crc >> 24),  (uint8_t)size,        (uint8_t)(size >> 8),
                          (uint8_t)(size >> 16), (uint8_t)(size >> 24)};
    kiln_buf_add(out, tr, sizeof(tr));
    free(raw);
}

/*
 * Reads of exactly one block into an input buffer of one block: within a
 * member the buffer's ends are at multiples of BLOCK. The extra field puts a
 * member's deflate end at, or a few bytes before, the end of a full buffer.
 */
static void test_aligned_ends(void)
{
    static const size_t deltas[] = {0, 1, 3, 7, 8, 9, 15, 16};
    size_t na = 3 * BLOCK, nb = 2 * BLOCK + 99, nc = 500;
    uint8_t *data = make_data(na + nb + nc, true);
    for (size_t i = 0; i < KILN_ARRAY_SIZE(deltas); i++) {
        struct kiln_buf gz = KILN_BUF_INIT;
        add_aligned_member(&gz, data, na, deltas[i]);
        ok((gz.len - 8 + deltas[i]) % BLOCK == 0, "member 1 deflate end %zu before a boundary",
           deltas[i]);
        add_aligned_member(&gz, data + na, nb, deltas[(i + 3) % KILN_ARRAY_SIZE(deltas)]);
        add_member(&gz, data + na + nb, nc, 6, Z_DEFAULT_STRATEGY);
        for (int nt = 0; nt < 2; nt++) {
            struct src s = src_of(&gz);
            s.chunk = BLOCK;
            struct kiln_decompress_opts o = {.block_size = BLOCK, .no_thread = nt};
            _cleanup_free_ char *what = kiln_xasprintf(
                "deflate end %zu bytes before a buffer end%s", deltas[i], nt ? ", no thread" : "");
            expect_ok(what, &s, &o, data, na + nb + nc);
        }
        kiln_buf_release(&gz);
    }
    free(data);
}

/* ---- corrupt, truncated, bad trailers ----------------------------------------------------- */

/* A member whose deflate data starts with `pre` (ending byte-aligned) then raw bytes `bad`. */
static void add_broken_member(struct kiln_buf *out, const uint8_t *pre, size_t npre,
                              const uint8_t *bad, size_t nbad)
{
    static const uint8_t hdr[] = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3};
    kiln_buf_add(out, hdr, sizeof(hdr));
    z_stream z;
    memset(&z, 0, sizeof(z));
    if (deflateInit2(&z, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        abort();
    size_t cap = deflateBound(&z, npre) + 64;
    if (kiln_buf_grow(out, cap) < 0)
        abort();
    z.next_in = (Bytef *)pre;
    z.avail_in = (uInt)npre;
    z.next_out = (Bytef *)out->buf + out->len;
    z.avail_out = (uInt)cap;
    if (deflate(&z, Z_SYNC_FLUSH) != Z_OK) /* non-final blocks, then byte-aligned */
        abort();
    out->len += z.total_out;
    deflateEnd(&z);
    kiln_buf_add(out, bad, nbad);
    kiln_buf_add(out, "\0\0\0\0\0\0\0\0", 8); /* a trailer, never reached */
}

static void test_errors(void)
{
    size_t n0 = 4 * BLOCK, n1 = 3 * BLOCK + 17, n2 = 2000;
    uint8_t *data = make_data(n0 + n1 + n2, true);
    struct kiln_buf good = KILN_BUF_INIT;
    size_t ends[3];
    add_member(&good, data, n0, 6, Z_DEFAULT_STRATEGY);
    ends[0] = good.len;
    add_member(&good, data + n0, n1, 1, Z_DEFAULT_STRATEGY);
    ends[1] = good.len;
    add_member(&good, data + n0 + n1, n2, 6, Z_DEFAULT_STRATEGY);
    ends[2] = good.len;
    struct kiln_decompress_opts o = {.block_size = BLOCK};
    struct kiln_decompress_opts o_nt = {.block_size = BLOCK, .no_thread = true};
    struct src s = src_of(&good);
    expect_ok("three members", &s, &o, data, n0 + n1 + n2);

    /* corrupt deflate data: an invalid block type, a bad stored block, a distance too far */
    static const uint8_t btype3[] = {0x07};                         /* BFINAL, BTYPE 11 */
    static const uint8_t stored[] = {0x01, 0x05, 0x00, 0x00, 0x00}; /* LEN 5, NLEN not ~LEN */
    static const uint8_t far[] = {0x4b, 0x04, 0x42, 0x00}; /* fixed: "a", match at distance 2 */
    struct {
        const char *what;
        const uint8_t *bad;
        size_t nbad;
        size_t npre;
    } cases[] = {
        {"invalid block type", btype3, sizeof(btype3), 0},
        {"invalid block type after 300 KiB", btype3, sizeof(btype3), 300000},
        {"stored block length check", stored, sizeof(stored), 100000},
        {"distance too far back", far, sizeof(far), 0},
    };
    for (size_t i = 0; i < KILN_ARRAY_SIZE(cases); i++) {
        struct kiln_buf b = KILN_BUF_INIT;
        kiln_buf_add(&b, good.buf, ends[0]);
        add_broken_member(&b, data, cases[i].npre, cases[i].bad, cases[i].nbad);
        s = src_of(&b);
        _cleanup_free_ char *what = kiln_xasprintf("corrupt deflate data (%s)", cases[i].what);
        expect_fail(what, &s, &o, "gzip: corrupt deflate data at offset", NULL);
        s = src_of(&b);
        s.chunk = 1000;
        expect_fail(what, &s, &o_nt, "gzip: corrupt deflate data at offset", NULL);
        kiln_buf_release(&b);
    }

    /* random damage: always an error (never a crash, never wrong output) */
    int caught = 0, trials = 150;
    struct kiln_buf b = KILN_BUF_INIT;
    for (int t = 0; t < trials; t++) {
        kiln_buf_reset(&b);
        kiln_buf_add(&b, good.buf, good.len);
        size_t at = 20 + rnd() % (good.len - 40);
        for (int k = 0; k < 1 + t % 4; k++)
            b.buf[at + (size_t)k] ^= (char)(1 + rnd() % 255);
        s = src_of(&b);
        s.chunk = t % 2 ? 5000 : 0;
        char *msg = NULL;
        int r = run(&s, t % 3 ? &o : &o_nt, data, n0 + n1 + n2, NULL, &msg);
        if (r == -KILN_EINVAL && msg && strncmp(msg, "gzip: ", 6) == 0)
            caught++;
        else
            printf("# damage at %zu: %d %s\n", at, r, msg ? msg : "");
        free(msg);
    }
    ok(caught == trials, "random damage caught %d of %d", caught, trials);
    kiln_buf_release(&b);

    /* truncated: inside each member's deflate data, the member named */
    for (int m = 0; m < 3; m++) {
        size_t start = m ? ends[m - 1] : 0;
        size_t cuts[] = {start + 30, start + (ends[m] - start) / 2, ends[m] - 9};
        for (size_t c = 0; c < KILN_ARRAY_SIZE(cuts); c++) {
            for (int chunk = 0; chunk < 2; chunk++) {
                s = src_of(&good);
                s.len = cuts[c];
                s.chunk = chunk ? 3 : 0;
                s.lo = cuts[c] > 3000 ? cuts[c] - 3000 : 0;
                s.hi = cuts[c];
                _cleanup_free_ char *what = kiln_xasprintf("truncated in member %d at %zu%s", m + 1,
                                                           cuts[c], chunk ? ", reads of 3" : "");
                _cleanup_free_ char *name = kiln_xasprintf("of member %d ends early", m + 1);
                expect_fail(what, &s, chunk ? &o_nt : &o, "gzip: truncated stream at offset", name);
            }
        }
        /* right after the deflate data, and inside the trailer */
        for (size_t cut = ends[m] - 8; cut < ends[m]; cut += 5) {
            s = src_of(&good);
            s.len = cut;
            _cleanup_free_ char *what = kiln_xasprintf("truncated trailer of member %d", m + 1);
            expect_fail(what, &s, &o, "gzip: truncated member trailer", NULL);
        }
    }
    s = src_of(&good);
    s.len = ends[1] + 6;
    expect_fail("truncated header of member 3", &s, &o, "gzip: truncated member header", NULL);

    /* trailer: CRC and size of member 2 */
    kiln_buf_reset(&b);
    kiln_buf_add(&b, good.buf, good.len);
    b.buf[ends[1] - 8] ^= 0x01;
    s = src_of(&b);
    expect_fail("crc mismatch", &s, &o, "gzip: crc mismatch in member 2", NULL);
    s = src_of(&b);
    s.chunk = 1;
    s.lo = ends[1] - 3000;
    s.hi = ends[1];
    expect_fail("crc mismatch, one byte per read", &s, &o_nt, "gzip: crc mismatch in member 2",
                NULL);
    kiln_buf_reset(&b);
    kiln_buf_add(&b, good.buf, good.len);
    b.buf[ends[1] - 1] ^= 0x40;
    s = src_of(&b);
    expect_fail("size mismatch", &s, &o, "gzip: size mismatch in member 2", NULL);
    /* the first member (libdeflate would take a small one): its crc is checked too */
    kiln_buf_reset(&b);
    kiln_buf_add(&b, good.buf, good.len);
    b.buf[ends[0] - 5] ^= 0x10;
    s = src_of(&b);
    expect_fail("crc mismatch in member 1", &s, &o, "gzip: crc mismatch in member 1", NULL);

    kiln_buf_release(&b);
    kiln_buf_release(&good);
    free(data);
}

int main(void)
{
    test_many_members();
    test_boundaries();
    test_aligned_ends();
    test_errors();
    return tap_done();
}
