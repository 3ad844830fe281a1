#!/usr/bin/env bash
# A Windows-shaped server backed up cold and restored onto virtio (issue 13): two NTFS disks made
# with mkntfs and ntfs-3g hold a Windows tree (the real Windows 10-era SYSTEM hive, whose Fast
# Startup is on; a SOFTWARE hive made with hivexregedit; files with a checksum list), one of
# them with a hiberfil.sys holding a hibernation image. A VM with both on IDE boots the rescue
# ISO carrying a virtio-win-shaped driver tree (`image-builder customize --virtio-win`, one INF
# in UTF-16LE) and runs two backup jobs; their manifests record the Windows facts; the
# hibernated snapshot is refused for restore; the clean one is restored onto a blank virtio disk
# by an unattended job whose fix-up injects the drivers, then checked with tools we did not
# write: hivexget (boot-start viostor, the driver package in DriverDatabase), ntfsinfo and the
# checksum list through ntfs-3g.
#
#   bash tests/guests/windows-cold.sh
#
# Env: FERRY_WIN_WORK (default /tmp/ferry-win), CARGO_TARGET_DIR (default /tmp/target-sys),
#      FERRY_WIN_SKIP_BUILD=1 reuse the binaries and image of the previous run.
# Prints "N passed, N failed" last.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=${FERRY_WIN_WORK:-/tmp/ferry-win}
TESTDATA=${FERRY_WINDOWS_TESTDATA:-$ROOT/../shared/testdata/windows}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/tmp/target-sys}
MUSL=x86_64-unknown-linux-musl
export QEMU_MEM=1024

say() { printf '== %s\n' "$*"; }
# shellcheck source=../lib/vm.sh
source "$ROOT/tests/lib/vm.sh"
# shellcheck source=../lib/appliance.sh
source "$ROOT/tests/lib/appliance.sh"
passed=0 failed=0
ok() { echo "ok: $*"; passed=$((passed + 1)); }
bad() { echo "FAIL: $*"; failed=$((failed + 1)); }
finish() { echo "$passed passed, $failed failed"; ((failed == 0)); exit $?; }
abort() { bad "$*"; finish; }

[[ -f $TESTDATA/SYSTEM-modern.xz && -f $TESTDATA/BCD.xz ]] || abort "no Windows test hives in $TESTDATA"
mkdir -p "$WORK"
find "$WORK" -mindepth 1 -maxdepth 1 ! -name image -exec rm -rf {} + 2>/dev/null
BIN=$CARGO_TARGET_DIR/debug
IMG=$WORK/image
T=$WORK

if [[ -z ${FERRY_WIN_SKIP_BUILD:-} || ! -f $IMG/ferry-rescue.iso ]]; then
    say "build: static restore-agent, appliance, image-builder; the rescue image"
    t=$(now)
    (cd "$ROOT" && cargo build -q --release --target "$MUSL" -p restore-agent -p ferry-beacon -p backup-agent && cargo build -q --workspace) \
        >"$WORK/build.log" 2>&1 || { tail -30 "$WORK/build.log"; abort "cargo build"; }
    rm -rf "$IMG"
    "$BIN/image-builder" build --out "$IMG" --agent "$CARGO_TARGET_DIR/$MUSL/release/restore-agent" \
        --beacon "$CARGO_TARGET_DIR/$MUSL/release/beacon" >"$WORK/image.log" 2>&1 || { tail -30 "$WORK/image.log"; abort "image-builder build"; }
    echo "build: $(elapsed "$t") s"
fi

# --- a virtio-win-shaped driver tree: viostor, vioscsi (its INF in UTF-16LE), NetKVM for w10 ----
inf() { # NAME CLASS CLASSGUID DEVICE START GROUP
    cat <<EOF
; $1.inf - made by tests/guests/windows-cold.sh in the virtio-win layout
[Version]
Signature="\$WINDOWS NT\$"
Class=$2
ClassGUID=$3
Provider=%VENDOR%
CatalogFile=$1.cat

[Manufacturer]
%VENDOR%=VENDOR,NTamd64

[VENDOR.NTamd64]
%Desc% = inst, PCI\\VEN_1AF4&DEV_$4

[inst]
CopyFiles=@$1.sys

[inst.Services]
AddService = $1, 0x00000002, svc_inst

[svc_inst]
ServiceType    = 1
StartType      = $5
ErrorControl   = 1
ServiceBinary  = %12%\\$1.sys
LoadOrderGroup = $6

[Strings]
VENDOR = "Red Hat, Inc."
Desc = "Red Hat VirtIO $1"
EOF
}
DRV=$WORK/virtio-win
for d in "viostor SCSIAdapter {4D36E97B-E325-11CE-BFC1-08002BE10318} 1001 0 SCSI_miniport" \
    "vioscsi SCSIAdapter {4D36E97B-E325-11CE-BFC1-08002BE10318} 1004 0 SCSI_miniport" \
    "NetKVM Net {4d36e972-e325-11ce-bfc1-08002be10318} 1000 3 NDIS"; do
    read -r name class guid dev start group <<<"$d"
    lower=$(tr 'A-Z' 'a-z' <<<"$name")
    leaf=$DRV/$name/2k19/amd64
    mkdir -p "$leaf"
    inf "$lower" "$class" "$guid" "$dev" "$start" "${group//_/ }" | sed 's/$/\r/' >"$leaf/$lower.inf.utf8"
    if [[ $name == vioscsi ]]; then
        { printf '\xff\xfe'; iconv -f UTF-8 -t UTF-16LE "$leaf/$lower.inf.utf8"; } >"$leaf/$lower.inf"
    else
        cp "$leaf/$lower.inf.utf8" "$leaf/$lower.inf"
    fi
    rm "$leaf/$lower.inf.utf8"
    printf 'MZ %s for the test\n' "$name" >"$leaf/$lower.sys"
    printf 'catalog of %s\n' "$name" >"$leaf/$lower.cat"
done
[[ $(head -c 2 "$DRV/vioscsi/2k19/amd64/vioscsi.inf" | od -An -tx1 | tr -d ' \n') == fffe ]] \
    || abort "vioscsi.inf is not UTF-16LE with its BOM"

# --- two Windows-shaped NTFS disks ---------------------------------------------------------------
MNT=$WORK/mnt
mkdir -p "$MNT"
make_windows_disk() { # OUT HIBERNATED(0|1)
    local out=$1 hib=$2 part=$WORK/part.img
    truncate -s 256M "$out"
    printf 'label: dos\nstart=2048, type=7, bootable\n' | sfdisk -q "$out" || return 1
    rm -f "$part"
    truncate -s $((255 * 1024 * 1024)) "$part"
    mkntfs -F -q -f -p 2048 -H 16 -S 63 -L Windows "$part" >/dev/null 2>&1 || return 1
    ntfs-3g "$part" "$MNT" || return 1
    mkdir -p "$MNT/Windows/System32/config" "$MNT/Windows/System32/drivers" "$MNT/Users/Public/ferry"
    xz -dc "$TESTDATA/SYSTEM-modern.xz" >"$MNT/Windows/System32/config/SYSTEM"
    xz -dc "$TESTDATA/BCD.xz" >"$WORK/SOFTWARE"
    printf '%s\n' 'Windows Registry Editor Version 5.00' '' '[\Microsoft]' '' '[\Microsoft\Windows NT]' '' \
        '[\Microsoft\Windows NT\CurrentVersion]' '"CurrentMajorVersionNumber"=dword:0000000a' \
        '"CurrentMinorVersionNumber"=dword:00000000' '"CurrentBuildNumber"="17763"' \
        '"InstallationType"="Server"' '"ProductName"="Windows Server 2019 Standard"' '' \
        '[\Microsoft\Windows]' '' '[\Microsoft\Windows\CurrentVersion]' \
        '"DevicePath"=str(2):"%SystemRoot%\\inf"' '' >"$WORK/software.reg"
    hivexregedit --merge "$WORK/SOFTWARE" "$WORK/software.reg" || return 1
    cp "$WORK/SOFTWARE" "$MNT/Windows/System32/config/SOFTWARE"
    printf 'MZ storahci\n' >"$MNT/Windows/System32/drivers/storahci.sys"
    local i
    for i in $(seq 1 40); do head -c $((4096 * i)) /dev/urandom >"$MNT/Users/Public/ferry/file-$i.bin"; done
    (cd "$MNT/Users/Public/ferry" && sha256sum file-*.bin >"$WORK/$(basename "$out").sums")
    if ((hib)); then printf 'HIBR' >"$MNT/hiberfil.sys"; head -c 65536 /dev/zero >>"$MNT/hiberfil.sys"; fi
    umount "$MNT" || return 1
    dd if="$part" of="$out" bs=1M seek=1 conv=notrunc,sparse status=none
    rm -f "$part"
}
make_windows_disk "$WORK/clean.raw" 0 || abort "make the clean Windows disk"
make_windows_disk "$WORK/hibernated.raw" 1 || abort "make the hibernated Windows disk"
cp --sparse=always "$WORK/clean.raw" "$WORK/clean.orig"
echo "disks: clean.raw and hibernated.raw (256 MiB, MBR, NTFS at 1 MiB; 40 files each)"

start_appliance "$WORK/appliance" "$BIN" || abort "start the appliance"
trap 'kill $SERVE_PID 2>/dev/null; stop_qemu' EXIT
"$BIN/image-builder" customize --iso "$IMG/ferry-rescue.iso" --out "$WORK/site.iso" \
    --appliance "$URL" --ca "$DATA/ca.pem" --token "$ENROLL" --virtio-win "$DRV" >"$WORK/customize.log" 2>&1 \
    || { cat "$WORK/customize.log"; abort "customize the ISO with --virtio-win"; }
ok "rescue ISO stamped for $URL with the driver tree ($(grep -ciE 'viostor|vioscsi|netkvm' "$WORK/customize.log") driver lines in its output)"

# --- the source: both disks on IDE, the rescue ISO, two backup jobs --------------------------------
SRC_MAC=52:54:00:77:0c:01
SRC_ID=agent-525400770c01
T=$WORK/source
mkdir -p "$T"
t=$(now)
# Disk names follow probe order, as on bare metal: the jobs name the disks by serial number.
qemu -smp 2 -boot d -cdrom "$WORK/site.iso" \
    -drive "file=$WORK/clean.raw,format=raw,if=none,id=clean" -device ide-hd,drive=clean,bus=ide.0,unit=0,serial=WIN-CLEAN \
    -drive "file=$WORK/hibernated.raw,format=raw,if=none,id=hib" -device ide-hd,drive=hib,bus=ide.0,unit=1,serial=WIN-HIB \
    $(nic "$SRC_MAC")
approve_from_console "$SRC_ID" "$BIN" || abort "approve the source VM's agent"
J1=$("$BIN/appliance" jobs create --data "$DATA" --backup --agent "$SRC_ID" --machine win-clean --disk serial:WIN-CLEAN) \
    || abort "create the backup job of serial:WIN-CLEAN"
J2=$("$BIN/appliance" jobs create --data "$DATA" --backup --agent "$SRC_ID" --machine win-hib --disk serial:WIN-HIB --then poweroff) \
    || abort "create the backup job of serial:WIN-HIB"
wait_exit 900 || { stop_qemu; serial | tail -30; abort "the source VM did not power off within 900 s"; }
echo "source VM: both backup jobs done, powered off after $(elapsed "$t") s"
for j in "$J1" "$J2"; do
    "$BIN/appliance" jobs show --data "$DATA" --json "$j" >"$WORK/$j.json"
    jq -e '.job.state == "succeeded"' "$WORK/$j.json" >/dev/null \
        || abort "backup job $j: $(jq -c .job.state "$WORK/$j.json")"
done
S1=$(jq -r .job.backup.snapshot "$WORK/$J1.json")
S2=$(jq -r .job.backup.snapshot "$WORK/$J2.json")
D1=$(jq -r '.job.backup_resolved[0]' "$WORK/$J1.json")
echo "serial:WIN-CLEAN resolved to $D1, serial:WIN-HIB to $(jq -r '.job.backup_resolved[0]' "$WORK/$J2.json")"
grep -q 'waiting for the next job (the backup job said --then none)' < <(tr -d '\r' <"$T/serial.log") \
    && ok "after the first backup job (--then none) the agent waited for the next one" \
    || bad "the agent did not say it waits for the next job after --then none"
os1=$(jq -c .os "$DATA/snapshots/$S1/manifest.json")
os2=$(jq -c .os "$DATA/snapshots/$S2/manifest.json")
if [[ $(jq -r .consistency.mode "$DATA/snapshots/$S1/manifest.json") == offline \
    && $(jq -r '.family + "|" + .volume + "|" + (.fast_startup|tostring) + "|" + (.hibernated|tostring)' <<<"$os1") == "windows|${D1}1|true|false" \
    && $(jq -r .version <<<"$os1") == *"Windows Server 2019 Standard"* ]]; then
    ok "snapshot $S1 is offline and records the Windows facts: $os1"
else
    bad "snapshot $S1: consistency $(jq -c .consistency "$DATA/snapshots/$S1/manifest.json"), os $os1"
fi
[[ $(jq -r '.hibernated' <<<"$os2") == true ]] && ok "snapshot $S2 records the hibernated volume: $os2" \
    || bad "snapshot $S2 does not record hibernation: $os2"
cmp -s "$WORK/clean.raw" "$WORK/clean.orig" && ok "the backup jobs left the source disk unchanged (cmp)" \
    || bad "the source disk changed during the backup"

# --- the hibernated snapshot is refused for restore ----------------------------------------------
DST_MAC=52:54:00:77:0c:02
D2=$(jq -r '.disks[0].name' "$DATA/snapshots/$S2/manifest.json")
if out=$("$BIN/appliance" jobs create --data "$DATA" --mac "$DST_MAC" --snapshot "$S2" --map "$D2=/dev/vda" 2>&1); then
    bad "a restore of the hibernated snapshot was accepted: $out"
else
    [[ $out == *"held a hibernation image"* ]] && ok "the hibernated snapshot is refused for restore: $out" \
        || bad "refused, but not for hibernation: $out"
fi

# --- the clean one onto a blank virtio disk, with the fix-up ---------------------------------------
T=$WORK/target
mkdir -p "$T"
truncate -s 512M "$WORK/target.raw"
JOB=$("$BIN/appliance" jobs create --data "$DATA" --mac "$DST_MAC" --snapshot "$S1" --map "$D1=/dev/vda" --then poweroff) \
    || abort "create the restore job"
t=$(now)
qemu -smp 2 -boot d -cdrom "$WORK/site.iso" -drive "file=$WORK/target.raw,format=raw,if=virtio" $(nic "$DST_MAC")
approve_from_console "agent-525400770c02" "$BIN" || abort "approve the target VM's agent"
wait_exit 900 || { stop_qemu; serial | tail -30; abort "the target VM did not power off within 900 s"; }
"$BIN/appliance" jobs show --data "$DATA" --json "$JOB" >"$WORK/restore.json"
jq -r '.events[] | "\(.time) \(.phase) \(.level) \(.message)"' "$WORK/restore.json" >"$WORK/restore-events.txt"
if jq -e '.job.state == "succeeded"' "$WORK/restore.json" >/dev/null; then
    ok "restore job $JOB succeeded in $(elapsed "$t") s; fix-up: $(grep -m1 -oE 'inject virtio drivers[^|]*' "$WORK/restore-events.txt" | cut -c1-120)"
else
    bad "restore job $JOB: $(jq -c .job.state "$WORK/restore.json")"; tail -20 "$WORK/restore-events.txt"
fi

# Checked from outside with hivexget, ntfsinfo and sha256sum (the partition through a loop device).
LOOP=$(losetup --find --show --offset $((2048 * 512)) --sizelimit $((255 * 1024 * 1024)) "$WORK/target.raw") \
    || abort "losetup the restored partition"
trap 'umount "$MNT" 2>/dev/null; losetup -d "$LOOP" 2>/dev/null; kill $SERVE_PID 2>/dev/null; stop_qemu' EXIT
ntfsinfo -F /Windows/System32/drivers/viostor.sys "$LOOP" >/dev/null 2>&1 \
    && ok "ntfsinfo finds Windows/System32/drivers/viostor.sys on the restored volume" \
    || bad "ntfsinfo: no viostor.sys on the restored volume"
if ntfs-3g -o ro "$LOOP" "$MNT"; then
    SYS=$MNT/Windows/System32/config/SYSTEM
    start=$(hivexget "$SYS" '\ControlSet001\Services\viostor' Start 2>&1)
    [[ $start == 0 ]] && ok "hivexget: viostor is boot-start (Start=0)" || bad "hivexget viostor Start: $start"
    pkgs=$(hivexsh "$SYS" <<<$'cd \\DriverDatabase\\DriverPackages\nls' 2>&1 | grep -ci viostor)
    ((pkgs > 0)) && ok "hivexget: DriverDatabase lists the viostor package ($pkgs entr(y/ies))" \
        || bad "no viostor package in DriverDatabase"
    (cd "$MNT/Users/Public/ferry" && sha256sum -c --quiet "$WORK/clean.raw.sums") \
        && ok "every file of the source is on the restored volume (40, sha256)" || bad "restored files differ"
    umount "$MNT"
else
    bad "ntfs-3g could not mount the restored volume"
fi
finish
