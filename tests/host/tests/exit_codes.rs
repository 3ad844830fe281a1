//! The documented exit statuses (docs/configuration.md, "Exit codes") from the real binaries,
//! one case or more per code: 1 other failure, 2 bad usage (a flag, a config file), 3 the
//! appliance unreachable for the whole retry window, 4 refused before anything was written, 5
//! verification failed.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

const MIB: u64 = 1 << 20;

fn code(cmd: &mut Command) -> (i32, String) {
    let out = run(cmd);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code().expect("exited, not killed"), err)
}

fn expect(cmd: &mut Command, want: i32, says: &str) {
    let (got, err) = code(cmd);
    assert_eq!(got, want, "{cmd:?}: exit {got}, want {want}: {err}");
    assert!(err.contains(says), "{cmd:?}: {err}");
}

fn chunk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(chunk_files(&p));
        } else if p.file_name().is_some_and(|n| n.len() == 64) {
            out.push(p);
        }
    }
    out.sort();
    out
}

#[test]
fn each_kind_of_failure_exits_with_its_own_code() {
    let a = Appliance::start_local(); // local only: it corrupts a file of chunks/
    let work = tempfile::tempdir().unwrap();
    let img = work.path().join("d.img");
    make_image(&img, 16 * MIB, 7);
    let b = a.backup("m", &[&img]);
    let s = b["snapshot"].as_str().unwrap().to_string();

    // 1: any other failure.
    expect(
        a.appliance()
            .args(["jobs", "show", "job-nosuch", "--data"])
            .arg(a.data()),
        1,
        "job-nosuch",
    );

    // 2: bad usage: a flag clap refuses, a config file the appliance refuses, a bad agent.toml.
    expect(
        a.appliance().args(["jobs", "list", "--colour"]),
        2,
        "--colour",
    );
    let bad = work.path().join("appliance.toml");
    std::fs::write(&bad, "colour = \"blue\"\n").unwrap();
    expect(
        a.appliance()
            .arg("--config")
            .arg(&bad)
            .args(["token", "list"]),
        2,
        "colour",
    );
    let agent_toml = work.path().join("agent.toml");
    std::fs::write(&agent_toml, "colour = \"blue\"\n").unwrap();
    expect(
        Command::new(bin("backup-agent"))
            .args(["service", "--check", "--config"])
            .arg(&agent_toml),
        2,
        "agent.toml",
    );

    // 3: nothing answers at the URL for the whole retry window.
    let closed = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let dest = work.path().join("r.img");
    expect(
        Command::new(bin("restore-agent"))
            .args(["restore", "--retry-window", "2s", "--appliance"])
            .arg(format!("https://127.0.0.1:{closed}"))
            .arg("--ca")
            .arg(a.ca())
            .args(["--token", "t", "--snapshot", &s, "--target"])
            .arg(format!("d={}", dest.display())),
        3,
        "gave up",
    );

    // 4: refused before anything was written: a target holding data; a token the appliance
    // refuses (over the remote CLI).
    std::fs::write(&dest, b"precious").unwrap();
    expect(&mut a.restore_cmd(&s, &[("d", &dest)]), 4, "--overwrite");
    assert_eq!(std::fs::read(&dest).unwrap(), b"precious");
    expect(
        a.appliance()
            .args(["--appliance", &a.url(), "--ca"])
            .arg(a.ca())
            .args(["jobs", "list"])
            .env("FERRY_TOKEN", "not-a-token"),
        4,
        "401",
    );

    // 5: a stored chunk whose bytes are not its id: the restore stops, verify says so.
    let chunks = chunk_files(&a.data().join("chunks"));
    let victim = &chunks[chunks.len() / 2];
    let other = work.path().join("other");
    std::fs::write(&other, vec![0x5au8; 1 << 20]).unwrap();
    sh(&format!(
        "zstd -q -f -c {} > {}",
        other.display(),
        victim.display()
    ));
    std::fs::remove_file(&dest).unwrap();
    expect(&mut a.restore_cmd(&s, &[("d", &dest)]), 5, "corrupt");
    expect(
        a.appliance().args(["verify", "--data"]).arg(a.data()),
        5,
        "damaged",
    );
}
