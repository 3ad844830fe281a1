//! `PUT /backups/{session}/disks/{disk}/index` streamed to a file: the body is written to
//! `tmp/<session>/.tmp-…` in blocks of [`WRITE_BLOCK`], refused past [`INDEX_BODY_LIMIT`], and
//! checked from the file a block at a time ([`ferry_store::sessions`]), so an upload costs about
//! two blocks of memory whatever its size (was: the whole body, then the decoded index).

use std::pin::Pin;
use std::time::SystemTime;

use axum::body::{Body, HttpBody};
use axum::http::{HeaderMap, StatusCode};
use ferry_store::sessions::IndexUpload;

use crate::error::ApiError;
use crate::state::{blocking, SharedState};
use crate::INDEX_BODY_LIMIT;

/// Bytes gathered from the body before one write to the file (one blocking task each).
const WRITE_BLOCK: usize = 1 << 20;

/// Receive, check and store an index for a session. The caller has checked the role.
pub async fn receive_index(
    st: SharedState,
    session: String,
    disk: String,
    headers: &HeaderMap,
    mut body: Body,
) -> Result<(), ApiError> {
    refuse_declared_oversize(headers)?;
    let store = st.store.clone();
    let mut upload =
        blocking(move || store.begin_index_upload(&session, &disk, SystemTime::now())).await?;
    let mut block = Vec::with_capacity(WRITE_BLOCK);
    loop {
        let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
        let data = match frame {
            None => break,
            Some(Err(e)) => {
                return Err(ApiError::bad_request(format!(
                    "receive the index: {e}; upload it again"
                )))
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                Err(_) => continue, // trailers
            },
        };
        if upload.written() + (block.len() + data.len()) as u64 > INDEX_BODY_LIMIT as u64 {
            return Err(too_large());
        }
        block.extend_from_slice(&data);
        if block.len() >= WRITE_BLOCK {
            (upload, block) = write_block(upload, block).await?;
        }
    }
    if !block.is_empty() {
        (upload, _) = write_block(upload, block).await?;
    }
    let store = st.store.clone();
    blocking(move || store.finish_index_upload(upload, SystemTime::now())).await
}

/// Append `block` to the upload on a blocking thread; give both back (the block emptied).
async fn write_block(
    mut upload: IndexUpload,
    mut block: Vec<u8>,
) -> Result<(IndexUpload, Vec<u8>), ApiError> {
    blocking(move || {
        upload.write(&block)?;
        block.clear();
        Ok((upload, block))
    })
    .await
}

/// A Content-Length over the limit is refused before a byte is stored.
fn refuse_declared_oversize(headers: &HeaderMap) -> Result<(), ApiError> {
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(n) if n > INDEX_BODY_LIMIT as u64 => Err(too_large()),
        _ => Ok(()),
    }
}

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "the index is larger than {INDEX_BODY_LIMIT} bytes (16 M entries): no disk needs that \
             many; check the agent"
        ),
    )
}
