/*
 * kiln base without mmdebstrap: a fake mmdebstrap script makes a tiny tree,
 * and the library commits it. Checks the mmdebstrap argv of both profiles,
 * the image configs, the install of the kiln binary into kiln's own image
 * (as root only: the copy is chowned to 0:0), and the errors that come
 * before mmdebstrap runs.
 */
#include "util/common.h"
#include "build/base.h"

#include <dirent.h>
#include <fcntl.h>
#include <jansson.h>
#include <sys/stat.h>

#include "kiln/version.h"
#include "oci/config.h"
#include "util/fs.h"
#include "util/strv.h"
#include "tap.h"

static char tmproot[] = "/tmp/kiln-test-base-XXXXXX";

static void write_file(const char *path, const char *data, size_t len, mode_t mode)
{
    FILE *f = fopen(path, "w");
    if (!f || fwrite(data, 1, len, f) != len || fclose(f) != 0) {
        perror(path);
        exit(1);
    }
    chmod(path, mode);
}

/*
 * A fake mmdebstrap: records its argv in WORK/argv (one per line), makes
 * usr/local/bin, etc/hello and var/lib/apt/lists in the target (its last
 * argument), and `extra` (shell, $t the target) after that.
 */
static char *make_fake(const char *name, const char *extra)
{
    char *path = kiln_xasprintf("%s/%s", tmproot, name);
    char *script =
        kiln_xasprintf("#!/bin/sh\n"
                       "for a; do t=$a; done\n"
                       "printf '%%s\\n' \"$@\" >\"$(dirname \"$t\")/argv\"\n"
                       "echo 'I: fake mmdebstrap'\n"
                       "mkdir -p \"$t/usr/local/bin\" \"$t/etc\" \"$t/var/lib/apt/lists\"\n"
                       "echo hello >\"$t/etc/hello\"\n"
                       "%s\n",
                       extra);
    write_file(path, script, strlen(script), 0755);
    free(script);
    return path;
}

static char *new_dir(const char *name)
{
    char *d = kiln_xasprintf("%s/%s", tmproot, name);
    if (mkdir(d, 0755) < 0) {
        perror(d);
        exit(1);
    }
    return d;
}

static bool exists(const char *dir, const char *name)
{
    _cleanup_free_ char *p = kiln_xasprintf("%s/%s", dir, name);
    struct stat st;
    return lstat(p, &st) == 0;
}

/* Is there an entry named PREFIX* in dir? */
static bool has_entry(const char *dir, const char *prefix)
{
    DIR *d = opendir(dir);
    bool found = false;
    struct dirent *e;
    while (d && !found && (e = readdir(d)))
        found = !strncmp(e->d_name, prefix, strlen(prefix));
    if (d)
        closedir(d);
    return found;
}

static char *join_argv(const struct kiln_base_options *o)
{
    struct kiln_strv av = KILN_STRV_INIT;
    kiln_base_mmdebstrap_argv(o, "/T", &av);
    struct kiln_buf b = KILN_BUF_INIT;
    for (size_t i = 0; i < av.n; i++)
        kiln_buf_addf(&b, "%s%s", i ? "\n" : "", av.v[i]);
    kiln_strv_release(&av);
    return kiln_buf_detach(&b, NULL);
}

static void test_argv(void)
{
    struct kiln_base_options o = {.mmdebstrap = "mm"};
    _cleanup_free_ char *jh = join_argv(&o);
    is_str(jh,
           "mm\n--variant=minbase\n--mode=root\n--format=directory\n--architectures=amd64\n"
           "--include=" KILN_BASE_INCLUDE "\n"
           "--customize-hook=chroot \"$1\" useradd --create-home --uid 1000 --gid 100 --shell "
           "/bin/bash jovyan\n"
           "--customize-hook=rm -rf \"$1\"/var/lib/apt/lists/* \"$1\"/var/cache/apt/*.bin\n"
           "bookworm\n/T",
           "the JupyterHub base's mmdebstrap argv");

    o.self_binary = "/k";
    _cleanup_free_ char *self = join_argv(&o);
    is_str(self,
           "mm\n--variant=minbase\n--mode=root\n--format=directory\n--architectures=amd64\n"
           "--include=" KILN_BASE_SELF_INCLUDE "\n"
           "--customize-hook=rm -rf \"$1\"/var/lib/apt/lists/* \"$1\"/var/cache/apt/*.bin\n"
           "bookworm\n/T",
           "kiln's image: its own packages, no user");

    o.include = "runc,libcurl4";
    o.suite = "trixie";
    o.mirror = "http://deb.example/debian";
    _cleanup_free_ char *inc = join_argv(&o);
    ok(strstr(inc, "\n--include=runc,libcurl4\n") && strstr(inc, "\ntrixie\n/T\nhttp://deb."),
       "--include, the suite and the mirror apply to kiln's image too");
}

/* The layout's only image: config (parsed) and layer (raw bytes). */
static int read_image(const char *layout_dir, const char *name, struct kiln_image_config *ret_cfg,
                      char **ret_layer, size_t *ret_layer_len)
{
    struct kiln_layout *l = NULL;
    struct kiln_descriptor d = KILN_DESCRIPTOR_INIT;
    _cleanup_free_ char *man = NULL, *cfg = NULL;
    size_t man_len = 0, cfg_len = 0;
    json_t *j = NULL;
    int r = -1;
    if (kiln_layout_open(layout_dir, &l, NULL) < 0 || kiln_layout_resolve(l, name, &d, NULL) < 0 ||
        kiln_layout_blob_read(l, d.digest, 1 << 20, &man, &man_len, NULL) < 0)
        goto out;
    j = json_loadb(man, man_len, 0, NULL);
    const char *cd = json_string_value(json_object_get(json_object_get(j, "config"), "digest"));
    const char *ld = json_string_value(
        json_object_get(json_array_get(json_object_get(j, "layers"), 0), "digest"));
    if (!cd || !ld || kiln_layout_blob_read(l, cd, 1 << 20, &cfg, &cfg_len, NULL) < 0 ||
        kiln_image_config_parse(cfg, cfg_len, ret_cfg, NULL) < 0)
        goto out;
    if (ret_layer && kiln_layout_blob_read(l, ld, 64 << 20, ret_layer, ret_layer_len, NULL) < 0) {
        kiln_image_config_release(ret_cfg);
        goto out;
    }
    r = 0;
out:
    json_decref(j);
    kiln_descriptor_release(&d);
    kiln_layout_free(l);
    return r;
}

static char *strv_join(const struct kiln_strv *s)
{
    struct kiln_buf b = KILN_BUF_INIT;
    for (size_t i = 0; i < s->n; i++)
        kiln_buf_addf(&b, "%s%s", i ? " " : "", s->v[i]);
    return kiln_buf_detach(&b, NULL);
}

static char *field(const struct kiln_image_config *c, int which)
{
    struct kiln_strv s = KILN_STRV_INIT;
    switch (which) {
    case 0:
        kiln_image_config_entrypoint(c, &s);
        break;
    case 1:
        kiln_image_config_cmd(c, &s);
        break;
    case 2:
        kiln_image_config_exposed_ports(c, &s);
        break;
    case 3:
        kiln_image_config_volumes(c, &s);
        break;
    default:
        kiln_image_config_env(c, &s);
        break;
    }
    char *r = strv_join(&s);
    kiln_strv_release(&s);
    return r;
}

static void test_jupyterhub(const char *fake)
{
    _cleanup_free_ char *work = new_dir("jh-work");
    _cleanup_free_ char *lp = kiln_xasprintf("%s/jh-layout", tmproot);
    struct kiln_layout *l = NULL;
    struct kiln_error *err = NULL;
    struct kiln_base_options o = {.format = KILN_FORMAT_OCI,
                                  .compress = KILN_COMPRESS_OPTIONS_INIT,
                                  .source_date_epoch = 0,
                                  .work_dir = work,
                                  .mmdebstrap = fake};
    struct kiln_base_result res;
    int r = kiln_layout_create(lp, &l, &err);
    if (r >= 0)
        r = kiln_base_build(&o, l, "base", &res, &err);
    ok(r == 0, "the JupyterHub base builds with a fake mmdebstrap (%s)", err ? err->msg : "ok");
    kiln_error_free(err);
    kiln_layout_free(l);
    struct kiln_image_config c = KILN_IMAGE_CONFIG_INIT;
    if (!ok(read_image(lp, "base", &c, NULL, NULL) == 0, "its config reads back"))
        return;
    _cleanup_free_ char *entry = field(&c, 0), *cmd = field(&c, 1), *ports = field(&c, 2),
                        *vols = field(&c, 3), *env = field(&c, 4);
    is_str(entry, "", "no ENTRYPOINT");
    is_str(cmd, "jupyterhub-singleuser", "CMD jupyterhub-singleuser");
    is_str(kiln_image_config_get(&c, KILN_IC_USER), "1000", "USER 1000");
    is_str(kiln_image_config_get(&c, KILN_IC_WORKING_DIR), "/home/jovyan", "WORKDIR the home");
    is_str(ports, "8888/tcp", "EXPOSE 8888/tcp");
    is_str(vols, "", "no VOLUME");
    is_str(env,
           "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "
           "SHELL=/bin/bash HOME=/home/jovyan NB_USER=jovyan NB_UID=1000 NB_GID=100",
           "ENV, in order");
    is_str(kiln_image_config_label(&c, "org.opencontainers.image.title"), NULL,
           "no OCI title label");
    is_str(kiln_image_config_label(&c, "io.kiln.version"), kiln_version(), "io.kiln.version");
    struct kiln_history h;
    ok(kiln_image_config_history(&c, 0, &h) == 0 && h.comment && !strcmp(h.comment, "kiln base") &&
           h.created_by && !strncmp(h.created_by, "kiln base: mmdebstrap", 21),
       "history: kiln base");
    kiln_image_config_release(&c);
}

/* The tar header of `name` (a file or a dir) in an uncompressed layer, or NULL. */
static const char *tar_find(const char *tar, size_t len, const char *name, size_t *ret_size)
{
    for (size_t off = 0; off + 512 <= len;) {
        const char *h = tar + off;
        if (!h[0])
            return NULL;
        size_t size = (size_t)strtoull(h + 124, NULL, 8);
        char hname[101];
        memcpy(hname, h, 100);
        hname[100] = 0;
        size_t n = strlen(hname);
        if (n && hname[n - 1] == '/')
            hname[n - 1] = 0;
        if (!strcmp(hname, name) || (!strncmp(hname, "./", 2) && !strcmp(hname + 2, name))) {
            *ret_size = size;
            return h;
        }
        off += 512 + (size + 511) / 512 * 512;
    }
    return NULL;
}

static void test_self(const char *fake, const char *fake_symlink)
{
    if (geteuid() != 0) {
        ok(1, "kiln's image # SKIP not root (the binary is chowned to 0:0)");
        return;
    }
    /* more than one copy chunk (1 MiB), not a multiple of it */
    size_t bin_len = (5u << 19) + 123;
    _cleanup_free_ char *bin = kiln_xmalloc(bin_len);
    for (size_t i = 0; i < bin_len; i++)
        bin[i] = (char)(i * 7 + i / 4096);
    _cleanup_free_ char *binpath = kiln_xasprintf("%s/kiln-binary", tmproot);
    write_file(binpath, bin, bin_len, 0700);

    _cleanup_free_ char *work = new_dir("self-work");
    _cleanup_free_ char *lp = kiln_xasprintf("%s/self-layout", tmproot);
    struct kiln_layout *l = NULL;
    struct kiln_error *err = NULL;
    struct kiln_base_options o = {.format = KILN_FORMAT_OCI,
                                  .compress = {.algo = KILN_COMPRESSION_NONE},
                                  .source_date_epoch = 0,
                                  .work_dir = work,
                                  .mmdebstrap = fake,
                                  .self_binary = binpath};
    struct kiln_base_result res;
    int r = kiln_layout_create(lp, &l, &err);
    if (r >= 0)
        r = kiln_base_build(&o, l, "kiln", &res, &err);
    ok(r == 0, "kiln's image builds with a fake mmdebstrap (%s)", err ? err->msg : "ok");
    kiln_error_free(err);
    err = NULL;
    kiln_layout_free(l);
    ok(!has_entry(work, "kiln-base-"), "no scratch tree left");

    struct kiln_image_config c = KILN_IMAGE_CONFIG_INIT;
    _cleanup_free_ char *layer = NULL;
    size_t layer_len = 0;
    if (!ok(read_image(lp, "kiln", &c, &layer, &layer_len) == 0, "its config and layer read back"))
        return;
    _cleanup_free_ char *entry = field(&c, 0), *cmd = field(&c, 1), *ports = field(&c, 2),
                        *vols = field(&c, 3), *env = field(&c, 4);
    is_str(entry, "/usr/local/bin/kiln", "ENTRYPOINT /usr/local/bin/kiln");
    is_str(cmd, "serve --listen 0.0.0.0:8080", "CMD serve --listen 0.0.0.0:8080");
    is_str(kiln_image_config_get(&c, KILN_IC_USER), "0", "USER 0");
    is_str(kiln_image_config_get(&c, KILN_IC_WORKING_DIR), "/var/lib/kiln", "WORKDIR the data dir");
    is_str(ports, "8080/tcp", "EXPOSE 8080/tcp");
    is_str(vols, "/var/lib/kiln", "VOLUME the data dir");
    is_str(env,
           "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "
           "KILN_DATA_DIR=/var/lib/kiln",
           "ENV PATH LANG KILN_DATA_DIR");
    is_str(kiln_image_config_label(&c, "org.opencontainers.image.title"), "kiln", "title label");
    is_str(kiln_image_config_label(&c, "org.opencontainers.image.version"), kiln_version(),
           "version label");
    is_str(kiln_image_config_label(&c, "io.kiln.base.suite"), "bookworm", "suite label");
    struct kiln_history h;
    ok(kiln_image_config_history(&c, 0, &h) == 0 && h.comment &&
           !strcmp(h.comment, "kiln base --self") && h.created_by &&
           strstr(h.created_by, "--include=" KILN_BASE_SELF_INCLUDE " bookworm; install kiln as "
                                "/usr/local/bin/kiln"),
       "history: kiln base --self");
    kiln_image_config_release(&c);

    size_t size = 0;
    const char *hb = tar_find(layer, layer_len, "usr/local/bin/kiln", &size);
    if (ok(hb != NULL, "the layer has usr/local/bin/kiln")) {
        is_int(hb[156], '0', "a regular file");
        is_int(strtol(hb + 100, NULL, 8), 0755, "mode 0755");
        is_int(strtol(hb + 108, NULL, 8), 0, "uid 0");
        is_int(strtol(hb + 116, NULL, 8), 0, "gid 0");
        ok(size == bin_len && (size_t)(hb + 512 - layer) + size <= layer_len &&
               memcmp(hb + 512, bin, bin_len) == 0,
           "its content is the binary's (%zu bytes)", size);
    }
    const char *hd = tar_find(layer, layer_len, "var/lib/kiln", &size);
    if (ok(hd != NULL, "the layer has var/lib/kiln")) {
        is_int(hd[156], '5', "a directory");
        is_int(strtol(hd + 100, NULL, 8), 0700, "mode 0700");
    }
    ok(tar_find(layer, layer_len, "etc/hello", &size) != NULL, "and the bootstrapped tree");

    /* usr/local a symlink out of the tree: refused, nothing written outside */
    _cleanup_free_ char *work2 = new_dir("self-work2");
    _cleanup_free_ char *lp2 = kiln_xasprintf("%s/self-layout2", tmproot);
    o.work_dir = work2;
    o.mmdebstrap = fake_symlink;
    r = kiln_layout_create(lp2, &l, &err);
    if (r >= 0)
        r = kiln_base_build(&o, l, "kiln", &res, &err);
    ok(r < 0 && err && strstr(err->msg, "install kiln"),
       "a symlink on the way to /usr/local/bin is refused (%s)", err ? err->msg : "no error");
    kiln_error_free(err);
    kiln_layout_free(l);
    _cleanup_free_ char *outside = kiln_xasprintf("%s/outside", tmproot);
    ok(!exists(outside, "bin/kiln") && !exists(outside, "bin"), "nothing written outside the tree");
    ok(!has_entry(work2, "kiln-base-"), "the scratch tree is removed after the error");
}

static void test_errors(const char *fake)
{
    _cleanup_free_ char *work = new_dir("err-work");
    _cleanup_free_ char *lp = kiln_xasprintf("%s/err-layout", tmproot);
    struct kiln_layout *l = NULL;
    struct kiln_error *err = NULL;
    if (kiln_layout_create(lp, &l, NULL) < 0) {
        ok(0, "create a layout");
        return;
    }
    struct kiln_base_options o = {.format = KILN_FORMAT_OCI,
                                  .compress = KILN_COMPRESS_OPTIONS_INIT,
                                  .source_date_epoch = 0,
                                  .work_dir = work,
                                  .mmdebstrap = fake,
                                  .self_binary = "/nonexistent/kiln",
                                  .user = "alice"};
    int r = kiln_base_build(&o, l, "x", NULL, &err);
    ok(r == -KILN_EINVAL && err && strstr(err->msg, "no notebook user"),
       "a user with self_binary is refused (%s)", err ? err->msg : "no error");
    kiln_error_free(err);
    err = NULL;

    o.user = NULL;
    r = kiln_base_build(&o, l, "x", NULL, &err);
    ok(r < 0 && err && strstr(err->msg, "/nonexistent/kiln"), "a missing binary is an error (%s)",
       err ? err->msg : "no error");
    kiln_error_free(err);
    err = NULL;

    o.self_binary = tmproot;
    r = kiln_base_build(&o, l, "x", NULL, &err);
    ok(r == -KILN_EINVAL && err && strstr(err->msg, "not a regular file"),
       "a directory as the binary is refused (%s)", err ? err->msg : "no error");
    kiln_error_free(err);
    err = NULL;

    o.include = "runc;rm -rf /";
    r = kiln_base_build(&o, l, "x", NULL, &err);
    ok(r == -KILN_EINVAL, "a bad include is refused with self_binary too");
    kiln_error_free(err);
    ok(!exists(work, "argv"), "mmdebstrap never ran for any of them");
    kiln_layout_free(l);
}

int main(void)
{
    if (!mkdtemp(tmproot)) {
        perror("mkdtemp");
        return 1;
    }
    _cleanup_free_ char *fake = make_fake("mmdebstrap", "");
    _cleanup_free_ char *outside = new_dir("outside");
    _cleanup_free_ char *extra =
        kiln_xasprintf("rm -rf \"$t/usr/local\" && ln -s '%s' \"$t/usr/local\"", outside);
    _cleanup_free_ char *fake_symlink = make_fake("mmdebstrap-symlink", extra);
    test_argv();
    test_jupyterhub(fake);
    test_self(fake, fake_symlink);
    test_errors(fake);
    kiln_fs_rm_rf_at(AT_FDCWD, tmproot, NULL);
    return tap_done();
}
