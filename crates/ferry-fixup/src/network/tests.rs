//! Table tests of the readers and transforms on files written as the systems' documentation
//! writes them, and proptests that nothing panics on arbitrary text and that an identity
//! mapping with no rules changes no byte.

use super::*;
use ferry_format::network::InterfaceKind;
use proptest::prelude::*;

const OLD1: &str = "00:50:56:aa:00:01";
const OLD2: &str = "00:50:56:aa:00:02";
const NEW1: &str = "52:54:00:00:00:01";
const NEW2: &str = "52:54:00:00:00:02";

fn source(name: &str, mac: &str) -> Interface {
    Interface {
        name: name.into(),
        mac: Some(mac.into()),
        system: ConfigSystem::Ifupdown,
        file: "/etc/network/interfaces".into(),
        ..Interface::default()
    }
}

fn target(name: &str, mac: &str) -> TargetNic {
    TargetNic {
        name: name.into(),
        mac: mac.into(),
        driver: Some("virtio_net".into()),
        pci_path: None,
    }
}

/// ens192/ens224 (VMware, vmxnet3) onto enp1s0/enp2s0 (virtio), in order.
fn plan() -> NicPlan {
    NicPlan::plan(
        &[source("ens192", OLD1), source("ens224", OLD2)],
        &[target("enp1s0", NEW1), target("enp2s0", NEW2)],
        &[],
    )
    .unwrap()
}

fn rules(subnets: &[&str], ifaces: &[&str]) -> ReipRules {
    ReipRules::new(
        subnets.iter().map(|s| s.parse().unwrap()).collect(),
        ifaces.iter().map(|s| s.parse().unwrap()).collect(),
    )
    .unwrap()
}

fn no_rules() -> ReipRules {
    ReipRules::default()
}

/// One transform case: system, path, input, rules, expected output.
struct Case {
    what: &'static str,
    system: ConfigSystem,
    path: &'static str,
    input: &'static str,
    subnets: &'static [&'static str],
    ifaces: &'static [&'static str],
    want: &'static str,
}

fn run(cases: &[Case]) {
    for c in cases {
        let r = rules(c.subnets, c.ifaces);
        let got = transform_file(c.system, c.path, c.input, &plan(), &r)
            .unwrap_or_else(|e| panic!("{}: {e}", c.what));
        assert_eq!(got.text, c.want, "{}:\n{}", c.what, got.text);
        // A second run over the result with the same plan changes nothing more.
        let again = transform_file(c.system, c.path, &got.text, &plan(), &no_rules()).unwrap();
        assert_eq!(again.text, got.text, "{}: second run", c.what);
        // Every input is readable by its own reader.
        read_file(c.system, c.path, c.input).unwrap_or_else(|e| panic!("{}: {e}", c.what));
    }
}

// ---------------------------------------------------------------- ifupdown

const IFUPDOWN_STATIC: &str = "\
# The loopback network interface
auto lo
iface lo inet loopback

# The primary network interface
auto ens192
iface ens192 inet static
    address 10.1.2.3/24
    gateway 10.1.2.1
    dns-nameservers 10.1.0.53 8.8.8.8
    hwaddress ether 00:50:56:aa:00:01
    up ip route add 10.9.0.0/16 via 10.1.2.254 dev ens192
";

const IFUPDOWN_BOND_VLAN_BRIDGE: &str = "\
auto bond0
iface bond0 inet manual
\tbond-slaves ens192 ens224
\tbond-mode active-backup
\tbond-primary ens192

auto ens192.100
iface ens192.100 inet static
\taddress 10.1.100.5
\tnetmask 255.255.255.0
\tvlan-raw-device ens192

allow-hotplug br0
iface br0 inet dhcp
\tbridge_ports ens224.200 tap0
";

#[test]
fn ifupdown_transforms() {
    run(&[
        Case {
            what: "rename, hwaddress dropped, no re-IP",
            system: ConfigSystem::Ifupdown,
            path: "/etc/network/interfaces",
            input: IFUPDOWN_STATIC,
            subnets: &[],
            ifaces: &[],
            want: "\
# The loopback network interface
auto lo
iface lo inet loopback

# The primary network interface
auto enp1s0
iface enp1s0 inet static
    address 10.1.2.3/24
    gateway 10.1.2.1
    dns-nameservers 10.1.0.53 8.8.8.8
    up ip route add 10.9.0.0/16 via 10.1.2.254 dev ens192
",
        },
        Case {
            what: "re-IP of address, gateway and DNS",
            system: ConfigSystem::Ifupdown,
            path: "/etc/network/interfaces",
            input: IFUPDOWN_STATIC,
            subnets: &["10.1.0.0/16=10.2.0.0/16"],
            ifaces: &[],
            want: "\
# The loopback network interface
auto lo
iface lo inet loopback

# The primary network interface
auto enp1s0
iface enp1s0 inet static
    address 10.2.2.3/24
    gateway 10.2.2.1
    dns-nameservers 10.2.0.53 8.8.8.8
    up ip route add 10.9.0.0/16 via 10.1.2.254 dev ens192
",
        },
        Case {
            what: "bond of two slaves, VLAN on a renamed parent, bridge",
            system: ConfigSystem::Ifupdown,
            path: "/etc/network/interfaces.d/bond",
            input: IFUPDOWN_BOND_VLAN_BRIDGE,
            subnets: &[],
            ifaces: &[],
            want: "\
auto bond0
iface bond0 inet manual
\tbond-slaves enp1s0 enp2s0
\tbond-mode active-backup
\tbond-primary enp1s0

auto enp1s0.100
iface enp1s0.100 inet static
\taddress 10.1.100.5
\tnetmask 255.255.255.0
\tvlan-raw-device enp1s0

allow-hotplug br0
iface br0 inet dhcp
\tbridge_ports enp2s0.200 tap0
",
        },
        Case {
            what: "--ip turns DHCP into static; other stanzas stay DHCP",
            system: ConfigSystem::Ifupdown,
            path: "/etc/network/interfaces",
            input: "auto ens192\niface ens192 inet dhcp\n\nauto ens224\niface ens224 inet dhcp\n",
            subnets: &[],
            ifaces: &["enp1s0=10.2.0.5/24,gw=10.2.0.1,dns=10.2.0.53,dns=1.1.1.1"],
            want: "auto enp1s0\niface enp1s0 inet static\n    address 10.2.0.5/24\n    gateway 10.2.0.1\n    \
                   dns-nameservers 10.2.0.53 1.1.1.1\n\nauto enp2s0\niface enp2s0 inet dhcp\n",
        },
        Case {
            what: "--ip replaces a static address and drops its netmask",
            system: ConfigSystem::Ifupdown,
            path: "/etc/network/interfaces",
            input: "iface ens192 inet static\n  address 10.1.2.3\n  netmask 255.255.255.0\n  gateway 10.1.2.1\n",
            subnets: &[],
            ifaces: &["ens192=10.2.0.5/24,gw=10.2.0.1"],
            want: "iface enp1s0 inet static\n  address 10.2.0.5/24\n  gateway 10.2.0.1\n",
        },
        Case {
            what: "--ip adds the gateway and DNS a static stanza lacks",
            system: ConfigSystem::Ifupdown,
            path: "/etc/network/interfaces",
            input: "iface ens224 inet static\n  address 10.1.2.4/24\n",
            subnets: &[],
            ifaces: &["ens224=10.2.0.6/24,gw=10.2.0.1,dns=10.2.0.53"],
            want: "iface enp2s0 inet static\n    gateway 10.2.0.1\n    dns-nameservers 10.2.0.53\n  address 10.2.0.6/24\n",
        },
    ]);
}

#[test]
fn ifupdown_reads() {
    let got = ifupdown::read("/etc/network/interfaces", IFUPDOWN_STATIC).unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].kind, InterfaceKind::Loopback);
    let e = &got[1];
    assert_eq!(e.name, "ens192");
    assert_eq!(e.kind, InterfaceKind::Ethernet);
    assert_eq!(e.mac.as_deref(), Some(OLD1));
    assert_eq!(e.addresses, vec!["10.1.2.3/24".parse().unwrap()]);
    assert_eq!(e.gateways, vec!["10.1.2.1".parse::<IpAddr>().unwrap()]);
    assert_eq!(e.dns.len(), 2);
    let got = ifupdown::read("/etc/network/interfaces.d/bond", IFUPDOWN_BOND_VLAN_BRIDGE).unwrap();
    let kinds: Vec<(&str, InterfaceKind)> = got.iter().map(|i| (i.name.as_str(), i.kind)).collect();
    assert_eq!(
        kinds,
        [
            ("bond0", InterfaceKind::Bond),
            ("ens192.100", InterfaceKind::Vlan),
            ("br0", InterfaceKind::Bridge)
        ]
    );
    assert_eq!(got[0].members, ["ens192", "ens224"]);
    assert_eq!(got[1].parent.as_deref(), Some("ens192"));
    assert_eq!(got[1].addresses, vec!["10.1.100.5/24".parse().unwrap()]);
    assert!(got[2].dhcp4);
    let bad = ifupdown::read(
        "/etc/network/interfaces",
        "iface eth0 inet static\n address 10.1.2.x/24\n",
    )
    .unwrap_err();
    assert_eq!(bad.line, 2);
    assert!(bad.to_string().starts_with("read ifupdown file /etc/network/interfaces line 2: address \"10.1.2.x/24\" is not an IP address"), "{bad}");
    assert!(ifupdown::read("f", "iface eth0\n").is_err());
}

// ---------------------------------------------------------------- netplan

const NETPLAN_STATIC: &str = "\
# This is the network config written by 'subiquity'
network:
  version: 2
  renderer: networkd
  ethernets:
    ens192:
      match:
        macaddress: \"00:50:56:aa:00:01\"
      set-name: ens192
      addresses:
        - 10.1.2.3/24
        - fd00:1::3/64
      routes:
        - to: default
          via: 10.1.2.1
      nameservers:
        search: [example.com]
        addresses: [10.1.0.53, 8.8.8.8]
    ens224:
      dhcp4: true
";

const NETPLAN_BOND: &str = "\
network:
  version: 2
  ethernets:
    ens192:
      dhcp4: no
    ens224:
      dhcp4: no
  bonds:
    bond0:
      interfaces: [ens192, ens224]
      parameters:
        mode: active-backup
        primary: ens192
  vlans:
    vlan100:
      id: 100
      link: ens192
      addresses: [10.1.100.5/24]
  bridges:
    br0:
      interfaces:
        - ens224
      dhcp4: true
";

#[test]
fn netplan_transforms() {
    run(&[
        Case {
            what: "MAC match, set-name, re-IP of addresses, default route and DNS",
            system: ConfigSystem::Netplan,
            path: "/etc/netplan/00-installer-config.yaml",
            input: NETPLAN_STATIC,
            subnets: &["10.1.0.0/16=10.2.0.0/16"],
            ifaces: &[],
            want: "\
# This is the network config written by 'subiquity'
network:
  version: 2
  renderer: networkd
  ethernets:
    enp1s0:
      match:
        macaddress: \"52:54:00:00:00:01\"
      set-name: enp1s0
      addresses:
        - 10.2.2.3/24
        - fd00:1::3/64
      routes:
        - to: default
          via: 10.2.2.1
      nameservers:
        search: [example.com]
        addresses: [10.2.0.53, 8.8.8.8]
    enp2s0:
      dhcp4: true
",
        },
        Case {
            what: "bond of two slaves, VLAN on a renamed parent, bridge",
            system: ConfigSystem::Netplan,
            path: "/etc/netplan/01-bond.yaml",
            input: NETPLAN_BOND,
            subnets: &[],
            ifaces: &[],
            want: "\
network:
  version: 2
  ethernets:
    enp1s0:
      dhcp4: no
    enp2s0:
      dhcp4: no
  bonds:
    bond0:
      interfaces: [enp1s0, enp2s0]
      parameters:
        mode: active-backup
        primary: ens192
  vlans:
    vlan100:
      id: 100
      link: enp1s0
      addresses: [10.1.100.5/24]
  bridges:
    br0:
      interfaces:
        - enp2s0
      dhcp4: true
",
        },
        Case {
            what: "--ip on a DHCP interface",
            system: ConfigSystem::Netplan,
            path: "/etc/netplan/50-cloud-init.yaml",
            input: "network:\n    ethernets:\n        ens192:\n            dhcp4: true\n    version: 2\n",
            subnets: &[],
            ifaces: &["ens192=10.2.0.5/24,gw=10.2.0.1,dns=10.2.0.53"],
            want: "network:\n    ethernets:\n        enp1s0:\n            addresses: [10.2.0.5/24]\n            \
                   routes:\n                - to: default\n                  via: 10.2.0.1\n            \
                   nameservers:\n                addresses: [10.2.0.53]\n            dhcp4: false\n    version: 2\n",
        },
        Case {
            what: "--ip on a static interface with a block list",
            system: ConfigSystem::Netplan,
            path: "/etc/netplan/00.yaml",
            input: NETPLAN_STATIC,
            subnets: &[],
            ifaces: &["ens192=10.3.0.5/16,gw=10.3.0.1,dns=10.3.0.53,dns=10.3.0.54"],
            want: "\
# This is the network config written by 'subiquity'
network:
  version: 2
  renderer: networkd
  ethernets:
    enp1s0:
      match:
        macaddress: \"52:54:00:00:00:01\"
      set-name: enp1s0
      addresses:
        - 10.3.0.5/16
        - fd00:1::3/64
      routes:
        - to: default
          via: 10.3.0.1
      nameservers:
        search: [example.com]
        addresses: [10.3.0.53, 10.3.0.54]
    enp2s0:
      dhcp4: true
",
        },
    ]);
}

#[test]
fn netplan_reads_and_refuses() {
    let got = netplan::read("/etc/netplan/00.yaml", NETPLAN_STATIC).unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].name, "ens192");
    assert_eq!(got[0].mac.as_deref(), Some(OLD1));
    assert_eq!(got[0].addresses.len(), 2);
    assert_eq!(got[0].gateways, vec!["10.1.2.1".parse::<IpAddr>().unwrap()]);
    assert_eq!(got[0].dns.len(), 2);
    assert!(got[1].dhcp4);
    let got = netplan::read("/etc/netplan/01.yaml", NETPLAN_BOND).unwrap();
    let bond = got.iter().find(|i| i.name == "bond0").unwrap();
    assert_eq!(
        (bond.kind, bond.members.clone()),
        (InterfaceKind::Bond, vec!["ens192".into(), "ens224".into()])
    );
    let vlan = got.iter().find(|i| i.name == "vlan100").unwrap();
    assert_eq!(vlan.parent.as_deref(), Some("ens192"));
    let br = got.iter().find(|i| i.name == "br0").unwrap();
    assert_eq!(br.members, ["ens224"]);
    for (text, want) in [
        (
            "network:\n  ethernets: {ens192: {dhcp4: true}}\n",
            "line 2: a flow mapping ({...}) is not supported",
        ),
        ("network:\n\tethernets:\n", "line 2: tab in indentation"),
        (
            "network:\n  ethernets:\n    e0:\n      addresses: [10.1.2.3/24,\n",
            "line 4: a flow list across lines",
        ),
        (
            "network:\n  ethernets:\n    e0:\n      addresses: [10.1.2.300/24]\n",
            "line 4: address \"10.1.2.300/24\"",
        ),
        ("network:\n  just text\n", "line 2: expected `key: value`"),
    ] {
        let err = netplan::read("/etc/netplan/x.yaml", text).unwrap_err();
        assert!(err.to_string().contains(want), "{text:?}: {err}");
        let err = netplan::transform("/etc/netplan/x.yaml", text, &plan(), &no_rules());
        assert!(err.is_err() || want.contains("address"), "{text:?}");
    }
}

// ---------------------------------------------------------------- NetworkManager

const NM_STATIC: &str = "\
[connection]
id=Wired connection 1
uuid=8a0a4b3e-6f5c-4e2a-9b7a-1c2d3e4f5a6b
type=ethernet
interface-name=ens192

[ethernet]
mac-address=00:50:56:AA:00:01
cloned-mac-address=00:50:56:AA:00:01

[ipv4]
address1=10.1.2.3/24,10.1.2.1
dns=10.1.0.53;8.8.8.8;
method=manual

[ipv6]
addr-gen-mode=stable-privacy
method=auto

[proxy]
";

#[test]
fn nm_keyfile_transforms() {
    run(&[
        Case {
            what: "interface-name, mac-address (case kept), re-IP",
            system: ConfigSystem::NetworkManager,
            path: "/etc/NetworkManager/system-connections/Wired connection 1.nmconnection",
            input: NM_STATIC,
            subnets: &["10.1.0.0/16=10.2.0.0/16"],
            ifaces: &[],
            want: "\
[connection]
id=Wired connection 1
uuid=8a0a4b3e-6f5c-4e2a-9b7a-1c2d3e4f5a6b
type=ethernet
interface-name=enp1s0

[ethernet]
mac-address=52:54:00:00:00:01
cloned-mac-address=00:50:56:AA:00:01

[ipv4]
address1=10.2.2.3/24,10.2.2.1
dns=10.2.0.53;8.8.8.8;
method=manual

[ipv6]
addr-gen-mode=stable-privacy
method=auto

[proxy]
",
        },
        Case {
            what: "bond slave and VLAN on a renamed parent",
            system: ConfigSystem::NetworkManager,
            path: "/etc/NetworkManager/system-connections/bond0-slave.nmconnection",
            input: "[connection]\nid=bond0-port-ens224\ntype=ethernet\ninterface-name=ens224\nmaster=bond0\n\
                    slave-type=bond\n\n[vlan]\nid=100\nparent=ens192\n",
            subnets: &[],
            ifaces: &[],
            want: "[connection]\nid=bond0-port-ens224\ntype=ethernet\ninterface-name=enp2s0\nmaster=bond0\n\
                   slave-type=bond\n\n[vlan]\nid=100\nparent=enp1s0\n",
        },
        Case {
            what: "--ip on DHCP: method=manual, address, dns",
            system: ConfigSystem::NetworkManager,
            path: "/etc/NetworkManager/system-connections/ens192.nmconnection",
            input: "[connection]\nid=ens192\ntype=ethernet\ninterface-name=ens192\n\n[ipv4]\nmethod=auto\n",
            subnets: &[],
            ifaces: &["ens192=10.2.0.5/24,gw=10.2.0.1,dns=10.2.0.53"],
            want: "[connection]\nid=ens192\ntype=ethernet\ninterface-name=enp1s0\n\n[ipv4]\nmethod=manual\n\
                   address1=10.2.0.5/24,10.2.0.1\ndns=10.2.0.53;\n",
        },
        Case {
            what: "--ip on a connection without [ipv4]",
            system: ConfigSystem::NetworkManager,
            path: "/etc/NetworkManager/system-connections/ens224.nmconnection",
            input: "[connection]\nid=ens224\ntype=ethernet\ninterface-name=ens224\n",
            subnets: &[],
            ifaces: &["enp2s0=10.2.0.6/24"],
            want: "[connection]\nid=ens224\ntype=ethernet\ninterface-name=enp2s0\n\n[ipv4]\nmethod=manual\naddress1=10.2.0.6/24\n",
        },
    ]);
    let got = nm_keyfile::read("/x.nmconnection", NM_STATIC).unwrap();
    assert_eq!(got[0].name, "ens192");
    assert_eq!(got[0].mac.as_deref(), Some(OLD1));
    assert_eq!(got[0].addresses, vec!["10.1.2.3/24".parse().unwrap()]);
    assert_eq!(got[0].gateways.len(), 1);
    assert_eq!(got[0].dns.len(), 2);
    assert!(got[0].dhcp6 && !got[0].dhcp4);
    let err = nm_keyfile::read("/x.nmconnection", "[connection]\njust words\n").unwrap_err();
    assert_eq!(err.line, 2);
}

// ---------------------------------------------------------------- systemd-networkd

#[test]
fn networkd_transforms() {
    run(&[
        Case {
            what: ".link: MAC match and the name it gives",
            system: ConfigSystem::Networkd,
            path: "/etc/systemd/network/10-lan.link",
            input: "[Match]\nMACAddress=00:50:56:aa:00:01\n\n[Link]\nName=ens192\n",
            subnets: &[],
            ifaces: &[],
            want: "[Match]\nMACAddress=52:54:00:00:00:01\n\n[Link]\nName=enp1s0\n",
        },
        Case {
            what: ".network: Name, re-IP of Address, Gateway, DNS; VLAN on it",
            system: ConfigSystem::Networkd,
            path: "/etc/systemd/network/20-lan.network",
            input: "# static\n[Match]\nName=ens192\n\n[Network]\nAddress=10.1.2.3/24\nGateway=10.1.2.1\n\
                    DNS=10.1.0.53 8.8.8.8\nVLAN=ens192.100\n\n[Route]\nGateway=10.1.2.254\nDestination=10.9.0.0/16\n",
            subnets: &["10.1.0.0/16=10.2.0.0/16"],
            ifaces: &[],
            want: "# static\n[Match]\nName=enp1s0\n\n[Network]\nAddress=10.2.2.3/24\nGateway=10.2.2.1\n\
                   DNS=10.2.0.53 8.8.8.8\nVLAN=enp1s0.100\n\n[Route]\nGateway=10.2.2.254\nDestination=10.9.0.0/16\n",
        },
        Case {
            what: "bond slaves by name and by MAC",
            system: ConfigSystem::Networkd,
            path: "/etc/systemd/network/30-bond-slaves.network",
            input: "[Match]\nName=ens192 ens224 eth*\n\n[Network]\nBond=bond0\n",
            subnets: &[],
            ifaces: &[],
            want: "[Match]\nName=enp1s0 enp2s0 eth*\n\n[Network]\nBond=bond0\n",
        },
        Case {
            what: "--ip on DHCP=yes keeps IPv6 DHCP",
            system: ConfigSystem::Networkd,
            path: "/etc/systemd/network/20-wired.network",
            input: "[Match]\nMACAddress=00:50:56:aa:00:02\n\n[Network]\nDHCP=yes\n",
            subnets: &[],
            ifaces: &["ens224=10.2.0.6/24,gw=10.2.0.1,dns=10.2.0.53"],
            want: "[Match]\nMACAddress=52:54:00:00:00:02\n\n[Network]\nAddress=10.2.0.6/24\nGateway=10.2.0.1\n\
                   DNS=10.2.0.53\nDHCP=ipv6\n",
        },
    ]);
    let got = networkd::read(
        "/etc/systemd/network/10-lan.link",
        "[Match]\nMACAddress=00:50:56:AA:00:01\nPath=pci-0000:0b:00.0\nDriver=vmxnet3\n[Link]\nName=ens192\n",
    )
    .unwrap();
    assert_eq!(got[0].name, "ens192");
    assert_eq!(got[0].mac.as_deref(), Some(OLD1));
    assert_eq!(got[0].pci_path.as_deref(), Some("pci-0000:0b:00.0"));
    assert_eq!(got[0].driver.as_deref(), Some("vmxnet3"));
    let err = networkd::read("/x.network", "[Network]\nAddress=10.1.2.3/99\n").unwrap_err();
    assert_eq!(err.line, 2);
    assert!(networkd::read("/x.network", "[Match]\nName=en*\n")
        .unwrap()
        .is_empty());
}

// ---------------------------------------------------------------- ifcfg

const IFCFG_STATIC: &str = "\
# Generated by parse-kickstart
TYPE=Ethernet
BOOTPROTO=none
DEVICE=ens192
NAME=\"System ens192\"
ONBOOT=yes
HWADDR=00:50:56:AA:00:01
IPADDR=10.1.2.3
PREFIX=24
GATEWAY=10.1.2.1
DNS1=10.1.0.53
DNS2=8.8.8.8
";

#[test]
fn ifcfg_transforms() {
    run(&[
        Case {
            what: "DEVICE, NAME, HWADDR (case kept), re-IP",
            system: ConfigSystem::Ifcfg,
            path: "/etc/sysconfig/network-scripts/ifcfg-ens192",
            input: IFCFG_STATIC,
            subnets: &["10.1.0.0/16=10.2.0.0/16"],
            ifaces: &[],
            want: "\
# Generated by parse-kickstart
TYPE=Ethernet
BOOTPROTO=none
DEVICE=enp1s0
NAME=\"System enp1s0\"
ONBOOT=yes
HWADDR=52:54:00:00:00:01
IPADDR=10.2.2.3
PREFIX=24
GATEWAY=10.2.2.1
DNS1=10.2.0.53
DNS2=8.8.8.8
",
        },
        Case {
            what: "bond slave",
            system: ConfigSystem::Ifcfg,
            path: "/etc/sysconfig/network-scripts/ifcfg-ens224",
            input: "DEVICE=ens224\nTYPE=Ethernet\nMASTER=bond0\nSLAVE=yes\nBOOTPROTO=none\nONBOOT=yes\n",
            subnets: &[],
            ifaces: &[],
            want: "DEVICE=enp2s0\nTYPE=Ethernet\nMASTER=bond0\nSLAVE=yes\nBOOTPROTO=none\nONBOOT=yes\n",
        },
        Case {
            what: "VLAN on a renamed parent, in a bridge",
            system: ConfigSystem::Ifcfg,
            path: "/etc/sysconfig/network-scripts/ifcfg-ens192.100",
            input: "DEVICE=ens192.100\nVLAN=yes\nPHYSDEV=ens192\nBRIDGE=br0\nONBOOT=yes\n",
            subnets: &[],
            ifaces: &[],
            want: "DEVICE=enp1s0.100\nVLAN=yes\nPHYSDEV=enp1s0\nBRIDGE=br0\nONBOOT=yes\n",
        },
        Case {
            what: "--ip on DHCP",
            system: ConfigSystem::Ifcfg,
            path: "/etc/sysconfig/network-scripts/ifcfg-ens224",
            input: "DEVICE=ens224\nBOOTPROTO=dhcp\nONBOOT=yes\n",
            subnets: &[],
            ifaces: &["ens224=10.2.0.6/24,gw=10.2.0.1,dns=10.2.0.53,dns=10.2.0.54"],
            want: "DEVICE=enp2s0\nBOOTPROTO=none\nONBOOT=yes\nIPADDR=10.2.0.6\nPREFIX=24\nGATEWAY=10.2.0.1\n\
                   DNS1=10.2.0.53\nDNS2=10.2.0.54\n",
        },
        Case {
            what: "--ip on static with NETMASK and one DNS",
            system: ConfigSystem::Ifcfg,
            path: "/etc/sysconfig/network-scripts/ifcfg-ens192",
            input: "DEVICE=ens192\nBOOTPROTO=static\nIPADDR=10.1.2.3\nNETMASK=255.255.255.0\nGATEWAY=10.1.2.1\nDNS1=10.1.0.53\n",
            subnets: &[],
            ifaces: &["ens192=10.2.0.5/16,gw=10.2.0.1,dns=10.2.0.53,dns=10.2.0.54"],
            want: "DEVICE=enp1s0\nBOOTPROTO=static\nIPADDR=10.2.0.5\nNETMASK=255.255.0.0\nGATEWAY=10.2.0.1\nDNS1=10.2.0.53\nDNS2=10.2.0.54\n",
        },
    ]);
    let e = ifcfg::transform(
        "/etc/sysconfig/network-scripts/ifcfg-ens192",
        IFCFG_STATIC,
        &plan(),
        &no_rules(),
    )
    .unwrap();
    assert_eq!(e.rename.as_deref(), Some("ifcfg-enp1s0"));
    let got = ifcfg::read("/etc/sysconfig/network-scripts/ifcfg-ens192", IFCFG_STATIC).unwrap();
    assert_eq!(got[0].name, "ens192");
    assert_eq!(got[0].mac.as_deref(), Some(OLD1));
    assert_eq!(got[0].addresses, vec!["10.1.2.3/24".parse().unwrap()]);
    assert_eq!(got[0].dns.len(), 2);
    let err = ifcfg::read("/ifcfg-eth0", "DEVICE=eth0\nif [ -x /bin/true ]; then\n").unwrap_err();
    assert_eq!(err.line, 2);
    let err = ifcfg::read("/ifcfg-eth0", "NAME=\"unclosed\n").unwrap_err();
    assert!(err.to_string().contains("unclosed quote"), "{err}");
}

// ---------------------------------------------------------------- refusals

#[test]
fn a_rule_that_yields_an_invalid_address_is_refused() {
    // 10.1.0.0/8 is a host of its /8; moved by a /16 rule it becomes 10.0.0.0, the /8's network.
    let r = rules(&["10.1.0.0/16=10.0.0.0/16"], &[]);
    for (system, path, text) in [
        (
            ConfigSystem::Ifupdown,
            "/etc/network/interfaces",
            "iface ens192 inet static\n address 10.1.0.0/8\n",
        ),
        (
            ConfigSystem::Netplan,
            "/etc/netplan/a.yaml",
            "network:\n  ethernets:\n    ens192:\n      addresses: [10.1.0.0/8]\n",
        ),
        (
            ConfigSystem::NetworkManager,
            "/a.nmconnection",
            "[ipv4]\naddress1=10.1.0.0/8\n",
        ),
        (
            ConfigSystem::Networkd,
            "/a.network",
            "[Network]\nAddress=10.1.0.0/8\n",
        ),
    ] {
        let err = transform_file(system, path, text, &plan(), &r).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("10.1.0.0/8 would become 10.0.0.0/8, the network address of its subnet"),
            "{msg}"
        );
        assert!(msg.contains(path) && msg.contains("line"), "{msg}");
    }
    // A gateway that would become the broadcast address of the rule's subnet.
    let r = rules(&["192.168.1.0/24=192.168.2.0/24"], &[]);
    let err =
        ifcfg::transform("/ifcfg-ens192", "GATEWAY=192.168.1.255\n", &plan(), &r).unwrap_err();
    assert!(
        err.to_string()
            .contains("the broadcast address of its subnet"),
        "{err}"
    );
}

#[test]
fn a_mapping_onto_a_missing_nic_is_refused() {
    let err = NicPlan::plan(
        &[source("ens192", OLD1)],
        &[target("enp1s0", NEW1)],
        &["ens192=enp7s0".parse().unwrap()],
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "map --nic ens192=enp7s0: the target has no NIC enp7s0 (it has: enp1s0); name one of its NICs"
    );
}

// ---------------------------------------------------------------- the whole root

#[test]
fn read_root_reads_the_known_paths() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let files = [
        ("etc/network/interfaces", IFUPDOWN_STATIC),
        ("etc/netplan/00-installer-config.yaml", NETPLAN_STATIC),
        (
            "etc/NetworkManager/system-connections/w.nmconnection",
            NM_STATIC,
        ),
        (
            "etc/systemd/network/10-lan.link",
            "[Match]\nMACAddress=00:50:56:aa:00:01\n[Link]\nName=ens192\n",
        ),
        ("etc/sysconfig/network-scripts/ifcfg-ens192", IFCFG_STATIC),
        (
            "etc/sysconfig/network-scripts/ifcfg-bad",
            "not an assignment\n",
        ),
        ("etc/netplan/notes.txt", "ignored"),
    ];
    for (rel, text) in files {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    std::os::unix::fs::symlink("/etc/passwd", root.join("etc/netplan/99-link.yaml")).unwrap();
    let got = read_root(root).unwrap();
    assert_eq!(got.files.len(), 5, "{:?}", got.files);
    assert_eq!(got.refused.len(), 2, "{:?}", got.refused);
    assert!(got
        .refused
        .iter()
        .any(|e| e.file == "/etc/sysconfig/network-scripts/ifcfg-bad" && e.line == 1));
    assert!(got
        .refused
        .iter()
        .any(|e| e.file == "/etc/netplan/99-link.yaml"));
    got.config.check().unwrap();
    let systems: std::collections::BTreeSet<ConfigSystem> =
        got.config.interfaces.iter().map(|i| i.system).collect();
    assert_eq!(systems.len(), 5);
    // Source interfaces from all files map onto the target in order, one per name.
    let p = NicPlan::plan(
        &got.config.interfaces,
        &[target("enp1s0", NEW1), target("enp2s0", NEW2)],
        &[],
    )
    .unwrap();
    assert_eq!(p.pairs[0].old, "ens192");
    assert_eq!(p.pairs[0].old_mac.as_deref(), Some(OLD1));
}

// ---------------------------------------------------------------- proptests

const SAMPLES: &[(ConfigSystem, &str, &str)] = &[
    (
        ConfigSystem::Ifupdown,
        "/etc/network/interfaces",
        IFUPDOWN_STATIC,
    ),
    (
        ConfigSystem::Ifupdown,
        "/etc/network/interfaces.d/b",
        IFUPDOWN_BOND_VLAN_BRIDGE,
    ),
    (
        ConfigSystem::Netplan,
        "/etc/netplan/00.yaml",
        NETPLAN_STATIC,
    ),
    (ConfigSystem::Netplan, "/etc/netplan/01.yaml", NETPLAN_BOND),
    (
        ConfigSystem::NetworkManager,
        "/etc/NetworkManager/system-connections/a.nmconnection",
        NM_STATIC,
    ),
    (
        ConfigSystem::Ifcfg,
        "/etc/sysconfig/network-scripts/ifcfg-ens192",
        IFCFG_STATIC,
    ),
];

const SYSTEMS: [(ConfigSystem, &str); 6] = [
    (ConfigSystem::Ifupdown, "/etc/network/interfaces"),
    (ConfigSystem::Netplan, "/etc/netplan/a.yaml"),
    (
        ConfigSystem::NetworkManager,
        "/etc/NetworkManager/system-connections/a.nmconnection",
    ),
    (ConfigSystem::Networkd, "/etc/systemd/network/a.network"),
    (ConfigSystem::Networkd, "/etc/systemd/network/a.link"),
    (
        ConfigSystem::Ifcfg,
        "/etc/sysconfig/network-scripts/ifcfg-ens192",
    ),
];

/// A plan that maps every interface onto itself (same name, same MAC).
fn identity_plan() -> NicPlan {
    NicPlan::plan(
        &[source("ens192", OLD1), source("ens224", OLD2)],
        &[target("ens192", OLD1), target("ens224", OLD2)],
        &[],
    )
    .unwrap()
}

#[test]
fn unchanged_flow_lists_keep_their_spacing() {
    // Found by the network_config fuzz target: an item that is no address, and a space before
    // the closing bracket, were respaced although nothing in the list changed.
    let text = "network:\n  ethernets:\n    ens192:\n      addresses: [10.1.2.3&24 ]\n      \
                nameservers:\n        addresses: [ 10.9.0.53,8.8.8.8 ]\n";
    for p in [identity_plan(), plan()] {
        let e = netplan::transform("/etc/netplan/a.yaml", text, &p, &no_rules()).unwrap();
        assert_eq!(e.text, text.replace("ens192", &p.pairs[0].new));
    }
}

#[test]
fn identity_plan_changes_no_sample() {
    for (system, path, text) in SAMPLES {
        let e = transform_file(*system, path, text, &identity_plan(), &no_rules()).unwrap();
        assert_eq!(e.text, *text, "{path}");
        assert_eq!(e.rename, None);
        assert!(e.edits.is_empty(), "{path}: {:?}", e.edits);
    }
}

/// Lines that look like the systems' syntax, mixed with anything.
fn config_text() -> impl Strategy<Value = String> {
    let line = prop_oneof![
        Just("iface ens192 inet static".to_owned()),
        Just("auto ens192 ens224".to_owned()),
        Just("  address 10.1.2.3/24".to_owned()),
        Just("network:".to_owned()),
        Just("  ethernets:".to_owned()),
        Just("    ens192:".to_owned()),
        Just("      addresses: [10.1.2.3/24, \"fd00::1/64\"]".to_owned()),
        Just("      - to: default".to_owned()),
        Just("        via: 10.1.2.1".to_owned()),
        Just("[Match]".to_owned()),
        Just("[Network]".to_owned()),
        Just("[ipv4]".to_owned()),
        Just("MACAddress=00:50:56:aa:00:01".to_owned()),
        Just("mac-address=00:50:56:AA:00:01".to_owned()),
        Just("HWADDR=00:50:56:aa:00:01".to_owned()),
        Just("DEVICE=ens192".to_owned()),
        Just("BOOTPROTO=dhcp".to_owned()),
        Just("method=auto".to_owned()),
        Just("DHCP=yes".to_owned()),
        Just("dhcp4: true".to_owned()),
        "[ -~\t]{0,40}",
        "[a-zA-Z0-9 :=./\\[\\]#\"'{}_-]{0,40}",
        any::<String>().prop_map(|s| s.chars().take(40).collect()),
    ];
    (
        prop::collection::vec(line, 0..24),
        prop::sample::select(vec!["\n", "\r\n"]),
    )
        .prop_map(|(lines, eol)| lines.join(eol))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn nothing_panics_on_arbitrary_text(text in config_text()) {
        let r = rules(&["10.1.0.0/16=10.2.0.0/16"], &["ens192=10.3.0.5/24,gw=10.3.0.1,dns=10.3.0.53"]);
        for (system, path) in SYSTEMS {
            if let Ok(ifaces) = read_file(system, path, &text) {
                let cfg = NetworkConfig { interfaces: ifaces };
                prop_assert!(cfg.check().is_ok());
            }
            let _ = transform_file(system, path, &text, &plan(), &r);
            let _ = transform_file(system, path, &text, &plan(), &no_rules());
        }
    }

    #[test]
    fn identity_plan_without_rules_keeps_every_byte(text in config_text()) {
        for (system, path) in SYSTEMS {
            if let Ok(e) = transform_file(system, path, &text, &identity_plan(), &no_rules()) {
                prop_assert_eq!(&e.text, &text, "{}", path);
                prop_assert!(e.rename.is_none());
            }
        }
    }
}
