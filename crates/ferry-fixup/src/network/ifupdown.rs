//! Debian's ifupdown: `/etc/network/interfaces` and `interfaces.d/*` (interfaces(5)).
//!
//! A file is a list of stanzas: `iface NAME FAMILY METHOD` followed by option lines,
//! `auto`/`allow-*` lines naming interfaces, `mapping`, `source`, `source-directory`. The
//! transform renames interfaces in `auto`/`allow-*`, `iface` and the options that name
//! interfaces (bond slaves and master, bridge ports, `vlan-raw-device`), drops a `hwaddress`
//! that clones a mapped NIC's old MAC, and re-IPs `address`, `gateway` and `dns-nameservers`.
//! `up`/`post-up` command lines are left alone (docs/network.md).

use ferry_format::network::{ConfigSystem, Interface, InterfaceKind, IpCidr};

use super::{
    checked, eol_of, merge, numbered, parse_cidr, parse_ip, parse_mac, parse_netmask, split_eol,
    Ctx, Edited, ParseError, Problem,
};
use crate::network::mapping::NicPlan;
use crate::network::reip::ReipRules;
use crate::FixupError;

const SYSTEM: ConfigSystem = ConfigSystem::Ifupdown;

/// Options whose values name interfaces.
const NAME_OPTIONS: &[&str] = &[
    "bond-slaves",
    "bond_slaves",
    "slaves",
    "bond-master",
    "bond_master",
    "bond-primary",
    "bond_primary",
    "bridge_ports",
    "bridge-ports",
    "vlan-raw-device",
    "vlan_raw_device",
];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Line<'a> {
    Blank,
    Comment,
    /// `auto`, `allow-*`: the names follow the keyword.
    Names,
    Iface {
        name: &'a str,
        family: &'a str,
        method: &'a str,
    },
    /// `mapping`, `source`, `source-directory`, `rename`, `no-*`: other stanzas.
    Other,
    Option {
        key: &'a str,
        value: &'a str,
    },
}

fn classify<'a>(body: &'a str, in_iface: bool) -> Result<Line<'a>, Problem> {
    let t = body.trim();
    if t.is_empty() {
        return Ok(Line::Blank);
    }
    if t.starts_with('#') {
        return Ok(Line::Comment);
    }
    let mut words = t.split_whitespace();
    let key = words.next().unwrap_or_default();
    match key {
        "auto" => Ok(Line::Names),
        k if k.starts_with("allow-") => Ok(Line::Names),
        "iface" => {
            let (Some(name), Some(family), Some(method)) =
                (words.next(), words.next(), words.next())
            else {
                return Err(Problem::Syntax("iface needs NAME FAMILY METHOD"));
            };
            Ok(Line::Iface {
                name,
                family,
                method,
            })
        }
        "mapping" | "source" | "source-directory" | "source-dir" | "rename" | "no-auto-down"
        | "no-scripts" => Ok(Line::Other),
        _ if in_iface => {
            let value = t[key.len()..].trim_start();
            Ok(Line::Option { key, value })
        }
        // Options of a `mapping` stanza (script, map) and anything else outside an iface.
        _ => Ok(Line::Other),
    }
}

/// The interfaces the file declares (`iface` stanzas; inet and inet6 of one name merged).
pub fn read(path: &str, text: &str) -> Result<Vec<Interface>, ParseError> {
    let err = |line, problem| ParseError {
        system: SYSTEM,
        file: path.to_owned(),
        line,
        problem,
    };
    let mut out: Vec<Interface> = Vec::new();
    let mut cur: Option<(Interface, bool, Option<u8>)> = None; // (entry, inet, netmask)
    let mut masters: Vec<(String, String)> = Vec::new();
    let flush = |cur: &mut Option<(Interface, bool, Option<u8>)>, out: &mut Vec<Interface>| {
        let Some((mut i, _, mask)) = cur.take() else {
            return Ok(());
        };
        if let Some(p) = mask {
            // `address A` with `netmask M`: the prefix comes from the netmask.
            for a in &mut i.addresses {
                if a.addr().is_ipv4() && a.prefix() == 32 {
                    *a = IpCidr::new(a.addr(), p).unwrap_or(*a);
                }
            }
        }
        merge(out, i)
    };
    for (n, line) in numbered(text) {
        let (body, _) = split_eol(line);
        let kind = classify(body, cur.is_some()).map_err(|p| err(n, p))?;
        match kind {
            Line::Iface {
                name,
                family,
                method,
            } => {
                flush(&mut cur, &mut out).map_err(|p| err(n, p))?;
                let inet = family == "inet";
                let mut i = Interface {
                    name: name.to_owned(),
                    system: SYSTEM,
                    file: path.to_owned(),
                    ..Interface::default()
                };
                i.dhcp4 = inet && method == "dhcp";
                i.dhcp6 = family == "inet6" && method == "dhcp";
                if method == "loopback" || name == "lo" {
                    i.kind = InterfaceKind::Loopback;
                } else if let Some((parent, _)) = vlan_name(name) {
                    i.kind = InterfaceKind::Vlan;
                    i.parent = Some(parent.to_owned());
                }
                cur = Some((i, inet, None));
            }
            Line::Option { key, value } => {
                let Some((i, inet, mask)) = cur.as_mut() else {
                    continue;
                };
                let list = || {
                    value
                        .split_whitespace()
                        .filter(|w| !["none", "all"].contains(w))
                };
                match key {
                    "address" => {
                        let c = parse_cidr("address", value).map_err(|p| err(n, p))?;
                        i.addresses.push(c);
                    }
                    "netmask" if *inet => {
                        *mask = Some(parse_netmask(value).map_err(|p| err(n, p))?)
                    }
                    "gateway" => i
                        .gateways
                        .push(parse_ip("gateway", value).map_err(|p| err(n, p))?),
                    "dns-nameservers" => {
                        for w in value.split_whitespace() {
                            i.dns
                                .push(parse_ip("DNS server", w).map_err(|p| err(n, p))?);
                        }
                    }
                    "hwaddress" => {
                        let mac = value.split_whitespace().last().unwrap_or_default();
                        i.mac = Some(parse_mac(mac).map_err(|p| err(n, p))?);
                    }
                    "bond-slaves" | "bond_slaves" | "slaves" => {
                        i.kind = InterfaceKind::Bond;
                        i.members.extend(list().map(str::to_owned));
                    }
                    "bond-mode" | "bond_mode" => i.kind = InterfaceKind::Bond,
                    "bond-master" | "bond_master" => {
                        masters.push((value.to_owned(), i.name.clone()))
                    }
                    "bridge_ports" | "bridge-ports" => {
                        i.kind = InterfaceKind::Bridge;
                        i.members.extend(list().map(str::to_owned));
                    }
                    "vlan-raw-device" | "vlan_raw_device" => {
                        i.kind = InterfaceKind::Vlan;
                        i.parent = Some(value.to_owned());
                    }
                    _ => {}
                }
            }
            Line::Names | Line::Other => {
                if !matches!(kind, Line::Names) {
                    flush(&mut cur, &mut out).map_err(|p| err(n, p))?;
                }
            }
            Line::Blank | Line::Comment => {}
        }
    }
    flush(&mut cur, &mut out).map_err(|p| err(0, p))?;
    for (master, slave) in masters {
        if let Some(b) = out.iter_mut().find(|i| i.name == master) {
            if !b.members.contains(&slave) {
                b.members.push(slave);
            }
            b.kind = InterfaceKind::Bond;
        }
    }
    checked(SYSTEM, path, out)
}

/// `eth0.100` → (`eth0`, `100`).
pub(crate) fn vlan_name(name: &str) -> Option<(&str, &str)> {
    let (p, id) = name.rsplit_once('.')?;
    (!p.is_empty() && !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit())).then_some((p, id))
}

/// The `iface` stanza a line belongs to, for the `--ip` rule.
struct Stanza<'a> {
    inet: bool,
    rule: Option<&'a super::IfaceRule>,
    address_done: bool,
}

/// Renames, MAC drops and re-IP for one ifupdown file.
pub fn transform(
    path: &str,
    text: &str,
    plan: &NicPlan,
    rules: &ReipRules,
) -> Result<Edited, FixupError> {
    let mut cx = Ctx::new(SYSTEM, path, plan, rules);
    let eol = eol_of(text);
    let mut out = String::with_capacity(text.len());
    let mut stanza: Option<Stanza> = None;
    let seen = seen_keys(text);
    for (n, line) in numbered(text) {
        cx.line = n;
        let (body, end) = split_eol(line);
        let kind = classify(body, stanza.is_some()).map_err(|p| cx.parse_error(p))?;
        let indent = &body[..body.len() - body.trim_start().len()];
        match kind {
            Line::Names => {
                let kw = body.split_whitespace().next().unwrap_or_default();
                let kw_end = indent.len() + kw.len();
                out.push_str(&body[..kw_end]);
                out.push_str(&cx.rename_tokens(&body[kw_end..], char::is_whitespace));
                out.push_str(end);
            }
            Line::Iface {
                name,
                family,
                method,
            } => {
                let inet = family == "inet";
                let rule = (inet || family == "inet6")
                    .then(|| cx.iface_rule(name, inet))
                    .flatten();
                let new_name = cx.rename(name);
                let new_method = match rule {
                    Some(_) if method != "static" => "static",
                    _ => method,
                };
                let mut field = 0;
                out.push_str(&super::map_tokens(body, char::is_whitespace, |_| {
                    field += 1;
                    match field {
                        2 => new_name.clone(),
                        4 => (new_method != method).then(|| new_method.to_owned()),
                        _ => None,
                    }
                }));
                out.push_str(end);
                if let Some(r) = rule {
                    cx.record_static(name, r);
                    // A DHCP stanza has none of these; a static one may lack some.
                    let has = if method == "static" {
                        seen.get(&n).copied().unwrap_or_default()
                    } else {
                        Seen::default()
                    };
                    let pad = "    ";
                    if !has.address {
                        out.push_str(&format!("{pad}address {}{eol}", r.address));
                    }
                    if let (Some(g), false) = (r.gateway, has.gateway) {
                        out.push_str(&format!("{pad}gateway {g}{eol}"));
                    }
                    if !r.dns.is_empty() && !has.dns {
                        out.push_str(&format!("{pad}dns-nameservers {}{eol}", dns_list(&r.dns)));
                    }
                }
                stanza = Some(Stanza {
                    inet,
                    rule,
                    address_done: rule.is_some()
                        && !seen
                            .get(&n)
                            .is_some_and(|h| h.address && method == "static"),
                });
            }
            Line::Option { key, value } => {
                let Some(st) = stanza.as_mut() else {
                    out.push_str(line);
                    continue;
                };
                // The value is the end of the trimmed body: replace just it.
                let vstart = body.trim_end().len() - value.len();
                let vend = body.trim_end().len();
                let keep_key = |v: &str| format!("{}{v}{}{end}", &body[..vstart], &body[vend..]);
                match (key, st.rule) {
                    ("address", Some(r)) => {
                        if !st.address_done {
                            st.address_done = true;
                            out.push_str(&keep_key(&r.address.to_string()));
                        }
                    }
                    ("netmask", Some(_)) if st.inet => {}
                    ("gateway", Some(r)) if r.gateway.is_some() => {
                        out.push_str(&keep_key(
                            &r.gateway.map(|g| g.to_string()).unwrap_or_default(),
                        ));
                    }
                    ("dns-nameservers", Some(r)) if !r.dns.is_empty() => {
                        out.push_str(&keep_key(&dns_list(&r.dns)));
                    }
                    ("address" | "gateway" | "dns-nameservers", _) => {
                        let v = cx.reip_tokens(value, char::is_whitespace)?;
                        out.push_str(&keep_key(&v));
                    }
                    ("hwaddress", _) => {
                        let mac = value.split_whitespace().last().unwrap_or_default();
                        if !cx.drop_mac(mac) {
                            out.push_str(line);
                        }
                    }
                    (k, _) if NAME_OPTIONS.contains(&k) => {
                        let v = cx.rename_tokens(value, char::is_whitespace);
                        out.push_str(&keep_key(&v));
                    }
                    _ => out.push_str(line),
                }
            }
            Line::Other => {
                stanza = None;
                out.push_str(line);
            }
            Line::Blank | Line::Comment => out.push_str(line),
        }
    }
    Ok(Edited {
        text: out,
        rename: None,
        edits: cx.edits,
    })
}

/// Which of the keys an `--ip` rule sets an `iface` stanza already has.
#[derive(Debug, Clone, Copy, Default)]
struct Seen {
    address: bool,
    gateway: bool,
    dns: bool,
}

/// Per `iface` line number: the keys its stanza has (lines that do not classify are skipped;
/// the transform refuses them itself).
fn seen_keys(text: &str) -> std::collections::BTreeMap<usize, Seen> {
    let mut out = std::collections::BTreeMap::new();
    let mut cur: Option<usize> = None;
    for (n, line) in numbered(text) {
        match classify(split_eol(line).0, cur.is_some()) {
            Ok(Line::Iface { .. }) => {
                out.insert(n, Seen::default());
                cur = Some(n);
            }
            Ok(Line::Other) => cur = None,
            Ok(Line::Option { key, .. }) => {
                if let Some(s) = cur.and_then(|c| out.get_mut(&c)) {
                    match key {
                        "address" => s.address = true,
                        "gateway" => s.gateway = true,
                        "dns-nameservers" => s.dns = true,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// `a b c` for DNS servers.
fn dns_list(dns: &[std::net::IpAddr]) -> String {
    dns.iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}
