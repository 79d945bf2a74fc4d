#!/bin/bash
# Root-only setup for test_laptop.py (run by tests/run-integration.sh before the
# file runs as the test user): installs this machine's rustup toolchain and one
# pyenv Python into the test user's home "the usual way" (~/.cargo, ~/.rustup,
# ~/.pyenv), copied with cp -a and chowned. Copies once: a stamp names what was
# copied, and a later run with the same sources does nothing.
# Usage: test_laptop-setup.sh USER HOME
set -euo pipefail
user=$1 home=$2
[ "$(id -u)" -eq 0 ] || { echo "test_laptop-setup: not root, nothing installed" >&2; exit 0; }
group=$(id -gn "$user")

copy() { # src dst: copy a tree once (stamp = source's mtime and size), then chown it
        local src=$1 dst=$2 stamp
        [ -e "$src" ] || return 0
        stamp="$src $(du -s --apparent-size "$src" | cut -f1) $(stat -c %Y "$src")"
        if [ -e "$dst" ] && [ "$(cat "$dst.agentd-test-stamp" 2>/dev/null)" = "$stamp" ]; then
                return 0
        fi
        rm -rf "$dst" "$dst.agentd-test-stamp"
        mkdir -p "$(dirname "$dst")"
        cp -a "$src" "$dst"
        chown -R "$user:$group" "$dst"
        echo "$stamp" > "$dst.agentd-test-stamp"
}

# A pyenv Python built under /root names /root in its RUNPATH and its scripts'
# shebangs: point them at the copy (what pyenv would have built for this user).
relocate_python() {
        local dir=$1 f
        command -v patchelf >/dev/null || { echo "test_laptop-setup: patchelf missing (apt-get install patchelf)" >&2; return 0; }
        for f in "$dir"/bin/*; do
                [ -f "$f" ] && [ ! -L "$f" ] || continue
                if [ "$(head -c4 "$f")" = $'\x7fELF' ]; then
                        case $(patchelf --print-rpath "$f" 2>/dev/null) in
                        /root/*) patchelf --set-rpath '$ORIGIN/../lib' "$f" ;;
                        esac
                elif head -n1 "$f" | grep -q '^#!/root/\.pyenv/'; then
                        sed -i "1s|^#!/root/\.pyenv/|#!$home/.pyenv/|" "$f"
                fi
        done
}

# rustup: the default toolchain only (rustup's proxies in ~/.cargo/bin).
if [ -d /root/.rustup ] && [ -d /root/.cargo/bin ]; then
        tc=$(sed -n 's/^default_toolchain = "\(.*\)"/\1/p' /root/.rustup/settings.toml)
        if [ -n "$tc" ] && [ -d "/root/.rustup/toolchains/$tc" ]; then
                install -d -o "$user" -g "$group" "$home/.rustup" "$home/.rustup/toolchains" "$home/.cargo" \
                        "$home/.rustup/update-hashes" "$home/.rustup/downloads" "$home/.rustup/tmp"
                [ ! -e "/root/.rustup/update-hashes/$tc" ] ||
                        install -o "$user" -g "$group" -m 644 "/root/.rustup/update-hashes/$tc" "$home/.rustup/update-hashes/$tc"
                install -o "$user" -g "$group" -m 644 /root/.rustup/settings.toml "$home/.rustup/settings.toml"
                copy "/root/.rustup/toolchains/$tc" "$home/.rustup/toolchains/$tc"
                copy /root/.cargo/bin "$home/.cargo/bin"
                [ -e /root/.cargo/env ] && install -o "$user" -g "$group" -m 644 /root/.cargo/env "$home/.cargo/env"
        fi
fi

# pyenv: the tool and one Python (the newest 3.x present), made the global version.
if [ -d /root/.pyenv/versions ]; then
        v=$(ls /root/.pyenv/versions | grep -E '^3\.[0-9]+\.[0-9]+$' | sort -V | tail -n1)
        if [ -n "$v" ]; then
                install -d -o "$user" -g "$group" "$home/.pyenv" "$home/.pyenv/versions"
                for d in bin libexec plugins pyenv.d completions; do
                        copy "/root/.pyenv/$d" "$home/.pyenv/$d"
                done
                copy "/root/.pyenv/versions/$v" "$home/.pyenv/versions/$v"
                relocate_python "$home/.pyenv/versions/$v"
                echo "$v" > "$home/.pyenv/version"
                chown "$user:$group" "$home/.pyenv/version"
                # pyenv's shims, made the usual way (pyenv rehash), as the user.
                runuser -u "$user" -- env HOME="$home" PYENV_ROOT="$home/.pyenv" "$home/.pyenv/bin/pyenv" rehash
        fi
fi
