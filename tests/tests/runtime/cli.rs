//! The `corral` binary as a plugin author uses it.

use std::io::BufRead;
use std::process::{Command, Stdio};

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

/// `corral` with `args` and its stdout (and, if asked, stderr) closed as soon as it
/// starts, as `corral … | head -c1` does once `head` has its byte.
fn corral_into_a_closed_pipe(args: &[&str], close_stderr: bool) -> std::process::Output {
    let cache = tempfile::tempdir().unwrap();
    let mut child = Command::new(corral_bin())
        .args(args)
        .env("CORRAL_CACHE_DIR", cache.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("corral runs");
    // The child is still starting (loading a component takes far longer), so every
    // write it makes finds the pipe closed.
    drop(child.stdout.take());
    if close_stderr {
        drop(child.stderr.take());
    }
    child.wait_with_output().expect("corral ends")
}

#[test]
fn a_reader_that_goes_away_ends_the_command_quietly() {
    let echo = ["run", ECHO, "--action", "echo", "--input", r#"{"a":1}"#];
    for args in [
        &[&echo[..], &["--json"]].concat(),
        &echo[..],
        &["inspect", ECHO],
        &["inspect", ECHO, "--json"],
    ] {
        let out = corral_into_a_closed_pipe(args, false);
        let stderr = text(&out.stderr);
        assert!(!stderr.contains("panicked"), "corral {args:?}: {stderr}");
        // 141, as for a program killed by SIGPIPE: see `cli/output.rs`.
        assert_eq!(out.status.code(), Some(141), "corral {args:?}: {stderr}");
    }
    // With stderr closed too (`2>&1 | head`), the logs go nowhere and the output's
    // failure still ends it the same way.
    let out = corral_into_a_closed_pipe(&echo, true);
    assert_eq!(out.status.code(), Some(141));
    // clap's help swallows the error itself.
    let out = corral_into_a_closed_pipe(&["run", "--help"], false);
    assert!(
        !text(&out.stderr).contains("panicked"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0));
}

/// The environment variables a `corral` subcommand reads, from its `--help`.
fn env_vars(subcommand: &str) -> Vec<String> {
    let out = Command::new(corral_bin())
        .args([subcommand, "--help"])
        .env_clear()
        .output()
        .expect("corral runs");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let help = text(&out.stdout);
    let vars: Vec<String> = help
        .split("[env: ")
        .skip(1)
        .map(|rest| {
            rest.split(|c: char| c == ']' || c == '=')
                .next()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert!(
        !vars.is_empty(),
        "no [env: …] in corral {subcommand} --help"
    );
    vars
}

#[test]
fn an_empty_environment_variable_counts_as_unset() {
    let xdg_cache = tempfile::tempdir().unwrap();
    for args in [&["inspect", ECHO][..], &["run", ECHO, "--action", "echo"]] {
        let mut command = Command::new(corral_bin());
        command.args(args).env("XDG_CACHE_HOME", xdg_cache.path());
        for var in env_vars(args[0]) {
            command.env(var, "");
        }
        let out = command.output().expect("corral runs");
        assert!(
            out.status.success(),
            "corral {args:?}: {}",
            text(&out.stderr)
        );
    }
    // With CORRAL_CACHE_DIR empty, the default cache directory was used.
    assert!(xdg_cache.path().join("corral/artifacts").is_dir());

    // An empty CORRAL_KEY is no key (rather than an empty bearer token sent to an empty
    // CORRAL_URL), and an empty CORRAL_PROFILE no profile: a usage error (exit 2). No
    // profile file is read but this test's own.
    let xdg_config = tempfile::tempdir().unwrap();
    let mut command = Command::new(corral_bin());
    command
        .args(["agent", "usage", "someone"])
        .env("XDG_CONFIG_HOME", xdg_config.path());
    for var in env_vars("agent") {
        command.env(var, "");
    }
    let out = command.output().expect("corral runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("no API key: pass --key, set CORRAL_KEY"),
        "{}",
        text(&out.stderr)
    );

    // `corral serve` starts with every one of its variables empty (DATABASE_URL
    // included, so on SQLite; CORRAL_SECRETS_KEY included, so with a generated key).
    let data_dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(corral_bin());
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let vars = env_vars("serve");
    assert!(vars.iter().any(|v| v == "CORRAL_SECRETS_KEY"), "{vars:?}");
    assert!(vars.iter().any(|v| v == "DATABASE_URL"), "{vars:?}");
    for var in vars {
        command.env(var, "");
    }
    let mut server = command.spawn().expect("corral serve starts");
    let stderr = server.stderr.take().unwrap();
    let (lines, seen) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let mut log = String::new();
    let served = loop {
        match seen.recv_timeout(std::time::Duration::from_secs(60)) {
            Ok(line) if line.starts_with("corral serving on") => break true,
            Ok(line) => log.push_str(&format!("{line}\n")),
            Err(_) => break false,
        }
    };
    let _ = server.kill();
    let _ = server.wait();
    assert!(served, "corral serve did not start:\n{log}");
}

#[test]
fn the_log_has_no_colour_when_stderr_is_not_a_terminal() {
    let cache = tempfile::tempdir().unwrap();
    let run = || {
        Command::new(corral_bin())
            .args(["run", ECHO, "--action", "echo"])
            .env("CORRAL_CACHE_DIR", cache.path())
            .env_remove("NO_COLOR")
            .env_remove("RUST_LOG")
            .output()
            .expect("corral runs")
    };
    let out = run();
    assert!(out.status.success(), "{}", text(&out.stderr));
    // A spoiled cached artifact makes the next run log a warning.
    let mut spoiled = 0;
    for entry in std::fs::read_dir(cache.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "cwasm") {
            std::fs::write(&path, b"not an artifact").unwrap();
            spoiled += 1;
        }
    }
    assert!(spoiled > 0, "the first run cached no artifact");
    let out = run();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("discarding a bad artifact"), "{stderr}");
    assert!(!stderr.contains("\x1b["), "{stderr:?}");
}

#[test]
fn inspect_caps_long_listings_and_names_what_the_pool_cannot_hold() {
    let dir = tempfile::tempdir().unwrap();
    let imports: String = (0..50)
        .map(|i| format!("(import \"f{i}\" (func))"))
        .collect();
    let many = dir.path().join("many.wasm");
    std::fs::write(
        &many,
        wat::parse_str(format!("(component {imports})")).unwrap(),
    )
    .unwrap();
    let out = corral(&["inspect", many.to_str().unwrap()]);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("imports:  50 (50 outside WASI and corral:agent)"),
        "{stdout}"
    );
    assert!(stdout.contains("… and 30 more"), "{stdout}");
    assert!(
        stdout.lines().filter(|l| l.starts_with("  f")).count() == 20,
        "{stdout}"
    );

    let two = dir.path().join("two-memories.wasm");
    let wat = "(component (core module (memory 1) (memory 1)))";
    std::fs::write(&two, wat::parse_str(wat).unwrap()).unwrap();
    let out = corral(&["inspect", two.to_str().unwrap(), "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let error = report["error"].as_str().unwrap();
    assert!(error.contains("memories in one core module: 2"), "{error}");
    assert!(error.contains("allows 1"), "{error}");

    let future = dir.path().join("future.wasm");
    std::fs::write(&future, b"\0asm\x0e\0\x01\0").unwrap();
    let out = corral(&["inspect", future.to_str().unwrap(), "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        report["error"].as_str().unwrap().contains("version 14"),
        "{report:#}"
    );
}
