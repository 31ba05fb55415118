#include "util/common.h"
#include "build/base.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>

#include "kiln/version.h"
#include "layer/pack.h"
#include "oci/config.h"
#include "util/buf.h"
#include "util/fs.h"
#include "util/strv.h"

static const char *or_default(const char *v, const char *def)
{
    return v && *v ? v : def;
}

/* Package names as mmdebstrap's --include takes them (apt grammar, comma-separated). */
static bool include_ok(const char *s)
{
    for (const char *p = s; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '+' || *p == '-' ||
              *p == '.' || *p == ','))
            return false;
    return *s != '\0' && *s != '-';
}

static bool suite_ok(const char *s)
{
    for (const char *p = s; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-'))
            return false;
    return *s != '\0' && *s != '-';
}

static bool user_ok(const char *s)
{
    for (const char *p = s; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' || *p == '_'))
            return false;
    return *s >= 'a' && *s <= 'z' && strlen(s) <= 32;
}

/*
 * What tells the two images apart: the default packages, whether the
 * notebook user is added, and the config. One code path applies either.
 */
struct profile {
    bool self;
    const char *include;   /* the default package set */
    const char *user;      /* the notebook user, NULL for kiln's image */
    const char *env[8][2]; /* NAME, value; in order, up to a NULL name */
    const char *config_user;
    const char *working_dir;
    const char *entry[2];     /* Entrypoint, NULL-terminated; none when empty */
    const char *cmd[4];       /* Cmd, NULL-terminated */
    const char *labels[3][2]; /* after io.kiln.base.suite and io.kiln.version */
    const char *volume;       /* or NULL */
    const char *port;
    const char *comment;    /* of the history entry */
    char *home, *uid, *gid; /* storage of the JupyterHub profile's strings */
};

static const char *include_of(const struct kiln_base_options *o)
{
    return or_default(o->include, o->self_binary ? KILN_BASE_SELF_INCLUDE : KILN_BASE_INCLUDE);
}

#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

static void profile_init(struct profile *p, const struct kiln_base_options *o)
{
    if (o->self_binary) {
        *p = (struct profile){
            .self = true,
            .include = include_of(o),
            .env = {{"PATH", DEFAULT_PATH},
                    {"LANG", "C.UTF-8"},
                    {"KILN_DATA_DIR", KILN_BASE_SELF_DATA_DIR}},
            .config_user = "0",
            .working_dir = KILN_BASE_SELF_DATA_DIR,
            .entry = {KILN_BASE_SELF_BINARY},
            .cmd = {"serve", "--listen", KILN_BASE_SELF_LISTEN},
            .labels = {{"org.opencontainers.image.title", "kiln"},
                       {"org.opencontainers.image.version", kiln_version()}},
            .volume = KILN_BASE_SELF_DATA_DIR,
            .port = "8080/tcp",
            .comment = "kiln base --self",
        };
        return;
    }
    const char *user = or_default(o->user, KILN_BASE_USER);
    char *home = kiln_xasprintf("/home/%s", user);
    char *uid = kiln_xasprintf("%d", KILN_BASE_UID);
    char *gid = kiln_xasprintf("%d", KILN_BASE_GID);
    *p = (struct profile){
        .include = include_of(o),
        .user = user,
        .env = {{"PATH", DEFAULT_PATH},
                {"LANG", "C.UTF-8"},
                {"SHELL", "/bin/bash"},
                {"HOME", home},
                {"NB_USER", user},
                {"NB_UID", uid},
                {"NB_GID", gid}},
        .config_user = uid,
        .working_dir = home,
        .cmd = {"jupyterhub-singleuser"},
        .port = "8888/tcp",
        .comment = "kiln base",
        .home = home,
        .uid = uid,
        .gid = gid,
    };
}

static void profile_release(struct profile *p)
{
    free(p->home);
    free(p->uid);
    free(p->gid);
}

void kiln_base_mmdebstrap_argv(const struct kiln_base_options *o, const char *target,
                               struct kiln_strv *ret)
{
    struct profile p;
    profile_init(&p, o);
    kiln_strv_push(ret, or_default(o->mmdebstrap, "mmdebstrap"));
    kiln_strv_push(ret, "--variant=minbase");
    kiln_strv_push(ret, "--mode=root");
    kiln_strv_push(ret, "--format=directory");
    kiln_strv_push_take(ret, kiln_xasprintf("--architectures=%s", or_default(o->arch, "amd64")));
    kiln_strv_push_take(ret, kiln_xasprintf("--include=%s", p.include));
    /* The user and group 100 ("users" in Debian's base-passwd), then no apt lists. */
    if (p.user)
        kiln_strv_push_take(ret, kiln_xasprintf("--customize-hook=chroot \"$1\" useradd "
                                                "--create-home --uid %d --gid %d --shell /bin/bash "
                                                "%s",
                                                KILN_BASE_UID, KILN_BASE_GID, p.user));
    kiln_strv_push(ret,
                   "--customize-hook=rm -rf \"$1\"/var/lib/apt/lists/* \"$1\"/var/cache/apt/*.bin");
    kiln_strv_push(ret, or_default(o->suite, KILN_BASE_SUITE));
    kiln_strv_push(ret, target);
    if (o->mirror)
        kiln_strv_push(ret, o->mirror);
    profile_release(&p);
}

static void strv_from(struct kiln_strv *s, const char *const *v, size_t n)
{
    for (size_t i = 0; i < n && v[i]; i++)
        kiln_strv_push(s, v[i]);
}

static int set_config(struct kiln_image_config *c, const struct profile *p, const char *suite,
                      const char *diff_id, const char *created, const char *created_by,
                      struct kiln_error **err)
{
    struct kiln_strv entry = KILN_STRV_INIT, cmd = KILN_STRV_INIT;
    strv_from(&entry, p->entry, KILN_ARRAY_SIZE(p->entry));
    strv_from(&cmd, p->cmd, KILN_ARRAY_SIZE(p->cmd));
    struct kiln_history h = {.created = created, .created_by = created_by, .comment = p->comment};
    int r = 0;
    for (size_t i = 0; i < KILN_ARRAY_SIZE(p->env) && p->env[i][0]; i++)
        if ((r = kiln_image_config_env_set(c, p->env[i][0], p->env[i][1], err)) < 0)
            goto out;
    if ((r = kiln_image_config_set(c, KILN_IC_USER, p->config_user, err)) < 0 ||
        (r = kiln_image_config_set(c, KILN_IC_WORKING_DIR, p->working_dir, err)) < 0 ||
        (entry.n > 0 && (r = kiln_image_config_set_entrypoint(c, &entry, err)) < 0) ||
        (r = kiln_image_config_set_cmd(c, &cmd, err)) < 0 ||
        (r = kiln_image_config_set(c, KILN_IC_CREATED, created, err)) < 0 ||
        (r = kiln_image_config_set_label(c, "io.kiln.base.suite", suite, err)) < 0 ||
        (r = kiln_image_config_set_label(c, "io.kiln.version", kiln_version(), err)) < 0)
        goto out;
    for (size_t i = 0; i < KILN_ARRAY_SIZE(p->labels) && p->labels[i][0]; i++)
        if ((r = kiln_image_config_set_label(c, p->labels[i][0], p->labels[i][1], err)) < 0)
            goto out;
    if ((r = kiln_image_config_add_diff_id(c, diff_id, err)) < 0 ||
        (r = kiln_image_config_add_history(c, &h, err)) < 0 ||
        (p->volume && (r = kiln_image_config_add_volume(c, p->volume, err)) < 0))
        goto out;
    r = kiln_image_config_add_exposed_port(c, p->port, err);
out:
    kiln_strv_release(&entry);
    kiln_strv_release(&cmd);
    return r;
}

/*
 * Copy the kiln executable (srcfd) into the root file system as
 * KILN_BASE_SELF_BINARY, root:root 0755, and make the empty data dir. The
 * paths are walked below rootfd without following a symlink.
 */
static int install_self(int rootfd, int srcfd, struct kiln_error **err)
{
    const char *bin = &KILN_BASE_SELF_BINARY[1]; /* relative to the root */
    const char *slash = strrchr(bin, '/');
    _cleanup_free_ char *bindir = kiln_xstrndup(bin, (size_t)(slash - bin));
    _cleanup_close_ int dirfd = -1;
    _cleanup_close_ int fd = -1;
    _cleanup_close_ int datafd = -1;
    _cleanup_free_ char *buf = NULL;
    int r = kiln_fs_mkdir_p_at(rootfd, bindir, 0755, &dirfd, err);
    if (r < 0)
        return r;
    fd = openat(dirfd, slash + 1, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0700);
    if (fd < 0)
        return kiln_error_set(err, KILN_EIO, errno, "create '%s'", KILN_BASE_SELF_BINARY);
    enum { CHUNK = 1 << 20 };
    buf = kiln_xmalloc(CHUNK);
    for (off_t off = 0;;) {
        ssize_t n = pread(srcfd, buf, CHUNK, off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return kiln_error_set(err, KILN_EIO, errno, "read the kiln binary");
        if (n == 0)
            break;
        if (kiln_fs_write_all(fd, buf, (size_t)n) < 0)
            return kiln_error_set(err, KILN_EIO, errno, "write '%s'", KILN_BASE_SELF_BINARY);
        off += n;
    }
    /* root's in the image, whoever ran the build */
    if (fchown(fd, 0, 0) < 0 || fchmod(fd, 0755) < 0)
        return kiln_error_set(err, KILN_EIO, errno, "chown/chmod '%s'", KILN_BASE_SELF_BINARY);
    if (close(TAKE_FD(fd)) < 0)
        return kiln_error_set(err, KILN_EIO, errno, "write '%s'", KILN_BASE_SELF_BINARY);
    /* kiln serve makes it 0700 too: the store holds pull secrets */
    if ((r = kiln_fs_mkdir_p_at(rootfd, &KILN_BASE_SELF_DATA_DIR[1], 0700, &datafd, err)) < 0)
        return r;
    if (fchown(datafd, 0, 0) < 0 || fchmod(datafd, 0700) < 0)
        return kiln_error_set(err, KILN_EIO, errno, "chown/chmod '%s'", KILN_BASE_SELF_DATA_DIR);
    return 0;
}

static int layout_sink(void *userdata, const void *data, size_t len, struct kiln_error **err)
{
    return kiln_layout_writer_write(userdata, data, len, err);
}

static int bootstrap(const struct kiln_base_options *o, const char *target, struct kiln_error **err)
{
    struct kiln_strv argv = KILN_STRV_INIT;
    kiln_base_mmdebstrap_argv(o, target, &argv);
    struct kiln_proc_opts po = {
        .argv = (const char *const *)argv.v,
        .on_line = o->on_line,
        .userdata = o->userdata,
        .cancelled = o->cancelled,
    };
    int status = -1;
    int r = kiln_proc_run(&po, &status, err);
    if (r >= 0 && status != 0)
        r = kiln_error_set(err, KILN_EIO, 0, "mmdebstrap failed with exit status %d", status);
    if (r < 0)
        kiln_error_prefix(err, "bootstrap %s", or_default(o->suite, KILN_BASE_SUITE));
    kiln_strv_release(&argv);
    return r;
}

int kiln_base_build(const struct kiln_base_options *o, struct kiln_layout *layout, const char *name,
                    struct kiln_base_result *ret, struct kiln_error **err)
{
    const char *suite = or_default(o->suite, KILN_BASE_SUITE);
    const char *include = include_of(o);
    if (!suite_ok(suite))
        return kiln_error_set(err, KILN_EINVAL, 0, "suite '%s' is not a valid suite name", suite);
    if (!include_ok(include))
        return kiln_error_set(err, KILN_EINVAL, 0,
                              "include '%s' is not a comma-separated list of package names",
                              include);
    if (o->self_binary && o->user)
        return kiln_error_set(err, KILN_EINVAL, 0, "user '%s': kiln's image has no notebook user",
                              o->user);
    if (!user_ok(or_default(o->user, KILN_BASE_USER)))
        return kiln_error_set(err, KILN_EINVAL, 0, "user '%s' is not a valid user name", o->user);
    if (o->mirror && strncmp(o->mirror, "http://", 7) != 0 &&
        strncmp(o->mirror, "https://", 8) != 0)
        return kiln_error_set(err, KILN_EINVAL, 0, "mirror '%s' must be an http(s) URL", o->mirror);
    if (!o->work_dir)
        return kiln_error_set(err, KILN_EINVAL, 0, "a work directory is needed");
    /* opened before the minute of mmdebstrap, so that a wrong path fails at once */
    _cleanup_close_ int selffd = -1;
    if (o->self_binary) {
        struct stat st;
        selffd = open(o->self_binary, O_RDONLY | O_CLOEXEC);
        if (selffd < 0)
            return kiln_error_set(err, KILN_EIO, errno, "open '%s'", o->self_binary);
        if (fstat(selffd, &st) < 0)
            return kiln_error_set(err, KILN_EIO, errno, "stat '%s'", o->self_binary);
        if (!S_ISREG(st.st_mode))
            return kiln_error_set(err, KILN_EINVAL, 0, "'%s' is not a regular file",
                                  o->self_binary);
    }

    char rnd[KILN_FS_RANDOM_NAME_LEN + 1];
    kiln_fs_random_name(rnd);
    _cleanup_free_ char *tmpname = kiln_xasprintf("kiln-base-%s", rnd);
    _cleanup_free_ char *target = kiln_xasprintf("%s/%s", o->work_dir, tmpname);
    _cleanup_close_ int workfd = open(o->work_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (workfd < 0)
        return kiln_error_set(err, KILN_EIO, errno, "open work directory '%s'", o->work_dir);

    struct kiln_layout_writer *w = NULL;
    struct kiln_image_config config = KILN_IMAGE_CONFIG_INIT;
    struct kiln_manifest m = KILN_MANIFEST_INIT;
    struct kiln_buf cbuf = KILN_BUF_INIT, mbuf = KILN_BUF_INIT;
    _cleanup_free_ char *created_by = NULL;
    int rootfd = -1;
    struct profile p;
    profile_init(&p, o);
    int r = bootstrap(o, target, err);
    if (r < 0)
        goto out;

    rootfd = openat(workfd, tmpname, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (rootfd < 0) {
        r = kiln_error_set(err, KILN_EIO, errno, "open '%s'", target);
        goto out;
    }
    if (selffd >= 0 && (r = install_self(rootfd, selffd, err)) < 0) {
        kiln_error_prefix(err, "install kiln");
        goto out;
    }
    struct kiln_pack_options po = {.compress = o->compress};
    if (o->source_date_epoch >= 0) {
        po.clamp_mtime = true;
        po.source_date_epoch = o->source_date_epoch;
    }
    struct kiln_compress_result layer;
    struct kiln_pack_stats stats;
    if ((r = kiln_layout_writer_begin(layout, NULL, -1, &w, err)) < 0 ||
        (r = kiln_pack_dir(rootfd, &po, layout_sink, w, &layer, &stats, err)) < 0 ||
        (r = kiln_layout_writer_commit(w, NULL, err)) < 0) {
        kiln_error_prefix(err, "commit the root file system");
        goto out;
    }

    time_t now = o->source_date_epoch >= 0 ? (time_t)o->source_date_epoch : time(NULL);
    char created[32];
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(created, sizeof(created), "%Y-%m-%dT%H:%M:%SZ", &tm);
    created_by = kiln_xasprintf("%s: mmdebstrap --variant=minbase --include=%s %s%s%s", p.comment,
                                include, suite, p.self ? "; install kiln as " : "",
                                p.self ? KILN_BASE_SELF_BINARY : "");
    const char *arch = or_default(o->arch, "amd64");
    if ((r = kiln_image_config_new(&config, "linux", arch, err)) < 0 ||
        (r = set_config(&config, &p, suite, layer.diff_id, created, created_by, err)) < 0 ||
        (r = kiln_image_config_serialize(&config, &cbuf, err)) < 0)
        goto out;
    char config_digest[KILN_DIGEST_BUFSZ];
    if ((r = kiln_layout_blob_write(layout, cbuf.buf, cbuf.len, NULL, config_digest, err)) < 0)
        goto out;

    /* Built with OCI types, converted when docker types are asked for. */
    m.media_type = kiln_xstrdup(KILN_MT_OCI_MANIFEST);
    m.config.media_type = kiln_xstrdup(KILN_MT_OCI_CONFIG);
    m.config.digest = kiln_xstrdup(config_digest);
    m.config.size = (int64_t)cbuf.len;
    struct kiln_descriptor ld = KILN_DESCRIPTOR_INIT;
    ld.media_type = (char *)layer.media_type;
    ld.digest = layer.digest;
    ld.size = (int64_t)layer.size;
    kiln_manifest_add_layer(&m, &ld);
    if (o->format == KILN_FORMAT_DOCKER && (r = kiln_manifest_convert(&m, o->format, err)) < 0)
        goto out;
    if ((r = kiln_manifest_serialize(&m, &mbuf, err)) < 0)
        goto out;
    char manifest_digest[KILN_DIGEST_BUFSZ];
    if ((r = kiln_layout_blob_write(layout, mbuf.buf, mbuf.len, NULL, manifest_digest, err)) < 0)
        goto out;
    struct kiln_descriptor md = KILN_DESCRIPTOR_INIT;
    md.media_type = (char *)kiln_manifest_media_type(&m);
    md.digest = manifest_digest;
    md.size = (int64_t)mbuf.len;
    if ((r = kiln_layout_index_add(layout, &md, name, err)) < 0)
        goto out;
    if (ret) {
        memcpy(ret->manifest_digest, manifest_digest, sizeof(manifest_digest));
        memcpy(ret->layer_digest, layer.digest, sizeof(layer.digest));
        memcpy(ret->diff_id, layer.diff_id, sizeof(layer.diff_id));
        ret->layer_size = layer.size;
        ret->rootfs_bytes = layer.uncompressed_size;
    }
    r = 0;
out:
    if (rootfd >= 0)
        close(rootfd);
    kiln_layout_writer_free(w);
    kiln_image_config_release(&config);
    kiln_manifest_release(&m);
    kiln_buf_release(&cbuf);
    kiln_buf_release(&mbuf);
    profile_release(&p);
    /* the scratch tree goes whatever happened (mmdebstrap may have left part of one) */
    struct kiln_error *rm_err = NULL;
    if (faccessat(workfd, tmpname, F_OK, AT_SYMLINK_NOFOLLOW) == 0)
        kiln_fs_rm_rf_at(workfd, tmpname, &rm_err);
    kiln_error_free(rm_err);
    return r;
}
