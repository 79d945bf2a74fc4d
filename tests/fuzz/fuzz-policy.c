/* libFuzzer target for the task-file parser: the input is a whole file. Also runs
 * the capability and canonical views on whatever parses, and the seccomp profile
 * file parser on the same bytes. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "macro.h"
#include "policy.h"
#include "seccomp-profiles.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_task_policy_ task_policy *p = NULL;
        _cleanup_(seccomp_profile_file_freep) seccomp_profile_file *f = NULL;
        policy_error e = {};

        if (policy_parse_buffer((const char *) data, size, "fuzz.task", "fuzz", "/home/fuzz", &p, &e) == 0) {
                _cleanup_task_policy_ task_policy *c = NULL;
                char **caps = task_policy_capabilities(p);
                free(task_policy_canonical(p));
                strv_free(caps);
                if (task_policy_copy(p, &c) == 0)
                        free(task_policy_canonical(c));
        }
        (void) seccomp_profile_parse_buffer((const char *) data, size, "/fuzz.seccomp", &f, &e);
        return 0;
}
