//! Windows' network settings read from the two real SYSTEM hives, checked against hivex's own
//! tools, and the Windows network fix-up on a Windows-shaped tree: the mapping, the job's
//! rules, the script for the static adapters, the report's checks.

mod common;

use common::*;
use ferry_fixup::hive::Hive;
use ferry_fixup::linux::NetworkParams;
use ferry_fixup::network::windows::{self, NET_CLASS};
use ferry_fixup::network::{NetworkRules, TargetNic};
use ferry_format::agent::JobNetwork;
use ferry_format::network::ConfigSystem;

fn nic(name: &str, mac: &str) -> TargetNic {
    TargetNic {
        name: name.into(),
        mac: mac.into(),
        driver: Some("netkvm".into()),
        pci_path: None,
    }
}

#[test]
fn adapters_are_read_from_the_real_hives() {
    let dir = tempfile::tempdir().unwrap();
    let legacy = testdata_to(dir.path(), "SYSTEM-legacy", "legacy");
    let h = Hive::from_bytes(std::fs::read(&legacy).unwrap()).unwrap();
    let ccs = ferry_fixup::windows::current_control_set(&h).unwrap();
    let got = windows::read(&h, &ccs).unwrap();
    let shown: Vec<String> = got
        .iter()
        .map(|i| {
            format!(
                "{} dhcp={} {:?} gw={:?} dns={:?}",
                i.name,
                i.dhcp4,
                i.addresses
                    .iter()
                    .map(|a| a.to_string())
                    .collect::<Vec<_>>(),
                i.gateways.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
                i.dns.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            )
        })
        .collect();
    assert_eq!(
        shown,
        [
            r#"Local Area Connection dhcp=false ["192.168.1.123/24"] gw=["192.168.1.1"] dns=["192.168.1.112"]"#,
            r#"Local Area Connection 2 dhcp=false ["10.3.58.5/24"] gw=["10.3.58.1"] dns=["10.3.58.4"]"#,
        ]
    );
    // Each as hivex reads it: the connection name and the DNS server of its GUID's keys.
    for i in &got {
        assert_eq!(i.system, ConfigSystem::WindowsRegistry);
        let guid = i.file.rsplit('\\').next().unwrap();
        let conn = format!("\\{ccs}\\Control\\Network\\{NET_CLASS}\\{guid}\\Connection");
        assert_eq!(hivexget(&legacy, &conn, "Name"), i.name);
        let tcpip = format!("\\{ccs}\\Services\\Tcpip\\Parameters\\Interfaces\\{guid}");
        assert_eq!(
            hivexget(&legacy, &tcpip, "NameServer"),
            i.dns[0].to_string()
        );
        assert_eq!(hivexget(&legacy, &tcpip, "EnableDHCP"), "0");
        assert!(i.driver.is_some(), "{i:?}");
    }

    let modern = testdata_to(dir.path(), "SYSTEM-modern", "modern");
    let h = Hive::from_bytes(std::fs::read(&modern).unwrap()).unwrap();
    let ccs = ferry_fixup::windows::current_control_set(&h).unwrap();
    let got = windows::read(&h, &ccs).unwrap();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!((got[0].name.as_str(), got[0].dhcp4), ("Ethernet", true));
    assert!(got[0].addresses.is_empty());
}

#[test]
fn the_static_settings_go_to_a_script_for_the_new_nics() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    testdata_to(root, "SYSTEM-legacy", "Windows/System32/config/SYSTEM");
    let rules = NetworkRules::parse(&JobNetwork {
        nic: vec![],
        reip: vec!["10.3.58.0/24=10.9.58.0/24".into()],
        ip: vec!["Local Area Connection=192.168.7.9/24,gw=192.168.7.1".into()],
    })
    .unwrap();
    let n = NetworkParams {
        targets: vec![
            nic("Ethernet", "52:54:00:00:00:0a"),
            nic("Ethernet 2", "52:54:00:00:00:0b"),
        ],
        rules,
    };
    let system = root.join("Windows/System32/config/SYSTEM");
    let original = std::fs::read(&system).unwrap();
    let (checks, changes) = windows::fixup(root, &n).unwrap();
    assert!(!changes.is_empty());
    let script = std::fs::read_to_string(root.join("ferry/network.cmd")).unwrap();
    assert!(
        script.starts_with("@echo off\r\n") && !script.replace("\r\n", "").contains('\n'),
        "CRLF: {script:?}"
    );
    let lines: Vec<&str> = script
        .lines()
        .filter(|l| l.contains(" call "))
        .map(|l| l.trim_end_matches(" >> %LOG% 2>&1"))
        .collect();
    let w =
        |mac: &str| format!("wmic nicconfig where \"MACAddress='{mac}' and IPEnabled=TRUE\" call");
    let (a, b) = (w("52:54:00:00:00:0A"), w("52:54:00:00:00:0B"));
    assert_eq!(
        lines,
        [
            format!("{a} EnableStatic (\"192.168.7.9\"),(\"255.255.255.0\")"),
            format!("{a} SetGateways (\"192.168.7.1\"),(1)"),
            format!("{a} SetDNSServerSearchOrder (\"192.168.1.112\")"),
            format!("{b} EnableStatic (\"10.9.58.5\"),(\"255.255.255.0\")"),
            format!("{b} SetGateways (\"10.9.58.1\"),(1)"),
            format!("{b} SetDNSServerSearchOrder (\"10.9.58.4\")"),
        ]
    );
    // Each NIC is waited for by its MAC, every goto has its label, no line but the log's
    // redirects, and the script removes its service only when every NIC was found.
    for n in 1..=2 {
        for label in ["wait", "set", "next"] {
            assert_eq!(
                script
                    .lines()
                    .filter(|l| *l == format!(":{label}{n}"))
                    .count(),
                1,
                ":{label}{n} in {script}"
            );
        }
    }
    for l in script.lines() {
        let rest = l
            .replace(" >> %LOG% 2>&1", "")
            .replace(" >nul", "")
            .replace("2>nul", "");
        assert!(!rest.contains('>'), "a stray redirection: {l}");
    }
    assert!(script.contains("find \"52:54:00:00:00:0B\" >nul && goto set2"));
    assert!(script.contains("set MISSING=1& goto next2)"));
    let tail: Vec<&str> = script.lines().rev().take(3).collect();
    assert!(
        tail[1].starts_with("sc.exe delete FerryNetwork"),
        "{tail:?}"
    );
    assert!(tail[2].starts_with("if defined MISSING"), "{tail:?}");

    // The first-boot service, as hivex reads it; the original hive kept aside.
    let h = Hive::from_bytes(std::fs::read(&system).unwrap()).unwrap();
    let ccs = ferry_fixup::windows::current_control_set(&h).unwrap();
    let svc = format!("\\{ccs}\\Services\\FerryNetwork");
    let svc = svc.as_str();
    assert_eq!(hivexget(&system, svc, "Type"), "16");
    assert_eq!(hivexget(&system, svc, "Start"), "2");
    assert_eq!(hivexget(&system, svc, "DelayedAutostart"), "1");
    assert_eq!(hivexget(&system, svc, "ErrorControl"), "0");
    assert_eq!(hivexget(&system, svc, "ObjectName"), "LocalSystem");
    assert_eq!(
        hivexget(&system, svc, "ImagePath"),
        "%SystemRoot%\\System32\\cmd.exe /c start \"ferry\" /min %SystemRoot%\\System32\\cmd.exe /c %SystemRoot%\\..\\ferry\\network.cmd"
    );
    let kept = root.join("Windows/System32/config/SYSTEM.ferry-orig");
    assert_eq!(std::fs::read(kept).unwrap(), original);

    assert_eq!(checks.len(), 2);
    assert!(checks.iter().all(|c| !c.ok && !c.critical), "{checks:?}");
    assert!(
        checks[1]
            .detail
            .contains("Local Area Connection 2 -> Ethernet 2: 10.9.58.5/24"),
        "{checks:?}"
    );
    assert!(checks[1].detail.contains("network.cmd"), "{checks:?}");

    // A rule onto a NIC the machine lacks: refused, nothing written.
    let other = tempfile::tempdir().unwrap();
    testdata_to(
        other.path(),
        "SYSTEM-legacy",
        "Windows/System32/config/SYSTEM",
    );
    let bad = NetworkParams {
        targets: vec![nic("Ethernet", "52:54:00:00:00:0a")],
        rules: NetworkRules::parse(&JobNetwork {
            nic: vec!["Local Area Connection=eth9".into()],
            ..JobNetwork::default()
        })
        .unwrap(),
    };
    let err = windows::fixup(other.path(), &bad).unwrap_err().to_string();
    assert!(
        err.contains("the target has no NIC eth9 (it has: Ethernet)"),
        "{err}"
    );
    assert!(!other.path().join("ferry").exists());
}

#[test]
fn dhcp_adapters_need_no_script_and_no_service() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let system = testdata_to(root, "SYSTEM-modern", "Windows/System32/config/SYSTEM");
    let original = std::fs::read(&system).unwrap();
    let n = NetworkParams {
        targets: vec![nic("Ethernet", "52:54:00:00:00:0a")],
        rules: NetworkRules::default(),
    };
    let (checks, changes) = windows::fixup(root, &n).unwrap();
    assert!(changes.is_empty(), "{changes:?}");
    assert_eq!(checks.len(), 1);
    assert!(checks[0].ok, "{checks:?}");
    assert!(!root.join("ferry").exists());
    assert_eq!(std::fs::read(&system).unwrap(), original);
}
