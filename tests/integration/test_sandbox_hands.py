#!/usr/bin/python3
"""Integration test of agentd-sandbox ("the hands"), driven the way the daemon
drives it: a spec in a memfd, a status socket, fds 0-2 passed through. Every
test that goes through Env.run runs three times: exec'd with --spec-fd, forked
by the zygote (--zygote, the daemon's fast path; see helper/zygote.h), and as a
warm sandbox (--warm: built from the task's part of the spec, then attached to
the spawn with one message; see helper/warm.c).

Usage: test_sandbox_hands.py [path/to/agentd-sandbox] [seccomp.bpf]
       (or AGENTD_SANDBOX=...). Run as root it re-executes itself as the
unprivileged user sbtest (created if missing)."""

import array
import os
import pwd
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback

TEST_USER = "sbtest"
HOST_SECRET_VAR = "AGENTD_TEST_HOST_SECRET"


def reexec_unprivileged():
    try:
        pwd.getpwnam(TEST_USER)
    except KeyError:
        subprocess.run(["useradd", "-m", TEST_USER], check=True)
    binary = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.environ["AGENTD_SANDBOX"])
    # The binary and this script must be reachable by the test user: copy both.
    stage = tempfile.mkdtemp(prefix="sbhands-")
    os.chmod(stage, 0o755)
    shutil.copy(binary, os.path.join(stage, "agentd-sandbox"))
    shutil.copy(os.path.abspath(__file__), os.path.join(stage, "test.py"))
    extra = []
    if len(sys.argv) > 2:
        shutil.copy(sys.argv[2], os.path.join(stage, "seccomp.bpf"))
        extra = [os.path.join(stage, "seccomp.bpf")]
    for f in os.listdir(stage):
        os.chmod(os.path.join(stage, f), 0o755)
    cgroup = make_delegated_cgroup()
    if cgroup:
        os.environ["AGENTD_TEST_CGROUP"] = cgroup
    try:
        def enter_cgroup():
            # Like a daemon in its delegated user@ subtree: migrations stay beneath it.
            if cgroup:
                with open(os.path.join(cgroup, "cgroup.procs"), "w") as f:
                    f.write(str(os.getpid()))
        rc = subprocess.run(["runuser", "-u", TEST_USER, "--", "/usr/bin/python3",
                             os.path.join(stage, "test.py"), os.path.join(stage, "agentd-sandbox")] + extra,
                            preexec_fn=enter_cgroup).returncode
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        if cgroup:
            for d in (os.path.join(cgroup, "child"), cgroup):
                try:
                    os.rmdir(d)
                except OSError:
                    pass
    sys.exit(rc)


def make_delegated_cgroup():
    """A cgroup v2 directory delegated to the test user, as systemd would; None without cgroup2."""
    with open("/proc/self/mounts") as f:
        roots = [line.split()[1] for line in f if line.split()[2] == "cgroup2"]
    if not roots:
        return None
    path = os.path.join(roots[0], f"agentd-sbtest-{os.getpid()}")
    try:
        os.mkdir(path)
        os.mkdir(os.path.join(path, "child"))
    except OSError:
        return None
    pw = pwd.getpwnam(TEST_USER)
    for d in (path, os.path.join(path, "child")):
        for f in ("", "cgroup.procs", "cgroup.threads", "cgroup.subtree_control"):
            os.chown(os.path.join(d, f), pw.pw_uid, pw.pw_gid)
    return path


def write_spec(fd, items):
    """The spec as the daemon writes it: NUL-terminated key=value items."""
    os.write(fd, b"".join(i.encode() + b"\0" for i in items))


class Result:
    def __init__(self, rc, messages, fds, out, err):
        self.rc, self.messages, self.fds, self.out, self.err = rc, messages, fds, out, err

    def __repr__(self):
        return f"rc={self.rc} messages={self.messages} out={self.out[:300]!r} err={self.err[:300]!r}"


class Env:
    def __init__(self, binary, bpf):
        self.binary = binary
        self.bpf = bpf
        self.home = os.path.expanduser("~")
        self.root = tempfile.mkdtemp(prefix="sbhands-")
        self.ws = os.path.join(self.root, "ws")
        os.mkdir(self.ws)
        with open(os.path.join(self.ws, "README"), "w") as f:
            f.write("workspace file\n")
        os.makedirs(os.path.join(self.home, ".ssh"), exist_ok=True)
        with open(os.path.join(self.home, ".ssh", "id_rsa"), "w") as f:
            f.write("PRIVATE KEY\n")
        self.n = 0
        self.zygote = None  # set: run() goes through this Zygote instead of exec
        self.warm = False  # set: run() builds a warm sandbox first, then attaches

    def fresh_overlay(self):
        self.n += 1
        while os.path.exists(os.path.join(self.root, f"upper{self.n}")):  # a forked test used the number
            self.n += 1
        upper = os.path.join(self.root, f"upper{self.n}")
        work = os.path.join(self.root, f"work{self.n}")
        os.mkdir(upper)
        os.mkdir(work)
        return upper, work

    def spec(self, argv, mode="overlay", extra=(), env=None, seccomp=True):
        items = [f"arg={a}" for a in argv]
        for e in (env if env is not None else ["PATH=/usr/local/bin:/usr/bin:/bin", f"HOME={self.home}"]):
            items.append(f"env={e}")
        items += [f"home={self.home}", f"workspace_mode={mode}"]
        if mode != "none":
            items.append(f"workspace={self.ws}")
        if mode == "overlay":
            self.upper, self.work = self.fresh_overlay()
            items += [f"upper={self.upper}", f"work={self.work}"]
        if seccomp and not self.bpf:
            items.append("unsafe_no_seccomp=1")
        items += list(extra)
        return items

    def seccomp_program(self, items, seccomp_file):
        """The BPF program file to pass, or None: none given, or the spec asks for no seccomp."""
        bpf = seccomp_file or self.bpf
        if bpf and not any(i.startswith("unsafe_no_seccomp=") for i in items):
            return bpf
        return None

    def run(self, items, stdin=b"", timeout=20, extra_fds=(), seccomp_file=None, on_started=None, keep_tty=False):
        """Run the hands; returns Result. Adds status_fd/seccomp_fd itself."""
        if self.zygote:
            return self.run_zygote(items, stdin, timeout, extra_fds, seccomp_file, on_started, keep_tty)
        if self.warm:
            return self.run_warm(items, stdin, timeout, extra_fds, seccomp_file, on_started, keep_tty)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        memfd = os.memfd_create("spec", 0)
        pass_fds = [theirs.fileno(), memfd] + list(extra_fds)
        items = list(items) + [f"status_fd={theirs.fileno()}"]
        bpf_fd = None
        bpf = self.seccomp_program(items, seccomp_file)
        if bpf:
            bpf_fd = os.open(bpf, os.O_RDONLY)
            pass_fds.append(bpf_fd)
            items.append(f"seccomp_fd={bpf_fd}")
        write_spec(memfd, items)
        outf = tempfile.TemporaryFile()
        errf = tempfile.TemporaryFile()
        p = subprocess.Popen([self.binary, "--spec-fd", str(memfd)], stdin=subprocess.PIPE, stdout=outf,
                             stderr=errf, pass_fds=pass_fds, env={HOST_SECRET_VAR: "leaked", "PATH": "/usr/bin:/bin"})
        theirs.close()
        os.close(memfd)
        if bpf_fd is not None:
            os.close(bpf_fd)
        return self.collect(p, ours, outf, errf, stdin, timeout, on_started, keep_tty)

    def run_zygote(self, items, stdin, timeout, extra_fds, seccomp_file, on_started, keep_tty):
        """run() through the zygote: the fds at the daemon's fixed numbers (3 spec,
        4 status, 5 seccomp or /dev/null, 6 cgroup). Extra fds that are not the
        cgroup's cannot be passed that way: they are left out (and must not show up)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        memfd = os.memfd_create("spec", 0)
        items = list(items)
        cgroup_fd = None
        for i, it in enumerate(items):
            if it.startswith("cgroup_fd="):
                cgroup_fd = int(it[10:])
                items[i] = "cgroup_fd=6"
        items.append("status_fd=4")
        bpf = self.seccomp_program(items, seccomp_file)
        if bpf:
            bpf_fd = os.open(bpf, os.O_RDONLY)
            items.append("seccomp_fd=5")
        else:
            bpf_fd = os.open("/dev/null", os.O_RDWR)
        write_spec(memfd, items)
        outf = tempfile.TemporaryFile()
        errf = tempfile.TemporaryFile()
        rin, win = os.pipe()
        fds = [rin, outf.fileno(), errf.fileno(), memfd, theirs.fileno(), bpf_fd]
        if cgroup_fd is not None:
            fds.append(cgroup_fd)
        try:
            pid = self.zygote.spawn(fds)
        finally:
            for fd in (rin, memfd, bpf_fd):
                os.close(fd)
            theirs.close()
        p = ZygoteChild(pid, os.fdopen(win, "wb"))
        return self.collect(p, ours, outf, errf, stdin, timeout, on_started, keep_tty)

    def start_warm(self, items, timeout=20, extra_fds=()):
        """A warm sandbox from the task's keys of items (no workspace, home,
        binds, sockets, argv or environment). Returns (popen, control socket,
        the control socket's fd number in the hands, which the full spec's
        status_fd must name) once it said "warm PID"."""
        control, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        status_fd = theirs.fileno()
        task_keys = ("tmp_size=", "shm_size=", "nproc=", "hostname=", "landlock=", "unsafe_no_seccomp=",
                     "seccomp_fd=", "cgroup_fd=")
        warm_items = ["arg=/bin/false", "workspace_mode=none", f"status_fd={theirs.fileno()}"] + \
            [i for i in items if i.startswith(task_keys)]
        warm_fd = os.memfd_create("warm-spec", 0)
        write_spec(warm_fd, warm_items)
        p = subprocess.Popen([self.binary, "--warm", "--spec-fd", str(warm_fd)], stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             pass_fds=[theirs.fileno(), warm_fd] + list(extra_fds),
                             env={HOST_SECRET_VAR: "leaked", "PATH": "/usr/bin:/bin"})
        theirs.close()
        os.close(warm_fd)
        if not select.select([control], [], [], timeout)[0]:
            p.kill()
            raise AssertionError("the warm sandbox did not get warm")
        hello = control.recv(256).decode()
        if hello.startswith("error "):  # the warm-up failed; status_fd None, the lines in warm_error
            self.warm_error = [hello.rstrip("\n")]
            return p, control, None
        if not hello.startswith("warm ") or not hello[5:-1].isdigit():
            p.kill()
            p.wait()
            raise AssertionError(f"warm sandbox: {hello!r}")
        return p, control, status_fd

    def attach(self, control, items, stdio):
        """The attach message: magic, stdio, the full spec, a fresh status socket (ours returned)."""
        ours, status = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        memfd = os.memfd_create("spec", 0)
        write_spec(memfd, items)
        control.sendmsg([struct.pack("=Q", WARM_ATTACH_MAGIC)],
                        [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", list(stdio) + [memfd, status.fileno()]))])
        os.close(memfd)
        status.close()
        return ours

    def run_warm(self, items, stdin, timeout, extra_fds, seccomp_file, on_started, keep_tty):
        """run() through a warm sandbox (start_warm, then attach): the control
        socket's fd number is the status socket's in the full spec."""
        bpf_fd = None
        items = list(items)
        extra = list(extra_fds)
        bpf = self.seccomp_program(items, seccomp_file)
        if bpf:
            bpf_fd = os.open(bpf, os.O_RDONLY)
            extra.append(bpf_fd)
            items.append(f"seccomp_fd={bpf_fd}")
        try:
            p, control, status_fd = self.start_warm(items, timeout, extra)
        finally:
            if bpf_fd is not None:
                os.close(bpf_fd)
        if status_fd is None:
            control.close()
            return Result(p.wait(timeout=timeout), self.warm_error, [], "", "")
        items.append(f"status_fd={status_fd}")
        outf = tempfile.TemporaryFile()
        errf = tempfile.TemporaryFile()
        rin, win = os.pipe()
        ours = self.attach(control, items, [rin, outf.fileno(), errf.fileno()])
        os.close(rin)
        control.close()
        w = ZygoteChild(p.pid, os.fdopen(win, "wb"))
        w.wait = p.wait
        return self.collect(w, ours, outf, errf, stdin, timeout, on_started, keep_tty)

    def collect(self, p, ours, outf, errf, stdin, timeout, on_started, keep_tty):
        try:
            p.stdin.write(stdin)
            p.stdin.close()
        except BrokenPipeError:
            pass
        messages, fds = [], []
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([ours], [], [], left)[0]:
                p.kill()
                raise AssertionError(f"timeout; messages so far {messages}")
            anc = array.array("i")
            data, cmsgs, _, _ = ours.recvmsg(4096, socket.CMSG_SPACE(4 * anc.itemsize))
            if not data:
                break
            for level, typ, cdata in cmsgs:
                if level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
                    anc.frombytes(cdata[: len(cdata) - (len(cdata) % anc.itemsize)])
                    fds.extend(anc)
            msg = data.decode()
            assert msg.endswith("\n"), msg
            messages.append(msg[:-1])
            if on_started and msg.startswith("started"):
                on_started(p, fds)
        ours.close()
        rc = p.wait(timeout=max(1, deadline - time.monotonic()))
        outf.seek(0)
        errf.seek(0)
        if not keep_tty:
            for fd in fds:
                os.close(fd)
        return Result(rc, messages, fds, outf.read().decode(errors="replace"), errf.read().decode(errors="replace"))

    def sh(self, script, **kw):
        spec_kw = {k: kw.pop(k) for k in ("mode", "extra", "env", "seccomp") if k in kw}
        return self.run(self.spec(["/bin/sh", "-c", script], **spec_kw), **kw)


ZYGOTE_MAGIC = 0x7A79676F
WARM_ATTACH_MAGIC = 0x686361747461676F
EBADMSG = 74


class Zygote:
    """`agentd-sandbox --zygote`, started the way the daemon starts it: its end of
    a SOCK_SEQPACKET socketpair at fd 3. Its children are ours (CLONE_PARENT)."""

    def __init__(self, binary):
        self.sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        tfd = theirs.fileno()
        # Our fds are not inheritable (PEP 446): only fd 3 reaches the zygote.
        self.p = subprocess.Popen([binary, "--zygote"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  close_fds=False, preexec_fn=lambda: os.dup2(tfd, 3), env={})
        theirs.close()
        self.seq = 0

    def request(self, header, fds, timeout=5):
        anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
        self.sock.sendmsg([header], anc)
        assert select.select([self.sock], [], [], timeout)[0], "zygote did not answer"
        data = self.sock.recv(64)
        assert len(data) == 16, data
        magic, seq, pid, _ = struct.unpack("=IIiI", data)
        assert magic == ZYGOTE_MAGIC, data
        return seq, pid

    def spawn(self, fds):
        self.seq += 1
        seq, pid = self.request(struct.pack("=IIII", ZYGOTE_MAGIC, self.seq, len(fds), 0), fds)
        assert seq == self.seq and pid > 0, (seq, pid)
        return pid

    def memory(self):
        with open(f"/proc/{self.p.pid}/status") as f:
            return {k: v.strip() for k, v in (line.split(":", 1) for line in f) if k in ("VmSize", "VmRSS", "VmData")}

    def close(self):
        self.sock.close()
        try:
            self.p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()


class ZygoteChild:
    """What run() needs of a Popen, for a hands forked by the zygote (our child)."""

    def __init__(self, pid, stdin):
        self.pid, self.stdin, self.returncode = pid, stdin, None

    def send_signal(self, sig):
        if self.returncode is None:
            os.kill(self.pid, sig)

    def kill(self):
        self.send_signal(signal.SIGKILL)

    def wait(self, timeout=None):
        deadline = time.monotonic() + (timeout if timeout is not None else 1e9)
        while self.returncode is None:
            pid, ws = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(ws)
                break
            if time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(str(self.pid), timeout)
            time.sleep(0.005)
        return self.returncode


def started_ok(r):
    return len(r.messages) >= 1 and r.messages[0].startswith("started ") and r.messages[0][8:].isdigit()


TESTS = []


def test(fn):
    TESTS.append(fn)
    return fn


@test
def true_exits_0(e):
    r = e.run(e.spec(["/bin/true"]))
    assert r.rc == 0 and started_ok(r) and r.messages[1:] == ["exit 0"], r


@test
def exit_code_propagates(e):
    r = e.sh("exit 7")
    assert r.rc == 7 and started_ok(r) and r.messages[-1] == "exit 7", r


@test
def signal_is_reported(e):
    r = e.sh("kill -9 $$")
    assert r.rc == 128 + 9 and r.messages[-1] == "signal 9", r


@test
def cwd_is_workspace(e):
    r = e.run(e.spec(["pwd"]))
    assert r.rc == 0 and r.out.strip() == e.ws, r
    r = e.run(e.spec(["pwd"], mode="none"))
    assert r.rc == 0 and r.out.strip() == e.home, r


@test
def workspace_visible_and_overlay_writes_go_to_upper(e):
    r = e.sh("cat README && echo new > created && echo changed > README")
    assert r.rc == 0 and r.out == "workspace file\n", r
    assert open(os.path.join(e.upper, "created")).read() == "new\n"
    assert not os.path.exists(os.path.join(e.ws, "created"))
    assert open(os.path.join(e.ws, "README")).read() == "workspace file\n"


@test
def workspace_ro_and_rw(e):
    r = e.sh("echo x > ro-attempt", mode="ro")
    assert r.rc != 0 and "Read-only file system" in r.err, r
    assert not os.path.exists(os.path.join(e.ws, "ro-attempt"))
    r = e.sh("echo x > rw-file", mode="rw")
    assert r.rc == 0 and os.path.exists(os.path.join(e.ws, "rw-file")), r
    os.unlink(os.path.join(e.ws, "rw-file"))


@test
def ssh_key_not_readable(e):
    r = e.sh("cat ~/.ssh/id_rsa; ls -A ~")
    assert r.rc == 0 and "PRIVATE KEY" not in r.out and ".ssh" not in r.out, r
    assert "No such file" in r.err, r


@test
def system_dirs_read_only(e):
    for path in ("/etc/agentd-x", "/usr/agentd-x", "/agentd-x", "/dev/agentd-x", "/bin/agentd-x"):
        r = e.sh(f"echo x > {path}")
        assert r.rc != 0 and ("Read-only" in r.err or "Permission denied" in r.err), (path, r)
        assert not os.path.exists(path), path
    r = e.sh("echo x > /tmp/a && echo x > /run/a && echo x > /dev/shm/a && echo x > ~/a && echo x > /dev/null && cat /tmp/a")
    assert r.rc == 0 and r.out == "x\n", r


@test
def hostname_is_private(e):
    host = socket.gethostname()
    r = e.run(e.spec(["hostname"]))
    assert r.rc == 0 and r.out.strip() == "agentd", r
    r = e.run(e.spec(["hostname"], extra=["hostname=box1"]))
    assert r.rc == 0 and r.out.strip() == "box1", r
    assert socket.gethostname() == host


@test
def only_sandbox_pids(e):
    r = e.sh("ls /proc | grep -E '^[0-9]+$'; echo --; ps -e -o pid=")
    assert r.rc == 0, r
    procs, ps = r.out.split("--\n")
    pids = [int(x) for x in procs.split()]
    ps_pids = [int(x) for x in ps.split()]
    assert 1 in pids and max(pids) < 10, r
    assert 1 in ps_pids and max(ps_pids) < 10 and len(ps_pids) <= 5, r


@test
def only_loopback(e):
    r = e.sh("tail -n +3 /proc/net/dev | cut -d: -f1; echo --; ip -o link")
    assert r.rc == 0, r
    devs, links = r.out.split("--\n")
    assert devs.split() == ["lo"], r
    assert len(links.strip().splitlines()) == 1 and ": lo:" in links and "UP" in links, r
    r = e.sh("exec 3<>/dev/tcp/1.1.1.1/53", )  # dash has no /dev/tcp; use python-free check below
    r = e.run(e.spec(["/usr/bin/python3", "-c",
                      "import socket; s=socket.socket(); s.settimeout(2); s.connect(('1.1.1.1', 53))"]))
    assert r.rc != 0 and "unreachable" in r.err, r


@test
def environment_is_only_the_spec(e):
    r = e.run(e.spec(["env"], env=["PATH=/usr/bin:/bin", "FOO=bar baz"]))
    assert r.rc == 0 and sorted(r.out.splitlines()) == ["FOO=bar baz", "PATH=/usr/bin:/bin"], r
    assert HOST_SECRET_VAR not in r.out


@test
def init_environ_and_memory_closed(e):
    r = e.sh("cat /proc/1/environ; echo rc=$?; tr '\\0' '\\n' < /proc/$$/environ", env=["PATH=/usr/bin:/bin", "TOKEN=s3cret"])
    assert "rc=1" in r.out and "Permission denied" in r.err, r
    assert "TOKEN=s3cret" in r.out, r  # the command sees its own environment


@test
def capabilities_dropped_and_no_new_privs(e):
    r = e.sh("grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs)' /proc/self/status")
    assert r.rc == 0, r
    fields = dict(line.split(":\t") for line in r.out.strip().splitlines())
    for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(fields[k], 16) == 0, r
    assert fields["NoNewPrivs"] == "1", r


@test
def inherited_fds_closed(e):
    extra = os.open("/etc/hostname", os.O_RDONLY)
    try:
        r = e.run(e.spec(["ls", "/proc/self/fd"]), extra_fds=[extra])
    finally:
        os.close(extra)
    assert r.rc == 0 and sorted(r.out.split()) == ["0", "1", "2", "3"], r


@test
def missing_command(e):
    r = e.run(e.spec(["no-such-command-xyz"]))
    assert r.rc == 127, r
    assert r.messages[0] == "error exec: no-such-command-xyz: No such file or directory", r
    assert not any(m.startswith("started") for m in r.messages), r
    assert r.messages[-1] == "exit 127", r


@test
def unknown_key_fails_closed(e):
    marker = os.path.join(e.ws, "ran")
    r = e.run(e.spec(["/bin/sh", "-c", f"touch {marker}"], mode="rw", extra=["frobnicate=1"]))
    assert r.rc == 125 and r.messages[0] == "error spec: unknown key 'frobnicate'", r
    assert not os.path.exists(marker)


@test
def missing_seccomp_fails_closed(e):
    r = e.run(e.spec(["/bin/true"], seccomp=False), seccomp_file=None) if not e.bpf else None
    if r is not None:
        assert r.rc == 125 and r.messages[0].startswith("error seccomp:"), r


@test
def bad_workspace(e):
    items = [i for i in e.spec(["/bin/true"], mode="rw") if not i.startswith("workspace=")]
    r = e.run(items + ["workspace=/nonexistent/agentd-ws"])
    assert r.rc == 125 and r.messages[0].startswith("error workspace: /nonexistent/agentd-ws:"), r
    assert "No such file" in r.messages[0] and r.messages[-1] == "exit 125", r
    items = [i for i in e.spec(["/bin/true"]) if not i.startswith("workspace=")]
    r = e.run(items + ["workspace=/nonexistent/agentd-ws"])
    assert r.rc == 125 and r.messages[0].startswith("error workspace:"), r
    r = e.run(e.spec(["/bin/true"], extra=["ro=relative/path"]))
    assert r.rc == 125 and r.messages[0].startswith("error spec: ro: path"), r


@test
def workspace_swapped_for_symlink_refused(e):
    # agentd checks a canonical path; a component that is a symlink by the time
    # the helper mounts it (swapped in after the check) fails closed, in every mode.
    link = os.path.join(e.root, "ws-link")
    if not os.path.islink(link):
        os.symlink(e.ws, link)
    try:
        for mode in ("overlay", "ro", "rw"):
            items = [i for i in e.spec(["/bin/true"], mode=mode) if not i.startswith("workspace=")]
            r = e.run(items + [f"workspace={link}"])
            assert r.rc == 125 and r.messages[0].startswith("error workspace: " + link), (mode, r)
            assert "symlink" in r.messages[0], (mode, r)
    finally:
        os.unlink(link)


@test
def ro_rw_hide(e):
    d = os.path.join(e.root, "extra-ro")
    w = os.path.join(e.root, "extra-rw")
    os.makedirs(d, exist_ok=True)
    os.makedirs(w, exist_ok=True)
    open(os.path.join(d, "f"), "w").write("ro data\n")
    os.makedirs(os.path.join(e.ws, "secretdir"), exist_ok=True)
    open(os.path.join(e.ws, "secretdir", "k"), "w").write("k\n")
    open(os.path.join(e.ws, ".env"), "w").write("SECRET=1\n")
    r = e.sh(f"cat {d}/f; echo x > {d}/g; echo y > {w}/h; cat .env; ls secretdir; cat /etc/hostname; echo done",
             extra=[f"ro={d}", f"rw={w}", f"hide={e.ws}/.env", f"hide={e.ws}/secretdir", "hide=/etc/hostname",
                    "hide=/does/not/exist"])
    assert r.rc == 0 and r.out == "ro data\ndone\n", r
    assert "Read-only" in r.err, r
    assert open(os.path.join(w, "h")).read() == "y\n"
    assert not os.path.exists(os.path.join(d, "g"))


@test
def symlink_in_mount_target_refused(e):
    link = os.path.join(e.ws, "evil")
    if not os.path.islink(link):
        os.symlink("/etc", link)
    r = e.run(e.spec(["/bin/true"], extra=[f"hide={link}/passwd"]))
    os.unlink(link)
    assert r.rc == 125 and r.messages[0].startswith("error hide:"), r


@test
def landlock_confines_writes(e):
    w = os.path.join(e.root, "extra-rw2")
    os.makedirs(w, exist_ok=True)
    r = e.sh(f"echo a > new && echo b > /tmp/b && echo c > ~/c && echo d > {w}/d && cat new /tmp/b ~/c {w}/d",
             extra=["landlock=1", f"rw={w}"])
    assert r.rc == 0 and r.out == "a\nb\nc\nd\n", r
    # Only the signals of its own domain: the (unconfined) init is out of reach.
    r = e.sh("kill -TERM 1; echo rc=$?", extra=["landlock=1"])
    assert "rc=1" in r.out, r


@test
def seccomp_program_loaded(e):
    # x86_64 only: deny mkdir/mkdirat with EPERM, allow everything else.
    import platform
    if platform.machine() != "x86_64":
        return
    AUDIT_ARCH_X86_64 = 0xC000003E

    def insn(code, jt, jf, k):
        return struct.pack("HBBI", code, jt, jf, k)
    LD, JEQ, RET = 0x20, 0x15, 0x06
    prog = b"".join([
        insn(LD, 0, 0, 4), insn(JEQ, 1, 0, AUDIT_ARCH_X86_64), insn(RET, 0, 0, 0x80000000),  # kill process
        insn(LD, 0, 0, 0), insn(JEQ, 2, 0, 83), insn(JEQ, 1, 0, 258),
        insn(RET, 0, 0, 0x7FFF0000), insn(RET, 0, 0, 0x00050000 | 1),
    ])
    path = os.path.join(e.root, "deny-mkdir.bpf")
    open(path, "wb").write(prog)
    items = [i for i in e.spec(["/bin/sh", "-c", "mkdir /tmp/d; echo rc=$?"]) if i != "unsafe_no_seccomp=1"]
    r = e.run(items, seccomp_file=path)
    assert r.rc == 0 and "rc=1" in r.out and "Operation not permitted" in r.err, r


@test
def tty_gives_working_pty(e):
    out = bytearray()

    def on_started(p, fds):
        assert len(fds) == 1, fds
        m = fds[0]
        os.write(m, b"tty; echo MARK$((6*7)); exit 3\n")
        deadline = time.monotonic() + 10
        while b"MARK42" not in out and time.monotonic() < deadline:
            if select.select([m], [], [], 1)[0]:
                try:
                    out.extend(os.read(m, 4096))
                except OSError:
                    break
    r = e.run(e.spec(["/bin/sh", "-i"], extra=["tty=1"]), on_started=on_started)
    text = out.decode(errors="replace")
    assert "/dev/pts/0" in text and "MARK42" in text, (text, r)
    assert r.rc == 3 and r.messages[-1] == "exit 3", r
    assert r.out == "" and r.err == "", r


@test
def cgroup_fd_places_init(e):
    cg = os.environ.get("AGENTD_TEST_CGROUP")
    if not cg:
        print("     (skipped: no delegated cgroup2 directory)")
        return
    child = os.path.join(cg, "child")
    fd = os.open(child, os.O_RDONLY | os.O_DIRECTORY)
    holder = {}

    def grab(p, fds):
        # The hands stays outside; the init (and so the command) is in the cgroup.
        with open(os.path.join(child, "cgroup.procs")) as f:
            holder["procs"] = f.read().split()
    try:
        # One process that never forks (a shell forking `cat` could be caught mid-fork).
        r = e.run(e.spec(["/usr/bin/python3", "-c",
                          "import time; print(open('/proc/self/cgroup').read(), end=''); time.sleep(0.3)"],
                         extra=[f"cgroup_fd={fd}"]),
                  extra_fds=[fd], on_started=grab)
    finally:
        os.close(fd)
    # Inside, the cgroup namespace is rooted at the sandbox's cgroup.
    assert r.rc == 0 and "0::/\n" in r.out and "agentd-sbtest" not in r.out, r
    init_pid = r.messages[0].split()[1]
    assert init_pid in holder["procs"] and len(holder["procs"]) == 2, (holder, r)
    # A cgroup the user may not write to: fail closed, step "cgroup".
    root = os.path.dirname(cg)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        r = e.run(e.spec(["/bin/true"], extra=[f"cgroup_fd={fd}"]), extra_fds=[fd])
    finally:
        os.close(fd)
    assert r.rc == 125 and r.messages[0].startswith("error cgroup:"), r


@test
def sigterm_forwarded(e):
    def on_started(p, fds):
        time.sleep(0.2)
        p.send_signal(signal.SIGTERM)
    r = e.run(e.spec(["sleep", "30"]), on_started=on_started)
    assert r.rc == 128 + 15 and r.messages[-1] == "signal 15", r


@test
def nothing_outlives_hands(e):
    tag = f"{os.getpid()}{int(time.time() * 1000) % 100000}"

    def on_started(p, fds):
        time.sleep(0.2)
        p.kill()
    r = e.run(e.spec(["/bin/sh", "-c", f"sleep 3{tag} & sleep 4{tag}"]), on_started=on_started)
    assert r.rc == -9, r
    time.sleep(0.2)
    left = subprocess.run(["pgrep", "-f", f"sleep [34]{tag}"], capture_output=True, text=True).stdout
    assert left == "", left


@test
def exit_reported_with_pipes_released(e):  # exec only: drives the hands itself
    """The exit is reported as soon as the command is reaped, and by then only
    the command's own processes may hold the output pipe: the hands and the
    init have let go, so the daemon sees EOF right away (the pid namespace
    teardown still runs behind it and still takes the background process)."""
    tag = f"{os.getpid()}{int(time.time() * 1000) % 100000}"
    # Redirected before the fork: a job started with its own redirections
    # holds the pipes itself until the forked shell applies them.
    items = e.spec(["/bin/sh", "-c", f"echo out; echo err >&2; exec </dev/null >/dev/null 2>&1; sleep 5{tag} &"])
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    memfd = os.memfd_create("spec", 0)
    write_spec(memfd, items + [f"status_fd={theirs.fileno()}"])
    p = subprocess.Popen([e.binary, "--spec-fd", str(memfd)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, pass_fds=[theirs.fileno(), memfd], env={"PATH": "/usr/bin:/bin"})
    theirs.close()
    os.close(memfd)
    try:
        messages = []
        while not messages or not messages[-1].startswith(("exit ", "signal ", "error ")):
            assert select.select([ours], [], [], 20)[0], messages
            data = ours.recv(4096)
            assert data, messages
            messages.append(data.decode().rstrip("\n"))
        assert messages[0].startswith("started ") and messages[-1] == "exit 0", messages
        for f, want in ((p.stdout, b"out\n"), (p.stderr, b"err\n")):
            got = b""
            while True:  # EOF must be there already, not after the teardown
                assert select.select([f], [], [], 0)[0], (want, got, messages)
                d = os.read(f.fileno(), 4096)
                if not d:
                    break
                got += d
            assert got == want, (got, want)
        assert p.wait(timeout=20) == 0
        assert ours.recv(4096) == b""  # nothing after the exit report
    finally:
        p.kill()
        p.wait()
        ours.close()
    left = subprocess.run(["pgrep", "-f", f"sleep 5{tag}"], capture_output=True, text=True).stdout
    assert left == "", left


EXEC_ONLY = {exit_reported_with_pipes_released}


class UnixServer:
    """A Unix stream socket server of the test user's, one thread per connection."""

    def __init__(self, path, handler):
        self.path, self.handler = path, handler
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(128)
        self.accepted = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn):
        try:
            self.handler(conn)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def echo_handler(conn):
    while True:
        data = conn.recv(65536)
        if not data:
            conn.shutdown(socket.SHUT_WR)  # half-close passed on: the client's EOF ends the echo
            return
        conn.sendall(data)


PROXY_PORT = 18080


class HandoffServer(UnixServer):
    """The proxy's side of the bridge: each connection carries one byte and one
    fd, the TCP socket the bridge accepted inside the sandbox; the handler then
    talks to that socket directly. Anything else is counted as bad."""

    def __init__(self, path, handler):
        self.bad = []
        super().__init__(path, self._take(handler))

    def _take(self, handler):
        def take(conn):
            msg, fds, _, _ = socket.recv_fds(conn, 1, 4)
            if msg != b"F" or len(fds) != 1:
                self.bad.append((msg, fds))
                for fd in fds:
                    os.close(fd)
                return
            tcp = socket.socket(fileno=fds[0])
            tcp.setblocking(True)  # the bridge accepted it non-blocking; the flag travels with it
            try:
                kind = (tcp.family, tcp.type, tcp.getsockopt(socket.SOL_SOCKET, socket.SO_PROTOCOL))
                if kind[0] not in (socket.AF_INET, socket.AF_INET6) or kind[1:] != (socket.SOCK_STREAM, socket.IPPROTO_TCP):
                    self.bad.append(kind)
                    return
                tcp.getpeername()  # connected
                # The bridge's copy is closed once the handoff is sent: ours is the only one.
                conn.close()
                handler(tcp)
            finally:
                tcp.close()
        return take


def proxy_env(e):
    d = tempfile.mkdtemp(prefix="proxy-", dir=e.root)
    srv = HandoffServer(os.path.join(d, "proxy.sock"), echo_handler)
    return srv, [f"proxy_socket={srv.path}", f"proxy_port={PROXY_PORT}"]


def py(e, code, extra=(), **kw):
    return e.run(e.spec(["/usr/bin/python3", "-c", code], extra=extra), **kw)


@test
def proxy_echo_and_parallel(e):
    srv, keys = proxy_env(e)
    try:
        code = f"""
import socket
s = socket.create_connection(('127.0.0.1', {PROXY_PORT}))
s.sendall(b'hello proxy'); s.shutdown(socket.SHUT_WR)
got = b''
while True:
    d = s.recv(4096)
    if not d: break
    got += d
print('one', got.decode())
socks = [socket.create_connection(('127.0.0.1', {PROXY_PORT})) for i in range(20)]
for i, c in enumerate(socks):
    c.sendall(b'conn%02d' % i * 100)
ok = 0
for i, c in enumerate(socks):
    want = b'conn%02d' % i * 100
    got = b''
    while len(got) < len(want):
        got += c.recv(65536)
    ok += got == want
print('parallel', ok)
try:
    s6 = socket.create_connection(('::1', {PROXY_PORT}), timeout=5)
    s6.sendall(b'v6'); print('v6', s6.recv(10).decode())
except OSError as ex:
    print('v6 unavailable', ex)
"""
        r = py(e, code, extra=keys)
        assert r.rc == 0 and "one hello proxy\n" in r.out and "parallel 20\n" in r.out, r
        assert srv.accepted == 21 + ("v6 v6" in r.out) and not srv.bad, (srv.accepted, srv.bad, r)
        print(f"     ({r.out.strip().splitlines()[-1]})")
    finally:
        srv.close()


@test
def proxy_large_transfer_both_ways(e):
    srv, keys = proxy_env(e)
    try:
        code = f"""
import hashlib, os, socket, threading
data = os.urandom(10 * 1024 * 1024)
s = socket.create_connection(('127.0.0.1', {PROXY_PORT}))
def send():
    s.sendall(data); s.shutdown(socket.SHUT_WR)
t = threading.Thread(target=send); t.start()
h = hashlib.sha256(); n = 0
while True:
    d = s.recv(1 << 20)
    if not d: break
    h.update(d); n += len(d)
t.join()
print(n, h.hexdigest() == hashlib.sha256(data).hexdigest())
"""
        t0 = time.monotonic()
        r = py(e, code, extra=keys, timeout=60)
        assert r.rc == 0 and r.out == f"{10 * 1024 * 1024} True\n" and not srv.bad, (srv.bad, r)
        print(f"     (10 MiB each way in {time.monotonic() - t0:.2f}s)")
    finally:
        srv.close()


@test
def proxy_ready_before_command(e):
    srv, keys = proxy_env(e)
    try:
        # bash connects in its first microseconds; under Landlock too.
        script = (f"exec 3<>/dev/tcp/127.0.0.1/{PROXY_PORT} && printf 'ping\\n' >&3 && read -r line <&3 "
                  "&& echo got=$line")
        for n in range(5):
            r = e.run(e.spec(["/bin/bash", "-c", script], extra=keys + ["landlock=1"]))
            assert r.rc == 0 and r.out == "got=ping\n", (n, r)
    finally:
        srv.close()


def find_bridge(p):
    """Host pid and status of the bridge: a child of the init, the hands' only child."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        for init in open(f"/proc/{p.pid}/task/{p.pid}/children").read().split():
            for pid in open(f"/proc/{init}/task/{init}/children").read().split():
                try:
                    if open(f"/proc/{pid}/comm").read().strip() == "agentd-proxy":
                        return int(pid), open(f"/proc/{pid}/status").read()
                except OSError:
                    pass
        time.sleep(0.01)
    return None, None


def is_bridge(pid):
    try:
        return open(f"/proc/{pid}/comm").read().strip() == "agentd-proxy"
    except OSError:
        return False


@test
def proxy_bridge_confined_and_gone(e):
    srv, keys = proxy_env(e)
    holder = {}

    def grab(p, fds):
        holder["pid"], holder["status"] = find_bridge(p)
    try:
        # Seen from inside: no capabilities, no_new_privs.
        r = e.sh("for p in /proc/[0-9]*; do [ \"$(cat $p/comm)\" = agentd-proxy ] && "
                 "grep -E '^(CapEff|CapBnd|NoNewPrivs)' $p/status; done; sleep 0.3", extra=keys, on_started=grab)
        assert r.rc == 0 and r.messages[-1] == "exit 0", r
        fields = dict(line.split(":\t") for line in r.out.strip().splitlines())
        assert int(fields["CapEff"], 16) == 0 and int(fields["CapBnd"], 16) == 0 and fields["NoNewPrivs"] == "1", r
        assert holder["pid"] and "NoNewPrivs:\t1" in holder["status"], holder
        # The command's exit ends the sandbox, bridge included.
        assert not is_bridge(holder["pid"]), f"bridge {holder['pid']} outlived the sandbox"

        # A killed hands takes the bridge along too.
        def grab_and_kill(p, fds):
            grab(p, fds)
            p.kill()
        r = e.run(e.spec(["sleep", "30"], extra=keys), on_started=grab_and_kill)
        assert r.rc == -9 and holder["pid"], (holder, r)
        time.sleep(0.2)
        assert not is_bridge(holder["pid"]), f"bridge {holder['pid']} outlived a killed hands"
    finally:
        srv.close()


@test
def proxy_failures_fail_closed(e):
    marker = os.path.join(e.ws, "proxy-ran")
    cmd = ["/bin/sh", "-c", f"touch {marker}"]
    for keys, want in (
        ([f"proxy_socket={e.root}/no-such.sock", f"proxy_port={PROXY_PORT}"], "error proxy: "),
        ([f"proxy_socket={e.ws}/README", f"proxy_port={PROXY_PORT}"], "error proxy: "),
        ([f"proxy_socket={e.root}/x.sock"], "error spec: proxy_socket and proxy_port go together"),
        ([f"proxy_port={PROXY_PORT}"], "error spec: proxy_socket and proxy_port go together"),
        ([f"proxy_socket={e.root}/x.sock", "proxy_port=0"], "error spec: proxy_port"),
        ([f"proxy_socket={e.root}/x.sock", "proxy_port=65536"], "error spec: proxy_port"),
        (["proxy_socket=rel/x.sock", f"proxy_port={PROXY_PORT}"], "error spec: proxy_socket"),
        ([f"broker_socket={e.root}/no-such.sock"], "error broker: "),
        ([f"broker_socket={e.ws}/README"], "error broker: "),
    ):
        r = e.run(e.spec(cmd, mode="rw", extra=keys))
        assert r.rc == 125 and r.messages[0].startswith(want), (keys, r)
        assert not any(m.startswith("started") for m in r.messages), r
        assert not os.path.exists(marker), keys


@test
def proxy_gone_resets_connection(e):
    # The socket node is there but nobody listens: the client is refused, promptly.
    path = os.path.join(tempfile.mkdtemp(prefix="proxy-", dir=e.root), "dead.sock")
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(path)  # never listens: connecting is refused
    keys = [f"proxy_socket={path}", f"proxy_port={PROXY_PORT}"]
    try:
        code = f"""
import socket
try:
    s = socket.create_connection(('127.0.0.1', {PROXY_PORT}), timeout=5)
    s.sendall(b'x'); print('recv', s.recv(10))
except OSError as ex:  # the reset may even beat connect() returning
    print('error', type(ex).__name__)
"""
        r = py(e, code, extra=keys)
        assert r.rc == 0 and (r.out in ("recv b''\n", "error ConnectionResetError\n")), r
    finally:
        dead.close()


@test
def broker_socket_bound(e):
    d = tempfile.mkdtemp(prefix="broker-", dir=e.root)
    open(os.path.join(d, "secret"), "w").write("host secret\n")

    def handler(conn):
        msg = conn.recv(1024)
        conn.sendall(b"broker:" + msg)
    srv = UnixServer(os.path.join(d, "broker.sock"), handler)
    try:
        code = f"""
import os, socket
p = os.environ['AGENTD_BROKER']
s = socket.socket(socket.AF_UNIX); s.connect(p); s.sendall(b'hello'); print(s.recv(100).decode())
print(sorted(os.listdir('/run/agentd')), os.path.exists({d!r}), os.path.exists({d + '/secret'!r}))
try:
    os.unlink(p); print('unlinked')
except OSError as ex:
    print('unlink', ex.errno)
"""
        env = ["PATH=/usr/bin:/bin", "AGENTD_BROKER=/run/agentd/broker.sock"]
        for extra in ([], ["landlock=1"]):
            r = e.run(e.spec(["/usr/bin/python3", "-c", code], env=env,
                             extra=[f"broker_socket={srv.path}"] + extra))
            assert r.rc == 0, (extra, r)
            lines = r.out.splitlines()
            assert lines[0] == "broker:hello" and lines[1] == "['broker.sock'] False False", (extra, r)
            assert lines[2] != "unlinked", (extra, r)
        assert os.path.exists(srv.path)
    finally:
        srv.close()


# ---- the zygote ------------------------------------------------------------------

ZYGOTE_TESTS = []


def zygote_test(fn):
    ZYGOTE_TESTS.append(fn)
    return fn


def eof_within(fd, timeout):
    """True when fd (a pipe's read end) reports EOF within timeout: no writer is left."""
    if not select.select([fd], [], [], timeout)[0]:
        return False
    return os.read(fd, 1) == b""


def gone(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


@zygote_test
def zygote_refuses_garbage_and_leaks_nothing(e):
    z = Zygote(e.binary)
    try:
        def hdr(magic=ZYGOTE_MAGIC, seq=7, n=6, size=16):
            return struct.pack("=IIII", magic, seq, n, 0).ljust(size, b"x")[:size]
        r, w = os.pipe()
        six = [w] * 6
        for header, fds in ((hdr(magic=0xDEADBEEF), six),  # not ours
                            (hdr(n=7), six),                 # count does not match
                            (hdr(), []),                     # no fds
                            (hdr(n=8), [w] * 8),             # too many
                            (hdr(n=5), [w] * 5),             # too few
                            (hdr(size=17), six),             # too long
                            (hdr(size=12), six)):            # too short
            seq, pid = z.request(header, fds)
            assert pid == -EBADMSG, (header, len(fds), pid)
        # Every copy of w the zygote received is closed again.
        os.close(w)
        assert eof_within(r, 2), "the zygote kept a refused request's fd"
        os.close(r)
        # Still serving, and a spawn leaves nothing behind in it either.
        e.zygote = z
        r, w = os.pipe()
        res = e.run(e.spec(["/bin/true"]), extra_fds=[w])
        assert res.rc == 0 and started_ok(res) and res.messages[1:] == ["exit 0"], res
        os.close(w)
        assert eof_within(r, 2)
        os.close(r)
        # Its memory does not grow with the number of requests.
        for _ in range(3):
            e.run(e.spec(["/bin/true"], mode="none"))
        before = z.memory()
        null = os.open("/dev/null", os.O_RDONLY)
        try:
            for _ in range(20):
                res = e.run(e.spec(["/bin/true"], mode="none"))
                assert res.rc == 0, res
                z.request(hdr(magic=1), [null])
        finally:
            os.close(null)
        after = z.memory()
        assert before == after, (before, after)
    finally:
        e.zygote = None
        z.close()
    assert z.p.returncode == 0, z.p.returncode  # EOF on its socket: a clean exit


@zygote_test
def zygote_socket_not_inherited_and_sandbox_outlives_zygote(e):
    """The hands holds no copy of the zygote's socket (we see EOF once the zygote
    is gone), and it is agentd's child: a dead zygote takes no sandbox along."""
    z = Zygote(e.binary)
    e.zygote = z
    seen = {}

    def on_started(p, fds):
        z.p.kill()
        z.p.wait()
        assert select.select([z.sock], [], [], 2)[0] and z.sock.recv(64) == b"", "the zygote's socket lives on"
        time.sleep(0.2)
        seen["alive"] = not gone(p.pid)
        p.send_signal(signal.SIGTERM)
    try:
        r = e.run(e.spec(["sleep", "30"]), on_started=on_started)
    finally:
        e.zygote = None
        z.sock.close()
    assert seen.get("alive") and r.rc == 128 + 15 and r.messages[-1] == "signal 15", (seen, r)


@zygote_test
def daemon_sigkill_takes_everything(e):
    """daemon -> zygote, daemon -> hands -> init -> command: a SIGKILLed daemon
    leaves no zygote and no sandbox behind."""
    tag = f"{os.getpid()}{int(time.time() * 1000) % 100000}"
    rp, wp = os.pipe()
    daemon = os.fork()
    if daemon == 0:
        try:
            os.close(rp)
            z = Zygote(e.binary)
            e.zygote = z
            def on_started(p, fds):
                os.write(wp, f"{z.p.pid} {p.pid}\n".encode())
                time.sleep(60)
            e.run(e.spec(["/bin/sh", "-c", f"sleep 3{tag} & sleep 4{tag}"]), on_started=on_started, timeout=60)
        finally:
            os._exit(1)
    os.close(wp)
    try:
        assert select.select([rp], [], [], 20)[0], "no sandbox started"
        zpid, hpid = map(int, os.read(rp, 100).split())
        deadline = time.monotonic() + 5
        while subprocess.run(["pgrep", "-f", f"sleep [34]{tag}"], capture_output=True).stdout.count(b"\n") < 2:
            assert time.monotonic() < deadline, "the command did not start"
            time.sleep(0.02)
    finally:
        os.kill(daemon, signal.SIGKILL)
        os.waitpid(daemon, 0)
        os.close(rp)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        left = subprocess.run(["pgrep", "-f", f"sleep [34]{tag}"], capture_output=True, text=True).stdout
        if gone(zpid) and gone(hpid) and left == "":
            break
        time.sleep(0.05)
    assert gone(zpid) and gone(hpid) and left == "", (gone(zpid), gone(hpid), left)


# ---- warm sandboxes (helper/warm.c) ----------------------------------------------

WARM_TESTS = []


def warm_test(fn):
    WARM_TESTS.append(fn)
    return fn


def read_status(sock, timeout=20):
    messages = []
    while select.select([sock], [], [], timeout)[0]:
        data = sock.recv(4096)
        if not data:
            return messages
        messages.append(data.decode().rstrip("\n"))
    raise AssertionError(f"timeout; messages so far {messages}")


@warm_test
def warm_sandbox_gets_its_workspace_only_at_attach(e):
    """The warm spec names no workspace, and the workspace is resolved when the
    spawn attaches: one that did not even exist while the sandbox got warm is
    the one the command sees, with what was written after the warm-up."""
    items = e.spec(["/bin/sh", "-c", "cat late; pwd"])
    late_ws = os.path.join(e.root, "late-ws")
    items = [f"workspace={late_ws}" if i.startswith("workspace=") else i for i in items]
    p, control, status_fd = e.start_warm(items)
    try:
        os.mkdir(late_ws)
        with open(os.path.join(late_ws, "late"), "w") as f:
            f.write("written after the warm-up\n")
        outf = tempfile.TemporaryFile()
        ours = e.attach(control, items + [f"status_fd={status_fd}"], [os.open("/dev/null", os.O_RDONLY), outf.fileno(), outf.fileno()])
        messages = read_status(ours)
        assert p.wait(timeout=10) == 0, messages
        outf.seek(0)
        out = outf.read().decode()
        assert messages[1:] == ["exit 0"] and out == f"written after the warm-up\n{late_ws}\n", (messages, out)
    finally:
        p.kill()
        p.wait()
        shutil.rmtree(late_ws, ignore_errors=True)


@warm_test
def warm_sandbox_refuses_another_tasks_spawn(e):
    """What the warm-up applied (here /tmp's size) must be what the spawn asks
    for: a spawn of another policy fails closed and runs nothing."""
    items = e.spec(["/bin/sh", "-c", "echo ran"], extra=["tmp_size=1048576"])
    p, control, status_fd = e.start_warm(items)
    try:
        other = [i if i != "tmp_size=1048576" else "tmp_size=2097152" for i in items]
        outf = tempfile.TemporaryFile()
        ours = e.attach(control, other + [f"status_fd={status_fd}"], [os.open("/dev/null", os.O_RDONLY), outf.fileno(), outf.fileno()])
        messages = read_status(ours)
        assert p.wait(timeout=10) == 125, messages
        outf.seek(0)
        assert outf.read() == b"", "the command ran"
        assert messages[:1] == ["error attach: the spawn's spec does not match the warm sandbox's task"], messages
    finally:
        p.kill()
        p.wait()


@warm_test
def warm_sandbox_ends_quietly_unused_and_refuses_garbage(e):
    """EOF on the control socket (the pool let go) ends it with nothing run; a
    malformed attach is refused and its fds are not kept."""
    items = e.spec(["/bin/true"])
    p, control, _ = e.start_warm(items)
    control.close()
    assert p.wait(timeout=10) == 0
    p, control, _ = e.start_warm(items)
    try:
        r, w = os.pipe()
        control.sendmsg([struct.pack("=Q", WARM_ATTACH_MAGIC ^ 1)], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [w]))])
        os.close(w)
        assert read_status(control) == ["error attach: malformed attach message"]
        assert p.wait(timeout=10) == 125
        assert eof_within(r, 2), "the warm sandbox kept a refused attach's fd"
        os.close(r)
    finally:
        p.kill()
        p.wait()


@warm_test
def warm_sandboxes_share_nothing(e):
    """Two spawns, two warm sandboxes: each its own pid namespace (the command
    is pid 2 in both, the init pid 1) and its own empty /tmp."""
    outs = []
    for _ in range(2):
        items = e.spec(["/bin/sh", "-c", "ls -A /tmp; echo $$; touch /tmp/mark; readlink /proc/self/ns/pid"], mode="none")
        p, control, status_fd = e.start_warm(items)
        try:
            outf = tempfile.TemporaryFile()
            ours = e.attach(control, items + [f"status_fd={status_fd}"], [os.open("/dev/null", os.O_RDONLY), outf.fileno(), outf.fileno()])
            messages = read_status(ours)
            assert p.wait(timeout=10) == 0, messages
            outf.seek(0)
            outs.append(outf.read().decode().split("\n"))
        finally:
            p.kill()
            p.wait()
    assert outs[0][0] == "2" and outs[1][0] == "2", outs  # /tmp empty: ls printed nothing
    assert outs[0][1] != outs[1][1], outs  # different pid namespaces


def main():
    if os.geteuid() == 0:
        reexec_unprivileged()
    binary = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("AGENTD_SANDBOX")
    if not binary:
        print("usage: test_sandbox_hands.py path/to/agentd-sandbox [seccomp.bpf]", file=sys.stderr)
        sys.exit(2)
    bpf = sys.argv[2] if len(sys.argv) > 2 else None
    os.environ[HOST_SECRET_VAR] = "leaked"
    e = Env(os.path.abspath(binary), bpf)
    passed = failed = 0
    # exec'd first, then all again forked by one zygote, then the zygote's own.
    z = Zygote(e.binary)
    rounds = [("", TESTS, None), (" [zygote]", [t for t in TESTS if t not in EXEC_ONLY], z),
              (" [warm]", [t for t in TESTS if t not in EXEC_ONLY], "warm"), ("", ZYGOTE_TESTS, None), ("", WARM_TESTS, None)]
    try:
        for suffix, tests, zygote in rounds:
            for t in tests:
                e.warm = zygote == "warm"
                e.zygote = zygote if zygote != "warm" else None
                try:
                    t(e)
                    print(f"ok   {t.__name__}{suffix}")
                    passed += 1
                except Exception:
                    print(f"FAIL {t.__name__}{suffix}")
                    traceback.print_exc()
                    failed += 1
    finally:
        e.zygote = None
        e.warm = False
        z.close()
        shutil.rmtree(e.root, ignore_errors=True)
        shutil.rmtree(os.path.join(e.home, ".ssh"), ignore_errors=True)
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
