//! Configuration of `corral serve`: every setting from a flag or its environment
//! variable, with a default that works on a laptop. `corral serve --help` lists them. A
//! variable set to the empty string counts as unset ([`crate::cli::ignore_empty_env`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use rust_decimal::Decimal;

use crate::cli::units::{parse_count, parse_duration, parse_size};
use crate::costs::PriceModel;
use crate::limits::Limits;
use crate::quota::clock::Clock;
use crate::secrets::SecretsKey;

fn parse_secrets_key(text: &str) -> Result<SecretsKey, String> {
    SecretsKey::from_base64(text).map_err(|e| e.to_string())
}

/// `corral serve` settings.
#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// Address to listen on.
    #[arg(long, env = "CORRAL_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// A second address serving only `GET /metrics`, without a key (for a scraper on a
    /// private network). Unset, metrics are served on the main address only, to keys of
    /// the operator tenant.
    #[arg(long, env = "CORRAL_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// Label the per-agent metrics (executions, fuel, charges) with agent names. Off by
    /// default: each agent adds series.
    #[arg(long, env = "CORRAL_METRICS_AGENT_LABELS")]
    pub metrics_agent_labels: bool,

    /// Where the embedded database and the compiled-artifact cache live.
    #[arg(long, env = "CORRAL_DATA_DIR", default_value = ".corral")]
    pub data_dir: PathBuf,

    /// `postgres://…` to use Postgres; unset, an SQLite file in the data directory.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// Database connections.
    #[arg(long, env = "CORRAL_DB_CONNECTIONS", default_value_t = 16)]
    pub db_connections: u32,

    /// The first admin key, used only when the database has no keys yet. Unset, one is
    /// generated and printed once.
    #[arg(long, env = "CORRAL_BOOTSTRAP_KEY", hide_env_values = true)]
    pub bootstrap_key: Option<String>,

    /// Default (and most) fuel per invocation.
    #[arg(long, env = "CORRAL_FUEL", default_value_t = Limits::DEFAULT_FUEL, value_parser = parse_count)]
    pub fuel: u64,
    /// Default (and most) linear memory per invocation.
    #[arg(long, env = "CORRAL_MEMORY", default_value = "64MiB", value_parser = parse_size)]
    pub memory: u64,
    /// Default (and longest) timeout per invocation.
    #[arg(long, env = "CORRAL_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Default (and most) output per invocation.
    #[arg(long, env = "CORRAL_MAX_OUTPUT", default_value = "1MiB", value_parser = parse_size)]
    pub max_output: u64,
    /// Default (and most) log bytes per invocation.
    #[arg(long, env = "CORRAL_MAX_LOGS", default_value = "64KiB", value_parser = parse_size)]
    pub max_logs: u64,

    /// Price per invocation, in dollars.
    #[arg(long, env = "CORRAL_PRICE_PER_INVOCATION", default_value = "0.0000001")]
    pub price_per_invocation: Decimal,
    /// Price per million fuel units, in dollars.
    #[arg(
        long,
        env = "CORRAL_PRICE_PER_MILLION_FUEL",
        default_value = "0.000001"
    )]
    pub price_per_million_fuel: Decimal,
    /// Price per GiB-second of peak memory, in dollars.
    #[arg(
        long,
        env = "CORRAL_PRICE_PER_GIB_SECOND",
        default_value = "0.000016667"
    )]
    pub price_per_gib_second: Decimal,
    /// Price per GiB of outbound HTTP traffic (request and response bodies), in dollars.
    #[arg(long, env = "CORRAL_PRICE_PER_GIB_TRANSFERRED", default_value = "0.09")]
    pub price_per_gib_transferred: Decimal,

    /// Largest component upload.
    #[arg(long, env = "CORRAL_MAX_UPLOAD", default_value = "32MiB", value_parser = parse_size)]
    pub max_upload: u64,
    /// Largest JSON request body (and so invocation input).
    #[arg(long, env = "CORRAL_MAX_BODY", default_value = "1MiB", value_parser = parse_size)]
    pub max_body: u64,
    /// Longest a request may take (uploads compile within it).
    #[arg(long, env = "CORRAL_REQUEST_TIMEOUT", default_value = "120s", value_parser = parse_duration)]
    pub request_timeout: Duration,
    /// Time a client has to send a request's whole header; also the longest an idle
    /// keep-alive connection stays open.
    #[arg(long, env = "CORRAL_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_timeout: Duration,
    /// Largest request header (request line and fields together; at least 8KiB).
    #[arg(long, env = "CORRAL_MAX_HEADER_BYTES", default_value = "16KiB", value_parser = parse_size)]
    pub max_header_bytes: u64,
    /// Longest a client may pause while sending a request body.
    #[arg(long, env = "CORRAL_BODY_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub body_timeout: Duration,
    /// On shutdown, how long in-flight requests may take to finish.
    #[arg(long, env = "CORRAL_SHUTDOWN_GRACE", default_value = "30s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,

    /// Instances alive at once: the size of the instance pool. Invocations beyond it
    /// wait for a slot; a call between agents that finds none ends `host_failure`.
    #[arg(long, env = "CORRAL_MAX_INSTANCES", default_value_t = 1024)]
    pub max_instances: u32,

    /// Address space reserved per linear memory slot of the instance pool; unset,
    /// wasmtime's 4GiB (no bounds checks for 32-bit memories). The pool reserves slots ×
    /// 4 memories × this, as virtual memory only; smaller values let huge pools fit and
    /// cap every memory at this size.
    #[arg(long, env = "CORRAL_MEMORY_RESERVATION", value_parser = parse_size)]
    pub memory_reservation: Option<u64>,

    /// Memory for loaded agents, each weighed by its compiled image plus twice its
    /// component's bytes (least recently used go first; they reload from the disk cache
    /// in milliseconds).
    #[arg(long, env = "CORRAL_COMPONENT_CACHE", default_value = "256MiB", value_parser = parse_size)]
    pub component_cache: u64,

    /// Longest a component may take to compile.
    #[arg(long, env = "CORRAL_COMPILE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub compile_timeout: Duration,
    /// Most memory a compile may use.
    #[arg(long, env = "CORRAL_COMPILE_MEMORY", default_value = "2GiB", value_parser = parse_size)]
    pub compile_memory: u64,
    /// The `corral` binary used as compile worker (default: this executable).
    #[arg(long, env = "CORRAL_COMPILE_WORKER", hide = true)]
    pub compile_worker: Option<PathBuf>,

    /// Most execution records written in one group commit.
    #[arg(long, env = "CORRAL_COMMIT_BATCH", default_value_t = 512)]
    pub commit_batch: usize,

    /// How long a concurrency lease outlives its invocation's timeout: the most a host
    /// that died can hold a slot.
    #[arg(long, env = "CORRAL_LEASE_GRACE", default_value = "30s", value_parser = parse_duration)]
    pub lease_grace: Duration,

    /// Longest a task attempt may run (policies may lower it, as every limit).
    #[arg(long, env = "CORRAL_TASK_TIMEOUT", default_value = "15m", value_parser = parse_duration)]
    pub task_timeout: Duration,

    /// Task attempts this node runs at once (0: none; the node still serves the API).
    /// Default: 32 per core, since most attempts wait on I/O (and at most the instance
    /// pool, as each running attempt holds an instance slot).
    #[arg(long, env = "CORRAL_WORKERS")]
    pub workers: Option<usize>,

    /// How long a node's claim on a task attempt holds without renewal: the most a
    /// node that died delays its tasks.
    #[arg(long, env = "CORRAL_TASK_LEASE", default_value = "30s", value_parser = parse_duration)]
    pub task_lease: Duration,

    /// The longest idle workers wait before looking for due tasks without being woken.
    #[arg(long, env = "CORRAL_TASK_POLL", default_value = "1s", value_parser = parse_duration)]
    pub task_poll: Duration,

    /// How long an idempotency key lives: a retry within it gets the first answer; after
    /// it, the key is free and purged.
    #[arg(long, env = "CORRAL_IDEMPOTENCY_TTL", default_value = "24h", value_parser = parse_duration)]
    pub idempotency_ttl: Duration,

    /// How long a node's reservation of an idempotency key holds without renewal: the
    /// longest a retry waits after the node running the request died.
    #[arg(long, env = "CORRAL_IDEMPOTENCY_LEASE", default_value = "30s", value_parser = parse_duration)]
    pub idempotency_lease: Duration,

    /// Failed authentications a source address may make at once before it is refused
    /// (`429 too_many_auth_failures`) without a lookup.
    #[arg(long, env = "CORRAL_AUTH_FAILURE_BURST", default_value_t = 30)]
    pub auth_failure_burst: u32,

    /// Failed authentications a source address regains per minute.
    #[arg(long, env = "CORRAL_AUTH_FAILURES_PER_MINUTE", default_value_t = 60)]
    pub auth_failures_per_minute: u32,

    /// Failed authentications of one source within this window are one audit event
    /// with their count.
    #[arg(long, env = "CORRAL_AUTH_AUDIT_WINDOW", default_value = "60s", value_parser = parse_duration)]
    pub auth_audit_window: Duration,

    /// How long executions are kept (tenants may keep theirs shorter).
    #[arg(long, env = "CORRAL_RETAIN_EXECUTIONS", default_value = "90days", value_parser = parse_duration)]
    pub retain_executions: Duration,
    /// How long executions' logs are kept (the rest of each record stays).
    #[arg(long, env = "CORRAL_RETAIN_LOGS", default_value = "30days", value_parser = parse_duration)]
    pub retain_logs: Duration,
    /// How long audit events are kept.
    #[arg(long, env = "CORRAL_RETAIN_AUDIT", default_value = "400days", value_parser = parse_duration)]
    pub retain_audit: Duration,
    /// The least any tenant may keep its audit events (compliance).
    #[arg(long, env = "CORRAL_AUDIT_FLOOR", default_value = "365days", value_parser = parse_duration)]
    pub audit_floor: Duration,
    /// Most bytes of compiled artifacts kept in the data directory; artifacts no stored
    /// version of a live agent needs are collected, then the least recently written.
    #[arg(long, env = "CORRAL_ARTIFACT_CACHE", default_value = "4GiB", value_parser = parse_size)]
    pub artifact_cache: u64,
    /// How old an artifact no version needs must be before it is collected (an upload
    /// being stored is safe).
    #[arg(long, env = "CORRAL_ARTIFACT_MIN_AGE", default_value = "1h", value_parser = parse_duration)]
    pub artifact_min_age: Duration,
    /// Time between retention purges (one node purges at a time).
    #[arg(long, env = "CORRAL_RETENTION_INTERVAL", default_value = "10m", value_parser = parse_duration)]
    pub retention_interval: Duration,

    /// How deep calls between agents may go: a root's callees are at depth 1.
    #[arg(long, env = "CORRAL_MAX_CALL_DEPTH", default_value_t = 4)]
    pub max_call_depth: usize,

    /// The key that encrypts agents' secrets at rest: base64 of 32 random bytes
    /// (`openssl rand -base64 32`). Unset, on SQLite a key is kept in
    /// `<data dir>/secrets.key` (generated on first start, mode 0600); on Postgres secret
    /// writes are refused (`409 secrets_disabled`). Set it in production.
    #[arg(long, env = "CORRAL_SECRETS_KEY", hide_env_values = true, value_parser = parse_secrets_key)]
    pub secrets_key: Option<SecretsKey>,

    /// The operator's model providers and aliases: a JSON file (docs/MODELS.md). Unset,
    /// no model can be called.
    #[arg(long, env = "CORRAL_LLM_CONFIG")]
    pub llm_config: Option<PathBuf>,

    /// Serve the web console at `/console` (`false`: the API only).
    #[arg(long, env = "CORRAL_CONSOLE", default_value_t = true, action = clap::ArgAction::Set)]
    pub console: bool,
    /// Mark the console's session cookie `Secure` on every sign-in, not only when
    /// `X-Forwarded-Proto: https` says the request came over TLS.
    #[arg(long, env = "CORRAL_CONSOLE_SECURE_COOKIE", default_value_t = false, action = clap::ArgAction::Set)]
    pub console_secure_cookie: bool,

    /// The clock quotas are measured by (tests step it across periods).
    #[arg(skip)]
    pub clock: Option<Arc<dyn Clock>>,
}

impl ServeConfig {
    /// Refuses settings that contradict each other.
    pub fn check(&self) -> anyhow::Result<()> {
        // A synchronous invocation must be able to end, and be recorded, before its
        // request times out. (One that outlives its client is still recorded.)
        if self.timeout >= self.request_timeout {
            anyhow::bail!(
                "the invocation timeout (--timeout, CORRAL_TIMEOUT: {:?}) must be shorter than \
                 the request timeout (--request-timeout, CORRAL_REQUEST_TIMEOUT: {:?})",
                self.timeout,
                self.request_timeout
            );
        }
        // Renewed every third of a lease: a lease too short to renew lets other nodes
        // take live attempts over; a poll of zero would spin.
        if self.task_lease < Duration::from_secs(1) {
            anyhow::bail!(
                "--task-lease (CORRAL_TASK_LEASE) is {:?}; it must be at least 1s",
                self.task_lease
            );
        }
        if self.idempotency_lease < Duration::from_secs(1) {
            anyhow::bail!(
                "--idempotency-lease (CORRAL_IDEMPOTENCY_LEASE) is {:?}; it must be at least 1s",
                self.idempotency_lease
            );
        }
        if self.idempotency_ttl < Duration::from_secs(1) {
            anyhow::bail!(
                "--idempotency-ttl (CORRAL_IDEMPOTENCY_TTL) is {:?}; it must be at least 1s",
                self.idempotency_ttl
            );
        }
        if self.audit_floor > self.retain_audit {
            anyhow::bail!(
                "CORRAL_AUDIT_FLOOR ({:?}) is longer than CORRAL_RETAIN_AUDIT ({:?})",
                self.audit_floor,
                self.retain_audit
            );
        }
        if self.auth_failure_burst == 0 || self.auth_audit_window < Duration::from_millis(100) {
            anyhow::bail!(
                "CORRAL_AUTH_FAILURE_BURST must be at least 1 and CORRAL_AUTH_AUDIT_WINDOW at least 100ms"
            );
        }
        if self.task_poll < Duration::from_millis(10) || self.task_poll > self.task_lease {
            anyhow::bail!(
                "--task-poll (CORRAL_TASK_POLL) is {:?}; it must be between 10ms and the task lease",
                self.task_poll
            );
        }
        Ok(())
    }

    /// Task attempts this node runs at once.
    pub fn workers(&self) -> usize {
        self.workers.unwrap_or_else(|| {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            (32 * cores).min(self.max_instances as usize)
        })
    }

    /// The per-invocation limits (defaults and ceiling).
    pub fn limits(&self) -> Limits {
        Limits {
            fuel: self.fuel,
            memory_bytes: self.memory,
            timeout: self.timeout,
            output_bytes: self.max_output,
            log_bytes: self.max_logs,
        }
    }

    /// The price model.
    pub fn prices(&self) -> PriceModel {
        PriceModel {
            per_invocation: self.price_per_invocation,
            per_million_fuel: self.price_per_million_fuel,
            per_gib_second: self.price_per_gib_second,
            per_gib_transferred: self.price_per_gib_transferred,
        }
    }

    /// The database URL: `DATABASE_URL`, or the SQLite file in the data directory.
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}", self.data_dir.join("corral.db").display()),
        }
    }

    /// Defaults for everything, listening on `listen`, keeping data in `data_dir`.
    pub fn for_data_dir(data_dir: PathBuf, listen: SocketAddr) -> ServeConfig {
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            config: ServeConfig,
        }
        // Parsed like `corral serve`'s own arguments, empty variables counting as unset.
        let command = crate::cli::ignore_empty_env(<Wrapper as clap::CommandFactory>::command());
        let matches = command.get_matches_from(["corral"]);
        let mut config = <Wrapper as clap::FromArgMatches>::from_arg_matches(&matches)
            .unwrap_or_else(|e| e.exit())
            .config;
        config.data_dir = data_dir;
        config.listen = listen;
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invocation_timeout_as_long_as_the_request_timeout_is_refused() {
        let mut config =
            ServeConfig::for_data_dir(".corral".into(), "127.0.0.1:0".parse().unwrap());
        assert!(config.check().is_ok(), "the defaults agree");
        config.timeout = config.request_timeout;
        let message = config.check().unwrap_err().to_string();
        assert!(message.contains("CORRAL_REQUEST_TIMEOUT"), "{message}");
        config.timeout = Duration::from_secs(1);
        config.task_poll = Duration::ZERO;
        assert!(config.check().is_err(), "a poll of zero would spin");
        config.task_poll = Duration::from_millis(100);
        config.task_lease = Duration::from_millis(500);
        assert!(config.check().is_err(), "a lease too short to renew");
    }
}
