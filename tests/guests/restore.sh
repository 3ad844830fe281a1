#!/usr/bin/env bash
# End to end, the way an operator migrates a server (issue "Fix-up"): a real Debian 12 guest whose
# initramfs has no virtio drivers (tests/guests/build-debian.sh) is backed up to a real appliance; a
# blank VM with a larger virtio disk boots our rescue ISO, an unattended job restores the guest with
# --grow and fixes it up (initramfs, fstab, GRUB / UEFI fallback loader); then the restored disk
# boots and the guest prints its marker with its checksum list verified.
#
#   bash tests/guests/restore.sh [bios|uefi ...]     (default: both)
#
# Variants: bios  MBR + /boot ext4 + LVM on a logical partition (xfs root), GRUB for BIOS, SeaBIOS
#           uefi  GPT + ESP + root, GRUB installed without the removable fallback, OVMF with empty
#                 NVRAM both for the rescue boot and the restored boot
#           cold  the bios guest backed up cold instead of by backup-agent: the source VM boots the
#                 rescue ISO with its disk attached, takes a backup job (a job naming the boot
#                 medium refused first), powers off; its offline snapshot is then restored as above
# Env: FERRY_GUEST_CACHE (default ~/.cache/ferry/guests), FERRY_E2E_WORK (default /tmp/ferry-e2e),
#      CARGO_TARGET_DIR (default /tmp/target-sys: shares the system tests' build),
#      FERRY_E2E_SKIP_BUILD=1 reuse binaries and image of the previous run.
# Prints a timing split per variant and "N passed, N failed" last.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=${FERRY_E2E_WORK:-/tmp/ferry-e2e}
CACHE=${FERRY_GUEST_CACHE:-$HOME/.cache/ferry/guests}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/tmp/target-sys}
MUSL=x86_64-unknown-linux-musl
OVMF=${OVMF:-/usr/share/ovmf/OVMF.fd}
VARIANTS=("$@")
((${#VARIANTS[@]})) || VARIANTS=(bios uefi)
export QEMU_MEM=1024

say() { printf '== %s\n' "$*"; }
# shellcheck source=../lib/vm.sh
source "$ROOT/tests/lib/vm.sh"
# shellcheck source=../lib/appliance.sh
source "$ROOT/tests/lib/appliance.sh"
abort() { echo "FAIL setup: $*"; echo "0 passed, 1 failed"; exit 1; }

mkdir -p "$WORK"
find "$WORK" -mindepth 1 -maxdepth 1 ! -name image -exec rm -rf {} + 2>/dev/null
BIN=$CARGO_TARGET_DIR/debug
AGENT=$CARGO_TARGET_DIR/$MUSL/release/restore-agent
IMG=$WORK/image

say "guests: tests/guests/build-debian.sh (cached in $CACHE)"
t=$(now)
bash "$ROOT/tests/guests/build-debian.sh" >"$WORK/guests.log" 2>&1 || { tail -30 "$WORK/guests.log"; abort "build the Debian guests"; }
echo "guests ready: $(elapsed "$t") s"

if [[ -z ${FERRY_E2E_SKIP_BUILD:-} || ! -f $IMG/ferry-rescue.iso ]]; then
    say "build: static restore-agent, appliance, backup-agent, image-builder; the rescue image"
    t=$(now)
    (cd "$ROOT" && cargo build -q --release --target "$MUSL" -p restore-agent -p ferry-beacon -p backup-agent && cargo build -q --workspace) \
        >"$WORK/build.log" 2>&1 || { tail -30 "$WORK/build.log"; abort "cargo build"; }
    rm -rf "$IMG"
    "$BIN/image-builder" build --out "$IMG" --agent "$AGENT" --beacon "$CARGO_TARGET_DIR/$MUSL/release/beacon" >"$WORK/image.log" 2>&1 || { tail -30 "$WORK/image.log"; abort "image-builder build"; }
    echo "build: $(elapsed "$t") s"
fi

start_appliance "$WORK/appliance" "$BIN" || abort "start the appliance"
trap 'kill $SERVE_PID 2>/dev/null; stop_qemu' EXIT
APPLIANCE_READY=$(now)
"$BIN/image-builder" customize --iso "$IMG/ferry-rescue.iso" --out "$WORK/site.iso" \
    --appliance "$URL" --ca "$DATA/ca.pem" --token "$ENROLL" >/dev/null || abort "customize the ISO"
echo "appliance on 127.0.0.1:$PORT; rescue ISO stamped for $URL"

passed=0 failed=0
# json_time RFC3339 -> epoch seconds
epoch() { date -d "$1" +%s; }

# cold_backup SRC MAC: a copy of SRC, attached to a VM that boots the rescue ISO, is backed up by
# a backup job of that VM's agent (after a job naming its boot medium was refused); the VM powers
# off. Sets COLD_SNAPSHOT. The copy is compared with SRC afterwards: the job wrote nothing.
cold_backup() {
    local src=$1 mac=$2 id bad bjob tb
    local copy=$T/source.raw
    cp --sparse=always "$src" "$copy"
    id="agent-$(tr -d : <<<"$mac" | tr 'A-F' 'a-f')"
    tb=$(now)
    qemu -smp 2 -boot d -cdrom "$WORK/site.iso" -drive "file=$copy,format=raw,if=virtio" $(nic "$mac")
    approve_from_console "$id" "$BIN" || { stop_qemu; return 1; }
    echo "source VM: rescue boot -> approved $(elapsed "$tb") s"
    # The medium the image booted from is never a backup source.
    if bad=$("$BIN/appliance" jobs create --data "$DATA" --backup --agent "$id" --machine debian12-cold --disk sr0 2>&1); then
        echo "a backup job naming the boot medium sr0 was accepted: $bad"; stop_qemu; return 1
    fi
    echo "ok: a backup job naming the boot medium refused: $bad"
    bjob=$("$BIN/appliance" jobs create --data "$DATA" --backup --agent "$id" --machine debian12-cold \
        --disk auto --then poweroff) || { echo "jobs create --backup failed"; stop_qemu; return 1; }
    echo "backup job $bjob: --disk auto, then poweroff"
    if ! wait_exit 1200; then
        stop_qemu
        echo "the source VM did not power off within 1200 s; console tail:"; serial | tail -30
        return 1
    fi
    cp "$T/serial.log" "$T/cold-serial.log"
    "$BIN/appliance" jobs show --data "$DATA" --json "$bjob" >"$T/backup-job.json"
    if ! jq -e '.job.state == "succeeded"' "$T/backup-job.json" >/dev/null; then
        echo "backup job state: $(jq -c .job.state "$T/backup-job.json")"
        jq -r '.events[] | "\(.time) \(.phase) \(.level) \(.message)"' "$T/backup-job.json" | tail -20
        return 1
    fi
    COLD_SNAPSHOT=$(jq -r '.job.backup.snapshot' "$T/backup-job.json")
    local mode disks
    mode=$(jq -r '.consistency.mode' "$DATA/snapshots/$COLD_SNAPSHOT/manifest.json")
    disks=$(jq -r '[.disks[].name] | join(",")' "$DATA/snapshots/$COLD_SNAPSHOT/manifest.json")
    [[ $mode == offline ]] || { echo "snapshot $COLD_SNAPSHOT records consistency $mode, not offline"; return 1; }
    [[ $disks == vda ]] || { echo "snapshot $COLD_SNAPSHOT holds disks $disks, not vda (the source's disk, not the medium)"; return 1; }
    cmp -s "$src" "$copy" || { echo "the backup job changed the source disk"; return 1; }
    echo "ok: cold backup: snapshot $COLD_SNAPSHOT ($mode, disks $disks) in $(elapsed "$tb") s from the source VM's power-on; $(jq -r '[.events[] | select(.phase == "done")][0].message' "$T/backup-job.json" | cut -c1-200); the source disk is unchanged (cmp)"
}

run_variant() { # bios|uefi|cold
    local v=$1 mac firmware=() size
    T=$WORK/$v
    mkdir -p "$T"
    local guest=$v disk=sda
    case $v in
        bios) mac=52:54:00:e2:e0:01 ;;
        uefi) mac=52:54:00:e2:e0:02; firmware=(-bios "$OVMF") ;;
        cold) mac=52:54:00:e2:e0:03; guest=bios; disk=vda ;;
        *) echo "unknown variant $v"; return 1 ;;
    esac
    local src=$CACHE/debian12-$guest.raw
    [[ -f $src ]] || { echo "no $src"; return 1; }
    size=$(stat -c %s "$src")

    local t0 t1 snap job
    t0=$(now)
    if [[ $v == cold ]]; then
        cold_backup "$src" 52:54:00:e2:e0:13 || return 1
        snap=$COLD_SNAPSHOT
    else
        "$BIN/backup-agent" backup --appliance "$LOCAL_URL" --ca "$DATA/ca.pem" --token "$BACKUP" \
            --machine "debian12-$v" --disk "sda=$src" --json >"$T/backup.json" 2>"$T/backup.err" \
            || { cat "$T/backup.err"; echo "backup failed"; return 1; }
        snap=$(jq -r .snapshot "$T/backup.json")
        echo "backup of $src: snapshot $snap in $(elapsed "$t0") s ($(jq -c '{read: .bytes_read, uploaded: .bytes_uploaded}' "$T/backup.json" 2>/dev/null))"
    fi
    job=$("$BIN/appliance" jobs create --data "$DATA" --mac "$mac" --snapshot "$snap" --map "$disk=/dev/vda" \
        --grow --then poweroff) || { echo "jobs create failed"; return 1; }
    truncate -s $((size * 3 / 2)) "$T/target.raw"
    echo "job $job: snapshot onto a blank virtio disk of $((size * 3 / 2)) bytes (1.5x), --grow, then poweroff"

    t1=$(now)
    qemu "${firmware[@]}" -smp 2 -boot d -cdrom "$WORK/site.iso" -drive "file=$T/target.raw,format=raw,if=virtio" $(nic "$mac")
    local enrolled_at=
    wait_serial 'enrolled as agent' 300 && enrolled_at=$(elapsed "$t1")
    approve_from_console "agent-$(tr -d : <<<"$mac" | tr 'A-F' 'a-f')" "$BIN" || { stop_qemu; return 1; }
    if ! wait_exit 1800; then
        stop_qemu
        echo "the rescue VM did not power off within 1800 s; console tail:"; serial | tail -30
        return 1
    fi
    local rescue_wall
    rescue_wall=$(elapsed "$t1")
    cp "$T/serial.log" "$T/rescue-serial.log"
    "$BIN/appliance" jobs show --data "$DATA" --json "$job" >"$T/job.json"
    jq -r '.events[] | "\(.time) \(.phase) \(.level) \(.message)"' "$T/job.json" >"$T/events.txt"
    if ! jq -e '.job.state == "succeeded"' "$T/job.json" >/dev/null; then
        echo "job state: $(jq -c .job.state "$T/job.json")"; tail -30 "$T/events.txt"; return 1
    fi
    grep -E 'fixup|grow' "$T/events.txt" | cut -c1-220
    grep -q 'bootability: linux' "$T/events.txt" || { echo "no bootability summary event"; return 1; }
    grep -qE 'grow .*LV|grow .*partition' "$T/events.txt" || echo "note: no grow event"

    # The restored disk on the new hardware: virtio, the same firmware, no rescue image; a NIC on
    # user networking so the first-boot beacon the fix-up installed can reach the appliance.
    local t2 boot_wall
    T=$WORK/$v/boot
    mkdir -p "$T"
    t2=$(now)
    qemu "${firmware[@]}" -drive "file=$WORK/$v/target.raw,format=raw,if=virtio" $(nic "$mac")
    if ! wait_serial 'FERRY-GUEST-UP' 600; then
        stop_qemu
        echo "the restored guest printed no marker within 600 s; console tail:"; serial | tail -30
        return 1
    fi
    boot_wall=$(elapsed "$t2")
    local marker
    marker=$(sgrep -m1 -oE 'FERRY-GUEST-UP.*')
    echo "restored guest: $marker (after $boot_wall s)"
    wait_exit 120 || stop_qemu
    [[ $marker == *sums=ok* ]] || { echo "checksums differ"; return 1; }
    # The beacon is reported, not asserted: the test guest's marker service powers the guest off
    # as soon as its checksums pass, which may be before the network is online.
    grep -q 'beacon' "$T/../events.txt" && echo "fix-up installed the first-boot beacon"
    "$BIN/appliance" jobs show --data "$DATA" --json "$job" \
        | jq -r 'if .beacon.booted then "beacon: booted reported \(.beacon.seconds_after_finish) s after the restore finished, from \(.beacon.hostname)" else "beacon: not reported before the guest powered off" end' 2>/dev/null || true

    # Timing split from the job's events (agent clock, whole seconds) and wall clocks here.
    local first_restore done_t fix_first fix_last
    first_restore=$(jq -r '[.events[] | select(.phase == "plan")][0].time' "$T/../job.json")
    done_t=$(jq -r '[.events[] | select(.phase == "done")][0].time' "$T/../job.json")
    fix_first=$(jq -r '[.events[] | select(.phase == "fixup")][0].time' "$T/../job.json")
    fix_last=$(jq -r '[.events[] | select(.phase == "fixup")][-1].time' "$T/../job.json")
    local data_s fix_s
    data_s=$(($(epoch "$fix_first") - $(epoch "$first_restore")))
    fix_s=$(($(epoch "$fix_last") - $(epoch "$fix_first")))
    local total
    total=$(elapsed "$t0")
    printf 'METRIC %s: backup %s s | rescue boot -> enrolled %s s | data (plan..fix-up start) %s s | fix-up %s s | rescue VM total %s s | restored boot -> marker %s s | total (backup start -> marker) %s s\n' \
        "$v" "$(elapsed "$t0" "$t1")" "${enrolled_at:-?}" "$data_s" "$fix_s" "$rescue_wall" "$boot_wall" "$total" | tee -a "$WORK/metrics.txt"
    [[ -n $done_t ]] || true
    return 0
}

for v in "${VARIANTS[@]}"; do
    say "$v"
    if (run_variant "$v"); then
        echo "ok: $v"; passed=$((passed + 1))
    else
        echo "FAIL: $v"; failed=$((failed + 1))
    fi
done
echo "$passed passed, $failed failed"
((failed == 0))
