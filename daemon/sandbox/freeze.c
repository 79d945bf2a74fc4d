/* Stopping every process of a sandbox (the mechanics; sandbox_freeze() in
 * sandbox.c records the state): cgroup.freeze, else SIGSTOP to every process
 * of its pid namespace found through /proc, either confirmed. */
#include "freeze.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cgroup.h"
#include "macro.h"

/* A process as /proc/PID/stat tells it (world-readable, even for the
 * non-dumpable sandbox init, unlike its ns/ links). */
typedef struct proc_entry {
        pid_t pid, ppid;
        char state;
} proc_entry;

static int stat_file(const char *path, pid_t *ret_ppid, char *ret_state) {
        char buf[512];
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        ssize_t n = read(fd, buf, sizeof(buf) - 1);
        close(fd);
        if (n <= 0)
                return -ESRCH;
        buf[n] = 0;
        /* "pid (comm) S ppid ...": comm may hold anything, so from its last ')'. */
        char *e = strrchr(buf, ')');
        char state;
        long ppid;
        if (!e || sscanf(e + 1, " %c %ld", &state, &ppid) != 2)
                return -EBADMSG;
        *ret_ppid = (pid_t) ppid;
        *ret_state = state;
        return 0;
}

static int proc_stat(pid_t pid, pid_t *ret_ppid, char *ret_state) {
        char path[64];
        snprintf(path, sizeof(path), "/proc/%d/stat", (int) pid);
        return stat_file(path, ret_ppid, ret_state);
}

static bool state_is_stopped(char state) {
        return state == 'T' || state == 't' || state == 'Z' || state == 'X';
}

/* Whether every thread of the process is stopped or dead. The process's own
 * stat shows only its leader: a leader that called pthread_exit() is a zombie
 * while the other threads run on. */
static bool threads_stopped(pid_t pid) {
        char path[64];
        snprintf(path, sizeof(path), "/proc/%d/task", (int) pid);
        DIR *d = opendir(path);
        if (!d)
                return errno == ENOENT; /* reaped meanwhile */
        bool stopped = true;
        struct dirent *de;
        while (stopped && (de = readdir(d))) {
                char *end, tpath[96], state;
                pid_t ppid;
                long tid = strtol(de->d_name, &end, 10);
                if (*end || tid <= 0)
                        continue;
                snprintf(tpath, sizeof(tpath), "/proc/%d/task/%ld/stat", (int) pid, tid);
                if (stat_file(tpath, &ppid, &state) == 0 && !state_is_stopped(state))
                        stopped = false;
        }
        closedir(d);
        return stopped;
}

static int cmp_pid(const void *a, const void *b) {
        const proc_entry *x = a, *y = b;
        return (x->pid > y->pid) - (x->pid < y->pid);
}

static const proc_entry *proc_lookup(const proc_entry *v, size_t n, pid_t pid) {
        proc_entry key = { .pid = pid };
        return bsearch(&key, v, n, sizeof(*v), cmp_pid);
}

/* Every process below `init` (and the init): the sandbox's pid namespace.
 * Orphans there are re-parented to its pid 1, so the parent chain of every
 * member leads to the init, and no process outside leads there. */
static int descendants_of(pid_t init, proc_entry **ret, size_t *ret_n) {
        size_t n = 0, cap = 256;
        proc_entry *all = malloc(cap * sizeof(*all));
        if (!all)
                return -ENOMEM;
        DIR *d = opendir("/proc");
        if (!d) {
                free(all);
                return -errno;
        }
        struct dirent *de;
        while ((de = readdir(d))) {
                char *end;
                long pid = strtol(de->d_name, &end, 10);
                if (*end || pid <= 0)
                        continue;
                proc_entry e = { .pid = (pid_t) pid };
                if (proc_stat(e.pid, &e.ppid, &e.state) < 0)
                        continue;
                if (n == cap) {
                        proc_entry *nv = realloc(all, (cap *= 2) * sizeof(*all));
                        if (!nv) {
                                closedir(d);
                                free(all);
                                return -ENOMEM;
                        }
                        all = nv;
                }
                all[n++] = e;
        }
        closedir(d);
        qsort(all, n, sizeof(*all), cmp_pid);
        size_t k = 0;
        for (size_t i = 0; i < n; i++) {
                pid_t p = all[i].pid;
                /* Bounded walk up: a chain longer than the table is a loop of reused pids. */
                for (size_t depth = 0; p > 1 && p != init && depth <= n; depth++) {
                        const proc_entry *up = proc_lookup(all, n, p);
                        p = up ? up->ppid : 0;
                }
                if (p == init && init > 1)
                        all[k++] = all[i]; /* k <= i: compacting in place keeps the rest intact */
        }
        *ret = all;
        *ret_n = k;
        return 0;
}

/* Every process of a sandbox: the cgroup's list, else its pid namespace found through /proc. */
int sandbox_pids(const sandbox *s, pid_t **ret, size_t *ret_n) {
        size_t n = 0, cap = 64;
        pid_t *v = malloc(cap * sizeof(pid_t));
        if (!v)
                return -ENOMEM;
        if (s->cgroup) {
                char path[PATH_MAX];
                snprintf(path, sizeof(path), "%s/cgroup.procs", s->cgroup);
                FILE *f = fopen(path, "re");
                long pid;
                while (f && fscanf(f, "%ld", &pid) == 1) {
                        if (n == cap) {
                                pid_t *nv = realloc(v, (cap *= 2) * sizeof(pid_t));
                                if (!nv)
                                        break;
                                v = nv;
                        }
                        v[n++] = (pid_t) pid;
                }
                if (f)
                        fclose(f);
        } else if (s->init_pid > 0) {
                proc_entry *e = NULL;
                size_t k = 0;
                if (descendants_of(s->init_pid, &e, &k) == 0 && k > 0) {
                        pid_t *nv = realloc(v, k * sizeof(pid_t));
                        if (nv) {
                                v = nv;
                                for (size_t i = 0; i < k; i++)
                                        v[n++] = e[i].pid;
                        }
                }
                free(e);
        }
        *ret = v;
        *ret_n = n;
        return 0;
}

#define SIGNAL_FREEZE_DEADLINE_MS 1000

/* Without a cgroup: SIGSTOP to every process of the sandbox's pid namespace,
 * rescanning until a scan finds every member stopped (a process forked
 * between two scans is caught by the next; a stopped one forks no more).
 * Fails with -ETIMEDOUT if that does not happen within the deadline. */
static int freeze_by_signal(const sandbox *s) {
        uint64_t deadline = now_msec() + SIGNAL_FREEZE_DEADLINE_MS;
        if (s->init_pid <= 0)
                return -ESRCH;
        for (;;) {
                proc_entry *e = NULL;
                size_t n = 0;
                int r = descendants_of(s->init_pid, &e, &n);
                if (r < 0)
                        return r;
                bool all_stopped = n > 0;
                for (size_t i = 0; i < n; i++) {
                        if (state_is_stopped(e[i].state) && threads_stopped(e[i].pid))
                                continue;
                        all_stopped = false;
                        (void) kill(e[i].pid, SIGSTOP);
                }
                free(e);
                if (n == 0)
                        return -ESRCH; /* the init is gone: nothing left to stop */
                if (all_stopped)
                        return 0;
                if (now_msec() > deadline)
                        return -ETIMEDOUT;
                usleep(1000);
        }
}

int freeze_processes(const sandbox *s, const char **ret_method) {
        int r = -EOPNOTSUPP;
        const char *method = "cgroup";
        if (s->cgroup) {
                r = cgroup_freeze(s->cgroup, true);
                if (r == 0)
                        r = cgroup_wait_frozen(s->cgroup, SIGNAL_FREEZE_DEADLINE_MS);
                if (r == -ETIMEDOUT)
                        return r; /* frozen tasks take no SIGSTOP either: the caller kills it */
        }
        if (r < 0) {
                method = "signal";
                r = freeze_by_signal(s);
        }
        if (r == 0)
                *ret_method = method;
        return r;
}
