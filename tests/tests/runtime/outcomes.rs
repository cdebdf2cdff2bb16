//! Every example and misbehaving agent: the exact outcome and usage of each, and the
//! host keeps serving afterwards.

use std::time::Duration;

use corral_host::limits::Limits;
use corral_host::runtime::{LoadedAgent, LogLevel, LogSource, Outcome, Runtime};
use corral_tests::harness::{invoke, load, runtime, tight_limits};
use corral_tests::plugins::{ECHO, HOSTILE, TEXT_STATS};
use serde_json::{Value, json};

const PAGE: u64 = 64 << 10;

fn output(execution: &corral_host::runtime::Execution) -> Value {
    let text = execution
        .output
        .as_deref()
        .unwrap_or_else(|| panic!("no output: {execution:#?}"));
    serde_json::from_str(text).expect("output is JSON")
}

/// After any misbehaviour, a good invocation on the same runtime still succeeds.
async fn assert_host_still_serves(runtime: &Runtime) {
    let echo = load(runtime, ECHO).await;
    let execution = invoke(
        runtime,
        &echo,
        "echo",
        r#"{"still":"here"}"#,
        Limits::default(),
    )
    .await;
    assert_eq!(execution.outcome, Outcome::Succeeded, "{execution:#?}");
    assert_eq!(output(&execution), json!({"still": "here"}));
}

async fn hostile(
    action: &str,
    input: &str,
    limits: Limits,
) -> (Runtime, corral_host::runtime::Execution) {
    let runtime = runtime();
    let agent: std::sync::Arc<LoadedAgent> = load(&runtime, HOSTILE).await;
    let execution = invoke(&runtime, &agent, action, input, limits).await;
    (runtime, execution)
}

#[tokio::test]
async fn echo_returns_its_input_and_reports_exact_usage() {
    let runtime = runtime();
    let echo = load(&runtime, ECHO).await;
    let input = r#"{"greeting":"hello","n":[1,2,3]}"#;
    let limits = Limits::default();
    let execution = invoke(&runtime, &echo, "echo", input, limits).await;

    assert_eq!(execution.outcome, Outcome::Succeeded, "{execution:#?}");
    assert_eq!(execution.error, None);
    assert_eq!(
        output(&execution),
        serde_json::from_str::<Value>(input).unwrap()
    );
    let expected_log = format!("echo: {} bytes", input.len());
    assert_eq!(execution.logs.len(), 1);
    assert_eq!(execution.logs[0].message, expected_log);
    assert_eq!(execution.logs[0].level, LogLevel::Info);
    assert_eq!(execution.logs[0].source, LogSource::Agent);

    let usage = execution.usage;
    assert_eq!(usage.log_bytes, expected_log.len() as u64);
    assert_eq!(
        usage.output_bytes,
        execution.output.as_ref().unwrap().len() as u64
    );
    assert!(
        usage.fuel > 0 && usage.fuel < limits.fuel,
        "fuel {}",
        usage.fuel
    );
    assert!(usage.peak_memory_bytes >= PAGE && usage.peak_memory_bytes <= limits.memory_bytes);
    assert_eq!(
        usage.peak_memory_bytes % PAGE,
        0,
        "memory grows in whole pages"
    );

    // Fuel metering is deterministic: the same call costs exactly the same again.
    let again = invoke(&runtime, &echo, "echo", input, limits).await;
    assert_eq!(again.usage.fuel, usage.fuel);
    assert_eq!(again.usage.peak_memory_bytes, usage.peak_memory_bytes);
    assert_ne!(again.id, execution.id, "each execution has its own id");
}

#[tokio::test]
async fn transform_picks_renames_and_uppercases() {
    let runtime = runtime();
    let echo = load(&runtime, ECHO).await;
    let input = json!({
        "data": {"name": "ada", "tags": ["x", {"deep": "y"}], "drop": 1},
        "pick": ["name", "tags"],
        "rename": {"name": "who"},
        "uppercase": true
    });
    let execution = invoke(
        &runtime,
        &echo,
        "transform",
        &input.to_string(),
        Limits::default(),
    )
    .await;
    assert_eq!(execution.outcome, Outcome::Succeeded, "{execution:#?}");
    assert_eq!(
        output(&execution),
        json!({"who": "ADA", "tags": ["X", {"deep": "Y"}]})
    );
}

#[tokio::test]
async fn input_the_agent_cannot_use_is_invalid_input() {
    let runtime = runtime();
    let echo = load(&runtime, ECHO).await;
    let execution = invoke(
        &runtime,
        &echo,
        "transform",
        r#"{"data": 5}"#,
        Limits::default(),
    )
    .await;
    assert_eq!(execution.outcome, Outcome::InvalidInput, "{execution:#?}");
    assert_eq!(execution.error.as_ref().unwrap().code, "invalid_input");
    assert!(
        execution.usage.fuel > 0,
        "the guest ran and refused the input"
    );
}

#[tokio::test]
async fn input_that_is_not_json_is_refused_before_the_guest_runs() {
    let runtime = runtime();
    let echo = load(&runtime, ECHO).await;
    let execution = invoke(&runtime, &echo, "echo", "{not json", Limits::default()).await;
    assert_eq!(execution.outcome, Outcome::InvalidInput);
    assert_eq!(execution.error.as_ref().unwrap().code, "invalid_input");
    assert!(
        execution
            .error
            .as_ref()
            .unwrap()
            .message
            .contains("not valid JSON")
    );
    assert_eq!(execution.usage.fuel, 0);
    assert_eq!(execution.usage.peak_memory_bytes, 0);
}

#[tokio::test]
async fn an_unknown_action_is_the_agents_error() {
    let runtime = runtime();
    let echo = load(&runtime, ECHO).await;
    let execution = invoke(&runtime, &echo, "nope", "{}", Limits::default()).await;
    assert_eq!(execution.outcome, Outcome::AgentError);
    assert_eq!(execution.error.as_ref().unwrap().code, "unknown_action");
}

#[tokio::test]
async fn text_stats_counts_words_lines_and_sentences() {
    let runtime = runtime();
    let agent = load(&runtime, TEXT_STATS).await;
    assert_eq!(agent.metadata.name, "text-stats");
    assert!(agent.metadata.has_action("stats") && agent.metadata.has_action("top_words"));
    assert!(
        agent
            .metadata
            .actions
            .iter()
            .all(|a| a.input_schema.is_some())
    );

    let text = "The cat sat. The cat ran!\nDogs bark?";
    let execution = invoke(
        &runtime,
        &agent,
        "stats",
        &json!({ "text": text }).to_string(),
        Limits::default(),
    )
    .await;
    assert_eq!(execution.outcome, Outcome::Succeeded, "{execution:#?}");
    let stats = output(&execution);
    assert_eq!(stats["words"], 8);
    assert_eq!(stats["lines"], 2);
    assert_eq!(stats["sentences"], 3);
    assert_eq!(stats["chars"], text.chars().count());
    assert_eq!(stats["bytes"], text.len());

    let execution = invoke(
        &runtime,
        &agent,
        "top_words",
        &json!({ "text": text, "limit": 2, "ignore_stopwords": false }).to_string(),
        Limits::default(),
    )
    .await;
    assert_eq!(
        output(&execution),
        json!({"words": [{"word": "cat", "count": 2}, {"word": "the", "count": 2}]})
    );

    let execution = invoke(
        &runtime,
        &agent,
        "classify",
        r#"{"text":"This is not good. Terrible."}"#,
        Limits::default(),
    )
    .await;
    assert_eq!(output(&execution)["label"], "negative");
}

#[tokio::test]
async fn an_infinite_loop_runs_out_of_fuel_at_exactly_its_limit() {
    let limits = Limits {
        fuel: 5_000_000,
        ..tight_limits()
    };
    let (runtime, execution) = hostile("spin", "{}", limits).await;
    assert_eq!(execution.outcome, Outcome::FuelExhausted, "{execution:#?}");
    assert_eq!(execution.error.as_ref().unwrap().code, "fuel_exhausted");
    assert_eq!(execution.usage.fuel, limits.fuel);
    assert_eq!(execution.output, None);
    assert_host_still_serves(&runtime).await;
}

#[tokio::test]
async fn an_infinite_loop_with_fuel_to_spare_times_out() {
    let limits = Limits {
        fuel: u64::MAX / 2,
        timeout: Duration::from_millis(300),
        ..tight_limits()
    };
    let (runtime, execution) = hostile("spin", "{}", limits).await;
    assert_eq!(execution.outcome, Outcome::TimedOut, "{execution:#?}");
    assert!(execution.error.as_ref().unwrap().retryable);
    assert!(execution.usage.wall_time >= limits.timeout);
    assert!(execution.usage.fuel > 0);
    assert_host_still_serves(&runtime).await;
}

#[tokio::test]
async fn a_guest_blocked_in_a_host_call_times_out() {
    let limits = Limits {
        timeout: Duration::from_millis(200),
        ..tight_limits()
    };
    let (runtime, execution) = hostile("sleep", r#"{"ms": 60000}"#, limits).await;
    assert_eq!(execution.outcome, Outcome::TimedOut, "{execution:#?}");
    assert!(execution.usage.wall_time >= limits.timeout);
    assert!(
        execution.usage.fuel < 10_000_000,
        "it was sleeping, not computing"
    );
    assert_host_still_serves(&runtime).await;
}

#[tokio::test]
async fn a_short_sleep_within_the_timeout_succeeds() {
    let (_, execution) = hostile("sleep", r#"{"ms": 5}"#, tight_limits()).await;
    assert_eq!(execution.outcome, Outcome::Succeeded, "{execution:#?}");
    assert_eq!(output(&execution), json!({"slept_ms": 5}));
}

#[tokio::test]
async fn a_memory_hog_is_stopped_at_its_memory_limit() {
    let limits = Limits {
        memory_bytes: 8 << 20,
        ..tight_limits()
    };
    let (runtime, execution) = hostile("hog_memory", r#"{"chunk_bytes": 262144}"#, limits).await;
    assert_eq!(
        execution.outcome,
        Outcome::MemoryLimitExceeded,
        "{execution:#?}"
    );
    assert_eq!(
        execution.error.as_ref().unwrap().code,
        "memory_limit_exceeded"
    );
    let peak = execution.usage.peak_memory_bytes;
    assert!(peak <= limits.memory_bytes, "peak {peak} within the limit");
    assert!(
        peak > limits.memory_bytes - (1 << 20),
        "peak {peak} close to the limit"
    );
    assert_host_still_serves(&runtime).await;
}

#[tokio::test]
async fn deep_recursion_traps_with_stack_overflow() {
    let (runtime, execution) = hostile("recurse", "{}", tight_limits()).await;
    assert_eq!(execution.outcome, Outcome::Trapped, "{execution:#?}");
    assert_eq!(execution.error.as_ref().unwrap().code, "stack_overflow");
    assert_host_still_serves(&runtime).await;
}

#[tokio::test]
async fn a_panic_traps_as_unreachable_and_its_message_is_logged() {
    let (runtime, execution) = hostile("panic", "{}", tight_limits()).await;
    assert_eq!(execution.outcome, Outcome::Trapped, "{execution:#?}");
    assert_eq!(execution.error.as_ref().unwrap().code, "unreachable");
    let stderr: String = execution
        .logs
        .iter()
        .filter(|l| l.source == LogSource::Stderr)
        .map(|l| l.message.as_str())
        .collect();
    assert!(
        stderr.contains("hostile agent panicked on purpose"),
        "stderr: {stderr:?}"
    );
    assert_host_still_serves(&runtime).await;
}

#[tokio::test]
async fn an_unreachable_instruction_traps() {
    let (runtime, execution) = hostile("unreachable", "{}", tight_limits()).await;
    assert_eq!(execution.outcome, Outcome::Trapped, "{execution:#?}");
    assert_eq!(execution.error.as_ref().unwrap().code, "unreachable");
    assert_host_still_serves(&runtime).await;
}

#[tokio::test]
async fn an_agent_error_is_passed_through() {
    let (_, execution) = hostile("fail", "{}", tight_limits()).await;
    assert_eq!(execution.outcome, Outcome::AgentError, "{execution:#?}");
    let error = execution.error.unwrap();
    assert_eq!(error.code, "upstream_unavailable");
    assert_eq!(error.message, "the upstream service is down");
    assert!(error.retryable);
}

#[tokio::test]
async fn huge_output_is_refused_and_its_size_recorded() {
    let limits = Limits {
        output_bytes: 1 << 20,
        memory_bytes: 32 << 20,
        fuel: 1_000_000_000,
        ..tight_limits()
    };
    let (runtime, execution) = hostile("huge_output", r#"{"bytes": 2097152}"#, limits).await;
    assert_eq!(execution.outcome, Outcome::OutputTooLarge, "{execution:#?}");
    assert_eq!(execution.output, None);
    assert_eq!(
        execution.usage.output_bytes,
        2_097_152 + 2,
        "a JSON string: quotes included"
    );
    assert_host_still_serves(&runtime).await;
}

#[tokio::test]
async fn output_exactly_at_the_limit_is_kept() {
    let limits = Limits {
        output_bytes: 1002,
        ..tight_limits()
    };
    let (_, execution) = hostile("huge_output", r#"{"bytes": 1000}"#, limits).await;
    assert_eq!(execution.outcome, Outcome::Succeeded, "{execution:#?}");
    assert_eq!(execution.usage.output_bytes, 1002);
}

#[tokio::test]
async fn a_log_flood_is_stopped_at_exactly_the_log_limit() {
    let limits = Limits {
        log_bytes: 10_000,
        ..tight_limits()
    };
    let (runtime, execution) = hostile("flood_logs", "{}", limits).await;
    assert_eq!(
        execution.outcome,
        Outcome::LogLimitExceeded,
        "{execution:#?}"
    );
    assert_eq!(execution.usage.log_bytes, 10_000);
    let kept: usize = execution.logs.iter().map(|l| l.message.len()).sum();
    assert_eq!(kept, 10_000);
    assert_host_still_serves(&runtime).await;
}

#[tokio::test]
async fn a_stdout_flood_counts_against_the_same_log_limit() {
    let limits = Limits {
        log_bytes: 4096,
        ..tight_limits()
    };
    let (runtime, execution) = hostile("print_flood", "{}", limits).await;
    assert_eq!(
        execution.outcome,
        Outcome::LogLimitExceeded,
        "{execution:#?}"
    );
    assert_eq!(execution.usage.log_bytes, 4096);
    assert!(execution.logs.iter().all(|l| l.source == LogSource::Stdout));
    assert_host_still_serves(&runtime).await;
}

#[tokio::test]
async fn stdout_and_stderr_are_captured_into_the_logs() {
    let (_, execution) = hostile(
        "print",
        r#"{"stdout": "to out\n", "stderr": "to err\n"}"#,
        tight_limits(),
    )
    .await;
    assert_eq!(execution.outcome, Outcome::Succeeded, "{execution:#?}");
    let out: Vec<_> = execution
        .logs
        .iter()
        .map(|l| (l.source, l.message.as_str()))
        .collect();
    assert!(out.contains(&(LogSource::Stdout, "to out\n")), "{out:?}");
    assert!(out.contains(&(LogSource::Stderr, "to err\n")), "{out:?}");
    assert_eq!(execution.usage.log_bytes, 14);
}

/// Each capability probe runs to completion, and the ungranted call inside it fails.
async fn probe(action: &str, input: Value) -> Value {
    let (runtime, execution) = hostile(action, &input.to_string(), tight_limits()).await;
    assert_eq!(execution.outcome, Outcome::Succeeded, "{execution:#?}");
    let result = output(&execution);
    assert_eq!(
        result["succeeded"], false,
        "{action} must be denied: {result}"
    );
    assert_host_still_serves(&runtime).await;
    result
}

#[tokio::test]
async fn reading_a_host_file_is_denied() {
    let result = probe("read_file", json!({"path": "/etc/passwd"})).await;
    assert!(
        !result["detail"].as_str().unwrap().contains("root:"),
        "{result}"
    );
}

#[tokio::test]
async fn the_guest_sees_no_environment_variables() {
    // The host process has PATH and HOME; the guest must see none of them.
    let result = probe("read_env", json!({"name": "PATH"})).await;
    assert_eq!(result["vars"], 0);
}

#[tokio::test]
async fn opening_a_socket_is_denied() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let result = probe("open_socket", json!({ "addr": addr.to_string() })).await;
    let detail = result["detail"].as_str().unwrap().to_lowercase();
    assert!(
        detail.contains("denied")
            || detail.contains("not-permitted")
            || detail.contains("permitted"),
        "{detail}"
    );
    listener.set_nonblocking(true).unwrap();
    assert!(listener.accept().is_err(), "nothing may have connected");
}

#[tokio::test]
async fn an_outbound_http_request_is_denied() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let result = probe("http_request", json!({ "url": format!("http://{addr}/") })).await;
    let detail = result["detail"].as_str().unwrap().to_lowercase();
    assert!(detail.contains("denied"), "{detail}");
    listener.set_nonblocking(true).unwrap();
    assert!(listener.accept().is_err(), "nothing may have connected");
}

#[tokio::test]
async fn a_burn_of_known_size_is_deterministic() {
    let runtime = runtime();
    let agent = load(&runtime, HOSTILE).await;
    let a = invoke(
        &runtime,
        &agent,
        "burn",
        r#"{"iterations": 100000}"#,
        Limits::default(),
    )
    .await;
    let b = invoke(
        &runtime,
        &agent,
        "burn",
        r#"{"iterations": 100000}"#,
        Limits::default(),
    )
    .await;
    let c = invoke(
        &runtime,
        &agent,
        "burn",
        r#"{"iterations": 200000}"#,
        Limits::default(),
    )
    .await;
    assert_eq!(a.outcome, Outcome::Succeeded, "{a:#?}");
    assert_eq!(output(&a), output(&b));
    assert_eq!(a.usage.fuel, b.usage.fuel);
    assert!(
        c.usage.fuel > a.usage.fuel,
        "twice the work costs more fuel"
    );
}

#[tokio::test]
async fn hoarding_host_resources_is_stopped_by_the_resource_table_bound() {
    let (runtime, execution) = hostile("hoard_handles", "{}", tight_limits()).await;
    assert_eq!(execution.outcome, Outcome::Trapped, "{execution:#?}");
    assert_eq!(execution.error.as_ref().unwrap().code, "host_call_failed");
    assert_host_still_serves(&runtime).await;
}

#[tokio::test]
async fn random_bytes_are_bounded_per_call() {
    let (_, small) = hostile("random_bytes", r#"{"bytes": 1024}"#, tight_limits()).await;
    assert_eq!(small.outcome, Outcome::Succeeded, "{small:#?}");
    assert_eq!(output(&small), json!({"received": 1024}));

    let (runtime, huge) = hostile("random_bytes", r#"{"bytes": 104857600}"#, tight_limits()).await;
    assert_eq!(huge.outcome, Outcome::Trapped, "{huge:#?}");
    assert_eq!(huge.error.as_ref().unwrap().code, "host_call_failed");
    assert_host_still_serves(&runtime).await;
}
