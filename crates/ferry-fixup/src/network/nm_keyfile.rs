//! NetworkManager keyfiles: `/etc/NetworkManager/system-connections/*.nmconnection`
//! (nm-settings-keyfile(5)): one connection per file, INI sections.
//!
//! The transform renames `[connection] interface-name`, `master`/`controller` (when they name
//! an interface, not a UUID), `[vlan] parent` and `[match] interface-name`; replaces
//! `[ethernet] mac-address` (`[802-3-ethernet]` too) with the target NIC's MAC
//! (`cloned-mac-address` sets a MAC and is left alone); re-IPs `addressN`, `gateway` and `dns`
//! in `[ipv4]`/`[ipv6]`. An `--ip` rule sets `method=manual`, the first `address1` of its
//! family, `gateway` and `dns`.

use ferry_format::network::{ConfigSystem, Interface, InterfaceKind};

use super::{
    checked, eol_of, ini_line, kind_of_name, numbered, parse_cidr, parse_ip, parse_mac, splice,
    split_eol, Ctx, Edited, IfaceRule, Ini, ParseError,
};
use crate::network::mapping::NicPlan;
use crate::network::reip::ReipRules;
use crate::FixupError;

const SYSTEM: ConfigSystem = ConfigSystem::NetworkManager;

fn is_ethernet_section(s: &str) -> bool {
    s == "ethernet" || s == "802-3-ethernet"
}

/// `address1`, `addresses2`, `address`: the static address keys.
fn is_address_key(k: &str) -> bool {
    let digits = k
        .strip_prefix("addresses")
        .or_else(|| k.strip_prefix("address"));
    digits.is_some_and(|d| d.bytes().all(|b| b.is_ascii_digit()))
}

fn dns_sep(c: char) -> bool {
    c == ';' || c == ',' || c == ' '
}

/// The connection's interface (one per file).
pub fn read(path: &str, text: &str) -> Result<Vec<Interface>, ParseError> {
    let mut i = Interface {
        system: SYSTEM,
        file: path.to_owned(),
        ..Interface::default()
    };
    let (mut id, mut ty) = (None, None);
    let mut section = "";
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
                match (section, key) {
                    ("connection", "interface-name") => i.name = v.to_owned(),
                    ("connection", "id") => id = Some(v.to_owned()),
                    ("connection", "type") => ty = Some(v.to_owned()),
                    (s, "mac-address") if is_ethernet_section(s) && !v.is_empty() => {
                        i.mac = Some(parse_mac(v).map_err(err)?)
                    }
                    ("vlan", "parent") => i.parent = Some(v.to_owned()),
                    ("ipv4", "method") => i.dhcp4 = v == "auto",
                    ("ipv6", "method") => i.dhcp6 = v == "auto" || v == "dhcp",
                    ("ipv4" | "ipv6", k) if is_address_key(k) => {
                        for a in v.split(';').filter(|a| !a.is_empty()) {
                            let mut parts = a.split(',');
                            let addr = parts.next().unwrap_or_default().trim();
                            i.addresses.push(parse_cidr("address", addr).map_err(err)?);
                            if let Some(gw) = parts.next().map(str::trim).filter(|g| !g.is_empty())
                            {
                                i.gateways.push(parse_ip("gateway", gw).map_err(err)?);
                            }
                        }
                    }
                    ("ipv4" | "ipv6", "gateway") if !v.is_empty() => {
                        i.gateways.push(parse_ip("gateway", v).map_err(err)?)
                    }
                    ("ipv4" | "ipv6", "dns") => {
                        for d in v.split(dns_sep).filter(|d| !d.is_empty()) {
                            i.dns.push(parse_ip("DNS server", d).map_err(err)?);
                        }
                    }
                    _ => {}
                }
            }
            Ini::Blank | Ini::Comment => {}
        }
    }
    if i.name.is_empty() {
        // A connection bound by MAC only: its id is the best name it has.
        i.name = id.unwrap_or_default().replace(char::is_whitespace, "-");
    }
    i.kind = match ty.as_deref() {
        Some("ethernet" | "802-3-ethernet") => InterfaceKind::Ethernet,
        Some("bond") => InterfaceKind::Bond,
        Some("bridge") => InterfaceKind::Bridge,
        Some("vlan") => InterfaceKind::Vlan,
        Some("loopback") => InterfaceKind::Loopback,
        Some(_) => InterfaceKind::Other,
        None => kind_of_name(&i.name),
    };
    if i.name.is_empty() {
        return Ok(Vec::new());
    }
    checked(SYSTEM, path, vec![i])
}

/// What the file holds, for an `--ip` rule.
#[derive(Default)]
struct Facts {
    iface: String,
    /// Per family (0 IPv4, 1 IPv6): section present, address, gateway, dns keys present.
    section: [bool; 2],
    address: [bool; 2],
    gateway: [bool; 2],
    dns: [bool; 2],
}

fn family(section: &str) -> Option<usize> {
    match section {
        "ipv4" => Some(0),
        "ipv6" => Some(1),
        _ => None,
    }
}

fn facts(text: &str, plan: &NicPlan) -> Facts {
    let mut f = Facts::default();
    let mut section = "";
    let mut mac_name = None;
    for line in text.split_inclusive('\n') {
        let (body, _) = split_eol(line);
        match ini_line(body) {
            Ok(Ini::Section(s)) => {
                section = s;
                if let Some(i) = family(s) {
                    f.section[i] = true;
                }
            }
            Ok(Ini::Key { key, value }) => {
                let v = &body[value.0..value.1];
                match (section, family(section), key) {
                    ("connection", _, "interface-name") => f.iface = v.to_owned(),
                    (s, _, "mac-address") if is_ethernet_section(s) => {
                        mac_name = plan.pair_by_mac(v).map(|p| p.old.clone());
                    }
                    (_, Some(i), k) if is_address_key(k) => f.address[i] = true,
                    (_, Some(i), "gateway") => f.gateway[i] = true,
                    (_, Some(i), "dns") => f.dns[i] = true,
                    _ => {}
                }
            }
            _ => {}
        }
    }
    if f.iface.is_empty() {
        f.iface = mac_name.unwrap_or_default();
    }
    f
}

/// The lines an `--ip` rule adds to a family section that lacks them.
fn missing_lines(r: &IfaceRule, fam: usize, f: &Facts, eol: &str) -> String {
    let mut s = String::new();
    if !f.address[fam] {
        s.push_str(&format!("address1={}", r.address));
        if let (Some(g), false) = (r.gateway, f.gateway[fam]) {
            s.push_str(&format!(",{g}"));
        }
        s.push_str(eol);
    } else if let (Some(g), false) = (r.gateway, f.gateway[fam]) {
        s.push_str(&format!("gateway={g}{eol}"));
    }
    if !r.dns.is_empty() && !f.dns[fam] {
        s.push_str(&format!("dns={}{eol}", dns_value(r)));
    }
    s
}

fn dns_value(r: &IfaceRule) -> String {
    r.dns.iter().map(|d| format!("{d};")).collect()
}

/// Renames, MAC match and re-IP for one keyfile.
pub fn transform(
    path: &str,
    text: &str,
    plan: &NicPlan,
    rules: &ReipRules,
) -> Result<Edited, FixupError> {
    let mut cx = Ctx::new(SYSTEM, path, plan, rules);
    let eol = eol_of(text);
    let f = facts(text, plan);
    let rule = [
        cx.iface_rule(&f.iface, true),
        cx.iface_rule(&f.iface, false),
    ];
    let mut out = String::with_capacity(text.len());
    let mut section = "";
    let mut address_done = [false; 2];
    for (n, line) in numbered(text) {
        cx.line = n;
        let (body, end) = split_eol(line);
        let kind = ini_line(body).map_err(|p| cx.parse_error(p))?;
        let Ini::Key { key, value } = kind else {
            if let Ini::Section(s) = kind {
                section = s;
            }
            out.push_str(line);
            continue;
        };
        let v = &body[value.0..value.1];
        let fam = family(section);
        let r = fam.and_then(|i| rule[i]);
        let new: Option<String> = match (section, key, r) {
            ("connection", "interface-name" | "master" | "controller", _)
            | ("vlan", "parent", _) => cx.rename(v),
            ("match", "interface-name", _) => {
                Some(cx.rename_tokens(v, |c| c == ';' || c == ',')).filter(|x| x != v)
            }
            (s, "mac-address", _) if is_ethernet_section(s) => cx.mac(v),
            (_, "method", Some(rule)) if v != "manual" => {
                cx.record_static(&f.iface, rule);
                let mut s = String::from("manual");
                if let Some(i) = fam {
                    s.push_str(end);
                    s.push_str(missing_lines(rule, i, &f, eol).trim_end_matches(['\r', '\n']));
                }
                Some(s)
            }
            (_, k, Some(rule)) if is_address_key(k) => {
                let i = fam.unwrap_or(0);
                if address_done[i] {
                    continue;
                }
                address_done[i] = true;
                let gw = v.split_once(',').map(|(_, g)| g);
                let gw = rule
                    .gateway
                    .map(|g| g.to_string())
                    .or(gw.map(str::to_owned));
                Some(match gw {
                    Some(g) if !g.is_empty() => format!("{},{g}", rule.address),
                    _ => rule.address.to_string(),
                })
            }
            (_, "gateway", Some(rule)) if rule.gateway.is_some() => {
                rule.gateway.map(|g| g.to_string())
            }
            (_, "dns", Some(rule)) if !rule.dns.is_empty() => Some(dns_value(rule)),
            (_, k, None)
                if fam.is_some() && (is_address_key(k) || k == "gateway" || k == "dns") =>
            {
                let sep = |c: char| dns_sep(c) || c == ',';
                Some(cx.reip_tokens(v, sep)?).filter(|x| x != v)
            }
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
    // A rule for a family whose section the file lacks: add the section.
    for (i, name) in [(0, "ipv4"), (1, "ipv6")] {
        if let (Some(r), false) = (rule[i], f.section[i]) {
            cx.record_static(&f.iface, r);
            if !out.is_empty() && !out.ends_with('\n') {
                out.push_str(eol);
            }
            out.push_str(&format!("{eol}[{name}]{eol}method=manual{eol}"));
            out.push_str(&missing_lines(r, i, &Facts::default(), eol));
        }
    }
    Ok(Edited {
        text: out,
        rename: None,
        edits: cx.edits,
    })
}
