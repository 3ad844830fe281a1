//! The source's network configuration, recorded in the snapshot's manifest (docs/network.md,
//! "Wiring"): which system's to read ([`NetworkChoice`]: `--network
//! auto|none|ROOT`, the service's `network` key), its config files
//! (`ferry_fixup::network::read_root`), and on a live system the kernel's view of its NICs
//! (`ferry_sys::net`) merged in ([`merge`]).
//!
//! Never fails a backup: a file that cannot be read, a root that cannot be listed or a result
//! out of bounds is logged as a warning and left out (at worst nothing is recorded).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ferry_engine::backup::DiskSpec;
use ferry_format::agent::normalize_mac;
use ferry_format::network::{ConfigSystem, Interface, InterfaceKind, NetworkConfig};
use ferry_sys::net::SysNic;

/// Whose network configuration a backup records.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum NetworkChoice {
    /// The system the agent runs on (`/` and the live kernel's NICs) when a source is a
    /// block device (this server's own disks); nothing when every source is an image file.
    #[default]
    Auto,
    /// Nothing.
    None,
    /// The config files under a mounted root (an offline image's system), without live
    /// kernel data.
    Root(PathBuf),
}

impl FromStr for NetworkChoice {
    type Err = String;
    fn from_str(text: &str) -> Result<NetworkChoice, String> {
        match text {
            "auto" => Ok(NetworkChoice::Auto),
            "none" => Ok(NetworkChoice::None),
            "" => {
                Err("give auto, none, or the directory where the source's root is mounted".into())
            }
            root => Ok(NetworkChoice::Root(PathBuf::from(root))),
        }
    }
}

impl fmt::Display for NetworkChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetworkChoice::Auto => f.write_str("auto"),
            NetworkChoice::None => f.write_str("none"),
            NetworkChoice::Root(r) => write!(f, "{}", r.display()),
        }
    }
}

/// The live system's root and sysfs.
const LIVE_ROOT: &str = "/";
const LIVE_SYSFS: &str = "/sys";

/// The network configuration to record for a backup of `disks`, as `choice` asks; `None`
/// when nothing is to be (or could be) recorded. Logs what it did.
pub fn gather(choice: &NetworkChoice, disks: &[DiskSpec]) -> Option<NetworkConfig> {
    let config = match choice {
        NetworkChoice::None => return None,
        NetworkChoice::Auto if !disks.iter().any(|d| is_block_device(&d.path)) => {
            tracing::info!(
                "network: not recorded (the sources are image files, not this system's \
                 disks; to record an image's, mount its root and name that directory with \
                 --network, or the service's `network` key)"
            );
            return None;
        }
        NetworkChoice::Auto => live(Path::new(LIVE_ROOT), Path::new(LIVE_SYSFS)),
        NetworkChoice::Root(root) => offline(root)?,
    };
    bounded(config)
}

/// This system's configuration: the files under `root` merged with the NICs of `sysfs`
/// ([`merge`]). When the files cannot be read at all, the kernel's NICs alone.
pub fn live(root: &Path, sysfs: &Path) -> NetworkConfig {
    let files = config_files(root).unwrap_or_default();
    merge(files, &ferry_sys::net::physical_nics(sysfs))
}

/// The files under a mounted root only; `None` when it is not a directory or cannot be read.
pub fn offline(root: &Path) -> Option<NetworkConfig> {
    if !root.is_dir() {
        tracing::warn!(
            "network: not recorded: {} is not a directory; mount the source's root there, \
             or ask for none (--network, or the service's `network` key)",
            root.display()
        );
        return None;
    }
    config_files(root)
}

/// `read_root`, with each refused file logged.
fn config_files(root: &Path) -> Option<NetworkConfig> {
    match ferry_fixup::network::read_root(root) {
        Ok(read) => {
            for e in &read.refused {
                tracing::warn!("network: file left out of the recorded configuration: {e}");
            }
            Some(read.config)
        }
        Err(e) => {
            tracing::warn!(
                "network: cannot read the network config files under {}: {e}; the snapshot \
                 records {} (the backup goes on)",
                root.display(),
                if root == Path::new(LIVE_ROOT) {
                    "the kernel's NICs only"
                } else {
                    "no network configuration"
                }
            );
            None
        }
    }
}

/// The kernel's view merged into the files' (`nics`: physical NICs, `lo` and virtual devices
/// left out). Each config interface of a NIC's name (or, when no interface has that name, an
/// Ethernet interface that matches the NIC's MAC) gets the NIC's MAC, driver and PCI path
/// where the file did not say them. NICs no file names follow the files' interfaces, sorted
/// by name, as [`ConfigSystem::Unconfigured`] Ethernet entries: the mapping sees every NIC.
pub fn merge(mut config: NetworkConfig, nics: &[SysNic]) -> NetworkConfig {
    let mut unnamed = Vec::new();
    for nic in nics {
        let mac = nic.address.as_deref().and_then(|a| normalize_mac(a).ok());
        let mut named = fill(&mut config, nic, &mac, |i| i.name == nic.name);
        if !named {
            if let Some(m) = &mac {
                named = fill(&mut config, nic, &mac, |i| {
                    i.kind == InterfaceKind::Ethernet && i.mac.as_ref() == Some(m)
                });
            }
        }
        if !named {
            unnamed.push(Interface {
                name: nic.name.clone(),
                kind: InterfaceKind::Ethernet,
                mac,
                driver: nic.driver.clone(),
                pci_path: nic.pci_path.clone(),
                system: ConfigSystem::Unconfigured,
                file: String::new(),
                ..Interface::default()
            });
        }
    }
    unnamed.sort_by(|a, b| a.name.cmp(&b.name));
    config.interfaces.extend(unnamed);
    config
}

/// Fills what the files left out in every interface `pick` chooses; whether there was one.
fn fill(
    config: &mut NetworkConfig,
    nic: &SysNic,
    mac: &Option<String>,
    pick: impl Fn(&Interface) -> bool,
) -> bool {
    let mut any = false;
    for i in config.interfaces.iter_mut().filter(|i| pick(i)) {
        any = true;
        i.mac = i.mac.take().or_else(|| mac.clone());
        i.driver = i.driver.take().or_else(|| nic.driver.clone());
        i.pci_path = i.pci_path.take().or_else(|| nic.pci_path.clone());
    }
    any
}

/// `config` when it is within the manifest's bounds and not empty; else `None`, logged.
fn bounded(config: NetworkConfig) -> Option<NetworkConfig> {
    if config.interfaces.is_empty() {
        tracing::info!("network: not recorded (no interface found)");
        return None;
    }
    match config.check() {
        Ok(()) => {
            let unconfigured = config
                .interfaces
                .iter()
                .filter(|i| i.system == ConfigSystem::Unconfigured)
                .count();
            tracing::info!(
                "network: recording {} interface(s), {unconfigured} of them named by no config \
                 file",
                config.interfaces.len()
            );
            Some(config)
        }
        Err(e) => {
            tracing::warn!(
                "network: not recorded: {e}; the snapshot is stored without its network \
                 configuration (the restore's network fix-up will have nothing to map)"
            );
            None
        }
    }
}

fn is_block_device(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_block_device())
}

#[cfg(test)]
mod tests;
