#include "util/common.h"
#include "spec/dockerfile.h"

#include "spec/revision.h"
#include "util/shquote.h"

/* user, uid, user:group or uid:gid */
static bool valid_user(const char *u)
{
    if (strlen(u) > 256)
        return false;
    for (const char *p = u; *p; p++) {
        char c = *p;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-' || c == '.' || c == ':'))
            return false;
    }
    return *u != '-';
}

static void add_packages(struct kiln_buf *out, const struct kiln_strv *l)
{
    for (size_t i = 0; i < l->n; i++) {
        kiln_buf_addch(out, ' ');
        kiln_shquote(out, l->v[i]);
    }
}

int kiln_dockerfile_render(const struct kiln_spec *s, const char *base_user, struct kiln_buf *out,
                           struct kiln_error **err)
{
    if (base_user && !valid_user(base_user))
        return kiln_error_set(err, KILN_EINVAL, 0, "base user '%s' is not a valid user name",
                              base_user);
    const struct kiln_strv *apt = &s->pkgs[KILN_PKG_APT];
    const struct kiln_strv *conda = &s->pkgs[KILN_PKG_CONDA];
    const struct kiln_strv *pip = &s->pkgs[KILN_PKG_PIP];
    bool steps = apt->n || conda->n || pip->n;
    char rev[KILN_REVISION_LEN + 1];
    kiln_spec_revision(s, rev);

    kiln_buf_addf(out, "# kiln image spec '%s', revision %s\n", s->name, rev);
    kiln_buf_addf(out, "FROM %s\n", s->base_image);
    if (steps)
        kiln_buf_adds(out, "USER root\n");
    if (apt->n) {
        kiln_buf_adds(out, "RUN export DEBIAN_FRONTEND=noninteractive \\\n"
                           " && apt-get update \\\n"
                           " && apt-get install -y --no-install-recommends");
        add_packages(out, apt);
        kiln_buf_adds(out, " \\\n && rm -rf /var/lib/apt/lists/*\n");
    }
    if (conda->n) {
        kiln_buf_adds(out, "RUN conda install --yes");
        add_packages(out, conda);
        kiln_buf_adds(out, " \\\n && conda clean --all -f -y\n");
    }
    if (pip->n) {
        kiln_buf_adds(out, "RUN export PIP_BREAK_SYSTEM_PACKAGES=1 \\\n"
                           " && pip install --no-cache-dir");
        add_packages(out, pip);
        kiln_buf_addch(out, '\n');
    }
    if (steps) {
        if (!base_user)
            kiln_buf_adds(out, "# the base image's user is unknown: USER stays root\n");
        else if (*base_user && strcmp(base_user, "root") != 0 && strcmp(base_user, "0") != 0)
            kiln_buf_addf(out, "USER %s\n", base_user);
    }
    return kiln_buf_finish(out, "dockerfile", err);
}
