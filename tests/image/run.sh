#!/usr/bin/env bash
# Image tests: unit tests, two builds (reproducibility), customize checks, and QEMU boots (TCG only)
# of the ISO (SeaBIOS CD, OVMF CD, SeaBIOS disk, OVMF disk), PXE (iPXE over QEMU user-net TFTP) and
# customized ISO/initrd, asserting on the serial console output of a tiny test init.
#
# Usage: bash tests/image/run.sh
# Env:   FERRY_KERNEL_DEB=FILE   use this linux-image-*.deb (default: fetch + cache in ~/.cache/ferry)
#        FERRY_TEST_OUT=DIR      work directory (default: /tmp/ferry-image-test)
#        CARGO_TARGET_DIR        (default: /tmp/target-imgb)
#        BOOT_TIMEOUT=SECONDS    per boot (default: 120)
#        FERRY_IMAGE_BOOTS=min   only the customized ISO/PXE boots (tests/system boots the plain modes
#                                with the real agent); default all
# Needs: qemu-system-x86 ovmf ipxe-qemu grub-pc-bin grub-efi-amd64-bin grub-common mtools xorriso
#        busybox-static kmod cpio zstd xz-utils gcc libc6-dev (for gcc -static)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${FERRY_TEST_OUT:-/tmp/ferry-image-test}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/tmp/target-imgb}
BOOT_TIMEOUT=${BOOT_TIMEOUT:-120}
ISO_LIMIT=$((60 * 1024 * 1024))
EPOCH=1700000000
FIXTURES="$ROOT/tests/image/fixtures"
failures=0

say() { printf '== %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*"; failures=$((failures + 1)); }
pass() { printf 'ok:   %s\n' "$*"; }

rm -rf "$OUT" && mkdir -p "$OUT"

say "unit tests"
(cd "$ROOT" && cargo test -q -p image-builder -j2 2>&1 | grep -E '^test result|FAILED|panicked') || fail "cargo test"
(cd "$ROOT" && cargo build -q -p image-builder -j2)
IB="$CARGO_TARGET_DIR/debug/image-builder"

say "test init (gcc -static)"
gcc -static -Os -s -o "$OUT/test-init" "$ROOT/tests/image/test-init.c"

KERNEL_ARGS=()
[[ -n "${FERRY_KERNEL_DEB:-}" ]] && KERNEL_ARGS=(--kernel-deb "$FERRY_KERNEL_DEB")

build() { # DIR [extra args...]
    local dir=$1
    shift
    SOURCE_DATE_EPOCH=$EPOCH "$IB" build --out "$dir" --agent "$OUT/test-init" "${KERNEL_ARGS[@]}" "$@" \
        >"$dir.log" 2>&1 || { cat "$dir.log"; return 1; }
}

say "build A"
t=$SECONDS
build "$OUT/a"
echo "build A: $((SECONDS - t)) s"
grep -E '^\[|^warning|^initramfs|^modules' "$OUT/a.log" | sed 's/^/   /'
say "build B (same inputs, same SOURCE_DATE_EPOCH)"
build "$OUT/b"
sa=$(sha256sum <"$OUT/a/initramfs.img") sb=$(sha256sum <"$OUT/b/initramfs.img")
if [[ "$sa" == "$sb" ]] && cmp -s "$OUT/a/pxe/initrd.img" "$OUT/b/pxe/initrd.img"; then
    pass "initramfs reproducible: sha256 ${sa%% *}"
else
    fail "initramfs differs between builds: ${sa%% *} vs ${sb%% *}"
fi

ISO="$OUT/a/ferry-rescue.iso"
iso_size=$(stat -c %s "$ISO")
echo "ISO size: $iso_size bytes ($((iso_size / 1024 / 1024)) MiB; limit $((ISO_LIMIT / 1024 / 1024)) MiB)"
((iso_size <= ISO_LIMIT)) && pass "ISO size within limit" || fail "ISO is $iso_size bytes > $ISO_LIMIT"
MODULES=$(grep -o '"count": [0-9]*' "$OUT/a/manifest.json" | grep -o '[0-9]*$')
KVER=$(grep -o '"kernel_version": "[^"]*"' "$OUT/a/manifest.json" | cut -d'"' -f4)
grep -q '"sha256": "'"${sa%% *}"'"' "$OUT/a/manifest.json" && pass "manifest lists initramfs sha256" \
    || fail "manifest lacks initramfs sha256"
echo "kernel $KVER, $MODULES modules"
cpio -it --quiet < <(zstd -dc "$OUT/a/initramfs.img") >"$OUT/listing.txt"
for p in init bin/busybox bin/sh dev/console etc/ferry "lib/modules/$KVER/modules.dep" \
    "lib/modules/$KVER/modules.alias" "lib/modules/$KVER/modules.softdep"; do
    grep -qx "$p" "$OUT/listing.txt" || fail "initramfs lacks $p"
done
sort -c "$OUT/listing.txt" 2>/dev/null && pass "initramfs entries sorted, essentials present" || fail "entries not sorted"

say "customize"
SITE=(--appliance https://10.0.2.2:8443 --ca "$FIXTURES/test-ca.pem" --token test-token-42
    --ip 10.0.2.15::10.0.2.2:255.255.255.0:rescue:eth0:none:10.0.2.3 --nameserver 10.0.2.3)
"$IB" customize --iso "$ISO" --out "$OUT/custom.iso" "${SITE[@]}" >/dev/null
mkdir -p "$OUT/pxe-custom" && cp "$OUT/a/pxe/vmlinuz" "$OUT/a/pxe/boot.ipxe" "$OUT/pxe-custom/"
"$IB" customize --initrd "$OUT/a/pxe/initrd.img" --out "$OUT/pxe-custom/initrd.img" "${SITE[@]}" >/dev/null
xorriso_lba=$(xorriso -indev "$OUT/custom.iso" -find /boot/site.img -exec report_lba -- 2>/dev/null \
    | awk -F, '/site.img/ {gsub(/ /,"",$2); print $2}')
if [[ -n "$xorriso_lba" ]]; then
    dd if="$OUT/custom.iso" of="$OUT/site-area.bin" bs=2048 skip="$xorriso_lba" count=128 status=none
    cpio -it --quiet <"$OUT/site-area.bin" >"$OUT/site-area.txt" 2>&1 || true
fi
grep -qx etc/ferry/site.conf "$OUT/site-area.txt" 2>/dev/null \
    && pass "site cpio found at xorriso's LBA ${xorriso_lba} of /boot/site.img" || fail "site cpio not at /boot/site.img"
expect_refusal() { # WANT-TEXT ARGS...
    local want=$1
    shift
    if out=$("$IB" customize --iso "$ISO" --out "$OUT/refused.iso" "$@" 2>&1); then
        fail "customize accepted $*"
    elif grep -q -- "$want" <<<"$out"; then pass "refused: $out"; else fail "unexpected message: $out"; fi
}
expect_refusal "must start with https://" --appliance http://a --ca "$FIXTURES/test-ca.pem" --token t
expect_refusal "CERTIFICATE" --appliance https://a --ca "$ROOT/tests/image/test-init.c" --token t
for _ in $(seq 500); do cat "$FIXTURES/test-ca.pem"; done >"$OUT/huge-ca.pem"
expect_refusal "embed area" --appliance https://a --ca "$OUT/huge-ca.pem" --token t

# boot NAME MARKER-CHECKS... -- QEMU ARGS: boots, waits for the marker, prints the time to it.
boot() {
    local name=$1 log="$OUT/serial-$1.log"
    shift
    local checks=()
    while [[ $1 != -- ]]; do checks+=("$1"); shift; done
    shift
    say "boot $name"
    local start end pid
    start=$(date +%s.%N)
    qemu-system-x86_64 -m 512 -display none -no-reboot -monitor none -serial "file:$log" "$@" &
    pid=$!
    end=""
    for _ in $(seq $((BOOT_TIMEOUT * 5))); do
        if grep -aq "FERRY-TEST-INIT end" "$log" 2>/dev/null; then end=$(date +%s.%N); break; fi
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.2
    done
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null || true
    if [[ -z "$end" ]]; then
        fail "$name: no marker within ${BOOT_TIMEOUT}s (serial log: $log)"
        tail -c 2000 "$log" | tr -d '\033' | tail -15
        return
    fi
    awk -v s="$start" -v e="$end" 'BEGIN { printf "time from QEMU start to marker: %.1f s\n", e - s }'
    sed -n '/FERRY-TEST-INIT ok/,/FERRY-TEST-INIT end/p' "$log" | tr -d '\r' | sed 's/^/   | /'
    local c
    for c in "kernel=$KVER " "modules=$MODULES " "load-ntfs3=ok" "busybox=yes" "${checks[@]}"; do
        tr -d '\r' <"$log" | grep -aqF -- "$c" || { fail "$name: missing '$c'"; return; }
    done
    pass "$name"
}

OVMF=/usr/share/ovmf/OVMF.fd
NOSITE="site.conf: none"
SITE_CHECKS=("ferry.appliance=https://10.0.2.2:8443" "ferry.token=test-token-42"
    "ip=10.0.2.15::10.0.2.2:255.255.255.0:rescue:eth0:none:10.0.2.3" "nameserver=10.0.2.3" "ca.pem=yes")
if [[ "${FERRY_IMAGE_BOOTS:-all}" == all ]]; then
boot bios-cd "$NOSITE" "console=ttyS0,115200" -- -cdrom "$ISO"
boot uefi-cd "$NOSITE" -- -bios "$OVMF" -cdrom "$ISO"
boot bios-disk "$NOSITE" -- -drive "file=$ISO,format=raw,if=virtio,snapshot=on"
boot uefi-disk "$NOSITE" -- -bios "$OVMF" -drive "file=$ISO,format=raw,if=virtio,snapshot=on"
boot pxe "$NOSITE" -- -netdev "user,id=n,tftp=$OUT/a/pxe,bootfile=boot.ipxe" -device virtio-net-pci,netdev=n -boot n
fi
boot custom-iso "${SITE_CHECKS[@]}" -- -cdrom "$OUT/custom.iso"
boot custom-pxe "${SITE_CHECKS[@]}" -- -netdev "user,id=n,tftp=$OUT/pxe-custom,bootfile=boot.ipxe" \
    -device virtio-net-pci,netdev=n -boot n

echo
if ((failures == 0)); then say "all image tests passed"; else say "$failures failure(s)"; exit 1; fi
