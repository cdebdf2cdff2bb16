//! `corral run`: one invocation of a local component, printed for people or as JSON.
//!
//! `--config NAME=VALUE` sets config values; `--secret NAME=VALUE` and `--secret-env
//! NAME` set secrets *and grant them* to the run. They are for trying agents out
//! locally: a secret on the command line is visible in shell history and the process
//! list. The run redacts them from the guest's logs and output like `corral serve`.

use std::io;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use super::RuntimeArgs;
use super::calls::LocalAgents;
use super::output::{errln, outln};
use super::units::{
    format_count, format_duration, format_size, parse_count, parse_duration, parse_size,
};
use crate::limits::Limits;
use crate::policy::{
    Grants, HostRule, HttpGrant, KvGrant, LlmGrant, MAX_GRANTED_SECRETS, check_config_name,
};
use crate::runtime::capabilities::agents::CallChain;
use crate::runtime::capabilities::config::StaticConfig;
use crate::runtime::capabilities::kv::MemoryKvStore;
use crate::runtime::{Execution, InvokeRequest, LogSource, Outcome, Providers};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The agent component (.wasm) to run.
    component: PathBuf,
    /// The action to invoke.
    #[arg(short, long)]
    action: String,
    /// The input: JSON text, or @FILE to read it from a file (@- for stdin).
    #[arg(short, long, default_value = "{}")]
    input: String,
    /// Fuel (≈ wasm instructions) the guest may use, e.g. 1000000 or 1e9.
    #[arg(long, default_value_t = Limits::DEFAULT_FUEL, value_parser = parse_count)]
    fuel: u64,
    /// Linear memory the guest may hold, e.g. 64MiB.
    #[arg(long, default_value = "64MiB", value_parser = parse_size)]
    memory: u64,
    /// Wall-clock time the invocation may take, e.g. 2s or 500ms.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    timeout: Duration,
    /// Output the guest may return, e.g. 1MiB.
    #[arg(long, default_value = "1MiB", value_parser = parse_size)]
    max_output: u64,
    /// Log bytes (logging, stdout and stderr) the guest may write, e.g. 64KiB.
    #[arg(long, default_value = "64KiB", value_parser = parse_size)]
    max_logs: u64,
    /// Allow outbound HTTP to scheme://host[:port] (repeatable), e.g.
    /// https://api.example.com, http://127.0.0.1:8080 or https://*.example.com.
    /// Without it every request is denied. A host name never reaches a loopback,
    /// private or link-local address; name such an address itself to allow it.
    #[arg(long = "allow-http", value_name = "RULE", value_parser = parse_rule)]
    allow_http: Vec<HostRule>,
    /// Per-request HTTP timeout (connect, first byte, between bytes), e.g. 2s [default: 5s].
    #[arg(long, value_parser = parse_duration, requires = "allow_http")]
    http_timeout: Option<Duration>,
    /// Response body bytes each HTTP request may receive, e.g. 256KiB [default: 1MiB].
    #[arg(long, value_parser = parse_size, requires = "allow_http")]
    http_max_response: Option<u64>,
    /// HTTP requests the invocation may make, denied ones included [default: 10].
    #[arg(long, value_parser = parse_count, requires = "allow_http")]
    http_max_requests: Option<u64>,
    /// Grant key-value state (`corral:agent/kv`). It lasts for this run only, unless
    /// --kv-file keeps it. Without it every kv call is denied.
    #[arg(long)]
    kv: bool,
    /// Keep key-value state in this JSON file: read at the start (if it exists) and
    /// written back after the run, whatever its outcome, so state carries over between
    /// runs. Values are base64; expired entries are dropped when it is written.
    #[arg(long, value_name = "PATH", requires = "kv")]
    kv_file: Option<PathBuf>,
    /// Bytes of one kv value, e.g. 16KiB [default: 64KiB].
    #[arg(long, value_parser = parse_size, requires = "kv")]
    kv_max_value: Option<u64>,
    /// Keys the agent may hold [default: 1000].
    #[arg(long, value_parser = parse_count, requires = "kv")]
    kv_max_keys: Option<u64>,
    /// Bytes of all keys and values together, e.g. 1MiB [default: 10MiB].
    #[arg(long, value_parser = parse_size, requires = "kv")]
    kv_max_bytes: Option<u64>,
    /// Set the agent's config value NAME (repeatable), read with `config.get`.
    #[arg(long = "config", value_name = "NAME=VALUE", value_parser = parse_assignment)]
    config: Vec<(String, String)>,
    /// Set the secret NAME and grant it to this run (repeatable). For testing: the value
    /// shows in your shell history and process list; prefer --secret-env.
    #[arg(long = "secret", value_name = "NAME=VALUE", value_parser = parse_assignment)]
    secret: Vec<(String, String)>,
    /// Set the secret NAME from the environment variable of the same name, and grant it
    /// to this run (repeatable).
    #[arg(long = "secret-env", value_name = "NAME")]
    secret_env: Vec<String>,
    /// Let the agent call another local agent: NAME=PATH to its component (repeatable).
    /// Every agent named may call the others, up to 4 calls deep; each call runs under
    /// these limits and at most the time its caller has left.
    #[arg(long = "call", value_name = "NAME=PATH", value_parser = parse_call)]
    calls: Vec<(String, PathBuf)>,
    /// The model providers and aliases, as for `corral serve` (`CORRAL_LLM_CONFIG`, see
    /// docs/MODELS.md).
    #[arg(long, value_name = "PATH", env = "CORRAL_LLM_CONFIG")]
    llm_config: Option<PathBuf>,
    /// Let the agent call this model alias of the configuration (repeatable).
    #[arg(long = "allow-model", value_name = "ALIAS", requires = "llm_config")]
    allow_model: Vec<String>,
    /// Answer tokens one model call may ask for.
    #[arg(long, value_parser = parse_count, requires = "allow_model")]
    llm_max_tokens: Option<u64>,
    /// Model calls the run may make.
    #[arg(long, value_parser = parse_count, requires = "allow_model")]
    llm_max_calls: Option<u64>,
    /// Print the full execution record as JSON instead of output and a summary.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

/// Runs the invocation and prints it; the error is only the output's (see
/// [`super::output::status`]).
pub async fn run(args: RunArgs) -> io::Result<ExitCode> {
    let json = args.json;
    let execution = match execute(args).await {
        Ok(execution) => execution,
        Err(e) => {
            errln!("error: {e:#}");
            return Ok(ExitCode::from(2));
        }
    };
    if json {
        let text = serde_json::to_string_pretty(&execution).map_err(io::Error::other)?;
        outln!("{text}")?;
    } else {
        print_for_people(&execution)?;
    }
    Ok(exit_code(execution.outcome))
}

/// Loads the component and runs the action, printing the calls it made.
async fn execute(args: RunArgs) -> anyhow::Result<Execution> {
    let input = read_input(&args.input)?;
    let mut grants = grants(&args)?;
    let config = local_config(&args)?;
    grants.secrets = config.secrets.keys().cloned().collect();
    grants.secrets.sort();
    let bytes = std::fs::read(&args.component)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", args.component.display()))?;
    let runtime = Arc::new(args.runtime.runtime()?);
    let agent = runtime
        .load(bytes)
        .await
        .map_err(|e| anyhow::anyhow!("{} cannot be loaded: {e}", args.component.display()))?;
    let limits = Limits {
        fuel: args.fuel,
        memory_bytes: args.memory,
        timeout: args.timeout,
        output_bytes: args.max_output,
        log_bytes: args.max_logs,
    };
    let store = match (&grants.kv, &args.kv_file) {
        (None, _) => None,
        (Some(_), None) => Some(Arc::new(MemoryKvStore::new())),
        (Some(_), Some(path)) => {
            Some(Arc::new(MemoryKvStore::open(path).map_err(|e| {
                anyhow::anyhow!("reading the kv file {}: {e}", path.display())
            })?))
        }
    };
    let catalogue = match &args.llm_config {
        Some(path) => Some(Arc::new(crate::llm::Catalogue::load(path)?)),
        None => None,
    };
    if let Some(catalogue) = &catalogue
        && let Some(unknown) = args
            .allow_model
            .iter()
            .find(|m| catalogue.model(m).is_none())
    {
        let known: Vec<&str> = catalogue.aliases().collect();
        anyhow::bail!(
            "--allow-model {unknown}: {} has no such model (it has: {})",
            args.llm_config.as_ref().expect("loaded").display(),
            known.join(", ")
        );
    }
    let mut request = InvokeRequest::new(&args.action, input, limits).with_grants(grants);
    request.providers = Providers {
        kv: store.clone().map(|s| s as _),
        config: Some(Arc::new(config)),
        llm: catalogue,
        ..Providers::default()
    };
    let local = LocalAgents::new(
        runtime.clone(),
        args.calls.iter().cloned().collect(),
        limits,
    );
    if !args.calls.is_empty() {
        let id = uuid::Uuid::now_v7().to_string();
        let name = agent.metadata.name.clone();
        request.grants.agents = local.grants().agents;
        request.providers.agents = Some(local.caller(CallChain::root(&name, &id)));
        request.execution_id = Some(id);
    }
    let execution = runtime.invoke(&agent, request).await?;
    if !args.json {
        for (depth, name, call) in local.ran.lock().expect("calls lock").iter() {
            errln!(
                "{}call {name}.{}: {} ({} fuel, {})",
                "  ".repeat(depth.saturating_sub(1)),
                call.action,
                call.outcome.as_str(),
                format_count(call.usage.fuel),
                format_duration(call.usage.wall_time)
            );
        }
    }
    if let (Some(store), Some(path)) = (&store, &args.kv_file) {
        store
            .save()
            .map_err(|e| anyhow::anyhow!("writing the kv file {}: {e}", path.display()))?;
    }
    Ok(execution)
}

fn parse_assignment(text: &str) -> Result<(String, String), String> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not NAME=VALUE"))?;
    check_config_name(name)?;
    Ok((name.to_string(), value.to_string()))
}

/// The config values and secrets the flags set; the last of one name wins.
fn local_config(args: &RunArgs) -> anyhow::Result<StaticConfig> {
    let mut config = StaticConfig {
        values: args.config.iter().cloned().collect(),
        ..StaticConfig::default()
    };
    for (name, value) in &args.secret {
        config.secrets.insert(name.clone(), value.clone());
    }
    for name in &args.secret_env {
        check_config_name(name).map_err(|e| anyhow::anyhow!("--secret-env: {e}"))?;
        let value = std::env::var(name).map_err(|_| {
            anyhow::anyhow!(
                "--secret-env {name}: the environment variable {name} is not set (or not UTF-8)"
            )
        })?;
        config.secrets.insert(name.clone(), value);
    }
    if config.secrets.len() > MAX_GRANTED_SECRETS {
        anyhow::bail!(
            "{} secrets given; a run may be granted at most {MAX_GRANTED_SECRETS}",
            config.secrets.len()
        );
    }
    Ok(config)
}

fn parse_call(text: &str) -> Result<(String, PathBuf), String> {
    let (name, path) = text
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=PATH, not {text:?}"))?;
    if !crate::policy::is_agent_name(name) {
        return Err(format!(
            "{name:?} is not an agent name (lowercase letters, digits, '-' and '_', starting with a letter)"
        ));
    }
    Ok((name.to_string(), PathBuf::from(path)))
}

fn parse_rule(text: &str) -> Result<HostRule, String> {
    text.parse()
        .map_err(|e: crate::policy::RuleError| e.to_string())
}

/// The grants the flags ask for, checked against the host's ceilings.
fn grants(args: &RunArgs) -> anyhow::Result<Grants> {
    let kv = args.kv.then(|| KvGrant {
        max_value_bytes: args
            .kv_max_value
            .unwrap_or(KvGrant::DEFAULT_MAX_VALUE_BYTES),
        max_keys: args.kv_max_keys.unwrap_or(KvGrant::DEFAULT_MAX_KEYS),
        max_total_bytes: args
            .kv_max_bytes
            .unwrap_or(KvGrant::DEFAULT_MAX_TOTAL_BYTES),
    });
    if let Some(kv) = &kv {
        kv.validate().map_err(|m| {
            named_by_flags(
                m,
                &[
                    ("grants.kv.max_value_bytes", "--kv-max-value"),
                    ("grants.kv.max_keys", "--kv-max-keys"),
                    ("grants.kv.max_total_bytes", "--kv-max-bytes"),
                ],
            )
        })?;
    }
    let llm = (!args.allow_model.is_empty()).then(|| {
        let mut grant = LlmGrant::new(args.allow_model.clone());
        if let Some(n) = args.llm_max_tokens {
            grant.max_tokens_per_call = u32::try_from(n).unwrap_or(u32::MAX);
        }
        if let Some(n) = args.llm_max_calls {
            grant.max_calls = n;
        }
        grant
    });
    if let Some(llm) = &llm {
        llm.validate().map_err(|m| {
            named_by_flags(
                m,
                &[
                    ("grants.llm.models", "--allow-model"),
                    ("grants.llm.max_tokens_per_call", "--llm-max-tokens"),
                    ("grants.llm.max_calls", "--llm-max-calls"),
                ],
            )
        })?;
    }
    let http = (!args.allow_http.is_empty()).then(|| {
        let defaults = HttpGrant::new(args.allow_http.clone());
        HttpGrant {
            timeout_ms: args.http_timeout.map_or(defaults.timeout_ms, |t| {
                t.as_millis().try_into().unwrap_or(u64::MAX)
            }),
            max_response_bytes: args
                .http_max_response
                .unwrap_or(defaults.max_response_bytes),
            max_requests: args.http_max_requests.unwrap_or(defaults.max_requests),
            ..defaults
        }
    });
    if let Some(http) = &http {
        http.validate().map_err(|m| {
            named_by_flags(
                m,
                &[
                    ("grants.http.timeout_ms", "--http-timeout (in ms)"),
                    ("grants.http.max_response_bytes", "--http-max-response"),
                    ("grants.http.max_requests", "--http-max-requests"),
                ],
            )
        })?;
    }
    Ok(Grants {
        http,
        kv,
        llm,
        ..Grants::default()
    })
}

/// A policy refusal, with each policy field named by the flag that set it here.
fn named_by_flags(message: String, flags: &[(&str, &str)]) -> anyhow::Error {
    let message = flags
        .iter()
        .fold(message, |m, (field, flag)| m.replace(field, flag));
    anyhow::anyhow!("{message}")
}

pub(super) fn read_input(arg: &str) -> anyhow::Result<String> {
    match arg.strip_prefix('@') {
        Some("-") => Ok(std::io::read_to_string(std::io::stdin())?),
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading input file {path}: {e}")),
        None => Ok(arg.to_string()),
    }
}

fn print_for_people(execution: &Execution) -> io::Result<()> {
    for entry in &execution.logs {
        let tag = match entry.source {
            LogSource::Agent => format!("{:?}", entry.level).to_lowercase(),
            LogSource::Stdout => "stdout".into(),
            LogSource::Stderr => "stderr".into(),
        };
        errln!("[{tag}] {}", entry.message.trim_end());
    }
    match (&execution.output, &execution.error) {
        (Some(output), _) => match serde_json::from_str::<serde_json::Value>(output) {
            Ok(value) => outln!(
                "{}",
                serde_json::to_string_pretty(&value).unwrap_or_else(|_| output.clone())
            )?,
            Err(_) => outln!("{output}")?,
        },
        (None, Some(error)) => errln!(
            "error: {} ({}): {}",
            execution.outcome,
            error.code,
            error.message
        ),
        (None, None) => errln!("error: {}", execution.outcome),
    }
    for denial in &execution.denials {
        errln!(
            "[denied] {} {} ({}): {}",
            denial.capability,
            denial.target,
            denial.reason.as_str(),
            denial.detail
        );
    }
    let usage = &execution.usage;
    let http = &usage.http;
    if http.requests + http.requests_denied > 0 {
        errln!(
            "http: {} sent · {} denied · {} out · {} in{}",
            http.requests,
            http.requests_denied,
            format_size(http.bytes_sent),
            format_size(http.bytes_received),
            if http.responses_cut > 0 {
                format!(" · {} cut at the size cap", http.responses_cut)
            } else {
                String::new()
            }
        );
    }
    let kv = &usage.kv;
    if kv.reads + kv.writes + kv.deletes + kv.lists + kv.denied + kv.refused > 0 {
        errln!(
            "kv: {} reads ({}) · {} writes ({}) · {} deletes · {} lists · {} denied · {} refused",
            kv.reads,
            format_size(kv.bytes_read),
            kv.writes,
            format_size(kv.bytes_written),
            kv.deletes,
            kv.lists,
            kv.denied,
            kv.refused,
        );
    }
    let llm = &usage.llm;
    if llm.calls + llm.denied > 0 {
        errln!(
            "llm: {} calls · {} in / {} out tokens · ${} · {} denied · {} failed",
            llm.calls,
            llm.input_tokens,
            llm.output_tokens,
            crate::costs::format_dollars(llm.cost_picodollars),
            llm.denied,
            llm.failed,
        );
    }
    let config = &usage.config;
    if config.values_read + config.secrets_read + config.secrets_denied > 0 {
        errln!(
            "config: {} values read · {} secrets read · {} secrets denied",
            config.values_read,
            config.secrets_read,
            config.secrets_denied
        );
    }
    let calls = &usage.agents;
    if calls.calls + calls.calls_denied > 0 {
        errln!(
            "calls: {} made · {} denied · {} failed · {} executions below, {} fuel",
            calls.calls,
            calls.calls_denied,
            calls.calls_failed,
            calls.subtree.executions,
            format_count(calls.subtree.fuel)
        );
    }
    errln!(
        "{} · fuel {} · peak memory {} · {} · logs {} · output {}",
        execution.outcome,
        format_count(usage.fuel),
        format_size(usage.peak_memory_bytes),
        format_duration(usage.wall_time),
        format_size(usage.log_bytes),
        format_size(usage.output_bytes),
    );
    Ok(())
}

/// The documented exit status for each outcome (see `corral run --help`).
pub fn exit_code(outcome: Outcome) -> ExitCode {
    ExitCode::from(match outcome {
        Outcome::Succeeded => 0,
        Outcome::AgentError | Outcome::InvalidInput => 1,
        Outcome::Trapped => 3,
        Outcome::FuelExhausted
        | Outcome::MemoryLimitExceeded
        | Outcome::TimedOut
        | Outcome::OutputTooLarge
        | Outcome::LogLimitExceeded
        | Outcome::Cancelled
        | Outcome::HostFailure => 4,
    })
}
