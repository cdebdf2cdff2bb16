//! `corral task …`: submit tasks to a running `corral serve`, wait for them, read, list
//! and cancel them, over the task API (`/v1/agents/{name}/tasks`, `/v1/tasks…`).
//!
//! Every command prints a summary for people, or the server's JSON as is with `--json`,
//! and tells how it went in its exit status ([`Status`]), so a script can submit a task
//! and branch on how it ended without parsing anything:
//!
//! - 0: the request succeeded; for `get`, `wait` and `submit --wait`, the task succeeded;
//! - 1: the task failed or was cancelled;
//! - 2: bad usage, or the server could not be reached or refused the request (its
//!   error code and message are printed);
//! - 3: the task has not ended: `wait --timeout` passed first, or `get` found it waiting
//!   or running.
//!
//! Waiting is a series of long polls (`GET /v1/tasks/{id}?wait=60s`, the most the server
//! holds a request), so it costs one request a minute however long the task takes.

use std::io;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, SecondsFormat, Utc};
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Map, Value, json};

use super::client::{ServerArgs, send};
use super::output::{errln, outln};
use super::table::Table;
use super::units::{parse_count, parse_duration, parse_size};

/// The longest the server holds a `?wait=` request (its `MAX_WAIT`).
const LONGEST_POLL: Duration = Duration::from_secs(60);

/// The shortest time between two polls, so a server that answers early is not
/// flooded.
const SHORTEST_POLL: Duration = Duration::from_millis(100);

/// `corral task`.
#[derive(Debug, Args)]
pub struct TaskArgs {
    #[command(subcommand)]
    command: TaskCommand,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Debug, Subcommand)]
enum TaskCommand {
    /// Submit a task (or, with --batch, several in one transaction), and with --wait
    /// wait until it ends.
    ///
    /// Exit status: 0 submitted (with --wait: the task succeeded); 1 with --wait, the
    /// task (or one of the batch) failed or was cancelled; 2 bad usage, or the server
    /// refused the submission or could not be reached.
    Submit(Box<SubmitArgs>),
    /// Show a task: its state, attempts, result or error.
    ///
    /// Exit status: 0 the task succeeded; 1 it failed or was cancelled; 2 bad usage, or
    /// the server refused the request or could not be reached; 3 it has not ended yet.
    Get {
        /// The task's id.
        id: String,
    },
    /// Wait until a task ends (or --timeout passes), then show it.
    ///
    /// Exit status: 0 the task succeeded; 1 it failed or was cancelled; 2 bad usage, or
    /// the server refused the request or could not be reached; 3 --timeout passed
    /// before the task ended.
    Wait {
        /// The task's id.
        id: String,
        /// Give up after this long, e.g. 30s or 10m [default: no limit].
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        timeout: Option<Duration>,
    },
    /// List tasks, newest first, one page (--limit) or all of them (--all).
    ///
    /// Exit status: 0 listed; 2 bad usage, or the server refused the request or could
    /// not be reached.
    List(ListArgs),
    /// Cancel a task: one that waits is cancelled at once, a running one is stopped.
    ///
    /// Exit status: 0 cancelled, or its stop requested; 2 bad usage, or the server
    /// refused (task_finished: it had already ended) or could not be reached.
    Cancel {
        /// The task's id.
        id: String,
    },
}

#[derive(Debug, Args)]
struct SubmitArgs {
    /// The agent that runs the task.
    #[arg(required_unless_present = "batch", conflicts_with = "batch")]
    agent: Option<String>,
    /// The action to invoke.
    #[arg(required_unless_present = "batch")]
    action: Option<String>,
    /// Submit the tasks in FILE (- for stdin), all or none: JSON `{"tasks": [...]}` or
    /// an array, each task as the API takes it, with "agent" and optionally a "key"
    /// that other tasks of the batch name in "depends_on".
    #[arg(long, value_name = "FILE", conflicts_with = "spec")]
    batch: Option<String>,
    #[command(flatten)]
    spec: SpecArgs,
    /// Make the submission safe to retry: a retry with the same key returns the tasks
    /// it stored instead of submitting them again.
    #[arg(long, value_name = "KEY")]
    idempotency_key: Option<String>,
    /// Wait until the task (every task of a batch) ends, and exit as `task wait` does.
    #[arg(long)]
    wait: bool,
}

/// One task's settings, as flags.
#[derive(Debug, Args)]
#[group(id = "spec", multiple = true)]
struct SpecArgs {
    /// The input, as JSON text [default: {}].
    #[arg(long, value_name = "JSON", conflicts_with = "input_file")]
    input: Option<String>,
    /// Read the input (JSON) from a file, or from stdin with -.
    #[arg(long, value_name = "PATH")]
    input_file: Option<String>,
    /// Higher runs first, from -1000 to 1000 [default: 0].
    #[arg(long, allow_negative_numbers = true)]
    priority: Option<i32>,
    /// Not before this time (RFC 3339), e.g. 2026-01-31T09:00:00Z.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    run_at: Option<DateTime<Utc>>,
    /// Attempts in all, the first included, from 1 to 100 [default: 3].
    #[arg(long, value_name = "N")]
    max_attempts: Option<u32>,
    /// The first retry's delay, e.g. 1s [default: 1s]; each next one doubles, up to
    /// --backoff-cap.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    backoff_base: Option<Duration>,
    /// The longest delay between attempts, e.g. 5m [default: 5m].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    backoff_cap: Option<Duration>,
    /// Do not retry an attempt that timed out.
    #[arg(long)]
    no_retry_timeouts: bool,
    /// When a budget is spent, wait for it to renew instead of failing the task.
    #[arg(long)]
    wait_for_budget: bool,
    /// A task that must succeed first (repeatable).
    #[arg(long, value_name = "ID")]
    depends_on: Vec<String>,
    /// Your own id for the task, to find it by (`task list --correlation-id`).
    #[arg(long, value_name = "ID")]
    correlation_id: Option<String>,
    /// Fuel each attempt may use, e.g. 1000000 or 1e9 (only below the agent's).
    #[arg(long, value_parser = parse_count)]
    fuel: Option<u64>,
    /// Linear memory each attempt may hold, e.g. 64MiB (only below the agent's).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    memory: Option<u64>,
    /// Wall-clock time each attempt may take, e.g. 2s (only below the agent's task
    /// limit).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    timeout: Option<Duration>,
    /// Output each attempt may return, e.g. 1MiB (only below the agent's).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    max_output: Option<u64>,
    /// Log bytes each attempt may write, e.g. 64KiB (only below the agent's).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    max_logs: Option<u64>,
}

#[derive(Debug, Args)]
struct ListArgs {
    /// Only this agent's tasks.
    #[arg(long, value_name = "NAME")]
    agent: Option<String>,
    /// Only tasks in this state: queued, scheduled, blocked, running, retrying,
    /// succeeded, failed or cancelled.
    #[arg(long)]
    state: Option<String>,
    /// Only tasks with this correlation id.
    #[arg(long, value_name = "ID")]
    correlation_id: Option<String>,
    /// Only tasks created at or after this time (RFC 3339).
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// Only tasks created before this time (RFC 3339).
    #[arg(long, value_name = "TIME")]
    until: Option<String>,
    /// Tasks per page [default: the server's].
    #[arg(long, value_name = "N")]
    limit: Option<u32>,
    /// Follow the pages to the end (with --json, one `{"items": [...]}` of them all).
    #[arg(long)]
    all: bool,
}

/// How a command ended: its exit status (see the module's documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Status {
    /// The request succeeded (and the task, where the command waits for it).
    Succeeded = 0,
    /// The task failed or was cancelled.
    TaskFailed = 1,
    /// Bad usage, or the request failed.
    Error = 2,
    /// The task has not ended.
    NotEnded = 3,
}

impl Status {
    /// How a command that shows `task` ends, by its state.
    fn of(task: &Value) -> Status {
        match task["state"].as_str() {
            Some("succeeded") => Status::Succeeded,
            Some("failed" | "cancelled") => Status::TaskFailed,
            _ => Status::NotEnded,
        }
    }
}

/// How to print an answer for people.
#[derive(Debug, Clone, Copy)]
enum Shape {
    /// One task, `key: value` lines.
    Task,
    /// The tasks in this field, as a table.
    Table(&'static str),
    /// The tasks in this field, each as `key: value` lines.
    Tasks(&'static str),
}

/// What a command prints, and how it ends.
struct Answer {
    value: Value,
    shape: Shape,
    status: Status,
}

/// Runs `corral task …`. The error is only the output's (see
/// [`super::output::status`]).
pub async fn task(args: TaskArgs) -> io::Result<ExitCode> {
    let server = &args.server;
    let answer = match args.command {
        TaskCommand::Submit(submit) => submit_tasks(server, *submit).await,
        TaskCommand::Get { id } => fetch(server, &id, Some(Duration::ZERO)).await.map(one),
        TaskCommand::Wait { id, timeout } => fetch(server, &id, timeout).await.map(|task| {
            if Status::of(&task) == Status::NotEnded {
                errln!(
                    "task {id} has not ended: it is {}",
                    task["state"].as_str().unwrap_or("?")
                );
            }
            one(task)
        }),
        TaskCommand::List(list) => list_tasks(server, &list).await,
        TaskCommand::Cancel { id } => cancel(server, &id).await,
    };
    let answer = match answer {
        Ok(answer) => answer,
        Err(e) => {
            errln!("error: {e:#}");
            return Ok(ExitCode::from(Status::Error as u8));
        }
    };
    if server.json() {
        outln!(
            "{}",
            serde_json::to_string_pretty(&answer.value).expect("JSON prints")
        )?;
    } else {
        match answer.shape {
            Shape::Task => print_task(&answer.value)?,
            Shape::Table(field) => print_table(tasks_in(&answer.value, field))?,
            Shape::Tasks(field) => {
                for (i, task) in tasks_in(&answer.value, field).iter().enumerate() {
                    if i > 0 {
                        outln!()?;
                    }
                    print_task(task)?;
                }
            }
        }
    }
    Ok(ExitCode::from(answer.status as u8))
}

/// A single task, ending as its state says.
fn one(task: Value) -> Answer {
    Answer {
        status: Status::of(&task),
        value: task,
        shape: Shape::Task,
    }
}

fn tasks_in<'a>(value: &'a Value, field: &str) -> &'a [Value] {
    value[field].as_array().map_or(&[], Vec::as_slice)
}

async fn submit_tasks(server: &ServerArgs, args: SubmitArgs) -> anyhow::Result<Answer> {
    let mut request = match &args.batch {
        Some(file) => server
            .request(Method::POST, &["v1", "tasks"])?
            .json(&batch(file)?),
        None => {
            let agent = args.agent.as_deref().context("name the agent")?;
            let action = args.action.as_deref().context("name the action")?;
            server
                .request(Method::POST, &["v1", "agents", agent, "tasks"])?
                .json(&spec(action, &args.spec)?)
        }
    };
    if let Some(key) = &args.idempotency_key {
        request = request.header("Idempotency-Key", key);
    }
    let submitted = send(request).await?;
    let batch = args.batch.is_some();
    if !args.wait {
        return Ok(Answer {
            value: submitted,
            shape: if batch {
                Shape::Table("tasks")
            } else {
                Shape::Task
            },
            status: Status::Succeeded,
        });
    }
    if !batch {
        let id = submitted["id"]
            .as_str()
            .context("the server named no task id")?;
        if !server.json() {
            errln!("submitted task {id}; waiting for it to end");
        }
        return Ok(one(fetch(server, id, None).await?));
    }
    let mut ended = Vec::new();
    for task in tasks_in(&submitted, "tasks") {
        let id = task["id"].as_str().context("the server named no task id")?;
        ended.push(fetch(server, id, None).await?);
    }
    let status = ended
        .iter()
        .map(Status::of)
        .max()
        .unwrap_or(Status::Succeeded);
    Ok(Answer {
        value: json!({ "tasks": ended }),
        shape: Shape::Tasks("tasks"),
        status,
    })
}

/// The body of a single submission, from the flags.
fn spec(action: &str, flags: &SpecArgs) -> anyhow::Result<Value> {
    let mut spec = Map::new();
    spec.insert("action".into(), action.into());
    let input = match (&flags.input, &flags.input_file) {
        (Some(text), _) => {
            Some(serde_json::from_str::<Value>(text).context("--input is not valid JSON")?)
        }
        (None, Some(path)) => Some(
            serde_json::from_str::<Value>(&read(path)?)
                .with_context(|| format!("{path} is not valid JSON"))?,
        ),
        (None, None) => None,
    };
    if let Some(input) = input {
        spec.insert("input".into(), input);
    }
    if let Some(priority) = flags.priority {
        spec.insert("priority".into(), priority.into());
    }
    if let Some(run_at) = flags.run_at {
        spec.insert(
            "run_at".into(),
            run_at.to_rfc3339_opts(SecondsFormat::AutoSi, true).into(),
        );
    }
    if let Some(n) = flags.max_attempts {
        spec.insert("max_attempts".into(), n.into());
    }
    let mut backoff = Map::new();
    for (name, value) in [
        ("base_ms", flags.backoff_base),
        ("cap_ms", flags.backoff_cap),
    ] {
        if let Some(value) = value {
            backoff.insert(name.into(), millis(value).into());
        }
    }
    if !backoff.is_empty() {
        spec.insert("backoff".into(), backoff.into());
    }
    if flags.no_retry_timeouts {
        spec.insert("retry_timeouts".into(), false.into());
    }
    if flags.wait_for_budget {
        spec.insert("wait_for_budget".into(), true.into());
    }
    if !flags.depends_on.is_empty() {
        spec.insert("depends_on".into(), flags.depends_on.clone().into());
    }
    if let Some(id) = &flags.correlation_id {
        spec.insert("correlation_id".into(), id.clone().into());
    }
    let mut limits = Map::new();
    for (name, value) in [
        ("fuel", flags.fuel),
        ("memory_bytes", flags.memory),
        ("timeout_ms", flags.timeout.map(millis)),
        ("output_bytes", flags.max_output),
        ("log_bytes", flags.max_logs),
    ] {
        if let Some(value) = value {
            limits.insert(name.into(), value.into());
        }
    }
    if !limits.is_empty() {
        spec.insert("limits".into(), limits.into());
    }
    Ok(spec.into())
}

/// The body of a batch submission: the file's `{"tasks": [...]}`, or its array wrapped
/// in one.
fn batch(file: &str) -> anyhow::Result<Value> {
    let value: Value = serde_json::from_str(&read(file)?)
        .with_context(|| format!("the batch {file} is not valid JSON"))?;
    match value {
        Value::Array(tasks) => Ok(json!({ "tasks": tasks })),
        Value::Object(ref batch) if batch.contains_key("tasks") => Ok(value),
        _ => anyhow::bail!("the batch {file} is neither {{\"tasks\": [...]}} nor an array"),
    }
}

/// A file's text, or stdin's for `-`.
fn read(path: &str) -> anyhow::Result<String> {
    if path == "-" {
        return io::read_to_string(io::stdin()).context("reading stdin");
    }
    std::fs::read_to_string(path).with_context(|| format!("reading {path}"))
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| format!("{text:?} is not an RFC 3339 time; write e.g. 2026-01-31T09:00:00Z"))
}

/// Cancels task `id`: the request's success is the command's, whatever the state.
async fn cancel(server: &ServerArgs, id: &str) -> anyhow::Result<Answer> {
    let task = send(server.request(Method::POST, &["v1", "tasks", id, "cancel"])?).await?;
    Ok(Answer {
        status: Status::Succeeded,
        ..one(task)
    })
}

/// Reads task `id`, waiting until it ends or `timeout` passes (no limit if `None`),
/// with long polls of at most [`LONGEST_POLL`] each.
async fn fetch(server: &ServerArgs, id: &str, timeout: Option<Duration>) -> anyhow::Result<Value> {
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        let hold = deadline.map_or(LONGEST_POLL, |d| {
            d.saturating_duration_since(Instant::now())
                .min(LONGEST_POLL)
        });
        let asked = Instant::now();
        let mut request = server.request(Method::GET, &["v1", "tasks", id])?;
        if !hold.is_zero() {
            request = request.query(&[("wait", format!("{}ms", hold.as_millis()))]);
        }
        let task = send(request).await?;
        let now = Instant::now();
        if Status::of(&task) != Status::NotEnded || deadline.is_some_and(|d| now >= d) {
            return Ok(task);
        }
        let early = SHORTEST_POLL.saturating_sub(now - asked);
        let left = deadline.map_or(early, |d| d.saturating_duration_since(now));
        tokio::time::sleep(early.min(left)).await;
    }
}

async fn list_tasks(server: &ServerArgs, args: &ListArgs) -> anyhow::Result<Answer> {
    let mut query: Vec<(&str, String)> = [
        ("agent", &args.agent),
        ("state", &args.state),
        ("correlation_id", &args.correlation_id),
        ("since", &args.since),
        ("until", &args.until),
    ]
    .into_iter()
    .filter_map(|(name, value)| value.clone().map(|v| (name, v)))
    .collect();
    if let Some(limit) = args.limit {
        query.push(("limit", limit.to_string()));
    }
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut request = server.request(Method::GET, &["v1", "tasks"])?.query(&query);
        if let Some(cursor) = &cursor {
            request = request.query(&[("cursor", cursor)]);
        }
        let mut page = send(request).await?;
        cursor = page["next_cursor"].as_str().map(str::to_string);
        if !args.all {
            if cursor.is_some() && !server.json() {
                errln!("more tasks: pass --all to list every page");
            }
            return Ok(Answer {
                value: page,
                shape: Shape::Table("items"),
                status: Status::Succeeded,
            });
        }
        if let Value::Array(page) = page["items"].take() {
            items.extend(page);
        }
        if cursor.is_none() {
            return Ok(Answer {
                value: json!({ "items": items }),
                shape: Shape::Table("items"),
                status: Status::Succeeded,
            });
        }
    }
}

/// Prints one task as aligned `key: value` lines.
fn print_task(task: &Value) -> io::Result<()> {
    let mut lines: Vec<(String, String)> = vec![
        ("id".into(), text(&task["id"])),
        ("agent".into(), text(&task["agent"])),
        ("action".into(), text(&task["action"])),
    ];
    let state = text(&task["state"]);
    let waiting = matches!(state.as_str(), "scheduled" | "retrying");
    let stopping = task["cancel_requested"] == true && Status::of(task) == Status::NotEnded;
    lines.push((
        "state".into(),
        if stopping {
            format!("{state} (cancel requested)")
        } else {
            state
        },
    ));
    if waiting {
        lines.push(("run at".into(), time(&task["run_at"])));
    }
    if let Some(parents) = task["depends_on"].as_array().filter(|p| !p.is_empty()) {
        let parents: Vec<String> = parents.iter().map(text).collect();
        lines.push(("depends on".into(), parents.join(", ")));
    }
    if let Some(id) = task["correlation_id"].as_str() {
        lines.push(("correlation id".into(), id.into()));
    }
    lines.push((
        "attempts".into(),
        format!("{} of {}", task["attempt_count"], task["max_attempts"]),
    ));
    for attempt in task["attempts"].as_array().into_iter().flatten() {
        lines.push((
            format!("attempt {}", attempt["attempt"]),
            format!(
                "{}, execution {} on {}",
                attempt["outcome"].as_str().unwrap_or("running"),
                text(&attempt["execution_id"]),
                text(&attempt["node"])
            ),
        ));
    }
    if !task["result"].is_null() {
        lines.push(("result".into(), task["result"].to_string()));
    }
    let error = &task["error"];
    if !error.is_null() {
        lines.push((
            "error".into(),
            format!("{}: {}", text(&error["code"]), text(&error["message"])),
        ));
    }
    let width = lines.iter().map(|(key, _)| key.len()).max().unwrap_or(0) + 1;
    for (key, value) in lines {
        // A value of several lines (a trap's backtrace) stays in the value column.
        let value = value.replace('\n', &format!("\n{:width$} ", ""));
        outln!("{:<width$} {value}", format!("{key}:"))?;
    }
    Ok(())
}

/// Prints tasks as an aligned table.
fn print_table(tasks: &[Value]) -> io::Result<()> {
    let mut table = Table::new(&["ID", "AGENT", "ACTION", "STATE", "ATTEMPTS", "CREATED"]);
    for task in tasks {
        table.push(vec![
            text(&task["id"]),
            text(&task["agent"]),
            text(&task["action"]),
            text(&task["state"]),
            format!("{}/{}", task["attempt_count"], task["max_attempts"]),
            time(&task["created_at"]),
        ]);
    }
    table.print("no tasks")
}

/// A time to the second (`2026-01-31T09:00:00Z`).
fn time(value: &Value) -> String {
    value
        .as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map_or_else(
            || text(value),
            |t| {
                t.with_timezone(&Utc)
                    .to_rfc3339_opts(SecondsFormat::Secs, true)
            },
        )
}

/// A JSON string's text, or any other value as JSON.
fn text(value: &Value) -> String {
    value
        .as_str()
        .map_or_else(|| value.to_string(), str::to_string)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: TaskArgs,
    }

    fn parse(args: &[&str]) -> Result<TaskArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("task").chain(args.iter().copied())).map(|c| c.args)
    }

    fn submit_spec(args: &[&str]) -> Value {
        let parsed = parse(args).unwrap();
        let TaskCommand::Submit(submit) = parsed.command else {
            panic!("not a submission: {args:?}");
        };
        spec(submit.action.as_deref().unwrap(), &submit.spec).unwrap()
    }

    #[test]
    fn the_flags_become_the_task_spec() {
        let spec = submit_spec(&[
            "submit",
            "echo",
            "say",
            "--input",
            r#"{"text": "hi"}"#,
            "--priority",
            "-5",
            "--run-at",
            "2026-01-31T10:00:00+01:00",
            "--max-attempts",
            "4",
            "--backoff-base",
            "2s",
            "--no-retry-timeouts",
            "--depends-on",
            "a",
            "--depends-on",
            "b",
            "--memory",
            "1MiB",
            "--timeout",
            "1500ms",
        ]);
        assert_eq!(
            spec,
            json!({
                "action": "say",
                "input": { "text": "hi" },
                "priority": -5,
                "run_at": "2026-01-31T09:00:00Z",
                "max_attempts": 4,
                "backoff": { "base_ms": 2000 },
                "retry_timeouts": false,
                "depends_on": ["a", "b"],
                "limits": { "memory_bytes": 1048576, "timeout_ms": 1500 },
            })
        );
        assert_eq!(
            submit_spec(&["submit", "echo", "say"]),
            json!({ "action": "say" })
        );
    }

    #[test]
    fn a_batch_takes_no_single_task_flags() {
        assert!(parse(&["submit", "--batch", "tasks.json", "--wait"]).is_ok());
        for args in [
            &["submit", "--batch", "tasks.json", "--priority", "1"][..],
            &["submit", "--batch", "tasks.json", "echo", "say"],
            &["submit", "echo"],
            &[
                "submit",
                "echo",
                "say",
                "--input",
                "{}",
                "--input-file",
                "-",
            ],
            &["submit", "echo", "say", "--run-at", "tomorrow"],
        ] {
            assert!(parse(args).is_err(), "{args:?} parsed");
        }
    }

    #[test]
    fn the_status_follows_the_task_state() {
        for (state, status) in [
            ("succeeded", Status::Succeeded),
            ("failed", Status::TaskFailed),
            ("cancelled", Status::TaskFailed),
            ("running", Status::NotEnded),
            ("scheduled", Status::NotEnded),
        ] {
            assert_eq!(Status::of(&json!({ "state": state })), status, "{state}");
        }
    }
}
