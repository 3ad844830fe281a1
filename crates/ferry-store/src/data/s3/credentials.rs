//! S3 credentials: a private file of `KEY=VALUE` lines, or the environment. config.json only
//! names the file.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::S3Error;
use crate::config::S3Config;
use crate::error::{io_err, Result};

/// Access key id, secret and optional session token: from the credentials file the config
/// names (which must be private), else from the environment.
pub(super) fn credentials(cfg: &S3Config) -> Result<(String, String, Option<String>)> {
    match &cfg.credentials {
        Some(path) => read_credentials_file(path),
        None => {
            let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
            match (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
                (Some(id), Some(secret)) => Ok((id, secret, var("AWS_SESSION_TOKEN"))),
                _ => Err(S3Error::NoCredentials {
                    bucket: cfg.bucket.clone(),
                }
                .into()),
            }
        }
    }
}

/// A file of `KEY=VALUE` lines (shell style: `export`, quotes and `#` comments allowed) or of
/// `key = value` lines (the AWS CLI's credentials file, its `[section]` lines ignored).
pub fn read_credentials_file(path: &Path) -> Result<(String, String, Option<String>)> {
    let meta = fs::metadata(path).map_err(io_err("read the S3 credentials file", path))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(S3Error::CredentialsReadable {
            path: path.to_path_buf(),
            mode,
        }
        .into());
    }
    let text = fs::read_to_string(path).map_err(io_err("read the S3 credentials file", path))?;
    let vars = parse_env_lines(&text);
    let get = |k: &'static str| {
        vars.iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.clone())
            .filter(|v| !v.is_empty())
    };
    let missing = |key| S3Error::CredentialsIncomplete {
        path: path.to_path_buf(),
        key,
    };
    let id = get("AWS_ACCESS_KEY_ID").ok_or_else(|| missing("AWS_ACCESS_KEY_ID"))?;
    let secret = get("AWS_SECRET_ACCESS_KEY").ok_or_else(|| missing("AWS_SECRET_ACCESS_KEY"))?;
    Ok((id, secret, get("AWS_SESSION_TOKEN")))
}

/// `KEY=VALUE` / `key = value` pairs of a shell-style env file, in order.
pub fn parse_env_lines(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| {
            let l = l.strip_prefix("export ").unwrap_or(l);
            let (k, v) = l.split_once('=')?;
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(v);
            Some((k.trim().to_string(), v.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::StoreError;

    #[test]
    fn env_files_in_shell_and_aws_styles() {
        let text = "# cluster\nexport AWS_ACCESS_KEY_ID=\"AK\"\nAWS_SECRET_ACCESS_KEY='s=cr'\n\
                    [default]\naws_session_token = tok\nnot a pair\n";
        assert_eq!(
            parse_env_lines(text),
            [
                ("AWS_ACCESS_KEY_ID".to_string(), "AK".to_string()),
                ("AWS_SECRET_ACCESS_KEY".into(), "s=cr".into()),
                ("aws_session_token".into(), "tok".into()),
            ]
        );
    }

    #[test]
    fn credentials_files_must_be_private_and_complete() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("creds");
        fs::write(
            &path,
            "aws_access_key_id = AK\naws_secret_access_key = SK\n",
        )
        .unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        let e = read_credentials_file(&path).unwrap_err();
        assert!(
            matches!(&e, StoreError::S3(s) if matches!(**s, S3Error::CredentialsReadable { mode: 0o640, .. })),
            "{e}"
        );
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            read_credentials_file(&path).unwrap(),
            ("AK".into(), "SK".into(), None)
        );
        fs::write(&path, "AWS_ACCESS_KEY_ID=AK\n").unwrap();
        let e = read_credentials_file(&path).unwrap_err();
        assert!(
            matches!(&e, StoreError::S3(s) if matches!(**s, S3Error::CredentialsIncomplete {
                key: "AWS_SECRET_ACCESS_KEY",
                ..
            })),
            "{e}"
        );
    }
}
