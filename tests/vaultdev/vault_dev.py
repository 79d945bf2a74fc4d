#!/usr/bin/python3
"""vault_dev.py - a small HashiCorp-Vault-API-compatible development server.

Test infrastructure for agentd: it speaks Vault's documented wire protocol for
the token store, AppRole login, sys/health and seal/unseal, and adds a few
inspection/fault-injection endpoints under /v1/sys/dev/ (which real Vault does
not have).  Standard library only; run it with /usr/bin/python3.

    vault_dev.py --port 0 --role-id R --secret-id S --role-policies agentd \
                 [--tls-cert F --tls-key F] [--state-file F] [--print-root-token]

prints "ROOT <token>" / "UNSEAL <key>" (with --print-root-token) and finally
"READY <port>" on stdout once it is listening.  See README.md.
"""
import argparse
import base64
import binascii
import datetime
import hashlib
import http.server
import json
import os
import re
import secrets
import signal
import ssl
import string
import sys
import threading
import time
import urllib.parse
import uuid

VERSION = "1.15.6+agentd-dev"
SYS_DEFAULT_TTL = 768 * 3600      # Vault's default default_lease_ttl (32 days)
SYS_MAX_TTL = 768 * 3600          # Vault's default max_lease_ttl
BASE62 = string.ascii_letters + string.digits
DISPLAY_SANITIZE = re.compile(r"[^a-zA-Z0-9-]")
# Paths any valid token may use (brief: "self" endpoints plus create).
SELF_PATHS = {"auth/token/lookup-self", "auth/token/renew-self",
              "auth/token/revoke-self", "auth/token/create"}
# Paths usable while sealed (as in Vault: unauthenticated status endpoints).
SEALED_OK = {"sys/health", "sys/seal-status", "sys/unseal", "sys/leader", "sys/init"}
DEFAULT_FAIL_ERRORS = {429: "request rate limited", 500: "internal error",
                       502: "bad gateway", 503: "Vault is sealed"}


class VaultError(Exception):
    """An error answered as {"errors": [...]}."""

    def __init__(self, status, *errors):
        super().__init__(status, errors)
        self.status = status
        self.errors = list(errors)


def denied():
    return VaultError(403, "permission denied")


# ---------------------------------------------------------------- helpers ----

def rand62(n):
    return "".join(secrets.choice(BASE62) for _ in range(n))


_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "ms": 1e-3, "s": 1.0,
             "m": 60.0, "h": 3600.0, "d": 86400.0}
_GO_DUR = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|\u00b5s|ms|s|m|h|d)")


def parse_duration(value, field):
    """parseutil.ParseDurationSecond: ints are seconds, strings are Go durations
    (plus "d"), a bare number string is seconds.  Returns whole seconds."""
    if value is None or value == "":
        return 0
    if isinstance(value, bool):
        raise VaultError(400, f"invalid {field}: {value!r}")
    if isinstance(value, (int, float)):
        return int(value)
    if not isinstance(value, str):
        raise VaultError(400, f"invalid {field}: {value!r}")
    s = value.strip()
    if re.fullmatch(r"-?\d+", s):
        return int(s)
    neg = s.startswith("-")
    body = s.lstrip("+-")
    pos, total = 0, 0.0
    for m in _GO_DUR.finditer(body):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _GO_UNITS[m.group(2)]
        pos = m.end()
    if pos != len(body) or not body:
        raise VaultError(400, f'time: invalid duration "{value}"')
    return -int(total) if neg else int(total)


def go_duration(secs):
    """Format whole seconds like Go's time.Duration.String()."""
    secs = int(secs)
    if secs == 0:
        return "0s"
    sign = "-" if secs < 0 else ""
    secs = abs(secs)
    h, rem = divmod(secs, 3600)
    m, s = divmod(rem, 60)
    if h:
        return f"{sign}{h}h{m}m{s}s"
    if m:
        return f"{sign}{m}m{s}s"
    return f"{sign}{s}s"


def go_time(ts):
    """A Unix time as Go's time.Time JSON (RFC 3339, nanoseconds trimmed)."""
    dt = datetime.datetime.fromtimestamp(ts, datetime.timezone.utc)
    frac = f"{dt.microsecond:06d}".rstrip("0")
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + ("." + frac if frac else "") + "Z"


def weak_bool(value, field):
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value != 0
    if isinstance(value, str):
        v = value.strip().lower()
        if v in ("1", "t", "true"):
            return True
        if v in ("0", "f", "false", ""):
            return False
    raise VaultError(400, f"Error decoding request: cannot parse '{field}' as bool")


def weak_int(value, field):
    if value is None or value == "":
        return 0
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value == int(value):
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
        return int(value)
    raise VaultError(400, f"Error decoding request: cannot parse '{field}' as int")


def str_list(value, field):
    """framework.TypeStringSlice / CommaStringSlice decoding."""
    if value is None:
        return []
    if isinstance(value, str):
        return [p.strip() for p in value.split(",") if p.strip()]
    if isinstance(value, list) and all(isinstance(x, (str, int, float)) for x in value):
        return [str(x) for x in value]
    raise VaultError(400, f"Error decoding request: '{field}' must be a list of strings")


def str_map(value, field):
    if value is None:
        return None
    if not isinstance(value, dict):
        raise VaultError(400, f"Error decoding request: '{field}' expected a map")
    out = {}
    for k, v in value.items():
        if isinstance(v, (dict, list)):
            raise VaultError(400, f"Error decoding request: '{field}[{k}]' expected type 'string'")
        out[str(k)] = "" if v is None else (json.dumps(v) if isinstance(v, bool) else str(v))
    return out


def sanitize_policies(policies, add_default):
    """policyutil.SanitizePolicies: lower-case, trim, 'root' swallows all,
    optionally add 'default', de-duplicate and sort."""
    out, default_found = [], False
    for p in policies:
        p = p.strip().lower()
        if not p:
            continue
        if p == "root":
            out, default_found = ["root"], True
            break
        if p == "default":
            default_found = True
        out.append(p)
    if add_default and (not out or not default_found):
        out.append("default")
    return sorted(set(out))


def ns_within(child, parent):
    """Is namespace `child` equal to or below `parent` ('' is the root)?"""
    return parent == "" or child == parent or child.startswith(parent + "/")


def calculate_ttl(increment, token_ttl, period, backend_max, explicit_max, start, now):
    """framework.CalculateTTL (system default/max TTL 768h)."""
    warnings = []
    max_ttl = SYS_MAX_TTL
    if 0 < backend_max < max_ttl:
        max_ttl = backend_max
    if 0 < explicit_max < max_ttl:
        max_ttl = explicit_max
    max_valid = None
    if period > 0:
        if period > max_ttl:
            warnings.append(f'period of "{go_duration(period)}" exceeded the effective max_ttl of '
                            f'"{go_duration(max_ttl)}"; period value is capped accordingly')
            period = max_ttl
        ttl = period
        if explicit_max > 0:
            max_valid = start + explicit_max
    else:
        if increment > 0:
            ttl = increment
        elif token_ttl > 0:
            ttl = token_ttl
        else:
            ttl = SYS_DEFAULT_TTL
        max_valid = start + max_ttl
    if max_valid is not None:
        left = int(max_valid - now)
        if left <= 0:
            raise VaultError(400, "past the max TTL, cannot renew")
        if left < ttl:
            warnings.append(f'TTL of "{go_duration(ttl)}" exceeded the effective max_ttl of '
                            f'"{go_duration(left)}"; TTL value is capped accordingly')
            ttl = left
    return ttl, warnings


# ------------------------------------------------------------------ state ----

class Store:
    """All server state, guarded by one lock; optionally persisted as JSON."""

    def __init__(self, args):
        self.lock = threading.RLock()
        self.args = args
        self.state_file = args.state_file
        self.tokens = {}          # id -> record
        self.by_accessor = {}     # accessor -> id
        self.ns_ids = {}          # namespace path -> 4-char id
        self.root_token = None
        self.unseal_key = None
        self.sealed = bool(args.start_sealed)
        self.initialized = not args.uninitialized
        self.standby = bool(args.standby)
        self.fail = {"status": 0, "count": 0, "errors": None, "path_prefix": ""}
        self.latency_ms = 0
        self.requests = []        # recent request log for sys/dev/requests
        self.cluster_id = str(uuid.uuid4())
        self._load()
        if args.root_token:
            self.root_token = args.root_token
        if not self.root_token:
            self.root_token = "hvs." + rand62(24)
        if not self.unseal_key:
            self.unseal_key = base64.b64encode(secrets.token_bytes(32)).decode()
        if self.root_token not in self.tokens:
            now = time.time()
            self._add({
                "id": self.root_token, "accessor": rand62(24), "ns": "", "parent": "",
                "policies": ["root"], "meta": None, "display_name": "root", "num_uses": 0,
                "creation_time": int(now), "issue_time": now, "ttl": 0, "expire": None,
                "explicit_max_ttl": 0, "period": 0, "backend_max_ttl": 0, "renewable": False,
                "path": "auth/token/root", "last_renewal": None, "revoked": None,
            })
        self.save()

    # persistence
    def _load(self):
        if not self.state_file or not os.path.exists(self.state_file):
            return
        with open(self.state_file) as f:
            st = json.load(f)
        self.root_token = st.get("root_token")
        self.unseal_key = st.get("unseal_key")
        self.ns_ids = st.get("ns_ids", {})
        self.cluster_id = st.get("cluster_id", self.cluster_id)
        for rec in st.get("tokens", []):
            self._add(rec)

    def save(self):
        if not self.state_file:
            return
        st = {"version": 1, "root_token": self.root_token, "unseal_key": self.unseal_key,
              "ns_ids": self.ns_ids, "cluster_id": self.cluster_id,
              "tokens": list(self.tokens.values())}
        tmp = self.state_file + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(st, f)
        os.replace(tmp, self.state_file)

    def _add(self, rec):
        self.tokens[rec["id"]] = rec
        self.by_accessor[rec["accessor"]] = rec["id"]

    # namespaces
    def ns_id(self, ns):
        if ns not in self.ns_ids:
            self.ns_ids[ns] = base64.b32encode(hashlib.sha256(ns.encode()).digest()).decode()[:4].lower()
        return self.ns_ids[ns]

    # token validity
    @staticmethod
    def live(rec, now):
        return rec["revoked"] is None and (rec["expire"] is None or rec["expire"] > now)

    def sweep(self, now):
        """The expiration manager: revoke expired tokens and their subtrees."""
        changed = False
        for rec in list(self.tokens.values()):
            if rec["revoked"] is None and rec["expire"] is not None and rec["expire"] <= now:
                self.revoke_tree(rec, "expired", now)
                changed = True
        if changed:
            self.save()

    def children(self, rec):
        return [t for t in self.tokens.values() if t["parent"] == rec["id"]]

    def revoke_tree(self, rec, reason, now=None):
        now = now or time.time()
        stack = [rec]
        while stack:
            t = stack.pop()
            stack.extend(self.children(t))
            if t["revoked"] is None:
                t["revoked"] = {"time": now, "reason": reason if t is rec else "parent revoked"}

    def find(self, token_id, ns):
        """A live token visible from namespace `ns` (its own ns or a child)."""
        rec = self.tokens.get(token_id)
        if rec and self.live(rec, time.time()) and ns_within(rec["ns"], ns):
            return rec
        return None

    def find_accessor(self, accessor, ns):
        tid = self.by_accessor.get(accessor)
        return self.find(tid, ns) if tid else None

    def new_token(self, *, ns, parent, policies, meta, display_name, num_uses, ttl,
                  explicit_max_ttl, period, backend_max_ttl, renewable, path, token_id=None):
        now = time.time()
        if token_id is None:
            token_id = "hvs." + rand62(24)
            accessor = rand62(24)
            if ns:
                token_id += "." + self.ns_id(ns)
                accessor += "." + self.ns_id(ns)
        else:
            accessor = rand62(24)
        rec = {
            "id": token_id, "accessor": accessor, "ns": ns, "parent": parent,
            "policies": policies, "meta": meta, "display_name": display_name,
            "num_uses": num_uses, "creation_time": int(now), "issue_time": now, "ttl": ttl,
            "expire": (now + ttl) if ttl > 0 else None, "explicit_max_ttl": explicit_max_ttl,
            "period": period, "backend_max_ttl": backend_max_ttl, "renewable": renewable,
            "path": path, "last_renewal": None, "revoked": None,
        }
        self._add(rec)
        return rec


# ----------------------------------------------------------- the handler ----

def envelope(data=None, auth=None, warnings=None):
    return {"request_id": str(uuid.uuid4()), "lease_id": "", "renewable": False,
            "lease_duration": 0, "data": data, "wrap_info": None,
            "warnings": warnings or None, "auth": auth, "mount_type": ""}


def auth_block(rec, client_token=True):
    return {
        "client_token": rec["id"] if client_token else "",
        "accessor": rec["accessor"],
        "policies": rec["policies"],
        "token_policies": rec["policies"],
        "metadata": rec["meta"],
        "lease_duration": rec["ttl"] if rec["expire"] is None else max(0, int(rec["expire"] - time.time() + 0.5)),
        "renewable": rec["renewable"],
        "entity_id": "",
        "token_type": "service",
        "orphan": rec["parent"] == "",
        "mfa_requirement": None,
        "num_uses": rec["num_uses"],
    }


def lookup_data(rec, now, with_id=True):
    d = {
        "accessor": rec["accessor"],
        "creation_time": rec["creation_time"],
        "creation_ttl": rec["ttl"],
        "display_name": rec["display_name"],
        "entity_id": "",
        "expire_time": None,
        "explicit_max_ttl": rec["explicit_max_ttl"],
        "id": rec["id"] if with_id else "",
        "meta": rec["meta"],
        "num_uses": rec["num_uses"],
        "orphan": rec["parent"] == "",
        "path": rec["path"],
        "policies": rec["policies"],
        "ttl": 0,
        "type": "service",
    }
    if rec["period"]:
        d["period"] = rec["period"]
    if rec["ns"]:
        d["namespace_path"] = rec["ns"] + "/"
    if rec["expire"] is not None:           # tokens with a lease
        d["expire_time"] = go_time(rec["expire"])
        d["ttl"] = max(0, int(rec["expire"] - round(now)))
        d["renewable"] = rec["renewable"]
        d["issue_time"] = go_time(rec["issue_time"])
        if rec["last_renewal"]:
            d["last_renewal_time"] = int(rec["last_renewal"])
            d["last_renewal"] = go_time(rec["last_renewal"])
    return d


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Real Vault (Go) writes a response in one go; without this the header and
    # body writes meet a keep-alive client's delayed ACK (40 ms per request).
    disable_nagle_algorithm = True
    server_version = "vault-dev"

    def version_string(self):
        return self.server_version
    store = None      # set in main()
    args = None

    # -- plumbing
    def log_message(self, fmt, *a):
        if self.args.verbose:
            sys.stderr.write("vault_dev: " + (fmt % a) + "\n")

    def send_json(self, status, body, head_only=False):
        self.status_sent = status
        raw = b"" if body is None else (json.dumps(body) + "\n").encode()
        self.send_response(status)
        self.send_header("Cache-Control", "no-store")
        if body is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "0" if head_only else str(len(raw)))
        self.end_headers()
        if not head_only and raw:
            self.wfile.write(raw)

    def do_GET(self):
        self.dispatch("GET")

    def do_HEAD(self):
        self.dispatch("HEAD")

    def do_POST(self):
        self.dispatch("POST")

    def do_PUT(self):
        self.dispatch("POST")        # PUT = POST in Vault

    def do_DELETE(self):
        self.dispatch("DELETE")

    def do_LIST(self):
        self.dispatch("LIST")

    def read_body(self):
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n > 0 else b""
        return raw

    def dispatch(self, method):
        self.status_sent = 0
        try:
            raw = self.read_body()
            status, body = self.route(method, raw)
        except VaultError as e:
            status, body = e.status, {"errors": e.errors}
        except Exception as e:  # noqa: BLE001 - a dev server must answer
            import traceback
            traceback.print_exc()
            status, body = 500, {"errors": [f"internal error: {e}"]}
        self.send_json(status, body, head_only=(method == "HEAD"))
        with self.store.lock:
            self.store.requests.append({
                "time": time.time(), "method": self.command, "path": self._rel,
                "namespace": self._ns, "status": status})
            del self.store.requests[:-1000]

    # -- routing
    def route(self, method, raw):
        st = self.store
        url = urllib.parse.urlsplit(self.path)
        self.query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        self._rel, self._ns = url.path, ""
        if not url.path.startswith("/v1/"):
            raise VaultError(404)
        rel = urllib.parse.unquote(url.path[4:]).strip("/")
        ns = (self.headers.get("X-Vault-Namespace") or "").strip().strip("/")
        self._rel, self._ns = rel, ns
        if method == "GET" and self.query.get("list", [""])[0] in ("true", "1"):
            method = "LIST"
        token = self.headers.get("X-Vault-Token") or ""
        if not token:
            authz = self.headers.get("Authorization") or ""
            if authz.lower().startswith("bearer "):
                token = authz[7:].strip()
        self.token_id = token

        body = {}
        if method in ("POST", "DELETE") and raw.strip():
            try:
                body = json.loads(raw)
            except ValueError as e:
                raise VaultError(400, f"failed to parse JSON input: {e}")
            if body is None:
                body = {}
            if not isinstance(body, dict):
                raise VaultError(400, "failed to parse JSON input: body must be a JSON object")
        self.body = body

        if rel.startswith("sys/dev/") or rel == "sys/dev":
            return self.dev(method, rel[len("sys/dev/"):] if rel.startswith("sys/dev/") else "")

        # fault injection and latency (not applied to sys/dev/*)
        with st.lock:
            ms = st.latency_ms
            fail = None
            f = st.fail
            if f["count"] > 0 and f["status"] and rel.startswith(f["path_prefix"]):
                f["count"] -= 1
                fail = (f["status"], f["errors"] or [DEFAULT_FAIL_ERRORS.get(f["status"], "injected failure")])
        if ms:
            time.sleep(ms / 1000.0)
        if fail:
            return fail[0], {"errors": fail[1]}

        with st.lock:
            now = time.time()
            if (st.sealed or not st.initialized) and rel not in SEALED_OK:
                raise VaultError(503, "Vault is sealed")
            st.sweep(now)
            routes = self.routes()
            entry = routes.get(rel)
            if entry is None:
                # Vault authenticates before routing: only root learns "404".
                caller = st.find(token, ns) if token else None
                if caller and "root" in caller["policies"]:
                    raise VaultError(404)
                raise denied()
            methods, fn, needs_auth = entry
            if method not in methods:
                raise VaultError(405, "unsupported operation")
            caller = None
            self.orig_uses, self.exhaust = None, False
            if needs_auth:
                caller = self.authenticate(rel, ns)
            try:
                return fn(ns, caller)
            finally:
                if caller is not None and self.exhaust:
                    if caller["revoked"] is None:
                        st.revoke_tree(caller, "num_uses exhausted")
                if caller is not None or method == "POST":
                    st.save()

    def routes(self):
        approle = f"auth/{self.args.approle_path}/login"
        T = "auth/token/"
        return {
            "sys/health": (("GET", "HEAD"), self.h_health, False),
            "sys/seal-status": (("GET",), self.h_seal_status, False),
            "sys/seal": (("POST",), self.h_seal, True),
            "sys/unseal": (("POST",), self.h_unseal, False),
            approle: (("POST",), self.h_approle_login, False),
            T + "create": (("POST",), self.h_create, True),
            T + "create-orphan": (("POST",), self.h_create_orphan, True),
            T + "lookup-self": (("GET", "POST"), self.h_lookup_self, True),
            T + "lookup": (("GET", "POST"), self.h_lookup, True),
            T + "lookup-accessor": (("POST",), self.h_lookup_accessor, True),
            T + "renew-self": (("POST",), self.h_renew_self, True),
            T + "renew": (("POST",), self.h_renew, True),
            T + "renew-accessor": (("POST",), self.h_renew_accessor, True),
            T + "revoke-self": (("POST",), self.h_revoke_self, True),
            T + "revoke": (("POST",), self.h_revoke, True),
            T + "revoke-accessor": (("POST",), self.h_revoke_accessor, True),
            T + "revoke-orphan": (("POST",), self.h_revoke_orphan, True),
        }

    def authenticate(self, rel, ns):
        st = self.store
        if not self.token_id:
            raise denied()
        rec = st.find(self.token_id, "")
        if rec is None or not ns_within(ns, rec["ns"]):
            raise denied()
        if not self.allowed(rec, rel):
            raise denied()
        self.orig_uses = rec["num_uses"]
        if rec["num_uses"] > 0:
            rec["num_uses"] -= 1
            if rec["num_uses"] == 0:
                self.exhaust = True
        return rec

    def allowed(self, rec, rel):
        if "root" in rec["policies"] or rel in SELF_PATHS:
            return True
        for pol in rec["policies"]:
            for pat in self.args.grants.get(pol, ()):
                if pat.endswith("*") and rel.startswith(pat[:-1]) or rel == pat:
                    return True
        return False

    @staticmethod
    def is_root(rec):
        return rec is not None and "root" in rec["policies"]

    # -- sys
    def health_body(self):
        st = self.store
        b = {"initialized": st.initialized, "sealed": st.sealed or not st.initialized,
             "standby": st.standby or st.sealed or not st.initialized,
             "performance_standby": False, "replication_performance_mode": "disabled",
             "replication_dr_mode": "disabled", "server_time_utc": int(time.time()),
             "version": VERSION, "enterprise": False, "echo_duration_ms": 0,
             "clock_skew_ms": 0}
        if st.initialized and not st.sealed:
            b["cluster_name"] = "vault-dev"
            b["cluster_id"] = st.cluster_id
        return b

    def qbool(self, name):
        if name not in self.query:
            return False
        v = self.query[name][0]
        return v == "" or v.lower() in ("1", "t", "true")

    def qcode(self, name, default):
        v = self.query.get(name, [""])[0]
        if v == "":
            return default
        try:
            return int(v)
        except ValueError:
            raise VaultError(400, f"bad code: {v}")

    def h_health(self, ns, caller):
        st = self.store
        code = self.qcode("activecode", 200)
        if not st.initialized:
            code = self.qcode("uninitcode", 501)
        elif st.sealed:
            code = self.qcode("sealedcode", 503)
        elif st.standby and not self.qbool("standbyok"):
            code = self.qcode("standbycode", 429)
        return code, self.health_body()

    def h_seal_status(self, ns, caller):
        st = self.store
        b = {"type": "shamir", "initialized": st.initialized,
             "sealed": st.sealed or not st.initialized, "t": 1, "n": 1, "progress": 0,
             "nonce": "", "version": VERSION, "build_date": "2024-01-01T00:00:00Z",
             "migration": False, "recovery_seal": False, "storage_type": "inmem"}
        if st.initialized and not st.sealed:
            b["cluster_name"] = "vault-dev"
            b["cluster_id"] = st.cluster_id
        if not st.initialized:
            b.update(t=0, n=0)
        return 200, b

    def h_seal(self, ns, caller):
        if not self.is_root(caller):
            raise denied()
        self.store.sealed = True
        return 204, None

    def h_unseal(self, ns, caller):
        st = self.store
        if not st.initialized:
            raise VaultError(400, "Vault is not initialized")
        b = self.body
        if weak_bool(b.get("reset", False), "reset"):
            return self.h_seal_status(ns, caller)
        key = b.get("key")
        if not key:
            raise VaultError(400, "'key' must be specified in request body as JSON, or 'reset' set to true")
        if not isinstance(key, str):
            raise VaultError(400, "'key' must be a valid hex or base64 string")
        try:
            given = bytes.fromhex(key)
        except ValueError:
            try:
                given = base64.b64decode(key, validate=True)
            except (binascii.Error, ValueError):
                raise VaultError(400, "'key' must be a valid hex or base64 string")
        if st.sealed:
            if not secrets.compare_digest(given, base64.b64decode(st.unseal_key)):
                raise VaultError(400, "cipher: message authentication failed")
            st.sealed = False
        return self.h_seal_status(ns, caller)

    # -- auth/approle
    def h_approle_login(self, ns, caller):
        a, b, st = self.args, self.body, self.store
        role_id = b.get("role_id")
        secret_id = b.get("secret_id")
        if not role_id:
            raise VaultError(400, "missing role_id")
        if not a.role_id:
            raise VaultError(400, "invalid role or secret ID")
        if not isinstance(role_id, str) or not secrets.compare_digest(role_id, a.role_id):
            raise VaultError(400, "invalid role or secret ID")
        if not secret_id:
            raise VaultError(400, "missing secret_id")
        if not isinstance(secret_id, str) or not secrets.compare_digest(secret_id, a.secret_id or ""):
            raise VaultError(400, "invalid role or secret ID")
        now = time.time()
        ttl, warnings = calculate_ttl(0, a.role_token_ttl, 0, a.role_token_max_ttl, 0, now, now)
        rec = st.new_token(
            ns=ns, parent="", policies=sanitize_policies(a.role_policies, True),
            meta={"role_name": a.role_name}, display_name=a.approle_path.replace("/", "-"),
            num_uses=a.role_token_num_uses, ttl=ttl, explicit_max_ttl=0, period=0,
            backend_max_ttl=a.role_token_max_ttl, renewable=True,
            path=f"auth/{a.approle_path}/login")
        return 200, envelope(auth=auth_block(rec), warnings=warnings)

    # -- auth/token
    def h_create_orphan(self, ns, caller):
        return self.create(ns, caller, orphan=True)

    def h_create(self, ns, caller):
        return self.create(ns, caller, orphan=False)

    def create(self, ns, parent, orphan):
        st, b = self.store, self.body
        is_sudo = self.is_root(parent)
        if (self.orig_uses if self.orig_uses is not None else parent["num_uses"]) > 0:
            raise VaultError(400, "restricted use token cannot generate child tokens")
        policies_in = str_list(b.get("policies"), "policies")
        meta = str_map(b.get("meta"), "meta")
        no_parent = weak_bool(b.get("no_parent", False), "no_parent")
        no_default = weak_bool(b.get("no_default_policy", False), "no_default_policy")
        renewable = weak_bool(b["renewable"], "renewable") if b.get("renewable") is not None else True
        num_uses = weak_int(b.get("num_uses"), "num_uses")
        display = b.get("display_name") or ""
        if not isinstance(display, str):
            raise VaultError(400, "Error decoding request: 'display_name' expected type 'string'")
        ttype = b.get("type") or ""
        if ttype not in ("", "service"):
            if ttype == "batch":
                raise VaultError(400, "vault_dev: batch tokens are not supported by this dev server")
            raise VaultError(400, "invalid 'token_type' value")
        if num_uses < 0:
            raise VaultError(400, "number of uses cannot be negative")
        if ns != parent["ns"]:
            if not is_sudo:
                raise VaultError(400, "root or sudo privileges required to directly generate a token in a child namespace")
            if "root" in [p.lower() for p in policies_in]:
                raise VaultError(400, "root tokens may not be created from a parent namespace")
        display_name = "token"
        if display:
            display_name = DISPLAY_SANITIZE.sub("-", "token-" + display)
            if display_name.endswith("-"):
                display_name = display_name[:-1]
        token_id = b.get("id") or None
        if token_id is not None:
            if not is_sudo:
                raise VaultError(400, "root or sudo privileges required to specify token id")
            if ns:
                raise VaultError(400, "token IDs can only be manually specified in the root namespace")
            if not isinstance(token_id, str) or "." in token_id:
                raise VaultError(400, "token IDs cannot contain the '.' character")
            if token_id in st.tokens:
                raise VaultError(400, "cannot create a token with a duplicate ID")

        add_default = False
        if ns != parent["ns"]:
            add_default = not no_default
            policies = policies_in
        elif not policies_in:
            policies = sanitize_policies(parent["policies"], False)
        elif not is_sudo:
            want = sanitize_policies(policies_in, False)
            have = sanitize_policies(parent["policies"], False)
            if not set(want) <= set(have):
                raise VaultError(400, "child policies must be subset of parent")
            add_default = not no_default and "default" in parent["policies"]
            policies = policies_in
        else:
            add_default = not no_default
            policies = policies_in
        final = sanitize_policies(list(policies), add_default)
        if no_default:
            final = [p for p in final if p != "default"]
        if "root" in final and "root" not in parent["policies"]:
            raise VaultError(400, "root tokens may not be created without parent token being root")

        if no_parent:
            if not is_sudo:
                raise VaultError(400, "root or sudo privileges required to create orphan token")
            orphan = True

        explicit_max = parse_duration(b.get("explicit_max_ttl"), "explicit_max_ttl")
        if explicit_max < 0:
            raise VaultError(400, "explicit_max_ttl must be positive")
        period = parse_duration(b.get("period"), "period")
        if period < 0:
            raise VaultError(400, "period must be positive")
        if period > 0 and not is_sudo:
            raise VaultError(400, "root or sudo privileges required to create periodic token")
        ttl_raw = b.get("ttl")
        if ttl_raw in (None, "") and b.get("lease") not in (None, ""):
            ttl_raw = b.get("lease")
        ttl = parse_duration(ttl_raw, "ttl")
        if ttl < 0:
            raise VaultError(400, "ttl must be positive")

        warnings = []
        now = time.time()
        if period > 0 or ttl > 0 or "root" not in final:
            ttl, warnings = calculate_ttl(0, ttl, period, 0, explicit_max, now, now)
        if ttl == 0 and explicit_max > 0:
            ttl = explicit_max
        if ttl == 0:
            if parent["ttl"] != 0:
                raise VaultError(400, "expiring root tokens cannot create non-expiring root tokens")
            renewable = False
        rec = st.new_token(
            ns=ns, parent="" if orphan else parent["id"], policies=final, meta=meta,
            display_name=display_name, num_uses=num_uses, ttl=ttl,
            explicit_max_ttl=explicit_max, period=period, backend_max_ttl=0,
            renewable=renewable, token_id=token_id,
            path="auth/token/create-orphan" if self._rel.endswith("create-orphan") else "auth/token/create")
        return 200, envelope(auth=auth_block(rec), warnings=warnings)

    def h_lookup_self(self, ns, caller):
        return 200, envelope(data=lookup_data(caller, time.time()))

    def h_lookup(self, ns, caller):
        tid = self.body.get("token") if isinstance(self.body.get("token"), str) else ""
        if self.command == "GET" and not tid:
            tid = self.query.get("token", [""])[0]
        if not tid:
            tid = caller["id"]
        rec = self.store.find(tid, ns)
        if rec is None:
            raise VaultError(403, "bad token")
        return 200, envelope(data=lookup_data(rec, time.time()))

    def accessor_arg(self):
        acc = self.body.get("accessor")
        if not acc or not isinstance(acc, str):
            raise VaultError(400, "missing accessor")
        return acc

    def h_lookup_accessor(self, ns, caller):
        rec = self.store.find_accessor(self.accessor_arg(), ns)
        if rec is None:
            raise VaultError(400, "invalid accessor")
        return 200, envelope(data=lookup_data(rec, time.time(), with_id=False))

    def renew(self, rec, client_token=True):
        inc = parse_duration(self.body.get("increment"), "increment")
        if inc < 0:
            raise VaultError(400, "increment must be positive")
        if rec["expire"] is None or not rec["renewable"]:
            raise VaultError(400, "lease is not renewable")
        now = time.time()
        ttl, warnings = calculate_ttl(inc, rec["ttl"], rec["period"], rec["backend_max_ttl"],
                                      rec["explicit_max_ttl"], rec["issue_time"], now)
        rec["expire"] = now + ttl
        rec["last_renewal"] = now
        return 200, envelope(auth=auth_block(rec, client_token), warnings=warnings)

    def h_renew_self(self, ns, caller):
        return self.renew(caller)

    def h_renew(self, ns, caller):
        tid = self.body.get("token")
        if not tid:
            raise VaultError(400, "missing token ID")
        rec = self.store.find(tid, ns)
        if rec is None:
            raise VaultError(400, "token not found")
        return self.renew(rec)

    def h_renew_accessor(self, ns, caller):
        rec = self.store.find_accessor(self.accessor_arg(), ns)
        if rec is None:
            raise VaultError(400, "invalid accessor")
        return self.renew(rec, client_token=False)

    def h_revoke_self(self, ns, caller):
        self.store.revoke_tree(caller, "revoke-self")
        return 204, None

    def h_revoke(self, ns, caller):
        tid = self.body.get("token")
        if not tid or not isinstance(tid, str):
            raise VaultError(400, "missing token ID")
        rec = self.store.find(tid, ns)
        if rec is not None:
            self.store.revoke_tree(rec, "revoke")
        return 204, None

    def h_revoke_accessor(self, ns, caller):
        rec = self.store.find_accessor(self.accessor_arg(), ns)
        if rec is None:
            return 200, envelope(warnings=["No token found with this accessor"])
        self.store.revoke_tree(rec, "revoke-accessor")
        return 204, None

    def h_revoke_orphan(self, ns, caller):
        if not self.is_root(caller):
            raise VaultError(400, "root or sudo privileges required to revoke and orphan")
        tid = self.body.get("token")
        if not tid or not isinstance(tid, str):
            raise VaultError(400, "missing token ID")
        rec = self.store.find(tid, ns)
        if rec is None:
            raise VaultError(400, "token to revoke not found")
        for child in self.store.children(rec):
            child["parent"] = ""
        rec["revoked"] = {"time": time.time(), "reason": "revoke-orphan"}
        return 204, None

    # -- sys/dev (NOT part of Vault)
    def dev(self, method, sub):
        st = self.store
        with st.lock:
            rec = st.tokens.get(self.token_id)
            if not (rec and st.live(rec, time.time()) and "root" in rec["policies"] and rec["ns"] == ""):
                raise denied()
            b = self.body
            if sub == "tokens" and method in ("GET", "LIST"):
                st.sweep(time.time())
                by_id = st.tokens
                out = []
                now = time.time()
                for t in st.tokens.values():
                    par = by_id.get(t["parent"])
                    out.append({
                        "accessor": t["accessor"], "namespace": t["ns"],
                        "policies": t["policies"],
                        "parent_accessor": par["accessor"] if par else "",
                        "orphan": t["parent"] == "", "display_name": t["display_name"],
                        "meta": t["meta"], "path": t["path"], "num_uses": t["num_uses"],
                        "creation_time": t["creation_time"],
                        "expire_time": go_time(t["expire"]) if t["expire"] else None,
                        "renewable": t["renewable"],
                        "revoked": t["revoked"] is not None,
                        "revoked_reason": t["revoked"]["reason"] if t["revoked"] else "",
                        "revoke_time": go_time(t["revoked"]["time"]) if t["revoked"] else None,
                        "valid": st.live(t, now),
                        "root": t["id"] == st.root_token,
                    })
                return 200, envelope(data={"tokens": out})
            if sub == "requests" and method in ("GET", "LIST"):
                return 200, envelope(data={"requests": list(st.requests)})
            if sub == "requests" and method == "DELETE":
                st.requests.clear()
                return 204, None
            if sub == "fail" and method == "POST":
                status = weak_int(b.get("status"), "status")
                count = weak_int(b.get("count", 1), "count")
                errs = b.get("errors")
                if errs is not None and not (isinstance(errs, list) and all(isinstance(e, str) for e in errs)):
                    raise VaultError(400, "'errors' must be a list of strings")
                st.fail = {"status": status, "count": count if status else 0, "errors": errs,
                           "path_prefix": str(b.get("path_prefix") or "")}
                return 204, None
            if sub == "fail" and method == "GET":
                return 200, envelope(data=dict(st.fail))
            if sub == "latency" and method == "POST":
                st.latency_ms = max(0, weak_int(b.get("ms"), "ms"))
                return 204, None
            if sub == "health" and method == "POST":
                if "initialized" in b:
                    st.initialized = weak_bool(b["initialized"], "initialized")
                if "standby" in b:
                    st.standby = weak_bool(b["standby"], "standby")
                if "sealed" in b:
                    st.sealed = weak_bool(b["sealed"], "sealed")
                return 204, None
            raise VaultError(404)


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr, handler, ssl_ctx=None):
        self.ssl_ctx = ssl_ctx
        super().__init__(addr, handler)

    def get_request(self):
        sock, addr = super().get_request()
        if self.ssl_ctx is not None:
            # The handshake happens on first read, in the request's own thread.
            sock = self.ssl_ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    def handle_error(self, request, client_address):
        if Handler.args and Handler.args.verbose:
            super().handle_error(request, client_address)


def parse_args(argv):
    p = argparse.ArgumentParser(description="Vault-API-compatible development server (tests only)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True, help="0 picks a free port")
    p.add_argument("--tls-cert")
    p.add_argument("--tls-key")
    p.add_argument("--root-token")
    p.add_argument("--print-root-token", action="store_true")
    p.add_argument("--role-id")
    p.add_argument("--secret-id")
    p.add_argument("--role-name", default="agentd")
    p.add_argument("--role-policies", default="")
    p.add_argument("--role-token-ttl", default="3600")
    p.add_argument("--role-token-max-ttl", default="0")
    p.add_argument("--role-token-num-uses", type=int, default=0)
    p.add_argument("--approle-path", default="approle")
    p.add_argument("--grant", action="append", default=[], metavar="POLICY=PATH[,PATH]",
                   help="let tokens holding POLICY use PATH (exact, or prefix ending in *)")
    p.add_argument("--state-file")
    p.add_argument("--start-sealed", action="store_true")
    p.add_argument("--uninitialized", action="store_true")
    p.add_argument("--standby", action="store_true")
    p.add_argument("--verbose", action="store_true")
    a = p.parse_args(argv)
    if bool(a.tls_cert) != bool(a.tls_key):
        p.error("--tls-cert and --tls-key go together")
    if bool(a.role_id) != bool(a.secret_id):
        p.error("--role-id and --secret-id go together")
    a.role_policies = [x.strip() for x in a.role_policies.split(",") if x.strip()]
    try:
        a.role_token_ttl = parse_duration(a.role_token_ttl, "role-token-ttl")
        a.role_token_max_ttl = parse_duration(a.role_token_max_ttl, "role-token-max-ttl")
    except VaultError as e:
        p.error(e.errors[0])
    a.approle_path = a.approle_path.strip("/")
    grants = {}
    for g in a.grant:
        pol, _, paths = g.partition("=")
        if not pol or not paths:
            p.error(f"bad --grant {g!r}")
        grants.setdefault(pol.strip().lower(), []).extend(x.strip().strip("/") for x in paths.split(",") if x.strip())
    a.grants = grants
    return a


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    Handler.args = args
    Handler.store = Store(args)
    ctx = None
    if args.tls_cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
    srv = Server((args.host, args.port), Handler, ctx)
    def on_term(*_):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)
    if args.print_root_token:
        print(f"ROOT {Handler.store.root_token}")
        print(f"UNSEAL {Handler.store.unseal_key}")
    print(f"READY {srv.server_address[1]}", flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        with Handler.store.lock:
            Handler.store.save()
        srv.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
