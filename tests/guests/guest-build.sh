#!/bin/bash
# PID 1 of the build VM that tests/guests/build-debian.sh boots (read the layout there). The VM runs
# on the debootstrapped tree itself (root=/dev/vda, kernel and initrd of that tree) and turns two
# blank virtio disks into installed Debian 12 systems:
#   /dev/vdb -> debian12-bios.raw (MBR, /boot ext4, LVM ferryvg/{root xfs, swap}, GRUB i386-pc)
#   /dev/vdc -> debian12-uefi.raw (GPT, ESP vfat, root ext4, GRUB x86_64-efi without fallback loader)
# Console lines for the host: "FERRY-BUILD-STEP start|done NAME [SECONDS s]", and last
# "FERRY-BUILD-DONE" or "FERRY-BUILD-FAIL: <why>"; then the VM powers off. Results (checksum
# lists, fstab, grub and initramfs listings, df) go to /ferry-out on the build disk.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C LANG=C
export DEBIAN_FRONTEND=noninteractive
set -Eeuo pipefail
B=/ferry-build OUT=/ferry-out MNTS=/ferry-mnt

poweroff_now() {
    sync
    echo o >/proc/sysrq-trigger
    sleep 600
}
fail() {
    echo "FERRY-BUILD-FAIL: $*"
    poweroff_now
}
trap 'rc=$?; fail "line $LINENO: $BASH_COMMAND (exit $rc)"' ERR

up() { cut -d' ' -f1 /proc/uptime; }
STEP= STEP_T=
end_step() {
    [[ -n $STEP ]] || return 0
    echo "FERRY-BUILD-STEP done $STEP $(awk -v a="$STEP_T" -v b="$(up)" 'BEGIN { printf "%.1f", b - a }') s"
    STEP=
}
step() {
    end_step
    STEP=$1
    STEP_T=$(up)
    echo "FERRY-BUILD-STEP start $STEP"
}

# --- the environment: PID 1 right after the initramfs (which moved /dev /proc /sys /run here) ---
mountpoint -q /proc || mount -t proc proc /proc
mountpoint -q /sys || mount -t sysfs sysfs /sys
mountpoint -q /dev || mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts
mountpoint -q /dev/pts || mount -t devpts devpts /dev/pts
mountpoint -q /run || mount -t tmpfs tmpfs /run
mkdir -p /run/lock
mount -o remount,rw /
echo "FERRY-BUILD-START kernel $(uname -r)"
mkdir -p "$OUT" "$MNTS"
rm -rf "${OUT:?}"/*

# udev: LVM waits for it, and update-grub writes root=UUID=... only when /dev/disk/by-uuid/<uuid>
# exists (else it would write the build VM's /dev/vdc2 into grub.cfg).
step udev
/lib/systemd/systemd-udevd --daemon
udevadm trigger --type=subsystems --action=add
udevadm trigger --type=devices --action=add
udevadm settle --timeout=120
[[ -b /dev/vdb && -b /dev/vdc ]] || fail "the target disks /dev/vdb and /dev/vdc are missing"

wait_dev() { # DEV...
    local d
    udevadm settle --timeout=60
    for d; do
        for _ in $(seq 100); do [[ -b $d ]] && break; sleep 0.1; done
        [[ -b $d ]] || fail "$d did not appear"
    done
}

# copy_system MNT: the running tree (= the debootstrapped system) into the mounted target.
copy_system() {
    tar -C / --xattrs --xattrs-include='*' --numeric-owner \
        --exclude=./ferry-build --exclude=./ferry-out --exclude=./ferry-mnt --exclude=./lost+found \
        --exclude=./proc --exclude=./sys --exclude=./dev --exclude=./run --exclude=./tmp \
        --exclude='./etc/lvm/archive/*' --exclude='./etc/lvm/backup/*' -cf - . |
        tar -C "$1" --xattrs --xattrs-include='*' --numeric-owner -xpf -
    # The mount points (tar would see them change under it).
    install -d -m 0755 "$1/dev" "$1/run"
    install -d -m 0555 "$1/proc" "$1/sys"
    install -d -m 1777 "$1/tmp"
}

# configure MNT KIND HOSTNAME MACHINE-ID: everything but fstab and the boot loader.
configure() {
    local m=$1 kind=$2 host=$3 mid=$4
    echo "$host" >"$m/etc/hostname"
    printf '127.0.0.1\tlocalhost\n127.0.1.1\t%s\n::1\tlocalhost ip6-localhost ip6-loopback\n' "$host" >"$m/etc/hosts"
    echo "$mid" >"$m/etc/machine-id"
    cat >"$m/etc/default/grub" <<'EOF'
# Ferry test guest (tests/guests/build-debian.sh): serial console, short timeout.
GRUB_DEFAULT=0
GRUB_TIMEOUT=1
GRUB_DISTRIBUTOR=`( . /etc/os-release && echo ${NAME} ) 2>/dev/null || echo Debian`
GRUB_CMDLINE_LINUX_DEFAULT=""
GRUB_CMDLINE_LINUX="console=ttyS0,115200"
GRUB_TERMINAL="serial console"
GRUB_SERIAL_COMMAND="serial --speed=115200 --unit=0 --word=8 --parity=no --stop=1"
EOF
    # The initramfs holds only the listed modules (plus what hooks add): SATA/AHCI, LVM, xfs and
    # ext4, no virtio. So the guest boots from a SATA disk and not from a virtio one.
    sed -i 's/^MODULES=.*/MODULES=list/' "$m/etc/initramfs-tools/initramfs.conf"
    grep -qx 'MODULES=list' "$m/etc/initramfs-tools/initramfs.conf" || fail "MODULES=list not set"
    cat >"$m/etc/initramfs-tools/modules" <<'EOF'
# Ferry test guest: MODULES=list (initramfs.conf) includes only these: SATA/AHCI, LVM, xfs, ext4.
# No virtio on purpose: on a virtio disk the initramfs does not find the root device.
libata
libahci
ahci
scsi_mod
sd_mod
dm_mod
crc32c_generic
libcrc32c
crc16
mbcache
jbd2
ext4
xfs
EOF
    mkdir -p "$m/etc/initramfs-tools/conf.d"
    echo "RESUME=none" >"$m/etc/initramfs-tools/conf.d/resume"
    install -D -m 0755 "$B/ferry-marker" "$m/usr/local/sbin/ferry-marker"
    install -D -m 0644 "$B/ferry-marker.service" "$m/etc/systemd/system/ferry-marker.service"
    mkdir -p "$m/etc/systemd/system/multi-user.target.wants" "$m/var/lib/ferry-test"
    ln -sf /etc/systemd/system/ferry-marker.service "$m/etc/systemd/system/multi-user.target.wants/ferry-marker.service"
    mkdir -p "$m/srv/data"
    cp -a "$B/data-$kind/." "$m/srv/data/"
}

bind_chroot() { local d; for d in dev dev/pts proc sys run; do mount --bind "/$d" "$1/$d"; done; }
unbind_chroot() { local d; for d in run sys proc dev/pts dev; do umount "$1/$d"; done; }
inchroot() { local m=$1; shift; chroot "$m" /usr/bin/env -i PATH="$PATH" LC_ALL=C HOME=/root DEBIAN_FRONTEND=noninteractive "$@"; }

# take_sums MNT: the checksum list the marker verifies at boot (paths relative to /): every file
# under /usr/bin, /usr/sbin and /srv/data, and the kernel. Not fstab, initrd, grub.cfg or /etc,
# which a fix-up may change.
take_sums() {
    inchroot "$1" /bin/sh -c 'cd / && { find usr/bin usr/sbin srv/data -type f -print0 | sort -z | xargs -0 sha256sum; sha256sum boot/vmlinuz-*; }' \
        >"$1/var/lib/ferry-test/sums.txt"
    cp "$1/var/lib/ferry-test/sums.txt" "$OUT/$2.sums"
    echo "$2: sums of $(wc -l <"$OUT/$2.sums") files"
}

# check_boot MNT KIND: the initramfs has AHCI/LVM/xfs/ext4 and no virtio; grub.cfg does not name
# the build VM's disks.
check_boot() {
    local m=$1 kind=$2 mod
    inchroot "$m" /bin/sh -c 'lsinitramfs /boot/initrd.img-*' >"$OUT/$kind.initrd.txt"
    if grep -i virtio "$OUT/$kind.initrd.txt"; then fail "$kind: the initramfs has virtio modules"; fi
    for mod in ahci libahci sd_mod dm-mod xfs ext4; do
        grep -qE "/$mod\.ko(\.xz|\.zst)?\$" "$OUT/$kind.initrd.txt" || fail "$kind: the initramfs lacks $mod"
    done
    grep -qE '(^|/)s?bin/lvm$' "$OUT/$kind.initrd.txt" || fail "$kind: the initramfs lacks lvm"
    if grep -n '/dev/vd' "$m/boot/grub/grub.cfg"; then fail "$kind: grub.cfg names a build VM disk"; fi
    grep -E '^\s*(linux|initrd|search)\s' "$m/boot/grub/grub.cfg" >"$OUT/$kind.grub-cfg.txt"
    cp "$m/etc/fstab" "$OUT/$kind.fstab"
    echo "$kind: initramfs with $(grep -c '\.ko' "$OUT/$kind.initrd.txt") modules, no virtio; grub.cfg:"
    sed -n '1,4p' "$OUT/$kind.grub-cfg.txt"
}

finish_fs() { # MNT KIND MOUNTPOINTS...: record usage, trim (the raw image stays sparse)
    local m=$1 kind=$2
    shift 2
    df -B1 --output=source,fstype,size,used,target "$@" >"$OUT/$kind.df.txt"
    cat "$OUT/$kind.df.txt"
    local mp
    for mp; do fstrim -v "$mp" || echo "fstrim $mp failed (no discard?): the image may be less sparse"; done
    sync
}

# --- debian12-bios on /dev/vdb --------------------------------------------------------------
build_bios() {
    local D=/dev/vdb M=$MNTS/bios free
    step bios-partition
    sfdisk --wipe always --wipe-partitions always -q $D <<'EOF'
label: dos
label-id: 0x5f3a8e21
unit: sectors

start=2048, size=614400, type=83, bootable
start=616448, size=5675008, type=5
start=618496, size=5672960, type=8e
EOF
    wait_dev ${D}1 ${D}5
    step bios-lvm-mkfs
    mkfs.ext4 -q -F -U 8c2f0d4e-1b6a-4c3e-9f70-2a5d18e4b001 -L boot ${D}1
    pvcreate -q -ff -y ${D}5
    vgcreate -q ferryvg ${D}5
    free=$(vgs --noheadings -o vg_free_count ferryvg | tr -d ' ')
    lvcreate -q -y -n root -l $((free - 32)) ferryvg # 32 x 4 MiB extents stay for swap
    lvcreate -q -y -n swap -l 100%FREE ferryvg
    wait_dev /dev/mapper/ferryvg-root /dev/mapper/ferryvg-swap
    mkfs.xfs -q -f -m uuid=8c2f0d4e-1b6a-4c3e-9f70-2a5d18e4b002 -L root /dev/mapper/ferryvg-root
    mkswap -U 8c2f0d4e-1b6a-4c3e-9f70-2a5d18e4b003 -L swap /dev/mapper/ferryvg-swap >/dev/null
    lvs --units m ferryvg
    mkdir -p $M
    mount /dev/mapper/ferryvg-root $M
    mkdir -p $M/boot
    mount ${D}1 $M/boot
    step bios-copy
    copy_system $M
    configure $M bios ferry-deb12-bios 5f3a8e21b0014c3e9f702a5d18e4b001
    cat >$M/etc/fstab <<'EOF'
# /etc/fstab of the Ferry BIOS test guest (tests/guests/build-debian.sh).
# /boot is named by an old-style device name on purpose (it is /dev/vda1 on a virtio disk).
/dev/mapper/ferryvg-root  /      xfs   defaults  0  1
/dev/sda1                 /boot  ext4  defaults  0  2
/dev/mapper/ferryvg-swap  none   swap  sw        0  0
EOF
    bind_chroot $M
    step bios-initramfs
    inchroot $M update-initramfs -u -k all
    step bios-grub
    inchroot $M grub-install --target=i386-pc $D
    inchroot $M update-grub
    inchroot $M vgcfgbackup -q ferryvg >/dev/null # /etc/lvm/backup/ferryvg, as an installed system has
    step bios-sums
    take_sums $M debian12-bios
    check_boot $M debian12-bios
    unbind_chroot $M
    finish_fs $M debian12-bios $M $M/boot
    umount $M/boot $M
    vgchange -q -an ferryvg
    blkid ${D}1 ${D}5 >"$OUT/debian12-bios.blkid.txt" || true
    sfdisk -d $D >"$OUT/debian12-bios.sfdisk.txt"
    end_step
}

# --- debian12-uefi on /dev/vdc --------------------------------------------------------------
build_uefi() {
    local D=/dev/vdc M=$MNTS/uefi
    step uefi-partition
    sfdisk --wipe always --wipe-partitions always -q $D <<'EOF'
label: gpt
label-id: 6A1F0C3E-2B7D-4E55-9C1A-3D0E5B7F9A20
unit: sectors
first-lba: 2048

start=2048, size=204800, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=6A1F0C3E-2B7D-4E55-9C1A-3D0E5B7F9A21, name="EFI System Partition"
start=206848, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=6A1F0C3E-2B7D-4E55-9C1A-3D0E5B7F9A22, name="root"
EOF
    wait_dev ${D}1 ${D}2
    step uefi-mkfs
    mkfs.vfat -F 32 -n ESP -i 6A1F0C3E ${D}1 >/dev/null
    mkfs.ext4 -q -F -U 6a1f0c3e-2b7d-4e55-9c1a-3d0e5b7f9a23 -L root ${D}2
    udevadm settle --timeout=60
    mkdir -p $M
    mount ${D}2 $M
    mkdir -p $M/boot/efi
    mount ${D}1 $M/boot/efi
    step uefi-copy
    copy_system $M
    configure $M uefi ferry-deb12-uefi 6a1f0c3e2b7d4e559c1a3d0e5b7f9a20
    cat >$M/etc/fstab <<'EOF'
# /etc/fstab of the Ferry UEFI test guest (tests/guests/build-debian.sh): by filesystem UUID.
UUID=6a1f0c3e-2b7d-4e55-9c1a-3d0e5b7f9a23  /          ext4  errors=remount-ro  0  1
UUID=6A1F-0C3E                             /boot/efi  vfat  umask=0077         0  1
EOF
    bind_chroot $M
    step uefi-initramfs
    inchroot $M update-initramfs -u -k all
    step uefi-grub
    # No --removable and no NVRAM entry: EFI/debian/grubx64.efi only, no EFI/BOOT/BOOTX64.EFI.
    inchroot $M grub-install --target=x86_64-efi --efi-directory=/boot/efi --bootloader-id=debian --no-nvram
    inchroot $M update-grub
    [[ -f $M/boot/efi/EFI/debian/grubx64.efi ]] || fail "no EFI/debian/grubx64.efi"
    [[ ! -e $M/boot/efi/EFI/BOOT ]] || fail "EFI/BOOT exists (fallback loader must be absent)"
    (cd $M/boot/efi && find . -type f | sort >"$OUT/debian12-uefi.esp.txt")
    grep -q 'root=UUID=6a1f0c3e-2b7d-4e55-9c1a-3d0e5b7f9a23' $M/boot/grub/grub.cfg || fail "grub.cfg: root is not by UUID"
    step uefi-sums
    take_sums $M debian12-uefi
    check_boot $M debian12-uefi
    unbind_chroot $M
    finish_fs $M debian12-uefi $M $M/boot/efi
    umount $M/boot/efi $M
    blkid ${D}1 ${D}2 >"$OUT/debian12-uefi.blkid.txt" || true
    sfdisk -d $D >"$OUT/debian12-uefi.sfdisk.txt"
    end_step
}

# The two run at once (2 vCPUs): one copies while the other runs update-initramfs.
end_step
(build_bios) &
PB=$!
(build_uefi) &
PU=$!
wait $PB || fail "debian12-bios"
wait $PU || fail "debian12-uefi"
sync
# A clean build disk for the host: udevd off, root read-only.
udevadm control --exit || true
mount -o remount,ro / || echo "(root stays read-write)"
sync
echo "FERRY-BUILD-DONE"
poweroff_now
