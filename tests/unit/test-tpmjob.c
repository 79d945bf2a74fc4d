/* tpmjob: work runs off the loop; `late` fires at the deadline while the work
 * continues and `done` still runs when it returns; an abandoned job's argument
 * goes to `discard` and the loop closes cleanly. */
#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>
#include <uv.h>

#include "tpmjob.h"
#include "unit.h"

typedef struct job_arg {
        pthread_t loop_thread;
        bool ran_off_loop;
        useconds_t sleep_us;
        int late, done;
        atomic_int discarded;
        atomic_bool release;     /* a "stopped TPM": work waits until released */
        bool wait_for_release;
} job_arg;

static void work(void *p) {
        job_arg *a = p;
        a->ran_off_loop = !pthread_equal(pthread_self(), a->loop_thread);
        if (a->sleep_us)
                usleep(a->sleep_us);
        while (a->wait_for_release && !atomic_load(&a->release))
                usleep(1000);
}

static void late(void *p) {
        ((job_arg *) p)->late++;
}

static void done(void *p) {
        ((job_arg *) p)->done++;
}

static void discard(void *p) {
        atomic_fetch_add(&((job_arg *) p)->discarded, 1);
}

START_TEST(test_done_before_deadline) {
        uv_loop_t loop;
        ck_assert_int_eq(uv_loop_init(&loop), 0);
        job_arg a = { .loop_thread = pthread_self() };
        tpm_job *j = NULL;
        ck_assert_int_eq(tpm_job_start(&loop, "test", 5000, work, late, done, discard, &a, &j), 0);
        ck_assert_ptr_nonnull(j);
        uv_run(&loop, UV_RUN_DEFAULT);
        ck_assert(a.ran_off_loop);
        ck_assert_int_eq(a.done, 1);
        ck_assert_int_eq(a.late, 0);
        ck_assert_int_eq(atomic_load(&a.discarded), 0);
        ck_assert_uint_eq(tpm_jobs_late_ms(NULL), 0);
        ck_assert_int_eq(uv_loop_close(&loop), 0);
}
END_TEST

static job_arg *late_arg;

static void check_late(uv_timer_t *t) {
        const char *what = NULL;
        ck_assert_int_eq(late_arg->late, 1);
        ck_assert_uint_ge(tpm_jobs_late_ms(&what), 50);
        ck_assert_str_eq(what, "stuck");
        atomic_store(&late_arg->release, true);
        uv_close((uv_handle_t *) t, NULL);
}

START_TEST(test_late_then_done) {
        uv_loop_t loop;
        ck_assert_int_eq(uv_loop_init(&loop), 0);
        job_arg a = { .loop_thread = pthread_self(), .wait_for_release = true };
        late_arg = &a;
        ck_assert_int_eq(tpm_job_start(&loop, "stuck", 50, work, late, done, discard, &a, NULL), 0);
        uv_timer_t t;
        uv_timer_init(&loop, &t);
        uv_timer_start(&t, check_late, 300, 0);
        uv_run(&loop, UV_RUN_DEFAULT);
        ck_assert_int_eq(a.late, 1);
        ck_assert_int_eq(a.done, 1);
        ck_assert_uint_eq(tpm_jobs_late_ms(NULL), 0);
        ck_assert_int_eq(uv_loop_close(&loop), 0);
}
END_TEST

START_TEST(test_abandon_discards) {
        uv_loop_t loop;
        ck_assert_int_eq(uv_loop_init(&loop), 0);
        job_arg *a = calloc(1, sizeof(*a));
        a->loop_thread = pthread_self();
        a->wait_for_release = true;
        tpm_job *j = NULL;
        ck_assert_int_eq(tpm_job_start(&loop, "stuck", 10000, work, late, done, discard, a, &j), 0);
        tpm_job_abandon(j);
        /* The loop ends although the work is still stuck. */
        uv_run(&loop, UV_RUN_DEFAULT);
        ck_assert_int_eq(uv_loop_close(&loop), 0);
        ck_assert_int_eq(atomic_load(&a->discarded), 0);
        atomic_store(&a->release, true);
        for (int i = 0; i < 2000 && atomic_load(&a->discarded) == 0; i++)
                usleep(1000);
        ck_assert_int_eq(atomic_load(&a->discarded), 1);
        ck_assert_int_eq(a->done, 0);
        ck_assert_int_eq(a->late, 0);
        free(a);
}
END_TEST

static Suite *tpmjob_suite(void) {
        Suite *s = suite_create("tpmjob");
        TCase *tc = tcase_create("core");
        tcase_set_timeout(tc, 30);
        tcase_add_test(tc, test_done_before_deadline);
        tcase_add_test(tc, test_late_then_done);
        tcase_add_test(tc, test_abandon_discards);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return unit_run(tpmjob_suite(), false);
}
