# Shared bits of the root scripts. Sourced, never run.
# Where things go: one list, read by install-host.sh and uninstall-host.sh alike.
PYCTR_PREFIX=/opt/pyctr
PYCTR_BIN_LINKS="/usr/local/bin/pyctr /usr/local/bin/pyctr-helper"
PYCTR_BUS_POLICY=/etc/dbus-1/system.d/org.pyctr.Helper1.conf
PYCTR_BUS_ACTIVATION=/usr/share/dbus-1/system-services/org.pyctr.Helper1.service
PYCTR_SYSTEMD_UNIT=/etc/systemd/system/pyctr-helper.service
PYCTR_POLKIT_ACTIONS=/usr/share/polkit-1/actions/org.pyctr.policy
PYCTR_POLKIT_GROUP_RULE=/etc/polkit-1/rules.d/50-pyctr-group.rules
PYCTR_CONFIG_DIR=/etc/pyctr
PYCTR_STATE_DIR=/var/lib/pyctr
PYCTR_LOG_DIR=/var/log/pyctr
PYCTR_GROUP=pyctr
PYCTR_SYSTEM_PACKAGES="uidmap iptables nftables iproute2 dbus dbus-bin polkitd pkexec python3 python3-venv python3-dev gcc busybox-static conntrack procps"

log() { printf 'pyctr: %s\n' "$*" >&2; }

have_systemd() { [ -d /run/systemd/system ]; }

system_bus_alive() {
    dbus-send --system --print-reply --dest=org.freedesktop.DBus / org.freedesktop.DBus.GetId >/dev/null 2>&1
}

polkit_alive() {
    dbus-send --system --print-reply --dest=org.freedesktop.DBus / org.freedesktop.DBus.NameHasOwner \
        string:org.freedesktop.PolicyKit1 2>/dev/null | grep -q 'boolean true'
}

wait_for() {  # wait_for SECONDS CMD...: poll a condition instead of sleeping blindly
    local deadline=$((SECONDS + $1)); shift
    until "$@"; do
        [ $SECONDS -lt $deadline ] || return 1
        sleep 0.1
    done
}

# On machines without an init that runs them (containers, minimal VMs), start the system
# bus and polkitd ourselves. With systemd, it already does and we only ask for a reload.
start_services() {
    if have_systemd; then
        systemctl reload dbus 2>/dev/null || true
        systemctl restart polkit 2>/dev/null || true
        return
    fi
    if system_bus_alive; then
        dbus-send --system --type=method_call --dest=org.freedesktop.DBus / org.freedesktop.DBus.ReloadConfig
    else
        mkdir -p /run/dbus
        rm -f /run/dbus/pid /run/dbus/system_bus_socket
        dbus-daemon --system --fork
        wait_for 10 system_bus_alive || { log "the system bus did not start"; return 1; }
    fi
    if ! polkit_alive; then
        # polkitd drops to its own user itself; nohup keeps it alive past this shell.
        nohup /usr/lib/polkit-1/polkitd --no-debug >/dev/null 2>&1 &
        wait_for 10 polkit_alive || { log "polkitd did not start"; return 1; }
    fi
}

# Give USER a range of 65536 subordinate uids and gids after the highest range in use, unless
# it has one (useradd adds them itself where login.defs says so).
ensure_subids() {
    local user=$1 f start
    for f in /etc/subuid /etc/subgid; do
        grep -q "^$user:" "$f" 2>/dev/null && continue
        start=$(awk -F: '{ e = $2 + $3; if (e > m) m = e } END { print (m > 100000 ? m : 100000) }' "$f" 2>/dev/null || echo 100000)
        echo "$user:$start:65536" >> "$f"
    done
}
