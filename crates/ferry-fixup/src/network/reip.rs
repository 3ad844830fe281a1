//! Re-IP rules ([`ReipRules`]): subnet rules `10.1.0.0/16=10.2.0.0/16` move every static
//! address, gateway and DNS server inside the old subnet into the new one, keeping the host
//! part; interface rules `IFACE=ADDR/PREFIX,gw=GW,dns=DNS,dns=DNS` give one interface a new
//! static address (and gateway and DNS servers), replacing DHCP if it had it. DHCP interfaces
//! are otherwise left on DHCP. Every result must be a usable unicast host address.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ferry_format::network::{bits, mask, max_prefix, valid_rule_name, with_bits, IpCidr};

/// Most subnet and interface rules a job may carry, the longest rule text, and the most DNS
/// servers one interface rule may name.
pub const MAX_REIP_RULES: usize = 64;
pub const MAX_REIP_TEXT: usize = 512;
pub const MAX_RULE_DNS: usize = 8;

/// Why a re-IP rule is refused, or why applying one would give a bad address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReipError {
    #[error("parse re-IP rule {text:?}: {why}")]
    BadRule { text: String, why: String },
    #[error("re-IP rule {rule}: {from} and {to} differ in {what}; write the same on both sides")]
    Mismatch {
        rule: String,
        from: String,
        to: String,
        what: &'static str,
    },
    #[error(
        "re-IP rule {rule}: {cidr} has host bits set; write the network address {network}/{prefix}"
    )]
    NotNetwork {
        rule: String,
        cidr: String,
        network: IpAddr,
        prefix: u8,
    },
    #[error("re-IP rules {first} and {second} overlap; keep one rule per old subnet")]
    Overlap { first: String, second: String },
    #[error("re-IP rules: interface {iface} has two {family} rules; keep one")]
    TwiceForInterface { iface: String, family: &'static str },
    #[error("re-IP rules: at most {max} {what}, got {count}")]
    TooMany {
        what: &'static str,
        count: usize,
        max: usize,
    },
    #[error("re-IP {rule}: {from} would become {to}, {why}; fix the rule or add --ip for this interface")]
    Invalid {
        rule: String,
        from: String,
        to: String,
        why: &'static str,
    },
}

fn bad(text: &str, why: impl Into<String>) -> ReipError {
    ReipError::BadRule {
        text: text.chars().take(80).collect(),
        why: why.into(),
    }
}

/// Why `ip` (in a subnet of `prefix` bits) cannot be a host's address, if it cannot.
pub fn host_problem(ip: IpAddr, prefix: u8) -> Option<&'static str> {
    if ip.is_unspecified() {
        return Some("the unspecified address");
    }
    if ip.is_loopback() {
        return Some("a loopback address");
    }
    if ip.is_multicast() {
        return Some("a multicast address");
    }
    if let IpAddr::V4(a) = ip {
        if a.is_broadcast() {
            return Some("the broadcast address");
        }
    }
    let host = bits(ip) & !mask(ip, prefix);
    let host_mask = !mask(ip, prefix) & mask(ip, max_prefix(ip));
    let tiny = max_prefix(ip) - prefix.min(max_prefix(ip)) <= 1;
    if !tiny && host == 0 {
        return Some("the network address of its subnet");
    }
    if !tiny && ip.is_ipv4() && host == host_mask {
        return Some("the broadcast address of its subnet");
    }
    None
}

/// `FROM=TO`: addresses in FROM move to TO keeping their host part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubnetRule {
    pub from: IpCidr,
    pub to: IpCidr,
}

impl fmt::Display for SubnetRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.from, self.to)
    }
}

impl FromStr for SubnetRule {
    type Err = ReipError;
    fn from_str(s: &str) -> Result<SubnetRule, ReipError> {
        if s.len() > MAX_REIP_TEXT {
            return Err(bad(s, "a rule is at most 512 bytes"));
        }
        let (a, b) = s.split_once('=').ok_or_else(|| {
            bad(
                s,
                "write OLD/PREFIX=NEW/PREFIX, e.g. 10.1.0.0/16=10.2.0.0/16",
            )
        })?;
        let from: IpCidr = a.parse().map_err(|e| bad(s, format!("{e}")))?;
        let to: IpCidr = b.parse().map_err(|e| bad(s, format!("{e}")))?;
        let rule = SubnetRule { from, to };
        let mismatch = |what| ReipError::Mismatch {
            rule: rule.to_string(),
            from: from.to_string(),
            to: to.to_string(),
            what,
        };
        if from.addr().is_ipv4() != to.addr().is_ipv4() {
            return Err(mismatch("address family"));
        }
        if from.prefix() != to.prefix() {
            return Err(mismatch("prefix length"));
        }
        for c in [from, to] {
            if c.network() != c.addr() {
                return Err(ReipError::NotNetwork {
                    rule: rule.to_string(),
                    cidr: c.to_string(),
                    network: c.network(),
                    prefix: c.prefix(),
                });
            }
        }
        let to_ip = to.addr();
        if to_ip.is_loopback()
            || to_ip.is_multicast()
            || (to.prefix() > 0 && to_ip.is_unspecified())
        {
            return Err(bad(s, format!("{to} is not a unicast network")));
        }
        Ok(rule)
    }
}

impl SubnetRule {
    fn apply(&self, ip: IpAddr) -> Option<IpAddr> {
        self.from.contains(ip).then(|| {
            let m = mask(ip, self.from.prefix());
            with_bits(ip, (bits(self.to.addr()) & m) | (bits(ip) & !m))
        })
    }
}

/// `IFACE=ADDR/PREFIX[,gw=GW][,dns=DNS]...`: one interface's new static address. IFACE is the
/// name the source OS gave the interface, or its new name on the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfaceRule {
    pub iface: String,
    pub address: IpCidr,
    pub gateway: Option<IpAddr>,
    pub dns: Vec<IpAddr>,
}

impl fmt::Display for IfaceRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.iface, self.address)?;
        if let Some(g) = self.gateway {
            write!(f, ",gw={g}")?;
        }
        self.dns.iter().try_for_each(|d| write!(f, ",dns={d}"))
    }
}

impl FromStr for IfaceRule {
    type Err = ReipError;
    fn from_str(s: &str) -> Result<IfaceRule, ReipError> {
        if s.len() > MAX_REIP_TEXT {
            return Err(bad(s, "a rule is at most 512 bytes"));
        }
        let (iface, rest) = s.split_once('=').ok_or_else(|| {
            bad(
                s,
                "write IFACE=ADDR/PREFIX,gw=GW,dns=DNS, e.g. ens192=10.2.0.5/24,gw=10.2.0.1",
            )
        })?;
        if !valid_rule_name(iface) || iface.len() > 64 || iface.contains(',') {
            return Err(bad(s, format!("{iface:?} is not an interface name")));
        }
        let mut parts = rest.split(',');
        let addr = parts.next().unwrap_or_default();
        let address: IpCidr = addr.parse().map_err(|e| bad(s, format!("{e}")))?;
        if let Some(why) = host_problem(address.addr(), address.prefix()) {
            return Err(bad(s, format!("{address} is {why}")));
        }
        let mut rule = IfaceRule {
            iface: iface.to_owned(),
            address,
            gateway: None,
            dns: Vec::new(),
        };
        let same_family = |ip: IpAddr| ip.is_ipv4() == address.addr().is_ipv4();
        for part in parts {
            let (key, value) = part.split_once('=').unwrap_or((part, ""));
            if key != "gw" && key != "dns" {
                return Err(bad(s, format!("{part:?}: expected gw=GW or dns=DNS")));
            }
            let ip: IpAddr = value
                .parse()
                .map_err(|_| bad(s, format!("{part:?}: {value:?} is not an IP address")))?;
            match key {
                "gw" if rule.gateway.is_none() => {
                    if !same_family(ip) || !address.contains(ip) {
                        return Err(bad(s, format!("gateway {ip} is not in {address}'s subnet")));
                    }
                    if let Some(why) = host_problem(ip, address.prefix()) {
                        return Err(bad(s, format!("gateway {ip} is {why}")));
                    }
                    rule.gateway = Some(ip);
                }
                "gw" => return Err(bad(s, "give gw= once")),
                "dns" if rule.dns.len() < MAX_RULE_DNS => {
                    if !same_family(ip) {
                        return Err(bad(
                            s,
                            format!("DNS server {ip} is not of {address}'s family"),
                        ));
                    }
                    rule.dns.push(ip);
                }
                "dns" => return Err(bad(s, format!("at most {MAX_RULE_DNS} dns= servers"))),
                _ => return Err(bad(s, format!("{part:?}: expected gw=GW or dns=DNS"))),
            }
        }
        Ok(rule)
    }
}

/// Every re-IP rule of a job, checked together.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReipRules {
    subnets: Vec<SubnetRule>,
    ifaces: Vec<IfaceRule>,
}

impl ReipRules {
    /// Refuses overlapping subnet rules and two rules of one family for one interface.
    pub fn new(subnets: Vec<SubnetRule>, ifaces: Vec<IfaceRule>) -> Result<ReipRules, ReipError> {
        for (what, count) in [
            ("--reip rules", subnets.len()),
            ("--ip rules", ifaces.len()),
        ] {
            if count > MAX_REIP_RULES {
                return Err(ReipError::TooMany {
                    what,
                    count,
                    max: MAX_REIP_RULES,
                });
            }
        }
        for (i, a) in subnets.iter().enumerate() {
            for b in &subnets[..i] {
                if a.from.contains(b.from.addr()) || b.from.contains(a.from.addr()) {
                    return Err(ReipError::Overlap {
                        first: b.to_string(),
                        second: a.to_string(),
                    });
                }
            }
        }
        for (i, a) in ifaces.iter().enumerate() {
            let v4 = a.address.addr().is_ipv4();
            if ifaces[..i]
                .iter()
                .any(|b| b.iface == a.iface && b.address.addr().is_ipv4() == v4)
            {
                return Err(ReipError::TwiceForInterface {
                    iface: a.iface.clone(),
                    family: if v4 { "IPv4" } else { "IPv6" },
                });
            }
        }
        Ok(ReipRules { subnets, ifaces })
    }

    pub fn is_empty(&self) -> bool {
        self.subnets.is_empty() && self.ifaces.is_empty()
    }

    pub fn subnets(&self) -> &[SubnetRule] {
        &self.subnets
    }

    pub fn ifaces(&self) -> &[IfaceRule] {
        &self.ifaces
    }

    /// The rule that covers `ip` and where it moves it.
    fn moved(&self, ip: IpAddr) -> Option<(&SubnetRule, IpAddr)> {
        let rule = self.subnets.iter().find(|r| r.from.contains(ip))?;
        Some((rule, rule.apply(ip)?))
    }

    /// A gateway or DNS server moved by the subnet rules (checked against the rule's new
    /// subnet); `None` when no rule covers it.
    pub fn map_ip(&self, ip: IpAddr) -> Result<Option<IpAddr>, ReipError> {
        let Some((rule, to)) = self.moved(ip) else {
            return Ok(None);
        };
        if let Some(why) = host_problem(to, rule.to.prefix()) {
            return Err(ReipError::Invalid {
                rule: rule.to_string(),
                from: ip.to_string(),
                to: to.to_string(),
                why,
            });
        }
        Ok(Some(to))
    }

    /// An interface address moved by the subnet rules, its own prefix kept and checked
    /// against its own subnet (the one the interface lives in).
    pub fn map_cidr(&self, c: IpCidr) -> Result<Option<IpCidr>, ReipError> {
        let Some((rule, to)) = self.moved(c.addr()) else {
            return Ok(None);
        };
        if let Some(why) = host_problem(to, c.prefix()) {
            return Err(ReipError::Invalid {
                rule: rule.to_string(),
                from: c.to_string(),
                to: format!("{to}/{}", c.prefix()),
                why,
            });
        }
        Ok(IpCidr::new(to, c.prefix()))
    }

    /// The interface rule of the family `v4` for an interface named `old` on the source or
    /// `new` on the target.
    pub fn for_iface(&self, old: &str, new: Option<&str>, v4: bool) -> Option<&IfaceRule> {
        self.ifaces.iter().find(|r| {
            (r.iface == old || Some(r.iface.as_str()) == new) && r.address.addr().is_ipv4() == v4
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(subnets: &[&str], ifaces: &[&str]) -> Result<ReipRules, ReipError> {
        ReipRules::new(
            subnets
                .iter()
                .map(|s| s.parse())
                .collect::<Result<_, _>>()?,
            ifaces.iter().map(|s| s.parse()).collect::<Result<_, _>>()?,
        )
    }

    #[test]
    fn subnet_rules_keep_the_host_part() {
        let r = rules(&["10.1.0.0/16=10.2.0.0/16", "fd00:1::/64=fd00:2::/64"], &[]).unwrap();
        let table = [
            ("10.1.2.3/24", Some("10.2.2.3/24")),
            ("10.1.255.254/16", Some("10.2.255.254/16")),
            ("10.3.2.3/24", None),
            ("fd00:1::5/64", Some("fd00:2::5/64")),
            ("fd00:3::5/64", None),
        ];
        for (from, to) in table {
            let got = r.map_cidr(from.parse().unwrap()).unwrap();
            assert_eq!(got.map(|c| c.to_string()).as_deref(), to, "{from}");
        }
        assert_eq!(
            r.map_ip("10.1.0.53".parse().unwrap()).unwrap(),
            Some("10.2.0.53".parse().unwrap())
        );
    }

    #[test]
    fn results_that_are_no_host_address_are_refused() {
        // The address's own subnet is wider than the rule's: its host part changes.
        let r = rules(&["10.1.0.0/16=10.0.0.0/16"], &[]).unwrap();
        let err = r.map_cidr("10.1.0.0/8".parse().unwrap()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "re-IP 10.1.0.0/16=10.0.0.0/16: 10.1.0.0/8 would become 10.0.0.0/8, the network \
             address of its subnet; fix the rule or add --ip for this interface"
        );
        // Within the rule's own subnet.
        let r = rules(&["192.168.1.0/24=192.168.2.0/24"], &[]).unwrap();
        assert!(r.map_ip("192.168.1.255".parse().unwrap()).is_err());
        assert!(r.map_ip("192.168.1.0".parse().unwrap()).is_err());
        assert!(r
            .map_ip("192.168.1.254".parse().unwrap())
            .unwrap()
            .is_some());
    }

    #[test]
    fn bad_rules_are_refused() {
        let table: &[(&[&str], &[&str], &str)] = &[
            (&["10.1.0.0/16=10.2.0.0/24"], &[], "differ in prefix length"),
            (&["10.1.0.0/16=fd00::/16"], &[], "differ in address family"),
            (
                &["10.1.2.0/16=10.2.0.0/16"],
                &[],
                "write the network address 10.1.0.0/16",
            ),
            (
                &["10.1.0.0/16=224.1.0.0/16"],
                &[],
                "is not a unicast network",
            ),
            (
                &["10.1.0.0/16=127.0.0.0/16"],
                &[],
                "is not a unicast network",
            ),
            (&["10.1.0.0/16"], &[], "write OLD/PREFIX=NEW/PREFIX"),
            (&["10.1.0.0/16=10.2.0.0"], &[], "no /PREFIX"),
            (
                &["10.1.0.0/16=10.2.0.0/16", "10.1.2.0/24=10.3.2.0/24"],
                &[],
                "overlap",
            ),
            (
                &[],
                &["eth0=10.2.0.0/24"],
                "the network address of its subnet",
            ),
            (
                &[],
                &["eth0=10.2.0.255/24"],
                "the broadcast address of its subnet",
            ),
            (&[], &["eth0=224.0.0.5/24"], "multicast"),
            (
                &[],
                &["eth0=10.2.0.5/24,gw=10.3.0.1"],
                "not in 10.2.0.5/24's subnet",
            ),
            (
                &[],
                &["eth0=10.2.0.5/24,gw=10.2.0.1,gw=10.2.0.2"],
                "give gw= once",
            ),
            (
                &[],
                &["eth0=10.2.0.5/24,dns=fd00::1"],
                "not of 10.2.0.5/24's family",
            ),
            (
                &[],
                &["eth0=10.2.0.5/24,mtu=1500"],
                "expected gw=GW or dns=DNS",
            ),
            (&[], &["eth/0=10.2.0.5/24"], "not an interface name"),
            (&[], &["eth0=10.2.0.5"], "no /PREFIX"),
            (
                &[],
                &["eth0=10.2.0.5/24", "eth0=10.2.0.6/24"],
                "interface eth0 has two IPv4 rules",
            ),
        ];
        for (s, i, want) in table {
            let err = rules(s, i).unwrap_err();
            assert!(err.to_string().contains(want), "{s:?} {i:?}: {err}");
        }
        let long = format!("eth0=10.2.0.5/24{}", ",dns=10.0.0.1".repeat(40));
        assert!(long.parse::<IfaceRule>().is_err());
    }

    #[test]
    fn interface_rules_parse_and_print() {
        let r: IfaceRule = "ens192=10.2.0.5/24,gw=10.2.0.1,dns=10.2.0.53,dns=1.1.1.1"
            .parse()
            .unwrap();
        assert_eq!(r.gateway, Some("10.2.0.1".parse().unwrap()));
        assert_eq!(r.dns.len(), 2);
        assert_eq!(
            r.to_string(),
            "ens192=10.2.0.5/24,gw=10.2.0.1,dns=10.2.0.53,dns=1.1.1.1"
        );
        let rs = ReipRules::new(vec![], vec![r]).unwrap();
        assert!(rs.for_iface("ens192", None, true).is_some());
        assert!(rs.for_iface("eth0", Some("ens192"), true).is_some());
        assert!(rs.for_iface("ens192", None, false).is_none());
        assert!(rs.for_iface("eth0", Some("enp1s0"), true).is_none());
    }
}
