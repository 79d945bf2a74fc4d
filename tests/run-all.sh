#!/bin/bash
# The whole test suite on a fresh Debian 12 machine: installs its packages,
# builds (normal, release and ASan+UBSan, all with -Werror), runs unit tests,
# integration tests as an unprivileged user, the fuzzers for a bounded time, the
# systemd checks and, as root, the end-to-end suite (tests/e2e: the .deb under a
# real systemd user manager in a container).
# Usage: sudo bash tests/run-all.sh   (README's test command; .ci/run calls it)
# Without root: the e2e suite and the tests that need a delegated cgroup are skipped
# with a message (unless this shell's cgroup is delegated to the user).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export LC_ALL=C.UTF-8
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
bash "$ROOT/tests/install-deps.sh"

FUZZ_SECONDS=${AGENTD_FUZZ_SECONDS:-60}
TEST_USER=${AGENTD_TEST_USER:-agentd-test}
results=()
overall=0

step() {
        local name=$1; shift
        echo "=== $name"
        local t0=$SECONDS
        if "$@"; then
                results+=("PASS $name ($((SECONDS - t0))s)")
        else
                results+=("FAIL $name ($((SECONDS - t0))s)")
                overall=1
        fi
}

build() {
        local dir=$1; shift
        if [ ! -f "$dir/build.ninja" ]; then
                meson setup "$dir" -Dwerror=true "$@" >"$dir.setup.log" 2>&1 || { cat "$dir.setup.log"; return 1; }
        fi
        ninja -C "$dir"
}

# The test user: integration tests run agentd unprivileged so root hides nothing.
if [ "$(id -u)" -eq 0 ]; then
        id "$TEST_USER" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash "$TEST_USER"
fi

step "build" build build
step "build (release)" build build-release --buildtype=release -Dtests=false
step "build (asan+ubsan)" build build-asan -Db_sanitize=address,undefined -Db_lundef=false
step "build (fuzz, clang)" env CC=clang bash -c "$(declare -f build); build build-fuzz -Dfuzz=true -Dc_args=-fsanitize=fuzzer-no-link -Db_sanitize=address,undefined -Db_lundef=false"

step "unit tests" meson test -C build --suite unit --print-errorlogs
step "unit tests (asan+ubsan)" env ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
        meson test -C build-asan --suite unit --print-errorlogs
step "protocol reference matches the method table" bash -c \
        "diff <(sed -n '/<!-- methods:begin -->/,/<!-- methods:end -->/p' proto/PROTOCOL.md | sed '1d;\$d') <(build/proto/gen-protocol)"
readme_links() {
        local rc=0 l
        for l in $(grep -o '`[^` ]*\.md`' README.md | tr -d '`'); do
                [ -f "$l" ] || { echo "README names $l, which is not in the repository"; rc=1; }
        done
        return $rc
}
step "README names only documents in the repository" readme_links

run_fuzz() {
        local target=$1
        local corpus=$ROOT/build-fuzz/corpus-$target
        rm -rf "$corpus"; mkdir -p "$corpus"
        cp "$ROOT/tests/fuzz/corpus/$target/"* "$corpus/" 2>/dev/null || true
        "$ROOT/build-fuzz/tests/fuzz/fuzz-$target" -max_total_time="$FUZZ_SECONDS" -max_len=65536 \
                -rss_limit_mb=2048 -artifact_prefix="$ROOT/build-fuzz/" -print_final_stats=1 "$corpus" 2>&1 | tail -15
        return "${PIPESTATUS[0]}"
}
for t in proto policy server; do
        if [ -x "build-fuzz/tests/fuzz/fuzz-$t" ]; then
                step "fuzz $t (${FUZZ_SECONDS}s)" run_fuzz "$t"
        fi
done

step "Vault dev server held to Vault's wire behaviour by python3-hvac" /usr/bin/python3 tests/vaultdev/test_vault_dev.py

systemd_checks() {
        local prefix=$ROOT/build-install
        rm -rf "$prefix"
        [ -f build-units/build.ninja ] || meson setup build-units --prefix="$prefix" -Dtests=false >/dev/null
        meson install -C build-units --quiet
        # A prefix other than /usr(/local) puts the units in PREFIX/share/systemd/user, which
        # systemctl --user searches for PREFIX=~/.local; Documentation= names installed files.
        local unitdir=$prefix/share/systemd/user doc
        grep -q "ExecStart=$prefix/bin/agentd" "$unitdir/agentd.service"
        doc=$(sed -n 's|^Documentation=.*file://\([^ ]*\).*|\1|p' "$unitdir/agentd.service")
        [ -f "$doc" ] && [ -f "$prefix/share/man/man8/agentd.8" ] && [ -x "$prefix/libexec/agentd-sandbox" ]
        systemd-analyze verify --man=no "$unitdir/agentd.service" "$unitdir/agentd.socket"
}
step "systemd units: install + systemd-analyze verify" systemd_checks

# The product's headline path: the .deb installed in a Debian 12 container booted with
# systemd, agentd socket-activated by `systemctl --user` (tests/e2e/run.sh; rootfs cached).
if [ "$(id -u)" -eq 0 ]; then
        step "end-to-end: .deb + systemctl --user in a booted Debian 12 (tests/e2e)" timeout 1800 bash tests/e2e/run.sh
else
        echo "=== end-to-end suite skipped: it needs root (systemd-nspawn); run: sudo bash tests/e2e/run.sh"
        results+=("SKIP end-to-end suite (needs root)")
fi

# Without root there is no test user and no cgroup to delegate: the files run as this
# user, and the tests that need a delegated cgroup (freezing sandboxes) print SKIP with the
# reason (harness.cgroup_delegated()) unless this shell's cgroup is writable.
if [ "$(id -u)" -ne 0 ] && ! /usr/bin/python3 -c "import sys; sys.path.insert(0, 'tests/integration'); import harness; sys.exit(0 if harness.cgroup_delegated() else 1)"; then
        echo "=== not root and no delegated cgroup: integration tests that freeze sandboxes will be skipped"
        results+=("SKIP integration tests that need a delegated cgroup (not root)")
fi

# Integration tests: each file runs as the unprivileged user, in a cgroup v2
# subtree delegated to that user the way systemd's Delegate=yes does it.
CGROUP_BASE=""
setup_cgroup() {
        local mnt
        mnt=$(awk '$9 == "cgroup2" {print $5; exit}' FS=' ' /proc/self/mountinfo 2>/dev/null || true)
        mnt=$(grep -m1 ' - cgroup2 ' /proc/self/mountinfo | awk '{print $5}')
        [ -n "$mnt" ] || return 0
        CGROUP_BASE="$mnt/agentd-test-$$"
        mkdir -p "$CGROUP_BASE" && chown -R "$TEST_USER" "$CGROUP_BASE" || CGROUP_BASE=""
}

run_integration() {
        CGROUP_BASE=$CGROUP_BASE AGENTD_TEST_USER=$TEST_USER bash "$ROOT/tests/run-integration.sh" "$1"
}
[ "$(id -u)" -eq 0 ] && setup_cgroup
for f in tests/integration/test_*.py; do
        f=$(basename "$f")
        case $f in
        test_sandbox_hands.py)
                # Runs as root and re-executes itself as its own unprivileged user.
                step "integration $f" env AGENTD_SANDBOX="$ROOT/build/helper/agentd-sandbox" \
                        /usr/bin/python3 "tests/integration/$f"
                ;;
        test_peer_uid.py)
                if [ "$(id -u)" -eq 0 ]; then
                        step "integration $f (root client vs. unprivileged daemon)" \
                                env AGENTD_TEST_USER="$TEST_USER" /usr/bin/python3 "tests/integration/$f"
                fi
                ;;
        *)
                step "integration $f" run_integration "$f"
                ;;
        esac
done
# Pooled sandboxes ([Pool] WarmSandboxes=2 in every harness daemon): the escape
# battery and the sandbox tests must hold for warm sandboxes as for cold ones.
for f in test_attack.py test_sandbox.py test_seams.py; do
        step "integration $f (warm pool)" env AGENTD_TEST_POOL=2 CGROUP_BASE="$CGROUP_BASE" \
                AGENTD_TEST_USER="$TEST_USER" bash tests/run-integration.sh "$f"
done
# The daemon again under ASan+UBSan (leaks fail its exit status, which the tests check).
for f in test_foundation.py test_tasks.py test_sandbox.py test_workspace.py test_audit.py test_egress.py test_broker.py test_revoke.py; do
        step "integration $f (asan+ubsan)" env AGENTD_BUILD="$ROOT/build-asan" CGROUP_BASE="$CGROUP_BASE" \
                AGENTD_TEST_USER="$TEST_USER" bash tests/run-integration.sh "$f"
done

if [ -n "$CGROUP_BASE" ]; then
        find "$CGROUP_BASE" -depth -type d -exec rmdir {} \; 2>/dev/null || true
fi

echo
echo "=== summary"
passed=0; failed=0
for r in "${results[@]}"; do
        echo "$r"
        case $r in PASS*) passed=$((passed + 1)) ;; SKIP*) ;; *) failed=$((failed + 1)) ;; esac
done
echo "$passed passed, $failed failed"
exit $overall
