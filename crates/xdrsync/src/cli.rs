//! The command line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Pull Microsoft Defender XDR incidents for one tenant or hundreds and deliver them exactly once.
#[derive(Debug, Parser)]
#[command(name = "xdrsync", version, term_width = 100)]
pub(crate) struct Cli {
    /// The configuration file (default `./xdrsync.toml`); for `emulator serve`, the fixture file.
    #[arg(long, global = true, env = "XDRSYNC_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    /// Log filter, e.g. `info` or `xdrsync_api_client=debug` (default `warn`; env XDRSYNC_LOG).
    #[arg(long, global = true)]
    pub(crate) log_level: Option<String>,
    /// `text` (default) or `json` (one JSON object per line, for log shippers).
    #[arg(long, global = true, value_enum, default_value_t)]
    pub(crate) log_format: LogFormat,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The logs' format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    #[default]
    Text,
    Json,
}

/// A command-line value that cannot be used (exit 2), e.g. a replay for a sink that does not
/// exist.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct UsageError(pub(crate) String);

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Start the built-in emulator with three demo customer tenants, sync their incidents into
    /// SQLite and write the files; no Microsoft account needed.
    Demo(DemoArgs),
    /// Work with a tenant's incidents: list them (no store), or change one in Defender.
    #[command(subcommand)]
    Incidents(IncidentsCommand),
    /// Change an alert in Defender (Graph alerts_v2), or comment on it.
    #[command(subcommand)]
    Alerts(AlertsCommand),
    /// Bulk write-back from a file of actions, and the log of every write.
    #[command(subcommand)]
    Actions(ActionsCommand),
    /// Run an advanced-hunting KQL query in every chosen tenant at once (Graph
    /// runHuntingQuery; the legacy API for `api = "xdr"`), rows tagged with their tenant.
    Hunt(HuntArgs),
    /// Pull every enabled tenant once into the store and deliver to the sinks.
    Pull(PullArgs),
    /// Pull every enabled tenant from a point in the past (e.g. `--since 30d`), whatever the
    /// cursors say; versions already stored are recognised, cursors only move forward.
    Backfill(BackfillArgs),
    /// Run as a daemon: pull every `--interval`, deliver, repeat; SIGTERM/SIGINT drain the pass
    /// in flight (bounded by `--drain-timeout`) and exit 0.
    Run(RunArgs),
    /// A table per tenant and stream: last success, lag, counts, degraded reason; and each
    /// sink's backlog. Exits 1 when a tenant is degraded or a sink is stalled.
    Status(StatusArgs),
    /// Compare what the API holds (last update within `--since`) with the store; list what is
    /// missing or extra and exit 1 when anything is.
    Reconcile(ReconcileArgs),
    /// Send stored events again to one sink (e.g. to rebuild a SIEM index after an outage):
    /// same event ids, marked as replays; the sink's own position does not move.
    Replay(ReplayArgs),
    /// Validate the configuration file without contacting anything.
    CheckConfig(CheckConfigArgs),
    /// Run the offline Entra ID + Defender XDR + Graph emulator.
    #[command(subcommand)]
    Emulator(EmulatorCommand),
    /// Write a ready-to-use config for every tenant and app of a running emulator.
    Init(InitArgs),
    /// Tokens and consent: inspect a tenant's token, print admin-consent links.
    #[command(subcommand)]
    Auth(AuthCommand),
    /// The store itself: bring its schema up to date, or copy it into a new one.
    #[command(subcommand)]
    Store(StoreCommand),
    /// Write shell completions and the man pages (for packagers).
    #[command(hide = true)]
    Generate(GenerateArgs),
}

#[derive(Debug, Subcommand)]
pub(crate) enum StoreCommand {
    /// Apply the schema migrations the store lacks (SQLite or PostgreSQL; `run` and `pull`
    /// also do at start) and print its schema version. A store written by a newer xdrsync is
    /// refused. Safe to run from every worker at once: each step is applied once.
    Migrate,
    /// Copy everything one store holds into a new, empty one — versions with their seq and
    /// event ids, cursors, sink positions, poison, health, the write-back audit — e.g. a
    /// single machine's SQLite file into the PostgreSQL database of a cluster. Stop `run`
    /// first; every sink then resumes from its position in the new store.
    Copy(StoreCopyArgs),
}

#[derive(Debug, Args)]
pub(crate) struct StoreCopyArgs {
    /// The store to read: `sqlite:PATH` (or a path), or `postgres://user@host/db`.
    #[arg(long)]
    pub from: String,
    /// The store to fill, which must be empty: `sqlite:PATH` (or a path), or
    /// `postgres://user@host/db` (its password is better kept in `--to-env`).
    #[arg(long, required_unless_present = "to_env")]
    pub to: Option<String>,
    /// The name of an environment variable holding the `--to` address (keeps a password off
    /// the command line).
    #[arg(long, conflicts_with = "to")]
    pub to_env: Option<String>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum AuthCommand {
    /// Get a token for a tenant, verify its signature against the authority's keys, show its
    /// claims and check that the permissions the tenant's API needs are granted.
    Token(TokenArgs),
    /// Print the admin-consent links to send to a customer's administrator.
    ConsentUrl(ConsentUrlArgs),
    /// Every tenant's credential health: kind, secret and certificate expiry, delegated
    /// sign-in age against the 90-day inactivity limit, last successful pull, warnings.
    Status(AuthStatusArgs),
    /// Sign in to a delegated tenant (the MSSP flow of Microsoft's fetch-incidents guide):
    /// opens the authorization URL, catches the redirect on a loopback listener, redeems the
    /// code with PKCE and stores the refresh token encrypted.
    Login(LoginArgs),
}

#[derive(Debug, Args)]
pub(crate) struct LoginArgs {
    /// The tenant, by its name in the config or its id.
    #[arg(long)]
    pub(crate) tenant: String,
    /// Only print the URL (for a host without a browser: open it elsewhere, the redirect must
    /// still reach this host's loopback address).
    #[arg(long)]
    pub(crate) no_browser: bool,
    /// Loopback port for the redirect (0: any free port; Entra ignores the port of
    /// `http://localhost` redirect URIs).
    #[arg(long, default_value_t = 0)]
    pub(crate) port: u16,
    /// Give up after this many seconds without a redirect.
    #[arg(long, default_value_t = 300)]
    pub(crate) timeout_secs: u64,
    /// Use the device code flow instead (sign in on any other device; no redirect needed).
    #[arg(long)]
    pub(crate) device_code: bool,
}

/// `--tenant T` (repeatable) and `--stream S` (repeatable): which (tenant, stream) pairs a
/// command works on; none given means every enabled one.
#[derive(Debug, Args, Default, Clone)]
pub(crate) struct Selection {
    /// Only this tenant: its configured name, tenant id (GUID) or a verified domain,
    /// case-insensitively. Repeat for several.
    #[arg(long = "tenant", value_name = "T")]
    pub(crate) tenants: Vec<String>,
    /// Only this stream: `incidents`, `alerts` or `detections`. Repeat for several.
    #[arg(long = "stream", value_name = "S")]
    pub(crate) streams: Vec<String>,
}

/// How a report is printed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum OutputFormat {
    #[default]
    Table,
    Json,
}

#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    pub(crate) select: Selection,
    /// `table` (default) or `json`.
    #[arg(long, value_enum, default_value_t)]
    pub(crate) output: OutputFormat,
}

#[derive(Debug, Args)]
pub(crate) struct AuthStatusArgs {
    /// Only this tenant (name, tenant id or domain). Repeat for several.
    #[arg(long = "tenant", value_name = "T")]
    pub(crate) tenants: Vec<String>,
    /// `table` (default) or `json`.
    #[arg(long, value_enum, default_value_t)]
    pub(crate) output: OutputFormat,
}

#[derive(Debug, Args)]
pub(crate) struct CheckConfigArgs {
    /// Also read every secret (running secret commands) to prove it produces a value.
    #[arg(long)]
    pub(crate) resolve: bool,
    /// `table` (default) or `json`.
    #[arg(long, value_enum, default_value_t)]
    pub(crate) output: OutputFormat,
}

#[derive(Debug, Args)]
pub(crate) struct TokenArgs {
    /// The tenant: name, tenant id or domain. Repeat for several.
    #[arg(long = "tenant", value_name = "T", required = true)]
    pub(crate) tenants: Vec<String>,
    /// Print the raw access token (a secret: anyone holding it can read the tenant's incidents
    /// until it expires).
    #[arg(long)]
    pub(crate) raw: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ConsentUrlArgs {
    /// The multi-tenant app's client id.
    #[arg(long)]
    pub(crate) client_id: String,
    /// The customer's tenant id or domain (default: `common`, the customer signs in).
    #[arg(long)]
    pub(crate) tenant: Option<String>,
    /// Where the browser returns after consent (must be registered on the app).
    #[arg(long, default_value = "https://localhost")]
    pub(crate) redirect_uri: String,
}

#[derive(Debug, Args)]
pub(crate) struct InitArgs {
    /// The `emulator.json` written by `xdrsync emulator serve`.
    #[arg(long)]
    pub(crate) emulator: PathBuf,
    /// Where to write the config (secrets go to a `secrets/` folder beside it).
    #[arg(long, default_value = "xdrsync.toml")]
    pub(crate) out: PathBuf,
    /// Overwrite an existing config file.
    #[arg(long)]
    pub(crate) force: bool,
}

#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Where to put the database and the output files.
    #[arg(long, default_value = "xdrsync-demo")]
    pub(crate) dir: PathBuf,
}

#[derive(Debug, Subcommand)]
pub(crate) enum IncidentsCommand {
    /// List a tenant's incidents updated within a period, as the Hello World script does.
    List(ListArgs),
    /// Change an incident in Defender (Graph PATCH, or the legacy API for `api = "xdr"`):
    /// status, owner, classification, determination, tags, comments. The version it produces
    /// is stored and delivered as an `updated` event whose `origin` names the action.
    Update(UpdateArgs),
}

#[derive(Debug, Subcommand)]
pub(crate) enum AlertsCommand {
    /// Change an alert (Graph `PATCH /security/alerts_v2/{id}`).
    Update(UpdateArgs),
    /// Add a comment to an alert.
    Comment(CommentArgs),
}

#[derive(Debug, Subcommand)]
pub(crate) enum ActionsCommand {
    /// Apply a file of actions, one JSON object per line: {"tenant","id","target"?,"status"?,
    /// "assign"?,"classification"?,"determination"?,"tags_add"?,"tags_remove"?,"comment"?,
    /// "resolving_comment"?}. An action the latest stored version already shows is skipped, so
    /// re-applying a file is idempotent.
    Apply(ApplyArgs),
    /// Every write sent (or refused): when, who, what, Microsoft's answer, the version made.
    Log(LogArgs),
}

#[derive(Debug, Args)]
pub(crate) struct HuntArgs {
    /// The KQL query, e.g. `AlertInfo | where Severity == "High" | summarize count() by Title`.
    pub(crate) query: String,
    /// A tenant (name, tenant id or domain); repeat for several.
    #[arg(long = "tenant", value_name = "T", conflicts_with = "all")]
    pub(crate) tenants: Vec<String>,
    /// Every enabled tenant.
    #[arg(long)]
    pub(crate) all: bool,
    /// How far back to search (Graph `Timespan`), e.g. `7d`, `24h`; the legacy API takes the
    /// range from the query itself.
    #[arg(long)]
    pub(crate) timespan: Option<String>,
    /// `table` (default), `ndjson` or `csv`.
    #[arg(long, value_enum, default_value_t)]
    pub(crate) output: HuntOutput,
}

/// `hunt --output`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum HuntOutput {
    #[default]
    Table,
    Ndjson,
    Csv,
}

#[derive(Debug, Args)]
pub(crate) struct UpdateArgs {
    /// The tenant: name, tenant id or domain.
    #[arg(long, value_name = "T")]
    pub(crate) tenant: String,
    /// The incident or alert id.
    #[arg(long)]
    pub(crate) id: String,
    /// `active`, `inProgress`, `resolved`, `redirected` (alerts: `new`, `inProgress`,
    /// `resolved`).
    #[arg(long)]
    pub(crate) status: Option<String>,
    /// Assign to this user (UPN).
    #[arg(long, value_name = "UPN", conflicts_with = "unassign")]
    pub(crate) assign: Option<String>,
    /// Remove the owner.
    #[arg(long)]
    pub(crate) unassign: bool,
    /// `truePositive`, `falsePositive`, `informationalExpectedActivity`, `unknown`.
    #[arg(long)]
    pub(crate) classification: Option<String>,
    /// A determination that fits the classification, e.g. `malware`, `notMalicious`.
    #[arg(long)]
    pub(crate) determination: Option<String>,
    /// `+tag` adds, `-tag` removes (repeatable; incidents only).
    #[arg(long = "tag", value_name = "+T|-T", allow_hyphen_values = true)]
    pub(crate) tags: Vec<String>,
    /// Add a comment.
    #[arg(long)]
    pub(crate) comment: Option<String>,
    /// Why it was resolved (Graph `resolvingComment`; incidents only).
    #[arg(long, value_name = "TEXT")]
    pub(crate) resolving_comment: Option<String>,
    /// Who is recorded in the audit (default: the app or signed-in identity of the tenant).
    #[arg(long)]
    pub(crate) actor: Option<String>,
    /// Show the change against the latest stored version; send nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
}

#[derive(Debug, Args)]
pub(crate) struct CommentArgs {
    /// The tenant: name, tenant id or domain.
    #[arg(long, value_name = "T")]
    pub(crate) tenant: String,
    /// The alert id.
    #[arg(long)]
    pub(crate) id: String,
    /// The comment.
    #[arg(long)]
    pub(crate) comment: String,
    /// Who is recorded in the audit.
    #[arg(long)]
    pub(crate) actor: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct ApplyArgs {
    /// The actions file (NDJSON; `-` reads standard input).
    pub(crate) file: PathBuf,
    /// Show each action's change against the latest stored version; send nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Who is recorded in the audit.
    #[arg(long)]
    pub(crate) actor: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct LogArgs {
    /// Only this tenant (name, tenant id or domain).
    #[arg(long, value_name = "T")]
    pub(crate) tenant: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// The tenant: name, tenant id or domain. Repeat for several (their incidents are listed
    /// one after the other in one array).
    #[arg(long = "tenant", value_name = "T", required = true)]
    pub(crate) tenants: Vec<String>,
    /// How far back to look, e.g. `48h`, `7d`, `30m`.
    #[arg(long, default_value = "48h")]
    pub(crate) since: String,
    /// Write the JSON array to this file instead of stdout.
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
    /// `json` (default: the API's JSON array, the Hello World script's output) or `table`
    /// (one line per incident: tenant, id, last update, severity, status, title).
    #[arg(long, value_enum)]
    pub(crate) output: Option<OutputFormat>,
}

#[derive(Debug, Args)]
pub(crate) struct PullArgs {
    #[command(flatten)]
    pub(crate) select: Selection,
    /// Also append every new incident version to this NDJSON file.
    #[arg(long)]
    pub(crate) ndjson: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct BackfillArgs {
    #[command(flatten)]
    pub(crate) select: Selection,
    /// How far back, e.g. `30d`, `72h`.
    #[arg(long)]
    pub(crate) since: String,
    /// Also append every new incident version to this NDJSON file.
    #[arg(long)]
    pub(crate) ndjson: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// Seconds between passes (default: `[sync] interval_secs`, 300).
    #[arg(long)]
    pub(crate) interval: Option<u64>,
    /// Also append every new incident version to this NDJSON file.
    #[arg(long)]
    pub(crate) ndjson: Option<PathBuf>,
    /// On SIGTERM, wait at most this many seconds for the pass in flight, then stop anyway
    /// (safe: every commit is atomic; an interrupted tenant is re-read next time).
    #[arg(long, default_value_t = 30)]
    pub(crate) drain_timeout: u64,
    /// Stop after this many passes (default: run until signalled).
    #[arg(long)]
    pub(crate) passes: Option<u64>,
    /// Serve `/metrics`, `/healthz`, `/readyz` and the status page here instead of
    /// `[server] listen` (`""`: no server).
    #[arg(long, value_name = "ADDR")]
    pub(crate) listen: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct GenerateArgs {
    /// Folder to write `completions/` (bash, zsh, fish) and `man/` (xdrsync.1 and one page
    /// per subcommand) into.
    #[arg(long)]
    pub(crate) dir: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct ReplayArgs {
    /// The configured sink to send to.
    #[arg(
        long,
        value_name = "NAME",
        required_unless_present = "ndjson",
        conflicts_with = "ndjson"
    )]
    pub(crate) sink: Option<String>,
    /// Or an NDJSON file (appended to).
    #[arg(long, value_name = "PATH")]
    pub(crate) ndjson: Option<PathBuf>,
    /// Versions last updated since then: a duration (`7d`) or a time (`2026-11-01T00:00:00Z`).
    #[arg(long)]
    pub(crate) since: String,
    #[command(flatten)]
    pub(crate) select: Selection,
}

#[derive(Debug, Args)]
pub(crate) struct ReconcileArgs {
    #[command(flatten)]
    pub(crate) select: Selection,
    /// How far back to compare, e.g. `7d`.
    #[arg(long, default_value = "7d")]
    pub(crate) since: String,
    /// `table` (default) or `json`.
    #[arg(long, value_enum, default_value_t)]
    pub(crate) output: OutputFormat,
}

#[derive(Debug, Subcommand)]
pub(crate) enum EmulatorCommand {
    /// Serve the emulator until interrupted and write `emulator.json` describing it.
    Serve(ServeArgs),
}

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub(crate) bind: std::net::SocketAddr,
    /// Serve HTTPS with a local CA (created in the state folder, reused on restart).
    #[arg(long)]
    pub(crate) tls: bool,
    /// Folder for `emulator.json`, the TLS files and generated app certificates.
    #[arg(long, default_value = "emulator-state")]
    pub(crate) state_dir: PathBuf,
    /// Run the emulator's clock this many times faster than real time.
    #[arg(long)]
    pub(crate) time_scale: Option<f64>,
    /// Allow a non-loopback `--bind`. The emulator serves its apps' secrets on
    /// `/_emulator/…`: anyone who can reach it can read them.
    #[arg(long)]
    pub(crate) allow_remote: bool,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    #[test]
    fn the_command_line_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
