#!/usr/bin/env bash
# The static backup-agent on userlands other than the build host's (issue 15, "Show"): the
# binary of the ferry-backup-agent package and tarball backs up a disk image from inside a
# chroot of
#   bullseye  Debian 11 minbase (glibc 2.31): the oldest Debian release deb.debian.org still
#             serves (buster and older moved to archive.debian.org, which this machine cannot
#             reach; no registry here offers a CentOS 7 or Debian 9 root filesystem), made by
#             debootstrap once and cached;
#   nolibc    a root with no libc, no loader and no shell at all: only the agent, the CA and the
#             disk image (and /dev/null, /dev/random, /dev/urandom, /proc). What runs here needs nothing from
#             any userland, whatever its age;
#   linux310  the nolibc root again, with every system call Linux added after 3.10 (CentOS 7's
#             kernel) answering ENOSYS (a seccomp filter: tests/packages/linux310-syscalls.py):
#             statx, getrandom, copy_file_range, clone3, … The agent must fall back as on 3.10.
# to a real appliance on 127.0.0.1 (the chroot shares the host's network namespace). Each
# snapshot is then restored on the host with restore-agent and compared with `cmp`. `file`,
# `readelf` and `ldd` (the host's and bullseye's own) show the binary is static.
#
#   bash tests/packages/old-userland.sh
#
# What this does not show: an old kernel's behaviour beyond its system-call table (new flags,
# ioctls, drivers). The binary's floor is Rust's for x86_64-unknown-linux-musl (Linux 3.2).
#
# Env: FERRY_OLDROOT_CACHE (default ~/.cache/ferry/oldroot), FERRY_DEBIAN_MIRROR (default
#      http://deb.debian.org/debian), FERRY_OLDROOT_WORK (default /tmp/ferry-oldroot),
#      CARGO_TARGET_DIR (default target/; the static build is made when missing).
# Needs (scripts/setup): debootstrap, file, binutils (readelf), python3-seccomp.
# Prints "N passed, N failed" last.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CACHE=${FERRY_OLDROOT_CACHE:-$HOME/.cache/ferry/oldroot}
MIRROR=${FERRY_DEBIAN_MIRROR:-http://deb.debian.org/debian}
WORK=${FERRY_OLDROOT_WORK:-/tmp/ferry-oldroot}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
MUSL=x86_64-unknown-linux-musl
REL=$CARGO_TARGET_DIR/$MUSL/release
AGENT=$REL/backup-agent

say() { printf '== %s\n' "$*"; }
now() { date +%s.%N; }
elapsed() { awk -v s="$1" -v e="${2:-$(now)}" 'BEGIN { printf "%.1f", e - s }'; }
passed=0 failed=0
ok() { echo "ok: $*"; passed=$((passed + 1)); }
bad() { echo "FAIL: $*"; failed=$((failed + 1)); }
finish() { echo "$passed passed, $failed failed"; ((failed == 0)) && exit 0; exit 1; }
abort() { bad "$*"; finish; }
# shellcheck source=../lib/vm.sh
source "$ROOT/tests/lib/vm.sh" # free_port

((EUID == 0)) || abort "needs root (debootstrap, chroot, mounts)"
for t in debootstrap file readelf ldd chroot; do command -v "$t" >/dev/null || abort "missing $t: run scripts/setup"; done
mkdir -p "$WORK" "$CACHE"
SERVE_PID=
MOUNTS=()
cleanup() {
    local i
    for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do umount -l "${MOUNTS[i]}" 2>/dev/null; done
    [[ -n $SERVE_PID ]] && kill "$SERVE_PID" 2>/dev/null
    wait 2>/dev/null
}
trap cleanup EXIT

if [[ ! -x $AGENT || ! -x $REL/restore-agent || ! -x $CARGO_TARGET_DIR/release/appliance ]]; then
    say "build: static backup-agent and restore-agent, appliance"
    (cd "$ROOT" && cargo build -q --release --target "$MUSL" -p restore-agent -p ferry-beacon -p backup-agent \
        && cargo build -q --release -p appliance) >"$WORK/build.log" 2>&1 || { tail -20 "$WORK/build.log"; abort "cargo build"; }
fi
APPLIANCE=$CARGO_TARGET_DIR/release/appliance

say "the binary"
echo "file: $(file -b "$AGENT")"
file -b "$AGENT" | grep -qE 'statically linked|static-pie linked' && ok "file: static ($(file -b "$AGENT" | grep -oE 'static(-pie)? linked|statically linked'))" || bad "file does not call $AGENT static"
if readelf -lW "$AGENT" | grep -q 'INTERP'; then bad "readelf: $AGENT has a PT_INTERP (needs a loader)"; else ok "readelf: no PT_INTERP (no loader)"; fi
if readelf -dW "$AGENT" | grep -q '(NEEDED)'; then bad "readelf: $AGENT needs shared libraries"; else ok "readelf: no NEEDED shared library"; fi
host_ldd=$(ldd "$AGENT" 2>&1)
echo "ldd (host, glibc $(ldd --version | head -1 | grep -oE '[0-9.]+$')): $(echo $host_ldd)"
[[ $host_ldd == *"not a dynamic executable"* || $host_ldd == *"statically linked"* ]] && ok "ldd (host): ${host_ldd//$'\t'/}" || bad "ldd (host) lists libraries: $host_ldd"

# --- the appliance -----------------------------------------------------------------------------
DATA=$WORK/appliance
rm -rf "$DATA"
"$APPLIANCE" init --data "$DATA" >/dev/null || abort "appliance init"
BACKUP=$("$APPLIANCE" token create --data "$DATA" --role backup --machine 'old-*') || abort "backup token"
RESTORE=$("$APPLIANCE" token create --data "$DATA" --role restore) || abort "restore token"
PORT=$(free_port)
"$APPLIANCE" serve --data "$DATA" --listen "127.0.0.1:$PORT" >"$WORK/serve.log" 2>&1 &
SERVE_PID=$!
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
(exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null || abort "the appliance does not listen on 127.0.0.1:$PORT"
echo "appliance on 127.0.0.1:$PORT"

# --- the root filesystems ----------------------------------------------------------------------
OLD=$CACHE/bullseye
if [[ ! -f $OLD.stamp ]]; then
    say "debootstrap --variant=minbase bullseye (Debian 11) from $MIRROR into $OLD"
    t=$(now)
    rm -rf --one-file-system "$OLD" "$OLD.tmp"
    debootstrap --variant=minbase bullseye "$OLD.tmp" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
        || { tail -20 "$WORK/debootstrap.log"; abort "debootstrap bullseye (log $WORK/debootstrap.log)"; }
    rm -rf "$OLD.tmp"/var/cache/apt/archives/*.deb
    mv "$OLD.tmp" "$OLD" && date -u +%FT%TZ >"$OLD.stamp"
    echo "debootstrap: $(elapsed "$t") s, $(du -sm "$OLD" | cut -f1) MiB"
else
    say "bullseye root cached: $OLD ($(du -sm "$OLD" | cut -f1) MiB)"
fi
NOLIBC=$WORK/nolibc
rm -rf "$NOLIBC"
mkdir -p "$NOLIBC/dev" "$NOLIBC/proc" "$NOLIBC/tmp"

# prepare ROOT: the agent, the CA and a 64 MiB GPT disk image with 20 MiB of random data.
prepare() {
    local r=$1
    install -D -m 0755 "$AGENT" "$r/usr/local/bin/backup-agent" || return 1
    install -D -m 0644 "$DATA/ca.pem" "$r/etc/ferry-test/ca.pem" || return 1
    rm -f "$r/disk.img"
    truncate -s 64M "$r/disk.img"
    printf 'label: gpt\nstart=2048, size=100352, type=0FC63DAF-8483-4772-8E79-3D47D8477DE4\n' | sfdisk -q "$r/disk.img" || return 1
    dd if=/dev/urandom of="$r/disk.img" bs=1M seek=1 count=20 conv=notrunc status=none
    mkdir -p "$r/dev" "$r/proc"
    [[ -e $r/dev/null ]] || mknod -m 0666 "$r/dev/null" c 1 3
    [[ -e $r/dev/urandom ]] || mknod -m 0666 "$r/dev/urandom" c 1 9
    # Where getrandom(2) is missing (Linux < 3.17) the agent's RNG polls /dev/random, then reads
    # /dev/urandom (the getrandom crate's fallback).
    [[ -e $r/dev/random ]] || mknod -m 0666 "$r/dev/random" c 1 8
    mount -t proc proc "$r/proc" && MOUNTS+=("$r/proc")
}

# run_in NAME ROOT: the backup from inside the chroot, the restore on the host, cmp.
run_in() {
    local name=$1 r=$2 machine=old-$1 snap t
    say "$name: backup-agent backup from inside chroot $r"
    prepare "$r" || { bad "$name: prepare the chroot"; return; }
    t=$(now)
    if env -i FERRY_TOKEN="$BACKUP" PATH=/usr/local/bin:/usr/bin:/bin "${WRAP[@]}" "$(command -v chroot)" "$r" /usr/local/bin/backup-agent backup \
        --appliance "https://127.0.0.1:$PORT" --ca /etc/ferry-test/ca.pem --machine "$machine" \
        --disk sda=/disk.img --rate-limit 0 --retry-window 60s --json >"$WORK/$name.backup.json" 2>"$WORK/$name.backup.err"; then
        snap=$(jq -r .snapshot "$WORK/$name.backup.json")
        ok "$name: backup from the chroot: snapshot $snap ($(jq -r .bytes_uploaded "$WORK/$name.backup.json") bytes uploaded, $(elapsed "$t") s)"
    else
        cat "$WORK/$name.backup.err"
        bad "$name: backup-agent backup inside the chroot"
        return
    fi
    rm -f "$WORK/$name.restored.img"
    if FERRY_TOKEN=$RESTORE "$REL/restore-agent" restore --appliance "https://127.0.0.1:$PORT" --ca "$DATA/ca.pem" \
        --snapshot "$snap" --target "sda=$WORK/$name.restored.img" >"$WORK/$name.restore.out" 2>&1; then
        ok "$name: restore-agent restore on the host"
    else
        tail -5 "$WORK/$name.restore.out"
        bad "$name: restore-agent restore"
        return
    fi
    if cmp "$r/disk.img" "$WORK/$name.restored.img"; then
        ok "$name: cmp: the restored image equals the chroot's disk image"
    else
        bad "$name: the restored image differs from the chroot's"
    fi
}

# The cached tree stays as debootstrap made it: the test writes into an overlay of it.
OV=$WORK/bullseye
for d in upper work root; do rm -rf "${OV:?}.$d"; mkdir -p "$OV.$d"; done
mount -t overlay overlay -o "lowerdir=$OLD,upperdir=$OV.upper,workdir=$OV.work" "$OV.root" \
    || abort "mount an overlay of $OLD"
MOUNTS+=("$OV.root")
glibc=$(chroot "$OV.root" ldd --version 2>/dev/null | head -1)
echo "bullseye: $(cat "$OLD/etc/debian_version" 2>/dev/null), $glibc"
[[ $glibc == *"2.31"* ]] && ok "bullseye root has glibc 2.31 (host: $(ldd --version | head -1 | grep -oE '[0-9.]+$'))" || bad "bullseye root: unexpected libc ($glibc)"
run_in bullseye "$OV.root"
old_ldd=$(chroot "$OV.root" ldd /usr/local/bin/backup-agent 2>&1)
echo "ldd (bullseye's own): $(echo $old_ldd)"
[[ $old_ldd == *"not a dynamic executable"* || $old_ldd == *"statically linked"* ]] && ok "ldd (bullseye): ${old_ldd//$'\t'/}" || bad "ldd (bullseye) lists libraries: $old_ldd"

WRAP=()
run_in nolibc "$NOLIBC"
libs=$(find "$NOLIBC" -xdev \( -name 'ld-*' -o -name 'libc*' -o -name '*.so*' -o -name sh \) -print)
[[ -z $libs ]] && ok "nolibc: the root holds no libc, loader, shared library or shell ($(find "$NOLIBC" -xdev -type f | wc -l) files)" \
    || bad "nolibc: the root holds $libs"

# The same root once more, with every system call newer than Linux 3.10 answering ENOSYS.
WRAP=(/usr/bin/python3 "$ROOT/tests/packages/linux310-syscalls.py")
if /usr/bin/python3 -c 'import seccomp' 2>/dev/null; then
    run_in linux310 "$NOLIBC"
    grep -q 'system calls newer than Linux 3.10 answer ENOSYS' "$WORK/linux310.backup.err" \
        && ok "linux310: the backup ran under the filter ($(grep -o '[0-9]* system calls' "$WORK/linux310.backup.err"))" \
        || bad "linux310: the filter did not run"
else
    bad "linux310: python3-seccomp is missing: run scripts/setup"
fi
finish
