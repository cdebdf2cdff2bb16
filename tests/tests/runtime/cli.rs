//! The `corral` binary as a plugin author uses it.

use std::process::Command;

use corral_tests::harness::corral_bin;
use corral_tests::plugins::{ECHO, HOSTILE, NOT_AN_AGENT};

fn corral(args: &[&str]) -> std::process::Output {
    let cache = std::env::temp_dir().join(format!("corral-cli-test-cache-{}", std::process::id()));
    Command::new(corral_bin())
        .args(args)
        .env("CORRAL_CACHE_DIR", cache)
        .output()
        .expect("corral runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn run_prints_the_output_and_a_usage_line() {
    let out = corral(&["run", ECHO, "--action", "echo", "--input", r#"{"a":1}"#]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stdout, serde_json::json!({"a": 1}));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("[info] echo: 7 bytes"), "{stderr}");
    assert!(stderr.contains("succeeded · fuel "), "{stderr}");
}

#[test]
fn run_reads_input_from_a_file_and_prints_json_records() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.json");
    std::fs::write(&input, r#"{"text": "one two"}"#).unwrap();
    let arg = format!("@{}", input.display());
    let out = corral(&["run", ECHO, "--action", "echo", "--input", &arg, "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let record: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(record["outcome"], "succeeded");
    assert_eq!(record["output"], r#"{"text":"one two"}"#);
    assert!(record["usage"]["fuel"].as_u64().unwrap() > 0);
}

#[test]
fn run_exits_with_the_outcomes_status() {
    let out = corral(&["run", HOSTILE, "--action", "spin", "--fuel", "1e6"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("fuel_exhausted"));

    let out = corral(&["run", HOSTILE, "--action", "fail"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("upstream_unavailable"));

    let out = corral(&["run", HOSTILE, "--action", "panic"]);
    assert_eq!(out.status.code(), Some(3));

    let out = corral(&["run", HOSTILE, "--action", "hog_memory", "--memory", "4MiB"]);
    assert_eq!(out.status.code(), Some(4));
    assert!(text(&out.stderr).contains("memory_limit_exceeded"));

    let out = corral(&[
        "run",
        HOSTILE,
        "--action",
        "sleep",
        "--input",
        r#"{"ms":10000}"#,
        "--timeout",
        "200ms",
    ]);
    assert_eq!(out.status.code(), Some(4));
    assert!(text(&out.stderr).contains("timed_out"));
}

#[test]
fn run_refuses_bad_flags_and_bad_files_clearly() {
    let out = corral(&["run", ECHO, "--action", "echo", "--memory", "lots"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("is not a size"),
        "{}",
        text(&out.stderr)
    );

    let out = corral(&["run", NOT_AN_AGENT, "--action", "echo"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("does not implement the corral:agent@0.1.0 world"),
        "{}",
        text(&out.stderr)
    );

    let out = corral(&["run", "/nonexistent.wasm", "--action", "echo"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("/nonexistent.wasm"));
}

#[test]
fn inspect_shows_metadata_imports_and_exports() {
    let out = corral(&["inspect", ECHO]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("valid ✓"), "{stdout}");
    assert!(stdout.contains("transform"), "{stdout}");
    assert!(stdout.contains("corral:agent/handler@0.1.0"), "{stdout}");

    let out = corral(&["inspect", HOSTILE, "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["valid_agent"], true);
    let imports = report["imports"].as_array().unwrap();
    assert!(
        imports.iter().any(|i| i
            .as_str()
            .unwrap()
            .starts_with("wasi:http/outgoing-handler")),
        "{imports:?}"
    );
}

#[test]
fn inspect_explains_why_a_component_is_not_an_agent() {
    let out = corral(&["inspect", NOT_AN_AGENT, "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["valid_agent"], false);
    assert!(report["error"].as_str().unwrap().contains("corral:agent"));
    let exports = report["exports"].as_array().unwrap();
    assert!(
        exports
            .iter()
            .any(|e| e.as_str().unwrap().starts_with("wasi:cli/run")),
        "{exports:?}"
    );
}

#[test]
fn run_allows_http_only_to_the_rules_given_and_reports_it() {
    use corral_tests::plugins::FETCH;
    use corral_tests::upstream::{HELLO, Upstream};

    let upstream = Upstream::start_in_background();
    let input = serde_json::json!({ "url": upstream.url("/hello") }).to_string();

    let out = corral(&["run", FETCH, "--action", "get", "--input", &input]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "[denied] http {} (not_granted): this agent has no HTTP grant",
            upstream.rule()
        )),
        "{stderr}"
    );
    assert!(stderr.contains("http_request_denied"), "{stderr}");

    let rule = upstream.rule();
    let out = corral(&[
        "run",
        FETCH,
        "--action",
        "get",
        "--input",
        &input,
        "--allow-http",
        &rule,
        "--http-timeout",
        "2s",
        "--http-max-response",
        "1KiB",
        "--http-max-requests",
        "3",
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let record: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let output: serde_json::Value =
        serde_json::from_str(record["output"].as_str().unwrap()).unwrap();
    assert_eq!(output["body"], HELLO);
    assert_eq!(
        record["usage"]["http"],
        serde_json::json!({
            "requests": 1, "requests_denied": 0, "bytes_sent": 0,
            "bytes_received": HELLO.len(), "responses_cut": 0
        })
    );
    assert!(record.get("denials").is_none(), "{record}");
    assert_eq!(upstream.hits(), ["GET /hello"]);
}

#[test]
fn run_refuses_bad_http_flags_clearly() {
    use corral_tests::plugins::FETCH;

    let out = corral(&[
        "run",
        FETCH,
        "--action",
        "get",
        "--allow-http",
        "https://example.com/v1",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("remove \"/v1\""),
        "{}",
        text(&out.stderr)
    );

    let out = corral(&["run", FETCH, "--action", "get", "--http-max-requests", "5"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--allow-http"),
        "{}",
        text(&out.stderr)
    );

    let out = corral(&[
        "run",
        FETCH,
        "--action",
        "get",
        "--allow-http",
        "https://example.com",
        "--http-max-requests",
        "5000",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--http-max-requests is 5000; this host allows at most 1000"),
        "{}",
        text(&out.stderr)
    );
}
