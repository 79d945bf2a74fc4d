#pragma once
#include <stdbool.h>

/* Global options also work after the command (agentctl ps --json, as with podman and
 * systemctl): removes --json, --socket PATH and --socket=PATH from argv[1..argc), stopping
 * at "--" and, for spawn, at the command to run. Returns the new argc, or -1 (message
 * printed) for --socket without a path. */
int global_options_extract(int argc, char **argv, bool *json, const char **socket);
