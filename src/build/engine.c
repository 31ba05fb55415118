#include "util/common.h"

#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/file.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/socket.h>
#include <time.h>

#include "build/engine.h"
#include "build/layers.h"
#include "build/overlay.h"
#include "build/runtime.h"
#include "build/stepcache.h"
#include "build/verify.h"
#include "layer/decompress.h"
#include "layer/pack.h"
#include "oci/config.h"
#include "oci/mediatype.h"
#include "oci/reference.h"
#include "registry/transfer.h"
#include "spec/revision.h"
#include "store/blobstore.h"
#include "store/layerstore.h"
#include "util/buf.h"
#include "util/fs.h"
#include "util/sha256.h"
#include "kiln/version.h"

struct ctx {
    const struct kiln_spec *spec;
    const struct kiln_build_options *o;
    struct kiln_build_result *res;
    struct kiln_blobstore *bs;
    struct kiln_layerstore *ls;
    char *store_dir, *steps_dir, *builds_dir, *runtime_dir;
    char *runtime;
    /* this build's scratch dir, locked while it lives */
    int build_fd;
    char *build_dir;
    char *init_dir; /* mount points for the runtime, on top of the lower dirs */
    /* registries */
    struct kiln_registry_options base_ro, push_ro;
    struct kiln_http *http; /* shared by base_ro and (same options) push_ro, or NULL */
    char *schemes_text;     /* DATA/cache/http-schemes as read, or NULL */
    struct kiln_ref base_ref;
    char *base_repo_ref; /* domain/path, for transfers */
    struct kiln_registry *base_reg;
    struct kiln_image_info info;
    /* plan and what each step produced */
    struct kiln_plan plan;
    struct kiln_step_record *recs;
    /* layers held in the layer store (lower dirs), base first */
    struct kiln_layer_ref **refs;
    size_t n_refs;
    /* the last lines of the running step */
    char *tail[KILN_BUILD_TAIL_LINES];
    size_t tail_next, tail_n;
    time_t last_pull_log;
    pthread_mutex_t log_lock; /* on_log calls, pushed_bytes, cache_off, pushes[].pushed */
    /* the shared step cache (o->cache_repo), or cache_reg NULL */
    struct kiln_ref cache_ref; /* domain and path */
    char *cache_name;          /* "domain/path", for messages */
    struct kiln_registry_options cache_ro;
    struct kiln_registry *cache_reg;
    bool cache_off;            /* the registry failed: not used for the rest of the build */
    struct cache_push *pushes; /* one slot per step */
};

static void say(struct ctx *c, enum kiln_build_log kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void say(struct ctx *c, enum kiln_build_log kind, const char *fmt, ...)
{
    if (!c->o->on_log)
        return;
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    int n = vasprintf(&s, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    /* push threads and the download thread log too: one line at a time */
    pthread_mutex_lock(&c->log_lock);
    c->o->on_log(c->o->userdata, kind, s, (size_t)n);
    pthread_mutex_unlock(&c->log_lock);
    free(s);
}

static int is_cancelled(struct ctx *c)
{
    return c->o->cancelled && c->o->cancelled(c->o->userdata);
}

static int http_progress(void *ud, uint64_t received, uint64_t sent)
{
    (void)received;
    (void)sent;
    return is_cancelled(ud);
}

static int cancelled_cb(void *ud)
{
    return is_cancelled(ud);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void human_bytes(uint64_t n, char out[32])
{
    if (n >= (uint64_t)1 << 30)
        snprintf(out, 32, "%.1f GiB", (double)n / (double)((uint64_t)1 << 30));
    else if (n >= (uint64_t)1 << 20)
        snprintf(out, 32, "%.1f MiB", (double)n / (double)((uint64_t)1 << 20));
    else if (n >= 1024)
        snprintf(out, 32, "%.1f KiB", (double)n / 1024.0);
    else
        snprintf(out, 32, "%llu B", (unsigned long long)n);
}

static const char *short_digest(const char *d)
{
    const char *colon = strchr(d, ':');
    return colon ? colon + 1 : d;
}

/* ---- scratch dirs ------------------------------------------------------------- */

/* Unmount and remove a dead build's dir (its owner is gone: we hold its lock). */
static void clean_dead_build(struct ctx *c, int builds_fd, const char *name)
{
    _cleanup_free_ char *dir = kiln_xasprintf("%s/%s", c->builds_dir, name);
    /* containers first: each step dir sN holds its container's id */
    DIR *d = opendir(dir);
    bool mounted = false;
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (e->d_name[0] == '.')
                continue;
            _cleanup_free_ char *idf = kiln_xasprintf("%s/%s/container-id", dir, e->d_name);
            char id[128] = "";
            _cleanup_close_ int fd = open(idf, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
            if (fd >= 0) {
                ssize_t n = read(fd, id, sizeof(id) - 1);
                id[n > 0 ? n : 0] = 0;
            }
            if (id[0] && c->runtime) {
                const char *argv[] = {c->runtime, "--root", c->runtime_dir, "delete", "--force",
                                      id,         NULL};
                struct kiln_proc_opts po = {.argv = argv, .timeout_ms = 30000};
                int st;
                kiln_proc_run(&po, &st, NULL);
            }
            _cleanup_free_ char *merged = kiln_xasprintf("%s/%s/merged", dir, e->d_name);
            if (kiln_overlay_umount(merged, NULL) < 0)
                mounted = true;
        }
        closedir(d);
    }
    if (mounted) {
        say(c, KILN_BUILD_LOG_WARN, "cannot unmount the leftovers of build %s: kept", name);
        return;
    }
    struct kiln_error *e = NULL;
    if (kiln_fs_rm_rf_at(builds_fd, name, &e) < 0)
        say(c, KILN_BUILD_LOG_WARN, "remove leftovers of build %s: %s", name, e->msg);
    else
        say(c, KILN_BUILD_LOG_INFO, "cleaned up the leftovers of an interrupted build (%s)", name);
    kiln_error_free(e);
}

static void clean_dead_builds(struct ctx *c, int builds_fd)
{
    int dfd = dup(builds_fd);
    if (dfd < 0)
        return;
    DIR *d = fdopendir(dfd);
    if (!d) {
        close(dfd);
        return;
    }
    struct kiln_strv dead = KILN_STRV_INIT;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        int fd = openat(builds_fd, e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
            continue;
        if (flock(fd, LOCK_EX | LOCK_NB) == 0)
            kiln_strv_push(&dead, e->d_name);
        close(fd); /* the lock goes; a new build never reuses a name */
    }
    closedir(d);
    for (size_t i = 0; i < dead.n; i++)
        clean_dead_build(c, builds_fd, dead.v[i]);
    kiln_strv_release(&dead);
}

/*
 * One HTTP context for the whole build (base inspect, base layers, push),
 * when the caller gave none: its connections, and what it learnt about each
 * registry (plain http or https), serve every request. The push shares it
 * only when its HTTP options are the base's.
 */
static int share_http(struct ctx *c, struct kiln_error **err)
{
    if (c->base_ro.shared_http)
        return 0;
    int r = kiln_http_new(&c->base_ro.http, &c->http, err);
    if (r < 0)
        return r;
    c->base_ro.shared_http = c->http;
    if (!c->push_ro.shared_http && kiln_http_options_equal(&c->push_ro.http, &c->base_ro.http))
        c->push_ro.shared_http = c->http;
    return 0;
}

/*
 * DATA/cache/http-schemes: "HOST[:PORT] plain" lines naming the insecure
 * registries that spoke plain http to an earlier build, handed to the HTTP
 * context as hints (kiln_http_scheme_hint()) so that a loopback registry
 * costs no TLS attempt per build (~5 ms of a ~20 ms no-op rebuild). Only a
 * hint: a registry that has moved to TLS is found out on its first answer.
 * Written back, atomically, when this build learnt something new.
 */
#define SCHEMES_FILE "http-schemes"
#define SCHEMES_MAX  (16 * 1024)

static bool hostport_ok(const char *s, size_t n)
{
    if (n == 0 || n > 255)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
              (s[i] >= '0' && s[i] <= '9') || s[i] == '.' || s[i] == '-' || s[i] == ':' ||
              s[i] == '[' || s[i] == ']'))
            return false;
    return true;
}

static void load_scheme_hints(struct ctx *c, const char *cache_dir)
{
    if (!c->http)
        return;
    _cleanup_free_ char *path = kiln_xasprintf("%s/" SCHEMES_FILE, cache_dir);
    _cleanup_close_ int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return;
    char *text = NULL;
    if (kiln_fs_read_all(fd, SCHEMES_MAX, &text, NULL) < 0)
        return; /* unreadable or too long: no hints */
    c->schemes_text = text;
    for (char *line = text; *line;) {
        char *nl = strchr(line, '\n');
        size_t n = nl ? (size_t)(nl - line) : strlen(line);
        const char *sp = memchr(line, ' ', n);
        if (sp && n - (size_t)(sp - line) == 6 && !memcmp(sp, " plain", 6) &&
            hostport_ok(line, (size_t)(sp - line))) {
            _cleanup_free_ char *hp = kiln_xstrndup(line, (size_t)(sp - line));
            kiln_http_scheme_hint(c->http, hp, true);
        }
        if (!nl)
            break;
        line = nl + 1;
    }
}

static void add_scheme_line(void *ud, const char *hostport)
{
    struct kiln_buf *b = ud;
    if (hostport_ok(hostport, strlen(hostport)) && b->len < SCHEMES_MAX - 300)
        kiln_buf_addf(b, "%s plain\n", hostport);
}

static void save_scheme_hints(struct ctx *c)
{
    if (!c->http || !c->steps_dir)
        return;
    struct kiln_buf b = KILN_BUF_INIT;
    kiln_http_schemes_plain(c->http, add_scheme_line, &b);
    const char *old = c->schemes_text ? c->schemes_text : "";
    const char *now = b.buf ? b.buf : "";
    if (strcmp(old, now) != 0) {
        _cleanup_free_ char *cache_dir = kiln_xasprintf("%s/cache", c->o->data_dir);
        _cleanup_close_ int dfd = open(cache_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0)
            (void)kiln_fs_write_atomic(dfd, SCHEMES_FILE, now, strlen(now), 0644, NULL);
    }
    kiln_buf_release(&b);
}

static int open_state(struct ctx *c, struct kiln_error **err)
{
    const char *dd = c->o->data_dir;
    if (!dd || !*dd)
        return kiln_error_set(err, KILN_EINVAL, 0, "build: no data directory");
    int hr = share_http(c, err);
    if (hr < 0)
        return hr;
    c->store_dir = kiln_xasprintf("%s/store", dd);
    c->steps_dir = kiln_xasprintf("%s/cache/steps", dd);
    c->builds_dir = kiln_xasprintf("%s/builds", dd);
    c->runtime_dir = kiln_xasprintf("%s/runtime", dd);
    int r;
    if ((r = kiln_fs_mkdir_p_path(c->steps_dir, 0755, NULL, err)) < 0 ||
        (r = kiln_fs_mkdir_p_path(c->runtime_dir, 0700, NULL, err)) < 0 ||
        (r = kiln_blobstore_open(c->store_dir, 0, &c->bs, err)) < 0 ||
        (r = kiln_layerstore_open(c->store_dir, 0, &c->ls, err)) < 0)
        return kiln_error_prefix(err, "open kiln's data directory '%s'", dd);
    _cleanup_free_ char *cache_dir = kiln_xasprintf("%s/cache", dd);
    load_scheme_hints(c, cache_dir);
    return 0;
}

static int make_build_dir(struct ctx *c, struct kiln_error **err)
{
    int builds_fd = -1;
    int r = kiln_fs_mkdir_p_path(c->builds_dir, 0700, &builds_fd, err);
    if (r < 0)
        return r;
    clean_dead_builds(c, builds_fd);
    char name[KILN_FS_RANDOM_NAME_LEN + 1];
    int fd = kiln_fs_create_locked_temp(builds_fd, true, name, err);
    close(builds_fd);
    if (fd < 0)
        return fd;
    c->build_fd = fd;
    c->build_dir = kiln_xasprintf("%s/%s", c->builds_dir, name);
    return 0;
}

static void remove_build_dir(struct ctx *c)
{
    if (!c->build_dir)
        return;
    _cleanup_close_ int builds_fd = open(c->builds_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    const char *name = strrchr(c->build_dir, '/') + 1;
    if (builds_fd >= 0)
        kiln_fs_rm_rf_at(builds_fd, name, NULL);
    close(c->build_fd);
    c->build_fd = -1;
}

/* ---- the base image ------------------------------------------------------------- */

/*
 * The base's config: from the blob store when an earlier build kept it (it
 * is content-addressed and was checked when stored), else from the registry
 * (digest and size checked while streaming) and then kept.
 */
static int base_config(struct ctx *c, struct kiln_error **err)
{
    const struct kiln_descriptor *d = &c->info.manifest.config;
    if (d->size < 0 || (uint64_t)d->size > KILN_IMAGE_CONFIG_MAX_SIZE)
        return kiln_error_set(err, KILN_ETOOBIG, 0, "config %s: %lld bytes, more than %zu",
                              d->digest, (long long)d->size, KILN_IMAGE_CONFIG_MAX_SIZE);
    if (d->media_type && strcmp(d->media_type, KILN_MT_OCI_CONFIG) != 0 &&
        strcmp(d->media_type, KILN_MT_DOCKER_CONFIG) != 0)
        return 0; /* not an image: the caller says so */
    uint64_t have = 0;
    int fd = kiln_blobstore_open_blob(c->bs, d->digest, &have, NULL);
    if (fd >= 0) {
        char *raw = NULL;
        size_t len = 0;
        if (have == (uint64_t)d->size &&
            kiln_fs_read_all(fd, KILN_IMAGE_CONFIG_MAX_SIZE, &raw, &len) == 0 && len == have) {
            c->info.config_raw = raw;
            c->info.config_len = len;
        } else {
            free(raw);
        }
        close(fd);
    }
    _cleanup_(kiln_buf_release) struct kiln_buf b = KILN_BUF_INIT;
    kiln_buf_init(&b, KILN_IMAGE_CONFIG_MAX_SIZE);
    if (!c->info.config_raw) {
        if (!c->base_reg) {
            int r = kiln_registry_new(c->base_ref.domain, &c->base_ro, &c->base_reg, err);
            if (r < 0)
                return r;
        }
        int r = kiln_registry_blob_get(c->base_reg, c->base_ref.path, d->digest, d->size,
                                       kiln_buf_sink, &b, NULL, err);
        if (r < 0)
            return kiln_error_prefix(err, "config %s", d->digest);
        (void)kiln_blobstore_put(c->bs, b.buf, b.len, d->digest, NULL, NULL);
        c->info.config_raw = kiln_buf_detach(&b, &c->info.config_len);
    }
    int r = kiln_image_config_parse(c->info.config_raw, c->info.config_len, &c->info.config, err);
    return r < 0 ? kiln_error_prefix(err, "config %s", d->digest) : 0;
}

static int resolve_base(struct ctx *c, const char *image, struct kiln_error **err)
{
    int r = kiln_ref_parse_normalized(image, &c->base_ref, err);
    if (r < 0)
        return kiln_error_prefix(err, "image '%s'", image);
    say(c, KILN_BUILD_LOG_INFO, "resolve %s", image);
    r = kiln_transfer_inspect(image, &c->base_ro, NULL, KILN_INSPECT_MANIFEST, &c->info, err);
    if (r >= 0)
        r = base_config(c, err);
    if (r < 0)
        return kiln_error_prefix(err, "pull '%s'", image);
    if (!c->info.config.root)
        return kiln_error_set(err, KILN_EUNSUPPORTED, 0,
                              "'%s' is not a container image (config %s)", image,
                              c->info.manifest.config.media_type);
    if (kiln_image_config_n_diff_ids(&c->info.config) != c->info.manifest.n_layers)
        return kiln_error_set(
            err, KILN_EINVAL, 0, "'%s': %zu layers but %zu diff_ids in its config", image,
            c->info.manifest.n_layers, kiln_image_config_n_diff_ids(&c->info.config));
    memcpy(c->res->base_digest, c->info.manifest_digest,
           strnlen(c->info.manifest_digest, KILN_DIGEST_BUFSZ - 1));
    c->base_repo_ref = kiln_xasprintf("%s/%s", c->base_ref.domain, c->base_ref.path);
    say(c, KILN_BUILD_LOG_INFO, "base %s@%s: %zu layers", c->base_repo_ref, c->info.manifest_digest,
        c->info.manifest.n_layers);
    return 0;
}

static void pull_progress(void *ud, const char *digest, uint64_t bytes, uint64_t total)
{
    struct ctx *c = ud;
    time_t t = time(NULL);
    if (bytes != total && t == c->last_pull_log)
        return;
    c->last_pull_log = t;
    char a[32], b[32];
    human_bytes(bytes, a);
    human_bytes(total, b);
    say(c, KILN_BUILD_LOG_INFO, "pull %.12s: %s / %s", short_digest(digest), a, b);
}

static int hold_layer(struct ctx *c, struct kiln_layer_ref *ref)
{
    c->refs = kiln_xrealloc(c->refs, (c->n_refs + 1) * sizeof(*c->refs));
    c->refs[c->n_refs++] = ref;
    return 0;
}

/* Unpack the base layers into the layer store (once per diff_id) and hold them. */
static int base_layers(struct ctx *c, struct kiln_error **err)
{
    if (!c->base_reg) {
        int r = kiln_registry_new(c->base_ref.domain, &c->base_ro, &c->base_reg, err);
        if (r < 0)
            return r;
    }
    for (size_t i = 0; i < c->info.manifest.n_layers; i++) {
        const struct kiln_descriptor *d = &c->info.manifest.layers[i];
        struct kiln_layer_source src = {
            .registry = c->base_reg,
            .repo = c->base_ref.path,
            .blobs = c->bs,
            .progress = pull_progress,
            .progress_data = c,
        };
        struct kiln_layer_ref *ref = NULL;
        double t0 = now_s();
        int r = kiln_layers_ensure(c->ls, &src, d, kiln_image_config_diff_id(&c->info.config, i),
                                   &ref, err);
        if (r < 0)
            return kiln_error_prefix(err, "base layer %zu (%s)", i + 1, d->digest);
        if (r > 0)
            say(c, KILN_BUILD_LOG_INFO, "base layer %zu/%zu %.12s unpacked in %.1f s", i + 1,
                c->info.manifest.n_layers, short_digest(d->digest), now_s() - t0);
        hold_layer(c, ref);
    }
    return 0;
}

/* ---- steps ------------------------------------------------------------------------ */

static void tail_reset(struct ctx *c)
{
    for (size_t i = 0; i < KILN_BUILD_TAIL_LINES; i++) {
        free(c->tail[i]);
        c->tail[i] = NULL;
    }
    c->tail_next = c->tail_n = 0;
}

static void on_step_line(void *ud, enum kiln_proc_stream stream, const char *line, size_t len)
{
    struct ctx *c = ud;
    free(c->tail[c->tail_next]);
    c->tail[c->tail_next] = kiln_xstrndup(line, len);
    c->tail_next = (c->tail_next + 1) % KILN_BUILD_TAIL_LINES;
    if (c->tail_n < KILN_BUILD_TAIL_LINES)
        c->tail_n++;
    if (c->o->on_log) {
        /* a cache push thread may be logging at the same time */
        pthread_mutex_lock(&c->log_lock);
        c->o->on_log(c->o->userdata,
                     stream == KILN_PROC_STDERR ? KILN_BUILD_LOG_STDERR : KILN_BUILD_LOG_STDOUT,
                     line, len);
        pthread_mutex_unlock(&c->log_lock);
    }
}

static char *tail_text(struct ctx *c)
{
    struct kiln_buf b = KILN_BUF_INIT;
    size_t first = (c->tail_next + KILN_BUILD_TAIL_LINES - c->tail_n) % KILN_BUILD_TAIL_LINES;
    for (size_t i = 0; i < c->tail_n; i++) {
        kiln_buf_adds(&b, "\n  ");
        kiln_buf_adds(&b, c->tail[(first + i) % KILN_BUILD_TAIL_LINES]);
    }
    return kiln_buf_detach(&b, NULL);
}

/* The last second that RFC 3339 can write (9999-12-31T23:59:59Z). */
#define RFC3339_MAX_EPOCH INT64_C(253402300799)

/* t as "YYYY-MM-DDTHH:MM:SSZ" (UTC); t within 0..RFC3339_MAX_EPOCH. */
static void rfc3339_at(int64_t t, char out[40])
{
    time_t tt = (time_t)(t < 0 ? 0 : t > RFC3339_MAX_EPOCH ? RFC3339_MAX_EPOCH : t);
    struct tm tm;
    if (!gmtime_r(&tt, &tm))
        memset(&tm, 0, sizeof(tm));
    strftime(out, 40, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/*
 * The "created" of a step that ran now: the build's source_date_epoch when
 * set, so that a reproducible build gives the same history and image config
 * (and the same times in the shared step cache) wherever and whenever it
 * runs; else the current time.
 */
static void step_created(struct ctx *c, char out[40])
{
    rfc3339_at(c->o->source_date_epoch >= 0 ? c->o->source_date_epoch : (int64_t)time(NULL), out);
}

static int pack_write(void *ud, const void *data, size_t len, struct kiln_error **err)
{
    return kiln_blobstore_write(ud, data, len, err);
}

static int pack_progress(void *ud, uint64_t tar_bytes, uint64_t entries)
{
    (void)tar_bytes;
    (void)entries;
    return is_cancelled(ud);
}

/* Commit the upper dir into a layer in the blob store. */
static int commit_upper(struct ctx *c, const struct kiln_step *st, const char *upper,
                        struct kiln_step_record *rec, struct kiln_error **err)
{
    _cleanup_close_ int fd = open(upper, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return kiln_error_set(err, KILN_EIO, errno, "open '%s'", upper);
    struct kiln_pack_options po = {
        .compress = c->o->compress,
        .overlay = true,
        .exclude = st->exclude,
        .progress = pack_progress,
        .progress_data = c,
    };
    if (po.compress.algo == KILN_COMPRESSION_NONE)
        po.compress.algo = KILN_COMPRESSION_GZIP;
    if (c->o->source_date_epoch >= 0) {
        po.clamp_mtime = true;
        po.source_date_epoch = c->o->source_date_epoch;
    }
    struct kiln_blob_writer *w = NULL;
    int r = kiln_blobstore_begin(c->bs, &w, err);
    if (r < 0)
        return r;
    struct kiln_compress_result cr;
    struct kiln_pack_stats ps;
    r = kiln_pack_dir(fd, &po, pack_write, w, &cr, &ps, err);
    if (r < 0) {
        kiln_blobstore_abort(w);
        return r;
    }
    r = kiln_blobstore_commit(w, cr.digest, (int64_t)cr.size, NULL, err);
    if (r < 0)
        return r;
    memset(rec, 0, sizeof(*rec));
    memcpy(rec->digest, cr.digest, sizeof(rec->digest));
    memcpy(rec->diff_id, cr.diff_id, sizeof(rec->diff_id));
    rec->size = cr.size;
    snprintf(rec->media_type, sizeof(rec->media_type), "%s", cr.media_type);
    step_created(c, rec->created);
    char a[32], b[32];
    human_bytes(cr.size, a);
    human_bytes(cr.uncompressed_size, b);
    say(c, KILN_BUILD_LOG_INFO,
        "committed layer %.12s: %s (%s uncompressed, %llu files, %llu whiteouts)",
        short_digest(cr.digest), a, b, (unsigned long long)ps.files,
        (unsigned long long)(ps.whiteouts + ps.opaque_dirs));
    return 0;
}

/* The env of a step: the image's, PATH when it has none, HOME=/root, the step's. */
static void step_env(struct ctx *c, const struct kiln_step *st, struct kiln_strv *env)
{
    struct kiln_strv base = KILN_STRV_INIT;
    kiln_image_config_env(&c->info.config, &base);
    bool have_path = false;
    for (size_t i = 0; i < base.n; i++) {
        if (!strncmp(base.v[i], "HOME=", 5))
            continue;
        if (!strncmp(base.v[i], "PATH=", 5))
            have_path = true;
        kiln_strv_push(env, base.v[i]);
    }
    kiln_strv_release(&base);
    if (!have_path)
        kiln_strv_push(env, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    kiln_strv_push(env, "HOME=/root");
    for (size_t i = 0; i < st->env.n; i++)
        kiln_strv_push(env, st->env.v[i]);
}

/*
 * The runtime creates the mount points it needs (/proc, /dev, /sys,
 * /etc/resolv.conf, /etc/hosts) when the root file system lacks them; in an
 * overlay they would land in the upper dir and so in the layer. A small
 * "init" dir holding them sits on top of the lower dirs instead (docker's
 * init layer does the same), and is never committed.
 */
static int make_init_dir(struct ctx *c, struct kiln_error **err)
{
    if (c->init_dir)
        return 0;
    _cleanup_free_ char *init = kiln_xasprintf("%s/init", c->build_dir);
    static const char *const dirs[] = {"proc", "sys", "dev", "etc", NULL};
    static const char *const files[] = {"etc/resolv.conf", "etc/hosts", NULL};
    int fd = -1;
    int r = kiln_fs_mkdir_p_path(init, 0755, &fd, err);
    if (r < 0)
        return r;
    for (size_t i = 0; dirs[i] && r >= 0; i++)
        if (mkdirat(fd, dirs[i], 0755) < 0 && errno != EEXIST)
            r = kiln_error_set(err, KILN_EIO, errno, "create '%s/%s'", init, dirs[i]);
    for (size_t i = 0; files[i] && r >= 0; i++) {
        int f = openat(fd, files[i], O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
        if (f < 0)
            r = kiln_error_set(err, KILN_EIO, errno, "create '%s/%s'", init, files[i]);
        else
            close(f);
    }
    close(fd);
    if (r >= 0)
        c->init_dir = TAKE_PTR(init);
    return r;
}

/* The lower dirs of the next step, top first: the init dir, then the layers. */
static const char **lowers_of(struct ctx *c)
{
    const char **l = kiln_xcalloc(c->n_refs + 2, sizeof(*l));
    size_t n = 0;
    if (c->init_dir)
        l[n++] = c->init_dir;
    for (size_t i = 0; i < c->n_refs; i++)
        l[n++] = kiln_layer_ref_path(c->refs[c->n_refs - 1 - i]);
    return l;
}

static int write_text(const char *path, const char *text, struct kiln_error **err)
{
    _cleanup_close_ int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || kiln_fs_write_all(fd, text, strlen(text)) < 0)
        return kiln_error_set(err, KILN_EIO, errno, "write '%s'", path);
    return 0;
}

/*
 * PEP 668: is there a usr/lib/python3.X/EXTERNALLY-MANAGED in the step's tree?
 * Paths resolve inside the tree (an image's symlinks never lead out).
 */
static bool externally_managed(const char *merged)
{
    _cleanup_close_ int root = open(merged, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (root < 0)
        return false;
    struct open_how how = {.flags = O_RDONLY | O_DIRECTORY | O_CLOEXEC,
                           .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS};
    int lib = (int)syscall(SYS_openat2, root, "usr/lib", &how, sizeof(how));
    if (lib < 0)
        return false;
    DIR *d = fdopendir(lib);
    if (!d) {
        close(lib);
        return false;
    }
    bool found = false;
    struct dirent *e;
    while (!found && (e = readdir(d))) {
        if (strncmp(e->d_name, "python3", 7) != 0)
            continue;
        _cleanup_free_ char *marker = kiln_xasprintf("usr/lib/%s/EXTERNALLY-MANAGED", e->d_name);
        struct open_how fh = {.flags = O_RDONLY | O_CLOEXEC | O_PATH,
                              .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS};
        int fd = (int)syscall(SYS_openat2, root, marker, &fh, sizeof(fh));
        if (fd >= 0) {
            found = true;
            close(fd);
        }
    }
    closedir(d);
    return found;
}

static int run_step(struct ctx *c, size_t i, struct kiln_error **err)
{
    const struct kiln_step *st = &c->plan.steps[i];
    _cleanup_free_ char *sdir = kiln_xasprintf("%s/s%zu", c->build_dir, i);
    _cleanup_free_ char *upper = kiln_xasprintf("%s/upper", sdir);
    _cleanup_free_ char *work = kiln_xasprintf("%s/work", sdir);
    _cleanup_free_ char *merged = kiln_xasprintf("%s/merged", sdir);
    _cleanup_free_ char *bundle = kiln_xasprintf("%s/bundle", sdir);
    int r;
    if ((r = kiln_fs_mkdir_p_path(upper, 0755, NULL, err)) < 0 ||
        (r = kiln_fs_mkdir_p_path(work, 0700, NULL, err)) < 0 ||
        (r = kiln_fs_mkdir_p_path(merged, 0755, NULL, err)) < 0 ||
        (r = kiln_fs_mkdir_p_path(bundle, 0700, NULL, err)) < 0)
        return r;
    if ((r = make_init_dir(c, err)) < 0)
        return r;
    _cleanup_free_ const char **lowers = lowers_of(c);
    if ((r = kiln_overlay_mount(lowers, upper, work, merged, err)) < 0)
        return r;

    char rnd[KILN_FS_RANDOM_NAME_LEN + 1];
    kiln_fs_random_name(rnd);
    _cleanup_free_ char *id = kiln_xasprintf("kiln-%s-%zu", rnd, i);
    _cleanup_free_ char *idfile = kiln_xasprintf("%s/container-id", sdir);
    struct kiln_strv env = KILN_STRV_INIT;
    step_env(c, st, &env);
    if (st->kind == KILN_PKG_PIP && externally_managed(merged)) {
        say(c, KILN_BUILD_LOG_INFO,
            "the image's Python is externally managed (PEP 668): pip runs "
            "with PIP_BREAK_SYSTEM_PACKAGES=1");
        kiln_strv_push(&env, "PIP_BREAK_SYSTEM_PACKAGES=1");
    }
    struct kiln_run_options ro = {
        .runtime = c->runtime,
        .state_dir = c->runtime_dir,
        .bundle_dir = bundle,
        .rootfs = merged,
        .id = id,
        .argv = (const char *const *)st->argv.v,
        .env = (const char *const *)env.v,
        .cwd = "/",
        .uid = 0,
        .gid = 0,
        .hostname = "kiln",
        .host_network = true,
        .timeout_ms = c->o->step_timeout_ms,
        .cancelled = cancelled_cb,
        .on_line = on_step_line,
        .userdata = c,
    };
    tail_reset(c);
    int status = -1;
    double t0 = now_s();
    r = write_text(idfile, id, err);
    if (r >= 0)
        r = kiln_runtime_run(&ro, &status, err);
    kiln_strv_release(&env);
    struct kiln_error *uerr = NULL;
    if (kiln_overlay_umount(merged, &uerr) < 0 && r >= 0)
        r = kiln_error_set(err, KILN_EIO, 0, "%s", uerr->msg);
    kiln_error_free(uerr);
    if (r < 0)
        return kiln_error_prefix(err, "step %s", kiln_step_name(st));
    if (status != 0) {
        c->res->step_status = status;
        _cleanup_free_ char *tail = tail_text(c);
        return kiln_error_set(err, KILN_EIO, 0,
                              "step %s failed with exit status %d; its last "
                              "lines:%s",
                              kiln_step_name(st), status, tail);
    }
    say(c, KILN_BUILD_LOG_INFO, "step %s ran in %.1f s", kiln_step_name(st), now_s() - t0);
    r = commit_upper(c, st, upper, &c->recs[i], err);
    if (r < 0)
        return kiln_error_prefix(err, "commit step %s", kiln_step_name(st));
    r = kiln_stepcache_put(c->steps_dir, st->key, &c->recs[i], err);
    if (r < 0)
        return r;
    /* the scratch dirs of this step are no longer needed */
    _cleanup_close_ int bfd = open(c->build_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    _cleanup_free_ char *sname = kiln_xasprintf("s%zu", i);
    if (bfd >= 0)
        kiln_fs_rm_rf_at(bfd, sname, NULL);
    return 0;
}

/* Hold a step's layer as a lower dir, unpacking it from its blob when needed. */
static int step_layer(struct ctx *c, size_t i, struct kiln_error **err)
{
    const struct kiln_step_record *rec = &c->recs[i];
    struct kiln_descriptor d = KILN_DESCRIPTOR_INIT;
    d.media_type = (char *)rec->media_type;
    d.digest = (char *)rec->digest;
    d.size = (int64_t)rec->size;
    struct kiln_layer_source src = {.blobs = c->bs};
    struct kiln_layer_ref *ref = NULL;
    int r = kiln_layers_ensure(c->ls, &src, &d, rec->diff_id, &ref, err);
    if (r < 0)
        return kiln_error_prefix(err, "layer of step %s", kiln_step_name(&c->plan.steps[i]));
    return hold_layer(c, ref);
}

/* ---- the shared step cache ------------------------------------------------------ */

int kiln_build_cache_repo_check(const char *repo, struct kiln_error **err)
{
    struct kiln_ref r = KILN_REF_INIT;
    int rc = kiln_ref_parse(repo, &r, err);
    if (rc >= 0 && (!r.domain || r.tag || r.digest))
        rc = kiln_error_set(err, KILN_EINVAL, 0,
                            "'%s' is not HOST[:PORT]/PATH (a registry host, a repository, "
                            "no tag or digest)",
                            repo);
    kiln_ref_release(&r);
    return rc < 0 ? kiln_error_prefix(err, "cache repository") : 0;
}

/* The push of one step that ran, by a thread of its own. */
struct cache_push {
    struct ctx *c;
    size_t i;
    pthread_t th;
    bool started, joined;
    bool pushed; /* the layer is in the cache repository (the image push may mount it) */
};

static bool cache_usable(struct ctx *c)
{
    pthread_mutex_lock(&c->log_lock);
    bool on = c->cache_reg && !c->cache_off;
    pthread_mutex_unlock(&c->log_lock);
    return on;
}

/*
 * A failure of the registry itself (unreachable, refusing us, timing out)
 * turns the cache off for the rest of the build: one warning rather than
 * one per step, and no more waiting on it. Other failures (a bad document,
 * a missing blob) concern one step.
 */
static void cache_warn(struct ctx *c, const char *what, const struct kiln_error *e,
                       const char *then)
{
    int code = e ? e->code : KILN_EINTERNAL;
    bool off = code == KILN_ENET || code == KILN_ETIMEOUT || code == KILN_EAUTH;
    pthread_mutex_lock(&c->log_lock);
    bool was_off = c->cache_off;
    if (off)
        c->cache_off = true;
    pthread_mutex_unlock(&c->log_lock);
    if (was_off)
        return;
    say(c, KILN_BUILD_LOG_WARN, "shared step cache %s: %s: %s%s%s", c->cache_name, what,
        e ? e->msg : "failed", then, off ? "; the cache is off for the rest of this build" : "");
}

static int cache_setup(struct ctx *c, struct kiln_error **err)
{
    const struct kiln_build_options *o = c->o;
    if (!o->cache_repo)
        return 0;
    int r = kiln_build_cache_repo_check(o->cache_repo, err);
    if (r >= 0)
        r = kiln_ref_parse_normalized(o->cache_repo, &c->cache_ref, err);
    if (r < 0)
        return r;
    c->cache_name = kiln_xasprintf("%s/%s", c->cache_ref.domain, c->cache_ref.path);
    if (o->cache_registry) {
        c->cache_ro = *o->cache_registry;
        if (o->cancelled) {
            c->cache_ro.progress = http_progress;
            c->cache_ro.progress_data = c;
        }
    } else {
        c->cache_ro = c->base_ro;
        struct kiln_ref t = KILN_REF_INIT;
        if (o->target && kiln_ref_parse_normalized(o->target, &t, NULL) >= 0 &&
            !strcmp(t.domain, c->cache_ref.domain))
            c->cache_ro = c->push_ro;
        kiln_ref_release(&t);
    }
    if (!c->cache_ro.shared_http && c->http &&
        kiln_http_options_equal(&c->cache_ro.http, &c->base_ro.http))
        c->cache_ro.shared_http = c->http;
    c->pushes = kiln_xcalloc(c->plan.n_steps ? c->plan.n_steps : 1, sizeof(*c->pushes));
    /* no traffic yet: a registry that cannot be reached is found out by the first lookup */
    return kiln_registry_new(c->cache_ref.domain, &c->cache_ro, &c->cache_reg, err);
}

/* The diff_id of a blob of the store, by decompressing it. */
static int blob_diff_id(struct ctx *c, const char *digest, char out[72], struct kiln_error **err)
{
    _cleanup_close_ int fd = kiln_blobstore_open_blob(c->bs, digest, NULL, err);
    if (fd < 0)
        return fd;
    struct kiln_decompress *d = NULL;
    struct kiln_decompress_result res;
    int r = kiln_decompress_open(&d, kiln_decompress_read_fd, &fd, NULL, err);
    if (r >= 0)
        r = kiln_decompress_finish(d, &res, err);
    kiln_decompress_free(d);
    if (r >= 0)
        memcpy(out, res.diff_id, sizeof(res.diff_id));
    return r;
}

/*
 * Step i was just pulled from the cache repository: when the newer of its
 * manifest's `used` time ("" for none) and its config's created time
 * (rec->created) is more than KILN_STEPCACHE_TOUCH_SECONDS old, put the
 * same manifest (config cfg_digest, the layer of rec) again under `tag`
 * with `used` set to now, so that kiln gc --cache-repo keeps a step that is
 * still in use. Only the manifest goes up: the repository has both blobs.
 * A failure is an INFO line: the step was found all the same, and the cache
 * stays on (a read-only cache repository is still a good one).
 */
static void cache_touch(struct ctx *c, size_t i, const char *tag, const char *cfg_digest,
                        uint64_t cfg_size, const struct kiln_step_record *rec, const char *used)
{
    int64_t now = (int64_t)time(NULL), last = 0;
    bool by_use = false;
    if (kiln_stepcache_last_time(rec->created, used, &last, &by_use) < 0 ||
        now - last <= KILN_STEPCACHE_TOUCH_SECONDS)
        return;
    const struct kiln_step *st = &c->plan.steps[i];
    char now_text[KILN_STEPCACHE_TIME_BUFSZ];
    rfc3339_at(now, now_text);
    _cleanup_(kiln_buf_release) struct kiln_buf mb = KILN_BUF_INIT;
    kiln_buf_init(&mb, KILN_STEPCACHE_MANIFEST_MAX);
    struct kiln_error *e = NULL;
    int r = kiln_stepcache_manifest_make(cfg_digest, cfg_size, rec, now_text, &mb, &e);
    if (r >= 0)
        r = kiln_registry_manifest_put(c->cache_reg, c->cache_ref.path, tag, KILN_MT_OCI_MANIFEST,
                                       mb.buf, mb.len, NULL, &e);
    if (r >= 0)
        say(c, KILN_BUILD_LOG_INFO, "step %s: recorded as used in %s (%s %s)", kiln_step_name(st),
            c->cache_name, by_use ? "last used" : "created", by_use ? used : rec->created);
    else if (r != -KILN_ECANCELLED && !is_cancelled(c))
        say(c, KILN_BUILD_LOG_INFO, "step %s: could not record its use in %s: %s",
            kiln_step_name(st), c->cache_name, e ? e->msg : "failed");
    kiln_error_free(e);
}

/*
 * Fetch step i from the cache repository into *rec and the stores: 1 when
 * it is there (its layer blob in the blob store, unpacked in the layer
 * store, its diff_id checked), 0 when the registry has no such tag.
 * *ret_stage says how far it got (0: the manifest request).
 */
static int cache_fetch(struct ctx *c, size_t i, struct kiln_step_record *rec, int *ret_stage,
                       struct kiln_error **err)
{
    const struct kiln_step *st = &c->plan.steps[i];
    const char *repo = c->cache_ref.path;
    char tag[KILN_STEPCACHE_TAG_LEN + 1];
    int r = kiln_stepcache_tag(st->key, tag, err);
    if (r < 0)
        return r;
    *ret_stage = 0;
    struct kiln_registry_manifest m = KILN_REGISTRY_MANIFEST_INIT;
    r = kiln_registry_manifest_get(c->cache_reg, repo, tag, KILN_MT_OCI_MANIFEST, &m, err);
    if (r == -KILN_ENOTFOUND) {
        kiln_error_free(err ? *err : NULL);
        if (err)
            *err = NULL;
        return 0;
    }
    if (r < 0)
        return r;
    *ret_stage = 1;
    memset(rec, 0, sizeof(*rec));
    char cfg_digest[KILN_DIGEST_BUFSZ];
    uint64_t cfg_size = 0;
    char used[KILN_STEPCACHE_TIME_BUFSZ];
    r = kiln_stepcache_manifest_parse(m.data, m.len, m.media_type, cfg_digest, &cfg_size, rec, used,
                                      err);
    kiln_registry_manifest_release(&m);
    if (r < 0)
        return r;

    _cleanup_(kiln_buf_release) struct kiln_buf cb = KILN_BUF_INIT;
    kiln_buf_init(&cb, KILN_STEPCACHE_CONFIG_MAX);
    r = kiln_registry_blob_get(c->cache_reg, repo, cfg_digest, (int64_t)cfg_size, kiln_buf_sink,
                               &cb, NULL, err);
    if (r < 0)
        return kiln_error_prefix(err, "step config");
    r = kiln_stepcache_config_parse(cb.buf, cb.len, st->key, kiln_step_name(st), rec, err);
    if (r < 0)
        return r;

    uint64_t have = 0;
    if (kiln_blobstore_has(c->bs, rec->digest, &have, NULL) == 1) {
        if (have != rec->size)
            return kiln_error_set(err, KILN_EINVAL, 0,
                                  "layer %s: %llu bytes, the step manifest says %llu", rec->digest,
                                  (unsigned long long)have, (unsigned long long)rec->size);
    } else {
        double t0 = now_s();
        struct kiln_blob_writer *w = NULL;
        if ((r = kiln_blobstore_begin(c->bs, &w, err)) < 0)
            return r;
        r = kiln_registry_blob_get(c->cache_reg, repo, rec->digest, (int64_t)rec->size, pack_write,
                                   w, NULL, err);
        if (r < 0) {
            kiln_blobstore_abort(w);
            return kiln_error_prefix(err, "layer %s", rec->digest);
        }
        if ((r = kiln_blobstore_commit(w, rec->digest, (int64_t)rec->size, NULL, err)) < 0)
            return kiln_error_prefix(err, "layer %s", rec->digest);
        char a[32];
        human_bytes(rec->size, a);
        say(c, KILN_BUILD_LOG_INFO, "pull %.12s: %s in %.2f s (step %s, from %s)",
            short_digest(rec->digest), a, now_s() - t0, kiln_step_name(st), c->cache_name);
    }

    /* unpacked as later steps need it; the extraction checks the diff_id */
    struct kiln_descriptor d = KILN_DESCRIPTOR_INIT;
    d.media_type = rec->media_type;
    d.digest = rec->digest;
    d.size = (int64_t)rec->size;
    struct kiln_layer_source src = {.blobs = c->bs};
    struct kiln_layer_ref *ref = NULL;
    r = kiln_layers_ensure(c->ls, &src, &d, rec->diff_id, &ref, err);
    kiln_layerstore_release(ref);
    if (r < 0)
        return r;
    if (r == 0) {
        /* the layer store had that diff_id already: check this blob's */
        char got[72];
        if ((r = blob_diff_id(c, rec->digest, got, err)) < 0)
            return kiln_error_prefix(err, "layer %s", rec->digest);
        if (strcmp(got, rec->diff_id) != 0)
            return kiln_error_set(err, KILN_EINVAL, 0,
                                  "layer %s: its content has diff_id %s, the step config says %s",
                                  rec->digest, got, rec->diff_id);
    }
    r = kiln_stepcache_put(c->steps_dir, st->key, rec, err);
    if (r < 0)
        return r;
    cache_touch(c, i, tag, cfg_digest, cfg_size, rec, used);
    return 1;
}

/*
 * Look step i up in the cache repository: 1 when found (the step is
 * cached), 0 when it must run (not there, or a failure: warned), or
 * -KILN_ECANCELLED.
 */
static int cache_lookup(struct ctx *c, size_t i, struct kiln_error **err)
{
    if (!cache_usable(c))
        return 0;
    const struct kiln_step *st = &c->plan.steps[i];
    struct kiln_step_record rec;
    struct kiln_error *e = NULL;
    int stage = 0;
    int r = cache_fetch(c, i, &rec, &stage, &e);
    if (r == -KILN_ECANCELLED || is_cancelled(c)) {
        kiln_error_free(e);
        return kiln_error_set(err, KILN_ECANCELLED, 0, "build cancelled");
    }
    if (r < 0) {
        char tag[KILN_STEPCACHE_TAG_LEN + 1];
        kiln_stepcache_tag(st->key, tag, NULL);
        _cleanup_free_ char *what =
            kiln_xasprintf("look up step %s (%.17s...)", kiln_step_name(st), tag);
        if (stage > 0 && e && (e->code == KILN_ENET || e->code == KILN_ETIMEOUT))
            e->code = KILN_EINVAL; /* the registry answered: a bad blob concerns this step */
        cache_warn(c, what, e, "; the step runs");
        kiln_error_free(e);
        return 0;
    }
    if (r == 0)
        return 0;
    c->recs[i] = rec;
    say(c, KILN_BUILD_LOG_INFO, "step %zu/%zu %s: cached in %s (layer %.12s)", i + 1,
        c->plan.n_steps, kiln_step_name(st), c->cache_name, short_digest(rec.digest));
    return 1;
}

static int cache_push_step(struct ctx *c, size_t i, struct kiln_error **err)
{
    const struct kiln_step *st = &c->plan.steps[i];
    const struct kiln_step_record *rec = &c->recs[i];
    const char *repo = c->cache_ref.path;
    char tag[KILN_STEPCACHE_TAG_LEN + 1];
    int r = kiln_stepcache_tag(st->key, tag, err);
    if (r < 0)
        return r;
    double t0 = now_s();
    /* the layer, unless the repository has it */
    r = kiln_registry_blob_head(c->cache_reg, repo, rec->digest, NULL, err);
    if (r == 0) {
        uint64_t have = 0;
        _cleanup_close_ int fd = kiln_blobstore_open_blob(c->bs, rec->digest, &have, err);
        if (fd < 0)
            return fd;
        r = kiln_registry_blob_push(c->cache_reg, repo, rec->digest, fd, have, NULL, err);
    }
    if (r < 0)
        return kiln_error_prefix(err, "upload layer %s", rec->digest);
    /* the config, then the manifest naming both */
    _cleanup_(kiln_buf_release) struct kiln_buf cb = KILN_BUF_INIT;
    _cleanup_(kiln_buf_release) struct kiln_buf mb = KILN_BUF_INIT;
    kiln_buf_init(&cb, KILN_STEPCACHE_CONFIG_MAX);
    kiln_buf_init(&mb, KILN_STEPCACHE_MANIFEST_MAX);
    char cfg_digest[KILN_DIGEST_BUFSZ];
    r = kiln_stepcache_config_make(st->key, kiln_step_name(st), st->created_by, rec, kiln_version(),
                                   &cb, err);
    if (r < 0)
        return r;
    kiln_digest_buf(cb.buf, cb.len, cfg_digest);
    struct kiln_upload *u = NULL;
    r = kiln_registry_upload_start(c->cache_reg, repo, NULL, NULL, &u, err);
    if (r >= 0)
        r = kiln_upload_finish_mem(u, cfg_digest, cb.buf, cb.len, err);
    kiln_upload_free(u);
    if (r < 0)
        return kiln_error_prefix(err, "upload the step config");
    /* a step made with an old created time (SOURCE_DATE_EPOCH) is pushed as used
     * now: else kiln gc --cache-repo would take it for an old one */
    int64_t made = 0, now = (int64_t)time(NULL);
    char now_text[KILN_STEPCACHE_TIME_BUFSZ];
    rfc3339_at(now, now_text);
    bool stale = kiln_stepcache_last_time(rec->created, "", &made, NULL) < 0 ||
                 now - made > KILN_STEPCACHE_TOUCH_SECONDS;
    r = kiln_stepcache_manifest_make(cfg_digest, cb.len, rec, stale ? now_text : NULL, &mb, err);
    if (r >= 0)
        r = kiln_registry_manifest_put(c->cache_reg, repo, tag, KILN_MT_OCI_MANIFEST, mb.buf,
                                       mb.len, NULL, err);
    if (r < 0)
        return kiln_error_prefix(err, "put %s", tag);
    say(c, KILN_BUILD_LOG_INFO, "step %s: pushed to %s:%.17s... in %.2f s", kiln_step_name(st),
        c->cache_name, tag, now_s() - t0);
    return 0;
}

static void *cache_push_run(void *ud)
{
    struct cache_push *p = ud;
    struct ctx *c = p->c;
    if (!cache_usable(c))
        return NULL;
    struct kiln_error *e = NULL;
    int r = cache_push_step(c, p->i, &e);
    if (r >= 0) {
        pthread_mutex_lock(&c->log_lock);
        p->pushed = true;
        pthread_mutex_unlock(&c->log_lock);
    } else if (r != -KILN_ECANCELLED && !is_cancelled(c)) {
        _cleanup_free_ char *what =
            kiln_xasprintf("push step %s", kiln_step_name(&c->plan.steps[p->i]));
        cache_warn(c, what, e, "");
    }
    kiln_error_free(e);
    return NULL;
}

/* Push step i (which ran) to the cache repository, in the background. */
static void cache_push_start(struct ctx *c, size_t i)
{
    if (!cache_usable(c))
        return;
    struct cache_push *p = &c->pushes[i];
    *p = (struct cache_push){.c = c, .i = i};
    p->started = pthread_create(&p->th, NULL, cache_push_run, p) == 0;
    if (!p->started)
        cache_push_run(p); /* no thread: here and now */
}

/* Wait for the cache pushes (before the image push, and before the build ends). */
static void cache_push_join(struct ctx *c)
{
    for (size_t i = 0; c->pushes && i < c->plan.n_steps; i++) {
        struct cache_push *p = &c->pushes[i];
        if (p->started && !p->joined) {
            pthread_join(p->th, NULL);
            p->joined = true;
        }
    }
}

static int run_steps(struct ctx *c, struct kiln_error **err)
{
    size_t n = c->plan.n_steps;
    size_t first = n;
    for (size_t i = 0; i < n; i++) {
        const struct kiln_step *st = &c->plan.steps[i];
        int hit = 0;
        if (!c->o->no_cache) {
            hit = kiln_stepcache_get(c->steps_dir, st->key, &c->recs[i], err);
            if (hit < 0)
                return hit;
            if (hit && kiln_blobstore_has(c->bs, c->recs[i].digest, NULL, NULL) != 1)
                hit = 0;
        }
        if (!hit && !c->o->no_cache && c->cache_reg) {
            hit = cache_lookup(c, i, err);
            if (hit < 0)
                return hit;
            if (hit) {
                c->res->steps_cached++;
                continue;
            }
        }
        if (!hit) {
            first = i;
            break;
        }
        say(c, KILN_BUILD_LOG_INFO, "step %zu/%zu %s: cached (layer %.12s)", i + 1, n,
            kiln_step_name(st), short_digest(c->recs[i].digest));
        c->res->steps_cached++;
    }
    if (first == n)
        return 0;

    int r = kiln_runtime_detect(c->o->runtime, &c->runtime, err);
    if (r < 0)
        return r;
    say(c, KILN_BUILD_LOG_INFO, "steps run with the OCI runtime %s", c->runtime);
    if ((r = make_build_dir(c, err)) < 0)
        return r;
    if ((r = base_layers(c, err)) < 0)
        return r;
    for (size_t i = 0; i < first; i++)
        if ((r = step_layer(c, i, err)) < 0)
            return r;
    for (size_t i = first; i < n; i++) {
        if (is_cancelled(c))
            return kiln_error_set(err, KILN_ECANCELLED, 0, "build cancelled");
        const struct kiln_step *st = &c->plan.steps[i];
        say(c, KILN_BUILD_LOG_INFO, "step %zu/%zu %s: %s", i + 1, n, kiln_step_name(st),
            st->created_by + strlen("RUN /bin/sh -c "));
        if ((r = run_step(c, i, err)) < 0)
            return r;
        c->res->steps_run++;
        if (c->cache_reg)
            cache_push_start(c, i);
        if ((i + 1 < n || c->o->verify) && (r = step_layer(c, i, err)) < 0)
            return r;
    }
    return 0;
}

/* ---- the image ---------------------------------------------------------------------- */

static int add_history(struct kiln_image_config *cfg, const char *created, const char *by,
                       bool empty, struct kiln_error **err)
{
    struct kiln_history h = {.created = created, .created_by = by, .empty_layer = empty};
    return kiln_image_config_add_history(cfg, &h, err);
}

static bool is_root_user(const char *u)
{
    return !u || !*u || !strcmp(u, "root") || !strcmp(u, "0") || !strncmp(u, "root:", 5) ||
           !strncmp(u, "0:", 2);
}

/* Store a small blob unless the store has it (a no-op rebuild writes nothing). */
static int put_blob(struct ctx *c, const struct kiln_buf *b, char digest[KILN_DIGEST_BUFSZ],
                    struct kiln_error **err)
{
    char hex[KILN_SHA256_HEX_LEN + 1];
    kiln_sha256_hex(b->buf, b->len, hex);
    snprintf(digest, KILN_DIGEST_BUFSZ, "sha256:%s", hex);
    if (kiln_blobstore_has(c->bs, digest, NULL, NULL) == 1)
        return 0;
    return kiln_blobstore_put(c->bs, b->buf, b->len, digest, NULL, err);
}

static int make_config(struct ctx *c, struct kiln_buf *out, struct kiln_error **err)
{
    struct kiln_image_config cfg = KILN_IMAGE_CONFIG_INIT;
    kiln_image_config_copy(&cfg, &c->info.config);
    int r = 0;
    const char *created = kiln_image_config_get(&cfg, KILN_IC_CREATED);
    _cleanup_free_ char *created_copy = created ? kiln_xstrdup(created) : NULL;
    const char *user = kiln_image_config_get(&c->info.config, KILN_IC_USER);
    size_t n = c->plan.n_steps;
    for (size_t i = 0; i < n && r >= 0; i++) {
        if (i == 0)
            r = add_history(&cfg, c->recs[0].created, "USER root", true, err);
        if (r >= 0)
            r = kiln_image_config_add_diff_id(&cfg, c->recs[i].diff_id, err);
        if (r >= 0)
            r = add_history(&cfg, c->recs[i].created, c->plan.steps[i].created_by, false, err);
        free(created_copy);
        created_copy = kiln_xstrdup(c->recs[i].created);
    }
    if (r >= 0 && n > 0 && !is_root_user(user)) {
        _cleanup_free_ char *by = kiln_xasprintf("USER %s", user);
        r = add_history(&cfg, created_copy, by, true, err);
    }
    json_t *sj = kiln_spec_to_json(c->spec, KILN_SPEC_SHAPE_KILN);
    _cleanup_free_ char *spec_text = json_dumps(sj, JSON_COMPACT);
    json_decref(sj);
    char rev[KILN_REVISION_LEN + 1];
    kiln_spec_revision(c->spec, rev);
    if (r >= 0 && created_copy)
        r = kiln_image_config_set(&cfg, KILN_IC_CREATED, created_copy, err);
    if (r >= 0)
        r = kiln_image_config_set_label(&cfg, "io.kiln.spec", spec_text, err);
    if (r >= 0)
        r = kiln_image_config_set_label(&cfg, "io.kiln.revision", rev, err);
    if (r >= 0)
        r = kiln_image_config_set_label(&cfg, "io.kiln.version", kiln_version(), err);
    if (r >= 0)
        r = kiln_image_config_serialize(&cfg, out, err);
    kiln_image_config_release(&cfg);
    return r;
}

static int make_manifest(struct ctx *c, const char *config_digest, size_t config_size,
                         struct kiln_manifest *m, struct kiln_buf *out, struct kiln_error **err)
{
    m->media_type = kiln_xstrdup(KILN_MT_OCI_MANIFEST);
    m->config.media_type = kiln_xstrdup(KILN_MT_OCI_CONFIG);
    m->config.digest = kiln_xstrdup(config_digest);
    m->config.size = (int64_t)config_size;
    int r = 0;
    /* base layers in OCI types first, so that one conversion covers all */
    struct kiln_manifest base = KILN_MANIFEST_INIT;
    base.media_type = kiln_xstrdup(c->info.manifest_media_type);
    base.config.media_type = kiln_xstrdup(c->info.manifest.config.media_type);
    base.config.digest = kiln_xstrdup(c->info.manifest.config.digest);
    base.config.size = c->info.manifest.config.size;
    for (size_t i = 0; i < c->info.manifest.n_layers; i++)
        kiln_manifest_add_layer(&base, &c->info.manifest.layers[i]);
    r = kiln_manifest_convert(&base, KILN_FORMAT_OCI, err);
    for (size_t i = 0; r >= 0 && i < base.n_layers; i++)
        kiln_manifest_add_layer(m, &base.layers[i]);
    kiln_manifest_release(&base);
    for (size_t i = 0; r >= 0 && i < c->plan.n_steps; i++) {
        struct kiln_descriptor d = KILN_DESCRIPTOR_INIT;
        d.media_type = c->recs[i].media_type;
        d.digest = c->recs[i].digest;
        d.size = (int64_t)c->recs[i].size;
        kiln_manifest_add_layer(m, &d);
    }
    if (r >= 0 && c->o->format == KILN_FORMAT_DOCKER)
        r = kiln_manifest_convert(m, KILN_FORMAT_DOCKER, err);
    if (r >= 0)
        r = kiln_manifest_serialize(m, out, err);
    return r;
}

/* ---- verify --------------------------------------------------------------------------- */

static int verify_image(struct ctx *c, const char *config_data, size_t config_len,
                        struct kiln_verify_report *rep, struct kiln_error **err)
{
    int r;
    if (!c->runtime && (r = kiln_runtime_detect(c->o->runtime, &c->runtime, err)) < 0)
        return r;
    if (!c->build_dir && (r = make_build_dir(c, err)) < 0)
        return r;
    if (c->n_refs == 0) {
        if ((r = base_layers(c, err)) < 0)
            return r;
        for (size_t i = 0; i < c->plan.n_steps; i++)
            if ((r = step_layer(c, i, err)) < 0)
                return r;
    }
    struct kiln_image_config cfg = KILN_IMAGE_CONFIG_INIT;
    if ((r = kiln_image_config_parse(config_data, config_len, &cfg, err)) < 0)
        return r;
    _cleanup_free_ char *vdir = kiln_xasprintf("%s/verify", c->build_dir);
    _cleanup_free_ const char **lowers = lowers_of(c);
    struct kiln_verify_options vo = {
        .runtime = c->runtime,
        .state_dir = c->runtime_dir,
        .work_dir = vdir,
        .lowers = lowers,
        .config = &cfg,
        .timeout_ms = 120000,
        .cancelled = cancelled_cb,
        .on_line = on_step_line,
        .userdata = c,
    };
    say(c, KILN_BUILD_LOG_INFO, "verify: JupyterHub readiness checks");
    r = kiln_fs_mkdir_p_path(vdir, 0700, NULL, err);
    if (r >= 0)
        r = kiln_verify_run(&vo, rep, err);
    kiln_image_config_release(&cfg);
    if (r < 0)
        return kiln_error_prefix(err, "verify");
    if (rep->warning[0])
        say(c, KILN_BUILD_LOG_WARN, "verify: %s", rep->warning);
    if (!rep->ready)
        return kiln_error_set(err, KILN_EINVAL, 0,
                              "verify: the image is not JupyterHub-ready: "
                              "%s check failed: %s",
                              kiln_verify_check_name(rep->failed), rep->reason);
    say(c, KILN_BUILD_LOG_INFO, "verify: ready (user %s uid %u, home %s, %s)", rep->user,
        (unsigned)rep->uid, rep->home, rep->version);
    return 0;
}

/* ---- push ------------------------------------------------------------------------------ */

/* mount_from: a repository of the same registry that has the blob, or NULL */
static int push_blob(struct ctx *c, struct kiln_registry *reg, const char *repo, const char *digest,
                     uint64_t size, const char *mount_from, struct kiln_error **err)
{
    int r = kiln_registry_blob_head(reg, repo, digest, NULL, err);
    if (r < 0)
        return r;
    if (r == 1) {
        say(c, KILN_BUILD_LOG_INFO, "push %.12s: already there", short_digest(digest));
        return 0;
    }
    uint64_t have = 0;
    _cleanup_close_ int fd = kiln_blobstore_open_blob(c->bs, digest, &have, err);
    if (fd < 0)
        return fd;
    double t0 = now_s();
    r = kiln_registry_blob_push(reg, repo, digest, fd, have, mount_from, err);
    if (r < 0)
        return kiln_error_prefix(err, "upload %s", digest);
    if (r == 1) {
        say(c, KILN_BUILD_LOG_INFO, "push %.12s: mounted from %s", short_digest(digest),
            mount_from);
        return 0;
    }
    pthread_mutex_lock(&c->log_lock);
    c->res->pushed_bytes += have;
    pthread_mutex_unlock(&c->log_lock);
    char a[32];
    human_bytes(size, a);
    say(c, KILN_BUILD_LOG_INFO, "push %.12s: %s uploaded in %.2f s", short_digest(digest), a,
        now_s() - t0);
    return 0;
}

/* Make sure the base layers are in the target repository. */
static int push_base(struct ctx *c, struct kiln_registry *reg, const struct kiln_ref *t,
                     struct kiln_error **err)
{
    bool same = !strcmp(t->domain, c->base_ref.domain);
    bool need_copy = false;
    for (size_t i = 0; i < c->info.manifest.n_layers; i++) {
        const struct kiln_descriptor *d = &c->info.manifest.layers[i];
        int r = kiln_registry_blob_head(reg, t->path, d->digest, NULL, err);
        if (r < 0)
            return r;
        if (r == 1)
            continue;
        if (!same) {
            need_copy = true;
            break;
        }
        struct kiln_upload *u = NULL;
        r = kiln_registry_upload_start(reg, t->path, d->digest, c->base_ref.path, &u, err);
        if (r < 0)
            return r;
        if (r == 1) {
            say(c, KILN_BUILD_LOG_INFO, "push %.12s: mounted from %s", short_digest(d->digest),
                c->base_ref.path);
            continue;
        }
        kiln_upload_cancel(u, NULL);
        kiln_upload_free(u);
        need_copy = true;
        break;
    }
    if (!need_copy)
        return 0;
    _cleanup_free_ char *src = kiln_xasprintf("%s@%s", c->base_repo_ref, c->info.manifest_digest);
    _cleanup_free_ char *dst =
        kiln_xasprintf("%s/%s@%s", t->domain, t->path, c->info.manifest_digest);
    say(c, KILN_BUILD_LOG_INFO, "push: copy the base layers from %s", c->base_repo_ref);
    struct kiln_transfer_endpoint se = {.ref = src, .registry = &c->base_ro};
    struct kiln_transfer_endpoint de = {.ref = dst, .registry = &c->push_ro};
    struct kiln_transfer_options to = {0};
    int r = kiln_transfer_copy(&se, &de, &to, NULL, err);
    return r < 0 ? kiln_error_prefix(err, "copy the base layers") : 0;
}

/* One blob (or, with base set, the base layers) pushed by its own thread. */
struct push_item {
    struct ctx *c;
    struct kiln_registry *reg;
    const struct kiln_ref *t;
    bool base;
    const char *digest;
    uint64_t size;
    const char *mount_from;
    pthread_t th;
    bool started;
    int rc;
    struct kiln_error *err;
};

static void *push_item_run(void *ud)
{
    struct push_item *it = ud;
    it->rc = it->base ? push_base(it->c, it->reg, it->t, &it->err)
                      : push_blob(it->c, it->reg, it->t->path, it->digest, it->size, it->mount_from,
                                  &it->err);
    return NULL;
}

/*
 * The base layers, the step layers and the config, all at once (a thread
 * each: a handful, and mostly HEADs answered in a millisecond, so the push
 * costs the slowest one rather than their sum). The first failure wins.
 */
static int push_blobs(struct ctx *c, struct kiln_registry *reg, const struct kiln_ref *t,
                      const char *config_digest, uint64_t config_size, struct kiln_error **err)
{
    size_t n = c->plan.n_steps + 2;
    struct push_item *items = kiln_xcalloc(n, sizeof(*items));
    for (size_t i = 0; i < n; i++) {
        struct push_item *it = &items[i];
        *it = (struct push_item){.c = c, .reg = reg, .t = t};
        if (i == 0)
            it->base = true;
        else if (i <= c->plan.n_steps) {
            it->digest = c->recs[i - 1].digest;
            it->size = c->recs[i - 1].size;
            /* pushed to the cache repository of the same registry by this build */
            if (c->pushes && c->pushes[i - 1].pushed && !strcmp(t->domain, c->cache_ref.domain))
                it->mount_from = c->cache_ref.path;
        } else {
            it->digest = config_digest;
            it->size = config_size;
        }
        it->started = pthread_create(&it->th, NULL, push_item_run, it) == 0;
        if (!it->started)
            push_item_run(it); /* no thread: do it here */
    }
    int r = 0;
    for (size_t i = 0; i < n; i++) {
        struct push_item *it = &items[i];
        if (it->started)
            pthread_join(it->th, NULL);
        if (it->rc < 0 && r >= 0) {
            r = it->rc;
            if (err) {
                kiln_error_free(*err);
                *err = it->err;
                it->err = NULL;
            }
        }
        kiln_error_free(it->err);
    }
    free(items);
    return r;
}

static int push_image(struct ctx *c, const char *config_digest, uint64_t config_size,
                      const struct kiln_manifest *m, const struct kiln_buf *mbuf,
                      struct kiln_error **err)
{
    struct kiln_ref t = KILN_REF_INIT;
    int r = kiln_ref_parse_normalized(c->o->target, &t, err);
    if (r < 0)
        return kiln_error_prefix(err, "target");
    struct kiln_registry *reg = NULL;
    double t0 = now_s();
    say(c, KILN_BUILD_LOG_INFO, "push %s", c->o->target);
    r = kiln_registry_new(t.domain, &c->push_ro, &reg, err);
    const char *tag = t.tag ? t.tag : t.digest;
    /*
     * A registry holding the manifest in this repository holds its blobs (it
     * refuses a manifest PUT naming a missing blob): a no-op rebuild, or the
     * same image under another tag, is then one HEAD and the tag PUTs. Should
     * the PUT still fail, the blobs are pushed and it is tried again.
     */
    bool there = false;
    if (r >= 0) {
        struct kiln_registry_manifest have = KILN_REGISTRY_MANIFEST_INIT;
        there = kiln_registry_manifest_head(reg, t.path, c->res->manifest_digest, NULL, &have,
                                            NULL) == 1;
        kiln_registry_manifest_release(&have);
        if (there)
            say(c, KILN_BUILD_LOG_INFO, "%s/%s already has this image: tagging only", t.domain,
                t.path);
    }
    for (int pass = there ? 0 : 1; r >= 0 && pass < 2; pass++) {
        if (pass == 1)
            r = push_blobs(c, reg, &t, config_digest, config_size, err);
        if (r >= 0)
            r = kiln_registry_manifest_put(reg, t.path, tag, kiln_manifest_media_type(m), mbuf->buf,
                                           mbuf->len, NULL, err);
        for (size_t i = 0; r >= 0 && c->o->extra_tags && c->o->extra_tags[i]; i++)
            r = kiln_registry_manifest_put(reg, t.path, c->o->extra_tags[i],
                                           kiln_manifest_media_type(m), mbuf->buf, mbuf->len, NULL,
                                           err);
        if (r >= 0)
            break;
        if (pass == 0 && r != -KILN_ECANCELLED) {
            say(c, KILN_BUILD_LOG_INFO, "tagging failed (%s): pushing the blobs",
                err && *err ? (*err)->msg : "?");
            kiln_error_free(err ? *err : NULL);
            if (err)
                *err = NULL;
            r = 0;
        }
    }
    if (r >= 0) {
        c->res->pushed = true;
        say(c, KILN_BUILD_LOG_INFO, "pushed %s in %.2f s", c->o->target, now_s() - t0);
    }
    kiln_registry_free(reg);
    kiln_ref_release(&t);
    return r < 0 ? kiln_error_prefix(err, "push '%s'", c->o->target) : 0;
}

/* ---- the whole build ----------------------------------------------------------------- */

static int build(struct ctx *c, struct kiln_error **err)
{
    int r;
    if (c->o->source_date_epoch > RFC3339_MAX_EPOCH)
        return kiln_error_set(err, KILN_EINVAL, 0,
                              "build: source_date_epoch %lld is after the year 9999",
                              (long long)c->o->source_date_epoch);
    if ((r = open_state(c, err)) < 0 || (r = resolve_base(c, c->spec->base_image, err)) < 0)
        return r;
    r = kiln_plan_make(c->spec, c->info.manifest_digest, &c->o->plan, &c->plan, err);
    if (r < 0)
        return r;
    c->recs = kiln_xcalloc(c->plan.n_steps ? c->plan.n_steps : 1, sizeof(*c->recs));
    if ((r = cache_setup(c, err)) < 0 || (r = run_steps(c, err)) < 0)
        return r;

    struct kiln_buf cbuf = KILN_BUF_INIT, mbuf = KILN_BUF_INIT;
    struct kiln_manifest m = KILN_MANIFEST_INIT;
    char config_digest[KILN_DIGEST_BUFSZ], manifest_digest[KILN_DIGEST_BUFSZ];
    if ((r = make_config(c, &cbuf, err)) < 0 || (r = put_blob(c, &cbuf, config_digest, err)) < 0 ||
        (r = make_manifest(c, config_digest, cbuf.len, &m, &mbuf, err)) < 0 ||
        (r = put_blob(c, &mbuf, manifest_digest, err)) < 0) {
        kiln_error_prefix(err, "write the image");
        goto out;
    }
    memcpy(c->res->config_digest, config_digest, sizeof(config_digest));
    memcpy(c->res->manifest_digest, manifest_digest, sizeof(manifest_digest));
    c->res->manifest_size = mbuf.len;
    say(c, KILN_BUILD_LOG_INFO, "image %s (%zu steps run, %zu cached)", manifest_digest,
        c->res->steps_run, c->res->steps_cached);
    struct kiln_verify_report rep;
    if (c->o->verify && (r = verify_image(c, cbuf.buf, cbuf.len, &rep, err)) < 0)
        goto out;
    /* the step layers are then in the cache repository: the image push may mount them */
    cache_push_join(c);
    if (c->o->target && (r = push_image(c, config_digest, cbuf.len, &m, &mbuf, err)) < 0)
        goto out;
    r = 0;
out:
    kiln_buf_release(&cbuf);
    kiln_buf_release(&mbuf);
    kiln_manifest_release(&m);
    return r;
}

static void ctx_init(struct ctx *c, const struct kiln_spec *s, const struct kiln_build_options *o,
                     struct kiln_build_result *res)
{
    memset(res, 0, sizeof(*res));
    *c = (struct ctx){
        .spec = s,
        .o = o,
        .res = res,
        .build_fd = -1,
        .info = KILN_IMAGE_INFO_INIT,
        .plan = KILN_PLAN_INIT,
        .base_ref = KILN_REF_INIT,
        .cache_ref = KILN_REF_INIT,
    };
    static const struct kiln_registry_options defaults = {0};
    pthread_mutex_init(&c->log_lock, NULL);
    c->base_ro = o->base_registry ? *o->base_registry : defaults;
    c->push_ro = o->push_registry ? *o->push_registry : defaults;
    if (o->cancelled) {
        /* the caller's own progress hooks are replaced: cancel is all they could do here */
        c->base_ro.progress = c->push_ro.progress = http_progress;
        c->base_ro.progress_data = c->push_ro.progress_data = c;
    }
}

static void ctx_release(struct ctx *cp)
{
    cache_push_join(cp);
    struct ctx c = *cp;

    for (size_t i = 0; i < c.n_refs; i++)
        kiln_layerstore_release(c.refs[i]);
    free(c.refs);
    remove_build_dir(&c);
    tail_reset(&c);
    kiln_registry_free(c.base_reg);
    kiln_registry_free(c.cache_reg);
    kiln_ref_release(&c.cache_ref);
    free(c.cache_name);
    free(c.pushes);
    save_scheme_hints(&c);
    kiln_http_free(c.http);
    free(c.schemes_text);
    kiln_image_info_release(&c.info);
    kiln_ref_release(&c.base_ref);
    kiln_plan_release(&c.plan);
    free(c.recs);
    free(c.base_repo_ref);
    free(c.runtime);
    free(c.store_dir);
    free(c.steps_dir);
    free(c.builds_dir);
    free(c.runtime_dir);
    free(c.build_dir);
    free(c.init_dir);
    kiln_layerstore_free(c.ls);
    kiln_blobstore_free(c.bs);
    pthread_mutex_destroy(&cp->log_lock);
}

int kiln_build_run(const struct kiln_spec *s, const struct kiln_build_options *o,
                   struct kiln_build_result *ret, struct kiln_error **err)
{
    struct kiln_build_result res;
    struct ctx c;
    ctx_init(&c, s, o, &res);
    int r = build(&c, err);
    ctx_release(&c);
    if (ret)
        *ret = res;
    return r;
}

int kiln_build_verify_ref(const char *ref, const struct kiln_build_options *o,
                          struct kiln_verify_report *ret, struct kiln_error **err)
{
    struct kiln_build_result res;
    struct ctx c;
    ctx_init(&c, NULL, o, &res);
    struct kiln_verify_report rep;
    memset(&rep, 0, sizeof(rep));
    int r = open_state(&c, err);
    if (r >= 0)
        r = resolve_base(&c, ref, err);
    if (r >= 0) {
        struct kiln_buf cbuf = KILN_BUF_INIT;
        r = kiln_image_config_serialize(&c.info.config, &cbuf, err);
        if (r >= 0) {
            r = verify_image(&c, cbuf.buf, cbuf.len, &rep, err);
            /* a failed check is a report, not an error */
            if (r < 0 && rep.failed != KILN_VERIFY_NONE) {
                kiln_error_free(err ? *err : NULL);
                if (err)
                    *err = NULL;
                r = 0;
            }
        }
        kiln_buf_release(&cbuf);
    }
    ctx_release(&c);
    if (r >= 0 && ret)
        *ret = rep;
    return r;
}
