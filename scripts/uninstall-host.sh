#!/usr/bin/env bash
# Remove everything install-host.sh put on this machine, and any state the helper kept.
# System packages stay: other software may use them.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
[ "$(id -u)" = 0 ] || { log "uninstall-host.sh must run as root"; exit 1; }

# Stop the helper first: on SIGTERM it removes its veths, rules and reservations.
helper_pattern='bin/pyctr-helper( |$)'  # started by hand or by D-Bus (/usr/local/bin)
if pkill -TERM -f "$helper_pattern" 2>/dev/null; then
    wait_for 10 bash -c "! pgrep -f '$helper_pattern' >/dev/null" || pkill -KILL -f "$helper_pattern" || true
fi
if have_systemd; then systemctl disable --now pyctr-helper.service 2>/dev/null || true; fi
rm -f $PYCTR_BIN_LINKS "$PYCTR_BUS_POLICY" "$PYCTR_BUS_ACTIVATION" "$PYCTR_SYSTEMD_UNIT" \
      "$PYCTR_POLKIT_ACTIONS" "$PYCTR_POLKIT_GROUP_RULE"
rm -rf "$PYCTR_PREFIX" "$PYCTR_CONFIG_DIR" "$PYCTR_STATE_DIR" "$PYCTR_LOG_DIR"
# The helper keeps an empty pyctr/ parent at each cgroup hierarchy's root between containers.
for d in /sys/fs/cgroup/pyctr /sys/fs/cgroup/*/pyctr; do
    [ -d "$d" ] && rmdir "$d" 2>/dev/null || true
done
getent group "$PYCTR_GROUP" >/dev/null && groupdel "$PYCTR_GROUP" || true
if system_bus_alive; then
    dbus-send --system --type=method_call --dest=org.freedesktop.DBus / org.freedesktop.DBus.ReloadConfig || true
fi
if have_systemd; then systemctl daemon-reload; fi
log "uninstalled"
