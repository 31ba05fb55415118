/* kiln build: build a spec into an image; kiln verify: check an image is JupyterHub-ready. */
#include "util/common.h"
#include "cli/cli.h"

#include <getopt.h>
#include <time.h>

#include "build/engine.h"
#include "cli/registry-config.h"
#include "spec/revision.h"

static const char build_help[] =
    "usage: kiln build SPEC [--push] [--tag REF] [--verify] [--no-cache] [OPTIONS]\n"
    "\n"
    "Build the image a spec describes (YAML or JSON, kiln's short form or a\n"
    "PrimeHub ImageSpec): pull the base image, run the apt, conda and pip steps\n"
    "in an OCI runtime (runc or crun) over overlayfs, one layer each, and write\n"
    "the image into kiln's store. Unchanged steps come from the step cache. With\n"
    "--push the image is pushed; the last stdout line is then REF@sha256:DIGEST,\n"
    "else the manifest digest. Needs root.\n"
    "\n"
    "  --push               push the image to its target\n"
    "  -t, --tag REF        the target (default: KILN_REPO_PREFIX/NAME:REVISION, or\n"
    "                       KILN_PUSH_REPOSITORY:NAME-REVISION, as PrimeHub names it)\n"
    "  --also-tag TAG       push under this tag of the target's repository too\n"
    "                       (repeatable)\n"
    "  --verify             run the JupyterHub readiness checks before pushing\n"
    "  --no-cache           run every step, ignoring the step caches (steps that\n"
    "                       run are still pushed to --cache-repo)\n"
    "  --cache-repo REPO    share the step cache through a registry repository\n"
    "                       HOST[:PORT]/PATH (KILN_CACHE_REPO): a step missing\n"
    "                       here is pulled from REPO:step-<key> when there, and\n"
    "                       every step that runs is pushed there; its failures\n"
    "                       are warnings\n"
    "  --format docker|oci  manifest media types (docker, as PrimeHub pushed)\n"
    "  --data-dir DIR       kiln's store, caches and scratch space\n"
    "                       (KILN_DATA_DIR, default " KILN_DEFAULT_DATA_DIR ")\n"
    "  --runtime NAME|PATH  the OCI runtime: runc or crun (KILN_RUNTIME; default:\n"
    "                       crun on a pure cgroup v2 host, else runc)\n"
    "  --step-timeout SECS  kill a step that runs longer (default: none)\n"
    "  --log FILE           append every line, with timestamps, to FILE\n"
    "\n"
    "pip: KILN_PIP_INDEX_URL sets the index the pip step uses (never the spec);\n"
    "KILN_PIP_TRUSTED_HOST (space or comma separated) the hosts pip trusts; an\n"
    "http:// index's host is trusted when none are given.\n"
    "\n"
    "SOURCE_DATE_EPOCH (seconds since 1970): the layers' file times are clamped to\n"
    "it and the steps that run are dated by it (history and created), for\n"
    "reproducible images; a step taken from a cache keeps the time it was made.\n"
    "\n"
    "registry options (the base image's registry, the target's, the "
    "cache's):\n" CLI_REGISTRY_OPTIONS_HELP "\n" CLI_REGISTRY_ENV_HELP;

static const char verify_help[] =
    "usage: kiln verify REF [OPTIONS]\n"
    "\n"
    "Check that an image works as a JupyterHub single-user image: its user is not\n"
    "root (uid 1000 expected: a warning otherwise), the user's home is writable,\n"
    "and `jupyterhub-singleuser --version` runs as that user in the image. The\n"
    "layers are pulled into kiln's store and the checks run in an OCI runtime.\n"
    "Exit status 0 when ready, 1 when a check fails. Needs root.\n"
    "\n"
    "  --data-dir DIR       kiln's store (KILN_DATA_DIR, default " KILN_DEFAULT_DATA_DIR ")\n"
    "  --runtime NAME|PATH  runc or crun (KILN_RUNTIME)\n"
    "  --log FILE           append every line, with timestamps, to FILE\n"
    "\n"
    "registry options:\n" CLI_REGISTRY_OPTIONS_HELP "\n" CLI_REGISTRY_ENV_HELP;

enum {
    OPT_PUSH = 0x200,
    OPT_ALSO_TAG,
    OPT_VERIFY,
    OPT_NO_CACHE,
    OPT_FORMAT,
    OPT_DATA_DIR,
    OPT_RUNTIME,
    OPT_STEP_TIMEOUT,
    OPT_LOG,
    OPT_CACHE_REPO,
};

struct out {
    bool quiet;
    FILE *log;
    struct timespec t0;
};

static void on_log(void *ud, enum kiln_build_log kind, const char *line, size_t len)
{
    struct out *o = ud;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    double t = (double)(now.tv_sec - o->t0.tv_sec) + (double)(now.tv_nsec - o->t0.tv_nsec) / 1e9;
    const char *mark = kind == KILN_BUILD_LOG_STDOUT   ? " | "
                       : kind == KILN_BUILD_LOG_STDERR ? " ! "
                       : kind == KILN_BUILD_LOG_WARN   ? " warning: "
                                                       : " ";
    if (!o->quiet)
        fprintf(stderr, "[%6.1fs]%s%.*s\n", t, mark, (int)len, line);
    if (o->log) {
        time_t wall = time(NULL);
        struct tm tm;
        char stamp[32];
        gmtime_r(&wall, &tm);
        strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%SZ", &tm);
        fprintf(o->log, "%s%s%.*s\n", stamp, mark, (int)len, line);
        fflush(o->log);
    }
}

static int cancelled(void *userdata)
{
    return cli_registry_interrupted();
}

static bool parse_secs(const char *s, long *ret)
{
    char *end = NULL;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < 0 || v > 30L * 24 * 3600)
        return false;
    *ret = v;
    return true;
}

static int open_log(const char *path, struct out *o, struct kiln_error **err)
{
    if (!path)
        return 0;
    o->log = fopen(path, "ae");
    if (!o->log)
        return kiln_error_set(err, KILN_EIO, errno, "open log file '%s'", path);
    return 0;
}

static int run_build(int argc, char **argv)
{
    static const struct option opts[] = {
        {"push", no_argument, NULL, OPT_PUSH},
        {"tag", required_argument, NULL, 't'},
        {"also-tag", required_argument, NULL, OPT_ALSO_TAG},
        {"verify", no_argument, NULL, OPT_VERIFY},
        {"no-cache", no_argument, NULL, OPT_NO_CACHE},
        {"format", required_argument, NULL, OPT_FORMAT},
        {"data-dir", required_argument, NULL, OPT_DATA_DIR},
        {"runtime", required_argument, NULL, OPT_RUNTIME},
        {"step-timeout", required_argument, NULL, OPT_STEP_TIMEOUT},
        {"log", required_argument, NULL, OPT_LOG},
        {"cache-repo", required_argument, NULL, OPT_CACHE_REPO},
        {"help", no_argument, NULL, 'h'},
        CLI_REGISTRY_OPTIONS{NULL, 0, NULL, 0},
    };
    struct cli_registry_config cfg;
    cli_registry_config_init(&cfg);
    _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
    struct kiln_build_options bo = {.format = KILN_FORMAT_DOCKER,
                                    .compress = KILN_COMPRESS_OPTIONS_INIT,
                                    .source_date_epoch = -1};
    struct kiln_strv also = KILN_STRV_INIT, trusted = KILN_STRV_INIT;
    struct kiln_cred base_cred = {0}, push_cred = {0}, cache_cred = {0};
    _cleanup_free_ char *target = NULL;
    _cleanup_(kiln_spec_freep) struct kiln_spec *s = NULL;
    _cleanup_free_ char *data = NULL;
    const char *tag = NULL, *log_path = NULL;
    bool push = false;
    struct out out = {0};
    clock_gettime(CLOCK_MONOTONIC, &out.t0);
    int rc = KILN_EXIT_OK;
    int c;
    long secs;
    optind = 0;
    while ((c = getopt_long(argc, argv, "ht:qv", opts, NULL)) != -1) {
        int r = cli_registry_config_option(&cfg, "build", c, optarg);
        if (r < 0) {
            rc = -r;
            goto out;
        }
        if (r > 0)
            continue;
        switch (c) {
        case OPT_PUSH:
            push = true;
            break;
        case 't':
            tag = optarg;
            break;
        case OPT_ALSO_TAG:
            kiln_strv_push(&also, optarg);
            break;
        case OPT_VERIFY:
            bo.verify = true;
            break;
        case OPT_NO_CACHE:
            bo.no_cache = true;
            break;
        case OPT_FORMAT:
            if (!strcmp(optarg, "docker"))
                bo.format = KILN_FORMAT_DOCKER;
            else if (!strcmp(optarg, "oci"))
                bo.format = KILN_FORMAT_OCI;
            else {
                rc = cli_usage_error("build", "--format must be 'docker' or 'oci', not '%s'",
                                     optarg);
                goto out;
            }
            break;
        case OPT_DATA_DIR:
            bo.data_dir = optarg;
            break;
        case OPT_RUNTIME:
            bo.runtime = optarg;
            break;
        case OPT_STEP_TIMEOUT:
            if (!parse_secs(optarg, &secs)) {
                rc = cli_usage_error("build", "--step-timeout: '%s' is not a number of seconds",
                                     optarg);
                goto out;
            }
            bo.step_timeout_ms = secs * 1000;
            break;
        case OPT_LOG:
            log_path = optarg;
            break;
        case OPT_CACHE_REPO:
            bo.cache_repo = optarg;
            break;
        case 'h':
            cli_print_help(&kiln_cmd_build);
            goto out;
        default:
            rc = cli_usage_error("build", "unknown option");
            goto out;
        }
    }
    if (argc - optind != 1) {
        rc = cli_usage_error("build", "expected exactly one SPEC file");
        goto out;
    }
    if (!push && (tag || also.n)) {
        rc = cli_usage_error("build", "--tag and --also-tag name what --push pushes: add --push");
        goto out;
    }
    if (!bo.cache_repo)
        bo.cache_repo = cli_env2("KILN_CACHE_REPO", NULL);
    if (bo.cache_repo && kiln_build_cache_repo_check(bo.cache_repo, &err) < 0) {
        rc = cli_usage_error("build", "%s", err->msg);
        goto out;
    }
    const char *path = argv[optind];
    size_t len = 0;
    struct kiln_diags diags = KILN_DIAGS_INIT;
    if (cli_read_file(path, KILN_SPEC_MAX_BYTES, &data, &len, &err) < 0 ||
        kiln_spec_parse(data, len, &s, &diags, &err) < 0) {
        if (diags.n == 0)
            fprintf(stderr, "%s: %s\n", path, err->msg);
        for (size_t i = 0; i < diags.n; i++)
            fprintf(stderr, "%s: %s%s%s\n", path, diags.v[i].field, diags.v[i].field[0] ? ": " : "",
                    diags.v[i].message);
        kiln_diags_release(&diags);
        rc = kiln_error_exit_code(err->code);
        goto out;
    }
    if (push) {
        if (tag) {
            target = kiln_xstrdup(strncmp(tag, "docker://", 9) ? tag : tag + 9);
        } else {
            char rev[KILN_REVISION_LEN + 1];
            kiln_spec_revision(s, rev);
            const char *prefix = cli_env2("KILN_REPO_PREFIX", "PRIMEHUB_CUSTOM_IMAGE_REPO_PREFIX");
            const char *repo = cli_env2("KILN_PUSH_REPOSITORY", NULL);
            if (!prefix && !repo) {
                rc = cli_usage_error("build", "--push needs a target: give --tag REF, or set "
                                              "KILN_REPO_PREFIX or KILN_PUSH_REPOSITORY");
                goto out;
            }
            if (kiln_spec_target(s->name, rev, prefix, repo, &target, &err) < 0) {
                rc = cli_fail(err);
                goto out;
            }
        }
    }
    if (!bo.data_dir)
        bo.data_dir = cli_env2("KILN_DATA_DIR", NULL) ? cli_env2("KILN_DATA_DIR", NULL)
                                                      : KILN_DEFAULT_DATA_DIR;
    if (!bo.runtime)
        bo.runtime = cli_env2("KILN_RUNTIME", NULL);
    bo.plan.pip_index_url = cli_env2("KILN_PIP_INDEX_URL", NULL);
    cli_pip_trusted_hosts(bo.plan.pip_index_url, &trusted);
    bo.plan.pip_trusted_hosts = trusted.n ? (const char *const *)trusted.v : NULL;
    const char *sde = getenv("SOURCE_DATE_EPOCH");
    long long sdev = 0;
    if (sde && *sde) {
        char *end = NULL;
        sdev = strtoll(sde, &end, 10);
        if (*end || sdev < 0) {
            rc = cli_usage_error("build", "SOURCE_DATE_EPOCH '%s' is not a number", sde);
            goto out;
        }
        bo.source_date_epoch = sdev;
    }
    out.quiet = cfg.quiet;
    if (open_log(log_path, &out, &err) < 0 || cli_registry_config_finish(&cfg, &err) < 0) {
        rc = cli_fail(err);
        goto out;
    }
    struct kiln_registry_options base_ro, push_ro, cache_ro;
    if (cli_registry_options(&cfg, s->base_image, &base_ro, &base_cred, &err) < 0 ||
        (target && cli_registry_options(&cfg, target, &push_ro, &push_cred, &err) < 0) ||
        (bo.cache_repo &&
         cli_registry_options(&cfg, bo.cache_repo, &cache_ro, &cache_cred, &err) < 0)) {
        rc = cli_fail(err);
        goto out;
    }
    bo.base_registry = &base_ro;
    bo.push_registry = target ? &push_ro : NULL;
    bo.cache_registry = bo.cache_repo ? &cache_ro : NULL;
    bo.target = target;
    bo.extra_tags = also.n ? (const char *const *)also.v : NULL;
    bo.cancelled = cancelled;
    bo.on_log = on_log;
    bo.userdata = &out;
    cli_registry_catch_signals();
    struct kiln_build_result res;
    if (kiln_build_run(s, &bo, &res, &err) < 0) {
        on_log(&out, KILN_BUILD_LOG_INFO, "build failed", 12);
        rc = cli_fail(err);
        goto out;
    }
    if (target) {
        /* the reference without its tag's digest, then @digest */
        printf("%s@%s\n", target, res.manifest_digest);
    } else {
        printf("%s\n", res.manifest_digest);
    }
out:
    if (out.log)
        fclose(out.log);
    kiln_strv_release(&also);
    kiln_strv_release(&trusted);
    kiln_cred_release(&base_cred);
    kiln_cred_release(&push_cred);
    kiln_cred_release(&cache_cred);
    cli_registry_config_release(&cfg);
    return rc;
}

static int run_verify(int argc, char **argv)
{
    static const struct option opts[] = {
        {"data-dir", required_argument, NULL, OPT_DATA_DIR},
        {"runtime", required_argument, NULL, OPT_RUNTIME},
        {"log", required_argument, NULL, OPT_LOG},
        {"help", no_argument, NULL, 'h'},
        CLI_REGISTRY_OPTIONS{NULL, 0, NULL, 0},
    };
    struct cli_registry_config cfg;
    cli_registry_config_init(&cfg);
    _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
    struct kiln_build_options bo = {.source_date_epoch = -1};
    struct kiln_cred cred = {0};
    const char *log_path = NULL;
    struct out out = {0};
    clock_gettime(CLOCK_MONOTONIC, &out.t0);
    int rc = KILN_EXIT_OK;
    int c;
    optind = 0;
    while ((c = getopt_long(argc, argv, "hqv", opts, NULL)) != -1) {
        int r = cli_registry_config_option(&cfg, "verify", c, optarg);
        if (r < 0) {
            rc = -r;
            goto out;
        }
        if (r > 0)
            continue;
        switch (c) {
        case OPT_DATA_DIR:
            bo.data_dir = optarg;
            break;
        case OPT_RUNTIME:
            bo.runtime = optarg;
            break;
        case OPT_LOG:
            log_path = optarg;
            break;
        case 'h':
            cli_print_help(&kiln_cmd_verify);
            goto out;
        default:
            rc = cli_usage_error("verify", "unknown option");
            goto out;
        }
    }
    if (argc - optind != 1) {
        rc = cli_usage_error("verify", "expected exactly one image REF");
        goto out;
    }
    const char *ref = argv[optind];
    if (!strncmp(ref, "docker://", 9))
        ref += 9;
    if (!bo.data_dir)
        bo.data_dir = cli_env2("KILN_DATA_DIR", NULL) ? cli_env2("KILN_DATA_DIR", NULL)
                                                      : KILN_DEFAULT_DATA_DIR;
    if (!bo.runtime)
        bo.runtime = cli_env2("KILN_RUNTIME", NULL);
    out.quiet = cfg.quiet;
    struct kiln_registry_options ro;
    if (open_log(log_path, &out, &err) < 0 || cli_registry_config_finish(&cfg, &err) < 0 ||
        cli_registry_options(&cfg, ref, &ro, &cred, &err) < 0) {
        rc = cli_fail(err);
        goto out;
    }
    bo.base_registry = &ro;
    bo.cancelled = cancelled;
    bo.on_log = on_log;
    bo.userdata = &out;
    cli_registry_catch_signals();
    struct kiln_verify_report rep;
    if (kiln_build_verify_ref(ref, &bo, &rep, &err) < 0) {
        rc = cli_fail(err);
        goto out;
    }
    if (rep.warning[0])
        fprintf(stderr, "kiln verify: warning: %s\n", rep.warning);
    if (rep.ready) {
        printf("ready: user %s (uid %u, gid %u), home %s writable, %s\n", rep.user,
               (unsigned)rep.uid, (unsigned)rep.gid, rep.home, rep.version);
    } else {
        printf("not ready: %s check failed: %s\n", kiln_verify_check_name(rep.failed), rep.reason);
        rc = KILN_EXIT_INVALID;
    }
out:
    if (out.log)
        fclose(out.log);
    kiln_cred_release(&cred);
    cli_registry_config_release(&cfg);
    return rc;
}

const struct kiln_cmd kiln_cmd_build = {
    .name = "build",
    .run = run_build,
    .summary = "build a spec into an image (apt, conda, pip steps), optionally push it",
    .help = build_help,
};

const struct kiln_cmd kiln_cmd_verify = {
    .name = "verify",
    .run = run_verify,
    .summary = "check that an image is a working JupyterHub single-user image",
    .help = verify_help,
};
