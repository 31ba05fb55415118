#include "util/common.h"
#include "layer/compress.h"
#include "oci/mediatype.h"
#include "util/buf.h"
#include "util/sha256.h"
#include "tap.h"

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

static char tmpdir[] = "/tmp/kiln-test-compress-XXXXXX";

static uint64_t rng_state = 88172645463325252ULL;

static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* Mixed test data: words (compressible), random bytes, zero runs. */
static uint8_t *make_data(size_t n, int kind)
{
    static const char *words[] = {"import ", "def ", "return ", "self", "(",
                                  "):\n",    "    ", "numpy",   "kiln", "layer",
                                  "=",       " ",    "0x1f",    "\n",   "#!/bin/sh"};
    uint8_t *p = kiln_xmalloc(n ? n : 1);
    size_t i = 0;
    while (i < n) {
        int k = kind >= 0 ? kind : (int)(rnd() % 3);
        size_t run = kind >= 0 ? n - i : 1000 + rnd() % 300000;
        if (run > n - i)
            run = n - i;
        if (k == 0) {
            for (size_t j = 0; j < run;) {
                const char *w = words[rnd() % KILN_ARRAY_SIZE(words)];
                for (; *w && j < run; w++, j++)
                    p[i + j] = (uint8_t)*w;
            }
        } else if (k == 1) {
            for (size_t j = 0; j < run; j++)
                p[i + j] = (uint8_t)rnd();
        } else {
            memset(p + i, 0, run);
        }
        i += run;
    }
    return p;
}

static int buf_sink(void *userdata, const void *data, size_t len, struct kiln_error **err)
{
    return kiln_buf_add(userdata, data, len) < 0 ? kiln_error_set(err, KILN_ETOOBIG, 0, "sink full")
                                                 : 0;
}

struct sink_fail {
    size_t after;
    size_t seen;
};

static int failing_sink(void *userdata, const void *data, size_t len, struct kiln_error **err)
{
    struct sink_fail *f = userdata;
    f->seen += len;
    if (f->seen > f->after)
        return kiln_error_set(err, KILN_ENET, 0, "upload 'x': connection reset");
    return 0;
}

/* Compress `in` with o, written in pieces of varying size (step 0: one piece). */
static int compress_buf(const struct kiln_compress_options *o, const uint8_t *in, size_t n,
                        size_t step, struct kiln_buf *out, struct kiln_compress_result *res)
{
    struct kiln_compressor *c = NULL;
    struct kiln_error *e = NULL;
    int r = kiln_compress_new(o, buf_sink, out, &c, &e);
    for (size_t off = 0; r >= 0 && off < n;) {
        size_t len = step ? 1 + rnd() % step : n;
        if (len > n - off)
            len = n - off;
        r = kiln_compress_write(c, in + off, len, &e);
        off += len;
    }
    if (r >= 0)
        r = kiln_compress_finish(c, res, &e);
    if (r < 0)
        printf("# error: %s\n", e ? e->msg : "?");
    kiln_error_free(e);
    kiln_compress_free(c);
    return r;
}

/* Inflate a gzip stream that must be exactly one member covering all of `gz`. */
static int gunzip_one_member(const struct kiln_buf *gz, struct kiln_buf *out)
{
    z_stream z = {0};
    if (inflateInit2(&z, 15 + 16) != Z_OK)
        return -1;
    z.next_in = (Bytef *)gz->buf;
    z.avail_in = (uInt)gz->len;
    uint8_t tmp[65536];
    int r;
    do {
        z.next_out = tmp;
        z.avail_out = sizeof(tmp);
        r = inflate(&z, Z_NO_FLUSH);
        if (r != Z_OK && r != Z_STREAM_END)
            break;
        kiln_buf_add(out, tmp, sizeof(tmp) - z.avail_out);
    } while (r != Z_STREAM_END);
    int rest = (int)z.avail_in;
    inflateEnd(&z);
    return r == Z_STREAM_END && rest == 0 ? 0 : -1;
}

static int unzstd(const struct kiln_buf *zs, struct kiln_buf *out)
{
    ZSTD_DStream *d = ZSTD_createDStream();
    ZSTD_inBuffer in = {zs->buf, zs->len, 0};
    uint8_t tmp[65536];
    size_t r = 1;
    while (in.pos < in.size) {
        ZSTD_outBuffer o = {tmp, sizeof(tmp), 0};
        r = ZSTD_decompressStream(d, &o, &in);
        if (ZSTD_isError(r))
            break;
        kiln_buf_add(out, tmp, o.pos);
    }
    for (;;) { /* flush what is left */
        ZSTD_outBuffer o = {tmp, sizeof(tmp), 0};
        if (ZSTD_isError(r) || r == 0)
            break;
        r = ZSTD_decompressStream(d, &o, &in);
        if (ZSTD_isError(r) || o.pos == 0)
            break;
        kiln_buf_add(out, tmp, o.pos);
    }
    ZSTD_freeDStream(d);
    return ZSTD_isError(r) || r != 0 ? -1 : 0;
}

static void digest_of(const void *p, size_t n, char out[KILN_DIGEST_BUFSZ])
{
    kiln_digest_buf(p, n, out);
}

/* Run argv with stdin from `path`; returns the exit status, 127 when not found. */
static int run_tool(const char *path, const char *const argv[])
{
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        int devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
        if (fd < 0 || devnull < 0 || dup2(fd, 0) < 0 || dup2(devnull, 1) < 0)
            _exit(126);
        execvp(argv[0], (char *const *)argv);
        _exit(127);
    }
    int st = 0;
    if (pid < 0 || waitpid(pid, &st, 0) < 0)
        return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void write_file(const char *path, const struct kiln_buf *b)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || write(fd, b->buf, b->len) != (ssize_t)b->len)
        printf("# cannot write %s\n", path);
    if (fd >= 0)
        close(fd);
}

static void check_tool(const char *label, const char *file, const char *const argv[])
{
    int st = run_tool(file, argv);
    if (st == 127)
        ok(1, "# SKIP %s: '%s' not installed", label, argv[0]);
    else
        is_int(st, 0, "%s", label);
}

static void test_gzip_roundtrips(void)
{
    static const size_t sizes[] = {0,
                                   1,
                                   100,
                                   65535,
                                   65536,
                                   65537,
                                   300000,
                                   512 << 10,
                                   (512 << 10) + 1,
                                   3u << 20,
                                   (5u << 20) + 12345};
    for (size_t si = 0; si < KILN_ARRAY_SIZE(sizes); si++) {
        for (int kind = -1; kind < 3; kind++) {
            size_t n = sizes[si];
            uint8_t *in = make_data(n, kind);
            struct kiln_compress_options o = {.algo = KILN_COMPRESSION_GZIP,
                                              .block_size = (si & 1) ? 65536 : 0,
                                              .level = (int)(si % 4) * 3 + 1};
            struct kiln_buf gz = KILN_BUF_INIT, plain = KILN_BUF_INIT;
            struct kiln_compress_result res;
            int r = compress_buf(&o, in, n, n > 100000 ? 200000 : 0, &gz, &res);
            char want_diff[KILN_DIGEST_BUFSZ], want_dig[KILN_DIGEST_BUFSZ];
            digest_of(in, n, want_diff);
            digest_of(gz.buf, gz.len, want_dig);
            bool good = r >= 0 && gunzip_one_member(&gz, &plain) == 0 && plain.len == n &&
                        memcmp(plain.buf, in, n) == 0 && strcmp(res.diff_id, want_diff) == 0 &&
                        strcmp(res.digest, want_dig) == 0 && res.size == gz.len &&
                        res.uncompressed_size == n;
            ok(good, "gzip %zu bytes kind %d level %d block %zu: one member, round trip, digests",
               n, kind, o.level, o.block_size);
            kiln_buf_release(&gz);
            kiln_buf_release(&plain);
            free(in);
        }
    }
}

static void test_determinism(void)
{
    size_t n = (9u << 20) + 777;
    uint8_t *in = make_data(n, -1);
    char first[KILN_DIGEST_BUFSZ] = "";
    bool same = true;
    for (int t = 1; t <= 4; t++) {
        struct kiln_compress_options o = {.algo = KILN_COMPRESSION_GZIP, .threads = t};
        struct kiln_buf gz = KILN_BUF_INIT;
        struct kiln_compress_result res;
        int r = compress_buf(&o, in, n, t == 1 ? 0 : (size_t)t * 5000, &gz, &res);
        if (r < 0)
            same = false;
        else if (!first[0])
            memcpy(first, res.digest, sizeof(first));
        else if (strcmp(first, res.digest) != 0)
            same = false;
        kiln_buf_release(&gz);
    }
    ok(same, "gzip output is the same with 1..4 threads and any write sizes");

    first[0] = '\0';
    same = true;
    for (int t = 1; t <= 3; t++) {
        struct kiln_compress_options o = {.algo = KILN_COMPRESSION_ZSTD, .threads = t};
        struct kiln_buf zs = KILN_BUF_INIT, plain = KILN_BUF_INIT;
        struct kiln_compress_result res;
        int r = compress_buf(&o, in, n, t == 1 ? 0 : 70000, &zs, &res);
        if (r < 0 || unzstd(&zs, &plain) < 0 || plain.len != n || memcmp(plain.buf, in, n) != 0)
            same = false;
        else if (!first[0])
            memcpy(first, res.digest, sizeof(first));
        else if (strcmp(first, res.digest) != 0)
            same = false;
        kiln_buf_release(&zs);
        kiln_buf_release(&plain);
    }
    ok(same, "zstd round trips and gives the same output with 1..3 threads");
    free(in);
}

static void test_zstd_none(void)
{
    static const size_t sizes[] = {0, 1, 4096, 300000, (3u << 20) + 5};
    for (size_t si = 0; si < KILN_ARRAY_SIZE(sizes); si++) {
        size_t n = sizes[si];
        uint8_t *in = make_data(n, -1);
        char want_diff[KILN_DIGEST_BUFSZ], want_dig[KILN_DIGEST_BUFSZ];
        digest_of(in, n, want_diff);

        struct kiln_compress_options o = {.algo = KILN_COMPRESSION_ZSTD};
        struct kiln_buf zs = KILN_BUF_INIT, plain = KILN_BUF_INIT;
        struct kiln_compress_result res;
        int r = compress_buf(&o, in, n, 100000, &zs, &res);
        digest_of(zs.buf, zs.len, want_dig);
        ok(r >= 0 && unzstd(&zs, &plain) == 0 && plain.len == n && memcmp(plain.buf, in, n) == 0 &&
               strcmp(res.diff_id, want_diff) == 0 && strcmp(res.digest, want_dig) == 0 &&
               res.size == zs.len && strcmp(res.media_type, KILN_MT_OCI_LAYER_TAR_ZST) == 0,
           "zstd %zu bytes: round trip, digests, media type", n);

        o.algo = KILN_COMPRESSION_NONE;
        struct kiln_buf raw = KILN_BUF_INIT;
        r = compress_buf(&o, in, n, 100000, &raw, &res);
        ok(r >= 0 && raw.len == n && memcmp(raw.buf, in, n) == 0 &&
               strcmp(res.diff_id, want_diff) == 0 && strcmp(res.digest, want_diff) == 0 &&
               res.size == n && strcmp(res.media_type, KILN_MT_OCI_LAYER_TAR) == 0,
           "none %zu bytes: output is the input, digest is the diff_id", n);
        kiln_buf_release(&zs);
        kiln_buf_release(&plain);
        kiln_buf_release(&raw);
        free(in);
    }
}

static void test_tools(void)
{
    size_t n = (6u << 20) + 99;
    uint8_t *in = make_data(n, -1);
    struct kiln_buf gz = KILN_BUF_INIT, zs = KILN_BUF_INIT;
    struct kiln_compress_result res;
    struct kiln_compress_options o = {.algo = KILN_COMPRESSION_GZIP};
    compress_buf(&o, in, n, 0, &gz, &res);
    o.algo = KILN_COMPRESSION_ZSTD;
    compress_buf(&o, in, n, 0, &zs, &res);

    char *gzpath = kiln_xasprintf("%s/x.gz", tmpdir);
    char *zspath = kiln_xasprintf("%s/x.zst", tmpdir);
    write_file(gzpath, &gz);
    write_file(zspath, &zs);
    check_tool("gzip -t accepts the stream", gzpath, (const char *[]){"gzip", "-t", NULL});
    check_tool("pigz -t accepts the stream", gzpath, (const char *[]){"pigz", "-t", NULL});
    check_tool("python gzip reads one member with the right bytes", gzpath,
               (const char *[]){"python3", "-c",
                                "import gzip,sys,hashlib,zlib\n"
                                "d=sys.stdin.buffer.read()\n"
                                "o=zlib.decompressobj(31); p=o.decompress(d)\n"
                                "assert o.eof and not o.unused_data\n"
                                "assert gzip.decompress(d)==p\n"
                                "print(hashlib.sha256(p).hexdigest())",
                                NULL});
    check_tool("zstd -t accepts the stream", zspath, (const char *[]){"zstd", "-q", "-t", NULL});
    free(gzpath);
    free(zspath);
    kiln_buf_release(&gz);
    kiln_buf_release(&zs);
    free(in);
}

static void test_fd_output(void)
{
    char *path = kiln_xasprintf("%s/fd.gz", tmpdir);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    struct kiln_compressor *c = NULL;
    struct kiln_error *e = NULL;
    struct kiln_compress_result res = {0};
    size_t n = 2u << 20;
    uint8_t *in = make_data(n, 0);
    int r = kiln_compress_new_fd(NULL, fd, &c, &e);
    if (r >= 0)
        r = kiln_compress_write(c, in, n, &e);
    if (r >= 0)
        r = kiln_compress_finish(c, &res, &e);
    kiln_compress_free(c);
    close(fd);
    is_int(r, 0, "compress to an fd");

    /* the digest is the sha256 of the file */
    struct kiln_buf file = KILN_BUF_INIT;
    fd = open(path, O_RDONLY | O_CLOEXEC);
    uint8_t tmp[65536];
    ssize_t k;
    while (fd >= 0 && (k = read(fd, tmp, sizeof(tmp))) > 0)
        kiln_buf_add(&file, tmp, (size_t)k);
    if (fd >= 0)
        close(fd);
    char want[KILN_DIGEST_BUFSZ];
    digest_of(file.buf, file.len, want);
    is_str(res.digest, want, "digest is the sha256 of the written file");
    is_int(res.size, file.len, "size is the file size");
    is_str(res.media_type, KILN_MT_OCI_LAYER_TAR_GZ, "gzip media type");
    kiln_buf_release(&file);
    free(in);
    free(path);
    kiln_error_free(e);
}

static void test_errors(void)
{
    struct kiln_compressor *c = NULL;
    struct kiln_error *e = NULL;
    struct kiln_compress_options o = {.algo = KILN_COMPRESSION_GZIP, .level = 13};
    is_int(kiln_compress_new(&o, buf_sink, NULL, &c, &e), -KILN_EINVAL, "gzip level 13 refused");
    is_str(e ? e->msg : NULL, "invalid gzip level '13': use 1 to 12", "level message");
    o = (struct kiln_compress_options){.algo = KILN_COMPRESSION_ZSTD, .level = 22};
    is_int(kiln_compress_new(&o, buf_sink, NULL, &c, &e), -KILN_EINVAL, "zstd level 22 refused");
    o = (struct kiln_compress_options){.block_size = 1000};
    is_int(kiln_compress_new(&o, buf_sink, NULL, &c, &e), -KILN_EINVAL, "tiny block refused");
    o = (struct kiln_compress_options){.threads = -1};
    is_int(kiln_compress_new(&o, buf_sink, NULL, &c, &e), -KILN_EINVAL, "negative threads refused");
    o = (struct kiln_compress_options){.algo = (enum kiln_compression)7};
    is_int(kiln_compress_new(&o, buf_sink, NULL, &c, &e), -KILN_EINVAL, "unknown algorithm");
    o = (struct kiln_compress_options){.algo = KILN_COMPRESSION_UNKNOWN};
    is_int(kiln_compress_new(&o, buf_sink, NULL, &c, &e), -KILN_EINVAL, "KILN_COMPRESSION_UNKNOWN");
    ok(kiln_compression_media_type(KILN_COMPRESSION_UNKNOWN, false) == NULL,
       "no media type for an unknown compression");
    is_str(kiln_compression_name(KILN_COMPRESSION_UNKNOWN), "unknown", "unknown name");

    /* a failing sink fails the write (or the finish) and the error sticks */
    for (int a = 0; a < 3; a++) {
        struct sink_fail f = {.after = 100000};
        o = (struct kiln_compress_options){.algo = (enum kiln_compression)a};
        int r = kiln_compress_new(&o, failing_sink, &f, &c, &e);
        size_t n = 8u << 20;
        uint8_t *in = make_data(n, 1);
        for (size_t off = 0; r >= 0 && off < n; off += 1u << 20)
            r = kiln_compress_write(c, in + off, 1u << 20, &e);
        struct kiln_compress_result res;
        if (r >= 0)
            r = kiln_compress_finish(c, &res, &e);
        is_int(r, -KILN_ENET, "%s: sink error passed on", kiln_compression_name(o.algo));
        is_str(e ? e->msg : NULL, "upload 'x': connection reset", "%s: sink message kept",
               kiln_compression_name(o.algo));
        is_int(kiln_compress_write(c, "x", 1, &e), -KILN_ENET, "%s: the error sticks",
               kiln_compression_name(o.algo));
        is_int(kiln_compress_finish(c, &res, &e), -KILN_ENET, "%s: finish reports it too",
               kiln_compression_name(o.algo));
        kiln_compress_free(c);
        c = NULL;
        free(in);
    }

    /* freeing without finishing, with blocks in flight, is fine */
    o = (struct kiln_compress_options)KILN_COMPRESS_OPTIONS_INIT;
    struct kiln_buf sink = KILN_BUF_INIT;
    int r = kiln_compress_new(&o, buf_sink, &sink, &c, &e);
    uint8_t *in = make_data(4u << 20, -1);
    if (r >= 0)
        r = kiln_compress_write(c, in, 4u << 20, &e);
    kiln_compress_free(c);
    is_int(r, 0, "free without finish");
    free(in);
    kiln_buf_release(&sink);
    kiln_compress_free(NULL);

    enum kiln_compression a;
    is_int(kiln_compression_parse("zstd", &a, &e), 0, "parse zstd");
    is_int(a, KILN_COMPRESSION_ZSTD, "zstd parsed");
    is_int(kiln_compression_parse("lz4", &a, &e), -KILN_EINVAL, "lz4 refused");
    is_str(e ? e->msg : NULL, "invalid compression 'lz4': use gzip, zstd or none", "message");
    is_str(kiln_compression_media_type(KILN_COMPRESSION_GZIP, true), KILN_MT_DOCKER_LAYER,
           "docker gzip media type");
    ok(kiln_compression_media_type(KILN_COMPRESSION_ZSTD, true) == NULL, "no docker zstd type");
    kiln_error_free(e);
}

int main(void)
{
    if (!mkdtemp(tmpdir)) {
        printf("Bail out! mkdtemp\n");
        return 1;
    }
    test_gzip_roundtrips();
    test_determinism();
    test_zstd_none();
    test_tools();
    test_fd_output();
    test_errors();

    const char *cmd[] = {"rm", "-rf", tmpdir, NULL};
    run_tool("/dev/null", cmd);
    return tap_done();
}
