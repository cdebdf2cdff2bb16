//! `corral execution …`: the execution records of a running `corral serve`
//! (`/v1/executions…`): list them with the API's filters, show one with its logs and
//! its call tree, and `tail` the newest, with `--follow` printing new ones as they are
//! recorded until Ctrl-C (which ends it with status 0: it is how one stops following).
//!
//! Following polls `GET /v1/executions` newest first, from a little before the newest
//! `finished_at` seen (records of concurrent runs are committed in batches, so one that
//! finished earlier may be recorded a moment later), reading pages only while they hold
//! executions not printed yet. Each execution is printed once, oldest first.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::pin::pin;
use std::process::ExitCode;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::Value;

use super::client::{
    Answer, PageArgs, ServerArgs, conclude, fail, filters, list_pages, print_json, send,
};
use super::output::outln;
use super::table::{Table, items, print_fields, text, time};
use super::units::{format_count, format_duration, format_size, parse_duration};

/// How far before the newest `finished_at` seen following looks again.
const LOOK_BACK: chrono::TimeDelta = chrono::TimeDelta::seconds(30);

/// `corral execution`.
#[derive(Debug, Args)]
pub struct ExecutionArgs {
    #[command(subcommand)]
    command: ExecutionCommand,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Debug, Subcommand)]
enum ExecutionCommand {
    /// List executions, newest first.
    List {
        #[command(flatten)]
        filter: Filter,
        /// Only the call tree under this root execution.
        #[arg(long, value_name = "ID")]
        root: Option<String>,
        /// Only executions that finished at or after this time (RFC 3339).
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// Only executions that finished before this time (RFC 3339).
        #[arg(long, value_name = "TIME")]
        until: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Show an execution: outcome, usage, cost, input and output, logs, model calls,
    /// and the tree of calls it is part of (with --json: the execution's record only).
    Show {
        /// The execution's id.
        id: String,
    },
    /// Print the newest executions, oldest first; with --follow, go on printing new
    /// ones as they are recorded, until Ctrl-C (with --json: one JSON object a line).
    Tail {
        #[command(flatten)]
        filter: Filter,
        /// How many of the newest to print first, at most 200.
        #[arg(short = 'n', long, default_value_t = 10, value_name = "N",
              value_parser = clap::value_parser!(u32).range(0..=200))]
        lines: u32,
        /// Keep printing new executions as they are recorded.
        #[arg(short, long)]
        follow: bool,
        /// How often to ask for new ones.
        #[arg(long, default_value = "1s", value_parser = parse_duration, value_name = "DURATION")]
        interval: Duration,
    },
}

/// The filters `list` and `tail` share.
#[derive(Debug, Clone, Args)]
struct Filter {
    /// Only this agent's executions (deleted agents' too).
    #[arg(long, value_name = "NAME")]
    agent: Option<String>,
    /// Only executions with this outcome, e.g. succeeded, agent_error, trapped,
    /// timed_out.
    #[arg(long)]
    outcome: Option<String>,
    /// Only executions with this correlation id.
    #[arg(long, value_name = "ID")]
    correlation_id: Option<String>,
}

impl Filter {
    fn query(&self) -> Vec<(&'static str, String)> {
        filters(&[
            ("agent", &self.agent),
            ("outcome", &self.outcome),
            ("correlation_id", &self.correlation_id),
        ])
    }
}

/// Runs `corral execution …`. The error is only the output's (see
/// [`super::output::status`]).
pub async fn execution(args: ExecutionArgs) -> io::Result<ExitCode> {
    let server = &args.server;
    match args.command {
        ExecutionCommand::List {
            filter,
            root,
            since,
            until,
            page,
        } => {
            let mut query = filter.query();
            query.extend(filters(&[
                ("root", &root),
                ("since", &since),
                ("until", &until),
            ]));
            let answer = list_pages(server, &["v1", "executions"], &query, &page)
                .await
                .map(|page| Answer::new(page, print_executions));
            conclude(server, answer)
        }
        ExecutionCommand::Show { id } => {
            let execution = match server
                .call(Method::GET, &["v1", "executions", &id], None)
                .await
            {
                Ok(execution) => execution,
                Err(e) => return Ok(fail(&e)),
            };
            if server.json() {
                print_json(&execution)?;
                return Ok(ExitCode::SUCCESS);
            }
            print_execution(&execution)?;
            match call_tree(server, &execution).await {
                Ok(tree) => print_tree(&tree, &id)?,
                Err(e) => return Ok(fail(&e)),
            }
            Ok(ExitCode::SUCCESS)
        }
        ExecutionCommand::Tail {
            filter,
            lines,
            follow,
            interval,
        } => tail(server, &filter, lines, follow, interval).await,
    }
}

fn print_executions(page: &Value) -> io::Result<()> {
    let mut table = Table::new(&[
        "ID", "AGENT", "ACTION", "OUTCOME", "WALL", "FUEL", "COST", "FINISHED",
    ]);
    for execution in items(page) {
        table.push(vec![
            text(&execution["id"]),
            text(&execution["agent"]),
            text(&execution["action"]),
            text(&execution["outcome"]),
            wall(execution),
            execution["fuel"]
                .as_u64()
                .map_or_else(|| text(&execution["fuel"]), format_count),
            text(&execution["cost"]),
            time(&execution["finished_at"]),
        ]);
    }
    table.print("no executions")
}

fn wall(execution: &Value) -> String {
    execution["wall_time_us"].as_u64().map_or_else(
        || text(&execution["wall_time_us"]),
        |us| format_duration(Duration::from_micros(us)),
    )
}

fn print_execution(execution: &Value) -> io::Result<()> {
    let mut lines: Vec<(&str, String)> = vec![
        ("id", text(&execution["id"])),
        (
            "agent",
            format!(
                "{} {} ({})",
                text(&execution["agent"]),
                text(&execution["version"]),
                text(&execution["version_id"])
            ),
        ),
        ("action", text(&execution["action"])),
        ("outcome", text(&execution["outcome"])),
    ];
    if !execution["error_code"].is_null() {
        lines.push((
            "error",
            format!(
                "{}: {}",
                text(&execution["error_code"]),
                text(&execution["error_message"])
            ),
        ));
    }
    lines.extend([
        ("started", time(&execution["started_at"])),
        ("finished", time(&execution["finished_at"])),
        ("wall time", wall(execution)),
        (
            "fuel",
            execution["fuel"]
                .as_u64()
                .map_or_else(|| text(&execution["fuel"]), format_count),
        ),
        (
            "peak memory",
            execution["peak_memory_bytes"]
                .as_u64()
                .map_or_else(|| text(&execution["peak_memory_bytes"]), format_size),
        ),
        ("cost", format!("${}", text(&execution["cost"]))),
    ]);
    for (key, field) in [
        ("correlation id", "correlation_id"),
        ("task", "task_id"),
        ("attempt", "attempt"),
        ("called by", "parent_execution_id"),
    ] {
        if !execution[field].is_null() {
            lines.push((key, text(&execution[field])));
        }
    }
    let input = if execution["input"].is_null() {
        format!("{} (excerpt)", text(&execution["input_excerpt"]))
    } else {
        execution["input"].to_string()
    };
    lines.push(("input", input));
    if !execution["output"].is_null() {
        lines.push(("output", execution["output"].to_string()));
    }
    for call in execution["llm_calls"].as_array().into_iter().flatten() {
        lines.push((
            "model call",
            format!(
                "{} {}: {} tokens in, {} out, ${}",
                text(&call["model"]),
                text(&call["outcome"]),
                text(&call["input_tokens"]),
                text(&call["output_tokens"]),
                text(&call["cost"])
            ),
        ));
    }
    if execution["record_degraded"] == true {
        lines.push((
            "note",
            "only the outcome, usage and cost of this run could be stored".into(),
        ));
    }
    print_fields(&lines)?;
    let logs = execution["logs"].as_array().map_or(&[][..], Vec::as_slice);
    if logs.is_empty() {
        outln!("logs: none")?;
    } else {
        outln!("logs:")?;
        for entry in logs {
            let tag = match entry["source"].as_str() {
                Some("agent") | None => text(&entry["level"]),
                Some(source) => source.to_string(),
            };
            for line in text(&entry["message"]).trim_end().lines() {
                outln!("  [{tag}] {line}")?;
            }
        }
    }
    Ok(())
}

/// The executions of `execution`'s call tree, its root first (just it, if it called
/// nothing and nothing called it).
async fn call_tree(server: &ServerArgs, execution: &Value) -> anyhow::Result<Vec<Value>> {
    let id = text(&execution["id"]);
    let root = execution["root_execution_id"]
        .as_str()
        .map_or_else(|| id.clone(), str::to_string);
    let mut tree: BTreeMap<String, Value> = BTreeMap::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut request = server
            .request(Method::GET, &["v1", "executions"])?
            .query(&[("root", root.as_str()), ("limit", "200")]);
        if let Some(cursor) = &cursor {
            request = request.query(&[("cursor", cursor)]);
        }
        let mut page = send(request).await?;
        if let Value::Array(found) = page["items"].take() {
            for node in found {
                tree.insert(text(&node["id"]), node);
            }
        }
        cursor = page["next_cursor"].as_str().map(str::to_string);
        if cursor.is_none() {
            break;
        }
    }
    tree.entry(id).or_insert_with(|| execution.clone());
    if !tree.contains_key(&root) {
        let node = server
            .call(Method::GET, &["v1", "executions", &root], None)
            .await?;
        tree.insert(root.clone(), node);
    }
    let mut nodes: Vec<Value> = vec![tree.remove(&root).expect("the root is in the tree")];
    nodes.extend(tree.into_values());
    Ok(nodes)
}

/// Prints the call tree (root first), marking `current`; nothing for a lone execution.
fn print_tree(nodes: &[Value], current: &str) -> io::Result<()> {
    if nodes.len() < 2 {
        return Ok(());
    }
    let mut children: HashMap<String, Vec<&Value>> = HashMap::new();
    for node in &nodes[1..] {
        let parent = node["parent_execution_id"]
            .as_str()
            .map_or_else(|| text(&nodes[0]["id"]), str::to_string);
        children.entry(parent).or_default().push(node);
    }
    outln!("call tree:")?;
    let mut stack: Vec<(&Value, usize)> = vec![(&nodes[0], 0)];
    while let Some((node, depth)) = stack.pop() {
        let id = text(&node["id"]);
        outln!(
            "  {:indent$}{}{id} {} {} {} ${}",
            "",
            if id == current { "* " } else { "" },
            text(&node["agent"]),
            text(&node["action"]),
            text(&node["outcome"]),
            text(&node["cost"]),
            indent = depth * 2
        )?;
        if let Some(kids) = children.get(&id) {
            // Ids are time-ordered: pushed newest first, so the oldest prints first.
            let mut kids = kids.clone();
            kids.sort_by_key(|kid| std::cmp::Reverse(text(&kid["id"])));
            stack.extend(kids.into_iter().map(|kid| (kid, depth + 1)));
        }
    }
    Ok(())
}

/// `execution tail`: the newest `lines` executions, then with `follow` the new ones
/// until Ctrl-C.
async fn tail(
    server: &ServerArgs,
    filter: &Filter,
    lines: u32,
    follow: bool,
    interval: Duration,
) -> io::Result<ExitCode> {
    let mut seen = Seen::default();
    let mut query = filter.query();
    query.push(("limit", "200".into()));
    let first = match send_list(server, &query).await {
        Ok(page) => page,
        Err(e) => return Ok(fail(&e)),
    };
    // The whole first page counts as seen, so following prints only what comes after.
    let known = seen.fresh(items(&first).to_vec());
    for execution in &known[known.len().saturating_sub(lines as usize)..] {
        print_line(server, execution)?;
    }
    if !follow {
        return Ok(ExitCode::SUCCESS);
    }
    let mut stop = pin!(tokio::signal::ctrl_c());
    loop {
        tokio::select! {
            _ = &mut stop => return Ok(ExitCode::SUCCESS),
            () = tokio::time::sleep(interval) => {}
        }
        let found = tokio::select! {
            _ = &mut stop => return Ok(ExitCode::SUCCESS),
            found = poll(server, filter, &seen) => found,
        };
        match found {
            Ok(found) => {
                for execution in seen.fresh(found) {
                    print_line(server, &execution)?;
                }
            }
            Err(e) => return Ok(fail(&e)),
        }
    }
}

async fn send_list(server: &ServerArgs, query: &[(&str, String)]) -> anyhow::Result<Value> {
    send(
        server
            .request(Method::GET, &["v1", "executions"])?
            .query(query),
    )
    .await
}

/// The executions recorded since the newest seen (less [`LOOK_BACK`]), newest first,
/// reading pages while they hold unseen ones.
async fn poll(server: &ServerArgs, filter: &Filter, seen: &Seen) -> anyhow::Result<Vec<Value>> {
    let mut query = filter.query();
    query.push(("limit", "200".into()));
    if let Some(since) = seen.since() {
        query.push((
            "since",
            since.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        ));
    }
    let mut found = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut page_query = query.clone();
        if let Some(cursor) = cursor.take() {
            page_query.push(("cursor", cursor));
        }
        let mut page = send_list(server, &page_query).await?;
        let next = page["next_cursor"].as_str().map(str::to_string);
        let Value::Array(page) = page["items"].take() else {
            break;
        };
        let unseen = page.iter().any(|e| !seen.has(&text(&e["id"])));
        found.extend(page);
        match next {
            Some(next) if unseen => cursor = Some(next),
            _ => break,
        }
    }
    Ok(found)
}

/// The executions printed so far, by id, with when they finished; forgets those
/// finished long before the newest.
#[derive(Default)]
struct Seen {
    ids: HashMap<String, DateTime<Utc>>,
    newest: Option<DateTime<Utc>>,
}

impl Seen {
    fn has(&self, id: &str) -> bool {
        self.ids.contains_key(id)
    }

    /// Where the next poll starts.
    fn since(&self) -> Option<DateTime<Utc>> {
        self.newest.map(|t| t - LOOK_BACK)
    }

    /// The executions of `found` not printed yet, oldest first, now counted as printed.
    fn fresh(&mut self, found: Vec<Value>) -> Vec<Value> {
        let mut fresh: Vec<(DateTime<Utc>, String, Value)> = found
            .into_iter()
            .filter_map(|e| {
                let id = text(&e["id"]);
                let finished = e["finished_at"]
                    .as_str()
                    .and_then(|t| DateTime::parse_from_rfc3339(t).ok())?
                    .with_timezone(&Utc);
                (!self.has(&id)).then_some((finished, id, e))
            })
            .collect();
        fresh.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        fresh.dedup_by(|a, b| a.1 == b.1);
        for (finished, id, _) in &fresh {
            self.ids.insert(id.clone(), *finished);
            self.newest = self.newest.max(Some(*finished));
        }
        if let Some(since) = self.since() {
            let keep_after = since - LOOK_BACK;
            self.ids.retain(|_, finished| *finished >= keep_after);
        }
        fresh.into_iter().map(|(_, _, e)| e).collect()
    }
}

/// One execution on one line: JSON with `--json`, else its time, id, agent and action,
/// outcome, wall time and cost (and the error code when it failed).
fn print_line(server: &ServerArgs, execution: &Value) -> io::Result<()> {
    if server.json() {
        return outln!("{execution}");
    }
    let error = execution["error_code"]
        .as_str()
        .map_or_else(String::new, |code| format!("  {code}"));
    outln!(
        "{}  {}  {} {}  {}  {}  ${}{error}",
        time(&execution["finished_at"]),
        text(&execution["id"]),
        text(&execution["agent"]),
        text(&execution["action"]),
        text(&execution["outcome"]),
        wall(execution),
        text(&execution["cost"]),
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn at(id: &str, finished: &str) -> Value {
        json!({ "id": id, "finished_at": finished })
    }

    #[test]
    fn following_prints_each_execution_once_oldest_first() {
        let mut seen = Seen::default();
        let first = seen.fresh(vec![
            at("b", "2026-01-01T00:00:02Z"),
            at("a", "2026-01-01T00:00:01Z"),
        ]);
        let ids: Vec<&str> = first.iter().map(|e| e["id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(
            seen.since().unwrap(),
            "2026-01-01T00:00:02Z".parse::<DateTime<Utc>>().unwrap() - LOOK_BACK
        );
        // A later poll sees them again with a new one, and one that finished earlier
        // but was recorded late.
        let second = seen.fresh(vec![
            at("d", "2026-01-01T00:00:03Z"),
            at("b", "2026-01-01T00:00:02Z"),
            at("c", "2026-01-01T00:00:01.5Z"),
            at("a", "2026-01-01T00:00:01Z"),
        ]);
        let ids: Vec<&str> = second.iter().map(|e| e["id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["c", "d"]);
        assert!(seen.fresh(vec![at("d", "2026-01-01T00:00:03Z")]).is_empty());
    }

    #[test]
    fn executions_long_before_the_newest_are_forgotten() {
        let mut seen = Seen::default();
        seen.fresh(vec![at("old", "2026-01-01T00:00:00Z")]);
        seen.fresh(vec![at("new", "2026-01-01T01:00:00Z")]);
        assert!(!seen.has("old"));
        assert!(seen.has("new"));
    }
}
