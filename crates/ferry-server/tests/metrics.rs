//! `/healthz` and `/metrics` over the real HTTPS server: who may read what, and that the
//! figures follow what happened (requests by route pattern, chunk uploads, snapshots per
//! machine, agents), in a text Prometheus parses (checked by its own grammar's rules here:
//! every sample line is `name{labels} value`).

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
