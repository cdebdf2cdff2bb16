//! `corral task …` against a real server with task workers: submitting and waiting,
//! the exit statuses (0 succeeded, 1 failed or cancelled, 2 usage or API error, 3 not
//! ended), `--json`, listing, cancelling and batches.

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use corral_tests::app::{ADMIN_KEY, Backend, TestApp, spawn_app_with};
use corral_tests::plugins::{ECHO, HOSTILE};
use serde_json::Value;

crate::on_both_backends!(
    a_task_is_submitted_waited_for_listed_and_shown_as_json,
    scheduled_tasks_time_out_and_are_cancelled_and_batches_are_submitted,
);

/// An app whose workers poll often.
async fn app(backend: Backend) -> TestApp {
    spawn_app_with(backend, |config| {
        config.workers = Some(2);
        config.task_poll = Duration::from_millis(50);
    })
    .await
}

/// How a `corral` run went.
struct Run {
    code: Option<i32>,
    out: String,
    err: String,
}

impl Run {
    /// Stdout as JSON.
    fn json(&self) -> Value {
        serde_json::from_str(&self.out)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", self.out, self.err))
    }
}

/// Runs `corral` against `app` with `stdin` as its input, off the async workers (it
/// blocks until the command ends).
fn corral_with(app: &TestApp, args: &[&str], stdin: &str) -> Run {
    tokio::task::block_in_place(|| {
        let mut child = Command::new(corral_tests::harness::corral_bin())
            .args(args)
            .env("CORRAL_URL", &app.url)
            .env("CORRAL_KEY", ADMIN_KEY)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let output = child.wait_with_output().unwrap();
        Run {
            code: output.status.code(),
            out: String::from_utf8_lossy(&output.stdout).to_string(),
            err: String::from_utf8_lossy(&output.stderr).to_string(),
        }
    })
}

fn corral(app: &TestApp, args: &[&str]) -> Run {
    corral_with(app, args, "")
}

/// The value of the `key:` line of a task's summary.
fn line<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find_map(|line| line.strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key}: line in\n{out}"))
        .trim()
}

async fn a_task_is_submitted_waited_for_listed_and_shown_as_json(backend: Backend) {
    let app = app(backend).await;
    app.agent_with("echo", ECHO).await;
    app.agent_with("hostile", HOSTILE).await;

    let done = corral(
        &app,
        &[
            "task",
            "submit",
            "echo",
            "echo",
            "--input",
            r#"{"text": "hi"}"#,
            "--correlation-id",
            "cli-1",
            "--wait",
        ],
    );
    assert_eq!(done.code, Some(0), "{}{}", done.out, done.err);
    assert_eq!(line(&done.out, "state"), "succeeded");
    assert_eq!(line(&done.out, "result"), r#"{"text":"hi"}"#);
    assert_eq!(line(&done.out, "agent"), "echo");
    assert!(
        line(&done.out, "attempt 1").starts_with("succeeded, execution "),
        "{}",
        done.out
    );
    let id = line(&done.out, "id").to_string();

    let shown = corral(&app, &["task", "get", &id, "--json"]);
    assert_eq!(shown.code, Some(0), "{}", shown.err);
    let task = shown.json();
    assert_eq!(task["id"], id.as_str());
    assert_eq!(task["state"], "succeeded");
    assert_eq!(task["result"]["text"], "hi");

    // A trap fails the task for good: exit 1, with the error's code.
    let failed = corral(&app, &["task", "submit", "hostile", "panic", "--wait"]);
    assert_eq!(failed.code, Some(1), "{}{}", failed.out, failed.err);
    assert_eq!(line(&failed.out, "state"), "failed");
    let failed_id = line(&failed.out, "id").to_string();
    let task = corral(&app, &["task", "wait", &failed_id, "--json"]);
    assert_eq!(task.code, Some(1));
    let code = task.json()["error"]["code"].as_str().unwrap().to_string();
    assert!(
        line(&failed.out, "error").starts_with(&format!("{code}: ")),
        "{}",
        failed.out
    );

    // Without --wait, submitting succeeds whatever becomes of the task.
    let submitted = corral(&app, &["task", "submit", "echo", "echo", "--json"]);
    assert_eq!(submitted.code, Some(0), "{}", submitted.err);
    let queued = submitted.json();
    assert_eq!(queued["agent"], "echo");
    let queued_id = queued["id"].as_str().unwrap();
    let waited = corral(&app, &["task", "wait", queued_id]);
    assert_eq!(waited.code, Some(0), "{}{}", waited.out, waited.err);
    assert_eq!(line(&waited.out, "result"), "{}");

    let listed = corral(&app, &["task", "list", "--agent", "echo"]);
    assert_eq!(listed.code, Some(0), "{}", listed.err);
    let header = listed.out.lines().next().unwrap();
    for column in ["ID", "AGENT", "ACTION", "STATE", "ATTEMPTS", "CREATED"] {
        assert!(header.contains(column), "{header}");
    }
    let row = listed
        .out
        .lines()
        .find(|row| row.starts_with(&id))
        .unwrap_or_else(|| panic!("{id} not listed:\n{}", listed.out));
    assert!(row.contains("succeeded") && row.contains("1/3"), "{row}");
    assert!(!listed.out.contains(&failed_id), "{}", listed.out);
    let page = corral(
        &app,
        &["task", "list", "--correlation-id", "cli-1", "--json"],
    )
    .json();
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{page:#}");
    assert_eq!(items[0]["id"], id.as_str());
    // One task a page, followed to the end.
    let all = corral(&app, &["task", "list", "--limit", "1", "--all", "--json"]).json();
    assert_eq!(all["items"].as_array().unwrap().len(), 3, "{all:#}");
    let first = corral(&app, &["task", "list", "--limit", "1"]);
    assert_eq!(first.out.lines().count(), 2, "{}", first.out);
    assert!(first.err.contains("--all"), "{}", first.err);
    app.stop().await;
}

async fn scheduled_tasks_time_out_and_are_cancelled_and_batches_are_submitted(backend: Backend) {
    let app = app(backend).await;
    app.agent_with("echo", ECHO).await;
    let later = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();

    let scheduled = corral(
        &app,
        &["task", "submit", "echo", "echo", "--run-at", &later],
    );
    assert_eq!(scheduled.code, Some(0), "{}", scheduled.err);
    assert_eq!(line(&scheduled.out, "state"), "scheduled");
    let id = line(&scheduled.out, "id").to_string();

    let waited = corral(&app, &["task", "wait", &id, "--timeout", "200ms"]);
    assert_eq!(waited.code, Some(3), "{}{}", waited.out, waited.err);
    assert_eq!(line(&waited.out, "state"), "scheduled");
    assert!(waited.err.contains("has not ended"), "{}", waited.err);
    assert_eq!(corral(&app, &["task", "get", &id]).code, Some(3));

    let cancelled = corral(&app, &["task", "cancel", &id]);
    assert_eq!(cancelled.code, Some(0), "{}", cancelled.err);
    assert_eq!(line(&cancelled.out, "state"), "cancelled");
    let again = corral(&app, &["task", "cancel", &id]);
    assert_eq!(again.code, Some(2));
    assert!(again.err.contains("409 task_finished"), "{}", again.err);
    assert_eq!(corral(&app, &["task", "wait", &id]).code, Some(1));

    // A batch from a file, the second task after the first.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tasks.json");
    std::fs::write(
        &file,
        r#"{"tasks": [
            {"agent": "echo", "key": "first", "action": "echo", "input": {"n": 1}},
            {"agent": "echo", "action": "echo", "input": {"n": 2}, "depends_on": ["first"]}
        ]}"#,
    )
    .unwrap();
    let batch = corral(
        &app,
        &[
            "task",
            "submit",
            "--batch",
            file.to_str().unwrap(),
            "--wait",
            "--json",
        ],
    );
    assert_eq!(batch.code, Some(0), "{}{}", batch.out, batch.err);
    let tasks = batch.json()["tasks"].as_array().unwrap().clone();
    assert_eq!(tasks.len(), 2);
    assert_eq!(tasks[0]["result"]["n"], 1);
    assert_eq!(tasks[1]["result"]["n"], 2);
    assert_eq!(tasks[1]["depends_on"][0], tasks[0]["id"]);
    // An array on stdin: a table of what was submitted.
    let piped = corral_with(
        &app,
        &["task", "submit", "--batch", "-"],
        r#"[{"agent": "echo", "action": "echo", "run_at": "2099-01-01T00:00:00Z"}]"#,
    );
    assert_eq!(piped.code, Some(0), "{}", piped.err);
    let rows: Vec<&str> = piped.out.lines().collect();
    assert_eq!(rows.len(), 2, "{}", piped.out);
    assert!(rows[1].contains("scheduled"), "{}", piped.out);

    // The API's refusals exit 2 with their code.
    let unknown = corral(&app, &["task", "submit", "nobody", "echo"]);
    assert_eq!(unknown.code, Some(2));
    assert!(unknown.err.contains("404 not_found"), "{}", unknown.err);
    let bogus = corral(&app, &["task", "list", "--state", "bogus"]);
    assert_eq!(bogus.code, Some(2));
    assert!(bogus.err.contains("400 invalid_query"), "{}", bogus.err);
    let usage = corral(&app, &["task", "submit", "echo"]);
    assert_eq!(usage.code, Some(2), "{}", usage.err);
    app.stop().await;
}
