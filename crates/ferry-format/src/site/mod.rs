//! The rescue image's per-site settings file, `/etc/ferry/site.conf`: one type
//! ([`SiteSettings`]) for the writer (image-builder's `customize` serializes it with
//! [`SiteSettings::to_conf`]) and the reader (PID 1, ferry-init, parses it with [`entries`] and
//! [`SiteSettings::set`], and lays the kernel command line over it key by key).
//!
//! Format (frozen: images in the field carry it): UTF-8 text, one `KEY=VALUE` per line; blank
//! lines and lines starting with `#` are ignored; spaces around the key and the value are
//! trimmed. The keys are the kernel command line's (`ferry.appliance=`, `ip=`, …), and the
//! `ferry.` prefix may be left out:
//!
//! | key | value |
//! | --- | --- |
//! | `ferry.appliance` | `https://HOST[:PORT]`, or several comma-separated (nodes of one appliance) |
//! | `ferry.token` | the enrollment token, printable ASCII (never printed) |
//! | `ferry.ca_sha256` | SHA-256 pin of the appliance CA, 64 hex digits (`:` allowed) |
//! | `ferry.debug` | `1/0`, `yes/no`, `on/off`, `true/false` |
//! | `ferry.on_failure` | `shell`, `reboot` or `poweroff` |
//! | `ferry.retry_window` | seconds, or a number with `s`, `m` or `h` |
//! | `ip` (repeatable) | dracut syntax, see [`ip`] |
//! | `nameserver` (repeatable) | `A.B.C.D` |
//!
//! A single-valued key given twice: the last line wins. An unknown key is an error (the file is
//! ours; a typo must not be silently ignored).
//!
//! Invariants: the file is read by PID 1 from a possibly stale or hostile image, so parsing
//! never panics, bounds the file ([`MAX_SITE_CONF`]), each line ([`MAX_LINE`]), each value and
//! the repeatable lists ([`MAX_REPEATED`]), and every error names the line and the key. What
//! [`SiteSettings::to_conf`] writes, [`SiteSettings::parse`] reads back as the same value.

pub mod ip;

use std::fmt;
use std::net::Ipv4Addr;
use std::time::Duration;

pub use ip::{IpSpec, StaticIp, IP_SYNTAX};

/// Where the site layer puts the file, relative to the root (frozen).
pub const SITE_CONF: &str = "etc/ferry/site.conf";
/// Largest site.conf read (image-builder writes well under 1 KiB; the ISO's whole embed area,
/// CA included, is 256 KiB).
pub const MAX_SITE_CONF: usize = 64 * 1024;
/// Longest line (a token is at most [`MAX_TOKEN`] bytes).
pub const MAX_LINE: usize = 8 * 1024;
/// Longest enrollment token.
pub const MAX_TOKEN: usize = 4096;
/// Longest appliance URL.
pub const MAX_URL: usize = 2048;
/// Most `ip=` values, and most `nameserver=` values.
pub const MAX_REPEATED: usize = 32;

/// The text of every unknown-key error: the keys there are.
pub const KNOWN_KEYS: &str = "one of ferry.appliance, ferry.token, ferry.ca_sha256, ferry.debug, ferry.on_failure, ferry.retry_window, ip, nameserver";

/// One key of the file (and of the kernel command line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    Appliance,
    Token,
    CaSha256,
    Debug,
    OnFailure,
    RetryWindow,
    Ip,
    Nameserver,
}

impl Key {
    /// Every key, in the order [`SiteSettings::to_conf`] writes them.
    pub const ALL: [Key; 8] = [
        Key::Appliance,
        Key::Token,
        Key::CaSha256,
        Key::Debug,
        Key::OnFailure,
        Key::RetryWindow,
        Key::Ip,
        Key::Nameserver,
    ];

    /// A `ferry.NAME` key, given `NAME`.
    pub fn from_ferry(name: &str) -> Option<Key> {
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

    /// A key as site.conf spells it: `ip`, `nameserver`, `ferry.NAME` or `NAME`.
    pub fn from_conf(raw: &str) -> Option<Key> {
        match raw {
            "ip" => Some(Key::Ip),
            "nameserver" => Some(Key::Nameserver),
            k => Key::from_ferry(k.strip_prefix("ferry.").unwrap_or(k)),
        }
    }

    /// The key as written: `ferry.appliance`, …, `ip`, `nameserver`.
    pub fn name(self) -> &'static str {
        match self {
            Key::Appliance => "ferry.appliance",
            Key::Token => "ferry.token",
            Key::CaSha256 => "ferry.ca_sha256",
            Key::Debug => "ferry.debug",
            Key::OnFailure => "ferry.on_failure",
            Key::RetryWindow => "ferry.retry_window",
            Key::Ip => "ip",
            Key::Nameserver => "nameserver",
        }
    }

    /// `ip` and `nameserver` may be given several times; the others once (the last wins).
    pub fn repeatable(self) -> bool {
        matches!(self, Key::Ip | Key::Nameserver)
    }

    /// The syntax quoted in errors.
    pub fn expected(self) -> &'static str {
        match self {
            Key::Appliance => "ferry.appliance=https://HOST[:PORT][,https://HOST2[:PORT]...]",
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

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
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

impl FailurePolicy {
    /// The value as written: `shell`, `reboot`, `poweroff`.
    pub fn name(self) -> &'static str {
        match self {
            FailurePolicy::Shell => "shell",
            FailurePolicy::Reboot => "reboot",
            FailurePolicy::PowerOff => "poweroff",
        }
    }
}

/// Why one value is refused; the caller adds the key, where it came from and [`Key::expected`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("the value is missing")]
    Missing,
    #[error("the value is {len} bytes long; at most {max}")]
    TooLong { len: usize, max: usize },
    #[error("the URL must start with https://")]
    NotHttps,
    #[error("the URL has no host or contains spaces")]
    NoHost,
    #[error("the token is empty or has characters other than printable ASCII")]
    Token,
    #[error("not 64 hex digits")]
    NotSha256,
    #[error("not a boolean")]
    NotBool,
    #[error("unknown policy {0:?}")]
    UnknownPolicy(String),
    #[error("not a duration")]
    NotDuration,
    /// What [`ip::parse_ip`] found wrong.
    #[error("{0}")]
    Ip(String),
    #[error("{0:?} is not an IPv4 address")]
    NotIpv4(String),
    #[error("more than {max} values")]
    TooMany { max: usize },
    #[error("{0} is listed twice")]
    Duplicate(String),
}

/// A site.conf that cannot be used: each names the line and, where there is one, the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SiteError {
    #[error("shrink /{SITE_CONF}: it is {len} bytes long; at most {MAX_SITE_CONF}")]
    TooLarge { len: usize },
    #[error("fix /{SITE_CONF} line {line}: it is {len} bytes long; at most {MAX_LINE}")]
    LineTooLong { line: usize, len: usize },
    #[error("fix `{text}` in /{SITE_CONF} line {line}: not a key=value line; expected KEY=VALUE, e.g. ferry.appliance=https://HOST:PORT")]
    NotKeyValue { line: usize, text: String },
    #[error("fix `{key}` in /{SITE_CONF} line {line}: unknown key; expected {KNOWN_KEYS}")]
    UnknownKey { line: usize, key: String },
    /// `token` is the `key=value` as written (a token's value redacted).
    #[error("fix `{token}` in /{SITE_CONF} line {line}: {why}; expected {}", key.expected())]
    Value {
        line: usize,
        key: Key,
        token: String,
        why: ValueError,
    },
    /// Settings [`SiteSettings::to_conf`] cannot write faithfully (a value set directly, without
    /// [`SiteSettings::set`], holding a line break; a sub-second retry window).
    #[error("write site settings: {key} would not read back as set")]
    Unfaithful { key: Key },
}

/// One `KEY=VALUE` line of site.conf, checked for syntax and a known key but not its value.
#[derive(Clone, PartialEq, Eq)]
pub struct Entry {
    /// 1-based.
    pub line: usize,
    pub key: Key,
    /// The key as written (`appliance`, `ferry.appliance`), trimmed.
    pub raw_key: String,
    /// Trimmed.
    pub value: String,
}

/// The token's value is a secret.
impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("line", &self.line)
            .field("key", &self.key)
            .field("raw_key", &self.raw_key)
            .field("value", &redact(self.key, &self.value))
            .finish()
    }
}

impl Entry {
    /// The error for this line's value.
    pub fn bad(&self, why: ValueError) -> SiteError {
        SiteError::Value {
            line: self.line,
            key: self.key,
            token: format!("{}={}", self.raw_key, redact(self.key, &self.value)),
            why,
        }
    }
}

/// `<redacted>` for a token's value, else the value.
pub fn redact(key: Key, value: &str) -> &str {
    if key == Key::Token {
        "<redacted>"
    } else {
        value
    }
}

/// Splits site.conf into its `KEY=VALUE` lines, in order: the size, every line's length, its
/// shape and its key are checked; the values are not (see [`SiteSettings::set`]).
pub fn entries(text: &str) -> Result<Vec<Entry>, SiteError> {
    if text.len() > MAX_SITE_CONF {
        return Err(SiteError::TooLarge { len: text.len() });
    }
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.len() > MAX_LINE {
            return Err(SiteError::LineTooLong {
                line: n,
                len: line.len(),
            });
        }
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((raw_key, value)) = line.split_once('=') else {
            return Err(SiteError::NotKeyValue {
                line: n,
                text: line.into(),
            });
        };
        let raw_key = raw_key.trim();
        let key = Key::from_conf(raw_key).ok_or_else(|| SiteError::UnknownKey {
            line: n,
            key: raw_key.into(),
        })?;
        out.push(Entry {
            line: n,
            key,
            raw_key: raw_key.into(),
            value: value.trim().into(),
        });
    }
    Ok(out)
}

/// The settings of site.conf (every field unset or empty: the file does not say).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SiteSettings {
    pub appliance: Option<String>,
    pub token: Option<String>,
    pub ca_sha256: Option<[u8; 32]>,
    pub debug: Option<bool>,
    pub on_failure: Option<FailurePolicy>,
    /// Whole seconds.
    pub retry_window: Option<Duration>,
    pub ip: Vec<IpSpec>,
    pub nameservers: Vec<Ipv4Addr>,
}

/// The token is a secret: Debug shows only whether it is set.
impl fmt::Debug for SiteSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SiteSettings")
            .field("appliance", &self.appliance)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("ca_sha256", &self.ca_sha256.map(hex))
            .field("debug", &self.debug)
            .field("on_failure", &self.on_failure)
            .field("retry_window", &self.retry_window)
            .field("ip", &self.ip)
            .field("nameservers", &self.nameservers)
            .finish()
    }
}

impl SiteSettings {
    /// Reads a whole site.conf: every line's value is checked, the last line of a single-valued
    /// key wins, repeatable keys accumulate.
    pub fn parse(text: &str) -> Result<SiteSettings, SiteError> {
        let mut s = SiteSettings::default();
        for e in entries(text)? {
            s.set(e.key, Some(&e.value)).map_err(|why| e.bad(why))?;
        }
        Ok(s)
    }

    /// Sets one key from its text (`None`: the key without `=`, as `ferry.debug` on a command
    /// line): a single-valued key is replaced, a repeatable one gets one more value.
    pub fn set(&mut self, key: Key, value: Option<&str>) -> Result<(), ValueError> {
        if key == Key::Debug {
            self.debug = Some(parse_bool(value)?);
            return Ok(());
        }
        let v = value.ok_or(ValueError::Missing)?;
        let max = if key == Key::Token {
            MAX_TOKEN
        } else {
            MAX_URL
        };
        if v.len() > max {
            return Err(ValueError::TooLong { len: v.len(), max });
        }
        match key {
            Key::Appliance => self.appliance = Some(parse_url(v)?),
            Key::Token => {
                if v.is_empty() || !v.chars().all(|c| c.is_ascii_graphic()) {
                    return Err(ValueError::Token);
                }
                self.token = Some(v.to_string());
            }
            Key::CaSha256 => self.ca_sha256 = Some(parse_sha256(v).ok_or(ValueError::NotSha256)?),
            Key::Debug => {}
            Key::OnFailure => {
                self.on_failure = Some(match v {
                    "shell" => FailurePolicy::Shell,
                    "reboot" => FailurePolicy::Reboot,
                    "poweroff" => FailurePolicy::PowerOff,
                    other => return Err(ValueError::UnknownPolicy(other.to_string())),
                })
            }
            Key::RetryWindow => {
                self.retry_window = Some(parse_duration(v).ok_or(ValueError::NotDuration)?)
            }
            Key::Ip => {
                let spec = ip::parse_ip(v).map_err(ValueError::Ip)?;
                push_bounded(&mut self.ip, spec)?;
            }
            Key::Nameserver => {
                let ns = v.parse().map_err(|_| ValueError::NotIpv4(v.to_string()))?;
                push_bounded(&mut self.nameservers, ns)?;
            }
        }
        Ok(())
    }

    /// The text of site.conf: a comment header, then each key that is set, in [`Key::ALL`]'s
    /// order. Refused when it would not read back as `self` (see [`SiteError::Unfaithful`]), or
    /// when a value is one [`SiteSettings::parse`] refuses.
    pub fn to_conf(&self) -> Result<String, SiteError> {
        let mut s = String::from(
            "# Ferry site settings, written by image-builder. Same keys as the kernel\n\
             # command line; a key given on the command line wins over this file.\n",
        );
        let mut line = |key: Key, value: &str| {
            s.push_str(key.name());
            s.push('=');
            s.push_str(value);
            s.push('\n');
        };
        if let Some(v) = &self.appliance {
            line(Key::Appliance, v);
        }
        if let Some(v) = &self.token {
            line(Key::Token, v);
        }
        if let Some(v) = self.ca_sha256 {
            line(Key::CaSha256, &hex(v));
        }
        if let Some(v) = self.debug {
            line(Key::Debug, if v { "1" } else { "0" });
        }
        if let Some(v) = self.on_failure {
            line(Key::OnFailure, v.name());
        }
        if let Some(v) = self.retry_window {
            line(Key::RetryWindow, &v.as_secs().to_string());
        }
        for v in &self.ip {
            line(Key::Ip, &v.to_value());
        }
        for v in &self.nameservers {
            line(Key::Nameserver, &v.to_string());
        }
        let back = SiteSettings::parse(&s)?;
        if let Some(key) = self.first_difference(&back) {
            return Err(SiteError::Unfaithful { key });
        }
        Ok(s)
    }

    /// The first key whose value differs from `other`'s.
    fn first_difference(&self, other: &SiteSettings) -> Option<Key> {
        Key::ALL.into_iter().find(|k| match k {
            Key::Appliance => self.appliance != other.appliance,
            Key::Token => self.token != other.token,
            Key::CaSha256 => self.ca_sha256 != other.ca_sha256,
            Key::Debug => self.debug != other.debug,
            Key::OnFailure => self.on_failure != other.on_failure,
            Key::RetryWindow => self.retry_window != other.retry_window,
            Key::Ip => self.ip != other.ip,
            Key::Nameserver => self.nameservers != other.nameservers,
        })
    }
}

fn push_bounded<T>(list: &mut Vec<T>, v: T) -> Result<(), ValueError> {
    if list.len() >= MAX_REPEATED {
        return Err(ValueError::TooMany { max: MAX_REPEATED });
    }
    list.push(v);
    Ok(())
}

fn parse_bool(v: Option<&str>) -> Result<bool, ValueError> {
    match v {
        None | Some("1" | "yes" | "on" | "true") => Ok(true),
        Some("0" | "no" | "off" | "false") => Ok(false),
        Some(_) => Err(ValueError::NotBool),
    }
}

/// One URL or several, comma-separated (the nodes of one appliance), in their canonical form.
fn parse_url(v: &str) -> Result<String, ValueError> {
    use crate::urls::{ApplianceUrls, UrlError, MAX_NODES};
    match ApplianceUrls::parse(v) {
        Ok(urls) => Ok(urls.to_string()),
        Err(UrlError::NotHttps) => Err(ValueError::NotHttps),
        Err(UrlError::NoHost | UrlError::Empty) => Err(ValueError::NoHost),
        Err(UrlError::TooMany) => Err(ValueError::TooMany { max: MAX_NODES }),
        Err(UrlError::Duplicate(url)) => Err(ValueError::Duplicate(url)),
    }
}

/// 64 hex digits, `:` separators allowed.
pub fn parse_sha256(s: &str) -> Option<[u8; 32]> {
    let s = s.replace(':', "");
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// 64 lowercase hex digits.
pub fn hex(b: [u8; 32]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `900`, `90s`, `15m`, `2h`.
fn parse_duration(v: &str) -> Option<Duration> {
    let (num, mult) = match v.as_bytes().last()? {
        b's' => (v.get(..v.len() - 1)?, 1),
        b'm' => (v.get(..v.len() - 1)?, 60),
        b'h' => (v.get(..v.len() - 1)?, 3600),
        _ => (v, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .map(Duration::from_secs)
}

#[cfg(test)]
mod tests;
