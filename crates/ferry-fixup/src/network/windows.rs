//! Windows: each network adapter's TCP/IP parameters from an offline SYSTEM hive
//! (`Services\Tcpip\Parameters\Interfaces\{GUID}`), named as Windows shows it (the connection
//! name under `Control\Network\{4D36E972-...}\{GUID}\Connection`), and a script that applies
//! the static ones to the target's NICs.
//!
//! The new NIC's interface GUID is assigned when Windows installs its driver on the first
//! boot, so the settings cannot be moved to it offline. Instead [`apply_script`] writes a
//! `.cmd` that waits for each target NIC by its MAC (`wmic nicconfig`, present from Windows 7
//! to Server 2022) and sets its address, gateway and DNS servers, and [`fixup`] registers a
//! delayed auto-start service ([`SERVICE`]) that runs it once on the first boot and removes
//! itself (docs/network.md, "Windows").

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};

use ferry_format::network::{ConfigSystem, Interface, InterfaceKind, IpCidr};

use super::rules::IfacePreview;
use super::NicPlan;
use crate::hive::{Hive, HiveError, RegValue};

/// The network adapter device class.
pub const NET_CLASS: &str = "{4D36E972-E325-11CE-BFC1-08002BE10318}";
/// `Characteristics` bit of a physical adapter (NCF_PHYSICAL).
const NCF_PHYSICAL: u32 = 0x4;
/// Most adapters read (a hive is hostile input).
const MAX_ADAPTERS: usize = 64;

/// The physical adapters of the control set `ccs` with their TCP/IP parameters, in the order
/// of their class entries (`Control\Class\{NET_CLASS}\0000`, `0001`, ...: install order).
pub fn read(h: &Hive, ccs: &str) -> Result<Vec<Interface>, HiveError> {
    let class = format!("{ccs}\\Control\\Class\\{NET_CLASS}");
    let Some(class_key) = h.open(&class)? else {
        return Ok(Vec::new());
    };
    let mut entries: Vec<String> = h
        .subkeys(class_key)?
        .into_iter()
        .map(|k| h.key_name(k))
        .collect::<Result<_, _>>()?;
    entries.retain(|n| n.len() == 4 && n.bytes().all(|b| b.is_ascii_digit()));
    entries.sort();
    let mut out = Vec::new();
    for e in entries {
        let key = format!("{class}\\{e}");
        let physical = h
            .get(&key, "Characteristics")?
            .and_then(|v| v.as_dword())
            .is_some_and(|c| c & NCF_PHYSICAL != 0);
        let guid = h.get(&key, "NetCfgInstanceId")?;
        let (true, Some(guid)) = (physical, guid.as_ref().and_then(RegValue::as_str)) else {
            continue;
        };
        if out.len() == MAX_ADAPTERS {
            break;
        }
        out.push(adapter(h, ccs, &key, guid)?);
    }
    Ok(out)
}

fn adapter(h: &Hive, ccs: &str, class_key: &str, guid: &str) -> Result<Interface, HiveError> {
    let tcpip = format!("{ccs}\\Services\\Tcpip\\Parameters\\Interfaces\\{guid}");
    let conn = format!("{ccs}\\Control\\Network\\{NET_CLASS}\\{guid}\\Connection");
    let text = |v: Option<RegValue>| v.and_then(|v| v.as_str().map(str::to_owned));
    let list = |v: Option<RegValue>| match v {
        Some(RegValue::MultiSz(l)) => l,
        Some(RegValue::Sz(s)) => s
            .split([',', ' '])
            .filter(|x| !x.is_empty())
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    };
    let name = text(h.get(&conn, "Name")?).unwrap_or_else(|| guid.to_owned());
    let driver = text(h.get(&format!("{class_key}\\Ndi"), "Service")?)
        .or_else(|| text(h.get(class_key, "DriverDesc").ok().flatten()));
    let ips = list(h.get(&tcpip, "IPAddress")?);
    let masks = list(h.get(&tcpip, "SubnetMask")?);
    let addresses = ips
        .iter()
        .zip(masks.iter().chain(std::iter::repeat(&String::new())))
        .filter_map(|(ip, mask)| {
            let ip: Ipv4Addr = ip.parse().ok()?;
            let prefix = mask.parse::<Ipv4Addr>().ok().and_then(mask_prefix)?;
            (!ip.is_unspecified()).then(|| IpCidr::new(IpAddr::V4(ip), prefix))?
        })
        .collect();
    let ips_of = |v: Vec<String>| -> Vec<IpAddr> {
        v.iter()
            .filter_map(|s| s.parse::<IpAddr>().ok())
            .filter(|ip| !ip.is_unspecified())
            .take(ferry_format::network::MAX_ADDRESSES)
            .collect()
    };
    Ok(Interface {
        name: name.chars().take(ferry_format::network::MAX_NAME).collect(),
        kind: InterfaceKind::Ethernet,
        driver: driver.map(|d| d.chars().take(ferry_format::network::MAX_NAME).collect()),
        addresses,
        dhcp4: h.get(&tcpip, "EnableDHCP")?.and_then(|v| v.as_dword()) == Some(1),
        gateways: ips_of(list(h.get(&tcpip, "DefaultGateway")?)),
        dns: ips_of(list(h.get(&tcpip, "NameServer")?)),
        system: ConfigSystem::WindowsRegistry,
        file: format!("HKLM\\SYSTEM\\{tcpip}"),
        ..Interface::default()
    })
}

/// `255.255.255.0` → 24; `None` for a mask that is not contiguous ones.
fn mask_prefix(m: Ipv4Addr) -> Option<u8> {
    let bits = u32::from(m);
    let ones = bits.leading_ones();
    (bits.checked_shl(ones).unwrap_or(0) == 0).then_some(ones as u8)
}

fn mask_of(prefix: u8) -> Ipv4Addr {
    Ipv4Addr::from(u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0))
}

/// A `.cmd` that gives each mapped NIC the static IPv4 settings its source adapter had (after
/// the job's rules), found by its MAC; `None` when no adapter has static settings. `shown`
/// is [`super::preview`] of the adapters; `source` their recorded gateways and DNS servers.
pub fn apply_script(
    source: &[Interface],
    shown: &[IfacePreview],
    plan: &NicPlan,
    rules: &super::ReipRules,
) -> Option<String> {
    let mut body = String::new();
    let mut n = 0;
    for (i, p) in source.iter().zip(shown) {
        let v4: Vec<&IpCidr> = p.addresses.iter().filter(|a| a.addr().is_ipv4()).collect();
        let Some(pair) = plan.pair(&i.name) else {
            continue;
        };
        if p.dhcp4 || v4.is_empty() {
            continue;
        }
        n += 1;
        let moved = |ip: &IpAddr| rules.map_ip(*ip).ok().flatten().unwrap_or(*ip);
        let rule = rules.for_iface(&i.name, Some(&pair.new), true);
        let gateways: Vec<IpAddr> = match rule.and_then(|r| r.gateway) {
            Some(g) => vec![g],
            None => i
                .gateways
                .iter()
                .filter(|g| g.is_ipv4())
                .map(moved)
                .collect(),
        };
        let dns: Vec<IpAddr> = match rule.filter(|r| !r.dns.is_empty()) {
            Some(r) => r.dns.clone(),
            None => i.dns.iter().filter(|d| d.is_ipv4()).map(moved).collect(),
        };
        let quoted = |v: Vec<String>| {
            v.iter()
                .map(|s| format!("\"{s}\""))
                .collect::<Vec<_>>()
                .join(",")
        };
        let mac = cmd_safe(&pair.new_mac.to_ascii_uppercase());
        let name = cmd_safe(&i.name);
        let nic = format!("nicconfig where \"MACAddress='{mac}' and IPEnabled=TRUE\"");
        let w = format!("wmic {nic} call");
        let log = ">> %LOG% 2>&1";
        // The NIC appears when PnP has installed its driver, possibly after this starts:
        // wait for it, up to WAIT_TRIES times 5 s.
        let _ = writeln!(body, "rem {name} onto the NIC with MAC {mac}");
        let _ = writeln!(body, "set TRIES=0");
        let _ = writeln!(body, ":wait{n}");
        let _ = writeln!(
            body,
            "wmic {nic} get MACAddress 2>nul | find \"{mac}\" >nul && goto set{n}"
        );
        let _ = writeln!(body, "set /a TRIES+=1");
        let _ = writeln!(
            body,
            "if %TRIES% GEQ {WAIT_TRIES} (echo no NIC with MAC {mac} after %TRIES% tries: {name} not set {log}& set MISSING=1& goto next{n})"
        );
        let _ = writeln!(body, "ping -n 6 127.0.0.1 >nul");
        let _ = writeln!(body, "goto wait{n}");
        let _ = writeln!(body, ":set{n}");
        let _ = writeln!(body, "echo %DATE% %TIME% {name} onto {mac} {log}");
        let _ = writeln!(
            body,
            "{w} EnableStatic ({}),({}) {log}",
            quoted(v4.iter().map(|a| a.addr().to_string()).collect()),
            quoted(v4.iter().map(|a| mask_of(a.prefix()).to_string()).collect()),
        );
        if !gateways.is_empty() {
            let metrics = vec!["1".to_owned(); gateways.len()].join(",");
            let _ = writeln!(
                body,
                "{w} SetGateways ({}),({metrics}) {log}",
                quoted(gateways.iter().map(ToString::to_string).collect())
            );
        }
        if !dns.is_empty() {
            let _ = writeln!(
                body,
                "{w} SetDNSServerSearchOrder ({}) {log}",
                quoted(dns.iter().map(ToString::to_string).collect())
            );
        }
        let _ = writeln!(body, ":next{n}");
    }
    (!body.is_empty()).then(|| {
        let text = format!(
            "@echo off\n\
             rem Written by Ferry's fix-up (docs/network.md, \"Windows\"): the static IPv4 settings\n\
             rem of the source's adapters, for the NICs of this machine. Run once at the first boot\n\
             rem by the {SERVICE} service, which it then removes; or run it as Administrator.\n\
             setlocal\n\
             set LOG=\"%~dp0network.log\"\n\
             set MISSING=\n\
             echo %DATE% %TIME% start {log}\n\
             {body}\
             if defined MISSING (echo %DATE% %TIME% a NIC was missing: {SERVICE} kept for the next boot {log}& exit /b 1)\n\
             sc.exe delete {SERVICE} {log}\n\
             echo %DATE% %TIME% done {log}\n",
            log = ">> %LOG% 2>&1",
        );
        text.replace('\n', "\r\n")
    })
}

/// How many times (5 s apart) the script looks for a NIC before giving up until the next boot.
const WAIT_TRIES: u32 = 120;

/// The first-boot service that runs the script: `cmd.exe` is no service program, so it
/// `start`s the script in its own process, which outlives the service manager's 30 s wait.
pub const SERVICE: &str = "FerryNetwork";

/// Registers [`SERVICE`]: a delayed auto-start service (after the boot's rush, when PnP has
/// usually installed the new NIC) whose command line `start`s the script in its own console
/// process; its failure to answer the service manager is ignored (`ErrorControl` 0).
fn add_service(
    ed: &mut crate::windows::registry::HiveEdit,
    ccs: &str,
) -> Result<(), crate::FixupError> {
    let key = format!("{ccs}\\Services\\{SERVICE}");
    let cmd = "%SystemRoot%\\System32\\cmd.exe";
    // %SystemRoot%\.. is the Windows volume's root, whatever its drive letter.
    let image =
        format!("{cmd} /c start \"ferry\" /min {cmd} /c %SystemRoot%\\..\\ferry\\network.cmd");
    ed.set(&key, "Type", RegValue::Dword(0x10))?;
    ed.set(&key, "Start", RegValue::Dword(2))?;
    ed.set(&key, "DelayedAutostart", RegValue::Dword(1))?;
    ed.set(&key, "ErrorControl", RegValue::Dword(0))?;
    ed.set(&key, "ImagePath", RegValue::ExpandSz(image))?;
    ed.set(&key, "ObjectName", RegValue::Sz("LocalSystem".into()))?;
    ed.set(
        &key,
        "DisplayName",
        RegValue::Sz("Ferry: network settings of the migrated server".into()),
    )?;
    ed.set(
        &key,
        "Description",
        RegValue::Sz(
            "Runs C:\\ferry\\network.cmd once on the first boot after a Ferry restore, then removes itself."
                .into(),
        ),
    )
}

/// A name read from a hive, fit for a `rem` or `echo` line: anything `cmd` would interpret
/// (`& | < > ^ % ( ) "` ...) becomes `_`.
fn cmd_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, ' ' | '-' | '_' | '.' | ':' | '#') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Where [`fixup`] writes the script, relative to the Windows volume's root (`C:\ferry\`).
pub const SCRIPT: &str = "ferry/network.cmd";

/// The Windows part of the network fix-up: the adapters read from the SYSTEM hive under
/// `root`, mapped onto the target's NICs with the job's rules; for the static ones the script
/// written to [`SCRIPT`] and the [`SERVICE`] that runs it registered in the SYSTEM hive (the
/// changes made; none when every adapter is on DHCP); one report check per adapter.
/// Refused (nothing written) when a rule does not fit the adapters.
pub fn fixup(
    root: &std::path::Path,
    n: &crate::linux::NetworkParams,
) -> Result<(Vec<crate::report::Check>, Vec<crate::Change>), crate::FixupError> {
    use crate::fsutil::ci_resolve;
    use crate::FixupError;
    let path =
        ci_resolve(root, crate::windows::SYSTEM_HIVE).ok_or_else(|| FixupError::Missing {
            what: "the SYSTEM hive".into(),
            detail: format!(
                "no {} under {}",
                crate::windows::SYSTEM_HIVE,
                root.display()
            ),
        })?;
    let hive_err = |source| FixupError::Hive {
        path: path.clone(),
        source,
    };
    let h = Hive::from_bytes(crate::fsutil::read(&path)?).map_err(hive_err)?;
    let ccs = crate::windows::current_control_set(&h).map_err(hive_err)?;
    let config = ferry_format::network::NetworkConfig {
        interfaces: read(&h, &ccs).map_err(hive_err)?,
    };
    let plan = n.rules.check(&config, &n.targets)?;
    let shown = super::preview(&config, &plan, &n.rules)?;
    let script = apply_script(&config.interfaces, &shown, &plan, &n.rules.reip);
    let mut changes = Vec::new();
    if let Some(text) = &script {
        let dir = root.join("ferry");
        if dir.symlink_metadata().is_ok_and(|m| !m.is_dir()) {
            return Err(FixupError::Transform {
                what: format!("write {}", dir.display()),
                detail: "it exists and is not a directory: move it aside".into(),
            });
        }
        std::fs::create_dir_all(&dir).map_err(FixupError::io("create", &dir))?;
        let file = root.join(SCRIPT);
        crate::fsutil::write_atomic(&file, text.as_bytes())?;
        changes.push(crate::Change::edit(
            &file,
            "write the first-boot network script",
            None,
            Some(format!("{} bytes", text.len())),
        ));
        // The script first, then the service that names it.
        let mut ed = crate::windows::registry::HiveEdit::new(h, path.clone());
        add_service(&mut ed, &ccs)?;
        crate::fsutil::backup_once(&path, crate::windows::HIVE_BACKUP_SUFFIX)?;
        crate::fsutil::write_atomic(&path, &ed.hive.to_bytes())?;
        changes.extend(ed.changes);
    }
    let mut checks = Vec::new();
    for (i, p) in config.interfaces.iter().zip(&shown) {
        let pair = plan.pair(&i.name);
        let (ok, detail) = match pair {
            None => (false, format!("{p}")),
            Some(pair) if p.dhcp4 || p.addresses.is_empty() => (
                true,
                format!(
                    "{}: DHCP on this machine's NIC {} ({}); Windows names its new adapter on the first boot",
                    i.name, pair.new, pair.new_mac
                ),
            ),
            Some(pair) => (
                false,
                format!(
                    "{p}; set on the first boot by the {SERVICE} service (C:\\ferry\\network.cmd \
                     on the NIC with MAC {}, log C:\\ferry\\network.log): not proven on a Windows \
                     guest here, so check the address after the boot and, if it is not set, run \
                     the script as Administrator",
                    pair.new_mac
                ),
            ),
        };
        checks.push(crate::report::Check {
            name: format!("network {}", i.name),
            ok,
            critical: false,
            detail,
        });
    }
    Ok((checks, changes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hive_names_cannot_inject_commands() {
        assert_eq!(
            cmd_safe("Local Area Connection 2"),
            "Local Area Connection 2"
        );
        assert_eq!(cmd_safe("52:54:00:AB:CD:EF"), "52:54:00:AB:CD:EF");
        assert_eq!(
            cmd_safe("x & del /q C:\\* | %PATH% (a) ^\"b\"<>"),
            "x _ del _q C:__ _ _PATH_ _a_ __b___"
        );
    }

    #[test]
    fn masks_and_prefixes() {
        for (m, p) in [
            ("255.255.255.0", Some(24)),
            ("255.255.254.0", Some(23)),
            ("0.0.0.0", Some(0)),
            ("255.255.255.255", Some(32)),
            ("255.0.255.0", None),
        ] {
            assert_eq!(mask_prefix(m.parse().unwrap()), p, "{m}");
            if let Some(p) = p {
                assert_eq!(mask_of(p).to_string(), m);
            }
        }
    }
}
