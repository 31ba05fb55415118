#include "util/common.h"
#include "spec/revision.h"

#include <openssl/sha.h>

#include "oci/reference.h"

/* Section order of PrimeHub's hash: apt, pip, conda (not the step order). */
static const enum kiln_pkg_kind hash_order[] = {KILN_PKG_APT, KILN_PKG_PIP, KILN_PKG_CONDA};

void kiln_spec_revision(const struct kiln_spec *s, char ret[KILN_REVISION_LEN + 1])
{
    /* Sizes are capped at load (1 MiB, 1000 packages), so no cap needed here. */
    struct kiln_buf b = KILN_BUF_INIT;
    kiln_buf_adds(&b, s->base_image);
    for (size_t i = 0; i < KILN_ARRAY_SIZE(hash_order); i++) {
        const struct kiln_strv *l = &s->pkgs[hash_order[i]];
        if (l->n == 0)
            continue;
        kiln_buf_addf(&b, ";%s:[", kiln_pkg_kind_name(hash_order[i]));
        for (size_t k = 0; k < l->n; k++) {
            if (k)
                kiln_buf_addch(&b, ',');
            kiln_buf_adds(&b, l->v[k]);
        }
        kiln_buf_addch(&b, ']');
    }
    unsigned char md[SHA_DIGEST_LENGTH];
    SHA1((const unsigned char *)b.buf, b.len, md);
    kiln_buf_release(&b);
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < KILN_REVISION_LEN / 2; i++) {
        ret[2 * i] = hex[md[i] >> 4];
        ret[2 * i + 1] = hex[md[i] & 15];
    }
    ret[KILN_REVISION_LEN] = '\0';
}

char *kiln_spec_job_name(const struct kiln_spec *s, const char *hash)
{
    return kiln_xasprintf("%s-%s", s->name, hash);
}

int kiln_spec_target(const char *name, const char *hash, const char *repo_prefix,
                     const char *push_repo, char **ret, struct kiln_error **err)
{
    _cleanup_free_ char *t = NULL;
    if (push_repo && *push_repo) {
        t = kiln_xasprintf("%s:%s-%s", push_repo, name, hash);
    } else if (repo_prefix && *repo_prefix) {
        size_t n = strlen(repo_prefix);
        while (n > 0 && repo_prefix[n - 1] == '/')
            n--;
        t = kiln_xasprintf("%.*s/%s:%s", (int)n, repo_prefix, name, hash);
    } else {
        return kiln_error_set(err, KILN_EINVAL, 0,
                              "no repository prefix or push repository is configured");
    }
    int r = kiln_ref_parse(t, NULL, err);
    if (r < 0)
        return kiln_error_prefix(err, "target image '%s'", t);
    *ret = TAKE_PTR(t);
    return 0;
}
