//! `/healthz` and `/metrics` over the real HTTPS server: who may read what, and that the
//! figures follow what happened (requests by route pattern, chunk uploads, snapshots per
//! machine, agents), in a text Prometheus parses: read by the Prometheus project's Python
//! client (its strict OpenMetrics parser), which also refuses a broken exposition.

use ferry_format::api::Role;
use ferry_store::tokens::create_token_at;

mod common;
use common::World;

/// The value of the first sample of `name` whose labels contain every `labels` pair.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().find_map(|l| {
        let (series, value) = l.rsplit_once(' ')?;
        let (n, rest) = series.split_once('{').unwrap_or((series, ""));
        (n == name
            && labels
                .iter()
                .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))))
        .then(|| value.parse().ok())?
    })
}

#[test]
fn metrics_need_an_admin_or_metrics_token_and_follow_the_store() {
    let w = World::new();
    let root = w.c.at_root();
    // /healthz: no credential.
    assert_eq!(root.status_without_token("/healthz"), 200);
    let health: serde_json::Value =
        serde_json::from_slice(&root.ok("GET", "/healthz", "none", None, 200)).unwrap();
    assert_eq!(health["status"], "ok");

    let (snap, chunks) = w.snapshot("web01", 3);
    w.snapshot("web01", 4);
    w.snapshot("db01", 5);
    let a = w.enroll_approved("52:54:00:00:00:09", &[("vda", 1 << 20, true)]);

    // Who may read it.
    assert_eq!(root.status_without_token("/metrics"), 401);
    root.ok("GET", "/metrics", &w.backup, None, 403);
    root.ok("GET", "/metrics", &w.enroll, None, 403);
    root.ok("GET", "/metrics", &a.credential, None, 403);
    let metrics = create_token_at(w._dir.path(), Role::Metrics, "2025-01-01T00:00:00Z").unwrap();
    // A metrics token reads nothing else.
    w.c.ok("GET", "/snapshots", &metrics, None, 403);
    w.c.ok(
        "GET",
        &format!("/snapshots/{snap}/manifest"),
        &metrics,
        None,
        403,
    );
    w.c.ok(
        "GET",
        &format!("/chunks/{}", chunks[0]),
        &metrics,
        None,
        403,
    );
    let text = String::from_utf8(root.ok("GET", "/metrics", &metrics, None, 200)).unwrap();
    let admin_text = String::from_utf8(root.ok("GET", "/metrics", &w.admin, None, 200)).unwrap();
    assert!(admin_text.contains("ferry_store_chunks"));

    // Exposition shape: HELP/TYPE comments, samples, and the OpenMetrics end marker.
    assert!(text.ends_with("# EOF\n"), "{text}");
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        let (_, v) = l
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("sample line {l:?}"));
        assert!(v.parse::<f64>().is_ok(), "value of {l:?}");
    }
    // Requests are counted under their route pattern, never their path.
    assert!(
        sample(
            &text,
            "ferry_http_requests_total",
            &[("route", "/api/v1/chunks/{id}"), ("method", "PUT")]
        )
        .is_some_and(|n| n >= 3.0),
        "{text}"
    );
    assert!(
        !text.contains(&chunks[0].to_hex()),
        "a chunk id in the metrics"
    );
    assert_eq!(
        sample(
            &text,
            "ferry_http_requests_total",
            &[("route", "/metrics"), ("status", "403")]
        ),
        Some(3.0),
        "{text}"
    );
    // Chunk uploads and the store.
    assert!(
        sample(&text, "ferry_chunk_uploads_total", &[("outcome", "new")]).is_some_and(|n| n > 0.0)
    );
    let stored = sample(&text, "ferry_store_chunks", &[]).unwrap();
    assert!(stored > 0.0);
    assert!(sample(&text, "ferry_store_chunk_bytes", &[]).unwrap() > 0.0);
    assert!(sample(&text, "ferry_store_chunk_references", &[]).unwrap() >= stored - 3.0);
    assert_eq!(
        sample(&text, "ferry_snapshots", &[("machine", "web01")]),
        Some(2.0)
    );
    assert_eq!(
        sample(&text, "ferry_snapshots", &[("machine", "db01")]),
        Some(1.0)
    );
    assert!(sample(
        &text,
        "ferry_snapshot_newest_created_seconds",
        &[("machine", "db01")]
    )
    .is_some_and(|t| t > 1.7e9));
    // Agents.
    assert_eq!(
        sample(&text, "ferry_agents", &[("state", "waiting")]),
        Some(1.0)
    );
    assert!(sample(
        &text,
        "ferry_agent_last_seen_seconds",
        &[("agent", &a.agent)]
    )
    .is_some_and(|t| t > 1.7e9));
}

/// Parse with the Prometheus project's own Python client (Debian's python3-prometheus-client,
/// its strict OpenMetrics parser): every family with its type, and every sample.
fn prometheus_parse(text: &str) -> serde_json::Value {
    use std::io::Write;
    const SCRIPT: &str = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = {}
for f in text_string_to_metric_families(sys.stdin.read()):
    out[f.name] = {"type": f.type,
                   "samples": [[s.name, s.labels, s.value] for s in f.samples]}
print(json.dumps(out))
"#;
    // Debian's interpreter, where scripts/setup installs the package (not a pyenv shim's).
    let mut child = std::process::Command::new("/usr/bin/python3")
        .args(["-c", SCRIPT])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run /usr/bin/python3 (scripts/setup installs python3-prometheus-client)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client refused the exposition: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_exposition_parses_with_prometheus_own_parser() {
    let w = World::new();
    let root = w.c.at_root();
    w.snapshot("web01", 3);
    w.snapshot("web01", 4);
    w.snapshot("db01", 5);
    w.enroll("52:54:00:00:00:0a", &[("vda", 1 << 20, true)]);
    let text = String::from_utf8(root.ok("GET", "/metrics", &w.admin, None, 200)).unwrap();
    let families = prometheus_parse(&text);
    let family = |name: &str| {
        families
            .get(name)
            .unwrap_or_else(|| panic!("no family {name} in {families}"))
    };
    assert_eq!(family("ferry_http_requests")["type"], "counter");
    assert_eq!(family("ferry_store_chunks")["type"], "gauge");
    // Per-machine snapshot counts, as the parser reads them.
    let snaps: std::collections::BTreeMap<String, f64> = family("ferry_snapshots")["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s[1]["machine"].as_str().unwrap().to_string(),
                s[2].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(snaps.get("web01"), Some(&2.0), "{snaps:?}");
    assert_eq!(snaps.get("db01"), Some(&1.0), "{snaps:?}");
    // The parser's value of one counter equals what the text says.
    let puts = family("ferry_http_requests")["samples"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| {
            s[0] == "ferry_http_requests_total"
                && s[1]["route"] == "/api/v1/chunks/{id}"
                && s[1]["method"] == "PUT"
        })
        .map(|s| s[2].as_f64().unwrap())
        .expect("chunk uploads counted");
    assert!(puts >= 9.0, "three snapshots of three chunks: {puts}");
    assert_eq!(
        Some(puts),
        sample(
            &text,
            "ferry_http_requests_total",
            &[("route", "/api/v1/chunks/{id}"), ("method", "PUT")]
        )
    );
    // A broken exposition is refused by the same parser (the check can fail).
    let broken = text.replace("# EOF\n", "");
    let ok = std::process::Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import sys\nfrom prometheus_client.openmetrics.parser import text_string_to_metric_families as p\nlist(p(sys.argv[1]))",
            &broken,
        ])
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
        .success();
    assert!(!ok, "the parser accepted an exposition without # EOF");
}
