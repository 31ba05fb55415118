/*
 * Streaming layer compression with digests computed in the same pass.
 *
 * One API for gzip (the default), zstd and no compression. Bytes go in with
 * kiln_compress_write(); compressed bytes come out, in order, through a write
 * callback (or to an fd) called on the caller's thread only, from inside
 * kiln_compress_write() and kiln_compress_finish(). kiln_compress_finish()
 * reports the sha256 and size of the uncompressed input (the layer's diff_id)
 * and of the compressed output (the blob digest of the manifest).
 *
 *   struct kiln_compress_options o = {.algo = KILN_COMPRESSION_GZIP};
 *   struct kiln_compressor *c = NULL;
 *   r = kiln_compress_new_fd(&o, fd, &c, err);
 *   r = kiln_compress_write(c, data, len, err);       as often as needed
 *   r = kiln_compress_finish(c, &result, err);
 *   kiln_compress_free(c);                             always; NULL-safe
 *
 * gzip: a single standard gzip member (one header, one deflate stream, one
 * CRC-32/ISIZE trailer) that every reader accepts. The input is cut into
 * fixed blocks (block_size) that a pool of worker threads compresses with
 * libdeflate; each block's deflate output is turned into a non-final,
 * byte-aligned run of blocks (the last block's BFINAL bit cleared, then an
 * empty stored block, as zlib's Z_SYNC_FLUSH does), so the concatenation is
 * one deflate stream. Blocks are not primed with the previous 32 KiB
 * (libdeflate has no preset dictionary): with 512 KiB blocks libdeflate
 * level 6 still compresses as well as zlib/pigz level 6, about 2.5 times
 * faster. The header carries no name and mtime 0.
 *
 * zstd: one zstd frame (with content checksum) from libzstd's multithreaded
 * compressor; nbWorkers is always >= 1, whose output libzstd keeps
 * independent of the worker count.
 *
 * Determinism: the output depends on the input bytes, the algorithm, the
 * level and (gzip) the block size, never on the thread count or on how the
 * input was split across kiln_compress_write() calls (for a given library
 * version).
 *
 * Memory is bounded whatever the input size: gzip holds 2 * threads + 2
 * blocks of input and output (about 6 MiB with 2 threads and 512 KiB
 * blocks) plus one libdeflate compressor per thread (measured: 14 MiB peak
 * RSS for a whole commit); zstd what libzstd needs for the level with 2 MiB
 * jobs (level 3, 2 threads: 35 MiB; level 9: 45 MiB; levels from about 12 up
 * use larger windows: level 19 needs about 220 MiB).
 *
 * Errors: a failed write callback's error (its *err) is passed on; any
 * error is sticky: later calls return the same code without doing work,
 * and the compressor must be freed. Thread-safety: one compressor is used
 * by one thread at a time.
 */
#ifndef KILN_LAYER_COMPRESS_H
#define KILN_LAYER_COMPRESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kiln/error.h"
#include "oci/digest.h"
#include "oci/manifest.h" /* enum kiln_compression: NONE (0), GZIP, ZSTD */

#define KILN_COMPRESS_GZIP_LEVEL_DEFAULT 6 /* same ratio as gzip/pigz -6 */
#define KILN_COMPRESS_ZSTD_LEVEL_DEFAULT 3
#define KILN_COMPRESS_BLOCK_DEFAULT      ((size_t)512 << 10)
#define KILN_COMPRESS_BLOCK_MIN          ((size_t)64 << 10)
#define KILN_COMPRESS_BLOCK_MAX          ((size_t)16 << 20)
#define KILN_COMPRESS_THREADS_MAX        64

/*
 * Set algo: a zeroed struct means KILN_COMPRESSION_NONE (the shared enum of
 * oci/manifest.h starts there). KILN_COMPRESS_OPTIONS_INIT is gzip with the
 * defaults, as is passing NULL options.
 */
struct kiln_compress_options {
    enum kiln_compression algo; /* KILN_COMPRESSION_GZIP, _ZSTD or _NONE */
    /* 0: the default; gzip 1..12 (10..12 are libdeflate's slow extra
     * levels), zstd 1..19 */
    int level;
    /* worker threads; 0: the CPUs this process may run on, at most 16 */
    int threads;
    /* gzip only: input bytes per parallel block; 0: KILN_COMPRESS_BLOCK_DEFAULT,
     * else KILN_COMPRESS_BLOCK_MIN..KILN_COMPRESS_BLOCK_MAX */
    size_t block_size;
};

#define KILN_COMPRESS_OPTIONS_INIT                                                                 \
    {                                                                                              \
        .algo = KILN_COMPRESSION_GZIP                                                              \
    }

struct kiln_compress_result {
    char digest[KILN_DIGEST_BUFSZ];  /* "sha256:<hex>" of the compressed output */
    uint64_t size;                   /* compressed bytes */
    char diff_id[KILN_DIGEST_BUFSZ]; /* "sha256:<hex>" of the uncompressed input */
    uint64_t uncompressed_size;
    const char *media_type; /* static OCI layer media type (tar, tar+gzip, tar+zstd) */
};

/*
 * Takes the next `len` bytes of compressed output. Returns >= 0, or a
 * -KILN_E code with *err set (which fails the compression).
 */
typedef int (*kiln_compress_write_fn)(void *userdata, const void *data, size_t len,
                                      struct kiln_error **err);

struct kiln_compressor;

/*
 * Start a compression whose output goes to `fn` (o may be NULL: gzip with
 * the defaults). -KILN_EINVAL on a bad algorithm (KILN_COMPRESSION_UNKNOWN),
 * level, thread count or block size;
 * -KILN_EIO when threads cannot be started. Free with kiln_compress_free().
 */
int kiln_compress_new(const struct kiln_compress_options *o, kiln_compress_write_fn fn,
                      void *userdata, struct kiln_compressor **ret, struct kiln_error **err);

/* The same, writing to `fd` with write(2) (EINTR and short writes handled);
 * the fd stays the caller's. Write errors are -KILN_EIO. */
int kiln_compress_new_fd(const struct kiln_compress_options *o, int fd,
                         struct kiln_compressor **ret, struct kiln_error **err);

/* Compress the next `len` bytes (may block while workers are busy). */
int kiln_compress_write(struct kiln_compressor *c, const void *data, size_t len,
                        struct kiln_error **err);

/*
 * End the stream, write out everything left and fill *ret. After it
 * (success or not) only kiln_compress_free() may be called.
 */
int kiln_compress_finish(struct kiln_compressor *c, struct kiln_compress_result *ret,
                         struct kiln_error **err);

/* Stop the workers and free everything; NULL is fine. Without a finish,
 * the output so far is an unterminated stream the caller discards. */
void kiln_compress_free(struct kiln_compressor *c);

/* "gzip", "zstd", "none" ("unknown" for anything else). */
const char *kiln_compression_name(enum kiln_compression a);

/* Parse "gzip", "zstd" or "none" (also "gz", "zst", "uncompressed");
 * -KILN_EINVAL otherwise. */
int kiln_compression_parse(const char *s, enum kiln_compression *ret, struct kiln_error **err);

/*
 * The layer media type for an algorithm: OCI ones, or with docker = true
 * Docker schema 2's (gzip: ".../vnd.docker.image.rootfs.diff.tar.gzip",
 * none: ".../vnd.docker.image.rootfs.diff.tar"; zstd: NULL, there is none).
 * NULL for KILN_COMPRESSION_UNKNOWN.
 */
const char *kiln_compression_media_type(enum kiln_compression a, bool docker);

#endif
