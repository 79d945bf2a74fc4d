#!/usr/bin/python3
"""What a user sees is what happened (issue 13): systemd's status line, the caller's umask
in the sandbox, global options after the command, broken task files where the user looks."""
import json
import os
import socket
import tempfile
import time

from harness import Daemon, run_tests


class NotifySocket:
    """A stand-in for systemd's notification socket (sd_notify(3))."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="notify-")
        self.path = os.path.join(self.dir, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.statuses = []

    def wait_status(self, pred, timeout=10):
        deadline = time.time() + timeout
        while time.time() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.time()))
            try:
                msg = self.sock.recv(4096).decode()
            except socket.timeout:
                break
            for line in msg.split("\n"):
                if line.startswith("STATUS="):
                    self.statuses.append(line[7:])
                    if pred(line[7:]):
                        return line[7:]
        raise AssertionError(f"no matching STATUS= among {self.statuses}")


def workspace(d):
    ws = os.path.join(d.tmp, "ws")
    os.makedirs(ws, exist_ok=True)
    return ws


def test_status_line_sent_and_kept_current():
    n = NotifySocket()
    with Daemon(env={"NOTIFY_SOCKET": n.path}) as d:
        st = n.wait_status(lambda s: s.startswith("serving"))
        assert st == "serving, 0 sandboxes (0 running), vault: unconfigured", st
        ws = workspace(d)
        p = d.agentctl("spawn", "--detach", "--", "sleep", "30", cwd=ws, check=0)
        sid = p.stdout.decode().strip()
        n.wait_status(lambda s: s.startswith("serving, 1 sandbox (1 running)"))
        d.agentctl("revoke", "--all", check=0)
        n.wait_status(lambda s: "LOCKED DOWN" in s and "(0 running)" in s)
        d.agentctl("unlock", check=0)
        n.wait_status(lambda s: s == "serving, 1 sandbox (0 running), vault: unconfigured")
        assert sid


def test_sandbox_files_get_the_callers_umask():
    old = os.umask(0o077)   # what the unit's UMask=0077 gives agentd
    try:
        d = Daemon(tasks={"rw": "[Task]\nDescription=rw\n[Filesystem]\nWorkspace=rw\n"}).start()
    finally:
        os.umask(old)
    try:
        ws = workspace(d)
        for mask, fmode, dmode in ((0o022, 0o644, 0o755), (0o027, 0o640, 0o750)):
            os.umask(mask)
            try:
                d.agentctl("spawn", "--task", "rw", "--", "sh", "-c", f"echo x > f{mask:o}; mkdir d{mask:o}",
                           cwd=ws, check=0)
            finally:
                os.umask(old)
            got = (os.stat(os.path.join(ws, f"f{mask:o}")).st_mode & 0o777,
                   os.stat(os.path.join(ws, f"d{mask:o}")).st_mode & 0o777)
            assert got == (fmode, dmode), (oct(mask), [oct(x) for x in got])
        # A bad mask is refused by the daemon.
        err, _ = d.client().call("sandbox.spawn", {"argv": ["true"], "workspace": ws, "umask": 0o1000})
        assert err and err["code"] == "invalid_params" and "umask" in err["message"], err
    finally:
        d.stop()


def test_global_options_after_the_command():
    with Daemon() as d:
        p = d.agentctl("ps", "--json", check=0)
        assert json.loads(p.stdout) == [], p.stdout
        p = d.agentctl("status", "--json", check=0)
        assert json.loads(p.stdout)["vault"] == "unconfigured"
        # --socket after the command too (and --socket=PATH)
        for args in (["ping", "--socket", d.socket, "--json"], ["ping", f"--socket={d.socket}"]):
            p = d.agentctl(*args, env={"AGENTD_SOCKET": "/nonexistent"}, check=0)
        # ...but never inside the command a sandbox runs
        ws = workspace(d)
        p = d.agentctl("spawn", "--", "echo", "--json", cwd=ws, check=0)
        assert p.stdout == b"--json\n", p.stdout
        p = d.agentctl("spawn", "--json", "--task", "default", "--", "echo", "hi", cwd=ws, check=0)
        assert p.stdout == b"hi\n", p.stdout


BROKEN = "[Task]\nDescription=broken\n[Network]\nMode=bogus\n"


def test_broken_task_files_where_the_user_looks():
    with Daemon(tasks={"bad": BROKEN, "good": "[Task]\nDescription=fine\n"}) as d:
        path = os.path.join(d.config_home, "agentd", "tasks", "bad.task")
        tasks = d.client().ok("task.list")
        bad = [t for t in tasks if t.get("error")]
        assert len(bad) == 1 and bad[0]["name"] == "bad" and bad[0]["source"] == path, tasks
        assert bad[0]["error"].startswith(f"{path}:4: Network.Mode: "), bad
        assert "bogus" in bad[0]["error"]
        assert any(t["name"] == "good" and "error" not in t for t in tasks)
        p = d.agentctl("tasks", check=0)
        assert b"BROKEN: " + path.encode() + b":4:" in p.stdout, p.stdout
        # task show names the error instead of not_found
        err, _ = d.client().call("task.show", {"name": "bad"})
        assert err["code"] == "invalid_params" and f"{path}:4: Network.Mode" in err["message"], err
        err, _ = d.client().call("task.show", {"name": "nope"})
        assert err["code"] == "not_found", err
        # task check FILE before installing it
        cand = os.path.join(d.tmp, "new.task")
        with open(cand, "w") as f:
            f.write(BROKEN)
        p = d.agentctl("task", "check", cand, check=1)
        assert f"invalid_params: {cand}:4: Network.Mode: ".encode() in p.stderr, p.stderr
        with open(cand, "w") as f:
            f.write("[Task]\nDescription=ok now\nCommand=make\n")
        p = d.agentctl("--json", "task", "check", cand, check=0)
        r = json.loads(p.stdout)
        assert r["name"] == "new" and r["Task"]["Description"] == "ok now" and r["Task"]["Command"] == ["make"], r
        p = d.agentctl("task", "check", os.path.join(d.tmp, "missing.task"), check=2)


if __name__ == "__main__":
    run_tests(globals())
