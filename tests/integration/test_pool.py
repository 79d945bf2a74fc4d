#!/usr/bin/python3
"""Warm sandboxes ([Pool] WarmSandboxes=, daemon/sandbox/pool.c, helper/warm.c):
a spawn takes a warm sandbox of its task, the workspace is attached only then,
no two spawns share one, and a reload empties the pool. Whether a spawn was
warm is read from agentd's log line ("helper pid N, warm")."""

import os
import re
import signal
import time

from harness import Daemon, run_tests

POOL = "[Pool]\nWarmSandboxes={n}\nWarmIdleSec=300\n"


def workspace(d, name, content="hello\n"):
    p = os.path.join(d.tmp, name)
    os.makedirs(p, exist_ok=True)
    with open(os.path.join(p, "file.txt"), "w") as f:
        f.write(content)
    return p


def n_warm_spawns(d):
    return d.read_log().count(", warm)")


def spawn_warm(d, *args, cwd, attempts=40):
    """Spawns until one runs in a warm sandbox (the first of a task is cold and
    starts the pool filling); returns that run's agentctl result."""
    for _ in range(attempts):
        before = n_warm_spawns(d)
        p = d.agentctl("spawn", "--", *args, cwd=cwd)
        if n_warm_spawns(d) > before:
            return p
        time.sleep(0.25)
    raise AssertionError(f"no spawn ran in a warm sandbox; log:\n{d.read_log()[-3000:]}")


def test_workspace_attached_only_at_spawn():
    """A warm sandbox is built before its workspace is known: one created after
    the pool filled is the one the command sees (with what it holds now), and
    the workspace of the spawn before is not visible."""
    with Daemon(config=POOL.format(n=1)) as d:
        first = workspace(d, "first", "first\n")
        d.agentctl("spawn", "--", "/bin/true", cwd=first, check=0)
        time.sleep(1.0)  # the pool fills meanwhile
        later = workspace(d, "later", "made after the warm-up\n")
        p = spawn_warm(d, "/bin/sh", "-c", f"pwd; cat file.txt; ls {first} >/dev/null 2>&1 || echo no-first", cwd=later)
        assert p.returncode == 0, p
        assert p.stdout.decode() == f"{later}\nmade after the warm-up\nno-first\n", p


def test_consecutive_spawns_get_fresh_sandboxes():
    """Two warm spawns of one task: different pid namespaces, nothing left in /tmp."""
    with Daemon(config=POOL.format(n=2)) as d:
        ws = workspace(d, "ws")
        script = "ls -A /tmp; echo pid=$$; readlink /proc/self/ns/pid; touch /tmp/left-behind"
        a = spawn_warm(d, "/bin/sh", "-c", script, cwd=ws)
        b = spawn_warm(d, "/bin/sh", "-c", script, cwd=ws)
        la, lb = a.stdout.decode().split("\n"), b.stdout.decode().split("\n")
        assert a.returncode == 0 and b.returncode == 0, (a, b)
        # /tmp holds only the workspace's mount point (it lives under /tmp here): nothing left behind.
        assert la[0] == lb[0] and "left-behind" not in lb[0], (la, lb)
        assert la[1] == "pid=2" and lb[1] == "pid=2", (la, lb)  # each its own pid namespace
        assert la[2] != lb[2], (la, lb)


def test_reload_invalidates_the_pool():
    """A task edited while its pool is warm: the next spawn runs under the new
    policy, and the old warm sandboxes are dropped."""
    tasks = {"envtask": "[Task]\nDescription=pool reload\nEnvironment=GEN=one\n"}
    with Daemon(config=POOL.format(n=1), tasks=tasks) as d:
        ws = workspace(d, "ws")
        d.agentctl("spawn", "--task", "envtask", "--", "/bin/true", cwd=ws, check=0)
        for _ in range(40):
            before = n_warm_spawns(d)
            p = d.agentctl("spawn", "--task", "envtask", "--", "/bin/sh", "-c", "echo $GEN", cwd=ws)
            if n_warm_spawns(d) > before:
                break
            time.sleep(0.25)
        assert p.stdout == b"one\n" and n_warm_spawns(d) > 0, p
        time.sleep(1.0)  # warm again
        with open(os.path.join(d.config_home, "agentd", "tasks", "envtask.task"), "w") as f:
            f.write("[Task]\nDescription=pool reload\nEnvironment=GEN=two\n[Filesystem]\nTmpSize=8M\n")
        d.proc.send_signal(signal.SIGHUP)
        deadline = time.time() + 10
        dropped = re.compile(r"dropped \d+ warm sandbox(es)?: task policies reloaded")
        while not dropped.search(d.read_log()) and time.time() < deadline:
            time.sleep(0.1)
        assert dropped.search(d.read_log()), d.read_log()[-2000:]
        p = d.agentctl("spawn", "--task", "envtask", "--", "/bin/sh", "-c", "echo $GEN; df -k /tmp | tail -1", cwd=ws)
        assert p.returncode == 0 and p.stdout.decode().startswith("two\n") and " 8192 " in p.stdout.decode(), p


def test_revoke_all_drains_the_pool():
    with Daemon(config=POOL.format(n=1)) as d:
        ws = workspace(d, "ws")
        spawn_warm(d, "/bin/true", cwd=ws)
        time.sleep(1.0)
        d.agentctl("revoke", "--all", check=None)
        deadline = time.time() + 10
        while "revoke --all: lockdown" not in d.read_log() and time.time() < deadline:
            time.sleep(0.1)
        assert "warm sandbox" in d.read_log() and "revoke --all: lockdown" in d.read_log(), d.read_log()[-2000:]


def test_idle_warm_sandboxes_are_dropped():
    """WarmIdleSec=: an unused warm sandbox goes (agentd.status warm_sandboxes
    falls to 0, its hands and cgroup with it), and the next spawn is cold."""
    with Daemon(config="[Pool]\nWarmSandboxes=1\nWarmIdleSec=1\n") as d:
        c = d.client()
        assert c.ok("agentd.status")["warm_sandboxes"] == 1  # the default task's, filled at start
        deadline = time.time() + 10
        while c.ok("agentd.status")["warm_sandboxes"] != 0 and time.time() < deadline:
            time.sleep(0.1)
        assert c.ok("agentd.status")["warm_sandboxes"] == 0
        ws = workspace(d, "ws")
        d.agentctl("spawn", "--", "/bin/true", cwd=ws, check=0)
        assert n_warm_spawns(d) == 0, d.read_log()


if __name__ == "__main__":
    run_tests(globals())
