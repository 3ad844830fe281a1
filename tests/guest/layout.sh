#!/usr/bin/env bash
# In-guest layout tests (issue 4 "disk layout"): what needs a kernel with partition scanning and
# device-mapper, which the host tests do not have. Boots the rescue image's kernel and initramfs
# under QEMU (TCG only, never -enable-kvm) with a test layer appended to the initrd
# (rdinit=/ferry-test/guest.sh, so the agent is not PID 1 here: the unattended path is
# tests/system's) and blank virtio disks; the guest builds MBR+LVM, GPT and two-disk sources
# with the image's own tools, backs them up to a real appliance on 127.0.0.1 (the guest's
# 10.0.2.2), restores them with the image's restore-agent and checks the results. See
# tests/guest/layout-guest.sh for every check.
#
#   bash tests/guest/layout.sh
#
# Env: FERRY_KERNEL_DEB=FILE       the linux-image .deb (default: image-builder's cache ~/.cache/ferry)
#      FERRY_GUEST_WORK=DIR        work directory (default /tmp/ferry-guest-test; wiped at start)
#      CARGO_TARGET_DIR            (default /tmp/target-guest)
#      FERRY_GUEST_TIMEOUT=S       the whole guest run (default 1500)
#      FERRY_GUEST_SKIP_BUILD=1    reuse the binaries and image of the previous run
# Needs: qemu-system-x86 cpio python3 + image-builder's tools, the musl target.
# Last line of output: "N passed, N failed"; exit status non-zero if any failed.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=${FERRY_GUEST_WORK:-/tmp/ferry-guest-test}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/tmp/target-guest}
TIMEOUT=${FERRY_GUEST_TIMEOUT:-1500}
MUSL=x86_64-unknown-linux-musl
MIB=$((1024 * 1024))
START=$(date +%s.%N)

say() { printf '== %s\n' "$*"; }
now() { date +%s.%N; }
elapsed() { awk -v s="$1" -v e="${2:-$(now)}" 'BEGIN { printf "%.1f", e - s }'; }
abort() {
    echo "FAIL setup: $*"
    echo "0 passed, 1 failed"
    exit 1
}

# --- build ------------------------------------------------------------------------------------
if [[ -z "${FERRY_GUEST_SKIP_BUILD:-}" ]]; then
    rm -rf "$WORK"
else
    find "$WORK" -mindepth 1 -maxdepth 1 ! -name image ! -name lvm-test-path -exec rm -rf {} + 2>/dev/null
fi
mkdir -p "$WORK"
BIN=$CARGO_TARGET_DIR/debug
MUSL_BIN=$CARGO_TARGET_DIR/$MUSL/release
IMG=$WORK/image
if [[ -z "${FERRY_GUEST_SKIP_BUILD:-}" ]]; then
    say "build: restore-agent and backup-agent (static, $MUSL, release), appliance, image-builder"
    t=$(now)
    (cd "$ROOT" && cargo build -q --release --target "$MUSL" -p restore-agent -p ferry-beacon -p backup-agent) >"$WORK/build.log" 2>&1 \
        || { tail -30 "$WORK/build.log"; abort "cargo build (musl)"; }
    (cd "$ROOT" && cargo build -q --workspace) >>"$WORK/build.log" 2>&1 \
        || { tail -30 "$WORK/build.log"; abort "cargo build appliance/image-builder"; }
    # The LVM-snapshot capture test needs device-mapper, which the host lacks: it runs in here.
    (cd "$ROOT" && cargo test -q --no-run --release --target "$MUSL" -p ferry-capture --test lvm_host \
        --message-format=json) >"$WORK/lvm-test-build.json" 2>>"$WORK/build.log" \
        || { tail -30 "$WORK/build.log"; abort "cargo test --no-run lvm_host (musl)"; }
    python3 -c 'import json, sys
for line in open(sys.argv[1]):
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "lvm_host":
        print(m["executable"])' "$WORK/lvm-test-build.json" >"$WORK/lvm-test-path" || abort "lvm_host test binary path"
    echo "cargo build: $(elapsed "$t") s"
    t=$(now)
    "$BIN/image-builder" build --out "$IMG" --agent "$MUSL_BIN/restore-agent" ${FERRY_KERNEL_DEB:+--kernel-deb "$FERRY_KERNEL_DEB"} \
        >"$WORK/image-build.log" 2>&1 || { tail -30 "$WORK/image-build.log"; abort "image-builder build"; }
    echo "image-builder build: $(elapsed "$t") s"
fi
[[ -f $IMG/initramfs.img && -f $IMG/pxe/vmlinuz ]] || abort "no image in $IMG (run without FERRY_GUEST_SKIP_BUILD)"
echo "ISO $(stat -c %s "$IMG/ferry-rescue.iso") bytes, initramfs $(stat -c %s "$IMG/initramfs.img") bytes"

# --- the appliance ----------------------------------------------------------------------------
APP=$WORK/appliance
DATA=$APP/data
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$APP"
"$BIN/appliance" init --json --data "$DATA" >"$APP/init.json" || abort "appliance init"
BACKUP_TOKEN=$("$BIN/appliance" token create --role backup --all-machines --data "$DATA") || abort "token create backup"
RESTORE_TOKEN=$("$BIN/appliance" token create --role restore --data "$DATA") || abort "token create restore"
"$BIN/appliance" serve --data "$DATA" --listen "127.0.0.1:$PORT" >"$APP/serve.log" 2>&1 &
SERVE_PID=$!
QPID=
cleanup() {
    kill "$SERVE_PID" 2>/dev/null
    [[ -n $QPID ]] && kill "$QPID" 2>/dev/null
}
trap cleanup EXIT
for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
(exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null || abort "appliance serve did not listen on 127.0.0.1:$PORT"
echo "appliance on 127.0.0.1:$PORT (guest: https://10.0.2.2:$PORT)"

# --- the test layer: a second cpio after the image's initramfs --------------------------------
LAYER=$WORK/layer
mkdir -p "$LAYER/ferry-test"
install -m 0755 "$ROOT/tests/guest/layout-guest.sh" "$LAYER/ferry-test/guest.sh"
install -m 0755 "$MUSL_BIN/backup-agent" "$LAYER/ferry-test/backup-agent"
LVM_TEST=$(head -n 1 "$WORK/lvm-test-path" 2>/dev/null)
[[ -x $LVM_TEST ]] || abort "no lvm_host test binary (run without FERRY_GUEST_SKIP_BUILD)"
install -m 0755 "$LVM_TEST" "$LAYER/ferry-test/lvm_host"
install -m 0644 "$DATA/ca.pem" "$LAYER/ferry-test/ca.pem"
cat >"$LAYER/ferry-test/env" <<EOF
APPLIANCE=https://10.0.2.2:$PORT
BACKUP_TOKEN=$BACKUP_TOKEN
RESTORE_TOKEN=$RESTORE_TOKEN
EOF
(cd "$LAYER" && find ferry-test | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) >"$WORK/layer.cpio" || abort "cpio"
INITRD=$WORK/initrd.img
cp "$IMG/initramfs.img" "$INITRD"
# The kernel unpacks concatenated archives; the next one must start 4-byte aligned.
pad=$(((4 - $(stat -c %s "$INITRD") % 4) % 4))
head -c "$pad" /dev/zero >>"$INITRD"
cat "$WORK/layer.cpio" >>"$INITRD"

# --- disks: serial name, size in MiB, extra device options --------------------------------
DISKS=(
    "src-mbr 256" "mbr-same 256" "mbr-big 384"
    "src-gpt 160" "gpt-512 240" "gpt-4k 240 ,logical_block_size=4096,physical_block_size=4096"
    "small 64" "x0 48" "x1 32" "y0 48" "y1 32" "src-lv 416" "lv-copy 416"
)
QDISKS=()
fresh_disks() {
    QDISKS=()
    for d in "${DISKS[@]}"; do
        read -r name size opts <<<"$d"
        rm -f "$WORK/$name.img"
        truncate -s $((size * MIB)) "$WORK/$name.img"
        QDISKS+=(-drive "file=$WORK/$name.img,format=raw,if=none,id=$name,cache=unsafe"
            -device "virtio-blk-pci,drive=$name,serial=$name${opts:-}")
    done
}

# --- boot -------------------------------------------------------------------------------------
SERIAL=$WORK/serial.log
timed_out=
boot_guest() {
    fresh_disks
    say "boot: QEMU TCG, ${#DISKS[@]} virtio disks, timeout ${TIMEOUT}s; serial log $SERIAL"
    QSTART=$(now)
    qemu-system-x86_64 -accel tcg -cpu max -smp 2 -m 1024 -display none -no-reboot -monitor none \
        -serial "file:$SERIAL" -kernel "$IMG/pxe/vmlinuz" -initrd "$INITRD" \
        -append "console=ttyS0,115200 rdinit=/ferry-test/guest.sh loglevel=3 panic=-1" \
        -netdev user,id=n -device virtio-net-pci,netdev=n "${QDISKS[@]}" >"$WORK/qemu.out" 2>&1 &
    QPID=$!
    timed_out=
    local end=$(($(date +%s) + TIMEOUT))
    while kill -0 "$QPID" 2>/dev/null; do
        if (($(date +%s) >= end)); then
            timed_out=1
            kill "$QPID"
            break
        fi
        sleep 1
    done
    wait "$QPID" 2>/dev/null
    QPID=
    echo "guest ran $(elapsed "$QSTART") s"
}
boot_guest
# A kernel that panics before our script ran (seen under TCG on a loaded host: a timer fault in
# early init) says nothing about Ferry: boot once more, on fresh disks.
if grep -aq 'Kernel panic' "$SERIAL" && ! grep -aq '^GUEST-' "$SERIAL"; then
    echo "the guest kernel panicked before the test started ($(grep -a -m1 'RIP:' "$SERIAL" | tr -d '\r')): booting again"
    cp "$SERIAL" "$WORK/serial-panic.log"
    boot_guest
fi

# --- results ----------------------------------------------------------------------------------
# Without carriage returns and terminal colours.
clean() { tr -d '\r' <"$SERIAL" | sed 's/\x1b\[[0-9;]*m//g'; }
clean >"$WORK/console.txt"
say "guest console (checks and steps)"
grep -aE '^(GUEST-|== |   )' "$WORK/console.txt" | grep -avE '^GUEST-TIME' | sed 's/^/   /'
say "timings (guest uptime seconds per step)"
grep -aE '^GUEST-TIME ' "$WORK/console.txt" | awk '{ printf "   %-20s %6s s\n", $2, $3 }'
passed=$(grep -acE '^GUEST-TEST ok: ' "$WORK/console.txt")
failed=$(grep -acE '^GUEST-TEST FAIL: ' "$WORK/console.txt")
if ! grep -aq '^GUEST-TEST DONE' "$WORK/console.txt"; then
    failed=$((failed + 1))
    if [[ -n $timed_out ]]; then echo "FAIL: the guest did not finish within ${TIMEOUT}s"; else echo "FAIL: the guest stopped before GUEST-TEST DONE"; fi
    echo "   last console lines:"
    tail -n 30 "$WORK/console.txt" | sed 's/^/   | /'
fi
grep -aE '^GUEST-TEST FAIL: ' "$WORK/console.txt" | sed 's/^/failed: /'
echo "total $(elapsed "$START") s; work dir $WORK"
echo "$passed passed, $failed failed"
((failed == 0 && passed > 0))
