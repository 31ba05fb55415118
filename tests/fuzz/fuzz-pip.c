/*
 * Fuzz target for the pip requirement parser: any input must either parse or
 * fail with a message, without crashing or leaking. A successful parse must
 * give fields that themselves parse back.
 */
#include "util/common.h"
#include "spec/pip.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    _cleanup_free_ char *s = kiln_xmalloc(size + 1);
    if (size)
        memcpy(s, data, size);
    s[size] = '\0';

    struct kiln_pip_req req = KILN_PIP_REQ_INIT;
    _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;
    int r = kiln_pip_req_parse(s, &req, &e);
    if (r < 0) {
        if (!e || !e->msg || r != -KILN_EINVAL)
            abort();
        return 0;
    }
    if (e || !req.name || (req.specifier && req.url))
        abort();

    /* what was accepted is safe to rebuild, and parses to the same fields */
    _cleanup_free_ char *extras = NULL;
    for (size_t i = 0; i < req.extras.n; i++) {
        char *x = kiln_xasprintf("%s%s%s", extras ? extras : "", i ? "," : "", req.extras.v[i]);
        free(extras);
        extras = x;
    }
    _cleanup_free_ char *again =
        kiln_xasprintf("%s%s%s%s%s%s%s%s", req.name, extras ? "[" : "", extras ? extras : "",
                       extras ? "]" : "", req.specifier ? req.specifier : "", req.url ? " @ " : "",
                       req.url ? req.url : "", req.marker ? (req.url ? " ; " : ";") : "");
    _cleanup_free_ char *full = kiln_xasprintf("%s%s", again, req.marker ? req.marker : "");
    struct kiln_pip_req req2 = KILN_PIP_REQ_INIT;
    if (kiln_pip_req_parse(full, &req2, NULL) < 0 || strcmp(req.name, req2.name) != 0 ||
        !kiln_strv_equal(&req.extras, &req2.extras) ||
        (req.specifier && (!req2.specifier || strcmp(req.specifier, req2.specifier) != 0)) ||
        (req.url && (!req2.url || strcmp(req.url, req2.url) != 0)) ||
        (req.marker && (!req2.marker || strcmp(req.marker, req2.marker) != 0)))
        abort();
    kiln_pip_req_release(&req2);
    kiln_pip_req_release(&req);
    return 0;
}
