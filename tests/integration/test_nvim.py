#!/usr/bin/python3
"""The Neovim plugin (ide/nvim) against a real agentd: `nvim --headless -u NONE`
with the plugin on 'runtimepath' runs tests/nvim/test_agentd.lua, whose exit
code decides: spawn, live output, list, review with diff splits, promote
(subset, conflict, guarded), discard, kill, revoke, reconnect, and an approval
answered through vim.ui.select when agentd has approval.*."""
import os
import shutil
import subprocess

from harness import Daemon, run_tests
from test_egress import Upstream

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PLUGIN = os.path.join(ROOT, "ide", "nvim")
SCRIPT = os.path.join(ROOT, "tests", "nvim", "test_agentd.lua")
ASK_TASK = "[Task]\nDescription=ask\n[Network]\nMode=proxy\nAllow=127.0.0.1:1\nAsk=yes\nAskTimeout=40s\n"


def has_approvals():
    with Daemon() as d:
        err, _ = d.client().call("approval.list")
        return err is None or err["code"] != "method_not_found"


def run_nvim(d, extra_env):
    env = dict(d.env)
    env.update(extra_env)
    env["AGENTD_SOCKET"] = d.socket
    env["AGENTD_TEST_TMP"] = d.tmp
    cmd = ["nvim", "--headless", "-u", "NONE", "-i", "NONE", "--noplugin",
           "--cmd", f"set runtimepath^={PLUGIN}", "--cmd", f"runtime plugin/agentd.lua",
           "-c", f"luafile {SCRIPT}"]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL)
    print(p.stdout[-5000:], p.stderr[-20000:])
    return p


def test_nvim_plugin():
    assert shutil.which("nvim"), "nvim is missing: tests/install-deps.sh installs neovim"
    approvals = has_approvals()
    up = Upstream() if approvals else None
    try:
        with Daemon(tasks={"ask": ASK_TASK} if approvals else None) as d:
            extra = {"AGENTD_TEST_APPROVALS": "1", "AGENTD_TEST_UPSTREAM_PORT": str(up.port)} if approvals else {}
            p = run_nvim(d, extra)
            assert p.returncode == 0, f"the Lua test failed (nvim exit {p.returncode})"
            assert "nvim: " in p.stderr and ", 0 failed" in p.stderr, p.stderr[-2000:]
            if approvals:
                assert "PASS approval prompt" in p.stderr, p.stderr[-2000:]
    finally:
        if up:
            up.stop()


if __name__ == "__main__":
    run_tests(globals())
