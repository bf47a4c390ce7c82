#!/usr/bin/env bash
# pyctr side by side with the tools users would pick instead, in one run on this machine.
# Root; idempotent; about 10 minutes (--quick: about 2); removes everything it creates.
#   bench/run.sh [--quick] [--only start,network,memory,helper]
# Prints one table and which targets hold; writes JSON under bench/results/ (git-ignored).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
[ "$(id -u)" = 0 ] || { echo "bench: run.sh must run as root" >&2; exit 1; }

# The anchors pyctr is measured against, and what the harness itself runs.
ANCHOR_PACKAGES="hyperfine iperf3 bubblewrap runc crun podman slirp4netns uidmap"
HARNESS_PACKAGES="busybox-static iproute2 iptables util-linux python3 dbus-bin"
missing=()
for p in $ANCHOR_PACKAGES $HARNESS_PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "bench: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 || {
        apt-get update -qq >/dev/null
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    }
fi

# Everything measured runs as this unprivileged user, with its own subordinate id ranges
# (podman needs them). The account stays between runs, like the test users; its files do not.
BENCH_USER=pyctr-bench
BENCH_HOME=/var/lib/pyctr-bench/home
id "$BENCH_USER" >/dev/null 2>&1 ||
    useradd --system --no-create-home --home-dir "$BENCH_HOME" --shell /usr/sbin/nologin "$BENCH_USER"
for f in /etc/subuid /etc/subgid; do
    grep -q "^$BENCH_USER:" "$f" 2>/dev/null || {
        last=$(awk -F: '{ e = $2 + $3; if (e > m) m = e } END { print (m > 100000 ? m : 100000) }' "$f" 2>/dev/null || echo 100000)
        echo "$BENCH_USER:$last:65536" >> "$f"
    }
done

# One bench run at a time: each run's first step removes whatever an earlier one left,
# which would pull the world from under a run in progress.
exec 9>>/run/pyctr-bench.lock
if ! flock -n 9; then
    echo "bench: another bench/run.sh is running; waiting for it (at most 15 minutes)" >&2
    flock -w 900 9 || { echo "bench: gave up waiting for /run/pyctr-bench.lock" >&2; exit 1; }
fi

# The harness bounds each step itself (about 10 minutes of work, plus at most --lock-timeout
# waiting for the tests' lock); this is the backstop. SIGTERM lets it clean up, SIGKILL a
# minute later does not, and the next run then removes what was left.
cd "$here"
exec timeout --signal=TERM --kill-after=60 1800 /usr/bin/python3 -B -m harness "$@"
