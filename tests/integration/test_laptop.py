#!/usr/bin/python3
"""A developer's machine inside agentd's sandboxes: toolchains from the home
directory (read-only) with the caller's PATH filtered to what is visible, package
caches through a per-sandbox copy-on-write layer (the host's copy never changes),
credential files hidden one by one even inside shown trees, agentctl on PATH,
named Allow sets. Most tests use a fake home in a temporary directory; the ones
using real toolchains (rustup, pyenv) need tests/integration/test_laptop-setup.sh
to have run as root (tests/run-integration.sh does it) and skip otherwise."""
import hashlib
import json
import os
import shutil
import signal
import stat
import time

from harness import AGENTCTL, AGENTCTL_INSIDE, Daemon, run_tests

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")


def data_list(name):
    with open(os.path.join(SRC, "policy", "laptop", name)) as f:
        return [l.strip() for l in f if l.strip() and not l.startswith("#")]


def fake_home(d):
    home = os.path.join(d.tmp, "home")
    os.makedirs(home, exist_ok=True)
    return home


def write(path, text, mode=0o644):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)


def spawn(d, *cmd, task=None, path=None, ws=None):
    ws = ws or os.path.join(d.tmp, "ws")
    os.makedirs(ws, exist_ok=True)
    args = ["spawn"] + (["--task", task] if task else []) + ["--"] + list(cmd)
    env = {"PATH": path} if path is not None else None
    return d.agentctl(*args, cwd=ws, env=env, timeout=600)


def sh(d, script, **kw):
    return spawn(d, "/bin/sh", "-c", script, **kw)


def tree_digest(root):
    """Every path, type, mode and content under root."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            h.update(f"{os.path.relpath(p, root)} {stat.S_IFMT(st.st_mode)} {st.st_mode & 0o7777} {st.st_size}\n".encode())
            if stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    h.update(f.read())
    return h.hexdigest()


def new_daemon(tasks=None, home=None):
    d = Daemon(tasks=tasks)
    if home is None:
        home = os.path.join(d.tmp, "home")
    os.makedirs(home, exist_ok=True)
    d.env["HOME"] = home
    return d


def test_toolchains_in_home_on_path_read_only():
    """~/.local/bin and ~/.cargo/bin are shown read-only and stay on PATH; a PATH
    directory the sandbox cannot see is dropped; Toolchains=none shows nothing."""
    tasks = {"bare": "[Task]\nCommand=/bin/true\n[Filesystem]\nToolchains=none\n"}
    with new_daemon(tasks) as d:
        home = d.env["HOME"]
        write(os.path.join(home, ".local", "bin", "laptop-hello"), "#!/bin/sh\necho hello from local-bin\n", 0o755)
        write(os.path.join(home, ".cargo", "bin", "cargo"), "#!/bin/sh\necho fake cargo \"$@\"\n", 0o755)
        write(os.path.join(home, "not-shown", "bin", "secret-tool"), "#!/bin/sh\necho no\n", 0o755)
        caller = ":".join([os.path.join(home, ".cargo", "bin"), os.path.join(home, "not-shown", "bin"),
                           os.path.join(home, ".local", "bin"), "relative/bin", "/usr/bin", "/bin"])
        p = sh(d, 'echo "PATH=$PATH"; laptop-hello; cargo build; touch ~/.local/bin/x 2>/dev/null || echo read-only; '
                  'mkdir -p ~/.cargo/registry/index/x && echo cache-ok',
               task="build", path=caller)
        out = p.stdout.decode()
        assert p.returncode == 0, (p.returncode, out, p.stderr)
        want = ":".join([os.path.join(home, ".cargo", "bin"), os.path.join(home, ".local", "bin"),
                         "/usr/bin", "/bin", "/usr/local/bin", "/run/agentd/bin"])
        assert f"PATH={want}\n" in out, out
        assert "hello from local-bin" in out and "fake cargo build" in out and "read-only" in out, out
        assert not os.path.exists(os.path.join(home, ".local", "bin", "x"))
        # A cache the shown tree lacks yet (~/.cargo/registry) is made, empty, and written through the layer.
        assert "cache-ok" in out and os.listdir(os.path.join(home, ".cargo", "registry")) == [], out
        # Toolchains=none: nothing of the home, PATH is the defaults (and agentctl).
        p = sh(d, 'echo "PATH=$PATH"; ls ~/.local/bin 2>&1; command -v laptop-hello || echo missing',
               task="bare", path=caller)
        out = p.stdout.decode()
        assert "PATH=/usr/bin:/bin:/usr/local/bin:/run/agentd/bin\n" in out and "missing" in out, out


def test_task_show_toolchains_key():
    tasks = {
        "mine": "[Filesystem]\nToolchains=~/tools /opt/x\n",
        "off": "[Filesystem]\nToolchains=none\n",
        "bad": "[Filesystem]\nToolchains=auto ~/x\n",
    }
    with new_daemon(tasks) as d:
        c = d.client()
        for name in ("build", "test", "default", "shell"):
            assert c.ok("task.show", {"name": name})["Filesystem"]["Toolchains"] == ["auto"], name
        show = c.ok("task.show", {"name": "mine"})
        home = d.env["HOME"]
        assert show["Filesystem"]["Toolchains"] == [home + "/tools", "/opt/x"], show["Filesystem"]
        assert "toolchain (read-only): /opt/x" in show["capabilities"], show["capabilities"]
        assert c.ok("task.show", {"name": "off"})["Filesystem"]["Toolchains"] == []
        err, _ = c.call("task.show", {"name": "bad"})
        assert err is not None
        assert err["code"] == "invalid_params" and "bad.task:2" in err["message"], err
        assert "bad.task:2" in d.read_log() and "must stand alone" in d.read_log(), d.read_log()


def test_secret_files_hidden_one_by_one():
    """Every file of policy/laptop/secrets.list is unreadable inside, even with
    the whole home shown read-only and its toolchain trees shown."""
    tasks = {"home": "[Task]\nCommand=/bin/true\n[Filesystem]\nReadOnlyPaths=~\n"}
    with new_daemon(tasks) as d:
        home = d.env["HOME"]
        secrets = data_list("secrets.list")
        assert len(secrets) >= 15, secrets
        checks = []
        for entry in secrets:
            if not entry.startswith("~/"):
                continue  # system paths (/nix/var/nix/daemon-socket): not creatable here
            rel = entry[2:]
            p = os.path.join(home, rel)
            # Directories in the list are directories on real machines; files are files.
            if rel in (".ssh", ".gnupg", ".aws", ".kube", ".config/gcloud", ".azure", ".config/gh", ".config/hub",
                       ".local/share/keyrings", ".password-store"):
                write(os.path.join(p, "key"), f"SECRET {rel}\n")
                checks.append(f'cat "$HOME/{rel}/key" 2>/dev/null; ls -A "$HOME/{rel}" 2>/dev/null')
            else:
                write(p, f"SECRET {rel}\n")
                checks.append(f'cat "$HOME/{rel}" 2>/dev/null')
        # A shown toolchain tree with its credentials inside, and a symlinked credential.
        write(os.path.join(home, ".cargo", "bin", "cargo"), "#!/bin/sh\n", 0o755)
        write(os.path.join(home, "dotfiles", "npmrc"), "SECRET via symlink\n")
        os.unlink(os.path.join(home, ".npmrc"))
        os.symlink(os.path.join(home, "dotfiles", "npmrc"), os.path.join(home, ".npmrc"))
        checks.append('cat "$HOME/.npmrc"')
        script = "; ".join(checks) + '; echo x > "$HOME/.cargo/credentials.toml" || echo write-refused; echo END'
        p = sh(d, script, task="home")
        out = p.stdout.decode()
        assert out.endswith("END\n") and "SECRET" not in out, (out, p.stderr)
        assert "write-refused" in out, out
        # The same files are readable outside, so the test is not vacuous.
        assert open(os.path.join(home, ".cargo", "credentials.toml")).read().startswith("SECRET")
        # and the shown tree's other files are there
        p = sh(d, 'test -x "$HOME/.cargo/bin/cargo" && echo shown', task="home")
        assert p.stdout == b"shown\n", p


def secret_and_cache_check(pool):
    """The per-task plan cache (plan-cache.c) holds across spawns and unrelated
    changes, and a credential file that appears after the plan was cached is
    still hidden at the next spawn (they are probed on every spawn); a toolchain
    that appears drops the cache and is shown at the next spawn."""
    tasks = {"home": "[Task]\nCommand=/bin/true\n[Filesystem]\nReadOnlyPaths=~\n"}
    d = Daemon(tasks=tasks, config=f"[Pool]\nWarmSandboxes={pool}\n")
    home = os.path.join(d.tmp, "home")
    os.makedirs(home)
    d.env["HOME"] = home
    look = ('cat "$HOME/.aws/credentials" "$HOME/.netrc" "$HOME/.config/git/credentials" "$HOME/.npmrc" 2>/dev/null; '
            'ls -A "$HOME/.aws" 2>/dev/null; echo END')
    with d:
        c = d.client()
        p = sh(d, look, task="home")
        assert p.stdout == b"END\n", p
        builds = c.ok("agentd.status")["plan_cache_builds"]
        assert builds >= 1, builds
        for _ in range(3):
            assert sh(d, look, task="home").stdout == b"END\n"
        # Entries of watched directories that no probe looks at leave it alone.
        write(os.path.join(home, "notes.txt"), "x\n")
        write(os.path.join(d.tmp, "unrelated", "f"), "x\n")
        assert sh(d, look, task="home").stdout == b"END\n"
        assert c.ok("agentd.status")["plan_cache_builds"] == builds, "the plan cache did not hold"
        # Secrets appear while the plan is cached: hidden at the very next spawn.
        write(os.path.join(home, ".aws", "credentials"), "SECRET aws\n")
        write(os.path.join(home, ".netrc"), "SECRET netrc\n")
        write(os.path.join(home, ".config", "git", "credentials"), "SECRET git\n")
        write(os.path.join(home, "dotfiles", "npmrc"), "SECRET npmrc\n")
        os.symlink(os.path.join(home, "dotfiles", "npmrc"), os.path.join(home, ".npmrc"))
        p = sh(d, look, task="home")
        assert p.stdout == b"END\n", (p.stdout, p.stderr)
        assert open(os.path.join(home, ".aws", "credentials")).read() == "SECRET aws\n"  # not vacuous
        assert c.ok("agentd.status")["plan_cache_builds"] == builds, "secrets must not need a rebuild"
        # A toolchain appears: the cache is dropped and the next spawn shows it on PATH.
        caller = ":".join([os.path.join(home, ".cargo", "bin"), "/usr/bin", "/bin"])
        p = sh(d, 'command -v cargo || echo missing', task="build", path=caller)
        assert p.stdout == b"missing\n", p
        before = c.ok("agentd.status")["plan_cache_builds"]
        write(os.path.join(home, ".cargo", "bin", "cargo"), "#!/bin/sh\necho fake cargo\n", 0o755)
        p = sh(d, 'cargo', task="build", path=caller)
        assert p.stdout == b"fake cargo\n", p
        assert c.ok("agentd.status")["plan_cache_builds"] > before
        if pool:
            assert d.warm_spawns() > 0, d.read_log()


def test_secret_appearing_after_cached_plan_hidden_pool_off():
    secret_and_cache_check(0)


def test_secret_appearing_after_cached_plan_hidden_pool_on():
    secret_and_cache_check(2)


def test_plan_cache_dropped_on_reload():
    """A task edited and reloaded: the next spawn runs under the new plan (the
    cached one of the old policy object is dropped), with the pool off."""
    tasks = {"sized": "[Task]\nDescription=x\n[Filesystem]\nTmpSize=16M\n"}
    with Daemon(tasks=tasks, config="[Pool]\nWarmSandboxes=0\n") as d:
        c = d.client()
        df = 'df -k /tmp | tail -1'
        p = sh(d, df, task="sized")
        assert " 16384 " in p.stdout.decode(), p
        assert " 16384 " in sh(d, df, task="sized").stdout.decode()
        builds = c.ok("agentd.status")["plan_cache_builds"]
        with open(os.path.join(d.config_home, "agentd", "tasks", "sized.task"), "w") as f:
            f.write("[Task]\nDescription=x\n[Filesystem]\nTmpSize=8M\n")
        d.proc.send_signal(signal.SIGHUP)
        deadline = time.time() + 10
        while "task policies reloaded" not in d.read_log() and time.time() < deadline:
            time.sleep(0.1)
        p = sh(d, df, task="sized")
        assert " 8192 " in p.stdout.decode(), p
        assert c.ok("agentd.status")["plan_cache_builds"] > builds


def test_toolchain_symlinked_to_secret_or_state_not_shown():
    """A toolchain or cache location that is a symlink (planted by anything that
    can write the home: another process of the user, a sandbox with a writable
    bind there) to ~/.ssh, to agentd's state directory or to the home itself is
    not shown: the helper binds the spelling and the kernel follows the link,
    while the hide list masks only the secrets' own spellings. A toolchain
    symlinked to an ordinary tree still is; and planting the link after the
    plan was cached is seen at the next spawn."""
    with new_daemon() as d:
        home = d.env["HOME"]
        c = d.client()
        write(os.path.join(home, ".ssh", "id_rsa"), "SECRET ssh\n")
        write(os.path.join(home, "elsewhere", "cargo", "bin", "cargo"), "#!/bin/sh\necho real cargo\n", 0o755)
        os.symlink(os.path.join(home, "elsewhere", "cargo"), os.path.join(home, ".cargo"))
        look = ('cat ~/.rustup/id_rsa ~/.local/bin/id_rsa ~/.cache/id_rsa 2>/dev/null; ls ~/.nvm/agentd ~/.bun 2>/dev/null; '
                '~/.cargo/bin/cargo; echo END')
        p = sh(d, look, task="build")
        assert p.stdout == b"real cargo\nEND\n", (p.stdout, p.stderr)
        # Planted while the plan is cached.
        os.symlink(os.path.join(home, ".ssh"), os.path.join(home, ".rustup"))
        os.makedirs(os.path.join(home, ".local"))
        os.symlink(os.path.join(home, ".ssh"), os.path.join(home, ".local", "bin"))
        os.symlink(os.path.join(home, ".ssh"), os.path.join(home, ".cache"))
        os.symlink(d.state_home, os.path.join(home, ".nvm"))
        os.symlink(home, os.path.join(home, ".bun"))
        p = sh(d, look, task="build")
        assert p.stdout == b"real cargo\nEND\n", (p.stdout, p.stderr)
        assert open(os.path.join(home, ".rustup", "id_rsa")).read() == "SECRET ssh\n"  # not vacuous
        assert c.ok("agentd.status")["plan_cache_builds"] >= 2


def test_plan_cache_sees_a_retargeted_link_in_a_chain():
    """A toolchain reached through two symlinks (~/.cargo -> x/l2 -> data/cargo):
    the middle link is on neither the path as spelled nor as resolved, but the
    helper binds the spelling, so retargeting it at ~/.ssh or agentd's state
    must drop the cached plan, and the next spawn must not show them. A task
    path through such a chain is bound at its resolved path (checked when the
    plan was made), so it keeps showing that directory, never the new target."""
    with new_daemon({"docs": "[Task]\nDescription=x\n[Filesystem]\nReadOnlyPaths=~/a/l1\n"}) as d:
        home = d.env["HOME"]
        write(os.path.join(home, ".ssh", "id_rsa"), "SECRET ssh\n")
        write(os.path.join(home, "data", "cargo", "bin", "cargo"), "#!/bin/sh\necho real cargo\n", 0o755)
        write(os.path.join(home, "c", "ok"), "ok\n")
        for sub in ("registry", "git"):  # so that a stale plan's caches mount there too
            os.makedirs(os.path.join(home, ".ssh", sub))
        for sub in ("x", "a", "b"):
            os.makedirs(os.path.join(home, sub))
        os.symlink(os.path.join(home, "x", "l2"), os.path.join(home, ".cargo"))
        os.symlink(os.path.join(home, "data", "cargo"), os.path.join(home, "x", "l2"))
        os.symlink(os.path.join(home, "b", "l2"), os.path.join(home, "a", "l1"))
        os.symlink(os.path.join(home, "c"), os.path.join(home, "b", "l2"))
        look = 'cat ~/.cargo/id_rsa ~/.cargo/agentd/agentd.lock 2>/dev/null; ~/.cargo/bin/cargo 2>/dev/null; echo END'
        c = d.client()
        assert sh(d, 'cat ~/c/ok; echo END', task="docs").stdout == b"ok\nEND\n"
        for _ in range(2):  # the first makes the caches inside the tree (~/.cargo/registry): a change
            assert sh(d, look, task="build").stdout == b"real cargo\nEND\n"
        builds = c.ok("agentd.status")["plan_cache_builds"]
        assert sh(d, look, task="build").stdout == b"real cargo\nEND\n"
        assert c.ok("agentd.status")["plan_cache_builds"] == builds, "the plan was not cached: the test proves nothing"
        for target in (os.path.join(home, ".ssh"), d.state_home):
            os.unlink(os.path.join(home, "x", "l2"))
            os.symlink(target, os.path.join(home, "x", "l2"))
            p = sh(d, look, task="build")
            assert p.stdout == b"END\n", (target, p.stdout, p.stderr)
        os.unlink(os.path.join(home, "b", "l2"))
        os.symlink(os.path.join(d.state_home, "agentd"), os.path.join(home, "b", "l2"))
        p = sh(d, 'ls ~/a/l1 ~/c 2>&1; echo END', task="docs")
        assert b"audit" not in p.stdout and b"sandboxes" not in p.stdout, (p.stdout, p.stderr)
        assert os.path.exists(os.path.join(home, ".cargo", "agentd", "agentd.lock"))  # not vacuous


def test_caches_copy_on_write():
    """Caches are visible and writable inside; the host's copy is byte-identical after."""
    with new_daemon() as d:
        home = d.env["HOME"]
        files = {
            ".cargo/registry/index/config.json": "{\"dl\": \"x\"}\n",
            ".cargo/registry/cache/crate-1.0.crate": "crate bytes\n",
            ".cargo/git/db/repo/HEAD": "ref: main\n",
            ".npm/_cacache/index-v5/aa": "npm index\n",
            ".cache/pip/http/x": "pip http cache\n",
            "go/pkg/mod/cache/download/m.zip": "go module\n",
            ".m2/repository/org/x/1.0/x.jar": "jar\n",
        }
        for rel, text in files.items():
            write(os.path.join(home, rel), text)
        before = tree_digest(home)
        script = " && ".join([
            'cat ~/.cargo/registry/index/config.json',
            'echo poisoned >> ~/.cargo/registry/cache/crate-1.0.crate',
            'echo new > ~/.cargo/registry/cache/new.crate',
            'rm ~/.cargo/git/db/repo/HEAD',
            'echo poisoned > ~/.npm/_cacache/index-v5/aa',
            'mkdir -p ~/.cache/pip/wheels && echo w > ~/.cache/pip/wheels/w.whl',
            'chmod 600 ~/.cache/pip/http/x',
            'echo poisoned > ~/go/pkg/mod/cache/download/m.zip',
            'echo poisoned > ~/.m2/repository/org/x/1.0/x.jar',
            'cat ~/.cargo/registry/cache/crate-1.0.crate ~/.npm/_cacache/index-v5/aa',
            'echo OK',
        ])
        p = sh(d, script, task="build")
        out = p.stdout.decode()
        assert p.returncode == 0 and out.endswith("OK\n"), (p.returncode, out, p.stderr)
        assert out.startswith('{"dl": "x"}\ncrate bytes\npoisoned\npoisoned\n'), out
        assert tree_digest(home) == before, "a sandbox changed the host's cache"
        # A second sandbox starts from the host's copy again.
        p = sh(d, "cat ~/.npm/_cacache/index-v5/aa; ls ~/.cargo/registry/cache", task="build")
        assert p.stdout == b"npm index\ncrate-1.0.crate\n", p


def test_agentctl_inside_on_path():
    with new_daemon() as d:
        # A sanitizer build's agentctl cannot run under the seccomp filter (harness.AGENTCTL_INSIDE).
        run = "agentctl --version" if AGENTCTL_INSIDE == AGENTCTL else "test -x /run/agentd/bin/agentctl && echo agentctl"
        p = sh(d, "command -v agentctl && " + run)
        out = p.stdout.decode()
        assert p.returncode == 0 and out.startswith("/run/agentd/bin/agentctl\n") and "agentctl" in out.split("\n")[1], \
            (out, p.stderr)
        p = sh(d, "echo x > /run/agentd/bin/agentctl || echo read-only")
        assert b"read-only" in p.stdout, p


def test_allow_sets():
    tasks = {
        "pkgs": "[Network]\nMode=proxy\nAllow=@crates @npm @pypi @go @maven @github example.org:443\n",
        "typo": "[Network]\nMode=proxy\nAllow=@cratez\n",
    }
    with new_daemon(tasks) as d:
        c = d.client()
        allow = c.ok("task.show", {"name": "pkgs"})["Network"]["Allow"]
        for host in ("index.crates.io:443", "static.crates.io:443", "pypi.org:443",
                     "files.pythonhosted.org:443", "proxy.golang.org:443", "repo.maven.apache.org:443",
                     "github.com:443", "example.org:443"):
            assert host in allow, (host, allow)
        err, _ = c.call("task.show", {"name": "typo"})
        assert err is not None
        assert err["code"] == "invalid_params" and "unknown set '@cratez'" in err["message"], err
        log = d.read_log()
        assert "typo.task:3" in log and "unknown set '@cratez'" in log and "@crates @github" in log, log


def test_supplementary_group_file_named_at_spawn():
    """A workspace file whose group is another of the user's groups cannot be
    copied up by the overlay (the group is unmapped inside): spawn names it."""
    import grp
    try:
        gid = grp.getgrnam("agentd-laptop").gr_gid
    except KeyError:
        gid = None
    if gid is None or gid not in os.getgroups():
        print("SKIP: the test user is not in group agentd-laptop (run test_laptop-setup.sh as root)", flush=True)
        return "skip"
    with new_daemon() as d:
        ws = os.path.join(d.tmp, "ws")
        write(os.path.join(ws, "shared.txt"), "team file\n", 0o664)
        write(os.path.join(ws, "mine.txt"), "my file\n")
        os.chown(os.path.join(ws, "shared.txt"), -1, gid)
        p = sh(d, "echo more >> mine.txt && echo mine-ok; echo more >> shared.txt || echo shared-refused", ws=ws)
        err = p.stderr.decode()
        assert b"mine-ok" in p.stdout and b"shared-refused" in p.stdout, (p.stdout, err)
        assert "agentctl: note: 1 file in the workspace belongs to another of your groups" in err, err
        assert "shared.txt (group agentd-laptop) will be read-only inside" in err and "mine.txt" not in err, err
        # Workspace=rw writes the host file itself: no copy-up, and no note.
        p = sh(d, "echo more >> shared.txt && echo rw-ok", task="build", ws=ws)
        assert p.stdout == b"rw-ok\n" and b"note:" not in p.stderr, p
        assert open(os.path.join(ws, "shared.txt")).read() == "team file\nmore\n"


def real_home_toolchains():
    home = os.path.realpath(os.environ.get("HOME", "/"))
    cargo = os.path.join(home, ".cargo", "bin", "cargo")
    pyenv = os.path.join(home, ".pyenv", "shims", "python3")
    if not (os.access(cargo, os.X_OK) and os.access(pyenv, os.X_OK)):
        print(f"SKIP: no rustup/pyenv toolchains in {home} (run tests/integration/test_laptop-setup.sh "
              "as root, or tests/run-integration.sh test_laptop.py as root)", flush=True)
        return None
    return home


def test_real_rustup_and_pyenv_from_home():
    """The machine's rustup toolchain and pyenv Python, installed the usual way in
    the test user's home, work inside `--task build` with the caller's PATH."""
    home = real_home_toolchains()
    if not home:
        return "skip"
    with open(os.path.join(home, ".pyenv", "version")) as f:
        version = f.read().strip()
    path = f"{home}/.pyenv/shims:{home}/.pyenv/bin:{home}/.cargo/bin:/usr/bin:/bin"
    with new_daemon(home=home) as d:
        ws = os.path.join(d.tmp, "hello")
        os.makedirs(os.path.join(ws, "src"))
        write(os.path.join(ws, "Cargo.toml"), '[package]\nname = "hello"\nversion = "0.1.0"\nedition = "2021"\n')
        write(os.path.join(ws, "src", "main.rs"), 'fn main() { println!("hello from cargo"); }\n')
        p = spawn(d, "cargo", "run", "--offline", "-q", task="build", path=path, ws=ws)
        assert p.returncode == 0 and p.stdout == b"hello from cargo\n", (p.stdout, p.stderr)
        p = spawn(d, "python3", "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3]); print(sys.prefix)",
                  task="build", path=path, ws=ws)
        out = p.stdout.decode().split("\n")
        assert p.returncode == 0 and out[0] == version and out[1].startswith(home + "/.pyenv/"), (out, p.stderr)


FIXTURES = os.environ.get("AGENTD_LAPTOP_FIXTURES", "/var/tmp/agentd-laptop-fixtures")


def project_env(home):
    """The caller's PATH of a developer with rustup and pyenv set up the usual way."""
    return f"{home}/.pyenv/shims:{home}/.pyenv/bin:{home}/.cargo/bin:{home}/.local/bin:/usr/local/bin:/usr/bin:/bin"


def prepare_project(name, ws, registry_url=None):
    """Put a fresh copy of a real project in ws; returns (build, test) shell scripts.
    The scripts run the same inside a sandbox and outside (bench/bench-laptop.py)."""
    if os.path.exists(ws):
        shutil.rmtree(ws)
    proxied = "export NO_PROXY= no_proxy=; "
    if name == "c-zlib":
        shutil.copytree(os.path.join(FIXTURES, "c", "zlib"), ws, symlinks=True)
        return "./configure >/dev/null && make -j2 >/dev/null && echo BUILT", "make test 2>&1 | tail -n 3"
    if name == "rust-semver":
        shutil.copytree(os.path.join(FIXTURES, "rust", "semver"), ws, symlinks=True)
        shutil.copytree(os.path.join(FIXTURES, "rust", "registry"), os.path.join(ws, "vendor"), symlinks=True)
        write(os.path.join(ws, ".cargo", "config.toml"),
              f'[source.crates-io]\nreplace-with = "vendored"\n[source.vendored]\ndirectory = "{ws}/vendor"\n')
        return ("cargo build --offline --features serde -q && echo BUILT",
                "cargo test --offline --features serde -q 2>&1 | grep -E '^test result' | head -n 3")
    if name == "node-minimist":
        os.makedirs(ws)
        import tarfile
        with tarfile.open(os.path.join(FIXTURES, "node", "minimist-1.2.8.tgz")) as t:
            t.extractall(ws + ".x")
        shutil.move(os.path.join(ws + ".x", "package"), ws + ".p")
        shutil.rmtree(ws)
        shutil.rmtree(ws + ".x")
        os.rename(ws + ".p", ws)
        # Its test runner from the local registry; the linters and coverage tools
        # among its devDependencies are not served.
        with open(os.path.join(ws, "package.json")) as f:
            pkg = json.load(f)
        pkg["devDependencies"] = {"tape": "^5.7.5"}
        pkg["scripts"] = {"test": "tape 'test/*.js'"}
        with open(os.path.join(ws, "package.json"), "w") as f:
            json.dump(pkg, f, indent=2)
        return (proxied + f"npm install --no-audit --no-fund --registry={registry_url}/npm/ "
                          ">/dev/null && echo BUILT",
                "npm test 2>&1 | tail -n 4")
    if name == "python-toolz":
        os.makedirs(ws)
        for pkg in ("toolz", "tlz"):
            shutil.copytree(os.path.join(FIXTURES, "python", pkg), os.path.join(ws, pkg), symlinks=True)
        return (proxied + "python3 -m venv .venv && .venv/bin/pip install -q --disable-pip-version-check "
                          f"--index-url {registry_url}/simple/ pytest && .venv/bin/python -m pytest --version && echo BUILT",
                ".venv/bin/python -m pytest -q -p no:cacheprovider toolz/tests 2>&1 | tail -n 1")
    raise ValueError(name)


def registries():
    from laptop_fixtures import Registries
    return Registries(npm_dir=os.path.join(FIXTURES, "node", "registry"),
                      wheel_dir=os.path.join(FIXTURES, "python", "wheels"))


def project_tasks(port):
    """build/test with the registry reachable through agentd's proxy (Allow=127.0.0.1:PORT)."""
    net = f"[Network]\nMode=proxy\nAllow=127.0.0.1:{port}\n"
    return {
        "build-net": "[Task]\nTimeout=30min\n[Filesystem]\nWorkspace=rw\nToolchains=auto\n" + net,
        "test-net": "[Task]\nTimeout=30min\n[Filesystem]\nWorkspace=overlay\nToolchains=auto\n" + net,
    }


def have_projects():
    home = real_home_toolchains()
    if not home:
        return None
    if not os.path.exists(os.path.join(FIXTURES, "READY")):
        print(f"SKIP: no project fixtures in {FIXTURES} (run tests/integration/test_laptop-setup.sh as root)", flush=True)
        return None
    return home


def run_project(name, proxied):
    home = have_projects()
    if not home:
        return "skip"
    regs = registries()
    try:
        with new_daemon(tasks=project_tasks(regs.port), home=home) as d:
            ws = os.path.join(d.tmp, name)
            build, test = prepare_project(name, ws, regs.url)
            p = spawn(d, "/bin/sh", "-c", build, task="build-net" if proxied else "build", path=project_env(home), ws=ws)
            assert p.returncode == 0 and p.stdout.decode().endswith("BUILT\n"), (name, p.stdout, p.stderr[-3000:])
            p = spawn(d, "/bin/sh", "-c", test, task="test-net" if proxied else "test", path=project_env(home), ws=ws)
            return p, regs.hits, d
    finally:
        regs.stop()


def test_project_c_zlib_make():
    r = run_project("c-zlib", False)
    if r == "skip":
        return r
    p = r[0]
    assert p.returncode == 0 and b"*** zlib 64-bit test OK ***" in p.stdout, (p.stdout, p.stderr[-2000:])


def test_project_rust_semver_cargo_offline():
    r = run_project("rust-semver", False)
    if r == "skip":
        return r
    p = r[0]
    out = p.stdout.decode()
    assert p.returncode == 0 and out.count("test result: ok.") >= 3, (out, p.stderr[-2000:])


def test_project_node_minimist_npm_through_proxy():
    r = run_project("node-minimist", True)
    if r == "skip":
        return r
    p, hits = r[0], r[1]
    out = p.stdout.decode()
    assert p.returncode == 0 and "# fail" not in out and "# pass" in out, (out, p.stderr[-2000:])
    assert "/npm/tape" in hits and any(h.startswith("/npm/-/tape-5.7.5") for h in hits), hits[:20]


def test_project_python_toolz_pip_through_proxy_then_pytest():
    r = run_project("python-toolz", True)
    if r == "skip":
        return r
    p, hits = r[0], r[1]
    out = p.stdout.decode()
    assert p.returncode == 0 and " passed" in out and "failed" not in out, (out, p.stderr[-2000:])
    assert "/simple/pytest/" in hits and any(h.startswith("/wheels/pytest-7") for h in hits), hits



def proxy_tasks(host, port):
    """build-net with only the local server (an IP literal: agentd's proxy then
    permits it whatever its range) reachable, through agentd's proxy; build-other
    allows another port of that host only (the control: nothing gets through)."""
    task = "[Task]\nTimeout=30min\n[Filesystem]\nWorkspace=rw\nToolchains=auto\n[Network]\nMode=proxy\nAllow="
    return {"build-net": f"{task}{host}:{port}\n", "build-other": f"{task}{host}:{port % 65535 + 1}\n"}


def test_cargo_build_through_proxy_from_sparse_registry():
    """cargo fetches a crate from a sparse registry (index and download) through
    agentd's proxy and builds against it; the host's ~/.cargo/registry is unchanged."""
    home = os.path.realpath(os.environ.get("HOME", "/"))
    if not os.access(os.path.join(home, ".cargo", "bin", "cargo"), os.X_OK):
        print(f"SKIP: no rustup toolchain in {home} (run tests/run-integration.sh test_laptop.py as root)", flush=True)
        return "skip"
    from laptop_fixtures import Served, sparse_registry
    greet = {
        "Cargo.toml": '[package]\nname = "agentd-greet"\nversion = "0.3.1"\nedition = "2021"\n',
        "src/lib.rs": 'pub fn greet(who: &str) -> String { format!("greetings, {who}, from a local registry") }\n',
    }
    reg = Served(sparse_registry({("agentd-greet", "0.3.1"): greet}))
    host_cache = os.path.join(home, ".cargo", "registry")
    before = tree_digest(host_cache) if os.path.isdir(host_cache) else None
    try:
        with new_daemon(tasks=proxy_tasks("127.0.0.1", reg.port), home=home) as d:
            ws = os.path.join(d.tmp, "app")
            write(os.path.join(ws, "Cargo.toml"), '[package]\nname = "app"\nversion = "0.1.0"\nedition = "2021"\n'
                                                  '[dependencies]\nagentd-greet = "0.3"\n')
            write(os.path.join(ws, "src", "main.rs"), 'fn main() { println!("{}", agentd_greet::greet("agent")); }\n')
            write(os.path.join(ws, ".cargo", "config.toml"),
                  '[source.crates-io]\nreplace-with = "local"\n'
                  f'[source.local]\nregistry = "sparse+{reg.url}/index/"\n')
            # agentd's NO_PROXY names loopback: cleared so that the loopback
            # registry is asked through the proxy (a sandbox has no route to it).
            script = "export NO_PROXY= no_proxy= CARGO_NET_RETRY=0; cargo run -q"
            p = spawn(d, "/bin/sh", "-c", script, task="build-other", path=project_env(home), ws=ws)
            assert p.returncode != 0 and b"denied by task 'build-other'" in p.stderr and reg.hits == [], (p.stderr[-3000:], reg.hits)
            p = spawn(d, "/bin/sh", "-c", script, task="build-net", path=project_env(home), ws=ws)
            assert p.returncode == 0 and p.stdout == b"greetings, agent, from a local registry\n", (p.stdout, p.stderr[-3000:])
            assert "/index/config.json" in reg.hits and "/index/ag/en/agentd-greet" in reg.hits, reg.hits
            assert "/dl/agentd-greet/0.3.1/download" in reg.hits, reg.hits
            lock = open(os.path.join(ws, "Cargo.lock")).read()
            assert 'name = "agentd-greet"' in lock and f"sparse+{reg.url}/index/" not in lock, lock
    finally:
        reg.stop()
    after = tree_digest(host_cache) if os.path.isdir(host_cache) else None
    assert after == before, "a sandbox changed the host's ~/.cargo/registry"


# The Go test's host: 198.18.0.1 (the range set aside for test hosts) on the
# loopback device, added as root by test_laptop-setup.sh; nothing leaves the machine.
GO_TEST_ADDR = "198.18.0.1"


def go_test_addr():
    """GO_TEST_ADDR when the setup added it to this machine, else None."""
    import subprocess
    try:
        out = subprocess.run(["ip", "-4", "addr", "show", "dev", "lo"], capture_output=True, timeout=10).stdout
    except OSError:
        return None
    return GO_TEST_ADDR if f" {GO_TEST_ADDR}/".encode() in out else None


def test_go_build_through_proxy_from_goproxy():
    """go fetches a module (its .mod and .zip) from a GOPROXY through
    agentd's proxy and builds a program importing it. Go never proxies a
    loopback host (net/http's ProxyFromEnvironment), so the GOPROXY listens on
    198.18.0.1 on this machine's loopback device (added by the setup), named in Allow=."""
    if not os.access("/usr/bin/go", os.X_OK):
        print("SKIP: no /usr/bin/go (apt-get install golang-go)", flush=True)
        return "skip"
    addr = go_test_addr()
    if not addr:
        print(f"SKIP: {GO_TEST_ADDR} is not on lo (added as root by test_laptop-setup.sh; Go never proxies loopback)",
              flush=True)
        return "skip"
    from laptop_fixtures import Served, goproxy_module
    mod = "example.test/greet"
    srv = Served(goproxy_module(mod, "v1.2.0", {
        "go.mod": f"module {mod}\n\ngo 1.19\n",
        "greet.go": 'package greet\n\nfunc Hello(who string) string { return "hello, " + who + ", from a GOPROXY" }\n',
    }), host=addr)
    try:
        with new_daemon(tasks=proxy_tasks(addr, srv.port)) as d:
            ws = os.path.join(d.tmp, "app")
            write(os.path.join(ws, "go.mod"), f"module example.test/app\n\ngo 1.19\n\nrequire {mod} v1.2.0\n")
            write(os.path.join(ws, "main.go"), f'package main\n\nimport (\n\t"fmt"\n\t"{mod}"\n)\n\n'
                                               'func main() { fmt.Println(greet.Hello("agent")) }\n')
            script = (f"export GOPROXY={srv.url} GOFLAGS=-mod=mod GOSUMDB=off GONOSUMDB='*' "
                      "GOPATH=/tmp/gopath GOCACHE=/tmp/gocache GOTOOLCHAIN=local && go build -o app . && ./app")
            p = spawn(d, "/bin/sh", "-c", script, task="build-other", path="/usr/bin:/bin", ws=ws)
            assert p.returncode != 0 and b"denied by task 'build-other'" in p.stderr and srv.hits == [], (p.stderr[-3000:], srv.hits)
            p = spawn(d, "/bin/sh", "-c", script, task="build-net", path="/usr/bin:/bin", ws=ws)
            assert p.returncode == 0 and p.stdout == b"hello, agent, from a GOPROXY\n", (p.stdout, p.stderr[-3000:])
            for suffix in ("v1.2.0.mod", "v1.2.0.zip"):
                assert f"/{mod}/@v/{suffix}" in srv.hits, srv.hits
    finally:
        srv.stop()


if __name__ == "__main__":
    run_tests(globals())
