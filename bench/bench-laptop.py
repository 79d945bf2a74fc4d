#!/usr/bin/python3
"""Benchmark: the four real projects of tests/integration/test_laptop.py (zlib
with make, semver with cargo offline, minimist with npm from a local registry,
toolz with pip from a local index then pytest), each built and tested inside
`agentctl spawn --task build` / `--task test` and the same way outside, in the
same run, with the same toolchains from the user's home. Prints each time and
the ratio inside/outside.

Run as root: it installs the toolchains and fixtures for the unprivileged user
agentd-bench (tests/integration/test_laptop-setup.sh) and re-executes as that
user. ROUNDS (default 1) repeats each measurement; the median is reported."""
import os
import pwd
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
from benchutil import USER, reexec_unprivileged  # noqa: E402

PROJECTS = [("c-zlib", False), ("rust-semver", False), ("node-minimist", True), ("python-toolz", True)]


def as_root():
    try:
        pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["/usr/sbin/useradd", "-m", USER], check=True)
    home = pwd.getpwnam(USER).pw_dir
    subprocess.run([os.path.join(HERE, "..", "tests", "integration", "test_laptop-setup.sh"), USER, home], check=True)
    reexec_unprivileged(__file__, delegate_cgroup=False)


def timed(fn):
    t0 = time.monotonic()
    r = fn()
    return time.monotonic() - t0, r


def main():
    import test_laptop as tl
    home = tl.have_projects()
    if not home:
        sys.exit("bench-laptop: toolchains or fixtures missing; run as root")
    rounds = int(os.environ.get("ROUNDS", "1"))
    for cache in (".npm", ".cache/pip"):  # every run starts with cold package caches
        shutil.rmtree(os.path.join(home, cache), ignore_errors=True)
    regs = tl.registries()
    tmp = tempfile.mkdtemp(prefix="bench-laptop-")
    rows = []
    try:
        with tl.new_daemon(tasks=tl.project_tasks(regs.port), home=home) as d:
            for name, proxied in PROJECTS:
                res = {"outside": [], "inside": []}
                for _ in range(rounds):
                    for place in ("outside", "inside"):
                        ws = os.path.join(d.tmp if place == "inside" else tmp, name)
                        build, test = tl.prepare_project(name, ws, regs.url)
                        total = 0.0
                        for script, task in ((build, "build"), (test, "test")):
                            if place == "inside":
                                task += "-net" if proxied else ""
                                dt, p = timed(lambda: tl.spawn(d, "/bin/sh", "-c", script, task=task,
                                                               path=tl.project_env(home), ws=ws))
                            else:
                                env = {"HOME": home, "PATH": tl.project_env(home), "LANG": "C.UTF-8",
                                       "npm_config_cache": os.path.join(tmp, "npm-cache"),
                                       "PIP_CACHE_DIR": os.path.join(tmp, "pip-cache")}
                                dt, p = timed(lambda: subprocess.run(["/bin/sh", "-c", script], cwd=ws, env=env,
                                                                     capture_output=True))
                            assert p.returncode == 0, (name, place, script, p.stdout[-500:], p.stderr[-1500:])
                            total += dt
                        res[place].append(total)
                        shutil.rmtree(os.path.join(tmp, "npm-cache"), ignore_errors=True)
                        shutil.rmtree(os.path.join(tmp, "pip-cache"), ignore_errors=True)
                        shutil.rmtree(ws, ignore_errors=True)
                out, inn = statistics.median(res["outside"]), statistics.median(res["inside"])
                rows.append((name, out, inn))
                print(f"{name:15s} outside {out:7.2f} s   inside {inn:7.2f} s   ratio {inn / out:.2f}", flush=True)
    finally:
        regs.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print("| project (build + test) | outside | inside agentd | ratio |")
    print("|---|---|---|---|")
    for name, out, inn in rows:
        print(f"| {name} | {out:.2f} s | {inn:.2f} s | {inn / out:.2f} |")


if __name__ == "__main__":
    if os.getuid() == 0:
        as_root()
    main()
