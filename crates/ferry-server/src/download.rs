//! Responses of what the store opened ([`ferry_store::reads`]): a file of the local store (a
//! chunk or an index) is sent [`READ_BLOCK`] at a time, never read whole into memory; bytes the
//! S3 backend fetched are sent as they are.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes, HttpBody};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use ferry_store::data::Blob;
use tokio::io::{AsyncRead, ReadBuf};

/// Bytes read from the file per body frame.
const READ_BLOCK: usize = 256 << 10;

/// `application/octet-stream` with the blob's bytes as the body.
pub fn blob_response(blob: Blob) -> Response {
    let body = match blob {
        Blob::File { file, len } => Body::new(FileBody {
            file: tokio::fs::File::from_std(file),
            left: len,
            buf: Vec::new(),
        }),
        Blob::Bytes(bytes) => Body::from(bytes),
    };
    ([(header::CONTENT_TYPE, "application/octet-stream")], body).into_response()
}

struct FileBody {
    file: tokio::fs::File,
    /// Bytes still to send: the length when opened (the file is never written in place).
    left: u64,
    buf: Vec<u8>,
}

impl HttpBody for FileBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        if this.left == 0 {
            return Poll::Ready(None);
        }
        let n = this.left.min(READ_BLOCK as u64) as usize;
        this.buf.resize(n, 0);
        let mut rb = ReadBuf::new(&mut this.buf[..n]);
        match Pin::new(&mut this.file).poll_read(cx, &mut rb) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
            Poll::Ready(Ok(())) if rb.filled().is_empty() => {
                Poll::Ready(Some(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the file became shorter while it was sent",
                ))))
            }
            Poll::Ready(Ok(())) => {
                let data = Bytes::copy_from_slice(rb.filled());
                this.left -= data.len() as u64;
                Poll::Ready(Some(Ok(http_body::Frame::data(data))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.left)
    }
}
