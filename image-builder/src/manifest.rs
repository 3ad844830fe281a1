//! `manifest.json`: what a build produced, for CI, release notes and operators. Format version 1.

use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::modules::Closure;

#[derive(Debug, Serialize)]
pub struct Manifest {
    pub format: u32,
    pub kernel_version: String,
    pub kernel_package: String,
    pub kernel_package_version: String,
    pub source_date_epoch: u64,
    /// Kernel command line of the ISO's default entry and the iPXE script.
    pub cmdline: String,
    /// Whether site settings were stamped (the settings themselves are not recorded: the token).
    pub site_stamped: bool,
    pub artifacts: Vec<Artifact>,
    pub modules: ModuleReport,
    /// The virtio-win drivers carried (`--virtio-win`); null when the image has none.
    pub virtio_win: Option<crate::virtio_win::Report>,
    /// The firmware files carried (`--firmware`), their packages and licences.
    pub firmware: crate::firmware::Report,
}

#[derive(Debug, Serialize)]
pub struct Artifact {
    /// Relative to the output directory.
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

#[derive(Debug, Serialize)]
pub struct ModuleReport {
    pub count: usize,
    pub shipped: Vec<String>,
    pub builtin: Vec<String>,
    pub missing: Vec<String>,
}

impl From<Closure> for ModuleReport {
    fn from(c: Closure) -> Self {
        ModuleReport {
            count: c.modules.len(),
            shipped: c.modules.into_iter().collect(),
            builtin: c.builtin,
            missing: c.missing,
        }
    }
}

impl Artifact {
    pub fn of(dir: &Path, rel: &str) -> Result<Self> {
        let path = dir.join(rel);
        let (size, sha256) = sha256_file(&path)?;
        Ok(Artifact {
            path: rel.to_string(),
            size,
            sha256,
        })
    }
}

/// Size and hex SHA-256 of a file, streamed in 1 MiB reads.
pub fn sha256_file(path: &Path) -> Result<(u64, String)> {
    let mut f = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("read {}", path.display()))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        ctx.update(&buf[..n]);
    }
    Ok((size, hex(ctx.finish().as_ref())))
}

/// Hex SHA-256 of bytes in memory.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, data).as_ref())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
