//! The dracut `ip=` syntax, IPv4 subset, as pure parsing.
//!
//! Accepted forms (dracut.cmdline(7)):
//! - `ip=dhcp` (also `on`, `any`): DHCPv4 on every NIC with a link;
//! - `ip=off` (also `none`): configure no NIC (only `lo`);
//! - `ip=IFACE:dhcp`: DHCPv4 on that NIC only;
//! - `ip=CLIENT:[PEER]:GATEWAY:NETMASK:HOSTNAME:IFACE:none[:DNS0[:DNS1]]` (method `off` is the same):
//!   a static address. NETMASK is dotted (`255.255.255.0`) or a prefix length (`24`); GATEWAY,
//!   HOSTNAME and IFACE may be empty (no default route, no hostname, the first NIC with a link).
//!
//! Not supported (rejected with a clear message rather than silently ignored): IPv6 addresses,
//! `dhcp6`/`auto6`/`ibft`/… methods, and the MTU/MAC fields.

use std::fmt;
use std::net::Ipv4Addr;

/// What `ip=` may look like; quoted in every error.
pub const IP_SYNTAX: &str = "ip=dhcp, ip=IFACE:dhcp, ip=off, or ip=CLIENT::GATEWAY:NETMASK:HOSTNAME:IFACE:none[:DNS0[:DNS1]] \
     (NETMASK dotted like 255.255.255.0 or a prefix length like 24; GATEWAY, HOSTNAME, IFACE may be empty)";

/// One `ip=` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IpSpec {
    /// DHCPv4 on `iface`, or on every NIC with a link when `None`.
    Dhcp { iface: Option<String> },
    /// A static IPv4 address.
    Static(StaticIp),
    /// No network configuration beyond `lo`.
    Off,
}

/// A static IPv4 configuration from `ip=CLIENT::GATEWAY:NETMASK:HOSTNAME:IFACE:none`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticIp {
    pub addr: Ipv4Addr,
    /// Prefix length 0..=32.
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
    pub hostname: Option<String>,
    /// `None`: the first NIC (by name) that has a link.
    pub iface: Option<String>,
    pub dns: Vec<Ipv4Addr>,
}

impl fmt::Display for IpSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IpSpec::Dhcp { iface: None } => write!(f, "DHCP on every NIC with a link"),
            IpSpec::Dhcp { iface: Some(i) } => write!(f, "DHCP on {i}"),
            IpSpec::Off => write!(f, "no network (ip=off)"),
            IpSpec::Static(s) => {
                write!(
                    f,
                    "static {}/{} on {}",
                    s.addr,
                    s.prefix,
                    s.iface.as_deref().unwrap_or("the first NIC with a link")
                )?;
                if let Some(gw) = s.gateway {
                    write!(f, " via {gw}")?;
                }
                Ok(())
            }
        }
    }
}

impl IpSpec {
    /// The `ip=` value (without `ip=`) that [`parse_ip`] reads back as this spec: `dhcp`,
    /// `IFACE:dhcp`, `off`, or `CLIENT::GATEWAY:NETMASK:HOSTNAME:IFACE:none[:DNS0[:DNS1]]` with a
    /// dotted netmask (the form dracut documents; a peer address, which is ignored, is dropped).
    pub fn to_value(&self) -> String {
        match self {
            IpSpec::Dhcp { iface: None } => "dhcp".into(),
            IpSpec::Dhcp { iface: Some(i) } => format!("{i}:dhcp"),
            IpSpec::Off => "off".into(),
            IpSpec::Static(s) => {
                let mut v = format!(
                    "{}::{}:{}:{}:{}:none",
                    s.addr,
                    s.gateway.map(|g| g.to_string()).unwrap_or_default(),
                    prefix_netmask(s.prefix),
                    s.hostname.as_deref().unwrap_or(""),
                    s.iface.as_deref().unwrap_or("")
                );
                for d in &s.dns {
                    v.push_str(&format!(":{d}"));
                }
                v
            }
        }
    }
}

const DHCP_METHODS: [&str; 3] = ["dhcp", "on", "any"];
const OFF_METHODS: [&str; 2] = ["off", "none"];

/// Parses one `ip=` value (without the `ip=`). The error says what is wrong with it; the caller
/// adds the token, where it came from, and [`IP_SYNTAX`].
pub fn parse_ip(value: &str) -> Result<IpSpec, String> {
    if value.contains('[') {
        return Err("IPv6 addresses are not supported".into());
    }
    let f: Vec<&str> = value.split(':').collect();
    match f.len() {
        1 if DHCP_METHODS.contains(&f[0]) => Ok(IpSpec::Dhcp { iface: None }),
        1 if OFF_METHODS.contains(&f[0]) => Ok(IpSpec::Off),
        1 => Err(format!("unknown method {:?}", f[0])),
        2 => {
            let iface = parse_iface(f[0])?.ok_or("the interface name is empty")?;
            if DHCP_METHODS.contains(&f[1]) {
                Ok(IpSpec::Dhcp { iface: Some(iface) })
            } else {
                Err(format!(
                    "unsupported method {:?} for {iface} (only dhcp)",
                    f[1]
                ))
            }
        }
        3 | 4 => Err("the MTU and MAC fields are not supported".into()),
        7..=9 => parse_static(&f).map(IpSpec::Static),
        n => Err(format!("it has {n} colon-separated fields")),
    }
}

fn parse_static(f: &[&str]) -> Result<StaticIp, String> {
    let method = f[6];
    if !OFF_METHODS.contains(&method) {
        return Err(format!(
            "method {method:?} with a client address: use none for a static address, or ip=dhcp"
        ));
    }
    let addr = parse_addr("client address", f[0])?.ok_or("the client address is empty")?;
    if !f[1].is_empty() {
        parse_addr("peer address", f[1])?;
    }
    let gateway = parse_addr("gateway", f[2])?;
    let prefix = parse_netmask(f[3])?;
    let hostname = match f[4] {
        "" => None,
        h if valid_hostname(h) => Some(h.to_string()),
        h => return Err(format!("hostname {h:?} is not a valid host name")),
    };
    let iface = parse_iface(f[5])?;
    let mut dns = Vec::new();
    for d in &f[7..] {
        dns.extend(parse_addr("DNS server", d)?);
    }
    Ok(StaticIp {
        addr,
        prefix,
        gateway,
        hostname,
        iface,
        dns,
    })
}

fn parse_addr(what: &str, s: &str) -> Result<Option<Ipv4Addr>, String> {
    if s.is_empty() {
        return Ok(None);
    }
    s.parse()
        .map(Some)
        .map_err(|_| format!("{what} {s:?} is not an IPv4 address"))
}

/// `255.255.255.0` or `24` → 24.
pub fn parse_netmask(s: &str) -> Result<u8, String> {
    if s.is_empty() {
        return Err("the netmask is empty".into());
    }
    if let Ok(p) = s.parse::<u8>() {
        return if p <= 32 {
            Ok(p)
        } else {
            Err(format!("prefix length {p} is larger than 32"))
        };
    }
    let m: Ipv4Addr = s
        .parse()
        .map_err(|_| format!("netmask {s:?} is neither dotted nor a prefix length"))?;
    netmask_prefix(m).ok_or_else(|| format!("netmask {s} is not contiguous"))
}

/// The prefix length of a contiguous netmask.
pub fn netmask_prefix(m: Ipv4Addr) -> Option<u8> {
    let bits = u32::from(m);
    let ones = bits.leading_ones();
    (bits.checked_shl(ones).unwrap_or(0) == 0).then_some(ones as u8)
}

/// The netmask of a prefix length (0..=32).
pub fn prefix_netmask(prefix: u8) -> Ipv4Addr {
    Ipv4Addr::from(
        u32::MAX
            .checked_shl(32 - u32::from(prefix.min(32)))
            .unwrap_or(0),
    )
}

fn parse_iface(s: &str) -> Result<Option<String>, String> {
    if s.is_empty() {
        return Ok(None);
    }
    // Linux: at most 15 bytes, no '/', no whitespace, not "." or "..".
    let ok = s.len() <= 15
        && s != "."
        && s != ".."
        && s.bytes().all(|b| b.is_ascii_graphic() && b != b'/');
    if ok {
        Ok(Some(s.to_string()))
    } else {
        Err(format!("{s:?} is not a valid interface name"))
    }
}

fn valid_hostname(h: &str) -> bool {
    h.len() <= 64
        && h.split('.')
            .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn what_parses_writes_back_to_itself(
            fields in proptest::collection::vec(
                prop_oneof![
                    Just(String::new()),
                    "(dhcp|on|any|off|none|eth0|rescue|24|0|33)",
                    "[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}",
                    "[ -~]{0,8}",
                ],
                1..10,
            )
        ) {
            let value = fields.join(":");
            if let Ok(spec) = parse_ip(&value) {
                prop_assert_eq!(parse_ip(&spec.to_value()), Ok(spec), "{}", value);
            }
        }
    }

    fn st(
        addr: &str,
        prefix: u8,
        gw: Option<&str>,
        host: Option<&str>,
        iface: Option<&str>,
        dns: &[&str],
    ) -> IpSpec {
        IpSpec::Static(StaticIp {
            addr: addr.parse().unwrap(),
            prefix,
            gateway: gw.map(|g| g.parse().unwrap()),
            hostname: host.map(str::to_string),
            iface: iface.map(str::to_string),
            dns: dns.iter().map(|d| d.parse().unwrap()).collect(),
        })
    }

    #[test]
    fn accepted_forms() {
        let cases: &[(&str, IpSpec)] = &[
            ("dhcp", IpSpec::Dhcp { iface: None }),
            ("on", IpSpec::Dhcp { iface: None }),
            ("any", IpSpec::Dhcp { iface: None }),
            ("off", IpSpec::Off),
            ("none", IpSpec::Off),
            (
                "eth0:dhcp",
                IpSpec::Dhcp {
                    iface: Some("eth0".into()),
                },
            ),
            (
                "ens3:on",
                IpSpec::Dhcp {
                    iface: Some("ens3".into()),
                },
            ),
            (
                "10.0.2.15::10.0.2.2:255.255.255.0::eth0:none",
                st("10.0.2.15", 24, Some("10.0.2.2"), None, Some("eth0"), &[]),
            ),
            (
                "10.0.2.15::10.0.2.2:24:rescue:eth0:off",
                st(
                    "10.0.2.15",
                    24,
                    Some("10.0.2.2"),
                    Some("rescue"),
                    Some("eth0"),
                    &[],
                ),
            ),
            (
                "192.0.2.10:::255.255.0.0:::none",
                st("192.0.2.10", 16, None, None, None, &[]),
            ),
            (
                "192.0.2.10::192.0.2.1:32:h.example.com:ens3:none:192.0.2.53",
                st(
                    "192.0.2.10",
                    32,
                    Some("192.0.2.1"),
                    Some("h.example.com"),
                    Some("ens3"),
                    &["192.0.2.53"],
                ),
            ),
            (
                "192.0.2.10:192.0.2.99:192.0.2.1:0::eth1:none:192.0.2.53:192.0.2.54",
                st(
                    "192.0.2.10",
                    0,
                    Some("192.0.2.1"),
                    None,
                    Some("eth1"),
                    &["192.0.2.53", "192.0.2.54"],
                ),
            ),
            (
                "192.0.2.10::192.0.2.1:24::eth0:none::192.0.2.54",
                st(
                    "192.0.2.10",
                    24,
                    Some("192.0.2.1"),
                    None,
                    Some("eth0"),
                    &["192.0.2.54"],
                ),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(
                &parse_ip(input).unwrap_or_else(|e| panic!("{input}: {e}")),
                want,
                "{input}"
            );
        }
    }

    #[test]
    fn rejected_forms_say_why() {
        let cases: &[(&str, &str)] = &[
            ("", "unknown method \"\""),
            ("bootp", "unknown method \"bootp\""),
            ("dhcp6", "unknown method \"dhcp6\""),
            (":dhcp", "interface name is empty"),
            ("eth0:none", "unsupported method \"none\" for eth0"),
            ("eth0:dhcp:1500", "MTU and MAC"),
            ("a:b:c:d:e", "5 colon-separated fields"),
            (
                "10.0.2.15::10.0.2.2:255.255.0.255::eth0:none",
                "netmask 255.255.0.255 is not contiguous",
            ),
            ("10.0.2.15::10.0.2.2:33::eth0:none", "prefix length 33"),
            ("10.0.2.15::10.0.2.2:::eth0:none", "netmask is empty"),
            (
                "10.0.2.15::10.0.2.2:mask::eth0:none",
                "neither dotted nor a prefix length",
            ),
            (
                "10.0.2.300::10.0.2.2:24::eth0:none",
                "client address \"10.0.2.300\"",
            ),
            ("::10.0.2.2:24::eth0:none", "client address is empty"),
            ("10.0.2.15::gw:24::eth0:none", "gateway \"gw\""),
            (
                "10.0.2.15::10.0.2.2:24::eth0:dhcp",
                "use none for a static address",
            ),
            (
                "10.0.2.15::10.0.2.2:24:bad_host::none",
                "hostname \"bad_host\"",
            ),
            (
                "10.0.2.15::10.0.2.2:24::a/b:none",
                "\"a/b\" is not a valid interface name",
            ),
            (
                "10.0.2.15::10.0.2.2:24::eth0:none:dns",
                "DNS server \"dns\"",
            ),
            ("[2001:db8::10]::[2001:db8::1]:64::eth0:none", "IPv6"),
        ];
        for (input, want) in cases {
            let err = parse_ip(input).expect_err(input);
            assert!(err.contains(want), "{input}: {err:?} lacks {want:?}");
        }
    }

    #[test]
    fn values_round_trip() {
        for v in [
            "dhcp",
            "eth0:dhcp",
            "off",
            "10.0.2.15::10.0.2.2:255.255.255.0:rescue:eth0:none:10.0.2.3",
            "192.0.2.10:::255.255.0.0:::none",
            "192.0.2.10::192.0.2.1:0.0.0.0::eth1:none:192.0.2.53:192.0.2.54",
        ] {
            let spec = parse_ip(v).unwrap();
            assert_eq!(spec.to_value(), v);
            assert_eq!(parse_ip(&spec.to_value()).unwrap(), spec);
        }
        // Equivalent spellings read back as the same spec.
        let spec = parse_ip("192.0.2.10:192.0.2.99:192.0.2.1:24::eth1:off").unwrap();
        assert_eq!(
            spec.to_value(),
            "192.0.2.10::192.0.2.1:255.255.255.0::eth1:none"
        );
        assert_eq!(parse_ip("on").unwrap().to_value(), "dhcp");
    }

    #[test]
    fn netmasks_and_prefixes_round_trip() {
        for p in 0..=32u8 {
            assert_eq!(netmask_prefix(prefix_netmask(p)), Some(p));
        }
        assert_eq!(prefix_netmask(24), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(prefix_netmask(0), Ipv4Addr::UNSPECIFIED);
        assert_eq!(netmask_prefix(Ipv4Addr::new(255, 0, 255, 0)), None);
    }
}
