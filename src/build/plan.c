#include "util/common.h"

#include "build/plan.h"
#include "util/buf.h"
#include "util/sha256.h"
#include "util/shquote.h"

/*
 * The fixed step scripts: packages are their positional parameters.
 *
 * apt: apt-get reads an argument that names no package and holds '.' or '+'
 * (the only regex characters spec/apt lets through) as a regular expression
 * over every package name ("jq." installs libjs-jquery), so each such name
 * (without =version, /release, :arch) must first be found exactly in
 * `apt-cache --all-names pkgnames`; a miss fails the step like apt-get's
 * own "Unable to locate package", with its exit status 100.
 */
static const char apt_script[] =
    "set -e\n"
    "export DEBIAN_FRONTEND=noninteractive\n"
    "apt-get update -q -o Acquire::Languages=none\n"
    "check=\n"
    "for a in \"$@\"; do\n"
    "    n=${a%%=*}; n=${n%%/*}; n=${n%%:*}\n"
    "    case $n in *[.+]*) check=\"$check$n \" ;; esac\n"
    "done\n"
    "if [ -n \"$check\" ]; then\n"
    "    missing=$(apt-cache --all-names pkgnames | awk -v want=\"$check\" '\n"
    "        BEGIN { n = split(want, w, \" \"); for (i = 1; i <= n; i++) need[w[i]] = 1 }\n"
    "        $0 in need { delete need[$0] }\n"
    "        END { for (k in need) printf \"%s \", k }')\n"
    "    if [ -n \"$missing\" ]; then\n"
    "        echo \"E: Unable to locate package ${missing% } (no package has that exact name)\" "
    ">&2\n"
    "        exit 100\n"
    "    fi\n"
    "fi\n"
    "apt-get install -q -y --no-install-recommends \"$@\"\n"
    "apt-get clean\n"
    "rm -rf /var/lib/apt/lists/*\n";
static const char conda_script[] = "set -e\n"
                                   "conda install --yes \"$@\"\n"
                                   "conda clean --all -f -y\n";
static const char pip_script[] = "set -e\n"
                                 "if command -v pip >/dev/null 2>&1; then\n"
                                 "    exec pip install --no-cache-dir --no-warn-conflicts \"$@\"\n"
                                 "fi\n"
                                 "exec python3 -m pip install --no-cache-dir --no-warn-conflicts "
                                 "\"$@\"\n";

static const char *const apt_exclude[] = {"var/lib/apt/lists/*", "var/cache/apt/*.bin", NULL};
static const char *const conda_exclude[] = {"root/.cache/*", NULL};
static const char *const pip_exclude[] = {"root/.cache/pip", NULL};

static const char *const step_names[] = {"apt", "conda", "pip"};

const char *kiln_step_name(const struct kiln_step *st)
{
    return step_names[st->kind];
}

static bool one_line(const char *s)
{
    return s && !strchr(s, '\n') && !strchr(s, '\r') && *s;
}

static void add_pkgs_text(struct kiln_buf *b, const struct kiln_strv *pkgs)
{
    for (size_t i = 0; i < pkgs->n; i++) {
        kiln_buf_addch(b, ' ');
        kiln_shquote(b, pkgs->v[i]);
    }
}

static void hash_list(struct kiln_sha256 *h, const struct kiln_strv *l)
{
    for (size_t i = 0; i < l->n; i++)
        kiln_sha256_update(h, l->v[i], strlen(l->v[i]) + 1);
    kiln_sha256_update(h, "", 1);
}

static void step_key(struct kiln_step *st, const char *parent)
{
    struct kiln_sha256 h;
    kiln_sha256_init(&h);
    kiln_sha256_update(&h, "kiln-step-v1", sizeof("kiln-step-v1"));
    kiln_sha256_update(&h, parent, strlen(parent) + 1);
    hash_list(&h, &st->argv);
    hash_list(&h, &st->env);
    kiln_sha256_final_hex(&h, st->key);
    kiln_sha256_release(&h);
}

int kiln_plan_make(const struct kiln_spec *s, const char *base_digest,
                   const struct kiln_plan_options *o, struct kiln_plan *ret,
                   struct kiln_error **err)
{
    static const struct kiln_plan_options none = {0};
    if (!o)
        o = &none;
    if (!one_line(base_digest))
        return kiln_error_set(err, KILN_EINVAL, 0, "plan: no base image digest");
    if (o->pip_index_url && !one_line(o->pip_index_url))
        return kiln_error_set(err, KILN_EINVAL, 0, "pip index URL: empty or more than one line");
    for (size_t i = 0; o->pip_trusted_hosts && o->pip_trusted_hosts[i]; i++)
        if (!one_line(o->pip_trusted_hosts[i]) || strchr(o->pip_trusted_hosts[i], ' '))
            return kiln_error_set(err, KILN_EINVAL, 0, "pip trusted host '%s': not one word",
                                  o->pip_trusted_hosts[i]);

    struct kiln_plan p = KILN_PLAN_INIT;
    p.steps = kiln_xcalloc(KILN_PKG_KINDS, sizeof(*p.steps));
    const char *parent = base_digest;
    for (int k = 0; k < KILN_PKG_KINDS; k++) {
        const struct kiln_strv *pkgs = &s->pkgs[k];
        if (pkgs->n == 0)
            continue;
        struct kiln_step *st = &p.steps[p.n_steps++];
        st->kind = (enum kiln_pkg_kind)k;
        struct kiln_buf text = KILN_BUF_INIT;
        kiln_strv_push(&st->argv, "/bin/sh");
        kiln_strv_push(&st->argv, "-c");
        switch (st->kind) {
        case KILN_PKG_APT:
            kiln_strv_push(&st->argv, apt_script);
            kiln_strv_push(&st->argv, "kiln-apt");
            kiln_buf_adds(&text, "apt-get update && apt-get install -y --no-install-recommends");
            add_pkgs_text(&text, pkgs);
            kiln_buf_adds(&text, " && apt-get clean && rm -rf /var/lib/apt/lists/*");
            st->exclude = apt_exclude;
            break;
        case KILN_PKG_CONDA:
            kiln_strv_push(&st->argv, conda_script);
            kiln_strv_push(&st->argv, "kiln-conda");
            kiln_buf_adds(&text, "conda install --yes");
            add_pkgs_text(&text, pkgs);
            kiln_buf_adds(&text, " && conda clean --all -f -y");
            st->exclude = conda_exclude;
            break;
        case KILN_PKG_PIP:
        default:
            kiln_strv_push(&st->argv, pip_script);
            kiln_strv_push(&st->argv, "kiln-pip");
            kiln_buf_adds(&text, "pip install --no-cache-dir --no-warn-conflicts");
            add_pkgs_text(&text, pkgs);
            if (o->pip_index_url)
                kiln_strv_push_take(&st->env, kiln_xasprintf("PIP_INDEX_URL=%s", o->pip_index_url));
            if (o->pip_trusted_hosts && o->pip_trusted_hosts[0]) {
                struct kiln_buf th = KILN_BUF_INIT;
                kiln_buf_adds(&th, "PIP_TRUSTED_HOST=");
                for (size_t i = 0; o->pip_trusted_hosts[i]; i++) {
                    if (i)
                        kiln_buf_addch(&th, ' ');
                    kiln_buf_adds(&th, o->pip_trusted_hosts[i]);
                }
                kiln_strv_push_take(&st->env, kiln_buf_detach(&th, NULL));
            }
            kiln_strv_push(&st->env, "PIP_NO_CACHE_DIR=1");
            kiln_strv_push(&st->env, "PIP_DISABLE_PIP_VERSION_CHECK=1");
            kiln_strv_push(&st->env, "PIP_NO_INPUT=1");
            kiln_strv_push(&st->env, "PIP_ROOT_USER_ACTION=ignore");
            st->exclude = pip_exclude;
            break;
        }
        for (size_t i = 0; i < pkgs->n; i++)
            kiln_strv_push(&st->argv, pkgs->v[i]);
        st->created_by = kiln_xasprintf("RUN /bin/sh -c %s", text.buf);
        kiln_buf_release(&text);
        step_key(st, parent);
        parent = st->key;
    }
    *ret = p;
    return 0;
}

void kiln_plan_release(struct kiln_plan *p)
{
    if (!p)
        return;
    for (size_t i = 0; i < p->n_steps; i++) {
        kiln_strv_release(&p->steps[i].argv);
        kiln_strv_release(&p->steps[i].env);
        free(p->steps[i].created_by);
    }
    free(p->steps);
    *p = (struct kiln_plan)KILN_PLAN_INIT;
}
