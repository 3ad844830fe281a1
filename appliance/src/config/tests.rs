use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ferry_server::limits::ServerLimits;

use super::*;
use crate::cli::{At, ServeLimits};

fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let m: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| m.get(k).cloned()
}

fn file(text: &str) -> FileLayer {
    FileLayer::parse(Path::new("/etc/ferry/appliance.toml"), text).expect("valid file")
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn a_flag_beats_the_variable_which_beats_the_file_which_beats_the_default() {
    let f = file("data = \"/srv/file\"\nlisten = \"0.0.0.0:8443\"\ngc_every = \"12h\"\nmax_connections = 100\nqueue_wait = 0\n");
    let none = env_of(&[]);
    let env = env_of(&[("FERRY_LISTEN", "127.0.0.1:9000"), ("FERRY_GC_EVERY", "2h")]);

    let s = f.serve(&none, None, None, ServeLimits::default()).unwrap();
    assert_eq!(s.listen, addr("0.0.0.0:8443"));
    assert_eq!(s.gc_every, Duration::from_secs(12 * 3600));
    assert_eq!(s.limits.max_connections, 100);
    assert_eq!(s.limits.queue_wait, Duration::ZERO);
    // Keys the file leaves out keep the server's defaults.
    assert_eq!(s.limits.chunk_puts, ServerLimits::default().chunk_puts);

    let s = f.serve(&env, None, None, ServeLimits::default()).unwrap();
    assert_eq!(s.listen, addr("127.0.0.1:9000"));
    assert_eq!(s.gc_every, Duration::from_secs(7200));

    let flags = ServeLimits {
        max_connections: Some(7),
        ..ServeLimits::default()
    };
    let s = f
        .serve(&env, Some(addr("10.0.0.1:1")), Some(Duration::ZERO), flags)
        .unwrap();
    assert_eq!(s.listen, addr("10.0.0.1:1"));
    assert_eq!(s.gc_every, Duration::ZERO);
    assert_eq!(s.limits.max_connections, 7);

    // Nothing anywhere: the built-in defaults (and listen is required).
    let empty = file("");
    let s = empty
        .serve(
            &none,
            Some(addr("127.0.0.1:1")),
            None,
            ServeLimits::default(),
        )
        .unwrap();
    assert_eq!(s.gc_every, DEFAULT_GC_EVERY);
    assert_eq!(s.limits, ServerLimits::default());
    let err = empty
        .serve(&none, None, None, ServeLimits::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("--listen") && err.contains("FERRY_LISTEN") && err.contains("appliance.toml"),
        "{err}"
    );
}

#[test]
fn the_data_directory_is_layered_too() {
    let f = file("data = \"/srv/file\"");
    let none = env_of(&[]);
    let env = env_of(&[("FERRY_DATA", "/srv/env")]);
    let dir = |flag: Option<&str>, env: Env, f: &FileLayer| {
        f.data_dir(flag.map(Path::new), env).unwrap().dir
    };
    assert_eq!(dir(Some("/srv/flag"), &env, &f), PathBuf::from("/srv/flag"));
    assert_eq!(dir(None, &env, &f), PathBuf::from("/srv/env"));
    assert_eq!(dir(None, &none, &f), PathBuf::from("/srv/file"));
    assert_eq!(dir(None, &none, &file("")), PathBuf::from(DEFAULT_DATA));
    let d = file("").data_dir(None, &none).unwrap();
    assert_eq!(d.from, DataFrom::Default);
    assert!(d.hint().contains("--data"), "{}", d.hint());
    let err = file("data = \"srv\"").data_dir(None, &none).unwrap_err();
    assert!(err.to_string().contains("key `data`"), "{err}");
}

#[test]
fn bad_values_name_the_layer_the_key_and_what_is_allowed() {
    type Vars = &'static [(&'static str, &'static str)];
    let cases: &[(&str, Vars, &str)] = &[
        (
            "listen = \"everywhere\"",
            &[],
            "config file /etc/ferry/appliance.toml, key `listen`: \"everywhere\" is not ADDR:PORT",
        ),
        (
            "max_connections = 0",
            &[],
            "key `max_connections`: \"0\": give a whole number, at least 1",
        ),
        (
            "header_timeout = \"0s\"",
            &[],
            "key `header_timeout`: 0s: give at least one second",
        ),
        ("gc_every = \"soon\"", &[], "key `gc_every`"),
        (
            "",
            &[("FERRY_IDLE_TIMEOUT", "forever")],
            "environment variable FERRY_IDLE_TIMEOUT",
        ),
        (
            "",
            &[("FERRY_MAX_CHUNK_UPLOADS", "-1")],
            "environment variable FERRY_MAX_CHUNK_UPLOADS: \"-1\"",
        ),
    ];
    for (text, vars, want) in cases {
        let env = env_of(vars);
        // A --listen flag would hide the file's listen.
        let listen = (!text.starts_with("listen")).then(|| addr("127.0.0.1:1"));
        let err = file(text)
            .serve(&env, listen, None, ServeLimits::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "{text} {vars:?}: {err}");
    }
}

#[test]
fn unknown_keys_and_wrong_types_are_refused_naming_them() {
    let p = Path::new("/etc/ferry/appliance.toml");
    let err = FileLayer::parse(p, "lisen = \"0.0.0.0:1\"")
        .unwrap_err()
        .to_string();
    assert!(err.contains("/etc/ferry/appliance.toml"), "{err}");
    assert!(err.contains("lisen") && err.contains("`listen`"), "{err}");
    let err = FileLayer::parse(p, "max_connections = true")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("max_connections") && err.contains("a string or an integer"),
        "{err}"
    );
    let err = FileLayer::parse(p, "[serve]\nlisten = 1")
        .unwrap_err()
        .to_string();
    assert!(err.contains("serve"), "{err}");
}

#[test]
fn a_missing_default_file_is_fine_a_missing_named_one_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.toml");
    let err = FileLayer::load(Some(&missing), &env_of(&[])).unwrap_err();
    assert!(err.to_string().contains("nope.toml"), "{err}");
    let var = missing.to_str().unwrap();
    let err = FileLayer::load(None, &env_of(&[("FERRY_CONFIG", var)])).unwrap_err();
    assert!(err.to_string().contains("nope.toml"), "{err}");
    let here = dir.path().join("appliance.toml");
    std::fs::write(&here, "data = \"/srv/x\"\n").unwrap();
    let f = FileLayer::load(Some(&here), &env_of(&[])).unwrap();
    assert_eq!(f.file.data.as_deref(), Some(Path::new("/srv/x")));
    // The default path may be missing on this host: never an error then.
    if !Path::new(DEFAULT_CONFIG).exists() {
        let f = FileLayer::load(None, &env_of(&[])).unwrap();
        assert!(f.file.data.is_none());
    }
}

fn at(data: Option<&str>, appliance: Option<&str>) -> At {
    At {
        data: data.map(PathBuf::from),
        appliance: appliance.map(String::from),
        ..At::default()
    }
}

fn user(text: &str) -> CliFile {
    toml::from_str(text).unwrap()
}

#[test]
fn the_place_follows_flags_then_variables_then_the_users_file_then_the_system_file() {
    let none = env_of(&[]);
    let sys = || Ok(file("data = \"/srv/sys\""));
    let laptop = "appliance = \"https://b:8443\"\nca = \"/u/ca.pem\"\ntoken_file = \"/u/tok\"";
    let local = |d: &str| Place::Local(DataDir::new(d.into(), DataFrom::Flag));

    // A flag decides; the files are not even read.
    let unread = || -> Result<FileLayer, ConfigError> { panic!("system file read") };
    let p = place(&at(Some("/srv/f"), None), &none, unread, || {
        panic!("user file read")
    });
    assert_eq!(p.unwrap(), local("/srv/f"));

    // FERRY_DATA, FERRY_APPLIANCE; both is a mistake.
    let env = env_of(&[("FERRY_DATA", "/srv/e")]);
    let p = place(&at(None, None), &env, unread, || Ok(Some(user(laptop)))).unwrap();
    assert_eq!(
        p,
        Place::Local(DataDir::new("/srv/e".into(), DataFrom::Env))
    );
    let both = env_of(&[("FERRY_DATA", "/a"), ("FERRY_APPLIANCE", "https://c")]);
    assert!(matches!(
        place(&at(None, None), &both, sys, || Ok(None)),
        Err(ConfigError::BothPlaces)
    ));

    // The user's file: appliance, its CA and its token file.
    let p = place(&at(None, None), &none, unread, || Ok(Some(user(laptop)))).unwrap();
    assert_eq!(
        p,
        Place::Remote(RemoteSettings {
            url: "https://b:8443".into(),
            ca: Some("/u/ca.pem".into()),
            token: Some(TokenFrom::File("/u/tok".into())),
        })
    );
    // Another appliance on the command line does not get this one's CA or token.
    let p = place(&at(None, Some("https://other")), &none, sys, || {
        Ok(Some(user(laptop)))
    });
    assert_eq!(
        p.unwrap(),
        Place::Remote(RemoteSettings {
            url: "https://other".into(),
            ca: None,
            token: None,
        })
    );
    // --ca and --token (or FERRY_CA/FERRY_TOKEN, which clap reads) beat the file's.
    let mut a = at(None, None);
    a.ca = Some("/flag/ca.pem".into());
    a.token = Some("tok".into());
    let Place::Remote(r) = place(&a, &none, sys, || Ok(Some(user(laptop)))).unwrap() else {
        panic!("not remote");
    };
    assert_eq!(r.ca.as_deref(), Some(Path::new("/flag/ca.pem")));
    assert_eq!(r.token, Some(TokenFrom::Given("tok".into())));

    // Nothing but the system file; then nothing at all.
    let p = place(&at(None, None), &none, sys, || Ok(None)).unwrap();
    assert_eq!(
        p,
        Place::Local(DataDir::new(
            "/srv/sys".into(),
            DataFrom::File("/etc/ferry/appliance.toml".into())
        ))
    );
    let p = place(&at(None, None), &none, || Ok(file("")), || Ok(None)).unwrap();
    assert_eq!(
        p,
        Place::Local(DataDir::new(DEFAULT_DATA.into(), DataFrom::Default))
    );
}

#[test]
fn the_users_file_is_strict_and_its_paths_are_relative_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cli.toml");
    std::fs::write(
        &path,
        "appliance = \"https://b\"\nca = \"ca.pem\"\ntoken_file = \"/abs/tok\"\n",
    )
    .unwrap();
    let f = CliFile::load(&path).unwrap().unwrap();
    assert_eq!(f.ca, Some(dir.path().join("ca.pem")));
    assert_eq!(f.token_file, Some(PathBuf::from("/abs/tok")));
    std::fs::write(&path, "appliance = \"https://b\"\ntoken = \"secret\"\n").unwrap();
    let err = CliFile::load(&path).unwrap_err().to_string();
    assert!(
        err.contains("cli.toml") && err.contains("token") && err.contains("token_file"),
        "{err}"
    );
    assert!(CliFile::load(&dir.path().join("none.toml"))
        .unwrap()
        .is_none());

    let env = env_of(&[("XDG_CONFIG_HOME", "/x"), ("HOME", "/home/u")]);
    assert_eq!(
        cli_file_path(&env),
        Some(PathBuf::from("/x/ferry/cli.toml"))
    );
    let env = env_of(&[("XDG_CONFIG_HOME", "rel"), ("HOME", "/home/u")]);
    assert_eq!(
        cli_file_path(&env),
        Some(PathBuf::from("/home/u/.config/ferry/cli.toml"))
    );
    assert_eq!(cli_file_path(&env_of(&[])), None);
}

#[test]
fn a_token_file_others_can_read_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let tok = dir.path().join("admin.token");
    std::fs::write(&tok, "secret-token\n").unwrap();
    for (mode, ok) in [(0o600, true), (0o400, true), (0o640, false), (0o604, false)] {
        std::fs::set_permissions(&tok, std::fs::Permissions::from_mode(mode)).unwrap();
        match read_token_file(&tok) {
            Ok(t) => {
                assert!(ok, "{mode:o} accepted");
                assert_eq!(t, "secret-token");
            }
            Err(e) => {
                assert!(!ok, "{mode:o} refused: {e}");
                assert!(e.to_string().contains("chmod 600"), "{e}");
            }
        }
    }
}
