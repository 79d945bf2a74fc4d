/* libFuzzer target for proto/: the input is fed to the incremental scanner
 * in small chunks (sizes taken from the input itself, to exercise partial
 * reads), and every complete message goes through envelope decoding, method
 * lookup and parameter validation, as the daemon's dispatcher does. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"

static void handle(const uint8_t *msg, size_t len) {
        rpc_message m;
        _cleanup_error_ rpc_error err = {};
        if (rpc_message_decode(&m, msg, len, &err) == 0 && m.type == RPC_REQUEST) {
                const rpc_method *method = rpc_method_find(m.method, m.method_len);
                rpc_params_any args;
                if (method && rpc_params_decode(method, m.params, m.unpacked.zone, &args, &err) == 0) {
                        /* Exercise the decoded struct as the audit hook reads it. */
                        const char *id = rpc_params_str(method, &args, "id");
                        if (id)
                                (void) strlen(id);
                }
        }
        rpc_message_done(&m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        proto_limits lim;
        proto_limits_default(&lim);
        lim.max_message = 64 * 1024;
        if (size < 1)
                return 0;
        /* First byte: chunk size for feeding. */
        size_t chunk = (size_t) (data[0] % 17) + 1;
        data++;
        size--;

        uint8_t *buf = malloc(size + 1);
        size_t have = 0, start = 0;
        proto_scanner s;
        proto_scanner_reset(&s);
        size_t fed = 0;
        while (fed < size) {
                size_t n = size - fed < chunk ? size - fed : chunk;
                memcpy(buf + have, data + fed, n);
                have += n;
                fed += n;
                for (;;) {
                        size_t msglen;
                        proto_scan_error e;
                        int r = proto_scan(&s, &lim, buf + start, have - start, &msglen, &e);
                        if (r < 0)
                                goto out;
                        if (r == 0)
                                break;
                        handle(buf + start, msglen);
                        start += msglen;
                        proto_scanner_reset(&s);
                }
        }
out:
        free(buf);
        return 0;
}
