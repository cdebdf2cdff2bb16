//! The client commands of `corral` (`agent`, `version`, `invoke`, `execution`, `audit`,
//! `costs`, `usage`, `key`, `tenant`, `kv`, `config`, `secret`, `profile`) as the real
//! binary against a real server: what people see, `--json`, API errors (code, message,
//! exit status 1), usage and connection errors (exit status 2), secrets read from a file
//! or stdin only, the profile file (mode 0600) and its precedence, `execution tail
//! --follow` ended by Ctrl-C, and readers that go away.
//!
//! Every run gets its own `XDG_CONFIG_HOME`, so no test reads or writes the profile file
//! of whoever runs them, and none of `CORRAL_URL`, `CORRAL_KEY` and `CORRAL_PROFILE`
//! leak in from the environment.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use corral_host::secrets::SecretsKey;
use corral_tests::app::{ADMIN_KEY, Backend, TestApp, spawn_app, spawn_app_with};
use corral_tests::plugins::{ECHO, HOSTILE, NOTES, RELAY};
use serde_json::{Value, json};

crate::on_both_backends!(
    agents_and_versions_are_managed_and_invoked,
    executions_are_listed_shown_with_their_call_tree_and_tailed,
    audit_costs_usage_keys_and_tenants,
    kv_config_and_secrets,
);

/// An id (a UUID) that names nothing.
const NIL: &str = "00000000-0000-0000-0000-000000000000";

/// How a `corral` run went.
struct Run {
    code: Option<i32>,
    out: String,
    err: String,
}

impl Run {
    /// Stdout as JSON.
    #[track_caller]
    fn json(&self) -> Value {
        serde_json::from_str(&self.out)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", self.out, self.err))
    }

    /// Asserts exit status 0 and returns stdout.
    #[track_caller]
    fn ok(&self) -> &str {
        assert_eq!(self.code, Some(0), "{}\n{}", self.out, self.err);
        &self.out
    }

    /// Asserts an API error: exit status 1, `error: <status> <code>: <message>`.
    #[track_caller]
    fn refused(&self, status: u16, code: &str) {
        assert_eq!(self.code, Some(1), "{}\n{}", self.out, self.err);
        let prefix = format!("error: {status} {code}: ");
        let line = self
            .err
            .lines()
            .find(|line| line.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} in {}", self.err));
        assert!(line.len() > prefix.len(), "no message: {line}");
    }

    /// The value of the `key:` line of a summary.
    #[track_caller]
    fn field(&self, key: &str) -> &str {
        self.out
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{key}:")))
            .unwrap_or_else(|| panic!("no {key}: line in\n{}", self.out))
            .trim()
    }
}

/// The `corral` binary with a clean environment: its own config directory, and the
/// server and key given by `env`.
struct Corral {
    config: tempfile::TempDir,
    env: Vec<(String, String)>,
}

impl Corral {
    /// A client of `app` with the bootstrap admin key in `CORRAL_URL`/`CORRAL_KEY`.
    fn of(app: &TestApp) -> Corral {
        Corral::with_env(&[("CORRAL_URL", &app.url), ("CORRAL_KEY", ADMIN_KEY)])
    }

    fn with_env(env: &[(&str, &str)]) -> Corral {
        Corral {
            config: tempfile::tempdir().unwrap(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(corral_tests::harness::corral_bin());
        command
            .args(args)
            .env_remove("CORRAL_URL")
            .env_remove("CORRAL_KEY")
            .env_remove("CORRAL_PROFILE")
            .env("XDG_CONFIG_HOME", self.config.path())
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        command
    }

    /// Runs `corral args` with `stdin` as its input, off the async workers.
    fn run_with(&self, args: &[&str], stdin: &str) -> Run {
        self.run_env(args, &[], stdin)
    }

    /// Runs `corral args` with `env` added and `stdin` as its input.
    fn run_env(&self, args: &[&str], env: &[(&str, &str)], stdin: &str) -> Run {
        let mut command = self.command(args);
        command.envs(env.iter().copied());
        tokio::task::block_in_place(|| {
            let mut child = command
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            // A command that reads no input may end before this is written.
            let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
            let output = child.wait_with_output().unwrap();
            Run {
                code: output.status.code(),
                out: String::from_utf8_lossy(&output.stdout).to_string(),
                err: String::from_utf8_lossy(&output.stderr).to_string(),
            }
        })
    }

    fn run(&self, args: &[&str]) -> Run {
        self.run_with(args, "")
    }

    fn profile_file(&self) -> std::path::PathBuf {
        self.config.path().join("corral").join("config.toml")
    }
}

/// The row of a table whose first column is `first`.
#[track_caller]
fn row<'a>(out: &'a str, first: &str) -> Vec<&'a str> {
    out.lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .find(|cells| cells.first() == Some(&first))
        .unwrap_or_else(|| panic!("no row {first:?} in\n{out}"))
}

/// Asserts that the first line of `out` is a header with these columns.
#[track_caller]
fn header(out: &str, columns: &[&str]) {
    let header = out.lines().next().unwrap_or_default();
    for column in columns {
        assert!(header.contains(column), "no {column} in {header:?}");
    }
}

async fn agents_and_versions_are_managed_and_invoked(backend: Backend) {
    let app = spawn_app(backend).await;
    let corral = Corral::of(&app);

    let created = corral.run(&["agent", "create", "echo", "--description", "says it back"]);
    created.ok();
    assert_eq!(created.field("name"), "echo");
    assert_eq!(created.field("status"), "active");
    assert_eq!(created.field("active version"), "-");
    corral
        .run(&["agent", "create", "echo"])
        .refused(409, "agent_exists");
    corral
        .run(&["agent", "create", "Not A Name"])
        .refused(400, "invalid_name");
    let with_policy = corral.run(&[
        "agent",
        "create",
        "hostile",
        "--policy",
        r#"{"quotas": {"max_concurrency": 2}}"#,
        "--json",
    ]);
    assert_eq!(with_policy.json()["policy"]["quotas"]["max_concurrency"], 2);
    let bad_json = corral.run(&["agent", "create", "x", "--policy", "{"]);
    assert_eq!(bad_json.code, Some(2), "{}", bad_json.err);
    assert!(
        bad_json.err.contains("the policy is not valid JSON"),
        "{}",
        bad_json.err
    );

    let listed = corral.run(&["agent", "list"]);
    header(
        listed.ok(),
        &["NAME", "STATUS", "ACTIVE VERSION", "CREATED", "DESCRIPTION"],
    );
    let echo_row = row(&listed.out, "echo");
    assert_eq!(echo_row[1], "active");
    assert!(listed.out.contains("says it back"), "{}", listed.out);
    let page = corral
        .run(&["agent", "list", "--limit", "1", "--json"])
        .json();
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert!(page["next_cursor"].is_string(), "{page:#}");
    let all = corral
        .run(&["agent", "list", "--limit", "1", "--all", "--json"])
        .json();
    assert_eq!(all["items"].as_array().unwrap().len(), 2, "{all:#}");

    // Versions: an upload streams the file and answers once it is compiled.
    let uploaded = corral.run(&["version", "upload", "echo", ECHO]);
    uploaded.ok();
    assert_eq!(uploaded.field("active"), "true");
    assert!(
        uploaded.field("actions").contains("echo"),
        "{}",
        uploaded.out
    );
    let version = uploaded.field("version").to_string();
    let version_id = uploaded.field("id").to_string();
    // The same bytes again are the same version.
    let again = corral
        .run(&["version", "upload", "echo", ECHO, "--json"])
        .json();
    assert_eq!(again["id"], version_id.as_str());
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"not a component at all").unwrap();
    let refused = corral.run(&["version", "upload", "echo", garbage.to_str().unwrap()]);
    assert_eq!(refused.code, Some(1), "{}", refused.err);
    assert!(refused.err.contains("error: 422 "), "{}", refused.err);
    let missing = corral.run(&["version", "upload", "echo", "/no/such/file.wasm"]);
    assert_eq!(missing.code, Some(2));
    assert!(
        missing.err.contains("reading /no/such/file.wasm"),
        "{}",
        missing.err
    );
    let versions = corral.run(&["version", "list", "echo"]);
    header(
        versions.ok(),
        &["VERSION", "ID", "ACTIVE", "SIZE", "SHA256", "CREATED"],
    );
    assert_eq!(row(&versions.out, &version)[1], version_id);
    assert_eq!(row(&versions.out, &version)[2], "*");
    let activated = corral.run(&["version", "activate", "echo", &version]);
    activated.ok();
    assert_eq!(activated.field("id"), version_id);
    corral
        .run(&["version", "activate", "echo", "9.9.9"])
        .refused(404, "not_found");
    let shown = corral.run(&["agent", "show", "echo"]);
    shown.ok();
    assert_eq!(shown.field("active version"), version_id);

    // Invoke: the output on stdout, the execution on stderr.
    let ran = corral.run(&["invoke", "echo", "echo", "--input", r#"{"text": "hi"}"#]);
    assert_eq!(
        serde_json::from_str::<Value>(ran.ok()).unwrap(),
        json!({ "text": "hi" }),
        "{}",
        ran.err
    );
    assert!(ran.err.starts_with("execution "), "{}", ran.err);
    assert!(ran.err.contains(" echo succeeded in "), "{}", ran.err);
    let receipt = corral
        .run_with(
            &[
                "invoke",
                "echo",
                "echo",
                "--input",
                "@-",
                "--correlation-id",
                "cli-7",
                "--json",
            ],
            r#"{"text": "from stdin"}"#,
        )
        .json();
    assert_eq!(receipt["output"]["text"], "from stdin");
    assert_eq!(receipt["correlation_id"], "cli-7");
    corral
        .run(&["invoke", "echo", "no-such-action"])
        .refused(400, "unknown_action");
    let bad_input = corral.run(&["invoke", "echo", "echo", "--input", "{nope"]);
    assert_eq!(bad_input.code, Some(2));
    assert!(
        bad_input.err.contains("the input is not valid JSON"),
        "{}",
        bad_input.err
    );

    // It ran, and failed: exit status 3, the outcome and error shown.
    let held = corral.run(&["version", "upload", "hostile", HOSTILE, "--no-activate"]);
    held.ok();
    assert_eq!(held.field("active"), "false");
    corral
        .run(&["invoke", "hostile", "fail"])
        .refused(409, "no_active_version");
    let held_id = held.field("id").to_string();
    // A version named with --version runs though it is not active (and fails, as
    // `fail` does: exit status 3).
    let named = corral.run(&["invoke", "hostile", "fail", "--version", &held_id, "--json"]);
    assert_eq!(named.code, Some(3), "{}", named.err);
    assert_eq!(named.json()["outcome"], "agent_error");
    assert_eq!(
        corral
            .run(&["version", "activate", "hostile", &held_id, "--json"])
            .json()["active"],
        true
    );
    let failed = corral.run(&["invoke", "hostile", "fail"]);
    assert_eq!(failed.code, Some(3), "{}\n{}", failed.out, failed.err);
    assert!(failed.err.contains("agent_error"), "{}", failed.err);
    assert!(
        failed.err.contains("error: upstream_unavailable: "),
        "{}",
        failed.err
    );
    let failed = corral.run(&["invoke", "hostile", "fail", "--json"]);
    assert_eq!(failed.code, Some(3));
    assert_eq!(failed.json()["outcome"], "agent_error");
    let spun = corral.run(&["invoke", "hostile", "spin", "--fuel", "1e5", "--json"]);
    assert_eq!(spun.json()["outcome"], "fuel_exhausted");

    // Pause and resume.
    let paused = corral.run(&["agent", "pause", "echo"]);
    paused.ok();
    assert_eq!(paused.field("status"), "paused");
    corral
        .run(&["invoke", "echo", "echo"])
        .refused(409, "agent_paused");
    assert_eq!(
        corral.run(&["agent", "resume", "echo", "--json"]).json()["status"],
        "active"
    );
    corral.run(&["invoke", "echo", "echo"]).ok();

    // Policies and usage, as before.
    let policy = corral.run(&[
        "agent",
        "policy",
        "echo",
        "--set",
        r#"{"quotas": {"max_concurrency": 3}}"#,
    ]);
    assert_eq!(
        policy.json()["quotas"]["max_concurrency"],
        3,
        "{}",
        policy.err
    );
    assert!(
        corral
            .run(&["agent", "usage", "echo"])
            .ok()
            .contains("concurrency: 0 running of 3")
    );

    // Delete: nothing printed with --json, the agent gone.
    let deleted = corral.run(&["agent", "delete", "hostile", "--json"]);
    assert_eq!(deleted.ok(), "");
    assert_eq!(
        corral.run(&["agent", "delete", "echo"]).ok().trim(),
        "deleted agent echo"
    );
    corral
        .run(&["agent", "show", "echo"])
        .refused(404, "not_found");
    let none = corral.run(&["agent", "list"]);
    assert_eq!(none.ok(), "");
    assert!(none.err.contains("no agents"), "{}", none.err);
    app.stop().await;
}

async fn executions_are_listed_shown_with_their_call_tree_and_tailed(backend: Backend) {
    let app = spawn_app(backend).await;
    app.agent_with("echo", ECHO).await;
    app.agent_with("relay", RELAY).await;
    app.set_policy(
        "relay",
        json!({ "grants": { "agents": { "allow": ["echo"] } } }),
    )
    .await;
    let corral = Corral::of(&app);
    let ran = app
        .invoke(
            "relay",
            ADMIN_KEY,
            json!({ "action": "call", "correlation_id": "tree-1",
                    "input": { "agent": "echo", "action": "echo", "input": { "x": 1 } } }),
        )
        .await
        .ok(200);
    assert_eq!(ran["outcome"], "succeeded", "{ran:#}");
    let root = ran["execution_id"].as_str().unwrap().to_string();

    let listed = corral.run(&["execution", "list"]);
    header(
        listed.ok(),
        &[
            "ID", "AGENT", "ACTION", "OUTCOME", "WALL", "FUEL", "COST", "FINISHED",
        ],
    );
    let root_row = row(&listed.out, &root);
    assert_eq!(root_row[1..4], ["relay", "call", "succeeded"]);
    let only_echo = corral
        .run(&["execution", "list", "--agent", "echo", "--json"])
        .json();
    let items = only_echo["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{only_echo:#}");
    let child = items[0]["id"].as_str().unwrap().to_string();
    assert_eq!(items[0]["parent_execution_id"], root.as_str());
    let tree = corral
        .run(&["execution", "list", "--root", &root, "--json"])
        .json();
    assert_eq!(tree["items"].as_array().unwrap().len(), 2, "{tree:#}");
    let by_correlation = corral
        .run(&[
            "execution",
            "list",
            "--correlation-id",
            "tree-1",
            "--outcome",
            "succeeded",
            "--json",
        ])
        .json();
    // The callee carries its caller's correlation id.
    let mut ids: Vec<&str> = by_correlation["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    ids.sort();
    let mut both = [root.as_str(), child.as_str()];
    both.sort();
    assert_eq!(ids, both, "{by_correlation:#}");
    corral
        .run(&["execution", "list", "--outcome", "exploded"])
        .refused(400, "invalid_query");
    corral
        .run(&["execution", "list", "--since", "yesterday"])
        .refused(400, "invalid_query");

    // One execution, with its logs and the call tree it is part of.
    let shown = corral.run(&["execution", "show", &child]);
    shown.ok();
    assert_eq!(shown.field("outcome"), "succeeded");
    assert_eq!(shown.field("called by"), root);
    assert!(shown.field("agent").starts_with("echo "), "{}", shown.out);
    assert!(
        shown.field("input").starts_with(r#"{"x":1}"#),
        "{}",
        shown.out
    );
    assert!(
        shown.out.lines().any(|l| l.starts_with("logs:")),
        "{}",
        shown.out
    );
    let tree_at = shown
        .out
        .lines()
        .position(|l| l == "call tree:")
        .unwrap_or_else(|| panic!("no call tree in\n{}", shown.out));
    let tree: Vec<&str> = shown.out.lines().skip(tree_at + 1).collect();
    assert!(
        tree[0].starts_with(&format!("  {root} relay call succeeded")),
        "{tree:?}"
    );
    assert!(
        tree[1].starts_with(&format!("    * {child} echo echo succeeded")),
        "{tree:?}"
    );
    let record = corral.run(&["execution", "show", &root, "--json"]).json();
    assert_eq!(record["id"], root.as_str());
    assert!(record["logs"].is_array());
    corral
        .run(&["execution", "show", NIL])
        .refused(404, "not_found");
    corral
        .run(&["execution", "show", "no-such-execution"])
        .refused(400, "invalid_id");

    // tail: the newest, oldest first.
    let tail = corral.run(&["execution", "tail", "-n", "1"]);
    assert_eq!(tail.ok().lines().count(), 1, "{}", tail.out);
    assert!(tail.out.contains(&root), "{}", tail.out);
    let tail = corral.run(&["execution", "tail", "--json"]);
    let lines: Vec<Value> = tail
        .ok()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["id"], root.as_str(), "the newest last");

    // tail --follow: prints what is recorded after it started, until Ctrl-C.
    let mut follower = corral
        .command(&[
            "execution",
            "tail",
            "-n",
            "0",
            "--follow",
            "--interval",
            "100ms",
            "--agent",
            "echo",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
    let stdout = follower.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    // Let it start following before anything new is recorded.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut new = Vec::new();
    for i in 0..3 {
        let ran = app
            .invoke(
                "echo",
                ADMIN_KEY,
                json!({ "action": "echo", "input": { "i": i } }),
            )
            .await
            .ok(200);
        new.push(ran["execution_id"].as_str().unwrap().to_string());
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut printed: Vec<String> = Vec::new();
    while printed.len() < 3 && Instant::now() < deadline {
        if let Ok(line) = lines_rx.recv_timeout(Duration::from_millis(200)) {
            printed.push(line);
        }
    }
    let ids: Vec<&str> = printed
        .iter()
        .map(|line| line.split_whitespace().nth(1).unwrap_or_default())
        .collect();
    assert_eq!(ids, new, "each new execution once, in order: {printed:#?}");
    // Ctrl-C ends it quietly, with status 0.
    let interrupted = Command::new("kill")
        .args(["-INT", &follower.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupted.success());
    let status = tokio::task::block_in_place(|| follower.wait()).unwrap();
    let mut err = String::new();
    follower
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        lines_rx.try_iter().all(|line| !line.contains(&root)),
        "nothing old is printed"
    );
    app.stop().await;
}

async fn audit_costs_usage_keys_and_tenants(backend: Backend) {
    let app = spawn_app(backend).await;
    app.agent_with("echo", ECHO).await;
    app.invoke("echo", ADMIN_KEY, json!({ "action": "echo" }))
        .await
        .ok(200);
    let corral = Corral::of(&app);

    let audit = corral.run(&["audit", "list", "--action", "agent.create"]);
    header(
        audit.ok(),
        &["TIME", "ACTION", "RESULT", "RESOURCE", "ACTOR"],
    );
    assert_eq!(audit.out.lines().count(), 2, "{}", audit.out);
    assert!(audit.out.contains("agent.create  ok"), "{}", audit.out);
    let events = corral
        .run(&[
            "audit",
            "list",
            "--resource-type",
            "agent_version",
            "--json",
        ])
        .json();
    assert_eq!(events["items"][0]["action"], "version.upload", "{events:#}");
    corral
        .run(&["audit", "list", "--until", "soon"])
        .refused(400, "invalid_query");

    let costs = corral.run(&["costs"]);
    let first = costs.ok().lines().next().unwrap();
    assert!(first.starts_with("costs by day from "), "{first}");
    assert!(first.ends_with("over 1 executions"), "{first}");
    header(
        &costs.out.lines().skip(1).collect::<Vec<_>>().join("\n"),
        &["PERIOD", "AGENT", "EXECUTIONS", "COST"],
    );
    let report = corral.run(&["costs", "--period", "month", "--json"]).json();
    assert_eq!(report["period"], "month");
    assert_eq!(report["total_executions"], 1);
    corral
        .run(&[
            "costs",
            "--since",
            "2030-01-01T00:00:00Z",
            "--until",
            "2029-01-01T00:00:00Z",
        ])
        .refused(400, "invalid_query");
    let bad_period = corral.run(&["costs", "--period", "year"]);
    assert_eq!(
        bad_period.code,
        Some(2),
        "clap refuses it: {}",
        bad_period.err
    );

    let usage = corral.run(&["usage", "--agent", "echo"]);
    assert!(usage.ok().contains("today: 1 invocations"), "{}", usage.out);
    let report = corral.run(&["usage", "--agent", "echo", "--json"]).json();
    assert_eq!(report["usage"]["used"]["day"]["invocations"], 1);
    assert_eq!(corral.run(&["usage"]).code, Some(2));

    // Keys: the secret alone on stdout.
    let created = corral.run(&["key", "create", "ci", "--role", "viewer"]);
    let secret = created.ok().trim().to_string();
    assert_eq!(created.out.lines().count(), 1);
    assert!(secret.starts_with("crl_"), "{secret}");
    assert!(created.err.contains("shown only now"), "{}", created.err);
    let key = corral
        .run(&["key", "create", "dev", "--role", "developer", "--json"])
        .json();
    assert_eq!(key["key"]["role"], "developer");
    let key_id = key["key"]["id"].as_str().unwrap().to_string();
    assert_eq!(
        corral.run(&["key", "create", "x", "--role", "god"]).code,
        Some(2)
    );
    let keys = corral.run(&["key", "list"]);
    header(
        keys.ok(),
        &[
            "ID",
            "NAME",
            "ROLE",
            "PREFIX",
            "CREATED",
            "LAST USED",
            "REVOKED",
        ],
    );
    assert_eq!(row(&keys.out, &key_id)[1..3], ["dev", "developer"]);
    assert!(!keys.out.contains(&secret), "no secret is listed");
    let viewer = Corral::with_env(&[("CORRAL_URL", &app.url), ("CORRAL_KEY", &secret)]);
    assert!(viewer.run(&["agent", "list"]).ok().contains("echo"));
    viewer.run(&["key", "list"]).refused(403, "forbidden");
    viewer
        .run(&["agent", "create", "nope"])
        .refused(403, "forbidden");
    let revoked = corral.run(&["key", "revoke", &key_id]);
    assert!(
        revoked
            .ok()
            .starts_with(&format!("revoked key {key_id} (dev) at ")),
        "{}",
        revoked.out
    );
    corral
        .run(&["key", "revoke", NIL])
        .refused(404, "not_found");

    // Tenants (operator admins).
    let created = corral.run(&[
        "tenant",
        "create",
        "acme",
        "--policy",
        r#"{"caps": {"max_agents": 2}}"#,
    ]);
    let acme_secret = created.ok().trim().to_string();
    assert!(acme_secret.starts_with("crl_"), "{acme_secret}");
    let tenants = corral.run(&["tenant", "list"]);
    header(tenants.ok(), &["ID", "NAME", "OPERATOR", "CREATED"]);
    let acme_row = tenants
        .out
        .lines()
        .find(|line| line.contains(" acme "))
        .unwrap_or_else(|| panic!("no acme in\n{}", tenants.out));
    let acme = acme_row.split_whitespace().next().unwrap().to_string();
    let shown = corral.run(&["tenant", "show", &acme]);
    shown.ok();
    assert_eq!(shown.field("name"), "acme");
    assert_eq!(shown.field("operator"), "false");
    assert!(
        shown.field("policy").contains(r#""max_agents":2"#),
        "{}",
        shown.out
    );
    corral
        .run(&["tenant", "show", "no-such-tenant"])
        .refused(404, "not_found");
    assert_eq!(
        corral.run(&["tenant", "policy", &acme]).json()["caps"]["max_agents"],
        2
    );
    assert!(
        corral
            .run(&["tenant", "usage", &acme])
            .ok()
            .contains("agents: 0 of 2")
    );
    assert!(
        corral
            .run(&["usage", "--tenant", &acme])
            .ok()
            .contains("agents: 0 of 2")
    );
    let tenant_admin = Corral::with_env(&[("CORRAL_URL", &app.url), ("CORRAL_KEY", &acme_secret)]);
    tenant_admin
        .run(&["tenant", "list"])
        .refused(403, "forbidden");
    assert!(tenant_admin.run(&["key", "list"]).ok().contains("admin"));
    corral
        .run(&["tenant", "create", "acme"])
        .refused(409, "tenant_exists");
    app.stop().await;
}

/// The secrets key of [`kv_config_and_secrets`]'s server (base64 of 32 bytes).
const SERVER_KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

async fn kv_config_and_secrets(backend: Backend) {
    let app = spawn_app_with(backend, |config| {
        config.secrets_key = Some(SecretsKey::from_base64(SERVER_KEY).unwrap())
    })
    .await;
    app.agent_with("notes", NOTES).await;
    app.set_policy("notes", json!({ "grants": { "kv": {} } }))
        .await;
    for (id, text) in [("a", "first"), ("b", "second")] {
        let added = app
            .invoke(
                "notes",
                ADMIN_KEY,
                json!({ "action": "add", "input": { "id": id, "text": text } }),
            )
            .await
            .ok(200);
        assert_eq!(added["outcome"], "succeeded", "{added:#}");
    }
    let corral = Corral::of(&app);

    // kv
    let keys = corral.run(&["kv", "list", "notes"]);
    header(keys.ok(), &["KEY", "SIZE", "UPDATED", "EXPIRES"]);
    assert_eq!(keys.out.lines().count(), 3, "{}", keys.out);
    row(&keys.out, "note/a");
    let with_values = corral.run(&["kv", "list", "notes", "--prefix", "note/b", "--values"]);
    assert!(with_values.ok().contains("second"), "{}", with_values.out);
    assert!(!with_values.out.contains("note/a"), "{}", with_values.out);
    let value = corral.run(&["kv", "get", "notes", "note/a"]);
    let note: Value = serde_json::from_str(value.ok()).unwrap();
    assert_eq!(note["text"], "first", "{note:#}");
    let entry = corral
        .run(&["kv", "get", "notes", "note/a", "--json"])
        .json();
    assert_eq!(entry["key"], "note/a");
    assert!(entry["value_base64"].is_string());
    corral
        .run(&["kv", "get", "notes", "note/"])
        .refused(404, "not_found");
    assert_eq!(
        corral.run(&["kv", "delete", "notes", "note/a"]).ok().trim(),
        "deleted key note/a"
    );
    corral
        .run(&["kv", "delete", "notes", "note/a"])
        .refused(404, "not_found");
    assert_eq!(
        corral.run(&["kv", "clear", "notes"]).code,
        Some(2),
        "--prefix or --everything"
    );
    assert_eq!(
        corral
            .run(&["kv", "clear", "notes", "--everything"])
            .ok()
            .trim(),
        "deleted 1 keys"
    );
    assert_eq!(corral.run(&["kv", "list", "notes"]).ok(), "");

    // config
    let set = corral.run(&["config", "set", "notes", "region=eu-west", "mode=fast"]);
    header(set.ok(), &["KEY", "VALUE"]);
    assert_eq!(row(&set.out, "region"), ["region", "eu-west"]);
    corral.run(&["config", "set", "notes", "mode=slow"]).ok();
    let values = corral.run(&["config", "get", "notes", "--json"]).json();
    assert_eq!(
        values,
        json!({ "values": { "mode": "slow", "region": "eu-west" } })
    );
    assert_eq!(
        corral.run(&["config", "get", "notes", "region"]).ok(),
        "eu-west\n"
    );
    corral
        .run(&["config", "get", "notes", "zone"])
        .refused(404, "not_found");
    corral
        .run(&["config", "set", "notes", "bad-name=1"])
        .refused(400, "invalid_config");
    assert_eq!(
        corral.run(&["config", "set", "notes", "novalue"]).code,
        Some(2)
    );
    assert_eq!(
        corral
            .run(&["config", "delete", "notes", "mode"])
            .ok()
            .trim(),
        "deleted config value mode"
    );
    corral
        .run(&["config", "delete", "notes", "mode"])
        .refused(404, "not_found");

    // secrets: from stdin or a file, never the command line, never printed.
    let token = "tok_live_5f4e3d2c1b0a";
    let set = corral.run_with(
        &["secret", "set", "notes", "API_TOKEN"],
        &format!("{token}\n"),
    );
    assert!(
        set.ok().starts_with("set secret API_TOKEN at "),
        "{}",
        set.out
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("signing-key");
    std::fs::write(&file, "signing-key-value").unwrap();
    corral
        .run(&[
            "secret",
            "set",
            "notes",
            "SIGNING_KEY",
            "--from-file",
            file.to_str().unwrap(),
        ])
        .ok();
    for flag in ["--value", "--secret"] {
        let refused = corral.run(&["secret", "set", "notes", "X", flag, token]);
        assert_eq!(refused.code, Some(2), "{flag}: {}", refused.err);
        assert!(
            refused.err.contains("unexpected argument"),
            "{}",
            refused.err
        );
    }
    let help = corral.run(&["secret", "set", "--help"]);
    assert!(!help.ok().contains("--value"), "{}", help.out);
    let listed = corral.run(&["secret", "list", "notes"]);
    header(listed.ok(), &["NAME", "UPDATED"]);
    row(&listed.out, "API_TOKEN");
    row(&listed.out, "SIGNING_KEY");
    assert!(!listed.out.contains(token));
    corral
        .run_with(&["secret", "set", "notes", "EMPTY"], "")
        .refused(400, "invalid_secret");
    corral
        .run_with(&["secret", "set", "notes", "bad-name"], "x")
        .refused(400, "invalid_secret");
    // The value reached the server as given (less the newline): the audit trail names
    // the secret, and no output anywhere has its value.
    let audit = corral.run(&["audit", "list", "--action", "agent.secret.set", "--json"]);
    assert_eq!(audit.json()["items"].as_array().unwrap().len(), 2);
    assert!(!audit.out.contains(token));
    assert_eq!(
        corral
            .run(&["secret", "delete", "notes", "API_TOKEN"])
            .ok()
            .trim(),
        "deleted secret API_TOKEN"
    );
    corral
        .run(&["secret", "delete", "notes", "API_TOKEN"])
        .refused(404, "not_found");
    app.stop().await;

    // A server without a secrets key refuses to store one. (On SQLite, a zero-setup
    // server generates one into its data directory.)
    if backend == Backend::Sqlite {
        return;
    }
    let keyless = spawn_app_with(backend, |config| config.secrets_key = None).await;
    keyless.agent_with("notes", NOTES).await;
    Corral::of(&keyless)
        .run_with(&["secret", "set", "notes", "API_TOKEN"], token)
        .refused(409, "secrets_disabled");
    keyless.stop().await;
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profiles_are_saved_private_and_used_after_flags_and_the_environment() {
    let app = spawn_app(Backend::Sqlite).await;
    app.agent_with("echo", ECHO).await;
    let corral = Corral::with_env(&[]);
    let path = corral.profile_file();

    // Nothing to go on: the default URL, and no key.
    let nothing = corral.run_env(&["agent", "list"], &[], "");
    assert_eq!(nothing.code, Some(2));
    assert!(nothing.err.contains("no API key"), "{}", nothing.err);

    // The key from stdin; the first profile becomes the default.
    let saved = corral.run_env(
        &["profile", "set", "local", "--url", &app.url],
        &[],
        &format!("{ADMIN_KEY}\n"),
    );
    saved.ok();
    assert!(
        saved.err.contains("saved profile \"local\""),
        "{}",
        saved.err
    );
    assert_eq!(mode(&path), 0o600, "the profile file is private");
    assert_eq!(mode(path.parent().unwrap()), 0o700);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("default = \"local\""), "{text}");
    assert!(text.contains("[profiles.local]"), "{text}");
    assert!(text.contains(&format!("key = \"{ADMIN_KEY}\"")), "{text}");
    assert!(
        corral
            .run_env(&["agent", "list"], &[], "")
            .ok()
            .contains("echo")
    );

    // A second profile, its key from a file; --profile and CORRAL_PROFILE pick it.
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, "crl_not_a_key_of_this_server_0123456789abcdef\n").unwrap();
    corral
        .run_env(
            &[
                "profile",
                "set",
                "wrong",
                "--url",
                &app.url,
                "--key-file",
                key_file.to_str().unwrap(),
            ],
            &[],
            "",
        )
        .ok();
    assert_eq!(mode(&path), 0o600);
    corral
        .run_env(&["agent", "list", "--profile", "wrong"], &[], "")
        .refused(401, "unauthenticated");
    corral
        .run_env(&["agent", "list"], &[("CORRAL_PROFILE", "wrong")], "")
        .refused(401, "unauthenticated");
    // A flag or the environment comes before the profile.
    corral
        .run_env(
            &["agent", "list", "--profile", "wrong"],
            &[("CORRAL_KEY", ADMIN_KEY)],
            "",
        )
        .ok();
    corral
        .run_env(
            &["agent", "list", "--profile", "wrong", "--key", ADMIN_KEY],
            &[],
            "",
        )
        .ok();
    corral
        .run_env(
            &["agent", "list"],
            &[(
                "CORRAL_KEY",
                "crl_wrong_wrong_wrong_wrong_wrong_wrong_wrong",
            )],
            "",
        )
        .refused(401, "unauthenticated");
    let unreachable = corral.run_env(&["agent", "list", "--url", "http://127.0.0.1:9"], &[], "");
    assert_eq!(unreachable.code, Some(2));
    assert!(
        unreachable.err.contains("cannot reach http://127.0.0.1:9/"),
        "{}",
        unreachable.err
    );
    let unknown = corral.run_env(&["agent", "list", "--profile", "nope"], &[], "");
    assert_eq!(unknown.code, Some(2));
    assert!(
        unknown.err.contains("no profile \"nope\""),
        "{}",
        unknown.err
    );

    // list, use, delete; keys are never listed whole.
    let listed = corral.run_env(&["profile", "list"], &[], "");
    header(listed.ok(), &["NAME", "URL", "KEY", "DEFAULT"]);
    assert_eq!(row(&listed.out, "local")[3], "*");
    assert!(!listed.out.contains(ADMIN_KEY), "{}", listed.out);
    corral.run_env(&["profile", "use", "wrong"], &[], "").ok();
    corral
        .run_env(&["agent", "list"], &[], "")
        .refused(401, "unauthenticated");
    assert_eq!(
        corral.run_env(&["profile", "use", "nope"], &[], "").code,
        Some(1)
    );
    corral
        .run_env(&["profile", "delete", "wrong"], &[], "")
        .ok();
    let left = std::fs::read_to_string(&path).unwrap();
    assert!(!left.contains("default"), "{left}");
    assert!(!left.contains("[profiles.wrong]"), "{left}");
    assert!(left.contains("[profiles.local]"), "{left}");
    assert_eq!(mode(&path), 0o600);
    // A profile file others may read is used, with a warning.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let warned = corral.run_env(&["agent", "list", "--profile", "local"], &[], "");
    assert!(warned.ok().contains("echo"));
    assert!(warned.err.contains("others may read it"), "{}", warned.err);
    let empty_key = corral.run_env(&["profile", "set", "x", "--url", &app.url], &[], "\n");
    assert_eq!(empty_key.code, Some(2));
    assert!(
        empty_key.err.contains("the API key is empty"),
        "{}",
        empty_key.err
    );
    app.stop().await;
}

/// `corral` with stdout closed as soon as it starts, as `corral … | head -c1` does once
/// `head` has its byte.
fn into_a_closed_pipe(corral: &Corral, args: &[&str]) -> std::process::Output {
    let mut child = corral
        .command(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    child.wait_with_output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_goes_away_ends_the_client_commands_quietly() {
    let app = spawn_app(Backend::Sqlite).await;
    app.agent_with("echo", ECHO).await;
    app.invoke("echo", ADMIN_KEY, json!({ "action": "echo" }))
        .await
        .ok(200);
    let corral = Corral::of(&app);
    for args in [
        &["agent", "list"][..],
        &["agent", "list", "--json"],
        &["agent", "show", "echo"],
        &["execution", "list"],
        &["execution", "tail", "--json"],
        &["invoke", "echo", "echo", "--input", r#"{"a": 1}"#],
        &["audit", "list"],
        &["costs"],
        &["version", "list", "echo", "--json"],
    ] {
        let out = tokio::task::block_in_place(|| into_a_closed_pipe(&corral, args));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "corral {args:?}: {stderr}");
        // 141, as for a program killed by SIGPIPE: see `cli/output.rs`.
        assert_eq!(out.status.code(), Some(141), "corral {args:?}: {stderr}");
    }
    app.stop().await;
}
