#!/usr/bin/python3
"""A peer whose uid differs from the daemon's is refused; the daemon keeps
serving its own user. Runs as root: agentd runs as the unprivileged test user
(AGENTD_TEST_USER), the root client is the stranger."""
import os
import pwd
import shutil
import subprocess
import time

from harness import AGENTD, AGENTCTL, Client, Daemon, rpc_error, run_tests

USER = os.environ.get("AGENTD_TEST_USER", "agentd-test")


def as_user(argv):
    return ["/usr/sbin/runuser", "-u", USER, "--"] + argv


def test_other_uid_refused():
    if os.getuid() != 0:
        return "skip"
    pw = pwd.getpwnam(USER)
    d = Daemon(env={"HOME": pw.pw_dir, "USER": USER})
    for root, dirs, files in os.walk(d.tmp):
        os.chown(root, pw.pw_uid, pw.pw_gid)
        for f in files:
            os.chown(os.path.join(root, f), pw.pw_uid, pw.pw_gid)
    log = open(d.log_path, "ab")
    proc = subprocess.Popen(as_user([AGENTD, "--socket", d.socket]), env=d.env, stdout=log, stderr=log)
    try:
        deadline = time.time() + 10
        while not os.path.exists(d.socket) and time.time() < deadline:
            time.sleep(0.02)
        time.sleep(0.1)
        env = dict(d.env, AGENTD_SOCKET=d.socket)
        p = subprocess.run(as_user([AGENTCTL, "ping"]), env=env, capture_output=True, timeout=10)
        assert p.returncode == 0, p
        # root is a different uid: refused with unauthorized, then closed.
        c = Client(d.socket)
        msg = c.read_message()
        assert msg is not None and rpc_error(msg[2])["code"] == "unauthorized", msg
        assert c.read_message() is None
        p = subprocess.run([AGENTCTL, "--socket", d.socket, "ping"], capture_output=True, timeout=10)
        assert p.returncode == 1 and b"unauthorized" in p.stderr, p
        assert "refused connection" in d.read_log() and "uid 0" in d.read_log(), d.read_log()
        # Still serving its user.
        p = subprocess.run(as_user([AGENTCTL, "ping"]), env=env, capture_output=True, timeout=10)
        assert p.returncode == 0, p
    finally:
        # Stop agentd itself (not runuser) and expect its clean exit.
        subprocess.run(["pkill", "-TERM", "-f", f"^{AGENTD} --socket {d.socket}"])
        rc = proc.wait(timeout=15)
        assert rc == 0, (rc, d.read_log())
        shutil.rmtree(d.tmp, ignore_errors=True)


def test_attached_output_to_a_pipe_another_uid_created():
    """agentctl run through runuser (like sudo -u, su, CI runners) with stdout and stderr
    pipes that root created: agentd cannot open them again, so agentctl relays them; the
    output arrives (it was dropped with exit 0 before)."""
    if os.getuid() != 0:
        return "skip"
    pw = pwd.getpwnam(USER)
    d = Daemon(env={"HOME": pw.pw_dir, "USER": USER})
    ws = os.path.join(d.tmp, "ws")
    os.makedirs(ws)
    for root, dirs, files in os.walk(d.tmp):
        os.chown(root, pw.pw_uid, pw.pw_gid)
    log = open(d.log_path, "ab")
    proc = subprocess.Popen(as_user([AGENTD, "--socket", d.socket]), env=d.env, stdout=log, stderr=log)
    try:
        deadline = time.time() + 10
        while not os.path.exists(d.socket) and time.time() < deadline:
            time.sleep(0.02)
        time.sleep(0.1)
        env = dict(d.env, AGENTD_SOCKET=d.socket)
        p = subprocess.run(as_user([AGENTCTL, "spawn", "--", "sh", "-c", "echo relayed; echo to-stderr >&2; exit 3"]),
                           env=env, capture_output=True, timeout=30, cwd=ws)
        assert (p.returncode, p.stdout, p.stderr) == (3, b"relayed\n", b"to-stderr\n"), (p, d.read_log())
        # Lots of output arrives whole, in order.
        p = subprocess.run(as_user([AGENTCTL, "spawn", "--", "seq", "1", "100000"]), env=env,
                           stdout=subprocess.PIPE, timeout=60, cwd=ws)
        assert p.returncode == 0 and p.stdout == b"".join(b"%d\n" % i for i in range(1, 100001)), len(p.stdout)
        assert "cannot attach" not in d.read_log(), d.read_log()
        # Another client that sends such pipes itself: refused before anything runs (it was
        # spawned with its output dropped).
        snippet = (
            "import msgpack, socket, sys\n"
            "s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])\n"
            "req = msgpack.packb([0, 1, 'sandbox.spawn', [{'argv': ['echo', 'lost'], 'workspace': sys.argv[2], 'attach': True}]])\n"
            "socket.send_fds(s, [req], [0, 1, 2])\n"
            "u = msgpack.Unpacker(raw=False)\n"
            "while True:\n"
            "    u.feed(s.recv(65536))\n"
            "    for m in u:\n"
            "        print(repr(m), flush=True); sys.exit(0)\n")
        p = subprocess.run(as_user(["/usr/bin/python3", "-c", snippet, d.socket, ws]), env=env,
                           capture_output=True, timeout=30, cwd=ws)
        assert p.returncode == 0 and b"invalid_params" in p.stdout and b"cannot attach the caller's stdout" in p.stdout, p
        assert b"lost" not in p.stdout
    finally:
        subprocess.run(["pkill", "-TERM", "-f", f"^{AGENTD} --socket {d.socket}"])
        rc = proc.wait(timeout=15)
        assert rc == 0, (rc, d.read_log())
        shutil.rmtree(d.tmp, ignore_errors=True)


if __name__ == "__main__":
    run_tests(globals())
