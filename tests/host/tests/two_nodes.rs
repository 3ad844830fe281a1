//! Two `appliance serve` nodes on one PostgreSQL (issue 16): the store's records, and the locks
//! that order their updates, are in the database, so a job created through one node is handed
//! to exactly one agent when two eligible agents poll the two nodes at the same instant. The
//! nodes share the data directory (keys, chunks); their records are a fresh schema of the
//! database `FERRY_TEST_PG_ENV` names, or of a PostgreSQL this test starts with scripts/pg.

mod common;

use std::net::SocketAddr;

use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::*;
use ferry_format::agent::{EnrollReply, EnrollRequest, JobState};
use ferry_store::config::{Backends, PostgresConfig, RecordsConfig, Storage};
use ferry_test_support::https::{load_trust, Client};

/// Jobs raced for, one per pair of agents.
const ROUNDS: usize = 8;

/// Enroll a machine with `mac` through `c`, then approve it with the CLI as the operator does.
fn enroll_approved(a: &Appliance, c: &Client, enroll: &str, mac: &str) -> EnrollReply {
    let req = serde_json::to_vec(&EnrollRequest {
        inventory: ferry_test_support::inventory::one_blank_disk(mac, 64 << 20),
        version: "test".into(),
        resume: Vec::new(),
    })
    .expect("JSON");
    let reply: EnrollReply =
        serde_json::from_slice(&c.ok("POST", "/agents/enroll", enroll, Some(&req), 200))
            .expect("enroll reply");
    ok(a.appliance()
        .args(["agents", "approve", "--data"])
        .arg(a.data())
        .args([&reply.agent, "--code", &reply.code]));
    reply
}

/// `GET /agents/{id}/job` without waiting: the job's id, or `None` for 204.
fn poll(c: &Client, agent: &EnrollReply) -> Option<String> {
    let (status, body) = c.call(
        "GET",
        &format!("/agents/{}/job?wait=0", agent.agent),
        &agent.credential,
        None,
    );
    match status {
        204 => None,
        200 => {
            let job: serde_json::Value = serde_json::from_slice(&body).expect("job JSON");
            Some(job["id"].as_str().expect("job id").to_string())
        }
        s => panic!(
            "poll {}: {s} {}",
            agent.agent,
            String::from_utf8_lossy(&body)
        ),
    }
}

#[test]
fn a_job_is_handed_out_once_when_two_agents_poll_two_nodes_at_once() {
    let (env, _pg) = ferry_test_support::pg::env_file_or_start();
    let rand = std::process::id()
        ^ std::time::UNIX_EPOCH
            .elapsed()
            .unwrap_or_default()
            .subsec_nanos();
    let backends = Backends {
        storage: Storage::Local,
        records: RecordsConfig::Postgres(PostgresConfig {
            ca: ferry_test_support::pg::ca_of(&env),
            url_file: env,
            schema: format!("two_nodes_{rand:08x}"),
            pool_size: None,
        }),
    };
    let a = Appliance::start_on(&backends);
    let node2 = Node::start(&a.data(), a.dir.path().join("node2.log"));

    let img = a.dir.path().join("disk.img");
    make_image(&img, 8 << 20, 7);
    let snapshot = a.backup("web01", &[&img])["snapshot"]
        .as_str()
        .expect("snapshot id")
        .to_string();

    let trust = load_trust(&a.ca());
    let addr = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    let nodes = [
        Client::new(&trust, addr(a.port), Duration::from_secs(30)),
        Client::new(&trust, addr(node2.port), Duration::from_secs(30)),
    ];
    let enroll = a.token("enroll");

    for round in 0..ROUNDS {
        // Two approved agents of one machine (the same MAC: both may take its job), enrolled
        // through different nodes.
        let mac = format!("52:54:00:00:20:{round:02x}");
        let agents = [
            enroll_approved(&a, &nodes[0], &enroll, &mac),
            enroll_approved(&a, &nodes[1], &enroll, &mac),
        ];
        assert_ne!(agents[0].agent, agents[1].agent);
        let url = format!(
            "https://127.0.0.1:{}",
            if round % 2 == 0 { a.port } else { node2.port }
        );
        ok(a.appliance()
            .env("FERRY_TOKEN", &a.admin)
            .args(["--appliance", &url, "--ca"])
            .arg(a.ca())
            .args(["jobs", "create", "--mac", &mac, "--snapshot", &snapshot])
            .args(["--map", "disk=auto"]));

        // Each agent polls the node the other enrolled through, both at once.
        let start = Arc::new(Barrier::new(2));
        let taken: Vec<Option<String>> = std::thread::scope(|s| {
            let handles: Vec<_> = agents
                .iter()
                .enumerate()
                .map(|(i, agent)| {
                    let start = Arc::clone(&start);
                    let c = &nodes[1 - i];
                    s.spawn(move || {
                        start.wait();
                        poll(c, agent)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("poller"))
                .collect()
        });
        let winners: Vec<_> = taken.iter().flatten().collect();
        assert_eq!(
            winners.len(),
            1,
            "round {round}: the job went to {taken:?} (agents {} and {})",
            agents[0].agent,
            agents[1].agent
        );
        // The record agrees: bound to the agent that got it (it runs once that agent reports).
        let store = ferry_store::Store::open(&a.data()).expect("open the store");
        let job = store.job(winners[0]).expect("the job's record");
        assert_eq!(job.state, JobState::Pending, "round {round}");
        let winner = taken.iter().position(Option::is_some).expect("a winner");
        assert_eq!(job.agent.as_deref(), Some(agents[winner].agent.as_str()));
        // On both nodes, the winner gets the same job again and the loser nothing.
        for c in &nodes {
            assert_eq!(poll(c, &agents[winner]).as_ref(), Some(winners[0]));
            assert_eq!(poll(c, &agents[1 - winner]), None, "round {round}");
        }
    }
}
