/*
 * A session with one registry host (OCI distribution API v2): manifests,
 * blobs, uploads, with the auth flow done here (see registry/auth.h).
 *
 * Arguments: `repo` is a repository name ("library/debian", validated with
 * the distribution grammar: lower-case components of [a-z0-9] joined by
 * '.', '_', '__' or '-'s, separated by '/', at most 255 characters), `ref`
 * a tag ([A-Za-z0-9_][A-Za-z0-9_.-]{0,127}) or a digest, and `digest` a
 * "sha256:<64 lower-case hex>" string (other algorithms:
 * -KILN_EUNSUPPORTED). Nothing here parses manifests: they are bytes and a
 * media type.
 *
 * Auth: requests go out anonymously until the registry answers 401 with a
 * WWW-Authenticate challenge. Basic: requests are resent (and later ones
 * sent) with the credentials. Bearer: a token is asked from the realm for
 * the operation's scope ("repository:NAME:pull" or ":pull,push"; a mount
 * adds "repository:FROM:pull") with GET and Basic credentials, or with a
 * POST form when the credentials hold an identity token; tokens are cached
 * per (realm, service, scope) until they expire, and a 401 on a cached
 * token drops it and asks once more. Authorization is sent to the
 * registry's own host[:port] only: never to redirect targets or upload
 * URLs on other hosts. Auth failures are -KILN_EAUTH with messages
 * "authentication required for 'HOST/REPO'" (no or anonymous credentials),
 * "authentication failed for 'HOST/REPO': credentials rejected" and
 * "denied: <the registry's message>"; secrets never appear in messages.
 *
 * Other failures: HTTP errors are "<what>: <registry message or reason>
 * (HTTP <status>)" with <what> like "manifest '127.0.0.1:5000/x:tag'",
 * code -KILN_ENOTFOUND (404), -KILN_EINVAL (400), -KILN_ETOOBIG (413),
 * -KILN_ECONFLICT (409), -KILN_EAUTH (401/403), else -KILN_ENET; transport
 * errors as in registry/http.h; digest or size mismatches -KILN_ENET.
 *
 * Threads: one struct kiln_registry may be shared by any number of
 * threads, which may run operations at the same time (connections, DNS
 * and TLS sessions are shared; token cache and learned challenge are
 * locked). A struct kiln_upload belongs to one thread at a time.
 * The library never prints nor reads the environment: credentials and
 * settings come in through kiln_registry_options.
 */
#ifndef KILN_REGISTRY_CLIENT_H
#define KILN_REGISTRY_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "kiln/error.h"
#include "registry/auth.h"
#include "registry/http.h"
#include "util/strv.h"

#define KILN_REGISTRY_MANIFEST_MAX ((size_t)4 << 20) /* largest manifest accepted */
#define KILN_REGISTRY_MAX_RESUMES  5 /* default resumes/restarts of one blob transfer */
#define KILN_REGISTRY_REPO_MAX     255

/* Accept header of manifest requests when none is given. */
#define KILN_REGISTRY_MANIFEST_ACCEPT                                                              \
    "application/vnd.oci.image.manifest.v1+json, "                                                 \
    "application/vnd.oci.image.index.v1+json, "                                                    \
    "application/vnd.docker.distribution.manifest.v2+json, "                                       \
    "application/vnd.docker.distribution.manifest.list.v2+json"

struct kiln_registry_options {
    struct kiln_http_options http; /* used when shared_http is NULL */
    struct kiln_http *shared_http; /* borrowed (must outlive the registry), or NULL */
    const struct kiln_cred *cred;  /* copied; NULL or empty: anonymous */
    size_t chunk_size;             /* kiln_registry_blob_push(): 0 = one PUT; else PATCH chunks
                                      of this size (at least OCI-Chunk-Min-Length) */
    int max_resumes;               /* per blob transfer; 0: KILN_REGISTRY_MAX_RESUMES */
    const char *client_id;         /* token POST client_id; NULL: "kiln" */
    /* Called during every transfer and retry wait; nonzero cancels the
     * operation with -KILN_ECANCELLED. */
    kiln_http_progress_fn progress;
    void *progress_data;
};

struct kiln_registry;

/*
 * Open a session with `registry`, a host[:port] ("127.0.0.1:5000",
 * "[::1]:5000", "docker.io" which means registry-1.docker.io). No network
 * traffic happens here. -KILN_EINVAL on a malformed name; errors of
 * kiln_http_new(). Free with kiln_registry_free().
 */
int kiln_registry_new(const char *registry, const struct kiln_registry_options *o,
                      struct kiln_registry **ret, struct kiln_error **err);
void kiln_registry_free(struct kiln_registry *r);
/* The name given to kiln_registry_new(). */
const char *kiln_registry_name(const struct kiln_registry *r);

/* GET /v2/ with the auth flow (scope-less token): checks reachability and credentials. */
int kiln_registry_ping(struct kiln_registry *r, struct kiln_error **err);

/* ---- manifests -------------------------------------------------------------- */

struct kiln_registry_manifest {
    char *data;       /* the bytes, NUL-terminated (NULL after a HEAD) */
    size_t len;       /* bytes (after a HEAD: Content-Length, 0 when absent) */
    char *media_type; /* Content-Type without parameters, or NULL */
    char *digest;     /* "sha256:..." (after a HEAD by tag: the registry's, or NULL) */
};

#define KILN_REGISTRY_MANIFEST_INIT                                                                \
    {                                                                                              \
        NULL, 0, NULL, NULL                                                                        \
    }

void kiln_registry_manifest_release(struct kiln_registry_manifest *m);

/*
 * GET a manifest or index by tag or digest. `accept` is an Accept header
 * value (NULL: KILN_REGISTRY_MANIFEST_ACCEPT). The digest is the sha256 of
 * the bytes; it must equal `ref` when ref is a digest, and the registry's
 * Docker-Content-Digest when it sent a sha256 one (-KILN_ENET otherwise).
 * At most KILN_REGISTRY_MANIFEST_MAX bytes (-KILN_ETOOBIG). *ret is written
 * only on success; release it with kiln_registry_manifest_release().
 */
int kiln_registry_manifest_get(struct kiln_registry *r, const char *repo, const char *ref,
                               const char *accept, struct kiln_registry_manifest *ret,
                               struct kiln_error **err);

/*
 * HEAD a manifest: 1 and *ret (media_type, digest, len; data NULL) when it
 * exists, 0 when the registry says 404, or an error.
 */
int kiln_registry_manifest_head(struct kiln_registry *r, const char *repo, const char *ref,
                                const char *accept, struct kiln_registry_manifest *ret,
                                struct kiln_error **err);

/*
 * PUT a manifest under a tag or its digest, with Content-Type `media_type`.
 * When ref is a digest it must be the sha256 of data (-KILN_EINVAL). The
 * registry's Docker-Content-Digest, when sent, must equal the sha256 of
 * data (-KILN_ENET). *ret_digest (may be NULL) gets "sha256:..." (caller
 * frees).
 */
int kiln_registry_manifest_put(struct kiln_registry *r, const char *repo, const char *ref,
                               const char *media_type, const void *data, size_t len,
                               char **ret_digest, struct kiln_error **err);

/*
 * DELETE a manifest by its digest (token scope "repository:REPO:delete").
 * The registry removes the tags that pointed to it; the blobs it names stay
 * until the registry's own garbage collection. 202 or 200: 0; 404:
 * -KILN_ENOTFOUND; 405 (docker-registry without storage.delete.enabled):
 * -KILN_EUNSUPPORTED "manifest '...': the registry does not allow deletes
 * (docker-registry: storage.delete.enabled)"; else as above.
 */
int kiln_registry_manifest_delete(struct kiln_registry *r, const char *repo, const char *digest,
                                  struct kiln_error **err);

/* ---- tags --------------------------------------------------------------------- */

#define KILN_REGISTRY_TAGS_MAX      100000             /* tags of one repository accepted */
#define KILN_REGISTRY_TAGS_PAGE     1000               /* n= of a tags list request */
#define KILN_REGISTRY_TAGS_BODY_MAX ((size_t)16 << 20) /* one page (a registry may ignore n) */

/*
 * List the tags of `repo`: GET /v2/REPO/tags/list?n=1000, then the page
 * named by the answer's Link header (rel="next", same origin only), or,
 * without one, while a page comes full, the next one with
 * ?n=1000&last=<the page's last tag> (the distribution spec's pagination;
 * docker-registry 2.8 ignores n and last and sends every tag at once).
 * Without a Link, a page with more tags than asked for ends the listing;
 * a page that brings no tag not seen before always does (a registry
 * ignoring last, or links that go round). On
 * success each tag is appended to *ret once, in the registry's order;
 * *ret is untouched on failure. An unknown repository (404, NAME_UNKNOWN)
 * is an empty list, not an error. More than KILN_REGISTRY_TAGS_MAX tags
 * in all, or a page over KILN_REGISTRY_TAGS_BODY_MAX bytes: -KILN_ETOOBIG;
 * a page that is not a tags document or names an invalid tag: -KILN_EINVAL
 * naming it.
 */
int kiln_registry_tags_list(struct kiln_registry *r, const char *repo, struct kiln_strv *ret,
                            struct kiln_error **err);
/* The same with pages of `page_size` tags (0: KILN_REGISTRY_TAGS_PAGE; at most 10000). */
int kiln_registry_tags_list_n(struct kiln_registry *r, const char *repo, size_t page_size,
                              struct kiln_strv *ret, struct kiln_error **err);

/* ---- blobs -------------------------------------------------------------------- */

/* 1 when the blob exists (*ret_size, may be NULL, gets its size or 0 when unknown), 0 when not. */
int kiln_registry_blob_head(struct kiln_registry *r, const char *repo, const char *digest,
                            uint64_t *ret_size, struct kiln_error **err);

/* Takes the next bytes of a blob; >= 0 or a -KILN_E code with *err set. */
typedef int (*kiln_registry_sink_fn)(void *userdata, const void *data, size_t len,
                                     struct kiln_error **err);

/*
 * GET a blob, streamed to `sink` in order, while its sha256 and size are
 * checked: more bytes than `size` (when >= 0) fail at once, and at the end
 * the size and digest must match ("blob '...': digest mismatch: got
 * sha256:..", -KILN_ENET). The sink has then seen bad bytes: the caller
 * discards its output on any failure. Redirects to storage hosts are
 * followed (without Authorization). A dropped connection is resumed with a
 * Range request (or by skipping what was already passed on when the
 * server ignores Range), at most max_resumes times. Memory stays bounded
 * whatever the blob size. *ret_size (may be NULL) gets the byte count.
 */
int kiln_registry_blob_get(struct kiln_registry *r, const char *repo, const char *digest,
                           int64_t size, kiln_registry_sink_fn sink, void *userdata,
                           uint64_t *ret_size, struct kiln_error **err);

/* Flags of kiln_registry_blob_get_range(). */
enum {
    /*
     * Do not hash the bytes: only the size is checked. For callers whose
     * bytes are checked elsewhere, e.g. uploaded to a registry whose final
     * PUT ?digest= verifies them (see registry/transfer.h).
     */
    KILN_BLOB_GET_NO_VERIFY = 1 << 0,
};

/*
 * The same for the bytes from `offset` on (a Range request; a registry that
 * answers 200 instead has the bytes before `offset` skipped): the sink
 * gets bytes offset..size-1. Only a GET from offset 0 without
 * KILN_BLOB_GET_NO_VERIFY checks the digest; all check the size (when
 * `size` >= 0; an offset past it is -KILN_EINVAL). *ret_size gets the bytes
 * passed to the sink. kiln_registry_blob_get() is offset 0, flags 0.
 */
int kiln_registry_blob_get_range(struct kiln_registry *r, const char *repo, const char *digest,
                                 int64_t size, uint64_t offset, unsigned flags,
                                 kiln_registry_sink_fn sink, void *userdata, uint64_t *ret_size,
                                 struct kiln_error **err);

/* The same, writing to `fd` from its current position (write(2)). */
int kiln_registry_blob_get_fd(struct kiln_registry *r, const char *repo, const char *digest,
                              int64_t size, int fd, uint64_t *ret_size, struct kiln_error **err);

/*
 * Push a blob whose `size` bytes are read with pread(2) from `fd` at
 * offsets 0..size (the file position is not used, so threads may push
 * from the same fd). With `mount_from` (a repository of the same
 * registry), a cross-repository mount is asked first. Then one PUT
 * (chunk_size 0 or size <= chunk_size) or PATCH chunks and a final PUT.
 * Interruptions are resumed from the registry's reported Range (GET on the
 * upload URL) or, when the registry lost the session, restarted, at most
 * max_resumes times together. Returns 1 when mounted, 0 when uploaded.
 * The caller checks kiln_registry_blob_head() first if it wants to skip
 * blobs already present; the registry checks the digest of what it got.
 */
int kiln_registry_blob_push(struct kiln_registry *r, const char *repo, const char *digest, int fd,
                            uint64_t size, const char *mount_from, struct kiln_error **err);

/* ---- upload sessions (the steps kiln_registry_blob_push() is made of) -------- */

struct kiln_upload;

/*
 * POST /v2/REPO/blobs/uploads/, or with mount_digest and mount_from,
 * POST ...?mount=DIGEST&from=FROM: returns 1 when the registry mounted the
 * blob (201; *ret = NULL), 0 with a new session in *ret (202; also when a
 * mount fell back to an upload). Free the session with kiln_upload_free().
 */
int kiln_registry_upload_start(struct kiln_registry *r, const char *repo, const char *mount_digest,
                               const char *mount_from, struct kiln_upload **ret,
                               struct kiln_error **err);

/* Bytes the registry holds (as of the last answer). */
uint64_t kiln_upload_offset(const struct kiln_upload *u);
/* OCI-Chunk-Min-Length of the registry, or 0. */
uint64_t kiln_upload_min_chunk(const struct kiln_upload *u);
/* HTTP status of the last request of the session (0: none or transport error). */
long kiln_upload_last_status(const struct kiln_upload *u);
/*
 * True when the last request failed because the registry computed another
 * digest than the one asked for (DIGEST_INVALID, e.g. on the final PUT).
 */
bool kiln_upload_digest_rejected(const struct kiln_upload *u);

/*
 * PATCH the next `len` bytes (blob offsets offset..offset+len-1, sent as
 * Content-Range) from memory or from `fd` at file offset `off` (pread).
 * Chunks other than the last must be at least kiln_upload_min_chunk().
 * The body is never resent by the HTTP layer: on failure call
 * kiln_upload_status() and continue from kiln_upload_offset(). A registry
 * reporting a different size than expected moves the offset to its value
 * and fails with -KILN_ENET.
 */
int kiln_upload_patch(struct kiln_upload *u, const void *data, size_t len, struct kiln_error **err);
int kiln_upload_patch_fd(struct kiln_upload *u, int fd, uint64_t off, uint64_t len,
                         struct kiln_error **err);
/*
 * The same with the `len` bytes from `read` (a kiln_http_read_fn: it may
 * block until bytes are there; each call must give at least one byte and
 * at most `cap`; its error fails the request, never retried). What `read`
 * gave is not asked for again: a caller that wants to resume keeps it.
 */
int kiln_upload_patch_read(struct kiln_upload *u, uint64_t len, kiln_http_read_fn read,
                           void *userdata, struct kiln_error **err);

/*
 * PATCH the bytes of blob `digest` (`size` bytes in all) from
 * kiln_upload_offset(u) on, at most `len` of them (0: all that is left),
 * read from repository `src_repo` of registry `src`: the GET's response
 * body is moved into the PATCH's request body inside the kernel (see
 * registry/rawhttp.h), never through this process. Only between plain
 * http registries (no proxy); the source's answer is checked (200, or 206
 * from the offset asked, with the length asked) before a byte goes to the
 * destination. -KILN_EUNSUPPORTED when this path does not apply (https, a
 * proxy, the source answering otherwise: a redirect, a 401 the curl path
 * would answer, ...): nothing was sent and the caller copies another way.
 * Bytes are not hashed here: the destination checks the digest when the
 * upload is finished. `progress` (may be NULL) is called with the bytes
 * moved in this PATCH; nonzero cancels (-KILN_ECANCELLED). Other failures
 * and the offset after them as kiln_upload_patch().
 */
int kiln_upload_patch_from(struct kiln_upload *u, struct kiln_registry *src, const char *src_repo,
                           const char *digest, uint64_t size, uint64_t len,
                           int (*progress)(void *userdata, uint64_t moved), void *userdata,
                           struct kiln_error **err);
/* GET the upload URL: refreshes the offset (Range) and URL. 404: -KILN_ENOTFOUND. */
int kiln_upload_status(struct kiln_upload *u, struct kiln_error **err);

/*
 * PUT ...?digest=DIGEST, with no body, with the last `len` bytes from fd
 * at `off`, or with the last `len` bytes at `data`. Checks the returned
 * Docker-Content-Digest. The session is then done (only
 * kiln_upload_free() remains).
 */
int kiln_upload_finish(struct kiln_upload *u, const char *digest, struct kiln_error **err);
int kiln_upload_finish_fd(struct kiln_upload *u, const char *digest, int fd, uint64_t off,
                          uint64_t len, struct kiln_error **err);
int kiln_upload_finish_mem(struct kiln_upload *u, const char *digest, const void *data, size_t len,
                           struct kiln_error **err);

/* DELETE the session on the registry (errors ignored by most callers). */
int kiln_upload_cancel(struct kiln_upload *u, struct kiln_error **err);
void kiln_upload_free(struct kiln_upload *u);

/* ---- helpers (pure; exposed for tests) ---------------------------------------- */

/* Validity checks of the argument grammars above. */
bool kiln_registry_repo_valid(const char *repo);
bool kiln_registry_tag_valid(const char *tag);
/* 1: "sha256:<64 lower hex>", 0: other "algo:hex" digests, -1: not a digest. */
int kiln_registry_digest_kind(const char *s);

/*
 * Parse a registry error body {"errors":[{"code","message","detail"}]}:
 * *ret_code gets the first code (or NULL) and *ret_message the messages
 * joined with "; " (or NULL), both cleaned of control characters and cut
 * at 512 bytes; the caller frees both. Returns 0, or -1 when the body is
 * not such a document (outputs untouched).
 */
int kiln_registry_parse_errors(const char *body, size_t len, char **ret_code, char **ret_message);

/*
 * Parse one tags list page {"name": "...", "tags": ["..", ...]} ("tags"
 * null or absent: none) of at most KILN_REGISTRY_TAGS_BODY_MAX bytes
 * (-KILN_ETOOBIG; also for more than KILN_REGISTRY_TAGS_MAX tags). Every
 * tag must pass kiln_registry_tag_valid() (-KILN_EINVAL "invalid tag
 * '...' in the tags list", the tag cleaned of control characters and cut).
 * On success the tags are appended to *out in order and their count is
 * returned; on failure *out is untouched.
 */
int kiln_registry_parse_tags(const char *body, size_t len, struct kiln_strv *out,
                             struct kiln_error **err);

/*
 * The target of the first link-value of a Link header value (RFC 8288:
 * `<URI-reference>; rel="next"; ...`, link-values separated by commas)
 * whose rel parameter (the first one; a space-separated list, compared
 * case-insensitively) holds "next": a new string (caller frees), not yet
 * resolved against the request URL (see kiln_http_url_join()). NULL when
 * there is none, the value is malformed, or the target is empty or holds
 * spaces or control characters.
 */
char *kiln_registry_link_next(const char *value);

#endif
