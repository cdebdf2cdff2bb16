//! `corral agent …` and `corral tenant …`: read and set policies and read usage over
//! the HTTP API of a running `corral serve`, as an operator would with curl.

use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::Value;

use super::run::read_input;

/// Where the server is and who is asking.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// The server's base URL.
    #[arg(
        long,
        env = "CORRAL_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    url: String,
    /// An API key (`Authorization: Bearer`).
    #[arg(long, env = "CORRAL_KEY", hide_env_values = true, global = true)]
    key: Option<String>,
    /// Print the server's JSON instead of a summary.
    #[arg(long, global = true)]
    json: bool,
}

/// `corral agent`.
#[derive(Debug, Args)]
pub struct AgentArgs {
    #[command(subcommand)]
    command: AgentCommand,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Debug, Subcommand)]
enum AgentCommand {
    /// Show an agent's policy (limits and quotas), or replace it with `--set`.
    Policy {
        /// The agent's name.
        name: String,
        /// The new policy: JSON, or @file, or @- for stdin.
        #[arg(long, value_name = "JSON|@FILE")]
        set: Option<String>,
    },
    /// Show an agent's use this day and month against each of its quotas and its
    /// tenant's.
    Usage {
        /// The agent's name.
        name: String,
    },
}

/// `corral tenant`.
#[derive(Debug, Args)]
pub struct TenantArgs {
    #[command(subcommand)]
    command: TenantCommand,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Debug, Subcommand)]
enum TenantCommand {
    /// Show a tenant's policy (limits, quotas, plan caps), or replace it with `--set`
    /// (operator admins).
    Policy {
        /// The tenant's id.
        id: String,
        /// The new policy: JSON, or @file, or @- for stdin.
        #[arg(long, value_name = "JSON|@FILE")]
        set: Option<String>,
    },
    /// Show a tenant's use this day and month against its quotas and plan caps.
    Usage {
        /// The tenant's id.
        id: String,
    },
}

pub async fn agent(args: AgentArgs) -> ExitCode {
    let server = &args.server;
    let result = match &args.command {
        AgentCommand::Policy { name, set: None } => server
            .call(Method::GET, &format!("/v1/agents/{name}"), None)
            .await
            .map(|agent| agent["policy"].clone()),
        AgentCommand::Policy {
            name,
            set: Some(policy),
        } => match parse_json(policy) {
            Ok(policy) => server
                .call(
                    Method::PUT,
                    &format!("/v1/agents/{name}/policy"),
                    Some(policy),
                )
                .await
                .map(|agent| agent["policy"].clone()),
            Err(e) => Err(e),
        },
        AgentCommand::Usage { name } => server
            .call(Method::GET, &format!("/v1/agents/{name}/usage"), None)
            .await
            .inspect(|usage| {
                if !server.json {
                    print_agent_usage(usage);
                }
            }),
    };
    let summarized = matches!(args.command, AgentCommand::Usage { .. }) && !server.json;
    finish(result, summarized)
}

pub async fn tenant(args: TenantArgs) -> ExitCode {
    let server = &args.server;
    let result = match &args.command {
        TenantCommand::Policy { id, set: None } => {
            server
                .call(Method::GET, &format!("/v1/tenants/{id}/policy"), None)
                .await
        }
        TenantCommand::Policy {
            id,
            set: Some(policy),
        } => match parse_json(policy) {
            Ok(policy) => {
                server
                    .call(
                        Method::PUT,
                        &format!("/v1/tenants/{id}/policy"),
                        Some(policy),
                    )
                    .await
            }
            Err(e) => Err(e),
        },
        TenantCommand::Usage { id } => server
            .call(Method::GET, &format!("/v1/tenants/{id}/usage"), None)
            .await
            .inspect(|usage| {
                if !server.json {
                    print_tenant_usage(usage);
                }
            }),
    };
    let summarized = matches!(args.command, TenantCommand::Usage { .. }) && !server.json;
    finish(result, summarized)
}

/// Prints policies (always JSON) and `--json` usage; a summary was printed already.
fn finish(result: anyhow::Result<Value>, summarized: bool) -> ExitCode {
    match result {
        Ok(value) => {
            if !summarized {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&value).expect("JSON prints")
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn parse_json(text: &str) -> anyhow::Result<Value> {
    let text = read_input(text)?;
    serde_json::from_str(&text).context("the policy is not valid JSON")
}

impl ServerArgs {
    /// Sends a request; an API error becomes an error naming its code.
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let key = self
            .key
            .as_deref()
            .context("no API key: pass --key or set CORRAL_KEY")?;
        let url = format!("{}{path}", self.url.trim_end_matches('/'));
        let mut request = reqwest::Client::new()
            .request(method, &url)
            .bearer_auth(key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach {url}"))?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(body);
        }
        let error = &body["error"];
        anyhow::bail!(
            "{} {}: {}",
            status.as_u16(),
            error["code"].as_str().unwrap_or("error"),
            error["message"].as_str().unwrap_or("(no message)")
        )
    }
}

fn print_agent_usage(usage: &Value) {
    println!(
        "agent {} (as of {})",
        usage["agent"].as_str().unwrap_or("?"),
        usage["as_of"].as_str().unwrap_or("?")
    );
    print_scope(&usage["usage"]);
    println!("tenant (all its agents together)");
    print_scope(&usage["tenant"]);
}

fn print_tenant_usage(usage: &Value) {
    println!(
        "tenant {} (as of {})",
        usage["tenant_id"].as_str().unwrap_or("?"),
        usage["as_of"].as_str().unwrap_or("?")
    );
    print_scope(&usage["usage"]);
    let caps = &usage["caps"];
    for name in ["agents", "versions", "total_component_bytes"] {
        println!(
            "  {name}: {} of {}",
            caps[name]["used"],
            limit_text(&caps[name]["limit"])
        );
    }
    println!("  max component bytes: {}", caps["max_component_bytes"]);
}

fn print_scope(scope: &Value) {
    for (period, label) in [("day", "today"), ("month", "this month")] {
        let used = &scope["used"][period];
        println!(
            "  {label}: {} invocations, {} fuel, ${}",
            used["invocations"],
            used["fuel"],
            used["dollars"].as_str().unwrap_or("?")
        );
    }
    for budget in scope["budgets"].as_array().into_iter().flatten() {
        println!(
            "  budget {}: {} used of {}, {} left{}; resets {}",
            budget["budget"].as_str().unwrap_or("?"),
            plain(&budget["used"]),
            plain(&budget["limit"]),
            plain(&budget["remaining"]),
            if budget["exhausted"] == true {
                " (EXHAUSTED)"
            } else {
                ""
            },
            budget["resets_at"].as_str().unwrap_or("?")
        );
    }
    println!(
        "  concurrency: {} running of {}",
        scope["concurrency"]["in_flight"],
        limit_text(&scope["concurrency"]["limit"])
    );
    let rate = &scope["rate"];
    if rate.is_object() {
        println!(
            "  rate: {} tokens of {} ({} per {})",
            rate["tokens_available"],
            rate["burst"],
            rate["requests"],
            plain(&rate["per"])
        );
    }
    for (period, label) in [("day", "today"), ("month", "this month")] {
        let denials = &scope["denials"][period];
        if let Some(map) = denials.as_object().filter(|m| !m.is_empty()) {
            let list: Vec<String> = map.iter().map(|(code, n)| format!("{code} {n}")).collect();
            println!("  denied {label}: {}", list.join(", "));
        }
    }
}

fn plain(value: &Value) -> String {
    value
        .as_str()
        .map_or_else(|| value.to_string(), str::to_string)
}

fn limit_text(value: &Value) -> String {
    if value.is_null() {
        "no limit".into()
    } else {
        plain(value)
    }
}
