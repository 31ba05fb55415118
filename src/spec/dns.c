#include "util/common.h"
#include "spec/dns.h"

static bool is_alnum_lower(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

int kiln_dns_subdomain_check(const char *s, struct kiln_error **err)
{
    size_t len = strlen(s);
    if (len == 0)
        return kiln_error_set(err, KILN_EINVAL, 0, "must not be empty");
    if (len > KILN_DNS_SUBDOMAIN_MAX)
        return kiln_error_set(err, KILN_EINVAL, 0, "longer than %d characters",
                              KILN_DNS_SUBDOMAIN_MAX);
    size_t label = 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c == '.') {
            if (label == 0 || !is_alnum_lower(s[i - 1]))
                return kiln_error_set(err, KILN_EINVAL, 0,
                                      "each '.'-separated part must start and end with a "
                                      "lower-case letter or digit");
            label = 0;
            continue;
        }
        if (!is_alnum_lower(c) && c != '-') {
            if (c >= 'A' && c <= 'Z')
                return kiln_error_set(err, KILN_EINVAL, 0, "must be lower case");
            return kiln_error_set(err, KILN_EINVAL, 0,
                                  "only lower-case letters, digits, '-' and '.' are allowed");
        }
        if (label == 0 && c == '-')
            return kiln_error_set(err, KILN_EINVAL, 0,
                                  "must start with a lower-case letter or digit");
        if (++label > KILN_DNS_LABEL_MAX)
            return kiln_error_set(err, KILN_EINVAL, 0,
                                  "each '.'-separated part must be at most %d characters",
                                  KILN_DNS_LABEL_MAX);
    }
    if (!is_alnum_lower(s[len - 1]))
        return kiln_error_set(err, KILN_EINVAL, 0, "must end with a lower-case letter or digit");
    return 0;
}
