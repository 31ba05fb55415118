#include "util/common.h"
#include "util/buf.h"
#include "util/proc.h"
#include "tap.h"

static void collect(void *ud, enum kiln_proc_stream stream, const char *line, size_t len)
{
    struct kiln_buf *b = ud;
    kiln_buf_addf(b, "%d:%.*s|", (int)stream, (int)len, line);
}

static int cancel_now(void *ud)
{
    return 1;
}

int main(void)
{
    struct kiln_buf b = KILN_BUF_INIT;
    struct kiln_error *err = NULL;
    int status = -1;

    const char *a1[] = {"sh", "-c", "echo one; echo two >&2; printf 'three'; exit 3", NULL};
    struct kiln_proc_opts o = {.argv = a1, .on_line = collect, .userdata = &b};
    is_int(kiln_proc_run(&o, &status, &err), 0, "run a shell");
    is_int(status, 3, "exit status passed on");
    ok(strstr(b.buf, "1:one|") && strstr(b.buf, "2:two|") && strstr(b.buf, "1:three|"),
       "stdout and stderr lines, and the last line without newline: %s", b.buf);

    kiln_buf_reset(&b);
    const char *a2[] = {"sh", "-c", "head -c 200000 /dev/zero | tr '\\0' x; echo; echo end", NULL};
    o.argv = a2;
    is_int(kiln_proc_run(&o, &status, &err), 0, "long line");
    ok(strstr(b.buf, "1:end|") != NULL, "a line over the cap is passed on in pieces");
    ok(b.len > 200000, "all bytes arrive (%zu)", b.len);

    const char *a3[] = {"sh", "-c", "sleep 30 & sleep 30", NULL};
    o.argv = a3;
    o.timeout_ms = 300;
    int r = kiln_proc_run(&o, &status, &err);
    is_int(r, -KILN_ETIMEOUT, "timeout kills the group");
    is_int(status, 128 + 15, "killed by SIGTERM");
    ok(err && strstr(err->msg, "timed out"), "timeout message: %s", err ? err->msg : "");
    kiln_error_freep(&err);

    o.timeout_ms = 0;
    o.cancelled = cancel_now;
    is_int(kiln_proc_run(&o, &status, &err), -KILN_ECANCELLED, "cancel kills the group");
    kiln_error_freep(&err);
    o.cancelled = NULL;

    const char *a4[] = {"kiln-no-such-program", NULL};
    o.argv = a4;
    is_int(kiln_proc_run(&o, &status, &err), -KILN_ENOTFOUND, "missing program");
    ok(err && strstr(err->msg, "kiln-no-such-program"), "names the program");
    kiln_error_freep(&err);

    const char *a5[] = {"sh", "-c", "kill -9 $$", NULL};
    o.argv = a5;
    is_int(kiln_proc_run(&o, &status, &err), 0, "killed child");
    is_int(status, 128 + 9, "signal status");

    const char *envp[] = {"KILN_X=42", NULL};
    const char *a6[] = {"/bin/sh", "-c", "echo \"$KILN_X\"; pwd", NULL};
    kiln_buf_reset(&b);
    o.argv = a6;
    o.envp = envp;
    o.cwd = "/tmp";
    is_int(kiln_proc_run(&o, &status, &err), 0, "env and cwd");
    is_str(b.buf, "1:42|1:/tmp|", "the given environment and directory");
    kiln_buf_release(&b);
    return tap_done();
}
