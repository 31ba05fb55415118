/* Unit tests of store/blobstore: commit, verify, concurrency, LRU gc, stale temps. */
#include "util/common.h"

#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "oci/digest.h"
#include "store/blobstore.h"
#include "tap.h"
#include "util/fs.h"

static char base[256];

static int count_entries(const char *rel)
{
    _cleanup_free_ char *p = kiln_xasprintf("%s/%s", base, rel);
    DIR *d = opendir(p);
    if (!d)
        return -1;
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)))
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
            n++;
    closedir(d);
    return n;
}

static char *blob_path(const char *digest)
{
    return kiln_xasprintf("%s/blobs/sha256/%s", base, digest + 7);
}

static void set_atime(const char *digest, time_t t)
{
    _cleanup_free_ char *p = blob_path(digest);
    struct timespec ts[2] = {{.tv_sec = t}, {.tv_nsec = UTIME_OMIT}};
    (void)utimensat(AT_FDCWD, p, ts, AT_SYMLINK_NOFOLLOW);
}

static bool read_all(int fd, char *buf, size_t len)
{
    size_t got = 0;
    while (got < len) {
        ssize_t n = read(fd, buf + got, len - got);
        if (n <= 0)
            return false;
        got += (size_t)n;
    }
    char extra;
    return read(fd, &extra, 1) == 0;
}

static void test_basic(struct kiln_blobstore *bs)
{
    struct kiln_error *err = NULL;
    ok(count_entries("blobs/sha256") == 0 && count_entries("tmp") == 0, "layout created, empty");

    const char *data = "hello, blob";
    char want[KILN_DIGEST_BUFSZ], got[KILN_DIGEST_BUFSZ];
    kiln_digest_buf(data, strlen(data), want);

    is_int(kiln_blobstore_has(bs, want, NULL, &err), 0, "absent before commit");

    struct kiln_blob_writer *w = NULL;
    is_int(kiln_blobstore_begin(bs, &w, &err), 0, "begin");
    is_int(count_entries("tmp"), 1, "a temp file while writing");
    is_int(kiln_blobstore_write(w, data, 5, &err), 0, "write part 1");
    is_int(kiln_blobstore_write(w, data + 5, strlen(data) - 5, &err), 0, "write part 2");
    is_int(kiln_blobstore_written(w), strlen(data), "written count");
    is_int(kiln_blobstore_has(bs, want, NULL, &err), 0, "not visible before commit");
    is_int(kiln_blobstore_commit(w, want, (int64_t)strlen(data), got, &err), 0, "commit");
    is_str(got, want, "commit returns the digest");
    is_int(count_entries("tmp"), 0, "temp gone after commit");

    uint64_t size = 0;
    is_int(kiln_blobstore_has(bs, want, &size, &err), 1, "has after commit");
    is_int(size, strlen(data), "has gives the size");

    _cleanup_free_ char *p = blob_path(want);
    struct stat st;
    ok(stat(p, &st) == 0 && (st.st_mode & 0777) == 0444, "blob file is read-only (0444)");

    int fd = kiln_blobstore_open_blob(bs, want, &size, &err);
    ok(fd >= 0, "open_blob");
    char buf[64] = {0};
    ok(fd >= 0 && read_all(fd, buf, strlen(data)) && strcmp(buf, data) == 0, "content reads back");
    if (fd >= 0)
        close(fd);

    /* Commit without an expected digest; the same content again is fine. */
    w = NULL;
    is_int(kiln_blobstore_begin(bs, &w, &err), 0, "begin again");
    kiln_blobstore_write(w, data, strlen(data), &err);
    is_int(kiln_blobstore_commit(w, NULL, -1, got, &err), 0, "commit an existing blob");
    is_str(got, want, "same digest");
    is_int(count_entries("tmp"), 0, "loser's temp dropped");
    is_int(count_entries("blobs/sha256"), 1, "still one blob");

    /* Write through the fd. */
    const char *data2 = "written through the fd";
    char want2[KILN_DIGEST_BUFSZ];
    kiln_digest_buf(data2, strlen(data2), want2);
    w = NULL;
    is_int(kiln_blobstore_begin(bs, &w, &err), 0, "begin for fd writes");
    int wfd = kiln_blobstore_writer_fd(w);
    ok(wfd >= 0 && kiln_fs_write_all(wfd, data2, strlen(data2)) == 0, "write to the fd");
    ok(wfd >= 0 && (fcntl(wfd, F_GETFD) & FD_CLOEXEC), "the fd is close-on-exec");
    is_int(kiln_blobstore_commit(w, want2, -1, NULL, &err), 0, "commit hashes the file");
    is_int(kiln_blobstore_has(bs, want2, NULL, &err), 1, "fd-written blob present");

    /* put() */
    is_int(kiln_blobstore_put(bs, "", 0, NULL, got, &err), 0, "put an empty blob");
    is_str(got, "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
           "empty blob digest");

    /* abort */
    w = NULL;
    is_int(kiln_blobstore_begin(bs, &w, &err), 0, "begin for abort");
    kiln_blobstore_write(w, "zz", 2, &err);
    kiln_blobstore_abort(w);
    is_int(count_entries("tmp"), 0, "abort removes the temp");

    is_int(kiln_blobstore_has(bs, "sha256:xyz", NULL, &err), -KILN_EINVAL, "invalid digest");
    kiln_error_free(err);
    err = NULL;
    is_int(
        kiln_blobstore_has(bs,
                           "sha512:0000000000000000000000000000000000000000000000000000000000000000"
                           "0000000000000000000000000000000000000000000000000000000000000000",
                           NULL, &err),
        -KILN_EUNSUPPORTED, "sha512 is unsupported");
    kiln_error_free(err);
    err = NULL;
    is_int(
        kiln_blobstore_open_blob(bs,
                                 "sha256:"
                                 "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                                 NULL, &err),
        -KILN_ENOTFOUND, "open of an absent blob");
    kiln_error_free(err);
}

static void test_mismatch(struct kiln_blobstore *bs)
{
    struct kiln_error *err = NULL;
    const char *wrong = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
    char actual[KILN_DIGEST_BUFSZ];
    kiln_digest_buf("payload", 7, actual);

    struct kiln_blob_writer *w = NULL;
    kiln_blobstore_begin(bs, &w, &err);
    kiln_blobstore_write(w, "payload", 7, &err);
    is_int(kiln_blobstore_commit(w, wrong, -1, NULL, &err), -KILN_EINVAL, "digest mismatch fails");
    ok(err && strstr(err->msg, wrong) && strstr(err->msg, actual), "message names both digests: %s",
       err ? err->msg : "");
    is_int(count_entries("tmp"), 0, "mismatch removes the temp");
    is_int(kiln_blobstore_has(bs, wrong, NULL, NULL), 0, "nothing under the expected name");
    is_int(kiln_blobstore_has(bs, actual, NULL, NULL), 0, "nothing under the actual name");
    kiln_error_free(err);
    err = NULL;

    w = NULL;
    kiln_blobstore_begin(bs, &w, &err);
    int fd = kiln_blobstore_writer_fd(w);
    kiln_fs_write_all(fd, "payload", 7);
    is_int(kiln_blobstore_commit(w, wrong, -1, NULL, &err), -KILN_EINVAL,
           "mismatch through the fd fails too");
    is_int(count_entries("tmp"), 0, "and removes the temp");
    kiln_error_free(err);
    err = NULL;

    w = NULL;
    kiln_blobstore_begin(bs, &w, &err);
    kiln_blobstore_write(w, "payload", 7, &err);
    is_int(kiln_blobstore_commit(w, actual, 8, NULL, &err), -KILN_EINVAL, "size mismatch fails");
    ok(err && strstr(err->msg, "expected 8 bytes, got 7"), "size message: %s", err ? err->msg : "");
    is_int(kiln_blobstore_has(bs, actual, NULL, NULL), 0, "nothing visible after size mismatch");
    is_int(count_entries("tmp"), 0, "no temp after size mismatch");
    kiln_error_free(err);
}

/* ---- concurrency ---- */

#define BIG_SIZE ((size_t)3 << 20)
static char *big;
static char big_digest[KILN_DIGEST_BUFSZ];

static void make_big(void)
{
    big = kiln_xmalloc(BIG_SIZE);
    uint64_t x = 88172645463325252ULL;
    for (size_t i = 0; i < BIG_SIZE; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        big[i] = (char)x;
    }
    kiln_digest_buf(big, BIG_SIZE, big_digest);
}

/* Write `big` in pieces, then commit: one writer of many. */
static int write_big(struct kiln_blobstore *bs)
{
    struct kiln_blob_writer *w = NULL;
    if (kiln_blobstore_begin(bs, &w, NULL) < 0)
        return -1;
    for (size_t off = 0; off < BIG_SIZE; off += 65536) {
        size_t n = BIG_SIZE - off < 65536 ? BIG_SIZE - off : 65536;
        if (kiln_blobstore_write(w, big + off, n, NULL) < 0) {
            kiln_blobstore_abort(w);
            return -1;
        }
    }
    return kiln_blobstore_commit(w, big_digest, (int64_t)BIG_SIZE, NULL, NULL);
}

static void *thread_writer(void *arg)
{
    return (void *)(intptr_t)write_big(arg);
}

static bool blob_is_big(struct kiln_blobstore *bs)
{
    uint64_t size = 0;
    int fd = kiln_blobstore_open_blob(bs, big_digest, &size, NULL);
    if (fd < 0)
        return false;
    char *buf = kiln_xmalloc(BIG_SIZE);
    bool good = size == BIG_SIZE && read_all(fd, buf, BIG_SIZE) && memcmp(buf, big, BIG_SIZE) == 0;
    free(buf);
    close(fd);
    return good;
}

static void test_concurrent(struct kiln_blobstore *bs)
{
    enum { N = 8 };
    pthread_t th[N];
    for (int i = 0; i < N; i++)
        pthread_create(&th[i], NULL, thread_writer, bs);
    int fails = 0;
    for (int i = 0; i < N; i++) {
        void *rv = NULL;
        pthread_join(th[i], &rv);
        if ((intptr_t)rv != 0)
            fails++;
    }
    is_int(fails, 0, "%d threads commit the same blob: all succeed", N);
    ok(blob_is_big(bs), "one good blob");
    is_int(count_entries("tmp"), 0, "no temps left by the threads");
    is_int(kiln_blobstore_verify(bs, big_digest, NULL), 0, "verify after threads");

    /* Again from two processes, each with several threads, after removing it. */
    is_int(kiln_blobstore_remove(bs, big_digest, NULL), 0, "remove before the process round");
    fflush(stdout);
    pid_t pids[2];
    for (int p = 0; p < 2; p++) {
        pids[p] = fork();
        if (pids[p] == 0) {
            struct kiln_blobstore *cbs = NULL;
            if (kiln_blobstore_open(base, 0, &cbs, NULL) < 0)
                _exit(2);
            pthread_t t[4];
            for (int i = 0; i < 4; i++)
                pthread_create(&t[i], NULL, thread_writer, cbs);
            int f = 0;
            for (int i = 0; i < 4; i++) {
                void *rv = NULL;
                pthread_join(t[i], &rv);
                f += (intptr_t)rv != 0;
            }
            kiln_blobstore_free(cbs);
            _exit(f ? 1 : 0);
        }
    }
    int bad = 0;
    for (int p = 0; p < 2; p++) {
        int status = 0;
        waitpid(pids[p], &status, 0);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            bad++;
    }
    is_int(bad, 0, "2 processes x 4 threads commit the same blob: all succeed");
    ok(blob_is_big(bs), "one good blob after the processes");
    is_int(count_entries("tmp"), 0, "no temps left by the processes");
}

/* ---- gc ---- */

static void test_gc(struct kiln_blobstore *bs)
{
    struct kiln_error *err = NULL;
    /* Start from an empty store. */
    struct kiln_blobstore_gc_options all = {.target_bytes = 0, .tmp_max_age_s = -1};
    struct kiln_blobstore_gc_stats st;
    is_int(kiln_blobstore_gc(bs, &all, &st, &err), 0, "gc everything");
    is_int(count_entries("blobs/sha256"), 0, "store empty");

    /* Four 1000-byte blobs, used at t-400, t-300, t-200, t-100 (b0 oldest). */
    char d[4][KILN_DIGEST_BUFSZ];
    char buf[1000];
    time_t now = time(NULL);
    for (int i = 0; i < 4; i++) {
        memset(buf, 'a' + i, sizeof(buf));
        kiln_blobstore_put(bs, buf, sizeof(buf), NULL, d[i], &err);
        set_atime(d[i], now - 400 + 100 * i);
    }
    /* b0 is read now: it becomes the most recent. */
    int fd = kiln_blobstore_open_blob(bs, d[0], NULL, &err);
    ok(fd >= 0, "open b0 (marks it used)");
    if (fd >= 0)
        close(fd);
    struct kiln_blobstore_entry *ents = NULL;
    size_t n = 0;
    is_int(kiln_blobstore_list(bs, &ents, &n, &err), 0, "list");
    is_int(n, 4, "four blobs listed");
    ok(n == 4 && strcmp(ents[0].digest, d[1]) == 0 && strcmp(ents[3].digest, d[0]) == 0,
       "list is oldest use first, b0 last after its read");
    ok(n == 4 && ents[0].size == 1000 && ents[0].last_used == now - 300, "size and last use");
    free(ents);

    struct kiln_blobstore_gc_options o = {.target_bytes = 2500};
    is_int(kiln_blobstore_gc(bs, &o, &st, &err), 0, "gc to 2500 bytes");
    is_int(st.blobs_removed, 2, "two blobs removed");
    is_int(st.bytes_freed, 2000, "2000 bytes freed");
    is_int(st.bytes_left, 2000, "2000 bytes left");
    ok(kiln_blobstore_has(bs, d[1], NULL, NULL) == 0 &&
           kiln_blobstore_has(bs, d[2], NULL, NULL) == 0,
       "the two least recently used (b1, b2) went");
    ok(kiln_blobstore_has(bs, d[3], NULL, NULL) == 1 &&
           kiln_blobstore_has(bs, d[0], NULL, NULL) == 1,
       "b3 and the re-read b0 stay");

    /* In use and pinned blobs survive a gc to zero. */
    int rfd = kiln_blobstore_open_blob(bs, d[3], NULL, &err);
    ok(rfd >= 0, "hold b3 open (in use)");
    set_atime(d[0], now - 1000);
    const char *pins[] = {d[0], NULL};
    struct kiln_blobstore_gc_options z = {.target_bytes = 0, .pinned = pins};
    is_int(kiln_blobstore_gc(bs, &z, &st, &err), 0, "gc to zero with a pin and a reader");
    is_int(st.blobs_removed, 0, "nothing removed");
    is_int(st.kept_in_use, 1, "one kept in use");
    is_int(st.kept_pinned, 1, "one kept pinned");
    ok(kiln_blobstore_has(bs, d[0], NULL, NULL) == 1 &&
           kiln_blobstore_has(bs, d[3], NULL, NULL) == 1,
       "pinned and in-use blobs are present");
    char rb[1000];
    ok(rfd >= 0 && read_all(rfd, rb, sizeof(rb)) && rb[0] == 'd', "the reader still reads");
    if (rfd >= 0)
        close(rfd);
    is_int(kiln_blobstore_gc(bs, &z, &st, &err), 0, "gc to zero after the reader closed");
    is_int(st.blobs_removed, 1, "the former in-use blob is removed now");
    ok(kiln_blobstore_has(bs, d[0], NULL, NULL) == 1, "the pinned one stays");

    /* The size cap is the default target. */
    struct kiln_blobstore *capped = NULL;
    is_int(kiln_blobstore_open(base, 500, &capped, &err), 0, "open with a 500-byte cap");
    is_int(kiln_blobstore_gc(capped, NULL, &st, &err), 0, "gc with defaults");
    is_int(st.blobs_removed, 1, "the cap collects the last blob");
    is_int(kiln_blobstore_size_cap(capped), 500, "size cap kept");
    kiln_blobstore_free(capped);
    kiln_error_free(err);
}

static void test_stale_temps(struct kiln_blobstore *bs)
{
    struct kiln_error *err = NULL;
    /* A live writer whose temp looks old: kept because it is locked. */
    struct kiln_blob_writer *w = NULL;
    kiln_blobstore_begin(bs, &w, &err);
    kiln_blobstore_write(w, "live", 4, &err);
    /* A leftover of a dead writer: a plain old file in tmp/. */
    _cleanup_free_ char *dead = kiln_xasprintf("%s/tmp/0123456789abcdef", base);
    FILE *f = fopen(dead, "we");
    if (f) {
        fputs("partial", f);
        fclose(f);
    }
    _cleanup_free_ char *tdir = kiln_xasprintf("%s/tmp", base);
    DIR *dd = opendir(tdir);
    struct dirent *de;
    time_t old = time(NULL) - 7200;
    while (dd && (de = readdir(dd))) {
        if (de->d_name[0] == '.')
            continue;
        _cleanup_free_ char *p = kiln_xasprintf("%s/%s", tdir, de->d_name);
        struct timespec ts[2] = {{.tv_sec = old}, {.tv_sec = old}};
        utimensat(AT_FDCWD, p, ts, 0);
    }
    if (dd)
        closedir(dd);
    /* A fresh leftover stays (it could be a writer that did not lock yet). */
    _cleanup_free_ char *fresh = kiln_xasprintf("%s/tmp/fedcba9876543210", base);
    f = fopen(fresh, "we");
    if (f)
        fclose(f);

    struct kiln_blobstore_gc_stats st;
    is_int(kiln_blobstore_gc(bs, NULL, &st, &err), 0, "gc with the default stale age");
    is_int(st.tmp_removed, 1, "one stale temp removed");
    is_int(count_entries("tmp"), 2, "the live writer's and the fresh temp stay");
    char got[KILN_DIGEST_BUFSZ];
    is_int(kiln_blobstore_commit(w, NULL, 4, got, &err), 0, "the live writer still commits");
    is_int(kiln_blobstore_has(bs, got, NULL, NULL), 1, "its blob is present");
    struct kiln_blobstore_gc_options any = {.target_bytes = -1, .tmp_max_age_s = -1};
    is_int(kiln_blobstore_gc(bs, &any, &st, &err), 0, "gc of temps of any age");
    is_int(count_entries("tmp"), 0, "tmp is empty");
    kiln_error_free(err);
}

static void test_verify(struct kiln_blobstore *bs)
{
    struct kiln_error *err = NULL;
    char d[KILN_DIGEST_BUFSZ];
    kiln_blobstore_put(bs, "good content", 12, NULL, d, &err);
    is_int(kiln_blobstore_verify(bs, d, &err), 0, "verify an intact blob");
    _cleanup_free_ char *p = blob_path(d);
    chmod(p, 0644);
    FILE *f = fopen(p, "r+e");
    if (f) {
        fputs("bad", f);
        fclose(f);
    }
    is_int(kiln_blobstore_verify(bs, d, &err), -KILN_EINVAL, "verify finds corruption");
    ok(err && strstr(err->msg, "corrupt") && strstr(err->msg, d), "message: %s",
       err ? err->msg : "");
    is_int(kiln_blobstore_has(bs, d, NULL, NULL), 0, "the corrupt blob is removed");
    is_int(kiln_blobstore_put(bs, "good content", 12, d, NULL, &err), 0, "stored again");
    is_int(kiln_blobstore_verify(bs, d, &err), 0, "and intact");
    is_int(kiln_blobstore_remove(bs, d, &err), 0, "remove");
    is_int(kiln_blobstore_remove(bs, d, &err), -KILN_ENOTFOUND, "remove again: not found");
    is_int(kiln_blobstore_verify(bs, d, &err), -KILN_ENOTFOUND, "verify of an absent blob");
    kiln_error_free(err);
}

/* ---- gc racing writers and readers: a blob being read is never collected ---- */

static volatile int race_stop;
static int race_bad, race_reads;
/* what went wrong, when something did: counts per kind and the first message */
static int race_put, race_read, race_nlink, race_gc_err;
static char race_msg[256];
static pthread_mutex_t race_lock = PTHREAD_MUTEX_INITIALIZER;

static void race_fail(int *kind, const char *what, struct kiln_error *e)
{
    __atomic_add_fetch(kind, 1, __ATOMIC_SEQ_CST);
    __atomic_add_fetch(&race_bad, 1, __ATOMIC_SEQ_CST);
    pthread_mutex_lock(&race_lock);
    if (!race_msg[0])
        snprintf(race_msg, sizeof(race_msg), "%s%s%s", what, e ? ": " : "", e ? e->msg : "");
    pthread_mutex_unlock(&race_lock);
    kiln_error_free(e);
}

static void *race_user(void *arg)
{
    struct kiln_blobstore *bs = arg;
    unsigned seed = (unsigned)(uintptr_t)pthread_self();
    char buf[4096], rb[4096], d[KILN_DIGEST_BUFSZ];
    while (!race_stop) {
        memset(buf, 'a' + (int)(rand_r(&seed) % 3), sizeof(buf));
        struct kiln_error *e = NULL;
        if (kiln_blobstore_put(bs, buf, sizeof(buf), NULL, d, &e) < 0) {
            race_fail(&race_put, "put", e);
            continue;
        }
        int fd = kiln_blobstore_open_blob(bs, d, NULL, NULL);
        if (fd < 0)
            continue; /* collected between put and open: allowed */
        struct timespec ts = {0, (long)(rand_r(&seed) % 2000000)};
        nanosleep(&ts, NULL);
        if (pread(fd, rb, sizeof(rb), 0) != (ssize_t)sizeof(rb) || memcmp(rb, buf, sizeof(rb)))
            race_fail(&race_read, "read back other bytes", NULL);
        struct stat st;
        if (fstat(fd, &st) < 0 || st.st_nlink == 0)
            race_fail(&race_nlink, "unlinked while read", NULL);
        close(fd);
        __atomic_add_fetch(&race_reads, 1, __ATOMIC_SEQ_CST);
    }
    return NULL;
}

static void *race_gc(void *arg)
{
    struct kiln_blobstore *bs = arg;
    struct kiln_blobstore_gc_options o = {.target_bytes = 0, .tmp_max_age_s = -1};
    while (!race_stop) {
        struct kiln_error *e = NULL;
        if (kiln_blobstore_gc(bs, &o, NULL, &e) < 0)
            race_fail(&race_gc_err, "gc", e);
        else
            kiln_error_free(e);
        struct timespec ts = {0, 500000};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

static void test_race(struct kiln_blobstore *bs)
{
    pthread_t t[6];
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, race_user, bs);
    for (int i = 4; i < 6; i++)
        pthread_create(&t[i], NULL, race_gc, bs);
    struct timespec ts = {1, 500000000};
    nanosleep(&ts, NULL);
    race_stop = 1;
    for (int i = 0; i < 6; i++)
        pthread_join(t[i], NULL);
    is_int(race_bad, 0,
           "1.5 s of 4 threads writing/reading against 2 threads of gc to zero (any temp age): "
           "no failure, no blob unlinked while read (%d reads)",
           race_reads);
    if (race_bad)
        printf("#   put %d, read %d, unlinked %d, gc %d; first: %s\n", race_put, race_read,
               race_nlink, race_gc_err, race_msg);
    struct kiln_blobstore_gc_options o = {.target_bytes = 0, .tmp_max_age_s = -1};
    is_int(kiln_blobstore_gc(bs, &o, NULL, NULL), 0, "final gc");
    ok(count_entries("blobs/sha256") == 0 && count_entries("tmp") == 0,
       "everything collected afterwards");
}

int main(void)
{
    snprintf(base, sizeof(base), "%s/kiln-test-blobstore.XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(base)) {
        printf("Bail out! mkdtemp\n");
        return 1;
    }
    struct kiln_error *err = NULL;
    struct kiln_blobstore *bs = NULL;
    if (kiln_blobstore_open(base, 0, &bs, &err) < 0) {
        printf("Bail out! %s\n", err->msg);
        return 1;
    }
    is_str(kiln_blobstore_root(bs), base, "root kept");
    make_big();

    test_basic(bs);
    test_mismatch(bs);
    test_concurrent(bs);
    test_gc(bs);
    test_stale_temps(bs);
    test_verify(bs);
    test_race(bs);

    kiln_blobstore_free(bs);
    free(big);
    int rootfd = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    is_int(kiln_fs_rm_rf_at(rootfd, base + 1, NULL), 0, "clean up");
    close(rootfd);
    return tap_done();
}
