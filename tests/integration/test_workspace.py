#!/usr/bin/python3
"""Workspace review: diff, promote and discard of a sandbox's copy-on-write layer."""
import json
import os
import signal
import stat
import time

import msgpack

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


# ---- issue 12: promote never hands the host something that runs -------------

def write(p, text, mode=None):
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p, "w") as f:
        f.write(text)
    if mode is not None:
        os.chmod(p, mode)


GIT_ROUTES = [
    ".git/commondir", ".git/objects/info/alternates", ".git/modules/x/config", ".git/worktrees/w/gitdir",
    ".git/info/attributes", ".git/HEAD", ".git/index", "sub3/.git", "tools/hooks/pre-commit", "gitdata/config",
    "evil.task", "agentd.conf",
]


def test_git_routes_and_agentd_config_held_back():
    with Daemon() as d:
        ws = os.path.join(d.tmp, "ws")
        make_tree(ws)
        # The host repository: hooks in tools/hooks (core.hooksPath), HEAD and an index;
        # sub2 is a checkout whose .git file points at a git directory inside the workspace.
        write(os.path.join(ws, ".git/config"), "[core]\n\thooksPath = tools/hooks\n")
        write(os.path.join(ws, ".git/HEAD"), "ref: refs/heads/main\n")
        write(os.path.join(ws, ".git/index"), "DIRC")
        os.makedirs(os.path.join(ws, ".git/refs/heads"))
        os.makedirs(os.path.join(ws, "tools"))
        for sub in ("objects", "refs"):
            os.makedirs(os.path.join(ws, "gitdata", sub))
        write(os.path.join(ws, "gitdata/HEAD"), "ref: refs/heads/main\n")
        write(os.path.join(ws, "sub2/.git"), "gitdir: ../gitdata\n")
        before = {r: os.path.exists(os.path.join(ws, r)) and read(os.path.join(ws, r)) for r in GIT_ROUTES}
        script = ("mkdir -p evil/objects .git/objects/info .git/modules/x .git/worktrees/w .git/info tools/hooks sub3;"
                  " printf '[core]\\n\\tfsmonitor = touch pwned\\n' > evil/config;"
                  " echo \"$PWD/evil\" > .git/commondir; echo \"$PWD/evil/objects\" > .git/objects/info/alternates;"
                  " printf '[core]\\n\\tfsmonitor = touch pwned\\n' > .git/modules/x/config;"
                  " echo \"$PWD/evil\" > .git/worktrees/w/gitdir; echo '* filter=evil' > .git/info/attributes;"
                  " echo 'ref: refs/heads/evil' > .git/HEAD; rm .git/index; printf 'gitdir: ../evil\\n' > sub3/.git;"
                  " printf '#!/bin/sh\\ntouch pwned\\n' > tools/hooks/pre-commit; chmod +x tools/hooks/pre-commit;"
                  " printf '[core]\\n\\tfsmonitor = touch pwned\\n' > gitdata/config;"
                  " printf '[Task]\\nCommand=evil\\n' > evil.task; echo '[Daemon]' > agentd.conf; echo ok > plain")
        sid = spawn(d, ws, script)
        got = diff(d, sid)
        for r in GIT_ROUTES:
            assert r in got and got[r][2] is True, (r, got.get(r))
        assert got["plain"] == ("added", "file", False), got
        # A guarded directory holds back what is beneath it, and the directories themselves.
        for r in (".git/modules", ".git/worktrees", "tools/hooks"):
            assert got[r][2] is True, (r, got[r])
        res = d.client().ok("sandbox.promote", {"id": sid})
        held = {g["path"] for g in res["guarded"]}
        assert set(GIT_ROUTES) <= held, set(GIT_ROUTES) - held
        assert "plain" in res["promoted"] and not res["conflicts"], res
        for r in GIT_ROUTES:
            now = os.path.exists(os.path.join(ws, r)) and read(os.path.join(ws, r))
            assert now == before[r], (r, before[r], now)
        assert not os.path.exists(os.path.join(ws, ".git/modules")) and not os.path.exists(os.path.join(ws, "tools/hooks"))
        # Asked for one guarded file alone: still held back, and its directories are not created to hold it.
        res = d.client().ok("sandbox.promote", {"id": sid, "paths": [".git/modules/x/config", "tools/hooks/pre-commit"]})
        assert {g["path"] for g in res["guarded"]} == {".git/modules/x/config", "tools/hooks/pre-commit"}, res
        assert not res["promoted"], res
        assert not os.path.exists(os.path.join(ws, ".git/modules")) and not os.path.exists(os.path.join(ws, "tools/hooks"))


def test_symlinks_resolved_in_the_final_tree():
    with Daemon() as d:
        ws = os.path.join(d.tmp, "ws")
        make_tree(ws)
        # sub/u -> .. is the workspace itself; through it, x = sub/u/.. is the workspace's parent,
        # though "sub/u/.." read lexically is sub. c1 -> c2 -> ../.. is a chain out. z = pq/../..
        # reads as outside but is the workspace (pq is two levels deep): resolved, it is fine.
        sid = spawn(d, ws, "mkdir sub; ln -s .. sub/u; ln -s sub/u/.. x; ln -s sub/u/d/b through;"
                           " ln -s c2 c1; ln -s ../.. c2; ln -s sub/u/../.. y; mkdir -p p/q; ln -s p/q pq; ln -s pq/../.. z")
        res = d.client().ok("sandbox.promote", {"id": sid})
        conflicts = {c["path"]: c["reason"] for c in res["conflicts"]}
        assert set(conflicts) == {"x", "c1", "c2", "y"}, res
        assert all("outside the workspace" in r for r in conflicts.values()), conflicts
        assert {"sub/u", "through", "z"} <= set(res["promoted"]), res
        for n in ("x", "c1", "c2", "y"):
            assert not os.path.lexists(os.path.join(ws, n)), n
        assert read(os.path.join(ws, "through")) == "b\n"
        assert os.path.samefile(os.path.join(ws, "z"), ws)


def test_promoted_modes_never_add_write_bits():
    with Daemon() as d:
        ws = os.path.join(d.tmp, "ws")
        make_tree(ws)
        write(os.path.join(ws, "f644"), "x\n", 0o644)
        write(os.path.join(ws, "g664"), "x\n", 0o664)
        sid = spawn(d, ws, "chmod 666 f644; echo more >> g664; echo n > new; chmod 777 new;"
                           " mkdir nd; echo y > nd/f; chmod 662 nd/f; chmod 777 nd; chmod 4755 exe.sh")
        res = d.client().ok("sandbox.promote", {"id": sid})
        assert not res["conflicts"], res
        mode = lambda r: stat.S_IMODE(os.lstat(os.path.join(ws, r)).st_mode)
        assert mode("f644") == 0o644, oct(mode("f644"))
        assert mode("g664") == 0o664 and read(os.path.join(ws, "g664")) == "x\nmore\n", oct(mode("g664"))
        assert mode("new") == 0o755, oct(mode("new"))
        assert mode("nd") == 0o755, oct(mode("nd"))
        assert mode("nd/f") == 0o640, oct(mode("nd/f"))
        assert mode("exe.sh") == 0o755, oct(mode("exe.sh"))


def test_control_characters_in_names_are_quoted():
    with Daemon() as d:
        ws = os.path.join(d.tmp, "ws")
        make_tree(ws)
        sid = spawn(d, ws, "touch \"$(printf 'evil\\nD forged')\" \"$(printf '\\033[2Jx')\" \"$(printf 'hi\\377')\";"
                           " echo 'new' > \"$(printf 'tab\\there')\"; ln -s \"$(printf '../../\\033[1Aup')\" esc")
        out = d.agentctl("diff", sid, check=0).stdout
        assert b"\x1b" not in out and b"\nD forged" not in out, out
        for line in (b'A "evil\\nD forged"\n', b'A "\\033[2Jx"\n', b'A "hi\\377"\n', b'A "tab\\there"\n'):
            assert line in out, (line, out)
        out = d.agentctl("diff", sid, "--patch", check=0).stdout
        assert b"\x1b" not in out and b"\nD forged" not in out, out
        assert b'+++ "b/tab\\there"' in out and b'--- "a/tab\\there"' in out, out
        assert b'new file' not in out or True
        p = d.agentctl("promote", sid)
        assert p.returncode == 1, p  # the escaping symlink is a conflict
        assert b"\x1b" not in p.stdout and b"\nD forged" not in p.stdout, p.stdout
        assert b'promoted  "evil\\nD forged"\n' in p.stdout and b'promoted  "hi\\377"\n' in p.stdout, p.stdout
        assert b'CONFLICT  esc: symlink resolves outside the workspace (-> "../../\\033[1Aup")' in p.stdout, p.stdout
        # The RPC result keeps the raw bytes.
        c = d.client()
        c.unpacker = msgpack.Unpacker(raw=True, strict_map_key=False)
        res = c.response(c.request("sandbox.promote", {"id": sid, "paths": ["esc"]}))[1]
        assert [x[b"path"] for x in res[b"conflicts"]] == [b"esc"], res
        assert os.path.exists(os.path.join(ws, "evil\nD forged")) and os.path.exists(os.fsdecode(os.path.join(ws.encode(), b"hi\xff")))


DEEP = 300
DEEP_NAME = "dddddddddddddd"  # 300 levels of 15 bytes: longer than PATH_MAX


def deep_open(root, levels):
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(levels):
        nfd = os.open(DEEP_NAME, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = nfd
    return fd


# The shell's cd gives up past PATH_MAX: build it by file descriptor.
DEEP_SCRIPT = ("python3 -c \"import os\nfd = os.open('.', os.O_RDONLY)\nfor _ in range(%d):\n"
               "    os.mkdir('%s', dir_fd=fd); n = os.open('%s', os.O_RDONLY, dir_fd=fd); os.close(fd); fd = n\n"
               "os.write(os.open('f', os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), b'deep\\n')\" && rm -rf hostdeep"
               % (DEEP, DEEP_NAME, DEEP_NAME))


def make_host_deep(ws):
    os.makedirs(os.path.join(ws, "hostdeep"))
    fd = os.open(os.path.join(ws, "hostdeep"), os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(DEEP):
        os.mkdir(DEEP_NAME, dir_fd=fd)
        nfd = os.open(DEEP_NAME, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = nfd
    with open(os.open("leaf", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), "w") as f:
        f.write("leaf\n")
    os.close(fd)


def test_deep_tree_diff_and_promote():
    with Daemon() as d:
        ws = os.path.join(d.tmp, "ws")
        make_tree(ws)
        make_host_deep(ws)
        sid = spawn(d, ws, DEEP_SCRIPT)
        got = diff(d, sid)
        deep_file = "/".join([DEEP_NAME] * DEEP + ["f"])
        assert got.get(deep_file) == ("added", "file", False), len(got)
        assert got.get("hostdeep") == ("deleted", "directory", False), got.get("hostdeep")
        assert len(got) == DEEP + 2, len(got)
        res = d.client().ok("sandbox.promote", {"id": sid})
        assert not res["conflicts"] and deep_file in res["promoted"] and "hostdeep" in res["promoted"], res["conflicts"]
        fd = deep_open(ws, DEEP)
        with open(os.open("f", os.O_RDONLY, dir_fd=fd)) as f:
            assert f.read() == "deep\n"
        os.close(fd)
        assert not os.path.exists(os.path.join(ws, "hostdeep"))
        assert diff(d, sid) == {}


def test_snapshot_lists_a_deep_tree():
    with Daemon() as d:
        ws = os.path.join(d.tmp, "ws")
        make_tree(ws)
        c = d.client()
        sid = c.ok("sandbox.spawn", {"argv": ["/bin/sh", "-c", f"{DEEP_SCRIPT}; touch ready; sleep 60"],
                                     "workspace": ws})["id"]
        upper = os.path.join(d.state_home, "agentd", "sandboxes", sid, "upper")
        for _ in range(200):
            if os.path.exists(os.path.join(upper, "ready")):
                break
            time.sleep(0.05)
        res = c.ok("credentials.revoke", {"sandbox": sid})
        path = os.path.join(res["snapshots"][0], "snapshot.json")
        snap = {}
        for _ in range(200):
            snap = json.load(open(path))
            if "workspace_changes" in snap:
                break
            time.sleep(0.05)
        deep_file = "/".join([DEEP_NAME] * DEEP + ["f"])
        paths = {e["path"] for e in snap["workspace_changes"]}
        assert deep_file in paths and "ready" in paths, (snap.get("workspace_changes_error"), len(paths))
        assert snap["workspace_changes_total"] == DEEP + 2 and snap["workspace_changes_error"] is None, snap["workspace_changes_total"]


# ---- issue 12: the loop never waits for a walk ----------------------------------

SWAPPER = r"""
import os, sys
os.mkfifo("fifo")
for i in range(8):
    os.link("f%d" % i, "r%d" % i)
    os.link("fifo", "p%d" % i)
open("ready", "w").close()
while True:
    for i in range(8):
        os.link("p%d" % i, "t"); os.rename("t", "f%d" % i)
        os.link("r%d" % i, "t"); os.rename("t", "f%d" % i)
"""


def test_fifo_swapped_in_during_diff_never_stalls_the_loop():
    with Daemon() as d:
        ws = os.path.join(d.tmp, "ws")
        os.makedirs(ws)
        for i in range(8):
            write(os.path.join(ws, f"f{i}"), "same\n" * 1000)
        for i in range(3000):
            write(os.path.join(ws, "many", f"m{i}"), "m\n")
        c = d.client()
        # Copied up unchanged (same size, mode and content), then swapped with a FIFO as fast as possible.
        sid = c.ok("sandbox.spawn", {"argv": ["/bin/sh", "-c", "for i in 0 1 2 3 4 5 6 7; do cat f$i > t; chmod 644 t; mv t f$i; done;"
                                              " touch many/*; exec python3 -c \"$0\"", SWAPPER], "workspace": ws})["id"]
        upper = os.path.join(d.state_home, "agentd", "sandboxes", sid, "upper")
        for _ in range(400):
            if os.path.exists(os.path.join(upper, "ready")):
                break
            time.sleep(0.05)
        assert os.path.exists(os.path.join(upper, "ready")), d.read_log()
        a, b = d.client(), d.client()
        a.sock.settimeout(5)
        b.sock.settimeout(1)
        for _ in range(30):
            mid = a.request("sandbox.diff", {"id": sid})
            t0 = time.monotonic()
            err, res = b.call("agentd.ping")
            assert err is None and time.monotonic() - t0 < 1.0, "agentd stopped answering during a diff"
            err, res = a.response(mid)
            # Either answer is fine; none may hang. A swapped entry shows as modified.
            assert err is None or err["code"] in ("internal", "limit_exceeded"), err
        c.ok("sandbox.kill", {"id": sid, "signal": "KILL"})
        c.ok("sandbox.wait", {"id": sid})
        # A FIFO left in the layer is shown, and promote skips it with the reason.
        out = d.agentctl("diff", sid, check=0).stdout
        assert b"A fifo   [not a file, directory or symlink: promote skips it]\n" in out, out
        res = c.ok("sandbox.promote", {"id": sid})
        conflicts = {x["path"]: x["reason"] for x in res["conflicts"]}
        assert conflicts.get("fifo") == "not a regular file, directory or symlink: not promoted", conflicts


def test_loop_answers_during_a_big_promote_and_discard_waits():
    with Daemon() as d:
        ws = os.path.join(d.tmp, "ws")
        os.makedirs(ws)
        sid = spawn(d, ws, "for i in $(seq 0 199); do mkdir d$i; (cd d$i; seq 1 100 | xargs touch); done")
        a, b = d.client(), d.client()
        a.sock.settimeout(120)
        mid = a.request("sandbox.promote", {"id": sid})
        time.sleep(0.3)
        t0 = time.monotonic()
        b.ok("agentd.ping")
        ping_s = time.monotonic() - t0
        err, _ = b.call("sandbox.discard", {"id": sid})
        assert err is not None and err["code"] == "policy_denied" and "busy" in err["message"], err
        err, res = a.response(mid)
        assert err is None and len(res["promoted"]) == 20200 and not res["conflicts"], err
        # The audit record names the full manifest and vouches for it with its digest.
        rec = [r for r in b.ok("audit.query", {"sandbox": sid}) if r["type"] == "sandbox.promote"][-1]["fields"]
        assert rec["n_promoted"] == 20200 and rec["n_conflicts"] == 0, rec
        import hashlib
        with open(rec["manifest"], "rb") as f:
            data = f.read()
        assert hashlib.sha256(data).hexdigest() == rec["manifest_sha256"]
        assert len(json.loads(data)["promoted_sha256"]) == 20200
        b.ok("sandbox.discard", {"id": sid})
        assert not os.path.exists(os.path.join(d.state_home, "agentd", "sandboxes", sid, "upper"))
        print(f"    (ping during a 20,200-entry promote: {ping_s * 1000:.1f} ms)")



def test_sigterm_during_a_promote_cuts_it_short():
    d = Daemon().start()
    ws = os.path.join(d.tmp, "ws")
    os.makedirs(ws)
    sid = spawn(d, ws, "for i in $(seq 0 99); do mkdir d$i; (cd d$i; seq 1 100 | xargs touch); done")
    a = d.client()
    a.request("sandbox.promote", {"id": sid})
    time.sleep(0.5)
    # The walk stops at its next check: agentd exits 0 within the harness's 15 s, not after the promote.
    d.stop()
    assert "promote cut short by shutdown" in d.read_log() or "was cut short" in d.read_log(), d.read_log()[-2000:]
    left = [n for r, _, files in os.walk(ws) for n in files if n.startswith(".agentd-promote")]
    assert not left, left


if __name__ == "__main__":
    run_tests(globals())
