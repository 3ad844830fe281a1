//! IPv4 networking for the rescue image: `lo`, then every physical NIC up, a bounded wait for a
//! link, then per NIC the static address from `ip=` or DHCPv4, the default route and
//! `/etc/resolv.conf`. [`up`] reports per NIC what happened, or a [`NetError`] that tells the
//! operator what to check.
//!
//! Which NIC gets what is decided by the pure [`plan`] from the `ip=` settings and the NICs that
//! have a link (tested here); the ioctls ([`ifconfig`]) and the DHCP exchange ([`client`]) are
//! exercised by the QEMU smoke test (tests/init/). DHCP messages are [`dhcp`], pure and fuzzed.

pub mod client;
pub mod dhcp;
pub mod ifconfig;

use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::settings::{IpSpec, NetConfig, StaticIp};
pub use client::Lease;

/// Bounds of network bring-up.
#[derive(Debug, Clone, Copy)]
pub struct NetOptions {
    /// How long to wait for any NIC to report a link.
    pub carrier_timeout: Duration,
    /// Once one NIC has a link, how much longer to wait for the others.
    pub carrier_grace: Duration,
    /// Per NIC DHCP deadline (DISCOVER to ACK, with retransmissions).
    pub dhcp_timeout: Duration,
}

impl Default for NetOptions {
    fn default() -> Self {
        NetOptions {
            carrier_timeout: Duration::from_secs(10),
            carrier_grace: Duration::from_secs(2),
            dhcp_timeout: Duration::from_secs(15),
        }
    }
}

/// A physical NIC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    pub name: String,
    pub mac: [u8; 6],
    pub carrier: bool,
}

/// What to do with one NIC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Static(StaticIp),
    Dhcp,
}

/// What happened to one NIC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NicOutcome {
    Static(StaticIp),
    Dhcp(Lease),
    NoCarrier,
    /// The settings gave it nothing to do.
    Unused,
    Failed(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicReport {
    pub name: String,
    pub mac: [u8; 6],
    pub outcome: NicOutcome,
}

/// The result of [`up`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NetReport {
    pub nics: Vec<NicReport>,
    pub nameservers: Vec<Ipv4Addr>,
    /// `ip=off`: nothing but `lo` was configured, on purpose.
    pub disabled: bool,
    pub took: Duration,
}

impl NetReport {
    /// (NIC, address, prefix, gateway) of every configured NIC.
    pub fn addresses(&self) -> Vec<(&str, Ipv4Addr, u8, Option<Ipv4Addr>)> {
        self.nics
            .iter()
            .filter_map(|n| match &n.outcome {
                NicOutcome::Static(s) => Some((n.name.as_str(), s.addr, s.prefix, s.gateway)),
                NicOutcome::Dhcp(l) => Some((
                    n.name.as_str(),
                    l.addr,
                    l.prefix,
                    l.routers.first().copied(),
                )),
                _ => None,
            })
            .collect()
    }
}

impl fmt::Display for NetReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.disabled {
            return write!(f, "disabled by ip=off (only lo)");
        }
        let parts: Vec<String> = self
            .addresses()
            .iter()
            .map(|(n, a, p, gw)| match gw {
                Some(g) => format!("{n} {a}/{p} via {g}"),
                None => format!("{n} {a}/{p}"),
            })
            .collect();
        write!(f, "{}", parts.join(", "))?;
        let ns: Vec<String> = self.nameservers.iter().map(ToString::to_string).collect();
        write!(
            f,
            "; dns {}",
            if ns.is_empty() {
                "none".to_string()
            } else {
                ns.join(" ")
            }
        )?;
        write!(f, " ({:.1} s)", self.took.as_secs_f64())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("no network: no network adapter found; this image may lack its driver (`ls /sys/class/net`, `dmesg`)")]
    NoNic,
    #[error("no network: no NIC has a link ({0}); check the cable / the VM's network adapter")]
    NoCarrier(String),
    #[error("no network: ip= names {iface}, but there is no such NIC (found: {found})")]
    NoSuchNic { iface: String, found: String },
    #[error("no network: {0}")]
    NotConfigured(String),
    #[error("bring up lo: {0}")]
    Loopback(std::io::Error),
}

fn mac_text(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Decides what each NIC gets. `nics` are sorted by name; rules:
/// - no `ip=`: DHCP on every NIC with a link;
/// - `ip=off` alone: nothing;
/// - `ip=IFACE:dhcp` / a static `ip=` naming IFACE: that NIC (which must exist);
/// - `ip=dhcp`: DHCP on every NIC with a link not named elsewhere;
/// - a static `ip=` without IFACE: the first NIC with a link not named elsewhere.
///
/// NICs named explicitly are planned even without a link (the caller reports "no link").
pub fn plan(specs: &[IpSpec], nics: &[Nic]) -> Result<Vec<(String, Action)>, NetError> {
    let found = || {
        nics.iter()
            .map(|n| n.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut out: Vec<(String, Action)> = Vec::new();
    let taken = |out: &Vec<(String, Action)>, name: &str| out.iter().any(|(n, _)| n == name);
    let default_dhcp = [IpSpec::Dhcp { iface: None }];
    let specs = if specs.is_empty() {
        &default_dhcp[..]
    } else {
        specs
    };
    // Explicitly named NICs first, so "every other NIC" and "the first free NIC" exclude them.
    for spec in specs {
        let (iface, action) = match spec {
            IpSpec::Dhcp { iface: Some(i) } => (i, Action::Dhcp),
            IpSpec::Static(s @ StaticIp { iface: Some(i), .. }) => (i, Action::Static(s.clone())),
            _ => continue,
        };
        if !nics.iter().any(|n| &n.name == iface) {
            return Err(NetError::NoSuchNic {
                iface: iface.clone(),
                found: found(),
            });
        }
        if !taken(&out, iface) {
            out.push((iface.clone(), action));
        }
    }
    for spec in specs {
        match spec {
            IpSpec::Dhcp { iface: None } => {
                for n in nics.iter().filter(|n| n.carrier) {
                    if !taken(&out, &n.name) {
                        out.push((n.name.clone(), Action::Dhcp));
                    }
                }
            }
            IpSpec::Static(s) if s.iface.is_none() => {
                if let Some(n) = nics.iter().find(|n| n.carrier && !taken(&out, &n.name)) {
                    out.push((n.name.clone(), Action::Static(s.clone())));
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Brings up the network of the running system (see the module doc).
pub fn up(cfg: &NetConfig) -> Result<NetReport, NetError> {
    up_at(Path::new("/"), cfg, NetOptions::default())
}

/// [`up`] with the sysfs / `/etc` root and the bounds as parameters.
pub fn up_at(root: &Path, cfg: &NetConfig, opts: NetOptions) -> Result<NetReport, NetError> {
    let start = Instant::now();
    ifconfig::link_up("lo").map_err(NetError::Loopback)?;
    if cfg.ip.iter().all(|s| *s == IpSpec::Off) && !cfg.ip.is_empty() {
        tracing::info!("net: ip=off: configuring no NIC");
        return Ok(NetReport {
            disabled: true,
            took: start.elapsed(),
            ..Default::default()
        });
    }
    let sys_net = root.join("sys/class/net");
    let mut nics = list_nics(&sys_net);
    if nics.is_empty() {
        return Err(NetError::NoNic);
    }
    for n in &nics {
        if let Err(e) = ifconfig::link_up(&n.name) {
            tracing::warn!("net: {}: {e}", n.name);
        }
    }
    wait_for_carrier(&sys_net, &mut nics, opts);
    for n in &nics {
        tracing::info!(
            "net: {} ({}): {}",
            n.name,
            mac_text(&n.mac),
            if n.carrier { "link up" } else { "no link" }
        );
    }
    let actions = plan(&cfg.ip, &nics)?;
    if !nics.iter().any(|n| n.carrier) {
        let names: Vec<&str> = nics.iter().map(|n| n.name.as_str()).collect();
        return Err(NetError::NoCarrier(format!(
            "checked {} for {:.0} s",
            names.join(", "),
            opts.carrier_timeout.as_secs_f64()
        )));
    }
    let mut report = NetReport {
        nics: configure(&nics, &actions, opts),
        ..Default::default()
    };
    add_routes(&report);
    report.nameservers = nameservers(cfg, &report);
    write_resolv_conf(&root.join("etc/resolv.conf"), &report);
    if let Some(h) = report.nics.iter().find_map(|n| match &n.outcome {
        NicOutcome::Static(s) => s.hostname.clone(),
        _ => None,
    }) {
        crate::sys::set_hostname(&h)
            .unwrap_or_else(|e| tracing::warn!("net: set hostname {h}: {e}"));
    }
    report.took = start.elapsed();
    if report.addresses().is_empty() {
        let why: Vec<String> = report
            .nics
            .iter()
            .map(|n| match &n.outcome {
                NicOutcome::Failed(e) => format!("{}: {e}", n.name),
                NicOutcome::NoCarrier => format!("{}: no link", n.name),
                _ => format!("{}: not configured by the ip= settings", n.name),
            })
            .collect();
        return Err(NetError::NotConfigured(why.join("; ")));
    }
    Ok(report)
}

/// Physical NICs (those with a `device` link) under `sys_net`, sorted by name.
pub fn list_nics(sys_net: &Path) -> Vec<Nic> {
    let Ok(entries) = std::fs::read_dir(sys_net) else {
        return Vec::new();
    };
    let mut nics: Vec<Nic> = entries
        .flatten()
        .filter(|e| e.path().join("device").exists())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let mac =
                parse_mac(&std::fs::read_to_string(e.path().join("address")).unwrap_or_default())
                    .unwrap_or_default();
            Some(Nic {
                name,
                mac,
                carrier: false,
            })
        })
        .collect();
    nics.sort_by(|a, b| a.name.cmp(&b.name));
    nics
}

/// `52:54:00:12:34:56\n` → bytes.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let parts: Vec<u8> = s
        .trim()
        .split(':')
        .map(|p| u8::from_str_radix(p, 16))
        .collect::<Result<_, _>>()
        .ok()?;
    parts.try_into().ok()
}

fn has_carrier(sys_net: &Path, name: &str) -> bool {
    std::fs::read_to_string(sys_net.join(name).join("carrier")).is_ok_and(|s| s.trim() == "1")
}

/// Polls `carrier` until every NIC has a link, or `carrier_timeout`, or `carrier_grace` after the
/// first link.
fn wait_for_carrier(sys_net: &Path, nics: &mut [Nic], opts: NetOptions) {
    let start = Instant::now();
    let mut first_link: Option<Instant> = None;
    loop {
        for n in nics.iter_mut().filter(|n| !n.carrier) {
            n.carrier = has_carrier(sys_net, &n.name);
        }
        if nics.iter().any(|n| n.carrier) && first_link.is_none() {
            first_link = Some(Instant::now());
        }
        let all = nics.iter().all(|n| n.carrier);
        let grace_over = first_link.is_some_and(|t| t.elapsed() >= opts.carrier_grace);
        if all || grace_over || start.elapsed() >= opts.carrier_timeout {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn configure(nics: &[Nic], actions: &[(String, Action)], opts: NetOptions) -> Vec<NicReport> {
    std::thread::scope(|s| {
        let handles: Vec<_> = nics
            .iter()
            .map(|nic| {
                let action = actions
                    .iter()
                    .find(|(n, _)| *n == nic.name)
                    .map(|(_, a)| a.clone());
                s.spawn(move || NicReport {
                    name: nic.name.clone(),
                    mac: nic.mac,
                    outcome: configure_one(nic, action, opts),
                })
            })
            .collect();
        handles
            .into_iter()
            .zip(nics)
            .map(|(h, nic)| {
                h.join().unwrap_or_else(|_| NicReport {
                    name: nic.name.clone(),
                    mac: nic.mac,
                    outcome: NicOutcome::Failed("the configuration thread panicked".into()),
                })
            })
            .collect()
    })
}

fn configure_one(nic: &Nic, action: Option<Action>, opts: NetOptions) -> NicOutcome {
    let Some(action) = action else {
        return NicOutcome::Unused;
    };
    if !nic.carrier {
        return NicOutcome::NoCarrier;
    }
    match action {
        Action::Static(s) => match ifconfig::set_addr(&nic.name, s.addr, s.prefix) {
            Ok(()) => {
                tracing::info!("net: {}: static address {}/{}", nic.name, s.addr, s.prefix);
                NicOutcome::Static(s)
            }
            Err(e) => NicOutcome::Failed(e.to_string()),
        },
        Action::Dhcp => {
            let started = Instant::now();
            let lease = client::obtain(&nic.name, nic.mac, opts.dhcp_timeout).and_then(|l| {
                ifconfig::set_addr(&nic.name, l.addr, l.prefix)
                    .map(|()| l)
                    .map_err(|e| e.to_string())
            });
            match lease {
                Ok(l) => {
                    tracing::info!(
                        "net: {}: DHCP lease {} in {:.1} s",
                        nic.name,
                        l,
                        started.elapsed().as_secs_f64()
                    );
                    NicOutcome::Dhcp(l)
                }
                Err(e) => {
                    tracing::warn!("net: {}: DHCP failed: {e}", nic.name);
                    NicOutcome::Failed(format!("DHCP: {e}"))
                }
            }
        }
    }
}

/// One default route per configured NIC with a gateway; the first NIC (by name) gets the lowest
/// metric.
fn add_routes(report: &NetReport) {
    for (metric, (name, _, _, gw)) in report.addresses().into_iter().enumerate() {
        if let Some(gw) = gw {
            match ifconfig::add_default_route(name, gw, metric as u16) {
                Ok(()) => tracing::info!("net: default route via {gw} dev {name} metric {metric}"),
                Err(e) => tracing::warn!("net: {e}"),
            }
        }
    }
}

/// `nameserver=` wins; else the static `ip=` DNS fields and the DHCP servers' (in NIC order),
/// without duplicates, at most 3 (what resolvers read).
pub fn nameservers(cfg: &NetConfig, report: &NetReport) -> Vec<Ipv4Addr> {
    let mut out: Vec<Ipv4Addr> = Vec::new();
    let candidates: Vec<Ipv4Addr> = if cfg.nameservers.is_empty() {
        report
            .nics
            .iter()
            .flat_map(|n| match &n.outcome {
                NicOutcome::Static(s) => s.dns.clone(),
                NicOutcome::Dhcp(l) => l.dns.clone(),
                _ => Vec::new(),
            })
            .collect()
    } else {
        cfg.nameservers.clone()
    };
    for a in candidates {
        if !out.contains(&a) && out.len() < 3 {
            out.push(a);
        }
    }
    out
}

/// The text of `/etc/resolv.conf`.
pub fn resolv_conf(nameservers: &[Ipv4Addr], search: Option<&str>) -> String {
    let mut s = String::from("# written by ferry-init\n");
    if let Some(d) = search {
        s.push_str(&format!("search {d}\n"));
    }
    for ns in nameservers {
        s.push_str(&format!("nameserver {ns}\n"));
    }
    s
}

fn write_resolv_conf(path: &PathBuf, report: &NetReport) {
    if report.nameservers.is_empty() {
        tracing::warn!("net: no DNS server known (none from DHCP, no nameserver=): the appliance URL must use an IP address");
    }
    let search = report.nics.iter().find_map(|n| match &n.outcome {
        NicOutcome::Dhcp(l) => l.domain.clone(),
        _ => None,
    });
    if let Err(e) = std::fs::write(path, resolv_conf(&report.nameservers, search.as_deref())) {
        tracing::warn!("net: write {}: {e}", path.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::ip::parse_ip;

    fn nics(spec: &[(&str, bool)]) -> Vec<Nic> {
        spec.iter()
            .map(|(n, c)| Nic {
                name: n.to_string(),
                mac: [0; 6],
                carrier: *c,
            })
            .collect()
    }

    fn specs(v: &[&str]) -> Vec<IpSpec> {
        v.iter().map(|s| parse_ip(s).unwrap()).collect()
    }

    fn names(p: &[(String, Action)]) -> Vec<String> {
        p.iter()
            .map(|(n, a)| match a {
                Action::Dhcp => format!("{n}:dhcp"),
                Action::Static(s) => format!("{n}:{}", s.addr),
            })
            .collect()
    }

    #[test]
    fn plans() {
        let two = nics(&[("eth0", true), ("eth1", false), ("eth2", true)]);
        let cases: &[(&[&str], &[&str])] = &[
            (&[], &["eth0:dhcp", "eth2:dhcp"]),
            (&["dhcp"], &["eth0:dhcp", "eth2:dhcp"]),
            (&["off"], &[]),
            (&["eth1:dhcp"], &["eth1:dhcp"]),
            (&["10.0.0.5:::24:::none"], &["eth0:10.0.0.5"]),
            (
                &["10.0.0.5:::24::eth2:none", "dhcp"],
                &["eth2:10.0.0.5", "eth0:dhcp"],
            ),
            (
                &["dhcp", "10.0.0.5:::24:::none"],
                &["eth0:dhcp", "eth2:dhcp"],
            ),
            (
                &[
                    "10.0.0.5:::24:::none",
                    "10.0.0.6:::24:::none",
                    "10.0.0.7:::24:::none",
                ],
                &["eth0:10.0.0.5", "eth2:10.0.0.6"],
            ),
            (&["eth0:dhcp", "10.0.0.5:::24::eth0:none"], &["eth0:dhcp"]),
        ];
        for (s, want) in cases {
            assert_eq!(names(&plan(&specs(s), &two).unwrap()), *want, "{s:?}");
        }
        let err = plan(&specs(&["eth9:dhcp"]), &two).unwrap_err().to_string();
        assert_eq!(
            err,
            "no network: ip= names eth9, but there is no such NIC (found: eth0, eth1, eth2)"
        );
    }

    #[test]
    fn nameservers_prefer_settings_then_dedup_and_cap() {
        let lease = |dns: &[[u8; 4]]| Lease {
            dns: dns.iter().map(|d| Ipv4Addr::from(*d)).collect(),
            ..Lease::test_value()
        };
        let report = NetReport {
            nics: vec![
                NicReport {
                    name: "eth0".into(),
                    mac: [0; 6],
                    outcome: NicOutcome::Dhcp(lease(&[[10, 0, 2, 3], [1, 1, 1, 1]])),
                },
                NicReport {
                    name: "eth1".into(),
                    mac: [0; 6],
                    outcome: NicOutcome::Dhcp(lease(&[[1, 1, 1, 1], [8, 8, 8, 8], [9, 9, 9, 9]])),
                },
            ],
            ..Default::default()
        };
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert_eq!(
            nameservers(&NetConfig::default(), &report),
            [ip("10.0.2.3"), ip("1.1.1.1"), ip("8.8.8.8")]
        );
        let cfg = NetConfig {
            ip: vec![],
            nameservers: vec![ip("192.0.2.53")],
        };
        assert_eq!(nameservers(&cfg, &report), [ip("192.0.2.53")]);
        assert_eq!(
            resolv_conf(&[ip("10.0.2.3")], Some("example.com")),
            "# written by ferry-init\nsearch example.com\nnameserver 10.0.2.3\n"
        );
    }

    #[test]
    fn nics_from_sysfs_skip_virtual_ones() {
        let dir = tempfile::tempdir().unwrap();
        for (name, physical) in [
            ("lo", false),
            ("eth1", true),
            ("eth0", true),
            ("sit0", false),
        ] {
            let d = dir.path().join(name);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("address"), "52:54:00:12:34:56\n").unwrap();
            if physical {
                std::fs::create_dir(d.join("device")).unwrap();
            }
        }
        std::fs::write(dir.path().join("eth0/carrier"), "1\n").unwrap();
        let got = list_nics(dir.path());
        assert_eq!(
            got.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(),
            ["eth0", "eth1"]
        );
        assert_eq!(got[0].mac, [0x52, 0x54, 0, 0x12, 0x34, 0x56]);
        assert!(has_carrier(dir.path(), "eth0"));
        assert!(!has_carrier(dir.path(), "eth1"));
        assert_eq!(parse_mac("52:54:00:12:34"), None);
        let report = NetReport {
            nics: vec![NicReport {
                name: "eth0".into(),
                mac: [0; 6],
                outcome: NicOutcome::Dhcp(Lease::test_value()),
            }],
            nameservers: vec![Ipv4Addr::new(10, 0, 2, 3)],
            took: Duration::from_millis(1234),
            disabled: false,
        };
        assert_eq!(
            report.to_string(),
            "eth0 10.0.2.15/24 via 10.0.2.2; dns 10.0.2.3 (1.2 s)"
        );
    }
}
