/* Prints the method list of proto/PROTOCOL.md from the method table, so the
 * reference cannot drift from the code (a test compares the two). */
#include <stdio.h>
#include <string.h>

#include "proto.h"

static void print_params(const char *spec) {
        if (!*spec) {
                fputs("—", stdout);
                return;
        }
        const char *p = spec;
        bool first = true;
        while (*p) {
                while (*p == ' ')
                        p++;
                if (!*p)
                        break;
                const char *key = p;
                while (*p && *p != ':')
                        p++;
                int keylen = (int) (p - key);
                char t = p[1];
                p += 2;
                bool opt = *p == '?';
                if (opt)
                        p++;
                const char *tn = t == 's' ? "string" : t == 'b' ? "bool" : t == 'u' ? "uint" : t == 'i' ? "int" :
                                 t == 'S' ? "[string]" : t == 'M' ? "{string: string}" : "any";
                printf("%s`%.*s`: %s%s", first ? "" : ", ", keylen, key, tn, opt ? " (optional)" : "");
                first = false;
        }
}

int main(void) {
        printf("| method | params | agentctl | result | flags |\n| --- | --- | --- | --- | --- |\n");
        for (size_t i = 0; i < _RPC_METHOD_MAX; i++) {
                const rpc_method *m = &rpc_methods[i];
                printf("| `%s` | ", m->name);
                print_params(m->params);
                printf(" | `agentctl %s` | %s | %s%s |\n", m->cli, m->summary,
                       m->flags & RPC_HOST_ONLY ? "host-only " : m->flags & RPC_SANDBOX_ONLY ? "sandbox-only " : "",
                       m->flags & RPC_ASYNC ? "async" : "");
        }
        return 0;
}
