/* kiln spec validate|hash|convert|target */
#include "util/common.h"
#include "cli/cli.h"

#include <getopt.h>

#include "spec/imagespec.h"
#include "spec/revision.h"
#include "util/buf.h"

static const char spec_help[] =
    "usage: kiln spec validate FILE...\n"
    "       kiln spec hash FILE\n"
    "       kiln spec convert FILE [--to kiln|crd] [--format yaml|json]\n"
    "       kiln spec target FILE [--repo-prefix PREFIX | --push-repo REPO]\n"
    "\n"
    "Read image specs (YAML or JSON; kiln's short form or PrimeHub's ImageSpec\n"
    "resource; FILE '-' is standard input).\n"
    "\n"
    "  validate   check every field; print 'FILE: valid', or one line\n"
    "             'FILE: field: problem' per problem on stderr and exit 1\n"
    "  hash       print the 8-hex-digit revision hash (PrimeHub's)\n"
    "  convert    write the spec in the other shape or format (default: the\n"
    "             short form, YAML)\n"
    "  target     print the image a build of this revision is pushed to:\n"
    "             PREFIX/NAME:HASH, or REPO:NAME-HASH with a single push\n"
    "             repository. Defaults come from KILN_REPO_PREFIX or\n"
    "             PRIMEHUB_CUSTOM_IMAGE_REPO_PREFIX, and KILN_PUSH_REPO.\n";

static int load_spec(const char *path, struct kiln_spec **ret, bool report)
{
    _cleanup_free_ char *data = NULL;
    size_t len = 0;
    _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
    struct kiln_diags diags = KILN_DIAGS_INIT;

    if (cli_read_file(path, KILN_SPEC_MAX_BYTES, &data, &len, &err) < 0) {
        fprintf(stderr, "%s: %s\n", path, err->msg);
        return kiln_error_exit_code(err->code);
    }
    int r = kiln_spec_parse(data, len, ret, &diags, &err);
    if (r >= 0) {
        kiln_diags_release(&diags);
        return KILN_EXIT_OK;
    }
    if (diags.n == 0) {
        fprintf(stderr, "%s: %s\n", path, err->msg);
    } else if (report) {
        for (size_t i = 0; i < diags.n; i++) {
            const struct kiln_diag *d = &diags.v[i];
            if (d->line > 0)
                fprintf(stderr, "%s: %s (line %d): %s\n", path, d->field, d->line, d->message);
            else if (d->field[0])
                fprintf(stderr, "%s: %s: %s\n", path, d->field, d->message);
            else
                fprintf(stderr, "%s: %s\n", path, d->message);
        }
    }
    kiln_diags_release(&diags);
    return kiln_error_exit_code(err->code);
}

static int spec_validate(int argc, char **argv)
{
    if (argc < 2)
        return cli_usage_error("spec", "validate needs at least one FILE");
    int worst = KILN_EXIT_OK;
    for (int i = 1; i < argc; i++) {
        _cleanup_(kiln_spec_freep) struct kiln_spec *s = NULL;
        int r = load_spec(argv[i], &s, true);
        if (r == KILN_EXIT_OK)
            printf("%s: valid\n", argv[i]);
        else if (worst == KILN_EXIT_OK || r > worst)
            worst = r;
    }
    return worst;
}

static int spec_hash(int argc, char **argv)
{
    if (argc != 2)
        return cli_usage_error("spec", "hash takes exactly one FILE");
    _cleanup_(kiln_spec_freep) struct kiln_spec *s = NULL;
    int r = load_spec(argv[1], &s, true);
    if (r != KILN_EXIT_OK)
        return r;
    char rev[KILN_REVISION_LEN + 1];
    kiln_spec_revision(s, rev);
    printf("%s\n", rev);
    return KILN_EXIT_OK;
}

static int spec_convert(int argc, char **argv)
{
    static const struct option opts[] = {
        {"to", required_argument, NULL, 't'},
        {"format", required_argument, NULL, 'f'},
        {NULL, 0, NULL, 0},
    };
    enum kiln_spec_shape shape = KILN_SPEC_SHAPE_KILN;
    enum kiln_spec_format format = KILN_SPEC_FORMAT_YAML;
    int c;
    optind = 0;
    while ((c = getopt_long(argc, argv, "t:f:", opts, NULL)) != -1) {
        switch (c) {
        case 't':
            if (!strcmp(optarg, "kiln"))
                shape = KILN_SPEC_SHAPE_KILN;
            else if (!strcmp(optarg, "crd"))
                shape = KILN_SPEC_SHAPE_CRD;
            else
                return cli_usage_error("spec", "--to must be 'kiln' or 'crd', not '%s'", optarg);
            break;
        case 'f':
            if (!strcmp(optarg, "yaml"))
                format = KILN_SPEC_FORMAT_YAML;
            else if (!strcmp(optarg, "json"))
                format = KILN_SPEC_FORMAT_JSON;
            else
                return cli_usage_error("spec", "--format must be 'yaml' or 'json', not '%s'",
                                       optarg);
            break;
        default:
            return cli_usage_error("spec", "unknown option for convert");
        }
    }
    if (argc - optind != 1)
        return cli_usage_error("spec", "convert takes exactly one FILE");
    _cleanup_(kiln_spec_freep) struct kiln_spec *s = NULL;
    int r = load_spec(argv[optind], &s, true);
    if (r != KILN_EXIT_OK)
        return r;
    _cleanup_(kiln_buf_release) struct kiln_buf out = KILN_BUF_INIT;
    _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
    if (kiln_spec_write(s, shape, format, &out, &err) < 0)
        return cli_fail(err);
    fwrite(out.buf, 1, out.len, stdout);
    return KILN_EXIT_OK;
}

static const char *env_first(const char *a, const char *b)
{
    const char *v = getenv(a);
    if (v && *v)
        return v;
    v = b ? getenv(b) : NULL;
    return v && *v ? v : NULL;
}

static int spec_target(int argc, char **argv)
{
    static const struct option opts[] = {
        {"repo-prefix", required_argument, NULL, 'p'},
        {"push-repo", required_argument, NULL, 'r'},
        {NULL, 0, NULL, 0},
    };
    const char *prefix = env_first("KILN_REPO_PREFIX", "PRIMEHUB_CUSTOM_IMAGE_REPO_PREFIX");
    const char *push_repo = env_first("KILN_PUSH_REPO", NULL);
    int c;
    optind = 0;
    while ((c = getopt_long(argc, argv, "p:r:", opts, NULL)) != -1) {
        switch (c) {
        case 'p':
            prefix = optarg;
            push_repo = NULL;
            break;
        case 'r':
            push_repo = optarg;
            break;
        default:
            return cli_usage_error("spec", "unknown option for target");
        }
    }
    if (argc - optind != 1)
        return cli_usage_error("spec", "target takes exactly one FILE");
    _cleanup_(kiln_spec_freep) struct kiln_spec *s = NULL;
    int r = load_spec(argv[optind], &s, true);
    if (r != KILN_EXIT_OK)
        return r;
    char rev[KILN_REVISION_LEN + 1];
    kiln_spec_revision(s, rev);
    _cleanup_free_ char *target = NULL;
    _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
    if (kiln_spec_target(s->name, rev, prefix, push_repo, &target, &err) < 0)
        return cli_fail(err);
    printf("%s\n", target);
    return KILN_EXIT_OK;
}

static int run_spec(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        cli_print_help(&kiln_cmd_spec);
        return argc < 2 ? KILN_EXIT_USAGE : KILN_EXIT_OK;
    }
    if (cli_wants_help(argc, argv)) {
        cli_print_help(&kiln_cmd_spec);
        return KILN_EXIT_OK;
    }
    const char *sub = argv[1];
    if (!strcmp(sub, "validate"))
        return spec_validate(argc - 1, argv + 1);
    if (!strcmp(sub, "hash"))
        return spec_hash(argc - 1, argv + 1);
    if (!strcmp(sub, "convert"))
        return spec_convert(argc - 1, argv + 1);
    if (!strcmp(sub, "target"))
        return spec_target(argc - 1, argv + 1);
    return cli_usage_error("spec", "unknown subcommand '%s'", sub);
}

const struct kiln_cmd kiln_cmd_spec = {
    .name = "spec",
    .run = run_spec,
    .summary = "validate, hash and convert image specs",
    .help = spec_help,
};
