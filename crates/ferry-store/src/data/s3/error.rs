//! What can go wrong with the S3 backend, naming the bucket, key and endpoint.

use std::path::PathBuf;

use crate::error::StoreError;

/// Why the S3 backend could not do something.
#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    /// A request was answered with an error, or no endpoint could be reached. (`cause` is
    /// shown, not chained: object_store's own chain repeats its messages.)
    #[error("{op} s3://{bucket}/{key} (endpoint {endpoint}): {cause}")]
    Request {
        op: &'static str,
        bucket: String,
        key: String,
        endpoint: String,
        cause: object_store::Error,
    },
    #[error(
        "no S3 credentials for bucket {bucket}: give `appliance init --s3-credentials FILE` or set \
         AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the appliance's environment"
    )]
    NoCredentials { bucket: String },
    #[error(
        "the S3 credentials file {path} may be read by group or others (mode {mode:03o}): \
         `chmod 600 {path}`",
        path = .path.display()
    )]
    CredentialsReadable { path: PathBuf, mode: u32 },
    #[error(
        "the S3 credentials file {path} lacks {key}: write `AWS_ACCESS_KEY_ID=...` and \
         `AWS_SECRET_ACCESS_KEY=...` lines",
        path = .path.display()
    )]
    CredentialsIncomplete { path: PathBuf, key: &'static str },
    #[error(
        "read the S3 CA file {path}: {cause}; give --s3-ca a PEM file of CERTIFICATE blocks",
        path = .path.display()
    )]
    Ca {
        path: PathBuf,
        cause: object_store::Error,
    },
    #[error("configure the S3 client for endpoint {endpoint}: {cause}")]
    Client {
        endpoint: String,
        cause: object_store::Error,
    },
    #[error("no S3 endpoint given: name at least one with --s3-endpoint URL")]
    NoEndpoint,
    /// `init`'s check that the bucket is reachable and writable failed.
    #[error(
        "the S3 bucket {bucket} at {endpoints} cannot be used: {step} the probe object {key} \
         failed: {cause}; check that the endpoint is reachable, the bucket exists, the \
         credentials may read, write and delete in it (and --s3-region, --s3-path-style, \
         --s3-ca fit the cluster)"
    )]
    Probe {
        bucket: String,
        endpoints: String,
        step: &'static str,
        key: String,
        cause: Box<StoreError>,
    },
    #[error("the probe object s3://{bucket}/{key} read back differs from what was written")]
    ProbeMismatch { bucket: String, key: String },
}
