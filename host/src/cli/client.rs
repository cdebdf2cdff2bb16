//! `corral agent …` and `corral tenant …`: read and set policies and read usage over
//! the HTTP API of a running `corral serve`, as an operator would with curl. The
//! server's address and key ([`ServerArgs`]) and the request helpers ([`send`]) serve
//! the other client commands too (`corral task …`).

use std::io;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::Value;

use super::output::{errln, outln};
use super::run::read_input;

/// Where the server is and who is asking.
#[derive(Debug, Clone, Args)]
// After the subcommand's own options in `--help`, rather than among them.
#[command(next_display_order = 1000)]
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

/// Runs `corral agent …`. The error is only the output's (see
/// [`super::output::status`]).
pub async fn agent(args: AgentArgs) -> io::Result<ExitCode> {
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
        AgentCommand::Usage { name } => {
            server
                .call(Method::GET, &format!("/v1/agents/{name}/usage"), None)
                .await
        }
    };
    let summary = match args.command {
        AgentCommand::Usage { .. } if !server.json => Some(print_agent_usage as Summary),
        _ => None,
    };
    finish(result, summary)
}

/// Runs `corral tenant …`. The error is only the output's (see
/// [`super::output::status`]).
pub async fn tenant(args: TenantArgs) -> io::Result<ExitCode> {
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
        TenantCommand::Usage { id } => {
            server
                .call(Method::GET, &format!("/v1/tenants/{id}/usage"), None)
                .await
        }
    };
    let summary = match args.command {
        TenantCommand::Usage { .. } if !server.json => Some(print_tenant_usage as Summary),
        _ => None,
    };
    finish(result, summary)
}

/// Prints an answer for people.
type Summary = fn(&Value) -> io::Result<()>;

/// Prints the answer: with `summary` if given, else as JSON (policies always, usage with
/// `--json`).
fn finish(result: anyhow::Result<Value>, summary: Option<Summary>) -> io::Result<ExitCode> {
    match result {
        Ok(value) => {
            match summary {
                Some(print) => print(&value)?,
                None => outln!(
                    "{}",
                    serde_json::to_string_pretty(&value).expect("JSON prints")
                )?,
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            errln!("error: {e:#}");
            Ok(ExitCode::from(1))
        }
    }
}

fn parse_json(text: &str) -> anyhow::Result<Value> {
    let text = read_input(text)?;
    serde_json::from_str(&text).context("the policy is not valid JSON")
}

impl ServerArgs {
    /// Whether `--json` asked for the server's JSON as is.
    pub(super) fn json(&self) -> bool {
        self.json
    }

    /// A request to the path made of `segments` under the server's URL (each segment
    /// percent-encoded, so a name or id cannot reach another route), with the API key.
    pub(super) fn request(
        &self,
        method: Method,
        segments: &[&str],
    ) -> anyhow::Result<reqwest::RequestBuilder> {
        let mut url = reqwest::Url::parse(&self.url)
            .with_context(|| format!("{:?} is not a URL", self.url))?;
        url.path_segments_mut()
            .map_err(|()| anyhow::anyhow!("{:?} cannot be a base URL", self.url))?
            .pop_if_empty()
            .extend(segments);
        Ok(reqwest::Client::new()
            .request(method, url)
            .bearer_auth(self.key()?))
    }

    /// Sends a request; an API error becomes an error naming its code.
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.url.trim_end_matches('/'));
        let mut request = reqwest::Client::new()
            .request(method, &url)
            .bearer_auth(self.key()?);
        if let Some(body) = body {
            request = request.json(&body);
        }
        send(request).await
    }

    fn key(&self) -> anyhow::Result<&str> {
        self.key
            .as_deref()
            .context("no API key: pass --key or set CORRAL_KEY")
    }
}

/// Sends `request` and returns the JSON body of a success; an API error becomes an
/// error naming its status, code and message (`404 not_found: …`).
pub(super) async fn send(request: reqwest::RequestBuilder) -> anyhow::Result<Value> {
    let (client, request) = request.build_split();
    let request = request.context("building the request")?;
    let url = request.url().clone();
    let response = client
        .execute(request)
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

fn print_agent_usage(usage: &Value) -> io::Result<()> {
    outln!(
        "agent {} (as of {})",
        usage["agent"].as_str().unwrap_or("?"),
        usage["as_of"].as_str().unwrap_or("?")
    )?;
    print_scope(&usage["usage"])?;
    outln!("tenant (all its agents together)")?;
    print_scope(&usage["tenant"])?;
    Ok(())
}

fn print_tenant_usage(usage: &Value) -> io::Result<()> {
    outln!(
        "tenant {} (as of {})",
        usage["tenant_id"].as_str().unwrap_or("?"),
        usage["as_of"].as_str().unwrap_or("?")
    )?;
    print_scope(&usage["usage"])?;
    let caps = &usage["caps"];
    for name in ["agents", "versions", "total_component_bytes"] {
        outln!(
            "  {name}: {} of {}",
            caps[name]["used"],
            limit_text(&caps[name]["limit"])
        )?;
    }
    outln!("  max component bytes: {}", caps["max_component_bytes"])?;
    Ok(())
}

fn print_scope(scope: &Value) -> io::Result<()> {
    for (period, label) in [("day", "today"), ("month", "this month")] {
        let used = &scope["used"][period];
        outln!(
            "  {label}: {} invocations, {} fuel, ${}",
            used["invocations"],
            used["fuel"],
            used["dollars"].as_str().unwrap_or("?")
        )?;
    }
    for budget in scope["budgets"].as_array().into_iter().flatten() {
        outln!(
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
        )?;
    }
    outln!(
        "  concurrency: {} running of {}",
        scope["concurrency"]["in_flight"],
        limit_text(&scope["concurrency"]["limit"])
    )?;
    let rate = &scope["rate"];
    if rate.is_object() {
        outln!(
            "  rate: {} tokens of {} ({} per {})",
            rate["tokens_available"],
            rate["burst"],
            rate["requests"],
            plain(&rate["per"])
        )?;
    }
    for (period, label) in [("day", "today"), ("month", "this month")] {
        let denials = &scope["denials"][period];
        if let Some(map) = denials.as_object().filter(|m| !m.is_empty()) {
            let list: Vec<String> = map.iter().map(|(code, n)| format!("{code} {n}")).collect();
            outln!("  denied {label}: {}", list.join(", "))?;
        }
    }
    Ok(())
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
