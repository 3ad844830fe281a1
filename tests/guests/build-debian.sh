#!/usr/bin/env bash
# Real Debian 12 (bookworm) test guests for restore and fix-up tests, built once and cached.
#
#   bash tests/guests/build-debian.sh [--rebuild | --rebuild-all]
#
# Cache: ${FERRY_GUEST_CACHE:-$HOME/.cache/ferry/guests} (root-owned files; needs root):
#   debian12-bios.raw   3 GiB raw disk, SeaBIOS/SATA guest           debian12-bios.sums
#   debian12-uefi.raw   3 GiB raw disk, OVMF/SATA guest (no fallback) debian12-uefi.sums
#   debian12-*.info     partition table, fstab, grub.cfg boot lines, df of the filesystems
#   debian12.stamp      version of this recipe; when it matches, a run takes seconds
#   debian12-rootfs/    the debootstrapped tree (kept; --rebuild-all makes it anew), debs/ its .debs
#   logs/               debootstrap and build VM console logs of the last build
# --rebuild makes the images again from the cached tree, --rebuild-all debootstraps again too.
#
# debian12-bios.raw (MBR, disk signature 0x5f3a8e21; sectors of 512 bytes):
#   p1  start 2048    size 614400 (300 MiB)  type 83, boot flag   ext4 /boot  UUID 8c2f0d4e-…-2a5d18e4b001
#   p2  start 616448  size 5675008           type 5 (extended, to the end)
#   p5  start 618496  size 5672960           type 8e, LVM PV of VG ferryvg (4 MiB extents):
#         LV root  all but 32 extents  xfs   UUID 8c2f0d4e-…-2a5d18e4b002
#         LV swap  32 extents (128 MiB) swap  UUID 8c2f0d4e-…-2a5d18e4b003
#   GRUB i386-pc in the MBR and the gap before p1; grub.cfg by update-grub, root=/dev/mapper/ferryvg-root.
#   fstab: /dev/mapper/ferryvg-root / xfs; /dev/sda1 /boot ext4 (an old device name, on purpose);
#          /dev/mapper/ferryvg-swap swap.
# debian12-uefi.raw (GPT, disk GUID 6A1F0C3E-2B7D-4E55-9C1A-3D0E5B7F9A20):
#   p1  start 2048    size 204800 (100 MiB)  EF00 ESP  vfat FAT32 /boot/efi  UUID 6A1F-0C3E
#   p2  start 206848  to the end             8300      ext4 /               UUID 6a1f0c3e-…-9a23
#   GRUB x86_64-efi by `grub-install --efi-directory=/boot/efi --bootloader-id=debian --no-nvram`
#   (not --removable): EFI/debian/grubx64.efi but no EFI/BOOT/BOOTX64.EFI, so OVMF with empty NVRAM
#   finds nothing to boot until a fix-up adds the fallback loader. grub.cfg: root=UUID=….
#   fstab: by UUID (UUID=6a1f0c3e-… / ext4; UUID=6A1F-0C3E /boot/efi vfat).
# Both: bookworm minbase + linux-image-amd64, systemd, LVM/xfs/ext4/vfat tools, GRUB (no docs, man
#   pages or translations; no kernel modules for sound, media, Wi-Fi/Bluetooth, AMD/Radeon/Nouveau/
#   Intel GPUs, InfiniBand, IIO, staging: ~600 MiB used per image instead of ~780); console
#   ttyS0 (GRUB and kernel); initramfs MODULES=list with SATA/AHCI, dm_mod, xfs, ext4 and no
#   virtio (so on a virtio disk the initramfs stops with "ALERT! ... does not exist"); hostnames
#   ferry-deb12-bios / ferry-deb12-uefi; ~50 MiB of random files under /srv/data;
#   ferry-marker.service checks /var/lib/ferry-test/sums.txt (sha256 of every file under /usr/bin,
#   /usr/sbin, /srv/data and /boot/vmlinuz-*, paths relative to /) and prints one line to ttyS0,
#   "FERRY-GUEST-UP host=<h> sums=ok files=<n>" or "... sums=FAIL bad=<n>", then powers off.
#
# How: debootstrap on the host (deb.debian.org only) into the cached tree; an ext4 image of that
# tree (mkfs.ext4 -d) plus guest-build.sh and the data; a QEMU VM (TCG, q35, 1 GiB) boots the
# tree's own kernel and initrd with root=that image and init=guest-build.sh, and partitions,
# formats, copies and configures the two blank disks attached as virtio disks, both at once (GRUB
# and update-initramfs run in a chroot of each target, with udevd running so that update-grub sees
# /dev/disk/by-uuid). The host checks the console for FERRY-BUILD-DONE and takes the results off
# the build disk. Times here (2 cores, TCG): debootstrap ~6 min, build VM ~9 min on an idle host
# and ~16 min on a loaded one (update-initramfs alone takes 4.5-8 min under TCG, 10 s on the host),
# a cached run well under a second.
#
# Env: FERRY_GUEST_CACHE=DIR, FERRY_DEBIAN_MIRROR=URL (default http://deb.debian.org/debian),
#      FERRY_GUEST_BUILD_TIMEOUT=S (build VM, default 3600).
# Needs (scripts/setup): debootstrap qemu-system-x86 qemu-utils e2fsprogs fdisk util-linux.
# Last line: "debian12 guests: ready" and the exit status 0, or a FAIL line and non-zero.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${FERRY_GUEST_CACHE:-$HOME/.cache/ferry/guests}
MIRROR=${FERRY_DEBIAN_MIRROR:-http://deb.debian.org/debian}
BUILD_TIMEOUT=${FERRY_GUEST_BUILD_TIMEOUT:-3600}
SUITE=bookworm
# Bump when the recipe changes in a way the hash of the guest files below does not show.
RECIPE=3
PACKAGES=(linux-image-amd64 systemd-sysv udev kmod initramfs-tools lvm2 xfsprogs e2fsprogs dosfstools
    grub-pc-bin grub-efi-amd64-bin grub2-common fdisk)
GUEST_FILES=("$HERE/guest-build.sh" "$HERE/ferry-marker" "$HERE/ferry-marker.service")
IMAGES=(debian12-bios debian12-uefi)
GIB=$((1024 * 1024 * 1024))

REBUILD=0 REBUILD_ALL=0
for a in "$@"; do
    case $a in
    --rebuild) REBUILD=1 ;;
    --rebuild-all) REBUILD=1 REBUILD_ALL=1 ;;
    -h | --help)
        sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "unknown argument: $a (see --help)" >&2
        exit 2
        ;;
    esac
done

say() { printf '== %s\n' "$*"; }
now() { date +%s.%N; }
elapsed() { awk -v s="$1" -v e="${2:-$(now)}" 'BEGIN { printf "%.1f", e - s }'; }
die() {
    echo "FAIL: $*"
    exit 1
}
START=$(now)
# unmount_under DIR: whatever a failed debootstrap or build left mounted there (before any rm -rf).
unmount_under() {
    findmnt -rn -o TARGET | awk -v d="$1" 'index($0, d) == 1' | sort -r | while read -r m; do umount -l "$m"; done
}

((EUID == 0)) || die "needs root (debootstrap, file ownership in the images, loop mounts)"
for t in debootstrap qemu-system-x86_64 mkfs.ext4 sfdisk flock mount; do
    command -v "$t" >/dev/null || die "missing $t: run scripts/setup"
done

mkdir -p "$CACHE/logs"
exec 9>"$CACHE/.lock"
if ! flock -n 9; then
    say "waiting for another build (lock $CACHE/.lock)"
    flock 9
fi

VERSION=$( (echo "recipe $RECIPE suite $SUITE packages ${PACKAGES[*]}"; cat "${GUEST_FILES[@]}") | sha256sum | cut -c1-16)
STAMP=$CACHE/debian12.stamp

summary() {
    local n f
    for n in "${IMAGES[@]}"; do
        f=$CACHE/$n.raw
        printf '%s: %s bytes, %s bytes allocated, %s files in %s.sums\n' "$f" "$(stat -c %s "$f")" \
            "$(du -B1 "$f" | cut -f1)" "$(wc -l <"$CACHE/$n.sums")" "$n"
    done
}

cached() {
    [[ -f $STAMP && "$(head -1 "$STAMP")" == "version $VERSION" ]] || return 1
    local n
    for n in "${IMAGES[@]}"; do [[ -s $CACHE/$n.raw && -s $CACHE/$n.sums ]] || return 1; done
}

if ((!REBUILD)) && cached; then
    say "debian12 guests cached (version $VERSION) in $CACHE"
    summary
    echo "debian12 guests: ready ($(elapsed "$START") s)"
    exit 0
fi

# --- 1. the debootstrapped tree ----------------------------------------------------------------
ROOTFS=$CACHE/debian12-rootfs
ROOTFS_SIG="$SUITE minbase ${PACKAGES[*]}"
if ((REBUILD_ALL)) || [[ ! -f $ROOTFS.stamp || "$(cat "$ROOTFS.stamp")" != "$ROOTFS_SIG" ]]; then
    say "debootstrap --variant=minbase $SUITE from $MIRROR (+ ${PACKAGES[*]})"
    t=$(now)
    unmount_under "$ROOTFS.tmp"
    rm -rf --one-file-system "$ROOTFS" "$ROOTFS.tmp" "$ROOTFS.stamp"
    mkdir -p "$CACHE/debs"
    debootstrap --variant=minbase --include="$(IFS=,; echo "${PACKAGES[*]}")" --cache-dir="$CACHE/debs" \
        "$SUITE" "$ROOTFS.tmp" "$MIRROR" >"$CACHE/logs/debootstrap.log" 2>&1 \
        || { tail -20 "$CACHE/logs/debootstrap.log"; die "debootstrap (log $CACHE/logs/debootstrap.log)"; }
    # No package caches or lists, documentation, man pages or translations in the guests (they
    # count as used data that every restore test moves); dpkg keeps them out on later installs.
    rm -rf "$ROOTFS.tmp"/var/cache/apt/archives/*.deb "$ROOTFS.tmp"/var/lib/apt/lists/*_Packages \
        "$ROOTFS.tmp"/var/cache/apt/*.bin "$ROOTFS.tmp"/boot/*.dpkg-bak
    printf '%s\n' 'path-exclude=/usr/share/doc/*' 'path-include=/usr/share/doc/*/copyright' \
        'path-exclude=/usr/share/man/*' 'path-exclude=/usr/share/info/*' 'path-exclude=/usr/share/locale/*' \
        >"$ROOTFS.tmp/etc/dpkg/dpkg.cfg.d/01-ferry-nodoc"
    find "$ROOTFS.tmp"/usr/share/doc -mindepth 1 ! -type d ! -name copyright -delete
    rm -rf "$ROOTFS.tmp"/usr/share/man/* "$ROOTFS.tmp"/usr/share/info/* "$ROOTFS.tmp"/usr/share/locale/*
    ls "$ROOTFS.tmp"/boot/vmlinuz-* >/dev/null 2>&1 || die "debootstrap: no kernel in /boot"
    if ! ls "$ROOTFS.tmp"/boot/initrd.img-* >/dev/null 2>&1; then
        mount -t proc proc "$ROOTFS.tmp/proc"
        chroot "$ROOTFS.tmp" update-initramfs -c -k all >>"$CACHE/logs/debootstrap.log" 2>&1 || true
        umount "$ROOTFS.tmp/proc"
    fi
    ls "$ROOTFS.tmp"/boot/initrd.img-* >/dev/null 2>&1 || die "debootstrap: no initrd in /boot"
    mv "$ROOTFS.tmp" "$ROOTFS"
    echo "$ROOTFS_SIG" >"$ROOTFS.stamp"
    echo "debootstrap: $(elapsed "$t") s; tree $(du -sB1M "$ROOTFS" | cut -f1) MiB"
else
    say "debootstrapped tree cached: $ROOTFS ($(du -sB1M "$ROOTFS" | cut -f1) MiB)"
fi
KERNEL=$(ls "$ROOTFS"/boot/vmlinuz-* | sort -V | tail -1)
KVER=${KERNEL##*/vmlinuz-}
INITRD=$ROOTFS/boot/initrd.img-$KVER
[[ -f $INITRD ]] || die "no $INITRD"

# Kernel modules of hardware no test VM has (sound, cameras/TV, Wi-Fi/Bluetooth, big GPUs,
# InfiniBand, sensors, staging): ~170 MiB that every restore test would move. Storage, network,
# virtio and everything else stay. Idempotent (the tree may have been made before this step).
trimmed=0
for d in sound drivers/media drivers/net/wireless net/mac80211 net/wireless net/bluetooth drivers/bluetooth \
    drivers/gpu/drm/amd drivers/gpu/drm/radeon drivers/gpu/drm/nouveau drivers/gpu/drm/i915 \
    drivers/infiniband drivers/iio drivers/staging; do
    p=$ROOTFS/usr/lib/modules/$KVER/kernel/$d
    [[ -e $p ]] || continue
    rm -rf "$p"
    trimmed=1
done
if ((trimmed)); then
    chroot "$ROOTFS" depmod -a "$KVER" || die "depmod after trimming modules"
    echo "trimmed kernel modules: tree now $(du -sB1M "$ROOTFS" | cut -f1) MiB"
fi

# --- 2. the build disk: the tree + guest-build.sh + the data ------------------------------------
W=$CACHE/.build
rm -f "$STAMP"
unmount_under "$W"
rm -rf --one-file-system "$W"
mkdir -p "$W/mnt"
say "build disk: ext4 image of the tree + guest-build.sh + /srv/data content"
t=$(now)
truncate -s $((3 * GIB)) "$W/build.ext4"
mkfs.ext4 -q -F -L ferrybuild -d "$ROOTFS" "$W/build.ext4"
mount -o loop "$W/build.ext4" "$W/mnt"
trap 'mountpoint -q "$W/mnt" && umount "$W/mnt"; [[ -n ${QPID:-} ]] && kill "$QPID" 2>/dev/null; true' EXIT
install -D -m 0755 "$HERE/guest-build.sh" "$W/mnt/ferry-build/guest-build.sh"
install -m 0755 "$HERE/ferry-marker" "$W/mnt/ferry-build/ferry-marker"
install -m 0644 "$HERE/ferry-marker.service" "$W/mnt/ferry-build/ferry-marker.service"
mkdir -p "$W/mnt/ferry-out" "$W/mnt/ferry-mnt"
# ~50 MiB of random content per guest: 10 x 4 MiB, 16 x 512 KiB, 64 x 16 KiB, 200 small files.
for kind in bios uefi; do
    d=$W/mnt/ferry-build/data-$kind
    mkdir -p "$d/big" "$d/medium" "$d/small/a" "$d/small/b" "$d/tiny"
    for i in $(seq -w 1 10); do head -c $((4 * 1024 * 1024)) /dev/urandom >"$d/big/blob-$i.bin"; done
    for i in $(seq -w 1 16); do head -c $((512 * 1024)) /dev/urandom >"$d/medium/part-$i.bin"; done
    for i in $(seq -w 1 64); do head -c $((16 * 1024)) /dev/urandom >"$d/small/$([[ $((10#$i % 2)) == 0 ]] && echo a || echo b)/f-$i.dat"; done
    for i in $(seq -w 1 200); do head -c $((RANDOM % 4096 + 1)) /dev/urandom >"$d/tiny/t-$i"; done
    echo "Ferry test guest debian12-$kind data, made $(date -u +%FT%TZ)" >"$d/README"
done
umount "$W/mnt"
echo "build disk: $(elapsed "$t") s"

# --- 3. the build VM ---------------------------------------------------------------------------
truncate -s $((3 * GIB)) "$W/debian12-bios.raw" "$W/debian12-uefi.raw"
LOG=$CACHE/logs/build-vm.log
: >"$LOG"
say "build VM: TCG q35 -m 1024 -smp 2, kernel ${KERNEL##*/}, console log $LOG"
t=$(now)
qemu-system-x86_64 -machine q35 -accel tcg,thread=multi -smp 2 -m 1024 -display none -monitor none \
    -no-reboot -nic none -serial "file:$LOG" \
    -kernel "$KERNEL" -initrd "$INITRD" \
    -append "root=/dev/vda rw init=/ferry-build/guest-build.sh console=ttyS0,115200 panic=-1" \
    -drive "file=$W/build.ext4,format=raw,if=virtio,cache=unsafe" \
    -drive "file=$W/debian12-bios.raw,format=raw,if=virtio,cache=unsafe,discard=unmap" \
    -drive "file=$W/debian12-uefi.raw,format=raw,if=virtio,cache=unsafe,discard=unmap" \
    >"$W/qemu.out" 2>&1 &
QPID=$!
seen=0 deadline=$(($(date +%s) + BUILD_TIMEOUT))
while kill -0 "$QPID" 2>/dev/null && (($(date +%s) < deadline)); do
    sleep 2
    n=$(grep -a 'FERRY-BUILD' "$LOG" | grep -c $'\r$' || true) # complete lines only
    if ((n > seen)); then
        grep -a 'FERRY-BUILD' "$LOG" | tr -d '\r' | sed -n "$((seen + 1)),${n}p" | sed "s/^/   [$(elapsed "$t") s] /"
        seen=$n
    fi
done
if kill -0 "$QPID" 2>/dev/null; then
    kill "$QPID"
    wait "$QPID" 2>/dev/null || true
    QPID=
    tail -30 "$LOG"
    die "build VM did not finish within ${BUILD_TIMEOUT}s (log $LOG)"
fi
wait "$QPID" 2>/dev/null || true
QPID=
grep -a 'FERRY-BUILD' "$LOG" | tr -d '\r' | tail -n +$((seen + 1)) | sed 's/^/   /'
VM_TIME=$(elapsed "$t")
if ! grep -aq '^FERRY-BUILD-DONE' <(tr -d '\r' <"$LOG"); then
    tail -40 "$LOG" | tr -d '\r'
    die "build VM: no FERRY-BUILD-DONE (log $LOG)"
fi
echo "build VM: $VM_TIME s"

# --- 4. results into the cache -----------------------------------------------------------------
mount -o loop "$W/build.ext4" "$W/mnt" # read-write: the journal may need a replay
mkdir -p "$W/out"
cp -a "$W/mnt/ferry-out/." "$W/out/"
umount "$W/mnt"
for n in "${IMAGES[@]}"; do
    [[ -s $W/out/$n.sums ]] || die "the build VM left no $n.sums"
    {
        echo "# $n: built $(date -u +%FT%TZ) by tests/guests/build-debian.sh, version $VERSION"
        echo "## partition table (sfdisk -d)"
        sfdisk -d "$W/$n.raw" | sed "s#$W/##"
        echo "## blkid (in the build VM)"
        cat "$W/out/$n.blkid.txt"
        echo "## fstab"
        cat "$W/out/$n.fstab"
        echo "## grub.cfg (linux/initrd/search lines)"
        cat "$W/out/$n.grub-cfg.txt"
        echo "## df -B1 (in the build VM)"
        cat "$W/out/$n.df.txt"
        [[ -f $W/out/$n.esp.txt ]] && { echo "## ESP files"; cat "$W/out/$n.esp.txt"; }
        echo "## initramfs modules"
        grep '\.ko' "$W/out/$n.initrd.txt" | sed 's#.*/##' | sort | tr '\n' ' '
        echo
    } >"$W/$n.info"
    mv -f "$W/$n.raw" "$CACHE/$n.raw"
    mv -f "$W/out/$n.sums" "$CACHE/$n.sums"
    mv -f "$W/$n.info" "$CACHE/$n.info"
done
echo "version $VERSION" >"$STAMP"
echo "built $(date -u +%FT%TZ); build VM $VM_TIME s" >>"$STAMP"
rm -rf "$W"
trap - EXIT
summary
echo "total: $(elapsed "$START") s"
echo "debian12 guests: ready"
