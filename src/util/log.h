/*
 * Library logging. Library code never prints: it calls kiln_log(), which
 * passes the message to the handler the program installed (none: dropped).
 */
#ifndef KILN_LOG_H
#define KILN_LOG_H

enum kiln_log_level { KILN_LOG_ERROR, KILN_LOG_WARN, KILN_LOG_INFO, KILN_LOG_DEBUG };

typedef void (*kiln_log_fn)(enum kiln_log_level level, const char *msg, void *userdata);

/* Install the process-wide handler (NULL drops messages) and the max level passed on. */
void kiln_log_set_handler(kiln_log_fn fn, void *userdata, enum kiln_log_level max);

void kiln_log(enum kiln_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif
