//! `appliance webhook set|show|remove|test` over ferry_server::webhook.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{bail, Context, Result};
use ferry_server::webhook::{self, Delivery, WebhookConfig};

/// `500ms`, `2s`, `1m` → milliseconds.
fn parse_backoff(text: &str) -> Result<u64> {
    let t = text.trim();
    let (num, mult) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1000)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60_000)
    } else {
        (t, 1000)
    };
    match num.trim().parse::<u64>() {
        Ok(n) if n * mult <= 300_000 => Ok(n * mult),
        _ => bail!("use --backoff like 500ms, 2s or 1m (at most 5m), not {text:?}"),
    }
}

fn need_store(data: &Path) -> Result<ferry_store::Store> {
    ferry_store::config::StoreConfig::load(data).with_context(|| {
        format!(
            "{} is not an appliance store (run `appliance init`)",
            data.display()
        )
    })?;
    ferry_store::Store::open(data).with_context(|| format!("open the store in {}", data.display()))
}

pub fn set(
    data: &Path,
    url: String,
    secret_file: Option<&Path>,
    ca: Option<PathBuf>,
    attempts: u32,
    backoff: &str,
) -> Result<()> {
    let store = need_store(data)?;
    let generated = secret_file.is_none();
    let secret = match secret_file {
        Some(f) => std::fs::read_to_string(f)
            .with_context(|| format!("read the secret file {}", f.display()))?
            .trim()
            .to_owned(),
        None => webhook::new_secret(),
    };
    if let Some(ca) = &ca {
        std::fs::metadata(ca).with_context(|| format!("read the CA file {}", ca.display()))?;
    }
    let cfg = WebhookConfig {
        url,
        secret,
        ca,
        attempts,
        backoff_ms: parse_backoff(backoff)?,
    };
    webhook::save(&store, &cfg)?;
    if cfg.url.starts_with("http://") {
        eprintln!("warning: {} is plain HTTP: events travel in clear (the signature still proves their origin)", cfg.url);
    }
    if generated {
        println!("{}", cfg.secret);
        eprintln!(
            "webhook set: events go to {}; the HMAC secret above is shown once (it is stored in {}): give it to the receiver, which checks X-Ferry-Signature",
            cfg.url,
            webhook::location(&store)
        );
    } else {
        eprintln!("webhook set: events go to {}", cfg.url);
    }
    Ok(())
}

pub fn show(data: &Path) -> Result<()> {
    let store = need_store(data)?;
    match webhook::load(&store)? {
        None => println!("no webhook (set one with `appliance webhook set --url URL`)"),
        Some(c) => println!(
            "url {}\nca {}\nattempts {}\nbackoff {} ms (doubled per retry, at most 5 min)",
            c.url,
            c.ca.map_or_else(
                || webhook::SYSTEM_ROOTS.to_owned(),
                |p| p.display().to_string()
            ),
            c.attempts,
            c.backoff_ms
        ),
    }
    Ok(())
}

pub fn remove(data: &Path) -> Result<()> {
    let store = need_store(data)?;
    if webhook::remove(&store)? {
        eprintln!("webhook removed: no more events are sent");
    } else {
        eprintln!("no webhook was set");
    }
    Ok(())
}

pub fn test(data: &Path) -> Result<()> {
    let store = need_store(data)?;
    let Some(cfg) = webhook::load(&store)? else {
        bail!("no webhook is set: `appliance webhook set --data DIR --url URL` first");
    };
    let name = store.config().name.clone();
    let d = Delivery {
        id: format!("evt-ping-{}", std::process::id()),
        event: "ping".into(),
        time: ferry_store::snapshots::rfc3339(SystemTime::now()),
        appliance: name,
        data: serde_json::json!({}),
    };
    webhook::deliver(&cfg, &d).with_context(|| format!("deliver a ping to {}", cfg.url))?;
    println!("ping {} delivered to {}", d.id, cfg.url);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoffs_parse() {
        assert_eq!(parse_backoff("500ms").unwrap(), 500);
        assert_eq!(parse_backoff("2s").unwrap(), 2000);
        assert_eq!(parse_backoff("1m").unwrap(), 60_000);
        assert_eq!(parse_backoff("3").unwrap(), 3000);
        assert!(parse_backoff("6m").is_err());
        assert!(parse_backoff("soon").is_err());
    }
}
