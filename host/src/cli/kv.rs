//! `corral kv …`: an agent's key-value state, as an operator sees it
//! (`/v1/agents/{name}/kv…`): list keys (values with `--values`, developers), read one
//! value, delete one key, or clear keys. The API has no route to write a value: only
//! the agent writes its state.

use std::io::{self, Write as _};
use std::process::ExitCode;

use anyhow::Context;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::Value;

use super::client::{
    Answer, PageArgs, ServerArgs, conclude, fail, list_pages, not_found, print_json, send,
};
use super::output::outln;
use super::table::{Table, items, text, time};

/// `corral kv`.
#[derive(Debug, Args)]
pub struct KvArgs {
    #[command(subcommand)]
    command: KvCommand,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Debug, Subcommand)]
enum KvCommand {
    /// List an agent's keys, in order, with sizes and times.
    List {
        /// The agent's name.
        agent: String,
        /// Only keys that start with this.
        #[arg(long)]
        prefix: Option<String>,
        /// Show the values too (developers): as text when they are UTF-8, else base64.
        #[arg(long)]
        values: bool,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Print one value's bytes as they are (developers; with --json: its entry, the
    /// value in base64).
    Get {
        /// The agent's name.
        agent: String,
        /// The key.
        #[arg(value_name = "KEY")]
        entry: String,
    },
    /// Delete one key (admins).
    Delete {
        /// The agent's name.
        agent: String,
        /// The key.
        #[arg(value_name = "KEY")]
        entry: String,
    },
    /// Delete the keys that start with --prefix, or with --everything every key
    /// (admins).
    Clear {
        /// The agent's name.
        agent: String,
        /// Only keys that start with this.
        #[arg(
            long,
            required_unless_present = "everything",
            conflicts_with = "everything"
        )]
        prefix: Option<String>,
        /// Every key of the agent.
        #[arg(long)]
        everything: bool,
    },
}

/// Runs `corral kv …`. The error is only the output's (see
/// [`super::output::status`]).
pub async fn kv(args: KvArgs) -> io::Result<ExitCode> {
    let server = &args.server;
    match args.command {
        KvCommand::List {
            agent,
            prefix,
            values,
            page,
        } => {
            let mut query: Vec<(&str, String)> =
                prefix.map(|p| ("prefix", p)).into_iter().collect();
            if values {
                query.push(("values", "true".into()));
            }
            let people: super::client::Printer = if values {
                print_entries_with_values
            } else {
                print_entries
            };
            let answer = list_pages(server, &["v1", "agents", &agent, "kv"], &query, &page)
                .await
                .map(|page| Answer::new(page, people));
            conclude(server, answer)
        }
        KvCommand::Get { agent, entry: key } => {
            let entry = match find(server, &agent, &key).await {
                Ok(entry) => entry,
                Err(e) => return Ok(fail(&e)),
            };
            if server.json() {
                print_json(&entry)?;
                return Ok(ExitCode::SUCCESS);
            }
            let value = match BASE64
                .decode(text(&entry["value_base64"]))
                .context("the server sent a value that is not base64")
            {
                Ok(value) => value,
                Err(e) => return Ok(fail(&e)),
            };
            let mut stdout = io::stdout().lock();
            stdout.write_all(&value)?;
            Ok(ExitCode::SUCCESS)
        }
        KvCommand::Delete { agent, entry: key } => {
            let answer = server
                .call(Method::DELETE, &["v1", "agents", &agent, "kv", &key], None)
                .await
                .map(|_| Answer::done(key.into(), |key| outln!("deleted key {}", text(key))));
            conclude(server, answer)
        }
        KvCommand::Clear {
            agent,
            prefix,
            everything: _,
        } => {
            let answer = async {
                let mut request =
                    server.request(Method::DELETE, &["v1", "agents", &agent, "kv"])?;
                if let Some(prefix) = &prefix {
                    request = request.query(&[("prefix", prefix)]);
                }
                Ok::<_, anyhow::Error>(Answer::new(send(request).await?, |cleared| {
                    outln!("deleted {} keys", text(&cleared["deleted"]))
                }))
            }
            .await;
            conclude(server, answer)
        }
    }
}

/// The entry of `key`, with its value: the first key listed from `key` on is `key`
/// itself if it exists, since every other key with that prefix sorts after it.
async fn find(server: &ServerArgs, agent: &str, key: &str) -> anyhow::Result<Value> {
    let request = server
        .request(Method::GET, &["v1", "agents", agent, "kv"])?
        .query(&[("prefix", key), ("values", "true"), ("limit", "1")]);
    let mut page = send(request).await?;
    match page["items"].get_mut(0).map(Value::take) {
        Some(entry) if entry["key"] == key => Ok(entry),
        _ => Err(not_found(format!("key {key:?} of agent {agent:?}"))),
    }
}

fn print_entries(page: &Value) -> io::Result<()> {
    let mut table = Table::new(&["KEY", "SIZE", "UPDATED", "EXPIRES"]);
    for entry in items(page) {
        table.push(vec![
            text(&entry["key"]),
            text(&entry["size_bytes"]),
            time(&entry["updated_at"]),
            time(&entry["expires_at"]),
        ]);
    }
    table.print("no keys")
}

fn print_entries_with_values(page: &Value) -> io::Result<()> {
    let mut table = Table::new(&["KEY", "SIZE", "UPDATED", "EXPIRES", "VALUE"]);
    for entry in items(page) {
        let encoded = text(&entry["value_base64"]);
        let value = BASE64
            .decode(&encoded)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .filter(|s| !s.chars().any(char::is_control))
            .unwrap_or_else(|| format!("base64:{encoded}"));
        table.push(vec![
            text(&entry["key"]),
            text(&entry["size_bytes"]),
            time(&entry["updated_at"]),
            time(&entry["expires_at"]),
            value,
        ]);
    }
    table.print("no keys")
}
