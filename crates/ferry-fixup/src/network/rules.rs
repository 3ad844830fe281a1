//! A job's network rules ([`NetworkRules`]): the operator's `--nic`, `--reip` and `--ip` texts
//! (`ferry_format::agent::JobNetwork`) parsed and checked together, and checked against a
//! recorded configuration and the target's NICs. The appliance runs [`NetworkRules::check`]
//! when a job is created (with the agent's inventory when it knows the agent), the rescue
//! agent again before it writes anything, and the fix-up applies the same rules to the
//! restored files.

use std::fmt;

use ferry_format::agent::JobNetwork;
use ferry_format::network::{Interface, InterfaceKind, IpCidr, NetworkConfig};

use super::mapping::{MappingError, NicPlan, NicRef, NicRule, TargetNic};
use super::reip::{IfaceRule, ReipError, ReipRules, SubnetRule};

/// Why a job's network rules are refused. Nothing is written when there is one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RulesError {
    #[error(transparent)]
    Mapping(#[from] MappingError),
    #[error(transparent)]
    Reip(#[from] ReipError),
    #[error("--ip {rule}: neither the source has an interface nor the target a NIC named {iface} (the source has: {have}); name one of them")]
    NoSuchInterface {
        rule: String,
        iface: String,
        have: String,
    },
}

/// The parsed rules of one job.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkRules {
    pub nic: Vec<NicRule>,
    pub reip: ReipRules,
}

impl NetworkRules {
    /// Parses every rule text and checks the re-IP rules together (overlaps, one rule per
    /// interface and family).
    pub fn parse(j: &JobNetwork) -> Result<NetworkRules, RulesError> {
        let nic = j
            .nic
            .iter()
            .map(|s| s.parse::<NicRule>())
            .collect::<Result<Vec<_>, _>>()?;
        let subnets = j
            .reip
            .iter()
            .map(|s| s.parse::<SubnetRule>())
            .collect::<Result<Vec<_>, _>>()?;
        let ifaces =
            j.ip.iter()
                .map(|s| s.parse::<IfaceRule>())
                .collect::<Result<Vec<_>, _>>()?;
        Ok(NetworkRules {
            nic,
            reip: ReipRules::new(subnets, ifaces)?,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.nic.is_empty() && self.reip.is_empty()
    }

    /// Maps `config`'s interfaces onto `targets` and applies the re-IP rules to every
    /// address, gateway and DNS server it records, without writing anything: refuses a
    /// `--nic` rule naming a NIC either side lacks, an `--ip` rule naming no interface, and a
    /// rule whose result is not a usable address.
    pub fn check(
        &self,
        config: &NetworkConfig,
        targets: &[TargetNic],
    ) -> Result<NicPlan, RulesError> {
        let plan = NicPlan::plan(&config.interfaces, targets, &self.nic)?;
        self.check_addresses(config, Some(&plan))?;
        Ok(plan)
    }

    /// The `--nic` rules' target sides against `targets`, for a snapshot that records no
    /// network configuration (taken from image files, or by an older agent).
    pub fn check_targets(&self, targets: &[TargetNic]) -> Result<(), RulesError> {
        let sources: Vec<Interface> = self
            .nic
            .iter()
            .map(|r| match &r.old {
                NicRef::Name(n) => Interface {
                    name: n.clone(),
                    ..Interface::default()
                },
                NicRef::Mac(m) => Interface {
                    name: m.replace(':', ""),
                    mac: Some(m.clone()),
                    ..Interface::default()
                },
            })
            .collect();
        NicPlan::plan(&sources, targets, &self.nic)?;
        Ok(())
    }

    /// The address part of [`NetworkRules::check`]. Without `plan` (the target's NICs are not
    /// known yet: a job for a MAC whose agent has not enrolled) an `--ip` rule may name any
    /// interface.
    pub fn check_addresses(
        &self,
        config: &NetworkConfig,
        plan: Option<&NicPlan>,
    ) -> Result<(), RulesError> {
        for i in &config.interfaces {
            for a in &i.addresses {
                self.reip.map_cidr(*a)?;
            }
            for ip in i.gateways.iter().chain(&i.dns) {
                self.reip.map_ip(*ip)?;
            }
        }
        let Some(plan) = plan else {
            return Ok(());
        };
        for r in self.reip.ifaces() {
            let known = config.interfaces.iter().any(|i| i.name == r.iface)
                || plan.pairs.iter().any(|p| p.new == r.iface);
            if !known {
                let mut have: Vec<&str> = config
                    .interfaces
                    .iter()
                    .filter(|i| i.kind != InterfaceKind::Loopback)
                    .map(|i| i.name.as_str())
                    .collect();
                have.dedup();
                return Err(RulesError::NoSuchInterface {
                    rule: r.to_string(),
                    iface: r.iface.clone(),
                    have: if have.is_empty() {
                        "none".into()
                    } else {
                        have.join(", ")
                    },
                });
            }
        }
        Ok(())
    }
}

/// One configured interface as it will come up: its new name, its addresses after the rules,
/// and whether the target has a NIC for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfacePreview {
    pub old: String,
    pub new: String,
    pub kind: InterfaceKind,
    pub addresses: Vec<IpCidr>,
    pub dhcp4: bool,
    pub dhcp6: bool,
    /// An Ethernet interface with a target NIC, or a bond/bridge/VLAN over one.
    pub has_nic: bool,
    pub file: String,
}

/// What the rules make of each configured interface (loopback and `.link` files, which only
/// name NICs, left out), in the recorded order; an interface that several files configure
/// appears once per file.
pub fn preview(
    config: &NetworkConfig,
    plan: &NicPlan,
    rules: &NetworkRules,
) -> Result<Vec<IfacePreview>, RulesError> {
    let mut out = Vec::new();
    for i in config
        .interfaces
        .iter()
        .filter(|i| i.kind != InterfaceKind::Loopback && !i.file.ends_with(".link"))
    {
        let new = plan.rename(&i.name).unwrap_or_else(|| i.name.clone());
        let (mut addresses, mut dhcp4, mut dhcp6) = (Vec::new(), i.dhcp4, i.dhcp6);
        for a in &i.addresses {
            addresses.push(rules.reip.map_cidr(*a)?.unwrap_or(*a));
        }
        for v4 in [true, false] {
            if let Some(r) = rules.reip.for_iface(&i.name, Some(&new), v4) {
                addresses.retain(|a| a.addr().is_ipv4() != v4);
                addresses.push(r.address);
                if v4 {
                    dhcp4 = false;
                } else {
                    dhcp6 = false;
                }
            }
        }
        out.push(IfacePreview {
            has_nic: has_nic(i, config, plan),
            old: i.name.clone(),
            new,
            kind: i.kind,
            addresses,
            dhcp4,
            dhcp6,
            file: i.file.clone(),
        });
    }
    Ok(out)
}

/// An Ethernet interface needs a mapped NIC (or, named by a VLAN/alias suffix, its base); a
/// bond, bridge or VLAN needs one of its members or its parent to have one.
fn has_nic(i: &Interface, config: &NetworkConfig, plan: &NicPlan) -> bool {
    let base = |n: &str| n.split(['.', ':']).next().unwrap_or(n).to_owned();
    let mapped = |n: &str| plan.pair(&base(n)).is_some();
    match i.kind {
        InterfaceKind::Ethernet => mapped(&i.name),
        InterfaceKind::Loopback => true,
        _ => {
            let over = |n: &str| {
                mapped(n)
                    || config.named(n).any(|m| {
                        m.kind != InterfaceKind::Ethernet && m.members.iter().any(|x| mapped(x))
                    })
            };
            i.members.iter().any(|m| over(m))
                || i.parent.as_deref().is_some_and(over)
                || mapped(&i.name)
        }
    }
}

impl fmt::Display for IfacePreview {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.old == self.new {
            write!(f, "{}", self.new)?;
        } else {
            write!(f, "{} -> {}", self.old, self.new)?;
        }
        let mut how: Vec<String> = self.addresses.iter().map(|a| a.to_string()).collect();
        if self.dhcp4 {
            how.push("DHCPv4".into());
        }
        if self.dhcp6 {
            how.push("DHCPv6".into());
        }
        if how.is_empty() {
            how.push("no address".into());
        }
        write!(f, ": {} ({})", how.join(", "), self.file)?;
        if !self.has_nic {
            write!(
                f,
                "; no NIC of that name on the target: it will not come up"
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_format::network::ConfigSystem;

    fn cfg() -> NetworkConfig {
        let eth = |name: &str, mac: &str, addr: Option<&str>| Interface {
            name: name.into(),
            kind: InterfaceKind::Ethernet,
            mac: Some(mac.into()),
            addresses: addr.map(|a| a.parse().unwrap()).into_iter().collect(),
            dhcp4: addr.is_none(),
            gateways: addr
                .map(|_| "10.1.0.1".parse().unwrap())
                .into_iter()
                .collect(),
            system: ConfigSystem::Networkd,
            file: format!("/etc/systemd/network/{name}.network"),
            ..Interface::default()
        };
        NetworkConfig {
            interfaces: vec![
                eth("ens192", "00:50:56:00:00:01", Some("10.1.0.5/24")),
                eth("ens224", "00:50:56:00:00:02", None),
                Interface {
                    name: "ens192.100".into(),
                    kind: InterfaceKind::Vlan,
                    parent: Some("ens192".into()),
                    system: ConfigSystem::Networkd,
                    file: "/etc/systemd/network/vlan.network".into(),
                    ..Interface::default()
                },
            ],
        }
    }

    fn targets(names: &[&str]) -> Vec<TargetNic> {
        names
            .iter()
            .enumerate()
            .map(|(i, n)| TargetNic {
                name: (*n).into(),
                mac: format!("52:54:00:00:00:0{i}"),
                driver: Some("virtio_net".into()),
                pci_path: None,
            })
            .collect()
    }

    fn job(nic: &[&str], reip: &[&str], ip: &[&str]) -> JobNetwork {
        let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect();
        JobNetwork {
            nic: v(nic),
            reip: v(reip),
            ip: v(ip),
        }
    }

    #[test]
    fn rules_are_checked_against_the_recorded_config_and_the_target() {
        let ok = NetworkRules::parse(&job(&["ens224=enp1s0"], &["10.1.0.0/16=10.2.0.0/16"], &[]))
            .unwrap();
        let plan = ok.check(&cfg(), &targets(&["enp1s0", "enp2s0"])).unwrap();
        assert_eq!(plan.rename("ens224").as_deref(), Some("enp1s0"));
        assert_eq!(plan.rename("ens192").as_deref(), Some("enp2s0"));
        let p = preview(&cfg(), &plan, &ok).unwrap();
        let lines: Vec<String> = p.iter().map(|x| x.to_string()).collect();
        assert_eq!(
            lines,
            [
                "ens192 -> enp2s0: 10.2.0.5/24 (/etc/systemd/network/ens192.network)",
                "ens224 -> enp1s0: DHCPv4 (/etc/systemd/network/ens224.network)",
                "ens192.100 -> enp2s0.100: no address (/etc/systemd/network/vlan.network)",
            ]
        );

        // Refusals, each before anything is written, naming what is wrong.
        let cases: [(JobNetwork, &[&str], &str); 5] = [
            (
                job(&["ens192=enp7s0"], &[], &[]),
                &["enp1s0"],
                "the target has no NIC enp7s0 (it has: enp1s0)",
            ),
            (
                job(&["eth9=enp1s0"], &[], &[]),
                &["enp1s0"],
                "the source has no interface eth9",
            ),
            (
                job(&[], &["10.1.0.5/32=10.2.0.0/32"], &[]),
                &["enp1s0"],
                "10.1.0.5/24 would become 10.2.0.0/24, the network address",
            ),
            (
                job(&[], &["10.1.0.0/24=224.0.0.0/24"], &[]),
                &["enp1s0"],
                "224.0.0.0",
            ),
            (
                job(&[], &[], &["eth7=10.9.0.5/24"]),
                &["enp1s0", "enp2s0"],
                "neither the source has an interface nor the target a NIC named eth7",
            ),
        ];
        for (j, t, want) in cases {
            let err = NetworkRules::parse(&j)
                .and_then(|r| r.check(&cfg(), &targets(t)).map(|_| ()))
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{j:?}: {err}");
        }
    }

    #[test]
    fn an_ip_rule_replaces_dhcp_and_a_missing_nic_is_said() {
        let r = NetworkRules::parse(&job(&[], &[], &["enp2s0=10.3.0.7/24,gw=10.3.0.1"])).unwrap();
        let plan = r.check(&cfg(), &targets(&["enp1s0", "enp2s0"])).unwrap();
        let p = preview(&cfg(), &plan, &r).unwrap();
        assert_eq!(p[1].new, "enp2s0");
        assert_eq!(p[1].addresses, ["10.3.0.7/24".parse().unwrap()]);
        assert!(!p[1].dhcp4);

        let one = targets(&["enp1s0"]);
        let plan = r.check(&cfg(), &one).unwrap_err();
        assert!(plan.to_string().contains("enp2s0"), "{plan}");
        let none = NetworkRules::default();
        let plan = none.check(&cfg(), &one).unwrap();
        let p = preview(&cfg(), &plan, &none).unwrap();
        assert!(p[0].has_nic && p[2].has_nic, "{p:?}");
        assert!(!p[1].has_nic);
        assert!(
            p[1].to_string().ends_with("it will not come up"),
            "{}",
            p[1]
        );
    }
}
