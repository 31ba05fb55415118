#include "util/common.h"
#include "layer/decompress.h"

#include <libdeflate.h>
#include <pthread.h>
#include <unistd.h>
#include <zstd.h>
#ifdef KILN_HAVE_ISAL
#include <isa-l/igzip_lib.h>
#else
#include <zlib.h>
#endif

#include "util/sha256.h"

#define DEFAULT_BLOCK       ((size_t)1 << 20)
#define MIN_BLOCK           ((size_t)64 << 10)
#define MAX_BLOCK           ((size_t)64 << 20)
#define DEFAULT_BLOCKS      4u
#define ZSTD_WINDOW_LOG_MAX 27
/*
 * Room after the input buffer's capacity: an inflater that read past the end
 * of its deflate stream gives back at most 8 bytes (ISA-L's 64-bit bit
 * buffer), which in_unread() may have to put in front of the unread bytes.
 */
#define IN_PUSHBACK 8

enum gz_state { GZ_HEADER, GZ_BODY, GZ_TRAILER };

struct block {
    uint8_t *data;
    size_t len;
    uint64_t seq; /* position in the stream, in blocks */
    bool hashed;  /* already added to the diff_id */
};

struct kiln_decompress {
    kiln_read_fn read;
    void *userdata;
    struct kiln_decompress_opts opts;
    enum kiln_compression format;

    /*
     * compressed input: bytes [in_pos, in_len) are unread. in_len stays within
     * in_cap except right after in_unread(), which may go up to IN_PUSHBACK
     * bytes past it (the allocation has that room).
     */
    uint8_t *in;
    size_t in_cap, in_pos, in_len;
    bool in_eof;
    uint64_t in_total;

    /* the ring: blocks[tail..] are filled (count of them), the consumer holds blocks[tail] */
    struct block *blocks;
    unsigned nblocks, head, tail, count;
    bool holding;
    pthread_mutex_t mu;
    pthread_cond_t can_fill, can_take;
    bool done; /* the producer stopped: end of stream or error */
    bool stop; /* the consumer asks the producer to stop */
    bool thread_started;
    pthread_t thread;

    /* producer error (read by the consumer once done is set) */
    int perr_code;
    char *perr_msg;

    /* codecs: the gzip body is inflated by ISA-L when built with it, else by zlib */
#ifdef KILN_HAVE_ISAL
    struct inflate_state *isal;
#else
    z_stream z;
    bool z_init;
#endif
    struct libdeflate_decompressor *ld;
    bool ld_off;
    enum gz_state gz;
    unsigned gz_members;
    uint32_t gz_crc;
    uint64_t gz_size;
    ZSTD_DCtx *zs;
    size_t zs_last; /* last ZSTD_decompressStream() hint: 0 at a frame end */
    bool zs_started;

    /*
     * Digests. The uncompressed stream is hashed block by block in order, by
     * whichever side has time: the producer when the ring is about to be
     * full (the consumer is the slower side), else the consumer when it
     * takes the block. hash_next (under mu) is the next block to hash.
     */
    struct kiln_sha256 h_out, h_in;
    uint64_t out_total;
    uint64_t fill_seq, hash_next;
    bool out_final;
    char diff_id[72], digest[72];

    /* consumer side */
    const uint8_t *cur;
    size_t cur_len;
};

const char *kiln_decompress_format_name(enum kiln_compression c)
{
    switch (c) {
    case KILN_COMPRESSION_GZIP:
        return "gzip";
    case KILN_COMPRESSION_ZSTD:
        return "zstd";
    case KILN_COMPRESSION_NONE:
        return "none";
    default:
        break;
    }
    return "unknown";
}

enum kiln_compression kiln_decompress_detect(const void *buf, size_t n)
{
    const uint8_t *p = buf;
    if (n >= 2 && p[0] == 0x1f && p[1] == 0x8b)
        return KILN_COMPRESSION_GZIP;
    if (n >= 4 && p[0] == 0x28 && p[1] == 0xb5 && p[2] == 0x2f && p[3] == 0xfd)
        return KILN_COMPRESSION_ZSTD;
    return KILN_COMPRESSION_NONE;
}

ssize_t kiln_decompress_read_fd(void *userdata, void *buf, size_t n)
{
    int fd = *(int *)userdata;
    for (;;) {
        ssize_t r = read(fd, buf, n);
        if (r >= 0)
            return r;
        if (errno != EINTR)
            return -errno;
    }
}

/* Record the producer's error (first one wins). Returns -code. */
__attribute__((format(printf, 4, 5))) static int fail(struct kiln_decompress *d, int code,
                                                      int errnum, const char *fmt, ...)
{
    if (d->perr_code)
        return -d->perr_code;
    va_list ap;
    va_start(ap, fmt);
    char *m = kiln_xvasprintf(fmt, ap);
    va_end(ap);
    if (errnum) {
        d->perr_msg = kiln_xasprintf("%s: %s", m, strerror(errnum));
        free(m);
    } else {
        d->perr_msg = m;
    }
    d->perr_code = code;
    return -code;
}

/* Offset in the compressed stream of the next unread byte. */
static uint64_t in_offset(const struct kiln_decompress *d)
{
    return d->in_total - (d->in_len - d->in_pos);
}

/* Read from the source into [dst, dst+n). Returns bytes read, 0 at EOF, < 0 on error. */
static ssize_t source_read(struct kiln_decompress *d, void *dst, size_t n)
{
    if (d->in_eof)
        return 0;
    if (__atomic_load_n(&d->stop, __ATOMIC_ACQUIRE))
        return fail(d, KILN_ECANCELLED, 0, "decompression cancelled");
    ssize_t r = d->read(d->userdata, dst, n);
    if (r < 0)
        return fail(d, KILN_EIO, r < -1 ? (int)-r : EIO, "read compressed stream at offset %llu",
                    (unsigned long long)d->in_total);
    if (r == 0) {
        d->in_eof = true;
        return 0;
    }
    if ((size_t)r > n)
        return fail(d, KILN_EINTERNAL, 0, "read callback returned %zd for %zu bytes", r, n);
    d->in_total += (uint64_t)r;
    if (d->opts.digest_compressed)
        kiln_sha256_update(&d->h_in, dst, (size_t)r);
    return r;
}

/*
 * Make at least `want` unread bytes available (fewer only at EOF). Compacts
 * the buffer first. Returns the number available, or < 0 on error.
 */
static ssize_t in_ensure(struct kiln_decompress *d, size_t want)
{
    if (want > d->in_cap)
        want = d->in_cap;
    if (d->in_len - d->in_pos >= want)
        return (ssize_t)(d->in_len - d->in_pos);
    if (d->in_pos > 0) {
        memmove(d->in, d->in + d->in_pos, d->in_len - d->in_pos);
        d->in_len -= d->in_pos;
        d->in_pos = 0;
    }
    while (d->in_len < want) {
        ssize_t r = source_read(d, d->in + d->in_len, d->in_cap - d->in_len);
        if (r < 0)
            return r;
        if (r == 0)
            break;
        d->in_len += (size_t)r;
    }
    return (ssize_t)(d->in_len - d->in_pos);
}

/* Refill when empty; returns available bytes, 0 at EOF, < 0 on error. */
static ssize_t in_more(struct kiln_decompress *d)
{
    if (d->in_len > d->in_pos)
        return (ssize_t)(d->in_len - d->in_pos);
    d->in_pos = d->in_len = 0;
    return in_ensure(d, 1);
}

/* Skip n input bytes; returns 0 or < 0 (truncation is reported by `what`). */
static int in_skip(struct kiln_decompress *d, size_t n, const char *what)
{
    while (n > 0) {
        ssize_t a = in_more(d);
        if (a < 0)
            return (int)a;
        if (a == 0)
            return fail(d, KILN_EINVAL, 0, "gzip: truncated %s at offset %llu", what,
                        (unsigned long long)in_offset(d));
        size_t k = (size_t)a < n ? (size_t)a : n;
        d->in_pos += k;
        n -= k;
    }
    return 0;
}

/* Skip a NUL-terminated header field. */
static int in_skip_string(struct kiln_decompress *d, const char *what)
{
    for (;;) {
        ssize_t a = in_more(d);
        if (a < 0)
            return (int)a;
        if (a == 0)
            return fail(d, KILN_EINVAL, 0, "gzip: truncated %s at offset %llu", what,
                        (unsigned long long)in_offset(d));
        const uint8_t *p = memchr(d->in + d->in_pos, 0, (size_t)a);
        if (p) {
            d->in_pos = (size_t)(p - d->in) + 1;
            return 0;
        }
        d->in_pos = d->in_len;
    }
}

/* Count produced bytes against the cap. */
static int account(struct kiln_decompress *d, size_t n)
{
    d->out_total += n;
    if (d->opts.max_output && d->out_total > d->opts.max_output)
        return fail(d, KILN_ETOOBIG, 0, "uncompressed stream exceeds %llu bytes",
                    (unsigned long long)d->opts.max_output);
    return 0;
}

/*
 * gzip member header. Returns 1 when a header was read, 0 at a clean end of
 * stream (after at least one member), < 0 on error.
 */
static int gzip_header(struct kiln_decompress *d)
{
    uint64_t off = in_offset(d);
    ssize_t a = in_ensure(d, 10);
    if (a < 0)
        return (int)a;
    if (a == 0 && d->gz_members > 0)
        return 0;
    const uint8_t *h = d->in + d->in_pos;
    if (a >= 2 && (h[0] != 0x1f || h[1] != 0x8b)) {
        if (d->gz_members > 0)
            return fail(d, KILN_EINVAL, 0, "gzip: trailing garbage after member %u at offset %llu",
                        d->gz_members, (unsigned long long)off);
        return fail(d, KILN_EINVAL, 0, "gzip: bad magic at offset %llu", (unsigned long long)off);
    }
    if (a < 10)
        return fail(d, KILN_EINVAL, 0, "gzip: truncated member header at offset %llu",
                    (unsigned long long)off);
    if (h[2] != 8)
        return fail(d, KILN_EINVAL, 0, "gzip: unknown compression method %u at offset %llu", h[2],
                    (unsigned long long)off);
    uint8_t flg = h[3];
    if (flg & 0xe0)
        return fail(d, KILN_EINVAL, 0, "gzip: reserved header flags 0x%02x at offset %llu", flg,
                    (unsigned long long)off);
    d->in_pos += 10;
    int r;
    if (flg & 0x04) { /* FEXTRA */
        a = in_ensure(d, 2);
        if (a < 0)
            return (int)a;
        if (a < 2)
            return fail(d, KILN_EINVAL, 0, "gzip: truncated extra field at offset %llu",
                        (unsigned long long)in_offset(d));
        size_t xlen = (size_t)d->in[d->in_pos] | (size_t)d->in[d->in_pos + 1] << 8;
        d->in_pos += 2;
        if ((r = in_skip(d, xlen, "extra field")) < 0)
            return r;
    }
    if ((flg & 0x08) && (r = in_skip_string(d, "file name")) < 0)
        return r;
    if ((flg & 0x10) && (r = in_skip_string(d, "comment")) < 0)
        return r;
    if ((flg & 0x02) && (r = in_skip(d, 2, "header crc")) < 0)
        return r;
    d->gz_crc = 0;
    d->gz_size = 0;
    return 1;
}

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static int gzip_trailer(struct kiln_decompress *d)
{
    uint64_t off = in_offset(d);
    ssize_t a = in_ensure(d, 8);
    if (a < 0)
        return (int)a;
    if (a < 8)
        return fail(d, KILN_EINVAL, 0, "gzip: truncated member trailer at offset %llu",
                    (unsigned long long)off);
    uint32_t crc = le32(d->in + d->in_pos), isize = le32(d->in + d->in_pos + 4);
    if (crc != d->gz_crc)
        return fail(d, KILN_EINVAL, 0,
                    "gzip: crc mismatch in member %u at offset %llu (stored %08x, computed %08x)",
                    d->gz_members + 1, (unsigned long long)off, crc, d->gz_crc);
    if (isize != (uint32_t)d->gz_size)
        return fail(d, KILN_EINVAL, 0,
                    "gzip: size mismatch in member %u at offset %llu (stored %u, decoded %llu)",
                    d->gz_members + 1, (unsigned long long)off, isize,
                    (unsigned long long)d->gz_size);
    d->in_pos += 8;
    d->gz_members++;
    return 0;
}

/*
 * Try to decode a whole member (header included) with libdeflate into
 * out[*len, cap). Returns 1 when done, 0 when the caller must stream this
 * member (body_inflate()) (or publish the block first: *retry_later), < 0 on error.
 */
static int gz_fast(struct kiln_decompress *d, uint8_t *out, size_t cap, size_t *len,
                   bool *retry_later)
{
    *retry_later = false;
    ssize_t a = in_ensure(d, d->in_cap);
    if (a < 0)
        return (int)a;
    if (a < 18)
        return 0;
    size_t ain = 0, aout = 0;
    enum libdeflate_result r = libdeflate_gzip_decompress_ex(d->ld, d->in + d->in_pos, (size_t)a,
                                                             out + *len, cap - *len, &ain, &aout);
    if (r == LIBDEFLATE_SUCCESS) {
        d->in_pos += ain;
        *len += aout;
        d->gz_members++;
        return 1;
    }
    if (r == LIBDEFLATE_INSUFFICIENT_SPACE && *len > 0) {
        *retry_later = true;
        return 0;
    }
    /* too big for one block, longer than the input buffer, or corrupt: streaming says which */
    d->ld_off = true;
    return 0;
}

#ifdef KILN_HAVE_ISAL
/*
 * Give back the k (<= IN_PUSHBACK) bytes `p` that were taken from just before
 * in_pos (the inflater read them ahead, past the end of its deflate stream):
 * they are unread again. When in_more() refilled the buffer since, they are
 * no longer in front of in_pos, so the unread bytes move up to make room.
 */
static int in_unread(struct kiln_decompress *d, const uint8_t *p, size_t k)
{
    if (d->in_pos < k) {
        size_t shift = k - d->in_pos;
        if (k > IN_PUSHBACK || d->in_len + shift > d->in_cap + IN_PUSHBACK)
            return fail(d, KILN_EINTERNAL, 0, "gzip: no room to give back %zu input bytes", k);
        memmove(d->in + k, d->in + d->in_pos, d->in_len - d->in_pos);
        d->in_len += shift;
        d->in_pos = k;
    }
    d->in_pos -= k;
    memcpy(d->in + d->in_pos, p, k);
    return 0;
}

static const char *isal_error_name(int r)
{
    switch (r) {
    case ISAL_INVALID_BLOCK:
        return "invalid block";
    case ISAL_INVALID_SYMBOL:
        return "invalid symbol";
    case ISAL_INVALID_LOOKBACK:
        return "invalid distance too far back";
    default:
        return "bad data";
    }
}

/*
 * One inflate call on the unread input (avail bytes, possibly 0: bits the
 * inflater buffered may still decode) into out[0, room). Sets *produced, and
 * *end once the deflate stream of this member ended; then in_pos is just
 * after its last byte. Returns 0 or < 0 on error.
 */
static int body_inflate(struct kiln_decompress *d, size_t avail, uint8_t *out, size_t room,
                        size_t *produced, bool *end)
{
    struct inflate_state *s = d->isal;
    s->next_in = d->in + d->in_pos;
    s->avail_in = (uint32_t)(avail > UINT32_MAX ? UINT32_MAX : avail);
    s->next_out = out;
    s->avail_out = (uint32_t)(room > UINT32_MAX ? UINT32_MAX : room);
    int ir = isal_inflate(s);
    *produced = (size_t)(s->next_out - out);
    d->in_pos = (size_t)(s->next_in - d->in);
    if (ir < 0) {
        /* the bytes in the bit buffer are not decoded yet: the offset is before them */
        uint64_t off = in_offset(d);
        uint64_t held = s->read_in_length > 0 ? (uint64_t)s->read_in_length / 8 : 0;
        return fail(d, KILN_EINVAL, 0, "gzip: corrupt deflate data at offset %llu: %s",
                    (unsigned long long)(off >= held ? off - held : 0), isal_error_name(ir));
    }
    if (s->block_state != ISAL_BLOCK_FINISH)
        return 0;
    /*
     * The stream ended, but ISA-L reads ahead: its bit buffer may hold whole
     * bytes past the end (the trailer, the next member). Its low
     * read_in_length % 8 bits are the final byte's padding; the whole bytes
     * above them are given back to the input.
     */
    if (s->read_in_length < 0 || s->read_in_length > 64)
        return fail(d, KILN_EINTERNAL, 0, "gzip: inflater bit buffer holds %d bits",
                    (int)s->read_in_length);
    size_t k = (size_t)s->read_in_length / 8;
    uint64_t v = k ? s->read_in >> (s->read_in_length % 8) : 0;
    uint8_t back[8];
    for (size_t i = 0; i < k; i++)
        back[i] = (uint8_t)(v >> (8 * i));
    int r = in_unread(d, back, k);
    if (r < 0)
        return r;
    isal_inflate_reset(s);
    s->crc_flag = ISAL_DEFLATE;
    *end = true;
    return 0;
}
#else
/* zlib variant of body_inflate() above; zlib never reads past the end of the stream. */
static int body_inflate(struct kiln_decompress *d, size_t avail, uint8_t *out, size_t room,
                        size_t *produced, bool *end)
{
    d->z.next_in = d->in + d->in_pos;
    d->z.avail_in = (uInt)(avail > UINT32_MAX ? UINT32_MAX : avail);
    d->z.next_out = out;
    d->z.avail_out = (uInt)(room > UINT32_MAX ? UINT32_MAX : room);
    int zr = inflate(&d->z, Z_NO_FLUSH);
    *produced = (size_t)(d->z.next_out - out);
    d->in_pos = (size_t)(d->z.next_in - d->in);
    if (zr == Z_STREAM_END) {
        inflateReset(&d->z);
        *end = true;
    } else if (zr == Z_DATA_ERROR) {
        return fail(d, KILN_EINVAL, 0, "gzip: corrupt deflate data at offset %llu: %s",
                    (unsigned long long)in_offset(d), d->z.msg ? d->z.msg : "bad data");
    } else if (zr == Z_MEM_ERROR) {
        return fail(d, KILN_EINTERNAL, ENOMEM, "gzip: inflate");
    } else if (zr != Z_OK && zr != Z_BUF_ERROR) {
        return fail(d, KILN_EINTERNAL, 0, "gzip: inflate returned %d", zr);
    }
    return 0;
}
#endif

static int gz_fill(struct kiln_decompress *d, uint8_t *out, size_t cap, size_t *len)
{
    while (*len < cap) {
        if (d->gz == GZ_HEADER) {
            if (!d->ld_off) {
                bool later;
                size_t before = *len;
                int r = gz_fast(d, out, cap, len, &later);
                if (r < 0)
                    return r;
                if (r > 0) {
                    if ((r = account(d, *len - before)) < 0)
                        return r;
                    continue;
                }
                if (later)
                    return 0;
            }
            int r = gzip_header(d);
            if (r <= 0)
                return r < 0 ? r : 1;
            d->gz = GZ_BODY;
        }
        if (d->gz == GZ_BODY) {
            ssize_t a = in_more(d);
            if (a < 0)
                return (int)a;
            /*
             * At the end of the input the inflater still runs: it may hold
             * the last bits of the stream (it stopped on a full block). No
             * output and no end with nothing left to read is a truncation.
             */
            size_t produced = 0, before = d->in_pos;
            bool end = false;
            int r = body_inflate(d, (size_t)a, out + *len, cap - *len, &produced, &end);
            if (r < 0)
                return r;
            /* input and room, yet no progress: a stuck inflater is a bug */
            if (a > 0 && !end && !produced && d->in_pos == before)
                return fail(d, KILN_EINTERNAL, 0, "gzip: inflate made no progress at offset %llu",
                            (unsigned long long)in_offset(d));
            if (produced) {
                d->gz_crc = (uint32_t)libdeflate_crc32(d->gz_crc, out + *len, produced);
                d->gz_size += produced;
                *len += produced;
                if ((r = account(d, produced)) < 0)
                    return r;
            }
            if (end)
                d->gz = GZ_TRAILER;
            else if (a == 0 && produced == 0)
                return fail(d, KILN_EINVAL, 0,
                            "gzip: truncated stream at offset %llu (deflate data of member %u "
                            "ends early)",
                            (unsigned long long)in_offset(d), d->gz_members + 1);
        }
        if (d->gz == GZ_TRAILER) {
            int r = gzip_trailer(d);
            if (r < 0)
                return r;
            d->gz = GZ_HEADER;
        }
    }
    return 0;
}

static int zstd_fill(struct kiln_decompress *d, uint8_t *out, size_t cap, size_t *len)
{
    while (*len < cap) {
        ssize_t a = in_more(d);
        if (a < 0)
            return (int)a;
        if (a == 0) {
            if (d->zs_last != 0 || !d->zs_started)
                return fail(d, KILN_EINVAL, 0,
                            "zstd: truncated stream at offset %llu (frame incomplete)",
                            (unsigned long long)in_offset(d));
            return 1;
        }
        ZSTD_inBuffer ib = {d->in + d->in_pos, (size_t)a, 0};
        ZSTD_outBuffer ob = {out, cap, *len};
        size_t r = ZSTD_decompressStream(d->zs, &ob, &ib);
        if (ZSTD_isError(r))
            return fail(d, KILN_EINVAL, 0, "zstd: corrupt stream at offset %llu: %s",
                        (unsigned long long)(in_offset(d) + ib.pos), ZSTD_getErrorName(r));
        d->zs_started = true;
        d->zs_last = r;
        d->in_pos += ib.pos;
        size_t produced = ob.pos - *len;
        *len = ob.pos;
        int e = account(d, produced);
        if (e < 0)
            return e;
        if (ib.pos == 0 && produced == 0 && r != 0) {
            /* no progress with input available and room left: a stuck decoder is a bug */
            return fail(d, KILN_EINTERNAL, 0, "zstd: no progress at offset %llu",
                        (unsigned long long)in_offset(d));
        }
    }
    return 0;
}

static int none_fill(struct kiln_decompress *d, uint8_t *out, size_t cap, size_t *len)
{
    while (*len < cap) {
        size_t n;
        if (d->in_pos < d->in_len) {
            n = d->in_len - d->in_pos;
            if (n > cap - *len)
                n = cap - *len;
            memcpy(out + *len, d->in + d->in_pos, n);
            d->in_pos += n;
        } else {
            ssize_t r = source_read(d, out + *len, cap - *len);
            if (r < 0)
                return (int)r;
            if (r == 0)
                return 1;
            n = (size_t)r;
        }
        *len += n;
        int e = account(d, n);
        if (e < 0)
            return e;
    }
    return 0;
}

static void finish_input_digest(struct kiln_decompress *d)
{
    char hex[KILN_SHA256_HEX_LEN + 1];
    if (d->opts.digest_compressed) {
        kiln_sha256_final_hex(&d->h_in, hex);
        snprintf(d->digest, sizeof(d->digest), "sha256:%s", hex);
    }
}

/*
 * Fill one block. Returns 0 (more to come), 1 (end of stream; the block
 * may hold the last bytes), < 0 on error (d->perr_*).
 */
static int fill_block(struct kiln_decompress *d, struct block *b)
{
    size_t cap = d->opts.block_size;
    b->len = 0;
    int r;
    switch (d->format) {
    case KILN_COMPRESSION_GZIP:
        r = gz_fill(d, b->data, cap, &b->len);
        break;
    case KILN_COMPRESSION_ZSTD:
        r = zstd_fill(d, b->data, cap, &b->len);
        break;
    default:
        r = none_fill(d, b->data, cap, &b->len);
        break;
    }
    if (r > 0)
        finish_input_digest(d);
    return r;
}

/* One producer step: fill the free block at head and publish it. Returns fill_block's value. */
static int produce_one(struct kiln_decompress *d, struct block *b)
{
    int r = fill_block(d, b);
    b->seq = d->fill_seq;
    b->hashed = false;
    if (r >= 0 && b->len > 0) {
        d->fill_seq++;
        pthread_mutex_lock(&d->mu);
        bool mine = d->hash_next == b->seq && d->count + 1 >= d->nblocks;
        pthread_mutex_unlock(&d->mu);
        if (mine) {
            kiln_sha256_update(&d->h_out, b->data, b->len);
            b->hashed = true;
        }
    }
    pthread_mutex_lock(&d->mu);
    if (b->hashed)
        d->hash_next++;
    if (r >= 0 && b->len > 0) {
        d->head = (d->head + 1) % d->nblocks;
        d->count++;
    }
    if (r != 0)
        d->done = true;
    pthread_cond_signal(&d->can_take);
    pthread_mutex_unlock(&d->mu);
    return r;
}

static void *producer_main(void *arg)
{
    struct kiln_decompress *d = arg;
    for (;;) {
        pthread_mutex_lock(&d->mu);
        while (d->count == d->nblocks && !d->stop)
            pthread_cond_wait(&d->can_fill, &d->mu);
        if (d->stop) {
            d->done = true;
            pthread_cond_signal(&d->can_take);
            pthread_mutex_unlock(&d->mu);
            break;
        }
        struct block *b = &d->blocks[d->head];
        pthread_mutex_unlock(&d->mu);
        if (produce_one(d, b) != 0)
            break;
    }
    return NULL;
}

int kiln_decompress_open(struct kiln_decompress **ret, kiln_read_fn read, void *userdata,
                         const struct kiln_decompress_opts *opts, struct kiln_error **err)
{
    struct kiln_decompress *d = kiln_xcalloc(1, sizeof(*d));
    d->read = read;
    d->userdata = userdata;
    if (opts)
        d->opts = *opts;
    if (!d->opts.block_size)
        d->opts.block_size = DEFAULT_BLOCK;
    if (d->opts.block_size < MIN_BLOCK)
        d->opts.block_size = MIN_BLOCK;
    if (d->opts.block_size > MAX_BLOCK)
        d->opts.block_size = MAX_BLOCK;
    d->nblocks = d->opts.nblocks ? d->opts.nblocks : DEFAULT_BLOCKS;
    if (d->nblocks < 2)
        d->nblocks = 2;
    if (d->nblocks > 64)
        d->nblocks = 64;
    d->in_cap = d->opts.block_size;
    d->in = kiln_xmalloc(d->in_cap + IN_PUSHBACK);
    d->blocks = kiln_xcalloc(d->nblocks, sizeof(*d->blocks));
    for (unsigned i = 0; i < d->nblocks; i++)
        d->blocks[i].data = kiln_xmalloc(d->opts.block_size);
    pthread_mutex_init(&d->mu, NULL);
    pthread_cond_init(&d->can_fill, NULL);
    pthread_cond_init(&d->can_take, NULL);
    kiln_sha256_init(&d->h_out);
    kiln_sha256_init(&d->h_in);

    ssize_t a = in_ensure(d, 4);
    if (a < 0) {
        int r = kiln_error_set(err, d->perr_code, 0, "%s", d->perr_msg);
        kiln_decompress_free(d);
        return r;
    }
    d->format = kiln_decompress_detect(d->in, (size_t)a);
    if (d->format == KILN_COMPRESSION_GZIP) {
#ifdef KILN_HAVE_ISAL
        d->isal = kiln_xcalloc(1, sizeof(*d->isal));
        isal_inflate_init(d->isal);
        d->isal->crc_flag = ISAL_DEFLATE; /* raw deflate: our own header and trailer code */
#else
        if (inflateInit2(&d->z, -15) != Z_OK) {
            kiln_decompress_free(d);
            return kiln_error_set(err, KILN_EINTERNAL, 0, "gzip: inflate init failed");
        }
        d->z_init = true;
#endif
        d->ld = libdeflate_alloc_decompressor();
        if (!d->ld)
            d->ld_off = true;
    } else if (d->format == KILN_COMPRESSION_ZSTD) {
        d->zs = ZSTD_createDCtx();
        if (!d->zs) {
            kiln_decompress_free(d);
            return kiln_error_set(err, KILN_EINTERNAL, 0, "zstd: out of memory");
        }
        ZSTD_DCtx_setParameter(d->zs, ZSTD_d_windowLogMax, ZSTD_WINDOW_LOG_MAX);
    }
    if (!d->opts.no_thread) {
        int r = pthread_create(&d->thread, NULL, producer_main, d);
        if (r != 0) {
            kiln_decompress_free(d);
            return kiln_error_set(err, KILN_EIO, r, "start decompression thread");
        }
        d->thread_started = true;
    }
    *ret = d;
    return 0;
}

enum kiln_compression kiln_decompress_format(const struct kiln_decompress *d)
{
    return d->format;
}

static void release_held(struct kiln_decompress *d)
{
    if (!d->holding)
        return;
    pthread_mutex_lock(&d->mu);
    d->tail = (d->tail + 1) % d->nblocks;
    d->count--;
    d->holding = false;
    pthread_cond_signal(&d->can_fill);
    pthread_mutex_unlock(&d->mu);
}

ssize_t kiln_decompress_next(struct kiln_decompress *d, const void **ret_buf,
                             struct kiln_error **err)
{
    release_held(d);
    d->cur = NULL;
    d->cur_len = 0;
    if (!d->thread_started) {
        /* inline: produce until a block is ready or the stream ended */
        while (!d->done && d->count == 0)
            produce_one(d, &d->blocks[d->head]);
    }
    pthread_mutex_lock(&d->mu);
    while (d->count == 0 && !d->done)
        pthread_cond_wait(&d->can_take, &d->mu);
    if (d->count > 0) {
        struct block *b = &d->blocks[d->tail];
        d->holding = true;
        pthread_mutex_unlock(&d->mu);
        if (!b->hashed) {
            /* in order: every earlier block is hashed (hash_next == b->seq) */
            kiln_sha256_update(&d->h_out, b->data, b->len);
            b->hashed = true;
            pthread_mutex_lock(&d->mu);
            d->hash_next++;
            pthread_mutex_unlock(&d->mu);
        }
        *ret_buf = b->data;
        return (ssize_t)b->len;
    }
    pthread_mutex_unlock(&d->mu);
    if (d->perr_code)
        return kiln_error_set(err, d->perr_code, 0, "%s", d->perr_msg);
    if (!d->out_final) {
        char hex[KILN_SHA256_HEX_LEN + 1];
        kiln_sha256_final_hex(&d->h_out, hex);
        snprintf(d->diff_id, sizeof(d->diff_id), "sha256:%s", hex);
        d->out_final = true;
    }
    return 0;
}

ssize_t kiln_decompress_read(struct kiln_decompress *d, void *buf, size_t n,
                             struct kiln_error **err)
{
    if (n == 0)
        return 0;
    if (d->cur_len == 0) {
        const void *p = NULL;
        ssize_t r = kiln_decompress_next(d, &p, err);
        if (r <= 0)
            return r;
        d->cur = p;
        d->cur_len = (size_t)r;
    }
    size_t k = d->cur_len < n ? d->cur_len : n;
    memcpy(buf, d->cur, k);
    d->cur += k;
    d->cur_len -= k;
    return (ssize_t)k;
}

int kiln_decompress_finish(struct kiln_decompress *d, struct kiln_decompress_result *ret,
                           struct kiln_error **err)
{
    for (;;) {
        const void *p = NULL;
        ssize_t r = kiln_decompress_next(d, &p, err);
        if (r < 0)
            return (int)r;
        if (r == 0)
            break;
    }
    if (ret) {
        memset(ret, 0, sizeof(*ret));
        ret->format = d->format;
        ret->compressed_size = d->in_total;
        ret->uncompressed_size = d->out_total;
        memcpy(ret->diff_id, d->diff_id, sizeof(ret->diff_id));
        memcpy(ret->digest, d->digest, sizeof(ret->digest));
    }
    return 0;
}

void kiln_decompress_free(struct kiln_decompress *d)
{
    if (!d)
        return;
    if (d->thread_started) {
        pthread_mutex_lock(&d->mu);
        __atomic_store_n(&d->stop, true, __ATOMIC_RELEASE);
        pthread_cond_broadcast(&d->can_fill);
        pthread_mutex_unlock(&d->mu);
        pthread_join(d->thread, NULL);
    }
#ifdef KILN_HAVE_ISAL
    free(d->isal);
#else
    if (d->z_init)
        inflateEnd(&d->z);
#endif
    if (d->ld)
        libdeflate_free_decompressor(d->ld);
    ZSTD_freeDCtx(d->zs);
    kiln_sha256_release(&d->h_out);
    kiln_sha256_release(&d->h_in);
    for (unsigned i = 0; d->blocks && i < d->nblocks; i++)
        free(d->blocks[i].data);
    free(d->blocks);
    free(d->in);
    free(d->perr_msg);
    pthread_mutex_destroy(&d->mu);
    pthread_cond_destroy(&d->can_fill);
    pthread_cond_destroy(&d->can_take);
    free(d);
}
