#include "util/common.h"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "oci/config.h"
#include "oci/digest.h"
#include "oci/layout.h"
#include "oci/manifest.h"
#include "util/buf.h"
#include "tap.h"

#define HELLO_DIGEST "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
#define JELLO_DIGEST "sha256:187c9bceeb919e1b3e6d20fa50ecabf7d9d50b5343e8f9a3d912abb13929102e"
#define H0           "5feceb66ffc86f38d952786c6d696c79c2dbc239dd4e91b46729d73a27fb57e9"
#define D0           "sha256:" H0
#define D1           "sha256:6b86b273ff34fce19d6b804eff5a3f5747ada4eaa22f1d49c01e52ddb7875b4b"
#define D2           "sha256:d4735e3a265e16eee03f59718b9b5d03019c07d8b6c51f90da3a666eec13ab35"
#define MT_OM        "application/vnd.oci.image.manifest.v1+json"
#define MT_OI        "application/vnd.oci.image.index.v1+json"

static char tmproot[] = "/tmp/kiln-test-layout-XXXXXX";

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void rm_rf(const char *path)
{
    nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static char *path_of(const char *rel)
{
    return kiln_xasprintf("%s/%s", tmproot, rel);
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rbe");
    if (!f)
        return NULL;
    struct kiln_buf b = KILN_BUF_INIT;
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
        kiln_buf_add(&b, chunk, n);
    fclose(f);
    return kiln_buf_detach(&b, NULL);
}

static void spit(const char *path, const char *data)
{
    FILE *f = fopen(path, "wbe");
    if (f) {
        fputs(data, f);
        fclose(f);
    }
}

/* Number of entries in dir whose names start with prefix. */
static int count_prefixed(const char *dir, const char *prefix)
{
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)))
        n += strncmp(de->d_name, prefix, strlen(prefix)) == 0;
    closedir(d);
    return n;
}

static void test_create_open(void)
{
    struct kiln_layout *l = NULL;
    struct kiln_error *e = NULL;
    char *dir = path_of("a");
    is_int(kiln_layout_create(dir, &l, &e), 0, "create a new layout");
    ok(l && kiln_layout_dirfd(l) >= 0, "handle with a dir fd");
    is_str(l ? kiln_layout_path(l) : NULL, dir, "path kept");

    char *p = kiln_xasprintf("%s/oci-layout", dir);
    char *s = slurp(p);
    is_str(s, "{\"imageLayoutVersion\":\"1.0.0\"}", "oci-layout content");
    free(s);
    free(p);
    p = kiln_xasprintf("%s/index.json", dir);
    s = slurp(p);
    is_str(s, "{\"schemaVersion\":2,\"mediaType\":\"" MT_OI "\",\"manifests\":[]}",
           "empty index.json");
    free(s);
    free(p);
    p = kiln_xasprintf("%s/blobs/sha256", dir);
    struct stat st;
    ok(stat(p, &st) == 0 && S_ISDIR(st.st_mode), "blobs/sha256 is a directory");
    free(p);
    ok(count_prefixed(dir, ".") == 2, "no temporary files left (only . and ..)");
    int fd = kiln_layout_dirfd(l);
    ok(fcntl(fd, F_GETFD) & FD_CLOEXEC, "dir fd is close-on-exec");
    kiln_layout_free(l);
    l = NULL;

    is_int(kiln_layout_create(dir, &l, &e), -KILN_EEXIST, "create over a layout");
    ok(l == NULL, "no handle on failure");
    kiln_error_free(e);
    e = NULL;
    is_int(kiln_layout_open(dir, &l, &e), 0, "open it");
    kiln_layout_free(l);
    l = NULL;

    char *missing = path_of("missing");
    is_int(kiln_layout_open(missing, &l, &e), -KILN_ENOTFOUND, "open a missing path");
    kiln_error_free(e);
    e = NULL;
    char *nested = path_of("missing/x");
    is_int(kiln_layout_create(nested, &l, NULL), -KILN_EIO, "create needs the parent");
    free(nested);

    char *plain = path_of("plain");
    mkdir(plain, 0755);
    is_int(kiln_layout_open(plain, &l, &e), -KILN_ENOTFOUND, "open a plain directory");
    char *want = kiln_xasprintf("'%s' is not an OCI layout: no oci-layout file", plain);
    is_str(e ? e->msg : NULL, want, "not-a-layout message");
    free(want);
    kiln_error_free(e);
    e = NULL;
    /* an existing non-layout directory can be made a layout */
    is_int(kiln_layout_create(plain, &l, NULL), 0, "create in an existing empty directory");
    kiln_layout_free(l);
    l = NULL;

    p = kiln_xasprintf("%s/oci-layout", plain);
    spit(p, "{\"imageLayoutVersion\":\"2.0.0\"}");
    is_int(kiln_layout_open(plain, &l, &e), -KILN_EUNSUPPORTED, "layout version 2");
    kiln_error_free(e);
    e = NULL;
    spit(p, "{\"imageLayoutVersion\":\"1.0.1\"}");
    is_int(kiln_layout_open(plain, &l, NULL), 0, "layout version 1.0.1");
    kiln_layout_free(l);
    l = NULL;
    spit(p, "{}");
    is_int(kiln_layout_open(plain, &l, NULL), -KILN_EINVAL, "no version");
    spit(p, "not json");
    is_int(kiln_layout_open(plain, &l, NULL), -KILN_EINVAL, "oci-layout not JSON");
    spit(p, "{\"imageLayoutVersion\":\"1.0.0\"}");
    free(p);
    p = kiln_xasprintf("%s/index.json", plain);
    spit(p, "{\"schemaVersion\":2,\"manifests\":[{\"mediaType\":\"x/y\"}]}");
    is_int(kiln_layout_open(plain, &l, &e), -KILN_EINVAL, "broken index.json");
    ok(e && strstr(e->msg, "index.json': manifests[0].digest: missing"), "index.json message");
    kiln_error_free(e);
    e = NULL;
    unlink(p);
    is_int(kiln_layout_open(plain, &l, NULL), -KILN_ENOTFOUND, "no index.json");
    spit(p, "{\"schemaVersion\":2,\"manifests\":[]}");
    free(p);
    p = kiln_xasprintf("%s/blobs/sha256", plain);
    rmdir(p);
    free(p);
    p = kiln_xasprintf("%s/blobs", plain);
    rmdir(p);
    is_int(kiln_layout_open(plain, &l, NULL), -KILN_EINVAL, "no blobs directory");
    ok(symlink("/tmp", p) == 0, "make blobs a symlink");
    is_int(kiln_layout_open(plain, &l, NULL), -KILN_EINVAL, "blobs as a symlink is refused");
    free(p);

    is_int(kiln_layout_open("", &l, NULL), -KILN_EINVAL, "empty path");
    is_int(kiln_layout_create(NULL, &l, NULL), -KILN_EINVAL, "NULL path");
    kiln_layout_free(NULL);
    free(plain);
    free(missing);
    free(dir);
}

static void test_blobs(void)
{
    struct kiln_layout *l = NULL;
    struct kiln_error *e = NULL;
    char *dir = path_of("b");
    kiln_layout_create(dir, &l, NULL);
    char *blobs = kiln_xasprintf("%s/blobs", dir);
    char d[KILN_DIGEST_BUFSZ] = "";

    is_int(kiln_layout_blob_exists(l, HELLO_DIGEST, NULL, NULL), 0, "not there yet");
    is_int(kiln_layout_blob_write(l, "hello", 5, NULL, d, &e), 0, "write a buffer");
    is_str(d, HELLO_DIGEST, "its digest");
    char *p = kiln_xasprintf("%s/sha256/%s", blobs, kiln_digest_encoded(HELLO_DIGEST));
    char *s = slurp(p);
    is_str(s, "hello", "stored under its digest");
    free(s);
    int64_t size = -1;
    is_int(kiln_layout_blob_exists(l, HELLO_DIGEST, &size, NULL), 1, "exists");
    is_int(size, 5, "size");
    is_int(kiln_layout_blob_write(l, "hello", 5, HELLO_DIGEST, NULL, NULL), 0,
           "write again with the digest");
    is_int(kiln_layout_blob_write(l, "hellO", 5, HELLO_DIGEST, NULL, &e), -KILN_EINVAL,
           "wrong content for the digest");
    ok(e && strncmp(e->msg, "digest mismatch: expected " HELLO_DIGEST ", got sha256:", 79) == 0,
       "mismatch message");
    kiln_error_free(e);
    e = NULL;
    is_int(count_prefixed(blobs, ".tmp-"), 0, "no temporary files");
    is_int(kiln_layout_blob_write(l, "x", 1, "sha256:nope", NULL, NULL), -KILN_EINVAL,
           "invalid expected digest");

    char *data = NULL;
    size_t len = 0;
    is_int(kiln_layout_blob_read(l, HELLO_DIGEST, 100, &data, &len, NULL), 0, "read back");
    ok(len == 5 && data && memcmp(data, "hello", 6) == 0, "content and NUL");
    free(data);
    data = NULL;
    is_int(kiln_layout_blob_read(l, HELLO_DIGEST, 4, &data, &len, NULL), -KILN_ETOOBIG, "read cap");
    is_int(kiln_layout_blob_read(l, D0, 100, &data, &len, &e), -KILN_ENOTFOUND, "read a missing");
    char *want = kiln_xasprintf("blob %s not found in '%s'", D0, dir);
    is_str(e ? e->msg : NULL, want, "not found message");
    free(want);
    kiln_error_free(e);
    e = NULL;
    is_int(kiln_layout_blob_verify(l, HELLO_DIGEST, NULL), 0, "verify");
    is_int(kiln_layout_blob_exists(l, "sha512:" H0, NULL, NULL), -KILN_EINVAL,
           "short sha512 invalid");
    is_int(kiln_layout_blob_exists(l, "bad", NULL, NULL), -KILN_EINVAL, "invalid digest");
    is_int(kiln_layout_blob_exists(l, "md5:abc", NULL, NULL), -KILN_EUNSUPPORTED,
           "unsupported digest");

    int fd = kiln_layout_blob_open(l, HELLO_DIGEST, &size, NULL);
    ok(fd >= 0 && size == 5, "open a blob");
    ok(fd >= 0 && (fcntl(fd, F_GETFD) & FD_CLOEXEC), "blob fd is close-on-exec");
    char buf[8] = "";
    ok(fd >= 0 && read(fd, buf, sizeof(buf)) == 5 && memcmp(buf, "hello", 5) == 0, "read fd");
    if (fd >= 0)
        close(fd);

    /* corruption is found */
    spit(p, "jello");
    is_int(kiln_layout_blob_read(l, HELLO_DIGEST, 100, &data, &len, &e), -KILN_EINVAL,
           "corrupt blob refused");
    is_str(e ? e->msg : NULL,
           "blob " HELLO_DIGEST ": digest mismatch: expected " HELLO_DIGEST ", got " JELLO_DIGEST,
           "corrupt blob message");
    kiln_error_free(e);
    e = NULL;
    ok(data == NULL, "no data for a corrupt blob");
    is_int(kiln_layout_blob_verify(l, HELLO_DIGEST, &e), -KILN_EINVAL, "verify finds it");
    kiln_error_free(e);
    e = NULL;
    spit(p, "hello!");
    is_int(kiln_layout_blob_read(l, HELLO_DIGEST, 100, &data, &len, NULL), -KILN_EINVAL,
           "longer blob refused");
    /* symlinks are not followed */
    unlink(p);
    ok(symlink("/etc/hostname", p) == 0, "make the blob a symlink");
    is_int(kiln_layout_blob_open(l, HELLO_DIGEST, NULL, NULL), -KILN_EIO,
           "symlinked blob not opened");
    is_int(kiln_layout_blob_exists(l, HELLO_DIGEST, NULL, NULL), -KILN_EINVAL,
           "symlinked blob is not a regular file");
    unlink(p);
    is_int(kiln_layout_blob_write(l, "hello", 5, NULL, NULL, NULL), 0, "write it anew");
    is_int(kiln_layout_blob_verify(l, HELLO_DIGEST, NULL), 0, "good again");
    free(p);

    /* from an fd: 1 MiB + 3 bytes */
    size_t big = (1 << 20) + 3;
    char *content = kiln_xmalloc(big);
    for (size_t i = 0; i < big; i++)
        content[i] = (char)(i * 7 + (i >> 9));
    char want_d[KILN_DIGEST_BUFSZ];
    kiln_digest_buf(content, big, want_d);
    char *src = path_of("src");
    int sfd = open(src, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    ok(sfd >= 0 && write(sfd, content, big) == (ssize_t)big, "source file");
    lseek(sfd, 0, SEEK_SET);
    is_int(kiln_layout_blob_write_fd(l, sfd, want_d, (int64_t)big - 1, NULL, &e), -KILN_EINVAL,
           "fd: wrong size");
    is_str(e ? e->msg : NULL, "size mismatch: expected 1048578 bytes, got at least 1048579",
           "fd: size message");
    kiln_error_free(e);
    e = NULL;
    is_int(kiln_layout_blob_exists(l, want_d, NULL, NULL), 0, "fd: nothing stored");
    lseek(sfd, 0, SEEK_SET);
    is_int(kiln_layout_blob_write_fd(l, sfd, D0, (int64_t)big, NULL, NULL), -KILN_EINVAL,
           "fd: wrong digest");
    is_int(kiln_layout_blob_exists(l, D0, NULL, NULL), 0, "fd: wrong digest not stored");
    is_int(count_prefixed(blobs, ".tmp-"), 0, "fd: no temporary files after failures");
    lseek(sfd, 0, SEEK_SET);
    is_int(kiln_layout_blob_write_fd(l, sfd, want_d, (int64_t)big, d, NULL), 0, "fd: stored");
    is_str(d, want_d, "fd: digest");
    lseek(sfd, 0, SEEK_SET);
    is_int(kiln_layout_blob_write_fd(l, sfd, NULL, -1, d, NULL), 0, "fd: unchecked");
    is_str(d, want_d, "fd: computed digest");
    close(sfd);
    free(src);
    is_int(kiln_layout_blob_read(l, want_d, big, &data, &len, NULL), 0, "fd: read back");
    ok(len == big && memcmp(data, content, big) == 0, "fd: same content");
    free(data);
    data = NULL;
    is_int(kiln_layout_blob_write_fd(l, -1, NULL, -1, NULL, NULL), -KILN_EIO, "fd: bad fd");
    is_int(count_prefixed(blobs, ".tmp-"), 0, "fd: bad fd leaves nothing");

    /* streaming writer */
    struct kiln_layout_writer *w = NULL;
    is_int(kiln_layout_writer_begin(l, HELLO_DIGEST, 5, &w, NULL), 0, "writer begin");
    is_int(count_prefixed(blobs, ".tmp-"), 1, "writer: one temporary file");
    is_int(kiln_layout_writer_write(w, "hel", 3, NULL), 0, "writer: piece 1");
    is_int(kiln_layout_writer_write(w, "lo", 2, NULL), 0, "writer: piece 2");
    is_int(kiln_layout_writer_commit(w, d, NULL), 0, "writer: commit");
    is_str(d, HELLO_DIGEST, "writer: digest");
    is_int(kiln_layout_writer_commit(w, d, NULL), -KILN_EINTERNAL, "writer: commit twice");
    is_int(kiln_layout_writer_write(w, "x", 1, NULL), -KILN_EINTERNAL, "writer: write after");
    kiln_layout_writer_free(w);
    is_int(count_prefixed(blobs, ".tmp-"), 0, "writer: temporary file renamed");

    w = NULL;
    kiln_layout_writer_begin(l, NULL, 3, &w, NULL);
    is_int(kiln_layout_writer_write(w, "abcd", 4, NULL), -KILN_EINVAL, "writer: too much data");
    is_int(kiln_layout_writer_commit(w, d, NULL), -KILN_EINTERNAL, "writer: spent after failure");
    kiln_layout_writer_free(w);
    is_int(count_prefixed(blobs, ".tmp-"), 0, "writer: failure removes the temporary file");

    w = NULL;
    kiln_layout_writer_begin(l, D1, -1, &w, NULL);
    kiln_layout_writer_write(w, "abc", 3, NULL);
    is_int(kiln_layout_writer_commit(w, d, NULL), -KILN_EINVAL, "writer: digest mismatch");
    kiln_layout_writer_free(w);
    is_int(kiln_layout_blob_exists(l, D1, NULL, NULL), 0, "writer: mismatch not stored");

    w = NULL;
    kiln_layout_writer_begin(l, NULL, -1, &w, NULL);
    kiln_layout_writer_write(w, "abandoned", 9, NULL);
    kiln_layout_writer_free(w);
    is_int(count_prefixed(blobs, ".tmp-"), 0, "writer: abandoned file removed");
    kiln_layout_writer_free(NULL);
    w = NULL;
    is_int(kiln_layout_writer_begin(l, "sha512:" H0, -1, &w, NULL), -KILN_EINVAL,
           "writer: invalid digest");
    ok(w == NULL, "writer: no handle on failure");

    free(content);
    free(blobs);
    free(dir);
    kiln_layout_free(l);
}

static void test_ref_names(void)
{
    static const char *good[] = {
        "latest", "v1.0", "1.0.0-rc1", "a--b",    "A_b",
        "x:y",    "x@y",  "a+b",       "foo/bar", "example.com/foo/bar:1.0",
        "0"};
    static const char *badn[] = {"",     "-x",  "x-",  "a..b", "a---b", "a/",    "/a",
                                 "a//b", "a b", "a\n", "ä",    "a.-b",  "a--.b", "a/-b"};
    for (size_t i = 0; i < KILN_ARRAY_SIZE(good); i++)
        ok(kiln_layout_ref_name_ok(good[i]), "ref name '%s' valid", good[i]);
    for (size_t i = 0; i < KILN_ARRAY_SIZE(badn); i++)
        ok(!kiln_layout_ref_name_ok(badn[i]), "ref name %zu invalid", i);
    ok(!kiln_layout_ref_name_ok(NULL), "NULL ref name invalid");
}

static void desc(struct kiln_descriptor *d, const char *digest, int64_t size)
{
    *d = (struct kiln_descriptor)KILN_DESCRIPTOR_INIT;
    d->media_type = kiln_xstrdup(MT_OM);
    d->digest = kiln_xstrdup(digest);
    d->size = size;
}

static void test_index(void)
{
    struct kiln_layout *l = NULL;
    struct kiln_error *e = NULL;
    char *dir = path_of("i");
    kiln_layout_create(dir, &l, NULL);
    char *index = kiln_xasprintf("%s/index.json", dir);
    struct kiln_descriptor a, b, c, r;

    is_int(kiln_layout_resolve(l, NULL, &r, &e), -KILN_ENOTFOUND, "empty: nothing to resolve");
    kiln_error_free(e);
    e = NULL;

    desc(&a, D0, 100);
    is_int(kiln_layout_index_add(l, &a, "v1", NULL), 0, "add v1");
    char *s = slurp(index);
    is_str(s,
           "{\"schemaVersion\":2,\"mediaType\":\"" MT_OI "\",\"manifests\":[{\"mediaType\":\"" MT_OM
           "\",\"digest\":\"" D0 "\",\"size\":100,\"annotations\":{\"org.opencontainers.image.ref."
           "name\":\"v1\"}}]}",
           "index.json after one add");
    free(s);
    ok(kiln_descriptor_annotation(&a, KILN_ANNOTATION_REF_NAME) == NULL,
       "caller's descriptor untouched");
    is_int(kiln_layout_resolve(l, "v1", &r, NULL), 0, "resolve v1");
    is_str(r.digest, D0, "v1 digest");
    is_str(kiln_descriptor_annotation(&r, KILN_ANNOTATION_REF_NAME), "v1", "v1 annotation");
    kiln_descriptor_release(&r);
    is_int(kiln_layout_resolve(l, NULL, &r, NULL), 0, "resolve the only one");
    is_str(r.digest, D0, "only one digest");
    kiln_descriptor_release(&r);

    /* keep an fd on the old index.json: a rename leaves it whole */
    int oldfd = open(index, O_RDONLY | O_CLOEXEC);
    struct stat st_old, st_new;
    fstat(oldfd, &st_old);

    desc(&b, D1, 200);
    is_int(kiln_layout_index_add(l, &b, "latest", NULL), 0, "add latest");
    desc(&c, D2, 300);
    is_int(kiln_layout_index_add(l, &c, "v1", NULL), 0, "replace v1");

    stat(index, &st_new);
    ok(st_old.st_ino != st_new.st_ino, "index.json replaced by rename, not rewritten");
    char old[4096] = "";
    ssize_t n = read(oldfd, old, sizeof(old) - 1);
    close(oldfd);
    struct kiln_index oldidx = KILN_INDEX_INIT;
    ok(n > 0 && kiln_index_parse(old, (size_t)n, NULL, &oldidx, NULL) == 0 &&
           oldidx.n_manifests == 1 && strcmp(oldidx.manifests[0].digest, D0) == 0,
       "the old file is still the complete old index");
    kiln_index_release(&oldidx);
    is_int(count_prefixed(dir, ".index.json.tmp-"), 0, "no temporary index files");

    struct kiln_index idx = KILN_INDEX_INIT;
    is_int(kiln_layout_index_read(l, &idx, NULL), 0, "read index");
    is_int(idx.n_manifests, 2, "two entries");
    ok(idx.n_manifests == 2 && strcmp(idx.manifests[0].digest, D1) == 0 &&
           strcmp(idx.manifests[1].digest, D2) == 0,
       "latest kept, v1 replaced at the end");
    kiln_index_release(&idx);

    is_int(kiln_layout_resolve(l, "v1", &r, NULL), 0, "resolve new v1");
    is_str(r.digest, D2, "new v1 digest");
    kiln_descriptor_release(&r);
    is_int(kiln_layout_resolve(l, NULL, &r, &e), -KILN_EINVAL, "no name with two entries");
    char *want =
        kiln_xasprintf("'%s/index.json' has 2 manifests: name one (names: latest, v1)", dir);
    is_str(e ? e->msg : NULL, want, "ambiguous message");
    free(want);
    kiln_error_free(e);
    e = NULL;
    is_int(kiln_layout_resolve(l, "v2", &r, &e), -KILN_ENOTFOUND, "unknown name");
    want = kiln_xasprintf("no manifest named 'v2' in '%s/index.json'; names: latest, v1", dir);
    is_str(e ? e->msg : NULL, want, "unknown name message");
    free(want);
    kiln_error_free(e);
    e = NULL;

    is_int(kiln_layout_index_add(l, &a, "bad name", &e), -KILN_EINVAL, "invalid ref name");
    is_str(e ? e->msg : NULL, "invalid ref name 'bad name'", "invalid ref name message");
    kiln_error_free(e);
    e = NULL;
    free(a.digest);
    a.digest = kiln_xstrdup("sha256:xyz");
    is_int(kiln_layout_index_add(l, &a, "v3", &e), -KILN_EINVAL, "invalid descriptor");
    kiln_error_free(e);
    e = NULL;
    free(a.digest);
    a.digest = kiln_xstrdup(D0);

    /* without a name: the same digest is not added twice */
    is_int(kiln_layout_index_add(l, &a, NULL, NULL), 0, "add unnamed");
    is_int(kiln_layout_index_add(l, &a, NULL, NULL), 0, "add unnamed again");
    kiln_layout_index_read(l, &idx, NULL);
    is_int(idx.n_manifests, 3, "unnamed added once");
    kiln_index_release(&idx);

    /* a reopened layout sees it all */
    kiln_layout_free(l);
    l = NULL;
    is_int(kiln_layout_open(dir, &l, NULL), 0, "reopen");
    is_int(kiln_layout_resolve(l, "latest", &r, NULL), 0, "resolve after reopen");
    is_str(r.digest, D1, "latest digest after reopen");
    kiln_descriptor_release(&r);

    kiln_descriptor_release(&a);
    kiln_descriptor_release(&b);
    kiln_descriptor_release(&c);
    kiln_layout_free(l);
    free(index);
    free(dir);
}

/* Processes adding names at once: the file lock keeps every update. */
static void test_concurrent(void)
{
    struct kiln_layout *l = NULL;
    char *dir = path_of("conc");
    kiln_layout_create(dir, &l, NULL);
    kiln_layout_free(l);
    enum { PROCS = 4, EACH = 10 };
    pid_t pids[PROCS];
    for (int p = 0; p < PROCS; p++) {
        pids[p] = fork();
        if (pids[p] == 0) {
            struct kiln_layout *cl = NULL;
            int bad = kiln_layout_open(dir, &cl, NULL) < 0;
            for (int i = 0; !bad && i < EACH; i++) {
                struct kiln_descriptor d;
                desc(&d, D0, 100 + i);
                char name[32];
                snprintf(name, sizeof(name), "p%d-%d", p, i);
                bad = kiln_layout_index_add(cl, &d, name, NULL) < 0;
                kiln_descriptor_release(&d);
            }
            kiln_layout_free(cl);
            _exit(bad);
        }
    }
    int failed = 0;
    for (int p = 0; p < PROCS; p++) {
        int status = 0;
        waitpid(pids[p], &status, 0);
        failed += !WIFEXITED(status) || WEXITSTATUS(status) != 0;
    }
    is_int(failed, 0, "concurrent writers succeeded");
    kiln_layout_open(dir, &l, NULL);
    struct kiln_index idx = KILN_INDEX_INIT;
    is_int(kiln_layout_index_read(l, &idx, NULL), 0, "index after concurrent updates");
    is_int(idx.n_manifests, PROCS * EACH, "no update lost");
    is_int(count_prefixed(dir, ".index.json.tmp-"), 0, "no temporary index files");
    kiln_index_release(&idx);
    kiln_layout_free(l);
    free(dir);
}

/* A whole image, stored and read back as a consumer would. */
static void test_image(void)
{
    struct kiln_layout *l = NULL;
    char *dir = path_of("img");
    kiln_layout_create(dir, &l, NULL);
    char layer_d[KILN_DIGEST_BUFSZ], config_d[KILN_DIGEST_BUFSZ], manifest_d[KILN_DIGEST_BUFSZ];

    /* an (empty-ish) layer: any bytes do for the layout */
    static const char layer[] = "not really a tar.gz";
    kiln_layout_blob_write(l, layer, sizeof(layer) - 1, NULL, layer_d, NULL);

    struct kiln_image_config cfg = KILN_IMAGE_CONFIG_INIT;
    kiln_image_config_new(&cfg, "linux", "amd64", NULL);
    kiln_image_config_add_diff_id(&cfg, layer_d, NULL);
    struct kiln_buf cb = KILN_BUF_INIT;
    is_int(kiln_image_config_serialize(&cfg, &cb, NULL), 0, "config bytes");
    is_int(kiln_layout_blob_write(l, cb.buf, cb.len, NULL, config_d, NULL), 0, "config blob");

    struct kiln_manifest m = KILN_MANIFEST_INIT;
    m.media_type = kiln_xstrdup(MT_OM);
    m.config.media_type = kiln_xstrdup(KILN_MT_OCI_CONFIG);
    m.config.digest = kiln_xstrdup(config_d);
    m.config.size = (int64_t)cb.len;
    struct kiln_descriptor ld = KILN_DESCRIPTOR_INIT;
    ld.media_type = kiln_xstrdup(KILN_MT_OCI_LAYER_TAR_GZ);
    ld.digest = kiln_xstrdup(layer_d);
    ld.size = sizeof(layer) - 1;
    kiln_manifest_add_layer(&m, &ld);
    kiln_descriptor_release(&ld);
    struct kiln_buf mb = KILN_BUF_INIT;
    is_int(kiln_manifest_serialize(&m, &mb, NULL), 0, "manifest bytes");
    is_int(kiln_layout_blob_write(l, mb.buf, mb.len, NULL, manifest_d, NULL), 0, "manifest blob");
    struct kiln_descriptor md = KILN_DESCRIPTOR_INIT;
    md.media_type = kiln_xstrdup(MT_OM);
    md.digest = kiln_xstrdup(manifest_d);
    md.size = (int64_t)mb.len;
    is_int(kiln_layout_index_add(l, &md, "kiln-test", NULL), 0, "tagged");

    struct kiln_descriptor r = KILN_DESCRIPTOR_INIT;
    is_int(kiln_layout_resolve(l, "kiln-test", &r, NULL), 0, "resolve the tag");
    char *data = NULL;
    size_t len = 0;
    is_int(kiln_layout_blob_read(l, r.digest, KILN_MANIFEST_MAX_SIZE, &data, &len, NULL), 0,
           "read the manifest");
    struct kiln_manifest back = KILN_MANIFEST_INIT;
    is_int(kiln_manifest_parse(data, len, r.media_type, &back, NULL), 0, "parse it");
    ok(back.n_layers == 1 && strcmp(back.layers[0].digest, layer_d) == 0, "layer digest back");
    free(data);
    is_int(
        kiln_layout_blob_read(l, back.config.digest, KILN_IMAGE_CONFIG_MAX_SIZE, &data, &len, NULL),
        0, "read the config");
    struct kiln_image_config cback = KILN_IMAGE_CONFIG_INIT;
    is_int(kiln_image_config_parse(data, len, &cback, NULL), 0, "parse the config");
    is_str(kiln_image_config_diff_id(&cback, 0), layer_d, "diff_id back");
    free(data);

    kiln_image_config_release(&cback);
    kiln_manifest_release(&back);
    kiln_descriptor_release(&r);
    kiln_descriptor_release(&md);
    kiln_manifest_release(&m);
    kiln_image_config_release(&cfg);
    kiln_buf_release(&mb);
    kiln_buf_release(&cb);
    kiln_layout_free(l);
    free(dir);
}

int main(void)
{
    if (!mkdtemp(tmproot)) {
        perror("mkdtemp");
        return 1;
    }
    test_create_open();
    test_blobs();
    test_ref_names();
    test_index();
    test_concurrent();
    test_image();
    rm_rf(tmproot);
    return tap_done();
}
