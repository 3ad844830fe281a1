//! Default locations: the workspace root (for the agent binary, drivers/ and initramfs/) and the
//! kernel package cache.

use std::path::{Path, PathBuf};

/// The Ferry workspace root: the nearest ancestor of the current directory whose Cargo.toml has a
/// `[workspace]` table and a `drivers/catalog.txt`; else the tree this binary was built from.
pub fn workspace_root() -> PathBuf {
    let is_root = |d: &Path| {
        d.join("drivers/catalog.txt").is_file()
            && std::fs::read_to_string(d.join("Cargo.toml"))
                .is_ok_and(|t| t.contains("[workspace]"))
    };
    if let Ok(cwd) = std::env::current_dir() {
        if let Some(d) = cwd.ancestors().find(|d| is_root(d)) {
            return d.to_path_buf();
        }
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("."))
        .to_path_buf()
}

/// Default agent binary: the musl release build of restore-agent.
pub fn default_agent(root: &Path) -> PathBuf {
    root.join("target/x86_64-unknown-linux-musl/release/restore-agent")
}

/// Default first-boot beacon binary: the musl release build of ferry-beacon.
pub fn default_beacon(root: &Path) -> PathBuf {
    root.join("target/x86_64-unknown-linux-musl/release/beacon")
}

/// `$XDG_CACHE_HOME/ferry` or `~/.cache/ferry`.
pub fn default_cache() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("ferry");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    home.join(".cache/ferry")
}
