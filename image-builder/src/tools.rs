//! Running host tools (dpkg-deb, apt-get, depmod, xz, zstd, grub-mkrescue) with errors that say
//! which Debian package to install when a tool is missing.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use anyhow::{bail, Context, Result};

/// Runs `cmd` to completion, capturing output. `package` names the Debian package providing the
/// program, for the error message when it is not installed.
pub fn run(cmd: &mut Command, package: &str) -> Result<Output> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let out = cmd.stdin(Stdio::null()).output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            anyhow::anyhow!("run {program}: not found; install it with `apt-get install {package}`")
        } else {
            anyhow::anyhow!("run {program}: {e}")
        }
    })?;
    if !out.status.success() {
        let args: Vec<_> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        bail!(
            "run {program} {}: {}\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim_end()
        );
    }
    Ok(out)
}

/// Returns the decompressed bytes of a kernel module file (`.ko`, `.ko.xz`, `.ko.zst`, `.ko.gz`).
pub fn read_module(path: &Path) -> Result<Vec<u8>> {
    let name = path.to_string_lossy();
    let (prog, package) = if name.ends_with(".xz") {
        ("xz", "xz-utils")
    } else if name.ends_with(".zst") {
        ("zstd", "zstd")
    } else if name.ends_with(".gz") {
        ("gzip", "gzip")
    } else {
        return std::fs::read(path).with_context(|| format!("read {}", path.display()));
    };
    let out = run(Command::new(prog).arg("-dc").arg(path), package)?;
    Ok(out.stdout)
}

/// Returns the module path with its compression suffix removed (`a.ko.xz` → `a.ko`).
pub fn strip_compression(path: &str) -> &str {
    for suffix in [".xz", ".zst", ".gz"] {
        if let Some(p) = path.strip_suffix(suffix) {
            return p;
        }
    }
    path
}

/// True when the ELF file has no PT_INTERP program header, i.e. needs no dynamic loader — what
/// `/init` and `/bin/busybox` must be in an image without a libc.
pub fn is_static_elf(bytes: &[u8]) -> bool {
    let u16_at = |o: usize| {
        bytes
            .get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
    };
    let u64_at = |o: usize| {
        bytes
            .get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()) as usize)
    };
    // ELF64 little-endian only: x86_64 is our one target.
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" || bytes[4] != 2 || bytes[5] != 1 {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    (0..phnum).all(|i| {
        let at = phoff + i * phentsize;
        bytes
            .get(at..at + 4)
            .is_some_and(|t| u32::from_le_bytes(t.try_into().unwrap()) != 3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_suffixes() {
        assert_eq!(strip_compression("kernel/a.ko.xz"), "kernel/a.ko");
        assert_eq!(strip_compression("kernel/a.ko.zst"), "kernel/a.ko");
        assert_eq!(strip_compression("kernel/a.ko"), "kernel/a.ko");
    }

    #[test]
    fn host_binaries_static_or_not() {
        assert!(!is_static_elf(b"#!/bin/sh\n"));
        if let Ok(ls) = std::fs::read("/bin/ls") {
            assert!(!is_static_elf(&ls), "/bin/ls is dynamic on Debian");
        }
    }
}
