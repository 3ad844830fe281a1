//! The CLI surface (documented in docs/image.md) stays as documented: subcommands and flags exist,
//! and wrong combinations fail with a message rather than a half-written output.

use std::process::Command;

fn run(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_image-builder"))
        .args(args)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn help_lists_subcommands_and_flags() {
    let (ok, top) = run(&["--help"]);
    assert!(ok);
    assert!(top.contains("build") && top.contains("customize"), "{top}");
    let (_, build) = run(&["build", "--help"]);
    for flag in [
        "--out",
        "--kernel-deb",
        "--cache",
        "--agent",
        "--busybox",
        "--drivers-dir",
        "--initramfs-dir",
        "--append",
        "--appliance",
        "--ca",
        "--token",
        "--ip",
        "--nameserver",
        "--virtio-win",
        "SOURCE_DATE_EPOCH",
    ] {
        assert!(build.contains(flag), "build --help lacks {flag}:\n{build}");
    }
    let (_, customize) = run(&["customize", "--help"]);
    for flag in [
        "--iso",
        "--initrd",
        "--out",
        "--appliance",
        "--ca",
        "--token",
        "--ip",
        "--virtio-win",
    ] {
        assert!(
            customize.contains(flag),
            "customize --help lacks {flag}:\n{customize}"
        );
    }
}

#[test]
fn site_settings_go_together() {
    let (ok, msg) = run(&[
        "customize",
        "--iso",
        "x.iso",
        "--out",
        "y.iso",
        "--appliance",
        "https://a",
    ]);
    assert!(!ok);
    assert!(msg.contains("--ca") && msg.contains("--token"), "{msg}");
    let (ok, msg) = run(&["customize", "--iso", "x.iso", "--initrd", "i", "--out", "y"]);
    assert!(!ok && msg.contains("cannot be used with"), "{msg}");
}

#[test]
fn missing_agent_says_how_to_build_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let (ok, msg) = run(&[
        "build",
        "--out",
        out.to_str().unwrap(),
        "--agent",
        "/nonexistent/restore-agent",
    ]);
    assert!(!ok);
    assert!(
        msg.contains("cargo build --release --target x86_64-unknown-linux-musl -p restore-agent"),
        "{msg}"
    );
}
