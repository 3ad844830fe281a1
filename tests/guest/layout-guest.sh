#!/bin/sh
# The guest half of tests/guest/layout.sh: runs as PID 1 (rdinit=) of the rescue image with the
# test layer (/ferry-test: this script, backup-agent, ca.pem, env), builds source disks with the
# image's own tools, backs them up to the appliance on the host (10.0.2.2), restores them with
# the image's restore-agent (/init) onto blank virtio disks and checks the results.
#
# Output on the console: "GUEST-TEST ok: NAME" / "GUEST-TEST FAIL: NAME: WHY" per check,
# "GUEST-TIME WHAT SECONDS" per step, "GUEST-TEST DONE" at the end; then it powers off.
# POSIX sh plus `local` (busybox ash): the image has no bash. ash scopes variables dynamically,
# so every helper declares what it assigns as local.

export PATH=/sbin:/bin
export HOME=/root
umask 022

mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
# Like PID 1 of the image: /run and /tmp are tmpfs (LVM must create its lock dir itself).
mount -t tmpfs -o mode=0755 run /run
mount -t tmpfs -o mode=1777 tmp /tmp
exec </dev/console >/dev/console 2>&1

. /ferry-test/env
LOG=/tmp/log
mkdir -p $LOG /mnt/a /mnt/b

finish() {
    echo "GUEST-TEST DONE"
    sync
    poweroff -f
    sleep 10
}

now() { cut -d' ' -f1 /proc/uptime; }
T_STEP=$(now)
STEP=boot
step() { # NAME: ends the previous step (prints its time), starts NAME
    t=$(now)
    echo "GUEST-TIME $STEP $(awk -v a="$T_STEP" -v b="$t" 'BEGIN { printf "%.1f", b - a }')"
    STEP=$1
    T_STEP=$t
    echo "== $1"
}

ok() { echo "GUEST-TEST ok: $1"; }
bad() { echo "GUEST-TEST FAIL: $1: $2"; }

# check NAME CMD...: CMD's exit status decides; its output is shown only on failure.
check() {
    local name=$1 t0 dt
    shift
    t0=$(now)
    if "$@" >$LOG/check.out 2>&1; then
        dt=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')
        ok "$name ($dt s)"
    else
        bad "$name" "$(tail -n 3 $LOG/check.out | tr '\n' ' ' | cut -c1-300)"
        sed 's/^/   | /' $LOG/check.out | tail -n 20
    fi
}

# Fatal: setup that later checks depend on.
die() {
    bad "$1" "$2"
    [ -f "$3" ] && sed 's/^/   | /' "$3" | tail -n 30
    finish
}

for m in virtio_pci virtio_blk virtio_net dm_mod loop xfs ext4 vfat nls_cp437 nls_iso8859-1 nls_utf8 crc32c_generic; do
    modprobe "$m" 2>/dev/null
done

# --- disks by serial (QEMU -device virtio-blk-pci,serial=NAME) -----------------------------
disk() {
    for d in /sys/block/vd*; do
        [ "$(cat "$d/serial" 2>/dev/null)" = "$1" ] && { echo "/dev/${d##*/}"; return 0; }
    done
    return 1
}
for n in SRC_MBR MBR_SAME MBR_BIG SRC_GPT GPT_512 GPT_4K SMALL X0 X1 Y0 Y1 SRC_LV LV_COPY; do
    lc=$(echo "$n" | tr 'A-Z_' 'a-z-')
    d=$(disk "$lc") || die setup "no virtio disk with serial $lc"
    eval "$n=$d"
done
echo "disks: mbr $SRC_MBR -> $MBR_SAME, $MBR_BIG; gpt $SRC_GPT -> $GPT_512, $GPT_4K; small $SMALL; two-disk $X0 $X1 -> $Y0 $Y1"
# /dev/vdb -> /dev/vdb5; /dev/nvme0n1 -> /dev/nvme0n1p5
part() { case $1 in *[0-9]) echo "${1}p$2" ;; *) echo "$1$2" ;; esac; }
# the sector size of a disk
lss() { blockdev --getss "$1"; }

# --- network: static, the appliance is the host's 127.0.0.1 -------------------------------
for _ in $(seq 50); do [ -e /sys/class/net/eth0 ] && break; sleep 0.1; done
ip link set lo up
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2
hostname ferry-guest-test

# --- helpers ------------------------------------------------------------------------------
lvm_on() { # PV lvm-command args...: LVM looking at that one PV only
    local pv=$1 cmd=$2
    shift 2
    lvm "$cmd" --devices "$pv" "$@"
}

# sums DIR: sha256 of every regular file, by path
sums() { (cd "$1" && find . -type f | sort | xargs sha256sum); }

# fill DIR MiB: random data plus copies of the image's own files
fill() {
    head -c $(($2 * 1024 * 1024)) /dev/urandom >"$1/random.bin" || return 1
    mkdir -p "$1/copies/deep/er/still"
    cp -a /bin /etc "$1/copies/" || return 1
    cp -a /sbin "$1/copies/deep/" || return 1
    head -c 12345 /dev/urandom >"$1/copies/deep/er/still/odd-size"
    : >"$1/empty"
}

# backup NAME DISK=DEV...: prints the snapshot id
backup() {
    local m=$1 args= d
    shift
    for d in "$@"; do args="$args --disk $d"; done
    # shellcheck disable=SC2086
    /ferry-test/backup-agent backup --json --appliance "$APPLIANCE" --ca /ferry-test/ca.pem \
        --token "$BACKUP_TOKEN" --machine "$m" $args >$LOG/backup-$m.json 2>$LOG/backup-$m.err || return 1
    sed -n 's/.*"snapshot": *"\([^"]*\)".*/\1/p' $LOG/backup-$m.json | head -n 1
}

# restore LOGNAME SNAPSHOT ARGS...: restore-agent (the image's /init) with --json
restore() {
    local n=$1 s=$2
    shift 2
    /init restore --json --appliance "$APPLIANCE" --ca /ferry-test/ca.pem --token "$RESTORE_TOKEN" \
        --snapshot "$s" "$@" >$LOG/restore-$n.json 2>$LOG/restore-$n.err
}

# fp DISK [PV]: identities that a restore must keep (blkid of the disk and every partition,
# LVM UUIDs, and blkid of every LV), without sizes, offsets and device numbers.
KEEP='^(PTUUID|PTTYPE|UUID|UUID_SUB|TYPE|LABEL|SEC_TYPE|VERSION|PART_ENTRY_SCHEME|PART_ENTRY_UUID|PART_ENTRY_TYPE|PART_ENTRY_FLAGS|PART_ENTRY_NUMBER|PART_ENTRY_NAME)='
fp() {
    local d=$1 p lv
    echo "disk: $(blkid -p -o export "$d" | grep -E "$KEEP" | sort | tr '\n' ' ')"
    for p in /sys/block/"${d##*/}"/"${d##*/}"*; do
        [ -e "$p/partition" ] || continue
        echo "part $(cat "$p/partition"): $(blkid -p -o export "/dev/${p##*/}" | grep -E "$KEEP" | sort | tr '\n' ' ')"
    done
    [ -n "$2" ] || return 0
    lvm_on "$2" pvs --noheadings -o pv_uuid,vg_name,vg_uuid | tr -s ' '
    lvm_on "$2" lvs --noheadings -o lv_name,lv_uuid | tr -s ' ' | sort
    lvm_on "$2" vgchange -ay -q vg0 >/dev/null 2>&1
    for lv in root swap; do
        echo "lv $lv: $(blkid -p -o export "/dev/mapper/vg0-$lv" | grep -E "$KEEP" | sort | tr '\n' ' ')"
    done
    lvm_on "$2" vgchange -an -q vg0 >/dev/null 2>&1
}

# same_files DEV FSTYPE SUMS: mount read-only, compare every file's sha256 with SUMS
same_files() {
    mount -t "$2" -o ro "$1" /mnt/b || return 1
    sums /mnt/b >$LOG/sums.now
    umount /mnt/b
    diff "$3" $LOG/sums.now && echo "$(wc -l <"$3") files equal"
}

size_of() { blockdev --getsize64 "$1"; }
# same_bytes A B: byte-identical devices of one size (cmp reads ~10 MB/s under TCG)
same_bytes() { [ "$(size_of "$1")" = "$(size_of "$2")" ] && cmp "$1" "$2" && echo "identical: $(size_of "$1") bytes"; }
bigger() { [ "$2" -gt "$1" ] && echo "$2 > $1"; }
# xfs data blocks of an unmounted xfs
xfs_blocks() { xfs_db -r -c 'sb 0' -c 'p dblocks' "$1" | sed 's/.*= *//'; }
# ext block count of an unmounted ext2/3/4
ext_blocks() { tune2fs -l "$1" | sed -n 's/^Block count: *//p'; }
no_warnings() { "$@" >$LOG/nw.out 2>&1 || { cat $LOG/nw.out; return 1; }; cat $LOG/nw.out; ! grep -qiE 'warning|error|fail' $LOG/nw.out; }
nodes_exist() {
    local n
    for n in "$@"; do [ -b "$n" ] || { echo "no $n"; return 1; }; done; echo "nodes: $*"; }

# =========================================================================================
# LVM-snapshot capture (issue "live migration"): device-mapper is here, not on the host. First,
# while no other disk carries LVM: the capture's own LVM calls (lvs, lvcreate, lvremove) see
# every device, as on a real source.
step lvm-capture-test
modprobe dm_snapshot 2>/dev/null
# lvm_host: a snapshot holds the LV as it was while the origin is written (nothing frozen), the
# substitution maps the LV's bytes on the disk, end removes the snapshot, and cleanup_stale
# removes the one a "crashed" capture left.
lvm_test() {
    /ferry-test/lvm_host --test-threads=1 --nocapture >$LOG/lvm_host.out 2>&1
    local rc=$?
    cat $LOG/lvm_host.out
    [ $rc -eq 0 ] && ! grep -q SKIPPED $LOG/lvm_host.out && grep -q 'test result: ok. 2 passed' $LOG/lvm_host.out
}
check lvm-capture/lvm_host-tests lvm_test

# The backup agent end to end: a mounted ext4 on an LV whose VG has room for a snapshot, backed
# up point-in-time with --lvm-snapshots while it stays mounted and written, then restored.
step lvm-capture-backup
LVP=$(part "$SRC_LV" 1)
sgdisk -o -n 1:2048:0 -t 1:8e00 "$SRC_LV" >$LOG/sgdisk-lv.out 2>&1 || die lvm-capture/source "sgdisk" $LOG/sgdisk-lv.out
blockdev --rereadpt "$SRC_LV" 2>/dev/null
for _ in $(seq 50); do [ -b "$LVP" ] && break; sleep 0.1; done
[ -b "$LVP" ] || { ls -l /dev/vd* ; cat /proc/partitions; die lvm-capture/source "no $LVP after sgdisk"; }
{ pvcreate -q "$LVP" && vgcreate -q vgcap "$LVP" && lvcreate -q -y -L 96M -n data vgcap &&
    mkfs.ext4 -q -F /dev/vgcap/data && mount -t ext4 /dev/vgcap/data /mnt/a; } >$LOG/lvm-src.out 2>&1 ||
    die lvm-capture/source "pvcreate, vgcreate, lvcreate, mkfs.ext4, mount" $LOG/lvm-src.out
fill /mnt/a 16 || die lvm-capture/source "fill"
sync
sums /mnt/a >$LOG/lvcap.sums
# A writer keeps changing one file during the backup: the snapshot must not see it torn.
( i=0; while [ -e /tmp/lvcap-writing ]; do i=$((i + 1)); echo "$i" >/mnt/a/counter; sleep 0.2; done ) &
WRITER=$!
touch /tmp/lvcap-writing
lvcap_backup() {
    /ferry-test/backup-agent backup --json --appliance "$APPLIANCE" --ca /ferry-test/ca.pem \
        --token "$BACKUP_TOKEN" --machine guest-lvcap --disk "lv=$SRC_LV" \
        --consistency point-in-time --lvm-snapshots >$LOG/backup-lvcap.json 2>$LOG/backup-lvcap.err || return 1
    sed -n 's/.*"snapshot": *"\([^"]*\)".*/\1/p' $LOG/backup-lvcap.json | head -n 1
}
SNAP_LV=$(lvcap_backup)
rc=$?
rm -f /tmp/lvcap-writing
wait $WRITER 2>/dev/null
[ $rc -eq 0 ] && [ -n "$SNAP_LV" ] || die lvm-capture/backup "backup-agent" $LOG/backup-lvcap.err
ok "lvm-capture/backup ($SNAP_LV)"
check lvm-capture/recorded-as-lvm-snapshot grep -q '"method": "lvm-snapshot"' $LOG/backup-lvcap.json
check lvm-capture/snapshot-listed grep -q '"vgcap/data"' $LOG/backup-lvcap.json
no_snapshot_left() { lvs --noheadings -o lv_name vgcap | tee /dev/stderr | grep -q ferry-snap && return 1; return 0; }
check lvm-capture/snapshot-removed no_snapshot_left
# The counter at the instant of the snapshot is whatever it was; the listed files are exact.
umount /mnt/a
vgchange -an -q vgcap >/dev/null 2>&1
step lvm-capture-restore
restore lvcap "$SNAP_LV" --target "lv=$LV_COPY" || die lvm-capture/restore "restore-agent failed" $LOG/restore-lvcap.err
ok lvm-capture/restore
CP=$(part "$LV_COPY" 1)
lvm_on "$CP" vgchange -ay -q vgcap >/dev/null 2>&1
check lvm-capture/e2fsck-restored-lv e2fsck -fn /dev/mapper/vgcap-data
same_lv_files() {
    mount -t ext4 -o ro /dev/mapper/vgcap-data /mnt/b || return 1
    sums /mnt/b | grep -v '\./counter$' >$LOG/sums.now
    umount /mnt/b
    diff $LOG/lvcap.sums $LOG/sums.now && echo "$(wc -l <$LOG/lvcap.sums) files equal"
}
check lvm-capture/files-restored same_lv_files
lvm_on "$CP" vgchange -an -q vgcap >/dev/null 2>&1
# Both copies carry the same PV and VG UUIDs; the layout steps below look at one PV at a time.

# =========================================================================================
step mbr-source
# MBR: /boot ext4 (bootable) primary, an extended partition, a logical LVM PV with vg0/root
# (xfs) and vg0/swap.
sfdisk -q "$SRC_MBR" >$LOG/sfdisk.out 2>&1 <<EOF || die mbr-source "sfdisk" $LOG/sfdisk.out
label: dos
label-id: 0x5eed1234
size=32MiB, type=83, bootable
type=5
type=8e
EOF
P5=$(part "$SRC_MBR" 5)
P1=$(part "$SRC_MBR" 1)
nodes_exist "$P1" "$P5" >/dev/null || die mbr-source "no partition nodes after sfdisk"
{
    lvm_on "$P5" pvcreate -q "$P5" &&
        lvm_on "$P5" vgcreate -q vg0 "$P5" &&
        lvm_on "$P5" lvcreate -q -y -L 128M -n root vg0 &&
        lvm_on "$P5" lvcreate -q -y -l 100%FREE -n swap vg0
} >$LOG/lvm.out 2>&1 || die mbr-source "pvcreate/vgcreate/lvcreate" $LOG/lvm.out
[ -b /dev/mapper/vg0-root ] || die mbr-source "no /dev/mapper/vg0-root after lvcreate (udev-less lvm.conf?)"
ok "lvm-without-udev (pvcreate, vgcreate, lvcreate made /dev/mapper/vg0-root)"
{
    # mkfs.xfs refuses filesystems under 300 MB unless told it is a test.
    TEST_DIR=1 TEST_DEV=1 QA_CHECK_FS=1 mkfs.xfs -q -L root /dev/mapper/vg0-root &&
        mkswap -L swap /dev/mapper/vg0-swap &&
        mkfs.ext4 -q -L boot "$P1"
} >$LOG/mkfs.out 2>&1 || die mbr-source "mkfs" $LOG/mkfs.out
mount -t xfs /dev/mapper/vg0-root /mnt/a && fill /mnt/a 8 && sums /mnt/a >$LOG/mbr-root.sums && umount /mnt/a ||
    die mbr-source "fill the xfs root"
mount -t ext4 "$P1" /mnt/a && fill /mnt/a 3 && sums /mnt/a >$LOG/mbr-boot.sums && umount /mnt/a ||
    die mbr-source "fill /boot"
lvm_on "$P5" vgchange -an -q vg0 >/dev/null 2>&1 || die mbr-source "vgchange -an"
sync
fp "$SRC_MBR" "$P5" >$LOG/mbr-src.fp
echo "source: $(wc -l <$LOG/mbr-root.sums) files in root, $(wc -l <$LOG/mbr-boot.sums) in /boot"
sed 's/^/   /' $LOG/mbr-src.fp
SRC_P5_SIZE=$(size_of "$P5")
SRC_PV_SIZE=$(lvm_on "$P5" pvs --noheadings --units b --nosuffix -o pv_size | tr -d ' ')
SRC_LV_SIZE=$(lvm_on "$P5" lvs --noheadings --units b --nosuffix -o lv_size vg0/root | tr -d ' ')
lvm_on "$P5" vgchange -ay -q vg0 >/dev/null 2>&1
SRC_XFS_BLOCKS=$(xfs_blocks /dev/mapper/vg0-root)
lvm_on "$P5" vgchange -an -q vg0 >/dev/null 2>&1

step mbr-backup
SNAP_MBR=$(backup guest-mbr "mbr=$SRC_MBR") && [ -n "$SNAP_MBR" ] || die mbr-backup "backup-agent" $LOG/backup-guest-mbr.err
ok "mbr-backup ($SNAP_MBR)"

# --- (a) onto an identical disk ----------------------------------------------------------
step mbr-restore-same
restore mbr-same "$SNAP_MBR" --target "mbr=$MBR_SAME" || die mbr-same/restore "restore-agent failed" $LOG/restore-mbr-same.err
ok mbr-same/restore
T5=$(part "$MBR_SAME" 5)
step mbr-check-same
check mbr-same/partition-nodes nodes_exist "$(part "$MBR_SAME" 1)" "$(part "$MBR_SAME" 2)" "$T5"
check mbr-same/cmp-whole-disk same_bytes "$SRC_MBR" "$MBR_SAME"
check mbr-same/sfdisk-V sfdisk -V "$MBR_SAME"
check mbr-same/pvck lvm_on "$T5" pvck "$T5"
check mbr-same/vgck lvm_on "$T5" vgck vg0
check mbr-same/lvs-clean no_warnings lvm_on "$T5" lvs vg0
check mbr-same/e2fsck-boot e2fsck -fn "$(part "$MBR_SAME" 1)"
fp "$MBR_SAME" "$T5" >$LOG/mbr-same.fp
check mbr-same/uuids diff $LOG/mbr-src.fp $LOG/mbr-same.fp
check mbr-same/files-boot same_files "$(part "$MBR_SAME" 1)" ext4 $LOG/mbr-boot.sums
lvm_on "$T5" vgchange -ay -q vg0 >/dev/null 2>&1
check mbr-same/xfs_repair-n xfs_repair -n /dev/mapper/vg0-root
check mbr-same/files-root same_files /dev/mapper/vg0-root xfs $LOG/mbr-root.sums
lvm_on "$T5" vgchange -an -q vg0 >/dev/null 2>&1

# --- (b) onto a 1.5x disk with --grow ----------------------------------------------------
step mbr-restore-grow
restore mbr-big "$SNAP_MBR" --target "mbr=$MBR_BIG" --grow || die mbr-big/restore "restore-agent failed" $LOG/restore-mbr-big.err
ok mbr-big/restore
sed -n '/"grown"/,$p' $LOG/restore-mbr-big.json | sed 's/^/   /' | head -n 12
B5=$(part "$MBR_BIG" 5)
step mbr-check-grow
check mbr-big/partition-nodes nodes_exist "$(part "$MBR_BIG" 1)" "$(part "$MBR_BIG" 2)" "$B5"
check mbr-big/grown-reported grep -q '"grown": true' $LOG/restore-mbr-big.json
check mbr-big/lv-activated-from-restored-pv-only grep -q "activated from $B5 only" $LOG/restore-mbr-big.json
check mbr-big/lv-deactivated-after test ! -e /dev/mapper/vg0-root
check mbr-big/sfdisk-V sfdisk -V "$MBR_BIG"
check mbr-big/boot-partition-bytes same_bytes "$P1" "$(part "$MBR_BIG" 1)"
check mbr-big/pvck lvm_on "$B5" pvck "$B5"
check mbr-big/vgck lvm_on "$B5" vgck vg0
check mbr-big/lvs-clean no_warnings lvm_on "$B5" lvs vg0
check mbr-big/e2fsck-boot e2fsck -fn "$(part "$MBR_BIG" 1)"
fp "$MBR_BIG" "$B5" >$LOG/mbr-big.fp
check mbr-big/uuids diff $LOG/mbr-src.fp $LOG/mbr-big.fp
check mbr-big/files-boot same_files "$(part "$MBR_BIG" 1)" ext4 $LOG/mbr-boot.sums
check mbr-big/partition-grown bigger "$SRC_P5_SIZE" "$(size_of "$B5")"
check mbr-big/pv-grown bigger "$SRC_PV_SIZE" "$(lvm_on "$B5" pvs --noheadings --units b --nosuffix -o pv_size | tr -d ' ')"
check mbr-big/lv-grown bigger "$SRC_LV_SIZE" "$(lvm_on "$B5" lvs --noheadings --units b --nosuffix -o lv_size vg0/root | tr -d ' ')"
lvm_on "$B5" vgchange -ay -q vg0 >/dev/null 2>&1
check mbr-big/xfs_repair-n xfs_repair -n /dev/mapper/vg0-root
check mbr-big/xfs-grown bigger "$SRC_XFS_BLOCKS" "$(xfs_blocks /dev/mapper/vg0-root)"
check mbr-big/files-root same_files /dev/mapper/vg0-root xfs $LOG/mbr-root.sums
mount -t xfs -o ro /dev/mapper/vg0-root /mnt/b && df -k /mnt/b | tail -n 1 | sed 's/^/   df: /' && umount /mnt/b
lvm_on "$B5" vgchange -an -q vg0 >/dev/null 2>&1

# =========================================================================================
step gpt-source
# GPT: ESP (vfat with 4096-byte sectors, so it mounts on a 4Kn disk too) in slot 1, root ext4
# in slot 2, slot 3 empty, data ext4 in slot 4; ends on 4 KiB boundaries (4Kn restore).
sgdisk -o -n 1:2048:+32M -t 1:ef00 -c 1:"EFI System" -n 2:0:+64M -t 2:8304 -c 2:root -A 2:set:2 \
    -n 4:0:+60M -t 4:8300 -c 4:data "$SRC_GPT" >$LOG/sgdisk.out 2>&1 || die gpt-source "sgdisk" $LOG/sgdisk.out
G1=$(part "$SRC_GPT" 1)
G2=$(part "$SRC_GPT" 2)
G4=$(part "$SRC_GPT" 4)
nodes_exist "$G1" "$G2" "$G4" >/dev/null || die gpt-source "no partition nodes after sgdisk"
{ mkfs.fat -S 4096 -n ESP "$G1" && mkfs.ext4 -q -b 4096 -L root "$G2" && mkfs.ext4 -q -b 4096 -L data "$G4"; } \
    >$LOG/mkfs.out 2>&1 || die gpt-source "mkfs" $LOG/mkfs.out
mount -t vfat "$G1" /mnt/a && mkdir -p /mnt/a/EFI/BOOT && head -c 1048576 /dev/urandom >/mnt/a/EFI/BOOT/BOOTX64.EFI &&
    cp -r /etc/lvm /ferry-test /mnt/a/ && sums /mnt/a >$LOG/gpt-esp.sums && umount /mnt/a || die gpt-source "fill the ESP"
mount -t ext4 "$G2" /mnt/a && fill /mnt/a 6 && sums /mnt/a >$LOG/gpt-root.sums && umount /mnt/a || die gpt-source "fill root"
mount -t ext4 "$G4" /mnt/a && fill /mnt/a 4 && sums /mnt/a >$LOG/gpt-data.sums && umount /mnt/a || die gpt-source "fill data"
sync
fp "$SRC_GPT" >$LOG/gpt-src.fp
sed 's/^/   /' $LOG/gpt-src.fp
SRC_DATA_BLOCKS=$(ext_blocks "$G4")

step gpt-backup
SNAP_GPT=$(backup guest-gpt "gpt=$SRC_GPT") && [ -n "$SNAP_GPT" ] || die gpt-backup "backup-agent" $LOG/backup-guest-gpt.err
ok "gpt-backup ($SNAP_GPT)"

# sgdisk_same SRC DST SLOT: type and unique GUID, name, attributes, first byte (and for all
# but the grown slot 4, the size in bytes) equal across sector sizes
sgdisk_same() {
    local s=$1 t=$2 n=$3 f a b fs ft zs zt
    sgdisk -i "$n" "$s" >$LOG/i.src || return 1
    sgdisk -i "$n" "$t" >$LOG/i.dst || return 1
    for f in 'Partition GUID code' 'Partition unique GUID' 'Attribute flags' 'Partition name'; do
        a=$(grep "^$f" $LOG/i.src) b=$(grep "^$f" $LOG/i.dst)
        [ -n "$a" ] && [ "$a" = "$b" ] || { echo "$f: '$a' vs '$b'"; return 1; }
    done
    fs=$(sed -n 's/^First sector: \([0-9]*\).*/\1/p' $LOG/i.src) ft=$(sed -n 's/^First sector: \([0-9]*\).*/\1/p' $LOG/i.dst)
    [ $((fs * $(lss "$s"))) -eq $((ft * $(lss "$t"))) ] || { echo "first byte differs: $fs vs $ft sectors"; return 1; }
    if [ "$n" != 4 ]; then
        zs=$(sed -n 's/^Partition size: \([0-9]*\).*/\1/p' $LOG/i.src) zt=$(sed -n 's/^Partition size: \([0-9]*\).*/\1/p' $LOG/i.dst)
        [ $((zs * $(lss "$s"))) -eq $((zt * $(lss "$t"))) ] || { echo "size differs: $zs vs $zt sectors"; return 1; }
    fi
    echo "slot $n: $(grep -E '^(Partition GUID code|Partition name)' $LOG/i.dst | tr '\n' ' ')"
}
disk_guid() { sgdisk -p "$1" | sed -n 's/^Disk identifier (GUID): //p'; }
same_guid() {
    local a b
    a=$(disk_guid "$1") b=$(disk_guid "$2")
    [ -n "$a" ] && [ "$a" = "$b" ] && echo "$a"
}
sgdisk_clean() { sgdisk -v "$1" | tee $LOG/v.out; grep -q 'No problems found' $LOG/v.out; }
no_slot3() { sgdisk -i 3 "$1" | grep -q 'does not exist'; }

gpt_checks() { # NAME TARGET SECTOR-SIZE
    local n=$1 t=$2 s
    check "$n/logical-sector-size-$3" test "$(lss "$t")" = "$3"
    check "$n/partition-nodes" nodes_exist "$(part "$t" 1)" "$(part "$t" 2)" "$(part "$t" 4)"
    check "$n/no-partition-3" test ! -e "$(part "$t" 3)"
    check "$n/sgdisk-v" sgdisk_clean "$t"
    check "$n/disk-guid" same_guid "$SRC_GPT" "$t"
    for s in 1 2 4; do check "$n/slot-$s" sgdisk_same "$SRC_GPT" "$t" $s; done
    check "$n/slot-3-empty" no_slot3 "$t"
    check "$n/fsck-esp" fsck.fat -n "$(part "$t" 1)"
    check "$n/e2fsck-root" e2fsck -fn "$(part "$t" 2)"
    check "$n/e2fsck-data" e2fsck -fn "$(part "$t" 4)"
    fp "$t" >$LOG/$n.fp
    check "$n/uuids" diff $LOG/gpt-src.fp $LOG/$n.fp
    check "$n/files-esp" same_files "$(part "$t" 1)" vfat $LOG/gpt-esp.sums
    check "$n/files-root" same_files "$(part "$t" 2)" ext4 $LOG/gpt-root.sums
    check "$n/files-data" same_files "$(part "$t" 4)" ext4 $LOG/gpt-data.sums
    check "$n/grown-reported" grep -q '"grown": true' $LOG/restore-$n.json
    check "$n/data-partition-grown" bigger "$(size_of "$G4")" "$(size_of "$(part "$t" 4)")"
    check "$n/ext4-grown" bigger "$SRC_DATA_BLOCKS" "$(ext_blocks "$(part "$t" 4)")"
}

step gpt-restore-512
restore gpt-512 "$SNAP_GPT" --target "gpt=$GPT_512" --grow || die gpt-512/restore "restore-agent failed" $LOG/restore-gpt-512.err
ok gpt-512/restore
step gpt-check-512
gpt_checks gpt-512 "$GPT_512" 512

step gpt-restore-4k
restore gpt-4k "$SNAP_GPT" --target "gpt=$GPT_4K" --grow || die gpt-4k/restore "restore-agent failed" $LOG/restore-gpt-4k.err
ok gpt-4k/restore
step gpt-check-4k
gpt_checks gpt-4k "$GPT_4K" 4096

# =========================================================================================
step small-target
# A target smaller than the disk: refused before any write (data in the middle, first and
# last MiB zero, so only the size can be the reason).
head -c $((4 * 1024 * 1024)) /dev/urandom | dd of="$SMALL" bs=1M seek=30 conv=fsync 2>/dev/null
BEFORE=$(sha256sum <"$SMALL")
if restore small "$SNAP_GPT" --target "gpt=$SMALL"; then
    bad small/refused "restore-agent accepted a target smaller than the disk"
else
    ok small/refused
fi
check small/says-too-small grep -qiE 'too small|needs at least' $LOG/restore-small.err
grep -iE 'too small|needs at least' $LOG/restore-small.err | head -n 1 | cut -c1-300 | sed 's/^/   /'
check small/target-unchanged test "$(sha256sum <"$SMALL")" = "$BEFORE"

# =========================================================================================
step two-disk-source
sgdisk -o -n 1:2048:0 -t 1:8300 -c 1:x0 "$X0" >/dev/null 2>&1 || die two-disk "sgdisk $X0"
X01=$(part "$X0" 1)
nodes_exist "$X01" >/dev/null || die two-disk "no $X01"
{ mkfs.ext4 -q -L x0 "$X01" && mkfs.ext4 -q -L x1 "$X1"; } >$LOG/mkfs.out 2>&1 || die two-disk "mkfs" $LOG/mkfs.out
mount -t ext4 "$X01" /mnt/a && fill /mnt/a 2 && sums /mnt/a >$LOG/x0.sums && umount /mnt/a || die two-disk "fill x0"
mount -t ext4 "$X1" /mnt/a && fill /mnt/a 2 && sums /mnt/a >$LOG/x1.sums && umount /mnt/a || die two-disk "fill x1"
sync
SNAP_TWO=$(backup guest-two "x0=$X0" "x1=$X1") && [ -n "$SNAP_TWO" ] || die two-disk/backup "backup-agent" $LOG/backup-guest-two.err
ok "two-disk/backup ($SNAP_TWO: x0, x1)"
step two-disk-restore
restore two "$SNAP_TWO" --target "x0=$Y0" --target "x1=$Y1" || die two-disk/restore "restore-agent failed" $LOG/restore-two.err
ok two-disk/restore
check two-disk/first-onto-first same_bytes "$X0" "$Y0"
check two-disk/second-onto-second same_bytes "$X1" "$Y1"
check two-disk/partition-node nodes_exist "$(part "$Y0" 1)"
check two-disk/files-x0 same_files "$(part "$Y0" 1)" ext4 $LOG/x0.sums
check two-disk/files-x1 same_files "$Y1" ext4 $LOG/x1.sums

step end
finish
