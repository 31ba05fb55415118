/*
 * The HTTP side of `kiln serve`: a libmicrohttpd daemon (internal thread
 * pool) serving the JSON API (docs/api.md, routes in service/api.c), the
 * embedded web page (web/ -> service/webassets.h) at "/", "/healthz" and
 * "/metrics". Request bodies are capped at 1 MiB (413). Log following
 * (?follow=1, /events) streams with chunked responses that end when the
 * job is final or the server stops.
 */
#ifndef KILN_SERVICE_SERVER_H
#define KILN_SERVICE_SERVER_H

#include <stdint.h>

#include "kiln/error.h"
#include "service/jobs.h"
#include "service/store.h"

struct kiln_server_options {
    const char *listen;       /* "ADDR:PORT" ("127.0.0.1:0": a free port), IPv4 or [IPv6] */
    int threads;              /* 0: one per online CPU, at least 2 */
    struct kiln_store *store; /* borrowed */
    struct kiln_jobs *jobs;   /* borrowed; NULL: nothing runs (tests, no registry) */
    const char *data_dir;     /* where job logs are (kiln_jobs_log_path) */
    const char *token_sha256; /* hex sha256 of the admin token (required) */
    const struct kiln_registry_config *registry; /* for /registry, targets */
};

struct kiln_server;

int kiln_server_start(const struct kiln_server_options *o, struct kiln_server **ret,
                      struct kiln_error **err);
/* The port it listens on (useful with port 0). */
uint16_t kiln_server_port(const struct kiln_server *s);
/* Stop taking connections, end streams, wait for handlers; free. NULL is fine. */
void kiln_server_stop(struct kiln_server *s);

#endif
