/*
 * The Dockerfile a spec's build follows: the text shown to users and the
 * recipe kiln's own engine runs step by step.
 *
 *   FROM <base image>
 *   USER root                       (only when there are steps)
 *   RUN apt step:   export DEBIAN_FRONTEND=noninteractive, apt-get update,
 *                   apt-get install -y --no-install-recommends 'pkg'...,
 *                   rm -rf the apt lists (/var/lib/apt/lists/ contents)
 *   RUN conda step: conda install --yes 'spec'..., conda clean --all -f -y
 *   RUN pip step:   export PIP_BREAK_SYSTEM_PACKAGES=1,
 *                   pip install --no-cache-dir 'req'...
 *   USER <base user>                (when known and not root)
 *
 * The commands of one step are joined with " && " over continuation lines.
 * Every package is shell-quoted. PIP_BREAK_SYSTEM_PACKAGES lets pip install
 * into a Python marked externally managed (PEP 668, Debian's); pip versions
 * and bases without the marker ignore it.
 */
#ifndef KILN_SPEC_DOCKERFILE_H
#define KILN_SPEC_DOCKERFILE_H

#include "kiln/error.h"
#include "spec/imagespec.h"
#include "util/buf.h"

/*
 * Render the Dockerfile of a validated spec into `out`. base_user is the
 * base image's USER: NULL when unknown (a comment says so), "" or "root" or
 * "0" for root (nothing to restore). Fails with -KILN_EINVAL when base_user
 * holds characters a user name cannot have.
 */
int kiln_dockerfile_render(const struct kiln_spec *s, const char *base_user, struct kiln_buf *out,
                           struct kiln_error **err);

#endif
