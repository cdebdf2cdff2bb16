//! `corral workflow …` and `corral schedule …`: clients of the workflow and schedule
//! API (`/v1/workflows…`, `/v1/workflow-definitions…`, `/v1/schedules…`).
//!
//! Workflow files are YAML or JSON (JSON is YAML, so one parser reads both). Like
//! `corral task`, every command prints a summary for people or the server's JSON with
//! `--json`, and its exit status tells how it went:
//!
//! - 0: the request succeeded; for `get`, `wait` and `submit --wait`, the workflow
//!   succeeded;
//! - 1: the workflow failed, was compensated or was cancelled;
//! - 2: bad usage, or the server could not be reached or refused the request;
//! - 3: the workflow has not ended (`wait --timeout` passed, or `get` found it running).

use std::io;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Map, Value, json};

use super::client::{PageArgs, ServerArgs, filters, list_pages, send};
use super::output::{errln, outln};
use super::units::parse_duration;

/// The longest the server holds a `?wait=` request.
const LONGEST_POLL: Duration = Duration::from_secs(60);

/// `corral workflow`.
#[derive(Debug, Args)]
pub struct WorkflowArgs {
    #[command(subcommand)]
    command: WorkflowCommand,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Debug, Subcommand)]
enum WorkflowCommand {
    /// Submit the workflow in FILE (YAML or JSON; - for stdin): its `steps`, and
    /// optionally `output`, `compensate_on_cancel`, `input` and `correlation_id`.
    ///
    /// Exit status: 0 submitted (with --wait: it succeeded); 1 with --wait, it failed,
    /// was compensated or cancelled; 2 bad usage, or the server refused it.
    Submit {
        /// The workflow file.
        file: String,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Start a stored workflow definition by name.
    ///
    /// Exit status: as `submit`.
    Start {
        /// The definition's name.
        name: String,
        /// Its version [default: the latest].
        #[arg(
            id = "definition_version",
            long = "definition-version",
            value_name = "N"
        )]
        version: Option<i32>,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Store the workflow in FILE (YAML or JSON) as the next version of NAME (the file's
    /// `input` and `correlation_id`, if any, are left out: they belong to a run).
    Define {
        /// The definition's name.
        name: String,
        /// The workflow file: its `steps`, `output`, `compensate_on_cancel`.
        file: String,
    },
    /// Show a workflow: its state, steps, outputs, errors and usage.
    ///
    /// Exit status: 0 it succeeded; 1 it failed, was compensated or cancelled; 3 it has
    /// not ended; 2 the request failed.
    Get {
        /// The workflow's id.
        id: String,
    },
    /// Wait until a workflow ends (or --timeout passes), then show it.
    ///
    /// Exit status: as `get`.
    Wait {
        /// The workflow's id.
        id: String,
        /// Give up after this long, e.g. 10m [default: no limit].
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        timeout: Option<Duration>,
    },
    /// List workflows, newest first, one page (--limit) or all of them (--all).
    List {
        /// Only in this state: running, succeeded, failed, compensating, compensated,
        /// cancelled.
        #[arg(long)]
        state: Option<String>,
        /// Only runs of this stored definition.
        #[arg(long, value_name = "NAME")]
        definition: Option<String>,
        #[command(flatten)]
        page: PageArgs,
        /// Start after this `next_cursor` of an earlier page.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Cancel a running workflow: its waiting steps are cancelled, its running ones
    /// stopped (and its completed steps compensated if it asks for it).
    Cancel {
        /// The workflow's id.
        id: String,
    },
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The workflow's input, as JSON text (overrides the file's `input`).
    #[arg(long, value_name = "JSON")]
    input: Option<String>,
    /// Your own id for the workflow (its steps' tasks carry it).
    #[arg(long, value_name = "ID")]
    correlation_id: Option<String>,
    /// Make the submission safe to retry.
    #[arg(long, value_name = "KEY")]
    idempotency_key: Option<String>,
    /// Wait until it ends, and exit as `workflow wait` does.
    #[arg(long)]
    wait: bool,
}

/// `corral schedule`.
#[derive(Debug, Args)]
pub struct ScheduleArgs {
    #[command(subcommand)]
    command: ScheduleCommand,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Debug, Subcommand)]
enum ScheduleCommand {
    /// Create a schedule: a cron expression and what each occurrence enqueues — a task
    /// (--agent and --action) or a stored workflow (--workflow).
    Create {
        /// Five fields (minute hour day month weekday), or six with seconds first.
        #[arg(long)]
        cron: String,
        /// An IANA time zone [default: UTC].
        #[arg(long)]
        timezone: Option<String>,
        /// The agent of each occurrence's task.
        #[arg(long, requires = "action", conflicts_with = "workflow")]
        agent: Option<String>,
        /// The action of each occurrence's task.
        #[arg(long, requires = "agent")]
        action: Option<String>,
        /// The stored workflow each occurrence starts.
        #[arg(long, value_name = "NAME")]
        workflow: Option<String>,
        /// The stored workflow's version [default: the latest at each occurrence].
        #[arg(
            id = "definition_version",
            long = "definition-version",
            value_name = "N",
            requires = "workflow"
        )]
        version: Option<i32>,
        /// The input, as JSON text [default: {}].
        #[arg(long, value_name = "JSON")]
        input: Option<String>,
        /// A late occurrence (after downtime): run_once or skip [default: run_once].
        #[arg(long)]
        missed: Option<String>,
        /// allow, or forbid an occurrence while the previous one's work runs
        /// [default: allow].
        #[arg(long)]
        overlap: Option<String>,
        /// Create it paused.
        #[arg(long)]
        paused: bool,
    },
    /// Show a schedule, its next occurrences and the latest handled.
    Get {
        /// The schedule's id.
        id: String,
    },
    /// List schedules, newest first (one page).
    List,
    /// Pause a schedule: no occurrence is handled until it is resumed.
    Pause {
        /// The schedule's id.
        id: String,
    },
    /// Resume a schedule from its next occurrence (those while paused are not run).
    Resume {
        /// The schedule's id.
        id: String,
    },
    /// Delete a schedule and its record of occurrences.
    Delete {
        /// The schedule's id.
        id: String,
    },
}

/// A file's text, or stdin's for `-`.
fn read(path: &str) -> anyhow::Result<String> {
    if path == "-" {
        return io::read_to_string(io::stdin()).context("reading stdin");
    }
    std::fs::read_to_string(path).with_context(|| format!("reading {path}"))
}

/// A YAML or JSON file as JSON.
fn document(path: &str) -> anyhow::Result<Map<String, Value>> {
    let value: Value = serde_yaml_ng::from_str(&read(path)?)
        .with_context(|| format!("{path} is neither YAML nor JSON"))?;
    match value {
        Value::Object(map) => Ok(map),
        _ => anyhow::bail!("{path} holds no workflow (a mapping with `steps`)"),
    }
}

fn json_arg(name: &str, text: &str) -> anyhow::Result<Value> {
    serde_json::from_str(text).with_context(|| format!("{name} is not valid JSON"))
}

fn ended(workflow: &Value) -> Option<u8> {
    match workflow["state"].as_str() {
        Some("succeeded") => Some(0),
        Some("failed" | "compensated" | "cancelled") => Some(1),
        _ => None,
    }
}

/// Runs `corral workflow …`.
pub async fn workflow(args: WorkflowArgs) -> io::Result<ExitCode> {
    let server = &args.server;
    let result = run_workflow(server, args.command).await;
    finish(server, result, print_workflow)
}

fn finish(
    server: &ServerArgs,
    result: anyhow::Result<(Value, u8)>,
    print: fn(&Value) -> io::Result<()>,
) -> io::Result<ExitCode> {
    let (value, status) = match result {
        Ok(answer) => answer,
        Err(e) => {
            errln!("error: {e:#}");
            return Ok(ExitCode::from(2));
        }
    };
    if server.json() {
        outln!(
            "{}",
            serde_json::to_string_pretty(&value).expect("JSON prints")
        )?;
    } else if let Some(items) = value["items"].as_array() {
        if items.is_empty() {
            errln!("none");
        }
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                outln!()?;
            }
            print(item)?;
        }
    } else if !value.is_null() {
        print(&value)?;
    }
    Ok(ExitCode::from(status))
}

async fn run_workflow(
    server: &ServerArgs,
    command: WorkflowCommand,
) -> anyhow::Result<(Value, u8)> {
    match command {
        WorkflowCommand::Submit { file, run } => {
            let body = document(&file)?;
            submit(server, body, run).await
        }
        WorkflowCommand::Start { name, version, run } => {
            let mut body = Map::new();
            body.insert("definition".into(), name.into());
            if let Some(version) = version {
                body.insert("version".into(), version.into());
            }
            submit(server, body, run).await
        }
        WorkflowCommand::Define { name, file } => {
            let mut body = document(&file)?;
            body.remove("input");
            body.remove("correlation_id");
            let request = server
                .request(Method::PUT, &["v1", "workflow-definitions", &name])?
                .json(&body);
            Ok((send(request).await?, 0))
        }
        WorkflowCommand::Get { id } => {
            let workflow = fetch(server, &id, Some(Duration::ZERO)).await?;
            let status = ended(&workflow).unwrap_or(3);
            Ok((workflow, status))
        }
        WorkflowCommand::Wait { id, timeout } => {
            let workflow = fetch(server, &id, timeout).await?;
            let status = ended(&workflow).unwrap_or(3);
            Ok((workflow, status))
        }
        WorkflowCommand::List {
            state,
            definition,
            page,
            cursor,
        } => {
            let query = filters(&[
                ("state", &state),
                ("definition", &definition),
                ("cursor", &cursor),
            ]);
            let listed = list_pages(server, &["v1", "workflows"], &query, &page).await?;
            Ok((listed, 0))
        }
        WorkflowCommand::Cancel { id } => {
            let workflow =
                send(server.request(Method::POST, &["v1", "workflows", &id, "cancel"])?).await?;
            Ok((workflow, 0))
        }
    }
}

async fn submit(
    server: &ServerArgs,
    mut body: Map<String, Value>,
    run: RunArgs,
) -> anyhow::Result<(Value, u8)> {
    if let Some(input) = &run.input {
        body.insert("input".into(), json_arg("--input", input)?);
    }
    if let Some(id) = run.correlation_id {
        body.insert("correlation_id".into(), id.into());
    }
    let mut request = server
        .request(Method::POST, &["v1", "workflows"])?
        .json(&body);
    if let Some(key) = &run.idempotency_key {
        request = request.header("Idempotency-Key", key);
    }
    let submitted = send(request).await?;
    if !run.wait {
        return Ok((submitted, 0));
    }
    let id = submitted["id"]
        .as_str()
        .context("the server named no workflow id")?;
    if !server.json() {
        errln!("submitted workflow {id}; waiting for it to end");
    }
    let workflow = fetch(server, id, None).await?;
    let status = ended(&workflow).unwrap_or(3);
    Ok((workflow, status))
}

/// Reads workflow `id`, waiting until it ends or `timeout` passes (no limit if `None`).
async fn fetch(server: &ServerArgs, id: &str, timeout: Option<Duration>) -> anyhow::Result<Value> {
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        let hold = deadline.map_or(LONGEST_POLL, |d| {
            d.saturating_duration_since(Instant::now())
                .min(LONGEST_POLL)
        });
        let mut request = server.request(Method::GET, &["v1", "workflows", id])?;
        if !hold.is_zero() {
            request = request.query(&[("wait", format!("{}ms", hold.as_millis()))]);
        }
        let workflow = send(request).await?;
        if ended(&workflow).is_some() || deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(workflow);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn text(value: &Value) -> String {
    value
        .as_str()
        .map_or_else(|| value.to_string(), str::to_string)
}

fn print_workflow(w: &Value) -> io::Result<()> {
    // What `define` answers: a stored definition, not a run.
    if w["id"].is_null() && w["version"].is_number() {
        return outln!("stored {} version {}", text(&w["name"]), w["version"]);
    }
    outln!("id:      {}", text(&w["id"]))?;
    outln!("state:   {}", text(&w["state"]))?;
    if let Some(name) = w["definition"].as_str() {
        outln!("runs:    {name} version {}", w["version"])?;
    }
    for step in w["steps"].as_array().into_iter().flatten() {
        let mut line = format!("step {}: {}", text(&step["name"]), text(&step["state"]));
        if let Some(n) = step["attempts"].as_array().map(Vec::len).filter(|n| *n > 0) {
            line.push_str(&format!(", {n} attempt(s)"));
        }
        if !step["error"].is_null() {
            line.push_str(&format!(", {}", text(&step["error"]["code"])));
        }
        if let Some(c) = step["compensation"].as_object() {
            line.push_str(&format!(", compensation {}", text(&c["state"])));
        }
        outln!("{line}")?;
    }
    if !w["output"].is_null() {
        outln!("output:  {}", w["output"])?;
    }
    if !w["error"].is_null() {
        outln!(
            "error:   {}: {}",
            text(&w["error"]["code"]),
            text(&w["error"]["message"])
        )?;
    }
    if let Some(cost) = w["usage"]["cost_usd"].as_str() {
        outln!(
            "cost:    ${cost} over {} execution(s)",
            w["usage"]["executions"]
        )?;
    }
    Ok(())
}

/// Runs `corral schedule …`.
pub async fn schedule(args: ScheduleArgs) -> io::Result<ExitCode> {
    let server = &args.server;
    let result = run_schedule(server, args.command).await;
    finish(server, result, print_schedule)
}

async fn run_schedule(
    server: &ServerArgs,
    command: ScheduleCommand,
) -> anyhow::Result<(Value, u8)> {
    let on = |method, id: &str, verb: Option<&str>| {
        let mut path = vec!["v1", "schedules"];
        path.push(id);
        path.extend(verb);
        server.request(method, &path)
    };
    let value = match command {
        ScheduleCommand::Create {
            cron,
            timezone,
            agent,
            action,
            workflow,
            version,
            input,
            missed,
            overlap,
            paused,
        } => {
            let mut target = Map::new();
            for (name, value) in [("agent", agent), ("action", action), ("workflow", workflow)] {
                if let Some(value) = value {
                    target.insert(name.into(), value.into());
                }
            }
            if let Some(version) = version {
                target.insert("version".into(), version.into());
            }
            if let Some(input) = input {
                target.insert("input".into(), json_arg("--input", &input)?);
            }
            let mut body = json!({ "cron": cron, "target": target, "paused": paused });
            for (name, value) in [
                ("timezone", timezone),
                ("missed", missed),
                ("overlap", overlap),
            ] {
                if let Some(value) = value {
                    body[name] = value.into();
                }
            }
            send(
                server
                    .request(Method::POST, &["v1", "schedules"])?
                    .json(&body),
            )
            .await?
        }
        ScheduleCommand::Get { id } => send(on(Method::GET, &id, None)?).await?,
        ScheduleCommand::List => send(server.request(Method::GET, &["v1", "schedules"])?).await?,
        ScheduleCommand::Pause { id } => send(on(Method::POST, &id, Some("pause"))?).await?,
        ScheduleCommand::Resume { id } => send(on(Method::POST, &id, Some("resume"))?).await?,
        ScheduleCommand::Delete { id } => {
            send(on(Method::DELETE, &id, None)?).await?;
            if !server.json() {
                errln!("deleted schedule {id}");
            }
            Value::Null
        }
    };
    Ok((value, 0))
}

fn print_schedule(s: &Value) -> io::Result<()> {
    outln!("id:       {}", text(&s["id"]))?;
    outln!("cron:     {} ({})", text(&s["cron"]), text(&s["timezone"]))?;
    outln!("target:   {}", s["target"])?;
    outln!(
        "policy:   missed {}, overlap {}{}",
        text(&s["missed"]),
        text(&s["overlap"]),
        if s["paused"] == true { ", paused" } else { "" }
    )?;
    let next: Vec<String> = s["next_occurrences"]
        .as_array()
        .into_iter()
        .flatten()
        .map(text)
        .collect();
    if !next.is_empty() {
        outln!("next:     {}", next.join(", "))?;
    }
    for o in s["occurrences"].as_array().into_iter().flatten() {
        let work = o["task_id"]
            .as_str()
            .map(|t| format!(" task {t}"))
            .or_else(|| o["workflow_id"].as_str().map(|w| format!(" workflow {w}")))
            .unwrap_or_default();
        outln!("at {}: {}{work}", text(&o["at"]), text(&o["outcome"]))?;
    }
    Ok(())
}
