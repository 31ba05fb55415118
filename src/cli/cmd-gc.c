/* kiln gc: trim kiln's stores to a size, least recently used first. */
#include "util/common.h"
#include "cli/cli.h"

#include <getopt.h>

#include "build/stepcache.h"
#include "store/blobstore.h"
#include "store/layerstore.h"

#define DEFAULT_MAX ((uint64_t)20 << 30)

static const char gc_help[] =
    "usage: kiln gc [--max-size SIZE] [--layers-max-size SIZE] [--all] [OPTIONS]\n"
    "\n"
    "Collect kiln's stores under the data directory: the blob store (compressed\n"
    "layers, configs, manifests) and the unpacked-layer store are each trimmed to\n"
    "a size, least recently used first; blobs being read and layers in use by a\n"
    "running build are never removed. Leftover temporary files of interrupted\n"
    "writes are removed, and step-cache records whose layer is gone. Safe while\n"
    "builds run.\n"
    "\n"
    "  --max-size SIZE         target size of the blob store (KILN_STORE_MAX_SIZE,\n"
    "                          default 20g); k, m, g, t suffixes\n"
    "  --layers-max-size SIZE  target size of the unpacked-layer store (default:\n"
    "                          the same as --max-size)\n"
    "  --all                   remove everything not in use (both targets 0)\n"
    "  --data-dir DIR          kiln's data (KILN_DATA_DIR, default " KILN_DEFAULT_DATA_DIR ")\n"
    "  -q, --quiet             print nothing\n";

enum { OPT_MAX = 0x200, OPT_LAYERS_MAX, OPT_ALL, OPT_DATA_DIR };

static void mib(uint64_t n, char out[32])
{
    snprintf(out, 32, "%.1f MiB", (double)n / (double)((uint64_t)1 << 20));
}

static int run_gc(int argc, char **argv)
{
    static const struct option opts[] = {
        {"max-size", required_argument, NULL, OPT_MAX},
        {"layers-max-size", required_argument, NULL, OPT_LAYERS_MAX},
        {"all", no_argument, NULL, OPT_ALL},
        {"data-dir", required_argument, NULL, OPT_DATA_DIR},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *data_dir = NULL;
    uint64_t max = 0, layers_max = 0;
    bool have_max = false, have_layers_max = false, all = false, quiet = false;
    int c;
    optind = 0;
    while ((c = getopt_long(argc, argv, "hq", opts, NULL)) != -1) {
        switch (c) {
        case OPT_MAX:
            if (!cli_parse_size(optarg, &max))
                return cli_usage_error("gc", "--max-size: '%s' is not a size", optarg);
            have_max = true;
            break;
        case OPT_LAYERS_MAX:
            if (!cli_parse_size(optarg, &layers_max))
                return cli_usage_error("gc", "--layers-max-size: '%s' is not a size", optarg);
            have_layers_max = true;
            break;
        case OPT_ALL:
            all = true;
            break;
        case OPT_DATA_DIR:
            data_dir = optarg;
            break;
        case 'q':
            quiet = true;
            break;
        case 'h':
            cli_print_help(&kiln_cmd_gc);
            return KILN_EXIT_OK;
        default:
            return cli_usage_error("gc", "unknown option");
        }
    }
    if (argc - optind != 0)
        return cli_usage_error("gc", "unexpected argument '%s'", argv[optind]);
    if (!data_dir) {
        const char *v = getenv("KILN_DATA_DIR");
        data_dir = v && *v ? v : KILN_DEFAULT_DATA_DIR;
    }
    if (!have_max) {
        const char *v = getenv("KILN_STORE_MAX_SIZE");
        max = DEFAULT_MAX;
        if (v && *v && !cli_parse_size(v, &max))
            return cli_usage_error("gc", "KILN_STORE_MAX_SIZE: '%s' is not a size", v);
    }
    if (!have_layers_max)
        layers_max = max;
    if (all)
        max = layers_max = 0;

    _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
    _cleanup_free_ char *store = kiln_xasprintf("%s/store", data_dir);
    _cleanup_free_ char *steps = kiln_xasprintf("%s/cache/steps", data_dir);
    if (access(store, F_OK) != 0) {
        if (!quiet)
            printf("nothing to collect: no store in '%s'\n", data_dir);
        return KILN_EXIT_OK;
    }
    struct kiln_blobstore *bs = NULL;
    struct kiln_layerstore *ls = NULL;
    int rc = KILN_EXIT_OK;
    struct kiln_layerstore_gc_options lo = {.target_bytes = (int64_t)layers_max};
    struct kiln_layerstore_gc_stats lst;
    struct kiln_blobstore_gc_options bo = {.target_bytes = (int64_t)max};
    struct kiln_blobstore_gc_stats bst;
    uint64_t pruned = 0, kept = 0;
    if (kiln_blobstore_open(store, 0, &bs, &err) < 0 ||
        kiln_layerstore_open(store, 0, &ls, &err) < 0 ||
        kiln_layerstore_gc(ls, &lo, &lst, &err) < 0 || kiln_blobstore_gc(bs, &bo, &bst, &err) < 0 ||
        kiln_stepcache_prune(steps, bs, &pruned, &kept, &err) < 0) {
        rc = cli_fail(err);
        goto out;
    }
    if (!quiet) {
        char a[32], b[32], t[32];
        mib(bst.bytes_freed, a);
        mib(bst.bytes_left, b);
        mib(bst.tmp_bytes_freed + lst.tmp_bytes_freed, t);
        printf("blobs:  removed %llu (%s), kept %llu (%s), %llu being read\n",
               (unsigned long long)bst.blobs_removed, a, (unsigned long long)bst.blobs_left, b,
               (unsigned long long)bst.kept_in_use);
        mib(lst.bytes_freed, a);
        mib(lst.bytes_left, b);
        printf("layers: removed %llu (%s), kept %llu (%s), %llu in use\n",
               (unsigned long long)lst.layers_removed, a, (unsigned long long)lst.layers_left, b,
               (unsigned long long)lst.kept_in_use);
        printf("temps:  removed %llu (%s)\n",
               (unsigned long long)(bst.tmp_removed + lst.tmp_removed), t);
        printf("step cache: removed %llu records, kept %llu\n", (unsigned long long)pruned,
               (unsigned long long)kept);
    }
out:
    kiln_layerstore_free(ls);
    kiln_blobstore_free(bs);
    return rc;
}

const struct kiln_cmd kiln_cmd_gc = {
    .name = "gc",
    .run = run_gc,
    .summary = "trim kiln's blob and layer stores to a size, least recently used first",
    .help = gc_help,
};
