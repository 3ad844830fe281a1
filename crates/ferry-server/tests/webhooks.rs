//! Webhooks over the real server: a receiver on 127.0.0.1 gets `snapshot.committed` and the
//! job's state changes, signed with the configured secret (checked here with ring's HMAC
//! verify); a 500 is retried with the same delivery id; a hook that never answers does not
//! slow the request that caused the event.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_format::agent::JobFor;
use ferry_server::webhook::{self, WebhookConfig};

mod common;
use common::World;

const SECRET: &str = "a-receivers-shared-secret-of-some-length";

#[derive(Clone, Debug)]
struct Received {
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

/// Answers each request with the next status of `script` (then 200), one request per
/// connection, and records them.
fn receiver(script: Vec<u16>) -> (u16, Arc<Mutex<Vec<Received>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    std::thread::spawn(move || {
        let mut script = script.into_iter();
        for conn in l.incoming() {
            let Ok(mut s) = conn else { continue };
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut headers = BTreeMap::new();
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            loop {
                line.clear();
                r.read_line(&mut line).unwrap();
                let l = line.trim_end();
                if l.is_empty() {
                    break;
                }
                if let Some((k, v)) = l.split_once(':') {
                    headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
                }
            }
            let n: usize = headers["content-length"].parse().unwrap();
            let mut body = vec![0; n];
            r.read_exact(&mut body).unwrap();
            g.lock().unwrap().push(Received { headers, body });
            let status = script.next().unwrap_or(200);
            let _ = write!(
                s,
                "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
        }
    });
    (port, got)
}

fn configure(w: &World, url: String, attempts: u32, backoff_ms: u64) {
    webhook::save(
        &w.store,
        &WebhookConfig {
            url,
            secret: SECRET.into(),
            ca: None,
            attempts,
            backoff_ms,
        },
    )
    .unwrap();
}

fn wait_for(got: &Mutex<Vec<Received>>, n: usize) -> Vec<Received> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        let v = got.lock().unwrap().clone();
        if v.len() >= n {
            return v;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{} deliveries, not {n}", got.lock().unwrap().len());
}

fn verified(r: &Received) -> serde_json::Value {
    let sig = r.headers["x-ferry-signature"]
        .strip_prefix("sha256=")
        .unwrap();
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET.as_bytes());
    ring::hmac::verify(&key, &r.body, &hex::decode(sig).unwrap()).expect("the signature");
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["event"], r.headers["x-ferry-event"].as_str());
    assert_eq!(v["id"], r.headers["x-ferry-delivery"].as_str());
    v
}

#[test]
fn events_are_signed_retried_and_never_hold_up_the_appliance() {
    let w = World::new();
    let (port, got) = receiver(vec![500]);
    configure(&w, format!("http://127.0.0.1:{port}/hook"), 3, 50);

    // A commit: refused once with 500, delivered again with the same id.
    let (snap, _) = w.snapshot("web01", 3);
    let v = wait_for(&got, 2);
    assert_eq!(
        v[0].headers["x-ferry-delivery"],
        v[1].headers["x-ferry-delivery"]
    );
    let e = verified(&v[1]);
    assert_eq!(e["event"], "snapshot.committed");
    assert_eq!(e["data"]["snapshot"], snap.as_str());
    assert_eq!(e["data"]["machine"], "web01");
    assert_eq!(e["data"]["disks"][0], "sda");

    // A job's state changes.
    let a = w.enroll_approved("52:54:00:00:00:07", &[("sda", 1 << 20, true)]);
    let job = w.create_job(&snap, JobFor::Agent(a.agent.clone()), "sda=auto");
    w.poll(&a, 0).expect("the job");
    let path = format!("/agents/{}/jobs/{}/state", a.agent, job.id);
    w.c.ok("PUT", &path, &a.credential, Some(br#""running""#), 204);
    w.c.ok("PUT", &path, &a.credential, Some(br#""succeeded""#), 204);
    let v = wait_for(&got, 4);
    let events: Vec<serde_json::Value> = v[2..].iter().map(verified).collect();
    assert_eq!(events[0]["event"], "job.running");
    assert_eq!(events[1]["event"], "job.succeeded");
    assert_eq!(events[1]["data"]["job"], job.id.as_str());
    assert_eq!(events[1]["data"]["agent"], a.agent.as_str());
    assert_eq!(events[1]["data"]["kind"], "restore");

    // A tampered body fails the receiver's check.
    let mut forged = v[3].clone();
    forged.body[10] ^= 1;
    let sig = forged.headers["x-ferry-signature"]
        .strip_prefix("sha256=")
        .unwrap()
        .to_owned();
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET.as_bytes());
    assert!(ring::hmac::verify(&key, &forged.body, &hex::decode(sig).unwrap()).is_err());

    // A hook that accepts and never answers, retried with a long backoff: the commit that
    // causes the event answers at once.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    configure(
        &w,
        format!(
            "http://127.0.0.1:{}/hook",
            silent.local_addr().unwrap().port()
        ),
        5,
        30_000,
    );
    let start = Instant::now();
    w.snapshot("web02", 5);
    w.snapshot("web03", 6);
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "two commits took {:?} with a silent hook",
        start.elapsed()
    );
}
