/* TPM jobs: a detached thread per job, a uv_async back to the loop and a
 * deadline timer. See tpmjob.h for why not uv_queue_work. */
#include "tpmjob.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

#include "macro.h"

struct tpm_job {
        uv_async_t async;          /* loop side, closed by the loop */
        uv_timer_t deadline;
        uv_loop_t *loop;
        pthread_mutex_t lock;
        bool finished, abandoned, late;
        int refs;                  /* the thread + the two handles */
        const char *what;
        uint64_t started;          /* uv_now at start */
        tpm_job_fn work, late_cb, done, discard;
        void *arg;
        struct tpm_job *next;      /* outstanding jobs (loop thread only) */
};

static tpm_job *outstanding;

/* One TPM operation at a time: without a resource manager (swtpm, /dev/tpm0)
 * two threads each loading a primary and a sealed object exhaust the TPM's
 * object slots (TPM_RC_OBJECT_MEMORY). Jobs queue here, on their threads. */
static pthread_mutex_t tpm_lock = PTHREAD_MUTEX_INITIALIZER;

static void job_unref(tpm_job *j) {
        if (__atomic_sub_fetch(&j->refs, 1, __ATOMIC_ACQ_REL) == 0) {
                pthread_mutex_destroy(&j->lock);
                free(j);
        }
}

static void unlist(tpm_job *j) {
        for (tpm_job **p = &outstanding; *p; p = &(*p)->next)
                if (*p == j) {
                        *p = j->next;
                        return;
                }
}

static void on_handle_closed(uv_handle_t *h) {
        job_unref(h->data);
}

static void close_handles(tpm_job *j) {
        uv_timer_stop(&j->deadline);
        unlist(j);
        uv_close((uv_handle_t *) &j->async, on_handle_closed);
        uv_close((uv_handle_t *) &j->deadline, on_handle_closed);
}

static void *job_thread(void *p) {
        tpm_job *j = p;
        pthread_mutex_lock(&tpm_lock);
        j->work(j->arg);
        pthread_mutex_unlock(&tpm_lock);
        pthread_mutex_lock(&j->lock);
        j->finished = true;
        bool abandoned = j->abandoned;
        if (!abandoned)
                uv_async_send(&j->async);
        pthread_mutex_unlock(&j->lock);
        if (abandoned)
                j->discard(j->arg);
        job_unref(j);
        return NULL;
}

static void on_finished(uv_async_t *a) {
        tpm_job *j = container_of(a, tpm_job, async);
        close_handles(j);
        j->done(j->arg);
}

static void on_deadline(uv_timer_t *t) {
        tpm_job *j = container_of(t, tpm_job, deadline);
        j->late = true;
        if (j->late_cb)
                j->late_cb(j->arg);
}

int tpm_job_start(uv_loop_t *loop, const char *what, uint64_t deadline_ms, tpm_job_fn work, tpm_job_fn late,
                  tpm_job_fn done, tpm_job_fn discard, void *arg, tpm_job **ret) {
        tpm_job *j = calloc(1, sizeof(*j));
        if (!j)
                return -ENOMEM;
        j->loop = loop;
        j->what = what;
        j->work = work;
        j->late_cb = late;
        j->done = done;
        j->discard = discard;
        j->arg = arg;
        j->refs = 3;
        j->started = uv_now(loop);
        pthread_mutex_init(&j->lock, NULL);
        uv_async_init(loop, &j->async, on_finished);
        uv_timer_init(loop, &j->deadline);
        j->async.data = j->deadline.data = j;

        pthread_attr_t attr;
        pthread_t tid;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        int r = pthread_create(&tid, &attr, job_thread, j);
        pthread_attr_destroy(&attr);
        if (r != 0) {
                j->refs = 2;
                uv_close((uv_handle_t *) &j->async, on_handle_closed);
                uv_close((uv_handle_t *) &j->deadline, on_handle_closed);
                return -r;
        }
        uv_timer_start(&j->deadline, on_deadline, deadline_ms, 0);
        j->next = outstanding;
        outstanding = j;
        if (ret)
                *ret = j;
        return 0;
}

void tpm_job_abandon(tpm_job *j) {
        if (!j)
                return;
        pthread_mutex_lock(&j->lock);
        j->abandoned = true;
        bool finished = j->finished;
        pthread_mutex_unlock(&j->lock);
        /* Finished but not yet heard: its async callback will not run once closed. */
        if (finished)
                j->discard(j->arg);
        close_handles(j);
}

uint64_t tpm_jobs_late_ms(const char **ret_what) {
        uint64_t worst = 0;
        for (tpm_job *j = outstanding; j; j = j->next) {
                if (!j->late)
                        continue;
                uint64_t waited = uv_now(j->loop) - j->started;
                if (waited > worst) {
                        worst = waited;
                        if (ret_what)
                                *ret_what = j->what;
                }
        }
        return worst;
}
