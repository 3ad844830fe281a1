#!/usr/bin/env bash
# Baseline of the cached Debian 12 test guests (tests/guests/build-debian.sh builds them first if
# needed): what they do before any restore or fix-up. QEMU TCG only (never -enable-kvm), q35,
# -m 1024, serial console to a log file per test. The cache is never written: each boot uses a
# qcow2 overlay backed by the cached raw image, or a copy.
#
#   bash tests/guests/baseline.sh [REGEX]     run every test (or those whose name matches REGEX)
#
# Tests:
#   bios-sata        debian12-bios on SATA/AHCI under SeaBIOS -> "FERRY-GUEST-UP host=ferry-deb12-bios
#                    sums=ok files=<n of debian12-bios.sums>" on ttyS0 and QEMU exits by itself
#   bios-virtio      debian12-bios on virtio-blk -> the initramfs says "ALERT! ... does not exist"
#                    (no virtio module in it); QEMU is stopped then; no marker
#   uefi-no-fallback debian12-uefi on SATA under OVMF with empty NVRAM -> no marker, no GRUB, no
#                    kernel (no boot entry, no EFI/BOOT/BOOTX64.EFI)
#   uefi-fallback    a copy of debian12-uefi with EFI/debian/grubx64.efi copied to
#                    EFI/BOOT/BOOTX64.EFI (mtools, at the ESP's offset) -> marker sums=ok, QEMU exits
#   cache-untouched  the cached images have the size and mtime they had before the tests
#
# Env: FERRY_GUEST_CACHE=DIR (as build-debian.sh), FERRY_GUEST_WORK=DIR (default
#      /tmp/ferry-guest-baseline, wiped at start), FERRY_GUEST_JOBS=N boots at once (default 2),
#      FERRY_GUEST_BOOT_TIMEOUT=S until the marker or the ALERT (default 900: a boot takes 60-120 s
#      alone, up to ~6 min on a loaded 2-core host),
#      FERRY_GUEST_NOBOOT_WAIT=S how long a boot that must not happen is watched (default 150),
#      OVMF=FILE (default /usr/share/ovmf/OVMF.fd: volatile variables, so the NVRAM starts empty).
# Needs: qemu-system-x86 qemu-utils ovmf mtools fdisk + build-debian.sh's needs.
# Last line of output: "N passed, N failed"; exit status non-zero if any failed.
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${FERRY_GUEST_CACHE:-$HOME/.cache/ferry/guests}
WORK=${FERRY_GUEST_WORK:-/tmp/ferry-guest-baseline}
JOBS=${FERRY_GUEST_JOBS:-2}
BOOT_TIMEOUT=${FERRY_GUEST_BOOT_TIMEOUT:-900}
NOBOOT_WAIT=${FERRY_GUEST_NOBOOT_WAIT:-150}
OVMF=${OVMF:-/usr/share/ovmf/OVMF.fd}
FILTER=${1:-.}
SUITE_START=$(date +%s.%N)

say() { printf '== %s\n' "$*"; }
# shellcheck source=../lib/vm.sh
source "$HERE/../lib/vm.sh"
# shellcheck source=../lib/runner.sh
source "$HERE/../lib/runner.sh"
export QEMU_MEM=1024

say "guests: bash tests/guests/build-debian.sh (cached after the first run)"
t=$(now)
FERRY_GUEST_CACHE=$CACHE bash "$HERE/build-debian.sh" 2>&1 | sed 's/^/   /'
((PIPESTATUS[0] == 0)) || abort_build "build-debian.sh"
echo "build-debian.sh: $(elapsed "$t") s"
for n in debian12-bios debian12-uefi; do
    [[ -s $CACHE/$n.raw && -s $CACHE/$n.sums ]] || abort_build "no $CACHE/$n.raw or .sums"
done
[[ -f $OVMF ]] || abort_build "no $OVMF (apt-get install ovmf)"

rm -rf "$WORK"
mkdir -p "$WORK"
: >"$WORK/metrics.txt"
cache_state() { stat -c '%n %s %Y' "$CACHE"/debian12-bios.raw "$CACHE"/debian12-uefi.raw "$CACHE"/*.sums; }
cache_state >"$WORK/cache-before.txt"

# --- helpers used inside a test (each test runs in its own subshell and directory $T) ----------
T= QPID= QSTART= NAME=

# qemu ARGS...: tests/lib/vm.sh's VM (TCG, 1 GiB, serial to $T/serial.log) as a q35 without a NIC.
vm() { qemu -machine q35 -nic none "$@"; }

metric() { printf '%-17s %s\n' "$NAME" "$*" | tee -a "$WORK/metrics.txt"; }

overlay() { # IMAGE-NAME -> $T/disk.qcow2 backed by the cached raw image (read only)
    qemu-img create -q -f qcow2 -F raw -b "$CACHE/$1.raw" "$T/disk.qcow2" || fail "qemu-img create overlay"
}
sata() { # FILE FORMAT
    echo "-drive file=$1,format=$2,if=none,id=d0 -device ahci,id=ahci -device ide-hd,drive=d0,bus=ahci.0"
}

# expect_marker IMAGE-NAME HOST: the marker line with sums=ok and the right count, then QEMU exits.
expect_marker() {
    local n=$1 host=$2 files line wall
    files=$(wc -l <"$CACHE/$n.sums")
    wait_serial 'FERRY-GUEST-UP' || { stop_qemu; fail "no FERRY-GUEST-UP within ${BOOT_TIMEOUT}s"; }
    wall=$(elapsed "$QSTART")
    line=$(sgrep -m1 -oE 'FERRY-GUEST-UP .*')
    echo "console after $wall s: $line"
    [[ $line == "FERRY-GUEST-UP host=$host sums=ok files=$files" ]] \
        || fail "marker line is not 'FERRY-GUEST-UP host=$host sums=ok files=$files'"
    (($(sgrep -c 'FERRY-GUEST-UP') == 1)) || fail "more than one marker line"
    sgrep -qxF -- "$line" || fail "the marker does not stand alone on its console line"
    wait_exit 180 || { stop_qemu; fail "QEMU did not exit by itself within 180 s after the marker"; }
    local total
    total=$(elapsed "$QSTART")
    echo "QEMU exited by itself after $total s"
    metric "QEMU start -> marker ${wall} s, -> exited ${total} s"
}

# --- the tests --------------------------------------------------------------------------------
test_bios-sata() {
    overlay debian12-bios
    vm $(sata "$T/disk.qcow2" qcow2)
    expect_marker debian12-bios ferry-deb12-bios
}

test_bios-virtio() {
    overlay debian12-bios
    vm -drive "file=$T/disk.qcow2,format=qcow2,if=virtio"
    wait_serial 'ALERT!.*does not exist' || { stop_qemu; fail "no 'ALERT! ... does not exist' within ${BOOT_TIMEOUT}s"; }
    local wall
    wall=$(elapsed "$QSTART")
    echo "console after $wall s: $(sgrep -m1 -oE 'ALERT!.*')"
    sleep 2
    stop_qemu
    has 'FERRY-GUEST-UP' && fail "the marker appeared although the root device was not found"
    echo "no marker; QEMU stopped by the test"
    metric "QEMU start -> ALERT ${wall} s"
}

test_uefi-no-fallback() {
    overlay debian12-uefi
    vm -bios "$OVMF" $(sata "$T/disk.qcow2" qcow2)
    # OVMF tries its default boot options (no BOOTX64.EFI on the disk), then starts its shell; wait
    # for the shell or the whole window, then make sure nothing of the guest ran.
    local why="watched ${NOBOOT_WAIT}s"
    if wait_serial 'Shell> |UEFI Interactive Shell|No bootable (option|device)' "$NOBOOT_WAIT"; then
        why="firmware: '$(sgrep -m1 -oE 'Shell> |UEFI Interactive Shell|No bootable (option|device)')' after $(elapsed "$QSTART") s, watched 20 s more"
        sleep 20
    fi
    has 'FERRY-GUEST-UP' && { stop_qemu; fail "the marker appeared"; }
    has 'GNU GRUB|Welcome to GRUB|Linux version' && { stop_qemu; fail "GRUB or a kernel started"; }
    alive || fail "QEMU exited (the firmware should sit in its shell / boot menu)"
    stop_qemu
    local failed
    failed=$(sgrep -m1 -oE 'BdsDxe: failed to load Boot[0-9A-F]+ "[^"]*HARDDISK[^"]*"[^.]*' || true)
    echo "no GRUB, no kernel, no marker ($why)${failed:+; $failed}"
    metric "no boot: $why"
}

test_uefi-fallback() {
    cp --sparse=always "$CACHE/debian12-uefi.raw" "$T/disk.raw" || fail "copy"
    local start off
    start=$(sfdisk -d "$T/disk.raw" | sed -nE 's/.*1 : start= *([0-9]+),.*type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B.*/\1/p')
    [[ -n $start ]] || fail "no ESP as partition 1"
    off=$((start * 512))
    echo "ESP at sector $start (byte offset $off)"
    mdir -i "$T/disk.raw@@$off" ::/EFI/BOOT >/dev/null 2>&1 && fail "EFI/BOOT already exists on the ESP"
    mcopy -i "$T/disk.raw@@$off" ::/EFI/debian/grubx64.efi "$T/grubx64.efi" || fail "mcopy out EFI/debian/grubx64.efi"
    mmd -i "$T/disk.raw@@$off" ::/EFI/BOOT || fail "mmd EFI/BOOT"
    mcopy -i "$T/disk.raw@@$off" "$T/grubx64.efi" ::/EFI/BOOT/BOOTX64.EFI || fail "mcopy in BOOTX64.EFI"
    echo "copied EFI/debian/grubx64.efi ($(stat -c %s "$T/grubx64.efi") bytes) to EFI/BOOT/BOOTX64.EFI on the copy"
    vm -bios "$OVMF" $(sata "$T/disk.raw" raw)
    expect_marker debian12-uefi ferry-deb12-uefi
}

ALL_TESTS=(bios-sata uefi-fallback bios-virtio uefi-no-fallback)
cleanup() {
    local f
    for f in "$WORK"/t-*/qemu.pid; do [[ -f $f ]] && kill "$(cat "$f")" 2>/dev/null; done
}
trap cleanup EXIT
run_tests "${ALL_TESTS[@]}"

# The cache must be as it was.
say "cache-untouched"
cache_state >"$WORK/cache-after.txt"
if diff "$WORK/cache-before.txt" "$WORK/cache-after.txt"; then
    echo "ok:   cache-untouched (size and mtime of the cached images and sums unchanged)"
    passed+=(cache-untouched)
else
    echo "FAIL: cache-untouched"
    failed+=(cache-untouched)
fi

echo
say "measurements"
sed 's/^/   /' "$WORK/metrics.txt"
report_results
