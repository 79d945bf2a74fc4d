#!/usr/bin/python3
"""Shell completions for agentctl (completions/): bash by calling the
completion function with COMP_WORDS, fish with `complete -C`, both against a
real agentd for sandbox ids and task names; zsh by `zsh -n` and by running its
completion function with the completion builtins as printing functions."""
import os
import shutil
import subprocess

from harness import AGENTCTL, Daemon, run_tests

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
COMP = os.path.join(ROOT, "completions")


def shell_env(d):
    env = dict(d.env)
    env.pop("XDG_RUNTIME_DIR", None)
    env["AGENTD_SOCKET"] = d.socket
    env["PATH"] = os.path.dirname(AGENTCTL) + ":" + env["PATH"]
    return env


def bash_complete(d, *words, cwd=None):
    script = (f"source {COMP}/agentctl.bash\n"
              f"COMP_WORDS=({' '.join(repr(w) for w in ('agentctl',) + words)})\n"
              "COMP_CWORD=$((${#COMP_WORDS[@]} - 1))\n"
              "_agentctl\n"
              "printf '%s\\n' \"${COMPREPLY[@]}\"\n")
    p = subprocess.run(["bash", "--norc", "--noprofile", "-c", script], env=shell_env(d), capture_output=True,
                       text=True, timeout=30, cwd=cwd)
    assert p.returncode == 0, p.stderr
    return set(filter(None, p.stdout.split("\n")))


def fish_complete(d, line):
    p = subprocess.run(["fish", "--no-config", "-c", f"source {COMP}/agentctl.fish; complete -C {line!r}"],
                       env=shell_env(d), capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    return {ln.split("\t")[0] for ln in p.stdout.split("\n") if ln}


def spawn_one(d):
    ws = os.path.join(d.tmp, "ws")
    os.makedirs(ws, exist_ok=True)
    with open(os.path.join(ws, "file-in-ws"), "w") as f:
        f.write("x\n")
    p = d.agentctl("spawn", "--detach", "--", "true", cwd=ws, check=0)
    return p.stdout.decode().strip(), ws


def test_bash():
    with Daemon() as d:
        sid, ws = spawn_one(d)
        assert sid, "spawn --detach printed no id"
        top = bash_complete(d, "")
        assert {"spawn", "ps", "kill", "promote", "revoke", "task", "tasks", "--json", "--socket"} <= top, top
        assert bash_complete(d, "pro") == {"promote"}
        assert bash_complete(d, "task", "") == {"show", "check"}
        assert bash_complete(d, "audit", "") == {"verify", "show"}
        tasks = bash_complete(d, "task", "show", "")
        assert {"default", "build", "test", "shell"} <= tasks, tasks
        assert {"default", "build"} <= bash_complete(d, "spawn", "--task", "")
        assert bash_complete(d, "kill", "") == {sid}
        assert bash_complete(d, "kill", sid, "--") == {"--signal"}
        assert "KILL" in bash_complete(d, "kill", sid, "--signal", "")
        assert bash_complete(d, "revoke", "--") == {"--all", "--sandbox", "--task", "--freeze-only"}
        assert bash_complete(d, "revoke", "--sandbox", "") == {sid}
        assert bash_complete(d, "--socket", d.socket, "diff", "") == {sid}
        # After the id: paths; after "--" in spawn: a command.
        assert "file-in-ws" in bash_complete(d, "promote", sid, "", cwd=ws)
        assert "sh" in bash_complete(d, "spawn", "--", "s")
        # Without a daemon: commands still complete, ids are just empty.
        d.stop()
        assert "spawn" in bash_complete(d, "")
        assert bash_complete(d, "kill", "") == set()


def test_fish():
    if not shutil.which("fish"):
        print("fish is not installed (tests/install-deps.sh installs it): skipped")
        return "skip"
    subprocess.run(["fish", "-n", os.path.join(COMP, "agentctl.fish")], check=True)
    with Daemon() as d:
        sid, _ = spawn_one(d)
        top = fish_complete(d, "agentctl ")
        assert {"spawn", "ps", "kill", "promote", "revoke", "--json"} <= top, top
        assert fish_complete(d, "agentctl task ") == {"show", "check"}
        assert {"default", "build"} <= fish_complete(d, "agentctl task show ")
        assert {"default", "build"} <= fish_complete(d, "agentctl spawn --task ")
        assert fish_complete(d, "agentctl kill ") == {sid}
        assert fish_complete(d, "agentctl revoke --sandbox ") == {sid}
        assert fish_complete(d, "agentctl revoke --") == {"--all", "--sandbox", "--task", "--freeze-only"}


# zsh: the completion function runs outside the completion system with the
# builtins it reports through (compadd, _describe, _files, ...) as functions
# that print what they were given.
ZSH_DRIVER = r"""
compadd() { [[ $1 == -- ]] && shift; print -l -- "$@" }
_describe() { print -l -- ${(P)4} }
_files() { print -- "<files>" }
_directories() { print -- "<dirs>" }
_command_names() { print -- "<commands>" }
source "$1/_agentctl" >/dev/null 2>&1
shift
words=(agentctl "$@")
CURRENT=${#words}
_agentctl
"""


def zsh_complete(d, *words):
    driver = os.path.join(d.tmp, "zsh-driver.zsh")
    with open(driver, "w") as f:
        f.write(ZSH_DRIVER)
    p = subprocess.run(["zsh", "-f", driver, COMP] + list(words), env=shell_env(d), capture_output=True, text=True,
                       timeout=30)
    assert p.returncode == 0, p.stderr
    return set(filter(None, p.stdout.split("\n")))


def test_zsh():
    if not shutil.which("zsh"):
        print("zsh is not installed (tests/install-deps.sh installs it): skipped")
        return "skip"
    p = subprocess.run(["zsh", "-n", os.path.join(COMP, "_agentctl")], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    with Daemon() as d:
        sid, _ = spawn_one(d)
        top = zsh_complete(d, "")
        assert {"spawn", "ps", "kill", "promote", "revoke", "--json"} <= top, top
        assert zsh_complete(d, "task", "") == {"show", "check"}
        assert zsh_complete(d, "audit", "") == {"verify", "show"}
        assert {"default", "build"} <= zsh_complete(d, "task", "show", "")
        assert {"default", "build"} <= zsh_complete(d, "spawn", "--task", "")
        assert zsh_complete(d, "kill", "") == {sid}
        assert zsh_complete(d, "kill", sid, "--") == {"--signal"}
        assert zsh_complete(d, "revoke", "--sandbox", "") == {sid}
        assert zsh_complete(d, "revoke", "--") == {"--all", "--sandbox", "--task", "--freeze-only"}
        assert zsh_complete(d, "spawn", "--", "") == {"<commands>"}
        assert zsh_complete(d, "promote", sid, "") == {"<files>"}


if __name__ == "__main__":
    run_tests(globals())
