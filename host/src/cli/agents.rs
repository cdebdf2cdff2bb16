//! `corral agent …`: create, list, show, delete, pause and resume agents, read and set
//! their policies and read their usage, over `/v1/agents…` of a running `corral serve`.

use std::io;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Map, Value};

use super::client::{
    Answer, PageArgs, ServerArgs, conclude, list_pages, parse_json, print_agent_usage, print_json,
};
use super::output::outln;
use super::table::{Table, items, print_fields, text, time};

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
    /// Create an agent (developer; with --policy, admin).
    Create {
        /// Its name: 1 to 64 lowercase letters, digits, '-' and '_', starting with a
        /// letter.
        name: String,
        /// What it is for.
        #[arg(long)]
        description: Option<String>,
        /// Its policy: JSON, or @file, or @- for stdin [default: the host's limits,
        /// no grants].
        #[arg(long, value_name = "JSON|@FILE")]
        policy: Option<String>,
    },
    /// List the tenant's agents.
    List(PageArgs),
    /// Show an agent: status, active version, policy.
    Show {
        /// The agent's name.
        name: String,
    },
    /// Delete an agent, with its config values and secrets (admin). Its executions
    /// stay on record.
    Delete {
        /// The agent's name.
        name: String,
    },
    /// Pause an agent: invocations and task attempts are refused until it is resumed.
    Pause {
        /// The agent's name.
        name: String,
    },
    /// Resume a paused agent.
    Resume {
        /// The agent's name.
        name: String,
    },
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

/// Runs `corral agent …`. The error is only the output's (see
/// [`super::output::status`]).
pub async fn agent(args: AgentArgs) -> io::Result<ExitCode> {
    let server = &args.server;
    let answer = run(server, args.command).await;
    conclude(server, answer)
}

async fn run(server: &ServerArgs, command: AgentCommand) -> anyhow::Result<Answer> {
    let one = |value| Answer::new(value, print_agent);
    Ok(match command {
        AgentCommand::Create {
            name,
            description,
            policy,
        } => {
            let mut body = Map::new();
            body.insert("name".into(), name.into());
            if let Some(description) = description {
                body.insert("description".into(), description.into());
            }
            if let Some(policy) = policy {
                body.insert("policy".into(), parse_json(&policy, "the policy")?);
            }
            one(server
                .call(Method::POST, &["v1", "agents"], Some(body.into()))
                .await?)
        }
        AgentCommand::List(page) => Answer::new(
            list_pages(server, &["v1", "agents"], &[], &page).await?,
            print_agents,
        ),
        AgentCommand::Show { name } => one(server
            .call(Method::GET, &["v1", "agents", &name], None)
            .await?),
        AgentCommand::Delete { name } => {
            server
                .call(Method::DELETE, &["v1", "agents", &name], None)
                .await?;
            Answer::done(name.into(), |name| outln!("deleted agent {}", text(name)))
        }
        AgentCommand::Pause { name } => one(server
            .call(Method::POST, &["v1", "agents", &name, "pause"], None)
            .await?),
        AgentCommand::Resume { name } => one(server
            .call(Method::POST, &["v1", "agents", &name, "resume"], None)
            .await?),
        AgentCommand::Policy { name, set: None } => {
            let agent = server
                .call(Method::GET, &["v1", "agents", &name], None)
                .await?;
            Answer::new(agent["policy"].clone(), print_json)
        }
        AgentCommand::Policy {
            name,
            set: Some(policy),
        } => {
            let policy = parse_json(&policy, "the policy")?;
            let agent = server
                .call(
                    Method::PUT,
                    &["v1", "agents", &name, "policy"],
                    Some(policy),
                )
                .await?;
            Answer::new(agent["policy"].clone(), print_json)
        }
        AgentCommand::Usage { name } => Answer::new(
            server
                .call(Method::GET, &["v1", "agents", &name, "usage"], None)
                .await?,
            print_agent_usage,
        ),
    })
}

fn print_agent(agent: &Value) -> io::Result<()> {
    print_fields(&[
        ("name", text(&agent["name"])),
        ("id", text(&agent["id"])),
        ("status", text(&agent["status"])),
        ("description", text(&agent["description"])),
        ("active version", text(&agent["active_version_id"])),
        ("created", time(&agent["created_at"])),
        ("updated", time(&agent["updated_at"])),
        ("policy", agent["policy"].to_string()),
    ])
}

fn print_agents(page: &Value) -> io::Result<()> {
    let mut table = Table::new(&["NAME", "STATUS", "ACTIVE VERSION", "CREATED", "DESCRIPTION"]);
    for agent in items(page) {
        table.push(vec![
            text(&agent["name"]),
            text(&agent["status"]),
            text(&agent["active_version_id"]),
            time(&agent["created_at"]),
            text(&agent["description"]),
        ]);
    }
    table.print("no agents")
}
