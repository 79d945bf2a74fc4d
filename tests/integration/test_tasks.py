#!/usr/bin/python3
"""Task policies through agentd: list, show, override order, reload on file
change and SIGHUP, broken files reported with file:line and never hiding good ones."""
import json
import os
import signal
import time

from harness import Daemon, run_tests


def test_list_and_show_builtins():
    with Daemon() as d:
        tasks = {t["name"]: t for t in d.client().ok("task.list")}
        for name in ("default", "build", "test", "shell"):
            assert name in tasks and tasks[name]["description"], tasks
            assert tasks[name]["source"] == f"builtin:{name}.task", tasks[name]
        show = d.client().ok("task.show", {"name": "default"})
        assert show["Network"]["Mode"] == "none" and show["Filesystem"]["Workspace"] == "overlay"
        assert show["Credentials"]["VaultPolicies"] == [] and show["Security"]["Landlock"] is True
        assert show["Security"]["Seccomp"] == "default"
        home = os.path.realpath(os.environ["HOME"])
        assert any(p.startswith(os.environ["HOME"]) or p.startswith(home) for p in show["Filesystem"]["HidePaths"])
        assert show["capabilities"] == [], show["capabilities"]
        p = d.agentctl("tasks", check=0)
        assert b"default" in p.stdout and b"builtin:default.task" in p.stdout
        p = d.agentctl("--json", "task", "show", "build", check=0)
        j = json.loads(p.stdout)
        assert j["name"] == "build" and j["capabilities"], j
        assert any("Workspace" in k for k in j["origins"]), j["origins"]


def test_user_override_and_capabilities():
    tasks = {
        "default": "[Task]\nDescription=my default\n[Filesystem]\nWorkspace=ro\n",
        "net": "[Task]\nDescription=with hosts\n[Network]\nMode=proxy\nAllow=github.com:443 *.npmjs.org:443\n"
               "[Credentials]\nVaultPolicies=ci-read\n[Limits]\nMemoryMax=8G\n",
    }
    with Daemon(tasks=tasks) as d:
        c = d.client()
        tasks = {t["name"]: t for t in c.ok("task.list")}
        assert tasks["default"]["description"] == "my default"
        assert tasks["default"]["source"].endswith("/agentd/tasks/default.task"), tasks["default"]
        show = c.ok("task.show", {"name": "net"})
        assert show["Network"]["Allow"] == ["github.com:443", "*.npmjs.org:443"], show["Network"]
        caps = " ".join(show["capabilities"])
        assert "github.com:443" in caps and "ci-read" in caps, caps
        origin = show["origins"]["Network.Allow"]
        assert origin.endswith("net.task:5"), origin
        # A task asking for credentials or egress fails closed, with a clear reason.
        ws = os.path.join(d.tmp, "ws")
        os.makedirs(ws)
        err, _ = c.call("sandbox.spawn", {"task": "net", "argv": ["true"], "workspace": ws})
        assert err["code"] == "backend_unavailable", err


def test_broken_file_reported_and_good_ones_kept():
    tasks = {
        "good": "[Task]\nDescription=fine\n",
        "bad": "[Task]\nDescription=oops\n[Network]\nMode=sideways\n",
        "junk": "\x01\x02\x03garbage",
    }
    with Daemon(tasks=tasks) as d:
        tasks = d.client().ok("task.list")
        names = {t["name"] for t in tasks if "error" not in t}
        assert "good" in names and "bad" not in names and "junk" not in names, names
        # Broken files are listed with their error (issue 13), not only logged.
        broken = {t["name"]: t["error"] for t in tasks if "error" in t}
        assert set(broken) == {"bad", "junk"} and "bad.task:4" in broken["bad"], broken
        log = d.read_log()
        assert "bad.task:4" in log and "Mode" in log, log
        assert "junk.task" in log
        err, _ = d.client().call("task.show", {"name": "bad"})
        assert err["code"] == "invalid_params" and "bad.task:4" in err["message"], err


def test_reload_on_file_change_and_sighup():
    with Daemon(tasks={"edit": "[Task]\nDescription=v1\n"}) as d:
        path = os.path.join(d.config_home, "agentd", "tasks", "edit.task")

        def desc():
            return {t["name"]: t["description"] for t in d.client().ok("task.list") if "error" not in t}.get("edit")

        assert desc() == "v1"
        with open(path, "w") as f:
            f.write("[Task]\nDescription=v2\n")
        deadline = time.time() + 5
        while desc() != "v2" and time.time() < deadline:
            time.sleep(0.05)
        assert desc() == "v2"
        # Broken edit: the previous good version stays, the error is logged.
        with open(path, "w") as f:
            f.write("[Task]\nDescription=v3\nNoSuchKey=1\n")
        time.sleep(0.5)
        assert desc() == "v2", desc()
        assert "edit.task:3" in d.read_log()
        # New file picked up on SIGHUP too.
        with open(os.path.join(d.config_home, "agentd", "tasks", "later.task"), "w") as f:
            f.write("[Task]\nDescription=later\n")
        d.proc.send_signal(signal.SIGHUP)
        time.sleep(0.4)
        assert "later" in {t["name"] for t in d.client().ok("task.list")}


def test_check_config_flag():
    d = Daemon(tasks={"bad": "[Oops]\n"})
    import subprocess
    from harness import AGENTD
    p = subprocess.run([AGENTD, "--check-config"], env=d.env, capture_output=True, timeout=10)
    assert p.returncode == 1 and b"bad.task:1" in p.stderr, p


if __name__ == "__main__":
    run_tests(globals())
