//! Per-site settings (appliance URL, CA, token, network) as a layer added to a built image without
//! rebuilding it, like coreos-installer's `iso customize` and proxmox's appended ticket cpio.
//!
//! The layer is a small uncompressed newc cpio holding
//! - `/etc/ferry/site.conf` (0600): `key=value` lines with the *same keys as the kernel command
//!   line* (`ferry.appliance=`, `ferry.token=`, `ip=`, `nameserver=`), so the agent parses both with
//!   one parser; the command line wins over the file;
//! - `/etc/ferry/ca.pem` (0644): the appliance's CA certificate(s), PEM.
//!
//! Where the layer goes (see `docs/image.md`):
//! - ISO: the file `/boot/site.img`, exactly [`AREA_SIZE`] bytes, zero-filled in a base image, is
//!   loaded by grub as the last initrd. Customizing overwrites that file's extent in place with the
//!   cpio followed by zeros (the kernel skips zero padding between concatenated archives), so the
//!   ISO's structure, boot records and checksums of other files stay untouched.
//! - PXE: the cpio is appended to `initrd.img` (concatenated archives; later ones add files).

use std::io::{Seek, SeekFrom, Write};
use std::net::IpAddr;
use std::path::Path;

use anyhow::{bail, Context, Result};
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
    pub appliance: String,
    pub token: String,
    pub ca_pem: String,
    pub ip: Vec<String>,
    pub nameserver: Vec<String>,
}

impl Site {
    /// Validates the parts and reads the CA from `ca_path`.
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
        check_url(appliance)?;
        check_token(token)?;
        for spec in ip {
            check_ip(spec)?;
        }
        for ns in nameserver {
            ns.parse::<IpAddr>()
                .with_context(|| format!("use nameserver {ns:?}: not an IP address"))?;
        }
        Ok(Site {
            appliance: appliance.to_string(),
            token: token.to_string(),
            ca_pem,
            ip: ip.to_vec(),
            nameserver: nameserver.to_vec(),
        })
    }

    /// The text of `/etc/ferry/site.conf`.
    pub fn conf(&self) -> String {
        let mut s = String::from(
            "# Ferry site settings, written by image-builder. Same keys as the kernel\n",
        );
        s.push_str("# command line; a key given on the command line wins over this file.\n");
        s.push_str(&format!(
            "ferry.appliance={}\nferry.token={}\n",
            self.appliance, self.token
        ));
        for ip in &self.ip {
            s.push_str(&format!("ip={ip}\n"));
        }
        for ns in &self.nameserver {
            s.push_str(&format!("nameserver={ns}\n"));
        }
        s
    }

    /// The site layer: a newc cpio with site.conf and ca.pem.
    pub fn cpio(&self) -> Result<Vec<u8>> {
        let mut a = Archive::new();
        a.insert(Entry {
            path: "/etc/ferry/site.conf".into(),
            perm: 0o600,
            kind: Kind::File(self.conf().into_bytes()),
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
    let area = site.area()?;
    let (offset, len) = find_area(input)?;
    if len != AREA_SIZE as u64 {
        bail!(
            "customize {}: {AREA_PATH} is {len} bytes, expected {AREA_SIZE}; not a Ferry image?",
            input.display()
        );
    }
    std::fs::copy(input, output)
        .with_context(|| format!("copy {} to {}", input.display(), output.display()))?;
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
fn check_distinct(input: &Path, output: &Path) -> Result<()> {
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

fn check_url(url: &str) -> Result<()> {
    let Some(rest) = url.strip_prefix("https://") else {
        bail!("use appliance URL {url:?}: it must start with https://");
    };
    if rest.is_empty()
        || rest.starts_with('/')
        || url.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        bail!("use appliance URL {url:?}: expected https://HOST[:PORT][/PATH] without spaces");
    }
    Ok(())
}

fn check_token(token: &str) -> Result<()> {
    if token.is_empty() || token.len() > 4096 || !token.chars().all(|c| c.is_ascii_graphic()) {
        bail!("use token: expected 1 to 4096 printable ASCII characters without spaces");
    }
    Ok(())
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

/// Autoconfiguration methods of dracut's `ip=`.
const IP_METHODS: [&str; 12] = [
    "dhcp",
    "on",
    "any",
    "dhcp6",
    "auto6",
    "either6",
    "link6",
    "single-dhcp",
    "off",
    "none",
    "ibft",
    "link-local",
];

/// Checks a dracut `ip=` value: `METHOD`, `IFACE:METHOD[:MTU[:MAC]]`, or
/// `CLIENT:[PEER]:GATEWAY:NETMASK:HOSTNAME:IFACE:METHOD[:DNS0[:DNS1]]` (IPv6 in brackets).
pub fn check_ip(spec: &str) -> Result<()> {
    let bad = |why: &str| {
        anyhow::anyhow!(
            "use ip={spec}: {why}; expected dhcp, IFACE:dhcp, or \
             CLIENT-IP::GATEWAY-IP:NETMASK:HOSTNAME:IFACE:none[:DNS0[:DNS1]]"
        )
    };
    if spec.is_empty() || spec.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("empty or contains spaces"));
    }
    let f = split_ip_fields(spec);
    let is_ip = |s: &str| {
        s.trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok()
    };
    match f.len() {
        1 if IP_METHODS.contains(&f[0]) => Ok(()),
        2..=4 if !is_ip(f[0]) && IP_METHODS.contains(&f[1]) => Ok(()),
        7..=9 => {
            if !is_ip(f[0]) {
                return Err(bad("client address is not an IP address"));
            }
            if !f[1].is_empty() && !is_ip(f[1]) || !f[2].is_empty() && !is_ip(f[2]) {
                return Err(bad("peer or gateway is not an IP address"));
            }
            if !f[3].is_empty() && !is_ip(f[3]) && f[3].parse::<u8>().map_or(true, |p| p > 128) {
                return Err(bad("netmask is neither an address nor a prefix length"));
            }
            if !IP_METHODS.contains(&f[6]) {
                return Err(bad("unknown autoconf method"));
            }
            Ok(())
        }
        _ => Err(bad("wrong number of fields")),
    }
}

/// Splits on `:` outside `[...]`.
fn split_ip_fields(spec: &str) -> Vec<&str> {
    let (mut out, mut depth, mut start) = (Vec::new(), 0, 0);
    for (i, c) in spec.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            ':' if depth == 0 => {
                out.push(&spec[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&spec[start..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    pub const TEST_CA: &str = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUQ2VydGlmaWNhdGUgZm9yIHRlc3RzMAoGCCqGSM49BAMC\n-----END CERTIFICATE-----\n";

    #[test]
    fn ip_specs() {
        for ok in [
            "dhcp",
            "eth0:dhcp",
            "192.0.2.10::192.0.2.1:255.255.255.0:rescue:eth0:none",
            "192.0.2.10::192.0.2.1:24:rescue:eth0:none:192.0.2.53",
            "[2001:db8::10]::[2001:db8::1]:64:rescue:eth0:none",
            "192.0.2.10:::255.255.255.0::ens3:off",
        ] {
            check_ip(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "",
            "dhcp ",
            "bogus",
            "192.0.2.10::gw:24:h:eth0:none",
            "1.2.3.4::1.2.3.1:24:h:eth0:magic",
            "a:b:c",
        ] {
            assert!(check_ip(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn urls_tokens_and_cas() {
        assert!(check_url("https://appliance.example:8443").is_ok());
        assert!(check_url("http://appliance")
            .unwrap_err()
            .to_string()
            .contains("https://"));
        assert!(check_url("https:///x").is_err());
        assert!(check_token("abc.DEF-123").is_ok());
        assert!(check_token("a b").is_err());
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
        Site {
            appliance: "https://a.example".into(),
            token: "tok".into(),
            ca_pem: TEST_CA.into(),
            ip: vec!["dhcp".into()],
            nameserver: vec!["192.0.2.53".into()],
        }
    }

    #[test]
    fn conf_uses_command_line_keys() {
        let conf = site().conf();
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
