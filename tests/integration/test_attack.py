#!/usr/bin/python3
"""The escape battery: tests/attack/attacks run inside real sandboxes.

Each test spawns `attacks NAME ARGS...` through agentctl in a fresh workspace
and requires `HELD` (exit 0); where only the host can tell (files that must
not persist, the hostname, leftover processes, injected terminal input, a
listener that must see no connection), the test checks the host as well.
Every verdict is printed as a HELD/ESCAPED line. Run with /usr/bin/python3 as an
unprivileged user (tests/run-all.sh does)."""
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

ATTACKS = os.path.join(harness.BUILD, "tests/attack/attacks")
TAG = uuid.uuid4().hex[:12]
MARKER = f"agentd-attack-{TAG}"
SECRET = f"s3cr3t-{TAG}"
HOME = os.path.expanduser("~")
BOMB_TASK = "[Task]\nDescription=resource exhaustion under a timeout\nTimeout=5s\n"


class Listener:
    """Counts connections to a host socket."""

    def __init__(self, family, addr):
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.bind(addr)
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.connections = 0
        self.stopping = False
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
                self.connections += 1
                c.close()
            except OSError:
                pass

    def close(self):
        self.stopping = True
        self.thread.join()
        self.sock.close()


class Host:
    """Host-side targets: markers in ~, listeners, a marked host process."""

    def __init__(self):
        self.saved = {}
        self.created_ssh_dir = not os.path.isdir(os.path.join(HOME, ".ssh"))
        for rel, text in ((".ssh/id_rsa", f"-----BEGIN PRIVATE KEY----- {MARKER}\n"),
                          (".bashrc", f"# host bashrc {MARKER}\n")):
            path = os.path.join(HOME, rel)
            try:
                with open(path, "rb") as f:
                    self.saved[path] = f.read()
            except FileNotFoundError:
                self.saved[path] = None
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            with open(path, "w") as f:
                f.write(text)
        self.ssh = os.path.join(HOME, ".ssh/id_rsa")
        self.bashrc = os.path.join(HOME, ".bashrc")
        self.bashrc_text = self.read(self.bashrc)
        self.tcp = Listener(socket.AF_INET, ("127.0.0.1", 0))
        self.tcp_port = self.tcp.sock.getsockname()[1]
        try:
            self.tcp6 = Listener(socket.AF_INET6, ("::1", 0))
            self.tcp6_port = self.tcp6.sock.getsockname()[1]
        except OSError:
            self.tcp6, self.tcp6_port = None, None
        self.abstract_name = f"agentd-attack-{TAG}"
        self.abstract = Listener(socket.AF_UNIX, "\0" + self.abstract_name)
        self.unix_dir = f"/tmp/agentd-attack-{TAG}"
        os.makedirs(self.unix_dir, exist_ok=True)
        self.unix_path = os.path.join(self.unix_dir, "sock")
        self.unix = Listener(socket.AF_UNIX, self.unix_path)
        self.proc = subprocess.Popen(["/usr/bin/python3", "-c", "import time; time.sleep(3600)", MARKER])
        self.hostname = socket.gethostname()

    @staticmethod
    def read(path):
        try:
            with open(path) as f:
                return f.read()
        except FileNotFoundError:
            return None

    def listeners(self):
        return [x for x in (self.tcp, self.tcp6, self.abstract, self.unix) if x]

    def close(self):
        self.proc.kill()
        self.proc.wait()
        for x in self.listeners():
            x.close()
        shutil.rmtree(self.unix_dir, ignore_errors=True)
        for path, data in self.saved.items():
            if data is None:
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
            else:
                with open(path, "wb") as f:
                    f.write(data)
        if self.created_ssh_dir:
            try:
                os.rmdir(os.path.join(HOME, ".ssh"))
            except OSError:
                pass


D = None
H = None
N = 0


def workspace(files=None):
    global N
    N += 1
    ws = os.path.join(D.tmp, f"ws{N}")
    os.mkdir(ws)
    shutil.copy(ATTACKS, os.path.join(ws, "attacks"))
    os.chmod(os.path.join(ws, "attacks"), 0o755)
    for name, text in (files or {}).items():
        with open(os.path.join(ws, name), "w") as f:
            f.write(text)
    return ws


def spawn(name, *args, ws=None, task=None, timeout=60, extra=()):
    ws = ws or workspace()
    cmd = ["spawn"] + (["--task", task] if task else []) + list(extra) + ["--", "./attacks", name] + [str(a) for a in args]
    t0 = time.monotonic()
    p = D.agentctl(*cmd, cwd=ws, env={"AGENTD_ATTACK_SECRET": SECRET}, timeout=timeout)
    p.elapsed = time.monotonic() - t0
    p.out = p.stdout.decode(errors="replace")
    p.err = p.stderr.decode(errors="replace")
    for line in p.out.splitlines():
        if line.startswith(("HELD ", "ESCAPED ")):
            print("   ", line[:2000], flush=True)
    return p


def verdict(name, ok, detail):
    print(f"    {'HELD' if ok else 'ESCAPED'} {name} (host check): {detail}", flush=True)
    assert ok, f"ESCAPED {name}: {detail}"


def attack(name, *args, **kw):
    """Runs an attack and requires HELD with exit 0."""
    p = spawn(name, *args, **kw)
    assert f"HELD {name}:" in p.out and p.returncode == 0, \
        f"{name}: rc={p.returncode} stdout={p.out[-3000:]!r} stderr={p.err[-2000:]!r}"
    return p


def host_unchanged():
    verdict("home", H.read(H.bashrc) == H.bashrc_text, "~/.bashrc unchanged")
    verdict("home", MARKER in (H.read(H.ssh) or ""), "~/.ssh/id_rsa unchanged")


# -------------------------------------------------------------- files

def test_ssh_and_home_read():
    attack("ssh_read", MARKER)


def test_ssh_through_workspace():
    # A symlink to ~/.ssh planted in the workspace, ~/.ssh as the workspace, a
    # workspace path that is a symlink to ~/.ssh, and the home as the workspace.
    ssh_dir = os.path.dirname(H.ssh)
    ws = workspace()
    os.symlink(ssh_dir, os.path.join(ws, "keys"))
    os.symlink(H.ssh, os.path.join(ws, "key"))
    attack("ssh_read", MARKER, "keys/id_rsa", "key", ws=ws)
    # With ~/.ssh (or a symlink to it) as the workspace the attacks binary cannot
    # be in it: the shell's cat does the reading.
    link = os.path.join(D.tmp, f"sshlink{N}")
    os.symlink(ssh_dir, link)
    read = f"cat id_rsa {H.ssh} {link}/id_rsa; ls -la . {ssh_dir}"
    for what in (ssh_dir, link, HOME):
        p = D.agentctl("spawn", "--workspace", what, "--", "/bin/sh", "-c", read, cwd=D.tmp,
                       env={"AGENTD_ATTACK_SECRET": SECRET})
        out = p.stdout.decode(errors="replace")
        verdict("ssh_read", MARKER not in out,
                f"--workspace {what}: rc={p.returncode} {p.stderr.decode(errors='replace').strip()[:300]!r}")


def test_write_system_dirs():
    name = f"{MARKER}-sys"
    attack("write_system", name)
    for d in ("/etc", "/usr", "/usr/bin", "/usr/local/bin", "/etc/profile.d"):
        verdict("write_system", not os.path.exists(os.path.join(d, name)), f"{d}/{name} absent on the host")


def test_write_home_persistence():
    before = {rel: H.read(os.path.join(HOME, rel)) for rel in (".profile", ".ssh/authorized_keys")}
    attack("write_home", MARKER + "-home")
    host_unchanged()
    for rel, text in before.items():
        verdict("write_home", H.read(os.path.join(HOME, rel)) == text, f"~/{rel} unchanged")
    for rel in (".config/autostart/x.desktop", ".config/systemd/user/default.target.wants/x.service"):
        verdict("write_home", not os.path.exists(os.path.join(HOME, rel)), f"~/{rel} absent")


def test_workspace_overlay_keeps_host_copy():
    ws = workspace({"hostfile": "host content\n", "deleteme": "keep me\n"})
    attack("workspace_write", MARKER + "-ws", ws=ws)
    verdict("workspace_write", H.read(os.path.join(ws, "hostfile")) == "host content\n", "hostfile unchanged")
    verdict("workspace_write", H.read(os.path.join(ws, "deleteme")) == "keep me\n", "deleteme still there")
    for rel in ("newfile", ".envrc", ".git", ".vscode"):
        verdict("workspace_write", not os.path.exists(os.path.join(ws, rel)), f"{rel} not planted on the host")


def test_symlink_to_bashrc():
    ws = workspace()
    os.symlink(H.bashrc, os.path.join(ws, "planted_link"))
    attack("symlink_bashrc", f"written-through-link-{TAG}", f"host bashrc {MARKER}", ws=ws)
    host_unchanged()
    verdict("symlink_bashrc", os.readlink(os.path.join(ws, "planted_link")) == H.bashrc, "planted link unchanged")
    verdict("symlink_bashrc", not os.path.lexists(os.path.join(ws, "new_link")), "new_link not on the host")


def test_proc_exe_overwrite():
    attack("proc_exe")


# ------------------------------------------------------------ network

def test_tcp_loopback():
    args = [H.tcp_port] + ([H.tcp6_port] if H.tcp6_port else [])
    before = H.tcp.connections + (H.tcp6.connections if H.tcp6 else 0)
    attack("tcp_loopback", *args)
    time.sleep(0.3)
    after = H.tcp.connections + (H.tcp6.connections if H.tcp6 else 0)
    verdict("tcp_loopback", after == before, f"host listeners saw {after - before} connections")


def test_abstract_unix_socket():
    before = H.abstract.connections
    attack("abstract_unix", H.abstract_name)
    time.sleep(0.3)
    verdict("abstract_unix", H.abstract.connections == before, "host abstract listener saw no connection")


def test_host_unix_sockets():
    before = H.unix.connections
    attack("host_sockets", D.socket, H.unix_path)
    time.sleep(0.3)
    verdict("host_sockets", H.unix.connections == before, "host path listener saw no connection")


def test_unix_socket_in_workspace():
    # A host service listening on a socket inside the project directory: the
    # overlay must not turn it into a way out.
    ws = workspace()
    lst = Listener(socket.AF_UNIX, os.path.join(ws, "svc.sock"))
    try:
        attack("host_sockets", os.path.join(ws, "svc.sock"), ws=ws)
        time.sleep(0.3)
        verdict("workspace_socket", lst.connections == 0, "workspace socket listener saw no connection")
    finally:
        lst.close()


def test_raw_and_netlink_sockets():
    attack("raw_socket")


def test_dns_and_offhost_routes():
    attack("dns")


def test_vsock():
    attack("vsock")


# ---------------------------------------------------------- processes

def test_host_processes_invisible():
    attack("host_procs", H.proc.pid, MARKER, D.proc.pid)


def test_kill_init_and_agentd():
    attack("kill", D.proc.pid)
    verdict("kill", D.proc.poll() is None, "agentd still running")
    verdict("kill", H.proc.poll() is None, "host process still running")


def test_environment_secret():
    attack("env_secret")


def test_inherited_fds():
    # Give agentctl an extra inheritable fd: it must not reach the sandbox.
    r, w = os.pipe()
    os.set_inheritable(r, True)
    try:
        ws = workspace()
        e = dict(D.env)
        e.pop("XDG_RUNTIME_DIR", None)
        e.update(AGENTD_SOCKET=D.socket, AGENTD_ATTACK_SECRET=SECRET)
        p = subprocess.run([harness.AGENTCTL, "spawn", "--", "./attacks", "inherited_fds"], cwd=ws, env=e,
                           capture_output=True, timeout=60, pass_fds=(r,))
        out = p.stdout.decode(errors="replace")
        for line in out.splitlines():
            print("   ", line)
        assert "HELD inherited_fds:" in out and p.returncode == 0, f"rc={p.returncode} {out!r} {p.stderr!r}"
    finally:
        os.close(r)
        os.close(w)


# --------------------------------------------------------- namespaces

def test_nested_namespaces():
    attack("userns")


def test_setns_to_host():
    attack("setns", H.proc.pid, D.proc.pid, 1)


def test_mount():
    attack("mount")


def test_sethostname():
    attack("sethostname", MARKER[:60])
    verdict("sethostname", socket.gethostname() == H.hostname, f"host hostname still {H.hostname}")


def test_proc_sys():
    attack("proc_sys", MARKER[:60])
    verdict("proc_sys", socket.gethostname() == H.hostname, f"host hostname still {H.hostname}")


# -------------------------------------------------------- kernel APIs

def test_ptrace():
    attack("ptrace")


def test_process_vm_readv():
    attack("process_vm")


def test_io_uring():
    attack("io_uring")


def test_keyctl():
    attack("keyctl")


def test_bpf():
    attack("bpf")


def test_perf_event_open():
    attack("perf")


def test_userfaultfd():
    attack("userfaultfd")


def test_open_by_handle_at():
    attack("handle")


def test_dmesg():
    attack("dmesg")


def test_raw_disk():
    attack("raw_disk")


def test_compat_syscall_abis():
    attack("compat_abi")


def test_personality():
    attack("personality")


# ----------------------------------------------------------- terminal

def test_tiocsti_without_tty():
    attack("tiocsti", "echo " + MARKER)


def test_tiocsti_through_pty():
    # agentctl -t under script(1): the outer shell reads its terminal right after
    # the sandbox ends; an injection would show up there.
    if not shutil.which("script"):
        return "skip"
    ws = workspace()
    inject = f"echo INJECTED-{TAG}"
    e = dict(D.env)
    e.pop("XDG_RUNTIME_DIR", None)
    e.update(AGENTD_SOCKET=D.socket, AGENTD_ATTACK_SECRET=SECRET)
    inner = (f"{harness.AGENTCTL} spawn -t -- ./attacks tiocsti '{inject}'; echo \"RC=$?\"; "
             "read -t 2 line; echo \"OUTER_READ=[$line]\"")
    p = subprocess.run(["script", "-qec", inner, "/dev/null"], cwd=ws, env=e, capture_output=True, timeout=60,
                       stdin=subprocess.DEVNULL)
    out = p.stdout.decode(errors="replace")
    for line in out.splitlines():
        if line.startswith(("HELD ", "ESCAPED ", "RC=", "OUTER_READ=")):
            print("   ", line.strip()[:2000])
    assert "HELD tiocsti:" in out and "RC=0" in out, f"rc={p.returncode} {out!r} {p.stderr!r}"
    read = out.split("OUTER_READ=[", 1)[1].split("]", 1)[0] if "OUTER_READ=[" in out else ""
    verdict("tiocsti", f"INJECTED-{TAG}" not in read, f"outer shell read {read!r}")


# --------------------------------------------------------- exhaustion

def attacks_left():
    """Host processes still running the attacks binary (any sandbox)."""
    left = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if cmd.startswith(b"./attacks\0") and (b"fork_bomb" in cmd or b"memory_hog" in cmd):
            left.append(int(pid))
    return left


def exhaustion(name, *args):
    p = spawn(name, *args, task="bomb", timeout=90)
    print(f"    {name}: rc={p.returncode} after {p.elapsed:.1f}s: {p.out.strip()[:200]}", flush=True)
    verdict(name, p.elapsed < 45, f"ended after {p.elapsed:.1f}s (Timeout=5s)")
    verdict(name, p.returncode != 0, f"killed, rc={p.returncode}")
    deadline = time.monotonic() + 10
    while attacks_left() and time.monotonic() < deadline:
        time.sleep(0.2)
    left = attacks_left()
    verdict(name, not left, f"{len(left)} processes left on the host")


def test_fork_bomb():
    exhaustion("fork_bomb", 5000)


def test_memory_hog():
    exhaustion("memory_hog", 2048)


def main():
    global D, H
    assert os.path.exists(ATTACKS), f"{ATTACKS} missing: build tests/attack first"
    if os.getuid() == 0:
        print("run as an unprivileged user (tests/run-all.sh does)")
    H = Host()
    D = harness.Daemon(tasks={"bomb": BOMB_TASK})
    try:
        D.start()
        harness.run_tests(globals())
    finally:
        try:
            D.stop()
        finally:
            H.close()


if __name__ == "__main__":
    main()
