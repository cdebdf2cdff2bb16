//! Calls between agents under `corral run --call`: granted, denied, cycles, depth,
//! failures passed back, and the callee's time bounded by the caller's.

use std::process::Command;

use corral_tests::harness::corral_bin;
use corral_tests::plugins::{ECHO, HOSTILE, RELAY};
use serde_json::{Value, json};

fn run(args: &[&str]) -> (Option<i32>, Value, String) {
    let cache =
        std::env::temp_dir().join(format!("corral-calls-test-cache-{}", std::process::id()));
    let out = Command::new(corral_bin())
        .arg("run")
        .args(args)
        .arg("--json")
        .env("CORRAL_CACHE_DIR", cache)
        .output()
        .expect("corral runs");
    let record = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (
        out.status.code(),
        record,
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn call(agent: &str, action: &str, input: Value) -> String {
    json!({ "agent": agent, "action": action, "input": input }).to_string()
}

#[test]
fn a_granted_call_returns_the_callees_output_and_counts_it() {
    let echo = format!("echo={ECHO}");
    let input = call("echo", "echo", json!({ "x": 1 }));
    let (code, record, stderr) = run(&[RELAY, "-a", "call", "-i", &input, "--call", &echo]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(record["outcome"], "succeeded");
    assert_eq!(
        serde_json::from_str::<Value>(record["output"].as_str().unwrap()).unwrap(),
        json!({ "output": { "x": 1 } })
    );
    let calls = &record["usage"]["agents"];
    assert_eq!(
        (calls["calls"].as_u64(), calls["calls_denied"].as_u64()),
        (Some(1), Some(0))
    );
    assert_eq!(calls["subtree"]["executions"], 1);
    assert!(calls["subtree"]["fuel"].as_u64().unwrap() > 0);
}

#[test]
fn without_a_grant_every_call_is_denied_and_listed() {
    let input = call("echo", "echo", json!({}));
    let (code, record, _) = run(&[RELAY, "-a", "call", "-i", &input]);
    assert_eq!(code, Some(1));
    assert_eq!(record["error"]["code"], "call_denied");
    assert_eq!(record["usage"]["agents"]["calls_denied"], 1);
    assert_eq!(
        record["denials"][0],
        json!({ "capability": "agents", "target": "echo", "reason": "not_granted",
                "detail": "calling other agents is not granted to this agent (asked for \"echo\")" })
    );
    // Granted some agents, but not this one.
    let echo = format!("echo={ECHO}");
    let input = call("hostile", "fail", json!({}));
    let (_, record, _) = run(&[RELAY, "-a", "call", "-i", &input, "--call", &echo]);
    assert_eq!(record["error"]["code"], "call_denied");
    assert_eq!(record["denials"][0]["reason"], "not_allowed");
}

#[test]
fn a_call_back_into_the_chain_is_a_cycle() {
    // relay → relay: the root is named relay (by its describe()).
    let relay = format!("relay={RELAY}");
    let input = call(
        "relay",
        "call",
        json!({ "agent": "echo", "action": "echo" }),
    );
    let (_, record, _) = run(&[RELAY, "-a", "call", "-i", &input, "--call", &relay]);
    assert_eq!(record["error"]["code"], "call_cycle", "{record:#}");
    assert_eq!(record["denials"][0]["reason"], "call_cycle");
    assert!(
        record["error"]["message"]
            .as_str()
            .unwrap()
            .contains("relay"),
        "{record:#}"
    );
}

#[test]
fn calls_stop_at_the_depth_limit() {
    // A chain of distinct names (one component under five names) five calls deep:
    // relay → r1 → r2 → r3 → r4 → r5 is one deeper than the four allowed.
    let names: Vec<String> = (1..=5).map(|i| format!("r{i}={RELAY}")).collect();
    let mut input = json!({ "agent": "echo", "action": "echo" });
    for i in (2..=5).rev() {
        input = json!({ "agent": format!("r{i}"), "action": "call", "input": input });
    }
    let root = call("r1", "call", input);
    let mut args = vec![RELAY, "-a", "call", "-i", &root];
    for name in &names {
        args.extend(["--call", name]);
    }
    let (_, record, _) = run(&args);
    // r4 is refused its call to r5; the failure comes back up the chain.
    assert_eq!(record["error"]["code"], "agent_error", "{record:#}");
    let message = record["error"]["message"].as_str().unwrap();
    assert!(message.contains("call_depth_exceeded"), "{message}");
    assert_eq!(record["usage"]["agents"]["subtree"]["executions"], 4);
}

#[test]
fn a_callees_failure_and_its_time_come_back_to_the_caller() {
    let hostile = format!("hostile={HOSTILE}");
    let failing = call("hostile", "fail", json!({}));
    let (_, record, _) = run(&[RELAY, "-a", "call", "-i", &failing, "--call", &hostile]);
    // The callee's outcome is the code; its own code and message are the message.
    assert_eq!(
        record["error"],
        json!({ "code": "agent_error", "message": "upstream_unavailable: the upstream service is down",
                "retryable": true })
    );
    assert_eq!(record["usage"]["agents"]["calls_failed"], 1);

    // The callee may take only what its caller has left: it is stopped at the
    // caller's deadline, and the caller reports it.
    let sleeper = call("hostile", "sleep", json!({ "ms": 5000 }));
    let (_, record, _) = run(&[
        RELAY,
        "-a",
        "call",
        "-i",
        &sleeper,
        "--call",
        &hostile,
        "--timeout",
        "300ms",
    ]);
    // Either the callee's timeout comes back as the caller's error (the callee ended
    // first), or the caller's own deadline passed just after: both at ~300 ms.
    let callee_timed_out =
        record["outcome"] == "agent_error" && record["error"]["code"] == "timed_out";
    assert!(
        callee_timed_out || record["outcome"] == "timed_out",
        "{record:#}"
    );
    assert!(record["usage"]["wall_time_us"].as_u64().unwrap() < 5_000_000);
}

#[test]
fn tasks_submitted_under_corral_run_run_in_the_background_and_are_gathered() {
    let echo = format!("echo={ECHO}");
    let input = json!({ "agent": "echo", "action": "echo", "inputs": [{ "n": 1 }, { "n": 2 }] })
        .to_string();
    let (code, record, stderr) = run(&[RELAY, "-a", "fan_out", "-i", &input, "--call", &echo]);
    assert_eq!(code, Some(0), "{stderr}");
    let output: Value = serde_json::from_str(record["output"].as_str().unwrap()).unwrap();
    assert_eq!(output["outputs"], json!([{ "n": 1 }, { "n": 2 }]));
    assert_eq!(record["usage"]["agents"]["tasks_submitted"], 2);
    // A task id it did not submit (or of an agent it may not call) cannot be read.
    let input = json!({ "task": "not-a-task" }).to_string();
    let (code, record, _) = run(&[RELAY, "-a", "wait", "-i", &input, "--call", &echo]);
    assert_eq!(code, Some(1));
    assert_eq!(record["error"]["code"], "call_denied");
}
