#!/usr/bin/env bash
# Install pyctr system-wide (root, idempotent; run it again after an upgrade).
#   --no-group-rule   do not install the polkit rule that lets the "pyctr" group attach
#                     containers without a password
#   --editable        install the checkout in place (for developers: edits take effect
#                     without reinstalling; the checkout must be root-owned and readable)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(dirname "$here")
. "$here/lib.sh"

group_rule=1
editable=""
for arg in "$@"; do
    case $arg in
        --no-group-rule) group_rule=0 ;;
        --editable) editable=-e ;;
        *) log "unknown option: $arg"; exit 2 ;;
    esac
done
[ "$(id -u)" = 0 ] || { log "install-host.sh must run as root"; exit 1; }

missing=""
for p in $PYCTR_SYSTEM_PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"
done
if [ -n "$missing" ]; then
    log "installing system packages:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# The venv comes from Debian's python so that every user can execute it; the tree is
# root-owned, which is also what keeps a container from rewriting pyctr (see docs/security.md).
if [ ! -x "$PYCTR_PREFIX/bin/python" ]; then
    log "creating $PYCTR_PREFIX"
    /usr/bin/python3 -m venv "$PYCTR_PREFIX"
fi
pip_log=$(mktemp)
pip() { "$PYCTR_PREFIX/bin/pip" install -q --disable-pip-version-check "$@" >>"$pip_log" 2>&1 \
        || { cat "$pip_log" >&2; rm -f "$pip_log"; log "pip install $* failed"; exit 1; }; }
pip "$src"
# Same version number after an upgrade of the checkout: force the package itself in again.
pip --force-reinstall --no-deps $editable "$src"
rm -f "$pip_log"
if [ -n "$editable" ]; then
    # An editable install does not run the cffi build step: generate the modules in place.
    (cd "$src/frontend" && "$PYCTR_PREFIX/bin/python" pyctr/_libc_build.py)
    (cd "$src/helper" && "$PYCTR_PREFIX/bin/python" pyctr_helper/_libc_build.py)
fi
chmod -R go-w "$PYCTR_PREFIX"
for link in $PYCTR_BIN_LINKS; do
    ln -sfn "$PYCTR_PREFIX/bin/$(basename "$link")" "$link"
done

install -D -m 0644 "$src/dbus/org.pyctr.Helper1.conf" "$PYCTR_BUS_POLICY"
install -D -m 0644 "$src/dbus/org.pyctr.Helper1.service" "$PYCTR_BUS_ACTIVATION"
install -D -m 0644 "$src/dbus/pyctr-helper.service" "$PYCTR_SYSTEMD_UNIT"
install -D -m 0644 "$src/polkit/org.pyctr.policy" "$PYCTR_POLKIT_ACTIONS"
if [ $group_rule = 1 ]; then
    install -D -m 0644 "$src/polkit/50-pyctr-group.rules" "$PYCTR_POLKIT_GROUP_RULE"
else
    rm -f "$PYCTR_POLKIT_GROUP_RULE"
fi
getent group "$PYCTR_GROUP" >/dev/null || groupadd --system "$PYCTR_GROUP"
install -d -m 0755 "$PYCTR_CONFIG_DIR"
install -d -m 0700 "$PYCTR_STATE_DIR" "$PYCTR_LOG_DIR"
if [ ! -e "$PYCTR_CONFIG_DIR/helper.toml" ]; then
    install -m 0644 "$src/helper/helper.toml.example" "$PYCTR_CONFIG_DIR/helper.toml.example"
fi

start_services
if have_systemd; then systemctl daemon-reload; fi
log "installed: pyctr $("$PYCTR_PREFIX/bin/pyctr" --version 2>/dev/null || echo '?')"
