//! Boot settings from the kernel command line and `/etc/ferry/site.conf`, as pure functions over
//! strings ([`parse`]) plus a thin reader ([`load`]).
//!
//! Keys (the same in both places; the command line wins, key by key):
//!
//! | command line | site.conf | meaning |
//! | --- | --- | --- |
//! | `ferry.appliance=https://HOST[:PORT]` | `ferry.appliance=` or `appliance=` | the appliance URL |
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

pub mod ip;

use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

pub use ip::{IpSpec, StaticIp, IP_SYNTAX};

/// Where the site layer puts its settings (image-builder's `site.rs`, frozen).
pub const SITE_CONF: &str = "etc/ferry/site.conf";
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

/// What PID 1 does when the agent fails (`ferry.on_failure=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailurePolicy {
    /// Keep a shell on the console for the operator (respawned when it exits).
    #[default]
    Shell,
    Reboot,
    PowerOff,
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

fn hex(b: [u8; 32]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Where a setting came from, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Cmdline,
    SiteConf { line: usize },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Cmdline => write!(f, "on the kernel command line"),
            Origin::SiteConf { line } => write!(f, "in /{SITE_CONF} line {line}"),
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
}

/// The keys we know, after removing the `ferry.` prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Appliance,
    Token,
    CaSha256,
    Debug,
    OnFailure,
    RetryWindow,
    Ip,
    Nameserver,
}

/// The expected-syntax text of an unknown key.
const KNOWN_KEYS: &str = "one of ferry.appliance, ferry.token, ferry.ca_sha256, ferry.debug, ferry.on_failure, ferry.retry_window, ip, nameserver";

impl Key {
    fn from_ferry(name: &str) -> Option<Key> {
        Some(match name {
            "appliance" => Key::Appliance,
            "token" => Key::Token,
            "ca_sha256" => Key::CaSha256,
            "debug" => Key::Debug,
            "on_failure" => Key::OnFailure,
            "retry_window" => Key::RetryWindow,
            _ => return None,
        })
    }

    fn repeatable(self) -> bool {
        matches!(self, Key::Ip | Key::Nameserver)
    }

    fn expected(self) -> &'static str {
        match self {
            Key::Appliance => "ferry.appliance=https://HOST[:PORT]",
            Key::Token => "ferry.token=TOKEN (printable ASCII, no spaces)",
            Key::CaSha256 => "ferry.ca_sha256=<64 hex digits>",
            Key::Debug => "ferry.debug, ferry.debug=1 or ferry.debug=0",
            Key::OnFailure => "ferry.on_failure=shell, reboot or poweroff",
            Key::RetryWindow => "ferry.retry_window=900, 90s, 15m or 2h",
            Key::Ip => IP_SYNTAX,
            Key::Nameserver => "nameserver=A.B.C.D",
        }
    }
}

/// One `key=value` occurrence.
#[derive(Debug, Clone)]
struct Entry {
    key: Key,
    raw_key: String,
    value: Option<String>,
    origin: Origin,
}

impl Entry {
    fn bad(&self, why: impl Into<String>) -> SettingsError {
        let token = match (&self.value, self.key) {
            (Some(_), Key::Token) => format!("{}=<redacted>", self.raw_key),
            (Some(v), _) => format!("{}={v}", self.raw_key),
            (None, _) => self.raw_key.clone(),
        };
        SettingsError::Bad {
            origin: self.origin,
            token,
            why: why.into(),
            expected: self.key.expected(),
        }
    }

    fn value(&self) -> Result<&str, SettingsError> {
        self.value
            .as_deref()
            .ok_or_else(|| self.bad("the value is missing"))
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

/// Parses the kernel command line and site.conf text; the command line wins key by key.
pub fn parse(cmdline: &str, site_conf: Option<&str>) -> Result<Settings, SettingsError> {
    let cmd = cmdline_entries(cmdline)?;
    let site = match site_conf {
        Some(text) => site_entries(text)?,
        None => Vec::new(),
    };
    let mut s = Settings::default();
    for key in [
        Key::Appliance,
        Key::Token,
        Key::CaSha256,
        Key::Debug,
        Key::OnFailure,
        Key::RetryWindow,
        Key::Ip,
        Key::Nameserver,
    ] {
        let from_cmd: Vec<&Entry> = cmd.iter().filter(|e| e.key == key).collect();
        let chosen = if from_cmd.is_empty() {
            site.iter().filter(|e| e.key == key).collect()
        } else {
            from_cmd
        };
        // Single-valued keys: the last occurrence wins (as the kernel does).
        let chosen = if key.repeatable() {
            chosen
        } else {
            chosen.last().copied().into_iter().collect()
        };
        for e in chosen {
            apply(&mut s, e)?;
        }
    }
    Ok(s)
}

fn apply(s: &mut Settings, e: &Entry) -> Result<(), SettingsError> {
    match e.key {
        Key::Appliance => {
            let v = e.value()?;
            let rest = v
                .strip_prefix("https://")
                .ok_or_else(|| e.bad("the URL must start with https://"))?;
            if rest.is_empty()
                || rest.starts_with('/')
                || v.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(e.bad("the URL has no host or contains spaces"));
            }
            s.appliance = Some(v.to_string());
        }
        Key::Token => {
            let v = e.value()?;
            if v.is_empty() || !v.chars().all(|c| c.is_ascii_graphic()) {
                return Err(
                    e.bad("the token is empty or has characters other than printable ASCII")
                );
            }
            s.token = Some(v.to_string());
        }
        Key::CaSha256 => {
            s.ca_sha256 = Some(parse_sha256(e.value()?).ok_or_else(|| e.bad("not 64 hex digits"))?)
        }
        Key::Debug => {
            s.debug = match e.value.as_deref() {
                None | Some("1" | "yes" | "on" | "true") => true,
                Some("0" | "no" | "off" | "false") => false,
                Some(_) => return Err(e.bad("not a boolean")),
            }
        }
        Key::OnFailure => {
            s.on_failure = match e.value()? {
                "shell" => FailurePolicy::Shell,
                "reboot" => FailurePolicy::Reboot,
                "poweroff" => FailurePolicy::PowerOff,
                other => return Err(e.bad(format!("unknown policy {other:?}"))),
            }
        }
        Key::RetryWindow => {
            s.retry_window =
                Some(parse_duration(e.value()?).ok_or_else(|| e.bad("not a duration"))?)
        }
        Key::Ip => s
            .net
            .ip
            .push(ip::parse_ip(e.value()?).map_err(|why| e.bad(why))?),
        Key::Nameserver => {
            let v = e.value()?;
            s.net.nameservers.push(
                v.parse()
                    .map_err(|_| e.bad(format!("{v:?} is not an IPv4 address")))?,
            );
        }
    }
    Ok(())
}

fn parse_sha256(s: &str) -> Option<[u8; 32]> {
    let s = s.replace(':', "");
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
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

fn cmdline_entries(cmdline: &str) -> Result<Vec<Entry>, SettingsError> {
    let mut out = Vec::new();
    for word in cmdline_words(cmdline) {
        let (raw_key, value) = match word.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (word.clone(), None),
        };
        let key = if let Some(name) = raw_key.strip_prefix("ferry.") {
            Some(Key::from_ferry(name).ok_or_else(|| unknown_key(Origin::Cmdline, &word))?)
        } else {
            match raw_key.as_str() {
                "ip" => Some(Key::Ip),
                "nameserver" => Some(Key::Nameserver),
                _ => None,
            }
        };
        if let Some(key) = key {
            out.push(Entry {
                key,
                raw_key,
                value,
                origin: Origin::Cmdline,
            });
        }
    }
    Ok(out)
}

fn site_entries(text: &str) -> Result<Vec<Entry>, SettingsError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let origin = Origin::SiteConf { line: i + 1 };
        let Some((raw_key, value)) = line.split_once('=') else {
            return Err(SettingsError::Bad {
                origin,
                token: line.into(),
                why: "not a key=value line".into(),
                expected: "KEY=VALUE, e.g. ferry.appliance=https://HOST:PORT",
            });
        };
        let (raw_key, value) = (raw_key.trim(), value.trim());
        let key = match raw_key {
            "ip" => Key::Ip,
            "nameserver" => Key::Nameserver,
            k => Key::from_ferry(k.strip_prefix("ferry.").unwrap_or(k))
                .ok_or_else(|| unknown_key(origin, raw_key))?,
        };
        out.push(Entry {
            key,
            raw_key: raw_key.into(),
            value: Some(value.into()),
            origin,
        });
    }
    Ok(out)
}

fn unknown_key(origin: Origin, token: &str) -> SettingsError {
    let token = token.split_once('=').map_or(token, |(k, _)| k).to_string();
    SettingsError::Bad {
        origin,
        token,
        why: "unknown key".into(),
        expected: KNOWN_KEYS,
    }
}

/// `900`, `90s`, `15m`, `2h`.
fn parse_duration(v: &str) -> Option<std::time::Duration> {
    let (num, mult) = match v.as_bytes().last()? {
        b's' => (&v[..v.len() - 1], 1),
        b'm' => (&v[..v.len() - 1], 60),
        b'h' => (&v[..v.len() - 1], 3600),
        _ => (v, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .map(std::time::Duration::from_secs)
}

#[cfg(test)]
mod tests {
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
