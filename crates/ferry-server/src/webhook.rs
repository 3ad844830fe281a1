//! Webhooks: the appliance POSTs a JSON event to one operator-configured URL when a job changes
//! state, a snapshot is committed, or a migration moves (cutover asked, cutover steps).
//!
//! - Configured by `appliance webhook set` into `DATA/webhook.json` (0600: it holds the HMAC
//!   secret), or with records on PostgreSQL into a record every node reads
//!   ([`ferry_store::state`]); read again before each delivery: no restart needed.
//! - Each body is signed: `X-Ferry-Signature: sha256=HEX(HMAC-SHA256(secret, body))`; the body
//!   carries an id (`X-Ferry-Delivery` too) and its time, so a receiver can refuse replays.
//! - A failing hook never blocks the appliance: events go through a bounded queue to one
//!   delivery thread (a full queue drops the event with a warning), and each delivery is retried
//!   with exponential backoff up to `attempts` times, then dropped with a warning.

use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};
use ferry_store::state::StateDoc;
use ferry_store::Store;
use ring::hmac;
use serde::{Deserialize, Serialize};

/// Events waiting for delivery; beyond this they are dropped (with a warning).
pub const QUEUE: usize = 1024;

/// The webhook configuration ([`StateDoc::Webhook`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: String,
    /// The HMAC-SHA256 key: this text's bytes (as GitHub's and most receivers' webhook secrets).
    pub secret: String,
    /// PEM roots for an https URL; default: the system's bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    /// Deliveries tried per event.
    pub attempts: u32,
    /// Wait before the first retry, in milliseconds; doubled each time, at most 5 minutes.
    pub backoff_ms: u64,
}

/// The system's CA bundle (Debian's ca-certificates).
pub const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

impl WebhookConfig {
    pub fn check(&self) -> Result<()> {
        let scheme_ok = self.url.starts_with("https://") || self.url.starts_with("http://");
        if !scheme_ok || self.url.len() > 2048 || self.url.chars().any(char::is_whitespace) {
            bail!(
                "use webhook URL {:?}: it must be an http:// or https:// URL",
                self.url
            );
        }
        if self.secret.len() < 16 || self.secret.chars().any(char::is_whitespace) {
            bail!("the webhook secret must be at least 16 characters, without spaces");
        }
        if self.attempts == 0 || self.attempts > 20 {
            bail!("use --attempts between 1 and 20");
        }
        Ok(())
    }
}

/// Where the configuration is kept, for messages: `DATA/webhook.json`, or its record in
/// PostgreSQL, which every node of the store reads.
pub fn location(store: &Store) -> String {
    store.state_location(StateDoc::Webhook)
}

/// The configuration, `None` when no webhook is set.
pub fn load(store: &Store) -> Result<Option<WebhookConfig>> {
    let at = || location(store);
    match store
        .state_get(StateDoc::Webhook)
        .with_context(|| format!("read {}", at()))?
    {
        Some(b) => {
            let c: WebhookConfig =
                serde_json::from_slice(&b).with_context(|| format!("parse {}", at()))?;
            c.check()?;
            Ok(Some(c))
        }
        None => Ok(None),
    }
}

pub fn save(store: &Store, c: &WebhookConfig) -> Result<()> {
    c.check()?;
    let text = serde_json::to_vec_pretty(c)?;
    store
        .state_put(StateDoc::Webhook, &text)
        .with_context(|| format!("write {}", location(store)))?;
    Ok(())
}

/// False if none was set.
pub fn remove(store: &Store) -> Result<bool> {
    store
        .state_delete(StateDoc::Webhook)
        .with_context(|| format!("remove {}", location(store)))
}

/// `sha256=HEX`: what `X-Ferry-Signature` carries for `body`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes()), body);
    format!("sha256={}", hex::encode(tag.as_ref()))
}

/// One event as POSTed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Delivery {
    /// `evt-…`, also in `X-Ferry-Delivery`: the same for every retry of one event.
    pub id: String,
    /// `job.succeeded`, `snapshot.committed`, `migration.cutting-over`, …
    pub event: String,
    /// RFC 3339 UTC.
    pub time: String,
    pub appliance: String,
    pub data: serde_json::Value,
}

/// The server's side: a bounded queue to the delivery thread.
pub struct Webhooks {
    tx: SyncSender<Delivery>,
    appliance: String,
}

impl Webhooks {
    /// Starts the delivery thread for `store` (its configuration is read before each event).
    pub fn start(store: Store, appliance: String) -> Webhooks {
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let spawned = std::thread::Builder::new()
            .name("webhooks".into())
            .spawn(move || deliver_all(&store, rx));
        if let Err(e) = spawned {
            tracing::warn!(
                "webhooks: cannot start the delivery thread: {e}; no webhook will be sent"
            );
        }
        Webhooks { tx, appliance }
    }

    /// Queues an event; never waits.
    pub fn emit(&self, event: &str, data: serde_json::Value) {
        let d = Delivery {
            id: format!("evt-{}", random_hex(8)),
            event: event.to_owned(),
            time: ferry_store::snapshots::rfc3339(SystemTime::now()),
            appliance: self.appliance.clone(),
            data,
        };
        match self.tx.try_send(d) {
            Ok(()) => {}
            Err(TrySendError::Full(d)) => tracing::warn!(
                "webhooks: {QUEUE} events wait already (is the hook down?); {} {} dropped",
                d.event,
                d.id
            ),
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    // SystemRandom only fails when the OS has no randomness; an id then stays zero.
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    hex::encode(b)
}

/// A fresh secret: 32 random bytes as 64 hex characters.
pub fn new_secret() -> String {
    random_hex(32)
}

fn deliver_all(store: &Store, rx: Receiver<Delivery>) {
    for d in rx {
        let cfg = match load(store) {
            Ok(Some(c)) => c,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!("webhooks: {e:#}; {} {} not sent", d.event, d.id);
                continue;
            }
        };
        if let Err(e) = deliver(&cfg, &d) {
            tracing::warn!(
                "webhooks: {} {} to {} dropped: {e:#}",
                d.event,
                d.id,
                cfg.url
            );
        }
    }
}

/// Sends one event with retries; `Err` once every attempt failed.
pub fn deliver(cfg: &WebhookConfig, d: &Delivery) -> Result<()> {
    let agent = agent(cfg)?;
    let body = serde_json::to_vec(d)?;
    let sig = signature(&cfg.secret, &body);
    let mut wait = Duration::from_millis(cfg.backoff_ms);
    let mut last = String::new();
    for attempt in 1..=cfg.attempts {
        let res = agent
            .post(&cfg.url)
            .header("Content-Type", "application/json")
            .header("X-Ferry-Event", &d.event)
            .header("X-Ferry-Delivery", &d.id)
            .header("X-Ferry-Signature", &sig)
            .send(&body[..]);
        match res {
            Ok(r) if r.status().is_success() => {
                tracing::debug!(
                    "webhooks: {} {} delivered (attempt {attempt})",
                    d.event,
                    d.id
                );
                return Ok(());
            }
            Ok(r) => last = format!("HTTP {}", r.status().as_u16()),
            Err(e) => last = e.to_string(),
        }
        if attempt < cfg.attempts {
            tracing::info!(
                "webhooks: {} {} attempt {attempt} failed ({last}); again in {} ms",
                d.event,
                d.id,
                wait.as_millis()
            );
            std::thread::sleep(wait);
            wait = (wait * 2).min(Duration::from_secs(300));
        }
    }
    bail!("{} attempts failed, the last: {last}", cfg.attempts)
}

fn agent(cfg: &WebhookConfig) -> Result<ureq::Agent> {
    let mut tls = ureq::tls::TlsConfig::builder();
    if cfg.url.starts_with("https://") {
        let path = cfg
            .ca
            .clone()
            .unwrap_or_else(|| PathBuf::from(SYSTEM_ROOTS));
        let pem = std::fs::read(&path)
            .with_context(|| format!("read the webhook CA bundle {}", path.display()))?;
        use rustls_pki_types::pem::PemObject;
        let roots: Vec<ureq::tls::Certificate<'static>> =
            rustls_pki_types::CertificateDer::pem_slice_iter(&pem)
                .filter_map(|c| c.ok())
                .map(|c| ureq::tls::Certificate::from_der(c.as_ref()).to_owned())
                .collect();
        if roots.is_empty() {
            bail!("{} holds no PEM certificate", path.display());
        }
        tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&roots));
    }
    Ok(ureq::Agent::config_builder()
        .tls_config(tls.build())
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .user_agent(format!("ferry-appliance/{}", env!("CARGO_PKG_VERSION")))
        .build()
        .new_agent())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(url: &str) -> WebhookConfig {
        WebhookConfig {
            url: url.into(),
            secret: "00".repeat(32),
            ca: None,
            attempts: 3,
            backoff_ms: 10,
        }
    }

    #[test]
    fn configurations_are_checked() {
        assert!(cfg("https://hooks.example/ferry").check().is_ok());
        assert!(cfg("http://127.0.0.1:9/x").check().is_ok());
        assert!(cfg("ftp://x").check().is_err());
        assert!(cfg("https://a b").check().is_err());
        let mut short = cfg("https://x");
        short.secret = "short".into();
        assert!(short.check().is_err());
        let mut none = cfg("https://x");
        none.attempts = 0;
        assert!(none.check().is_err());
    }

    #[test]
    fn the_signature_is_rfc_4231_hmac_sha256() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
