/* How a sandbox sees its workspace: one enum for the task files (policy/),
 * the daemon and the spec it hands the helper (helper/spec.def). */
#pragma once

#include <string.h>

typedef enum workspace_mode {
        WORKSPACE_OVERLAY,
        WORKSPACE_RO,
        WORKSPACE_RW,
        WORKSPACE_NONE,
} workspace_mode;

/* Not in the enum: switches over it name every mode without a default. */
#define _WORKSPACE_MODE_MAX (WORKSPACE_NONE + 1)

/* The spelling in task files (Workspace Mode=) and in the spec. */
static inline const char *workspace_mode_to_string(workspace_mode m) {
        static const char *const names[_WORKSPACE_MODE_MAX] = {
                [WORKSPACE_OVERLAY] = "overlay", [WORKSPACE_RO] = "ro", [WORKSPACE_RW] = "rw", [WORKSPACE_NONE] = "none",
        };
        return (unsigned) m < _WORKSPACE_MODE_MAX ? names[m] : NULL;
}

/* -EINVAL for an unknown spelling. */
static inline int workspace_mode_from_string(const char *s) {
        for (int m = 0; m < _WORKSPACE_MODE_MAX; m++)
                if (strcmp(s, workspace_mode_to_string((workspace_mode) m)) == 0)
                        return m;
        return -22; /* -EINVAL, without <errno.h> in every includer */
}
