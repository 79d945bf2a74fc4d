#!/bin/bash
# Debian 12 packages for building, running and testing agentd.
set -euo pipefail
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
PKGS=(meson ninja-build pkg-config gcc clang libclang-rt-14-dev
      libsystemd-dev libuv1-dev libmsgpack-dev libseccomp-dev libtss2-dev libcurl4-openssl-dev libssl-dev
      libinih-dev libjson-c-dev check
      python3-msgpack python3-hvac swtpm swtpm-tools tpm2-tools
      systemd bubblewrap hyperfine util-linux uidmap iproute2 curl procps
      chromium fonts-dejavu-core nodejs npm neovim zsh fish bash-completion man-db
      golang-go   # test_laptop.py: go fetching modules through the egress proxy
      debhelper dpkg-dev debootstrap systemd-container)   # the .deb and the e2e suite (tests/e2e)
missing=()
for p in "${PKGS[@]}"; do
        # A Node.js installed another way (one that bundles npm, which conflicts
        # with Debian's npm package) serves as well as Debian's nodejs + npm.
        case $p in nodejs) command -v node >/dev/null && continue ;; npm) command -v npm >/dev/null && continue ;; esac
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# The OTLP test receiver's packages (the official OpenTelemetry schema, generated
# for protobufjs), pinned by tests/otlp/package-lock.json.
if [ ! -d "$(dirname "$0")/otlp/node_modules/@opentelemetry/otlp-transformer" ]; then
        npm ci --prefix "$(dirname "$0")/otlp" --no-audit --no-fund --loglevel=error ||
                npm ci --prefix "$(dirname "$0")/otlp" --no-audit --no-fund --loglevel=error
fi
# The Node client's packages (ide/node: @msgpack/msgpack; typescript for its type test), pinned by its package-lock.json.
if [ ! -d "$(dirname "$0")/../ide/node/node_modules/@msgpack/msgpack" ] || [ ! -d "$(dirname "$0")/../ide/node/node_modules/typescript" ]; then
        npm ci --prefix "$(dirname "$0")/../ide/node" --no-audit --no-fund --loglevel=error ||
                npm ci --prefix "$(dirname "$0")/../ide/node" --no-audit --no-fund --loglevel=error
fi
