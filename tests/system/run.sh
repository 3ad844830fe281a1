#!/usr/bin/env bash
# System tests of the rescue image (issue "The rescue image"): the real static restore-agent as
# PID 1 of the real image, booted under QEMU (TCG only, never -enable-kvm, -m 512), talking to a
# real appliance on this host (127.0.0.1:PORT, which the guest reaches as 10.0.2.2:PORT through
# QEMU user networking). Nothing else is contacted.
#
#   bash tests/system/run.sh [REGEX]      run every test (or those whose name matches REGEX)
#
# Tests (each its own case, with timings):
#   enroll-bios-cd      customized ISO as a CD under SeaBIOS          -> agent in `appliance agents --json`
#   enroll-uefi-cd      customized ISO as a CD under OVMF             -> enrolled
#   enroll-bios-disk    customized ISO as a virtio hard disk (SeaBIOS)-> enrolled
#   enroll-pxe          iPXE over user-net TFTP, customized initrd     -> enrolled
#   unattended-restore  job by MAC before boot, ISO + blank virtio disk, approved by the code on its
#                       console, --then poweroff: QEMU exits
#                       by itself, disk == source (cmp), `jobs show` succeeded with events
#   static-ip           kernel+initrd with ip=10.0.2.15::10.0.2.2:255.255.255.0::eth0:none -> enrolled
#   bad-ca              initrd stamped with another appliance's CA: console message, not enrolled, disk untouched
#   bad-token           ferry.token=<unknown>: console message (401), not enrolled, disk untouched
#   no-nic              -nic none: "no network adapter found", disk untouched
#   unreachable         appliance port nothing listens on, ferry.retry_window=20s: gives up with a message
#   missing-disk        job maps onto /dev/vdb that does not exist: message, job failed + error event, disk untouched
#   small-disk          job maps onto a 32 MiB /dev/vda for a 64 MiB disk: message, failed + event, disk untouched
#   firmware            QEMU's e100 (needs microcode) and tulip (no driver) NICs beside virtio: the
#                       default image loads the microcode; one built with --firmware none names the file
#                       and firmware-intel-misc on the console and in the inventory; tulip reported driverless
#   impostor            an attacker's VM with the site image and the victim's MAC gets no job and no data
#                       (unapproved); the victim, approved by its console code, restores `auto` onto its
#                       blank disk and leaves its data disk (wiped table, ext4 at 1 MiB) untouched
#
# Env: FERRY_KERNEL_DEB=FILE     the linux-image .deb (default: image-builder's cache ~/.cache/ferry)
#      FERRY_SYS_WORK=DIR        work directory (default /tmp/ferry-system-test; wiped at start)
#      CARGO_TARGET_DIR          (default /tmp/target-sys)
#      FERRY_SYS_JOBS=N          boots at once (default 2)
#      FERRY_BOOT_TIMEOUT=S      per boot until enrolled / the message (default 120)
#      FERRY_SYS_SKIP_BUILD=1    reuse the binaries and image of the previous run in the work dir
# Needs: qemu-system-x86 ovmf ipxe-qemu gdisk jq python3 + image-builder's tools, musl target.
# Last line of output: "N passed, N failed"; exit status non-zero if any failed.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=${FERRY_SYS_WORK:-/tmp/ferry-system-test}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/tmp/target-sys}
JOBS=${FERRY_SYS_JOBS:-2}
BOOT_TIMEOUT=${FERRY_BOOT_TIMEOUT:-120}
FILTER=${1:-.}
MUSL=x86_64-unknown-linux-musl
OVMF=${OVMF:-/usr/share/ovmf/OVMF.fd}
MIB=$((1024 * 1024))
SUITE_START=$(date +%s.%N)

say() { printf '== %s\n' "$*"; }
# shellcheck source=../lib/vm.sh
source "$ROOT/tests/lib/vm.sh"
# shellcheck source=../lib/appliance.sh
source "$ROOT/tests/lib/appliance.sh"
# shellcheck source=../lib/runner.sh
source "$ROOT/tests/lib/runner.sh"

# --- build (once per run) ---------------------------------------------------------------------
if [[ -z "${FERRY_SYS_SKIP_BUILD:-}" ]]; then
    rm -rf "$WORK"
else # keep only the image
    find "$WORK" -mindepth 1 -maxdepth 1 ! -name image -exec rm -rf {} + 2>/dev/null
fi
mkdir -p "$WORK"
BIN=$CARGO_TARGET_DIR/debug
AGENT=$CARGO_TARGET_DIR/$MUSL/release/restore-agent
IMG=$WORK/image
if [[ -z "${FERRY_SYS_SKIP_BUILD:-}" ]]; then
    say "build: restore-agent (static, $MUSL, release), appliance, backup-agent, image-builder"
    t=$(now)
    (cd "$ROOT" && cargo build -q --release --target "$MUSL" -p restore-agent -p ferry-beacon -p backup-agent) >"$WORK/build.log" 2>&1 \
        || { tail -30 "$WORK/build.log"; abort_build "cargo build restore-agent"; }
    (cd "$ROOT" && cargo build -q --workspace) >>"$WORK/build.log" 2>&1 \
        || { tail -30 "$WORK/build.log"; abort_build "cargo build appliance/backup-agent/image-builder"; }
    echo "cargo build: $(elapsed "$t") s"
    t=$(now)
    "$BIN/image-builder" build --out "$IMG" --agent "$AGENT" ${FERRY_KERNEL_DEB:+--kernel-deb "$FERRY_KERNEL_DEB"} \
        >"$WORK/image-build.log" 2>&1 || { tail -30 "$WORK/image-build.log"; abort_build "image-builder build"; }
    echo "image-builder build: $(elapsed "$t") s"
    "$BIN/image-builder" build --out "$IMG/nofw" --firmware none --agent "$AGENT" ${FERRY_KERNEL_DEB:+--kernel-deb "$FERRY_KERNEL_DEB"} \
        >"$WORK/image-build-nofw.log" 2>&1 || { tail -30 "$WORK/image-build-nofw.log"; abort_build "image-builder build --firmware none"; }
fi
ISO=$IMG/ferry-rescue.iso
[[ -f $ISO ]] || abort_build "no $ISO (run without FERRY_SYS_SKIP_BUILD)"
ISO_SIZE=$(stat -c %s "$ISO")
AGENT_SIZE=$(stat -c %s "$AGENT")
STRIPPED_SIZE=$(strip -o "$WORK/restore-agent.stripped" "$AGENT" 2>/dev/null && stat -c %s "$WORK/restore-agent.stripped" || echo "?")
SIZES="ISO $ISO_SIZE bytes ($(awk -v b="$ISO_SIZE" 'BEGIN { printf "%.1f", b / 1048576 }') MiB); initrd $(stat -c %s "$IMG/pxe/initrd.img") bytes; kernel $(stat -c %s "$IMG/pxe/vmlinuz") bytes; static restore-agent $AGENT_SIZE bytes (stripped: $STRIPPED_SIZE)"
echo "$SIZES"

# --- the appliance ----------------------------------------------------------------------------
APP=$WORK/appliance
DATA=$APP/data
PORT=$(free_port)
DEAD_PORT=$(free_port) # nothing listens there
mkdir -p "$APP"
"$BIN/appliance" init --json --data "$DATA" >"$APP/init.json" || abort_build "appliance init"
"$BIN/appliance" init --json --data "$APP/other" >/dev/null || abort_build "appliance init (other CA)"
token() { "$BIN/appliance" token create --data "$DATA" --role "$@"; }
ENROLL=$(token enroll) || abort_build "token create --role enroll"
BACKUP=$(token backup --machine sys-src) || abort_build "token create --role backup"
"$BIN/appliance" serve --data "$DATA" --listen "127.0.0.1:$PORT" >"$APP/serve.log" 2>&1 &
SERVE_PID=$!
cleanup() {
    kill "$SERVE_PID" 2>/dev/null
    local f
    for f in "$WORK"/*/qemu.pid; do [[ -f $f ]] && kill "$(cat "$f")" 2>/dev/null; done
}
trap cleanup EXIT
for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
(exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null || abort_build "appliance serve did not listen on 127.0.0.1:$PORT"
URL=https://10.0.2.2:$PORT
echo "appliance on 127.0.0.1:$PORT (guest: $URL); data $DATA"

# Stamped artifacts: ISO and PXE initrd with the site settings; an initrd with another CA.
SITE=(--appliance "$URL" --ca "$DATA/ca.pem" --token "$ENROLL")
"$BIN/image-builder" customize --iso "$ISO" --out "$WORK/site.iso" "${SITE[@]}" >/dev/null || abort_build "customize --iso"
"$BIN/image-builder" customize --iso "$IMG/nofw/ferry-rescue.iso" --out "$WORK/site-nofw.iso" "${SITE[@]}" >/dev/null \
    || abort_build "customize --iso (no firmware)"
mkdir -p "$WORK/tftp"
cp "$IMG/pxe/vmlinuz" "$IMG/pxe/boot.ipxe" "$WORK/tftp/"
"$BIN/image-builder" customize --initrd "$IMG/pxe/initrd.img" --out "$WORK/tftp/initrd.img" "${SITE[@]}" >/dev/null \
    || abort_build "customize --initrd"
"$BIN/image-builder" customize --initrd "$IMG/pxe/initrd.img" --out "$WORK/initrd-other-ca.img" \
    --appliance "$URL" --ca "$APP/other/ca.pem" --token "$ENROLL" >/dev/null || abort_build "customize --initrd (other CA)"
KERNEL=$WORK/tftp/vmlinuz
INITRD=$WORK/tftp/initrd.img
BASE_APPEND="console=ttyS0,115200 loglevel=4 panic=10"

# --- helpers used inside a test (each test runs in its own subshell and directory $T) ----------
T= QPID= QSTART=

agents_json() { "$BIN/appliance" agents --json --data "$DATA"; }
enrolled() { agents_json | jq -e --arg id "$1" 'any(.[]; .agent == $id)' >/dev/null 2>&1; }

# wait_enrolled AGENT-ID [TIMEOUT]: poll `appliance agents --json` until the agent is listed.
wait_enrolled() {
    local end=$(($(date +%s) + ${2:-$BOOT_TIMEOUT}))
    while (($(date +%s) < end)); do
        enrolled "$1" && return 0
        alive || { enrolled "$1"; return; }
        sleep 1
    done
    return 1
}

agent_id() { echo "agent-$(tr -d : <<<"$1" | tr 'A-F' 'a-f')"; }


# Record a metric line (also printed in the summary).
metric() { printf '%-18s %s\n' "$NAME" "$*" | tee -a "$WORK/metrics.txt"; }

# The guest uptime (kernel-style "[  12.345678]") on the first line matching REGEX.
uptime_of() {
    local line
    line=$(sgrep -E -m1 -- "$1") || return 1
    sed -nE 's/^.*\[ *([0-9]+\.[0-9]+)\].*$/\1/p' <<<"$line" | head -1
}

# The agent's own lines carry wall-clock RFC 3339 times, PID 1's the uptime. The "step clock" line
# has both, so a guest uptime for an agent line is that line's uptime + the seconds between the two
# clock readings (whole seconds: ±1 s).
guest_uptime_of() { # REGEX-of-an-agent-line
    local line clk cu ct lt
    line=$(sgrep -E -m1 -- "$1") || return 1
    lt=$(grep -oE '^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:]+Z' <<<"$line") || { uptime_of "$1"; return; }
    clk=$(sgrep -E -m1 'step clock: ok:') || return 1
    cu=$(sed -nE 's/^\[ *([0-9]+\.[0-9]+)\].*/\1/p' <<<"$clk")
    ct=$(grep -oE '[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:]+Z' <<<"$clk" | tail -1) || return 1
    awk -v cu="$cu" -v d="$(($(date -d "$lt" +%s) - $(date -d "$ct" +%s)))" 'BEGIN { printf "~%.0f", cu + d }'
}

# Timings after an enrollment: wall clock since QEMU start, guest uptime.
enroll_timings() {
    local wall=$1 up net
    up=$(guest_uptime_of 'enrolled as agent' || true)
    net=$(uptime_of 'network up' || true)
    metric "QEMU start -> enrolled: ${wall} s wall${up:+, guest uptime ${up} s}${net:+ (network up at uptime ${net} s)}"
    local rss
    rss=$(sgrep -oiE '(peak (rss|memory)|maxrss|VmHWM)[^,;]*' | tail -1 || true)
    [[ -n $rss ]] && metric "restore-agent $rss"
    return 0
}

# A disk image with recognizable, non-blank data in the middle (first and last MiB zero), and a
# pristine copy to compare with afterwards.
pattern_disk() { # PATH SIZE_MIB
    truncate -s "$(($2 * MIB))" "$1"
    head -c $((4 * MIB)) /dev/urandom | dd of="$1" bs=1M seek=$(($2 / 2 - 2)) conv=notrunc status=none
    cp --sparse=always "$1" "$1.orig"
}
untouched() { cmp "$1" "$1.orig" || fail "the disk $1 was written"; echo "disk untouched (cmp)"; }

# job_json ID: `appliance jobs show ID --json`.
job_json() { "$BIN/appliance" jobs show --json --data "$DATA" "$1"; }

# A 64 MiB source disk with a GPT and random data, backed up once (shared by the job tests; made
# before the tests start).
SNAPSHOT=
snapshot() {
    [[ -n $SNAPSHOT ]] && { echo "$SNAPSHOT"; return; }
    local src=$WORK/src.img
    if [[ ! -f $WORK/snapshot.id ]]; then
        truncate -s $((64 * MIB)) "$src"
        sgdisk -q -o -n 1:2048:+24M -t 1:8300 -c 1:root -n 2:0:0 -t 2:8200 -c 2:swap "$src" >/dev/null
        head -c $((8 * MIB)) /dev/urandom | dd of="$src" bs=1M seek=2 conv=notrunc status=none
        head -c $((3 * MIB)) /dev/urandom | dd of="$src" bs=1M seek=40 conv=notrunc status=none
        "$BIN/backup-agent" backup --json --appliance "https://127.0.0.1:$PORT" --ca "$DATA/ca.pem" \
            --token "$BACKUP" --machine sys-src --disk "disk0=$src" >"$WORK/backup.json" 2>"$WORK/backup.err" \
            || { cat "$WORK/backup.err"; return 1; }
        jq -r .snapshot "$WORK/backup.json" >"$WORK/snapshot.id"
    fi
    SNAPSHOT=$(cat "$WORK/snapshot.id")
    echo "$SNAPSHOT"
}

create_job() { # ARGS... -> job id
    "$BIN/appliance" jobs create --json --data "$DATA" "$@" | jq -r .id
}

# --- the tests --------------------------------------------------------------------------------

# enroll_boot MAC QEMU-ARGS...: boot, wait until `appliance agents --json` lists the agent. Adds a
# virtio NIC with MAC on user networking unless the arguments have their own -netdev.
enroll_boot() {
    local mac=$1
    shift
    local id
    id=$(agent_id "$mac")
    enrolled "$id" && fail "$id is enrolled before the boot"
    if [[ " $* " == *" -netdev "* ]]; then qemu "$@"; else qemu "$@" $(nic "$mac"); fi
    wait_enrolled "$id" || fail "$id did not enroll within ${BOOT_TIMEOUT}s (appliance agents --json)"
    local wall
    wall=$(elapsed "$QSTART")
    echo "$id in appliance agents --json after $wall s"
    # The console says so too (give it a moment to flush the line).
    wait_serial 'enrolled as agent '"$id" 10 || fail "the console does not say 'enrolled as agent $id'"
    stop_qemu
    enroll_timings "$wall"
    agents_json | jq -e --arg id "$id" --arg mac "$(tr 'A-F' 'a-f' <<<"$mac")" \
        'any(.[]; .agent == $id and any(.inventory.nics[]; .mac == $mac))' >/dev/null \
        || fail "agents --json: $id lacks its NIC $mac in the inventory"
}

test_enroll-bios-cd() { enroll_boot 52:54:00:12:34:01 -cdrom "$WORK/site.iso"; }
test_enroll-uefi-cd() {
    enroll_boot 52:54:00:12:34:02 -bios "$OVMF" -cdrom "$WORK/site.iso"
    agents_json | jq -e '.[] | select(.agent == "agent-525400123402") | .inventory.firmware == "uefi"' >/dev/null \
        || fail "agents --json: firmware is not uefi under OVMF"
}
test_enroll-bios-disk() {
    enroll_boot 52:54:00:12:34:03 -drive "file=$WORK/site.iso,format=raw,if=virtio,snapshot=on"
}
test_enroll-pxe() {
    enroll_boot 52:54:00:12:34:04 -boot n -netdev "user,id=n,tftp=$WORK/tftp,bootfile=boot.ipxe" \
        -device virtio-net-pci,netdev=n,mac=52:54:00:12:34:04
}

test_static-ip() {
    local mac=52:54:00:12:34:05
    enroll_boot "$mac" -kernel "$KERNEL" -initrd "$INITRD" \
        -append "$BASE_APPEND ip=10.0.2.15::10.0.2.2:255.255.255.0::eth0:none nameserver=10.0.2.3"
    has 'static address 10\.0\.2\.15' || fail "the console does not show the static address 10.0.2.15"
    has 'DHCP lease' && fail "DHCP was used despite ip=...:none"
    echo "static address 10.0.2.15/24 via 10.0.2.2 (no DHCP)"
}

test_unattended-restore() {
    local mac=52:54:00:12:34:56 snap job
    snap=$(snapshot) || fail "backup of the source image"
    job=$(create_job --mac "$mac" --snapshot "$snap" --map disk0=/dev/vda --then poweroff) || fail "jobs create"
    [[ -n $job && $job != null ]] || fail "jobs create printed no id"
    echo "snapshot $snap, job $job (by MAC $mac, before boot)"
    truncate -s $((64 * MIB)) "$T/blank.img"
    qemu -boot d -cdrom "$WORK/site.iso" -drive "file=$T/blank.img,format=raw,if=virtio" $(nic "$mac")
    local ewall=
    wait_serial 'enrolled as agent agent-525400123456' && ewall=$(elapsed "$QSTART")
    approve_from_console agent-525400123456 "$BIN" || fail "approval"
    wait_exit 300 || { stop_qemu; fail "QEMU did not power off by itself within 300 s"; }
    local wall
    wall=$(elapsed "$QSTART")
    echo "QEMU exited by itself after $wall s"
    local en up
    en=$(uptime_of 'network up' || true)
    has 'enrolled as agent agent-525400123456' || fail "no 'enrolled' line on the console"
    has 'powering off' || fail "the console does not say it powers off"
    cmp "$WORK/src.img" "$T/blank.img" || fail "the restored disk differs from the source"
    echo "restored disk is byte-identical to the source (cmp)"
    job_json "$job" >"$T/job.json" || fail "jobs show $job"
    jq -e '.job.state == "succeeded"' "$T/job.json" >/dev/null || fail "job state: $(jq -c .job.state "$T/job.json")"
    jq -e '(.events | length) >= 2 and .events[0].phase == "plan" and .events[-1].phase == "done"' "$T/job.json" >/dev/null \
        || fail "job events: $(jq -c '[.events[].phase]' "$T/job.json")"
    jq -e '.job.resolved[0].target == "/dev/vda"' "$T/job.json" >/dev/null || fail "resolved: $(jq -c .job.resolved "$T/job.json")"
    echo "jobs show: succeeded, $(jq '.events | length' "$T/job.json") events ($(jq -r '[.events[].phase] | unique | join(",")' "$T/job.json"))"
    up=$(uptime_of 'powering off now' || true)
    metric "QEMU start -> powered off after restore: ${wall} s wall${up:+, guest uptime ${up} s}${en:+ (network up at ${en} s)}"
    local rate
    rate=$(jq -r '.events[-1].rate // empty' "$T/job.json")
    [[ -n $rate ]] && metric "restore rate reported: $(awk -v r="$rate" 'BEGIN { printf "%.1f MB/s", r / 1e6 }')"
    agents_json | jq -e --arg job "$job" '.[] | select(.agent == "agent-525400123456") | .state == "succeeded" and .job == $job' >/dev/null \
        || fail "agents --json: agent-525400123456 is not 'succeeded' with $job"
    [[ -n $ewall ]] && enroll_timings "$ewall"
    return 0
}

# A failure boot: kernel+initrd (fast) with extra kernel arguments, a disk that must stay untouched.
# fail_boot MAC INITRD APPEND EXPECT-REGEX [TIMEOUT] [QEMU-ARGS...]
fail_boot() {
    local mac=$1 initrd=$2 append=$3 expect=$4 timeout=${5:-$BOOT_TIMEOUT}
    shift 5
    pattern_disk "$T/disk.img" 64
    qemu -kernel "$KERNEL" -initrd "$initrd" -append "$BASE_APPEND $append" \
        -drive "file=$T/disk.img,format=raw,if=virtio" "$@"
    wait_serial "$expect" "$timeout" || { stop_qemu; fail "no console message matching /$expect/ within ${timeout}s"; }
    echo "console after $(elapsed "$QSTART") s: $(sgrep -E -m1 -- "$expect" | cut -c1-300)"
    # The operator is told the agent stopped (emergency shell banner), unless the boot
    # retries on its own; give it a few seconds.
    if wait_serial 'the restore agent stopped' 20; then echo "banner: Ferry rescue: the restore agent stopped"; fi
    stop_qemu
    untouched "$T/disk.img"
}

test_bad-ca() {
    local mac=52:54:00:12:34:61
    fail_boot "$mac" "$WORK/initrd-other-ca.img" "" 'certificate the pinned CA does not vouch for' "$BOOT_TIMEOUT" $(nic "$mac")
    enrolled "$(agent_id "$mac")" && fail "enrolled despite the wrong CA"
    echo "not enrolled"
}

test_bad-token() {
    local mac=52:54:00:12:34:62
    fail_boot "$mac" "$INITRD" "ferry.token=ferry-not-a-token-0000" 'refused .*HTTP 401' "$BOOT_TIMEOUT" $(nic "$mac")
    enrolled "$(agent_id "$mac")" && fail "enrolled with a bad token"
    echo "not enrolled"
}

test_no-nic() {
    fail_boot - "$INITRD" "" 'no network: no network adapter found' "$BOOT_TIMEOUT" -nic none
}

test_unreachable() {
    local mac=52:54:00:12:34:63
    fail_boot "$mac" "$INITRD" "ferry.appliance=https://10.0.2.2:$DEAD_PORT ferry.retry_window=20s" \
        'cannot reach the appliance.*gave up after retrying' "$BOOT_TIMEOUT" $(nic "$mac")
    local a b
    a=$(uptime_of 'network up' || true)
    b=$(uptime_of 'cannot reach the appliance' || true)
    [[ -n $a && -n $b ]] && metric "gave up $(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.1f", b - a }') s after the network came up (window 20 s)"
    return 0
}

# bad_job MAC DISK-MiB MAP EXPECT: a job by MAC whose mapping cannot be resolved on this machine.
bad_job() {
    local mac=$1 size=$2 map=$3 expect=$4 snap job
    snap=$(snapshot) || fail "backup of the source image"
    job=$(create_job --mac "$mac" --snapshot "$snap" --map "$map" --then poweroff) || fail "jobs create"
    echo "job $job: --map $map onto a machine with one ${size} MiB disk /dev/vda"
    pattern_disk "$T/disk.img" "$size"
    qemu -kernel "$KERNEL" -initrd "$INITRD" -append "$BASE_APPEND" -drive "file=$T/disk.img,format=raw,if=virtio" $(nic "$mac")
    approve_from_console "$(agent_id "$mac")" "$BIN" || fail "approval"
    wait_serial "$expect" || { stop_qemu; fail "no console message matching /$expect/ within ${BOOT_TIMEOUT}s"; }
    echo "console after $(elapsed "$QSTART") s: $(sgrep -E -m1 -- "$expect" | cut -c1-300)"
    sleep 2
    stop_qemu
    untouched "$T/disk.img"
    job_json "$job" >"$T/job.json" || fail "jobs show $job"
    jq -e '.job.state | type == "object" and has("failed")' "$T/job.json" >/dev/null \
        || fail "job state: $(jq -c .job.state "$T/job.json") (want failed)"
    jq -e --arg re "$expect" '.job.state.failed.reason | test($re)' "$T/job.json" >/dev/null \
        || fail "failure reason: $(jq -c .job.state "$T/job.json")"
    jq -e --arg re "$expect" 'any(.events[]; .level == "error" and (.message | test($re)))' "$T/job.json" >/dev/null \
        || fail "no error event matching /$expect/: $(jq -c '.events' "$T/job.json")"
    echo "jobs show: failed: $(jq -r .job.state.failed.reason "$T/job.json" | cut -c1-200); error event present"
}

# impostor: the site image is no secret (the enroll token is stamped in clear), so an attacker
# boots it claiming the victim's MAC while the victim's job waits. Then the victim boots with
# its data disk (partition table wiped, ext4 superblock at 1 MiB and data intact: what the old
# two-MiB check called blank) and a blank disk; the job maps `auto`.
impostor_phase() { # MAC JOB: in its own directory and QEMU, the attacker's machine
    local mac=$1 job=$2 T=$T/impostor QPID= QSTART=
    mkdir -p "$T"
    pattern_disk "$T/disk.img" 64
    qemu -kernel "$KERNEL" -initrd "$INITRD" -append "$BASE_APPEND" -drive "file=$T/disk.img,format=raw,if=virtio" $(nic "$mac")
    wait_serial "enrolled as agent $(agent_id "$mac") \\(code" || { stop_qemu; fail "the impostor did not enroll"; }
    wait_serial 'waiting for the operator to approve' 30 || { stop_qemu; fail "the impostor's console does not say it waits for approval"; }
    sleep 20 # the long polls of an unapproved agent return nothing
    has "job $job" && { stop_qemu; fail "the impostor was shown job $job"; }
    stop_qemu
    untouched "$T/disk.img"
    job_json "$job" | jq -e '.job.state == "pending" and .job.agent == null' >/dev/null \
        || fail "the impostor's enrollment changed the job: $(job_json "$job" | jq -c '.job | {state, agent}')"
    echo "impostor: enrolled as $(agent_id "$mac") with the victim's MAC, unapproved, given nothing in 20 s, job still pending and unbound"
}

test_impostor() {
    local mac=52:54:00:12:34:66 snap job id
    id=$(agent_id "$mac")
    snap=$(snapshot) || fail "backup of the source image"
    job=$(create_job --mac "$mac" --snapshot "$snap" --map disk0=auto --then poweroff) || fail "jobs create"
    echo "job $job: --map disk0=auto for MAC $mac, before boot"
    impostor_phase "$mac" "$job"
    pattern_disk "$T/data.img" 64
    printf '\x53\xef' | dd of="$T/data.img" bs=1 seek=$((MIB + 1080)) conv=notrunc status=none
    cp --sparse=always "$T/data.img" "$T/data.img.orig"
    truncate -s $((64 * MIB)) "$T/blank.img"
    qemu -boot d -cdrom "$WORK/site.iso" -drive "file=$T/data.img,format=raw,if=virtio" \
        -drive "file=$T/blank.img,format=raw,if=virtio" $(nic "$mac")
    approve_from_console "$id" "$BIN" || fail "approval"
    wait_exit 300 || { stop_qemu; fail "QEMU did not power off by itself within 300 s"; }
    has 'disk /dev/vda: .*holds an ext2/3/4 filesystem at offset 1 MiB' || fail "the victim's console does not show its data disk as holding data"
    untouched "$T/data.img"
    cmp "$WORK/src.img" "$T/blank.img" || fail "the blank disk /dev/vdb does not hold the source"
    echo "victim: the data disk /dev/vda untouched, the snapshot restored onto the blank /dev/vdb (cmp)"
    job_json "$job" >"$T/job.json" || fail "jobs show $job"
    jq -e --arg id "$id" '.job.state == "succeeded" and .job.agent == $id and .job.resolved[0].target == "/dev/vdb"' "$T/job.json" >/dev/null \
        || fail "job: $(jq -c '.job | {state, agent, resolved}' "$T/job.json")"
}

# firmware: a VM with, besides its virtio NIC, QEMU's Intel 82559ER (e100 loads microcode
# e100/d101s_ucode.bin when the link goes up) and a DEC 21143 (tulip: no driver in the image).
# The default image (--firmware common) carries the microcode; one built with --firmware none
# does not, and its agent names the file and the package on the console and in its inventory.
fw_vm() { # ISO VIRTIO-MAC E100-MAC
    qemu -boot d -cdrom "$1" $(nic "$2") -device "i82559er,mac=$3" -device tulip,mac=52:54:00:12:34:69
}
FW_NODRIVER='warning: network controller [0-9a-f:.]+ \(1011:0019\) has no driver in this image'
FW_MISSING="warning: network controller [0-9a-f:.]+: e100 could not load its firmware e100/d101s_ucode.bin: the image lacks it; it is in Debian's firmware-intel-misc package"
# The agent's id is its first NIC's MAC, in the kernel's order: read it from the console.
fw_enrolled() {
    wait_serial 'enrolled as agent agent-[0-9a-f]+' || return 1
    sgrep -E -m1 -o 'enrolled as agent agent-[0-9a-f]+' | awk '{print $4}'
}
test_firmware() {
    local id
    fw_vm "$WORK/site.iso" 52:54:00:12:34:67 52:54:00:12:34:68
    id=$(fw_enrolled) || fail "not enrolled (default image)"
    wait_serial "$FW_NODRIVER" 10 || fail "no console warning for the driverless tulip NIC"
    echo "default image: $id: $(sgrep -E -m1 -o -- "$FW_NODRIVER")"
    has 'could not load its firmware' && fail "a firmware warning with the default image: $(sgrep -m1 'could not load its firmware')"
    has 'nic eth[0-9]: 52:54:00:12:34:68, e100' || fail "the e100 NIC is not listed"
    echo "default image: e100 up with its microcode (no firmware warning)"
    stop_qemu
    mv "$T/serial.log" "$T/serial-common.log"
    fw_vm "$WORK/site-nofw.iso" 52:54:00:12:34:6a 52:54:00:12:34:6b
    wait_serial "$FW_MISSING" || fail "no console warning naming e100/d101s_ucode.bin and firmware-intel-misc (image built with --firmware none)"
    echo "--firmware none: $(sgrep -E -m1 -o -- "$FW_MISSING")"
    id=$(fw_enrolled) || fail "not enrolled (no-firmware image)"
    sleep 1
    stop_qemu
    agents_json | jq -e --arg id "$id" '.[] | select(.agent == $id) | .inventory.problems
        | any(.[]; .firmware == "e100/d101s_ucode.bin" and .package == "firmware-intel-misc" and .driver == "e100")
          and any(.[]; .ids == "1011:0019" and .class == "network" and .driver == null)' >/dev/null \
        || fail "inventory problems of $id: $(agents_json | jq -c --arg id "$id" '.[] | select(.agent == $id) | .inventory.problems')"
    echo "appliance agents --json: $id lists the e100 firmware (firmware-intel-misc) and the driverless 1011:0019"
}

test_missing-disk() { bad_job 52:54:00:12:34:64 64 disk0=/dev/vdb 'target /dev/vdb .*does not exist'; }
test_small-disk() { bad_job 52:54:00:12:34:65 32 disk0=/dev/vda 'target /dev/vda is too small'; }

# The source disk and its snapshot, made once before the tests (several tests use it).
snapshot >/dev/null || abort_build "backup of the source image (see $WORK/backup.err)"
echo "source disk $WORK/src.img (64 MiB, GPT + random data): snapshot $(cat "$WORK/snapshot.id")"

# Longest first (2 at a time).
ALL_TESTS=(unattended-restore impostor unreachable enroll-bios-cd enroll-uefi-cd enroll-bios-disk enroll-pxe static-ip
    bad-ca bad-token no-nic missing-disk small-disk firmware)

: >"$WORK/metrics.txt"
run_tests "${ALL_TESTS[@]}"

echo
say "measurements"
echo "$SIZES"
sort "$WORK/metrics.txt" | sed 's/^/   /'
report_results
