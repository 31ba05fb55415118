/*
 * Registry settings of the command-line program for the transfer commands
 * (inspect, copy, pull, push): the shared flags, the environment, and the
 * credentials of a registry host. The program side of registry/client.h:
 * this is where the environment is read and files are looked up.
 *
 * Credentials of a registry host, first match wins:
 *   1. --authfile FILE (a docker config.json or a dockerconfigjson payload;
 *      the file must exist);
 *   2. KILN_REGISTRY_ENDPOINT (else PRIMEHUB_CUSTOM_IMAGE_REGISTRY_ENDPOINT),
 *      given as "host[:port]" or a URL "https://host[:port][/path]": for that
 *      host, KILN_REGISTRY_USERNAME / _PASSWORD (else
 *      PRIMEHUB_CUSTOM_IMAGE_REGISTRY_USERNAME / _PASSWORD);
 *   3. without --authfile, the first of REGISTRY_AUTH_FILE,
 *      $DOCKER_CONFIG/config.json, $HOME/.docker/config.json that is set
 *      (a missing file means no credentials).
 * Hosts compare case-insensitively, with docker.io, index.docker.io and
 * registry-1.docker.io as one. GCR's "_json_key" user is plain Basic auth.
 * Credentials never go on a command line, into a message or a log.
 *
 * TLS and transport: --insecure-registry HOST[:PORT] (repeatable) plus the
 * comma-separated KILN_INSECURE_REGISTRIES; --ca-file FILE; the proxy of
 * https_proxy / HTTPS_PROXY / http_proxy / HTTP_PROXY / all_proxy /
 * ALL_PROXY with no_proxy / NO_PROXY (loopback hosts always bypass it).
 * Spool files of registry-to-registry copies go to $TMPDIR, else /var/tmp.
 */
#ifndef KILN_CLI_REGISTRY_CONFIG_H
#define KILN_CLI_REGISTRY_CONFIG_H

#include <getopt.h>
#include <stdbool.h>

#include "kiln/error.h"
#include "registry/auth.h"
#include "registry/client.h"
#include "registry/transfer.h"
#include "util/strv.h"

/* getopt_long codes of the shared options (above any short option). */
enum {
    CLI_OPT_AUTHFILE = 0x100,
    CLI_OPT_INSECURE,
    CLI_OPT_CA_FILE,
    CLI_OPT_PLATFORM,
    CLI_OPT_JOBS,
    CLI_OPT_QUIET,
    CLI_OPT_VERBOSE,
    CLI_OPT_CHUNK_SIZE,
    CLI_OPT_RETRY_TIMES,
};

/* Uploads from a file (push) go in PATCH chunks of this size above it. */
#define CLI_PUSH_CHUNK_SIZE ((uint64_t)64 << 20)

/* The entries of struct option for the shared flags, each with its comma. */
/* clang-format off */
#define CLI_REGISTRY_OPTIONS                                                                       \
    {"authfile", required_argument, NULL, CLI_OPT_AUTHFILE},                                       \
    {"insecure-registry", required_argument, NULL, CLI_OPT_INSECURE},                              \
    {"ca-file", required_argument, NULL, CLI_OPT_CA_FILE},                                         \
    {"platform", required_argument, NULL, CLI_OPT_PLATFORM},                                       \
    {"jobs", required_argument, NULL, CLI_OPT_JOBS},                                               \
    {"chunk-size", required_argument, NULL, CLI_OPT_CHUNK_SIZE},                                   \
    {"retry-times", required_argument, NULL, CLI_OPT_RETRY_TIMES},                                 \
    {"quiet", no_argument, NULL, 'q'},                                                             \
    {"verbose", no_argument, NULL, 'v'},
/* clang-format on */

/* Help text of the shared flags. */
#define CLI_REGISTRY_OPTIONS_HELP                                                                  \
    "  --authfile FILE         credentials file (docker config.json format)\n"                     \
    "  --insecure-registry H   plain HTTP / unverified TLS for registry H[:PORT]\n"                \
    "                          (repeatable; also KILN_INSECURE_REGISTRIES=H1,H2)\n"                \
    "  --ca-file FILE          PEM CA bundle to verify registries with\n"                          \
    "  --platform OS/ARCH[/V]  platform picked from an image index (linux/amd64)\n"                \
    "  --jobs N                blobs transferred at once (4)\n"                                    \
    "  --chunk-size N[k|m]     upload chunk size: push sends blobs above it in\n"                  \
    "                          PATCH chunks (64m); copy streams in chunks of N\n"                  \
    "                          (16m; in the kernel: whole blobs)\n"                                \
    "  --retry-times N         retries per request and resumes per blob (5)\n"                     \
    "  -q, --quiet             no progress and no summary\n"                                       \
    "  -v, --verbose           also print retries and resumes\n"

#define CLI_REGISTRY_ENV_HELP                                                                      \
    "credentials (first match): --authfile FILE; for the host of\n"                                \
    "KILN_REGISTRY_ENDPOINT (or PRIMEHUB_CUSTOM_IMAGE_REGISTRY_ENDPOINT),\n"                       \
    "KILN_REGISTRY_USERNAME/_PASSWORD (or PRIMEHUB_CUSTOM_IMAGE_REGISTRY_USERNAME/\n"              \
    "_PASSWORD); REGISTRY_AUTH_FILE, $DOCKER_CONFIG/config.json or\n"                              \
    "~/.docker/config.json. Registries on loopback addresses are reached over\n"                   \
    "plain HTTP when TLS fails, as docker does.\n"

struct cli_registry_config {
    char *authfile;
    struct kiln_strv insecure; /* NULL-terminated once finished */
    char *ca_file;
    char *os, *arch, *variant; /* NULL: the library's default (linux/amd64) */
    int jobs;                  /* 0: default */
    uint64_t chunk_size;       /* 0: default */
    int retry_times;           /* 0: default */
    bool quiet;
    bool verbose;
    bool print_ref; /* cli_transfer_run() prints REF@DIGEST instead of the digest */
    /* filled by cli_registry_config_finish() */
    char *proxy;
    char *no_proxy;
    char *spool_dir;
    char *endpoint_host; /* lower-case host[:port] of the configured endpoint, or NULL */
    char *auth_json;     /* the credentials file, once read, or NULL */
    size_t auth_len;
    bool auth_read;
    char *auth_path;
};

void cli_registry_config_init(struct cli_registry_config *c);
void cli_registry_config_release(struct cli_registry_config *c);

/*
 * Handle a shared option (a CLI_OPT_* code, 'q' or 'v') of command `cmd`.
 * Returns 1 when handled, 0 when `opt` is not a shared option, or
 * -KILN_EXIT_USAGE after printing a usage error (a bad --platform or --jobs).
 */
int cli_registry_config_option(struct cli_registry_config *c, const char *cmd, int opt,
                               const char *arg);

/*
 * Read the environment and install the log handler (warnings, and with
 * --verbose informational messages, to stderr; nothing with --quiet).
 * Call once after the flags.
 */
int cli_registry_config_finish(struct cli_registry_config *c, struct kiln_error **err);

/*
 * Registry options for the registry of reference `ref` (parsed to find its
 * host): HTTP settings, and credentials found as described above in
 * *cred (the caller releases it with kiln_cred_release(); ret->cred points
 * to it). The strings in *ret are borrowed from c.
 */
int cli_registry_options(struct cli_registry_config *c, const char *ref,
                         struct kiln_registry_options *ret, struct kiln_cred *cred,
                         struct kiln_error **err);

/* Transfer options: platform, jobs, spool directory (no progress, no tags). */
void cli_transfer_options(const struct cli_registry_config *c, struct kiln_transfer_options *o);

/*
 * Normalise a registry endpoint as written in the environment ("HOST[:PORT]",
 * "https://HOST[:PORT]/path") to a lower-case host[:port], with the docker
 * hub's names as "docker.io". NULL for an empty or malformed value. Caller
 * frees. Exposed for tests.
 */
char *cli_registry_endpoint_host(const char *endpoint);

/*
 * An endpoint as the copy command takes it: "oci:DIR[:NAME]" is an OCI
 * layout (DIR holds no ':'), "docker://REF" or a plain REF a registry
 * reference. The strings of *ret point into *ret_owned (caller frees) or arg.
 * -KILN_EINVAL for an empty part.
 */
int cli_transfer_endpoint_parse(const char *arg, struct kiln_transfer_endpoint *ret,
                                char **ret_owned, struct kiln_error **err);

/*
 * Run a transfer: registry options for the registry endpoints (credentials
 * as above), signals caught, progress on stderr (see cli/progress.h; the
 * environment's KILN_PROGRESS=tty|plain forces the style), then the
 * digest of what the destination names on stdout. Returns the exit code;
 * errors are printed as "kiln: ...".
 */
int cli_transfer_run(struct cli_registry_config *c, const char *verb,
                     struct kiln_transfer_endpoint *src, struct kiln_transfer_endpoint *dst,
                     struct kiln_transfer_options *o);

/* True once SIGINT or SIGTERM arrived (see cli_registry_catch_signals()). */
bool cli_registry_interrupted(void);
/* Catch SIGINT/SIGTERM (the second one kills) and ignore SIGPIPE. */
void cli_registry_catch_signals(void);
/* A registry progress hook that cancels once interrupted. */
int cli_registry_http_progress(void *userdata, uint64_t received, uint64_t sent);

#endif
