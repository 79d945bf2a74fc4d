#!/usr/bin/python3
"""Package registries for test_laptop.py and bench/bench-laptop.py, run on
loopback by the test: a small npm registry (packuments built from the tarballs
in a directory), a PEP 503 simple index (wheels in a directory), a cargo sparse
registry and a GOPROXY (both of small packages the test writes). Also, for
test_laptop-setup.sh: `laptop_fixtures.py wheels SITE OUT` repacks Debian's
installed pytest and its dependencies as wheels (pure Python, py3-none-any)."""
import base64
import hashlib
import http.server
import json
import os
import re
import sys
import tarfile
import zipfile

from harness import HttpServer

WHEEL_DISTS = ("pytest", "pluggy", "iniconfig", "packaging", "attrs")


def _normalize(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def _find_dist_info(site, dist):
    for entry in sorted(os.listdir(site)):
        m = re.match(r"^(.+?)-([^-]+)\.(dist-info|egg-info)$", entry)
        if m and _normalize(m.group(1)) == dist:
            return os.path.join(site, entry), m.group(2), m.group(3)
    raise FileNotFoundError(f"{dist}: no dist-info or egg-info in {site}")


def _record_line(arcname, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{arcname},sha256={digest},{len(data)}"


def repack_wheel(site, dist, out_dir):
    """One installed distribution as a wheel: its top-level modules plus metadata."""
    info, version, kind = _find_dist_info(site, dist)
    read = lambda n: open(os.path.join(info, n), "rb").read() if os.path.exists(os.path.join(info, n)) else None
    metadata = read("METADATA") if kind == "dist-info" else read("PKG-INFO")
    tops = (read("top_level.txt") or dist.encode()).decode().split()
    name = dist.replace("-", "_")
    di = f"{name}-{version}.dist-info"
    path = os.path.join(out_dir, f"{name}-{version}-py3-none-any.whl")
    records = []
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        def add(arcname, data):
            z.writestr(arcname, data)
            records.append(_record_line(arcname, data))
        for top in tops:
            base = os.path.join(site, top)
            if os.path.isdir(base):
                for dirpath, dirnames, filenames in os.walk(base):
                    dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
                    for f in sorted(filenames):
                        p = os.path.join(dirpath, f)
                        add(os.path.relpath(p, site), open(p, "rb").read())
            elif os.path.exists(base + ".py"):
                add(top + ".py", open(base + ".py", "rb").read())
        add(f"{di}/METADATA", metadata)
        add(f"{di}/WHEEL", b"Wheel-Version: 1.0\nGenerator: agentd-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        ep = read("entry_points.txt")
        if ep:
            add(f"{di}/entry_points.txt", ep)
        z.writestr(f"{di}/RECORD", "\n".join(records + [f"{di}/RECORD,,"]) + "\n")
    return path


class Registries(HttpServer):
    """An npm registry (/npm/NAME, /npm/-/FILE.tgz) and a PEP 503 index
    (/simple/NAME/, /wheels/FILE) on 127.0.0.1; hits are counted."""

    def __init__(self, npm_dir=None, wheel_dir=None):
        self.hits = []
        self.npm = {}      # name -> {version: (file, manifest)}
        self.wheels = {}   # normalized name -> [file]
        self.npm_dir, self.wheel_dir = npm_dir, wheel_dir
        for f in sorted(os.listdir(npm_dir)) if npm_dir else []:
            if f.endswith(".tgz"):
                with tarfile.open(os.path.join(npm_dir, f)) as t:
                    member = next(m for m in t.getmembers() if m.name.endswith("/package.json") and m.name.count("/") == 1)
                    manifest = json.load(t.extractfile(member))
                self.npm.setdefault(manifest["name"], {})[manifest["version"]] = (f, manifest)
        for f in sorted(os.listdir(wheel_dir)) if wheel_dir else []:
            if f.endswith(".whl"):
                self.wheels.setdefault(_normalize(f.split("-")[0]), []).append(f)
        reg = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                reg.hits.append(self.path)
                body, ctype = reg.answer(self.path.split("?")[0])
                if body is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        super().__init__(H)

    def _file(self, d, name):
        p = os.path.join(d, os.path.basename(name))
        return open(p, "rb").read() if d and os.path.isfile(p) else None

    def answer(self, path):
        from urllib.parse import unquote
        path = unquote(path)
        if path.startswith("/npm/-/"):
            return self._file(self.npm_dir, path[7:]), "application/octet-stream"
        if path.startswith("/npm/"):
            name = path[5:]
            versions = self.npm.get(name)
            if not versions:
                return None, None
            doc = {"name": name, "versions": {}, "dist-tags": {}}
            for v, (f, manifest) in versions.items():
                data = self._file(self.npm_dir, f)
                m = dict(manifest)
                m["dist"] = {"tarball": f"{self.url}/npm/-/{f}", "shasum": hashlib.sha1(data).hexdigest(),
                             "integrity": "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()}
                doc["versions"][v] = m
            doc["dist-tags"]["latest"] = max(versions, key=lambda v: [int(x) if x.isdigit() else 0 for x in re.split(r"[.+-]", v)])
            return json.dumps(doc).encode(), "application/json"
        if path.startswith("/wheels/"):
            return self._file(self.wheel_dir, path[8:]), "application/octet-stream"
        if path == "/simple/":
            links = "".join(f'<a href="/simple/{n}/">{n}</a>\n' for n in sorted(self.wheels))
            return f"<!DOCTYPE html><html><body>\n{links}</body></html>\n".encode(), "text/html"
        if path.startswith("/simple/"):
            files = self.wheels.get(_normalize(path[8:].strip("/")))
            if not files:
                return None, None
            links = "".join(f'<a href="/wheels/{f}#sha256={hashlib.sha256(self._file(self.wheel_dir, f)).hexdigest()}">{f}</a>\n'
                            for f in files)
            return f"<!DOCTYPE html><html><body>\n{links}</body></html>\n".encode(), "text/html"
        return None, None


class Served(HttpServer):
    """Fixed files (path -> bytes, or a function of the server's base URL giving
    bytes) over HTTP on one address; hits are recorded. A cargo sparse registry
    and a GOPROXY are such trees (sparse_registry(), goproxy_module())."""

    def __init__(self, files, host="127.0.0.1"):
        self.hits = []
        served = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                path = self.path.split("?")[0]
                served.hits.append(path)
                body = served.files.get(path)
                if callable(body):
                    body = body(served.url)
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

        self.files = files
        super().__init__(H, host)


def _tar_gz(entries):
    """entries: {relative path: text} -> gzip'd tar bytes, fixed mtimes."""
    import gzip
    import io
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as t:
        for name, text in sorted(entries.items()):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 1700000000
            t.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0)


def sparse_index_path(name):
    """Where cargo's sparse protocol looks for a crate's index file."""
    n = name.lower()
    if len(n) <= 2:
        return f"/{len(n)}/{n}"
    if len(n) == 3:
        return f"/3/{n[0]}/{n}"
    return f"/{n[:2]}/{n[2:4]}/{n}"


def sparse_registry(crates):
    """A cargo sparse registry: crates = {(name, version): {relative path: text}}
    (the crate's sources, Cargo.toml included). Index under /index/, .crate
    files under /dl/NAME/VERSION/download."""
    files = {"/index/config.json": lambda url: json.dumps({"dl": f"{url}/dl", "api": url}).encode()}
    lines = {}
    for (name, vers), sources in crates.items():
        crate = _tar_gz({f"{name}-{vers}/{rel}": text for rel, text in sources.items()})
        files[f"/dl/{name}/{vers}/download"] = crate
        lines.setdefault(name, []).append(json.dumps({
            "name": name, "vers": vers, "deps": [], "cksum": hashlib.sha256(crate).hexdigest(),
            "features": {}, "yanked": False}))
    for name, ls in lines.items():
        files["/index" + sparse_index_path(name)] = ("\n".join(ls) + "\n").encode()
    return files


def goproxy_module(module, version, sources):
    """A GOPROXY serving one module version: sources = {relative path: text}
    (go.mod included)."""
    import io
    raw = io.BytesIO()
    with zipfile.ZipFile(raw, "w", zipfile.ZIP_DEFLATED) as z:
        for rel, text in sorted(sources.items()):
            z.writestr(f"{module}@{version}/{rel}", text)
    base = f"/{module}/@v/"
    return {
        base + "list": f"{version}\n".encode(),
        base + f"{version}.info": json.dumps({"Version": version, "Time": "2024-01-01T00:00:00Z"}).encode(),
        base + f"{version}.mod": sources["go.mod"].encode(),
        base + f"{version}.zip": raw.getvalue(),
    }


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "wheels":
        for d in WHEEL_DISTS:
            print(repack_wheel(sys.argv[2], d, sys.argv[3]))
    else:
        sys.exit("usage: laptop_fixtures.py wheels SITE_PACKAGES OUT_DIR")
