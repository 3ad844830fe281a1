//! Per-site settings (appliance URL, CA, token, network) as a layer added to a built image without
//! rebuilding it, like coreos-installer's `iso customize` and proxmox's appended ticket cpio.
//!
//! The layer is a small uncompressed newc cpio holding
//! - `/etc/ferry/site.conf` (0600): `key=value` lines with the *same keys as the kernel command
//!   line* (`ferry.appliance=`, `ferry.token=`, `ip=`, `nameserver=`); the command line wins over
//!   the file. Its type, checks and serializer are `ferry_format::site::SiteSettings`, the same
//!   that PID 1 (ferry-init) parses it with, so every value is checked here as the image will;
//! - `/etc/ferry/ca.pem` (0644): the appliance's CA certificate(s), PEM.
//!
//! Where the layer goes (see `docs/image.md`):
//! - ISO: the file `/boot/site.img`, exactly [`AREA_SIZE`] bytes, zero-filled in a base image, is
//!   loaded by grub as the last initrd. Customizing overwrites that file's extent in place with the
//!   cpio followed by zeros (the kernel skips zero padding between concatenated archives), so the
//!   ISO's structure, boot records and checksums of other files stay untouched.
//! - PXE: the cpio is appended to `initrd.img` (concatenated archives; later ones add files).

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use ferry_format::site::{Key, SiteSettings};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use crate::cpio::{self, Archive, Entry, Kind};
use crate::iso9660;

/// Size of the ISO embed area `/boot/site.img` (frozen: images in the field have this size).
pub const AREA_SIZE: usize = 256 * 1024;
/// Path of the embed area inside the ISO (frozen).
pub const AREA_PATH: &str = "/boot/site.img";
/// mtime of site layer entries: fixed, so the same settings give the same bytes.
const SITE_MTIME: u32 = 0;

/// Validated per-site settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    /// What `/etc/ferry/site.conf` says.
    pub settings: SiteSettings,
    pub ca_pem: String,
}

impl Site {
    /// Validates the parts (as PID 1 will when it reads them) and reads the CA from `ca_path`.
    pub fn new(
        appliance: &str,
        ca_path: &Path,
        token: &str,
        ip: &[String],
        nameserver: &[String],
    ) -> Result<Self> {
        let ca_pem = std::fs::read_to_string(ca_path)
            .with_context(|| format!("read CA {}", ca_path.display()))?;
        check_ca(&ca_pem).with_context(|| format!("use CA {}", ca_path.display()))?;
        let mut settings = SiteSettings::default();
        // What each value is called in the error (never the token itself).
        let mut set = |key: Key, value: &str, shown: String| {
            settings
                .set(key, Some(value))
                .map_err(|why| anyhow!("use {shown}: {why}; expected {}", key.expected()))
        };
        set(
            Key::Appliance,
            appliance,
            format!("appliance URL {appliance:?}"),
        )?;
        set(Key::Token, token, "token".into())?;
        for spec in ip {
            set(Key::Ip, spec, format!("ip={spec}"))?;
        }
        for ns in nameserver {
            set(Key::Nameserver, ns, format!("nameserver {ns:?}"))?;
        }
        Ok(Site { settings, ca_pem })
    }

    /// The text of `/etc/ferry/site.conf`.
    pub fn conf(&self) -> Result<String> {
        self.settings
            .to_conf()
            .context("write /etc/ferry/site.conf")
    }

    /// The site layer: a newc cpio with site.conf and ca.pem.
    pub fn cpio(&self) -> Result<Vec<u8>> {
        let mut a = Archive::new();
        a.insert(Entry {
            path: "/etc/ferry/site.conf".into(),
            perm: 0o600,
            kind: Kind::File(self.conf()?.into_bytes()),
        })?;
        a.insert(Entry {
            path: "/etc/ferry/ca.pem".into(),
            perm: 0o644,
            kind: Kind::File(self.ca_pem.clone().into_bytes()),
        })?;
        Ok(a.to_bytes(SITE_MTIME))
    }

    /// The full embed area: the cpio padded with zeros to [`AREA_SIZE`].
    pub fn area(&self) -> Result<Vec<u8>> {
        let mut bytes = self.cpio()?;
        if bytes.len() > AREA_SIZE {
            bail!(
                "fit site settings into the {AREA_SIZE}-byte embed area: they need {} bytes (a CA bundle \
                 that large? pass only the appliance's CA)",
                bytes.len()
            );
        }
        bytes.resize(AREA_SIZE, 0);
        Ok(bytes)
    }
}

/// An empty embed area, as shipped in a base image.
pub fn empty_area() -> Vec<u8> {
    vec![0; AREA_SIZE]
}

/// Copies the ISO `input` to `output` and writes `site` into its embed area in place.
pub fn customize_iso(input: &Path, output: &Path, site: &Site) -> Result<()> {
    check_distinct(input, output)?;
    site.area()?;
    check_area(input)?;
    std::fs::copy(input, output)
        .with_context(|| format!("copy {} to {}", input.display(), output.display()))?;
    stamp_iso(output, site)
}

/// Offset of the embed area of a Ferry ISO, refusing an ISO without one of the right size.
pub fn check_area(iso: &Path) -> Result<u64> {
    let (offset, len) = find_area(iso)?;
    if len != AREA_SIZE as u64 {
        bail!(
            "customize {}: {AREA_PATH} is {len} bytes, expected {AREA_SIZE}; not a Ferry image?",
            iso.display()
        );
    }
    Ok(offset)
}

/// Writes `site` into the embed area of `output` in place; removes `output` when that fails.
pub fn stamp_iso(output: &Path, site: &Site) -> Result<()> {
    let area = site.area()?;
    let offset = check_area(output)?;
    let write = || -> Result<()> {
        let mut f = std::fs::OpenOptions::new().write(true).open(output)?;
        f.seek(SeekFrom::Start(offset))?;
        f.write_all(&area)?;
        f.sync_all()?;
        Ok(())
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(output);
        e.context(format!(
            "write embed area of {} at offset {offset}",
            output.display()
        ))
    })
}

/// Byte offset and length of the embed area in an ISO image.
pub fn find_area(iso: &Path) -> Result<(u64, u64)> {
    let mut f = std::fs::File::open(iso).with_context(|| format!("open {}", iso.display()))?;
    iso9660::find_file(&mut f, AREA_PATH)
        .with_context(|| format!("find {AREA_PATH} in {}", iso.display()))
}

/// Reads the site.conf stamped into an ISO's embed area, if any (for `inspect` and tests).
pub fn read_iso_area(iso: &Path) -> Result<Option<Vec<String>>> {
    use std::io::Read;
    let (offset, len) = find_area(iso)?;
    let mut f = std::fs::File::open(iso)?;
    f.seek(SeekFrom::Start(offset))?;
    let mut buf = vec![0; len as usize];
    f.read_exact(&mut buf)?;
    if buf.iter().all(|b| *b == 0) {
        return Ok(None);
    }
    Ok(Some(cpio::list(&buf)?))
}

/// Copies the PXE initrd `input` to `output` and appends the site layer (4-byte aligned).
pub fn customize_initrd(input: &Path, output: &Path, site: &Site) -> Result<()> {
    check_distinct(input, output)?;
    let mut bytes = std::fs::read(input).with_context(|| format!("read {}", input.display()))?;
    append_layer(&mut bytes, &site.cpio()?);
    std::fs::write(output, bytes).with_context(|| format!("write {}", output.display()))
}

/// Refuses to customize a file onto itself: the base image stays intact for the next site.
pub fn check_distinct(input: &Path, output: &Path) -> Result<()> {
    let same = match (input.canonicalize(), output.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same {
        bail!(
            "customize {}: --out must differ from the input",
            input.display()
        );
    }
    Ok(())
}

/// Appends a cpio layer to an initrd image, zero-padding the image to a 4-byte boundary first.
pub fn append_layer(initrd: &mut Vec<u8>, layer: &[u8]) {
    initrd.resize(initrd.len().div_ceil(4) * 4, 0);
    initrd.extend_from_slice(layer);
}

/// Accepts PEM text with at least one CERTIFICATE block, and nothing else that fails to parse.
pub fn check_ca(pem: &str) -> Result<()> {
    if !pem.contains("-----BEGIN CERTIFICATE-----") {
        bail!("read CA: not a PEM file with a CERTIFICATE block");
    }
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .context("read CA: malformed PEM")?;
    if certs.is_empty() {
        bail!("read CA: no CERTIFICATE block decodes");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    pub const TEST_CA: &str = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUQ2VydGlmaWNhdGUgZm9yIHRlc3RzMAoGCCqGSM49BAMC\n-----END CERTIFICATE-----\n";

    /// `Site::new` with the test CA written to a temp file.
    fn new_site(appliance: &str, token: &str, ip: &[&str], ns: &[&str]) -> Result<Site> {
        let dir = tempfile::tempdir()?;
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, TEST_CA)?;
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        Site::new(appliance, &ca, token, &strings(ip), &strings(ns))
    }

    #[test]
    fn ip_specs_are_checked_as_pid_1_reads_them() {
        for ok in [
            "dhcp",
            "eth0:dhcp",
            "off",
            "192.0.2.10::192.0.2.1:255.255.255.0:rescue:eth0:none",
            "192.0.2.10::192.0.2.1:24:rescue:eth0:none:192.0.2.53",
            "192.0.2.10:::255.255.255.0::ens3:off",
        ] {
            new_site("https://a", "t", &[ok], &[]).unwrap_or_else(|e| panic!("{ok}: {e:#}"));
        }
        // PID 1 supports neither IPv6 nor the MTU/MAC fields: refused here, not at boot.
        for bad in [
            "",
            "dhcp ",
            "bogus",
            "192.0.2.10::gw:24:h:eth0:none",
            "1.2.3.4::1.2.3.1:24:h:eth0:magic",
            "a:b:c",
            "[2001:db8::10]::[2001:db8::1]:64:rescue:eth0:none",
            "eth0:dhcp:1500",
        ] {
            let e = new_site("https://a", "t", &[bad], &[]).unwrap_err();
            assert!(e.to_string().starts_with(&format!("use ip={bad}: ")), "{e}");
        }
        let e = new_site("https://a", "t", &[], &["2001:db8::1"]).unwrap_err();
        assert!(e.to_string().contains("not an IPv4 address"), "{e}");
    }

    #[test]
    fn urls_tokens_and_cas() {
        assert!(new_site("https://appliance.example:8443", "abc.DEF-123", &[], &[]).is_ok());
        let e = new_site("http://appliance", "t", &[], &[]).unwrap_err();
        assert!(e.to_string().contains("must start with https://"), "{e}");
        assert!(new_site("https:///x", "t", &[], &[]).is_err());
        let e = new_site("https://a", "sec ret", &[], &[]).unwrap_err();
        assert!(
            e.to_string().starts_with("use token:") && !e.to_string().contains("sec"),
            "{e}"
        );
        assert!(new_site("https://a", &"t".repeat(4097), &[], &[]).is_err());
        assert!(check_ca("hello")
            .unwrap_err()
            .to_string()
            .contains("CERTIFICATE"));
        assert!(
            check_ca("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n").is_err()
        );
        // A CERTIFICATE block whose body is not base64 is refused, not skipped.
        let bad = "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        assert!(format!("{:#}", check_ca(bad).unwrap_err()).contains("malformed PEM"));
        check_ca(TEST_CA).unwrap();
    }

    fn site() -> Site {
        new_site("https://a.example", "tok", &["dhcp"], &["192.0.2.53"]).unwrap()
    }

    #[test]
    fn conf_uses_command_line_keys_and_reads_back() {
        let conf = site().conf().unwrap();
        let keys: Vec<&str> = conf.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            keys,
            [
                "ferry.appliance=https://a.example",
                "ferry.token=tok",
                "ip=dhcp",
                "nameserver=192.0.2.53"
            ]
        );
        assert_eq!(SiteSettings::parse(&conf).unwrap(), site().settings);
    }

    #[test]
    fn area_is_cpio_then_zeros_and_too_big_is_refused() {
        let area = site().area().unwrap();
        assert_eq!(area.len(), AREA_SIZE);
        assert_eq!(
            cpio::list(&area).unwrap(),
            [
                "etc",
                "etc/ferry",
                "etc/ferry/ca.pem",
                "etc/ferry/site.conf"
            ]
        );
        let mut big = site();
        big.ca_pem = TEST_CA.repeat(AREA_SIZE / TEST_CA.len() + 1);
        assert!(big.area().unwrap_err().to_string().contains("embed area"));
    }

    #[test]
    fn appended_layer_is_aligned() {
        let mut initrd = vec![1u8; 5];
        append_layer(&mut initrd, b"0707");
        assert_eq!(initrd, [1, 1, 1, 1, 1, 0, 0, 0, b'0', b'7', b'0', b'7']);
    }
}
