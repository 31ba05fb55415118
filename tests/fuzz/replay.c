/*
 * Replays a fuzz target's corpus as an ordinary test: every file under the
 * directories (or the files) named on the command line is passed once to
 * LLVMFuzzerTestOneInput. A crash or sanitizer report fails the test.
 */
#include "util/common.h"

#include <dirent.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int run_file(const char *path)
{
    _cleanup_fclose_ FILE *f = fopen(path, "rbe");
    if (!f) {
        fprintf(stderr, "replay: open '%s': %s\n", path, strerror(errno));
        return -1;
    }
    size_t cap = 1 << 20, len = 0;
    _cleanup_free_ uint8_t *data = kiln_xmalloc(cap);
    size_t n;
    while ((n = fread(data + len, 1, cap - len, f)) > 0) {
        len += n;
        if (len == cap) {
            cap *= 2;
            data = kiln_xrealloc(data, cap);
        }
    }
    LLVMFuzzerTestOneInput(data, len);
    return 0;
}

int main(int argc, char **argv)
{
    int files = 0, failed = 0;
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) < 0) {
            fprintf(stderr, "replay: '%s': %s\n", argv[i], strerror(errno));
            return 1;
        }
        if (!S_ISDIR(st.st_mode)) {
            failed += run_file(argv[i]) < 0;
            files++;
            continue;
        }
        struct dirent **names = NULL;
        int n = scandir(argv[i], &names, NULL, alphasort);
        if (n < 0) {
            fprintf(stderr, "replay: scan '%s': %s\n", argv[i], strerror(errno));
            return 1;
        }
        for (int k = 0; k < n; k++) {
            if (names[k]->d_name[0] != '.') {
                _cleanup_free_ char *p = kiln_xasprintf("%s/%s", argv[i], names[k]->d_name);
                failed += run_file(p) < 0;
                files++;
            }
            free(names[k]);
        }
        free(names);
    }
    printf("1..1\n%s 1 - replayed %d corpus files\n", files > 0 && !failed ? "ok" : "not ok",
           files);
    return files > 0 && !failed ? 0 : 1;
}
