//! Which target NIC each of the source's interfaces becomes ([`NicPlan`]): the source's
//! Ethernet interfaces in order onto the target's NICs in order, unless an operator rule
//! (`--nic OLD=NEW`, each side a name or a MAC) says otherwise. Pure: the source's interfaces
//! come from the backup's [`NetworkConfig`], the target's NICs from the rescue agent's inventory.

use std::fmt;
use std::str::FromStr;

use ferry_format::agent::{normalize_mac, Nic};
use ferry_format::network::{valid_rule_name, Interface, InterfaceKind, MAX_INTERFACES};

/// Most `--nic` rules a job may carry, and the longest rule text.
pub const MAX_NIC_RULES: usize = 64;
pub const MAX_RULE_TEXT: usize = 300;

/// A NIC of the target machine, as the rescue agent's inventory reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetNic {
    pub name: String,
    /// Lowercase `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
    pub driver: Option<String>,
    pub pci_path: Option<String>,
}

impl From<&Nic> for TargetNic {
    fn from(n: &Nic) -> TargetNic {
        TargetNic {
            // The name the restored OS will give it, not the rescue kernel's `eth0`.
            name: n.predictable.clone().unwrap_or_else(|| n.name.clone()),
            mac: normalize_mac(&n.mac).unwrap_or_else(|_| n.mac.clone()),
            driver: n.driver.clone(),
            pci_path: n.pci_path.clone(),
        }
    }
}

/// One side of a `--nic` rule: an interface name or a MAC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NicRef {
    Name(String),
    Mac(String),
}

impl fmt::Display for NicRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NicRef::Name(n) | NicRef::Mac(n) => f.write_str(n),
        }
    }
}

impl FromStr for NicRef {
    type Err = MappingError;
    fn from_str(s: &str) -> Result<NicRef, MappingError> {
        if let Ok(mac) = normalize_mac(s) {
            return Ok(NicRef::Mac(mac));
        }
        if valid_rule_name(s) && s.len() <= 64 && !s.contains('=') {
            return Ok(NicRef::Name(s.to_owned()));
        }
        Err(MappingError::BadRule {
            text: short(s),
            why: "each side is an interface name (no spaces, '/' or '=') or a MAC address",
        })
    }
}

/// `--nic OLD=NEW`: the source interface OLD (name or MAC) becomes the target NIC NEW.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicRule {
    pub old: NicRef,
    pub new: NicRef,
}

impl fmt::Display for NicRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.old, self.new)
    }
}

impl FromStr for NicRule {
    type Err = MappingError;
    fn from_str(s: &str) -> Result<NicRule, MappingError> {
        if s.len() > MAX_RULE_TEXT {
            return Err(MappingError::BadRule {
                text: short(s),
                why: "a rule is at most 300 bytes",
            });
        }
        let (old, new) = s.split_once('=').ok_or_else(|| MappingError::BadRule {
            text: short(s),
            why: "write OLD=NEW, e.g. ens192=enp1s0 or 00:50:56:aa:bb:cc=enp1s0",
        })?;
        Ok(NicRule {
            old: old.parse()?,
            new: new.parse()?,
        })
    }
}

/// Why a mapping is refused. Nothing is written when there is one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    #[error("parse --nic rule {text:?}: {why}")]
    BadRule { text: String, why: &'static str },
    #[error(
        "map --nic {rule}: the target has no NIC {nic} (it has: {have}); name one of its NICs"
    )]
    NoSuchTarget {
        rule: String,
        nic: String,
        have: String,
    },
    #[error("map --nic {rule}: the source has no interface {iface} (it has: {have}); name one of its interfaces")]
    NoSuchSource {
        rule: String,
        iface: String,
        have: String,
    },
    #[error(
        "map target NIC {nic} twice ({first} and {second}): give each source interface its own NIC"
    )]
    TargetTwice {
        nic: String,
        first: String,
        second: String,
    },
    #[error("map source interface {iface} twice: keep one --nic rule for it")]
    SourceTwice { iface: String },
    #[error("map NICs: at most {max} {what}, got {count}")]
    TooMany {
        what: &'static str,
        count: usize,
        max: usize,
    },
}

fn short(s: &str) -> String {
    s.chars().take(80).collect()
}

/// How a pair came about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum How {
    /// Source interfaces in order onto target NICs in order.
    Order,
    /// An operator rule.
    Rule(NicRule),
}

/// One source interface and the target NIC it becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicPair {
    pub old: String,
    pub old_mac: Option<String>,
    pub new: String,
    pub new_mac: String,
    pub driver: Option<String>,
    pub how: How,
}

/// The whole mapping: what the transforms rename, and what is left over on either side.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NicPlan {
    pub pairs: Vec<NicPair>,
    /// Source interfaces with no target NIC: their config stays and will not come up.
    pub unmapped: Vec<String>,
    /// Target NICs no source interface uses.
    pub spare: Vec<String>,
}

/// A source NIC: one per name, with the first MAC any of its entries gave.
struct Source {
    name: String,
    mac: Option<String>,
}

fn sources(interfaces: &[Interface]) -> Vec<Source> {
    let mut out: Vec<Source> = Vec::new();
    for i in interfaces
        .iter()
        .filter(|i| i.kind == InterfaceKind::Ethernet)
    {
        let mac = i.mac.as_deref().and_then(|m| normalize_mac(m).ok());
        match out.iter_mut().find(|s| s.name == i.name) {
            Some(s) => s.mac = s.mac.take().or(mac),
            None => out.push(Source {
                name: i.name.clone(),
                mac,
            }),
        }
    }
    out
}

fn names<'a>(it: impl Iterator<Item = &'a str>) -> String {
    let v: Vec<&str> = it.collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

impl NicPlan {
    /// Maps the source's Ethernet interfaces (`sources`, in the order the backup recorded
    /// them; bonds, bridges, VLANs and loopback follow their members) onto `targets`
    /// (loopback skipped): first every rule, then the rest in order onto the rest in order.
    pub fn plan(
        sources_in: &[Interface],
        targets: &[TargetNic],
        rules: &[NicRule],
    ) -> Result<NicPlan, MappingError> {
        for (what, count, max) in [
            ("--nic rules", rules.len(), MAX_NIC_RULES),
            ("source interfaces", sources_in.len(), MAX_INTERFACES),
            ("target NICs", targets.len(), MAX_INTERFACES),
        ] {
            if count > max {
                return Err(MappingError::TooMany { what, count, max });
            }
        }
        let srcs = sources(sources_in);
        let tgts: Vec<&TargetNic> = targets.iter().filter(|t| t.name != "lo").collect();
        let mut taken_src = vec![None::<How>; srcs.len()];
        let mut taken_tgt: Vec<Option<usize>> = vec![None; tgts.len()];
        for rule in rules {
            let s = srcs
                .iter()
                .position(|s| match &rule.old {
                    NicRef::Name(n) => s.name == *n,
                    NicRef::Mac(m) => s.mac.as_deref() == Some(m.as_str()),
                })
                .ok_or_else(|| MappingError::NoSuchSource {
                    rule: rule.to_string(),
                    iface: rule.old.to_string(),
                    have: names(srcs.iter().map(|s| s.name.as_str())),
                })?;
            let t = tgts
                .iter()
                .position(|t| match &rule.new {
                    NicRef::Name(n) => t.name == *n,
                    NicRef::Mac(m) => t.mac == *m,
                })
                .ok_or_else(|| MappingError::NoSuchTarget {
                    rule: rule.to_string(),
                    nic: rule.new.to_string(),
                    have: names(tgts.iter().map(|t| t.name.as_str())),
                })?;
            if taken_src[s].is_some() {
                return Err(MappingError::SourceTwice {
                    iface: srcs[s].name.clone(),
                });
            }
            if let Some(first) = taken_tgt[t] {
                return Err(MappingError::TargetTwice {
                    nic: tgts[t].name.clone(),
                    first: srcs[first].name.clone(),
                    second: srcs[s].name.clone(),
                });
            }
            taken_src[s] = Some(How::Rule(rule.clone()));
            taken_tgt[t] = Some(s);
        }
        let mut free = (0..tgts.len()).filter(|t| taken_tgt[*t].is_none());
        let mut assigned: Vec<Option<(usize, How)>> = vec![None; srcs.len()];
        for (s, how) in taken_src.into_iter().enumerate() {
            if let Some(how) = how {
                let t = taken_tgt.iter().position(|x| *x == Some(s));
                assigned[s] = t.map(|t| (t, how));
            }
        }
        for slot in assigned.iter_mut().filter(|a| a.is_none()) {
            *slot = free.next().map(|t| (t, How::Order));
        }
        let mut plan = NicPlan::default();
        let mut used = vec![false; tgts.len()];
        for (s, a) in srcs.iter().zip(assigned) {
            match a {
                Some((t, how)) => {
                    used[t] = true;
                    plan.pairs.push(NicPair {
                        old: s.name.clone(),
                        old_mac: s.mac.clone(),
                        new: tgts[t].name.clone(),
                        new_mac: tgts[t].mac.clone(),
                        driver: tgts[t].driver.clone(),
                        how,
                    });
                }
                None => plan.unmapped.push(s.name.clone()),
            }
        }
        plan.spare = tgts
            .iter()
            .zip(used)
            .filter(|(_, u)| !u)
            .map(|(t, _)| t.name.clone())
            .collect();
        Ok(plan)
    }

    /// The pair of the source interface `old`.
    pub fn pair(&self, old: &str) -> Option<&NicPair> {
        self.pairs.iter().find(|p| p.old == old)
    }

    /// The pair whose source MAC is `mac` (any case, `-` or `:`).
    pub fn pair_by_mac(&self, mac: &str) -> Option<&NicPair> {
        let mac = normalize_mac(mac).ok()?;
        self.pairs
            .iter()
            .find(|p| p.old_mac.as_deref() == Some(mac.as_str()))
    }

    /// The target name of a source interface name; also `eth0.100` → `enp1s0.100` (a VLAN on
    /// it) and `eth0:1` → `enp1s0:1` (an ifupdown alias). `None` when it does not change.
    pub fn rename(&self, name: &str) -> Option<String> {
        let (base, tail) = match name.find(['.', ':']) {
            Some(i) if name[i + 1..].bytes().all(|b| b.is_ascii_digit()) && i + 1 < name.len() => {
                name.split_at(i)
            }
            _ => (name, ""),
        };
        let p = self.pair(base)?;
        (p.new != p.old).then(|| format!("{}{tail}", p.new))
    }
}

impl fmt::Display for NicPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "network interfaces:")?;
        for p in &self.pairs {
            write!(f, "  {}", p.old)?;
            if let Some(m) = &p.old_mac {
                write!(f, " ({m})")?;
            }
            write!(f, " -> {} ({}", p.new, p.new_mac)?;
            if let Some(d) = &p.driver {
                write!(f, ", {d}")?;
            }
            match &p.how {
                How::Order => writeln!(f, ") in order")?,
                How::Rule(r) => writeln!(f, ") by --nic {r}")?,
            }
        }
        for u in &self.unmapped {
            writeln!(
                f,
                "  {u} -> no NIC on the target: its configuration is kept and will not come up"
            )?;
        }
        for s in &self.spare {
            writeln!(f, "  (target NIC {s} unused)")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_format::network::ConfigSystem;

    pub(crate) fn iface(name: &str, mac: Option<&str>, kind: InterfaceKind) -> Interface {
        Interface {
            name: name.into(),
            kind,
            mac: mac.map(Into::into),
            system: ConfigSystem::Ifupdown,
            file: "/etc/network/interfaces".into(),
            ..Interface::default()
        }
    }

    fn nic(name: &str, mac: &str) -> TargetNic {
        TargetNic {
            name: name.into(),
            mac: mac.into(),
            driver: Some("virtio_net".into()),
            pci_path: None,
        }
    }

    fn src() -> Vec<Interface> {
        vec![
            iface("ens192", Some("00:50:56:00:00:01"), InterfaceKind::Ethernet),
            iface("bond0", None, InterfaceKind::Bond),
            iface("ens224", Some("00:50:56:00:00:02"), InterfaceKind::Ethernet),
            iface("ens192", None, InterfaceKind::Ethernet),
            iface("lo", None, InterfaceKind::Loopback),
        ]
    }

    fn tgt() -> Vec<TargetNic> {
        vec![
            nic("lo", "00:00:00:00:00:00"),
            nic("enp1s0", "52:54:00:00:00:01"),
            nic("enp2s0", "52:54:00:00:00:02"),
            nic("enp3s0", "52:54:00:00:00:03"),
        ]
    }

    fn rules(r: &[&str]) -> Vec<NicRule> {
        r.iter().map(|r| r.parse().unwrap()).collect()
    }

    fn pairs(p: &NicPlan) -> Vec<(String, String)> {
        p.pairs
            .iter()
            .map(|p| (p.old.clone(), p.new.clone()))
            .collect()
    }

    fn owned(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn order_onto_order() {
        let p = NicPlan::plan(&src(), &tgt(), &[]).unwrap();
        assert_eq!(
            pairs(&p),
            owned(&[("ens192", "enp1s0"), ("ens224", "enp2s0")])
        );
        assert_eq!(p.spare, vec!["enp3s0"]);
        assert_eq!(p.pairs[0].old_mac.as_deref(), Some("00:50:56:00:00:01"));
        assert_eq!(p.rename("ens192").as_deref(), Some("enp1s0"));
        assert_eq!(p.rename("ens192.100").as_deref(), Some("enp1s0.100"));
        assert_eq!(p.rename("ens192:1").as_deref(), Some("enp1s0:1"));
        assert_eq!(p.rename("ens192.x"), None);
        assert_eq!(p.rename("ens19"), None);
        assert_eq!(p.rename("bond0"), None);
        assert_eq!(
            p.pair_by_mac("00-50-56-00-00-02").map(|p| p.new.as_str()),
            Some("enp2s0")
        );
        let shown = p.to_string();
        assert_eq!(
            shown,
            "network interfaces:\n  ens192 (00:50:56:00:00:01) -> enp1s0 (52:54:00:00:00:01, virtio_net) in order\n  \
             ens224 (00:50:56:00:00:02) -> enp2s0 (52:54:00:00:00:02, virtio_net) in order\n  (target NIC enp3s0 unused)\n"
        );
    }

    #[test]
    fn rules_first_then_order() {
        let p = NicPlan::plan(&src(), &tgt(), &rules(&["ens224=enp1s0"])).unwrap();
        assert_eq!(
            pairs(&p),
            owned(&[("ens192", "enp2s0"), ("ens224", "enp1s0")])
        );
        let p = NicPlan::plan(
            &src(),
            &tgt(),
            &rules(&["00:50:56:00:00:01=52:54:00:00:00:03"]),
        )
        .unwrap();
        assert_eq!(
            pairs(&p),
            owned(&[("ens192", "enp3s0"), ("ens224", "enp1s0")])
        );
        assert!(p
            .to_string()
            .contains("by --nic 00:50:56:00:00:01=52:54:00:00:00:03"));
        // More sources than targets: the rest is listed, not an error.
        let p = NicPlan::plan(&src(), &tgt()[..2], &[]).unwrap();
        assert_eq!(p.unmapped, vec!["ens224"]);
        assert!(p.to_string().contains("ens224 -> no NIC on the target"));
    }

    #[test]
    fn refusals() {
        let table: &[(&[&str], &str)] = &[
            (
                &["ens192=eth9"],
                "the target has no NIC eth9 (it has: enp1s0, enp2s0, enp3s0)",
            ),
            (
                &["ens192=52:54:00:00:00:99"],
                "the target has no NIC 52:54:00:00:00:99",
            ),
            (
                &["eth7=enp1s0"],
                "the source has no interface eth7 (it has: ens192, ens224)",
            ),
            (&["bond0=enp1s0"], "the source has no interface bond0"),
            (
                &["ens192=enp1s0", "ens224=enp1s0"],
                "map target NIC enp1s0 twice (ens192 and ens224)",
            ),
            (
                &["ens192=enp1s0", "ens192=enp2s0"],
                "map source interface ens192 twice",
            ),
        ];
        for (r, want) in table {
            let err = NicPlan::plan(&src(), &tgt(), &rules(r)).unwrap_err();
            assert!(err.to_string().contains(want), "{r:?}: {err}");
        }
        for bad in [
            "ens192",
            " a=c",
            "a\tb=c",
            "x=",
            "=y",
            "a=b=c",
            &"x".repeat(400),
        ] {
            assert!(
                matches!(bad.parse::<NicRule>(), Err(MappingError::BadRule { .. })),
                "{bad}"
            );
        }
        let too_many = vec![rules(&["ens192=enp1s0"])[0].clone(); MAX_NIC_RULES + 1];
        assert!(matches!(
            NicPlan::plan(&src(), &tgt(), &too_many),
            Err(MappingError::TooMany { .. })
        ));
    }

    #[test]
    fn target_nics_from_the_inventory() {
        let n = Nic {
            name: "enp1s0".into(),
            mac: "52:54:00:AB:CD:EF".into(),
            carrier: Some(true),
            driver: None,
            pci_path: None,
            predictable: None,
        };
        let t = TargetNic::from(&n);
        assert_eq!(t.name, "enp1s0");
        assert_eq!(t.mac, "52:54:00:ab:cd:ef");
        assert_eq!(t.driver, None);
        let named = Nic {
            name: "eth0".into(),
            predictable: Some("ens3".into()),
            ..n
        };
        assert_eq!(TargetNic::from(&named).name, "ens3");
    }
}
