//! `appliance init --storage local|s3 --s3-…` and `--records local|postgres --pg-…`: the flags
//! checked and turned into the `storage` and `records` of config.json (docs/operations.md, "S3
//! storage", "Records on PostgreSQL").

use std::path::{Path, PathBuf};

use ferry_store::config::{PostgresConfig, RecordsConfig, S3Config, Storage, DEFAULT_PG_SCHEMA};

use crate::cli::{RecordsArgs, RecordsKind, StorageArgs, StorageKind};

/// Flags that do not make a storage configuration.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum StorageArgsError {
    #[error("{flag} is for --storage s3: add --storage s3, or leave {flag} out")]
    S3FlagWithLocal { flag: &'static str },
    #[error("--storage s3 needs {flag}")]
    Missing { flag: &'static str },
    #[error(
        "--s3-endpoint {0}: give a URL that starts with https:// (or http:// on a trusted network)"
    )]
    Endpoint(String),
    #[error("{flag} is for --records postgres: add --records postgres, or leave {flag} out")]
    PgFlagWithLocal { flag: &'static str },
    #[error("--records postgres needs {flag}")]
    PgMissing { flag: &'static str },
    #[error("{flag} {path}: {kind}", path = .path.display())]
    File {
        flag: &'static str,
        path: PathBuf,
        kind: std::io::ErrorKind,
    },
}

/// The storage `init` records: paths made absolute (`serve` may start elsewhere), path-style on
/// unless every endpoint is AWS's own.
pub fn from_args(a: StorageArgs) -> Result<Storage, StorageArgsError> {
    if a.storage == StorageKind::Local {
        let given = [
            ("--s3-endpoint", !a.s3_endpoints.is_empty()),
            ("--s3-bucket", a.s3_bucket.is_some()),
            ("--s3-credentials", a.s3_credentials.is_some()),
            ("--s3-path-style", a.s3_path_style.is_some()),
            ("--s3-ca", a.s3_ca.is_some()),
            ("--s3-prefix", !a.s3_prefix.is_empty()),
        ];
        if let Some((flag, _)) = given.iter().find(|(_, g)| *g) {
            return Err(StorageArgsError::S3FlagWithLocal { flag });
        }
        return Ok(Storage::Local);
    }
    let endpoints: Vec<String> = a
        .s3_endpoints
        .iter()
        .map(|e| e.trim().trim_end_matches('/').to_string())
        .filter(|e| !e.is_empty())
        .collect();
    if endpoints.is_empty() {
        return Err(StorageArgsError::Missing {
            flag: "--s3-endpoint URL",
        });
    }
    if let Some(bad) = endpoints
        .iter()
        .find(|e| !(e.starts_with("https://") || e.starts_with("http://")))
    {
        return Err(StorageArgsError::Endpoint(bad.clone()));
    }
    let bucket = a
        .s3_bucket
        .filter(|b| !b.is_empty())
        .ok_or(StorageArgsError::Missing {
            flag: "--s3-bucket NAME",
        })?;
    let aws = endpoints
        .iter()
        .all(|e| host_of(e).ends_with(".amazonaws.com"));
    Ok(Storage::S3(S3Config {
        endpoints,
        bucket,
        region: a.s3_region,
        prefix: a.s3_prefix,
        path_style: a.s3_path_style.unwrap_or(!aws),
        credentials: a
            .s3_credentials
            .map(|p| absolute("--s3-credentials", &p))
            .transpose()?,
        ca: a.s3_ca.map(|p| absolute("--s3-ca", &p)).transpose()?,
    }))
}

/// The data and records backends of `init` and `move-store`.
pub fn backends_from_args(
    storage: StorageArgs,
    records: RecordsArgs,
) -> Result<ferry_store::config::Backends, StorageArgsError> {
    Ok(ferry_store::config::Backends {
        storage: from_args(storage)?,
        records: records_from_args(records)?,
    })
}

/// The records `init` records: the URL file made absolute (the file itself is read, and its
/// mode checked, when init connects).
pub fn records_from_args(a: RecordsArgs) -> Result<RecordsConfig, StorageArgsError> {
    if a.records == RecordsKind::Local {
        let given = [
            ("--pg-url-file", a.pg_url_file.is_some()),
            ("--pg-schema", a.pg_schema.is_some()),
            ("--pg-ca", a.pg_ca.is_some()),
        ];
        if let Some((flag, _)) = given.iter().find(|(_, g)| *g) {
            return Err(StorageArgsError::PgFlagWithLocal { flag });
        }
        return Ok(RecordsConfig::Local);
    }
    let url_file = a.pg_url_file.ok_or(StorageArgsError::PgMissing {
        flag: "--pg-url-file FILE",
    })?;
    Ok(RecordsConfig::Postgres(PostgresConfig {
        url_file: absolute("--pg-url-file", &url_file)?,
        schema: a.pg_schema.unwrap_or_else(|| DEFAULT_PG_SCHEMA.to_string()),
        pool_size: None,
        ca: a.pg_ca.map(|p| absolute("--pg-ca", &p)).transpose()?,
    }))
}

fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split(['/', ':']).next().unwrap_or(rest)
}

fn absolute(flag: &'static str, path: &Path) -> Result<PathBuf, StorageArgsError> {
    std::fs::canonicalize(path).map_err(|e| StorageArgsError::File {
        flag,
        path: path.to_path_buf(),
        kind: e.kind(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3(endpoints: &[&str]) -> StorageArgs {
        StorageArgs {
            storage: StorageKind::S3,
            s3_endpoints: endpoints.iter().map(|e| e.to_string()).collect(),
            s3_bucket: Some("ferry".into()),
            s3_region: "us-east-1".into(),
            ..StorageArgs::default()
        }
    }

    #[test]
    fn storage_flags_table() {
        let Storage::S3(c) =
            from_args(s3(&["http://10.0.0.1:9000/", "http://10.0.0.2:9000"])).unwrap()
        else {
            panic!("not s3")
        };
        assert_eq!(
            c.endpoints,
            ["http://10.0.0.1:9000", "http://10.0.0.2:9000"]
        );
        assert!(c.path_style, "path-style by default off AWS");
        let Storage::S3(c) = from_args(s3(&["https://s3.eu-west-1.amazonaws.com"])).unwrap() else {
            panic!("not s3")
        };
        assert!(!c.path_style, "virtual-hosted style on AWS");
        let mut forced = s3(&["https://s3.eu-west-1.amazonaws.com"]);
        forced.s3_path_style = Some(true);
        assert!(matches!(
            from_args(forced).unwrap(),
            Storage::S3(S3Config {
                path_style: true,
                ..
            })
        ));

        assert_eq!(
            from_args(s3(&[])).unwrap_err(),
            StorageArgsError::Missing {
                flag: "--s3-endpoint URL"
            }
        );
        assert_eq!(
            from_args(s3(&["minio:9000"])).unwrap_err(),
            StorageArgsError::Endpoint("minio:9000".into())
        );
        let mut no_bucket = s3(&["http://m:9000"]);
        no_bucket.s3_bucket = None;
        assert_eq!(
            from_args(no_bucket).unwrap_err(),
            StorageArgsError::Missing {
                flag: "--s3-bucket NAME"
            }
        );
        let mut local = StorageArgs::default();
        assert_eq!(from_args(local.clone()).unwrap(), Storage::Local);
        local.s3_bucket = Some("b".into());
        assert_eq!(
            from_args(local).unwrap_err(),
            StorageArgsError::S3FlagWithLocal {
                flag: "--s3-bucket"
            }
        );
    }

    #[test]
    fn records_flags_table() {
        assert_eq!(
            records_from_args(RecordsArgs::default()).unwrap(),
            RecordsConfig::Local
        );
        let schema_only = RecordsArgs {
            pg_schema: Some("s".into()),
            ..RecordsArgs::default()
        };
        assert_eq!(
            records_from_args(schema_only).unwrap_err(),
            StorageArgsError::PgFlagWithLocal {
                flag: "--pg-schema"
            }
        );
        let mut pg = RecordsArgs {
            records: RecordsKind::Postgres,
            ..RecordsArgs::default()
        };
        assert_eq!(
            records_from_args(pg.clone()).unwrap_err(),
            StorageArgsError::PgMissing {
                flag: "--pg-url-file FILE"
            }
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pg.url");
        std::fs::write(&file, "postgres://u:p@db/ferry\n").unwrap();
        pg.pg_url_file = Some(file.clone());
        let RecordsConfig::Postgres(c) = records_from_args(pg.clone()).unwrap() else {
            panic!("not postgres")
        };
        assert_eq!((c.url_file, c.schema.as_str()), (file, DEFAULT_PG_SCHEMA));
        assert_eq!(c.ca, None);
        // --pg-ca: recorded as given (absolute), and only with --records postgres.
        let ca = dir.path().join("pg-ca.pem");
        pg.pg_ca = Some(ca.clone());
        assert!(matches!(
            records_from_args(pg.clone()).unwrap_err(),
            StorageArgsError::File {
                flag: "--pg-ca",
                ..
            }
        ));
        std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\n").unwrap();
        let RecordsConfig::Postgres(c) = records_from_args(pg).unwrap() else {
            panic!("not postgres")
        };
        assert_eq!(c.ca, Some(ca.clone()));
        let ca_only = RecordsArgs {
            pg_ca: Some(ca),
            ..RecordsArgs::default()
        };
        assert_eq!(
            records_from_args(ca_only).unwrap_err(),
            StorageArgsError::PgFlagWithLocal { flag: "--pg-ca" }
        );
    }
}
