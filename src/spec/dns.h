/*
 * Kubernetes object names: the DNS-1123 subdomain rule
 *   ^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$
 * at most 253 characters, each dot-separated label at most 63.
 */
#ifndef KILN_SPEC_DNS_H
#define KILN_SPEC_DNS_H

#include "kiln/error.h"

#define KILN_DNS_SUBDOMAIN_MAX 253
#define KILN_DNS_LABEL_MAX     63

/* Returns 0 when `s` is a valid name; else -KILN_EINVAL and *err says why. */
int kiln_dns_subdomain_check(const char *s, struct kiln_error **err);

#endif
