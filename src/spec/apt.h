/*
 * Debian package names as apt-get install takes them:
 *
 *   name[:arch][=version | /release]
 *
 * name: lower-case letters, digits, '+', '-', '.'; at least two characters,
 * starting alphanumeric (Debian Policy 5.6.1). arch: lower-case letters,
 * digits, '-' ("amd64", "i386", "all", "any", "native"). version: Debian
 * version syntax ([epoch:]upstream[-revision]: alphanumerics and . + ~ - :),
 * starting with a digit. release: a suite or codename ("bookworm-backports").
 */
#ifndef KILN_SPEC_APT_H
#define KILN_SPEC_APT_H

#include "kiln/error.h"

#define KILN_APT_MAX_LEN 512

/* Returns 0 when `s` is a valid package argument; else -KILN_EINVAL and *err says why. */
int kiln_apt_package_check(const char *s, struct kiln_error **err);

#endif
