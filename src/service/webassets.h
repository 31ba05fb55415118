/*
 * The web page's files, embedded into the binary at build time from web/
 * (scripts/embed-web.py generates webassets.c with meson), so `kiln serve`
 * works offline and from one file.
 */
#ifndef KILN_SERVICE_WEBASSETS_H
#define KILN_SERVICE_WEBASSETS_H

#include <stddef.h>

struct kiln_web_asset {
    const char *path;         /* "/index.html", "/app.js", "/style.css" ... */
    const char *content_type; /* "text/html; charset=utf-8" ... */
    const unsigned char *data;
    size_t len;
    const char *etag; /* "\"<sha256 prefix>\"" of the content */
};

/* The asset at `path` ("/" is "/index.html"), or NULL. */
const struct kiln_web_asset *kiln_web_asset_find(const char *path);

#endif
