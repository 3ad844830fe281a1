//! RHEL-style `ifcfg-*` files (`/etc/sysconfig/network-scripts/`, SUSE's
//! `/etc/sysconfig/network/`): shell variable assignments `KEY=VALUE`, one interface per file,
//! the file named after it.
//!
//! The transform renames `DEVICE=`, `NAME=` (each word: `System eth0` → `System enp1s0`),
//! `MASTER=`, `BRIDGE=`, `PHYSDEV=` and the file itself (ifcfg-OLD → ifcfg-NEW, returned as
//! [`Edited::rename`]); replaces `HWADDR=` with the target NIC's MAC (`MACADDR=` sets a MAC
//! and is left alone); re-IPs `IPADDRn`, `GATEWAYn`, `DNSn`, `IPV6ADDR`,
//! `IPV6ADDR_SECONDARIES` and `IPV6_DEFAULTGW`. An `--ip` rule sets `BOOTPROTO=none` (IPv4)
//! or `DHCPV6C=no` (IPv6), the first address and its prefix, the gateway and the DNS servers.

use std::net::IpAddr;

use ferry_format::network::{ConfigSystem, Interface, InterfaceKind, IpCidr};

use super::{
    checked, eol_of, kind_of_name, netmask_text, numbered, parse_cidr, parse_ip, parse_mac,
    parse_netmask, splice, split_eol, Ctx, Edited, IfaceRule, ParseError, Problem, Span,
};
use crate::network::mapping::NicPlan;
use crate::network::reip::ReipRules;
use crate::FixupError;

const SYSTEM: ConfigSystem = ConfigSystem::Ifcfg;

/// A `KEY=VALUE` line: the key, and the value's byte range inside its quotes.
fn assignment(body: &str) -> Result<Option<(&str, Span)>, Problem> {
    let t = body.trim_start();
    if t.is_empty() || t.starts_with('#') {
        return Ok(None);
    }
    let lead = body.len() - t.len();
    let eq = t
        .find('=')
        .ok_or(Problem::Syntax("expected KEY=VALUE or a comment"))?;
    let key = &t[..eq];
    if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(Problem::Syntax("a key of letters, digits and _ before ="));
    }
    let vstart = lead + eq + 1;
    let raw = body[vstart..].trim_end();
    let (s, e) = match raw.as_bytes().first() {
        Some(q @ (b'"' | b'\'')) => {
            let close = raw[1..]
                .find(char::from(*q))
                .ok_or(Problem::Syntax("an unclosed quote"))?;
            (vstart + 1, vstart + 1 + close)
        }
        _ => (vstart, vstart + raw.len()),
    };
    Ok(Some((key, (s, e))))
}

/// The interface name a file name gives: `ifcfg-eth0` → `eth0`.
fn name_from_path(path: &str) -> &str {
    let file = path.rsplit('/').next().unwrap_or(path);
    file.strip_prefix("ifcfg-").unwrap_or(file)
}

/// `IPADDR`, `IPADDR0`, `IPADDR1` → the index (`None` for the bare key: index 0 too).
fn indexed<'a>(key: &'a str, base: &str) -> Option<&'a str> {
    key.strip_prefix(base)
        .filter(|d| d.bytes().all(|b| b.is_ascii_digit()))
}

/// The file's interface.
pub fn read(path: &str, text: &str) -> Result<Vec<Interface>, ParseError> {
    let mut i = Interface {
        name: name_from_path(path).to_owned(),
        system: SYSTEM,
        file: path.to_owned(),
        ..Interface::default()
    };
    let mut ty = None;
    let mut addrs: Vec<(String, IpAddr)> = Vec::new();
    let mut prefixes: Vec<(String, u8)> = Vec::new();
    for (n, line) in numbered(text) {
        let (body, _) = split_eol(line);
        let err = |problem| ParseError {
            system: SYSTEM,
            file: path.to_owned(),
            line: n,
            problem,
        };
        let Some((key, r)) = assignment(body).map_err(err)? else {
            continue;
        };
        let v = &body[r.0..r.1];
        if v.is_empty() {
            continue;
        }
        match key {
            "DEVICE" => i.name = v.to_owned(),
            "TYPE" => ty = Some(v.to_owned()),
            "HWADDR" => i.mac = Some(parse_mac(v).map_err(err)?),
            "BOOTPROTO" => i.dhcp4 = matches!(v, "dhcp" | "bootp"),
            "DHCPV6C" => i.dhcp6 = v == "yes",
            "MASTER" | "BRIDGE" => {}
            "PHYSDEV" => i.parent = Some(v.to_owned()),
            "BONDING_OPTS" | "BONDING_MASTER" => ty = Some("Bond".into()),
            "IPV6ADDR" | "IPV6ADDR_SECONDARIES" => {
                for a in v.split_whitespace() {
                    i.addresses.push(parse_cidr("address", a).map_err(err)?);
                }
            }
            "IPV6_DEFAULTGW" => {
                let g = v.split('%').next().unwrap_or(v);
                i.gateways.push(parse_ip("gateway", g).map_err(err)?);
            }
            k => {
                if let Some(ix) = indexed(k, "IPADDR") {
                    addrs.push((ix.to_owned(), parse_ip("address", v).map_err(err)?));
                } else if let Some(ix) = indexed(k, "PREFIX") {
                    let p = v.parse::<u8>().ok().filter(|p| *p <= 32);
                    let p = p.ok_or_else(|| {
                        err(Problem::Address {
                            what: "prefix",
                            text: v.into(),
                        })
                    })?;
                    prefixes.push((ix.to_owned(), p));
                } else if let Some(ix) = indexed(k, "NETMASK") {
                    prefixes.push((ix.to_owned(), parse_netmask(v).map_err(err)?));
                } else if indexed(k, "GATEWAY").is_some() {
                    i.gateways.push(parse_ip("gateway", v).map_err(err)?);
                } else if indexed(k, "DNS").is_some_and(|d| !d.is_empty()) {
                    i.dns.push(parse_ip("DNS server", v).map_err(err)?);
                }
            }
        }
    }
    let norm = |ix: &str| {
        if ix.is_empty() {
            "0".to_owned()
        } else {
            ix.to_owned()
        }
    };
    for (ix, ip) in addrs {
        let p = prefixes
            .iter()
            .find(|(j, _)| norm(j) == norm(&ix))
            .map_or(32, |(_, p)| *p);
        i.addresses.extend(IpCidr::new(ip, p));
    }
    i.kind = match ty.as_deref() {
        Some("Ethernet") => InterfaceKind::Ethernet,
        Some("Bond") => InterfaceKind::Bond,
        Some("Bridge") => InterfaceKind::Bridge,
        Some("Vlan") => InterfaceKind::Vlan,
        Some(_) => InterfaceKind::Other,
        None if i.parent.is_some() => InterfaceKind::Vlan,
        None => kind_of_name(&i.name),
    };
    if i.kind == InterfaceKind::Vlan && i.parent.is_none() {
        i.parent = super::ifupdown::vlan_name(&i.name).map(|(p, _)| p.to_owned());
    }
    checked(SYSTEM, path, vec![i])
}

/// What a family's `--ip` rule writes (IPv4: BOOTPROTO, GATEWAY; IPv6: DHCPV6C, IPV6_DEFAULTGW).
struct Keys {
    static_value: &'static str,
    gateway: &'static str,
}

const KEYS: [Keys; 2] = [
    Keys {
        static_value: "none",
        gateway: "GATEWAY",
    },
    Keys {
        static_value: "no",
        gateway: "IPV6_DEFAULTGW",
    },
];

/// What the file holds, for an `--ip` rule.
#[derive(Default)]
struct Facts {
    device: Option<String>,
    address: [bool; 2],
    prefix: bool,
    gateway: [bool; 2],
    dns: bool,
}

fn facts(text: &str) -> Facts {
    let mut f = Facts::default();
    for line in text.split_inclusive('\n') {
        let (body, _) = split_eol(line);
        let Ok(Some((key, r))) = assignment(body) else {
            continue;
        };
        match key {
            "DEVICE" => f.device = Some(body[r.0..r.1].to_owned()),
            "IPV6ADDR" => f.address[1] = true,
            "IPV6_DEFAULTGW" => f.gateway[1] = true,
            k if indexed(k, "IPADDR").is_some() => f.address[0] = true,
            k if indexed(k, "PREFIX").is_some() || indexed(k, "NETMASK").is_some() => {
                f.prefix = true
            }
            k if indexed(k, "GATEWAY").is_some() => f.gateway[0] = true,
            k if indexed(k, "DNS").is_some_and(|d| !d.is_empty()) => f.dns = true,
            _ => {}
        }
    }
    f
}

fn missing_lines(rules: [Option<&IfaceRule>; 2], f: &Facts, eol: &str) -> String {
    let mut s = String::new();
    for (fam, r) in rules.iter().enumerate() {
        let Some(r) = r else { continue };
        let k = &KEYS[fam];
        if !f.address[fam] {
            if fam == 0 {
                s.push_str(&format!(
                    "IPADDR={}{eol}PREFIX={}{eol}",
                    r.address.addr(),
                    r.address.prefix()
                ));
            } else {
                s.push_str(&format!("IPV6INIT=yes{eol}IPV6ADDR={}{eol}", r.address));
            }
        } else if fam == 0 && !f.prefix {
            s.push_str(&format!("PREFIX={}{eol}", r.address.prefix()));
        }
        if let (Some(g), false) = (r.gateway, f.gateway[fam]) {
            s.push_str(&format!("{}={g}{eol}", k.gateway));
        }
    }
    if !f.dns {
        let dns = rules.iter().flatten().flat_map(|r| r.dns.iter());
        for (n, d) in dns.enumerate() {
            s.push_str(&format!("DNS{}={d}{eol}", n + 1));
        }
    }
    s
}

/// Renames (the file's too), the MAC match and re-IP for one ifcfg file; `path` names the
/// file (its name is the interface's when `DEVICE=` is absent).
pub fn transform(
    path: &str,
    text: &str,
    plan: &NicPlan,
    rules: &ReipRules,
) -> Result<Edited, FixupError> {
    let mut cx = Ctx::new(SYSTEM, path, plan, rules);
    let eol = eol_of(text);
    let f = facts(text);
    let file_iface = name_from_path(path);
    let who = f.device.clone().unwrap_or_else(|| file_iface.to_owned());
    let rule = [cx.iface_rule(&who, true), cx.iface_rule(&who, false)];
    let dns: Vec<IpAddr> = rule
        .iter()
        .flatten()
        .flat_map(|r| r.dns.iter().copied())
        .collect();
    let mut out = String::with_capacity(text.len());
    let mut done: Vec<&str> = Vec::new();
    for (n, line) in numbered(text) {
        cx.line = n;
        let (body, end) = split_eol(line);
        let Some((key, r)) = assignment(body).map_err(|p| cx.parse_error(p))? else {
            out.push_str(line);
            continue;
        };
        let v = &body[r.0..r.1];
        let new: Option<String> = match key {
            "DEVICE" | "MASTER" | "BRIDGE" | "PHYSDEV" => cx.rename(v),
            "NAME" => Some(cx.rename_tokens(v, char::is_whitespace)),
            "HWADDR" => cx.mac(v),
            "BOOTPROTO" if rule[0].is_some() && v != "none" && v != "static" => {
                Some(KEYS[0].static_value.into())
            }
            "DHCPV6C" if rule[1].is_some() && v == "yes" => Some(KEYS[1].static_value.into()),
            "IPV6ADDR" if rule[1].is_some() => rule[1].map(|r| r.address.to_string()),
            "IPV6ADDR_SECONDARIES" if rule[1].is_some() => continue,
            "IPV6_DEFAULTGW" if rule[1].is_some_and(|r| r.gateway.is_some()) => {
                rule[1].and_then(|r| r.gateway).map(|g| g.to_string())
            }
            k if rule[0].is_some() && indexed(k, "IPADDR").is_some() => {
                if done.contains(&"IPADDR") {
                    continue;
                }
                done.push("IPADDR");
                rule[0].map(|r| r.address.addr().to_string())
            }
            k if rule[0].is_some() && indexed(k, "PREFIX").is_some() => {
                if done.contains(&"PREFIX") {
                    continue;
                }
                done.push("PREFIX");
                rule[0].map(|r| r.address.prefix().to_string())
            }
            k if rule[0].is_some() && indexed(k, "NETMASK").is_some() => {
                if done.contains(&"NETMASK") {
                    continue;
                }
                done.push("NETMASK");
                rule[0].map(|r| netmask_text(r.address.prefix()))
            }
            k if rule[0].is_some_and(|r| r.gateway.is_some())
                && indexed(k, "GATEWAY").is_some() =>
            {
                rule[0].and_then(|r| r.gateway).map(|g| g.to_string())
            }
            k if !dns.is_empty() && indexed(k, "DNS").is_some_and(|d| !d.is_empty()) => {
                let ix: usize = k[3..].parse().unwrap_or(0);
                match dns.get(ix.wrapping_sub(1)) {
                    Some(d) => Some(d.to_string()),
                    None => continue,
                }
            }
            "IPV6ADDR" | "IPV6ADDR_SECONDARIES" | "IPV6_DEFAULTGW" => {
                Some(cx.reip_tokens(v, |c| c.is_whitespace() || c == '%')?)
            }
            k if ["IPADDR", "GATEWAY", "DNS"]
                .iter()
                .any(|b| indexed(k, b).is_some()) =>
            {
                cx.reip_text(v)?
            }
            _ => None,
        };
        match new {
            Some(new) if new != v => {
                out.push_str(&splice(body, r, &new));
                out.push_str(end);
            }
            _ => out.push_str(line),
        }
    }
    if rule.iter().any(Option::is_some) {
        for r in rule.iter().flatten() {
            cx.record_static(&who, r);
        }
        let mut f = f;
        // DNS lines beyond the existing ones are appended too.
        if f.dns {
            let have = text
                .lines()
                .filter_map(|l| assignment(l).ok().flatten())
                .filter(|(k, _)| indexed(k, "DNS").is_some_and(|d| !d.is_empty()))
                .count();
            for (n, d) in dns.iter().enumerate().skip(have) {
                if !out.is_empty() && !out.ends_with('\n') {
                    out.push_str(eol);
                }
                out.push_str(&format!("DNS{}={d}{eol}", n + 1));
            }
            f.dns = true;
        }
        let more = missing_lines(rule, &f, eol);
        if !more.is_empty() && !out.is_empty() && !out.ends_with('\n') {
            out.push_str(eol);
        }
        out.push_str(&more);
    }
    let rename = plan
        .rename(file_iface)
        .filter(|_| {
            path.rsplit('/')
                .next()
                .is_some_and(|f| f.starts_with("ifcfg-"))
        })
        .map(|new| format!("ifcfg-{new}"));
    Ok(Edited {
        text: out,
        rename,
        edits: cx.edits,
    })
}
