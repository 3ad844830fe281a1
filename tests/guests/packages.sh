#!/usr/bin/env bash
# The Debian packages (issue 15) installed into a real Debian 12 system with systemd as PID 1:
# a copy of the cached UEFI test guest (tests/guests/build-debian.sh) gets the three .debs of
# scripts/package and tests/guests/packages/ferry-pkg-test injected offline, boots under QEMU
# (TCG, no NIC: everything happens on 127.0.0.1 inside the guest), and the guest script
#   dpkg -i's ferry-appliance, ferry-backup-agent and ferry-rescue; checks the appliance service
#   (systemctl is-active/is-enabled/status, journalctl -u, its user, modes, systemd-analyze
#   security); backs up a 64 MiB GPT disk image with the packaged backup-agent to the packaged
#   appliance on https://127.0.0.1:8443 and restores it with the packaged restore-agent (cmp,
#   sfdisk --verify); stamps the packaged PXE initrd with the packaged image-builder; then
#   apt-get remove and dpkg --purge, and lists every path the whole cycle left on the root
#   filesystem. Before the boot, `man -l` renders the appliance's man page from its .deb.
# The host counts the "PKG ok:"/"PKG FAIL:" lines of the guest's log (read from its disk afterwards).
#
#   bash tests/guests/packages.sh
#
# Env: FERRY_PKG_DIR     the .debs (default $CARGO_TARGET_DIR/packages, made by scripts/package)
#      FERRY_PKG_SKIP_BUILD=1  do not run scripts/package first (scripts/test builds them early)
#      FERRY_PKG_WORK    work directory (default /tmp/ferry-pkg)
#      FERRY_GUEST_CACHE (default ~/.cache/ferry/guests)
#      FERRY_PKG_TIMEOUT seconds for the guest's whole run (default 900)
# Prints the guest's checks and figures, and "N passed, N failed" last.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=${FERRY_PKG_WORK:-/tmp/ferry-pkg}
CACHE=${FERRY_GUEST_CACHE:-$HOME/.cache/ferry/guests}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
PKG=${FERRY_PKG_DIR:-$CARGO_TARGET_DIR/packages}
TIMEOUT=${FERRY_PKG_TIMEOUT:-900}
ROOT_OFFSET=$((206848 * 512)) # debian12-uefi.raw p2 (ext4 /)
ROOT_UUID=6a1f0c3e-2b7d-4e55-9c1a-3d0e5b7f9a23
export QEMU_MEM=1024

say() { printf '== %s\n' "$*"; }
# shellcheck source=../lib/vm.sh
source "$ROOT/tests/lib/vm.sh"

passed=0 failed=0
ok() { echo "ok: $*"; passed=$((passed + 1)); }
bad() { echo "FAIL: $*"; failed=$((failed + 1)); }
finish() { echo "$passed passed, $failed failed"; ((failed == 0)) && exit 0; exit 1; }
abort() { bad "$*"; finish; }

((EUID == 0)) || abort "needs root (loop mounts of the guest's disk)"
T0=$(now)
mkdir -p "$WORK"
find "$WORK" -mindepth 1 -maxdepth 1 -exec rm -rf {} + 2>/dev/null
MNT=$WORK/mnt
T=$WORK
cleanup() {
    [[ -n $QPID ]] && kill "$QPID" 2>/dev/null
    mountpoint -q "$MNT" 2>/dev/null && umount "$MNT"
    wait 2>/dev/null
}
trap cleanup EXIT

if [[ -z ${FERRY_PKG_SKIP_BUILD:-} ]]; then
    say "scripts/package"
    t=$(now)
    "$ROOT/scripts/package" >"$WORK/package.log" 2>&1 || { tail -30 "$WORK/package.log"; abort "scripts/package"; }
    echo "scripts/package: $(elapsed "$t") s"
fi
debs=()
for p in ferry-appliance ferry-backup-agent ferry-rescue; do
    f=$(ls "$PKG/${p}_"*_amd64.deb 2>/dev/null | tail -1)
    [[ -n $f ]] || abort "no $PKG/${p}_*_amd64.deb (run scripts/package)"
    debs+=("$f")
    echo "$(basename "$f"): $(stat -c %s "$f") bytes"
done

say "man appliance renders (man -l on the page in the .deb)"
rm -rf "$WORK/deb-appliance"
mkdir -p "$WORK/deb-appliance"
dpkg-deb -x "${debs[0]}" "$WORK/deb-appliance" || abort "dpkg-deb -x ${debs[0]}"
if MANWIDTH=80 man -l "$WORK/deb-appliance/usr/share/man/man1/appliance.1.gz" 2>"$WORK/man.err" | col -b >"$WORK/man.txt" \
    && grep -q '^NAME' "$WORK/man.txt" && grep -q 'appliance' "$WORK/man.txt"; then
    ok "man -l appliance.1.gz renders ($(wc -l <"$WORK/man.txt") lines): $(grep -A1 '^NAME' "$WORK/man.txt" | tail -1 | sed 's/^ *//')"
else
    bad "man -l appliance.1.gz: $(head -3 "$WORK/man.err")"
fi

say "guest: a copy of debian12-uefi.raw with the packages and the test injected"
bash "$ROOT/tests/guests/build-debian.sh" >"$WORK/guests.log" 2>&1 || { tail -30 "$WORK/guests.log"; abort "build the Debian guests"; }
cp --sparse=always "$CACHE/debian12-uefi.raw" "$WORK/disk.raw" || abort "copy the guest"
mkdir -p "$MNT"
mount -o loop,offset=$ROOT_OFFSET "$WORK/disk.raw" "$MNT" || abort "loop-mount the copy's root"
inject() {
    local r=$MNT
    install -d -m 0700 "$r/root/ferry-pkg" || return 1
    cp "${debs[@]}" "$r/root/ferry-pkg/" || return 1
    install -D -m 0755 "$ROOT/tests/guests/packages/ferry-pkg-test" "$r/usr/local/sbin/ferry-pkg-test" || return 1
    install -m 0644 "$ROOT/tests/guests/packages/ferry-pkg-test.service" "$r/etc/systemd/system/" || return 1
    ln -sfn /etc/systemd/system/ferry-pkg-test.service "$r/etc/systemd/system/multi-user.target.wants/ferry-pkg-test.service" || return 1
    # The cached guest keeps man pages and docs out (dpkg path-exclude): this one takes them,
    # to check the packages' man pages and completions.
    rm -f "$r/etc/dpkg/dpkg.cfg.d/01-ferry-nodoc"
    # No login prompt on the serial console: agetty's vhangup() would cut the test's output.
    ln -sfn /dev/null "$r/etc/systemd/system/serial-getty@ttyS0.service" || return 1
    # The build's marker powers the guest off after its check: masked.
    rm -f "$r/etc/systemd/system/multi-user.target.wants/ferry-marker.service"
    ln -sfn /dev/null "$r/etc/systemd/system/ferry-marker.service" || return 1
    local k
    k=$(find "$r/boot" -maxdepth 1 -name 'vmlinuz-*' | sort | tail -1)
    [[ -n $k ]] || return 1
    cp "$k" "$WORK/vmlinuz" && cp "$r/boot/initrd.img-${k##*/vmlinuz-}" "$WORK/initrd.img"
}
inject || { umount "$MNT"; abort "inject the packages and the test"; }
umount "$MNT" || abort "unmount the copy's root"

say "boot (TCG, SATA, no NIC) and run the test in the guest (up to $TIMEOUT s)"
t=$(now)
qemu -smp 2 -kernel "$WORK/vmlinuz" -initrd "$WORK/initrd.img" \
    -append "root=UUID=$ROOT_UUID ro console=ttyS0,115200 quiet" \
    -drive "file=$WORK/disk.raw,format=raw,if=none,id=d0,cache=unsafe" -device ahci,id=ahci -device ide-hd,drive=d0,bus=ahci.0 \
    -nic none
if wait_serial 'FERRY-PKG-TEST started' 600; then
    echo "guest booted and started the test ($(elapsed "$t") s)"
else
    serial | tail -30
    abort "the guest did not start the test within 600 s"
fi
if ! wait_serial 'FERRY-PKG-TEST-DONE' "$TIMEOUT"; then
    serial | tail -40
    abort "the guest did not finish within $TIMEOUT s"
fi
GUEST_TIME=$(elapsed "$t")
wait_exit 60 || stop_qemu
# The guest's own log, from its disk (the serial console interleaves the kernel's lines).
mount -o loop,ro,offset=$ROOT_OFFSET "$WORK/disk.raw" "$MNT" 2>/dev/null \
    || mount -o loop,offset=$ROOT_OFFSET "$WORK/disk.raw" "$MNT" || abort "mount the guest's root after the run"
cp "$MNT/root/ferry-pkg/guest.log" "$WORK/guest.out" || { umount "$MNT"; abort "no guest.log on the guest's disk"; }
umount "$MNT"
cat "$WORK/guest.out"
while read -r line; do
    case $line in
    "PKG ok: "*) ok "${line#PKG ok: }" ;;
    "PKG FAIL: "*) bad "${line#PKG FAIL: }" ;;
    esac
done < <(grep -aE '^PKG (ok|FAIL): ' "$WORK/guest.out")
((passed > 30)) || bad "the guest reported only $passed passed checks (expected more than 30)"
echo "METRIC packages guest_seconds=$GUEST_TIME total_seconds=$(elapsed "$T0") $(grep -a '^PKG figure:' "$WORK/guest.out" | sed 's/^PKG figure: //' | tr '\n' ' ')"
finish
