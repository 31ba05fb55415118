#include "util/common.h"
#include "spec/dns.h"
#include "tap.h"

static void valid(const char *s)
{
    struct kiln_error *err = NULL;
    ok(kiln_dns_subdomain_check(s, &err) == 0, "valid name '%s'%s%s", s, err ? ": " : "",
       err ? err->msg : "");
    kiln_error_free(err);
}

static void invalid(const char *s, const char *msg)
{
    struct kiln_error *err = NULL;
    int r = kiln_dns_subdomain_check(s, &err);
    ok(r == -KILN_EINVAL && err && strstr(err->msg, msg), "invalid name '%s' (%s)", s,
       err ? err->msg : "accepted");
    kiln_error_free(err);
}

int main(void)
{
    valid("a");
    valid("my-env");
    valid("my.env.v2");
    valid("0abc");
    valid("a-b-c.d-e");
    valid("tf-2-4");
    char label63[64], label64[65], long254[255], long253[254];
    memset(label63, 'a', 63);
    label63[63] = 0;
    memset(label64, 'a', 64);
    label64[64] = 0;
    valid(label63);
    invalid(label64, "at most 63");
    for (int i = 0; i < 253; i++)
        long253[i] = (i % 50 == 49) ? '.' : 'a';
    long253[253] = 0;
    valid(long253);
    memset(long254, 'a', 254);
    for (int i = 49; i < 254; i += 50)
        long254[i] = '.';
    long254[254] = 0;
    invalid(long254, "longer than 253");
    invalid("", "must not be empty");
    invalid("My-env", "lower case");
    invalid("-abc", "must start");
    invalid("abc-", "must end");
    invalid("abc.", "must end");
    invalid(".abc", "must start and end");
    invalid("a..b", "must start and end");
    invalid("a_b", "only lower-case");
    invalid("a b", "only lower-case");
    invalid("a;rm", "only lower-case");
    invalid("a-.b", "must start and end");
    invalid("a.-b", "must start");
    invalid("ab\n", "only lower-case");
    return tap_done();
}
