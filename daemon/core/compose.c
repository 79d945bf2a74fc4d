/* The composition root (with main.c): the one place that knows every part.
 * It builds the manager from its parts in dependency order, sets the hooks
 * through which core calls the parts (server.h, daemon.h), and reloads,
 * stops and frees them. main.c adds the process (arguments, socket, signals,
 * the loop); tests/unit/fixture.c composes a manager with the same calls. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>

#include "audit/auditlog.h"
#include "audit/retention.h"
#include "audit/telemetry.h"
#include "broker/broker.h"
#include "compose.h"
#include "daemon.h"
#include "egress/egress.h"
#include "file.h"
#include "incident/approval.h"
#include "incident/response.h"
#include "incident/revoke.h"
#include "log.h"
#include "macro.h"
#include "manager.h"
#include "notify-status.h"
#include "sandbox/sandbox.h"
#include "sandbox/workspace-jobs.h"
#include "server.h"
#include "statedir.h"

static void on_close_walk(uv_handle_t *h, void *arg) {
        if (!uv_is_closing(h))
                uv_close(h, NULL);
}

/* What the STATUS= line says (notify-status.h), gathered here, above the parts,
 * from the manager and the broker; callers anywhere in the daemon just say
 * "it may have changed". */
void daemon_status_notify(manager *m) {
        daemon_status st = {
                .stopping = m->shutting_down,
                .locked_down = sandbox_locked_down(m),
                .n_sandboxes = sandbox_count(m),
                .n_live = sandbox_count_live(m),
                /* Only read when serving, as before: it may re-check the session's expiry. */
                .vault = m->shutting_down ? NULL : broker_vault_state(m),
        };
        (void) daemon_status_send(&st);
}

int daemon_reload(manager *m) {
        agentd_config *c = NULL;
        _cleanup_error_ agentd_error ce = {};
        sd_notify(0, "RELOADING=1");
        int r = config_load(m->config_path, m->home, &c, &ce);
        if (r < 0) {
                log_error("reload: %s; keeping the previous configuration", error_reason(&ce, r));
        } else {
                /* Socket and state directory are fixed for the life of the process. */
                free(c->state_directory);
                c->state_directory = strdup(m->config->state_directory);
                config_free(m->config);
                m->config = c;
                m->limits.max_message = c->max_message_size;
                log_info("configuration reloaded");
                audit_event(m, "config.reload", NULL, NULL);
        }
        tasks_reload(m);
        sd_notify(0, "READY=1");
        daemon_status_notify(m);
        return r;
}

void daemon_maybe_finish(manager *m) {
        if (m->shutting_down && sandbox_count_live(m) == 0)
                daemon_finish(m);
}

void daemon_finish(manager *m) {
        uv_timer_stop(&m->shutdown_timer);
        server_close_all(m);
        sandboxes_free(m);
        approvals_free(m);
        response_free();
        egress_free(m);
        broker_free(m);
        retention_free(m);
        auditlog_free(m);
        telemetry_free(m);
        tasks_free(m);
        uv_walk(m->loop, on_close_walk, NULL);
}

static void on_shutdown_timer(uv_timer_t *t) {
        manager *m = container_of(t, manager, shutdown_timer);
        log_warning("shutdown took too long; closing everything");
        daemon_finish(m);
}

void daemon_begin_shutdown(manager *m, const char *why) {
        if (m->shutting_down)
                return;
        m->shutting_down = true;
        log_info("stopping (%s)", why);
        sd_notify(0, "STOPPING=1");
        daemon_status_notify(m);
        server_stop_listening(m);
        sandboxes_shutdown(m);
        workspace_jobs_cancel();
        broker_shutdown(m);
        uv_timer_start(&m->shutdown_timer, on_shutdown_timer, 5000, 0);
        daemon_maybe_finish(m);
}

void daemon_manager_init(manager *m) {
        m->listen_fd = -1;
        m->state_lock_fd = -1;
        m->start_msec = now_msec();
        list_init(&m->connections);
        proto_limits_default(&m->limits);
}

/* $HOME and the configuration file. */
int daemon_load_config(manager *m, const char *arg_config) {
        const char *home = getenv("HOME");
        if (!home || home[0] != '/') {
                log_error("HOME is not set to an absolute path");
                return -EINVAL;
        }
        m->home = realpath(home, NULL);
        if (!m->home) {
                int r = -errno;
                log_error("HOME %s: %m", home);
                return r;
        }
        m->config_path = arg_config ? strdup(arg_config) : config_default_path();
        _cleanup_error_ agentd_error ce = {};
        int r = config_load(m->config_path, m->home, &m->config, &ce);
        if (r < 0) {
                log_error("%s", error_reason(&ce, r));
                return r;
        }
        m->limits.max_message = m->config->max_message_size;
        return 0;
}

/* A reload changes what a warm sandbox was started for. */
static void on_tasks_reloaded(manager *m, void *userdata) {
        (void) userdata;
        pool_drain(m, "task policies reloaded");
}

int daemon_start_tasks(manager *m) {
        tasks_set_reload_hook(on_tasks_reloaded, NULL);
        return tasks_init(m);
}

/* Creates, canonicalises and locks the state directory. */
int daemon_setup_state_directory(manager *m) {
        int r = mkdir_private(m->config->state_directory);
        if (r < 0) {
                log_error("cannot prepare state directory %s: %s", m->config->state_directory, strerror(-r));
                return r;
        }
        /* Canonical from here on: sandboxes mount beneath it. */
        char *state = realpath(m->config->state_directory, NULL);
        if (state) {
                free(m->config->state_directory);
                m->config->state_directory = state;
        }
        /* One daemon per state directory, before anything in it (or any
         * cgroup, or the socket) is touched. Held until the process ends. */
        pid_t holder = 0;
        m->state_lock_fd = statedir_lock(m->config->state_directory, &holder);
        if (m->state_lock_fd == -EBUSY) {
                if (holder > 0)
                        log_error("another agentd (pid %d) is using the state directory %s; not starting",
                                  (int) holder, m->config->state_directory);
                else
                        log_error("another agentd is using the state directory %s; not starting",
                                  m->config->state_directory);
                return -EBUSY;
        }
        if (m->state_lock_fd < 0) {
                log_error("cannot lock the state directory %s: %s", m->config->state_directory,
                          strerror(-m->state_lock_fd));
                return m->state_lock_fd;
        }
        return 0;
}

/* What the server asks of the parts (server.h's hooks): the audit log's
 * group commit, gate and records, and the sandboxes' hold on connections. */
static bool hook_records_pending(void *userdata) {
        return auditlog_pending(userdata);
}

static int hook_can_record(void *userdata, agentd_error *err) {
        return auditlog_can_record(userdata, err);
}

static void hook_record_rpc(void *userdata, const rpc_ctx *ctx, const char *outcome) {
        auditlog_rpc(ctx, outcome);
}

static void hook_record_event(void *userdata, const char *type, const char *sandbox_id, json_object *fields) {
        audit_event(userdata, type, sandbox_id, fields);
}

static void hook_connection_closed(void *userdata, connection *c) {
        sandboxes_connection_closed(userdata, c);
}

static void set_server_hooks(manager *m) {
        server_set_hooks(&(server_hooks) {
                .userdata = m,
                .records_pending = hook_records_pending,
                .can_record = hook_can_record,
                .record_rpc = hook_record_rpc,
                .record_event = hook_record_event,
                .connection_closed = hook_connection_closed,
        });
}

static void hook_egress_denied(void *userdata, const char *sandbox_id) {
        response_egress_denied(userdata, sandbox_id);
}

static void hook_sandbox_ended(void *userdata, sandbox *s) {
        approvals_sandbox_ended(userdata, s->id);
        response_sandbox_ended(s->id);
}

static int forget_sandbox_record(void *userdata, const char *id) {
        return sandbox_forget(userdata, id);
}

/* The parts, in dependency order. */
int daemon_start_parts(manager *m) {
        sandbox_set_hooks(&(sandbox_hooks) { .userdata = m, .ended = hook_sandbox_ended });
        int r = sandboxes_init(m);
        if (r < 0)
                return r;
        telemetry_init(m);
        /* After the records are loaded and our leftover cgroups killed (they are
         * found by the sandbox directories the sweep may remove). */
        (void) statedir_sweep(m->config->state_directory);
        auditlog_set_tick_hook(lockdown_retry_persist);
        auditlog_init(m);
        retention_init(m, forget_sandbox_record);
        lockdown_load(m);
        egress_set_hooks(&(egress_hooks) { .userdata = m, .denied = hook_egress_denied });
        egress_init(m);
        if (approvals_init(m) < 0)
                log_error("cannot start approvals: out of memory (Network.Ask= connections will be refused)");
        r = broker_init(m);
        if (r < 0) {
                log_error("cannot start the credential broker: %s", strerror(-r));
                return r;
        }
        set_server_hooks(m);
        return 0;
}

void daemon_release(manager *m) {
        config_free(m->config);
        m->config = NULL;
        free(m->config_path);
        free(m->home);
        free(m->socket_path);
        m->config_path = m->home = m->socket_path = NULL;
}
