//! Fake machines for the rescue agent's host mode (a /sys, /proc and /dev tree under a temp
//! dir), and the `appliance jobs` calls the job tests make.

use std::fs;
use std::process::Command;

use super::{ok, Appliance};

/// A fake machine under a temp dir: one NIC with `mac`, and blank disks `(name, size)`.
pub fn machine(mac: &str, disks: &[(&str, u64)]) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let put = |rel: &str, text: &str| {
        let p = root.path().join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    };
    put("sys/class/net/lo/address", "00:00:00:00:00:00\n");
    put("sys/class/net/eth0/address", &format!("{mac}\n"));
    put("sys/class/net/eth0/carrier", "1\n");
    put("proc/meminfo", "MemTotal:        1024000 kB\n");
    put("proc/cpuinfo", "processor\t: 0\nmodel name\t: Fake CPU\n");
    fs::create_dir_all(root.path().join("dev")).unwrap();
    for (name, size) in disks {
        put(
            &format!("sys/block/{name}/size"),
            &format!("{}\n", size / 512),
        );
        put(
            &format!("sys/block/{name}/queue/logical_block_size"),
            "512\n",
        );
        put(
            &format!("sys/block/{name}/queue/physical_block_size"),
            "512\n",
        );
        put(
            &format!("sys/block/{name}/device/serial"),
            &format!("FAKE-{name}\n"),
        );
        fs::File::create(root.path().join("dev").join(name))
            .unwrap()
            .set_len(*size)
            .unwrap();
    }
    root
}

pub fn json(cmd: &mut Command) -> serde_json::Value {
    let out = ok(cmd);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{cmd:?} printed {out:?}: {e}"))
}

pub fn create_job(a: &Appliance, mac: &str, snapshot: &str, map: &str, extra: &[&str]) -> String {
    let v = json(
        a.appliance()
            .args(["jobs", "create", "--json", "--data"])
            .arg(a.data())
            .args(["--mac", mac, "--snapshot", snapshot, "--map", map])
            .args(extra),
    );
    v["id"].as_str().expect("job id").to_string()
}

pub fn show(a: &Appliance, job: &str) -> serde_json::Value {
    json(
        a.appliance()
            .args(["jobs", "show", "--json", "--data"])
            .arg(a.data())
            .arg(job),
    )
}
