#!/usr/bin/python3
"""Man pages agentd.conf(5) and agentd.task(5) (docs/man/): each documents
exactly the keys of the tables that drive the parsers (daemon/core/config.c's
KEY(...) lines, policy/policy-parse.c's keys[]), each under its section;
man renders them without warnings; meson installs them and the completions."""
import json
import os
import re
import subprocess

from harness import BUILD, run_tests

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MAN = os.path.join(ROOT, "docs", "man")


def read(*p):
    with open(os.path.join(ROOT, *p)) as f:
        return f.read()


def documented(page):
    """{(section, key)} of a man page: \\fBKey=\\fR items under .SH [Section]."""
    out, section = set(), None
    for line in read("docs", "man", page).splitlines():
        m = re.match(r"^\.SH \[(\w+)\]", line)
        if m:
            section = m.group(1)
            continue
        if line.startswith(".SH"):
            section = None
        m = re.match(r"^\\fB(\w+)=", line)
        if m and section:
            out.add((section, m.group(1)))
    return out


def test_task_page_matches_the_parser_table():
    table = set(re.findall(r'^\s*\{ "(\w+)", "(\w+)", POLICY_KEY_\w+, (?:true|false) \},', read("policy", "policy-parse.c"), re.M))
    assert len(table) >= 19, table
    doc = documented("agentd.task.5")
    assert table - doc == set(), f"task keys missing from agentd.task.5: {sorted(table - doc)}"
    assert doc - table == set(), f"agentd.task.5 documents keys the parser does not have: {sorted(doc - table)}"


def test_conf_page_matches_the_config_parser():
    table = set(re.findall(r'KEY\("(\w+)", "(\w+)"\)', read("daemon", "core", "config.c")))
    assert len(table) >= 20, table
    doc = documented("agentd.conf.5")
    assert table - doc == set(), f"config keys missing from agentd.conf.5: {sorted(table - doc)}"
    assert doc - table == set(), f"agentd.conf.5 documents keys the parser does not have: {sorted(doc - table)}"


def test_pages_render_without_warnings():
    for page in ("agentd.conf.5", "agentd.task.5"):
        p = subprocess.run(["man", "--warnings", "-l", os.path.join(MAN, page)], capture_output=True, text=True,
                           env={"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8", "MANWIDTH": "80", "MAN_KEEP_STDERR": "1"})
        assert p.returncode == 0 and p.stderr == "", (page, p.stderr)
        assert "SEE ALSO" in p.stdout and "agentctl(1)" in p.stdout, p.stdout[-500:]


def test_meson_installs_pages_and_completions():
    with open(os.path.join(BUILD, "meson-info", "intro-installed.json")) as f:
        installed = json.load(f)
    dests = {os.path.relpath(dst, "/") for dst in installed.values()}
    want = ["man/man5/agentd.conf.5", "man/man5/agentd.task.5", "bash-completion/completions/agentctl",
            "zsh/site-functions/_agentctl", "fish/vendor_completions.d/agentctl.fish"]
    for w in want:
        assert any(d.endswith("share/" + w) for d in dests), (w, sorted(d for d in dests if "share" in d))


if __name__ == "__main__":
    run_tests(globals())
