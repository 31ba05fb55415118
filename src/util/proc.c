#include "util/common.h"
#include "util/proc.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <limits.h>
#include <time.h>

#include "util/buf.h"

extern char **environ;

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

struct stream {
    int fd;
    enum kiln_proc_stream which;
    struct kiln_buf line;
};

static void flush_lines(const struct kiln_proc_opts *o, struct stream *s, bool eof)
{
    size_t start = 0;
    for (size_t i = 0; i < s->line.len; i++) {
        if (s->line.buf[i] == '\n') {
            if (o->on_line)
                o->on_line(o->userdata, s->which, s->line.buf + start, i - start);
            start = i + 1;
        }
    }
    size_t rest = s->line.len - start;
    if (rest && (eof || rest >= KILN_PROC_LINE_MAX)) {
        if (o->on_line)
            o->on_line(o->userdata, s->which, s->line.buf + start, rest);
        start = s->line.len;
    }
    memmove(s->line.buf, s->line.buf + start, s->line.len - start);
    kiln_buf_truncate(&s->line, s->line.len - start);
}

/* Read what is there; returns false at EOF or error. */
static bool pump(const struct kiln_proc_opts *o, struct stream *s)
{
    char chunk[16384];
    ssize_t n = read(s->fd, chunk, sizeof(chunk));
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
        return true;
    if (n <= 0) {
        flush_lines(o, s, true);
        return false;
    }
    kiln_buf_add(&s->line, chunk, (size_t)n);
    flush_lines(o, s, false);
    return true;
}

static void kill_group(pid_t pid, int sig)
{
    if (kill(-pid, sig) < 0)
        kill(pid, sig);
}

int kiln_proc_run(const struct kiln_proc_opts *o, int *ret_status, struct kiln_error **err)
{
    int out[2] = {-1, -1}, errp[2] = {-1, -1};
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    int r;

    if (pipe2(out, O_CLOEXEC) < 0 || pipe2(errp, O_CLOEXEC) < 0) {
        r = kiln_error_set(err, KILN_EIO, errno, "pipe");
        goto close_pipes;
    }
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, out[1], STDOUT_FILENO);
    posix_spawn_file_actions_adddup2(&fa, errp[1], STDERR_FILENO);
    if (o->cwd)
        posix_spawn_file_actions_addchdir_np(&fa, o->cwd);
    posix_spawnattr_init(&attr);
    posix_spawnattr_setpgroup(&attr, 0);
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &all);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
                                        POSIX_SPAWN_SETSIGDEF);

    pid_t pid = -1;
    char *const *envp = o->envp ? (char *const *)o->envp : environ;
    int e = posix_spawnp(&pid, o->argv[0], &fa, &attr, (char *const *)o->argv, envp);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    close(out[1]);
    close(errp[1]);
    out[1] = errp[1] = -1;
    if (e != 0) {
        r = kiln_error_set(err, e == ENOENT ? KILN_ENOTFOUND : KILN_EIO, e, "run '%s'", o->argv[0]);
        goto close_pipes;
    }

    struct stream st[2] = {{out[0], KILN_PROC_STDOUT, KILN_BUF_INIT},
                           {errp[0], KILN_PROC_STDERR, KILN_BUF_INIT}};
    bool open_[2] = {true, true};
    long start = now_ms(), kill_at = 0;
    int why = 0; /* KILN_ETIMEOUT or KILN_ECANCELLED once we started killing */
    while (open_[0] || open_[1]) {
        struct pollfd pfd[2];
        nfds_t n = 0;
        int map[2];
        for (int i = 0; i < 2; i++) {
            if (open_[i]) {
                pfd[n].fd = st[i].fd;
                pfd[n].events = POLLIN;
                map[n++] = i;
            }
        }
        int pr = poll(pfd, n, 100);
        if (pr < 0 && errno != EINTR)
            break;
        for (nfds_t k = 0; pr > 0 && k < n; k++)
            if (pfd[k].revents & (POLLIN | POLLHUP | POLLERR))
                open_[map[k]] = pump(o, &st[map[k]]);
        long t = now_ms();
        if (!why && o->timeout_ms > 0 && t - start > o->timeout_ms)
            why = KILN_ETIMEOUT;
        if (!why && o->cancelled && o->cancelled(o->userdata))
            why = KILN_ECANCELLED;
        if (why && !kill_at) {
            kill_group(pid, SIGTERM);
            kill_at = t + KILN_PROC_KILL_GRACE_MS;
        } else if (kill_at && t > kill_at) {
            kill_group(pid, SIGKILL);
            kill_at = LONG_MAX;
        }
    }
    int status = 0;
    for (;;) {
        pid_t w = waitpid(pid, &status, why ? WNOHANG : 0);
        if (w == pid)
            break;
        if (w < 0 && errno != EINTR) {
            status = 0;
            break;
        }
        if (w == 0) {
            /* output closed but the child lives on: enforce the kill */
            long t = now_ms();
            if (kill_at && t > kill_at)
                kill_group(pid, SIGKILL);
            struct timespec ts = {0, 20 * 1000000L};
            nanosleep(&ts, NULL);
        }
    }
    if (why)
        kill(-pid, SIGKILL); /* what is left of the group after a kill */
    kiln_buf_release(&st[0].line);
    kiln_buf_release(&st[1].line);
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    *ret_status = code;
    if (why == KILN_ETIMEOUT)
        r = kiln_error_set(err, KILN_ETIMEOUT, 0, "'%s' timed out after %ld ms", o->argv[0],
                           o->timeout_ms);
    else if (why == KILN_ECANCELLED)
        r = kiln_error_set(err, KILN_ECANCELLED, 0, "'%s' cancelled", o->argv[0]);
    else
        r = 0;
close_pipes:
    for (int i = 0; i < 2; i++) {
        if (out[i] >= 0)
            close(out[i]);
        if (errp[i] >= 0)
            close(errp[i]);
    }
    return r;
}
