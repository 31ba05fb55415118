#include "util/common.h"

int kiln_error_setv(struct kiln_error **err, int code, int errnum, const char *fmt, va_list ap)
{
    if (code <= 0 || code >= KILN_ECODE_MAX)
        code = KILN_EINTERNAL;
    if (!err)
        return -code;
    char *msg = kiln_xvasprintf(fmt, ap);
    if (errnum) {
        char *full = kiln_xasprintf("%s: %s", msg, strerror(errnum));
        free(msg);
        msg = full;
    }
    kiln_error_free(*err);
    struct kiln_error *e = kiln_xmalloc(sizeof(*e));
    e->code = code;
    e->errnum = errnum;
    e->msg = msg;
    *err = e;
    return -code;
}

int kiln_error_set(struct kiln_error **err, int code, int errnum, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int r = kiln_error_setv(err, code, errnum, fmt, ap);
    va_end(ap);
    return r;
}

int kiln_error_prefix(struct kiln_error **err, const char *fmt, ...)
{
    if (!err || !*err)
        return -KILN_EINTERNAL;
    va_list ap;
    va_start(ap, fmt);
    char *prefix = kiln_xvasprintf(fmt, ap);
    va_end(ap);
    char *msg = kiln_xasprintf("%s: %s", prefix, (*err)->msg);
    free(prefix);
    free((*err)->msg);
    (*err)->msg = msg;
    return -(*err)->code;
}

void kiln_error_free(struct kiln_error *e)
{
    if (!e)
        return;
    free(e->msg);
    free(e);
}

void kiln_error_freep(struct kiln_error **e)
{
    kiln_error_free(*e);
    *e = NULL;
}

static const struct {
    const char *name;
    int exit_code;
    int http;
} codes[KILN_ECODE_MAX] = {
    [KILN_OK] = {"ok", 0, 200},
    [KILN_EINVAL] = {"invalid", 1, 400},
    [KILN_EUSAGE] = {"usage", 2, 400},
    [KILN_ENOTFOUND] = {"not-found", 3, 404},
    [KILN_EEXIST] = {"exists", 4, 409},
    [KILN_ECONFLICT] = {"conflict", 5, 409},
    [KILN_ETOOBIG] = {"too-big", 6, 413},
    [KILN_EIO] = {"io", 7, 500},
    [KILN_ENET] = {"network", 8, 502},
    [KILN_EAUTH] = {"auth", 9, 401},
    [KILN_ECANCELLED] = {"cancelled", 10, 409},
    [KILN_ETIMEOUT] = {"timeout", 11, 504},
    [KILN_EUNSUPPORTED] = {"unsupported", 12, 501},
    [KILN_EINTERNAL] = {"internal", 13, 500},
};

const char *kiln_error_code_name(int code)
{
    if (code < 0)
        code = -code;
    if (code >= KILN_ECODE_MAX)
        code = KILN_EINTERNAL;
    return codes[code].name;
}

int kiln_error_exit_code(int code)
{
    if (code < 0)
        code = -code;
    if (code >= KILN_ECODE_MAX)
        code = KILN_EINTERNAL;
    return codes[code].exit_code;
}

int kiln_error_http_status(int code)
{
    if (code < 0)
        code = -code;
    if (code >= KILN_ECODE_MAX)
        code = KILN_EINTERNAL;
    return codes[code].http;
}
