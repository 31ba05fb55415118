/*
 * Run a build step's process in an OCI runtime (runc or crun), as a program
 * with a generated bundle.
 *
 * The bundle's config.json (OCI runtime spec 1.0.2) gives the process new
 * pid, ipc, uts and mount namespaces (and a network namespace with only
 * loopback unless host_network), docker's default capabilities for uid 0 and
 * none at all (plus no_new_privileges) for other users, docker's masked and
 * read-only paths, and NO cgroup settings: no cgroup namespace, no
 * cgroupsPath, no resources (crun and cgroup limits do not work with the
 * hybrid cgroup layouts kiln meets; runc then uses its default cgroups).
 * No seccomp profile. RLIMIT_NOFILE is 1048576 (soft and hard), lowered
 * to the kernel's fs.nr_open and, when the caller lacks CAP_SYS_RESOURCE
 * (root inside a restricted container), to the caller's own hard limit:
 * the runtime could not raise it and would fail to start the container.
 *
 * The runtime creates missing mount points in the root file system (/proc,
 * /sys, /dev, /etc/resolv.conf, /etc/hosts, bind destinations, the cwd):
 * when the root is an overlay, they show up in its upper directory.
 *
 * The library never reads the environment: the runtime runs with a fixed
 * PATH, and is looked up in fixed directories (KILN_RUNTIME_PATH).
 */
#ifndef KILN_BUILD_RUNTIME_H
#define KILN_BUILD_RUNTIME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kiln/error.h"
#include "util/proc.h"

#define KILN_RUNTIME_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

struct kiln_bind {
    const char *source;      /* absolute host path */
    const char *destination; /* absolute path in the container */
    bool readonly;
};

struct kiln_run_options {
    const char *runtime;    /* program name or path ("runc", "/usr/bin/crun"); NULL: detect */
    const char *state_dir;  /* the runtime's --root (created when missing) */
    const char *bundle_dir; /* an existing empty scratch dir: config.json and runtime-log.json
                               (the runtime's JSON log) go here */
    const char *rootfs;     /* absolute path of the root file system (an overlay merged dir) */
    bool readonly_rootfs;
    const char *id;          /* container id ([A-Za-z0-9_.+-], at most 128 characters); NULL:
                                "kiln-<pid>-<counter>-<random>" */
    const char *const *argv; /* process args, as given (never through a shell here) */
    const char *const *env;  /* "NAME=value" entries, NULL-terminated; NULL: only
                                "PATH=" KILN_RUNTIME_PATH (no PATH is added otherwise) */
    const char *cwd;         /* NULL: "/" */
    uint32_t uid, gid;       /* process user */
    const uint32_t *additional_gids;
    size_t n_additional_gids;
    const char *hostname;          /* NULL: "kiln" */
    bool host_network;             /* share the host's network namespace; bind /etc/resolv.conf and
                                      /etc/hosts read-only from the host when they exist */
    const struct kiln_bind *binds; /* extra bind mounts (e.g. caches), after the host files */
    size_t n_binds;
    long timeout_ms;                  /* 0: none */
    int (*cancelled)(void *userdata); /* polled about 10 times a second; nonzero cancels */
    void (*on_line)(void *userdata, enum kiln_proc_stream stream, const char *line, size_t len);
    void *userdata;
};

/*
 * Pick the runtime program: `forced` (a name looked up in KILN_RUNTIME_PATH,
 * or a path) must exist and run `--version` successfully; when NULL: crun
 * when /sys/fs/cgroup is a pure cgroup2 mount (statfs magic) and crun is
 * found in KILN_RUNTIME_PATH, else runc, else crun. *ret is an absolute path
 * (the caller frees it). Errors: -KILN_ENOTFOUND "no OCI runtime found
 * (install runc or crun)" or "OCI runtime 'x' not found"; -KILN_EIO when
 * the forced program's `--version` fails.
 */
int kiln_runtime_detect(const char *forced, char **ret, struct kiln_error **err);

/*
 * Write the bundle's config.json for these options (exposed for tests and
 * logs), atomically. -KILN_EINVAL for a relative rootfs, bind path or cwd,
 * an empty argv, an env entry without '=', or a string that is not UTF-8;
 * -KILN_EIO when the file cannot be written.
 */
int kiln_runtime_write_config(const struct kiln_run_options *o, struct kiln_error **err);

/*
 * Write config.json, run `RUNTIME --root STATE --log LOG --log-format json
 * run --bundle BUNDLE ID` with kiln_proc_run (the process's stdout and
 * stderr lines go to on_line, stdin is /dev/null), then always `RUNTIME
 * --root STATE delete --force ID`.
 *
 * Returns 0 and the process's exit status (0-255, 128+signal) in
 * *ret_status. On timeout or cancel, the container is killed with `RUNTIME
 * kill ID KILL` (pid 1 ignores SIGTERM) and the runtime's process group is
 * stopped; then -KILN_ETIMEOUT / -KILN_ECANCELLED. When the runtime fails to
 * start the container (its JSON log has an error entry and the exit status
 * is not 0): -KILN_ENOTFOUND when the program in argv does not exist in the
 * root file system ("no such file or directory", "executable file not
 * found"), else -KILN_EIO, with the runtime's error message. A missing or
 * broken runtime program is -KILN_ENOTFOUND / -KILN_EIO too.
 */
int kiln_runtime_run(const struct kiln_run_options *o, int *ret_status, struct kiln_error **err);

#endif
