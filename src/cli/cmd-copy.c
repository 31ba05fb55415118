/* kiln copy SRC DST [--all] [--tag T]... */
#include "util/common.h"
#include "cli/cli.h"

#include <getopt.h>

#include "cli/registry-config.h"
#include "registry/transfer.h"

/* clang-format off */
static const char copy_help[] =
    "usage: kiln copy [OPTIONS] SRC DST\n"
    "\n"
    "Copy an image: from a registry to another registry (like 'skopeo copy'),\n"
    "or to the same registry under another name. SRC and DST are image\n"
    "references (REGISTRY/REPO[:TAG][@DIGEST], optionally with 'docker://'),\n"
    "or OCI image layouts as oci:DIR[:NAME].\n"
    "\n"
    "Blobs already at the destination are skipped (a HEAD each); within one\n"
    "registry they are mounted from the source repository; between registries\n"
    "each blob is streamed, the upload following the download: between two\n"
    "plain-HTTP registries (loopback, --insecure-registry; no proxy) the bytes\n"
    "go from one socket to the other inside the kernel (splice), one PATCH per\n"
    "blob unless --chunk-size is given; else, or when that fails midway, they\n"
    "pass through kiln's memory in PATCH chunks. Manifests are written last,\n"
    "so a failed copy never leaves a tag behind. From an image index only the\n"
    "manifest of --platform is copied, unless --all. The digest of what DST\n"
    "names is printed on stdout.\n"
    "\n"
    "  --all                   copy every manifest of an index, and the index\n"
    "  -t, --tag TAG           also tag the image TAG at DST (repeatable)\n"
    "  --oci-types             OCI layout destination: convert docker manifests\n"
    "                          to OCI media types (new digest; skopeo needs it)\n"
    "  --no-splice             never move blob bytes in the kernel: always\n"
    "                          through kiln's memory\n"
    CLI_REGISTRY_OPTIONS_HELP
    "\n"
    CLI_REGISTRY_ENV_HELP;
/* clang-format on */

enum { OPT_ALL = 0x200, OPT_OCI_TYPES, OPT_NO_SPLICE };

static int run_copy(int argc, char **argv)
{
    static const struct option opts[] = {
        {"all", no_argument, NULL, OPT_ALL},
        {"tag", required_argument, NULL, 't'},
        {"oci-types", no_argument, NULL, OPT_OCI_TYPES},
        {"no-splice", no_argument, NULL, OPT_NO_SPLICE},
        {"help", no_argument, NULL, 'h'},
        CLI_REGISTRY_OPTIONS{NULL, 0, NULL, 0},
    };
    struct cli_registry_config cfg;
    cli_registry_config_init(&cfg);
    _cleanup_(kiln_strv_release) struct kiln_strv tags = KILN_STRV_INIT;
    _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
    _cleanup_free_ char *sown = NULL;
    _cleanup_free_ char *down = NULL;
    bool all = false, oci_types = false, no_splice = false;
    int rc = KILN_EXIT_OK;
    int c;
    optind = 0;
    while ((c = getopt_long(argc, argv, "t:hqv", opts, NULL)) != -1) {
        int r = cli_registry_config_option(&cfg, "copy", c, optarg);
        if (r < 0) {
            rc = -r;
            goto out;
        }
        if (r > 0)
            continue;
        switch (c) {
        case OPT_ALL:
            all = true;
            break;
        case OPT_OCI_TYPES:
            oci_types = true;
            break;
        case OPT_NO_SPLICE:
            no_splice = true;
            break;
        case 't':
            kiln_strv_push(&tags, optarg);
            break;
        case 'h':
            cli_print_help(&kiln_cmd_copy);
            goto out;
        default:
            rc = cli_usage_error("copy", "unknown option");
            goto out;
        }
    }
    if (argc - optind != 2) {
        rc = cli_usage_error("copy", "expected SRC and DST");
        goto out;
    }
    struct kiln_transfer_endpoint src, dst;
    if (cli_transfer_endpoint_parse(argv[optind], &src, &sown, &err) < 0 ||
        cli_transfer_endpoint_parse(argv[optind + 1], &dst, &down, &err) < 0 ||
        cli_registry_config_finish(&cfg, &err) < 0) {
        rc = cli_fail(err);
        goto out;
    }
    struct kiln_transfer_options o;
    cli_transfer_options(&cfg, &o);
    o.all = all;
    o.layout_oci_types = oci_types;
    o.no_splice = no_splice;
    o.tags = (const char *const *)tags.v;
    rc = cli_transfer_run(&cfg, "copied", &src, &dst, &o);
out:
    cli_registry_config_release(&cfg);
    return rc;
}

const struct kiln_cmd kiln_cmd_copy = {
    .name = "copy",
    .run = run_copy,
    .summary = "copy an image between registries (or OCI layouts)",
    .help = copy_help,
};
