/* agentctl report: a sandbox's story (the sandbox.report result) for people:
 * terminal text, or one self-contained HTML file. */
#pragma once

#include <msgpack.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

/* Small readers over a msgpack map; NULL / defaults when absent or of another type. */
const msgpack_object *rep_get(const msgpack_object *map, const char *key);
/* A string member as a NUL-terminated copy in buf (truncated to size), or def. */
const char *rep_str(const msgpack_object *map, const char *key, char *buf, size_t size, const char *def);
int64_t rep_int(const msgpack_object *map, const char *key, int64_t def);
bool rep_bool(const msgpack_object *map, const char *key);
size_t rep_len(const msgpack_object *o);          /* array or map size, 0 otherwise */
/* Whether the report's records all verified (the exit status follows it). */
bool report_verified(const msgpack_object *report);

void report_print_text(FILE *f, const msgpack_object *report);
void report_print_html(FILE *f, const msgpack_object *report);
