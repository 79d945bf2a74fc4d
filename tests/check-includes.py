#!/usr/bin/python3
"""The include rules of ARCHITECTURE.md ("Include rules"), checked on daemon/.

    check-includes.py SOURCE_ROOT

Parts are ordered; a part includes core/, lib/, its own files (by bare name) and
the public headers of the parts below it, never a part above it nor another
part's internals. lib/ includes nothing of daemon/; core/ only itself (main.c,
the composition root, with compose.c: any part's public header); nothing includes rpc/ but
rpc/. The order and the public headers come from ARCHITECTURE.md. Prints
every violation and exits 1 when there is one (or the rules cannot be read).
"""
import os
import re
import sys

# The parts' order and public headers are read from ARCHITECTURE.md's include
# rules ("The parts are ordered, lowest first: `audit/` < ..." and "Public:
# `x/y.h`, ... Everything else"), so the document and this check cannot differ.
def read_rules(root):
    with open(os.path.join(root, "ARCHITECTURE.md"), encoding="utf-8") as f:
        text = " ".join(f.read().split())
    m = re.search(r"The parts are ordered, lowest first: ((?:`\w+/` < )+`\w+/`)", text)
    p = re.search(r"Public: (.*?) Everything else", text)
    if not m or not p:
        return None, None
    order = re.findall(r"`(\w+)/`", m.group(1))
    public = {part: set() for part in order}
    for part, header in re.findall(r"`(\w+)/([\w.-]+\.h)`", p.group(1)):
        if part not in public:
            return order, None
        public[part].add(header)
    return order, public


# Directories outside daemon/ whose headers come by bare name.
OUTSIDE = ["common", "proto", "policy", "helper"]
# The composition root: the files of core/ that may include any part.
ROOT = {"main.c", "compose.c", "compose.h"}
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def check_one(root, d, name, daemon_dirs, PART_ORDER, PUBLIC):
    errors = []
    path = os.path.join(root, "daemon", d, name)
    with open(path, encoding="utf-8") as f:
        text = f.read()
    for inc in INCLUDE.findall(text):
        where = f"daemon/{d}/{name}: #include \"{inc}\""
        if "/" not in inc:
            if os.path.exists(os.path.join(root, "daemon", d, inc)):
                continue
            if any(os.path.exists(os.path.join(root, o, inc)) for o in OUTSIDE):
                continue
            other = [x for x in daemon_dirs if os.path.exists(os.path.join(root, "daemon", x, inc))]
            if other:
                errors.append(f"{where}: daemon/{other[0]}/{inc} by bare name (write \"{other[0]}/{inc}\")")
            continue
        top, _, rest = inc.partition("/")
        if top not in daemon_dirs:
            continue  # helper/spec.h and the like
        if d == "lib":
            errors.append(f"{where}: lib/ includes nothing of daemon/")
        elif top == "rpc":
            errors.append(f"{where}: nothing but rpc/ includes rpc/")
        elif top == d:
            errors.append(f"{where}: the same directory's header by bare name")
        elif top in ("core", "lib"):
            if d == "core" and top == "lib" and name not in ROOT:
                errors.append(f"{where}: core/ includes only core/")
        elif top in PART_ORDER:
            if rest not in PUBLIC[top]:
                errors.append(f"{where}: {top}/{rest} is {top}/'s internals")
            elif d == "core" and name not in ROOT:
                errors.append(f"{where}: only core/compose.c and main.c (the composition root) include a part")
            elif d in PART_ORDER and PART_ORDER.index(top) > PART_ORDER.index(d):
                errors.append(f"{where}: {top}/ is above {d}/ (the order is {' < '.join(PART_ORDER)})")
        else:
            errors.append(f"{where}: daemon/{top}/ is not in the rules (ARCHITECTURE.md)")
    return errors


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..")
    daemon = os.path.join(root, "daemon")
    PART_ORDER, PUBLIC = read_rules(root)
    if not PART_ORDER or not PUBLIC:
        print("ARCHITECTURE.md: the parts' order or the public headers cannot be read (see read_rules())")
        return 1
    daemon_dirs = sorted(x for x in os.listdir(daemon) if os.path.isdir(os.path.join(daemon, x)))
    errors, files = [], 0
    for d in daemon_dirs:
        if d not in PART_ORDER and d not in ("core", "lib", "rpc"):
            errors.append(f"daemon/{d}/: not a part, core/, lib/ or rpc/ (add it to ARCHITECTURE.md's include rules)")
            continue
        for name in sorted(os.listdir(os.path.join(daemon, d))):
            if name.endswith((".c", ".h")):
                files += 1
                errors += check_one(root, d, name, daemon_dirs, PART_ORDER, PUBLIC)
    for e in errors:
        print(e)
    if files == 0:
        print(f"no daemon sources under {daemon}")
        return 1
    print(f"{files} files, {len(errors)} include rule violation(s)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
