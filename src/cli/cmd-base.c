/* kiln base: bootstrap a JupyterHub-ready base image, or kiln's own, from Debian packages. */
#include "util/common.h"
#include "cli/cli.h"

#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <sys/stat.h>

#include "build/base.h"
#include "cli/registry-config.h"
#include "kiln/version.h"
#include "oci/layout.h"
#include "util/fs.h"

static const char base_help[] =
    "usage: kiln base [--push REF] [--oci-dir DIR[:NAME]] [--self] [OPTIONS]\n"
    "\n"
    "Bootstrap a base image from Debian packages with mmdebstrap (variant minbase,\n"
    "the host's apt sources), remove the apt lists, commit it as one layer and\n"
    "write it into an OCI image layout, then push it. Needs root (mmdebstrap\n"
    "--mode=root). Its last stdout line is REF@DIGEST when pushed, else the\n"
    "manifest digest.\n"
    "\n"
    "By default the image is JupyterHub-ready: the user jovyan (uid 1000, gid 100,\n"
    "home /home/jovyan), ENV PATH LANG SHELL HOME NB_USER NB_UID NB_GID, WORKDIR\n"
    "the home, CMD jupyterhub-singleuser, USER 1000, EXPOSE 8888.\n"
    "\n"
    "With --self it is an image of this kiln: the running binary as\n"
    "" KILN_BASE_SELF_BINARY " (root, mode 0755), with runc, mmdebstrap, CA\n"
    "certificates and the libraries kiln links; ENTRYPOINT " KILN_BASE_SELF_BINARY ",\n"
    "CMD serve --listen " KILN_BASE_SELF_LISTEN ", ENV PATH LANG\n"
    "KILN_DATA_DIR=" KILN_BASE_SELF_DATA_DIR ", WORKDIR and VOLUME " KILN_BASE_SELF_DATA_DIR
    ", USER 0\n"
    "(kiln serve's builds mount overlays and run runc), EXPOSE 8080, and the labels\n"
    "org.opencontainers.image.title=kiln and org.opencontainers.image.version=\n"
    "kiln's version. Run it as a privileged container.\n"
    "\n"
    "  --push REF           push the image to REF (e.g. 127.0.0.1:5000/kiln/base:bookworm)\n"
    "  --oci-dir DIR[:NAME] keep the layout in DIR under NAME (default: a temporary\n"
    "                       layout, removed after the push; NAME defaults to the\n"
    "                       suite, to kiln with --self)\n"
    "  --self               make the image of this kiln binary (see above)\n"
    "  --suite SUITE        Debian suite (" KILN_BASE_SUITE ")\n"
    "  --include PKG,...    packages to install (default:\n"
    "                       " KILN_BASE_INCLUDE ";\n"
    "                       with --self: " KILN_BASE_SELF_INCLUDE ")\n"
    "  --mirror URL         an apt mirror instead of the host's sources\n"
    "  --user NAME          the notebook user's name (" KILN_BASE_USER "; not with --self)\n"
    "  --format docker|oci  manifest media types (docker)\n"
    "  --compression gzip|zstd|none  layer compression (gzip)\n"
    "  --work-dir DIR       scratch space for the root file system (/var/tmp)\n"
    "\n"
    "registry options (with --push):\n" CLI_REGISTRY_OPTIONS_HELP "\n" CLI_REGISTRY_ENV_HELP;

enum {
    OPT_PUSH = 0x200,
    OPT_OCI_DIR,
    OPT_SUITE,
    OPT_INCLUDE,
    OPT_MIRROR,
    OPT_USER,
    OPT_FORMAT,
    OPT_COMPRESSION,
    OPT_WORK_DIR,
    OPT_SELF,
};

static void print_line(void *userdata, enum kiln_proc_stream stream, const char *line, size_t len)
{
    const bool *quiet = userdata;
    if (!*quiet)
        fprintf(stderr, "mmdebstrap: %.*s\n", (int)len, line);
}

static int cancelled(void *userdata)
{
    return cli_registry_interrupted();
}

static int run_base(int argc, char **argv)
{
    static const struct option opts[] = {
        {"push", required_argument, NULL, OPT_PUSH},
        {"oci-dir", required_argument, NULL, OPT_OCI_DIR},
        {"suite", required_argument, NULL, OPT_SUITE},
        {"include", required_argument, NULL, OPT_INCLUDE},
        {"mirror", required_argument, NULL, OPT_MIRROR},
        {"user", required_argument, NULL, OPT_USER},
        {"format", required_argument, NULL, OPT_FORMAT},
        {"compression", required_argument, NULL, OPT_COMPRESSION},
        {"work-dir", required_argument, NULL, OPT_WORK_DIR},
        {"self", no_argument, NULL, OPT_SELF},
        {"help", no_argument, NULL, 'h'},
        CLI_REGISTRY_OPTIONS{NULL, 0, NULL, 0},
    };
    struct cli_registry_config cfg;
    cli_registry_config_init(&cfg);
    _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
    _cleanup_free_ char *dir = NULL;
    _cleanup_free_ char *tmpdir = NULL;
    _cleanup_free_ char *self = NULL;
    bool want_self = false;
    const char *name = NULL, *push = NULL;
    struct kiln_base_options bo = {.format = KILN_FORMAT_DOCKER,
                                   .compress = KILN_COMPRESS_OPTIONS_INIT,
                                   .source_date_epoch = -1,
                                   .work_dir = "/var/tmp"};
    struct kiln_layout *layout = NULL;
    int rc = KILN_EXIT_OK;
    int c;
    optind = 0;
    while ((c = getopt_long(argc, argv, "hqv", opts, NULL)) != -1) {
        int r = cli_registry_config_option(&cfg, "base", c, optarg);
        if (r < 0) {
            rc = -r;
            goto out;
        }
        if (r > 0)
            continue;
        switch (c) {
        case OPT_PUSH:
            push = optarg;
            break;
        case OPT_OCI_DIR: {
            free(dir);
            dir = kiln_xstrdup(optarg);
            char *colon = strchr(dir, ':');
            name = NULL;
            if (colon) {
                *colon = '\0';
                name = colon + 1;
            }
            break;
        }
        case OPT_SUITE:
            bo.suite = optarg;
            break;
        case OPT_INCLUDE:
            bo.include = optarg;
            break;
        case OPT_MIRROR:
            bo.mirror = optarg;
            break;
        case OPT_USER:
            bo.user = optarg;
            break;
        case OPT_FORMAT:
            if (!strcmp(optarg, "docker"))
                bo.format = KILN_FORMAT_DOCKER;
            else if (!strcmp(optarg, "oci"))
                bo.format = KILN_FORMAT_OCI;
            else {
                rc =
                    cli_usage_error("base", "--format must be 'docker' or 'oci', not '%s'", optarg);
                goto out;
            }
            break;
        case OPT_COMPRESSION:
            if (kiln_compression_parse(optarg, &bo.compress.algo, &err) < 0) {
                rc = cli_usage_error("base", "--compression: %s", err->msg);
                goto out;
            }
            break;
        case OPT_WORK_DIR:
            bo.work_dir = optarg;
            break;
        case OPT_SELF:
            want_self = true;
            break;
        case 'h':
            cli_print_help(&kiln_cmd_base);
            goto out;
        default:
            rc = cli_usage_error("base", "unknown option");
            goto out;
        }
    }
    if (argc - optind != 0) {
        rc = cli_usage_error("base", "unexpected argument '%s'", argv[optind]);
        goto out;
    }
    if (!push && !dir) {
        rc = cli_usage_error("base", "give --push REF, --oci-dir DIR, or both");
        goto out;
    }
    if (want_self && bo.user) {
        rc = cli_usage_error("base", "--user is for the JupyterHub base, not --self");
        goto out;
    }
    if (bo.format == KILN_FORMAT_DOCKER && bo.compress.algo != KILN_COMPRESSION_GZIP) {
        rc = cli_usage_error("base", "docker media types need gzip layers (use --format oci)");
        goto out;
    }
    if (cli_registry_config_finish(&cfg, &err) < 0) {
        rc = cli_fail(err);
        goto out;
    }
    if (want_self) {
        /* the library reads no /proc: it gets the path of the running binary */
        self = kiln_xmalloc(PATH_MAX);
        ssize_t n = readlink("/proc/self/exe", self, PATH_MAX - 1);
        if (n < 0) {
            kiln_error_set(&err, KILN_EIO, errno, "readlink '/proc/self/exe'");
            rc = cli_fail(err);
            goto out;
        }
        self[n] = '\0';
        bo.self_binary = self;
    }
    if (!name || !*name)
        name = want_self ? "kiln" : bo.suite ? bo.suite : KILN_BASE_SUITE;
    if (!dir) {
        tmpdir = kiln_xasprintf("%s/kiln-base-layout-XXXXXX", bo.work_dir);
        if (!mkdtemp(tmpdir)) {
            kiln_error_set(&err, KILN_EIO, errno, "create '%s'", tmpdir);
            free(tmpdir);
            tmpdir = NULL;
            rc = cli_fail(err);
            goto out;
        }
        dir = kiln_xasprintf("%s/layout", tmpdir);
    }
    struct stat st;
    int r = stat(dir, &st) == 0 ? kiln_layout_open(dir, &layout, &err)
                                : kiln_layout_create(dir, &layout, &err);
    if (r < 0) {
        rc = cli_fail(err);
        goto out;
    }
    cli_registry_catch_signals();
    bo.on_line = print_line;
    bo.userdata = &cfg.quiet;
    bo.cancelled = cancelled;
    struct kiln_base_result res;
    if (!cfg.quiet && want_self)
        fprintf(stderr, "kiln base: bootstrapping %s with mmdebstrap for kiln %s (%s)\n",
                bo.suite ? bo.suite : KILN_BASE_SUITE, kiln_version(), self);
    else if (!cfg.quiet)
        fprintf(stderr, "kiln base: bootstrapping %s with mmdebstrap\n",
                bo.suite ? bo.suite : KILN_BASE_SUITE);
    if (kiln_base_build(&bo, layout, name, &res, &err) < 0) {
        rc = cli_fail(err);
        goto out;
    }
    if (!cfg.quiet)
        fprintf(stderr, "kiln base: layer %s (%.1f MB, %.1f MB unpacked), manifest %s\n",
                res.layer_digest, res.layer_size / 1e6, res.rootfs_bytes / 1e6,
                res.manifest_digest);
    kiln_layout_free(layout);
    layout = NULL;
    if (!push) {
        printf("%s\n", res.manifest_digest);
        goto out;
    }
    if (strncmp(push, "docker://", 9) == 0)
        push += 9;
    cfg.print_ref = true;
    struct kiln_transfer_endpoint src = {.layout = dir, .name = name};
    struct kiln_transfer_endpoint dst = {.ref = push};
    struct kiln_transfer_options o;
    cli_transfer_options(&cfg, &o);
    rc = cli_transfer_run(&cfg, "pushed", &src, &dst, &o);
out:
    kiln_layout_free(layout);
    if (tmpdir) {
        /* kiln_fs_rm_rf_at() takes a path relative to a directory fd */
        struct kiln_error *rm_err = NULL;
        _cleanup_close_ int parent = open(bo.work_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        const char *base = strrchr(tmpdir, '/');
        if (parent < 0 || kiln_fs_rm_rf_at(parent, base ? base + 1 : tmpdir, &rm_err) < 0)
            fprintf(stderr, "kiln: warning: could not remove '%s'%s%s\n", tmpdir,
                    rm_err ? ": " : "", rm_err ? rm_err->msg : "");
        kiln_error_free(rm_err);
    }
    cli_registry_config_release(&cfg);
    return rc;
}

const struct kiln_cmd kiln_cmd_base = {
    .name = "base",
    .run = run_base,
    .summary = "bootstrap a JupyterHub-ready base image (or kiln's own, --self)",
    .help = base_help,
};
