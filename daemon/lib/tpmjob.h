/* TPM work off the loop thread, with a deadline. A TPM that is stopped (a
 * SIGSTOPped swtpm, a wedged device) blocks its caller for as long as it
 * stays stopped, so each job runs on its own detached thread rather than in
 * libuv's pool (a stuck pool thread starves every other uv_queue_work, and
 * libuv joins its pool at exit). The loop hears the outcome through a
 * uv_async; when the deadline passes first it is told so and the job keeps
 * running: a TPM that comes back still completes it, and then `done` runs.
 * Jobs run one at a time (in the order their threads get the TPM lock): the
 * deadline counts from the start, so a job queued behind a hung one is late too. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

/* How long a TPM operation may take before status calls the TPM unavailable.
 * swtpm answers in milliseconds; a hardware TPM's slowest command we use
 * (CreatePrimary, ECC P-256) in well under a second. */
#define TPM_JOB_DEADLINE_MS 10000

typedef struct tpm_job tpm_job;
typedef void (*tpm_job_fn)(void *arg);

/* `work` runs on the job's thread; `late` (may be NULL) on the loop when the
 * deadline passes before `work` returned; `done` on the loop once it returned
 * (also after `late`); `discard` frees `arg` when the job was abandoned (on
 * whichever thread finishes last). `what` names the job for status ("unsealing
 * the audit key"); it must outlive the job. */
int tpm_job_start(uv_loop_t *loop, const char *what, uint64_t deadline_ms, tpm_job_fn work, tpm_job_fn late,
                  tpm_job_fn done, tpm_job_fn discard, void *arg, tpm_job **ret);
/* Shutdown: neither `late` nor `done` will run; `arg` goes to `discard`. NULL is a no-op. */
void tpm_job_abandon(tpm_job *j);

/* Milliseconds the oldest job past its deadline has been waiting (0: none is
 * late), and what it is doing. For status: a TPM that does not answer. */
uint64_t tpm_jobs_late_ms(const char **ret_what);
