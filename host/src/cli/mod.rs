//! The `corral` command line: `serve` the control API, `run` and `inspect` a component
//! locally, `new` and `build` agent projects, the client commands (`agent`, `version`,
//! `invoke`, `execution`, `task`, `workflow`, `schedule`, `audit`, `costs`, `usage`, `key`,
//! `tenant`, `kv`, `config`, `secret`, and `profile` for the servers they talk to; see
//! `docs/CLI.md`), and the hidden `compile-worker` the host starts for each compile.
//!
//! Every command writes through [`output`], so a reader that goes away (`| head`) ends
//! it quietly, and an environment variable set to the empty string counts as unset
//! ([`ignore_empty_env`]).

mod agent_config;
mod agents;
mod build;
mod calls;
mod client;
mod executions;
mod inspect;
mod invoke;
mod kv;
mod new;
mod output;
mod profiles;
mod records;
mod run;
mod table;
mod tasks;
mod tenants;
pub mod units;
mod versions;
mod workflows;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use self::output::errln;
use crate::runtime::{CompileSettings, Runtime, RuntimeConfig};

/// Corral: run sandboxed WebAssembly agents.
#[derive(Debug, Parser)]
#[command(name = "corral", version, about, propagate_version = true)]
pub struct Cli {
    /// How the log on stderr is written: text, or json (one object per line, for log
    /// collectors). What is logged is chosen by RUST_LOG (default warn).
    #[arg(long, global = true, env = "CORRAL_LOG_FORMAT", value_enum, default_value_t = crate::telemetry::LogFormat::Text)]
    log_format: crate::telemetry::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the control API: upload, version, invoke and inspect agents over HTTP.
    ///
    /// With no DATABASE_URL it keeps everything in an SQLite file in the data
    /// directory, so it works with no setup. On the first start it creates the
    /// operator tenant and prints an admin API key once (or uses CORRAL_BOOTSTRAP_KEY).
    Serve(Box<crate::config::ServeConfig>),
    /// Run one action of an agent component and print its output and usage.
    ///
    /// Exit status: 0 succeeded; 1 agent_error or invalid_input; 2 bad usage or a
    /// component that cannot be loaded; 3 trapped; 4 stopped by a limit
    /// (fuel_exhausted, memory_limit_exceeded, timed_out, output_too_large,
    /// log_limit_exceeded).
    Run(run::RunArgs),
    /// Create, list, show, delete, pause and resume agents, read and set their
    /// policies, and read their usage, on a running server.
    ///
    /// Exit status: 0 done; 1 the server refused (its error code and message are
    /// printed); 2 bad usage, or the server could not be reached.
    Agent(client::AgentArgs),
    /// Upload (with progress), list and activate an agent's versions.
    ///
    /// Exit status: 0 done; 1 the server refused (its error code and message are
    /// printed); 2 bad usage, or the server could not be reached.
    Version(versions::VersionArgs),
    /// Invoke an agent's action on a running server and print its output.
    ///
    /// Exit status: 0 the agent succeeded; 1 the server refused to run it (its error
    /// code and message are printed); 2 bad usage, or the server could not be reached;
    /// 3 it ran but did not succeed (the outcome and error are printed).
    // `--version` names the agent's version to run here, not corral's.
    #[command(disable_version_flag = true)]
    Invoke(invoke::InvokeArgs),
    /// List executions, show one with its logs and call tree, tail and follow new ones.
    ///
    /// Exit status: 0 done; 1 the server refused (its error code and message are
    /// printed); 2 bad usage, or the server could not be reached.
    Execution(executions::ExecutionArgs),
    /// List the audit trail: every change and every refusal.
    ///
    /// Exit status: 0 done; 1 the server refused (its error code and message are
    /// printed); 2 bad usage, or the server could not be reached.
    Audit(records::AuditArgs),
    /// Show costs by agent and day, week or month, and model spend by model.
    ///
    /// Exit status: 0 done; 1 the server refused (its error code and message are
    /// printed); 2 bad usage, or the server could not be reached.
    Costs(records::CostsArgs),
    /// Show an agent's or a tenant's use this day and month against its quotas.
    ///
    /// Exit status: 0 done; 1 the server refused (its error code and message are
    /// printed); 2 bad usage, or the server could not be reached.
    Usage(records::UsageArgs),
    /// Create, list and revoke API keys.
    ///
    /// Exit status: 0 done; 1 the server refused (its error code and message are
    /// printed); 2 bad usage, or the server could not be reached.
    Key(tenants::KeyArgs),
    /// Create, list and show tenants, read or set their policies, read their usage.
    ///
    /// Exit status: 0 done; 1 the server refused (its error code and message are
    /// printed); 2 bad usage, or the server could not be reached.
    Tenant(client::TenantArgs),
    /// List, read, delete and clear an agent's key-value state.
    ///
    /// Exit status: 0 done; 1 the server refused (its error code and message are
    /// printed); 2 bad usage, or the server could not be reached.
    Kv(kv::KvArgs),
    /// Read, set and delete an agent's config values.
    ///
    /// Exit status: 0 done; 1 the server refused (its error code and message are
    /// printed); 2 bad usage, or the server could not be reached.
    Config(agent_config::ConfigArgs),
    /// Set (from a file or stdin, never the command line), list and delete an agent's
    /// secrets.
    ///
    /// Exit status: 0 done; 1 the server refused (its error code and message are
    /// printed); 2 bad usage, or the server could not be reached.
    Secret(agent_config::SecretArgs),
    /// Save, list, choose and delete profiles: servers and their keys, in
    /// ~/.config/corral/config.toml (mode 0600).
    Profile(profiles::ProfileArgs),
    /// Submit tasks to a running server, wait for them, show, list and cancel them.
    ///
    /// Exit status: 0 the request succeeded (for get, wait and submit --wait: the task
    /// succeeded); 1 the task failed or was cancelled; 2 bad usage, or the server
    /// refused the request (its error code and message are printed) or could not be
    /// reached; 3 the task has not ended (wait --timeout passed first, or get found it
    /// waiting or running).
    Task(tasks::TaskArgs),
    /// Make a new agent project in ./NAME: sources, the world, the SDK, a README.
    New(new::NewArgs),
    /// Build the agent project here (its corral.toml) into dist/NAME.wasm.
    ///
    /// Exit status: 0 built; 1 a build step failed; 2 no project, or a toolchain is
    /// missing (the message says how to install it).
    Build(build::BuildArgs),
    /// Submit, start, define, read, wait for, list and cancel workflows on a running
    /// server (`corral workflow submit flow.yaml --wait`).
    ///
    /// Exit status: 0 the request succeeded (for get, wait and submit --wait: the
    /// workflow succeeded); 1 it failed, was compensated or cancelled; 2 bad usage, or
    /// the server refused the request or could not be reached; 3 it has not ended.
    Workflow(workflows::WorkflowArgs),
    /// Create, read, list, pause, resume and delete schedules on a running server.
    ///
    /// Exit status: 0 the request succeeded; 2 bad usage, or the server refused the
    /// request or could not be reached.
    Schedule(workflows::ScheduleArgs),
    /// Show what a component is: whether it is a valid agent, its metadata, imports and exports.
    Inspect(inspect::InspectArgs),
    /// Compile a component read on stdin under caps (started by the host itself).
    #[command(hide = true)]
    CompileWorker(CompileWorkerArgs),
}

#[derive(Debug, Args)]
struct CompileWorkerArgs {
    /// Engine settings as JSON.
    #[arg(long)]
    engine: String,
    /// Address-space cap in bytes.
    #[arg(long)]
    memory_bytes: u64,
    /// CPU-time cap in seconds.
    #[arg(long)]
    cpu_seconds: u64,
}

/// Settings shared by the commands that load components.
#[derive(Debug, Clone, Args)]
pub struct RuntimeArgs {
    /// Where compiled components are cached across runs.
    #[arg(long, env = "CORRAL_CACHE_DIR", value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Do not read or write the artifact cache.
    #[arg(long)]
    no_cache: bool,
    /// Longest a compile may take.
    #[arg(long, env = "CORRAL_COMPILE_TIMEOUT", default_value = "60s", value_parser = units::parse_duration)]
    compile_timeout: std::time::Duration,
    /// Most memory a compile may use.
    #[arg(long, env = "CORRAL_COMPILE_MEMORY", default_value = "2GiB", value_parser = units::parse_size)]
    compile_memory: u64,
}

impl RuntimeArgs {
    /// Builds a runtime whose compiles run in worker processes of this binary.
    pub fn runtime(&self) -> anyhow::Result<Runtime> {
        let mut config = RuntimeConfig::in_memory();
        let program = std::env::current_exe()?;
        config.compile = CompileSettings {
            timeout: self.compile_timeout,
            memory_bytes: self.compile_memory,
            ..CompileSettings::worker(program)
        };
        if !self.no_cache {
            config.cache_dir = Some(match &self.cache_dir {
                Some(dir) => dir.clone(),
                None => default_cache_dir(),
            });
        }
        Ok(Runtime::new(config)?)
    }
}

async fn serve(config: crate::config::ServeConfig) -> ExitCode {
    let app = match crate::server::Application::build(config.clone()).await {
        Ok(app) => app,
        Err(e) => {
            errln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    if let Some(secret) = app.bootstrap_secret() {
        errln!(
            "\n  First start: created the operator tenant and its admin API key.\n  It is shown only now; store it safely:\n\n    {secret}\n"
        );
    }
    let backend = app.db().backend();
    tracing::info!(listen = %config.listen, port = app.port(), backend, "serving");
    errln!(
        "corral serving on http://{}:{} ({backend})",
        config.listen.ip(),
        app.port()
    );
    if let Some(port) = app.metrics_port() {
        errln!(
            "corral metrics (no key) on http://{}:{port}/metrics",
            config.metrics_listen.map_or(config.listen.ip(), |a| a.ip())
        );
    }
    match app.run_until_stopped(shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            errln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
    errln!("shutting down: finishing in-flight requests");
}

fn default_cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("corral").join("artifacts")
}

/// Treats every environment variable that is set to the empty string as unset, for
/// every setting of `command` and its subcommands: `CORRAL_SECRETS_KEY=` in a shell or
/// a compose file means "not set", but clap would parse the empty string as the value
/// (and refuse it, or use it). Done on the command rather than the environment because
/// `std::env::remove_var` is `unsafe` (edition 2024) and the workspace denies unsafe
/// code, and it covers every `env = "…"` setting, present and future, in one place. An
/// argument whose variable is empty simply stops reading it, so `--help` does not list
/// that variable while it is empty.
pub fn ignore_empty_env(command: clap::Command) -> clap::Command {
    let command = command.mut_args(|arg| {
        let empty = arg
            .get_env()
            .and_then(std::env::var_os)
            .is_some_and(|value| value.is_empty());
        if empty { arg.env(None) } else { arg }
    });
    let names: Vec<String> = command
        .get_subcommands()
        .map(|sub| sub.get_name().to_string())
        .collect();
    names.iter().fold(command, |command, name| {
        command.mut_subcommand(name, ignore_empty_env)
    })
}

/// Parses the arguments and runs the command.
pub fn main() -> ExitCode {
    let mut matches = ignore_empty_env(Cli::command()).get_matches();
    // As `Cli::parse` does, but over the command that ignores empty variables.
    let cli = Cli::from_arg_matches_mut(&mut matches)
        .unwrap_or_else(|e| e.format(&mut Cli::command()).exit());
    if let Command::CompileWorker(args) = &cli.command {
        let code =
            crate::runtime::compile::run_worker(&args.engine, args.memory_bytes, args.cpu_seconds);
        return ExitCode::from(code as u8);
    }
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build();
    let tokio = match tokio {
        Ok(rt) => rt,
        Err(e) => {
            errln!("error: starting the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    crate::telemetry::init(cli.log_format, tokio.handle().clone());
    let status = output::status(tokio.block_on(async move {
        match cli.command {
            Command::Serve(config) => Ok(serve(*config).await),
            Command::Run(args) => run::run(args).await,
            Command::Inspect(args) => inspect::inspect(args).await,
            Command::New(args) => new::new(args),
            Command::Build(args) => build::build(args),
            Command::Agent(args) => client::agent(args).await,
            Command::Tenant(args) => client::tenant(args).await,
            Command::Version(args) => versions::version(args).await,
            Command::Invoke(args) => invoke::invoke(args).await,
            Command::Execution(args) => executions::execution(args).await,
            Command::Audit(args) => records::audit(args).await,
            Command::Costs(args) => records::costs(args).await,
            Command::Usage(args) => records::usage(args).await,
            Command::Key(args) => tenants::key(args).await,
            Command::Kv(args) => kv::kv(args).await,
            Command::Config(args) => agent_config::config(args).await,
            Command::Secret(args) => agent_config::secret(args).await,
            Command::Profile(args) => profiles::profile(args),
            Command::Task(args) => tasks::task(args).await,
            Command::Workflow(args) => workflows::workflow(args).await,
            Command::Schedule(args) => workflows::schedule(args).await,
            Command::CompileWorker(_) => unreachable!("handled above"),
        }
    }));
    crate::telemetry::shutdown();
    status
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    #[test]
    fn the_command_line_is_well_formed() {
        // clap's own checks (unique names and flags, valid defaults, ...), for every
        // subcommand, which otherwise only run when that subcommand is parsed.
        Cli::command().debug_assert();
    }
}
