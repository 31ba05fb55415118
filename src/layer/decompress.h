/*
 * Streaming decompression of layer blobs (gzip, zstd or plain tar), with the
 * digests computed on the way.
 *
 * The format is detected from the first bytes: 1f 8b is gzip, 28 b5 2f fd is
 * zstd, anything else passes through unchanged (an uncompressed tar). The
 * compressed bytes come from a read callback, so the source can be a file, a
 * pipe, or an HTTP download.
 *
 * By default the decompression runs in its own thread, which fills a bounded
 * ring of blocks (4 blocks of 1 MiB: memory stays bounded whatever the blob
 * size) that the consumer takes one block at a time, without copying: the
 * download, the decompression and the extraction overlap. The thread also
 * computes the SHA-256 of the uncompressed stream (a layer's diff_id) and,
 * when asked, of the compressed stream (the blob digest).
 *
 * gzip: one or more members (RFC 1952), each member's CRC-32 and size are
 * checked; bytes after the last member that do not start another member are
 * an error. Members that fit in one block are decoded with libdeflate, others
 * with ISA-L when kiln is built with it (libisal), else zlib. zstd: one or
 * more frames (skippable frames are skipped), window up to 128 MiB (larger
 * windows are refused: memory stays bounded).
 *
 *   struct kiln_decompress *d = NULL;
 *   if (kiln_decompress_open(&d, kiln_decompress_read_fd, &fd, NULL, err) < 0) ...
 *   while ((n = kiln_decompress_next(d, &p, err)) > 0) use(p, n);
 *   if (n < 0 || kiln_decompress_finish(d, &res, err) < 0) ...
 *   kiln_decompress_free(d);
 *
 * Thread safety: one decompressor is used by one consumer thread; the read
 * callback is called from the decompression thread (never concurrently).
 */
#ifndef KILN_LAYER_DECOMPRESS_H
#define KILN_LAYER_DECOMPRESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "kiln/error.h"
#include "oci/manifest.h"

/*
 * The source: read up to n bytes into buf. Returns the number of bytes read
 * (> 0), 0 at the end of the stream, or a negative errno value (-EIO...) on
 * failure. A source that has a better message (an HTTP status) keeps it in
 * its userdata; the decompressor reports "read compressed stream: <errno>".
 */
typedef ssize_t (*kiln_read_fn)(void *userdata, void *buf, size_t n);

/* A kiln_read_fn for a file descriptor: userdata is an `int *`. Retries EINTR. */
ssize_t kiln_decompress_read_fd(void *userdata, void *buf, size_t n);

/* enum kiln_compression (NONE, GZIP, ZSTD) is the one of oci/manifest.h. */

/* "none", "gzip", "zstd" ("unknown" for anything else). */
const char *kiln_decompress_format_name(enum kiln_compression c);

/* The format the first bytes announce (n may be < 4: then NONE). */
enum kiln_compression kiln_decompress_detect(const void *buf, size_t n);

struct kiln_decompress_opts {
    size_t block_size;      /* bytes per ring block; 0: 1 MiB (min 64 KiB, max 64 MiB) */
    unsigned nblocks;       /* blocks in the ring; 0: 4 (min 2, max 64) */
    bool no_thread;         /* decompress in the consumer's thread, on demand */
    bool digest_compressed; /* also compute the SHA-256 of the compressed stream */
    uint64_t max_output;    /* cap on uncompressed bytes (KILN_ETOOBIG); 0: none */
};

struct kiln_decompress_result {
    enum kiln_compression format;
    uint64_t compressed_size;   /* bytes read from the source */
    uint64_t uncompressed_size; /* bytes produced */
    char diff_id[72];           /* "sha256:<64 hex>" of the uncompressed stream */
    char digest[72];            /* same of the compressed stream, "" when not asked */
};

struct kiln_decompress;

/*
 * Start decompressing from `read`/`userdata` (both must stay valid until
 * kiln_decompress_free()). opts may be NULL (defaults). Reads the first
 * bytes to detect the format (in the caller's thread), then starts the
 * thread. On success *ret owns a decompressor to free with
 * kiln_decompress_free(). Errors: KILN_EIO (the source failed).
 */
int kiln_decompress_open(struct kiln_decompress **ret, kiln_read_fn read, void *userdata,
                         const struct kiln_decompress_opts *opts, struct kiln_error **err);

/* The detected format (valid after open). */
enum kiln_compression kiln_decompress_format(const struct kiln_decompress *d);

/*
 * Take the next block of uncompressed data: *ret_buf points at it, valid
 * until the next call to kiln_decompress_next()/_read()/_finish()/_free(),
 * and the return value is its length (> 0). Returns 0 at the end of the
 * stream (the whole stream was checked: CRCs, sizes, trailer), or a negative
 * code: KILN_EINVAL for a corrupt or truncated stream (the message names the
 * problem and the offset), KILN_EIO when the source failed, KILN_ETOOBIG when
 * max_output was passed. An error is sticky: later calls return it again.
 */
ssize_t kiln_decompress_next(struct kiln_decompress *d, const void **ret_buf,
                             struct kiln_error **err);

/* Copying variant: up to n bytes into buf; same returns as _next(). */
ssize_t kiln_decompress_read(struct kiln_decompress *d, void *buf, size_t n,
                             struct kiln_error **err);

/*
 * Read and discard the rest of the stream (so the digests cover it all),
 * then fill *ret (may be NULL). Errors as for _next().
 */
int kiln_decompress_finish(struct kiln_decompress *d, struct kiln_decompress_result *ret,
                           struct kiln_error **err);

/*
 * Stop the thread and free everything; NULL is fine. When the thread is in
 * the middle of a source read, this waits for that read to return.
 */
void kiln_decompress_free(struct kiln_decompress *d);

#endif
