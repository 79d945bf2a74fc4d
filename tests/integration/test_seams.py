#!/usr/bin/python3
"""Spawn and incident seams (issue 12 §3, §5, §6, §7): places that are never a
workspace, incident actions that fail closed and report only what happened,
stdin as agentd's pipe rather than the caller's open file, and resource bounds
that hold without delegated cgroups."""
import json
import os
import pty
import shutil
import stat
import subprocess
import termios
import time

from harness import AGENTCTL, BUILD, Daemon, proc_stats, run_tests
from test_broker import enrolled_daemon

ATTACKS = os.path.join(BUILD, "tests/attack/attacks")

# A CgroupPath that cannot be used: agentd runs as if started by hand, without a delegated cgroup.
NO_CGROUP = "[Daemon]\nCgroupPath=/nonexistent-agentd-cgroup\n"


def workspace(d, name="ws"):
    ws = os.path.join(d.tmp, name)
    os.makedirs(ws, exist_ok=True)
    return ws


def ctl_env(d):
    e = dict(d.env)
    e.pop("XDG_RUNTIME_DIR", None)
    e["AGENTD_SOCKET"] = d.socket
    return e


def proc_comms(tree):
    """{pid: (comm, wchan)} for a failure message."""
    out = {}
    for p in tree:
        try:
            out[p] = (open(f"/proc/{p}/comm").read().strip(), open(f"/proc/{p}/wchan").read().strip())
        except OSError:
            out[p] = None
    return out


def proc_tree(root):
    """{pid: state} of `root` and every process below it (host view)."""
    ppid, state = {}, {}
    for p, f in proc_stats().items():
        state[p], ppid[p] = f[0], int(f[1])
    out = {}
    for p in state:
        q, n = p, 0
        while q > 1 and q != root and n < 10000:
            q, n = ppid.get(q, 0), n + 1
        if q == root:
            out[p] = state[p]
    return out


def vfork_parent_waiting(root):
    """True when a process below `root` is in "D" and has a child: a vfork parent waiting."""
    tree = proc_tree(root)
    stats = proc_stats(list(tree))
    parents = {int(f[1]) for f in stats.values()}
    return any(st == "D" and p in parents for p, st in tree.items())


def cpu_of(pids):
    return sum(int(f[11]) + int(f[12]) for f in proc_stats(pids).values())


# ---- §3: the caller chooses the workspace, but not every place is one ----

def test_workspace_refuses_agentd_dirs_pseudo_fs_and_their_ancestors():
    with Daemon() as d:
        c = d.client()
        os.makedirs(os.path.join(d.config_home, "agentd", "tasks"), exist_ok=True)
        link = os.path.join(d.tmp, "innocent")
        os.symlink(d.runtime, link)
        refused = {
            d.runtime: "runtime directory",                             # $XDG_RUNTIME_DIR: the agentd socket
            os.path.join(d.runtime, "agentd"): "runtime directory",     # the socket's own directory
            link: "runtime directory",                                  # a symlink does not dodge the rule
            d.tmp: "runtime directory",                                 # an ancestor of all of them
            os.path.join(d.config_home, "agentd"): "config directory",
            os.path.join(d.config_home, "agentd", "tasks"): "config directory",
            d.config_home: "config directory",
            os.path.join(d.state_home, "agentd"): "state directory",
            os.path.join(d.state_home, "agentd", "sandboxes"): "state directory",
            "/proc": "pseudo-filesystem (proc)",
            "/proc/self": "pseudo-filesystem (proc)",
            "/sys": "pseudo-filesystem (sysfs)",
            "/sys/fs/cgroup": "/sys",
            "/dev/shm": "tree /dev",
            "/": "root directory",
            os.environ["HOME"]: "home directory",
        }
        for task in ("default", "build"):
            for path, rule in refused.items():
                if not os.path.isdir(path):
                    continue
                err, res = c.call("sandbox.spawn", {"task": task, "argv": ["true"], "workspace": path})
                assert err is not None, (path, res)
                assert err["code"] == "policy_denied" and rule in err["message"], (path, err)
        # agentctl says so, with the rule, and exits 1.
        p = d.agentctl("spawn", "--task", "build", "--workspace", d.runtime, "--", "true")
        assert p.returncode == 1 and b"policy_denied" in p.stderr and b"runtime directory" in p.stderr, p
        # A project directory beside them is fine.
        ws = workspace(d)
        sid = c.ok("sandbox.spawn", {"argv": ["true"], "workspace": ws})["id"]
        assert c.ok("sandbox.wait", {"id": sid})["exit_code"] == 0


def test_task_paths_never_show_agentd_dirs():
    d = Daemon()
    tdir = os.path.join(d.config_home, "agentd", "tasks")
    os.makedirs(tdir)
    tasks = {
        "peek": f"[Task]\nTimeout=1min\n[Filesystem]\nReadOnlyPaths={d.tmp}\n",
        "ro-runtime": f"[Filesystem]\nReadOnlyPaths={d.runtime}/agentd\n",
        "ro-state": f"[Filesystem]\nReadOnlyPaths={d.state_home}/agentd/sandboxes\n",
        "rw-config": f"[Filesystem]\nWritablePaths={d.config_home}/agentd\n",
    }
    for name, text in tasks.items():
        with open(os.path.join(tdir, name + ".task"), "w") as f:
            f.write(text)
    with d:
        c = d.client()
        ws = workspace(d, "proj")
        for name, rule in (("ro-runtime", "runtime directory"), ("ro-state", "state directory"),
                           ("rw-config", "config directory")):
            err, res = c.call("sandbox.spawn", {"task": name, "argv": ["true"], "workspace": ws})
            assert err is not None and err["code"] == "policy_denied" and rule in err["message"], (name, err, res)
        # A path above them is bound, but they are masked inside: no socket, no state.
        sock = os.path.join(d.runtime, "agentd", "agentd.sock")
        script = (f"test -S {sock} && echo SOCKET; ls -A {d.runtime} {d.state_home}/agentd; "
                  f"ls {d.config_home}/agentd/tasks | wc -l")
        sid = c.ok("sandbox.spawn", {"task": "peek", "argv": ["/bin/sh", "-c", script], "workspace": ws})["id"]
        c.ok("sandbox.wait", {"id": sid})
        out = c.ok("sandbox.logs", {"id": sid})["stdout"].decode()
        assert "SOCKET" not in out and "agentd.sock" not in out and "sandboxes" not in out, out
        assert out.split()[-1] == "4", out  # the config dir is only read, and stays readable


# ---- §5: incident actions fail closed and report only what happened ----

def test_freeze_without_cgroup_stops_every_process():
    with Daemon(config=NO_CGROUP) as d:
        c = d.client()
        assert c.ok("agentd.status")["cgroup"].startswith("unavailable"), c.ok("agentd.status")
        ws = workspace(d)
        # A busy loop and a busy child of it (a second process of the pid namespace).
        res = c.ok("sandbox.spawn", {"argv": ["/bin/sh", "-c", "(while :; do :; done) & while :; do :; done"],
                                     "workspace": ws})
        sid, init = res["id"], res["pid"]
        deadline = time.time() + 5
        while time.time() < deadline and len(proc_tree(init)) < 3:
            time.sleep(0.05)
        assert len(proc_tree(init)) >= 3, proc_tree(init)
        p = d.agentctl("--json", "revoke", "--sandbox", sid, "--freeze-only")
        assert p.returncode == 0, p
        r = json.loads(p.stdout)
        assert r["frozen"] == 1 and r["killed"] == 0 and r["freeze_method"] == "signal" and r["failures"] == [], r
        assert len(r["snapshots"]) == 1, r
        snap = json.load(open(os.path.join(r["snapshots"][0], "snapshot.json")))
        assert len(snap["processes"]) >= 3, snap["processes"]
        tree = proc_tree(init)
        assert tree and all(s in "Tt" for s in tree.values()), tree
        assert {s["id"]: s for s in c.ok("sandbox.list")}[sid]["state"] == "frozen"
        a = cpu_of(tree)
        time.sleep(1.0)
        assert cpu_of(tree) - a <= 1, "a frozen sandbox still uses CPU"
        # The text form says how, too.
        p = d.agentctl("revoke", "--sandbox", sid, "--freeze-only", check=0)
        assert b"freeze method: signal" in p.stdout, p
        c.ok("sandbox.kill", {"id": sid, "signal": "KILL"})
        assert c.ok("sandbox.wait", {"id": sid})["state"] == "killed"


def test_revoke_without_cgroup_kills_and_snapshots_only_frozen():
    with Daemon(config=NO_CGROUP) as d:
        c = d.client()
        ws = workspace(d)
        ids = [c.ok("sandbox.spawn", {"argv": ["/bin/sh", "-c", "while :; do :; done"], "workspace": ws})["id"]
               for _ in range(2)]
        done = c.ok("sandbox.spawn", {"argv": ["true"], "workspace": ws})["id"]
        c.ok("sandbox.wait", {"id": done})
        time.sleep(0.2)
        p = d.agentctl("--json", "revoke", "--task", "default")
        assert p.returncode == 0, p
        r = json.loads(p.stdout)
        assert r["frozen"] == 2 and r["killed"] == 2 and r["freeze_method"] == "signal", r
        # The sandbox that had already ended was not frozen: no "while frozen" snapshot of it.
        assert len(r["snapshots"]) == 2 and not any(done in s for s in r["snapshots"]), r
        for sid in ids:
            w = c.ok("sandbox.wait", {"id": sid})
            assert w["state"] == "killed" and w["reason"] == "killed by an incident revocation", w


def test_sandbox_that_cannot_be_frozen_is_killed_and_reported():
    # A vfork parent waits uninterruptibly ("D") for its child: SIGSTOP cannot stop it
    # while the child is stopped, so the signal freeze cannot be confirmed.
    vfork = "my $p = syscall(58); if ($p == 0) { sleep 60; require POSIX; POSIX::_exit(0) } sleep 60;"
    with Daemon(config=NO_CGROUP) as d:
        c = d.client()
        ws = workspace(d)
        res = c.ok("sandbox.spawn", {"argv": ["/usr/bin/perl", "-e", vfork], "workspace": ws})
        sid, init = res["id"], res["pid"]
        # Perl's start can take a while on a loaded machine: wait for the vfork itself, a
        # parent in "D" with its child below it (a "D" alone may be perl reading a file).
        deadline = time.time() + 30
        while time.time() < deadline and not vfork_parent_waiting(init):
            time.sleep(0.05)
        assert vfork_parent_waiting(init), (proc_tree(init), proc_comms(proc_tree(init)),
                                            c.ok("sandbox.logs", {"id": sid}))
        p = d.agentctl("--json", "revoke", "--sandbox", sid, "--freeze-only")
        assert p.returncode == 1 and b"could not be frozen" in p.stderr, p
        r = json.loads(p.stdout)
        assert r["frozen"] == 0 and r["killed"] == 1 and r["snapshots"] == [] and r["freeze_method"] == "none", r
        assert [f["sandbox"] for f in r["failures"]] == [sid] and "killed instead" in r["failures"][0]["error"], r
        w = c.ok("sandbox.wait", {"id": sid})
        assert w["state"] == "killed" and "could not be frozen" in w["reason"], w


def test_revoked_sandbox_gets_no_token_again():
    with enrolled_daemon() as (tpm, vault, d, ws, c):
        res = c.ok("sandbox.spawn", {"task": "creds-short", "argv": ["/bin/sh", "-c", "sleep 60"], "workspace": ws})
        sid = res["id"]
        broker_sock = os.path.join(res["state_dir"], "broker.sock")
        deadline = time.time() + 10
        while time.time() < deadline and c.ok("broker.status")["tokens_live"] < 1:
            time.sleep(0.05)
        from harness import Client
        b = Client(broker_sock)
        tok = b.ok("credentials.get")
        assert tok["accessor"], tok
        p = d.agentctl("--json", "revoke", "--sandbox", sid, "--freeze-only")
        assert p.returncode == 0, p
        assert json.loads(p.stdout)["frozen"] == 1, p.stdout
        err, res = b.call("credentials.get")
        assert err is not None and err["code"] == "unauthorized" and "revoked" in err["message"], (err, res)
        # Past the re-issue time of the 6 s token (about 4 s): no fresh token was made.
        time.sleep(5)
        name = f"token-agentd-{sid}"
        live = [t for t in vault.tokens().values() if t.get("display_name") == name and not t["revoked"]]
        assert live == [], live
        assert len([t for t in vault.tokens().values() if t.get("display_name") == name]) == 1
        err, _ = b.call("credentials.get")
        assert err is not None and err["code"] == "unauthorized", err
        assert c.ok("broker.status")["tokens_live"] == 0
        b.close()
        c.ok("sandbox.kill", {"id": sid, "signal": "KILL"})
        c.ok("sandbox.wait", {"id": sid})


def test_egress_response_without_cgroup_says_what_it_did():
    conf = NO_CGROUP + "[Response]\nEgressDenials=3\nEgressWindowSec=60\n"
    tasks = {"web": "[Task]\nDescription=web\n[Network]\nMode=proxy\nAllow=127.0.0.1:9\n"}
    with Daemon(config=conf, tasks=tasks) as d:
        ws = workspace(d)
        sub = d.client()
        sub.ok("events.subscribe")
        c = d.client()
        res = c.ok("sandbox.spawn", {"task": "web", "workspace": ws, "argv": ["/bin/sh", "-c",
                   "for i in 1 2 3 4; do curl -s -m 2 -o /dev/null http://denied.example/; done; "
                   "while :; do :; done"]})
        sid, init = res["id"], res["pid"]
        deadline = time.time() + 20
        alert = None
        while time.time() < deadline and not alert:
            msg = sub.read_message()
            if msg[0] == 2 and msg[1] == "alert":
                alert = msg[2][0]
        assert alert and alert["sandbox"] == sid, alert
        assert alert["action"] == "frozen (signal); revoking its tokens", alert
        assert {s["id"]: s for s in c.ok("sandbox.list")}[sid]["state"] == "frozen"
        tree = proc_tree(init)
        assert tree and all(st in "Tt" for st in tree.values()), tree
        c.ok("sandbox.kill", {"id": sid, "signal": "KILL"})
        c.ok("sandbox.wait", {"id": sid})


# ---- §6: what the sandbox receives is a copy, never the caller's open file ----

def test_stdin_is_a_pipe_not_the_callers_file():
    with Daemon() as d:
        ws = workspace(d)
        f = os.path.join(d.tmp, "input.txt")
        with open(f, "w") as fh:
            fh.write("hello from the caller\n")
        os.chmod(f, 0o644)
        os.utime(f, (1000000000, 1000000000))
        script = ("stat -L -c %F /dev/stdin; chmod 0666 /dev/stdin; touch /dev/stdin; "
                  "setfattr -n user.agentd -v x /dev/stdin 2>/dev/null; cat")
        with open(f, "rb") as stdin:
            p = subprocess.run([AGENTCTL, "spawn", "-i", "--", "/bin/sh", "-c", script], stdin=stdin,
                               capture_output=True, env=ctl_env(d), cwd=ws, timeout=60)
        assert p.returncode == 0, p
        assert p.stdout.decode().splitlines() == ["fifo", "hello from the caller"], p
        st = os.stat(f)
        assert stat.S_IMODE(st.st_mode) == 0o644, oct(st.st_mode)
        assert st.st_mtime == 1000000000, st
        assert "user.agentd" not in os.listxattr(f)


def test_stdin_terminal_is_not_handed_over():
    with Daemon() as d:
        ws = workspace(d)
        master, slave = pty.openpty()
        try:
            mode0 = stat.S_IMODE(os.fstat(slave).st_mode)
            echo0 = termios.tcgetattr(slave)[3] & termios.ECHO
            assert echo0
            p = subprocess.run([AGENTCTL, "spawn", "-i", "--", "/bin/sh", "-c",
                                "stty -echo 2>/dev/null; chmod 0666 /dev/stdin 2>/dev/null; test -t 0 && echo tty || echo notty"],
                               stdin=slave, capture_output=True, env=ctl_env(d), cwd=ws, timeout=60)
            assert p.stdout == b"notty\n", p
            assert termios.tcgetattr(slave)[3] & termios.ECHO, "the sandbox turned the caller's terminal echo off"
            assert stat.S_IMODE(os.fstat(slave).st_mode) == mode0
        finally:
            os.close(master)
            os.close(slave)


def test_stdin_closed_inside_does_not_block_agentd():
    with Daemon() as d:
        ws = workspace(d)
        r, w = os.pipe()
        ino = os.fstat(r).st_ino
        proc = subprocess.Popen([AGENTCTL, "spawn", "-i", "--", "/bin/sh", "-c",
                                 "stat -L -c %i /dev/stdin; exec 0<&-; sleep 1; echo done"],
                                stdin=r, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ctl_env(d), cwd=ws)
        os.close(r)
        os.set_blocking(w, False)
        chunk, written = b"x" * 65536, 0
        deadline = time.time() + 3
        while time.time() < deadline:
            try:
                written += os.write(w, chunk)
            except BlockingIOError:
                time.sleep(0.01)
            except BrokenPipeError:
                break
            assert d.client().ok("agentd.ping")
        out, err = proc.communicate(timeout=30)
        os.close(w)
        assert proc.returncode == 0 and out.split()[1:] == [b"done"], (proc.returncode, out, err)
        # The sandbox read agentd's pipe, not the caller's.
        assert int(out.split()[0]) != ino, (out, ino)
        assert d.client().ok("agentd.ping")
        # EOF still reaches a command that reads to the end.
        p = d.agentctl("spawn", "--", "/bin/sh", "-c", "wc -c", cwd=ws, input=b"y" * 200000, check=0)
        assert p.stdout.strip() == b"200000", p


# ---- §7: resource bounds that hold on an ordinary machine ----

def test_tmpfs_mounts_are_sized():
    tasks = {"small": "[Task]\nTimeout=1min\n[Filesystem]\nTmpSize=8M\nShmSize=4M\nHomeSize=16M\n"}
    with Daemon(tasks=tasks) as d:
        c = d.client()
        ws = workspace(d)
        home = os.environ["HOME"]
        script = f"stat -f -c '%b %S' /tmp /dev/shm {home} /run"
        for task, sizes in (("default", (1 << 30, 256 << 20, 1 << 30, 16 << 20)),
                            ("small", (8 << 20, 4 << 20, 16 << 20, 16 << 20))):
            sid = c.ok("sandbox.spawn", {"task": task, "argv": ["/bin/sh", "-c", script], "workspace": ws})["id"]
            assert c.ok("sandbox.wait", {"id": sid})["exit_code"] == 0, c.ok("sandbox.logs", {"id": sid})
            out = c.ok("sandbox.logs", {"id": sid})["stdout"].decode().split("\n")
            got = tuple(int(l.split()[0]) * int(l.split()[1]) for l in out if l.strip())
            assert got == sizes, (task, got, sizes)
        # Writing past the size fails inside; the host's memory is not the limit.
        sid = c.ok("sandbox.spawn", {"task": "small", "argv": ["/bin/sh", "-c",
                   "head -c 20M /dev/zero > /tmp/big; echo rc=$?; head -c 20M /dev/zero > /dev/shm/big; echo rc=$?"],
                   "workspace": ws})["id"]
        c.ok("sandbox.wait", {"id": sid})
        logs = c.ok("sandbox.logs", {"id": sid})
        assert logs["stdout"].split() == [b"rc=1", b"rc=1"] and b"No space left" in logs["stderr"], logs
        show = c.ok("task.show", {"name": "small"})
        assert show["Filesystem"]["TmpSize"] == 8 << 20 and show["Filesystem"]["HomeSize"] == 16 << 20, show
        assert show["Limits"]["ChangeMax"] == 4 << 30 and "Filesystem.ShmSize" in show["origins"], show
        # The built-in default task has a Timeout now.
        assert c.ok("task.show", {"name": "default"})["Task"]["Timeout"] == "1h"


def test_fork_bomb_bounded_without_cgroup():
    tasks = {"bomb": "[Task]\nTimeout=8s\n[Limits]\nTasksMax=64\n"}
    with Daemon(config=NO_CGROUP, tasks=tasks) as d:
        c = d.client()
        ws = workspace(d)
        shutil.copy(ATTACKS, os.path.join(ws, "attacks"))
        res = c.ok("sandbox.spawn", {"task": "bomb", "argv": ["./attacks", "fork_bomb", "2000"], "workspace": ws})
        assert "RLIMIT_NPROC" in res["limits"], res
        w = c.ok("sandbox.wait", {"id": res["id"]})
        out = c.ok("sandbox.logs", {"id": res["id"]})["stdout"].decode()
        assert w["reason"] == "timeout", (w, out)
        n = int(out.split("FORKED ")[1].split()[0])
        assert n < 64 and "Resource temporarily unavailable" in out, out
        # A task without TasksMax= is still bounded (4096), and infinity lifts it.
        p = d.agentctl("spawn", "--", "/bin/sh", "-c", "ulimit -p 2>/dev/null || cat /proc/self/limits | grep processes",
                       cwd=ws, check=0)
        assert b"4097" in p.stdout, p


def test_require_limits_refuses_what_cannot_be_enforced():
    with Daemon(config=NO_CGROUP + "RequireLimits=yes\n") as d:
        c = d.client()
        ws = workspace(d)
        err, _ = c.call("sandbox.spawn", {"task": "build", "argv": ["true"], "workspace": ws})
        assert err["code"] == "backend_unavailable", err
        assert "MemoryMax" in err["message"] and "RequireLimits=yes" in err["message"], err
        assert "TasksMax" not in err["message"], err  # RLIMIT_NPROC holds that one
        # A task whose limits all hold is spawned.
        sid = c.ok("sandbox.spawn", {"argv": ["true"], "workspace": ws})["id"]
        assert c.ok("sandbox.wait", {"id": sid})["exit_code"] == 0
        p = d.agentctl("spawn", "--task", "build", "--workspace", ws, "--", "true")
        assert p.returncode == 1 and b"RequireLimits" in p.stderr, p
    # Without RequireLimits= the spawn goes on and says what does not hold.
    with Daemon(config=NO_CGROUP) as d:
        c = d.client()
        ws = workspace(d)
        res = c.ok("sandbox.spawn", {"task": "build", "argv": ["true"], "workspace": ws})
        assert "MemoryMax not enforced" in res["limits"] and "TasksMax held by RLIMIT_NPROC" in res["limits"], res
        c.ok("sandbox.wait", {"id": res["id"]})


def test_change_max_freezes_and_keeps_review_working():
    tasks = {"small": "[Task]\nTimeout=1min\n[Limits]\nChangeMax=2M\n"}
    with Daemon(tasks=tasks) as d:
        c = d.client()
        c.ok("events.subscribe")
        ws = workspace(d)
        with open(os.path.join(ws, "kept.txt"), "w") as f:
            f.write("old\n")
        res = c.ok("sandbox.spawn", {"task": "small", "workspace": ws, "argv": ["/bin/sh", "-c",
                   "echo new > kept.txt; head -c 4M /dev/urandom > big; echo written; "
                   "while :; do head -c 1M /dev/urandom > more.$$; done"]})
        sid = res["id"]
        deadline = time.time() + 20
        while time.time() < deadline and {s["id"]: s for s in c.ok("sandbox.list")}[sid]["state"] != "frozen":
            time.sleep(0.1)
        assert {s["id"]: s for s in c.ok("sandbox.list")}[sid]["state"] == "frozen", c.ok("sandbox.logs", {"id": sid})
        alerts = [m[2][0] for m in c.notifications if m[1] == "alert"]
        deadline = time.time() + 5
        while not alerts and time.time() < deadline:
            c.sock.settimeout(1)
            try:
                m = c.read_message()
            except OSError:
                continue
            if m and m[0] == 2 and m[1] == "alert":
                alerts.append(m[2][0])
        assert alerts and alerts[0]["sandbox"] == sid and alerts[0]["rule"] == "ChangeMax=2M", alerts
        assert alerts[0]["action"] == "frozen", alerts
        assert b"ChangeMax=2M" in c.ok("sandbox.logs", {"id": sid})["stderr"]
        # Review still works: the layer is where it was, on disk.
        changes = {e["path"]: e["change"] for e in c.ok("sandbox.diff", {"id": sid})}
        assert changes.get("kept.txt") == "modified" and changes.get("big") == "added", changes
        c.ok("sandbox.kill", {"id": sid, "signal": "KILL"})
        c.ok("sandbox.wait", {"id": sid})
        c.ok("sandbox.promote", {"id": sid, "paths": ["kept.txt"]})
        assert open(os.path.join(ws, "kept.txt")).read() == "new\n"
        assert not os.path.exists(os.path.join(ws, "big"))


# A process whose main thread has exited shows the leader as a zombie ("Z")
# in /proc/PID/stat while its other threads keep running.
ZOMBIE_LEADER = ("import ctypes, sys, threading, time\n"
                 "def tick():\n"
                 "    i = 0\n"
                 "    while True:\n"
                 "        i += 1; sys.stdout.write('tick %d\\n' % i); sys.stdout.flush(); time.sleep(0.02)\n"
                 "threading.Thread(target=tick).start()\n"
                 "time.sleep(0.3)\n"
                 "ctypes.CDLL(None).pthread_exit(None)\n")


def test_freeze_without_cgroup_stops_threads_of_an_exited_leader():
    with Daemon(config=NO_CGROUP) as d:
        c = d.client()
        ws = workspace(d)
        sid = c.ok("sandbox.spawn", {"argv": ["/usr/bin/python3", "-c", ZOMBIE_LEADER], "workspace": ws})["id"]
        deadline = time.time() + 10
        while time.time() < deadline and c.ok("sandbox.logs", {"id": sid})["stdout"].count(b"tick") < 30:
            time.sleep(0.05)
        assert c.ok("sandbox.logs", {"id": sid})["stdout"].count(b"tick") >= 30, c.ok("sandbox.logs", {"id": sid})
        p = d.agentctl("--json", "revoke", "--sandbox", sid, "--freeze-only")
        r = json.loads(p.stdout)
        if p.returncode == 0 and r["frozen"] == 1:
            # Frozen must mean frozen: no thread of the sandbox runs on.
            a = c.ok("sandbox.logs", {"id": sid})["stdout"].count(b"tick")
            time.sleep(1.0)
            b = c.ok("sandbox.logs", {"id": sid})["stdout"].count(b"tick")
            assert b == a, f"reported frozen, but a thread still ran: {a} -> {b} ticks"
        else:
            # Or it could not be frozen: then it was killed and reported.
            assert r["failures"], r
        c.ok("sandbox.kill", {"id": sid, "signal": "KILL"})
        c.ok("sandbox.wait", {"id": sid})


def test_stdin_that_is_no_file_does_not_block_agentd():
    """An eventfd (or any other anonymous-inode fd) as stdin: fstat calls it
    neither file nor pipe, and a blocking read of it would stop agentd's loop.
    It is refused (or read without blocking); agentd keeps answering."""
    with Daemon() as d:
        ws = workspace(d)
        efd = os.eventfd(0)
        proc = None
        try:
            proc = subprocess.Popen([AGENTCTL, "spawn", "-i", "--", "/bin/sh", "-c", "echo started"],
                                    stdin=efd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ctl_env(d), cwd=ws)
            time.sleep(1.0)
            c = d.client()
            c.sock.settimeout(5)
            assert c.ok("agentd.ping") is not None
            out, err = proc.communicate(timeout=30)
            assert proc.returncode != 0 and b"invalid_params" in err and b"cannot relay stdin" in err, (out, err)
        finally:
            if proc and proc.poll() is None:
                proc.kill()
            os.close(efd)


def test_stdout_that_is_no_file_does_not_block_agentd():
    """An eventfd near its maximum as stdout: writing the sandbox's 8 bytes
    of output to it would block agentd's loop. It is not written to."""
    import struct
    with Daemon() as d:
        ws = workspace(d)
        efd = os.eventfd(0)
        os.write(efd, struct.pack("=Q", 0xfffffffffffffffe - 1))
        proc = None
        try:
            proc = subprocess.Popen([AGENTCTL, "spawn", "-i", "--", "/bin/sh", "-c", "echo 1234567; sleep 1"],
                                    stdin=subprocess.DEVNULL, stdout=efd, stderr=subprocess.PIPE, env=ctl_env(d), cwd=ws)
            time.sleep(1.5)
            c = d.client()
            c.sock.settimeout(5)
            assert c.ok("agentd.ping") is not None
            proc.communicate(timeout=30)
        finally:
            if proc and proc.poll() is None:
                proc.kill()
            os.close(efd)


if __name__ == "__main__":
    run_tests(globals())
