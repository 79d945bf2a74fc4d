/* core/tasks.c on a composed daemon (fixture.h): the registry that task.list,
 * task.show and task.check answer from, what a broken file looks like, and the
 * reload that a change in the task directory starts. */
#include <check.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "daemon.h"
#include "fixture.h"
#include "unit.h"

static fixture f;

static const char good_task[] =
        "[Task]\nDescription=unit test task\nCommand=/bin/true\n\n[Network]\nMode=none\n";

/* The entry named `name` in a task.list result, or NULL. */
static const msgpack_object *find_task(const msgpack_object *list, const char *name) {
        ck_assert_int_eq(list->type, MSGPACK_OBJECT_ARRAY);
        for (uint32_t i = 0; i < list->via.array.size; i++) {
                char buf[256];
                const char *n = fixture_get_str(&list->via.array.ptr[i], "name", buf, sizeof(buf));
                if (n && strcmp(n, name) == 0)
                        return &list->via.array.ptr[i];
        }
        return NULL;
}

static bool has_task(const char *name, bool *ret_error) {
        int c = fixture_connect(&f);
        fixture_reply r;
        ck_assert(fixture_call(&f, c, "task.list", NULL, NULL, &r));
        const msgpack_object *t = find_task(r.result, name);
        if (ret_error)
                *ret_error = t && fixture_get(t, "error");
        fixture_reply_free(&r);
        close(c);
        return t != NULL;
}

START_TEST(test_list_has_builtin_and_user_tasks) {
        fixture_init(&f);
        fixture_write_task(&f, "unit", good_task);
        fixture_start(&f, NULL);
        bool broken = true;
        ck_assert(has_task("unit", &broken));
        ck_assert(!broken);
        ck_assert(has_task("build", NULL));   /* built in */
        ck_assert(!has_task("nosuch", NULL));
        fixture_stop(&f);
}
END_TEST

START_TEST(test_broken_file_is_listed_with_its_error) {
        fixture_init(&f);
        fixture_write_task(&f, "bad", "[Task]\nNoSuchKey=1\n");
        fixture_start(&f, NULL);
        bool broken = false;
        ck_assert(has_task("bad", &broken));
        ck_assert(broken);
        /* A broken file is not a task one can show: its error is the answer. */
        int c = fixture_connect(&f);
        fixture_reply r;
        ck_assert(!fixture_call_str(&f, c, &r, "task.show", "name", "bad", NULL));
        ck_assert_str_eq(r.code, "invalid_params");
        ck_assert_ptr_nonnull(strstr(r.message, "is broken"));
        ck_assert_ptr_nonnull(strstr(r.message, "NoSuchKey"));
        fixture_reply_free(&r);
        fixture_call_fails(&f, c, "not_found", "task.show", "name", "nosuch", NULL);
        close(c);
        fixture_stop(&f);
}
END_TEST

START_TEST(test_show_gives_the_policy) {
        fixture_init(&f);
        fixture_write_task(&f, "unit", good_task);
        fixture_start(&f, NULL);
        int c = fixture_connect(&f);
        fixture_reply r;
        ck_assert(fixture_call_str(&f, c, &r, "task.show", "name", "unit", NULL));
        char buf[256];
        ck_assert_ptr_nonnull(fixture_get_str(fixture_get(r.result, "Task"), "Description", buf, sizeof(buf)));
        ck_assert_str_eq(buf, "unit test task");
        fixture_reply_free(&r);
        close(c);
        fixture_stop(&f);
}
END_TEST

START_TEST(test_check_refuses_a_hostile_file_and_changes_nothing) {
        fixture_init(&f);
        fixture_start(&f, NULL);
        int c = fixture_connect(&f);
        fixture_reply r;
        ck_assert(!fixture_call_str(&f, c, &r, "task.check", "text", "[Task]\nCommand=/bin/true\n[Filesystem]\nWorkspace=maybe\n",
                                    "name", "hostile", NULL));
        ck_assert_str_eq(r.code, "invalid_params");
        fixture_reply_free(&r);
        close(c);
        ck_assert(!has_task("hostile", NULL));
        fixture_stop(&f);
}
END_TEST

static int reloads;
static void count_reload(manager *m, void *userdata) {
        (void) m;
        (void) userdata;
        reloads++;
}

static bool unit2_listed(void *arg) {
        (void) arg;
        return has_task("unit2", NULL);
}

START_TEST(test_a_new_file_is_picked_up_and_the_hook_runs) {
        fixture_init(&f);
        fixture_start(&f, NULL);
        ck_assert(!has_task("unit2", NULL));
        reloads = 0;
        tasks_set_reload_hook(count_reload, NULL);
        fixture_write_task(&f, "unit2", good_task);
        ck_assert(fixture_run_until(&f, 5000, unit2_listed, NULL));
        ck_assert_int_ge(reloads, 1);
        fixture_stop(&f);
}
END_TEST

START_TEST(test_errors_counted_for_check_config) {
        fixture_init(&f);
        fixture_write_task(&f, "bad1", "[Task]\nCommand=\n[Network]\nMode=sometimes\n");
        fixture_write_task(&f, "bad2", "not an ini file at all\x01\n");
        fixture_write_task(&f, "fine", good_task);
        fixture_start(&f, NULL);
        ck_assert_uint_eq(tasks_n_errors(&f.m), 2);
        fixture_stop(&f);
}
END_TEST

int main(void) {
        Suite *s = suite_create("tasks");
        TCase *tc = tcase_create("tasks");
        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_list_has_builtin_and_user_tasks);
        tcase_add_test(tc, test_broken_file_is_listed_with_its_error);
        tcase_add_test(tc, test_show_gives_the_policy);
        tcase_add_test(tc, test_check_refuses_a_hostile_file_and_changes_nothing);
        tcase_add_test(tc, test_a_new_file_is_picked_up_and_the_hook_runs);
        tcase_add_test(tc, test_errors_counted_for_check_config);
        suite_add_tcase(s, tc);
        return unit_run(s, false);
}
