//! Which Windows is this, and which virtio-win driver folder fits it.

use crate::hive::{Hive, HiveError, RegValue};
use serde::Serialize;

/// The installed Windows version, read from the SOFTWARE hive or guessed from SYSTEM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WindowsVersion {
    pub major: u32,
    pub minor: u32,
    /// 0 when unknown.
    pub build: u32,
    pub server: bool,
    pub product_name: Option<String>,
    /// True when SOFTWARE was missing and the version is a heuristic from SYSTEM.
    pub guessed: bool,
}

impl std::fmt::Display for WindowsVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = if self.server { "server" } else { "client" };
        write!(
            f,
            "Windows NT {}.{} build {} {kind}",
            self.major, self.minor, self.build
        )?;
        if let Some(p) = &self.product_name {
            write!(f, " ({p})")?;
        }
        if self.guessed {
            write!(f, " [guessed from SYSTEM: no SOFTWARE hive]")?;
        }
        Ok(())
    }
}

const CURRENT_VERSION: &str = "Microsoft\\Windows NT\\CurrentVersion";

/// Reads `Microsoft\Windows NT\CurrentVersion` from a SOFTWARE hive; `None` if absent.
pub fn from_software(h: &Hive) -> Result<Option<WindowsVersion>, HiveError> {
    let Some(k) = h.open(CURRENT_VERSION)? else {
        return Ok(None);
    };
    let get = |name: &str| -> Result<Option<RegValue>, HiveError> {
        Ok(h.value(k, name)?.map(|v| v.decoded()))
    };
    let dword = |name: &str| -> Result<Option<u32>, HiveError> {
        Ok(get(name)?.and_then(|v| v.as_dword()))
    };
    let string = |name: &str| -> Result<Option<String>, HiveError> {
        Ok(get(name)?.and_then(|v| v.as_str().map(str::to_owned)))
    };
    let (major, minor) = match (
        dword("CurrentMajorVersionNumber")?,
        dword("CurrentMinorVersionNumber")?,
    ) {
        (Some(a), Some(b)) => (a, b),
        _ => {
            let v = string("CurrentVersion")?.unwrap_or_default();
            let mut parts = v.split('.').map(|p| p.trim().parse::<u32>().ok());
            match (parts.next().flatten(), parts.next().flatten()) {
                (Some(a), Some(b)) => (a, b),
                _ => return Ok(None),
            }
        }
    };
    let build = string("CurrentBuildNumber")?
        .or(string("CurrentBuild")?)
        .and_then(|b| b.trim().parse().ok())
        .unwrap_or(0);
    let product_name = string("ProductName")?;
    let server = match string("InstallationType")? {
        Some(t) => t.to_ascii_lowercase().starts_with("server"),
        None => product_name
            .as_deref()
            .is_some_and(|p| p.contains("Server")),
    };
    Ok(Some(WindowsVersion {
        major,
        minor,
        build,
        server,
        product_name,
        guessed: false,
    }))
}

/// Guesses from SYSTEM alone: a CriticalDeviceDatabase means pre-Windows 8 (6.1),
/// otherwise 10.0; `Control\ProductOptions\ProductType` tells server from client.
pub fn guess_from_system(h: &Hive, control_set: &str) -> Result<WindowsVersion, HiveError> {
    let cddb = h
        .open(&format!("{control_set}\\Control\\CriticalDeviceDatabase"))?
        .is_some();
    let product = h.get(
        &format!("{control_set}\\Control\\ProductOptions"),
        "ProductType",
    )?;
    let server = product
        .as_ref()
        .and_then(|p| p.as_str())
        .is_some_and(|p| !p.eq_ignore_ascii_case("WinNT"));
    let (major, minor) = if cddb { (6, 1) } else { (10, 0) };
    Ok(WindowsVersion {
        major,
        minor,
        build: 0,
        server,
        product_name: None,
        guessed: true,
    })
}

/// virtio-win's per-OS folder names: (folder, server, NT version*100, first build).
pub const FOLDERS: &[(&str, bool, u32, u32)] = &[
    ("w7", false, 601, 7600),
    ("2k8R2", true, 601, 7600),
    ("w8", false, 602, 9200),
    ("2k12", true, 602, 9200),
    ("w8.1", false, 603, 9600),
    ("2k12R2", true, 603, 9600),
    ("w10", false, 1000, 10240),
    ("2k16", true, 1000, 14393),
    ("2k19", true, 1000, 17763),
    ("2k22", true, 1000, 20348),
    ("w11", false, 1000, 22000),
    ("2k25", true, 1000, 26100),
];

/// Driver folders to try, best first: the newest folder of the same kind (client or
/// server) not newer than this Windows, then older ones, then the other kind's.
pub fn folder_candidates(v: &WindowsVersion) -> Vec<&'static str> {
    let ver = v.major * 100 + v.minor;
    // Unknown build: the first release of this NT version for this kind of Windows.
    let first = |same_kind: bool| {
        FOLDERS
            .iter()
            .filter(|f| f.2 == ver && (!same_kind || f.1 == v.server))
            .map(|f| f.3)
            .min()
    };
    let build = if v.build != 0 {
        v.build
    } else {
        first(true).or(first(false)).unwrap_or(0)
    };
    let mut fitting: Vec<_> = FOLDERS
        .iter()
        .filter(|f| (f.2, f.3) <= (ver, build))
        .collect();
    fitting.sort_by_key(|f| (f.1 == v.server, f.2, f.3));
    fitting.into_iter().rev().map(|f| f.0).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(major: u32, minor: u32, build: u32, server: bool) -> WindowsVersion {
        WindowsVersion {
            major,
            minor,
            build,
            server,
            product_name: None,
            guessed: false,
        }
    }

    #[test]
    fn folder_table() {
        let cases = [
            (v(6, 1, 7601, false), "w7"),
            (v(6, 1, 7601, true), "2k8R2"),
            (v(6, 2, 9200, false), "w8"),
            (v(6, 2, 9200, true), "2k12"),
            (v(6, 3, 9600, false), "w8.1"),
            (v(6, 3, 9600, true), "2k12R2"),
            (v(10, 0, 19045, false), "w10"),
            (v(10, 0, 22631, false), "w11"),
            (v(10, 0, 14393, true), "2k16"),
            (v(10, 0, 17763, true), "2k19"),
            (v(10, 0, 20348, true), "2k22"),
            (v(10, 0, 0, true), "2k16"),
            (v(10, 0, 0, false), "w10"),
        ];
        for (ver, want) in cases {
            assert_eq!(folder_candidates(&ver)[0], want, "{ver}");
        }
    }

    #[test]
    fn falls_back_to_older_folders_of_the_same_kind_first() {
        let c = folder_candidates(&v(10, 0, 20348, true));
        assert_eq!(&c[..6], ["2k22", "2k19", "2k16", "2k12R2", "2k12", "2k8R2"]);
        assert_eq!(&c[6..], ["w10", "w8.1", "w8", "w7"]);
        assert!(!folder_candidates(&v(10, 0, 19045, false)).contains(&"w11"));
        assert!(folder_candidates(&v(5, 1, 2600, false)).is_empty());
    }
}
