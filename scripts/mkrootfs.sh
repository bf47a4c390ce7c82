#!/usr/bin/env bash
# Build a minimal busybox root filesystem in DIR (readable by every user).
#   mkrootfs.sh DIR            busybox-static and its applets
#   mkrootfs.sh DIR --iperf3   the same plus iperf3 and the libraries it links (for bench/)
set -euo pipefail
dir=${1:?usage: mkrootfs.sh DIR [--iperf3]}
busybox=/bin/busybox
[ -x "$busybox" ] && "$busybox" --list >/dev/null 2>&1 || { echo "mkrootfs: needs busybox-static" >&2; exit 1; }

rm -rf "$dir.tmp"
mkdir -p "$dir.tmp"
cd "$dir.tmp"
mkdir -p bin sbin usr/bin usr/sbin etc proc sys dev tmp root home var/www run
chmod 1777 tmp
cp "$busybox" bin/busybox
for applet in $(bin/busybox --list); do
    [ -e "bin/$applet" ] || ln -s busybox "bin/$applet"
done
cat > etc/passwd <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PASSWD
cat > etc/group <<'GROUP'
root:x:0:
nogroup:x:65534:
GROUP
echo '<h1>hello from a pyctr container</h1>' > var/www/index.html
if [ "${2:-}" = --iperf3 ]; then
    iperf=$(command -v iperf3) || { echo "mkrootfs: --iperf3 needs iperf3 installed" >&2; exit 1; }
    cp "$iperf" usr/bin/iperf3
    for lib in $(ldd "$iperf" | grep -o '/[^ ]*'); do
        mkdir -p ".$(dirname "$lib")"
        cp -L "$lib" ".$lib"
    done
fi
cd ..
chmod -R a+rX "$dir.tmp"
rm -rf "$dir"
mv "$dir.tmp" "$dir"
