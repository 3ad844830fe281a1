//! Boot settings from the kernel command line and `/etc/ferry/site.conf`, as pure functions over
//! strings ([`parse`]) plus a thin reader ([`load`]).
//!
//! Keys (the same in both places; the command line wins, key by key):
//!
//! | command line | site.conf | meaning |
//! | --- | --- | --- |
//! | `ferry.appliance=https://HOST[:PORT]` | `ferry.appliance=` or `appliance=` | the appliance URL, or several nodes' URLs comma-separated |
//! | `ferry.token=T` | `ferry.token=` or `token=` | the enrollment token (never printed) |
//! | `ferry.ca_sha256=HEX` | `ferry.ca_sha256=` or `ca_sha256=` | SHA-256 pin of the appliance CA (64 hex digits) |
//! | `ferry.debug[=1]` | `ferry.debug=` or `debug=` | debug logging (`1/0`, `yes/no`, `on/off`, `true/false`) |
//! | `ferry.on_failure=shell` | `on_failure=` | what PID 1 does when the agent fails: `shell` (default), `reboot`, `poweroff` |
//! | `ferry.retry_window=15m` | `retry_window=` | how long an unreachable appliance is retried before the agent gives up (seconds, or with s/m/h) |
//! | `ip=…` (repeatable) | `ip=` | dracut syntax, see [`ip`] |
//! | `nameserver=A.B.C.D` (repeatable) | `nameserver=` | DNS servers; win over DHCP's |
//!
//! Repeatable keys given on the command line replace the file's list as a whole. Other command-line
//! words (`quiet`, `console=…`) are ignored; an unknown `ferry.*` key is an error (a typo such as
//! `ferry.applaince=` must not be silently ignored), and so is any unknown key in site.conf (the
//! file is ours). Everything after `--` belongs to init's argv and is ignored.
//!
//! The file's format, its keys and the checks of every value are `ferry_format::site` (shared with
//! image-builder, which writes the file); this module lays the command line over it.

use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ferry_format::site::{self, hex, Key, SiteError, SiteSettings, ValueError};
pub use ferry_format::site::{ip, FailurePolicy, IpSpec, StaticIp, IP_SYNTAX, SITE_CONF};

/// The appliance CA from the site layer (frozen).
pub const CA_PEM: &str = "etc/ferry/ca.pem";

/// Everything PID 1 and the agent need to know from the boot configuration.
#[derive(Clone, PartialEq, Eq)]
pub struct Settings {
    pub appliance: Option<String>,
    pub token: Option<String>,
    /// `/etc/ferry/ca.pem` (whether it exists is the agent's business).
    pub ca_path: PathBuf,
    pub ca_sha256: Option<[u8; 32]>,
    pub debug: bool,
    pub on_failure: FailurePolicy,
    /// `ferry.retry_window=`: how long an unreachable appliance is retried (agent default: 15 min).
    pub retry_window: Option<std::time::Duration>,
    pub net: NetConfig,
}

/// Network settings: `ip=` values and `nameserver=` values.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NetConfig {
    /// Empty: DHCP on every NIC with a link.
    pub ip: Vec<IpSpec>,
    /// Empty: the DHCP servers' DNS servers (or the static `ip=`'s DNS fields).
    pub nameservers: Vec<Ipv4Addr>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            appliance: None,
            token: None,
            ca_path: Path::new("/").join(CA_PEM),
            ca_sha256: None,
            debug: false,
            on_failure: FailurePolicy::Shell,
            retry_window: None,
            net: NetConfig::default(),
        }
    }
}

/// The token is a secret: Debug and Display show only whether it is set.
impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("appliance", &self.appliance)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("ca_path", &self.ca_path)
            .field("ca_sha256", &self.ca_sha256.map(hex))
            .field("debug", &self.debug)
            .field("on_failure", &self.on_failure)
            .field("net", &self.net)
            .finish()
    }
}

impl fmt::Display for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "appliance={} token={} ca={}",
            self.appliance.as_deref().unwrap_or("(none)"),
            if self.token.is_some() {
                "(set)"
            } else {
                "(none)"
            },
            self.ca_path.display()
        )?;
        if let Some(pin) = self.ca_sha256 {
            write!(f, " ca_sha256={}", hex(pin))?;
        }
        write!(
            f,
            " debug={} on_failure={:?} net=",
            self.debug, self.on_failure
        )?;
        if self.net.ip.is_empty() {
            write!(f, "[DHCP on every NIC with a link]")?;
        } else {
            let specs: Vec<String> = self.net.ip.iter().map(ToString::to_string).collect();
            write!(f, "[{}]", specs.join("; "))?;
        }
        if !self.net.nameservers.is_empty() {
            let ns: Vec<String> = self
                .net
                .nameservers
                .iter()
                .map(ToString::to_string)
                .collect();
            write!(f, " nameservers={}", ns.join(","))?;
        }
        Ok(())
    }
}

/// Where a setting came from, for error messages (site.conf's errors are [`SiteError`]s, which
/// name the file and line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Cmdline,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Cmdline => write!(f, "on the kernel command line"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `token` is the offending `key=value` (a token's value is redacted).
    #[error("fix `{token}` {origin}: {why}; expected {expected}")]
    Bad {
        origin: Origin,
        token: String,
        why: String,
        expected: &'static str,
    },
    /// site.conf cannot be used: the error names its line and key.
    #[error(transparent)]
    Site(#[from] SiteError),
}

/// One `key[=value]` word of the kernel command line that is ours.
#[derive(Debug, Clone)]
struct Word {
    key: Key,
    raw_key: String,
    value: Option<String>,
}

impl Word {
    fn bad(&self, why: ValueError) -> SettingsError {
        let token = match &self.value {
            Some(v) => format!("{}={}", self.raw_key, site::redact(self.key, v)),
            None => self.raw_key.clone(),
        };
        SettingsError::Bad {
            origin: Origin::Cmdline,
            token,
            why: why.to_string(),
            expected: self.key.expected(),
        }
    }
}

/// Reads `ROOT/proc/cmdline` and `ROOT/etc/ferry/site.conf` (optional) and parses them.
pub fn load(root: &Path) -> Result<Settings, SettingsError> {
    let read = |rel: &str| {
        let path = root.join(rel);
        std::fs::read_to_string(&path).map_err(|source| SettingsError::Read { path, source })
    };
    let cmdline = read("proc/cmdline")?;
    let site = match read(SITE_CONF) {
        Ok(s) => Some(s),
        Err(SettingsError::Read { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            None
        }
        Err(e) => return Err(e),
    };
    let mut s = parse(&cmdline, site.as_deref())?;
    s.ca_path = Path::new("/").join(CA_PEM);
    Ok(s)
}

/// Parses the kernel command line and site.conf text; the command line wins key by key. The
/// file's lines are all checked for shape and key, but only the values that are used are
/// checked (a command-line key repairs a bad value of the same key in a stale image's file).
pub fn parse(cmdline: &str, site_conf: Option<&str>) -> Result<Settings, SettingsError> {
    let cmd = cmdline_words_ours(cmdline)?;
    let file = match site_conf {
        Some(text) => site::entries(text)?,
        None => Vec::new(),
    };
    let mut layered = SiteSettings::default();
    for key in Key::ALL {
        let from_cmd: Vec<&Word> = cmd.iter().filter(|w| w.key == key).collect();
        if from_cmd.is_empty() {
            for e in chosen(key, file.iter().filter(|e| e.key == key).collect()) {
                layered.set(key, Some(&e.value)).map_err(|why| e.bad(why))?;
            }
        } else {
            for w in chosen(key, from_cmd) {
                layered
                    .set(key, w.value.as_deref())
                    .map_err(|why| w.bad(why))?;
            }
        }
    }
    Ok(Settings::from_layers(layered))
}

/// Single-valued keys: the last occurrence wins (as the kernel does); repeatable: all of them.
fn chosen<T>(key: Key, mut all: Vec<T>) -> Vec<T> {
    if !key.repeatable() {
        let last = all.pop();
        all.clear();
        all.extend(last);
    }
    all
}

impl Settings {
    /// The settings the command line and site.conf give, laid over each other; unset: the
    /// defaults.
    fn from_layers(s: SiteSettings) -> Settings {
        Settings {
            appliance: s.appliance,
            token: s.token,
            ca_sha256: s.ca_sha256,
            debug: s.debug.unwrap_or(false),
            on_failure: s.on_failure.unwrap_or_default(),
            retry_window: s.retry_window,
            net: NetConfig {
                ip: s.ip,
                nameservers: s.nameservers,
            },
            ..Settings::default()
        }
    }
}

/// Splits a kernel command line into words like the kernel does: whitespace separates, double
/// quotes group (and are removed), `--` ends the kernel's part.
pub fn cmdline_words(cmdline: &str) -> Vec<String> {
    let mut words = Vec::new();
    let (mut cur, mut quoted, mut any) = (String::new(), false, false);
    for c in cmdline.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    words.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        words.push(cur);
    }
    if let Some(end) = words.iter().position(|w| w == "--") {
        words.truncate(end);
    }
    words
}

fn cmdline_words_ours(cmdline: &str) -> Result<Vec<Word>, SettingsError> {
    let mut out = Vec::new();
    for word in cmdline_words(cmdline) {
        let (raw_key, value) = match word.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (word.clone(), None),
        };
        let key = if let Some(name) = raw_key.strip_prefix("ferry.") {
            Some(Key::from_ferry(name).ok_or_else(|| SettingsError::Bad {
                origin: Origin::Cmdline,
                token: raw_key.clone(),
                why: "unknown key".into(),
                expected: site::KNOWN_KEYS,
            })?)
        } else {
            match raw_key.as_str() {
                "ip" => Some(Key::Ip),
                "nameserver" => Some(Key::Nameserver),
                _ => None,
            }
        };
        if let Some(key) = key {
            out.push(Word {
                key,
                raw_key,
                value,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use ferry_format::site::parse_sha256;

    #[test]
    fn retry_window_is_read_from_both_places() {
        let s = parse("ferry.retry_window=20s", None).unwrap();
        assert_eq!(s.retry_window, Some(std::time::Duration::from_secs(20)));
        let s = parse("", Some("retry_window=15m\n")).unwrap();
        assert_eq!(s.retry_window, Some(std::time::Duration::from_secs(900)));
        assert!(parse("ferry.retry_window=soon", None).is_err());
    }

    use super::*;

    const PIN: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    #[test]
    fn words_follow_kernel_quoting() {
        let cases: &[(&str, &[&str])] = &[
            ("", &[]),
            ("  a  b\n", &["a", "b"]),
            ("x=\"a b\" y", &["x=a b", "y"]),
            ("\"x=a b\"", &["x=a b"]),
            ("a -- ferry.debug=1", &["a"]),
            ("a \"\" b", &["a", "", "b"]),
        ];
        for (input, want) in cases {
            assert_eq!(cmdline_words(input), *want, "{input:?}");
        }
    }

    #[test]
    fn command_line_alone() {
        let s = parse(
            "BOOT_IMAGE=/boot/vmlinuz console=ttyS0,115200 quiet ferry.appliance=https://a.example:8443 \
             ferry.token=tok-1 ferry.ca_sha256=00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff:00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff \
             ferry.debug ip=eth0:dhcp nameserver=192.0.2.53 nameserver=192.0.2.54\n",
            None,
        )
        .unwrap();
        assert_eq!(s.appliance.as_deref(), Some("https://a.example:8443"));
        assert_eq!(s.token.as_deref(), Some("tok-1"));
        assert_eq!(s.ca_sha256, parse_sha256(PIN));
        assert!(s.debug);
        assert_eq!(s.on_failure, FailurePolicy::Shell);
        assert_eq!(
            s.net.ip,
            [IpSpec::Dhcp {
                iface: Some("eth0".into())
            }]
        );
        assert_eq!(
            s.net.nameservers,
            [Ipv4Addr::new(192, 0, 2, 53), Ipv4Addr::new(192, 0, 2, 54)]
        );
        assert_eq!(s.ca_path, Path::new("/etc/ferry/ca.pem"));
    }

    #[test]
    fn site_conf_as_image_builder_writes_it_and_with_short_keys() {
        let ib = "# Ferry site settings\nferry.appliance=https://a.example\nferry.token=tok\nip=dhcp\nnameserver=192.0.2.53\n";
        let short = "appliance=https://a.example\n token = tok \n\nip=dhcp\nnameserver=192.0.2.53\ndebug=0\non_failure=poweroff\n";
        for text in [ib, short] {
            let s = parse("quiet", Some(text)).unwrap();
            assert_eq!(s.appliance.as_deref(), Some("https://a.example"), "{text}");
            assert_eq!(s.token.as_deref(), Some("tok"));
            assert_eq!(s.net.ip, [IpSpec::Dhcp { iface: None }]);
            assert_eq!(s.net.nameservers, [Ipv4Addr::new(192, 0, 2, 53)]);
        }
        assert_eq!(
            parse("", Some(short)).unwrap().on_failure,
            FailurePolicy::PowerOff
        );
    }

    #[test]
    fn command_line_wins_key_by_key() {
        let site = "appliance=https://site.example\ntoken=site-tok\nip=dhcp\nip=eth1:dhcp\nnameserver=192.0.2.1\ndebug=1\n";
        let s = parse("ferry.appliance=https://cmd.example ip=10.0.2.15::10.0.2.2:24::eth0:none ferry.debug=0", Some(site)).unwrap();
        assert_eq!(s.appliance.as_deref(), Some("https://cmd.example"));
        assert_eq!(s.token.as_deref(), Some("site-tok"));
        assert!(!s.debug);
        assert_eq!(
            s.net.ip.len(),
            1,
            "ip= on the command line replaces the file's list"
        );
        assert!(matches!(s.net.ip[0], IpSpec::Static(_)));
        assert_eq!(s.net.nameservers, [Ipv4Addr::new(192, 0, 2, 1)]);
        // Last occurrence of a single-valued key wins.
        let s = parse("ferry.appliance=https://a ferry.appliance=https://b", None).unwrap();
        assert_eq!(s.appliance.as_deref(), Some("https://b"));
    }

    #[test]
    fn errors_name_the_token_the_place_and_the_syntax() {
        let cases: &[(&str, Option<&str>, &str)] = &[
            ("ferry.applaince=https://x", None, "fix `ferry.applaince` on the kernel command line: unknown key; expected one of ferry.appliance,"),
            ("ferry.appliance=http://x", None, "fix `ferry.appliance=http://x` on the kernel command line: the URL must start with https://; expected ferry.appliance=https://HOST[:PORT]"),
            ("ferry.appliance", None, "the value is missing"),
            ("ferry.debug=maybe", None, "fix `ferry.debug=maybe` on the kernel command line: not a boolean"),
            ("ferry.ca_sha256=abc", None, "not 64 hex digits; expected ferry.ca_sha256=<64 hex digits>"),
            ("ferry.on_failure=panic", None, "unknown policy \"panic\""),
            ("ip=10.0.2.15::10.0.2.2:255.0.255.0::eth0:none", None, "fix `ip=10.0.2.15::10.0.2.2:255.0.255.0::eth0:none` on the kernel command line: netmask 255.0.255.0 is not contiguous; expected ip=dhcp, ip=IFACE:dhcp,"),
            ("nameserver=dns.example", None, "fix `nameserver=dns.example` on the kernel command line: \"dns.example\" is not an IPv4 address"),
            ("", Some("# x\n\nbogus line\n"), "fix `bogus line` in /etc/ferry/site.conf line 3: not a key=value line"),
            ("", Some("colour=blue\n"), "fix `colour` in /etc/ferry/site.conf line 1: unknown key"),
            ("", Some("ip=dhcp\nip=eth0\n"), "fix `ip=eth0` in /etc/ferry/site.conf line 2: unknown method \"eth0\"; expected ip=dhcp"),
        ];
        for (cmd, site, want) in cases {
            let err = parse(cmd, *site).expect_err(cmd).to_string();
            assert!(
                err.contains(want),
                "{cmd:?} {site:?}:\n got  {err}\n want {want}"
            );
        }
    }

    #[test]
    fn reads_what_the_shared_type_writes_and_the_command_line_repairs_a_stale_file() {
        let written = SiteSettings {
            appliance: Some("https://a.example:8443".into()),
            token: Some("tok".into()),
            ip: vec![ip::parse_ip("10.0.2.15::10.0.2.2:24:rescue:eth0:none").unwrap()],
            nameservers: vec![Ipv4Addr::new(10, 0, 2, 3)],
            on_failure: Some(FailurePolicy::Reboot),
            ..Default::default()
        };
        let s = parse("quiet", Some(&written.to_conf().unwrap())).unwrap();
        assert_eq!(s.appliance, written.appliance);
        assert_eq!(s.token, written.token);
        assert_eq!(s.net.ip, written.ip);
        assert_eq!(s.net.nameservers, written.nameservers);
        assert_eq!(s.on_failure, FailurePolicy::Reboot);
        // A bad value in the file is an error unless the command line gives that key.
        let stale = "ferry.appliance=http://old\nip=[2001:db8::1]::::::none\n";
        assert!(parse("", Some(stale)).is_err());
        let s = parse("ferry.appliance=https://new ip=dhcp", Some(stale)).unwrap();
        assert_eq!(s.appliance.as_deref(), Some("https://new"));
        // A file too large to be ours is refused whatever the command line says.
        let huge = "#".repeat(ferry_format::site::MAX_SITE_CONF + 1);
        assert!(matches!(
            parse("ferry.appliance=https://new", Some(&huge)),
            Err(SettingsError::Site(SiteError::TooLarge { .. }))
        ));
    }

    #[test]
    fn the_token_never_appears_in_output() {
        let err = parse("ferry.token=\"sec ret\"", None)
            .unwrap_err()
            .to_string();
        assert!(!err.contains("sec"), "{err}");
        assert!(err.contains("ferry.token=<redacted>"), "{err}");
        let s = parse("ferry.token=secret ferry.appliance=https://a", None).unwrap();
        assert!(!format!("{s:?}").contains("secret"));
        assert!(!s.to_string().contains("secret"));
        assert!(s.to_string().contains("token=(set)"));
    }

    #[test]
    fn defaults_and_load_from_a_root() {
        let s = parse("quiet", None).unwrap();
        assert_eq!(s, Settings::default());
        assert!(s
            .to_string()
            .contains("net=[DHCP on every NIC with a link]"));
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("proc")).unwrap();
        std::fs::create_dir_all(dir.path().join("etc/ferry")).unwrap();
        std::fs::write(
            dir.path().join("proc/cmdline"),
            "console=ttyS0 ferry.debug=1\n",
        )
        .unwrap();
        assert!(load(dir.path()).unwrap().debug);
        std::fs::write(dir.path().join(SITE_CONF), "ferry.appliance=https://a\n").unwrap();
        assert_eq!(
            load(dir.path()).unwrap().appliance.as_deref(),
            Some("https://a")
        );
        std::fs::remove_file(dir.path().join("proc/cmdline")).unwrap();
        assert!(load(dir.path())
            .unwrap_err()
            .to_string()
            .starts_with("read "));
    }
}
