/*
 * kiln apply|get|describe|logs|cancel|rebuild|delete: the CLI as a client of
 * the `kiln serve` API (docs/api.md), like kubectl.
 */
#include "util/common.h"
#include "cli/cli.h"

#include <getopt.h>
#include <time.h>

#include "cli/client.h"
#include "service/apijson.h"
#include "spec/dns.h"
#include "spec/imagespec.h"
#include "util/buf.h"
#include "util/strv.h"
#include "util/yaml.h"

/* Declared in cli.h too; here so that this file stands alone. */
extern const struct kiln_cmd kiln_cmd_apply;
extern const struct kiln_cmd kiln_cmd_get;
extern const struct kiln_cmd kiln_cmd_describe;
extern const struct kiln_cmd kiln_cmd_logs;
extern const struct kiln_cmd kiln_cmd_cancel;
extern const struct kiln_cmd kiln_cmd_rebuild;
extern const struct kiln_cmd kiln_cmd_delete;

#define CONNECTION_HELP                                                                            \
    "connection:\n"                                                                                \
    "  --url URL            the kiln serve API (KILN_URL, default " KILN_CLIENT_DEFAULT_URL ")\n"  \
    "  --token TOKEN        the admin token (KILN_TOKEN; prefer the variable: a\n"                 \
    "                       command line is visible to other users)\n"

#define EXIT_CODES_HELP                                                                            \
    "exit codes: 0 done, 1 invalid (the server's field errors are listed), 2 usage,\n"             \
    "3 not found, 5 conflict, 8 server unreachable, 9 bad or missing token\n"

/* Page size when fetching whole lists. */
#define PAGE 1000

enum {
    OPT_URL = 0x300,
    OPT_TOKEN,
    OPT_NO_VALIDATE,
    OPT_SPEC,
    OPT_TAIL,
};

#define CONNECTION_OPTIONS                                                                         \
    {"url", required_argument, NULL, OPT_URL},                                                     \
    {                                                                                              \
        "token", required_argument, NULL, OPT_TOKEN                                                \
    }

struct conn {
    const char *url;
    const char *token;
};

static bool conn_option(struct conn *cn, int opt)
{
    if (opt == OPT_URL)
        cn->url = optarg;
    else if (opt == OPT_TOKEN)
        cn->token = optarg;
    else
        return false;
    return true;
}

/* Open the client; on failure print why and return the exit code (else 0). */
static int conn_open(const struct conn *cn, struct kiln_client **ret)
{
    _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
    if (kiln_client_new(cn->url, cn->token, ret, &err) < 0)
        return cli_fail(err);
    return KILN_EXIT_OK;
}

/* Parse a job id: a positive decimal number. */
static bool parse_id(const char *s, long long *ret)
{
    if (!s || !*s || *s == '-' || *s == '+')
        return false;
    char *end = NULL;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end || v <= 0)
        return false;
    *ret = v;
    return true;
}

static int check_name(const char *cmd, const char *name)
{
    _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
    if (kiln_dns_subdomain_check(name, &err) < 0) {
        _cleanup_free_ char *q = kiln_diag_quote(name, 100);
        fprintf(stderr, "kiln %s: '%s' is not a spec name: %s\n", cmd, q, err->msg);
        return KILN_EXIT_INVALID;
    }
    return KILN_EXIT_OK;
}

/* ---- reading answers ----------------------------------------------------------- */

static const char *jstr(const json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

/* A copy of server text safe to print on a terminal: control characters become '?'. */
static char *tty(const char *s)
{
    if (!s)
        return kiln_xstrdup("-");
    char *r = kiln_xstrdup(s);
    unsigned char *p = (unsigned char *)r;
    for (size_t i = 0; p[i]; i++) {
        if (p[i] < 0x20 || p[i] == 0x7f)
            p[i] = '?';
        else if (p[i] == 0xc2 && p[i + 1] >= 0x80 && p[i + 1] <= 0x9f) /* C1 controls */
            p[i] = p[i + 1] = '?';
    }
    return r;
}

static bool parse_time(const char *s, time_t *ret)
{
    struct tm tm = {0};
    int n = 0;
    if (!s ||
        sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
               &tm.tm_min, &tm.tm_sec, &n) != 6 ||
        n == 0)
        return false;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    time_t t = timegm(&tm);
    if (t == (time_t)-1)
        return false;
    *ret = t;
    return true;
}

/* "5s ago", "3m ago", "2h ago", "4d ago", or "-". */
static char *age(const char *ts)
{
    time_t t;
    if (!parse_time(ts, &t))
        return kiln_xstrdup("-");
    long long d = (long long)(time(NULL) - t);
    if (d < 0)
        d = 0;
    if (d < 60)
        return kiln_xasprintf("%llds ago", d);
    if (d < 3600)
        return kiln_xasprintf("%lldm ago", d / 60);
    if (d < 86400)
        return kiln_xasprintf("%lldh ago", d / 3600);
    return kiln_xasprintf("%lldd ago", d / 86400);
}

/* "12.5s", "2m03s", "1h05m", or "-". */
static char *duration(const json_t *v)
{
    if (!json_is_number(v))
        return kiln_xstrdup("-");
    double s = json_number_value(v);
    if (s < 0)
        s = 0;
    if (s < 60)
        return kiln_xasprintf("%.1fs", s);
    long long n = (long long)s;
    if (n < 3600)
        return kiln_xasprintf("%lldm%02llds", n / 60, n % 60);
    return kiln_xasprintf("%lldh%02lldm", n / 3600, (n % 3600) / 60);
}

/* ---- tables -------------------------------------------------------------------- */

struct table {
    size_t ncols;
    struct kiln_strv cells; /* row-major, already cleaned for the terminal */
};

static void table_add(struct table *t, const char *s)
{
    kiln_strv_push_take(&t->cells, tty(s && *s ? s : NULL));
}

static void table_add_take(struct table *t, char *s)
{
    table_add(t, s);
    free(s);
}

static void table_print(struct table *t, const char *indent)
{
    size_t width[16] = {0};
    if (t->ncols == 0 || t->ncols > KILN_ARRAY_SIZE(width))
        return;
    for (size_t i = 0; i < t->cells.n; i++) {
        size_t w = strlen(t->cells.v[i]);
        if (w > width[i % t->ncols])
            width[i % t->ncols] = w;
    }
    for (size_t i = 0; i < t->cells.n; i++) {
        size_t col = i % t->ncols;
        if (col == 0)
            fputs(indent, stdout);
        if (col + 1 == t->ncols)
            printf("%s\n", t->cells.v[i]);
        else
            printf("%-*s   ", (int)width[col], t->cells.v[i]);
    }
    kiln_strv_release(&t->cells);
}

static void spec_header(struct table *t)
{
    t->ncols = 4;
    table_add(t, "NAME");
    table_add(t, "STATUS");
    table_add(t, "IMAGE");
    table_add(t, "UPDATED");
}

static void spec_row(struct table *t, const json_t *s)
{
    table_add(t, jstr(s, "name"));
    table_add(t, jstr(s, "status"));
    table_add(t, jstr(s, "image"));
    table_add_take(t, age(jstr(s, "updatedAt")));
}

static void job_header(struct table *t, bool with_created)
{
    t->ncols = with_created ? 7 : 6;
    table_add(t, "ID");
    table_add(t, "SPEC");
    table_add(t, "REVISION");
    table_add(t, "PHASE");
    table_add(t, "IMAGE");
    table_add(t, "DURATION");
    if (with_created)
        table_add(t, "CREATED");
}

static void job_row(struct table *t, const json_t *j, bool with_created)
{
    json_t *id = json_object_get(j, "id");
    table_add_take(
        t, json_is_integer(id) ? kiln_xasprintf("%lld", (long long)json_integer_value(id)) : NULL);
    table_add(t, jstr(j, "spec"));
    table_add(t, jstr(j, "revision"));
    table_add(t, jstr(j, "phase"));
    table_add(t, jstr(j, "image"));
    table_add_take(t, duration(json_object_get(j, "durationSeconds")));
    if (with_created)
        table_add_take(t, age(jstr(j, "createdAt")));
}

/* ---- fetching ------------------------------------------------------------------ */

/* GET every page of a list; *ret is a new array. */
static int fetch_all(struct kiln_client *c, const char *path, json_t **ret, struct kiln_error **err)
{
    json_t *all = json_array();
    const char *sep = strchr(path, '?') ? "&" : "?";
    for (size_t offset = 0;;) {
        _cleanup_free_ char *p = kiln_xasprintf("%s%slimit=%d&offset=%zu", path, sep, PAGE, offset);
        json_t *page = NULL;
        int r = kiln_client_call(c, "GET", p, NULL, NULL, &page, err);
        if (r < 0) {
            json_decref(all);
            return r;
        }
        json_t *items = json_object_get(page, "items");
        json_t *total = json_object_get(page, "total");
        if (!json_is_array(items)) {
            json_decref(page);
            json_decref(all);
            return kiln_error_set(err, KILN_ENET, 0, "GET %s: the answer has no item list", path);
        }
        size_t n = json_array_size(items);
        json_array_extend(all, items);
        offset += n;
        bool more =
            n > 0 && json_is_integer(total) && (json_int_t)offset < json_integer_value(total);
        json_decref(page);
        if (!more)
            break;
    }
    *ret = all;
    return 0;
}

static char *spec_path(const char *name, const char *suffix)
{
    _cleanup_free_ char *e = kiln_client_escape(name);
    return kiln_xasprintf("/api/v1/specs/%s%s", e, suffix ? suffix : "");
}

/* ---- output shapes ------------------------------------------------------------- */

enum output { OUT_TABLE, OUT_JSON, OUT_YAML };

static int parse_output(const char *cmd, const char *s, enum output *ret)
{
    if (!strcmp(s, "table"))
        *ret = OUT_TABLE;
    else if (!strcmp(s, "json"))
        *ret = OUT_JSON;
    else if (!strcmp(s, "yaml"))
        *ret = OUT_YAML;
    else
        return cli_usage_error(cmd, "-o must be table, json or yaml, not '%s'", s);
    return KILN_EXIT_OK;
}

static int print_json(const json_t *v)
{
    char *s = json_dumps(v, JSON_INDENT(2));
    if (!s)
        return KILN_EXIT_OK;
    printf("%s\n", s);
    free(s);
    return KILN_EXIT_OK;
}

static int print_yaml(const json_t *v)
{
    _cleanup_(kiln_buf_release) struct kiln_buf out = KILN_BUF_INIT;
    _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
    if (kiln_yaml_dump(v, &out, &err) < 0)
        return cli_fail(err);
    fwrite(out.buf, 1, out.len, stdout);
    return KILN_EXIT_OK;
}

/* Copy `key` of `from` into `to` when it is set (not null). */
static void copy_set(json_t *to, const char *to_key, const json_t *from, const char *key)
{
    json_t *v = json_object_get(from, key);
    if (v && !json_is_null(v))
        json_object_set(to, to_key, v);
}

/*
 * A spec of the API as PrimeHub's ImageSpec resource (DESIGN.md section 3):
 * the writable fields through kiln_spec_to_json (updateTime: as given, else
 * updatedAt) and status {phase, jobName, image} of its latest job.
 */
static int spec_to_crd(struct kiln_client *c, const json_t *api, json_t **ret,
                       struct kiln_error **err)
{
    json_t *short_form = json_object();
    copy_set(short_form, "name", api, "name");
    copy_set(short_form, "baseImage", api, "baseImage");
    copy_set(short_form, "pullSecret", api, "pullSecret");
    copy_set(short_form, "description", api, "description");
    copy_set(short_form, "packages", api, "packages");
    /* PrimeHub's updateTime: as written by the client, else the last save. */
    copy_set(short_form, "updateTime", api, "updatedAt");
    copy_set(short_form, "updateTime", api, "updateTime");
    struct kiln_spec *s = NULL;
    int r = kiln_spec_from_json(short_form, &s, NULL, err);
    json_decref(short_form);
    if (r < 0)
        return kiln_error_prefix(err, "spec from kiln serve");
    json_t *crd = kiln_spec_to_json(s, KILN_SPEC_SHAPE_CRD);
    kiln_spec_free(s);

    json_t *status = json_object();
    copy_set(status, "phase", api, "status");
    json_t *job_id = json_object_get(api, "jobId");
    if (json_is_integer(job_id)) {
        _cleanup_free_ char *p =
            kiln_xasprintf("/api/v1/jobs/%lld", (long long)json_integer_value(job_id));
        json_t *job = NULL;
        if (kiln_client_call(c, "GET", p, NULL, NULL, &job, NULL) >= 0)
            copy_set(status, "jobName", job, "name");
        json_decref(job);
    }
    copy_set(status, "image", api, "image");
    if (json_object_size(status))
        json_object_set_new(crd, "status", status);
    else
        json_decref(status);
    *ret = crd;
    return 0;
}

/* A job as PrimeHub's ImageSpecJob resource (DESIGN.md section 3), plus kiln's fields. */
static json_t *job_to_crd(const json_t *j)
{
    json_t *crd = json_object();
    json_object_set_new(crd, "apiVersion", json_string(KILN_CRD_API_VERSION));
    json_object_set_new(crd, "kind", json_string("ImageSpecJob"));
    json_t *meta = json_object();
    copy_set(meta, "name", j, "name");
    json_t *ann = json_object();
    json_t *id = json_object_get(j, "id");
    if (json_is_integer(id))
        json_object_set_new(ann, "kiln/job-id",
                            json_sprintf("%lld", (long long)json_integer_value(id)));
    copy_set(ann, "kiln/spec", j, "spec");
    copy_set(ann, "kiln/revision", j, "revision");
    json_object_set_new(meta, "annotations", ann);
    json_object_set_new(crd, "metadata", meta);

    json_t *snap = json_object_get(j, "specSnapshot");
    json_t *spec = json_object();
    copy_set(spec, "baseImage", snap, "baseImage");
    copy_set(spec, "pullSecret", snap, "pullSecret");
    copy_set(spec, "packages", snap, "packages");
    copy_set(spec, "targetImage", j, "targetImage");
    copy_set(spec, "updateTime", j, "createdAt");
    json_object_set_new(crd, "spec", spec);

    json_t *status = json_object();
    copy_set(status, "phase", j, "phase");
    copy_set(status, "startTime", j, "startedAt");
    copy_set(status, "finishTime", j, "finishedAt");
    copy_set(status, "image", j, "image");
    copy_set(status, "digest", j, "digest");
    copy_set(status, "reason", j, "error");
    json_object_set_new(crd, "status", status);
    return crd;
}

static json_t *k8s_list(json_t *items)
{
    json_t *l = json_object();
    json_object_set_new(l, "apiVersion", json_string("v1"));
    json_object_set_new(l, "kind", json_string("List"));
    json_object_set_new(l, "items", items);
    return l;
}

/* ---- kiln apply -------------------------------------------------------------------- */

static const char apply_help[] =
    "usage: kiln apply -f SPEC [--no-validate] [--url URL] [--token TOKEN]\n"
    "\n"
    "Create or update a spec on kiln serve from a file (YAML or JSON; kiln's\n"
    "short form or a PrimeHub ImageSpec; '-' is standard input). The spec is\n"
    "checked here first, every field error listed; then it is sent to the\n"
    "server (PUT /api/v1/specs/NAME), which queues a build when its revision\n"
    "changed. Prints 'spec/NAME created', 'spec/NAME configured' or\n"
    "'spec/NAME unchanged', then 'build queued: job N' or the server's message.\n"
    "\n"
    "  -f, --filename SPEC  the spec file\n"
    "  --no-validate        skip the local check (the server checks anyway)\n"
    "\n" CONNECTION_HELP "\n" EXIT_CODES_HELP;

static void print_diags(const struct kiln_diags *d)
{
    for (size_t i = 0; i < d->n; i++) {
        const struct kiln_diag *x = &d->v[i];
        if (x->line > 0)
            fprintf(stderr, "  %s (line %d): %s\n", x->field[0] ? x->field : "-", x->line,
                    x->message);
        else if (x->field[0])
            fprintf(stderr, "  %s: %s\n", x->field, x->message);
        else
            fprintf(stderr, "  %s\n", x->message);
    }
}

/* Report a spec that failed the local check; returns the exit code. */
static int local_fail(const char *file, struct kiln_diags *diags, const struct kiln_error *err)
{
    if (diags->n == 0) {
        fprintf(stderr, "kiln: %s: %s\n", file, err ? err->msg : "invalid spec");
    } else {
        fprintf(stderr, "kiln: spec '%s' is invalid:\n", file);
        print_diags(diags);
    }
    kiln_diags_release(diags);
    return KILN_EXIT_INVALID;
}

static bool streq_null(const char *a, const char *b)
{
    if (!a || !*a)
        return !b || !*b;
    return b && !strcmp(a, b);
}

/* True when the server's spec `api` holds what the local spec `s` says. */
static bool same_spec(const struct kiln_spec *s, const json_t *api)
{
    json_t *short_form = json_object();
    copy_set(short_form, "name", api, "name");
    copy_set(short_form, "baseImage", api, "baseImage");
    copy_set(short_form, "pullSecret", api, "pullSecret");
    copy_set(short_form, "description", api, "description");
    copy_set(short_form, "packages", api, "packages");
    struct kiln_spec *remote = NULL;
    int r = kiln_spec_from_json(short_form, &remote, NULL, NULL);
    json_decref(short_form);
    if (r < 0)
        return false;
    bool same = kiln_spec_same_build(s, remote) &&
                streq_null(s->pull_secret, remote->pull_secret) &&
                streq_null(s->description, remote->description);
    kiln_spec_free(remote);
    return same;
}

/* The document as JSON, in the shape it was written (the server reports fields in it). */
static json_t *document_json(const char *data, size_t len)
{
    size_t i = 0;
    while (i < len && (data[i] == ' ' || data[i] == '\t' || data[i] == '\r' || data[i] == '\n'))
        i++;
    if (i < len && data[i] == '{')
        return json_loadb(data, len, 0, NULL);
    json_t *v = NULL;
    if (kiln_yaml_load(data, len, &v, NULL) < 0)
        return NULL;
    return v;
}

static int run_apply(int argc, char **argv)
{
    static const struct option opts[] = {
        {"filename", required_argument, NULL, 'f'},
        {"no-validate", no_argument, NULL, OPT_NO_VALIDATE},
        CONNECTION_OPTIONS,
        {NULL, 0, NULL, 0},
    };
    if (cli_wants_help(argc, argv)) {
        cli_print_help(&kiln_cmd_apply);
        return KILN_EXIT_OK;
    }
    struct conn cn = {0};
    const char *file = NULL;
    bool validate = true;
    int opt;
    optind = 0;
    while ((opt = getopt_long(argc, argv, "f:", opts, NULL)) != -1) {
        if (conn_option(&cn, opt))
            continue;
        switch (opt) {
        case 'f':
            file = optarg;
            break;
        case OPT_NO_VALIDATE:
            validate = false;
            break;
        default:
            return cli_usage_error("apply", "unknown option");
        }
    }
    if (!file)
        return cli_usage_error("apply", "-f SPEC is required");
    if (optind != argc)
        return cli_usage_error("apply", "unexpected argument '%s'", argv[optind]);

    _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
    _cleanup_free_ char *data = NULL;
    size_t len = 0;
    if (cli_read_file(file, KILN_SPEC_MAX_BYTES, &data, &len, &err) < 0)
        return cli_fail(err);

    /* The syntax and the shape (this also gives the name). */
    struct kiln_diags diags = KILN_DIAGS_INIT;
    _cleanup_(kiln_spec_freep) struct kiln_spec *s = NULL;
    int r = kiln_spec_load(data, len, &s, &diags, &err);
    if (r < 0)
        return local_fail(file, &diags, err);
    json_t *body = document_json(data, len);
    if (!body) {
        fprintf(stderr, "kiln: %s: cannot read the document\n", file);
        return KILN_EXIT_INVALID;
    }

    /*
     * Every value, checked exactly as the server will (package texts lose
     * their '#' comments, then kiln_spec_validate). The checked spec is
     * also what "unchanged" is decided on.
     */
    _cleanup_(kiln_spec_freep) struct kiln_spec *checked = NULL;
    r = kiln_apijson_spec_from_body(body, NULL, &checked, &diags, &err);
    if (r < 0 && validate) {
        json_decref(body);
        return local_fail(file, &diags, err);
    }
    kiln_diags_release(&diags);
    kiln_error_free(TAKE_PTR(err));
    if (checked) {
        kiln_spec_free(s);
        s = TAKE_PTR(checked);
    }
    if (!s->name[0]) {
        json_decref(body);
        return cli_usage_error("apply", "the spec in '%s' has no name", file);
    }

    _cleanup_(kiln_client_freep) struct kiln_client *c = NULL;
    int x = conn_open(&cn, &c);
    if (x) {
        json_decref(body);
        return x;
    }
    _cleanup_free_ char *path = spec_path(s->name, NULL);
    _cleanup_free_ char *name = tty(s->name);

    /* What the server holds now, to tell "configured" from "unchanged". */
    json_t *old = NULL;
    bool exists = false;
    r = kiln_client_call(c, "GET", path, NULL, NULL, &old, &err);
    if (r >= 0) {
        exists = true;
    } else if (r != -KILN_ENOTFOUND) {
        json_decref(body);
        return kiln_client_fail(c, err);
    }
    bool unchanged = exists && same_spec(s, old);
    json_decref(old);
    kiln_error_free(TAKE_PTR(err));

    long status = 0;
    json_t *ans = NULL;
    r = kiln_client_call(c, "PUT", path, body, &status, &ans, &err);
    json_decref(body);
    if (r < 0)
        return kiln_client_fail(c, err);

    printf("spec/%s %s\n", name,
           status == 201 || !exists ? "created"
           : unchanged              ? "unchanged"
                                    : "configured");
    json_t *job = json_object_get(ans, "job");
    json_t *job_id = json_object_get(job, "id");
    if (json_is_true(json_object_get(ans, "queued")) && json_is_integer(job_id)) {
        printf("build queued: job %lld\n", (long long)json_integer_value(job_id));
    } else {
        const char *msg = jstr(ans, "message");
        if (msg && *msg) {
            _cleanup_free_ char *m = tty(msg);
            printf("%s\n", m);
        }
    }
    json_decref(ans);
    return KILN_EXIT_OK;
}

/* ---- kiln get ---------------------------------------------------------------------- */

static const char get_help[] =
    "usage: kiln get specs [NAME] [-o table|json|yaml] [--url URL] [--token TOKEN]\n"
    "       kiln get jobs [ID] [--spec NAME] [-o table|json|yaml] [...]\n"
    "\n"
    "List the specs or build jobs kiln serve holds, or show one.\n"
    "\n"
    "  specs      NAME STATUS IMAGE UPDATED; STATUS is the phase of the spec's\n"
    "             latest build, IMAGE its image once that build succeeded\n"
    "  jobs       ID SPEC REVISION PHASE IMAGE DURATION, newest first\n"
    "  -o FORMAT  table (default); json: the API's objects; yaml: PrimeHub's\n"
    "             resources (ImageSpec with status {phase, jobName, image},\n"
    "             ImageSpecJob), a list as a 'List'\n"
    "  --spec NAME  only the jobs of this spec (its revision history)\n"
    "\n" CONNECTION_HELP "\n" EXIT_CODES_HELP;

static int get_specs(struct kiln_client *c, const char *name, enum output out)
{
    _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
    json_t *items = NULL;
    if (name) {
        int x = check_name("get", name);
        if (x)
            return x;
        _cleanup_free_ char *p = spec_path(name, NULL);
        json_t *one = NULL;
        if (kiln_client_call(c, "GET", p, NULL, NULL, &one, &err) < 0)
            return kiln_client_fail(c, err);
        if (out == OUT_JSON) {
            print_json(one);
            json_decref(one);
            return KILN_EXIT_OK;
        }
        if (out == OUT_YAML) {
            json_t *crd = NULL;
            int r = spec_to_crd(c, one, &crd, &err);
            json_decref(one);
            if (r < 0)
                return cli_fail(err);
            r = print_yaml(crd);
            json_decref(crd);
            return r;
        }
        items = json_array();
        json_array_append_new(items, one);
    } else if (fetch_all(c, "/api/v1/specs?order=name", &items, &err) < 0) {
        return kiln_client_fail(c, err);
    }

    int rc = KILN_EXIT_OK;
    size_t i;
    json_t *it;
    if (out == OUT_JSON) {
        json_t *l = json_object();
        json_object_set_new(l, "total", json_integer((json_int_t)json_array_size(items)));
        json_object_set_new(l, "items", items);
        print_json(l);
        json_decref(l);
    } else if (out == OUT_YAML) {
        json_t *crds = json_array();
        json_array_foreach(items, i, it)
        {
            json_t *crd = NULL;
            if (spec_to_crd(c, it, &crd, &err) < 0) {
                json_decref(crds);
                json_decref(items);
                return cli_fail(err);
            }
            json_array_append_new(crds, crd);
        }
        json_decref(items);
        json_t *l = k8s_list(crds);
        rc = print_yaml(l);
        json_decref(l);
    } else {
        if (json_array_size(items) == 0) {
            fprintf(stderr, "no specs\n");
        } else {
            struct table t = {0};
            spec_header(&t);
            json_array_foreach(items, i, it) spec_row(&t, it);
            table_print(&t, "");
        }
        json_decref(items);
    }
    return rc;
}

static int cmp_job_desc(const void *a, const void *b)
{
    json_int_t x = json_integer_value(json_object_get(*(json_t *const *)a, "id"));
    json_int_t y = json_integer_value(json_object_get(*(json_t *const *)b, "id"));
    return x < y ? 1 : x > y ? -1 : 0;
}

/* Every job of every spec, newest first (the API lists jobs per spec). */
static int fetch_all_jobs(struct kiln_client *c, json_t **ret, struct kiln_error **err)
{
    json_t *specs = NULL;
    int r = fetch_all(c, "/api/v1/specs?order=name", &specs, err);
    if (r < 0)
        return r;
    size_t n = 0, i;
    json_t *s;
    json_t **v = NULL;
    json_array_foreach(specs, i, s)
    {
        const char *name = jstr(s, "name");
        if (!name)
            continue;
        _cleanup_free_ char *p = spec_path(name, "/jobs");
        json_t *jobs = NULL;
        r = fetch_all(c, p, &jobs, err);
        if (r == -KILN_ENOTFOUND) { /* deleted meanwhile */
            kiln_error_free(TAKE_PTR(*err));
            continue;
        }
        if (r < 0)
            break;
        size_t k;
        json_t *j;
        json_array_foreach(jobs, k, j)
        {
            v = kiln_xreallocarray(v, n + 1, sizeof(*v));
            v[n++] = json_incref(j);
        }
        json_decref(jobs);
    }
    json_decref(specs);
    json_t *all = json_array();
    if (n)
        qsort(v, n, sizeof(*v), cmp_job_desc);
    for (size_t k = 0; k < n; k++)
        json_array_append_new(all, v[k]);
    free(v);
    if (r < 0) {
        json_decref(all);
        return r;
    }
    *ret = all;
    return 0;
}

static int get_jobs(struct kiln_client *c, const char *id_arg, const char *spec, enum output out)
{
    _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
    json_t *items = NULL;
    if (id_arg) {
        long long id;
        if (!parse_id(id_arg, &id))
            return cli_usage_error("get", "a job is named by its number, not '%s'", id_arg);
        _cleanup_free_ char *p = kiln_xasprintf("/api/v1/jobs/%lld", id);
        json_t *one = NULL;
        if (kiln_client_call(c, "GET", p, NULL, NULL, &one, &err) < 0)
            return kiln_client_fail(c, err);
        if (out == OUT_JSON) {
            print_json(one);
            json_decref(one);
            return KILN_EXIT_OK;
        }
        if (out == OUT_YAML) {
            json_t *crd = job_to_crd(one);
            json_decref(one);
            int r = print_yaml(crd);
            json_decref(crd);
            return r;
        }
        items = json_array();
        json_array_append_new(items, one);
    } else if (spec) {
        int x = check_name("get", spec);
        if (x)
            return x;
        _cleanup_free_ char *p = spec_path(spec, "/jobs");
        if (fetch_all(c, p, &items, &err) < 0)
            return kiln_client_fail(c, err);
    } else if (fetch_all_jobs(c, &items, &err) < 0) {
        return kiln_client_fail(c, err);
    }

    int rc = KILN_EXIT_OK;
    size_t i;
    json_t *it;
    if (out == OUT_JSON) {
        json_t *l = json_object();
        json_object_set_new(l, "total", json_integer((json_int_t)json_array_size(items)));
        json_object_set_new(l, "items", items);
        print_json(l);
        json_decref(l);
    } else if (out == OUT_YAML) {
        json_t *crds = json_array();
        json_array_foreach(items, i, it) json_array_append_new(crds, job_to_crd(it));
        json_decref(items);
        json_t *l = k8s_list(crds);
        rc = print_yaml(l);
        json_decref(l);
    } else {
        if (json_array_size(items) == 0) {
            fprintf(stderr, "no jobs\n");
        } else {
            struct table t = {0};
            job_header(&t, false);
            json_array_foreach(items, i, it) job_row(&t, it, false);
            table_print(&t, "");
        }
        json_decref(items);
    }
    return rc;
}

static int run_get(int argc, char **argv)
{
    static const struct option opts[] = {
        {"output", required_argument, NULL, 'o'},
        {"spec", required_argument, NULL, OPT_SPEC},
        CONNECTION_OPTIONS,
        {NULL, 0, NULL, 0},
    };
    if (cli_wants_help(argc, argv)) {
        cli_print_help(&kiln_cmd_get);
        return KILN_EXIT_OK;
    }
    struct conn cn = {0};
    enum output out = OUT_TABLE;
    const char *spec = NULL;
    int opt;
    optind = 0;
    while ((opt = getopt_long(argc, argv, "o:", opts, NULL)) != -1) {
        if (conn_option(&cn, opt))
            continue;
        switch (opt) {
        case 'o': {
            int x = parse_output("get", optarg, &out);
            if (x)
                return x;
            break;
        }
        case OPT_SPEC:
            spec = optarg;
            break;
        default:
            return cli_usage_error("get", "unknown option");
        }
    }
    if (optind >= argc)
        return cli_usage_error("get", "what to get: specs or jobs");
    const char *kind = argv[optind++];
    const char *name = optind < argc ? argv[optind++] : NULL;
    if (optind < argc)
        return cli_usage_error("get", "unexpected argument '%s'", argv[optind]);
    bool specs = !strcmp(kind, "specs") || !strcmp(kind, "spec") || !strcmp(kind, "imagespecs") ||
                 !strcmp(kind, "imagespec");
    bool jobs = !strcmp(kind, "jobs") || !strcmp(kind, "job");
    if (!specs && !jobs)
        return cli_usage_error("get", "unknown kind '%s' (specs or jobs)", kind);
    if (spec && !jobs)
        return cli_usage_error("get", "--spec goes with 'get jobs'");
    if (spec && name)
        return cli_usage_error("get", "give a job number or --spec, not both");

    _cleanup_(kiln_client_freep) struct kiln_client *c = NULL;
    int x = conn_open(&cn, &c);
    if (x)
        return x;
    return specs ? get_specs(c, name, out) : get_jobs(c, name, spec, out);
}

/* ---- kiln describe ----------------------------------------------------------------- */

static const char describe_help[] =
    "usage: kiln describe spec NAME [--url URL] [--token TOKEN]\n"
    "       kiln describe job ID [...]\n"
    "\n"
    "Show a spec readably: its fields, packages, revision, status and image,\n"
    "and its last 10 build jobs (newest first, with the reason of each failure).\n"
    "A job: its fields, the spec of its revision and the Dockerfile it built.\n"
    "\n" CONNECTION_HELP "\n" EXIT_CODES_HELP;

static void field(const char *label, const char *value)
{
    _cleanup_free_ char *v = tty(value && *value ? value : NULL);
    printf("%-14s%s\n", label, v);
}

static void describe_packages(const json_t *pk, const char *indent)
{
    static const char *const kinds[] = {"apt", "conda", "pip"};
    for (size_t k = 0; k < KILN_ARRAY_SIZE(kinds); k++) {
        json_t *list = json_object_get(pk, kinds[k]);
        size_t n = json_array_size(list);
        _cleanup_free_ char *label = kiln_xasprintf("%s:", kinds[k]);
        printf("%s%-*s", indent, (int)(14 - strlen(indent)), label);
        if (n == 0)
            printf("-\n");
        for (size_t i = 0; i < n; i++) {
            _cleanup_free_ char *v = tty(json_string_value(json_array_get(list, i)));
            if (i == 0)
                printf("%s\n", v);
            else
                printf("%-14s%s\n", "", v);
        }
    }
}

static int describe_spec(struct kiln_client *c, const char *name)
{
    int x = check_name("describe", name);
    if (x)
        return x;
    _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
    _cleanup_free_ char *p = spec_path(name, NULL);
    json_t *s = NULL;
    if (kiln_client_call(c, "GET", p, NULL, NULL, &s, &err) < 0)
        return kiln_client_fail(c, err);
    _cleanup_free_ char *jp = spec_path(name, "/jobs?limit=10");
    json_t *page = NULL;
    if (kiln_client_call(c, "GET", jp, NULL, NULL, &page, &err) < 0) {
        json_decref(s);
        return kiln_client_fail(c, err);
    }

    field("Name:", jstr(s, "name"));
    field("Description:", jstr(s, "description"));
    field("Base image:", jstr(s, "baseImage"));
    field("Pull secret:", jstr(s, "pullSecret"));
    printf("Packages:\n");
    describe_packages(json_object_get(s, "packages"), "  ");
    field("Revision:", jstr(s, "revision"));
    field("Status:", jstr(s, "status"));
    field("Image:", jstr(s, "image"));
    field("Created:", jstr(s, "createdAt"));
    field("Updated:", jstr(s, "updatedAt"));

    json_t *items = json_object_get(page, "items");
    json_t *total = json_object_get(page, "total");
    size_t n = json_array_size(items);
    if (n == 0) {
        printf("Jobs:         none\n");
    } else {
        if (json_is_integer(total) && json_integer_value(total) > (json_int_t)n)
            printf("Jobs:         last %zu of %lld, newest first\n", n,
                   (long long)json_integer_value(total));
        else
            printf("Jobs:         newest first\n");
        struct table t = {0};
        job_header(&t, true);
        size_t i;
        json_t *j;
        json_array_foreach(items, i, j) job_row(&t, j, true);
        table_print(&t, "  ");
        json_array_foreach(items, i, j)
        {
            const char *e = jstr(j, "error");
            if (e && *e) {
                _cleanup_free_ char *q = tty(e);
                printf("  job %lld %s: %s\n",
                       (long long)json_integer_value(json_object_get(j, "id")),
                       jstr(j, "phase") && !strcmp(jstr(j, "phase"), "Cancelled") ? "cancelled"
                                                                                  : "failed",
                       q);
            }
        }
    }
    json_decref(page);
    json_decref(s);
    return KILN_EXIT_OK;
}

static int describe_job(struct kiln_client *c, const char *id_arg)
{
    long long id;
    if (!parse_id(id_arg, &id))
        return cli_usage_error("describe", "a job is named by its number, not '%s'", id_arg);
    _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
    _cleanup_free_ char *p = kiln_xasprintf("/api/v1/jobs/%lld", id);
    json_t *j = NULL;
    if (kiln_client_call(c, "GET", p, NULL, NULL, &j, &err) < 0)
        return kiln_client_fail(c, err);
    _cleanup_free_ char *ids = kiln_xasprintf("%lld", id);
    _cleanup_free_ char *dur = duration(json_object_get(j, "durationSeconds"));
    field("Job:", ids);
    field("Name:", jstr(j, "name"));
    field("Spec:", jstr(j, "spec"));
    field("Revision:", jstr(j, "revision"));
    field("Phase:", jstr(j, "phase"));
    if (jstr(j, "error"))
        field("Reason:", jstr(j, "error"));
    field("Target:", jstr(j, "targetImage"));
    field("Image:", jstr(j, "image"));
    field("Digest:", jstr(j, "digest"));
    field("Created:", jstr(j, "createdAt"));
    field("Started:", jstr(j, "startedAt"));
    field("Finished:", jstr(j, "finishedAt"));
    field("Duration:", dur);
    json_t *snap = json_object_get(j, "specSnapshot");
    field("Base image:", jstr(snap, "baseImage"));
    printf("Packages:\n");
    describe_packages(json_object_get(snap, "packages"), "  ");
    const char *df = jstr(j, "dockerfile");
    if (df) {
        printf("Dockerfile:\n");
        _cleanup_free_ char *copy = kiln_xstrdup(df);
        for (char *line = copy; *line;) {
            char *nl = strchr(line, '\n');
            if (nl)
                *nl = '\0';
            _cleanup_free_ char *q = tty(line);
            printf("  %s\n", q);
            if (!nl)
                break;
            line = nl + 1;
        }
    }
    json_decref(j);
    return KILN_EXIT_OK;
}

static int run_describe(int argc, char **argv)
{
    static const struct option opts[] = {CONNECTION_OPTIONS, {NULL, 0, NULL, 0}};
    if (cli_wants_help(argc, argv)) {
        cli_print_help(&kiln_cmd_describe);
        return KILN_EXIT_OK;
    }
    struct conn cn = {0};
    int opt;
    optind = 0;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1)
        if (!conn_option(&cn, opt))
            return cli_usage_error("describe", "unknown option");
    if (argc - optind != 2)
        return cli_usage_error("describe", "usage: kiln describe spec NAME | job ID");
    const char *kind = argv[optind], *name = argv[optind + 1];
    bool spec = !strcmp(kind, "spec") || !strcmp(kind, "specs");
    bool job = !strcmp(kind, "job") || !strcmp(kind, "jobs");
    if (!spec && !job)
        return cli_usage_error("describe", "unknown kind '%s' (spec or job)", kind);
    _cleanup_(kiln_client_freep) struct kiln_client *c = NULL;
    int x = conn_open(&cn, &c);
    if (x)
        return x;
    return spec ? describe_spec(c, name) : describe_job(c, name);
}

/* ---- kiln logs --------------------------------------------------------------------- */

static const char logs_help[] =
    "usage: kiln logs JOB [-f] [--tail N] [--url URL] [--token TOKEN]\n"
    "\n"
    "Print the build log of job JOB (its number, see 'kiln get jobs').\n"
    "\n"
    "  -f, --follow  keep printing as the build runs, until the job is final;\n"
    "                then exit 0 when it Succeeded, 1 when it Failed or was\n"
    "                Cancelled (8 when the connection ends before that)\n"
    "  --tail N      only the last N lines\n"
    "\n" CONNECTION_HELP "\n" EXIT_CODES_HELP;

static int run_logs(int argc, char **argv)
{
    static const struct option opts[] = {
        {"follow", no_argument, NULL, 'f'},
        {"tail", required_argument, NULL, OPT_TAIL},
        CONNECTION_OPTIONS,
        {NULL, 0, NULL, 0},
    };
    if (cli_wants_help(argc, argv)) {
        cli_print_help(&kiln_cmd_logs);
        return KILN_EXIT_OK;
    }
    struct conn cn = {0};
    bool follow = false;
    long long tail = -1;
    int opt;
    optind = 0;
    while ((opt = getopt_long(argc, argv, "f", opts, NULL)) != -1) {
        if (conn_option(&cn, opt))
            continue;
        switch (opt) {
        case 'f':
            follow = true;
            break;
        case OPT_TAIL:
            if (!strcmp(optarg, "0")) {
                tail = 0;
            } else if (!parse_id(optarg, &tail)) {
                return cli_usage_error("logs", "--tail takes a number of lines, not '%s'", optarg);
            }
            break;
        default:
            return cli_usage_error("logs", "unknown option");
        }
    }
    if (argc - optind != 1)
        return cli_usage_error("logs", "give one job number");
    long long id;
    if (!parse_id(argv[optind], &id))
        return cli_usage_error("logs", "a job is named by its number, not '%s'", argv[optind]);

    _cleanup_(kiln_client_freep) struct kiln_client *c = NULL;
    int x = conn_open(&cn, &c);
    if (x)
        return x;
    _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
    struct kiln_buf q = KILN_BUF_INIT;
    kiln_buf_addf(&q, "/api/v1/jobs/%lld/log", id);
    if (tail >= 0)
        kiln_buf_addf(&q, "?tail=%lld", tail);
    if (follow)
        kiln_buf_adds(&q, tail >= 0 ? "&follow=1" : "?follow=1");
    _cleanup_free_ char *path = kiln_buf_detach(&q, NULL);
    if (kiln_client_stream(c, path, stdout, &err) < 0)
        return kiln_client_fail(c, err);
    if (!follow)
        return KILN_EXIT_OK;

    /* The stream ended: the job is final (or the server went away). */
    _cleanup_free_ char *jp = kiln_xasprintf("/api/v1/jobs/%lld", id);
    json_t *j = NULL;
    if (kiln_client_call(c, "GET", jp, NULL, NULL, &j, &err) < 0)
        return kiln_client_fail(c, err);
    const char *phase = jstr(j, "phase");
    int rc = KILN_EXIT_INVALID;
    if (phase && !strcmp(phase, "Succeeded")) {
        rc = KILN_EXIT_OK;
    } else if (!phase || (strcmp(phase, "Failed") != 0 && strcmp(phase, "Cancelled") != 0)) {
        _cleanup_free_ char *p = tty(phase);
        fprintf(stderr, "kiln: the log of job %lld ended while the job is %s\n", id, p);
        rc = kiln_error_exit_code(KILN_ENET);
    }
    json_decref(j);
    return rc;
}

/* ---- kiln cancel / rebuild / delete ------------------------------------------------- */

static const char cancel_help[] =
    "usage: kiln cancel JOB... [--url URL] [--token TOKEN]\n"
    "\n"
    "Cancel build jobs: a Pending job is Cancelled at once; a Running job's step\n"
    "is killed, then it is Cancelled. A job already final is a conflict (exit 5).\n"
    "\n" CONNECTION_HELP "\n" EXIT_CODES_HELP;

static const char rebuild_help[] =
    "usage: kiln rebuild NAME... [--url URL] [--token TOKEN]\n"
    "\n"
    "Queue a new build of each spec's current revision; prints 'build queued: job N'.\n"
    "With no registry configured on the server this is a conflict (exit 5).\n"
    "\n" CONNECTION_HELP "\n" EXIT_CODES_HELP;

static const char delete_help[] =
    "usage: kiln delete spec NAME... [--url URL] [--token TOKEN]\n"
    "\n"
    "Delete specs: their running builds are cancelled, and their job history and\n"
    "logs removed. Prints 'spec/NAME deleted'.\n"
    "\n" CONNECTION_HELP "\n" EXIT_CODES_HELP;

/* Parse only the connection options; the rest of argv are operands. */
static int parse_conn_only(const char *cmd, int argc, char **argv, struct conn *cn)
{
    static const struct option opts[] = {CONNECTION_OPTIONS, {NULL, 0, NULL, 0}};
    int opt;
    optind = 0;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1)
        if (!conn_option(cn, opt))
            return cli_usage_error(cmd, "unknown option");
    return KILN_EXIT_OK;
}

/* After this error the other operands would fail the same way. */
static bool stops_all(const struct kiln_error *err)
{
    return err->code == KILN_ENET || err->code == KILN_EAUTH || err->code == KILN_ETIMEOUT;
}

/* Keep the worst (highest) exit code of several operations. */
static int worse(int a, int b)
{
    return b > a ? b : a;
}

static int run_cancel(int argc, char **argv)
{
    if (cli_wants_help(argc, argv)) {
        cli_print_help(&kiln_cmd_cancel);
        return KILN_EXIT_OK;
    }
    struct conn cn = {0};
    int x = parse_conn_only("cancel", argc, argv, &cn);
    if (x)
        return x;
    if (optind >= argc)
        return cli_usage_error("cancel", "give a job number");
    for (int i = optind; i < argc; i++) {
        long long id;
        if (!parse_id(argv[i], &id))
            return cli_usage_error("cancel", "a job is named by its number, not '%s'", argv[i]);
    }
    _cleanup_(kiln_client_freep) struct kiln_client *c = NULL;
    x = conn_open(&cn, &c);
    if (x)
        return x;
    int rc = KILN_EXIT_OK;
    for (int i = optind; i < argc; i++) {
        long long id = 0;
        parse_id(argv[i], &id);
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        _cleanup_free_ char *p = kiln_xasprintf("/api/v1/jobs/%lld/cancel", id);
        json_t *j = NULL;
        if (kiln_client_call(c, "POST", p, NULL, NULL, &j, &err) < 0) {
            rc = worse(rc, kiln_client_fail(c, err));
            if (stops_all(err))
                break;
            continue;
        }
        const char *phase = jstr(j, "phase");
        if (phase && !strcmp(phase, "Cancelled"))
            printf("job/%lld cancelled\n", id);
        else
            printf("job/%lld cancel requested\n", id);
        json_decref(j);
    }
    return rc;
}

static int run_rebuild(int argc, char **argv)
{
    if (cli_wants_help(argc, argv)) {
        cli_print_help(&kiln_cmd_rebuild);
        return KILN_EXIT_OK;
    }
    struct conn cn = {0};
    int x = parse_conn_only("rebuild", argc, argv, &cn);
    if (x)
        return x;
    if (optind >= argc)
        return cli_usage_error("rebuild", "give a spec name");
    for (int i = optind; i < argc; i++)
        if ((x = check_name("rebuild", argv[i])))
            return x;
    _cleanup_(kiln_client_freep) struct kiln_client *c = NULL;
    x = conn_open(&cn, &c);
    if (x)
        return x;
    int rc = KILN_EXIT_OK;
    for (int i = optind; i < argc; i++) {
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        _cleanup_free_ char *p = spec_path(argv[i], "/rebuild");
        json_t *j = NULL;
        if (kiln_client_call(c, "POST", p, NULL, NULL, &j, &err) < 0) {
            rc = worse(rc, kiln_client_fail(c, err));
            if (stops_all(err))
                break;
            continue;
        }
        json_t *id = json_object_get(j, "id");
        if (json_is_integer(id))
            printf("build queued: job %lld\n", (long long)json_integer_value(id));
        else
            printf("build queued\n");
        json_decref(j);
    }
    return rc;
}

static int run_delete(int argc, char **argv)
{
    if (cli_wants_help(argc, argv)) {
        cli_print_help(&kiln_cmd_delete);
        return KILN_EXIT_OK;
    }
    struct conn cn = {0};
    int x = parse_conn_only("delete", argc, argv, &cn);
    if (x)
        return x;
    if (argc - optind < 2)
        return cli_usage_error("delete", "usage: kiln delete spec NAME...");
    const char *kind = argv[optind];
    if (strcmp(kind, "spec") != 0 && strcmp(kind, "specs") != 0)
        return cli_usage_error("delete", "unknown kind '%s' (only specs are deleted)", kind);
    for (int i = optind + 1; i < argc; i++)
        if ((x = check_name("delete", argv[i])))
            return x;
    _cleanup_(kiln_client_freep) struct kiln_client *c = NULL;
    x = conn_open(&cn, &c);
    if (x)
        return x;
    int rc = KILN_EXIT_OK;
    for (int i = optind + 1; i < argc; i++) {
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        _cleanup_free_ char *p = spec_path(argv[i], NULL);
        if (kiln_client_call(c, "DELETE", p, NULL, NULL, NULL, &err) < 0) {
            rc = worse(rc, kiln_client_fail(c, err));
            if (stops_all(err))
                break;
            continue;
        }
        printf("spec/%s deleted\n", argv[i]);
    }
    return rc;
}

const struct kiln_cmd kiln_cmd_apply = {
    .name = "apply",
    .run = run_apply,
    .summary = "create or update a spec on kiln serve",
    .help = apply_help,
};

const struct kiln_cmd kiln_cmd_get = {
    .name = "get",
    .run = run_get,
    .summary = "list specs or jobs of kiln serve",
    .help = get_help,
};

const struct kiln_cmd kiln_cmd_describe = {
    .name = "describe",
    .run = run_describe,
    .summary = "show a spec and its last jobs",
    .help = describe_help,
};

const struct kiln_cmd kiln_cmd_logs = {
    .name = "logs",
    .run = run_logs,
    .summary = "print or follow a build job's log",
    .help = logs_help,
};

const struct kiln_cmd kiln_cmd_cancel = {
    .name = "cancel",
    .run = run_cancel,
    .summary = "cancel build jobs",
    .help = cancel_help,
};

const struct kiln_cmd kiln_cmd_rebuild = {
    .name = "rebuild",
    .run = run_rebuild,
    .summary = "queue a rebuild of specs",
    .help = rebuild_help,
};

const struct kiln_cmd kiln_cmd_delete = {
    .name = "delete",
    .run = run_delete,
    .summary = "delete specs, their jobs and logs",
    .help = delete_help,
};
