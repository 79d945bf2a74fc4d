#!/usr/bin/python3
"""Workspace review: diff, promote and discard of a sandbox's copy-on-write layer."""
import os
import signal
import stat
import time

from harness import Daemon, run_tests


def make_tree(root):
    os.makedirs(os.path.join(root, "d", "sub"))
    os.makedirs(os.path.join(root, "e"))
    os.makedirs(os.path.join(root, ".git", "hooks"))
    for rel, text in (("a", "a\n"), ("d/b", "b\n"), ("d/sub/c", "c\n"), ("e/x", "x\n"), ("conf", "keep\n"),
                      ("exe.sh", "#!/bin/sh\n"), (".git/config", "[core]\n")):
        with open(os.path.join(root, rel), "w") as f:
            f.write(text)
    os.symlink("a", os.path.join(root, "lnk"))


def spawn(d, ws, script, check=0):
    d.agentctl("spawn", "--", "/bin/sh", "-c", script, cwd=ws, check=check)
    return d.client().ok("sandbox.list")[-1]["id"]


def diff(d, sid):
    return {e["path"]: (e["change"], e["type"], e["guarded"]) for e in d.client().ok("sandbox.diff", {"id": sid})}


def read(p):
    with open(p) as f:
        return f.read()


SCRIPT = ("rm a; echo B > d/b; rm -r d/sub; mkdir -p new/dir; echo n > new/dir/f; rm -r e; mkdir e; echo y > e/y;"
          " mv lnk lnk2; chmod 700 exe.sh; echo hook > .git/hooks/pre-commit; echo '[core] fsmonitor=evil' > .git/config;"
          " echo 'eval evil' > .envrc; mkdir .vscode; echo '{}' > .vscode/tasks.json; printf '\\000\\001' > bin")


def test_every_change_kind_in_diff():
    with Daemon() as d:
        ws = os.path.join(d.tmp, "ws")
        make_tree(ws)
        sid = spawn(d, ws, SCRIPT)
        got = diff(d, sid)
        want = {
            "a": ("deleted", "file", False), "d/b": ("modified", "file", False), "d/sub": ("deleted", "directory", False),
            "new": ("added", "directory", False), "new/dir": ("added", "directory", False),
            "new/dir/f": ("added", "file", False), "e/x": ("deleted", "file", False), "e/y": ("added", "file", False),
            "lnk": ("deleted", "symlink", False), "lnk2": ("added", "symlink", False),
            "exe.sh": ("modified", "file", False), ".git/hooks/pre-commit": ("added", "file", True),
            ".git/config": ("modified", "file", True), ".envrc": ("added", "file", True),
            ".vscode": ("added", "directory", True), ".vscode/tasks.json": ("added", "file", True),
            "bin": ("added", "file", False),
        }
        assert got == want, {k: (got.get(k), want.get(k)) for k in set(got) | set(want) if got.get(k) != want.get(k)}
        # Nothing reached the real tree.
        assert read(os.path.join(ws, "a")) == "a\n" and not os.path.exists(os.path.join(ws, "new"))
        p = d.agentctl("diff", sid, check=0)
        assert b"D a\n" in p.stdout and b"A new/dir/f\n" in p.stdout and b"guarded" in p.stdout
        p = d.agentctl("diff", sid, "--patch", check=0)
        assert b"-b\n+B\n" in p.stdout and b"Binary files a/bin and b/bin differ" in p.stdout, p.stdout


def test_promote_applies_and_guards_hooks():
    with Daemon() as d:
        ws = os.path.join(d.tmp, "ws")
        make_tree(ws)
        sid = spawn(d, ws, SCRIPT)
        res = d.client().ok("sandbox.promote", {"id": sid})
        assert not res["conflicts"], res
        guarded = {g["path"] for g in res["guarded"]}
        assert guarded == {".git/hooks/pre-commit", ".git/config", ".envrc", ".vscode", ".vscode/tasks.json"}, guarded
        assert not os.path.exists(os.path.join(ws, "a"))
        assert read(os.path.join(ws, "d/b")) == "B\n" and not os.path.exists(os.path.join(ws, "d/sub"))
        assert read(os.path.join(ws, "new/dir/f")) == "n\n" and read(os.path.join(ws, "e/y")) == "y\n"
        assert not os.path.exists(os.path.join(ws, "e/x"))
        assert os.readlink(os.path.join(ws, "lnk2")) == "a" and not os.path.lexists(os.path.join(ws, "lnk"))
        assert stat.S_IMODE(os.stat(os.path.join(ws, "exe.sh")).st_mode) == 0o700
        assert read(os.path.join(ws, ".git/config")) == "[core]\n"
        assert not os.path.exists(os.path.join(ws, ".envrc")) and not os.path.exists(os.path.join(ws, ".git/hooks/pre-commit"))
        st = os.stat(os.path.join(ws, "new/dir/f"))
        assert st.st_uid == os.getuid()
        import hashlib
        assert res["sha256"]["d/b"] == hashlib.sha256(b"B\n").hexdigest()
        # Only the guarded ones remain; then asked for explicitly.
        assert set(diff(d, sid)) == guarded
        res = d.client().ok("sandbox.promote", {"id": sid, "include_hooks": True})
        assert read(os.path.join(ws, ".envrc")) == "eval evil\n" and not res["guarded"], res
        assert diff(d, sid) == {}
        assert not [n for n in os.listdir(ws) if n.startswith(".agentd-promote")]


def test_promote_subset_of_paths():
    with Daemon() as d:
        ws = os.path.join(d.tmp, "ws")
        make_tree(ws)
        sid = spawn(d, ws, "echo 1 > one; mkdir -p two/deep; echo 2 > two/deep/f; echo B > d/b")
        p = d.agentctl("promote", sid, "two", check=0)
        assert b"promoted  two/deep/f" in p.stdout, p.stdout
        assert read(os.path.join(ws, "two/deep/f")) == "2\n"
        assert not os.path.exists(os.path.join(ws, "one")) and read(os.path.join(ws, "d/b")) == "b\n"
        err, _ = d.client().call("sandbox.promote", {"id": sid, "paths": ["../escape"]})
        assert err["code"] == "invalid_params", err
        err, _ = d.client().call("sandbox.promote", {"id": sid, "paths": ["/etc/passwd"]})
        assert err["code"] == "invalid_params", err


def test_conflicts_never_overwrite():
    with Daemon() as d:
        ws = os.path.join(d.tmp, "ws")
        make_tree(ws)
        sid = spawn(d, ws, "echo sandbox > conf; echo sandbox > d/b; rm e/x; echo new > fresh")
        time.sleep(0.01)
        with open(os.path.join(ws, "conf"), "w") as f:
            f.write("host edit\n")
        with open(os.path.join(ws, "e/x"), "a") as f:
            f.write("more\n")
        with open(os.path.join(ws, "fresh"), "w") as f:
            f.write("host made this\n")
        p = d.agentctl("promote", sid)
        assert p.returncode == 1, p
        res = d.client().ok("sandbox.promote", {"id": sid})
        conflicts = {c["path"]: c["reason"] for c in res["conflicts"]}
        assert set(conflicts) == {"conf", "e/x", "fresh"}, conflicts
        assert read(os.path.join(ws, "conf")) == "host edit\n"
        assert read(os.path.join(ws, "e/x")) == "x\nmore\n"
        assert read(os.path.join(ws, "fresh")) == "host made this\n"
        assert read(os.path.join(ws, "d/b")) == "sandbox\n"


def test_symlink_escapes_are_refused():
    with Daemon() as d:
        ws = os.path.join(d.tmp, "ws")
        make_tree(ws)
        home = os.path.realpath(os.environ["HOME"])
        target = os.path.join(d.tmp, "outside.txt")
        with open(target, "w") as f:
            f.write("outside\n")
        # x -> a file outside; d replaced by a symlink to a directory outside; a relative escape.
        sid = spawn(d, ws, f"ln -s {target} x; rm -r d; ln -s {d.tmp} d; ln -s ../../.. up; ln -s a inside")
        res = d.client().ok("sandbox.promote", {"id": sid})
        conflicts = {c["path"] for c in res["conflicts"]}
        assert conflicts == {"x", "d", "up"}, res
        assert "inside" in res["promoted"]
        assert not os.path.lexists(os.path.join(ws, "x")) and not os.path.lexists(os.path.join(ws, "up"))
        assert os.path.isdir(os.path.join(ws, "d")) and not os.path.islink(os.path.join(ws, "d"))
        assert read(os.path.join(ws, "d/b")) == "b\n"
        assert read(target) == "outside\n"
        assert home  # the home dir is never a target either


def test_host_symlinked_parent_not_followed():
    with Daemon() as d:
        ws = os.path.join(d.tmp, "ws")
        make_tree(ws)
        outside = os.path.join(d.tmp, "outside")
        os.makedirs(outside)
        sid = spawn(d, ws, "mkdir -p sub2; echo data > sub2/f")
        # After the sandbox ran, the host path becomes a symlink out of the workspace.
        os.symlink(outside, os.path.join(ws, "sub2"))
        res = d.client().ok("sandbox.promote", {"id": sid})
        assert not os.path.exists(os.path.join(outside, "f")), res
        assert {c["path"] for c in res["conflicts"]} >= {"sub2/f"} or "sub2" in {c["path"] for c in res["conflicts"]}, res


def test_promote_refused_while_running_and_discard():
    with Daemon() as d:
        ws = os.path.join(d.tmp, "ws")
        make_tree(ws)
        c = d.client()
        sid = c.ok("sandbox.spawn", {"argv": ["/bin/sh", "-c", "echo x > running; sleep 30"], "workspace": ws})["id"]
        time.sleep(0.3)
        assert "running" in diff(d, sid)
        err, _ = c.call("sandbox.promote", {"id": sid})
        assert err["code"] == "policy_denied", err
        err, _ = c.call("sandbox.discard", {"id": sid})
        assert err["code"] == "policy_denied", err
        c.ok("sandbox.kill", {"id": sid, "signal": "KILL"})
        c.ok("sandbox.wait", {"id": sid})
        d.agentctl("discard", sid, check=0)
        assert not os.path.exists(os.path.join(d.state_home, "agentd", "sandboxes", sid, "upper"))
        err, _ = c.call("sandbox.diff", {"id": sid})
        assert err["code"] == "not_found" and "discarded" in err["message"], err
        assert not os.path.exists(os.path.join(ws, "running"))


def test_review_after_crash_and_restart():
    d = Daemon().start()
    ws = os.path.join(d.tmp, "ws")
    make_tree(ws)
    c = d.client()
    sid = c.ok("sandbox.spawn", {"argv": ["/bin/sh", "-c", "echo kept > survived; sleep 60"], "workspace": ws})["id"]
    time.sleep(0.3)
    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait()
    d.log.close()
    d.start()
    lst = {s["id"]: s for s in d.client().ok("sandbox.list")}
    assert lst[sid]["state"] == "killed", lst[sid]
    assert diff(d, sid) == {"survived": ("added", "file", False)}
    d.client().ok("sandbox.promote", {"id": sid})
    assert read(os.path.join(ws, "survived")) == "kept\n"
    d.stop()
    d.start()
    assert diff(d, sid) == {}
    d.stop()


def test_10000_file_tree():
    with Daemon() as d:
        ws = os.path.join(d.tmp, "ws")
        os.makedirs(ws)
        sid = spawn(d, ws, "for i in $(seq 0 99); do mkdir -p d$i; (cd d$i; seq 1 100 | xargs touch); done")
        t0 = time.time()
        got = d.client().ok("sandbox.diff", {"id": sid})
        assert len(got) == 10100, len(got)
        res = d.client().ok("sandbox.promote", {"id": sid})
        assert len(res["promoted"]) == 10100 and not res["conflicts"]
        assert len(os.listdir(os.path.join(ws, "d42"))) == 100
        assert diff(d, sid) == {}
        print(f"    (10,100-entry diff + promote took {time.time() - t0:.2f}s; timing lives in bench/)")


if __name__ == "__main__":
    run_tests(globals())
