"""Shared by the Python benchmarks: run unprivileged (the product's real
setting), optionally inside a cgroup delegated to that user the way systemd's
Delegate=yes does it."""
import os
import pwd
import subprocess
import sys

USER = "agentd-bench"
HERE = os.path.dirname(os.path.abspath(__file__))


def pct(xs, p):
    """The p-quantile of xs (0 <= p <= 1), interpolated between neighbours."""
    xs = sorted(xs)
    k = (len(xs) - 1) * p
    f = int(k)
    c = min(f + 1, len(xs) - 1)
    return xs[f] + (xs[c] - xs[f]) * (k - f)


def reexec_unprivileged(script, delegate_cgroup=False, keep_env=()):
    """Called as root: re-run `script` as agentd-bench and exit with its status.
    keep_env: names of environment variables (the script's knobs) to pass on."""
    try:
        pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["/usr/sbin/useradd", "-m", USER], check=True)
    pw = pwd.getpwnam(USER)
    cg = ""
    if delegate_cgroup:
        mnt = next((l.split()[4] for l in open("/proc/self/mountinfo") if " - cgroup2 " in l), None)
        if mnt:
            cg = os.path.join(mnt, f"agentd-bench-{os.getpid()}")
            os.makedirs(cg, exist_ok=True)
            subprocess.run(["chown", "-R", USER, cg], check=True)
    env = {"HOME": pw.pw_dir, "USER": USER, "PATH": "/usr/bin:/bin", "CG": cg,
           "AGENTD_BUILD": os.environ.get("AGENTD_BUILD", os.path.abspath(os.path.join(HERE, "..", "build")))}
    env.update({k: os.environ[k] for k in keep_env if k in os.environ})
    rc = subprocess.run(["sh", "-c", '[ -z "$CG" ] || echo $$ > "$CG/cgroup.procs"; exec /usr/sbin/runuser -u ' + USER +
                         ' -- /usr/bin/python3 "$0" "$@"', os.path.abspath(script)] + sys.argv[1:], env=env).returncode
    if cg:
        subprocess.run(["find", cg, "-depth", "-type", "d", "-exec", "rmdir", "{}", ";"], stderr=subprocess.DEVNULL)
    sys.exit(rc)
