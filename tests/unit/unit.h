/* The one way a unit test's main() runs its suite: Check's normal output,
 * the exit status from the number of failed tests. */
#pragma once

#include <check.h>
#include <stdbool.h>
#include <stdlib.h>

/* Runs `s` (the runner takes it over); nofork runs the tests in this
 * process (CK_NOFORK), otherwise Check's default (CK_FORK unless the
 * environment says otherwise). EXIT_SUCCESS or EXIT_FAILURE. */
static inline int unit_run(Suite *s, bool nofork) {
        SRunner *sr = srunner_create(s);
        int failed;

        if (nofork)
                srunner_set_fork_status(sr, CK_NOFORK);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
