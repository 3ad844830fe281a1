#!/usr/bin/env bash
# QEMU smoke test of the rescue image's PID 1 (crates/ferry-init), TCG only (never -enable-kvm).
#
#   bash tests/init/run.sh            /init = restore-agent (its PID-1 hook calls ferry_init::run_pid1)
#   bash tests/init/run.sh --example  /init = ferry-init's examples/pid1-smoke.rs (network, then PowerOff;
#                                     no agent dependencies, so ferry-init boots while the rest is in flux)
#
# Builds the static agent for x86_64-unknown-linux-musl, builds the image with image-builder (prints
# "SKIPPED: image-builder not available yet" and exits 0 if image-builder does not build), then boots:
#   dhcp     ISO, virtio-net on QEMU user networking: init steps, virtio_net loaded by modalias,
#            DHCP lease 10.0.2.15, then power off (the example powers off by itself; restore-agent, with
#            no appliance stamped, fails with "no appliance configured" → the shell → `poweroff` typed)
#   static   kernel+initrd with ip=10.0.2.15::10.0.2.2:255.255.255.0::eth0:none nameserver=10.0.2.3
#   no-nic   ISO with -nic none: "no network: no network adapter found", the shell; types `poweroff`
#   no-link  virtio-net with its link set down (monitor set_link): "no network: no NIC has a link …
#            check the cable / the VM's network adapter", the shell; types `reboot`
# Each prints the time from QEMU start to "network up" (guest uptime and wall clock).
# Env: FERRY_KERNEL_DEB=FILE (skip the kernel fetch), FERRY_INIT_WORK=DIR, FERRY_BOOT_TIMEOUT=S,
#      CARGO_TARGET_DIR. Needs: qemu-system-x86, python3, musl-tools, image-builder's host tools.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
WORK=${FERRY_INIT_WORK:-$(mktemp -d /tmp/ferry-init-smoke.XXXXXX)}
TIMEOUT=${FERRY_BOOT_TIMEOUT:-300}
MUSL=x86_64-unknown-linux-musl
mkdir -p "$WORK"

echo "== build the static /init ($MUSL)"
if ! rustup target list --installed 2>/dev/null | grep -qx "$MUSL"; then
    echo "missing: rustup target add $MUSL (and apt-get install musl-tools)" >&2
    exit 1
fi
if [[ ${1:-} == --example ]]; then
    cargo build --release --target "$MUSL" -p ferry-init --example pid1-smoke
    AGENT=$TARGET/$MUSL/release/examples/pid1-smoke
else
    cargo build --release --target "$MUSL" -p restore-agent
    AGENT=$TARGET/$MUSL/release/restore-agent
fi

echo "== build image-builder"
if ! cargo build --release -p image-builder; then
    echo "SKIPPED: image-builder not available yet"
    exit 0
fi
"$TARGET/release/image-builder" build --out "$WORK/image" --agent "$AGENT" ${FERRY_KERNEL_DEB:+--kernel-deb "$FERRY_KERNEL_DEB"}
ISO=$WORK/image/ferry-rescue.iso
KERNEL=$WORK/image/pxe/vmlinuz
INITRD=$WORK/image/pxe/initrd.img
ARGS="console=ttyS0,115200 loglevel=4 panic=10"
QEMU=(qemu-system-x86_64 -m 512 -nographic -no-reboot)
NIC=(-netdev user,id=n -device virtio-net-pci,netdev=n)
COMMON_REJECT='panicked
Kernel panic
ferry ERROR init: the agent failed: the agent'
failed=0
boot() {
    local name=$1
    shift
    python3 tests/init/boot.py "$name" "$WORK/$name.log" "$TIMEOUT" -- "$@" || failed=1
}

echo "== boot: dhcp (ISO)"
EXPECT='step mount-proc: ok
step mount-dev: ok
step console: ok
step read-settings: ok: .*DHCP on every NIC with a link
step clock: ok
step load-modules: ok: .* virtio_net
step entropy: ok
init: .* steps in .* ms, all ok
init: agent running as pid
net: eth0 \(52:54:00:12:34:56\): link up
net: eth0: DHCP lease 10\.0\.2\.15/24 router 10\.0\.2\.2 dns 10\.0\.2\.3
net: default route via 10\.0\.2\.2 dev eth0
agent: network up: eth0 10\.0\.2\.15/24 via 10\.0\.2\.2; dns 10\.0\.2\.3
init: powering off now' REJECT="$COMMON_REJECT
FAILED" MARK='agent: network up' SEND='ferry-rescue# =>poweroff' \
    boot dhcp "${QEMU[@]}" -cdrom "$ISO" "${NIC[@]}"

echo "== boot: static ip= (kernel + initrd)"
EXPECT='step read-settings: ok: .*static 10\.0\.2\.15/24 on eth0 via 10\.0\.2\.2.* nameservers=10\.0\.2\.3
net: eth0: static address 10\.0\.2\.15/24
net: default route via 10\.0\.2\.2 dev eth0
agent: network up: eth0 10\.0\.2\.15/24 via 10\.0\.2\.2; dns 10\.0\.2\.3
init: powering off now' REJECT="$COMMON_REJECT
DHCP lease" MARK='agent: network up' SEND='ferry-rescue# =>poweroff' \
    boot static "${QEMU[@]}" -kernel "$KERNEL" -initrd "$INITRD" "${NIC[@]}" \
    -append "$ARGS ip=10.0.2.15::10.0.2.2:255.255.255.0::eth0:none nameserver=10.0.2.3"

echo "== boot: no NIC (ISO, -nic none): message, shell, poweroff typed in the shell"
EXPECT='init: agent running as pid
init: the agent failed: no network: no network adapter found
Ferry rescue: the restore agent stopped
init: powering off now' REJECT="$COMMON_REJECT" SEND='ferry-rescue# =>poweroff' \
    boot no-nic "${QEMU[@]}" -cdrom "$ISO" -nic none

echo "== boot: NIC without link (kernel + initrd, set_link off): message, shell, reboot typed in the shell"
EXPECT='net: eth0 \(52:54:00:12:34:56\): no link
init: the agent failed: no network: no NIC has a link \(checked eth0 for 10 s\); check the cable / the VM.s network adapter
Ferry rescue: the restore agent stopped
init: rebooting now' REJECT="$COMMON_REJECT" SEND='ferry-rescue# =>reboot' \
    MONITOR="$WORK/monitor.sock" MONITOR_CMDS='set_link n off
cont' \
    boot no-link "${QEMU[@]}" -S -monitor "unix:$WORK/monitor.sock,server,nowait" -kernel "$KERNEL" -initrd "$INITRD" \
    "${NIC[@]}" -append "$ARGS"

if [[ $failed != 0 ]]; then
    echo "FAIL: see the logs in $WORK"
    exit 1
fi
echo "PASS: all boots; logs in $WORK"
