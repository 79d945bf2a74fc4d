#!/usr/bin/python3
"""The Node client (ide/node) against a real agentd: runs `node --test ide/node/test/`
with AGENTD_SOCKET pointing at a harness daemon."""
import os
import re
import shutil
import subprocess

from harness import Daemon, run_tests
from test_egress import Upstream
from test_nvim import ASK_TASK, has_approvals

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
NODE_DIR = os.path.join(ROOT, "ide", "node")


def test_node_client():
    node = shutil.which("node")
    assert node, "node is missing: tests/install-deps.sh installs nodejs"
    assert os.path.isdir(os.path.join(NODE_DIR, "node_modules", "@msgpack", "msgpack")), \
        "ide/node/node_modules is missing: tests/install-deps.sh runs npm ci there"
    # With approval.* in agentd: an "ask" task and a loopback upstream for the approval test.
    up = Upstream() if has_approvals() else None
    try:
        with Daemon(tasks={"ask": ASK_TASK} if up else None) as d:
            env = dict(d.env)
            env["AGENTD_SOCKET"] = d.socket
            env["AGENTD_TEST_TMP"] = d.tmp
            if up:
                env["AGENTD_TEST_UPSTREAM_PORT"] = str(up.port)
            p = subprocess.run([node, "--test", "--test-reporter=spec", "test/"], cwd=NODE_DIR, env=env,
                               capture_output=True, text=True, timeout=300)
    finally:
        if up:
            up.stop()
    print(p.stdout[-20000:], p.stderr[-5000:])
    assert p.returncode == 0, f"node --test failed ({p.returncode})"
    if up:
        assert re.search(r"^\u2714 approvals", p.stdout, re.M), "the approval test did not pass"
    # The live tests ran against the daemon (they skip without AGENTD_SOCKET).
    live = [ln for ln in p.stdout.splitlines() if "spawn streams output as events" in ln]
    assert live and live[0].startswith("\u2714") and "SKIP" not in live[0], p.stdout[-2000:]


if __name__ == "__main__":
    run_tests(globals())
