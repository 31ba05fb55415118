/*
 * kiln serve: the build service (store, workers, JSON API and web page;
 * with --workers 0 the API alone, the builds left to kiln worker);
 * kiln worker: the same build workers without the API, for more hosts on one
 * shared store.
 */
#include "util/common.h"
#include "cli/cli.h"

#include <getopt.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "build/engine.h"
#include "cli/registry-config.h"
#include "oci/reference.h"
#include "service/jobs.h"
#include "service/server.h"
#include "service/store.h"
#include "spec/revision.h"
#include "util/fs.h"
#include "util/log.h"
#include "util/sha256.h"
#include "util/strv.h"

#define DEFAULT_LISTEN      "127.0.0.1:8080"
#define DEFAULT_JOB_TIMEOUT 7200
#define DEFAULT_GRACE       30
#define TOKEN_BYTES         32

static const char serve_help[] =
    "usage: kiln serve [--listen ADDR:PORT] [--data-dir DIR] [--store URL]\n"
    "                  [--workers N] [--job-timeout SECS] [--requeue-interrupted]\n"
    "                  [--runtime R] [--grace SECS] [OPTIONS]\n"
    "\n"
    "Run the build service: specs, their build jobs and pull secrets in a store\n"
    "(SQLite DIR/kiln.db by default), job logs in DIR/logs, N workers that build\n"
    "each new spec revision exactly as `kiln build --push` does, and the JSON API\n"
    "(docs/api.md) with the admin web page at http://ADDR:PORT/. Needs root\n"
    "(builds mount overlays and run runc), unless --workers 0.\n"
    "Prints \"kiln serve: listening on http://ADDR:PORT\" on stderr once it listens.\n"
    "SIGTERM or SIGINT stops it: no new connections, no new builds; running builds\n"
    "get --grace seconds to finish, then are cancelled (job Cancelled, \"kiln serve\n"
    "stopped\"); exit status 0. A second signal ends it at once.\n"
    "\n"
    "  --listen ADDR:PORT      where the API listens (default " DEFAULT_LISTEN ";\n"
    "                          port 0: a free port; IPv6 as [ADDR]:PORT)\n"
    "  --data-dir DIR          database, job logs (DIR/logs) and the build store\n"
    "                          (KILN_DATA_DIR, default " KILN_DEFAULT_DATA_DIR ")\n"
    "  --store URL             the store: sqlite:PATH (default sqlite:DIR/kiln.db) or\n"
    "                          postgresql://[USER@]HOST[:PORT]/DB[?OPTIONS] (libpq's\n"
    "                          URI; a password is best kept in ~/.pgpass or\n"
    "                          PGPASSWORD); KILN_STORE_URL. Several kiln serve may\n"
    "                          share a database: each running job is leased to its\n"
    "                          worker (renewed every 10 s); the jobs of a dead kiln\n"
    "                          serve are failed (or requeued) at start when it ran\n"
    "                          on this host, else once their lease (60 s) expired\n"
    "  --workers N             builds at once (default 1, at most 64). 0: no builds\n"
    "                          here, only the API: jobs stay Pending until a\n"
    "                          `kiln worker` on the same store claims them (with the\n"
    "                          default SQLite store: one on this host with the same\n"
    "                          --data-dir); nothing here then needs root, runc or\n"
    "                          overlayfs (--runtime, --job-timeout, --grace and\n"
    "                          KILN_CACHE_REPO are unused)\n"
    "  --job-timeout SECS      fail a build running longer (default 7200)\n"
    "  --requeue-interrupted   queue again the jobs a killed kiln serve left Running\n"
    "                          (default: they fail with 'interrupted')\n"
    "  --runtime NAME|PATH     the OCI runtime: runc or crun (KILN_RUNTIME; default:\n"
    "                          crun on a pure cgroup v2 host, else runc)\n"
    "  --grace SECS            on SIGTERM, how long running builds may go on (30)\n"
    "  --http-threads N        threads serving HTTP requests (default: one per\n"
    "                          CPU, at least 2)\n"
    "\n"
    "the image registry (where builds are pushed); without one the API answers\n"
    "\"image registry not found\" and specs are saved but not built:\n"
    "  KILN_REGISTRY_ENDPOINT (or PRIMEHUB_CUSTOM_IMAGE_REGISTRY_ENDPOINT)\n"
    "                          host[:port] or https://host[:port] of the registry\n"
    "  KILN_REGISTRY_USERNAME, KILN_REGISTRY_PASSWORD (or PRIMEHUB_CUSTOM_IMAGE_\n"
    "                          REGISTRY_USERNAME/_PASSWORD) its credentials\n"
    "  KILN_REPO_PREFIX (or PRIMEHUB_CUSTOM_IMAGE_REPO_PREFIX) images are pushed to\n"
    "                          PREFIX/NAME:REVISION (default: the endpoint's host)\n"
    "  KILN_PUSH_REPOSITORY    push every image to one repository, as\n"
    "                          REPOSITORY:NAME-REVISION (wins over the prefix)\n"
    "  KILN_INSECURE_REGISTRIES  comma-separated hosts reached over plain HTTP\n"
    "  KILN_CACHE_REPO         HOST[:PORT]/PATH: the step cache shared through this\n"
    "                          registry repository by every kiln serve and kiln\n"
    "                          worker (as kiln build --cache-repo; docs/build.md)\n"
    "A spec's pullSecret names a stored secret (POST /api/v1/secrets) whose\n"
    "dockerconfigjson gives the credentials for the base image's registry.\n"
    "\n"
    "pip: KILN_PIP_INDEX_URL sets the index the pip steps use; KILN_PIP_TRUSTED_HOST\n"
    "(space or comma separated) the hosts pip trusts; an http:// index's host is\n"
    "trusted when none are given.\n"
    "\n"
    "admin token (Authorization: Bearer TOKEN on every API call): KILN_ADMIN_TOKEN,\n"
    "else the one stored (as a SHA-256 hash) in the database, else a new one is\n"
    "made on the first start and printed once on stderr.\n"
    "\n"
    "registry options:\n" CLI_REGISTRY_OPTIONS_HELP "\n" CLI_REGISTRY_ENV_HELP;

static const char worker_help[] =
    "usage: kiln worker [--store URL] [--data-dir DIR] [--workers N]\n"
    "                   [--job-timeout SECS] [--requeue-interrupted] [--runtime R]\n"
    "                   [--grace SECS] [OPTIONS]\n"
    "\n"
    "Run N build workers without the API: they claim the jobs that `kiln serve`\n"
    "(on this or another host) queues in the same store and build them exactly\n"
    "as kiln serve's own workers do. For more build capacity on more hosts: point\n"
    "every kiln serve and kiln worker at one PostgreSQL store (--store\n"
    "postgresql://...). Running jobs are leased (renewed every 10 s; a job whose\n"
    "lease expired for 60 s is recovered by any process). A job's log is written\n"
    "to DIR/logs on the host that builds it and, once the job ends, kept in the\n"
    "store, so every kiln serve can show it (a live log only through this host's\n"
    "files). Needs root (overlays, runc) and\n"
    "an image registry (KILN_REGISTRY_ENDPOINT...): without one it refuses to start.\n"
    "Prints \"kiln worker: N build workers running as HOST-PID (data in DIR)\" on\n"
    "stderr once running. SIGTERM or SIGINT stops it as it stops kiln serve.\n"
    "\n"
    "  --store URL             sqlite:PATH (default sqlite:DIR/kiln.db: kiln serve on\n"
    "                          the same machine) or postgresql://...; KILN_STORE_URL\n"
    "  --data-dir DIR          job logs (DIR/logs) and the build store (KILN_DATA_DIR,\n"
    "                          default " KILN_DEFAULT_DATA_DIR ")\n"
    "  --workers N, --job-timeout SECS, --requeue-interrupted, --runtime NAME|PATH,\n"
    "  --grace SECS            as for kiln serve (see kiln serve --help, which also\n"
    "                          lists the registry and pip settings); --workers from\n"
    "                          1 to 64\n"
    "\n"
    "KILN_CACHE_REPO=HOST[:PORT]/PATH shares the step cache through that registry\n"
    "repository: give every kiln serve and kiln worker the same one.\n"
    "\n"
    "registry options:\n" CLI_REGISTRY_OPTIONS_HELP "\n" CLI_REGISTRY_ENV_HELP;

enum {
    OPT_LISTEN = 0x200,
    OPT_DATA_DIR,
    OPT_WORKERS,
    OPT_JOB_TIMEOUT,
    OPT_REQUEUE,
    OPT_RUNTIME,
    OPT_GRACE,
    OPT_HTTP_THREADS,
    OPT_STORE,
};

static const char *env(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

static bool parse_long(const char *s, long min, long max, long *ret)
{
    char *end = NULL;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max)
        return false;
    *ret = v;
    return true;
}

/* "serve" or "worker": the command running, for messages */
static const char *cmd_name = "serve";

static void log_to_stderr(enum kiln_log_level level, const char *msg, void *userdata)
{
    (void)userdata;
    char stamp[32];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%SZ", &tm);
    fprintf(stderr, "kiln %s: %s %s%s\n", cmd_name, stamp,
            level == KILN_LOG_ERROR  ? "error: "
            : level == KILN_LOG_WARN ? "warning: "
                                     : "",
            msg);
}

/* The admin token's hash: from KILN_ADMIN_TOKEN, the store, or a new token. */
static int admin_token(struct kiln_store *st, char hex[KILN_SHA256_HEX_LEN + 1],
                       struct kiln_error **err)
{
    const char *tok = env("KILN_ADMIN_TOKEN");
    if (tok) {
        kiln_sha256_hex(tok, strlen(tok), hex);
        return 0;
    }
    _cleanup_free_ char *stored = NULL;
    int r = kiln_store_setting_get(st, KILN_STORE_SETTING_ADMIN_TOKEN, &stored, err);
    if (r < 0)
        return r;
    if (r > 0 && strlen(stored) == KILN_SHA256_HEX_LEN &&
        strspn(stored, "0123456789abcdef") == KILN_SHA256_HEX_LEN) {
        memcpy(hex, stored, KILN_SHA256_HEX_LEN + 1);
        return 0;
    }
    uint8_t raw[TOKEN_BYTES];
    size_t got = 0;
    while (got < sizeof(raw)) {
        ssize_t n = getrandom(raw + got, sizeof(raw) - got, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return kiln_error_set(err, KILN_EIO, errno, "generate the admin token");
        got += (size_t)n;
    }
    char token[TOKEN_BYTES * 2 + 1];
    for (size_t i = 0; i < sizeof(raw); i++)
        snprintf(token + 2 * i, 3, "%02x", raw[i]);
    explicit_bzero(raw, sizeof(raw));
    kiln_sha256_hex(token, strlen(token), hex);
    r = kiln_store_setting_set(st, KILN_STORE_SETTING_ADMIN_TOKEN, hex, err);
    if (r < 0) {
        explicit_bzero(token, sizeof(token));
        return kiln_error_prefix(err, "store the admin token");
    }
    fprintf(stderr, "kiln serve: admin token (shown once): %s\n", token);
    explicit_bzero(token, sizeof(token));
    return 0;
}

/* "ADDR" of "ADDR:PORT" or "[ADDR]:PORT" (with its brackets), for the URL we print. */
static char *listen_host(const char *listen)
{
    if (listen[0] == '[') {
        const char *e = strchr(listen, ']');
        return e ? kiln_xstrndup(listen, (size_t)(e - listen + 1)) : kiln_xstrdup(listen);
    }
    const char *c = strrchr(listen, ':');
    return c ? kiln_xstrndup(listen, (size_t)(c - listen)) : kiln_xstrdup(listen);
}

struct registry_setup {
    struct kiln_registry_config rc;
    struct kiln_registry_options push_ro;
    struct kiln_registry_options base_ro;
    struct kiln_cred push_cred;
    /* the shared step cache (KILN_CACHE_REPO) */
    struct kiln_registry_options cache_ro;
    struct kiln_cred cache_cred;
    char *endpoint;
    char *prefix;
    char *push_repo;
};

static void registry_setup_release(struct registry_setup *r)
{
    kiln_cred_release(&r->push_cred);
    kiln_cred_release(&r->cache_cred);
    free(r->endpoint);
    free(r->prefix);
    free(r->push_repo);
    memset(r, 0, sizeof(*r));
}

/* The registry configuration from the environment; rs->rc.configured false when none. */
static int registry_setup(struct cli_registry_config *cfg, struct registry_setup *rs,
                          struct kiln_error **err)
{
    memset(rs, 0, sizeof(*rs));
    const char *prefix = cli_env2("KILN_REPO_PREFIX", "PRIMEHUB_CUSTOM_IMAGE_REPO_PREFIX");
    const char *push = env("KILN_PUSH_REPOSITORY");
    if (!cfg->endpoint_host && !prefix && !push)
        return 0;
    if (prefix) {
        /* "https://host/path" is accepted as PrimeHub's settings sometimes hold it */
        const char *p = strstr(prefix, "://");
        rs->prefix = kiln_xstrdup(p ? p + 3 : prefix);
        size_t n = strlen(rs->prefix);
        while (n > 0 && rs->prefix[n - 1] == '/')
            rs->prefix[--n] = '\0';
    } else if (!push) {
        rs->prefix = kiln_xstrdup(cfg->endpoint_host);
    }
    rs->push_repo = push ? kiln_xstrdup(push) : NULL;
    _cleanup_free_ char *sample = NULL;
    int r = kiln_spec_target("kiln", "00000000", rs->prefix, rs->push_repo, &sample, err);
    if (r < 0)
        return kiln_error_prefix(err, "the image registry settings (KILN_REPO_PREFIX, "
                                      "KILN_PUSH_REPOSITORY)");
    _cleanup_(kiln_ref_release) struct kiln_ref ref = KILN_REF_INIT;
    r = kiln_ref_parse_normalized(sample, &ref, err);
    if (r < 0)
        return kiln_error_prefix(err, "the image registry settings");
    _cleanup_free_ char *host = cli_registry_endpoint_host(ref.domain);
    if (cfg->endpoint_host && host && strcmp(cfg->endpoint_host, host) != 0)
        kiln_log(KILN_LOG_WARN,
                 "images go to '%s', not to the registry endpoint '%s': the endpoint's "
                 "credentials are not used for them",
                 host, cfg->endpoint_host);
    rs->endpoint = kiln_xstrdup(host ? host : ref.domain);
    r = cli_registry_options(cfg, sample, &rs->push_ro, &rs->push_cred, err);
    if (r < 0)
        return r;
    /* the engine's cancel hook drives registry transfers; SIGTERM is handled by sigwait */
    rs->push_ro.progress = NULL;
    rs->push_ro.cred = kiln_cred_present(&rs->push_cred) ? &rs->push_cred : NULL;
    rs->base_ro = rs->push_ro;
    rs->base_ro.cred = NULL;
    rs->rc.configured = true;
    rs->rc.endpoint = rs->endpoint;
    rs->rc.repo_prefix = rs->push_repo ? NULL : rs->prefix;
    rs->rc.push_repo = rs->push_repo;
    rs->rc.push = &rs->push_ro;
    return 0;
}

static int serve_main(int argc, char **argv, bool api)
{
    cmd_name = api ? "serve" : "worker";
    const struct kiln_cmd *self = api ? &kiln_cmd_serve : &kiln_cmd_worker;
    static const struct option opts[] = {
        {"listen", required_argument, NULL, OPT_LISTEN},
        {"data-dir", required_argument, NULL, OPT_DATA_DIR},
        {"workers", required_argument, NULL, OPT_WORKERS},
        {"job-timeout", required_argument, NULL, OPT_JOB_TIMEOUT},
        {"requeue-interrupted", no_argument, NULL, OPT_REQUEUE},
        {"runtime", required_argument, NULL, OPT_RUNTIME},
        {"grace", required_argument, NULL, OPT_GRACE},
        {"http-threads", required_argument, NULL, OPT_HTTP_THREADS},
        {"store", required_argument, NULL, OPT_STORE},
        {"help", no_argument, NULL, 'h'},
        CLI_REGISTRY_OPTIONS{NULL, 0, NULL, 0},
    };
    struct cli_registry_config cfg;
    cli_registry_config_init(&cfg);
    _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
    struct registry_setup rs;
    memset(&rs, 0, sizeof(rs));
    struct kiln_strv trusted = KILN_STRV_INIT;
    const char *listen = DEFAULT_LISTEN, *data_opt = NULL, *runtime = NULL, *store_url = NULL;
    long workers = 1, job_timeout = DEFAULT_JOB_TIMEOUT, grace = DEFAULT_GRACE, threads = 0;
    bool requeue = false;
    struct kiln_store *st = NULL;
    struct kiln_jobs *jobs = NULL;
    struct kiln_server *srv = NULL;
    _cleanup_free_ char *data_dir = NULL, *db = NULL, *host = NULL, *worker_name = NULL;
    int rc = KILN_EXIT_OK;
    int c;
    optind = 0;
    while ((c = getopt_long(argc, argv, "hqv", opts, NULL)) != -1) {
        int r = cli_registry_config_option(&cfg, cmd_name, c, optarg);
        if (r < 0) {
            rc = -r;
            goto out;
        }
        if (r > 0)
            continue;
        switch (c) {
        case OPT_LISTEN:
            if (!api) {
                rc =
                    cli_usage_error(cmd_name, "--listen: a worker serves no API (kiln serve does)");
                goto out;
            }
            listen = optarg;
            break;
        case OPT_DATA_DIR:
            data_opt = optarg;
            break;
        case OPT_STORE:
            store_url = optarg;
            break;
        case OPT_WORKERS:
            /* kiln serve --workers 0: the API alone; a worker is there to build */
            if (!parse_long(optarg, api ? 0 : 1, 64, &workers)) {
                rc = cli_usage_error(cmd_name, "--workers wants a number from %d to 64, not '%s'",
                                     api ? 0 : 1, optarg);
                goto out;
            }
            break;
        case OPT_JOB_TIMEOUT:
            if (!parse_long(optarg, 1, 30L * 24 * 3600, &job_timeout)) {
                rc = cli_usage_error(cmd_name, "--job-timeout: '%s' is not a number of seconds",
                                     optarg);
                goto out;
            }
            break;
        case OPT_REQUEUE:
            requeue = true;
            break;
        case OPT_RUNTIME:
            runtime = optarg;
            break;
        case OPT_GRACE:
            if (!parse_long(optarg, 0, 24L * 3600, &grace)) {
                rc = cli_usage_error(cmd_name, "--grace: '%s' is not a number of seconds", optarg);
                goto out;
            }
            break;
        case OPT_HTTP_THREADS:
            if (!api) {
                rc = cli_usage_error(cmd_name, "--http-threads: a worker serves no API");
                goto out;
            }
            if (!parse_long(optarg, 1, 256, &threads)) {
                rc = cli_usage_error(
                    cmd_name, "--http-threads wants a number from 1 to 256, not '%s'", optarg);
                goto out;
            }
            break;
        case 'h':
            cli_print_help(self);
            goto out;
        default:
            rc = cli_usage_error(cmd_name, "unknown option");
            goto out;
        }
    }
    if (optind < argc) {
        rc = cli_usage_error(cmd_name, "unexpected argument '%s'", argv[optind]);
        goto out;
    }
    if (!strchr(listen, ':')) {
        rc = cli_usage_error(cmd_name, "--listen wants ADDR:PORT, not '%s'", listen);
        goto out;
    }

    /* settings, then our own log handler (cli_registry_config_finish installs one) */
    bool quiet = cfg.quiet;
    cfg.quiet = true;
    if (cli_registry_config_finish(&cfg, &err) < 0) {
        rc = cli_fail(err);
        goto out;
    }
    kiln_log_set_handler(log_to_stderr, NULL,
                         quiet         ? KILN_LOG_WARN
                         : cfg.verbose ? KILN_LOG_DEBUG
                                       : KILN_LOG_INFO);

    /* the registry settings first: a worker without a registry neither makes a
     * data directory nor opens (and migrates) the store */
    if (registry_setup(&cfg, &rs, &err) < 0) {
        rc = cli_fail(err);
        goto out;
    }
    if (!api && !rs.rc.configured) {
        rc = cli_usage_error(cmd_name, "no image registry configured (KILN_REGISTRY_ENDPOINT): "
                                       "a worker would build nothing");
        goto out;
    }

    /* the shared step cache (KILN_CACHE_REPO): for builds, so not without workers */
    const char *cache_repo = workers > 0 ? env("KILN_CACHE_REPO") : NULL;
    if (cache_repo) {
        if (kiln_build_cache_repo_check(cache_repo, &err) < 0) {
            rc = cli_usage_error(cmd_name, "KILN_CACHE_REPO: %s", err->msg);
            goto out;
        }
        if (cli_registry_options(&cfg, cache_repo, &rs.cache_ro, &rs.cache_cred, &err) < 0) {
            rc = cli_fail(err);
            goto out;
        }
        /* as for the push: the engine's cancel hook drives the transfers */
        rs.cache_ro.progress = NULL;
        rs.cache_ro.cred = kiln_cred_present(&rs.cache_cred) ? &rs.cache_cred : NULL;
        kiln_log(KILN_LOG_INFO, "shared step cache: %s", cache_repo);
    }

    if (!data_opt)
        data_opt = env("KILN_DATA_DIR") ? env("KILN_DATA_DIR") : KILN_DEFAULT_DATA_DIR;
    if (kiln_fs_mkdir_p_path(data_opt, 0700, NULL, &err) < 0) {
        kiln_error_prefix(&err, "data directory '%s'", data_opt);
        rc = cli_fail(err);
        goto out;
    }
    data_dir = realpath(data_opt, NULL);
    if (!data_dir) {
        kiln_error_set(&err, KILN_EIO, errno, "data directory '%s'", data_opt);
        rc = cli_fail(err);
        goto out;
    }
    if (!store_url)
        store_url = env("KILN_STORE_URL");
    if (store_url) {
        if (kiln_store_open(store_url, NULL, &st, &err) < 0) {
            rc = cli_fail(err);
            goto out;
        }
    } else {
        db = kiln_xasprintf("%s/kiln.db", data_dir);
        if (kiln_store_open_sqlite(db, NULL, &st, &err) < 0) {
            rc = cli_fail(err);
            goto out;
        }
    }
    char token_hex[KILN_SHA256_HEX_LEN + 1] = "";
    if (api && admin_token(st, token_hex, &err) < 0) {
        rc = cli_fail(err);
        goto out;
    }
    if (rs.rc.configured)
        kiln_log(KILN_LOG_INFO, "image registry %s: images go to %s%s", rs.rc.endpoint,
                 rs.rc.push_repo ? rs.rc.push_repo : rs.rc.repo_prefix,
                 rs.rc.push_repo ? ":NAME-REVISION" : "/NAME:REVISION");
    if (workers == 0) {
        /* only kiln serve gets here: who builds then */
        if (!store_url)
            kiln_log(KILN_LOG_INFO,
                     "no build workers (--workers 0): jobs are built only when a `kiln worker "
                     "--data-dir %s` on this host shares the store",
                     data_dir);
        else if (strcmp(kiln_store_backend(st), "sqlite") == 0)
            kiln_log(KILN_LOG_INFO,
                     "no build workers (--workers 0): jobs are built only when a `kiln worker "
                     "--store %s` on this host shares the store",
                     store_url);
        else
            kiln_log(KILN_LOG_INFO,
                     "no build workers (--workers 0): jobs wait for a `kiln worker` on the same "
                     "store");
    }

    struct kiln_build_options bo = {.format = KILN_FORMAT_DOCKER,
                                    .compress = KILN_COMPRESS_OPTIONS_INIT,
                                    .source_date_epoch = -1};
    bo.runtime = runtime ? runtime : env("KILN_RUNTIME");
    bo.plan.pip_index_url = env("KILN_PIP_INDEX_URL");
    cli_pip_trusted_hosts(bo.plan.pip_index_url, &trusted);
    bo.plan.pip_trusted_hosts = trusted.n ? (const char *const *)trusted.v : NULL;
    bo.base_registry = rs.rc.configured ? &rs.base_ro : NULL;
    bo.cache_repo = cache_repo;
    bo.cache_registry = cache_repo ? &rs.cache_ro : NULL;

    /* every thread started from here on leaves these to sigwait below */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    char hostname[256] = "kiln";
    if (gethostname(hostname, sizeof(hostname) - 1) < 0)
        snprintf(hostname, sizeof(hostname), "kiln");
    hostname[sizeof(hostname) - 1] = '\0';
    worker_name = kiln_xasprintf("%s-%ld", hostname, (long)getpid());
    struct kiln_jobs_options jo = {
        .store = st,
        .data_dir = data_dir,
        .workers = (int)workers,
        .no_workers = workers == 0,
        .job_timeout_ms = job_timeout * 1000,
        .requeue_interrupted = requeue,
        .worker_name = worker_name,
        .registry = rs.rc,
        .build = workers > 0 ? &bo : NULL,
    };
    if (kiln_jobs_start(&jo, &jobs, &err) < 0) {
        rc = cli_fail(err);
        goto out;
    }
    if (!api) {
        fprintf(stderr, "kiln worker: %ld build worker%s running as %s (data in %s)\n", workers,
                workers == 1 ? "" : "s", worker_name, data_dir);
        fflush(stderr);
        goto wait;
    }
    struct kiln_server_options so = {
        .listen = listen,
        .threads = (int)threads,
        .store = st,
        .jobs = jobs,
        .data_dir = data_dir,
        .token_sha256 = token_hex,
        .registry = &rs.rc,
    };
    if (kiln_server_start(&so, &srv, &err) < 0) {
        rc = cli_fail(err);
        goto out;
    }
    host = listen_host(listen);
    fprintf(stderr, "kiln serve: listening on http://%s:%u\n", host,
            (unsigned)kiln_server_port(srv));
    fflush(stderr);

wait:;
    int sig = 0;
    while (sigwait(&sigs, &sig) != 0)
        ;
    kiln_log(KILN_LOG_INFO, "%s: stopping", sig == SIGINT ? "SIGINT" : "SIGTERM");
    /* a second signal ends the process at once */
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    pthread_sigmask(SIG_UNBLOCK, &sigs, NULL);

out:
    kiln_server_stop(srv);
    kiln_jobs_stop(jobs, grace * 1000);
    kiln_store_free(st);
    if (rc == KILN_EXIT_OK && st)
        kiln_log(KILN_LOG_INFO, "stopped");
    kiln_strv_release(&trusted);
    registry_setup_release(&rs);
    cli_registry_config_release(&cfg);
    return rc;
}

static int run_serve(int argc, char **argv)
{
    return serve_main(argc, argv, true);
}

static int run_worker(int argc, char **argv)
{
    return serve_main(argc, argv, false);
}

const struct kiln_cmd kiln_cmd_worker = {
    .name = "worker",
    .run = run_worker,
    .summary = "run build workers only, on a store shared with kiln serve",
    .help = worker_help,
};

const struct kiln_cmd kiln_cmd_serve = {
    .name = "serve",
    .run = run_serve,
    .summary = "run the build service: JSON API, web page and build workers",
    .help = serve_help,
};
