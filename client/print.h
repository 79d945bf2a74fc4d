/* Printing RPC results: JSON (--json) and plain text for people. */
#pragma once

#include <msgpack.h>

void print_json(const msgpack_object *o);
void print_human(const msgpack_object *o);
void print_nothing(const msgpack_object *o);
void print_task_list(const msgpack_object *o);
void print_sandbox_list(const msgpack_object *o);
void print_approval_list(const msgpack_object *o);
