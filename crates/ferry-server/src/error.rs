//! API errors: a status and a JSON body that says what to do; `ApiResult` and `parse_json`,
//! which every module with handlers shares.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ferry_format::api::{ErrorBody, MissingChunks};
use ferry_format::ChunkId;
use ferry_store::StoreError;
use serde::de::DeserializeOwned;

/// What a handler returns: its answer, or a status with a JSON error body.
pub(crate) type ApiResult<T> = Result<T, ApiError>;

/// A JSON request body as `T`; 400 naming the parse error otherwise.
pub(crate) fn parse_json<T: DeserializeOwned>(body: &[u8]) -> ApiResult<T> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("parse the request body: {e}")))
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// Set for 409 on an index upload: the chunks to upload first.
    pub missing: Option<Vec<ChunkId>>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            missing: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ApiError {}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        let status = match &e {
            StoreError::Invalid(_) | StoreError::Format(_) | StoreError::Network(_) => {
                StatusCode::BAD_REQUEST
            }
            StoreError::BadChunk(_) => StatusCode::UNPROCESSABLE_ENTITY,
            StoreError::NotFound(_) => StatusCode::NOT_FOUND,
            StoreError::MissingChunks(_) | StoreError::Conflict(_) => StatusCode::CONFLICT,
            StoreError::Io { .. } | StoreError::Key(_) | StoreError::SecretReadable { .. } => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            // The bucket or the records database did not answer (or refused): the agent
            // retries later.
            StoreError::S3(_) | StoreError::Database { .. } => StatusCode::SERVICE_UNAVAILABLE,
            StoreError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            StoreError::Refused(_) => StatusCode::FORBIDDEN,
        };
        let missing = match &e {
            StoreError::MissingChunks(m) => Some(m.clone()),
            _ => None,
        };
        if status.is_server_error() {
            tracing::error!("{e}");
        }
        ApiError {
            status,
            message: e.to_string(),
            missing,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self.missing {
            Some(missing) => (
                self.status,
                Json(MissingChunks {
                    error: self.message,
                    missing,
                }),
            )
                .into_response(),
            None => (
                self.status,
                Json(ErrorBody {
                    error: self.message,
                }),
            )
                .into_response(),
        }
    }
}
