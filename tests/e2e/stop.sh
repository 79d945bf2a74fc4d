#!/bin/bash
# Power off the container booted by boot.sh and wait for nspawn to exit.
E=${E2E_DIR:?}
P=$(cat "$E/nspawn.pid" 2>/dev/null) || exit 0
kill -0 "$P" 2>/dev/null || { rm -f "$E/nspawn.pid" "$E/leader"; exit 0; }
timeout 20 nsenter -t "$(cat "$E/leader")" -a systemctl poweroff 2>/dev/null || kill -TERM "$P"
for _ in $(seq 100); do kill -0 "$P" 2>/dev/null || break; sleep 0.2; done
kill -0 "$P" 2>/dev/null && kill -KILL "$P"
rm -f "$E/nspawn.pid" "$E/leader"
