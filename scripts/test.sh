#!/usr/bin/env bash
# Everything the test suite needs on a fresh Debian 12 machine (root), then the suite.
# Extra arguments go to pytest, e.g. `scripts/test.sh tests/run -k exit_code`.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(dirname "$here")
. "$here/lib.sh"
[ "$(id -u)" = 0 ] || { log "test.sh must run as root"; exit 1; }

install_args=()
[ "${PYCTR_EDITABLE:-0}" = 1 ] && install_args+=(--editable)
bash "$here/install-host.sh" "${install_args[@]}"
"$PYCTR_PREFIX/bin/pip" install -q --disable-pip-version-check "pytest>=7.4,<10" >/dev/null
# Tools only the tests use: a pty driver for the password-prompt test.
test_packages="tmux expect"
for p in $test_packages; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || {
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $test_packages >/dev/null
        break
    }
done

# Test users: unprivileged, not in the pyctr group (tests grant polkit rights themselves),
# with subordinate id ranges; pyctr-test-a has a known password for the prompt test.
for u in pyctr-test-a pyctr-test-b; do
    id "$u" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash "$u"
    ensure_subids "$u"
done
echo 'pyctr-test-a:pyctr-test-a-pw' | chpasswd

export PYCTR_TEST_ROOT=/var/lib/pyctr-test
install -d -m 0755 "$PYCTR_TEST_ROOT"
[ -x "$PYCTR_TEST_ROOT/rootfs/bin/busybox" ] || bash "$here/mkrootfs.sh" "$PYCTR_TEST_ROOT/rootfs"

# Some tests run files of their own as the test users (bus clients, peers): those users must
# be able to read the checkout. Where they cannot (a clone under /root, say), use a copy.
testsrc=$src
if ! runuser -u pyctr-test-a -- test -r "$src/tests/conftest.py"; then
    testsrc=$PYCTR_TEST_ROOT/src
    rm -rf "$testsrc"
    mkdir -p "$testsrc"
    tar -C "$src" --exclude=.git -cf - . | tar -C "$testsrc" -xf -
    chmod -R a+rX "$testsrc"
    trap 'rm -rf "$PYCTR_TEST_ROOT/src"' EXIT
    log "the test users cannot read $src: running the suite from a copy in $testsrc"
fi
cd "$testsrc"
set +e
"$PYCTR_PREFIX/bin/python" -m pytest "$@"
rc=$?
set -e
# pytest's 5 means it collected nothing: that is a failure of the suite, not a pass.
exit $rc
