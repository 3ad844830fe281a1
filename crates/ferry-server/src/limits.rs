//! What bounds the server's connections, time and memory (docs/protocol.md, "Limits"):
//!
//! - [`ConnectionGuard`] (an axum-server acceptor under TLS): at most `max_connections` open;
//!   one over the cap is closed at once (clients retry connection errors), before any TLS work.
//!   Each admitted connection is closed when it has moved no byte for `idle_timeout` while no
//!   request of it is being handled: a stalled handshake, a partial HTTP/2 preface, an idle
//!   keep-alive or HTTP/2 connection, a client that stopped reading a response.
//! - TLS handshakes time out (axum-server's `handshake_timeout`), HTTP/1 request heads must
//!   arrive within `header_read_timeout` (hyper; also bounds a keep-alive wait), and every
//!   request body must deliver a frame at least every `idle_timeout` ([`limit_body_idle`]).
//! - [`RouteLimit`]: a semaphore per expensive route (chunk PUT/GET, index upload and read,
//!   commit). A request waits up to `queue_wait` for a permit, then gets 503 with Retry-After
//!   (clients retry 5xx within their retry window). The permit is taken before the body is read
//!   and held until the response body is sent, so memory is bounded by the limits times the
//!   body limits.

use std::future::{ready, Future, Ready};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum_server::accept::Accept;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

use crate::error::ApiError;

/// Limits of `appliance serve`; [`ServerLimits::default`] is what it uses without flags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerLimits {
    /// Open connections at most (each costs a TLS session and buffers, ~100 KiB).
    pub max_connections: usize,
    pub tls_handshake_timeout: Duration,
    /// Time to receive a whole HTTP/1 request head (slowloris), and the keep-alive wait.
    pub header_read_timeout: Duration,
    /// A connection or request body that moves no byte this long (and runs no request) closes.
    pub idle_timeout: Duration,
    /// Concurrent `PUT /chunks/{id}` (each holds up to a 65 MiB body and 64 MiB decompressed).
    pub chunk_puts: usize,
    /// Concurrent `GET /chunks/{id}` (each holds one stored frame).
    pub chunk_gets: usize,
    /// Concurrent index uploads (streamed to disk; checked a block at a time).
    pub index_uploads: usize,
    /// Concurrent `GET .../index` (each holds one index, up to 512 MiB).
    pub index_reads: usize,
    /// Concurrent commits (each reads its indexes whole; body up to 16 MiB).
    pub commits: usize,
    /// Concurrent event posts (body up to 8 MiB).
    pub event_posts: usize,
    /// Concurrent requests of the other JSON routes together (body up to 1 MiB each).
    pub small_requests: usize,
    /// How long a request waits for a route permit before 503.
    pub queue_wait: Duration,
}

impl Default for ServerLimits {
    fn default() -> ServerLimits {
        ServerLimits {
            max_connections: 256,
            tls_handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(120),
            chunk_puts: 8,
            chunk_gets: 32,
            index_uploads: 4,
            index_reads: 4,
            commits: 2,
            event_posts: 8,
            small_requests: 64,
            queue_wait: Duration::from_secs(10),
        }
    }
}

/// Seconds a 503 from a full route tells the client to wait.
const RETRY_AFTER_SECS: &str = "2";

/// Admits at most `max` connections and wraps each in an idle timeout (see the module doc).
#[derive(Clone, Debug)]
pub struct ConnectionGuard {
    permits: Arc<Semaphore>,
    idle: Duration,
    last_refusal_log: Arc<AtomicU64>,
}

impl ConnectionGuard {
    pub fn new(max: usize, idle: Duration) -> ConnectionGuard {
        ConnectionGuard {
            permits: Arc::new(Semaphore::new(max.max(1))),
            idle,
            last_refusal_log: Arc::new(AtomicU64::new(0)),
        }
    }

    fn log_refusal(&self) {
        // One line per 10 s at most: a flood must not flood the log too.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let last = self.last_refusal_log.load(Ordering::Relaxed);
        if now >= last + 10
            && self
                .last_refusal_log
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                "connection limit reached: closing new connections until some end \
                 (appliance serve --max-connections)"
            );
        }
    }
}

impl<S> Accept<TcpStream, S> for ConnectionGuard {
    type Stream = Guarded<TcpStream>;
    type Service = InFlight<S>;
    type Future = Ready<io::Result<(Self::Stream, Self::Service)>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            self.log_refusal();
            // Dropping the stream closes it.
            return ready(Err(io::Error::other("connection limit reached")));
        };
        // Answers go out as a few small TLS records: with Nagle on, the last one waits for the
        // client's delayed ACK (40 ms on Linux) whenever an earlier one is unacknowledged.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!("TCP_NODELAY on an accepted connection: {e}");
        }
        let busy = Arc::new(AtomicUsize::new(0));
        let stream = Guarded {
            inner: stream,
            _permit: permit,
            idle: self.idle,
            busy: busy.clone(),
            last: Instant::now(),
            sleep: Box::pin(tokio::time::sleep(self.idle)),
        };
        ready(Ok((
            stream,
            InFlight {
                inner: service,
                busy,
            },
        )))
    }
}

/// A connection holding its slot, closed (reads and writes fail with `TimedOut`) after
/// `idle` without progress while none of its requests is being handled.
pub struct Guarded<S> {
    inner: S,
    _permit: OwnedSemaphorePermit,
    idle: Duration,
    busy: Arc<AtomicUsize>,
    last: Instant,
    sleep: Pin<Box<Sleep>>,
}

impl<S> Guarded<S> {
    /// Note progress (bytes moved, or a handler running: waiting for it is not idleness), then
    /// fail a pending operation once the connection has been idle too long.
    fn watch<T>(
        &mut self,
        cx: &mut Context<'_>,
        moved: bool,
        r: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if moved || self.busy.load(Ordering::Acquire) > 0 {
            self.last = Instant::now();
        }
        if !r.is_pending() || self.busy.load(Ordering::Acquire) > 0 {
            return r;
        }
        let deadline = self.last + self.idle;
        if self.sleep.deadline() != deadline {
            self.sleep.as_mut().reset(deadline);
        }
        match self.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("connection idle for {}s", self.idle.as_secs()),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        let moved = buf.filled().len() > before;
        this.watch(cx, moved, r)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        let moved = matches!(r, Poll::Ready(Ok(n)) if n > 0);
        this.watch(cx, moved, r)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        let moved = matches!(r, Poll::Ready(Ok(n)) if n > 0);
        this.watch(cx, moved, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_flush(cx);
        this.watch(cx, false, r)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// A connection's service, counting the requests being handled (see [`Guarded`]).
#[derive(Clone)]
pub struct InFlight<S> {
    inner: S,
    busy: Arc<AtomicUsize>,
}

struct BusyGuard(Arc<AtomicUsize>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl<S, R> tower_service::Service<R> for InFlight<S>
where
    S: tower_service::Service<R>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> Self::Future {
        self.busy.fetch_add(1, Ordering::AcqRel);
        let guard = BusyGuard(self.busy.clone());
        let fut = self.inner.call(req);
        Box::pin(async move {
            let res = fut.await;
            drop(guard);
            res
        })
    }
}

/// A bounded route: `name` for messages, at most `permits` requests at a time.
#[derive(Clone, Debug)]
pub struct RouteLimit {
    name: &'static str,
    permits: Arc<Semaphore>,
    wait: Duration,
}

impl RouteLimit {
    pub fn new(name: &'static str, permits: usize, wait: Duration) -> RouteLimit {
        RouteLimit {
            name,
            permits: Arc::new(Semaphore::new(permits.max(1))),
            wait,
        }
    }
}

/// Middleware: take a permit of the route (waiting up to its queue time), else 503 with
/// Retry-After. The permit lives until the response body has been sent.
pub async fn limit_route(State(limit): State<RouteLimit>, req: Request, next: Next) -> Response {
    let permit = match tokio::time::timeout(limit.wait, limit.permits.clone().acquire_owned()).await
    {
        Ok(Ok(p)) => p,
        _ => {
            tracing::warn!("{} busy: answering 503", limit.name);
            let mut res = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "the appliance is handling as many {} as it allows: retry in a few seconds",
                    limit.name
                ),
            )
            .into_response();
            res.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECS));
            return res;
        }
    };
    next.run(req).await.map(|body| {
        Body::new(HeldBody {
            inner: body,
            _permit: permit,
        })
    })
}

/// A response body that keeps a route permit until it is dropped (sent or abandoned).
struct HeldBody {
    inner: Body,
    _permit: OwnedSemaphorePermit,
}

impl HttpBody for HeldBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Middleware: a request body that delivers no frame for the idle timeout fails (the
/// handler answers 4xx and the connection's slot and route permit are freed).
pub async fn limit_body_idle(State(idle): State<Duration>, req: Request, next: Next) -> Response {
    let req = req.map(|body| {
        Body::new(IdleBody {
            inner: body,
            idle,
            sleep: Box::pin(tokio::time::sleep(idle)),
        })
    });
    next.run(req).await
}

struct IdleBody {
    inner: Body,
    idle: Duration,
    sleep: Pin<Box<Sleep>>,
}

impl HttpBody for IdleBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending => match this.sleep.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(axum::Error::new(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no request body data for {}s", this.idle.as_secs()),
                ))))),
                Poll::Pending => Poll::Pending,
            },
            ready => {
                let deadline = Instant::now() + this.idle;
                this.sleep.as_mut().reset(deadline);
                ready
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
