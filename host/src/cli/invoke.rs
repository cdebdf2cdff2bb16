//! `corral invoke AGENT ACTION`: run an action on a running `corral serve` and wait for
//! its result (`POST /v1/agents/{name}/invoke`).
//!
//! For people, the output (JSON) goes to stdout and a line about the execution (its id,
//! outcome, usage, cost) to stderr; with `--json`, the server's receipt. The input is
//! sent exactly as written, numbers beyond 64 bits included.
//!
//! Exit status: 0 the agent succeeded; 1 the server refused to run it (its error code
//! and message are printed); 2 bad usage, or the server could not be reached; 3 it ran
//! (and was recorded) but did not succeed: the outcome and error are printed.

use std::io;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use reqwest::Method;
use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;

use super::client::{Answer, Exit, ServerArgs, conclude, send};
use super::output::{errln, outln};
use super::run::read_input;
use super::table::text;
use super::units::{format_count, format_duration, parse_count, parse_duration, parse_size};

/// `corral invoke`.
#[derive(Debug, Args)]
pub struct InvokeArgs {
    /// The agent.
    agent: String,
    /// The action to run.
    action: String,
    /// The input: JSON text, or @FILE to read it from a file (@- for stdin)
    /// [default: {}].
    #[arg(short, long, value_name = "JSON|@FILE")]
    input: Option<String>,
    /// Run this version (id or semver) instead of the active one.
    #[arg(long = "version", value_name = "VERSION")]
    run_version: Option<String>,
    /// Your own id for the execution, to find it by (`execution list
    /// --correlation-id`).
    #[arg(long, value_name = "ID")]
    correlation_id: Option<String>,
    /// Make the invocation safe to retry: a retry with the same key answers the first
    /// run's receipt instead of running (and billing) again.
    #[arg(long, value_name = "KEY")]
    idempotency_key: Option<String>,
    /// Fuel the run may use, e.g. 1000000 or 1e9 (only below the agent's).
    #[arg(long, value_parser = parse_count)]
    fuel: Option<u64>,
    /// Linear memory the run may hold, e.g. 64MiB (only below the agent's).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    memory: Option<u64>,
    /// Wall-clock time the run may take, e.g. 2s (only below the agent's).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    timeout: Option<Duration>,
    /// Output the run may return, e.g. 1MiB (only below the agent's).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    max_output: Option<u64>,
    /// Log bytes the run may write, e.g. 64KiB (only below the agent's).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    max_logs: Option<u64>,
    #[command(flatten)]
    server: ServerArgs,
}

/// The request body, with the input as written.
#[derive(Serialize)]
struct Body {
    action: String,
    input: Box<RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    correlation_id: Option<String>,
    limits: Limits,
}

#[derive(Serialize)]
struct Limits {
    #[serde(skip_serializing_if = "Option::is_none")]
    fuel: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    memory_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timeout_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    log_bytes: Option<u64>,
}

/// Runs `corral invoke`. The error is only the output's (see
/// [`super::output::status`]).
pub async fn invoke(args: InvokeArgs) -> io::Result<ExitCode> {
    let answer = run(&args).await;
    conclude(&args.server, answer)
}

async fn run(args: &InvokeArgs) -> anyhow::Result<Answer> {
    let input = match &args.input {
        Some(input) => read_input(input)?,
        None => "{}".into(),
    };
    let input =
        RawValue::from_string(input.trim().to_string()).context("the input is not valid JSON")?;
    let body = Body {
        action: args.action.clone(),
        input,
        version: args.run_version.clone(),
        correlation_id: args.correlation_id.clone(),
        limits: Limits {
            fuel: args.fuel,
            memory_bytes: args.memory,
            timeout_ms: args
                .timeout
                .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
            output_bytes: args.max_output,
            log_bytes: args.max_logs,
        },
    };
    let body = serde_json::to_string(&body).expect("the body serializes");
    let mut request = args
        .server
        .request(Method::POST, &["v1", "agents", &args.agent, "invoke"])?
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body);
    if let Some(key) = &args.idempotency_key {
        request = request.header("Idempotency-Key", key);
    }
    let receipt = send(request).await?;
    let succeeded = receipt["outcome"] == "succeeded";
    Ok(Answer {
        exit: if succeeded {
            Exit::Ok
        } else {
            Exit::NotSucceeded
        },
        ..Answer::new(receipt, print_receipt)
    })
}

fn print_receipt(receipt: &Value) -> io::Result<()> {
    let usage = &receipt["usage"];
    let wall = usage["wall_time_us"].as_u64().map_or_else(
        || "?".into(),
        |us| format_duration(Duration::from_micros(us)),
    );
    let fuel = usage["fuel"]
        .as_u64()
        .map_or_else(|| "?".into(), format_count);
    errln!(
        "execution {}: {} {} {} {} in {wall}, {fuel} fuel, ${}",
        text(&receipt["execution_id"]),
        text(&receipt["agent"]),
        text(&receipt["version"]),
        text(&receipt["action"]),
        text(&receipt["outcome"]),
        text(&receipt["cost"]),
    );
    for denial in receipt["denials"].as_array().into_iter().flatten() {
        errln!("denied: {denial}");
    }
    if receipt["outcome"] == "succeeded" {
        outln!(
            "{}",
            serde_json::to_string_pretty(&receipt["output"]).expect("JSON prints")
        )
    } else {
        let error = &receipt["error"];
        errln!(
            "error: {}: {}",
            text(&error["code"]),
            text(&error["message"])
        );
        Ok(())
    }
}
