//! File helpers for mounted targets: case-insensitive lookup (NTFS through ntfs3 is
//! case-sensitive on Linux, Windows paths are not) and atomic replacement.

use crate::FixupError;
use std::path::{Path, PathBuf};

/// Resolves a `/`-separated relative path under `base`, matching each component
/// case-insensitively (ASCII). `None` if any component is missing.
pub fn ci_resolve(base: &Path, rel: &str) -> Option<PathBuf> {
    let mut cur = base.to_path_buf();
    for part in rel.split(['/', '\\']).filter(|p| !p.is_empty()) {
        let exact = cur.join(part);
        if exact.symlink_metadata().is_ok() {
            cur = exact;
            continue;
        }
        let found = std::fs::read_dir(&cur)
            .ok()?
            .filter_map(Result::ok)
            .find(|e| e.file_name().to_string_lossy().eq_ignore_ascii_case(part))?;
        cur = found.path();
    }
    Some(cur)
}

/// Like [`ci_resolve`] but for a path that may not exist yet: resolves the longest
/// existing prefix and appends the rest as given.
pub fn ci_target(base: &Path, rel: &str) -> PathBuf {
    let parts: Vec<&str> = rel.split(['/', '\\']).filter(|p| !p.is_empty()).collect();
    let mut cur = base.to_path_buf();
    for (i, part) in parts.iter().enumerate() {
        match ci_resolve(&cur, part) {
            Some(p) => cur = p,
            None => {
                for rest in &parts[i..] {
                    cur.push(rest);
                }
                return cur;
            }
        }
    }
    cur
}

pub fn read(path: &Path) -> Result<Vec<u8>, FixupError> {
    std::fs::read(path).map_err(FixupError::io("read", path))
}

pub fn read_string(path: &Path) -> Result<String, FixupError> {
    std::fs::read_to_string(path).map_err(FixupError::io("read", path))
}

/// Replaces `path` with `data`: write a temp file beside it (with the old file's
/// permissions), fsync, rename over.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), FixupError> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(FixupError::io("create directory", dir))?;
    }
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".ferry-tmp");
    let tmp = path.with_file_name(name);
    let mut f = std::fs::File::create(&tmp).map_err(FixupError::io("create", &tmp))?;
    f.write_all(data).map_err(FixupError::io("write", &tmp))?;
    if let Ok(meta) = std::fs::metadata(path) {
        f.set_permissions(meta.permissions())
            .map_err(FixupError::io("set permissions of", &tmp))?;
    }
    f.sync_all().map_err(FixupError::io("sync", &tmp))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(FixupError::io("rename into place", path))
}

/// Copies `path` to `path` + `suffix` unless that backup already exists (a second run
/// must not overwrite the original with an already fixed-up file).
pub fn backup_once(path: &Path, suffix: &str) -> Result<Option<PathBuf>, FixupError> {
    if !path.exists() {
        return Ok(None);
    }
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    let backup = path.with_file_name(name);
    if !backup.exists() {
        std::fs::copy(path, &backup).map_err(FixupError::io("back up", path))?;
    }
    Ok(Some(backup))
}
