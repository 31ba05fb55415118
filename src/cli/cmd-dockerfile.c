/* kiln dockerfile FILE [--base-user USER] */
#include "util/common.h"
#include "cli/cli.h"

#include <getopt.h>

#include "spec/dockerfile.h"
#include "spec/imagespec.h"
#include "util/buf.h"

static const char dockerfile_help[] =
    "usage: kiln dockerfile FILE [--base-user USER]\n"
    "\n"
    "Print the Dockerfile a build of the spec in FILE follows: FROM the base\n"
    "image, then as root an apt step, a conda step and a pip step (each only\n"
    "when it has packages, every package shell-quoted), then USER back to the\n"
    "base image's user.\n"
    "\n"
    "  --base-user USER   the base image's user (e.g. jovyan or 1000); without\n"
    "                     it the final USER is left out, with a comment\n";

static int run_dockerfile(int argc, char **argv)
{
    static const struct option opts[] = {
        {"base-user", required_argument, NULL, 'u'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *base_user = NULL;
    int c;
    optind = 0;
    while ((c = getopt_long(argc, argv, "u:h", opts, NULL)) != -1) {
        switch (c) {
        case 'u':
            base_user = optarg;
            break;
        case 'h':
            cli_print_help(&kiln_cmd_dockerfile);
            return KILN_EXIT_OK;
        default:
            return cli_usage_error("dockerfile", "unknown option");
        }
    }
    if (argc - optind != 1)
        return cli_usage_error("dockerfile", "expected exactly one FILE");
    const char *path = argv[optind];

    _cleanup_free_ char *data = NULL;
    size_t len = 0;
    _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
    _cleanup_(kiln_spec_freep) struct kiln_spec *s = NULL;
    struct kiln_diags diags = KILN_DIAGS_INIT;
    if (cli_read_file(path, KILN_SPEC_MAX_BYTES, &data, &len, &err) < 0 ||
        kiln_spec_parse(data, len, &s, &diags, &err) < 0) {
        if (diags.n == 0)
            fprintf(stderr, "%s: %s\n", path, err->msg);
        for (size_t i = 0; i < diags.n; i++)
            fprintf(stderr, "%s: %s%s%s\n", path, diags.v[i].field, diags.v[i].field[0] ? ": " : "",
                    diags.v[i].message);
        kiln_diags_release(&diags);
        return kiln_error_exit_code(err->code);
    }
    _cleanup_(kiln_buf_release) struct kiln_buf out = KILN_BUF_INIT;
    if (kiln_dockerfile_render(s, base_user, &out, &err) < 0)
        return cli_fail(err);
    fwrite(out.buf, 1, out.len, stdout);
    return KILN_EXIT_OK;
}

const struct kiln_cmd kiln_cmd_dockerfile = {
    .name = "dockerfile",
    .run = run_dockerfile,
    .summary = "print the Dockerfile a spec's build follows",
    .help = dockerfile_help,
};
