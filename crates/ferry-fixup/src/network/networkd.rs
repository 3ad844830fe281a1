//! systemd-networkd: `/etc/systemd/network/*.network` and `*.link` (systemd.network(5),
//! systemd.link(5)): INI sections, keys may repeat, list values split by spaces.
//!
//! The transform renames `[Match] Name=`/`OriginalName=` entries (globs are left alone),
//! `[Link] Name=` (a `.link` rename) and `[Network] Bond=`/`Bridge=`/`VLAN=`; replaces
//! `[Match] MACAddress=`/`PermanentMACAddress=` with the target NIC's MAC (`[Link]
//! MACAddress=` sets a MAC and is left alone; so are `Path=` and `Driver=` matches, which name
//! the old hardware: docs/network.md); re-IPs `Address=`, `Gateway=` and `DNS=` in
//! `[Network]`, `[Address]` and `[Route]`. An `--ip` rule replaces `[Network]`'s first
//! `Address=` of its family, its `Gateway=` and `DNS=`, and takes its family out of `DHCP=`.

use std::net::IpAddr;

use ferry_format::network::{ConfigSystem, Interface};

use super::{
    checked, eol_of, ini_line, kind_of_name, numbered, parse_cidr, parse_ip, parse_mac, splice,
    split_eol, Ctx, Edited, IfaceRule, Ini, ParseError,
};
use crate::network::mapping::NicPlan;
use crate::network::reip::ReipRules;
use crate::FixupError;

const SYSTEM: ConfigSystem = ConfigSystem::Networkd;

fn is_glob(s: &str) -> bool {
    s.contains(['*', '?', '[', '!'])
}

/// The interface a `.network` or `.link` file configures (none when it matches by glob or
/// by something other than a name or MAC).
pub fn read(path: &str, text: &str) -> Result<Vec<Interface>, ParseError> {
    let mut i = Interface {
        system: SYSTEM,
        file: path.to_owned(),
        ..Interface::default()
    };
    let mut section = "";
    let mut link_name = None;
    for (n, line) in numbered(text) {
        let (body, _) = split_eol(line);
        let err = |problem| ParseError {
            system: SYSTEM,
            file: path.to_owned(),
            line: n,
            problem,
        };
        match ini_line(body).map_err(err)? {
            Ini::Section(s) => section = s,
            Ini::Key { key, value } => {
                let v = &body[value.0..value.1];
                let words = || v.split_whitespace();
                match (section, key) {
                    ("Match", "Name") if i.name.is_empty() => {
                        if let Some(w) = words().find(|w| !is_glob(w)) {
                            i.name = w.to_owned();
                        }
                    }
                    ("Match", "MACAddress" | "PermanentMACAddress") => {
                        if let Some(w) = words().next() {
                            i.mac = Some(parse_mac(w).map_err(err)?);
                        }
                    }
                    ("Match", "Driver") => i.driver = words().next().map(str::to_owned),
                    ("Match", "Path") => i.pci_path = words().next().map(str::to_owned),
                    ("Link", "Name") => link_name = Some(v.to_owned()),
                    ("Network", "DHCP") => {
                        i.dhcp4 = matches!(v, "yes" | "true" | "both" | "ipv4");
                        i.dhcp6 = matches!(v, "yes" | "true" | "both" | "ipv6");
                    }
                    ("Network" | "Address", "Address") => {
                        i.addresses.push(parse_cidr("address", v).map_err(err)?)
                    }
                    ("Network" | "Route", "Gateway") if !matches!(v, "_dhcp4" | "_ipv6ra" | "") => {
                        i.gateways.push(parse_ip("gateway", v).map_err(err)?)
                    }
                    ("Network", "DNS") => {
                        for w in words() {
                            // DNS=ADDR[:PORT][%IFACE][#NAME]: the address part only.
                            let a = w.split(['#', '%']).next().unwrap_or(w);
                            i.dns.push(parse_ip("DNS server", a).map_err(err)?);
                        }
                    }
                    ("Network", "VLAN") => {}
                    _ => {}
                }
            }
            Ini::Blank | Ini::Comment => {}
        }
    }
    if let Some(n) = link_name {
        i.name = n;
    }
    if i.name.is_empty() {
        return Ok(Vec::new());
    }
    i.kind = kind_of_name(&i.name);
    checked(SYSTEM, path, vec![i])
}

/// The interface name the file is about: `[Match] Name=` (first non-glob), else the source
/// interface whose MAC it matches.
fn subject(text: &str, plan: &NicPlan) -> String {
    let mut section = "";
    let mut by_mac = None;
    for line in text.split_inclusive('\n') {
        let (body, _) = split_eol(line);
        match ini_line(body) {
            Ok(Ini::Section(s)) => section = s,
            Ok(Ini::Key { key, value }) if section == "Match" => {
                let v = &body[value.0..value.1];
                match key {
                    "Name" => {
                        if let Some(w) = v.split_whitespace().find(|w| !is_glob(w)) {
                            return w.to_owned();
                        }
                    }
                    "MACAddress" | "PermanentMACAddress" => {
                        by_mac = v
                            .split_whitespace()
                            .find_map(|m| plan.pair_by_mac(m))
                            .map(|p| p.old.clone());
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
    by_mac.unwrap_or_default()
}

fn is_v4(text: &str) -> bool {
    !text.contains(':') || text.parse::<IpAddr>().is_ok_and(|ip| ip.is_ipv4())
}

/// `DHCP=` without the family of an `--ip` rule.
fn dhcp_without(v: &str, v4: bool) -> Option<&'static str> {
    match (v, v4) {
        ("yes" | "true" | "both", true) => Some("ipv6"),
        ("yes" | "true" | "both", false) => Some("ipv4"),
        ("ipv4", true) | ("ipv6", false) => Some("no"),
        _ => None,
    }
}

/// What `[Network]` holds, for an `--ip` rule.
#[derive(Default)]
struct Facts {
    network: bool,
    address: [bool; 2],
    gateway: [bool; 2],
    dns: bool,
}

fn facts(text: &str) -> Facts {
    let mut f = Facts::default();
    let mut section = "";
    for line in text.split_inclusive('\n') {
        let (body, _) = split_eol(line);
        match ini_line(body) {
            Ok(Ini::Section(s)) => {
                section = s;
                f.network |= s == "Network";
            }
            Ok(Ini::Key { key, value }) if section == "Network" => {
                let fam = usize::from(!is_v4(&body[value.0..value.1]));
                match key {
                    "Address" => f.address[fam] = true,
                    "Gateway" => f.gateway[fam] = true,
                    "DNS" => f.dns = true,
                    _ => {}
                }
            }
            _ => {}
        }
    }
    f
}

fn missing_lines(rules: [Option<&IfaceRule>; 2], f: &Facts, eol: &str) -> String {
    let mut s = String::new();
    for (fam, r) in rules.iter().enumerate() {
        let Some(r) = r else { continue };
        if !f.address[fam] {
            s.push_str(&format!("Address={}{eol}", r.address));
        }
        if let (Some(g), false) = (r.gateway, f.gateway[fam]) {
            s.push_str(&format!("Gateway={g}{eol}"));
        }
    }
    let dns: Vec<String> = rules
        .iter()
        .flatten()
        .flat_map(|r| r.dns.iter().map(IpAddr::to_string))
        .collect();
    if !dns.is_empty() && !f.dns {
        s.push_str(&format!("DNS={}{eol}", dns.join(" ")));
    }
    s
}

/// Renames, MAC matches and re-IP for one `.network` or `.link` file.
pub fn transform(
    path: &str,
    text: &str,
    plan: &NicPlan,
    rules: &ReipRules,
) -> Result<Edited, FixupError> {
    let mut cx = Ctx::new(SYSTEM, path, plan, rules);
    let eol = eol_of(text);
    let who = subject(text, plan);
    let is_network = path.ends_with(".network");
    let rule = if is_network && !who.is_empty() {
        [cx.iface_rule(&who, true), cx.iface_rule(&who, false)]
    } else {
        [None, None]
    };
    let f = facts(text);
    let mut out = String::with_capacity(text.len());
    let mut section = "";
    let mut address_done = [false; 2];
    let mut dns_done = false;
    for (n, line) in numbered(text) {
        cx.line = n;
        let (body, end) = split_eol(line);
        let kind = ini_line(body).map_err(|p| cx.parse_error(p))?;
        let Ini::Key { key, value } = kind else {
            out.push_str(line);
            if let Ini::Section(s) = kind {
                section = s;
                if s == "Network" && rule.iter().any(Option::is_some) {
                    for r in rule.iter().flatten() {
                        cx.record_static(&who, r);
                    }
                    out.push_str(&missing_lines(rule, &f, eol));
                }
            }
            continue;
        };
        let v = &body[value.0..value.1];
        let fam = usize::from(!is_v4(v));
        let r = rule[fam];
        let new: Option<String> = match (section, key) {
            ("Match", "Name" | "OriginalName") | ("Link", "Name") => {
                Some(cx.rename_tokens(v, char::is_whitespace))
            }
            ("Network", "Bond" | "Bridge" | "VLAN" | "MACVLAN" | "IPVLAN" | "VRF") => {
                Some(cx.rename_tokens(v, char::is_whitespace))
            }
            ("Match", "MACAddress" | "PermanentMACAddress") => {
                let mut err = None;
                let s = super::map_tokens(v, char::is_whitespace, |m| {
                    err = err.take().or(parse_mac(m).err());
                    cx.mac(m)
                });
                if let Some(p) = err {
                    return Err(cx.parse_error(p).into());
                }
                Some(s)
            }
            ("Network", "DHCP") => {
                let mut now = v;
                for (fam, r) in rule.iter().enumerate() {
                    if r.is_some() {
                        now = dhcp_without(now, fam == 0).unwrap_or(now);
                    }
                }
                Some(now.to_owned())
            }
            ("Network", "Address") if r.is_some() => {
                if std::mem::replace(&mut address_done[fam], true) {
                    continue;
                }
                r.map(|r| r.address.to_string())
            }
            ("Network", "Gateway") if r.is_some_and(|r| r.gateway.is_some()) => {
                r.and_then(|r| r.gateway).map(|g| g.to_string())
            }
            ("Network", "DNS") if rule.iter().flatten().any(|r| !r.dns.is_empty()) => {
                if std::mem::replace(&mut dns_done, true) {
                    continue;
                }
                let dns: Vec<String> = rule
                    .iter()
                    .flatten()
                    .flat_map(|r| r.dns.iter().map(IpAddr::to_string))
                    .collect();
                Some(dns.join(" "))
            }
            ("Network" | "Address", "Address")
            | ("Network" | "Route", "Gateway")
            | ("Network", "DNS") => Some(cx.reip_tokens(v, char::is_whitespace)?),
            _ => None,
        };
        match new {
            Some(new) if new != v => {
                out.push_str(&splice(body, value, &new));
                out.push_str(end);
            }
            _ => out.push_str(line),
        }
    }
    if !f.network && rule.iter().any(Option::is_some) {
        for r in rule.iter().flatten() {
            cx.record_static(&who, r);
        }
        if !out.is_empty() && !out.ends_with('\n') {
            out.push_str(eol);
        }
        out.push_str(&format!("{eol}[Network]{eol}"));
        out.push_str(&missing_lines(rule, &f, eol));
    }
    Ok(Edited {
        text: out,
        rename: None,
        edits: cx.edits,
    })
}
