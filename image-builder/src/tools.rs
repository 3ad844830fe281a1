//! Running host tools (dpkg-deb, apt-get, depmod, xz, zstd, grub-mkrescue, ldd) with errors that
//! say which Debian package to install when a tool is missing.

use std::path::Path;
use std::process::{Command, Output};

use anyhow::{bail, Context, Result};

/// Runs `cmd` to completion, capturing output. `package` names the Debian package providing the
/// program, for the error message when it is not installed.
pub fn run(cmd: &mut Command, package: &str) -> Result<Output> {
    Ok(ferry_sys::tool::output(cmd, package, &[0])?)
}

/// One control field of a `.deb` (`dpkg-deb -f DEB FIELD`), trimmed.
pub fn deb_field(deb: &Path, field: &str) -> Result<String> {
    let out = run(
        Command::new("dpkg-deb").arg("-f").arg(deb).arg(field),
        "dpkg",
    )?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
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
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(|b| u64::from_le_bytes(b) as usize)
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
            .and_then(|t| <[u8; 4]>::try_from(t).ok())
            .is_some_and(|t| u32::from_le_bytes(t) != 3)
    })
}

/// A build-host program for the image and the shared libraries it loads.
pub struct HostProgram {
    pub data: Vec<u8>,
    /// Absolute paths as the host's loader resolves them, the loader itself included; empty for
    /// static programs and scripts.
    pub libraries: Vec<String>,
}

/// Reads `path` (following symlinks) and, for a dynamically linked ELF, asks the host's loader
/// (`ldd`) which libraries it needs. `package` is named when the program is missing.
pub fn host_program(path: &Path, package: &str) -> Result<HostProgram> {
    let data = std::fs::read(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            anyhow::anyhow!(
                "{} is not on this build host; install it with `apt-get install {package}`",
                path.display()
            )
        } else {
            anyhow::anyhow!("read {}: {e}", path.display())
        }
    })?;
    // Scripts (xfs_admin) and static programs need nothing else.
    if !data.starts_with(b"\x7fELF") || is_static_elf(&data) {
        return Ok(HostProgram {
            data,
            libraries: Vec::new(),
        });
    }
    let out = run(Command::new("ldd").arg(path), "libc-bin")?;
    let libraries = parse_ldd(&String::from_utf8_lossy(&out.stdout))
        .with_context(|| format!("resolve the libraries of {}", path.display()))?;
    Ok(HostProgram { data, libraries })
}

/// The library paths in `ldd` output: `name => /path (addr)` and `/path (addr)` lines; the vDSO
/// (no path) is skipped; `name => not found` is an error.
pub fn parse_ldd(text: &str) -> Result<Vec<String>> {
    let mut libs = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let target = match line.split_once(" => ") {
            Some((name, rest)) => {
                if rest.trim_start().starts_with("not found") {
                    bail!("library {name} not found on the build host");
                }
                rest
            }
            None => line,
        };
        let path = target.split(" (").next().unwrap_or("").trim();
        if path.starts_with('/') {
            libs.push(path.to_string());
        }
    }
    libs.sort();
    libs.dedup();
    Ok(libs)
}

/// True for the dynamic loader's path (`ld-linux-x86-64.so.2` and the like).
pub fn is_loader(path: &str) -> bool {
    path.rsplit('/')
        .next()
        .is_some_and(|n| n.starts_with("ld-linux"))
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
    fn parses_ldd_output() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd5f7d2000)\n\tlibblkid.so.1 => /lib/x86_64-linux-gnu/libblkid.so.1 (0x00007f1)\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f2)\n\t/lib64/ld-linux-x86-64.so.2 (0x00007f3)\n";
        assert_eq!(
            parse_ldd(text).unwrap(),
            [
                "/lib/x86_64-linux-gnu/libblkid.so.1",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
        );
        let e = parse_ldd("\tlibfoo.so.1 => not found\n").unwrap_err();
        assert!(e.to_string().contains("libfoo.so.1"), "{e}");
        assert!(is_loader("/lib64/ld-linux-x86-64.so.2"));
        assert!(!is_loader("/lib/x86_64-linux-gnu/libc.so.6"));
    }

    #[test]
    fn host_binaries_static_or_not() {
        assert!(!is_static_elf(b"#!/bin/sh\n"));
        if let Ok(ls) = std::fs::read("/bin/ls") {
            assert!(!is_static_elf(&ls), "/bin/ls is dynamic on Debian");
        }
    }
}
