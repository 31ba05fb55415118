/* Transfer progress on the terminal. */
#include "util/common.h"
#include "cli/progress.h"

#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "cli/registry-config.h"
#include "util/buf.h"

#define SHORT_DIGEST 12 /* hex digits shown */

struct pblob {
    char digest[KILN_DIGEST_BUFSZ];
    uint64_t size;
    uint64_t bytes;
    long started_ms;
    bool active;
};

struct cli_progress {
    FILE *f;
    bool quiet;
    bool tty;
    const char *verb;
    long start_ms;
    long last_draw_ms;
    int live_lines; /* lines of the live area on screen */
    struct pblob *blobs;
    size_t n_blobs;
    size_t n_finished;
    uint64_t total_size;
    uint64_t total_bytes;
    uint64_t moved;       /* bytes of blobs actually transferred (not skipped/mounted) */
    struct kiln_buf perm; /* permanent lines waiting to be drawn */
};

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void cli_progress_format_size(char *buf, size_t len, uint64_t bytes)
{
    static const char *const units[] = {"KiB", "MiB", "GiB", "TiB"};
    if (bytes < 1024) {
        snprintf(buf, len, "%llu B", (unsigned long long)bytes);
        return;
    }
    double v = (double)bytes / 1024.0;
    size_t u = 0;
    while (v >= 1024.0 && u + 1 < KILN_ARRAY_SIZE(units)) {
        v /= 1024.0;
        u++;
    }
    snprintf(buf, len, "%.1f %s", v, units[u]);
}

static void format_rate(char *buf, size_t len, uint64_t bytes, long ms)
{
    if (ms < 50) {
        snprintf(buf, len, "-");
        return;
    }
    cli_progress_format_size(buf, len > 2 ? len - 2 : len,
                             (uint64_t)((double)bytes * 1000.0 / (double)ms));
    size_t n = strlen(buf);
    if (n + 2 < len) {
        buf[n] = '/';
        buf[n + 1] = 's';
        buf[n + 2] = '\0';
    }
}

struct cli_progress *cli_progress_new(FILE *f, bool quiet, const char *verb)
{
    struct cli_progress *p = kiln_xcalloc(1, sizeof(*p));
    p->f = f;
    p->quiet = quiet;
    p->tty = isatty(fileno(f)) == 1;
    p->verb = verb;
    p->start_ms = now_ms();
    p->perm = (struct kiln_buf)KILN_BUF_INIT;
    return p;
}

void cli_progress_set_tty(struct cli_progress *p, int tty)
{
    p->tty = tty < 0 ? isatty(fileno(p->f)) == 1 : tty != 0;
}

void cli_progress_free(struct cli_progress *p)
{
    if (!p)
        return;
    free(p->blobs);
    kiln_buf_release(&p->perm);
    free(p);
}

static int term_width(FILE *f)
{
    struct winsize ws;
    if (ioctl(fileno(f), TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 20)
        return ws.ws_col;
    return 80;
}

static const char *short_digest(const char *d, char *buf, size_t len)
{
    const char *hex = strchr(d, ':');
    hex = hex ? hex + 1 : d;
    snprintf(buf, len, "%.*s", SHORT_DIGEST, hex);
    return buf;
}

/* Append one line cut to `width` columns (ASCII only here). */
static void add_line(struct kiln_buf *b, int width, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void add_line(struct kiln_buf *b, int width, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    size_t n = strlen(line);
    if (width > 1 && n > (size_t)(width - 1))
        n = (size_t)(width - 1);
    kiln_buf_add(b, line, n);
    kiln_buf_adds(b, "\033[K\n");
}

static void draw(struct cli_progress *p)
{
    int width = term_width(p->f);
    long t = now_ms();
    struct kiln_buf out = KILN_BUF_INIT;
    if (p->live_lines > 0)
        kiln_buf_addf(&out, "\r\033[%dA", p->live_lines);
    kiln_buf_adds(&out, "\r\033[J");
    kiln_buf_add(&out, p->perm.buf, p->perm.len);
    kiln_buf_reset(&p->perm);
    int lines = 0;
    for (size_t i = 0; i < p->n_blobs; i++) {
        struct pblob *b = &p->blobs[i];
        if (!b->active)
            continue;
        char d[SHORT_DIGEST + 1], have[32], size[32], rate[32];
        cli_progress_format_size(have, sizeof(have), b->bytes);
        cli_progress_format_size(size, sizeof(size), b->size);
        format_rate(rate, sizeof(rate), b->bytes, t - b->started_ms);
        int pct = b->size ? (int)(b->bytes * 100 / b->size) : 100;
        add_line(&out, width, "  %s  %3d%%  %10s / %-10s  %s",
                 short_digest(b->digest, d, sizeof(d)), pct, have, size, rate);
        lines++;
    }
    char have[32], size[32], rate[32];
    cli_progress_format_size(have, sizeof(have), p->total_bytes);
    cli_progress_format_size(size, sizeof(size), p->total_size);
    uint64_t moving = p->moved;
    for (size_t i = 0; i < p->n_blobs; i++)
        if (p->blobs[i].active)
            moving += p->blobs[i].bytes;
    format_rate(rate, sizeof(rate), moving, t - p->start_ms);
    add_line(&out, width, "  %zu/%zu blobs  %s / %s  %s", p->n_finished, p->n_blobs, have, size,
             rate);
    lines++;
    fwrite(out.buf, 1, out.len, p->f);
    fflush(p->f);
    kiln_buf_release(&out);
    p->live_lines = lines;
    p->last_draw_ms = t;
}

static void finished_line(struct cli_progress *p, struct pblob *b, const char *what)
{
    char d[SHORT_DIGEST + 1], size[32], rate[32] = "";
    cli_progress_format_size(size, sizeof(size), b->size);
    if (b->started_ms && !strcmp(what, "done"))
        format_rate(rate, sizeof(rate), b->size, now_ms() - b->started_ms);
    add_line(&p->perm, term_width(p->f), "  %s  %-8s %10s  %s",
             short_digest(b->digest, d, sizeof(d)), what, size, rate);
}

int cli_progress_event(void *userdata, const struct kiln_transfer_event *ev)
{
    struct cli_progress *p = userdata;
    if (cli_registry_interrupted())
        return 1;
    if (!p || p->quiet)
        return 0;
    p->total_size = ev->total_size;
    p->total_bytes = ev->total_bytes;
    p->n_finished = ev->n_finished;
    if (ev->kind == KILN_TRANSFER_PLAN) {
        free(p->blobs);
        p->n_blobs = ev->n_blobs;
        p->blobs = kiln_xcalloc(p->n_blobs ? p->n_blobs : 1, sizeof(*p->blobs));
        p->start_ms = now_ms();
        return 0;
    }
    if (ev->kind == KILN_TRANSFER_MANIFEST || ev->blob >= p->n_blobs)
        return 0;
    struct pblob *b = &p->blobs[ev->blob];
    if (ev->digest && !b->digest[0])
        snprintf(b->digest, sizeof(b->digest), "%s", ev->digest);
    b->size = ev->size;
    bool redraw = false;
    switch (ev->kind) {
    case KILN_TRANSFER_STARTED:
        b->active = true;
        b->bytes = 0;
        b->started_ms = now_ms();
        redraw = true;
        break;
    case KILN_TRANSFER_BYTES:
        b->bytes = ev->bytes;
        redraw = now_ms() - p->last_draw_ms >= CLI_PROGRESS_REDRAW_MS;
        break;
    case KILN_TRANSFER_DONE:
    case KILN_TRANSFER_SKIPPED:
    case KILN_TRANSFER_MOUNTED:
    case KILN_TRANSFER_FAILED:
        b->active = false;
        if (ev->kind == KILN_TRANSFER_DONE)
            p->moved += b->size;
        if (p->tty)
            finished_line(p, b,
                          ev->kind == KILN_TRANSFER_DONE      ? "done"
                          : ev->kind == KILN_TRANSFER_SKIPPED ? "exists"
                          : ev->kind == KILN_TRANSFER_MOUNTED ? "mounted"
                                                              : "failed");
        redraw = true;
        break;
    default:
        break;
    }
    if (p->tty && redraw)
        draw(p);
    return 0;
}

void cli_progress_finish(struct cli_progress *p, const struct kiln_transfer_result *res)
{
    if (!p || p->quiet)
        return;
    if (p->tty && (p->live_lines > 0 || p->perm.len > 0)) {
        /* leave the permanent lines, drop the live area */
        struct kiln_buf out = KILN_BUF_INIT;
        if (p->live_lines > 0)
            kiln_buf_addf(&out, "\r\033[%dA", p->live_lines);
        kiln_buf_adds(&out, "\r\033[J");
        kiln_buf_add(&out, p->perm.buf, p->perm.len);
        fwrite(out.buf, 1, out.len, p->f);
        kiln_buf_release(&out);
        kiln_buf_reset(&p->perm);
        p->live_lines = 0;
    }
    if (!res) {
        fflush(p->f);
        return;
    }
    long ms = now_ms() - p->start_ms;
    char total[32], moved[32], rate[32];
    cli_progress_format_size(total, sizeof(total), res->total_size);
    cli_progress_format_size(moved, sizeof(moved), res->bytes_transferred);
    format_rate(rate, sizeof(rate), res->bytes_transferred, ms);
    char kernel[64] = "";
    if (res->bytes_in_kernel > 0) {
        char k[32];
        cli_progress_format_size(k, sizeof(k), res->bytes_in_kernel);
        snprintf(kernel, sizeof(kernel), ", %s of it moved in the kernel", k);
    }
    fprintf(p->f,
            "%s %s: %zu blob%s (%s): %zu transferred (%s%s), %zu already there, %zu mounted, "
            "%zu manifest%s; %.1f s (%s)\n",
            p->verb, res->digest, res->n_blobs, res->n_blobs == 1 ? "" : "s", total,
            res->n_transferred, moved, kernel, res->n_skipped, res->n_mounted, res->n_manifests,
            res->n_manifests == 1 ? "" : "s", (double)ms / 1000.0, rate);
    fflush(p->f);
}
