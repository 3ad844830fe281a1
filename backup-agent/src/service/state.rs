//! What the service keeps between runs, in its state directory: the source credential
//! (`source.cred`, 0600), written once after enrollment. The credential is a secret: it is
//! never logged, and it reaches the disk only through an atomic write (a 0600 temporary file
//! in the same directory, fsync, rename, fsync of the directory), so a crash leaves either no
//! credential or the whole one.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ferry_format::source::credential_machine;

/// The credential's file name in the state directory.
pub const CREDENTIAL_FILE: &str = "source.cred";
/// A credential is `src-<machine>.<64 hex>`: far below this.
const MAX_CREDENTIAL_BYTES: u64 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{path} does not hold a source credential (src-MACHINE.<64 hex>): remove it and start the service again with enroll_token_file set, to enroll again")]
    NotACredential { path: PathBuf },
    #[error("{path} holds the credential of machine {found}, but the config names machine {want}: remove it and enroll again with a backup token for {want}, or fix `machine`")]
    OtherMachine {
        path: PathBuf,
        found: String,
        want: String,
    },
    #[error("{path} is readable by others (mode {mode:o}): it holds a secret; run `chmod 600 {path}`, or remove it and enroll again if others may have read it")]
    Exposed { path: PathBuf, mode: u32 },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StateError + 'a {
    move |source| StateError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Create the state directory (0700) when it does not exist yet.
pub fn ensure_dir(dir: &Path) -> Result<(), StateError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_err("create the state directory", dir))
}

/// The credential for `machine` kept at `path`, `None` when the file does not exist.
pub fn read_credential(path: &Path, machine: &str) -> Result<Option<String>, StateError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("open the credential", path)(e)),
    };
    let mode = file
        .metadata()
        .map_err(io_err("stat the credential", path))?
        .permissions()
        .mode()
        & 0o777;
    if mode & 0o077 != 0 {
        return Err(StateError::Exposed {
            path: path.to_path_buf(),
            mode,
        });
    }
    let mut text = String::new();
    file.take(MAX_CREDENTIAL_BYTES)
        .read_to_string(&mut text)
        .map_err(io_err("read the credential", path))?;
    let credential = text.trim().to_string();
    check(path, &credential, machine)?;
    Ok(Some(credential))
}

/// The credential names `machine`.
pub fn check(path: &Path, credential: &str, machine: &str) -> Result<(), StateError> {
    match credential_machine(credential) {
        None => Err(StateError::NotACredential {
            path: path.to_path_buf(),
        }),
        Some(m) if m != machine => Err(StateError::OtherMachine {
            path: path.to_path_buf(),
            found: m.to_string(),
            want: machine.to_string(),
        }),
        Some(_) => Ok(()),
    }
}

/// Write `credential` to `path` atomically with mode 0600.
pub fn write_credential(path: &Path, credential: &str) -> Result<(), StateError> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| CREDENTIAL_FILE.into());
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let written = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io_err("create", &tmp))?;
        f.write_all(format!("{credential}\n").as_bytes())
            .map_err(io_err("write", &tmp))?;
        f.sync_all().map_err(io_err("fsync", &tmp))?;
        fs::rename(&tmp, path).map_err(io_err("rename the credential into", path))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err("fsync the state directory", dir))
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cred(machine: &str) -> String {
        format!("src-{machine}.{}", "0a".repeat(32))
    }

    #[test]
    fn written_once_0600_and_read_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("state");
        ensure_dir(&state).expect("state dir");
        let mode = fs::metadata(&state).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let path = state.join(CREDENTIAL_FILE);
        assert_eq!(read_credential(&path, "web1").expect("absent"), None);
        write_credential(&path, &cred("web1")).expect("write");
        let mode = fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            read_credential(&path, "web1").expect("read"),
            Some(cred("web1"))
        );
        // Nothing else is left in the directory (no temporary file).
        let names: Vec<_> = fs::read_dir(&state)
            .expect("ls")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, [CREDENTIAL_FILE]);
    }

    #[test]
    fn refuses_what_is_not_this_machines_credential() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(CREDENTIAL_FILE);
        write_credential(&path, &cred("db1")).expect("write");
        let e = read_credential(&path, "web1").expect_err("other machine");
        assert!(matches!(e, StateError::OtherMachine { .. }), "{e}");
        write_credential(&path, "hello").expect("write");
        let e = read_credential(&path, "web1").expect_err("not a credential");
        assert!(matches!(e, StateError::NotACredential { .. }), "{e}");
        write_credential(&path, &cred("web1")).expect("write");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        let e = read_credential(&path, "web1").expect_err("exposed");
        assert!(e.to_string().contains("chmod 600"), "{e}");
    }
}
