/* attacks: a battery of sandbox-escape attempts, one per invocation.
 *
 *   attacks NAME [ARGS...]
 *
 * Each attack really tries the escape (the same code run outside the sandbox, as
 * the same user, gets through where the host allows it) and prints one line:
 *   HELD <name>: <why>        exit 0   the sandbox held
 *   ESCAPED <name>: <detail>  exit 1   it got through
 * Some attacks can only be judged from the host (files that must not persist,
 * the host's hostname, processes that must be gone); those print HELD for what
 * they can see from inside and the test adds the host-side verdict.
 *
 * Built static so it runs in a sandbox whatever /usr holds. Never sends traffic
 * off the machine: the DNS attack only connect()s a UDP socket. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/io_uring.h>
#include <linux/keyctl.h>
#include <linux/netlink.h>
#include <linux/perf_event.h>
#include <linux/rtnetlink.h>
#include <linux/sched.h>
#include <linux/userfaultfd.h>
#include <linux/vm_sockets.h>
#include <net/if.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/klog.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/personality.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

static const char *attack_name = "?";
static char notes[8192];

/* Collects "what was tried and how it failed" for the HELD line. */
static void note(const char *fmt, ...) {
        size_t n = strlen(notes);
        if (n + 4 >= sizeof notes)
                return;
        if (n)
                strcat(notes, "; ");
        n = strlen(notes);
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(notes + n, sizeof notes - n, fmt, ap);
        va_end(ap);
}

static void noerr(const char *what) {
        note("%s: %s", what, strerror(errno));
}

static int held(void) {
        printf("HELD %s: %s\n", attack_name, notes[0] ? notes : "all attempts refused");
        fflush(stdout);
        return 0;
}

static int escaped(const char *fmt, ...) {
        char buf[4096];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(buf, sizeof buf, fmt, ap);
        va_end(ap);
        printf("ESCAPED %s: %s\n", attack_name, buf);
        fflush(stdout);
        return 1;
}

/* Reads up to cap-1 bytes of a file; -errno on failure. */
static ssize_t slurp(const char *path, char *buf, size_t cap) {
        int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
        if (fd < 0)
                return -errno;
        size_t n = 0;
        while (n + 1 < cap) {
                ssize_t r = read(fd, buf + n, cap - 1 - n);
                if (r < 0) {
                        int e = errno;
                        close(fd);
                        return -e;
                }
                if (r == 0)
                        break;
                n += (size_t)r;
        }
        buf[n] = 0;
        close(fd);
        return (ssize_t)n;
}

static bool memmem_str(const char *buf, size_t n, const char *needle) {
        return memmem(buf, n, needle, strlen(needle)) != NULL;
}

static const char *home(void) {
        const char *h = getenv("HOME");
        return h && *h ? h : "/";
}

/* Runs fn in a child; returns the wait status (the child's exit code is fn's). */
static int in_child(int (*fn)(void *), void *arg) {
        fflush(stdout);
        pid_t p = fork();
        if (p < 0)
                return -1;
        if (p == 0)
                _exit(fn(arg));
        int st;
        while (waitpid(p, &st, 0) < 0 && errno == EINTR)
                ;
        return st;
}

static pid_t sleeper(void) {
        fflush(stdout);
        pid_t p = fork();
        if (p == 0) {
                for (;;)
                        pause();
        }
        return p;
}

static void reap(pid_t p) {
        if (p > 0) {
                kill(p, SIGKILL);
                waitpid(p, NULL, 0);
        }
}

/* ---------------------------------------------------------------- files */

/* argv: MARKER written in ~/.ssh/id_rsa (and ~/.bashrc) on the host. */
static int a_ssh_read(int argc, char **argv) {
        const char *marker = argc > 0 ? argv[0] : "PRIVATE KEY";
        const char *rel[] = { ".ssh/id_rsa", ".ssh/id_ed25519", ".ssh/authorized_keys", ".ssh/config",
                              ".aws/credentials", ".netrc", ".gnupg/pubring.kbx", ".bashrc",
                              ".config/agentd/agentd.conf", NULL };
        char path[4096], buf[65536];
        for (int i = 0; rel[i]; i++) {
                snprintf(path, sizeof path, "%s/%s", home(), rel[i]);
                ssize_t n = slurp(path, buf, sizeof buf);
                if (n < 0) {
                        note("%s: %s", rel[i], strerror((int)-n));
                        continue;
                }
                if (memmem_str(buf, (size_t)n, marker))
                        return escaped("read host marker from %s", path);
                note("%s: readable but no host marker (%zd bytes)", rel[i], n);
        }
        /* Other ways to the same files: paths given by the test (symlinks planted in
         * the workspace, the workspace itself), relative to the cwd. */
        for (int i = 1; i < argc; i++) {
                ssize_t n = slurp(argv[i], buf, sizeof buf);
                if (n >= 0 && memmem_str(buf, (size_t)n, marker))
                        return escaped("read host marker from %s", argv[i]);
                note("%s: %s", argv[i], n < 0 ? strerror((int)-n) : "no host marker");
        }
        const char *alt[] = { "/root/.ssh/id_rsa", NULL };
        for (int i = 0; alt[i]; i++) {
                ssize_t n = slurp(alt[i], buf, sizeof buf);
                if (n >= 0 && memmem_str(buf, (size_t)n, marker))
                        return escaped("read host marker from %s", alt[i]);
        }
        /* Anything left in $HOME at all? */
        DIR *d = opendir(home());
        if (d) {
                struct dirent *de;
                int count = 0;
                while ((de = readdir(d)))
                        if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
                                count++;
                closedir(d);
                note("$HOME has %d entries", count);
        }
        return held();
}

/* argv: MARKER (file name suffix); the test checks the host for the files. */
static int a_write_system(int argc, char **argv) {
        const char *marker = argc > 0 ? argv[0] : "agentd-attack";
        char path[4096];
        const char *dirs[] = { "/etc", "/usr", "/usr/bin", "/usr/local/bin", "/etc/profile.d", NULL };
        bool wrote = false;
        for (int i = 0; dirs[i]; i++) {
                snprintf(path, sizeof path, "%s/%s", dirs[i], marker);
                int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
                if (fd < 0) {
                        noerr(path);
                        continue;
                }
                if (write(fd, "pwned\n", 6) == 6)
                        wrote = true;
                close(fd);
                note("%s: CREATED", path);
        }
        /* Append to existing system files (no truncation, nothing lost if it works). */
        const char *files[] = { "/etc/passwd", "/etc/bash.bashrc", "/usr/bin/env", NULL };
        for (int i = 0; files[i]; i++) {
                int fd = open(files[i], O_WRONLY | O_APPEND | O_CLOEXEC);
                if (fd < 0) {
                        noerr(files[i]);
                        continue;
                }
                close(fd);
                return escaped("opened %s for writing", files[i]);
        }
        if (wrote)
                return escaped("created files in system directories: %s", notes);
        return held();
}

/* argv: MARKER; writes $HOME files that the host would run later. The home is a
 * tmpfs, so writes succeed inside; the test checks none reaches the host. */
static int a_write_home(int argc, char **argv) {
        const char *marker = argc > 0 ? argv[0] : "agentd-attack";
        const char *rel[] = { ".bashrc", ".profile", ".ssh/authorized_keys", ".config/autostart/x.desktop",
                              ".config/systemd/user/default.target.wants/x.service", NULL };
        char path[4096];
        for (int i = 0; rel[i]; i++) {
                snprintf(path, sizeof path, "%s/%s", home(), rel[i]);
                /* mkdir -p of the parent */
                char dir[4096];
                snprintf(dir, sizeof dir, "%s", path);
                for (char *s = dir + strlen(home()) + 1; (s = strchr(s, '/')); s++) {
                        *s = 0;
                        mkdir(dir, 0755);
                        *s = '/';
                }
                int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
                if (fd < 0) {
                        noerr(rel[i]);
                        continue;
                }
                dprintf(fd, "\n# %s\n", marker);
                close(fd);
                note("%s: written inside the sandbox (host copy checked by the test)", rel[i]);
        }
        return held();
}

/* argv: MARKER; overwrites, creates and deletes workspace files and plants the
 * files a host runs later (.git hooks/config, .envrc, .vscode). Overlay: the
 * test checks the host copy is untouched. */
static int a_workspace_write(int argc, char **argv) {
        const char *marker = argc > 0 ? argv[0] : "agentd-attack";
        int fd = open("hostfile", O_WRONLY | O_TRUNC | O_CLOEXEC);
        if (fd >= 0) {
                dprintf(fd, "overwritten %s\n", marker);
                close(fd);
                note("hostfile overwritten inside");
        } else
                noerr("hostfile");
        if (unlink("deleteme") == 0)
                note("deleteme removed inside");
        else
                noerr("unlink deleteme");
        const char *plant[] = { "newfile", ".envrc", ".git/hooks/pre-commit", ".git/config", ".vscode/settings.json",
                                NULL };
        mkdir(".git", 0755);
        mkdir(".git/hooks", 0755);
        mkdir(".vscode", 0755);
        for (int i = 0; plant[i]; i++) {
                fd = open(plant[i], O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0755);
                if (fd < 0) {
                        noerr(plant[i]);
                        continue;
                }
                dprintf(fd, "\n# %s\n", marker);
                close(fd);
        }
        note("planted .envrc/.git/.vscode inside");
        /* The overlay's lower and upper directories by their host paths. */
        char mi[65536];
        ssize_t n = slurp("/proc/self/mountinfo", mi, sizeof mi);
        if (n > 0) {
                char *p = strstr(mi, "lowerdir=");
                if (p) {
                        char lower[4096];
                        size_t l = strcspn(p + 9, ",\n ");
                        snprintf(lower, sizeof lower, "%.*s/hostfile", (int)l, p + 9);
                        char buf[4096];
                        ssize_t m = slurp(lower, buf, sizeof buf);
                        if (m >= 0 && !memmem_str(buf, (size_t)m, "overwritten"))
                                return escaped("lowerdir %s still reachable with the host content", lower);
                        note("lowerdir path shows the overlay view");
                }
        }
        return held();
}

/* Plants a symlink to ~/.bashrc in the workspace (and uses one the host planted,
 * "planted_link") and writes through both; the test checks the host ~/.bashrc. */
static int a_symlink_bashrc(int argc, char **argv) {
        const char *marker = argc > 0 ? argv[0] : "agentd-attack";
        char target[4096];
        snprintf(target, sizeof target, "%s/.bashrc", home());
        unlink("new_link");
        if (symlink(target, "new_link") < 0)
                noerr("symlink");
        const char *links[] = { "new_link", "planted_link", NULL };
        /* Read through both links before anything is written through them. */
        for (int i = 0; links[i]; i++) {
                char buf[65536];
                ssize_t n = slurp(links[i], buf, sizeof buf);
                if (n >= 0 && argc > 1 && memmem_str(buf, (size_t)n, argv[1]))
                        return escaped("read the host ~/.bashrc marker through %s", links[i]);
                note("read %s: %s", links[i], n < 0 ? strerror((int)-n) : "no host marker");
        }
        for (int i = 0; links[i]; i++) {
                int fd = open(links[i], O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
                if (fd < 0) {
                        noerr(links[i]);
                        continue;
                }
                dprintf(fd, "\n# %s\n", marker);
                close(fd);
                note("wrote through %s inside (host ~/.bashrc checked by the test)", links[i]);
        }
        return held();
}

/* Opens /proc/PID/exe for writing for every visible process (the runc
 * CVE-2019-5736 shape: the runtime's binary is a host file). Nothing is written. */
static int a_proc_exe(int argc, char **argv) {
        (void)argc;
        (void)argv;
        int fd = open("/proc/self/exe", O_WRONLY | O_CLOEXEC);
        if (fd >= 0) {
                close(fd);
                return escaped("/proc/self/exe opened for writing");
        }
        noerr("/proc/self/exe");
        DIR *d = opendir("/proc");
        struct dirent *de;
        int tried = 0;
        while (d && (de = readdir(d))) {
                if (de->d_name[0] < '0' || de->d_name[0] > '9')
                        continue;
                char path[300], link[4096];
                snprintf(path, sizeof path, "/proc/%s/exe", de->d_name);
                ssize_t l = readlink(path, link, sizeof link - 1);
                link[l > 0 ? l : 0] = 0;
                tried++;
                fd = open(path, O_WRONLY | O_CLOEXEC);
                if (fd >= 0) {
                        close(fd);
                        closedir(d);
                        return escaped("%s (%s) opened for writing", path, link);
                }
                note("%s(%s): %s", path, l > 0 ? link : "unreadable link", strerror(errno));
                /* Read-only reopen then re-open its fd for writing. */
                fd = open(path, O_RDONLY | O_CLOEXEC);
                if (fd >= 0) {
                        char fdp[64];
                        snprintf(fdp, sizeof fdp, "/proc/self/fd/%d", fd);
                        int w = open(fdp, O_WRONLY | O_CLOEXEC);
                        if (w >= 0) {
                                close(w);
                                close(fd);
                                closedir(d);
                                return escaped("%s reopened for writing via %s", path, fdp);
                        }
                        close(fd);
                }
        }
        if (d)
                closedir(d);
        note("%d processes tried", tried);
        return held();
}

/* -------------------------------------------------------------- network */

static int tcp_connect(int family, const char *addr, int port) {
        int s = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (s < 0)
                return -errno;
        struct sockaddr_storage ss = { 0 };
        socklen_t len;
        if (family == AF_INET) {
                struct sockaddr_in *in = (void *)&ss;
                in->sin_family = AF_INET;
                in->sin_port = htons((uint16_t)port);
                inet_pton(AF_INET, addr, &in->sin_addr);
                len = sizeof *in;
        } else {
                struct sockaddr_in6 *in6 = (void *)&ss;
                in6->sin6_family = AF_INET6;
                in6->sin6_port = htons((uint16_t)port);
                inet_pton(AF_INET6, addr, &in6->sin6_addr);
                len = sizeof *in6;
        }
        int r = connect(s, (void *)&ss, len);
        int e = errno;
        close(s);
        return r < 0 ? -e : 0;
}

/* argv: PORT [PORT6]: host listeners on 127.0.0.1 (and ::1). */
static int a_tcp_loopback(int argc, char **argv) {
        if (argc < 1)
                return escaped("usage: tcp_loopback PORT [PORT6]");
        int port = atoi(argv[0]);
        const char *v4[] = { "127.0.0.1", "0.0.0.0", "127.0.0.2", NULL };
        for (int i = 0; v4[i]; i++) {
                int r = tcp_connect(AF_INET, v4[i], port);
                if (r == 0)
                        return escaped("connected to %s:%d", v4[i], port);
                note("%s:%d: %s", v4[i], port, strerror(-r));
        }
        if (argc > 1) {
                int port6 = atoi(argv[1]);
                int r = tcp_connect(AF_INET6, "::1", port6);
                if (r == 0)
                        return escaped("connected to [::1]:%d", port6);
                note("[::1]:%d: %s", port6, strerror(-r));
        }
        return held();
}

static int unix_connect(const char *name, bool abstract) {
        int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (s < 0)
                return -errno;
        struct sockaddr_un un = { .sun_family = AF_UNIX };
        size_t n = strlen(name);
        if (n > sizeof un.sun_path - 2)
                n = sizeof un.sun_path - 2;
        socklen_t len;
        if (abstract) {
                memcpy(un.sun_path + 1, name, n);
                len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n);
        } else {
                memcpy(un.sun_path, name, n);
                len = sizeof un;
        }
        int r = connect(s, (void *)&un, len);
        int e = errno;
        close(s);
        return r < 0 ? -e : 0;
}

/* argv: NAME of a host abstract socket. */
static int a_abstract_unix(int argc, char **argv) {
        if (argc < 1)
                return escaped("usage: abstract_unix NAME");
        int r = unix_connect(argv[0], true);
        if (r == 0)
                return escaped("connected to host abstract socket @%s", argv[0]);
        note("@%s: %s", argv[0], strerror(-r));
        /* Well-known host abstract sockets. */
        const char *known[] = { "/tmp/.X11-unix/X0", "/org/freedesktop/systemd1/notify", NULL };
        for (int i = 0; known[i]; i++) {
                r = unix_connect(known[i], true);
                if (r == 0)
                        return escaped("connected to host abstract socket @%s", known[i]);
        }
        return held();
}

/* argv: path sockets to try (agentd's socket, a test listener, ...); also the
 * usual host daemons: docker, D-Bus, ssh-agent, systemd --user. */
static int a_host_sockets(int argc, char **argv) {
        char buf[512];
        uid_t uid = getuid();
        const char *fixed[] = { "/var/run/docker.sock", "/run/docker.sock", "/run/dbus/system_bus_socket",
                                "/var/run/dbus/system_bus_socket", "/run/systemd/private", "/run/systemd/notify",
                                "/run/systemd/journal/socket", "/run/containerd/containerd.sock",
                                "/run/podman/podman.sock", NULL };
        for (int i = 0; i < argc; i++) {
                int r = unix_connect(argv[i], false);
                if (r == 0)
                        return escaped("connected to %s", argv[i]);
                note("%s: %s", argv[i], strerror(-r));
        }
        for (int i = 0; fixed[i]; i++) {
                int r = unix_connect(fixed[i], false);
                if (r == 0)
                        return escaped("connected to %s", fixed[i]);
        }
        const char *user[] = { "bus", "systemd/private", "docker.sock", "podman/podman.sock", "agentd/agentd.sock",
                               "gnupg/S.gpg-agent", "keyring/ssh", NULL };
        for (int i = 0; user[i]; i++) {
                snprintf(buf, sizeof buf, "/run/user/%u/%s", (unsigned)uid, user[i]);
                if (unix_connect(buf, false) == 0)
                        return escaped("connected to %s", buf);
        }
        const char *ssh = getenv("SSH_AUTH_SOCK");
        if (ssh && unix_connect(ssh, false) == 0)
                return escaped("connected to ssh-agent %s", ssh);
        note("docker/D-Bus/systemd/ssh-agent sockets unreachable");
        return held();
}

/* Raw sockets (the way around a proxy), and netlink to change routes; the
 * network namespace must hold only lo. */
static int a_raw_socket(int argc, char **argv) {
        (void)argc;
        (void)argv;
        struct {
                int family, type, proto;
                const char *what;
        } raw[] = {
                { AF_PACKET, SOCK_RAW, htons(0x0003 /* ETH_P_ALL */), "AF_PACKET/SOCK_RAW" },
                { AF_PACKET, SOCK_DGRAM, htons(0x0800), "AF_PACKET/SOCK_DGRAM" },
                { AF_INET, SOCK_RAW, IPPROTO_RAW, "AF_INET/SOCK_RAW/IPPROTO_RAW" },
                { AF_INET, SOCK_RAW, IPPROTO_ICMP, "AF_INET/SOCK_RAW/ICMP" },
                { AF_INET6, SOCK_RAW, IPPROTO_RAW, "AF_INET6/SOCK_RAW" },
        };
        for (size_t i = 0; i < sizeof raw / sizeof raw[0]; i++) {
                int s = socket(raw[i].family, raw[i].type | SOCK_CLOEXEC, raw[i].proto);
                if (s >= 0) {
                        close(s);
                        return escaped("%s socket created", raw[i].what);
                }
                noerr(raw[i].what);
        }
        /* Interfaces besides lo mean the host's network namespace. */
        struct if_nameindex *ifs = if_nameindex();
        if (ifs) {
                for (struct if_nameindex *i = ifs; i->if_index; i++)
                        if (strcmp(i->if_name, "lo")) {
                                char name[IF_NAMESIZE + 1];
                                snprintf(name, sizeof name, "%s", i->if_name);
                                if_freenameindex(ifs);
                                return escaped("interface %s visible (host network namespace?)", name);
                        }
                if_freenameindex(ifs);
                note("only lo visible");
        }
        /* netlink: add a route (RTM_NEWROUTE 10.99.0.0/16 dev lo) and ask for the ack. */
        int s = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
        if (s < 0) {
                noerr("AF_NETLINK");
                return held();
        }
        struct {
                struct nlmsghdr nh;
                struct rtmsg rt;
                char attrs[64];
        } req = { 0 };
        req.nh.nlmsg_len = NLMSG_LENGTH(sizeof(struct rtmsg));
        req.nh.nlmsg_type = RTM_NEWROUTE;
        req.nh.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
        req.nh.nlmsg_seq = 1;
        req.rt.rtm_family = AF_INET;
        req.rt.rtm_dst_len = 16;
        req.rt.rtm_table = RT_TABLE_MAIN;
        req.rt.rtm_protocol = RTPROT_STATIC;
        req.rt.rtm_scope = RT_SCOPE_LINK;
        req.rt.rtm_type = RTN_UNICAST;
        struct rtattr *a = (void *)((char *)&req + NLMSG_ALIGN(req.nh.nlmsg_len));
        a->rta_type = RTA_DST;
        a->rta_len = RTA_LENGTH(4);
        uint32_t dst = htonl(0x0a630000);
        memcpy(RTA_DATA(a), &dst, 4);
        req.nh.nlmsg_len = NLMSG_ALIGN(req.nh.nlmsg_len) + RTA_ALIGN(a->rta_len);
        a = (void *)((char *)&req + req.nh.nlmsg_len);
        a->rta_type = RTA_OIF;
        a->rta_len = RTA_LENGTH(4);
        int lo = (int)if_nametoindex("lo");
        memcpy(RTA_DATA(a), &lo, 4);
        req.nh.nlmsg_len += RTA_ALIGN(a->rta_len);
        if (send(s, &req, req.nh.nlmsg_len, 0) < 0) {
                noerr("netlink send");
                close(s);
                return held();
        }
        char buf[4096];
        ssize_t n = recv(s, buf, sizeof buf, 0);
        close(s);
        if (n >= (ssize_t)NLMSG_LENGTH(sizeof(struct nlmsgerr))) {
                struct nlmsghdr *h = (void *)buf;
                if (h->nlmsg_type == NLMSG_ERROR) {
                        struct nlmsgerr *e = NLMSG_DATA(h);
                        if (e->error == 0)
                                return escaped("RTM_NEWROUTE 10.99.0.0/16 accepted");
                        note("RTM_NEWROUTE: %s", strerror(-e->error));
                }
        } else
                noerr("netlink recv");
        return held();
}

/* connect() a UDP socket to public resolvers and the metadata address. A UDP
 * connect sends nothing; if one succeeds the attack reports it and sends nothing. */
static int a_dns(int argc, char **argv) {
        (void)argc;
        (void)argv;
        const char *targets[] = { "8.8.8.8", "1.1.1.1", "169.254.169.254", "10.0.0.1", "192.168.0.1", NULL };
        for (int i = 0; targets[i]; i++) {
                int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
                if (s < 0) {
                        noerr("socket");
                        continue;
                }
                struct sockaddr_in in = { .sin_family = AF_INET, .sin_port = htons(53) };
                inet_pton(AF_INET, targets[i], &in.sin_addr);
                int r = connect(s, (void *)&in, sizeof in);
                int e = errno;
                close(s);
                if (r == 0)
                        return escaped("UDP connect to %s:53 succeeded (a route off the machine exists; nothing sent)",
                                       targets[i]);
                note("%s:53: %s", targets[i], strerror(e));
        }
        int s = socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (s >= 0) {
                struct sockaddr_in6 in6 = { .sin6_family = AF_INET6, .sin6_port = htons(53) };
                inet_pton(AF_INET6, "2001:4860:4860::8888", &in6.sin6_addr);
                int r = connect(s, (void *)&in6, sizeof in6);
                int e = errno;
                close(s);
                if (r == 0)
                        return escaped("UDP connect to [2001:4860:4860::8888]:53 succeeded (nothing sent)");
                note("[2001:4860:4860::8888]:53: %s", strerror(e));
        }
        return held();
}

static int a_vsock(int argc, char **argv) {
        (void)argc;
        (void)argv;
        int types[] = { SOCK_STREAM, SOCK_DGRAM, SOCK_SEQPACKET };
        for (int i = 0; i < 3; i++) {
                int s = socket(AF_VSOCK, types[i] | SOCK_CLOEXEC, 0);
                if (s >= 0) {
                        /* No connect: that would talk to the hypervisor, off this machine. */
                        unsigned int cid = 0;
                        int dev = open("/dev/vsock", O_RDONLY | O_CLOEXEC);
                        if (dev >= 0) {
                                ioctl(dev, IOCTL_VM_SOCKETS_GET_LOCAL_CID, &cid);
                                close(dev);
                        }
                        close(s);
                        return escaped("AF_VSOCK socket type %d created (local cid %u)", types[i], cid);
                }
                noerr("socket(AF_VSOCK)");
        }
        return held();
}

/* ------------------------------------------------------------ processes */

/* argv: HOSTPID MARKER [AGENTD_PID]: a host process whose cmdline holds MARKER. */
static int a_host_procs(int argc, char **argv) {
        if (argc < 2)
                return escaped("usage: host_procs PID MARKER [AGENTD_PID]");
        char path[300], buf[8192];
        snprintf(path, sizeof path, "/proc/%s/cmdline", argv[0]);
        ssize_t n = slurp(path, buf, sizeof buf);
        if (n > 0 && memmem(buf, (size_t)n, argv[1], strlen(argv[1])))
                return escaped("host process %s visible: /proc/%s/cmdline holds the marker", argv[0], argv[0]);
        note("/proc/%s: %s", argv[0], n < 0 ? strerror((int)-n) : "a sandbox process, not the host's");
        int count = 0;
        DIR *d = opendir("/proc");
        struct dirent *de;
        while (d && (de = readdir(d))) {
                if (de->d_name[0] < '0' || de->d_name[0] > '9')
                        continue;
                count++;
                snprintf(path, sizeof path, "/proc/%s/cmdline", de->d_name);
                n = slurp(path, buf, sizeof buf);
                if (n > 0 && memmem(buf, (size_t)n, argv[1], strlen(argv[1])) && atoi(de->d_name) != getpid()) {
                        closedir(d);
                        return escaped("a process with the host marker is visible as pid %s", de->d_name);
                }
        }
        if (d)
                closedir(d);
        note("%d processes visible", count);
        /* kill(pid, 0) reaches only visible processes; a pid number can collide with
         * one of ours, so look at what answered. */
        for (int i = 0; i < argc; i += 2) {
                if (i == 1)
                        continue;
                pid_t p = atoi(argv[i]);
                if (kill(p, 0) == 0) {
                        snprintf(path, sizeof path, "/proc/%d/cmdline", p);
                        n = slurp(path, buf, sizeof buf);
                        if (n > 0 && (strstr(buf, "agentd-sandbox") || strstr(buf, "attacks")))
                                note("kill(%d,0) hit a sandbox process (pid collision)", p);
                        else
                                return escaped("kill(%d, 0) succeeded on a non-sandbox process", p);
                } else
                        note("kill(%d,0): %s", p, strerror(errno));
        }
        return held();
}

/* argv: AGENTD_PID: signal pid 1 and the daemon. */
static int a_kill(int argc, char **argv) {
        /* pid 1 of the sandbox namespace is the helper; in a child so a successful
         * SIGKILL on ourselves cannot hide the result. */
        pid_t self = getpid();
        if (self != 1) {
                if (kill(1, SIGKILL) == 0) {
                        usleep(100000);
                        if (kill(1, 0) < 0 && errno == ESRCH)
                                return escaped("kill(1, SIGKILL) killed pid 1");
                        note("kill(1,SIGKILL) accepted but pid 1 lives (namespace init)");
                } else
                        noerr("kill(1,SIGKILL)");
        } else
                note("we are pid 1");
        if (argc > 0) {
                pid_t p = atoi(argv[0]);
                /* SIGCONT: harmless to a running daemon, but it is delivered if reachable. */
                if (kill(p, SIGCONT) == 0) {
                        char path[64], buf[4096];
                        snprintf(path, sizeof path, "/proc/%d/cmdline", p);
                        ssize_t n = slurp(path, buf, sizeof buf);
                        if (n > 0 && (strstr(buf, "agentd-sandbox") || strstr(buf, "attacks")))
                                note("kill(%d) hit a sandbox process (pid collision)", p);
                        else
                                return escaped("signal delivered to pid %d (%s)", p, n > 0 ? buf : "?");
                } else
                        note("kill(agentd %d, SIGCONT): %s", p, strerror(errno));
                if (syscall(SYS_tgkill, p, p, SIGCONT) == 0)
                        note("tgkill %d accepted", p);
                int pfd = (int)syscall(SYS_pidfd_open, p, 0);
                if (pfd >= 0) {
                        char path[64], buf[4096];
                        snprintf(path, sizeof path, "/proc/%d/cmdline", p);
                        ssize_t n = slurp(path, buf, sizeof buf);
                        close(pfd);
                        if (!(n > 0 && (strstr(buf, "agentd-sandbox") || strstr(buf, "attacks"))))
                                return escaped("pidfd_open(%d) succeeded", p);
                } else
                        note("pidfd_open(%d): %s", p, strerror(errno));
        }
        return held();
}

static int a_env_secret(int argc, char **argv) {
        (void)argc;
        (void)argv;
        const char *key = "AGENTD_ATTACK_SECRET";
        const char *v = getenv(key);
        if (v)
                return escaped("%s=%s in our environment", key, v);
        note("not in our environment");
        DIR *d = opendir("/proc");
        struct dirent *de;
        int seen = 0;
        while (d && (de = readdir(d))) {
                if ((de->d_name[0] < '0' || de->d_name[0] > '9') && strcmp(de->d_name, "self"))
                        continue;
                const char *files[] = { "environ", "cmdline", NULL };
                for (int i = 0; files[i]; i++) {
                        char path[300], buf[65536];
                        snprintf(path, sizeof path, "/proc/%s/%s", de->d_name, files[i]);
                        ssize_t n = slurp(path, buf, sizeof buf);
                        if (n < 0) {
                                if (n != -ENOENT && n != -ESRCH)
                                        note("%s: %s", path, strerror((int)-n));
                                continue;
                        }
                        seen++;
                        if (memmem_str(buf, (size_t)n, key)) {
                                closedir(d);
                                return escaped("%s found in %s", key, path);
                        }
                }
        }
        if (d)
                closedir(d);
        note("%d environ/cmdline files read, no secret", seen);
        return held();
}

/* Any fd > 2 open at start: an inherited host object. */
static int a_inherited_fds(int argc, char **argv) {
        (void)argc;
        (void)argv;
        char found[4096] = "";
        for (int fd = 3; fd < 65536; fd++) {
                if (fcntl(fd, F_GETFD) < 0)
                        continue;
                char path[64], link[512];
                snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
                ssize_t l = readlink(path, link, sizeof link - 1);
                link[l > 0 ? l : 0] = 0;
                size_t n = strlen(found);
                snprintf(found + n, sizeof found - n, "%s%d -> %s", n ? ", " : "", fd, l > 0 ? link : "?");
        }
        if (found[0])
                return escaped("inherited fds: %s", found);
        /* fds 0-2 must not be host files other than pipes/ttys/null. */
        for (int fd = 0; fd < 3; fd++) {
                char path[64], link[512];
                snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
                ssize_t l = readlink(path, link, sizeof link - 1);
                link[l > 0 ? l : 0] = 0;
                note("fd %d -> %s", fd, l > 0 ? link : "closed");
        }
        return held();
}

/* ---------------------------------------------------------- namespaces */

static int child_exit0(void *arg) {
        (void)arg;
        _exit(0);
}

static int try_unshare(void *arg) {
        int flags = (int)(intptr_t)arg;
        return unshare(flags) == 0 ? 0 : 100 + errno;
}

static int a_userns(int argc, char **argv) {
        (void)argc;
        (void)argv;
        int flags[] = { CLONE_NEWUSER, CLONE_NEWUSER | CLONE_NEWNS, CLONE_NEWNS, CLONE_NEWNET, CLONE_NEWPID,
                        CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWCGROUP, CLONE_NEWTIME };
        const char *names[] = { "user", "user+mnt", "mnt", "net", "pid", "uts", "ipc", "cgroup", "time" };
        for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++) {
                int st = in_child(try_unshare, (void *)(intptr_t)flags[i]);
                if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
                        return escaped("unshare(%s) succeeded", names[i]);
                if (WIFEXITED(st))
                        note("unshare(%s): %s", names[i], strerror(WEXITSTATUS(st) - 100));
                else
                        note("unshare(%s): killed by signal %d", names[i], WTERMSIG(st));
        }
        /* Raw clone with CLONE_NEWUSER. */
        fflush(stdout);
        long p = syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, NULL, NULL, NULL, 0);
        if (p == 0)
                _exit(0);
        if (p > 0) {
                waitpid((pid_t)p, NULL, 0);
                return escaped("clone(CLONE_NEWUSER) created child %ld", p);
        }
        noerr("clone(CLONE_NEWUSER)");
        p = syscall(SYS_clone, CLONE_NEWNS | CLONE_NEWPID | SIGCHLD, NULL, NULL, NULL, 0);
        if (p == 0)
                _exit(0);
        if (p > 0) {
                waitpid((pid_t)p, NULL, 0);
                return escaped("clone(CLONE_NEWNS|CLONE_NEWPID) succeeded");
        }
        noerr("clone(NEWNS|NEWPID)");
        /* clone3 hides its flags from seccomp: it must be refused outright. */
        struct clone_args ca = { .flags = CLONE_NEWUSER, .exit_signal = SIGCHLD };
        p = syscall(SYS_clone3, &ca, sizeof ca);
        if (p == 0)
                _exit(0);
        if (p > 0) {
                waitpid((pid_t)p, NULL, 0);
                return escaped("clone3(CLONE_NEWUSER) succeeded");
        }
        noerr("clone3(CLONE_NEWUSER)");
        (void)child_exit0;
        return held();
}

/* argv: HOSTPID...: setns into a host process's namespaces (and pid 1's). */
static int a_setns(int argc, char **argv) {
        const char *ns[] = { "user", "mnt", "net", "pid", "uts", "ipc", "cgroup", "time", NULL };
        for (int a = -1; a < argc; a++) {
                const char *pid = a < 0 ? "1" : argv[a];
                for (int i = 0; ns[i]; i++) {
                        char path[128];
                        snprintf(path, sizeof path, "/proc/%s/ns/%s", pid, ns[i]);
                        int fd = open(path, O_RDONLY | O_CLOEXEC);
                        if (fd < 0) {
                                note("open %s: %s", path, strerror(errno));
                                continue;
                        }
                        int r = setns(fd, 0);
                        int e = errno;
                        close(fd);
                        if (r == 0)
                                return escaped("setns(%s) succeeded", path);
                        note("setns %s: %s", path, strerror(e));
                }
                /* pidfd form */
                int pfd = (int)syscall(SYS_pidfd_open, atoi(pid), 0);
                if (pfd >= 0) {
                        int r = setns(pfd, CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWNET);
                        int e = errno;
                        close(pfd);
                        if (r == 0)
                                return escaped("setns(pidfd %s) succeeded", pid);
                        note("setns(pidfd %s): %s", pid, strerror(e));
                } else
                        note("pidfd_open(%s): %s", pid, strerror(errno));
        }
        return held();
}

static int a_mount(int argc, char **argv) {
        (void)argc;
        (void)argv;
        mkdir("/tmp/mnt-attack", 0755);
        if (mount("none", "/tmp/mnt-attack", "tmpfs", 0, NULL) == 0)
                return escaped("mount tmpfs succeeded");
        noerr("mount tmpfs");
        if (mount("/", "/tmp/mnt-attack", NULL, MS_BIND | MS_REC, NULL) == 0)
                return escaped("bind mount of / succeeded");
        noerr("bind /");
        if (mount(NULL, "/", NULL, MS_REMOUNT | MS_BIND, NULL) == 0)
                return escaped("remount / rw succeeded");
        noerr("remount / rw");
        if (mount(NULL, "/usr", NULL, MS_REMOUNT | MS_BIND, NULL) == 0)
                return escaped("remount /usr rw succeeded");
        noerr("remount /usr rw");
        if (umount2("/usr", MNT_DETACH) == 0)
                return escaped("umount /usr succeeded (underlying mounts exposed)");
        noerr("umount /usr");
        if (umount2("/home", MNT_DETACH) == 0 || umount2(home(), MNT_DETACH) == 0)
                return escaped("umount of the home tmpfs succeeded");
        noerr("umount home");
        /* The new mount API. */
        int fd = (int)syscall(SYS_fsopen, "tmpfs", 0);
        if (fd >= 0) {
                close(fd);
                return escaped("fsopen(tmpfs) succeeded");
        }
        noerr("fsopen");
        fd = (int)syscall(SYS_open_tree, AT_FDCWD, "/", 1 /* OPEN_TREE_CLONE */);
        if (fd >= 0) {
                close(fd);
                return escaped("open_tree(OPEN_TREE_CLONE) succeeded");
        }
        noerr("open_tree");
        if (syscall(SYS_move_mount, AT_FDCWD, "/tmp", AT_FDCWD, "/tmp/mnt-attack", 0) == 0)
                return escaped("move_mount succeeded");
        noerr("move_mount");
        if (syscall(SYS_pivot_root, "/tmp", "/tmp/mnt-attack") == 0)
                return escaped("pivot_root succeeded");
        noerr("pivot_root");
        if (chroot("/tmp") == 0)
                return escaped("chroot succeeded");
        noerr("chroot");
        return held();
}

/* --------------------------------------------------------- kernel APIs */

static int a_ptrace(int argc, char **argv) {
        (void)argc;
        (void)argv;
        pid_t c = sleeper();
        usleep(20000);
        if (ptrace(PTRACE_ATTACH, c, NULL, NULL) == 0) {
                reap(c);
                return escaped("PTRACE_ATTACH to a sibling succeeded");
        }
        noerr("PTRACE_ATTACH sibling");
        if (ptrace(PTRACE_SEIZE, c, NULL, NULL) == 0) {
                reap(c);
                return escaped("PTRACE_SEIZE to a sibling succeeded");
        }
        noerr("PTRACE_SEIZE sibling");
        reap(c);
        if (getpid() != 1) {
                if (ptrace(PTRACE_ATTACH, 1, NULL, NULL) == 0)
                        return escaped("PTRACE_ATTACH to pid 1 succeeded");
                noerr("PTRACE_ATTACH pid 1");
        }
        /* A child that asks to be traced. */
        fflush(stdout);
        pid_t t = fork();
        if (t == 0)
                _exit(ptrace(PTRACE_TRACEME, 0, NULL, NULL) == 0 ? 0 : 1);
        int st;
        waitpid(t, &st, 0);
        if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
                return escaped("PTRACE_TRACEME succeeded");
        note("PTRACE_TRACEME: %s", WIFEXITED(st) ? "refused" : "killed");
        /* /proc/PID/mem of a sibling. */
        c = sleeper();
        char path[64];
        snprintf(path, sizeof path, "/proc/%d/mem", c);
        int fd = open(path, O_RDWR | O_CLOEXEC);
        if (fd >= 0) {
                close(fd);
                reap(c);
                return escaped("%s opened read-write", path);
        }
        noerr(path);
        reap(c);
        return held();
}

static volatile char pvm_secret[64] = "process_vm_secret";

static int a_process_vm(int argc, char **argv) {
        (void)argc;
        (void)argv;
        pid_t c = sleeper();
        usleep(20000);
        char buf[64] = { 0 };
        struct iovec local = { buf, sizeof buf }, remote = { (void *)pvm_secret, sizeof pvm_secret };
        ssize_t n = syscall(SYS_process_vm_readv, c, &local, 1, &remote, 1, 0);
        if (n > 0 && strcmp(buf, "process_vm_secret") == 0) {
                reap(c);
                return escaped("process_vm_readv read a sibling's memory");
        }
        noerr("process_vm_readv");
        n = syscall(SYS_process_vm_writev, c, &local, 1, &remote, 1, 0);
        if (n > 0) {
                reap(c);
                return escaped("process_vm_writev wrote a sibling's memory");
        }
        noerr("process_vm_writev");
        reap(c);
        if (getpid() != 1) {
                n = syscall(SYS_process_vm_readv, 1, &local, 1, &remote, 1, 0);
                if (n > 0)
                        return escaped("process_vm_readv of pid 1");
                noerr("process_vm_readv pid 1");
        }
        return held();
}

static int a_io_uring(int argc, char **argv) {
        (void)argc;
        (void)argv;
        struct io_uring_params p = { 0 };
        int fd = (int)syscall(SYS_io_uring_setup, 8, &p);
        if (fd >= 0) {
                close(fd);
                return escaped("io_uring_setup returned fd %d", fd);
        }
        noerr("io_uring_setup");
        if (syscall(SYS_io_uring_enter, 0, 0, 0, 0, NULL, 0) == 0 || errno != EBADF)
                note("io_uring_enter(0): %s", strerror(errno));
        if (syscall(SYS_io_uring_register, 0, 0, NULL, 0) < 0)
                note("io_uring_register(0): %s", strerror(errno));
        return held();
}

static int a_keyctl(int argc, char **argv) {
        (void)argc;
        (void)argv;
        long k = syscall(SYS_add_key, "user", "agentd-attack", "x", 1, KEY_SPEC_PROCESS_KEYRING);
        if (k >= 0)
                return escaped("add_key created key %ld", k);
        noerr("add_key");
        long r = syscall(SYS_keyctl, KEYCTL_GET_KEYRING_ID, KEY_SPEC_USER_KEYRING, 0);
        if (r >= 0)
                return escaped("keyctl reached the user keyring %ld (shared with the host)", r);
        noerr("keyctl(GET_KEYRING_ID user)");
        r = syscall(SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, NULL);
        if (r >= 0)
                return escaped("keyctl(JOIN_SESSION_KEYRING) succeeded");
        noerr("keyctl(JOIN_SESSION)");
        r = syscall(SYS_request_key, "user", "agentd-attack", NULL, 0);
        if (r >= 0)
                return escaped("request_key succeeded");
        noerr("request_key");
        return held();
}

static int a_bpf(int argc, char **argv) {
        (void)argc;
        (void)argv;
        union bpf_attr attr = { 0 };
        attr.map_type = BPF_MAP_TYPE_ARRAY;
        attr.key_size = 4;
        attr.value_size = 4;
        attr.max_entries = 1;
        int fd = (int)syscall(SYS_bpf, BPF_MAP_CREATE, &attr, sizeof attr);
        if (fd >= 0) {
                close(fd);
                return escaped("bpf(BPF_MAP_CREATE) succeeded");
        }
        noerr("bpf(MAP_CREATE)");
        struct bpf_insn insns[] = {
                { .code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = 0, .imm = 0 },
                { .code = BPF_JMP | BPF_EXIT },
        };
        memset(&attr, 0, sizeof attr);
        attr.prog_type = BPF_PROG_TYPE_SOCKET_FILTER;
        attr.insn_cnt = 2;
        attr.insns = (uintptr_t)insns;
        attr.license = (uintptr_t) "GPL";
        fd = (int)syscall(SYS_bpf, BPF_PROG_LOAD, &attr, sizeof attr);
        if (fd >= 0) {
                close(fd);
                return escaped("bpf(BPF_PROG_LOAD socket filter) succeeded");
        }
        noerr("bpf(PROG_LOAD)");
        return held();
}

static int a_perf(int argc, char **argv) {
        (void)argc;
        (void)argv;
        struct perf_event_attr pe = { 0 };
        pe.type = PERF_TYPE_SOFTWARE;
        pe.size = sizeof pe;
        pe.config = PERF_COUNT_SW_TASK_CLOCK;
        pe.disabled = 1;
        pe.exclude_kernel = 1;
        pe.exclude_hv = 1;
        int fd = (int)syscall(SYS_perf_event_open, &pe, 0, -1, -1, 0);
        if (fd >= 0) {
                close(fd);
                return escaped("perf_event_open(self, task clock) succeeded");
        }
        noerr("perf_event_open(self)");
        pe.type = PERF_TYPE_HARDWARE;
        pe.config = PERF_COUNT_HW_CPU_CYCLES;
        fd = (int)syscall(SYS_perf_event_open, &pe, -1, 0, -1, 0);
        if (fd >= 0) {
                close(fd);
                return escaped("perf_event_open(all processes, cpu 0) succeeded");
        }
        noerr("perf_event_open(cpu-wide)");
        return held();
}

static int a_userfaultfd(int argc, char **argv) {
        (void)argc;
        (void)argv;
        int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | 1 /* UFFD_USER_MODE_ONLY */);
        if (fd >= 0) {
                close(fd);
                return escaped("userfaultfd(UFFD_USER_MODE_ONLY) succeeded");
        }
        noerr("userfaultfd(user mode only)");
        fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
        if (fd >= 0) {
                close(fd);
                return escaped("userfaultfd succeeded");
        }
        noerr("userfaultfd");
        fd = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
        if (fd >= 0) {
                int u = ioctl(fd, USERFAULTFD_IOC_NEW, O_CLOEXEC);
                close(fd);
                if (u >= 0) {
                        close(u);
                        return escaped("/dev/userfaultfd USERFAULTFD_IOC_NEW succeeded");
                }
                noerr("USERFAULTFD_IOC_NEW");
        } else
                noerr("/dev/userfaultfd");
        return held();
}

static int a_handle(int argc, char **argv) {
        (void)argc;
        (void)argv;
        struct {
                struct file_handle fh;
                unsigned char buf[MAX_HANDLE_SZ];
        } h = { .fh.handle_bytes = MAX_HANDLE_SZ };
        int mnt;
        /* A handle for the workspace's directory, then open it from outside the mount. */
        if (name_to_handle_at(AT_FDCWD, ".", &h.fh, &mnt, 0) == 0)
                note("name_to_handle_at(.) worked (type %d, %u bytes)", h.fh.handle_type, h.fh.handle_bytes);
        else
                noerr("name_to_handle_at");
        /* The root inode of an ext4 filesystem is 2, generation 0: the classic
         * "shocker" handle, opened against a mount of that filesystem (/usr). */
        struct {
                struct file_handle fh;
                unsigned char buf[8];
        } root = { .fh.handle_bytes = 8, .fh.handle_type = 1 };
        uint32_t ino_gen[2] = { 2, 0 };
        memcpy(root.fh.f_handle, ino_gen, 8);
        int mfd = open("/usr", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (mfd >= 0) {
                int fd = open_by_handle_at(mfd, &root.fh, O_RDONLY | O_DIRECTORY);
                close(mfd);
                if (fd >= 0) {
                        close(fd);
                        return escaped("open_by_handle_at opened the root of /usr's filesystem");
                }
                noerr("open_by_handle_at(fs root)");
        }
        if (h.fh.handle_bytes && h.fh.handle_bytes <= MAX_HANDLE_SZ) {
                int fd = open_by_handle_at(AT_FDCWD, &h.fh, O_RDONLY);
                if (fd >= 0) {
                        close(fd);
                        return escaped("open_by_handle_at succeeded");
                }
                noerr("open_by_handle_at(.)");
        }
        return held();
}

static int a_dmesg(int argc, char **argv) {
        (void)argc;
        (void)argv;
        char buf[4096];
        int n = klogctl(3 /* SYSLOG_ACTION_READ_ALL */, buf, sizeof buf);
        if (n > 0)
                return escaped("syslog(READ_ALL) returned %d bytes of the kernel log", n);
        noerr("syslog(READ_ALL)");
        n = klogctl(10 /* SIZE_BUFFER */, NULL, 0);
        if (n > 0)
                note("syslog(SIZE_BUFFER) = %d", n);
        else
                noerr("syslog(SIZE_BUFFER)");
        int fd = open("/dev/kmsg", O_RDONLY | O_NONBLOCK | O_CLOEXEC);
        if (fd >= 0) {
                ssize_t r = read(fd, buf, sizeof buf);
                close(fd);
                if (r > 0)
                        return escaped("/dev/kmsg read %zd bytes", r);
        }
        noerr("/dev/kmsg");
        fd = open("/proc/kmsg", O_RDONLY | O_NONBLOCK | O_CLOEXEC);
        if (fd >= 0) {
                ssize_t r = read(fd, buf, sizeof buf);
                close(fd);
                if (r > 0)
                        return escaped("/proc/kmsg read %zd bytes", r);
                note("/proc/kmsg opened, read: %s", r < 0 ? strerror(errno) : "empty");
        } else
                noerr("/proc/kmsg");
        return held();
}

static int a_raw_disk(int argc, char **argv) {
        (void)argc;
        (void)argv;
        const char *dev[] = { "/dev/sda", "/dev/sda1", "/dev/vda", "/dev/vda1", "/dev/xvda", "/dev/nvme0n1",
                              "/dev/nvme0n1p1", "/dev/dm-0", "/dev/loop0", "/dev/mem", "/dev/kmem", "/dev/port",
                              "/dev/root", "/proc/kcore", NULL };
        for (int i = 0; dev[i]; i++) {
                int fd = open(dev[i], O_RDONLY | O_CLOEXEC);
                if (fd >= 0) {
                        char b[512];
                        ssize_t r = read(fd, b, sizeof b);
                        close(fd);
                        if (r > 0)
                                return escaped("%s opened and read %zd bytes", dev[i], r);
                        note("%s opened, read: %s", dev[i], r < 0 ? strerror(errno) : "empty");
                        continue;
                }
                if (errno != ENOENT)
                        noerr(dev[i]);
        }
        /* mknod a block device (vda is 254:0 / 253:0, sda 8:0). */
        if (mknod("/tmp/disk", S_IFBLK | 0600, makedev(8, 0)) == 0) {
                unlink("/tmp/disk");
                return escaped("mknod of a block device succeeded");
        }
        noerr("mknod block device");
        return held();
}

/* Writes to /proc/sys and the sysrq trigger. Dangerous files are only opened,
 * never written. */
static int a_proc_sys(int argc, char **argv) {
        const char *marker = argc > 0 ? argv[0] : "agentd-attack";
        int fd = open("/proc/sys/kernel/hostname", O_WRONLY | O_CLOEXEC);
        if (fd >= 0) {
                ssize_t w = write(fd, marker, strlen(marker));
                int e = errno;
                close(fd);
                if (w > 0)
                        note("/proc/sys/kernel/hostname written (own UTS namespace; host checked by the test)");
                else
                        note("/proc/sys/kernel/hostname write: %s", strerror(e));
        } else
                noerr("/proc/sys/kernel/hostname");
        const char *open_only[] = { "/proc/sysrq-trigger", "/proc/sys/kernel/core_pattern",
                                    "/proc/sys/kernel/modprobe", "/proc/sys/vm/drop_caches",
                                    "/proc/sys/kernel/sysrq", "/proc/sys/net/ipv4/ip_forward",
                                    "/sys/kernel/uevent_helper", "/sys/fs/cgroup/cgroup.procs", "/proc/self/oom_score_adj",
                                    NULL };
        for (int i = 0; open_only[i]; i++) {
                fd = open(open_only[i], O_WRONLY | O_CLOEXEC);
                if (fd >= 0) {
                        close(fd);
                        if (strcmp(open_only[i], "/proc/self/oom_score_adj") == 0) {
                                /* Own value may be raised by anyone; lowering needs privilege. */
                                fd = open(open_only[i], O_WRONLY | O_CLOEXEC);
                                ssize_t w = write(fd, "-1000", 5);
                                close(fd);
                                if (w > 0)
                                        return escaped("oom_score_adj lowered to -1000");
                                note("oom_score_adj -1000: refused");
                                continue;
                        }
                        if (strcmp(open_only[i], "/proc/sys/net/ipv4/ip_forward") == 0) {
                                note("%s opened (own net namespace)", open_only[i]);
                                continue;
                        }
                        return escaped("%s opened for writing (nothing written)", open_only[i]);
                }
                note("%s: %s", open_only[i], strerror(errno));
        }
        return held();
}

/* argv: NAME to set; the test compares the host's hostname. */
static int a_sethostname(int argc, char **argv) {
        const char *name = argc > 0 ? argv[0] : "agentd-attack";
        if (sethostname(name, strlen(name)) == 0)
                note("sethostname succeeded (own UTS namespace; host checked by the test)");
        else
                noerr("sethostname");
        if (setdomainname(name, strlen(name)) == 0)
                note("setdomainname succeeded (own UTS namespace)");
        else
                noerr("setdomainname");
        return held();
}

/* Injects "echo MARKER\n" into the controlling terminal's input. */
static int a_tiocsti(int argc, char **argv) {
        const char *text = argc > 0 ? argv[0] : "echo AGENTD_TIOCSTI_INJECTED";
        char line[512];
        snprintf(line, sizeof line, "%s\n", text);
        int fds[2] = { 0, -1 };
        fds[1] = open("/dev/tty", O_RDWR | O_CLOEXEC | O_NOCTTY);
        if (fds[1] < 0)
                noerr("/dev/tty");
        note("fd 0 is %sa tty", isatty(0) ? "" : "not ");
        for (int i = 0; i < 2; i++) {
                if (fds[i] < 0)
                        continue;
                int injected = 0;
                for (const char *c = line; *c; c++) {
                        if (ioctl(fds[i], TIOCSTI, c) == 0)
                                injected++;
                        else
                                break;
                }
                if (injected)
                        return escaped("TIOCSTI pushed %d bytes into %s", injected, i ? "/dev/tty" : "fd 0");
                note("TIOCSTI on %s: %s", i ? "/dev/tty" : "fd 0", strerror(errno));
                /* TIOCLINUX subcode 2 (set selection) + 3 (paste): only on a VT. */
                char sub[1] = { 3 };
                if (ioctl(fds[i], TIOCLINUX, sub) == 0)
                        return escaped("TIOCLINUX paste on %s accepted", i ? "/dev/tty" : "fd 0");
                note("TIOCLINUX on %s: %s", i ? "/dev/tty" : "fd 0", strerror(errno));
        }
        /* The session's terminal: must be a new session, so TIOCSCTTY of fd 0 fails. */
        note("sid=%d pgid=%d tcgetpgrp(0)=%d", getsid(0), getpgrp(), tcgetpgrp(0));
        if (fds[1] >= 0)
                close(fds[1]);
        return held();
}

static int do_int80_getpid(void *arg) {
        (void)arg;
        long r;
        __asm__ volatile("int $0x80" : "=a"(r) : "a"(20L) /* i386 getpid */ : "memory");
        if (r == (long)getpid())
                return 0;
        return r < 0 && r > -4096 ? (int)(100 + (-r & 0x7f)) : 99;
}

static int do_x32_getpid(void *arg) {
        (void)arg;
        long r = syscall(39 | 0x40000000L); /* x32 getpid */
        if (r == (long)getpid())
                return 0;
        return 100 + (errno & 0x7f);
}

static int a_compat_abi(int argc, char **argv) {
        (void)argc;
        (void)argv;
        int st = in_child(do_int80_getpid, NULL);
        if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
                return escaped("int 0x80 getpid worked (i386 entry not filtered)");
        if (WIFSIGNALED(st))
                note("int 0x80: killed by signal %d", WTERMSIG(st));
        else
                note("int 0x80: %s", WEXITSTATUS(st) >= 100 ? strerror(WEXITSTATUS(st) - 100) : "wrong result");
        st = in_child(do_x32_getpid, NULL);
        if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
                return escaped("x32 getpid (0x40000000|39) worked");
        if (WIFSIGNALED(st))
                note("x32: killed by signal %d", WTERMSIG(st));
        else
                note("x32: %s", strerror(WEXITSTATUS(st) - 100));
        return held();
}

/* personality flags that weaken exploit mitigations. */
static int a_personality(int argc, char **argv) {
        (void)argc;
        (void)argv;
        int old = personality(0xffffffff);
        note("personality was %#x", old);
        int r = personality(READ_IMPLIES_EXEC);
        int now = personality(0xffffffff);
        if (r != -1 && (now & READ_IMPLIES_EXEC)) {
                void *p = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
                char maps[65536], needle[32];
                ssize_t n = slurp("/proc/self/maps", maps, sizeof maps);
                snprintf(needle, sizeof needle, "%lx-", (unsigned long)p);
                char *l = n > 0 ? strstr(maps, needle) : NULL;
                bool x = l && strchr(l, ' ') && strchr(l, ' ')[3] == 'x';
                personality((unsigned long)old);
                if (x)
                        return escaped("personality(READ_IMPLIES_EXEC) accepted: a PROT_READ mapping is executable");
                note("READ_IMPLIES_EXEC set but mappings stay non-executable (x86-64 ignores it for mmap)");
        } else
                note("personality(READ_IMPLIES_EXEC): %s", r == -1 ? strerror(errno) : "not set");
        r = personality(ADDR_NO_RANDOMIZE);
        now = personality(0xffffffff);
        if (r != -1 && (now & ADDR_NO_RANDOMIZE))
                note("ADDR_NO_RANDOMIZE accepted (own children lose ASLR; no privilege gained)");
        else
                note("ADDR_NO_RANDOMIZE: %s", r == -1 ? strerror(errno) : "not set");
        personality((unsigned long)old);
        return held();
}

/* ----------------------------------------------------------- exhaustion */

/* Forks until failure or 5000 processes, reports the count, then waits to be
 * ended (the test runs it under a task Timeout). */
static int a_fork_bomb(int argc, char **argv) {
        int max = argc > 0 ? atoi(argv[0]) : 5000;
        int n = 0, err = 0;
        for (; n < max; n++) {
                pid_t p = fork();
                if (p == 0) {
                        for (;;)
                                pause();
                }
                if (p < 0) {
                        err = errno;
                        break;
                }
        }
        printf("FORKED %d processes%s%s\n", n, err ? ", then " : "", err ? strerror(err) : "");
        fflush(stdout);
        for (;;)
                pause();
        return 0;
}

static int a_memory_hog(int argc, char **argv) {
        size_t cap = (size_t)(argc > 0 ? atol(argv[0]) : 2048) << 20;
        size_t chunk = 64 << 20, total = 0;
        while (total < cap) {
                char *p = mmap(NULL, chunk, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
                if (p == MAP_FAILED)
                        break;
                for (size_t i = 0; i < chunk; i += 4096)
                        p[i] = 1;
                total += chunk;
        }
        printf("ALLOCATED %zu MiB\n", total >> 20);
        fflush(stdout);
        for (;;)
                pause();
        return 0;
}

/* ---------------------------------------------------------------- main */

static const struct {
        const char *name;
        int (*fn)(int, char **);
        const char *usage;
} attacks[] = {
        { "ssh_read", a_ssh_read, "MARKER [PATH...]" },
        { "write_system", a_write_system, "MARKER" },
        { "write_home", a_write_home, "MARKER" },
        { "workspace_write", a_workspace_write, "MARKER" },
        { "symlink_bashrc", a_symlink_bashrc, "WRITE_MARKER [HOST_MARKER]" },
        { "proc_exe", a_proc_exe, "" },
        { "tcp_loopback", a_tcp_loopback, "PORT [PORT6]" },
        { "abstract_unix", a_abstract_unix, "NAME" },
        { "host_sockets", a_host_sockets, "PATH..." },
        { "raw_socket", a_raw_socket, "" },
        { "dns", a_dns, "" },
        { "vsock", a_vsock, "" },
        { "host_procs", a_host_procs, "PID MARKER [AGENTD_PID]" },
        { "kill", a_kill, "AGENTD_PID" },
        { "env_secret", a_env_secret, "" },
        { "inherited_fds", a_inherited_fds, "" },
        { "userns", a_userns, "" },
        { "setns", a_setns, "HOSTPID..." },
        { "mount", a_mount, "" },
        { "ptrace", a_ptrace, "" },
        { "process_vm", a_process_vm, "" },
        { "io_uring", a_io_uring, "" },
        { "keyctl", a_keyctl, "" },
        { "bpf", a_bpf, "" },
        { "perf", a_perf, "" },
        { "userfaultfd", a_userfaultfd, "" },
        { "handle", a_handle, "" },
        { "dmesg", a_dmesg, "" },
        { "raw_disk", a_raw_disk, "" },
        { "proc_sys", a_proc_sys, "MARKER" },
        { "sethostname", a_sethostname, "NAME" },
        { "tiocsti", a_tiocsti, "[TEXT]" },
        { "compat_abi", a_compat_abi, "" },
        { "personality", a_personality, "" },
        { "fork_bomb", a_fork_bomb, "[MAX]" },
        { "memory_hog", a_memory_hog, "[MIB]" },
};

int main(int argc, char **argv) {
        if (argc < 2) {
                fprintf(stderr, "usage: attacks NAME [ARGS...]\n");
                for (size_t i = 0; i < sizeof attacks / sizeof attacks[0]; i++)
                        fprintf(stderr, "  %s %s\n", attacks[i].name, attacks[i].usage);
                return 2;
        }
        for (size_t i = 0; i < sizeof attacks / sizeof attacks[0]; i++)
                if (strcmp(argv[1], attacks[i].name) == 0) {
                        attack_name = attacks[i].name;
                        return attacks[i].fn(argc - 2, argv + 2);
                }
        fprintf(stderr, "attacks: unknown attack '%s'\n", argv[1]);
        return 2;
}
