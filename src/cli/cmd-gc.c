/*
 * kiln gc: trim kiln's stores to a size, least recently used first; with
 * --cache-repo, remove old step manifests from a shared step cache.
 */
#include "util/common.h"
#include "cli/cli.h"

#include <ctype.h>
#include <getopt.h>
#include <time.h>

#include "build/engine.h"
#include "build/stepcache.h"
#include "cli/registry-config.h"
#include "oci/mediatype.h"
#include "oci/reference.h"
#include "store/blobstore.h"
#include "store/layerstore.h"
#include "util/buf.h"

#define DEFAULT_MAX ((uint64_t)20 << 30)

static const char gc_help[] =
    "usage: kiln gc [--max-size SIZE] [--layers-max-size SIZE] [--all] [OPTIONS]\n"
    "       kiln gc --cache-repo HOST[:PORT]/PATH --max-age DAYS [--dry-run] [OPTIONS]\n"
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
    "  -q, --quiet             print nothing\n"
    "\n"
    "With --cache-repo, only the shared step cache in that registry repository\n"
    "(see kiln build --cache-repo) is collected, not the local stores: each\n"
    "step-<key> tag last used more than DAYS days ago (0: every one) has its\n"
    "manifest deleted, by digest. A step's last use is the newer of the time its\n"
    "step config says it was created and the time a build last pulled it (the\n"
    "manifest's io.kiln.step.used annotation, which pulls refresh at most once a\n"
    "day); a build that finds the step in its own local cache is not seen. Other\n"
    "tags are left alone, and so are step manifests or configs that fail kiln's\n"
    "checks (each is reported). One line per removed tag, naming the time that\n"
    "counted (\"(created TIME)\" or \"(last used TIME)\"), with --dry-run also one\n"
    "per kept tag (\"would keep ...\"), then a summary line. The registry must\n"
    "allow deletes (docker-registry: storage.delete.enabled) and the credentials\n"
    "must allow them; the layers and configs are freed only by the registry's own\n"
    "garbage collection, as for any deleted manifest, and since each recorded use\n"
    "leaves the manifest it replaced untagged, docker-registry needs\n"
    "registry garbage-collect --delete-untagged CONFIG. Builds that run meanwhile\n"
    "may miss a removed step and run it again.\n"
    "\n"
    "  --cache-repo REPO       the cache repository, HOST[:PORT]/PATH\n"
    "  --max-age DAYS          remove steps not used for DAYS days (0: all)\n"
    "  --dry-run               print what would be removed or kept, remove nothing\n"
    "\n"
    "registry options (with --cache-repo):\n" CLI_REGISTRY_OPTIONS_HELP "\n" CLI_REGISTRY_ENV_HELP;

enum {
    OPT_MAX = 0x200,
    OPT_LAYERS_MAX,
    OPT_ALL,
    OPT_DATA_DIR,
    OPT_CACHE_REPO,
    OPT_MAX_AGE,
    OPT_DRY_RUN
};

static void mib(uint64_t n, char out[32])
{
    snprintf(out, 32, "%.1f MiB", (double)n / (double)((uint64_t)1 << 20));
}

struct cache_gc {
    struct kiln_registry *reg;
    const char *path; /* the repository on the registry */
    const char *name; /* HOST/PATH, for messages */
    int64_t cutoff;   /* steps last used before this are removed (INT64_MAX: all) */
    bool dry_run, quiet;
    uint64_t removed, kept, unreadable, total;
};

static void cache_unreadable(struct cache_gc *g, const char *tag, struct kiln_error **err)
{
    g->unreadable++;
    fprintf(stderr, "kiln: warning: cache %s: %s: %s; kept\n", g->name, tag,
            *err ? (*err)->msg : "unreadable");
    kiln_error_free(*err);
    *err = NULL;
}

/*
 * One step- tag: 0 when done with it (removed, kept or reported), or the
 * error of a delete the registry refused.
 */
static int cache_gc_tag(struct cache_gc *g, const char *tag, struct kiln_error **err)
{
    g->total++;
    struct kiln_registry_manifest m = KILN_REGISTRY_MANIFEST_INIT;
    struct kiln_step_record rec;
    memset(&rec, 0, sizeof(rec));
    char cfg_digest[KILN_DIGEST_BUFSZ];
    char key[KILN_STEPCACHE_KEY_BUFSZ];
    uint64_t cfg_size = 0;
    char used[KILN_STEPCACHE_TIME_BUFSZ] = "";
    int64_t last = 0;
    bool by_use = false;
    _cleanup_(kiln_buf_release) struct kiln_buf cb;
    kiln_buf_init(&cb, KILN_STEPCACHE_CONFIG_MAX);
    int r = kiln_registry_manifest_get(g->reg, g->path, tag, KILN_MT_OCI_MANIFEST, &m, err);
    if (r >= 0)
        r = kiln_stepcache_manifest_parse(m.data, m.len, m.media_type, cfg_digest, &cfg_size, &rec,
                                          used, err);
    if (r >= 0)
        r = kiln_registry_blob_get(g->reg, g->path, cfg_digest, (int64_t)cfg_size, kiln_buf_sink,
                                   &cb, NULL, err);
    if (r >= 0)
        r = kiln_stepcache_config_created(cb.buf, cb.len, key, &rec, err);
    if (r >= 0 && strcmp(key, tag + strlen(KILN_STEPCACHE_TAG_PREFIX)) != 0)
        r = kiln_error_set(err, KILN_EINVAL, 0, "step config: names another key");
    /* the manifest parser checked `used`: a failure here is the config's time */
    if (r >= 0 && kiln_stepcache_last_time(rec.created, used, &last, &by_use) < 0)
        r = kiln_error_set(err, KILN_EINVAL, 0, "step config: no valid created time");
    if (r < 0) {
        kiln_registry_manifest_release(&m);
        cache_unreadable(g, tag, err);
        return 0;
    }
    const char *when = by_use ? "last used" : "created";
    const char *time_text = by_use ? used : rec.created;
    if (g->cutoff != INT64_MAX && last >= g->cutoff) {
        g->kept++;
        kiln_registry_manifest_release(&m);
        if (g->dry_run && !g->quiet)
            printf("would keep %s:%s (%s %s)\n", g->name, tag, when, time_text);
        return 0;
    }
    if (!g->dry_run) {
        r = kiln_registry_manifest_delete(g->reg, g->path, m.digest, err);
        if (r == -KILN_ENOTFOUND) { /* gone meanwhile */
            kiln_error_free(*err);
            *err = NULL;
            r = 0;
        }
    }
    kiln_registry_manifest_release(&m);
    if (r < 0)
        return r;
    g->removed++;
    if (!g->quiet)
        printf("%s %s:%s (%s %s)\n", g->dry_run ? "would remove" : "removed", g->name, tag, when,
               time_text);
    return 0;
}

static bool step_tag(const char *tag)
{
    return !strncmp(tag, KILN_STEPCACHE_TAG_PREFIX, strlen(KILN_STEPCACHE_TAG_PREFIX));
}

static int run_cache_gc(struct cli_registry_config *cfg, const char *repo, uint64_t max_age_days,
                        bool dry_run)
{
    _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
    struct kiln_ref ref = KILN_REF_INIT;
    struct kiln_registry_options ro;
    struct kiln_cred cred = {0};
    struct kiln_strv tags = KILN_STRV_INIT;
    _cleanup_free_ char *name = NULL;
    struct cache_gc g = {.dry_run = dry_run, .quiet = cfg->quiet, .cutoff = INT64_MAX};
    if (max_age_days > 0)
        g.cutoff = (int64_t)time(NULL) - (int64_t)max_age_days * 86400;
    int rc = KILN_EXIT_OK;
    if (kiln_ref_parse_normalized(repo, &ref, &err) < 0 ||
        cli_registry_config_finish(cfg, &err) < 0 ||
        cli_registry_options(cfg, repo, &ro, &cred, &err) < 0) {
        rc = cli_fail(err);
        goto out;
    }
    cli_registry_catch_signals();
    name = kiln_xasprintf("%s/%s", ref.domain, ref.path);
    g.name = name;
    g.path = ref.path;
    if (kiln_registry_new(ref.domain, &ro, &g.reg, &err) < 0 ||
        kiln_registry_tags_list(g.reg, ref.path, &tags, &err) < 0) {
        rc = cli_fail(err);
        goto out;
    }
    for (size_t i = 0; i < tags.n; i++) {
        if (!step_tag(tags.v[i]))
            continue;
        if (cli_registry_interrupted() || cache_gc_tag(&g, tags.v[i], &err) < 0) {
            if (!err)
                kiln_error_set(&err, KILN_ECANCELLED, 0, "interrupted");
            rc = cli_fail(err);
            break;
        }
    }
    if (!g.quiet || rc != KILN_EXIT_OK)
        printf("cache %s: %s %llu of %llu step manifests (%llu kept, %llu unreadable)\n", name,
               dry_run ? "would remove" : "removed", (unsigned long long)g.removed,
               (unsigned long long)g.total, (unsigned long long)g.kept,
               (unsigned long long)g.unreadable);
out:
    kiln_strv_release(&tags);
    kiln_registry_free(g.reg);
    kiln_cred_release(&cred);
    kiln_ref_release(&ref);
    return rc;
}

/* Collect the local stores under data_dir. */
static int run_store_gc(const char *data_dir, uint64_t max, uint64_t layers_max, bool quiet)
{
    int rc = KILN_EXIT_OK;
    _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
    _cleanup_free_ char *store = kiln_xasprintf("%s/store", data_dir);
    _cleanup_free_ char *steps = kiln_xasprintf("%s/cache/steps", data_dir);
    struct kiln_blobstore *bs = NULL;
    struct kiln_layerstore *ls = NULL;
    if (access(store, F_OK) != 0) {
        if (!quiet)
            printf("nothing to collect: no store in '%s'\n", data_dir);
        goto out;
    }
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

static int run_gc(int argc, char **argv)
{
    static const struct option opts[] = {
        {"max-size", required_argument, NULL, OPT_MAX},
        {"layers-max-size", required_argument, NULL, OPT_LAYERS_MAX},
        {"all", no_argument, NULL, OPT_ALL},
        {"data-dir", required_argument, NULL, OPT_DATA_DIR},
        {"cache-repo", required_argument, NULL, OPT_CACHE_REPO},
        {"max-age", required_argument, NULL, OPT_MAX_AGE},
        {"dry-run", no_argument, NULL, OPT_DRY_RUN},
        {"help", no_argument, NULL, 'h'},
        CLI_REGISTRY_OPTIONS{NULL, 0, NULL, 0},
    };
    const char *data_dir = NULL, *cache_repo = NULL;
    uint64_t max = 0, layers_max = 0, max_age = 0;
    bool have_max = false, have_layers_max = false, all = false, quiet = false;
    bool have_max_age = false, dry_run = false;
    struct cli_registry_config cfg;
    cli_registry_config_init(&cfg);
    int rc = KILN_EXIT_OK;
    int c;
    optind = 0;
    while ((c = getopt_long(argc, argv, "hqv", opts, NULL)) != -1) {
        int r = cli_registry_config_option(&cfg, "gc", c, optarg);
        if (r < 0) {
            cli_registry_config_release(&cfg);
            return -r;
        }
        if (r > 0)
            continue;
        switch (c) {
        case OPT_MAX:
            if (!cli_parse_size(optarg, &max)) {
                rc = cli_usage_error("gc", "--max-size: '%s' is not a size", optarg);
                goto out;
            }
            have_max = true;
            break;
        case OPT_LAYERS_MAX:
            if (!cli_parse_size(optarg, &layers_max)) {
                rc = cli_usage_error("gc", "--layers-max-size: '%s' is not a size", optarg);
                goto out;
            }
            have_layers_max = true;
            break;
        case OPT_ALL:
            all = true;
            break;
        case OPT_DATA_DIR:
            data_dir = optarg;
            break;
        case OPT_CACHE_REPO:
            cache_repo = optarg;
            break;
        case OPT_MAX_AGE: {
            char *end = NULL;
            errno = 0;
            unsigned long long v = strtoull(optarg, &end, 10);
            if (!isdigit((unsigned char)optarg[0]) || *end || errno || v > 1000000) {
                rc = cli_usage_error("gc", "--max-age: '%s' is not a number of days", optarg);
                goto out;
            }
            max_age = v;
            have_max_age = true;
            break;
        }
        case OPT_DRY_RUN:
            dry_run = true;
            break;
        case 'h':
            cli_print_help(&kiln_cmd_gc);
            goto out;
        default:
            rc = cli_usage_error("gc", "unknown option");
            goto out;
        }
    }
    if (argc - optind != 0) {
        rc = cli_usage_error("gc", "unexpected argument '%s'", argv[optind]);
        goto out;
    }
    if (cache_repo) {
        _cleanup_(kiln_error_freep) struct kiln_error *cerr = NULL;
        if (!have_max_age)
            rc = cli_usage_error("gc", "--cache-repo needs --max-age DAYS");
        else if (have_max || have_layers_max || all || data_dir)
            rc = cli_usage_error("gc", "--cache-repo collects the repository only: no --max-size, "
                                       "--layers-max-size, --all or --data-dir");
        else if (kiln_build_cache_repo_check(cache_repo, &cerr) < 0)
            rc = cli_usage_error("gc", "%s", cerr->msg);
        else
            rc = run_cache_gc(&cfg, cache_repo, max_age, dry_run);
        goto out;
    }
    if (have_max_age || dry_run) {
        rc = cli_usage_error("gc", "--max-age and --dry-run go with --cache-repo");
        goto out;
    }
    quiet = cfg.quiet;
    if (!data_dir) {
        const char *v = getenv("KILN_DATA_DIR");
        data_dir = v && *v ? v : KILN_DEFAULT_DATA_DIR;
    }
    if (!have_max) {
        const char *v = getenv("KILN_STORE_MAX_SIZE");
        max = DEFAULT_MAX;
        if (v && *v && !cli_parse_size(v, &max)) {
            rc = cli_usage_error("gc", "KILN_STORE_MAX_SIZE: '%s' is not a size", v);
            goto out;
        }
    }
    if (!have_layers_max)
        layers_max = max;
    if (all)
        max = layers_max = 0;

    rc = run_store_gc(data_dir, max, layers_max, quiet);
out:
    cli_registry_config_release(&cfg);
    return rc;
}

const struct kiln_cmd kiln_cmd_gc = {
    .name = "gc",
    .run = run_gc,
    .summary = "trim kiln's blob and layer stores to a size, least recently used first",
    .help = gc_help,
};
