/* Unit tests of store/layerstore: extract once, failures, concurrency, refs, LRU gc, crashes. */
#include "util/common.h"

#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "store/layerstore.h"
#include "tap.h"
#include "util/fs.h"

static char base[256];
static int calls;

#define D(c)                                                                                       \
    "sha256:" c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c  \
        c c c c c c c c c c c c c c c c c c c c c c
#define DIFF1 D("1")
#define DIFF2 D("2")
#define DIFF3 D("3")
#define DIFF4 D("4")
#define DIFF5 D("5")
#define DIFF6 D("6")
#define DIFF7 D("7")

static const char *hex_of(const char *digest)
{
    return digest + 7;
}

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

static bool exists(const char *rel)
{
    _cleanup_free_ char *p = kiln_xasprintf("%s/%s", base, rel);
    struct stat st;
    return lstat(p, &st) == 0;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

static int write_file(int dirfd, const char *name, const char *content)
{
    int fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0)
        return -1;
    int r = kiln_fs_write_all(fd, content, strlen(content));
    close(fd);
    return r;
}

/* A small tree: a file, nested dirs, a symlink pointing out, a read-only dir. */
static int fill_tree(int dirfd, void *userdata, struct kiln_error **err)
{
    __atomic_add_fetch(&calls, 1, __ATOMIC_SEQ_CST);
    long delay = userdata ? *(long *)userdata : 0;
    if (delay)
        sleep_ms(delay);
    if (write_file(dirfd, "a", "layer file a") < 0 || mkdirat(dirfd, "d", 0755) < 0 ||
        mkdirat(dirfd, "d/e", 0755) < 0 || write_file(dirfd, "d/e/f", "deep") < 0 ||
        symlinkat("/etc/passwd", dirfd, "ln") < 0 || mkdirat(dirfd, "ro", 0755) < 0 ||
        write_file(dirfd, "ro/x", "x") < 0 || fchmodat(dirfd, "ro", 0555, 0) < 0)
        return kiln_error_set(err, KILN_EIO, errno, "fill");
    return 0;
}

static int fill_fail(int dirfd, void *userdata, struct kiln_error **err)
{
    __atomic_add_fetch(&calls, 1, __ATOMIC_SEQ_CST);
    (void)write_file(dirfd, "partial", "half a layer");
    (void)mkdirat(dirfd, "dir", 0755);
    return kiln_error_set(err, KILN_EINVAL, 0, "unpack 'blob': truncated tar");
}

/* Appends a line to a shared file: counts calls across processes. */
static int fill_count_file(int dirfd, void *userdata, struct kiln_error **err)
{
    const char *path = userdata;
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd >= 0) {
        (void)kiln_fs_write_all(fd, "x\n", 2);
        close(fd);
    }
    sleep_ms(150);
    return fill_tree(dirfd, NULL, err);
}

static int fill_hang(int dirfd, void *userdata, struct kiln_error **err)
{
    (void)write_file(dirfd, "started", "1");
    const char *flag = userdata;
    int fd = open(flag, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd >= 0)
        close(fd);
    for (;;)
        sleep_ms(1000);
    return 0;
}

static void test_basic(struct kiln_layerstore *ls)
{
    struct kiln_error *err = NULL;
    ok(count_entries("layers/sha256") == 0 && count_entries("locks") == 0 &&
           count_entries("tmp") == 0,
       "layout created, empty");
    char *path = NULL;
    is_int(kiln_layerstore_lookup(ls, DIFF1, &path, &err), 0, "lookup before ensure: absent");

    calls = 0;
    struct kiln_layer_ref *ref = NULL;
    is_int(kiln_layerstore_ensure(ls, DIFF1, fill_tree, NULL, &ref, &err), 1,
           "ensure extracts (returns 1)");
    is_int(calls, 1, "the callback ran once");
    ok(ref != NULL, "a ref is returned");
    _cleanup_free_ char *want = kiln_xasprintf("%s/layers/sha256/%s", base, hex_of(DIFF1));
    is_str(ref ? kiln_layer_ref_path(ref) : NULL, want, "ref path");
    is_str(ref ? kiln_layer_ref_diff_id(ref) : NULL, DIFF1, "ref diff_id");
    kiln_layerstore_release(ref);

    is_int(kiln_layerstore_lookup(ls, DIFF1, &path, &err), 1, "lookup after ensure: present");
    is_str(path, want, "lookup path");
    free(path);
    _cleanup_free_ char *rel = kiln_xasprintf("layers/sha256/%s/d/e/f", hex_of(DIFF1));
    ok(exists(rel), "the tree is in place");
    is_int(count_entries("tmp"), 0, "no temp left");

    is_int(kiln_layerstore_ensure(ls, DIFF1, fill_tree, NULL, NULL, &err), 0,
           "ensure of a present layer returns 0");
    is_int(calls, 1, "without calling the callback");

    is_int(kiln_layerstore_lookup(ls, "sha256:nothex", NULL, &err), -KILN_EINVAL,
           "invalid diff_id");
    kiln_error_free(err);
}

static void test_fail(struct kiln_layerstore *ls)
{
    struct kiln_error *err = NULL;
    calls = 0;
    is_int(kiln_layerstore_ensure(ls, DIFF2, fill_fail, NULL, NULL, &err), -KILN_EINVAL,
           "a failing callback's error is returned");
    ok(err && strstr(err->msg, "extract layer " DIFF2) && strstr(err->msg, "truncated tar"),
       "message: %s", err ? err->msg : "");
    is_int(kiln_layerstore_lookup(ls, DIFF2, NULL, NULL), 0, "nothing visible");
    is_int(count_entries("tmp"), 0, "the temp directory is removed");
    is_int(count_entries("layers/sha256"), 1, "only the first layer exists");
    kiln_error_free(err);
    err = NULL;
    struct kiln_layer_ref *ref = NULL;
    is_int(kiln_layerstore_acquire(ls, DIFF2, &ref, &err), -KILN_ENOTFOUND,
           "acquire of an absent layer");
    kiln_error_free(err);
    err = NULL;
    is_int(kiln_layerstore_ensure(ls, DIFF2, NULL, NULL, NULL, &err), -KILN_ENOTFOUND,
           "ensure without a callback of an absent layer");
    is_int(kiln_layerstore_ensure(ls, DIFF1, NULL, NULL, NULL, &err), 0,
           "ensure without a callback of a present layer");
    kiln_error_free(err);
}

struct ensure_arg {
    struct kiln_layerstore *ls;
    const char *diff_id;
    kiln_layer_fill_fn fill;
    void *userdata;
    int result;
    struct kiln_layer_ref *ref;
};

static void *thread_ensure(void *p)
{
    struct ensure_arg *a = p;
    a->result = kiln_layerstore_ensure(a->ls, a->diff_id, a->fill, a->userdata, &a->ref, NULL);
    return NULL;
}

static void test_concurrent(struct kiln_layerstore *ls)
{
    enum { N = 8 };
    long delay = 200;
    pthread_t th[N];
    struct ensure_arg args[N];
    calls = 0;
    for (int i = 0; i < N; i++) {
        args[i] = (struct ensure_arg){ls, DIFF3, fill_tree, &delay, 0, NULL};
        pthread_create(&th[i], NULL, thread_ensure, &args[i]);
    }
    int fails = 0, extracted = 0, refs = 0;
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        fails += args[i].result < 0;
        extracted += args[i].result == 1;
        refs += args[i].ref != NULL;
    }
    is_int(fails, 0, "%d threads ensure one layer: all succeed", N);
    is_int(calls, 1, "the callback ran once");
    is_int(extracted, 1, "exactly one call reports the extraction");
    is_int(refs, N, "every thread got a ref");
    struct kiln_error *err = NULL;
    is_int(kiln_layerstore_remove(ls, DIFF3, NULL, &err), -KILN_ECONFLICT,
           "remove while refs are held: in use");
    ok(err && strstr(err->msg, "in use"), "message: %s", err ? err->msg : "");
    kiln_error_free(err);
    for (int i = 0; i < N; i++)
        kiln_layerstore_release(args[i].ref);

    /* Two processes with three threads each. */
    _cleanup_free_ char *counter = kiln_xasprintf("%s/fill-calls", base);
    fflush(stdout);
    pid_t pids[2];
    for (int p = 0; p < 2; p++) {
        pids[p] = fork();
        if (pids[p] == 0) {
            struct kiln_layerstore *cls = NULL;
            if (kiln_layerstore_open(base, 0, &cls, NULL) < 0)
                _exit(2);
            pthread_t t[3];
            struct ensure_arg a[3];
            for (int i = 0; i < 3; i++) {
                a[i] = (struct ensure_arg){cls, DIFF4, fill_count_file, counter, 0, NULL};
                pthread_create(&t[i], NULL, thread_ensure, &a[i]);
            }
            int f = 0;
            for (int i = 0; i < 3; i++) {
                pthread_join(t[i], NULL);
                f += a[i].result < 0;
                kiln_layerstore_release(a[i].ref);
            }
            kiln_layerstore_free(cls);
            _exit(f ? 1 : 0);
        }
    }
    int bad = 0;
    for (int p = 0; p < 2; p++) {
        int status = 0;
        waitpid(pids[p], &status, 0);
        bad += !WIFEXITED(status) || WEXITSTATUS(status) != 0;
    }
    is_int(bad, 0, "2 processes x 3 threads ensure one layer: all succeed");
    struct stat st;
    ok(stat(counter, &st) == 0 && st.st_size == 2, "the callback ran once across processes");
    is_int(kiln_layerstore_lookup(ls, DIFF4, NULL, NULL), 1, "the layer is present");
    is_int(count_entries("tmp"), 0, "no temps left");
}

static void test_refs_and_remove(struct kiln_layerstore *ls)
{
    struct kiln_error *err = NULL;
    struct kiln_layer_ref *r1 = NULL, *r2 = NULL;
    is_int(kiln_layerstore_acquire(ls, DIFF1, &r1, &err), 0, "acquire");
    is_int(kiln_layerstore_acquire(ls, DIFF1, &r2, &err), 0, "acquire twice");

    struct kiln_layerstore_entry *ents = NULL;
    size_t n = 0;
    is_int(kiln_layerstore_list(ls, &ents, &n, &err), 0, "list");
    is_int(n, 3, "three layers listed");
    bool in_use = false, sized = true;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(ents[i].diff_id, DIFF1) == 0)
            in_use = ents[i].in_use;
        else if (ents[i].in_use)
            in_use = false;
        sized = sized && ents[i].size >= 4096;
    }
    ok(in_use, "list marks exactly the acquired layer in use");
    ok(sized, "every layer has a measured size");
    free(ents);

    is_int(kiln_layerstore_remove(ls, DIFF1, NULL, &err), -KILN_ECONFLICT, "remove with 2 refs");
    kiln_layerstore_release(r1);
    is_int(kiln_layerstore_remove(ls, DIFF1, NULL, &err), -KILN_ECONFLICT, "remove with 1 ref");
    kiln_layerstore_release(r2);
    uint64_t freed = 0;
    is_int(kiln_layerstore_remove(ls, DIFF1, &freed, &err), 0, "remove after release");
    ok(freed >= 4096, "bytes freed reported (%llu)", (unsigned long long)freed);
    is_int(kiln_layerstore_lookup(ls, DIFF1, NULL, NULL), 0, "gone");
    is_int(count_entries("tmp"), 0, "no temp left by the removal");
    _cleanup_free_ char *lock = kiln_xasprintf("locks/%s", hex_of(DIFF1));
    ok(!exists(lock), "its lock file is removed");
    kiln_error_free(err);
    err = NULL;
    is_int(kiln_layerstore_remove(ls, DIFF1, NULL, &err), -KILN_ENOTFOUND, "remove again");
    kiln_error_free(err);
    err = NULL;
    calls = 0;
    is_int(kiln_layerstore_ensure(ls, DIFF1, fill_tree, NULL, NULL, &err), 1,
           "ensure after removal extracts again");
    is_int(calls, 1, "callback called again");
    kiln_error_free(err);
}

static void set_used(const char *diff_id, time_t t)
{
    _cleanup_free_ char *p = kiln_xasprintf("%s/locks/%s", base, diff_id + 7);
    struct timespec ts[2] = {{.tv_nsec = UTIME_OMIT}, {.tv_sec = t}};
    (void)utimensat(AT_FDCWD, p, ts, 0);
}

static void test_gc(struct kiln_layerstore *ls)
{
    struct kiln_error *err = NULL;
    /* Layers 1, 3, 4 exist; add 5 and 6; order of use: 6 < 5 < 4 < 3 < 1. */
    kiln_layerstore_ensure(ls, DIFF5, fill_tree, NULL, NULL, &err);
    kiln_layerstore_ensure(ls, DIFF6, fill_tree, NULL, NULL, &err);
    time_t now = time(NULL);
    set_used(DIFF6, now - 500);
    set_used(DIFF5, now - 400);
    set_used(DIFF4, now - 300);
    set_used(DIFF3, now - 200);
    set_used(DIFF1, now - 100);

    struct kiln_layerstore_entry *ents = NULL;
    size_t n = 0;
    kiln_layerstore_list(ls, &ents, &n, &err);
    is_int(n, 5, "five layers");
    ok(n == 5 && strcmp(ents[0].diff_id, DIFF6) == 0 && strcmp(ents[4].diff_id, DIFF1) == 0 &&
           ents[0].last_used == now - 500,
       "listed oldest use first");
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += ents[i].size;
    uint64_t keep = n == 5 ? total - ents[0].size - ents[1].size : 0;
    free(ents);

    struct kiln_layerstore_gc_options o = {.target_bytes = (int64_t)keep};
    struct kiln_layerstore_gc_stats st;
    is_int(kiln_layerstore_gc(ls, &o, &st, &err), 0, "gc to the size of the 3 newest");
    is_int(st.layers_removed, 2, "two layers removed");
    ok(kiln_layerstore_lookup(ls, DIFF6, NULL, NULL) == 0 &&
           kiln_layerstore_lookup(ls, DIFF5, NULL, NULL) == 0,
       "the two least recently used went");
    ok(kiln_layerstore_lookup(ls, DIFF4, NULL, NULL) == 1, "the next one stays");
    is_int(st.bytes_left, keep, "bytes left = target");

    /* A use refreshes the order: acquire 4, then hold 3 in use and pin 1. */
    struct kiln_layer_ref *r4 = NULL, *r3 = NULL;
    kiln_layerstore_acquire(ls, DIFF4, &r4, &err);
    kiln_layerstore_release(r4);
    kiln_layerstore_acquire(ls, DIFF3, &r3, &err);
    const char *pins[] = {DIFF1, NULL};
    struct kiln_layerstore_gc_options z = {.target_bytes = 0, .pinned = pins};
    is_int(kiln_layerstore_gc(ls, &z, &st, &err), 0, "gc to zero with a pin and a ref");
    is_int(st.layers_removed, 1, "one layer removed (the refreshed one: nothing else is free)");
    is_int(st.kept_in_use, 1, "one kept in use");
    is_int(st.kept_pinned, 1, "one kept pinned");
    ok(kiln_layerstore_lookup(ls, DIFF3, NULL, NULL) == 1 &&
           kiln_layerstore_lookup(ls, DIFF1, NULL, NULL) == 1,
       "in-use and pinned layers stay");
    kiln_layerstore_release(r3);
    is_int(kiln_layerstore_gc(ls, &z, &st, &err), 0, "gc to zero after release");
    is_int(st.layers_removed, 1, "the released one goes");
    is_int(st.layers_left, 1, "only the pinned one is left");

    struct kiln_layerstore *capped = NULL;
    is_int(kiln_layerstore_open(base, 1, &capped, &err), 0, "open with a 1-byte cap");
    is_int(kiln_layerstore_gc(capped, NULL, &st, &err), 0, "gc with the cap as target");
    is_int(st.layers_removed, 1, "the cap collects the last layer");
    is_int(count_entries("layers/sha256"), 0, "no layers left");
    is_int(count_entries("locks"), 0, "orphan lock files swept");
    kiln_layerstore_free(capped);
    kiln_error_free(err);
}

/* A child killed with SIGKILL mid-extraction leaves only a temp that gc removes. */
static void test_crash(struct kiln_layerstore *ls)
{
    struct kiln_error *err = NULL;
    _cleanup_free_ char *flag = kiln_xasprintf("%s/started", base);
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        struct kiln_layerstore *cls = NULL;
        if (kiln_layerstore_open(base, 0, &cls, NULL) < 0)
            _exit(2);
        kiln_layerstore_ensure(cls, DIFF7, fill_hang, flag, NULL, NULL);
        _exit(3);
    }
    struct stat st;
    for (int i = 0; i < 500 && stat(flag, &st) < 0; i++)
        sleep_ms(10);
    ok(stat(flag, &st) == 0, "the child is extracting");
    kill(pid, SIGKILL);
    int status = 0;
    waitpid(pid, &status, 0);
    ok(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "killed with SIGKILL");
    is_int(kiln_layerstore_lookup(ls, DIFF7, NULL, NULL), 0, "nothing visible after the crash");
    is_int(count_entries("layers/sha256"), 0, "no layer directory");
    is_int(count_entries("tmp"), 1, "one leftover temp");

    struct kiln_layerstore_gc_stats gs;
    is_int(kiln_layerstore_gc(ls, NULL, &gs, &err), 0, "gc with the default stale age");
    is_int(gs.tmp_removed, 0, "a fresh leftover is kept");
    calls = 0;
    is_int(kiln_layerstore_ensure(ls, DIFF7, fill_tree, NULL, NULL, &err), 1,
           "the next ensure extracts (the dead child's lock is gone)");
    is_int(calls, 1, "callback ran");
    struct kiln_layerstore_gc_options any = {.target_bytes = -1, .tmp_max_age_s = -1};
    is_int(kiln_layerstore_gc(ls, &any, &gs, &err), 0, "gc of temps of any age");
    is_int(gs.tmp_removed, 1, "the leftover is removed");
    ok(gs.tmp_bytes_freed > 0, "its size is reported");
    is_int(count_entries("tmp"), 0, "tmp is empty");
    is_int(kiln_layerstore_lookup(ls, DIFF7, NULL, NULL), 1, "the good layer stays");
    kiln_error_free(err);
}

/* ---- gc racing ensure/ref users: a ref'd layer never vanishes ---- */

static volatile int race_stop;
static int race_bad, race_uses;
static const char *const race_ids[] = {DIFF1, DIFF2, DIFF3};

static void *race_user(void *arg)
{
    struct kiln_layerstore *ls = arg;
    unsigned seed = (unsigned)(uintptr_t)pthread_self();
    while (!race_stop) {
        const char *id = race_ids[rand_r(&seed) % 3];
        struct kiln_layer_ref *ref = NULL;
        if (kiln_layerstore_ensure(ls, id, fill_tree, NULL, &ref, NULL) < 0) {
            __atomic_add_fetch(&race_bad, 1, __ATOMIC_SEQ_CST);
            continue;
        }
        _cleanup_free_ char *f = kiln_xasprintf("%s/d/e/f", kiln_layer_ref_path(ref));
        sleep_ms(rand_r(&seed) % 3);
        struct stat st;
        if (stat(f, &st) < 0)
            __atomic_add_fetch(&race_bad, 1, __ATOMIC_SEQ_CST);
        kiln_layerstore_release(ref);
        __atomic_add_fetch(&race_uses, 1, __ATOMIC_SEQ_CST);
    }
    return NULL;
}

static void *race_gc(void *arg)
{
    struct kiln_layerstore *ls = arg;
    struct kiln_layerstore_gc_options o = {.target_bytes = 0, .tmp_max_age_s = -1};
    while (!race_stop) {
        if (kiln_layerstore_gc(ls, &o, NULL, NULL) < 0)
            __atomic_add_fetch(&race_bad, 1, __ATOMIC_SEQ_CST);
        sleep_ms(1);
    }
    return NULL;
}

static void test_race(struct kiln_layerstore *ls)
{
    pthread_t t[6];
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, race_user, ls);
    for (int i = 4; i < 6; i++)
        pthread_create(&t[i], NULL, race_gc, ls);
    sleep_ms(1500);
    race_stop = 1;
    for (int i = 0; i < 6; i++)
        pthread_join(t[i], NULL);
    is_int(race_bad, 0,
           "1.5 s of 4 threads ensuring/using layers against 2 threads of gc to zero (any temp "
           "age): no failure, no layer vanished under a ref (%d uses)",
           race_uses);
    struct kiln_layerstore_gc_options o = {.target_bytes = 0, .tmp_max_age_s = -1};
    struct kiln_layerstore_gc_stats st;
    is_int(kiln_layerstore_gc(ls, &o, &st, NULL), 0, "final gc");
    ok(count_entries("layers/sha256") == 0 && count_entries("tmp") == 0 &&
           count_entries("locks") == 0,
       "everything collected afterwards");
}

int main(void)
{
    snprintf(base, sizeof(base), "%s/kiln-test-layerstore.XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(base)) {
        printf("Bail out! mkdtemp\n");
        return 1;
    }
    struct kiln_error *err = NULL;
    struct kiln_layerstore *ls = NULL;
    if (kiln_layerstore_open(base, 0, &ls, &err) < 0) {
        printf("Bail out! %s\n", err->msg);
        return 1;
    }
    is_str(kiln_layerstore_root(ls), base, "root kept");

    test_basic(ls);
    test_fail(ls);
    test_concurrent(ls);
    test_refs_and_remove(ls);
    test_gc(ls);
    test_crash(ls);
    test_race(ls);

    kiln_layerstore_free(ls);
    int rootfd = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    is_int(kiln_fs_rm_rf_at(rootfd, base + 1, NULL), 0, "clean up");
    close(rootfd);
    return tap_done();
}
