#include "globalopts.h"

#include <stdio.h>
#include <string.h>

/* Subcommand options whose value is the next word (never taken for a global option). */
static const char *const value_options[] = {
        "--task", "--workspace", "--signal", "--sandbox", "--limit", "--role-id", "--secret-id-file",
};

static bool takes_value(const char *a) {
        for (size_t i = 0; i < sizeof(value_options) / sizeof(value_options[0]); i++)
                if (strcmp(a, value_options[i]) == 0)
                        return true;
        return false;
}

int global_options_extract(int argc, char **argv, bool *json, const char **socket) {
        bool spawn = argc > 0 && strcmp(argv[0], "spawn") == 0;
        int out = 1, i = 1;
        for (; i < argc; i++) {
                const char *a = argv[i];
                if (strcmp(a, "--") == 0 || (spawn && a[0] != '-'))
                        break;
                if (strcmp(a, "--json") == 0) {
                        *json = true;
                        continue;
                }
                if (strncmp(a, "--socket=", 9) == 0) {
                        *socket = a + 9;
                        continue;
                }
                if (strcmp(a, "--socket") == 0) {
                        if (i + 1 >= argc) {
                                fprintf(stderr, "agentctl: --socket needs a path\n");
                                return -1;
                        }
                        *socket = argv[++i];
                        continue;
                }
                argv[out++] = argv[i];
                if (takes_value(a) && i + 1 < argc)
                        argv[out++] = argv[++i];
        }
        for (; i < argc; i++)
                argv[out++] = argv[i];
        argv[out] = NULL;
        return out;
}
