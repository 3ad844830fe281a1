//! A restored Linux system's network config files: `ferry_fixup::network` readers (ifupdown,
//! netplan, NetworkManager keyfile, systemd-networkd `.network`/`.link`, ifcfg) and the bounds
//! check of what they accept, then each system's transform with a renaming plan and re-IP rules,
//! and with an identity plan and no rules, which must give back the input byte for byte.
//! Byte 0 picks the system; the rest is the file's text (lossy UTF-8, as the readers take text).
#![no_main]

use ferry_fixup::network::{self, NicPlan, ReipRules, TargetNic};
use ferry_format::network::{ConfigSystem, Interface, NetworkConfig};
use libfuzzer_sys::fuzz_target;

const SYSTEMS: [(ConfigSystem, &str); 6] = [
    (ConfigSystem::Ifupdown, "/etc/network/interfaces"),
    (ConfigSystem::Netplan, "/etc/netplan/50-cloud-init.yaml"),
    (ConfigSystem::NetworkManager, "/etc/NetworkManager/system-connections/a.nmconnection"),
    (ConfigSystem::Networkd, "/etc/systemd/network/10-lan.network"),
    (ConfigSystem::Networkd, "/etc/systemd/network/10-lan.link"),
    (ConfigSystem::Ifcfg, "/etc/sysconfig/network-scripts/ifcfg-ens192"),
];

fn source(name: &str, mac: &str) -> Interface {
    Interface { name: name.into(), mac: Some(mac.into()), ..Interface::default() }
}

fn target(name: &str, mac: &str) -> TargetNic {
    TargetNic { name: name.into(), mac: mac.into(), driver: None, pci_path: None }
}

/// A job's rule texts, as an API body carries them: parsed, never a panic.
fn rules(text: &str) {
    let mut parts = text.splitn(3, '\n');
    let j = ferry_format::agent::JobNetwork {
        nic: parts.next().map(|s| vec![s.to_owned()]).unwrap_or_default(),
        reip: parts.next().map(|s| vec![s.to_owned()]).unwrap_or_default(),
        ip: parts.next().map(|s| vec![s.to_owned()]).unwrap_or_default(),
    };
    let _ = network::NetworkRules::parse(&j);
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let (system, path) = SYSTEMS[usize::from(pick) % SYSTEMS.len()];
    let text = String::from_utf8_lossy(rest);
    rules(&text);
    if let Ok(interfaces) = network::read_file(system, path, &text) {
        NetworkConfig { interfaces }.check().expect("what a reader accepts is in bounds");
    }
    let sources = [source("ens192", "00:50:56:aa:00:01"), source("ens224", "00:50:56:aa:00:02")];
    let plan = NicPlan::plan(
        &sources,
        &[target("enp1s0", "52:54:00:00:00:01"), target("enp2s0", "52:54:00:00:00:02")],
        &[],
    )
    .expect("the fixed plan maps");
    let rules = ReipRules::new(
        vec!["10.1.0.0/16=10.2.0.0/16".parse().expect("subnet rule")],
        vec!["ens192=10.3.0.5/24,gw=10.3.0.1,dns=10.3.0.53".parse().expect("iface rule")],
    )
    .expect("the fixed rules");
    let _ = network::transform_file(system, path, &text, &plan, &rules);
    let identity = NicPlan::plan(
        &sources,
        &[target("ens192", "00:50:56:aa:00:01"), target("ens224", "00:50:56:aa:00:02")],
        &[],
    )
    .expect("the identity plan maps");
    if let Ok(e) = network::transform_file(system, path, &text, &identity, &ReipRules::default()) {
        assert_eq!(e.text, text, "an identity plan without rules changes nothing");
        assert!(e.rename.is_none());
    }
});
