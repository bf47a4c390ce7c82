#!/usr/bin/env bash
# pyctr in two minutes (root): install, then, as an unprivileged user, run a container and
# reach a web server inside it through a forwarded port.
#   PYCTR_EDITABLE=1   install the checkout in place (developers; as scripts/test.sh does)
# The demo user pyctr-demo stays (in the pyctr group, with subordinate ids); everything
# else the demo starts or creates is removed when it ends, whichever way it ends.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
[ "$(id -u)" = 0 ] || { log "demo.sh must run as root"; exit 1; }

demo_user=pyctr-demo
host_port=8080
work=$(mktemp -d /tmp/pyctr-demo.XXXXXX)
chmod 0755 "$work"
rootfs=$work/rootfs
server_pid=""

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() { printf '$ %s\n' "$*"; "$@"; }

cleanup() {
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid" 2>/dev/null || true
        wait_for 10 bash -c "! kill -0 $server_pid 2>/dev/null" || kill -KILL "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# As the demo user, with a clean environment; setpriv execs, so it becomes the command.
as_demo=(setpriv --reuid="$demo_user" --regid="$demo_user" --init-groups --reset-env --)

step "install pyctr"
install_args=()
[ "${PYCTR_EDITABLE:-0}" = 1 ] && install_args+=(--editable)
bash "$here/install-host.sh" "${install_args[@]}"
command -v curl >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl >/dev/null; }

step "an unprivileged user: $demo_user"
id "$demo_user" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash "$demo_user"
ensure_subids "$demo_user"
# The example polkit rule (polkit/50-pyctr-group.rules) lets the pyctr group attach
# containers and publish unprivileged ports without a password.
usermod -aG "$PYCTR_GROUP" "$demo_user"
show id "$demo_user"
show grep "^$demo_user:" /etc/subuid /etc/subgid

step "a busybox root filesystem"
bash "$here/mkrootfs.sh" "$rootfs"
echo "$rootfs: $(ls "$rootfs/bin" | wc -l) busybox applets"

step "a container, as $demo_user"
inside='echo "hostname: $(hostname)"; id; echo "uid_map:"; cat /proc/self/uid_map'
echo "$ pyctr run --rm $rootfs sh -c '$inside'"
"${as_demo[@]}" pyctr run --rm "$rootfs" sh -c "$inside"

step "a web server in a container, published on 127.0.0.1:$host_port"
count_veths() { ip -o link show type veth | grep -c . || true; }
veths_before=$(count_veths)
echo "$ pyctr run --rm --init -p $host_port:80 $rootfs httpd -f -p 80 -h /var/www &"
# Not through a shell function: `f &` forks a subshell, and $! would be that subshell.
"${as_demo[@]}" pyctr run --rm --init -p "$host_port:80" "$rootfs" httpd -f -p 80 -h /var/www &
server_pid=$!
fetch() { curl --noproxy '*' -fsS --max-time 2 "http://127.0.0.1:$host_port/"; }
wait_for 20 bash -c "curl --noproxy '*' -fsS --max-time 2 http://127.0.0.1:$host_port/ >/dev/null 2>&1" \
    || { log "the page did not come up on 127.0.0.1:$host_port"; exit 1; }
echo "$ curl http://127.0.0.1:$host_port/"
fetch
echo "the container's end of the link, from the host:"
ip -br link show master pyctr0 2>/dev/null || ip -br link show type veth

step "stop the container"
kill -TERM "$server_pid"
rc=0; wait "$server_pid" || rc=$?
server_pid=""
echo "pyctr exited $rc"

step "nothing is left behind"
leftovers() {
    veths=$(( $(count_veths) - veths_before ))
    rules=$(iptables-legacy -t nat -S | grep -c -- "--dport $host_port" || true)
    listeners=$(ss -Hltn "sport = :$host_port" | grep -c . || true)
    [ "$veths$rules$listeners" = 000 ]
}
# pyctr does not wait for the helper's teardown; the helper finishes it within moments.
wait_for 5 leftovers || true
echo "veth interfaces added: $veths"
echo "NAT rules for port $host_port: $rules"
echo "sockets on port $host_port: $listeners"
[ "$veths$rules$listeners" = 000 ] || { log "something was left behind"; exit 1; }
step "done"
