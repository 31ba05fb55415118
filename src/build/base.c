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

void kiln_base_mmdebstrap_argv(const struct kiln_base_options *o, const char *target,
                               struct kiln_strv *ret)
{
    const char *user = or_default(o->user, KILN_BASE_USER);
    kiln_strv_push(ret, or_default(o->mmdebstrap, "mmdebstrap"));
    kiln_strv_push(ret, "--variant=minbase");
    kiln_strv_push(ret, "--mode=root");
    kiln_strv_push(ret, "--format=directory");
    kiln_strv_push_take(ret, kiln_xasprintf("--architectures=%s", or_default(o->arch, "amd64")));
    kiln_strv_push_take(ret,
                        kiln_xasprintf("--include=%s", or_default(o->include, KILN_BASE_INCLUDE)));
    /* The user and group 100 ("users" in Debian's base-passwd), then no apt lists. */
    kiln_strv_push_take(ret, kiln_xasprintf("--customize-hook=chroot \"$1\" useradd --create-home "
                                            "--uid %d --gid %d --shell /bin/bash %s",
                                            KILN_BASE_UID, KILN_BASE_GID, user));
    kiln_strv_push(ret,
                   "--customize-hook=rm -rf \"$1\"/var/lib/apt/lists/* \"$1\"/var/cache/apt/*.bin");
    kiln_strv_push(ret, or_default(o->suite, KILN_BASE_SUITE));
    kiln_strv_push(ret, target);
    if (o->mirror)
        kiln_strv_push(ret, o->mirror);
}

static int set_config(struct kiln_image_config *c, const struct kiln_base_options *o,
                      const char *diff_id, const char *created, const char *created_by,
                      struct kiln_error **err)
{
    const char *user = or_default(o->user, KILN_BASE_USER);
    _cleanup_free_ char *home = kiln_xasprintf("/home/%s", user);
    _cleanup_free_ char *uid = kiln_xasprintf("%d", KILN_BASE_UID);
    _cleanup_free_ char *gid = kiln_xasprintf("%d", KILN_BASE_GID);
    struct kiln_strv cmd = KILN_STRV_INIT;
    kiln_strv_push(&cmd, "jupyterhub-singleuser");
    struct kiln_history h = {.created = created, .created_by = created_by, .comment = "kiln base"};
    int r = 0;
    if ((r = kiln_image_config_env_set(
             c, "PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", err)) < 0 ||
        (r = kiln_image_config_env_set(c, "LANG", "C.UTF-8", err)) < 0 ||
        (r = kiln_image_config_env_set(c, "SHELL", "/bin/bash", err)) < 0 ||
        (r = kiln_image_config_env_set(c, "HOME", home, err)) < 0 ||
        (r = kiln_image_config_env_set(c, "NB_USER", user, err)) < 0 ||
        (r = kiln_image_config_env_set(c, "NB_UID", uid, err)) < 0 ||
        (r = kiln_image_config_env_set(c, "NB_GID", gid, err)) < 0 ||
        (r = kiln_image_config_set(c, KILN_IC_USER, uid, err)) < 0 ||
        (r = kiln_image_config_set(c, KILN_IC_WORKING_DIR, home, err)) < 0 ||
        (r = kiln_image_config_set_cmd(c, &cmd, err)) < 0 ||
        (r = kiln_image_config_set(c, KILN_IC_CREATED, created, err)) < 0 ||
        (r = kiln_image_config_set_label(c, "io.kiln.base.suite",
                                         or_default(o->suite, KILN_BASE_SUITE), err)) < 0 ||
        (r = kiln_image_config_set_label(c, "io.kiln.version", kiln_version(), err)) < 0 ||
        (r = kiln_image_config_add_diff_id(c, diff_id, err)) < 0 ||
        (r = kiln_image_config_add_history(c, &h, err)) < 0)
        goto out;
    r = kiln_image_config_add_exposed_port(c, "8888/tcp", err);
out:
    kiln_strv_release(&cmd);
    return r;
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
    const char *include = or_default(o->include, KILN_BASE_INCLUDE);
    if (!suite_ok(suite))
        return kiln_error_set(err, KILN_EINVAL, 0, "suite '%s' is not a valid suite name", suite);
    if (!include_ok(include))
        return kiln_error_set(err, KILN_EINVAL, 0,
                              "include '%s' is not a comma-separated list of package names",
                              include);
    if (!user_ok(or_default(o->user, KILN_BASE_USER)))
        return kiln_error_set(err, KILN_EINVAL, 0, "user '%s' is not a valid user name", o->user);
    if (o->mirror && strncmp(o->mirror, "http://", 7) != 0 &&
        strncmp(o->mirror, "https://", 8) != 0)
        return kiln_error_set(err, KILN_EINVAL, 0, "mirror '%s' must be an http(s) URL", o->mirror);
    if (!o->work_dir)
        return kiln_error_set(err, KILN_EINVAL, 0, "a work directory is needed");

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
    int r = bootstrap(o, target, err);
    if (r < 0)
        goto out;

    rootfd = openat(workfd, tmpname, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (rootfd < 0) {
        r = kiln_error_set(err, KILN_EIO, errno, "open '%s'", target);
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
    created_by =
        kiln_xasprintf("kiln base: mmdebstrap --variant=minbase --include=%s %s", include, suite);
    const char *arch = or_default(o->arch, "amd64");
    if ((r = kiln_image_config_new(&config, "linux", arch, err)) < 0 ||
        (r = set_config(&config, o, layer.diff_id, created, created_by, err)) < 0 ||
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
    /* the scratch tree goes whatever happened (mmdebstrap may have left part of one) */
    struct kiln_error *rm_err = NULL;
    if (faccessat(workfd, tmpname, F_OK, AT_SYMLINK_NOFOLLOW) == 0)
        kiln_fs_rm_rf_at(workfd, tmpname, &rm_err);
    kiln_error_free(rm_err);
    return r;
}
