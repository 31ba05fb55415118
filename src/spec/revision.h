/*
 * Revisions and names, exactly as PrimeHub's image builder computes them.
 *
 * The revision hash joins with ';' the base image, then "apt:[a,b]",
 * "pip:[..]", "conda:[..]" (packages comma-joined, in that order, a section
 * only when the list is non-empty), takes the SHA-1 of that text and keeps
 * the first 8 hex digits: base "jupyter/base-notebook" + apt "curl" gives
 * "96ff7925". The job of a revision is "<spec>-<hash>"; its image is
 * "<repoPrefix>/<spec>:<hash>", or "<pushRepo>:<spec>-<hash>" when a single
 * push repository is configured.
 */
#ifndef KILN_SPEC_REVISION_H
#define KILN_SPEC_REVISION_H

#include "kiln/error.h"
#include "spec/imagespec.h"

#define KILN_REVISION_LEN 8

/* Write the 8 hex digits and a NUL into ret. */
void kiln_spec_revision(const struct kiln_spec *s, char ret[KILN_REVISION_LEN + 1]);

/* "<name>-<hash>"; the caller frees it. */
char *kiln_spec_job_name(const struct kiln_spec *s, const char *hash);

/*
 * The image a revision is pushed to. Exactly one of repo_prefix and
 * push_repo should be set (push_repo wins when both are); a trailing '/'
 * on the prefix is ignored. Fails with -KILN_EINVAL when neither is set or
 * the result is not a valid image reference. *ret is the caller's to free.
 */
int kiln_spec_target(const char *name, const char *hash, const char *repo_prefix,
                     const char *push_repo, char **ret, struct kiln_error **err);

#endif
