#include "util/common.h"

/*
 * bench/layer-bench: kiln's two layer primitives, timed, for bench/layers.sh.
 * Not a test.
 *
 *   layer-bench pull-unpack REF DATA_DIR
 *     The build-time pull path (what `kiln build` does for a base image):
 *     kiln_transfer_inspect() (manifest + config), then for every layer
 *     kiln_layers_ensure() with a registry session into the unpacked-layer
 *     store at DATA_DIR (which must not exist or be empty): the blob is
 *     streamed from the registry, decompressed and extracted at once, the
 *     diff_id checked, the store synced (syncfs) and the layer renamed into
 *     place. No blob store: nothing is written but the unpacked tree.
 *     Prints one line:
 *       pull-unpack seconds=S inspect=S layers=N compressed=BYTES maxrss_kib=K
 *
 *   layer-bench commit DIR OUT
 *     kiln_pack_dir_fd() of DIR (gzip, the default options: libdeflate level
 *     6, 512 KiB blocks, one thread per CPU) into the file OUT (created or
 *     truncated; not fsynced). Prints one line:
 *       commit seconds=S input=TAR_BYTES output=BYTES mbps=MB/S digest=D
 *         diff_id=D files=N maxrss_kib=K
 *     where mbps is uncompressed tar bytes / 1e6 / seconds.
 *
 * Plain HTTP is used for loopback registries (the registry client's rule).
 * maxrss_kib is the process's peak RSS (getrusage ru_maxrss, all threads).
 */

#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "build/layers.h"
#include "layer/pack.h"
#include "oci/config.h"
#include "oci/reference.h"
#include "registry/client.h"
#include "registry/transfer.h"
#include "store/layerstore.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static long maxrss_kib(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) < 0)
        return -1;
    return ru.ru_maxrss;
}

static int fail(const char *what, struct kiln_error *e)
{
    fprintf(stderr, "layer-bench: %s: %s\n", what, e && e->msg ? e->msg : "failed");
    kiln_error_free(e);
    return 1;
}

/* True when `path` does not exist or is an empty directory. */
static bool fresh_dir(const char *path)
{
    DIR *d = opendir(path);
    if (!d)
        return errno == ENOENT;
    struct dirent *de;
    bool empty = true;
    while ((de = readdir(d))) {
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0) {
            empty = false;
            break;
        }
    }
    closedir(d);
    return empty;
}

static int pull_unpack(const char *image, const char *data_dir)
{
    struct kiln_error *err = NULL;
    if (!fresh_dir(data_dir)) {
        fprintf(stderr, "layer-bench: '%s' exists and is not empty: give a fresh directory\n",
                data_dir);
        return 1;
    }
    struct kiln_ref ref = KILN_REF_INIT;
    if (kiln_ref_parse_normalized(image, &ref, &err) < 0)
        return fail("reference", err);

    struct kiln_registry_options ro = {0};
    struct kiln_image_info info = KILN_IMAGE_INFO_INIT;
    struct kiln_layerstore *ls = NULL;
    struct kiln_registry *reg = NULL;
    int rc = 1;

    double t0 = now_s();
    if (kiln_transfer_inspect(image, &ro, NULL, KILN_INSPECT_CONFIG, &info, &err) < 0) {
        rc = fail("inspect", err);
        goto out;
    }
    double t_inspect = now_s();
    if (!info.config.root || kiln_image_config_n_diff_ids(&info.config) != info.manifest.n_layers) {
        fprintf(stderr, "layer-bench: '%s': not an image, or layers and diff_ids differ\n", image);
        goto out;
    }
    if (kiln_layerstore_open(data_dir, 0, &ls, &err) < 0 ||
        kiln_registry_new(ref.domain, &ro, &reg, &err) < 0) {
        rc = fail("open", err);
        goto out;
    }
    uint64_t compressed = 0;
    for (size_t i = 0; i < info.manifest.n_layers; i++) {
        const struct kiln_descriptor *d = &info.manifest.layers[i];
        struct kiln_layer_source src = {.registry = reg, .repo = ref.path};
        struct kiln_layer_ref *lref = NULL;
        int r = kiln_layers_ensure(ls, &src, d, kiln_image_config_diff_id(&info.config, i), &lref,
                                   &err);
        if (r < 0) {
            rc = fail(d->digest, err);
            goto out;
        }
        if (r == 0)
            fprintf(stderr, "layer-bench: layer %s was already unpacked\n", d->digest);
        compressed += (uint64_t)d->size;
        kiln_layerstore_release(lref);
    }
    double t1 = now_s();
    printf("pull-unpack seconds=%.3f inspect=%.3f layers=%zu compressed=%" PRIu64
           " maxrss_kib=%ld\n",
           t1 - t0, t_inspect - t0, info.manifest.n_layers, compressed, maxrss_kib());
    rc = 0;
out:
    kiln_registry_free(reg);
    kiln_layerstore_free(ls);
    kiln_image_info_release(&info);
    kiln_ref_release(&ref);
    return rc;
}

static int commit(const char *dir, const char *out)
{
    struct kiln_error *err = NULL;
    _cleanup_close_ int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) {
        fprintf(stderr, "layer-bench: open '%s': %s\n", dir, strerror(errno));
        return 1;
    }
    _cleanup_close_ int ofd = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (ofd < 0) {
        fprintf(stderr, "layer-bench: create '%s': %s\n", out, strerror(errno));
        return 1;
    }
    struct kiln_compress_result res;
    struct kiln_pack_stats st;
    double t0 = now_s();
    if (kiln_pack_dir_fd(dfd, NULL, ofd, &res, &st, &err) < 0)
        return fail("commit", err);
    double t = now_s() - t0;
    printf("commit seconds=%.3f input=%" PRIu64 " output=%" PRIu64
           " mbps=%.1f digest=%s diff_id=%s files=%" PRIu64 " maxrss_kib=%ld\n",
           t, res.uncompressed_size, res.size, t > 0 ? (double)res.uncompressed_size / 1e6 / t : 0,
           res.digest, res.diff_id, st.files, maxrss_kib());
    return 0;
}

static void usage(FILE *f)
{
    fputs("usage: layer-bench pull-unpack REF DATA_DIR\n"
          "       layer-bench commit DIR OUT\n",
          f);
}

int main(int argc, char **argv)
{
    if (argc == 2 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
        usage(stdout);
        return 0;
    }
    if (argc != 4) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "pull-unpack") == 0)
        return pull_unpack(argv[2], argv[3]);
    if (strcmp(argv[1], "commit") == 0)
        return commit(argv[2], argv[3]);
    usage(stderr);
    return 2;
}
