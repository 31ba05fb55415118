/*
 * Fuzz the image reference parser: every input is parsed raw and normalised;
 * what parses must print back exactly (raw), and the normalised string, its
 * raw parse and its familiar form must all come back to the same reference.
 * A broken round trip aborts.
 */
#include "util/common.h"

#include "oci/reference.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool eq(const char *a, const char *b)
{
    return a && b ? strcmp(a, b) == 0 : a == b;
}

static bool same_ref(const struct kiln_ref *a, const struct kiln_ref *b)
{
    return eq(a->domain, b->domain) && eq(a->path, b->path) && eq(a->tag, b->tag) &&
           eq(a->digest, b->digest);
}

static void check(bool cond, const char *what, const char *in)
{
    if (cond)
        return;
    fprintf(stderr, "fuzz-reference: %s: '%s'\n", what, in);
    abort();
}

static void check_normalized(const char *in)
{
    struct kiln_ref n = KILN_REF_INIT, again = KILN_REF_INIT;
    struct kiln_error *e = NULL;

    if (kiln_ref_parse_normalized(in, &n, &e) < 0) {
        check(e && e->msg && *e->msg && n.path == NULL, "normalised failure without message", in);
        kiln_error_free(e);
        return;
    }
    check(n.domain && n.path && (n.tag || n.digest), "normalised reference incomplete", in);

    char *s = kiln_ref_string(&n);
    check(kiln_ref_parse_normalized(s, &again, NULL) == 0, "normalised string does not parse", s);
    char *s2 = kiln_ref_string(&again);
    check(strcmp(s, s2) == 0, "normalised round trip differs", in);
    check(same_ref(&n, &again), "normalised parts differ", in);
    kiln_ref_release(&again);

    check(kiln_ref_parse(s, &again, NULL) == 0 && same_ref(&n, &again),
          "normalised string parses raw to other parts", s);
    kiln_ref_release(&again);

    char *fam = kiln_ref_familiar(&n);
    check(kiln_ref_parse_normalized(fam, &again, NULL) == 0 && same_ref(&n, &again),
          "familiar form does not normalise back", fam);
    kiln_ref_release(&again);

    char *repo = kiln_ref_repository(&n);
    check(strncmp(s, repo, strlen(repo)) == 0, "repository is not a prefix", in);
    const char *host = kiln_ref_registry_host(&n);
    check(host && *host, "empty registry host", in);
    bool lo = kiln_ref_is_loopback(&n);
    check(!lo || strcmp(host, n.domain) == 0, "loopback host was rewritten", in);

    free(repo);
    free(fam);
    free(s2);
    free(s);
    kiln_ref_release(&n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* a little past the cap, so the length check is reached too */
    if (size > KILN_REF_MAX_LEN + 16)
        return 0;
    char *in = kiln_xmalloc(size + 1);
    memcpy(in, data, size);
    in[size] = '\0';

    struct kiln_ref r = KILN_REF_INIT, again = KILN_REF_INIT;
    struct kiln_error *e = NULL;
    if (kiln_ref_parse(in, &r, &e) == 0) {
        char *s = kiln_ref_string(&r);
        check(strcmp(s, in) == 0, "raw round trip differs", in);
        check(kiln_ref_parse(s, &again, NULL) == 0 && same_ref(&r, &again),
              "raw string parses to other parts", in);
        (void)kiln_ref_is_loopback(&r);
        (void)kiln_ref_registry_host(&r);
        free(s);
        kiln_ref_release(&again);
        kiln_ref_release(&r);
    } else {
        check(e && e->msg && *e->msg && r.path == NULL, "failure without message", in);
        kiln_error_free(e);
    }
    check_normalized(in);
    free(in);
    return 0;
}
