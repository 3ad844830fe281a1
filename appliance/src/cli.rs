//! The command line of `appliance` (see docs/store.md and docs/protocol.md).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use ferry_format::admin::{JobCreate, MigrationCreate, ScheduleChange};
use ferry_format::agent::{Mapping, Then};
use ferry_format::api::Role;
use ferry_server::ops::Admin;

#[derive(Parser)]
#[command(
    name = "appliance",
    version,
    about = "Ferry backup appliance: stores snapshots, serves agents over HTTPS",
    after_help = "Exit status: 0 done; 1 failed; 2 bad arguments, config file or FERRY_* \
                  variable; 3 a remote appliance stayed unreachable for the retry window; 4 a \
                  remote appliance refused the request, or its certificate is not the pinned \
                  CA's; 5 verify found the store damaged (docs/configuration.md)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
    #[command(flatten)]
    pub at: At,
}

/// Where the commands run: on the store directory of this host, or on a remote appliance over
/// its admin API. `init`, `serve`, `verify` and `webhook` need the directory. Without either
/// flag: FERRY_APPLIANCE or FERRY_DATA, then `appliance` in the user's cli.toml, then `data`
/// in the config file, then /var/lib/ferry (docs/configuration.md).
#[derive(Args, Clone, Debug, Default)]
pub struct At {
    /// The store directory on the appliance host [env: FERRY_DATA] [config: data] [default:
    /// /var/lib/ferry]
    #[arg(long, global = true, value_name = "DIR", conflicts_with = "appliance")]
    pub data: Option<PathBuf>,
    /// A remote appliance's URL (https://HOST:PORT): run the command over its admin API with
    /// an admin token (--token or FERRY_TOKEN) and its ca.pem (--ca) [env: FERRY_APPLIANCE]
    /// [cli.toml: appliance]
    #[arg(long, global = true, value_name = "URL")]
    pub appliance: Option<String>,
    /// The appliance's config file [env: FERRY_CONFIG] [default: /etc/ferry/appliance.toml]
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// With --appliance: the appliance's ca.pem (its CA is the only one trusted) [cli.toml: ca]
    #[arg(long, global = true, value_name = "FILE", env = "FERRY_CA")]
    pub ca: Option<PathBuf>,
    /// With --appliance: an admin token; FERRY_TOKEN keeps it out of the process list
    /// [cli.toml: token_file]
    #[arg(
        long,
        global = true,
        value_name = "TOKEN",
        env = "FERRY_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
}

/// Where `init` puts chunks, indexes and snapshots (docs/operations.md, "S3 storage"). Recorded
/// in DIR/config.json, without secrets.
#[derive(Args, Clone, Debug, Default)]
pub struct StorageArgs {
    /// `local`: in the --data directory; `s3`: in an S3-compatible bucket (the directory keeps
    /// keys, tokens, records and the chunk catalogue)
    #[arg(long, value_enum, default_value_t = StorageKind::Local)]
    pub storage: StorageKind,
    /// With --storage s3: an endpoint URL (https://HOST:PORT); repeatable or comma-separated
    /// for the endpoints of one cluster, tried in order when one cannot be reached
    #[arg(long = "s3-endpoint", value_name = "URL", value_delimiter = ',')]
    pub s3_endpoints: Vec<String>,
    /// With --storage s3: the bucket (it must exist)
    #[arg(long, value_name = "NAME")]
    pub s3_bucket: Option<String>,
    /// With --storage s3: the bucket's region
    #[arg(long, value_name = "REGION", default_value = "us-east-1")]
    pub s3_region: String,
    /// With --storage s3: a file of AWS_ACCESS_KEY_ID=... and AWS_SECRET_ACCESS_KEY=... lines,
    /// mode 0600 (without it, those variables of the appliance's environment)
    #[arg(long, value_name = "FILE")]
    pub s3_credentials: Option<PathBuf>,
    /// With --storage s3: path-style URLs (https://HOST/BUCKET/KEY); default true, except for
    /// amazonaws.com endpoints
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub s3_path_style: Option<bool>,
    /// With --storage s3: PEM CA certificate(s) that sign the endpoints' certificates
    #[arg(long, value_name = "FILE")]
    pub s3_ca: Option<PathBuf>,
    /// With --storage s3: a key prefix, for several stores in one bucket
    #[arg(long, value_name = "PREFIX", default_value = "")]
    pub s3_prefix: String,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StorageKind {
    #[default]
    Local,
    S3,
}

/// Where `init` puts the records: agents, jobs, sources, migrations, sessions, beacons, tokens
/// (docs/operations.md, "Records on PostgreSQL"). Recorded in DIR/config.json, without secrets.
#[derive(Args, Clone, Debug, Default)]
pub struct RecordsArgs {
    /// `local`: files in the --data directory; `postgres`: a PostgreSQL database that several
    /// appliance nodes share
    #[arg(long, value_enum, default_value_t = RecordsKind::Local)]
    pub records: RecordsKind,
    /// With --records postgres: a file, mode 0600, holding the URL
    /// postgres://USER:PASSWORD@HOST:PORT/DATABASE (or a FERRY_PG_URL=... line)
    #[arg(long, value_name = "FILE")]
    pub pg_url_file: Option<PathBuf>,
    /// With --records postgres: the store's schema in that database (created if needed; one
    /// database may hold several stores)
    #[arg(long, value_name = "NAME")]
    pub pg_schema: Option<String>,
    /// With --records postgres: PEM CA certificate(s) that sign the server's certificate; the
    /// connection then requires TLS and checks the server's name against the URL's host
    #[arg(long, value_name = "FILE")]
    pub pg_ca: Option<PathBuf>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RecordsKind {
    #[default]
    Local,
    Postgres,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Create a store: CA, server certificate, signing key, admin token, trust bundle DIR/ca.pem.
    Init {
        /// DNS name or IP of the appliance for its certificate (repeatable); 127.0.0.1, 10.0.2.2
        /// and localhost are always included.
        #[arg(long = "name", value_name = "DNS-OR-IP")]
        names: Vec<String>,
        #[command(flatten)]
        storage: StorageArgs,
        #[command(flatten)]
        records: RecordsArgs,
        /// Print JSON on stdout instead of text
        #[arg(long)]
        json: bool,
    },
    /// Serve the HTTPS API until SIGTERM or SIGINT. Every option may also come from FERRY_*
    /// (FERRY_LISTEN, FERRY_GC_EVERY, ...) or the config file (docs/configuration.md).
    Serve {
        /// Address and port to listen on, e.g. 0.0.0.0:8443 [env: FERRY_LISTEN] [config: listen]
        #[arg(long, value_name = "ADDR:PORT", value_parser = crate::config::parse_listen)]
        listen: Option<SocketAddr>,
        /// Run garbage collection this often, under the store's GC lock (90m, 12h, 1d; 0: never)
        /// [env: FERRY_GC_EVERY] [config: gc_every] [default: 1d]
        #[arg(long, value_name = "DURATION", value_parser = crate::config::parse_gc_every)]
        gc_every: Option<Duration>,
        #[command(flatten)]
        limits: ServeLimits,
    },
    /// Move this store (--data) into a new store directory on other backends (data on S3,
    /// records on PostgreSQL, or another local directory): every record, then every snapshot
    /// with its signed manifest, each chunk read and checked before it is written. The source
    /// is only read; stop `appliance serve` on it first. Run it again to resume.
    MoveStore {
        /// The new store's directory (the new node's --data); created
        #[arg(long, value_name = "DIR")]
        to: PathBuf,
        #[command(flatten)]
        storage: StorageArgs,
        #[command(flatten)]
        records: RecordsArgs,
        /// Print what would be moved; write nothing
        #[arg(long)]
        dry_run: bool,
        /// Print JSON on stdout instead of text
        #[arg(long)]
        json: bool,
    },
    /// Manage API tokens.
    #[command(subcommand)]
    Token(TokenCmd),
    /// The webhook: signed JSON events on job states, snapshot commits and migration steps.
    #[command(subcommand)]
    Webhook(WebhookCmd),
    /// List snapshots, oldest first; delete one.
    Snapshots(SnapshotsArgs),
    /// Remove a machine's old snapshots: keep the newest N written by each credential (a flood
    /// from one client cannot push out another's), everything younger than --keep-within and
    /// every snapshot a pending or running restore job uses.
    Prune {
        /// The machine whose snapshots are pruned.
        #[arg(long)]
        machine: String,
        /// Newest snapshots kept per credential that wrote the machine (1-10).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(1..=10))]
        keep: u8,
        /// Never remove a snapshot younger than this (90m, 12h, 7d, 2w).
        #[arg(long, value_name = "AGE")]
        keep_within: Option<String>,
        /// Print the plan (each snapshot, kept or removed and why), remove nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// List enrolled restore agents with their inventory, state and approval; approve or
    /// remove one.
    Agents(AgentsArgs),
    /// Manage unattended restore jobs.
    #[command(subcommand)]
    Jobs(JobsCmd),
    /// Source machines whose backup-agent service syncs here: schedules, retention, last and
    /// next sync.
    #[command(subcommand)]
    Sources(SourcesCmd),
    /// Migrations: a source machine's syncs applied by a standby target as they land;
    /// schedule, standby state, lag, cutover history.
    #[command(subcommand)]
    Migrations(MigrationsCmd),
    /// Store usage: snapshots, machines, chunks, bytes stored and the deduplication ratio.
    Store {
        /// Print JSON on stdout instead of text
        #[arg(long)]
        json: bool,
    },
    /// Remove chunks no snapshot references (safe while `serve` runs backups).
    Gc {
        /// Run nothing: say whether a GC runs now and how the last one went (whoever ran it).
        #[arg(long)]
        status: bool,
        /// Print JSON on stdout instead of text
        #[arg(long)]
        json: bool,
    },
    /// Re-hash every stored chunk, check every snapshot's signature, indexes and chunks; move
    /// bad chunks to DIR/damaged/ so the next backup uploads them again. Resumable, rate-limited,
    /// safe while `serve` runs; exits non-zero when anything is damaged.
    Verify {
        /// Read at most this many megabytes (10^6 bytes) of chunks per second.
        #[arg(long, value_name = "MB/s", value_parser = parse_rate)]
        rate: Option<f64>,
        /// Continue the interrupted run recorded in DIR/verify.state (fail if there is none).
        /// Without --resume or --restart, an interrupted run is continued if there is one.
        #[arg(long, conflicts_with = "restart")]
        resume: bool,
        /// Start over, discarding an interrupted run's progress.
        #[arg(long)]
        restart: bool,
        /// Print JSON on stdout instead of text
        #[arg(long)]
        json: bool,
    },
}

fn parse_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(format!(
            "{text:?} is not a rate: give megabytes per second, e.g. 50 or 0.5"
        )),
    }
}

#[derive(Subcommand)]
pub enum TokenCmd {
    /// Create a token and print it (only its hash is stored; stdout has only the token).
    Create {
        /// backup, restore, admin, enroll or metrics (enroll: only enrolls rescue-image agents;
        /// metrics: only reads GET /metrics).
        #[arg(long)]
        role: Role,
        /// A machine the token may back up or restore (repeatable); `*` matches any
        /// characters (web*). Backup tokens need --machine or --all-machines; restore tokens
        /// without it read every machine.
        #[arg(long = "machine", value_name = "NAME-OR-PATTERN")]
        machines: Vec<String>,
        /// A backup token that may write snapshots of every machine.
        #[arg(long, conflicts_with = "machines")]
        all_machines: bool,
        /// When the token stops working: a duration (12h, 30d, 2w) or an RFC 3339 time.
        #[arg(long, value_name = "DURATION-OR-TIME")]
        expires: Option<String>,
        /// A note shown by `token list` (who or what holds it).
        #[arg(long)]
        name: Option<String>,
        /// Print {"id": ..., "token": ...}.
        #[arg(long)]
        json: bool,
    },
    /// List tokens: id, role, state, name, machines, created, expires, last used (never the
    /// tokens themselves).
    List {
        /// Print JSON on stdout instead of text
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by its id (`token list`): it gets 401 from now on.
    Revoke {
        /// Token id, tok-... (`token list`).
        id: String,
    },
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AgentsArgs {
    #[command(subcommand)]
    pub cmd: Option<AgentsCmd>,
    /// Print JSON on stdout instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct SnapshotsArgs {
    #[command(subcommand)]
    pub cmd: Option<SnapshotsCmd>,
    /// Only this machine's snapshots.
    #[arg(long)]
    pub machine: Option<String>,
    /// Print JSON on stdout instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand)]
pub enum SnapshotsCmd {
    /// Delete one snapshot (refused while a job uses it or a migration pins it); its chunks
    /// are freed by the next GC.
    Delete {
        /// Snapshot id (`appliance snapshots`).
        id: String,
    },
}

#[derive(Subcommand)]
pub enum AgentsCmd {
    /// Trust an enrolled agent with jobs (an agent is given no job before). Compare its
    /// inventory, and the code its console shows, with the machine you expect.
    Approve {
        /// Agent id (`appliance agents`).
        #[arg(required_unless_present = "mac", conflicts_with = "mac")]
        id: Option<String>,
        /// The single unapproved agent with this MAC.
        #[arg(long, value_name = "MAC")]
        mac: Option<String>,
        /// The code the agent's console showed when it enrolled: refuse if it differs.
        #[arg(long)]
        code: Option<String>,
        /// Print JSON on stdout instead of text
        #[arg(long)]
        json: bool,
    },
    /// Forget an agent: its credential stops working (refused while it runs a job).
    Remove {
        /// Agent id (`appliance agents`).
        id: String,
    },
}

#[derive(Subcommand)]
pub enum JobsCmd {
    /// Create a restore job for an enrolled agent or for the machine with a MAC (it may boot
    /// later).
    Create(Box<JobsCreate>),
    /// List jobs, oldest first.
    List {
        /// Print JSON on stdout instead of text
        #[arg(long)]
        json: bool,
    },
    /// Cancel a job no agent has started: it never runs (a running job cannot be stopped from
    /// the appliance).
    Cancel {
        /// Job id.
        id: String,
    },
    /// Show a job's state, progress and event log.
    Show {
        /// Job id (`jobs create` printed it).
        id: String,
        /// Print JSON on stdout instead of text
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
pub struct JobsCreate {
    /// An enrolled agent (`appliance agents`).
    #[arg(
        long,
        value_name = "ID",
        conflicts_with = "mac",
        required_unless_present = "mac"
    )]
    pub agent: Option<String>,
    /// The machine whose rescue agent enrolls with this MAC.
    #[arg(long, value_name = "MAC")]
    pub mac: Option<String>,
    /// Snapshot id (`appliance snapshots`).
    #[arg(long, required_unless_present = "backup", conflicts_with = "backup")]
    pub snapshot: Option<String>,
    /// DISK=TARGET: a snapshot disk onto a device as the agent sees it (/dev/vda), the disk with
    /// a serial number (serial:SERIAL, as `appliance agents` shows it) or `auto` (the single
    /// blank disk large enough). Repeat for each disk.
    #[arg(
        long = "map",
        value_name = "DISK=TARGET",
        required_unless_present = "backup",
        conflicts_with = "backup"
    )]
    pub maps: Vec<Mapping>,
    /// A backup job instead of a restore: the rescue agent reads this machine's disks (never
    /// mounted, never the medium it booted from) and stores them as an offline snapshot of
    /// --machine.
    #[arg(long, requires = "machine")]
    pub backup: bool,
    /// With --backup: the machine name the snapshot is stored under.
    #[arg(long, value_name = "NAME", requires = "backup")]
    pub machine: Option<String>,
    /// With --backup: the disks to read: auto (every non-removable disk that holds data), all,
    /// or a kernel name (sda, /dev/vda). Repeat.
    #[arg(
        long = "disk",
        value_name = "auto|all|DEV",
        requires = "backup",
        default_value = "auto"
    )]
    pub disks: Vec<String>,
    /// After the job: reboot, poweroff or none (none keeps the agent waiting for the next job).
    #[arg(long, default_value = "none")]
    pub then: Then,
    /// Allow writing targets that hold data.
    #[arg(long)]
    pub overwrite: bool,
    /// Onto a larger target: grow the last partition, the LVM PV on it, an LV and its
    /// filesystem (ext4, xfs) into the new space.
    #[arg(long)]
    pub grow: bool,
    /// With --grow: the LV to grow, VG/LV (default: the one mounted at /).
    #[arg(long, value_name = "VG/LV", requires = "grow")]
    pub grow_lv: Option<String>,
    /// Write the data only: do not adapt the restored OS (drivers, initramfs, fstab, boot loader).
    #[arg(long)]
    pub no_fixup: bool,
    /// Restore a snapshot whose Windows volume was hibernated (or shut down with Fast Startup)
    /// when it was read: its files are not consistent. Refused without it.
    #[arg(long)]
    pub allow_hibernated: bool,
    #[command(flatten)]
    pub network: NetworkArgs,
    /// Print JSON on stdout instead of text
    #[arg(long)]
    pub json: bool,
}

/// How the restored OS's network configuration follows it (docs/network.md). Checked when
/// the job is created and again by the agent before it writes anything.
#[derive(clap::Args, Debug, Default)]
pub struct NetworkArgs {
    /// OLD=NEW: the source interface OLD (its name or MAC) becomes the target NIC NEW (its
    /// name or MAC). Default: source interfaces in order onto target NICs in order. Repeat.
    #[arg(long = "nic", value_name = "OLD=NEW")]
    pub nic: Vec<String>,
    /// FROM/PREFIX=TO/PREFIX: move static addresses, gateways and DNS servers in FROM into TO,
    /// keeping their host part (10.1.0.0/16=10.2.0.0/16). Repeat.
    #[arg(long = "reip", value_name = "FROM=TO")]
    pub reip: Vec<String>,
    /// IFACE=ADDR/PREFIX[,gw=GW][,dns=DNS]...: give one interface (old or new name) this static
    /// address, replacing DHCP and its other addresses of that family. Repeat.
    #[arg(long = "ip", value_name = "IFACE=ADDR/PREFIX,gw=GW,dns=DNS")]
    pub ip: Vec<String>,
}

impl NetworkArgs {
    pub fn is_empty(&self) -> bool {
        self.nic.is_empty() && self.reip.is_empty() && self.ip.is_empty()
    }

    pub fn job_network(self) -> ferry_format::agent::JobNetwork {
        ferry_format::agent::JobNetwork {
            nic: self.nic,
            reip: self.reip,
            ip: self.ip,
        }
    }
}

#[derive(Subcommand)]
pub enum SourcesCmd {
    /// List source machines: state, interval, keep, last and next sync.
    List {
        /// Print JSON on stdout instead of text
        #[arg(long)]
        json: bool,
    },
    /// Show a source machine: schedule, limits, last and next sync, last figures, history.
    Show {
        /// The source machine (`appliance sources list`).
        machine: String,
        /// Print JSON on stdout instead of text
        #[arg(long)]
        json: bool,
    },
    /// Change a source machine's schedule and limits (creates its record when its agent has
    /// not enrolled yet, so it can be configured ahead). Options not given stay as they are.
    Set(SourcesSet),
    /// Start a sync at the agent's next poll, paused or not.
    SyncNow {
        /// The source machine.
        machine: String,
    },
    /// Start no scheduled sync (a running one finishes; sync-now still works).
    Pause {
        /// The source machine.
        machine: String,
    },
    /// Schedule syncs again.
    Resume {
        /// The source machine.
        machine: String,
    },
}

#[derive(Args)]
pub struct SourcesSet {
    /// The source machine (it need not have enrolled yet).
    pub machine: String,
    /// Time from the end of one sync to the start of the next: 90s, 30m, 6h, 7d (at least 1m).
    #[arg(long, value_name = "DURATION", value_parser = ferry_format::source::parse_interval)]
    pub interval: Option<u64>,
    /// Snapshots of the machine kept after each sync (1-10; pinned and job snapshots on top).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10))]
    pub keep: Option<u32>,
    /// Consistency of scheduled syncs: live or point-in-time.
    #[arg(long, value_name = "MODE")]
    pub consistency: Option<ferry_format::source::Consistency>,
    /// Network cap of the source agent: 300Mbit, 1Gbit, 50MB (per second) or off.
    #[arg(long, value_name = "RATE", value_parser = parse_rate_limit)]
    pub rate_limit: Option<RateLimit>,
    /// Disk reads the agent keeps in flight (1-64).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=64))]
    pub reads_in_flight: Option<u32>,
    /// Idle I/O class and low CPU priority on the source: on or off.
    #[arg(long, value_name = "on|off", value_parser = parse_on_off)]
    pub idle_io: Option<bool>,
    /// Chunk size of the next syncs: 64KiB to 64MiB, a power of two (a new source: 1MiB). Smaller
    /// chunks make a standby's deltas smaller; the first sync after a change is a full read
    /// and the standby's next apply a seeded sync.
    #[arg(long, value_name = "SIZE", value_parser = ferry_format::source::parse_chunk_size)]
    pub chunk_size: Option<u32>,
    /// Print JSON on stdout instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand)]
pub enum MigrationsCmd {
    /// Bind a source machine to a standby target: an approved rescue-image agent (by id, or by
    /// a MAC of it) that restores the newest snapshot, then applies each newer one.
    Create {
        /// The source machine (`appliance sources list`).
        #[arg(long)]
        machine: String,
        /// The standby: an agent id (`appliance agents`) or one of its MACs.
        #[arg(long, value_name = "ID|MAC")]
        agent: String,
        /// DISK=TARGET, as for `jobs create` (a device as the agent sees it, serial:SERIAL or
        /// auto). Repeat for each disk.
        #[arg(long = "map", value_name = "DISK=TARGET", required = true)]
        maps: Vec<Mapping>,
        /// Allow the first apply onto targets that hold data.
        #[arg(long)]
        overwrite: bool,
        /// The network rules the cutover's fix-up applies.
        #[command(flatten)]
        network: NetworkArgs,
        /// Print JSON on stdout instead of text
        #[arg(long)]
        json: bool,
    },
    /// List migrations: machine, standby, state, lag.
    List {
        /// Print JSON on stdout instead of text
        #[arg(long)]
        json: bool,
    },
    /// Show a migration: schedule, last and next sync, standby state, lag, cutover history.
    Show {
        /// Migration id (mig-...).
        id: String,
        /// Print JSON on stdout instead of text
        #[arg(long)]
        json: bool,
    },
    /// Cut over a syncing migration: the source agent runs pre_cutover and a point-in-time
    /// final sync, the standby applies it, runs the fix-up and reboots. Watch it with `show`.
    Cutover {
        /// Migration id (mig-...).
        id: String,
        /// Once the standby starts writing the final snapshot (no way back), ask the source
        /// agent to power the source off; its config must allow it (poweroff_after_cutover).
        #[arg(long)]
        poweroff_source: bool,
    },
    /// Stop a syncing migration: its standby stops, its snapshots are no longer pinned.
    Cancel {
        /// Migration id (mig-...).
        id: String,
    },
}

impl MigrationsCmd {
    /// `appliance migrations ...`.
    pub fn dispatch(self, a: &dyn Admin) -> anyhow::Result<()> {
        use crate::migrations;
        match self {
            MigrationsCmd::Create {
                machine,
                agent,
                maps,
                overwrite,
                network,
                json,
            } => {
                let req = MigrationCreate {
                    machine,
                    agent,
                    map: maps.iter().map(ToString::to_string).collect(),
                    overwrite,
                    network: network.job_network(),
                };
                migrations::create(a, &req, json)
            }
            MigrationsCmd::List { json } => migrations::list(a, json),
            MigrationsCmd::Show { id, json } => migrations::show(a, &id, json),
            MigrationsCmd::Cancel { id } => migrations::cancel(a, &id),
            MigrationsCmd::Cutover {
                id,
                poweroff_source,
            } => migrations::cutover(a, &id, poweroff_source),
        }
    }
}

/// A parsed `--rate-limit`: bytes per second, `None` for off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit(pub Option<u64>);

fn parse_rate_limit(text: &str) -> Result<RateLimit, ferry_format::source::SourceError> {
    ferry_format::source::parse_rate(text).map(RateLimit)
}

fn parse_on_off(text: &str) -> Result<bool, String> {
    match text {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("{text:?}: say on or off")),
    }
}

impl SourcesCmd {
    /// `appliance sources ...`.
    pub fn dispatch(self, a: &dyn Admin) -> anyhow::Result<()> {
        use crate::sources;
        match self {
            SourcesCmd::List { json } => sources::list(a, json),
            SourcesCmd::Show { machine, json } => sources::show(a, &machine, json),
            SourcesCmd::Set(s) => {
                let change = ScheduleChange {
                    interval_seconds: s.interval,
                    keep: s.keep,
                    consistency: s.consistency,
                    rate_bytes_per_s: s.rate_limit.map(|r| r.0),
                    reads_in_flight: s.reads_in_flight,
                    idle_io: s.idle_io,
                    chunk_size: s.chunk_size,
                };
                sources::set(a, &s.machine, &change, s.json)
            }
            SourcesCmd::SyncNow { machine } => sources::sync_now(a, &machine),
            SourcesCmd::Pause { machine } => sources::set_paused(a, &machine, true),
            SourcesCmd::Resume { machine } => sources::set_paused(a, &machine, false),
        }
    }
}

/// Resource limits of `serve` (docs/protocol.md, "Limits"); each defaults to
/// `ferry_server::limits::ServerLimits::default()`. Each also comes from FERRY_<NAME> or the
/// config key <name> (docs/configuration.md).
#[derive(Args, Clone, Debug, Default)]
pub struct ServeLimits {
    /// Open connections at most; more are closed at once (clients retry) [env:
    /// FERRY_MAX_CONNECTIONS] [config: max_connections] [default: 256].
    #[arg(long, value_name = "N", value_parser = crate::config::parse_count)]
    pub max_connections: Option<u32>,
    /// Time a TLS handshake may take [env: FERRY_TLS_HANDSHAKE_TIMEOUT] [config:
    /// tls_handshake_timeout] [default: 10s].
    #[arg(long, value_name = "DURATION", value_parser = crate::config::parse_duration)]
    pub tls_handshake_timeout: Option<Duration>,
    /// Time to receive an HTTP/1 request head, and to wait for the next one [env:
    /// FERRY_HEADER_TIMEOUT] [config: header_timeout] [default: 30s].
    #[arg(long, value_name = "DURATION", value_parser = crate::config::parse_duration)]
    pub header_timeout: Option<Duration>,
    /// A connection or request body that moves no byte this long while no request of it is
    /// handled is closed [env: FERRY_IDLE_TIMEOUT] [config: idle_timeout] [default: 2m].
    #[arg(long, value_name = "DURATION", value_parser = crate::config::parse_duration)]
    pub idle_timeout: Option<Duration>,
    /// Concurrent chunk uploads [env: FERRY_MAX_CHUNK_UPLOADS] [config: max_chunk_uploads]
    /// [default: 8].
    #[arg(long, value_name = "N", value_parser = crate::config::parse_count)]
    pub max_chunk_uploads: Option<u32>,
    /// Concurrent chunk downloads [env: FERRY_MAX_CHUNK_DOWNLOADS] [config: max_chunk_downloads]
    /// [default: 32].
    #[arg(long, value_name = "N", value_parser = crate::config::parse_count)]
    pub max_chunk_downloads: Option<u32>,
    /// Concurrent index uploads [env: FERRY_MAX_INDEX_UPLOADS] [config: max_index_uploads]
    /// [default: 4].
    #[arg(long, value_name = "N", value_parser = crate::config::parse_count)]
    pub max_index_uploads: Option<u32>,
    /// A request waits this long for a free slot of its route, then gets 503; 0 answers 503
    /// at once [env: FERRY_QUEUE_WAIT] [config: queue_wait] [default: 10s].
    #[arg(long, value_name = "DURATION", value_parser = crate::config::parse_wait)]
    pub queue_wait: Option<Duration>,
}

impl ServeLimits {
    pub fn resolve(self) -> ferry_server::limits::ServerLimits {
        let mut l = ferry_server::limits::ServerLimits::default();
        let n = |v: Option<u32>, d: usize| v.map_or(d, |v| v as usize);
        l.max_connections = n(self.max_connections, l.max_connections);
        l.chunk_puts = n(self.max_chunk_uploads, l.chunk_puts);
        l.chunk_gets = n(self.max_chunk_downloads, l.chunk_gets);
        l.index_uploads = n(self.max_index_uploads, l.index_uploads);
        l.tls_handshake_timeout = self
            .tls_handshake_timeout
            .unwrap_or(l.tls_handshake_timeout);
        l.header_read_timeout = self.header_timeout.unwrap_or(l.header_read_timeout);
        l.idle_timeout = self.idle_timeout.unwrap_or(l.idle_timeout);
        l.queue_wait = self.queue_wait.unwrap_or(l.queue_wait);
        l
    }
}

impl AgentsArgs {
    /// `appliance agents [approve|remove]`.
    pub fn dispatch(self, a: &dyn Admin) -> anyhow::Result<()> {
        use ferry_server::job_commands as jobs;
        match self.cmd {
            None => jobs::agents(a, self.json),
            Some(AgentsCmd::Approve {
                id,
                mac,
                code,
                json,
            }) => jobs::agents_approve(a, id.as_deref(), mac.as_deref(), code.as_deref(), json),
            Some(AgentsCmd::Remove { id }) => jobs::agents_remove(a, &id),
        }
    }
}

impl JobsCreate {
    /// The request `jobs create` makes of the store or the remote appliance.
    pub fn request(self) -> anyhow::Result<JobCreate> {
        if self.backup {
            let restore_only = [
                ("--overwrite", self.overwrite),
                ("--grow", self.grow),
                ("--no-fixup", self.no_fixup),
                ("--allow-hibernated", self.allow_hibernated),
                ("--nic/--reip/--ip", !self.network.is_empty()),
            ];
            if let Some((flag, _)) = restore_only.iter().find(|(_, set)| *set) {
                anyhow::bail!("{flag} belongs to restore jobs, not to --backup: leave it out");
            }
            return Ok(JobCreate::Backup {
                agent: self.agent,
                mac: self.mac,
                machine: self.machine.unwrap_or_default(),
                disks: self.disks,
                then: self.then,
            });
        }
        Ok(JobCreate::Restore {
            agent: self.agent,
            mac: self.mac,
            snapshot: self.snapshot.unwrap_or_default(),
            map: self.maps.iter().map(ToString::to_string).collect(),
            then: self.then,
            overwrite: self.overwrite,
            options: ferry_format::agent::JobOptions {
                grow: self.grow,
                grow_lv: self.grow_lv,
                fixup: !self.no_fixup,
                network: self.network.job_network(),
                allow_hibernated: self.allow_hibernated,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::Parser;
    use ferry_server::limits::ServerLimits;

    use super::{Cli, Cmd};

    #[test]
    fn the_command_tree_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn every_flag_and_subcommand_has_help_text() {
        use clap::CommandFactory;
        ferry_test_support::cli::assert_documented(super::Cli::command());
    }

    #[test]
    fn the_store_or_the_remote_appliance_goes_anywhere_on_the_line() {
        let cli =
            Cli::try_parse_from(["appliance", "jobs", "list", "--data", "/srv/ferry"]).unwrap();
        assert_eq!(
            cli.at.data.as_deref(),
            Some(std::path::Path::new("/srv/ferry"))
        );
        let cli = Cli::try_parse_from([
            "appliance",
            "--appliance",
            "https://192.0.2.1:8443",
            "snapshots",
            "delete",
            "web-1-20261201T000000Z",
            "--ca",
            "/tmp/ca.pem",
        ])
        .unwrap();
        assert_eq!(cli.at.appliance.as_deref(), Some("https://192.0.2.1:8443"));
        assert!(cli.at.ca.is_some());
        // Both at once is a mistake the parser names.
        assert!(Cli::try_parse_from([
            "appliance",
            "--data",
            "/srv/ferry",
            "--appliance",
            "https://a:1",
            "jobs",
            "list"
        ])
        .is_err());
    }

    const SERVE: [&str; 6] = [
        "appliance",
        "serve",
        "--data",
        "/d",
        "--listen",
        "127.0.0.1:1",
    ];

    fn serve_limits(flags: &[&str]) -> ServerLimits {
        match Cli::try_parse_from(SERVE.iter().chain(flags)).unwrap().cmd {
            Cmd::Serve { limits, .. } => limits.resolve(),
            _ => unreachable!("parsed serve"),
        }
    }

    fn sources_set(flags: &[&str]) -> Result<super::SourcesSet, clap::Error> {
        let head = ["appliance", "sources", "set", "--data", "/d", "web1"];
        match Cli::try_parse_from(head.iter().chain(flags))?.cmd {
            Cmd::Sources(super::SourcesCmd::Set(s)) => Ok(s),
            _ => unreachable!("parsed sources set"),
        }
    }

    #[test]
    fn sources_set_parses_operator_units_and_refuses_bad_values() {
        let s = sources_set(&[
            "--interval",
            "6h",
            "--keep",
            "4",
            "--consistency",
            "live",
            "--rate-limit",
            "300Mbit",
            "--reads-in-flight",
            "2",
            "--idle-io",
            "off",
        ])
        .unwrap();
        assert_eq!(s.interval, Some(21_600));
        assert_eq!(s.keep, Some(4));
        assert_eq!(s.consistency, Some(ferry_format::source::Consistency::Live));
        assert_eq!(s.rate_limit, Some(super::RateLimit(Some(37_500_000))));
        assert_eq!(s.reads_in_flight, Some(2));
        assert_eq!(s.idle_io, Some(false));
        let s = sources_set(&["--rate-limit", "off"]).unwrap();
        assert_eq!(s.rate_limit, Some(super::RateLimit(None)));
        assert_eq!(sources_set(&[]).unwrap().interval, None);
        for bad in [
            ["--interval", "30s"],
            ["--interval", "soon"],
            ["--keep", "11"],
            ["--keep", "0"],
            ["--consistency", "crash"],
            ["--rate-limit", "fast"],
            ["--reads-in-flight", "0"],
            ["--idle-io", "maybe"],
        ] {
            let err = sources_set(&bad).err().map(|e| e.to_string());
            assert!(err.is_some(), "{bad:?} accepted");
        }
        let err = sources_set(&["--interval", "30s"])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("shortest is 60s"), "{err}");
    }

    #[test]
    fn serve_limits_default_to_the_servers_and_flags_override_them() {
        assert_eq!(serve_limits(&[]), ServerLimits::default());
        let l = serve_limits(&[
            "--max-connections",
            "9",
            "--header-timeout",
            "5s",
            "--idle-timeout",
            "1m",
            "--tls-handshake-timeout",
            "3",
            "--max-chunk-uploads",
            "2",
            "--max-chunk-downloads",
            "3",
            "--max-index-uploads",
            "1",
            "--queue-wait",
            "0",
        ]);
        let want = ServerLimits {
            max_connections: 9,
            header_read_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(60),
            tls_handshake_timeout: Duration::from_secs(3),
            chunk_puts: 2,
            chunk_gets: 3,
            index_uploads: 1,
            queue_wait: Duration::ZERO,
            ..ServerLimits::default()
        };
        assert_eq!(l, want);
        for flags in [["--max-connections", "0"], ["--header-timeout", "0"]] {
            assert!(Cli::try_parse_from(SERVE.iter().chain(&flags)).is_err());
        }
    }
}

#[derive(Subcommand)]
pub enum WebhookCmd {
    /// Set the URL events are POSTed to (takes effect at the next event; no restart). Prints
    /// the HMAC secret when it generates one.
    Set {
        /// https://… (or http://…: the body then travels in clear; the signature still proves
        /// it came from this appliance)
        #[arg(long)]
        url: String,
        /// A file holding the HMAC secret (at least 16 characters); default: generate one and
        /// print it
        #[arg(long, value_name = "FILE")]
        secret_file: Option<PathBuf>,
        /// PEM roots for an https URL (default: /etc/ssl/certs/ca-certificates.crt)
        #[arg(long, value_name = "FILE")]
        ca: Option<PathBuf>,
        /// Deliveries tried per event before it is dropped (with a warning in the log)
        #[arg(long, default_value_t = 6)]
        attempts: u32,
        /// Wait before the first retry (doubled each time, at most 5 min): 500ms, 2s, 1m
        #[arg(long, default_value = "2s")]
        backoff: String,
    },
    /// Show the webhook (not its secret).
    Show,
    /// Remove the webhook: no more events are sent.
    Remove,
    /// Send a `ping` event now, with the retries, and say how it went.
    Test,
}
