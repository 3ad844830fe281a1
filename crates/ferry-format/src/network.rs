//! A machine's network configuration as its OS holds it ([`NetworkConfig`]): each configured
//! interface with the name the OS uses, its MAC, driver and PCI path when known, its addresses
//! (static CIDRs, DHCPv4, DHCPv6), gateways and DNS servers, and which config system and file
//! hold it. Recorded at backup time; the fix-up maps it onto the target's NICs
//! (docs/network.md). No I/O here: `ferry-fixup::network` reads the files.
//!
//! Everything in it came from the source's files (hostile input once it is in a backup), so
//! [`NetworkConfig::check`] bounds every list and text before anything uses it.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::agent::normalize_mac;

/// Most interfaces one configuration may list (every file's entries together).
pub const MAX_INTERFACES: usize = 256;
/// Most static addresses, gateways or DNS servers of one interface.
pub const MAX_ADDRESSES: usize = 64;
/// Most members (bond slaves, bridge ports) of one interface.
pub const MAX_MEMBERS: usize = 64;
/// Longest interface name, driver or PCI path. Linux names are at most 15 bytes; Windows
/// adapter names ("Ethernet 2") and GUIDs are longer.
pub const MAX_NAME: usize = 256;
/// Longest config file path.
pub const MAX_PATH: usize = 4096;

/// Which configuration system holds an interface's settings.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum ConfigSystem {
    /// Debian's /etc/network/interfaces (and interfaces.d/).
    #[default]
    Ifupdown,
    /// /etc/netplan/*.yaml (Ubuntu).
    Netplan,
    /// /etc/NetworkManager/system-connections/*.nmconnection.
    NetworkManager,
    /// /etc/systemd/network/*.network and *.link.
    Networkd,
    /// /etc/sysconfig/network-scripts/ifcfg-* (RHEL and derivatives, SUSE).
    Ifcfg,
    /// The per-adapter TCP/IP parameters in a Windows SYSTEM hive.
    WindowsRegistry,
    /// No config file names the interface: a NIC the source's kernel showed at backup time
    /// (its settings, if any, come from a glob match such as networkd's `Name=en*`, or from
    /// defaults). Recorded so that the mapping sees every physical NIC; its `file` is empty.
    Unconfigured,
}

impl fmt::Display for ConfigSystem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConfigSystem::Ifupdown => "ifupdown",
            ConfigSystem::Netplan => "netplan",
            ConfigSystem::NetworkManager => "NetworkManager",
            ConfigSystem::Networkd => "systemd-networkd",
            ConfigSystem::Ifcfg => "ifcfg",
            ConfigSystem::WindowsRegistry => "Windows registry",
            ConfigSystem::Unconfigured => "unconfigured",
        })
    }
}

/// What kind of interface a config describes. Only [`InterfaceKind::Ethernet`] is a NIC that
/// maps onto a target NIC; the others are built from NICs and follow their members' names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InterfaceKind {
    #[default]
    Ethernet,
    Bond,
    Bridge,
    Vlan,
    Loopback,
    /// Anything else the config names (wifi, tunnel, team, ...).
    Other,
}

/// An IP address with a prefix length, `10.1.2.3/24` or `fd00::5/64` (the host part kept:
/// this is an interface address, not only a network).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IpCidr {
    addr: IpAddr,
    prefix: u8,
}

/// A text that is not `ADDRESS/PREFIX`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not an address with a prefix length: {why} (e.g. 10.1.2.3/24 or fd00::5/64)")]
pub struct CidrError {
    pub text: String,
    pub why: &'static str,
}

impl IpCidr {
    /// `None` when the prefix is longer than the address (32 for IPv4, 128 for IPv6).
    pub fn new(addr: IpAddr, prefix: u8) -> Option<IpCidr> {
        (prefix <= max_prefix(addr)).then_some(IpCidr { addr, prefix })
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// The network part only (host bits zero).
    pub fn network(&self) -> IpAddr {
        with_bits(self.addr, bits(self.addr) & mask(self.addr, self.prefix))
    }

    /// Whether `ip` lies in this network (same family, same network part).
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.addr.is_ipv4()
            && bits(ip) & mask(ip, self.prefix) == bits(self.addr) & mask(self.addr, self.prefix)
    }
}

/// 32 or 128.
pub fn max_prefix(ip: IpAddr) -> u8 {
    if ip.is_ipv4() {
        32
    } else {
        128
    }
}

/// The address as an integer (IPv4 in the low 32 bits).
pub fn bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// The network mask of `prefix` in `ip`'s family, as [`bits`] spells it. A prefix longer than
/// the family's is taken as the full length.
pub fn mask(ip: IpAddr, prefix: u8) -> u128 {
    let width = u32::from(max_prefix(ip));
    let prefix = u32::from(prefix).min(width);
    let all = if width == 128 {
        u128::MAX
    } else {
        (1u128 << width) - 1
    };
    let host = all.checked_shr(prefix).unwrap_or(0);
    all & !host
}

/// An address of `like`'s family from its integer form (extra high bits dropped for IPv4).
pub fn with_bits(like: IpAddr, value: u128) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::V4((value as u32).into()),
        IpAddr::V6(_) => IpAddr::V6(value.into()),
    }
}

impl FromStr for IpCidr {
    type Err = CidrError;
    fn from_str(text: &str) -> Result<IpCidr, CidrError> {
        let err = |why| CidrError {
            text: text.chars().take(64).collect(),
            why,
        };
        let (a, p) = text.split_once('/').ok_or_else(|| err("no /PREFIX"))?;
        let addr: IpAddr = a.parse().map_err(|_| err("not an IP address"))?;
        if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err("the prefix length is not a number"));
        }
        let prefix: u8 = p
            .parse()
            .map_err(|_| err("the prefix length is too long"))?;
        IpCidr::new(addr, prefix).ok_or_else(|| err("the prefix length is too long"))
    }
}

impl fmt::Display for IpCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl TryFrom<String> for IpCidr {
    type Error = CidrError;
    fn try_from(s: String) -> Result<IpCidr, CidrError> {
        s.parse()
    }
}

impl From<IpCidr> for String {
    fn from(c: IpCidr) -> String {
        c.to_string()
    }
}

/// One interface as one config file describes it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Interface {
    /// The name the OS gives the interface (`ens192`, `eth0`, `bond0`, `eth0.100`; on
    /// Windows the adapter's connection name).
    pub name: String,
    #[serde(default)]
    pub kind: InterfaceKind,
    /// The MAC the config matches or the NIC had, lowercase `aa:bb:cc:dd:ee:ff`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// Kernel driver (`vmxnet3`, `e1000`, `virtio_net`), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    /// Where the NIC sits (`pci-0000:0b:00.0`, as /dev/disk/by-path and udev's ID_PATH spell it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pci_path: Option<String>,
    /// Static addresses with their prefix lengths.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<IpCidr>,
    #[serde(default)]
    pub dhcp4: bool,
    #[serde(default)]
    pub dhcp6: bool,
    /// Default gateways (IPv4 and IPv6).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<IpAddr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<IpAddr>,
    /// Bond slaves or bridge ports, by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<String>,
    /// A VLAN's parent interface.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    pub system: ConfigSystem,
    /// The file that holds it, as the source OS spells the path (`/etc/netplan/50-cloud-init.yaml`;
    /// on Windows the hive and key).
    pub file: String,
}

/// The network configuration found on a machine: every interface entry of every config file
/// (one interface may appear in several files, e.g. netplan and the networkd files it renders).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    pub interfaces: Vec<Interface>,
}

/// A network configuration outside the bounds, or with a field that is not what it says.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NetworkConfigError {
    #[error("a network configuration lists at most {max} {what}, this one {count}")]
    TooMany {
        what: &'static str,
        count: usize,
        max: usize,
    },
    #[error("the {what} of interface {iface:?} is {len} bytes long; at most {max}")]
    TooLong {
        iface: String,
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error("interface name {0:?} is empty or holds whitespace, '/' or control characters")]
    Name(String),
    #[error("interface {iface:?}: {detail}")]
    Mac { iface: String, detail: String },
}

impl NetworkConfig {
    /// Refuses a configuration larger than any machine's, or with a name or MAC that is not one.
    pub fn check(&self) -> Result<(), NetworkConfigError> {
        too_many("interfaces", self.interfaces.len(), MAX_INTERFACES)?;
        self.interfaces.iter().try_for_each(Interface::check)
    }

    /// The interfaces of one name, in the order the files listed them.
    pub fn named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Interface> + 'a {
        self.interfaces.iter().filter(move |i| i.name == name)
    }
}

fn too_many(what: &'static str, count: usize, max: usize) -> Result<(), NetworkConfigError> {
    if count > max {
        return Err(NetworkConfigError::TooMany { what, count, max });
    }
    Ok(())
}

/// Whether `name` can be an interface name in a config file: 1..=[`MAX_NAME`] bytes, no
/// whitespace, `/`, or control characters.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && !name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '/')
}

/// Whether `name` can name an interface in a job's rule (`--nic`, `--ip`): as
/// [`valid_name`], but inner spaces are allowed, as Windows' connection names have them
/// (`Local Area Connection 2`).
pub fn valid_rule_name(name: &str) -> bool {
    name.trim() == name && !name.is_empty() && valid_name(&name.replace(' ', "_"))
}

impl Interface {
    pub fn check(&self) -> Result<(), NetworkConfigError> {
        let iface = || self.name.chars().take(64).collect::<String>();
        if !valid_name(&self.name) && self.system != ConfigSystem::WindowsRegistry {
            return Err(NetworkConfigError::Name(iface()));
        }
        let texts = [
            ("name", Some(&self.name), MAX_NAME),
            ("driver", self.driver.as_ref(), MAX_NAME),
            ("PCI path", self.pci_path.as_ref(), MAX_NAME),
            ("parent", self.parent.as_ref(), MAX_NAME),
            ("config file", Some(&self.file), MAX_PATH),
        ];
        for (what, text, max) in texts {
            if let Some(len) = text.map(String::len).filter(|l| *l > max) {
                return Err(NetworkConfigError::TooLong {
                    iface: iface(),
                    what,
                    len,
                    max,
                });
            }
        }
        too_many("addresses", self.addresses.len(), MAX_ADDRESSES)?;
        too_many("gateways", self.gateways.len(), MAX_ADDRESSES)?;
        too_many("DNS servers", self.dns.len(), MAX_ADDRESSES)?;
        too_many("members", self.members.len(), MAX_MEMBERS)?;
        for m in &self.members {
            if !valid_name(m) {
                return Err(NetworkConfigError::Name(m.chars().take(64).collect()));
            }
        }
        if let Some(mac) = &self.mac {
            match normalize_mac(mac) {
                Ok(n) if n == *mac => {}
                Ok(_) => {
                    return Err(NetworkConfigError::Mac {
                        iface: iface(),
                        detail: format!("MAC {mac:?} is not lowercase with ':' separators"),
                    })
                }
                Err(detail) => {
                    return Err(NetworkConfigError::Mac {
                        iface: iface(),
                        detail,
                    })
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eth0() -> Interface {
        Interface {
            name: "ens192".into(),
            mac: Some("00:50:56:aa:bb:cc".into()),
            driver: Some("vmxnet3".into()),
            pci_path: Some("pci-0000:0b:00.0".into()),
            addresses: vec!["10.1.2.3/24".parse().unwrap()],
            gateways: vec!["10.1.2.1".parse().unwrap()],
            dns: vec!["10.1.0.53".parse().unwrap()],
            system: ConfigSystem::Netplan,
            file: "/etc/netplan/50-cloud-init.yaml".into(),
            ..Interface::default()
        }
    }

    #[test]
    fn cidrs_parse_and_print() {
        let table: &[(&str, bool)] = &[
            ("10.1.2.3/24", true),
            ("fd00::5/64", true),
            ("0.0.0.0/0", true),
            ("10.1.2.3/33", false),
            ("10.1.2.3", false),
            ("10.1.2.3/", false),
            ("10.1.2.3/+4", false),
            ("10.1.2.3/0024", false),
            ("fd00::5/129", false),
            ("x/24", false),
        ];
        for (text, ok) in table {
            let ok = *ok;
            let got = text.parse::<IpCidr>();
            assert_eq!(got.is_ok(), ok, "{text}: {got:?}");
            if let Ok(c) = got {
                assert_eq!(c.to_string(), *text);
            }
        }
        let c: IpCidr = "10.1.2.3/24".parse().unwrap();
        assert_eq!(c.network().to_string(), "10.1.2.0");
        assert!(c.contains("10.1.2.200".parse().unwrap()));
        assert!(!c.contains("10.1.3.1".parse().unwrap()));
        assert!(!c.contains("::1".parse().unwrap()));
        let v6: IpCidr = "fd00:1:2:3::5/64".parse().unwrap();
        assert_eq!(v6.network().to_string(), "fd00:1:2:3::");
        let all: IpCidr = "10.9.9.9/0".parse().unwrap();
        assert_eq!(all.network().to_string(), "0.0.0.0");
        assert!(all.contains("192.168.1.1".parse().unwrap()));
    }

    #[test]
    fn configs_round_trip_and_check() {
        let cfg = NetworkConfig {
            interfaces: vec![eth0()],
        };
        cfg.check().unwrap();
        let json = serde_json::to_string(&cfg).unwrap();
        assert!(json.contains(r#""addresses":["10.1.2.3/24"]"#), "{json}");
        assert!(json.contains(r#""system":"netplan""#), "{json}");
        let back: NetworkConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, cfg);
        let bad = json.replace("10.1.2.3/24", "10.1.2.3/40");
        assert!(serde_json::from_str::<NetworkConfig>(&bad).is_err());
        let unknown = json.replace(r#""dhcp4""#, r#""dhcp5":true,"dhcp4""#);
        assert!(serde_json::from_str::<NetworkConfig>(&unknown).is_err());
    }

    #[test]
    fn bounds_are_refused() {
        let mut i = eth0();
        i.mac = Some("00:50:56:AA:BB:CC".into());
        assert!(matches!(i.check(), Err(NetworkConfigError::Mac { .. })));
        let mut i = eth0();
        i.name = "eth 0".into();
        assert!(matches!(i.check(), Err(NetworkConfigError::Name(_))));
        let mut i = eth0();
        i.driver = Some("d".repeat(MAX_NAME + 1));
        assert!(matches!(
            i.check(),
            Err(NetworkConfigError::TooLong { what: "driver", .. })
        ));
        let mut i = eth0();
        i.dns = vec!["10.0.0.1".parse().unwrap(); MAX_ADDRESSES + 1];
        assert!(matches!(
            i.check(),
            Err(NetworkConfigError::TooMany {
                what: "DNS servers",
                ..
            })
        ));
        let cfg = NetworkConfig {
            interfaces: vec![eth0(); MAX_INTERFACES + 1],
        };
        assert!(cfg.check().is_err());
    }

    #[test]
    fn masks() {
        let v4: IpAddr = "1.2.3.4".parse().unwrap();
        assert_eq!(mask(v4, 0), 0);
        assert_eq!(mask(v4, 24), 0xffff_ff00);
        assert_eq!(mask(v4, 32), 0xffff_ffff);
        let v6: IpAddr = "::1".parse().unwrap();
        assert_eq!(mask(v6, 128), u128::MAX);
        assert_eq!(mask(v6, 0), 0);
    }
}
