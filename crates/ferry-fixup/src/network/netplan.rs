//! netplan: `/etc/netplan/*.yaml` (netplan.io's YAML reference, version 2).
//!
//! Read as lines with an indentation stack, not as a YAML document: netplan files are block
//! mappings with block or one-line flow lists, and a line-level edit keeps every other byte.
//! What this reader does not understand (flow mappings, multi-line flow lists, block scalars,
//! anchors and aliases, tabs in indentation) is refused with its line.
//!
//! Under `network: <type>: <id>:` (ethernets, bonds, bridges, vlans, ...) the transform
//! renames ids that are source interface names and the references to them (`interfaces`,
//! `link`), `set-name` and `match: name`; replaces `match: macaddress` with the target
//! NIC's MAC; re-IPs `addresses`, `gateway4`/`gateway6`, `routes: via` and
//! `nameservers: addresses`. An `--ip` rule replaces the addresses of its family, turns
//! `dhcp4`/`dhcp6` off and sets the default route and DNS servers.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ferry_format::network::{ConfigSystem, Interface, InterfaceKind};

use super::{
    checked, eol_of, merge, numbered, parse_cidr, parse_ip, parse_mac, split_eol, Ctx, Edited,
    ParseError, Problem, Span,
};
use crate::network::mapping::NicPlan;
use crate::network::reip::ReipRules;
use crate::FixupError;

const SYSTEM: ConfigSystem = ConfigSystem::Netplan;

/// Deepest nesting accepted (netplan needs about 7).
const MAX_DEPTH: usize = 32;

fn device_kind(section: &str) -> Option<InterfaceKind> {
    Some(match section {
        "ethernets" => InterfaceKind::Ethernet,
        "bonds" => InterfaceKind::Bond,
        "bridges" => InterfaceKind::Bridge,
        "vlans" => InterfaceKind::Vlan,
        "wifis" | "modems" | "tunnels" | "vrfs" | "dummy-devices" | "virtual-ethernets"
        | "nm-devices" => InterfaceKind::Other,
        _ => return None,
    })
}

/// One line, located.
#[derive(Debug, Clone)]
struct YLine<'a> {
    n: usize,
    body: &'a str,
    end: &'a str,
    col: usize,
    /// Keys from the document root to this line's key (list items not counted).
    path: Vec<&'a str>,
    /// This line's key, when it has one.
    key: Option<&'a str>,
    /// The value's byte range in `body` (comment and trailing spaces excluded).
    value: Option<(usize, usize)>,
    /// The innermost list item this line is in.
    item: Option<usize>,
}

impl<'a> YLine<'a> {
    fn value(&self) -> &'a str {
        self.value.map_or("", |(s, e)| &self.body[s..e])
    }

    /// `(device section, id)` when the line is inside `network: <section>: <id>:`.
    fn device(&self) -> Option<(&'a str, &'a str)> {
        match self.path.as_slice() {
            ["network", section, id, ..] if device_kind(section).is_some() => Some((section, id)),
            _ => None,
        }
    }

    /// The path below the device id.
    fn sub(&self) -> &[&'a str] {
        if self.device().is_some() {
            &self.path[3..]
        } else {
            &[]
        }
    }
}

/// Where a value's text ends: before a ` #` comment outside quotes, trailing spaces trimmed.
fn value_end(s: &str, start: usize) -> usize {
    let b = s.as_bytes();
    let mut quote = None;
    let mut end = s.len();
    for i in start..b.len() {
        match (quote, b[i]) {
            (None, b'"' | b'\'') if i == start => quote = Some(b[i]),
            (Some(q), c) if c == q => quote = None,
            (None, b'#') if i == start || b[i - 1] == b' ' => {
                end = i;
                break;
            }
            _ => {}
        }
    }
    start + s[start..end].trim_end().len()
}

/// A line split into its column, whether it starts a list item, its key and its value.
struct Lexed {
    col: usize,
    dash: bool,
    key: Option<Span>,
    value: Option<Span>,
}

/// Splits a line into col, dash, key and value, or refuses what is not netplan's YAML.
fn lex(body: &str) -> Result<Option<Lexed>, Problem> {
    let t = body.trim_start_matches(' ');
    if t.starts_with('\t') {
        return Err(Problem::Syntax(
            "tab in indentation (YAML allows spaces only)",
        ));
    }
    let t = t.trim();
    if t.is_empty() || t.starts_with('#') || t == "---" || t == "..." {
        return Ok(None);
    }
    let col = body.len() - body.trim_start_matches(' ').len();
    let mut at = col;
    let dash = body[at..].starts_with("- ") || body[at..].trim_end() == "-";
    if dash {
        at += 1;
        at += body[at..].len() - body[at..].trim_start_matches(' ').len();
    }
    let rest = &body[at..];
    // A key: plain or quoted text followed by ':' and a space or the end.
    let key_end = if rest.starts_with('"') || rest.starts_with('\'') {
        let q = &rest[..1];
        rest[1..]
            .find(q)
            .map(|e| e + 2)
            .filter(|e| rest[*e..].starts_with(':'))
    } else {
        rest.find(": ")
            .or_else(|| rest.trim_end().strip_suffix(':').map(|k| k.len()))
            .filter(|e| !rest[..*e].contains(['#', '[', '{', '"', '\'']))
    };
    let (key, vstart) = match key_end {
        Some(e) => (Some((at, at + e)), at + e + 1),
        None => (None, at),
    };
    let vstart = vstart + body[vstart.min(body.len())..].len()
        - body[vstart.min(body.len())..].trim_start().len();
    let vend = if vstart < body.len() {
        value_end(body, vstart)
    } else {
        vstart
    };
    let value = (vend > vstart).then_some((vstart, vend));
    if let Some((s, e)) = value {
        let v = &body[s..e];
        if v.starts_with('{') {
            return Err(Problem::Unsupported("a flow mapping ({...})"));
        }
        if v.starts_with('[') && !v.ends_with(']') {
            return Err(Problem::Unsupported("a flow list across lines"));
        }
        if v.starts_with('|') || v.starts_with('>') {
            return Err(Problem::Unsupported("a block scalar (| or >)"));
        }
        if v.starts_with('&') || v.starts_with('*') || v.starts_with("<<") {
            return Err(Problem::Unsupported("anchors and aliases"));
        }
    }
    if key.is_none() && !dash {
        return Err(Problem::Syntax("expected `key: value` or `- item`"));
    }
    Ok(Some(Lexed {
        col,
        dash,
        key,
        value,
    }))
}

fn unquote(v: &str) -> &str {
    for q in ['"', '\''] {
        if let Some(inner) = v.strip_prefix(q).and_then(|x| x.strip_suffix(q)) {
            return inner;
        }
    }
    v
}

/// Every line of the file, located in the key tree.
fn parse<'a>(path: &str, text: &'a str) -> Result<Vec<YLine<'a>>, ParseError> {
    let mut out = Vec::new();
    // (col, key or None for a list item, item id)
    let mut stack: Vec<(usize, Option<&str>, Option<usize>)> = Vec::new();
    let mut items = 0usize;
    for (n, line) in numbered(text) {
        let (body, end) = split_eol(line);
        let err = |problem| ParseError {
            system: SYSTEM,
            file: path.to_owned(),
            line: n,
            problem,
        };
        let Some(Lexed {
            col,
            dash,
            key,
            value,
        }) = lex(body).map_err(err)?
        else {
            out.push(YLine {
                n,
                body,
                end,
                col: usize::MAX,
                path: Vec::new(),
                key: None,
                value: None,
                item: None,
            });
            continue;
        };
        while let Some(&(c, k, _)) = stack.last() {
            let keep_seq_key = dash && c == col && k.is_some();
            if c > col || (c == col && !keep_seq_key) {
                stack.pop();
            } else {
                break;
            }
        }
        if dash {
            items += 1;
            stack.push((col, None, Some(items)));
        }
        let key_text = key.map(|(s, e)| unquote(&body[s..e]));
        if let (Some(k), Some((s, _))) = (key_text, key) {
            stack.push((s, Some(k), None));
        }
        if stack.len() > MAX_DEPTH {
            return Err(err(Problem::TooMany {
                what: "levels of nesting",
                max: MAX_DEPTH,
            }));
        }
        let path: Vec<&str> = stack.iter().filter_map(|(_, k, _)| *k).collect();
        let item = stack.iter().rev().find_map(|(_, _, i)| *i);
        out.push(YLine {
            n,
            body,
            end,
            col,
            path,
            key: key_text,
            value,
            item,
        });
    }
    Ok(out)
}

/// The scalars of a value: a one-line flow list's items or the one scalar, unquoted, each with
/// its byte range in the line's body.
fn scalars(l: &YLine<'_>) -> Vec<(usize, usize)> {
    let Some((s, e)) = l.value else {
        return Vec::new();
    };
    let v = &l.body[s..e];
    if !(v.starts_with('[') && v.ends_with(']')) {
        return vec![(s, e)];
    }
    let mut out = Vec::new();
    let mut at = s + 1;
    for part in v[1..v.len() - 1].split(',') {
        let lead = part.len() - part.trim_start().len();
        let t = part.trim();
        if !t.is_empty() {
            out.push((at + lead, at + lead + t.len()));
        }
        at += part.len() + 1;
    }
    out
}

fn text_at<'a>(l: &YLine<'a>, r: (usize, usize)) -> &'a str {
    unquote(&l.body[r.0..r.1])
}

/// Whether a `routes:` item's `to:` is a default route.
fn is_default(to: &str) -> bool {
    matches!(unquote(to), "default" | "0.0.0.0/0" | "::/0")
}

/// The interfaces of the file (one per device id).
pub fn read(path: &str, text: &str) -> Result<Vec<Interface>, ParseError> {
    let lines = parse(path, text)?;
    let mut ids: BTreeMap<(&str, &str), Interface> = BTreeMap::new();
    let mut order: Vec<(&str, &str)> = Vec::new();
    let mut defaults = BTreeSet::new();
    for l in lines.iter().filter(|l| l.sub() == ["routes", "to"]) {
        if is_default(l.value()) {
            defaults.extend(l.item);
        }
    }
    for l in &lines {
        let Some((section, id)) = l.device() else {
            continue;
        };
        let err = |problem| ParseError {
            system: SYSTEM,
            file: path.to_owned(),
            line: l.n,
            problem,
        };
        let entry = ids.entry((section, id)).or_insert_with(|| {
            order.push((section, id));
            Interface {
                name: id.to_owned(),
                kind: device_kind(section).unwrap_or_default(),
                system: SYSTEM,
                file: path.to_owned(),
                ..Interface::default()
            }
        });
        let vals = || scalars(l).into_iter().map(|r| text_at(l, r));
        match l.sub() {
            ["set-name"] => entry.name = unquote(l.value()).to_owned(),
            ["match", "name"] if !l.value().contains(['*', '?', '[']) && entry.name == id => {
                entry.name = unquote(l.value()).to_owned()
            }
            ["match", "macaddress"] => {
                entry.mac = Some(parse_mac(unquote(l.value())).map_err(err)?)
            }
            ["match", "driver"] => entry.driver = Some(unquote(l.value()).to_owned()),
            ["dhcp4"] => entry.dhcp4 = is_true(l.value()),
            ["dhcp6"] => entry.dhcp6 = is_true(l.value()),
            ["addresses"] => {
                for v in vals() {
                    // netplan also allows `- 10.0.0.5/24:` with options (a key): not an entry here.
                    entry.addresses.push(parse_cidr("address", v).map_err(err)?);
                }
            }
            ["gateway4" | "gateway6"] => entry
                .gateways
                .push(parse_ip("gateway", unquote(l.value())).map_err(err)?),
            ["routes", "via"] if l.item.is_some_and(|i| defaults.contains(&i)) => entry
                .gateways
                .push(parse_ip("gateway", unquote(l.value())).map_err(err)?),
            ["nameservers", "addresses"] => {
                for v in vals() {
                    entry.dns.push(parse_ip("DNS server", v).map_err(err)?);
                }
            }
            ["interfaces"] => entry.members.extend(vals().map(str::to_owned)),
            ["link"] => entry.parent = Some(unquote(l.value()).to_owned()),
            _ => {}
        }
    }
    let mut out = Vec::new();
    for key in order {
        if let Some(i) = ids.remove(&key) {
            merge(&mut out, i).map_err(|problem| ParseError {
                system: SYSTEM,
                file: path.to_owned(),
                line: 0,
                problem,
            })?;
        }
    }
    checked(SYSTEM, path, out)
}

fn is_true(v: &str) -> bool {
    matches!(unquote(v), "true" | "yes" | "on" | "True" | "TRUE" | "y")
}

/// What one device id's block holds, for an `--ip` rule.
#[derive(Default)]
struct Block {
    /// The interface name: `set-name`, else the id.
    name: String,
    first_child_col: Option<usize>,
    has_addresses: bool,
    has_default_route: bool,
    has_routes: bool,
    has_gateway: [bool; 2],
    has_dns: bool,
    has_nameservers: bool,
}

/// One replacement in a line's body.
struct Patch {
    start: usize,
    end: usize,
    text: String,
}

/// Renames, MAC matches and re-IP for one netplan file.
pub fn transform(
    path: &str,
    text: &str,
    plan: &NicPlan,
    rules: &ReipRules,
) -> Result<Edited, FixupError> {
    let lines = parse(path, text)?;
    let eol = eol_of(text);
    let mut cx = Ctx::new(SYSTEM, path, plan, rules);
    let mut blocks: BTreeMap<(&str, &str), Block> = BTreeMap::new();
    let mut defaults = BTreeSet::new();
    for l in &lines {
        let Some(dev) = l.device() else { continue };
        let b = blocks.entry(dev).or_insert_with(|| Block {
            name: dev.1.to_owned(),
            ..Block::default()
        });
        if l.path.len() > 3 && b.first_child_col.is_none() {
            b.first_child_col = Some(l.col);
        }
        match l.sub() {
            ["set-name"] => b.name = unquote(l.value()).to_owned(),
            ["addresses"] => b.has_addresses = true,
            ["routes"] => b.has_routes = true,
            ["routes", "to"] if is_default(l.value()) => {
                b.has_default_route = true;
                defaults.extend(l.item);
            }
            ["gateway4"] => b.has_gateway[0] = true,
            ["gateway6"] => b.has_gateway[1] = true,
            ["nameservers"] => b.has_nameservers = true,
            ["nameservers", "addresses"] => b.has_dns = true,
            _ => {}
        }
    }
    let mut out = String::with_capacity(text.len());
    // Per device and family: the first address (DNS) line of the family was written.
    let mut address_done: BTreeSet<((&str, &str), bool)> = BTreeSet::new();
    let mut dns_done: BTreeSet<((&str, &str), bool)> = BTreeSet::new();
    for l in &lines {
        cx.line = l.n;
        let Some(dev) = l.device() else {
            out.push_str(l.body);
            out.push_str(l.end);
            continue;
        };
        let b = &blocks[&dev];
        let fam_rules = [cx.iface_rule(&b.name, true), cx.iface_rule(&b.name, false)];
        let rule_of = |v4: bool| fam_rules[usize::from(!v4)];
        let mut patches: Vec<Patch> = Vec::new();
        let mut after = String::new();
        let mut drop_line = false;
        let sub = l.sub();
        let scal = scalars(l);
        match sub {
            // The id line itself.
            [] => {
                if let (Some(to), Some((s, e))) = (cx.rename(dev.1), l.key_range()) {
                    patches.push(Patch {
                        start: s,
                        end: e,
                        text: to,
                    });
                }
            }
            ["set-name"] | ["link"] | ["match", "name"] | ["interfaces"] => {
                for r in scal {
                    if let Some(to) = cx.rename(text_at(l, r)) {
                        patches.push(quoted_patch(l, r, to));
                    }
                }
            }
            ["match", "macaddress"] => {
                for r in scal {
                    if let Some(to) = cx.mac(text_at(l, r)) {
                        patches.push(quoted_patch(l, r, to));
                    }
                }
            }
            ["dhcp4" | "dhcp6"] => {
                let v4 = sub == ["dhcp4"];
                if let (Some(r), true) = (rule_of(v4), is_true(l.value())) {
                    cx.record_static(&b.name, r);
                    if let Some((s, e)) = l.value {
                        patches.push(Patch {
                            start: s,
                            end: e,
                            text: "false".into(),
                        });
                    }
                }
            }
            ["addresses"] => {
                // A flow list, or one item of a block list.
                let mut kept = Vec::new();
                let flow = l.value().starts_with('[');
                for r in &scal {
                    let t = text_at(l, *r);
                    let Ok(c) = parse_cidr("address", t) else {
                        kept.push(l.body[r.0..r.1].to_owned());
                        continue;
                    };
                    let v4 = c.addr().is_ipv4();
                    match rule_of(v4) {
                        Some(rule) => {
                            if address_done.insert((dev, v4)) {
                                kept.push(rule.address.to_string());
                                cx.record_static(&b.name, rule);
                            } else if !flow {
                                drop_line = true;
                            }
                        }
                        None => match cx.cidr(c)? {
                            Some(to) => kept.push(requote(&l.body[r.0..r.1], &to.to_string())),
                            None => kept.push(l.body[r.0..r.1].to_owned()),
                        },
                    }
                }
                let same = kept.iter().map(String::as_str).eq(originals(l, &scal));
                if let (Some((s, e)), false, false) = (l.value, drop_line, same) {
                    let new = if flow {
                        rebuild_flow(&l.body[s..e], &kept)
                    } else {
                        kept.first()
                            .cloned()
                            .unwrap_or_else(|| l.body[s..e].to_owned())
                    };
                    patches.push(Patch {
                        start: s,
                        end: e,
                        text: new,
                    });
                }
            }
            ["gateway4" | "gateway6"] | ["routes", "via"] => {
                let v4 = sub == ["gateway4"]
                    || (sub != ["gateway6"] && !unquote(l.value()).contains(':'));
                let default =
                    sub != ["routes", "via"] || l.item.is_some_and(|i| defaults.contains(&i));
                let rule = rule_of(v4).filter(|r| r.gateway.is_some() && default);
                if let (Some(r), Some(range)) = (rule, l.value) {
                    let g = r.gateway.map(|g| g.to_string()).unwrap_or_default();
                    patches.push(quoted_patch(l, range, g));
                } else if let Some(range) = l.value {
                    if let Some(to) = cx.reip_text(text_at(l, range))? {
                        patches.push(quoted_patch(l, range, to));
                    }
                }
            }
            ["nameservers", "addresses"] => {
                let flow = l.value().starts_with('[');
                let mut kept = Vec::new();
                let mut extra_items: Vec<String> = Vec::new();
                for r in &scal {
                    let t = text_at(l, *r);
                    let v4 = !t.contains(':');
                    match rule_of(v4).filter(|x| !x.dns.is_empty()) {
                        Some(rule) => {
                            if dns_done.insert((dev, v4)) {
                                let mut new = rule.dns.iter().map(IpAddr::to_string);
                                if flow {
                                    kept.extend(new);
                                } else {
                                    kept.extend(new.next());
                                    extra_items.extend(new);
                                }
                            } else if !flow {
                                drop_line = true;
                            }
                        }
                        None => match cx.reip_text(t)? {
                            Some(to) => kept.push(requote(&l.body[r.0..r.1], &to)),
                            None => kept.push(l.body[r.0..r.1].to_owned()),
                        },
                    }
                }
                let same = extra_items.is_empty()
                    && kept.iter().map(String::as_str).eq(originals(l, &scal));
                if let (Some((s, e)), false, false) = (l.value, drop_line, same) {
                    if flow {
                        let new = rebuild_flow(&l.body[s..e], &kept);
                        patches.push(Patch {
                            start: s,
                            end: e,
                            text: new,
                        });
                    } else if let Some(first) = kept.first() {
                        patches.push(Patch {
                            start: s,
                            end: e,
                            text: first.clone(),
                        });
                        // More servers than the one item: more items like it.
                        for d in extra_items {
                            after.push_str(&l.body[..s]);
                            after.push_str(&d);
                            after.push_str(&l.body[e..]);
                            after.push_str(l.end);
                        }
                    }
                }
            }
            _ => {}
        }
        if drop_line {
            continue;
        }
        out.push_str(&apply_patches(l.body, patches));
        out.push_str(l.end);
        out.push_str(&after);
        if sub.is_empty() {
            insert_missing(&mut out, &mut cx, b, l.col, eol, &mut address_done, dev)?;
        }
    }
    Ok(Edited {
        text: out,
        rename: None,
        edits: cx.edits,
    })
}

impl YLine<'_> {
    fn key_range(&self) -> Option<(usize, usize)> {
        let k = self.key?;
        let s = self.body.find(k)?;
        Some((s, s + k.len()))
    }
}

/// A line's scalars as they are written (quotes kept).
fn originals<'a>(l: &'a YLine<'_>, scal: &'a [Span]) -> impl Iterator<Item = &'a str> + 'a {
    scal.iter().map(|r| &l.body[r.0..r.1])
}

/// Replaces a scalar keeping its quotes.
fn quoted_patch(l: &YLine<'_>, r: (usize, usize), to: String) -> Patch {
    Patch {
        start: r.0,
        end: r.1,
        text: requote(&l.body[r.0..r.1], &to),
    }
}

fn requote(old: &str, new: &str) -> String {
    for q in ['"', '\''] {
        if old.len() >= 2 && old.starts_with(q) && old.ends_with(q) {
            return format!("{q}{new}{q}");
        }
    }
    new.to_owned()
}

/// `[a, b]` with its items replaced, keeping the list's spacing style.
fn rebuild_flow(old: &str, items: &[String]) -> String {
    let spaced = old.starts_with("[ ");
    let sep = if old.contains(", ") || !old.contains(',') {
        ", "
    } else {
        ","
    };
    if spaced {
        format!("[ {} ]", items.join(sep))
    } else {
        format!("[{}]", items.join(sep))
    }
}

fn apply_patches(body: &str, mut patches: Vec<Patch>) -> String {
    patches.sort_by_key(|p| p.start);
    let mut out = String::with_capacity(body.len());
    let mut at = 0;
    for p in patches {
        if p.start < at || p.end > body.len() {
            continue;
        }
        out.push_str(&body[at..p.start]);
        out.push_str(&p.text);
        at = p.end;
    }
    out.push_str(&body[at..]);
    out
}

/// After a device id line: the keys an `--ip` rule needs that the block lacks.
fn insert_missing<'a>(
    out: &mut String,
    cx: &mut Ctx<'_>,
    b: &Block,
    id_col: usize,
    eol: &str,
    address_done: &mut BTreeSet<((&'a str, &'a str), bool)>,
    dev: (&'a str, &'a str),
) -> Result<(), FixupError> {
    let pad = " ".repeat(b.first_child_col.unwrap_or(id_col + 2));
    let step = " ".repeat(
        b.first_child_col
            .map_or(2, |c| c.saturating_sub(id_col))
            .max(1),
    );
    for v4 in [true, false] {
        let Some(r) = cx.iface_rule(&b.name, v4) else {
            continue;
        };
        if !b.has_addresses {
            address_done.insert((dev, v4));
            cx.record_static(&b.name, r);
            out.push_str(&format!("{pad}addresses: [{}]{eol}", r.address));
        }
        if let Some(g) = r.gateway {
            let fam = usize::from(!v4);
            if !b.has_default_route && !b.has_gateway[fam] {
                if b.has_routes {
                    let key = if v4 { "gateway4" } else { "gateway6" };
                    out.push_str(&format!("{pad}{key}: {g}{eol}"));
                } else {
                    out.push_str(&format!(
                        "{pad}routes:{eol}{pad}{step}- to: default{eol}{pad}{step}  via: {g}{eol}"
                    ));
                }
            }
        }
        if !r.dns.is_empty() && !b.has_dns {
            let list: Vec<String> = r.dns.iter().map(IpAddr::to_string).collect();
            if b.has_nameservers {
                return Err(FixupError::Transform {
                    what: format!("netplan file {}", cx.file()),
                    detail: format!(
                        "{}: `nameservers:` has no `addresses:`; add the DNS servers by hand or drop dns= from the --ip rule",
                        b.name
                    ),
                });
            }
            out.push_str(&format!(
                "{pad}nameservers:{eol}{pad}{step}addresses: [{}]{eol}",
                list.join(", ")
            ));
        }
    }
    Ok(())
}
