#include "util/common.h"
#include "layer/compress.h"

#include <endian.h>
#include <pthread.h>
#include <sched.h>
#include <unistd.h>

#include <libdeflate.h>
#include <zstd.h>

#include "oci/mediatype.h"
#include "util/sha256.h"

#define MT_DOCKER_LAYER_TAR "application/vnd.docker.image.rootfs.diff.tar"

/* zstd / none: small writes (tar headers) are gathered into this much input */
#define STAGE_SIZE ((size_t)256 << 10)
/* room after libdeflate's output: the sync marker and the scanner's padding */
#define OUT_SLACK           32
#define THREADS_DEFAULT_MAX 16
/*
 * zstd input per worker job. libzstd's default at level 3 is 8 MiB, which
 * with 2 workers costs ~115 MiB; 2 MiB costs ~35 MiB and 0.5% of ratio.
 */
#define ZSTD_JOB_SIZE (2 << 20)

/* ---- deflate block scanner ---------------------------------------------------
 *
 * libdeflate only makes complete deflate streams, whose last block has
 * BFINAL set. To chain blocks into one stream the scanner walks a stream
 * (decoding Huffman symbols without producing output) to find the bit
 * position of the last block's header and the bit where the stream ends.
 */

struct bits {
    const uint8_t *start, *p, *end; /* end: past the zero padding */
    uint64_t buf;
    unsigned cnt;
    bool overrun;
};

/*
 * Afterwards at least 56 bits are buffered. The data is followed by 16 zero
 * bytes; reading needs 8 of them, so running into the last 8 means more than
 * all the data was consumed (the bits before p hold at most 63 bits).
 */
static inline void bits_refill(struct bits *b)
{
    if (b->end - b->p >= 8) {
        uint64_t v;
        memcpy(&v, b->p, 8);
        b->buf |= le64toh(v) << b->cnt;
        b->p += (63 - b->cnt) >> 3;
        b->cnt |= 56;
    } else {
        b->overrun = true;
    }
}

static inline uint32_t bits_get(struct bits *b, unsigned n)
{
    uint32_t v = (uint32_t)(b->buf & ((UINT64_C(1) << n) - 1));
    b->buf >>= n;
    b->cnt -= n;
    return v;
}

static inline size_t bits_pos(const struct bits *b)
{
    return (size_t)(b->p - b->start) * 8 - b->cnt;
}

/*
 * A Huffman decoder: a lookup table for codes of up to `bits` bits, and
 * canonical decoding (after zlib's puff) for the rare longer ones.
 */
struct huff {
    uint16_t *table; /* (symbol << 4) | code length; 0: longer code or none */
    unsigned bits;
    uint16_t count[16];   /* codes per length */
    uint16_t sorted[288]; /* symbols by code */
};

/* 10 bits: a 2 KiB table, the fastest measured (9..13) */
#define HUFF_TABLE_BITS 10

static int huff_build(struct huff *h, const uint8_t *lens, unsigned nsyms)
{
    unsigned next[16], offs[16], maxlen = 0;
    memset(h->count, 0, sizeof(h->count));
    for (unsigned i = 0; i < nsyms; i++) {
        h->count[lens[i]]++;
        if (lens[i] > maxlen)
            maxlen = lens[i];
    }
    h->count[0] = 0;
    int left = 1;
    for (unsigned l = 1; l <= 15; l++) {
        left = 2 * left - (int)h->count[l];
        if (left < 0)
            return -1; /* over-subscribed */
    }
    unsigned code = 0;
    offs[1] = 0;
    for (unsigned l = 1; l <= 15; l++) {
        code = (code + h->count[l - 1]) << 1;
        next[l] = code;
        if (l < 15)
            offs[l + 1] = offs[l] + h->count[l];
    }
    h->bits = maxlen < HUFF_TABLE_BITS ? (maxlen ? maxlen : 1) : HUFF_TABLE_BITS;
    size_t size = (size_t)1 << h->bits;
    memset(h->table, 0, size * sizeof(*h->table));
    for (unsigned sym = 0; sym < nsyms; sym++) {
        unsigned len = lens[sym];
        if (!len)
            continue;
        h->sorted[offs[len]++] = (uint16_t)sym;
        unsigned c = next[len]++, rev = 0;
        if (len > h->bits)
            continue;
        for (unsigned i = 0; i < len; i++, c >>= 1)
            rev = (rev << 1) | (c & 1);
        for (size_t i = rev; i < size; i += (size_t)1 << len)
            h->table[i] = (uint16_t)((sym << 4) | len);
    }
    return 0;
}

static int huff_decode_slow(const struct huff *h, struct bits *b)
{
    uint64_t buf = b->buf;
    int code = 0, first = 0, index = 0;
    for (unsigned len = 1; len <= 15; len++) {
        code |= (int)(buf & 1);
        buf >>= 1;
        int count = h->count[len];
        if (code - first < count) {
            bits_get(b, len);
            return h->sorted[index + code - first];
        }
        index += count;
        first = (first + count) << 1;
        code <<= 1;
    }
    return -1;
}

/* Decode one symbol; -1 on a bit pattern that is no code. Needs >= 15 bits buffered. */
static inline int huff_decode(const struct huff *h, struct bits *b)
{
    uint16_t e = h->table[b->buf & ((UINT64_C(1) << h->bits) - 1)];
    if (!e)
        return huff_decode_slow(h, b);
    bits_get(b, e & 15);
    return e >> 4;
}

struct scanner {
    uint16_t litlen_table[1u << HUFF_TABLE_BITS];
    uint16_t dist_table[1u << HUFF_TABLE_BITS];
    uint16_t codelen_table[1u << HUFF_TABLE_BITS];
    struct huff lit, dist, cl;
};

static const uint8_t len_extra[29] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2,
                                      2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0};
static const uint8_t dist_extra[30] = {0, 0, 0, 0, 1, 1, 2, 2,  3,  3,  4,  4,  5,  5,  6,
                                       6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13};

static int scan_dynamic_header(struct scanner *s, struct bits *b, struct huff *lit,
                               struct huff *dist)
{
    static const uint8_t order[19] = {16, 17, 18, 0, 8,  7, 9,  6, 10, 5,
                                      11, 4,  12, 3, 13, 2, 14, 1, 15};
    uint8_t lens[286 + 32] = {0}, clens[19] = {0};

    bits_refill(b);
    unsigned hlit = bits_get(b, 5) + 257, hdist = bits_get(b, 5) + 1, hclen = bits_get(b, 4) + 4;
    if (hlit > 286 || hdist > 32)
        return -1;
    for (unsigned i = 0; i < hclen; i++) {
        bits_refill(b);
        clens[order[i]] = (uint8_t)bits_get(b, 3);
    }
    struct huff *cl = &s->cl;
    cl->table = s->codelen_table;
    if (huff_build(cl, clens, 19) < 0)
        return -1;
    for (unsigned i = 0; i < hlit + hdist;) {
        bits_refill(b);
        if (b->overrun)
            return -1;
        int sym = huff_decode(cl, b);
        unsigned rep;
        uint8_t val = 0;
        if (sym < 0)
            return -1;
        if (sym < 16) {
            lens[i++] = (uint8_t)sym;
            continue;
        }
        if (sym == 16) {
            if (i == 0)
                return -1;
            val = lens[i - 1];
            rep = 3 + bits_get(b, 2);
        } else if (sym == 17) {
            rep = 3 + bits_get(b, 3);
        } else {
            rep = 11 + bits_get(b, 7);
        }
        if (i + rep > hlit + hdist)
            return -1;
        memset(lens + i, val, rep);
        i += rep;
    }
    if (!lens[256])
        return -1;
    if (huff_build(lit, lens, hlit) < 0 || huff_build(dist, lens + hlit, hdist) < 0)
        return -1;
    return 0;
}

static void fixed_tables(struct huff *lit, struct huff *dist)
{
    uint8_t lens[288];
    memset(lens, 8, 144);
    memset(lens + 144, 9, 112);
    memset(lens + 256, 7, 24);
    memset(lens + 280, 8, 8);
    huff_build(lit, lens, 288);
    memset(lens, 5, 32);
    huff_build(dist, lens, 32);
}

/*
 * Walk the complete deflate stream data[0..n), which must be followed by 16
 * readable zero bytes. Sets the bit offsets of the final block's header and
 * of the end of the stream. -1 when the data is not exactly one stream.
 */
static int deflate_scan(struct scanner *s, const uint8_t *data, size_t n, size_t *ret_last_hdr,
                        size_t *ret_end)
{
    struct bits b = {data, data, data + n + 16, 0, 0, false};
    struct huff *lit = &s->lit, *dist = &s->dist;
    lit->table = s->litlen_table;
    dist->table = s->dist_table;

    for (;;) {
        bits_refill(&b);
        if (b.overrun)
            return -1;
        size_t hdr = bits_pos(&b);
        unsigned final = bits_get(&b, 1), type = bits_get(&b, 2);
        if (type == 0) {
            bits_get(&b, b.cnt & 7);
            uint32_t len = bits_get(&b, 16), nlen = bits_get(&b, 16);
            if ((len ^ 0xffff) != nlen)
                return -1;
            size_t pos = bits_pos(&b) / 8 + len;
            if (pos > n)
                return -1;
            b.p = data + pos;
            b.buf = 0;
            b.cnt = 0;
        } else if (type == 3) {
            return -1;
        } else {
            if (type == 1)
                fixed_tables(lit, dist);
            else if (scan_dynamic_header(s, &b, lit, dist) < 0)
                return -1;
            for (;;) {
                bits_refill(&b);
                if (b.overrun)
                    return -1;
                int sym = huff_decode(lit, &b);
                if (sym < 256) {
                    if (sym < 0)
                        return -1;
                    continue;
                }
                if (sym == 256)
                    break;
                if (sym > 285)
                    return -1;
                bits_get(&b, len_extra[sym - 257]);
                int d = huff_decode(dist, &b);
                if (d < 0 || d > 29)
                    return -1;
                bits_get(&b, dist_extra[d]);
            }
        }
        if (final) {
            size_t end = bits_pos(&b);
            if ((end + 7) / 8 != n)
                return -1;
            *ret_last_hdr = hdr;
            *ret_end = end;
            return 0;
        }
    }
}

/* ---- the compressor ------------------------------------------------------------ */

enum slot_state { SLOT_FREE, SLOT_QUEUED, SLOT_BUSY, SLOT_DONE };

struct slot {
    uint8_t *in;
    size_t in_len;
    uint8_t *out;
    size_t out_len;
    bool last;
    enum slot_state state; /* changed under the mutex */
};

struct worker {
    struct kiln_compressor *c;
    pthread_t thread;
    bool started;
    struct libdeflate_compressor *ld;
    struct scanner *scan;
};

struct kiln_compressor {
    enum kiln_compression algo;
    int level;
    int nthreads;
    size_t block_size;
    kiln_compress_write_fn fn;
    void *userdata;
    int fd;

    struct kiln_sha256 h_in, h_out;
    uint64_t n_in, n_out;
    int failed; /* sticky enum kiln_code */
    char *failed_msg;
    bool finished;

    /* gzip */
    pthread_mutex_t mu;
    pthread_cond_t cv_work, cv_done;
    bool sync_ready;
    struct slot *slots;
    size_t nslots, out_cap;
    size_t fill;      /* the slot the caller fills */
    size_t next_work; /* the next slot a worker takes */
    size_t next_out;  /* the oldest slot not written out */
    size_t inflight;  /* submitted, not written out */
    struct worker *workers;
    bool stop;
    int werr; /* first worker error, enum kiln_code */
    char *werr_msg;
    uint32_t crc;
    bool header_done;

    /* zstd */
    ZSTD_CCtx *zc;
    uint8_t *zout;
    size_t zout_cap;

    /* zstd, none */
    uint8_t *stage;
    size_t stage_len;
};

static int fd_write(void *userdata, const void *data, size_t len, struct kiln_error **err)
{
    int fd = *(int *)userdata;
    const uint8_t *p = data;
    while (len) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return kiln_error_set(err, KILN_EIO, errno, "write compressed output");
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int emit(struct kiln_compressor *c, const void *data, size_t len, struct kiln_error **err)
{
    if (!len)
        return 0;
    if (c->algo != KILN_COMPRESSION_NONE) /* else the input digest is the one */
        kiln_sha256_update(&c->h_out, data, len);
    c->n_out += len;
    return c->fn(c->userdata, data, len, err);
}

/* Record a failure (taking `e`) and report it; later calls report it again. */
static int fail(struct kiln_compressor *c, struct kiln_error *e, struct kiln_error **err)
{
    if (!c->failed) {
        c->failed = e ? e->code : KILN_EINTERNAL;
        c->failed_msg = kiln_xstrdup(e && e->msg ? e->msg : "compression failed");
    }
    kiln_error_free(e);
    return kiln_error_set(err, c->failed, 0, "%s", c->failed_msg);
}

static int default_threads(void)
{
    cpu_set_t set;
    int n = 0;
    if (sched_getaffinity(0, sizeof(set), &set) == 0)
        n = CPU_COUNT(&set);
    if (n <= 0) {
        long m = sysconf(_SC_NPROCESSORS_ONLN);
        n = m > 0 ? (int)m : 1;
    }
    return n > THREADS_DEFAULT_MAX ? THREADS_DEFAULT_MAX : n;
}

/* ---- gzip ---- */

/* Compress one slot; on failure returns -code and sets *msg. Runs on a worker. */
static int deflate_slot(struct worker *w, struct slot *s, size_t out_cap, char **msg)
{
    size_t n = libdeflate_deflate_compress(w->ld, s->in, s->in_len, s->out, out_cap - OUT_SLACK);
    if (!n) {
        *msg = kiln_xstrdup("gzip: deflate output larger than its bound");
        return -KILN_EINTERNAL;
    }
    if (s->last) {
        s->out_len = n;
        return 0;
    }
    size_t hdr, end;
    memset(s->out + n, 0, 16);
    if (deflate_scan(w->scan, s->out, n, &hdr, &end) < 0) {
        *msg = kiln_xstrdup("gzip: cannot find the final deflate block");
        return -KILN_EINTERNAL;
    }
    /* not the final block any more */
    s->out[hdr / 8] &= (uint8_t) ~(1u << (hdr % 8));
    /* then an empty stored block: 3 zero header bits, padding, LEN 0, NLEN 0xffff */
    if (end % 8)
        s->out[end / 8] &= (uint8_t)((1u << (end % 8)) - 1);
    size_t pos = (end + 3 + 7) / 8;
    for (size_t i = n; i < pos; i++)
        s->out[i] = 0;
    memcpy(s->out + pos, "\x00\x00\xff\xff", 4);
    s->out_len = pos + 4;
    return 0;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct kiln_compressor *c = w->c;

    pthread_mutex_lock(&c->mu);
    for (;;) {
        while (!c->stop && c->slots[c->next_work].state != SLOT_QUEUED)
            pthread_cond_wait(&c->cv_work, &c->mu);
        if (c->stop)
            break;
        struct slot *s = &c->slots[c->next_work];
        c->next_work = (c->next_work + 1) % c->nslots;
        s->state = SLOT_BUSY;
        pthread_mutex_unlock(&c->mu);

        char *msg = NULL;
        int r = deflate_slot(w, s, c->out_cap, &msg);

        pthread_mutex_lock(&c->mu);
        if (r < 0 && !c->werr) {
            c->werr = -r;
            c->werr_msg = TAKE_PTR(msg);
        }
        free(msg);
        s->state = SLOT_DONE;
        pthread_cond_broadcast(&c->cv_done);
    }
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

static int gz_init(struct kiln_compressor *c, struct kiln_error **err)
{
    if (pthread_mutex_init(&c->mu, NULL) != 0)
        return kiln_error_set(err, KILN_EIO, 0, "gzip: init mutex");
    pthread_cond_init(&c->cv_work, NULL);
    pthread_cond_init(&c->cv_done, NULL);
    c->sync_ready = true;

    c->workers = kiln_xcalloc((size_t)c->nthreads, sizeof(*c->workers));
    for (int i = 0; i < c->nthreads; i++) {
        struct worker *w = &c->workers[i];
        w->c = c;
        w->ld = libdeflate_alloc_compressor(c->level);
        if (!w->ld)
            return kiln_error_set(err, KILN_EINTERNAL, 0, "gzip: libdeflate compressor level %d",
                                  c->level);
        w->scan = kiln_xmalloc(sizeof(*w->scan));
    }
    c->out_cap = libdeflate_deflate_compress_bound(c->workers[0].ld, c->block_size) + OUT_SLACK;
    c->nslots = 2 * (size_t)c->nthreads + 2;
    c->slots = kiln_xcalloc(c->nslots, sizeof(*c->slots));
    for (size_t i = 0; i < c->nslots; i++) {
        c->slots[i].in = kiln_xmalloc(c->block_size);
        c->slots[i].out = kiln_xmalloc(c->out_cap);
    }
    for (int i = 0; i < c->nthreads; i++) {
        int r = pthread_create(&c->workers[i].thread, NULL, worker_main, &c->workers[i]);
        if (r != 0)
            return kiln_error_set(err, KILN_EIO, r, "gzip: start worker thread");
        c->workers[i].started = true;
    }
    c->crc = 0;
    return 0;
}

/*
 * Write out finished slots in order; while more than `keep_max` slots are
 * in flight, wait for the oldest one.
 */
static int gz_drain(struct kiln_compressor *c, size_t keep_max, struct kiln_error **err)
{
    while (c->inflight) {
        struct slot *s = &c->slots[c->next_out];
        pthread_mutex_lock(&c->mu);
        if (c->inflight > keep_max)
            while (s->state != SLOT_DONE)
                pthread_cond_wait(&c->cv_done, &c->mu);
        bool done = s->state == SLOT_DONE;
        int werr = c->werr;
        char *wmsg = werr ? kiln_xstrdup(c->werr_msg ? c->werr_msg : "gzip worker failed") : NULL;
        pthread_mutex_unlock(&c->mu);
        if (werr) {
            int r = kiln_error_set(err, werr, 0, "%s", wmsg);
            free(wmsg);
            return r;
        }
        if (!done)
            return 0;
        if (!c->header_done) {
            /* magic, deflate, no flags, mtime 0, no extra flags, OS unknown */
            static const uint8_t header[10] = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff};
            int r = emit(c, header, sizeof(header), err);
            if (r < 0)
                return r;
            c->header_done = true;
        }
        int r = emit(c, s->out, s->out_len, err);
        if (r < 0)
            return r;
        pthread_mutex_lock(&c->mu);
        s->state = SLOT_FREE;
        s->in_len = 0;
        s->out_len = 0;
        pthread_mutex_unlock(&c->mu);
        c->next_out = (c->next_out + 1) % c->nslots;
        c->inflight--;
    }
    return 0;
}

static int gz_submit(struct kiln_compressor *c, bool last, struct kiln_error **err)
{
    struct slot *s = &c->slots[c->fill];
    kiln_sha256_update(&c->h_in, s->in, s->in_len);
    c->crc = libdeflate_crc32(c->crc, s->in, s->in_len);
    c->n_in += s->in_len;
    s->last = last;
    pthread_mutex_lock(&c->mu);
    s->state = SLOT_QUEUED;
    pthread_cond_signal(&c->cv_work);
    pthread_mutex_unlock(&c->mu);
    c->fill = (c->fill + 1) % c->nslots;
    c->inflight++;
    /* the next slot to fill must be free */
    return gz_drain(c, c->nslots - 1, err);
}

static int gz_write(struct kiln_compressor *c, const uint8_t *data, size_t len,
                    struct kiln_error **err)
{
    while (len) {
        struct slot *s = &c->slots[c->fill];
        size_t n = c->block_size - s->in_len;
        if (n > len)
            n = len;
        memcpy(s->in + s->in_len, data, n);
        s->in_len += n;
        data += n;
        len -= n;
        if (s->in_len == c->block_size) {
            int r = gz_submit(c, false, err);
            if (r < 0)
                return r;
        }
    }
    return 0;
}

static int gz_finish(struct kiln_compressor *c, struct kiln_error **err)
{
    int r = gz_submit(c, true, err);
    if (r < 0)
        return r;
    r = gz_drain(c, 0, err);
    if (r < 0)
        return r;
    uint8_t trailer[8];
    uint32_t isize = (uint32_t)c->n_in;
    for (int i = 0; i < 4; i++) {
        trailer[i] = (uint8_t)(c->crc >> (8 * i));
        trailer[4 + i] = (uint8_t)(isize >> (8 * i));
    }
    return emit(c, trailer, sizeof(trailer), err);
}

static void gz_free(struct kiln_compressor *c)
{
    if (c->sync_ready) {
        pthread_mutex_lock(&c->mu);
        c->stop = true;
        pthread_cond_broadcast(&c->cv_work);
        pthread_mutex_unlock(&c->mu);
    }
    for (int i = 0; c->workers && i < c->nthreads; i++) {
        struct worker *w = &c->workers[i];
        if (w->started)
            pthread_join(w->thread, NULL);
        if (w->ld)
            libdeflate_free_compressor(w->ld);
        free(w->scan);
    }
    free(c->workers);
    for (size_t i = 0; c->slots && i < c->nslots; i++) {
        free(c->slots[i].in);
        free(c->slots[i].out);
    }
    free(c->slots);
    free(c->werr_msg);
    if (c->sync_ready) {
        pthread_cond_destroy(&c->cv_work);
        pthread_cond_destroy(&c->cv_done);
        pthread_mutex_destroy(&c->mu);
    }
}

/* ---- zstd and none ---- */

static int zstd_init(struct kiln_compressor *c, struct kiln_error **err)
{
    c->zc = ZSTD_createCCtx();
    if (!c->zc)
        return kiln_error_set(err, KILN_EINTERNAL, 0, "zstd: create context");
    size_t r = ZSTD_CCtx_setParameter(c->zc, ZSTD_c_compressionLevel, c->level);
    if (!ZSTD_isError(r))
        r = ZSTD_CCtx_setParameter(c->zc, ZSTD_c_checksumFlag, 1);
    if (ZSTD_isError(r))
        return kiln_error_set(err, KILN_EINTERNAL, 0, "zstd: %s", ZSTD_getErrorName(r));
    r = ZSTD_CCtx_setParameter(c->zc, ZSTD_c_nbWorkers, c->nthreads);
    if (ZSTD_isError(r))
        return kiln_error_set(err, KILN_EUNSUPPORTED, 0,
                              "zstd: this libzstd has no multithreading: %s", ZSTD_getErrorName(r));
    r = ZSTD_CCtx_setParameter(c->zc, ZSTD_c_jobSize, ZSTD_JOB_SIZE);
    if (ZSTD_isError(r))
        return kiln_error_set(err, KILN_EINTERNAL, 0, "zstd: %s", ZSTD_getErrorName(r));
    c->zout_cap = ZSTD_CStreamOutSize();
    c->zout = kiln_xmalloc(c->zout_cap);
    return 0;
}

/* Pass input to zstd or straight out (none); the input digest is taken here. */
static int feed(struct kiln_compressor *c, const void *data, size_t len, bool end,
                struct kiln_error **err)
{
    kiln_sha256_update(&c->h_in, data, len);
    c->n_in += len;
    if (c->algo == KILN_COMPRESSION_NONE)
        return emit(c, data, len, err);

    ZSTD_inBuffer in = {data, len, 0};
    for (;;) {
        ZSTD_outBuffer out = {c->zout, c->zout_cap, 0};
        size_t rem = ZSTD_compressStream2(c->zc, &out, &in, end ? ZSTD_e_end : ZSTD_e_continue);
        if (ZSTD_isError(rem))
            return kiln_error_set(err, KILN_EINTERNAL, 0, "zstd: %s", ZSTD_getErrorName(rem));
        int r = emit(c, c->zout, out.pos, err);
        if (r < 0)
            return r;
        if (end ? rem == 0 : in.pos == in.size)
            return 0;
    }
}

static int staged_write(struct kiln_compressor *c, const uint8_t *data, size_t len,
                        struct kiln_error **err)
{
    if (c->stage_len + len <= STAGE_SIZE) {
        memcpy(c->stage + c->stage_len, data, len);
        c->stage_len += len;
        return 0;
    }
    if (c->stage_len) {
        /* top the stage up so that zstd always sees whole STAGE_SIZE pieces */
        size_t n = STAGE_SIZE - c->stage_len;
        memcpy(c->stage + c->stage_len, data, n);
        data += n;
        len -= n;
        c->stage_len = 0;
        int r = feed(c, c->stage, STAGE_SIZE, false, err);
        if (r < 0)
            return r;
    }
    while (len >= STAGE_SIZE) {
        int r = feed(c, data, STAGE_SIZE, false, err);
        if (r < 0)
            return r;
        data += STAGE_SIZE;
        len -= STAGE_SIZE;
    }
    memcpy(c->stage, data, len);
    c->stage_len = len;
    return 0;
}

/* ---- public ---- */

int kiln_compress_new(const struct kiln_compress_options *o, kiln_compress_write_fn fn,
                      void *userdata, struct kiln_compressor **ret, struct kiln_error **err)
{
    static const struct kiln_compress_options defaults = KILN_COMPRESS_OPTIONS_INIT;
    if (!o)
        o = &defaults;
    if (!fn)
        return kiln_error_set(err, KILN_EINVAL, 0, "compress: no output");

    int level = o->level;
    switch (o->algo) {
    case KILN_COMPRESSION_GZIP:
        if (!level)
            level = KILN_COMPRESS_GZIP_LEVEL_DEFAULT;
        if (level < 1 || level > 12)
            return kiln_error_set(err, KILN_EINVAL, 0, "invalid gzip level '%d': use 1 to 12",
                                  o->level);
        break;
    case KILN_COMPRESSION_ZSTD:
        if (!level)
            level = KILN_COMPRESS_ZSTD_LEVEL_DEFAULT;
        if (level < 1 || level > 19)
            return kiln_error_set(err, KILN_EINVAL, 0, "invalid zstd level '%d': use 1 to 19",
                                  o->level);
        break;
    case KILN_COMPRESSION_NONE:
        break;
    default:
        return kiln_error_set(err, KILN_EINVAL, 0, "invalid compression '%d'", (int)o->algo);
    }
    if (o->threads < 0 || o->threads > KILN_COMPRESS_THREADS_MAX)
        return kiln_error_set(err, KILN_EINVAL, 0, "invalid thread count '%d': use 0 to %d",
                              o->threads, KILN_COMPRESS_THREADS_MAX);
    size_t block = o->block_size ? o->block_size : KILN_COMPRESS_BLOCK_DEFAULT;
    if (block < KILN_COMPRESS_BLOCK_MIN || block > KILN_COMPRESS_BLOCK_MAX)
        return kiln_error_set(err, KILN_EINVAL, 0, "invalid block size '%zu': use %zu to %zu bytes",
                              o->block_size, KILN_COMPRESS_BLOCK_MIN, KILN_COMPRESS_BLOCK_MAX);

    struct kiln_compressor *c = kiln_xcalloc(1, sizeof(*c));
    c->algo = o->algo;
    c->level = level;
    c->nthreads = o->threads ? o->threads : default_threads();
    c->block_size = block;
    c->fn = fn;
    c->userdata = userdata;
    c->fd = -1;
    kiln_sha256_init(&c->h_in);
    kiln_sha256_init(&c->h_out);

    int r = 0;
    if (c->algo == KILN_COMPRESSION_GZIP) {
        r = gz_init(c, err);
    } else {
        c->stage = kiln_xmalloc(STAGE_SIZE);
        if (c->algo == KILN_COMPRESSION_ZSTD)
            r = zstd_init(c, err);
    }
    if (r < 0) {
        kiln_compress_free(c);
        return r;
    }
    *ret = c;
    return 0;
}

int kiln_compress_new_fd(const struct kiln_compress_options *o, int fd,
                         struct kiln_compressor **ret, struct kiln_error **err)
{
    struct kiln_compressor *c = NULL;
    if (fd < 0)
        return kiln_error_set(err, KILN_EINVAL, 0, "compress: invalid fd '%d'", fd);
    /* the callback's userdata must outlive this call: point it into the compressor */
    int r = kiln_compress_new(o, fd_write, NULL, &c, err);
    if (r < 0)
        return r;
    c->fd = fd;
    c->userdata = &c->fd;
    *ret = c;
    return 0;
}

int kiln_compress_write(struct kiln_compressor *c, const void *data, size_t len,
                        struct kiln_error **err)
{
    if (c->failed)
        return kiln_error_set(err, c->failed, 0, "%s", c->failed_msg);
    if (c->finished)
        return kiln_error_set(err, KILN_EINTERNAL, 0, "compress: write after finish");
    if (!len)
        return 0;
    struct kiln_error *e = NULL;
    int r = c->algo == KILN_COMPRESSION_GZIP ? gz_write(c, data, len, &e)
                                             : staged_write(c, data, len, &e);
    if (r < 0)
        return fail(c, e, err);
    return 0;
}

int kiln_compress_finish(struct kiln_compressor *c, struct kiln_compress_result *ret,
                         struct kiln_error **err)
{
    if (c->failed)
        return kiln_error_set(err, c->failed, 0, "%s", c->failed_msg);
    if (c->finished)
        return kiln_error_set(err, KILN_EINTERNAL, 0, "compress: finished twice");
    c->finished = true;

    struct kiln_error *e = NULL;
    int r;
    if (c->algo == KILN_COMPRESSION_GZIP) {
        r = gz_finish(c, &e);
    } else {
        r = feed(c, c->stage, c->stage_len, c->algo == KILN_COMPRESSION_ZSTD, &e);
        c->stage_len = 0;
    }
    if (r < 0)
        return fail(c, e, err);

    struct kiln_compress_result res = {0};
    kiln_digest_from_sha256(&c->h_in, res.diff_id);
    if (c->algo == KILN_COMPRESSION_NONE)
        memcpy(res.digest, res.diff_id, sizeof(res.digest));
    else
        kiln_digest_from_sha256(&c->h_out, res.digest);
    res.size = c->n_out;
    res.uncompressed_size = c->n_in;
    res.media_type = kiln_compression_media_type(c->algo, false);
    *ret = res;
    return 0;
}

void kiln_compress_free(struct kiln_compressor *c)
{
    if (!c)
        return;
    if (c->algo == KILN_COMPRESSION_GZIP)
        gz_free(c);
    ZSTD_freeCCtx(c->zc);
    free(c->zout);
    free(c->stage);
    free(c->failed_msg);
    kiln_sha256_release(&c->h_in);
    kiln_sha256_release(&c->h_out);
    free(c);
}

const char *kiln_compression_name(enum kiln_compression a)
{
    switch (a) {
    case KILN_COMPRESSION_GZIP:
        return "gzip";
    case KILN_COMPRESSION_ZSTD:
        return "zstd";
    case KILN_COMPRESSION_NONE:
        return "none";
    default:
        return "unknown";
    }
}

int kiln_compression_parse(const char *s, enum kiln_compression *ret, struct kiln_error **err)
{
    static const struct {
        const char *name;
        enum kiln_compression a;
    } names[] = {
        {"gzip", KILN_COMPRESSION_GZIP}, {"gz", KILN_COMPRESSION_GZIP},
        {"zstd", KILN_COMPRESSION_ZSTD}, {"zst", KILN_COMPRESSION_ZSTD},
        {"none", KILN_COMPRESSION_NONE}, {"uncompressed", KILN_COMPRESSION_NONE},
    };
    for (size_t i = 0; s && i < KILN_ARRAY_SIZE(names); i++)
        if (strcmp(s, names[i].name) == 0) {
            *ret = names[i].a;
            return 0;
        }
    return kiln_error_set(err, KILN_EINVAL, 0, "invalid compression '%s': use gzip, zstd or none",
                          s ? s : "");
}

const char *kiln_compression_media_type(enum kiln_compression a, bool docker)
{
    switch (a) {
    case KILN_COMPRESSION_GZIP:
        return docker ? KILN_MT_DOCKER_LAYER : KILN_MT_OCI_LAYER_TAR_GZ;
    case KILN_COMPRESSION_ZSTD:
        return docker ? NULL : KILN_MT_OCI_LAYER_TAR_ZST;
    case KILN_COMPRESSION_NONE:
        return docker ? MT_DOCKER_LAYER_TAR : KILN_MT_OCI_LAYER_TAR;
    default:
        return NULL;
    }
}
