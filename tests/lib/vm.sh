# QEMU helpers shared by the VM test scripts (sourced). TCG only: never -enable-kvm here.
# A test sets T (its directory, holding serial.log) before calling these; QEMU_MEM (default 512)
# sets the guest's memory.
T=${T:-} QPID= QSTART=

now() { date +%s.%N; }
elapsed() { awk -v s="$1" -v e="${2:-$(now)}" 'BEGIN { printf "%.1f", e - s }'; }

# qemu ARGS...: start the VM (TCG, serial to $T/serial.log) in the background.
qemu() {
    : >"$T/serial.log"
    QSTART=$(now)
    qemu-system-x86_64 -accel tcg -m "${QEMU_MEM:-512}" -display none -no-reboot -monitor none \
        -serial "file:$T/serial.log" "$@" >"$T/qemu.out" 2>&1 &
    QPID=$!
    echo "$QPID" >"$T/qemu.pid"
    echo "qemu $*" >"$T/qemu.cmd"
}

alive() { kill -0 "$QPID" 2>/dev/null; }

stop_qemu() {
    [[ -n $QPID ]] || return 0
    kill "$QPID" 2>/dev/null
    wait "$QPID" 2>/dev/null
    rm -f "$T/qemu.pid"
    QPID=
}

# The serial log without carriage returns.
serial() { tr -d '\r' <"$T/serial.log" 2>/dev/null; }
# grep over the serial log (not through a pipe: an early-exiting grep must not make the writer's
# SIGPIPE a failure under pipefail).
sgrep() { grep -a "$@" < <(serial); }
has() { sgrep -qE -- "$1"; }

# wait_serial REGEX [TIMEOUT]: until the serial log matches (0), QEMU exits or the timeout (1).
wait_serial() {
    local end=$(($(date +%s) + ${2:-${BOOT_TIMEOUT:-120}}))
    while (($(date +%s) < end)); do
        has "$1" && return 0
        alive || { has "$1"; return; }
        sleep 0.5
    done
    return 1
}

# wait_exit TIMEOUT: until QEMU exits by itself (0) or the timeout (1).
wait_exit() {
    local end=$(($(date +%s) + $1))
    while (($(date +%s) < end)); do
        alive || { wait "$QPID" 2>/dev/null; rm -f "$T/qemu.pid"; QPID=; return 0; }
        sleep 0.5
    done
    return 1
}

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
nic() { echo "-netdev user,id=n -device virtio-net-pci,netdev=n,mac=$1"; }
