#include "util/common.h"

/*
 * bench/fill-store: fill a fresh kiln SQLite store (DATA/kiln.db, the file
 * `kiln serve --data-dir DATA` opens) with N specs and M build jobs spread
 * over them, through the store's own API (service/store.h), for
 * bench/serve.sh. Not a test.
 *
 *   fill-store [--specs N] [--jobs M] [--logs K] [--log-lines L] [--seed S] DATA
 *
 * Specs: valid short-form specs (a base image from a small set, 0-6 apt,
 * 0-3 conda and 1-14 pip packages, some with a description or a pull
 * secret), created over the 60 days before the jobs. Jobs: created in id
 * order over the last 30 days; a spec is picked with a skew (a few specs get
 * many jobs), and now and then the spec is changed first (a new revision).
 * Each job but the newest ~2% is claimed and finished at once: ~80%
 * Succeeded (digest, image URL), ~15% Failed (an error message), ~5%
 * Cancelled; of the newest, most stay Pending and a few are cancelled while
 * Pending. The store's clock is faked so the times look like a real history.
 * Nothing is left Running.
 *
 * Logs: K finished jobs (the newest Succeeded ones) get a log of about L
 * lines in DATA/logs/<id>.log, in the format the workers write
 * (service/jobs.h), and their log path recorded. Their ids go to stdout, one
 * "log-job ID" line each; a summary goes to stderr. Everything is
 * deterministic for a given seed (the times follow the wall clock).
 */

#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <sys/stat.h>
#include <time.h>

#include "service/jobs.h"
#include "service/store.h"
#include "spec/imagespec.h"
#include "util/fs.h"

#define DAY_MS (24LL * 3600 * 1000)

/* ---- a small deterministic generator (splitmix64) ---- */

static uint64_t rng_state;

static uint64_t rnd(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Uniform in [0, n). */
static size_t pick(size_t n)
{
    return (size_t)(rnd() % n);
}

/* Uniform in [0, 1). */
static double unit(void)
{
    return (double)(rnd() >> 11) / (double)(1ULL << 53);
}

#define PICK(arr) ((arr)[pick(KILN_ARRAY_SIZE(arr))])

/* ---- the faked clock ---- */

static int64_t now_ms;

static int64_t fake_clock(void *userdata)
{
    return now_ms;
}

/* ---- specs ---- */

static const char *const teams[] = {"nlp",      "vision",   "tabular", "rl",  "etl",
                                    "genomics", "forecast", "speech",  "ops", "research"};
static const char *const kinds[] = {"train", "notebook", "serve", "eval", "batch", "dev"};
static const char *const bases[] = {
    "registry.example.com/kiln/base:bookworm",
    "registry.example.com/kiln/base-gpu:cuda12.2-bookworm",
    "jupyter/datascience-notebook:2024-01-15",
    "jupyter/scipy-notebook:python-3.11",
    "nvidia/cuda:12.2.0-runtime-ubuntu22.04",
    "python:3.11-slim-bookworm",
    "ghcr.io/example/ml-base:2.3.1",
};
static const char *const apt_pkgs[] = {
    "curl",
    "jq",
    "git",
    "vim",
    "htop",
    "build-essential",
    "libpq-dev",
    "graphviz",
    "ffmpeg",
    "libgl1",
    "unzip",
    "openssh-client",
    "postgresql-client",
    "default-jre-headless",
    "libsndfile1",
    "tmux",
    "rsync",
    "less",
};
static const char *const conda_pkgs[] = {
    "mamba", "cudatoolkit=11.8", "gdal", "proj", "r-base=4.3", "nodejs>=18", "cmake",
};
static const char *const pip_names[] = {
    "numpy",       "pandas",          "scipy",  "scikit-learn", "matplotlib", "seaborn",  "torch",
    "torchvision", "tensorflow",      "jax",    "transformers", "datasets",   "requests", "pyyaml",
    "sqlalchemy",  "psycopg2-binary", "boto3",  "xgboost",      "lightgbm",   "polars",   "pyarrow",
    "fastapi",     "uvicorn",         "mlflow", "optuna",       "plotly",     "tqdm",     "rich",
    "pydantic",    "black",
};
static const char *const pip_pins[] = {
    "",      "",   ">=1.2",    "==2.1.4",    ">=2.28,<3",
    "~=1.5", "<2", "==0.15.2", "[all]>=1.0", "; python_version < '3.12'",
};
static const char *const descriptions[] = {
    "training image for the weekly model refresh",
    "notebook environment of the team",
    "batch scoring job, pinned for reproducibility",
    "GPU image with the CUDA toolkit and the usual deep learning stack",
    "evaluation harness; keep in sync with the training image",
    "development sandbox, anything goes",
};
static const char *const secrets[] = {"ghcr-pull", "dockerhub-ro", "example-registry"};

static char *spec_name(size_t i)
{
    return kiln_xasprintf("%s-%s-%05zu", teams[i % KILN_ARRAY_SIZE(teams)],
                          kinds[(i / KILN_ARRAY_SIZE(teams)) % KILN_ARRAY_SIZE(kinds)], i);
}

/* Spec i at version v: the same (i, v) gives the same spec. */
static struct kiln_spec *make_spec(size_t i, unsigned v)
{
    uint64_t saved = rng_state;
    rng_state = (uint64_t)i * 0x100000001b3ULL + 12345;
    struct kiln_spec *s = kiln_spec_new();
    free(s->name);
    s->name = spec_name(i);
    free(s->base_image);
    s->base_image = kiln_xstrdup(PICK(bases));
    if (pick(3) == 0)
        s->description = kiln_xstrdup(PICK(descriptions));
    if (pick(10) == 0)
        s->pull_secret = kiln_xstrdup(PICK(secrets));
    size_t n_apt = pick(7), n_conda = pick(5) < 3 ? 0 : 1 + pick(3), n_pip = 1 + pick(14);
    size_t a0 = pick(KILN_ARRAY_SIZE(apt_pkgs)), c0 = pick(KILN_ARRAY_SIZE(conda_pkgs));
    size_t p0 = pick(KILN_ARRAY_SIZE(pip_names));
    for (size_t k = 0; k < n_apt; k++)
        kiln_strv_push(&s->pkgs[KILN_PKG_APT], apt_pkgs[(a0 + k) % KILN_ARRAY_SIZE(apt_pkgs)]);
    for (size_t k = 0; k < n_conda; k++)
        kiln_strv_push(&s->pkgs[KILN_PKG_CONDA],
                       conda_pkgs[(c0 + k) % KILN_ARRAY_SIZE(conda_pkgs)]);
    for (size_t k = 0; k < n_pip; k++) {
        const char *pin = PICK(pip_pins);
        /* a new version pins the first pip package differently */
        char *p =
            k == 0 && v > 0
                ? kiln_xasprintf("%s==%u.%u.0", pip_names[p0], 1 + v / 10, v % 10)
                : kiln_xasprintf("%s%s", pip_names[(p0 + k) % KILN_ARRAY_SIZE(pip_names)], pin);
        kiln_strv_push_take(&s->pkgs[KILN_PKG_PIP], p);
    }
    rng_state = saved;
    return s;
}

/* Store spec i at version v; it must pass kiln's own validation, as the API's would. */
static int put_spec(struct kiln_store *st, size_t i, unsigned v, struct kiln_error **err)
{
    _cleanup_(kiln_spec_freep) struct kiln_spec *s = make_spec(i, v);
    _cleanup_(kiln_diags_release) struct kiln_diags d = KILN_DIAGS_INIT;
    if (kiln_spec_validate(s, &d) > 0) {
        kiln_diags_to_error(&d, err);
        return kiln_error_prefix(err, "spec '%s'", s->name);
    }
    return kiln_store_spec_put(st, s, KILN_STORE_PUT_UPSERT, err);
}

/* ---- logs ---- */

static void stamp(char out[32], int64_t ms)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static int write_log(const char *data_dir, const struct kiln_store_job *j, size_t lines,
                     struct kiln_error **err)
{
    _cleanup_free_ char *path = kiln_jobs_log_path(data_dir, j->id);
    _cleanup_close_ int fd =
        open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0640);
    if (fd < 0)
        return kiln_error_set(err, KILN_EIO, errno, "create '%s'", path);
    _cleanup_(kiln_buf_release) struct kiln_buf b = KILN_BUF_INIT;
    int64_t t = j->started_ms;
    char ts[32];
    stamp(ts, t);
    kiln_buf_addf(&b,
                  "%s job %" PRId64 ": building spec '%s' revision %s (attempt 1, worker "
                  "bench-1)\n",
                  ts, j->id, j->spec_name, j->revision);
    kiln_buf_addf(&b, "%s base image %s, target %s\n", ts, PICK(bases), j->target_image);
    /* steps apt (~30%), conda (~15%) and pip, then 5 layers and the push */
    const size_t body = lines - 3, layers = body > 6 ? 6 : body;
    const size_t apt_end = body * 3 / 10, conda_end = body * 45 / 100, pip_end = body - layers;
    const double span = (double)(j->finished_ms - j->started_ms);
    for (size_t n = 0; n < body; n++) {
        t = j->started_ms + (int64_t)(span * (double)(n + 1) / (double)(body + 1));
        stamp(ts, t);
        if (n == 0 || n == apt_end || n == conda_end) {
            kiln_buf_addf(&b, "%s step %s: %s\n", ts,
                          n == 0         ? "apt"
                          : n == apt_end ? "conda"
                                         : "pip",
                          n == 0         ? "apt-get install -y --no-install-recommends"
                          : n == apt_end ? "micromamba install -y -n base"
                                         : "pip install --no-cache-dir");
        } else if (n < apt_end) {
            const char *pkg = PICK(apt_pkgs);
            kiln_buf_addf(&b,
                          "%s | Get:%zu http://deb.debian.org/debian bookworm/main amd64 %s "
                          "amd64 %u.%u.%u-%u [%u kB]\n",
                          ts, n, pkg, (unsigned)pick(9), (unsigned)pick(20), (unsigned)pick(30),
                          1 + (unsigned)pick(4), 10 + (unsigned)pick(4000));
        } else if (n < conda_end) {
            const char *pkg = PICK(conda_pkgs);
            if (n % 7 == 0)
                kiln_buf_addf(&b, "%s ! warning: libmamba Could not parse mod/etag header\n", ts);
            else
                kiln_buf_addf(&b, "%s | conda-forge/linux-64 %.*s-%u.%u-h%08llx_0 %5.1f MB done\n",
                              ts, (int)strcspn(pkg, "=<>"), pkg, (unsigned)pick(9),
                              (unsigned)pick(20), (unsigned long long)(rnd() & 0xffffffffULL),
                              unit() * 80.0);
        } else if (n < pip_end) {
            if (n % 3 == 0)
                kiln_buf_addf(&b, "%s | Collecting %s%s\n", ts, PICK(pip_names), PICK(pip_pins));
            else
                kiln_buf_addf(&b,
                              "%s |   Downloading %s-%u.%u.%u-cp311-cp311-manylinux_2_17_x86_64."
                              "whl (%.1f MB)\n",
                              ts, PICK(pip_names), (unsigned)pick(3), (unsigned)pick(30),
                              (unsigned)pick(9), unit() * 200.0);
        } else if (n + 1 < body) {
            kiln_buf_addf(&b, "%s layer %zu/%zu: %llu files, %.1f MB -> %.1f MB (zstd)\n", ts,
                          n - pip_end + 1, layers - 1, (unsigned long long)pick(20000),
                          unit() * 900.0, unit() * 300.0);
        } else {
            kiln_buf_addf(&b, "%s push %s: %zu layers uploaded\n", ts, j->target_image, layers - 1);
        }
    }
    stamp(ts, j->finished_ms);
    kiln_buf_addf(&b, "%s job %" PRId64 ": Succeeded after %.1f s: %s@%s\n", ts, j->id,
                  (double)(j->finished_ms - j->started_ms) / 1000.0, j->target_image,
                  j->image_digest ? j->image_digest : "");
    if (kiln_fs_write_all(fd, b.buf, b.len) < 0)
        return kiln_error_set(err, KILN_EIO, errno, "write '%s'", path);
    return 0;
}

/* ---- main ---- */

static bool parse_size(const char *s, size_t min, size_t max, size_t *ret)
{
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || *s == '-' || v < min || v > max)
        return false;
    *ret = (size_t)v;
    return true;
}

static const char usage[] =
    "usage: fill-store [--specs N] [--jobs M] [--logs K] [--log-lines L] [--seed S] DATA\n"
    "Fill a fresh DATA/kiln.db with N specs (default 10000) and M jobs (default\n"
    "100000); K finished jobs (default 4) get a log of ~L lines (default 2000) in\n"
    "DATA/logs. Prints \"log-job ID\" for each.\n";

static int fail(const char *what, struct kiln_error *e)
{
    fprintf(stderr, "fill-store: %s: %s\n", what, e && e->msg ? e->msg : "unknown error");
    kiln_error_free(e);
    return 1;
}

/* Claim the oldest Pending job, which must be `id`. */
static int claim(struct kiln_store *st, int64_t id, struct kiln_error **err)
{
    struct kiln_store_job j = {0};
    int r = kiln_store_job_claim(st, "bench-1", &j, err);
    if (r < 0)
        return r;
    bool same = r == 1 && j.id == id;
    kiln_store_job_release(&j);
    if (!same)
        return kiln_error_set(err, KILN_EIO, 0, "claim: expected job %" PRId64, id);
    return 0;
}

static const char *const failures[] = {
    "step pip: exit status 1: ERROR: No matching distribution found for torch==9.9.9",
    "step apt: exit status 100: E: Unable to locate package libfoo-dev",
    "pull base image: 401 unauthorized",
    "push: upload blob sha256:0c1d5a8e: 500 internal server error",
    "step conda: exit status 1: PackagesNotFoundError",
    "interrupted",
    "timed out after 7200 s",
};

int main(int argc, char **argv)
{
    size_t n_specs = 10000, n_jobs = 100000, n_logs = 4, log_lines = 2000, seed = 1;
    static const struct option opts[] = {
        {"specs", required_argument, NULL, 's'},
        {"jobs", required_argument, NULL, 'j'},
        {"logs", required_argument, NULL, 'l'},
        {"log-lines", required_argument, NULL, 'n'},
        {"seed", required_argument, NULL, 'r'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        bool ok = true;
        switch (c) {
        case 's':
            ok = parse_size(optarg, 1, 10000000, &n_specs);
            break;
        case 'j':
            ok = parse_size(optarg, 0, 100000000, &n_jobs);
            break;
        case 'l':
            ok = parse_size(optarg, 0, 1000, &n_logs);
            break;
        case 'n':
            ok = parse_size(optarg, 4, 10000000, &log_lines);
            break;
        case 'r':
            ok = parse_size(optarg, 0, SIZE_MAX, &seed);
            break;
        case 'h':
            fputs(usage, stdout);
            return 0;
        default:
            fputs(usage, stderr);
            return 2;
        }
        if (!ok) {
            fprintf(stderr, "fill-store: bad value '%s'\n%s", optarg, usage);
            return 2;
        }
    }
    if (optind != argc - 1) {
        fputs(usage, stderr);
        return 2;
    }
    const char *data_dir = argv[optind];
    struct kiln_error *e = NULL;
    _cleanup_free_ char *logs = kiln_xasprintf("%s/logs", data_dir);
    if (kiln_fs_mkdir_p_path(logs, 0700, NULL, &e) < 0)
        return fail("data directory", e);
    _cleanup_free_ char *db = kiln_xasprintf("%s/kiln.db", data_dir);
    struct stat sb;
    if (stat(db, &sb) == 0) {
        fprintf(stderr, "fill-store: '%s' exists: give a fresh data directory\n", db);
        return 1;
    }

    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    const int64_t end_ms = (int64_t)ts.tv_sec * 1000 - 60 * 1000;
    const int64_t jobs_from = end_ms - 30 * DAY_MS, specs_from = jobs_from - 60 * DAY_MS;
    now_ms = specs_from;
    struct kiln_store_options so = {.connections = 1, .clock_ms = fake_clock};
    _cleanup_(kiln_store_freep) struct kiln_store *st = NULL;
    if (kiln_store_open_sqlite(db, &so, &st, &e) < 0)
        return fail("open", e);

    rng_state = (uint64_t)seed;
    unsigned *version = kiln_xcalloc(n_specs, sizeof(*version));
    for (size_t i = 0; i < n_specs; i++) {
        now_ms = specs_from + (int64_t)((double)i / (double)n_specs * (double)(60 * DAY_MS));
        if (put_spec(st, i, 0, &e) < 0)
            return fail("spec", e);
    }

    /* the newest ~2% stay Pending (or are cancelled while Pending) */
    size_t finished_upto = n_jobs - n_jobs / 50;
    size_t counts[KILN_JOB_PHASES] = {0};
    int64_t last_id = 0;
    const double step = n_jobs ? (double)(30 * DAY_MS) / (double)n_jobs : 0;
    for (size_t k = 0; k < n_jobs; k++) {
        now_ms = jobs_from + (int64_t)(step * (double)k);
        /* skewed: spec index ~ n * u^2 puts more jobs on the low indexes */
        double u = unit();
        size_t i = (size_t)((double)n_specs * u * u);
        if (i >= n_specs)
            i = n_specs - 1;
        if (pick(5) == 0 && put_spec(st, i, ++version[i], &e) < 0)
            return fail("spec update", e);
        _cleanup_free_ char *name = spec_name(i);
        _cleanup_(kiln_store_spec_release) struct kiln_store_spec sp = {0};
        if (kiln_store_spec_get(st, name, &sp, &e) < 0)
            return fail("spec get", e);
        _cleanup_free_ char *target =
            kiln_xasprintf("registry.example.com/kiln/%s:%s", sp.name, sp.revision);
        int64_t id = 0;
        if (kiln_store_job_create(st, sp.name, sp.revision, target, &id, &e) < 0)
            return fail("job create", e);
        last_id = id;
        if (k >= finished_upto) {
            if (pick(10) == 0) {
                if (kiln_store_job_request_cancel(st, id, &e) < 0)
                    return fail("job cancel", e);
                counts[KILN_JOB_CANCELLED]++;
            } else {
                counts[KILN_JOB_PENDING]++;
            }
            continue;
        }
        now_ms += 1000 + (int64_t)pick(30000);
        if (claim(st, id, &e) < 0)
            return fail("job claim", e);
        now_ms += 20000 + (int64_t)pick(600000);
        size_t roll = pick(100);
        enum kiln_job_phase ph = roll < 80   ? KILN_JOB_SUCCEEDED
                                 : roll < 95 ? KILN_JOB_FAILED
                                             : KILN_JOB_CANCELLED;
        char digest[8 + 64 + 1] = "sha256:";
        for (size_t d = 0; d < 64; d++)
            digest[7 + d] = "0123456789abcdef"[rnd() & 15];
        digest[71] = '\0';
        int r = ph == KILN_JOB_SUCCEEDED
                    ? kiln_store_job_finish(st, id, ph, digest, target, NULL, &e)
                : ph == KILN_JOB_FAILED
                    ? kiln_store_job_finish(st, id, ph, NULL, NULL, PICK(failures), &e)
                    : kiln_store_job_finish(st, id, ph, NULL, NULL, "cancelled by admin", &e);
        if (r < 0)
            return fail("job finish", e);
        counts[ph]++;
    }
    free(version);

    /* logs for the newest Succeeded jobs */
    size_t logged = 0;
    for (int64_t id = last_id; id > 0 && logged < n_logs; id--) {
        _cleanup_(kiln_store_job_release) struct kiln_store_job j = {0};
        if (kiln_store_job_get(st, id, &j, &e) < 0)
            return fail("job get", e);
        if (j.phase != KILN_JOB_SUCCEEDED)
            continue;
        if (write_log(data_dir, &j, log_lines, &e) < 0)
            return fail("log", e);
        _cleanup_free_ char *path = kiln_jobs_log_path(data_dir, id);
        if (kiln_store_job_set_log_path(st, id, path, &e) < 0)
            return fail("log path", e);
        printf("log-job %" PRId64 "\n", id);
        logged++;
    }
    fprintf(stderr,
            "fill-store: %zu specs, %zu jobs (%zu Succeeded, %zu Failed, %zu Cancelled, %zu "
            "Pending), %zu logs of %zu lines in %s\n",
            n_specs, n_jobs, counts[KILN_JOB_SUCCEEDED], counts[KILN_JOB_FAILED],
            counts[KILN_JOB_CANCELLED], counts[KILN_JOB_PENDING], logged, log_lines, data_dir);
    return fflush(stdout) == 0 ? 0 : 1;
}
