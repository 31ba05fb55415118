/* kiln pull REF --oci-dir DIR [--name N]; kiln push --oci-dir DIR[:NAME] REF [--tag T]... */
#include "util/common.h"
#include "cli/cli.h"

#include <getopt.h>

#include "cli/registry-config.h"
#include "registry/transfer.h"

/* clang-format off */
static const char pull_help[] =
    "usage: kiln pull [OPTIONS] REF --oci-dir DIR [--name NAME]\n"
    "\n"
    "Download an image from a registry into an OCI image layout directory\n"
    "(created when missing; its parent must exist). Blobs already in the\n"
    "layout are skipped; the others are streamed in, each checked against its\n"
    "digest and size before it appears under its name. The manifest is stored\n"
    "as the registry serves it (same digest), and index.json names it NAME\n"
    "(default: the tag of REF). From an image index only the manifest of\n"
    "--platform is pulled, unless --all. The manifest digest is printed on\n"
    "stdout.\n"
    "\n"
    "Docker-typed images (application/vnd.docker.*) stay docker-typed: umoci\n"
    "reads such a layout, skopeo 1.9 does not ('no descriptor found for\n"
    "reference'); --oci-types converts the manifests to OCI media types (the\n"
    "manifest digest changes, config and layers do not).\n"
    "\n"
    "  --oci-dir DIR           the OCI image layout to write (required)\n"
    "  --name NAME             ref name in index.json (default: the tag)\n"
    "  --all                   pull every manifest of an index, and the index\n"
    "  --oci-types             store docker manifests with OCI media types\n"
    CLI_REGISTRY_OPTIONS_HELP
    "\n"
    CLI_REGISTRY_ENV_HELP;

static const char push_help[] =
    "usage: kiln push [OPTIONS] --oci-dir DIR[:NAME] REF [--tag TAG]...\n"
    "\n"
    "Upload an image from an OCI image layout directory to a registry: the\n"
    "manifest (or index) named NAME in index.json (default: the only entry),\n"
    "its config and layers. Each blob is looked up first (HEAD) and skipped\n"
    "when the registry has it; the others are uploaded several at a time.\n"
    "The manifest is put last, under REF's tag and then every --tag, so a\n"
    "failed push leaves no tag behind. An index is pushed whole (every\n"
    "manifest it lists must be in the layout), unless --platform picks one\n"
    "manifest from it. The manifest digest is printed on stdout.\n"
    "\n"
    "  --oci-dir DIR[:NAME]    the OCI image layout to read (required)\n"
    "  -t, --tag TAG           also tag the image TAG (repeatable)\n"
    CLI_REGISTRY_OPTIONS_HELP
    "\n"
    CLI_REGISTRY_ENV_HELP;
/* clang-format on */

enum { OPT_OCI_DIR = 0x200, OPT_NAME, OPT_ALL, OPT_OCI_TYPES };

static int run_pull(int argc, char **argv)
{
    static const struct option opts[] = {
        {"oci-dir", required_argument, NULL, OPT_OCI_DIR},
        {"name", required_argument, NULL, OPT_NAME},
        {"all", no_argument, NULL, OPT_ALL},
        {"oci-types", no_argument, NULL, OPT_OCI_TYPES},
        {"help", no_argument, NULL, 'h'},
        CLI_REGISTRY_OPTIONS{NULL, 0, NULL, 0},
    };
    struct cli_registry_config cfg;
    cli_registry_config_init(&cfg);
    _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
    const char *dir = NULL, *name = NULL;
    bool all = false, oci_types = false;
    int rc = KILN_EXIT_OK;
    int c;
    optind = 0;
    while ((c = getopt_long(argc, argv, "hqv", opts, NULL)) != -1) {
        int r = cli_registry_config_option(&cfg, "pull", c, optarg);
        if (r < 0) {
            rc = -r;
            goto out;
        }
        if (r > 0)
            continue;
        switch (c) {
        case OPT_OCI_DIR:
            dir = optarg;
            break;
        case OPT_NAME:
            name = optarg;
            break;
        case OPT_ALL:
            all = true;
            break;
        case OPT_OCI_TYPES:
            oci_types = true;
            break;
        case 'h':
            cli_print_help(&kiln_cmd_pull);
            goto out;
        default:
            rc = cli_usage_error("pull", "unknown option");
            goto out;
        }
    }
    if (argc - optind != 1) {
        rc = cli_usage_error("pull", "expected one image reference");
        goto out;
    }
    if (!dir || !*dir) {
        rc = cli_usage_error("pull", "--oci-dir DIR is required");
        goto out;
    }
    if (cli_registry_config_finish(&cfg, &err) < 0) {
        rc = cli_fail(err);
        goto out;
    }
    const char *ref = argv[optind];
    if (strncmp(ref, "docker://", 9) == 0)
        ref += 9;
    struct kiln_transfer_endpoint src = {.ref = ref};
    struct kiln_transfer_endpoint dst = {.layout = dir, .name = name};
    struct kiln_transfer_options o;
    cli_transfer_options(&cfg, &o);
    o.all = all;
    o.layout_oci_types = oci_types;
    rc = cli_transfer_run(&cfg, "pulled", &src, &dst, &o);
out:
    cli_registry_config_release(&cfg);
    return rc;
}

static int run_push(int argc, char **argv)
{
    static const struct option opts[] = {
        {"oci-dir", required_argument, NULL, OPT_OCI_DIR},
        {"tag", required_argument, NULL, 't'},
        {"help", no_argument, NULL, 'h'},
        CLI_REGISTRY_OPTIONS{NULL, 0, NULL, 0},
    };
    struct cli_registry_config cfg;
    cli_registry_config_init(&cfg);
    _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
    _cleanup_(kiln_strv_release) struct kiln_strv tags = KILN_STRV_INIT;
    _cleanup_free_ char *dir = NULL;
    const char *name = NULL;
    int rc = KILN_EXIT_OK;
    int c;
    optind = 0;
    while ((c = getopt_long(argc, argv, "t:hqv", opts, NULL)) != -1) {
        int r = cli_registry_config_option(&cfg, "push", c, optarg);
        if (r < 0) {
            rc = -r;
            goto out;
        }
        if (r > 0)
            continue;
        switch (c) {
        case OPT_OCI_DIR: {
            free(dir);
            dir = kiln_xstrdup(optarg);
            char *colon = strchr(dir, ':');
            name = NULL;
            if (colon) {
                *colon = '\0';
                name = colon + 1;
                if (!*name) {
                    rc = cli_usage_error("push", "--oci-dir wants DIR[:NAME], not '%s'", optarg);
                    goto out;
                }
            }
            break;
        }
        case 't':
            kiln_strv_push(&tags, optarg);
            break;
        case 'h':
            cli_print_help(&kiln_cmd_push);
            goto out;
        default:
            rc = cli_usage_error("push", "unknown option");
            goto out;
        }
    }
    if (argc - optind != 1) {
        rc = cli_usage_error("push", "expected one image reference");
        goto out;
    }
    if (!dir || !*dir) {
        rc = cli_usage_error("push", "--oci-dir DIR[:NAME] is required");
        goto out;
    }
    if (cli_registry_config_finish(&cfg, &err) < 0) {
        rc = cli_fail(err);
        goto out;
    }
    const char *ref = argv[optind];
    if (strncmp(ref, "docker://", 9) == 0)
        ref += 9;
    struct kiln_transfer_endpoint src = {.layout = dir, .name = name};
    struct kiln_transfer_endpoint dst = {.ref = ref};
    struct kiln_transfer_options o;
    cli_transfer_options(&cfg, &o);
    /* a layout's index is pushed whole unless a platform is asked for */
    o.all = cfg.os == NULL;
    o.tags = (const char *const *)tags.v;
    rc = cli_transfer_run(&cfg, "pushed", &src, &dst, &o);
out:
    cli_registry_config_release(&cfg);
    return rc;
}

const struct kiln_cmd kiln_cmd_pull = {
    .name = "pull",
    .run = run_pull,
    .summary = "download an image into an OCI image layout",
    .help = pull_help,
};

const struct kiln_cmd kiln_cmd_push = {
    .name = "push",
    .run = run_push,
    .summary = "upload an image from an OCI image layout",
    .help = push_help,
};
