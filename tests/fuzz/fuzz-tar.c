/*
 * Fuzz target for the layer reader: the input is a (possibly compressed) tar
 * stream, unpacked in overlay mode into one fresh directory and applied twice
 * in apply mode into another (the second pass meets the first one's tree, so
 * whiteouts and replacements have something to act on). Any input must
 * either unpack or fail with a message, without crashing, leaking memory or
 * file descriptors, or writing outside the roots: the sentinel file beside
 * them and the directories around them must stay as they were.
 */
#include "util/common.h"
#include "layer/unpack.h"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char base[64];

struct src {
    const uint8_t *p;
    size_t len, pos, chunk;
};

static ssize_t src_read(void *ud, void *buf, size_t n)
{
    struct src *s = ud;
    size_t k = s->len - s->pos;
    if (k > n)
        k = n;
    if (s->chunk && k > s->chunk)
        k = s->chunk;
    memcpy(buf, s->p + s->pos, k);
    s->pos += k;
    return (ssize_t)k;
}

static int rm_cb(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    if (flag == FTW_DP || flag == FTW_D)
        chmod(p, 0700);
    return remove(p) < 0 && errno != ENOENT ? -1 : 0;
}

static void rm_tree(const char *p)
{
    nftw(p, rm_cb, 32, FTW_DEPTH | FTW_PHYS);
}

/* The names in dir, sorted and joined with '/'. */
static char *names_of(const char *dir)
{
    struct dirent **v = NULL;
    int n = scandir(dir, &v, NULL, alphasort);
    if (n < 0)
        abort();
    char *out = kiln_xstrdup("");
    for (int i = 0; i < n; i++) {
        char *x = kiln_xasprintf("%s/%s", out, v[i]->d_name);
        free(out);
        out = x;
        free(v[i]);
    }
    free(v);
    return out;
}

static void cleanup(void)
{
    rm_tree(base);
}

static void setup(void)
{
    if (base[0])
        return;
    /* tmpfs when there is one: many small trees are made and removed */
    snprintf(base, sizeof(base), "/dev/shm/kiln-fuzz-tar-XXXXXX");
    if (!mkdtemp(base)) {
        snprintf(base, sizeof(base), "/tmp/kiln-fuzz-tar-XXXXXX");
        if (!mkdtemp(base))
            abort();
    }
    atexit(cleanup);
}

static int lowest_free_fd(void)
{
    int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        abort();
    close(fd);
    return fd;
}

static void unpack_into(const char *dir, const uint8_t *data, size_t size,
                        const struct kiln_unpack_opts *o)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        abort();
    struct src s = {data, size, 0, size > 64 ? size / 3 : 0};
    struct kiln_error *e = NULL;
    struct kiln_unpack_stats st;
    int r = kiln_unpack(fd, src_read, &s, o, &st, &e);
    if (r < 0 && (!e || !e->msg || e->code <= 0 || r != -e->code))
        abort();
    if (r >= 0 && (e || strncmp(st.stream.diff_id, "sha256:", 7) != 0))
        abort();
    kiln_error_free(e);
    close(fd);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    setup();
    int fd0 = lowest_free_fd();
    _cleanup_free_ char *box = kiln_xasprintf("%s/box", base);
    _cleanup_free_ char *r1 = kiln_xasprintf("%s/r1", box);
    _cleanup_free_ char *r2 = kiln_xasprintf("%s/r2", box);
    _cleanup_free_ char *out = kiln_xasprintf("%s/outside", box);
    rm_tree(box);
    if (mkdir(box, 0755) < 0 || mkdir(r1, 0755) < 0 || mkdir(r2, 0755) < 0)
        abort();
    int ofd = open(out, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (ofd < 0 || write(ofd, "sentinel", 8) != 8)
        abort();
    close(ofd);

    /* small caps keep each run quick; the layout of the box is checked after */
    struct kiln_unpack_opts o = {.mode = KILN_UNPACK_OVERLAY,
                                 .max_bytes = 8 << 20,
                                 .max_entries = 4096,
                                 .no_thread = size & 1,
                                 .no_openat2 = (size & 2) != 0};
    unpack_into(r1, data, size, &o);
    o.mode = KILN_UNPACK_APPLY;
    unpack_into(r2, data, size, &o);
    o.no_openat2 = !o.no_openat2;
    unpack_into(r2, data, size, &o);

    _cleanup_free_ char *names = names_of(box);
    _cleanup_free_ char *top = names_of(base);
    if (strcmp(names, "/./../outside/r1/r2") != 0 || strcmp(top, "/./../box") != 0)
        abort();
    char buf[16] = {0};
    int rfd = open(out, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (rfd < 0 || read(rfd, buf, sizeof(buf)) != 8 || memcmp(buf, "sentinel", 8) != 0 ||
        fstat(rfd, &st) < 0 || st.st_nlink != 1)
        abort();
    close(rfd);
    rm_tree(box);
    if (lowest_free_fd() != fd0)
        abort();
    return 0;
}
