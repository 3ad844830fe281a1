//! The appliance's commands, called by the `appliance` binary after parsing. Each is a short
//! list of named steps; errors carry what to do.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{bail, Context, Result};
use ferry_format::admin::{PruneReport, PruneRequest};
use ferry_format::api::{Role, SnapshotSummary};
use ferry_format::signing::{fingerprint, TrustBundle};
use ferry_format::units::human_bytes;
use ferry_store::keys::{self, generate_signing_key, write_private, ManifestSigner};
use ferry_store::verify::{Start, VerifyOptions};
use ferry_store::{config, fsx, tokens, Store};
use serde::Serialize;

use crate::ops::Admin;
use crate::tls;

/// Name of an appliance initialised without `--name`.
pub const DEFAULT_APPLIANCE_NAME: &str = "ferry-appliance";

/// Log to stderr at info (or as RUST_LOG says; `FERRY_LOG_FORMAT=json` for JSON lines), colour
/// only on a terminal: [`ferry_sys::log`].
pub fn init_logging() {
    ferry_sys::log::init(true);
}

/// What `init` made.
#[derive(Clone, Debug, Serialize)]
pub struct InitOutput {
    pub data: PathBuf,
    pub name: String,
    pub names: Vec<String>,
    pub ca_fingerprint: String,
    pub trust_bundle: PathBuf,
    pub signing_key_id: String,
    pub admin_token: String,
}

/// Create a store with its CA, server certificate, signing key and an admin token.
pub fn init_store(data: &Path, names: &[String]) -> Result<InitOutput> {
    init_store_with(data, names, &config::Backends::default())
}

/// [`init_store`] with its data and records where `backends` says. PostgreSQL is connected to
/// and its schema applied before anything is written; an S3 bucket is checked first (a probe
/// object put, read back and deleted): a store is never made on a backend it cannot use.
pub fn init_store_with(
    data: &Path,
    names: &[String],
    backends: &config::Backends,
) -> Result<InitOutput> {
    let name = names
        .first()
        .cloned()
        .unwrap_or_else(|| DEFAULT_APPLIANCE_NAME.to_string());
    let names = tls::server_names(names);
    let storage = &backends.storage;
    let records = open_new_records(data, &backends.records)?;
    config::create_layout(data).context("create the store")?;
    probe_storage(data, storage)?;
    let keys_dir = data.join("keys");

    let pki = tls::generate(&name, &names)?;
    write_private(&keys_dir.join(keys::CA_KEY), pki.ca_key_pem.as_bytes())?;
    fsx::write_atomic(
        &keys_dir.join(keys::CA_CERT),
        pki.ca_cert_pem.as_bytes(),
        0o644,
    )?;
    write_private(
        &keys_dir.join(keys::SERVER_KEY),
        pki.server_key_pem.as_bytes(),
    )?;
    fsx::write_atomic(
        &keys_dir.join(keys::SERVER_CERT),
        pki.server_cert_pem.as_bytes(),
        0o644,
    )?;

    let pk8 = generate_signing_key()?;
    write_private(&keys_dir.join(keys::SIGNING_KEY), &pk8)?;
    let signing_key = ManifestSigner::from_pkcs8(&pk8)?.public_key();

    let bundle = format!("{}{}", pki.ca_cert_pem, signing_key.to_pem());
    TrustBundle::from_pem(&bundle).context("check the trust bundle just made")?;
    let trust_bundle = data.join("ca.pem");
    fsx::write_atomic(&trust_bundle, bundle.as_bytes(), 0o644)?;

    let admin_token = tokens::create_token_in(
        records.as_ref(),
        &tokens::NewToken::unscoped(Role::Admin),
        SystemTime::now(),
    )?
    .token;
    fsx::fsync_dir(&keys_dir)?;
    config::write_config_on(data, &name, backends)?;
    Ok(InitOutput {
        data: data.to_path_buf(),
        name,
        names,
        ca_fingerprint: fingerprint(&pki.ca_cert_der),
        trust_bundle,
        signing_key_id: signing_key.key_id(),
        admin_token,
    })
}

/// The records of a store being made: connected (PostgreSQL: schema applied) and empty. A
/// PostgreSQL schema that already holds a token table belongs to another store (or to an
/// init that was interrupted after writing it): refused, so two stores never share records.
fn open_new_records(
    data: &Path,
    cfg: &config::RecordsConfig,
) -> Result<std::sync::Arc<dyn ferry_store::meta::Records>> {
    let records = ferry_store::meta::open_records(data, cfg)?;
    if let config::RecordsConfig::Postgres(pg) = cfg {
        let taken = records.get(
            ferry_store::meta::Collection::Tokens,
            ferry_store::meta::TOKENS_RECORD,
        )?;
        if taken.is_some() {
            bail!(
                "{} already holds an appliance store's records: give another --pg-schema, or \
                 drop schema {} if that store is gone",
                records.describe(),
                pg.schema
            );
        }
    }
    Ok(records)
}

/// Put, read back and delete a probe object in an S3 bucket before anything is written there.
fn probe_storage(data: &Path, storage: &config::Storage) -> Result<()> {
    if let config::Storage::S3(s3) = storage {
        // The probe touches no chunk: the local catalogue will do for it.
        let catalogue =
            std::sync::Arc::new(ferry_store::data::catalogue::LocalCatalogue::new(data));
        ferry_store::data::s3::S3Data::open(data, s3, catalogue)
            .and_then(|b| b.probe())
            .with_context(|| format!("check the S3 bucket {}", s3.bucket))?;
    }
    Ok(())
}

/// DIR/move.json of a store `move-store` makes: which store it is a copy of, and how far.
#[derive(Debug, Serialize, serde::Deserialize)]
struct MoveState {
    source: PathBuf,
    started: String,
    #[serde(default)]
    finished: Option<String>,
    #[serde(default)]
    report: Option<ferry_store::relocate::MoveReport>,
}

const MOVE_STATE: &str = "move.json";

/// `appliance move-store`: copy the store in `src_dir` into a new store in `to` on `backends`
/// (docs/operations.md, "Moving a store"). The source is only read; a rerun resumes.
pub fn move_store(
    src_dir: &Path,
    to: &Path,
    backends: &config::Backends,
    dry_run: bool,
    json: bool,
) -> Result<()> {
    use ferry_store::relocate;
    let src_dir = std::fs::canonicalize(src_dir)
        .with_context(|| format!("the store to move, {}", src_dir.display()))?;
    let src = Store::open(&src_dir)
        .with_context(|| format!("open the store to move, {}", src_dir.display()))?;
    let to = absolute_new(to)?;
    if to.starts_with(&src_dir) {
        bail!(
            "--to {} is inside the store being moved ({}): give a directory outside it",
            to.display(),
            src_dir.display()
        );
    }
    if let (config::Storage::S3(a), config::Storage::S3(b)) =
        (&src.config().storage, &backends.storage)
    {
        if a.bucket == b.bucket && a.prefix.trim_matches('/') == b.prefix.trim_matches('/') {
            bail!(
                "the store already keeps its data in bucket {} under prefix {:?}: give the                  target another --s3-prefix or bucket",
                a.bucket,
                a.prefix
            );
        }
    }
    relocate::refuse_live_sessions(&src, SystemTime::now())?;
    let state_path = to.join(MOVE_STATE);
    let resuming = to.join(config::CONFIG_FILE).exists();
    if resuming {
        let state: MoveState = std::fs::read(&state_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .with_context(|| {
                format!(
                    "{} already holds a store that no move of {} began: give another --to",
                    to.display(),
                    src_dir.display()
                )
            })?;
        if state.source != src_dir {
            bail!(
                "{} holds a move of {}, not of {}: give another --to",
                to.display(),
                state.source.display(),
                src_dir.display()
            );
        }
    }
    if dry_run {
        let dst = if resuming {
            Some(Store::open(&to)?)
        } else {
            None
        };
        let plan = relocate::plan(&src, dst.as_ref())?;
        if json {
            return print_json(&plan);
        }
        println!("Would move {} to {}:", src_dir.display(), to.display());
        println!("  data:      {}", describe_storage(&backends.storage));
        println!("  records:   {}", describe_records(&backends.records));
        for (c, n) in &plan.records {
            println!("  {n:>6} {c} records");
        }
        println!(
            "  {} snapshots ({} already there), {} distinct chunks, {} stored",
            plan.snapshots.len(),
            plan.snapshots_in_target,
            plan.chunks,
            human_bytes(plan.chunk_bytes)
        );
        println!("Nothing was written.");
        return Ok(());
    }
    if !resuming {
        open_new_records(&to, &backends.records)?;
        config::create_layout(&to)?;
        probe_storage(&to, &backends.storage)?;
        // The same CA, server certificate and signing key: agents keep trusting the store and
        // the moved manifests keep their signatures.
        for name in [
            keys::CA_KEY,
            keys::CA_CERT,
            keys::SERVER_KEY,
            keys::SERVER_CERT,
            keys::SIGNING_KEY,
        ] {
            let from = src_dir.join("keys").join(name);
            let bytes = std::fs::read(&from).with_context(|| format!("read {}", from.display()))?;
            let mode = if name.ends_with(".pem") { 0o644 } else { 0o600 };
            fsx::write_atomic(&to.join("keys").join(name), &bytes, mode)?;
        }
        // The webhook's configuration moves with the records (store-state).
        let ca = src_dir.join("ca.pem");
        if let Ok(bytes) = std::fs::read(&ca) {
            fsx::write_atomic(&to.join("ca.pem"), &bytes, 0o644)?;
        }
        fsx::fsync_dir(&to.join("keys"))?;
        let state = MoveState {
            source: src_dir.clone(),
            started: ferry_store::snapshots::rfc3339(SystemTime::now()),
            finished: None,
            report: None,
        };
        fsx::write_atomic(&state_path, &serde_json::to_vec_pretty(&state)?, 0o600)?;
        config::write_config_on(&to, &src.config().name, backends)?;
    }
    let dst = Store::open(&to).with_context(|| format!("open the new store {}", to.display()))?;
    let have = config::Backends {
        storage: dst.config().storage.clone(),
        records: dst.config().records.clone(),
    };
    if resuming && have != *backends {
        bail!(
            "{} was begun on other backends ({}, {}): give the same --storage/--records flags              as the first run",
            to.display(),
            describe_storage(&have.storage),
            describe_records(&have.records)
        );
    }
    let records = relocate::copy_records(&src, &dst).context("copy the records")?;
    let mut report = relocate::move_snapshots(&src, &dst, |id, r| {
        if !json {
            eprintln!(
                "{id}: done ({} moved, {} already there; {} chunks copied, {} present)",
                r.snapshots_moved, r.snapshots_skipped, r.chunks_copied, r.chunks_present
            );
        }
    })
    .with_context(|| {
        format!(
            "move the snapshots of {} to {}",
            src_dir.display(),
            to.display()
        )
    })?;
    report.records = records;
    let state = MoveState {
        source: src_dir.clone(),
        started: std::fs::read(&state_path)
            .ok()
            .and_then(|b| serde_json::from_slice::<MoveState>(&b).ok())
            .map(|s| s.started)
            .unwrap_or_default(),
        finished: Some(ferry_store::snapshots::rfc3339(SystemTime::now())),
        report: Some(report.clone()),
    };
    fsx::write_atomic(&state_path, &serde_json::to_vec_pretty(&state)?, 0o600)?;
    if json {
        return print_json(&report);
    }
    println!(
        "Moved {} to {}: {} records, {} snapshots ({} were there already), {} chunks checked and          copied ({}), {} present, in {:.1} s",
        src_dir.display(),
        to.display(),
        report.records,
        report.snapshots_moved,
        report.snapshots_skipped,
        report.chunks_copied,
        human_bytes(report.bytes_copied),
        report.chunks_present,
        report.seconds
    );
    println!(
        "Serve it with `appliance serve --data {}`; the old store is untouched (remove it once          restores from the new one are checked).",
        to.display()
    );
    Ok(())
}

/// `path` made absolute without requiring it to exist (its parent must).
fn absolute_new(path: &Path) -> Result<PathBuf> {
    if let Ok(p) = std::fs::canonicalize(path) {
        return Ok(p);
    }
    let name = path
        .file_name()
        .with_context(|| format!("--to {}: name a directory", path.display()))?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let parent = std::fs::canonicalize(parent)
        .with_context(|| format!("--to {}: its parent directory", path.display()))?;
    Ok(parent.join(name))
}

fn describe_storage(s: &config::Storage) -> String {
    match s {
        config::Storage::Local => "the local directory".into(),
        config::Storage::S3(c) => format!(
            "S3 bucket {} (prefix {:?}) at {}",
            c.bucket,
            c.prefix,
            c.endpoints.join(", ")
        ),
    }
}

fn describe_records(r: &config::RecordsConfig) -> String {
    match r {
        config::RecordsConfig::Local => "the local directory".into(),
        config::RecordsConfig::Postgres(p) => format!(
            "PostgreSQL (URL in {}), schema {}, {}",
            p.url_file.display(),
            p.schema,
            pg_tls(p)
        ),
    }
}

fn pg_tls(p: &config::PostgresConfig) -> String {
    match &p.ca {
        Some(ca) => format!("TLS verified with CA {}", ca.display()),
        None => "no TLS".into(),
    }
}

pub fn init(data: &Path, names: &[String], backends: &config::Backends, json: bool) -> Result<()> {
    let storage = &backends.storage;
    let out = init_store_with(data, names, backends)
        .with_context(|| format!("initialise an appliance store in {}", data.display()))?;
    if json {
        return print_json(&out);
    }
    println!(
        "Initialised appliance {:?} in {}",
        out.name,
        out.data.display()
    );
    if let config::Storage::S3(s3) = storage {
        println!(
            "Data in S3 bucket:        {} (prefix {:?}) at {}",
            s3.bucket,
            s3.prefix,
            s3.endpoints.join(", ")
        );
    }
    if let config::RecordsConfig::Postgres(pg) = &backends.records {
        println!(
            "Records in PostgreSQL:    schema {} (URL in {}; {})",
            pg.schema,
            pg.url_file.display(),
            pg_tls(pg)
        );
    }
    println!("Server certificate names: {}", out.names.join(", "));
    println!("CA SHA-256 fingerprint:   {}", out.ca_fingerprint);
    println!("Trust bundle (pin it):    {}", out.trust_bundle.display());
    println!("Manifest signing key id:  {}", out.signing_key_id);
    println!("Admin token (shown once): {}", out.admin_token);
    Ok(())
}

/// Serve HTTPS with `limits` until SIGTERM or SIGINT, then shut down gracefully.
/// Serve until SIGTERM or SIGINT, with garbage collection every `gc_every` (zero: never).
pub fn serve(
    data: &Path,
    listen: SocketAddr,
    gc_every: std::time::Duration,
    limits: crate::limits::ServerLimits,
) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the tokio runtime")?;
    rt.block_on(async {
        tracing::info!("limits: {limits:?}");
        let server = crate::start_with(data, listen, limits).await?;
        tracing::info!("serving {} on https://{}", data.display(), server.addr);
        let gc =
            crate::gc_schedule::spawn(data.to_path_buf(), gc_every, crate::gc_schedule::log_run)
                .context("start the GC schedule")?;
        match &gc {
            Some(_) => tracing::info!("garbage collection every {}s", gc_every.as_secs()),
            None => tracing::info!("scheduled garbage collection is off (--gc-every 0)"),
        }
        wait_for_signal().await?;
        if let Some(gc) = gc {
            gc.stop();
        }
        tracing::info!(
            "shutting down (up to {}s for requests in flight)",
            crate::SHUTDOWN_GRACE.as_secs()
        );
        server.shutdown(crate::SHUTDOWN_GRACE).await
    })
}

async fn wait_for_signal() -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("listen for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("listen for SIGINT")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

pub fn snapshots(a: &dyn Admin, machine: Option<&str>, json: bool) -> Result<()> {
    let list = a.snapshots(machine).context("list snapshots")?;
    if json {
        return print_json(&list);
    }
    let mut out = std::io::stdout().lock();
    write_snapshot_table(&mut out, &list)?;
    Ok(())
}

/// The `snapshots` table: id, machine, created, disks, size, consistency.
pub fn write_snapshot_table(out: &mut impl Write, list: &[SnapshotSummary]) -> std::io::Result<()> {
    let w = list
        .iter()
        .map(|s| s.snapshot.len())
        .max()
        .unwrap_or(0)
        .max(8);
    let m = list
        .iter()
        .map(|s| s.machine.len())
        .max()
        .unwrap_or(0)
        .max(7);
    writeln!(
        out,
        "{:<w$}  {:<m$}  {:<20}  {:<16}  {:>10}  CONSISTENCY",
        "SNAPSHOT", "MACHINE", "CREATED", "DISKS", "SIZE"
    )?;
    for s in list {
        writeln!(
            out,
            "{:<w$}  {:<m$}  {:<20}  {:<16}  {:>10}  {}",
            s.snapshot,
            s.machine,
            s.created,
            s.disks.join(","),
            human_bytes(s.size),
            s.consistency
        )?;
    }
    Ok(())
}

/// `appliance snapshots delete ID`.
pub fn snapshot_delete(a: &dyn Admin, id: &str) -> Result<()> {
    let s = a
        .snapshot_delete(id)
        .with_context(|| format!("delete snapshot {id}"))?;
    println!(
        "Deleted snapshot {} of {} ({}); run `appliance gc` to free its chunks.",
        s.snapshot, s.machine, s.created
    );
    Ok(())
}

/// Plan, print, then execute the same plan (unless `--dry-run`): on the store, or by the
/// remote appliance, which answers what it did.
pub fn prune(a: &dyn Admin, machine: &str, req: &PruneRequest) -> Result<()> {
    if let Some(w) = &req.keep_within {
        ferry_format::api::parse_duration_secs(w)
            .map_err(|e| anyhow::anyhow!("--keep-within {e}"))?;
    }
    let report = a.prune(machine, req).context("prune")?;
    print_prune_report(&mut std::io::stdout().lock(), &report)?;
    if report.removed > 0 {
        println!(
            "Removed {} snapshots; run `appliance gc` to free their chunks.",
            report.removed
        );
    }
    Ok(())
}

/// One line per snapshot, newest first: keep (with why) or remove, and who wrote it.
pub fn print_prune_report(out: &mut impl Write, plan: &PruneReport) -> std::io::Result<()> {
    let verb = if plan.dry_run {
        "would remove"
    } else {
        "remove"
    };
    let w = plan
        .entries
        .iter()
        .map(|e| e.snapshot.len())
        .max()
        .unwrap_or(0);
    let mut per_writer: BTreeMap<Option<&str>, (usize, usize)> = BTreeMap::new();
    for e in &plan.entries {
        let writer = e.writer.as_deref().unwrap_or("(unrecorded)");
        let what = if e.removed() {
            format!("{verb:<12}")
        } else {
            format!("{:<12}", "keep")
        };
        let why = e.keep.join("; ");
        writeln!(
            out,
            "{what}  {:<w$}  {}  by {writer}{}",
            e.snapshot,
            e.created,
            if why.is_empty() {
                String::new()
            } else {
                format!("  ({why})")
            }
        )?;
        let c = per_writer.entry(e.writer.as_deref()).or_default();
        if e.removed() {
            c.1 += 1;
        } else {
            c.0 += 1;
        }
    }
    for (writer, (kept, removed)) in per_writer {
        let writer = writer.unwrap_or("(unrecorded)");
        writeln!(out, "{writer}: {kept} kept, {removed} to remove")?;
    }
    if plan.entries.iter().all(|e| !e.removed()) {
        writeln!(
            out,
            "Nothing to remove: machine {} has {} snapshots, all kept.",
            plan.machine,
            plan.entries.len()
        )?;
    }
    Ok(())
}

/// `appliance store`: chunks, bytes and deduplication.
pub fn store_usage(a: &dyn Admin, json: bool) -> Result<()> {
    let u = a.store_usage()?;
    if json {
        println!("{}", serde_json::to_string_pretty(&u)?);
        return Ok(());
    }
    println!(
        "{} snapshots of {} machines; {} chunks, {} stored ({} bytes); {} chunk references: deduplication {:.2}x",
        u.snapshots,
        u.machines,
        u.chunks,
        ferry_format::units::human_bytes(u.chunk_bytes),
        u.chunk_bytes,
        u.chunk_references,
        u.dedup_ratio
    );
    Ok(())
}

pub fn gc(a: &dyn Admin, json: bool) -> Result<()> {
    let report = a.gc().context("collect garbage")?;
    if json {
        return print_json(&report);
    }
    print_gc_report(&report)
}

/// `appliance gc --status`: whether one runs, and the last run (whoever ran it).
pub fn gc_status(a: &dyn Admin, json: bool) -> Result<()> {
    let st = a.gc_status().context("read the gc status")?;
    if json {
        return print_json(&st);
    }
    println!(
        "{}",
        if st.running {
            "A garbage collection is running now."
        } else {
            "No garbage collection is running."
        }
    );
    match &st.last {
        None => println!("Last run: none recorded."),
        Some(r) => {
            println!(
                "Last run: {} to {} ({:.1} s)",
                r.started, r.finished, r.seconds
            );
            if let Some(e) = &r.error {
                println!("Failed: {e}");
            }
            if let Some(report) = &r.report {
                print_gc_report(report)?;
            }
        }
    }
    Ok(())
}

fn print_gc_report(report: &ferry_store::gc::GcReport) -> Result<()> {
    println!(
        "Cutoff: chunks unused since before {} were candidates",
        report.cutoff
    );
    println!(
        "Snapshots: {}; live backup sessions: {}",
        report.snapshots, report.live_sessions
    );
    println!(
        "Kept:    {} chunks, {}",
        report.kept_chunks,
        human_bytes(report.kept_bytes)
    );
    println!(
        "Removed: {} chunks, {}",
        report.removed_chunks,
        human_bytes(report.removed_bytes)
    );
    if report.dead_sessions_removed > 0 {
        println!(
            "Removed {} dead backup sessions",
            report.dead_sessions_removed
        );
    }
    if report.missing_chunks > 0 {
        bail!(
            "{} chunks referenced by snapshots are missing: those snapshots cannot be restored whole; \
             back the machines up again",
            report.missing_chunks
        );
    }
    Ok(())
}

/// Re-check the store (`ferry_store::verify`), print the report, fail when anything is damaged.
pub fn verify(
    data: &Path,
    rate_mb: Option<f64>,
    resume: bool,
    restart: bool,
    json: bool,
) -> Result<()> {
    let store = Store::open(data)?;
    let start = match (resume, restart) {
        (true, _) => Start::Resume,
        (_, true) => Start::Restart,
        _ => Start::Auto,
    };
    let rate = rate_mb.map(|mb| (mb * 1e6).max(1.0) as u64);
    let report = store
        .verify(VerifyOptions { rate, start })
        .context("verify the store")?;
    if json {
        print_json(&report)?;
    } else {
        print!("{report}");
    }
    if !report.is_clean() {
        return Err(StoreDamaged {
            bad_chunks: report.bad_chunks.len(),
            damaged: store.damaged_location(),
            missing_chunks: report.missing_chunks.len(),
            damaged_snapshots: report.damaged_snapshots.len(),
        }
        .into());
    }
    Ok(())
}

/// `verify` found damage: the appliance exits with "verification failed" (5) on it.
#[derive(Debug, thiserror::Error)]
#[error(
    "the store is damaged: {bad_chunks} bad chunks (moved to {damaged}), {missing_chunks} missing \
     chunks, {damaged_snapshots} damaged snapshots; do what each DAMAGED line says"
)]
pub struct StoreDamaged {
    pub bad_chunks: usize,
    /// Where bad chunks went: a directory, or an S3 prefix.
    pub damaged: String,
    pub missing_chunks: usize,
    pub damaged_snapshots: usize,
}

fn print_json<T: Serialize>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}
