//! Writes the seed corpora in fuzz/seeds/<target>/ from small real inputs: disks partitioned by
//! sgdisk and sfdisk and formatted by mkfs, LVM2 PVs built by the probe tests' generator (lvm
//! needs device-mapper), qcow2 and VMDK images converted by qemu-img, a real BCD hive from
//! /work/shared/testdata (or $FERRY_TESTDATA), a cpio archive, a certificate from openssl, and
//! the wire types as the agents send them. Run by fuzz/seeds/generate.sh; the output is
//! committed (small), so CI never needs the tools.

use std::path::{Path, PathBuf};

use ferry_format::agent::{JobState, Mapping};
use ferry_format::signing::SIGNING_CONTEXT;
use ferry_format::DiskIndex;
use ferry_fuzz::disk::{build_gpt, build_mbr, build_pv, vg_text, Ebr, MemDisk};
use ferry_fuzz::{sparse_encode, FLAG_4K};
use ferry_test_support::tools::{image, run, run_stdin};
use ring::signature::{Ed25519KeyPair, KeyPair};

const PV_UUID: &str = "HaNdBu-iLtP-V000-1111-2222-3333-444444";

fn out(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds").join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
    println!("{target}/{name}: {} bytes", bytes.len());
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// Disks made by the real partitioning and formatting tools.
fn tool_disks(tmp: &Path) -> Vec<(&'static str, Vec<u8>)> {
    let mut disks = Vec::new();
    let gpt = image(tmp, "gpt.img", 2 << 20);
    let g = gpt.to_str().unwrap();
    run("sgdisk", &["-n1:2048:+256K", "-t1:ef00", "-n2:0:+512K", "-t2:8300", "-n3:0:0", "-t3:8e00", g]);
    disks.push(("gpt-sgdisk", read(&gpt)));
    let mbr = image(tmp, "mbr.img", 8 << 20);
    run_sfdisk(&mbr, "label: dos\nstart=2048, size=1024, type=83, bootable\nstart=4096, size=12288, type=5\nsize=1024, type=83\nsize=1024, type=8e\nsize=2048, type=82\n");
    disks.push(("mbr-ebr-sfdisk", read(&mbr)));
    for (name, cmd, args) in [
        ("ext4", "mkfs.ext4", &["-q", "-F", "-b", "1024", "-N", "64"][..]),
        ("vfat", "mkfs.vfat", &[][..]),
        ("ntfs", "mkntfs", &["-q", "-F", "-f"][..]),
        ("swap", "mkswap", &[][..]),
    ] {
        let img = image(tmp, &format!("{name}.img"), 4 << 20);
        let mut a: Vec<&str> = args.to_vec();
        a.push(img.to_str().unwrap());
        if std::process::Command::new(cmd).args(&a).output().is_ok_and(|o| o.status.success()) {
            let mut d = read(&img);
            // mkntfs fills $LogFile with 0xff: not read by the probe, and it would make the
            // seed a megabyte.
            for s in d.chunks_mut(512) {
                if s.iter().all(|&b| b == 0xff) {
                    s.fill(0);
                }
            }
            disks.push((name, d));
        } else {
            eprintln!("gen_seeds: {cmd} failed or is missing; no {name} seed");
        }
    }
    disks
}

fn run_sfdisk(img: &Path, script: &str) {
    run_stdin("sfdisk", &["-q", img.to_str().unwrap()], Some(script));
}

fn disk_seeds(tmp: &Path) -> Vec<u8> {
    let real = tool_disks(tmp);
    for (name, d) in &real {
        let target = match *name {
            n if n.starts_with("gpt") => "gpt",
            n if n.starts_with("mbr") => "mbr",
            _ => "disk_probe",
        };
        out(target, name, &sparse_encode(d, 0));
        out("disk_probe", name, &sparse_encode(d, 0));
        if *name != "ntfs" {
            out("blank_check", name, &sparse_encode(d, 0));
        }
    }
    // A target carrying a job's in-progress marker, and one holding an ISO 9660 volume.
    let mut marked = vec![0u8; 4 << 20];
    let marker = ferry_format::marker::RestoreMarker::new("j1", "web01-20261122T010203Z", "sda", "proof");
    marked[..4096].copy_from_slice(&marker.encode());
    out("blank_check", "marker", &sparse_encode(&marked, 0));
    let mut iso = vec![0u8; 4 << 20];
    iso[32768..32774].copy_from_slice(b"\x01CD001");
    iso[32808..32819].copy_from_slice(b"FERRY_RESCU");
    out("blank_check", "iso9660", &sparse_encode(&iso, 0));
    let gpt = build_gpt(4096, &[(1, 2048, 2559), (2, 2560, 4000)]);
    out("gpt", "gpt-built", &sparse_encode(&gpt, 0));
    // The same GPT at 4096-byte sectors: what a 4Kn disk image holds.
    let mut gpt4k = vec![0u8; 512 * 4096];
    gpt4k[..512].copy_from_slice(&gpt[..512]);
    for (lba, at) in [(1usize, 4096usize), (4095, 4096 * 511)] {
        gpt4k[at..at + 512].copy_from_slice(&gpt[lba * 512..lba * 512 + 512]);
    }
    out("gpt", "gpt-4k-unsealed", &sparse_encode(&gpt4k, FLAG_4K));
    let ebrs = [
        Ebr { lba: 100, data: Some((0x83, 1, 50)), link: Some((60, 40)) },
        Ebr { lba: 160, data: Some((0x8e, 1, 30)), link: None },
    ];
    let mbr = build_mbr(512, &[(0x83, 1, 99), (0x05, 100, 200)], &ebrs);
    out("mbr", "mbr-built", &sparse_encode(&mbr, 0));
    let pv = build_pv(4 << 20, PV_UUID, 64 << 10, &vg_text(PV_UUID, 3), 512);
    out("lvm", "pv-whole-disk", &sparse_encode(&pv, 0));
    out("disk_probe", "pv-whole-disk", &sparse_encode(&pv, 0));
    // A PV in the first MBR partition (sector 2048), as Debian's installer lays it out.
    let mut d = build_mbr(10240, &[(0x8e, 2048, 8192)], &[]);
    let small = build_pv(4 << 20, PV_UUID, 64 << 10, &vg_text(PV_UUID, 3), 512);
    d[2048 * 512..2048 * 512 + small.len()].copy_from_slice(&small);
    out("lvm", "pv-in-mbr-partition", &sparse_encode(&d, 0));
    out("lvm_text", "vg", vg_text(PV_UUID, 3).as_bytes());
    pv
}

fn image_seeds(tmp: &Path, raw: &[u8]) {
    let src = tmp.join("src.raw");
    std::fs::write(&src, &raw[..1 << 20]).unwrap();
    let s = src.to_str().unwrap();
    let conv = |fmt: &str, opts: &str, name: &str, extra: &[&str]| -> PathBuf {
        let dst = tmp.join(name);
        let mut args = vec!["convert", "-q", "-O", fmt, "-o", opts];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[s, dst.to_str().unwrap()]);
        run("qemu-img", &args);
        dst
    };
    out("qcow2", "v3", &read(&conv("qcow2", "cluster_size=4096", "a.qcow2", &[])));
    out("qcow2", "v3-compressed", &read(&conv("qcow2", "cluster_size=4096", "c.qcow2", &["-c"])));
    out("qcow2", "v2", &read(&conv("qcow2", "compat=0.10,cluster_size=4096", "b.qcow2", &[])));
    out("vmdk", "stream-optimized", &read(&conv("vmdk", "subformat=streamOptimized", "s.vmdk", &[])));
    let sparse = read(&conv("vmdk", "subformat=monolithicSparse", "m.vmdk", &[]));
    if sparse.len() <= 256 << 10 {
        out("vmdk", "monolithic-sparse", &sparse);
    }
    out(
        "vmdk",
        "descriptor-flat",
        b"# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n\n# Extent description\nRW 1 FLAT \"flat.img\" 0\n\nddb.adapterType = \"ide\"\n",
    );
}

fn hive_seeds(tmp: &Path) {
    let data = std::env::var("FERRY_TESTDATA").unwrap_or_else(|_| "/work/shared/testdata".into());
    let bcd = Path::new(&data).join("windows/BCD.xz");
    let dst = tmp.join("BCD");
    let out_file = std::fs::File::create(&dst).unwrap();
    let ok = std::process::Command::new("xz")
        .args(["-dc", bcd.to_str().unwrap()])
        .stdout(out_file)
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        out("hive", "BCD", &read(&dst));
    } else {
        eprintln!("gen_seeds: no {}; no hive seed", bcd.display());
    }
}

fn text_seeds(tmp: &Path) {
    let inf = "; test\n[Version]\nSignature=\"$WINDOWS NT$\"\nClass=SCSIAdapter\nClassGUID={4D36E97B-E325-11CE-BFC1-08002BE10318}\nProvider=%VENDOR%\n\n[Manufacturer]\n%VENDOR%=Standard,NTamd64\n\n[Standard.NTamd64]\n%DEV%=viostor_inst, PCI\\VEN_1AF4&DEV_1001&SUBSYS_00021AF4&REV_00, \\\n  PCI\\VEN_1AF4&DEV_1042\n\n[viostor_inst.NTamd64.Services]\nAddService=viostor,0x00000002,viostor_Service_Inst\n\n[viostor_Service_Inst]\nServiceType=1\nStartType=0\nErrorControl=1\nServiceBinary=%12%\\viostor.sys\nLoadOrderGroup=SCSI miniport\n\n[Strings]\nVENDOR=\"Red Hat, Inc.\"\nDEV=\"Red Hat VirtIO SCSI controller\"\n";
    out("inf", "viostor-utf8", inf.as_bytes());
    let mut utf16 = vec![0xFF, 0xFE];
    utf16.extend(inf.encode_utf16().flat_map(u16::to_le_bytes));
    out("inf", "viostor-utf16", &utf16);

    // A newc cpio made by cpio(1), and the same after an early-microcode archive.
    let dir = tmp.join("cpio");
    std::fs::create_dir_all(dir.join("usr/lib/modules")).unwrap();
    std::fs::write(dir.join("init"), "#!/bin/sh\n").unwrap();
    std::fs::write(dir.join("usr/lib/modules/virtio_blk.ko"), "x").unwrap();
    let archive = run_bytes(
        "sh",
        &["-c", &format!("cd {} && find . | sort | cpio -o -H newc --quiet", dir.display())],
    );
    out("initrd", "newc", &archive);
    let mut two = archive.clone();
    two.extend_from_slice(&[0x1f, 0x8b]);
    two.extend_from_slice(&archive);
    out("initrd", "newc-then-gzip", &two);

    let mut offer = vec![0u8; 240];
    offer[..4].copy_from_slice(&[2, 1, 6, 0]);
    offer[4..8].copy_from_slice(&0xdead_beefu32.to_be_bytes());
    offer[16..20].copy_from_slice(&[10, 0, 2, 15]);
    offer[20..24].copy_from_slice(&[10, 0, 2, 2]);
    offer[28..34].copy_from_slice(&[0x52, 0x54, 0, 0x12, 0x34, 0x56]);
    offer[236..240].copy_from_slice(&[99, 130, 83, 99]);
    offer.extend_from_slice(&[53, 1, 5, 54, 4, 10, 0, 2, 2, 1, 4, 255, 255, 255, 0]);
    offer.extend_from_slice(&[3, 8, 10, 0, 2, 2, 10, 0, 2, 1, 6, 4, 10, 0, 2, 3, 51, 4, 0, 1, 0x51, 0x80]);
    offer.extend_from_slice(&[15, 7, b'e', b'x', b'a', b'm', b'p', b'l', b'e', 255]);
    out("dhcp", "ack", &offer);

    out("cmdline", "static", b"console=ttyS0 ferry.appliance=https://10.0.0.5:8443 ferry.token=abc ip=10.0.0.9::10.0.0.1:255.255.255.0:rescue:eth0:none nameserver=10.0.0.1 ferry.on_failure=shell");
    out("cmdline", "dhcp-site", b"quiet ip=dhcp ferry.debug=1\0appliance=https://backup.example.com:8443\ntoken=enroll-xyz\nca_sha256=00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\nretry_window=15m\n");
    // network_config: byte 0 picks the system (0 ifupdown, 1 netplan, 2 NetworkManager,
    // 3 networkd .network, 4 .link, 5 ifcfg), then the file as its documentation writes it.
    for (name, pick, text) in [
        ("ifupdown", 0u8, "auto ens192\niface ens192 inet static\n    address 10.1.2.3/24\n    gateway 10.1.2.1\n    dns-nameservers 10.1.0.53\n    hwaddress ether 00:50:56:aa:00:01\n\nauto bond0\niface bond0 inet dhcp\n    bond-slaves ens192 ens224\n\niface ens192.100 inet manual\n    vlan-raw-device ens192\n"),
        ("netplan", 1, "network:\n  version: 2\n  ethernets:\n    ens192:\n      match:\n        macaddress: \"00:50:56:aa:00:01\"\n      set-name: ens192\n      addresses: [10.1.2.3/24]\n      routes:\n        - to: default\n          via: 10.1.2.1\n      nameservers:\n        addresses:\n          - 10.1.0.53\n  bonds:\n    bond0:\n      interfaces: [ens192, ens224]\n"),
        ("nmconnection", 2, "[connection]\nid=ens192\ntype=ethernet\ninterface-name=ens192\n\n[ethernet]\nmac-address=00:50:56:AA:00:01\n\n[ipv4]\naddress1=10.1.2.3/24,10.1.2.1\ndns=10.1.0.53;\nmethod=manual\n"),
        ("networkd", 3, "[Match]\nName=ens192\n\n[Network]\nAddress=10.1.2.3/24\nGateway=10.1.2.1\nDNS=10.1.0.53\nVLAN=ens192.100\n"),
        ("link", 4, "[Match]\nMACAddress=00:50:56:aa:00:01\n\n[Link]\nName=ens192\n"),
        ("ifcfg", 5, "DEVICE=ens192\nHWADDR=00:50:56:AA:00:01\nBOOTPROTO=none\nIPADDR=10.1.2.3\nPREFIX=24\nGATEWAY=10.1.2.1\nDNS1=10.1.0.53\n"),
    ] {
        let mut seed = vec![pick];
        seed.extend_from_slice(text.as_bytes());
        out("network_config", name, &seed);
    }
}

fn run_bytes(cmd: &str, args: &[&str]) -> Vec<u8> {
    let o = std::process::Command::new(cmd).args(args).output().unwrap();
    assert!(o.status.success(), "{cmd} {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    o.stdout
}

/// JSON seeds of the wire types; each is checked to parse, so a changed type shows here.
fn json_seeds(tmp: &Path, pv: &[u8]) {
    let layout = ferry_probe::probe(&MemDisk { data: pv.to_vec(), sector_size: 512 })
        .expect("the seed PV probes");
    let disk = serde_json::json!({
        "name": "sda", "size": pv.len(), "logical_sector_size": 512, "source": "/dev/sda",
        "source_format": "raw", "index_digest": "00".repeat(32),
        "chunks": {"data": 1, "zero": 2, "unused": 1}, "layout": layout,
    });
    let manifest = serde_json::json!({
        "version": 1, "snapshot": "web01-20261122T010203Z", "machine": "web01",
        "created": "2026-11-22T01:02:03Z", "chunk_size": 4194304, "disks": [disk],
        "os": {"family": "linux", "distro": "debian", "boot_mode": "bios"}, "agent": "0.1.0",
    })
    .to_string();
    let m: ferry_format::Manifest = serde_json::from_str(&manifest).expect("seed manifest parses");
    m.check().expect("seed manifest checks");
    let mut signed_mode = vec![1u8];
    signed_mode.extend_from_slice(manifest.as_bytes());
    out("manifest", "to-sign", &signed_mode);
    let pair = Ed25519KeyPair::from_seed_unchecked(&[7; 32]).unwrap();
    let mut msg = SIGNING_CONTEXT.to_vec();
    msg.extend_from_slice(manifest.as_bytes());
    use base64::Engine;
    let sig = base64::engine::general_purpose::STANDARD.encode(pair.sign(&msg).as_ref());
    let answer = serde_json::json!({"manifest": manifest, "signature": sig, "key_id": "x"});
    let mut answer_mode = vec![0u8];
    answer_mode.extend_from_slice(answer.to_string().as_bytes());
    out("manifest", "signed-answer", &answer_mode);

    let mut index = DiskIndex::new_zero(3 << 20, 1 << 20).unwrap();
    index.entries[1] = ferry_format::Entry::Data(ferry_format::ChunkId::of(b"x"));
    index.entries[2] = ferry_format::Entry::Unused;
    out("disk_index", "three-chunks", &index.encode());

    let key = tmp.join("k.pem");
    run("openssl", &["genpkey", "-algorithm", "ed25519", "-out", key.to_str().unwrap()]);
    let cert = run("openssl", &["req", "-x509", "-key", key.to_str().unwrap(), "-subj", "/CN=ferry", "-days", "1"]);
    let public = run("openssl", &["pkey", "-in", key.to_str().unwrap(), "-pubout"]);
    let _ = pair.public_key();
    out("trust_bundle", "ca-pem", format!("{cert}{public}").as_bytes());

    let mapping: Mapping = "sda=/dev/vda".parse().unwrap();
    let auto: Mapping = "sdb=auto".parse().unwrap();
    let inventory = r#"{"disks":[{"name":"vda","size":21474836480,"model":"QEMU","serial":"S1","logical_sector_size":512,"physical_sector_size":512,"blank":true}],"nics":[{"name":"eth0","mac":"52:54:00:12:34:56","carrier":true}],"firmware":"uefi","memory_bytes":2147483648,"cpu":{"count":2,"model":"QEMU Virtual CPU"}}"#;
    let bodies: Vec<(u8, &str, String)> = vec![
        (0, "enroll", format!(r#"{{"inventory":{inventory},"version":"0.1.0","resume":[{{"job":"j1","proof":"{}"}}]}}"#, "ab".repeat(32))),
        (1, "events", r#"{"job":"j1","events":[{"time":"2026-11-22T01:02:03Z","level":"info","phase":"restore","message":"fetching","bytes_done":10,"bytes_total":100,"rate":5,"eta":18}]}"#.into()),
        (2, "job-state-failed", serde_json::to_string(&JobState::Failed { reason: "disk full".into() }).unwrap()),
        (2, "job-state-running", serde_json::to_string(&JobState::Running).unwrap()),
        (3, "job", format!(r#"{{"id":"j1","snapshot":"web01-20261122T010203Z","mappings":[{}],"requested":[{}],"proof":"{}","then":"reboot","overwrite":false,"options":{{"grow":true,"grow_lv":"vg0/root","fixup":true}},"state":"pending"}}"#, serde_json::to_string(&mapping).unwrap(), serde_json::to_string(&auto).unwrap(), "cd".repeat(32))),
        (4, "commit", format!(r#"{{"disks":[{disk}],"os":{{"family":"linux"}},"agent":"0.1.0"}}"#)),
        (5, "backup-start", r#"{"machine":"web01","chunk_size":4194304}"#.into()),
        (6, "known-chunks", format!(r#"{{"ids":["{}","{}"]}}"#, "00".repeat(32), "ff".repeat(32))),
        (7, "enroll-reply", r#"{"agent":"a1","credential":"c","approved":false,"code":"1234"}"#.into()),
        (9, "missing", format!(r#"{{"error":"missing","missing":["{}"]}}"#, "11".repeat(32))),
        (10, "snapshots", r#"[{"snapshot":"s","machine":"web01","created":"2026-11-22T01:02:03Z","disks":["sda"],"size":1,"data_chunks":1}]"#.into()),
        (12, "hello", r#"{"appliance":"backup","version":"0.1.0","api":1,"role":"restore"}"#.into()),
        (15, "text-mapping", "sda=serial:S1".into()),
        (15, "text-pattern", "web*.example.com".into()),
    ];
    for (which, name, body) in bodies {
        let mut b = vec![which];
        b.extend_from_slice(body.as_bytes());
        out("api_bodies", name, &b);
    }
}

fn chunk_seeds() {
    for (name, data) in [("zeros-64k", vec![0u8; 64 << 10]), ("text", b"ferry chunk ".repeat(300))] {
        let frame = zstd::bulk::compress(&data, 3).unwrap();
        let mut b = ferry_format::ChunkId::of(&data).0.to_vec();
        b.extend_from_slice(&frame);
        out("chunk_frame", name, &b);
    }
}

fn main() {
    let tmp = std::env::temp_dir().join(format!("ferry-seeds-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let pv = disk_seeds(&tmp);
    image_seeds(&tmp, &pv);
    hive_seeds(&tmp);
    text_seeds(&tmp);
    json_seeds(&tmp, &pv);
    chunk_seeds();
    std::fs::remove_dir_all(&tmp).unwrap();
}
