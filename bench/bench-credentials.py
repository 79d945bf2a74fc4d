#!/usr/bin/python3
"""Benchmarks for the credential broker and incident response, against the
real swtpm + the Vault-compatible dev server, peers measured in the same run:

1. spawn-to-token-in-sandbox (agentctl spawn --task creds -- agentctl token)
   next to one raw auth/token/create round trip to the same server;
2. tokens per second for 50 concurrent credentialed spawns;
3. revoke --all for 10, 50 and 100 sandboxes: time until all are frozen and
   until every token is revoked, next to the floors of freezing the same
   number of cgroups directly and revoking the same number of tokens with
   parallel revoke-accessor calls.

Run as root: it delegates a cgroup to the user agentd-bench (as systemd's
Delegate=yes would) and re-executes itself as that user."""
import json
import os
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
from benchutil import reexec_unprivileged  # noqa: E402


def reexec():
    reexec_unprivileged(__file__, delegate_cgroup=True)


def med(v):
    return statistics.median(v)


def main():
    if os.geteuid() == 0:
        reexec()
    from test_broker import enroll, setup, wait_vault_ok, workspace  # noqa
    tpm, vault, d = setup()
    d.env["PATH"] = "/usr/bin:/bin"
    try:
        d.start()
        enroll(d)
        wait_vault_ok(d)
        c = d.client()
        st = c.ok("agentd.status")
        print(f"cgroup: {st['cgroup']}")
        ws = workspace(d)
        # Session token for raw round trips: the broker's own is not exported; log in like it does.
        s, body = vault.req("POST", "auth/approle/login", body={"role_id": "agentd-role", "secret_id": "s3cret-approle-id-0123456789"})
        session = body["auth"]["client_token"]

        # 1. spawn-to-token vs one raw token/create.
        raw = []
        for _ in range(20):
            t0 = time.perf_counter()
            s, b = vault.req("POST", "auth/token/create", session, {"policies": ["ci-read"], "ttl": "900s"})
            raw.append(time.perf_counter() - t0)
            vault.req("POST", "auth/token/revoke-accessor", session, {"accessor": b["auth"]["accessor"]})
        full = []
        for _ in range(20):
            t0 = time.perf_counter()
            d.agentctl("spawn", "--task", "creds", "--", "./agentctl", "token", cwd=ws, check=0)
            full.append(time.perf_counter() - t0)
        plain = []
        for _ in range(20):
            t0 = time.perf_counter()
            d.agentctl("spawn", "--", "/bin/true", cwd=ws, check=0)
            plain.append(time.perf_counter() - t0)
        print("\n1. spawn to token in the sandbox (20 runs each, medians)")
        print(f"   raw auth/token/create round trip        {med(raw)*1000:8.2f} ms")
        print(f"   agentctl spawn -- /bin/true (no token)  {med(plain)*1000:8.2f} ms")
        print(f"   agentctl spawn --task creds -- token    {med(full)*1000:8.2f} ms")
        print(f"   ratio spawn-to-token / raw create: {med(full)/med(raw):.2f}; "
              f"token overhead over a plain spawn: {(med(full)-med(plain))*1000:.2f} ms ({(med(full)-med(plain))/med(raw):.2f}x one create)")

        # 2. 50 concurrent credentialed spawns.
        errors = []

        def one():
            p = d.agentctl("spawn", "--task", "creds", "--", "./agentctl", "token", cwd=ws)
            if p.returncode != 0:
                errors.append(p.stderr)
        ts = [threading.Thread(target=one) for _ in range(50)]
        t0 = time.perf_counter()
        [t.start() for t in ts]
        [t.join() for t in ts]
        el = time.perf_counter() - t0
        raw_par = []
        t1 = time.perf_counter()

        def rawone():
            s, b = vault.req("POST", "auth/token/create", session, {"policies": ["ci-read"], "ttl": "900s"})
            raw_par.append(b["auth"]["accessor"])
        ts = [threading.Thread(target=rawone) for _ in range(50)]
        [t.start() for t in ts]
        [t.join() for t in ts]
        el_raw = time.perf_counter() - t1
        for a in raw_par:
            vault.req("POST", "auth/token/revoke-accessor", session, {"accessor": a})
        print("\n2. 50 concurrent credentialed spawns, each reading its token")
        print(f"   agentd: {50/el:7.1f} tokens/s in sandboxes ({len(errors)} errors); raw parallel token/create: {50/el_raw:7.1f} tokens/s;"
              f" ratio {(50/el)/(50/el_raw):.2f}")

        # 3. revoke --all at 10, 50, 100 sandboxes.
        print("\n3. revoke --all (time from the request; frozen = every sandbox frozen, tokens = Vault confirmed)")
        print(f"   {'N':>4} {'frozen':>10} {'tokens':>10} {'reply':>10} {'floor: freeze N cgroups':>24} {'floor: N revoke-accessor (parallel)':>36}")
        cgroot = None
        for line in open("/proc/self/cgroup"):
            if line.startswith("0::"):
                cgroot = line[3:].strip()
        mnt = [l.split()[4] for l in open("/proc/self/mountinfo") if " - cgroup2 " in l][0]
        mycg = mnt + cgroot
        for n in (10, 50, 100):
            ids = [c.ok("sandbox.spawn", {"task": "creds", "argv": ["/bin/sh", "-c", "./agentctl token >/dev/null; exec sleep 600"],
                                          "workspace": ws})["id"] for _ in range(n)]
            deadline = time.time() + 60
            while c.ok("broker.status")["tokens_live"] < n and time.time() < deadline:
                time.sleep(0.05)
            t0 = time.perf_counter()
            p = d.agentctl("--json", "revoke", "--all")
            wall = time.perf_counter() - t0
            r = json.loads(p.stdout)
            for sid in ids:
                c.ok("sandbox.wait", {"id": sid})
            d.agentctl("unlock", check=0)
            wait_vault_ok(d)
            # Floors, same run: freeze N cgroups holding a sleeping process each; revoke N tokens in parallel.
            floor_freeze = None
            if os.access(mycg, os.W_OK):
                dirs, procs = [], []
                for i in range(n):
                    dd = os.path.join(mycg, f"floor{i}")
                    os.mkdir(dd)
                    pr = subprocess.Popen(["sleep", "600"])
                    with open(os.path.join(dd, "cgroup.procs"), "w") as f:
                        f.write(str(pr.pid))
                    dirs.append(dd)
                    procs.append(pr)
                t1 = time.perf_counter()
                for dd in dirs:
                    with open(os.path.join(dd, "cgroup.freeze"), "w") as f:
                        f.write("1")
                floor_freeze = time.perf_counter() - t1
                for dd, pr in zip(dirs, procs):
                    with open(os.path.join(dd, "cgroup.kill"), "w") as f:
                        f.write("1")
                    pr.wait()
                    os.rmdir(dd)
            accs = []
            for _ in range(n):
                s, b = vault.req("POST", "auth/token/create", session, {"policies": ["ci-read"], "ttl": "900s"})
                accs.append(b["auth"]["accessor"])
            t2 = time.perf_counter()
            ts = [threading.Thread(target=vault.req, args=("POST", "auth/token/revoke-accessor", session, {"accessor": a})) for a in accs]
            [t.start() for t in ts]
            [t.join() for t in ts]
            floor_revoke = time.perf_counter() - t2
            tm = r["timing_us"]
            ff = f"{floor_freeze*1000:8.2f} ms ({tm['frozen']/1000/(floor_freeze*1000):.2f}x)" if floor_freeze else "n/a (no cgroup)"
            print(f"   {n:>4} {tm['frozen']/1000:8.2f}ms {tm['tokens']/1000:8.2f}ms {wall*1000:8.1f}ms {ff:>24} "
                  f"{floor_revoke*1000:10.2f} ms ({tm['tokens']/1000/(floor_revoke*1000):.2f}x)"
                  f"   [frozen={r['frozen']} killed={r['killed']} revoked={r['tokens_revoked']} pending={r['tokens_pending']}]")
    finally:
        d.stop()
        vault.stop()
        tpm.stop()


if __name__ == "__main__":
    main()
