//! `corral version …`: upload an agent's component, list its versions, activate one
//! (which is also how a rollback is done), over `/v1/agents/{name}/versions…`.
//!
//! An upload streams the file as the request body. On a terminal, stderr shows a
//! progress bar while it is sent and then a spinner while the server validates and
//! compiles it (the answer only comes once the component is compiled); elsewhere, and
//! with `--json` or `--no-progress`, nothing is drawn.

use std::io::{self, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use reqwest::Method;
use serde_json::Value;

use super::client::{Answer, PageArgs, ServerArgs, conclude, list_pages, send};
use super::table::{Table, items, print_fields, text, time};
use super::units::format_size;

/// The size of each piece of the body: small enough for the bar to move smoothly.
const CHUNK: usize = 64 * 1024;

/// `corral version`.
#[derive(Debug, Args)]
pub struct VersionArgs {
    #[command(subcommand)]
    command: VersionCommand,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Debug, Subcommand)]
enum VersionCommand {
    /// Upload a component (.wasm) as a new version of an agent (developer). The server
    /// validates and compiles it before it answers; uploading the same bytes again
    /// answers the version already stored.
    Upload {
        /// The agent's name.
        agent: String,
        /// The component file.
        file: PathBuf,
        /// Make it the active version [default: only if the agent has none yet].
        #[arg(long, conflicts_with = "no_activate")]
        activate: bool,
        /// Do not make it the active version, even if the agent has none.
        #[arg(long)]
        no_activate: bool,
        /// Draw no progress bar, even on a terminal.
        #[arg(long)]
        no_progress: bool,
    },
    /// List an agent's versions, newest first.
    List {
        /// The agent's name.
        agent: String,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Make a version (its id or semver) the one invocations run (developer).
    Activate {
        /// The agent's name.
        agent: String,
        /// The version's id or semver.
        #[arg(value_name = "VERSION")]
        target: String,
    },
}

/// Runs `corral version …`. The error is only the output's (see
/// [`super::output::status`]).
pub async fn version(args: VersionArgs) -> io::Result<ExitCode> {
    let server = &args.server;
    let answer = run(server, args.command).await;
    conclude(server, answer)
}

async fn run(server: &ServerArgs, command: VersionCommand) -> anyhow::Result<Answer> {
    Ok(match command {
        VersionCommand::Upload {
            agent,
            file,
            activate,
            no_activate,
            no_progress,
        } => {
            let activate = match (activate, no_activate) {
                (true, _) => Some(true),
                (_, true) => Some(false),
                _ => None,
            };
            let draw = !no_progress && !server.json() && io::stderr().is_terminal();
            Answer::new(
                upload(server, &agent, &file, activate, draw).await?,
                print_version,
            )
        }
        VersionCommand::List { agent, page } => Answer::new(
            list_pages(server, &["v1", "agents", &agent, "versions"], &[], &page).await?,
            print_versions,
        ),
        VersionCommand::Activate { agent, target } => Answer::new(
            server
                .call(
                    Method::POST,
                    &["v1", "agents", &agent, "versions", &target, "activate"],
                    None,
                )
                .await?,
            print_version,
        ),
    })
}

/// Uploads `file` as a version of `agent`, drawing the progress on stderr if `draw`.
async fn upload(
    server: &ServerArgs,
    agent: &str,
    file: &PathBuf,
    activate: Option<bool>,
    draw: bool,
) -> anyhow::Result<Value> {
    let bytes = Bytes::from(
        tokio::fs::read(file)
            .await
            .with_context(|| format!("reading {}", file.display()))?,
    );
    let total = bytes.len() as u64;
    let bar = ProgressBar::with_draw_target(
        Some(total),
        if draw {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    bar.set_style(
        ProgressStyle::with_template(
            "uploading {bar:30} {binary_bytes}/{binary_total_bytes} ({binary_bytes_per_sec})",
        )
        .expect("the template is valid"),
    );
    let body = reqwest::Body::wrap_stream(chunks(bytes, bar.clone()));
    let mut request = server
        .request(Method::POST, &["v1", "agents", agent, "versions"])?
        .header(reqwest::header::CONTENT_TYPE, "application/wasm")
        // Declared, so the server refuses a component over its limit before reading it.
        .header(reqwest::header::CONTENT_LENGTH, total)
        .body(body);
    if let Some(activate) = activate {
        request = request.query(&[("activate", activate)]);
    }
    let answer = send(request).await;
    bar.finish_and_clear();
    answer
}

/// `bytes` as a stream of [`CHUNK`]-sized pieces that advance `bar` as they are taken;
/// once the last is taken the bar becomes a spinner that says the server is compiling.
fn chunks(bytes: Bytes, bar: ProgressBar) -> impl futures::Stream<Item = io::Result<Bytes>> {
    let total = bytes.len();
    let pieces: Vec<Bytes> = (0..total)
        .step_by(CHUNK)
        .map(|at| bytes.slice(at..total.min(at + CHUNK)))
        .collect();
    futures::stream::iter(pieces.into_iter().map(move |piece| {
        bar.inc(piece.len() as u64);
        if bar.position() == total as u64 {
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                    .expect("the template is valid"),
            );
            bar.set_message(format!(
                "uploaded {}; the server is validating and compiling it",
                format_size(total as u64)
            ));
            bar.enable_steady_tick(Duration::from_millis(100));
        }
        Ok(piece)
    }))
}

fn print_version(version: &Value) -> io::Result<()> {
    print_fields(&[
        ("version", text(&version["version"])),
        ("id", text(&version["id"])),
        ("active", text(&version["active"])),
        (
            "size",
            version["size_bytes"]
                .as_u64()
                .map_or_else(|| text(&version["size_bytes"]), format_size),
        ),
        ("sha256", text(&version["sha256"])),
        ("created", time(&version["created_at"])),
        ("actions", actions(&version["metadata"])),
    ])
}

/// The names of the actions a version's metadata describes.
fn actions(metadata: &Value) -> String {
    let names: Vec<String> = metadata["actions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|action| text(&action["name"]))
        .collect();
    if names.is_empty() {
        "-".into()
    } else {
        names.join(", ")
    }
}

fn print_versions(page: &Value) -> io::Result<()> {
    let mut table = Table::new(&["VERSION", "ID", "ACTIVE", "SIZE", "SHA256", "CREATED"]);
    for version in items(page) {
        let sha: String = text(&version["sha256"]).chars().take(12).collect();
        table.push(vec![
            text(&version["version"]),
            text(&version["id"]),
            if version["active"] == true {
                "*".into()
            } else {
                String::new()
            },
            version["size_bytes"]
                .as_u64()
                .map_or_else(|| text(&version["size_bytes"]), format_size),
            sha,
            time(&version["created_at"]),
        ]);
    }
    table.print("no versions")
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;

    #[tokio::test]
    async fn the_body_is_the_file_in_pieces_and_the_bar_ends_full() {
        let bytes = Bytes::from(vec![7u8; CHUNK * 2 + 5]);
        let bar = ProgressBar::hidden();
        bar.set_length(bytes.len() as u64);
        let pieces: Vec<Bytes> = chunks(bytes.clone(), bar.clone())
            .map(|piece| piece.unwrap())
            .collect()
            .await;
        assert_eq!(
            pieces.iter().map(Bytes::len).collect::<Vec<_>>(),
            [CHUNK, CHUNK, 5]
        );
        assert_eq!(pieces.concat(), bytes.to_vec());
        assert_eq!(bar.position(), bytes.len() as u64);
    }
}
