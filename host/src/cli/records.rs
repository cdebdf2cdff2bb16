//! `corral audit list`, `corral costs` and `corral usage`: the records a running `corral
//! serve` keeps about what was done and what it cost (`/v1/audit`, `/v1/costs`, and the
//! usage reports of `/v1/agents/{name}/usage` and `/v1/tenants/{id}/usage`).

use std::io;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use reqwest::Method;
use serde_json::Value;

use super::client::{
    Answer, PageArgs, ServerArgs, conclude, filters, list_pages, print_agent_usage,
    print_tenant_usage, send,
};
use super::output::outln;
use super::table::{Table, items, text, time};
use super::units::{format_count, format_duration};

/// `corral audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(subcommand)]
    command: AuditCommand,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// List audit events, newest first: every change, and every refusal.
    List {
        /// Only events by this API key (its id).
        #[arg(long, value_name = "KEY_ID")]
        actor: Option<String>,
        /// Only this action, e.g. agent.create, version.upload, auth.denied.
        #[arg(long)]
        action: Option<String>,
        /// Only events about this kind of resource, e.g. agent, api_key, tenant.
        #[arg(long, value_name = "TYPE")]
        resource_type: Option<String>,
        /// Only events about this resource (its id or name).
        #[arg(long, value_name = "ID")]
        resource_id: Option<String>,
        /// Only events at or after this time (RFC 3339).
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// Only events before this time (RFC 3339).
        #[arg(long, value_name = "TIME")]
        until: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
}

/// Runs `corral audit …`. The error is only the output's (see
/// [`super::output::status`]).
pub async fn audit(args: AuditArgs) -> io::Result<ExitCode> {
    let server = &args.server;
    let AuditCommand::List {
        actor,
        action,
        resource_type,
        resource_id,
        since,
        until,
        page,
    } = args.command;
    let query = filters(&[
        ("actor", &actor),
        ("action", &action),
        ("resource_type", &resource_type),
        ("resource_id", &resource_id),
        ("since", &since),
        ("until", &until),
    ]);
    let answer = list_pages(server, &["v1", "audit"], &query, &page)
        .await
        .map(|page| Answer::new(page, print_events));
    conclude(server, answer)
}

fn print_events(page: &Value) -> io::Result<()> {
    let mut table = Table::new(&["TIME", "ACTION", "RESULT", "RESOURCE", "ACTOR"]);
    for event in items(page) {
        table.push(vec![
            time(&event["occurred_at"]),
            text(&event["action"]),
            text(&event["result"]),
            match event["resource_id"].as_str() {
                Some(id) => format!("{} {id}", text(&event["resource_type"])),
                None => text(&event["resource_type"]),
            },
            text(&event["actor_key_id"]),
        ]);
    }
    table.print("no audit events")
}

/// How costs are bucketed.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Period {
    Day,
    Week,
    Month,
}

/// `corral costs`.
#[derive(Debug, Args)]
pub struct CostsArgs {
    /// Bucket by day, week (from Monday) or month, UTC.
    #[arg(long, value_enum, default_value = "day")]
    period: Period,
    /// From this time on (RFC 3339) [default: 30 days before --until].
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// Until this time (RFC 3339) [default: now].
    #[arg(long, value_name = "TIME")]
    until: Option<String>,
    #[command(flatten)]
    server: ServerArgs,
}

/// Runs `corral costs`: cost by agent and period, and model spend by model. The error
/// is only the output's (see [`super::output::status`]).
pub async fn costs(args: CostsArgs) -> io::Result<ExitCode> {
    let server = &args.server;
    let period = match args.period {
        Period::Day => "day",
        Period::Week => "week",
        Period::Month => "month",
    };
    let mut query = filters(&[("since", &args.since), ("until", &args.until)]);
    query.push(("period", period.into()));
    let answer = async {
        let report = send(server.request(Method::GET, &["v1", "costs"])?.query(&query)).await?;
        Ok::<_, anyhow::Error>(Answer::new(report, print_costs))
    }
    .await;
    conclude(server, answer)
}

fn print_costs(report: &Value) -> io::Result<()> {
    outln!(
        "costs by {} from {} to {}: ${} over {} executions",
        text(&report["period"]),
        time(&report["since"]),
        time(&report["until"]),
        text(&report["total_cost"]),
        text(&report["total_executions"])
    )?;
    let buckets = report["buckets"].as_array().map_or(&[][..], Vec::as_slice);
    if !buckets.is_empty() {
        let mut table = Table::new(&["PERIOD", "AGENT", "EXECUTIONS", "FUEL", "WALL", "COST"]);
        for bucket in buckets {
            table.push(vec![
                text(&bucket["period_start"]),
                text(&bucket["agent"]),
                text(&bucket["executions"]),
                bucket["fuel"]
                    .as_u64()
                    .map_or_else(|| text(&bucket["fuel"]), format_count),
                bucket["wall_time_us"].as_u64().map_or_else(
                    || text(&bucket["wall_time_us"]),
                    |us| format_duration(Duration::from_micros(us)),
                ),
                text(&bucket["cost"]),
            ]);
        }
        table.print("")?;
    }
    let models = report["models"].as_array().map_or(&[][..], Vec::as_slice);
    if !models.is_empty() {
        outln!()?;
        let mut table = Table::new(&["MODEL", "CALLS", "INPUT TOKENS", "OUTPUT TOKENS", "COST"]);
        for model in models {
            table.push(vec![
                text(&model["model"]),
                text(&model["calls"]),
                text(&model["input_tokens"]),
                text(&model["output_tokens"]),
                text(&model["cost"]),
            ]);
        }
        table.print("")?;
    }
    Ok(())
}

/// `corral usage`.
#[derive(Debug, Args)]
pub struct UsageArgs {
    /// An agent's usage (and its tenant's), against their quotas.
    #[arg(
        long,
        value_name = "NAME",
        required_unless_present = "tenant",
        conflicts_with = "tenant"
    )]
    agent: Option<String>,
    /// A tenant's usage, against its quotas and plan caps.
    #[arg(long, value_name = "ID")]
    tenant: Option<String>,
    #[command(flatten)]
    server: ServerArgs,
}

/// Runs `corral usage`: the same reports as `corral agent usage` and `corral tenant
/// usage`. The error is only the output's (see [`super::output::status`]).
pub async fn usage(args: UsageArgs) -> io::Result<ExitCode> {
    let server = &args.server;
    let answer = match (&args.agent, &args.tenant) {
        (Some(agent), _) => server
            .call(Method::GET, &["v1", "agents", agent, "usage"], None)
            .await
            .map(|report| Answer::new(report, print_agent_usage)),
        (None, Some(tenant)) => server
            .call(Method::GET, &["v1", "tenants", tenant, "usage"], None)
            .await
            .map(|report| Answer::new(report, print_tenant_usage)),
        (None, None) => unreachable!("clap requires --agent or --tenant"),
    };
    conclude(server, answer)
}
