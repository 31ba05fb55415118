#include "util/common.h"
#include "util/log.h"

static kiln_log_fn log_fn;
static void *log_userdata;
static enum kiln_log_level log_max = KILN_LOG_INFO;

void kiln_log_set_handler(kiln_log_fn fn, void *userdata, enum kiln_log_level max)
{
    log_fn = fn;
    log_userdata = userdata;
    log_max = max;
}

void kiln_log(enum kiln_log_level level, const char *fmt, ...)
{
    if (!log_fn || level > log_max)
        return;
    va_list ap;
    va_start(ap, fmt);
    char *msg = kiln_xvasprintf(fmt, ap);
    va_end(ap);
    log_fn(level, msg, log_userdata);
    free(msg);
}
