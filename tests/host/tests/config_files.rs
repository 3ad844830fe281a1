//! The real `appliance` binary with its config files (docs/configuration.md): `--config FILE`
//! (or FERRY_CONFIG) names the store directory and `serve`'s address, so `init`, `token list`
//! and `serve` need no --data; FERRY_DATA and --data override the file in that order; a bad key
//! or a missing named file is refused naming it. The per-user cli.toml drives a remote
//! appliance with a token file, which must not be readable by others.

mod common;

use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// `appliance` with none of the caller's FERRY_* settings or user config leaking in.
fn appliance(xdg: &Path) -> Command {
    let mut c = Command::new(bin("appliance"));
    for v in [
        "FERRY_CONFIG",
        "FERRY_DATA",
        "FERRY_APPLIANCE",
        "FERRY_CA",
        "FERRY_TOKEN",
        "FERRY_LISTEN",
    ] {
        c.env_remove(v);
    }
    c.env("XDG_CONFIG_HOME", xdg);
    c
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_config_file_names_the_store_and_flags_and_variables_override_it() {
    let tmp = tempfile::tempdir().unwrap();
    let xdg = tmp.path().join("xdg");
    let store = tmp.path().join("store");
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let config = tmp.path().join("appliance.toml");
    std::fs::write(
        &config,
        format!(
            "data = \"{}\"\nlisten = \"127.0.0.1:{port}\"\ngc_every = \"0\"\nmax_connections = 16\n",
            store.display()
        ),
    )
    .unwrap();

    // init and token list: no --data anywhere.
    let init = ok(appliance(&xdg)
        .arg("--config")
        .arg(&config)
        .args(["init", "--json"]));
    let admin = serde_json::from_str::<serde_json::Value>(&init).unwrap()["admin_token"]
        .as_str()
        .expect("admin_token")
        .to_string();
    assert!(store.join("ca.pem").exists(), "init wrote no store at data");
    let list = ok(appliance(&xdg)
        .env("FERRY_CONFIG", &config)
        .args(["token", "list", "--json"]));
    let tokens: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(tokens.as_array().map(Vec::len), Some(1), "{list}");

    // FERRY_DATA beats the file, --data beats FERRY_DATA.
    let elsewhere = tmp.path().join("no-store-here");
    let err = fails(
        appliance(&xdg)
            .env("FERRY_CONFIG", &config)
            .env("FERRY_DATA", &elsewhere)
            .args(["token", "list"]),
    );
    assert!(
        err.contains("no-store-here") && err.contains("FERRY_DATA"),
        "{err}"
    );
    ok(appliance(&xdg)
        .env("FERRY_CONFIG", &config)
        .env("FERRY_DATA", &elsewhere)
        .args(["token", "list", "--data"])
        .arg(&store));

    // A key the appliance does not know, and a value it cannot use: refused, named.
    let bad = tmp.path().join("bad.toml");
    std::fs::write(
        &bad,
        "data = \"/srv/ferry\"\nlisten_on = \"0.0.0.0:8443\"\n",
    )
    .unwrap();
    let err = fails(
        appliance(&xdg)
            .arg("--config")
            .arg(&bad)
            .args(["token", "list"]),
    );
    assert!(
        err.contains("bad.toml") && err.contains("listen_on") && err.contains("`listen`"),
        "{err}"
    );
    std::fs::write(&bad, "listen = \"8443\"\n").unwrap();
    let err = fails(
        appliance(&xdg)
            .arg("--config")
            .arg(&bad)
            .args(["serve", "--data"])
            .arg(&store),
    );
    assert!(
        err.contains("bad.toml, key `listen`") && err.contains("ADDR:PORT"),
        "{err}"
    );
    // A file named explicitly must exist; the default one need not.
    let err = fails(
        appliance(&xdg)
            .arg("--config")
            .arg(tmp.path().join("missing.toml"))
            .args(["token", "list"]),
    );
    assert!(err.contains("missing.toml"), "{err}");

    // serve takes its address from the file.
    let log = std::fs::File::create(tmp.path().join("serve.log")).unwrap();
    let _server = Server(
        appliance(&xdg)
            .arg("--config")
            .arg(&config)
            .arg("serve")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let t = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "serve did not listen on the configured address: {}",
            std::fs::read_to_string(tmp.path().join("serve.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // The user's cli.toml: a remote appliance, its CA and a token file only the user reads.
    let dir = xdg.join("ferry");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(store.join("ca.pem"), dir.join("ca.pem")).unwrap();
    let token_file = dir.join("admin.token");
    std::fs::write(&token_file, format!("{admin}\n")).unwrap();
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(
        dir.join("cli.toml"),
        format!(
            "appliance = \"https://127.0.0.1:{port}\"\nca = \"ca.pem\"\ntoken_file = \"admin.token\"\n"
        ),
    )
    .unwrap();
    // No system config at all: only the user's file can say where to go.
    let nowhere = tmp.path().join("nowhere");
    let remote = || {
        let mut c = appliance(&xdg);
        c.env("FERRY_DATA", "").env("HOME", &nowhere);
        c
    };
    let out = ok(remote().args([
        "token",
        "create",
        "--role",
        "metrics",
        "--name",
        "via-cli-toml",
    ]));
    assert!(!out.trim().is_empty());
    let list = ok(appliance(&xdg)
        .args(["token", "list", "--json", "--data"])
        .arg(&store));
    assert!(list.contains("via-cli-toml"), "{list}");
    // A wrong token in the file is the remote appliance's 401, not a local read.
    std::fs::write(&token_file, "not-a-token\n").unwrap();
    let err = fails(remote().args(["jobs", "list"]));
    assert!(err.contains("401"), "{err}");
    // Readable by others: refused before any request.
    std::fs::write(&token_file, format!("{admin}\n")).unwrap();
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = fails(remote().args(["jobs", "list"]));
    assert!(
        err.contains("admin.token") && err.contains("chmod 600"),
        "{err}"
    );
    // An unknown key in the user's file is refused too.
    std::fs::write(
        dir.join("cli.toml"),
        "appliance = \"https://x\"\ntoken = \"t\"\n",
    )
    .unwrap();
    let err = fails(remote().args(["jobs", "list"]));
    assert!(
        err.contains("cli.toml") && err.contains("token_file"),
        "{err}"
    );
}
