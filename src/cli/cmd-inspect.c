/* kiln inspect REF [--raw | --config] */
#include "util/common.h"
#include "cli/cli.h"

#include <getopt.h>
#include <jansson.h>

#include "cli/progress.h"
#include "cli/registry-config.h"
#include "registry/transfer.h"

/* clang-format off */
static const char inspect_help[] =
    "usage: kiln inspect [OPTIONS] REF [--raw | --config]\n"
    "\n"
    "Show an image in a registry: the digest, media type and size of the\n"
    "manifest REF names; for an image index its platforms and the manifest\n"
    "picked for --platform; the layers (digest, size, media type); and a\n"
    "summary of the image config (platform, created, user, working\n"
    "directory, entrypoint, cmd, environment, labels, history).\n"
    "\n"
    "  --raw                   print the bytes of what REF names (manifest or\n"
    "                          index) instead, as the registry serves them\n"
    "  --config                print the raw image config of the manifest\n"
    CLI_REGISTRY_OPTIONS_HELP
    "\n"
    CLI_REGISTRY_ENV_HELP;
/* clang-format on */

enum { OPT_RAW = 0x200, OPT_CONFIG };

static void print_json_argv(const char *label, const struct kiln_strv *v, bool set)
{
    if (!set)
        return;
    json_t *a = json_array();
    for (size_t i = 0; i < v->n; i++)
        json_array_append_new(a, json_string(v->v[i]));
    char *s = json_dumps(a, JSON_COMPACT | JSON_ENSURE_ASCII);
    printf("%-14s%s\n", label, s ? s : "[]");
    free(s);
    json_decref(a);
}

static void print_field(const char *label, const char *v)
{
    if (v && *v)
        printf("%-14s%s\n", label, v);
}

static void print_info(const struct kiln_image_info *info)
{
    printf("%-14s%s\n", "Name:", info->ref);
    printf("%-14s%s\n", "Digest:", info->digest);
    printf("%-14s%s\n", "MediaType:", info->media_type);
    printf("%-14s%zu\n", "Size:", info->raw_len);
    if (info->is_index) {
        printf("%-14s%zu\n", "Manifests:", info->index.n_manifests);
        for (size_t i = 0; i < info->index.n_manifests; i++) {
            const struct kiln_descriptor *d = &info->index.manifests[i];
            _cleanup_free_ char *pl = d->platform ? kiln_platform_string(d->platform) : NULL;
            printf("  %-22s %s\n", pl ? pl : "-", d->digest);
        }
        printf("%-14s%s\n", "Manifest:", info->manifest_digest);
        printf("%-14s%s\n", "  MediaType:", info->manifest_media_type);
    }
    const struct kiln_image_config *c = &info->config;
    if (c->root) {
        const char *os = kiln_image_config_get(c, KILN_IC_OS);
        const char *arch = kiln_image_config_get(c, KILN_IC_ARCHITECTURE);
        const char *variant = kiln_image_config_get(c, KILN_IC_VARIANT);
        printf("%-14s%s/%s%s%s\n", "Platform:", os ? os : "?", arch ? arch : "?",
               variant ? "/" : "", variant ? variant : "");
        print_field("Created:", kiln_image_config_get(c, KILN_IC_CREATED));
        print_field("Author:", kiln_image_config_get(c, KILN_IC_AUTHOR));
        const char *user = kiln_image_config_get(c, KILN_IC_USER);
        printf("%-14s%s\n", "User:", user && *user ? user : "(root)");
        print_field("WorkingDir:", kiln_image_config_get(c, KILN_IC_WORKING_DIR));
        struct kiln_strv v = KILN_STRV_INIT;
        bool set = kiln_image_config_entrypoint(c, &v) == 1;
        print_json_argv("Entrypoint:", &v, set);
        kiln_strv_release(&v);
        set = kiln_image_config_cmd(c, &v) == 1;
        print_json_argv("Cmd:", &v, set);
        kiln_strv_release(&v);
        kiln_image_config_env(c, &v);
        for (size_t i = 0; i < v.n; i++)
            printf("%-14s%s\n", i == 0 ? "Env:" : "", v.v[i]);
        kiln_strv_release(&v);
        json_t *labels = kiln_image_config_labels(c);
        const char *key;
        json_t *val;
        bool first = true;
        json_object_foreach(labels, key, val)
        {
            printf("%-14s%s=%s\n", first ? "Labels:" : "", key,
                   json_string_value(val) ? json_string_value(val) : "");
            first = false;
        }
        printf("%-14s%zu\n", "History:", kiln_image_config_n_history(c));
    } else {
        printf("%-14s%s\n", "Config:", info->manifest.config.media_type);
    }
    uint64_t total = 0;
    for (size_t i = 0; i < info->manifest.n_layers; i++)
        total += (uint64_t)info->manifest.layers[i].size;
    char size[32];
    cli_progress_format_size(size, sizeof(size), total);
    printf("%-14s%zu (%s)\n", "Layers:", info->manifest.n_layers, size);
    for (size_t i = 0; i < info->manifest.n_layers; i++) {
        const struct kiln_descriptor *d = &info->manifest.layers[i];
        printf("  %s  %12lld  %s\n", d->digest, (long long)d->size, d->media_type);
    }
}

static int run_inspect(int argc, char **argv)
{
    static const struct option opts[] = {
        {"raw", no_argument, NULL, OPT_RAW},
        {"config", no_argument, NULL, OPT_CONFIG},
        {"help", no_argument, NULL, 'h'},
        CLI_REGISTRY_OPTIONS{NULL, 0, NULL, 0},
    };
    struct cli_registry_config cfg;
    cli_registry_config_init(&cfg);
    _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
    struct kiln_image_info info = KILN_IMAGE_INFO_INIT;
    struct kiln_cred cred = KILN_CRED_INIT;
    bool raw = false, config = false;
    int rc = KILN_EXIT_OK;
    int c;
    optind = 0;
    while ((c = getopt_long(argc, argv, "hqv", opts, NULL)) != -1) {
        int r = cli_registry_config_option(&cfg, "inspect", c, optarg);
        if (r < 0) {
            rc = -r;
            goto out;
        }
        if (r > 0)
            continue;
        switch (c) {
        case OPT_RAW:
            raw = true;
            break;
        case OPT_CONFIG:
            config = true;
            break;
        case 'h':
            cli_print_help(&kiln_cmd_inspect);
            goto out;
        default:
            rc = cli_usage_error("inspect", "unknown option");
            goto out;
        }
    }
    if (argc - optind != 1) {
        rc = cli_usage_error("inspect", "expected one image reference");
        goto out;
    }
    if (raw && config) {
        rc = cli_usage_error("inspect", "--raw and --config exclude each other");
        goto out;
    }
    const char *ref = argv[optind];
    if (strncmp(ref, "docker://", 9) == 0)
        ref += 9;
    struct kiln_registry_options ro;
    if (cli_registry_config_finish(&cfg, &err) < 0 ||
        cli_registry_options(&cfg, ref, &ro, &cred, &err) < 0) {
        rc = cli_fail(err);
        goto out;
    }
    cli_registry_catch_signals();
    struct kiln_transfer_options o;
    cli_transfer_options(&cfg, &o);
    if (kiln_transfer_inspect(ref, &ro, &o, raw ? KILN_INSPECT_TOP : KILN_INSPECT_CONFIG, &info,
                              &err) < 0) {
        rc = cli_fail(err);
        goto out;
    }
    if (raw)
        fwrite(info.raw, 1, info.raw_len, stdout);
    else if (config)
        fwrite(info.config_raw, 1, info.config_len, stdout);
    else
        print_info(&info);
    if (fflush(stdout) != 0) {
        rc = kiln_error_exit_code(KILN_EIO);
        fprintf(stderr, "kiln: write to standard output failed\n");
    }
out:
    kiln_image_info_release(&info);
    kiln_cred_release(&cred);
    cli_registry_config_release(&cfg);
    return rc;
}

const struct kiln_cmd kiln_cmd_inspect = {
    .name = "inspect",
    .run = run_inspect,
    .summary = "show an image's manifest, layers and config",
    .help = inspect_help,
};
