/* Prints the method list of proto/PROTOCOL.md from the method table, so the
 * reference cannot drift from the code (a test compares the two). */
#include <stdio.h>

#include "proto.h"

static void print_params(const rpc_method *m) {
        if (m->n_params == 0) {
                fputs("—", stdout);
                return;
        }
        const rpc_param_desc *t = rpc_method_params(m);
        for (size_t i = 0; i < m->n_params; i++)
                printf("%s`%s`: %s%s", i ? ", " : "", t[i].key, rpc_param_type_to_string(t[i].type),
                       t[i].optional ? " (optional)" : "");
}

int main(void) {
        printf("| method | params | agentctl | result | flags |\n| --- | --- | --- | --- | --- |\n");
        for (size_t i = 0; i < _RPC_METHOD_MAX; i++) {
                const rpc_method *m = &rpc_methods[i];
                printf("| `%s` | ", m->name);
                print_params(m);
                printf(" | `agentctl %s` | %s | %s%s |\n", m->cli, m->summary,
                       m->flags & RPC_HOST_ONLY ? "host-only " : m->flags & RPC_SANDBOX_ONLY ? "sandbox-only " : "",
                       m->flags & RPC_ASYNC ? "async" : "");
        }
        return 0;
}
