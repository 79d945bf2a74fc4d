/* agentd.ping and agentd.status. */
#include "agentd-build.h"
#include <dirent.h>
#include <string.h>

#include "audit/auditlog.h"
#include "broker/broker.h"
#include "core/config.h"
#include "macro.h"
#include "core/manager.h"
#include "sandbox/sandbox.h"
#include "core/server.h"
#include "audit/telemetry.h"

int rpc_agentd_ping(rpc_ctx *ctx, const rpc_agentd_ping_params *p, rpc_error *err) {
        msgpack_packer *pk = ctx->pk;
        msgpack_pack_map(pk, 3);
        mp_pack_kv_str(pk, "version", AGENTD_VERSION);
        mp_pack_kv_u64(pk, "protocol", AGENTD_PROTOCOL_VERSION);
        mp_pack_kv_u64(pk, "uptime_ms", now_msec() - ctx->m->start_msec);
        return 0;
}


static uint64_t count_open_fds(void) {
        DIR *d = opendir("/proc/self/fd");
        uint64_t n = 0;
        if (!d)
                return 0;
        for (struct dirent *de; (de = readdir(d));)
                n += de->d_name[0] != '.';
        closedir(d);
        return n > 0 ? n - 1 : 0;   /* not the one opendir() holds */
}

int rpc_agentd_status(rpc_ctx *ctx, const rpc_agentd_status_params *p, rpc_error *err) {
        manager *m = ctx->m;
        msgpack_packer *pk = ctx->pk;

        /* sandboxes: those not ended; sandboxes_listed: what sandbox.list shows
         * (ended ones too, up to the in-memory bound). */
        unsigned active = 0;
        list_head *i, *t;
        list_for_each_safe(i, t, sandbox_list(m))
                active += !sandbox_ended(container_of(i, sandbox, link));
        msgpack_pack_map(pk, 19);
        mp_pack_kv_str(pk, "version", AGENTD_VERSION);
        mp_pack_kv_u64(pk, "protocol", AGENTD_PROTOCOL_VERSION);
        mp_pack_kv_u64(pk, "uptime_ms", now_msec() - m->start_msec);
        mp_pack_kv_u64(pk, "sandboxes", active);
        mp_pack_kv_u64(pk, "sandboxes_listed", sandbox_count(m));
        mp_pack_kv_u64(pk, "warm_sandboxes", pool_count());
        mp_pack_kv_u64(pk, "plan_cache_builds", plan_cache_builds());
        mp_pack_kv_bool(pk, "locked_down", sandbox_locked_down(m));
        mp_pack_kv_str(pk, "vault", broker_vault_state(m));
        mp_pack_kv_str(pk, "tpm", broker_tpm_state(m));
        mp_pack_kv_u64(pk, "revocations_pending", broker_revocations_pending(m));
        mp_pack_kv_str(pk, "audit", auditlog_state(m));
        mp_pack_kv_str(pk, "cgroup", sandbox_cgroup_status(m) ? sandbox_cgroup_status(m) : "unavailable: not set up");
        mp_pack_kv_str(pk, "cgroup_controllers", sandbox_cgroup_controllers(m) ? sandbox_cgroup_controllers(m) : "");
        mp_pack_kv_u64(pk, "connections", m->n_connections);
        /* agentd is not dumpable, so its user cannot list /proc/PID/fd: say it here. */
        mp_pack_kv_u64(pk, "open_fds", count_open_fds());
        mp_pack_kv_str(pk, "state_directory", m->config->state_directory);
        mp_pack_kv_str(pk, "socket", m->socket_path ? m->socket_path : "(socket-activated)");
        mp_pack_cstr(pk, "telemetry");
        telemetry_pack_status(pk);
        return 0;
}
