/* Registry settings of the transfer commands: flags, environment, credentials. */
#include "util/common.h"
#include "cli/registry-config.h"

#include <ctype.h>
#include <signal.h>
#include <strings.h>

#include "cli/cli.h"
#include "cli/progress.h"
#include "oci/reference.h"
#include "util/log.h"

#define AUTH_FILE_NAME "config.json"

static volatile sig_atomic_t interrupted;

void cli_registry_config_init(struct cli_registry_config *c)
{
    memset(c, 0, sizeof(*c));
    c->insecure = (struct kiln_strv)KILN_STRV_INIT;
}

void cli_registry_config_release(struct cli_registry_config *c)
{
    if (!c)
        return;
    free(c->authfile);
    kiln_strv_release(&c->insecure);
    free(c->ca_file);
    free(c->os);
    free(c->arch);
    free(c->variant);
    free(c->proxy);
    free(c->no_proxy);
    free(c->spool_dir);
    free(c->endpoint_host);
    if (c->auth_json) {
        explicit_bzero(c->auth_json, c->auth_len);
        free(c->auth_json);
    }
    free(c->auth_path);
    cli_registry_config_init(c);
}

static void set_str(char **dst, const char *v)
{
    free(*dst);
    *dst = v ? kiln_xstrdup(v) : NULL;
}

static bool platform_part_ok(const char *s, size_t n)
{
    if (n == 0 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '_' && s[i] != '-' && s[i] != '.')
            return false;
    return true;
}

static int parse_platform(struct cli_registry_config *c, const char *arg)
{
    const char *s1 = strchr(arg, '/');
    if (!s1)
        return -1;
    const char *s2 = strchr(s1 + 1, '/');
    const char *end = arg + strlen(arg);
    if (!platform_part_ok(arg, (size_t)(s1 - arg)))
        return -1;
    const char *arch_end = s2 ? s2 : end;
    if (!platform_part_ok(s1 + 1, (size_t)(arch_end - s1 - 1)))
        return -1;
    if (s2 && !platform_part_ok(s2 + 1, (size_t)(end - s2 - 1)))
        return -1;
    free(c->os);
    free(c->arch);
    free(c->variant);
    c->os = kiln_xstrndup(arg, (size_t)(s1 - arg));
    c->arch = kiln_xstrndup(s1 + 1, (size_t)(arch_end - s1 - 1));
    c->variant = s2 ? kiln_xstrdup(s2 + 1) : NULL;
    return 0;
}

int cli_registry_config_option(struct cli_registry_config *c, const char *cmd, int opt,
                               const char *arg)
{
    switch (opt) {
    case CLI_OPT_AUTHFILE:
        set_str(&c->authfile, arg);
        return 1;
    case CLI_OPT_INSECURE:
        if (!arg[0] || strchr(arg, ',') || strchr(arg, '/'))
            return -cli_usage_error(cmd, "--insecure-registry wants HOST[:PORT], not '%s'", arg);
        kiln_strv_push(&c->insecure, arg);
        return 1;
    case CLI_OPT_CA_FILE:
        set_str(&c->ca_file, arg);
        return 1;
    case CLI_OPT_PLATFORM:
        if (parse_platform(c, arg) < 0)
            return -cli_usage_error(cmd, "--platform wants OS/ARCH[/VARIANT], not '%s'", arg);
        return 1;
    case CLI_OPT_JOBS: {
        char *end = NULL;
        errno = 0;
        long n = strtol(arg, &end, 10);
        if (errno || !end || *end || n < 1 || n > KILN_TRANSFER_MAX_JOBS)
            return -cli_usage_error(cmd, "--jobs wants a number from 1 to %d, not '%s'",
                                    KILN_TRANSFER_MAX_JOBS, arg);
        c->jobs = (int)n;
        return 1;
    }
    case CLI_OPT_CHUNK_SIZE: {
        uint64_t n = 0;
        if (!cli_parse_size(arg, &n) || n == 0 || n > ((uint64_t)4 << 30))
            return -cli_usage_error(cmd, "--chunk-size wants a size from 1 to 4g, not '%s'", arg);
        c->chunk_size = n;
        return 1;
    }
    case CLI_OPT_RETRY_TIMES: {
        char *end = NULL;
        errno = 0;
        long n = strtol(arg, &end, 10);
        if (errno || !end || *end || n < 1 || n > 100)
            return -cli_usage_error(cmd, "--retry-times wants a number from 1 to 100, not '%s'",
                                    arg);
        c->retry_times = (int)n;
        return 1;
    }
    case 'q':
    case CLI_OPT_QUIET:
        c->quiet = true;
        return 1;
    case 'v':
    case CLI_OPT_VERBOSE:
        c->verbose = true;
        return 1;
    default:
        return 0;
    }
}

static const char *env(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

char *cli_registry_endpoint_host(const char *endpoint)
{
    if (!endpoint)
        return NULL;
    const char *p = endpoint;
    while (*p == ' ' || *p == '\t')
        p++;
    const char *scheme = strstr(p, "://");
    if (scheme) {
        if (!((scheme - p == 5 && strncasecmp(p, "https", 5) == 0) ||
              (scheme - p == 4 && strncasecmp(p, "http", 4) == 0)))
            return NULL;
        p = scheme + 3;
    }
    size_t n = strcspn(p, "/?# \t\r\n");
    if (n == 0 || n > 255)
        return NULL;
    const char *at = memchr(p, '@', n);
    if (at) /* userinfo in the endpoint: ignored, never echoed */
        n -= (size_t)(at + 1 - p), p = at + 1;
    if (n == 0)
        return NULL;
    char *h = kiln_xstrndup(p, n);
    for (char *q = h; *q; q++) {
        unsigned char ch = (unsigned char)*q;
        if (!isalnum(ch) && !strchr(".-_:[]", ch)) {
            free(h);
            return NULL;
        }
        *q = (char)tolower(ch);
    }
    if (!strcmp(h, "index.docker.io") || !strcmp(h, "registry-1.docker.io")) {
        free(h);
        h = kiln_xstrdup("docker.io");
    }
    return h;
}

static void log_to_stderr(enum kiln_log_level level, const char *msg, void *userdata)
{
    (void)userdata;
    fprintf(stderr, "kiln: %s%s\n", level <= KILN_LOG_WARN ? "warning: " : "", msg);
}

int cli_registry_config_finish(struct cli_registry_config *c, struct kiln_error **err)
{
    const char *list = env("KILN_INSECURE_REGISTRIES");
    if (list) {
        const char *p = list;
        while (*p) {
            size_t n = strcspn(p, ",");
            size_t s = 0;
            while (s < n && (p[s] == ' ' || p[s] == '\t'))
                s++;
            size_t e = n;
            while (e > s && (p[e - 1] == ' ' || p[e - 1] == '\t'))
                e--;
            if (e > s)
                kiln_strv_push_take(&c->insecure, kiln_xstrndup(p + s, e - s));
            p += n;
            if (*p == ',')
                p++;
        }
    }
    const char *proxy = NULL;
    static const char *const proxies[] = {"https_proxy", "HTTPS_PROXY", "http_proxy",
                                          "HTTP_PROXY",  "all_proxy",   "ALL_PROXY"};
    for (size_t i = 0; i < KILN_ARRAY_SIZE(proxies) && !proxy; i++)
        proxy = env(proxies[i]);
    if (proxy) {
        c->proxy = kiln_xstrdup(proxy);
        const char *np = cli_env2("no_proxy", "NO_PROXY");
        c->no_proxy = kiln_xasprintf("%s%slocalhost,127.0.0.1,::1", np ? np : "", np ? "," : "");
    }
    const char *tmp = env("TMPDIR");
    c->spool_dir = kiln_xstrdup(tmp ? tmp : "/var/tmp");

    const char *ep = cli_env2("KILN_REGISTRY_ENDPOINT", "PRIMEHUB_CUSTOM_IMAGE_REGISTRY_ENDPOINT");
    if (ep) {
        c->endpoint_host = cli_registry_endpoint_host(ep);
        if (!c->endpoint_host)
            return kiln_error_set(err, KILN_EINVAL, 0,
                                  "the registry endpoint in the environment is not a "
                                  "host[:port] or an http(s) URL");
    }

    if (c->authfile) {
        c->auth_path = kiln_xstrdup(c->authfile);
    } else if (env("REGISTRY_AUTH_FILE")) {
        c->auth_path = kiln_xstrdup(env("REGISTRY_AUTH_FILE"));
    } else if (env("DOCKER_CONFIG")) {
        c->auth_path = kiln_xasprintf("%s/%s", env("DOCKER_CONFIG"), AUTH_FILE_NAME);
    } else if (env("HOME")) {
        c->auth_path = kiln_xasprintf("%s/.docker/%s", env("HOME"), AUTH_FILE_NAME);
    }

    if (!c->quiet)
        kiln_log_set_handler(log_to_stderr, NULL, c->verbose ? KILN_LOG_INFO : KILN_LOG_WARN);
    return 0;
}

/* Read the credentials file once; a missing file is fine unless named by --authfile. */
static int load_auth(struct cli_registry_config *c, struct kiln_error **err)
{
    if (c->auth_read || !c->auth_path)
        return 0;
    c->auth_read = true;
    int rc = cli_read_file(c->auth_path, KILN_AUTH_CONFIG_MAX, &c->auth_json, &c->auth_len, err);
    if (rc == -KILN_ENOTFOUND && !c->authfile) {
        if (err) {
            kiln_error_free(*err);
            *err = NULL;
        }
        return 0;
    }
    if (rc < 0)
        return kiln_error_prefix(err, "credentials file");
    return 0;
}

static int lookup_file(struct cli_registry_config *c, const char *host, struct kiln_cred *cred,
                       struct kiln_error **err)
{
    int rc = load_auth(c, err);
    if (rc < 0 || !c->auth_json)
        return rc;
    rc = kiln_auth_config_lookup(c->auth_json, c->auth_len, host, cred, err);
    if (rc < 0)
        return kiln_error_prefix(err, "credentials file '%s'", c->auth_path);
    return rc;
}

int cli_registry_options(struct cli_registry_config *c, const char *ref,
                         struct kiln_registry_options *ret, struct kiln_cred *cred,
                         struct kiln_error **err)
{
    _cleanup_(kiln_ref_release) struct kiln_ref r = KILN_REF_INIT;
    int rc = kiln_ref_parse_normalized(ref, &r, err);
    if (rc < 0)
        return rc;
    _cleanup_free_ char *host = cli_registry_endpoint_host(r.domain);
    if (!host)
        return kiln_error_set(err, KILN_EINVAL, 0, "invalid registry '%s'", r.domain);

    struct kiln_cred found = KILN_CRED_INIT;
    rc = 0;
    if (c->authfile)
        rc = lookup_file(c, host, &found, err);
    if (rc == 0 && c->endpoint_host && strcmp(c->endpoint_host, host) == 0) {
        const char *u =
            cli_env2("KILN_REGISTRY_USERNAME", "PRIMEHUB_CUSTOM_IMAGE_REGISTRY_USERNAME");
        const char *p =
            cli_env2("KILN_REGISTRY_PASSWORD", "PRIMEHUB_CUSTOM_IMAGE_REGISTRY_PASSWORD");
        if (u || p) {
            found.username = u ? kiln_xstrdup(u) : NULL;
            found.password = p ? kiln_xstrdup(p) : NULL;
            rc = 1;
        }
    }
    if (rc == 0 && !c->authfile)
        rc = lookup_file(c, host, &found, err);
    if (rc < 0)
        return rc;

    memset(ret, 0, sizeof(*ret));
    ret->http.insecure = (const char *const *)c->insecure.v;
    ret->http.ca_file = c->ca_file;
    ret->http.proxy = c->proxy;
    ret->http.no_proxy = c->no_proxy;
    ret->progress = cli_registry_http_progress;
    ret->chunk_size = c->chunk_size ? c->chunk_size : CLI_PUSH_CHUNK_SIZE;
    if (c->retry_times > 0) {
        ret->http.max_attempts = c->retry_times + 1;
        ret->max_resumes = c->retry_times;
    }
    *cred = found;
    ret->cred = cred;
    return 0;
}

void cli_transfer_options(const struct cli_registry_config *c, struct kiln_transfer_options *o)
{
    memset(o, 0, sizeof(*o));
    o->os = c->os;
    o->arch = c->arch;
    o->variant = c->variant;
    o->jobs = c->jobs;
    o->spool_dir = c->spool_dir;
    o->stream_chunk = c->chunk_size;
}

static void on_signal(int sig)
{
    (void)sig;
    interrupted = 1;
}

bool cli_registry_interrupted(void)
{
    return interrupted != 0;
}

void cli_registry_catch_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sa.sa_flags = (int)SA_RESETHAND; /* a second signal kills */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

int cli_registry_http_progress(void *userdata, uint64_t received, uint64_t sent)
{
    (void)userdata;
    (void)received;
    (void)sent;
    return interrupted != 0;
}

int cli_transfer_endpoint_parse(const char *arg, struct kiln_transfer_endpoint *ret,
                                char **ret_owned, struct kiln_error **err)
{
    memset(ret, 0, sizeof(*ret));
    *ret_owned = NULL;
    if (strncmp(arg, "oci:", 4) == 0) {
        char *s = kiln_xstrdup(arg + 4);
        char *colon = strchr(s, ':');
        if (colon)
            *colon = '\0';
        if (!s[0] || (colon && !colon[1])) {
            free(s);
            return kiln_error_set(err, KILN_EINVAL, 0, "'%s': want oci:DIR[:NAME]", arg);
        }
        ret->layout = s;
        ret->name = colon ? colon + 1 : NULL;
        *ret_owned = s;
        return 0;
    }
    if (strncmp(arg, "docker://", 9) == 0)
        arg += 9;
    if (!arg[0])
        return kiln_error_set(err, KILN_EINVAL, 0, "empty image reference");
    ret->ref = arg;
    return 0;
}

int cli_transfer_run(struct cli_registry_config *c, const char *verb,
                     struct kiln_transfer_endpoint *src, struct kiln_transfer_endpoint *dst,
                     struct kiln_transfer_options *o)
{
    _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
    struct kiln_registry_options sro, dro;
    struct kiln_cred scred = KILN_CRED_INIT, dcred = KILN_CRED_INIT;
    int rc = 0;
    if (src->ref) {
        rc = cli_registry_options(c, src->ref, &sro, &scred, &err);
        src->registry = &sro;
    }
    if (rc >= 0 && dst->ref) {
        rc = cli_registry_options(c, dst->ref, &dro, &dcred, &err);
        dst->registry = &dro;
    }
    if (rc < 0) {
        kiln_cred_release(&scred);
        kiln_cred_release(&dcred);
        return cli_fail(err);
    }
    cli_registry_catch_signals();
    struct cli_progress *p = cli_progress_new(stderr, c->quiet, verb);
    const char *style = getenv("KILN_PROGRESS");
    if (style && !strcmp(style, "tty"))
        cli_progress_set_tty(p, 1);
    else if (style && !strcmp(style, "plain"))
        cli_progress_set_tty(p, 0);
    o->progress.fn = cli_progress_event;
    o->progress.userdata = p;
    struct kiln_transfer_result res;
    rc = kiln_transfer_copy(src, dst, o, &res, &err);
    cli_progress_finish(p, rc < 0 ? NULL : &res);
    cli_progress_free(p);
    kiln_cred_release(&scred);
    kiln_cred_release(&dcred);
    if (rc < 0 && cli_registry_interrupted()) {
        fprintf(stderr, "kiln: interrupted\n");
        return kiln_error_exit_code(KILN_ECANCELLED);
    }
    if (rc < 0)
        return cli_fail(err);
    if (c->print_ref && dst->ref)
        printf("%s@%s\n", dst->ref, res.digest);
    else
        printf("%s\n", res.digest);
    return KILN_EXIT_OK;
}
