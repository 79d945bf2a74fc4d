/* Warm sandboxes: the pool of pool.h. Each entry is one hands started through
 * the zygote with ZYGOTE_WARM and a spec of the task's part only; it says
 * "warm PID" on its control socket when its init waits for the attach. The
 * pool holds entries per task (name + canonical policy text, so an edited
 * task never gets an old one), reaps their hands through pidfds, drops the
 * ones idle past WarmIdleSec= and, being told of any change of our mount
 * table (POLLPRI on /proc/self/mountinfo), drops them all: a warm init holds
 * a copy of the mount table of its warm-up, and a workspace on a mount made
 * after it must not be missing. */
#include "pool.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cgroup.h"
#include "sandbox-private.h"
#include "core/log.h"
#include "macro.h"
#include "plan-cache.h"
#include "socket.h"
#include "zygote.h"

typedef enum warm_state {
        WARM_STARTING, /* started, not yet "warm" */
        WARM_READY,
        WARM_TAKEN,    /* handed to a spawn: no longer ours */
        WARM_ENDING,   /* control closed or killed; waiting to reap */
} warm_state;

typedef struct warm_entry {
        list_head link;
        warm_state state;
        char *task;
        char *canonical;
        uint64_t ready_at;   /* uv_now when it said "warm" */
        uv_poll_t control_poll, pid_poll;
        bool control_poll_init, pid_poll_init;
        unsigned handles_open;
        warm_sandbox w;
} warm_entry;

typedef struct refill {
        uv_timer_t timer;
        list_head link;      /* in refills until its timer closes */
        char *task;
} refill;

static list_head refills = { &refills, &refills };

static list_head entries = { &entries, &entries };
static unsigned n_entries;
static uv_timer_t idle_timer;
static uv_poll_t mountinfo_poll;
static int mountinfo_fd = -1;
static bool pool_up;

unsigned pool_count(void) {
        unsigned n = 0;
        list_head *pos, *tmp;
        list_for_each_safe(pos, tmp, &entries)
                n += container_of(pos, warm_entry, link)->state == WARM_READY;
        return n;
}

static void entry_free(warm_entry *e) {
        list_del(&e->link);
        n_entries--;
        safe_close(e->w.pidfd);
        safe_close(e->w.control);
        safe_close(e->w.cg_fd);
        if (e->w.cgroup)
                (void) cgroup_remove(e->w.cgroup);
        free(e->w.cgroup);
        free(e->w.limits_note);
        free(e->task);
        free(e->canonical);
        free(e);
}

static void entry_handle_closed(uv_handle_t *h) {
        warm_entry *e = h->data;
        if (--e->handles_open == 0 && e->state == WARM_ENDING && e->w.pidfd < 0)
                entry_free(e);
}

static void entry_stop_polls(warm_entry *e) {
        if (e->control_poll_init) {
                e->control_poll_init = false;
                e->handles_open++;
                uv_close((uv_handle_t *) &e->control_poll, entry_handle_closed);
        }
        if (e->pid_poll_init) {
                e->pid_poll_init = false;
                e->handles_open++;
                uv_close((uv_handle_t *) &e->pid_poll, entry_handle_closed);
        }
}

/* The hands is gone: reap it; the entry goes once its handles are closed. */
static void on_warm_exit(uv_poll_t *h, int status, int events) {
        warm_entry *e = h->data;
        siginfo_t si = { 0 };
        (void) status;
        (void) events;

        if (waitid(P_PIDFD, (id_t) e->w.pidfd, &si, WEXITED | WNOHANG) == 0 && si.si_pid == 0)
                return; /* not yet */
        if (e->state == WARM_STARTING || e->state == WARM_READY)
                log_warning("warm sandbox of task %s (pid %d) ended before use", e->task, (int) e->w.pid);
        e->state = WARM_ENDING;
        e->w.pidfd = safe_close(e->w.pidfd);
        e->w.control = safe_close(e->w.control);
        entry_stop_polls(e);
}

/* Ends an entry: closing the control socket makes an unused init exit(0);
 * the pidfd poll reaps the hands. */
static void entry_end(warm_entry *e) {
        if (e->state == WARM_ENDING)
                return;
        e->state = WARM_ENDING;
        e->w.control = safe_close(e->w.control);
        if (e->control_poll_init) {
                e->control_poll_init = false;
                e->handles_open++;
                uv_close((uv_handle_t *) &e->control_poll, entry_handle_closed);
        }
        if (!e->pid_poll_init && e->w.pidfd >= 0) {
                /* Never polled: reap now (it exits on EOF right away). */
                (void) kill(e->w.pid, SIGKILL);
                (void) waitid(P_PIDFD, (id_t) e->w.pidfd, &(siginfo_t) { 0 }, WEXITED);
                e->w.pidfd = safe_close(e->w.pidfd);
                if (e->handles_open == 0)
                        entry_free(e);
        }
}

static void on_warm_control(uv_poll_t *h, int status, int events) {
        warm_entry *e = h->data;
        char line[128];
        ssize_t n;
        (void) events;

        n = status < 0 ? -1 : recv(e->w.control, line, sizeof(line) - 1, MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
                return;
        if (n > 6 && e->state == WARM_STARTING && strncmp(line, "warm ", 5) == 0) {
                e->state = WARM_READY;
                e->ready_at = uv_now(h->loop);
                return;
        }
        if (n > 0) {
                line[n] = 0;
                line[strcspn(line, "\n")] = 0;
                log_warning("warm sandbox of task %s (pid %d): %s", e->task, (int) e->w.pid, line);
        }
        entry_end(e);
}

static unsigned task_count(const char *task);

unsigned pool_count_task(const char *task) {
        return task_count(task);
}

static unsigned task_count(const char *task) {
        unsigned n = 0;
        list_head *pos, *tmp;
        list_for_each_safe(pos, tmp, &entries) {
                warm_entry *e = container_of(pos, warm_entry, link);
                if ((e->state == WARM_STARTING || e->state == WARM_READY) && streq(e->task, task))
                        n++;
        }
        return n;
}

static int entry_start(manager *m, const task_policy *p) {
        _cleanup_free_ char *canonical = task_policy_canonical(p);
        warm_entry *e;
        char id[16];
        int r;

        if (!canonical)
                return -ENOMEM;
        e = calloc(1, sizeof(*e));
        if (!e)
                return -ENOMEM;
        e->w = (warm_sandbox) { .pidfd = -1, .control = -1, .cg_fd = -1, .entry = e };
        e->task = strdup(p->name);
        e->canonical = TAKE_PTR(canonical);
        list_init(&e->link);
        list_add_tail(&entries, &e->link);
        n_entries++;
        if (!e->task) {
                entry_free(e);
                return -ENOMEM;
        }

        spawn_make_id(id);
        id[0] = 'w'; /* sb-w...: a warm sandbox's cgroup, never a sandbox id's */
        r = spawn_start_warm(m, p, id, &e->w);
        if (r < 0) {
                entry_free(e);
                return r;
        }
        e->control_poll.data = e->pid_poll.data = e;
        uv_poll_init(m->loop, &e->control_poll, e->w.control);
        e->control_poll_init = true;
        uv_poll_start(&e->control_poll, UV_READABLE | UV_DISCONNECT, on_warm_control);
        uv_poll_init(m->loop, &e->pid_poll, e->w.pidfd);
        e->pid_poll_init = true;
        uv_poll_start(&e->pid_poll, UV_READABLE, on_warm_exit);
        return 0;
}

warm_sandbox *pool_take(manager *m, const task_policy *p) {
        _cleanup_free_ char *canonical = NULL;
        list_head *pos, *tmp;

        if (!pool_up || m->config->warm_sandboxes == 0 || n_entries == 0)
                return NULL;
        list_for_each_safe(pos, tmp, &entries) {
                warm_entry *e = container_of(pos, warm_entry, link);

                if (e->state != WARM_READY || !streq(e->task, p->name))
                        continue;
                if (!canonical && !(canonical = task_policy_canonical(p)))
                        return NULL;
                if (!streq(e->canonical, canonical)) {
                        entry_end(e); /* the task changed since: never used */
                        continue;
                }
                e->state = WARM_TAKEN;
                /* The spawn owns the hands from here: the pidfd goes to the sandbox. */
                entry_stop_polls(e);
                list_del(&e->link);
                n_entries--;
                list_init(&e->link);
                return &e->w;
        }
        return NULL;
}

int pool_attach(warm_sandbox *w, const int stdio[3], int spec_fd, int status_fd) {
        int fds[WARM_ATTACH_FDS] = { stdio[0], stdio[1], stdio[2], spec_fd, status_fd };
        uint64_t magic = WARM_ATTACH_MAGIC;
        ssize_t n;

        n = socket_send_fds(w->control, &magic, sizeof(magic), fds, WARM_ATTACH_FDS, 0);
        if (n != (ssize_t) sizeof(magic))
                return n < 0 ? (int) n : -EIO;
        /* One use: the init's copy is replaced by the status socket already. */
        w->control = safe_close(w->control);
        return 0;
}

/* A taken entry: its handles may still be closing; free it after them. */
static void taken_free(warm_entry *e) {
        e->state = WARM_ENDING;
        n_entries++; /* entry_free counts it out again */
        list_add_tail(&entries, &e->link);
        if (e->handles_open == 0)
                entry_free(e);
        else {
                e->w.pidfd = safe_close(e->w.pidfd);
        }
}

void warm_sandbox_drop(manager *m, warm_sandbox *w) {
        (void) m;
        if (!w)
                return;
        warm_entry *e = w->entry;
        if (w->pidfd >= 0) {
                w->control = safe_close(w->control);
                (void) kill(w->pid, SIGKILL);
                (void) waitid(P_PIDFD, (id_t) w->pidfd, &(siginfo_t) { 0 }, WEXITED);
        }
        taken_free(e);
}

static void refill_closed(uv_handle_t *h) {
        refill *rf = container_of((uv_timer_t *) h, refill, timer);
        free(rf->task);
        free(rf);
}

static void on_refill(uv_timer_t *t) {
        refill *rf = container_of(t, refill, timer);
        manager *m = t->data;
        const task_policy *p = policy_registry_find(m->tasks, rf->task);

        if (p && pool_up && !m->sandboxes->locked_down && !m->shutting_down)
                for (unsigned n = task_count(p->name); n < m->config->warm_sandboxes; n++) {
                        int r = entry_start(m, p);
                        if (r < 0) {
                                log_warning("cannot start a warm sandbox for task %s: %s", p->name, strerror(-r));
                                break;
                        }
                }
        list_del(&rf->link);
        uv_close((uv_handle_t *) t, refill_closed);
}

void pool_refill_later(manager *m, const char *task) {
        refill *rf;

        if (!pool_up || m->config->warm_sandboxes == 0 || !task || task_count(task) >= m->config->warm_sandboxes)
                return;
        rf = calloc(1, sizeof(*rf));
        if (!rf || !(rf->task = strdup(task))) {
                free(rf);
                return;
        }
        uv_timer_init(m->loop, &rf->timer);
        rf->timer.data = m;
        list_add_tail(&refills, &rf->link);
        /* After this iteration's replies are written: off the spawn's path. */
        uv_timer_start(&rf->timer, on_refill, 1, 0);
}

void pool_drain(manager *m, const char *why) {
        list_head *pos, *tmp;
        unsigned n = 0;
        (void) m;

        /* Whatever invalidates a warm sandbox (a reload, the mount table) invalidates the per-task plans too. */
        plan_cache_clear();

        list_for_each_safe(pos, tmp, &entries) {
                warm_entry *e = container_of(pos, warm_entry, link);
                if (e->state == WARM_STARTING || e->state == WARM_READY) {
                        entry_end(e);
                        n++;
                }
        }
        if (n > 0)
                log_info("dropped %u warm sandbox%s: %s", n, n == 1 ? "" : "es", why);
}

static void on_idle_check(uv_timer_t *t) {
        manager *m = t->data;
        uint64_t now = uv_now(t->loop), max = (uint64_t) m->config->warm_idle_sec * 1000;
        list_head *pos, *tmp;

        list_for_each_safe(pos, tmp, &entries) {
                warm_entry *e = container_of(pos, warm_entry, link);
                if (e->state == WARM_READY && now - e->ready_at >= max)
                        entry_end(e);
        }
}

static void on_mounts_changed(uv_poll_t *h, int status, int events) {
        (void) status;
        (void) events;
        pool_drain(h->data, "the mount table changed");
}

int pool_init(manager *m) {
        uint64_t every;

        uv_timer_init(m->loop, &idle_timer);
        idle_timer.data = m;
        every = (uint64_t) (m->config->warm_idle_sec < 60 ? m->config->warm_idle_sec : 60) * 1000;
        uv_timer_start(&idle_timer, on_idle_check, every, every);
        uv_unref((uv_handle_t *) &idle_timer);
        mountinfo_fd = open("/proc/self/mountinfo", O_RDONLY | O_CLOEXEC);
        if (mountinfo_fd >= 0 && uv_poll_init(m->loop, &mountinfo_poll, mountinfo_fd) == 0) {
                mountinfo_poll.data = m;
                uv_poll_start(&mountinfo_poll, UV_PRIORITIZED, on_mounts_changed);
                uv_unref((uv_handle_t *) &mountinfo_poll);
        } else {
                /* Without the watch, a warm sandbox could miss a new mount: no pool. */
                log_warning("cannot watch /proc/self/mountinfo; warm sandboxes are off");
                mountinfo_fd = safe_close(mountinfo_fd);
                return 0;
        }
        pool_up = true;
        /* The default task's pool fills right away; any other's after its first spawn. */
        const task_policy *p = policy_registry_find(m->tasks, "default");
        if (p && m->config->warm_sandboxes > 0)
                pool_refill_later(m, p->name);
        return 0;
}

static void mountinfo_closed(uv_handle_t *h) {
        (void) h;
        mountinfo_fd = safe_close(mountinfo_fd);
}

/* Stopping: nothing polls later, so every hands left is killed and reaped
 * now and its handles close (the last close callback frees the entry), and
 * pending refills close: daemon_finish()'s uv_walk would close them without
 * freeing them, and leave a zombie. */
static void pool_close_all(void) {
        list_head *pos, *tmp;

        list_for_each_safe(pos, tmp, &refills) {
                refill *rf = container_of(pos, refill, link);
                list_del(&rf->link);
                uv_close((uv_handle_t *) &rf->timer, refill_closed);
        }
        list_for_each_safe(pos, tmp, &entries) {
                warm_entry *e = container_of(pos, warm_entry, link);
                e->state = WARM_ENDING;
                if (e->w.pidfd >= 0) {
                        (void) kill(e->w.pid, SIGKILL);
                        (void) waitid(P_PIDFD, (id_t) e->w.pidfd, &(siginfo_t) { 0 }, WEXITED);
                        e->w.pidfd = safe_close(e->w.pidfd);
                }
                entry_stop_polls(e);
                if (e->handles_open == 0)
                        entry_free(e);
        }
}

void pool_free(manager *m) {
        pool_drain(m, "agentd is stopping");
        pool_close_all();
        if (!uv_is_closing((uv_handle_t *) &idle_timer))
                uv_close((uv_handle_t *) &idle_timer, NULL);
        if (pool_up)
                uv_close((uv_handle_t *) &mountinfo_poll, mountinfo_closed);
        pool_up = false;
}
