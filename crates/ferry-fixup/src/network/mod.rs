//! The network follows the server (docs/network.md): read a restored Linux system's network
//! configuration into a [`NetworkConfig`], map its interfaces onto the target's NICs
//! ([`mapping::NicPlan`]), and rewrite each config system's files for the new names, MACs and,
//! with [`reip::ReipRules`], addresses.
//!
//! One module per config system, each with a pure reader `read(path, text)` and a pure
//! transform `transform(path, text, &NicPlan, &ReipRules) -> Result<Edited, FixupError>`:
//! [`ifupdown`], [`netplan`], [`nm_keyfile`], [`networkd`], [`ifcfg`]. Lines a transform does
//! not change are kept byte for byte; input it cannot read is refused with the file and line,
//! never guessed at (the files come from a backup: hostile input). [`read_root`] is the only
//! I/O: it lists and reads the known paths under a mounted root.
//!
//! A job's `--nic`/`--reip`/`--ip` rules are parsed and checked by [`rules`]; the Linux
//! fix-up ([`crate::linux`]) applies them to the restored files.

pub mod ifcfg;
pub mod ifupdown;
pub mod mapping;
pub mod netplan;
pub mod networkd;
pub mod nm_keyfile;
pub mod reip;
pub mod rules;
pub mod windows;

use std::fmt;
use std::net::IpAddr;
use std::path::Path;

use ferry_format::agent::normalize_mac;
use ferry_format::network::{ConfigSystem, Interface, IpCidr, NetworkConfig, MAX_INTERFACES};
use serde::Serialize;

use crate::FixupError;
pub use mapping::{NicPlan, NicRule, TargetNic};
pub use reip::{IfaceRule, ReipRules, SubnetRule};
pub use rules::{preview, IfacePreview, NetworkRules, RulesError};

/// Largest config file read (bigger ones are refused as not being network config).
pub const MAX_FILE_BYTES: usize = 1 << 20;
/// Most files read from one config directory.
pub const MAX_FILES_PER_DIR: usize = 256;

/// A config file that cannot be read as its system's format: which file, which line (1-based;
/// 0 for the whole file), and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("read {system} file {file} line {line}: {problem}; fix or remove the line, or leave this file out of the network fix-up")]
pub struct ParseError {
    pub system: ConfigSystem,
    pub file: String,
    pub line: usize,
    pub problem: Problem,
}

/// What is wrong with a line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("{0}")]
    Syntax(&'static str),
    #[error("{what} {text:?} is not an IP address")]
    Address { what: &'static str, text: String },
    #[error("{text:?} is not a MAC address")]
    Mac { text: String },
    #[error("{text:?} is not an interface name")]
    Name { text: String },
    #[error("{0} is not supported here")]
    Unsupported(&'static str),
    #[error("more than {max} {what}")]
    TooMany { what: &'static str, max: usize },
}

impl From<ParseError> for FixupError {
    fn from(e: ParseError) -> FixupError {
        FixupError::Transform {
            what: format!("{} file {}", e.system, e.file),
            detail: e.to_string(),
        }
    }
}

/// What a transform did to one line (1-based).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum NetEdit {
    /// An interface name (or a name built on it: `eth0.100`) now names the target NIC.
    Rename {
        line: usize,
        from: String,
        to: String,
    },
    /// A MAC match now names the target NIC's MAC, or (`to: None`) was dropped.
    Mac {
        line: usize,
        from: String,
        to: Option<String>,
    },
    /// A static address, gateway or DNS server moved by a re-IP rule.
    Address {
        line: usize,
        from: String,
        to: String,
    },
    /// An interface rule (`--ip`) set this interface's static configuration.
    Static {
        line: usize,
        iface: String,
        rule: String,
    },
}

/// A transform's result: the new text, the file's new name when the system names files after
/// interfaces (ifcfg-OLD → ifcfg-NEW), and what changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Edited {
    pub text: String,
    /// The new file name (same directory), when it changes.
    pub rename: Option<String>,
    pub edits: Vec<NetEdit>,
}

impl Edited {
    pub fn changed(&self, before: &str) -> bool {
        self.text != before || self.rename.is_some()
    }
}

impl fmt::Display for NetEdit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetEdit::Rename { line, from, to } => write!(f, "line {line}: {from} -> {to}"),
            NetEdit::Mac { line, from, to } => match to {
                Some(to) => write!(f, "line {line}: MAC {from} -> {to}"),
                None => write!(f, "line {line}: MAC {from} dropped"),
            },
            NetEdit::Address { line, from, to } => write!(f, "line {line}: {from} -> {to}"),
            NetEdit::Static { line, iface, rule } => {
                write!(f, "line {line}: {iface} set by --ip {rule}")
            }
        }
    }
}

/// The state one transform carries: what it maps with, what it did, where it is.
pub(crate) struct Ctx<'a> {
    system: ConfigSystem,
    file: &'a str,
    pub plan: &'a NicPlan,
    pub rules: &'a ReipRules,
    pub edits: Vec<NetEdit>,
    pub line: usize,
}

impl<'a> Ctx<'a> {
    pub fn new(
        system: ConfigSystem,
        file: &'a str,
        plan: &'a NicPlan,
        rules: &'a ReipRules,
    ) -> Ctx<'a> {
        Ctx {
            system,
            file,
            plan,
            rules,
            edits: Vec::new(),
            line: 0,
        }
    }

    pub fn file(&self) -> &str {
        self.file
    }

    pub fn parse_error(&self, problem: Problem) -> ParseError {
        ParseError {
            system: self.system,
            file: self.file.to_owned(),
            line: self.line,
            problem,
        }
    }

    fn reip_error(&self, e: reip::ReipError) -> FixupError {
        FixupError::Transform {
            what: format!("{} file {} line {}", self.system, self.file, self.line),
            detail: e.to_string(),
        }
    }

    /// The new name of an interface name, recorded.
    pub fn rename(&mut self, name: &str) -> Option<String> {
        let to = self.plan.rename(name)?;
        self.edits.push(NetEdit::Rename {
            line: self.line,
            from: name.to_owned(),
            to: to.clone(),
        });
        Some(to)
    }

    /// `value` with every name in it renamed (names split by `is_sep`).
    pub fn rename_tokens(&mut self, value: &str, is_sep: impl Fn(char) -> bool) -> String {
        map_tokens(value, is_sep, |t| self.rename(t))
    }

    /// The target's MAC for a source MAC, in the source's letter case, recorded.
    pub fn mac(&mut self, mac: &str) -> Option<String> {
        let pair = self.plan.pair_by_mac(mac)?;
        if normalize_mac(mac).ok()? == pair.new_mac {
            return None;
        }
        let upper = mac.chars().any(|c| c.is_ascii_uppercase());
        let to = if upper {
            pair.new_mac.to_ascii_uppercase()
        } else {
            pair.new_mac.clone()
        };
        self.edits.push(NetEdit::Mac {
            line: self.line,
            from: mac.to_owned(),
            to: Some(to.clone()),
        });
        Some(to)
    }

    /// Whether `mac` is a mapped source NIC's MAC; records it as dropped.
    pub fn drop_mac(&mut self, mac: &str) -> bool {
        let hit = self
            .plan
            .pair_by_mac(mac)
            .is_some_and(|p| p.new_mac != p.old_mac.clone().unwrap_or_default());
        if hit {
            self.edits.push(NetEdit::Mac {
                line: self.line,
                from: mac.to_owned(),
                to: None,
            });
        }
        hit
    }

    /// An interface address moved by the subnet rules, recorded.
    pub fn cidr(&mut self, c: IpCidr) -> Result<Option<IpCidr>, FixupError> {
        let to = self.rules.map_cidr(c).map_err(|e| self.reip_error(e))?;
        if let Some(to) = to {
            self.edits.push(NetEdit::Address {
                line: self.line,
                from: c.to_string(),
                to: to.to_string(),
            });
        }
        Ok(to)
    }

    /// A gateway or DNS server moved by the subnet rules, recorded.
    pub fn ip(&mut self, ip: IpAddr) -> Result<Option<IpAddr>, FixupError> {
        let to = self.rules.map_ip(ip).map_err(|e| self.reip_error(e))?;
        if let Some(to) = to {
            self.edits.push(NetEdit::Address {
                line: self.line,
                from: ip.to_string(),
                to: to.to_string(),
            });
        }
        Ok(to)
    }

    /// The `--ip` rule for an interface of the source named `old`, in family `v4`.
    pub fn iface_rule(&self, old: &str, v4: bool) -> Option<&'a IfaceRule> {
        let new = self.plan.rename(old);
        self.rules.for_iface(old, new.as_deref(), v4)
    }

    pub fn record_static(&mut self, iface: &str, rule: &IfaceRule) {
        self.edits.push(NetEdit::Static {
            line: self.line,
            iface: iface.to_owned(),
            rule: rule.to_string(),
        });
    }

    /// Text tokens split by `is_sep` that are addresses (`A` or `A/P`) moved by the subnet rules.
    pub fn reip_tokens(
        &mut self,
        value: &str,
        is_sep: impl Fn(char) -> bool,
    ) -> Result<String, FixupError> {
        let mut err = None;
        let out = map_tokens(value, is_sep, |t| {
            if err.is_some() {
                return None;
            }
            match self.reip_text(t) {
                Ok(v) => v,
                Err(e) => {
                    err = Some(e);
                    None
                }
            }
        });
        err.map_or(Ok(out), Err)
    }

    /// One address text, `A` or `A/P`, moved by the subnet rules; `None` when it is not an
    /// address or does not move.
    pub fn reip_text(&mut self, t: &str) -> Result<Option<String>, FixupError> {
        if let Ok(c) = t.parse::<IpCidr>() {
            return Ok(self.cidr(c)?.map(|c| c.to_string()));
        }
        match t.parse::<IpAddr>() {
            Ok(ip) => Ok(self.ip(ip)?.map(|ip| ip.to_string())),
            Err(_) => Ok(None),
        }
    }
}

/// `value` with each maximal run of non-separator characters replaced by `f(run)` when that
/// gives `Some`; separators kept as they were.
pub(crate) fn map_tokens(
    value: &str,
    is_sep: impl Fn(char) -> bool,
    mut f: impl FnMut(&str) -> Option<String>,
) -> String {
    let mut out = String::with_capacity(value.len());
    let mut start = None;
    for (i, c) in value.char_indices() {
        if is_sep(c) {
            if let Some(s) = start.take() {
                let t = &value[s..i];
                out.push_str(&f(t).unwrap_or_else(|| t.to_owned()));
            }
            out.push(c);
        } else if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(s) = start {
        let t = &value[s..];
        out.push_str(&f(t).unwrap_or_else(|| t.to_owned()));
    }
    out
}

/// Lines with their endings, numbered from 1.
pub(crate) fn numbered(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.split_inclusive('\n')
        .enumerate()
        .map(|(i, l)| (i + 1, l))
}

/// A line's body and its ending (`\n`, `\r\n` or nothing).
pub(crate) fn split_eol(line: &str) -> (&str, &str) {
    let body = line.trim_end_matches(['\n', '\r']);
    (body, &line[body.len()..])
}

/// The line ending the file uses (for inserted lines).
pub(crate) fn eol_of(text: &str) -> &'static str {
    if text.contains("\r\n") {
        "\r\n"
    } else {
        "\n"
    }
}

/// A MAC as the files spell it, normalized, or a parse problem.
pub(crate) fn parse_mac(text: &str) -> Result<String, Problem> {
    normalize_mac(text).map_err(|_| Problem::Mac { text: short(text) })
}

pub(crate) fn parse_ip(what: &'static str, text: &str) -> Result<IpAddr, Problem> {
    text.parse().map_err(|_| Problem::Address {
        what,
        text: short(text),
    })
}

/// `A/P`, or `A` with the family's full prefix.
pub(crate) fn parse_cidr(what: &'static str, text: &str) -> Result<IpCidr, Problem> {
    if text.contains('/') {
        return text.parse().map_err(|_| Problem::Address {
            what,
            text: short(text),
        });
    }
    let ip = parse_ip(what, text)?;
    IpCidr::new(ip, ferry_format::network::max_prefix(ip)).ok_or(Problem::Address {
        what,
        text: short(text),
    })
}

/// A dotted IPv4 netmask (`255.255.255.0`) or a prefix length as a prefix length.
pub(crate) fn parse_netmask(text: &str) -> Result<u8, Problem> {
    let bad = || Problem::Address {
        what: "netmask",
        text: short(text),
    };
    if let Ok(p) = text.parse::<u8>() {
        return if p <= 128 { Ok(p) } else { Err(bad()) };
    }
    let m: std::net::Ipv4Addr = text.parse().map_err(|_| bad())?;
    let m = u32::from(m);
    let ones = m.leading_ones();
    if m.checked_shl(ones).unwrap_or(0) != 0 {
        return Err(bad());
    }
    u8::try_from(ones).map_err(|_| bad())
}

/// A dotted IPv4 netmask of `prefix` bits.
pub(crate) fn netmask_text(prefix: u8) -> String {
    let m = u32::MAX
        .checked_shl(32 - u32::from(prefix.min(32)))
        .unwrap_or(0);
    std::net::Ipv4Addr::from(m).to_string()
}

/// A byte range in a line's body.
pub(crate) type Span = (usize, usize);

/// One line of an INI-style file (NetworkManager keyfiles, systemd units).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ini<'a> {
    Blank,
    Comment,
    Section(&'a str),
    /// `key=value`; `value` is the byte range of the value in the line's body (trimmed).
    Key {
        key: &'a str,
        value: (usize, usize),
    },
}

pub(crate) fn ini_line(body: &str) -> Result<Ini<'_>, Problem> {
    let t = body.trim();
    if t.is_empty() {
        return Ok(Ini::Blank);
    }
    if t.starts_with('#') || t.starts_with(';') {
        return Ok(Ini::Comment);
    }
    if let Some(name) = t.strip_prefix('[') {
        return name
            .strip_suffix(']')
            .map(Ini::Section)
            .ok_or(Problem::Syntax("a section header without its closing ]"));
    }
    let Some(eq) = body.find('=') else {
        return Err(Problem::Syntax(
            "expected key=value, [section] or a comment",
        ));
    };
    let key = body[..eq].trim();
    if key.is_empty() {
        return Err(Problem::Syntax("a line with no key before ="));
    }
    let rest = &body[eq + 1..];
    let start = eq + 1 + (rest.len() - rest.trim_start().len());
    let end = (eq + 1 + rest.trim_end().len()).max(start);
    Ok(Ini::Key {
        key,
        value: (start, end),
    })
}

/// What a name says about its interface when the config does not (`bond0`, `br0`,
/// `eth0.100`, `lo`).
pub(crate) fn kind_of_name(name: &str) -> ferry_format::network::InterfaceKind {
    use ferry_format::network::InterfaceKind as K;
    if name == "lo" {
        K::Loopback
    } else if name.starts_with("bond") {
        K::Bond
    } else if name.starts_with("br") || name.starts_with("virbr") {
        K::Bridge
    } else if name.starts_with("vlan") || ifupdown::vlan_name(name).is_some() {
        K::Vlan
    } else if name.starts_with("team") || name.starts_with("tun") || name.starts_with("tap") {
        K::Other
    } else {
        K::Ethernet
    }
}

/// `body` with the byte range `r` replaced by `new`.
pub(crate) fn splice(body: &str, r: (usize, usize), new: &str) -> String {
    format!("{}{new}{}", &body[..r.0], &body[r.1..])
}

pub(crate) fn short(s: &str) -> String {
    s.chars().take(64).collect()
}

/// Adds `iface`'s entry to `out`, or merges it into the entry of the same name (the inet and
/// inet6 stanzas of one interface), bounded.
pub(crate) fn merge(out: &mut Vec<Interface>, iface: Interface) -> Result<(), Problem> {
    if let Some(have) = out.iter_mut().find(|i| i.name == iface.name) {
        have.addresses.extend(iface.addresses);
        have.gateways.extend(iface.gateways);
        have.dns.extend(iface.dns);
        have.members.extend(iface.members);
        have.dhcp4 |= iface.dhcp4;
        have.dhcp6 |= iface.dhcp6;
        have.mac = have.mac.take().or(iface.mac);
        have.parent = have.parent.take().or(iface.parent);
        if have.kind == Default::default() {
            have.kind = iface.kind;
        }
    } else {
        if out.len() >= MAX_INTERFACES {
            return Err(Problem::TooMany {
                what: "interfaces",
                max: MAX_INTERFACES,
            });
        }
        out.push(iface);
    }
    Ok(())
}

/// A file's interfaces after a bounds check of every entry.
pub(crate) fn checked(
    system: ConfigSystem,
    file: &str,
    interfaces: Vec<Interface>,
) -> Result<Vec<Interface>, ParseError> {
    let cfg = NetworkConfig { interfaces };
    cfg.check().map_err(|e| ParseError {
        system,
        file: file.to_owned(),
        line: 0,
        problem: Problem::Syntax(match e {
            ferry_format::network::NetworkConfigError::TooMany { .. } => "too many entries",
            ferry_format::network::NetworkConfigError::TooLong { .. } => "a field is too long",
            ferry_format::network::NetworkConfigError::Name(_) => "an interface name is invalid",
            ferry_format::network::NetworkConfigError::Mac { .. } => "a MAC is invalid",
        }),
    })?;
    Ok(cfg.interfaces)
}

/// Which system reads a file, by its path relative to the root (`etc/netplan/01.yaml`).
pub fn system_of(rel: &str) -> Option<ConfigSystem> {
    let (dir, name) = rel.rsplit_once('/').unwrap_or(("", rel));
    match dir {
        "etc/network" if name == "interfaces" => Some(ConfigSystem::Ifupdown),
        "etc/network/interfaces.d" if !name.starts_with('.') => Some(ConfigSystem::Ifupdown),
        "etc/netplan" if name.ends_with(".yaml") => Some(ConfigSystem::Netplan),
        "etc/NetworkManager/system-connections" if name.ends_with(".nmconnection") => {
            Some(ConfigSystem::NetworkManager)
        }
        "etc/systemd/network" if name.ends_with(".network") || name.ends_with(".link") => {
            Some(ConfigSystem::Networkd)
        }
        "etc/sysconfig/network-scripts" | "etc/sysconfig/network"
            if name.starts_with("ifcfg-") && !name.ends_with(".ferry-orig") =>
        {
            Some(ConfigSystem::Ifcfg)
        }
        _ => None,
    }
}

/// Reads one file's interfaces with its system's reader; `path` is how the source OS names it.
pub fn read_file(
    system: ConfigSystem,
    path: &str,
    text: &str,
) -> Result<Vec<Interface>, ParseError> {
    match system {
        ConfigSystem::Ifupdown => ifupdown::read(path, text),
        ConfigSystem::Netplan => netplan::read(path, text),
        ConfigSystem::NetworkManager => nm_keyfile::read(path, text),
        ConfigSystem::Networkd => networkd::read(path, text),
        ConfigSystem::Ifcfg => ifcfg::read(path, text),
        ConfigSystem::WindowsRegistry => Err(ParseError {
            system,
            file: path.to_owned(),
            line: 0,
            problem: Problem::Unsupported("the Windows registry (read from the SYSTEM hive)"),
        }),
        ConfigSystem::Unconfigured => Err(ParseError {
            system,
            file: path.to_owned(),
            line: 0,
            problem: Problem::Unsupported(
                "a file for an interface no config file names (recorded from the kernel)",
            ),
        }),
    }
}

/// Rewrites one file with its system's transform.
pub fn transform_file(
    system: ConfigSystem,
    path: &str,
    text: &str,
    plan: &NicPlan,
    rules: &ReipRules,
) -> Result<Edited, FixupError> {
    match system {
        ConfigSystem::Ifupdown => ifupdown::transform(path, text, plan, rules),
        ConfigSystem::Netplan => netplan::transform(path, text, plan, rules),
        ConfigSystem::NetworkManager => nm_keyfile::transform(path, text, plan, rules),
        ConfigSystem::Networkd => networkd::transform(path, text, plan, rules),
        ConfigSystem::Ifcfg => ifcfg::transform(path, text, plan, rules),
        ConfigSystem::WindowsRegistry => Err(FixupError::Transform {
            what: format!("Windows registry {path}"),
            detail: "network settings in a hive are not rewritten by a text transform".into(),
        }),
        ConfigSystem::Unconfigured => Err(FixupError::Transform {
            what: format!("interface entry {path:?}"),
            detail: "no config file names this interface (recorded from the source's kernel): \
                     there is no file to rewrite"
                .into(),
        }),
    }
}

/// What [`read_root`] found: the interfaces of every file it could read, and the files it
/// refused (with why), so one bad file does not hide the rest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RootNetwork {
    pub config: NetworkConfig,
    /// The files read, relative to the root, with their system.
    pub files: Vec<(String, ConfigSystem)>,
    pub refused: Vec<ParseError>,
}

/// The directories [`read_root`] lists, relative to the root.
pub const CONFIG_DIRS: &[&str] = &[
    "etc/network",
    "etc/network/interfaces.d",
    "etc/netplan",
    "etc/NetworkManager/system-connections",
    "etc/systemd/network",
    "etc/sysconfig/network-scripts",
    "etc/sysconfig/network",
];

/// Reads every known network config file under a mounted root. Only regular files are read
/// (never through a symlink: an absolute link in a mounted root points into the host), at
/// most [`MAX_FILES_PER_DIR`] per directory and [`MAX_FILE_BYTES`] each.
pub fn read_root(root: &Path) -> Result<RootNetwork, FixupError> {
    let mut out = RootNetwork::default();
    for dir in CONFIG_DIRS {
        let Ok(rd) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        let mut names: Vec<String> = rd
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .map(|n| format!("{dir}/{n}"))
            .filter(|rel| system_of(rel).is_some())
            .take(MAX_FILES_PER_DIR)
            .collect();
        names.sort();
        for rel in names {
            let Some(system) = system_of(&rel) else {
                continue;
            };
            let path = root.join(&rel);
            let shown = format!("/{rel}");
            let refuse = |problem| ParseError {
                system,
                file: shown.clone(),
                line: 0,
                problem,
            };
            let meta = path
                .symlink_metadata()
                .map_err(FixupError::io("stat", &path))?;
            if !meta.is_file() {
                out.refused.push(refuse(Problem::Unsupported(
                    "a file that is not a regular file",
                )));
                continue;
            }
            if meta.len() > MAX_FILE_BYTES as u64 {
                out.refused
                    .push(refuse(Problem::Unsupported("a file larger than 1 MiB")));
                continue;
            }
            let bytes = crate::fsutil::read(&path)?;
            let Ok(text) = String::from_utf8(bytes) else {
                out.refused
                    .push(refuse(Problem::Unsupported("text that is not UTF-8")));
                continue;
            };
            match read_file(system, &shown, &text) {
                Ok(ifaces) => {
                    if out.config.interfaces.len() + ifaces.len() > MAX_INTERFACES {
                        out.refused.push(refuse(Problem::TooMany {
                            what: "interfaces in all files",
                            max: MAX_INTERFACES,
                        }));
                        continue;
                    }
                    out.config.interfaces.extend(ifaces);
                    out.files.push((rel, system));
                }
                Err(e) => out.refused.push(e),
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
