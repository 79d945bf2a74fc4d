#!/bin/bash
# Root-only setup for test_laptop.py (run by tests/run-integration.sh before the
# file runs as the test user): installs this machine's rustup toolchain and one
# pyenv Python into the test user's home "the usual way" (~/.cargo, ~/.rustup,
# ~/.pyenv), copied with cp -a and chowned. Copies once: a stamp names what was
# copied, and a later run with the same sources does nothing.
# Usage: test_laptop-setup.sh USER HOME
set -euo pipefail
user=$1 home=$2
here=$(cd "$(dirname "$0")" && pwd)
[ "$(id -u)" -eq 0 ] || { echo "test_laptop-setup: not root, nothing installed" >&2; exit 0; }
group=$(id -gn "$user")

copy() { # src dst: copy a tree once (stamp = source's mtime and size), then chown it
        local src=$1 dst=$2 stamp stampfile
        stampfile="$home/.agentd-test-stamps/$(echo "$dst" | tr / _)"
        mkdir -p "$home/.agentd-test-stamps"
        [ -e "$src" ] || return 0
        stamp="$src $(du -s --apparent-size "$src" | cut -f1) $(stat -c %Y "$src")"
        if [ -e "$dst" ] && [ "$(cat "$stampfile" 2>/dev/null)" = "$stamp" ]; then
                return 0
        fi
        rm -rf "$dst" "$stampfile"
        mkdir -p "$(dirname "$dst")"
        cp -a "$src" "$dst"
        chown -R "$user:$group" "$dst"
        echo "$stamp" > "$stampfile"
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

# A supplementary group for the user (a file of that group in a workspace is
# what the sandbox cannot map).
getent group agentd-laptop >/dev/null || groupadd agentd-laptop
id -nG "$user" | grep -qw agentd-laptop || usermod -aG agentd-laptop "$user"

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

# pyenv: the tool and one Python, made the global version: the one of Debian's
# python3's minor version (the pytest wheels come from Debian), else the newest 3.x.
if [ -d /root/.pyenv/versions ]; then
        minor=$(/usr/bin/python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
        v=$(ls /root/.pyenv/versions | grep -E "^${minor//./\\.}\.[0-9]+$" | sort -V | tail -n1)
        [ -n "$v" ] || v=$(ls /root/.pyenv/versions | grep -E '^3\.[0-9]+\.[0-9]+$' | sort -V | tail -n1)
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

# Real projects and their package sources, fetched once into a world-readable
# fixture directory (Debian apt and the npm registry only; no other network):
#   c/       zlib's upstream source (Debian's orig tarball, apt-get source)
#   rust/    semver's crate source and a directory registry of its dependencies
#            (Debian's librust-*-dev packages ship crate sources)
#   node/    minimist's npm tarball (it ships its tests) and the tarballs of tape
#            and everything tape needs, for a local npm registry
#   python/  toolz with its tests (Debian's python3-toolz) and pytest with its
#            dependencies repacked as wheels from Debian's packages, for a local index
fixtures=${AGENTD_LAPTOP_FIXTURES:-/var/tmp/agentd-laptop-fixtures}
if [ ! -e "$fixtures/READY" ]; then
        rm -rf "$fixtures.new"
        mkdir -p "$fixtures.new"/{apt/lists/partial,c,rust/registry,node/registry,python/wheels,debs}
        cd "$fixtures.new"
        # The machine's own Debian mirror, as apt is configured here.
        mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -v security | head -1)
        [ -n "$mirror" ] || mirror=$(awk '$1 == "deb" && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null)
        cat > apt/src.sources <<EOT
Types: deb-src
URIs: $mirror
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOT
        apto=(-o Dir::Etc::SourceList="$PWD/apt/src.sources" -o Dir::Etc::SourceParts=/nonexistent
              -o Dir::State::Lists="$PWD/apt/lists" -o APT::Sandbox::User=root)
        apt-get "${apto[@]}" -qq update
        (cd c && apt-get "${apto[@]}" -qq source --download-only zlib >/dev/null &&
                tar -xjf zlib_*.orig.tar.bz2 && rm -f zlib_* && mv zlib-* zlib)
        (cd debs && apt-get -o APT::Sandbox::User=root -qq download librust-semver-dev librust-serde-dev \
                python3-toolz python3-pytest python3-pluggy python3-iniconfig python3-packaging python3-attr \
                python3-py python3-pyparsing)
        for f in debs/*.deb; do dpkg-deb -x "$f" debs/root; done
        cp -a debs/root/usr/share/cargo/registry/semver-* rust/semver
        rm -f rust/semver/.cargo-checksum.json
        cp -a debs/root/usr/share/cargo/registry/serde-* rust/registry/
        cp -a debs/root/usr/lib/python3/dist-packages/toolz debs/root/usr/lib/python3/dist-packages/tlz python/
        /usr/bin/python3 "$here/laptop_fixtures.py" wheels debs/root/usr/lib/python3/dist-packages python/wheels
        (cd node && npm pack -q minimist@1.2.8 >/dev/null && mkdir -p tree && cd tree &&
                npm install -q --no-audit --no-fund tape@5.7.5 >/dev/null &&
                /usr/bin/python3 -c 'import json; print("\n".join(k.split("node_modules/")[-1] + "@" + v["version"] for k, v in json.load(open("package-lock.json"))["packages"].items() if k))' > ../specs &&
                cd ../registry && xargs npm pack -q < ../specs >/dev/null && cd .. && rm -rf tree)
        rm -rf debs apt
        touch READY
        chmod -R a+rX .
        cd /
        rm -rf "$fixtures"
        mv "$fixtures.new" "$fixtures"
fi

# A test host for the Go test: Go never sends a loopback host (127/8, ::1,
# localhost) through a proxy, so its GOPROXY listens on 198.18.0.1, an address
# from the range set aside for test hosts, added to the loopback device: no
# packet to it ever leaves this machine.
ip -4 addr show dev lo | grep -q ' 198\.18\.0\.1/' ||
        ip addr add 198.18.0.1/32 dev lo || echo "test_laptop-setup: cannot add the Go test host address (the Go test will skip)"
