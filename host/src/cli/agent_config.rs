//! `corral config …` and `corral secret …`: an agent's config values and secrets
//! (`/v1/agents/{name}/config…`, `/v1/agents/{name}/secrets…`).
//!
//! A secret's value is read from a file (`--from-file`) or stdin, never from the
//! command line, where the shell's history and the process list would keep it; one
//! trailing line ending is dropped, so `echo "$TOKEN" | corral secret set …` stores
//! the token. No command prints a secret's value: the API never returns one.
//!
//! `config set` changes some values and keeps the others: it reads the values, changes
//! them, and writes them all back (the API replaces them as a whole), so two changes at
//! the same moment may lose one of them.

use std::collections::BTreeMap;
use std::io::{self, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Value, json};

use super::client::{Answer, ServerArgs, conclude, fail, not_found, print_json};
use super::output::{errln, outln};
use super::table::{Table, text, time};

/// `corral config`.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    #[command(subcommand)]
    command: ConfigCommand,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print an agent's config values, or with KEY one value as it is.
    Get {
        /// The agent's name.
        agent: String,
        /// Only this value.
        #[arg(value_name = "KEY")]
        entry: Option<String>,
    },
    /// Set config values, keeping the others (admins).
    Set {
        /// The agent's name.
        agent: String,
        /// The values, as KEY=VALUE.
        #[arg(required = true, value_name = "KEY=VALUE", value_parser = parse_pair)]
        values: Vec<(String, String)>,
    },
    /// Delete a config value (admins).
    Delete {
        /// The agent's name.
        agent: String,
        /// The value's name.
        #[arg(value_name = "KEY")]
        entry: String,
    },
}

fn parse_pair(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{text:?} is not KEY=VALUE"))
}

/// Runs `corral config …`. The error is only the output's (see
/// [`super::output::status`]).
pub async fn config(args: ConfigArgs) -> io::Result<ExitCode> {
    let server = &args.server;
    match args.command {
        ConfigCommand::Get { agent, entry: None } => {
            let answer = server
                .call(Method::GET, &["v1", "agents", &agent, "config"], None)
                .await
                .map(|values| Answer::new(values, print_values));
            conclude(server, answer)
        }
        ConfigCommand::Get {
            agent,
            entry: Some(key),
        } => {
            let values = match server
                .call(Method::GET, &["v1", "agents", &agent, "config"], None)
                .await
            {
                Ok(values) => values,
                Err(e) => return Ok(fail(&e)),
            };
            match values["values"].get(&key) {
                Some(value) if server.json() => print_json(value)?,
                Some(value) => outln!("{}", text(value))?,
                None => {
                    return Ok(fail(&not_found(format!(
                        "config value {key:?} of agent {agent:?}"
                    ))));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        ConfigCommand::Set { agent, values } => {
            let answer = async {
                let current = server
                    .call(Method::GET, &["v1", "agents", &agent, "config"], None)
                    .await?;
                let mut merged: BTreeMap<String, Value> = current["values"]
                    .as_object()
                    .map(|m| m.clone().into_iter().collect())
                    .unwrap_or_default();
                for (key, value) in values {
                    merged.insert(key, value.into());
                }
                let written = server
                    .call(
                        Method::PUT,
                        &["v1", "agents", &agent, "config"],
                        Some(json!({ "values": merged })),
                    )
                    .await?;
                Ok::<_, anyhow::Error>(Answer::new(written, print_values))
            }
            .await;
            conclude(server, answer)
        }
        ConfigCommand::Delete { agent, entry: key } => {
            let answer = server
                .call(
                    Method::DELETE,
                    &["v1", "agents", &agent, "config", &key],
                    None,
                )
                .await
                .map(|_| {
                    Answer::done(key.into(), |key| {
                        outln!("deleted config value {}", text(key))
                    })
                });
            conclude(server, answer)
        }
    }
}

fn print_values(values: &Value) -> io::Result<()> {
    let mut table = Table::new(&["KEY", "VALUE"]);
    for (key, value) in values["values"].as_object().into_iter().flatten() {
        table.push(vec![key.clone(), text(value)]);
    }
    table.print("no config values")
}

/// `corral secret`.
#[derive(Debug, Args)]
pub struct SecretArgs {
    #[command(subcommand)]
    command: SecretCommand,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Debug, Subcommand)]
enum SecretCommand {
    /// Set a secret (admins), its value read from --from-file or else stdin: never
    /// from the command line. One trailing line ending is dropped.
    Set {
        /// The agent's name.
        agent: String,
        /// The secret's name.
        name: String,
        /// Read the value from this file [default: stdin].
        #[arg(long, value_name = "PATH")]
        from_file: Option<PathBuf>,
    },
    /// List an agent's secrets: names and when each was set (never values).
    List {
        /// The agent's name.
        agent: String,
    },
    /// Delete a secret (admins).
    Delete {
        /// The agent's name.
        agent: String,
        /// The secret's name.
        name: String,
    },
}

/// Runs `corral secret …`. The error is only the output's (see
/// [`super::output::status`]).
pub async fn secret(args: SecretArgs) -> io::Result<ExitCode> {
    let SecretArgs { command, server } = args;
    let server = &server;
    let answer = async {
        Ok::<_, anyhow::Error>(match command {
            SecretCommand::Set {
                agent,
                name,
                from_file,
            } => {
                let value = read_secret(from_file.as_ref())?;
                let info = server
                    .call(
                        Method::PUT,
                        &["v1", "agents", &agent, "secrets", &name],
                        Some(json!({ "value": value })),
                    )
                    .await?;
                Answer::new(info, |info| {
                    outln!(
                        "set secret {} at {}",
                        text(&info["name"]),
                        time(&info["updated_at"])
                    )
                })
            }
            SecretCommand::List { agent } => Answer::new(
                server
                    .call(Method::GET, &["v1", "agents", &agent, "secrets"], None)
                    .await?,
                print_secrets,
            ),
            SecretCommand::Delete { agent, name } => {
                server
                    .call(
                        Method::DELETE,
                        &["v1", "agents", &agent, "secrets", &name],
                        None,
                    )
                    .await?;
                Answer::done(name.into(), |name| outln!("deleted secret {}", text(name)))
            }
        })
    }
    .await;
    conclude(server, answer)
}

/// A secret's value from `file`, or from stdin, without one trailing line ending.
fn read_secret(file: Option<&PathBuf>) -> anyhow::Result<String> {
    let mut value = match file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("reading the secret from {}", path.display()))?,
        None => {
            if io::stdin().is_terminal() {
                errln!(
                    "type the secret, then Enter and Ctrl-D (or pipe it in, or use --from-file):"
                );
            }
            io::read_to_string(io::stdin()).context("reading the secret from stdin")?
        }
    };
    if value.ends_with('\n') {
        value.pop();
        if value.ends_with('\r') {
            value.pop();
        }
    }
    Ok(value)
}

fn print_secrets(list: &Value) -> io::Result<()> {
    let mut table = Table::new(&["NAME", "UPDATED"]);
    for secret in list["items"].as_array().into_iter().flatten() {
        table.push(vec![text(&secret["name"]), time(&secret["updated_at"])]);
    }
    table.print("no secrets")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pair_splits_at_the_first_equals_sign() {
        assert_eq!(
            parse_pair("url=https://a/?b=c").unwrap(),
            ("url".into(), "https://a/?b=c".into())
        );
        assert_eq!(parse_pair("empty=").unwrap(), ("empty".into(), "".into()));
        assert!(parse_pair("no-equals").is_err());
    }

    #[test]
    fn a_secret_file_loses_one_trailing_line_ending() {
        let dir = tempfile::tempdir().unwrap();
        for (written, read) in [
            ("s3cr3t\n", "s3cr3t"),
            ("s3cr3t\r\n", "s3cr3t"),
            ("s3cr3t", "s3cr3t"),
            ("two\n\n", "two\n"),
        ] {
            let path = dir.path().join("secret");
            std::fs::write(&path, written).unwrap();
            assert_eq!(read_secret(Some(&path)).unwrap(), read);
        }
    }
}
