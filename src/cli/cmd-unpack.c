/* kiln unpack REF DIR: flatten an image's layers into a root file system for inspection. */
#include "util/common.h"
#include "cli/cli.h"

#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/progress.h"
#include "cli/registry-config.h"
#include "layer/flatten.h"
#include "oci/layout.h"
#include "registry/transfer.h"
#include "util/fs.h"

/* clang-format off */
static const char unpack_help[] =
    "usage: kiln unpack [OPTIONS] REF DIR\n"
    "\n"
    "Flatten an image into a root file system for inspection. REF is a registry\n"
    "reference (pulled into a temporary OCI layout under the work directory,\n"
    "removed afterwards) or oci:LAYOUT[:NAME], a local OCI image layout (NAME:\n"
    "its index.json entry; default: the only one). The layers are applied in\n"
    "order into DIR: OCI whiteouts (.wh.NAME) delete what lower layers made and\n"
    "opaque whiteouts empty a directory; nothing is written outside DIR. Each\n"
    "layer is checked against its digest and the config's diff_id. DIR must be\n"
    "absent (it is created; its parent must exist) or empty, unless --force.\n"
    "Ownership is kept when run as root; otherwise device nodes and privileged\n"
    "xattrs are skipped. A summary goes to stderr and DIR to stdout. When DIR\n"
    "was created and the unpack fails, it is removed.\n"
    "\n"
    "  --force                 unpack into a non-empty DIR (layers applied over it)\n"
    "  --no-chown              do not keep file owners, even as root\n"
    "  --work-dir DIR          where the temporary layout goes ($TMPDIR, /var/tmp)\n"
    CLI_REGISTRY_OPTIONS_HELP
    "\n"
    CLI_REGISTRY_ENV_HELP;
/* clang-format on */

enum { OPT_FORCE = 0x200, OPT_NO_CHOWN, OPT_WORK_DIR };

struct unpack_progress {
    bool quiet;
    bool tty;
};

static int on_flatten(void *userdata, const struct kiln_flatten_event *ev)
{
    struct unpack_progress *p = userdata;
    if (!p->quiet) {
        char got[32], size[32];
        cli_progress_format_size(got, sizeof(got), ev->bytes);
        cli_progress_format_size(size, sizeof(size), ev->size);
        const char *d = ev->digest;
        if (strncmp(d, "sha256:", 7) == 0)
            d += 7;
        if (ev->done)
            fprintf(stderr, "%slayer %zu/%zu %.12s %s unpacked\n", p->tty ? "\r\033[K" : "",
                    ev->layer + 1, ev->n_layers, d, size);
        else if (p->tty)
            fprintf(stderr, "\r\033[Klayer %zu/%zu %.12s %s / %s", ev->layer + 1, ev->n_layers, d,
                    got, size);
    }
    return cli_registry_interrupted();
}

/*
 * rm -rf of a path given by the user or made here: kiln_fs_rm_rf_at() takes
 * relative paths only, so the parent is opened first (following symlinks:
 * the path is trusted). Errors are ignored.
 */
static void remove_path(const char *path)
{
    _cleanup_free_ char *copy = kiln_xstrdup(path);
    size_t len = strlen(copy);
    while (len > 1 && copy[len - 1] == '/')
        copy[--len] = '\0';
    char *slash = strrchr(copy, '/');
    const char *base = slash ? slash + 1 : copy;
    const char *parent = slash ? (slash == copy ? "/" : copy) : ".";
    if (slash)
        *slash = '\0';
    if (!*base || !strcmp(base, ".") || !strcmp(base, ".."))
        return;
    _cleanup_close_ int pfd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (pfd < 0)
        return;
    struct kiln_error *err = NULL;
    kiln_fs_rm_rf_at(pfd, base, &err);
    kiln_error_free(err);
}

/* Pull `ref` into a new layout at `dir` under the name "image". */
static int pull(struct cli_registry_config *cfg, const char *ref, const char *dir)
{
    _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
    struct kiln_registry_options ro;
    struct kiln_cred cred = KILN_CRED_INIT;
    if (cli_registry_options(cfg, ref, &ro, &cred, &err) < 0)
        return cli_fail(err);
    struct kiln_transfer_options o;
    cli_transfer_options(cfg, &o);
    struct cli_progress *p = cli_progress_new(stderr, cfg->quiet, "pulled");
    const char *style = getenv("KILN_PROGRESS");
    if (style && !strcmp(style, "tty"))
        cli_progress_set_tty(p, 1);
    else if (style && !strcmp(style, "plain"))
        cli_progress_set_tty(p, 0);
    o.progress.fn = cli_progress_event;
    o.progress.userdata = p;
    struct kiln_transfer_result res;
    int r = kiln_transfer_pull(ref, &ro, dir, "image", &o, &res, &err);
    cli_progress_finish(p, r < 0 ? NULL : &res);
    cli_progress_free(p);
    kiln_cred_release(&cred);
    if (r < 0 && cli_registry_interrupted()) {
        fprintf(stderr, "kiln: interrupted\n");
        return kiln_error_exit_code(KILN_ECANCELLED);
    }
    if (r < 0)
        return cli_fail(err);
    return KILN_EXIT_OK;
}

static int run_unpack(int argc, char **argv)
{
    static const struct option opts[] = {
        {"force", no_argument, NULL, OPT_FORCE},
        {"no-chown", no_argument, NULL, OPT_NO_CHOWN},
        {"work-dir", required_argument, NULL, OPT_WORK_DIR},
        {"help", no_argument, NULL, 'h'},
        CLI_REGISTRY_OPTIONS{NULL, 0, NULL, 0},
    };
    struct cli_registry_config cfg;
    cli_registry_config_init(&cfg);
    _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
    _cleanup_free_ char *owned = NULL;
    _cleanup_free_ char *tmpdir = NULL;
    _cleanup_free_ char *layout_dir = NULL;
    struct kiln_layout *layout = NULL;
    const char *work_dir = NULL;
    struct kiln_flatten_options fo = {0};
    bool created = false;
    int rc = KILN_EXIT_OK;
    int c;
    optind = 0;
    while ((c = getopt_long(argc, argv, "hqv", opts, NULL)) != -1) {
        int r = cli_registry_config_option(&cfg, "unpack", c, optarg);
        if (r < 0) {
            rc = -r;
            goto out;
        }
        if (r > 0)
            continue;
        switch (c) {
        case OPT_FORCE:
            fo.force = true;
            break;
        case OPT_NO_CHOWN:
            fo.no_chown = true;
            break;
        case OPT_WORK_DIR:
            work_dir = optarg;
            break;
        case 'h':
            cli_print_help(&kiln_cmd_unpack);
            goto out;
        default:
            rc = cli_usage_error("unpack", "unknown option");
            goto out;
        }
    }
    if (argc - optind != 2) {
        rc = cli_usage_error("unpack", "expected an image reference and a directory");
        goto out;
    }
    const char *arg = argv[optind], *dir = argv[optind + 1];
    if (!*dir) {
        rc = cli_usage_error("unpack", "empty directory name");
        goto out;
    }
    struct kiln_transfer_endpoint ep;
    if (cli_transfer_endpoint_parse(arg, &ep, &owned, &err) < 0) {
        rc = cli_usage_error("unpack", "%s", err->msg);
        goto out;
    }
    if (cli_registry_config_finish(&cfg, &err) < 0) {
        rc = cli_fail(err);
        goto out;
    }
    cli_registry_catch_signals();
    const char *name = ep.name;
    if (ep.layout) {
        layout_dir = kiln_xstrdup(ep.layout);
    } else {
        if (!work_dir)
            work_dir = cfg.spool_dir ? cfg.spool_dir : "/var/tmp";
        tmpdir = kiln_xasprintf("%s/kiln-unpack-XXXXXX", work_dir);
        if (!mkdtemp(tmpdir)) {
            kiln_error_set(&err, KILN_EIO, errno, "create '%s'", tmpdir);
            free(tmpdir);
            tmpdir = NULL;
            rc = cli_fail(err);
            goto out;
        }
        layout_dir = kiln_xasprintf("%s/layout", tmpdir);
        name = "image";
        rc = pull(&cfg, ep.ref, layout_dir);
        if (rc != KILN_EXIT_OK)
            goto out;
    }
    if (kiln_layout_open(layout_dir, &layout, &err) < 0) {
        rc = cli_fail(err);
        goto out;
    }
    struct stat st;
    created = lstat(dir, &st) < 0 && errno == ENOENT;
    struct unpack_progress up = {.quiet = cfg.quiet, .tty = isatty(STDERR_FILENO) == 1};
    const char *style = getenv("KILN_PROGRESS");
    if (style && !strcmp(style, "tty"))
        up.tty = true;
    else if (style && !strcmp(style, "plain"))
        up.tty = false;
    fo.os = cfg.os;
    fo.arch = cfg.arch;
    fo.variant = cfg.variant;
    fo.progress = on_flatten;
    fo.userdata = &up;
    struct kiln_flatten_result res;
    int r = kiln_flatten(layout, name, dir, &fo, &res, &err);
    if (r < 0) {
        if (up.tty && !up.quiet)
            fprintf(stderr, "\r\033[K");
        if (cli_registry_interrupted())
            fprintf(stderr, "kiln: interrupted\n");
        else
            cli_fail(err);
        rc = kiln_error_exit_code(cli_registry_interrupted() ? KILN_ECANCELLED : err->code);
        if (created)
            remove_path(dir);
        else if (r != -KILN_EEXIST) {
            fprintf(stderr, "kiln: '%s' holds a partial tree\n", dir);
        }
        goto out;
    }
    if (!cfg.quiet) {
        char csize[32], fsize[32];
        cli_progress_format_size(csize, sizeof(csize), res.compressed_bytes);
        cli_progress_format_size(fsize, sizeof(fsize), res.file_bytes);
        fprintf(stderr,
                "kiln unpack: %s: %zu layer%s (%s), %" PRIu64 " entries, %s of files, %" PRIu64
                " whiteouts",
                res.manifest_digest, res.n_layers, res.n_layers == 1 ? "" : "s", csize, res.entries,
                fsize, res.whiteouts);
        if (res.skipped)
            fprintf(stderr, ", %" PRIu64 " skipped (not root)", res.skipped);
        fprintf(stderr, "\n");
    }
    printf("%s\n", dir);
out:
    kiln_layout_free(layout);
    if (tmpdir)
        remove_path(tmpdir);
    cli_registry_config_release(&cfg);
    return rc;
}

const struct kiln_cmd kiln_cmd_unpack = {
    .name = "unpack",
    .run = run_unpack,
    .summary = "flatten an image into a root file system for inspection",
    .help = unpack_help,
};
