//! The OpenAPI document against the real routes: every `.route(...)` that `src/lib.rs`
//! registers is documented and every documented operation is served (the router answers it
//! with something other than "no such route" or 405); every admin operation refuses a backup
//! and a restore token with 403.

use std::collections::BTreeSet;

use ferry_format::api::Role;
use ferry_server::openapi::{build, OPERATIONS};
use ferry_store::tokens::create_token_at;

mod common;
use common::World;

/// (METHOD, full path) of each route in the router's source.
fn routes_in_source() -> BTreeSet<(String, String)> {
    let src = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/lib.rs")).unwrap();
    let start = src.find("let api = Router::new()").expect("the api router");
    let split = src.find("let counted").expect("the root router");
    let end = src[split..].find(".fallback(").expect("the fallback") + split;
    let mut out = BTreeSet::new();
    for (part, prefix) in [(&src[start..split], "/api/v1"), (&src[split..end], "")] {
        for chunk in part.split(".route(").skip(1) {
            let path = chunk.split('"').nth(1).expect("a path literal");
            for m in ["get", "post", "put", "delete", "patch"] {
                let pat = format!("{m}(");
                let found = chunk.match_indices(&pat).any(|(i, _)| {
                    i == 0
                        || !chunk.as_bytes()[i - 1].is_ascii_alphanumeric()
                            && chunk.as_bytes()[i - 1] != b'_'
                });
                if found {
                    out.insert((m.to_ascii_uppercase(), format!("{prefix}{path}")));
                }
            }
        }
    }
    out
}

#[test]
fn the_document_lists_exactly_the_routes_served() {
    let served = routes_in_source();
    assert!(served.len() > 30, "{served:?}");
    let documented: BTreeSet<(String, String)> = OPERATIONS
        .iter()
        .map(|o| (o.method.to_string(), o.path.to_string()))
        .collect();
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from the OpenAPI document: {undocumented:?}"
    );
    assert!(
        unserved.is_empty(),
        "documented but not in the router: {unserved:?}"
    );
    assert_eq!(
        documented.len(),
        OPERATIONS.len(),
        "an operation listed twice"
    );

    let doc = build();
    assert_eq!(doc["openapi"], "3.0.3");
    let paths = doc["paths"].as_object().unwrap();
    for o in OPERATIONS {
        let op = &paths[o.path][o.method.to_ascii_lowercase()];
        assert_eq!(op["x-ferry-role"], o.role, "{} {}", o.method, o.path);
        let params = o.path.matches('{').count();
        assert_eq!(
            op["parameters"].as_array().map_or(0, Vec::len),
            params,
            "{}",
            o.path
        );
    }
}

#[test]
fn every_documented_operation_is_served_and_admin_ones_refuse_other_roles() {
    let w = World::new();
    let root = w.c.at_root();
    let restore = create_token_at(w._dir.path(), Role::Restore, "2025-01-01T00:00:00Z").unwrap();
    // The document itself, without a credential.
    assert_eq!(w.c.status_without_token("/openapi.json"), 200);
    for o in OPERATIONS {
        let (client, path) = match o.path.strip_prefix("/api/v1") {
            Some(p) => (&w.c, p.replace(['{', '}'], "")),
            None => (&root, o.path.to_string()),
        };
        let body = (o.method != "GET" && o.method != "DELETE").then_some(&b"{}"[..]);
        let (status, answer) = client.call(o.method, &path, &w.admin, body);
        let text = String::from_utf8_lossy(&answer);
        assert!(
            status != 405 && !(status == 404 && text.contains("no such route")),
            "{} {}: {status} {text}",
            o.method,
            o.path
        );
        if o.role == "admin" {
            for (who, token) in [("backup", &w.backup), ("restore", &restore)] {
                let (status, answer) = client.call(o.method, &path, token, body);
                assert_eq!(
                    status,
                    403,
                    "{} {} with a {who} token: {}",
                    o.method,
                    o.path,
                    String::from_utf8_lossy(&answer)
                );
            }
        }
    }
}
