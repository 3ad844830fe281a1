#!/usr/bin/env bash
# Image tests: unit tests, two builds (reproducibility), customize checks, and QEMU boots (TCG only)
# of the ISO (SeaBIOS CD, OVMF CD, SeaBIOS disk, OVMF disk), PXE (iPXE over QEMU user-net TFTP) and
# customized ISO/initrd, asserting on the serial console output of a tiny test init.
#
# Usage: bash tests/image/run.sh
# Env:   FERRY_KERNEL_DEB=FILE   use this linux-image-*.deb (default: fetch + cache in ~/.cache/ferry)
#        FERRY_TEST_OUT=DIR      work directory (default: /tmp/ferry-image-test)
#        FERRY_IMAGE_SKIP_UNIT=1 skip image-builder's unit tests (scripts/test runs them with the rest)
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

if [[ -z ${FERRY_IMAGE_SKIP_UNIT:-} ]]; then # scripts/test runs them with the workspace's
    say "unit tests"
    (cd "$ROOT" && cargo test -q -p image-builder -j2 2>&1 | grep -E '^test result|FAILED|panicked') || fail "cargo test"
fi
(cd "$ROOT" && cargo build -q --workspace) # the set scripts/test builds: no rebuild
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

say "firmware (--firmware common, the default)"
M="$OUT/a/manifest.json"
jq -r '.firmware | "level \(.level): \(.files | length) files, \(.bytes) bytes from \([.packages[] | "\(.name) \(.version)"] | join(", ")); \(.missing | length) requested files in no consulted package"' "$M"
jq -e '.firmware.level == "common" and (.firmware.files | length) > 0' "$M" >/dev/null \
    && pass "manifest: common firmware carried" || fail "manifest firmware: $(jq -c '.firmware | {level, bytes}' "$M")"
# e100 (QEMU's i8255x; tests/system boots it) and bnx2x: asked for by shipped modules, carried
# with the licence their package's copyright file gives them.
for f in e100/d101m_ucode.bin e100/d101s_ucode.bin; do
    jq -e --arg f "$f" 'any(.firmware.files[]; .file == $f and .package == "firmware-intel-misc" and (.license | type == "string") and (.modules | index("e100")))' "$M" >/dev/null \
        && grep -qx "lib/firmware/$f" "$OUT/listing.txt" && pass "firmware $f: in the initramfs, from firmware-intel-misc, licence $(jq -r --arg f "$f" '.firmware.files[] | select(.file == $f) | .license' "$M")" \
        || fail "firmware $f not carried as expected: $(jq -c --arg f "$f" '.firmware.files[] | select(.file == $f)' "$M")"
done
jq -e 'any(.firmware.files[]; .package == "firmware-bnx2x")' "$M" >/dev/null && pass "bnx2x firmware carried" || fail "no bnx2x firmware"
bad=0
while read -r stored; do grep -qx "lib/firmware/$stored" "$OUT/listing.txt" || { fail "manifest lists $stored, the initramfs lacks it"; bad=1; }; done \
    < <(jq -r '.firmware.files[].stored' "$M")
while read -r pkg; do grep -qx "usr/share/doc/$pkg/copyright" "$OUT/listing.txt" || { fail "no copyright file of $pkg"; bad=1; }; done \
    < <(jq -r '.firmware.packages[].name' "$M")
# Nothing a shipped module does not ask for: every file under lib/firmware is in the manifest.
extra=$(grep '^lib/firmware/.' "$OUT/listing.txt" | sed 's|^lib/firmware/||' | while read -r e; do
    jq -e --arg e "$e" 'any(.firmware.files[]; .stored == $e or (.stored | startswith($e + "/")))' "$M" >/dev/null || echo "$e"; done)
[[ -z $extra ]] || { fail "initramfs carries firmware the manifest does not list: $extra"; bad=1; }
((bad == 0)) && pass "every carried firmware file listed, every package's copyright carried"

say "size budget: ISO with virtio-win and common firmware <= 60 MiB"
# A virtio-win-shaped tree with incompressible driver binaries of the sizes virtio-win ships
# (viostor ~100 KiB, vioscsi ~110 KiB, NetKVM ~450 KiB, Balloon ~70 KiB; 16 OS/arch folders):
# an upper bound, the real .sys files compress.
vw_inf() { # SERVICE CLASS GUID DEV
    printf '[Version]\r\nSignature="$WINDOWS NT$"\r\nClass=%s\r\nClassGUID=%s\r\nCatalogFile=%s.cat\r\n\r\n[Manufacturer]\r\n%%RHEL%%=RHEL,NTamd64\r\n\r\n[RHEL.NTamd64]\r\n%%Desc%% = inst, PCI\\VEN_1AF4&DEV_%s&SUBSYS_00021AF4&REV_00\r\n\r\n[inst.Services]\r\nAddService = %s, 0x00000002, svc\r\n\r\n[svc]\r\nServiceType = 1\r\nStartType = 0\r\nServiceBinary = %%12%%\\%s.sys\r\n\r\n[Strings]\r\nRHEL = "Red Hat, Inc."\r\nDesc = "VirtIO %s"\r\n' \
        "$2" "$3" "$1" "$4" "$1" "$1" "$1"
}
VW="$OUT/virtio-win"
for d in "viostor viostor SCSIAdapter {4D36E97B-E325-11CE-BFC1-08002BE10318} 1001 100" \
    "vioscsi vioscsi SCSIAdapter {4D36E97B-E325-11CE-BFC1-08002BE10318} 1004 110" \
    "NetKVM netkvm Net {4D36E972-E325-11CE-BFC1-08002BE10318} 1000 450" \
    "Balloon balloon System {4D36E97D-E325-11CE-BFC1-08002BE10318} 1002 70"; do
    read -r folder stem class guid dev kib <<<"$d"
    for place in 2k8R2/amd64 2k12/amd64 2k12R2/amd64 2k16/amd64 2k19/amd64 2k22/amd64 2k25/amd64 \
        w7/amd64 w7/x86 w8.1/amd64 w8.1/x86 w10/amd64 w10/x86 w10/ARM64 w11/amd64 w11/ARM64; do
        mkdir -p "$VW/$folder/$place"
        vw_inf "$stem" "$class" "$guid" "$dev" >"$VW/$folder/$place/$stem.inf"
        head -c $((kib * 1024)) /dev/urandom >"$VW/$folder/$place/$stem.sys"
        head -c 12288 /dev/urandom >"$VW/$folder/$place/$stem.cat"
    done
done
echo "virtio-win tree: $(du -sb "$VW" | cut -f1) bytes"
build "$OUT/budget" --virtio-win "$VW" || fail "build with --virtio-win"
b=$(stat -c %s "$OUT/budget/ferry-rescue.iso" 2>/dev/null || echo 0)
echo "ISO with virtio-win (incompressible upper bound) and common firmware: $b bytes ($(awk -v b="$b" 'BEGIN { printf "%.1f", b / 1048576 }') MiB)"
((b > 0 && b <= ISO_LIMIT)) && pass "ISO with virtio-win and common firmware within 60 MiB" || fail "ISO is $b bytes > $ISO_LIMIT"

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
