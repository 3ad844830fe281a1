//! The snapshot manifest: what a snapshot holds and what restore and fix-up need to know about it.
//!
//! A manifest is JSON. The appliance signs the exact bytes it stores (see [`crate::signing`]) and
//! every disk's index is bound to it by its BLAKE3 digest, so a verified manifest vouches for every
//! index and, through the indexes' chunk ids, for every byte of the snapshot.

use serde::{Deserialize, Serialize};

use crate::chunk::{check_chunk_size, ChunkId};
pub use crate::consistency::Consistency;
use crate::layout::DiskLayout;
use crate::names::{check_name, NameKind};
use crate::network::NetworkConfig;
use crate::FormatError;

/// Version of the manifest format. Readers refuse versions they do not know.
pub const MANIFEST_VERSION: u32 = 1;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub version: u32,
    /// Snapshot id, assigned by the appliance at commit.
    pub snapshot: String,
    pub machine: String,
    /// Commit time, RFC 3339 UTC, assigned by the appliance.
    pub created: String,
    pub chunk_size: u32,
    pub disks: Vec<DiskManifest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<OsFacts>,
    /// Version of the backup-agent that read the disks.
    pub agent: String,
    /// How the disks were read: point-in-time (and how), live, or unknown (absent: a manifest
    /// from before the field existed).
    #[serde(default, skip_serializing_if = "Consistency::is_unknown")]
    pub consistency: Consistency,
    /// The source's network configuration at backup time (docs/network.md): every interface
    /// its config files name, with the live kernel's MAC, driver and PCI path, and the NICs no
    /// file names. Absent: not recorded (image files, `--network none`, or a manifest from
    /// before the field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkConfig>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskManifest {
    /// The disk's name within the snapshot (jobs map it to a target).
    pub name: String,
    pub size: u64,
    pub logical_sector_size: u32,
    /// Where backup-agent read it (informational).
    pub source: String,
    /// Container format of the source: raw, block-device, qcow2, vmdk-sparse, vmdk-stream.
    pub source_format: String,
    /// BLAKE3 of the encoded disk index.
    pub index_digest: ChunkId,
    pub chunks: ChunkCounts,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layout: Option<DiskLayout>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChunkCounts {
    pub data: u64,
    pub zero: u64,
    pub unused: u64,
}

/// What is known of the operating system on the snapshot's disks.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OsFacts {
    /// linux, windows or unknown.
    pub family: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distro: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// bios or uefi.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_loader: Option<String>,
    /// Where the facts were read (`vda2`: the Windows volume a backup job looked into).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<String>,
    /// Windows: hiberfil.sys held a hibernation image when the disks were read (hibernate, or
    /// a Fast Startup shutdown): the volume's files are not consistent, and a restore is
    /// refused unless the job allows it (docs/fixup.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hibernated: Option<bool>,
    /// Windows: Fast Startup (`HiberbootEnabled`) was on, so a shutdown leaves a hibernated
    /// kernel session: turn it off before the final backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fast_startup: Option<bool>,
}

/// Longest text an `os` field may hold.
pub const MAX_OS_TEXT: usize = 256;

impl OsFacts {
    /// Bounds the appliance checks before it signs.
    pub fn check(&self) -> Result<(), FormatError> {
        for (what, v) in [
            ("family", Some(&self.family)),
            ("distro", self.distro.as_ref()),
            ("version", self.version.as_ref()),
            ("boot_mode", self.boot_mode.as_ref()),
            ("boot_loader", self.boot_loader.as_ref()),
            ("volume", self.volume.as_ref()),
        ] {
            if let Some(v) = v {
                if v.len() > MAX_OS_TEXT || v.chars().any(char::is_control) {
                    return Err(FormatError::Manifest(format!(
                        "os.{what} is longer than {MAX_OS_TEXT} bytes or holds control characters"
                    )));
                }
            }
        }
        Ok(())
    }
}

impl Manifest {
    /// Structural checks every reader runs after parsing (and the appliance before signing).
    pub fn check(&self) -> Result<(), FormatError> {
        if self.version != MANIFEST_VERSION {
            return Err(FormatError::Manifest(format!(
                "manifest version {} is not supported (this build reads version {MANIFEST_VERSION})",
                self.version
            )));
        }
        check_name(NameKind::Machine, &self.machine)?;
        check_chunk_size(self.chunk_size)?;
        if self.disks.is_empty() {
            return Err(FormatError::Manifest("the manifest lists no disks".into()));
        }
        for (i, d) in self.disks.iter().enumerate() {
            check_name(NameKind::Disk, &d.name)?;
            if self.disks[..i].iter().any(|o| o.name == d.name) {
                return Err(FormatError::Manifest(format!(
                    "disk name {:?} appears twice",
                    d.name
                )));
            }
            if !matches!(d.logical_sector_size, 512 | 4096) {
                return Err(FormatError::Manifest(format!(
                    "disk {:?} has logical sector size {}; only 512 and 4096 are supported",
                    d.name, d.logical_sector_size
                )));
            }
        }
        if let Some(os) = &self.os {
            os.check()?;
        }
        if let Some(net) = &self.network {
            net.check().map_err(|e| {
                FormatError::Manifest(format!("the recorded network configuration: {e}"))
            })?;
        }
        self.consistency.check()
    }

    pub fn disk(&self, name: &str) -> Option<&DiskManifest> {
        self.disks.iter().find(|d| d.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consistency::Method;
    use crate::signing::{SigningKey, SIGNING_CONTEXT};
    use base64::engine::general_purpose::STANDARD as B64;
    use base64::Engine;
    use ring::rand::SystemRandom;
    use ring::signature::{Ed25519KeyPair, KeyPair};

    /// A manifest as written before `consistency` existed.
    const OLD: &str = r#"{
  "version": 1,
  "snapshot": "web01-20261122T010203Z",
  "machine": "web01",
  "created": "2026-11-22T01:02:03Z",
  "chunk_size": 4194304,
  "disks": [{
    "name": "sda", "size": 8388608, "logical_sector_size": 512,
    "source": "/dev/sda", "source_format": "block-device",
    "index_digest": "0000000000000000000000000000000000000000000000000000000000000000",
    "chunks": {"data": 1, "zero": 1, "unused": 0}
  }],
  "agent": "backup-agent 0.1.0"
}"#;

    fn frozen() -> Consistency {
        Consistency::PointInTime {
            method: Method::Freeze,
            frozen: vec!["/".into(), "/var".into()],
            snapshots: vec![],
            read_only: vec![],
            not_frozen: vec![],
            freeze_ms: 2500,
            snapshot_ms: 0,
        }
    }

    #[test]
    fn an_old_manifest_reads_as_unknown_and_writes_back_without_the_field() {
        let m: Manifest = serde_json::from_str(OLD).unwrap();
        m.check().unwrap();
        assert_eq!(m.consistency, Consistency::Unknown);
        let text = serde_json::to_string(&m).unwrap();
        assert!(!text.contains("consistency"), "{text}");
    }

    #[test]
    fn consistency_round_trips_in_the_manifest() {
        let mut m: Manifest = serde_json::from_str(OLD).unwrap();
        for c in [frozen(), Consistency::Live] {
            m.consistency = c.clone();
            let text = serde_json::to_string_pretty(&m).unwrap();
            assert!(text.contains(r#""consistency": {"#), "{text}");
            let back: Manifest = serde_json::from_str(&text).unwrap();
            back.check().unwrap();
            assert_eq!(back.consistency, c);
        }
        let mut huge = frozen();
        if let Consistency::PointInTime { frozen, .. } = &mut huge {
            *frozen = vec!["/x".into(); crate::consistency::MAX_ENTRIES + 1];
        }
        m.consistency = huge;
        assert!(m.check().is_err());
    }

    fn network() -> NetworkConfig {
        use crate::network::{ConfigSystem, Interface};
        NetworkConfig {
            interfaces: vec![
                Interface {
                    name: "ens192".into(),
                    mac: Some("00:50:56:aa:bb:cc".into()),
                    driver: Some("vmxnet3".into()),
                    pci_path: Some("pci-0000:0b:00.0".into()),
                    addresses: vec!["10.1.2.3/24".parse().unwrap()],
                    system: ConfigSystem::Networkd,
                    file: "/etc/systemd/network/10-lan.network".into(),
                    ..Interface::default()
                },
                Interface {
                    name: "ens224".into(),
                    mac: Some("00:50:56:aa:bb:cd".into()),
                    system: ConfigSystem::Unconfigured,
                    ..Interface::default()
                },
            ],
        }
    }

    #[test]
    fn a_manifest_without_network_reads_as_not_recorded() {
        let m: Manifest = serde_json::from_str(OLD).unwrap();
        m.check().unwrap();
        assert_eq!(m.network, None);
        let text = serde_json::to_string(&m).unwrap();
        assert!(!text.contains("network"), "{text}");
    }

    #[test]
    fn network_round_trips_in_the_manifest_and_is_checked() {
        let mut m: Manifest = serde_json::from_str(OLD).unwrap();
        m.network = Some(network());
        let text = serde_json::to_string_pretty(&m).unwrap();
        assert!(text.contains(r#""network": {"#), "{text}");
        assert!(text.contains(r#""system": "unconfigured""#), "{text}");
        let back: Manifest = serde_json::from_str(&text).unwrap();
        back.check().unwrap();
        assert_eq!(back, m);
        // Out of bounds, or a field that is not what it says: refused, naming the network.
        let mut big = network();
        big.interfaces = vec![big.interfaces[0].clone(); crate::network::MAX_INTERFACES + 1];
        m.network = Some(big);
        let e = m.check().unwrap_err().to_string();
        assert!(
            e.contains("network configuration") && e.contains("257"),
            "{e}"
        );
        let mut upper = network();
        upper.interfaces[0].mac = Some("00:50:56:AA:BB:CC".into());
        m.network = Some(upper);
        assert!(m.check().is_err());
        // Unknown fields inside the record are refused like everywhere else in the manifest.
        let unknown = text.replace(r#""dhcp4""#, r#""dhcp5": true, "dhcp4""#);
        assert!(serde_json::from_str::<Manifest>(&unknown).is_err());
    }

    #[test]
    fn the_signature_covers_consistency() {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        let kp = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let key = SigningKey(kp.public_key().as_ref().try_into().unwrap());
        let mut m: Manifest = serde_json::from_str(OLD).unwrap();
        m.consistency = Consistency::Live;
        let bytes = serde_json::to_vec_pretty(&m).unwrap();
        let mut msg = SIGNING_CONTEXT.to_vec();
        msg.extend_from_slice(&bytes);
        let sig = B64.encode(kp.sign(&msg).as_ref());
        key.verify(&bytes, &sig).unwrap();
        // Claiming more than was recorded, or dropping the record, breaks the signature.
        m.consistency = frozen();
        let upgraded = serde_json::to_vec_pretty(&m).unwrap();
        assert!(key.verify(&upgraded, &sig).is_err());
        m.consistency = Consistency::Unknown;
        let dropped = serde_json::to_vec_pretty(&m).unwrap();
        assert!(key.verify(&dropped, &sig).is_err());
    }
}
