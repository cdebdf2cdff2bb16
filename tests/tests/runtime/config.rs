//! Config values and secrets through `corral:agent/config`: an agent's own values need
//! no grant; a secret is readable only when granted by name, a refusal is recorded, and
//! whatever secret the guest read is redacted from its logs, output and error. Real
//! components (`greeter`, `hostile`) on a real runtime, and the real `corral run`.

use std::collections::HashMap;
use std::process::Command;
use std::sync::Arc;

use corral_host::limits::Limits;
use corral_host::policy::Grants;
use corral_host::runtime::capabilities::config::{ConfigUsage, StaticConfig};
use corral_host::runtime::{DenialReason, Execution, InvokeRequest, LogSource, Outcome, Runtime};
use corral_tests::harness::{corral_bin, load, runtime};
use corral_tests::plugins::{GREETER, HOSTILE};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

const KEY: &str = "k3y-0f-the-greeter";
const TOKEN: &str = "tok_9f8e7d6c5b4a";

fn source(values: &[(&str, &str)], secrets: &[(&str, &str)]) -> StaticConfig {
    let map = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    StaticConfig {
        values: map(values),
        secrets: map(secrets),
    }
}

fn granted(names: &[&str]) -> Grants {
    Grants {
        secrets: names.iter().map(|n| n.to_string()).collect(),
        ..Grants::default()
    }
}

async fn run(
    runtime: &Runtime,
    plugin: &str,
    action: &str,
    input: Value,
    grants: Grants,
    config: Option<StaticConfig>,
) -> Execution {
    let agent = load(runtime, plugin).await;
    let mut request =
        InvokeRequest::new(action, input.to_string(), Limits::default()).with_grants(grants);
    request.providers.config = config.map(|c| Arc::new(c) as _);
    runtime
        .invoke(&agent, request)
        .await
        .expect("the host sets up the run")
}

fn output(execution: &Execution) -> Value {
    let text = execution
        .output
        .as_deref()
        .unwrap_or_else(|| panic!("no output: {execution:#?}"));
    serde_json::from_str(text).expect("output is JSON")
}

fn hmac_hex(key: &str, message: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(message.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

fn usage(values_read: u64, secrets_read: u64, secrets_denied: u64) -> ConfigUsage {
    ConfigUsage {
        values_read,
        secrets_read,
        secrets_denied,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_reads_its_own_config_values_without_a_grant() {
    let runtime = runtime();
    let configured = source(&[("greeting", "Howdy, {name}.")], &[]);
    let execution = run(
        &runtime,
        GREETER,
        "greet",
        json!({ "name": "Ada" }),
        Grants::default(),
        Some(configured),
    )
    .await;
    assert_eq!(output(&execution), json!({ "message": "Howdy, Ada." }));
    assert_eq!(execution.usage.config, usage(1, 0, 0));
    assert!(execution.denials.is_empty());

    // Unset: the agent's default. Without any source: unset too.
    let unset = run(
        &runtime,
        GREETER,
        "greet",
        json!({ "name": "Ada" }),
        Grants::default(),
        Some(StaticConfig::default()),
    )
    .await;
    assert_eq!(output(&unset), json!({ "message": "Hello, Ada!" }));
    let no_source = run(
        &runtime,
        HOSTILE,
        "read_config",
        json!({ "name": "greeting" }),
        Grants::default(),
        None,
    )
    .await;
    assert_eq!(
        output(&no_source),
        json!({ "succeeded": true, "detail": "(unset)" })
    );
    assert_eq!(no_source.usage.config, usage(1, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_that_is_not_granted_is_denied_and_the_denial_names_only_the_secret() {
    let runtime = runtime();
    // Granted another secret; SIGNING_KEY is set but not granted.
    let execution = run(
        &runtime,
        GREETER,
        "sign",
        json!({ "name": "Ada" }),
        granted(&["OTHER"]),
        Some(source(&[], &[("SIGNING_KEY", KEY)])),
    )
    .await;
    assert_eq!(execution.outcome, Outcome::AgentError, "{execution:#?}");
    let error = execution.error.as_ref().unwrap();
    assert_eq!(error.code, "config_denied");
    assert_eq!(
        error.message,
        "the secret \"SIGNING_KEY\" is not granted to this agent"
    );
    assert_eq!(execution.usage.config, usage(1, 0, 1));
    assert_eq!(execution.denials.len(), 1, "{:#?}", execution.denials);
    let denial = &execution.denials[0];
    assert_eq!(denial.capability, "secrets");
    assert_eq!(denial.target, "SIGNING_KEY");
    assert_eq!(denial.reason, DenialReason::NotGranted);
    assert_eq!(
        denial.detail,
        "the secret \"SIGNING_KEY\" is not granted to this agent"
    );
    let record = serde_json::to_string(&execution).unwrap();
    assert!(!record.contains(KEY), "{record}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_granted_secret_is_readable_and_used_but_never_shown() {
    let runtime = runtime();
    let execution = run(
        &runtime,
        GREETER,
        "sign",
        json!({ "name": "Ada" }),
        granted(&["SIGNING_KEY"]),
        Some(source(
            &[("greeting", "Hi {name}")],
            &[("SIGNING_KEY", KEY)],
        )),
    )
    .await;
    assert_eq!(execution.outcome, Outcome::Succeeded, "{execution:#?}");
    assert_eq!(
        output(&execution),
        json!({ "message": "Hi Ada", "signature": hmac_hex(KEY, "Hi Ada") })
    );
    assert_eq!(execution.usage.config, usage(1, 1, 0));
    assert!(execution.denials.is_empty());

    // Granted but not set: the agent's own error, nothing denied.
    let missing = run(
        &runtime,
        GREETER,
        "sign",
        json!({ "name": "Ada" }),
        granted(&["SIGNING_KEY"]),
        Some(StaticConfig::default()),
    )
    .await;
    assert_eq!(missing.error.as_ref().unwrap().code, "missing_secret");
    assert_eq!(missing.usage.config, usage(1, 1, 0));
    assert!(missing.denials.is_empty());

    // Granted, but this host serves no secrets at all: unavailable.
    let unserved = run(
        &runtime,
        HOSTILE,
        "read_secret",
        json!({ "name": "SIGNING_KEY" }),
        granted(&["SIGNING_KEY"]),
        None,
    )
    .await;
    assert_eq!(
        output(&unserved),
        json!({ "succeeded": false, "detail": "config_unavailable: this host serves no secrets" })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_the_guest_writes_is_redacted_from_its_logs_and_output() {
    let runtime = runtime();
    let execution = run(
        &runtime,
        HOSTILE,
        "leak_secret",
        json!({ "name": "API_TOKEN" }),
        granted(&["API_TOKEN"]),
        Some(source(&[], &[("API_TOKEN", TOKEN)])),
    )
    .await;
    assert_eq!(execution.outcome, Outcome::Succeeded, "{execution:#?}");
    assert_eq!(
        output(&execution),
        json!({ "leaked": "[redacted]", "nested": { "again": "<[redacted]>" } })
    );
    // Rust's stderr is unbuffered: `eprintln!` arrives as three writes ("stderr: ",
    // the secret, "\n"), each its own entry and each redacted on its own.
    let written = |source: LogSource| -> String {
        execution
            .logs
            .iter()
            .filter(|e| e.source == source)
            .map(|e| e.message.as_str())
            .collect()
    };
    assert_eq!(written(LogSource::Agent), "the secret is [redacted]");
    assert_eq!(written(LogSource::Stdout), "stdout: [redacted]\n");
    assert_eq!(written(LogSource::Stderr), "stderr: [redacted]\n");
    // Usage counts what the guest returned, before redaction.
    let raw = json!({ "leaked": TOKEN, "nested": { "again": format!("<{TOKEN}>") } });
    assert_eq!(execution.usage.output_bytes, raw.to_string().len() as u64);
    assert_eq!(execution.usage.config, usage(0, 1, 0));
    let record = serde_json::to_string(&execution).unwrap();
    assert!(!record.contains(TOKEN), "{record}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_in_the_agents_error_is_redacted_too() {
    let runtime = runtime();
    let execution = run(
        &runtime,
        HOSTILE,
        "leak_secret",
        json!({ "name": "API_TOKEN", "fail": true }),
        granted(&["API_TOKEN"]),
        Some(source(&[], &[("API_TOKEN", TOKEN)])),
    )
    .await;
    assert_eq!(execution.outcome, Outcome::AgentError);
    let error = execution.error.as_ref().unwrap();
    assert_eq!(error.code, "leaky_error");
    assert_eq!(error.message, "failed with [redacted] inside");
    assert!(!serde_json::to_string(&execution).unwrap().contains(TOKEN));

    // A secret read through the probe comes back redacted in its output as well.
    let probe = run(
        &runtime,
        HOSTILE,
        "read_secret",
        json!({ "name": "API_TOKEN" }),
        granted(&["API_TOKEN"]),
        Some(source(&[], &[("API_TOKEN", TOKEN)])),
    )
    .await;
    assert_eq!(
        output(&probe),
        json!({ "succeeded": true, "detail": "[redacted]" })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_usage_counts_every_call_bad_names_included() {
    let runtime = runtime();
    let mut counts = Vec::new();
    for (action, name) in [
        ("read_config", "a"),
        ("read_config", "not a valid name"),
        ("read_secret", "NOT_GRANTED"),
        ("read_secret", "bad name"),
    ] {
        let execution = run(
            &runtime,
            HOSTILE,
            action,
            json!({ "name": name }),
            granted(&["GRANTED"]),
            Some(source(&[("a", "1")], &[("NOT_GRANTED", "x")])),
        )
        .await;
        counts.push((
            output(&execution)["detail"].as_str().unwrap().to_string(),
            execution.usage.config,
            execution.denials.len(),
        ));
    }
    assert_eq!(
        counts,
        [
            ("1".to_string(), usage(1, 0, 0), 0),
            ("(unset)".to_string(), usage(1, 0, 0), 0),
            (
                "config_denied: the secret \"NOT_GRANTED\" is not granted to this agent"
                    .to_string(),
                usage(0, 0, 1),
                1
            ),
            (
                "config_denied: the secret \"bad name\" is not granted to this agent".to_string(),
                usage(0, 0, 1),
                1
            ),
        ]
    );
}

fn corral(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let cache = std::env::temp_dir().join(format!("corral-cli-test-cache-{}", std::process::id()));
    let mut command = Command::new(corral_bin());
    command.args(args).env("CORRAL_CACHE_DIR", cache);
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("corral runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn corral_run_sets_config_and_grants_the_secrets_it_is_given() {
    let out = corral(
        &[
            "run",
            GREETER,
            "--action",
            "sign",
            "--input",
            r#"{"name": "Ada"}"#,
            "--config",
            "greeting=Hey {name}",
            "--secret-env",
            "SIGNING_KEY",
            "--json",
        ],
        &[("SIGNING_KEY", KEY)],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let record: Value = serde_json::from_slice(&out.stdout).unwrap();
    let output: Value = serde_json::from_str(record["output"].as_str().unwrap()).unwrap();
    assert_eq!(
        output,
        json!({ "message": "Hey Ada", "signature": hmac_hex(KEY, "Hey Ada") })
    );
    assert_eq!(
        record["usage"]["config"],
        json!({ "values_read": 1, "secrets_read": 1, "secrets_denied": 0 })
    );
    assert!(!text(&out.stdout).contains(KEY));

    // --secret NAME=VALUE, for people: the leak is redacted on the terminal too.
    let out = corral(
        &[
            "run",
            HOSTILE,
            "--action",
            "leak_secret",
            "--input",
            r#"{"name": "API_TOKEN"}"#,
            "--secret",
            &format!("API_TOKEN={TOKEN}"),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(
        !stdout.contains(TOKEN) && !stderr.contains(TOKEN),
        "{stdout}{stderr}"
    );
    assert!(stdout.contains(r#""leaked": "[redacted]""#), "{stdout}");
    assert!(
        stderr.contains("[warn] the secret is [redacted]"),
        "{stderr}"
    );
    assert!(
        stderr.contains("config: 0 values read · 1 secrets read · 0 secrets denied"),
        "{stderr}"
    );
}

#[test]
fn corral_run_grants_no_secret_it_was_not_given_and_refuses_bad_flags() {
    let out = corral(
        &[
            "run",
            GREETER,
            "--action",
            "sign",
            "--input",
            r#"{"name": "Ada"}"#,
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("[denied] secrets SIGNING_KEY (not_granted)"),
        "{stderr}"
    );

    let out = corral(
        &["run", GREETER, "--action", "greet", "--config", "no-equals"],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("\"no-equals\" is not NAME=VALUE"),
        "{}",
        text(&out.stderr)
    );

    let out = corral(
        &["run", GREETER, "--action", "greet", "--secret", "9X=1"],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("\"9X\" is not a valid name"),
        "{}",
        text(&out.stderr)
    );

    let out = corral(
        &[
            "run",
            GREETER,
            "--action",
            "greet",
            "--secret-env",
            "CORRAL_TEST_UNSET_VARIABLE",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains(
            "--secret-env CORRAL_TEST_UNSET_VARIABLE: the environment variable CORRAL_TEST_UNSET_VARIABLE is not set"
        ),
        "{}",
        text(&out.stderr)
    );
}
