//! The server's resource limits, in-process with short timeouts: slowloris heads, stalled
//! handshakes, partial HTTP/2 prefaces and idle keep-alives are closed in bounded time; a
//! connection over the cap is closed at once; a full route answers 503 with Retry-After after its
//! queue wait, or serves a request that waited for a slot.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_server::commands::init_store_with;
use ferry_server::limits::ServerLimits;
use ferry_server::RunningServer;
use ferry_test_support::https::load_trust;
use ferry_test_support::storage::test_storage;
use ferry_test_support::store::patterned_chunk;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

type Tls = StreamOwned<ClientConnection, TcpStream>;

struct Fixture {
    _dir: tempfile::TempDir,
    rt: tokio::runtime::Runtime,
    server: Option<RunningServer>,
    tls: Arc<ClientConfig>,
    admin: String,
}

impl Fixture {
    fn new(limits: ServerLimits) -> Fixture {
        Self::with(limits, &test_storage())
    }

    fn with(limits: ServerLimits, backends: &ferry_store::config::Backends) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let init = init_store_with(dir.path(), &[], backends).unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let server = rt
            .block_on(ferry_server::start_with(
                dir.path(),
                "127.0.0.1:0".parse().unwrap(),
                limits,
            ))
            .unwrap();
        Fixture {
            tls: client_config(&init.trust_bundle),
            _dir: dir,
            rt,
            server: Some(server),
            admin: init.admin_token,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.server.as_ref().unwrap().addr
    }

    /// A TLS connection, handshake done (HTTP/1.1 by ALPN).
    fn connect(&self) -> Tls {
        let tcp = TcpStream::connect(self.addr()).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let conn = ClientConnection::new(
            self.tls.clone(),
            ServerName::IpAddress(self.addr().ip().into()),
        )
        .unwrap();
        let mut s = StreamOwned::new(conn, tcp);
        while s.conn.is_handshaking() {
            s.conn.complete_io(&mut s.sock).unwrap();
        }
        s
    }

    fn request(&self, s: &mut Tls, method: &str, path: &str, body: &[u8]) {
        let head = format!(
            "{method} /api/v1{path} HTTP/1.1\r\nHost: appliance\r\nAuthorization: Bearer {}\r\n\
             Content-Length: {}\r\n\r\n",
            self.admin,
            body.len()
        );
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(body).unwrap();
        s.flush().unwrap();
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            let _ = self
                .rt
                .block_on(server.shutdown(Duration::from_millis(100)));
        }
    }
}

fn client_config(bundle: &Path) -> Arc<ClientConfig> {
    let trust = load_trust(bundle);
    let mut roots = RootCertStore::empty();
    for der in &trust.ca_certs {
        roots.add(CertificateDer::from(der.clone())).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(cfg)
}

/// Read until the server closes the connection; how long that took. Panics if it stays open
/// past `limit`.
fn time_to_close(s: &mut impl Read, limit: Duration) -> Duration {
    let t = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return t.elapsed(),
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {
                panic!("still open after {:?}", t.elapsed())
            }
            // A reset or a TLS close without close_notify: closed all the same.
            Err(_) => return t.elapsed(),
        }
        assert!(t.elapsed() < limit, "still open after {:?}", t.elapsed());
    }
}

/// The status line and headers of one response (the body is left unread).
fn read_head(s: &mut impl Read) -> String {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut b).unwrap(), 1, "connection closed mid-head");
        head.push(b[0]);
    }
    String::from_utf8(head).unwrap()
}

fn short_timeouts() -> ServerLimits {
    ServerLimits {
        tls_handshake_timeout: Duration::from_secs(2),
        header_read_timeout: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(3),
        ..ServerLimits::default()
    }
}

#[test]
fn slowloris_head_is_closed_within_the_header_timeout() {
    let f = Fixture::new(short_timeouts());
    let mut s = f.connect();
    // Half a request head, then a byte a second: still not a head after the timeout.
    s.write_all(b"GET /api/v1/hello HTTP/1.1\r\nHost: appliance\r\nX-Slow: ")
        .unwrap();
    s.flush().unwrap();
    s.sock
        .set_read_timeout(Some(Duration::from_millis(900)))
        .unwrap();
    let t = Instant::now();
    let mut buf = [0u8; 256];
    let closed = loop {
        if s.write_all(b"a").and_then(|_| s.flush()).is_err() {
            break t.elapsed();
        }
        match s.read(&mut buf) {
            Ok(0) => break t.elapsed(),
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {}
            Ok(_) | Err(_) => break t.elapsed(),
        }
        assert!(t.elapsed() < Duration::from_secs(8), "slowloris kept open");
    };
    eprintln!("slowloris connection closed after {closed:?} (header timeout 2 s)");
    assert!(closed >= Duration::from_millis(1500), "{closed:?}");
}

#[test]
fn stalled_handshake_and_partial_h2_preface_are_closed() {
    let f = Fixture::new(short_timeouts());
    // TCP only: no ClientHello ever.
    let mut raw = TcpStream::connect(f.addr()).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let t = time_to_close(&mut raw, Duration::from_secs(6));
    eprintln!("stalled TLS handshake closed after {t:?} (handshake timeout 2 s)");
    assert!(t >= Duration::from_millis(1500), "{t:?}");

    // TLS done, then 16 bytes of the 24-byte HTTP/2 preface: the version sniffing would wait
    // forever; the idle timeout ends it.
    let mut s = f.connect();
    s.write_all(b"PRI * HTTP/2.0\r\n").unwrap();
    s.flush().unwrap();
    let t = time_to_close(&mut s, Duration::from_secs(8));
    eprintln!("partial HTTP/2 preface closed after {t:?} (idle timeout 3 s)");
    assert!(t >= Duration::from_millis(2500), "{t:?}");
}

#[test]
fn idle_http2_connection_is_closed() {
    let f = Fixture::new(short_timeouts());
    let mut s = f.connect();
    // The whole preface and an empty SETTINGS frame, then nothing: an HTTP/2 connection without
    // a stream.
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .unwrap();
    s.flush().unwrap();
    let t = time_to_close(&mut s, Duration::from_secs(8));
    eprintln!("idle HTTP/2 connection closed after {t:?} (idle timeout 3 s)");
    assert!(t >= Duration::from_millis(2500), "{t:?}");
}

#[test]
fn idle_keep_alive_connection_is_closed() {
    let f = Fixture::new(short_timeouts());
    let mut s = f.connect();
    f.request(&mut s, "GET", "/hello", b"");
    assert!(read_head(&mut s).starts_with("HTTP/1.1 200"));
    let t = time_to_close(&mut s, Duration::from_secs(8));
    eprintln!("idle keep-alive connection closed after {t:?}");
}

#[test]
fn connections_over_the_cap_are_closed_at_once_and_admitted_again_later() {
    let f = Fixture::new(ServerLimits {
        max_connections: 3,
        tls_handshake_timeout: Duration::from_secs(30),
        ..ServerLimits::default()
    });
    // Three connections hold every slot (stalled in the handshake).
    let held: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(f.addr()).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..5 {
        let mut extra = TcpStream::connect(f.addr()).unwrap();
        extra
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let t = time_to_close(&mut extra, Duration::from_secs(2));
        assert!(
            t < Duration::from_secs(1),
            "over the cap: closed after {t:?}"
        );
    }
    drop(held);
    std::thread::sleep(Duration::from_millis(300));
    let mut s = f.connect();
    f.request(&mut s, "GET", "/hello", b"");
    assert!(read_head(&mut s).starts_with("HTTP/1.1 200"));
}

#[test]
fn a_full_route_answers_503_with_retry_after_or_serves_a_request_that_waited() {
    // The queue's timing, not the store's: local, since on S3 A's chunk write alone can outlast
    // B's 1 s wait on a loaded machine.
    let f = Fixture::with(
        ServerLimits {
            chunk_puts: 1,
            queue_wait: Duration::from_secs(1),
            ..ServerLimits::default()
        },
        &ferry_store::config::Backends::default(),
    );
    let (a, fa) = patterned_chunk(3);
    let (b, fb) = patterned_chunk(5);
    // A holds the only chunk-upload slot: its body is half sent.
    let mut slow = f.connect();
    let half = fa.len() / 2;
    let head = format!(
        "PUT /api/v1/chunks/{a} HTTP/1.1\r\nHost: appliance\r\nAuthorization: Bearer {}\r\n\
         Content-Length: {}\r\n\r\n",
        f.admin,
        fa.len()
    );
    slow.write_all(head.as_bytes()).unwrap();
    slow.write_all(&fa[..half]).unwrap();
    slow.flush().unwrap();
    std::thread::sleep(Duration::from_millis(300));

    // B waits its queue time, then gets 503 with Retry-After.
    let mut s = f.connect();
    let t = Instant::now();
    f.request(&mut s, "PUT", &format!("/chunks/{b}"), &fb);
    let head = read_head(&mut s);
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("retry-after: 2"),
        "{head}"
    );
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );

    // B again, and A finishes within B's queue wait: B is served, not refused.
    let mut s = f.connect();
    f.request(&mut s, "PUT", &format!("/chunks/{b}"), &fb);
    std::thread::sleep(Duration::from_millis(400));
    slow.write_all(&fa[half..]).unwrap();
    slow.flush().unwrap();
    assert!(read_head(&mut slow).starts_with("HTTP/1.1 201"));
    let head = read_head(&mut s);
    assert!(head.starts_with("HTTP/1.1 201"), "{head}");
}

#[test]
fn a_stalled_request_body_is_cut_off_after_the_idle_timeout() {
    let f = Fixture::new(ServerLimits {
        idle_timeout: Duration::from_secs(2),
        ..ServerLimits::default()
    });
    let (a, fa) = patterned_chunk(3);
    let mut s = f.connect();
    let head = format!(
        "PUT /api/v1/chunks/{a} HTTP/1.1\r\nHost: appliance\r\nAuthorization: Bearer {}\r\n\
         Content-Length: {}\r\n\r\n",
        f.admin,
        fa.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(&fa[..100]).unwrap();
    s.flush().unwrap();
    let t = Instant::now();
    let head = read_head(&mut s);
    eprintln!(
        "stalled body answered after {:?}: {}",
        t.elapsed(),
        head.lines().next().unwrap_or("")
    );
    assert!(head.starts_with("HTTP/1.1 4"), "{head}");
    assert!(t.elapsed() < Duration::from_secs(6));
}

#[test]
fn an_index_declared_larger_than_512_mib_is_refused_before_its_body() {
    let f = Fixture::new(ServerLimits::default());
    let mut s = f.connect();
    f.request(
        &mut s,
        "POST",
        "/backups",
        br#"{"machine":"big","chunk_size":65536}"#,
    );
    let head = read_head(&mut s);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length: ")
                .map(str::to_string)
        })
        .and_then(|v| v.trim().parse().ok())
        .expect("content-length");
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let session = v["session"].as_str().unwrap().to_string();

    // 600 MiB announced, nothing sent: answered at once, nothing stored.
    let mut s = f.connect();
    let head = format!(
        "PUT /api/v1/backups/{session}/disks/sda/index HTTP/1.1\r\nHost: appliance\r\n\
         Authorization: Bearer {}\r\nContent-Length: {}\r\n\r\n",
        f.admin,
        600u64 << 20
    );
    s.write_all(head.as_bytes()).unwrap();
    s.flush().unwrap();
    let t = Instant::now();
    let head = read_head(&mut s);
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    assert!(t.elapsed() < Duration::from_secs(2));
    assert!(!f._dir.path().join("tmp").join(&session).exists());
}
