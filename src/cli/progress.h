/*
 * Transfer progress on the terminal, for copy, pull and push.
 *
 * On a terminal (isatty of the stream): one live line per blob in flight
 * (short digest, bytes / size, rate) and a totals line, redrawn at most
 * every CLI_PROGRESS_REDRAW_MS (at once when a blob starts or ends); a
 * finished blob leaves one permanent line ("done", "exists", "mounted",
 * "failed"). Lines are cut to the terminal width. Elsewhere (a pipe, a log
 * file) nothing is printed while the transfer runs; cli_progress_finish()
 * prints one summary line in both cases. Quiet: nothing at all.
 */
#ifndef KILN_CLI_PROGRESS_H
#define KILN_CLI_PROGRESS_H

#include <stdbool.h>
#include <stdio.h>

#include "registry/transfer.h"

#define CLI_PROGRESS_REDRAW_MS 100

struct cli_progress;

/* `verb` names the operation in the summary ("copied", "pulled", "pushed"). */
struct cli_progress *cli_progress_new(FILE *f, bool quiet, const char *verb);

/*
 * Force terminal (1) or plain (0) output regardless of isatty; -1 restores
 * the automatic choice. For tests (KILN_PROGRESS=tty|plain in the program).
 */
void cli_progress_set_tty(struct cli_progress *p, int tty);

/*
 * The kiln_transfer_progress callback (userdata: the struct cli_progress).
 * Returns nonzero once the program was interrupted (SIGINT/SIGTERM), which
 * cancels the transfer.
 */
int cli_progress_event(void *userdata, const struct kiln_transfer_event *ev);

/* Clear the live lines and print the summary (res NULL: the transfer failed). */
void cli_progress_finish(struct cli_progress *p, const struct kiln_transfer_result *res);

void cli_progress_free(struct cli_progress *p);

/* "12.3 MiB" style sizes into buf. */
void cli_progress_format_size(char *buf, size_t len, uint64_t bytes);

#endif
